//! The proxy answers as the upstream does.

use aimlvid::{ExtendVideo, VideoInput};
use aimlvid_server::store::KeyLimits;
use aimlvid_sim::DEFAULT_API_KEY;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn the_same_requests_get_the_same_answers_as_direct() {
    let sim = fast_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("alice", KeyLimits::default()).await;
    let direct = format!("{}/v2/video/generations", sim.base_url());
    let http = &proxy.http;

    // A create: same status and fields.
    let body = create_body("a raccoon");
    let (d, p) = (
        post(http, &direct, Some(DEFAULT_API_KEY), &body).await,
        post(http, &proxy.endpoint(), Some(&key), &body).await,
    );
    assert_eq!((d.status, p.status), (200, 200));
    assert_eq!(shape(&d.body), shape(&p.body));
    assert_eq!(p.body["status"], d.body["status"]);

    // The member's own client, pointed at the proxy, waits the job out.
    let client = proxy.client(&key);
    let id = p.body["id"].as_str().unwrap().to_owned();
    let done = client.wait(id.clone()).await.unwrap();
    assert_eq!(done.status, aimlvid::Status::Completed);
    // And the finished job reads the same through the proxy as direct.
    let (d, p) = (
        get(http, &direct, Some(DEFAULT_API_KEY), Some(&id)).await,
        get(http, &proxy.endpoint(), Some(&key), Some(&id)).await,
    );
    assert_eq!((d.status, p.status), (200, 200));
    assert_eq!(p.body, d.body);

    // The typed client's create-and-wait works unchanged against the proxy.
    let request = ExtendVideo::new("an owl", VideoInput::url("https://example.com/a.mp4").unwrap());
    let job = client.create_and_wait(&request).await.unwrap();
    assert_eq!(job.credits_used(), Some(sim.config().credits_per_job));

    // Errors: same status, message and body shape.
    let cases = [
        (
            "no generation_id",
            get(http, &direct, Some(DEFAULT_API_KEY), None).await,
            get(http, &proxy.endpoint(), Some(&key), None).await,
        ),
        (
            "unknown id",
            get(http, &direct, Some(DEFAULT_API_KEY), Some("nope")).await,
            get(http, &proxy.endpoint(), Some(&key), Some("nope")).await,
        ),
        (
            "bad key",
            get(http, &direct, Some("wrong"), Some(&id)).await,
            get(http, &proxy.endpoint(), Some("wrong"), Some(&id)).await,
        ),
        (
            "no key",
            get(http, &direct, None, Some(&id)).await,
            get(http, &proxy.endpoint(), None, Some(&id)).await,
        ),
        (
            "invalid body",
            post(http, &direct, Some(DEFAULT_API_KEY), &json!({"model": "google/veo3-1-fast-extend-video"}))
                .await,
            post(http, &proxy.endpoint(), Some(&key), &json!({"model": "google/veo3-1-fast-extend-video"}))
                .await,
        ),
    ];
    for (case, d, p) in cases {
        assert_eq!(p.status, d.status, "{case}: {p:?} vs {d:?}");
        assert_eq!(p.body["message"], d.body["message"], "{case}");
        assert_eq!(p.body["statusCode"], d.body["statusCode"], "{case}");
        assert_eq!(shape(&p.body), shape(&d.body), "{case}");
        assert_eq!(p.body["path"], "/v2/video/generations", "{case}");
        assert!(!p.body["requestId"].as_str().unwrap().is_empty(), "{case}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let http = &proxy.http;
    assert_eq!(http.get(format!("{}/healthz", proxy.url)).send().await.unwrap().status(), 200);
    assert_eq!(http.get(format!("{}/readyz", proxy.url)).send().await.unwrap().status(), 200);
    let missing = http.get(format!("{}/v1/nothing", proxy.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let request_id = missing.headers().get("x-request-id").unwrap().to_str().unwrap().to_owned();
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["message"], "Cannot GET /v1/nothing");
    assert_eq!(body["requestId"], request_id.as_str(), "the body names the request id the headers carry");
    proxy.stop().await;
}
