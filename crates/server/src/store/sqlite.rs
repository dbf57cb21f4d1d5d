//! The SQLite backend: one file, migrated on open, in WAL mode.
//!
//! WAL with `synchronous = NORMAL` makes every committed transaction
//! survive the process being killed (`kill -9`): the log is in the OS's
//! hands once a commit returns. Only a power cut may lose the last commits.
//!
//! Longer than most files on purpose: it implements every storage trait
//! (keys, job reads, job writes, leases, webhooks, the team page) for one
//! backend, with what it shares with PostgreSQL already in `sql.rs` and
//! `page.rs`; what is left differs in locking (one writer connection,
//! `BEGIN IMMEDIATE`) and in counting places in memory.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection as _, FromRow as _, Row as _, Sqlite, Transaction};

use super::rows::{
    ATTEMPT_COLUMNS, AttemptRow, DueRow, JOB_COLUMNS, KEY_COLUMNS, KeyRow, is_constraint,
    is_unique_violation, models_json, now, now_ms,
};
use super::{
    AttemptOutcome, BatchResult, Begun, Charged, DailyUsage, DueWebhook, JobEnd, JobFilter, JobLeases,
    JobReads, JobRecord, JobSummary, JobWrite, JobWrites, KeyId, KeyRecord, KeyStore, KeyUpdate, NewJob,
    NewKey, PageSession, PageStore, Store, StoreError, StoreResult, WebhookAttempt, WebhookStore,
    WriteOutcome, delivery, page, sql, status,
};

// Column lists and the finished-status set are constants spliced into
// queries; no member input is ever formatted into SQL (values are bound).
/// Unfinished jobs, through their partial index: named, since without
/// statistics the planner would pick the `generation_id` index and read
/// every job ever made.
const UNFINISHED_JOBS: &str =
    "jobs INDEXED BY jobs_unfinished WHERE generation_id IS NOT NULL AND credits_charged IS NULL";
/// Jobs with an id, newest first, read backwards along `jobs_by_created`.
const RECENT_JOBS: &str =
    "jobs INDEXED BY jobs_by_created WHERE generation_id IS NOT NULL ORDER BY created_at DESC, rowid DESC";
/// Keys and jobs in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    pub(super) pool: SqlitePool,
    /// The one connection that writes, so this process never contends
    /// with itself for SQLite's single write lock, and reads (cache misses,
    /// admin calls) can never take the connection a write needs.
    pub(super) writes: SqlitePool,
}

/// How long a write waits for another process (the `keys` command, say)
/// to release SQLite's write lock before it fails and is retried.
pub const DEFAULT_LOCK_WAIT: Duration = Duration::from_secs(5);

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `path`.
    ///
    /// The read pool is small on purpose: the hot path never reaches it; a
    /// few readers cover `/readyz`, admin calls and cache misses on a
    /// 2-core machine.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        SqliteStore::open_with_lock_wait(path, DEFAULT_LOCK_WAIT).await
    }

    /// [`SqliteStore::open`], waiting at most `lock_wait` for another
    /// process's write lock before a write fails.
    pub async fn open_with_lock_wait(path: &Path, lock_wait: Duration) -> StoreResult<Self> {
        create_private(path)?;
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(lock_wait)
            // 16 MiB of pages per connection (SQLite's default is 2 MiB), so
            // the indexes a burst of creates touches stay in memory.
            .pragma("cache_size", "-16384");
        let writes = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
        sqlx::migrate!("./migrations").run(&writes).await?;
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Ok(SqliteStore { pool, writes })
    }

    /// [`SqliteStore::open`] for a command that works beside a running
    /// server (`keys`, `jobs`): it migrates only a new, empty database, and
    /// refuses one whose schema is older or newer than this build's, rather
    /// than changing the schema under a server that runs another version.
    pub async fn open_beside_server(path: &Path) -> StoreResult<Self> {
        if !path.exists() {
            return SqliteStore::open(path).await;
        }
        let options =
            SqliteConnectOptions::from_str("sqlite:")?.filename(path).busy_timeout(DEFAULT_LOCK_WAIT);
        let probe = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        let applied: Result<Vec<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = 1")
                .fetch_all(&probe)
                .await;
        probe.close().await;
        let known: Vec<i64> = sqlx::migrate!("./migrations").iter().map(|m| m.version).collect();
        match applied {
            // No migrations table: an empty file nothing else uses yet.
            Err(_) => SqliteStore::open(path).await,
            Ok(applied) if applied.iter().any(|v| !known.contains(v)) => Err(StoreError::Invalid(format!(
                "{} was migrated by a newer aimlvid-server; use that version's commands",
                path.display()
            ))),
            Ok(applied) if known.iter().any(|v| !applied.contains(v)) => Err(StoreError::Invalid(format!(
                "{} has an older schema than this aimlvid-server; stop the server using it and run \
                 `aimlvid-server migrate` (or start this version's `serve`) first",
                path.display()
            ))),
            Ok(_) => SqliteStore::open(path).await,
        }
    }

    /// The writer connection, for one write (see [`Writing`]).
    async fn writing(&self) -> StoreResult<Writing> {
        Ok(Writing { connection: self.writes.acquire().await?, done: false })
    }

    /// Closes every connection, checkpointing the log.
    pub async fn close(&self) {
        self.pool.close().await;
        self.writes.close().await;
    }

    async fn key_by_name(&self, name: &str) -> StoreResult<Option<KeyRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys WHERE name = ?")))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| key_from_row(&r)).transpose()
    }
}

