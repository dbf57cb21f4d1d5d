//! Configuration: a TOML file, then the environment, then flags, each
//! overriding the one before. Secrets (the upstream key, the admin token)
//! come only from the environment or from files, never from a flag's value
//! (visible in `ps`) or the TOML file itself.
//!
//! A quarter of the file is its unit tests; the rest is one flat list of
//! settings, each with its flag, variable, field and check.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use serde::Deserialize;

use crate::engine::timing::{ModelPolling, PollSettings};
use crate::store::{DEFAULT_LEASE, Database, PostgresSettings};
use crate::webhooks::WebhookConfig;

/// The address served by default: loopback only, so that exposing the
/// server is a deliberate choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// The database file used by default, in the working directory.
pub const DEFAULT_DATABASE: &str = "aimlvid-server.db";
/// Where the upstream key is read from, first match wins.
pub const UPSTREAM_KEY_VARS: [&str; 2] = ["AIMLAPI_API_KEY", "AIML_API_KEY"];
/// Where the admin token is read from.
pub const ADMIN_TOKEN_VAR: &str = "AIMLVID_ADMIN_TOKEN";
/// Where the read-only `/metrics` token is read from.
pub const METRICS_TOKEN_VAR: &str = "AIMLVID_METRICS_TOKEN";
/// The shortest admin or metrics token accepted: 32 characters, such as
/// `openssl rand -hex 16` makes, so that it cannot be guessed.
pub const MIN_TOKEN_LEN: usize = 32;

/// The TOML file. Every field is optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<SocketAddr>,
    /// The database: a SQLite path or `sqlite:` URL, or a `postgres://` URL.
    pub database: Option<String>,
    /// Connections to PostgreSQL per server.
    pub database_pool_size: Option<u32>,
    /// The upstream's base URL.
    pub upstream_url: Option<String>,
    /// A file holding the upstream key.
    pub upstream_key_file: Option<PathBuf>,
    /// A file holding the admin token.
    pub admin_token_file: Option<PathBuf>,
    /// A file holding the read-only token for `/metrics`.
    pub metrics_token_file: Option<PathBuf>,
    /// Largest request body, in bytes.
    pub body_limit: Option<usize>,
    /// Limit on one upstream call, in seconds.
    pub upstream_timeout_secs: Option<u64>,
    /// How often the database is checked for key changes, in seconds
    /// (default: four times a second).
    pub key_refresh_secs: Option<u64>,
    /// Attempts per webhook delivery, the first included.
    pub webhook_max_attempts: Option<u32>,
    /// Limit on one webhook attempt, in seconds.
    pub webhook_timeout_secs: Option<u64>,
    /// Deliver webhooks to loopback, private and link-local addresses too
    /// (default false).
    pub webhook_allow_private_targets: Option<bool>,
    /// Deliver webhooks over plain http too (default false).
    pub webhook_allow_plain_http: Option<bool>,
    /// PEM certificate chain: serve HTTPS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// How log lines are written.
    pub log_format: Option<LogFormat>,
    /// Finished jobs kept in memory.
    pub recent_jobs: Option<u32>,
    /// How jobs are polled upstream.
    pub poll: Option<PollFile>,
    /// What creates are expected to cost, reserved against keys' budgets.
    pub budget: Option<BudgetFile>,
    /// Days finished jobs are kept (default: for ever).
    pub retention_days: Option<u32>,
    /// Serve the team page at `/ui` (default true).
    pub team_page: Option<bool>,
    /// Hours a team page session lasts from sign-in (default 12).
    pub team_page_session_hours: Option<u64>,
    /// Creates on their way upstream at once, all keys together (default 64).
    pub max_creates_in_flight: Option<usize>,
    /// With PostgreSQL: seconds a replica's hold on its jobs lasts unless
    /// renewed (default 15).
    pub lease_secs: Option<u64>,
    /// Connections open at once from one address (default 256; 0: no limit,
    /// for a server behind a reverse proxy).
    pub max_connections_per_peer: Option<usize>,
    /// Seconds from accepting a connection to its first byte (default 10).
    pub first_byte_timeout_secs: Option<u64>,
    /// `Strict-Transport-Security` max-age on answers over TLS, in seconds
    /// (default a year; 0 sends no such header).
    pub hsts_max_age_secs: Option<u64>,
    /// Seconds a create waits for the database to record it before it is
    /// refused with 503, nothing sent upstream (default 10).
    pub create_record_timeout_secs: Option<u64>,
    /// Hours between reconciliations with the upstream's ledger (default
    /// 24; 0 turns the server's own off, the `reconcile` command still works).
    pub reconcile_interval_hours: Option<u64>,
    /// Days each reconciliation looks back (default 7).
    pub reconcile_window_days: Option<u64>,
}

