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
    let job = eventually("the create was lost with its member", || async {
        let again =
            post_with(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("patience"), Some("once"))
                .await;
        match again.status {
            200 => Some(again.body),
            409 => None,
            other => panic!("unexpected {other}: {again:?}"),
        }
    })
    .await;
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!((sim.stats().create_requests, sim.stats().jobs_created), (1, 1));
    // Followed, charged, and its slot given back at the end: no leak.
    let entry = proxy.state.keys().entries().into_iter().find(|e| e.record().name == "una").unwrap();
    assert_eq!(entry.unfinished(), 1);
    assert!(sim.complete_now(&id));
    let done = proxy.client(&key).wait(id).await.unwrap();
    assert_eq!(done.status, aimlvid::Status::Completed);
    eventually("the slot was never given back", || async { (entry.unfinished() == 0).then_some(()) }).await;
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

/// Sends `n` creates at once with `key`; returns how many were accepted
/// and checks that the rest were refused for the budget.
async fn parallel_creates(proxy: &Proxy, key: &str, n: usize) -> Vec<String> {
    let endpoint = proxy.endpoint();
    let bodies: Vec<_> = (0..n).map(|i| create_body(&format!("p{i}"))).collect();
    let answers = futures_util::future::join_all(
        bodies.iter().map(|body| post(&proxy.http, &endpoint, Some(key), body)),
    )
    .await;
    let mut ids = Vec::new();
    for answer in answers {
        match answer.status {
            200 => ids.push(answer.body["id"].as_str().unwrap().to_owned()),
            403 => assert!(answer.body["message"].as_str().unwrap().contains("budget"), "{answer:?}"),
            _ => panic!("unexpected {answer:?}"),
        }
    }
    ids
}

