//! `--json`: the NDJSON event shapes that scripts rely on, as snapshots
//! with the values that change from run to run replaced by placeholders.

use serde_json::{Value, json};

use crate::{Env, stderr, stdout};

/// Parses NDJSON output, replacing ids, times and paths by placeholders.
fn events(out: &std::process::Output, env: &Env) -> Vec<Value> {
    let dir = env.dir.path().display().to_string();
    stdout(out)
        .lines()
        .map(|line| {
            let mut event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let object = event.as_object_mut().unwrap();
            for (key, value) in object.iter_mut() {
                match key.as_str() {
                    "id" if value.is_string() => *value = json!("<id>"),
                    "elapsed_secs" | "download_secs" => {
                        assert!(value.as_f64().is_some_and(|s| s >= 0.0), "{value}");
                        *value = json!("<secs>");
                    }
                    // The extend family's 110 s (p90 130 s), at the tests' x1000.
                    "expected_left_secs" if !value.is_null() => {
                        assert!(value.as_f64().is_some_and(|s| (0.0..=0.130).contains(&s)), "{value}");
                        *value = json!("<secs>");
                    }
                    "steps" => {
                        *value = json!(value.as_array().unwrap().iter().map(|_| "<id>").collect::<Vec<_>>())
                    }
                    "outputs" => {
                        let paths = value.as_array().unwrap().iter();
                        *value = json!(
                            paths.map(|p| p.as_str().unwrap().replace(&dir, "<dir>")).collect::<Vec<_>>()
                        )
                    }
                    _ => {
                        if let Some(text) = value.as_str() {
                            *value = json!(text.replace(&dir, "<dir>"));
                        }
                    }
                }
            }
            event
        })
        .collect()
}

#[test]
fn extend_emits_one_object_per_event_then_the_result() {
    // Generating for 300 s (0.3 s real), so the first poll, 85 s after the
    // create, finds it generating and a later one completed.
    let generation_time = aimlvid_sim::Spread::Fixed(std::time::Duration::from_secs(300));
    let env = Env::with(aimlvid_sim::SimConfig { generation_time, ..crate::quick() });
    env.clip();
    let out = env.cmd().args(["--json", "extend", "clip.mp4", "-p", "x"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "", "no human output in JSON mode");
    let size = aimlvid_sim::SAMPLE_RESULT.len();
    assert_eq!(
        events(&out, &env),
        vec![
            json!({"event": "created", "id": "<id>", "model": "google/veo3-1-fast-extend-video"}),
            json!({"event": "status", "id": "<id>", "status": "queued", "elapsed_secs": "<secs>", "expected_left_secs": "<secs>"}),
            json!({"event": "status", "id": "<id>", "status": "generating", "elapsed_secs": "<secs>", "expected_left_secs": "<secs>"}),
            json!({"event": "status", "id": "<id>", "status": "completed", "elapsed_secs": "<secs>", "expected_left_secs": null}),
            json!({"event": "downloaded", "path": "<dir>/clip-extended.mp4", "bytes": size}),
            json!({
                "event": "result",
                "ok": true,
                "id": "<id>",
                "status": "completed",
                "output": "<dir>/clip-extended.mp4",
                "outputs": ["<dir>/clip-extended.mp4"],
                "bytes": size,
                "credits_used": 120000.0,
                "usd": 0.06,
                "elapsed_secs": "<secs>",
                "download_secs": "<secs>",
                "steps": ["<id>"],
            }),
        ]
    );
}

#[test]
fn failures_end_with_a_result_object_too() {
    let env = Env::new();
    let out = env.cmd().args(["status", "nope", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(4));
    let events = events(&out, &env);
    assert_eq!(events.len(), 1, "{events:?}");
    let error = events[0]["error"].as_str().unwrap();
    assert!(error.starts_with("generation nope not found (404"), "{error}");
    assert_eq!(
        events[0],
        json!({"event": "result", "ok": false, "error": error, "exit_code": 4, "kind": "invalid_request", "id": "<id>"})
    );
}

#[test]
fn no_wait_status_and_jobs_have_stable_shapes() {
    let env = Env::with(crate::frozen());
    env.clip();
    let out = env.cmd().args(["--json", "extend", "clip.mp4", "-p", "x", "--no-wait"]).output().unwrap();
    let created = events(&out, &env);
    assert_eq!(
        created,
        vec![
            json!({"event": "created", "id": "<id>", "model": "google/veo3-1-fast-extend-video"}),
            json!({
                "event": "result",
                "ok": true,
                "id": "<id>",
                "status": "queued",
                "output": "<dir>/clip-extended.mp4",
            }),
        ]
    );
    let id = crate::only_id(&env);
    let out = env.cmd().args(["--json", "status", &id]).output().unwrap();
    assert_eq!(
        events(&out, &env),
        vec![json!({
            "event": "result",
            "ok": true,
            "id": "<id>",
            "status": "queued",
            "credits_used": null,
            "usd": null,
            "video_url": null,
            "video_urls": [],
            "error": null,
        })]
    );
    let out = env.cmd().args(["--json", "jobs"]).output().unwrap();
    let jobs = events(&out, &env);
    assert_eq!(jobs.len(), 2);
    let created_at = jobs[0]["created_at"].clone();
    let key = jobs[0]["key"].clone();
    let base_url = jobs[0]["base_url"].clone();
    assert_eq!(
        jobs,
        vec![
            json!({
                "event": "job",
                "id": "<id>",
                "key": key,
                "state": "queued",
                "model": "google/veo3-1-fast-extend-video",
                "prompt": "x",
                "input": "<dir>/clip.mp4",
                "output": "<dir>/clip-extended.mp4",
                "base_url": base_url,
                "created_at": created_at,
                "simulated": false,
                "step": null,
                "of": null,
                "credits_used": null,
                "error": null,
            }),
            json!({"event": "result", "ok": true, "count": 1}),
        ]
    );
}
