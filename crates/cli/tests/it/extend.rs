//! `aimlvid extend`, `status`, `wait` and `download` doing their jobs.

use predicates::prelude::*;

use crate::{Env, assert_result_file, only_id, stderr, stdout};

#[test]
fn extend_writes_the_result_and_prints_its_path() {
    let env = Env::new();
    let clip = env.clip();
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "The raccoon looks up"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let expected = env.path("clip-extended.mp4");
    assert_eq!(stdout(&out).trim(), expected.display().to_string());
    assert_result_file(&expected);
    // Without a terminal: plain lines, no animation, then the summary.
    let err = stderr(&out);
    assert!(err.contains("created generation "), "{err}");
    assert!(err.contains("  completed  "), "{err}");
    // The final line, credits with their dollars beside them.
    let last = err.lines().last().unwrap();
    let id = only_id(&env);
    let (took, rest) = last.strip_prefix("done in ").and_then(|l| l.split_once(" · ")).expect(last);
    assert!(took.ends_with('s') || took.ends_with("ms"), "{last:?}");
    let (size, generation) =
        rest.strip_prefix("120,000 credits ($0.06) used · ").and_then(|l| l.split_once(" · ")).expect(last);
    assert!(size.ends_with("KiB"), "{last:?}");
    assert_eq!(generation, format!("generation {id}"));
    assert!(!err.contains('\r'), "no redraws without a terminal: {err:?}");

    let id = only_id(&env);
    let record = &env.records()[0];
    assert_eq!(record["state"], "downloaded");
    assert_eq!(record["input"], clip.display().to_string());
    assert_eq!(record["prompt"], "The raccoon looks up");
    assert_eq!(record["output"], expected.display().to_string());
    let job = env.sim.job(&id).unwrap();
    assert_eq!(job.model, "google/veo3-1-fast-extend-video");
    assert_eq!(env.sim.stats().jobs_created, 1);
}

#[test]
fn a_generation_with_several_videos_downloads_each_and_says_so() {
    let env = Env::with(aimlvid_sim::SimConfig { results_per_job: Some(2), ..crate::quick() });
    env.clip();
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "Twice"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_result_file(&env.path("clip-extended.mp4"));
    assert_result_file(&env.path("clip-extended-2.mp4"));
    let err = stderr(&out);
    let (first, second) = (env.path("clip-extended.mp4"), env.path("clip-extended-2.mp4"));
    let said = format!("made 2 videos: {}, {}", first.display(), second.display());
    assert!(err.contains(&said), "{err}");
    assert_eq!(env.records()[0]["bytes"], 2 * std::fs::metadata(&first).unwrap().len());
    let id = only_id(&env);
    let status = env.cmd().args(["--json", "status", &id]).output().unwrap();
    let result: serde_json::Value = serde_json::from_str(stdout(&status).trim()).unwrap();
    assert_eq!(result["video_urls"].as_array().map(Vec::len), Some(2), "{result}");
}

#[test]
fn every_documented_option_is_sent() {
    let env = Env::new();
    env.clip();
    env.cmd()
        .args(["extend", "clip.mp4", "-p", "Add an owl", "-o", "owl.mp4", "--model", "standard"])
        .args(["--aspect-ratio", "9:16", "--duration", "7", "--resolution", "720p"])
        .args(["--no-audio", "--auto-fix", "--provider", "fal", "-q"])
        .assert()
        .success()
        .stdout(predicate::str::ends_with("owl.mp4\n"))
        .stderr("");
    let request = env.sim.job(&only_id(&env)).unwrap().request;
    assert_eq!(request["model"], "google/veo3-1-extend-video");
    assert_eq!(request["prompt"], "Add an owl");
    assert_eq!(request["aspect_ratio"], "9:16");
    assert_eq!(request["duration"], 7);
    assert_eq!(request["resolution"], "720p");
    assert_eq!(request["generate_audio"], false);
    assert_eq!(request["auto_fix"], true);
    assert_eq!(request["provider"], "fal");
    assert!(request["video_url"].as_str().unwrap().starts_with("data:video/mp4"), "{request}");
    assert_result_file(&env.path("owl.mp4"));
}

