//! The admin API (`/admin/keys`), behind the admin bearer token, and key
//! issuing shared with the `keys` command.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use secrecy::ExposeSecret as _;
use serde::Deserialize;

use secrecy::SecretString;

use crate::error::ApiError;
use crate::keys::limits::{self, LimitsError, NumberOrUnlimited};
use crate::keys::{WEBHOOK_SECRET_PREFIX, generate_key, generate_secret, hash_key, key_prefix};
use crate::state::AppState;
use crate::store::{KeyLimits, KeyRecord, KeyStore, KeyUpdate, NewKey, StoreError, Webhook, WebhookFormat};
use crate::webhooks::TargetRules;

/// Also known by this path, where it was before the key limits had a module.
pub use crate::keys::limits::DEFAULT_MAX_UNFINISHED;

/// Why a key could not be issued or changed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The name is empty, too long or has characters other than
    /// letters, digits, `-`, `_`, `.` and `@`.
    #[error("a key name must be 1 to 64 letters, digits, '-', '_', '.' or '@'")]
    BadName,
    /// The webhook URL is refused, for the reason given.
    #[error("webhook URL refused: {0}")]
    BadWebhookUrl(String),
    /// A limit is refused, for the reason given.
    #[error(transparent)]
    Limits(#[from] LimitsError),
    /// Storage refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random source failed.
    #[error("no randomness for a new secret: {0}")]
    Random(#[from] std::io::Error),
}

/// A key just issued. Its secrets are available only here, once.
#[derive(Debug)]
pub struct Issued {
    /// The key.
    pub key: SecretString,
    /// The webhook's signing secret, if a webhook URL was given.
    pub webhook_secret: Option<SecretString>,
    /// The key as stored.
    pub record: KeyRecord,
}

/// Issues a key, with a webhook if `webhook_url` is given: stores the key's
/// hash (and the webhook's secret, which signing needs) and returns the
/// secrets, the only time they are ever available. Every way of issuing a
/// key comes here, so the limits are checked here ([`limits::check`]).
pub async fn issue_key(
    store: &dyn KeyStore,
    name: &str,
    limits: KeyLimits,
    webhook_url: Option<&str>,
    rules: TargetRules,
) -> Result<Issued, IssueError> {
    issue_key_with_format(store, name, limits, webhook_url, WebhookFormat::default(), rules).await
}

/// [`issue_key`], with the shape its webhook deliveries take.
pub async fn issue_key_with_format(
    store: &dyn KeyStore,
    name: &str,
    limits: KeyLimits,
    webhook_url: Option<&str>,
    webhook_format: WebhookFormat,
    rules: TargetRules,
) -> Result<Issued, IssueError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !valid {
        return Err(IssueError::BadName);
    }
    // The limits read as every front reads them, and checked.
    let asked = KeyUpdate {
        allowed_models: Some(limits.allowed_models.clone()),
        credit_budget: Some(limits.credit_budget),
        ..KeyUpdate::default()
    };
    let asked = limits::normalize(asked)?;
    let mut limits = limits;
    asked.apply(&mut limits, &mut true);
    limits::check(&limits)?;
    let webhook = webhook_url.map(|url| new_webhook(url, rules)).transpose()?;
    let webhook_secret = webhook.as_ref().map(|w| w.secret.clone());
    let key = generate_key()?;
    let new_key = NewKey {
        name: name.to_owned(),
        hash: hash_key(&key),
        prefix: key_prefix(&key),
        limits,
        webhook,
        webhook_format,
    };
    let record = store.insert_key(&new_key).await?;
    Ok(Issued { key: key.into(), webhook_secret, record })
}

/// Gives the key `name` a new secret, returned here once, for the same key
/// identity: its jobs, webhook, spend and limits stay. The old secret stops
/// working (on every server sharing the database within a second) and the
/// streams opened with it end. `None` if there is no such usable key.
pub async fn rotate_key(
    store: &dyn KeyStore,
    name: &str,
) -> Result<Option<(KeyRecord, SecretString)>, IssueError> {
    let key = generate_key()?;
    let record = store.rotate_key(name, &hash_key(&key), &key_prefix(&key)).await?;
    Ok(record.map(|record| (record, key.into())))
}

