//! When to poll a job: the configured schedule for a model the server has
//! not learned yet, and what it learns from each finished job.
//!
//! A job's true duration is never seen, only bracketed: finished at the
//! poll that saw it so, after the last poll that saw it running. A job
//! already finished at its first poll says only "shorter than that", so the
//! next job of the model is first polled at half that age, until a job is
//! caught running and the bracket closes. With a few closed brackets the
//! server polls each model densely around the durations it has seen
//! (between their 10th and 90th percentiles) and sparsely elsewhere.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many recent durations are kept per model.
const SAMPLES: usize = 32;
/// Closed brackets needed before the schedule follows what was learned.
const MIN_SAMPLES: usize = 3;

/// Polling settings for one model, as configured (`None` keeps the default).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPolling {
    /// Seconds from create to the first poll.
    pub first_delay_secs: Option<f64>,
    /// Seconds between polls after the first.
    pub interval_secs: Option<f64>,
    /// The longest wait between polls, in seconds.
    pub max_interval_secs: Option<f64>,
}

/// How the server polls the upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// Wait from create to the first poll, for a model not learned yet.
    pub first_delay: Duration,
    /// Wait after the first poll, for a model not learned yet.
    pub interval: Duration,
    /// Factor applied to the interval after each poll.
    pub growth: f64,
    /// The longest wait between two polls of a job.
    pub max_interval: Duration,
    /// The shortest wait the learned schedule may choose.
    pub min_interval: Duration,
    /// Relative spread of each wait, so jobs created together drift apart.
    pub jitter: f64,
    /// Whether to learn each model's durations (else the settings above hold).
    pub learn: bool,
    /// Whether a model not learned yet starts from its catalog family's
    /// typical durations ([`aimlvid::JobDurations::typical_of`]) rather
    /// than `first_delay` and `interval`: on by default, off once those are
    /// configured.
    pub family_priors: bool,
    /// Settings for particular models; a model named here is not learned.
    pub models: HashMap<String, ModelPolling>,
    /// Polls in flight at once, at most.
    pub concurrency: usize,
    /// Polls started per second, at most; 429s and 5xx lower the pace
    /// below this, and it recovers as polls succeed.
    pub max_rate: f64,
}

impl PollSettings {
    /// The library's policy for a model not learned yet (`aimlvid`'s
    /// [`PollPolicy`](aimlvid::PollPolicy)), with the server's defaults for the rest.
    pub fn from_policy(policy: &aimlvid::PollPolicy) -> Self {
        PollSettings {
            first_delay: policy.first_delay,
            interval: policy.interval,
            growth: policy.growth.max(1.0),
            max_interval: policy.max_interval.max(policy.interval),
            min_interval: policy.interval.min(Duration::from_secs(1)),
            jitter: policy.jitter,
            learn: true,
            // The policy given is the schedule wanted for every model.
            family_priors: false,
            models: HashMap::new(),
            concurrency: DEFAULT_CONCURRENCY,
            max_rate: DEFAULT_MAX_RATE,
        }
    }

    fn base(&self, model: &str) -> Base {
        let over = self.models.get(model);
        // The family's typical durations, for a model nobody configured.
        let prior = aimlvid::catalog::model(model)
            .filter(|_| self.family_priors && over.is_none())
            .map(|spec| aimlvid::PollPolicy::for_durations(&aimlvid::JobDurations::typical_of(spec.family)));
        let (first_delay, interval) =
            prior.map_or((self.first_delay, self.interval), |p| (p.first_delay, p.interval));
        let pick = |o: Option<f64>, d: Duration| o.map_or(d.as_secs_f64(), |s| s.max(0.0));
        let max = pick(over.and_then(|o| o.max_interval_secs), self.max_interval);
        Base {
            first: pick(over.and_then(|o| o.first_delay_secs), first_delay),
            interval: pick(over.and_then(|o| o.interval_secs), interval).min(max),
            max,
            fixed: over.is_some() || !self.learn,
        }
    }
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings { family_priors: true, ..PollSettings::from_policy(&aimlvid::PollPolicy::default()) }
    }
}

