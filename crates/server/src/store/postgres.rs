//! The PostgreSQL backend: for a team that runs several replicas on one
//! database, or that keeps its state where its other data is.
//!
//! Every statement is atomic on its own where SQLite relied on its single
//! writer: a charge is `UPDATE … WHERE credits_charged IS NULL RETURNING`,
//! a webhook claim is `FOR UPDATE SKIP LOCKED`, so replicas sharing the
//! database never charge or claim anything twice.
//!
//! Longer than most files on purpose: it implements every storage trait
//! for one backend, with what it shares with SQLite already in `sql.rs`
//! and `page.rs`; what is left differs in locking (`FOR UPDATE`, `SKIP
//! LOCKED`, leases) and in keeping each key's places in the database.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Postgres, Transaction};

use super::rows::{
    ATTEMPT_COLUMNS, AttemptRow, DueRow, JOB_COLUMNS, KEY_COLUMNS, KeyRow, is_constraint,
    is_unique_violation, models_json, now, now_ms, records,
};
use super::{
    AttemptOutcome, BatchResult, Begun, Charged, DailyUsage, DueWebhook, JobChangeFeed, JobEnd, JobFilter,
    JobLeases, JobReads, JobRecord, JobSummary, JobWrite, JobWrites, KeyId, KeyRecord, KeyStore, KeyUpdate,
    LimitReached, NewJob, NewKey, PageSession, PageStore, Store, StoreError, StoreResult, WebhookAttempt,
    WebhookStore, WriteOutcome, delivery, page, sql, status,
};

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host/db`: a secret, for its password.
    pub url: SecretString,
    /// Connections in the pool.
    pub max_connections: u32,
    /// The schema to use instead of the role's default (`search_path`);
    /// tests give each run its own.
    pub schema: Option<String>,
    /// How long a request waits for a connection before it fails.
    pub acquire_timeout: Duration,
    /// How long a server's hold on the jobs it follows lasts unless
    /// renewed: a replica that dies has its jobs taken over within this.
    pub lease: Duration,
}

impl PostgresSettings {
    /// The database at `url`, with a pool sized for this machine.
    pub fn new(url: SecretString) -> Self {
        PostgresSettings {
            url,
            max_connections: default_pool_size(),
            schema: None,
            acquire_timeout: Duration::from_secs(5),
            lease: DEFAULT_LEASE,
        }
    }
}

/// The channel job changes are announced on: `<replica>/<generation id>`.
const JOB_CHANGES: &str = "aimlvid_jobs";
const CHANGE_SEPARATOR: char = '/';

/// Other replicas' job changes, from `LISTEN aimlvid_jobs`.
struct ChangeFeed {
    listener: PgListener,
    me: String,
}

#[async_trait]
impl JobChangeFeed for ChangeFeed {
    async fn next(&mut self) -> StoreResult<Option<String>> {
        loop {
            let Some(notification) = self.listener.try_recv().await? else { return Ok(None) };
            if let Some((replica, id)) = notification.payload().split_once(CHANGE_SEPARATOR)
                && replica != self.me
            {
                return Ok(Some(id.to_owned()));
            }
        }
    }
}

/// How long a lease on a job lasts unless renewed, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);

/// Creates still `pending` this long after they began are taken to be
/// lost with their server: the longest create, the largest body (64 MiB)
/// sent at the slowest rate the client allows (64 KiB/s), takes 17 minutes.
const PENDING_LOST_AFTER: i64 = 30 * 60;

/// Four connections per core, at least 8 and at most 64: a server's hot
/// path does not touch the database (statuses are answered from memory), so
/// the pool serves the writer, the scheduler's claims and misses.
fn default_pool_size() -> u32 {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    u32::try_from(cores * 4).unwrap_or(64).clamp(8, 64)
}

/// Keys and jobs in a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    replica: Replica,
}

/// This server among those sharing the database.
#[derive(Debug, Clone)]
struct Replica {
    /// Names this process in the leases it holds; new at every start.
    id: String,
    lease: Duration,
}

impl Replica {
    /// When a lease taken or renewed now ends, in unix seconds.
    fn lease_until(&self) -> i64 {
        now() + i64::try_from(self.lease.as_secs().max(1)).unwrap_or(i64::MAX / 2)
    }
}

impl PostgresStore {
    /// Connects and migrates (under PostgreSQL's advisory lock, so replicas
    /// starting together migrate once).
    pub async fn open(settings: &PostgresSettings) -> StoreResult<Self> {
        let store = PostgresStore::connect(settings).await?;
        sqlx::migrate!("./migrations-postgres").run(&store.pool).await?;
        Ok(store)
    }

    /// [`PostgresStore::open`] for a command that works beside running
    /// servers (`keys`, `jobs`): it migrates only an empty database, and
    /// refuses one whose schema differs from this build's.
    pub async fn open_beside_server(settings: &PostgresSettings) -> StoreResult<Self> {
        let store = PostgresStore::connect(settings).await?;
        let applied: Result<Vec<i64>, sqlx::Error> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                .fetch_all(&store.pool)
                .await;
        let known: Vec<i64> = sqlx::migrate!("./migrations-postgres").iter().map(|m| m.version).collect();
        match applied {
            Err(_) => {
                sqlx::migrate!("./migrations-postgres").run(&store.pool).await?;
                Ok(store)
            }
            Ok(applied) if applied.iter().any(|v| !known.contains(v)) => Err(StoreError::Invalid(
                "the database was migrated by a newer aimlvid-server; use that version's commands".into(),
            )),
            Ok(applied) if known.iter().any(|v| !applied.contains(v)) => Err(StoreError::Invalid(
                "the database has an older schema than this aimlvid-server; run `aimlvid-server migrate` \
                 (or start this version's `serve`) first"
                    .into(),
            )),
            Ok(_) => Ok(store),
        }
    }

    async fn connect(settings: &PostgresSettings) -> StoreResult<Self> {
        let mut options: PgConnectOptions = settings.url.expose_secret().parse()?;
        options = options.application_name("aimlvid-server");
        if let Some(schema) = &settings.schema {
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections.max(2))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options)
            .await?;
        let replica = Replica { id: uuid::Uuid::new_v4().to_string(), lease: settings.lease };
        Ok(PostgresStore { pool, replica })
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn key_by_name(&self, name: &str) -> StoreResult<Option<KeyRecord>> {
        let row: Option<KeyRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys WHERE name = $1")))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
        row.map(KeyRecord::try_from).transpose()
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn insert_key(&self, key: &NewKey) -> StoreResult<KeyRecord> {
        let inserted: Result<KeyRow, sqlx::Error> = sqlx::query_as(AssertSqlSafe(format!(
            "INSERT INTO keys (name, hash, prefix, allowed_models, rpm, max_unfinished, credit_budget, \
             budget_period, created_at, webhook_url, webhook_secret, webhook_format) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING {KEY_COLUMNS}"
        )))
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
        .fetch_one(&self.pool)
        .await;
        match inserted {
            Ok(row) => row.try_into(),
            Err(e) if is_unique_violation(&e) => {
                Err(StoreError::Conflict(format!("a key named {:?}", key.name)))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn keys(&self) -> StoreResult<Vec<KeyRecord>> {
        let rows: Vec<KeyRow> =
            sqlx::query_as(AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM keys ORDER BY id")))
                .fetch_all(&self.pool)
                .await?;
        records(rows)
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
        let mut tx = self.pool.begin().await?;
        // Replicas may change the key at once: the row is locked until commit.
        let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(sql::key_by_name("FOR UPDATE", MARK)))
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut key = KeyRecord::try_from(row)?;
        for statement in sql::update_key(&mut key, update, webhook_secret, MARK) {
            run(&mut tx, statement).await?;
        }
        tx.commit().await?;
        Ok(Some(key))
    }

    async fn rotate_key(&self, name: &str, hash: &[u8; 32], prefix: &str) -> StoreResult<Option<KeyRecord>> {
        let row: Option<KeyRow> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE keys SET hash = $1, prefix = $2 WHERE name = $3 AND revoked_at IS NULL RETURNING {KEY_COLUMNS}"
        )))
        .bind(hash.as_slice())
        .bind(prefix)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(KeyRecord::try_from).transpose()
    }

    async fn unfinished_counts(&self) -> StoreResult<Option<std::collections::HashMap<KeyId, u32>>> {
        let rows: Vec<(KeyId, i64)> =
            sqlx::query_as("SELECT id, unfinished FROM keys").fetch_all(&self.pool).await?;
        Ok(Some(rows.into_iter().map(|(id, n)| (id, u32::try_from(n).unwrap_or(0))).collect()))
    }

    async fn revoke_key(&self, name: &str) -> StoreResult<Option<KeyRecord>> {
        sqlx::query("UPDATE keys SET revoked_at = COALESCE(revoked_at, $1), enabled = FALSE WHERE name = $2")
            .bind(now())
            .bind(name)
            .execute(&self.pool)
            .await?;
        self.key_by_name(name).await
    }
}

/// One job write inside the batch's transaction. `Ok(Err(_))` is a write
/// refused for good (the batch goes on, from a savepoint, since PostgreSQL
/// aborts a transaction at its first error); `Err(_)` aborts the batch.
/// SQL the backends share is in [`sql`]; what is here keeps each key's
/// places and the job's lease in their rows, for every replica to see.
async fn apply_write(
    tx: &mut Transaction<'_, Postgres>,
    write: &JobWrite,
    now: i64,
    replica: &Replica,
) -> Result<StoreResult<WriteOutcome>, sqlx::Error> {
    let done = Ok(WriteOutcome::Done);
    Ok(match write {
        JobWrite::Begin(_) => begin_many(tx, std::slice::from_ref(write), now)
            .await?
            .pop()
            .unwrap_or_else(|| Err(StoreError::Corrupt("a create went unrecorded".into()))),
        JobWrite::Created { local_id, generation_id, status, body, receipt } => {
            let mut savepoint = sqlx::Connection::begin(&mut **tx).await?;
            // A lost create found after it gave its place back takes it again:
            // the job exists, so it counts, whatever the limits say now.
            sqlx::query(
                "UPDATE keys SET unfinished = keys.unfinished + 1, reserved = keys.reserved + j.reserved \
                 FROM jobs j WHERE j.local_id = $1 AND j.hold_released AND j.generation_id IS NULL \
                 AND keys.id = j.key_id",
            )
            .bind(local_id)
            .execute(&mut *savepoint)
            .await?;
            // The server that created the job follows it: it holds the lease from the start.
            let updated = sqlx::query(
                "UPDATE jobs SET generation_id = $1, status = $2, body = $3, receipt = $4, updated_at = $5, \
                 owner = $7, lease_until = $8, hold_released = FALSE WHERE local_id = $6",
            )
            .bind(generation_id)
            .bind(status)
            .bind(body)
            .bind(receipt)
            .bind(now)
            .bind(local_id)
            .bind(&replica.id)
            .bind(replica.lease_until())
            .execute(&mut *savepoint)
            .await;
            match updated {
                Ok(_) => {
                    savepoint.commit().await?;
                    done
                }
                Err(e) if is_constraint(&e) => {
                    savepoint.rollback().await?;
                    Err(e.into())
                }
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
            let released: Option<(KeyId, f64)> = sqlx::query_as(
                "UPDATE jobs SET hold_released = TRUE, updated_at = $2 \
                 WHERE local_id = $1 AND generation_id IS NULL AND NOT hold_released RETURNING key_id, reserved",
            )
            .bind(local_id)
            .bind(now)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((key_id, reserved)) = released {
                give_place(tx, key_id, reserved).await?;
            }
            Ok(WriteOutcome::HoldReleased(released.is_some()))
        }
        JobWrite::Abandon { local_id } => {
            // One that gave its place back already has none to give.
            let abandoned: Option<(KeyId, Option<f64>)> = sqlx::query_as(
                "DELETE FROM jobs WHERE local_id = $1 AND generation_id IS NULL \
                 RETURNING key_id, CASE WHEN hold_released THEN NULL ELSE reserved END",
            )
            .bind(local_id)
            .fetch_optional(&mut **tx)
            .await?;
            if let Some((key_id, Some(reserved))) = abandoned {
                give_place(tx, key_id, reserved).await?;
            }
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
            let [deliveries, jobs] = sql::prune(*before, *limit, "jobs", MARK);
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
const MARK: page::Mark = page::postgres_mark;

/// Runs a statement written in [`sql`]; the rows it changed.
async fn run(conn: &mut PgConnection, statement: sql::Statement<'_>) -> Result<u64, sqlx::Error> {
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

/// [`JobWrite::Begin`]s in one `INSERT … SELECT FROM UNNEST(…)`; rows that
/// conflict (an Idempotency-Key used before) are then looked up one by one.
async fn begin_many(
    tx: &mut Transaction<'_, Postgres>,
    writes: &[JobWrite],
    now: i64,
) -> Result<Vec<StoreResult<WriteOutcome>>, sqlx::Error> {
    let jobs: Vec<&NewJob> =
        writes.iter().filter_map(|w| if let JobWrite::Begin(j) = w { Some(j) } else { None }).collect();
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO jobs (local_id, key_id, status, model, idempotency_key, request_hash, reserved, \
         created_at, updated_at, prompt, input, params, inline_media, remixed_from) \
         SELECT local_id, key_id, $3, model, idempotency_key, request_hash, reserved, created_at, $7, prompt, \
                input, params, inline_media, remixed_from \
         FROM UNNEST($1::text[], $2::bigint[], $4::text[], $5::text[], $6::bytea[], $8::float8[], \
                     $9::text[], $10::text[], $11::bigint[], $12::text[], $13::text[], $14::text[]) \
             AS j (local_id, key_id, model, idempotency_key, request_hash, reserved, prompt, input, created_at, \
                   params, inline_media, remixed_from) \
         ON CONFLICT DO NOTHING RETURNING local_id",
    )
    .bind(jobs.iter().map(|j| j.local_id.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.key_id).collect::<Vec<_>>())
    .bind(status::PENDING)
    .bind(jobs.iter().map(|j| j.model.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.idempotency_key.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.request_hash.to_vec()).collect::<Vec<_>>())
    .bind(now)
    .bind(jobs.iter().map(|j| j.reserved).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.prompt.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.input.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.created_at).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.params.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.inline_media.clone()).collect::<Vec<_>>())
    .bind(jobs.iter().map(|j| j.remixed_from.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?;
    let inserted: std::collections::HashSet<String> = inserted.into_iter().collect();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        outcomes.push(if inserted.contains(&job.local_id) {
            match take_place(tx, job, now).await? {
                None => Ok(WriteOutcome::Begun(Begun::Inserted)),
                Some(reached) => {
                    sqlx::query("DELETE FROM jobs WHERE local_id = $1")
                        .bind(&job.local_id)
                        .execute(&mut **tx)
                        .await?;
                    Ok(WriteOutcome::Begun(Begun::OverLimit(reached)))
                }
            }
        } else {
            // Conflicts only on the key's Idempotency-Key (local ids are
            // random): the earlier job is the answer.
            let row: Option<JobRecord> = sqlx::query_as(AssertSqlSafe(format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE key_id = $1 AND idempotency_key = $2"
            )))
            .bind(job.key_id)
            .bind(&job.idempotency_key)
            .fetch_optional(&mut **tx)
            .await?;
            match row {
                Some(existing) => Ok(WriteOutcome::Begun(Begun::Existing(Box::new(existing)))),
                None => Err(StoreError::Conflict(format!("a job with local id {:?}", job.local_id))),
            }
        });
    }
    Ok(outcomes)
}

/// What a key has spent towards its budget now: its lifetime spend, or the
/// current period's (`$2`–`$4` are the day's, week's and month's starts).
const SPENT: &str = "(CASE WHEN budget_period IS NULL THEN credits_used \
     WHEN period_start IS NOT DISTINCT FROM \
         (CASE budget_period WHEN 'day' THEN $2::bigint WHEN 'week' THEN $3::bigint ELSE $4::bigint END) \
     THEN period_credits ELSE 0 END)";

/// Takes a place for a new job among its key's unfinished ones and holds
/// its expected cost against the key's budget, in one conditional update of
/// the key's row (which replicas doing the same wait on, then check again);
/// or says which limit leaves no room.
async fn take_place(
    tx: &mut Transaction<'_, Postgres>,
    job: &NewJob,
    now: i64,
) -> Result<Option<LimitReached>, sqlx::Error> {
    let starts = period_starts(now);
    let taken: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "UPDATE keys SET unfinished = unfinished + 1, reserved = reserved + $5::float8 \
         WHERE id = $1 AND (max_unfinished IS NULL OR unfinished < max_unfinished) \
         AND (credit_budget IS NULL OR {SPENT} + reserved + $5::float8 <= credit_budget) RETURNING id"
    )))
    .bind(job.key_id)
    .bind(starts[0])
    .bind(starts[1])
    .bind(starts[2])
    .bind(job.reserved)
    .fetch_optional(&mut **tx)
    .await?;
    if taken.is_some() {
        return Ok(None);
    }
    let (max_unfinished, unfinished, budget, spent, reserved): (Option<i64>, i64, Option<f64>, f64, f64) =
        sqlx::query_as(AssertSqlSafe(format!(
            "SELECT max_unfinished, unfinished, credit_budget, {SPENT}::float8, reserved FROM keys WHERE id = $1"
        )))
        .bind(job.key_id)
        .bind(starts[0])
        .bind(starts[1])
        .bind(starts[2])
        .fetch_one(&mut **tx)
        .await?;
    Ok(Some(match max_unfinished {
        Some(max) if unfinished >= max => LimitReached::Unfinished(u32::try_from(max).unwrap_or(u32::MAX)),
        _ => LimitReached::Budget {
            remaining: (budget.unwrap_or(0.0) - spent - reserved).max(0.0),
            expected: job.reserved,
        },
    }))
}

/// Gives back a job's place and hold on its key.
async fn give_place(
    tx: &mut Transaction<'_, Postgres>,
    key_id: KeyId,
    reserved: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE keys SET unfinished = GREATEST(unfinished - 1, 0), \
         reserved = GREATEST(reserved - $2::float8, 0) WHERE id = $1",
    )
    .bind(key_id)
    .bind(reserved)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The current day's, week's and month's starts, in unix seconds.
fn period_starts(now: i64) -> [i64; 3] {
    [
        super::BudgetPeriod::Day.start_of(now),
        super::BudgetPeriod::Week.start_of(now),
        super::BudgetPeriod::Month.start_of(now),
    ]
}

/// Records a job's end and charges its key, at most once, whichever replica
/// gets there first; queues its webhook.
async fn finish_job(
    tx: &mut Transaction<'_, Postgres>,
    generation_id: &str,
    end: &JobEnd,
    now: i64,
) -> Result<Option<Charged>, sqlx::Error> {
    let ended: Option<(KeyId, f64)> = sqlx::query_as(
        "UPDATE jobs SET status = $1, body = $2, credits_charged = $3, updated_at = $4 \
         WHERE generation_id = $5 AND credits_charged IS NULL RETURNING key_id, reserved",
    )
    .bind(&end.status)
    .bind(&end.body)
    .bind(end.credits)
    .bind(now)
    .bind(generation_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((key_id, reserved)) = ended else { return Ok(None) };
    // Its place and hold give way to the charge.
    give_place(tx, key_id, reserved).await?;
    // The lifetime figure, and the current period's: a charge in a new
    // period starts its count afresh.
    let starts = period_starts(now);
    let (key_credits_used, period, period_start, period_credits): (f64, Option<String>, Option<i64>, f64) =
        sqlx::query_as(
            "UPDATE keys SET credits_used = credits_used + $1::float8, \
             period_credits = CASE WHEN budget_period IS NULL THEN 0 \
                 WHEN period_start IS NOT DISTINCT FROM \
                     (CASE budget_period WHEN 'day' THEN $2::bigint WHEN 'week' THEN $3::bigint ELSE $4::bigint END) \
                 THEN period_credits + $1::float8 ELSE $1::float8 END, \
             period_start = CASE budget_period WHEN 'day' THEN $2::bigint WHEN 'week' THEN $3::bigint \
                 WHEN 'month' THEN $4::bigint END \
             WHERE id = $5 RETURNING credits_used, budget_period, period_start, period_credits",
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
         SELECT replace(gen_random_uuid()::text, '-', ''), 1, id, $1, $2, $3, $4, $5, $5 FROM keys \
         WHERE id = $6 AND webhook_url IS NOT NULL AND revoked_at IS NULL",
    )
    .bind(generation_id)
    .bind(&end.status)
    .bind(&end.announcement)
    .bind(delivery::PENDING)
    .bind(now_ms)
    .bind(key_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(Some(Charged { key_id, webhook_queued: queued > 0, key_credits_used, key_period }))
}

#[async_trait]
impl JobWrites for PostgresStore {
    async fn apply(&self, writes: &[JobWrite]) -> BatchResult {
        let mut tx = self.pool.begin().await?;
        let now = now();
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut rest = writes;
        while let Some(first) = rest.first() {
            // Runs of creates go in one statement: a statement is a round trip.
            let run = rest
                .iter()
                .take_while(|w| std::mem::discriminant(*w) == std::mem::discriminant(first))
                .count();
            let (these, next) = rest.split_at(run);
            rest = next;
            if matches!(first, JobWrite::Begin(_)) {
                outcomes.extend(begin_many(&mut tx, these, now).await?);
                continue;
            }
            for write in these {
                outcomes.push(apply_write(&mut tx, write, now, &self.replica).await?);
            }
        }
        // Other replicas hear of each change when (and only if) it commits.
        let changed: Vec<String> = writes
            .iter()
            .filter_map(|write| match write {
                JobWrite::Created { generation_id, .. }
                | JobWrite::Changed { generation_id, .. }
                | JobWrite::Finished { generation_id, .. }
                | JobWrite::Gone { generation_id, .. }
                | JobWrite::Hide { generation_id } => {
                    Some(format!("{}{CHANGE_SEPARATOR}{generation_id}", self.replica.id))
                }
                _ => None,
            })
            .collect();
        if !changed.is_empty() {
            sqlx::query("SELECT pg_notify($1, change) FROM UNNEST($2::text[]) AS change")
                .bind(JOB_CHANGES)
                .bind(changed)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    }
}

#[async_trait]
impl JobLeases for PostgresStore {
    async fn pending_to_unknown(&self) -> StoreResult<u64> {
        // Other replicas' creates may be in flight right now: only those
        // pending far longer than any create takes were lost with a server.
        let done = sqlx::query(
            "UPDATE jobs SET status = $1, note = $2, updated_at = $3 WHERE status = $4 AND updated_at < $5",
        )
        .bind(status::UNKNOWN)
        .bind("the server stopped while the create was in flight")
        .bind(now())
        .bind(status::PENDING)
        .bind(now() - PENDING_LOST_AFTER)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn take_over_jobs(&self) -> StoreResult<Vec<JobRecord>> {
        // SKIP LOCKED: replicas taking over at once each get different jobs.
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE jobs SET owner = $1, lease_until = $2 WHERE local_id IN ( \
                 SELECT local_id FROM jobs \
                 WHERE generation_id IS NOT NULL AND credits_charged IS NULL \
                 AND (owner IS NULL OR lease_until < $3) \
                 ORDER BY created_at LIMIT 50000 FOR UPDATE SKIP LOCKED) \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(&self.replica.id)
        .bind(self.replica.lease_until())
        .bind(now())
        .fetch_all(&self.pool)
        .await?)
    }

    async fn renew_leases(&self) -> StoreResult<u64> {
        let renewed = sqlx::query(
            "UPDATE jobs SET lease_until = $2 WHERE owner = $1 AND credits_charged IS NULL \
             AND generation_id IS NOT NULL",
        )
        .bind(&self.replica.id)
        .bind(self.replica.lease_until())
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected())
    }

    async fn release_leases(&self) -> StoreResult<()> {
        sqlx::query(
            "UPDATE jobs SET owner = NULL, lease_until = NULL WHERE owner = $1 AND credits_charged IS NULL",
        )
        .bind(&self.replica.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[async_trait]
impl JobReads for PostgresStore {
    async fn job_by_idempotency_key(
        &self,
        key_id: KeyId,
        idempotency_key: &str,
    ) -> StoreResult<Option<JobRecord>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE key_id = $1 AND idempotency_key = $2"
        )))
        .bind(key_id)
        .bind(idempotency_key)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn job_by_generation(&self, generation_id: &str) -> StoreResult<Option<JobRecord>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE generation_id = $1")))
            .bind(generation_id)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn unfinished_jobs(&self) -> StoreResult<Vec<JobRecord>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE generation_id IS NOT NULL AND credits_charged IS NULL"
        )))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn unknown_jobs(&self) -> StoreResult<Vec<JobRecord>> {
        // Leased like a followed job, so that two replicas never both find
        // one lost create and both follow it.
        let mut jobs: Vec<JobRecord> = sqlx::query_as(AssertSqlSafe(format!(
            "UPDATE jobs SET owner = $2, lease_until = $3 WHERE local_id IN ( \
                 SELECT local_id FROM jobs WHERE status = $1 AND generation_id IS NULL \
                 AND (owner IS NULL OR owner = $2 OR lease_until < $4) FOR UPDATE SKIP LOCKED) \
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(status::UNKNOWN)
        .bind(&self.replica.id)
        .bind(self.replica.lease_until())
        .bind(now())
        .fetch_all(&self.pool)
        .await?;
        jobs.sort_by(|a, b| (a.created_at, &a.local_id).cmp(&(b.created_at, &b.local_id)));
        Ok(jobs)
    }

    async fn jobs_needing_attention(&self) -> StoreResult<Vec<JobRecord>> {
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status = $1 ORDER BY created_at, seq"
        )))
        .bind(status::UNKNOWN)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn model_costs(&self) -> StoreResult<Vec<(String, f64, u64)>> {
        let rows: Vec<(String, f64, i64)> = sqlx::query_as(
            "SELECT model, AVG(credits_charged)::float8, COUNT(*) FROM jobs \
             WHERE created_at >= $1 AND credits_charged > 0 GROUP BY model",
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
        Ok(sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE generation_id IS NOT NULL \
             ORDER BY created_at DESC, seq DESC LIMIT $1"
        )))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?)
    }

    fn shared(&self) -> bool {
        true
    }

    async fn job_changes(&self) -> StoreResult<Option<Box<dyn JobChangeFeed>>> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(JOB_CHANGES).await?;
        Ok(Some(Box::new(ChangeFeed { listener, me: self.replica.id.clone() })))
    }

    async fn model_timings(&self) -> StoreResult<Vec<(String, String)>> {
        Ok(sqlx::query_as("SELECT model, timing FROM model_timings ORDER BY model")
            .fetch_all(&self.pool)
            .await?)
    }
}

#[async_trait]
impl WebhookStore for PostgresStore {
    async fn claim_due_webhooks(
        &self,
        now_ms: i64,
        limit: u32,
        skip: &[KeyId],
        lease_until_ms: i64,
    ) -> StoreResult<Vec<DueWebhook>> {
        // SKIP LOCKED: replicas claiming at once each take different rows.
        let mut rows: Vec<DueRow> = sqlx::query_as(
            "UPDATE webhook_deliveries d SET due_at = $4 FROM keys k \
             WHERE k.id = d.key_id AND d.id IN ( \
                 SELECT id FROM webhook_deliveries \
                 WHERE state = $1 AND due_at <= $2 AND NOT (key_id = ANY($5)) \
                 ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             RETURNING d.id, d.delivery_id, d.attempt, d.key_id, d.generation_id, d.event, d.body, \
                 (SELECT MIN(f.created_at) FROM webhook_deliveries f WHERE f.delivery_id = d.delivery_id) \
                     AS queued_at, \
                 CASE WHEN k.revoked_at IS NULL AND k.enabled THEN k.webhook_url END AS url, \
                 k.webhook_secret AS secret, k.webhook_format AS format",
        )
        .bind(delivery::PENDING)
        .bind(now_ms)
        .bind(i64::from(limit))
        .bind(lease_until_ms)
        .bind(skip)
        .fetch_all(&self.pool)
        .await?;
        rows.sort_by_key(DueRow::id);
        records(rows)
    }

    async fn release_webhooks(&self, ids: &[i64], due_ms: i64) -> StoreResult<()> {
        if !ids.is_empty() {
            sqlx::query("UPDATE webhook_deliveries SET due_at = $1 WHERE state = $2 AND id = ANY($3)")
                .bind(due_ms)
                .bind(delivery::PENDING)
                .bind(ids)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn next_webhook_due(&self, skip: &[KeyId]) -> StoreResult<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(due_at) FROM webhook_deliveries WHERE state = $1 AND NOT (key_id = ANY($2))",
        )
        .bind(delivery::PENDING)
        .bind(skip)
        .fetch_one(&self.pool)
        .await?)
    }

    async fn webhook_attempted(&self, id: i64, outcome: &AttemptOutcome) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        let recorded = sqlx::query(
            "UPDATE webhook_deliveries SET state = $1, url = $2, response_status = $3, error = $4, \
             attempted_at = $5, duration_ms = $6 WHERE id = $7 AND state = $8",
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
                 SELECT delivery_id, attempt + 1, key_id, generation_id, event, body, $1, $2, $3 \
                 FROM webhook_deliveries WHERE id = $4",
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
        let rows: Vec<AttemptRow> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {ATTEMPT_COLUMNS} FROM webhook_deliveries WHERE generation_id = $1 ORDER BY id"
        )))
        .bind(generation_id)
        .fetch_all(&self.pool)
        .await?;
        records(rows)
    }
}

#[async_trait]
impl PageStore for PostgresStore {
    async fn job_history(&self, filter: &JobFilter) -> StoreResult<Vec<JobSummary>> {
        let (sql, binds) = page::history(filter, page::postgres_mark);
        let query = sqlx::query_as(AssertSqlSafe(sql));
        let query = binds.into_iter().fold(query, |q, bind| match bind {
            page::Bind::Int(v) => q.bind(v),
            page::Bind::Text(v) => q.bind(v),
        });
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn job_summary(&self, local_id: &str) -> StoreResult<Option<JobSummary>> {
        let sql = page::job_summary(page::postgres_mark);
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(local_id).fetch_optional(&self.pool).await?)
    }

    async fn models_used(&self, key_id: Option<KeyId>) -> StoreResult<Vec<String>> {
        let sql = page::models_used(key_id, page::postgres_mark);
        let query = sqlx::query_scalar(AssertSqlSafe(sql));
        let query = match key_id {
            Some(key) => query.bind(key),
            None => query,
        };
        Ok(query.fetch_all(&self.pool).await?)
    }

    async fn daily_usage(&self, since: i64) -> StoreResult<Vec<DailyUsage>> {
        let rows: Vec<(i64, i64, f64, i64)> =
            sqlx::query_as(AssertSqlSafe(page::daily_usage(page::postgres_mark)))
                .bind(since)
                .fetch_all(&self.pool)
                .await?;
        Ok(page::usage(rows))
    }

    async fn billed_jobs(&self, since: i64) -> StoreResult<Vec<JobSummary>> {
        let sql = page::billed_jobs(page::postgres_mark);
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(since).bind(since).fetch_all(&self.pool).await?)
    }

    async fn generation_summary(&self, generation_id: &str) -> StoreResult<Option<JobSummary>> {
        let sql = page::generation_summary(page::postgres_mark);
        Ok(sqlx::query_as(AssertSqlSafe(sql)).bind(generation_id).fetch_optional(&self.pool).await?)
    }

    async fn failed_deliveries(&self, limit: u32) -> StoreResult<Vec<WebhookAttempt>> {
        let rows: Vec<AttemptRow> =
            sqlx::query_as(AssertSqlSafe(page::failed_deliveries(page::postgres_mark)))
                .bind(delivery::FAILED)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        records(rows)
    }

    async fn insert_session(
        &self,
        token_hash: &[u8; 32],
        session: &PageSession,
        now: i64,
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(AssertSqlSafe(page::expire_sessions(page::postgres_mark)))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(AssertSqlSafe(page::insert_session(page::postgres_mark)))
            .bind(token_hash.as_slice())
            .bind(session.key_id)
            .bind(session.credential_hash.as_slice())
            .bind(&session.csrf)
            .bind(now)
            .bind(session.expires_at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn session(&self, token_hash: &[u8; 32], now: i64) -> StoreResult<Option<PageSession>> {
        let row: Option<page::SessionRow> = sqlx::query_as(AssertSqlSafe(page::session(page::postgres_mark)))
            .bind(token_hash.as_slice())
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
        row.map(PageSession::try_from).transpose()
    }

    async fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
        sqlx::query(AssertSqlSafe(page::delete_session(page::postgres_mark)))
            .bind(token_hash.as_slice())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
