//! How far behind the polling replica a read on another replica is: two
//! servers on one PostgreSQL, jobs created on one and read (so held in
//! memory) on the other, all finished upstream at once; for each job, the
//! time from the polling replica showing it completed to the other one
//! showing it too. Needs a database: `AIMLVID_TEST_POSTGRES=postgres://…`
//! (`bash .ci/run` makes one); `cargo xtask bench replicas` runs it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aimlvid::{PollPolicy, RetryPolicy, Status};
use aimlvid_server::store::{KeyLimits, PostgresSettings, PostgresStore};
use aimlvid_server::{AppState, StateConfig};
use aimlvid_sim::{SimConfig, Simulator, Spread};
use secrecy::{ExposeSecret as _, SecretString};

const JOBS: usize = 500;

#[tokio::main]
async fn main() {
    let Ok(base) = std::env::var("AIMLVID_TEST_POSTGRES") else {
        eprintln!(
            "replicas: AIMLVID_TEST_POSTGRES is not set; give it a postgres:// URL (bash .ci/run makes one)"
        );
        return;
    };
    let admin = sqlx::PgPool::connect(&base).await.expect("the database answers");
    let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}"))).execute(&admin).await.unwrap();
    let sim = Simulator::start(SimConfig {
        // Frozen: jobs end when the bench says.
        time_scale: 1.0,
        queue_time: Spread::Fixed(Duration::from_secs(3600)),
        generation_time: Spread::Fixed(Duration::from_secs(3600)),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let settings = PostgresSettings {
            schema: Some(schema.clone()),
            ..PostgresSettings::new(SecretString::from(base.clone()))
        };
        let store = PostgresStore::open(&settings).await.unwrap();
        let upstream = aimlvid::Client::builder()
            .api_key(aimlvid_sim::DEFAULT_API_KEY)
            .base_url(sim.base_url())
            .poll_policy(PollPolicy::fixed(Duration::from_millis(100)))
            .retry_policy(RetryPolicy::default());
        let config = StateConfig::from_builder(upstream).unwrap();
        replicas.push(AppState::start(Arc::new(store), config).await.unwrap());
    }
    let (polling, other) = (&replicas[0], &replicas[1]);
    let issued = aimlvid_server::admin::issue_key(
        polling.store(),
        "bench",
        KeyLimits { max_unfinished: None, ..KeyLimits::default() },
        None,
        aimlvid_server::webhooks::TargetRules::default(),
    )
    .await
    .unwrap();
    polling.reload_keys().await.unwrap();
    let key = issued.key.expose_secret().to_owned();

    // Jobs created through the polling replica's HTTP API, then read on the other.
    let serve = |state: AppState| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v2/video/generations", listener.local_addr().unwrap());
        tokio::spawn(aimlvid_server::serve(listener, state, std::future::pending()));
        url
    };
    let (on_polling, on_other) = (serve(polling.clone()).await, serve(other.clone()).await);
    other.reload_keys().await.unwrap();
    let http = reqwest::Client::new();
    let body = serde_json::json!({
        "model": "google/veo3-1-fast-extend-video",
        "prompt": "bench",
        "video_url": "https://example.com/clip.mp4",
    });
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        let created: serde_json::Value =
            http.post(&on_polling).bearer_auth(&key).json(&body).send().await.unwrap().json().await.unwrap();
        ids.push(created["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let read =
            http.get(&on_other).query(&[("generation_id", id)]).bearer_auth(&key).send().await.unwrap();
        assert!(read.status().is_success());
        assert!(other.views().get(id).is_some(), "held in the other replica's memory");
    }

    // All end upstream at once; watch both memories.
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    let completed =
        |state: &AppState, id: &str| state.views().get(id).is_some_and(|v| v.status == Status::Completed);
    let mut seen_polling: Vec<Option<Instant>> = vec![None; JOBS];
    let mut seen_other: Vec<Option<Instant>> = vec![None; JOBS];
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen_other.iter().any(Option::is_none) && Instant::now() < deadline {
        let now = Instant::now();
        for (i, id) in ids.iter().enumerate() {
            if seen_polling[i].is_none() && completed(polling, id) {
                seen_polling[i] = Some(now);
            }
            if seen_other[i].is_none() && completed(other, id) {
                seen_other[i] = Some(now);
            }
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let mut behind: Vec<Duration> = seen_polling
        .iter()
        .zip(&seen_other)
        .filter_map(|(p, o)| Some(o.as_ref()?.saturating_duration_since(*p.as_ref()?)))
        .collect();
    behind.sort();
    let missing = JOBS - behind.len();
    let at = |q: f64| behind[((q * behind.len() as f64).ceil() as usize).clamp(1, behind.len()) - 1];
    println!(
        "replicas: {JOBS} jobs; a read on the other replica is behind the polling one by \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (goal: under 1 s); {missing} never arrived",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        behind.last().unwrap().as_secs_f64() * 1000.0,
    );
    for state in &replicas {
        state.stop().await;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE"))).execute(&admin).await.unwrap();
}