/// Changes a key; a new webhook URL gets a new secret, returned here once.
/// `None` if there is no such key. Every way of changing a key comes here,
/// so the limits it sets are checked here.
pub async fn update_key(
    store: &dyn KeyStore,
    name: &str,
    update: &KeyUpdate,
    rules: TargetRules,
) -> Result<Option<(KeyRecord, Option<SecretString>)>, IssueError> {
    let update = &limits::normalize(update.clone())?;
    let secret = match &update.webhook_url {
        Some(Some(url)) => Some(new_webhook(url, rules)?.secret),
        _ => None,
    };
    let record = store.update_key(name, update, secret.as_ref()).await?;
    Ok(record.map(|record| (record, secret)))
}

/// A webhook for `url`, checked against `rules` when it is saved (a
/// member learns at once, not at the first delivery), with a new secret.
fn new_webhook(url: &str, rules: TargetRules) -> Result<Webhook, IssueError> {
    crate::webhooks::check_url(url, rules).map_err(IssueError::BadWebhookUrl)?;
    Ok(Webhook { url: url.to_owned(), secret: generate_secret(WEBHOOK_SECRET_PREFIX)?.into() })
}

/// The largest body an admin request may have: its bodies are a key's
/// name and limits.
pub const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The admin API's routes. The admin token is checked before anything of a
/// request's body is read (so a stranger's upload is refused unread), and
/// bodies are small.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/admin/keys", get(list).post(create))
        .route("/admin/keys/{name}", patch(update).delete(revoke))
        .route("/admin/keys/{name}/rotate", post(rotate))
        .route("/admin/jobs/unknown", get(unknown_jobs))
        .route("/admin/reconcile", get(last_reconciliation).post(reconcile))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admin_only))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
}

/// Lets only the admin token through, before the handler's extractors run.
async fn admin_only(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    authorize(&state, request.headers())?;
    Ok(next.run(request).await)
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if !state.admin_enabled() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "The admin API is not enabled"));
    }
    if state.is_admin(bearer(headers)) { Ok(()) } else { Err(ApiError::unauthorized()) }
}

/// The bearer token of a request, or `""`.
pub(crate) fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .unwrap_or_default()
}

/// A key as the admin API shows it: its record, with the dollar figures
/// beside the credit ones (the API bills in dollars; credits are exact).
fn key_json(record: &KeyRecord) -> serde_json::Value {
    let mut value = serde_json::to_value(record).unwrap_or_default();
    value["credits_used_usd"] = usd(record.credits_used).into();
    if let Some(budget) = record.limits.credit_budget {
        value["credit_budget_usd"] = usd(budget).into();
    }
    value
}

/// `credits` in dollars, as an exact decimal (`0.06`).
pub fn usd(credits: f64) -> String {
    aimlvid::Credits::from_f64_rounded(credits).unwrap_or_default().usd_decimal()
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) => ApiError::new(StatusCode::CONFLICT, format!("{what} already exists")),
        other => ApiError::internal(&other),
    }
}

fn issue_error(e: IssueError) -> ApiError {
    match e {
        e @ (IssueError::BadName | IssueError::BadWebhookUrl(_) | IssueError::Limits(_)) => {
            ApiError::new(StatusCode::BAD_REQUEST, e.to_string())
        }
        IssueError::Store(e) => store_error(e),
        e @ IssueError::Random(_) => ApiError::internal(&e),
    }
}

fn bad_json(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("An admin request's body may be {} KiB at most", ADMIN_BODY_LIMIT / 1024),
        );
    }
    ApiError::new(StatusCode::BAD_REQUEST, format!("Body validation error: {}", rejection.body_text()))
}

/// The body of `POST /admin/keys`. The limits are spelled out rather than
/// flattened from [`KeyLimits`]: serde cannot deny unknown fields through a
/// flatten, and a misspelt limit must not silently mean "unlimited".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    name: String,
    #[serde(default)]
    allowed_models: Option<Vec<String>>,
    /// A number, or `"unlimited"`.
    #[serde(default)]
    rpm: Option<NumberOrUnlimited>,
    /// A number, or `"unlimited"`; absent, [`DEFAULT_MAX_UNFINISHED`].
    #[serde(default)]
    max_unfinished: Option<NumberOrUnlimited>,
    #[serde(default)]
    credit_budget: Option<f64>,
    /// `day`, `week` or `month`; absent or `null`, one budget for life.
    #[serde(default)]
    budget_period: Option<crate::store::BudgetPeriod>,
    #[serde(default)]
    webhook_url: Option<String>,
    /// `aimlvid` (absent) or `openai`.
    #[serde(default)]
    webhook_format: Option<WebhookFormat>,
}

