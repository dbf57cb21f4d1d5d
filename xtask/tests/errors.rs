//! A failing xtask command says what failed in a line or two, even with
//! `RUST_BACKTRACE=1` set, as it often is in CI and developers' shells.

use std::process::{Command, Output};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");

/// The error lines a failed run printed: no backtrace, at most `max`
/// lines in all, the last one `error: ...`.
fn error_of(output: &Output, max: usize) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "a backtrace:\n{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert!((1..=max).contains(&lines.len()), "{} lines:\n{stderr}", lines.len());
    let last = lines[lines.len() - 1];
    assert!(last.starts_with("error: "), "{stderr}");
    last.to_owned()
}

#[test]
fn a_bad_argument_is_one_line() {
    let output = Command::new(XTASK).args(["release", "nope"]).env("RUST_BACKTRACE", "1").output().unwrap();
    let error = error_of(&output, 1);
    assert!(error.contains("\"nope\" is not a version like 1.2.3"), "{error}");
    assert!(error.contains("unexpected character"), "the cause on the same line: {error}");
}

#[cfg(unix)]
#[test]
fn a_failing_step_is_named_with_its_error() {
    use std::os::unix::fs::PermissionsExt as _;

    // A `cargo` that fails, so that the first step (asking Cargo where it
    // builds) fails at once, without building anything.
    let bin = tempfile::tempdir().unwrap();
    let cargo = bin.path().join("cargo");
    std::fs::write(&cargo, "#!/bin/sh\necho 'cargo: out of order' >&2\nexit 101\n").unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    let output = Command::new(XTASK)
        .args(["dist", "--debug"])
        .env("PATH", bin.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    // Cargo's own line, then ours.
    let error = error_of(&output, 2);
    assert!(error.contains("asking Cargo for its target directory (cargo metadata)"), "{error}");
    assert!(error.contains("101"), "the command's exit code: {error}");
}
