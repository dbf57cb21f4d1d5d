//! Jobs move queued → generating → completed | error with virtual time.

use std::time::Duration;

use aimlvid_sim::{DEFAULT_API_KEY, SimConfig, Simulator, Spread};
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::{HEADLINE, body, create_job, poll_with, start, wait_finished};

#[tokio::test]
async fn a_fast_job_completes_and_points_at_its_file() {
    let sim = start(SimConfig::fast()).await;
    let id = create_job(&sim).await;
    let answer = wait_finished(&sim, &id).await;
    assert_eq!(
        answer,
        json!({
            "id": id,
            "status": "completed",
            "video": {"url": format!("{}/files/{id}.mp4", sim.base_url())},
            "meta": {"usage": {"credits_used": 120000}},
        })
    );
    let job = sim.job(&id).unwrap();
    // Fixed 2 s queue + 5 s generation, in virtual time.
    assert_eq!(job.finishes_at - job.created_at, Duration::from_secs(7));
    let noticed = job.first_finished_answer_at.expect("noticed");
    assert!(noticed >= job.finishes_at);
    assert!(job.polls >= 1);
    assert_eq!(job.model, HEADLINE);

    // A later poll does not move the notice.
    poll_with(&sim, DEFAULT_API_KEY, &id).await;
    let again = sim.job(&id).unwrap();
    assert_eq!(again.first_finished_answer_at, Some(noticed));
    assert_eq!(again.polls, job.polls + 1);
}

#[tokio::test]
async fn failing_jobs_report_an_error_and_no_credits() {
    let sim = start(SimConfig { failure_rate: 1.0, ..SimConfig::fast() }).await;
    let id = create_job(&sim).await;
    let answer = wait_finished(&sim, &id).await;
    assert_eq!(answer["status"], "error");
    assert_eq!(answer["error"]["name"], "GenerationError");
    assert!(answer["error"]["message"].as_str().is_some());
    assert_eq!(answer["meta"]["usage"]["credits_used"], 0);
    assert!(answer.get("video").is_none());
}

#[tokio::test]
async fn complete_now_finishes_a_frozen_job() {
    let sim = start(SimConfig { time_scale: 0.0, ..SimConfig::default() }).await;
    let id = create_job(&sim).await;
    let status = |v: Value| v["status"].as_str().unwrap().to_owned();
    let answer = poll_with(&sim, DEFAULT_API_KEY, &id).await.json().await.unwrap();
    assert_eq!(status(answer), "queued");
    assert!(sim.complete_now(&id));
    assert!(!sim.complete_now(&id));
    assert!(!sim.complete_now("no-such-job"));
    let answer = poll_with(&sim, DEFAULT_API_KEY, &id).await.json().await.unwrap();
    assert_eq!(status(answer), "completed");
}

async fn call(sim: &Simulator, request: Request<Body>) -> (u16, Value) {
    let response = sim.router().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn poll_request(id: &str) -> Request<Body> {
    Request::get(format!("/v2/video/generations?generation_id={id}"))
        .header("authorization", format!("Bearer {DEFAULT_API_KEY}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn statuses_follow_virtual_time_exactly() {
    let sim = Simulator::new(SimConfig {
        time_scale: 10.0,
        queue_time: Spread::Fixed(Duration::from_secs(10)),
        generation_time: Spread::Fixed(Duration::from_secs(100)),
        ..SimConfig::default()
    });
    let create = Request::post("/v2/video/generations")
        .header("authorization", format!("Bearer {DEFAULT_API_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body().to_string()))
        .unwrap();
    let (status, answer) = call(&sim, create).await;
    assert_eq!(status, 200);
    let id = answer["id"].as_str().unwrap().to_owned();

    let mut seen = Vec::new();
    // Real seconds to advance before each poll; time_scale 10.
    for step in [0.9, 0.1, 1.0, 10.0] {
        tokio::time::advance(Duration::from_secs_f64(step)).await;
        let (status, answer) = call(&sim, poll_request(&id)).await;
        assert_eq!(status, 200);
        seen.push(answer["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen, ["queued", "generating", "generating", "completed"]);
    assert_eq!(sim.virtual_now(), Duration::from_secs(120));

    let job = sim.job(&id).unwrap();
    assert_eq!(job.created_at, Duration::ZERO);
    assert_eq!(job.finishes_at, Duration::from_secs(110));
    assert_eq!(job.first_finished_answer_at, Some(Duration::from_secs(120)));
    assert_eq!(job.polls, 4);
    // Without a Host header, file URLs fall back to localhost.
    let (_, answer) = call(&sim, poll_request(&id)).await;
    assert_eq!(answer["video"]["url"], format!("http://localhost/files/{id}.mp4"));
}
