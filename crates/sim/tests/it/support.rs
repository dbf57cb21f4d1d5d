//! Shared helpers.

use std::time::Duration;

use aimlvid_sim::{DEFAULT_API_KEY, RunningSim, SimConfig, Simulator};
use serde_json::{Value, json};

pub(crate) const HEADLINE: &str = "google/veo3-1-fast-extend-video";

/// A valid create body for the headline model.
pub(crate) fn body() -> Value {
    json!({
        "model": HEADLINE,
        "prompt": "The camera pulls back to reveal the whole valley",
        "video_url": "https://example.com/clip.mp4",
    })
}

pub(crate) async fn start(config: SimConfig) -> RunningSim {
    Simulator::start(config).await.expect("simulator starts")
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client builds")
}

pub(crate) async fn create_with(sim: &RunningSim, key: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v2/video/generations", sim.base_url()))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("create answered")
}

/// Creates a job with the default key and returns its id.
pub(crate) async fn create_job(sim: &RunningSim) -> String {
    let response = create_with(sim, DEFAULT_API_KEY, &body()).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("create answer is JSON");
    answer["id"].as_str().expect("id").to_owned()
}

pub(crate) async fn poll_with(sim: &RunningSim, key: &str, id: &str) -> reqwest::Response {
    client()
        .get(format!("{}/v2/video/generations", sim.base_url()))
        .query(&[("generation_id", id)])
        .bearer_auth(key)
        .send()
        .await
        .expect("poll answered")
}

/// Polls every few milliseconds until the job is finished; panics after 5 s.
pub(crate) async fn wait_finished(sim: &RunningSim, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let answer: Value =
            poll_with(sim, DEFAULT_API_KEY, id).await.json().await.expect("poll answer is JSON");
        if matches!(answer["status"].as_str(), Some("completed" | "error")) {
            return answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "job {id} never finished");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Checks the upstream's error body shape and returns it.
pub(crate) async fn error_body(response: reqwest::Response, status: u16, path: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"].to_str().unwrap(), "application/json");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(body["statusCode"], status);
    assert_eq!(body["path"], path);
    assert_eq!(body["requestId"], request_id.as_str());
    assert!(uuid::Uuid::parse_str(&request_id).is_ok(), "{request_id}");
    let timestamp = body["timestamp"].as_str().expect("timestamp");
    assert!(humantime::parse_rfc3339(timestamp).is_ok(), "{timestamp}");
    assert_eq!(timestamp.len(), "2025-03-11T07:13:27.813Z".len());
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    body
}

pub(crate) const CREATE_PATH: &str = "/v2/video/generations";
