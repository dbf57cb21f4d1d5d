//! The one scheduler: every unfinished job waits in a timer heap for its
//! next poll, and due polls run with bounded concurrency at a pace that
//! upstream 429s and 5xx lower for everyone (and that recovers as polls
//! succeed), instead of one task per job, each backing off on its own.
//! Due jobs take their turn by key, so one key's backlog cannot starve
//! another's polls.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use aimlvid::Status;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::breaker::UpstreamBreaker;
use super::settle::Settle;
use super::timing::{Plan, PollSettings, Schedules, Timings};
use super::writer::Writer;
use crate::metrics::Metrics;
use crate::store::{JobRecord, JobWrite, KeyId, status};

/// The slowest pace the scheduler falls to, in polls per second.
const MIN_RATE: f64 = 1.0;

/// A job to follow until it finishes.
#[derive(Debug)]
pub(crate) struct FollowJob {
    /// The upstream's id.
    pub(crate) id: String,
    /// The key that created it.
    pub(crate) key_id: KeyId,
    /// Its model, whose schedule it follows.
    pub(crate) model: String,
    /// How long ago it was created.
    pub(crate) age: Duration,
    /// Its status as last stored.
    pub(crate) status: Status,
    /// Whether it was created just now (else it is resumed after a restart).
    pub(crate) fresh: bool,
}

/// A handle on the scheduler task.
#[derive(Debug, Clone)]
pub(crate) struct Scheduler {
    follow: mpsc::UnboundedSender<FollowJob>,
    schedules: Arc<Schedules>,
}

/// The scheduler's side of [`Scheduler`]: the jobs to follow, and where
/// to publish each model's schedule as it learns.
#[derive(Debug)]
pub(crate) struct FollowQueue(mpsc::UnboundedReceiver<FollowJob>, Arc<Schedules>);

impl Scheduler {
    /// A handle, and the queue [`run`] takes its jobs from; jobs follow
    /// `settings` and what `timings` learned.
    pub(crate) fn new(settings: &PollSettings, timings: &Timings) -> (Scheduler, FollowQueue) {
        let (follow, queue) = mpsc::unbounded_channel();
        let schedules = Arc::new(Schedules::new(settings.clone(), timings));
        (Scheduler { follow, schedules: schedules.clone() }, FollowQueue(queue, schedules))
    }

    /// The schedule a new job of `model` is polled by.
    pub(crate) fn plan(&self, model: &str) -> Plan {
        self.schedules.plan(model)
    }

    /// Follows a job until it finishes.
    pub(crate) fn follow(&self, job: FollowJob) {
        if let Err(refused) = self.follow.send(job) {
            // Only once the scheduler has stopped: the job stays unfinished in
            // storage and the next start resumes it.
            tracing::debug!(generation_id = refused.0.id, "not followed: the server is stopping");
        }
    }

    /// Follows a job found in storage (at start, or taken over from a
    /// replica that stopped); one without an upstream id yet has nothing to poll.
    pub(crate) fn follow_stored(&self, job: JobRecord) {
        let Some(id) = job.generation_id else { return };
        let age =
            Duration::from_secs(u64::try_from(crate::calendar::unix_now() - job.created_at).unwrap_or(0));
        let status = Status::from(job.status.as_str());
        self.follow(FollowJob { id, key_id: job.key_id, model: job.model, age, status, fresh: false });
    }
}

/// What the scheduler polls and records with, and no more.
#[derive(Debug, Clone)]
pub(crate) struct Poller {
    pub(crate) upstream: aimlvid::Client,
    pub(crate) breaker: Arc<UpstreamBreaker>,
    pub(crate) writer: Writer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settle: Settle,
}

/// Runs the scheduler until `stop`: polls through `poller`'s upstream
/// client and records what it sees through its [`Settle`].
pub(crate) async fn run(
    poller: Poller,
    settings: PollSettings,
    timings: Timings,
    queue: FollowQueue,
    stop: CancellationToken,
) {
    Engine::new(poller, settings, timings, queue.1).run(queue.0, stop).await;
}

/// A followed job: what the scheduler needs, and no more.
#[derive(Debug)]
struct Job {
    key_id: KeyId,
    model: Arc<str>,
    created: Instant,
    plan: Plan,
    polls: u32,
    /// The age (seconds) at which a poll last saw it running.
    running_at: Option<f64>,
    status: Status,
    fresh: bool,
    /// The upstream said it does not know the job ([`Polled::Gone`]).
    gone: bool,
}

