//! The server's shared state, its start-up (load keys and jobs, resume
//! polling) and its background work: the writer, the scheduler, the
//! webhook deliverer and the key refresher.

use crate::calendar::unix_now;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aimlvid::{Generation, Status};
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::{CostEstimates, CostSettings};
use crate::engine::breaker::UpstreamBreaker;
use crate::engine::scheduler::{self, FollowJob, Scheduler};
use crate::engine::timing::{PollSettings, Timings};
use crate::engine::writer::{WriteError, Writer};
use crate::keys::{KeyTable, hash_key};
use crate::metrics::{KeyFigures, Metrics, Snapshot};
use crate::store::{JobEnd, JobRecord, JobWrite, KeyId, Store, StoreError, WriteOutcome};
use crate::view::{JobView, JobViews, UnknownIds};
use crate::webhooks::{WebhookConfig, Webhooks};

/// How often a running server checks storage for key changes made by
/// another process (the `keys` command), unless configured otherwise.
pub const DEFAULT_KEY_REFRESH: Duration = Duration::from_millis(250);

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
    /// A read-only bearer token for `/metrics` alone.
    pub metrics_token: Option<SecretString>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// How often storage is checked for key changes made with the `keys`
    /// command while the server runs (a one-row read; keys are reloaded
    /// only when they changed).
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
    /// When and how fast jobs are polled upstream.
    pub poll: PollSettings,
    /// How often creates whose outcome is unknown are looked up in the
    /// upstream's request logs.
    pub recover_interval: Duration,
    /// What creates are expected to cost, reserved against keys' budgets.
    pub costs: CostSettings,
    /// How long creates are refused and polls paused after the upstream
    /// refuses this server's key, before trying again.
    pub breaker_window: Duration,
    /// The HTTP front's timeouts and caps.
    pub front: crate::front::FrontLimits,
    /// How long finished jobs (and their webhook attempts) are kept;
    /// `None` keeps them for ever.
    pub retention: Option<Duration>,
    /// How long a team page session lasts from sign-in; `None` turns the
    /// page (`/ui`) off.
    pub team_page: Option<Duration>,
    /// Creates on their way upstream at once, all keys together (each key
    /// has at most `keys::CREATES_PER_KEY` of them).
    pub max_creates_in_flight: usize,
    /// How often a server sharing its database renews its job leases and
    /// takes over lapsed ones (a third of the lease, at most).
    pub lease_check: Duration,
    /// How long a create waits for storage to record it before it is
    /// answered 503, with nothing sent upstream.
    pub create_record_timeout: Duration,
    /// How long a create whose outcome is unknown keeps counting against
    /// its key while the upstream's request logs do not show it; after
    /// that it most likely never reached the upstream (it is still looked up).
    pub unknown_window: Duration,
    /// How often this server's charges are reconciled with the upstream's
    /// ledger; `None` never (the `reconcile` command and the admin API
    /// still can).
    pub reconcile_every: Option<Duration>,
    /// How far back each reconciliation looks.
    pub reconcile_window: Duration,
}

impl StateConfig {
    /// Defaults around an upstream client: no admin API, 64 MiB bodies,
    /// polls scheduled from the client's poll policy until each model's
    /// durations are learned.
    pub fn new(upstream: aimlvid::Client) -> Self {
        StateConfig {
            poll: PollSettings::from_policy(upstream.poll_policy()),
            upstream,
            admin_token: None,
            metrics_token: None,
            body_limit: crate::DEFAULT_BODY_LIMIT,
            key_refresh: DEFAULT_KEY_REFRESH,
            recent_jobs: crate::view::DEFAULT_RECENT_JOBS as u32,
            metrics: Arc::default(),
            webhooks: WebhookConfig::default(),
            recover_interval: crate::engine::recover::DEFAULT_RECOVER_INTERVAL,
            costs: CostSettings::default(),
            breaker_window: crate::engine::breaker::DEFAULT_BREAKER_WINDOW,
            front: crate::front::FrontLimits::default(),
            retention: None,
            team_page: Some(crate::page::session::DEFAULT_SESSION_LIFETIME),
            max_creates_in_flight: 64,
            lease_check: crate::engine::leases::DEFAULT_LEASE_CHECK,
            create_record_timeout: DEFAULT_CREATE_RECORD_TIMEOUT,
            unknown_window: crate::engine::recover::DEFAULT_UNKNOWN_WINDOW,
            reconcile_every: Some(crate::engine::ledger::DEFAULT_RECONCILE_INTERVAL),
            reconcile_window: crate::reconcile::DEFAULT_WINDOW,
        }
    }

