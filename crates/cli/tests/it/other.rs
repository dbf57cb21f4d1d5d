//! `-v`, `--help`, `completions`, `man`, `sim`, pipes, and the live display.

use std::io::{BufRead as _, BufReader};
use std::time::{Duration, Instant};

use aimlvid_sim::SimConfig;
use predicates::prelude::*;

use crate::{Env, assert_result_file, interrupt, quick, stderr};

const SECRET: &str = "sk-test-7f3a9c1e5b2d4f60";

#[test]
fn verbose_shows_http_exchanges_and_never_the_key() {
    let env = Env::with(SimConfig { api_keys: vec![SECRET.to_owned()], ..quick() });
    env.clip();
    let out = env
        .cmd()
        .env("AIMLAPI_API_KEY", SECRET)
        .args(["-v", "extend", "clip.mp4", "-p", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    let base = env.sim.base_url();
    let base = base.trim_end_matches('/');
    assert!(err.contains(&format!("POST {base}/v2/video/generations -> 200 in ")), "{err}");
    assert!(err.contains(&format!("GET {base}/v2/video/generations?generation_id=")), "{err}");
    assert!(err.contains(&format!("GET {base}/files/")), "{err}");

    for flags in ["-vv", "-vvv"] {
        let out = env
            .cmd()
            .env("AIMLAPI_API_KEY", SECRET)
            .args([flags, "extend", "clip.mp4", "-p", "x", "--force"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let all = format!("{}{}", stderr(&out), crate::stdout(&out));
        assert!(all.lines().count() > 10, "{flags} shows more: {all}");
        assert!(!all.contains(SECRET), "{flags} leaked the key");
        assert!(!all.contains("7f3a9c1e"), "{flags} leaked part of the key");
    }
    for record in env.records() {
        assert!(!record.to_string().contains(SECRET), "the journal holds the key");
    }
}

#[test]
fn help_documents_the_exit_codes() {
    let env = Env::new();
    env.cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes:").and(predicate::str::contains("130  interrupted")));
    env.cmd()
        .args(["extend", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("--aspect-ratio"));
    env.cmd().arg("--version").assert().success().stdout(predicate::str::starts_with("aimlvid "));
}

#[test]
fn completions_are_printed_for_each_shell() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        env.cmd().args(["completions", shell]).assert().success().stdout(predicate::str::contains("aimlvid"));
    }
    env.cmd().args(["completions", "tcsh"]).assert().code(2);
}

#[test]
fn the_man_page_is_made_from_the_same_definitions_as_help() {
    let env = Env::new();
    let out = env.cmd().arg("man").assert().success();
    let page = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(page.contains(".TH aimlvid 1"), "{page}");
    for subcommand in ["extend", "resume", "completions"] {
        assert!(page.contains(subcommand), "{subcommand} missing from the man page");
    }
    let help = env.cmd().arg("--help").assert().success();
    let help = String::from_utf8(help.get_output().stdout.clone()).unwrap();
    assert!(
        !help.lines().any(|l| l.trim_start().starts_with("man ")),
        "a packaging command in --help: {help}"
    );
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let env = Env::new();
    // The pipe's read end is closed before aimlvid starts, so its first
    // write fails with EPIPE, as `aimlvid jobs | head -0` would.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = env
        .std_cmd()
        .args(["completions", "bash"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn sim_serves_until_ctrl_c() {
    let env = Env::new();
    let mut sim = env
        .std_cmd()
        .args([
            "sim",
            "--port",
            "0",
            "--time-scale",
            "1000",
            "--queue-secs",
            "2",
            "--generation-secs",
            "20",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let listening: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(listening["event"], "listening");
    let base_url = listening["base_url"].as_str().unwrap().to_owned();

    env.clip();
    env.cmd().args(["--base-url", &base_url, "extend", "clip.mp4", "-p", "x", "-q"]).assert().success();
    assert_result_file(&env.path("clip-extended.mp4"));

    interrupt(&sim);
    let status = sim.wait().unwrap();
    assert!(status.success(), "{status}");
    let last: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(last, serde_json::json!({"event": "result", "ok": true}));
}

/// The live line and the download bar, drawn in a real terminal. Needs
/// tmux, so it runs only with `AIMLVID_TMUX_TESTS=1`.
#[test]
fn the_live_display_renders_in_a_terminal() {
    if std::env::var_os("AIMLVID_TMUX_TESTS").is_none_or(|v| v != "1") {
        return;
    }
    let env = Env::new();
    let session = format!("aimlvid-test-{}", std::process::id());
    let bin = crate::BIN;
    let journal = env.journal_dir();
    // Slow enough to be seen: the in-process simulator at its own 60x.
    let script = format!(
        "cd {dir} && AIMLVID_JOURNAL={journal} {bin} extend --simulate -p 'The camera pulls back'; echo EXIT=$?; sleep 30",
        dir = env.dir.path().display(),
        journal = journal.display(),
    );
    let tmux = |args: &[&str]| std::process::Command::new("tmux").args(args).output().unwrap();
    assert!(tmux(&["new-session", "-d", "-s", &session, "-x", "120", "-y", "20", &script]).status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut saw_live, mut screen) = (false, String::new());
    while Instant::now() < deadline {
        screen = String::from_utf8(tmux(&["capture-pane", "-p", "-t", &session]).stdout).unwrap();
        saw_live |= screen.contains("generating") && !screen.contains("EXIT=");
        if screen.contains("EXIT=") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tmux(&["kill-session", "-t", &session]);
    assert!(saw_live, "never saw the live line");
    assert!(screen.contains("EXIT=0"), "{screen}");
    assert!(screen.contains("completed "), "{screen}");
    assert!(screen.contains("credits used"), "{screen}");
    assert!(screen.contains("extended.mp4"), "{screen}");
}

#[test]
fn color_is_off_unless_asked_for_and_always_forces_it() {
    let env = crate::Env::new();
    let run = |args: &[&str], no_color: bool| {
        let mut cmd = env.cmd();
        if no_color {
            cmd.env("NO_COLOR", "1");
        }
        let out = cmd.args(args).output().unwrap();
        String::from_utf8(out.stderr).unwrap()
    };
    // Not a terminal: plain, whatever the log level.
    let plain = run(&["-v", "status", "no-such-job"], false);
    assert!(plain.contains("error:") && !plain.contains('\x1b'), "{plain:?}");
    let forced = run(&["--color", "always", "-v", "status", "no-such-job"], true);
    assert!(forced.contains("\x1b["), "--color always beats NO_COLOR: {forced:?}");
    let never = run(&["--color=never", "extend", "--pormpt", "x"], false);
    assert!(!never.contains('\x1b') && never.contains("tip:"), "{never:?}");
}
