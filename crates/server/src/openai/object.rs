//! The `video` object, field for field as openai-python's `Video` reads
//! it. A status read is this front's hot path, so what never changes in a
//! job's object is worked out and encoded once ([`FixedVideo`], kept with
//! what the job was asked for), and a read writes only what moves with
//! the job and the clock: `status`, `progress`, `completed_at`, `error`.

use std::cell::RefCell;

use aimlvid::Status;
use axum::http::StatusCode;
use axum::http::header::{HeaderName, HeaderValue};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde_json::Value;

use super::map;
use crate::engine::timing::Plan;
use crate::view::{FixedVideo, JobRequest};

/// Each runtime thread writes the objects it answers one after another
/// into blocks of this size, rather than one allocation per object: a
/// hot read is then one copy, with no allocation, and measured faster
/// (see docs/benchmarks.md). A block is freed once every object in it is
/// sent, so a connection that stops reading holds at most one block, as
/// it holds hyper's own buffers.
const BODY_BLOCK: usize = 8 * 1024;

thread_local! {
    static BODIES: RefCell<BytesMut> = RefCell::new(BytesMut::with_capacity(BODY_BLOCK));
}

/// `parts`, one after another, as one response body.
fn body_of(parts: &[&[u8]]) -> Bytes {
    BODIES.with_borrow_mut(|block| {
        // Reuses the block when every body cut from it is gone, else
        // starts another of the same size.
        block.reserve(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            block.extend_from_slice(part);
        }
        block.split().freeze()
    })
}

/// openai-python's `poll()` waits this long between retrieves when the
/// answer names it, and a second when it does not. It reads the first
/// answer's only and keeps that pace; the Node package reads every one.
const POLL_AFTER_MS: HeaderName = HeaderName::from_static("openai-poll-after-ms");

/// A client is asked back this long after the proxy's own upstream poll
/// is due, so that it finds what that poll saw.
const POLL_AFTER_MARGIN_SECS: f64 = 1.0;

/// `openai-poll-after-ms`, in whole seconds from 1 to 10: never longer, so
/// that `progress` moves between retrieves and a pace kept for the whole
/// wait (openai-python's) is never late by more than that.
static POLL_AFTER: [HeaderValue; 10] = [
    HeaderValue::from_static("1000"),
    HeaderValue::from_static("2000"),
    HeaderValue::from_static("3000"),
    HeaderValue::from_static("4000"),
    HeaderValue::from_static("5000"),
    HeaderValue::from_static("6000"),
    HeaderValue::from_static("7000"),
    HeaderValue::from_static("8000"),
    HeaderValue::from_static("9000"),
    HeaderValue::from_static("10000"),
];

/// The unchanging fields, in the order openai-python's `Video` lists them
/// where the order matters to no parser.
#[derive(serde::Serialize)]
struct FixedFields<'a> {
    id: &'a str,
    object: &'static str,
    model: &'a str,
    created_at: i64,
    expires_at: Option<i64>,
    prompt: Option<&'a str>,
    seconds: String,
    size: String,
    remixed_from_video_id: Option<&'a str>,
}

impl FixedVideo {
    /// The fixed part of video `id`, which was asked for as `request` says
    /// and is polled upstream by `plan`.
    pub(super) fn of(id: &str, request: &JobRequest, plan: &Plan) -> FixedVideo {
        let spec = aimlvid::catalog::model(&request.model);
        let family = spec.map_or(aimlvid::catalog::Family::TextToVideo, |s| s.family);
        // The model's jobs' learned duration, else its family's typical one.
        let typical = plan
            .learned_duration()
            .unwrap_or_else(|| aimlvid::JobDurations::typical_of(family).p50.as_secs_f64());
        let empty = Value::Object(Default::default());
        let params = request.params.as_deref().unwrap_or(&empty);
        let fields = FixedFields {
            id,
            object: "video",
            model: &request.model,
            created_at: request.created_at,
            expires_at: None,
            prompt: request.prompt.as_deref(),
            seconds: map::seconds_of(spec, params),
            size: map::size_of_body(spec, params),
            remixed_from_video_id: request.remixed_from.as_deref(),
        };
        // Strings and numbers only: encoding cannot fail.
        let mut head = serde_json::to_vec(&fields).unwrap_or_else(|_| b"{}".to_vec());
        head.pop();
        let first_poll_secs = plan.until_news(0.0);
        FixedVideo {
            head: Bytes::from(head),
            typical_secs: typical.max(1.0),
            first_poll_secs,
            poll_interval_secs: plan.until_news(first_poll_secs),
        }
    }
}

/// A `video` object, encoded, with `openai-poll-after-ms` while it is
/// unfinished.
pub(super) struct VideoAnswer {
    pub(super) body: Bytes,
    poll_after: Option<HeaderValue>,
}

/// Why a video failed, from the upstream's reason.
#[derive(serde::Serialize)]
struct VideoError<'a> {
    code: &'a str,
    message: &'a str,
}

