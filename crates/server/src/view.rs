//! The in-memory view of jobs that answers members' status reads: a
//! sharded map from generation id to the job's last known state, its
//! answer already encoded, so a read is a lookup and a reference-count
//! increment — no lock held across shards, no disk, no upstream call.
//! Memory is bounded: finished jobs beyond a configured count are evicted,
//! least recently used first.

use std::sync::Arc;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use aimlvid::{Generation, Status};
use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::watch;

use crate::store::KeyId;

/// A job as members see it.
#[derive(Debug)]
pub struct JobView {
    /// The key that created it; only that key may see it.
    pub key_id: KeyId,
    /// Its status.
    pub status: Status,
    /// The generation as JSON, exactly as served.
    pub body: Bytes,
}

impl JobView {
    /// The view of a generation.
    pub fn new(key_id: KeyId, generation: &Generation) -> Self {
        JobView { key_id, status: generation.status.clone(), body: encode(generation) }
    }

    /// Whether the job has ended.
    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }
}

/// A generation as the upstream writes it. The upstream is a Node app,
/// whose `JSON.stringify` never writes a whole number as `120000.0`; the
/// typed client reads numbers as `f64`, so whole ones are written back as
/// integers to keep answers byte-for-byte the upstream's.
pub fn encode(generation: &Generation) -> Bytes {
    let Ok(mut value) = serde_json::to_value(generation) else { return Bytes::new() };
    whole_numbers_as_integers(&mut value);
    serde_json::to_vec(&value).map(Bytes::from).unwrap_or_default()
}