#[test]
fn an_existing_output_is_kept_unless_forced() {
    let env = Env::new();
    env.clip();
    std::fs::write(env.path("clip-extended.mp4"), b"precious").unwrap();
    env.cmd()
        .args(["extend", "clip.mp4", "-p", "x"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("clip-extended.mp4 already exists; pass --force"));
    assert_eq!(std::fs::read(env.path("clip-extended.mp4")).unwrap(), b"precious");
    assert_eq!(env.sim.stats().create_requests, 0);

    env.cmd().args(["extend", "clip.mp4", "-p", "x", "--force"]).assert().success();
    assert_result_file(&env.path("clip-extended.mp4"));
}

#[test]
fn no_wait_then_status_wait_and_download() {
    let env = Env::with(crate::frozen());
    env.clip();
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "x", "--no-wait"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(id, only_id(&env));
    assert!(stderr(&out).contains(&format!("wait for it with: aimlvid wait {id} -o ")), "{}", stderr(&out));
    assert_eq!(env.records()[0]["state"], "queued");

    env.cmd().args(["status", &id]).assert().success().stdout(format!("{id}  queued\n"));
    // Not finished: nothing to download yet, and the job keeps running.
    env.cmd().args(["download", &id, "-o", "early.mp4"]).assert().code(6).stderr(predicate::str::contains(
        format!("generation {id} is still queued; wait for it with: aimlvid wait"),
    ));
    assert!(!env.path("early.mp4").exists());

    assert!(env.sim.complete_now(&id));
    env.cmd()
        .args(["status", &id])
        .assert()
        .success()
        .stdout(format!("{id}  completed  120,000 credits ($0.06) used\n"));
    // The journal remembers where the result goes.
    env.cmd().args(["wait", &id]).assert().success();
    assert_result_file(&env.path("clip-extended.mp4"));
    assert_eq!(env.records()[0]["state"], "downloaded");
    env.cmd().args(["download", &id, "-o", "copy.mp4"]).assert().success();
    assert_result_file(&env.path("copy.mp4"));
}

#[test]
fn wait_adopts_a_job_created_elsewhere() {
    let env = Env::with(crate::frozen());
    env.clip();
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "x", "--no-wait", "-q"]).output().unwrap();
    let id = stdout(&out).trim().to_owned();
    // Another machine: same server and key, an empty journal.
    std::fs::remove_dir_all(env.journal_dir()).unwrap();
    env.sim.complete_now(&id);
    env.cmd().args(["wait", &id]).assert().success().stdout(predicate::str::ends_with(format!("{id}.mp4\n")));
    assert_result_file(&env.path(&format!("{id}.mp4")));
    assert_eq!(env.records()[0]["id"], id.as_str());
}

