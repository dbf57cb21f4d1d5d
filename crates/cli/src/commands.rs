//! One function per subcommand. Each prints its own result and returns the
//! exit code; an `Err` is printed by `main`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aimlvid::{AspectRatio, Resolution};
use serde_json::{Value, json};

use crate::cli::ExtendArgs;
use crate::exit::{self, Failure, Interrupted};
use crate::jobs::{
    App, Finished, Input, Plan, Recovered, absolute, dry_run, ensure_free, ensure_writable, output_path,
    report_finished,
};
use crate::journal::{JobRecord, JobState, RequestOptions};
use crate::report::short_duration;

/// `aimlvid extend`.
pub(crate) async fn extend(app: &App<'_>, args: ExtendArgs) -> anyhow::Result<u8> {
    let prompts = expand_prompts(&args.prompts, args.times)?;
    if args.no_wait && prompts.len() > 1 {
        // A chain's next step needs the previous result: it cannot be created now.
        return Err(Failure::usage(format!(
            "--no-wait creates one job, but {} prompts make a chain whose steps wait for each other; \
             give one -p, or drop --no-wait",
            prompts.len()
        ))
        .into());
    }
    let options = options_from(&args)?;
    // The input is checked first: a mistyped file name is the likeliest mistake.
    let input = match &args.video {
        Some(video) => Input::parse(video).await?,
        None if app.simulating() => Input::sample()?,
        None => {
            return Err(Failure::usage(
                "give the VIDEO to extend (a local file or an https:// URL), or add --simulate to extend a sample clip",
            )
            .into());
        }
    };
    let output = match &args.output {
        Some(path) => {
            let name = default_output(args.video.as_deref(), Path::new(""));
            output_path(path, &name.to_string_lossy())?
        }
        None => absolute(&default_output(args.video.as_deref(), &app.settings.output_dir))?,
    };
    let plan = Plan {
        model: match args.model {
            Some(model) => model,
            None => app.settings.extend_model()?,
        }
        .into(),
        prompts,
        options,
        final_output: output,
        force: args.force,
    };
    if args.dry_run {
        // Every step sends this request, each with the step before's result.
        let body = serde_json::to_value(plan.request(1, input.video))?;
        aimlvid::catalog::validate(&body).map_err(|e| Failure::usage(format!("{e}; nothing was sent")))?;
        return dry_run(app, plan.model.id(), &body, plan.prompts.len() as u32).await;
    }
    for step in 1..=plan.prompts.len() as u32 {
        ensure_free(&plan.output_of(step), args.force)?;
    }
    ensure_writable(&plan.final_output)?;
    let client = app.client(None)?;

    if args.no_wait {
        let (created, record) = app
            .interruptible(async {
                let mut record = app.record(&client, plan.output_of(1), JobState::Creating);
                record.model = Some(plan.model.id().to_owned());
                record.prompt = Some(plan.prompts[0].clone());
                record.input = Some(input.label.clone());
                record.options = plan.options.clone();
                app.create(&client, &plan.request(1, input.video), record).await
            })
            .await?;
        let id = created.id.clone();
        app.report.result(
            json!({
                "event": "result",
                "ok": true,
                "id": id,
                "status": created.status.as_str(),
                "output": record.output,
            }),
            Some(format!("wait for it with: {}", app.resume_command(&record))),
            Some(id),
        )?;
        return Ok(exit::OK);
    }

    let steps = app.interruptible(app.run_chain(&client, &plan, 1, input, None)).await?;
    report_finished(app, &steps, true)?;
    Ok(exit::OK)
}

/// Every step's prompt: the list given, `times` times over.
fn expand_prompts(prompts: &[String], times: u32) -> anyhow::Result<Vec<String>> {
    if let Some(position) = prompts.iter().position(|p| p.trim().is_empty()) {
        let which =
            if prompts.len() > 1 { format!("prompt {} is", position + 1) } else { "the prompt is".into() };
        return Err(Failure::usage(format!(
            "{which} empty; say what should happen in the extension, e.g. -p \"the camera pulls back\""
        ))
        .into());
    }
    Ok((0..times).flat_map(|_| prompts.iter().map(|p| p.trim().to_owned())).collect())
}

