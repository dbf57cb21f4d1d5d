//! The storage suite: every backend behaves the same, checked by running
//! each case on SQLite and on PostgreSQL. The PostgreSQL cases need a
//! database in `AIMLVID_TEST_POSTGRES` (`.ci/run` starts one); without it
//! they say so and pass, so a contributor without PostgreSQL runs the rest.

use secrecy::{ExposeSecret as _, SecretString};

use super::rows::{now, now_ms};
use super::*;

/// The variable that names the test database.
pub(crate) const POSTGRES_ENV: &str = "AIMLVID_TEST_POSTGRES";

/// Applies one write in a transaction of its own.
pub(crate) async fn apply_one<S: JobWrites + ?Sized>(
    store: &S,
    write: JobWrite,
) -> StoreResult<WriteOutcome> {
    store
        .apply(std::slice::from_ref(&write))
        .await?
        .pop()
        .unwrap_or_else(|| Err(StoreError::Corrupt("a write went unanswered".into())))
}

/// One write at a time, for the cases to read simply. Only tests have
/// these: the server writes jobs only through its writer, in batches.
pub(crate) trait JobWritesExt: JobWrites {
    /// [`JobWrite::Begin`].
    async fn begin_job(&self, job: &NewJob) -> StoreResult<Begun> {
        match apply_one(self, JobWrite::Begin(job.clone())).await? {
            WriteOutcome::Begun(begun) => Ok(begun),
            other => Err(StoreError::Corrupt(format!("a create was recorded as {other:?}"))),
        }
    }
    /// [`JobWrite::Created`], without a receipt.
    async fn job_created(
        &self,
        local_id: &str,
        generation_id: &str,
        status: &str,
        body: &str,
    ) -> StoreResult<()> {
        let write = JobWrite::Created {
            local_id: local_id.into(),
            generation_id: generation_id.into(),
            status: status.into(),
            body: body.into(),
            receipt: None,
        };
        apply_one(self, write).await.map(drop)
    }
    /// [`JobWrite::Unknown`].
    async fn job_unknown(&self, local_id: &str, note: &str) -> StoreResult<()> {
        apply_one(self, JobWrite::Unknown { local_id: local_id.into(), note: note.into() }).await.map(drop)
    }
    /// [`JobWrite::Abandon`].
    async fn abandon_job(&self, local_id: &str) -> StoreResult<()> {
        apply_one(self, JobWrite::Abandon { local_id: local_id.into() }).await.map(drop)
    }
    /// [`JobWrite::Changed`].
    async fn job_changed(&self, generation_id: &str, status: &str, body: &str) -> StoreResult<()> {
        let write = JobWrite::Changed {
            generation_id: generation_id.into(),
            status: status.into(),
            body: body.into(),
        };
        apply_one(self, write).await.map(drop)
    }
    /// [`JobWrite::Finished`]: what was charged, or `None` if the job had
    /// already finished.
    async fn job_finished(&self, generation_id: &str, end: &JobEnd) -> StoreResult<Option<Charged>> {
        let write = JobWrite::Finished { generation_id: generation_id.into(), end: end.clone() };
        match apply_one(self, write).await? {
            WriteOutcome::Finished(charged) => Ok(charged),
            other => Err(StoreError::Corrupt(format!("a job's end was recorded as {other:?}"))),
        }
    }
}

impl<S: JobWrites + ?Sized> JobWritesExt for S {}

/// A store to test, and what it takes to reach its tables directly.
pub(crate) enum Backend {
    /// The directory is kept for as long as its database is used.
    Sqlite { _dir: tempfile::TempDir, store: SqliteStore },
    /// Each case gets a schema of its own in the test database.
    Postgres { store: PostgresStore, admin: sqlx::PgPool, schema: String },
}

