//! The HTTP fronts' state, and the server's start-up: load keys and jobs,
//! build the jobs service and the engine's parts, and start the background
//! work (the writer, the scheduler, recovery, reconciliation, webhook
//! delivery, the key refresher), each task with only the handles it uses.

use std::sync::Arc;
use std::time::Duration;

use aimlvid::Generation;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::{CostEstimates, CostSettings};
use crate::engine::breaker::UpstreamBreaker;
use crate::engine::ledger::Reconciler;
use crate::engine::recover::Recovery;
use crate::engine::scheduler::{self, Poller, Scheduler};
use crate::engine::settle::Settle;
use crate::engine::timing::{PollSettings, Timings};
use crate::engine::writer::Writer;
use crate::keys::{KeyTable, hash_key};
use crate::metrics::{KeyFigures, Metrics, Snapshot};
use crate::reservations::Reservations;
use crate::store::{Backend, JobLeases, JobWrites, KeyId, Store, StoreError};
use crate::view::{JobRequests, JobViews, UnknownIds};
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
    pub front: crate::connection::FrontLimits,
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
            body_limit: DEFAULT_BODY_LIMIT,
            key_refresh: DEFAULT_KEY_REFRESH,
            recent_jobs: crate::view::DEFAULT_RECENT_JOBS as u32,
            metrics: Arc::default(),
            webhooks: WebhookConfig::default(),
            recover_interval: crate::engine::recover::DEFAULT_RECOVER_INTERVAL,
            costs: CostSettings::default(),
            breaker_window: crate::engine::breaker::DEFAULT_BREAKER_WINDOW,
            front: crate::connection::FrontLimits::default(),
            retention: None,
            team_page: Some(DEFAULT_SESSION_LIFETIME),
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

/// The default body limit: 64 MiB, room for a real clip sent inline as a
/// `data:` URI (base64 adds a third).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// How long a team page session lasts from sign-in, unless configured
/// (`team_page_session_hours`).
pub const DEFAULT_SESSION_HOURS: u64 = 12;
/// [`DEFAULT_SESSION_HOURS`] as a duration.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(DEFAULT_SESSION_HOURS * 3600);

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
    /// The jobs service every front creates and follows jobs through.
    jobs: crate::jobs::Jobs,
    key_reload: KeyReload,
    unknown_ids: UnknownIds,
    admin_token_hash: Option<[u8; 32]>,
    metrics_token_hash: Option<[u8; 32]>,
    body_limit: usize,
    metrics: Arc<Metrics>,
    webhooks: Arc<Webhooks>,
    front: crate::connection::FrontLimits,
    team_page: Option<Duration>,
    reconciler: Reconciler,
    /// Cancelled when shutdown begins: ends event streams, so that the
    /// requests still in flight can finish.
    draining: CancellationToken,
    /// Stops the background tasks, once requests have finished.
    stop: CancellationToken,
    /// Stops the writer, once everything else has stopped writing.
    stop_writer: CancellationToken,
    tasks: TaskTracker,
    writer_task: TaskTracker,
}

/// Reloads the keys from storage: when an admin changes one here, and when
/// the refresher sees another process (the `keys` command) changed one.
#[derive(Debug, Clone)]
struct KeyReload {
    store: Arc<dyn Store>,
    keys: Arc<KeyTable>,
    /// Held from reading the keys to syncing the table, so that a reload
    /// that read earlier cannot sync over one that read later (the
    /// refresher would otherwise briefly undo a key just issued).
    reloading: Arc<tokio::sync::Mutex<()>>,
}

impl KeyReload {
    async fn reload(&self) -> Result<(), StoreError> {
        let _in_order = self.reloading.lock().await;
        let records = self.store.keys().await?;
        // Keys new to this process have no jobs in flight here yet.
        self.keys.sync(records, |_| (0, 0.0));
        Ok(())
    }

    /// Checks storage for key changes every `every` until `stop`.
    async fn run(self, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            // A one-row read; the keys themselves only when they changed.
            let version = match self.store.keys_version().await {
                Ok(version) => version,
                Err(e) => {
                    tracing::warn!(error = %e, "could not check keys for changes");
                    continue;
                }
            };
            if seen == Some(version) {
                continue;
            }
            match self.reload().await {
                Ok(()) => seen = Some(version),
                Err(e) => tracing::warn!(error = %e, "could not reload keys"),
            }
        }
    }
}

