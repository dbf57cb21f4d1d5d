//! Job and key writes whose SQL both backends agree on, written once as
//! [`page`](super::page) writes its queries: each takes the backend's
//! placeholder style ([`Mark`]) and lists its values in binding order, and
//! each backend runs the [`Statement`] with its own `run`. What stays in a
//! backend differs there in how it locks, counts or returns rows.

use secrecy::{ExposeSecret as _, SecretString};

use super::page::Mark;
use super::rows::{FINISHED, KEY_COLUMNS, models_json};
use super::{KeyRecord, KeyUpdate, StoreError, StoreResult, status};

/// A value to bind, borrowed where it can be (a job's body can be large).
#[derive(Debug, PartialEq)]
pub(super) enum Value<'a> {
    Int(i64),
    Text(&'a str),
    OptInt(Option<i64>),
    OptReal(Option<f64>),
    OptText(Option<&'a str>),
    OptString(Option<String>),
    Bool(bool),
}

/// SQL and its values, in binding order.
#[derive(Debug, PartialEq)]
pub(super) struct Statement<'a> {
    pub(super) sql: String,
    pub(super) values: Vec<Value<'a>>,
}

/// Writes a statement: each value is bound as it is marked, so the two
/// cannot drift apart.
struct Writer<'a> {
    mark: Mark,
    values: Vec<Value<'a>>,
}

impl<'a> Writer<'a> {
    fn new(mark: Mark) -> Self {
        Writer { mark, values: Vec::new() }
    }

    /// Binds `value`; its placeholder goes where it is used.
    fn bind(&mut self, value: Value<'a>) -> String {
        self.values.push(value);
        (self.mark)(self.values.len())
    }

    fn statement(self, sql: String) -> Statement<'a> {
        Statement { sql, values: self.values }
    }
}

/// [`JobWrite::Unknown`](super::JobWrite::Unknown).
pub(super) fn unknown<'a>(local_id: &'a str, note: &'a str, now: i64, mark: Mark) -> Statement<'a> {
    let mut w = Writer::new(mark);
    let sql = format!(
        "UPDATE jobs SET status = {}, note = {}, updated_at = {} WHERE local_id = {}",
        w.bind(Value::Text(status::UNKNOWN)),
        w.bind(Value::Text(note)),
        w.bind(Value::Int(now)),
        w.bind(Value::Text(local_id)),
    );
    w.statement(sql)
}

/// [`JobWrite::Gone`](super::JobWrite::Gone): a finished job stays finished.
pub(super) fn gone<'a>(generation_id: &'a str, note: &'a str, now: i64, mark: Mark) -> Statement<'a> {
    let mut w = Writer::new(mark);
    let sql = format!(
        "UPDATE jobs SET status = {}, note = {}, updated_at = {} WHERE generation_id = {} AND status NOT IN {FINISHED}",
        w.bind(Value::Text(status::UNKNOWN)),
        w.bind(Value::Text(note)),
        w.bind(Value::Int(now)),
        w.bind(Value::Text(generation_id)),
    );
    w.statement(sql)
}

/// [`JobWrite::Hide`](super::JobWrite::Hide): the first hiding's time stays.
pub(super) fn hide(generation_id: &str, now: i64, mark: Mark) -> Statement<'_> {
    let mut w = Writer::new(mark);
    let sql = format!(
        "UPDATE jobs SET hidden_at = {} WHERE generation_id = {} AND hidden_at IS NULL",
        w.bind(Value::Int(now)),
        w.bind(Value::Text(generation_id)),
    );
    w.statement(sql)
}