/// The writer connection, lent for one write. Unless the write is marked
/// [`Writing::done`], the connection is closed rather than put back, and
/// the next write opens a fresh one: after a failed write, SQLite may have
/// rolled the transaction back by itself (sqlx then still counts it as
/// open, so every later `BEGIN` on it would fail), or the connection may
/// have been opened read-only while the file was, and would stay so.
struct Writing {
    connection: PoolConnection<Sqlite>,
    done: bool,
}

impl Writing {
    /// The write succeeded (or failed for a reason of its own, such as a
    /// broken uniqueness rule): the connection may be used again.
    fn done(&mut self) {
        self.done = true;
    }
}

impl Drop for Writing {
    fn drop(&mut self) {
        if !self.done {
            self.connection.close_on_drop();
        }
    }
}

impl std::ops::Deref for Writing {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        &self.connection
    }
}

impl std::ops::DerefMut for Writing {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.connection
    }
}

fn key_from_row(row: &SqliteRow) -> StoreResult<KeyRecord> {
    KeyRow::from_row(row)?.try_into()
}

fn attempt_from_row(row: &SqliteRow) -> StoreResult<WebhookAttempt> {
    AttemptRow::from_row(row)?.try_into()
}

fn job_from_row(row: &SqliteRow) -> StoreResult<JobRecord> {
    Ok(JobRecord::from_row(row)?)
}

/// Creates the database file readable by its owner only (SQLite gives its
/// `-wal` and `-shm` files the same mode): it holds key hashes, webhook
/// secrets and members' prompts. An existing file is left as it is.
fn create_private(path: &Path) -> StoreResult<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Backend(sqlx::Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot create the database {}: {e}", path.display()),
        )))),
    }
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &NewKey) -> StoreResult<KeyRecord> {
        let mut writing = self.writing().await?;
        let inserted = sqlx::query(
            "INSERT INTO keys (name, hash, prefix, allowed_models, rpm, max_unfinished, credit_budget, budget_period, \
             created_at, webhook_url, webhook_secret, webhook_format) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.name)
        .bind(key.hash.as_slice())
        .bind(&key.prefix)
        .bind(models_json(&key.limits.allowed_models))
        .bind(key.limits.rpm.map(i64::from))
        .bind(key.limits.max_unfinished.map(i64::from))
        .bind(key.limits.credit_budget)
        .bind(key.limits.budget_period.map(|p| p.as_str()))
        .bind(now())
        .bind(key.webhook.as_ref().map(|w| w.url.as_str()))
        .bind(key.webhook.as_ref().map(|w| w.secret.expose_secret()))
        .bind(key.webhook_format.as_str())
        .execute(&mut *writing)
        .await;
        match inserted {
            Ok(_) => writing.done(),
            Err(e) if is_unique_violation(&e) => {
                writing.done();
                return Err(StoreError::Conflict(format!("a key named {:?}", key.name)));
            }
            Err(e) => return Err(e.into()),
        }
        self.key_by_name(&key.name).await?.ok_or_else(|| StoreError::Corrupt("inserted key vanished".into()))
    }

    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY id")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn keys_version(&self) -> StoreResult<i64> {
        Ok(sqlx::query_scalar("SELECT version FROM key_changes").fetch_one(&self.pool).await?)
    }

    async fn update_key(
        &self,
        name: &str,
        update: &KeyUpdate,
        webhook_secret: Option<&SecretString>,
    ) -> StoreResult<Option<KeyRecord>> {
        sql::check_key_update(update, webhook_secret)?;
        let mut writing = self.writing().await?;
        // IMMEDIATE takes SQLite's one write lock before the read, so the
        // key cannot change between the two (no row lock: `key_by_name("")`).
        let mut tx = writing.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(AssertSqlSafe(sql::key_by_name("", MARK)))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut key = key_from_row(&row)?;
        for statement in sql::update_key(&mut key, update, webhook_secret, MARK) {
            run(&mut tx, statement).await?;
        }
        tx.commit().await?;
        writing.done();
        Ok(Some(key))
    }

    async fn rotate_key(&self, name: &str, hash: &[u8; 32], prefix: &str) -> StoreResult<Option<KeyRecord>> {
        let mut writing = self.writing().await?;
        let rotated =
            sqlx::query("UPDATE keys SET hash = ?, prefix = ? WHERE name = ? AND revoked_at IS NULL")
                .bind(hash.as_slice())
                .bind(prefix)
                .bind(name)
                .execute(&mut *writing)
                .await?
                .rows_affected();
        writing.done();
        drop(writing);
        if rotated == 0 {
            return Ok(None);
        }
        self.key_by_name(name).await
    }

    async fn revoke_key(&self, name: &str) -> StoreResult<Option<KeyRecord>> {
        let mut writing = self.writing().await?;
        sqlx::query("UPDATE keys SET revoked_at = COALESCE(revoked_at, ?), enabled = 0 WHERE name = ?")
            .bind(now())
            .bind(name)
            .execute(&mut *writing)
            .await?;
        writing.done();
        drop(writing);
        self.key_by_name(name).await
    }
}