impl CreateKey {
    /// The key's limits: what the body asks, over the defaults every way
    /// of issuing a key shares. (They are checked when the key is issued.)
    fn limits(&self) -> KeyLimits {
        limits::with_defaults(&KeyUpdate {
            allowed_models: self.allowed_models.clone().map(Some),
            rpm: self.rpm.map(NumberOrUnlimited::limit),
            max_unfinished: self.max_unfinished.map(NumberOrUnlimited::limit),
            credit_budget: self.credit_budget.map(Some),
            budget_period: self.budget_period.map(Some),
            ..KeyUpdate::default()
        })
    }
}

/// `GET /admin/keys`: every key, with live counters; never a key itself.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Response, ApiError> {
    let records = state.store().keys().await.map_err(store_error)?;
    let counts = state.unfinished_per_key().await.map_err(store_error)?;
    let listed: Vec<_> = records
        .into_iter()
        .map(|record| {
            let unfinished = counts.get(&record.id).copied().unwrap_or(0);
            let mut value = key_json(&record);
            value["unfinished"] = unfinished.into();
            value
        })
        .collect();
    Ok(Json(listed).into_response())
}

/// `GET /admin/jobs/unknown`: creates whose outcome is unknown and jobs the
/// upstream says it does not know, oldest first. The server keeps looking
/// them up by itself; these are for an operator to know about.
pub(crate) async fn unknown_jobs(State(state): State<AppState>) -> Result<Response, ApiError> {
    let jobs = state.store().jobs_needing_attention().await.map_err(store_error)?;
    let listed: Vec<_> = jobs
        .into_iter()
        .map(|job| {
            serde_json::json!({
                "local_id": job.local_id,
                "key_id": job.key_id,
                "generation_id": job.generation_id,
                "model": job.model,
                "note": job.note,
                "created_at": job.created_at,
            })
        })
        .collect();
    Ok(Json(listed).into_response())
}

/// `GET /admin/reconcile`: the last reconciliation with the upstream's
/// ledger (the server makes one a day), or 404 before the first.
pub(crate) async fn last_reconciliation(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(run) = state.last_reconciliation().get() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "No reconciliation yet (the server makes one a few minutes after start and then every \
             reconcile_interval_hours, unless that is 0); POST /admin/reconcile makes one now",
        ));
    };
    Ok(Json(run_json(&run)).into_response())
}

/// How far back `POST /admin/reconcile` looks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReconcileQuery {
    /// Such as `7d` or `36h`.
    since: Option<String>,
}

/// `POST /admin/reconcile[?since=7d]`: reconciles now (adopting the lost
/// creates found) and answers the result.
pub(crate) async fn reconcile(
    State(state): State<AppState>,
    query: Result<axum::extract::Query<ReconcileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let query = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let window = match query.since.as_deref() {
        Some(text) => parse_window(text).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?,
        None => state.reconcile_window(),
    };
    let report = crate::engine::ledger::reconcile_now(state.reconciler(), window)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()))?;
    let run = crate::engine::ledger::ReconcileRun { made: Some((report.until, report)), failed: None };
    Ok(Json(run_json(&run)).into_response())
}

/// A reconciliation window such as `7d`, `36h` or `90m`: at least a
/// minute, at most a year.
pub fn parse_window(text: &str) -> Result<std::time::Duration, String> {
    let window = humantime::parse_duration(text.trim())
        .map_err(|e| format!("since: expected a span such as 7d, 36h or 90m, not {text:?} ({e})"))?;
    if window < std::time::Duration::from_secs(60) || window > std::time::Duration::from_secs(366 * 86_400) {
        return Err(format!("since: {text:?} is outside 1m to 366d"));
    }
    Ok(window)
}

