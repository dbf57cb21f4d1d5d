//! Webhooks: signed announcements of finished jobs, retried with backoff,
//! every attempt recorded, pending ones resumed after a restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aimlvid_server::store::{SqliteStore, WebhookAttempt, WebhookFormat, WebhookStore as _};
use aimlvid_server::webhooks::{ATTEMPT_HEADER, DELIVERY_HEADER, SIGNATURE_HEADER, verify};
use aimlvid_sim::{SimConfig, Simulator, Spread};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use hmac::{KeyInit as _, Mac as _};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::support::*;

const PATIENCE: Duration = Duration::from_secs(10);

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    /// Never answer: the request stays in flight.
    Hold,
}

/// A request the receiver got.
#[derive(Debug)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap()
    }
}

/// A webhook receiver on loopback that reports each request on a channel
/// and answers from a script (200 once the script runs out).
struct Receiver {
    url: String,
    requests: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn start(script: &[Reply]) -> Receiver {
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let (tx, requests) = mpsc::unbounded_channel();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let (script, tx) = (script.clone(), tx.clone());
                async move {
                    let _ = tx.send(Received { at: Instant::now(), headers, body });
                    let reply = script.lock().unwrap().pop_front().unwrap_or(Reply::Status(200));
                    match reply {
                        Reply::Status(code) => StatusCode::from_u16(code).unwrap(),
                        Reply::Hold => std::future::pending().await,
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, requests }
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(PATIENCE, self.requests.recv()).await.expect("no webhook in time").unwrap()
    }
}

/// Checks the signature as a receiver in any language would: HMAC-SHA256,
/// keyed with the secret, of `"<t>.<body>"`, in hex.
fn assert_signed(received: &Received, secret: &str) {
    let header = received.header(SIGNATURE_HEADER);
    let (t, v1) = header.split_once(',').unwrap();
    let t: i64 = t.strip_prefix("t=").unwrap().parse().unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&received.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(v1, expected, "the signature is HMAC-SHA256 of \"<t>.<body>\"");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - t).abs() <= 5, "the timestamp is the time of sending");
    assert!(verify(secret, header, &received.body, now, Duration::from_secs(300)));
}

