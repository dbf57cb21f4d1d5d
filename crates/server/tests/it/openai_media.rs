//! OpenAI's videos API, the media half: a finished video's content
//! streamed from the simulator's file host, extensions, and the features
//! not offered (edits, characters).

use std::time::Duration;

use aimlvid_server::store::KeyLimits;
use aimlvid_sim::{RunningSim, SAMPLE_INPUT, SAMPLE_RESULT};
use serde_json::{Value, json};

use crate::support::*;

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// OpenAI's error shape, exactly.
fn assert_openai_error(body: &Value) {
    assert_eq!(shape(body), ["error"], "{body}");
    assert_eq!(shape(&body["error"]), ["code", "message", "param", "type"], "{body}");
}

/// A video created by `key` and, with `finish`, completed and seen so by the proxy.
async fn video(proxy: &Proxy, sim: &RunningSim, key: &str, finish: bool) -> String {
    let body = json!({"model": "google/veo-3.1-t2v-fast", "prompt": "a heron"});
    let created = proxy
        .http
        .post(format!("{}/v1/videos", proxy.url))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, video) = json_of(created).await;
    assert_eq!(status, 200, "{video}");
    let id = video["id"].as_str().unwrap().to_owned();
    if finish {
        assert!(sim.complete_now(&id));
        eventually("the video completes", || async {
            let read = proxy.http.get(format!("{}/v1/videos/{id}", proxy.url)).bearer_auth(key).send().await;
            let (_, read) = json_of(read.unwrap()).await;
            (read["status"] == "completed").then_some(())
        })
        .await;
    }
    id
}

fn content(proxy: &Proxy, key: &str, id: &str) -> reqwest::RequestBuilder {
    proxy.http.get(format!("{}/v1/videos/{id}/content", proxy.url)).bearer_auth(key)
}

/// Nothing in an answer's headers names the upstream's file host.
fn assert_no_upstream_url(headers: &reqwest::header::HeaderMap, sim: &RunningSim) {
    for (name, value) in headers {
        let value = value.to_str().unwrap_or("");
        assert!(!value.contains("/files/") && !value.contains(&sim.base_url()), "{name}: {value}");
    }
}

