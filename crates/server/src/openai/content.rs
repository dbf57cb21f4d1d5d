//! `GET /v1/videos/{id}/content`: a member's finished video, streamed from
//! the upstream's file host as it arrives (never held whole), with a single
//! `Range` passed on. The file's URL stays on this side: neither headers
//! nor errors name it.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header::{ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse as _, Response};

use super::{OpenAiError, authenticate, finished_file_url, own_generation};
use crate::api::Authorization;
use crate::state::AppState;

/// `GET|HEAD /v1/videos/{id}/content?variant=video`.
pub(super) async fn content(
    State(state): State<AppState>,
    authorization: Authorization,
    method: Method,
    super::VideoId(id): super::VideoId,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, OpenAiError> {
    let key = authenticate(&state, &authorization)?;
    variant(query.get("variant").map(String::as_str))?;
    let (_, generation) = own_generation(&state, &key, &id).await?;
    let url = finished_file_url(&id, &generation)?;
    let range = headers.get(RANGE).and_then(|v| v.to_str().ok()).filter(|r| single_range(r));
    let opened = state
        .upstream()
        .open_file(&url, range, method == Method::HEAD)
        .await
        .map_err(|e| unavailable(&id, &e))?;
    if opened.status() == StatusCode::RANGE_NOT_SATISFIABLE.as_u16() {
        let refusal = OpenAiError::invalid("Range", "The requested range is not satisfiable");
        let mut error = OpenAiError { status: StatusCode::RANGE_NOT_SATISFIABLE, ..refusal }.into_response();
        if let Some(v) = opened.content_range().and_then(|v| HeaderValue::from_str(v).ok()) {
            error.headers_mut().insert(CONTENT_RANGE, v);
        }
        return Ok(error);
    }
    let status = StatusCode::from_u16(opened.status()).unwrap_or(StatusCode::OK);
    let content_type = opened
        .content_type()
        .and_then(|v| HeaderValue::from_str(v).ok())
        .unwrap_or(HeaderValue::from_static("video/mp4"));
    let length = opened.content_length();
    let content_range = opened.content_range().and_then(|v| HeaderValue::from_str(v).ok());
    let mut response = Response::new(Body::from_stream(opened.into_stream()));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, content_type);
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(length) = length {
        h.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let (StatusCode::PARTIAL_CONTENT, Some(v)) = (status, content_range) {
        h.insert(CONTENT_RANGE, v);
    }
    Ok(response)
}

/// `variant`: only the video itself is served.
fn variant(asked: Option<&str>) -> Result<(), OpenAiError> {
    match asked {
        None | Some("video") => Ok(()),
        Some(other @ ("thumbnail" | "spritesheet")) => Err(OpenAiError::invalid(
            "variant",
            format!(
                "variant={other} is not served by this server: the models behind it make no {other}; \
                 it serves variant=video (the MP4)"
            ),
        )),
        Some(other) => Err(OpenAiError::invalid(
            "variant",
            format!(
                "Invalid 'variant' {other:?}: expected video, thumbnail or spritesheet (this server serves video)"
            ),
        )),
    }
}

/// One `bytes=` range: passed on. Several ranges, or another unit, are
/// ignored as HTTP allows, and the whole file is sent.
fn single_range(range: &str) -> bool {
    range.trim().strip_prefix("bytes=").is_some_and(|r| !r.contains(',') && r.contains('-'))
}

/// Why the file could not be read, without its URL or host: a file the
/// host no longer has is a 404, any other trouble a 502.
fn unavailable(id: &str, error: &aimlvid::Error) -> OpenAiError {
    tracing::warn!(generation_id = id, %error, "reading a video's file from the upstream failed");
    match error {
        aimlvid::Error::ResultUnavailable { status, .. } => OpenAiError {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "The content of video '{id}' is no longer available: the upstream's file host answered {status} \
                 (its files expire some time after the video completes)"
            ),
            kind: "invalid_request_error",
            param: Some("video_id".into()),
            code: Some("video_content_unavailable"),
            retry_after: None,
        },
        _ => OpenAiError {
            status: StatusCode::BAD_GATEWAY,
            message: format!(
                "The content of video '{id}' could not be read from the upstream's file host; try again"
            ),
            kind: "server_error",
            param: None,
            code: None,
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_video_variant_is_served_and_the_refusals_name_it() {
        assert!(variant(None).is_ok() && variant(Some("video")).is_ok());
        let thumbnail = variant(Some("thumbnail")).unwrap_err();
        assert_eq!(
            (thumbnail.status, thumbnail.param.as_deref()),
            (StatusCode::BAD_REQUEST, Some("variant"))
        );
        assert!(thumbnail.message.contains("variant=video"), "{}", thumbnail.message);
        let odd = variant(Some("gif")).unwrap_err();
        assert_eq!(odd.param.as_deref(), Some("variant"));
        assert!(odd.message.contains("\"gif\""), "{}", odd.message);
    }

    #[test]
    fn one_byte_range_is_passed_on_and_others_are_not() {
        assert!(single_range("bytes=0-99") && single_range("bytes=100-") && single_range("bytes=-5"));
        assert!(!single_range("bytes=0-1,5-9"));
        assert!(!single_range("items=0-1"));
        assert!(!single_range("bytes=oops"));
    }
}
