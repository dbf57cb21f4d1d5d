//! When and how long to wait before calling again.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// How calls that are safe to repeat (polls, downloads) are retried after
/// network errors, timeouts, 429 and 5xx answers.
///
/// Waits grow exponentially from `initial_backoff` to `max_backoff`, each
/// drawn at random from its upper half so that many clients do not retry in
/// step, and are never shorter than the upstream's `Retry-After`.
///
/// A connection that cannot be made at all (refused: nothing listens there)
/// is tried again only within `initial_backoff` (one retry by default, at
/// most half a second later): a server that is down is said so at once
/// rather than after the whole back-off.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 means no retry.
    pub max_attempts: u32,
    /// The wait after the first failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts, unless `Retry-After` asks for more.
    pub max_backoff: Duration,
    /// The longest `Retry-After` waited out. When the API asks for a longer
    /// wait, the call fails at once with its error (whose
    /// [`retry_after`](crate::Error::retry_after) says how long), for a
    /// caller that must not hold its own caller that long, such as a proxy
    /// answering a member. Real seconds: [`RetryPolicy::time_scaled`]
    /// leaves it alone.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Never retry.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Default::default() }
    }

    /// The wait before the attempt after `failures` consecutive failures
    /// (1 for the first), at least `retry_after`.
    pub fn backoff(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let ceiling = self.initial_backoff.saturating_mul(1 << exponent).min(self.max_backoff);
        let jittered = ceiling.mul_f64(0.5 + fastrand::f64() * 0.5);
        jittered.max(retry_after.unwrap_or_default())
    }

    /// Whether, after waiting `waited` in all on connections that could not
    /// be made, a further `wait` is still worth it.
    pub(crate) fn retry_unreachable(&self, waited: Duration, wait: Duration) -> bool {
        waited + wait <= self.initial_backoff
    }

    /// Whether a wait of `retry_after` asked by the API is longer than this
    /// policy waits out.
    pub(crate) fn too_long(&self, retry_after: Option<Duration>) -> bool {
        retry_after.is_some_and(|wait| wait > self.max_retry_after)
    }

    /// Divides every duration but `max_retry_after` by `time_scale`, for a simulator that runs
    /// `time_scale` times faster than real time. A scale that is not a
    /// finite number above 0 leaves the policy as it is.
    pub fn time_scaled(mut self, time_scale: f64) -> Self {
        self.initial_backoff = scaled(self.initial_backoff, time_scale);
        self.max_backoff = scaled(self.max_backoff, time_scale);
        self
    }
}

/// `d` divided by `time_scale`, or `d` itself for a scale that is not a
/// finite number above 0 (which would divide by zero or go negative).
pub(crate) fn scaled(d: Duration, time_scale: f64) -> Duration {
    if time_scale.is_finite() && time_scale > 0.0 {
        Duration::try_from_secs_f64(d.as_secs_f64() / time_scale).unwrap_or(Duration::MAX)
    } else {
        d
    }
}

/// Reads `Retry-After` as seconds or as an HTTP date. The wait is capped at
/// an hour so that a broken header cannot park a client for days.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => Duration::from_secs_f64(secs),
        Ok(_) => return None,
        Err(_) => {
            httpdate::parse_http_date(value).ok()?.duration_since(SystemTime::now()).unwrap_or_default()
        }
    };
    Some(wait.min(Duration::from_secs(3600)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers("0.5")), Some(Duration::from_millis(500)));
        assert_eq!(retry_after(&headers("99999999")), Some(Duration::from_secs(3600)));
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&headers("-1")), None);
        let in_a_minute = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(61));
        let wait = retry_after(&headers(&in_a_minute)).unwrap();
        assert!(wait > Duration::from_secs(55) && wait <= Duration::from_secs(61), "{wait:?}");
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_honours_retry_after() {
        let policy = RetryPolicy::default();
        for failures in 1..=12 {
            let ceiling = (Duration::from_millis(500) * (1 << (failures - 1))).min(Duration::from_secs(30));
            for _ in 0..50 {
                let wait = policy.backoff(failures, None);
                assert!(wait >= ceiling / 2 && wait <= ceiling, "{failures}: {wait:?}");
            }
        }
        assert_eq!(policy.backoff(1, Some(Duration::from_secs(7))), Duration::from_secs(7));
    }
}
