//! `cargo xtask bench proxy`: the proxy against a static nginx.
//!
//! nginx plays the upstream: `POST /v2/video/generations` answers a unique
//! id (`$request_id`) and `GET` answers the id it was asked for, `queued`
//! until the wave, then `completed`. The release server and nginx are
//! pinned to core 0, oha to core 1. It prints, side by side: status reads
//! (req/s, CPU µs per request at a fixed rate, p99), the same read through
//! the OpenAI-shaped `GET /v1/videos/{id}` (req/s, alternating with the
//! native read in three pairs), creates (req/s, p99),
//! RSS per unfinished job, and the completion wave. It installs nginx
//! (Debian's `nginx-light`) and oha (`cargo install oha --locked`) if missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::Value;
use xshell::{Shell, cmd};

use crate::target_dir::{Profile, TargetDir};

const CREATE_BODY: &str = r#"{"model":"google/veo3-1-fast-extend-video","prompt":"bench","video_url":"https://example.com/clip.mp4"}"#;
const FIXED_RATE: u32 = 20_000;

/// What `cargo xtask bench proxy` was asked for.
#[derive(Debug)]
pub(crate) struct Options {
    /// Unfinished jobs to hold for the memory figure and the wave.
    pub(crate) jobs: u64,
    /// Seconds each throughput run lasts.
    pub(crate) seconds: u64,
    /// Extra arguments to `aimlvid-server serve`.
    pub(crate) serve_args: Vec<String>,
}

impl Options {
    pub(crate) fn parse(args: &[&str]) -> anyhow::Result<Options> {
        let mut options = Options { jobs: 100_000, seconds: 10, serve_args: Vec::new() };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            let mut value = || rest.next().copied().with_context(|| format!("{arg} needs a value"));
            match *arg {
                "--jobs" => options.jobs = value()?.parse().context("--jobs")?,
                "--seconds" => options.seconds = value()?.parse().context("--seconds")?,
                "--" => options.serve_args.extend(rest.by_ref().map(|s| (*s).to_owned())),
                other => bail!(
                    "unknown option {other}; usage: bench proxy [--jobs N] [--seconds S] [-- SERVE ARGS]"
                ),
            }
        }
        Ok(options)
    }
}

