//! `GET /v2/video/generations/{id}/events`: Server-Sent Events of a job's
//! status changes.

use std::pin::Pin;
use std::time::Duration;

use aimlvid_server::store::KeyLimits;
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use serde_json::Value;

use crate::support::*;

/// How long any one event may take to arrive.
const PATIENCE: Duration = Duration::from_secs(10);

/// An open event stream.
pub(crate) struct Events {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    buffer: String,
}

impl Events {
    /// Opens the stream of job `id`; an error answer is returned as is.
    pub(crate) async fn open(proxy: &Proxy, key: &str, id: &str) -> Result<Events, (u16, Value)> {
        let response = proxy
            .http
            .get(format!("{}/v2/video/generations/{id}/events", proxy.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status != 200 {
            return Err((status, response.json().await.unwrap()));
        }
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Ok(Events { body: Box::pin(response.bytes_stream()), buffer: String::new() })
    }

    /// The next event's data as JSON, or `None` once the server ends the stream.
    pub(crate) async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event.lines().filter_map(|l| l.strip_prefix("data:")).collect();
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some(serde_json::from_str(data.join("\n").trim()).unwrap());
            }
            let chunk = tokio::time::timeout(PATIENCE, self.body.next()).await.expect("no event in time");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes.unwrap()).unwrap()),
                None => {
                    assert!(self.buffer.trim().is_empty(), "the stream ended mid-event: {:?}", self.buffer);
                    return None;
                }
            }
        }
    }

    /// Every remaining event's status, until the stream ends.
    async fn statuses(mut self) -> Vec<String> {
        let mut statuses = Vec::new();
        while let Some(event) = self.next().await {
            statuses.push(event["status"].as_str().unwrap().to_owned());
        }
        statuses
    }
}

#[tokio::test]
async fn a_stream_sends_the_current_state_then_each_change_and_ends_after_the_last() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("sse", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("streamed")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();

    let mut events = Events::open(&proxy, &key, &id).await.unwrap();
    let first = events.next().await.unwrap();
    assert_eq!(first, get(&proxy.http, &proxy.endpoint(), Some(&key), Some(&id)).await.body);
    assert_eq!(first["status"], "queued");

    assert!(sim.complete_now(&id));
    let last = events.next().await.unwrap();
    assert_eq!(last["status"], "completed");
    assert_eq!(last["meta"]["usage"]["credits_used"], sim.config().credits_per_job);
    assert_eq!(events.next().await, None, "the stream ends after a finished status");

    // A finished job's stream is its last state alone.
    let again = Events::open(&proxy, &key, &id).await.unwrap();
    assert_eq!(again.statuses().await, ["completed"]);
    proxy.stop().await;
}

#[tokio::test]
async fn another_keys_job_is_a_404_like_an_unknown_one() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let (owner, other) =
        (proxy.key("owner", KeyLimits::default()).await, proxy.key("other", KeyLimits::default()).await);
    let created = post(&proxy.http, &proxy.endpoint(), Some(&owner), &create_body("private")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();

    let Err((status, theirs)) = Events::open(&proxy, &other, &id).await else {
        panic!("another key saw the job")
    };
    assert_eq!(status, 404);
    let Err((_, unknown)) = Events::open(&proxy, &other, "no-such-job").await else {
        panic!("an unknown job streamed")
    };
    assert_eq!(theirs["message"], "Generation not found");
    assert_eq!(theirs["message"], unknown["message"]);
    assert_eq!(shape(&theirs), shape(&unknown));
    assert_eq!(theirs["path"], format!("/v2/video/generations/{id}/events"));
    let Err((status, _)) = Events::open(&proxy, "amv_wrong", &id).await else {
        panic!("a wrong key streamed")
    };
    assert_eq!(status, 401);
    proxy.stop().await;
}

#[tokio::test]
async fn many_streams_follow_a_running_job_without_one_more_upstream_poll() {
    let sim = fast_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("crowd", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("watched")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();

    let mut streams = Vec::new();
    for _ in 0..20 {
        streams.push(Events::open(&proxy, &key, &id).await.unwrap());
    }
    let order = ["queued", "generating", "completed"];
    for statuses in futures_util::future::join_all(streams.into_iter().map(Events::statuses)).await {
        assert_eq!(statuses.last().map(String::as_str), Some("completed"), "{statuses:?}");
        let positions: Vec<usize> =
            statuses.iter().map(|s| order.iter().position(|o| o == s).expect("a known status")).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "one event per change, in order: {statuses:?}");
    }
    let polls = sim.job(&id).unwrap().polls;
    assert_eq!(sim.stats().poll_requests, polls, "only the one poller reached the upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn shutting_down_ends_open_streams() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("leaver", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("never ends")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let mut events = Events::open(&proxy, &key, &id).await.unwrap();
    assert_eq!(events.next().await.unwrap()["status"], "queued");

    tokio::time::timeout(PATIENCE, proxy.stop()).await.expect("an open stream held up shutdown");
    assert_eq!(events.next().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_or_revoking_a_key_ends_its_streams_and_rotation_keeps_its_jobs() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let old = proxy.key("rota", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&old), &create_body("keep me")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let mut stream = Events::open(&proxy, &old, &id).await.unwrap();
    assert_eq!(stream.next().await.unwrap()["status"], "queued");

    // A leaked secret is rotated: its stream ends, it stops working, the job stays.
    let rotated: Value = proxy
        .http
        .post(format!("{}/admin/keys/rota/rotate", proxy.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(stream.next().await, None, "the old secret's stream ended");
    assert_eq!(get(&proxy.http, &proxy.endpoint(), Some(&old), Some(&id)).await.status, 401);
    let read = get(&proxy.http, &proxy.endpoint(), Some(&new), Some(&id)).await;
    assert_eq!(read.status, 200, "the same key identity keeps its jobs: {read:?}");

    // Revoked: the new secret's stream ends too.
    let mut stream = Events::open(&proxy, &new, &id).await.unwrap();
    stream.next().await.unwrap();
    let revoked = proxy
        .http
        .delete(format!("{}/admin/keys/rota", proxy.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(stream.next().await, None, "the revoked key's stream ended");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_cannot_hold_more_than_its_share_of_streams() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("many", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("watched")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    let mut open = Vec::new();
    for _ in 0..100 {
        open.push(Events::open(&proxy, &key, &id).await.unwrap());
    }
    let Err((status, _)) = Events::open(&proxy, &key, &id).await else { panic!("a 101st stream opened") };
    assert_eq!(status, 429);
    // Closing one frees its place.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match Events::open(&proxy, &key, &id).await {
            Ok(_) => break,
            Err((429, _)) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    proxy.stop().await;
}
