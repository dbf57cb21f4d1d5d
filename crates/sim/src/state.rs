//! The upstream's state: jobs, counters, records, and the operations the
//! HTTP handlers perform on them.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::ApiError;
use crate::{Faults, JobStats, RequestRecord, Route, SimConfig, Simulator, Stats};

/// Everything behind the simulator's lock.
#[derive(Debug)]
pub(crate) struct State {
    /// How the listed models differ from the built-in catalog.
    pub(crate) listed: crate::catalogue::Listed,
    pub(crate) rng: fastrand::Rng,
    pub(crate) jobs: HashMap<String, Job>,
    pub(crate) stats: Stats,
    pub(crate) requests: Vec<RequestRecord>,
    pub(crate) faults: Faults,
    pub(crate) credit_balance: Option<f64>,
    /// `GET /v2/logs`: one row per authenticated create, in arrival order.
    pub(crate) logs: Vec<LogRow>,
    /// When each key's recent `GET /v2/logs` calls arrived (real time), for
    /// its rate limit.
    pub(crate) logs_calls: HashMap<usize, std::collections::VecDeque<Duration>>,
    /// Unfinished jobs whose credits are held against the balance.
    pub(crate) holding: std::collections::HashSet<String>,
    /// `GET /v2/billing/transactions`: the account's ledger, oldest first.
    pub(crate) ledger: Vec<crate::billing::LedgerEntry>,
    /// Jobs whose charge is not on the ledger yet (and may never be: a
    /// failed job is not charged).
    pub(crate) unbilled: std::collections::HashSet<String>,
}

impl State {
    pub(crate) fn new(config: &SimConfig) -> Self {
        let mut listed = crate::catalogue::Listed::default();
        for model in &config.added_models {
            listed.add(model.clone());
        }
        for id in &config.dropped_models {
            listed.drop(id);
        }
        Self {
            listed,
            rng: fastrand::Rng::with_seed(config.seed),
            jobs: HashMap::new(),
            stats: Stats::default(),
            requests: Vec::new(),
            faults: Faults::default(),
            credit_balance: config.credit_balance,
            logs: Vec::new(),
            logs_calls: HashMap::new(),
            holding: std::collections::HashSet::new(),
            ledger: Vec::new(),
            unbilled: std::collections::HashSet::new(),
        }
    }

    /// Gives back the credits held for jobs that have failed by `now`, as
    /// the upstream rolls back a failed generation's hold.
    /// Only jobs that may still fail are looked at, so a create costs no
    /// more with 100,000 finished jobs behind it.
    pub(crate) fn refund_failed(&mut self, now: Duration) {
        let Some(balance) = self.credit_balance.as_mut() else { return };
        let jobs = &mut self.jobs;
        self.holding.retain(|id| {
            let Some(job) = jobs.get_mut(id) else { return false };
            match job.status(now) {
                Status::Error => {
                    *balance += job.held;
                    job.held = 0.0;
                    false
                }
                // Charged for good.
                Status::Completed => false,
                Status::Queued | Status::Generating => true,
            }
        });
    }
}

/// One row of `GET /v2/logs`: a create request, accepted or refused.
#[derive(Debug)]
pub(crate) struct LogRow {
    /// Wall-clock time of the request.
    pub(crate) created: std::time::SystemTime,
    /// Virtual time from which the row is listed (the analytics lag).
    pub(crate) visible_at: Duration,
    pub(crate) key_index: usize,
    pub(crate) model: String,
    pub(crate) request_id: String,
    pub(crate) inference_id: String,
    pub(crate) client_request_id: Option<String>,
    /// The job it created; `None`: the create was refused.
    pub(crate) job: Option<String>,
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Queued,
    Generating,
    Completed,
    Error,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Generating => "generating",
            Status::Completed => "completed",
            Status::Error => "error",
        }
    }

    fn is_finished(self) -> bool {
        matches!(self, Status::Completed | Status::Error)
    }
}

/// One generation job. Its whole future is drawn at creation: the status at
/// any virtual time follows from these instants.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: String,
    model: String,
    key_index: usize,
    created_at: Duration,
    started_at: Duration,
    pub(crate) finishes_at: Duration,
    failed: bool,
    pub(crate) credits_used: f64,
    /// Wall-clock time it was finished by a test helper (`complete_now`),
    /// which frozen virtual time cannot tell.
    pub(crate) finished_wall: Option<std::time::SystemTime>,
    /// What the ledger charges instead of `credits_used`
    /// ([`Simulator::charge_differently`]).
    pub(crate) charge_override: Option<u64>,
    /// Credits taken from the balance at create and not yet refunded.
    held: f64,
    polls: u64,
    first_finished_answer_at: Option<Duration>,
    request: Value,
    /// Bumped when the result is replaced, which changes its ETag.
    result_version: u64,
}

