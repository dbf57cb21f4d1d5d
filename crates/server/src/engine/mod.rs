//! The job engine under the member API: the one writer that stores every
//! job change in batches ([`writer`]), the one scheduler that polls every
//! unfinished job (`scheduler`), and the per-model poll schedule it
//! learns ([`timing`]).

pub(crate) mod scheduler;
pub mod timing;
pub mod writer;
