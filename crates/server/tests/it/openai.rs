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
    // Sora's defaults: 4 s, portrait 720x1280 (the catalog model's own ratio default is 16:9).
    assert_eq!((video["seconds"].as_str(), video["size"].as_str()), (Some("4"), Some("720x1280")));
    let id = video["id"].as_str().unwrap().to_owned();
    assert_eq!(sim.job(&id).unwrap().request["aspect_ratio"], "9:16");
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

async fn list(proxy: &Proxy, key: &str, query: &str) -> (u16, Value) {
    let url = format!("{}/v1/videos{query}", proxy.url);
    let (status, body, _) = reply(proxy.http.get(url).bearer_auth(key).send().await.unwrap()).await;
    (status, body)
}

async fn delete(proxy: &Proxy, key: &str, id: &str) -> (u16, Value) {
    let url = format!("{}/v1/videos/{id}", proxy.url);
    let (status, body, _) = reply(proxy.http.delete(url).bearer_auth(key).send().await.unwrap()).await;
    (status, body)
}

async fn remix(proxy: &Proxy, key: &str, id: &str, body: &Value, idempotency: Option<&str>) -> (u16, Value) {
    let mut request =
        proxy.http.post(format!("{}/v1/videos/{id}/remix", proxy.url)).bearer_auth(key).json(body);
    if let Some(idem) = idempotency {
        request = request.header("Idempotency-Key", idem);
    }
    let (status, body, _) = reply(request.send().await.unwrap()).await;
    (status, body)
}

/// The ids of a list page's videos.
fn ids(page: &Value) -> Vec<String> {
    page["data"].as_array().unwrap().iter().map(|v| v["id"].as_str().unwrap().to_owned()).collect()
}

on_both_backends!(
    the_list_pages_a_members_own_videos_in_both_orders,
    a_deleted_video_is_gone_for_its_member_but_kept_followed_and_charged_once,
);

async fn the_list_pages_a_members_own_videos_in_both_orders(storage: Storage) {
    let sim = frozen_sim().await;
    let proxy = start_proxy_dyn(&sim, storage.open().await, quick_polls(), |_| {}).await;
    let key = proxy.key("lia", KeyLimits::default()).await;
    let other = proxy.key("max", KeyLimits::default()).await;
    let mut made = Vec::new();
    for i in 0..25 {
        let body = json!({"model": "google/veo-3.1-t2v-fast", "prompt": format!("v{i}"), "seconds": "4"});
        let (status, video, _) = create_json(&proxy, &key, &body).await;
        assert_eq!(status, 200, "{video}");
        made.push(video["id"].as_str().unwrap().to_owned());
    }
    let (_, theirs, _) = create_json(&proxy, &other, &json!({"model": "sora-2", "prompt": "theirs"})).await;

    // Newest first, 20 at a time by default.
    let (status, page) = list(&proxy, &key, "").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(shape(&page), ["data", "first_id", "has_more", "last_id", "object"]);
    assert_eq!(page["object"], "list");
    let newest: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(ids(&page), newest[..20]);
    assert_eq!(
        (page["first_id"].as_str(), page["has_more"].as_bool()),
        (Some(newest[0].as_str()), Some(true))
    );
    assert_eq!(page["data"][0]["object"], "video");
    assert_eq!(
        (page["data"][0]["seconds"].as_str(), page["data"][0]["prompt"].as_str()),
        (Some("4"), Some("v24"))
    );
    let last = page["last_id"].as_str().unwrap();
    let (_, rest) = list(&proxy, &key, &format!("?after={last}")).await;
    assert_eq!(ids(&rest), newest[20..]);
    assert_eq!(rest["has_more"], false);

    // Oldest first, 10 at a time.
    let mut seen = Vec::new();
    let mut query = "?order=asc&limit=10".to_owned();
    loop {
        let (status, page) = list(&proxy, &key, &query).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids(&page));
        if page["has_more"] == false {
            break;
        }
        query = format!("?order=asc&limit=10&after={}", page["last_id"].as_str().unwrap());
    }
    assert_eq!(seen, made);

    // Only their own: the other member sees theirs alone, and may not page from another's video.
    let (_, page) = list(&proxy, &other, "").await;
    assert_eq!(ids(&page), [theirs["id"].as_str().unwrap()]);
    let (status, error) = list(&proxy, &other, &format!("?after={}", made[0])).await;
    assert_eq!((status, &error["error"]["param"]), (400, &json!("after")), "{error}");
    let (_, empty) = list(&proxy, &proxy.key("ned", KeyLimits::default()).await, "").await;
    assert_eq!(
        empty,
        json!({"object": "list", "data": [], "first_id": null, "last_id": null, "has_more": false})
    );

    for (query, param) in
        [("?limit=0", "limit"), ("?limit=101", "limit"), ("?limit=x", "limit"), ("?order=up", "order")]
    {
        let (status, error) = list(&proxy, &key, query).await;
        assert_eq!(status, 400, "{query}");
        assert_openai_error(&error);
        assert_eq!(error["error"]["param"], param, "{query}");
    }
    proxy.stop().await;
    storage.finish().await;
}

