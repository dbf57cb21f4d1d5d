//! Starting a simulator and a proxy, and talking to them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aimlvid::{PollPolicy, RetryPolicy};
use aimlvid_server::store::{Backend, KeyLimits, SqliteStore};
use aimlvid_server::webhooks::WebhookConfig;
use aimlvid_server::{AppState, StateConfig};
use aimlvid_sim::{RunningSim, SimConfig, Simulator, Spread};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub(crate) const ADMIN_TOKEN: &str = "admin-token-for-tests";

/// The test receivers listen on loopback, over plain http.
pub(crate) const LOOPBACK_WEBHOOKS: aimlvid_server::webhooks::TargetRules =
    aimlvid_server::webhooks::TargetRules { allow_private_targets: true, allow_plain_http: true };

/// Where a test's proxies keep their jobs: one SQLite file, or one schema
/// of the test PostgreSQL.
pub(crate) enum Storage {
    /// The directory lives as long as the file is used.
    Sqlite(#[allow(dead_code)] tempfile::TempDir, PathBuf),
    Postgres(TestPostgres),
}

impl Storage {
    pub(crate) async fn open(&self) -> Arc<dyn Backend> {
        match self {
            Storage::Sqlite(_, db) => Arc::new(SqliteStore::open(db).await.unwrap()),
            Storage::Postgres(database) => {
                let settings = aimlvid_server::store::PostgresSettings {
                    max_connections: 4,
                    ..aimlvid_server::store::PostgresSettings::new(secrecy::SecretString::from(
                        database.url.as_str(),
                    ))
                };
                Arc::new(aimlvid_server::store::PostgresStore::open(&settings).await.unwrap())
            }
        }
    }

    /// The `--database` argument that opens this storage.
    pub(crate) fn database_arg(&self) -> String {
        match self {
            Storage::Sqlite(_, db) => db.display().to_string(),
            Storage::Postgres(database) => database.url.clone(),
        }
    }

    pub(crate) async fn finish(self) {
        if let Storage::Postgres(database) = self {
            database.drop().await;
        }
    }
}

/// Runs each case on SQLite and on PostgreSQL, as `sqlite::CASE` and
/// `postgres::CASE` (which says it is skipped without a test database).
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (dir, db) = crate::support::temp_db();
                    super::$case(crate::support::Storage::Sqlite(dir, db)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(database) = crate::support::TestPostgres::create().await else { return };
                    super::$case(crate::support::Storage::Postgres(database)).await;
                }
            )*
        }
    };
}

pub(crate) use on_both_backends;

/// A simulator whose time is frozen: jobs finish only when told to
/// (`complete_now`), so tests decide when, without sleeping.
pub(crate) async fn frozen_sim() -> RunningSim {
    frozen_sim_with(|_| {}).await
}

/// [`frozen_sim`] with `tweak` applied.
pub(crate) async fn frozen_sim_with(tweak: impl FnOnce(&mut SimConfig)) -> RunningSim {
    let mut config = SimConfig {
        time_scale: 0.0,
        queue_time: Spread::Fixed(Duration::from_secs(2)),
        generation_time: Spread::Fixed(Duration::from_secs(100)),
        ..SimConfig::default()
    };
    tweak(&mut config);
    Simulator::start(config).await.unwrap()
}

/// Where the simulator announces files when they are on an https CDN, as
/// the upstream's are (so a result can be extended by its URL): a port
/// nothing listens on, so reading them fails as a lost host does.
pub(crate) const CDN: &str = "https://127.0.0.1:9";

/// A simulator 1000 times faster than real time: a job takes about 100 ms.
pub(crate) async fn fast_sim() -> RunningSim {
    let config = SimConfig {
        time_scale: 1000.0,
        queue_time: Spread::Fixed(Duration::from_secs(2)),
        generation_time: Spread::Fixed(Duration::from_secs(100)),
        ..SimConfig::default()
    };
    Simulator::start(config).await.unwrap()
}