/// One job write inside the batch's transaction. `Ok(Err(_))` is a write
/// refused for good (the batch goes on); `Err(_)` aborts the batch. SQL
/// the backends share is in [`sql`]; what is here touches only the job,
/// one server per file counting places and holds in memory.
async fn apply_write(
    tx: &mut Transaction<'_, Sqlite>,
    write: &JobWrite,
    now: i64,
) -> Result<StoreResult<WriteOutcome>, sqlx::Error> {
    let done = Ok(WriteOutcome::Done);
    Ok(match write {
        JobWrite::Begin(_) => begin_many(tx, std::slice::from_ref(write), now)
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("a create went unrecorded".into()))),
        JobWrite::Created { local_id, generation_id, status, body, receipt } => {
            let updated = sqlx::query(
                "UPDATE jobs SET generation_id = ?, status = ?, body = ?, receipt = ?, updated_at = ? \
                 WHERE local_id = ?",
            )
            .bind(generation_id)
            .bind(status)
            .bind(body)
            .bind(receipt)
            .bind(now)
            .bind(local_id)
            .execute(&mut **tx)
            .await;
            match updated {
                Ok(_) => done,
                Err(e) if is_constraint(&e) => Err(e.into()),
                Err(e) => return Err(e),
            }
        }
        JobWrite::Unknown { local_id, note } => {
            run(tx, sql::unknown(local_id, note, now, MARK)).await?;
            done
        }
        JobWrite::Gone { generation_id, note } => {
            run(tx, sql::gone(generation_id, note, now, MARK)).await?;
            done
        }
        JobWrite::ReleaseHold { local_id } => {
            let released = sqlx::query(
                "UPDATE jobs SET hold_released = 1, updated_at = ? \
                 WHERE local_id = ? AND generation_id IS NULL AND hold_released = 0",
            )
            .bind(now)
            .bind(local_id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            Ok(WriteOutcome::HoldReleased(released > 0))
        }
        JobWrite::Abandon { local_id } => {
            sqlx::query("DELETE FROM jobs WHERE local_id = ? AND generation_id IS NULL")
                .bind(local_id)
                .execute(&mut **tx)
                .await?;
            done
        }
        JobWrite::Hide { generation_id } => {
            run(tx, sql::hide(generation_id, now, MARK)).await?;
            done
        }
        JobWrite::Changed { generation_id, status, body } => {
            run(tx, sql::changed(generation_id, status, body, now, MARK)).await?;
            done
        }
        JobWrite::Finished { generation_id, end } => {
            Ok(WriteOutcome::Finished(finish_job(tx, generation_id, end, now).await?))
        }
        JobWrite::Prune { before, limit } => {
            let [deliveries, jobs] = sql::prune(*before, *limit, "jobs INDEXED BY jobs_by_created", MARK);
            run(tx, deliveries).await?;
            Ok(WriteOutcome::Pruned(run(tx, jobs).await?))
        }
        JobWrite::ModelTiming { model, timing } => {
            run(tx, sql::model_timing(model, timing, now, MARK)).await?;
            done
        }
    })
}

/// This backend's placeholders, for the SQL written once in [`sql`].
const MARK: page::Mark = page::sqlite_mark;

