//! The one create path: a create whose key was admitted and whose body was
//! read is checked (the key's models, the catalog, the upstream's
//! catalogue, the breaker, the key's limits), recorded before it is sent,
//! sent once, and followed. The API and the team page both come here and
//! render its result in their own way.

use std::sync::Arc;
use std::time::Duration;

use aimlvid::CreateRequest;
use axum::http::StatusCode;
use bytes::Bytes;
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use super::{Admitted, Jobs, Refusal, RefusalKind};
use crate::engine::scheduler::FollowJob;
use crate::engine::writer::WriteError;
use crate::keys::{KeyEntry, Refusal as LimitRefusal};
use crate::reservations::Reservation;
use crate::store::{Begun, JobRecord, JobWrite, LimitReached, NewJob, WriteOutcome, status};
use crate::view::view_of;

/// Why a create whose answer was lost is not retried, and what to do: with
/// an `Idempotency-Key`, repeat it; without one, wait for the server to
/// find the job, and never create it again.
fn unknown_outcome(with_idempotency_key: bool) -> String {
    let then = if with_idempotency_key {
        "repeat this request with the same Idempotency-Key in a minute to get the job once it is found, \
         and do not create it again without one."
    } else {
        "once found, the job is followed and listed with this key's jobs. Do not create it again; \
         send an Idempotency-Key with creates so that a repeat finds the first."
    };
    format!(
        "The upstream may have accepted this create, but its answer was lost: a generation may exist \
         and be billed. It was not retried, so that it is not paid for twice. The server looks it up in \
         the upstream's request logs: {then}"
    )
}

pub(crate) fn refused(refusal: LimitRefusal) -> Refusal {
    match refusal {
        LimitRefusal::Rate(wait) => Refusal::too_many("Too many requests for this API key; slow down", wait),
        LimitRefusal::Unfinished(max) => Refusal::too_many(
            format!("This API key already has {max} unfinished generations; wait for one to finish"),
            Duration::from_secs(5),
        ),
        LimitRefusal::Budget { remaining, expected } => Refusal::new(
            StatusCode::FORBIDDEN,
            format!(
                "This API key's credit budget does not cover this generation: about {expected:.0} credits \
                 expected, {remaining:.0} left once the generations in progress are paid for"
            ),
        )
        .of_kind(RefusalKind::Budget),
    }
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

/// A create the upstream accepted (or an earlier one with the same
/// `Idempotency-Key`): what each front renders in its own way.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// This server's id for the job.
    pub(crate) local_id: String,
    /// The generation as members read it, encoded.
    pub(crate) body: Bytes,
}

/// A create as a front read it.
#[derive(Debug)]
pub(crate) struct NewCreate {
    /// The body, as the upstream's create takes it.
    pub(crate) value: serde_json::Value,
    /// SHA-256 of the body as sent, to tell a repeated create from a different one.
    pub(crate) request_hash: [u8; 32],
    /// The member's `Idempotency-Key`, if any.
    pub(crate) idempotency_key: Option<String>,
    /// The video (generation id) this create remixes, if it is a remix.
    pub(crate) remixed_from: Option<String>,
}

/// The header that makes a create safe to repeat.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// A create's `Idempotency-Key`, if it sent one, as every front takes it:
/// one header of 1 to 255 visible ASCII characters (no spaces).
pub(crate) fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, Refusal> {
    let mut sent = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = sent.next() else { return Ok(None) };
    // Two keys could each name a different job: which was meant is not ours to guess.
    if sent.next().is_some() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key was sent more than once; send it once per request",
        ));
    }
    let key = value.as_bytes();
    if key.is_empty() || key.len() > 255 || !key.iter().all(u8::is_ascii_graphic) {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1 to 255 visible ASCII characters, without spaces",
        ));
    }
    Ok(Some(String::from_utf8_lossy(key).into_owned()))
}

impl Jobs {
    /// The one create path: checked against the key's models and limits,
    /// the catalog and the upstream's catalogue, then recorded, sent and
    /// followed. A refusal carries the status and message the upstream's
    /// API would answer.
    pub(crate) async fn create(&self, member: &Admitted, create: NewCreate) -> Result<Accepted, Refusal> {
        create_job(self, member.key().clone(), create).await
    }
}

