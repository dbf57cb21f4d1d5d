//! The one error type of the crate, and how upstream error bodies are read.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::model::Status;

/// Shorthand for `Result<T, aimlvid::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong between a request and a file on disk.
///
/// Each variant's message says what happened and what to do next. Match on
/// the variant to decide programmatically; [`Error::is_transient`] tells
/// whether the same call may succeed later.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No API key was configured.
    #[error(
        "no API key: set AIMLAPI_API_KEY (or AIML_API_KEY) in the environment, \
         or pass one with ClientBuilder::api_key; keys are at https://aimlapi.com/app/keys"
    )]
    MissingApiKey,

    /// The client configuration is unusable (for example a malformed base URL).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The base URL is plain `http://` to a host that is neither this
    /// machine nor a private network, and plain HTTP was not allowed: the
    /// key would cross the network unencrypted.
    #[error(
        "base URL {base_url} would send the API key unencrypted over plain http://; use https://, or, \
         for a server on a network you trust, allow it with ClientBuilder::allow_plain_http"
    )]
    PlainHttp {
        /// The base URL, which holds no secret.
        base_url: String,
    },

    /// The input given to the library was refused before any request was made.
    #[error("{0}")]
    InvalidInput(String),

    /// The request does not fit its model's schema in the
    /// [catalog](crate::catalog), so it was not sent (and not paid for).
    #[error("{0}; nothing was sent")]
    Validation(#[from] crate::catalog::Invalid),

    /// The built-in catalog knows the model but the API's live catalogue
    /// ([`Client::live_catalogue`](crate::Client::live_catalogue)) no
    /// longer lists it: a create for it would fail, so it was not sent.
    #[error("the API no longer lists {model}{}; nothing was sent", alternatives_suffix(.alternatives))]
    ModelNotListed {
        /// The model's id.
        model: String,
        /// The listed models most like it, the likest first.
        alternatives: Vec<String>,
    },

    /// 401: the key is missing, malformed or revoked.
    #[error(
        "the API refused the key (401 {message}); check AIMLAPI_API_KEY, \
         and that the key is active at https://aimlapi.com/app/keys"
    )]
    Unauthorized {
        /// The upstream's message.
        message: String,
        /// The upstream's request id, for support.
        request_id: Option<String>,
    },

    /// 403: the account has no credits left for this job.
    #[error(
        "out of credits (403 {message}); top up at https://aimlapi.com/app/billing, \
         then run the same command again"
    )]
    OutOfCredits {
        /// The upstream's message.
        message: String,
        /// The upstream's request id, for support.
        request_id: Option<String>,
    },

    /// 400: the upstream rejected the request body.
    #[error("invalid request (400 {message}){}; fix the request and try again", details_suffix(.details))]
    InvalidRequest {
        /// The upstream's message, such as `Body validation error`.
        message: String,
        /// One line per problem, with what was expected and what was received.
        details: Vec<String>,
        /// The upstream's request id, for support.
        request_id: Option<String>,
    },

    /// 404: no generation with this id exists for this key.
    #[error(
        "generation {id} not found (404 {message}); check the id, and that it was \
         created with the same API key and base URL"
    )]
    NotFound {
        /// The id that was asked for.
        id: String,
        /// The upstream's message.
        message: String,
    },

    /// A create was answered 404, 405 or 501 (no such path, method not
    /// allowed, not implemented): the base URL does not lead to the API's
    /// generation endpoint (a wrong host, path or port, or another server
    /// there), and nothing was created.
    #[error(
        "{host} does not look like the AI/ML API: a create there was answered {status} ({message}); \
         check the base URL (it should be the API's, such as https://api.aimlapi.com, or a proxy \
         of it); nothing was created"
    )]
    NotTheApi {
        /// Host (and port) of the base URL.
        host: String,
        /// The HTTP status: 404, 405 or 501.
        status: u16,
        /// What the server said.
        message: String,
    },

    /// 429: too many requests or too many unfinished jobs.
    #[error(
        "rate limited (429 {message}){}; wait and try again, or finish some running jobs first",
        retry_after_suffix(.retry_after)
    )]
    RateLimited {
        /// The upstream's message.
        message: String,
        /// How long the upstream asked us to wait, when it said.
        retry_after: Option<Duration>,
    },

    /// 5xx or another unexpected status: trouble on the upstream's side.
    #[error(
        "the API failed ({status} {message}){}; this is usually temporary, try again later",
        request_id_suffix(.request_id)
    )]
    Upstream {
        /// The HTTP status.
        status: u16,
        /// The upstream's message.
        message: String,
        /// The upstream's request id, for support.
        request_id: Option<String>,
        /// How long the upstream asked us to wait, when it said.
        retry_after: Option<Duration>,
    },

    /// The create request may have reached the upstream, but its answer was
    /// lost, so a job may exist (and be billed) without our knowing its id.
    ///
    /// The library never retries such a create: doing so could start, and
    /// bill, the same job twice.
    #[error(
        "the create request may have been accepted, but its answer was lost ({cause}); \
         a job may exist and be billed. It was not retried, so that it is not paid twice: \
         find it by its client request id {client_request_id} in the API's request logs \
         (`aimlvid resume`, or Client::find_create), or in your generation history at \
         https://aimlapi.com/app, before creating it again"
    )]
    CreateOutcomeUnknown {
        /// What went wrong after the request was sent.
        cause: String,
        /// The `X-Client-Request-Id` the create was sent with: the key to
        /// [`Client::find_create`](crate::Client::find_create).
        client_request_id: crate::ClientRequestId,
    },

    /// The generation finished with status `error`.
    #[error("generation {id} failed: {name}: {message}")]
    GenerationFailed {
        /// The generation id.
        id: String,
        /// The upstream's error name.
        name: String,
        /// The upstream's error message.
        message: String,
    },

    /// The poll deadline passed before the generation finished.
    #[error(
        "generation {id} is still {last_status} after {}s; it keeps running upstream, \
         so wait for it again later with its id",
        waited.as_secs()
    )]
    TimedOut {
        /// The generation id; the job is still findable with it.
        id: String,
        /// The last status seen.
        last_status: Status,
        /// How long we waited.
        waited: Duration,
    },

    /// The network failed (connection refused, reset, timed out, TLS).
    #[error("{}", transport_message(host, source))]
    Transport {
        /// Host (and port) that was being reached; never a full URL, which may carry a token.
        host: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// A response arrived but could not be understood.
    #[error("could not decode the API's answer (HTTP {status}): {reason}; body starts with: {excerpt:?}")]
    Decode {
        /// The HTTP status.
        status: u16,
        /// Why it could not be decoded.
        reason: String,
        /// The first bytes of the body, for diagnosis.
        excerpt: String,
    },

    /// The downloaded result was not what the server announced.
    #[error(
        "download of {url_host} ended early: got {received} of {expected} bytes; run the \
         download again to resume it"
    )]
    IncompleteDownload {
        /// Host the file came from.
        url_host: String,
        /// Bytes announced.
        expected: u64,
        /// Bytes on disk.
        received: u64,
    },

    /// The result's URL no longer serves the video (403, 404 or 410), as a
    /// signed URL answers once it has expired.
    #[error(
        "the video at {url_host} is no longer available (HTTP {status}: {message}); results are \
         kept for a limited time: poll the generation again for a fresh URL, or generate it again"
    )]
    ResultUnavailable {
        /// Host the file was to come from.
        url_host: String,
        /// The HTTP status.
        status: u16,
        /// What the file host said, shortened.
        message: String,
    },

    /// Reading or writing a local file failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done, such as `writing`.
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn details_suffix(details: &[String]) -> String {
    if details.is_empty() { String::new() } else { format!(": {}", details.join("; ")) }
}