impl Job {
    fn age(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.created).as_secs_f64()
    }
}

/// What one poll found.
#[derive(Debug)]
enum Polled {
    /// The job's status, already stored and shown if it changed.
    Seen(Status),
    /// The upstream is struggling (429, 5xx, no answer): slow everyone down.
    Strained { retry_after: Option<Duration> },
    /// Something about this job went wrong (an unreadable answer, a
    /// status storage did not take): poll it again later, rarely.
    Failed,
    /// The upstream says the job is not there (404) or cannot be asked
    /// about (400, 403): that will not change by itself. Recorded for an
    /// admin, and asked again only hourly, never given up.
    Gone(String),
}

/// How often a job the upstream does not know is asked about again.
const GONE_INTERVAL: Duration = Duration::from_secs(3600);

struct Engine {
    poller: Poller,
    settings: PollSettings,
    timings: Timings,
    schedules: Arc<Schedules>,
    models: HashSet<Arc<str>>,
    jobs: HashMap<Arc<str>, Job>,
    due: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    ready: Ready,
    pace: Pace,
}

/// Jobs due for a poll and waiting for the pace to allow it, taken in
/// turn by key: when polls are scarce (the upstream straining, a low
/// `--poll-rate`), one key's 10,000 due jobs delay another key's next poll
/// by one turn, not by 10,000 polls.
#[derive(Debug, Default)]
struct Ready {
    queues: HashMap<KeyId, VecDeque<Arc<str>>>,
    /// Keys with jobs waiting, in the order they take their next turn.
    turns: VecDeque<KeyId>,
}

impl Ready {
    fn push(&mut self, key: KeyId, id: Arc<str>) {
        let queue = self.queues.entry(key).or_default();
        if queue.is_empty() {
            self.turns.push_back(key);
        }
        queue.push_back(id);
    }

    /// The next key's oldest waiting job.
    fn pop(&mut self) -> Option<Arc<str>> {
        let key = self.turns.pop_front()?;
        let queue = self.queues.get_mut(&key)?;
        let id = queue.pop_front();
        if queue.is_empty() {
            self.queues.remove(&key);
        } else {
            self.turns.push_back(key);
        }
        id
    }

    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }
}

impl Engine {
    fn new(poller: Poller, settings: PollSettings, timings: Timings, schedules: Arc<Schedules>) -> Self {
        let pace = Pace::new(settings.max_rate);
        Engine {
            poller,
            settings,
            timings,
            schedules,
            models: HashSet::new(),
            jobs: HashMap::new(),
            due: BinaryHeap::new(),
            ready: Ready::default(),
            pace,
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<FollowJob>, stop: CancellationToken) {
        let mut in_flight: JoinSet<(Arc<str>, Polled)> = JoinSet::new();
        let concurrency = self.settings.concurrency.max(1);
        loop {
            let now = Instant::now();
            let wake = match self.due.peek() {
                _ if in_flight.len() >= concurrency => None,
                _ if !self.ready.is_empty() => Some(self.pace.ready_at(now)),
                Some(Reverse((at, _))) => Some((*at).max(self.pace.ready_at(now))),
                None => None,
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    in_flight.abort_all();
                    return;
                }
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => match done {
                    Ok((id, polled)) => self.polled(id, polled),
                    Err(e) => tracing::error!(error = %e, "a poll task failed"),
                },
                Some(job) = commands.recv() => self.add(job),
                () = tokio::time::sleep_until(wake.unwrap_or(now)), if wake.is_some() => {
                    let now = Instant::now();
                    while self.due.peek().is_some_and(|Reverse((at, _))| *at <= now) {
                        let Some(Reverse((_, id))) = self.due.pop() else { break };
                        // A job that finished meanwhile has left `jobs`.
                        if let Some(job) = self.jobs.get(&id) {
                            self.ready.push(job.key_id, id);
                        }
                    }
                    while in_flight.len() < concurrency && !self.ready.is_empty() && self.pace.take(now) {
                        let Some(id) = self.ready.pop() else { break };
                        let Some(job) = self.jobs.get_mut(&id) else { continue };
                        job.polls += 1;
                        // A job marked gone is recorded again whatever it says: its row says `unknown`.
                        let status =
                            if job.gone { Status::Other(status::UNKNOWN.into()) } else { job.status.clone() };
                        let (poller, key_id) = (self.poller.clone(), job.key_id);
                        in_flight.spawn(async move {
                            let polled = poll(&poller, &id, key_id, status).await;
                            (id, polled)
                        });
                    }
                }
            }
        }
    }

