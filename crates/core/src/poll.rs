//! Waiting for a generation: when to poll, and the stream of status changes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{BoxStream, Stream, StreamExt};
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::model::{Generation, Status};

/// When to ask the API how a generation is doing.
///
/// With `early_probe` set, one poll comes that long after the job is
/// created, to notice a job refused at once (a content filter, say) without
/// waiting out `first_delay`. The first poll comes `first_delay` after the job is created; later polls
/// are `interval` apart, the interval multiplied by `growth` after each poll
/// up to `max_interval`. Every wait is spread by ±`jitter` (at most one
/// `interval` either way) so that many jobs do not poll in step. Waiting ends with [`Error::TimedOut`] once
/// `deadline` has passed; the job itself keeps running upstream.
///
/// The default is tuned for the Veo 3.1 extend models, whose jobs take about
/// two minutes: it stays quiet for most of that time, then polls every few
/// seconds, so it makes fewer calls than a fixed 15 s loop and notices
/// completion several times sooner. `docs/benchmarks.md` has the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    /// A poll this long after creation, before `first_delay`, to notice a
    /// job that fails at once; `None` for none.
    pub early_probe: Option<Duration>,
    /// Wait between creating the job and the first poll (after the probe).
    pub first_delay: Duration,
    /// Wait after the first poll.
    pub interval: Duration,
    /// Factor applied to the interval after each poll (1.0 keeps it fixed).
    pub growth: f64,
    /// The longest interval.
    pub max_interval: Duration,
    /// Relative spread of each wait, from 0.0 (none) to 1.0.
    pub jitter: f64,
    /// How long to wait in all before giving up.
    pub deadline: Duration,
}

impl Default for PollPolicy {
    fn default() -> Self {
        PollPolicy {
            early_probe: None,
            first_delay: Duration::from_secs(85),
            interval: Duration::from_millis(3500),
            growth: 1.03,
            max_interval: Duration::from_secs(15),
            jitter: 0.1,
            deadline: Duration::from_secs(30 * 60),
        }
    }
}

impl PollPolicy {
    /// Polls at once and then every `interval`, without jitter or growth:
    /// the loop of the API's own sample code, with `interval` = 15 s.
    pub fn fixed(interval: Duration) -> Self {
        PollPolicy {
            early_probe: None,
            first_delay: Duration::ZERO,
            interval,
            growth: 1.0,
            max_interval: interval,
            jitter: 0.0,
            deadline: Duration::from_secs(1000),
        }
    }

    /// A schedule fitted to jobs that take `durations`, taking them to
    /// spread normally: quiet until only a few jobs could be done (late
    /// enough to save polls, early enough that those few are noticed about
    /// half a second late on average), then every 3 s or so (a completion
    /// is noticed about 1.5 s late; a tenth of a standard deviation for
    /// wider spreads), growing slowly for a job that runs long; with an early probe for jobs of more than two minutes, so that
    /// one refused at once is not waited on for minutes.
    pub fn for_durations(durations: &JobDurations) -> Self {
        const INTERVAL: f64 = 3.0;
        const EARLY_LAG: f64 = 0.5;
        let p50 = durations.p50.as_secs_f64();
        // p90 is 1.28 standard deviations above the median of a normal spread.
        let sigma = ((durations.p90.as_secs_f64() - p50) / 1.2816).max(p50 * 0.03);
        // The earliest first poll whose jobs finished before it wait EARLY_LAG on average.
        let k = (0..=80).map(|i| f64::from(i) * 0.05).find(|k| sigma * early_lag_factor(*k) <= EARLY_LAG);
        let first = (p50 - k.unwrap_or(4.0) * sigma).max(p50 * 0.2);
        PollPolicy {
            early_probe: (first > 120.0).then(|| Duration::from_secs(10)),
            first_delay: Duration::from_secs_f64(first),
            // Wider spreads get sparser polls: a tenth of a deviation, at least INTERVAL.
            interval: Duration::from_secs_f64((sigma / 10.0).clamp(INTERVAL, 15.0)),
            growth: 1.01,
            max_interval: Duration::from_secs(15),
            jitter: 0.1,
            // Five times the slow tail, and never less than the default's.
            deadline: Duration::from_secs_f64((durations.p90.as_secs_f64() * 5.0).max(30.0 * 60.0)),
        }
    }

