//! The proxy at its edges: members who disconnect, uploads from strangers.

use std::time::Duration;

use aimlvid_server::store::KeyLimits;
use aimlvid_sim::{Fault, Route};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_disconnects_mid_create_gets_the_job_on_retry() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("una", KeyLimits { max_unfinished: Some(2), ..KeyLimits::default() }).await;
    // The upstream takes a second to answer; the member gives up after 100 ms.
    sim.inject(Route::Create, Fault::Latency(Duration::from_secs(1)), 1);
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let gone = impatient
        .post(proxy.endpoint())
        .bearer_auth(&key)
        .header("idempotency-key", "once")
        .json(&create_body("patience"))
        .send()
        .await;
    assert!(gone.is_err(), "the member left before the answer");

    // The create carries on without them; the retry gets the job.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        let again =
            post_with(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("patience"), Some("once"))
                .await;
        match again.status {
            200 => break again.body,
            409 => {}
            other => panic!("unexpected {other}: {again:?}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "the create was lost with its member");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!((sim.stats().create_requests, sim.stats().jobs_created), (1, 1));
    // Followed, charged, and its slot given back at the end: no leak.
    let entry = proxy.state.keys().entries().into_iter().find(|e| e.record().name == "una").unwrap();
    assert_eq!(entry.unfinished(), 1);
    assert!(sim.complete_now(&id));
    let done = proxy.client(&key).wait(id).await.unwrap();
    assert_eq!(done.status, aimlvid::Status::Completed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while entry.unfinished() != 0 {
        assert!(tokio::time::Instant::now() < deadline, "the slot was never given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(entry.credits_used(), sim.config().credits_per_job);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_gives_its_slot_back() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("vic", KeyLimits { max_unfinished: Some(1), ..KeyLimits::default() }).await;
    for _ in 0..3 {
        sim.inject(Route::Create, Fault::Status(400), 1);
        let refused = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("no")).await;
        assert_eq!(refused.status, 400, "{refused:?}");
    }
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("yes")).await;
    assert_eq!(created.status, 200, "{created:?}");
    proxy.stop().await;
}

/// Sends a request head with `Content-Length: length` and no body, and
/// returns the status line the server answers with, within five seconds.
async fn status_without_sending_the_body(proxy: &Proxy, key: Option<&str>, length: u64) -> String {
    let address = proxy.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /v2/video/generations HTTP/1.1\r\nHost: {address}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(read.is_ok(), "no answer until the body arrived");
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_refused_before_its_body_unless_the_key_is_good_and_it_fits() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("wes", KeyLimits::default()).await;
    // 60 MiB from a stranger: 401 at once, the body never read.
    let status = status_without_sending_the_body(&proxy, None, 60 << 20).await;
    assert!(status.contains(" 401 "), "{status}");
    let status = status_without_sending_the_body(&proxy, Some("sk-wrong"), 60 << 20).await;
    assert!(status.contains(" 401 "), "{status}");
    // A member's upload larger than the limit: 413 from its declared length.
    let limit = proxy.state.body_limit() as u64;
    let status = status_without_sending_the_body(&proxy, Some(&key), limit + 1).await;
    assert!(status.contains(" 413 "), "{status}");
    assert_eq!(sim.stats().create_requests, 0);
    proxy.stop().await;
}