/// Runs a statement written in [`sql`]; the rows it changed.
async fn run(conn: &mut SqliteConnection, statement: sql::Statement<'_>) -> Result<u64, sqlx::Error> {
    let mut query = sqlx::query(AssertSqlSafe(statement.sql));
    for value in statement.values {
        query = match value {
            sql::Value::Int(v) => query.bind(v),
            sql::Value::Text(v) => query.bind(v),
            sql::Value::OptInt(v) => query.bind(v),
            sql::Value::OptReal(v) => query.bind(v),
            sql::Value::OptText(v) => query.bind(v),
            sql::Value::OptString(v) => query.bind(v),
            sql::Value::Bool(v) => query.bind(v),
        };
    }
    Ok(query.execute(conn).await?.rows_affected())
}

/// Rows in one multi-row statement at most (SQLite allows 32,766 bound values).
const MAX_ROWS: usize = 1024;

/// `count` groups of `columns` placeholders: `(?, ?), (?, ?)`.
fn placeholders(count: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(", "));
    vec![row; count].join(", ")
}

/// [`JobWrite::Begin`]s in one `INSERT`; rows that conflict (an
/// Idempotency-Key used before) are then looked up one by one.
async fn begin_many(
    tx: &mut Transaction<'_, Sqlite>,
    writes: &[JobWrite],
    now: i64,
) -> Result<Vec<StoreResult<WriteOutcome>>, sqlx::Error> {
    let jobs: Vec<&NewJob> =
        writes.iter().filter_map(|w| if let JobWrite::Begin(j) = w { Some(j) } else { None }).collect();
    let sql = format!(
        "INSERT INTO jobs (local_id, key_id, status, model, idempotency_key, request_hash, created_at, updated_at, \
         prompt, input, params, inline_media, remixed_from) VALUES {} ON CONFLICT DO NOTHING RETURNING local_id",
        placeholders(jobs.len(), 13)
    );
    let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
    for job in &jobs {
        query = query
            .bind(&job.local_id)
            .bind(job.key_id)
            .bind(status::PENDING)
            .bind(&job.model)
            .bind(&job.idempotency_key)
            .bind(job.request_hash.as_slice())
            .bind(job.created_at)
            .bind(now)
            .bind(&job.prompt)
            .bind(&job.input)
            .bind(&job.params)
            .bind(&job.inline_media)
            .bind(&job.remixed_from);
    }
    let inserted: std::collections::HashSet<String> = query.fetch_all(&mut **tx).await?.into_iter().collect();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(if inserted.contains(&job.local_id) {
            Ok(WriteOutcome::Begun(Begun::Inserted))
        } else {
            // Conflicts only on the key's Idempotency-Key (local ids are
            // random): the earlier job is the answer.
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE key_id = ? AND idempotency_key = ?"
            )))
            .bind(job.key_id)
            .bind(&job.idempotency_key)
            .fetch_optional(&mut **tx)
            .await?;
            match row {
                Some(row) => job_from_row(&row)
                    .map(|existing| WriteOutcome::Begun(Begun::Existing(Box::new(existing)))),
                None => Err(StoreError::Conflict(format!("a job with local id {:?}", job.local_id))),
            }
        });
    }
    Ok(outcomes)
}

