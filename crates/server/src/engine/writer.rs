//! The one writer: every job change goes through it, and it commits them
//! in batches (group commit). A batch that fails is retried with backoff
//! until it succeeds; a write is never dropped while the server runs, but
//! for a create not yet sent upstream, which is answered 503 once its
//! deadline passes (nothing was sent, so nothing is lost).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{Begun, JobWrite, JobWrites, NewJob, StoreError, WriteOutcome};

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
    /// Storage kept failing until the write's deadline passed; it was not
    /// stored, and will not be.
    #[error("storage did not take the write in time: {0}")]
    Unavailable(String),
}

/// Where a write's outcome is answered.
type Reply = oneshot::Sender<Result<WriteOutcome, WriteError>>;

struct Pending {
    write: JobWrite,
    reply: Option<Reply>,
    /// Only for a write that may be given up (a create not yet sent
    /// upstream): past this, it is answered [`WriteError::Unavailable`]
    /// rather than retried further.
    deadline: Option<Instant>,
}

/// A handle on the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    queue: mpsc::Sender<Pending>,
    health: Arc<StorageHealth>,
}

/// Whether storage takes the writer's writes: `/readyz` reports it.
#[derive(Debug, Default)]
pub struct StorageHealth {
    /// Since when the writer's batches fail, and the last error.
    failing: Mutex<Option<(Instant, String)>>,
    /// Since when the batch being written has been waiting for storage.
    writing_since: Mutex<Option<Instant>>,
}

/// A write waiting this long for storage (a lock never released, a
/// database that stopped answering) makes the server not ready.
const STALLED: Duration = Duration::from_secs(5);

impl StorageHealth {
    fn writing(&self, since: Option<Instant>) {
        *self.writing_since.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }

    /// Why the server should not be called ready for storage's sake, if it
    /// should not: writes failing, or one waiting too long.
    pub fn trouble(&self) -> Option<String> {
        if let Some((since, error)) = self.failing() {
            return Some(format!("Storage refuses writes (for {} s): {error}", since.as_secs()));
        }
        let writing = *self.writing_since.lock().unwrap_or_else(|e| e.into_inner());
        let waited = writing.map(|since| since.elapsed()).filter(|waited| *waited >= STALLED)?;
        Some(format!("Storage has not finished a write for {} s", waited.as_secs()))
    }

    fn failed(&self, error: &StoreError) {
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let since = failing.as_ref().map_or_else(Instant::now, |(since, _)| *since);
        *failing = Some((since, error.to_string()));
    }

    fn succeeded(&self) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// How long writes have been failing, and the last error; `None` while
    /// they succeed.
    pub fn failing(&self) -> Option<(Duration, String)> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing.as_ref().map(|(since, error)| (since.elapsed(), error.clone()))
    }
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("write", &self.write.subject()).finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer on `store`, the job writes: the one place they go
    /// (see [`JobWrites`]). It ends once `stop` is cancelled and every write
    /// submitted before has been stored (or the grace period ran out).
    pub fn start(
        store: Arc<dyn JobWrites>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
        tasks: &tokio_util::task::TaskTracker,
    ) -> Writer {
        let (queue, pending) = mpsc::channel(QUEUE);
        let health = Arc::new(StorageHealth::default());
        tasks.spawn(run(store, metrics, health.clone(), pending, stop));
        Writer { queue, health }
    }

    /// Stores `write` and waits until it is committed.
    pub async fn write(&self, write: JobWrite) -> Result<WriteOutcome, WriteError> {
        self.submit(write, None).await
    }

    /// Records a create before it is sent upstream, unless storage has not
    /// done so by `deadline`: then the create is given up and answered
    /// [`WriteError::Unavailable`]. Should its row be stored after all (a
    /// statement that was waiting on a lock, say), it is removed again,
    /// since nothing was sent.
    pub async fn begin_by(&self, job: NewJob, deadline: Instant) -> Result<WriteOutcome, WriteError> {
        let local_id = job.local_id.clone();
        let (reply, mut answer) = oneshot::channel();
        let pending = Pending { write: JobWrite::Begin(job), reply: Some(reply), deadline: Some(deadline) };
        match tokio::time::timeout_at(deadline, self.queue.send(pending)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(WriteError::Stopped),
            Err(_) => return Err(WriteError::Unavailable("the writer's queue stayed full".into())),
        }
        if let Ok(answer) = tokio::time::timeout_at(deadline, &mut answer).await {
            return answer.unwrap_or(Err(WriteError::Stopped));
        }
        let writer = self.clone();
        tokio::spawn(async move {
            if let Ok(Ok(WriteOutcome::Begun(Begun::Inserted))) = answer.await {
                tracing::warn!(
                    local_id,
                    "a create given up for slow storage was stored after all; removing it (it was never sent upstream)"
                );
                if let Err(e) = writer.write(JobWrite::Abandon { local_id: local_id.clone() }).await {
                    tracing::error!(local_id, error = %e, "could not remove a create that was never sent");
                }
            }
        });
        Err(WriteError::Unavailable("storage did not answer in time".into()))
    }

    async fn submit(&self, write: JobWrite, deadline: Option<Instant>) -> Result<WriteOutcome, WriteError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending { write, reply: Some(reply), deadline };
        self.queue.send(pending).await.map_err(|_| WriteError::Stopped)?;
        answer.await.unwrap_or(Err(WriteError::Stopped))
    }

    /// Stores `write` without waiting for it: for what may be lost to a
    /// crash without harm (learned timings).
    pub fn write_later(&self, write: JobWrite) {
        if self.queue.try_send(Pending { write, reply: None, deadline: None }).is_err() {
            tracing::debug!("writer busy; a learned timing was not stored this time");
        }
    }

    /// Whether storage takes writes now.
    pub fn health(&self) -> &StorageHealth {
        &self.health
    }
}