impl Backend {
    pub(crate) async fn sqlite() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        Backend::Sqlite { _dir: dir, store }
    }

    /// A fresh schema in the test database, or `None` (said once per case) without one.
    pub(crate) async fn postgres() -> Option<Backend> {
        let Ok(url) = std::env::var(POSTGRES_ENV) else {
            eprintln!("skipped: {POSTGRES_ENV} is not set (a postgres:// URL runs these cases)");
            return None;
        };
        let admin = sqlx::PgPool::connect(&url).await.expect("the test database answers");
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
        let settings = PostgresSettings {
            schema: Some(schema.clone()),
            max_connections: 4,
            ..PostgresSettings::new(SecretString::from(url))
        };
        let store = PostgresStore::open(&settings).await.unwrap();
        Some(Backend::Postgres { store, admin, schema })
    }

    /// The whole backend: the suite checks the writes too.
    pub(crate) fn store(&self) -> &dyn super::Backend {
        match self {
            Backend::Sqlite { store, .. } => store,
            Backend::Postgres { store, .. } => store,
        }
    }

    /// Runs `sql` (with `$1` for `value`) on the store's tables.
    pub(crate) async fn exec(&self, sql: &str, value: i64) {
        match self {
            Backend::Sqlite { store, .. } => {
                sqlx::query(sqlx::AssertSqlSafe(sql.replace("$1", "?1")))
                    .bind(value)
                    .execute(&store.writes)
                    .await
                    .unwrap();
            }
            Backend::Postgres { admin, schema, .. } => {
                let mut tx = admin.begin().await.unwrap();
                let path = format!("SET LOCAL search_path TO {schema}");
                sqlx::query(sqlx::AssertSqlSafe(path)).execute(&mut *tx).await.unwrap();
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).bind(value).execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        }
    }

    /// Every key's webhook secret, as stored.
    pub(crate) async fn webhook_secrets(&self) -> Vec<Option<String>> {
        let sql = "SELECT webhook_secret FROM keys ORDER BY id";
        match self {
            Backend::Sqlite { store, .. } => sqlx::query_scalar(sql).fetch_all(&store.pool).await.unwrap(),
            Backend::Postgres { admin, schema, .. } => {
                let sql = format!("SELECT webhook_secret FROM {schema}.keys ORDER BY id");
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(admin).await.unwrap()
            }
        }
    }

    /// Another server on the same database, as a second replica would open it.
    pub(crate) async fn replica(&self) -> Option<PostgresStore> {
        let Backend::Postgres { schema, .. } = self else { return None };
        let url = std::env::var(POSTGRES_ENV).ok()?;
        let settings = PostgresSettings {
            schema: Some(schema.clone()),
            max_connections: 2,
            ..PostgresSettings::new(SecretString::from(url))
        };
        Some(PostgresStore::open(&settings).await.unwrap())
    }

    /// Drops a case's schema once it passed (a failed one is kept to look at).
    pub(crate) async fn finish(self) {
        if let Backend::Postgres { store, admin, schema } = self {
            store.close().await;
            let drop = format!("DROP SCHEMA {schema} CASCADE");
            sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await.unwrap();
        }
    }
}

/// Runs each case on both backends, as `sqlite::case` and `postgres::case`.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let backend = super::Backend::sqlite().await;
                    super::$case(&backend).await;
                    backend.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(backend) = super::Backend::postgres().await else { return };
                    super::$case(&backend).await;
                    backend.finish().await;
                }
            )*
        }
    };
}

on_both!(
    charges_count_towards_the_current_budget_period_only,
    pruning_forgets_old_finished_jobs_but_not_running_ones_or_pending_deliveries,
    keys_round_trip_update_and_revoke,
    a_job_is_charged_once_and_idempotency_keys_find_their_job,
    a_batch_stores_runs_of_creates_together_and_refuses_only_a_bad_row,
    creates_in_flight_at_a_crash_become_unknown,
    a_finished_job_queues_its_webhook_and_each_attempt_queues_the_next,
    a_webhook_url_is_set_only_with_a_secret_and_removed_with_it,
    the_page_lists_a_keys_jobs_newest_first_page_by_page,
    videos_keep_their_parameters_list_oldest_first_and_hide_without_losing_the_job,
    the_page_counts_usage_per_key_per_day_and_finds_deliveries_that_gave_up,
    page_sessions_expire_and_end_when_signed_out,
    an_unknown_create_keeps_its_hold_until_given_back_once,
    a_reconciliation_reads_what_each_job_was_charged_and_reports_each_difference_once,
);

#[tokio::test]
async fn replicas_follow_the_jobs_they_lease_and_take_over_lapsed_ones() {
    let Some(backend) = Backend::postgres().await else { return };
    let (a, b) = (backend.store(), backend.replica().await.unwrap());
    assert!(a.shared() && b.shared() && !Backend::sqlite().await.store().shared());
    let key = a.insert_key(&new_key("k")).await.unwrap();
    a.begin_job(&new_job(key.id)).await.unwrap();
    a.job_created("l1", "g1", "queued", "{}").await.unwrap();

    // The replica that created the job holds it; the other does not get it.
    assert!(b.take_over_jobs().await.unwrap().is_empty());
    assert_eq!(a.renew_leases().await.unwrap(), 1);
    assert_eq!(b.renew_leases().await.unwrap(), 0);
    // Its server died: the lease lapses, and the other replica takes the job over, once.
    backend.exec("UPDATE jobs SET lease_until = $1", now() - 1).await;
    let taken: Vec<_> = b.take_over_jobs().await.unwrap().into_iter().map(|j| j.generation_id).collect();
    assert_eq!(taken, [Some("g1".to_owned())]);
    assert!(b.take_over_jobs().await.unwrap().is_empty() && a.take_over_jobs().await.unwrap().is_empty());
    // A clean stop gives it up at once; a finished job is never taken.
    b.release_leases().await.unwrap();
    assert_eq!(a.take_over_jobs().await.unwrap().len(), 1);
    a.job_finished("g1", &end("completed", 1.0)).await.unwrap();
    backend.exec("UPDATE jobs SET lease_until = $1", now() - 1).await;
    assert!(b.take_over_jobs().await.unwrap().is_empty());

    // Another replica's create in flight is not taken for lost; an old one is.
    let in_flight = NewJob { local_id: "l2".into(), ..new_job(key.id) };
    b.begin_job(&in_flight).await.unwrap();
    assert_eq!(a.pending_to_unknown().await.unwrap(), 0);
    backend.exec("UPDATE jobs SET updated_at = $1 WHERE local_id = 'l2'", now() - 3600).await;
    assert_eq!(a.pending_to_unknown().await.unwrap(), 1);
    // One replica at a time looks a lost create up.
    assert_eq!(a.unknown_jobs().await.unwrap().len(), 1);
    assert!(b.unknown_jobs().await.unwrap().is_empty());
    assert_eq!(a.unknown_jobs().await.unwrap().len(), 1, "still this replica's");
    b.close().await;
    backend.finish().await;
}

