//! The work every command shares: creating a job with the journal kept
//! ahead of it, following a job to a file, chains of extensions, and Ctrl-C.

use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aimlvid::{
    Client, ExtendModel, ExtendVideo, Generation, JobDurations, PollPolicy, RetryPolicy, VideoInput, Watch,
};
use aimlvid_sim::RunningSim;
use anyhow::Context as _;
use futures_util::StreamExt as _;
use indicatif::HumanBytes;
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::config::{KEY_VARS, Settings};
use crate::exit::{self, Busy, Failure, Interrupted};
use crate::journal::{Chain, JobRecord, JobState, Journal, RecordLock, RequestOptions, SavedFile};
use crate::report::{Reporter, secs, short_duration};

/// What a command runs with.
#[derive(Debug)]
pub(crate) struct App<'r> {
    pub(crate) settings: Settings,
    pub(crate) journal: Journal,
    pub(crate) report: &'r Reporter,
    /// The in-process simulator of `--simulate`; it stops when dropped.
    sim: Option<RunningSim>,
    interrupt: InterruptState,
}

/// What Ctrl-C should do and say, kept current as the command goes on.
#[derive(Debug, Default)]
struct InterruptState {
    /// A create request is in flight: its answer must not be lost.
    creating: AtomicBool,
    /// Ctrl-C arrived during a create; stop once its answer is journaled.
    stop_requested: AtomicBool,
    /// `aimlvid resume` is running: it is also what resumes each job.
    resuming: AtomicBool,
    /// What to print if interrupted now.
    message: Mutex<String>,
}

/// A clip to extend, and how the journal names it.
#[derive(Debug)]
pub(crate) struct Input {
    pub(crate) video: VideoInput,
    /// The absolute path or the URL; never the inline bytes.
    pub(crate) label: String,
}

impl Input {
    /// A command-line VIDEO: an https:// URL or a local file, checked now.
    pub(crate) async fn parse(arg: &str) -> anyhow::Result<Input> {
        let video = VideoInput::parse(arg).await?;
        let label = if arg.starts_with("data:") {
            "(inline data: URI)".to_owned()
        } else if arg.contains("://") {
            arg.to_owned()
        } else {
            absolute(Path::new(arg))?.display().to_string()
        };
        Ok(Input { video, label })
    }

    /// The simulator's sample clip, for `--simulate` without a VIDEO.
    pub(crate) fn sample() -> anyhow::Result<Input> {
        Ok(Input {
            video: VideoInput::from_bytes(aimlvid_sim::SAMPLE_INPUT)?,
            label: "(the simulator's sample clip)".to_owned(),
        })
    }
}

/// A finished job: its result on disk.
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub(crate) id: String,
    /// The first (usually only) result file.
    pub(crate) output: PathBuf,
    /// Every result file, `output` first.
    pub(crate) outputs: Vec<PathBuf>,
    /// All result files together.
    pub(crate) bytes: u64,
    pub(crate) credits_used: Option<f64>,
    /// From creation (as far as known) to the last file saved.
    pub(crate) elapsed: Duration,
    /// Of which the download took this long.
    pub(crate) download: Duration,
    /// Where the result can be fetched again, when known.
    pub(crate) video_url: Option<String>,
}

impl Finished {
    /// A job the journal says is downloaded.
    pub(crate) fn from_record(record: &JobRecord) -> anyhow::Result<Finished> {
        let bytes = match record.bytes {
            Some(bytes) => bytes,
            None => std::fs::metadata(&record.output)
                .with_context(|| format!("reading {}", record.output.display()))?
                .len(),
        };
        let outputs = if record.files.is_empty() {
            vec![record.output.clone()]
        } else {
            record.files.iter().map(|f| f.path.clone()).collect()
        };
        Ok(Finished {
            id: record.id.clone().unwrap_or_default(),
            output: record.output.clone(),
            outputs,
            bytes,
            credits_used: record.credits_used,
            elapsed: Duration::ZERO,
            download: Duration::ZERO,
            video_url: None,
        })
    }
}

/// One or more extensions, each result becoming the next input.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) model: ExtendModel,
    /// One per step.
    pub(crate) prompts: Vec<String>,
    pub(crate) options: RequestOptions,
    pub(crate) final_output: PathBuf,
    pub(crate) force: bool,
}

impl Plan {
    fn steps(&self) -> u32 {
        self.prompts.len() as u32
    }

    /// Where step `step` (from 1) writes its result: the final output for
    /// the last step, `<stem>.step<N>.<ext>` beside it for the others.
    pub(crate) fn output_of(&self, step: u32) -> PathBuf {
        if step >= self.steps() {
            return self.final_output.clone();
        }
        let stem = self.final_output.file_stem().map_or_else(|| "extended".into(), |s| s.to_string_lossy());
        let ext = self.final_output.extension().map_or_else(|| "mp4".into(), |s| s.to_string_lossy());
        self.final_output.with_file_name(format!("{stem}.step{step}.{ext}"))
    }

    /// The request of step `step`.
    pub(crate) fn request(&self, step: u32, video: VideoInput) -> ExtendVideo {
        let o = &self.options;
        let mut request = ExtendVideo::new(self.prompts[step as usize - 1].clone(), video).model(self.model);
        request.aspect_ratio = o.aspect_ratio;
        request.duration = o.duration;
        request.resolution = o.resolution;
        request.generate_audio = o.generate_audio;
        request.auto_fix = o.auto_fix;
        request.provider = o.provider.clone();
        request
    }