/// Polls in flight at once by default.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// Polls started per second by default.
pub const DEFAULT_MAX_RATE: f64 = 1000.0;

#[derive(Debug, Clone, Copy)]
struct Base {
    first: f64,
    interval: f64,
    max: f64,
    /// Configured for this model, or learning is off: follow `first`/`interval` only.
    fixed: bool,
}

/// What was learned of one model's job durations, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Recent durations in seconds, each from a closed bracket.
    pub durations: VecDeque<f64>,
    /// The shortest age at which a job was already finished at its first poll.
    pub done_by: Option<f64>,
}

/// The schedule for one job, worked out when it starts being followed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    first: f64,
    interval: f64,
    growth: f64,
    max: f64,
    /// Until this age, polls come every `interval`; after it, they thin out.
    dense_until: f64,
    min: f64,
    /// The median of the durations learned, once there are enough.
    median: Option<f64>,
}

impl Plan {
    /// Seconds from now to the next poll, for a job of age `age` seconds
    /// that has been polled `polls` times.
    pub(crate) fn next_wait(&self, polls: u32, age: f64) -> f64 {
        if polls == 0 {
            return (self.first - age).max(0.0);
        }
        let wait = if age <= self.dense_until {
            self.interval
        } else if self.growth > 1.0 {
            self.interval * self.growth.powi(polls.min(1000) as i32 - 1)
        } else {
            self.interval.max((age - self.dense_until) * 0.25)
        };
        wait.clamp(self.min.min(self.max), self.max)
    }

    /// How long the model's jobs take, in seconds, as learned (the median
    /// of the recent ones), once enough have been seen.
    pub(crate) fn learned_duration(&self) -> Option<f64> {
        self.median
    }

    /// Seconds from age `age` until a poll by this plan may next see a
    /// job change: its first poll if that is still to come, else at most
    /// one interval away (where in the interval, a reader cannot know).
    pub(crate) fn until_news(&self, age: f64) -> f64 {
        if age < self.first { self.first - age } else { self.next_wait(1, age) }
    }
}

/// Each model's schedule as the scheduler last worked it out, for the
/// fronts that tell a client when to ask again (`openai-poll-after-ms`).
/// The scheduler publishes a model's plan when it learns; a model it has
/// learned nothing of follows the settings.
#[derive(Debug)]
pub(crate) struct Schedules {
    settings: PollSettings,
    learned: RwLock<HashMap<String, Plan>>,
}

impl Schedules {
    /// The schedules of `settings`, with what `timings` learned so far.
    pub(crate) fn new(settings: PollSettings, timings: &Timings) -> Self {
        let learned =
            timings.by_model.keys().map(|model| (model.clone(), timings.plan(&settings, model))).collect();
        Schedules { settings, learned: RwLock::new(learned) }
    }

    /// The plan a new job of `model` follows.
    pub(crate) fn plan(&self, model: &str) -> Plan {
        let learned = self.learned.read().unwrap_or_else(|e| e.into_inner());
        match learned.get(model) {
            Some(plan) => *plan,
            None => Timings::default().plan(&self.settings, model),
        }
    }

    /// Publishes `model`'s plan as the scheduler now works it out.
    pub(crate) fn publish(&self, model: &str, plan: Plan) {
        let mut learned = self.learned.write().unwrap_or_else(|e| e.into_inner());
        match learned.get_mut(model) {
            Some(known) => *known = plan,
            None => {
                learned.insert(model.to_owned(), plan);
            }
        }
    }
}

/// Every model's learned timing. Owned by the scheduler alone.
#[derive(Debug, Default)]
pub(crate) struct Timings {
    by_model: HashMap<String, Timing>,
}

impl Timings {
    /// Timings as stored: `(model, JSON)` pairs; unreadable ones are skipped.
    pub(crate) fn load(stored: Vec<(String, String)>) -> Self {
        let by_model = stored
            .into_iter()
            .filter_map(|(model, json)| match serde_json::from_str(&json) {
                Ok(timing) => Some((model, timing)),
                Err(e) => {
                    tracing::warn!(model, error = %e, "ignoring an unreadable learned timing");
                    None
                }
            })
            .collect();
        Timings { by_model }
    }

