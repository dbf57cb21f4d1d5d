//! The member API: `POST` and `GET /v2/video/generations`, answering as
//! the upstream does.

use std::time::Duration;

use aimlvid::CreateRequest;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::sync::Arc;
use tokio::time::Instant;

use crate::budget::UnknownHold;
use crate::engine::scheduler::FollowJob;
use crate::engine::writer::WriteError;
use crate::error::ApiError;
use crate::keys::{KeyEntry, Refusal};
use crate::state::{AppState, view_of};
use crate::store::{Begun, JobRecord, JobWrite, LimitReached, NewJob, WriteOutcome, status};

/// The status the upstream answers an accepted create with.
pub const CREATE_STATUS: StatusCode = StatusCode::OK;

/// The header that makes a create safe to repeat.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

const UNKNOWN_OUTCOME: &str = "The upstream may have accepted this create, but its answer was lost: \
    a generation may exist and be billed. It was not retried, so that it is not paid for twice. \
    The server looks it up in the upstream's request logs: repeat this request with the same \
    Idempotency-Key in a minute to get the job once it is found, and do not create it again without one.";

/// A request's `Authorization` header, and nothing else of its headers:
/// taking the whole `HeaderMap` would copy it on every status read.
#[derive(Debug)]
pub(crate) struct Authorization(Option<HeaderValue>);

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
pub(crate) fn authenticate(
    state: &AppState,
    authorization: &Authorization,
) -> Result<Arc<KeyEntry>, ApiError> {
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
    let (key, record) = state.keys().authenticate(presented).ok_or_else(ApiError::unauthorized)?;
    if !record.enabled {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "This API key is disabled"));
    }
    key.take_request(&record, Instant::now()).map_err(refused)?;
    Ok(key)
}

/// Why a key's limits refuse a request, in the member's words.
pub(crate) fn refusal_message(refusal: Refusal) -> String {
    refused(refusal).message().to_owned()
}

fn refused(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Rate(wait) => ApiError::too_many("Too many requests for this API key; slow down", wait),
        Refusal::Unfinished(max) => ApiError::too_many(
            format!("This API key already has {max} unfinished generations; wait for one to finish"),
            Duration::from_secs(5),
        ),
        Refusal::Budget { remaining, expected } => ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "This API key's credit budget does not cover this generation: about {expected:.0} credits \
                 expected, {remaining:.0} left once the generations in progress are paid for"
            ),
        ),
    }
}

fn json(status: StatusCode, body: Bytes) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A create body passed on as the member sent it (as parsed JSON).
#[derive(Debug)]
struct RawBody {
    model: String,
    value: serde_json::Value,
}

impl Serialize for RawBody {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl CreateRequest for RawBody {
    fn model(&self) -> &str {
        &self.model
    }
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
    let idempotency_key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= 255 => Some(k.to_owned()),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                ));
            }
        },
    };
    let accepted = create_job(&state, key, value, request_hash, idempotency_key).await?;
    Ok(json(CREATE_STATUS, accepted.body))
}

/// A create the upstream accepted (or an earlier one with the same
/// `Idempotency-Key`): what each front renders in its own way.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// This server's id for the job.
    pub(crate) local_id: String,
    /// The generation as members read it, encoded.
    pub(crate) body: Bytes,
}

/// A create whose key and body were read: checked against the key's limits
/// and the catalog, then recorded, sent and followed. The team page's form
/// comes here too, so both ways in behave alike.
pub(crate) async fn create_job(
    state: &AppState,
    key: Arc<KeyEntry>,
    value: serde_json::Value,
    request_hash: [u8; 32],
    idempotency_key: Option<String>,
) -> Result<Accepted, ApiError> {
    let state = state.clone();
    let model = value.get("model").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
    let record = key.record();
    if let Some(allowed) = &record.limits.allowed_models
        && !allowed.iter().any(|pattern| model_fits(pattern, &model))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("This API key may not use model {model:?}"),
        ));
    }
    check_against_catalog(&value)?;
    if let Some(nearest) = state.catalogue().no_longer_listed(&model) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "The API no longer lists model {model:?}, so it would refuse this create; nothing was \
                 created. Models like it that it lists: {}",
                nearest.join(", ")
            ),
        ));
    }
    if let Some(idem) = &idempotency_key
        && let Some(existing) =
            state.store().job_by_idempotency_key(record.id, idem).await.map_err(|e| ApiError::internal(&e))?
    {
        return replay(&state, &existing, &request_hash);
    }

    if let Some(left) = state.breaker().open_for() {
        return Err(key_refused_upstream(left));
    }
    let slot = Slot::reserve(key, state.costs().estimate(&model, &value)).map_err(refused)?;
    let accepted = AcceptCreate { record, model, value, idempotency_key, request_hash };
    let task = state.spawn_create(accept(state.clone(), slot, accepted));
    task.await.map_err(|e| ApiError::internal(&format!("a create task ended abnormally: {e}")))?
}

