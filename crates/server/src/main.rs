//! `aimlvid-server`: run the team proxy, or manage its keys.

use aimlvid_server::config::{DbArgs, LogArgs, LogFormat, ServeArgs, Settings};
use aimlvid_server::keys::limits::{self, LimitsError, LimitsText};
use aimlvid_server::reconcile::{FindingKind, Reconciliation};
use aimlvid_server::store::{KeyRecord, KeyUpdate, Store};
use aimlvid_server::{AppState, StateConfig};
use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use secrecy::ExposeSecret as _;
use tracing_subscriber::fmt::writer::MakeWriterExt as _;

/// A self-hosted team proxy for the AI/ML API's video generation.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy.
    Serve(Box<ServeArgs>),
    /// Manage team keys (works on the database directly; a running server
    /// picks changes up within a second).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Bring the database's schema up to this version (`serve` does it too).
    Migrate,
    /// List jobs that need an operator's attention.
    Jobs {
        /// Creates whose outcome is unknown, and jobs the upstream says it
        /// does not know (the server keeps looking them up by itself)
        #[arg(long, required = true)]
        unknown: bool,
    },
    /// Compare this server's charges with the upstream's ledger: charges
    /// for generations it does not know, its jobs the ledger has no charge
    /// for or charged differently, and spend per key (the running server
    /// does this daily, and adopts the lost creates found).
    Reconcile {
        /// How far back to look, such as `7d`, `36h` or `90m` [default: the
        /// configuration's `reconcile_window_days`, else 7d].
        #[arg(long, value_parser = aimlvid_server::admin::parse_window)]
        since: Option<std::time::Duration>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// The upstream's base URL [default: `https://api.aimlapi.com`].
        #[arg(long, env = "AIMLAPI_BASE_URL")]
        upstream_url: Option<String>,
        /// A file holding the upstream key (otherwise AIMLAPI_API_KEY).
        #[arg(long)]
        upstream_key_file: Option<std::path::PathBuf>,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), as packages install it.
    #[command(hide = true)]
    Man,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Issue a key; it is printed once and stored only as a hash.
    Create {
        /// A unique name, such as the member's.
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// List keys (never the keys themselves).
    List,
    /// Revoke a key for good.
    Revoke {
        /// The key's name.
        name: String,
    },
    /// Give a key a new secret, printed once; its jobs, webhook, spend and
    /// limits stay, and the old secret stops working.
    Rotate {
        /// The key's name.
        name: String,
    },
    /// Change a key's limits, or enable or disable it.
    Update {
        /// The key's name.
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Let the key be used again.
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        /// Refuse the key (403) until enabled again.
        #[arg(long)]
        disable: bool,
    },
}

/// A key's limits as flags: text, read by the parser every way of issuing
/// a key shares ([`LimitsText`]).
#[derive(Debug, Clone, clap::Args)]
struct LimitArgs {
    /// Models the key may use, comma-separated, or `any`.
    #[arg(long, value_name = "MODELS|any")]
    models: Option<String>,
    /// Requests per minute, or `unlimited`.
    #[arg(long, value_name = "N|unlimited")]
    rpm: Option<String>,
    /// Unfinished jobs at once, or `unlimited` [default for a new key: 10].
    #[arg(long, value_name = "N|unlimited")]
    max_unfinished: Option<String>,
    /// Credits the key may spend, or `unlimited`.
    #[arg(long, value_name = "CREDITS|unlimited")]
    budget: Option<String>,
    /// The budget in US dollars instead (2,000,000 credits a dollar), such
    /// as `25` or `0.5`.
    #[arg(long, value_name = "USD", conflicts_with = "budget")]
    budget_usd: Option<String>,
    /// Renew the budget every `day`, `week` (from Monday) or `month` (UTC),
    /// or `none` for one budget for the key's life.
    #[arg(long, value_name = "day|week|month|none")]
    budget_period: Option<String>,
    /// POST the key's finished jobs to this URL, signed with a new secret
    /// that is printed once; `none` removes the webhook.
    #[arg(long, value_name = "URL|none")]
    webhook_url: Option<String>,
    /// The shape of the webhook's deliveries: `aimlvid` (the job's JSON,
    /// the default) or `openai` (OpenAI's `video.completed` and
    /// `video.failed` events, for openai-python's `client.webhooks.unwrap`).
    #[arg(long, value_name = "aimlvid|openai")]
    webhook_format: Option<String>,
}

