//! Tying our calls to the upstream's records: the `X-Client-Request-Id`
//! sent with every create, the receipt headers that come back, and the
//! request logs (`GET /v2/logs`) in which a create whose answer was lost
//! can be found again.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Our own id for a create, sent as `X-Client-Request-Id`. The upstream
/// stores it and reports it as `client_request_id` in its request logs,
/// which is how a create whose answer was lost is found again.
///
/// The upstream keeps 1–128 characters of `A-Za-z0-9._:-` and silently
/// drops anything else, so [`ClientRequestId::new`] refuses what it would drop.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientRequestId(String);

impl ClientRequestId {
    /// Checks `id` against the upstream's rule.
    pub fn new(id: impl Into<String>) -> Result<ClientRequestId> {
        let id = id.into();
        let valid = (1..=128).contains(&id.len())
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
        if valid {
            Ok(ClientRequestId(id))
        } else {
            Err(Error::InvalidInput(format!(
                "client request id {id:?} would be dropped by the API: use 1-128 characters of A-Z, a-z, 0-9, '.', '_', ':' and '-'"
            )))
        }
    }

    /// A fresh id, unique to this call: `aimlvid-` and a time-ordered UUID.
    pub fn random() -> ClientRequestId {
        ClientRequestId(format!("aimlvid-{}", uuid::Uuid::now_v7()))
    }

    /// The id as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ClientRequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl TryFrom<String> for ClientRequestId {
    type Error = Error;

    fn try_from(id: String) -> Result<Self> {
        ClientRequestId::new(id)
    }
}

impl From<ClientRequestId> for String {
    fn from(id: ClientRequestId) -> String {
        id.0
    }
}

/// What the upstream's response headers said of one call: its ids and,
/// where it could tell, its price. Absent headers are `None`.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Receipt {
    /// `x-inference-id`: the id the charge is recorded under. For a video
    /// generation it is the generation id.
    pub inference_id: Option<String>,
    /// `x-client-request-id`: ours, echoed when the API kept it.
    pub client_request_id: Option<String>,
    /// `x-aimlapi-credits-used`: what this call cost, in credits.
    pub credits_used: Option<u64>,
    /// `x-aimlapi-usd-spent`: the same in US dollars.
    pub usd_spent: Option<f64>,
}

impl Receipt {
    /// Reads the receipt headers; `None` when there are none at all.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Option<Receipt> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_owned());
        let receipt = Receipt {
            inference_id: text("x-inference-id").filter(|v| !v.is_empty()),
            client_request_id: text("x-client-request-id").filter(|v| !v.is_empty()),
            credits_used: text("x-aimlapi-credits-used").and_then(|v| v.parse().ok()),
            usd_spent: text("x-aimlapi-usd-spent")
                .and_then(|v| v.parse().ok())
                .filter(|v: &f64| v.is_finite()),
        };
        (receipt != Receipt::default()).then_some(receipt)
    }
}

/// One row of the upstream's request logs (`GET /v2/logs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogRow {
    /// When the request was made (UTC, as the API wrote it).
    pub created: String,
    /// `succeeded` or `failed` (a failed request costs nothing).
    pub status: String,
    /// The model, as `source/alias`.
    pub model: String,
    /// The inference id: for a video create, the generation id.
    pub inference_id: String,
    /// The `X-Client-Request-Id` sent with it, if any was kept.
    #[serde(default)]
    pub client_request_id: Option<String>,
    /// The individual HTTP call's id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// What it was charged.
    #[serde(default)]
    pub cost: Option<LogCost>,
}

impl LogRow {
    /// Whether the upstream counts the request as failed (refused, or a
    /// generation that ended in error); either way it was not charged.
    pub fn failed(&self) -> bool {
        self.status == "failed"
    }
}

/// A log row's cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogCost {
    /// In US dollars.
    pub usd: f64,
    /// In credits.
    pub credits: f64,
}

/// One page of request logs.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct LogPage {
    pub(crate) data: Vec<LogRow>,
    pub(crate) pagination: Pagination,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct Pagination {
    pub(crate) has_more: bool,
}

/// The window the logs are searched in for a create sent at `sent_at`:
/// from a little before (clocks differ) to a little after now, at most
/// the 92 days the API allows.
pub(crate) fn search_window(sent_at: SystemTime) -> (String, String) {
    const SLACK: Duration = Duration::from_secs(10 * 60);
    const MAX: Duration = Duration::from_secs(91 * 24 * 3600);
    let end = SystemTime::now() + SLACK;
    let start = sent_at.checked_sub(SLACK).unwrap_or(SystemTime::UNIX_EPOCH).max(end - MAX);
    (humantime::format_rfc3339_seconds(start).to_string(), humantime::format_rfc3339_seconds(end).to_string())
}

/// What the upstream's records say of a create whose answer was lost.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CreateLookup {
    /// The create was accepted: the job, as it is now.
    Accepted(Box<crate::Generation>),
    /// The create reached the API and was refused: no job, no charge.
    Refused,
    /// The logs hold no such create (yet: they may lag the API by a little).
    /// If it is still missing well after the create, it never arrived.
    NotLogged,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_the_api_would_drop_are_refused() {
        assert!(ClientRequestId::new("order-8f21c4").is_ok());
        assert!(ClientRequestId::new("a.b_c:d-E9").is_ok());
        assert!(ClientRequestId::new("x".repeat(128)).is_ok());
        for bad in ["", "has space", "slash/no", "ü"] {
            let err = ClientRequestId::new(bad).unwrap_err().to_string();
            assert!(err.contains("1-128 characters"), "{err}");
        }
        assert!(ClientRequestId::new("x".repeat(129)).is_err());
    }

    #[test]
    fn random_ids_are_valid_distinct_and_time_ordered() {
        let a = ClientRequestId::random();
        std::thread::sleep(Duration::from_millis(2));
        let b = ClientRequestId::random();
        assert_ne!(a, b);
        assert!(ClientRequestId::new(a.as_str()).is_ok());
        assert!(a.as_str() < b.as_str(), "{a} {b}");
        assert_eq!(a.as_str().len(), "aimlvid-".len() + 36);
    }

    #[test]
    fn receipts_read_what_is_there() {
        let mut headers = HeaderMap::new();
        assert_eq!(Receipt::from_headers(&headers), None);
        headers.insert("x-inference-id", "gen-1".parse().unwrap());
        headers.insert("x-aimlapi-credits-used", "120000".parse().unwrap());
        headers.insert("x-aimlapi-usd-spent", "0.060000000".parse().unwrap());
        let receipt = Receipt::from_headers(&headers).unwrap();
        assert_eq!(receipt.inference_id.as_deref(), Some("gen-1"));
        assert_eq!(receipt.credits_used, Some(120_000));
        assert_eq!(receipt.usd_spent, Some(0.06));
        assert_eq!(receipt.client_request_id, None);
    }

    #[test]
    fn the_search_window_covers_the_send_and_stays_within_92_days() {
        let (start, end) = search_window(SystemTime::now());
        let (start, end) =
            (humantime::parse_rfc3339(&start).unwrap(), humantime::parse_rfc3339(&end).unwrap());
        assert!(start < SystemTime::now() && end > SystemTime::now());
        let (start, end) = search_window(SystemTime::UNIX_EPOCH);
        let (start, end) =
            (humantime::parse_rfc3339(&start).unwrap(), humantime::parse_rfc3339(&end).unwrap());
        assert!(end.duration_since(start).unwrap() <= Duration::from_secs(92 * 24 * 3600));
    }
}