fn alternatives_suffix(alternatives: &[String]) -> String {
    match alternatives {
        [] => String::new(),
        some => format!("; the nearest it lists: {}", some.join(", ")),
    }
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    match retry_after {
        Some(d) => format!(", retry after {}s", d.as_secs().max(1)),
        None => String::new(),
    }
}

fn request_id_suffix(request_id: &Option<String>) -> String {
    match request_id {
        Some(id) => format!(", request id {id}"),
        None => String::new(),
    }
}

impl Error {
    /// Whether the same call may succeed if simply made again later:
    /// network trouble, rate limits and 5xx answers.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::RateLimited { .. } | Error::Transport { .. } | Error::IncompleteDownload { .. } => true,
            Error::Upstream { status, .. } => *status >= 500 || *status == 408,
            // A body that is not JSON usually comes from a proxy in trouble.
            Error::Decode { .. } => true,
            _ => false,
        }
    }

    /// Whether the server could not be reached at all (the connection was
    /// refused, or the name did not resolve): nothing was sent.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Transport { source, .. } if source.is_connect())
    }

    /// How long the upstream asked to wait before the next call, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::Upstream { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

fn transport_message(host: &str, source: &reqwest::Error) -> String {
    if source.is_connect() {
        // Nothing listens there (or the name does not resolve): the likely
        // causes are a server that is down and a mistyped base URL.
        format!("cannot connect to {host}; check that the server is running and the base URL is right")
    } else {
        format!("network error talking to {host}: {source}; check the connection and the base URL")
    }
}

