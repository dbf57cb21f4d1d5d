//! The server's shared state, its start-up (load keys and jobs, resume
//! polling) and its background work: the one poller and the key refresher.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aimlvid::{Generation, Status};
use futures_util::StreamExt as _;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::keys::{KeyTable, hash_key};
use crate::metrics::{KeyFigures, Metrics, Snapshot};
use crate::store::{JobEnd, JobRecord, KeyId, Store, StoreError};
use crate::view::{JobView, JobViews};
use crate::webhooks::{WebhookConfig, Webhooks};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The HTTP client for webhooks could not be set up.
    #[error("could not set up webhook delivery: {0}")]
    Webhooks(#[from] reqwest::Error),
}

/// How the state behaves, apart from storage.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// The upstream client; every upstream call goes through it.
    pub upstream: aimlvid::Client,
    /// The bearer token of the admin API; `None` turns the admin API off.
    pub admin_token: Option<SecretString>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How often keys are reloaded from storage, to pick up changes made
    /// with the `keys` command while the server runs.
    pub key_refresh: Duration,
    /// How many finished jobs to keep in memory (the most recently used),
    /// and to load at start. Older ones are read from storage when asked for.
    pub recent_jobs: u32,
    /// Where requests, upstream calls and jobs are counted. The upstream
    /// client reports its calls here only if it was built with it as its
    /// observer, as [`StateConfig::from_builder`] does.
    pub metrics: Arc<Metrics>,
    /// How webhook deliveries are retried.
    pub webhooks: WebhookConfig,
}

impl StateConfig {
    /// Defaults around an upstream client: no admin API, 64 MiB bodies.
    pub fn new(upstream: aimlvid::Client) -> Self {
        StateConfig {
            upstream,
            admin_token: None,
            body_limit: crate::DEFAULT_BODY_LIMIT,
            key_refresh: Duration::from_secs(5),
            recent_jobs: crate::view::DEFAULT_RECENT_JOBS as u32,
            metrics: Arc::default(),
            webhooks: WebhookConfig::default(),
        }
    }

    /// Defaults around an upstream client built from `builder`, reporting
    /// its calls to this configuration's metrics.
    pub fn from_builder(builder: aimlvid::ClientBuilder) -> aimlvid::Result<Self> {
        let metrics = Arc::<Metrics>::default();
        let upstream = builder.observer(metrics.clone()).build()?;
        Ok(StateConfig { metrics, ..StateConfig::new(upstream) })
    }
}

