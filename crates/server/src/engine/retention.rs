//! Forgets finished jobs past the retention period, through the writer,
//! a thousand at a time, so that the database does not grow for ever.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::engine::writer::Writer;
use crate::store::{JobWrite, WriteOutcome};

/// Jobs forgotten per write.
const BATCH: u32 = 1000;
/// How often old jobs are looked for.
const EVERY: Duration = Duration::from_secs(3600);

/// Every hour until `stop`, forgets finished jobs created more than `keep` ago.
pub(crate) async fn run(writer: Writer, keep: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let pruned = prune(&writer, keep).await;
        if pruned > 0 {
            tracing::info!(
                jobs = pruned,
                keep_days = keep.as_secs() / 86_400,
                "forgot finished jobs past retention"
            );
        }
    }
}

/// Forgets what is past `keep` now; returns how many jobs.
pub(crate) async fn prune(writer: &Writer, keep: Duration) -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let before = now - i64::try_from(keep.as_secs()).unwrap_or(i64::MAX);
    let mut total = 0;
    loop {
        match writer.write(JobWrite::Prune { before, limit: BATCH }).await {
            Ok(WriteOutcome::Pruned(n)) => {
                total += n;
                if n < u64::from(BATCH) {
                    return total;
                }
            }
            Ok(_) => return total,
            Err(e) => {
                tracing::warn!(error = %e, "could not forget old jobs; trying again later");
                return total;
            }
        }
    }
}
