//! Each class of upstream error arrives as its own variant, with a message
//! that says what to do.

use std::time::Duration;

use aimlvid::{Client, Error, GenericRequest, PollPolicy, RetryPolicy, Status};
use aimlvid_sim::{Fault, Route, SimConfig, Spread};

use crate::{SCALE, builder_for, config, extend_request, start};

#[tokio::test]
async fn a_wrong_key_is_unauthorized_and_never_echoed() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim).api_key("sk-wrong-and-secret").build().unwrap();

    let err = client.create(&extend_request()).await.unwrap_err();

    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("sk-wrong-and-secret"), "{shown}");
    assert!(shown.contains("AIMLAPI_API_KEY"));
    assert_eq!(sim.stats().jobs_created, 0);
}

#[tokio::test]
async fn a_bad_field_is_an_invalid_request_with_expected_and_received() {
    let (sim, client) = start(config()).await;
    let request = GenericRequest::new("google/veo3-1-fast-extend-video")
        .param("prompt", "go")
        .param("video_url", "https://example.com/a.mp4")
        .param("aspect_ratio", "4:3");
    // Refused before sending, by the catalog...
    let err = client.create(&request).await.unwrap_err();
    assert!(matches!(&err, Error::Validation(_)) && err.to_string().contains("aspect_ratio"), "{err:?}");
    assert_eq!(sim.stats().create_requests, 0);

    // ...and by the API, in the same words, when the catalog is not asked.
    let unchecked = builder_for(&sim).validate_requests(false).build().unwrap();
    let err = unchecked.create(&request).await.unwrap_err();

    let Error::InvalidRequest { message, details, .. } = &err else { panic!("{err:?}") };
    assert_eq!(message, "Body validation error");
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(details[0].starts_with("aspect_ratio: "), "{details:?}");
    assert!(details[0].contains("'4:3'") && details[0].contains("'16:9'"), "{details:?}");
    assert_eq!(sim.stats().jobs_created, 0);
}

#[tokio::test]
async fn an_unknown_id_is_not_found_without_retries() {
    let (sim, client) = start(config()).await;

    let err = client.get("no-such-generation").await.unwrap_err();

    assert!(matches!(&err, Error::NotFound { id, .. } if id == "no-such-generation"), "{err:?}");
    assert_eq!(sim.stats().poll_requests, 1);
}

#[tokio::test]
async fn an_empty_balance_is_out_of_credits() {
    let (_sim, client) = start(SimConfig { credit_balance: Some(0.0), ..config() }).await;

    let err = client.create(&extend_request()).await.unwrap_err();

    assert!(matches!(err, Error::OutOfCredits { .. }), "{err:?}");
}

#[tokio::test]
async fn too_many_running_jobs_is_rate_limited_until_a_slot_frees() {
    let long = SimConfig {
        max_concurrent_jobs: Some(1),
        generation_time: Spread::Fixed(Duration::from_secs(3600)),
        ..config()
    };
    let (sim, _) = start(long).await;
    let client = builder_for(&sim).retry_policy(RetryPolicy::none()).build().unwrap();
    client.create(&extend_request()).await.unwrap();

    let err = client.create(&extend_request()).await.unwrap_err();

    // The running job ends 3.6 s after it was created, real time: whole
    // seconds, rounded up from what is left when the refusal is made.
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), .. }
            if d.subsec_nanos() == 0 && (Duration::from_secs(1)..=Duration::from_secs(4)).contains(&d)),
        "{err:?}"
    );
    let stats = sim.stats();
    assert_eq!((stats.create_requests, stats.jobs_created), (2, 1));
}

#[tokio::test]
async fn a_create_refused_for_concurrency_goes_through_once_a_slot_frees() {
    let (sim, client) = start(SimConfig { max_concurrent_jobs: Some(1), ..config() }).await;
    client.create(&extend_request()).await.unwrap();

    client.create(&extend_request()).await.unwrap();

    let stats = sim.stats();
    assert_eq!((stats.create_requests, stats.jobs_created), (3, 2));
}

#[tokio::test]
async fn a_failed_generation_names_the_job_and_the_reason() {
    let (_sim, client) = start(SimConfig { failure_rate: 1.0, ..config() }).await;

    let err = client.create_and_wait(&extend_request()).await.unwrap_err();

    let Error::GenerationFailed { id, name, message } = &err else { panic!("{err:?}") };
    assert!(!id.is_empty() && !name.is_empty() && !message.is_empty());
}

