//! The circuit breaker for a refused upstream key.
//!
//! When the upstream answers 401 to this server's key, nothing will work
//! until an operator replaces it: every create would fail and every poll
//! would be wasted. So the breaker opens for a window: creates are answered
//! 503 at once without reaching the upstream, polls pause, `/readyz` fails,
//! and the error is logged once per window rather than once per job. When
//! the window ends the next call goes through as a probe; a success closes
//! the breaker, another 401 opens it again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How long the breaker stays open after a 401, by default.
pub(crate) const DEFAULT_BREAKER_WINDOW: Duration = Duration::from_secs(60);

/// Whether the upstream is refusing this server's key.
#[derive(Debug)]
pub struct UpstreamBreaker {
    window: Duration,
    state: Mutex<Tripped>,
}

#[derive(Debug, Default)]
struct Tripped {
    /// Open until then.
    until: Option<Instant>,
    /// When the refusal was last logged.
    logged: Option<Instant>,
}

impl UpstreamBreaker {
    /// A closed breaker that opens for `window` on each refusal.
    pub fn new(window: Duration) -> Self {
        UpstreamBreaker { window, state: Mutex::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Tripped> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The upstream refused the key: open (again) for a window.
    pub fn trip(&self) {
        let now = Instant::now();
        let mut state = self.state();
        state.until = Some(now + self.window);
        if state.logged.is_none_or(|at| now.duration_since(at) >= self.window) {
            state.logged = Some(now);
            tracing::error!(
                retry_in_secs = self.window.as_secs(),
                "the upstream refuses this server's API key (401): creates are refused and polls paused \
                 until it accepts it again; replace the key (AIMLAPI_API_KEY or --upstream-key-file) and restart"
            );
        }
    }

    /// A call with the key succeeded: close.
    pub fn succeeded(&self) {
        let mut state = self.state();
        if state.logged.take().is_some() {
            tracing::info!("the upstream accepts this server's API key again");
        }
        state.until = None;
    }

    /// How long until a call may be tried again; `None` when closed.
    pub fn open_for(&self) -> Option<Duration> {
        let until = self.state().until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// The window a trip opens it for.
    pub fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_for_a_window_then_lets_a_probe_through() {
        let breaker = UpstreamBreaker::new(Duration::from_secs(60));
        assert_eq!(breaker.open_for(), None);
        breaker.trip();
        assert_eq!(breaker.open_for(), Some(Duration::from_secs(60)));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(breaker.open_for(), Some(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(breaker.open_for(), None, "a probe may go");
        breaker.trip();
        assert!(breaker.open_for().is_some());
        breaker.succeeded();
        assert_eq!(breaker.open_for(), None);
    }
}