/// The request options, checked against what the extend models accept.
fn options_from(args: &ExtendArgs) -> anyhow::Result<RequestOptions> {
    let aspect_ratio =
        args.aspect_ratio.as_deref().map(str::parse::<AspectRatio>).transpose().map_err(Failure::usage)?;
    let duration = match args.duration {
        None | Some(7) => args.duration,
        Some(d) => {
            return Err(Failure::usage(format!(
                "the extend models accept only --duration 7 (seconds), not {d}"
            ))
            .into());
        }
    };
    let resolution = match args.resolution.as_deref() {
        None => None,
        Some("720p") => Some(Resolution::P720),
        Some(other) => {
            return Err(Failure::usage(format!(
                "the extend models accept only --resolution 720p, not {other:?}"
            ))
            .into());
        }
    };
    Ok(RequestOptions {
        aspect_ratio,
        duration,
        resolution,
        generate_audio: args.no_audio.then_some(false),
        auto_fix: args.auto_fix.then_some(true),
        provider: args.provider.map(Into::into),
    })
}

/// `<stem>-extended.mp4` for a local file, `extended.mp4` for a URL, in `dir`.
fn default_output(video: Option<&str>, dir: &Path) -> PathBuf {
    let name = video
        .filter(|v| !v.contains("://") && !v.starts_with("data:"))
        .and_then(|v| Path::new(v).file_stem())
        .map_or_else(|| "extended.mp4".to_owned(), |stem| format!("{}-extended.mp4", stem.to_string_lossy()));
    dir.join(name)
}

/// A generation id as a file name: ids are UUID-like, but nothing the API
/// sends may pick a path.
fn file_name_for(id: &str) -> String {
    let safe: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
    format!("{}.mp4", safe.trim_start_matches('.'))
}

/// `aimlvid status ID`.
/// A job of an earlier `--simulate` command is gone with its simulator:
/// asking the real API (or the environment's server) about it means nothing.
fn refuse_simulated(app: &App<'_>, record: &JobRecord, id: &str) -> anyhow::Result<()> {
    if record.simulated && !app.simulating() {
        return Err(Failure::new(
            exit::INVALID,
            format!(
                "generation {id} ran on the in-process simulator of an earlier --simulate command, \
                 which stopped with it"
            ),
        )
        .into());
    }
    Ok(())
}

pub(crate) async fn status(app: &App<'_>, id: &str) -> anyhow::Result<u8> {
    let existing = app.journal.find(id)?;
    if let Some(record) = &existing {
        refuse_simulated(app, record, id)?;
    }
    let client = app.client(existing.as_ref().map(|r| r.base_url.as_str()))?;
    app.report.set_current(Some(id));
    let generation = app.interruptible(async { Ok(client.get(id).await?) }).await?;
    if let Some(mut record) = existing {
        let state = JobState::from_status(&generation.status);
        let following = matches!(record.state, JobState::Queued | JobState::Generating | JobState::Completed);
        if following && record.state != state {
            record.state = state;
            app.journal.save(&mut record)?;
        }
    }
    let error = generation.error.as_ref().map(|e| format!("{}: {}", e.name, e.message));
    let mut line = format!("{}  {}", generation.id, generation.status);
    let charged = generation.credits_used().and_then(aimlvid::Credits::from_f64_rounded);
    if let Some(c) = charged {
        let _ = write!(line, "  {c} used");
    }
    if let Some(e) = &error {
        let _ = write!(line, "  {e}");
    }
    app.report.result(
        json!({
            "event": "result",
            "ok": true,
            "id": generation.id,
            "status": generation.status.as_str(),
            "credits_used": generation.credits_used(),
            "usd": charged.map(aimlvid::Credits::usd),
            "video_url": generation.video_url(),
            "video_urls": generation.video_urls(),
            "error": error,
        }),
        None,
        Some(line),
    )?;
    Ok(exit::OK)
}