async fn a_deleted_video_is_gone_for_its_member_but_kept_followed_and_charged_once(storage: Storage) {
    let sim = frozen_sim().await;
    let proxy = start_proxy_dyn(&sim, storage.open().await, quick_polls(), |_| {}).await;
    let key = proxy.key("ola", KeyLimits::default()).await;
    let other = proxy.key("pam", KeyLimits::default()).await;
    let body = json!({"model": "google/veo-3.1-t2v-fast", "prompt": "gone"});
    let (_, kept, _) = create_json(&proxy, &key, &body).await;
    let (_, video, _) = create_json(&proxy, &key, &body).await;
    let id = video["id"].as_str().unwrap().to_owned();

    let (status, error) = delete(&proxy, &other, &id).await;
    assert_eq!(status, 404, "another member's video reads as absent");
    assert_openai_error(&error);
    // Deleted while unfinished.
    let (status, deleted) = delete(&proxy, &key, &id).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted, json!({"id": id, "object": "video.deleted", "deleted": true}));
    let (status, error, _) = retrieve(&proxy, &key, &id).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("not_found")), "{error}");
    assert_openai_error(&error);
    assert_eq!(delete(&proxy, &key, &id).await.0, 404, "deleted once");
    let (status, error) = remix(&proxy, &key, &id, &json!({"prompt": "again"}), None).await;
    assert_eq!(status, 404, "{error}");
    let (_, page) = list(&proxy, &key, "").await;
    assert_eq!(ids(&page), [kept["id"].as_str().unwrap()]);

    // Still followed to its end, and charged once; the admin still sees it.
    assert!(sim.complete_now(&id));
    let store = proxy.state.store();
    let job = eventually("the deleted video is charged", || async {
        store.generation_summary(&id).await.unwrap().filter(|j| j.credits_charged.is_some())
    })
    .await;
    assert!(job.hidden_at.is_some());
    let credits = job.credits_charged.unwrap();
    assert!(credits > 0.0);
    let everyone = aimlvid_server::store::JobFilter { limit: 10, ..Default::default() };
    assert!(
        store
            .job_history(&everyone)
            .await
            .unwrap()
            .iter()
            .any(|j| j.generation_id.as_deref() == Some(id.as_str()))
    );
    let used = store.keys().await.unwrap().into_iter().find(|k| k.name == "ola").unwrap().credits_used;
    assert_eq!(used, credits, "charged once, the other video being unfinished");
    proxy.stop().await;
    storage.finish().await;
}