/// [`JobWrite::Changed`](super::JobWrite::Changed). Never moves a finished
/// job back: a late, reordered answer must not undo its end.
pub(super) fn changed<'a>(
    generation_id: &'a str,
    status: &'a str,
    body: &'a str,
    now: i64,
    mark: Mark,
) -> Statement<'a> {
    let mut w = Writer::new(mark);
    let sql = format!(
        "UPDATE jobs SET status = {}, body = {}, updated_at = {} WHERE generation_id = {} AND status NOT IN {FINISHED}",
        w.bind(Value::Text(status)),
        w.bind(Value::Text(body)),
        w.bind(Value::Int(now)),
        w.bind(Value::Text(generation_id)),
    );
    w.statement(sql)
}

/// [`JobWrite::Prune`](super::JobWrite::Prune): the deliveries of up to
/// `limit` finished jobs created before `before`, then the jobs, keeping
/// those with a delivery still pending. `jobs` names the table as the
/// backend reads it in `created_at` order (SQLite names its index).
pub(super) fn prune(before: i64, limit: u32, jobs: &str, mark: Mark) -> [Statement<'static>; 2] {
    let doomed = |w: &mut Writer<'static>| {
        format!(
            "SELECT generation_id FROM {jobs} WHERE created_at < {} AND credits_charged IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                 WHERE d.generation_id = jobs.generation_id AND d.state = 'pending') \
             ORDER BY created_at LIMIT {}",
            w.bind(Value::Int(before)),
            w.bind(Value::Int(i64::from(limit))),
        )
    };
    let mut w = Writer::new(mark);
    let deliveries = format!("DELETE FROM webhook_deliveries WHERE generation_id IN ({})", doomed(&mut w));
    let deliveries = w.statement(deliveries);
    let mut w = Writer::new(mark);
    let pruned = format!("DELETE FROM jobs WHERE generation_id IN ({})", doomed(&mut w));
    [deliveries, w.statement(pruned)]
}

/// [`JobWrite::ModelTiming`](super::JobWrite::ModelTiming).
pub(super) fn model_timing<'a>(model: &'a str, timing: &'a str, now: i64, mark: Mark) -> Statement<'a> {
    let mut w = Writer::new(mark);
    let sql = format!(
        "INSERT INTO model_timings (model, timing, updated_at) VALUES ({}, {}, {}) \
         ON CONFLICT (model) DO UPDATE SET timing = excluded.timing, updated_at = excluded.updated_at",
        w.bind(Value::Text(model)),
        w.bind(Value::Text(timing)),
        w.bind(Value::Int(now)),
    );
    w.statement(sql)
}

/// A key by name; `lock` is how the backend holds the row until its
/// transaction ends (`FOR UPDATE`, or nothing where the transaction holds
/// the database's one write lock already).
pub(super) fn key_by_name(lock: &str, mark: Mark) -> String {
    format!("SELECT {KEY_COLUMNS} FROM keys WHERE name = {} {lock}", mark(1)).trim_end().to_owned()
}

/// Refuses, before anything is written, a new webhook URL without the
/// secret that signs for it.
pub(super) fn check_key_update(update: &KeyUpdate, webhook_secret: Option<&SecretString>) -> StoreResult<()> {
    if matches!(update.webhook_url, Some(Some(_))) && webhook_secret.is_none() {
        return Err(StoreError::Invalid("a new webhook URL needs a new secret".into()));
    }
    Ok(())
}