/// The `[budget]` table.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    /// Credits a create of a model not configured nor learned yet reserves.
    pub default_estimate: Option<f64>,
    /// Credits per model id (`[budget.estimates]`, `"model" = 120000`),
    /// used instead of the average of its finished jobs.
    #[serde(default)]
    pub estimates: std::collections::HashMap<String, f64>,
}

/// The `[poll]` table.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PollFile {
    /// Seconds from create to the first poll, for a model not learned yet.
    pub first_delay_secs: Option<f64>,
    /// Seconds between polls after the first, for a model not learned yet.
    pub interval_secs: Option<f64>,
    /// The longest wait between two polls of a job, in seconds.
    pub max_interval_secs: Option<f64>,
    /// Polls in flight at once.
    pub concurrency: Option<usize>,
    /// Polls started per second, at most.
    pub max_rate: Option<f64>,
    /// Whether to learn each model's job durations (default true).
    pub learn: Option<bool>,
    /// Settings per model id (`[poll.models."google/veo3-1-fast-extend-video"]`);
    /// a model named here follows them and is not learned.
    #[serde(default)]
    pub models: std::collections::HashMap<String, ModelPolling>,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields at the top level
    /// and the request's span (method, path, request id) under `span`.
    Json,
}

impl FileConfig {
    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        // toml's own message quotes the offending line, and so the value
        // on it, which may be a secret put there by mistake: say where and
        // what, not the line.
        toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().to_owned();
            match line {
                Some(line) => anyhow::anyhow!("parsing {}, line {line}: {message}", path.display()),
                None => anyhow::anyhow!("parsing {}: {message}", path.display()),
            }
        })
    }
}

/// Where the database is, for every subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DbArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "AIMLVID_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// The database: a SQLite file's path, or a URL such as
    /// `sqlite:///var/lib/aimlvid/db` (absolute), `sqlite://data/db`
    /// (relative) or `postgres://user:password@host/db` (for several
    /// replicas) [default: aimlvid-server.db].
    #[arg(long, env = "AIMLVID_DATABASE", global = true, value_name = "PATH|URL", hide_env_values = true)]
    pub database: Option<String>,
    /// Connections to PostgreSQL per server [default: 4 per core, 8 to 64].
    #[arg(long, env = "AIMLVID_DATABASE_POOL_SIZE", global = true, value_name = "N")]
    pub database_pool_size: Option<u32>,
}

/// How to log, for every subcommand.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log format [default: text].
    #[arg(long, env = "AIMLVID_LOG_FORMAT", global = true, value_enum)]
    pub log_format: Option<LogFormat>,
}

impl LogArgs {
    /// The format: flag or environment, then file, then text.
    pub fn format(&self, file: &FileConfig) -> LogFormat {
        self.log_format.or(file.log_format).unwrap_or_default()
    }
}

impl DbArgs {
    /// The file configuration, if a file was named.
    pub fn file(&self) -> anyhow::Result<FileConfig> {
        self.config.as_deref().map(FileConfig::load).transpose().map(Option::unwrap_or_default)
    }

    /// The database: flag or environment, then file, then default.
    pub fn database(&self, file: &FileConfig) -> anyhow::Result<Database> {
        let spec = self.database.as_deref().or(file.database.as_deref()).unwrap_or(DEFAULT_DATABASE);
        let lower = spec.trim().to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            let mut settings = PostgresSettings::new(SecretString::from(spec.trim().to_owned()));
            if let Some(size) = self.database_pool_size.or(file.database_pool_size) {
                settings.max_connections = size.max(2);
            }
            // Checked now, so a typo stops the command before anything starts.
            let _: sqlx::postgres::PgConnectOptions = spec.trim().parse().map_err(|e| {
                // The URL holds a password: never repeat it.
                anyhow::anyhow!("--database: not a PostgreSQL URL this server can use: {e}")
            })?;
            return Ok(Database::Postgres(settings));
        }
        // A URL may hold a password: only a path is ever repeated.
        let shown = if spec.contains("://") { "the database URL".to_owned() } else { format!("{spec:?}") };
        sqlite_path(spec).map(Database::Sqlite).map_err(|e| anyhow::anyhow!("--database {shown}: {e}"))
    }
}