impl Job {
    /// A job that completed at `now` (virtual) and `wall`, having cost
    /// `credits`: one created around whoever is watching.
    pub(crate) fn completed(
        id: String,
        model: String,
        key_index: usize,
        now: Duration,
        wall: std::time::SystemTime,
        credits: f64,
    ) -> Job {
        Job {
            request: json!({"model": model}),
            id,
            model,
            key_index,
            created_at: now,
            started_at: now,
            finishes_at: now,
            failed: false,
            credits_used: credits,
            held: 0.0,
            polls: 0,
            first_finished_answer_at: None,
            result_version: 0,
            finished_wall: Some(wall),
            charge_override: None,
        }
    }

    pub(crate) fn status(&self, now: Duration) -> Status {
        if now < self.started_at {
            Status::Queued
        } else if now < self.finishes_at {
            Status::Generating
        } else if self.failed {
            Status::Error
        } else {
            Status::Completed
        }
    }

    pub(crate) fn stats(&self) -> JobStats {
        JobStats {
            id: self.id.clone(),
            model: self.model.clone(),
            key_index: self.key_index,
            polls: self.polls,
            created_at: self.created_at,
            finishes_at: self.finishes_at,
            first_finished_answer_at: self.first_finished_answer_at,
            request: self.request.clone(),
        }
    }

    /// Finishes the job successfully at `now`, unless it already finished.
    pub(crate) fn complete_now(&mut self, now: Duration, credits: f64) -> bool {
        if self.status(now).is_finished() {
            return false;
        }
        self.started_at = self.started_at.min(now);
        self.finishes_at = now;
        self.failed = false;
        self.credits_used = credits;
        true
    }

    /// Fails the job at `now`, unless it already finished.
    pub(crate) fn fail_now(&mut self, now: Duration) -> bool {
        if self.status(now).is_finished() {
            return false;
        }
        self.started_at = self.started_at.min(now);
        self.finishes_at = now;
        self.failed = true;
        self.credits_used = 0.0;
        true
    }

    /// The log row's status and cost at `now`: a job that failed is billed
    /// nothing; one still running has not been charged yet.
    pub(crate) fn outcome(&self, now: Duration) -> (&'static str, f64) {
        match self.status(now) {
            Status::Error => ("failed", 0.0),
            Status::Completed => ("succeeded", self.credits_used),
            Status::Queued | Status::Generating => ("succeeded", 0.0),
        }
    }

    pub(crate) fn model(&self) -> &str {
        &self.model
    }

    /// Virtual run time, creation to finish, of a job that completed by `now`.
    pub(crate) fn completed_in(&self, now: Duration) -> Option<(Duration, Duration)> {
        (self.status(now) == Status::Completed)
            .then(|| (self.finishes_at, self.finishes_at.saturating_sub(self.created_at)))
    }

    /// The poll answer at `now`; `base` is the URL the files are served under.
    fn answer(&self, now: Duration, base: &str) -> Value {
        let status = self.status(now);
        let mut body = json!({"id": self.id, "status": status.as_str()});
        match status {
            Status::Completed => {
                body["video"] = json!({"url": format!("{base}/files/{}.mp4", self.id)});
                body["meta"] = json!({"usage": {"credits_used": js_number(self.credits_used)}});
            }
            Status::Error => {
                body["error"] = json!({
                    "name": "GenerationError",
                    "message": "The generation failed upstream; no credits were used. Try again.",
                });
                body["meta"] = json!({"usage": {"credits_used": 0}});
            }
            Status::Queued | Status::Generating => {}
        }
        body
    }
}

impl Simulator {
    /// Records a request's arrival and counts it; returns its record index.
    pub(crate) fn record_arrival(
        &self,
        route: Route,
        method: &str,
        generation_id: Option<String>,
        range: Option<String>,
    ) -> usize {
        let at = self.real_elapsed();
        let mut state = self.lock();
        match route {
            Route::Create => state.stats.create_requests += 1,
            Route::Poll => state.stats.poll_requests += 1,
            Route::Download => state.stats.download_requests += 1,
            Route::Logs | Route::Metrics | Route::Models | Route::Documents | Route::Billing | Route::Any => {
            }
        }
        state.requests.push(RequestRecord {
            route,
            method: method.to_owned(),
            at,
            status: 0,
            generation_id,
            range,
        });
        state.requests.len() - 1
    }