    fn chain(&self, step: u32, parent: Option<String>) -> Option<Chain> {
        (self.steps() > 1).then(|| Chain {
            step,
            of: self.steps(),
            parent,
            prompts: self.prompts.clone(),
            final_output: self.final_output.clone(),
        })
    }

    /// A journaled single job, to run again.
    fn single(record: &JobRecord, force: bool) -> anyhow::Result<Plan> {
        let prompt = record.prompt.clone().context("the journal does not say what the prompt was")?;
        let chain = Chain {
            step: 1,
            of: 1,
            parent: None,
            prompts: vec![prompt],
            final_output: record.output.clone(),
        };
        Plan::from_record(record, &chain, force)
    }

    /// The rest of a journaled chain.
    fn from_record(record: &JobRecord, chain: &Chain, force: bool) -> anyhow::Result<Plan> {
        let model = record.model.as_deref().context("the journal does not say which model the chain uses")?;
        let model: ExtendModel = serde_json::from_value(serde_json::Value::String(model.to_owned()))
            .with_context(|| format!("the journal names an unknown extend model {model:?}"))?;
        Ok(Plan {
            model,
            prompts: chain.prompts.clone(),
            options: record.options.clone(),
            final_output: chain.final_output.clone(),
            force,
        })
    }
}

/// Prints the result of jobs followed to their files.
pub(crate) fn report_finished(app: &App<'_>, steps: &[Finished], with_steps: bool) -> anyhow::Result<()> {
    let last = steps.last().ok_or_else(|| anyhow::anyhow!("no job was run"))?;
    let known: Vec<f64> = steps.iter().filter_map(|s| s.credits_used).collect();
    let credits = (!known.is_empty()).then(|| known.iter().sum::<f64>());
    // Whole credits, as the API bills them, for their exact dollar value.
    let charged = credits.and_then(aimlvid::Credits::from_f64_rounded);
    let elapsed: std::time::Duration = steps.iter().map(|s| s.elapsed).sum();
    let download: std::time::Duration = steps.iter().map(|s| s.download).sum();
    let mut result = json!({
        "event": "result",
        "ok": true,
        "id": last.id,
        "status": "completed",
        "output": last.output,
        "outputs": last.outputs,
        "bytes": last.bytes,
        "credits_used": credits,
        "usd": charged.map(aimlvid::Credits::usd),
        "elapsed_secs": secs(elapsed),
        "download_secs": secs(download),
    });
    if with_steps {
        result["steps"] = json!(steps.iter().map(|s| s.id.as_str()).collect::<Vec<_>>());
    }
    let mut summary = String::new();
    if steps.len() > 1 {
        let _ = write!(summary, "{} extensions", steps.len());
    } else {
        summary.push_str("done");
    }
    let _ = write!(summary, " in {}", short_duration(elapsed));
    match charged {
        Some(c) => {
            let _ = write!(summary, " · {c} used");
        }
        None => summary.push_str(" · credits used not reported"),
    }
    if last.outputs.len() > 1 {
        let _ = write!(summary, " · {} videos", last.outputs.len());
    }
    let _ = write!(summary, " · {} · generation {}", HumanBytes(last.bytes), last.id);
    let files: Vec<String> = last.outputs.iter().map(|p| p.display().to_string()).collect();
    app.report.result(result, Some(summary), Some(files.join("\n")))?;
    Ok(())
}

/// Where result `index` (from 0) of a job goes: the output itself, then
/// `<stem>-2.<ext>`, `<stem>-3.<ext>`… beside it.
pub(crate) fn numbered(output: &Path, index: usize) -> PathBuf {
    if index == 0 {
        return output.to_path_buf();
    }
    let stem = output.file_stem().map_or_else(|| "video".into(), |s| s.to_string_lossy());
    let ext = output.extension().map_or_else(|| "mp4".into(), |s| s.to_string_lossy());
    output.with_file_name(format!("{stem}-{}.{ext}", index + 1))
}

/// `path` made absolute against the current directory, so that the journal
/// and printed commands work from anywhere.
pub(crate) fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// Where `-o` says to write, made absolute: a directory (one that exists,
/// or a path ending in a separator) means that directory with
/// `default_name`, as `cp` and gh's `-D` take one.
pub(crate) fn output_path(given: &Path, default_name: &str) -> anyhow::Result<PathBuf> {
    let into_dir = given.is_dir() || given.as_os_str().to_string_lossy().ends_with(std::path::is_separator);
    let path = if into_dir { given.join(default_name) } else { given.to_path_buf() };
    absolute(&path)
}

/// Checks, before anything is sent or paid for, that a result can be
/// written to `path`: its nearest existing directory must be a directory
/// this process can create files in (tried, not guessed from permission
/// bits, which say nothing of read-only mounts or of root).
pub(crate) fn ensure_writable(path: &Path) -> anyhow::Result<()> {
    let refuse = |why: String| -> anyhow::Error {
        Failure::new(
            exit::LOCAL,
            format!(
                "cannot write {}: {why}; choose another place with -o (nothing was sent)",
                path.display()
            ),
        )
        .into()
    };
    let mut dir = path.parent().unwrap_or(Path::new("."));
    loop {
        match std::fs::metadata(dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(refuse(format!("{} is not a directory", dir.display()))),
            // A missing directory is made when the download starts; a
            // file in the way is found on the way up.
            Err(e)
                if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
            {
                match dir.parent() {
                    Some(parent) => dir = parent,
                    None => return Err(refuse(format!("{} does not exist", dir.display()))),
                }
            }
            Err(e) => return Err(refuse(format!("{}: {e}", dir.display()))),
        }
    }
    let probe = dir.join(format!(".aimlvid-probe-{}-{:08x}", std::process::id(), fastrand::u32(..)));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(refuse(format!("cannot create files in {} ({e})", dir.display()))),
    }
}

