//! OpenAI's videos API (`/v1/videos`, as openai-python's `client.videos`
//! calls it) in front of every video model: a front like `api.rs`, which
//! reads requests in OpenAI's shape, creates through the one create path
//! ([`crate::jobs::Jobs::create`]) and answers `video` objects and
//! OpenAI's error shape.
//!
//! A video's id is the upstream's generation id, the id the native API
//! and the team page show: one job has one id whichever door a member
//! uses, and a status read is answered from the same in-memory views.

mod content;
mod extend;
mod map;
mod object;
mod videos;

use std::sync::Arc;

use aimlvid::catalog::{MediaKind, ModelSpec, ParamType};
use axum::Router;
use axum::extract::{FromRequest as _, Multipart, Request, State};
use axum::http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::api::Authorization;
use crate::jobs::{Admitted, NewCreate, Refusal, RefusalKind};
use crate::state::AppState;
use crate::view::JobRequest;
use object::answer;
use videos::retrieve;

/// The routes of this front.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/videos", post(create).get(videos::list).fallback(unsupported))
        .route("/v1/videos/{id}", get(retrieve).delete(videos::delete).fallback(unsupported))
        .route("/v1/videos/{id}/content", get(content::content).fallback(unsupported))
        .route("/v1/videos/{id}/remix", post(videos::remix).fallback(unsupported))
        .route("/v1/videos/extensions", post(extend::extend).fallback(unsupported))
        .route("/v1/videos/edits", any(not_offered))
        .route("/v1/videos/characters", any(not_offered))
        .route("/v1/videos/characters/{id}", any(not_offered))
        .route("/v1/videos/{id}/{*rest}", any(unsupported))
        .route("/v1/videos/", any(unsupported))
}

/// A video id from the path: one that cannot be read (bad UTF-8) or is
/// far longer than any id is a 404 in this front's shape, naming at most
/// the first characters of what was sent.
pub(super) struct VideoId(pub(super) String);

/// Longer than any generation id the upstream gives.
pub(super) const MAX_VIDEO_ID: usize = 200;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for VideoId {
    type Rejection = OpenAiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, OpenAiError> {
        let id = axum::extract::Path::<String>::from_request_parts(parts, state).await.map(|p| p.0);
        match id {
            Ok(id) if id.len() <= MAX_VIDEO_ID => Ok(VideoId(id)),
            Ok(id) => Err(OpenAiError::not_found(&id)),
            Err(_) => Err(OpenAiError {
                message: "No video has this id: it is not UTF-8.".into(),
                ..OpenAiError::not_found("")
            }),
        }
    }
}

/// Every route this front serves, as its 404s name them.
const SERVED: &str = "POST /v1/videos, GET /v1/videos, GET /v1/videos/{video_id}, \
    DELETE /v1/videos/{video_id}, POST /v1/videos/{video_id}/remix, \
    GET /v1/videos/{video_id}/content and POST /v1/videos/extensions";

/// What this front does not serve, in its own error shape rather than
/// the member API's, naming what it does serve.
async fn unsupported(method: Method, uri: Uri) -> OpenAiError {
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!("{method} {} is not served by this server; it serves {SERVED}", uri.path()),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
        retry_after: None,
    }
}

/// Video edits and characters: Sora's own features, which no model behind
/// this server offers in OpenAI's way, so they are not served at all.
async fn not_offered(method: Method, uri: Uri) -> OpenAiError {
    let what = if uri.path().starts_with("/v1/videos/edits") { "Video edits" } else { "Video characters" };
    OpenAiError {
        status: StatusCode::NOT_FOUND,
        message: format!(
            "{method} {}: {what} are not offered by this server (no model behind it has them); it serves {SERVED}",
            uri.path()
        ),
        kind: "invalid_request_error",
        param: None,
        code: Some("unknown_url"),
        retry_after: None,
    }
}