    /// Sets a poll this long after creation, before the first delay.
    pub fn early_probe(mut self, probe: Option<Duration>) -> Self {
        self.early_probe = probe;
        self
    }

    /// Sets the wait before the first poll.
    pub fn first_delay(mut self, d: Duration) -> Self {
        self.first_delay = d;
        self
    }

    /// Sets the wait after the first poll.
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    /// Sets the growth factor of the interval (at least 1.0).
    pub fn growth(mut self, factor: f64) -> Self {
        self.growth = factor.max(1.0);
        self
    }

    /// Sets the longest interval.
    pub fn max_interval(mut self, d: Duration) -> Self {
        self.max_interval = d;
        self
    }

    /// Sets the relative spread of waits, clamped to 0.0..=1.0.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self
    }

    /// Sets how long to wait in all.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// Divides every duration by `time_scale`, for a simulator that runs
    /// `time_scale` times faster than real time. A scale that is not a
    /// finite number above 0 leaves the policy as it is.
    pub fn time_scaled(mut self, time_scale: f64) -> Self {
        use crate::retry::scaled;
        self.early_probe = self.early_probe.map(|d| scaled(d, time_scale));
        self.first_delay = scaled(self.first_delay, time_scale);
        self.interval = scaled(self.interval, time_scale);
        self.max_interval = scaled(self.max_interval, time_scale);
        self.deadline = scaled(self.deadline, time_scale);
        self
    }

    /// The wait before poll number `index`, counting from 0, for a job
    /// whose watch began when it was created (`fresh`) or later (a resumed
    /// job, whose first poll is immediate).
    pub fn delay_before(&self, index: u32, fresh: bool) -> Duration {
        // The fields are public: read them through the same bounds the
        // setters apply, so no value set by hand can make this panic.
        let growth = if self.growth.is_finite() { self.growth.max(1.0) } else { 1.0 };
        let jitter = if self.jitter.is_finite() { self.jitter.clamp(0.0, 1.0) } else { 0.0 };
        // A probe (fresh jobs only) is poll 0 and shifts the rest by one.
        let probe = self.early_probe.filter(|p| fresh && *p < self.first_delay);
        let index = match (probe, index) {
            (Some(p), 0) => return p,
            (Some(_), n) => n - 1,
            (None, n) => n,
        };
        let base = match index {
            0 if fresh => self.first_delay.saturating_sub(probe.unwrap_or_default()),
            0 => Duration::ZERO,
            n => {
                let grown = self.interval.as_secs_f64() * growth.powi(n.min(1000) as i32 - 1);
                Duration::try_from_secs_f64(grown.min(self.max_interval.as_secs_f64()))
                    .unwrap_or(self.max_interval)
            }
        };
        if jitter == 0.0 {
            return base;
        }
        // Spread by ±jitter, but never by more than one interval: enough to
        // keep many jobs out of step, and a long first delay, fitted to
        // the quickest jobs, stays where it was put.
        let amplitude = (base.as_secs_f64() * jitter).min(self.interval.as_secs_f64());
        let offset = amplitude * (2.0 * fastrand::f64() - 1.0);
        Duration::try_from_secs_f64((base.as_secs_f64() + offset).max(0.0)).unwrap_or(base)
    }
}

/// How long, in standard deviations, a normally spread job that finishes
/// before a poll `k` deviations below the mean waits for it, on average
/// over all jobs: E[(f − T)⁺] / σ = φ(k) − k·(1 − Φ(k)).
fn early_lag_factor(k: f64) -> f64 {
    let pdf = (-k * k / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let upper_tail = 0.5 * (1.0 - erf(k / std::f64::consts::SQRT_2));
    pdf - k * upper_tail
}

/// The error function, to within 1.5e-7 (Abramowitz and Stegun, 7.1.26).
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x >= 0.0 { y } else { -y }
}