/// Refuses to replace an existing file without `--force`, and a directory
/// at all.
pub(crate) fn ensure_free(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.is_dir() {
        return Err(Failure::new(
            exit::LOCAL,
            format!("{} is a directory; choose a file name with -o", path.display()),
        )
        .into());
    }
    if !force && path.exists() {
        return Err(Failure::usage(format!(
            "{} already exists; pass --force to replace it, or choose another file with -o",
            path.display()
        ))
        .into());
    }
    Ok(())
}

/// Whether a step's result can go inline as the next step's input; larger
/// ones are passed by their result URL instead.
fn fits_inline(bytes: u64) -> bool {
    bytes <= aimlvid::DEFAULT_MAX_INLINE_BYTES
}

/// Quotes an argument for a POSIX shell, only when it needs it.
pub(crate) fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if safe { arg.to_owned() } else { format!("'{}'", arg.replace('\'', r"'\''")) }
}

impl<'r> App<'r> {
    /// Sets up; with `simulate`, starts the in-process simulator.
    pub(crate) async fn new(
        settings: Settings,
        report: &'r Reporter,
        simulate: bool,
    ) -> anyhow::Result<App<'r>> {
        let sim = if simulate { Some(crate::sim::start_in_process().await?) } else { None };
        let journal = Journal::new(settings.journal_dir.clone());
        let interrupt = InterruptState {
            message: Mutex::new("interrupted; no job had been created".to_owned()),
            ..InterruptState::default()
        };
        Ok(App { settings, journal, report, sim, interrupt })
    }

    pub(crate) fn simulating(&self) -> bool {
        self.sim.is_some()
    }

    /// A client for the server `journaled` (a job's base URL from the
    /// journal) unless a flag or the environment names another.
    pub(crate) fn client(&self, journaled: Option<&str>) -> anyhow::Result<Client> {
        let scale = self.settings.time_scale;
        let builder = match &self.sim {
            Some(sim) => {
                // Polls keep pace with the in-process simulator's own clock.
                let scale = crate::sim::SIMULATE_TIME_SCALE;
                Client::builder()
                    .api_key(aimlvid_sim::DEFAULT_API_KEY)
                    .base_url(sim.base_url())
                    .poll_policy(PollPolicy::default().time_scaled(scale))
                    .retry_policy(RetryPolicy::default().time_scaled(scale))
            }
            None => {
                let base_url = self.settings.base_url(journaled);
                let allow_http = crate::config::first_env(&["AIMLVID_ALLOW_HTTP"])
                    .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
                // The scale is set here, whatever the library would read
                // from the environment, so that it is applied once.
                let local = aimlvid::is_local_url(&base_url);
                let builder = aimlvid::ClientBuilder::from_env()
                    .base_url(&base_url)
                    .allow_plain_http(allow_http)
                    .poll_policy(PollPolicy::default())
                    .time_scale(if local { scale } else { 1.0 });
                if scale != 1.0 && !local {
                    // Against the real API it would only poll too often.
                    self.report.warn(format!(
                        "ignoring AIMLVID_TIME_SCALE: it is for a simulator on this machine or network, \
                         and {base_url} is neither"
                    ));
                }
                builder
            }
        };
        builder.observer(self.report.retry_observer()).build().map_err(|e| match e {
            aimlvid::Error::MissingApiKey => Failure::new(
                exit::AUTH,
                format!(
                    "no API key: set {} in the environment (export {}=<your key>; keys are at \
                     https://aimlapi.com/app/keys), or add --simulate to try aimlvid without one",
                    KEY_VARS[0], KEY_VARS[0]
                ),
            )
            .into(),
            other => other.into(),
        })
    }

    /// How much faster than real time `client`'s server runs: the
    /// in-process simulator's scale, `AIMLVID_TIME_SCALE` for a server on
    /// this machine or network, else 1.
    fn time_scale(&self, client: &Client) -> f64 {
        if self.sim.is_some() {
            crate::sim::SIMULATE_TIME_SCALE
        } else if aimlvid::is_local_url(client.base_url()) {
            self.settings.time_scale
        } else {
            1.0
        }
    }

    /// The schedule to follow a job of `model` on, fitted to how long its
    /// jobs take. Asked before the create, so that looking the durations up
    /// never delays the first poll.
    pub(crate) async fn poll_policy(&self, client: &Client, model: &str) -> PollPolicy {
        crate::timing::policy_for(client, &self.journal, model, self.time_scale(client)).await
    }

    /// How long a job of `model` is expected to take, in this machine's
    /// time (a simulator's durations divided by its time scale).
    pub(crate) async fn expected_durations(&self, client: &Client, model: &str) -> Option<JobDurations> {
        let (durations, _) = crate::timing::durations_of(client, &self.journal, model).await;
        let scale = self.time_scale(client);
        durations.map(|d| JobDurations::new(d.p50.div_f64(scale), d.p90.div_f64(scale)))
    }

    /// A new journal record for a job on `client`'s server.
    pub(crate) fn record(&self, client: &Client, output: PathBuf, state: JobState) -> JobRecord {
        let mut record = JobRecord::new(client.base_url().to_owned(), output, state);
        record.simulated = self.simulating();
        record.time_scale = Some(self.time_scale(client));
        record
    }

    /// A record for a job known only by its id (one created elsewhere).
    pub(crate) fn adopt(&self, client: &Client, id: &str, output: PathBuf) -> JobRecord {
        let mut record = self.record(client, output, JobState::Queued);
        record.id = Some(id.to_owned());
        record
    }

    /// The command that picks `record`'s job up again, as the user would type it.
    pub(crate) fn resume_command(&self, record: &JobRecord) -> String {
        let mut args: Vec<String> = vec!["aimlvid".into()];
        let chained = record.chain.as_ref().is_some_and(|c| c.of > 1);
        if self.interrupt.resuming.load(Ordering::SeqCst) || chained {
            args.push("resume".into());
        } else {
            args.extend([
                "wait".into(),
                record.id.clone().unwrap_or_default(),
                "-o".into(),
                record.output.display().to_string(),
            ]);
        }
        let default = aimlvid::DEFAULT_BASE_URL.trim_end_matches('/');
        if record.base_url.trim_end_matches('/') != default {
            args.extend(["--base-url".into(), record.base_url.clone()]);
        }
        if self.settings.journal_from_flag {
            args.extend(["--journal".into(), self.journal.dir().display().to_string()]);
        }
        args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    }

    /// Sets what Ctrl-C says while `record`'s job runs.
    fn set_hint(&self, record: &JobRecord) {
        let id = record.id.as_deref().unwrap_or("(unknown)");
        let message = if record.simulated {
            format!(
                "generation {id} ran on the in-process simulator, which stops with this command; \
                 nothing is left running"
            )
        } else {
            let step = match &record.chain {
                Some(c) if c.of > 1 => format!(" (step {} of {})", c.step, c.of),
                _ => String::new(),
            };
            format!("generation {id}{step} is still running; resume with: {}", self.resume_command(record))
        };
        self.set_message(message);
    }

    fn set_message(&self, message: String) {
        *self.interrupt.message.lock().unwrap_or_else(|e| e.into_inner()) = message;
    }

    fn message(&self) -> String {
        self.interrupt.message.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Marks this run as `aimlvid resume`, whose jobs it resumes itself.
    pub(crate) fn set_resuming(&self) {
        self.interrupt.resuming.store(true, Ordering::SeqCst);
        self.set_message("interrupted; resume with: aimlvid resume".to_owned());
    }

    /// Runs `work` until it ends or Ctrl-C arrives. Ctrl-C during a create
    /// lets the create finish first, so that the job it may have started is
    /// journaled with its id; a second Ctrl-C abandons it.
    pub(crate) async fn interruptible<T>(
        &self,
        work: impl Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                result = &mut work => return result,
                () = crate::exit::ctrl_c() => {
                    let creating = self.interrupt.creating.load(Ordering::SeqCst);
                    if creating && !self.interrupt.stop_requested.swap(true, Ordering::SeqCst) {
                        self.report.warn(
                            "Ctrl-C: finishing the create request so that its job is not lost; \
                             press Ctrl-C again to abandon it",
                        );
                        continue;
                    }
                    return Err(Interrupted(self.message()).into());
                }
            }
        }
    }

    /// Creates a job. The journal records the request before it is sent
    /// and the id as soon as it is known, so a crash at any point leaves a
    /// trace of a job that may be billed. A create the API refused leaves no
    /// job, and its record is removed.
    pub(crate) async fn create(
        &self,
        client: &Client,
        request: &impl aimlvid::CreateRequest,
        mut record: JobRecord,
    ) -> anyhow::Result<(Generation, JobRecord)> {
        record.state = JobState::Creating;
        // With the API's catalogue the client refuses a model it no longer
        // lists, before the journal or the API sees the create.
        let live = crate::prices::live_catalogue(client, &self.journal, false).await.now;
        // A model newer than the build is checked by its cached document,
        // which the client would otherwise read again.
        let model = client.resolve_model(request.model());
        if aimlvid::catalog::model(&model).is_none() && live.is_some_and(|live| live.get(&model).is_some()) {
            crate::prices::live_spec(client, &self.journal, &model).await;
        }
        // The key doubles as the create's X-Client-Request-Id, journaled
        // before sending: a lost answer can then be found in the API's logs.
        let client_request_id = aimlvid::ClientRequestId::new(record.key.clone())?;
        record.client_request_id = Some(client_request_id.to_string());
        // Held while the create is in flight: `resume` looks up a `creating`
        // record only when no live process holds it (a killed one holds nothing).
        let _creating = self.journal.lock(&record.key)?;
        self.journal.save(&mut record)?;
        self.set_message(format!(
            "interrupted while creating a job: it may exist and be billed. It is in the journal as \
             `creating` (see `aimlvid jobs`); `aimlvid resume` looks it up in the API's request logs, \
             so do not create it again [journal record {}]",
            record.key
        ));
        self.interrupt.creating.store(true, Ordering::SeqCst);
        let answer = client.create_with_id(request, &client_request_id).await;
        self.interrupt.creating.store(false, Ordering::SeqCst);
        match answer {
            Ok(created) => {
                let id = created.id.clone();
                record.id = Some(id.clone());
                record.state = JobState::from_status(&created.status);
                record.receipt = created.receipt.as_ref().map(Into::into);
                self.journal
                    .save(&mut record)
                    .with_context(|| format!("generation {id} was created but could not be journaled"))?;
                self.report.set_current(Some(&id));
                let step = record.chain.as_ref().map(|c| (c.step, c.of));
                self.report.created(&id, request.model(), step);
                self.set_hint(&record);
                if self.interrupt.stop_requested.load(Ordering::SeqCst) {
                    return Err(Interrupted(self.message()).into());
                }
                Ok((created, record))
            }
            Err(e @ aimlvid::Error::CreateOutcomeUnknown { .. }) => {
                record.state = JobState::Unknown;
                record.error = Some(e.to_string());
                self.journal.save(&mut record)?;
                self.report.set_unknown_record(&record.key);
                self.report.warn(format!(
                    "the request is recorded in the journal (aimlvid jobs) as record {}; \
                     `aimlvid resume` looks it up in the API's request logs",
                    record.key
                ));
                Err(e.into())
            }
            Err(e) => {
                self.journal.remove(&record.key)?;
                Err(e.into())
            }
        }
    }

    /// Takes the job's journal lock for as long as the guard lives, so that
    /// two processes never follow (and download) one job at once.
    pub(crate) fn lock_record(&self, record: &JobRecord, id: &str) -> anyhow::Result<RecordLock> {
        self.journal.lock(&record.key)?.ok_or_else(|| {
            Busy(format!(
                "generation {id} is being followed by another aimlvid process (journal record {}); \
                 leaving it to that one",
                record.key
            ))
            .into()
        })
    }

    /// Waits for a journaled job with `watch`, then downloads its result,
    /// keeping the journal current all along. `fresh` says the job was
    /// created by this command (so its age is the wait's).
    pub(crate) async fn follow(
        &self,
        client: &Client,
        record: &mut JobRecord,
        watch: Watch,
        force: bool,
        fresh: bool,
    ) -> anyhow::Result<Finished> {
        let id = record.id.clone().context("a journaled job without an id cannot be followed")?;
        let _following = self.lock_record(record, &id)?;
        self.report.set_current(Some(&id));
        self.set_hint(record);
        let since = if fresh { Duration::ZERO } else { record.age().unwrap_or_default() };
        let label = match &record.chain {
            Some(c) if c.of > 1 => format!("{id} (step {} of {})", c.step, c.of),
            _ => id.clone(),
        };
        let expected = match record.model.as_deref() {
            Some(model) => self.expected_durations(client, model).await,
            None => None,
        };
        let waiting = self.report.waiting(&id, &label, since, expected);
        let mut watch = watch;
        let outcome: anyhow::Result<Generation> = async {
            let mut last = None;
            while let Some(item) = watch.next().await {
                if let Err(aimlvid::Error::GenerationFailed { .. }) = &item {
                    // The stream's last item: shown like any other status.
                    waiting.status(&aimlvid::Status::Error);
                }
                let generation = item?;
                waiting.status(&generation.status);
                let state = JobState::from_status(&generation.status);
                // A started download stays `downloading`: its part file is this job's.
                let keep = record.state == JobState::Downloading && state == JobState::Completed;
                if record.state != state && !keep {
                    record.state = state;
                    self.journal.save(record)?;
                }
                last = Some(generation);
            }
            Ok(last.context("the API reported nothing about the job")?.into_result()?)
        }
        .await;
        let elapsed = waiting.elapsed();
        let generation = match outcome {
            Ok(generation) => {
                waiting.finish(Some(format!("completed {label} in {}", short_duration(elapsed))));
                generation
            }
            Err(e) => {
                waiting.finish(None);
                if matches!(e.downcast_ref::<aimlvid::Error>(), Some(aimlvid::Error::GenerationFailed { .. }))
                {
                    record.state = JobState::Failed;
                }
                record.error = Some(format!("{e:#}"));
                self.journal.save(record)?;
                return Err(e);
            }
        };
        if fresh {
            // From the record, made just before the create was sent: the
            // wait alone misses the create and the journal's writes.
            record.took_secs = record.age().map(|d| d.as_secs_f64());
        }
        let downloading = Instant::now();
        let files = self.fetch(client, record, &generation, force).await?;
        let download = downloading.elapsed();
        Ok(Finished {
            id,
            output: record.output.clone(),
            outputs: files.iter().map(|f| f.path.clone()).collect(),
            bytes: files.iter().map(|f| f.bytes).sum(),
            credits_used: generation.credits_used(),
            // The summary's time is the user's wait: the download's too.
            elapsed: elapsed + download,
            download,
            video_url: generation.video_url().map(str::to_owned),
        })
    }

    /// Downloads a completed job's result to the record's output, resuming
    /// the record's own partial download if there is one, and returns every
    /// file it wrote. The record becomes `downloaded` only once each file is
    /// whole in place.
    pub(crate) async fn fetch(
        &self,
        client: &Client,
        record: &mut JobRecord,
        generation: &Generation,
        force: bool,
    ) -> anyhow::Result<Vec<SavedFile>> {
        let id = &generation.id;
        let urls = generation.video_urls();
        if urls.is_empty() {
            return Err(Failure::new(
                exit::NETWORK,
                format!("generation {id} completed without a video URL"),
            )
            .into());
        }
        if urls.len() > 1 {
            let names: Vec<String> =
                (0..urls.len()).map(|i| numbered(&record.output, i).display().to_string()).collect();
            self.report.note(format!("generation {id} made {} videos: {}", urls.len(), names.join(", ")));
        }
        if record.state != JobState::Downloading {
            // Files of an earlier download (to another output) are not this one's.
            record.files.clear();
        }
        let mut files = Vec::new();
        for (index, url) in urls.iter().enumerate() {
            let dest = numbered(&record.output, index);
            // Finished by an earlier run of this download, which a crash cut
            // short: only a file the journal saw finish, still whole, counts.
            if record.state == JobState::Downloading
                && !force
                && let Some(saved) = record.saved(&dest)
            {
                files.push(saved.clone());
                continue;
            }
            let bytes = self.fetch_one(client, record, generation, url, &dest, force).await?;
            let saved = SavedFile { path: dest, bytes };
            record.files.retain(|f| f.path != saved.path);
            record.files.push(saved.clone());
            self.journal.save(record)?;
            files.push(saved);
        }
        record.state = JobState::Downloaded;
        record.bytes = Some(files.iter().map(|f| f.bytes).sum());
        record.error = None;
        self.journal.save(record)?;
        Ok(files)
    }

    /// The command that downloads `record`'s `results` result files again,
    /// as the user would type it: with `--force` when a file is in the way
    /// of any of them (one this download wrote, or one it would not
    /// replace), which `download` would otherwise refuse.
    pub(crate) fn download_command(&self, record: &JobRecord, results: usize) -> String {
        let mut args: Vec<String> = vec![
            "aimlvid".into(),
            "download".into(),
            record.id.clone().unwrap_or_default(),
            "-o".into(),
            record.output.display().to_string(),
        ];
        if (0..results.max(1))
            .any(|i| numbered(&record.output, i).symlink_metadata().is_ok_and(|m| !m.is_dir()))
        {
            args.push("--force".into());
        }
        let default = aimlvid::DEFAULT_BASE_URL.trim_end_matches('/');
        if record.base_url.trim_end_matches('/') != default {
            args.extend(["--base-url".into(), record.base_url.clone()]);
        }
        if self.settings.journal_from_flag {
            args.extend(["--journal".into(), self.journal.dir().display().to_string()]);
        }
        args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" ")
    }

    /// Downloads one result of a completed job to `dest`.
    async fn fetch_one(
        &self,
        client: &Client,
        record: &mut JobRecord,
        generation: &Generation,
        url: &str,
        dest: &Path,
        force: bool,
    ) -> anyhow::Result<u64> {
        let id = &generation.id;
        let dest = dest.to_path_buf();
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty())
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            let why = format!("creating {}: {e}", parent.display());
            return Err(self.unsaved(record, generation, &why, exit::LOCAL));
        }
        if dest.is_dir() {
            let why = format!("{} is a directory", dest.display());
            return Err(self.unsaved(record, generation, &why, exit::LOCAL));
        }
        if !force && dest.exists() {
            let why = format!("{} already exists (--force replaces it)", dest.display());
            return Err(self.unsaved(record, generation, &why, exit::LOCAL));
        }
        // A part file this job did not start belongs to another download:
        // resuming it would splice two videos together.
        let part = aimlvid::partial_path(&dest);
        if record.state != JobState::Downloading && part.exists() {
            tracing::info!("removing {}, left by another download", part.display());
            std::fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))?;
        }
        record.state = JobState::Downloading;
        record.credits_used = generation.credits_used();
        self.journal.save(record)?;
        let bar = self.report.download(&dest);
        let span = tracing::info_span!("download", generation_id = %id);
        let result = client.download_url(url, &dest, |p| bar.update(p)).instrument(span).await;
        drop(bar);
        match result {
            Ok(file) => {
                self.report.downloaded(&file.path, file.bytes);
                Ok(file.bytes)
            }
            Err(e) => {
                let e = anyhow::Error::from(e);
                Err(self.unsaved(record, generation, &exit::one_line(&e), exit::code_for(&e)))
            }
        }
    }

    /// A completed job whose video could not be saved: why, and the
    /// command that gets it once the cause is fixed. The record keeps the
    /// reason and stays unfinished, so `resume` and `jobs` still show it.
    /// A paid job never earns exit 2, which says nothing was sent: a local
    /// cause is 1, as `resume` reports it.
    fn unsaved(&self, record: &mut JobRecord, generation: &Generation, why: &str, code: u8) -> anyhow::Error {
        let code = if code == exit::USAGE { exit::LOCAL } else { code };
        let id = record.id.clone().unwrap_or_else(|| "(unknown)".into());
        let how = if record.simulated {
            "it ran on the in-process simulator, which stops with this command".to_owned()
        } else {
            let command = self.download_command(record, generation.video_urls().len());
            format!("the job is paid for and its result kept; get it with: {command}")
        };
        record.error = Some(format!("video not saved: {why}"));
        if let Err(e) = self.journal.save(record) {
            return e;
        }
        Failure::new(code, format!("generation {id} completed, but its video was not saved: {why}; {how}"))
            .into()
    }

    /// Runs steps `first..` of `plan`, starting from `input`; `parent` is
    /// the id of the step before `first`, if any.
    pub(crate) async fn run_chain(
        &self,
        client: &Client,
        plan: &Plan,
        first: u32,
        input: Input,
        parent: Option<String>,
    ) -> anyhow::Result<Vec<Finished>> {
        let mut input = Some(input);
        let mut parent = parent;
        let mut done = Vec::new();
        for step in first..=plan.steps() {
            let Input { video, label } = match input.take() {
                Some(input) => input,
                None => next_input(client, done.last().context("a chain step without an input")?).await?,
            };
            let mut record = self.record(client, plan.output_of(step), JobState::Creating);
            record.model = Some(plan.model.id().to_owned());
            record.prompt = Some(plan.prompts[step as usize - 1].clone());
            record.input = Some(label);
            record.options = plan.options.clone();
            record.chain = plan.chain(step, parent.clone());
            let request = plan.request(step, video);
            let policy = self.poll_policy(client, plan.model.id()).await;
            let (created, mut record) = self.create(client, &request, record).await?;
            // The inline video can be megabytes: do not hold it while waiting.
            drop(request);
            let watch = client.watch_created_with(created, policy);
            let finished = self.follow(client, &mut record, watch, plan.force, true).await?;
            parent = Some(finished.id.clone());
            done.push(finished);
        }
        Ok(done)
    }

    /// Looks a create whose answer never arrived up in the API's request
    /// logs by the client request id it was sent with, and updates its
    /// record: found (it now has an id and is followed like any other),
    /// refused (nothing was charged), or still unknown.
    pub(crate) async fn recover_create(&self, record: &mut JobRecord) -> anyhow::Result<Recovered> {
        let Some(client_request_id) = record.client_request_id.clone() else {
            return Ok(Recovered::Untraceable);
        };
        let client_request_id = aimlvid::ClientRequestId::new(client_request_id)?;
        let client = self.client(Some(&record.base_url))?;
        let sent_at = humantime::parse_rfc3339(&record.created_at).unwrap_or_else(|_| SystemTime::now());
        match client.find_create(&client_request_id, record.model.as_deref(), sent_at).await? {
            aimlvid::CreateLookup::Accepted(job) => {
                record.id = Some(job.id.clone());
                record.state = JobState::from_status(&job.status);
                record.error = None;
                self.journal.save(record)?;
                Ok(Recovered::Found(job.id))
            }
            aimlvid::CreateLookup::Refused => {
                record.state = JobState::Failed;
                record.error = Some("the API refused this create; nothing was charged".to_owned());
                self.journal.save(record)?;
                Ok(Recovered::Refused)
            }
            _ => Ok(Recovered::NotLogged),
        }
    }

    /// Runs a failed job again with the same model, prompt and options:
    /// a chain step gets its parent's result as input and continues the
    /// chain; a single job gets its original input again.
    pub(crate) async fn retry_failed(
        &self,
        records: &[JobRecord],
        record: &JobRecord,
        force: bool,
    ) -> anyhow::Result<Vec<Finished>> {
        let model = record.model.as_deref().unwrap_or_default();
        if serde_json::from_value::<ExtendModel>(serde_json::Value::String(model.to_owned())).is_err() {
            anyhow::bail!(
                "a {model} job is not run again by --retry-failed: the journal keeps an extend's request,                  not every model's parameters; run its `aimlvid generate` command again"
            );
        }
        let client = self.client(Some(&record.base_url))?;
        let (plan, step, parent) = match &record.chain {
            Some(chain) => (Plan::from_record(record, chain, force)?, chain.step, chain.parent.clone()),
            None => (Plan::single(record, force)?, 1, None),
        };
        let input = match &parent {
            Some(parent_id) => {
                let parent =
                    records.iter().find(|r| r.id.as_deref() == Some(parent_id.as_str())).with_context(
                        || format!("the journal no longer holds the step before it ({parent_id})"),
                    )?;
                next_input(&client, &Finished::from_record(parent)?).await?
            }
            None => {
                let label = record.input.as_deref().context("the journal does not say what the input was")?;
                anyhow::ensure!(
                    !label.starts_with('('),
                    "its input was {label}, which cannot be read again; run the extend command again"
                );
                Input::parse(label).await?
            }
        };
        self.report.note(format!(
            "running failed generation {} again{}",
            record.id.as_deref().unwrap_or("(no id)"),
            record.chain.as_ref().map(|c| format!(" (step {} of {})", c.step, c.of)).unwrap_or_default()
        ));
        self.run_chain(&client, &plan, step, input, parent).await
    }

    /// Finishes one journaled job: waits for it and downloads it unless
    /// that is done, then carries on with its chain if it has one that
    /// `has_next` says was not continued yet.
    pub(crate) async fn resume_one(
        &self,
        record: &mut JobRecord,
        has_next: bool,
        force: bool,
    ) -> anyhow::Result<Vec<Finished>> {
        let id = record.id.clone().context("a journaled job without an id cannot be resumed")?;
        let client = self.client(Some(&record.base_url))?;
        let first = if record.state == JobState::Downloaded {
            Finished::from_record(record)?
        } else {
            self.follow(&client, record, client.watch(id.as_str()), force, false).await?
        };
        let mut done = vec![first.clone()];
        if let Some(chain) = record.chain.clone().filter(|c| c.step < c.of && !has_next) {
            let plan = Plan::from_record(record, &chain, force)?;
            let input = next_input(&client, &first).await?;
            done.extend(self.run_chain(&client, &plan, chain.step + 1, input, Some(id)).await?);
        }
        Ok(done)
    }
}

