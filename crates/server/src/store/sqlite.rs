//! The SQLite backend: one file, migrated on open, in WAL mode.
//!
//! WAL with `synchronous = NORMAL` makes every committed transaction
//! survive the process being killed (`kill -9`): the log is in the OS's
//! hands once a commit returns. Only a power cut may lose the last commits.

use std::path::Path;
use std::str::FromStr as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row as _, Sqlite, Transaction};

use super::{
    AttemptOutcome, BatchResult, Begun, Charged, DueWebhook, JobEnd, JobRecord, JobStore, JobWrite, KeyId,
    KeyRecord, KeyStore, KeyUpdate, NewJob, NewKey, Store, StoreError, StoreResult, Webhook, WebhookAttempt,
    WebhookStore, WriteOutcome, delivery, status,
};

/// Statuses after which a job never changes, as SQL.
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
const FINISHED: &str = "('completed', 'complete', 'error', 'failed', 'cancelled', 'canceled')";
const JOB_COLUMNS: &str = "local_id, key_id, generation_id, status, model, body, idempotency_key, \
                           request_hash, credits_charged, created_at, receipt, note";
// The webhook secret is deliberately absent: only `due_webhooks` reads it.
const KEY_COLUMNS: &str = "id, name, hash, prefix, allowed_models, rpm, max_unfinished, credit_budget, \
                           budget_period, period_start, period_credits, credits_used, enabled, revoked_at, \
                           created_at, webhook_url";
const ATTEMPT_COLUMNS: &str = "id, delivery_id, attempt, key_id, generation_id, event, state, due_at, url, \
                               response_status, error, attempted_at, duration_ms";

/// Keys and jobs in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    pool: SqlitePool,
    /// The one connection that writes, so this process never contends
    /// with itself for SQLite's single write lock, and reads (cache misses,
    /// admin calls) can never take the connection a write needs.
    writes: SqlitePool,
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

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn key_from_row(row: &SqliteRow) -> StoreResult<KeyRecord> {
    let hash: Vec<u8> = row.try_get("hash")?;
    let hash = <[u8; 32]>::try_from(hash.as_slice()).map_err(|_| StoreError::Corrupt("key hash".into()))?;
    let models: Option<String> = row.try_get("allowed_models")?;
    let allowed_models = models
        .map(|m| serde_json::from_str(&m))
        .transpose()
        .map_err(|_| StoreError::Corrupt("allowed_models".into()))?;
    let rpm: Option<i64> = row.try_get("rpm")?;
    let max_unfinished: Option<i64> = row.try_get("max_unfinished")?;
    let revoked_at: Option<i64> = row.try_get("revoked_at")?;
    let budget_period: Option<String> = row.try_get("budget_period")?;
    let budget_period = budget_period
        .map(|p| p.parse::<super::BudgetPeriod>())
        .transpose()
        .map_err(|_| StoreError::Corrupt("budget_period".into()))?;
    Ok(KeyRecord {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        hash,
        prefix: row.try_get("prefix")?,
        limits: super::KeyLimits {
            allowed_models,
            rpm: rpm.map(|v| v.clamp(0, i64::from(u32::MAX)) as u32),
            max_unfinished: max_unfinished.map(|v| v.clamp(0, i64::from(u32::MAX)) as u32),
            credit_budget: row.try_get("credit_budget")?,
            budget_period,
        },
        credits_used: row.try_get("credits_used")?,
        period_credits: row.try_get("period_credits")?,
        period_start: row.try_get("period_start")?,
        enabled: row.try_get("enabled")?,
        revoked: revoked_at.is_some(),
        created_at: row.try_get("created_at")?,
        webhook_url: row.try_get("webhook_url")?,
    })
}

