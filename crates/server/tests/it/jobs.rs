//! Jobs: idempotency, one poller for many readers, restarts, upstream faults.

use std::time::Duration;

use aimlvid_server::store::KeyLimits;
use aimlvid_sim::{Fault, Route};
use futures_util::future::join_all;

use crate::support::*;

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_same_job_without_a_second_create() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("erin", KeyLimits::default()).await;
    let other = proxy.key("frank", KeyLimits::default()).await;
    let (http, endpoint, body) = (&proxy.http, proxy.endpoint(), create_body("once"));

    let first = post_with(http, &endpoint, Some(&key), &body, Some("idem-1")).await;
    let again = post_with(http, &endpoint, Some(&key), &body, Some("idem-1")).await;
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(first.body["id"], again.body["id"]);
    assert_eq!(sim.stats().create_requests, 1);

    let changed = post_with(http, &endpoint, Some(&key), &create_body("twice"), Some("idem-1")).await;
    assert_eq!(changed.status, 422, "{changed:?}");
    // Another key's Idempotency-Keys are its own.
    let theirs = post_with(http, &endpoint, Some(&other), &body, Some("idem-1")).await;
    assert_eq!(theirs.status, 200);
    assert_ne!(theirs.body["id"], first.body["id"]);
    assert_eq!(sim.stats().create_requests, 2);
    // A key too long to be one is refused, saying what a key may be, before anything is sent.
    let overlong = post_with(http, &endpoint, Some(&key), &body, Some(&"k".repeat(256))).await;
    assert_eq!(overlong.status, 400, "{overlong:?}");
    assert!(overlong.body["message"].as_str().unwrap_or("").contains("1 to 255"), "{overlong:?}");
    assert_eq!(sim.stats().create_requests, 2);
    proxy.stop().await;
}

#[tokio::test]
async fn fifty_members_polling_one_job_cost_no_more_upstream_polls_than_one() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("team", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("popular")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();

    // 50 members poll as fast as they can until they see the job finish.
    let readers = (0..50).map(|_| {
        let (http, endpoint, key, id) = (proxy.http.clone(), proxy.endpoint(), key.clone(), id.clone());
        tokio::spawn(async move {
            let mut reads = 0u64;
            loop {
                let answer = get(&http, &endpoint, Some(&key), Some(&id)).await;
                assert_eq!(answer.status, 200);
                reads += 1;
                if answer.body["status"] == "completed" {
                    return reads;
                }
                tokio::task::yield_now().await;
            }
        })
    });
    let readers: Vec<_> = readers.collect();
    // Let the members read a while (by counting their reads, not by sleeping a guess).
    while proxy.state.views().get(&id).is_some() && sim.job(&id).unwrap().polls < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(sim.complete_now(&id));
    let reads: u64 = join_all(readers).await.into_iter().map(Result::unwrap).sum();
    let upstream_polls = sim.job(&id).unwrap().polls;
    assert_eq!(sim.stats().poll_requests, upstream_polls, "members never reach the upstream");
    assert!(reads >= 50 && upstream_polls * 5 < reads, "{upstream_polls} upstream polls for {reads} reads");

    // A finished job is never polled again, however often it is read.
    for _ in 0..20 {
        get(&proxy.http, &proxy.endpoint(), Some(&key), Some(&id)).await;
    }
    tokio::time::sleep(Duration::from_millis(30)).await; // six of the poller's intervals
    assert_eq!(sim.job(&id).unwrap().polls, upstream_polls);
    proxy.stop().await;
}

