//! Reconciliation with the upstream's ledger, on both backends: the
//! simulator plants a lost create, a charge made outside the proxy and a
//! charge of a different amount; the admin API and the `reconcile`
//! command each report every one exactly once, and the server adopts the
//! lost create.

use std::time::Duration;

use aimlvid_server::store::KeyLimits;
use aimlvid_sim::{Fault, Route};
use serde_json::Value;

use crate::support::*;

const MODEL: &str = "google/veo3-1-fast-extend-video";

on_both_backends!(reconcile_reports_each_planted_difference_once);

/// `(kind, generation id)` of each finding, in the report's order.
fn kinds(report: &Value) -> Vec<(String, String)> {
    report["reconciliation"]["findings"]
        .as_array()
        .unwrap_or_else(|| panic!("no findings in {report}"))
        .iter()
        .map(|f| (f["kind"].as_str().unwrap().to_owned(), f["generation_id"].as_str().unwrap().to_owned()))
        .collect()
}

/// `POST` (a reconciliation now, over a day) or `GET` (the last) of
/// `/admin/reconcile`: the status and the body.
async fn admin_reconcile(proxy: &Proxy, now: bool) -> (u16, Value) {
    let url = format!("{}/admin/reconcile", proxy.url);
    let request = if now { proxy.http.post(format!("{url}?since=1d")) } else { proxy.http.get(url) };
    let answer = request.bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(Value::Null))
}

async fn reconcile_now(proxy: &Proxy) -> Value {
    let (status, body) = admin_reconcile(proxy, true).await;
    assert_eq!(status, 200, "{body:#}");
    body
}

async fn credits_used(proxy: &Proxy) -> f64 {
    proxy.state.store().keys().await.unwrap().iter().map(|k| k.credits_used).sum()
}