fn whole_numbers_as_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15) {
                *value = Value::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

/// The jobs in memory: every unfinished job, and the most recently read or
/// changed finished ones, up to a bound. A finished job pushed out is still
/// in storage, where a read that misses memory finds it (and brings it back).
#[derive(Debug)]
pub struct JobViews {
    by_id: DashMap<String, Slot>,
    /// Finished jobs kept; beyond it, plus some slack, the least recently
    /// used are evicted.
    max_finished: usize,
    finished: AtomicUsize,
    /// A logical clock, ticked by every change; reads stamp their job with
    /// it, so the sweep can tell recently used jobs from the rest.
    clock: AtomicU64,
    sweeping: AtomicBool,
    evicted: AtomicU64,
}

#[derive(Debug)]
struct Slot {
    view: Arc<JobView>,
    /// The job's status changes, for event streams: made when the first
    /// stream subscribes to an unfinished job, fed by every later
    /// [`JobViews::put`], and dropped with the job's last change.
    events: Option<watch::Sender<Arc<JobView>>>,
    /// The clock when the job was last read or changed.
    used: AtomicU64,
}

impl Default for JobViews {
    fn default() -> Self {
        JobViews::new(DEFAULT_RECENT_JOBS)
    }
}

/// How many finished jobs are kept in memory unless configured otherwise:
/// about ten megabytes.
pub const DEFAULT_RECENT_JOBS: usize = 10_000;

/// What a subscriber to a job's changes gets.
#[derive(Debug)]
pub enum Feed {
    /// The job has finished: this is its last state.
    Finished(Arc<JobView>),
    /// The job is unfinished: its current state, then each change; the
    /// channel closes after the job finishes.
    Live(watch::Receiver<Arc<JobView>>),
}

impl Feed {
    /// The key that owns the job.
    pub fn key_id(&self) -> KeyId {
        match self {
            Feed::Finished(view) => view.key_id,
            Feed::Live(changes) => changes.borrow().key_id,
        }
    }
}

impl JobViews {
    /// An empty view keeping at most about `max_finished` finished jobs.
    pub fn new(max_finished: usize) -> Self {
        JobViews {
            by_id: DashMap::new(),
            max_finished,
            finished: AtomicUsize::new(0),
            clock: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
            evicted: AtomicU64::new(0),
        }
    }

    /// A job by generation id.
    pub fn get(&self, id: &str) -> Option<Arc<JobView>> {
        let slot = self.by_id.get(id)?;
        let now = self.clock.load(Relaxed);
        // Written only when stale, so that readers of a hot job do not keep
        // bouncing its cache line between cores.
        if slot.used.load(Relaxed) != now {
            slot.used.store(now, Relaxed);
        }
        Some(slot.view.clone())
    }

    /// Sets a job's view and tells its subscribers. A finished job is never
    /// replaced by an unfinished one, so a reordered update cannot undo its end.
    pub fn put(&self, id: &str, view: JobView) {
        let view = Arc::new(view);
        let now = self.clock.fetch_add(1, Relaxed) + 1;
        let newly_finished = match self.by_id.entry(id.to_owned()) {
            Entry::Occupied(mut slot) => {
                let slot = slot.get_mut();
                if slot.view.is_finished() && !view.is_finished() {
                    return;
                }
                let newly_finished = !slot.view.is_finished() && view.is_finished();
                slot.view = view.clone();
                *slot.used.get_mut() = now;
                if let Some(events) = &slot.events {
                    events.send_replace(view);
                }
                if slot.view.is_finished() {
                    // Subscribers still read the last value; then their channel closes.
                    slot.events = None;
                }
                newly_finished
            }
            Entry::Vacant(slot) => {
                let finished = view.is_finished();
                slot.insert(Slot { view, events: None, used: AtomicU64::new(now) });
                finished
            }
        };
        // The entry's shard lock is released here: the sweep takes shard locks itself.
        if newly_finished {
            let finished = self.finished.fetch_add(1, Relaxed) + 1;
            if finished > self.max_finished + self.max_finished / 16 {
                self.sweep();
            }
        }
    }

    /// Evicts the least recently used finished jobs down to the bound. One
    /// sweep at a time; it costs a pass over the map, once per
    /// `max_finished / 16` finished jobs.
    fn sweep(&self) {
        if self.sweeping.swap(true, Acquire) {
            return;
        }
        let mut finished: Vec<(u64, String)> = self
            .by_id
            .iter()
            .filter(|slot| slot.view.is_finished())
            .map(|slot| (slot.used.load(Relaxed), slot.key().clone()))
            .collect();
        let excess = finished.len().saturating_sub(self.max_finished);
        if excess > 0 {
            finished.select_nth_unstable_by_key(excess - 1, |(used, _)| *used);
            for (_, id) in &finished[..excess] {
                if self.by_id.remove_if(id, |_, slot| slot.view.is_finished()).is_some() {
                    self.finished.fetch_sub(1, Relaxed);
                    self.evicted.fetch_add(1, Relaxed);
                }
            }
        }
        self.sweeping.store(false, Release);
    }

    /// The ids of the unfinished jobs in memory.
    pub fn unfinished_ids(&self) -> Vec<String> {
        self.by_id.iter().filter(|slot| !slot.view.is_finished()).map(|slot| slot.key().clone()).collect()
    }

    /// Subscribes to a job's changes; `None` if it is not in memory.
    pub fn subscribe(&self, id: &str) -> Option<Feed> {
        // Under the shard's write lock, so no change can slip between the
        // current state and the subscription.
        let mut slot = self.by_id.get_mut(id)?;
        if slot.view.is_finished() {
            return Some(Feed::Finished(slot.view.clone()));
        }
        let changes = match &slot.events {
            Some(events) => events.subscribe(),
            None => {
                let (events, changes) = watch::channel(slot.view.clone());
                slot.events = Some(events);
                changes
            }
        };
        Some(Feed::Live(changes))
    }

    /// How many jobs are in memory, and how many of them are finished.
    pub fn counts(&self) -> (usize, usize) {
        (self.by_id.len(), self.finished.load(Relaxed))
    }

    /// How many finished jobs were evicted so far.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Relaxed)
    }
}

/// Reads of ids that are in neither memory nor storage: the ids recently
/// looked up and not found, and a bound on look-ups running at once, so
/// that requests for made-up ids cost storage at most one read per id per
/// [`UnknownIds::REMEMBERED_FOR`], two at a time, and never hold up writes
/// (which have a connection of their own).
///
/// Remembering an absent id is safe: a job this server creates is in
/// memory before its id is answered, and memory is checked first.
#[derive(Debug)]
pub struct UnknownIds {
    absent: DashMap<Box<str>, tokio::time::Instant>,
    lookups: tokio::sync::Semaphore,
}

impl Default for UnknownIds {
    fn default() -> Self {
        UnknownIds { absent: DashMap::new(), lookups: tokio::sync::Semaphore::new(Self::CONCURRENT_LOOKUPS) }
    }
}