async fn create_job(jobs: &Jobs, key: Arc<KeyEntry>, create: NewCreate) -> Result<Accepted, Refusal> {
    let NewCreate { value, request_hash, idempotency_key, remixed_from } = create;
    let jobs = jobs.clone();
    let model = value.get("model").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
    let record = key.record();
    if let Some(allowed) = &record.limits.allowed_models
        && !allowed.iter().any(|pattern| model_fits(pattern, &model))
    {
        return Err(Refusal::new(StatusCode::FORBIDDEN, format!("This API key may not use model {model:?}"))
            .of_kind(RefusalKind::Permission));
    }
    check_against_catalog(&value)?;
    check_parameter_size(&value)?;
    // By its id: the client sends an alias as the id it stands for.
    if let Some(nearest) = jobs.catalogue().no_longer_listed(&jobs.upstream().resolve_model(&model)) {
        return Err(Refusal::new(
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
            jobs.store().job_by_idempotency_key(record.id, idem).await.map_err(|e| Refusal::internal(&e))?
    {
        return replay(&jobs, &existing, &request_hash);
    }

    if let Some(left) = jobs.breaker().open_for() {
        return Err(key_refused_upstream(left));
    }
    let slot = jobs.reservations().reserve(key.clone(), &model, &value).map_err(refused)?;
    let accepted = AcceptCreate { key, record, model, value, idempotency_key, request_hash, remixed_from };
    let task = jobs.spawn_create(accept(jobs.clone(), slot, accepted));
    task.await.map_err(|e| Refusal::internal(&format!("a create task ended abnormally: {e}")))?
}

/// The most a create's parameters may take, media sent inline aside: they
/// are kept beside the job and in memory, so a prompt or a passed-through
/// field of megabytes would cost every read of the job.
const MAX_PARAMETER_BYTES: usize = 64 * 1024;

fn check_parameter_size(value: &serde_json::Value) -> Result<(), Refusal> {
    fn text_bytes(value: &serde_json::Value) -> usize {
        use serde_json::Value;
        match value {
            Value::String(s) if s.starts_with("data:") => 0,
            Value::String(s) => s.len(),
            Value::Array(items) => items.iter().map(text_bytes).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + text_bytes(v)).sum(),
            _ => 8,
        }
    }
    let bytes = text_bytes(value);
    if bytes > MAX_PARAMETER_BYTES {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "The create's parameters take {bytes} bytes (media sent inline aside); at most {MAX_PARAMETER_BYTES} \
                 are taken: shorten the prompt or leave out fields the model does not use"
            ),
        ));
    }
    Ok(())
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
fn check_against_catalog(value: &serde_json::Value) -> Result<(), Refusal> {
    use aimlvid::catalog::Invalid;
    match aimlvid::catalog::validate(value) {
        Ok(_) | Err(Invalid::UnknownModel { .. }) => Ok(()),
        Err(Invalid::Refused { issues, .. }) => {
            let errors: Vec<_> = issues.iter().map(aimlvid::catalog::Issue::to_json).collect();
            Err(Refusal::new(StatusCode::BAD_REQUEST, "Body validation error").with_errors(errors.into()))
        }
        Err(other) => Err(Refusal::new(StatusCode::BAD_REQUEST, other.to_string())),
    }
}

/// The answer while the upstream refuses this server's key: the member
/// can do nothing about it but wait; the operator must replace the key.
fn key_refused_upstream(retry_after: Duration) -> Refusal {
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The upstream refuses this server's API key, so creates are paused; the server's operator \
         must replace it. Nothing was created.",
    )
    .with_retry_after(Some(retry_after.as_secs().max(1)))
}

/// A create that passed the checks.
struct AcceptCreate {
    key: Arc<KeyEntry>,
    record: Arc<crate::store::KeyRecord>,
    model: String,
    value: serde_json::Value,
    idempotency_key: Option<String>,
    request_hash: [u8; 32],
    remixed_from: Option<String>,
}

