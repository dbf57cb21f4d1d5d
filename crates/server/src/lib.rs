//! `aimlvid-server`: a self-hosted team proxy for the AI/ML API's video
//! generation.
//!
//! Members point any client at it instead of the upstream and get the same
//! API — `POST` and `GET /v2/video/generations`, same bodies, same status
//! codes, same error shape — with their own keys, limits and history, and
//! a job's status changes as Server-Sent Events. The
//! upstream key stays on the server, and every upstream call goes through
//! the [`aimlvid`] client.
//!
//! - [`store`]: what survives a restart (keys, jobs, usage), behind the
//!   [`Store`](store::Store) traits; [`SqliteStore`](store::SqliteStore) by default.
//! - [`keys`]: team keys, hashed, authenticated from memory, with their limits.
//! - [`view`]: the in-memory jobs that answer status reads.
//! - [`engine`]: the one writer (batched, never giving up) and the one
//!   scheduler that polls every unfinished job on a learned schedule.
//! - [`state`]: start-up, resuming jobs, key refresh.
//! - [`reconcile`]: this server's charges set against the upstream's ledger.
//! - [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`webhooks`]: signed announcements of finished jobs, retried, recorded.
//! - [`page`]: the team page at `/ui`, for members and the admin.
//! - [`app`] builds the router; [`serve`] runs it until a shutdown future
//!   resolves, and [`tls::serve_tls`] does the same over TLS.

pub mod admin;
mod api;
pub mod budget;
mod calendar;
pub mod config;
pub mod connection;
pub mod engine;
pub mod error;
mod events;
pub mod front;
pub mod jobs;
pub mod keys;
pub mod metrics;
mod observe;
mod openai;
pub mod page;
pub mod reconcile;
pub mod reservations;
pub mod state;
pub mod store;
pub mod tls;
pub mod view;
pub mod webhooks;

use std::future::Future;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header::{CONTENT_TYPE, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use api::CREATE_STATUS;
pub use error::ApiError;
pub use jobs::IDEMPOTENCY_KEY;
pub use observe::REQUEST_ID;
pub use state::{AppState, DEFAULT_BODY_LIMIT, StartError, StateConfig};

/// The server's routes and middleware.
///
/// Each request gets a debug-level span and access line: off by default
/// (`RUST_LOG=aimlvid_server=debug,tower_http=debug` turns them on), since
/// a line per request would cost more than the request; requests are
/// counted in `/metrics` either way.
pub fn app(state: AppState) -> Router {
    // Built only when debug lines can be written at all, so that by default
    // a request does not pay for a span and a timer nobody reads.
    let debug =
        tracing::enabled!(target: "tower_http::trace", Level::DEBUG) || tracing::enabled!(Level::DEBUG);
    let trace = debug.then(|| {
        let trace = TraceLayer::new_for_http()
            .make_span_with(|request: &axum::http::Request<_>| {
                let id = request.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                tracing::debug_span!("request", method = %request.method(), path = request.uri().path(), request_id = id)
            })
            .on_response(DefaultOnResponse::new().level(Level::DEBUG));
        // The same response type with or without the layer.
        tower::ServiceBuilder::new()
            .map_response(|response: axum::http::Response<_>| response.map(axum::body::Body::new))
            .layer(trace)
    });
    Router::new()
        .route("/v2/video/generations", get(api::get).post(api::create))
        .route("/v2/video/generations/{id}/events", get(events::events))
        .merge(openai::routes())
        .merge(admin::routes(&state))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(if state.team_page_sessions().is_some() { page::routes(&state) } else { Router::new() })
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.body_limit()))
        .layer(tower::util::option_layer(trace))
        .layer(observe::ObserveLayer::new(state.metrics_arc()))
        .with_state(state)
}

/// `/metrics`, in the Prometheus text format. It names keys and their
/// spending, so with an admin token configured it asks for that token.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if !state.may_read_metrics(admin::bearer(&headers)) {
        return Err(ApiError::unauthorized());
    }
    let mut response = state.render_metrics().into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(response)
}

/// Ready when storage answers and takes writes, and the upstream takes this server's key.
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.breaker().open_for().is_some() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The upstream refuses this server's API key",
        ));
    }
    // Writes failing (a full or read-only disk, a lost database) while
    // reads still work: not ready, with the reason.
    if let Some(trouble) = state.writer().health().trouble() {
        tracing::warn!(trouble, "not ready");
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, trouble));
    }
    // A database that does not answer at all must not hold the probe for
    // the pool's whole wait.
    let ping = tokio::time::timeout(std::time::Duration::from_secs(2), state.store().ping()).await;
    match ping {
        Ok(Ok(())) => Ok("ready"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "storage is not reachable");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Storage is not reachable"))
        }
        Err(_) => {
            tracing::warn!("storage did not answer within 2 s");
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Storage is not reachable"))
        }
    }
}

/// The upstream's (NestJS's) answer to an unknown route.
async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("Cannot {method} {}", uri.path()))
}

/// Serves `state` on `listener` until `shutdown` resolves, then lets
/// in-flight requests finish and stops the background tasks.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    front::serve(listener, state, None, shutdown).await
}