/// The `video` object of a job asked for as `request` (whose fixed part
/// is `fixed`), in `status`, with the upstream's `error` object for a
/// failed one, as of `now` (unix seconds).
pub(super) fn video_answer(
    fixed: &FixedVideo,
    request: &JobRequest,
    status: &Status,
    error: Option<&Value>,
    now: i64,
) -> VideoAnswer {
    let status = match status {
        s if s.is_failure() => "failed",
        Status::Completed => "completed",
        Status::Generating => "in_progress",
        Status::Other(s) if s == "in_progress" => "in_progress",
        _ => "queued",
    };
    // Estimated from how long the model's jobs take: at most 99 until done.
    let progress = match status {
        "completed" => 100,
        "queued" | "failed" => 0,
        _ => {
            let elapsed = (now - request.created_at).max(0) as f64;
            (elapsed / fixed.typical_secs * 100.0).clamp(1.0, 99.0) as u64
        }
    };
    let finished = matches!(status, "completed" | "failed");
    let mut progress_digits = itoa::Buffer::new();
    let mut completed_digits = itoa::Buffer::new();
    let completed_at = match finished {
        true => completed_digits.format(request.finished_at.unwrap_or(now).max(request.created_at)),
        false => "null",
    };
    let error = match status {
        "failed" => {
            let e = error.unwrap_or(&Value::Null);
            let code = e["name"].as_str().filter(|s| !s.is_empty()).unwrap_or("video_generation_failed");
            let message =
                e["message"].as_str().filter(|s| !s.is_empty()).unwrap_or("The video generation failed");
            // Two strings: encoding cannot fail.
            serde_json::to_vec(&VideoError { code, message }).unwrap_or_else(|_| b"null".to_vec()).into()
        }
        _ => std::borrow::Cow::Borrowed(&b"null"[..]),
    };
    let parts: [&[u8]; 10] = [
        &fixed.head,
        br#","status":""#,
        status.as_bytes(),
        br#"","progress":"#,
        progress_digits.format(progress).as_bytes(),
        br#","completed_at":"#,
        completed_at.as_bytes(),
        br#","error":"#,
        &error,
        b"}",
    ];
    let body = body_of(&parts);
    VideoAnswer { body, poll_after: (!finished).then(|| poll_after(fixed, now - request.created_at)) }
}

/// When a client should ask again about an unfinished video of age
/// `age` seconds: just after the proxy's next upstream poll of it (the
/// first, if still to come, else an interval away), within 1 to 10 s.
fn poll_after(fixed: &FixedVideo, age: i64) -> HeaderValue {
    let age = age.max(0) as f64;
    let until =
        if age < fixed.first_poll_secs { fixed.first_poll_secs - age } else { fixed.poll_interval_secs };
    let secs = (until + POLL_AFTER_MARGIN_SECS).ceil().clamp(1.0, POLL_AFTER.len() as f64) as usize;
    POLL_AFTER[secs - 1].clone()
}