/// A run of [`JobWrite::Created`] in one `UPDATE … FROM (VALUES …)`; `None`
/// if a row broke a rule, so that each is then applied (and refused) alone.
async fn created_many(
    tx: &mut Transaction<'_, Sqlite>,
    writes: &[JobWrite],
    now: i64,
) -> Result<Option<Vec<StoreResult<WriteOutcome>>>, sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET generation_id = v.column2, status = v.column3, body = v.column4, receipt = v.column5, \
         updated_at = ? FROM (VALUES {}) AS v WHERE jobs.local_id = v.column1",
        placeholders(writes.len(), 5)
    );
    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for write in writes {
        if let JobWrite::Created { local_id, generation_id, status, body, receipt } = write {
            query = query.bind(local_id).bind(generation_id).bind(status).bind(body).bind(receipt);
        }
    }
    match query.execute(&mut **tx).await {
        Ok(_) => Ok(Some(writes.iter().map(|_| Ok(WriteOutcome::Done)).collect())),
        Err(e) if is_constraint(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Records a job's end and charges its key, at most once; queues its webhook.
async fn finish_job(
    tx: &mut Transaction<'_, Sqlite>,
    generation_id: &str,
    end: &JobEnd,
    now: i64,
) -> Result<Option<Charged>, sqlx::Error> {
    let key_id: Option<KeyId> = sqlx::query_scalar(
        "UPDATE jobs SET status = ?, body = ?, credits_charged = ?, updated_at = ? \
         WHERE generation_id = ? AND credits_charged IS NULL RETURNING key_id",
    )
    .bind(&end.status)
    .bind(&end.body)
    .bind(end.credits)
    .bind(now)
    .bind(generation_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(key_id) = key_id else { return Ok(None) };
    // The lifetime figure, and the current period's: a charge in a new
    // period starts its count afresh.
    let starts = [
        super::BudgetPeriod::Day.start_of(now),
        super::BudgetPeriod::Week.start_of(now),
        super::BudgetPeriod::Month.start_of(now),
    ];
    let (key_credits_used, period, period_start, period_credits): (f64, Option<String>, Option<i64>, f64) =
        sqlx::query_as(
            "UPDATE keys SET credits_used = credits_used + ?1, \
             period_credits = CASE WHEN budget_period IS NULL THEN 0 \
                 WHEN period_start IS (CASE budget_period WHEN 'day' THEN ?2 WHEN 'week' THEN ?3 ELSE ?4 END) \
                 THEN period_credits + ?1 ELSE ?1 END, \
             period_start = CASE budget_period WHEN 'day' THEN ?2 WHEN 'week' THEN ?3 WHEN 'month' THEN ?4 END \
             WHERE id = ?5 RETURNING credits_used, budget_period, period_start, period_credits",
        )
        .bind(end.credits)
        .bind(starts[0])
        .bind(starts[1])
        .bind(starts[2])
        .bind(key_id)
        .fetch_one(&mut **tx)
        .await?;
    let key_period = period.and(period_start).map(|start| (start, period_credits));
    let now_ms = now_ms();
    let queued = sqlx::query(
        "INSERT INTO webhook_deliveries \
         (delivery_id, attempt, key_id, generation_id, event, body, state, due_at, created_at) \
         SELECT lower(hex(randomblob(16))), 1, id, ?, ?, ?, ?, ?, ? FROM keys \
         WHERE id = ? AND webhook_url IS NOT NULL AND revoked_at IS NULL",
    )
    .bind(generation_id)
    .bind(&end.status)
    .bind(&end.announcement)
    .bind(delivery::PENDING)
    .bind(now_ms)
    .bind(now_ms)
    .bind(key_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(Some(Charged { key_id, webhook_queued: queued > 0, key_credits_used, key_period }))
}

#[async_trait]
impl JobWrites for SqliteStore {
    async fn apply(&self, writes: &[JobWrite]) -> BatchResult {
        // IMMEDIATE takes the write lock at once, waiting out `busy_timeout`
        // for another process's writer; a plain BEGIN would fail with BUSY
        // when it upgrades from a read, whatever the timeout.
        let mut writing = self.writing().await?;
        let mut tx = writing.begin_with("BEGIN IMMEDIATE").await?;
        let now = now();
        let mut outcomes = Vec::with_capacity(writes.len());
        // Runs of creates and of their answers go in one statement each: a
        // statement is a round trip to SQLite's thread, which costs more
        // than the row.
        let mut rest = writes;
        while let Some(first) = rest.first() {
            let run = rest
                .iter()
                .take(MAX_ROWS)
                .take_while(|w| std::mem::discriminant(*w) == std::mem::discriminant(first))
                .count();
            let (these, next) = rest.split_at(run);
            rest = next;
            let done = match first {
                JobWrite::Begin(_) if run > 1 => Some(begin_many(&mut tx, these, now).await?),
                JobWrite::Created { .. } if run > 1 => created_many(&mut tx, these, now).await?,
                _ => None,
            };
            match done {
                Some(done) => outcomes.extend(done),
                None => {
                    for write in these {
                        outcomes.push(apply_write(&mut tx, write, now).await?);
                    }
                }
            }
        }
        tx.commit().await?;
        writing.done();
        Ok(outcomes)
    }
}

#[async_trait]
impl JobLeases for SqliteStore {
    async fn pending_to_unknown(&self) -> StoreResult<u64> {
        let mut writing = self.writing().await?;
        let done = sqlx::query("UPDATE jobs SET status = ?, note = ?, updated_at = ? WHERE status = ?")
            .bind(status::UNKNOWN)
            .bind("the server stopped while the create was in flight")
            .bind(now())
            .bind(status::PENDING)
            .execute(&mut *writing)
            .await?;
        writing.done();
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl JobReads for SqliteStore {
    async fn job_by_idempotency_key(
        &self,
        key_id: KeyId,
        idempotency_key: &str,
    ) -> StoreResult<Option<JobRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE key_id = ? AND idempotency_key = ?"
        )))
        .bind(key_id)
        .bind(idempotency_key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    async fn job_by_generation(&self, generation_id: &str) -> StoreResult<Option<JobRecord>> {
        let row =
            sqlx::query(AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE generation_id = ?")))
                .bind(generation_id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| job_from_row(&r)).transpose()
    }

    async fn unfinished_jobs(&self) -> StoreResult<Vec<JobRecord>> {
        // A finished job always has its charge set (0 for a failure), so an
        // unfinished one is one with an id and no charge: the partial index
        // `jobs_unfinished` holds exactly these, however many jobs finished.
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM {UNFINISHED_JOBS}")))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn unknown_jobs(&self) -> StoreResult<Vec<JobRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? AND generation_id IS NULL ORDER BY created_at, rowid"
        )))
        .bind(status::UNKNOWN)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn jobs_needing_attention(&self) -> StoreResult<Vec<JobRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = ? ORDER BY created_at, rowid"
        )))
        .bind(status::UNKNOWN)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn model_costs(&self) -> StoreResult<Vec<(String, f64, u64)>> {
        // Through `jobs_by_created`, so start-up reads a month of jobs, not all of them.
        let rows: Vec<(String, f64, i64)> = sqlx::query_as(
            "SELECT model, AVG(credits_charged), COUNT(*) FROM jobs INDEXED BY jobs_by_created \
             WHERE created_at >= ? AND credits_charged > 0 GROUP BY model",
        )
        .bind(now() - 30 * 86_400)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(model, average, n)| (model, average, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    async fn recent_jobs(&self, limit: u32) -> StoreResult<Vec<JobRecord>> {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM {RECENT_JOBS} LIMIT ?")))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn model_timings(&self) -> StoreResult<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT model, timing FROM model_timings ORDER BY model")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| Ok((row.try_get("model")?, row.try_get("timing")?))).collect()
    }
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn claim_due_webhooks(
        &self,
        now_ms: i64,
        limit: u32,
        skip: &[KeyId],
        lease_until_ms: i64,
    ) -> StoreResult<Vec<DueWebhook>> {
        let mut writing = self.writing().await?;
        let mut tx = writing.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.id, d.delivery_id, d.attempt, d.key_id, d.generation_id, d.event, d.body, \
             (SELECT MIN(f.created_at) FROM webhook_deliveries f WHERE f.delivery_id = d.delivery_id) AS queued_at, \
             CASE WHEN k.revoked_at IS NULL AND k.enabled = 1 THEN k.webhook_url END AS url, k.webhook_secret AS secret, \
             k.webhook_format AS format \
             FROM webhook_deliveries d JOIN keys k ON k.id = d.key_id \
             WHERE d.state = ? AND d.due_at <= ?{} ORDER BY d.due_at, d.id LIMIT ?",
            not_in("d.key_id", skip.len())
        )))
        .bind(delivery::PENDING)
        .bind(now_ms);
        let rows =
            skip.iter().fold(rows, |q, key| q.bind(key)).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
        let claimed: Vec<DueWebhook> =
            rows.iter().map(|row| DueRow::from_row(row)?.try_into()).collect::<StoreResult<_>>()?;
        let ids: Vec<i64> = claimed.iter().map(|due| due.id).collect();
        set_webhooks_due(&mut tx, &ids, lease_until_ms).await?;
        tx.commit().await?;
        writing.done();
        Ok(claimed)
    }

    async fn release_webhooks(&self, ids: &[i64], due_ms: i64) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut writing = self.writing().await?;
        let mut tx = writing.begin_with("BEGIN IMMEDIATE").await?;
        set_webhooks_due(&mut tx, ids, due_ms).await?;
        tx.commit().await?;
        writing.done();
        Ok(())
    }

    async fn next_webhook_due(&self, skip: &[KeyId]) -> StoreResult<Option<i64>> {
        let query = AssertSqlSafe(format!(
            "SELECT MIN(due_at) FROM webhook_deliveries WHERE state = ?{}",
            not_in("key_id", skip.len())
        ));
        let due = sqlx::query_scalar(query).bind(delivery::PENDING);
        let due: Option<i64> = skip.iter().fold(due, |q, key| q.bind(key)).fetch_one(&self.pool).await?;
        Ok(due)
    }

    async fn webhook_attempted(&self, id: i64, outcome: &AttemptOutcome) -> StoreResult<()> {
        let mut writing = self.writing().await?;
        let mut tx = writing.begin_with("BEGIN IMMEDIATE").await?;
        let recorded = sqlx::query(
            "UPDATE webhook_deliveries SET state = ?, url = ?, response_status = ?, error = ?, \
             attempted_at = ?, duration_ms = ? WHERE id = ? AND state = ?",
        )
        .bind(outcome.state)
        .bind(&outcome.url)
        .bind(outcome.response_status.map(i64::from))
        .bind(&outcome.error)
        .bind(outcome.attempted_at_ms)
        .bind(outcome.duration_ms)
        .bind(id)
        .bind(delivery::PENDING)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        // Recorded already (an attempt made twice after its claim lapsed): one retry is queued, not two.
        if let (1, Some(retry_at)) = (recorded, outcome.retry_at_ms) {
            sqlx::query(
                "INSERT INTO webhook_deliveries \
                 (delivery_id, attempt, key_id, generation_id, event, body, state, due_at, created_at) \
                 SELECT delivery_id, attempt + 1, key_id, generation_id, event, body, ?, ?, ? \
                 FROM webhook_deliveries WHERE id = ?",
            )
            .bind(delivery::PENDING)
            .bind(retry_at)
            .bind(now_ms())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        writing.done();
        Ok(())
    }

    async fn webhook_attempts(&self, generation_id: &str) -> StoreResult<Vec<WebhookAttempt>> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_deliveries WHERE generation_id = ? ORDER BY id"
        )))
        .bind(generation_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(attempt_from_row).collect()
    }
}