/// The journal record for `id` with its output set to `output` (or kept),
/// adopting the job into the journal if it is not there yet.
fn record_for(
    app: &App<'_>,
    client: &aimlvid::Client,
    id: &str,
    existing: Option<JobRecord>,
    output: Option<PathBuf>,
) -> anyhow::Result<JobRecord> {
    let default = || absolute(&app.settings.output_dir.join(file_name_for(id)));
    let mut record = match existing {
        Some(record) => record,
        None => app.adopt(
            client,
            id,
            match &output {
                Some(path) => absolute(path)?,
                None => default()?,
            },
        ),
    };
    refuse_simulated(app, &record, id)?;
    if let Some(path) = output {
        let path = absolute(&path)?;
        if path != record.output {
            // The part file of a download started elsewhere is not this
            // one's, and a result downloaded elsewhere is fetched again here.
            if matches!(record.state, JobState::Downloading | JobState::Downloaded) {
                record.state = JobState::Completed;
            }
            record.files.clear();
            record.output = path;
        }
    }
    record.base_url = client.base_url().to_owned();
    Ok(record)
}

/// `aimlvid wait ID [-o FILE]`.
pub(crate) async fn wait(
    app: &App<'_>,
    id: &str,
    output: Option<PathBuf>,
    force: bool,
) -> anyhow::Result<u8> {
    let existing = app.journal.find(id)?;
    let adopted = existing.is_none();
    let client = app.client(existing.as_ref().map(|r| r.base_url.as_str()))?;
    let output = output.map(|o| output_path(&o, &file_name_for(id))).transpose()?;
    let mut record = record_for(app, &client, id, existing, output)?;
    if record.result_intact() {
        app.report.note(format!("generation {id} is already downloaded"));
        report_finished(app, &[Finished::from_record(&record)?], false)?;
        return Ok(exit::OK);
    }
    if record.state == JobState::Downloaded {
        // A file is gone or not the one downloaded: fetch it again.
        record.state = JobState::Completed;
    }
    ensure_free(&record.output, force)?;
    ensure_writable(&record.output)?;
    // Journaled before waiting, like every job.
    app.journal.save(&mut record)?;
    let followed = app.interruptible(app.follow(&client, &mut record, client.watch(id), force, false)).await;
    let finished = match followed {
        Ok(finished) => finished,
        Err(e) if adopted && is_not_found(&e) => {
            // An id typed by hand that the API does not know (a typo, or
            // another server's): there is no job to keep a record of.
            app.journal.remove(&record.key)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    report_finished(app, &[finished], false)?;
    Ok(exit::OK)
}

/// Whether the API said it knows no such generation.
fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|c| matches!(c.downcast_ref::<aimlvid::Error>(), Some(aimlvid::Error::NotFound { .. })))
}

/// `aimlvid download ID [-o FILE]`.
pub(crate) async fn download(
    app: &App<'_>,
    id: &str,
    output: Option<PathBuf>,
    force: bool,
) -> anyhow::Result<u8> {
    let existing = app.journal.find(id)?;
    let client = app.client(existing.as_ref().map(|r| r.base_url.as_str()))?;
    // Where the job's result was going: a download that cannot start yet
    // does not change it.
    let planned = existing.as_ref().map(|r| r.output.clone());
    let output = output.map(|o| output_path(&o, &file_name_for(id))).transpose()?;
    let mut record = record_for(app, &client, id, existing, output)?;
    ensure_free(&record.output, force)?;
    ensure_writable(&record.output)?;
    app.report.set_current(Some(id));
    let generation = app.interruptible(async { Ok(client.get(id).await?) }).await?;
    match &generation.status {
        aimlvid::Status::Completed => {}
        s if s.is_failure() => {
            record.state = JobState::Failed;
            app.journal.save(&mut record)?;
            generation.into_result()?;
            return Ok(exit::FAILED);
        }
        other => {
            record.state = JobState::from_status(other);
            let planned = planned.unwrap_or_else(|| record.output.clone());
            let wanted = std::mem::replace(&mut record.output, planned);
            app.journal.save(&mut record)?;
            record.output = wanted;
            return Err(Failure::new(
                exit::NOT_FINISHED,
                format!(
                    "generation {id} is still {other}; wait for it with: {}",
                    app.resume_command(&record)
                ),
            )
            .into());
        }
    }
    if record.state != JobState::Downloading {
        record.state = JobState::Completed;
    }
    let _downloading = app.lock_record(&record, id)?;
    let downloading = std::time::Instant::now();
    let files = app.interruptible(app.fetch(&client, &mut record, &generation, force)).await?;
    let download = downloading.elapsed();
    let finished = Finished {
        id: id.to_owned(),
        output: record.output.clone(),
        outputs: files.iter().map(|f| f.path.clone()).collect(),
        bytes: files.iter().map(|f| f.bytes).sum(),
        credits_used: generation.credits_used(),
        elapsed: download,
        download,
        video_url: generation.video_url().map(str::to_owned),
    };
    report_finished(app, &[finished], false)?;
    Ok(exit::OK)
}

