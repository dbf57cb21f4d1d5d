//! Integration tests of the `aimlvid` binary against the in-process simulator.
//!
//! Each test starts a simulator on `127.0.0.1:0` in this process, runs the
//! built binary against it with a private journal, config and working
//! directory, and checks what the binary printed, wrote and sent. Time is
//! driven, not slept away: the simulator runs `SCALE` times faster than real
//! time (or is frozen, with jobs finished by `complete_now`), and the binary
//! polls as fast through `AIMLVID_TIME_SCALE`.

mod bad_input;
mod catalogue;
mod exit_codes;
mod extend;
mod generate;
mod journal;
mod json;
mod other;
mod outputs;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use aimlvid_sim::{RunningSim, SimConfig, Simulator, Spread};
use assert_cmd::Command;
use serde_json::Value;

/// The binary under test, as Cargo built it for this test.
const BIN: &str = env!("CARGO_BIN_EXE_aimlvid");

/// Simulated seconds per real second: a job of 2 s queued + 20 s
/// generating takes 22 ms.
const SCALE: f64 = 1000.0;

/// A simulator, and a scratch directory for the binary to work in.
struct Env {
    sim: RunningSim,
    dir: tempfile::TempDir,
    /// Keeps the simulator's tasks running while the test thread waits on
    /// the binary.
    _runtime: tokio::runtime::Runtime,
}

/// Quick jobs: 2 s queued, 20 s generating, simulated.
fn quick() -> SimConfig {
    SimConfig {
        time_scale: SCALE,
        queue_time: Spread::Fixed(Duration::from_secs(2)),
        generation_time: Spread::Fixed(Duration::from_secs(20)),
        ..SimConfig::default()
    }
}

/// Frozen time: jobs finish only when a test calls `complete_now`.
fn frozen() -> SimConfig {
    SimConfig { time_scale: 0.0, ..quick() }
}

impl Env {
    fn new() -> Env {
        Env::with(quick())
    }

    fn with(config: SimConfig) -> Env {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let sim = runtime.block_on(Simulator::start(config)).unwrap();
        Env { sim, dir: tempfile::tempdir().unwrap(), _runtime: runtime }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn journal_dir(&self) -> PathBuf {
        self.path("journal")
    }

    /// A clip to extend, in the working directory.
    fn clip(&self) -> PathBuf {
        let clip = self.path("clip.mp4");
        std::fs::write(&clip, aimlvid_sim::SAMPLE_INPUT).unwrap();
        clip
    }

    /// The binary, set to talk to the simulator with the right key, a
    /// private journal, no config file, and quick polling.
    fn cmd(&self) -> Command {
        Command::from_std(self.std_cmd())
    }

    /// The same, as a `std` command to spawn and kill.
    fn std_cmd(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(BIN);
        self.configure(&mut cmd);
        cmd
    }

    fn configure(&self, cmd: &mut std::process::Command) {
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XDG_STATE_HOME", self.path("state"))
            .env("AIMLAPI_API_KEY", aimlvid_sim::DEFAULT_API_KEY)
            .env("AIMLAPI_BASE_URL", self.sim.base_url())
            .env("AIMLVID_JOURNAL", self.journal_dir())
            .env("AIMLVID_TIME_SCALE", SCALE.to_string());
    }

    /// Every journal record, as JSON, oldest first.
    fn records(&self) -> Vec<Value> {
        let Ok(entries) = std::fs::read_dir(self.journal_dir()) else { return Vec::new() };
        let mut records: Vec<Value> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        records.sort_by_key(|r| r["created_at"].as_str().unwrap().to_owned());
        records
    }

    /// Waits, up to a bound, until `count` journaled jobs have an id, then
    /// returns their records.
    fn wait_for_ids(&self, count: usize, child: &mut Child) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let with_ids: Vec<Value> = self.records().into_iter().filter(|r| r["id"].is_string()).collect();
            if with_ids.len() >= count {
                return with_ids;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("aimlvid exited ({status}) before {count} job(s) were journaled");
            }
            assert!(Instant::now() < deadline, "no journaled job after 30 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits, up to a bound, until another process holds record `key`'s
    /// lock: the process following its job has really started following.
    fn wait_until_locked(&self, key: &str) {
        let path = self.journal_dir().join("locks").join(format!("{key}.lock"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(file) = std::fs::File::open(&path)
                && matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
            {
                return;
            }
            assert!(Instant::now() < deadline, "record {key} was never locked");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Spawns the binary with piped output.
    fn spawn(&self, args: &[&str]) -> Child {
        self.std_cmd().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    }
}

/// The id of the only journaled job.
fn only_id(env: &Env) -> String {
    let records = env.records();
    assert_eq!(records.len(), 1, "{records:#?}");
    records[0]["id"].as_str().unwrap().to_owned()
}

/// Stdout as text.
fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// Stderr as text.
fn stderr(output: &std::process::Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Sends SIGINT, as Ctrl-C in a terminal does.
fn interrupt(child: &Child) {
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// The exact bytes of a downloaded file match the simulator's result.
fn assert_result_file(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes == aimlvid_sim::SAMPLE_RESULT, "{} is not the simulator's result", path.display());
    assert!(!aimlvid::partial_path(path).exists(), "a part file was left beside {}", path.display());
}
