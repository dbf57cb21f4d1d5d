//! What a person (or a script) sees while a command runs.
//!
//! Progress and notes go to stderr, results to stdout, so that
//! `file=$(aimlvid extend …)` captures just the path. With `--json`, stdout
//! carries one JSON object per event instead, ending with a `result` object.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde_json::{Value, json};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// stderr is a terminal: a live status line and a download bar.
    Live,
    /// stderr is not a terminal: one plain line per change, no animation.
    Plain,
    /// `--quiet`: nothing but the result and errors.
    Quiet,
    /// `--json`: NDJSON events on stdout.
    Json,
}

impl Mode {
    pub(crate) fn detect(quiet: bool, json: bool) -> Mode {
        if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

/// Shows a command's progress and results.
#[derive(Debug)]
pub(crate) struct Reporter {
    mode: Mode,
    /// Every bar is drawn through it, so that log lines can be printed
    /// between redraws (see `logging`).
    multi: MultiProgress,
    /// The job being worked on, named in a final error.
    current: Mutex<Option<String>>,
    /// The journal record of a create whose outcome is unknown, if any.
    unknown_record: Mutex<Option<String>>,
    /// Whether stderr gets colour (`--color`, `NO_COLOR`).
    colors: bool,
}

impl Reporter {
    pub(crate) fn new(mode: Mode, multi: MultiProgress, colors: bool) -> Reporter {
        if mode != Mode::Live {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Reporter { mode, multi, current: Mutex::new(None), unknown_record: Mutex::new(None), colors }
    }

    /// `label` in `colour`, bold, when colours are on.
    fn tag(&self, label: &str, colour: anstyle::AnsiColor) -> String {
        if self.colors {
            let style = anstyle::Style::new().bold().fg_color(Some(colour.into()));
            format!("{style}{label}{style:#}")
        } else {
            label.to_owned()
        }
    }

    pub(crate) fn mode(&self) -> Mode {
        self.mode
    }

    fn human(&self) -> bool {
        matches!(self.mode, Mode::Live | Mode::Plain)
    }

    /// Names the job that a final error concerns.
    pub(crate) fn set_current(&self, id: Option<&str>) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = id.map(str::to_owned);
    }

    pub(crate) fn current(&self) -> Option<String> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Names the journal record of a create whose outcome is unknown, for
    /// the failure result.
    pub(crate) fn set_unknown_record(&self, key: &str) {
        *self.unknown_record.lock().unwrap_or_else(|e| e.into_inner()) = Some(key.to_owned());
    }

    /// A line for people on stderr, between progress redraws; nothing in
    /// quiet or JSON mode.
    pub(crate) fn note(&self, line: impl fmt::Display) {
        if self.human() {
            self.stderr_line(&line.to_string());
        }
    }

    /// A line on stderr whatever the mode: warnings that must not be missed.
    pub(crate) fn warn(&self, line: impl fmt::Display) {
        if self.mode != Mode::Json {
            let line = line.to_string();
            let line = match line.strip_prefix("error: ") {
                Some(rest) => format!("{} {rest}", self.tag("error:", anstyle::AnsiColor::Red)),
                None => format!("{} {line}", self.tag("warning:", anstyle::AnsiColor::Yellow)),
            };
            self.stderr_line(&line);
        }
    }

    fn stderr_line(&self, line: &str) {
        self.multi.suspend(|| {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        });
    }

    /// One NDJSON event on stdout, in JSON mode. Failing to write one is
    /// ignored: the job goes on, and the final result reports the broken pipe.
    pub(crate) fn event(&self, event: Value) {
        if self.mode == Mode::Json {
            let _ = write_json_line(&event);
        }
    }

    /// A job was created.
    pub(crate) fn created(&self, id: &str, model: &str, step: Option<(u32, u32)>) {
        let mut event = json!({"event": "created", "id": id, "model": model});
        if let Some((step, of)) = step {
            event["step"] = json!(step);
            event["of"] = json!(of);
            self.note(format!("created generation {id} (step {step} of {of})"));
        } else {
            self.note(format!("created generation {id}"));
        }
        self.event(event);
    }

    /// Starts showing the wait for job `id`, which has been running for
    /// `since` and is expected to take `expected` (in this machine's time).
    pub(crate) fn waiting(
        &self,
        id: &str,
        label: &str,
        since: Duration,
        expected: Option<aimlvid::JobDurations>,
    ) -> Waiting<'_> {
        let origin = Instant::now().checked_sub(since).unwrap_or_else(Instant::now);
        let bar = (self.mode == Mode::Live).then(|| {
            // Added to `multi` before anything is set: a bar outside it
            // would draw straight to stderr and leave a stale line behind.
            let bar = self.multi.add(ProgressBar::new_spinner().with_elapsed(origin.elapsed()));
            bar.set_style(
                ProgressStyle::with_template(if self.colors {
                    "{spinner:.cyan} {msg:<11} {elapsed_short:>7}  {prefix}{left}"
                } else {
                    "{spinner} {msg:<11} {elapsed_short:>7}  {prefix}{left}"
                })
                .expect("the template is valid")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ")
                .with_key("elapsed_short", |state: &ProgressState, w: &mut dyn fmt::Write| {
                    let _ = w.write_str(&short_duration(state.elapsed()));
                })
                .with_key("left", move |state: &ProgressState, w: &mut dyn fmt::Write| {
                    if let Some(expected) = &expected {
                        let _ = write!(w, "  ({})", time_left(state.elapsed(), expected));
                    }
                }),
            );
            bar.set_prefix(label.to_owned());
            bar.set_message("waiting");
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Waiting { reporter: self, id: id.to_owned(), label: label.to_owned(), origin, expected, bar }
    }

    /// Starts showing a download to `dest`.
    pub(crate) fn download(&self, dest: &Path) -> Download {
        let bar = (self.mode == Mode::Live).then(|| {
            let bar = self.multi.add(ProgressBar::no_length());
            bar.set_style(
                ProgressStyle::with_template(if self.colors {
                    "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
                } else {
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
                })
                .expect("the template is valid")
                .progress_chars("=> "),
            );
            bar.set_message("downloading");
            bar
        });
        if self.mode == Mode::Plain {
            self.note(format!("downloading to {}", dest.display()));
        }
        Download { bar }
    }

    /// A download finished.
    pub(crate) fn downloaded(&self, path: &Path, bytes: u64) {
        self.event(json!({"event": "downloaded", "path": path, "bytes": bytes}));
        if self.mode == Mode::Plain {
            self.note(format!("downloaded {} ({})", path.display(), HumanBytes(bytes)));
        }
    }

    /// The command's result: `json` in JSON mode; otherwise `summary` on
    /// stderr for people (not in quiet mode), then `stdout` for scripts.
    pub(crate) fn result(
        &self,
        json: Value,
        summary: Option<String>,
        stdout: Option<String>,
    ) -> std::io::Result<()> {
        if self.mode == Mode::Json {
            return write_json_line(&json);
        }
        if let Some(summary) = summary {
            self.note(summary);
        }
        if let Some(line) = stdout {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
        }
        Ok(())
    }

    /// An observer of the client's calls that says, in the progress
    /// display, when one is being retried (the library's own log lines
    /// about it are for `-v`).
    pub(crate) fn retry_observer(&self) -> std::sync::Arc<dyn aimlvid::Observer> {
        std::sync::Arc::new(RetryNotes { multi: self.multi.clone(), mode: self.mode })
    }

    /// Prints the error that ends the command, once.
    pub(crate) fn failure(&self, message: &str, code: u8, interrupted: bool) {
        if self.mode == Mode::Json {
            let mut event = json!({
                "event": "result",
                "ok": false,
                "error": message,
                "exit_code": code,
                "kind": crate::exit::kind(code),
                "id": self.current(),
            });
            if let Some(key) = self.unknown_record.lock().unwrap_or_else(|e| e.into_inner()).as_deref() {
                event["journal_key"] = key.into();
            }
            let _ = write_json_line(&event);
        } else if interrupted {
            self.stderr_line(message);
        } else {
            self.stderr_line(&format!("{} {message}", self.tag("error:", anstyle::AnsiColor::Red)));
        }
    }
}

/// Says when a call is retried: a create the API turned away for now
/// (429; any other failed create is never repeated), a poll or a download
/// that got no answer, 429 or 5xx.
#[derive(Debug)]
struct RetryNotes {
    multi: MultiProgress,
    mode: Mode,
}

impl RetryNotes {
    fn note(kind: aimlvid::CallKind, status: Option<u16>) -> Option<String> {
        use aimlvid::CallKind::{Create, Download, Poll};
        let why = match (kind, status) {
            (Create, Some(429)) | (Poll | Download, Some(429)) => "the API is busy (HTTP 429)".to_owned(),
            (Poll | Download, Some(s)) if s >= 500 => format!("the API failed (HTTP {s})"),
            (Poll | Download, None) => "no answer".to_owned(),
            _ => return None,
        };
        Some(format!("{}: {why}; retrying", kind.as_str()))
    }
}

impl aimlvid::Observer for RetryNotes {
    fn exchange(&self, exchange: &aimlvid::Exchange) {
        let Some(note) = RetryNotes::note(exchange.kind, exchange.status) else { return };
        match self.mode {
            Mode::Live | Mode::Plain => self.multi.suspend(|| {
                let _ = writeln!(std::io::stderr().lock(), "{note}");
            }),
            Mode::Json => {
                let _ = write_json_line(&json!({
                    "event": "retrying",
                    "call": exchange.kind.as_str(),
                    "status": exchange.status,
                }));
            }
            Mode::Quiet => {}
        }
    }
}

fn write_json_line(value: &Value) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, value)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// The wait for one job, as a live line or plain lines.
#[derive(Debug)]
pub(crate) struct Waiting<'a> {
    reporter: &'a Reporter,
    id: String,
    label: String,
    origin: Instant,
    /// How long the job is expected to take, in this machine's time.
    expected: Option<aimlvid::JobDurations>,
    bar: Option<ProgressBar>,
}

impl Waiting<'_> {
    /// Time since the job was created (or since the wait began, when unknown).
    pub(crate) fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    /// The job's status changed.
    pub(crate) fn status(&self, status: &aimlvid::Status) {
        let elapsed = self.elapsed();
        let expected = self.expected.filter(|_| !status.is_finished());
        self.reporter.event(json!({
            "event": "status",
            "id": self.id,
            "status": status.as_str(),
            "elapsed_secs": secs(elapsed),
            "expected_left_secs": expected.map(|e| secs(left_of(elapsed, &e).0)),
        }));
        match &self.bar {
            Some(bar) => bar.set_message(status.to_string()),
            None if self.reporter.mode == Mode::Plain => {
                self.reporter.note(plain_status(&self.label, status, elapsed, expected.as_ref()));
            }
            None => {}
        }
    }