/// Completes `ids` upstream and waits until the proxy has charged them.
async fn finish_all(proxy: &Proxy, sim: &aimlvid_sim::RunningSim, name: &str, ids: &[String], before: f64) {
    for id in ids {
        assert!(sim.complete_now(id));
    }
    let entry = proxy.state.keys().entries().into_iter().find(|e| e.record().name == name).unwrap();
    let expected = before + ids.len() as f64 * sim.config().credits_per_job;
    eventually("not all charged", || async { (entry.credits_used() >= expected).then_some(()) }).await;
    assert_eq!(entry.credits_used(), expected);
    assert_eq!(entry.credits_reserved(), 0.0, "every reservation settled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_parallel_creates_stay_within_the_budget() {
    let sim = frozen_sim().await; // 120,000 credits a job
    // No catalogue to read prices from: the configured estimate is used.
    sim.inject(Route::Models, Fault::Status(404), 1_000);
    let (_dir, db) = temp_db();
    let proxy = start_proxy_configured(&sim, &db, |c| {
        c.costs.estimates.insert("google/veo3-1-fast-extend-video".into(), 150_000.0);
    })
    .await;
    let budget = 2_000_000.0;
    let key = proxy.key("xia", KeyLimits { credit_budget: Some(budget), ..KeyLimits::default() }).await;

    // 13 reservations of 150,000 fit in 2,000,000; a 14th would not.
    let ids = parallel_creates(&proxy, &key, 100).await;
    assert_eq!(ids.len(), 13);
    assert_eq!(sim.stats().jobs_created, 13, "the refused ones never reached the upstream");

    // Settled at the real 120,000 each, which is now the learned estimate:
    // 440,000 left, room for three more.
    finish_all(&proxy, &sim, "xia", &ids, 0.0).await;
    let more = parallel_creates(&proxy, &key, 10).await;
    assert_eq!(more.len(), 3);
    finish_all(&proxy, &sim, "xia", &more, 13.0 * 120_000.0).await;
    let spent = proxy.state.store().keys().await.unwrap()[0].credits_used;
    assert!(spent <= budget, "{spent} over {budget}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_models_cost_is_learned_from_its_finished_jobs() {
    let sim = frozen_sim().await;
    sim.inject(Route::Models, Fault::Status(404), 1_000);
    let (_dir, db) = temp_db();
    let proxy = start_proxy_configured(&sim, &db, |c| c.costs.default_estimate = 1_000_000.0).await;
    let key = proxy.key("yan", KeyLimits { credit_budget: Some(2_000_000.0), ..KeyLimits::default() }).await;
    // Nothing known: each create reserves the cautious default.
    let first = parallel_creates(&proxy, &key, 20).await;
    assert_eq!(first.len(), 2);
    finish_all(&proxy, &sim, "yan", &first, 0.0).await;
    // Learned: 120,000 a job, so 1,760,000 left covers 14 more.
    let second = parallel_creates(&proxy, &key, 20).await;
    assert_eq!(second.len(), 14);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_models_price_in_the_catalogue_is_what_a_create_reserves() {
    let sim = frozen_sim().await; // priced at 120,000 credits ($0.06) a job, as it charges
    let (_dir, db) = temp_db();
    // The price beats a configured guess and the cautious default.
    let proxy = start_proxy_configured(&sim, &db, |c| {
        c.costs.estimates.insert("google/veo3-1-fast-extend-video".into(), 900_000.0);
    })
    .await;
    let key = proxy.key("zoe", KeyLimits { credit_budget: Some(2_000_000.0), ..KeyLimits::default() }).await;
    // 16 reservations of 120,000 fit in 2,000,000; a 17th would not.
    let ids = parallel_creates(&proxy, &key, 40).await;
    assert_eq!(ids.len(), 16);
    finish_all(&proxy, &sim, "zoe", &ids, 0.0).await;
    let metrics = proxy.state.render_metrics();
    assert!(metrics.contains("aimlvid_upstream_calls_total{kind=\"models\",outcome=\"ok\"} 1"), "{metrics}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_upstream_does_not_know_is_marked_for_an_admin_not_polled_every_few_seconds() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await; // polls every 5 ms
    let key = proxy.key("zed", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("lost upstream")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();
    sim.inject(Route::Poll, Fault::Status(404), 1_000);

    let admin = format!("{}/admin/jobs/unknown", proxy.url);
    let listed = eventually("never marked", || async {
        let listed: serde_json::Value =
            proxy.http.get(&admin).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
        listed.as_array().is_some_and(|l| !l.is_empty()).then_some(listed)
    })
    .await;
    assert_eq!(listed[0]["generation_id"], id.as_str());
    assert!(listed[0]["note"].as_str().unwrap().contains("not found"), "{listed}");
    // Asked again only hourly: 200 ms of a 5 ms schedule bring no more polls.
    let polls = sim.stats().poll_requests;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sim.stats().poll_requests, polls, "not polled again every few ms");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upstream_key_trips_the_breaker_for_creates_polls_and_readiness() {
    // The simulator knows another key than the one the proxy holds.
    let config =
        aimlvid_sim::SimConfig { api_keys: vec!["the-real-key".into()], ..aimlvid_sim::SimConfig::fast() };
    let sim = aimlvid_sim::Simulator::start(config).await.unwrap();
    let (_dir, db) = temp_db();
    let proxy = start_proxy_configured(&sim, &db, |c| c.breaker_window = Duration::from_millis(300)).await;
    let key = proxy.key("amy", KeyLimits::default()).await;
    let ready = format!("{}/readyz", proxy.url);
    assert_eq!(proxy.http.get(&ready).send().await.unwrap().status(), 200);

    let first = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("a")).await;
    assert_eq!(first.status, 503, "{first:?}");
    assert!(first.body["message"].as_str().unwrap().contains("operator must replace it"), "{first:?}");
    assert!(first.retry_after.is_some());
    assert_eq!(proxy.http.get(&ready).send().await.unwrap().status(), 503);
    // While open, creates never reach the upstream.
    for _ in 0..5 {
        let refused = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("b")).await;
        assert_eq!(refused.status, 503);
    }
    assert_eq!(sim.stats().create_requests, 1);
    // After the window, one create probes again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let probe = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("c")).await;
    assert_eq!(probe.status, 503);
    assert_eq!(sim.stats().create_requests, 2);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_have_a_read_only_token_of_their_own() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let metrics_token = "m".repeat(40);
    let token = metrics_token.clone();
    let proxy = start_proxy_configured(&sim, &db, move |c| c.metrics_token = Some(token.into())).await;
    let url = format!("{}/metrics", proxy.url);
    let status = |token: Option<&str>| {
        let mut request = proxy.http.get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(Some(&metrics_token)).await, 200);
    assert_eq!(status(Some(ADMIN_TOKEN)).await, 200, "the admin token still reads them");
    assert_eq!(status(None).await, 401);
    assert_eq!(status(Some("guess")).await, 401);
    // It opens nothing else.
    let keys =
        proxy.http.get(format!("{}/admin/keys", proxy.url)).bearer_auth(&metrics_token).send().await.unwrap();
    assert_eq!(keys.status(), 401);
    proxy.stop().await;
}

#[tokio::test]
async fn the_database_is_created_readable_by_its_owner_only() {
    let (_dir, db) = temp_db();
    let store = aimlvid_server::store::SqliteStore::open(&db).await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&db).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_only_when_plain_and_billing_trouble_stays_with_the_operator() {
    let config = aimlvid_sim::SimConfig { credit_balance: Some(0.0), ..aimlvid_sim::SimConfig::fast() };
    let sim = aimlvid_sim::Simulator::start(config).await.unwrap();
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("bea", KeyLimits::default()).await;
    let id_of =
        |response: &reqwest::Response| response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let plain = proxy
        .http
        .get(format!("{}/healthz", proxy.url))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&plain), "trace-42");
    let odd = proxy
        .http
        .get(format!("{}/healthz", proxy.url))
        .header("x-request-id", "<b>hi</b>")
        .send()
        .await
        .unwrap();
    assert_ne!(id_of(&odd), "<b>hi</b>");
    assert_eq!(id_of(&odd).len(), 36, "replaced by one of ours");

    // The upstream's 403 names the team's balance: the member is not told it.
    let refused = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("broke")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    let message = refused.body["message"].as_str().unwrap();
    assert!(message.contains("operator") && !message.contains("balance"), "{message}");
    proxy.stop().await;
}

/// A proxy whose front has these limits.
async fn proxy_with_front(
    sim: &aimlvid_sim::RunningSim,
    db: &std::path::Path,
    front: aimlvid_server::front::FrontLimits,
) -> Proxy {
    start_proxy_configured(sim, db, move |c| c.front = front).await
}

/// Reads until the server closes the connection or sends a status line;
/// the status line, or `None` if it closed without one. Fails after 5 s.
async fn answer_or_close(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
            if answer.windows(2).any(|w| w == b"\r\n") {
                return;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed the connection");
    (!answer.is_empty())
        .then(|| String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_connection_is_closed_by_the_header_timeout() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let front = aimlvid_server::front::FrontLimits {
        header_read_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let proxy = proxy_with_front(&sim, &db, front).await;
    let address = proxy.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    // Never finished: the server gives up on it.
    let answer = answer_or_close(&mut stream).await;
    assert!(answer.as_deref().is_none_or(|line| line.contains(" 408 ")), "{answer:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_body_that_stops_arriving_is_refused() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let front = aimlvid_server::front::FrontLimits {
        body_idle_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let proxy = proxy_with_front(&sim, &db, front).await;
    let key = proxy.key("cal", KeyLimits::default()).await;
    let address = proxy.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v2/video/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"model\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = answer_or_close(&mut stream).await;
    assert!(answer.as_deref().is_some_and(|line| line.contains(" 408 ")), "{answer:?}");
    assert_eq!(sim.stats().create_requests, 0);
    proxy.stop().await;
}

/// A body that keeps trickling, slower than the least rate allowed, is
/// refused once it falls behind that rate, however large a length it
/// declared (which would otherwise buy it a deadline of an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_body_that_trickles_below_the_least_rate_is_refused_as_it_falls_behind() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let front = aimlvid_server::front::FrontLimits {
        body_idle_timeout: Duration::from_millis(200),
        min_body_rate: 16 * 1024,
        ..Default::default()
    };
    let proxy = proxy_with_front(&sim, &db, front).await;
    let key = proxy.key("tess", KeyLimits::default()).await;
    let address = proxy.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    // 60 MB declared: at the least rate that alone would allow an hour.
    let head = format!(
        "POST /v2/video/generations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: 60000000\r\n\r\n{{\"model\":\""
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    // About 2 KB a second, each pause well within the idle timeout.
    let (mut reader, mut writer) = stream.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if writer.write_all(&[b'x'; 100]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(4), async {
        let mut buffer = [0u8; 256];
        while let Ok(n) = reader.read(&mut buffer).await {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buffer[..n]);
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "after {:?}: {answer:?}", started.elapsed());
    assert_eq!(sim.stats().create_requests, 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let front = aimlvid_server::front::FrontLimits { max_connections: 2, ..Default::default() };
    let proxy = proxy_with_front(&sim, &db, front).await;
    let address = proxy.url.trim_start_matches("http://").to_owned();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut second = tokio::net::TcpStream::connect(&address).await.unwrap();
    for stream in [&mut first, &mut second] {
        stream.write_all(request).await.unwrap();
        assert!(answer_or_close(stream).await.unwrap().contains(" 200 "));
    }
    // Both kept alive: a third waits in the backlog, unanswered...
    let mut third = tokio::net::TcpStream::connect(&address).await.unwrap();
    third.write_all(request).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(early.is_err(), "answered over the cap");
    // ...until one closes.
    drop(first);
    assert!(answer_or_close(&mut third).await.unwrap().contains(" 200 "));
    drop(second);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_upstream_rate_limit_is_answered_not_waited_out_in_the_members_request() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("dan", KeyLimits { max_unfinished: Some(1), ..KeyLimits::default() }).await;
    sim.inject(Route::Create, Fault::RateLimited { retry_after_secs: 3600 }, 1);
    let started = tokio::time::Instant::now();
    let limited = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("later")).await;
    assert_eq!(limited.status, 429, "{limited:?}");
    assert_eq!(limited.retry_after.as_deref(), Some("3600"));
    assert!(started.elapsed() < Duration::from_secs(5));
    // Its slot was given back.
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("now")).await;
    assert_eq!(created.status, 200, "{created:?}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_flood_of_creates_does_not_hold_up_anothers() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let greedy = proxy.key("greedy", KeyLimits { max_unfinished: None, ..KeyLimits::default() }).await;
    let modest = proxy.key("modest", KeyLimits::default()).await;
    // Every create takes the upstream half a second.
    sim.inject(Route::Create, Fault::Latency(Duration::from_millis(500)), 41);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut flood = Vec::new();
    for i in 0..40 {
        let (http, endpoint, key, done) =
            (proxy.http.clone(), proxy.endpoint(), greedy.clone(), done.clone());
        flood.push(tokio::spawn(async move {
            let answer = post(&http, &endpoint, Some(&key), &create_body(&format!("flood {i}"))).await;
            assert_eq!(answer.status, 200, "{answer:?}");
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
    }
    // The flood is in; now one create of another key.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answer = post(&proxy.http, &proxy.endpoint(), Some(&modest), &create_body("mine")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let before = done.load(std::sync::atomic::Ordering::SeqCst);
    // The greedy key had 8 places: its creates go 8 at a time, the other key's between them.
    assert!(before <= 16, "{before} of the flood's 40 creates went first");
    for task in flood {
        task.await.unwrap();
    }
    assert_eq!(sim.stats().jobs_created, 41);
    proxy.stop().await;
}