#[async_trait]
impl PageStore for SqliteStore {
    async fn job_history(&self, filter: &JobFilter) -> StoreResult<Vec<JobSummary>> {
        let (sql, binds) = page::history(filter, page::sqlite_mark);
        let query = sqlx::query_as(AssertSqlSafe(sql));
        let query = binds.into_iter().fold(query, |q, bind| match bind {
            page::Bind::Int(v) => q.bind(v),
            page::Bind::Text(v) => q.bind(v),
        });
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn job_summary(&self, local_id: &str) -> StoreResult<Option<JobSummary>> {
        let sql = page::job_summary(page::sqlite_mark);
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(local_id).fetch_optional(&self.pool).await?)
    }

    async fn models_used(&self, key_id: Option<KeyId>) -> StoreResult<Vec<String>> {
        let sql = page::models_used(key_id, page::sqlite_mark);
        let query = sqlx::query_scalar(AssertSqlSafe(sql));
        let query = match key_id {
            Some(key) => query.bind(key),
            None => query,
        };
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn daily_usage(&self, since: i64) -> StoreResult<Vec<DailyUsage>> {
        let rows: Vec<(i64, i64, f64, i64)> =
            sqlx::query_as(AssertSqlSafe(page::daily_usage(page::sqlite_mark)))
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        Ok(page::usage(rows))
    }

    async fn billed_jobs(&self, since: i64) -> StoreResult<Vec<JobSummary>> {
        let sql = page::billed_jobs(page::sqlite_mark);
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(since).bind(since).fetch_all(&self.pool).await?)
    }

