//! Call receipts, `GET /v2/logs`, `GET /models/metrics`, and the faults
//! that only show over time: failures on demand, refunds, expiring results.

use std::time::Duration;

use aimlvid_sim::{DEFAULT_API_KEY, Fault, Route, SimConfig, Spread};
use serde_json::{Value, json};

use crate::support::*;

async fn create_traced(sim: &aimlvid_sim::RunningSim, trace: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v2/video/generations", sim.base_url()))
        .bearer_auth(DEFAULT_API_KEY)
        .header("x-client-request-id", trace)
        .json(body)
        .send()
        .await
        .expect("create answered")
}

async fn logs(sim: &aimlvid_sim::RunningSim, query: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(format!("{}/v2/logs", sim.base_url()))
        .bearer_auth(DEFAULT_API_KEY)
        .query(query)
        .send()
        .await
        .expect("logs answered")
}

async fn log_rows(sim: &aimlvid_sim::RunningSim, query: &[(&str, &str)]) -> Value {
    let response = logs(sim, query).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn answers_carry_the_inference_id_cost_and_echoed_client_id() {
    let sim = start(SimConfig::fast()).await;
    let created = create_traced(&sim, "order-8f21c4", &body()).await;
    assert_eq!(created.status(), 200);
    let id = header(&created, "x-inference-id").unwrap().to_owned();
    assert_eq!(header(&created, "x-client-request-id"), Some("order-8f21c4"));
    assert_eq!(header(&created, "x-aimlapi-credits-used"), Some("120000"));
    assert_eq!(header(&created, "x-aimlapi-usd-spent"), Some("0.060000000"));
    assert!(header(&created, "access-control-expose-headers").unwrap().contains("x-inference-id"));
    let answer: Value = created.json().await.unwrap();
    assert_eq!(answer["id"], id.as_str(), "submit and its polls share one id");

    let polled = poll_with(&sim, DEFAULT_API_KEY, &id).await;
    assert_eq!(header(&polled, "x-inference-id"), Some(id.as_str()));
    assert_eq!(header(&polled, "x-aimlapi-credits-used"), Some("0"), "a poll is free");
    // An id that could not be ours gets no inference id; no error either.
    let odd = poll_with(&sim, DEFAULT_API_KEY, "not-an-id").await;
    assert_eq!(odd.status(), 404);
    assert_eq!(header(&odd, "x-inference-id"), None);

    // A malformed client id is silently dropped: the job is still made.
    let dropped = create_traced(&sim, "has spaces/and slashes", &body()).await;
    assert_eq!(dropped.status(), 200);
    assert_eq!(header(&dropped, "x-client-request-id"), None);
    let rows = log_rows(&sim, &[("period", "1h")]).await;
    assert_eq!(rows["data"][0]["client_request_id"], Value::Null);
    assert_eq!(rows["data"][1]["client_request_id"], "order-8f21c4");
}

#[tokio::test]
async fn a_create_whose_answer_was_lost_is_found_in_the_logs_by_its_client_id() {
    let sim = start(SimConfig::fast()).await;
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);
    let lost = client()
        .post(format!("{}/v2/video/generations", sim.base_url()))
        .bearer_auth(DEFAULT_API_KEY)
        .header("x-client-request-id", "journal-0001")
        .json(&body())
        .send()
        .await;
    assert!(lost.is_err(), "the answer never arrives");
    assert_eq!(sim.stats().jobs_created, 1);

    // A refused create is logged too, as failed and free.
    let mut refused = body();
    refused["prompt"] = json!("");
    assert_eq!(create_traced(&sim, "journal-0002", &refused).await.status(), 400);

    let rows = log_rows(&sim, &[("period", "1h"), ("model", HEADLINE)]).await;
    assert_eq!(rows["pagination"], json!({"limit": 50, "offset": 0, "total": 2, "has_more": false}));
    let newest = &rows["data"][0];
    assert_eq!(newest["client_request_id"], "journal-0002");
    assert_eq!(newest["status"], "failed");
    assert_eq!(newest["cost"], json!({"usd": 0.0, "credits": 0}));
    let found = &rows["data"][1];
    assert_eq!(found["client_request_id"], "journal-0001");
    assert_eq!(found["status"], "succeeded");
    assert_eq!(found["origin"], "api");
    let id = found["inference_id"].as_str().unwrap();
    assert!(sim.job(id).is_some(), "the logged inference id is the job's generation id");

    // Once the job completes, its row carries the charge.
    let finished = wait_finished(&sim, id).await;
    assert_eq!(finished["status"], "completed");
    let rows = log_rows(&sim, &[("period", "1h"), ("status", "succeeded")]).await;
    assert_eq!(rows["data"].as_array().unwrap().len(), 1);
    assert_eq!(rows["data"][0]["cost"]["credits"], 120_000);
}

