//! Credits, concurrency, body size, counters and shutdown.

use aimlvid_sim::{DEFAULT_API_KEY, Route, SimConfig, Stats};
use serde_json::json;

use crate::support::{CREATE_PATH, body, client, create_job, create_with, error_body, poll_with, start};

#[tokio::test]
async fn creates_are_refused_with_403_once_credits_run_out() {
    let sim = start(SimConfig { credit_balance: Some(250_000.0), ..SimConfig::fast() }).await;
    create_job(&sim).await;
    create_job(&sim).await;
    assert_eq!(sim.credit_balance(), Some(10_000.0));
    let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
    let answer = error_body(response, 403, CREATE_PATH).await;
    assert!(answer["message"].as_str().unwrap().contains("credits"));
    assert_eq!(sim.stats().jobs_created, 2);
    assert_eq!(sim.credit_balance(), Some(10_000.0));
}

#[tokio::test]
async fn too_many_unfinished_jobs_get_429_with_retry_after() {
    let sim = start(SimConfig {
        max_concurrent_jobs: Some(2),
        api_keys: vec![DEFAULT_API_KEY.into(), "other".into()],
        // Frozen: jobs only finish when told to.
        time_scale: 0.0,
        ..SimConfig::default()
    })
    .await;
    let first = create_job(&sim).await;
    create_job(&sim).await;
    let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    error_body(response, 429, CREATE_PATH).await;
    assert_eq!(sim.stats().jobs_created, 2);

    // The limit is per key.
    assert_eq!(create_with(&sim, "other", &body()).await.status(), 200);

    assert!(sim.complete_now(&first));
    create_job(&sim).await;
    assert_eq!(sim.stats().jobs_created, 4);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let sim = start(SimConfig { max_body_bytes: 1024, ..SimConfig::fast() }).await;
    let mut big = body();
    big["prompt"] = json!("x".repeat(2000));
    let response = create_with(&sim, DEFAULT_API_KEY, &big).await;
    error_body(response, 413, CREATE_PATH).await;
    assert_eq!(sim.stats().jobs_created, 0);
    create_job(&sim).await;
}

#[tokio::test]
async fn stats_and_records_are_exact() {
    let sim = start(SimConfig::fast()).await;
    let id = create_job(&sim).await;
    create_with(&sim, "bad", &body()).await;
    poll_with(&sim, DEFAULT_API_KEY, &id).await;
    poll_with(&sim, DEFAULT_API_KEY, "nope").await;
    sim.complete_now(&id);
    let url = format!("{}/files/{id}.mp4", sim.base_url());
    let bytes = client().get(&url).header("range", "bytes=0-9").send().await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.len(), 10);
    client().get(format!("{}/elsewhere", sim.base_url())).send().await.unwrap();

    assert_eq!(
        sim.stats(),
        Stats {
            create_requests: 2,
            jobs_created: 1,
            poll_requests: 2,
            download_requests: 1,
            bytes_served: 10,
        }
    );
    let records = sim.requests();
    let summary: Vec<_> =
        records.iter().map(|r| (r.route, r.method.as_str(), r.status, r.generation_id.as_deref())).collect();
    assert_eq!(
        summary,
        [
            (Route::Create, "POST", 200, Some(id.as_str())),
            (Route::Create, "POST", 401, None),
            (Route::Poll, "GET", 200, Some(id.as_str())),
            (Route::Poll, "GET", 404, Some("nope")),
            (Route::Download, "GET", 200 + 6, Some(id.as_str())),
            (Route::Any, "GET", 404, None),
        ]
    );
    assert_eq!(records[4].range.as_deref(), Some("bytes=0-9"));
    assert!(records.windows(2).all(|w| w[0].at <= w[1].at));
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let sim = start(SimConfig::fast()).await;
    let base = sim.base_url();
    create_job(&sim).await;
    let handle = sim.sim().clone();
    sim.shutdown().await;
    assert!(client().get(format!("{base}{CREATE_PATH}")).send().await.is_err());
    // The state outlives the server.
    assert_eq!(handle.stats().jobs_created, 1);
}
