//! The HTTP surface: routes, the per-request middleware (ids, records,
//! faults, error bodies) and the handlers.

use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{DefaultBodyLimit, Extension, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::files::{RangeRequest, ResultFile, parse_range};
use crate::service::{Receipt, valid_client_request_id};
use crate::state::ResultState;
use crate::validate::validate_listed;
use crate::{Fault, Route, Simulator};

/// Lets a handler close its own TCP connection ([`Fault::DropConnection`]);
/// inserted into each request's extensions by the server.
#[derive(Clone, Debug)]
pub(crate) struct ConnCtl(pub(crate) CancellationToken);

/// An error answer. Handlers return it as a response extension; the
/// middleware renders the upstream's error body, which needs the request id.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
    errors: Option<Vec<Value>>,
    retry_after: Option<u64>,
    content_range_len: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: message.into(),
            errors: None,
            retry_after: None,
            content_range_len: None,
        }
    }

    /// A refusal with zod's `errors` array beside the message.
    pub(crate) fn with_issues(
        status: u16,
        message: impl Into<String>,
        issues: impl IntoIterator<Item = Value>,
    ) -> Self {
        Self { errors: Some(issues.into_iter().collect()), ..Self::new(status, message) }
    }

    pub(crate) fn too_many(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self { retry_after: Some(retry_after_secs), ..Self::new(429, message) }
    }

    /// The answer to an injected [`Fault::Status`].
    fn injected(status: u16) -> Self {
        let message = match status {
            400 => "Bad request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not found",
            429 => "Too many requests, please retry later",
            500 => "Internal server error: upstream trouble, please retry later",
            502 => "Bad gateway: upstream trouble, please retry later",
            503 => "Service unavailable: upstream trouble, please retry later",
            504 => "Generation timeout",
            _ => StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error"),
        };
        let error = Self::new(status, message);
        if status == 429 { Self { retry_after: Some(1), ..error } } else { error }
    }

    /// Renders the upstream's error body.
    fn render(&self, path: &str, request_id: &str) -> Response {
        let mut body = json!({
            "message": self.message,
            "path": path,
            "requestId": request_id,
            "statusCode": self.status.as_u16(),
            "timestamp": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        });
        if let Some(errors) = &self.errors {
            body["errors"] = Value::Array(errors.clone());
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(len) = self.content_range_len
            && let Ok(value) = HeaderValue::from_str(&format!("bytes */{len}"))
        {
            headers.insert(header::CONTENT_RANGE, value);
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// The index of the request's [`RequestRecord`](crate::RequestRecord).
#[derive(Clone, Copy, Debug)]
struct RecordIndex(usize);

/// Marks a create answer that created a job.
#[derive(Clone, Copy, Debug)]
struct CreatedJob;

/// The request's own id and the caller's valid `X-Client-Request-Id`.
#[derive(Clone, Debug)]
struct RequestMeta {
    request_id: String,
    client_request_id: Option<String>,
}

/// Marks a request whose answer will not reach the client, so a poll does
/// not count as the client having seen the job's status.
#[derive(Clone, Copy, Debug)]
struct AnswerLost;

/// Marks a response whose body must be cut short ([`Fault::TruncatedBody`]).
#[derive(Clone, Copy, Debug)]
struct Truncate;

pub(crate) fn router(sim: Simulator) -> Router {
    Router::new()
        .route("/v2/video/generations", get(poll).post(create))
        .route("/files/{file}", get(file))
        .route("/v2/logs", get(crate::service::logs))
        .route("/models/metrics", get(crate::service::metrics))
        .route("/v1/models", get(crate::catalogue::models))
        .route("/docs-json", get(crate::catalogue::document))
        .route("/v2/billing/transactions", get(crate::billing::transactions))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        // Bodies are limited by `max_body_bytes` in the create handler.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(sim.clone(), around))
        .with_state(sim)
}

fn classify(method: &Method, path: &str) -> Route {
    match path {
        "/v2/video/generations" if method == Method::POST => Route::Create,
        "/v2/video/generations" if method == Method::GET || method == Method::HEAD => Route::Poll,
        _ if path.starts_with("/files/") && (method == Method::GET || method == Method::HEAD) => {
            Route::Download
        }
        "/v2/logs" if method == Method::GET => Route::Logs,
        "/models/metrics" if method == Method::GET => Route::Metrics,
        "/v1/models" if method == Method::GET => Route::Models,
        "/docs-json" if method == Method::GET => Route::Documents,
        "/v2/billing/transactions" if method == Method::GET => Route::Billing,
        _ => Route::Any,
    }
}

/// Every request passes here: id, record, fault, error rendering, counting.
/// Reads the request body at `rate` bytes a second, as a server behind a
/// slow link would: the client's upload takes as long as it would there.
fn slow_reader(req: Request, rate: u64) -> Request {
    let (parts, body) = req.into_parts();
    Request::from_parts(parts, throttled(body, rate))
}

/// `body`, delivered at `rate` bytes a second.
fn throttled(body: Body, rate: u64) -> Body {
    let rate = rate.max(1) as f64;
    let slowed = body.into_data_stream().then(move |chunk| async move {
        if let Ok(bytes) = &chunk {
            tokio::time::sleep(Duration::from_secs_f64(bytes.len() as f64 / rate)).await;
        }
        chunk
    });
    Body::from_stream(slowed)
}

async fn around(State(sim): State<Simulator>, mut req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let route = classify(&method, &path);
    let generation_id = match route {
        Route::Poll => query_param(req.uri(), "generation_id"),
        Route::Download => {
            path.strip_prefix("/files/").map(|f| f.strip_suffix(".mp4").unwrap_or(f).to_owned())
        }
        _ => None,
    };
    let range = (route == Route::Download)
        .then(|| req.headers().get(header::RANGE))
        .flatten()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let index = sim.record_arrival(route, method.as_str(), generation_id, range);
    let started = tokio::time::Instant::now();
    let client_request_id = req.headers().get("x-client-request-id").and_then(valid_client_request_id);
    req.extensions_mut().insert(RecordIndex(index));
    req.extensions_mut()
        .insert(RequestMeta { request_id: request_id.clone(), client_request_id: client_request_id.clone() });
    if route == Route::Create
        && let Some(rate) = sim.config().upload_bytes_per_sec
    {
        req = slow_reader(req, rate);
    }

    let response = match sim.take_fault(route) {
        None => next.run(req).await,
        Some(fault) => {
            tracing::debug!(%request_id, ?route, ?fault, "injecting fault");
            with_fault(fault, route, req, next).await
        }
    };

    let receipt = response.extensions().get::<Receipt>().cloned();
    let mut response = match response.extensions().get::<ApiError>() {
        Some(error) => {
            let mut rendered = error.render(&path, &request_id);
            if response.extensions().get::<Truncate>().is_some() {
                rendered.extensions_mut().insert(Truncate);
            }
            rendered
        }
        None => response,
    };
    if response.extensions().get::<Truncate>().is_some() {
        response = truncate(response);
    }
    let status = response.status();
    // Unknown routes are plain 404s upstream; axum would add `Allow`.
    if route == Route::Any {
        response.headers_mut().remove(header::ALLOW);
    }
    if route == Route::Download && method == Method::GET && status.is_success() {
        response = count_bytes(response, sim.clone());
    }
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    if let Some(receipt) = receipt {
        receipt.write(response.headers_mut(), client_request_id.as_deref());
    }
    sim.record_answer(index, status.as_u16());
    tracing::debug!(
        %request_id,
        %method,
        path = %path,
        ?route,
        status = status.as_u16(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Handles a request that drew `fault`.
async fn with_fault(fault: Fault, route: Route, mut req: Request, next: Next) -> Response {
    let ctl = req.extensions().get::<ConnCtl>().cloned();
    match fault {
        Fault::AfterAccept(inner) if route == Route::Create => {
            let response = next.run(req).await;
            if response.extensions().get::<CreatedJob>().is_some() {
                answer_with(*inner, response, ctl).await
            } else {
                response
            }
        }
        Fault::AfterAccept(inner) => Box::pin(with_fault(*inner, route, req, next)).await,
        Fault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            next.run(req).await
        }
        // A cut poll or download is otherwise normal; a cut create is not
        // performed (that is `AfterAccept(TruncatedBody)`).
        Fault::TruncatedBody if route != Route::Create => {
            req.extensions_mut().insert(AnswerLost);
            mark_truncated(next.run(req).await)
        }
        Fault::TruncatedBody => mark_truncated(ApiError::injected(502).into_response()),
        Fault::Status(status) => ApiError::injected(status).into_response(),
        Fault::RateLimited { retry_after_secs } => {
            ApiError::too_many("Too many requests, please retry later", retry_after_secs).into_response()
        }
        Fault::NonJson => html_error_page(),
        Fault::DropConnection => drop_connection(ctl).await,
    }
}

/// Applies `fault` to the answer of a create that did happen.
async fn answer_with(fault: Fault, response: Response, ctl: Option<ConnCtl>) -> Response {
    match fault {
        Fault::Latency(delay) => {
            tokio::time::sleep(delay).await;
            response
        }
        Fault::TruncatedBody => mark_truncated(response),
        Fault::AfterAccept(inner) => Box::pin(answer_with(*inner, response, ctl)).await,
        Fault::Status(status) => ApiError::injected(status).into_response(),
        Fault::RateLimited { retry_after_secs } => {
            ApiError::too_many("Too many requests, please retry later", retry_after_secs).into_response()
        }
        Fault::NonJson => html_error_page(),
        Fault::DropConnection => drop_connection(ctl).await,
    }
}

fn mark_truncated(mut response: Response) -> Response {
    response.extensions_mut().insert(Truncate);
    response
}

fn html_error_page() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n\
         <center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
         </body>\r\n</html>\r\n",
    )
        .into_response()
}

/// Closes the connection without a response. Served by [`Simulator::router`]
/// alone (no server to close), it answers 502 with a body that fails at once.
async fn drop_connection(ctl: Option<ConnCtl>) -> Response {
    let Some(ConnCtl(token)) = ctl else {
        return mark_truncated(ApiError::injected(502).into_response());
    };
    token.cancel();
    // The connection task now drops this future with the connection. HTTP/2
    // streams are not owned by their connection, so give up after a while
    // rather than pending forever.
    tokio::time::sleep(Duration::from_secs(60)).await;
    ApiError::injected(502).into_response()
}

/// Sends the full `Content-Length`, half the body, then an error, so the
/// server aborts the connection mid-body.
fn truncate(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| body.size_hint().exact())
        .unwrap_or(0);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(declared));
    let keep = declared / 2;
    let cut = futures_util::stream::unfold(
        (body.into_data_stream(), keep, false),
        |(mut inner, left, done)| async move {
            if done {
                return None;
            }
            let cut_error = || std::io::Error::other("body truncated by an injected fault");
            if left == 0 {
                // Pend once first: hyper flushes what it has buffered (the
                // headers and the kept bytes) before polling the body again,
                // and only then sees the error and aborts the connection.
                tokio::task::yield_now().await;
                return Some((Err(cut_error()), (inner, 0, true)));
            }
            match inner.next().await {
                Some(Ok(mut chunk)) => {
                    if chunk.len() as u64 > left {
                        chunk.truncate(left as usize);
                    }
                    let left = left - chunk.len() as u64;
                    Some((Ok(chunk), (inner, left, false)))
                }
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (inner, 0, true))),
                None => Some((Err(cut_error()), (inner, 0, true))),
            }
        },
    );
    Response::from_parts(parts, Body::from_stream(cut))
}

