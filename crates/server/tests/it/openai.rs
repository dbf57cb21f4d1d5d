//! OpenAI's videos API (`/v1/videos`) in front of the simulator, with the
//! requests openai-python sends (multipart creates, Bearer keys).

use aimlvid_server::store::KeyLimits;
use serde_json::{Value, json};

use crate::support::*;

/// A multipart create, as openai-python's `videos.create` always sends one.
async fn create_form(
    proxy: &Proxy,
    key: Option<&str>,
    fields: &[(&str, &str)],
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in fields {
        form = form.text(name.to_string(), value.to_string());
    }
    let mut request = proxy.http.post(format!("{}/v1/videos", proxy.url)).multipart(form);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    reply(request.send().await.unwrap()).await
}

async fn create_json(proxy: &Proxy, key: &str, body: &Value) -> (u16, Value, reqwest::header::HeaderMap) {
    let request = proxy.http.post(format!("{}/v1/videos", proxy.url)).bearer_auth(key).json(body);
    reply(request.send().await.unwrap()).await
}

async fn retrieve(proxy: &Proxy, key: &str, id: &str) -> (u16, Value, reqwest::header::HeaderMap) {
    reply(proxy.http.get(format!("{}/v1/videos/{id}", proxy.url)).bearer_auth(key).send().await.unwrap())
        .await
}

async fn reply(response: reqwest::Response) -> (u16, Value, reqwest::header::HeaderMap) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, headers)
}

/// OpenAI's error shape, exactly: one `error` with these four fields.
fn assert_openai_error(body: &Value) {
    assert_eq!(shape(body), ["error"], "{body}");
    assert_eq!(shape(&body["error"]), ["code", "message", "param", "type"], "{body}");
}

#[tokio::test]
async fn a_multipart_create_maps_seconds_and_size_and_retrieve_follows_the_video_to_completed() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("ana", KeyLimits::default()).await;

    let fields =
        [("model", "google/veo-3.1-t2v-fast"), ("prompt", "a heron"), ("seconds", "4"), ("size", "720x1280")];
    let (status, video, _) = create_form(&proxy, Some(&key), &fields).await;
    assert_eq!(status, 200, "{video}");
    // The simulator validates with the catalog: a duration or ratio the
    // model cannot take would have been refused there.
    assert_eq!(sim.stats().jobs_created, 1);
    assert_eq!(video["object"], "video");
    assert_eq!(video["model"], "google/veo-3.1-t2v-fast");
    assert_eq!((video["seconds"].as_str(), video["size"].as_str()), (Some("4"), Some("720x1280")));
    assert_eq!(video["status"], "queued");
    assert_eq!(video["prompt"], "a heron");
    let id = video["id"].as_str().unwrap().to_owned();

    let (status, read, headers) = retrieve(&proxy, &key, &id).await;
    assert_eq!(status, 200, "{read}");
    assert!(matches!(read["status"].as_str(), Some("queued" | "in_progress")), "{read}");
    assert!(read["progress"].as_u64().unwrap() < 100);
    assert!(read["completed_at"].is_null());
    let after: u64 = headers["openai-poll-after-ms"].to_str().unwrap().parse().unwrap();
    assert!((1000..=10_000).contains(&after), "{after}");

    assert!(sim.complete_now(&id));
    let done = eventually("the video completes", || async {
        let (_, read, headers) = retrieve(&proxy, &key, &id).await;
        (read["status"] == "completed").then_some((read, headers))
    })
    .await;
    let (read, headers) = done;
    assert_eq!(read["progress"], 100);
    assert!(read["completed_at"].as_i64().unwrap() >= read["created_at"].as_i64().unwrap());
    assert!(read["error"].is_null());
    assert!(headers.get("openai-poll-after-ms").is_none(), "a finished video is not polled");
    proxy.stop().await;
}

