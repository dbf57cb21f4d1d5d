//! The local job journal: every job this tool creates or follows, so that a
//! paid job is never lost.
//!
//! It is a directory holding one JSON file per job. A record is rewritten as
//! its job moves (creating → queued → … → downloaded), and each rewrite goes
//! to a temporary file that is fsynced and then renamed over the record, so
//! a kill at any instant leaves either the old or the new record, never a
//! torn one. One file per job (rather than one JSON-lines log) also means
//! that two processes, say an `extend` and a `resume`, write different files,
//! and that nothing ever needs compacting.
//!
//! The API key is never written here; prompts and result paths are, so files
//! are created readable by their owner only.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// Where a job is, as far as this tool knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum JobState {
    /// The create request was about to be sent; if the record stays in this
    /// state, the process died before the answer arrived.
    Creating,
    /// The create may have been accepted but its answer was lost.
    Unknown,
    /// Waiting for a worker upstream.
    Queued,
    /// Being generated upstream.
    Generating,
    /// Finished upstream; not yet downloaded.
    Completed,
    /// Its download has started: `<output>.part` holds what has arrived.
    Downloading,
    /// The result is at `output`.
    Downloaded,
    /// The job ended in error upstream.
    Failed,
}

impl JobState {
    /// The state matching a status the API reported.
    pub(crate) fn from_status(status: &aimlvid::Status) -> JobState {
        match status {
            aimlvid::Status::Queued => JobState::Queued,
            aimlvid::Status::Completed => JobState::Completed,
            s if s.is_failure() => JobState::Failed,
            // `generating`, and whatever in-progress status the API adds.
            _ => JobState::Generating,
        }
    }

    /// As shown by `aimlvid jobs`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobState::Creating => "creating",
            JobState::Unknown => "unknown",
            JobState::Queued => "queued",
            JobState::Generating => "generating",
            JobState::Completed => "completed",
            JobState::Downloading => "downloading",
            JobState::Downloaded => "downloaded",
            JobState::Failed => "failed",
        }
    }

    /// Whether the upstream may still be working on it, or its result is
    /// still to be fetched.
    pub(crate) fn is_unfinished(self) -> bool {
        matches!(self, JobState::Queued | JobState::Generating | JobState::Completed | JobState::Downloading)
    }
}

/// The request fields other than the model, prompt and video, as sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RequestOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) aspect_ratio: Option<aimlvid::AspectRatio>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) duration: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) resolution: Option<aimlvid::Resolution>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) generate_audio: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) auto_fix: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provider: Option<aimlvid::Provider>,
}

/// A job's place in a chain of extensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Chain {
    /// This job's step, from 1.
    pub(crate) step: u32,
    /// Steps in all.
    pub(crate) of: u32,
    /// The previous step's generation id, whose result is this step's input.
    pub(crate) parent: Option<String>,
    /// Every step's prompt, so that `resume` can finish the chain.
    pub(crate) prompts: Vec<String>,
    /// Where the last step's result goes.
    pub(crate) final_output: PathBuf,
}

/// One job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct JobRecord {
    /// The record's own name (its file is `<key>.json`): a job whose create
    /// answer never arrived has no generation id.
    pub(crate) key: String,
    /// The generation id.
    pub(crate) id: Option<String>,
    pub(crate) state: JobState,
    /// The model id; `None` for a job this tool did not create.
    pub(crate) model: Option<String>,
    pub(crate) prompt: Option<String>,
    /// The local file (absolute) or URL that was sent; never the inline bytes.
    pub(crate) input: Option<String>,
    #[serde(default)]
    pub(crate) options: RequestOptions,
    /// The server the job lives on.
    pub(crate) base_url: String,
    /// RFC 3339, UTC.
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    /// Where the result is (to be) written; absolute.
    pub(crate) output: PathBuf,
    /// Created on an in-process simulator, which died with its process.
    #[serde(default)]
    pub(crate) simulated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) chain: Option<Chain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) credits_used: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bytes: Option<u64>,
    /// Each result file whose download finished, with its size: the proof
    /// that a file at that path is this job's whole result, not a
    /// directory or another file that happens to have its name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) files: Vec<SavedFile>,
    /// Seconds from creation to completion, for a job followed from its
    /// creation: what the next job of its model is expected to take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) took_secs: Option<f64>,
    /// How much faster than real time the server ran (`AIMLVID_TIME_SCALE`
    /// for a simulator): `took_secs` times this is the job's time on the
    /// server. Absent in records made before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) time_scale: Option<f64>,
    /// The last error met while following the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    /// The `X-Client-Request-Id` the create was sent with (the record's
    /// key): how a create whose answer was lost is found in the API's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) client_request_id: Option<String>,
    /// What the create's answer headers said: `x-inference-id`, and the
    /// credits and US dollars the call cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) receipt: Option<Receipt>,
}

/// A result file, as its download left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedFile {
    /// Absolute.
    pub(crate) path: PathBuf,
    pub(crate) bytes: u64,
}