/// The answer to a read of one video.
pub(super) fn answer(video: VideoAnswer) -> Response {
    let mut response = crate::api::json(StatusCode::OK, video.body);
    if let Some(after) = video.poll_after {
        response.headers_mut().insert(POLL_AFTER_MS, after);
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::timing::{PollSettings, Timings};

    fn asked(model: &str, params: Value) -> JobRequest {
        JobRequest {
            key_id: 1,
            model: model.to_owned(),
            prompt: Some("a \"quoted\" prompt\n".to_owned()),
            params: Some(Arc::new(params)),
            inline_media: None,
            created_at: 1_000,
            finished_at: None,
            remixed_from: Some("video_1".to_owned()),
            hidden: false,
            openai_video: Default::default(),
        }
    }

    fn read(
        request: &JobRequest,
        status: &str,
        error: Option<&Value>,
        now: i64,
    ) -> (Value, Option<HeaderValue>) {
        let plan = Timings::default().plan(&PollSettings::default(), &request.model);
        let fixed = FixedVideo::of("gen-1", request, &plan);
        let answer = video_answer(&fixed, request, &Status::from(status), error, now);
        (serde_json::from_slice(&answer.body).expect("the object is JSON"), answer.poll_after)
    }

    #[test]
    fn an_unfinished_video_has_every_field_and_a_poll_interval() {
        let request =
            asked("google/veo-3.1-t2v-fast", serde_json::json!({"duration": 8, "aspect_ratio": "16:9"}));
        let (video, poll_after) = read(&request, "generating", None, 1_010);
        assert_eq!(video["id"], "gen-1");
        assert_eq!(video["object"], "video");
        assert_eq!(video["model"], "google/veo-3.1-t2v-fast");
        assert_eq!(video["status"], "in_progress");
        assert_eq!(video["prompt"], "a \"quoted\" prompt\n");
        assert_eq!(video["seconds"], "8");
        assert_eq!(video["created_at"], 1_000);
        assert_eq!(video["remixed_from_video_id"], "video_1");
        for null in ["completed_at", "expires_at", "error"] {
            assert!(video[null].is_null(), "{null} should be null: {video}");
        }
        let progress = video["progress"].as_u64().expect("progress is a number");
        assert!((1..=99).contains(&progress), "{progress}");
        let ms: u64 = poll_after.expect("unfinished: a poll interval").to_str().unwrap().parse().unwrap();
        assert!((1000..=10_000).contains(&ms), "{ms}");
        assert_eq!(video.as_object().map(|o| o.len()), Some(13), "{video}");
    }

    #[test]
    fn a_body_stays_whole_while_later_ones_fill_and_reuse_blocks() {
        // Some bodies kept (as a connection that stops reading keeps one),
        // the rest dropped at once, over many blocks' worth, with one body
        // larger than a block.
        let mut kept = Vec::new();
        for i in 0..20_000usize {
            let text = format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 300));
            let body = body_of(&[text.as_bytes()]);
            assert_eq!(&body[..], text.as_bytes());
            if i % 997 == 0 {
                kept.push((text, body));
            }
        }
        let large = "y".repeat(3 * BODY_BLOCK);
        let body = body_of(&[b"[", large.as_bytes(), b"]"]);
        assert_eq!(body.len(), large.len() + 2);
        for (text, body) in &kept {
            assert_eq!(&body[..], text.as_bytes(), "a kept body changed");
        }
    }

    fn poll_after_secs(fixed: &FixedVideo, age: i64) -> u64 {
        poll_after(fixed, age).to_str().unwrap().parse::<u64>().unwrap() / 1000
    }

    #[test]
    fn the_poll_interval_asks_back_just_after_the_proxys_next_upstream_poll() {
        let request = asked("m", serde_json::json!({}));
        // A model never seen, polled first at 85 s, then every 3.5 s.
        let settings = PollSettings::from_policy(&aimlvid::PollPolicy::default());
        let plan = Timings::default().plan(&settings, "m");
        let fixed = FixedVideo::of("gen-1", &request, &plan);
        assert_eq!(poll_after_secs(&fixed, 0), 10, "at most 10 s, so progress moves");
        assert_eq!(poll_after_secs(&fixed, 80), 6, "a second after the first poll");
        assert_eq!(poll_after_secs(&fixed, 90), 5, "an interval and a second after");
        assert_eq!(poll_after_secs(&fixed, -5), 10, "a clock behind the creation");

        // A model learned to take 6 to 7 s is polled first before 6 s.
        let mut timings = Timings::default();
        for (running, done) in [(5.0, 7.0), (5.5, 6.5), (6.0, 7.0)] {
            timings.learn("m", Some(running), done);
        }
        let fixed = FixedVideo::of("gen-1", &request, &timings.plan(&settings, "m"));
        let first = poll_after_secs(&fixed, 0);
        assert!((5..=7).contains(&first), "{first}");
        assert_eq!(poll_after_secs(&fixed, 30), 2, "its 1 s interval, and a second");
    }

    #[test]
    fn progress_follows_the_models_learned_duration_once_there_is_one() {
        let request = asked("m", serde_json::json!({}));
        let settings = PollSettings::default();
        let mut timings = Timings::default();
        for (running, done) in [(18.0, 22.0), (19.0, 21.0), (20.0, 20.0)] {
            timings.learn("m", Some(running), done);
        }
        let fixed = FixedVideo::of("gen-1", &request, &timings.plan(&settings, "m"));
        let answer = video_answer(&fixed, &request, &Status::Generating, None, request.created_at + 10);
        let video: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(video["progress"], 50, "10 s into jobs that take 20 s");
    }

    #[test]
    fn progress_never_reaches_100_before_completion() {
        let request = asked("google/veo-3.1-t2v-fast", serde_json::json!({}));
        let (video, _) = read(&request, "generating", None, 1_000_000);
        assert_eq!(video["progress"], 99);
        let (video, _) = read(&request, "queued", None, 1_000_000);
        assert_eq!(video["progress"], 0);
    }

    #[test]
    fn a_finished_video_says_when_and_has_no_poll_interval() {
        let mut request = asked("google/veo-3.1-t2v-fast", serde_json::json!({}));
        request.finished_at = Some(1_090);
        let (video, poll_after) = read(&request, "completed", None, 2_000);
        assert_eq!((video["status"].as_str(), video["progress"].as_u64()), (Some("completed"), Some(100)));
        assert_eq!(video["completed_at"], 1_090);
        assert!(poll_after.is_none());
    }

    #[test]
    fn a_failed_video_carries_the_upstream_reason_escaped() {
        let request = asked("google/veo-3.1-t2v-fast", serde_json::json!({}));
        let reason = serde_json::json!({"name": "content_policy", "message": "refused: \"unsafe\""});
        let (video, poll_after) = read(&request, "error", Some(&reason), 1_050);
        assert_eq!(video["status"], "failed");
        assert_eq!(video["error"]["code"], "content_policy");
        assert_eq!(video["error"]["message"], "refused: \"unsafe\"");
        assert_eq!(video["completed_at"], 1_050);
        assert!(poll_after.is_none());
        let (video, _) = read(&request, "error", None, 1_050);
        assert_eq!(video["error"]["code"], "video_generation_failed");
        // The words some models use for an end without a result count too.
        let (video, _) = read(&request, "cancelled", None, 1_050);
        assert_eq!(video["status"], "failed");
    }
}