#[tokio::test]
async fn a_shared_store_holds_each_key_to_its_limits_itself() {
    let Some(backend) = Backend::postgres().await else { return };
    let (a, b) = (backend.store(), backend.replica().await.unwrap());
    let mut limited = new_key("capped");
    limited.limits.max_unfinished = Some(2);
    limited.limits.credit_budget = Some(10.0);
    let key = a.insert_key(&limited).await.unwrap();
    let job = |local: &str| NewJob { local_id: local.into(), reserved: 4.0, ..new_job(key.id) };

    // Two places, taken on two replicas; a third is refused on either.
    assert_eq!(a.begin_job(&job("j1")).await.unwrap(), Begun::Inserted);
    assert_eq!(b.begin_job(&job("j2")).await.unwrap(), Begun::Inserted);
    assert_eq!(a.begin_job(&job("j3")).await.unwrap(), Begun::OverLimit(LimitReached::Unfinished(2)));
    assert!(a.job_by_idempotency_key(key.id, "none").await.unwrap().is_none());
    // One ends, charged 3: 3 spent and 4 held leave 3, short of another 4.
    a.job_created("j1", "g1", "queued", "{}").await.unwrap();
    a.job_finished("g1", &end("completed", 3.0)).await.unwrap();
    let refused = b.begin_job(&job("j4")).await.unwrap();
    assert_eq!(refused, Begun::OverLimit(LimitReached::Budget { remaining: 3.0, expected: 4.0 }));
    // A create the upstream refused gives its place and hold back.
    a.abandon_job("j2").await.unwrap();
    assert_eq!(b.begin_job(&job("j5")).await.unwrap(), Begun::Inserted);
    b.close().await;
    backend.finish().await;
}

/// A key named `name` with no limits, for other modules' tests.
pub(crate) fn test_key(name: &str) -> NewKey {
    new_key(name)
}

fn new_key(name: &str) -> NewKey {
    NewKey {
        name: name.into(),
        hash: [name.len() as u8; 32],
        prefix: "amv_x".into(),
        limits: KeyLimits::default(),
        webhook: None,
        webhook_format: WebhookFormat::Aimlvid,
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
        reserved: 0.0,
        prompt: None,
        input: None,
        created_at: now(),
        params: None,
        inline_media: None,
        remixed_from: None,
    }
}

