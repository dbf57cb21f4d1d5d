//! Errors as members see them: the upstream's own body shape,
//! `{"message","path","requestId","statusCode","timestamp"}`, and nothing
//! internal (no database errors, no upstream hosts, never a secret).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::http::header::{HeaderValue, RETRY_AFTER};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// An error answer. Handlers return it; the middleware (`observe.rs`)
/// fills in the request's path and id, which only it sees.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
    errors: Option<serde_json::Value>,
}

impl ApiError {
    /// An error with this status and message. The message is shown to the
    /// member as is, so it must never carry a secret or internal detail.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), retry_after: None, errors: None }
    }

    /// 401, the answer to an unknown or revoked key.
    pub fn unauthorized() -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "Invalid API key")
    }

    /// 404 for a generation that does not exist or belongs to another key:
    /// the two are indistinguishable on purpose.
    pub fn not_found() -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "Generation not found")
    }

    /// 429 with `Retry-After` in whole seconds (at least 1).
    pub fn too_many(message: impl Into<String>, retry_after: Duration) -> Self {
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        ApiError { retry_after: Some(secs), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, message) }
    }

    /// 500 for a fault of ours; the cause goes to the log, not the member.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    /// Adds a validation `errors` list, as the upstream's 400s carry.
    pub fn with_errors(mut self, errors: serde_json::Value) -> Self {
        self.errors = Some(errors);
        self
    }

    /// Sets `Retry-After`, in seconds.
    pub fn with_retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message shown to the member.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn body(&self, path: &str, request_id: &str, now: SystemTime) -> Bytes {
        let mut body = serde_json::json!({
            "message": self.message,
            "path": path,
            "requestId": request_id,
            "statusCode": self.status.as_u16(),
            "timestamp": iso8601(now),
        });
        if let Some(errors) = &self.errors {
            body["errors"] = errors.clone();
        }
        Bytes::from(body.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        // The body is written by the middleware, which knows the path and request id.
        response.extensions_mut().insert(self);
        response
    }
}

/// Formats a time as the upstream's timestamps are: `2025-01-31T12:34:56.789Z`.
pub fn iso8601(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = crate::calendar::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso8601_utc_with_millis() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // a leap day
        assert_eq!(iso8601(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799); // the last second of 2099
        assert_eq!(iso8601(t), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn bodies_have_the_upstream_shape() {
        let error = ApiError::too_many("slow down", Duration::from_millis(1500));
        assert_eq!(error.retry_after, Some(2));
        let body: serde_json::Value =
            serde_json::from_slice(&error.body("/v2/video/generations", "r-1", UNIX_EPOCH)).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "message": "slow down",
                "path": "/v2/video/generations",
                "requestId": "r-1",
                "statusCode": 429,
                "timestamp": "1970-01-01T00:00:00.000Z",
            })
        );
    }
}