    /// The schedule of a new job of `model`.
    pub(crate) fn plan(&self, settings: &PollSettings, model: &str) -> Plan {
        let base = settings.base(model);
        let min = settings.min_interval.as_secs_f64();
        let configured = Plan {
            first: base.first,
            interval: base.interval,
            growth: settings.growth,
            max: base.max,
            dense_until: 0.0,
            min: 0.0,
            median: None,
        };
        let timing = match self.by_model.get(model) {
            Some(timing) if !base.fixed => timing,
            _ => return configured,
        };
        if timing.durations.len() >= MIN_SAMPLES {
            let mut sorted: Vec<f64> = timing.durations.iter().copied().collect();
            sorted.sort_by(f64::total_cmp);
            let q = |p: f64| sorted[((sorted.len() - 1) as f64 * p).round() as usize];
            let (lo, median, hi) = (q(0.1), q(0.5), q(0.9));
            // Dense across the spread seen, and never coarser than a 1/40 of the duration.
            let interval = ((hi - lo) / 8.0).max(median / 40.0).clamp(min, base.max.max(min));
            return Plan {
                first: (lo * 0.85).max(min),
                interval,
                growth: 1.0,
                max: base.max,
                dense_until: hi * 1.25 + interval,
                min,
                median: Some(median),
            };
        }
        match timing.done_by {
            // Jobs finish before the first poll: look earlier next time.
            Some(done_by) if done_by / 2.0 < base.first => Plan {
                first: (done_by / 2.0).max(min),
                interval: base.interval.min(done_by / 4.0).max(min),
                ..configured
            },
            _ => configured,
        }
    }