#[tokio::test]
async fn logs_filter_page_and_refuse_what_the_upstream_refuses() {
    let sim = start(SimConfig::fast()).await;
    for i in 0..5 {
        assert_eq!(create_traced(&sim, &format!("c{i}"), &body()).await.status(), 200);
    }
    let page = log_rows(&sim, &[("period", "1d"), ("limit", "2"), ("offset", "2")]).await;
    let ids: Vec<&str> =
        page["data"].as_array().unwrap().iter().map(|r| r["client_request_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["c2", "c1"], "newest first");
    assert_eq!(page["pagination"]["has_more"], true);
    assert_eq!(page["pagination"]["total"], 5);
    // A bare alias matches; a comma list is one literal name and matches nothing.
    assert_eq!(
        log_rows(&sim, &[("period", "1d"), ("model", "veo3-1-fast-extend-video")]).await["pagination"]["total"],
        5
    );
    let comma = format!("{HEADLINE},other/model");
    assert_eq!(log_rows(&sim, &[("period", "1d"), ("model", &comma)]).await["pagination"]["total"], 0);
    // A window in the past holds nothing.
    let past = log_rows(&sim, &[("start", "2020-01-01T00:00:00Z"), ("end", "2020-01-02T00:00:00Z")]).await;
    assert_eq!(past["pagination"]["total"], 0);

    for (query, says) in [
        (vec![], "period"),
        (
            vec![("period", "1d"), ("start", "2026-01-01T00:00:00Z"), ("end", "2026-01-02T00:00:00Z")],
            "not both",
        ),
        (vec![("period", "7w")], "Invalid period"),
        (vec![("start", "2026-01-02T00:00:00Z"), ("end", "2026-01-01T00:00:00Z")], "earlier"),
        (vec![("start", "2026-01-01T00:00:00Z"), ("end", "2026-06-01T00:00:00Z")], "92 days"),
        (vec![("period", "1d"), ("status", "succeeded,failed")], "Invalid status"),
        (vec![("period", "1d"), ("limit", "101")], "Invalid limit"),
    ] {
        let body = error_body(logs(&sim, &query).await, 400, "/v2/logs").await;
        assert!(body["message"].as_str().unwrap().contains(says), "{query:?}: {body}");
    }
    let unauthenticated = client().get(format!("{}/v2/logs?period=1d", sim.base_url())).send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
    assert_eq!(logs(&sim, &[("period", "1d"), ("key_prefix", "zzz")]).await.status(), 403);
}

#[tokio::test]
async fn logs_are_rate_limited_per_key() {
    let sim = start(SimConfig { logs_requests_per_minute: 3, ..SimConfig::fast() }).await;
    for _ in 0..3 {
        assert_eq!(logs(&sim, &[("period", "1d")]).await.status(), 200);
    }
    let refused = logs(&sim, &[("period", "1d")]).await;
    assert_eq!(refused.status(), 429);
    let wait: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
}

#[tokio::test]
async fn rows_appear_only_after_the_analytics_delay() {
    // 2,000 virtual seconds at 1,000x: two real seconds.
    let sim = start(SimConfig { logs_delay: Duration::from_secs(2000), ..SimConfig::fast() }).await;
    assert_eq!(create_traced(&sim, "late", &body()).await.status(), 200);
    assert_eq!(log_rows(&sim, &[("period", "1h")]).await["pagination"]["total"], 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if log_rows(&sim, &[("period", "1h")]).await["pagination"]["total"] == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the row never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sim.virtual_now() >= Duration::from_secs(2000));
}

#[tokio::test]
async fn metrics_report_duration_percentiles_of_recent_successful_jobs() {
    // 10x: a 3 s job takes 0.3 s; the 300 s window is 30 real seconds.
    let config = SimConfig {
        time_scale: 10.0,
        queue_time: Spread::Fixed(Duration::from_secs(1)),
        generation_time: Spread::Fixed(Duration::from_secs(2)),
        ..SimConfig::default()
    };
    let sim = start(config).await;
    let empty: Value = client()
        .get(format!("{}/models/metrics", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(empty["models"], json!([]), "no data is absent, not zero");
    assert_eq!(empty["window_seconds"], 300);

    let ok = create_job(&sim).await;
    let failed = create_job(&sim).await;
    assert!(sim.fail_now(&failed));
    wait_finished(&sim, &ok).await;

    let url = format!("{}/models/metrics", sim.base_url());
    let all: Value = client().get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        all["models"],
        json!([{
            "alias": HEADLINE,
            "endpoint": "/v2/video/generations",
            "metrics": {"duration_ms": {"p50": 3000, "p75": 3000, "p90": 3000, "p99": 3000}},
        }]),
        "only the successful job is measured"
    );
    let other: Value =
        client().get(&url).query(&[("aliases", "openai/gpt-5")]).send().await.unwrap().json().await.unwrap();
    assert_eq!(other["models"], json!([]));
    let bad = client().get(&url).query(&[("model", HEADLINE)]).send().await.unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn a_job_failed_on_demand_gives_its_credits_back() {
    let sim =
        start(SimConfig { time_scale: 0.0, credit_balance: Some(300_000.0), ..SimConfig::fast() }).await;
    let id = create_job(&sim).await;
    assert_eq!(sim.credit_balance(), Some(180_000.0), "held at create");
    assert!(sim.fail_now(&id));
    assert!(!sim.fail_now(&id), "only once");
    assert_eq!(sim.credit_balance(), Some(300_000.0), "refunded");
    let answer: Value = poll_with(&sim, DEFAULT_API_KEY, &id).await.json().await.unwrap();
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["meta"]["usage"]["credits_used"], 0);
    let rows = log_rows(&sim, &[("period", "1h"), ("status", "failed")]).await;
    assert_eq!(rows["data"][0]["inference_id"], id.as_str());
}

#[tokio::test]
async fn results_expire_like_signed_urls() {
    let sim = start(SimConfig { result_ttl: Some(Duration::ZERO), ..SimConfig::fast() }).await;
    let id = create_job(&sim).await;
    let answer = wait_finished(&sim, &id).await;
    let url = answer["video"]["url"].as_str().unwrap();
    let gone = client().get(url).send().await.unwrap();
    assert_eq!(gone.status(), 403);
    assert!(gone.text().await.unwrap().contains("Request has expired"));

    // Within its lifetime (an hour of virtual time: 3.6 real seconds) it serves.
    let sim = start(SimConfig { result_ttl: Some(Duration::from_secs(3600)), ..SimConfig::fast() }).await;
    let id = create_job(&sim).await;
    let answer = wait_finished(&sim, &id).await;
    let served = client().get(answer["video"]["url"].as_str().unwrap()).send().await.unwrap();
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn files_are_announced_under_a_configured_cdn_which_a_create_may_name_as_its_video() {
    let sim = start(SimConfig { files_url: Some("https://cdn.sim.test/".into()), ..SimConfig::fast() }).await;
    let id = create_job(&sim).await;
    let answer = wait_finished(&sim, &id).await;
    let url = answer["video"]["url"].as_str().unwrap().to_owned();
    assert_eq!(url, format!("https://cdn.sim.test/files/{id}.mp4"));
    // It is served here all the same, as the CDN's origin.
    let served = client().get(format!("{}/files/{id}.mp4", sim.base_url())).send().await.unwrap();
    assert_eq!(served.status(), 200);
    // An https URL is what a create's video_url takes; the sim's own
    // plain-http address is refused as the real API refuses one.
    let extend = |video_url: &str| json!({"model": "google/veo3-1-fast-extend-video", "prompt": "on", "video_url": video_url});
    let taken = create_with(&sim, DEFAULT_API_KEY, &extend(&url)).await;
    assert!(taken.status().is_success(), "the CDN's https URL is taken: {}", taken.status());
    let own = format!("{}/files/{id}.mp4", sim.base_url());
    let refused = create_with(&sim, DEFAULT_API_KEY, &extend(&own)).await;
    assert_eq!(refused.status(), 400);
}