/// What the API's logs said of a create whose outcome was unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Recovered {
    /// It made this generation.
    Found(String),
    /// It was refused: no job, no charge.
    Refused,
    /// Not in the logs (yet).
    NotLogged,
    /// Journaled by a version that sent no client request id.
    Untraceable,
}

/// The next chain step's input: the previous result, inline when small
/// enough, else by its URL.
async fn next_input(client: &Client, previous: &Finished) -> anyhow::Result<Input> {
    if fits_inline(previous.bytes) {
        let video = VideoInput::from_file(&previous.output).await?;
        return Ok(Input { video, label: previous.output.display().to_string() });
    }
    let url = match &previous.video_url {
        Some(url) => url.clone(),
        None => client
            .get(&previous.id)
            .await?
            .video_url()
            .map(str::to_owned)
            .with_context(|| format!("generation {} has no video URL to extend", previous.id))?,
    };
    Ok(Input { video: VideoInput::url(&url)?, label: url })
}

/// `--dry-run`: prints the request `body` (media elided) and what `jobs`
/// jobs of it would cost, where the API's catalogue says; sends nothing.
pub(crate) async fn dry_run(app: &App<'_>, model: &str, body: &Value, jobs: u32) -> anyhow::Result<u8> {
    let shown = elide_media(body);
    let price = match app.client(None) {
        Ok(client) => crate::prices::pricing_of(&client, &app.journal, model)
            .await
            .and_then(|p| Some((p.quote_credits(body)?, p.quote_usd(body)?)))
            .map(|(credits, usd)| (credits * f64::from(jobs), usd * f64::from(jobs))),
        Err(_) => None,
    };
    let of = if jobs > 1 { format!(" for {jobs} jobs") } else { String::new() };
    let summary = match price {
        Some((credits, usd)) => {
            format!("dry run: nothing was sent · price {credits:.0} credits (${usd:.2}){of}")
        }
        None => "dry run: nothing was sent · price unknown".to_owned(),
    };
    app.report.result(
        json!({
            "event": "result",
            "ok": true,
            "dry_run": true,
            "request": shown,
            "jobs": jobs,
            "price_credits": price.map(|p| p.0),
            "price_usd": price.map(|p| p.1),
        }),
        Some(summary),
        Some(serde_json::to_string_pretty(&shown)?),
    )?;
    Ok(exit::OK)
}