/// An error in OpenAI's shape: `{"error": {message, type, param, code}}`.
#[derive(Debug)]
pub(crate) struct OpenAiError {
    status: StatusCode,
    message: String,
    kind: &'static str,
    param: Option<String>,
    code: Option<&'static str>,
    retry_after: Option<u64>,
}

impl OpenAiError {
    /// The same error, naming the request parameter it is about.
    fn on_param(self, param: &str) -> Self {
        OpenAiError { param: Some(param.to_owned()), ..self }
    }

    fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.into()),
            code: None,
            retry_after: None,
        }
    }

    /// A video that does not exist and one of another member's read alike.
    fn not_found(id: &str) -> Self {
        // An id as ids look is named as OpenAI names it; anything else
        // (long, quoted, with spaces or control characters) cut short and
        // escaped, so a refusal never echoes what a client made up.
        let plain = id.len() <= 64 && id.bytes().all(|b| b.is_ascii_graphic() && !b"'\"\\".contains(&b));
        let named = if plain { format!("'{id}'") } else { map::shown(id) };
        OpenAiError {
            status: StatusCode::NOT_FOUND,
            message: format!("Video with id {named} not found."),
            kind: "invalid_request_error",
            param: Some("video_id".into()),
            code: Some("not_found"),
            retry_after: None,
        }
    }

    fn internal(cause: &dyn std::fmt::Display) -> Self {
        Refusal::internal(cause).into()
    }
}

impl From<Refusal> for OpenAiError {
    fn from(refusal: Refusal) -> Self {
        let status = refusal.status;
        // The catalog's 400 says "Body validation error" and lists the
        // issues: OpenAI's shape has one message and one param, so the
        // issues are the message and the first one's field the param.
        let (mut message, mut param) = (refusal.message, None);
        if let Some(Value::Array(issues)) = &refusal.issues {
            let said: Vec<String> = issues
                .iter()
                .map(|i| {
                    let path = i["path"].as_array().map(|p| {
                        p.iter().map(|s| s.to_string().replace('"', "")).collect::<Vec<_>>().join(".")
                    });
                    format!("{}: {}", path.unwrap_or_default(), i["message"].as_str().unwrap_or(""))
                })
                .collect();
            param = issues.first().and_then(|i| i["path"][0].as_str()).map(str::to_owned);
            message = format!("{message}: {}", said.join("; "));
        }
        let (kind, code) = match refusal.kind {
            RefusalKind::Unauthenticated => ("invalid_request_error", Some("invalid_api_key")),
            RefusalKind::Budget => ("insufficient_quota", Some("insufficient_quota")),
            RefusalKind::Permission => ("invalid_request_error", Some("permission_denied")),
            RefusalKind::Rate => ("requests", Some("rate_limit_exceeded")),
            _ if status.is_server_error() => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        OpenAiError { status, message, kind, param, code, retry_after: refusal.retry_after }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "message": self.message, "type": self.kind, "param": self.param, "code": self.code,
        }});
        let mut response =
            (self.status, [(CONTENT_TYPE, "application/json")], body.to_string()).into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        // The openai SDKs retry a 502 by themselves, without an
        // Idempotency-Key unless the member set one: a create whose answer
        // was lost must not be sent again (it may be paid for), and this
        // header is the one they heed.
        if self.status == StatusCode::BAD_GATEWAY {
            response.headers_mut().insert("x-should-retry", HeaderValue::from_static("false"));
        }
        response
    }
}

/// The member's key from `Authorization: Bearer KEY`, admitted by the jobs
/// service (enabled, within its request rate).
fn authenticate(state: &AppState, authorization: &Authorization) -> Result<Admitted, OpenAiError> {
    let unauthorized = |message: &str| OpenAiError::from(Refusal::new(StatusCode::UNAUTHORIZED, message));
    let presented = authorization
        .value()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            unauthorized("You didn't provide an API key: send it as `Authorization: Bearer <key>`")
        })?;
    // Never the key itself in the message: it may be a real secret pasted by mistake.
    let (key, _) =
        state.keys().authenticate(presented).ok_or_else(|| unauthorized("Incorrect API key provided."))?;
    Ok(state.jobs().admit(key)?)
}