    /// Fills in a request's answer status.
    pub(crate) fn record_answer(&self, index: usize, status: u16) {
        if let Some(record) = self.lock().requests.get_mut(index) {
            record.status = status;
        }
    }

    /// Notes the job a create produced.
    pub(crate) fn record_generation(&self, index: usize, id: &str) {
        if let Some(record) = self.lock().requests.get_mut(index) {
            record.generation_id = Some(id.to_owned());
        }
    }

    /// The fault, if any, for the next request to `route`.
    pub(crate) fn take_fault(&self, route: Route) -> Option<crate::Fault> {
        let mut state = self.lock();
        let State { faults, rng, .. } = &mut *state;
        faults.take(route, rng)
    }

    pub(crate) fn add_bytes_served(&self, n: u64) {
        self.lock().stats.bytes_served += n;
    }

    /// The index of `presented` among the accepted keys.
    pub(crate) fn key_index(&self, presented: &str) -> Option<usize> {
        self.inner.config.api_keys.iter().position(|k| constant_time_eq(k.as_bytes(), presented.as_bytes()))
    }

    /// Creates a job for a validated body; the answer body on success.
    pub(crate) fn create_job(
        &self,
        key_index: usize,
        model: String,
        request: &Value,
    ) -> Result<(String, Value), ApiError> {
        let config = &self.inner.config;
        let now = self.virtual_now();
        let mut state = self.lock();

        if let Some(max) = config.max_concurrent_jobs {
            let unfinished =
                state.jobs.values().filter(|j| j.key_index == key_index && !j.status(now).is_finished());
            let (count, soonest) = unfinished
                .fold((0usize, Duration::MAX), |(n, soonest), j| (n + 1, soonest.min(j.finishes_at)));
            if count >= max {
                return Err(ApiError::too_many(
                    format!(
                        "Too many concurrent generations: at most {max} unfinished per key. \
                         Wait for one to finish and retry"
                    ),
                    self.real_secs_until(soonest, now),
                ));
            }
        }
        state.refund_failed(now);
        if let Some(balance) = state.credit_balance {
            if balance < config.credits_per_job {
                return Err(ApiError::new(
                    403,
                    format!(
                        "Insufficient credits: a generation needs {} credits, the balance is {}. \
                         Top up your account to continue",
                        config.credits_per_job, balance
                    ),
                ));
            }
            state.credit_balance = Some(balance - config.credits_per_job);
        }

        let queued = config.queue_time.sample(&mut state.rng);
        let generating = config.model_generation_times.get(&model).unwrap_or(&config.generation_time);
        let generating = generating.sample(&mut state.rng);
        // Draw even at rate 0 so enabling failures does not shift other draws.
        let failed = state.rng.f64() < config.failure_rate;
        let id = uuid::Uuid::new_v4().to_string();
        let started_at = now.saturating_add(queued);
        let job = Job {
            id: id.clone(),
            model,
            key_index,
            created_at: now,
            started_at,
            finishes_at: started_at.saturating_add(generating),
            failed,
            credits_used: if failed { 0.0 } else { config.credits_per_job },
            held: if state.credit_balance.is_some() { config.credits_per_job } else { 0.0 },
            polls: 0,
            first_finished_answer_at: None,
            request: crate::validate::elide_data_uris(request),
            result_version: 0,
            finished_wall: None,
            charge_override: None,
        };
        let answer = json!({"id": id, "status": job.status(now).as_str()});
        if job.held > 0.0 {
            state.holding.insert(id.clone());
        }
        state.unbilled.insert(id.clone());
        state.jobs.insert(id.clone(), job);
        state.stats.jobs_created += 1;
        Ok((id, answer))
    }

    /// The poll answer for `id` as seen by `key_index`; `None` if that key
    /// has no such job. `delivered`: the answer will reach the client, so it
    /// counts as a poll (and possibly as the client's notice).
    pub(crate) fn poll_job(&self, key_index: usize, id: &str, base: &str, delivered: bool) -> Option<Value> {
        let now = self.virtual_now();
        let mut state = self.lock();
        let job = state.jobs.get_mut(id).filter(|j| j.key_index == key_index)?;
        if delivered {
            job.polls += 1;
            if job.status(now).is_finished() && job.first_finished_answer_at.is_none() {
                job.first_finished_answer_at = Some(now);
            }
        }
        let mut answer = job.answer(now, base);
        // Models that make several results answer a list.
        let several = aimlvid::catalog::model(&job.model).is_some_and(|m| m.several_results);
        let results = self.inner.config.results_per_job.or(several.then_some(crate::SEVERAL_RESULTS));
        if let (Some(n), Some(one)) = (results, answer.get("video").cloned()) {
            let url = one["url"].as_str().unwrap_or_default().to_owned();
            let list: Vec<Value> = (1..=n)
                .map(|i| if i == 1 { one.clone() } else { json!({"url": format!("{url}?result={i}")}) })
                .collect();
            answer["video"] = Value::Array(list);
        }
        Some(answer)
    }

