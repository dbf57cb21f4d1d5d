//! The job engine under load and trouble: bursts of jobs finishing
//! together, storage that is locked for a while, learned poll schedules,
//! and keys changed by another process while the server runs.

use std::time::Duration;

use aimlvid::{PollPolicy, Status};
use aimlvid_server::StateConfig;
use aimlvid_server::engine::timing::PollSettings;
use aimlvid_server::store::{KeyLimits, SqliteStore};
use aimlvid_sim::{SimConfig, Simulator, Spread};
use futures_util::StreamExt as _;
use sqlx::Connection as _;

use crate::support::*;

/// Polls fast and freely: the simulator's time is frozen, so only the
/// engine's own limits shape the run.
fn eager(config: &mut StateConfig) {
    config.poll = PollSettings {
        first_delay: Duration::from_millis(100),
        interval: Duration::from_millis(100),
        max_interval: Duration::from_millis(200),
        min_interval: Duration::from_millis(100),
        growth: 1.0,
        jitter: 0.0,
        learn: false,
        family_priors: false,
        concurrency: 64,
        max_rate: 50_000.0,
        ..PollSettings::default()
    };
}

/// Creates `n` jobs through the proxy, `parallel` at a time; their ids.
async fn create_many(proxy: &Proxy, key: &str, n: usize, parallel: usize) -> Vec<String> {
    let endpoint = proxy.endpoint();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (http, endpoint, key) = (proxy.http.clone(), endpoint.clone(), key.to_owned());
            async move {
                let answer = post(&http, &endpoint, Some(&key), &create_body(&format!("job {i}"))).await;
                assert_eq!(answer.status, 200, "{answer:?}");
                answer.body["id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// Waits until every job reads as completed from the proxy's memory (or
/// has left it: only finished jobs are ever evicted).
async fn all_completed(proxy: &Proxy, ids: &[String], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = ids
            .iter()
            .filter(|id| proxy.state.views().get(id).is_some_and(|view| view.status != Status::Completed))
            .count();
        if left == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left} of {} jobs never read completed", ids.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every job is completed in storage, and its key was charged once for each.
async fn all_stored_and_charged_once(proxy: &Proxy, ids: &[String], credits_per_job: f64) {
    for id in ids {
        let stored = proxy.state.store().job_by_generation(id).await.unwrap().expect("stored");
        assert_eq!(stored.status, "completed", "{id}");
        assert_eq!(stored.credits_charged, Some(credits_per_job), "{id}");
    }
    let keys = proxy.state.store().keys().await.unwrap();
    let charged: f64 = keys.iter().map(|k| k.credits_used).sum();
    assert_eq!(charged, credits_per_job * ids.len() as f64, "charged once per job");
    let counted: f64 = proxy.state.keys().entries().iter().map(|k| k.credits_used()).sum();
    assert_eq!(counted, charged, "memory agrees with storage");
    assert!(proxy.state.keys().entries().iter().all(|k| k.unfinished() == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_jobs_finishing_together_is_stored_read_and_charged_once() {
    // Tens of thousands by default; AIMLVID_BURST_JOBS=100000 for the full figure.
    let n: usize = std::env::var("AIMLVID_BURST_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy_tweaked(&sim, &db, PollPolicy::default(), eager).await;
    let key = proxy.key("burst", KeyLimits::default()).await;
    let ids = create_many(&proxy, &key, n, 64).await;
    assert_eq!(sim.stats().jobs_created, n as u64, "one upstream create per job");

    // The upstream finishes every job at once.
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    all_completed(&proxy, &ids, Duration::from_secs(600)).await;
    all_stored_and_charged_once(&proxy, &ids, sim.config().credits_per_job).await;
    // Members read them completed, from memory or (beyond `recent_jobs`) from storage.
    for id in ids.iter().step_by(n / 100) {
        let answer = get(&proxy.http, &proxy.endpoint(), Some(&key), Some(id)).await;
        assert_eq!(answer.body["status"], "completed", "{answer:?}");
    }
    assert_eq!(proxy.state.metrics().unfinished_jobs(), 0, "nothing left to poll");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_locked_for_a_while_delays_statuses_and_loses_none() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    // Writes give up on the lock after 20 ms (and are retried), so the test is quick.
    let store = SqliteStore::open_with_lock_wait(&db, Duration::from_millis(20)).await.unwrap();
    let proxy = start_proxy_on(&sim, store, PollPolicy::default(), eager).await;
    let key = proxy.key("locked", KeyLimits::default()).await;
    let ids = create_many(&proxy, &key, 200, 16).await;

    // Another process holds SQLite's write lock.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await.unwrap();
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while proxy.state.metrics().storage_write_failures() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "the writer never met the lock");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Seen upstream, not stored: so not shown either.
    for id in &ids {
        let view = proxy.state.views().get(id).unwrap();
        assert_eq!(view.status, Status::Queued, "a status was shown before it was stored");
        let answer = get(&proxy.http, &proxy.endpoint(), Some(&key), Some(id)).await;
        assert_eq!(answer.body["status"], "queued");
    }

    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    other.close().await.unwrap();
    all_completed(&proxy, &ids, Duration::from_secs(120)).await;
    all_stored_and_charged_once(&proxy, &ids, sim.config().credits_per_job).await;
    proxy.stop().await;
}

/// Runs `jobs` jobs of one model one after another through a proxy with
/// default poll settings, in front of a simulator whose jobs take
/// `duration`; both run `scale` times faster than real time. Returns each
/// job's polls and lag (from finishing to being noticed), in the
/// simulator's time, and the `openai-poll-after-ms` its first read as an
/// OpenAI video answered (in real milliseconds).
async fn sequential_jobs(duration: Duration, jobs: usize, scale: f64) -> Vec<(u64, Duration, u64)> {
    let sim = Simulator::start(SimConfig {
        time_scale: scale,
        queue_time: Spread::Fixed(Duration::from_secs(1)),
        generation_time: Spread::Fixed(duration - Duration::from_secs(1)),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (_dir, db) = temp_db();
    let proxy = start_proxy_tweaked(&sim, &db, PollPolicy::default(), |config| {
        let defaults = PollSettings::default();
        config.poll = PollSettings {
            first_delay: defaults.first_delay.div_f64(scale),
            interval: defaults.interval.div_f64(scale),
            max_interval: defaults.max_interval.div_f64(scale),
            min_interval: defaults.min_interval.div_f64(scale),
            // The schedule is set (scaled), as an operator would set one.
            family_priors: false,
            ..defaults
        };
    })
    .await;
    let key = proxy.key("timing", KeyLimits::default()).await;
    let mut seen = Vec::new();
    for i in 0..jobs {
        let created =
            post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body(&format!("job {i}"))).await;
        let id = created.body["id"].as_str().unwrap().to_owned();
        let read =
            proxy.http.get(format!("{}/v1/videos/{id}", proxy.url)).bearer_auth(&key).send().await.unwrap();
        let poll_after =
            read.headers().get("openai-poll-after-ms").map(|v| v.to_str().unwrap().parse().unwrap());
        while !proxy.state.views().get(&id).is_some_and(|v| v.status == Status::Completed) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let job = sim.sim().job(&id).unwrap();
        let poll_after = poll_after.unwrap_or_else(|| panic!("job {i} was read unfinished, with a pace"));
        seen.push((job.polls, job.first_finished_answer_at.unwrap() - job.finishes_at, poll_after));
    }
    proxy.stop().await;
    seen
}

#[tokio::test]
async fn a_quick_model_is_learned_and_noticed_within_seconds() {
    let seen = sequential_jobs(Duration::from_secs(10), 10, 20.0).await;
    eprintln!("10 s model, (polls, lag) per job: {seen:?}");
    let (first_polls, first_lag, first_pace) = seen[0];
    assert_eq!(first_polls, 1, "the library's default: one poll, at 85 s: {seen:?}");
    assert!(first_lag > Duration::from_secs(60), "{seen:?}");
    // An OpenAI client is asked back a second after the proxy's own first
    // poll: 85 s / 20 (+ 1 s, less a second if one turned between the
    // create and the read) before learning; under a second after.
    assert!((5000..=6000).contains(&first_pace), "{seen:?}");
    for (polls, lag, pace) in &seen[8..] {
        assert!(*lag <= Duration::from_millis(3500), "learned, so noticed soon: {seen:?}");
        // A fixed loop at the learned schedule's finest step (1 s) would make 10.
        assert!(*polls < 10, "{seen:?}");
        assert!(*pace <= 2000, "the learned schedule sets the pace: {seen:?}");
    }
}

#[tokio::test]
async fn a_slow_model_is_learned_and_polled_fewer_times_than_the_default() {
    let seen = sequential_jobs(Duration::from_secs(300), 6, 200.0).await;
    eprintln!("300 s model, (polls, lag) per job: {seen:?}");
    let (default_polls, ..) = seen[0];
    assert!(default_polls >= 20, "the library's default polls a 5-minute job often: {seen:?}");
    for (polls, lag, _) in &seen[4..] {
        assert!(*polls * 2 <= default_polls, "at most half the default's polls: {seen:?}");
        assert!(*lag <= Duration::from_secs(10), "and noticed as soon: {seen:?}");
    }
}

#[tokio::test]
async fn a_key_made_or_revoked_by_the_keys_command_takes_effect_within_a_second() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy_tweaked(&sim, &db, PollPolicy::default(), |config| {
        config.key_refresh = aimlvid_server::state::DEFAULT_KEY_REFRESH;
    })
    .await;
    let key = keys_command(&db, &["create", "late"]).await;
    let took = until_status(&proxy, &key, 404).await;
    assert!(took < Duration::from_secs(1), "a new key worked after {took:?}");

    keys_command(&db, &["revoke", "late"]).await;
    let took = until_status(&proxy, &key, 401).await;
    assert!(took < Duration::from_secs(1), "a revoked key still worked after {took:?}");
    proxy.stop().await;
}

/// Runs `aimlvid-server keys ARGS… --database DB`, as an admin would while
/// the server runs; its standard output. The wait is off the test's
/// runtime, which also runs the server: blocking it could leave one of the
/// server's transactions holding the database's write lock until the
/// command gave up on it.
async fn keys_command(db: &std::path::Path, args: &[&str]) -> String {
    let (db, args): (std::path::PathBuf, Vec<String>) =
        (db.to_owned(), args.iter().map(|a| (*a).to_owned()).collect());
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_aimlvid-server"))
            .arg("keys")
            .args(&args)
            .arg("--database")
            .arg(&db)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn reads_of_an_unknown_id_reach_storage_once() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("curious", KeyLimits::default()).await;
    let storage_reads = || metric(&proxy, "aimlvid_job_storage_reads_total");
    for _ in 0..200 {
        let answer = get(&proxy.http, &proxy.endpoint(), Some(&key), Some("made-up-id")).await;
        assert_eq!(answer.status, 404);
    }
    assert_eq!(storage_reads(), 1.0, "the first miss is remembered");
    let other = get(&proxy.http, &proxy.endpoint(), Some(&key), Some("another-made-up-id")).await;
    assert_eq!(other.status, 404);
    assert_eq!(storage_reads(), 2.0);
    proxy.stop().await;
}

/// How long until a read of an unknown job with `key` is answered `status`
/// (404 once the key is known, 401 once it is not).
async fn until_status(proxy: &Proxy, key: &str, status: u16) -> Duration {
    let started = std::time::Instant::now();
    loop {
        let answer = get(&proxy.http, &proxy.endpoint(), Some(key), Some("no-such-job")).await;
        if answer.status == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still {answer:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_keys_backlog_does_not_delay_anothers_polls() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    // Polls are scarce: 5 a second, one at a time, each job first polled a
    // second after its create. (Slow enough that even a creating phase of
    // 20 s on a loaded machine leaves most of the backlog unpolled.)
    let proxy = start_proxy_tweaked(&sim, &db, PollPolicy::default(), |config| {
        eager(config);
        config.poll.first_delay = Duration::from_secs(1);
        config.poll.concurrency = 1;
        config.poll.max_rate = 5.0;
    })
    .await;
    let busy = proxy.key("busy", KeyLimits::default()).await;
    let quiet = proxy.key("quiet", KeyLimits::default()).await;
    let backlog = create_many(&proxy, &busy, 200, 16).await;
    let mine = create_many(&proxy, &quiet, 1, 1).await;
    for id in backlog.iter().chain(&mine) {
        assert!(sim.complete_now(id));
    }

    // The quiet key's job is due last, but waits one turn, not 200 polls (40 s at this pace).
    all_completed(&proxy, &mine, Duration::from_secs(30)).await;
    let polled_before = backlog
        .iter()
        .filter(|id| proxy.state.views().get(id).is_some_and(|view| view.status == Status::Completed))
        .count();
    assert!(polled_before <= 100, "{polled_before} of the busy key's 200 polls went first");
    proxy.stop().await;
}