/// The create body as kept beside the job: each media value sent inline
/// (a `data:` URI, wherever it is) replaced by `null`, and the names of
/// the parameters that held one. Never the data, which may be tens of
/// megabytes, and is the member's.
fn stored_params(value: &serde_json::Value) -> (serde_json::Value, Option<String>) {
    fn strip(value: &mut serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(s) if s.starts_with("data:") => {
                *value = serde_json::Value::Null;
                true
            }
            // Every value is stripped: no short cut past the first found.
            serde_json::Value::Array(items) => items.iter_mut().map(strip).filter(|&found| found).count() > 0,
            serde_json::Value::Object(map) => map.values_mut().map(strip).filter(|&found| found).count() > 0,
            _ => false,
        }
    }
    let mut params = value.clone();
    let mut inline = Vec::new();
    if let serde_json::Value::Object(map) = &mut params {
        for (name, v) in map.iter_mut() {
            if strip(v) {
                inline.push(name.clone());
            }
        }
    }
    (params, (!inline.is_empty()).then(|| inline.join(",")))
}

/// Records, sends and follows one create; runs in its own task.
async fn accept(jobs: Jobs, slot: Reservation, create: AcceptCreate) -> Result<Accepted, Refusal> {
    let AcceptCreate { key, record, model, value, idempotency_key, request_hash, remixed_from } = create;
    // Fair shares of the upstream: a key waits for one of its own places,
    // then for one of the server's, so a key sending thousands of creates
    // at once holds a few places, and the others' creates go between its.
    // The create's deadline to be recorded runs from its arrival, places in
    // line included: while storage fails, creates queued behind the ones
    // waiting on it are answered in time too, and never sent later for a
    // member who has long given up.
    let deadline = Instant::now() + jobs.create_record_timeout();
    let turns = async { (key.create_turn().await, jobs.upstream_create_turn().await) };
    let with_idempotency_key = idempotency_key.is_some();
    let Ok((_key_turn, _turn)) = tokio::time::timeout_at(deadline, turns).await else {
        return Err(storage_unavailable("waiting for a turn behind creates that storage did not record"));
    };
    // Time-ordered, so each new row goes at the end of the table's index
    // rather than on a random page that the commit must then rewrite.
    let local_id = uuid::Uuid::now_v7().to_string();
    let (params, inline_media) = stored_params(&value);
    let asked = crate::view::JobRequest {
        key_id: record.id,
        model: model.clone(),
        prompt: value.get("prompt").and_then(|p| p.as_str()).map(|p| clip(p, MAX_PROMPT_KEPT)),
        params: Some(Arc::new(params)),
        inline_media,
        created_at: crate::calendar::unix_now(),
        finished_at: None,
        remixed_from,
        hidden: false,
        openai_video: std::sync::OnceLock::new(),
    };
    let new_job = NewJob {
        local_id: local_id.clone(),
        key_id: record.id,
        model: model.clone(),
        idempotency_key,
        request_hash,
        reserved: slot.credits(),
        prompt: asked.prompt.clone(),
        input: describe_inputs(&model, &value),
        created_at: asked.created_at,
        params: asked.params.as_ref().map(|p| p.to_string()),
        inline_media: asked.inline_media.clone(),
        remixed_from: asked.remixed_from.clone(),
    };
    // Storage that refuses writes answers the create within a bounded
    // time, with nothing sent upstream, rather than holding it open.
    match jobs.writer().begin_by(new_job, deadline).await {
        Ok(WriteOutcome::Begun(Begun::Inserted)) => {}
        Ok(WriteOutcome::Begun(Begun::Existing(existing))) => {
            return replay(&jobs, &existing, &request_hash);
        }
        // Counted across every replica sharing the store: this one's own count had room.
        Ok(WriteOutcome::Begun(Begun::OverLimit(reached))) => {
            return Err(refused(match reached {
                LimitReached::Unfinished(max) => LimitRefusal::Unfinished(max),
                LimitReached::Budget { remaining, expected } => LimitRefusal::Budget { remaining, expected },
            }));
        }
        Ok(other) => {
            return Err(Refusal::internal(&format!("a create was recorded as {other:?}")));
        }
        Err(WriteError::Unavailable(cause)) => return Err(storage_unavailable(&cause)),
        Err(e) => {
            return Err(Refusal::internal(&e));
        }
    }

    // Our job id goes upstream as X-Client-Request-Id, so that a create
    // whose answer is lost can be found in the upstream's request logs.
    let client_request_id =
        aimlvid::ClientRequestId::new(local_id.clone()).map_err(|e| Refusal::internal(&e))?;
    match jobs.upstream().create_with_id(&RawBody { model: model.clone(), value }, &client_request_id).await {
        Ok(generation) => {
            jobs.breaker().succeeded();
            let body = serde_json::to_string(&generation).map_err(|e| Refusal::internal(&e))?;
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
            if let Err(e) = jobs.writer().write(created).await {
                tracing::error!(generation_id = %generation.id, local_id, error = %e, "could not record a created job");
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "The upstream accepted this create as generation {}, but the server could not \
                         record it yet; it will be found again after a restart. Ask the server's operator, \
                         and do not create it again.",
                        generation.id
                    ),
                ));
            }
            slot.running(&generation.id);
            jobs.requests().put(&generation.id, asked);
            tracing::debug!(generation_id = %generation.id, key = %record.name, "created");
            if generation.status.is_finished() {
                // Not stored only if the server is stopping; the answer still names the job.
                jobs.record(record.id, &generation).await;
            } else {
                let view = crate::view::JobView {
                    key_id: record.id,
                    status: generation.status.clone(),
                    body: answer.clone(),
                };
                jobs.views().put(&generation.id, view);
                jobs.follow(FollowJob {
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
            jobs.metrics().create_unknown();
            slot.unknown(&local_id);
            let unknown = JobWrite::Unknown { local_id: local_id.clone(), note: cause };
            if let Err(e) = jobs.writer().write(unknown).await {
                tracing::error!(local_id, error = %e, "could not record an unknown create");
            }
            Err(Refusal::new(StatusCode::BAD_GATEWAY, unknown_outcome(with_idempotency_key)))
        }
        Err(e) => {
            if matches!(e, aimlvid::Error::Unauthorized { .. }) {
                jobs.breaker().trip();
            }
            if let Err(e) = jobs.writer().write(JobWrite::Abandon { local_id: local_id.clone() }).await {
                tracing::error!(local_id, error = %e, "could not forget a refused create");
            }
            Err(upstream_error(e))
        }
    }
}