#[tokio::test]
async fn a_finished_videos_content_is_the_upstreams_file_whole_or_by_range_and_never_names_its_url() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("ana", KeyLimits::default()).await;
    let other = proxy.key("bo", KeyLimits::default()).await;

    let id = video(&proxy, &sim, &key, false).await;
    // Not finished: an error, never a 200 with JSON in place of the video.
    let (status, error) = json_of(content(&proxy, &key, &id).send().await.unwrap()).await;
    assert_eq!(status, 409, "{error}");
    assert_openai_error(&error);
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("not finished") && message.contains("queued"), "{message}");

    assert!(sim.complete_now(&id));
    let whole = eventually("the content is served", || async {
        let response = content(&proxy, &key, &id).send().await.unwrap();
        (response.status() == 200).then_some(response)
    })
    .await;
    let headers = whole.headers().clone();
    assert_eq!(headers["content-type"], "video/mp4");
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["content-length"], SAMPLE_RESULT.len().to_string().as_str());
    assert_no_upstream_url(&headers, &sim);
    assert_eq!(whole.bytes().await.unwrap().as_ref(), SAMPLE_RESULT, "byte for byte the simulator's file");
    let with_variant = content(&proxy, &key, &id).query(&[("variant", "video")]).send().await.unwrap();
    assert_eq!(with_variant.bytes().await.unwrap().as_ref(), SAMPLE_RESULT);

    let part = content(&proxy, &key, &id).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(part.status(), 206);
    let len = SAMPLE_RESULT.len();
    assert_eq!(part.headers()["content-range"], format!("bytes 10-19/{len}").as_str());
    assert_eq!(part.headers()["content-length"], "10");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &SAMPLE_RESULT[10..20]);

    let beyond =
        content(&proxy, &key, &id).header("range", format!("bytes={}-", len + 10)).send().await.unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], format!("bytes */{len}").as_str());
    let (_, error) = json_of(beyond).await;
    assert_openai_error(&error);

    // HEAD: the headers of the whole file, no body.
    let head =
        proxy.http.head(format!("{}/v1/videos/{id}/content", proxy.url)).bearer_auth(&key).send().await;
    let head = head.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], len.to_string().as_str());
    assert!(head.bytes().await.unwrap().is_empty());

    // Another member's video and an unknown one read alike.
    for (who, video) in [(&other, id.as_str()), (&key, "no-such-video")] {
        let (status, error) = json_of(content(&proxy, who, video).send().await.unwrap()).await;
        assert_eq!(status, 404, "{error}");
        assert_openai_error(&error);
    }
    for (variant, said) in
        [("thumbnail", "variant=video"), ("spritesheet", "variant=video"), ("gif", "\"gif\"")]
    {
        let asked = content(&proxy, &key, &id).query(&[("variant", variant)]).send().await.unwrap();
        let (status, error) = json_of(asked).await;
        assert_eq!((status, &error["error"]["param"]), (400, &json!("variant")), "{error}");
        assert!(error["error"]["message"].as_str().unwrap().contains(said), "{error}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_failed_an_expired_and_an_unreachable_file_are_errors_that_do_not_name_the_file_host() {
    let sim = frozen_sim_with(|c| c.result_ttl = Some(Duration::ZERO)).await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("cy", KeyLimits::default()).await;

    let failed = video(&proxy, &sim, &key, false).await;
    assert!(sim.fail_now(&failed));
    let error = eventually("the failure is seen", || async {
        let (status, error) = json_of(content(&proxy, &key, &failed).send().await.unwrap()).await;
        error["error"]["message"].as_str().is_some_and(|m| m.contains("failed")).then_some((status, error))
    })
    .await;
    assert_eq!(error.0, 409);
    assert_openai_error(&error.1);

    // Results expire at once here: the file host answers 403.
    let expired = video(&proxy, &sim, &key, true).await;
    let (status, error) = json_of(content(&proxy, &key, &expired).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["code"]), (404, &json!("video_content_unavailable")), "{error}");
    assert!(!error.to_string().contains("/files/") && !error.to_string().contains("127.0.0.1"), "{error}");
    proxy.stop().await;

    let sim = frozen_sim_with(|c| c.files_url = Some(CDN.into())).await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("cy", KeyLimits::default()).await;
    let lost = video(&proxy, &sim, &key, true).await;
    let (status, error) = json_of(content(&proxy, &key, &lost).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["type"]), (502, &json!("server_error")), "{error}");
    assert!(!error.to_string().contains("127.0.0.1"), "{error}");
    proxy.stop().await;
}

fn extensions(proxy: &Proxy, key: &str) -> reqwest::RequestBuilder {
    proxy.http.post(format!("{}/v1/videos/extensions", proxy.url)).bearer_auth(key)
}

#[tokio::test]
async fn a_finished_video_is_extended_by_its_id_with_the_upstreams_own_file_url() {
    let sim = frozen_sim_with(|c| c.files_url = Some(CDN.into())).await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("dee", KeyLimits::default()).await;
    let other = proxy.key("eli", KeyLimits::default()).await;
    let source = video(&proxy, &sim, &key, true).await;
    let unfinished = video(&proxy, &sim, &key, false).await;
    let sent_before = sim.stats().create_requests;

    // As openai-python sends it: a form with `video[id]`.
    let form = reqwest::multipart::Form::new()
        .text("video[id]", source.clone())
        .text("prompt", "the heron takes off")
        .text("seconds", "7");
    let (status, extension) = json_of(extensions(&proxy, &key).multipart(form).send().await.unwrap()).await;
    assert_eq!(status, 200, "{extension}");
    assert_eq!(extension["object"], "video");
    assert_eq!(extension["model"], "google/veo3-1-fast-extend-video");
    assert_eq!(extension["seconds"], "7");
    let id = extension["id"].as_str().unwrap().to_owned();
    let sent = sim.job(&id).unwrap().request;
    assert_eq!(sent["video_url"], format!("{CDN}/files/{source}.mp4").as_str(), "the upstream's own URL");
    assert_eq!((sent["duration"].as_i64(), sent["prompt"].as_str()), (Some(7), Some("the heron takes off")));
    assert!(sim.complete_now(&id));
    eventually("the extension completes", || async {
        let read = proxy.http.get(format!("{}/v1/videos/{id}", proxy.url)).bearer_auth(&key).send().await;
        let (_, read) = json_of(read.unwrap()).await;
        (read["status"] == "completed").then_some(())
    })
    .await;

    // The standard model by JSON; seconds it cannot take are named.
    let body = json!({"video": {"id": source}, "prompt": "again", "model": "google/veo3-1-extend-video"});
    let (status, standard) = json_of(extensions(&proxy, &key).json(&body).send().await.unwrap()).await;
    assert_eq!((status, &standard["model"]), (200, &json!("google/veo3-1-extend-video")), "{standard}");
    let body = json!({"video": {"id": source}, "prompt": "longer", "seconds": "8"});
    let (status, error) = json_of(extensions(&proxy, &key).json(&body).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["param"]), (400, &json!("seconds")), "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("allows 7"), "{error}");
    assert_eq!(sim.stats().create_requests, sent_before + 2);

    // Unfinished, another member's, unknown: refused, nothing sent.
    let body = json!({"video": {"id": unfinished}, "prompt": "too soon"});
    let (status, error) = json_of(extensions(&proxy, &key).json(&body).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["param"]), (409, &json!("video")), "{error}");
    assert_openai_error(&error);
    for (who, video) in [(&other, source.as_str()), (&key, "no-such-video")] {
        let body = json!({"video": {"id": video}, "prompt": "not mine"});
        let (status, error) = json_of(extensions(&proxy, who).json(&body).send().await.unwrap()).await;
        assert_eq!(status, 404, "{error}");
        assert_openai_error(&error);
    }
    assert_eq!(sim.stats().create_requests, sent_before + 2);
    proxy.stop().await;
}