#[tokio::test]
async fn a_remix_keeps_the_model_and_parameters_with_a_new_prompt() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("quin", KeyLimits::default()).await;
    let other = proxy.key("rae", KeyLimits::default()).await;
    let fields =
        [("model", "google/veo-3.1-t2v-fast"), ("prompt", "a heron"), ("seconds", "4"), ("size", "720x1280")];
    let (_, source, _) = create_form(&proxy, Some(&key), &fields).await;
    let source_id = source["id"].as_str().unwrap().to_owned();

    let (status, error) = remix(&proxy, &key, &source_id, &json!({}), None).await;
    assert_eq!((status, &error["error"]["param"]), (400, &json!("prompt")), "{error}");
    assert_eq!(remix(&proxy, &other, &source_id, &json!({"prompt": "mine"}), None).await.0, 404);
    // Only a completed video is remixed.
    let (status, error) = remix(&proxy, &key, &source_id, &json!({"prompt": "too soon"}), None).await;
    assert_eq!((status, &error["error"]["code"]), (409, &json!("video_not_ready")), "{error}");
    assert!(sim.complete_now(&source_id));
    eventually("the source completes", || async {
        proxy.state.views().get(&source_id).filter(|v| v.is_finished())
    })
    .await;
    let created = sim.stats().create_requests;

    let (status, remixed) = remix(&proxy, &key, &source_id, &json!({"prompt": "a crane"}), Some("r1")).await;
    assert_eq!(status, 200, "{remixed}");
    assert_ne!(remixed["id"], source["id"]);
    assert_eq!(remixed["model"], "google/veo-3.1-t2v-fast");
    assert_eq!((remixed["seconds"].as_str(), remixed["size"].as_str()), (Some("4"), Some("720x1280")));
    assert_eq!(
        (remixed["prompt"].as_str(), remixed["remixed_from_video_id"].as_str()),
        (Some("a crane"), Some(source_id.as_str()))
    );
    let (_, read, _) = retrieve(&proxy, &key, remixed["id"].as_str().unwrap()).await;
    assert_eq!(read["remixed_from_video_id"], source_id.as_str());
    let (_, read, _) = retrieve(&proxy, &key, &source_id).await;
    assert!(read["remixed_from_video_id"].is_null());
    // The same remix under the same Idempotency-Key is the same video, created once.
    let (status, again) = remix(&proxy, &key, &source_id, &json!({"prompt": "a crane"}), Some("r1")).await;
    assert_eq!((status, &again["id"]), (200, &remixed["id"]), "{again}");
    assert_eq!(sim.stats().create_requests, created + 1);
    // An Idempotency-Key no front takes is refused, named, before anything is sent.
    let overlong = "k".repeat(256);
    let (status, error) =
        remix(&proxy, &key, &source_id, &json!({"prompt": "a crane"}), Some(&overlong)).await;
    assert_eq!((status, &error["error"]["param"]), (400, &json!("Idempotency-Key")), "{error}");
    assert_openai_error(&error);
    assert_eq!(sim.stats().create_requests, created + 1);
    // As a multipart form too, like a create.
    let form = reqwest::multipart::Form::new().text("prompt", "a stork");
    let url = format!("{}/v1/videos/{source_id}/remix", proxy.url);
    let (status, by_form, _) =
        reply(proxy.http.post(url).bearer_auth(&key).multipart(form).send().await.unwrap()).await;
    assert_eq!((status, by_form["prompt"].as_str()), (200, Some("a stork")), "{by_form}");
    assert_eq!(by_form["remixed_from_video_id"], source_id.as_str());
    let stored =
        proxy.state.store().generation_summary(remixed["id"].as_str().unwrap()).await.unwrap().unwrap();
    let params: Value = serde_json::from_str(stored.params.as_deref().unwrap()).unwrap();
    assert_eq!(params["prompt"], "a crane");
    assert_eq!((&params["duration"], &params["aspect_ratio"]), (&json!(4), &json!("9:16")));

    // Media sent inline is not kept, so a video made from it cannot be remixed.
    // A PNG by its first bytes, which is what the server checks of an image.
    let image = "data:image/png;base64,iVBORw0KGgoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let body = json!({"model": "sora-2", "prompt": "from a photo", "input_reference": {"image_url": image}});
    let (status, inline, _) = create_json(&proxy, &key, &body).await;
    assert_eq!(status, 200, "{inline}");
    let inline_id = inline["id"].as_str().unwrap();
    let stored = proxy.state.store().generation_summary(inline_id).await.unwrap().unwrap();
    assert!(!stored.params.as_deref().unwrap().contains("iVBOR"), "the data is never stored");
    let (status, error) = remix(&proxy, &key, inline_id, &json!({"prompt": "again"}), None).await;
    assert_eq!(status, 400, "{error}");
    assert_openai_error(&error);
    assert!(error["error"]["message"].as_str().unwrap().contains("inline"), "{error}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_video_reads_back_its_own_seconds_and_size_after_a_restart_and_then_from_memory() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("sol", KeyLimits::default()).await;
    let fields =
        [("model", "google/veo-3.1-t2v-fast"), ("prompt", "a heron"), ("seconds", "6"), ("size", "720x1280")];
    let (_, video, _) = create_form(&proxy, Some(&key), &fields).await;
    let id = video["id"].as_str().unwrap().to_owned();
    // Created here: every read is answered from memory.
    let reads = metric(&proxy, "aimlvid_job_storage_reads_total");
    for _ in 0..20 {
        let (status, read, _) = retrieve(&proxy, &key, &id).await;
        assert_eq!(
            (status, read["seconds"].as_str(), read["size"].as_str()),
            (200, Some("6"), Some("720x1280"))
        );
    }
    assert_eq!(metric(&proxy, "aimlvid_job_storage_reads_total"), reads, "a hot read touches no storage");
    proxy.stop().await;

    let proxy = start_proxy(&sim, &db).await;
    let (status, read, _) = retrieve(&proxy, &key, &id).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!((read["seconds"].as_str(), read["size"].as_str()), (Some("6"), Some("720x1280")));
    assert_eq!(
        (read["prompt"].as_str(), read["created_at"].as_i64()),
        (Some("a heron"), video["created_at"].as_i64())
    );
    let reads = metric(&proxy, "aimlvid_job_storage_reads_total");
    for _ in 0..5 {
        assert_eq!(retrieve(&proxy, &key, &id).await.0, 200);
    }
    assert_eq!(metric(&proxy, "aimlvid_job_storage_reads_total"), reads, "read once, then from memory");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replicas_video_is_read_from_storage_once_and_its_deletion_reaches_every_replica() {
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await;
    let open = || async {
        let settings = aimlvid_server::store::PostgresSettings {
            max_connections: 4,
            ..aimlvid_server::store::PostgresSettings::new(secrecy::SecretString::from(database.url.as_str()))
        };
        aimlvid_server::store::PostgresStore::open(&settings).await.unwrap()
    };
    let a = start_proxy_on(&sim, open().await, quick_polls(), |_| {}).await;
    let b = start_proxy_on(&sim, open().await, quick_polls(), |_| {}).await;
    let key = a.key("tia", KeyLimits::default()).await;
    let fields = [("model", "google/veo-3.1-t2v-fast"), ("prompt", "shared"), ("seconds", "6")];
    let (_, video, _) = create_form(&a, Some(&key), &fields).await;
    let id = video["id"].as_str().unwrap().to_owned();

    // B learns of the key, then reads the video from storage, once.
    let read = eventually("the other replica knows the key", || async {
        let (status, read, _) = retrieve(&b, &key, &id).await;
        (status == 200).then_some(read)
    })
    .await;
    assert_eq!((read["seconds"].as_str(), read["prompt"].as_str()), (Some("6"), Some("shared")));
    let reads = metric(&b, "aimlvid_job_storage_reads_total");
    assert_eq!(retrieve(&b, &key, &id).await.0, 200);
    assert_eq!(metric(&b, "aimlvid_job_storage_reads_total"), reads, "then from memory");

    // Deleted on A: B, which holds it in memory, hears of it.
    assert_eq!(delete(&a, &key, &id).await.0, 200);
    eventually("the deletion reaches the other replica", || async {
        (retrieve(&b, &key, &id).await.0 == 404).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
    database.drop().await;
}

#[tokio::test]
async fn a_finished_video_pushed_out_of_memory_still_reads_completed() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    // One finished job kept in the views: the first video's state is let go.
    let proxy = start_proxy_tweaked(&sim, &db, quick_polls(), |c| c.recent_jobs = 1).await;
    let key = proxy.key("uma", KeyLimits::default()).await;
    let mut ids = Vec::new();
    for prompt in ["first", "second"] {
        let (_, video, _) = create_json(&proxy, &key, &json!({"model": "sora-2", "prompt": prompt})).await;
        let id = video["id"].as_str().unwrap().to_owned();
        assert!(sim.complete_now(&id));
        eventually("the video completes", || async {
            (retrieve(&proxy, &key, &id).await.1["status"] == "completed").then_some(())
        })
        .await;
        ids.push(id);
    }
    let (status, read, _) = retrieve(&proxy, &key, &ids[0]).await;
    assert_eq!(
        (status, read["status"].as_str(), read["prompt"].as_str()),
        (200, Some("completed"), Some("first"))
    );
    assert!(read["completed_at"].as_i64().is_some(), "{read}");
    proxy.stop().await;
}

/// A create whose answer was lost is a 502 the openai SDKs do not retry by
/// themselves (`x-should-retry: false`), saying not to create it again.
#[tokio::test]
async fn a_lost_create_answer_tells_the_sdk_not_to_retry() {
    use aimlvid_sim::{Fault, Route};
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("ana", KeyLimits::default()).await;
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);
    let (status, body, headers) =
        create_json(&proxy, &key, &json!({"model": "sora-2", "prompt": "lost on the way back"})).await;
    assert_eq!(status, 502, "{body}");
    assert_openai_error(&body);
    assert_eq!(headers["x-should-retry"], "false");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("Do not create it again"), "{message}");
    assert_eq!(sim.stats().create_requests, 1);
    proxy.stop().await;
}

