//! Storage that fails under a running server, and creates whose answers
//! are lost: the server recovers by itself, says so on `/readyz`, and
//! counts every create that may be billed against its key until it is
//! resolved. The PostgreSQL cases need `AIMLVID_TEST_POSTGRES`, the SQLite
//! fault case needs root (`chattr`); without them they say so and pass.

use std::path::Path;
use std::time::Duration;

use aimlvid_server::store::{KeyLimits, PostgresSettings, PostgresStore};
use aimlvid_sim::{Fault, Route};
use secrecy::SecretString;

use crate::support::*;

/// A proxy on `storage` that looks unknown creates up every `recover` (and
/// gives a create absent from the logs up after `window`).
async fn proxy_on(
    sim: &aimlvid_sim::RunningSim,
    storage: &Storage,
    recover: Duration,
    window: Duration,
) -> Proxy {
    start_proxy_dyn(sim, storage.open().await, quick_polls(), |c| {
        c.recover_interval = recover;
        c.unknown_window = window;
    })
    .await
}

const HOUR: Duration = Duration::from_secs(3600);

on_both_backends!(
    lost_answers_keep_counting_against_their_key,
    an_unlogged_create_gives_its_place_back_after_the_window,
);

/// Creates `n` jobs with `key`, each answered 200; their ids.
async fn create_jobs(proxy: &Proxy, key: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let created =
            post(&proxy.http, &proxy.endpoint(), Some(key), &create_body(&format!("job {i}"))).await;
        assert_eq!(created.status, 200, "{created:?}");
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// Six creates per key whose answers are lost (the upstream accepted each,
/// and may bill it) are counted like running jobs: a key allowed two
/// unfinished jobs sends two and is refused the rest, a key whose budget
/// covers two sends two, across a restart too; once the upstream's logs
/// resolve them, they are followed and charged once, and the key has room
/// again.
async fn lost_answers_keep_counting_against_their_key(storage: Storage) {
    let sim = frozen_sim().await;
    let lost_answer = || Fault::AfterAccept(Box::new(Fault::DropConnection));
    let statuses = |proxy: &Proxy, key: String, n: usize| {
        let (http, endpoint) = (proxy.http.clone(), proxy.endpoint());
        async move {
            let mut statuses = Vec::new();
            for i in 0..n {
                let body = create_body(&format!("lost {i}"));
                statuses.push(post(&http, &endpoint, Some(&key), &body).await.status);
            }
            statuses
        }
    };

    // Recovery off for now: the answers stay lost.
    let first = proxy_on(&sim, &storage, HOUR, HOUR).await;
    let expected = first.state.costs().estimate("google/veo3-1-fast-extend-video", &create_body("x"));
    let capped = first.key("capped", KeyLimits { max_unfinished: Some(2), ..KeyLimits::default() }).await;
    let budget =
        KeyLimits { max_unfinished: None, credit_budget: Some(2.0 * expected), ..KeyLimits::default() };
    let budgeted = first.key("budgeted", budget).await;
    sim.inject(Route::Create, lost_answer(), 12);
    assert_eq!(statuses(&first, capped.clone(), 6).await, [502, 502, 429, 429, 429, 429]);
    assert_eq!(statuses(&first, budgeted.clone(), 6).await, [502, 502, 403, 403, 403, 403]);
    assert_eq!(sim.stats().create_requests, 4, "only the creates the keys had room for went upstream");
    first.stop().await;

    // After a restart they still count, and the admin listing says so.
    let second = proxy_on(&sim, &storage, HOUR, HOUR).await;
    assert_eq!(statuses(&second, capped.clone(), 1).await, [429]);
    let listed: serde_json::Value = second
        .http
        .get(format!("{}/admin/keys", second.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let unfinished: Vec<_> = listed.as_array().unwrap().iter().map(|k| k["unfinished"].clone()).collect();
    assert_eq!(unfinished, [serde_json::json!(2), serde_json::json!(2)], "{listed}");
    assert_eq!(statuses(&second, budgeted.clone(), 1).await, [403]);
    assert_eq!(sim.stats().create_requests, 4);
    second.stop().await;

    // Recovery finds them in the upstream's logs; they run, and are charged once.
    sim.clear_faults();
    let third = proxy_on(&sim, &storage, Duration::from_millis(20), HOUR).await;
    let ids = eventually("the lost creates were never found", || async {
        let store = third.state.store();
        let unfinished = store.unfinished_jobs().await.ok()?;
        (store.jobs_needing_attention().await.ok()?.is_empty() && unfinished.len() == 4)
            .then(|| unfinished.into_iter().filter_map(|j| j.generation_id).collect::<Vec<_>>())
    })
    .await;
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    let per_job = sim.config().credits_per_job;
    let spent = eventually("not all charged", || async {
        let keys = third.state.store().keys().await.ok()?;
        let spent: Vec<f64> = keys.iter().map(|k| k.credits_used).collect();
        (spent.iter().sum::<f64>() >= 4.0 * per_job).then_some(spent)
    })
    .await;
    assert_eq!(spent, [2.0 * per_job, 2.0 * per_job], "each key charged for its two jobs, once");
    // Their places are free again.
    eventually("the key never had room again", || async {
        let created = post(&third.http, &third.endpoint(), Some(&capped), &create_body("again")).await;
        (created.status == 200).then_some(())
    })
    .await;
    third.stop().await;
    storage.finish().await;
}

/// A create that never reached the upstream (its connection dropped before
/// an answer, and no log row for it) holds its key's place only for the
/// lookup window, then gives it back once; it is still looked up.
async fn an_unlogged_create_gives_its_place_back_after_the_window(storage: Storage) {
    let sim = frozen_sim().await;
    let proxy = proxy_on(&sim, &storage, Duration::from_millis(20), Duration::ZERO).await;
    let key = proxy.key("one", KeyLimits { max_unfinished: Some(1), ..KeyLimits::default() }).await;
    sim.inject(Route::Create, Fault::DropConnection, 1);
    let lost = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("never arrived")).await;
    assert_eq!(lost.status, 502, "{lost:?}");
    assert_eq!(sim.stats().jobs_created, 0);
    // Given back once: one create fits, and one only.
    eventually("the place was never given back", || async {
        let unknown = proxy.state.store().jobs_needing_attention().await.ok()?;
        (unknown.len() == 1).then_some(())?;
        let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("fits")).await;
        (created.status == 200).then_some(())
    })
    .await;
    let over = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("over")).await;
    assert_eq!(over.status, 429, "{over:?}");
    // Still looked up, for an operator to see.
    assert_eq!(proxy.state.store().jobs_needing_attention().await.unwrap().len(), 1);
    proxy.stop().await;
    storage.finish().await;
}