    /// The file a completed job's result URL leads to.
    pub(crate) fn result_file(&self, id: &str) -> ResultState {
        let now = self.virtual_now();
        let state = self.lock();
        let Some(job) = state.jobs.get(id).filter(|j| j.status(now) == Status::Completed) else {
            return ResultState::Missing;
        };
        match self.inner.config.result_ttl {
            Some(ttl) if now >= job.finishes_at.saturating_add(ttl) => ResultState::Expired,
            _ => ResultState::Ready { version: job.result_version },
        }
    }

    /// Test helper: a completed job's result is replaced by a new version,
    /// as a file host may do: its ETag changes, so a download resumed with
    /// the old one (`If-Range`) gets the whole new file. Returns `false` if
    /// the job has no result.
    pub fn replace_result(&self, id: &str) -> bool {
        let now = self.virtual_now();
        let mut state = self.lock();
        match state.jobs.get_mut(id).filter(|j| j.status(now) == Status::Completed) {
            Some(job) => {
                job.result_version += 1;
                true
            }
            None => false,
        }
    }

    /// Real seconds (at least 1) until virtual time `at`, for `Retry-After`.
    fn real_secs_until(&self, at: Duration, now: Duration) -> u64 {
        let scale = self.inner.config.time_scale;
        let virtual_left = at.saturating_sub(now).as_secs_f64();
        let real = if scale > 0.0 {
            virtual_left / scale
        } else {
            // Frozen time: nothing finishes by itself; suggest a minute.
            60.0
        };
        (real.ceil() as u64).clamp(1, 3600)
    }
}

/// What a result URL serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResultState {
    /// No such completed job.
    Missing,
    /// The job's result outlived [`SimConfig::result_ttl`].
    Expired,
    /// The file, at this version (its ETag changes with it).
    Ready { version: u64 },
}

/// A number as JavaScript serializes it: `120000`, not `120000.0`.
pub(crate) fn js_number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 { Value::from(n as i64) } else { Value::from(n) }
}

/// Key comparison whose time does not depend on where the keys differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(started: u64, finishes: u64, failed: bool) -> Job {
        Job {
            id: "j".into(),
            model: "m".into(),
            key_index: 0,
            created_at: Duration::ZERO,
            started_at: Duration::from_secs(started),
            finishes_at: Duration::from_secs(finishes),
            failed,
            credits_used: 1.0,
            held: 0.0,
            polls: 0,
            first_finished_answer_at: None,
            request: Value::Null,
            result_version: 0,
            finished_wall: None,
            charge_override: None,
        }
    }

    #[test]
    fn status_follows_virtual_time() {
        let j = job(2, 10, false);
        let at = Duration::from_secs;
        assert_eq!(j.status(at(0)), Status::Queued);
        assert_eq!(j.status(at(2)), Status::Generating);
        assert_eq!(j.status(at(9)), Status::Generating);
        assert_eq!(j.status(at(10)), Status::Completed);
        assert_eq!(job(2, 10, true).status(at(11)), Status::Error);
    }

    #[test]
    fn answers_grow_as_the_job_finishes() {
        let j = job(2, 10, false);
        assert_eq!(j.answer(Duration::ZERO, "http://h"), json!({"id": "j", "status": "queued"}));
        assert_eq!(
            j.answer(Duration::from_secs(10), "http://h"),
            json!({"id": "j", "status": "completed",
                   "video": {"url": "http://h/files/j.mp4"},
                   "meta": {"usage": {"credits_used": 1}}})
        );
        let failed = job(2, 10, true).answer(Duration::from_secs(10), "http://h");
        assert_eq!(failed["error"]["name"], "GenerationError");
        assert_eq!(failed["meta"]["usage"]["credits_used"], 0);
    }

    #[test]
    fn complete_now_only_finishes_unfinished_jobs() {
        let mut j = job(2, 10, true);
        assert!(j.complete_now(Duration::from_secs(1), 5.0));
        assert_eq!(j.status(Duration::from_secs(1)), Status::Completed);
        assert!(!j.complete_now(Duration::from_secs(1), 5.0));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