async fn reconcile_reports_each_planted_difference_once(storage: Storage) {
    let sim = frozen_sim().await;
    let per_job = sim.config().credits_per_job;
    let store = storage.open().await;
    // Recovery off, so that only the reconciliation can find the lost create.
    let proxy = start_proxy_dyn(&sim, store, quick_polls(), |c| {
        c.recover_interval = Duration::from_secs(3600);
        c.unknown_window = Duration::from_secs(3600);
    })
    .await;
    let key = proxy.key("ana", KeyLimits::default()).await;
    let before =
        proxy.http.get(format!("{}/admin/reconcile", proxy.url)).bearer_auth(ADMIN_TOKEN).send().await;
    assert_eq!(before.unwrap().status(), 404, "no reconciliation before the first");

    // Two jobs run and are charged; the ledger bills the first three times over.
    let mut ids = Vec::new();
    for i in 0..2 {
        let created =
            post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body(&format!("job {i}"))).await;
        assert_eq!(created.status, 200, "{created:?}");
        let id = created.body["id"].as_str().unwrap().to_owned();
        assert!(sim.complete_now(&id));
        ids.push(id);
    }
    eventually("the jobs were never charged", || async {
        (credits_used(&proxy).await >= 2.0 * per_job).then_some(())
    })
    .await;
    assert!(sim.charge_differently(&ids[0], (3.0 * per_job) as u64));

    // A create the upstream accepted (and bills) whose answer was lost.
    sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);
    let lost = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("lost")).await;
    assert_eq!(lost.status, 502, "{lost:?}");
    let lost_id = sim
        .requests()
        .iter()
        .rev()
        .find(|r| r.route == Route::Create)
        .and_then(|r| r.generation_id.clone())
        .expect("the simulator made the lost create's job");
    assert!(sim.complete_now(&lost_id));
    // And a generation made with the upstream key around the proxy.
    let foreign = sim.add_foreign_charge(MODEL, 5000);

    let report = reconcile_now(&proxy).await;
    assert_eq!(
        kinds(&report),
        [
            ("lost_create".to_owned(), lost_id.clone()),
            ("charged_outside".to_owned(), foreign.clone()),
            ("charged_differently".to_owned(), ids[0].clone()),
        ],
        "{report:#}"
    );
    let findings = &report["reconciliation"]["findings"];
    assert_eq!(findings[0]["adopted"], true, "{report:#}");
    assert_eq!(findings[0]["key"], "ana");
    assert_eq!(findings[1]["ledger_credits"], 5000);
    assert_eq!(findings[1]["ledger_usd"], "0.0025");
    assert_eq!(findings[2]["proxy_credits"], per_job);
    assert_eq!(findings[2]["ledger_credits"], (3.0 * per_job) as i64);
    let total = &report["reconciliation"]["total"];
    assert_eq!(total["ledger_credits"], (5.0 * per_job) as i64 + 5000, "{report:#}");

    // The adopted create is a job like any other now: charged to its key once.
    eventually("the lost create was never charged", || async {
        (credits_used(&proxy).await >= 3.0 * per_job).then_some(())
    })
    .await;
    let again = reconcile_now(&proxy).await;
    assert_eq!(
        kinds(&again),
        [("charged_outside".to_owned(), foreign.clone()), ("charged_differently".to_owned(), ids[0].clone())],
        "{again:#}"
    );
    let ana = &again["reconciliation"]["keys"][0];
    assert_eq!((ana["key"].as_str(), ana["proxy_credits"].as_f64()), (Some("ana"), Some(3.0 * per_job)));
    assert_eq!(ana["ledger_credits"], (5.0 * per_job) as i64);
    assert_eq!(credits_used(&proxy).await, 3.0 * per_job, "charged once, reconciled twice");

    // A run that cannot read the ledger says so, and hides nothing it found before.
    sim.inject(Route::Billing, Fault::Status(400), 1);
    assert_eq!(admin_reconcile(&proxy, true).await.0, 502);
    let (_, last) = admin_reconcile(&proxy, false).await;
    assert_eq!(last["ok"], false, "{last:#}");
    assert!(last["error"]["message"].as_str().is_some_and(|m| m.contains("ledger")), "{last:#}");
    assert_eq!(kinds(&last), kinds(&again), "the last result is still shown");

    let metrics = proxy.http.get(format!("{}/metrics", proxy.url)).bearer_auth(ADMIN_TOKEN).send().await;
    let metrics = metrics.unwrap().text().await.unwrap();
    for line in [
        "aimlvid_reconcile_findings{kind=\"lost_create\"} 0",
        "aimlvid_reconcile_findings{kind=\"charged_outside\"} 1",
        "aimlvid_reconcile_findings{kind=\"charged_differently\"} 1",
        &format!("aimlvid_reconcile_spend_credits{{source=\"ledger\"}} {}", (5.0 * per_job) as i64 + 5000),
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line}");
    }
    proxy.stop().await;

    // The command reads the same, from the database and the ledger.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_aimlvid-server"));
    command
        .args(["--database", &storage.database_arg(), "reconcile", "--since", "1d", "--json"])
        .env("AIMLAPI_API_KEY", aimlvid_sim::DEFAULT_API_KEY)
        .env("AIMLAPI_BASE_URL", sim.base_url())
        .env_remove("AIMLVID_CONFIG");
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let printed = serde_json::json!({ "reconciliation": printed });
    assert_eq!(kinds(&printed), kinds(&again), "{printed:#}");
    storage.finish().await;
}

/// The command reads the server's database: a path where there is none is
/// refused, not created empty and reported on (which would list every
/// charge as made outside this proxy).
#[tokio::test]
async fn the_command_refuses_a_database_that_is_not_there() {
    let sim = frozen_sim().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("typo.db");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    for database in [&missing, &empty] {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_aimlvid-server"));
        command
            .args(["--database", database.to_str().unwrap(), "reconcile"])
            .env("AIMLAPI_API_KEY", aimlvid_sim::DEFAULT_API_KEY)
            .env("AIMLAPI_BASE_URL", sim.base_url())
            .env_remove("AIMLVID_CONFIG");
        let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains("there is no aimlvid-server database"),
            "{stderr}"
        );
    }
    assert!(!missing.exists(), "nothing created");
    assert_eq!(std::fs::metadata(&empty).unwrap().len(), 0, "nothing written");
}