/// `POST /v1/videos`: JSON, or multipart as openai-python always sends it.
async fn create(
    State(state): State<AppState>,
    authorization: Authorization,
    request: Request,
) -> Result<Response, OpenAiError> {
    let key = authenticate(&state, &authorization)?;
    let idempotency_key = videos::idempotency_key(request.headers())?;
    let fields = read_fields(&state, request).await?;
    let value = request_body(fields)?;
    create_video(&state, &key, value, idempotency_key).await
}

/// Creates `value` (the upstream's create body) through the one create
/// path and answers the new `video` object: every create of this front
/// comes here but a remix's, whose request hash also names its source.
async fn create_video(
    state: &AppState,
    key: &Admitted,
    value: Value,
    idempotency_key: Option<String>,
) -> Result<Response, OpenAiError> {
    // The body as sent upstream, so the same video asked for in JSON or
    // multipart is the same create to its Idempotency-Key.
    let request_hash: [u8; 32] = Sha256::digest(value.to_string().as_bytes()).into();
    let create = NewCreate { value, request_hash, idempotency_key, remixed_from: None };
    let accepted = state.jobs().create(key, create).await?;
    created(state, key, &accepted.body).await
}

/// The answer to a create the jobs service accepted (or replayed): the
/// video, as a read of it would answer.
async fn created(state: &AppState, key: &Admitted, body: &[u8]) -> Result<Response, OpenAiError> {
    let generation: Value = serde_json::from_slice(body).map_err(|e| OpenAiError::internal(&e))?;
    let id = generation["id"].as_str().unwrap_or_default();
    let request = videos::own_video(state, key.key().id(), id).await?;
    let view = state.views().get(id);
    Ok(answer(videos::video_of(state, id, &request, view, std::str::from_utf8(body).ok())?))
}

/// The member's own video `id`: what it was asked for and its generation
/// as last seen. Another member's, a deleted and an unknown id are the
/// same 404.
async fn own_generation(
    state: &AppState,
    key: &Admitted,
    id: &str,
) -> Result<(Arc<JobRequest>, Value), OpenAiError> {
    let (request, view) = videos::own_state(state, key.key().id(), id).await?;
    let generation = match view {
        Some(view) => serde_json::from_slice(&view.body).map_err(|e| OpenAiError::internal(&e))?,
        None => json!({"id": id, "status": "queued"}),
    };
    Ok((request, generation))
}

/// A finished video's file URL on the upstream's file host, or why there
/// is none in OpenAI's shape: the video is not finished, or failed.
fn finished_file_url(id: &str, generation: &Value) -> Result<String, OpenAiError> {
    let status = generation["status"].as_str().unwrap_or("queued");
    let not_ready = |message: String| OpenAiError {
        status: StatusCode::CONFLICT,
        message,
        kind: "invalid_request_error",
        param: Some("video_id".into()),
        code: Some("video_not_ready"),
        retry_after: None,
    };
    match status {
        "completed" | "complete" => {}
        "error" | "failed" => {
            let reason = generation["error"]["message"].as_str().filter(|m| !m.is_empty());
            return Err(OpenAiError {
                code: Some("video_failed"),
                ..not_ready(format!(
                    "Video '{id}' failed, so it has no content{}",
                    reason.map_or(String::new(), |r| format!(": {r}"))
                ))
            });
        }
        other => {
            let status = if matches!(other, "generating" | "in_progress") { "in_progress" } else { "queued" };
            return Err(not_ready(format!(
                "Video '{id}' is not finished: its status is {status}. Try again once it is completed."
            )));
        }
    }
    let video = &generation["video"];
    let url = video["url"].as_str().or_else(|| video[0]["url"].as_str());
    url.map(str::to_owned).ok_or_else(|| OpenAiError {
        status: StatusCode::BAD_GATEWAY,
        message: format!("Video '{id}' is completed but the upstream named no file for it"),
        kind: "server_error",
        param: None,
        code: None,
        retry_after: None,
    })
}