/// `aimlvid jobs`.
pub(crate) fn jobs(app: &App<'_>) -> anyhow::Result<u8> {
    let records = app.journal.load_all()?;
    if app.report.mode() == crate::report::Mode::Json {
        for record in &records {
            app.report.event(job_event(record));
        }
        app.report.result(json!({"event": "result", "ok": true, "count": records.len()}), None, None)?;
        return Ok(exit::OK);
    }
    if records.is_empty() {
        app.report.note(format!("no jobs in the journal at {}", app.journal.dir().display()));
        return Ok(exit::OK);
    }
    let rows: Vec<[String; 6]> = records
        .iter()
        .map(|r| {
            [
                r.age().map_or_else(|| "?".into(), |a| format!("{} ago", short_duration(a))),
                r.id.clone().unwrap_or_else(|| "-".into()),
                r.state.as_str().to_owned(),
                r.output.display().to_string(),
                shorten(r.prompt.as_deref().unwrap_or(""), 40),
                notes(r),
            ]
        })
        .collect();
    let headers = ["AGE", "ID", "STATE", "OUTPUT", "PROMPT", "NOTE"];
    let mut widths = headers.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in std::iter::once(headers.map(str::to_owned)).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(line, "{cell}{}  ", " ".repeat(pad));
            }
        }
        table.push_str(line.trim_end());
        table.push('\n');
    }
    app.report.result(Value::Null, None, Some(table.trim_end().to_owned()))?;
    Ok(exit::OK)
}

fn job_event(r: &JobRecord) -> Value {
    json!({
        "event": "job",
        "id": r.id,
        "key": r.key,
        "state": r.state.as_str(),
        "model": r.model,
        "prompt": r.prompt,
        "input": r.input,
        "output": r.output,
        "base_url": r.base_url,
        "created_at": r.created_at,
        "simulated": r.simulated,
        "step": r.chain.as_ref().map(|c| c.step),
        "of": r.chain.as_ref().map(|c| c.of),
        "credits_used": r.credits_used,
        "error": r.error,
    })
}

/// `aimlvid jobs rm`.
pub(crate) fn jobs_rm(app: &App<'_>, wanted: &[String], force: bool) -> anyhow::Result<u8> {
    let records = app.journal.load_all()?;
    let mut chosen = Vec::new();
    for name in wanted {
        let record = records
            .iter()
            .find(|r| r.key == *name || r.id.as_deref() == Some(name.as_str()))
            .ok_or_else(|| {
                Failure::new(
                    exit::USAGE,
                    format!(
                        "no journal record has the key or generation id {name:?}; `aimlvid jobs` lists them"
                    ),
                )
            })?;
        let live =
            record.state.is_unfinished() || matches!(record.state, JobState::Creating | JobState::Unknown);
        if live && !force {
            let why = match record.state {
                JobState::Creating | JobState::Unknown => {
                    "its create may have been accepted and billed (`aimlvid resume` looks it up in the API's logs)"
                }
                JobState::Completed | JobState::Downloading => "its result has not been downloaded",
                _ => "it may still be running",
            };
            return Err(Failure::new(
                exit::USAGE,
                format!(
                    "journal record {} is `{}`: {why}; nothing was removed. Remove it anyway with --force",
                    record.key,
                    record.state.as_str()
                ),
            )
            .into());
        }
        chosen.push(record);
    }
    let mut removed = Vec::new();
    for record in chosen {
        remove_record(app, record)?;
        removed.push(record.key.clone());
    }
    app.report.result(
        json!({"event": "result", "ok": true, "removed": removed}),
        Some(format!("removed {} journal record(s)", removed.len())),
        None,
    )?;
    Ok(exit::OK)
}

