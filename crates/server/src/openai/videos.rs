//! A member's videos as OpenAI's API reads them: one video's metadata
//! (from memory when it is there, else from storage once), the member's
//! list, deletion (hiding: nothing is deleted upstream), and remix (a new
//! create through [`crate::jobs::Jobs::create`] from a video's stored
//! parameters and a new prompt).

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::object::{self, VideoAnswer};
use super::{OpenAiError, answer, authenticate, read_fields};
use crate::api::Authorization;
use crate::jobs::NewCreate;
use crate::state::AppState;
use crate::store::{JobFilter, JobSummary, KeyId};
use crate::view::{FixedVideo, JobRequest, JobView};

/// Videos listed at most per page, and unless asked otherwise.
const MAX_LIMIT: u32 = 100;
const DEFAULT_LIMIT: u32 = 20;

/// A video of `key_id`'s, as it was asked for: from memory, else read from
/// storage once (another replica may have created it, or it was pushed
/// out) and kept. Another member's video, one deleted, and one that does
/// not exist answer alike: 404.
pub(super) async fn own_video(
    state: &AppState,
    key_id: KeyId,
    id: &str,
) -> Result<Arc<JobRequest>, OpenAiError> {
    // Longer than any id the upstream gives: not worth a storage read.
    if id.len() > super::MAX_VIDEO_ID {
        return Err(OpenAiError::not_found(id));
    }
    let requests = state.jobs().requests();
    let found = match requests.get(id) {
        Some(found) => found,
        None => read_video(state, id).await?.ok_or_else(|| OpenAiError::not_found(id))?,
    };
    if found.key_id != key_id || found.hidden {
        return Err(OpenAiError::not_found(id));
    }
    Ok(found)
}

/// Reads a video from storage into memory: what it was asked for, and its
/// state if memory has none. `None` if storage does not have it.
async fn read_video(state: &AppState, id: &str) -> Result<Option<Arc<JobRequest>>, OpenAiError> {
    // Made-up ids cost storage at most one read each now and then, as on the native API.
    if state.unknown_ids().known_absent(id) {
        return Ok(None);
    }
    let _turn = state.unknown_ids().lookup().await;
    state.metrics().storage_read();
    let summary = state.store().generation_summary(id).await.map_err(|e| OpenAiError::internal(&e))?;
    let Some(summary) = summary else {
        state.unknown_ids().remember_absent(id);
        return Ok(None);
    };
    Ok(remember(state, &summary))
}

/// Keeps a stored job in memory: what it was asked for, and its state if
/// memory has none (a finished job pushed out).
fn remember(state: &AppState, summary: &JobSummary) -> Option<Arc<JobRequest>> {
    let (id, request) = JobRequest::of_summary(summary)?;
    if state.views().get(&id).is_none() {
        let view = crate::view::stored_view(&id, summary.key_id, summary.body.as_deref(), &summary.status);
        state.views().put(&id, view);
    }
    Some(state.jobs().requests().put(&id, request))
}

/// A video object for a job: its state from memory (`view`, or `stored`,
/// the body storage holds, when memory has none), the rest from what it
/// was asked for.
pub(super) fn video_of(
    state: &AppState,
    id: &str,
    request: &JobRequest,
    view: Option<Arc<JobView>>,
    stored: Option<&str>,
) -> Result<VideoAnswer, OpenAiError> {
    // The status from memory as it is; the body is read only for a failed
    // job's reason (a status read is the hot path, and most jobs succeed).
    let stored_status;
    let (status, failed_body): (&aimlvid::Status, Option<Value>) = match (&view, stored) {
        (Some(view), _) if view.status.is_failure() => {
            (&view.status, Some(serde_json::from_slice(&view.body).map_err(|e| OpenAiError::internal(&e))?))
        }
        (Some(view), _) => (&view.status, None),
        (None, Some(body)) => {
            let generation: Value = serde_json::from_str(body).map_err(|e| OpenAiError::internal(&e))?;
            stored_status = aimlvid::Status::from(generation["status"].as_str().unwrap_or("queued"));
            (&stored_status, Some(generation))
        }
        (None, None) => (&aimlvid::Status::Queued, None),
    };
    // What never changes, worked out once per job in memory.
    let fixed = request
        .openai_video
        .get_or_init(|| FixedVideo::of(id, request, &state.jobs().poll_plan(&request.model)));
    let error = failed_body.as_ref().map(|g| &g["error"]);
    Ok(object::video_answer(fixed, request, status, error, crate::calendar::unix_now()))
}