impl SavedFile {
    /// Whether the file is still there and whole: a regular file of the
    /// size that was downloaded.
    pub(crate) fn is_intact(&self) -> bool {
        fs::metadata(&self.path).is_ok_and(|m| m.is_file() && m.len() == self.bytes)
    }
}

/// A create's receipt headers, as journaled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Receipt {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inference_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) credits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) usd: Option<f64>,
}

impl From<&aimlvid::Receipt> for Receipt {
    fn from(r: &aimlvid::Receipt) -> Self {
        Receipt { inference_id: r.inference_id.clone(), credits: r.credits_used, usd: r.usd_spent }
    }
}

impl JobRecord {
    /// A new record, named after the current time. Records made in the
    /// same millisecond by one process sort in the order they were made
    /// (a sequence number follows the time); the random suffix keeps two
    /// processes' records apart.
    pub(crate) fn new(base_url: String, output: PathBuf, state: JobState) -> JobRecord {
        static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let now = SystemTime::now();
        let stamp = humantime::format_rfc3339_millis(now).to_string();
        let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
        let sequence = SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        JobRecord {
            key: format!("{digits}-{sequence:010}-{:08x}", fastrand::u32(..)),
            id: None,
            state,
            model: None,
            prompt: None,
            input: None,
            options: RequestOptions::default(),
            base_url,
            created_at: stamp.clone(),
            updated_at: stamp,
            output,
            simulated: false,
            chain: None,
            credits_used: None,
            bytes: None,
            files: Vec::new(),
            took_secs: None,
            time_scale: None,
            error: None,
            client_request_id: None,
            receipt: None,
        }
    }

    /// The finished download of `path`, if this job's result is there whole.
    pub(crate) fn saved(&self, path: &Path) -> Option<&SavedFile> {
        self.files.iter().find(|f| f.path == path && f.is_intact())
    }

    /// Whether every result file is on disk whole: the record is downloaded
    /// and each file it downloaded is still the regular file of that size.
    pub(crate) fn result_intact(&self) -> bool {
        self.state == JobState::Downloaded
            && if self.files.is_empty() {
                // Journaled before files were: its output and total size.
                self.bytes.is_some_and(|bytes| {
                    fs::metadata(&self.output).is_ok_and(|m| m.is_file() && m.len() == bytes)
                })
            } else {
                self.files.iter().all(SavedFile::is_intact)
            }
    }

    /// How long ago the record was made, if its time reads back.
    pub(crate) fn age(&self) -> Option<Duration> {
        let created = humantime::parse_rfc3339(&self.created_at).ok()?;
        SystemTime::now().duration_since(created).ok()
    }
}

/// A record's advisory lock; released when dropped.
#[derive(Debug)]
pub(crate) struct RecordLock {
    _file: fs::File,
}

/// The journal directory.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal in `dir`, which is created when the first record is saved.
    pub(crate) fn new(dir: PathBuf) -> Journal {
        Journal { dir }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }

    /// Writes a record durably, replacing its previous version atomically.
    pub(crate) fn save(&self, record: &mut JobRecord) -> anyhow::Result<()> {
        record.updated_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        // Keys are ours (digits, a dash, hex), so they cannot leave the directory.
        anyhow::ensure!(
            record.key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "invalid journal key {:?}",
            record.key
        );
        self.create_dir()?;
        let json = serde_json::to_vec_pretty(record).context("encoding a journal record")?;
        let path = self.path_of(&record.key);
        let tmp = self.dir.join(format!(".{}.{}.tmp", record.key, std::process::id()));
        let written = (|| {
            let mut file = private_file(&tmp)?;
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            sync_dir(&self.dir)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.with_context(|| format!("writing the job journal at {}", path.display()))
    }

    /// Takes the advisory lock of a record, held until the returned guard
    /// is dropped (or the process dies): the one process following that job.
    /// `None` if another process holds it.
    pub(crate) fn lock(&self, key: &str) -> anyhow::Result<Option<RecordLock>> {
        let dir = self.dir.join("locks");
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{key}.lock"));
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(RecordLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
        }
    }

    /// Deletes a record (and its lock file): for a create the API refused,
    /// which left no job, or at the user's request.
    pub(crate) fn remove(&self, key: &str) -> anyhow::Result<()> {
        match fs::remove_file(self.path_of(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing journal record {key}")),
        }
        // Its lock file goes too; a lock held on it still holds.
        let _ = fs::remove_file(self.dir.join("locks").join(format!("{key}.lock")));
        Ok(())
    }

    /// Every record, oldest first. Files that do not parse are skipped with
    /// a warning, so that one bad file cannot hide the others.
    pub(crate) fn load_all(&self) -> anyhow::Result<Vec<JobRecord>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("reading the job journal at {}", self.dir.display()));
            }
        };
        let mut records = Vec::new();
        for entry in entries {
            let path =
                entry.with_context(|| format!("reading the job journal at {}", self.dir.display()))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            // Dot files are writes in progress, or left by a killed one.
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let parsed = fs::read(&path)
                .map_err(anyhow::Error::from)
                .and_then(|bytes| serde_json::from_slice::<JobRecord>(&bytes).map_err(Into::into));
            match parsed {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!("skipping journal file {}: {e}", path.display()),
            }
        }
        records.sort_by(|a, b| (&a.created_at, &a.key).cmp(&(&b.created_at, &b.key)));
        Ok(records)
    }

    /// The record with journal key `key`, if there is one.
    pub(crate) fn load(&self, key: &str) -> anyhow::Result<Option<JobRecord>> {
        let path = self.path_of(key);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The newest record of generation `id`.
    pub(crate) fn find(&self, id: &str) -> anyhow::Result<Option<JobRecord>> {
        Ok(self.load_all()?.into_iter().rev().find(|r| r.id.as_deref() == Some(id)))
    }

    fn create_dir(&self) -> anyhow::Result<()> {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&self.dir)
            .with_context(|| format!("creating the job journal at {}", self.dir.display()))
    }
}

