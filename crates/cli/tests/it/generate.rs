//! `aimlvid generate` and `aimlvid models`: any model of the catalog.

use serde_json::Value;

use crate::{Env, assert_result_file, only_id, stderr, stdout};

/// The smallest PNG header `infer` recognises.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";

#[test]
fn text_to_video_with_typed_params() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "A lighthouse at dusk"])
        .args(["--param", "duration=6", "--param", "generate_audio=no"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let expected = env.path("veo-3.1-t2v-fast.mp4");
    assert_eq!(stdout(&out).trim(), expected.display().to_string());
    assert_result_file(&expected);
    let request = env.sim.job(&only_id(&env)).unwrap().request;
    assert_eq!(request["model"], "google/veo-3.1-t2v-fast");
    assert_eq!(request["duration"], 6, "typed as a number: {request}");
    assert_eq!(request["generate_audio"], false);
    let record = &env.records()[0];
    assert_eq!(
        (&record["model"], &record["state"]),
        (&"google/veo-3.1-t2v-fast".into(), &"downloaded".into())
    );
}

#[test]
fn image_to_video_sends_a_local_png_inline() {
    let env = Env::new();
    std::fs::write(env.path("frame.png"), PNG).unwrap();
    env.cmd()
        .args([
            "generate",
            "-m",
            "google/veo-3.1-i2v",
            "-p",
            "Waves roll in",
            "--image",
            "frame.png",
            "-o",
            "waves.mp4",
        ])
        .assert()
        .success();
    assert_result_file(&env.path("waves.mp4"));
    let request = env.sim.job(&only_id(&env)).unwrap().request;
    assert!(request["image_url"].as_str().unwrap().starts_with("data:image/png;base64,"), "{request}");
    assert_eq!(env.records()[0]["input"], env.path("frame.png").display().to_string());
}

#[test]
fn a_model_that_answers_several_videos_gets_each_downloaded() {
    let env = Env::new();
    let out =
        env.cmd().args(["generate", "-m", "bytedance/seedance-2-5", "-p", "Two takes"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_result_file(&env.path("seedance-2-5.mp4"));
    assert_result_file(&env.path("seedance-2-5-2.mp4"));
    assert!(stderr(&out).contains("made 2 videos"), "{}", stderr(&out));
}

#[test]
fn mistakes_are_refused_before_sending_and_dry_runs_send_nothing() {
    let env = Env::new();
    let refused = env
        .cmd()
        .args(["generate", "-m", "google/veo-3.1-t2v", "-p", "x", "--param", "duration=9"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2), "usage: nothing was sent");
    let err = stderr(&refused);
    assert!(
        err.contains("google/veo-3.1-t2v") && err.contains("duration") && err.contains("4 | 6 | 8"),
        "{err}"
    );
    std::fs::write(env.path("notes.png"), "not an image").unwrap();
    let wrong_kind = env
        .cmd()
        .args(["generate", "-m", "google/veo-3.1-i2v", "-p", "x", "--image", "notes.png"])
        .output()
        .unwrap();
    assert_eq!(wrong_kind.status.code(), Some(2));
    assert!(
        stderr(&wrong_kind).contains("notes.png is not a recognised media file, not image"),
        "{}",
        stderr(&wrong_kind)
    );
    let typo = env.cmd().args(["generate", "-m", "google/veo-3.1-t2v-fst", "-p", "x"]).output().unwrap();
    assert!(stderr(&typo).contains("did you mean google/veo-3.1-t2v-fast?"), "{}", stderr(&typo));

    std::fs::write(env.path("frame.png"), PNG).unwrap();
    let dry = env
        .cmd()
        .args([
            "--json",
            "generate",
            "-m",
            "google/veo-3.1-i2v",
            "-p",
            "x",
            "--image",
            "frame.png",
            "--dry-run",
        ])
        .output()
        .unwrap();
    assert!(dry.status.success(), "{}", stderr(&dry));
    let result: Value = serde_json::from_str(stdout(&dry).trim()).unwrap();
    assert_eq!(result["request"]["model"], "google/veo-3.1-i2v");
    assert!(
        result["request"]["image_url"].as_str().unwrap().starts_with("<data:image/png;base64, "),
        "{result}"
    );
    assert_eq!(result["price_credits"], env.sim.config().credits_per_job, "{result}");
    assert_eq!(env.sim.stats().create_requests, 0, "nothing was created");
    assert!(env.records().is_empty(), "nothing was journaled");
}

#[test]
fn models_json_lists_every_id_and_show_prints_the_parameters() {
    let env = Env::new();
    let out = env.cmd().args(["--json", "models"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let ids: Vec<&str> =
        result["models"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    let catalog: Vec<&str> = aimlvid::catalog::models().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, catalog);

    let extend = env.cmd().args(["models", "--family", "extend"]).output().unwrap();
    let lines: Vec<&str> = std::str::from_utf8(&extend.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");

    let show = env.cmd().args(["models", "show", "google/veo-3.1-i2v"]).output().unwrap();
    assert!(show.status.success(), "{}", stderr(&show));
    let text = stdout(&show);
    assert!(text.contains("image_url       image    yes"), "{text}");
    assert!(text.contains("duration        integer            8        4, 6, 8"), "{text}");
    assert!(text.contains("price: 120000 credits"), "{text}");
}

#[test]
fn models_lists_the_two_whose_schemas_come_from_the_create_schema() {
    let env = Env::new();
    let out = env.cmd().args(["models", "fabric"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> =
        stdout(&out).lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(
        lines,
        ["veed/fabric-1.0 avatar audio_url* image_url*", "veed/fabric-1.0-fast avatar audio_url* image_url*"]
    );

    let out = env.cmd().args(["models", "v1.5/standard", "--family", "text-to-video"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).split_whitespace().next(), Some("kling-video/v1.5/standard/text-to-video"));

    let show = env.cmd().args(["models", "show", "veed/fabric-1.0-fast"]).output().unwrap();
    assert!(show.status.success(), "{}", stderr(&show));
    let text = stdout(&show);
    assert!(
        text.lines().any(|l| l.starts_with("resolution") && l.contains("yes") && l.contains("480p, 720p")),
        "{text}"
    );
}

#[test]
fn polling_follows_the_models_durations_as_the_journal_learns_them() {
    // A five-minute model (3 s of real time at 100×), against its family's guess of one.
    // Slower than the other tests' 1000×, so that a loaded machine's scheduling
    // noise stays small beside the 3-second (30 ms) poll interval.
    let model = "google/veo-3.1-t2v-fast";
    let mut config = crate::quick();
    config.time_scale = 100.0;
    config
        .model_generation_times
        .insert(model.to_owned(), aimlvid_sim::Spread::Fixed(std::time::Duration::from_secs(300)));
    let env = Env::with(config);
    let generate = |output: &str| {
        let out = env
            .cmd()
            .env("AIMLVID_TIME_SCALE", "100")
            .args(["generate", "-m", model, "-p", "x", "-o", output])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        env.records().into_iter().last().unwrap()
    };
    let first = generate("first.mp4");
    let guessed = env.sim.job(first["id"].as_str().unwrap()).unwrap().polls;
    assert!(first["took_secs"].as_f64().unwrap() > 3.0, "{first}");

    // Three jobs of that model in the journal, each 302 s (3.02 s real) long.
    for n in 0..3 {
        let mut record = first.clone();
        let key = format!("{}-{n}", first["key"].as_str().unwrap());
        record["key"] = key.clone().into();
        record["took_secs"] = 3.02.into();
        std::fs::write(env.journal_dir().join(format!("{key}.json")), record.to_string()).unwrap();
    }
    std::fs::remove_file(env.journal_dir().join(format!("{}.json", first["key"].as_str().unwrap()))).unwrap();
    let learned = generate("learned.mp4");
    let learned = env.sim.job(learned["id"].as_str().unwrap()).unwrap().polls;
    assert!(learned * 3 < guessed, "polls: {guessed} on the family's guess, {learned} on the journal's");
    assert!(learned <= 12, "a probe, then a few polls near the end: {learned}");
}

#[test]
fn a_failed_generate_job_is_kept_and_not_rerun_blindly() {
    let env = Env::with(aimlvid_sim::SimConfig { failure_rate: 1.0, ..crate::quick() });
    let failed = env.cmd().args(["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x"]).output().unwrap();
    assert_eq!(failed.status.code(), Some(5), "{}", stderr(&failed));
    assert_eq!(env.records()[0]["state"], "failed");
    let resumed = env.cmd().args(["resume", "--retry-failed"]).output().unwrap();
    let err = stderr(&resumed);
    assert!(err.contains("is not run again by --retry-failed"), "{err}");
    assert_eq!(env.sim.stats().create_requests, 1, "nothing was created again");
    assert_eq!(env.records().len(), 1, "the record is kept");
}