/// The most fields a create's form may have: the SDKs send a handful.
const MAX_FORM_FIELDS: usize = 256;

/// A create's fields as JSON values: the JSON body's, or the multipart
/// form's (text as strings, a file as a `data:` URI, as the CLI sends media).
async fn read_fields(state: &AppState, request: Request) -> Result<Map<String, Value>, OpenAiError> {
    let content_type =
        request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    // Whole first, as the native API reads it: within the body limit, and
    // at a pace a slow sender cannot stretch to hold the connection.
    let (parts, body) = request.into_parts();
    let bytes = crate::api::read_body(body, &parts.headers, state.body_limit(), state.front_limits())
        .await
        .map_err(|e| OpenAiError::from(Refusal::new(e.status(), e.message())))?;
    if content_type.starts_with("multipart/form-data") {
        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
        let mut form = Multipart::from_request(request, state)
            .await
            .map_err(|e| OpenAiError::invalid("body", format!("The form could not be read: {e}")))?;
        let mut fields = Vec::new();
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| OpenAiError::invalid("body", format!("The form could not be read: {e}")))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            let file = field.file_name().is_some();
            let mime = field.content_type().unwrap_or("application/octet-stream").to_owned();
            let bytes = field.bytes().await.map_err(|e| {
                OpenAiError::invalid(name.clone(), format!("The form could not be read: {e}"))
            })?;
            let value = if file {
                Value::from(format!(
                    "data:{mime};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                ))
            } else {
                Value::from(String::from_utf8_lossy(&bytes).into_owned())
            };
            fields.push((name, value));
            if fields.len() > MAX_FORM_FIELDS {
                return Err(OpenAiError::invalid(
                    "body",
                    format!("The form has more than {MAX_FORM_FIELDS} fields; a video takes a few"),
                ));
            }
        }
        return map::nest_form_fields(fields).map_err(|name| {
            OpenAiError::invalid(
                "body",
                format!("The form field {name} nests deeper than {} levels", map::MAX_FORM_DEPTH),
            )
        });
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(OpenAiError::invalid("body", "The body must be a JSON object, or a multipart form")),
    }
}

