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
/// The first poll comes `first_delay` after the job is created; later polls
/// are `interval` apart, the interval multiplied by `growth` after each poll
/// up to `max_interval`. Every wait is spread by ±`jitter` so that many jobs
/// do not poll in step. Waiting ends with [`Error::TimedOut`] once
/// `deadline` has passed; the job itself keeps running upstream.
///
/// The default is tuned for the Veo 3.1 extend models, whose jobs take about
/// two minutes: it stays quiet for most of that time, then polls every few
/// seconds, so it makes fewer calls than a fixed 15 s loop and notices
/// completion several times sooner. `docs/benchmarks.md` has the figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PollPolicy {
    /// Wait between creating the job and the first poll.
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
            first_delay: Duration::ZERO,
            interval,
            growth: 1.0,
            max_interval: interval,
            jitter: 0.0,
            deadline: Duration::from_secs(1000),
        }
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
        let base = match index {
            0 if fresh => self.first_delay,
            0 => Duration::ZERO,
            n => {
                let grown = self.interval.as_secs_f64() * growth.powi(n.min(1000) as i32 - 1);
                Duration::try_from_secs_f64(grown.min(self.max_interval.as_secs_f64()))
                    .unwrap_or(self.max_interval)
            }
        };
        if jitter == 0.0 { base } else { base.mul_f64(1.0 + jitter * (2.0 * fastrand::f64() - 1.0)) }
    }
}

/// A stream of a generation's status changes, ending after the job
/// finishes (completed or error), fails to be reached, or times out.
///
/// Each item is the job as reported when its status changed, the last one
/// finished. Dropping the stream stops polling at once. Passing trouble
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

struct WatchState {
    client: Client,
    id: String,
    policy: PollPolicy,
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

pub(crate) fn watch(client: Client, id: String, created: Option<Generation>) -> Watch {
    let policy = client.poll_policy().clone();
    let span = tracing::info_span!("watch", generation_id = %id);
    let state = WatchState {
        client,
        id,
        policy,
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
        return Some((Ok(created), s));
    }
    loop {
        let mut wait = s.policy.delay_before(s.polls, s.fresh);
        if s.failures > 0 {
            wait = s.client.retry_policy().backoff(s.failures, s.retry_after);
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
                    return Some((Ok(generation), s));
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
    fn scaling_divides_every_duration() {
        let policy = PollPolicy::default().time_scaled(1000.0);
        assert_eq!(policy.first_delay, Duration::from_millis(85));
        assert_eq!(policy.interval, Duration::from_micros(3500));
        assert_eq!(policy.max_interval, Duration::from_millis(15));
        assert_eq!(policy.deadline, Duration::from_millis(1800));
    }
}
