//! `GET /v2/billing/transactions`: charges recorded as jobs complete, the
//! filters and their refusals, cursor pagination, and the knobs that plant
//! differences between what jobs said and what the ledger charged.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use aimlvid_sim::{DEFAULT_API_KEY, SimConfig, Simulator, Spread};
use axum::body::Body;
use axum::http::Request;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::support::*;

const PATH: &str = "/v2/billing/transactions";

async fn ledger_with(sim: &aimlvid_sim::RunningSim, key: &str, query: &[(&str, &str)]) -> reqwest::Response {
    client()
        .get(format!("{}{PATH}", sim.base_url()))
        .bearer_auth(key)
        .query(query)
        .send()
        .await
        .expect("ledger answered")
}

async fn ledger(sim: &aimlvid_sim::RunningSim, query: &[(&str, &str)]) -> Value {
    let response = ledger_with(sim, DEFAULT_API_KEY, query).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The ledger through the router alone, for tests on a paused tokio clock.
async fn ledger_direct(sim: &Simulator, query: &str) -> (u16, Value) {
    let request = Request::get(format!("{PATH}?{query}"))
        .header("authorization", format!("Bearer {DEFAULT_API_KEY}"))
        .body(Body::empty())
        .unwrap();
    let response = sim.router().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

async fn create_direct(sim: &Simulator) -> String {
    let request = Request::post(CREATE_PATH)
        .header("authorization", format!("Bearer {DEFAULT_API_KEY}"))
        .header("content-type", "application/json")
        .body(Body::from(body().to_string()))
        .unwrap();
    let response = sim.router().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["id"].as_str().unwrap().to_owned()
}

fn refs(page: &Value) -> Vec<Value> {
    page["data"].as_array().unwrap().iter().map(|e| e["reference_id"].clone()).collect()
}

fn at(entry: &Value) -> SystemTime {
    humantime::parse_rfc3339(entry["created_at"].as_str().unwrap()).unwrap()
}

fn frozen() -> SimConfig {
    SimConfig { time_scale: 0.0, ..SimConfig::default() }
}

#[tokio::test]
async fn a_completed_job_is_charged_what_it_reported_and_a_failed_one_nothing() {
    let sim = start(SimConfig {
        credit_balance: Some(1_000_000.0),
        credits_per_job: 2480.0,
        api_keys: vec![DEFAULT_API_KEY.into(), "second-key".into()],
        ..frozen()
    })
    .await;
    let (done, failed, running) = (create_job(&sim).await, create_job(&sim).await, create_job(&sim).await);
    let opening = ledger(&sim, &[]).await;
    assert_eq!(opening["data"].as_array().unwrap().len(), 1, "only the starting balance: {opening}");
    assert_eq!(
        opening["data"][0],
        json!({
            "created_at": opening["data"][0]["created_at"],
            "direction": "TOPUP",
            "type": "INIT",
            "amount": {"usd": 0.5, "credits": 1_000_000},
            "model": null,
            "reference_id": null,
        })
    );

    assert!(sim.complete_now(&done) && sim.fail_now(&failed));
    let answer: Value = poll_with(&sim, DEFAULT_API_KEY, &done).await.json().await.unwrap();
    assert_eq!(answer["meta"]["usage"]["credits_used"], 2480);
    let response = ledger_with(&sim, DEFAULT_API_KEY, &[]).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    // Byte for byte in the documented order, 2,480 credits being $0.00124.
    let charge = format!(
        r#"{{"data":[{{"created_at":"{}","direction":"CHARGE","type":"MODEL_USAGE","amount":{{"usd":0.00124,"credits":2480}},"model":"{HEADLINE}","reference_id":"{done}"}},"#,
        serde_json::from_str::<Value>(&text).unwrap()["data"][0]["created_at"].as_str().unwrap()
    );
    assert!(text.starts_with(&charge), "{text}");
    assert!(text.ends_with(r#"],"pagination":{"next_cursor":null,"has_more":false}}"#), "{text}");
    let page: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(refs(&page), [json!(done), Value::Null], "newest first; no charge for {failed} or {running}");
    let created_at = page["data"][0]["created_at"].as_str().unwrap();
    assert_eq!(created_at.len(), "2026-08-17T10:00:00.000Z".len());
    assert!(at(&page["data"][0]) >= at(&page["data"][1]));

    // The ledger is the account's: another key sees the same entries.
    let other: Value = ledger_with(&sim, "second-key", &[]).await.json().await.unwrap();
    assert_eq!(refs(&other), refs(&page));
    assert_eq!(ledger_with(&sim, "wrong-key", &[]).await.status(), 401);
    let anonymous = client().get(format!("{}{PATH}", sim.base_url())).send().await.unwrap();
    error_body(anonymous, 401, PATH).await;
}

#[tokio::test(start_paused = true)]
async fn a_charge_is_recorded_only_after_the_ledger_delay() {
    let sim = Simulator::new(SimConfig {
        time_scale: 1.0,
        queue_time: Spread::Fixed(Duration::from_secs(1)),
        generation_time: Spread::Fixed(Duration::from_secs(10)),
        ledger_delay: Duration::from_secs(30),
        credit_balance: Some(10_000_000.0),
        ..SimConfig::default()
    });
    let id = create_direct(&sim).await;
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(sim.job(&id).unwrap().finishes_at, Duration::from_secs(11));
    let (_, page) = ledger_direct(&sim, "direction=CHARGE").await;
    assert_eq!(page["data"], json!([]), "completed, not charged yet");
    tokio::time::advance(Duration::from_millis(29_999)).await;
    assert_eq!(ledger_direct(&sim, "direction=CHARGE").await.1["data"], json!([]));
    tokio::time::advance(Duration::from_millis(1)).await;
    let (_, page) = ledger_direct(&sim, "").await;
    assert_eq!(refs(&page), [json!(id), Value::Null]);
    // Dated when recorded: 41 s after the opening balance.
    let after = at(&page["data"][0]).duration_since(at(&page["data"][1])).unwrap();
    assert_eq!(after, Duration::from_secs(41));
}

#[tokio::test(start_paused = true)]
async fn entries_are_filtered_by_direction_type_and_window() {
    let sim = Simulator::new(SimConfig { credit_balance: Some(5_000_000.0), ..frozen() });
    let mut charged = Vec::new();
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(60)).await;
        let id = create_direct(&sim).await;
        assert!(sim.complete_now(&id));
        charged.push(id);
    }
    let (_, all) = ledger_direct(&sim, "").await;
    assert_eq!(all["data"].as_array().unwrap().len(), 4);
    let (_, charges) = ledger_direct(&sim, "direction=CHARGE&type=MODEL_USAGE").await;
    let newest_first: Vec<Value> = charged.iter().rev().map(|id| json!(id)).collect();
    assert_eq!(refs(&charges), newest_first);
    let (_, topups) = ledger_direct(&sim, "direction=TOPUP").await;
    assert_eq!(topups["data"][0]["type"], "INIT");
    assert_eq!(topups["data"].as_array().unwrap().len(), 1);
    let (_, none) = ledger_direct(&sim, "direction=TOPUP&type=MODEL_USAGE").await;
    assert_eq!(none["data"], json!([]));

    // `from` is inclusive, `to` exclusive, and an offset is honoured.
    let middle = charges["data"][1]["created_at"].as_str().unwrap();
    let newest = charges["data"][0]["created_at"].as_str().unwrap();
    let (_, window) = ledger_direct(&sim, &format!("type=MODEL_USAGE&from={middle}&to={newest}")).await;
    assert_eq!(refs(&window), [json!(charged[1])]);
    let shifted = humantime::format_rfc3339_seconds(at(&charges["data"][1]) + Duration::from_secs(7200))
        .to_string()
        .replace('Z', "+02:00");
    let (status, since) =
        ledger_direct(&sim, &format!("type=MODEL_USAGE&from={}", shifted.replace('+', "%2B"))).await;
    assert_eq!(status, 200, "{since}");
    assert_eq!(refs(&since), [json!(charged[2]), json!(charged[1])]);
}

#[tokio::test(start_paused = true)]
async fn pages_walk_every_entry_once_even_within_one_millisecond() {
    // Paused and frozen: every charge has the same `created_at`.
    let sim = Simulator::new(frozen());
    let mut expected = HashSet::new();
    for _ in 0..7 {
        let id = create_direct(&sim).await;
        assert!(sim.complete_now(&id));
        expected.insert(id);
    }
    let mut seen = Vec::new();
    let mut query = "limit=3".to_owned();
    let mut pages = Vec::new();
    loop {
        let (status, page) = ledger_direct(&sim, &query).await;
        assert_eq!(status, 200, "{page}");
        pages.push((page["data"].as_array().unwrap().len(), page["pagination"]["has_more"].clone()));
        seen.extend(refs(&page).into_iter().map(|r| r.as_str().unwrap().to_owned()));
        match page["pagination"]["next_cursor"].as_str() {
            Some(cursor) => query = format!("limit=3&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, [(3, json!(true)), (3, json!(true)), (1, json!(false))]);
    assert_eq!(seen.len(), 7);
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);

    // A charge recorded after the first page is newer: later pages do not
    // show it, a fresh walk does.
    let (_, first) = ledger_direct(&sim, "limit=3").await;
    let cursor = first["pagination"]["next_cursor"].as_str().unwrap().to_owned();
    let late = create_direct(&sim).await;
    assert!(sim.complete_now(&late));
    let (_, second) = ledger_direct(&sim, &format!("limit=3&cursor={cursor}")).await;
    assert!(!refs(&second).contains(&json!(late)));
    assert_eq!(refs(&ledger_direct(&sim, "limit=1").await.1), [json!(late)]);
    // Default page size is 50.
    assert_eq!(ledger_direct(&sim, "").await.1["data"].as_array().unwrap().len(), 8);
}

#[tokio::test]
async fn bad_queries_get_the_upstreams_400s() {
    let sim = start(frozen()).await;
    let refused = |query: Vec<(&'static str, &'static str)>| {
        let sim = &sim;
        async move { error_body(ledger_with(sim, DEFAULT_API_KEY, &query).await, 400, PATH).await }
    };
    let body = refused(vec![("direction", "charge"), ("limit", "0")]).await;
    assert_eq!(body["message"], "Query validation error");
    assert_eq!(
        body["errors"],
        json!([
            {"code": "invalid_enum_value", "options": ["TOPUP", "CHARGE"], "received": "charge",
             "path": ["direction"], "message": "Invalid enum value. Expected 'TOPUP' | 'CHARGE', received 'charge'"},
            {"code": "too_small", "minimum": 1, "type": "number", "inclusive": true, "exact": false,
             "path": ["limit"], "message": "Number must be greater than or equal to 1"},
        ])
    );
    let issue = |body: Value| (body["errors"][0]["code"].clone(), body["errors"][0]["path"][0].clone());
    assert_eq!(issue(refused(vec![("limit", "101")]).await), (json!("too_big"), json!("limit")));
    assert_eq!(issue(refused(vec![("limit", "ten")]).await), (json!("invalid_type"), json!("limit")));
    assert_eq!(issue(refused(vec![("type", "USAGE")]).await), (json!("invalid_enum_value"), json!("type")));
    // ISO-8601 with an offset, as documented; a bare local time is not.
    let bare = refused(vec![("from", "2026-08-01T00:00:00")]).await;
    assert_eq!(bare["errors"][0]["message"], "Invalid datetime");
    assert_eq!(issue(bare), (json!("invalid_string"), json!("from")));
    let twice = refused(vec![("direction", "CHARGE"), ("direction", "TOPUP")]).await;
    assert_eq!(twice["errors"][0]["message"], "Expected string, received array");

    let backwards = refused(vec![("from", "2026-08-18T00:00:00Z"), ("to", "2026-08-01T00:00:00Z")]).await;
    assert!(backwards["message"].as_str().unwrap().contains("`to` must be later than `from`"));
    let equal = refused(vec![("from", "2026-08-18T00:00:00Z"), ("to", "2026-08-18T02:00:00+02:00")]).await;
    assert!(equal["message"].as_str().unwrap().contains("later"));
    // The documentation's example cursor was not issued by this server.
    let cursor = refused(vec![("cursor", "eyJ2IjoxLCJjIjoiMjAyNi0wOC0xN1QxMDowMDowMC4wMDBaIn0")]).await;
    assert!(cursor["message"].as_str().unwrap().starts_with("Invalid cursor"), "{cursor}");
    assert!(cursor.get("errors").is_none());

    // A good window and unknown parameters are fine.
    let fine =
        ledger(&sim, &[("from", "2026-08-01T00:00:00Z"), ("to", "2099-01-01T00:00:00Z"), ("page", "2")])
            .await;
    assert_eq!(fine["pagination"], json!({"next_cursor": null, "has_more": false}));
}

#[tokio::test]
async fn a_foreign_charge_is_billed_for_a_job_made_around_the_caller() {
    let sim = start(SimConfig { credit_balance: Some(100_000.0), ..frozen() }).await;
    let foreign = sim.add_foreign_charge(HEADLINE, 2480);
    let page = ledger(&sim, &[("direction", "CHARGE")]).await;
    assert_eq!(refs(&page), [json!(foreign)]);
    assert_eq!(page["data"][0]["amount"], json!({"usd": 0.00124, "credits": 2480}));
    assert_eq!(page["data"][0]["model"], HEADLINE);
    assert_eq!(sim.credit_balance(), Some(100_000.0 - 2480.0));

    // The job is real: the key can poll it, and the logs hold its create,
    // without a client request id.
    let answer: Value = poll_with(&sim, DEFAULT_API_KEY, &foreign).await.json().await.unwrap();
    assert_eq!(answer["status"], "completed");
    assert_eq!(answer["meta"]["usage"]["credits_used"], 2480);
    let logs: Value = client()
        .get(format!("{}/v2/logs", sim.base_url()))
        .bearer_auth(DEFAULT_API_KEY)
        .query(&[("period", "1h")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(logs["data"][0]["inference_id"], foreign.as_str());
    assert_eq!(logs["data"][0]["client_request_id"], Value::Null);
    assert_eq!(logs["data"][0]["cost"]["credits"], 2480);
    let stats = sim.stats();
    assert_eq!((stats.create_requests, stats.jobs_created), (0, 1));
}

#[tokio::test]
async fn a_charge_can_be_made_to_differ_from_the_jobs_answer() {
    let sim = start(frozen()).await;
    let (dear, free, failed) = (create_job(&sim).await, create_job(&sim).await, create_job(&sim).await);
    // Before the charge is recorded...
    assert!(sim.charge_differently(&dear, 150_000));
    assert!(sim.complete_now(&dear) && sim.complete_now(&free) && sim.fail_now(&failed));
    assert_eq!(refs(&ledger(&sim, &[]).await).len(), 2);
    // ...and after: 0 takes it off the ledger.
    assert!(sim.charge_differently(&free, 0));
    assert!(!sim.charge_differently(&failed, 1), "a failed job is never charged");
    assert!(!sim.charge_differently("no-such-job", 1));

    let page = ledger(&sim, &[]).await;
    assert_eq!(refs(&page), [json!(dear)]);
    assert_eq!(page["data"][0]["amount"], json!({"usd": 0.075, "credits": 150_000}));
    let answer: Value = poll_with(&sim, DEFAULT_API_KEY, &dear).await.json().await.unwrap();
    assert_eq!(answer["meta"]["usage"]["credits_used"], 120_000, "the answer still says what it said");
}
