//! A paid job is done only when its file is whole: output paths are
//! checked before the create, a result that could not be written leaves
//! the job unfinished with the command that gets it, and every result file
//! is named.

use aimlvid_sim::{Fault, Route, SimConfig};
use serde_json::Value;

use crate::{Env, assert_result_file, frozen, stderr, stdout};

#[test]
fn a_directory_given_as_output_is_written_into() {
    let env = Env::new();
    std::fs::create_dir(env.path("vids")).unwrap();
    let out = env
        .cmd()
        .args(["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x", "-o", "vids", "--force"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = env.path("vids").join("veo-3.1-t2v-fast.mp4");
    assert_eq!(stdout(&out).trim(), dest.display().to_string());
    assert_result_file(&dest);
    assert!(!env.path("vids.part").exists());

    // A path ending in a separator is a directory to be made.
    env.clip();
    env.cmd().args(["extend", "clip.mp4", "-p", "x", "-o", "new/"]).assert().success();
    assert_result_file(&env.path("new").join("clip-extended.mp4"));
}

#[test]
fn an_output_that_cannot_be_written_is_refused_before_paying() {
    let env = Env::new();
    std::fs::write(env.path("notes.txt"), "a file, not a directory").unwrap();
    env.clip();
    for args in [
        &["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x", "-o", "notes.txt/out.mp4"][..],
        &["extend", "clip.mp4", "-p", "x", "-o", "notes.txt/sub/out.mp4"][..],
    ] {
        let out = env.cmd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{} is not a directory", env.path("notes.txt").display()))
                && err.contains("nothing was sent"),
            "{err}"
        );
    }
    assert_eq!(env.sim.stats().jobs_created, 0, "nothing was paid for");
    assert!(env.records().is_empty());
}

#[test]
fn a_result_that_cannot_be_written_says_how_to_get_it() {
    let env = Env::with(frozen());
    let mut child = env.spawn(&["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x", "-o", "out.mp4"]);
    let id = env.wait_for_ids(1, &mut child)[0]["id"].as_str().unwrap().to_owned();
    // Something takes the output's name while the job runs.
    std::fs::create_dir(env.path("out.mp4")).unwrap();
    env.sim.complete_now(&id);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let dest = env.path("out.mp4");
    let expected = format!(
        "generation {id} completed, but its video was not saved: {} is a directory; the job is paid for \
         and its result kept; get it with: aimlvid download {id} -o {} --base-url http://127.0.0.1:",
        dest.display(),
        dest.display()
    );
    let err = stderr(&out);
    let line =
        err.lines().find(|l| l.contains(&expected)).unwrap_or_else(|| panic!("{err}\nexpected: {expected}"));
    let command = line.split_once("get it with: ").unwrap().1;
    assert_ne!(env.records()[0]["state"], "downloaded");

    // The printed command works as printed, once the way is clear.
    std::fs::remove_dir(&dest).unwrap();
    let args: Vec<&str> = command.split(' ').skip(1).collect();
    env.cmd().env_remove("AIMLAPI_BASE_URL").args(&args).assert().success();
    assert_result_file(&dest);
    assert_eq!(env.records()[0]["state"], "downloaded");
    assert_eq!(env.sim.stats().jobs_created, 1);
}

#[test]
fn resume_counts_a_download_finished_only_when_its_file_is_whole() {
    let env = Env::with(SimConfig { result_size: Some(1024 * 1024), ..frozen() });
    let out = env
        .cmd()
        .args(["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x", "-o", "out.mp4", "--no-wait", "-q"])
        .output()
        .unwrap();
    let id = stdout(&out).trim().to_owned();
    env.sim.complete_now(&id);
    // The download starts and is cut short, leaving a part file.
    env.sim.inject(Route::Download, Fault::TruncatedBody, 1);
    env.sim.inject(Route::Download, Fault::Status(503), 6);
    let out = env.cmd().args(["wait", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(env.records()[0]["state"], "downloading");
    // A directory now has the output's name: it is not the video.
    let dest = env.path("out.mp4");
    std::fs::create_dir(&dest).unwrap();

    let out = env.cmd().arg("resume").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("is a directory") && err.contains(&format!("aimlvid download {id} -o")), "{err}");
    assert!(err.contains("resumed 1 job(s): 1 failed"), "{err}");
    assert_eq!(env.records()[0]["state"], "downloading", "still unfinished");
    env.cmd().args(["jobs", "prune"]).assert().success();
    assert_eq!(env.records().len(), 1, "prune keeps an unfinished job");

    std::fs::remove_dir(&dest).unwrap();
    let out = env.cmd().arg("resume").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 1024 * 1024);
    assert_eq!(env.records()[0]["state"], "downloaded");

    // A downloaded file replaced by another is not "already downloaded".
    std::fs::write(&dest, "something else").unwrap();
    let out = env.cmd().args(["wait", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
}

#[test]
fn every_result_file_is_named() {
    let env = Env::new();
    let out = env
        .cmd()
        .args(["--json", "generate", "-m", "bytedance/seedance-2-5", "-p", "Two takes"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let result: Value = serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let first = env.path("seedance-2-5.mp4").display().to_string();
    let second = env.path("seedance-2-5-2.mp4").display().to_string();
    assert_eq!(result["outputs"], serde_json::json!([first, second]), "{result}");

    let out = env
        .cmd()
        .args(["generate", "-m", "bytedance/seedance-2-5", "-p", "Two takes", "-o", "take.mp4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    let expected = [env.path("take.mp4").display().to_string(), env.path("take-2.mp4").display().to_string()];
    assert_eq!(lines, expected);
}

#[test]
fn download_without_output_uses_the_name_wait_would() {
    let env = Env::with(frozen());
    let out = env
        .cmd()
        .args(["--journal", "elsewhere", "generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x"])
        .args(["--no-wait", "-q"])
        .output()
        .unwrap();
    let id = stdout(&out).trim().to_owned();
    env.sim.complete_now(&id);
    let out = env.cmd().args(["download", &id]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_result_file(&env.path(&format!("{id}.mp4")));
}

#[test]
fn a_paid_result_blocked_by_a_file_exits_1_and_its_command_works_as_printed() {
    let env = Env::with(SimConfig { results_per_job: Some(3), ..crate::quick() });
    // The second result's name is taken by a file of the user's.
    std::fs::write(env.path("k-2.mp4"), "the user's").unwrap();
    let out = env
        .cmd()
        .args(["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x", "-o", "k.mp4"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "a paid job's file was not saved, not 'nothing was sent': {err}");
    let id = crate::only_id(&env);
    let blocked = env.path("k-2.mp4");
    assert!(err.contains(&format!("{} already exists", blocked.display())), "{err}");
    let line = err.lines().find(|l| l.contains("get it with: ")).unwrap_or_else(|| panic!("{err}"));
    let command = line.split_once("get it with: ").unwrap().1;
    assert!(
        command.starts_with(&format!("aimlvid download {id} -o {} --force ", env.path("k.mp4").display())),
        "{command}"
    );
    assert_ne!(env.records()[0]["state"], "downloaded");
    assert_eq!(std::fs::read(&blocked).unwrap(), b"the user's", "not replaced without --force");

    // Run exactly as printed, with the file still in the way.
    let args: Vec<&str> = command.split(' ').skip(1).collect();
    env.cmd().env_remove("AIMLAPI_BASE_URL").args(&args).assert().success();
    for name in ["k.mp4", "k-2.mp4", "k-3.mp4"] {
        assert_result_file(&env.path(name));
    }
    assert_eq!(env.records()[0]["state"], "downloaded");
    assert_eq!(env.sim.stats().jobs_created, 1);
}