/// Makes `paths` immutable (`chattr +i`), or writable again; false where
/// that cannot be done (not root, or a filesystem without the flag).
fn set_immutable(paths: &[&Path], on: bool) -> bool {
    paths.iter().all(|path| {
        std::process::Command::new("chattr")
            .arg(if on { "+i" } else { "-i" })
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// `/readyz`'s status.
async fn ready(proxy: &Proxy) -> u16 {
    proxy.http.get(format!("{}/readyz", proxy.url)).send().await.unwrap().status().as_u16()
}

/// The SQLite file and its log turn read-only under a running server while
/// jobs end upstream, as a full or remounted disk would: `/readyz` says so,
/// creates are refused with 503 within the create timeout and never reach
/// the upstream; once the files are writable again, the server recovers by
/// itself: every status is stored and each job charged once, and creates
/// work again, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_storage_that_refuses_writes_recovers_without_a_restart() {
    let sim = frozen_sim().await;
    let (dir, db) = temp_db();
    let proxy =
        start_proxy_configured(&sim, &db, |c| c.create_record_timeout = Duration::from_millis(500)).await;
    let key = proxy.key("steady", KeyLimits { max_unfinished: None, ..KeyLimits::default() }).await;
    let ids = create_jobs(&proxy, &key, 10).await;
    assert_eq!(ready(&proxy).await, 200);
    let wal = dir.path().join("server.db-wal");
    let files = [db.as_path(), wal.as_path()];
    if !set_immutable(&files, true) {
        set_immutable(&files, false);
        eprintln!("skipped: making the database read-only needs root and chattr (CI runs as root)");
        return;
    }
    let failures_before = metric(&proxy, "aimlvid_storage_write_failures_total");

    // The jobs end upstream; storing that fails, and /readyz says why.
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    let not_ready = eventually("/readyz never failed", || async {
        let answer = proxy.http.get(format!("{}/readyz", proxy.url)).send().await.unwrap();
        (answer.status() == 503).then_some(())?;
        Some(answer.text().await.unwrap())
    })
    .await;
    assert!(not_ready.contains("refuses writes"), "{not_ready}");
    // Creates cannot be recorded: each is refused within the create timeout
    // of its arrival, even 40 at once (a key has 8 places in line), and none
    // is ever sent, not even once storage is back.
    let sent_before = sim.stats().create_requests;
    let mut creates = tokio::task::JoinSet::new();
    for n in 0..40 {
        let (http, endpoint, key) = (proxy.http.clone(), proxy.endpoint(), key.clone());
        creates.spawn(async move {
            let started = std::time::Instant::now();
            let answer = post(&http, &endpoint, Some(&key), &create_body(&format!("during {n}"))).await;
            (answer.status, started.elapsed())
        });
    }
    let answers = creates.join_all().await;
    let restored = set_immutable(&files, false);
    assert!(restored, "could not make the database writable again");
    let slowest = answers.iter().map(|(_, took)| *took).max().unwrap();
    assert!(answers.iter().all(|(status, _)| *status == 503), "{answers:?}");
    assert!(slowest < Duration::from_millis(1400), "the slowest refusal took {slowest:?}");
    assert_eq!(sim.stats().create_requests, sent_before, "nothing sent upstream");
    assert!(metric(&proxy, "aimlvid_storage_write_failures_total") > failures_before);

    // Writable again: no restart, the server catches up by itself.
    eventually("/readyz never recovered", || async { (ready(&proxy).await == 200).then_some(()) }).await;
    let per_job = sim.config().credits_per_job;
    let charged = eventually("not all charged", || async {
        let used = proxy.state.store().keys().await.ok()?[0].credits_used;
        (used >= 10.0 * per_job).then_some(used)
    })
    .await;
    assert_eq!(charged, 10.0 * per_job, "each job charged once");
    for id in &ids {
        let read = get(&proxy.http, &proxy.endpoint(), Some(&key), Some(id)).await;
        assert_eq!(read.body["status"], "completed", "{read:?}");
    }
    let after = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("after")).await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(sim.stats().create_requests, sent_before + 1, "no refused create was sent later");
    proxy.stop().await;
}

/// PostgreSQL's backends are killed in the middle of the server's
/// transactions (each one waiting on a lock the test holds), again and
/// again while jobs end upstream: `/readyz` fails meanwhile, a create
/// waiting for its row is refused with 503 and never sent, and once the
/// database lets go, every status is stored and each job charged once,
/// without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backends_killed_mid_transaction_recover_without_a_restart() {
    let Some(database) = TestPostgres::create().await else { return };
    let sim = frozen_sim().await;
    let settings = PostgresSettings {
        max_connections: 4,
        ..PostgresSettings::new(SecretString::from(database.url.as_str()))
    };
    let store = PostgresStore::open(&settings).await.unwrap();
    let proxy = start_proxy_on(&sim, store, quick_polls(), |c| {
        c.create_record_timeout = Duration::from_millis(500);
    })
    .await;
    let key = proxy.key("steady", KeyLimits { max_unfinished: None, ..KeyLimits::default() }).await;
    let ids = create_jobs(&proxy, &key, 10).await;

    // Every write to the jobs now waits on the test's lock, inside its transaction.
    let lock = database.lock_jobs().await;
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    let sent_before = sim.stats().create_requests;
    let refused = tokio::spawn({
        let (http, endpoint, key) = (proxy.http.clone(), proxy.endpoint(), key.clone());
        async move { post(&http, &endpoint, Some(&key), &create_body("during")).await }
    });
    // Killed mid-transaction until /readyz says storage fails.
    let killed = std::sync::atomic::AtomicUsize::new(0);
    eventually("/readyz never failed", || async {
        killed.fetch_add(lock.kill_waiting().await, std::sync::atomic::Ordering::Relaxed);
        (killed.load(std::sync::atomic::Ordering::Relaxed) > 0 && ready(&proxy).await == 503).then_some(())
    })
    .await;
    let refused = refused.await.unwrap();
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(sim.stats().create_requests, sent_before, "nothing sent upstream");
    lock.release().await;

    eventually("/readyz never recovered", || async { (ready(&proxy).await == 200).then_some(()) }).await;
    let per_job = sim.config().credits_per_job;
    let charged = eventually("not all charged", || async {
        let used = proxy.state.store().keys().await.ok()?[0].credits_used;
        (used >= 10.0 * per_job).then_some(used)
    })
    .await;
    assert_eq!(charged, 10.0 * per_job, "each job charged once");
    let after = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("after")).await;
    assert_eq!(after.status, 200, "{after:?}");
    // The create given up was never kept: only the ten and this one are stored.
    let unfinished = proxy.state.store().unfinished_jobs().await.unwrap();
    assert_eq!(unfinished.len(), 1);
    assert!(proxy.state.store().jobs_needing_attention().await.unwrap().is_empty());
    proxy.stop().await;
    database.drop().await;
}

