//! Team keys: isolation, the admin API, and each limit.

use std::time::Duration;

use aimlvid_server::store::KeyLimits;
use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn a_job_is_visible_only_to_the_key_that_created_it() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let (alice, bob) =
        (proxy.key("alice", KeyLimits::default()).await, proxy.key("bob", KeyLimits::default()).await);
    let http = &proxy.http;
    let created = post(http, &proxy.endpoint(), Some(&alice), &create_body("mine")).await;
    let id = created.body["id"].as_str().unwrap();
    assert_eq!(get(http, &proxy.endpoint(), Some(&alice), Some(id)).await.status, 200);
    let theirs = get(http, &proxy.endpoint(), Some(&bob), Some(id)).await;
    let unknown = get(http, &proxy.endpoint(), Some(&bob), Some("no-such-id")).await;
    assert_eq!((theirs.status, unknown.status), (404, 404));
    assert_eq!(theirs.body["message"], unknown.body["message"], "another's job looks like no job");
    proxy.stop().await;
}

async fn admin(
    proxy: &Proxy,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = proxy.http.request(method, format!("{}{path}", proxy.url)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_admin_api_issues_lists_updates_and_revokes_keys() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    use reqwest::Method;

    let (status, _) = admin(&proxy, Method::GET, "/admin/keys", "wrong-token", None).await;
    assert_eq!(status, 401);
    let (status, created) =
        admin(&proxy, Method::POST, "/admin/keys", ADMIN_TOKEN, Some(json!({"name": "carol", "rpm": 100})))
            .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("amv_"));
    let (status, _) =
        admin(&proxy, Method::POST, "/admin/keys", ADMIN_TOKEN, Some(json!({"name": "carol"}))).await;
    assert_eq!(status, 409, "names are unique");

    let (_, listed) = admin(&proxy, Method::GET, "/admin/keys", ADMIN_TOKEN, None).await;
    assert_eq!(listed[0]["name"], "carol");
    assert_eq!(listed[0]["rpm"], 100);
    assert!(!listed.to_string().contains(&key), "a key is shown once, never listed");

    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("x")).await;
    assert_eq!(created.status, 200);

    let (status, _) =
        admin(&proxy, Method::PATCH, "/admin/keys/carol", ADMIN_TOKEN, Some(json!({"enabled": false}))).await;
    assert_eq!(status, 200);
    assert_eq!(get(&proxy.http, &proxy.endpoint(), Some(&key), Some("x")).await.status, 403);
    admin(&proxy, Method::PATCH, "/admin/keys/carol", ADMIN_TOKEN, Some(json!({"enabled": true}))).await;
    assert_eq!(get(&proxy.http, &proxy.endpoint(), Some(&key), Some("x")).await.status, 404);

    let (status, revoked) = admin(&proxy, Method::DELETE, "/admin/keys/carol", ADMIN_TOKEN, None).await;
    assert_eq!((status, &revoked["revoked"]), (200, &json!(true)));
    assert_eq!(get(&proxy.http, &proxy.endpoint(), Some(&key), Some("x")).await.status, 401);
    let (status, _) = admin(&proxy, Method::DELETE, "/admin/keys/nobody", ADMIN_TOKEN, None).await;
    assert_eq!(status, 404);
    proxy.stop().await;
}

#[tokio::test]
async fn the_admin_api_refuses_the_limits_every_other_way_of_issuing_a_key_refuses() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    use reqwest::Method;

    for body in [
        json!({"name": "neg", "credit_budget": -5.0}),
        json!({"name": "blank", "allowed_models": [" "]}),
        json!({"name": "comma", "allowed_models": [","]}),
        json!({"name": "none", "allowed_models": []}),
        json!({"name": "huge", "credit_budget": 1e300}),
    ] {
        let (status, answer) = admin(&proxy, Method::POST, "/admin/keys", ADMIN_TOKEN, Some(body)).await;
        assert_eq!(status, 400, "{answer}");
        assert!(answer["message"].as_str().is_some_and(|m| m.contains("; ")), "says what to write: {answer}");
    }
    admin(&proxy, Method::POST, "/admin/keys", ADMIN_TOKEN, Some(json!({"name": "ok"}))).await;
    let (status, answer) =
        admin(&proxy, Method::PATCH, "/admin/keys/ok", ADMIN_TOKEN, Some(json!({"credit_budget": -1.0})))
            .await;
    assert_eq!(status, 400, "{answer}");
    let (_, listed) = admin(&proxy, Method::GET, "/admin/keys", ADMIN_TOKEN, None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "only the good key: {listed}");
    assert_eq!(listed[0]["credit_budget"], Value::Null, "the refused change changed nothing");

    // Read as the command and the page read them: `any` is every model, a
    // list may be written as one comma-separated entry, spaces are trimmed.
    let (_, any) = admin(
        &proxy,
        Method::POST,
        "/admin/keys",
        ADMIN_TOKEN,
        Some(json!({"name": "any", "allowed_models": ["any"]})),
    )
    .await;
    assert_eq!(any["allowed_models"], Value::Null, "{any}");
    let body = json!({"name": "two", "allowed_models": [" alibaba/* ,google/*"], "rpm": "unlimited"});
    let (_, two) = admin(&proxy, Method::POST, "/admin/keys", ADMIN_TOKEN, Some(body)).await;
    assert_eq!(two["allowed_models"], json!(["alibaba/*", "google/*"]), "{two}");
    let change = json!({"max_unfinished": "unlimited", "rpm": "unlimited"});
    let (status, changed) = admin(&proxy, Method::PATCH, "/admin/keys/two", ADMIN_TOKEN, Some(change)).await;
    assert_eq!((status, &changed["max_unfinished"]), (200, &Value::Null), "{changed}");
    proxy.stop().await;
}