impl UnknownIds {
    /// How long an id found absent is answered 404 without a look-up.
    pub const REMEMBERED_FOR: std::time::Duration = std::time::Duration::from_secs(10);
    /// Look-ups of ids not in memory running at once, at most.
    pub const CONCURRENT_LOOKUPS: usize = 2;
    /// Absent ids remembered at most (about 10 MB).
    const MAX_REMEMBERED: usize = 100_000;

    /// Whether `id` was looked up lately and not found.
    pub fn known_absent(&self, id: &str) -> bool {
        self.absent.get(id).is_some_and(|at| at.elapsed() < Self::REMEMBERED_FOR)
    }

    /// Remembers that `id` is not in storage.
    pub fn remember_absent(&self, id: &str) {
        if self.absent.len() >= Self::MAX_REMEMBERED {
            self.absent.retain(|_, at| at.elapsed() < Self::REMEMBERED_FOR);
            if self.absent.len() >= Self::MAX_REMEMBERED {
                self.absent.clear();
            }
        }
        self.absent.insert(id.into(), tokio::time::Instant::now());
    }

    /// Waits for a turn to look an id up in storage.
    pub async fn lookup(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.lookups.acquire().await.ok()
    }
}

/// What a job was asked for, as OpenAI's videos API shows it beside the
/// job's state: it never changes after the create, but for the member
/// deleting it. Kept in memory ([`JobRequests`]) so that a video's read
/// touches no storage.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    /// The key that created it; only that key may see it.
    pub key_id: KeyId,
    /// The model asked for.
    pub model: String,
    /// The prompt, as kept beside the job.
    pub prompt: Option<String>,
    /// The create body as sent upstream, media sent inline left out.
    pub params: Option<Arc<serde_json::Value>>,
    /// The parameters whose inline media `params` leaves out.
    pub inline_media: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// When storage recorded its end (unix seconds), if it had when read.
    pub finished_at: Option<i64>,
    /// The video this one remixes.
    pub remixed_from: Option<String>,
    /// Whether its member deleted it.
    pub hidden: bool,
    /// The OpenAI front's `video` object for this job, as far as it never
    /// changes: worked out on the first read, so that a hot read does
    /// not work it out again.
    pub(crate) openai_video: std::sync::OnceLock<FixedVideo>,
}

/// A job's `video` object (OpenAI's videos API) as far as it never
/// changes: the OpenAI front works it out on the job's first read
/// (`openai/object.rs`), so that a hot read writes only what moves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FixedVideo {
    /// The unchanging fields, encoded as the start of a JSON object with
    /// no closing brace: the moving ones follow it on each read.
    pub(crate) head: bytes::Bytes,
    /// How long the model's jobs take, in seconds, as the server learned
    /// it (else the model family's typical duration): `progress` is
    /// estimated from it.
    pub(crate) typical_secs: f64,
    /// Seconds from create to the proxy's first upstream poll of the job,
    /// by its model's schedule when it was first read.
    pub(crate) first_poll_secs: f64,
    /// Seconds between the proxy's later upstream polls, at most.
    pub(crate) poll_interval_secs: f64,
}

impl JobRequest {
    /// What a stored job was asked for; `None` without an upstream id.
    pub fn of_summary(job: &crate::store::JobSummary) -> Option<(String, JobRequest)> {
        let id = job.generation_id.clone()?;
        let params = job.params.as_deref().and_then(|p| serde_json::from_str(p).ok()).map(Arc::new);
        Some((
            id,
            JobRequest {
                key_id: job.key_id,
                model: job.model.clone(),
                prompt: job.prompt.clone(),
                params,
                inline_media: job.inline_media.clone(),
                created_at: job.created_at,
                finished_at: job.credits_charged.is_some().then_some(job.updated_at),
                remixed_from: job.remixed_from.clone(),
                hidden: job.hidden_at.is_some(),
                openai_video: std::sync::OnceLock::new(),
            },
        ))
    }
}

/// What recent jobs were asked for, by generation id: filled by each
/// create and by the first read of a job from storage, so that a hot read
/// needs no storage. Bounded: beyond its size, plus some slack, the least
/// recently used are forgotten (and read from storage again if asked for).
/// On a shared store another replica's deletion reaches it as a change
/// ([`JobRequests::forget`]).
#[derive(Debug)]
pub struct JobRequests {
    by_id: DashMap<String, (Arc<JobRequest>, AtomicU64)>,
    max: usize,
    clock: AtomicU64,
    sweeping: AtomicBool,
}