/// A create whose outcome is unknown may be billed: it keeps its key's place
/// and reservation until it is resolved. Past the lookup window it gives them
/// back once; found after that, it takes them again; refused then, it gives
/// nothing back twice. (A shared store counts places itself, so there the
/// limits show it; a store of one server only marks the job, and the server
/// counts.)
async fn an_unknown_create_keeps_its_hold_until_given_back_once(b: &Backend) {
    let store = b.store();
    let mut capped = new_key("capped");
    capped.limits.max_unfinished = Some(2);
    capped.limits.credit_budget = Some(1000.0);
    let key = store.insert_key(&capped).await.unwrap();
    let job = |local: &str| NewJob { local_id: local.into(), reserved: 6.0, ..new_job(key.id) };
    let full = Begun::OverLimit(LimitReached::Unfinished(2));
    let release = |local: &str| JobWrite::ReleaseHold { local_id: local.into() };
    // A running job holds one place.
    assert_eq!(store.begin_job(&job("running")).await.unwrap(), Begun::Inserted);
    store.job_created("running", "g-running", "queued", "{}").await.unwrap();

    // A create whose answer was lost holds the other.
    assert_eq!(store.begin_job(&job("lost")).await.unwrap(), Begun::Inserted);
    store.job_unknown("lost", "the answer was lost").await.unwrap();
    if store.shared() {
        assert_eq!(store.begin_job(&job("over")).await.unwrap(), full);
    }
    let unknown = store.unknown_jobs().await.unwrap();
    assert_eq!(
        unknown.iter().map(|j| (j.local_id.as_str(), j.hold_released)).collect::<Vec<_>>(),
        [("lost", false)]
    );

    // The lookup window passed: given back once, and still looked up.
    assert_eq!(apply_one(store, release("lost")).await.unwrap(), WriteOutcome::HoldReleased(true));
    assert_eq!(apply_one(store, release("lost")).await.unwrap(), WriteOutcome::HoldReleased(false));
    let unknown = store.unknown_jobs().await.unwrap();
    assert_eq!(
        unknown.iter().map(|j| (j.local_id.as_str(), j.hold_released)).collect::<Vec<_>>(),
        [("lost", true)]
    );
    if store.shared() {
        assert_eq!(store.begin_job(&job("fits")).await.unwrap(), Begun::Inserted);
        store.abandon_job("fits").await.unwrap();
    }

    // Found after all: it counts again, and its end gives the place back once.
    store.job_created("lost", "g-lost", "queued", "{}").await.unwrap();
    if store.shared() {
        assert_eq!(store.begin_job(&job("over")).await.unwrap(), full);
    }
    assert_eq!(apply_one(store, release("lost")).await.unwrap(), WriteOutcome::HoldReleased(false), "found");
    store.job_finished("g-lost", &end("completed", 6.0)).await.unwrap();

    // One refused after giving its place back gives nothing back twice.
    assert_eq!(store.begin_job(&job("refused")).await.unwrap(), Begun::Inserted);
    store.job_unknown("refused", "the answer was lost").await.unwrap();
    assert_eq!(apply_one(store, release("refused")).await.unwrap(), WriteOutcome::HoldReleased(true));
    store.abandon_job("refused").await.unwrap();
    if store.shared() {
        // `running` holds one place; one more fits, and no third.
        assert_eq!(store.begin_job(&job("second")).await.unwrap(), Begun::Inserted);
        assert_eq!(store.begin_job(&job("third")).await.unwrap(), full);
    }
}

/// What a reconciliation reads of the jobs: those with a generation that
/// ended or began in the window, any other by its generation, and the
/// lost creates; set against a ledger with three planted differences, each
/// is reported once.
async fn a_reconciliation_reads_what_each_job_was_charged_and_reports_each_difference_once(b: &Backend) {
    use crate::reconcile::{FindingKind, Inputs, compare, test_charge};
    let store = b.store();
    let key = store.insert_key(&new_key("ana")).await.unwrap();
    let job = |local: &str| NewJob { local_id: local.into(), ..new_job(key.id) };
    for (local, generation, credits) in
        [("ok", "g-ok", 6.0), ("differs", "g-differs", 6.0), ("old", "g-old", 4.0)]
    {
        store.begin_job(&job(local)).await.unwrap();
        store.job_created(local, generation, "queued", "{}").await.unwrap();
        store.job_finished(generation, &end("completed", credits)).await.unwrap();
    }
    store.begin_job(&job("running")).await.unwrap();
    store.job_created("running", "g-running", "generating", "{}").await.unwrap();
    store.begin_job(&job("lost")).await.unwrap();
    store.job_unknown("lost", "the answer was lost").await.unwrap();
    // `old` began and ended a day before the window.
    b.exec("UPDATE jobs SET created_at = $1, updated_at = $1 WHERE local_id = 'old'", now() - 2 * 86_400)
        .await;

    let since = now() - 86_400;
    let mut billed = store.billed_jobs(since).await.unwrap();
    billed.sort_by(|a, b| a.local_id.cmp(&b.local_id));
    let listed: Vec<_> = billed.iter().map(|j| (j.local_id.as_str(), j.credits_charged)).collect();
    assert_eq!(listed, [("differs", Some(6.0)), ("ok", Some(6.0)), ("running", None)]);
    let old = store.generation_summary("g-old").await.unwrap().expect("found by its generation");
    assert_eq!((old.local_id.as_str(), old.credits_charged), ("old", Some(4.0)));
    assert_eq!(store.generation_summary("g-nobody").await.unwrap(), None);
    billed.push(old);

    let charges = [
        test_charge("g-ok", 6),
        test_charge("g-differs", 9),
        test_charge("g-old", 4),
        test_charge("g-lost", 5),
        test_charge("g-outside", 7),
    ];
    let lost: std::collections::HashMap<_, _> =
        store.unknown_jobs().await.unwrap().into_iter().map(|j| ("g-lost".to_owned(), j)).collect();
    let names = std::collections::HashMap::from([(key.id, "ana".to_owned())]);
    let until = now() + crate::reconcile::LEDGER_GRACE.as_secs() as i64 + 1;
    let report =
        compare(&Inputs { jobs: &billed, charges: &charges, lost: &lost, names: &names, since, until });
    let found: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.kind, f.generation_id.as_str(), f.local_id.as_deref(), f.key.as_deref()))
        .collect();
    assert_eq!(
        found,
        [
            (FindingKind::LostCreate, "g-lost", Some("lost"), Some("ana")),
            (FindingKind::ChargedOutside, "g-outside", None, None),
            (FindingKind::ChargedDifferently, "g-differs", Some("differs"), Some("ana")),
        ]
    );
    // The proxy's spend counts the jobs that ended in the window; the ledger's, every charge in it.
    assert_eq!((report.total.proxy_credits, report.total.ledger_credits), (12.0, 31));
}