/// The job's attempts once `done` holds for them.
async fn attempts_when(
    proxy: &Proxy,
    id: &str,
    done: impl Fn(&[WebhookAttempt]) -> bool,
) -> Vec<WebhookAttempt> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let attempts = proxy.state.store().webhook_attempts(id).await.unwrap();
        if done(&attempts) {
            return attempts;
        }
        assert!(Instant::now() < deadline, "attempts never settled: {attempts:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_finished_job_is_announced_to_its_keys_webhook_signed_with_its_secret() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let mut receiver = Receiver::start(&[]).await;

    // The admin API sets the webhook and shows its secret once.
    let created = proxy
        .http
        .post(format!("{}/admin/keys", proxy.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "hooked", "webhook_url": receiver.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let (key, secret) = (created["key"].as_str().unwrap(), created["webhook_secret"].as_str().unwrap());
    assert!(secret.starts_with("whsec_") && secret.len() == 70, "{secret}");
    let listed =
        proxy.http.get(format!("{}/admin/keys", proxy.url)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let listed = listed.text().await.unwrap();
    assert!(
        listed.contains(&receiver.url) && !listed.contains(secret),
        "the secret is never listed: {listed}"
    );

    let job = post(&proxy.http, &proxy.endpoint(), Some(key), &create_body("announce me")).await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    assert!(sim.complete_now(&id));
    let received = receiver.next().await;

    assert_signed(&received, secret);
    assert_eq!(received.header("content-type"), "application/json");
    assert_eq!(received.header(ATTEMPT_HEADER), "1");
    let announced: Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(announced, get(&proxy.http, &proxy.endpoint(), Some(key), Some(&id)).await.body);
    assert_eq!(announced["status"], "completed");

    let attempts = attempts_when(&proxy, &id, |a| a.iter().all(|a| a.state != "pending")).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!((attempts[0].state.as_str(), attempts[0].response_status), ("delivered", Some(200)));
    assert_eq!(attempts[0].delivery_id, received.header(DELIVERY_HEADER));
    assert_eq!(attempts[0].event, "completed");

    // A new URL gets a new secret, shown in that answer only; a bad one is refused; null removes it.
    let patch = |body: Value| {
        proxy
            .http
            .patch(format!("{}/admin/keys/hooked", proxy.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };
    let moved: Value =
        patch(json!({"webhook_url": "https://example.com/new"})).await.unwrap().json().await.unwrap();
    let new_secret = moved["webhook_secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert_eq!(moved["webhook_url"], "https://example.com/new");
    assert_eq!(patch(json!({"webhook_url": "not a url"})).await.unwrap().status(), 400);
    let removed: Value = patch(json!({"webhook_url": null})).await.unwrap().json().await.unwrap();
    assert_eq!(removed["webhook_url"], Value::Null);
    assert!(removed.get("webhook_secret").is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn a_failed_delivery_is_retried_with_growing_waits_until_it_succeeds() {
    // Every job fails, about 100 ms after it is created: the error is announced too.
    let config = SimConfig {
        time_scale: 1000.0,
        queue_time: Spread::Fixed(Duration::from_secs(2)),
        generation_time: Spread::Fixed(Duration::from_secs(100)),
        failure_rate: 1.0,
        ..SimConfig::default()
    };
    let sim = Simulator::start(config).await.unwrap();
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let mut receiver = Receiver::start(&[Reply::Status(500), Reply::Status(503)]).await;
    let (key, secret) = proxy.key_with_webhook("retried", &receiver.url).await;

    let job = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("doomed")).await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    let received = [receiver.next().await, receiver.next().await, receiver.next().await];

    for (n, r) in received.iter().enumerate() {
        assert_signed(r, &secret);
        assert_eq!(r.header(ATTEMPT_HEADER), (n + 1).to_string());
        assert_eq!(
            r.header(DELIVERY_HEADER),
            received[0].header(DELIVERY_HEADER),
            "one delivery, three attempts"
        );
        assert_eq!(serde_json::from_slice::<Value>(&r.body).unwrap()["status"], "error");
    }
    // The test configuration waits 20 ms after the first failure, then 40 ms.
    assert!(received[1].at - received[0].at >= Duration::from_millis(20));
    assert!(received[2].at - received[1].at >= Duration::from_millis(40));

    let attempts = attempts_when(&proxy, &id, |a| a.last().is_some_and(|a| a.state == "delivered")).await;
    let outcomes: Vec<_> =
        attempts.iter().map(|a| (a.attempt, a.state.as_str(), a.response_status)).collect();
    assert_eq!(outcomes, [(1, "failed", Some(500)), (2, "failed", Some(503)), (3, "delivered", Some(200))]);
    assert_eq!(attempts[0].error.as_deref(), Some("answered 500 Internal Server Error"));
    assert!(attempts.iter().all(|a| a.url.as_deref() == Some(receiver.url.as_str()) && a.event == "error"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_delivery_gives_up_after_its_last_attempt() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let mut receiver = Receiver::start(&[Reply::Status(500); 10]).await;
    let (key, _) = proxy.key_with_webhook("unlucky", &receiver.url).await;
    let job = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("unheard")).await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    assert!(sim.complete_now(&id));
    for _ in 0..4 {
        receiver.next().await;
    }
    // The test configuration allows four attempts; after the fourth nothing is left to do.
    let attempts =
        attempts_when(&proxy, &id, |a| a.len() == 4 && a.iter().all(|a| a.state == "failed")).await;
    assert_eq!(attempts.last().unwrap().attempt, 4);
    assert_eq!(proxy.state.store().next_webhook_due(&[]).await.unwrap(), None);
    assert!(proxy.state.render_metrics().contains("aimlvid_webhooks_given_up_total 1"));
    proxy.stop().await;
}

#[tokio::test]
async fn a_delivery_cut_short_by_a_restart_is_made_after_it() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let mut receiver = Receiver::start(&[Reply::Hold]).await;
    let (key, secret) = proxy.key_with_webhook("patient", &receiver.url).await;
    let job = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("interrupted")).await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    assert!(sim.complete_now(&id));

    // The first attempt is in flight when the server stops.
    let cut = receiver.next().await;
    tokio::time::timeout(PATIENCE, proxy.stop()).await.expect("a delivery in flight held up shutdown");
    let stopped = SqliteStore::open(&db).await.unwrap();
    let pending = stopped.webhook_attempts(&id).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].state, "pending", "an attempt cut short is not recorded as made");
    stopped.close().await;

    let proxy = start_proxy(&sim, &db).await;
    let resumed = receiver.next().await;
    assert_signed(&resumed, &secret);
    assert_eq!(resumed.header(DELIVERY_HEADER), cut.header(DELIVERY_HEADER), "the same delivery, resumed");
    assert_eq!(resumed.body, cut.body);
    let attempts = attempts_when(&proxy, &id, |a| a.iter().all(|a| a.state == "delivered")).await;
    assert_eq!(attempts.len(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn webhooks_to_private_addresses_or_plain_http_are_refused_unless_allowed() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    // The defaults: https only, public addresses only.
    let proxy = start_proxy_configured(&sim, &db, |c| {
        c.webhooks.allow_private_targets = false;
        c.webhooks.allow_plain_http = false;
    })
    .await;
    let mut receiver = Receiver::start(&[]).await;
    let port = receiver.url.trim_start_matches("http://127.0.0.1:").split('/').next().unwrap().to_owned();
    for (name, url, says) in [
        ("plain", receiver.url.clone(), "https only"),
        ("literal", format!("https://127.0.0.1:{port}/hook"), "not a public address"),
        ("metadata", "https://169.254.169.254/latest/meta-data".to_owned(), "not a public address"),
        ("named", format!("https://localhost:{port}/hook"), "localhost is not a public address"),
    ] {
        let (key, _) = proxy.key_with_webhook(name, &url).await;
        let job = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body(name)).await;
        let id = job.body["id"].as_str().unwrap().to_owned();
        assert!(sim.complete_now(&id));
        let attempts = attempts_when(&proxy, &id, |a| a.iter().any(|a| a.state != "pending")).await;
        let error = attempts[0].error.clone().unwrap_or_default();
        assert_eq!(attempts[0].state, "failed", "{name}: {attempts:?}");
        assert!(error.contains(says), "{name}: {error}");
    }
    // Not one request reached the receiver on loopback.
    assert!(receiver.requests.try_recv().is_err());
    proxy.stop().await;
}

#[tokio::test]
async fn a_disabled_keys_webhook_stops_at_once() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let mut receiver = Receiver::start(&[]).await;
    let (key, _) = proxy.key_with_webhook("paused", &receiver.url).await;
    let job = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("quiet")).await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    let disabled = proxy
        .http
        .patch(format!("{}/admin/keys/paused", proxy.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    assert!(sim.complete_now(&id));
    let attempts = attempts_when(&proxy, &id, |a| a.iter().any(|a| a.state != "pending")).await;
    assert_eq!(attempts[0].state, "cancelled", "{attempts:?}");
    assert!(receiver.requests.try_recv().is_err(), "nothing was sent");
    proxy.stop().await;
}

/// Creates a job on `key` and finishes it at once; returns its id.
async fn finished_job(proxy: &Proxy, sim: &Simulator, key: &str, prompt: &str) -> String {
    let job = post(&proxy.http, &proxy.endpoint(), Some(key), &create_body(prompt)).await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    assert!(sim.complete_now(&id));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_hold_up_anothers() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    // Long enough that waiting out the stuck attempts would fail this test.
    let proxy = start_proxy_configured(&sim, &db, |c| c.webhooks.timeout = Duration::from_secs(120)).await;
    let mut stuck = Receiver::start(&[Reply::Hold; 40]).await;
    let mut quick = Receiver::start(&[]).await;
    let (stuck_key, _) = proxy.key_with_webhook("stuck", &stuck.url).await;
    let (quick_key, _) = proxy.key_with_webhook("quick", &quick.url).await;
    for n in 0..30 {
        finished_job(&proxy, &sim, &stuck_key, &format!("stuck {n}")).await;
    }
    let per_host = aimlvid_server::webhooks::WebhookConfig::default().per_host;
    for _ in 0..per_host {
        stuck.next().await;
    }

    let id = finished_job(&proxy, &sim, &quick_key, "quick").await;
    let received = quick.next().await;
    assert_eq!(serde_json::from_slice::<Value>(&received.body).unwrap()["id"], id.as_str());
    attempts_when(&proxy, &id, |a| a.iter().any(|a| a.state == "delivered")).await;
    // The stuck host never had more than its share in flight.
    assert!(stuck.requests.try_recv().is_err(), "more than {per_host} attempts at once to one host");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_rests_and_its_deliveries_wait_without_spending_attempts() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let rest = Duration::from_millis(1500);
    let proxy = start_proxy_configured(&sim, &db, |c| {
        c.webhooks.per_host = 1;
        c.webhooks.breaker_failures = 3;
        c.webhooks.breaker_rest = rest;
    })
    .await;
    // Three failures in a row, then it answers again.
    let mut receiver = Receiver::start(&[Reply::Status(503); 3]).await;
    let (key, _) = proxy.key_with_webhook("flaky", &receiver.url).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(finished_job(&proxy, &sim, &key, &format!("flaky {n}")).await);
    }
    let failed = [receiver.next().await, receiver.next().await, receiver.next().await];
    let probe = receiver.next().await;
    assert!(
        probe.at - failed[2].at >= rest,
        "the host rested {:?} after three failures, not {rest:?}",
        probe.at - failed[2].at
    );
    let mut made = Vec::new();
    for id in &ids {
        made.extend(attempts_when(&proxy, id, |a| a.last().is_some_and(|a| a.state == "delivered")).await);
    }
    let outcomes: Vec<_> = made
        .iter()
        .map(|a| (a.generation_id.as_str(), a.attempt, a.state.as_str(), a.response_status))
        .collect();
    assert_eq!(
        made.len(),
        ids.len() + 3,
        "one delivery each, and only the three failures before the rest: {outcomes:?}"
    );
    let metrics = proxy.state.render_metrics();
    assert!(metrics.contains("aimlvid_webhook_attempts_total{outcome=\"failed\"} 3"), "{metrics}");
    assert!(metrics.contains("aimlvid_webhook_hosts_resting 0"), "{metrics}");
    proxy.stop().await;
}

/// A webhook URL the server would never deliver to is refused when it is
/// saved, with the reason, by the admin API and the `keys` rules alike;
/// nothing is stored.
#[tokio::test]
async fn a_webhook_url_that_could_never_be_delivered_to_is_refused_when_saved() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy_configured(&sim, &db, |c| {
        c.webhooks.allow_private_targets = false;
        c.webhooks.allow_plain_http = false;
    })
    .await;
    let admin = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        proxy.http.request(method, format!("{}{path}", proxy.url)).bearer_auth(ADMIN_TOKEN).json(&body).send()
    };
    for (url, says) in [
        ("https://[::127.0.0.1]/hook", "not a public address"),
        ("https://[64:ff9b::7f00:1]/hook", "not a public address"),
        ("https://10.0.0.7/hook", "not a public address"),
        ("https://localhost:8080/hook", "not a public address"),
        ("https://user:secret@hooks.example.com/", "user name or password"),
        ("http://hooks.example.com/", "https only"),
    ] {
        let created =
            admin(reqwest::Method::POST, "/admin/keys", serde_json::json!({"name": "m", "webhook_url": url}))
                .await
                .unwrap();
        assert_eq!(created.status(), 400, "{url}");
        let message = created.text().await.unwrap();
        assert!(message.contains(says) && !message.contains("secret@"), "{url}: {message}");
    }
    assert!(proxy.state.store().keys().await.unwrap().is_empty(), "nothing stored");
    let made = admin(reqwest::Method::POST, "/admin/keys", serde_json::json!({"name": "m"})).await.unwrap();
    assert_eq!(made.status(), 201);
    let changed =
        admin(reqwest::Method::PATCH, "/admin/keys/m", serde_json::json!({"webhook_url": "https://[::1]/x"}))
            .await
            .unwrap();
    assert_eq!(changed.status(), 400);
    assert!(proxy.state.store().keys().await.unwrap()[0].webhook_url.is_none());
    let good = admin(
        reqwest::Method::PATCH,
        "/admin/keys/m",
        serde_json::json!({"webhook_url": "https://hooks.example.com/in"}),
    )
    .await
    .unwrap();
    assert_eq!(good.status(), 200);
    proxy.stop().await;
}

/// Checks an `openai`-format delivery as a Standard Webhooks receiver
/// would; returns the event.
fn assert_standard_signed(received: &Received, secret: &str) -> Value {
    use aimlvid_server::webhooks::standard;
    for aimlvid_header in [SIGNATURE_HEADER, DELIVERY_HEADER, ATTEMPT_HEADER] {
        assert!(received.headers.get(aimlvid_header).is_none(), "{aimlvid_header} is not sent");
    }
    assert_eq!(received.header("content-type"), "application/json");
    let (id, timestamp) = (received.header(standard::ID_HEADER), received.header(standard::TIMESTAMP_HEADER));
    let signature = received.header(standard::SIGNATURE_HEADER);
    assert!(id.starts_with("wh_") && signature.starts_with("v1,"), "{id} {signature}");
    // By hand, as the specification says: the key is the secret after
    // `whsec_`, base64-decoded; the signed text is "<id>.<timestamp>.<body>".
    use base64::Engine as _;
    let key =
        base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(signature, format!("v1,{expected}"));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let tolerance = Duration::from_secs(300);
    assert!(standard::verify(secret, id, timestamp, signature, &received.body, now, tolerance));
    assert!(!standard::verify(secret, "wh_other", timestamp, signature, &received.body, now, tolerance));
    serde_json::from_slice(&received.body).unwrap()
}

/// OpenAI's event shape, exactly: its five fields, `data` holding the id only.
fn assert_video_event(event: &Value, kind: &str, video_id: &str) {
    let fields: Vec<&str> = event.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(fields.len(), 5, "{event}");
    assert!(event["id"].as_str().unwrap().starts_with("evt_"), "{event}");
    assert_eq!((event["object"].as_str(), event["type"].as_str()), (Some("event"), Some(kind)), "{event}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - event["created_at"].as_i64().unwrap()).abs() <= 60, "unix seconds: {event}");
    assert_eq!(event["data"], json!({"id": video_id}));
}

#[tokio::test]
async fn an_openai_format_key_gets_openais_video_events_signed_per_standard_webhooks() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    // The first attempt fails: the retry must be the same delivery, byte for byte.
    let mut receiver = Receiver::start(&[Reply::Status(500)]).await;
    let create_key = |body: Value| {
        proxy.http.post(format!("{}/admin/keys", proxy.url)).bearer_auth(ADMIN_TOKEN).json(&body).send()
    };

    let refused = create_key(json!({"name": "sdk", "webhook_url": receiver.url, "webhook_format": "svix"}))
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let refused = refused.text().await.unwrap();
    assert!(refused.contains("aimlvid or openai"), "{refused}");

    let created = create_key(json!({"name": "sdk", "webhook_url": receiver.url, "webhook_format": "openai"}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_eq!(created["webhook_format"], "openai");
    let (key, secret) = (created["key"].as_str().unwrap(), created["webhook_secret"].as_str().unwrap());
    assert!(secret.starts_with("whsec_"), "{secret}");

    // A job made through the native API completes.
    let job = post(&proxy.http, &proxy.endpoint(), Some(key), &create_body("announce me")).await;
    let completed = job.body["id"].as_str().unwrap().to_owned();
    assert!(sim.complete_now(&completed));
    let (first, retried) = (receiver.next().await, receiver.next().await);
    let event = assert_standard_signed(&first, secret);
    assert_video_event(&event, "video.completed", &completed);
    assert_eq!(assert_standard_signed(&retried, secret), event);
    assert_eq!(retried.header("webhook-id"), first.header("webhook-id"), "one delivery, two attempts");
    assert_eq!(retried.body, first.body, "the same event, byte for byte");
    let attempts =
        attempts_when(&proxy, &completed, |a| a.last().is_some_and(|a| a.state == "delivered")).await;
    let outcomes: Vec<_> = attempts.iter().map(|a| (a.attempt, a.state.as_str())).collect();
    assert_eq!(outcomes, [(1, "failed"), (2, "delivered")]);
    assert_eq!(first.header("webhook-id"), format!("wh_{}", attempts[0].delivery_id));

    // A video made through OpenAI's API fails.
    let video = proxy
        .http
        .post(format!("{}/v1/videos", proxy.url))
        .bearer_auth(key)
        .json(&json!({"model": "google/veo-3.1-t2v-fast", "prompt": "doomed", "seconds": "4"}))
        .send()
        .await
        .unwrap();
    assert_eq!(video.status(), 200);
    let failed = video.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    assert!(sim.fail_now(&failed));
    let received = receiver.next().await;
    let event = assert_standard_signed(&received, secret);
    assert_video_event(&event, "video.failed", &failed);
    assert_ne!(received.header("webhook-id"), first.header("webhook-id"));

    // Back to the default format, with the same secret: today's body and signature.
    let patched = proxy
        .http
        .patch(format!("{}/admin/keys/sdk", proxy.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"webhook_format": "aimlvid"}))
        .send()
        .await
        .unwrap();
    let patched: Value = patched.json().await.unwrap();
    assert_eq!(patched["webhook_format"], "aimlvid");
    assert!(patched.get("webhook_secret").is_none(), "the secret stays");
    let job = post(&proxy.http, &proxy.endpoint(), Some(key), &create_body("plain")).await;
    let plain = job.body["id"].as_str().unwrap().to_owned();
    assert!(sim.complete_now(&plain));
    let received = receiver.next().await;
    assert_signed(&received, secret);
    let announced: Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(announced, get(&proxy.http, &proxy.endpoint(), Some(key), Some(&plain)).await.body);
    proxy.stop().await;
}

/// openai-python's `client.webhooks.unwrap` accepts a delivery as sent.
/// Runs where the openai SDK is installed (see [`openai_python`]).
#[tokio::test]
async fn openai_python_unwraps_a_delivery() {
    let Some(python) = openai_python().await else { return };
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let mut receiver = Receiver::start(&[]).await;
    let (key, secret) = proxy.key_with_webhook("python", &receiver.url).await;
    let update = aimlvid_server::store::KeyUpdate {
        webhook_format: Some(WebhookFormat::Openai),
        ..Default::default()
    };
    aimlvid_server::admin::update_key(proxy.state.store(), "python", &update, LOOPBACK_WEBHOOKS)
        .await
        .unwrap()
        .unwrap();
    let job = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("unwrap me")).await;
    let id = job.body["id"].as_str().unwrap().to_owned();
    assert!(sim.complete_now(&id));
    let received = receiver.next().await;

    let headers: serde_json::Map<String, Value> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|name| (name.to_owned(), received.header(name).into()))
        .collect();
    let script = r#"
import json, sys, openai
body, headers, secret = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
client = openai.OpenAI(api_key="x", webhook_secret=secret)
event = client.webhooks.unwrap(body, headers)
print(json.dumps({"type": event.type, "id": event.id, "video": event.data.id}))
try:
    client.webhooks.unwrap(body + " ", headers)
    print("tampered body accepted")
except openai.InvalidWebhookSignatureError:
    pass
"#;
    let body = String::from_utf8(received.body.to_vec()).unwrap();
    let out = std::process::Command::new(&python)
        .args(["-c", script, &body, &Value::Object(headers).to_string(), &secret])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let unwrapped: Value = serde_json::from_str(lines[0]).unwrap();
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(unwrapped, json!({"type": "video.completed", "id": event["id"], "video": id}));
    proxy.stop().await;
}