/// The upstream's error body:
/// `{"message", "path", "requestId", "statusCode", "timestamp"}`, plus the
/// `errors` list that validation failures carry.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ApiErrorBody {
    #[serde(default)]
    pub(crate) message: Option<serde_json::Value>,
    #[serde(default)]
    pub(crate) request_id: Option<String>,
    #[serde(default)]
    pub(crate) errors: Vec<serde_json::Value>,
}

impl ApiErrorBody {
    /// Reads an error body leniently: an error answer that is not the
    /// documented shape still yields a useful message.
    pub(crate) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_else(|_| ApiErrorBody {
            message: (!body.is_empty()).then(|| serde_json::Value::String(excerpt(body))),
            ..Default::default()
        })
    }

    pub(crate) fn message(&self) -> String {
        match &self.message {
            Some(serde_json::Value::String(s)) => s.clone(),
            // NestJS sometimes answers with a list of messages.
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("; "),
            Some(other) => other.to_string(),
            None => "no message".to_owned(),
        }
    }

    /// One line per validation issue, preferring the issue's own message and
    /// naming the field it concerns.
    pub(crate) fn details(&self) -> Vec<String> {
        self.errors
            .iter()
            .map(|issue| {
                let path = issue
                    .get("path")
                    .and_then(|p| p.as_array())
                    .map(|parts| {
                        parts
                            .iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .filter(|p| !p.is_empty());
                let message = match issue.get("message").and_then(|m| m.as_str()) {
                    Some(m) => m.to_owned(),
                    None => {
                        let expected = issue.get("expected").map(value_text);
                        let received = issue.get("received").map(value_text);
                        match (expected, received) {
                            (Some(e), Some(r)) => format!("expected {e}, received {r}"),
                            _ => issue.to_string(),
                        }
                    }
                };
                match path {
                    Some(path) => format!("{path}: {message}"),
                    None => message,
                }
            })
            .collect()
    }
}

fn value_text(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// The first 200 characters of a body, lossily decoded, for error messages.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(400)]);
    let mut out: String = text.chars().take(200).collect();
    if text.chars().count() > 200 || body.len() > 400 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_details_name_the_field_and_the_expectation() {
        let body = br#"{"message":"Body validation error","statusCode":"400","requestId":"r1",
            "errors":[{"path":["aspect_ratio"],"message":"Invalid enum value. Expected 'auto' | '16:9' | '9:16', received '4:3'"},
                      {"path":["duration"],"expected":"7","received":"8"}]}"#;
        let parsed = ApiErrorBody::parse(body);
        assert_eq!(parsed.message(), "Body validation error");
        assert_eq!(parsed.request_id.as_deref(), Some("r1"));
        assert_eq!(
            parsed.details(),
            vec![
                "aspect_ratio: Invalid enum value. Expected 'auto' | '16:9' | '9:16', received '4:3'",
                "duration: expected 7, received 8",
            ]
        );
    }

    #[test]
    fn a_non_json_error_body_becomes_the_message() {
        let parsed = ApiErrorBody::parse(b"<html>502 Bad Gateway</html>");
        assert_eq!(parsed.message(), "<html>502 Bad Gateway</html>");
        assert!(parsed.details().is_empty());
    }

    #[test]
    fn excerpts_are_bounded() {
        let long = vec![b'x'; 10_000];
        let e = excerpt(&long);
        assert_eq!(e.chars().count(), 201);
        assert!(e.ends_with('…'));
    }

    #[test]
    fn messages_say_what_to_do_next() {
        let err = Error::TimedOut {
            id: "g1".into(),
            last_status: Status::Generating,
            waited: Duration::from_secs(600),
        };
        assert_eq!(
            err.to_string(),
            "generation g1 is still generating after 600s; it keeps running upstream, so wait for it again later with its id"
        );
        let err = Error::RateLimited {
            message: "Too many requests".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            err.to_string(),
            "rate limited (429 Too many requests), retry after 3s; wait and try again, or finish some running jobs first"
        );
    }
}