    /// The wait ended; `line`, if any, replaces the live line.
    pub(crate) fn finish(mut self, line: Option<String>) {
        self.clear();
        if let Some(line) = line
            && self.reporter.mode == Mode::Live
        {
            self.reporter.note(line);
        }
    }
}

impl Waiting<'_> {
    fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Also when the wait is abandoned (Ctrl-C, an error), so that no stale
/// line stays on screen.
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.clear();
    }
}

/// A download's progress bar.
#[derive(Debug)]
pub(crate) struct Download {
    bar: Option<ProgressBar>,
}

impl Download {
    /// Moves the bar; called from the download as bytes arrive.
    pub(crate) fn update(&self, progress: aimlvid::DownloadProgress) {
        if let Some(bar) = &self.bar {
            if let Some(total) = progress.total
                && bar.length() != Some(total)
            {
                bar.set_length(total);
            }
            bar.set_position(progress.received);
        }
    }
}

/// Cleared however the download ends.
impl Drop for Download {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A status change as a plain line: the job, its status, how long it has
/// run and, while it runs, how long it should still take.
pub(crate) fn plain_status(
    label: &str,
    status: &aimlvid::Status,
    elapsed: Duration,
    expected: Option<&aimlvid::JobDurations>,
) -> String {
    let mut line = format!("{label}  {status}  {}", short_duration(elapsed));
    if let Some(expected) = expected.filter(|_| !status.is_finished()) {
        let _ = write!(line, "  ({})", time_left(elapsed, expected));
    }
    line
}

/// What is left of a job expected to take `expected`, `elapsed` in, and
/// whether that is its slow tail's remainder (the median has passed).
fn left_of(elapsed: Duration, expected: &aimlvid::JobDurations) -> (Duration, bool) {
    if elapsed < expected.p50 {
        (expected.p50 - elapsed, false)
    } else {
        (expected.p90.saturating_sub(elapsed), true)
    }
}

/// `about 1m05s left` until the median, `up to 20s left` until the 90th
/// percentile, then `longer than usual`.
pub(crate) fn time_left(elapsed: Duration, expected: &aimlvid::JobDurations) -> String {
    match left_of(elapsed, expected) {
        (left, false) => format!("about {} left", short_duration(left)),
        (left, true) if !left.is_zero() => format!("up to {} left", short_duration(left)),
        _ => "longer than usual".to_owned(),
    }
}

/// Seconds with millisecond precision, for JSON.
pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// `45s`, `1m12s`, `2h03m`: short enough for a status line.
pub(crate) fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    let mut out = String::new();
    if s < 60 {
        let _ = write!(out, "{s}s");
    } else if s < 3600 {
        let _ = write!(out, "{}m{:02}s", s / 60, s % 60);
    } else if s < 86_400 {
        let _ = write!(out, "{}h{:02}m", s / 3600, (s % 3600) / 60);
    } else {
        let _ = write!(out, "{}d{:02}h", s / 86_400, (s % 86_400) / 3600);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_short() {
        assert_eq!(short_duration(Duration::from_millis(900)), "0s");
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(short_duration(Duration::from_secs(72)), "1m12s");
        assert_eq!(short_duration(Duration::from_secs(3600 * 2 + 180)), "2h03m");
        assert_eq!(short_duration(Duration::from_secs(86_400 * 3 + 7200)), "3d02h");
    }

    #[test]
    fn retries_are_noted_only_for_calls_that_are_retried() {
        use aimlvid::CallKind::{Create, Download, Metrics, Poll};
        let note = RetryNotes::note;
        assert_eq!(note(Poll, Some(503)).as_deref(), Some("poll: the API failed (HTTP 503); retrying"));
        assert_eq!(note(Create, Some(429)).as_deref(), Some("create: the API is busy (HTTP 429); retrying"));
        assert_eq!(note(Download, None).as_deref(), Some("download: no answer; retrying"));
        // A create that failed otherwise is never repeated.
        assert_eq!(note(Create, Some(503)), None);
        assert_eq!(note(Create, None), None);
        assert_eq!(note(Poll, Some(200)), None);
        assert_eq!(note(Poll, Some(404)), None);
        assert_eq!(note(Metrics, None), None);
    }

    #[test]
    fn plain_status_lines_say_how_long_the_job_should_still_take() {
        use aimlvid::Status;
        let expected = aimlvid::JobDurations::new(Duration::from_secs(110), Duration::from_secs(130));
        let line = |status: &Status, secs: u64, expected: Option<&aimlvid::JobDurations>| {
            plain_status("gen-1", status, Duration::from_secs(secs), expected)
        };
        assert_eq!(line(&Status::Queued, 0, Some(&expected)), "gen-1  queued  0s  (about 1m50s left)");
        assert_eq!(
            line(&Status::Generating, 45, Some(&expected)),
            "gen-1  generating  45s  (about 1m05s left)"
        );
        assert_eq!(
            line(&Status::Generating, 115, Some(&expected)),
            "gen-1  generating  1m55s  (up to 15s left)"
        );
        assert_eq!(
            line(&Status::Generating, 140, Some(&expected)),
            "gen-1  generating  2m20s  (longer than usual)"
        );
        assert_eq!(line(&Status::Completed, 112, Some(&expected)), "gen-1  completed  1m52s");
        assert_eq!(line(&Status::Generating, 45, None), "gen-1  generating  45s", "no estimate, none shown");
    }

    #[test]
    fn seconds_keep_milliseconds() {
        assert_eq!(secs(Duration::from_micros(1_234_567)), 1.235);
    }
}