/// The SDKs nest a form's fields a level or two; a name nested thousands
/// deep is refused, not built (it would overflow the stack), and a form of
/// thousands of fields too.
#[tokio::test]
async fn a_hostile_form_is_refused_before_anything_is_sent() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("ana", KeyLimits::default()).await;
    let deep = format!("x{}", "[a]".repeat(3000));
    let (status, body, _) = create_form(
        &proxy,
        Some(&key),
        &[("model", "google/veo-3.1-t2v-fast"), ("prompt", "p"), (&deep, "1")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_openai_error(&body);
    let many: Vec<(String, String)> = (0..300).map(|i| (format!("f{i}"), "1".to_owned())).collect();
    let mut fields: Vec<(&str, &str)> = vec![("model", "google/veo-3.1-t2v-fast"), ("prompt", "p")];
    fields.extend(many.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (status, body, _) = create_form(&proxy, Some(&key), &fields).await;
    assert_eq!(status, 400, "{body}");
    // A prompt of megabytes is refused too, on every front.
    let long = "x".repeat(100_000);
    let (status, body, _) = create_json(&proxy, &key, &json!({"model": "sora-2", "prompt": long})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("at most 65536"), "{body}");
    assert_eq!(sim.stats().create_requests, 0);
    // The server still answers.
    let (status, _, _) = create_json(&proxy, &key, &json!({"model": "sora-2", "prompt": "fine"})).await;
    assert_eq!(status, 200);
    proxy.stop().await;
}

/// What the outside attack found, each answered in OpenAI's shape with
/// nothing sent upstream: an image for a model that takes none, an upload
/// that is not an image, unreadable and overlong ids, a trailing slash.
#[tokio::test]
async fn inputs_a_model_cannot_use_and_unreadable_paths_are_refused_in_openais_shape() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("ana", KeyLimits::default()).await;
    let png = "data:image/png;base64,iVBORw0KGgoAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let to_t2v =
        json!({"model": "google/veo-3.1-t2v-fast", "prompt": "p", "input_reference": {"image_url": png}});
    let (status, body, _) = create_json(&proxy, &key, &to_t2v).await;
    assert_eq!((status, &body["error"]["param"]), (400, &json!("input_reference")), "{body}");
    let text = "data:image/png;base64,aGVsbG8=";
    let not_image = json!({"model": "sora-2", "prompt": "p", "input_reference": {"image_url": text}});
    let (status, body, _) = create_json(&proxy, &key, &not_image).await;
    assert_eq!((status, &body["error"]["param"]), (400, &json!("input_reference")), "{body}");
    assert_eq!(sim.stats().create_requests, 0);

    for path in ["/v1/videos/%FF%FE", "/v1/videos/", &format!("/v1/videos/{}", "x".repeat(5000))] {
        let response = proxy.http.get(format!("{}{path}", proxy.url)).bearer_auth(&key).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_openai_error(&body);
        assert!(body["error"]["message"].as_str().unwrap().len() < 300, "{body}");
    }

    // Sora 2 Pro's portrait 1080p reads back as the size Sora names it by.
    let pro = json!({"model": "sora-2-pro", "prompt": "p", "size": "1024x1792"});
    let (status, video, _) = create_json(&proxy, &key, &pro).await;
    assert_eq!((status, video["size"].as_str()), (200, Some("1024x1792")), "{video}");
    proxy.stop().await;
}
