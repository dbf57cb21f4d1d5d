//! The `openai` webhook format: OpenAI's video events, signed per
//! [Standard Webhooks](https://www.standardwebhooks.com/), as openai-python's
//! `client.webhooks.unwrap(body, headers, secret=…)` verifies them.
//!
//! # The event
//!
//! `{"id": "evt_…", "object": "event", "type": "video.completed", "created_at": <unix seconds>,
//! "data": {"id": <video id>}}`, `type` being `video.failed` for a job that
//! did not complete. The video id is the generation id, as `GET /v1/videos/{id}`
//! takes it. The event's id, its time (when the job's end was recorded) and
//! so its body are the same on every attempt of one delivery.
//!
//! # The signature
//!
//! Three headers: [`ID_HEADER`] (the same on every attempt, so a receiver
//! can skip a repeat), [`TIMESTAMP_HEADER`] (unix seconds, the attempt's)
//! and [`SIGNATURE_HEADER`], `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`.
//! The HMAC's key is the webhook secret's part after `whsec_`, base64-decoded
//! ([`signing_key`]). The server's secrets (`whsec_` and 64 hex digits) are
//! valid base64, so a key keeps its secret when its format changes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{KeyInit as _, Mac as _};
use serde::Serialize;

use super::HmacSha256;

/// Names the delivery; the same on every attempt of it.
pub const ID_HEADER: &str = "webhook-id";
/// When the attempt was made, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// `v1,<base64 HMAC-SHA256>`; several, separated by spaces, may be sent.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// What every Standard Webhooks secret starts with.
const SECRET_PREFIX: &str = "whsec_";

/// A webhook secret that cannot key a Standard Webhooks signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the webhook secret is not `whsec_` followed by base64")]
pub struct BadSecret;

/// The HMAC key a secret stands for: after `whsec_`, base64-decoded, as
/// Standard Webhooks and openai-python read it; a secret without the prefix
/// is used as it is, as openai-python does.
pub fn signing_key(secret: &str) -> Result<Vec<u8>, BadSecret> {
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(encoded) => STANDARD.decode(encoded).map_err(|_| BadSecret),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// The [`SIGNATURE_HEADER`] value for `body`, sent as delivery `id` at
/// `timestamp`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, BadSecret> {
    let digest = mac(&signing_key(secret)?, id, timestamp, body).finalize().into_bytes();
    Ok(format!("v1,{}", STANDARD.encode(digest)))
}

/// Whether `signature` (the [`SIGNATURE_HEADER`], one or more `v1,…`
/// separated by spaces) signs `body` under `secret` as delivery `id` at
/// `timestamp` (the [`TIMESTAMP_HEADER`]), made within `tolerance` of `now`
/// (unix seconds). Compares in constant time.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now: i64,
    tolerance: std::time::Duration,
) -> bool {
    let (Ok(key), Ok(timestamp)) = (signing_key(secret), timestamp.trim().parse::<i64>()) else {
        return false;
    };
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    signature
        .split_whitespace()
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .any(|given| mac(&key, id, timestamp, body).verify_slice(&given).is_ok())
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The [`ID_HEADER`] of delivery `delivery_id`.
pub fn message_id(delivery_id: &str) -> String {
    format!("wh_{delivery_id}")
}

/// The OpenAI event type for a job that finished with `status`.
pub fn event_type(status: &str) -> &'static str {
    match status {
        "completed" | "complete" => "video.completed",
        _ => "video.failed",
    }
}

/// OpenAI's `VideoCompletedWebhookEvent` / `VideoFailedWebhookEvent`, in
/// the order OpenAI's documentation gives the fields.
#[derive(Debug, Serialize)]
struct VideoEvent<'a> {
    id: String,
    object: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    created_at: i64,
    data: VideoData<'a>,
}

#[derive(Debug, Serialize)]
struct VideoData<'a> {
    id: &'a str,
}

/// The event announcing that video `generation_id` finished with `status`,
/// delivery `delivery_id` having been queued at `queued_at_ms`: the same
/// bytes on every attempt.
pub fn video_event(delivery_id: &str, generation_id: &str, status: &str, queued_at_ms: i64) -> String {
    let event = VideoEvent {
        id: format!("evt_{delivery_id}"),
        object: "event",
        kind: event_type(status),
        created_at: queued_at_ms.div_euclid(1000),
        data: VideoData { id: generation_id },
    };
    serde_json::to_string(&event).expect("an event of strings and numbers serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The Standard Webhooks specification's example, which every
    /// conforming library (and openai-python) verifies.
    #[test]
    fn signatures_match_the_standard_webhooks_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let (id, body) = ("msg_p5jXN8AQM9LWM0D4loKWxJek", br#"{"test": 2432232314}"#);
        let signature = sign(secret, id, 1_614_265_330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let tolerance = Duration::from_secs(300);
        assert!(verify(secret, id, "1614265330", &signature, body, 1_614_265_400, tolerance));
        let among = format!("v1,bm90IGl0 {signature}");
        assert!(verify(secret, id, "1614265330", &among, body, 1_614_265_330, tolerance), "one of several");
        assert!(!verify(secret, "msg_other", "1614265330", &signature, body, 1_614_265_330, tolerance));
        assert!(
            !verify(secret, id, "1614265331", &signature, body, 1_614_265_330, tolerance),
            "another time"
        );
        assert!(
            !verify(secret, id, "1614265330", &signature, b"{}", 1_614_265_330, tolerance),
            "another body"
        );
        assert!(!verify(secret, id, "1614265330", &signature, body, 1_614_265_700, tolerance), "too old");
        let other = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx";
        assert!(
            !verify(other, id, "1614265330", &signature, body, 1_614_265_330, tolerance),
            "another secret"
        );
    }

    /// The server's secrets, `whsec_` and 64 hex digits, are base64 too.
    #[test]
    fn the_servers_secrets_key_standard_signatures() {
        let secret = crate::keys::generate_secret(crate::keys::WEBHOOK_SECRET_PREFIX).unwrap();
        assert_eq!(signing_key(&secret).unwrap().len(), 48);
        assert_eq!(signing_key("whsec_not base64!"), Err(BadSecret));
        assert_eq!(signing_key("plain").unwrap(), b"plain");
        let signature = sign(&secret, "wh_1", 10, b"{}").unwrap();
        assert!(verify(&secret, "wh_1", "10", &signature, b"{}", 10, Duration::from_secs(1)));
    }

    #[test]
    fn events_are_openais_video_events() {
        let completed = video_event("abc", "gen-1", "completed", 1_700_000_000_999);
        assert_eq!(
            completed,
            r#"{"id":"evt_abc","object":"event","type":"video.completed","created_at":1700000000,"data":{"id":"gen-1"}}"#
        );
        for failed in ["error", "failed", "cancelled"] {
            assert!(video_event("abc", "g", failed, 0).contains(r#""type":"video.failed""#), "{failed}");
        }
        assert_eq!(message_id("abc"), "wh_abc");
    }
}
