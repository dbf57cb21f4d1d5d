//! `/metrics`: requests, latencies, upstream calls, unfinished jobs and
//! credits, in the Prometheus text format.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aimlvid_server::store::KeyLimits;
use aimlvid_sim::{Fault, Route};

use crate::support::*;

/// Scrapes `/metrics` into `series{labels}` → value, checking the format.
async fn scrape(proxy: &Proxy) -> HashMap<String, f64> {
    let response =
        proxy.http.get(format!("{}/metrics", proxy.url)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = response.text().await.unwrap();
    let mut series = HashMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
        assert!(series.insert(name.to_owned(), value).is_none(), "a series appears twice: {line}");
    }
    series
}

fn value(series: &HashMap<String, f64>, name: &str) -> f64 {
    *series.get(name).unwrap_or_else(|| panic!("no series {name}"))
}

#[tokio::test]
async fn metrics_count_requests_upstream_calls_unfinished_jobs_and_credits() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("alice", KeyLimits::default()).await;
    let (http, endpoint) = (&proxy.http, proxy.endpoint());

    let unauthorized = http.get(format!("{}/metrics", proxy.url)).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401, "metrics name keys, so they need the admin token");

    let created = post(http, &endpoint, Some(&key), &create_body("counted")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    for _ in 0..3 {
        assert_eq!(get(http, &endpoint, Some(&key), Some(&id)).await.status, 200);
    }
    assert_eq!(get(http, &endpoint, Some(&key), Some("no-such-job")).await.status, 404);
    assert_eq!(http.get(format!("{}/nowhere", proxy.url)).send().await.unwrap().status(), 404);

    let before = scrape(&proxy).await;
    let gets = "method=\"GET\",route=\"/v2/video/generations\"";
    assert_eq!(value(&before, &format!("aimlvid_http_requests_total{{{gets},code=\"200\"}}")), 3.0);
    assert_eq!(value(&before, &format!("aimlvid_http_requests_total{{{gets},code=\"404\"}}")), 1.0);
    assert_eq!(value(&before, &format!("aimlvid_http_request_duration_seconds_count{{{gets}}}")), 4.0);
    assert_eq!(
        value(&before, &format!("aimlvid_http_request_duration_seconds_bucket{{{gets},le=\"+Inf\"}}")),
        4.0
    );
    let create = "method=\"POST\",route=\"/v2/video/generations\",code=\"200\"";
    assert_eq!(value(&before, &format!("aimlvid_http_requests_total{{{create}}}")), 1.0);
    assert_eq!(
        value(&before, "aimlvid_http_requests_total{method=\"other\",route=\"other\",code=\"404\"}"),
        1.0,
        "an unknown path is counted under one label, not its own"
    );
    assert_eq!(value(&before, "aimlvid_upstream_calls_total{kind=\"create\",outcome=\"ok\"}"), 1.0);
    assert_eq!(value(&before, "aimlvid_unfinished_jobs"), 1.0);
    assert_eq!(value(&before, "aimlvid_key_unfinished_jobs{key=\"alice\"}"), 1.0);
    assert_eq!(value(&before, "aimlvid_credits_charged_total{key=\"alice\"}"), 0.0);

    // The poller meets one 503, then sees the job finish.
    sim.inject(Route::Poll, Fault::Status(503), 1);
    assert!(sim.complete_now(&id));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(http, &endpoint, Some(&key), Some(&id)).await.body["status"] != "completed" {
        assert!(Instant::now() < deadline, "the job never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let after = scrape(&proxy).await;
    let polls = |outcome: &str| {
        value(&after, &format!("aimlvid_upstream_calls_total{{kind=\"poll\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!(polls("server_error"), 1.0);
    assert_eq!(
        polls("ok") + polls("server_error"),
        sim.stats().poll_requests as f64,
        "every poll is counted"
    );
    assert_eq!(
        value(&after, "aimlvid_upstream_call_duration_seconds_count{kind=\"poll\"}"),
        sim.stats().poll_requests as f64
    );
    assert_eq!(value(&after, "aimlvid_unfinished_jobs"), 0.0);
    assert_eq!(value(&after, "aimlvid_key_unfinished_jobs{key=\"alice\"}"), 0.0);
    assert_eq!(value(&after, "aimlvid_credits_charged_total{key=\"alice\"}"), sim.config().credits_per_job);
    assert_eq!(
        value(&after, "aimlvid_http_requests_total{method=\"GET\",route=\"/metrics\",code=\"200\"}"),
        1.0,
        "the first scrape counts once it has answered"
    );
    proxy.stop().await;
}