/// `GET /v1/videos/{id}`: from memory alone once the video was read (or
/// created here); a first read of one created elsewhere reads storage.
pub(super) async fn retrieve(
    State(state): State<AppState>,
    authorization: Authorization,
    super::VideoId(id): super::VideoId,
) -> Result<Response, OpenAiError> {
    let key = authenticate(&state, &authorization)?;
    let (request, view) = own_state(&state, key.key().id(), &id).await?;
    Ok(answer(video_of(&state, &id, &request, view, None)?))
}

/// A video of `key_id`'s ([`own_video`]) and its state: from memory alone
/// once the video was read (or created here), else storage once: for when
/// it ended, once storage has the end; for its state, if memory let that
/// go (a finished job pushed out of the views).
pub(super) async fn own_state(
    state: &AppState,
    key_id: KeyId,
    id: &str,
) -> Result<(Arc<JobRequest>, Option<Arc<JobView>>), OpenAiError> {
    let mut request = own_video(state, key_id, id).await?;
    let mut view = state.views().get(id);
    if view.is_none() || (request.finished_at.is_none() && view.as_ref().is_some_and(|v| v.is_finished())) {
        request = read_video(state, id).await?.unwrap_or(request);
        view = state.views().get(id);
    }
    Ok((request, view))
}

/// `GET /v1/videos`'s query.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    after: Option<String>,
    limit: Option<String>,
    order: Option<String>,
}

/// `GET /v1/videos`: the member's videos (the jobs the upstream accepted;
/// not those deleted), newest first unless `order=asc`, `limit` at a time
/// after the video `after`.
pub(super) async fn list(
    State(state): State<AppState>,
    authorization: Authorization,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, OpenAiError> {
    let key = authenticate(&state, &authorization)?;
    let key_id = key.key().id();
    let query = query.map_err(|e| OpenAiError::invalid("query", e.body_text()))?.0;
    let limit = match query.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(text) => text.parse().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
            OpenAiError::invalid(
                "limit",
                format!("Invalid 'limit' {text:?}: expected a whole number from 1 to {MAX_LIMIT}"),
            )
        })?,
    };
    let oldest_first = match query.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(other) => {
            return Err(OpenAiError::invalid(
                "order",
                format!("Invalid 'order' {other:?}: expected 'asc' or 'desc'"),
            ));
        }
    };
    let mut filter = JobFilter {
        key_id: Some(key_id),
        oldest_first,
        accepted_only: true,
        visible_only: true,
        limit: limit + 1,
        ..JobFilter::default()
    };
    if let Some(after) = &query.after {
        // The cursor's place, read from storage: the page is read there anyway.
        let cursor = state.store().generation_summary(after).await.map_err(|e| OpenAiError::internal(&e))?;
        let Some(cursor) = cursor.filter(|c| c.key_id == key_id) else {
            return Err(OpenAiError::invalid("after", format!("No video with id '{after}' to list after.")));
        };
        let place = Some((cursor.created_at, cursor.local_id));
        if oldest_first {
            filter.after = place;
        } else {
            filter.before = place;
        }
    }
    let mut rows = state.store().job_history(&filter).await.map_err(|e| OpenAiError::internal(&e))?;
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    // The videos are encoded already: the list is written around them.
    let mut body = br#"{"object":"list","data":["#.to_vec();
    let mut first = true;
    for row in &rows {
        let Some((id, request)) = JobRequest::of_summary(row) else { continue };
        if !std::mem::take(&mut first) {
            body.push(b',');
        }
        body.extend_from_slice(
            &video_of(&state, &id, &request, state.views().get(&id), row.body.as_deref())?.body,
        );
    }
    let ends = json!({
        "first_id": rows.first().and_then(|r| r.generation_id.as_deref()),
        "last_id": rows.last().and_then(|r| r.generation_id.as_deref()),
        "has_more": has_more,
    });
    body.extend_from_slice(b"],");
    body.extend_from_slice(&ends.to_string().as_bytes()[1..]);
    Ok(crate::api::json(StatusCode::OK, Bytes::from(body)))
}