/// The body with each `data:` URI replaced by its type and size.
pub(crate) fn elide_media(value: &Value) -> Value {
    match value {
        Value::String(s) if s.starts_with("data:") => {
            let header = s.split_once(',').map_or("data:", |(h, _)| h);
            Value::String(format!("<{header}, {} bytes>", s.len()))
        }
        Value::Array(items) => Value::Array(items.iter().map(elide_media).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), elide_media(v))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(steps: usize) -> Plan {
        Plan {
            model: ExtendModel::Fast,
            prompts: (1..=steps).map(|i| format!("prompt {i}")).collect(),
            options: RequestOptions { generate_audio: Some(false), ..RequestOptions::default() },
            final_output: PathBuf::from("/videos/clip-extended.mp4"),
            force: false,
        }
    }

    #[test]
    fn chain_steps_write_beside_the_final_output() {
        let p = plan(3);
        assert_eq!(p.output_of(1), PathBuf::from("/videos/clip-extended.step1.mp4"));
        assert_eq!(p.output_of(2), PathBuf::from("/videos/clip-extended.step2.mp4"));
        assert_eq!(p.output_of(3), PathBuf::from("/videos/clip-extended.mp4"));
        assert_eq!(plan(1).output_of(1), PathBuf::from("/videos/clip-extended.mp4"));
        assert!(plan(1).chain(1, None).is_none());
        let chain = p.chain(2, Some("g1".into())).unwrap();
        assert_eq!((chain.step, chain.of, chain.parent.as_deref()), (2, 3, Some("g1")));
    }

    #[test]
    fn requests_carry_every_option() {
        let video = VideoInput::url("https://example.com/a.mp4").unwrap();
        let request = plan(2).request(2, video);
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(json["prompt"], "prompt 2");
        assert_eq!(json["generate_audio"], false);
        assert_eq!(json["model"], "google/veo3-1-fast-extend-video");
        assert!(json.get("aspect_ratio").is_none());
    }

    #[test]
    fn large_results_go_by_url() {
        assert!(fits_inline(18_000));
        assert!(fits_inline(aimlvid::DEFAULT_MAX_INLINE_BYTES));
        assert!(!fits_inline(aimlvid::DEFAULT_MAX_INLINE_BYTES + 1));
    }

    #[test]
    fn a_directory_output_means_into_it_and_bad_places_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vids = dir.path().join("vids");
        std::fs::create_dir(&vids).unwrap();
        assert_eq!(output_path(&vids, "a.mp4").unwrap(), vids.join("a.mp4"));
        let new = dir.path().join("new/");
        assert_eq!(output_path(&new, "a.mp4").unwrap(), dir.path().join("new").join("a.mp4"));
        let file = dir.path().join("b.mp4");
        assert_eq!(output_path(&file, "a.mp4").unwrap(), file);

        ensure_writable(&vids.join("deep/er/a.mp4")).unwrap();
        std::fs::write(&file, "x").unwrap();
        let err = ensure_writable(&file.join("a.mp4")).unwrap_err();
        assert_eq!(exit::code_for(&err), exit::LOCAL);
        assert!(err.to_string().contains("is not a directory"), "{err}");
        assert_eq!(std::fs::read_dir(&vids).unwrap().count(), 0, "the probe is cleaned up");

        let err = ensure_free(&vids, true).unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert_eq!(exit::code_for(&ensure_free(&file, false).unwrap_err()), exit::USAGE);
        ensure_free(&file, true).unwrap();
    }

    #[test]
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/tmp/out.mp4"), "/tmp/out.mp4");
        assert_eq!(shell_quote("http://127.0.0.1:8787/"), "http://127.0.0.1:8787/");
        assert_eq!(shell_quote("my clip.mp4"), "'my clip.mp4'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
