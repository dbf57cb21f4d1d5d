//! Leases, for replicas sharing one database: each server follows the
//! unfinished jobs it holds a lease on, renews its leases while it lives,
//! and takes over the jobs of one that died (whose leases lapsed), so a job
//! is polled by one replica at a time and never left behind. A SQLite
//! store has one server and no leases.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::engine::scheduler::Scheduler;
use crate::store::JobLeases;

/// How often leases are renewed and lapsed ones looked for, by default: a
/// third of the default lease, so one slow round never loses a lease.
pub const DEFAULT_LEASE_CHECK: Duration = Duration::from_secs(5);

/// Renews this server's leases and takes over lapsed ones every `every`,
/// until `stop`; then gives its leases up, so another replica takes its
/// jobs over at once. It holds the leases alone ([`JobLeases`]), not the
/// writes: the leases must not wait behind the writer's queue.
pub(crate) async fn run(
    store: Arc<dyn JobLeases>,
    scheduler: Scheduler,
    every: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(every) => {}
        }
        if let Err(e) = store.renew_leases().await {
            // Kept in memory and polled still; another replica may take the
            // jobs over once the leases lapse, which costs a few duplicate polls.
            tracing::warn!(error = %e, "could not renew this server's job leases; will try again");
        }
        match store.take_over_jobs().await {
            Ok(jobs) if !jobs.is_empty() => {
                tracing::warn!(jobs = jobs.len(), "took over jobs whose server stopped renewing its leases");
                for job in jobs {
                    scheduler.follow_stored(job);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not look for jobs to take over; will try again"),
        }
        match store.pending_to_unknown().await {
            Ok(0) => {}
            Ok(lost) => {
                tracing::warn!(jobs = lost, "creates a stopped server left in flight; marked unknown")
            }
            Err(e) => tracing::warn!(error = %e, "could not look for creates lost with a server"),
        }
    }
    if let Err(e) = store.release_leases().await {
        tracing::warn!(error = %e, "could not give this server's job leases up; they lapse instead");
    }
}