/// The file of a database given as a path or a `sqlite:` URL:
/// `sqlite:///abs/path`, `sqlite://rel/path` or `sqlite:rel/path`.
pub fn sqlite_path(spec: &str) -> Result<PathBuf, String> {
    let spec = spec.trim();
    let lower = spec.to_ascii_lowercase();
    let Some(rest) = lower.starts_with("sqlite:").then(|| &spec["sqlite:".len()..]) else {
        if spec.contains("://") {
            return Err(
                "not a database this server knows; give a file path, a sqlite: URL or a postgres:// URL"
                    .into(),
            );
        }
        if spec.is_empty() {
            return Err("empty; give a file path or a sqlite: URL".into());
        }
        return Ok(PathBuf::from(spec));
    };
    if rest.contains('?') {
        return Err(
            "options after `?` are not supported (the server sets its own); give the file only".into()
        );
    }
    let path = rest.strip_prefix("//").unwrap_or(rest);
    if path == ":memory:" || path.is_empty() {
        return Err("an in-memory database loses every job and key when the server stops; \
                    give a file, such as sqlite:///var/lib/aimlvid/db"
            .into());
    }
    Ok(PathBuf::from(path))
}

/// Flags of `serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8787].
    #[arg(long, env = "AIMLVID_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The upstream's base URL [default: `https://api.aimlapi.com`].
    #[arg(long, env = "AIMLAPI_BASE_URL")]
    pub upstream_url: Option<String>,
    /// A file holding the upstream key (otherwise AIMLAPI_API_KEY).
    #[arg(long)]
    pub upstream_key_file: Option<PathBuf>,
    /// A file holding the admin API's bearer token (otherwise
    /// AIMLVID_ADMIN_TOKEN; with neither, the admin API is off).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// A file holding a read-only token for `/metrics` (otherwise
    /// AIMLVID_METRICS_TOKEN), so that Prometheus need not hold the admin token.
    #[arg(long)]
    pub metrics_token_file: Option<PathBuf>,
    /// Largest request body in bytes [default: 67108864, 64 MiB].
    #[arg(long, env = "AIMLVID_BODY_LIMIT")]
    pub body_limit: Option<usize>,
    /// Limit on one upstream call, in seconds [default: 120].
    #[arg(long, env = "AIMLVID_UPSTREAM_TIMEOUT_SECS")]
    pub upstream_timeout_secs: Option<u64>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "AIMLVID_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "AIMLVID_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Finished jobs kept in memory, the most recently used; older ones
    /// are read from the database when asked for [default: 10000].
    #[arg(long, env = "AIMLVID_RECENT_JOBS", value_name = "N")]
    pub recent_jobs: Option<u32>,
    /// Seconds from create to a job's first poll, for a model whose job
    /// durations the server has not learned yet [default: 85].
    #[arg(long, value_name = "SECS")]
    pub poll_first_delay: Option<f64>,
    /// Seconds between polls after the first, for a model not learned yet
    /// (growing 3% a poll) [default: 3.5].
    #[arg(long, value_name = "SECS")]
    pub poll_interval: Option<f64>,
    /// The longest wait between two polls of a job, in seconds [default: 15].
    #[arg(long, value_name = "SECS")]
    pub poll_max_interval: Option<f64>,
    /// Polls in flight at once [default: 64].
    #[arg(long, value_name = "N")]
    pub poll_concurrency: Option<usize>,
    /// Polls started per second at most; upstream 429s and 5xx lower the
    /// pace, which recovers by itself [default: 1000].
    #[arg(long, value_name = "N")]
    pub poll_rate: Option<f64>,
    /// Credits a create reserves against its key's budget when its model's
    /// cost is neither configured nor learned from finished jobs yet
    /// [default: 1000000].
    #[arg(long, value_name = "CREDITS")]
    pub default_job_estimate: Option<f64>,
    /// Forget finished jobs (and their webhook attempts) this many days
    /// after they were created; their charges stay on their keys
    /// [default: keep them for ever].
    #[arg(long, value_name = "DAYS")]
    pub retention_days: Option<u32>,
    /// Do not serve the team page (`/ui`); the API is unchanged.
    #[arg(long)]
    pub no_team_page: bool,
    /// With PostgreSQL: how long a replica's hold on the jobs it follows
    /// lasts unless renewed; a replica that dies has its jobs taken over
    /// within this [default: 15].
    #[arg(long, env = "AIMLVID_LEASE_SECS", value_name = "SECONDS")]
    pub lease_secs: Option<u64>,
    /// Connections open at once from one address; more are closed as they
    /// arrive. Behind a reverse proxy every connection comes from its
    /// address: raise this to its pool size, or 0 for no limit [default: 256].
    #[arg(long, env = "AIMLVID_MAX_CONNECTIONS_PER_PEER", value_name = "N")]
    pub max_connections_per_peer: Option<usize>,
}

