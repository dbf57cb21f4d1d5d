//! The jobs service: one way to admit a key's request, create a job and
//! follow it, under every front (the API, the team page, the OpenAI-shaped
//! API). A front reads the request in its own shape, calls [`Jobs`], and
//! renders the domain result (`Accepted` or [`Refusal`]) in its own shape;
//! it cannot skip a check, because the checks are here and not in it.
//!
//! `Jobs` is a cheap-to-clone handle on what a job's life needs: the
//! writer, the in-memory views, the scheduler, the cost estimates, the
//! keys, the breaker and the upstream client. It sits above the engine
//! parts it drives and below the fronts; it never sees HTTP state.

mod create;

use std::sync::Arc;
use std::time::Duration;

use aimlvid::Generation;
use axum::http::StatusCode;
use tokio_util::task::TaskTracker;

use crate::budget::{CatalogueWatch, CostEstimates};
use crate::engine::breaker::UpstreamBreaker;
use crate::engine::scheduler::{FollowJob, Scheduler};
use crate::engine::settle::Settle;
use crate::engine::writer::Writer;
use crate::keys::{KeyEntry, KeyTable};
use crate::metrics::Metrics;
use crate::reservations::Reservations;
use crate::store::{KeyId, Store};
use crate::view::{JobRequests, JobViews};

pub use create::IDEMPOTENCY_KEY;
pub(crate) use create::{NewCreate, idempotency_key};

/// What kind of refusal a [`Refusal`] is, so that a front whose shape
/// tells them apart (OpenAI's `insufficient_quota` from a permission
/// error, both 403 upstream) need not read the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalKind {
    /// The request itself is wrong (a 400, 404, 409, 422…).
    Request,
    /// No key, or one not known.
    Unauthenticated,
    /// The key may not do this: disabled, or not allowed the model.
    Permission,
    /// The key's credit budget does not cover the job.
    Budget,
    /// Too many requests, or too many unfinished jobs, for the key.
    Rate,
    /// The server or the upstream cannot take it now, or failed.
    Unavailable,
}

impl RefusalKind {
    /// The kind a status stands for, where nothing more is known.
    fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 => RefusalKind::Unauthenticated,
            402 => RefusalKind::Budget,
            403 => RefusalKind::Permission,
            429 => RefusalKind::Rate,
            s if s >= 500 => RefusalKind::Unavailable,
            _ => RefusalKind::Request,
        }
    }
}

/// Why a request was refused: the status and message the upstream's API
/// would answer (a front renders them in its own shape).
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The HTTP status, as the upstream would answer it.
    pub status: StatusCode,
    /// What kind of refusal it is, set where the refusal is made.
    pub kind: RefusalKind,
    /// What was wrong and what to do, in the member's words; never a
    /// secret or an internal detail.
    pub message: String,
    /// When to try again, in whole seconds, for a 429 or a 503.
    pub retry_after: Option<u64>,
    /// The upstream's validation `errors` list, for a 400 that has one.
    pub issues: Option<serde_json::Value>,
}

impl Refusal {
    /// A refusal with this status and message, of the kind the status
    /// stands for ([`Refusal::of_kind`] sets another).
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let kind = RefusalKind::of_status(status);
        Refusal { status, kind, message: message.into(), retry_after: None, issues: None }
    }

    /// Sets the refusal's kind.
    pub fn of_kind(mut self, kind: RefusalKind) -> Self {
        self.kind = kind;
        self
    }

    /// 429 with `Retry-After` in whole seconds (at least 1).
    pub fn too_many(message: impl Into<String>, retry_after: Duration) -> Self {
        let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
        Refusal { retry_after: Some(secs), ..Refusal::new(StatusCode::TOO_MANY_REQUESTS, message) }
    }

    /// 500 for a fault of ours; the cause goes to the log, not the member.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Refusal::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    /// Adds the upstream's validation `errors` list.
    pub fn with_errors(mut self, issues: serde_json::Value) -> Self {
        self.issues = Some(issues);
        self
    }

    /// Sets `Retry-After`, in seconds.
    pub fn with_retry_after(mut self, secs: Option<u64>) -> Self {
        self.retry_after = secs;
        self
    }
}

/// A key whose request was admitted: enabled, and within its request
/// rate. Only [`Jobs::admit`] makes one, so no front can create with a key
/// it has not admitted.
#[derive(Debug, Clone)]
pub(crate) struct Admitted(Arc<KeyEntry>);

impl Admitted {
    /// The key's entry.
    pub(crate) fn key(&self) -> &Arc<KeyEntry> {
        &self.0
    }
}

/// The parts a [`Jobs`] is made of; built once at start.
#[derive(Debug)]
pub(crate) struct JobsParts {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) upstream: aimlvid::Client,
    pub(crate) keys: Arc<KeyTable>,
    pub(crate) costs: Arc<CostEstimates>,
    pub(crate) reservations: Reservations,
    pub(crate) settle: Settle,
    pub(crate) scheduler: Scheduler,
    pub(crate) catalogue: Arc<CatalogueWatch>,
    pub(crate) breaker: Arc<UpstreamBreaker>,
    pub(crate) metrics: Arc<Metrics>,
    /// What recent jobs were asked for, filled by each create.
    pub(crate) requests: Arc<JobRequests>,
    pub(crate) max_creates_in_flight: usize,
    pub(crate) create_record_timeout: Duration,
}