    async fn generation_summary(&self, generation_id: &str) -> StoreResult<Option<JobSummary>> {
        let sql = page::generation_summary(page::sqlite_mark);
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(generation_id).fetch_optional(&self.pool).await?)
    }

    async fn failed_deliveries(&self, limit: u32) -> StoreResult<Vec<WebhookAttempt>> {
        let rows = sqlx::query(AssertSqlSafe(page::failed_deliveries(page::sqlite_mark)))
            .bind(delivery::FAILED)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_from_row).collect()
    }

    async fn insert_session(
        &self,
        token_hash: &[u8; 32],
        session: &PageSession,
        now: i64,
    ) -> StoreResult<()> {
        let mut writing = self.writing().await?;
        let mut tx = writing.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(AssertSqlSafe(page::expire_sessions(page::sqlite_mark)))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(page::insert_session(page::sqlite_mark)))
            .bind(token_hash.as_slice())
            .bind(session.key_id)
            .bind(session.credential_hash.as_slice())
            .bind(&session.csrf)
            .bind(now)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        writing.done();
        Ok(())
    }

    async fn session(&self, token_hash: &[u8; 32], now: i64) -> StoreResult<Option<PageSession>> {
        let row: Option<page::SessionRow> = sqlx::query_as(AssertSqlSafe(page::session(page::sqlite_mark)))
            .bind(token_hash.as_slice())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(PageSession::try_from).transpose()
    }

    async fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        let mut writing = self.writing().await?;
        sqlx::query(AssertSqlSafe(page::delete_session(page::sqlite_mark)))
            .bind(token_hash.as_slice())
            .execute(&mut *writing)
            .await?;
        writing.done();
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// `?, ?, …` for an `IN (…)` list of `n` values.
fn value_list(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// ` AND column NOT IN (?, …)` for `n` values; nothing for none.
fn not_in(column: &str, n: usize) -> String {
    if n == 0 { String::new() } else { format!(" AND {column} NOT IN ({})", value_list(n)) }
}

/// Sets when pending attempts `ids` are due.
async fn set_webhooks_due(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ids: &[i64],
    due_ms: i64,
) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let query = AssertSqlSafe(format!(
        "UPDATE webhook_deliveries SET due_at = ? WHERE state = ? AND id IN ({})",
        value_list(ids.len())
    ));
    let update = sqlx::query(query).bind(due_ms).bind(delivery::PENDING);
    ids.iter().fold(update, |q, id| q.bind(id)).execute(&mut **tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn commands_beside_a_server_never_migrate_its_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        // A new database is set up.
        SqliteStore::open_beside_server(&path).await.unwrap().close().await;
        // One an older server runs on (its last migration not applied) is refused.
        let store = SqliteStore::open(&path).await.unwrap();
        sqlx::query(
            "DELETE FROM _sqlx_migrations WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)",
        )
        .execute(&store.writes)
        .await
        .unwrap();
        store.close().await;
        let err = SqliteStore::open_beside_server(&path).await.unwrap_err().to_string();
        assert!(err.contains("older schema") && err.contains("aimlvid-server migrate"), "{err}");
        // One this build migrated opens.
        let current = dir.path().join("current.sqlite");
        SqliteStore::open(&current).await.unwrap().close().await;
        SqliteStore::open_beside_server(&current).await.unwrap().close().await;
        // One a newer server migrated is refused too.
        let store = SqliteStore::open(&current).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
             VALUES (99999, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)",
        )
        .execute(&store.writes)
        .await
        .unwrap();
        store.close().await;
        let err = SqliteStore::open_beside_server(&current).await.unwrap_err().to_string();
        assert!(err.contains("newer aimlvid-server"), "{err}");
    }

    #[tokio::test]
    async fn start_up_reads_use_their_indexes_not_a_table_scan() {
        let (_dir, store) = store().await;
        let plan = |sql: String| {
            let pool = store.pool.clone();
            async move {
                let rows: Vec<(i64, i64, i64, String)> =
                    sqlx::query_as(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                        .fetch_all(&pool)
                        .await
                        .unwrap();
                rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
            }
        };
        let unfinished = plan(format!("SELECT local_id FROM {UNFINISHED_JOBS}")).await;
        assert!(unfinished.contains("jobs_unfinished"), "{unfinished}");
        let recent = plan(format!("SELECT local_id FROM {RECENT_JOBS} LIMIT 10")).await;
        assert!(recent.contains("jobs_by_created") && !recent.contains("TEMP B-TREE"), "{recent}");
    }

    /// Makes `paths` immutable (`chattr +i`) or writable again; false where
    /// that cannot be done (not root, or a filesystem without the flag).
    fn set_immutable(paths: &[std::path::PathBuf], on: bool) -> bool {
        let flag = if on { "+i" } else { "-i" };
        paths.iter().all(|path| {
            std::process::Command::new("chattr")
                .arg(flag)
                .arg(path)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    fn begin(local_id: &str, key_id: KeyId) -> JobWrite {
        JobWrite::Begin(NewJob {
            local_id: local_id.into(),
            key_id,
            model: "m".into(),
            idempotency_key: None,
            request_hash: [0; 32],
            reserved: 0.0,
            prompt: None,
            input: None,
            created_at: crate::store::rows::now(),
            params: None,
            inline_media: None,
            remixed_from: None,
        })
    }

    /// A commit that failed on a read-only file (SQLite then rolls the
    /// transaction back by itself) must not leave the writer's connection
    /// unusable: once the file is writable again, the next write succeeds.
    #[tokio::test]
    async fn writes_succeed_again_once_a_read_only_file_is_writable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let key = store.insert_key(&crate::store::suite::test_key("k")).await.unwrap();
        store.apply(&[begin("warm", key.id)]).await.unwrap();
        let files: Vec<_> = ["", "-wal"]
            .iter()
            .map(|suffix| dir.path().join(format!("t.db{suffix}")))
            .filter(|p| p.exists())
            .collect();
        if !set_immutable(&files, true) {
            set_immutable(&files, false);
            eprintln!("skipped: making a file immutable needs root and chattr (CI runs as root)");
            return;
        }
        let failed = store.apply(&[begin("l1", key.id)]).await;
        let again = store.apply(&[begin("l1", key.id)]).await;
        assert!(set_immutable(&files, false));
        let failed = failed.expect_err("a read-only database refuses the write").to_string();
        assert!(again.is_err(), "still read-only");
        // Writable again: the very next write is stored.
        let outcomes = store.apply(&[begin("l1", key.id)]).await.unwrap_or_else(|e| {
            panic!("the write after storage came back failed: {e} (the first failure was: {failed})")
        });
        assert_eq!(outcomes.len(), 1);
        assert!(matches!(outcomes[0], Ok(WriteOutcome::Begun(Begun::Inserted))), "{outcomes:?}");
        // Every other writer too: a key change.
        store.update_key("k", &KeyUpdate::default(), None).await.unwrap();
    }
}
