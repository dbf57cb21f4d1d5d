//! The team page in a real browser: headless Chromium driven through
//! ChromeDriver (WebDriver), against the proxy and the simulator started
//! in-process.
//!
//! Needs `chromedriver` and `chromium` (Debian's `chromium-driver` and
//! `chromium`; `.ci/run` installs them). Without them the test says it was
//! skipped and passes, unless `AIMLVID_REQUIRE_BROWSER=1` (set in CI) makes
//! that a failure. With `AIMLVID_UI_SCREENSHOTS=DIR` it also saves the
//! screenshots shown in docs/server.md (`cargo xtask screenshots`).

#[allow(dead_code, unreachable_pub, unused_macros, unused_imports)]
#[path = "it/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aimlvid_server::store::KeyLimits;
use aimlvid_sim::{SimConfig, Simulator, Spread};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use support::*;

/// What the XSS checks type as a prompt.
const EVIL_PROMPT: &str = r#"<script>window.__xss=1</script>"><img src=x onerror="window.__xss=2">"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_and_the_admin_use_the_page_in_a_real_browser() {
    let Some(driver) = ChromeDriver::start().await else { return };
    let browser = driver.session().await;
    // The simulator's clock is frozen: each job finishes when the test says.
    let sim = Simulator::start(SimConfig {
        time_scale: 0.0,
        queue_time: Spread::Fixed(Duration::from_secs(20)),
        generation_time: Spread::Fixed(Duration::from_secs(100)),
        credits_per_job: 40.0,
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let (dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let (alice, bob) =
        (proxy.key("alice", KeyLimits::default()).await, proxy.key("bob", KeyLimits::default()).await);
    let clip = dir.path().join("clip.mp4");
    std::fs::write(&clip, aimlvid_sim::SAMPLE_INPUT).unwrap();

    // A member signs in and starts an extend of an uploaded clip.
    sign_in(&browser, &proxy.url, &alice).await;
    assert!(browser.current_url().await.unwrap().path().ends_with("/ui/jobs"));
    browser.goto(&format!("{}/ui/new", proxy.url)).await.unwrap();
    browser.find(Locator::Css("#f-prompt")).await.unwrap().send_keys(EVIL_PROMPT).await.unwrap();
    let upload = browser.find(Locator::Css(r#"input[name="file.video_url"]"#)).await.unwrap();
    upload.send_keys(clip.to_str().unwrap()).await.unwrap();
    browser.find(Locator::Css("form.panel button[type=submit]")).await.unwrap().click().await.unwrap();
    arrive(&browser, "/ui/jobs/").await;
    let job_url = browser.current_url().await.unwrap();
    assert!(job_url.path().starts_with("/ui/jobs/"), "{job_url}");

    // The status changes to completed without a reload: a value set on this
    // page now is still there when it does.
    browser.execute("window.__same_page = 42; return null;", vec![]).await.unwrap();
    assert_eq!(text(&browser, "[data-status]").await, "queued");
    let local_id = job_url.path().rsplit('/').next().unwrap().to_owned();
    let job = proxy.state.store().job_summary(&local_id).await.unwrap().unwrap();
    assert!(sim.complete_now(job.generation_id.as_deref().unwrap()));
    let status = wait_for(
        &browser,
        "the status to become completed",
        "return document.querySelector('[data-status]').textContent === 'completed' ? 'completed' : null;",
    )
    .await;
    assert_eq!(status, "completed");
    assert_eq!(
        browser.execute("return window.__same_page;", vec![]).await.unwrap(),
        json!(42),
        "the page was not reloaded"
    );

    // The video loads and knows its length (the simulator's result is 3 s).
    let duration = wait_for(
        &browser,
        "the video to load",
        "const v = document.querySelector('video'); return v && v.readyState >= 1 && v.duration > 0 ? v.duration : null;",
    )
    .await;
    let seconds = duration.as_f64().unwrap();
    assert!((2.5..3.5).contains(&seconds), "{seconds}");
    assert!(browser.find(Locator::Css("a[download]")).await.is_ok(), "a download link");

    // The prompt is text, not markup, and nothing it holds ran.
    assert_eq!(text(&browser, ".prompt").await, EVIL_PROMPT);
    let injected = browser
        .execute("return [document.querySelectorAll('.prompt *').length, window.__xss || 0, document.querySelectorAll('img[src=x]').length];", vec![])
        .await
        .unwrap();
    assert_eq!(injected, json!([0, 0, 0]));

    // The listing follows several jobs at once: one fails, one completes.
    let created = create_jobs(
        &proxy,
        &alice,
        ["A red fox crosses a snowy field at dawn", "The camera pulls back to show the whole valley"],
    )
    .await;
    browser.goto(&format!("{}/ui/jobs", proxy.url)).await.unwrap();
    assert_eq!(browser.find_all(Locator::Css("article.job[data-live]")).await.unwrap().len(), 2);
    // An unfinished job's time counts up without a reload.
    let first = text(&browser, "article.job[data-live] [data-elapsed]").await;
    let script = format!(
        "const t = document.querySelector('article.job[data-live] [data-elapsed]'); \
         return t.textContent !== {first:?} ? t.textContent : null;"
    );
    let ticking = wait_for(&browser, "the running time to count", &script).await;
    assert!(
        first.ends_with(" s so far") && ticking.as_str().unwrap().ends_with(" s so far"),
        "{first} {ticking}"
    );
    assert!(sim.fail_now(&created[0]));
    assert!(sim.complete_now(&created[1]));
    let script = "return document.querySelectorAll('article.job[data-live]').length === 0 ? true : null;";
    wait_for(&browser, "every job to finish", script).await;
    let failed = text(&browser, "article.job.failed .error").await;
    assert!(failed.contains("The generation failed upstream"), "the upstream's reason: {failed}");
    assert_eq!(browser.find_all(Locator::Css("article.job video")).await.unwrap().len(), 2);
    screenshot(&browser, "member-generations.png").await;

    // Another member cannot open that job, even with its address.
    browser.delete_all_cookies().await.unwrap();
    sign_in(&browser, &proxy.url, &bob).await;
    browser.goto(job_url.as_str()).await.unwrap();
    let body = text(&browser, "main").await;
    assert!(body.contains("There is no such job"), "{body}");
    assert!(!body.contains("window.__xss"), "{body}");

    // The admin makes a key and sees it listed once, the key shown once.
    browser.delete_all_cookies().await.unwrap();
    sign_in(&browser, &proxy.url, ADMIN_TOKEN).await;
    assert!(browser.current_url().await.unwrap().path().ends_with("/ui/admin"));
    browser
        .find(Locator::Css(r#"form[action="/ui/admin/keys"] input[name=name]"#))
        .await
        .unwrap()
        .send_keys("dave")
        .await
        .unwrap();
    browser
        .find(Locator::Css(r#"form[action="/ui/admin/keys"] input[name=rpm]"#))
        .await
        .unwrap()
        .send_keys("60")
        .await
        .unwrap();
    browser
        .find(Locator::Css(r#"form[action="/ui/admin/keys"] button"#))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let script = "const k = document.querySelector('#new-key'); if (k) return k.textContent; \
                  const e = document.querySelector('.error'); return e ? 'refused: ' + e.textContent : null;";
    let key = wait_for(&browser, "the new key", script).await.as_str().unwrap().to_owned();
    assert!(key.len() > 20, "{key}");
    let rows = browser.find_all(Locator::Css(r#"tr[data-key="dave"]"#)).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        get(&proxy.http, &proxy.endpoint(), Some(&key), Some("none")).await.status,
        404,
        "the key works"
    );
    // The whole admin page, chart included.
    browser.set_window_size(1280, 2000).await.unwrap();
    screenshot(&browser, "admin.png").await;
    browser.set_window_size(1280, 1000).await.unwrap();
    browser.goto(&format!("{}/ui/admin", proxy.url)).await.unwrap();
    assert!(browser.find(Locator::Css("#new-key")).await.is_err(), "shown once");
    assert_eq!(browser.find_all(Locator::Css(r#"tr[data-key="dave"]"#)).await.unwrap().len(), 1);

    browser.close().await.unwrap();
    proxy.stop().await;
}

/// Creates jobs through the API, as another client of the same member would.
async fn create_jobs(proxy: &Proxy, key: &str, prompts: [&str; 2]) -> Vec<String> {
    let mut ids = Vec::new();
    for prompt in prompts {
        let answer = post(&proxy.http, &proxy.endpoint(), Some(key), &create_body(prompt)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        ids.push(answer.body["id"].as_str().unwrap().to_owned());
    }
    ids
}

async fn sign_in(browser: &Client, base: &str, secret: &str) {
    browser.goto(&format!("{base}/ui/sign-in")).await.unwrap();
    browser.find(Locator::Css("#secret")).await.unwrap().send_keys(secret).await.unwrap();
    browser.find(Locator::Css("form button[type=submit]")).await.unwrap().click().await.unwrap();
    arrive(browser, "/ui/").await;
}

/// Waits for the page a form led to, whose path starts with `path`; fails
/// with the page's error message if the form was refused instead.
async fn arrive(browser: &Client, path: &str) {
    let script = format!(
        "if (document.readyState !== 'complete') return null; \
         if (location.pathname.startsWith({path:?}) && !location.pathname.endsWith('/sign-in') && !location.pathname.endsWith('/new')) return true; \
         const e = document.querySelector('.error'); return e ? e.textContent : null;"
    );
    let arrived = wait_for(browser, &format!("a page under {path}"), &script).await;
    assert_eq!(arrived, json!(true), "the form led to {path}");
}

async fn text(browser: &Client, css: &str) -> String {
    browser.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Runs `script` until it returns something other than `null`; fails after
/// 30 s, saying `what` never happened.
async fn wait_for(browser: &Client, what: &str, script: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let value = browser.execute(script, vec![]).await.unwrap();
        if !value.is_null() {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "waited 30 s for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Saves a screenshot into `AIMLVID_UI_SCREENSHOTS`, if it is set.
async fn screenshot(browser: &Client, name: &str) {
    let Some(dir) = std::env::var_os("AIMLVID_UI_SCREENSHOTS") else { return };
    let png = browser.screenshot().await.unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(Path::new(&dir).join(name), png).unwrap();
}

/// A ChromeDriver process on a port of its own, killed when dropped.
struct ChromeDriver {
    process: std::process::Child,
    url: String,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    async fn start() -> Option<ChromeDriver> {
        let required = std::env::var_os("AIMLVID_REQUIRE_BROWSER").is_some_and(|v| v == "1");
        let found = |var: &str, default: &str| {
            let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
            path.exists().then_some(path)
        };
        let (Some(driver), Some(_)) = (
            found("AIMLVID_CHROMEDRIVER", "/usr/bin/chromedriver"),
            found("AIMLVID_CHROMIUM", "/usr/bin/chromium"),
        ) else {
            assert!(!required, "AIMLVID_REQUIRE_BROWSER=1, but chromedriver or chromium is missing");
            eprintln!(
                "skipped: chromedriver and chromium are needed (apt-get install chromium chromium-driver)"
            );
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let process = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let driver = ChromeDriver { process, url, profile: tempfile::tempdir().unwrap() };
        let status = format!("{}/status", driver.url);
        eventually("chromedriver to answer", || async {
            reqwest::get(&status).await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        Some(driver)
    }

    async fn session(&self) -> Client {
        let chromium = std::env::var("AIMLVID_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
        // Chromium's background services would try the network, which a CI
        // machine may not have; the profile is a fresh one each time.
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--window-size=1280,1000".to_owned(),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert("goog:chromeOptions".into(), json!({"binary": chromium, "args": args}));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