#[tokio::test]
async fn an_uploaded_clip_is_extended_inline_and_a_file_that_is_no_video_is_refused() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("fay", KeyLimits::default()).await;

    // The SDK labels a file by its name; the type is read from its bytes.
    let clip = reqwest::multipart::Part::bytes(SAMPLE_INPUT.to_vec())
        .file_name("clip")
        .mime_str("application/octet-stream")
        .unwrap();
    let form = reqwest::multipart::Form::new().part("video", clip).text("prompt", "the raccoon looks up");
    let (status, extension) = json_of(extensions(&proxy, &key).multipart(form).send().await.unwrap()).await;
    assert_eq!(status, 200, "{extension}");
    let sent = sim.job(extension["id"].as_str().unwrap()).unwrap().request;
    let video_url = sent["video_url"].as_str().unwrap();
    assert!(video_url.starts_with("data:video/mp4;base64,"), "{video_url}");
    // The clip is 320x180: its shape is asked for outright, and reads back.
    assert_eq!(sent["aspect_ratio"], "16:9", "{sent}");
    assert_eq!(extension["size"], "1280x720", "{extension}");

    let text = reqwest::multipart::Part::bytes(b"not a video".to_vec()).file_name("notes.mp4");
    let form = reqwest::multipart::Form::new().part("video", text).text("prompt", "x");
    let (status, error) = json_of(extensions(&proxy, &key).multipart(form).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["param"]), (400, &json!("video")), "{error}");
    assert_openai_error(&error);

    // A video by id whose file is not on https (this simulator's own
    // address) cannot be passed on: the refusal says what to do instead.
    let source = video(&proxy, &sim, &key, true).await;
    let body = json!({"video": {"id": source}, "prompt": "on"});
    let (status, error) = json_of(extensions(&proxy, &key).json(&body).send().await.unwrap()).await;
    assert_eq!((status, &error["error"]["param"]), (400, &json!("video")), "{error}");
    assert!(!error.to_string().contains(&sim.base_url()), "{error}");
    assert_eq!(sim.stats().create_requests, 2, "the clip's extension and the source");
    proxy.stop().await;
}

#[tokio::test]
async fn edits_and_characters_answer_openais_404_naming_what_is_served() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("gus", KeyLimits::default()).await;
    let asks = [
        proxy.http.post(format!("{}/v1/videos/edits", proxy.url)),
        proxy.http.post(format!("{}/v1/videos/characters", proxy.url)),
        proxy.http.get(format!("{}/v1/videos/characters/char_123", proxy.url)),
        proxy.http.get(format!("{}/v1/videos/vid_1/thumbnails", proxy.url)),
    ];
    for ask in asks {
        let (status, error) = json_of(ask.bearer_auth(&key).send().await.unwrap()).await;
        assert_eq!(status, 404, "{error}");
        assert_openai_error(&error);
        let message = error["error"]["message"].as_str().unwrap();
        for served in [
            "GET /v1/videos/{video_id}/content",
            "POST /v1/videos/extensions",
            "DELETE /v1/videos/{video_id}",
        ] {
            assert!(message.contains(served), "{message}");
        }
    }
    proxy.stop().await;
}
