//! The real binary: `keys create`, `serve`, and `kill -9`, alone and as
//! replicas sharing a PostgreSQL.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_aimlvid-server");

/// A server process, killed when dropped, so that a failed assertion does
/// not leave it running.
struct Server(Child);

impl std::ops::Deref for Server {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Server {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already killed and reaped by the test, or not: either way it ends here.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `aimlvid-server serve` on a free port; returns it and its address.
fn spawn_server(sim_url: &str, db: &OsStr) -> (Server, String) {
    spawn_server_with(sim_url, db, &[])
}

/// [`spawn_server`] with more arguments to `serve`.
fn spawn_server_with(sim_url: &str, db: &OsStr, extra: &[&OsStr]) -> (Server, String) {
    let (child, url, _log) = spawn_server_logged(sim_url, db, extra, "info");
    (child, url)
}

/// [`spawn_server_with`], also handing over every log line after the one
/// that names the address.
fn spawn_server_logged(
    sim_url: &str,
    db: &OsStr,
    extra: &[&OsStr],
    rust_log: &str,
) -> (Server, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--database")
        .arg(db)
        .env("AIMLAPI_API_KEY", aimlvid_sim::DEFAULT_API_KEY)
        .env("AIMLAPI_BASE_URL", sim_url)
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("the server exited before serving").unwrap();
        assert!(!line.contains(aimlvid_sim::DEFAULT_API_KEY), "a log line shows the upstream key: {line}");
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(address) = json["address"].as_str()
        {
            break address.to_owned();
        }
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let (tx, log) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            assert!(!line.contains(aimlvid_sim::DEFAULT_API_KEY), "a log line shows the upstream key");
            let _ = tx.send(line);
        }
    });
    (Server(child), format!("http://{address}"), log)
}

#[tokio::test]
async fn nothing_is_lost_when_the_process_is_killed() {
    let (_dir, db) = temp_db();
    killed_and_restarted(db.as_os_str()).await;
}

#[tokio::test]
async fn nothing_is_lost_when_the_process_is_killed_on_postgres() {
    let Some(database) = TestPostgres::create().await else { return };
    killed_and_restarted(database.url.as_ref()).await;
    database.drop().await;
}

/// Keys made by the command, a job created, the server killed, the job
/// finished upstream meanwhile, and found finished and charged after a restart.
async fn killed_and_restarted(db: &OsStr) {
    let sim = frozen_sim().await;
    let output = Command::new(BIN)
        .args(["keys", "create", "kim", "--rpm", "1000", "--database"])
        .arg(db)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("amv_"));

    let (mut first, url) = spawn_server(&sim.base_url(), db);
    let endpoint = format!("{url}/v2/video/generations");
    let http = reqwest::Client::new();
    let created = post(&http, &endpoint, Some(&key), &create_body("kill me")).await;
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.body["id"].as_str().unwrap().to_owned();
    first.kill().unwrap(); // SIGKILL: no shutdown, no flush
    first.wait().unwrap();

    assert!(sim.complete_now(&id));
    // A resumed job keeps its schedule (first poll 85 s after its create by
    // default); a zero first delay has the restarted server poll it at once.
    let (mut second, url) =
        spawn_server_with(&sim.base_url(), db, &["--poll-first-delay".as_ref(), "0".as_ref()]);
    let endpoint = format!("{url}/v2/video/generations");
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let answer = get(&http, &endpoint, Some(&key), Some(&id)).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        if answer.body["status"] == "completed" {
            break answer;
        }
        assert!(Instant::now() < deadline, "the job never finished after the restart");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(done.body["meta"]["usage"]["credits_used"], sim.config().credits_per_job);
    second.kill().unwrap();
    second.wait().unwrap();

    let listed = Command::new(BIN).args(["keys", "list", "--database"]).arg(db).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    assert!(listed.contains("kim") && !listed.contains(&key), "{listed}");
    assert!(listed.contains(&sim.config().credits_per_job.to_string()), "{listed}");
    // Dollars beside credits: 120,000 credits are $0.06.
    assert!(listed.contains("USD USED") && listed.contains("$0.06"), "{listed}");
}