fn attempt_from_row(row: &SqliteRow) -> StoreResult<WebhookAttempt> {
    let attempt: i64 = row.try_get("attempt")?;
    let response_status: Option<i64> = row.try_get("response_status")?;
    Ok(WebhookAttempt {
        id: row.try_get("id")?,
        delivery_id: row.try_get("delivery_id")?,
        attempt: u32::try_from(attempt).map_err(|_| StoreError::Corrupt("webhook attempt".into()))?,
        key_id: row.try_get("key_id")?,
        generation_id: row.try_get("generation_id")?,
        event: row.try_get("event")?,
        state: row.try_get("state")?,
        due_at_ms: row.try_get("due_at")?,
        url: row.try_get("url")?,
        response_status: response_status.and_then(|s| u16::try_from(s).ok()),
        error: row.try_get("error")?,
        attempted_at_ms: row.try_get("attempted_at")?,
        duration_ms: row.try_get("duration_ms")?,
    })
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

fn job_from_row(row: &SqliteRow) -> StoreResult<JobRecord> {
    Ok(JobRecord {
        local_id: row.try_get("local_id")?,
        key_id: row.try_get("key_id")?,
        generation_id: row.try_get("generation_id")?,
        status: row.try_get("status")?,
        model: row.try_get("model")?,
        body: row.try_get("body")?,
        idempotency_key: row.try_get("idempotency_key")?,
        request_hash: row.try_get("request_hash")?,
        credits_charged: row.try_get("credits_charged")?,
        created_at: row.try_get("created_at")?,
        receipt: row.try_get("receipt")?,
        note: row.try_get("note")?,
    })
}

fn models_json(models: &Option<Vec<String>>) -> Option<String> {
    models.as_ref().map(|m| serde_json::Value::from(m.clone()).to_string())
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A write that breaks a rule of the schema fails the same way every time;
/// anything else (a lock, a full disk, an I/O error) may pass later.
fn is_constraint(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if !matches!(db.kind(), sqlx::error::ErrorKind::Other))
}

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, key: &NewKey) -> StoreResult<KeyRecord> {
        let inserted = sqlx::query(
            "INSERT INTO keys (name, hash, prefix, allowed_models, rpm, max_unfinished, credit_budget, budget_period, \
             created_at, webhook_url, webhook_secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.writes)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
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
        if matches!(update.webhook_url, Some(Some(_))) && webhook_secret.is_none() {
            return Err(StoreError::Invalid("a new webhook URL needs a new secret".into()));
        }
        let mut tx = self.writes.begin_with("BEGIN IMMEDIATE").await?;
        let Some(row) = sqlx::query(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys WHERE name = ?")))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let mut key = key_from_row(&row)?;
        update.apply(&mut key.limits, &mut key.enabled);
        sqlx::query(
            "UPDATE keys SET allowed_models = ?, rpm = ?, max_unfinished = ?, credit_budget = ?, budget_period = ?, \
             enabled = ? WHERE id = ?",
        )
        .bind(models_json(&key.limits.allowed_models))
        .bind(key.limits.rpm.map(i64::from))
        .bind(key.limits.max_unfinished.map(i64::from))
        .bind(key.limits.credit_budget)
        .bind(key.limits.budget_period.map(|p| p.as_str()))
        .bind(key.enabled)
        .bind(key.id)
        .execute(&mut *tx)
        .await?;
        if let Some(url) = &update.webhook_url {
            sqlx::query("UPDATE keys SET webhook_url = ?, webhook_secret = ? WHERE id = ?")
                .bind(url)
                .bind(url.as_ref().and(webhook_secret).map(|s| s.expose_secret()))
                .bind(key.id)
                .execute(&mut *tx)
                .await?;
            key.webhook_url.clone_from(url);
        }
        tx.commit().await?;
        Ok(Some(key))
    }

    async fn rotate_key(&self, name: &str, hash: &[u8; 32], prefix: &str) -> StoreResult<Option<KeyRecord>> {
        let rotated =
            sqlx::query("UPDATE keys SET hash = ?, prefix = ? WHERE name = ? AND revoked_at IS NULL")
                .bind(hash.as_slice())
                .bind(prefix)
                .bind(name)
                .execute(&self.writes)
                .await?
                .rows_affected();
        if rotated == 0 {
            return Ok(None);
        }
        self.key_by_name(name).await
    }

    async fn revoke_key(&self, name: &str) -> StoreResult<Option<KeyRecord>> {
        sqlx::query("UPDATE keys SET revoked_at = COALESCE(revoked_at, ?), enabled = 0 WHERE name = ?")
            .bind(now())
            .bind(name)
            .execute(&self.writes)
            .await?;
        self.key_by_name(name).await
    }
}

/// One job write inside the batch's transaction. `Ok(Err(_))` is a write
/// refused for good (the batch goes on); `Err(_)` aborts the batch.
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
            sqlx::query("UPDATE jobs SET status = ?, note = ?, updated_at = ? WHERE local_id = ?")
                .bind(status::UNKNOWN)
                .bind(note)
                .bind(now)
                .bind(local_id)
                .execute(&mut **tx)
                .await?;
            done
        }
        JobWrite::Gone { generation_id, note } => {
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE jobs SET status = ?, note = ?, updated_at = ? WHERE generation_id = ? AND status NOT IN {FINISHED}"
            )))
            .bind(status::UNKNOWN)
            .bind(note)
            .bind(now)
            .bind(generation_id)
            .execute(&mut **tx)
            .await?;
            done
        }
        JobWrite::Abandon { local_id } => {
            sqlx::query("DELETE FROM jobs WHERE local_id = ? AND generation_id IS NULL")
                .bind(local_id)
                .execute(&mut **tx)
                .await?;
            done
        }
        JobWrite::Changed { generation_id, status, body } => {
            // Never moves a finished job back: a late, reordered answer must not undo its end.
            sqlx::query(AssertSqlSafe(format!(
                "UPDATE jobs SET status = ?, body = ?, updated_at = ? WHERE generation_id = ? AND status NOT IN {FINISHED}"
            )))
            .bind(status)
            .bind(body)
            .bind(now)
            .bind(generation_id)
            .execute(&mut **tx)
            .await?;
            done
        }
        JobWrite::Finished { generation_id, end } => {
            Ok(WriteOutcome::Finished(finish_job(tx, generation_id, end, now).await?))
        }
        JobWrite::Prune { before, limit } => {
            let doomed = "SELECT generation_id FROM jobs INDEXED BY jobs_by_created \
                 WHERE created_at < ?1 AND credits_charged IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                     WHERE d.generation_id = jobs.generation_id AND d.state = 'pending') \
                 ORDER BY created_at LIMIT ?2";
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM webhook_deliveries WHERE generation_id IN ({doomed})"
            )))
            .bind(before)
            .bind(i64::from(*limit))
            .execute(&mut **tx)
            .await?;
            let pruned =
                sqlx::query(AssertSqlSafe(format!("DELETE FROM jobs WHERE generation_id IN ({doomed})")))
                    .bind(before)
                    .bind(i64::from(*limit))
                    .execute(&mut **tx)
                    .await?
                    .rows_affected();
            Ok(WriteOutcome::Pruned(pruned))
        }
        JobWrite::ModelTiming { model, timing } => {
            sqlx::query(
                "INSERT INTO model_timings (model, timing, updated_at) VALUES (?, ?, ?) \
                 ON CONFLICT (model) DO UPDATE SET timing = excluded.timing, updated_at = excluded.updated_at",
            )
            .bind(model)
            .bind(timing)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            done
        }
    })
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
        "INSERT INTO jobs (local_id, key_id, status, model, idempotency_key, request_hash, created_at, updated_at) \
         VALUES {} ON CONFLICT DO NOTHING RETURNING local_id",
        placeholders(jobs.len(), 8)
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
            .bind(now)
            .bind(now);
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
impl JobStore for SqliteStore {
    async fn apply(&self, writes: &[JobWrite]) -> BatchResult {
        // IMMEDIATE takes the write lock at once, waiting out `busy_timeout`
        // for another process's writer; a plain BEGIN would fail with BUSY
        // when it upgrades from a read, whatever the timeout.
        let mut tx = self.writes.begin_with("BEGIN IMMEDIATE").await?;
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
        Ok(outcomes)
    }

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

