//! Several servers on one PostgreSQL, in one process: limits counted
//! across them. (The process tests kill a replica for real.) Each case
//! needs `AIMLVID_TEST_POSTGRES`; without it, it says so and passes.

use aimlvid_server::store::{KeyLimits, PostgresSettings, PostgresStore};
use secrecy::SecretString;

use crate::support::*;

/// Three servers sharing the database `url`.
async fn three_replicas(sim: &aimlvid_sim::RunningSim, url: &str) -> Vec<Proxy> {
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let settings =
            PostgresSettings { max_connections: 4, ..PostgresSettings::new(SecretString::from(url)) };
        let store = PostgresStore::open(&settings).await.unwrap();
        replicas.push(start_proxy_on(sim, store, quick_polls(), |_| {}).await);
    }
    replicas
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