/// The longest prompt kept beside a job, in characters.
const MAX_PROMPT_KEPT: usize = 4000;

fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// What a job starts from, to show beside it: each media parameter's URL,
/// or for media sent inline its type and size (never the data, which may
/// be tens of megabytes).
fn describe_inputs(model: &str, value: &serde_json::Value) -> Option<String> {
    let names: Vec<&str> = match aimlvid::catalog::model(model) {
        Some(spec) => spec.media_parameters().map(|p| p.name.as_str()).collect(),
        None => vec!["video_url", "image_url", "audio_url"],
    };
    let describe = |v: &serde_json::Value| -> Option<String> {
        let text = v.as_str()?;
        Some(match text.strip_prefix("data:") {
            Some(rest) => {
                let mime = rest.split([';', ',']).next().unwrap_or("");
                let encoded = rest.split_once(',').map_or(0, |(_, data)| data.len());
                let bytes = encoded as f64 * 0.75;
                if bytes < 1e6 {
                    format!("uploaded {mime}, {:.0} KB", bytes / 1e3)
                } else {
                    format!("uploaded {mime}, {:.1} MB", bytes / 1e6)
                }
            }
            None => clip(text, 2000),
        })
    };
    let mut parts = Vec::new();
    for name in names {
        match value.get(name) {
            Some(serde_json::Value::Array(items)) => parts.extend(items.iter().filter_map(describe)),
            Some(v) => parts.extend(describe(v)),
            None => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("\n"))
}

/// Whether an allowlist entry (an id, or a pattern with `*`) admits `model`.
fn model_fits(pattern: &str, model: &str) -> bool {
    aimlvid::catalog::ModelPattern::new(pattern).is_ok_and(|p| p.matches(model))
}

/// Refuses, before anything is recorded or sent upstream, a body that its
/// model's schema refuses: a 400 in the upstream's own shape, so members
/// see what the upstream would have said. A model the catalog does not
/// know may be newer than it, and goes to the upstream to judge.
fn check_against_catalog(value: &serde_json::Value) -> Result<(), ApiError> {
    use aimlvid::catalog::Invalid;
    match aimlvid::catalog::validate(value) {
        Ok(_) | Err(Invalid::UnknownModel { .. }) => Ok(()),
        Err(Invalid::Refused { issues, .. }) => {
            let errors: Vec<_> = issues.iter().map(aimlvid::catalog::Issue::to_json).collect();
            Err(ApiError::new(StatusCode::BAD_REQUEST, "Body validation error").with_errors(errors.into()))
        }
        Err(other) => Err(ApiError::new(StatusCode::BAD_REQUEST, other.to_string())),
    }
}

/// The answer while the upstream refuses this server's key: the member
/// can do nothing about it but wait; the operator must replace the key.
fn key_refused_upstream(retry_after: Duration) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The upstream refuses this server's API key, so creates are paused; the server's operator \
         must replace it. Nothing was created.",
    )
    .with_retry_after(Some(retry_after.as_secs().max(1)))
}

