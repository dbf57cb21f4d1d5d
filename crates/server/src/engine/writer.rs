//! The one writer: every job change goes through it, and it commits them
//! in batches (group commit). A batch that fails is retried with backoff
//! until it succeeds; a write is never dropped while the server runs.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{JobWrite, StoreError, StoreResult, WriteOutcome};

/// Writes gathered into one transaction at most.
const MAX_BATCH: usize = 2048;
/// Writes waiting before submitters wait for room (back-pressure).
const QUEUE: usize = 16 * 1024;
/// The first and the longest wait between attempts of a failed batch.
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// After shutdown began, how long a failing batch is still retried.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Storage refused this write for good (a broken uniqueness rule, say).
    #[error(transparent)]
    Refused(#[from] StoreError),
    /// The server is stopping and storage did not take the write in time.
    #[error("the server is stopping; the write was not stored")]
    Stopped,
}

struct Pending {
    write: JobWrite,
    reply: Option<oneshot::Sender<StoreResult<WriteOutcome>>>,
}

/// A handle on the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("write", &self.write).finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer on `store`. It ends once `stop` is cancelled and
    /// every write submitted before has been stored (or the grace period ran out).
    pub fn start(
        store: Arc<dyn crate::store::Store>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Writer {
        let (queue, pending) = mpsc::channel(QUEUE);
        tasks.spawn(run(store, metrics, pending, stop));
        Writer { queue }
    }

    /// Stores `write` and waits until it is committed.
    pub async fn write(&self, write: JobWrite) -> Result<WriteOutcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Pending { write, reply: Some(reply) }).await.map_err(|_| WriteError::Stopped)?;
        match answer.await {
            Ok(result) => result.map_err(WriteError::Refused),
            Err(_) => Err(WriteError::Stopped),
        }
    }

    /// Stores `write` without waiting for it: for what may be lost to a
    /// crash without harm (learned timings).
    pub fn write_later(&self, write: JobWrite) {
        if self.queue.try_send(Pending { write, reply: None }).is_err() {
            tracing::debug!("writer busy; a learned timing was not stored this time");
        }
    }
}

async fn run(
    store: Arc<dyn crate::store::Store>,
    metrics: Arc<Metrics>,
    mut pending: mpsc::Receiver<Pending>,
    stop: CancellationToken,
) {
    let mut writes: Vec<JobWrite> = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            biased;
            first = pending.recv() => first,
            () = stop.cancelled() => {
                // Store what was submitted before shutdown, then end.
                pending.close();
                pending.recv().await
            }
        };
        let Some(first) = first else { return };
        let mut next = Some(first);
        while let Some(Pending { write, reply }) = next {
            writes.push(write);
            replies.push(reply);
            next = if writes.len() < MAX_BATCH { pending.try_recv().ok() } else { None };
        }
        match commit(store.as_ref(), &metrics, &writes, &stop).await {
            Some(outcomes) => {
                for (reply, outcome) in replies.drain(..).zip(outcomes) {
                    if let Some(reply) = reply {
                        let _ = reply.send(outcome);
                    }
                }
            }
            None => {
                // Shutdown with storage still failing: say loudly what this run could not store.
                for write in &writes {
                    tracing::error!(?write, "the server stopped before storage took this write");
                }
                replies.clear();
            }
        }
        writes.clear();
    }
}

/// Commits `writes`, retrying until storage takes them; `None` only if the
/// server is stopping and the grace period ran out.
async fn commit(
    store: &dyn crate::store::Store,
    metrics: &Metrics,
    writes: &[JobWrite],
    stop: &CancellationToken,
) -> Option<Vec<StoreResult<WriteOutcome>>> {
    let mut wait = FIRST_RETRY;
    let mut failures = 0u32;
    let mut stopping_since = None;
    loop {
        match store.apply(writes).await {
            Ok(outcomes) => {
                metrics.storage_batch(writes.len());
                if failures > 0 {
                    tracing::warn!(
                        writes = writes.len(),
                        failures,
                        "storage recovered; the writes are stored"
                    );
                }
                return Some(outcomes);
            }
            Err(e) => {
                failures += 1;
                metrics.storage_write_failed();
                tracing::error!(
                    writes = writes.len(),
                    attempt = failures,
                    retry_in_ms = wait.as_millis() as u64,
                    error = %e,
                    "could not store job changes; retrying until storage takes them"
                );
                if stop.is_cancelled() {
                    let since = *stopping_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() > SHUTDOWN_GRACE {
                        return None;
                    }
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
}
