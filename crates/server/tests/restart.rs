//! PostgreSQL itself restarted under a running server. A test binary of
//! its own, because cargo runs test binaries one after another: no other
//! case is using the database while it restarts. Needs
//! `AIMLVID_TEST_POSTGRES` and `AIMLVID_TEST_POSTGRES_RESTART` (a command
//! that restarts that database, such as `pg_ctlcluster 15 main restart`;
//! `.ci/run` sets both); without them it says so and passes.

// This test uses a few of the helpers, and runs no case on both backends.
#[allow(dead_code, unused_macros, unused_imports)]
#[path = "it/support.rs"]
mod support;

use aimlvid_server::store::{KeyLimits, PostgresSettings, PostgresStore};
use secrecy::SecretString;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_mid_run_delays_statuses_and_loses_none() {
    let Ok(restart) = std::env::var("AIMLVID_TEST_POSTGRES_RESTART") else {
        eprintln!(
            "skipped: AIMLVID_TEST_POSTGRES_RESTART is not set (a command that restarts the test database)"
        );
        return;
    };
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await;
    let settings = PostgresSettings {
        max_connections: 4,
        ..PostgresSettings::new(SecretString::from(database.url.as_str()))
    };
    let proxy =
        start_proxy_on(&sim, PostgresStore::open(&settings).await.unwrap(), quick_polls(), |_| {}).await;
    let key = proxy.key("calm", KeyLimits { max_unfinished: None, ..KeyLimits::default() }).await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let created =
            post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body(&format!("job {n}"))).await;
        assert_eq!(created.status, 200, "{created:?}");
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    // Half end just before the restart, half during it.
    for id in &ids[..10] {
        assert!(sim.complete_now(id));
    }
    let restarting = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh").args(["-c", &restart]).status().expect("the restart command runs")
    });
    for id in &ids[10..] {
        assert!(sim.complete_now(id));
    }
    assert!(restarting.await.unwrap().success(), "the restart command failed");

    let ready = || async { proxy.http.get(format!("{}/readyz", proxy.url)).send().await.unwrap().status() };
    eventually("/readyz never recovered", || async { (ready().await == 200).then_some(()) }).await;
    for id in &ids {
        eventually("a status was lost in the restart", || async {
            let read = get(&proxy.http, &proxy.endpoint(), Some(&key), Some(id)).await;
            (read.body["status"] == "completed").then_some(())
        })
        .await;
    }
    let used = eventually("not all charged", || async {
        let keys = proxy.state.store().keys().await.ok()?;
        let used = keys.iter().find(|k| k.name == "calm")?.credits_used;
        (used >= 20.0 * sim.config().credits_per_job).then_some(used)
    })
    .await;
    assert_eq!(used, 20.0 * sim.config().credits_per_job, "each job charged once");
    proxy.stop().await;
    database.drop().await;
}
