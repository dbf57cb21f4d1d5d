//! A hook that sees every HTTP exchange the client makes, retries
//! included, so that a program can count and time its upstream calls
//! (the team proxy exports them as metrics) without wrapping the client.

use std::fmt;
use std::time::Duration;

/// What an exchange was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallKind {
    /// `POST /v2/video/generations`.
    Create,
    /// `GET /v2/video/generations?generation_id=ID`.
    Poll,
    /// A request for a result file.
    Download,
    /// `GET /v2/logs`, looking a lost create up.
    Logs,
    /// `GET /v1/models`, the model catalogue.
    Models,
    /// `GET /models/metrics`, the models' recent durations.
    Metrics,
    /// `GET /v2/billing/transactions`, the account's ledger.
    Billing,
}

impl CallKind {
    /// A short lowercase name: `create`, `poll`, `download`, `logs`,
    /// `models`, `metrics` or `billing`.
    pub fn as_str(self) -> &'static str {
        match self {
            CallKind::Create => "create",
            CallKind::Poll => "poll",
            CallKind::Download => "download",
            CallKind::Logs => "logs",
            CallKind::Models => "models",
            CallKind::Metrics => "metrics",
            CallKind::Billing => "billing",
        }
    }
}

/// One HTTP exchange: one request sent (or attempted) and its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Exchange {
    /// What it was for.
    pub kind: CallKind,
    /// The answer's HTTP status; `None` when no whole answer arrived (the
    /// connection failed or dropped, or the call timed out).
    pub status: Option<u16>,
    /// From sending to the end of the answer (for downloads, its headers).
    pub elapsed: Duration,
}

/// Sees every exchange, on the task that made it. It must be quick and
/// must not block: it runs inside every call.
pub trait Observer: Send + Sync + fmt::Debug {
    /// Called once per exchange.
    fn exchange(&self, exchange: &Exchange);
}