#[tokio::test]
async fn a_restarted_server_still_has_the_job_and_follows_it_to_the_end() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("gina", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("survivor")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    proxy.stop().await;

    assert!(sim.complete_now(&id));
    let proxy = start_proxy(&sim, &db).await;
    let done = proxy.client(&key).wait(id.clone()).await.unwrap();
    assert_eq!(done.status, aimlvid::Status::Completed);
    let keys = proxy.state.store().keys().await.unwrap();
    assert_eq!(keys[0].credits_used, sim.config().credits_per_job);
    proxy.stop().await;
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_is_recorded_as_unknown_and_never_retried() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("hal", KeyLimits::default()).await;
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::Status(502))), 1);

    let lost =
        post_with(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("lost"), Some("idem")).await;
    assert_eq!(lost.status, 502, "{lost:?}");
    assert!(lost.body["message"].as_str().unwrap().contains("may have accepted"));
    assert_eq!((sim.stats().create_requests, sim.stats().jobs_created), (1, 1));
    let key_id = proxy.state.store().keys().await.unwrap()[0].id;
    let row = proxy.state.store().job_by_idempotency_key(key_id, "idem").await.unwrap().unwrap();
    assert_eq!(row.status, "unknown");

    // Repeating it says the same and still does not create again.
    let again =
        post_with(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("lost"), Some("idem")).await;
    assert_eq!(again.status, 502);
    assert_eq!(sim.stats().create_requests, 1);
    proxy.stop().await;
}

#[tokio::test]
async fn an_unknown_create_is_found_in_the_upstream_logs_and_its_idempotency_key_then_gets_the_job() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy_configured(&sim, &db, |c| c.recover_interval = Duration::from_millis(20)).await;
    let key = proxy.key("kim", KeyLimits { max_unfinished: Some(1), ..KeyLimits::default() }).await;
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);
    let lost =
        post_with(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("lost"), Some("idem")).await;
    assert_eq!(lost.status, 502, "{lost:?}");
    assert!(lost.body["message"].as_str().unwrap().contains("same Idempotency-Key"), "{lost:?}");

    // The upstream logged the create under our job id: the recoverer finds
    // it, and the member's retry with the same key gets the job.
    let found = eventually("never recovered", || async {
        let again =
            post_with(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("lost"), Some("idem")).await;
        assert!(matches!(again.status, 200 | 502), "{again:?}");
        (again.status == 200).then_some(again)
    })
    .await;
    let id = found.body["id"].as_str().unwrap().to_owned();
    let sim_job = sim.job(&id).expect("the job the lost create made");
    let key_id = proxy.state.store().keys().await.unwrap()[0].id;
    let row = proxy.state.store().job_by_idempotency_key(key_id, "idem").await.unwrap().unwrap();
    assert_eq!(row.generation_id.as_deref(), Some(sim_job.id.as_str()));
    // It counts against the key's limit again while it runs.
    let blocked = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("second")).await;
    assert_eq!(blocked.status, 429, "{blocked:?}");

    // Followed and charged like any other job, once.
    assert!(sim.complete_now(&id));
    let done = proxy.client(&key).wait(id.clone()).await.unwrap();
    assert_eq!(done.status, aimlvid::Status::Completed);
    eventually("never charged", || async {
        (proxy.state.store().keys().await.unwrap()[0].credits_used != 0.0).then_some(())
    })
    .await;
    assert_eq!(proxy.state.store().keys().await.unwrap()[0].credits_used, sim.config().credits_per_job);
    assert_eq!((sim.stats().create_requests, sim.stats().jobs_created), (1, 1));
    proxy.stop().await;
}

#[tokio::test]
async fn a_created_job_keeps_its_receipt() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("lee", KeyLimits::default()).await;
    let created =
        post_with(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("r"), Some("idem-r")).await;
    assert_eq!(created.status, 200);
    let key_id = proxy.state.store().keys().await.unwrap()[0].id;
    let row = proxy.state.store().job_by_idempotency_key(key_id, "idem-r").await.unwrap().unwrap();
    let receipt: serde_json::Value = serde_json::from_str(row.receipt.as_deref().unwrap()).unwrap();
    assert_eq!(receipt["inference_id"], created.body["id"]);
    assert_eq!(receipt["credits"], 120_000);
    // The upstream logged it under our job id.
    let logs: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v2/logs?period=1h", sim.base_url()))
        .bearer_auth(aimlvid_sim::DEFAULT_API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logs["data"][0]["client_request_id"], row.local_id.as_str());
    proxy.stop().await;
}