async fn run(
    store: Arc<dyn JobWrites>,
    metrics: Arc<Metrics>,
    health: Arc<StorageHealth>,
    mut pending: mpsc::Receiver<Pending>,
    stop: CancellationToken,
) {
    let mut batch = Batch::default();
    // Once shutdown has given up on a failing storage, later batches get
    // one attempt each rather than a grace period each.
    let mut gave_up = false;
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
        batch.push(first);
        while batch.writes.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let attempt = Attempt { store: store.as_ref(), metrics: &metrics, health: &health, stop: &stop };
        if !attempt.commit(&mut batch, gave_up).await {
            gave_up = true;
            // Shutdown with storage still failing: say loudly what this run could not store.
            batch.waiters.clear();
            for unstored in batch.writes.drain(..) {
                let write = unstored.subject();
                if matches!(unstored, JobWrite::Begin(_)) {
                    tracing::error!(
                        write,
                        "the server stopped before storage took this create; it was never sent upstream"
                    );
                } else {
                    tracing::error!(
                        write,
                        "the server stopped before storage took this write; the job is found again \
                         (polled, or looked up in the upstream's request logs) at the next start"
                    );
                }
            }
        }
    }
}

/// Writes gathered into one transaction, and who waits for each: kept
/// apart so that each attempt hands storage the writes as they are.
#[derive(Debug, Default)]
struct Batch {
    writes: Vec<JobWrite>,
    /// Beside `writes`, one for one: where to answer, and by when.
    waiters: Vec<(Option<Reply>, Option<Instant>)>,
}

impl Batch {
    fn push(&mut self, pending: Pending) {
        self.writes.push(pending.write);
        self.waiters.push((pending.reply, pending.deadline));
    }

    /// Answers, and takes out, the writes whose deadline has passed.
    fn give_up_late(&mut self, error: &StoreError) {
        let now = Instant::now();
        let mut kept = 0;
        for i in 0..self.writes.len() {
            let late = self.waiters[i].1.is_some_and(|deadline| deadline <= now);
            if late {
                tracing::warn!(write = %self.writes[i].subject(), "storage failed until the write's deadline; given up");
                if let Some(reply) = self.waiters[i].0.take() {
                    let _ = reply.send(Err(WriteError::Unavailable(error.to_string())));
                }
            } else {
                self.writes.swap(kept, i);
                self.waiters.swap(kept, i);
                kept += 1;
            }
        }
        self.writes.truncate(kept);
        self.waiters.truncate(kept);
    }
}

/// One batch's way into storage.
struct Attempt<'a> {
    store: &'a dyn JobWrites,
    metrics: &'a Metrics,
    health: &'a StorageHealth,
    stop: &'a CancellationToken,
}

impl Attempt<'_> {
    /// Commits `batch` and answers each write, retrying until storage takes
    /// them; writes whose deadline passes meanwhile are answered and left
    /// out. `false` only if the server is stopping and the grace period ran
    /// out (or, with `once`, after one failed attempt): `batch` then holds
    /// the writes not stored.
    async fn commit(&self, batch: &mut Batch, once: bool) -> bool {
        let mut wait = FIRST_RETRY;
        let mut failures = 0u32;
        let mut stopping_since = None;
        loop {
            if batch.writes.is_empty() {
                return true;
            }
            let writes = &batch.writes;
            self.health.writing(Some(Instant::now()));
            let applied = self.store.apply(writes).await;
            self.health.writing(None);
            let error = match applied {
                Ok(outcomes) => {
                    self.metrics.storage_batch(writes.len());
                    self.health.succeeded();
                    if failures > 0 {
                        tracing::warn!(
                            writes = writes.len(),
                            failures,
                            "storage recovered; the writes are stored"
                        );
                    }
                    batch.writes.clear();
                    for ((reply, _), outcome) in batch.waiters.drain(..).zip(outcomes) {
                        if let Some(reply) = reply {
                            let _ = reply.send(outcome.map_err(WriteError::Refused));
                        }
                    }
                    return true;
                }
                Err(error) => error,
            };
            failures += 1;
            self.metrics.storage_write_failed();
            self.health.failed(&error);
            tracing::error!(
                writes = writes.len(),
                attempt = failures,
                retry_in_ms = wait.as_millis() as u64,
                error = %error,
                "could not store job changes; retrying until storage takes them"
            );
            if self.stop.is_cancelled() {
                let since = *stopping_since.get_or_insert_with(Instant::now);
                if once || since.elapsed() > SHUTDOWN_GRACE {
                    return false;
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY);
            batch.give_up_late(&error);
        }
    }
}