/// OpenAI's fields as the model's create body: `model` by this API's id,
/// `seconds` and `size` as its parameters, `input_reference` on its image
/// parameter, every other field passed through.
fn request_body(mut fields: Map<String, Value>) -> Result<Value, OpenAiError> {
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let unreadable = |why: &str| OpenAiError::invalid("input_reference", why);
    let reference = match fields.remove("input_reference") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(Value::Object(o)) if o.contains_key("file_id") => {
            return Err(unreadable(
                "This server keeps no files, so `input_reference.file_id` cannot be read: upload the image, or send {\"image_url\": \"https://…\"}",
            ));
        }
        Some(Value::Object(o)) if o.get("image_url").is_some_and(Value::is_string) => {
            o.get("image_url").and_then(Value::as_str).map(str::to_owned)
        }
        Some(_) => {
            return Err(unreadable(
                "`input_reference` must be an uploaded image or {\"image_url\": \"https://…\"}",
            ));
        }
    };
    let name = fields.remove("model").map(text).unwrap_or_else(|| "sora-2".into());
    let id = map::model_id(&name, reference.is_some());
    let spec: Option<&ModelSpec> = aimlvid::catalog::model(&id).or_else(|| aimlvid::catalog::resolve(&id));
    let id = spec.map_or(id, |s| s.id.clone());
    let (seconds, mut size) = (fields.remove("seconds").map(text), fields.remove("size").map(text));
    // Code written for Sora that leaves `size` out gets Sora's default,
    // portrait 720x1280, not the catalog model's landscape one.
    if size.is_none() && map::is_openai_name(&name) && !body_sets_shape(&fields) {
        size = Some(map::SORA_DEFAULT_SIZE.to_owned());
    }
    let mut body = Map::new();
    if let Some(spec) = spec {
        typed_fields(spec, &mut fields);
    }
    body.extend(fields);
    body.insert("model".into(), Value::from(id.clone()));
    let unfit = |u: map::Unfit| OpenAiError::invalid(u.param, u.message);
    match (spec, seconds) {
        (Some(spec), Some(s)) => {
            let (name, value) = map::duration(spec, &s).map_err(unfit)?;
            body.insert(name, value);
        }
        (None, Some(s)) => {
            let n: i64 = s.parse().map_err(|_| {
                OpenAiError::invalid("seconds", format!("Invalid 'seconds' {s:?}: expected whole seconds"))
            })?;
            body.insert("duration".into(), Value::from(n));
        }
        (_, None) => {}
    }
    match (spec, size) {
        (Some(spec), Some(s)) => body.extend(map::size(spec, &s).map_err(unfit)?),
        (None, Some(_)) => {
            return Err(OpenAiError::invalid(
                "size",
                format!(
                    "Model '{id}' is not in this server's catalog, so `size` cannot be mapped; send its own aspect_ratio or resolution instead"
                ),
            ));
        }
        (_, None) => {}
    }
    if let Some(url) = reference {
        let image = spec.map(|s| s.media_parameters().find(|p| p.media == Some(MediaKind::Image)));
        let target = match image {
            Some(Some(p)) => p.name.clone(),
            // A catalog model without an image to start from would take it
            // as an unknown field, and be charged for a video that ignores it.
            Some(None) => {
                return Err(unreadable(&format!(
                    "Model '{id}' takes no image to start from; leave out `input_reference`, or use an \
                     image-to-video model"
                )));
            }
            None => "image_url".to_owned(),
        };
        body.insert(target, Value::from(uploaded_image(url)?));
    }
    Ok(Value::Object(body))
}

/// An `input_reference` as sent upstream: a URL as given, an upload
/// checked from its bytes to be an image (the SDK labels a file by its
/// name, often as application/octet-stream) and labelled by them.
fn uploaded_image(reference: String) -> Result<String, OpenAiError> {
    let Some(encoded) = reference.strip_prefix("data:").and_then(|r| r.split_once(',')).map(|(_, d)| d)
    else {
        return Ok(reference);
    };
    let not_image =
        || OpenAiError::invalid("input_reference", "The uploaded `input_reference` is not an image");
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| not_image())?;
    aimlvid::MediaInput::from_bytes(&bytes, MediaKind::Image)
        .map(aimlvid::MediaInput::into_string)
        .map_err(|_| not_image())
}

/// Whether the member set the model's own shape parameters (`extra_body`),
/// which then stand for `size`.
fn body_sets_shape(fields: &Map<String, Value>) -> bool {
    fields.contains_key("aspect_ratio") || fields.contains_key("resolution")
}

/// A multipart form sends every field as text: a field the model declares
/// as a number or a flag is read as one.
fn typed_fields(spec: &ModelSpec, fields: &mut Map<String, Value>) {
    for (name, value) in fields.iter_mut() {
        let typed = spec
            .parameter(name)
            .is_some_and(|p| matches!(p.ty, ParamType::Integer | ParamType::Number | ParamType::Boolean));
        if let (true, Value::String(s)) = (typed, &*value)
            && let Ok(parsed) = serde_json::from_str::<Value>(s)
        {
            *value = parsed;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_video_is_named_as_sent_only_when_it_looks_like_an_id() {
        let message = |id: &str| OpenAiError::not_found(id).message;
        assert_eq!(message("video_123"), "Video with id 'video_123' not found.");
        let long = message(&"a".repeat(5000));
        assert!(long.len() < 100 && long.contains('…'), "{long}");
        assert_eq!(message("it's"), r#"Video with id "it's" not found."#);
        assert_eq!(message("a\u{1}b"), r#"Video with id "a\u{1}b" not found."#);
    }
}
