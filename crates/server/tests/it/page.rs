//! The team page over plain HTTP, as a browser would use it: sign-in,
//! sessions, CSRF, escaping, and what each viewer may see. (A real browser
//! runs the live parts in `tests/browser.rs`.)

use aimlvid_server::store::KeyLimits;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::support::*;

/// A browser's view of the page: its cookies, no redirects followed.
struct Visitor {
    base: String,
    http: reqwest::Client,
    cookies: Vec<(String, String)>,
}

/// What a page answered.
struct Page {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Page {
    /// The CSRF token of the page's first form.
    fn csrf(&self) -> String {
        let start = self.html.find(r#"name="csrf" value=""#).expect("a form with a CSRF token") + 19;
        self.html[start..].split('"').next().unwrap().to_owned()
    }

    fn location(&self) -> &str {
        self.headers.get(LOCATION).map_or("", |v| v.to_str().unwrap())
    }
}

impl Visitor {
    fn new(base: &str) -> Visitor {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Visitor { base: base.to_owned(), http, cookies: Vec::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn keep(&mut self, response: reqwest::Response) -> Page {
        for set in response.headers().get_all(SET_COOKIE) {
            let text = set.to_str().unwrap();
            let (pair, _) = text.split_once(';').unwrap_or((text, ""));
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let (status, headers) = (response.status(), response.headers().clone());
        Page { status, headers, html: response.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Page {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(response).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, self.cookie_header())
            .header("origin", &self.base)
            .form(form)
            .send()
            .await
            .unwrap();
        self.keep(response).await
    }

    /// Posts the New generation form for the headline model, as a browser
    /// sends it (multipart, with the form's CSRF token).
    async fn create_on_page(&mut self, prompt: &str) -> reqwest::Response {
        let csrf = self.get("/ui/new").await.csrf();
        self.http
            .post(format!("{}/ui/new", self.base))
            .header(COOKIE, self.cookie_header())
            .header("origin", &self.base)
            .multipart(
                reqwest::multipart::Form::new()
                    .text("csrf", csrf)
                    .text("model", "google/veo3-1-fast-extend-video")
                    .text("p.prompt", prompt.to_owned())
                    .text("p.video_url", "https://example.com/a.mp4"),
            )
            .send()
            .await
            .unwrap()
    }

    async fn sign_in(&mut self, secret: &str) -> Page {
        let form = self.get("/ui/sign-in").await;
        self.post("/ui/sign-in", &[("secret", secret), ("csrf", &form.csrf())]).await
    }
}

#[tokio::test]
async fn signing_in_gives_a_strict_http_only_session_that_sign_out_ends() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("alice", KeyLimits::default()).await;
    let mut browser = Visitor::new(&proxy.url);

    let first = browser.get("/ui").await;
    assert_eq!((first.status, first.location()), (StatusCode::SEE_OTHER, "/ui/sign-in"));
    let form = browser.get("/ui/sign-in").await;
    let policy = form.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("default-src 'none'; script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");

    // Without the form's token, or with a wrong key, no session.
    let forged = browser.post("/ui/sign-in", &[("secret", &key), ("csrf", "guess")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    let wrong = browser.sign_in("not-a-key").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.html.contains("not a usable team key"), "{}", wrong.html);
    assert!(!browser.cookies.iter().any(|(n, _)| n == "aimlvid_session"));

    let signed = browser.sign_in(&key).await;
    assert_eq!((signed.status, signed.location()), (StatusCode::SEE_OTHER, "/ui"));
    let cookie = signed
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("aimlvid_session="))
        .unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/ui"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    assert!(!cookie.contains(&key), "the key itself is never the cookie");
    let jobs = browser.get("/ui/jobs").await;
    assert_eq!(jobs.status, StatusCode::OK);
    assert!(jobs.html.contains("Signed in as <strong>alice</strong>"), "{}", jobs.html);
    assert!(!jobs.html.contains(&key), "the key is never in the page");

    // Sign-out needs the session's token, then the cookie opens nothing.
    let session = browser.cookies.clone();
    let refused = browser.post("/ui/sign-out", &[("csrf", "wrong")]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let out = browser.post("/ui/sign-out", &[("csrf", &jobs.csrf())]).await;
    assert_eq!((out.status, out.location()), (StatusCode::SEE_OTHER, "/ui/sign-in"));
    browser.cookies = session;
    let after = browser.get("/ui/jobs").await;
    assert_eq!(
        (after.status, after.location()),
        (StatusCode::SEE_OTHER, "/ui/sign-in"),
        "the old cookie is dead"
    );

    // Behind a TLS-terminating proxy, the cookie is Secure.
    let form = browser.get("/ui/sign-in").await;
    let response = browser
        .http
        .post(format!("{}/ui/sign-in", proxy.url))
        .header(COOKIE, browser.cookie_header())
        .header("x-forwarded-proto", "https")
        .form(&[("secret", key.as_str()), ("csrf", &form.csrf())])
        .send()
        .await
        .unwrap();
    let cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("aimlvid_session="))
        .unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    proxy.stop().await;
}

#[tokio::test]
async fn a_revoked_key_ends_its_sessions_and_members_see_only_their_own_jobs() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let (alice, bob) =
        (proxy.key("alice", KeyLimits::default()).await, proxy.key("bob", KeyLimits::default()).await);
    let evil = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&alice), &create_body(evil)).await;
    assert_eq!(created.status, 200, "{:?}", created.body);
    let local_id = proxy
        .state
        .store()
        .job_by_generation(created.body["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap()
        .local_id;

    let mut a = Visitor::new(&proxy.url);
    a.sign_in(&alice).await;
    let list = a.get("/ui/jobs").await;
    assert!(list.html.contains(&format!("/ui/jobs/{local_id}")), "{}", list.html);
    let page = a.get(&format!("/ui/jobs/{local_id}")).await;
    assert_eq!(page.status, StatusCode::OK);
    // The prompt is text: escaped wherever it appears.
    assert!(
        page.html.contains(
            "&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#62;&#60;img src=x onerror=alert(2)&#62;"
        ) || page
            .html
            .contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"),
        "{}",
        page.html
    );
    assert!(!page.html.contains("<script>alert") && !page.html.contains("<img src=x"), "{}", page.html);

    let mut b = Visitor::new(&proxy.url);
    b.sign_in(&bob).await;
    assert!(!b.get("/ui/jobs").await.html.contains(&local_id), "another member's job is not listed");
    for path in [format!("/ui/jobs/{local_id}"), format!("/ui/jobs/{local_id}/card")] {
        let seen = b.get(&path).await;
        assert_eq!(seen.status, StatusCode::NOT_FOUND, "{path} {} {}", seen.location(), seen.html);
        assert!(!seen.html.contains("onerror"), "{path}");
    }
    let other_filter = b.get(&format!("/ui/jobs?model={}", "google%2Fveo3-1-fast-extend-video")).await;
    assert!(!other_filter.html.contains(&local_id));

    // Revoking alice's key ends her session at once.
    proxy.state.store().revoke_key("alice").await.unwrap();
    proxy.state.reload_keys().await.unwrap();
    let after = a.get("/ui/jobs").await;
    assert_eq!((after.status, after.location()), (StatusCode::SEE_OTHER, "/ui/sign-in"));
    proxy.stop().await;
}

#[tokio::test]
async fn the_new_form_creates_through_the_api_and_refuses_forged_posts() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("alice", KeyLimits::default()).await;
    let mut browser = Visitor::new(&proxy.url);
    browser.sign_in(&key).await;
    let form = browser.get("/ui/new").await;
    assert!(
        form.html.contains(r#"name="p.video_url""#) && form.html.contains(r#"name="file.video_url""#),
        "{}",
        form.html
    );
    let csrf = form.csrf();
    let multipart = |csrf: &str| {
        reqwest::multipart::Form::new()
            .text("csrf", csrf.to_owned())
            .text("model", "google/veo3-1-fast-extend-video")
            .text("p.prompt", "a fox in the snow")
            .text("p.resolution", "720p")
            .part(
                "file.video_url",
                reqwest::multipart::Part::bytes(aimlvid_sim::SAMPLE_INPUT.to_vec())
                    .file_name("in.mp4")
                    .mime_str("video/mp4")
                    .unwrap(),
            )
    };
    let (http, cookies) = (browser.http.clone(), browser.cookie_header());
    let send = |form: reqwest::multipart::Form, origin: &str| {
        http.post(format!("{}/ui/new", proxy.url))
            .header(COOKIE, cookies.clone())
            .header("origin", origin)
            .multipart(form)
            .send()
    };
    // A wrong token, or another site, creates nothing.
    assert_eq!(send(multipart("forged"), &proxy.url).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(send(multipart(&csrf), "https://evil.example").await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(sim.stats().create_requests, 0, "nothing reached the upstream");

    let created = send(multipart(&csrf), &proxy.url).await.unwrap();
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let to = created.headers()[LOCATION].to_str().unwrap().to_owned();
    assert!(to.starts_with("/ui/jobs/"), "{to}");
    assert_eq!(sim.stats().create_requests, 1);
    // The same form sent again (a double click, a reload) is the same job.
    let idempotency = {
        let start = form.html.find(r#"name="idempotency" value=""#).unwrap() + 26;
        form.html[start..].split('"').next().unwrap().to_owned()
    };
    assert_eq!(idempotency.len(), 64);
    let twice = |form: reqwest::multipart::Form| form.text("idempotency", idempotency.clone());
    let again = send(twice(multipart(&csrf)), &proxy.url).await.unwrap();
    let again_to = again.headers()[LOCATION].to_str().unwrap().to_owned();
    let third = send(twice(multipart(&csrf)), &proxy.url).await.unwrap();
    assert_eq!(again_to, third.headers()[LOCATION].to_str().unwrap(), "one job for one form");
    assert_eq!(sim.stats().create_requests, 2, "the first post had no token; the two with one made one job");
    let page = browser.get(&to).await;
    assert!(page.html.contains("a fox in the snow"), "{}", page.html);
    assert!(page.html.contains("uploaded video/mp4"), "the upload is described, not shown: {}", page.html);

    // A bad value is refused before anything is sent, with the form kept.
    let bad = reqwest::multipart::Form::new()
        .text("csrf", csrf.clone())
        .text("model", "google/veo3-1-fast-extend-video")
        .text("p.prompt", "again")
        .text("p.video_url", "https://example.com/a.mp4")
        .text("p.duration", "many");
    let refused = send(bad, &proxy.url).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let html = refused.text().await.unwrap();
    assert!(html.contains("duration") && html.contains("again"), "{html}");
    assert_eq!(sim.stats().create_requests, 2);
    proxy.stop().await;
}

/// A create the key's limits refuse is refused on the page as on the API,
/// with the same status (a 429 stays a 429) and the reason shown.
#[tokio::test]
async fn a_create_over_the_keys_limits_is_refused_on_the_page_with_its_status() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("one", KeyLimits { max_unfinished: Some(1), ..KeyLimits::default() }).await;
    let running = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("running")).await;
    assert_eq!(running.status, 200, "{running:?}");
    let mut browser = Visitor::new(&proxy.url);
    browser.sign_in(&key).await;
    let refused = browser.create_on_page("one too many").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let html = refused.text().await.unwrap();
    assert!(html.contains("already has 1 unfinished") && html.contains("one too many"), "{html}");
    assert_eq!(sim.stats().create_requests, 1);
    proxy.stop().await;
}

/// The page's create is admitted as the API's is: a key past its request
/// rate is answered 429 with why, and nothing goes upstream.
#[tokio::test]
async fn a_page_create_past_the_keys_rate_is_answered_429_with_why() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("slow", KeyLimits { rpm: Some(1), ..KeyLimits::default() }).await;
    let mut browser = Visitor::new(&proxy.url);
    browser.sign_in(&key).await;
    let mut statuses = Vec::new();
    for prompt in ["first", "second"] {
        let answer = browser.create_on_page(prompt).await;
        statuses.push(answer.status());
        if answer.status() == StatusCode::TOO_MANY_REQUESTS {
            let html = answer.text().await.unwrap();
            assert!(html.contains("Too many requests for this API key") && html.contains("second"), "{html}");
        }
    }
    assert_eq!(statuses, [StatusCode::SEE_OTHER, StatusCode::TOO_MANY_REQUESTS]);
    assert_eq!(sim.stats().create_requests, 1, "the refused create never went upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn the_admin_makes_a_key_seen_once_and_changes_and_revokes_it() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let member = proxy.key("alice", KeyLimits::default()).await;
    let mut admin = Visitor::new(&proxy.url);
    assert_eq!(admin.sign_in(ADMIN_TOKEN).await.location(), "/ui");
    let page = admin.get("/ui/admin").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.html.contains("<svg") && page.html.contains(r#"data-key="alice""#), "{}", page.html);
    assert!(page.html.contains("0.0 ($0.00)"), "dollars beside credits: {}", page.html);
    let mut alice = Visitor::new(&proxy.url);
    alice.sign_in(&member).await;
    assert_eq!(
        alice.get("/ui/admin").await.status,
        StatusCode::FORBIDDEN,
        "members do not see the admin page"
    );

    let made = admin
        .post(
            "/ui/admin/keys",
            &[("csrf", &page.csrf()), ("name", "carol"), ("rpm", "30"), ("budget_period", "")],
        )
        .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.html);
    // A blank limit is the same default as the admin API's and `keys create`'s, shown as the placeholder.
    assert!(made.html.contains(r#"name="max_unfinished" size="5" placeholder="10""#), "{}", made.html);
    let by_api = proxy
        .http
        .post(format!("{}/admin/keys", proxy.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "name": "dora" }))
        .send()
        .await
        .unwrap();
    assert_eq!(by_api.status(), StatusCode::CREATED);
    let unlimited = admin
        .post(
            "/ui/admin/keys",
            &[
                ("csrf", &page.csrf()),
                ("name", "ed"),
                ("max_unfinished", "unlimited"),
                ("webhook_format", "openai"),
            ],
        )
        .await;
    assert_eq!(unlimited.status, StatusCode::CREATED, "{}", unlimited.html);
    let bad_format = admin
        .post("/ui/admin/keys", &[("csrf", &page.csrf()), ("name", "fay"), ("webhook_format", "x")])
        .await;
    assert_eq!(bad_format.status, StatusCode::BAD_REQUEST);
    assert!(bad_format.html.contains("aimlvid or openai"), "{}", bad_format.html);
    // A row's update has no webhook field: the format stays.
    let saved = admin.post("/ui/admin/keys/ed", &[("csrf", &page.csrf()), ("rpm", "7")]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let formats: std::collections::HashMap<String, aimlvid_server::store::WebhookFormat> =
        proxy.state.store().keys().await.unwrap().into_iter().map(|k| (k.name, k.webhook_format)).collect();
    assert_eq!(formats["ed"], aimlvid_server::store::WebhookFormat::Openai);
    assert_eq!(formats["carol"], aimlvid_server::store::WebhookFormat::Aimlvid);
    let limits: std::collections::HashMap<String, Option<u32>> = proxy
        .state
        .store()
        .keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.name, k.limits.max_unfinished))
        .collect();
    assert_eq!(limits["carol"], Some(aimlvid_server::admin::DEFAULT_MAX_UNFINISHED));
    assert_eq!(limits["carol"], limits["dora"], "the page and the admin API agree");
    assert_eq!(limits["ed"], None);
    let start = made.html.find(r#"id="new-key">"#).unwrap() + 13;
    let key = made.html[start..].split('<').next().unwrap().to_owned();
    let answer = get(&proxy.http, &proxy.endpoint(), Some(&key), Some("nope")).await;
    assert_eq!(answer.status, 404, "the new key works: {:?}", answer.body);
    let again = admin.get("/ui/admin").await;
    assert!(!again.html.contains(&key), "shown once");
    assert_eq!(again.html.matches(r#"data-key="carol""#).count(), 1);
    let duplicate = admin.post("/ui/admin/keys", &[("csrf", &page.csrf()), ("name", "carol")]).await;
    assert_eq!(duplicate.status, StatusCode::BAD_REQUEST);
    assert!(duplicate.html.contains("already exists"), "{}", duplicate.html);

    // Disabled (no `enabled` box), then revoked.
    let saved = admin.post("/ui/admin/keys/carol", &[("csrf", &page.csrf()), ("rpm", "10")]).await;
    assert_eq!(saved.status, StatusCode::SEE_OTHER);
    let record = proxy.state.store().keys().await.unwrap().into_iter().find(|k| k.name == "carol").unwrap();
    assert_eq!((record.enabled, record.limits.rpm), (false, Some(10)));
    let revoked = admin.post("/ui/admin/keys/carol/revoke", &[("csrf", &page.csrf())]).await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER);
    assert_eq!(get(&proxy.http, &proxy.endpoint(), Some(&key), Some("nope")).await.status, 401);
    let forged = admin.post("/ui/admin/keys/alice/revoke", &[("csrf", "x")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(proxy.state.store().keys().await.unwrap().iter().any(|k| k.name == "alice" && !k.revoked));
    proxy.stop().await;
}

#[tokio::test]
async fn a_server_configured_without_the_page_answers_as_the_upstream_does() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy_configured(&sim, &db, |config| config.team_page = None).await;
    let mut browser = Visitor::new(&proxy.url);
    for path in ["/ui", "/ui/sign-in", "/ui/assets/ui.js"] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
        assert!(page.html.contains(&format!("Cannot GET {path}")), "{}", page.html);
    }
    proxy.stop().await;
}

/// The admin page shows how the upstream's catalogue differs from the
/// build's and the last reconciliation, which its button makes; a create
/// for a model the catalogue no longer lists is refused, nothing sent.
#[tokio::test]
async fn the_admin_page_shows_the_catalogue_and_reconciles_on_demand() {
    let dropped = "google/veo3-1-fast-extend-video";
    let config = aimlvid_sim::SimConfig {
        time_scale: 0.0,
        added_models: vec![aimlvid_sim::AddedModel::new(
            "sim/lumen-1",
            serde_json::json!({"type": "object"}),
        )],
        dropped_models: vec![dropped.to_owned()],
        ..aimlvid_sim::SimConfig::default()
    };
    let sim = aimlvid_sim::Simulator::start(config).await.unwrap();
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let key = proxy.key("alice", KeyLimits::default()).await;

    let refused = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("dropped")).await;
    assert_eq!(refused.status, 400, "{refused:?}");
    let message = refused.body["message"].as_str().unwrap_or_default();
    assert!(message.contains("no longer lists") && message.contains(dropped), "{message}");
    let by_alias = serde_json::json!({"model": "veo3-1-fast-extend-video", "prompt": "p", "video_url": "https://example.com/a.mp4"});
    let refused = post(&proxy.http, &proxy.endpoint(), Some(&key), &by_alias).await;
    assert_eq!(refused.status, 400, "by its alias too: {refused:?}");
    assert_eq!(sim.stats().create_requests, 0, "nothing sent");

    let mut admin = Visitor::new(&proxy.url);
    admin.sign_in(ADMIN_TOKEN).await;
    let page = admin.get("/ui/admin").await;
    let catalogue = &page.html[page.html.find("id=\"catalogue\"").expect("a catalogue section")..];
    assert!(catalogue.contains("<code>sim/lumen-1</code>"), "{catalogue}");
    assert!(catalogue.contains(&format!("<code>{dropped}</code>")), "{catalogue}");
    assert!(page.html.contains("None yet: the server makes one"), "no reconciliation before the first");

    let foreign = sim.add_foreign_charge("sim/lumen-1", 4000);
    let posted = admin.post("/ui/admin/reconcile", &[("csrf", &page.csrf())]).await;
    assert_eq!(posted.status, StatusCode::SEE_OTHER);
    let page = admin.get("/ui/admin").await;
    let section = &page.html[page.html.find("id=\"reconciliation\"").unwrap()..];
    assert!(section.contains("Last made"), "{section}");
    assert!(section.contains(&foreign) && section.contains("charged outside this proxy"), "{section}");
    assert!(section.contains("4000 ($0.002)"), "{section}");
    // A member cannot make one.
    let mut member = Visitor::new(&proxy.url);
    member.sign_in(&key).await;
    let csrf = member.get("/ui/jobs").await.csrf();
    assert_eq!(member.post("/ui/admin/reconcile", &[("csrf", &csrf)]).await.status, StatusCode::FORBIDDEN);
}

/// A video made through OpenAI's API is a job like any other on the team page.
#[tokio::test]
async fn the_page_lists_a_video_made_through_the_openai_api() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let alice = proxy.key("alice", KeyLimits::default()).await;
    let created = proxy
        .http
        .post(format!("{}/v1/videos", proxy.url))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"model": "sora-2", "prompt": "a paper boat on a river", "seconds": "8"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let video: serde_json::Value = created.json().await.unwrap();
    let job = proxy.state.store().job_by_generation(video["id"].as_str().unwrap()).await.unwrap().unwrap();
    assert_eq!(job.model, "openai/sora-2-t2v");

    let mut a = Visitor::new(&proxy.url);
    a.sign_in(&alice).await;
    let list = a.get("/ui/jobs").await;
    assert!(list.html.contains(&format!("/ui/jobs/{}", job.local_id)), "{}", list.html);
    let page = a.get(&format!("/ui/jobs/{}", job.local_id)).await;
    assert!(
        page.html.contains("a paper boat on a river") && page.html.contains("openai/sora-2-t2v"),
        "{}",
        page.html
    );
    proxy.stop().await;
}