pub(crate) fn run(sh: &Shell, target_dir: &TargetDir, options: &Options) -> anyhow::Result<()> {
    let oha = ensure_tools(sh)?;
    cmd!(sh, "cargo build --release -p aimlvid-server").run()?;
    let server_bin = target_dir.binary(Profile::Release, "aimlvid-server");
    let dir = tempdir()?;

    let nginx = Nginx::start(&dir)?;
    let db = dir.join("server.db");
    let key = Command::new(&server_bin)
        // A benchmark measures throughput, not a key's limits.
        .args(["keys", "create", "bench", "--max-unfinished", "unlimited", "--database"])
        .arg(&db)
        .output()
        .context("creating a key")?;
    anyhow::ensure!(key.status.success(), "keys create failed: {}", String::from_utf8_lossy(&key.stderr));
    let key = String::from_utf8(key.stdout)?.trim().to_owned();
    let server = Server::start(&server_bin, &db, nginx.port, &options.serve_args, &dir)?;
    let proxy_url = format!("http://127.0.0.1:{}/v2/video/generations", server.port);
    let nginx_url = format!("http://127.0.0.1:{}/v2/video/generations", nginx.port);
    let auth = format!("Authorization: Bearer {key}");
    let load = Load { oha: &oha, seconds: options.seconds };

    let created = http_post(&proxy_url, &auth)?;
    let id = created["id"].as_str().context("no id in the create answer")?.to_owned();
    let read_proxy = format!("{proxy_url}?generation_id={id}");
    let read_nginx = format!("{nginx_url}?generation_id={id}");

    println!("\n== status reads: GET ?generation_id=ID, 64 connections, {} s each", options.seconds);
    let proxy_max = load.run(&read_proxy, &auth, None, false)?;
    let nginx_max = load.run(&read_nginx, &auth, None, false)?;
    let proxy_cpu = cpu_per_request(&load, &read_proxy, &auth, &[server.pid()])?;
    let nginx_cpu = cpu_per_request(&load, &read_nginx, &auth, &nginx.pids()?)?;
    println!(
        "req/s        proxy {:>9.0}   nginx {:>9.0}   ratio {:.2} (goal >= 0.9)",
        proxy_max.rps,
        nginx_max.rps,
        proxy_max.rps / nginx_max.rps
    );
    println!(
        "CPU/request  proxy {:>7.2} µs   nginx {:>7.2} µs   ratio {:.2} (goal <= 1.3), at {FIXED_RATE} req/s",
        proxy_cpu.0,
        nginx_cpu.0,
        proxy_cpu.0 / nginx_cpu.0
    );
    println!(
        "p99 at {FIXED_RATE}/s  proxy {:>6.3} ms   nginx {:>6.3} ms   (goal <= 0.3 ms)",
        proxy_cpu.1.p99 * 1e3,
        nginx_cpu.1.p99 * 1e3
    );

    // The same job read through the OpenAI-shaped front, against the native
    // read. Reads taken minutes apart drift by more than the goal's margin
    // on a shared machine, so the two alternate, three pairs, and the
    // median pair's ratio is the figure.
    println!(
        "\n== OpenAI retrieves: GET /v1/videos/ID against the native read, 64 connections, 3 pairs of {} s",
        options.seconds
    );
    let openai_read = format!("http://127.0.0.1:{}/v1/videos/{id}", server.port);
    let mut ratios = Vec::new();
    for pair in 1..=3 {
        let native = load.run(&read_proxy, &auth, None, false)?;
        let openai = load.run(&openai_read, &auth, None, false)?;
        let ratio = openai.rps / native.rps;
        println!(
            "pair {pair}       openai {:>9.0}   native {:>9.0}   ratio {ratio:.2}",
            openai.rps, native.rps
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!("req/s ratio  median {:.2} (goal >= 0.9)", ratios[1]);

    println!("\n== creates: POST, 64 connections, {} s each", options.seconds);
    let proxy_creates = load.run(&proxy_url, &auth, None, true)?;
    let nginx_creates = load.run(&nginx_url, &auth, None, true)?;
    println!(
        "req/s        proxy {:>9.0}   nginx {:>9.0}   ratio {:.3} (goal >= 0.1)",
        proxy_creates.rps,
        nginx_creates.rps,
        proxy_creates.rps / nginx_creates.rps
    );
    println!(
        "p99          proxy {:>6.2} ms   nginx {:>6.2} ms",
        proxy_creates.p99 * 1e3,
        nginx_creates.p99 * 1e3
    );

    println!("\n== memory: RSS per unfinished job, up to {} jobs", options.jobs);
    let metrics_url = format!("http://127.0.0.1:{}/metrics", server.port);
    let jobs_before = metric(&metrics_url, "aimlvid_unfinished_jobs")? as u64;
    let rss_before = server.rss_kib()?;
    let more = options.jobs.saturating_sub(jobs_before).max(1).to_string();
    let started = Instant::now();
    cmd!(sh, "taskset -c 1 {oha} --no-tui --output-format json -n {more} -c 64 -m POST -T application/json -d {CREATE_BODY} -H {auth} {proxy_url}")
        .quiet()
        .ignore_stdout()
        .run()?;
    let create_secs = started.elapsed().as_secs_f64();
    let jobs_after = metric(&metrics_url, "aimlvid_unfinished_jobs")? as u64;
    let rss_after = server.rss_kib()?;
    let per_job =
        (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / (jobs_after - jobs_before).max(1) as f64;
    println!(
        "{} jobs created in {create_secs:.1} s; RSS {} -> {} MiB; {per_job:.0} bytes per unfinished job (goal <= 2048)",
        jobs_after - jobs_before,
        rss_before / 1024,
        rss_after / 1024
    );

    println!("\n== completion wave: {jobs_after} jobs");
    // Every job polled at least once first, so that the wave measures
    // noticing, not the first delay of a model not learned yet.
    let polls = |url: &str| metric_sum(url, "aimlvid_upstream_calls_total{kind=\"poll\"");
    let settle = Instant::now();
    while polls(&metrics_url)? < jobs_after as f64 {
        anyhow::ensure!(settle.elapsed() < Duration::from_secs(900), "jobs were not polled within 15 min");
        std::thread::sleep(Duration::from_millis(500));
    }
    println!("every job polled once after {:.0} s", settle.elapsed().as_secs_f64());
    let polls_before = polls(&metrics_url)?;
    nginx.set_status(true)?;
    let wave = Instant::now();
    loop {
        let left = metric(&metrics_url, "aimlvid_unfinished_jobs")?;
        if left == 0.0 {
            break;
        }
        anyhow::ensure!(
            wave.elapsed() < Duration::from_secs(1800),
            "{left} jobs still unfinished after 30 min"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "all {jobs_after} read completed {:.1} s after the upstream finished them, with {:.0} upstream polls",
        wave.elapsed().as_secs_f64(),
        polls(&metrics_url)? - polls_before
    );
    let failures = metric(&metrics_url, "aimlvid_storage_write_failures_total")?;
    println!("storage write failures (each retried): {failures}");
    drop(server);
    drop(nginx);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// nginx and oha, installed if missing; returns oha's path.
fn ensure_tools(sh: &Shell) -> anyhow::Result<PathBuf> {
    if cmd!(sh, "nginx -v").quiet().ignore_stderr().run().is_err() {
        println!("installing nginx (Debian's nginx-light)");
        cmd!(sh, "apt-get update -qq").run()?;
        cmd!(sh, "apt-get install -y -qq nginx-light").env("DEBIAN_FRONTEND", "noninteractive").run()?;
    }
    let installed = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("no CARGO_HOME or HOME")?
        .join("bin/oha");
    if !installed.exists() && cmd!(sh, "oha --version").quiet().ignore_stdout().run().is_err() {
        println!("installing oha (about 3 minutes)");
        cmd!(sh, "cargo install oha --locked").run()?;
    }
    Ok(if installed.exists() { installed } else { PathBuf::from("oha") })
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("aimlvid-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A static nginx on core 0 playing the upstream.
struct Nginx {
    dir: PathBuf,
    port: u16,
}

impl Nginx {
    fn start(dir: &Path) -> anyhow::Result<Nginx> {
        let nginx = Nginx { dir: dir.join("nginx"), port: free_port()? };
        std::fs::create_dir_all(nginx.dir.join("logs"))?;
        nginx.write_config(false)?;
        let status = Command::new("taskset")
            .args(["-c", "0", "nginx", "-p"])
            .arg(&nginx.dir)
            .arg("-c")
            .arg(nginx.dir.join("nginx.conf"))
            .status()?;
        anyhow::ensure!(status.success(), "nginx did not start");
        wait_for(&format!("http://127.0.0.1:{}/v2/video/generations?generation_id=x", nginx.port))?;
        Ok(nginx)
    }

    fn write_config(&self, completed: bool) -> anyhow::Result<()> {
        let answer = if completed {
            r#"{"id":"$arg_generation_id","status":"completed","video":{"url":"https://example.com/v.mp4"},"meta":{"usage":{"credits_used":100}}}"#
        } else {
            r#"{"id":"$arg_generation_id","status":"queued"}"#
        };
        let config = format!(
            "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log warn;\n\
             events {{ worker_connections 8192; }}\n\
             http {{\n  access_log off;\n  default_type application/json;\n  keepalive_requests 10000000;\n\
               server {{\n    listen 127.0.0.1:{port};\n\
                 location = /v2/video/generations {{\n\
                   if ($request_method = POST) {{ return 200 '{{\"id\":\"$request_id\",\"status\":\"queued\"}}'; }}\n\
                   return 200 '{answer}';\n    }}\n  }}\n}}\n",
            dir = self.dir.display(),
            port = self.port,
        );
        std::fs::write(self.dir.join("nginx.conf"), config)?;
        Ok(())
    }

    /// Answers every job `completed` from now on (or `queued`).
    fn set_status(&self, completed: bool) -> anyhow::Result<()> {
        self.write_config(completed)?;
        self.signal("reload")?;
        // A reload starts new workers; wait until one answers the new way.
        let probe = format!("http://127.0.0.1:{}/v2/video/generations?generation_id=probe", self.port);
        let want = if completed { "completed" } else { "queued" };
        let started = Instant::now();
        while http_get(&probe)?["status"] != want {
            anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "nginx did not reload");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-s", signal])
            .status()?;
        anyhow::ensure!(status.success(), "nginx -s {signal} failed");
        Ok(())
    }

    /// The master and its workers.
    fn pids(&self) -> anyhow::Result<Vec<u32>> {
        let master: u32 = std::fs::read_to_string(self.dir.join("nginx.pid"))?.trim().parse()?;
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc")? {
            let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                && stat_field(&stat, 4) == Some(master.to_string().as_str())
            {
                pids.push(pid);
            }
        }
        Ok(pids)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.signal("quit");
    }
}

/// The release server on core 0, in front of nginx.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(
        bin: &Path,
        db: &Path,
        upstream_port: u16,
        extra: &[String],
        dir: &Path,
    ) -> anyhow::Result<Server> {
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("server.log"))?;
        let child = Command::new("taskset")
            .args(["-c", "0"])
            .arg(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--database"])
            .arg(db)
            .args(["--upstream-url", &format!("http://127.0.0.1:{upstream_port}")])
            .args(extra)
            .env("AIMLAPI_API_KEY", "bench-upstream-key")
            .env_remove("AIMLVID_ADMIN_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the server")?;
        let server = Server { child, port };
        wait_for(&format!("http://127.0.0.1:{port}/healthz"))?;
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("VmRSS")?.parse()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One oha run's figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rps: f64,
    requests: f64,
    /// Seconds.
    p99: f64,
}

struct Load<'a> {
    oha: &'a Path,
    seconds: u64,
}

impl Load<'_> {
    /// oha on core 1 against `url` for the configured time, at `rate` req/s
    /// or as fast as it goes.
    fn run(&self, url: &str, auth: &str, rate: Option<u32>, post: bool) -> anyhow::Result<Figures> {
        let mut command = Command::new("taskset");
        command.args(["-c", "1"]).arg(self.oha).args([
            "--no-tui",
            "--output-format",
            "json",
            "-z",
            &format!("{}s", self.seconds),
            "-c",
            "64",
            "-H",
            auth,
        ]);
        if let Some(rate) = rate {
            command.args(["-q", &rate.to_string()]);
        }
        if post {
            command.args(["-m", "POST", "-T", "application/json", "-d", CREATE_BODY]);
        }
        let output = command.arg(url).output().context("running oha")?;
        anyhow::ensure!(output.status.success(), "oha failed: {}", String::from_utf8_lossy(&output.stderr));
        let report: Value = serde_json::from_slice(&output.stdout).context("oha's JSON")?;
        let codes = &report["statusCodeDistribution"];
        if codes.as_object().is_some_and(|c| c.keys().any(|k| k != "200")) {
            println!("  (status codes other than 200: {codes})");
        }
        let summary = &report["summary"];
        let requests: f64 = codes.as_object().map_or(0.0, |c| c.values().filter_map(Value::as_f64).sum());
        Ok(Figures {
            rps: summary["requestsPerSec"].as_f64().context("requestsPerSec")?,
            requests,
            p99: report["latencyPercentiles"]["p99"].as_f64().context("p99")?,
        })
    }
}

/// CPU microseconds per request of `pids` at the fixed rate, and the run's figures.
fn cpu_per_request(load: &Load<'_>, url: &str, auth: &str, pids: &[u32]) -> anyhow::Result<(f64, Figures)> {
    let before = cpu_ticks(pids)?;
    let figures = load.run(url, auth, Some(FIXED_RATE), false)?;
    let ticks = cpu_ticks(pids)? - before;
    let per_tick_us = 1e6 / clock_ticks_per_second()?;
    Ok((ticks as f64 * per_tick_us / figures.requests.max(1.0), figures))
}

fn cpu_ticks(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // utime and stime: fields 14 and 15.
        for field in [14, 15] {
            total += stat_field(&stat, field).context("short /proc stat")?.parse::<u64>()?;
        }
    }
    Ok(total)
}

/// Field `n` (1-based) of a `/proc/PID/stat` line; the command name may hold spaces.
fn stat_field(stat: &str, n: usize) -> Option<&str> {
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split_whitespace().nth(n - 3)
}

fn clock_ticks_per_second() -> anyhow::Result<f64> {
    let output = Command::new("getconf").arg("CLK_TCK").output()?;
    Ok(String::from_utf8(output.stdout)?.trim().parse()?)
}

fn wait_for(url: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while Command::new("curl").args(["-sf", "-o", "/dev/null", url]).status()?.code() != Some(0) {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(20), "{url} did not answer");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn http_get(url: &str) -> anyhow::Result<Value> {
    let output = Command::new("curl").args(["-sf", url]).output()?;
    anyhow::ensure!(output.status.success(), "GET {url} failed");
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn http_post(url: &str, auth: &str) -> anyhow::Result<Value> {
    let output = Command::new("curl")
        .args([
            "-sf",
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "-H",
            auth,
            "-d",
            CREATE_BODY,
            url,
        ])
        .output()?;
    anyhow::ensure!(output.status.success(), "POST {url} failed");
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The server's `/metrics` text.
fn metrics_text(url: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8(Command::new("curl").args(["-sf", url]).output()?.stdout)?)
}

/// An unlabelled series from `/metrics`.
fn metric(url: &str, name: &str) -> anyhow::Result<f64> {
    let text = metrics_text(url)?;
    let line = text
        .lines()
        .find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name))
        .with_context(|| format!("{name} not in /metrics"))?;
    Ok(line.rsplit_once(' ').context("metric")?.1.parse()?)
}

/// The sum of every series of `/metrics` whose name and labels start with `prefix`.
fn metric_sum(url: &str, prefix: &str) -> anyhow::Result<f64> {
    Ok(metrics_text(url)?
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum())
}
