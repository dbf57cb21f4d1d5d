//! The member API: `POST` and `GET /v2/video/generations`, answering as
//! the upstream does.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::error::ApiError;
use crate::jobs::{Admitted, NewCreate, Refusal};
use crate::state::AppState;
use crate::view::view_of;

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let error = ApiError::new(refusal.status, refusal.message).with_retry_after(refusal.retry_after);
        match refusal.issues {
            Some(issues) => error.with_errors(issues),
            None => error,
        }
    }
}

/// The status the upstream answers an accepted create with.
pub const CREATE_STATUS: StatusCode = StatusCode::OK;

/// A request's `Authorization` header, and nothing else of its headers:
/// taking the whole `HeaderMap` would copy it on every status read.
#[derive(Debug)]
pub(crate) struct Authorization(Option<HeaderValue>);

impl Authorization {
    /// The header's value, if sent.
    pub(crate) fn value(&self) -> Option<&HeaderValue> {
        self.0.as_ref()
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Authorization {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Authorization(parts.headers.get(AUTHORIZATION).cloned()))
    }
}

/// The member's key, from `Authorization: Bearer KEY`.
pub(crate) fn authenticate(state: &AppState, authorization: &Authorization) -> Result<Admitted, ApiError> {
    // The upstream's three answers, in its words.
    let Some(value) = &authorization.0 else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Missing API key: send it as `Authorization: Bearer <key>`",
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Malformed Authorization header: expected `Authorization: Bearer <key>`",
            )
        })?;
    let (key, _) = state.keys().authenticate(presented).ok_or_else(ApiError::unauthorized)?;
    Ok(state.jobs().admit(key)?)
}

pub(crate) fn json(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `POST /v2/video/generations`.
///
/// The key is checked before the body is read, so an unauthenticated upload
/// is refused without being received. Once the checks pass, the create runs
/// in a task of its own that the request only waits on: a member who
/// disconnects (or a reverse proxy that times out) cannot cut a paid create
/// short, and a retry with the same `Idempotency-Key` gets the job.
pub(crate) async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let key = authenticate(&state, &Authorization(headers.get(AUTHORIZATION).cloned()))?;
    let body = read_body(body, &headers, state.body_limit(), state.front_limits()).await?;
    // As the upstream's parser does: a body not declared as JSON, or blank, reads as `{}`.
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    let value: serde_json::Value = if !is_json || body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, format!("Invalid JSON in the request body: {e}"))
        })?
    };
    let request_hash: [u8; 32] = Sha256::digest(&body).into();
    // The parsed body is what goes on: the raw one (up to the body limit)
    // is not kept beside it while the create waits and runs.
    drop(body);
    let idempotency_key = crate::jobs::idempotency_key(&headers)?;
    let accepted = state
        .jobs()
        .create(&key, NewCreate { value, request_hash, idempotency_key, remixed_from: None })
        .await?;
    Ok(json(CREATE_STATUS, accepted.body))
}

/// Reads a create's body, refusing one over `limit` by its declared length
/// before reading it, or as soon as it grows past `limit`; and one that
/// pauses too long or arrives too slowly, so that a slow sender cannot hold
/// a connection and its memory for ever.
pub(crate) async fn read_body(
    body: axum::body::Body,
    headers: &HeaderMap,
    limit: usize,
    front: &crate::connection::FrontLimits,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("Request body is too large: the limit is {limit} bytes; send the video as an https URL"),
        )
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let expected = declared.unwrap_or(limit as u64);
    let deadline = tokio::time::Instant::now()
        + front.body_idle_timeout
        + Duration::from_secs_f64(expected as f64 / front.min_body_rate.max(1) as f64);
    let too_slow = || {
        ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "The request body arrived too slowly; send it again, or send the video as an https URL",
        )
    };
    let mut bytes = Vec::with_capacity(declared.map_or(0, |len| len as usize));
    let mut chunks = body.into_data_stream();
    let started = tokio::time::Instant::now();
    loop {
        let wait =
            front.body_idle_timeout.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let next = tokio::time::timeout(wait, futures_util::StreamExt::next(&mut chunks)).await;
        let Some(chunk) = next.map_err(|_| too_slow())? else { break };
        let chunk =
            chunk.map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Could not read the request body"))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
        // After the first pause allowed, the body keeps up with the slowest
        // rate as it arrives, not only by the end a large declared length
        // allows (which would let a trickle hold a connection for an hour).
        let owed = started.elapsed().saturating_sub(front.body_idle_timeout).as_secs_f64()
            * front.min_body_rate.max(1) as f64;
        if (bytes.len() as f64) < owed {
            return Err(too_slow());
        }
    }
    Ok(Bytes::from(bytes))
}

/// The query of `GET /v2/video/generations`.
#[derive(Debug, Deserialize)]
pub(crate) struct GetQuery {
    generation_id: Option<String>,
}

/// `GET /v2/video/generations?generation_id=ID`: answered from memory
/// (storage only for a job not seen since start), never from upstream.
pub(crate) async fn get(
    State(state): State<AppState>,
    authorization: Authorization,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let key = authenticate(&state, &authorization)?;
    let id =
        query.ok().and_then(|Query(q)| q.generation_id).filter(|id| !id.is_empty()).ok_or_else(|| {
            ApiError::new(StatusCode::BAD_REQUEST, "Query validation error")
                .with_errors(serde_json::json!([{"path": ["generation_id"], "message": "Required"}]))
        })?;
    let key_id = key.key().id();
    if let Some(view) = state.views().get(&id) {
        return if view.key_id == key_id {
            Ok(json(StatusCode::OK, view.body.clone()))
        } else {
            Err(ApiError::not_found())
        };
    }
    if state.unknown_ids().known_absent(&id) {
        return Err(ApiError::not_found());
    }
    let _turn = state.unknown_ids().lookup().await;
    state.metrics().storage_read();
    let stored = state.store().job_by_generation(&id).await.map_err(|e| ApiError::internal(&e))?;
    match stored.as_ref().and_then(view_of) {
        Some((id, view)) if view.key_id == key_id => {
            let body = view.body.clone();
            state.views().put(&id, view);
            Ok(json(StatusCode::OK, body))
        }
        Some(_) => Err(ApiError::not_found()),
        None => {
            state.unknown_ids().remember_absent(&id);
            Err(ApiError::not_found())
        }
    }
}