#[tokio::test]
async fn a_job_past_the_deadline_times_out_with_its_id_and_status() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim)
        .poll_policy(PollPolicy::default().time_scaled(SCALE).deadline(Duration::from_millis(60)))
        .build()
        .unwrap();
    let created = client.create(&extend_request()).await.unwrap();

    let err = client.watch_created(created.clone()).finish().await.unwrap_err();

    let Error::TimedOut { id, last_status, .. } = &err else { panic!("{err:?}") };
    assert_eq!(id, &created.id);
    assert_eq!(last_status, &Status::Queued);
}

#[tokio::test]
async fn a_refused_connection_is_a_transport_error_naming_the_host() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::builder()
        .api_key("k")
        .base_url(format!("http://{addr}"))
        .retry_policy(RetryPolicy::none())
        .build()
        .unwrap();

    let err = client.get("g").await.unwrap_err();

    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_undecodable_with_an_excerpt() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim).retry_policy(RetryPolicy::none()).build().unwrap();
    sim.inject(Route::Poll, Fault::NonJson, 1);

    let err = client.get("anything").await.unwrap_err();

    let Error::Decode { status, excerpt, .. } = &err else { panic!("{err:?}") };
    assert_eq!(*status, 200);
    assert!(excerpt.starts_with("<html>"), "{excerpt}");
}

#[tokio::test]
async fn upstream_trouble_is_retried_then_reported_with_its_status() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim)
        .retry_policy(RetryPolicy { max_attempts: 3, ..RetryPolicy::default().time_scaled(SCALE) })
        .build()
        .unwrap();
    sim.inject(Route::Poll, Fault::Status(503), 3);

    let err = client.get("anything").await.unwrap_err();

    assert!(matches!(err, Error::Upstream { status: 503, .. }), "{err:?}");
    assert_eq!(sim.stats().poll_requests, 3);
}

#[tokio::test]
async fn a_server_that_is_down_is_said_at_once() {
    // A port nobody listens on: connections to it are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::builder()
        .api_key("k")
        .base_url(format!("http://127.0.0.1:{port}"))
        .retry_policy(RetryPolicy::default())
        .build()
        .unwrap();
    for call in ["create", "get"] {
        let started = std::time::Instant::now();
        let err = match call {
            "create" => client.create(&extend_request()).await.unwrap_err(),
            _ => client.get("g").await.unwrap_err(),
        };
        // The default back-off would take 8 s and more; a refused
        // connection gets one retry within half a second.
        assert!(started.elapsed() < Duration::from_secs(3), "{call}: {:?}", started.elapsed());
        assert!(err.is_unreachable(), "{call}: {err:?}");
        assert!(err.to_string().starts_with(&format!("cannot connect to 127.0.0.1:{port};")), "{err}");
    }
}

#[tokio::test]
async fn a_create_answered_404_names_the_base_url_not_a_generation() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim).base_url(format!("{}/not-the-api/", sim.base_url())).build().unwrap();
    let err = client.create(&extend_request()).await.unwrap_err();
    assert!(matches!(err, Error::NotTheApi { .. }), "{err:?}");
    let shown = err.to_string();
    assert!(shown.contains("does not look like the AI/ML API") && !shown.contains("not found"), "{shown}");
    assert_eq!(sim.stats().jobs_created, 0);
}

#[tokio::test]
async fn a_create_answered_405_or_501_is_not_the_api_and_other_5xx_stay_unknown() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim).build().unwrap();
    for status in [405, 501] {
        sim.inject(Route::Create, Fault::Status(status), 1);
        let err = client.create(&extend_request()).await.unwrap_err();
        assert!(matches!(err, Error::NotTheApi { status: s, .. } if s == status), "{err:?}");
        assert!(err.to_string().contains(&format!("answered {status}")), "{err}");
    }
    // A 502 may follow an acceptance: never taken for "nothing was created".
    sim.inject(Route::Create, Fault::Status(502), 1);
    let err = client.create(&extend_request()).await.unwrap_err();
    assert!(matches!(err, Error::CreateOutcomeUnknown { .. }), "{err:?}");
    assert_eq!(sim.stats().create_requests, 3, "none was repeated");
}