/// A running proxy.
pub(crate) struct Proxy {
    pub(crate) url: String,
    pub(crate) state: AppState,
    pub(crate) http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// A proxy in front of `sim`, storing in `db`, polling every 5 ms (the
/// simulator's time is frozen or fast, so real-time pacing would only slow tests).
pub(crate) async fn start_proxy(sim: &RunningSim, db: &Path) -> Proxy {
    start_proxy_with(sim, db, quick_polls()).await
}

/// Polls every 5 ms, for a minute at most.
pub(crate) fn quick_polls() -> PollPolicy {
    PollPolicy::fixed(Duration::from_millis(5)).deadline(Duration::from_secs(60))
}

/// [`start_proxy`], with the state's configuration changed by `tweak`.
pub(crate) async fn start_proxy_configured(
    sim: &RunningSim,
    db: &Path,
    tweak: impl FnOnce(&mut StateConfig),
) -> Proxy {
    start_proxy_tweaked(sim, db, quick_polls(), tweak).await
}

/// Asks `check` every 10 ms until it answers `Some`, and returns that;
/// fails the test after 20 s, saying `what` never happened.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(crate) async fn start_proxy_with(sim: &RunningSim, db: &Path, policy: PollPolicy) -> Proxy {
    start_proxy_tweaked(sim, db, policy, |_| {}).await
}

/// [`start_proxy_with`], with the state's configuration changed by `tweak`.
pub(crate) async fn start_proxy_tweaked(
    sim: &RunningSim,
    db: &Path,
    policy: PollPolicy,
    tweak: impl FnOnce(&mut StateConfig),
) -> Proxy {
    start_proxy_on(sim, SqliteStore::open(db).await.unwrap(), policy, tweak).await
}

/// [`start_proxy_tweaked`] on a store opened by the caller.
pub(crate) async fn start_proxy_on<S: Backend + 'static>(
    sim: &RunningSim,
    store: S,
    policy: PollPolicy,
    tweak: impl FnOnce(&mut StateConfig),
) -> Proxy {
    start_proxy_dyn(sim, Arc::new(store), policy, tweak).await
}

/// [`start_proxy_on`], on whichever backend `store` is.
pub(crate) async fn start_proxy_dyn(
    sim: &RunningSim,
    store: Arc<dyn Backend>,
    policy: PollPolicy,
    tweak: impl FnOnce(&mut StateConfig),
) -> Proxy {
    let state = proxy_state(sim, store, policy, tweak).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(aimlvid_server::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Proxy { url, state, http: reqwest::Client::new(), stop: Some(stop), task: Some(task) }
}

/// A proxy serving HTTPS with `tls` at `https://localhost:PORT`, and a
/// client that trusts only `ca_pem` and finds `localhost` on loopback.
pub(crate) async fn start_tls_proxy(
    sim: &RunningSim,
    db: &Path,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    ca_pem: &str,
) -> Proxy {
    start_tls_proxy_configured(sim, db, tls, ca_pem, |_| {}).await
}

/// [`start_tls_proxy`], with the state's configuration changed by `tweak`.
pub(crate) async fn start_tls_proxy_configured(
    sim: &RunningSim,
    db: &Path,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    ca_pem: &str,
    tweak: impl FnOnce(&mut StateConfig),
) -> Proxy {
    let state = proxy_state(sim, Arc::new(SqliteStore::open(db).await.unwrap()), quick_polls(), tweak).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(aimlvid_server::tls::serve_tls(listener, state.clone(), tls, async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap()])
        .resolve("localhost", address)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}", address.port());
    Proxy { url, state, http, stop: Some(stop), task: Some(task) }
}

/// The state of a proxy in front of `sim`, storing in `db`.
async fn proxy_state(
    sim: &RunningSim,
    store: Arc<dyn Backend>,
    policy: PollPolicy,
    tweak: impl FnOnce(&mut StateConfig),
) -> AppState {
    let upstream = aimlvid::Client::builder()
        .api_key(aimlvid_sim::DEFAULT_API_KEY)
        .base_url(sim.base_url())
        .poll_policy(policy)
        .retry_policy(RetryPolicy::default().time_scaled(100.0));
    let mut config = StateConfig {
        admin_token: Some(ADMIN_TOKEN.to_owned().into()),
        key_refresh: Duration::from_millis(50),
        // Reconciled only when a test asks, so no test's upstream calls include one.
        reconcile_every: None,
        // Retries within milliseconds, so tests see them without waiting long.
        webhooks: WebhookConfig {
            max_attempts: 4,
            first_retry: Duration::from_millis(20),
            max_retry: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            // The test receivers listen on loopback, over plain http.
            allow_private_targets: true,
            allow_plain_http: true,
            ..WebhookConfig::default()
        },
        ..StateConfig::from_builder(upstream).unwrap()
    };
    tweak(&mut config);
    AppState::start(store, config).await.unwrap()
}