/// Counts file body bytes as they are handed to the connection.
fn count_bytes(response: Response, sim: Simulator) -> Response {
    let (parts, body) = response.into_parts();
    let counted = body.into_data_stream().inspect(move |chunk| {
        if let Ok(chunk) = chunk {
            sim.add_bytes_served(chunk.len() as u64);
        }
    });
    Response::from_parts(parts, Body::from_stream(counted))
}

pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    url::form_urlencoded::parse(uri.query()?.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

/// Bearer auth: the key's index, or the 401 to answer.
pub(crate) fn authenticate(sim: &Simulator, headers: &HeaderMap) -> Result<usize, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(401, "Missing API key: send it as `Authorization: Bearer <key>`"));
    };
    // Never echo what was presented: it may be a real key sent to the wrong place.
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| {
            let (scheme, key) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        })
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            ApiError::new(401, "Malformed Authorization header: expected `Authorization: Bearer <key>`")
        })?;
    sim.key_index(presented).ok_or_else(|| ApiError::new(401, "Invalid API key"))
}

/// `POST /v2/video/generations`.
async fn create(
    State(sim): State<Simulator>,
    Extension(RecordIndex(index)): Extension<RecordIndex>,
    Extension(meta): Extension<RequestMeta>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut caller = None;
    let outcome = try_create(&sim, &headers, body, &mut caller).await;
    // Every create the upstream could attribute to a key is in its logs,
    // refused ones too (as `failed`, at no cost).
    let logged = caller.map(|(key_index, model)| {
        let job = outcome.as_ref().ok().map(|(id, _)| id.clone());
        sim.log_create(key_index, model, meta.request_id.clone(), meta.client_request_id.clone(), job)
    });
    let mut response = match outcome {
        Ok((id, answer)) => {
            // Recorded now, so even an answer lost to a fault names its job.
            sim.record_generation(index, &id);
            let mut response = (StatusCode::OK, axum::Json(answer)).into_response();
            response.extensions_mut().insert(CreatedJob);
            // The hold taken for the job is what this call cost.
            response
                .extensions_mut()
                .insert(Receipt { inference_id: Some(id), credits: Some(sim.config().credits_per_job) });
            return response;
        }
        Err(error) => error.into_response(),
    };
    if let Some(inference_id) = logged {
        response.extensions_mut().insert(Receipt { inference_id: Some(inference_id), credits: Some(0.0) });
    }
    response
}