/// The last reconciliation made (`at`, `reconciliation`), and whether the
/// last attempt failed since (`ok`, `error`): a failure hides no result.
fn run_json(run: &crate::engine::ledger::ReconcileRun) -> serde_json::Value {
    let mut value = match &run.made {
        Some((at, report)) => serde_json::json!({"at": at, "reconciliation": report.as_ref()}),
        None => serde_json::json!({"at": null, "reconciliation": null}),
    };
    value["ok"] = run.failed.is_none().into();
    if let Some((at, why)) = &run.failed {
        value["error"] = serde_json::json!({"at": at, "message": why});
    }
    value
}

/// `POST /admin/keys`: issues a key and shows it (and its webhook secret), once.
pub(crate) async fn create(
    State(state): State<AppState>,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(bad_json)?;
    let rules = state.webhooks().target_rules();
    let format = body.webhook_format.unwrap_or_default();
    let issued = issue_key_with_format(
        state.store(),
        &body.name,
        body.limits(),
        body.webhook_url.as_deref(),
        format,
        rules,
    )
    .await
    .map_err(issue_error)?;
    state.reload_keys().await.map_err(store_error)?;
    let mut value = key_json(&issued.record);
    value["key"] = issued.key.expose_secret().into();
    if let Some(secret) = &issued.webhook_secret {
        value["webhook_secret"] = secret.expose_secret().into();
    }
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// `PATCH /admin/keys/{name}`: changes limits, the enabled flag or the
/// webhook; a new webhook URL's secret is shown in the answer, once.
pub(crate) async fn update(
    State(state): State<AppState>,
    Path(name): Path<String>,
    body: Result<Json<KeyUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(update) = body.map_err(bad_json)?;
    let rules = state.webhooks().target_rules();
    let updated = update_key(state.store(), &name, &update, rules).await.map_err(issue_error)?;
    let (record, secret) =
        updated.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No key named {name:?}")))?;
    state.reload_keys().await.map_err(store_error)?;
    let mut value = key_json(&record);
    if let Some(secret) = &secret {
        value["webhook_secret"] = secret.expose_secret().into();
    }
    Ok(Json(value).into_response())
}

/// `DELETE /admin/keys/{name}`: revokes a key for good.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let record = state.store().revoke_key(&name).await.map_err(store_error)?;
    let record =
        record.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No key named {name:?}")))?;
    state.reload_keys().await.map_err(store_error)?;
    Ok(Json(key_json(&record)).into_response())
}

/// `POST /admin/keys/{name}/rotate`: a new secret for the same key, shown once.
pub(crate) async fn rotate(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let rotated = rotate_key(state.store(), &name).await.map_err(issue_error)?;
    let (record, key) = rotated
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No usable key named {name:?}")))?;
    state.reload_keys().await.map_err(store_error)?;
    let mut body = key_json(&record);
    body["key"] = key.expose_secret().into();
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_limit_is_refused_not_ignored() {
        let parsed: CreateKey =
            serde_json::from_str(r#"{"name": "alice", "rpm": 60, "credit_budget": 5.0}"#).unwrap();
        assert_eq!(parsed.limits().rpm, Some(60));
        assert_eq!(parsed.limits().credit_budget, Some(5.0));
        assert_eq!(parsed.limits().max_unfinished, Some(DEFAULT_MAX_UNFINISHED), "finite unless asked");
        let unlimited: CreateKey =
            serde_json::from_str(r#"{"name": "bob", "max_unfinished": "unlimited"}"#).unwrap();
        assert_eq!(unlimited.limits().max_unfinished, None);
        let three: CreateKey = serde_json::from_str(r#"{"name": "cy", "max_unfinished": 3}"#).unwrap();
        assert_eq!(three.limits().max_unfinished, Some(3));
        let monthly: CreateKey =
            serde_json::from_str(r#"{"name": "dee", "credit_budget": 9.0, "budget_period": "month"}"#)
                .unwrap();
        assert_eq!(monthly.limits().budget_period, Some(crate::store::BudgetPeriod::Month));
        assert!(serde_json::from_str::<CreateKey>(r#"{"name": "e", "budget_period": "fortnight"}"#).is_err());
        let err = serde_json::from_str::<CreateKey>(r#"{"name": "alice", "rmp": 60}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `rmp`"), "{err}");
    }
}