/// Everything the handlers and background tasks share. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    upstream: aimlvid::Client,
    keys: KeyTable,
    jobs: JobViews,
    admin_token_hash: Option<[u8; 32]>,
    body_limit: usize,
    metrics: Arc<Metrics>,
    webhooks: Webhooks,
    /// Cancelled when shutdown begins: ends event streams, so that the
    /// requests still in flight can finish.
    draining: CancellationToken,
    /// Stops the background tasks, once requests have finished.
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl AppState {
    /// Loads keys and jobs from `store`, marks creates a previous run left
    /// in flight as `unknown`, starts polling every unfinished job, and
    /// resumes pending webhook deliveries.
    pub async fn start(store: Arc<dyn Store>, config: StateConfig) -> Result<AppState, StartError> {
        let orphans = store.pending_to_unknown().await?;
        if orphans > 0 {
            tracing::warn!(
                jobs = orphans,
                "creates were in flight when the server last stopped; marked unknown"
            );
        }
        let unfinished = store.unfinished_jobs().await?;
        let mut per_key: HashMap<KeyId, u32> = HashMap::new();
        for job in &unfinished {
            *per_key.entry(job.key_id).or_default() += 1;
        }
        let keys = KeyTable::default();
        keys.sync(store.keys().await?, |id| per_key.get(&id).copied().unwrap_or(0));

        let jobs = JobViews::new(config.recent_jobs as usize);
        // Oldest first, so that the newest count as the most recently used.
        for job in store.recent_jobs(config.recent_jobs).await?.iter().rev().chain(&unfinished) {
            if let Some((id, view)) = view_of(job) {
                jobs.put(&id, view);
            }
        }
        let state = AppState {
            inner: Arc::new(Inner {
                store,
                upstream: config.upstream,
                keys,
                jobs,
                admin_token_hash: config.admin_token.map(|t| hash_key(t.expose_secret())),
                body_limit: config.body_limit,
                metrics: config.metrics,
                webhooks: Webhooks::new(config.webhooks)?,
                draining: CancellationToken::new(),
                stop: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        tracing::info!(unfinished = unfinished.len(), "resuming polls");
        for job in unfinished {
            if let Some(id) = job.generation_id {
                state.follow(job.key_id, id, None);
            }
        }
        let refresher = state.clone();
        state.inner.tasks.spawn(async move { refresher.refresh_keys(config.key_refresh).await });
        let deliverer = state.clone();
        state.inner.tasks.spawn(async move {
            let inner = &deliverer.inner;
            inner.webhooks.run(inner.store.as_ref(), &inner.metrics, &inner.stop).await;
        });
        Ok(state)
    }

    /// Stops polling and waits for the background tasks to end. Jobs stay
    /// unfinished in storage and are resumed by the next start.
    pub async fn stop(&self) {
        self.inner.draining.cancel();
        self.inner.stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// The storage backend.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    /// The upstream client.
    pub fn upstream(&self) -> &aimlvid::Client {
        &self.inner.upstream
    }

    /// The keys in memory.
    pub fn keys(&self) -> &KeyTable {
        &self.inner.keys
    }

    /// The jobs in memory.
    pub fn jobs(&self) -> &JobViews {
        &self.inner.jobs
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn metrics_arc(&self) -> Arc<Metrics> {
        self.inner.metrics.clone()
    }

    /// Begins shutdown: open event streams end. Requests in flight go on.
    pub fn drain(&self) {
        self.inner.draining.cancel();
    }

    /// Cancelled by [`AppState::drain`].
    pub fn draining(&self) -> CancellationToken {
        self.inner.draining.clone()
    }

    /// Every metric in the Prometheus text format.
    pub fn render_metrics(&self) -> String {
        let keys = self
            .inner
            .keys
            .entries()
            .into_iter()
            .map(|entry| KeyFigures {
                name: entry.record().name.clone(),
                unfinished: entry.unfinished(),
                credits: entry.credits_used(),
            })
            .collect();
        let snapshot = Snapshot {
            keys,
            jobs_in_memory: self.inner.jobs.counts().0,
            jobs_evicted: self.inner.jobs.evicted(),
        };
        self.inner.metrics.render(&snapshot)
    }

    /// Largest accepted request body.
    pub fn body_limit(&self) -> usize {
        self.inner.body_limit
    }

    /// Whether `token` is the admin token, compared in constant time.
    /// Always false when no admin token is configured.
    pub fn is_admin(&self, token: &str) -> bool {
        self.inner.admin_token_hash.is_some_and(|expected| expected.ct_eq(&hash_key(token)).into())
    }

    /// Whether the admin API is on.
    pub fn admin_enabled(&self) -> bool {
        self.inner.admin_token_hash.is_some()
    }

    /// Reloads keys from storage now.
    pub async fn reload_keys(&self) -> Result<(), StoreError> {
        let records = self.inner.store.keys().await?;
        // Keys new to this process have no jobs in flight here yet.
        self.inner.keys.sync(records, |_| 0);
        Ok(())
    }

    async fn refresh_keys(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = self.reload_keys().await {
                tracing::warn!(error = %e, "could not reload keys");
            }
        }
    }

    /// Starts following a job upstream until it finishes: the one poller
    /// for that job, however many members read it.
    pub fn follow(&self, key_id: KeyId, id: String, created: Option<Generation>) {
        let state = self.clone();
        self.inner.tasks.spawn(async move {
            let followed = Followed::new(state.inner.metrics.clone());
            let stop = state.inner.stop.clone();
            tokio::select! {
                () = stop.cancelled() => {}
                () = state.poll_until_finished(key_id, &id, created, followed) => {}
            }
        });
    }

    async fn poll_until_finished(
        &self,
        key_id: KeyId,
        id: &str,
        mut created: Option<Generation>,
        followed: Followed,
    ) {
        let mut followed = Some(followed);
        // The create's answer is already recorded; only changes need writing.
        let mut last = created.as_ref().map(|g| g.status.clone());
        loop {
            let mut watch = match created.take() {
                Some(generation) => self.inner.upstream.watch_created(generation),
                None => self.inner.upstream.watch(id),
            };
            let mut pause = None;
            while let Some(item) = watch.next().await {
                match item {
                    Ok(generation) => {
                        let finished = generation.status.is_finished();
                        if finished {
                            // Uncounted before its end is shown, so a reader who sees
                            // it finished never sees it still counted as unfinished.
                            drop(followed.take());
                        }
                        if last.as_ref() != Some(&generation.status) {
                            last = Some(generation.status.clone());
                            self.record(key_id, &generation).await;
                        }
                        if finished {
                            return;
                        }
                    }
                    // The job keeps running upstream after the watch's deadline: watch again.
                    Err(aimlvid::Error::TimedOut { .. }) => break,
                    Err(e) => {
                        // Not transient (the watch retries those): a wrong upstream key, say.
                        // Keep the job and try again later rather than lose it.
                        tracing::warn!(generation_id = id, error = %e, "polling failed; will try again");
                        pause = Some(
                            self.inner.upstream.poll_policy().max_interval.max(Duration::from_millis(10)),
                        );
                        break;
                    }
                }
            }
            if let Some(pause) = pause {
                tokio::time::sleep(pause).await;
            }
        }
    }

    /// Records a job's new state: storage first, so that what members were
    /// shown survives a crash, then the in-memory view.
    pub async fn record(&self, key_id: KeyId, generation: &Generation) {
        let id = generation.id.as_str();
        let status = generation.status.as_str();
        let body = match serde_json::to_string(generation) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(generation_id = id, error = %e, "could not encode a generation");
                return;
            }
        };
        let view = JobView::new(key_id, generation);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = if generation.status.is_finished() {
                let credits = generation.credits_used().unwrap_or(0.0);
                // A webhook announces the job exactly as members read it.
                let announcement = std::str::from_utf8(&view.body).unwrap_or_default();
                let end = JobEnd { status, body: &body, credits, announcement };
                self.inner.store.job_finished(id, &end).await.map(|charged| {
                    let Some(charged) = charged else { return };
                    if let Some(entry) = self.inner.keys.get(charged.key_id) {
                        entry.job_ended(credits);
                    }
                    if charged.webhook_queued {
                        self.inner.webhooks.wake();
                    }
                })
            } else {
                self.inner.store.job_changed(id, status, &body).await
            };
            match result {
                Ok(()) => break,
                Err(e) if attempt < 5 => {
                    tracing::warn!(generation_id = id, error = %e, "could not record a status; retrying");
                    tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                }
                Err(e) => {
                    tracing::error!(generation_id = id, error = %e, "could not record a status");
                    break;
                }
            }
        }
        tracing::info!(generation_id = id, status, "job status");
        self.inner.jobs.put(id, view);
    }
}

/// Counts a followed job for as long as it lives, however its task ends.
struct Followed(Arc<Metrics>);

impl Followed {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.followed(1);
        Followed(metrics)
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        self.0.followed(-1);
    }
}

/// The view of a stored job, if it has an upstream id.
pub(crate) fn view_of(job: &JobRecord) -> Option<(String, JobView)> {
    let id = job.generation_id.clone()?;
    let generation = job
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<Generation>(b).ok())
        .unwrap_or_else(|| Generation::new(id.clone(), Status::from(job.status.as_str())));
    Some((id, JobView::new(job.key_id, &generation)))
}