/// Reads a create's body, refusing one over `limit` by its declared length
/// before reading it, or as soon as it grows past `limit`; and one that
/// pauses too long or arrives too slowly, so that a slow sender cannot hold
/// a connection and its memory for ever.
async fn read_body(
    body: axum::body::Body,
    headers: &HeaderMap,
    limit: usize,
    front: &crate::front::FrontLimits,
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

/// A key's slot for one unfinished job, given back when dropped unless the
/// job was handed to the scheduler (which gives it back when the job ends).
/// A guard, so that no early return, refusal or panic can leak it.
struct Slot {
    key: Arc<KeyEntry>,
    /// The credits reserved against the key's budget.
    expected: f64,
    kept: bool,
}

impl Slot {
    fn reserve(key: Arc<KeyEntry>, expected: f64) -> Result<Slot, Refusal> {
        key.reserve_job(expected)?;
        Ok(Slot { key, expected, kept: false })
    }

    /// The job runs upstream now as `generation_id`; its end settles the
    /// reservation and releases the slot.
    fn keep(mut self, state: &AppState, generation_id: &str, model: &str) {
        state.costs().hold(generation_id, model, self.expected);
        self.kept = true;
    }

    /// The create's outcome is unknown: it may be billed, so it keeps
    /// counting against its key until the upstream's logs resolve it. A
    /// shared store holds its place and reservation itself (in the row it
    /// recorded), so this server's own count lets it go.
    fn keep_while_unknown(mut self, state: &AppState, local_id: &str, model: &str) {
        if state.store().shared() {
            return;
        }
        let hold = UnknownHold { key_id: self.key.id(), model: model.to_owned(), credits: self.expected };
        state.costs().hold_unknown(local_id, hold);
        self.kept = true;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.kept {
            self.key.job_ended(self.expected);
        }
    }
}

/// A create that passed the checks.
struct AcceptCreate {
    record: Arc<crate::store::KeyRecord>,
    model: String,
    value: serde_json::Value,
    idempotency_key: Option<String>,
    request_hash: [u8; 32],
}

/// Records, sends and follows one create; runs in its own task.
async fn accept(state: AppState, slot: Slot, create: AcceptCreate) -> Result<Accepted, ApiError> {
    let AcceptCreate { record, model, value, idempotency_key, request_hash } = create;
    // Fair shares of the upstream: a key waits for one of its own places,
    // then for one of the server's, so a key sending thousands of creates
    // at once holds a few places, and the others' creates go between its.
    let key = slot.key.clone();
    // The create's deadline to be recorded runs from its arrival, places in
    // line included: while storage fails, creates queued behind the ones
    // waiting on it are answered in time too, and never sent later for a
    // member who has long given up.
    let deadline = Instant::now() + state.create_record_timeout();
    let turns = async { (key.create_turn().await, state.upstream_create_turn().await) };
    let Ok((_key_turn, _turn)) = tokio::time::timeout_at(deadline, turns).await else {
        return Err(storage_unavailable("waiting for a turn behind creates that storage did not record"));
    };
    // Time-ordered, so each new row goes at the end of the table's index
    // rather than on a random page that the commit must then rewrite.
    let local_id = uuid::Uuid::now_v7().to_string();
    let new_job = NewJob {
        local_id: local_id.clone(),
        key_id: record.id,
        model: model.clone(),
        idempotency_key,
        request_hash,
        reserved: slot.expected,
        prompt: value.get("prompt").and_then(|p| p.as_str()).map(|p| clip(p, MAX_PROMPT_KEPT)),
        input: describe_inputs(&model, &value),
    };
    // Storage that refuses writes answers the create within a bounded
    // time, with nothing sent upstream, rather than holding it open.
    match state.writer().begin_by(new_job, deadline).await {
        Ok(WriteOutcome::Begun(Begun::Inserted)) => {}
        Ok(WriteOutcome::Begun(Begun::Existing(existing))) => {
            return replay(&state, &existing, &request_hash);
        }
        // Counted across every replica sharing the store: this one's own count had room.
        Ok(WriteOutcome::Begun(Begun::OverLimit(reached))) => {
            return Err(refused(match reached {
                LimitReached::Unfinished(max) => Refusal::Unfinished(max),
                LimitReached::Budget { remaining, expected } => Refusal::Budget { remaining, expected },
            }));
        }
        Ok(other) => {
            return Err(ApiError::internal(&format!("a create was recorded as {other:?}")));
        }
        Err(WriteError::Unavailable(cause)) => return Err(storage_unavailable(&cause)),
        Err(e) => {
            return Err(ApiError::internal(&e));
        }
    }

    // Our job id goes upstream as X-Client-Request-Id, so that a create
    // whose answer is lost can be found in the upstream's request logs.
    let client_request_id =
        aimlvid::ClientRequestId::new(local_id.clone()).map_err(|e| ApiError::internal(&e))?;
    match state.upstream().create_with_id(&RawBody { model: model.clone(), value }, &client_request_id).await
    {
        Ok(generation) => {
            state.breaker().succeeded();
            let body = serde_json::to_string(&generation).map_err(|e| ApiError::internal(&e))?;
            let answer = crate::view::encode(&generation);
            let created = JobWrite::Created {
                local_id: local_id.clone(),
                generation_id: generation.id.clone(),
                status: generation.status.as_str().to_owned(),
                body,
                receipt: generation.receipt.as_ref().map(crate::engine::recover::receipt_json),
            };
            // The writer retries until storage takes it. Only a stopping
            // server (or a write storage refuses) gets here without it: then
            // the row stays `pending`, becomes `unknown` at the next start
            // and is found again in the upstream's logs; the member is told,
            // never answered 200 for a job the server has not stored.
            if let Err(e) = state.writer().write(created).await {
                tracing::error!(generation_id = %generation.id, local_id, error = %e, "could not record a created job");
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "The upstream accepted this create as generation {}, but the server could not \
                         record it yet; it will be found again after a restart. Ask the server's operator, \
                         and do not create it again.",
                        generation.id
                    ),
                ));
            }
            slot.keep(&state, &generation.id, &model);
            tracing::debug!(generation_id = %generation.id, key = %record.name, "created");
            if generation.status.is_finished() {
                // Not stored only if the server is stopping; the answer still names the job.
                state.record(record.id, &generation).await;
            } else {
                let view = crate::view::JobView {
                    key_id: record.id,
                    status: generation.status.clone(),
                    body: answer.clone(),
                };
                state.jobs().put(&generation.id, view);
                state.follow(FollowJob {
                    id: generation.id.clone(),
                    key_id: record.id,
                    model,
                    age: Duration::ZERO,
                    status: generation.status.clone(),
                    fresh: true,
                });
            }
            Ok(Accepted { local_id, body: answer })
        }
        Err(aimlvid::Error::CreateOutcomeUnknown { cause, .. }) => {
            tracing::error!(local_id, cause, "create outcome unknown; not retried");
            state.metrics().create_unknown();
            slot.keep_while_unknown(&state, &local_id, &model);
            let unknown = JobWrite::Unknown { local_id: local_id.clone(), note: cause };
            if let Err(e) = state.writer().write(unknown).await {
                tracing::error!(local_id, error = %e, "could not record an unknown create");
            }
            Err(ApiError::new(StatusCode::BAD_GATEWAY, UNKNOWN_OUTCOME))
        }
        Err(e) => {
            if matches!(e, aimlvid::Error::Unauthorized { .. }) {
                state.breaker().trip();
            }
            if let Err(e) = state.writer().write(JobWrite::Abandon { local_id: local_id.clone() }).await {
                tracing::error!(local_id, error = %e, "could not forget a refused create");
            }
            Err(upstream_error(e))
        }
    }
}