impl Proxy {
    /// Issues a key with these limits.
    pub(crate) async fn key(&self, name: &str, limits: KeyLimits) -> String {
        let issued =
            aimlvid_server::admin::issue_key(self.state.store(), name, limits, None, LOOPBACK_WEBHOOKS)
                .await
                .unwrap();
        self.state.reload_keys().await.unwrap();
        secrecy::ExposeSecret::expose_secret(&issued.key).to_owned()
    }

    /// Issues a key whose finished jobs are announced to `webhook_url`;
    /// returns the key and the webhook's secret.
    pub(crate) async fn key_with_webhook(&self, name: &str, webhook_url: &str) -> (String, String) {
        use secrecy::ExposeSecret as _;
        let issued = aimlvid_server::admin::issue_key(
            self.state.store(),
            name,
            KeyLimits::default(),
            Some(webhook_url),
            LOOPBACK_WEBHOOKS,
        )
        .await
        .unwrap();
        self.state.reload_keys().await.unwrap();
        (issued.key.expose_secret().to_owned(), issued.webhook_secret.unwrap().expose_secret().to_owned())
    }

    /// Shuts down gracefully and waits until it has.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("{}/v2/video/generations", self.url)
    }

    /// A client of the proxy, as a member would use it.
    pub(crate) fn client(&self, key: &str) -> aimlvid::Client {
        aimlvid::Client::builder()
            .api_key(key)
            .base_url(&self.url)
            .poll_policy(PollPolicy::fixed(Duration::from_millis(5)).deadline(Duration::from_secs(30)))
            .build()
            .unwrap()
    }
}

/// A valid create body.
pub(crate) fn create_body(prompt: &str) -> Value {
    json!({
        "model": "google/veo3-1-fast-extend-video",
        "prompt": prompt,
        "video_url": "https://example.com/clip.mp4",
    })
}

/// An answer: status, `Retry-After` and JSON body.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
    pub(crate) body: Value,
}

pub(crate) async fn post(http: &reqwest::Client, endpoint: &str, key: Option<&str>, body: &Value) -> Answer {
    post_with(http, endpoint, key, body, None).await
}

pub(crate) async fn post_with(
    http: &reqwest::Client,
    endpoint: &str,
    key: Option<&str>,
    body: &Value,
    idempotency_key: Option<&str>,
) -> Answer {
    let mut request = http.post(endpoint).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(idem) = idempotency_key {
        request = request.header("Idempotency-Key", idem);
    }
    answer(request.send().await.unwrap()).await
}

pub(crate) async fn get(
    http: &reqwest::Client,
    endpoint: &str,
    key: Option<&str>,
    id: Option<&str>,
) -> Answer {
    let mut request = http.get(endpoint);
    if let Some(id) = id {
        request = request.query(&[("generation_id", id)]);
    }
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    answer(request.send().await.unwrap()).await
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Answer { status, retry_after, body }
}

/// The keys of an error body, sorted.
pub(crate) fn shape(body: &Value) -> Vec<String> {
    let mut keys: Vec<String> = body.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    keys.sort();
    keys
}

pub(crate) fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("server.db");
    (dir, db)
}

/// A counter or gauge without labels from the proxy's metrics.
pub(crate) fn metric(proxy: &Proxy, name: &str) -> f64 {
    let text = proxy.state.render_metrics();
    let line = text.lines().find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name)).expect(name);
    line.rsplit_once(' ').unwrap().1.parse().unwrap()
}