#[test]
fn chains_feed_each_result_to_the_next_step() {
    let env = Env::new();
    env.clip();
    let out = env
        .cmd()
        .args(["extend", "clip.mp4", "-p", "An owl lands", "-p", "The owl flies off", "-o", "story.mp4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), env.path("story.mp4").display().to_string());
    assert_result_file(&env.path("story.mp4"));
    assert_result_file(&env.path("story.step1.mp4"));
    assert!(stderr(&out).contains("2 extensions in"), "{}", stderr(&out));

    let records = env.records();
    assert_eq!(records.len(), 2);
    let (first, second) = (&records[0], &records[1]);
    assert_eq!(first["chain"]["step"], 1);
    assert_eq!(second["chain"]["step"], 2);
    assert_eq!(second["chain"]["parent"], first["id"]);
    assert_eq!(second["input"], env.path("story.step1.mp4").display().to_string());
    let second_request = env.sim.job(second["id"].as_str().unwrap()).unwrap().request;
    assert_eq!(second_request["prompt"], "The owl flies off");

    // --times repeats the prompt.
    env.cmd()
        .args(["extend", "clip.mp4", "-p", "again", "--times", "3", "-o", "thrice.mp4", "-q"])
        .assert()
        .success();
    assert_eq!(env.records().len(), 5);
    assert_eq!(env.sim.stats().jobs_created, 5);
    assert_result_file(&env.path("thrice.mp4"));
}

#[test]
fn the_config_file_sets_server_model_and_output_dir() {
    let env = Env::new();
    env.clip();
    let config_dir = env.path("config/aimlvid");
    std::fs::create_dir_all(&config_dir).unwrap();
    let config =
        format!("base_url = \"{}\"\nmodel = \"standard\"\noutput_dir = \"videos\"\n", env.sim.base_url());
    std::fs::write(config_dir.join("aimlvid.toml"), config).unwrap();
    env.cmd().env_remove("AIMLAPI_BASE_URL").args(["extend", "clip.mp4", "-p", "x", "-q"]).assert().success();
    assert_result_file(&env.path("videos/clip-extended.mp4"));
    assert_eq!(env.sim.job(&only_id(&env)).unwrap().model, "google/veo3-1-extend-video");

    // Flags beat the file.
    env.cmd()
        .env_remove("AIMLAPI_BASE_URL")
        .args(["extend", "clip.mp4", "-p", "x", "-q", "--model", "fast", "-o", "flag.mp4"])
        .assert()
        .success();
    let last = env.records().pop().unwrap();
    assert_eq!(last["model"], "google/veo3-1-fast-extend-video");
    assert_result_file(&env.path("flag.mp4"));
}

#[test]
fn a_config_model_for_generate_is_its_default_and_refused_only_by_extend() {
    let env = Env::new();
    env.clip();
    let config_dir = env.path("config/aimlvid");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("aimlvid.toml"), "model = \"google/veo-3.1-t2v-fast\"\n").unwrap();

    // Commands that do not use the model are not troubled by it.
    env.cmd().args(["models", "veo"]).assert().success();
    env.cmd().args(["jobs"]).assert().success();

    // generate takes it as its model.
    let out = env.cmd().args(["generate", "-p", "A lighthouse", "-q"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.sim.job(&only_id(&env)).unwrap().model, "google/veo-3.1-t2v-fast");
    assert_result_file(&env.path("veo-3.1-t2v-fast.mp4"));

    // extend refuses it, once, and sends nothing.
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        "error: the config file's model \"google/veo-3.1-t2v-fast\" is not an extend model; give extend -m \
         fast or -m standard (or set model to one of them), or run google/veo-3.1-t2v-fast with `aimlvid \
         generate`\n"
    );
    assert_eq!(env.sim.stats().create_requests, 1, "only generate's");
    // …unless -m says which extend model to use.
    env.cmd().args(["extend", "clip.mp4", "-p", "x", "-q", "-m", "standard"]).assert().success();
    assert_eq!(env.records().pop().unwrap()["model"], "google/veo3-1-extend-video");

    // Without a model anywhere, generate asks for one.
    std::fs::write(config_dir.join("aimlvid.toml"), "").unwrap();
    let out = env.cmd().args(["generate", "-p", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("give the model with -m ID"), "{}", stderr(&out));
}

#[test]
fn extend_dry_run_prints_the_request_and_its_price_and_sends_nothing() {
    let env = Env::new();
    env.clip();
    let out =
        env.cmd().args(["--json", "extend", "clip.mp4", "-p", "a", "-p", "b", "--dry-run"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let result: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(result["dry_run"], true);
    assert_eq!(result["request"]["model"], "google/veo3-1-fast-extend-video");
    assert_eq!(result["request"]["prompt"], "a");
    let video = result["request"]["video_url"].as_str().unwrap();
    assert!(video.starts_with("<data:video/mp4;base64, "), "{result}");
    // Two steps, each priced as the simulator charges.
    assert_eq!(result["jobs"], 2);
    assert_eq!(result["price_credits"], 2.0 * env.sim.config().credits_per_job, "{result}");
    assert_eq!(env.sim.stats().create_requests, 0, "nothing was created");
    assert!(env.records().is_empty(), "nothing was journaled");
    assert!(!env.path("clip-extended.mp4").exists());

    // In plain words on stderr, the request on stdout.
    let out = env.cmd().args(["extend", "clip.mp4", "-p", "a", "--dry-run"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).starts_with("dry run: nothing was sent · price "), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"prompt\": \"a\""), "{}", stdout(&out));
    assert_eq!(env.sim.stats().create_requests, 0);
}
