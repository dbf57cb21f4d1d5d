//! The create call: paid, so retried only when it cannot have been accepted.

use std::time::Duration;

use aimlvid::{Error, RetryPolicy, VideoInput};
use aimlvid_sim::{Fault, Route, Simulator};
use base64::Engine as _;

use crate::{builder_for, config, extend_request, start};

#[tokio::test]
async fn a_create_answered_with_5xx_after_acceptance_is_never_repeated() {
    let (sim, client) = start(config()).await;
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::Status(502))), 1);

    let err = client.create(&extend_request()).await.unwrap_err();

    assert!(matches!(err, Error::CreateOutcomeUnknown { .. }), "{err:?}");
    assert!(err.to_string().contains("may have been accepted"), "{err}");
    let stats = sim.stats();
    assert_eq!((stats.create_requests, stats.jobs_created), (1, 1));
}

#[tokio::test]
async fn a_create_that_times_out_after_sending_is_never_repeated() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim).request_timeout(Duration::from_millis(200)).build().unwrap();
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::Latency(Duration::from_secs(5)))), 1);

    let err = client.create(&extend_request()).await.unwrap_err();

    assert!(matches!(err, Error::CreateOutcomeUnknown { .. }), "{err:?}");
    let stats = sim.stats();
    assert_eq!((stats.create_requests, stats.jobs_created), (1, 1));
}

#[tokio::test]
async fn a_create_whose_connection_drops_is_never_repeated() {
    let (sim, client) = start(config()).await;
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);

    let err = client.create(&extend_request()).await.unwrap_err();

    assert!(matches!(err, Error::CreateOutcomeUnknown { .. }), "{err:?}");
    assert_eq!(sim.stats().create_requests, 1);
}

#[tokio::test]
async fn a_rate_limited_create_is_retried_after_retry_after() {
    let (sim, client) = start(config()).await;
    sim.inject(Route::Create, Fault::RateLimited { retry_after_secs: 1 }, 1);

    let created = client.create(&extend_request()).await.unwrap();

    let stats = sim.stats();
    assert_eq!((stats.create_requests, stats.jobs_created), (2, 1));
    assert!(sim.job(&created.id).is_some());
    let creates: Vec<_> = sim.requests().into_iter().filter(|r| r.route == Route::Create).collect();
    assert_eq!(creates[0].status, 429);
    let gap = creates[1].at - creates[0].at;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}, before Retry-After");
}

#[tokio::test]
async fn a_create_refused_at_connect_is_retried_once_the_server_is_up() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = aimlvid::Client::builder()
        .api_key(aimlvid_sim::DEFAULT_API_KEY)
        .base_url(format!("http://{addr}"))
        // A refused connection is retried within the first back-off: the
        // retry comes 200 to 400 ms later, after the server is up at 100 ms.
        .retry_policy(RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(400),
            max_backoff: Duration::from_millis(400),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Simulator::start_on(config(), addr).await.unwrap()
    });

    let created = client.create(&extend_request()).await.unwrap();

    let sim = server.await.unwrap();
    assert_eq!(sim.stats().jobs_created, 1);
    assert!(sim.job(&created.id).is_some());
}

#[tokio::test]
async fn a_local_file_travels_as_a_data_uri() {
    let (sim, client) = start(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clip.mp4");
    std::fs::write(&path, aimlvid_sim::SAMPLE_INPUT).unwrap();

    let input = VideoInput::from_file(&path).await.unwrap();
    let (header, payload) = input.as_str().split_once(',').unwrap();
    assert_eq!(header, "data:video/mp4;base64");
    let decoded = base64::engine::general_purpose::STANDARD.decode(payload).unwrap();
    assert_eq!(decoded, aimlvid_sim::SAMPLE_INPUT);

    let created = client.create(&aimlvid::ExtendVideo::new("Pan left", input)).await.unwrap();
    assert!(sim.job(&created.id).is_some(), "the simulator accepted the inline video");
}

#[tokio::test]
async fn a_large_clip_on_a_slow_uplink_is_given_the_time_its_upload_needs() {
    // About 8 MB of base64 read at 4 MiB/s: a two-second upload.
    let rate = 4 * 1024 * 1024;
    let (sim, _) = start(aimlvid_sim::SimConfig { upload_bytes_per_sec: Some(rate), ..config() }).await;
    let mut clip = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom".to_vec();
    clip.resize(6 * 1024 * 1024, 0);
    let request = aimlvid::ExtendVideo::new("slowly", VideoInput::from_bytes(&clip).unwrap());

    // Half a second for the answer, and the upload's own time at 1 MiB/s or
    // faster; a read timeout far shorter than the upload does not apply to it.
    let patient = builder_for(&sim)
        .request_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_millis(300))
        .min_upload_rate(1024 * 1024)
        .build()
        .unwrap();
    let created = patient.create(&request).await.unwrap();
    assert_eq!(sim.stats().jobs_created, 1, "{created:?}");

    // Without the upload's allowance the same create is cut off mid-upload,
    // and can only be reported as a create whose outcome is unknown.
    let hasty = builder_for(&sim)
        .request_timeout(Duration::from_millis(500))
        .min_upload_rate(u64::MAX)
        .build()
        .unwrap();
    let err = hasty.create(&request).await.unwrap_err();
    assert!(matches!(err, Error::CreateOutcomeUnknown { .. }), "{err:?}");
    assert_eq!(sim.stats().jobs_created, 1, "the cut upload created nothing");
}

#[tokio::test]
async fn a_retry_after_longer_than_the_policy_waits_out_fails_at_once() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim).max_retry_after(Duration::from_secs(10)).build().unwrap();
    sim.inject(Route::Create, Fault::RateLimited { retry_after_secs: 3600 }, 1);
    let started = std::time::Instant::now();
    let err = client.create(&extend_request()).await.unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err:?}");
    assert_eq!(err.retry_after(), Some(Duration::from_secs(3600)));
    assert!(started.elapsed() < Duration::from_secs(5), "did not wait the hour");
    assert_eq!(sim.stats().create_requests, 1);
}