/// The files of a TLS certificate and its key.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Everything `serve` needs, resolved.
#[derive(Debug)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where keys and jobs are kept.
    pub database: Database,
    /// The upstream's base URL.
    pub upstream_url: String,
    /// The upstream key.
    pub upstream_key: SecretString,
    /// The admin token, if the admin API is on.
    pub admin_token: Option<SecretString>,
    /// The read-only token for `/metrics`, if any.
    pub metrics_token: Option<SecretString>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Limit on one upstream call.
    pub upstream_timeout: Duration,
    /// How often the database is checked for key changes.
    pub key_refresh: Duration,
    /// How webhook deliveries are retried.
    pub webhooks: WebhookConfig,
    /// Serve HTTPS with these, or plain HTTP without.
    pub tls: Option<TlsFiles>,
    /// Finished jobs kept in memory.
    pub recent_jobs: u32,
    /// How jobs are polled upstream.
    pub poll: PollSettings,
    /// What creates are expected to cost.
    pub costs: crate::budget::CostSettings,
    /// How long finished jobs are kept; `None`: for ever.
    pub retention: Option<Duration>,
    /// How long a team page session lasts; `None`: the page is off.
    pub team_page: Option<Duration>,
    /// Creates on their way upstream at once, all keys together.
    pub max_creates_in_flight: usize,
    /// How often job leases are renewed (with PostgreSQL).
    pub lease_check: Duration,
    /// The HTTP front's limits.
    pub front: crate::connection::FrontLimits,
    /// How long a create waits for the database to record it.
    pub create_record_timeout: Duration,
    /// How often the server reconciles with the ledger; `None` never.
    pub reconcile_every: Option<Duration>,
    /// How far back a reconciliation looks.
    pub reconcile_window: Duration,
}

/// The longest time any setting may name: a day is already more than any
/// wait here needs, and larger values overflow the clocks they are added to.
const LONGEST_SETTING: Duration = Duration::from_secs(86_400);

/// Seconds from a flag or the file, checked.
fn secs(name: &str, value: Option<f64>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(s) if s.is_finite() && s >= 0.0 && s <= LONGEST_SETTING.as_secs_f64() => {
            Ok(Duration::from_secs_f64(s))
        }
        Some(s) => anyhow::bail!(
            "{name} must be a number of seconds from 0 to {}, not {s}",
            LONGEST_SETTING.as_secs()
        ),
    }
}

/// Whole seconds from a flag or the file, at most a day (or `max`).
fn whole_secs(name: &str, value: Option<u64>, default: Duration, max: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(s) if s <= max.as_secs() => Ok(Duration::from_secs(s)),
        Some(s) => anyhow::bail!("{name} must be at most {} seconds, not {s}", max.as_secs()),
    }
}

impl PollFile {
    fn settings(&self, args: &ServeArgs) -> anyhow::Result<PollSettings> {
        let defaults = PollSettings::default();
        let first_delay =
            secs("poll first delay", args.poll_first_delay.or(self.first_delay_secs), defaults.first_delay)?;
        let interval = secs("poll interval", args.poll_interval.or(self.interval_secs), defaults.interval)?;
        let max_interval = secs(
            "poll max interval",
            args.poll_max_interval.or(self.max_interval_secs),
            defaults.max_interval,
        )?;
        anyhow::ensure!(
            !interval.is_zero() && interval <= max_interval,
            "the poll interval must be above 0 and at most the max interval ({}s)",
            max_interval.as_secs_f64()
        );
        let max_rate = args.poll_rate.or(self.max_rate).unwrap_or(defaults.max_rate);
        anyhow::ensure!(
            max_rate.is_finite() && max_rate >= 1.0,
            "the poll rate must be at least 1 per second"
        );
        let concurrency = args.poll_concurrency.or(self.concurrency).unwrap_or(defaults.concurrency);
        anyhow::ensure!(concurrency >= 1, "poll concurrency must be at least 1");
        // A schedule the operator set holds for every model not learned yet.
        let configured = args.poll_first_delay.or(self.first_delay_secs).is_some()
            || args.poll_interval.or(self.interval_secs).is_some();
        Ok(PollSettings {
            first_delay,
            interval,
            max_interval,
            min_interval: defaults.min_interval.min(interval),
            learn: self.learn.unwrap_or(true),
            family_priors: !configured,
            models: self.models.clone(),
            concurrency,
            max_rate,
            ..defaults
        })
    }
}