/// Applies `update` to `key`, as read (and locked) in the caller's
/// transaction, and returns the statements that store it.
pub(super) fn update_key<'a>(
    key: &mut KeyRecord,
    update: &'a KeyUpdate,
    webhook_secret: Option<&'a SecretString>,
    mark: Mark,
) -> Vec<Statement<'a>> {
    update.apply(&mut key.limits, &mut key.enabled);
    if let Some(format) = update.webhook_format {
        key.webhook_format = format;
    }
    let limits = &key.limits;
    let mut w = Writer::new(mark);
    let sql = format!(
        "UPDATE keys SET allowed_models = {}, rpm = {}, max_unfinished = {}, credit_budget = {}, \
         budget_period = {}, enabled = {}, webhook_format = {} WHERE id = {}",
        w.bind(Value::OptString(models_json(&limits.allowed_models))),
        w.bind(Value::OptInt(limits.rpm.map(i64::from))),
        w.bind(Value::OptInt(limits.max_unfinished.map(i64::from))),
        w.bind(Value::OptReal(limits.credit_budget)),
        w.bind(Value::OptText(limits.budget_period.map(|p| p.as_str()))),
        w.bind(Value::Bool(key.enabled)),
        w.bind(Value::Text(key.webhook_format.as_str())),
        w.bind(Value::Int(key.id)),
    );
    let mut statements = vec![w.statement(sql)];
    if let Some(url) = &update.webhook_url {
        let mut w = Writer::new(mark);
        let sql = format!(
            "UPDATE keys SET webhook_url = {}, webhook_secret = {} WHERE id = {}",
            w.bind(Value::OptText(url.as_deref())),
            // Removing the webhook removes its secret.
            w.bind(Value::OptText(url.as_ref().and(webhook_secret).map(|s| s.expose_secret()))),
            w.bind(Value::Int(key.id)),
        );
        statements.push(w.statement(sql));
        key.webhook_url.clone_from(url);
    }
    statements
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::page::{postgres_mark, sqlite_mark};

    #[test]
    fn values_are_bound_in_the_order_they_are_marked() {
        let sql = unknown("j1", "lost", 7, postgres_mark);
        assert_eq!(sql.sql, "UPDATE jobs SET status = $1, note = $2, updated_at = $3 WHERE local_id = $4");
        assert_eq!(
            sql.values,
            [Value::Text(status::UNKNOWN), Value::Text("lost"), Value::Int(7), Value::Text("j1")]
        );
        let [deliveries, jobs] = prune(100, 5, "jobs INDEXED BY jobs_by_created", sqlite_mark);
        assert!(deliveries.sql.contains("FROM jobs INDEXED BY jobs_by_created WHERE created_at < ?"));
        assert_eq!(jobs.values, [Value::Int(100), Value::Int(5)]);
        let [_, jobs] = prune(100, 5, "jobs", postgres_mark);
        assert!(jobs.sql.contains("created_at < $1") && jobs.sql.ends_with("LIMIT $2)"), "{}", jobs.sql);
    }

    #[test]
    fn a_key_update_writes_the_webhook_only_when_asked() {
        let key = || KeyRecord {
            id: 3,
            name: "k".into(),
            hash: [0; 32],
            prefix: "amv_".into(),
            limits: crate::store::KeyLimits::default(),
            credits_used: 0.0,
            period_credits: 0.0,
            period_start: None,
            enabled: true,
            revoked: false,
            created_at: 0,
            webhook_url: Some("https://a.example".into()),
            webhook_format: crate::store::WebhookFormat::Aimlvid,
        };
        let mut kept = key();
        let update = KeyUpdate { rpm: Some(Some(5)), ..KeyUpdate::default() };
        let statements = update_key(&mut kept, &update, None, postgres_mark);
        assert_eq!(statements.len(), 1);
        assert_eq!(statements[0].values[1], Value::OptInt(Some(5)));
        assert_eq!((kept.limits.rpm, kept.webhook_url.as_deref()), (Some(5), Some("https://a.example")));

        let mut removed = key();
        let update = KeyUpdate { webhook_url: Some(None), ..KeyUpdate::default() };
        let statements = update_key(&mut removed, &update, None, sqlite_mark);
        assert_eq!(statements[1].sql, "UPDATE keys SET webhook_url = ?, webhook_secret = ? WHERE id = ?");
        assert_eq!(statements[1].values, [Value::OptText(None), Value::OptText(None), Value::Int(3)]);
        assert_eq!(removed.webhook_url, None);
        assert!(key_by_name("", sqlite_mark).ends_with("WHERE name = ?"));
        assert!(key_by_name("FOR UPDATE", postgres_mark).ends_with("WHERE name = $1 FOR UPDATE"));
    }
}