/// Performs a create; `caller` is set to the key and model once the key
/// is known, so that a refusal can be logged against it.
async fn try_create(
    sim: &Simulator,
    headers: &HeaderMap,
    body: Body,
    caller: &mut Option<(usize, String)>,
) -> Result<(String, Value), ApiError> {
    // As on the upstream (an Express app), the body is read and parsed before
    // the auth guard runs.
    let limit = sim.config().max_body_bytes;
    let too_large = || ApiError::new(413, format!("Request entity too large: the limit is {limit} bytes"));
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| ApiError::new(400, "Could not read the request body"))?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    // The upstream's JSON parser ignores other content types (the body is
    // then empty) and reads an empty body as `{}`.
    let body: Value = if !is_json || bytes.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(400, format!("Invalid JSON in the request body: {e}")))?
    };

    let key_index = authenticate(sim, headers)?;
    *caller = Some((key_index, body.get("model").and_then(Value::as_str).unwrap_or_default().to_owned()));
    // Checked on a copy of the listing: a large body is not checked under the lock.
    let listed = sim.lock().listed.clone();
    let checked = validate_listed(&body, &listed);
    let model = checked.map_err(|rejection| ApiError {
        errors: Some(rejection.issues.iter().map(|i| i.to_json()).collect()),
        ..ApiError::new(400, rejection.message)
    })?;
    sim.create_job(key_index, model, &body)
}