    async fn pending_to_unknown(&self) -> StoreResult<u64> {
        let done = sqlx::query("UPDATE jobs SET status = ?, note = ?, updated_at = ? WHERE status = ?")
            .bind(status::UNKNOWN)
            .bind("the server stopped while the create was in flight")
            .bind(now())
            .bind(status::PENDING)
            .execute(&self.writes)
            .await?;
        Ok(done.rows_affected())
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
        let mut tx = self.writes.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT d.id, d.delivery_id, d.attempt, d.key_id, d.generation_id, d.body, \
             CASE WHEN k.revoked_at IS NULL AND k.enabled = 1 THEN k.webhook_url END AS url, k.webhook_secret AS secret \
             FROM webhook_deliveries d JOIN keys k ON k.id = d.key_id \
             WHERE d.state = ? AND d.due_at <= ?{} ORDER BY d.due_at, d.id LIMIT ?",
            not_in("d.key_id", skip.len())
        )))
        .bind(delivery::PENDING)
        .bind(now_ms);
        let rows =
            skip.iter().fold(rows, |q, key| q.bind(key)).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
        let claimed: Vec<DueWebhook> = rows
            .iter()
            .map(|row| {
                let url: Option<String> = row.try_get("url")?;
                let secret: Option<String> = row.try_get("secret")?;
                let attempt: i64 = row.try_get("attempt")?;
                Ok(DueWebhook {
                    id: row.try_get("id")?,
                    delivery_id: row.try_get("delivery_id")?,
                    attempt: u32::try_from(attempt)
                        .map_err(|_| StoreError::Corrupt("webhook attempt".into()))?,
                    key_id: row.try_get("key_id")?,
                    generation_id: row.try_get("generation_id")?,
                    body: row.try_get("body")?,
                    target: url.zip(secret).map(|(url, secret)| Webhook { url, secret: secret.into() }),
                })
            })
            .collect::<StoreResult<_>>()?;
        let ids: Vec<i64> = claimed.iter().map(|due| due.id).collect();
        set_webhooks_due(&mut tx, &ids, lease_until_ms).await?;
        tx.commit().await?;
        Ok(claimed)
    }

    async fn release_webhooks(&self, ids: &[i64], due_ms: i64) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut tx = self.writes.begin_with("BEGIN IMMEDIATE").await?;
        set_webhooks_due(&mut tx, ids, due_ms).await?;
        tx.commit().await?;
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
        let mut tx = self.writes.begin_with("BEGIN IMMEDIATE").await?;
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
    use crate::store::KeyLimits;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        (dir, store)
    }

    fn new_key(name: &str) -> NewKey {
        NewKey {
            name: name.into(),
            hash: [name.len() as u8; 32],
            prefix: "amv_x".into(),
            limits: KeyLimits::default(),
            webhook: None,
        }
    }

    /// Job `l1` of `key_id`, with no idempotency key.
    fn new_job(key_id: KeyId) -> NewJob {
        NewJob {
            local_id: "l1".into(),
            key_id,
            model: "m".into(),
            idempotency_key: None,
            request_hash: [0; 32],
        }
    }

    fn end(status: &str, credits: f64) -> JobEnd {
        JobEnd { status: status.into(), body: "{}".into(), credits, announcement: "{\"id\":\"g1\"}".into() }
    }

    #[tokio::test]
    async fn charges_count_towards_the_current_budget_period_only() {
        let (_dir, store) = store().await;
        let mut key = new_key("pat");
        key.limits.budget_period = Some(crate::store::BudgetPeriod::Day);
        let key = store.insert_key(&key).await.unwrap();
        let finish = |local: &'static str, generation: &'static str, credits: f64| {
            let store = store.clone();
            async move {
                store.begin_job(&NewJob { local_id: local.into(), ..new_job(key.id) }).await.unwrap();
                store.job_created(local, generation, "queued", "{}").await.unwrap();
                store.job_finished(generation, &end("completed", credits)).await.unwrap().unwrap()
            }
        };
        let today = crate::store::BudgetPeriod::Day.start_of(now());
        assert_eq!(finish("a", "ga", 5.0).await.key_period, Some((today, 5.0)));
        assert_eq!(finish("b", "gb", 7.0).await.key_period, Some((today, 12.0)));
        // The period turned over since: the next charge starts it afresh.
        sqlx::query("UPDATE keys SET period_start = period_start - 86400 WHERE id = ?")
            .bind(key.id)
            .execute(&store.writes)
            .await
            .unwrap();
        let charged = finish("c", "gc", 3.0).await;
        assert_eq!(charged.key_period, Some((today, 3.0)));
        assert_eq!(charged.key_credits_used, 15.0, "the lifetime figure keeps counting");
        let stored = store.keys().await.unwrap().into_iter().find(|k| k.id == key.id).unwrap();
        assert_eq!((stored.period_start, stored.period_credits), (Some(today), 3.0));
    }

    #[tokio::test]
    async fn pruning_forgets_old_finished_jobs_but_not_running_ones_or_pending_deliveries() {
        let (_dir, store) = store().await;
        let key = store.insert_key(&new_key("ret")).await.unwrap();
        for (local, generation) in
            [("a", "old-done"), ("b", "old-running"), ("c", "new-done"), ("d", "old-pending")]
        {
            store.begin_job(&NewJob { local_id: local.into(), ..new_job(key.id) }).await.unwrap();
            store.job_created(local, generation, "queued", "{}").await.unwrap();
        }
        for generation in ["old-done", "new-done", "old-pending"] {
            store.job_finished(generation, &end("completed", 1.0)).await.unwrap();
        }
        sqlx::query("INSERT INTO webhook_deliveries (delivery_id, attempt, key_id, generation_id, event, body, state, due_at, created_at) VALUES ('x', 1, ?, 'old-pending', 'completed', '{}', 'pending', 0, 0)")
            .bind(key.id)
            .execute(&store.writes)
            .await
            .unwrap();
        let month_ago = now() - 40 * 86_400;
        sqlx::query("UPDATE jobs SET created_at = ? WHERE generation_id LIKE 'old-%'")
            .bind(month_ago)
            .execute(&store.writes)
            .await
            .unwrap();
        let outcome =
            store.apply(&[JobWrite::Prune { before: now() - 30 * 86_400, limit: 100 }]).await.unwrap();
        assert!(matches!(outcome[0], Ok(WriteOutcome::Pruned(1))), "{outcome:?}");
        assert!(store.job_by_generation("old-done").await.unwrap().is_none());
        for kept in ["old-running", "new-done", "old-pending"] {
            assert!(store.job_by_generation(kept).await.unwrap().is_some(), "{kept}");
        }
        let keys = store.keys().await.unwrap();
        assert_eq!(keys[0].credits_used, 3.0, "charges stay on the key");
    }

    #[tokio::test]
    async fn keys_round_trip_update_and_revoke() {
        let (_dir, store) = store().await;
        let mut key = new_key("alice");
        key.limits = KeyLimits {
            allowed_models: Some(vec!["m1".into()]),
            rpm: Some(60),
            max_unfinished: Some(2),
            credit_budget: Some(10.0),
            budget_period: Some(crate::store::BudgetPeriod::Week),
        };
        let alice = store.insert_key(&key).await.unwrap();
        assert_eq!(alice.limits, key.limits);
        assert!(alice.enabled && !alice.revoked);
        assert!(matches!(store.insert_key(&new_key("alice")).await, Err(StoreError::Conflict(_))));

        let update: KeyUpdate = serde_json::from_str(r#"{"rpm": null, "enabled": false}"#).unwrap();
        let updated = store.update_key("alice", &update, None).await.unwrap().unwrap();
        assert_eq!(updated.limits.rpm, None);
        assert_eq!(updated.limits.max_unfinished, Some(2), "fields left out stay as they were");
        assert!(!updated.enabled);
        assert_eq!(store.update_key("bob", &update, None).await.unwrap(), None);

        let revoked = store.revoke_key("alice").await.unwrap().unwrap();
        assert!(revoked.revoked);
        assert_eq!(store.keys().await.unwrap(), vec![revoked]);
    }

    #[tokio::test]
    async fn a_job_is_charged_once_and_idempotency_keys_find_their_job() {
        let (_dir, store) = store().await;
        let key = store.insert_key(&new_key("k")).await.unwrap();
        let job = NewJob { idempotency_key: Some("idem".into()), request_hash: [7; 32], ..new_job(key.id) };
        assert_eq!(store.begin_job(&job).await.unwrap(), Begun::Inserted);
        let again = NewJob { local_id: "l2".into(), ..job.clone() };
        let Begun::Existing(existing) = store.begin_job(&again).await.unwrap() else {
            panic!("not deduplicated")
        };
        assert_eq!(existing.local_id, "l1");
        assert_eq!(existing.status, status::PENDING);

        store.job_created("l1", "g1", "queued", "{}").await.unwrap();
        assert_eq!(store.unfinished_jobs().await.unwrap().len(), 1);
        store.job_changed("g1", "generating", "{}").await.unwrap();
        let charged =
            Charged { key_id: key.id, webhook_queued: false, key_credits_used: 5.0, key_period: None };
        assert_eq!(store.job_finished("g1", &end("completed", 5.0)).await.unwrap(), Some(charged));
        assert_eq!(store.job_finished("g1", &end("completed", 5.0)).await.unwrap(), None);
        store.job_changed("g1", "generating", "{}").await.unwrap();
        let done = store.job_by_generation("g1").await.unwrap().unwrap();
        assert_eq!((done.status.as_str(), done.credits_charged), ("completed", Some(5.0)));
        assert!(store.unfinished_jobs().await.unwrap().is_empty());
        assert_eq!(store.keys().await.unwrap()[0].credits_used, 5.0);
    }

    #[tokio::test]
    async fn a_batch_stores_runs_of_creates_together_and_refuses_only_a_bad_row() {
        let (_dir, store) = store().await;
        let key = store.insert_key(&new_key("k")).await.unwrap();
        let job = |local: &str, idem: Option<&str>| {
            JobWrite::Begin(NewJob {
                local_id: local.into(),
                idempotency_key: idem.map(Into::into),
                ..new_job(key.id)
            })
        };
        let created = |local: &str, generation: &str| JobWrite::Created {
            local_id: local.into(),
            generation_id: generation.into(),
            status: "queued".into(),
            body: "{}".into(),
            receipt: None,
        };
        let outcomes = store
            .apply(&[job("a", Some("i1")), job("b", None), job("c", Some("i1")), job("d", None)])
            .await
            .unwrap();
        assert!(matches!(outcomes[0], Ok(WriteOutcome::Begun(Begun::Inserted))));
        assert!(matches!(outcomes[1], Ok(WriteOutcome::Begun(Begun::Inserted))));
        let Ok(WriteOutcome::Begun(Begun::Existing(first))) = &outcomes[2] else {
            panic!("{:?}", outcomes[2])
        };
        assert_eq!(first.local_id, "a", "the same Idempotency-Key finds the first job");
        assert!(matches!(outcomes[3], Ok(WriteOutcome::Begun(Begun::Inserted))));

        // `d` claims `b`'s upstream id: a broken rule, refused alone.
        let outcomes =
            store.apply(&[created("a", "g1"), created("b", "g2"), created("d", "g2")]).await.unwrap();
        assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
        assert!(matches!(outcomes[2], Err(StoreError::Backend(_))), "{outcomes:?}");
        assert_eq!(store.job_by_generation("g1").await.unwrap().unwrap().local_id, "a");
        assert_eq!(store.job_by_generation("g2").await.unwrap().unwrap().local_id, "b");
        let outcomes = store.apply(&[created("d", "g3"), created("c", "g4")]).await.unwrap();
        assert!(outcomes.iter().all(Result::is_ok));
        assert_eq!(store.unfinished_jobs().await.unwrap().len(), 3, "c was never inserted, so has no row");
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

    #[tokio::test]
    async fn creates_in_flight_at_a_crash_become_unknown() {
        let (_dir, store) = store().await;
        let key = store.insert_key(&new_key("k")).await.unwrap();
        let job = new_job(key.id);
        store.begin_job(&job).await.unwrap();
        assert_eq!(store.pending_to_unknown().await.unwrap(), 1);
        assert!(store.unfinished_jobs().await.unwrap().is_empty(), "an unknown job has no id to poll");
        assert_eq!(store.pending_to_unknown().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_finished_job_queues_its_webhook_and_each_attempt_queues_the_next() {
        let (_dir, store) = store().await;
        let mut with_hook = new_key("hooked");
        with_hook.webhook =
            Some(Webhook { url: "http://127.0.0.1:9/hook".into(), secret: "whsec_s".to_owned().into() });
        let key = store.insert_key(&with_hook).await.unwrap();
        assert_eq!(key.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));
        let job = new_job(key.id);
        store.begin_job(&job).await.unwrap();
        store.job_created("l1", "g1", "queued", "{}").await.unwrap();
        assert_eq!(store.next_webhook_due(&[]).await.unwrap(), None);
        let charged = store.job_finished("g1", &end("completed", 1.0)).await.unwrap().unwrap();
        assert!(charged.webhook_queued);

        let lease = now_ms() + 30_000;
        assert!(store.claim_due_webhooks(now_ms() + 1000, 10, &[key.id], lease).await.unwrap().is_empty());
        assert_eq!(store.next_webhook_due(&[key.id]).await.unwrap(), None, "the key is skipped");
        let due = store.claim_due_webhooks(now_ms() + 1000, 10, &[], lease).await.unwrap();
        assert_eq!(due.len(), 1);
        assert!(
            store.claim_due_webhooks(now_ms() + 1000, 10, &[], lease).await.unwrap().is_empty(),
            "a claimed attempt is not taken twice"
        );
        assert_eq!(store.next_webhook_due(&[]).await.unwrap(), Some(lease), "due again if never recorded");
        let first = &due[0];
        assert_eq!((first.attempt, first.body.as_str()), (1, "{\"id\":\"g1\"}"));
        let target = first.target.as_ref().unwrap();
        assert_eq!(target.secret.expose_secret(), "whsec_s");
        let retry_at = now_ms() + 60_000;
        let failed = AttemptOutcome {
            state: delivery::FAILED,
            url: Some(target.url.clone()),
            response_status: Some(500),
            error: Some("answered 500".into()),
            attempted_at_ms: now_ms(),
            duration_ms: 3,
            retry_at_ms: Some(retry_at),
        };
        store.webhook_attempted(first.id, &failed).await.unwrap();
        assert!(
            store.claim_due_webhooks(now_ms() + 1000, 10, &[], lease).await.unwrap().is_empty(),
            "the retry is not due yet"
        );
        assert_eq!(store.next_webhook_due(&[]).await.unwrap(), Some(retry_at));

        // Once the key is revoked, the retry finds no webhook to go to.
        store.revoke_key("hooked").await.unwrap();
        let due = store.claim_due_webhooks(retry_at, 10, &[], retry_at + 30_000).await.unwrap();
        assert_eq!((due[0].attempt, due[0].target.is_none()), (2, true));
        // Released, it is due when asked: at once after a stop, later for a resting host.
        store.release_webhooks(&[due[0].id], retry_at + 5).await.unwrap();
        assert_eq!(store.next_webhook_due(&[]).await.unwrap(), Some(retry_at + 5));
        let attempts = store.webhook_attempts("g1").await.unwrap();
        assert_eq!(attempts.len(), 2);
        assert_eq!(attempts[0].delivery_id, attempts[1].delivery_id);
        assert_eq!((attempts[0].state.as_str(), attempts[0].response_status), ("failed", Some(500)));
        assert_eq!((attempts[1].state.as_str(), attempts[1].due_at_ms), ("pending", retry_at + 5));
    }

    #[tokio::test]
    async fn a_webhook_url_is_set_only_with_a_secret_and_removed_with_it() {
        let (_dir, store) = store().await;
        store.insert_key(&new_key("k")).await.unwrap();
        let set: KeyUpdate = serde_json::from_str(r#"{"webhook_url": "https://example.com/h"}"#).unwrap();
        assert!(matches!(store.update_key("k", &set, None).await, Err(StoreError::Invalid(_))));
        let secret = SecretString::from("whsec_new".to_owned());
        let updated = store.update_key("k", &set, Some(&secret)).await.unwrap().unwrap();
        assert_eq!(updated.webhook_url.as_deref(), Some("https://example.com/h"));
        let remove: KeyUpdate = serde_json::from_str(r#"{"webhook_url": null}"#).unwrap();
        let updated = store.update_key("k", &remove, None).await.unwrap().unwrap();
        assert_eq!(updated.webhook_url, None);
        let secret: Option<String> =
            sqlx::query_scalar("SELECT webhook_secret FROM keys").fetch_one(&store.pool).await.unwrap();
        assert_eq!(secret, None, "the secret goes with its URL");
    }
}