/// `aimlvid jobs prune`.
pub(crate) fn jobs_prune(app: &App<'_>, older_than: Option<Duration>, dry_run: bool) -> anyhow::Result<u8> {
    let records = app.journal.load_all()?;
    let finished = |r: &JobRecord| matches!(r.state, JobState::Downloaded | JobState::Failed);
    // A finished step whose chain still has steps to run is kept for `resume`.
    let chain_open = |r: &JobRecord| {
        r.chain.as_ref().is_some_and(|c| c.step < c.of)
            && !records.iter().any(|o| o.chain.as_ref().and_then(|c| c.parent.as_deref()) == r.id.as_deref())
    };
    let old_enough = |r: &JobRecord| older_than.is_none_or(|min| r.age().is_some_and(|age| age >= min));
    let chosen: Vec<&JobRecord> = records
        .iter()
        .filter(|r| finished(r) && !(r.state == JobState::Downloaded && chain_open(r)) && old_enough(r))
        .collect();
    let mut removed = Vec::new();
    for record in chosen {
        if !dry_run {
            remove_record(app, record)?;
        }
        removed.push(record.key.clone());
    }
    let summary = match (dry_run, removed.len()) {
        (true, n) => format!("would remove {n} journal record(s) of finished jobs"),
        (false, n) => format!("removed {n} journal record(s) of finished jobs"),
    };
    app.report.result(
        json!({"event": "result", "ok": true, "dry_run": dry_run, "removed": removed}),
        Some(summary),
        None,
    )?;
    Ok(exit::OK)
}

/// Removes a record under its lock, so that a record another process is
/// following is left alone.
fn remove_record(app: &App<'_>, record: &JobRecord) -> anyhow::Result<()> {
    let Some(_lock) = app.journal.lock(&record.key)? else {
        return Err(exit::Busy(format!(
            "journal record {} is in use by another aimlvid process; nothing was removed",
            record.key
        ))
        .into());
    };
    app.journal.remove(&record.key)
}

fn notes(r: &JobRecord) -> String {
    let mut notes = Vec::new();
    if let Some(c) = &r.chain {
        notes.push(format!("step {}/{}", c.step, c.of));
    }
    if r.simulated {
        notes.push("simulated".to_owned());
    }
    match r.state {
        JobState::Creating | JobState::Unknown => {
            notes.push(format!(
                "record {}: may exist and be billed; `aimlvid resume` looks it up, so do not create it again",
                r.key
            ));
        }
        JobState::Failed => notes.push(shorten(r.error.as_deref().unwrap_or("failed"), 60)),
        _ => {}
    }
    notes.join("; ")
}

fn shorten(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(max - 1).collect();
        cut.push('…');
        cut
    }
}

/// What `resume` does with a record.
enum Work {
    /// Wait for it and download it; continue its chain unless `has_next`.
    Follow { has_next: bool },
    /// Run the failed job again (`--retry-failed`).
    Retry,
}

/// Whether a failed job was already run again: a later record does the
/// same step of the same chain (or writes the same output, for a single
/// job). Derived from the journal, so a retry the API refused (whose record
/// was removed) can be tried again, and one that may be billed is not.
fn superseded(records: &[JobRecord], failed: &JobRecord) -> bool {
    records.iter().any(|r| {
        r.key > failed.key
            && match (&r.chain, &failed.chain) {
                (Some(a), Some(b)) => {
                    a.step == b.step && a.parent == b.parent && a.final_output == b.final_output
                }
                (None, None) => r.output == failed.output,
                _ => false,
            }
    })
}

/// How long the API's request logs may lag; a create missing for longer
/// than this most likely never reached the API.
const LOGS_LAG: Duration = Duration::from_secs(30 * 60);