/// `GET /v2/video/generations?generation_id=ID`.
async fn poll(
    State(sim): State<Simulator>,
    lost: Option<Extension<AnswerLost>>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let key_index = match authenticate(&sim, &headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let Some(id) = query_param(&uri, "generation_id") else {
        return ApiError {
            errors: Some(vec![json!({
                "code": "invalid_type",
                "expected": "string",
                "received": "undefined",
                "path": ["generation_id"],
                "message": "Required",
            })]),
            ..ApiError::new(400, "Query validation error")
        }
        .into_response();
    };
    let mut response = match sim.poll_job(key_index, &id, &files_base(&sim, &headers, &uri), lost.is_none()) {
        Some(answer) => (StatusCode::OK, axum::Json(answer)).into_response(),
        None => ApiError::new(404, "Generation not found").into_response(),
    };
    // A poll costs nothing. An id that could not be ours gets no inference id.
    let inference_id = uuid::Uuid::parse_str(&id).is_ok().then_some(id);
    response.extensions_mut().insert(Receipt { inference_id, credits: Some(0.0) });
    response
}

/// Where result files are announced: the configured CDN, else this server.
fn files_base(sim: &Simulator, headers: &HeaderMap, uri: &Uri) -> String {
    match &sim.config().files_url {
        Some(base) => base.trim_end_matches('/').to_owned(),
        None => base_url(headers, uri),
    }
}

/// Where this server is reachable, as the client addressed it.
fn base_url(headers: &HeaderMap, uri: &Uri) -> String {
    let host = uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("http://{host}")
}

/// `GET|HEAD /files/{id}.mp4`: the CDN. No auth, like the real file URLs.
async fn file(
    State(sim): State<Simulator>,
    Path(file): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let id = file.strip_suffix(".mp4").unwrap_or(&file);
    let version = match sim.result_file(id) {
        ResultState::Ready { version } => version,
        ResultState::Missing => return ApiError::new(404, "File not found").into_response(),
        // As a storage bucket answers a signed URL past its expiry.
        ResultState::Expired => {
            return (
                StatusCode::FORBIDDEN,
                [(header::CONTENT_TYPE, "application/xml")],
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied</Code>\
                 <Message>Request has expired</Message></Error>",
            )
                .into_response();
        }
    };
    let result = ResultFile::new(sim.config().result_size);
    let len = result.len();
    let etag = format!("\"{id}-{len}-v{version}\"");
    // A range applies only if the client's copy is ours (If-Range), and
    // only on a host that honours ranges at all.
    let range = headers
        .get(header::RANGE)
        .filter(|_| !sim.config().ignore_range)
        .and_then(|v| v.to_str().ok())
        .filter(|_| headers.get(header::IF_RANGE).is_none_or(|v| v.as_bytes() == etag.as_bytes()))
        .map_or(RangeRequest::Full, |r| parse_range(r, len));

    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len.saturating_sub(1)),
        RangeRequest::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeRequest::Unsatisfiable => {
            return ApiError { content_range_len: Some(len), ..ApiError::new(416, "Range not satisfiable") }
                .into_response();
        }
    };
    let body_len = if len == 0 { 0 } else { end - start + 1 };
    let body = if method == Method::HEAD || body_len == 0 {
        Body::empty()
    } else {
        let body = Body::from_stream(result.stream(start, end));
        match sim.config().download_bytes_per_sec {
            Some(rate) => throttled(body, rate),
            None => body,
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(value) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, value);
    }
    response
}

async fn not_found(method: Method, uri: Uri) -> Response {
    ApiError::new(404, format!("Cannot {method} {}", uri.path())).into_response()
}