    /// Defaults around an upstream client built from `builder`, reporting
    /// its calls to this configuration's metrics.
    /// Its creates wait out an upstream `Retry-After` of
    /// [`MAX_CREATE_RETRY_AFTER`] at most: a longer one is answered to the
    /// member as a 429 with that `Retry-After`, rather than held open.
    pub fn from_builder(builder: aimlvid::ClientBuilder) -> aimlvid::Result<Self> {
        let metrics = Arc::<Metrics>::default();
        // The proxy checks each create against the catalog itself, before
        // recording it (answering in the upstream's 400 shape): once is enough.
        let upstream = builder
            .observer(metrics.clone())
            .max_retry_after(MAX_CREATE_RETRY_AFTER)
            .validate_requests(false)
            .build()?;
        Ok(StateConfig { metrics, ..StateConfig::new(upstream) })
    }
}

/// How long a create waits for storage, unless configured otherwise.
pub const DEFAULT_CREATE_RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest upstream `Retry-After` a member's create waits out.
pub const MAX_CREATE_RETRY_AFTER: Duration = Duration::from_secs(10);

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
    /// Held from reading the keys to syncing the table, so that a reload
    /// that read earlier cannot sync over one that read later (the
    /// refresher would otherwise briefly undo a key just issued).
    reloading: tokio::sync::Mutex<()>,
    jobs: JobViews,
    unknown_ids: UnknownIds,
    admin_token_hash: Option<[u8; 32]>,
    metrics_token_hash: Option<[u8; 32]>,
    body_limit: usize,
    metrics: Arc<Metrics>,
    webhooks: Webhooks,
    writer: Writer,
    scheduler: Scheduler,
    costs: Arc<CostEstimates>,
    catalogue: Arc<crate::budget::CatalogueWatch>,
    breaker: UpstreamBreaker,
    front: crate::front::FrontLimits,
    team_page: Option<Duration>,
    create_record_timeout: Duration,
    unknown_window: Duration,
    last_reconciliation: crate::engine::ledger::LastReconciliation,
    reconcile_window: Duration,
    upstream_creates: tokio::sync::Semaphore,
    /// Cancelled when shutdown begins: ends event streams, so that the
    /// requests still in flight can finish.
    draining: CancellationToken,
    /// Stops the background tasks, once requests have finished.
    stop: CancellationToken,
    /// Stops the writer, once everything else has stopped writing.
    stop_writer: CancellationToken,
    tasks: TaskTracker,
    /// Creates in flight, each in a task of its own so that a member's
    /// disconnect cannot cut one short; shutdown waits for them.
    creates: TaskTracker,
    writer_task: TaskTracker,
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
        // The jobs this server follows, and counts against its keys here: on
        // a shared store, those no live replica follows (the others' jobs end,
        // and are counted, where they are followed); on a SQLite file, all.
        let unfinished =
            if store.shared() { store.take_over_jobs().await? } else { store.unfinished_jobs().await? };
        let costs = Arc::new(CostEstimates::from_settings(config.costs));
        costs.seed(store.model_costs().await?);
        let catalogue = Arc::new(crate::budget::CatalogueWatch::default());
        // Prices before the first create, so that its reservation uses them;
        // an upstream slow to answer delays the start a little, not forever.
        let next_price_read = tokio::time::timeout(
            crate::budget::FIRST_PRICE_READ,
            crate::budget::read_prices(&config.upstream, &costs, &catalogue),
        )
        .await
        .unwrap_or(std::time::Duration::from_secs(600));
        // Each unfinished job holds its expected cost against its key's budget.
        let mut per_key: HashMap<KeyId, (u32, f64)> = HashMap::new();
        for job in &unfinished {
            let expected = costs.estimate(&job.model, &serde_json::Value::Null);
            if let Some(id) = &job.generation_id {
                costs.hold(id, &job.model, expected);
            }
            let entry = per_key.entry(job.key_id).or_default();
            entry.0 += 1;
            entry.1 += expected;
        }
        // On a store of one server, creates whose outcome is unknown keep
        // counting against their keys until resolved or given up on (a
        // shared store counts them in the database).
        if !store.shared() {
            for job in store.unknown_jobs().await?.into_iter().filter(|job| !job.hold_released) {
                let expected = costs.estimate(&job.model, &serde_json::Value::Null);
                let hold =
                    crate::budget::UnknownHold { key_id: job.key_id, model: job.model, credits: expected };
                costs.hold_unknown(&job.local_id, hold);
                let entry = per_key.entry(job.key_id).or_default();
                entry.0 += 1;
                entry.1 += expected;
            }
        }
        let keys = KeyTable::default();
        keys.sync(store.keys().await?, |id| per_key.get(&id).copied().unwrap_or_default());

        let jobs = JobViews::new(config.recent_jobs as usize);
        // Oldest first, so that the newest count as the most recently used.
        for job in store.recent_jobs(config.recent_jobs).await?.iter().rev().chain(&unfinished) {
            if let Some((id, view)) = view_of(job) {
                jobs.put(&id, view);
            }
        }
        let timings = Timings::load(store.model_timings().await?);
        let metrics = config.metrics;
        let stop_writer = CancellationToken::new();
        let writer_task = TaskTracker::new();
        let writer = Writer::start(store.clone(), metrics.clone(), stop_writer.clone(), &writer_task);
        let (scheduler, follow_queue) = Scheduler::new();
        let state = AppState {
            inner: Arc::new(Inner {
                store,
                upstream: config.upstream,
                keys,
                reloading: tokio::sync::Mutex::new(()),
                jobs,
                unknown_ids: UnknownIds::default(),
                admin_token_hash: config.admin_token.map(|t| hash_key(t.expose_secret())),
                metrics_token_hash: config.metrics_token.map(|t| hash_key(t.expose_secret())),
                body_limit: config.body_limit,
                metrics,
                webhooks: Webhooks::new(config.webhooks)?,
                writer,
                scheduler,
                costs,
                catalogue,
                breaker: UpstreamBreaker::new(config.breaker_window),
                front: config.front,
                team_page: config.team_page,
                create_record_timeout: config.create_record_timeout,
                unknown_window: config.unknown_window,
                last_reconciliation: crate::engine::ledger::LastReconciliation::default(),
                reconcile_window: config.reconcile_window,
                upstream_creates: tokio::sync::Semaphore::new(config.max_creates_in_flight.max(1)),
                draining: CancellationToken::new(),
                stop: CancellationToken::new(),
                stop_writer,
                tasks: TaskTracker::new(),
                creates: TaskTracker::new(),
                writer_task,
            }),
        };
        tracing::info!(unfinished = unfinished.len(), "resuming polls");
        for job in unfinished {
            state.follow_resumed(job);
        }
        if state.store().shared() {
            let (leaser, stop) = (state.clone(), state.inner.stop.clone());
            state.inner.tasks.spawn(crate::engine::leases::run(leaser, config.lease_check, stop));
            let (listener, stop) = (state.clone(), state.inner.stop.clone());
            state.inner.tasks.spawn(crate::engine::changes::run(listener, stop));
        }
        let polling = state.clone();
        let stop = state.inner.stop.clone();
        state.inner.tasks.spawn(scheduler::run(polling, config.poll, timings, follow_queue, stop));
        if let Some(keep) = config.retention {
            let pruner = state.clone();
            let stop = state.inner.stop.clone();
            state.inner.tasks.spawn(crate::engine::retention::run(pruner, keep, stop));
        }
        let (upstream, costs, catalogue, stop) = (
            state.upstream().clone(),
            state.inner.costs.clone(),
            state.inner.catalogue.clone(),
            state.inner.stop.clone(),
        );
        state.inner.tasks.spawn(crate::budget::refresh_prices(
            upstream,
            costs,
            catalogue,
            next_price_read,
            stop,
        ));
        let recoverer = state.clone();
        let stop = state.inner.stop.clone();
        state.inner.tasks.spawn(crate::engine::recover::run(recoverer, config.recover_interval, stop));
        if let Some(every) = config.reconcile_every {
            let (reconciler, stop) = (state.clone(), state.inner.stop.clone());
            let window = config.reconcile_window;
            state.inner.tasks.spawn(crate::engine::ledger::run(reconciler, every, window, stop));
        }
        let refresher = state.clone();
        state.inner.tasks.spawn(async move { refresher.refresh_keys(config.key_refresh).await });
        let deliverer = state.clone();
        state.inner.tasks.spawn(async move {
            let inner = &deliverer.inner;
            inner.webhooks.run(&deliverer, &inner.stop).await;
        });
        Ok(state)
    }

    /// Follows a job found in storage (at start, or taken over from a
    /// replica that stopped).
    pub(crate) fn follow_resumed(&self, job: crate::store::JobRecord) {
        let Some(id) = job.generation_id else { return };
        let age = Duration::from_secs(u64::try_from(unix_now() - job.created_at).unwrap_or(0));
        let status = Status::from(job.status.as_str());
        self.follow(FollowJob { id, key_id: job.key_id, model: job.model, age, status, fresh: false });
    }

    /// Stops polling and waits for the background tasks to end. Jobs stay
    /// unfinished in storage and are resumed by the next start.
    pub async fn stop(&self) {
        let inner = &self.inner;
        inner.draining.cancel();
        let rest = async {
            // A create in flight finishes (and is recorded) even if its member left.
            inner.creates.close();
            inner.creates.wait().await;
            inner.stop.cancel();
            inner.tasks.close();
            inner.tasks.wait().await;
        };
        tokio::pin!(rest);
        // Storage that refuses writes must not hold the process: once it
        // has failed for a second (or the grace ran out), the writer stops
        // retrying (after a last grace of its own, naming each write it
        // could not store), and whatever waited on it ends.
        let storage_gave_out = async {
            let started = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let failing =
                    inner.writer.health().failing().is_some_and(|(for_, _)| for_ >= Duration::from_secs(1));
                if failing || started.elapsed() >= inner.front.shutdown_grace {
                    return;
                }
            }
        };
        tokio::select! {
            () = &mut rest => {}
            () = storage_gave_out => {
                tracing::error!("stopping while creates and polls still wait for storage; stopping the writer");
                inner.stop_writer.cancel();
                rest.await;
            }
        }
        // Last, so that what the pollers saw before stopping is stored.
        self.inner.stop_writer.cancel();
        self.inner.writer_task.close();
        self.inner.writer_task.wait().await;
    }

    /// The storage backend.
    /// The webhook delivery worker.
    pub(crate) fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

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

    /// Ids recently found in neither memory nor storage.
    pub fn unknown_ids(&self) -> &UnknownIds {
        &self.inner.unknown_ids
    }

    /// What creates are expected to cost, and the reservations of jobs in flight.
    pub fn costs(&self) -> &CostEstimates {
        &self.inner.costs
    }

    /// A turn to send a create upstream, all keys together, first come
    /// first served.
    pub(crate) async fn upstream_create_turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.inner.upstream_creates.acquire().await.expect("the semaphore is never closed")
    }

    /// How long an unknown create keeps counting while the logs lack it.
    pub(crate) fn unknown_window(&self) -> Duration {
        self.inner.unknown_window
    }

    /// How long a create waits for storage to record it.
    /// What the upstream's catalogue last said of this build's models.
    pub fn catalogue(&self) -> &crate::budget::CatalogueWatch {
        &self.inner.catalogue
    }

    /// The last reconciliation with the upstream's ledger.
    pub fn last_reconciliation(&self) -> &crate::engine::ledger::LastReconciliation {
        &self.inner.last_reconciliation
    }

    /// How far back a reconciliation looks, unless asked otherwise.
    pub fn reconcile_window(&self) -> Duration {
        self.inner.reconcile_window
    }

    pub(crate) fn create_record_timeout(&self) -> Duration {
        self.inner.create_record_timeout
    }

    /// How long a team page session lasts, if the page is served.
    pub fn team_page_sessions(&self) -> Option<Duration> {
        self.inner.team_page
    }

    /// The HTTP front's timeouts and caps.
    pub fn front_limits(&self) -> &crate::front::FrontLimits {
        &self.inner.front
    }

    /// Whether the upstream is refusing this server's key.
    pub fn breaker(&self) -> &UpstreamBreaker {
        &self.inner.breaker
    }

    /// The one writer of job changes.
    pub fn writer(&self) -> &Writer {
        &self.inner.writer
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

    /// Whether `token` may read `/metrics`: the metrics token or the admin
    /// token. Open to all when neither is configured.
    /// Whether `hash` is the admin token's hash (a team page session's check).
    pub(crate) fn admin_hash_is(&self, hash: &[u8; 32]) -> bool {
        self.inner.admin_token_hash.is_some_and(|expected| expected.ct_eq(hash).into())
    }

    pub fn may_read_metrics(&self, token: &str) -> bool {
        let inner = &self.inner;
        if inner.admin_token_hash.is_none() && inner.metrics_token_hash.is_none() {
            return true;
        }
        let hash = hash_key(token);
        let matches = |h: &Option<[u8; 32]>| h.is_some_and(|expected| bool::from(expected.ct_eq(&hash)));
        matches(&inner.metrics_token_hash) || matches(&inner.admin_token_hash)
    }

    /// Whether the admin API is on.
    pub fn admin_enabled(&self) -> bool {
        self.inner.admin_token_hash.is_some()
    }

    /// Per key, its unfinished jobs: as a shared store counts them (every
    /// replica's), else as this server does.
    pub(crate) async fn unfinished_per_key(
        &self,
    ) -> Result<std::collections::HashMap<KeyId, u32>, StoreError> {
        if let Some(counts) = self.inner.store.unfinished_counts().await? {
            return Ok(counts);
        }
        Ok(self.inner.keys.entries().into_iter().map(|entry| (entry.id(), entry.unfinished())).collect())
    }

    /// Reloads keys from storage now.
    pub async fn reload_keys(&self) -> Result<(), StoreError> {
        let _in_order = self.inner.reloading.lock().await;
        let records = self.inner.store.keys().await?;
        // Keys new to this process have no jobs in flight here yet.
        self.inner.keys.sync(records, |_| (0, 0.0));
        Ok(())
    }

    async fn refresh_keys(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = None;
        loop {
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A one-row read; the keys themselves only when they changed.
            let version = match self.inner.store.keys_version().await {
                Ok(version) => version,
                Err(e) => {
                    tracing::warn!(error = %e, "could not check keys for changes");
                    continue;
                }
            };
            if seen == Some(version) {
                continue;
            }
            match self.reload_keys().await {
                Ok(()) => seen = Some(version),
                Err(e) => tracing::warn!(error = %e, "could not reload keys"),
            }
        }
    }

    /// Runs a create in a task of its own, which the request only waits
    /// on: dropping the request (a member who disconnects) does not stop it.
    pub(crate) fn spawn_create<F>(&self, create: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.creates.spawn(create)
    }

    /// Follows a job upstream until it finishes: the one scheduler polls
    /// it, however many members read it.
    pub(crate) fn follow(&self, job: FollowJob) {
        self.inner.scheduler.follow(job);
    }

    /// Records a job's new state: storage first (through the writer, which
    /// retries until storage takes it), then the in-memory view, so that
    /// what members are shown is always what a restart would show. Returns
    /// whether it was stored (only a stopping server, or a write storage
    /// refuses for good, leaves it unstored).
    pub async fn record(&self, key_id: KeyId, generation: &Generation) -> bool {
        let id = generation.id.as_str();
        let status = generation.status.as_str();
        let body = match serde_json::to_string(generation) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(generation_id = id, error = %e, "could not encode a generation");
                return false;
            }
        };
        let view = JobView::new(key_id, generation);
        let finished = generation.status.is_finished();
        let credits = generation.credits_used().unwrap_or(0.0);
        let write = if finished {
            // A webhook announces the job exactly as members read it.
            let announcement = String::from_utf8_lossy(&view.body).into_owned();
            let end = JobEnd { status: status.to_owned(), body, credits, announcement };
            JobWrite::Finished { generation_id: id.to_owned(), end }
        } else {
            JobWrite::Changed { generation_id: id.to_owned(), status: status.to_owned(), body }
        };
        match self.inner.writer.write(write).await {
            Ok(WriteOutcome::Finished(Some(charged))) => {
                // The reservation gives way to the real charge, which also
                // teaches the model's expected cost.
                let hold = self.inner.costs.release(id);
                if let Some(hold) = &hold {
                    self.inner.costs.learn(&hold.model, credits);
                }
                if let Some(entry) = self.inner.keys.get(charged.key_id) {
                    entry.job_charged(
                        charged.key_credits_used,
                        charged.key_period,
                        hold.map_or(0.0, |h| h.credits),
                    );
                }
                if charged.webhook_queued {
                    self.inner.webhooks.wake();
                }
            }
            Ok(_) => {}
            Err(WriteError::Stopped) => {
                // Not stored, so not shown: the next start polls the job again.
                return false;
            }
            Err(e) => {
                tracing::error!(generation_id = id, error = %e, "storage refused a status; not shown");
                return false;
            }
        }
        tracing::debug!(generation_id = id, status, "job status");
        self.inner.jobs.put(id, view);
        true
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