/// A create refused because storage could not record it in time: nothing
/// was sent upstream.
fn storage_unavailable(cause: &str) -> Refusal {
    tracing::error!(cause, "a create could not be recorded in time; refused, nothing sent upstream");
    Refusal::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "The server cannot record new generations right now (its storage is failing), so this \
         create was not sent upstream and nothing was charged. Try again shortly.",
    )
    .with_retry_after(Some(5))
}

/// The answer to a create repeated with the same `Idempotency-Key`.
fn replay(jobs: &Jobs, existing: &JobRecord, request_hash: &[u8; 32]) -> Result<Accepted, Refusal> {
    if existing.request_hash.as_slice() != request_hash {
        return Err(Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This Idempotency-Key was already used with a different request body",
        ));
    }
    if let Some(id) = &existing.generation_id {
        let view = jobs.views().get(id);
        let body = match view {
            Some(view) => view.body.clone(),
            None => view_of(existing).map(|(_, v)| v.body).unwrap_or_default(),
        };
        return Ok(Accepted { local_id: existing.local_id.clone(), body });
    }
    if existing.status == status::PENDING {
        return Err(Refusal::new(
            StatusCode::CONFLICT,
            "A request with this Idempotency-Key is still in progress; try again shortly",
        ));
    }
    Err(Refusal::new(StatusCode::BAD_GATEWAY, unknown_outcome(true)))
}