    /// Learns from a job of `model` that was seen finished at age
    /// `finished_at`, last seen running at `running_at` (if ever).
    /// Returns the model's new timing, to store.
    pub(crate) fn learn(&mut self, model: &str, running_at: Option<f64>, finished_at: f64) -> &Timing {
        let timing = self.by_model.entry(model.to_owned()).or_default();
        let sample = match running_at {
            Some(running_at) => (running_at + finished_at) / 2.0,
            None => {
                timing.done_by = Some(timing.done_by.map_or(finished_at, |d| d.min(finished_at)));
                // Shorter than `finished_at`, by how much unknown: count it a little
                // short, so that the schedule errs towards an early first poll.
                if timing.durations.is_empty() {
                    return timing;
                }
                finished_at * 0.9
            }
        };
        if timing.durations.len() == SAMPLES {
            timing.durations.pop_front();
        }
        timing.durations.push_back(sample);
        timing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PollSettings {
        PollSettings::default()
    }

    #[test]
    fn a_model_never_seen_follows_the_librarys_policy() {
        let plan = Timings::default().plan(&settings(), "m");
        assert_eq!(plan.next_wait(0, 0.0), 85.0);
        assert_eq!(plan.next_wait(1, 85.0), 3.5);
        assert!((plan.next_wait(2, 88.5) - 3.5 * 1.03).abs() < 1e-9);
        assert_eq!(plan.next_wait(500, 3000.0), 15.0, "capped at the longest interval");
        assert_eq!(plan.next_wait(0, 100.0), 0.0, "a resumed job past its first delay is due");
    }

    #[test]
    fn a_catalog_model_never_seen_starts_from_its_familys_durations() {
        let quick = aimlvid::PollPolicy::for_durations(&aimlvid::JobDurations::typical_of(
            aimlvid::catalog::Family::TextToVideo,
        ));
        let plan = Timings::default().plan(&settings(), "google/veo-3.1-t2v-fast");
        assert_eq!(plan.next_wait(0, 0.0), quick.first_delay.as_secs_f64());
        assert_eq!(plan.next_wait(1, 30.0), quick.interval.as_secs_f64());
        let avatar = Timings::default().plan(&settings(), "bytedance/omnihuman").next_wait(0, 0.0);
        assert!(avatar > plan.next_wait(0, 0.0), "a slower family waits longer: {avatar}");
        // A schedule the operator configured holds for every model.
        let configured = PollSettings { family_priors: false, ..settings() };
        assert_eq!(Timings::default().plan(&configured, "google/veo-3.1-t2v-fast").next_wait(0, 0.0), 85.0);
    }

    #[test]
    fn jobs_done_before_the_first_poll_pull_it_earlier_until_one_is_caught_running() {
        let mut timings = Timings::default();
        timings.learn("m", None, 85.0);
        assert_eq!(timings.plan(&settings(), "m").next_wait(0, 0.0), 42.5);
        timings.learn("m", None, 42.5);
        timings.learn("m", None, 21.25);
        assert_eq!(timings.plan(&settings(), "m").next_wait(0, 0.0), 10.625);
        assert!(timings.by_model["m"].durations.is_empty(), "no bracket closed yet");
    }

    #[test]
    fn closed_brackets_give_a_dense_window_around_the_durations_seen() {
        let mut timings = Timings::default();
        for (running, done) in [(5.0, 7.0), (5.5, 6.5), (6.0, 7.0), (5.0, 6.0)] {
            timings.learn("m", Some(running), done);
        }
        let plan = timings.plan(&settings(), "m");
        assert_eq!(plan.learned_duration(), Some(6.0));
        assert_eq!(Timings::default().plan(&settings(), "m").learned_duration(), None);
        let first = plan.next_wait(0, 0.0);
        assert!((4.0..6.0).contains(&first), "first poll just before the shortest: {first}");
        let interval = plan.next_wait(1, first);
        assert_eq!(interval, 1.0, "the floor of learned waits");
        assert!(plan.next_wait(5, 60.0) > interval, "sparse long after the usual end");
        assert!(plan.next_wait(50, 600.0) <= 15.0);
    }

    #[test]
    fn a_configured_model_is_not_learned() {
        let mut configured = settings();
        configured.models.insert(
            "m".into(),
            ModelPolling { first_delay_secs: Some(20.0), interval_secs: Some(2.0), max_interval_secs: None },
        );
        let mut timings = Timings::default();
        for _ in 0..5 {
            timings.learn("m", Some(5.0), 6.0);
        }
        let plan = timings.plan(&configured, "m");
        assert_eq!((plan.next_wait(0, 0.0), plan.next_wait(1, 20.0)), (20.0, 2.0));
    }

    #[test]
    fn only_the_last_samples_are_kept() {
        let mut timings = Timings::default();
        for i in 0..100 {
            timings.learn("m", Some(f64::from(i)), f64::from(i) + 1.0);
        }
        assert_eq!(timings.by_model["m"].durations.len(), SAMPLES);
        let json = serde_json::to_string(&timings.by_model["m"]).unwrap();
        let back = Timings::load(vec![("m".into(), json)]);
        assert_eq!(back.by_model["m"], timings.by_model["m"]);
    }

    #[test]
    fn schedules_tell_readers_what_the_scheduler_would_do() {
        let mut timings = Timings::default();
        for (running, done) in [(5.0, 7.0), (5.5, 6.5), (6.0, 7.0)] {
            timings.learn("learned", Some(running), done);
        }
        let schedules = Schedules::new(settings(), &timings);
        assert_eq!(schedules.plan("learned"), timings.plan(&settings(), "learned"), "loaded timings hold");
        assert_eq!(schedules.plan("new"), Timings::default().plan(&settings(), "new"));
        timings.learn("new", Some(30.0), 32.0);
        let plan = timings.plan(&settings(), "new");
        schedules.publish("new", plan);
        assert_eq!(schedules.plan("new"), plan);

        // News comes with the first poll, then an interval at most apart.
        let never_seen = Timings::default().plan(&settings(), "m");
        assert_eq!(never_seen.until_news(0.0), 85.0);
        assert_eq!(never_seen.until_news(80.0), 5.0);
        assert_eq!(never_seen.until_news(90.0), 3.5);
    }
}