#[tokio::test]
async fn refused_creates_pass_the_upstreams_answer_through() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("ivy", KeyLimits { max_unfinished: Some(1), ..KeyLimits::default() }).await;
    sim.inject(Route::Create, Fault::Status(400), 1);
    let refused = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("x")).await;
    assert_eq!((refused.status, refused.body["message"].as_str()), (400, Some("Bad request")));
    // A 403 is about the team's account: the member is told it is the operator's to fix.
    sim.inject(Route::Create, Fault::Status(403), 1);
    let billing = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("x")).await;
    assert_eq!(billing.status, 503, "{billing:?}");
    // The refused create holds no slot and no row.
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("x")).await;
    assert_eq!(created.status, 200, "{created:?}");
    proxy.stop().await;
}

#[tokio::test]
async fn polls_ride_out_upstream_errors_and_rate_limits() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("jay", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("bumpy")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    sim.inject(Route::Poll, Fault::Status(503), 3);
    sim.inject(Route::Poll, Fault::RateLimited { retry_after_secs: 0 }, 2);
    sim.inject(Route::Poll, Fault::DropConnection, 1);
    assert!(sim.complete_now(&id));
    let done = proxy.client(&key).wait(id.clone()).await.unwrap();
    assert_eq!(done.status, aimlvid::Status::Completed);
    assert!(sim.stats().poll_requests >= 7, "the faults were met: {:?}", sim.stats());
    proxy.stop().await;
}

#[tokio::test]
async fn finished_jobs_beyond_the_bound_leave_memory_and_come_back_from_storage_when_read() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy_configured(&sim, &db, |config| config.recent_jobs = 2).await;
    let key = proxy.key("many", KeyLimits::default()).await;
    let other = proxy.key("other", KeyLimits::default()).await;
    let (http, endpoint) = (&proxy.http, proxy.endpoint());

    // Four jobs finish one after another; each is read as it finishes.
    let mut finished = Vec::new();
    for n in 0..4 {
        let created = post(http, &endpoint, Some(&key), &create_body(&format!("job {n}"))).await;
        let id = created.body["id"].as_str().unwrap().to_owned();
        assert!(sim.complete_now(&id));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let done = loop {
            let answer = get(http, &endpoint, Some(&key), Some(&id)).await;
            if answer.body["status"] == "completed" {
                break answer.body;
            }
            assert!(std::time::Instant::now() < deadline, "job {n} never finished");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        finished.push((id, done));
    }
    assert_eq!(proxy.state.views().counts(), (2, 2), "two finished jobs stay in memory");
    assert_eq!(metric(&proxy, "aimlvid_jobs_evicted_total"), 2.0);
    assert!(proxy.state.views().get(&finished[0].0).is_none(), "the least recently used left");
    let misses = metric(&proxy, "aimlvid_job_storage_reads_total");

    // The oldest is read from storage once, the same as before, then from memory again.
    let (oldest, body) = &finished[0];
    let read = get(http, &endpoint, Some(&key), Some(oldest)).await;
    assert_eq!((read.status, &read.body), (200, body));
    assert_eq!(metric(&proxy, "aimlvid_job_storage_reads_total"), misses + 1.0);
    assert_eq!(get(http, &endpoint, Some(&key), Some(oldest)).await.body, *body);
    assert_eq!(metric(&proxy, "aimlvid_job_storage_reads_total"), misses + 1.0, "now in memory again");
    assert_eq!(proxy.state.views().counts(), (2, 2), "and another left in its place");

    // An evicted job is still another key's 404, and still streams its last state.
    let (evicted, body) = &finished[1];
    assert!(proxy.state.views().get(evicted).is_none());
    assert_eq!(get(http, &endpoint, Some(&other), Some(evicted)).await.status, 404);
    let stream = http
        .get(format!("{}/v2/video/generations/{evicted}/events", proxy.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<&str> = stream.lines().filter_map(|l| l.strip_prefix("data:")).collect();
    assert_eq!(events.len(), 1, "{stream}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(events[0].trim()).unwrap(), *body);
    proxy.stop().await;
}