/// A schema of its own in the test PostgreSQL (`AIMLVID_TEST_POSTGRES`),
/// named in the URL a server is given, so that cases never see each
/// other's rows.
pub(crate) struct TestPostgres {
    /// The database URL with `search_path` set to the schema.
    pub(crate) url: String,
    admin: sqlx::PgPool,
    schema: String,
}

impl TestPostgres {
    /// A fresh schema, or `None` (said on stderr) without a test database.
    pub(crate) async fn create() -> Option<TestPostgres> {
        let Ok(base) = std::env::var("AIMLVID_TEST_POSTGRES") else {
            eprintln!("skipped: AIMLVID_TEST_POSTGRES is not set (a postgres:// URL runs this case)");
            return None;
        };
        let admin = sqlx::PgPool::connect(&base).await.expect("the test database answers");
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
        let separator = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{separator}options=-csearch_path%3D{schema}");
        Some(TestPostgres { url, admin, schema })
    }

    /// Locks the schema's jobs table against writes (reads go on) until
    /// the lock is released: every write of a server waits on it, inside
    /// its transaction.
    pub(crate) async fn lock_jobs(&self) -> JobsLock {
        let mut holder = self.admin.acquire().await.unwrap().detach();
        use sqlx::Connection as _;
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut holder).await.unwrap();
        sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
        let lock = format!("LOCK TABLE {}.jobs IN EXCLUSIVE MODE", self.schema);
        sqlx::query(sqlx::AssertSqlSafe(lock)).execute(&mut holder).await.unwrap();
        let _ = holder.ping().await;
        JobsLock { holder, pid, admin: self.admin.clone() }
    }

    /// Drops the schema (a failed case keeps it, to look at).
    pub(crate) async fn drop(self) {
        let drop = format!("DROP SCHEMA {} CASCADE", self.schema);
        sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&self.admin).await.unwrap();
    }
}

/// Counts webhook deliveries per generation id.
pub(crate) async fn delivery_counter()
-> (String, Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>) {
    let counts = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, u32>::new()));
    let seen = counts.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: bytes::Bytes| {
            let seen = seen.clone();
            async move {
                let job: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(id) = job["id"].as_str() {
                    *seen.lock().unwrap().entry(id.to_owned()).or_default() += 1;
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, counts)
}

/// A lock on a schema's jobs table, held by a connection of the test's own.
pub(crate) struct JobsLock {
    holder: sqlx::PgConnection,
    pid: i32,
    admin: sqlx::PgPool,
}

impl JobsLock {
    /// Kills every backend waiting on the lock, mid-transaction; returns how many.
    pub(crate) async fn kill_waiting(&self) -> usize {
        let killed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE $1 = ANY(pg_blocking_pids(pid))) AS killed",
        )
        .bind(self.pid)
        .fetch_one(&self.admin)
        .await
        .unwrap();
        usize::try_from(killed).unwrap_or(0)
    }

    /// Lets the waiting writes through.
    pub(crate) async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.holder).await.unwrap();
        sqlx::Connection::close(self.holder).await.unwrap();
    }
}

/// Says a test of a real client is skipped for want of it, or fails the
/// test where `AIMLVID_REQUIRE_SDKS=1` (CI, whose `.ci/run` installs them).
pub(crate) fn skip_without_sdk(why: &str) {
    let required = std::env::var_os("AIMLVID_REQUIRE_SDKS").is_some_and(|v| v == "1");
    assert!(!required, "AIMLVID_REQUIRE_SDKS=1, but {why}");
    eprintln!("skipped: {why}");
}

/// A Python whose openai SDK has the videos API: `AIMLVID_OPENAI_PYTHON`,
/// or `python3`; `None` (the test skipped) if it has none.
pub(crate) async fn openai_python() -> Option<String> {
    let python = std::env::var("AIMLVID_OPENAI_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = tokio::process::Command::new(&python)
        .args(["-c", "from openai.resources.videos import Videos; Videos.extend"])
        .output()
        .await;
    if probe.is_ok_and(|out| out.status.success()) {
        return Some(python);
    }
    skip_without_sdk(&format!(
        "{python} has no openai SDK with the videos API (pip install openai, then set AIMLVID_OPENAI_PYTHON)"
    ));
    None
}
