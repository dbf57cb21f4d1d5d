//! The admin API (`/admin/keys`), behind the admin bearer token, and key
//! issuing shared with the `keys` command.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;

use crate::error::ApiError;
use crate::keys::{generate_key, hash_key, key_prefix};
use crate::state::AppState;
use crate::store::{KeyLimits, KeyRecord, KeyStore, KeyUpdate, NewKey, StoreError};

/// Why a key could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The name is empty, too long or has characters other than
    /// letters, digits, `-`, `_`, `.` and `@`.
    #[error("a key name must be 1 to 64 letters, digits, '-', '_', '.' or '@'")]
    BadName,
    /// Storage refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random source failed.
    #[error("no randomness for a new key: {0}")]
    Random(#[from] std::io::Error),
}

/// Issues a key: stores its hash and returns the key, the only time it is
/// ever available.
pub async fn issue_key(
    store: &dyn KeyStore,
    name: &str,
    limits: KeyLimits,
) -> Result<(secrecy::SecretString, KeyRecord), IssueError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !valid {
        return Err(IssueError::BadName);
    }
    let key = generate_key()?;
    let record = store
        .insert_key(&NewKey { name: name.to_owned(), hash: hash_key(&key), prefix: key_prefix(&key), limits })
        .await?;
    Ok((key.into(), record))
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

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(what) => ApiError::new(StatusCode::CONFLICT, format!("{what} already exists")),
        other => ApiError::internal(&other),
    }
}

fn bad_json(rejection: JsonRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, format!("Body validation error: {}", rejection.body_text()))
}

/// The body of `POST /admin/keys`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    name: String,
    #[serde(flatten)]
    limits: KeyLimits,
}

/// `GET /admin/keys`: every key, with live counters; never a key itself.
pub(crate) async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let records = state.store().keys().await.map_err(store_error)?;
    let listed: Vec<_> = records
        .into_iter()
        .map(|record| {
            let unfinished = state.keys().get(record.id).map_or(0, |e| e.unfinished());
            let mut value = serde_json::to_value(&record).unwrap_or_default();
            value["unfinished"] = unfinished.into();
            value
        })
        .collect();
    Ok(Json(listed).into_response())
}

/// `POST /admin/keys`: issues a key and shows it, once.
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateKey>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let Json(body) = body.map_err(bad_json)?;
    let (key, record) = match issue_key(state.store(), &body.name, body.limits).await {
        Ok(issued) => issued,
        Err(IssueError::BadName) => {
            return Err(ApiError::new(StatusCode::BAD_REQUEST, IssueError::BadName.to_string()));
        }
        Err(IssueError::Store(e)) => return Err(store_error(e)),
        Err(e) => return Err(ApiError::internal(&e)),
    };
    state.reload_keys().await.map_err(store_error)?;
    let mut value = serde_json::to_value(&record).map_err(|e| ApiError::internal(&e))?;
    value["key"] = secrecy::ExposeSecret::expose_secret(&key).into();
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

/// `PATCH /admin/keys/{name}`: changes limits or the enabled flag.
pub(crate) async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Result<Json<KeyUpdate>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let Json(update) = body.map_err(bad_json)?;
    let record = state.store().update_key(&name, &update).await.map_err(store_error)?;
    let record =
        record.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No key named {name:?}")))?;
    state.reload_keys().await.map_err(store_error)?;
    Ok(Json(record).into_response())
}

/// `DELETE /admin/keys/{name}`: revokes a key for good.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let record = state.store().revoke_key(&name).await.map_err(store_error)?;
    let record =
        record.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("No key named {name:?}")))?;
    state.reload_keys().await.map_err(store_error)?;
    Ok(Json(record).into_response())
}
