//! Several servers on one PostgreSQL, in one process: limits counted
//! across them, keys, webhooks and event streams shared, and the database
//! cut away mid-run. (The process tests kill a replica for real.) Each case
//! needs `AIMLVID_TEST_POSTGRES`; without it, it says so and passes.

use aimlvid_server::store::{KeyLimits, PostgresSettings, PostgresStore};
use secrecy::SecretString;

use crate::support::*;

/// Three servers sharing the database `url`.
async fn three_replicas(sim: &aimlvid_sim::RunningSim, url: &str) -> Vec<Proxy> {
    three_replicas_configured(sim, url, |_| {}).await
}

/// [`three_replicas`], each configured by `tweak`.
async fn three_replicas_configured(
    sim: &aimlvid_sim::RunningSim,
    url: &str,
    tweak: impl Fn(&mut aimlvid_server::StateConfig),
) -> Vec<Proxy> {
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let settings =
            PostgresSettings { max_connections: 4, ..PostgresSettings::new(SecretString::from(url)) };
        let store = PostgresStore::open(&settings).await.unwrap();
        replicas.push(start_proxy_on(sim, store, quick_polls(), &tweak).await);
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_made_or_revoked_on_one_replica_takes_effect_on_all_within_a_second() {
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await;
    // The default refresh, not the tests' quicker one.
    let replicas = three_replicas_configured(&sim, &database.url, |c| {
        c.key_refresh = aimlvid_server::state::DEFAULT_KEY_REFRESH;
    })
    .await;
    let admin = |method: reqwest::Method, path: &str| {
        replicas[0].http.request(method, format!("{}{path}", replicas[0].url)).bearer_auth(ADMIN_TOKEN)
    };
    // A replica answers 404 (an unknown job) to a key it knows, 401 to one it does not.
    let within_a_second = |want: u16, key: String| {
        let replicas = &replicas;
        async move {
            let started = std::time::Instant::now();
            for replica in &replicas[1..] {
                let endpoint = replica.endpoint();
                while get(&replica.http, &endpoint, Some(&key), Some("no-such-job")).await.status != want {
                    assert!(
                        started.elapsed() < std::time::Duration::from_secs(1),
                        "{} still disagrees",
                        replica.url
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
    };

    let created = admin(reqwest::Method::POST, "/admin/keys")
        .json(&serde_json::json!({"name": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let key = created.json::<serde_json::Value>().await.unwrap()["key"].as_str().unwrap().to_owned();
    within_a_second(404, key.clone()).await;
    let revoked = admin(reqwest::Method::DELETE, "/admin/keys/new").send().await.unwrap();
    assert!(revoked.status().is_success(), "{revoked:?}");
    within_a_second(401, key).await;
    for replica in replicas {
        replica.stop().await;
    }
    database.drop().await;
}

/// `n` creates at once, spread over the replicas; how many were accepted.
async fn creates_everywhere(replicas: &[Proxy], key: &str, n: usize) -> usize {
    let bodies: Vec<_> = (0..n).map(|i| create_body(&format!("p{i}"))).collect();
    let endpoints: Vec<String> = replicas.iter().map(Proxy::endpoint).collect();
    let answers = futures_util::future::join_all(bodies.iter().enumerate().map(|(i, body)| {
        let replica = i % replicas.len();
        post(&replicas[replica].http, &endpoints[replica], Some(key), body)
    }))
    .await;
    let mut accepted = 0;
    for answer in answers {
        match answer.status {
            200 => accepted += 1,
            429 | 403 => {}
            _ => panic!("unexpected {answer:?}"),
        }
    }
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_budgets_hold_across_three_replicas() {
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await; // jobs never end by themselves; 120,000 credits each
    let replicas = three_replicas(&sim, &database.url).await;
    let limits =
        KeyLimits { max_unfinished: Some(5), credit_budget: Some(1_000_000.0), ..KeyLimits::default() };
    let key = replicas[0].key("shared", limits).await;
    for replica in &replicas {
        replica.state.reload_keys().await.unwrap();
    }

    // Five places for the key, whichever replicas the creates reach.
    assert_eq!(creates_everywhere(&replicas, &key, 60).await, 5);
    assert_eq!(sim.stats().jobs_created, 5, "the refused ones never reached the upstream");

    // No place limit now: the budget holds the rest. Five jobs hold
    // 600,000; three more of 120,000 fit in 1,000,000, a fourth would not.
    let lifted = replicas[1]
        .http
        .patch(format!("{}/admin/keys/shared", replicas[1].url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"max_unfinished": null}))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 200);
    for replica in &replicas {
        replica.state.reload_keys().await.unwrap();
    }
    assert_eq!(creates_everywhere(&replicas, &key, 60).await, 3);
    assert_eq!(sim.stats().jobs_created, 8);
    for replica in replicas {
        replica.stop().await;
    }
    database.drop().await;
}

/// A TCP hop between the server and PostgreSQL that a test can cut, as a
/// database restart or a network partition would: every open connection
/// dropped, and new ones refused until it is restored.
struct Cuttable {
    address: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    links: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Cuttable {
    async fn to(target: std::net::SocketAddr) -> Cuttable {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let links = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (accepting, tracked) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    continue; // dropped: refused
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tracked.lock().unwrap().push(link.abort_handle());
            }
        });
        Cuttable { address, up, links }
    }

    fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_delays_statuses_and_loses_none() {
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await;
    let mut url = url::Url::parse(&database.url).unwrap();
    let target = tokio::net::lookup_host((url.host_str().unwrap(), url.port().unwrap_or(5432)))
        .await
        .unwrap()
        .next()
        .unwrap();
    let hop = Cuttable::to(target).await;
    url.set_ip_host(hop.address.ip()).unwrap();
    url.set_port(Some(hop.address.port())).unwrap();
    let settings =
        PostgresSettings { max_connections: 4, ..PostgresSettings::new(SecretString::from(url.as_str())) };
    let proxy =
        start_proxy_on(&sim, PostgresStore::open(&settings).await.unwrap(), quick_polls(), |_| {}).await;
    let key = proxy.key("steady", KeyLimits { max_unfinished: None, ..KeyLimits::default() }).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let created =
            post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body(&format!("job {n}"))).await;
        assert_eq!(created.status, 200, "{created:?}");
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    let ready = || async { proxy.http.get(format!("{}/readyz", proxy.url)).send().await.unwrap().status() };
    assert_eq!(ready().await, 200);

    // The database goes away; the jobs end upstream meanwhile.
    hop.cut();
    eventually("/readyz never failed", || async { (ready().await == 503).then_some(()) }).await;
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    // Seen upstream, not stored, so not shown: members still read them running.
    tokio::task::yield_now().await;
    let read = get(&proxy.http, &proxy.endpoint(), Some(&key), Some(&ids[0])).await;
    assert_eq!(read.body["status"], "queued", "{read:?}");

    // Back: /readyz recovers by itself, and every status is stored, shown and charged once.
    hop.restore();
    eventually("/readyz never recovered", || async { (ready().await == 200).then_some(()) }).await;
    for id in &ids {
        eventually("a status was lost in the outage", || async {
            let read = get(&proxy.http, &proxy.endpoint(), Some(&key), Some(id)).await;
            (read.body["status"] == "completed").then_some(())
        })
        .await;
    }
    let charged = eventually("not all charged", || async {
        let keys = proxy.state.store().keys().await.ok()?;
        let used = keys.iter().find(|k| k.name == "steady")?.credits_used;
        (used >= 10.0 * sim.config().credits_per_job).then_some(used)
    })
    .await;
    assert_eq!(charged, 10.0 * sim.config().credits_per_job, "each job charged once");
    proxy.stop().await;
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_beside_others_counts_only_the_jobs_it_follows() {
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await;
    let mut replicas = three_replicas(&sim, &database.url).await;
    let limits = KeyLimits { max_unfinished: Some(5), ..KeyLimits::default() };
    let key = replicas[0].key("busy", limits).await;
    for replica in &replicas {
        replica.state.reload_keys().await.unwrap();
    }
    let mut ids = Vec::new();
    for n in 0..5 {
        let created =
            post(&replicas[0].http, &replicas[0].endpoint(), Some(&key), &create_body(&format!("{n}"))).await;
        assert_eq!(created.status, 200, "{created:?}");
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    // A fourth replica starts while the first follows the key's five jobs.
    let settings = PostgresSettings {
        max_connections: 4,
        ..PostgresSettings::new(SecretString::from(database.url.as_str()))
    };
    let late =
        start_proxy_on(&sim, PostgresStore::open(&settings).await.unwrap(), quick_polls(), |_| {}).await;
    assert_eq!(late.state.keys().entries().iter().map(|e| e.unfinished()).sum::<u32>(), 0);
    // They end where they are followed; the key's places are free on every replica.
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    eventually("the jobs never ended", || async {
        let keys = late.state.store().keys().await.ok()?;
        (keys[0].credits_used >= 5.0 * sim.config().credits_per_job).then_some(())
    })
    .await;
    let created = post(&late.http, &late.endpoint(), Some(&key), &create_body("after")).await;
    assert_eq!(created.status, 200, "{created:?}");
    replicas.push(late);
    for replica in replicas {
        replica.stop().await;
    }
    database.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_is_delivered_once_by_one_of_the_replicas() {
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await;
    let replicas = three_replicas(&sim, &database.url).await;
    let (hook, deliveries) = delivery_counter().await;
    let (key, _) = replicas[0].key_with_webhook("hooked", &hook).await;
    for replica in &replicas {
        replica.state.reload_keys().await.unwrap();
    }
    let mut ids = Vec::new();
    for n in 0..90 {
        let replica = &replicas[n % 3];
        let created =
            post(&replica.http, &replica.endpoint(), Some(&key), &create_body(&format!("{n}"))).await;
        assert_eq!(created.status, 200, "{created:?}");
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    eventually("not every job was announced", || async {
        (deliveries.lock().unwrap().len() == ids.len()).then_some(())
    })
    .await;
    // Every replica's worker looked for due deliveries meanwhile; none was sent twice.
    let attempts: Vec<u32> = replicas.iter().map(|r| attempts_total(&r.state.render_metrics())).collect();
    assert!(deliveries.lock().unwrap().values().all(|&n| n == 1), "a delivery was made twice");
    assert_eq!(attempts.iter().sum::<u32>(), 90, "attempts per replica: {attempts:?}");
    for replica in replicas {
        replica.stop().await;
    }
    database.drop().await;
}

/// Webhook attempts a server made, from its metrics.
fn attempts_total(metrics: &str) -> u32 {
    metrics
        .lines()
        .filter(|line| line.starts_with("aimlvid_webhook_attempts_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u32>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_on_one_replica_streams_its_changes_on_another() {
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await;
    let replicas = three_replicas(&sim, &database.url).await;
    let key = replicas[0].key("watcher", KeyLimits::default()).await;
    replicas[1].state.reload_keys().await.unwrap();
    let created = post(&replicas[0].http, &replicas[0].endpoint(), Some(&key), &create_body("watched")).await;
    let id = created.body["id"].as_str().unwrap().to_owned();

    // The stream is on a replica that does not poll the job.
    let mut events = crate::events::Events::open(&replicas[1], &key, &id).await.unwrap();
    assert_eq!(events.next().await.unwrap()["status"], "queued");
    assert!(sim.complete_now(&id));
    assert_eq!(events.next().await.unwrap()["status"], "completed");
    assert!(events.next().await.is_none(), "the stream ends with the job");
    for replica in replicas {
        replica.stop().await;
    }
    database.drop().await;
}