/// How long a model's jobs take from creation to completion, as the median
/// and the 90th percentile: what [`PollPolicy::for_durations`] fits a
/// schedule to. They come from `GET /models/metrics`
/// ([`Client::model_metrics`](crate::Client::model_metrics)), from jobs
/// seen before ([`JobDurations::from_samples`]), or, knowing nothing else,
/// from the model's family ([`JobDurations::typical_of`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobDurations {
    /// Half the jobs take at most this long.
    pub p50: Duration,
    /// Nine in ten take at most this long.
    pub p90: Duration,
}

impl JobDurations {
    /// Percentiles as given; a `p90` below `p50` is raised to it.
    pub fn new(p50: Duration, p90: Duration) -> Self {
        JobDurations { p50, p90: p90.max(p50) }
    }

    /// The percentiles of durations seen, given at least three of them.
    pub fn from_samples(samples: &[Duration]) -> Option<Self> {
        if samples.len() < 3 {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort();
        let at = |q: f64| sorted[((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1];
        Some(JobDurations::new(at(0.5), at(0.9)))
    }

    /// A prior for a family, used until anything better is known: guesses
    /// from the upstream's published durations, not measurements.
    pub fn typical_of(family: crate::catalog::Family) -> Self {
        use crate::catalog::Family;
        let (p50, p90) = match family {
            Family::TextToVideo => (60, 75),
            Family::ImageToVideo => (75, 95),
            Family::VideoToVideo => (120, 150),
            // The Veo 3.1 extend models: about 1 min 50 s, give or take 15 s.
            Family::Extend => (110, 130),
            Family::Avatar => (150, 190),
        };
        JobDurations::new(Duration::from_secs(p50), Duration::from_secs(p90))
    }
}

/// A stream of a generation's status changes, ending after the job
/// finishes (completed or error), fails to be reached, or times out.
///
/// Each item is the job as reported when its status changed. A job that
/// completes ends the stream with `Ok` of the completed job; a job that
/// fails ends it with `Err(`[`Error::GenerationFailed`]`)`, carrying the
/// API's reason, so that `job?` in a loop stops on a failed job as
/// [`Client::create_and_wait`](crate::Client::create_and_wait) does. Every
/// `Ok` item is a job that is still running or completed. Dropping the stream stops polling at once. Passing trouble
/// (429, 5xx, a dropped connection) is retried until the deadline; five
/// unreadable answers in a row end the stream with [`Error::Decode`], whose
/// excerpt shows what came back.
/// [`Watch::finish`] drains it and returns the completed job.
#[must_use = "a Watch does nothing unless polled"]
pub struct Watch {
    inner: BoxStream<'static, Result<Generation>>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

impl Stream for Watch {
    type Item = Result<Generation>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl Watch {
    /// Waits for the job to finish and returns it, or
    /// [`Error::GenerationFailed`] if it ended in `error`.
    pub async fn finish(mut self) -> Result<Generation> {
        let mut last = None;
        while let Some(item) = self.next().await {
            last = Some(item?);
        }
        let generation = last.ok_or_else(|| Error::Decode {
            status: 200,
            reason: "the watch ended without any status".into(),
            excerpt: String::new(),
        })?;
        generation.into_result()
    }
}

/// Unreadable answers in a row after which a wait ends with
/// [`Error::Decode`]: one may be a proxy's hiccup, five are a shape this
/// version cannot read.
const MAX_UNDECODABLE: u32 = 5;

/// The schedule a watch follows: one given, or one to fit to a model
/// before the first poll (which may read the model's metrics).
pub(crate) enum WatchPolicy {
    Set(PollPolicy),
    FitTo(String),
}

struct WatchState {
    client: Client,
    id: String,
    policy: PollPolicy,
    /// The model whose schedule is still to be fitted, before the first poll.
    fit_to: Option<String>,
    /// The job as created, reported first; `None` when resuming by id.
    created: Option<Generation>,
    fresh: bool,
    started: Instant,
    polls: u32,
    failures: u32,
    /// Answers in a row that could not be read.
    undecodable: u32,
    /// The upstream's `Retry-After` from the last failed poll.
    retry_after: Option<Duration>,
    last_status: Option<Status>,
    done: bool,
}

pub(crate) fn watch(client: Client, id: String, created: Option<Generation>, policy: WatchPolicy) -> Watch {
    let span = tracing::info_span!("watch", generation_id = %id);
    let (policy, fit_to) = match policy {
        WatchPolicy::Set(policy) => (policy, None),
        WatchPolicy::FitTo(model) => (client.poll_policy().clone(), Some(model)),
    };
    let state = WatchState {
        client,
        id,
        policy,
        fit_to,
        fresh: created.is_some(),
        created,
        started: Instant::now(),
        polls: 0,
        failures: 0,
        undecodable: 0,
        retry_after: None,
        last_status: None,
        done: false,
    };
    let stream =
        futures_util::stream::unfold(state, move |state| next_change(state).instrument(span.clone()));
    Watch { inner: stream.boxed() }
}

async fn next_change(mut s: WatchState) -> Option<(Result<Generation>, WatchState)> {
    if s.done {
        return None;
    }
    if let Some(created) = s.created.take() {
        s.last_status = Some(created.status.clone());
        s.done = created.status.is_finished();
        return Some((created.into_result(), s));
    }
    if let Some(model) = s.fit_to.take() {
        s.policy = s.client.fitted_poll_policy(&model).await;
    }
    loop {
        let mut wait = s.policy.delay_before(s.polls, s.fresh);
        if s.failures > 0 {
            wait = s.client.retry_policy().backoff(s.failures, s.retry_after);
        } else if s.polls == 0 && s.fresh {
            // The first wait counts from the create, not from when the
            // created job was read or the schedule fitted.
            wait = wait.saturating_sub(s.started.elapsed());
        }
        let deadline = s.started + s.policy.deadline;
        if Instant::now() + wait > deadline {
            tokio::time::sleep_until(deadline).await;
            s.done = true;
            let timed_out = Error::TimedOut {
                id: s.id.clone(),
                last_status: s.last_status.clone().unwrap_or(Status::Queued),
                waited: s.started.elapsed(),
            };
            return Some((Err(timed_out), s));
        }
        tokio::time::sleep(wait).await;
        match s.client.get_once(&s.id).await {
            Ok(generation) => {
                s.polls += 1;
                s.failures = 0;
                s.undecodable = 0;
                s.retry_after = None;
                if s.last_status.as_ref() != Some(&generation.status) {
                    s.last_status = Some(generation.status.clone());
                    s.done = generation.status.is_finished();
                    // A failed job is the stream's last item, as an error.
                    return Some((generation.into_result(), s));
                }
            }
            // An answer that keeps failing to decode is not a passing storm:
            // say so, with its excerpt, rather than wait out the deadline.
            Err(e @ Error::Decode { .. }) if s.undecodable + 1 >= MAX_UNDECODABLE => {
                s.done = true;
                return Some((Err(e), s));
            }
            // A storm of 429s or 5xx does not end the wait: the job is
            // still running upstream, so keep asking until the deadline.
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "poll failed; retrying");
                s.failures += 1;
                s.retry_after = e.retry_after();
                s.undecodable = if matches!(e, Error::Decode { .. }) { s.undecodable + 1 } else { 0 };
            }
            Err(e) => {
                s.done = true;
                return Some((Err(e), s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: Duration) -> f64 {
        d.as_secs_f64()
    }

    #[test]
    fn the_default_waits_out_most_of_a_two_minute_job_then_polls_often() {
        let policy = PollPolicy::default().jitter(0.0);
        assert_eq!(policy.delay_before(0, true), Duration::from_secs(85));
        assert_eq!(policy.delay_before(1, true), Duration::from_millis(3500));
        assert!((secs(policy.delay_before(2, true)) - 3.5 * 1.03).abs() < 1e-9);
        // The interval grows slowly, so a job stuck in a queue is not hammered…
        assert_eq!(policy.delay_before(200, true), Duration::from_secs(15));
        // …and a resumed job, of unknown age, is asked about at once.
        assert_eq!(policy.delay_before(0, false), Duration::ZERO);
    }

    #[test]
    fn no_policy_built_by_hand_can_panic() {
        let wild = PollPolicy { jitter: 5.0, growth: -3.0, ..PollPolicy::default() };
        for n in 0..5 {
            let wait = wild.delay_before(n, true);
            assert!(wait <= Duration::from_secs(170), "{wait:?}");
        }
        let nan = PollPolicy { jitter: f64::NAN, growth: f64::NAN, ..PollPolicy::default() };
        assert_eq!(nan.delay_before(1, true), Duration::from_millis(3500));
        for scale in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(PollPolicy::default().time_scaled(scale), PollPolicy::default(), "{scale}");
            assert_eq!(crate::RetryPolicy::default().time_scaled(scale), crate::RetryPolicy::default());
        }
        assert_eq!(PollPolicy::default().time_scaled(1e-300).deadline, Duration::MAX, "saturates");
    }

    #[test]
    fn jitter_spreads_waits_within_its_bounds() {
        let policy = PollPolicy::default();
        for _ in 0..1000 {
            let wait = secs(policy.delay_before(0, true));
            assert!((76.5..=93.5).contains(&wait), "{wait}");
        }
    }

    #[test]
    fn the_fixed_loop_polls_at_once_then_evenly() {
        let policy = PollPolicy::fixed(Duration::from_secs(15));
        let waits: Vec<_> = (0..4).map(|i| policy.delay_before(i, true)).collect();
        assert_eq!(waits, [0, 15, 15, 15].map(Duration::from_secs));
    }

    #[test]
    fn fitted_schedules_wait_for_the_quick_few_and_probe_long_jobs_early() {
        let short =
            PollPolicy::for_durations(&JobDurations::new(Duration::from_secs(30), Duration::from_secs(35)));
        let short = short.jitter(0.0);
        assert_eq!(short.early_probe, None);
        let first = secs(short.delay_before(0, true));
        assert!((25.0..28.0).contains(&first), "{short:?}");
        assert_eq!(short.delay_before(1, true), Duration::from_secs(3));

        // A wider spread waits further below the median, so its early few are not left waiting.
        let long =
            PollPolicy::for_durations(&JobDurations::new(Duration::from_secs(300), Duration::from_secs(340)));
        let long = long.jitter(0.0);
        assert_eq!(long.delay_before(0, true), Duration::from_secs(10), "the probe");
        let first = secs(long.delay_before(0, true) + long.delay_before(1, true));
        assert!((235.0..255.0).contains(&first), "{long:?}");
        // A tenth of its deviation, (340 − 300) / 1.28 / 10.
        assert!((secs(long.delay_before(2, true)) - 3.121).abs() < 0.001, "{long:?}");
        assert_eq!(long.delay_before(0, false), Duration::ZERO, "a resumed job is asked at once, unprobed");
        assert_eq!(long.deadline, Duration::from_secs(1800));
    }

    #[test]
    fn the_early_lag_factor_matches_the_normal_tables() {
        assert!((erf(1.0) - 0.842_700_79).abs() < 1e-6);
        assert!((early_lag_factor(0.0) - 0.398_942).abs() < 1e-5, "φ(0)");
        assert!((early_lag_factor(1.0) - (0.241_971 - 0.158_655)).abs() < 1e-5);
        assert!(early_lag_factor(3.0) < 0.001);
    }

    #[test]
    fn durations_come_from_samples_or_a_family_prior() {
        let samples: Vec<Duration> = (1..=10).map(Duration::from_secs).collect();
        let d = JobDurations::from_samples(&samples).unwrap();
        assert_eq!((d.p50, d.p90), (Duration::from_secs(5), Duration::from_secs(9)));
        assert_eq!(JobDurations::from_samples(&samples[..2]), None);
        let extend = JobDurations::typical_of(crate::catalog::Family::Extend);
        assert_eq!(extend.p50, Duration::from_secs(110));
    }

    #[test]
    fn scaling_divides_every_duration() {
        let policy = PollPolicy::default().time_scaled(1000.0);
        assert_eq!(policy.first_delay, Duration::from_millis(85));
        assert_eq!(policy.interval, Duration::from_micros(3500));
        assert_eq!(policy.max_interval, Duration::from_millis(15));
        assert_eq!(policy.deadline, Duration::from_millis(1800));
    }
}
