//! The job engine under the member API: the one writer that stores every
//! job change in batches ([`writer`]), the one scheduler that polls every
//! unfinished job (`scheduler`), and the per-model poll schedule it
//! learns ([`timing`]), and the lookup of creates whose outcome is unknown
//! in the upstream's request logs (`recover`), and the leases replicas
//! sharing a database follow their jobs under ([`leases`]), with each
//! other's job changes brought into memory (`changes`), and the daily
//! reconciliation with the upstream's ledger ([`ledger`]).

pub mod breaker;
pub(crate) mod changes;
pub mod leases;
pub mod ledger;
pub(crate) mod recover;
pub(crate) mod retention;
pub(crate) mod scheduler;
pub mod settle;
pub mod timing;
pub mod writer;