#[tokio::test]
async fn a_failed_video_reads_failed_with_an_error_code_and_message() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("ben", KeyLimits::default()).await;
    let (status, video, _) = create_json(&proxy, &key, &json!({"model": "sora-2", "prompt": "rain"})).await;
    assert_eq!(status, 200, "{video}");
    // OpenAI's name is this API's Sora 2 text-to-video id.
    assert_eq!(video["model"], "openai/sora-2-t2v");
    assert_eq!((video["seconds"].as_str(), video["size"].as_str()), (Some("4"), Some("1280x720")));
    let id = video["id"].as_str().unwrap().to_owned();
    assert!(sim.fail_now(&id));
    let read = eventually("the video fails", || async {
        let (_, read, _) = retrieve(&proxy, &key, &id).await;
        (read["status"] == "failed").then_some(read)
    })
    .await;
    assert!(read["error"]["code"].as_str().is_some_and(|c| !c.is_empty()), "{read}");
    assert!(read["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{read}");
    assert_ne!(read["progress"], 100);
    proxy.stop().await;
}

#[tokio::test]
async fn a_size_or_seconds_the_model_cannot_take_is_a_400_naming_what_it_allows_and_nothing_is_sent() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("cy", KeyLimits::default()).await;

    let body = json!({"model": "sora-2-pro", "prompt": "square", "size": "1024x1024"});
    let (status, error, _) = create_json(&proxy, &key, &body).await;
    assert_eq!(status, 400);
    assert_openai_error(&error);
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(error["error"]["param"], "size");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("16:9, 9:16") && message.contains("1920x1080"), "{message}");

    let fields = [("model", "google/veo-3.1-t2v-fast"), ("prompt", "long"), ("seconds", "12")];
    let (status, error, _) = create_form(&proxy, Some(&key), &fields).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["param"], "seconds");
    assert!(error["error"]["message"].as_str().unwrap().contains("4, 6, 8"), "{error}");
    assert_eq!(sim.stats().create_requests, 0);
    proxy.stop().await;
}

#[tokio::test]
async fn keys_limits_and_other_members_videos_answer_in_openais_error_shape() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let owner = proxy.key("dee", KeyLimits::default()).await;
    let other = proxy.key("eli", KeyLimits::default()).await;
    let slow = proxy.key("fay", KeyLimits { rpm: Some(1), ..KeyLimits::default() }).await;
    let broke = proxy.key("gus", KeyLimits { credit_budget: Some(1.0), ..KeyLimits::default() }).await;
    let fields = [("model", "google/veo-3.1-t2v-fast"), ("prompt", "mine")];

    let (status, error, _) = create_form(&proxy, None, &fields).await;
    assert_eq!((status, &error["error"]["code"]), (401, &json!("invalid_api_key")), "{error}");
    assert_openai_error(&error);
    let (status, error, _) = create_form(&proxy, Some("amv_not_a_key"), &fields).await;
    assert_eq!((status, &error["error"]["code"]), (401, &json!("invalid_api_key")), "{error}");
    assert!(!error.to_string().contains("amv_not_a_key"), "the presented key is never echoed");

    let (status, video, _) = create_form(&proxy, Some(&owner), &fields).await;
    assert_eq!(status, 200, "{video}");
    let id = video["id"].as_str().unwrap();
    let (status, error, _) = retrieve(&proxy, &other, id).await;
    assert_eq!(status, 404);
    assert_openai_error(&error);
    assert!(!error.to_string().contains("mine"));
    let (status, _, _) = retrieve(&proxy, &other, "no-such-video").await;
    assert_eq!(status, 404);
    // What is not served yet answers OpenAI's 404, naming what is.
    let (status, error, _) = reply(
        proxy
            .http
            .get(format!("{}/v1/videos/{id}/thumbnails", proxy.url))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 404);
    assert_openai_error(&error);
    assert!(error["error"]["message"].as_str().unwrap().contains("GET /v1/videos/{video_id}"), "{error}");

    let (first, _, _) = create_form(&proxy, Some(&slow), &fields).await;
    let (status, error, headers) = create_form(&proxy, Some(&slow), &fields).await;
    assert_eq!((first, status), (200, 429), "{error}");
    assert_eq!(error["error"]["code"], "rate_limit_exceeded");
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);

    let (status, error, _) = create_form(&proxy, Some(&broke), &fields).await;
    assert_eq!(status, 403, "{error}");
    assert_eq!(error["error"]["type"], "insufficient_quota");
    assert_eq!(sim.stats().create_requests, 2, "only the two admitted creates went upstream");
    proxy.stop().await;
}
