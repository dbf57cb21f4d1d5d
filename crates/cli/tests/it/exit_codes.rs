//! Each documented exit code, earned the way a user would earn it.

use std::path::Path;
use std::time::Duration;

use aimlvid_sim::{Fault, Route, SimConfig, Spread};
use predicates::prelude::*;

use crate::{Env, assert_result_file, quick, stderr, stdout};

#[test]
fn a_refused_key_or_no_credits_exit_3() {
    let env = Env::new();
    env.clip();
    env.cmd()
        .env("AIMLAPI_API_KEY", "sk-wrong")
        .args(["extend", "clip.mp4", "-p", "x"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("the API refused the key (401"));
    // A refused create leaves no job, so nothing stays in the journal.
    assert!(env.records().is_empty());

    let broke = Env::with(SimConfig { credit_balance: Some(0.0), ..quick() });
    broke.clip();
    broke
        .cmd()
        .args(["extend", "clip.mp4", "-p", "x"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("out of credits (403"));
}

#[test]
fn an_invalid_request_or_unknown_id_exits_4() {
    let env = Env::new();
    env.cmd()
        .args(["status", "no-such-generation"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("generation no-such-generation not found (404"));
    env.sim.inject(Route::Create, Fault::Status(400), 1);
    env.clip();
    env.cmd()
        .args(["extend", "clip.mp4", "-p", "x"])
        .assert()
        .code(4)
        .stderr(predicate::str::contains("invalid request (400"));
    assert!(env.records().is_empty());
}

#[test]
fn a_failed_generation_exits_5_and_is_journaled() {
    let env = Env::with(SimConfig { failure_rate: 1.0, ..quick() });
    env.clip();
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains(" failed: "), "{}", stderr(&out));
    let record = &env.records()[0];
    assert_eq!(record["state"], "failed");
    assert!(record["error"].as_str().unwrap().contains("failed"), "{record}");
    assert!(!env.path("clip-extended.mp4").exists());
}

#[test]
fn a_wait_past_its_deadline_exits_6_and_the_job_stays_resumable() {
    // The job takes an hour (3.6 s real); the client's 30-minute deadline,
    // scaled 10 000 times, passes after 0.18 s.
    let env = Env::with(SimConfig {
        generation_time: Spread::Fixed(std::time::Duration::from_secs(3600)),
        ..quick()
    });
    env.clip();
    let out = env
        .cmd()
        .env("AIMLVID_TIME_SCALE", "10000")
        .args(["extend", "clip.mp4", "-p", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains("it keeps running upstream"), "{}", stderr(&out));
    assert_eq!(env.records()[0]["state"], "generating");
}

#[test]
fn a_lost_create_answer_names_its_kind_and_journal_record_in_json() {
    let env = Env::new();
    env.clip();
    env.sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "Find me", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(result["kind"], "create_outcome_unknown", "{result}");
    assert_eq!(result["exit_code"], 8);
    assert_eq!(result["journal_key"], env.records()[0]["key"], "{result}");
}

#[test]
fn a_server_that_is_down_fails_fast_with_network_trouble_7() {
    // Nothing listens there: the connection is refused, and said so at
    // once (in real time: no AIMLVID_TIME_SCALE), not after the back-off.
    let env = Env::new();
    env.clip();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = closed.local_addr().unwrap();
    drop(closed);
    let started = std::time::Instant::now();
    let out = env
        .cmd()
        .env_remove("AIMLVID_TIME_SCALE")
        .args(["--base-url", &format!("http://{address}"), "extend", "clip.mp4", "-p", "x"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(7));
    let err = crate::stderr(&out);
    assert_eq!(
        err.lines().last().unwrap(),
        format!(
            "error: cannot connect to {address}; check that the server is running, and the base URL \
             (--base-url, AIMLAPI_BASE_URL or the config file's base_url) (cause: Connection refused (os error 111))"
        )
    );
    assert!(!err.contains("WARN"), "log lines only with -v: {err}");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
    assert!(env.records().is_empty(), "nothing was created");
}

#[test]
fn a_create_whose_answer_is_lost_exits_8_and_stays_findable() {
    let env = Env::new();
    env.clip();
    env.sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::DropConnection)), 1);
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "Find me"]).output().unwrap();
    assert_eq!(out.status.code(), Some(8), "not 7, which a retry loop would retry: {}", stderr(&out));
    assert!(stderr(&out).contains("the create request may have been accepted"), "{}", stderr(&out));
    // Billed upstream, never repeated, and recorded with what was sent.
    assert_eq!(env.sim.stats().jobs_created, 1);
    assert_eq!(env.sim.stats().create_requests, 1);
    let record = &env.records()[0];
    assert_eq!(record["state"], "unknown");
    assert_eq!(record["prompt"], "Find me");
    assert_eq!(record["input"], env.path("clip.mp4").display().to_string());
    env.cmd()
        .arg("jobs")
        .assert()
        .success()
        .stdout(predicate::str::contains("unknown").and(predicate::str::contains("may exist and be billed")));
    // `resume` finds it in the API's request logs by its client request
    // id (the journal key), then follows and downloads it: one paid job.
    assert_eq!(record["client_request_id"], record["key"]);
    let out = env.cmd().args(["resume", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(result["recovered"][0]["journal_key"], record["key"], "{result}");
    assert_eq!(result["completed"].as_array().unwrap().len(), 1, "{result}");
    assert_eq!(env.sim.stats().jobs_created, 1, "recovered, not created again");
    let record = &env.records()[0];
    assert_eq!(record["state"], "downloaded");
    assert_result_file(Path::new(record["output"].as_str().unwrap()));
}

#[test]
fn a_lost_create_missing_from_lagging_logs_stays_unknown_and_resume_exits_8() {
    let env = Env::with(SimConfig { logs_delay: Duration::from_secs(3600 * 1000), ..quick() });
    env.clip();
    env.sim.inject(Route::Create, Fault::AfterAccept(Box::new(Fault::Status(502))), 1);
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "Lagging"]).output().unwrap();
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let out = env.cmd().arg("resume").output().unwrap();
    assert_eq!(out.status.code(), Some(8), "still unknown: not to be created again");
    assert!(stderr(&out).contains("not in the API's request logs yet"), "{}", stderr(&out));
    assert_eq!(env.records()[0]["state"], "unknown");
    assert_eq!(env.sim.stats().jobs_created, 1);
}

#[test]
fn retries_are_said_on_the_progress_lines_and_logged_only_with_v() {
    let env = Env::new();
    env.sim.inject(Route::Create, Fault::RateLimited { retry_after_secs: 1 }, 1);
    env.sim.inject(Route::Poll, Fault::Status(503), 1);
    let args = ["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x"];
    let out = env.cmd().args(args).output().unwrap();
    assert!(out.status.success(), "{}", crate::stderr(&out));
    let err = crate::stderr(&out);
    assert!(err.contains("create: the API is busy (HTTP 429); retrying\n"), "{err}");
    assert!(err.contains("poll: the API failed (HTTP 503); retrying\n"), "{err}");
    assert!(!err.contains("WARN"), "{err}");

    env.sim.inject(Route::Create, Fault::RateLimited { retry_after_secs: 1 }, 1);
    let out = env.cmd().args(args).args(["--force", "-v"]).output().unwrap();
    let verbose = crate::stderr(&out);
    assert!(verbose.contains("WARN") && verbose.contains("create not accepted; retrying"), "{verbose}");
}