/// `DELETE /v1/videos/{id}`: hides the video from its member. The job
/// stays: still followed and charged if unfinished, on the admin's page
/// and API, and in reconciliation; the upstream has no delete, so its file
/// stays there until it expires.
pub(super) async fn delete(
    State(state): State<AppState>,
    authorization: Authorization,
    super::VideoId(id): super::VideoId,
) -> Result<Response, OpenAiError> {
    let key = authenticate(&state, &authorization)?;
    own_video(&state, key.key().id(), &id).await?;
    state.jobs().hide(&id).await?;
    let body = json!({"id": id, "object": "video.deleted", "deleted": true});
    Ok(crate::api::json(StatusCode::OK, Bytes::from(body.to_string())))
}

/// The member's `Idempotency-Key`, if any, as the native API takes it.
pub(super) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, OpenAiError> {
    crate::jobs::idempotency_key(headers)
        .map_err(|refusal| OpenAiError::from(refusal).on_param("Idempotency-Key"))
}

/// `POST /v1/videos/{id}/remix` with `{"prompt"}` (JSON or multipart): the
/// video's model and parameters as stored, with the new prompt, created
/// through the one create path.
pub(super) async fn remix(
    State(state): State<AppState>,
    authorization: Authorization,
    super::VideoId(id): super::VideoId,
    request: Request,
) -> Result<Response, OpenAiError> {
    let key = authenticate(&state, &authorization)?;
    let idempotency_key = idempotency_key(request.headers())?;
    let fields = read_fields(&state, request).await?;
    let prompt = match fields.get("prompt") {
        Some(Value::String(p)) if !p.trim().is_empty() => p.clone(),
        _ => return Err(OpenAiError::invalid("prompt", "A remix needs a `prompt`: what to change")),
    };
    let (source, generation) = super::own_generation(&state, &key, &id).await?;
    if let Some(inline) = &source.inline_media {
        return Err(OpenAiError::invalid(
            "video_id",
            format!(
                "Video '{id}' was made from media sent inline ({inline}), which this server does not keep, so \
                 it cannot be remixed; create a new video instead, sending the media again (or its URL)."
            ),
        ));
    }
    let Some(params) = &source.params else {
        return Err(OpenAiError::invalid(
            "video_id",
            format!(
                "Video '{id}' was created before this server kept videos' parameters, so it cannot be \
                 remixed; create a new video instead."
            ),
        ));
    };
    // As Sora did: only a completed video is remixed (a failed one's
    // parameters may be why it failed; an unfinished one may yet fail).
    super::finished_file_url(&id, &generation)?;
    let mut value = Value::clone(params);
    value["prompt"] = Value::from(prompt);
    // The source is part of what was asked: the same prompt on another
    // video under the same Idempotency-Key is a different request.
    let mut hash = Sha256::new();
    hash.update(value.to_string().as_bytes());
    hash.update(b"\0remix of ");
    hash.update(id.as_bytes());
    let request_hash: [u8; 32] = hash.finalize().into();
    let create = NewCreate { value, request_hash, idempotency_key, remixed_from: Some(id) };
    let accepted = state.jobs().create(&key, create).await?;
    super::created(&state, &key, &accepted.body).await
}