/// A budget can be given in dollars; it is kept as the exact credits, and
/// the admin API shows both.
#[tokio::test]
async fn a_budget_is_given_in_dollars_and_shown_in_both() {
    let (_dir, db) = temp_db();
    let made = Command::new(BIN)
        .args(["keys", "create", "dee", "--budget-usd", "25", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let bad = Command::new(BIN)
        .args(["keys", "create", "eve", "--budget-usd", "0.0000001", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let store = aimlvid_server::store::SqliteStore::open(&db).await.unwrap();
    let keys = aimlvid_server::store::KeyStore::keys(&store).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].limits.credit_budget, Some(50_000_000.0));
    store.close().await;
    let sim = frozen_sim().await;
    let proxy = start_proxy(&sim, &db).await;
    let listed: serde_json::Value = proxy
        .http
        .get(format!("{}/admin/keys", proxy.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed[0]["credit_budget_usd"], "25.00", "{listed}");
    assert_eq!(listed[0]["credits_used_usd"], "0.00", "{listed}");
    proxy.stop().await;
}

#[test]
fn a_webhook_secret_is_printed_once_and_never_listed() {
    let (_dir, db) = temp_db();
    let run = |args: &[&str]| {
        let output = Command::new(BIN).args(args).arg("--database").arg(&db).output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let created = run(&["keys", "create", "hooked", "--webhook-url", "https://hooks.example.com/aimlvid"]);
    let lines: Vec<&str> = created.lines().collect();
    let [key, secret] = lines[..] else { panic!("expected the key, then the secret: {created}") };
    assert!(key.starts_with("amv_") && secret.starts_with("whsec_"), "{created}");

    let listed = run(&["keys", "list"]);
    assert!(listed.contains("https://hooks.example.com/aimlvid"), "{listed}");
    assert!(!listed.contains(secret) && !listed.contains(key), "{listed}");

    // A new URL takes a new secret, printed once; `none` removes the webhook.
    let updated = run(&["keys", "update", "hooked", "--webhook-url", "https://hooks.example.com/v2"]);
    let new_secret = updated.lines().last().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret, "{updated}");
    let removed = run(&["keys", "update", "hooked", "--webhook-url", "none"]);
    assert!(!removed.contains("whsec_") && !removed.contains("hooks.example.com"), "{removed}");

    let refused = Command::new(BIN)
        .args(["keys", "create", "bad", "--webhook-url", "ftp://example.com", "--database"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("webhook URL refused") && said.contains("https://"), "{said}");
}

#[test]
fn a_keys_webhook_format_is_set_listed_and_checked() {
    let (_dir, db) = temp_db();
    let run = |args: &[&str]| Command::new(BIN).args(args).arg("--database").arg(&db).output().unwrap();
    let url = "https://hooks.example.com/openai";
    let created = run(&["keys", "create", "sdk", "--webhook-url", url, "--webhook-format", "openai"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let secret = String::from_utf8(created.stdout).unwrap().lines().nth(1).unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let listed = String::from_utf8(run(&["keys", "list"]).stdout).unwrap();
    assert!(listed.contains(&format!("{url} (openai)")), "{listed}");

    // Back to the default: the secret stays (none is printed), the listing shows the URL alone.
    let updated = run(&["keys", "update", "sdk", "--webhook-format", "aimlvid"]);
    assert!(updated.status.success(), "{}", String::from_utf8_lossy(&updated.stderr));
    let updated = String::from_utf8(updated.stdout).unwrap();
    assert!(
        !updated.contains("whsec_") && updated.contains(url) && !updated.contains("(openai)"),
        "{updated}"
    );

    let refused = run(&["keys", "update", "sdk", "--webhook-format", "svix"]);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("aimlvid or openai") && said.contains("svix"), "{said}");
}

/// A configuration error stops the server with one line saying what is
/// wrong, even with `RUST_BACKTRACE=1` in its environment.
#[test]
fn a_start_up_error_is_one_line_without_a_backtrace() {
    let (_dir, db) = temp_db();
    let output = Command::new(BIN)
        .args(["serve", "--database"])
        .arg(&db)
        .env("AIMLAPI_API_KEY", "any")
        .env("AIMLVID_ADMIN_TOKEN", "too-short")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let said = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{said}");
    assert!(lines[0].starts_with("error: ") && lines[0].contains("too short"), "{said}");
    assert!(!said.to_lowercase().contains("backtrace") && !said.contains("too-short"), "{said}");
}

#[tokio::test]
async fn serve_takes_its_certificate_and_key_from_flags() {
    let sim = frozen_sim().await;
    let (dir, db) = temp_db();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let flags = [
        std::ffi::OsStr::new("--tls-cert"),
        cert.as_os_str(),
        std::ffi::OsStr::new("--tls-key"),
        key.as_os_str(),
    ];
    let (mut server, url) = spawn_server_with(&sim.base_url(), db.as_os_str(), &flags);

    let address: std::net::SocketAddr = url.strip_prefix("http://").unwrap().parse().unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap()])
        .resolve("localhost", address)
        .build()
        .unwrap();
    let health = http.get(format!("https://localhost:{}/healthz", address.port())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    server.kill().unwrap();
    server.wait().unwrap();

    // Half a pair is refused before anything starts.
    let output = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--database")
        .arg(&db)
        .env("AIMLAPI_API_KEY", aimlvid_sim::DEFAULT_API_KEY)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--tls-key"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_request_id() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    // Access lines are debug-level: off by default, on when asked for.
    let (mut server, url, log) = spawn_server_logged(
        &sim.base_url(),
        db.as_os_str(),
        &["--log-format".as_ref(), "json".as_ref()],
        "info,aimlvid_server=debug,tower_http=debug",
    );
    let http = reqwest::Client::new();
    let answer =
        http.get(format!("{url}/readyz")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(answer.status(), 200);

    // The access log line of that request names its id in its span.
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let line =
            log.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("no access log line");
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(json["level"].is_string() && json["timestamp"].is_string(), "{line}");
        if json["span"]["request_id"] == "trace-me-42" && json["status"] == 200 {
            break json;
        }
    };
    assert_eq!(line["span"]["path"], "/readyz");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_run_has_its_jobs_taken_over_and_each_charged_once() {
    let Some(database) = TestPostgres::create().await else { return };
    let db: &OsStr = database.url.as_ref();
    let sim = frozen_sim().await;
    let output = Command::new(BIN)
        .args(["keys", "create", "team", "--max-unfinished", "unlimited", "--database"])
        .arg(db)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let flags: Vec<&OsStr> = [
        "--lease-secs",
        "3",
        "--poll-first-delay",
        "0",
        "--poll-interval",
        "0.2",
        "--poll-max-interval",
        "1",
    ]
    .iter()
    .map(OsStr::new)
    .collect();
    let (mut doomed, url_a) = spawn_server_with(&sim.base_url(), db, &flags);
    let (mut survivor, url_b) = spawn_server_with(&sim.base_url(), db, &flags);
    let (on_a, on_b) = (format!("{url_a}/v2/video/generations"), format!("{url_b}/v2/video/generations"));
    let http = reqwest::Client::new();

    let mut ids = Vec::new();
    for n in 0..20 {
        let created = post(&http, &on_a, Some(&key), &create_body(&format!("job {n}"))).await;
        assert_eq!(created.status, 200, "{created:?}");
        ids.push(created.body["id"].as_str().unwrap().to_owned());
    }
    // Created on one replica, read on the other (which now holds them in memory).
    let mut seen: HashMap<String, String> = HashMap::new();
    let mut read_on_b = |id: String, answer: Answer| {
        assert_eq!(answer.status, 200, "{answer:?}");
        let status = answer.body["status"].as_str().unwrap().to_owned();
        let before = seen.insert(id.clone(), status.clone());
        assert!(
            !(before.as_deref() == Some("completed") && status != "completed"),
            "{id} went back from completed to {status}"
        );
        status
    };
    for id in &ids {
        let status = read_on_b(id.clone(), get(&http, &on_b, Some(&key), Some(id)).await);
        assert_eq!(status, "queued");
    }
    // Half end while their replica lives: it polls them, and the other
    // replica, which does not, shows the change it was told of.
    let (early, late) = ids.split_at(10);
    for id in early {
        assert!(sim.complete_now(id));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for id in early {
        while read_on_b(id.clone(), get(&http, &on_b, Some(&key), Some(id)).await) != "completed" {
            assert!(Instant::now() < deadline, "{id}'s end never reached the other replica");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    doomed.kill().unwrap(); // SIGKILL: its leases are never given up
    doomed.wait().unwrap();
    for id in late {
        assert!(sim.complete_now(id));
    }

    // Within a lease (3 s) and a few polls, the survivor follows the rest to their end.
    let deadline = Instant::now() + Duration::from_secs(30);
    for id in &ids {
        while read_on_b(id.clone(), get(&http, &on_b, Some(&key), Some(id)).await) != "completed" {
            assert!(Instant::now() < deadline, "{id} was never taken over");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(sim.stats().jobs_created, 20, "each job created upstream once");
    survivor.kill().unwrap();
    survivor.wait().unwrap();
    let listed = Command::new(BIN).args(["keys", "list", "--database"]).arg(db).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let charged = (20.0 * sim.config().credits_per_job).to_string();
    assert!(listed.contains(&charged), "each job charged once, {charged} in all: {listed}");
    database.drop().await;
}

/// A status's place in a job's life: a reader must never see it fall.
fn rank(status: &str) -> u8 {
    match status {
        "queued" => 0,
        "generating" => 1,
        _ => 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_a_thousand_jobs_and_lose_none_when_one_is_killed() {
    let Some(database) = TestPostgres::create().await else { return };
    let db: &OsStr = database.url.as_ref();
    // Jobs queue for 4 s and generate for 40 s, simulated, at 10×: about 4.4 s each.
    let sim = aimlvid_sim::Simulator::start(aimlvid_sim::SimConfig {
        time_scale: 10.0,
        queue_time: aimlvid_sim::Spread::Fixed(Duration::from_secs(4)),
        generation_time: aimlvid_sim::Spread::Fixed(Duration::from_secs(40)),
        ..aimlvid_sim::SimConfig::default()
    })
    .await
    .unwrap();
    let (hook, deliveries) = delivery_counter().await;
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("server.toml");
    std::fs::write(&config, "webhook_allow_private_targets = true\nwebhook_allow_plain_http = true\n")
        .unwrap();
    let output = Command::new(BIN)
        .args([
            "keys",
            "create",
            "team",
            "--max-unfinished",
            "unlimited",
            "--webhook-url",
            &hook,
            "--database",
        ])
        .arg(db)
        // The same rules as the servers': this receiver is on loopback, over http.
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let key = String::from_utf8(output.stdout).unwrap().lines().next().unwrap().to_owned();
    let flags: Vec<&OsStr> = [
        "--lease-secs",
        "3",
        "--poll-first-delay",
        "1",
        "--poll-interval",
        "0.5",
        "--poll-max-interval",
        "1",
        "--config",
    ]
    .iter()
    .map(OsStr::new)
    .chain([config.as_os_str()])
    .collect();
    let mut servers: Vec<(Server, String)> = (0..3)
        .map(|_| {
            let (child, url) = spawn_server_with(&sim.base_url(), db, &flags);
            (child, format!("{url}/v2/video/generations"))
        })
        .collect();
    let endpoints: Vec<String> = servers.iter().map(|(_, e)| e.clone()).collect();
    let http = reqwest::Client::new();

    // A thousand creates, spread over the three.
    let ids: Vec<String> = futures_util::stream::iter(0..1000)
        .map(|n| {
            let (http, endpoint, key) = (http.clone(), endpoints[n % 3].clone(), key.clone());
            async move {
                let created = post(&http, &endpoint, Some(&key), &create_body(&format!("job {n}"))).await;
                assert_eq!(created.status, 200, "{created:?}");
                created.body["id"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;

    // Readers on every replica, each checking that no job it reads goes back.
    let stop_reading = tokio_util::sync::CancellationToken::new();
    let readers: Vec<_> = endpoints
        .iter()
        .map(|endpoint| {
            let (http, endpoint, key, ids, stop) =
                (http.clone(), endpoint.clone(), key.clone(), ids.clone(), stop_reading.clone());
            tokio::spawn(async move {
                let mut last: HashMap<String, u8> = HashMap::new();
                let mut reads = 0u32;
                while !stop.is_cancelled() {
                    let id = &ids[fastrand::usize(..ids.len())];
                    // The killed replica stops answering; that is not a job going back.
                    let Ok(answer) =
                        http.get(&endpoint).query(&[("generation_id", id)]).bearer_auth(&key).send().await
                    else {
                        continue;
                    };
                    let Ok(body) = answer.json::<serde_json::Value>().await else { continue };
                    let now = rank(body["status"].as_str().unwrap_or("queued"));
                    let before = last.insert(id.clone(), now).unwrap_or(0);
                    assert!(now >= before, "{id} went back on {endpoint}: {before} then {now}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();

    // Mid-run, one replica dies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut doomed, _) = servers.remove(0);
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    // Every job ends, read completed on a survivor.
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in &ids {
        loop {
            let read = get(&http, &servers[0].1, Some(&key), Some(id)).await;
            if read.body["status"] == "completed" {
                break;
            }
            assert!(Instant::now() < deadline, "{id} never completed: {read:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop_reading.cancel();
    for reader in readers {
        assert!(reader.await.unwrap() > 0, "a reader never read");
    }
    assert_eq!(sim.stats().jobs_created, 1000, "each job created upstream once");
    // A delivery the killed replica had claimed is made again once its claim
    // lapses (the 10 s attempt timeout and 15 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let delivered = deliveries.lock().unwrap().len();
        if delivered == 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "{delivered} of 1000 jobs announced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (mut child, _) in servers {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let listed = Command::new(BIN).args(["keys", "list", "--database"]).arg(db).output().unwrap();
    let listed = String::from_utf8(listed.stdout).unwrap();
    let charged = (1000.0 * sim.config().credits_per_job).to_string();
    assert!(listed.contains(&charged), "each job charged once, {charged} in all: {listed}");
    database.drop().await;
}

/// Warnings and errors are written as they happen, not from a buffer: the
/// line saying why a create failed is in the log file even when the
/// process is killed the moment its answer arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_line_is_in_the_log_file_when_the_process_is_killed_right_after() {
    let sim = frozen_sim().await;
    let (dir, db) = temp_db();
    let issued = Command::new(BIN).args(["keys", "create", "mo", "--database"]).arg(&db).output().unwrap();
    let key = String::from_utf8(issued.stdout).unwrap().trim().to_owned();
    let log_path = dir.path().join("server.log");
    let mut server = Server(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--database"])
            .arg(&db)
            // The upstream refuses this key: the create's answer follows an error line.
            .env("AIMLAPI_API_KEY", "not-the-simulator's-key")
            .env("AIMLAPI_BASE_URL", sim.base_url())
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let address = eventually("the server never said its address", || async {
        let log = std::fs::read_to_string(&log_path).ok()?;
        let rest = log.split("address=").nth(1)?;
        Some(rest.split_whitespace().next()?.to_owned())
    })
    .await;
    let http = reqwest::Client::new();
    let refused =
        post(&http, &format!("http://{address}/v2/video/generations"), Some(&key), &create_body("x")).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    server.kill().unwrap();
    server.wait().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("refuses this server's API key"), "{log}");
}

/// A reader that stops reading (`keys list | head -1`) ends the listing
/// quietly: no panic, no backtrace, success.
#[test]
fn a_listing_whose_reader_went_away_ends_quietly() {
    let (_dir, db) = temp_db();
    for n in 0..3 {
        let made =
            Command::new(BIN).args(["keys", "create", &format!("k{n}"), "--database"]).arg(&db).output();
        assert!(made.unwrap().status.success());
    }
    let mut listing = Command::new(BIN)
        .args(["keys", "list", "--database"])
        .arg(&db)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the listing is written: every write fails with a broken pipe.
    drop(listing.stdout.take());
    let output = listing.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success() && !said.contains("panicked"), "{:?}: {said}", output.status);
}
