//! Every fault kind, as a client sees it.

use std::time::Duration;

use aimlvid_sim::{DEFAULT_API_KEY, Fault, Route, SAMPLE_RESULT, SimConfig};
use serde_json::Value;

use crate::support::{
    CREATE_PATH, body, client, create_job, create_with, error_body, poll_with, start, wait_finished,
};

#[tokio::test]
async fn status_faults_answer_error_bodies_and_create_nothing() {
    let sim = start(SimConfig::fast()).await;
    for status in [500, 502, 503, 504] {
        sim.inject(Route::Create, Fault::Status(status), 1);
        let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
        let answer = error_body(response, status, CREATE_PATH).await;
        if status == 504 {
            assert_eq!(answer["message"], "Generation timeout");
        }
    }
    sim.inject(Route::Create, Fault::Status(429), 1);
    let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
    assert_eq!(response.headers()["retry-after"], "1");
    error_body(response, 429, CREATE_PATH).await;

    sim.inject(Route::Create, Fault::RateLimited { retry_after_secs: 7 }, 1);
    let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
    assert_eq!(response.headers()["retry-after"], "7");
    error_body(response, 429, CREATE_PATH).await;

    assert_eq!(sim.stats().jobs_created, 0);
    assert_eq!(sim.stats().create_requests, 6);
    // The script is used up: the next create is normal.
    create_job(&sim).await;
    assert_eq!(sim.stats().jobs_created, 1);
}

#[tokio::test]
async fn faults_come_before_auth() {
    let sim = start(SimConfig::fast()).await;
    sim.inject(Route::Poll, Fault::Status(503), 1);
    let response = poll_with(&sim, "wrong-key", "x").await;
    error_body(response, 503, CREATE_PATH).await;
}

#[tokio::test]
async fn latency_delays_then_answers_normally() {
    let sim = start(SimConfig::fast()).await;
    let delay = Duration::from_millis(150);
    sim.inject(Route::Create, Fault::Latency(delay), 1);
    let started = std::time::Instant::now();
    let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
    assert!(started.elapsed() >= delay);
    assert_eq!(response.status(), 200);
    assert_eq!(sim.stats().jobs_created, 1);
}

#[tokio::test]
async fn dropped_connections_are_client_errors() {
    let sim = start(SimConfig::fast()).await;
    sim.inject(Route::Create, Fault::DropConnection, 1);
    let result = client()
        .post(format!("{}{CREATE_PATH}", sim.base_url()))
        .bearer_auth(DEFAULT_API_KEY)
        .json(&body())
        .send()
        .await;
    let error = result.expect_err("no response");
    assert!(!error.is_timeout(), "{error:?}");
    assert_eq!(sim.stats().jobs_created, 0);
    assert_eq!(sim.stats().create_requests, 1);
    let records = sim.requests();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, 0);

    // The server itself is fine.
    create_job(&sim).await;
}

#[tokio::test]
async fn truncated_downloads_fail_halfway() {
    let sim = start(SimConfig::fast()).await;
    let id = create_job(&sim).await;
    let url = wait_finished(&sim, &id).await["video"]["url"].as_str().unwrap().to_owned();

    sim.inject(Route::Download, Fault::TruncatedBody, 1);
    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.content_length(), Some(SAMPLE_RESULT.len() as u64));
    assert!(response.bytes().await.is_err());
    assert_eq!(sim.stats().bytes_served, SAMPLE_RESULT.len() as u64 / 2);

    // A cut poll answer cannot be parsed either.
    let polls = sim.job(&id).unwrap().polls;
    sim.inject(Route::Poll, Fault::TruncatedBody, 1);
    let response = poll_with(&sim, DEFAULT_API_KEY, &id).await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.is_err());
    // The lost answer does not count as one the client saw.
    assert_eq!(sim.job(&id).unwrap().polls, polls);

    // And the file is still there afterwards.
    let again = client().get(&url).send().await.unwrap();
    assert_eq!(again.bytes().await.unwrap(), SAMPLE_RESULT);
}

#[tokio::test]
async fn non_json_answers_are_html() {
    let sim = start(SimConfig::fast()).await;
    sim.inject(Route::Any, Fault::NonJson, 1);
    let response = poll_with(&sim, DEFAULT_API_KEY, "x").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let text = response.text().await.unwrap();
    assert!(text.contains("Bad Gateway"), "{text}");
    assert!(serde_json::from_str::<Value>(&text).is_err());
}

#[tokio::test]
async fn after_accept_creates_exactly_one_job_whose_answer_is_lost() {
    let sim = start(SimConfig::fast()).await;

    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::Status(500))), 1);
    let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
    error_body(response, 500, CREATE_PATH).await;
    assert_eq!(sim.stats().jobs_created, 1);

    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);
    let result = client()
        .post(format!("{}{CREATE_PATH}", sim.base_url()))
        .bearer_auth(DEFAULT_API_KEY)
        .json(&body())
        .send()
        .await;
    assert!(result.is_err());
    assert_eq!(sim.stats().jobs_created, 2);

    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::TruncatedBody)), 1);
    let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
    assert_eq!(response.status(), 200);
    assert!(response.json::<Value>().await.is_err());
    assert_eq!(sim.stats().jobs_created, 3);

    // The records know which job each lost answer created.
    let records = sim.requests();
    assert_eq!(records.len(), 3);
    for record in &records {
        let id = record.generation_id.as_deref().expect("created id recorded");
        assert!(sim.job(id).is_some());
    }
    assert_eq!(records[0].status, 500);
    assert_eq!(records[1].status, 0);
    assert_eq!(records[2].status, 200);

    // A refused create stays refused: no job.
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::Status(500))), 1);
    let response = create_with(&sim, "wrong-key", &body()).await;
    assert_eq!(response.status(), 401);
    assert_eq!(sim.stats().jobs_created, 3);
}

#[tokio::test]
async fn fault_rates_storm_until_removed() {
    let sim = start(SimConfig::fast()).await;
    sim.set_fault_rate(Route::Poll, Fault::Status(503), 1.0);
    for _ in 0..3 {
        assert_eq!(poll_with(&sim, DEFAULT_API_KEY, "x").await.status(), 503);
    }
    // Creates are not affected by a poll storm.
    let id = create_job(&sim).await;
    sim.set_fault_rate(Route::Poll, Fault::Status(503), 0.0);
    assert_eq!(poll_with(&sim, DEFAULT_API_KEY, &id).await.status(), 200);

    sim.set_fault_rate(Route::Any, Fault::Status(502), 1.0);
    assert_eq!(poll_with(&sim, DEFAULT_API_KEY, &id).await.status(), 502);
    sim.clear_faults();
    assert_eq!(poll_with(&sim, DEFAULT_API_KEY, &id).await.status(), 200);
}