impl JobRequests {
    /// An empty cache of about `max` jobs (at least a thousand).
    pub fn new(max: usize) -> Self {
        JobRequests {
            by_id: DashMap::new(),
            max: max.max(1000),
            clock: AtomicU64::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    /// What a job was asked for, if in memory.
    pub fn get(&self, id: &str) -> Option<Arc<JobRequest>> {
        let slot = self.by_id.get(id)?;
        let now = self.clock.load(Relaxed);
        // Written only when stale, as in `JobViews::get`.
        if slot.1.load(Relaxed) != now {
            slot.1.store(now, Relaxed);
        }
        Some(slot.0.clone())
    }

    /// Remembers what a job was asked for, and hands it back as kept.
    pub fn put(&self, id: &str, request: JobRequest) -> Arc<JobRequest> {
        let now = self.clock.fetch_add(1, Relaxed) + 1;
        let request = Arc::new(request);
        self.by_id.insert(id.to_owned(), (request.clone(), AtomicU64::new(now)));
        if self.by_id.len() > self.max + self.max / 16 {
            self.sweep();
        }
        request
    }

    /// Marks a job in memory as deleted by its member.
    pub fn hide(&self, id: &str) {
        if let Some(mut slot) = self.by_id.get_mut(id)
            && !slot.0.hidden
        {
            slot.0 = Arc::new(JobRequest { hidden: true, ..(*slot.0).clone() });
        }
    }

    /// Forgets a job, so that its next read goes to storage (another
    /// replica changed it).
    pub fn forget(&self, id: &str) {
        self.by_id.remove(id);
    }

    /// Forgets every job (changes to them may have been missed).
    pub fn clear(&self) {
        self.by_id.clear();
    }

    /// How many jobs are in memory.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Forgets the least recently used down to the bound; one sweep at a time.
    fn sweep(&self) {
        if self.sweeping.swap(true, Acquire) {
            return;
        }
        let mut all: Vec<(u64, String)> =
            self.by_id.iter().map(|slot| (slot.1.load(Relaxed), slot.key().clone())).collect();
        let excess = all.len().saturating_sub(self.max);
        if excess > 0 {
            all.select_nth_unstable_by_key(excess - 1, |(used, _)| *used);
            for (_, id) in &all[..excess] {
                self.by_id.remove(id);
            }
        }
        self.sweeping.store(false, Release);
    }
}

/// The view of a stored job, if it has an upstream id.
pub(crate) fn view_of(job: &crate::store::JobRecord) -> Option<(String, JobView)> {
    let id = job.generation_id.clone()?;
    let view = stored_view(&id, job.key_id, job.body.as_deref(), &job.status);
    Some((id, view))
}

/// The view of stored job `id` of `key_id`'s: from the body storage holds,
/// else (none yet, or unreadable) from its recorded status alone.
pub(crate) fn stored_view(id: &str, key_id: KeyId, body: Option<&str>, status: &str) -> JobView {
    let generation = body
        .and_then(|b| serde_json::from_str::<aimlvid::Generation>(b).ok())
        .unwrap_or_else(|| aimlvid::Generation::new(id.to_owned(), aimlvid::Status::from(status)));
    JobView::new(key_id, &generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_job_stays_finished() {
        let views = JobViews::default();
        views.put("g", JobView::new(1, &Generation::new("g", Status::Completed)));
        views.put("g", JobView::new(1, &Generation::new("g", Status::Generating)));
        let view = views.get("g").unwrap();
        assert_eq!(view.status, Status::Completed);
        let body: serde_json::Value = serde_json::from_slice(&view.body).unwrap();
        assert_eq!(body, serde_json::json!({"id": "g", "status": "completed"}));
        assert_eq!(views.counts(), (1, 1));
    }

    #[test]
    fn subscribers_see_each_change_and_the_channel_closes_after_the_end() {
        let views = JobViews::default();
        assert!(views.subscribe("g").is_none());
        views.put("g", JobView::new(7, &Generation::new("g", Status::Queued)));
        let Some(Feed::Live(mut changes)) = views.subscribe("g") else { panic!("not live") };
        assert_eq!(changes.borrow_and_update().status, Status::Queued);
        views.put("g", JobView::new(7, &Generation::new("g", Status::Generating)));
        assert!(changes.has_changed().unwrap());
        assert_eq!(changes.borrow_and_update().status, Status::Generating);
        views.put("g", JobView::new(7, &Generation::new("g", Status::Completed)));
        assert_eq!(changes.borrow_and_update().status, Status::Completed, "the last value stays readable");
        assert!(changes.has_changed().is_err(), "and then the channel is closed");
        let Some(Feed::Finished(view)) = views.subscribe("g") else { panic!("not finished") };
        assert_eq!((view.key_id, view.status.clone()), (7, Status::Completed));
    }

    #[test]
    fn whole_numbers_are_written_as_node_writes_them() {
        let generation: Generation = serde_json::from_str(
            r#"{"id":"g","status":"completed","meta":{"usage":{"credits_used":120000}},"extra":[1.5,2.0]}"#,
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&encode(&generation)).unwrap(),
            r#"{"extra":[1.5,2],"id":"g","meta":{"usage":{"credits_used":120000}},"status":"completed"}"#
        );
    }

    fn finished(id: &str) -> JobView {
        JobView::new(1, &Generation::new(id, Status::Completed))
    }

    #[test]
    fn the_least_recently_used_finished_jobs_are_evicted_beyond_the_bound() {
        let views = JobViews::new(3);
        for id in ["a", "b", "c"] {
            views.put(id, finished(id));
        }
        assert!(views.get("a").is_some(), "read: now the most recently used");
        views.put("d", finished("d"));
        assert_eq!(views.counts(), (3, 3));
        assert!(views.get("b").is_none(), "the least recently used went");
        for id in ["a", "c", "d"] {
            assert!(views.get(id).is_some(), "{id} stays");
        }
        assert_eq!(views.evicted(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn absent_ids_are_remembered_for_a_while() {
        let unknown = UnknownIds::default();
        assert!(!unknown.known_absent("x"));
        unknown.remember_absent("x");
        assert!(unknown.known_absent("x") && !unknown.known_absent("y"));
        tokio::time::advance(UnknownIds::REMEMBERED_FOR).await;
        assert!(!unknown.known_absent("x"), "forgotten after a while");
    }

    fn asked(key_id: KeyId) -> JobRequest {
        JobRequest {
            key_id,
            model: "m".into(),
            prompt: Some("a cat".into()),
            params: Some(Arc::new(serde_json::json!({"duration": 4}))),
            inline_media: None,
            created_at: 7,
            finished_at: None,
            remixed_from: None,
            hidden: false,
            openai_video: std::sync::OnceLock::new(),
        }
    }

    #[test]
    fn what_jobs_asked_for_is_kept_hidden_on_delete_and_bounded() {
        let requests = JobRequests::new(0);
        requests.put("g", asked(1));
        assert_eq!(requests.get("g").as_deref(), Some(&asked(1)));
        requests.hide("g");
        assert!(requests.get("g").unwrap().hidden);
        requests.forget("g");
        assert!(requests.get("g").is_none());
        // At least a thousand are kept; the least recently used go beyond.
        for i in 0..1000 {
            requests.put(&format!("j{i}"), asked(1));
        }
        assert!(requests.get("j0").is_some(), "read: now the most recently used");
        // A sixteenth over the bound is let be, so that sweeps are rare.
        for i in 1000..1062 {
            requests.put(&format!("j{i}"), asked(1));
        }
        assert_eq!(requests.len(), 1062, "within the slack");
        requests.put("j1062", asked(1));
        assert_eq!(requests.len(), 1000);
        assert!(requests.get("j0").is_some() && requests.get("j1062").is_some());
        assert!(requests.get("j1").is_none(), "the least recently used went");
    }

    #[test]
    fn unfinished_jobs_are_never_evicted() {
        let views = JobViews::new(0);
        for id in ["a", "b", "c"] {
            views.put(id, JobView::new(1, &Generation::new(id, Status::Generating)));
        }
        views.put("d", finished("d"));
        assert_eq!(views.counts(), (3, 0), "the finished one went at once");
        views.put("a", finished("a"));
        assert!(views.get("a").is_none());
        assert!(views.get("b").is_some() && views.get("c").is_some());
    }
}
