//! `GET /v2/video/generations/{id}/events`: a job's status changes as
//! Server-Sent Events, fed by the job's one poller through the in-memory
//! view, never by reading storage in a loop.

use std::convert::Infallible;
use std::sync::Arc;

use aimlvid::Status;
use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse as _, Response};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{Authorization, authenticate};
use crate::error::ApiError;
use crate::keys::KeyEntry;
use crate::metrics::Metrics;
use crate::state::AppState;
use crate::view::view_of;
use crate::view::{Feed, JobView};

/// The job's current state first, then one event per status change; the
/// stream ends after a finished status (or when the server shuts down).
/// Each event's data is the job's JSON, exactly as a status read answers.
pub(crate) async fn events(
    State(state): State<AppState>,
    authorization: Authorization,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let key = authenticate(&state, &authorization)?;
    let changes = job_changes(&state, key.key().clone(), &id).await?;
    let stream = futures_util::stream::StreamExt::map(changes, |view| {
        Ok::<_, Infallible>(Event::default().data(std::str::from_utf8(&view.body).unwrap_or_default()))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// A job's states for `key`: the current one, then each status change,
/// ending after a finished status, when the key changes or the server
/// stops. Counted against the key's open streams while it lasts. Another
/// key's job is [`ApiError::not_found`], exactly like no job.
pub(crate) async fn job_changes(
    state: &AppState,
    key: Arc<KeyEntry>,
    id: &str,
) -> Result<impl futures_util::Stream<Item = Arc<JobView>> + Send + 'static, ApiError> {
    let key_id = key.id();
    // Each open stream holds a connection; one key cannot hold them all.
    if !key.stream_opened(MAX_STREAMS_PER_KEY) {
        return Err(ApiError::too_many(
            format!("This API key already has {MAX_STREAMS_PER_KEY} event streams open; close one first"),
            std::time::Duration::from_secs(5),
        ));
    }
    let slot = StreamSlot(key.clone());
    let epoch = key.epoch();
    let feed = match state.views().subscribe(id) {
        Some(feed) => feed,
        None => {
            state.metrics().storage_read();
            let stored = state.store().job_by_generation(id).await.map_err(|e| ApiError::internal(&e))?;
            match stored.as_ref().and_then(view_of) {
                // A finished job is sent once and done: no need to hold it in memory.
                Some((_, view)) if view.key_id == key_id && view.is_finished() => {
                    Feed::Finished(Arc::new(view))
                }
                Some((id, view)) if view.key_id == key_id => {
                    state.views().put(&id, view);
                    state.views().subscribe(&id).ok_or_else(ApiError::not_found)?
                }
                _ => return Err(ApiError::not_found()),
            }
        }
    };
    if feed.key_id() != key_id {
        return Err(ApiError::not_found());
    }
    let source = match feed {
        Feed::Finished(view) => Source::Once(Some(view)),
        Feed::Live(changes) => Source::Live(changes),
    };
    let listener = Listener {
        source,
        last: None,
        done: false,
        draining: state.draining(),
        epoch,
        _open: OpenStream::new(state.metrics_arc()),
        _slot: slot,
    };
    Ok(futures_util::stream::unfold(listener, |mut listener| async move {
        let view = listener.next().await?;
        Some((view, listener))
    }))
}

enum Source {
    Once(Option<Arc<JobView>>),
    Live(watch::Receiver<Arc<JobView>>),
}

/// One stream's position.
struct Listener {
    source: Source,
    /// The status last sent.
    last: Option<Status>,
    done: bool,
    /// Cancelled when the server starts shutting down, so that open
    /// streams end and graceful shutdown is not held up by them.
    draining: CancellationToken,
    /// Changes when the key is revoked, disabled or rotated: the stream ends.
    epoch: watch::Receiver<u64>,
    _open: OpenStream,
    _slot: StreamSlot,
}

/// Event streams open at once per key.
pub(crate) const MAX_STREAMS_PER_KEY: u32 = 100;

/// A key's count of open streams, given back when the stream is dropped.
struct StreamSlot(Arc<KeyEntry>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.stream_closed();
    }
}

impl Listener {
    /// The next state to send, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Arc<JobView>> {
        if self.done {
            return None;
        }
        let view = match &mut self.source {
            Source::Once(view) => view.take()?,
            Source::Live(changes) if self.last.is_none() => changes.borrow_and_update().clone(),
            Source::Live(changes) => loop {
                tokio::select! {
                    () = self.draining.cancelled() => return None,
                    _ = self.epoch.changed() => return None,
                    changed = changes.changed() => changed.ok()?,
                }
                let view = changes.borrow_and_update().clone();
                // Only status changes make events; a rewrite of the same status is not one.
                if self.last.as_ref() != Some(&view.status) {
                    break view;
                }
            },
        };
        self.last = Some(view.status.clone());
        self.done = view.is_finished() || matches!(self.source, Source::Once(_));
        Some(view)
    }
}

/// Counts an open stream until it is dropped.
struct OpenStream(Arc<Metrics>);

impl OpenStream {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.event_stream(1);
        OpenStream(metrics)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.event_stream(-1);
    }
}