/// A create refused because storage could not record it in time: nothing
/// was sent upstream.
fn storage_unavailable(cause: &str) -> ApiError {
    tracing::error!(cause, "a create could not be recorded in time; refused, nothing sent upstream");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server cannot record new generations right now (its storage is failing), so this \
         create was not sent upstream and nothing was charged. Try again shortly.",
    )
    .with_retry_after(Some(5))
}

/// The answer to a create repeated with the same `Idempotency-Key`.
fn replay(state: &AppState, existing: &JobRecord, request_hash: &[u8; 32]) -> Result<Accepted, ApiError> {
    if existing.request_hash.as_slice() != request_hash {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This Idempotency-Key was already used with a different request body",
        ));
    }
    if let Some(id) = &existing.generation_id {
        let view = state.jobs().get(id);
        let body = match view {
            Some(view) => view.body.clone(),
            None => view_of(existing).map(|(_, v)| v.body).unwrap_or_default(),
        };
        return Ok(Accepted { local_id: existing.local_id.clone(), body });
    }
    if existing.status == status::PENDING {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "A request with this Idempotency-Key is still in progress; try again shortly",
        ));
    }
    Err(ApiError::new(StatusCode::BAD_GATEWAY, UNKNOWN_OUTCOME))
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
    let key_id = key.id();
    if let Some(view) = state.jobs().get(&id) {
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
            state.jobs().put(&id, view);
            Ok(json(StatusCode::OK, body))
        }
        Some(_) => Err(ApiError::not_found()),
        None => {
            state.unknown_ids().remember_absent(&id);
            Err(ApiError::not_found())
        }
    }
}

/// An upstream refusal as the member should see it: the upstream's own
/// status and message where they concern the member's request, a 502
/// where they concern this server.
pub(crate) fn upstream_error(error: aimlvid::Error) -> ApiError {
    use aimlvid::Error as E;
    match error {
        E::InvalidRequest { message, details, .. } => {
            let errors: Vec<_> = details.into_iter().map(|d| serde_json::json!({ "message": d })).collect();
            let error = ApiError::new(StatusCode::BAD_REQUEST, message);
            if errors.is_empty() { error } else { error.with_errors(errors.into()) }
        }
        // The team's balance is the operator's business, not the member's.
        E::OutOfCredits { message, .. } => {
            tracing::error!(upstream_message = %message, "the upstream refused a create for the team's credits");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The upstream refused this create for the team's account (credits or billing); the \
                 server's operator has been told. Nothing was created.",
            )
        }
        E::NotFound { .. } => ApiError::not_found(),
        E::RateLimited { message, retry_after } => {
            ApiError::too_many(message, retry_after.unwrap_or(Duration::from_secs(1)))
        }
        E::Upstream { status, message, retry_after, .. } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            ApiError::new(status, message).with_retry_after(retry_after.map(|d| d.as_secs().max(1)))
        }
        E::Unauthorized { .. } => key_refused_upstream(crate::engine::breaker::DEFAULT_BREAKER_WINDOW),
        other => {
            tracing::warn!(error = %other, "upstream call failed");
            ApiError::new(StatusCode::BAD_GATEWAY, "The upstream could not be reached")
        }
    }
}
