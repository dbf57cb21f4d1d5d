//! Creates whose answer was lost, found again in the request logs by the
//! `X-Client-Request-Id` they were sent with; receipts; expired results.

use std::time::{Duration, SystemTime};

use aimlvid::{ClientRequestId, CreateLookup, Error, Status};
use aimlvid_sim::{Fault, Route, SimConfig};

use crate::{builder_for, config, extend_request, start};

fn unknown_id(err: Error) -> ClientRequestId {
    match err {
        Error::CreateOutcomeUnknown { client_request_id, .. } => client_request_id,
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}

#[tokio::test]
async fn a_lost_create_is_recovered_from_the_logs_with_one_paid_job() {
    let (sim, client) = start(config()).await;
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);
    let sent_at = SystemTime::now();

    let err = client.create(&extend_request()).await.unwrap_err();
    assert!(err.to_string().contains("client request id aimlvid-"), "{err}");
    let id = unknown_id(err);

    let found = client.find_create(&id, Some("google/veo3-1-fast-extend-video"), sent_at).await.unwrap();
    let CreateLookup::Accepted(job) = found else { panic!("not found: {found:?}") };
    assert!(sim.job(&job.id).is_some(), "the job the lost create made");
    let finished = client.wait(job.id.as_str()).await.unwrap();
    assert_eq!(finished.status, Status::Completed);
    let stats = sim.stats();
    assert_eq!((stats.create_requests, stats.jobs_created), (1, 1), "recovered, not created again");
}

#[tokio::test]
async fn a_refused_create_and_one_never_made_are_told_apart() {
    let (sim, _) = start(config()).await;
    // Sent unchecked, so that the API is the one to refuse it.
    let client = builder_for(&sim).validate_requests(false).build().unwrap();
    let refused = ClientRequestId::new("journal-refused-1").unwrap();
    let mut bad = extend_request();
    bad.prompt = String::new();
    let err = client.create_with_id(&bad, &refused).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err:?}");

    let since = SystemTime::now() - Duration::from_secs(60);
    assert_eq!(client.find_create(&refused, None, since).await.unwrap(), CreateLookup::Refused);
    let never = ClientRequestId::new("journal-never-sent").unwrap();
    assert_eq!(client.find_create(&never, None, since).await.unwrap(), CreateLookup::NotLogged);
    assert_eq!(sim.stats().jobs_created, 0);
}

#[tokio::test]
async fn a_create_missing_from_lagging_logs_is_found_once_they_catch_up() {
    // The logs lag 2,000 simulated seconds: two real seconds.
    let (sim, client) = start(SimConfig { logs_delay: Duration::from_secs(2000), ..config() }).await;
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::Status(502))), 1);
    let sent_at = SystemTime::now();
    let id = unknown_id(client.create(&extend_request()).await.unwrap_err());

    assert_eq!(client.find_create(&id, None, sent_at).await.unwrap(), CreateLookup::NotLogged);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        if let CreateLookup::Accepted(job) = client.find_create(&id, None, sent_at).await.unwrap() {
            break job;
        }
        assert!(tokio::time::Instant::now() < deadline, "never found");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(sim.job(&job.id).is_some());
}

#[tokio::test]
async fn many_lost_creates_are_found_in_one_pass_over_several_pages() {
    let (sim, client) = start(config()).await;
    let sent_at = SystemTime::now();
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 3);
    let mut lost = Vec::new();
    for _ in 0..3 {
        lost.push(unknown_id(client.create(&extend_request()).await.unwrap_err()));
    }
    // 250 more rows after them, so they sit on the third page.
    for _ in 0..250 {
        client.create(&extend_request()).await.unwrap();
    }
    let logs_before = sim.requests().iter().filter(|r| r.route == Route::Logs).count();
    let rows = client.find_logged_creates(&lost, None, sent_at).await.unwrap();
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert!(sim.job(&row.inference_id).is_some());
        assert!(lost.iter().any(|id| Some(id.as_str()) == row.client_request_id.as_deref()));
    }
    let pages = sim.requests().iter().filter(|r| r.route == Route::Logs).count() - logs_before;
    assert_eq!(pages, 3, "one pass, 100 rows a page");
}

#[tokio::test]
async fn answers_carry_their_receipts() {
    let (_sim, client) = start(config()).await;
    let id = ClientRequestId::new("order-8f21c4").unwrap();
    let created = client.create_with_id(&extend_request(), &id).await.unwrap();
    let receipt = created.receipt.clone().expect("a receipt");
    assert_eq!(receipt.inference_id.as_deref(), Some(created.id.as_str()));
    assert_eq!(receipt.client_request_id.as_deref(), Some("order-8f21c4"));
    assert_eq!(receipt.credits_used, Some(120_000));
    assert_eq!(receipt.usd_spent, Some(0.06));
    let polled = client.get(&created.id).await.unwrap();
    assert_eq!(polled.receipt.and_then(|r| r.credits_used), Some(0), "a poll is free");
}

#[tokio::test]
async fn an_expired_result_is_a_clear_error_and_not_retried() {
    let (sim, client) = start(SimConfig { result_ttl: Some(Duration::ZERO), ..config() }).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = client.download(&done, dir.path().join("out.mp4")).await.unwrap_err();
    assert!(matches!(err, Error::ResultUnavailable { status: 403, .. }), "{err:?}");
    assert!(err.to_string().contains("poll the generation again"), "{err}");
    assert_eq!(sim.stats().download_requests, 1);
}