    fn add(&mut self, job: FollowJob) {
        if self.jobs.contains_key(job.id.as_str()) {
            return;
        }
        let now = Instant::now();
        let model = self.intern(&job.model);
        let plan = self.timings.plan(&self.settings, &model);
        let id: Arc<str> = job.id.into();
        let created = now.checked_sub(job.age).unwrap_or(now);
        let entry = Job {
            key_id: job.key_id,
            model,
            created,
            plan,
            polls: 0,
            running_at: None,
            status: job.status,
            fresh: job.fresh,
            gone: false,
        };
        let mut wait = plan.next_wait(0, entry.age(now));
        if !job.fresh {
            // Resumed jobs already due are spread over an interval, not polled in one herd.
            wait += fastrand::f64() * plan.next_wait(1, entry.age(now)).max(1.0);
        }
        self.jobs.insert(id.clone(), entry);
        self.poller.metrics.followed(1);
        self.schedule(id, now, wait);
    }

    fn intern(&mut self, model: &str) -> Arc<str> {
        if let Some(model) = self.models.get(model) {
            return model.clone();
        }
        let model: Arc<str> = model.into();
        self.models.insert(model.clone());
        model
    }

    fn schedule(&mut self, id: Arc<str>, now: Instant, wait: f64) {
        let jitter = self.settings.jitter;
        let wait = if jitter > 0.0 { wait * (1.0 + jitter * (2.0 * fastrand::f64() - 1.0)) } else { wait };
        let at = now + Duration::from_secs_f64(wait.clamp(0.0, 1.0e9));
        self.due.push(Reverse((at, id)));
    }

    fn polled(&mut self, id: Arc<str>, polled: Polled) {
        let now = Instant::now();
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let age = job.age(now);
        let wait = match polled {
            Polled::Seen(status) => {
                self.pace.recover();
                if status.is_finished() {
                    let job = self.jobs.remove(&id).expect("present above");
                    self.poller.metrics.followed(-1);
                    if job.fresh && self.settings.learn {
                        let timing = self.timings.learn(&job.model, job.running_at, age);
                        if let Ok(timing) = serde_json::to_string(timing) {
                            let write = JobWrite::ModelTiming { model: job.model.to_string(), timing };
                            self.poller.writer.write_later(write);
                        }
                        self.schedules.publish(&job.model, self.timings.plan(&self.settings, &job.model));
                    }
                    return;
                }
                if job.gone {
                    job.gone = false;
                    tracing::info!(generation_id = %id, "a job the upstream did not know is back");
                }
                job.running_at = Some(age);
                job.status = status;
                job.plan.next_wait(job.polls, age)
            }
            Polled::Strained { retry_after } => {
                self.pace.strained(now, retry_after);
                let wait = job.plan.next_wait(job.polls, age);
                wait.max(retry_after.map_or(0.0, |d| d.as_secs_f64()))
            }
            Polled::Failed => self.settings.max_interval.as_secs_f64(),
            Polled::Gone(note) => {
                if !job.gone {
                    job.gone = true;
                    tracing::warn!(generation_id = %id, note, "the upstream does not know a followed job; \
                        marked unknown for an admin, asked again hourly");
                    self.poller.writer.write_later(JobWrite::Gone { generation_id: id.to_string(), note });
                }
                GONE_INTERVAL.as_secs_f64()
            }
        };
        self.schedule(id, now, wait);
    }
}