/// Why a lost create is still unknown, and what to do.
fn unknown_reason(record: &JobRecord, outcome: &Recovered) -> String {
    if *outcome == Recovered::Untraceable {
        return "a create of unknown outcome made by an older aimlvid, which sent no client request id: \
                check https://aimlapi.com/app before creating it again"
            .to_owned();
    }
    match record.age() {
        Some(age) if age > LOGS_LAG => format!(
            "not in the API's request logs {} after it was sent: it most likely never reached the API \
             and nothing was charged; remove it with `aimlvid jobs rm {}`",
            short_duration(age),
            record.key
        ),
        _ => "not in the API's request logs yet (they can lag a few minutes); run `aimlvid resume` again shortly"
            .to_owned(),
    }
}

/// `aimlvid resume`.
pub(crate) async fn resume(app: &App<'_>, force: bool, retry_failed: bool) -> anyhow::Result<u8> {
    app.set_resuming();
    let records = app.journal.load_all()?;
    let all = records.clone();
    let parents: HashSet<String> =
        records.iter().filter_map(|r| r.chain.as_ref().and_then(|c| c.parent.clone())).collect();
    let mut todo = Vec::new();
    let mut simulated = 0;
    let (mut recovered, mut refused, mut unknown) = (Vec::new(), Vec::new(), Vec::new());
    for mut record in records {
        if record.id.is_none() {
            let lost = matches!(record.state, JobState::Creating | JobState::Unknown) && !record.simulated;
            if !lost {
                continue;
            }
            let key = record.key.clone();
            // The process that sends a create holds its record's lock until
            // the answer is journaled: a held lock is a create still in
            // flight, a free one a create whose process died (or whose
            // answer was lost), to be looked up.
            let Some(_looking_up) = app.journal.lock(&key)? else {
                app.report.note(format!(
                    "journal record {key} is being created by another aimlvid process; leaving it to that one"
                ));
                continue;
            };
            // Reread under the lock: the creating process may have finished.
            let Some(reread) = app.journal.load(&key)? else { continue };
            record = reread;
            let still_lost = matches!(record.state, JobState::Creating | JobState::Unknown);
            // One journaled with its id meanwhile is followed below.
            if record.id.is_none() && still_lost {
                match app.recover_create(&mut record).await {
                    Ok(Recovered::Found(id)) => {
                        app.report.note(format!(
                        "found the create of journal record {key} in the API's request logs: generation {id}"
                    ));
                        recovered.push(json!({"journal_key": key, "id": id}));
                    }
                    Ok(Recovered::Refused) => {
                        app.report.note(format!(
                        "the create of journal record {key} was refused by the API: no job, nothing charged"
                    ));
                        refused.push(json!({"journal_key": key}));
                        continue;
                    }
                    Ok(outcome) => {
                        let reason = unknown_reason(&record, &outcome);
                        app.report.warn(format!("journal record {key}: {reason}"));
                        unknown.push(json!({"journal_key": key, "reason": reason}));
                        continue;
                    }
                    Err(e) => {
                        let reason =
                            format!("could not search the API's request logs: {}", crate::exit::one_line(&e));
                        app.report.warn(format!("journal record {key}: {reason}"));
                        unknown.push(json!({"journal_key": key, "reason": reason}));
                        continue;
                    }
                }
            }
        }
        let Some(id) = record.id.clone() else { continue };
        if retry_failed && record.state == JobState::Failed && !record.simulated && !superseded(&all, &record)
        {
            todo.push((record, Work::Retry));
            continue;
        }
        let has_next = parents.contains(&id);
        let chain_pending = record.chain.as_ref().is_some_and(|c| c.step < c.of) && !has_next;
        let pending = record.state.is_unfinished() || (record.state == JobState::Downloaded && chain_pending);
        if !pending {
            continue;
        }
        if record.simulated {
            simulated += 1;
            continue;
        }
        todo.push((record, Work::Follow { has_next }));
    }
    if simulated > 0 {
        app.report.note(format!(
            "skipping {simulated} simulated job(s): the in-process simulator they ran on stopped with its command"
        ));
    }
    // Still unknown: must not simply be created again.
    let unknown_code = if unknown.is_empty() { exit::OK } else { exit::OUTCOME_UNKNOWN };
    if todo.is_empty() {
        app.report.result(
            json!({
                "event": "result",
                "ok": unknown.is_empty(),
                "resumed": 0,
                "completed": [],
                "failed": [],
                "recovered": recovered,
                "refused": refused,
                "unknown": unknown,
            }),
            Some(
                if unknown.is_empty() {
                    "nothing to resume"
                } else {
                    "nothing to resume; some creates are still unknown"
                }
                .to_owned(),
            ),
            None,
        )?;
        return Ok(unknown_code);
    }
    app.report.note(format!("resuming {} job(s)", todo.len()));
    let total = todo.len();
    let (mut completed, mut failed, mut outputs, mut skipped) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut code = unknown_code;
    for (mut record, work) in todo {
        let id = record.id.clone().unwrap_or_default();
        let run = match work {
            Work::Follow { has_next } => {
                app.interruptible(app.resume_one(&mut record, has_next, force)).await
            }
            Work::Retry => app.interruptible(app.retry_failed(&all, &record, force)).await,
        };
        match run {
            Ok(steps) => {
                for step in &steps {
                    completed.push(json!({
                        "id": step.id,
                        "output": step.output,
                        "outputs": step.outputs,
                        "bytes": step.bytes,
                    }));
                }
                if let Some(last) = steps.last() {
                    outputs.extend(last.outputs.iter().map(|p| p.display().to_string()));
                }
            }
            Err(e) if e.chain().any(|c| c.is::<Interrupted>()) => return Err(e),
            // Another process is on it: not a failure of this one.
            Err(e) if e.chain().any(|c| c.is::<exit::Busy>()) => {
                app.report.note(format!("skipping: {}", crate::exit::one_line(&e)));
                skipped.push(json!({"id": id}));
            }
            Err(e) => {
                let c = exit::code_for(&e);
                if code == exit::OK {
                    code = c;
                }
                let message = crate::exit::one_line(&e);
                app.report.warn(format!("error: generation {id}: {message}"));
                failed.push(json!({"id": id, "error": message, "exit_code": c}));
            }
        }
    }
    app.report.set_current(None);
    let summary = match skipped.len() {
        0 => format!("resumed {total} job(s): {} failed", failed.len()),
        n => {
            format!("resumed {total} job(s): {} failed, {n} left to the process following them", failed.len())
        }
    };
    app.report.result(
        json!({
            "event": "result",
            "ok": failed.is_empty(),
            "resumed": total,
            "completed": completed,
            "failed": failed,
            "skipped": skipped,
            "recovered": recovered,
            "refused": refused,
            "unknown": unknown,
        }),
        Some(summary),
        (!outputs.is_empty()).then(|| outputs.join("\n")),
    )?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_outputs_follow_the_input() {
        let here = Path::new("");
        assert_eq!(default_output(Some("clips/raccoon.mp4"), here), PathBuf::from("raccoon-extended.mp4"));
        assert_eq!(default_output(Some("https://cdn.example/a.mp4"), here), PathBuf::from("extended.mp4"));
        assert_eq!(default_output(None, Path::new("out")), PathBuf::from("out/extended.mp4"));
    }

    #[test]
    fn prompts_repeat_and_must_say_something() {
        let p = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(expand_prompts(&p(&["a", "b"]), 2).unwrap(), p(&["a", "b", "a", "b"]));
        let err = expand_prompts(&p(&["  "]), 1).unwrap_err().to_string();
        assert!(err.starts_with("the prompt is empty"), "{err}");
        let err = expand_prompts(&p(&["a", ""]), 1).unwrap_err().to_string();
        assert!(err.starts_with("prompt 2 is empty"), "{err}");
    }

    #[test]
    fn ids_cannot_pick_a_path() {
        assert_eq!(file_name_for("60ac7c34-1f"), "60ac7c34-1f.mp4");
        assert_eq!(file_name_for("../../etc/passwd"), "_.._etc_passwd.mp4");
    }

    #[test]
    fn long_prompts_are_shortened_on_one_line() {
        assert_eq!(shorten("a\nb", 10), "a b");
        assert_eq!(shorten("abcdefghijkl", 5), "abcd…");
    }
}