fn private_file(path: &Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Makes a rename durable: on Unix the directory entry itself must be synced.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_file_is_intact_only_as_a_regular_file_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.mp4");
        let mut record = JobRecord::new("http://x".into(), path.clone(), JobState::Downloaded);
        record.files.push(SavedFile { path: path.clone(), bytes: 3 });
        assert!(!record.result_intact(), "missing");
        std::fs::write(&path, "abc").unwrap();
        assert!(record.result_intact());
        assert!(record.saved(&path).is_some());
        std::fs::write(&path, "abcd").unwrap();
        assert!(!record.result_intact(), "another size");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(!record.result_intact(), "a directory");
        assert!(record.saved(&path).is_none());
        record.state = JobState::Downloading;
        assert!(!record.result_intact(), "not finished");
    }

    fn record(journal: &Journal, id: &str) -> JobRecord {
        let mut r =
            JobRecord::new("http://127.0.0.1:1/".into(), PathBuf::from("/tmp/out.mp4"), JobState::Queued);
        r.id = Some(id.to_owned());
        r.prompt = Some("a prompt".into());
        journal.save(&mut r).unwrap();
        r
    }

    #[test]
    fn a_record_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("jobs"));
        let held = journal.lock("k1").unwrap().expect("free at first");
        assert!(journal.lock("k1").unwrap().is_none(), "held elsewhere");
        assert!(journal.lock("k2").unwrap().is_some(), "other records are free");
        drop(held);
        assert!(journal.lock("k1").unwrap().is_some(), "released with its guard");
    }

    #[test]
    fn records_made_in_the_same_millisecond_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("jobs"));
        let made: Vec<String> = (0..200).map(|i| record(&journal, &format!("g{i}")).key).collect();
        let listed: Vec<String> = journal.load_all().unwrap().into_iter().map(|r| r.key).collect();
        assert_eq!(listed, made);
    }

    #[test]
    fn records_round_trip_and_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("jobs"));
        assert!(journal.load_all().unwrap().is_empty());
        let mut first = record(&journal, "g1");
        let second = record(&journal, "g2");
        first.state = JobState::Downloaded;
        first.bytes = Some(42);
        journal.save(&mut first).unwrap();

        let all = journal.load_all().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0], first);
        assert_eq!(all[1], second);
        assert_eq!(journal.find("g2").unwrap().unwrap(), second);
        assert!(journal.find("nope").unwrap().is_none());
        let names: Vec<_> = fs::read_dir(journal.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "no temporary files left: {names:?}");

        journal.remove(&first.key).unwrap();
        journal.remove(&first.key).unwrap();
        assert_eq!(journal.load_all().unwrap(), vec![second]);
    }

    #[test]
    fn a_bad_file_hides_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().to_owned());
        let good = record(&journal, "g1");
        fs::write(dir.path().join("torn.json"), b"{\"key\": ").unwrap();
        fs::write(dir.path().join(".x.1.tmp"), b"partial").unwrap();
        assert_eq!(journal.load_all().unwrap(), vec![good]);
    }

    #[cfg(unix)]
    #[test]
    fn records_are_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("jobs"));
        let r = record(&journal, "g1");
        let mode = fs::metadata(journal.path_of(&r.key)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(journal.dir()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn api_statuses_map_to_states() {
        assert_eq!(JobState::from_status(&aimlvid::Status::Queued), JobState::Queued);
        assert_eq!(JobState::from_status(&aimlvid::Status::Other("moderating".into())), JobState::Generating);
        assert_eq!(JobState::from_status(&aimlvid::Status::Error), JobState::Failed);
        assert!(JobState::Downloading.is_unfinished());
        assert!(!JobState::Downloaded.is_unfinished());
        assert!(!JobState::Unknown.is_unfinished());
    }
}
