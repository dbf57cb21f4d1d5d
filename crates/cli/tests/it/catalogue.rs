//! `aimlvid models --check` and creates against a live catalogue that has
//! moved away from the build's.

use aimlvid_sim::{AddedModel, Route, SimConfig};
use serde_json::Value;

use crate::{Env, quick, stderr, stdout};

const DROPPED: &str = "google/veo-3.1-t2v-fast";
const ADDED: &str = "acme/lumen-1";

fn moved() -> Env {
    Env::with(SimConfig {
        added_models: vec![AddedModel::text_to_video(ADDED)],
        dropped_models: vec![DROPPED.to_owned()],
        ..quick()
    })
}

#[test]
fn check_names_the_added_and_the_dropped_model_and_a_create_for_the_dropped_one_is_refused() {
    let env = moved();
    let out = env.cmd().args(["models", "--check"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let added = text.split("not in this build").nth(1).expect("an added section");
    assert!(added.lines().nth(1).is_some_and(|l| l.trim() == ADDED), "{text}");
    let dropped = text.split("no longer listed by the API").nth(1).expect("a dropped section");
    let line = dropped.lines().nth(1).unwrap();
    assert!(line.trim().starts_with(DROPPED) && line.contains("nearest: google/"), "{text}");
    assert!(text.contains("prices: first read"), "{text}");

    let models_reads = || env.sim.requests().iter().filter(|r| r.route == Route::Models).count();
    let reads = models_reads();
    let out = env.cmd().args(["generate", "-m", DROPPED, "-p", "A lighthouse at dusk"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains(&format!("the API no longer lists {DROPPED}")), "{message}");
    assert!(message.contains("nearest it lists: google/"), "{message}");
    assert_eq!(env.sim.stats().create_requests, 0, "nothing was sent");
    assert_eq!(models_reads(), reads, "the catalogue came from the cache");
    assert!(env.records().is_empty(), "nothing was journaled");

    // The same refusal by its alias, and in JSON.
    let out = env.cmd().args(["--json", "generate", "-m", "veo-3.1-t2v-fast", "-p", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let result: Value = serde_json::from_str(stdout(&out).trim().lines().last().unwrap()).unwrap();
    assert_eq!(result["kind"], "usage", "{result}");
    assert_eq!(env.sim.stats().create_requests, 0, "nothing was sent");
}

#[test]
fn check_reads_again_by_the_etag_and_json_lists_the_differences() {
    let env = moved();
    for _ in 0..2 {
        let out = env.cmd().args(["--json", "models", "--check"]).output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let result: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
        assert_eq!(result["added"], serde_json::json!([ADDED]), "{result}");
        assert_eq!(result["dropped"][0]["id"], DROPPED, "{result}");
        assert_eq!(result["repriced"], serde_json::json!([]), "{result}");
    }
    let statuses: Vec<u16> =
        env.sim.requests().iter().filter(|r| r.route == Route::Models).map(|r| r.status).collect();
    assert_eq!(statuses, [200, 304], "the second check is a conditional read");

    // A model dropped at run time is refused by the next check's catalogue.
    assert!(env.sim.drop_model("google/veo-3.1-i2v"));
    let out = env.cmd().args(["--json", "models", "--check"]).output().unwrap();
    let result: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let dropped: Vec<&str> =
        result["dropped"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(dropped, ["google/veo-3.1-i2v", DROPPED], "{result}");
}

#[test]
fn a_model_only_the_api_lists_is_checked_by_its_document_and_created_without_skip_validation() {
    let env = moved();
    let documents = || env.sim.requests().iter().filter(|r| r.route == Route::Documents).count();
    let out = env
        .cmd()
        .args(["generate", "-m", "lumen-1", "-p", "A lighthouse", "--param", "duration=7"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("duration"), "{}", stderr(&out));
    assert_eq!(env.sim.stats().create_requests, 0, "refused by the document, before sending");
    assert_eq!(documents(), 1);

    let out = env
        .cmd()
        .args(["generate", "-m", "lumen-1", "-p", "A lighthouse", "--param", "duration=10"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let id = crate::only_id(&env);
    let job = env.sim.job(&id).unwrap();
    assert_eq!(job.model, ADDED, "the alias was sent as the id");
    assert_eq!(job.request["duration"], 10, "typed by the document's schema: {}", job.request);
    assert_eq!(documents(), 1, "the document came from the cache");
}
