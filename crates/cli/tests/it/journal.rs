//! The journal: a killed or interrupted command never loses a paid job, and
//! a partial download resumes.

use std::path::Path;

use aimlvid_sim::{Fault, Route, SimConfig};
use predicates::prelude::*;

use crate::{Env, assert_result_file, frozen, interrupt, quick, stderr, stdout};

#[test]
fn a_killed_extend_is_listed_and_resume_finishes_it() {
    let env = Env::with(frozen());
    env.clip();
    let mut child = env.spawn(&["extend", "clip.mp4", "-p", "Survive the kill"]);
    let records = env.wait_for_ids(1, &mut child);
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();
    let id = records[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(records[0]["state"], "queued");

    let out = env.cmd().arg("jobs").output().unwrap();
    assert!(out.status.success());
    let listing = stdout(&out);
    let row = listing.lines().find(|l| l.contains(&id)).unwrap_or_else(|| panic!("{id} not in {listing}"));
    assert!(row.contains("queued") && row.contains("Survive the kill"), "{row}");

    assert!(env.sim.complete_now(&id));
    let out = env.cmd().arg("resume").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = env.path("clip-extended.mp4");
    assert_eq!(stdout(&out).trim(), dest.display().to_string());
    assert_result_file(&dest);
    assert_eq!(env.records()[0]["state"], "downloaded");
    assert_eq!(env.sim.stats().jobs_created, 1, "resume never creates the job again");

    // Nothing is left to do.
    env.cmd().arg("resume").assert().success().stderr(predicate::str::contains("nothing to resume"));
}

#[test]
fn ctrl_c_prints_the_command_that_resumes_the_job() {
    let env = Env::with(frozen());
    env.clip();
    let mut child = env.spawn(&["extend", "clip.mp4", "-p", "x"]);
    let records = env.wait_for_ids(1, &mut child);
    let id = records[0]["id"].as_str().unwrap().to_owned();
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    let dest = env.path("clip-extended.mp4");
    let expected =
        format!("generation {id} is still running; resume with: aimlvid wait {id} -o {}", dest.display());
    let line = err.lines().last().unwrap();
    assert!(line.starts_with(&expected), "{err}");

    // The printed command works as printed.
    env.sim.complete_now(&id);
    let args: Vec<&str> = line.split_once("resume with: aimlvid ").unwrap().1.split(' ').collect();
    env.cmd().env_remove("AIMLAPI_BASE_URL").args(&args).assert().success();
    assert_result_file(&dest);
}

#[test]
fn a_partial_download_resumes_on_the_next_command() {
    let size: u64 = 4 * 1024 * 1024;
    let env = Env::with(SimConfig { result_size: Some(size), ..frozen() });
    env.clip();
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "x", "--no-wait", "-q"]).output().unwrap();
    let id = stdout(&out).trim().to_owned();
    env.sim.complete_now(&id);
    // The first try is cut short; the next ones fail without a byte (the
    // client tries 6 times after the last that made progress).
    env.sim.inject(Route::Download, Fault::TruncatedBody, 1);
    env.sim.inject(Route::Download, Fault::Status(503), 6);
    let out = env.cmd().args(["wait", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let dest = env.path("clip-extended.mp4");
    let part = aimlvid::partial_path(&dest);
    assert!(!dest.exists(), "never half-written");
    let kept = std::fs::metadata(&part).unwrap().len();
    assert!(kept > 0 && kept < size, "{kept}");
    assert_eq!(env.records()[0]["state"], "downloading");

    env.cmd().args(["download", &id, "-o", "clip-extended.mp4"]).assert().success();
    let bytes = std::fs::read(&dest).unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert!(bytes.starts_with(aimlvid_sim::SAMPLE_RESULT));
    assert!(!part.exists());
    let last = env.sim.requests().into_iter().rfind(|r| r.route == Route::Download).unwrap();
    assert_eq!(last.range, Some(format!("bytes={kept}-")), "the download resumed where it stopped");
}

#[test]
fn resume_finishes_an_interrupted_chain() {
    let env = Env::with(frozen());
    env.clip();
    let mut child = env.spawn(&["extend", "clip.mp4", "-p", "one", "-p", "two", "-o", "story.mp4"]);
    let first = env.wait_for_ids(1, &mut child)[0]["id"].as_str().unwrap().to_owned();
    child.kill().unwrap();
    child.wait().unwrap();

    env.sim.complete_now(&first);
    let mut resume = env.spawn(&["resume"]);
    // Resume finishes step 1, then creates step 2 from its result.
    let records = env.wait_for_ids(2, &mut resume);
    let second = records[1]["id"].as_str().unwrap().to_owned();
    assert_eq!(records[1]["chain"]["parent"], first.as_str());
    env.sim.complete_now(&second);
    let out = resume.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_result_file(&env.path("story.step1.mp4"));
    assert_result_file(&env.path("story.mp4"));
    assert_eq!(env.sim.stats().jobs_created, 2);
    assert!(env.records().iter().all(|r| r["state"] == "downloaded"));
}

#[test]
fn simulated_jobs_are_journaled_but_not_resumed() {
    let env = Env::new();
    let out = env
        .cmd()
        .env_remove("AIMLAPI_API_KEY")
        .env_remove("AIMLAPI_BASE_URL")
        .env_remove("AIMLVID_TIME_SCALE")
        .args(["extend", "--simulate", "-p", "The camera pulls back"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_result_file(&env.path("extended.mp4"));
    assert!(env.sim.requests().is_empty(), "the in-process simulator did the work");
    let record = &env.records()[0];
    assert_eq!(record["simulated"], true);
    assert_eq!(record["input"], "(the simulator's sample clip)");

    // A simulated job left unfinished is skipped, with a note.
    let mut record = record.clone();
    record["state"] = "generating".into();
    let file = env.journal_dir().join(format!("{}.json", record["key"].as_str().unwrap()));
    std::fs::write(file, serde_json::to_vec(&record).unwrap()).unwrap();
    env.cmd()
        .arg("resume")
        .assert()
        .success()
        .stderr(predicate::str::contains("skipping 1 simulated job(s)"));
    // Nor is it looked up on a real server, by `status` as by `wait`.
    let id = record["id"].as_str().unwrap().to_owned();
    for command in ["status", "wait"] {
        env.cmd()
            .args([command, &id])
            .assert()
            .code(4)
            .stderr(predicate::str::contains("ran on the in-process simulator"));
    }
    assert!(env.sim.requests().is_empty(), "nothing was asked of any server");
}

#[test]
fn ctrl_c_during_a_create_waits_for_its_answer() {
    let env = Env::with(frozen());
    env.clip();
    env.sim.inject(Route::Create, Fault::Latency(std::time::Duration::from_millis(800)), 1);
    let child = env.spawn(&["extend", "clip.mp4", "-p", "x"]);
    // Once the request has reached the simulator, aimlvid is listening for Ctrl-C.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !env.sim.requests().iter().any(|r| r.route == Route::Create) {
        assert!(std::time::Instant::now() < deadline, "the create never arrived");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(env.records()[0]["state"], "creating", "journaled before it was sent");
    interrupt(&child);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("finishing the create request so that its job is not lost"), "{err}");
    let id = crate::only_id(&env);
    assert!(
        err.contains(&format!("generation {id} is still running; resume with: aimlvid wait {id}")),
        "{err}"
    );
    assert_eq!(env.records()[0]["state"], "queued");
}

#[test]
fn a_job_another_process_is_following_is_left_to_it() {
    let env = Env::with(frozen());
    let id = completed_job(&env);
    let key = env.records()[0]["key"].as_str().unwrap().to_owned();
    // Another process follows the job: it holds the record's lock.
    let locks = env.journal_dir().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let held = std::fs::File::create(locks.join(format!("{key}.lock"))).unwrap();
    held.try_lock().unwrap();

    let out = env.cmd().args(["resume"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("being followed by another aimlvid process"), "{}", stderr(&out));
    let out = env.cmd().args(["wait", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let dest = env.path("clip-extended.mp4");
    assert!(!dest.exists() && !aimlvid::partial_path(&dest).exists(), "nothing touched its download");
    assert_eq!(env.sim.stats().download_requests, 0);

    drop(held);
    env.cmd().args(["resume"]).assert().success();
    assert_result_file(&dest);
}

#[test]
fn resume_follows_a_job_on_the_server_that_created_it_whatever_the_environment_says() {
    let env = Env::with(frozen());
    completed_job(&env);
    // The environment now names another server, where this job does not exist.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let elsewhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);

    let out = env.cmd().env("AIMLAPI_BASE_URL", &elsewhere).args(["resume"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_result_file(&env.path("clip-extended.mp4"));
}

/// A job made with `extend --no-wait` and then completed upstream, not
/// yet followed by anyone; its id.
fn completed_job(env: &Env) -> String {
    env.clip();
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "x", "--no-wait", "-q"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert!(env.sim.complete_now(&id));
    id
}

#[test]
fn jobs_rm_refuses_live_records_without_force_and_prune_keeps_them() {
    let env = Env::with(frozen());
    env.clip();
    // One job downloaded, one still queued.
    let mut child = env.spawn(&["extend", "clip.mp4", "-p", "Done", "-o", "done.mp4"]);
    let done = env.wait_for_ids(1, &mut child)[0]["id"].as_str().unwrap().to_owned();
    assert!(env.sim.complete_now(&done));
    assert!(child.wait().unwrap().success());
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "Running", "--no-wait"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let running = stdout(&out).trim().to_owned();
    assert_eq!(env.records().len(), 2);

    // A live job's record is kept unless forced: resume needs it.
    env.cmd()
        .args(["jobs", "rm", &running])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is `queued`: it may still be running; nothing was removed"));
    env.cmd().args(["jobs", "rm", "no-such-record"]).assert().code(2);
    assert_eq!(env.records().len(), 2);

    // Prune removes only the finished one; a dry run removes nothing.
    env.cmd()
        .args(["jobs", "prune", "--dry-run"])
        .assert()
        .success()
        .stderr(predicate::str::contains("would remove 1"));
    assert_eq!(env.records().len(), 2);
    env.cmd()
        .args(["jobs", "prune", "--older-than", "1h"])
        .assert()
        .success()
        .stderr(predicate::str::contains("removed 0"));
    env.cmd().args(["jobs", "prune"]).assert().success();
    let left = env.records();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], running.as_str());

    env.cmd().args(["jobs", "rm", "--force", &running]).assert().success();
    assert!(env.records().is_empty());
    assert!(env.path("done.mp4").exists(), "pruning never touches results");
}

#[test]
fn a_record_followed_by_another_process_is_not_removed() {
    let env = Env::with(frozen());
    env.clip();
    let mut child = env.spawn(&["extend", "clip.mp4", "-p", "Busy"]);
    let record = env.wait_for_ids(1, &mut child).remove(0);
    let id = record["id"].as_str().unwrap().to_owned();
    env.wait_until_locked(record["key"].as_str().unwrap());
    let out = env.cmd().args(["jobs", "rm", "--force", &id]).output().unwrap();
    assert!(stderr(&out).contains("in use by another aimlvid process"), "{}", stderr(&out));
    assert_eq!(env.records().len(), 1);
    assert!(env.sim.complete_now(&id));
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_failed_chain_step_is_run_again_once_and_the_chain_finishes() {
    let env = Env::with(frozen());
    env.clip();
    let mut child = env.spawn(&["extend", "clip.mp4", "-p", "one", "-p", "two", "-o", "story.mp4"]);
    let first = env.wait_for_ids(1, &mut child)[0]["id"].as_str().unwrap().to_owned();
    env.sim.complete_now(&first);
    let second = env.wait_for_ids(2, &mut child)[1]["id"].as_str().unwrap().to_owned();
    assert!(env.sim.fail_now(&second));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));

    // A plain resume leaves failed jobs alone.
    env.cmd().arg("resume").assert().success().stderr(predicate::str::contains("nothing to resume"));
    assert_eq!(env.sim.stats().jobs_created, 2);

    let mut retry = env.spawn(&["resume", "--retry-failed"]);
    let records = env.wait_for_ids(3, &mut retry);
    let again = &records[2];
    assert_eq!(again["chain"]["step"], 2);
    assert_eq!(again["chain"]["parent"], first.as_str(), "the step's input is step 1's result again");
    assert_eq!(again["prompt"], "two");
    env.sim.complete_now(again["id"].as_str().unwrap());
    let out = retry.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_result_file(&env.path("story.mp4"));
    assert_eq!(env.sim.stats().jobs_created, 3);

    // Retried once: the failed record is superseded, nothing is paid again.
    env.cmd().args(["resume", "--retry-failed"]).assert().success();
    assert_eq!(env.sim.stats().jobs_created, 3);
}

#[test]
fn a_create_killed_in_flight_is_looked_up_by_resume_and_followed() {
    let env = Env::new();
    env.clip();
    // The job is accepted (and billed), but its answer is held back until
    // the process is killed: the journal keeps only a `creating` record.
    env.sim.inject(
        Route::Create,
        Fault::AfterAccept(Box::new(Fault::Latency(std::time::Duration::from_secs(60)))),
        1,
    );
    let mut child = env.spawn(&["extend", "clip.mp4", "-p", "Killed"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.sim.stats().jobs_created == 0 {
        assert!(std::time::Instant::now() < deadline, "the create was never accepted");
        assert!(child.try_wait().unwrap().is_none(), "aimlvid exited before it was killed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let key = env.records()[0]["key"].as_str().unwrap().to_owned();
    // While the create is in flight, its process holds the record: resume
    // leaves it alone and asks the API nothing about it.
    env.wait_until_locked(&key);
    let out = env.cmd().arg("resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("being created by another aimlvid process"), "{}", stderr(&out));
    assert_eq!(env.records()[0]["state"], "creating");

    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(env.records()[0]["state"], "creating");
    let out = env.cmd().args(["resume", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(result["recovered"][0]["journal_key"], key.as_str(), "{result}");
    assert_eq!(result["completed"].as_array().unwrap().len(), 1, "{result}");
    assert_eq!(env.sim.stats().jobs_created, 1, "found, not created again");
    let record = &env.records()[0];
    assert_eq!(record["state"], "downloaded");
    assert_result_file(Path::new(record["output"].as_str().unwrap()));
}

#[test]
fn a_killed_create_the_logs_do_not_show_yet_is_said_and_kept() {
    let env = Env::with(SimConfig { logs_delay: std::time::Duration::from_secs(3600 * 1000), ..quick() });
    env.clip();
    env.sim.inject(
        Route::Create,
        Fault::AfterAccept(Box::new(Fault::Latency(std::time::Duration::from_secs(60)))),
        1,
    );
    let mut child = env.spawn(&["extend", "clip.mp4", "-p", "Killed"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while env.sim.stats().jobs_created == 0 {
        assert!(std::time::Instant::now() < deadline, "the create was never accepted");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let out = env.cmd().arg("resume").output().unwrap();
    assert_eq!(out.status.code(), Some(8), "still unknown: not to be created again");
    assert!(stderr(&out).contains("not in the API's request logs yet"), "{}", stderr(&out));
    assert_eq!(env.records()[0]["state"], "creating");
    assert_eq!(env.sim.stats().create_requests, 1);
}

#[test]
fn waiting_for_an_id_the_api_does_not_know_leaves_no_record() {
    let env = Env::new();
    let out = env.cmd().args(["wait", "no-such-generation"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("generation no-such-generation not found (404"), "{}", stderr(&out));
    assert!(env.records().is_empty(), "{:#?}", env.records());
    // So nothing lingers for `resume` to fail on.
    let out = env.cmd().arg("resume").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to resume"), "{}", stderr(&out));
}