#[tokio::test]
async fn requests_per_minute_are_limited_with_retry_after() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("limited", KeyLimits { rpm: Some(2), ..KeyLimits::default() }).await;
    for _ in 0..2 {
        assert_eq!(get(&proxy.http, &proxy.endpoint(), Some(&key), Some("x")).await.status, 404);
    }
    let refused = get(&proxy.http, &proxy.endpoint(), Some(&key), Some("x")).await;
    assert_eq!(refused.status, 429);
    let wait: u64 = refused.retry_after.as_deref().unwrap().parse().unwrap();
    assert!((29..=30).contains(&wait), "a token every 30 s: {wait}");
    assert_eq!(refused.body["statusCode"], 429);
    proxy.stop().await;
}

#[tokio::test]
async fn models_unfinished_jobs_and_the_budget_are_limited() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let per_job = sim.config().credits_per_job;
    let proxy = start_proxy_configured(&sim, &db, |c| {
        c.costs.estimates.insert("google/veo3-1-fast-extend-video".into(), per_job);
    })
    .await;
    let http = &proxy.http;
    let limits = KeyLimits {
        allowed_models: Some(vec!["google/veo3-1-fast-extend-video".into()]),
        max_unfinished: Some(1),
        credit_budget: Some(per_job * 2.5),
        ..KeyLimits::default()
    };
    let key = proxy.key("dave", limits).await;

    let mut other_model = create_body("x");
    other_model["model"] = "google/veo3-1-extend-video".into();
    let refused = post(http, &proxy.endpoint(), Some(&key), &other_model).await;
    assert_eq!(refused.status, 403, "{refused:?}");

    let first = post(http, &proxy.endpoint(), Some(&key), &create_body("1")).await;
    assert_eq!(first.status, 200);
    let busy = post(http, &proxy.endpoint(), Some(&key), &create_body("2")).await;
    assert_eq!(busy.status, 429);
    assert!(busy.retry_after.is_some());
    assert_eq!(sim.stats().create_requests, 1, "refusals never reach the upstream");

    // Finish the first job; it is charged once, however often it is read.
    let id = first.body["id"].as_str().unwrap();
    assert!(sim.complete_now(id));
    let client = proxy.client(&key);
    client.wait(id).await.unwrap();
    for _ in 0..20 {
        get(http, &proxy.endpoint(), Some(&key), Some(id)).await;
    }
    let second = post(http, &proxy.endpoint(), Some(&key), &create_body("2")).await;
    assert_eq!(second.status, 200, "a slot is free again and 1 of 2.5 jobs' credits is spent");
    let id2 = second.body["id"].as_str().unwrap();
    assert!(sim.complete_now(id2));
    client.wait(id2).await.unwrap();
    let broke = post(http, &proxy.endpoint(), Some(&key), &create_body("3")).await;
    assert_eq!(broke.status, 403, "half a job's credits left does not cover a job: {broke:?}");
    let keys = proxy.state.store().keys().await.unwrap();
    assert_eq!(keys[0].credits_used, 2.0 * per_job, "charged once per job, never per poll");
    proxy.stop().await;
}

/// The refresher reloads keys every millisecond here, racing each issue's
/// own reload: a reload that read the table before the key existed must
/// not sync over one that read it after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_works_as_soon_as_it_is_issued_while_the_refresher_runs() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy =
        start_proxy_configured(&sim, &db, |config| config.key_refresh = Duration::from_millis(1)).await;
    for n in 0..200 {
        let key = proxy.key(&format!("member-{n}"), KeyLimits::default()).await;
        // A request, as a member would make next: the refresher gets its turn meanwhile.
        let read = get(&proxy.http, &proxy.endpoint(), Some(&key), Some("no-such-job")).await;
        assert_eq!(read.status, 404, "key {n} was refused right after it was issued: {read:?}");
    }
}

#[tokio::test]
async fn allowlists_take_patterns_and_bad_requests_are_refused_before_the_upstream() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let limits = KeyLimits { allowed_models: Some(vec!["*-extend-video".into()]), ..KeyLimits::default() };
    let key = proxy.key("erin", limits).await;
    let send = |body: Value| {
        let (http, endpoint, key) = (proxy.http.clone(), proxy.endpoint(), key.clone());
        async move { post(&http, &endpoint, Some(&key), &body).await }
    };

    let mut standard = create_body("x");
    standard["model"] = "google/veo3-1-extend-video".into();
    assert_eq!(send(standard).await.status, 200, "fits the pattern");
    let mut text = create_body("x");
    text["model"] = "google/veo-3.1-t2v".into();
    assert_eq!(send(text).await.status, 403, "does not fit");

    let mut wrong = create_body("x");
    wrong["duration"] = 9.into();
    wrong.as_object_mut().unwrap().remove("video_url");
    let refused = send(wrong).await;
    assert_eq!((refused.status, refused.body["message"].as_str()), (400, Some("Body validation error")));
    let errors = refused.body["errors"].as_array().unwrap();
    let paths: Vec<&Value> = errors.iter().map(|e| &e["path"][0]).collect();
    assert_eq!(paths, [&json!("video_url"), &json!("duration")], "{errors:?}");
    assert_eq!(
        (&errors[0]["message"], &errors[1]["code"]),
        (&json!("Required"), &json!("invalid_enum_value"))
    );
    assert_eq!(sim.stats().create_requests, 1, "only the good create reached the upstream");
    proxy.stop().await;
}