/// An upstream refusal as the member should see it: the upstream's own
/// status and message where they concern the member's request, a 502
/// where they concern this server.
fn upstream_error(error: aimlvid::Error) -> Refusal {
    use aimlvid::Error as E;
    match error {
        E::InvalidRequest { message, details, .. } => {
            let errors: Vec<_> = details.into_iter().map(|d| serde_json::json!({ "message": d })).collect();
            let error = Refusal::new(StatusCode::BAD_REQUEST, message);
            if errors.is_empty() { error } else { error.with_errors(errors.into()) }
        }
        // The team's balance is the operator's business, not the member's.
        E::OutOfCredits { message, .. } => {
            tracing::error!(upstream_message = %message, "the upstream refused a create for the team's credits");
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "The upstream refused this create for the team's account (credits or billing); the \
                 server's operator has been told. Nothing was created.",
            )
        }
        E::NotFound { .. } => Refusal::new(StatusCode::NOT_FOUND, "Generation not found"),
        E::RateLimited { message, retry_after } => {
            Refusal::too_many(message, retry_after.unwrap_or(Duration::from_secs(1)))
        }
        E::Upstream { status, message, retry_after, .. } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            Refusal::new(status, message).with_retry_after(retry_after.map(|d| d.as_secs().max(1)))
        }
        E::Unauthorized { .. } => key_refused_upstream(crate::engine::breaker::DEFAULT_BREAKER_WINDOW),
        other => {
            tracing::warn!(error = %other, "upstream call failed");
            Refusal::new(StatusCode::BAD_GATEWAY, "The upstream could not be reached")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_is_one_header_of_visible_ascii() {
        let key = |values: &[&[u8]]| {
            let mut headers = axum::http::HeaderMap::new();
            for value in values {
                headers.append(IDEMPOTENCY_KEY, axum::http::HeaderValue::from_bytes(value).unwrap());
            }
            idempotency_key(&headers)
        };
        assert_eq!(key(&[]), Ok(None));
        assert_eq!(key(&[b"order-17"]), Ok(Some("order-17".to_owned())));
        assert_eq!(key(&["k".repeat(255).as_bytes()]), Ok(Some("k".repeat(255))));
        for bad in [&b""[..], b"a b", b"a\tb", "caf\u{e9}".as_bytes(), b"\xe9", "k".repeat(256).as_bytes()] {
            let refusal = key(&[bad]).expect_err("refused");
            assert_eq!(refusal.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(refusal.message.contains("1 to 255 visible ASCII"), "{}", refusal.message);
        }
        let twice = key(&[b"one", b"two"]).expect_err("two keys are refused");
        assert!(twice.message.contains("more than once"), "{}", twice.message);
    }

    #[test]
    fn parameters_past_64_kib_are_refused_but_inline_media_does_not_count() {
        let long = "x".repeat(MAX_PARAMETER_BYTES + 1);
        let refused = check_parameter_size(&serde_json::json!({"prompt": long})).unwrap_err();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(refused.message.contains("at most 65536"), "{}", refused.message);
        let junk = serde_json::json!({"prompt": "p", "junk": {"deep": [long]}});
        assert!(check_parameter_size(&junk).is_err());
        let media = format!("data:video/mp4;base64,{}", "A".repeat(10 * MAX_PARAMETER_BYTES));
        assert!(check_parameter_size(&serde_json::json!({"prompt": "p", "video_url": media})).is_ok());
    }

    #[test]
    fn inline_media_is_left_out_of_the_stored_parameters_and_named() {
        let body = serde_json::json!({
            "model": "m",
            "prompt": "p",
            "image_url": "data:image/png;base64,AAAA",
            "reference_images": ["https://example.com/a.png", "data:image/jpeg;base64,BBBB"],
            "video_url": "https://example.com/v.mp4",
        });
        let (params, inline) = stored_params(&body);
        assert_eq!(params["image_url"], serde_json::Value::Null);
        assert_eq!(params["reference_images"], serde_json::json!(["https://example.com/a.png", null]));
        assert_eq!((&params["video_url"], &params["prompt"]), (&body["video_url"], &body["prompt"]));
        assert_eq!(inline.as_deref(), Some("image_url,reference_images"));
        assert_eq!(stored_params(&serde_json::json!({"prompt": "p"})).1, None);
    }
}