impl Settings {
    /// Merges flags (and the environment, through them) over the file over
    /// the defaults. `env` looks a secret's variable up.
    pub fn resolve(
        db: &DbArgs,
        args: &ServeArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Settings> {
        let mut file = db.file()?;
        let upstream_key_file = args.upstream_key_file.clone().or(file.upstream_key_file.clone());
        let upstream_key = match upstream_key_file {
            Some(path) => read_secret(&path)?,
            None => UPSTREAM_KEY_VARS
                .iter()
                .find_map(|name| env(name).filter(|v| !v.trim().is_empty()))
                .map(|v| SecretString::from(v.trim().to_owned()))
                .context("no upstream key: set AIMLAPI_API_KEY or pass --upstream-key-file")?,
        };
        let token = |path: Option<PathBuf>, var: &str| -> anyhow::Result<Option<SecretString>> {
            let token = match path {
                Some(path) => Some(read_secret(&path)?),
                None => env(var).filter(|v| !v.trim().is_empty()).map(|v| v.trim().to_owned().into()),
            };
            if let Some(token) = &token {
                use secrecy::ExposeSecret as _;
                anyhow::ensure!(
                    token.expose_secret().chars().count() >= MIN_TOKEN_LEN,
                    "the {} is too short: use at least {MIN_TOKEN_LEN} random characters \
                     (for example `openssl rand -hex 16`)",
                    if var == ADMIN_TOKEN_VAR { "admin token" } else { "metrics token" }
                );
            }
            Ok(token)
        };
        let admin_token =
            token(args.admin_token_file.clone().or(file.admin_token_file.clone()), ADMIN_TOKEN_VAR)?;
        let metrics_token =
            token(args.metrics_token_file.clone().or(file.metrics_token_file.clone()), METRICS_TOKEN_VAR)?;
        let tls = match (
            args.tls_cert.clone().or(file.tls_cert.clone()),
            args.tls_key.clone().or(file.tls_key.clone()),
        ) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            _ => anyhow::bail!("TLS needs both a certificate and a key: pass --tls-cert and --tls-key"),
        };
        let poll = file.poll.as_ref().unwrap_or(&PollFile::default()).settings(args)?;
        let costs = {
            let budget = file.budget.take().unwrap_or_default();
            let default_estimate = args
                .default_job_estimate
                .or(budget.default_estimate)
                .unwrap_or(crate::budget::DEFAULT_JOB_ESTIMATE);
            let bad = |v: f64| !v.is_finite() || v < 0.0;
            if bad(default_estimate) || budget.estimates.values().any(|v| bad(*v)) {
                anyhow::bail!("job cost estimates must be numbers of credits, 0 or more");
            }
            crate::budget::CostSettings { default_estimate, estimates: budget.estimates }
        };
        let retention = args
            .retention_days
            .or(file.retention_days)
            .map(|days| Duration::from_secs(u64::from(days.max(1)) * 86_400));
        let year = Duration::from_secs(365 * 86_400);
        let mut database = db.database(&file)?;
        let lease =
            whole_secs("lease_secs", args.lease_secs.or(file.lease_secs), DEFAULT_LEASE, LONGEST_SETTING)?
                .max(Duration::from_secs(3));
        if let Database::Postgres(settings) = &mut database {
            settings.lease = lease;
        }
        let session_hours =
            file.team_page_session_hours.unwrap_or(crate::page::session::DEFAULT_SESSION_HOURS);
        anyhow::ensure!(
            (1..=24 * 365).contains(&session_hours),
            "team_page_session_hours must be from 1 to {} (a year), not {session_hours}",
            24 * 365
        );
        let team_page = (!args.no_team_page && file.team_page.unwrap_or(true))
            .then(|| Duration::from_secs(session_hours * 3600));
        let front = {
            let defaults = crate::connection::FrontLimits::default();
            crate::connection::FrontLimits {
                max_connections_per_peer: args
                    .max_connections_per_peer
                    .or(file.max_connections_per_peer)
                    .unwrap_or(defaults.max_connections_per_peer),
                first_byte_timeout: whole_secs(
                    "first_byte_timeout_secs",
                    file.first_byte_timeout_secs,
                    defaults.first_byte_timeout,
                    LONGEST_SETTING,
                )?
                .max(Duration::from_secs(1)),
                hsts_max_age: match file.hsts_max_age_secs {
                    None => defaults.hsts_max_age,
                    Some(0) => None,
                    Some(s) => Some(whole_secs("hsts_max_age_secs", Some(s), year, 2 * year)?),
                },
                ..defaults
            }
        };
        let create_record_timeout = whole_secs(
            "create_record_timeout_secs",
            file.create_record_timeout_secs,
            crate::state::DEFAULT_CREATE_RECORD_TIMEOUT,
            LONGEST_SETTING,
        )?
        .max(Duration::from_secs(1));
        let reconcile_every = match file.reconcile_interval_hours {
            Some(0) => None,
            Some(h) if h <= 24 * 366 => Some(Duration::from_secs(h * 3600)),
            Some(h) => anyhow::bail!("reconcile_interval_hours must be at most {}, not {h}", 24 * 366),
            None => Some(crate::engine::ledger::DEFAULT_RECONCILE_INTERVAL),
        };
        let reconcile_window = match file.reconcile_window_days {
            None => crate::reconcile::DEFAULT_WINDOW,
            Some(d) if (1..=366).contains(&d) => Duration::from_secs(d * 86_400),
            Some(d) => anyhow::bail!("reconcile_window_days must be 1 to 366, not {d}"),
        };
        let upstream_timeout = whole_secs(
            "upstream_timeout_secs",
            args.upstream_timeout_secs.or(file.upstream_timeout_secs),
            Duration::from_secs(120),
            LONGEST_SETTING,
        )?;
        anyhow::ensure!(!upstream_timeout.is_zero(), "upstream_timeout_secs must be at least 1");
        let key_refresh = whole_secs(
            "key_refresh_secs",
            file.key_refresh_secs,
            crate::state::DEFAULT_KEY_REFRESH,
            LONGEST_SETTING,
        )?;
        let webhook_timeout = whole_secs(
            "webhook_timeout_secs",
            file.webhook_timeout_secs,
            WebhookConfig::default().timeout,
            LONGEST_SETTING,
        )?;
        Ok(Settings {
            front,
            create_record_timeout,
            reconcile_every,
            reconcile_window,
            poll,
            costs,
            retention,
            team_page,
            lease_check: lease / 3,
            max_creates_in_flight: file.max_creates_in_flight.unwrap_or(64).max(1),
            tls,
            recent_jobs: args
                .recent_jobs
                .or(file.recent_jobs)
                .unwrap_or(crate::view::DEFAULT_RECENT_JOBS as u32),
            listen: args
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default")),
            database,
            upstream_url: args
                .upstream_url
                .clone()
                .or(file.upstream_url)
                .unwrap_or_else(|| aimlvid::DEFAULT_BASE_URL.to_owned()),
            upstream_key,
            admin_token,
            metrics_token,
            body_limit: args.body_limit.or(file.body_limit).unwrap_or(crate::DEFAULT_BODY_LIMIT),
            upstream_timeout,
            key_refresh: if file.key_refresh_secs.is_some() {
                key_refresh.max(Duration::from_secs(1))
            } else {
                key_refresh
            },
            webhooks: {
                let defaults = WebhookConfig::default();
                WebhookConfig {
                    max_attempts: file.webhook_max_attempts.unwrap_or(defaults.max_attempts).max(1),
                    timeout: webhook_timeout.max(Duration::from_secs(1)),
                    allow_private_targets: file.webhook_allow_private_targets.unwrap_or(false),
                    allow_plain_http: file.webhook_allow_plain_http.unwrap_or(false),
                    ..defaults
                }
            },
        })
    }
}