impl AppState {
    /// Loads keys and jobs from `backend`, marks creates a previous run left
    /// in flight as `unknown`, starts polling every unfinished job, and
    /// resumes pending webhook deliveries.
    ///
    /// The backend is split here: its job writes go to the writer alone, its
    /// leases to start-up and the lease task, and everything else (this
    /// state included) holds [`Store`], which cannot write a job.
    pub async fn start(backend: Arc<dyn Backend>, config: StateConfig) -> Result<AppState, StartError> {
        let writes: Arc<dyn JobWrites> = backend.clone();
        let leases: Arc<dyn JobLeases> = backend.clone();
        let store: Arc<dyn Store> = backend;
        let orphans = leases.pending_to_unknown().await?;
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
            if store.shared() { leases.take_over_jobs().await? } else { store.unfinished_jobs().await? };
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
        // Each unfinished job, and on a store of one server each create whose
        // outcome is unknown, holds its place and expected cost against its key.
        let keys = Arc::new(KeyTable::default());
        let reservations = Reservations::new(costs.clone(), keys.clone(), store.shared());
        let unknown = if store.shared() { Vec::new() } else { store.unknown_jobs().await? };
        let per_key = reservations.resume(&unfinished, &unknown);
        keys.sync(store.keys().await?, |id| per_key.get(&id).copied().unwrap_or_default());

        let views = Arc::new(JobViews::new(config.recent_jobs as usize));
        let requests = Arc::new(JobRequests::new(config.recent_jobs as usize));
        // Oldest first, so that the newest count as the most recently used.
        for job in store.recent_jobs(config.recent_jobs).await?.iter().rev().chain(&unfinished) {
            if let Some((id, view)) = crate::view::view_of(job) {
                views.put(&id, view);
            }
        }
        let timings = Timings::load(store.model_timings().await?);
        let metrics = config.metrics;
        let stop_writer = CancellationToken::new();
        let writer_task = TaskTracker::new();
        let writer = Writer::start(writes, metrics.clone(), stop_writer.clone(), &writer_task);
        let (scheduler, follow_queue) = Scheduler::new(&config.poll, &timings);
        let webhooks = Arc::new(Webhooks::new(config.webhooks)?);
        let breaker = Arc::new(UpstreamBreaker::new(config.breaker_window));
        let settle = Settle {
            writer: writer.clone(),
            views: views.clone(),
            reservations: reservations.clone(),
            webhooks: webhooks.clone(),
        };
        let recovery = Recovery {
            store: store.clone(),
            upstream: config.upstream.clone(),
            settle: settle.clone(),
            scheduler: scheduler.clone(),
            unknown_window: config.unknown_window,
        };
        let reconciler = Reconciler {
            recovery: recovery.clone(),
            metrics: metrics.clone(),
            last: crate::engine::ledger::LastReconciliation::default(),
            window: config.reconcile_window,
        };
        let poller = Poller {
            upstream: config.upstream.clone(),
            breaker: breaker.clone(),
            writer: writer.clone(),
            metrics: metrics.clone(),
            settle: settle.clone(),
        };
        let jobs = crate::jobs::Jobs::new(crate::jobs::JobsParts {
            store: store.clone(),
            upstream: config.upstream.clone(),
            keys: keys.clone(),
            costs: costs.clone(),
            reservations,
            settle,
            scheduler: scheduler.clone(),
            catalogue: catalogue.clone(),
            breaker,
            metrics: metrics.clone(),
            requests: requests.clone(),
            max_creates_in_flight: config.max_creates_in_flight,
            create_record_timeout: config.create_record_timeout,
        });
        let state = AppState {
            inner: Arc::new(Inner {
                jobs,
                key_reload: KeyReload {
                    store: store.clone(),
                    keys: keys.clone(),
                    reloading: Arc::new(tokio::sync::Mutex::new(())),
                },
                unknown_ids: UnknownIds::default(),
                admin_token_hash: config.admin_token.map(|t| hash_key(t.expose_secret())),
                metrics_token_hash: config.metrics_token.map(|t| hash_key(t.expose_secret())),
                body_limit: config.body_limit,
                metrics: metrics.clone(),
                webhooks: webhooks.clone(),
                front: config.front,
                team_page: config.team_page,
                reconciler: reconciler.clone(),
                draining: CancellationToken::new(),
                stop: CancellationToken::new(),
                stop_writer,
                tasks: TaskTracker::new(),
                writer_task,
            }),
        };
        // Each background task gets the handles it uses, never the HTTP state.
        let (tasks, stop) = (&state.inner.tasks, &state.inner.stop);
        tracing::info!(unfinished = unfinished.len(), "resuming polls");
        for job in unfinished {
            scheduler.follow_stored(job);
        }
        if store.shared() {
            tasks.spawn(crate::engine::leases::run(
                leases,
                scheduler.clone(),
                config.lease_check,
                stop.clone(),
            ));
            let replicas =
                crate::engine::changes::Replicas { store: store.clone(), views: views.clone(), requests };
            tasks.spawn(crate::engine::changes::run(replicas, stop.clone()));
        }
        tasks.spawn(scheduler::run(poller, config.poll, timings, follow_queue, stop.clone()));
        if let Some(keep) = config.retention {
            tasks.spawn(crate::engine::retention::run(writer.clone(), keep, stop.clone()));
        }
        tasks.spawn(crate::budget::refresh_prices(
            config.upstream.clone(),
            costs,
            catalogue,
            next_price_read,
            stop.clone(),
        ));
        tasks.spawn(crate::engine::recover::run(recovery, config.recover_interval, stop.clone()));
        if let Some(every) = config.reconcile_every {
            tasks.spawn(crate::engine::ledger::run(reconciler, every, stop.clone()));
        }
        let refresher = state.inner.key_reload.clone();
        tasks.spawn(refresher.run(config.key_refresh, stop.clone()));
        let stop = stop.clone();
        tasks.spawn(async move { webhooks.run(&store, &metrics, &stop).await });
        Ok(state)
    }

