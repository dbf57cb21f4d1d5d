//! Rows as both backends read them: one mapping from columns to records,
//! decoded by sqlx for SQLite and PostgreSQL alike.

use std::time::{SystemTime, UNIX_EPOCH};

use super::{
    BudgetPeriod, DueWebhook, KeyLimits, KeyRecord, StoreError, StoreResult, Webhook, WebhookAttempt,
    WebhookFormat,
};

/// Statuses after which a job never changes, as SQL.
pub(super) const FINISHED: &str = "('completed', 'complete', 'error', 'failed', 'cancelled', 'canceled')";
pub(super) const JOB_COLUMNS: &str = "local_id, key_id, generation_id, status, model, body, idempotency_key, \
                           request_hash, credits_charged, created_at, receipt, note, hold_released, params, \
                           inline_media, remixed_from, hidden_at";
// The webhook secret is deliberately absent: only `due_webhooks` reads it.
pub(super) const KEY_COLUMNS: &str = "id, name, hash, prefix, allowed_models, rpm, max_unfinished, credit_budget, \
                           budget_period, period_start, period_credits, credits_used, enabled, revoked_at, \
                           created_at, webhook_url, webhook_format";
pub(super) const ATTEMPT_COLUMNS: &str = "id, delivery_id, attempt, key_id, generation_id, event, state, due_at, url, \
                               response_status, error, attempted_at, duration_ms";

/// A `keys` row, as `KEY_COLUMNS` selects it.
#[derive(sqlx::FromRow)]
pub(super) struct KeyRow {
    id: i64,
    name: String,
    hash: Vec<u8>,
    prefix: String,
    allowed_models: Option<String>,
    rpm: Option<i64>,
    max_unfinished: Option<i64>,
    credit_budget: Option<f64>,
    budget_period: Option<String>,
    period_start: Option<i64>,
    period_credits: f64,
    credits_used: f64,
    enabled: bool,
    revoked_at: Option<i64>,
    created_at: i64,
    webhook_url: Option<String>,
    webhook_format: String,
}

impl TryFrom<KeyRow> for KeyRecord {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> StoreResult<KeyRecord> {
        let hash =
            <[u8; 32]>::try_from(row.hash.as_slice()).map_err(|_| StoreError::Corrupt("key hash".into()))?;
        let allowed_models = row
            .allowed_models
            .map(|m| serde_json::from_str(&m))
            .transpose()
            .map_err(|_| StoreError::Corrupt("allowed_models".into()))?;
        let budget_period = row
            .budget_period
            .map(|p| p.parse::<BudgetPeriod>())
            .transpose()
            .map_err(|_| StoreError::Corrupt("budget_period".into()))?;
        let count = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        Ok(KeyRecord {
            id: row.id,
            name: row.name,
            hash,
            prefix: row.prefix,
            limits: KeyLimits {
                allowed_models,
                rpm: row.rpm.map(count),
                max_unfinished: row.max_unfinished.map(count),
                credit_budget: row.credit_budget,
                budget_period,
            },
            credits_used: row.credits_used,
            period_credits: row.period_credits,
            period_start: row.period_start,
            enabled: row.enabled,
            revoked: row.revoked_at.is_some(),
            created_at: row.created_at,
            webhook_url: row.webhook_url,
            webhook_format: format(&row.webhook_format)?,
        })
    }
}

/// A `webhook_deliveries` row, as `ATTEMPT_COLUMNS` selects it.
#[derive(sqlx::FromRow)]
pub(super) struct AttemptRow {
    id: i64,
    delivery_id: String,
    attempt: i64,
    key_id: i64,
    generation_id: String,
    event: String,
    state: String,
    due_at: i64,
    url: Option<String>,
    response_status: Option<i64>,
    error: Option<String>,
    attempted_at: Option<i64>,
    duration_ms: Option<i64>,
}

impl TryFrom<AttemptRow> for WebhookAttempt {
    type Error = StoreError;

    fn try_from(row: AttemptRow) -> StoreResult<WebhookAttempt> {
        Ok(WebhookAttempt {
            id: row.id,
            delivery_id: row.delivery_id,
            attempt: u32::try_from(row.attempt).map_err(|_| StoreError::Corrupt("webhook attempt".into()))?,
            key_id: row.key_id,
            generation_id: row.generation_id,
            event: row.event,
            state: row.state,
            due_at_ms: row.due_at,
            url: row.url,
            response_status: row.response_status.and_then(|s| u16::try_from(s).ok()),
            error: row.error,
            attempted_at_ms: row.attempted_at,
            duration_ms: row.duration_ms,
        })
    }
}

/// A due attempt joined with its key's webhook (`url` only while the key
/// may still receive it).
#[derive(sqlx::FromRow)]
pub(super) struct DueRow {
    id: i64,
    delivery_id: String,
    attempt: i64,
    key_id: i64,
    generation_id: String,
    event: String,
    body: String,
    queued_at: i64,
    url: Option<String>,
    secret: Option<String>,
    format: String,
}

impl DueRow {
    pub(super) fn id(&self) -> i64 {
        self.id
    }
}

impl TryFrom<DueRow> for DueWebhook {
    type Error = StoreError;

    fn try_from(row: DueRow) -> StoreResult<DueWebhook> {
        Ok(DueWebhook {
            id: row.id,
            delivery_id: row.delivery_id,
            attempt: u32::try_from(row.attempt).map_err(|_| StoreError::Corrupt("webhook attempt".into()))?,
            key_id: row.key_id,
            generation_id: row.generation_id,
            event: row.event,
            body: row.body,
            queued_at_ms: row.queued_at,
            target: row.url.zip(row.secret).map(|(url, secret)| Webhook { url, secret: secret.into() }),
            format: format(&row.format)?,
        })
    }
}

/// A webhook format as stored.
fn format(stored: &str) -> StoreResult<WebhookFormat> {
    stored.parse().map_err(|_| StoreError::Corrupt("webhook_format".into()))
}

/// Converts decoded rows to records, stopping at the first bad one.
pub(super) fn records<R, T: TryFrom<R, Error = StoreError>>(rows: Vec<R>) -> StoreResult<Vec<T>> {
    rows.into_iter().map(T::try_from).collect()
}

/// Unix seconds.
pub(super) fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Unix milliseconds.
pub(super) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A key's allowed models as stored: a JSON array, or NULL for any.
pub(super) fn models_json(models: &Option<Vec<String>>) -> Option<String> {
    models.as_ref().map(|m| serde_json::Value::from(m.clone()).to_string())
}

pub(super) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

/// A write that breaks a rule of the schema fails the same way every time;
/// anything else (a lock, a full disk, an I/O error) may pass later.
pub(super) fn is_constraint(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if !matches!(db.kind(), sqlx::error::ErrorKind::Other))
}