/// One poll of one job; a changed status is stored, then shown, before it returns.
async fn poll(poller: &Poller, id: &str, key_id: KeyId, last: Status) -> Polled {
    use aimlvid::Error as E;
    match poller.upstream.poll_once(id).await {
        Ok(generation) => {
            poller.breaker.succeeded();
            if generation.status != last && !poller.settle.record(key_id, &generation).await {
                // Not stored, so not the job's status yet: seen again at a later poll.
                return Polled::Failed;
            }
            Polled::Seen(generation.status)
        }
        Err(e @ (E::RateLimited { .. } | E::Transport { .. })) => {
            Polled::Strained { retry_after: e.retry_after() }
        }
        Err(e @ E::Upstream { .. }) if e.is_transient() => Polled::Strained { retry_after: e.retry_after() },
        // Nothing works until the key is replaced: pause everyone.
        Err(E::Unauthorized { .. }) => {
            poller.breaker.trip();
            Polled::Strained { retry_after: Some(poller.breaker.window()) }
        }
        Err(e @ (E::NotFound { .. } | E::InvalidRequest { .. } | E::OutOfCredits { .. })) => {
            Polled::Gone(e.to_string())
        }
        Err(e) => {
            // Never given up: a paid job is polled until it ends, however long that takes.
            tracing::warn!(generation_id = id, error = %e, "polling failed; will poll this job again later");
            Polled::Failed
        }
    }
}

/// The scheduler's pace: a token bucket whose rate halves when the upstream
/// strains (at most once a second) and grows back as polls succeed.
#[derive(Debug)]
struct Pace {
    max_rate: f64,
    rate: f64,
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
    last_cut: Option<Instant>,
}

impl Pace {
    fn new(max_rate: f64) -> Self {
        let max_rate = max_rate.max(MIN_RATE);
        Pace {
            max_rate,
            rate: max_rate,
            tokens: 1.0,
            refilled: Instant::now(),
            paused_until: None,
            last_cut: None,
        }
    }

    fn burst(&self) -> f64 {
        (self.rate / 20.0).max(1.0)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst());
        self.refilled = now;
    }

    /// When the next poll may start.
    fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        let ready = if self.tokens >= 1.0 {
            now
        } else {
            now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        };
        self.paused_until.map_or(ready, |p| p.max(ready))
    }

    /// Takes a token if a poll may start now.
    fn take(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|p| p > now) {
            return false;
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn strained(&mut self, now: Instant, retry_after: Option<Duration>) {
        if let Some(wait) = retry_after {
            let until = now + wait;
            self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        }
        if self.last_cut.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        self.last_cut = Some(now);
        self.rate = (self.rate / 2.0).max(MIN_RATE);
        self.tokens = self.tokens.min(self.burst());
        tracing::warn!(
            polls_per_second = self.rate,
            "the upstream is straining (429, 5xx or no answer); polling slower"
        );
    }

    fn recover(&mut self) {
        if self.rate < self.max_rate {
            self.rate = (self.rate + self.max_rate / 200.0).min(self.max_rate);
            if self.rate == self.max_rate {
                tracing::info!(polls_per_second = self.rate, "polling at full pace again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_jobs_are_taken_in_turn_by_key() {
        let mut ready = Ready::default();
        for n in 0..10_000 {
            ready.push(1, format!("a{n}").into());
        }
        ready.push(2, "b0".into());
        ready.push(2, "b1".into());
        ready.push(3, "c0".into());
        let first: Vec<String> = (0..7).map(|_| ready.pop().unwrap().to_string()).collect();
        assert_eq!(first, ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]);
        let rest = std::iter::from_fn(|| ready.pop()).count();
        assert_eq!(rest, 10_000 - 4);
        assert!(ready.is_empty() && ready.queues.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_halves_when_strained_and_recovers() {
        let mut pace = Pace::new(100.0);
        let now = Instant::now();
        assert!(pace.take(now));
        pace.strained(now, Some(Duration::from_secs(2)));
        assert_eq!(pace.rate, 50.0);
        pace.strained(now, None);
        assert_eq!(pace.rate, 50.0, "once a second at most");
        assert!(!pace.take(now + Duration::from_secs(1)), "paused for Retry-After");
        assert_eq!(pace.ready_at(now), now + Duration::from_secs(2));
        assert!(pace.take(now + Duration::from_secs(2)));
        for _ in 0..100 {
            pace.recover();
        }
        assert_eq!(pace.rate, 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_spaces_polls_at_its_rate() {
        let mut pace = Pace::new(10.0);
        let start = Instant::now();
        let mut started = 0;
        let mut now = start;
        while now < start + Duration::from_secs(10) {
            if pace.take(now) {
                started += 1;
            }
            now = pace.ready_at(now).max(now + Duration::from_millis(1));
        }
        assert!((99..=102).contains(&started), "{started} polls in 10 s at 10/s");
    }
}