fn end(status: &str, credits: f64) -> JobEnd {
    JobEnd { status: status.into(), body: "{}".into(), credits, announcement: "{\"id\":\"g1\"}".into() }
}

async fn charges_count_towards_the_current_budget_period_only(b: &Backend) {
    let store = b.store();
    let mut key = new_key("pat");
    key.limits.budget_period = Some(crate::store::BudgetPeriod::Day);
    let key = store.insert_key(&key).await.unwrap();
    let finish = |local: &'static str, generation: &'static str, credits: f64| async move {
        store.begin_job(&NewJob { local_id: local.into(), ..new_job(key.id) }).await.unwrap();
        store.job_created(local, generation, "queued", "{}").await.unwrap();
        store.job_finished(generation, &end("completed", credits)).await.unwrap().unwrap()
    };
    let today = crate::store::BudgetPeriod::Day.start_of(now());
    assert_eq!(finish("a", "ga", 5.0).await.key_period, Some((today, 5.0)));
    assert_eq!(finish("b", "gb", 7.0).await.key_period, Some((today, 12.0)));
    // The period turned over since: the next charge starts it afresh.
    b.exec("UPDATE keys SET period_start = period_start - 86400 WHERE id = $1", key.id).await;
    let charged = finish("c", "gc", 3.0).await;
    assert_eq!(charged.key_period, Some((today, 3.0)));
    assert_eq!(charged.key_credits_used, 15.0, "the lifetime figure keeps counting");
    let stored = store.keys().await.unwrap().into_iter().find(|k| k.id == key.id).unwrap();
    assert_eq!((stored.period_start, stored.period_credits), (Some(today), 3.0));
}

async fn pruning_forgets_old_finished_jobs_but_not_running_ones_or_pending_deliveries(b: &Backend) {
    let store = b.store();
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
    b.exec(
        "INSERT INTO webhook_deliveries (delivery_id, attempt, key_id, generation_id, event, body, state, \
         due_at, created_at) VALUES ('x', 1, $1, 'old-pending', 'completed', '{}', 'pending', 0, 0)",
        key.id,
    )
    .await;
    let month_ago = now() - 40 * 86_400;
    b.exec("UPDATE jobs SET created_at = $1 WHERE generation_id LIKE 'old-%'", month_ago).await;
    let outcome = store.apply(&[JobWrite::Prune { before: now() - 30 * 86_400, limit: 100 }]).await.unwrap();
    assert!(matches!(outcome[0], Ok(WriteOutcome::Pruned(1))), "{outcome:?}");
    assert!(store.job_by_generation("old-done").await.unwrap().is_none());
    for kept in ["old-running", "new-done", "old-pending"] {
        assert!(store.job_by_generation(kept).await.unwrap().is_some(), "{kept}");
    }
    let keys = store.keys().await.unwrap();
    assert_eq!(keys[0].credits_used, 3.0, "charges stay on the key");
}