    /// Stops polling and waits for the background tasks to end. Jobs stay
    /// unfinished in storage and are resumed by the next start.
    pub async fn stop(&self) {
        let inner = &self.inner;
        inner.draining.cancel();
        let rest = async {
            // A create in flight finishes (and is recorded) even if its member left.
            inner.jobs.finish_creates().await;
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
                let failing = inner
                    .jobs
                    .writer()
                    .health()
                    .failing()
                    .is_some_and(|(for_, _)| for_ >= Duration::from_secs(1));
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

    /// The jobs service: every create, follow and record goes through it.
    pub fn jobs(&self) -> &crate::jobs::Jobs {
        &self.inner.jobs
    }

    /// The webhook delivery worker.
    pub(crate) fn webhooks(&self) -> &Webhooks {
        &self.inner.webhooks
    }

    /// The storage backend.
    pub fn store(&self) -> &dyn Store {
        self.inner.jobs.store()
    }

    /// The upstream client.
    pub fn upstream(&self) -> &aimlvid::Client {
        self.inner.jobs.upstream()
    }

    /// The keys in memory.
    pub fn keys(&self) -> &KeyTable {
        self.inner.jobs.keys()
    }

    /// The jobs in memory.
    pub fn views(&self) -> &JobViews {
        self.inner.jobs.views()
    }

    /// Ids recently found in neither memory nor storage.
    pub fn unknown_ids(&self) -> &UnknownIds {
        &self.inner.unknown_ids
    }

    /// What creates are expected to cost, and the reservations of jobs in flight.
    pub fn costs(&self) -> &CostEstimates {
        self.inner.jobs.costs()
    }

    /// What the upstream's catalogue last said of this build's models.
    pub fn catalogue(&self) -> &crate::budget::CatalogueWatch {
        self.inner.jobs.catalogue()
    }

    /// Reconciles with the upstream's ledger, and keeps the last result.
    pub fn reconciler(&self) -> &Reconciler {
        &self.inner.reconciler
    }

    /// The last reconciliation with the upstream's ledger.
    pub fn last_reconciliation(&self) -> &crate::engine::ledger::LastReconciliation {
        &self.inner.reconciler.last
    }

    /// How far back a reconciliation looks, unless asked otherwise.
    pub fn reconcile_window(&self) -> Duration {
        self.inner.reconciler.window
    }

    /// How long a team page session lasts, if the page is served.
    pub fn team_page_sessions(&self) -> Option<Duration> {
        self.inner.team_page
    }

    /// The HTTP front's timeouts and caps.
    pub fn front_limits(&self) -> &crate::connection::FrontLimits {
        &self.inner.front
    }

    /// Whether the upstream is refusing this server's key.
    pub fn breaker(&self) -> &UpstreamBreaker {
        self.inner.jobs.breaker()
    }

    /// The one writer of job changes.
    pub fn writer(&self) -> &Writer {
        self.inner.jobs.writer()
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
            .keys()
            .entries()
            .into_iter()
            .map(|entry| KeyFigures {
                name: entry.record().name.clone(),
                unfinished: entry.unfinished(),
                credits: entry.credits_used(),
            })
            .collect();
        let snapshot =
            Snapshot { keys, jobs_in_memory: self.views().counts().0, jobs_evicted: self.views().evicted() };
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
        if let Some(counts) = self.store().unfinished_counts().await? {
            return Ok(counts);
        }
        Ok(self.keys().entries().into_iter().map(|entry| (entry.id(), entry.unfinished())).collect())
    }

    /// Reloads keys from storage now.
    pub async fn reload_keys(&self) -> Result<(), StoreError> {
        self.inner.key_reload.reload().await
    }

    /// Records a job's new state (see [`crate::engine::settle::Settle::record`]).
    pub async fn record(&self, key_id: KeyId, generation: &Generation) -> bool {
        self.inner.jobs.record(key_id, generation).await
    }
}