/// The jobs service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    parts: JobsParts,
    upstream_creates: tokio::sync::Semaphore,
    /// Creates in flight, each in a task of its own so that a member's
    /// disconnect cannot cut one short; shutdown waits for them.
    creates: TaskTracker,
}

impl Jobs {
    pub(crate) fn new(parts: JobsParts) -> Jobs {
        let upstream_creates = tokio::sync::Semaphore::new(parts.max_creates_in_flight.max(1));
        Jobs { inner: Arc::new(Inner { parts, upstream_creates, creates: TaskTracker::new() }) }
    }

    /// Admits a request of `key`: refused if the key is disabled or past its
    /// request rate (which this takes one request from).
    pub(crate) fn admit(&self, key: Arc<KeyEntry>) -> Result<Admitted, Refusal> {
        let record = key.record();
        if !record.enabled {
            return Err(Refusal::new(StatusCode::FORBIDDEN, "This API key is disabled")
                .of_kind(RefusalKind::Permission));
        }
        key.take_request(&record, tokio::time::Instant::now()).map_err(create::refused)?;
        Ok(Admitted(key))
    }

    /// Follows a job upstream until it finishes: the one scheduler polls
    /// it, however many members read it.
    pub(crate) fn follow(&self, job: FollowJob) {
        self.inner.parts.scheduler.follow(job);
    }

    /// The schedule the upstream is polled by for a new job of `model`:
    /// when the proxy may next know more of it.
    pub(crate) fn poll_plan(&self, model: &str) -> crate::engine::timing::Plan {
        self.inner.parts.scheduler.plan(model)
    }

    /// Records a job's new state (see [`Settle::record`]).
    pub async fn record(&self, key_id: KeyId, generation: &Generation) -> bool {
        self.inner.parts.settle.record(key_id, generation).await
    }

    /// The storage backend.
    pub fn store(&self) -> &dyn Store {
        self.inner.parts.store.as_ref()
    }

    /// The upstream client.
    pub fn upstream(&self) -> &aimlvid::Client {
        &self.inner.parts.upstream
    }

    /// The keys in memory.
    pub fn keys(&self) -> &KeyTable {
        &self.inner.parts.keys
    }

    /// The jobs in memory.
    pub fn views(&self) -> &JobViews {
        &self.inner.parts.settle.views
    }

    /// What recent jobs were asked for (see [`JobRequests`]).
    pub fn requests(&self) -> &JobRequests {
        &self.inner.parts.requests
    }

    /// What creates are expected to cost, and the reservations of jobs in flight.
    pub fn costs(&self) -> &CostEstimates {
        &self.inner.parts.costs
    }

    /// Every create's place and credits against its key.
    pub(crate) fn reservations(&self) -> &Reservations {
        &self.inner.parts.reservations
    }

    /// What the upstream's catalogue last said of this build's models.
    pub fn catalogue(&self) -> &CatalogueWatch {
        &self.inner.parts.catalogue
    }

    /// Hides a video from its member (OpenAI's `DELETE /v1/videos/{id}`),
    /// through the writer: the job is kept, followed and charged as before.
    pub(crate) async fn hide(&self, generation_id: &str) -> Result<(), Refusal> {
        let write = crate::store::JobWrite::Hide { generation_id: generation_id.to_owned() };
        match self.writer().write(write).await {
            Ok(_) => {
                self.requests().hide(generation_id);
                Ok(())
            }
            Err(crate::engine::writer::WriteError::Unavailable(cause)) => {
                tracing::error!(cause, "a deletion could not be recorded");
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "The server cannot record this right now (its storage is failing); try again shortly.",
                )
                .with_retry_after(Some(5)))
            }
            Err(e) => Err(Refusal::internal(&e)),
        }
    }

    /// Whether the upstream is refusing this server's key.
    pub fn breaker(&self) -> &UpstreamBreaker {
        &self.inner.parts.breaker
    }

    /// The one writer of job changes.
    pub fn writer(&self) -> &Writer {
        &self.inner.parts.settle.writer
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.parts.metrics
    }

    /// How long a create waits for storage to record it.
    fn create_record_timeout(&self) -> Duration {
        self.inner.parts.create_record_timeout
    }

    /// A turn to send a create upstream, all keys together, first come
    /// first served.
    async fn upstream_create_turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.inner.upstream_creates.acquire().await.expect("the semaphore is never closed")
    }

    /// Runs a create in a task of its own, which the request only waits
    /// on: dropping the request (a member who disconnects) does not stop it.
    fn spawn_create<F>(&self, create: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.creates.spawn(create)
    }

    /// Stops taking creates and waits for those in flight to be recorded.
    pub(crate) async fn finish_creates(&self) {
        self.inner.creates.close();
        self.inner.creates.wait().await;
    }
}