async fn keys_round_trip_update_and_revoke(b: &Backend) {
    let store = b.store();
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

async fn a_job_is_charged_once_and_idempotency_keys_find_their_job(b: &Backend) {
    let store = b.store();
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
    let charged = Charged { key_id: key.id, webhook_queued: false, key_credits_used: 5.0, key_period: None };
    assert_eq!(store.job_finished("g1", &end("completed", 5.0)).await.unwrap(), Some(charged));
    assert_eq!(store.job_finished("g1", &end("completed", 5.0)).await.unwrap(), None);
    store.job_changed("g1", "generating", "{}").await.unwrap();
    let done = store.job_by_generation("g1").await.unwrap().unwrap();
    assert_eq!((done.status.as_str(), done.credits_charged), ("completed", Some(5.0)));
    assert!(store.unfinished_jobs().await.unwrap().is_empty());
    assert_eq!(store.keys().await.unwrap()[0].credits_used, 5.0);
}

async fn a_batch_stores_runs_of_creates_together_and_refuses_only_a_bad_row(b: &Backend) {
    let store = b.store();
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
    let Ok(WriteOutcome::Begun(Begun::Existing(first))) = &outcomes[2] else { panic!("{:?}", outcomes[2]) };
    assert_eq!(first.local_id, "a", "the same Idempotency-Key finds the first job");
    assert!(matches!(outcomes[3], Ok(WriteOutcome::Begun(Begun::Inserted))));

    // `d` claims `b`'s upstream id: a broken rule, refused alone.
    let outcomes = store.apply(&[created("a", "g1"), created("b", "g2"), created("d", "g2")]).await.unwrap();
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    assert!(matches!(outcomes[2], Err(StoreError::Backend(_))), "{outcomes:?}");
    assert_eq!(store.job_by_generation("g1").await.unwrap().unwrap().local_id, "a");
    assert_eq!(store.job_by_generation("g2").await.unwrap().unwrap().local_id, "b");
    let outcomes = store.apply(&[created("d", "g3"), created("c", "g4")]).await.unwrap();
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(store.unfinished_jobs().await.unwrap().len(), 3, "c was never inserted, so has no row");
}

async fn creates_in_flight_at_a_crash_become_unknown(b: &Backend) {
    let store = b.store();
    let key = store.insert_key(&new_key("k")).await.unwrap();
    let job = new_job(key.id);
    store.begin_job(&job).await.unwrap();
    // Left pending since well before now (PostgreSQL, shared by replicas,
    // counts only such old ones as lost; SQLite's one server, every one).
    b.exec("UPDATE jobs SET updated_at = $1", now() - 3600).await;
    assert_eq!(store.pending_to_unknown().await.unwrap(), 1);
    assert!(store.unfinished_jobs().await.unwrap().is_empty(), "an unknown job has no id to poll");
    assert_eq!(store.pending_to_unknown().await.unwrap(), 0);
}

async fn a_finished_job_queues_its_webhook_and_each_attempt_queues_the_next(b: &Backend) {
    let store = b.store();
    let mut with_hook = new_key("hooked");
    with_hook.webhook =
        Some(Webhook { url: "http://127.0.0.1:9/hook".into(), secret: "whsec_s".to_owned().into() });
    with_hook.webhook_format = WebhookFormat::Openai;
    let key = store.insert_key(&with_hook).await.unwrap();
    assert_eq!(key.webhook_url.as_deref(), Some("http://127.0.0.1:9/hook"));
    assert_eq!(key.webhook_format, WebhookFormat::Openai);
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
    assert_eq!((first.event.as_str(), first.format), ("completed", WebhookFormat::Openai));
    assert!((now_ms() - first.queued_at_ms).abs() < 60_000, "queued just now: {}", first.queued_at_ms);
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

    // The format is the key's when the attempt is claimed; the queuing time is the delivery's.
    let plain = KeyUpdate { webhook_format: Some(WebhookFormat::Aimlvid), ..KeyUpdate::default() };
    let updated = store.update_key("hooked", &plain, None).await.unwrap().unwrap();
    assert_eq!(updated.webhook_format, WebhookFormat::Aimlvid);
    let retry = store.claim_due_webhooks(retry_at, 10, &[], lease).await.unwrap();
    assert_eq!((retry[0].attempt, retry[0].format), (2, WebhookFormat::Aimlvid));
    assert_eq!(retry[0].queued_at_ms, first.queued_at_ms, "the same on every attempt");
    assert_eq!(retry[0].target.as_ref().unwrap().secret.expose_secret(), "whsec_s", "the secret stays");
    store.release_webhooks(&[retry[0].id], retry_at).await.unwrap();

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

async fn a_webhook_url_is_set_only_with_a_secret_and_removed_with_it(b: &Backend) {
    let store = b.store();
    store.insert_key(&new_key("k")).await.unwrap();
    let set: KeyUpdate = serde_json::from_str(r#"{"webhook_url": "https://example.com/h"}"#).unwrap();
    assert!(matches!(store.update_key("k", &set, None).await, Err(StoreError::Invalid(_))));
    let secret = SecretString::from("whsec_new".to_owned());
    let updated = store.update_key("k", &set, Some(&secret)).await.unwrap().unwrap();
    assert_eq!(updated.webhook_url.as_deref(), Some("https://example.com/h"));
    let remove: KeyUpdate = serde_json::from_str(r#"{"webhook_url": null}"#).unwrap();
    let updated = store.update_key("k", &remove, None).await.unwrap().unwrap();
    assert_eq!(updated.webhook_url, None);
    assert_eq!(b.webhook_secrets().await, [None], "the secret goes with its URL");
}

async fn the_page_lists_a_keys_jobs_newest_first_page_by_page(b: &Backend) {
    let store = b.store();
    let (a, other) =
        (store.insert_key(&new_key("a")).await.unwrap(), store.insert_key(&new_key("other")).await.unwrap());
    for i in 0..5 {
        let job = NewJob {
            local_id: format!("a{i}"),
            model: if i % 2 == 0 { "even".into() } else { "odd".into() },
            prompt: Some(format!("prompt {i}")),
            input: Some("https://example.com/in.mp4".into()),
            ..new_job(a.id)
        };
        store.begin_job(&job).await.unwrap();
    }
    store.begin_job(&NewJob { local_id: "o1".into(), ..new_job(other.id) }).await.unwrap();
    // Two created in the same second: the id breaks the tie, so no page skips one.
    b.exec("UPDATE jobs SET created_at = 1000 + (CASE WHEN local_id IN ('a3', 'a4') THEN 3 ELSE 0 END)", 0)
        .await;
    store.job_created("a1", "g1", "queued", "{}").await.unwrap();

    let mut filter = JobFilter { key_id: Some(a.id), limit: 2, ..JobFilter::default() };
    let mut seen = Vec::new();
    loop {
        let page = store.job_history(&filter).await.unwrap();
        let Some(last) = page.last() else { break };
        filter.before = Some((last.created_at, last.local_id.clone()));
        seen.extend(page.into_iter().map(|j| j.local_id));
    }
    assert_eq!(seen, ["a4", "a3", "a2", "a1", "a0"]);

    let odd = JobFilter { key_id: Some(a.id), model: Some("odd".into()), limit: 10, ..JobFilter::default() };
    let odd: Vec<_> = store.job_history(&odd).await.unwrap().into_iter().map(|j| j.local_id).collect();
    assert_eq!(odd, ["a3", "a1"]);
    let queued = JobFilter { status: Some("queued".into()), limit: 10, ..JobFilter::default() };
    let queued = store.job_history(&queued).await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(
        (queued[0].generation_id.as_deref(), queued[0].prompt.as_deref(), queued[0].input.as_deref()),
        (Some("g1"), Some("prompt 1"), Some("https://example.com/in.mp4"))
    );
    let everyone = store.job_history(&JobFilter { limit: 10, ..JobFilter::default() }).await.unwrap();
    assert_eq!(everyone.len(), 6);
    assert_eq!(store.job_summary("o1").await.unwrap().map(|j| j.key_id), Some(other.id));
    assert_eq!(store.job_summary("nope").await.unwrap(), None);
    assert_eq!(store.models_used(Some(a.id)).await.unwrap(), ["even", "odd"]);
    assert_eq!(store.models_used(None).await.unwrap(), ["even", "m", "odd"]);
}

async fn videos_keep_their_parameters_list_oldest_first_and_hide_without_losing_the_job(b: &Backend) {
    let store = b.store();
    let a = store.insert_key(&new_key("a")).await.unwrap();
    for i in 0..4 {
        let job = NewJob {
            local_id: format!("v{i}"),
            created_at: 1000 + i64::from(i / 2),
            params: Some(format!(r#"{{"model":"m","prompt":"p{i}","image_url":null}}"#)),
            inline_media: Some("image_url".into()),
            remixed_from: (i > 0).then(|| "g-v0".into()),
            ..new_job(a.id)
        };
        store.begin_job(&job).await.unwrap();
        if i < 3 {
            store.job_created(&job.local_id, &format!("g-v{i}"), "queued", "{}").await.unwrap();
        }
    }
    // v3 has no generation id: it is no video (yet).
    let videos = |after: Option<(i64, String)>| JobFilter {
        key_id: Some(a.id),
        after,
        oldest_first: true,
        accepted_only: true,
        visible_only: true,
        limit: 2,
        ..JobFilter::default()
    };
    let first = store.job_history(&videos(None)).await.unwrap();
    let ids: Vec<_> = first.iter().map(|j| j.local_id.as_str()).collect();
    assert_eq!(ids, ["v0", "v1"]);
    assert_eq!((first[0].created_at, first[1].remixed_from.as_deref()), (1000, Some("g-v0")));
    assert_eq!(first[1].params.as_deref(), Some(r#"{"model":"m","prompt":"p1","image_url":null}"#));
    assert_eq!(first[1].inline_media.as_deref(), Some("image_url"));
    let last = &first[1];
    let rest = store.job_history(&videos(Some((last.created_at, last.local_id.clone())))).await.unwrap();
    assert_eq!(rest.iter().map(|j| j.local_id.as_str()).collect::<Vec<_>>(), ["v2"]);

    let hide = JobWrite::Hide { generation_id: "g-v1".into() };
    assert_eq!(apply_one(store, hide.clone()).await.unwrap(), WriteOutcome::Done);
    let hidden_at = store.generation_summary("g-v1").await.unwrap().unwrap().hidden_at;
    assert!(hidden_at.is_some_and(|at| at >= now() - 60));
    b.exec("UPDATE jobs SET hidden_at = $1 WHERE local_id = 'v1'", 5).await;
    apply_one(store, hide).await.unwrap();
    let job = store.job_by_generation("g-v1").await.unwrap().unwrap();
    assert_eq!(job.hidden_at, Some(5), "the first deletion's time stays");
    assert_eq!(job.remixed_from.as_deref(), Some("g-v0"));
    let shown = store.job_history(&videos(None)).await.unwrap();
    assert_eq!(shown.iter().map(|j| j.local_id.as_str()).collect::<Vec<_>>(), ["v0", "v2"]);
    let all = store.job_history(&JobFilter { limit: 10, ..JobFilter::default() }).await.unwrap();
    assert_eq!(all.len(), 4, "the admin's listing keeps every job");
}

async fn the_page_counts_usage_per_key_per_day_and_finds_deliveries_that_gave_up(b: &Backend) {
    let store = b.store();
    let mut hooked = new_key("a");
    hooked.webhook =
        Some(Webhook { url: "http://127.0.0.1:9/h".into(), secret: "whsec_s".to_owned().into() });
    let a = store.insert_key(&hooked).await.unwrap();
    let o = store.insert_key(&new_key("other")).await.unwrap();
    for (local, key, credits) in [("l1", a.id, 2.0), ("l2", a.id, 3.0), ("l3", o.id, 7.0), ("l4", a.id, 1.0)]
    {
        store.begin_job(&NewJob { local_id: local.into(), ..new_job(key) }).await.unwrap();
        store.job_created(local, &format!("g-{local}"), "queued", "{}").await.unwrap();
        store.job_finished(&format!("g-{local}"), &end("completed", credits)).await.unwrap();
    }
    // l4 was made the day before.
    let day = 86_400 * 20_000;
    b.exec("UPDATE jobs SET created_at = $1 + (CASE WHEN local_id = 'l4' THEN -86400 ELSE 60 END)", day)
        .await;
    let usage = store.daily_usage(day - 86_400).await.unwrap();
    let rows: Vec<_> = usage.iter().map(|u| (u.key_id, u.day, u.credits, u.jobs)).collect();
    assert_eq!(rows, [(a.id, day - 86_400, 1.0, 1), (a.id, day, 5.0, 2), (o.id, day, 7.0, 1)]);
    assert_eq!(store.daily_usage(day).await.unwrap().len(), 2, "older days are left out");

    // A delivery that will be tried again is not given up; its last failure is.
    let due = store.claim_due_webhooks(now_ms() + 1000, 10, &[], now_ms() + 30_000).await.unwrap();
    assert_eq!(due.len(), 3);
    let failed = |retry_at_ms| AttemptOutcome {
        state: delivery::FAILED,
        url: Some("http://127.0.0.1:9/h".into()),
        response_status: Some(500),
        error: Some("answered 500".into()),
        attempted_at_ms: now_ms(),
        duration_ms: 3,
        retry_at_ms,
    };
    store.webhook_attempted(due[0].id, &failed(Some(now_ms() + 60_000))).await.unwrap();
    store.webhook_attempted(due[1].id, &failed(None)).await.unwrap();
    let gave_up = store.failed_deliveries(10).await.unwrap();
    assert_eq!(gave_up.len(), 1);
    assert_eq!(
        (gave_up[0].generation_id.as_str(), gave_up[0].response_status),
        (due[1].generation_id.as_str(), Some(500))
    );
}

async fn page_sessions_expire_and_end_when_signed_out(b: &Backend) {
    let store = b.store();
    let key = store.insert_key(&new_key("a")).await.unwrap();
    let now = now();
    let member = PageSession {
        key_id: Some(key.id),
        credential_hash: [1; 32],
        csrf: "c1".into(),
        expires_at: now + 60,
    };
    let admin =
        PageSession { key_id: None, credential_hash: [2; 32], csrf: "c2".into(), expires_at: now + 60 };
    store.insert_session(&[10; 32], &member, now).await.unwrap();
    store.insert_session(&[11; 32], &admin, now).await.unwrap();
    assert_eq!(store.session(&[10; 32], now).await.unwrap(), Some(member.clone()));
    assert_eq!(store.session(&[11; 32], now).await.unwrap(), Some(admin));
    assert_eq!(store.session(&[12; 32], now).await.unwrap(), None);
    assert_eq!(store.session(&[10; 32], now + 61).await.unwrap(), None, "expired");
    store.delete_session(&[11; 32]).await.unwrap();
    assert_eq!(store.session(&[11; 32], now).await.unwrap(), None, "signed out");
    // Signing in later forgets the expired ones.
    store.insert_session(&[12; 32], &member, now + 61).await.unwrap();
    assert_eq!(store.session(&[10; 32], now).await.unwrap(), None, "deleted once expired");
}