/// A secret from a file, trimmed. The error names the file, never its content.
fn read_secret(path: &Path) -> anyhow::Result<SecretString> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading secret file {}", path.display()))?;
    let text = text.trim();
    anyhow::ensure!(!text.is_empty(), "secret file {} is empty", path.display());
    Ok(SecretString::from(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    /// Values too large for a clock are refused with the setting's name,
    /// not a panic when they are added to one.
    #[test]
    fn huge_durations_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let env = |_: &str| Some("x".repeat(MIN_TOKEN_LEN));
        for (line, name) in [
            ("team_page_session_hours = 18446744073709551615", "team_page_session_hours"),
            ("webhook_timeout_secs = 18446744073709551615", "webhook_timeout_secs"),
            ("lease_secs = 18446744073709551615", "lease_secs"),
            ("[poll]\ninterval_secs = 1e308", "poll interval"),
        ] {
            let path = dir.path().join("server.toml");
            std::fs::write(&path, line).unwrap();
            let db = DbArgs { config: Some(path), ..DbArgs::default() };
            let err = Settings::resolve(&db, &ServeArgs::default(), env).unwrap_err().to_string();
            assert!(err.contains(name), "{line}: {err}");
        }
        let args = ServeArgs { poll_first_delay: Some(1e20), ..ServeArgs::default() };
        let err = Settings::resolve(&DbArgs::default(), &args, env).unwrap_err().to_string();
        assert!(err.contains("poll first delay"), "{err}");
    }

    /// A secret typed into the wrong place is not repeated by the error
    /// that refuses it.
    #[test]
    fn errors_about_the_file_or_the_database_never_repeat_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["upstream_key = \"sk-TOMLSECRET-123\"", "admin_token = sk-TOMLSECRET-123"] {
            let path = dir.path().join("server.toml");
            std::fs::write(&path, format!("listen = \"127.0.0.1:1\"\n{text}\n")).unwrap();
            let err = format!("{:#}", FileConfig::load(&path).unwrap_err());
            assert!(!err.contains("TOMLSECRET") && err.contains("line 2"), "{err}");
        }
        let db = DbArgs { database: Some("mysql://u:MysqlSecret1@localhost/db".into()), ..DbArgs::default() };
        let err = format!("{:#}", db.database(&FileConfig::default()).unwrap_err());
        assert!(!err.contains("MysqlSecret1") && err.contains("not a database"), "{err}");
    }

    #[test]
    fn short_admin_and_metrics_tokens_are_refused() {
        let db = DbArgs::default();
        let env = |short: &'static str| {
            move |name: &str| match name {
                ADMIN_TOKEN_VAR | METRICS_TOKEN_VAR if name == short => Some("hunter2".to_owned()),
                _ => Some("x".repeat(MIN_TOKEN_LEN)),
            }
        };
        for var in [ADMIN_TOKEN_VAR, METRICS_TOKEN_VAR] {
            let err = Settings::resolve(&db, &ServeArgs::default(), env(var)).unwrap_err().to_string();
            assert!(err.contains("too short") && err.contains("32"), "{err}");
            assert!(!err.contains("hunter2"), "a secret never reaches an error: {err}");
        }
        let ok = Settings::resolve(&db, &ServeArgs::default(), |_| Some("x".repeat(MIN_TOKEN_LEN))).unwrap();
        assert!(ok.metrics_token.is_some());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("upstream.key");
        std::fs::write(&key_file, "sk-from-file\n").unwrap();
        let config = dir.path().join("server.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"0.0.0.0:9000\"\nbody_limit = 1024\nupstream_key_file = {:?}\nkey_refresh_secs = 2\n\
                 webhook_max_attempts = 3\nrecent_jobs = 50\n",
                key_file.display().to_string()
            ),
        )
        .unwrap();
        let db = DbArgs { config: Some(config), ..DbArgs::default() };
        let args = ServeArgs {
            body_limit: Some(2048),
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..ServeArgs::default()
        };
        let settings =
            Settings::resolve(&db, &args, |_| Some("sk-from-env-0123456789abcdef0123456789".into())).unwrap();
        assert_eq!(settings.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(settings.body_limit, 2048);
        assert!(matches!(&settings.database, Database::Sqlite(path) if path == Path::new(DEFAULT_DATABASE)));
        assert_eq!(
            settings.upstream_key.expose_secret(),
            "sk-from-file",
            "a named file wins over the environment"
        );
        assert_eq!(
            settings.admin_token.as_ref().map(|t| t.expose_secret().to_owned()),
            Some("sk-from-env-0123456789abcdef0123456789".into())
        );
        assert_eq!(settings.key_refresh, Duration::from_secs(2));
        assert_eq!(settings.poll, PollSettings::default());
        assert_eq!(settings.webhooks.max_attempts, 3);
        assert_eq!(settings.recent_jobs, 50);
        assert_eq!(settings.tls, Some(TlsFiles { cert: "cert.pem".into(), key: "key.pem".into() }));
        assert_eq!(settings.webhooks.timeout, WebhookConfig::default().timeout);
        assert_eq!(settings.upstream_url, aimlvid::DEFAULT_BASE_URL);
    }

    #[test]
    fn the_team_page_is_on_unless_the_flag_or_the_file_turns_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let env = |_: &str| Some("sk-from-env-0123456789abcdef0123456789".into());
        let with_file = |text: &str| {
            let config = dir.path().join("server.toml");
            std::fs::write(&config, text).unwrap();
            DbArgs { config: Some(config), ..DbArgs::default() }
        };
        let page = |db: &DbArgs, args: &ServeArgs| Settings::resolve(db, args, env).unwrap().team_page;
        assert_eq!(page(&DbArgs::default(), &ServeArgs::default()), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(
            page(&with_file("team_page_session_hours = 2\n"), &ServeArgs::default()),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(page(&with_file("team_page = false\n"), &ServeArgs::default()), None);
        let off = ServeArgs { no_team_page: true, ..ServeArgs::default() };
        assert_eq!(page(&DbArgs::default(), &off), None);
    }

    #[test]
    fn secrets_never_show_in_debug_output_or_errors() {
        let settings = Settings::resolve(&DbArgs::default(), &ServeArgs::default(), |_| {
            Some("sk-very-secret-0123456789abcdef0123".into())
        })
        .unwrap();
        assert!(!format!("{settings:?}").contains("sk-very-secret"));
        assert!(settings.metrics_token.is_some() && settings.admin_token.is_some());
        let err = Settings::resolve(&DbArgs::default(), &ServeArgs::default(), |_| None).unwrap_err();
        assert!(err.to_string().contains("AIMLAPI_API_KEY"), "{err}");
    }

    #[test]
    fn tls_needs_a_certificate_and_a_key() {
        let args = ServeArgs { tls_cert: Some("cert.pem".into()), ..ServeArgs::default() };
        let err = Settings::resolve(&DbArgs::default(), &args, |_| {
            Some("sk-0123456789abcdef0123456789abcdef".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("--tls-key"), "{err}");
        let plain = Settings::resolve(&DbArgs::default(), &ServeArgs::default(), |_| {
            Some("sk-0123456789abcdef0123456789abcdef".into())
        })
        .unwrap();
        assert_eq!(plain.tls, None);
    }

    #[test]
    fn the_log_format_comes_from_the_flag_then_the_file() {
        let file: FileConfig = toml::from_str("log_format = \"json\"").unwrap();
        assert_eq!(LogArgs::default().format(&file), LogFormat::Json);
        assert_eq!(LogArgs::default().format(&FileConfig::default()), LogFormat::Text);
        let flag = LogArgs { log_format: Some(LogFormat::Text) };
        assert_eq!(flag.format(&file), LogFormat::Text);
    }

    #[test]
    fn databases_are_paths_or_sqlite_urls() {
        assert_eq!(sqlite_path("data/server.db"), Ok(PathBuf::from("data/server.db")));
        assert_eq!(sqlite_path("sqlite:///var/lib/aimlvid/db"), Ok(PathBuf::from("/var/lib/aimlvid/db")));
        assert_eq!(sqlite_path("sqlite://rel/db"), Ok(PathBuf::from("rel/db")));
        assert_eq!(sqlite_path("sqlite:rel.db"), Ok(PathBuf::from("rel.db")));
        for bad in
            ["sqlite::memory:", "sqlite://:memory:", "sqlite:", "sqlite://x.db?mode=ro", "mysql://h/db"]
        {
            assert!(sqlite_path(bad).is_err(), "{bad}");
        }
        assert!(sqlite_path("sqlite::memory:").unwrap_err().contains("in-memory"));
        let db = DbArgs { database: Some("sqlite::memory:".into()), ..DbArgs::default() };
        let err = db.database(&FileConfig::default()).unwrap_err().to_string();
        assert!(err.contains("--database") && err.contains("sqlite:///"), "{err}");

        // PostgreSQL: the URL is a secret; it is described without its password.
        let db = DbArgs {
            database: Some("postgres://team:hunter2@db.internal:5433/aimlvid".into()),
            database_pool_size: Some(12),
            ..DbArgs::default()
        };
        let Database::Postgres(settings) = db.database(&FileConfig::default()).unwrap() else { panic!() };
        assert_eq!(settings.max_connections, 12);
        let described = Database::Postgres(settings.clone()).describe();
        assert_eq!(described, "postgres://db.internal:5433/aimlvid");
        assert!(!format!("{settings:?}").contains("hunter2"), "{settings:?}");
        let bad = DbArgs { database: Some("postgres://team:hunter2@:x/db".into()), ..DbArgs::default() };
        let err = bad.database(&FileConfig::default()).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn poll_settings_come_from_flags_then_the_file_with_models_apart() {
        let file: FileConfig = toml::from_str(
            "[poll]\nfirst_delay_secs = 30\ninterval_secs = 2\nmax_rate = 50\n\
             [poll.models.\"google/veo3-1-fast-extend-video\"]\nfirst_delay_secs = 60\n",
        )
        .unwrap();
        let args = ServeArgs { poll_interval: Some(4.0), poll_concurrency: Some(8), ..ServeArgs::default() };
        let poll = file.poll.as_ref().unwrap().settings(&args).unwrap();
        assert_eq!(poll.first_delay, Duration::from_secs(30));
        assert_eq!(poll.interval, Duration::from_secs(4), "the flag wins");
        assert_eq!((poll.concurrency, poll.max_rate), (8, 50.0));
        assert_eq!(poll.models["google/veo3-1-fast-extend-video"].first_delay_secs, Some(60.0));
        let bad = ServeArgs { poll_interval: Some(100.0), ..ServeArgs::default() };
        assert!(PollFile::default().settings(&bad).is_err(), "interval above the max interval");
        assert!(toml::from_str::<FileConfig>("[poll]\nfirst_delay = 3\n").is_err(), "misspelt");
    }

    #[test]
    fn unknown_file_settings_are_refused() {
        assert!(toml::from_str::<FileConfig>("upstream_key = \"sk\"").is_err());
    }
}