/// A server whose storage refuses writes still stops when told to, within
/// its grace and the writer's own last grace, rather than waiting for
/// storage for ever; what it could not store is found again at the next
/// start (the create's row was stored before it was sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stops_when_told_to_while_storage_refuses_writes() {
    let sim = frozen_sim().await;
    let (dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("steady", KeyLimits { max_unfinished: None, ..KeyLimits::default() }).await;
    let ids = create_jobs(&proxy, &key, 5).await;
    let wal = dir.path().join("server.db-wal");
    let files = [db.as_path(), wal.as_path()];
    if !set_immutable(&files, true) {
        set_immutable(&files, false);
        eprintln!("skipped: making the database read-only needs root and chattr (CI runs as root)");
        return;
    }
    for id in &ids {
        assert!(sim.complete_now(id));
    }
    eventually("/readyz never failed", || async { (ready(&proxy).await == 503).then_some(()) }).await;
    let started = std::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(40), proxy.stop()).await;
    let took = started.elapsed();
    assert!(set_immutable(&files, false));
    assert!(stopped.is_ok(), "the server did not stop within 40 s while storage failed");
    eprintln!("stopped in {took:?} with storage refusing writes");

    // Storage back, a new start follows the jobs and stores their ends.
    let proxy = start_proxy(&sim, &db).await;
    let per_job = sim.config().credits_per_job;
    let charged = eventually("the jobs were not found again", || async {
        let used = proxy.state.store().keys().await.ok()?[0].credits_used;
        (used >= 5.0 * per_job).then_some(used)
    })
    .await;
    assert_eq!(charged, 5.0 * per_job);
    proxy.stop().await;
}
