//! The one middleware every request passes through after routing: it
//! gives the request an id (or keeps the caller's), writes an error
//! answer in the upstream's shape, echoes the id, and counts the request
//! under its route, status and latency. One hand-written layer instead of
//! four stacked ones, because on a status read the stack costs more than
//! the read.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_TYPE, HeaderName};
use axum::response::Response;

use crate::error::ApiError;
use crate::metrics::{Metrics, RouteId};

/// The request id header, set on every request that lacks one and echoed
/// in every answer and error body.
pub const REQUEST_ID: &str = "x-request-id";

static REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(REQUEST_ID);

/// Makes [`Observed`] services.
#[derive(Debug, Clone)]
pub(crate) struct ObserveLayer {
    metrics: Arc<Metrics>,
    ids: Arc<RequestIds>,
}

impl ObserveLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        ObserveLayer { metrics, ids: Arc::new(RequestIds::new()) }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed { inner, metrics: self.metrics.clone(), ids: self.ids.clone() }
    }
}

/// See the module's documentation.
#[derive(Debug, Clone)]
pub(crate) struct Observed<S> {
    inner: S,
    metrics: Arc<Metrics>,
    ids: Arc<RequestIds>,
}

impl<S> tower::Service<Request> for Observed<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let route =
            RouteId::of(request.method(), request.extensions().get::<MatchedPath>().map(MatchedPath::as_str));
        // A caller's id is kept only if it is a plain token: it is echoed
        // and logged, so it must not carry a log line or markup of its own.
        let request_id =
            match request.headers().get(&REQUEST_ID_HEADER).filter(|id| is_plain_id(id.as_bytes())) {
                Some(id) => id.clone(),
                None => {
                    let id = self.ids.next();
                    request.headers_mut().insert(REQUEST_ID_HEADER.clone(), id.clone());
                    id
                }
            };
        // The URI shares its buffer: cloning it copies no bytes.
        let uri = request.uri().clone();
        let future = self.inner.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let Ok(mut response) = future.await;
            if let Some(error) = response.extensions_mut().remove::<ApiError>() {
                let body = error.body(uri.path(), request_id.to_str().unwrap_or(""), SystemTime::now());
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                *response.body_mut() = axum::body::Body::from(body);
            }
            response.headers_mut().insert(REQUEST_ID_HEADER.clone(), request_id);
            metrics.request(route, response.status().as_u16(), started.elapsed());
            Ok(response)
        })
    }
}

/// 1–128 characters of `A-Za-z0-9._:-`, as the upstream allows for its
/// client request ids.
fn is_plain_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len()) && id.iter().all(|b| b.is_ascii_alphanumeric() || b".-_:".contains(b))
}

/// Request ids: UUID-shaped, from a random per-process prefix and a
/// counter, so that making one costs an atomic add rather than a system
/// call for randomness.
#[derive(Debug)]
struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        RequestIds { prefix: fastrand::u64(..), counter: AtomicU64::new(0) }
    }

    fn next(&self) -> HeaderValue {
        let id = uuid::Uuid::from_u64_pair(self.prefix, self.counter.fetch_add(1, Ordering::Relaxed));
        let mut buffer = uuid::Uuid::encode_buffer();
        HeaderValue::from_str(id.hyphenated().encode_lower(&mut buffer))
            .expect("a UUID is a valid header value")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_request_ids_are_kept() {
        assert!(is_plain_id(b"req-1.2:3_x"));
        assert!(!is_plain_id(b""));
        assert!(!is_plain_id(&[b'a'; 129]));
        assert!(!is_plain_id(b"a b"));
        assert!(!is_plain_id(b"<script>"));
    }

    #[test]
    fn request_ids_are_distinct_uuids() {
        let ids = RequestIds::new();
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(a.to_str().unwrap()).is_ok());
    }
}