impl LimitArgs {
    /// The change the flags ask for.
    fn asked(&self) -> Result<KeyUpdate, LimitsError> {
        // On the command line an empty `--models` is a mistake, not "not given".
        if self.models.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return Err(LimitsError::NoModels);
        }
        LimitsText {
            models: self.models.as_deref(),
            rpm: self.rpm.as_deref(),
            max_unfinished: self.max_unfinished.as_deref(),
            budget: self.budget.as_deref(),
            budget_usd: self.budget_usd.as_deref(),
            budget_period: self.budget_period.as_deref(),
            webhook_url: self.webhook_url.as_deref(),
            webhook_format: self.webhook_format.as_deref(),
        }
        .parse()
    }
}

/// `writeln!` to standard output: an error (a closed pipe, a full disk)
/// is returned, not a panic as `println!` would.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

/// Runs the command; an error is printed once, as one line of causes
/// (`error: opening …: …`), never as a backtrace, whatever `RUST_BACKTRACE` says.
fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match start(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stopped reading (`keys list | head -1`) is no error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn start(cli: Cli) -> anyhow::Result<()> {
    // The client library's line per create is off by default here: a busy
    // proxy makes thousands a second, and each is in the database anyway.
    // (A directive names a prefix of targets: `aimlvid` alone would silence
    // this server's own `aimlvid_server` lines too.)
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn,aimlvid=warn,aimlvid_server=info".into());
    // Info and debug lines go to stderr from a thread of their own, so a
    // slow log sink never stalls the runtime (if it falls far behind, they
    // are dropped, not waited for). Warnings and errors are written at
    // once, so that a crash or a `kill -9` cannot take the lines that say
    // what went wrong with it.
    let (buffered, _flush_on_exit) = tracing_appender::non_blocking(std::io::stderr());
    let writer = std::io::stderr
        .with_max_level(tracing::Level::WARN)
        .and(buffered.with_min_level(tracing::Level::INFO));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match cli.log.format(&cli.db.file()?) {
        LogFormat::Text => logs.init(),
        // The event's fields at the top level, the request's span (with its id) beside them.
        LogFormat::Json => {
            logs.json().flatten_event(true).with_current_span(true).with_span_list(false).init()
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(&cli.db, &args).await,
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "aimlvid-server", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Keys(command) => {
            // A mistyped limit is reported before the database is opened.
            if let KeysCommand::Create { limits, .. } | KeysCommand::Update { limits, .. } = &command {
                limits.asked()?;
            }
            let database = cli.db.database(&cli.db.file()?)?;
            let store = database
                .open_beside_server()
                .await
                .with_context(|| format!("opening {}", database.describe()))?;
            let file = cli.db.file()?;
            let rules = aimlvid_server::webhooks::TargetRules {
                allow_private_targets: file.webhook_allow_private_targets.unwrap_or(false),
                allow_plain_http: file.webhook_allow_plain_http.unwrap_or(false),
            };
            let result = keys(store.get(), command, rules).await;
            store.close().await;
            result
        }
        Command::Migrate => {
            let database = cli.db.database(&cli.db.file()?)?;
            let store =
                database.open().await.with_context(|| format!("migrating {}", database.describe()))?;
            store.close().await;
            eprintln!("{} is up to date.", database.describe());
            Ok(())
        }
        Command::Reconcile { since, json, upstream_url, upstream_key_file } => {
            let args = ServeArgs { upstream_url, upstream_key_file, ..ServeArgs::default() };
            let settings = Settings::resolve(&cli.db, &args, |name| std::env::var(name).ok())?;
            let upstream = aimlvid::Client::builder()
                .api_key(settings.upstream_key.expose_secret())
                .base_url(&settings.upstream_url)
                .request_timeout(settings.upstream_timeout)
                .build()?;
            require_existing(&settings.database)?;
            let store = settings
                .database
                .open_beside_server()
                .await
                .with_context(|| format!("opening {}", settings.database.describe()))?;
            let from = std::time::SystemTime::now() - since.unwrap_or(settings.reconcile_window);
            let report = aimlvid_server::reconcile::reconcile(store.get(), &upstream, from).await;
            store.close().await;
            print_reconciliation(&report?, json)
        }
        Command::Jobs { unknown: _ } => {
            let database = cli.db.database(&cli.db.file()?)?;
            require_existing(&database)?;
            let store = database
                .open_beside_server()
                .await
                .with_context(|| format!("opening {}", database.describe()))?;
            let jobs = store.get().jobs_needing_attention().await;
            store.close().await;
            let jobs = jobs?;
            if jobs.is_empty() {
                eprintln!("no jobs need attention");
            }
            for job in jobs {
                outln!(
                    "{}\tkey {}\t{}\t{}\t{}",
                    job.local_id,
                    job.key_id,
                    job.generation_id.as_deref().unwrap_or("(no generation id)"),
                    job.model,
                    job.note.as_deref().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
                )?;
            }
            Ok(())
        }
    }
}

async fn serve(db: &DbArgs, args: &ServeArgs) -> anyhow::Result<()> {
    let settings = Settings::resolve(db, args, |name| std::env::var(name).ok())?;
    let upstream = aimlvid::Client::builder()
        .api_key(settings.upstream_key.expose_secret())
        .base_url(&settings.upstream_url)
        .request_timeout(settings.upstream_timeout);
    // Read before anything starts, so a bad certificate stops the server at once.
    let tls =
        settings.tls.as_ref().map(|files| aimlvid_server::tls::load(&files.cert, &files.key)).transpose()?;
    let store = settings
        .database
        .open()
        .await
        .with_context(|| format!("opening {}", settings.database.describe()))?;
    let config = StateConfig {
        admin_token: settings.admin_token,
        metrics_token: settings.metrics_token,
        body_limit: settings.body_limit,
        key_refresh: settings.key_refresh,
        webhooks: settings.webhooks,
        recent_jobs: settings.recent_jobs,
        poll: settings.poll,
        costs: settings.costs,
        retention: settings.retention,
        team_page: settings.team_page,
        max_creates_in_flight: settings.max_creates_in_flight,
        lease_check: settings.lease_check,
        front: settings.front,
        create_record_timeout: settings.create_record_timeout,
        reconcile_every: settings.reconcile_every,
        reconcile_window: settings.reconcile_window,
        ..StateConfig::from_builder(upstream)?
    };
    let state = AppState::start(store.shared(), config).await?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listening on {}", settings.listen))?;
    tracing::info!(
        address = %listener.local_addr()?,
        database = %settings.database.describe(),
        tls = tls.is_some(),
        "serving"
    );
    match tls {
        Some(tls) => aimlvid_server::tls::serve_tls(listener, state, tls, shutdown_signal()).await?,
        None => aimlvid_server::serve(listener, state, shutdown_signal()).await?,
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down; finishing requests in flight");
}

async fn keys(
    store: &dyn Store,
    command: KeysCommand,
    rules: aimlvid_server::webhooks::TargetRules,
) -> anyhow::Result<()> {
    match command {
        KeysCommand::Create { name, limits: flags } => {
            let asked = flags.asked()?;
            let webhook_url = asked.webhook_url.clone().flatten();
            let issued = aimlvid_server::admin::issue_key_with_format(
                store,
                &name,
                limits::with_defaults(&asked),
                webhook_url.as_deref(),
                asked.webhook_format.unwrap_or_default(),
                rules,
            )
            .await?;
            if issued.webhook_secret.is_some() {
                eprintln!(
                    "Created key {:?}: the key, then its webhook's signing secret. They are shown only now; \
                     store them safely:",
                    issued.record.name
                );
            } else {
                eprintln!("Created key {:?}. It is shown only now; store it safely:", issued.record.name);
            }
            outln!("{}", issued.key.expose_secret())?;
            if let Some(secret) = &issued.webhook_secret {
                outln!("{}", secret.expose_secret())?;
            }
        }
        KeysCommand::List => {
            outln!(
                "{:<20} {:<12} {:<9} {:>6} {:>10} {:>12} {:>14} {:>12}  {:<24}  WEBHOOK",
                "NAME",
                "PREFIX",
                "STATE",
                "RPM",
                "UNFINISHED",
                "BUDGET",
                "CREDITS USED",
                "USD USED",
                "MODELS"
            )?;
            for key in store.keys().await? {
                print_key(&key)?;
            }
        }
        KeysCommand::Rotate { name } => {
            let (record, key) = aimlvid_server::admin::rotate_key(store, &name)
                .await?
                .with_context(|| format!("no usable key named {name:?}"))?;
            outln!("{}", key.expose_secret())?;
            eprintln!(
                "Rotated key {:?}: the line above is its new secret, shown once; the old one no longer works.",
                record.name
            );
        }
        KeysCommand::Revoke { name } => {
            let record = store.revoke_key(&name).await?.with_context(|| format!("no key named {name:?}"))?;
            eprintln!("Revoked key {:?}.", record.name);
        }
        KeysCommand::Update { name, limits, enable, disable } => {
            let mut update = limits.asked()?;
            update.enabled = if enable {
                Some(true)
            } else if disable {
                Some(false)
            } else {
                None
            };
            let (record, webhook_secret) = aimlvid_server::admin::update_key(store, &name, &update, rules)
                .await?
                .with_context(|| format!("no key named {name:?}"))?;
            print_key(&record)?;
            if let Some(secret) = webhook_secret {
                eprintln!("The webhook's new signing secret, shown only now:");
                outln!("{}", secret.expose_secret())?;
            }
        }
    }
    Ok(())
}

/// A key's webhook as listed: its URL, and its format unless the default.
fn webhook_shown(key: &aimlvid_server::store::KeyRecord) -> String {
    use aimlvid_server::store::WebhookFormat;
    match (&key.webhook_url, key.webhook_format) {
        (None, _) => "-".into(),
        (Some(url), WebhookFormat::Aimlvid) => url.clone(),
        (Some(url), format) => format!("{url} ({format})"),
    }
}

/// Refuses a SQLite database that is not there (or is an empty file) for
/// a command that only reads: opening it would create an empty one, and
/// report on that instead of the server's.
fn require_existing(database: &aimlvid_server::store::Database) -> anyhow::Result<()> {
    if let aimlvid_server::store::Database::Sqlite(path) = database
        && !std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0)
    {
        anyhow::bail!(
            "there is no aimlvid-server database at {}: pass the server's --database (or set \
             AIMLVID_DATABASE, or `database` in the configuration file)",
            path.display()
        );
    }
    Ok(())
}

fn print_reconciliation(report: &Reconciliation, json: bool) -> anyhow::Result<()> {
    if json {
        outln!("{}", serde_json::to_string_pretty(report)?)?;
        return Ok(());
    }
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    if report.findings.is_empty() && report.total.agrees() {
        eprintln!("No differences: every charge on the ledger is a job of this server, charged as it says.");
    } else if report.findings.is_empty() {
        eprintln!(
            "No generation differs, but the spend does (below): charges near the window's edges, or \
             jobs that ended within the ledger's 10 minutes' grace."
        );
    } else {
        outln!(
            "{:<20} {:<36} {:<40} {:<16} {:>24} {:>24}",
            "KIND",
            "GENERATION",
            "MODEL",
            "KEY",
            "PROXY",
            "LEDGER"
        )?;
    }
    for line in &report.findings {
        let amount = |credits: Option<String>, usd: Option<&String>| match (credits, usd) {
            (Some(credits), Some(usd)) => format!("{credits} (${usd})"),
            _ => "-".to_owned(),
        };
        outln!(
            "{:<20} {:<36} {:<40} {:<16} {:>24} {:>24}",
            line.kind.as_str(),
            line.generation_id,
            line.model,
            dash(line.key.as_deref()),
            amount(line.proxy_credits.map(|c| c.to_string()), line.proxy_usd.as_ref()),
            amount(line.ledger_credits.map(|c| c.to_string()), line.ledger_usd.as_ref()),
        )?;
        if line.kind == FindingKind::LostCreate {
            outln!(
                "  job {} of this server: the running server adopts it (records, follows and charges it)",
                dash(line.local_id.as_deref())
            )?;
        }
    }
    outln!()?;
    let width = report.keys.iter().filter_map(|k| k.key.as_deref()).map(str::len).max().unwrap_or(0).max(20);
    outln!("{:<width$} {:>14} {:>14} {:>14} {:>14}", "SPEND", "PROXY", "PROXY USD", "LEDGER", "LEDGER USD")?;
    for spend in report.keys.iter().chain(std::iter::once(&report.total)) {
        outln!(
            "{:<width$} {:>14} {:>14} {:>14} {:>14}{}",
            spend.key.as_deref().unwrap_or("(total)"),
            spend.proxy_credits,
            format!("${}", spend.proxy_usd),
            spend.ledger_credits,
            format!("${}", spend.ledger_usd),
            if spend.agrees() { "" } else { "  differs" }
        )?;
    }
    Ok(())
}

fn print_key(key: &KeyRecord) -> std::io::Result<()> {
    let state = if key.revoked {
        "revoked"
    } else if key.enabled {
        "enabled"
    } else {
        "disabled"
    };
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    outln!(
        "{:<20} {:<12} {:<9} {:>6} {:>10} {:>12} {:>14} {:>12}  {:<24}  {}",
        key.name,
        format!("{}…", key.prefix),
        state,
        show(key.limits.rpm.map(|v| v.to_string())),
        show(key.limits.max_unfinished.map(|v| v.to_string())),
        show(key.limits.credit_budget.map(|v| v.to_string())),
        key.credits_used,
        format!("${}", aimlvid_server::admin::usd(key.credits_used)),
        key.limits.allowed_models.as_ref().map_or_else(|| "any".to_owned(), |m| m.join(",")),
        webhook_shown(key),
    )?;
    Ok(())
}
