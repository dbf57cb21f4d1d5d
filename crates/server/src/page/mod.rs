//! The team page at `/ui`: members see and start their generations, the
//! admin sees keys, usage and what needs attention. Server-rendered HTML
//! (askama, which escapes every value), one small script for live status,
//! assets embedded in the binary; signed in with a session cookie
//! ([`session`]), every form carrying a CSRF token, every answer a strict
//! Content-Security-Policy.
//!
//! It goes through the same code as the API: a create from the form is
//! `api::create_job`, live status is `events::job_changes`.

mod admin;
mod chart;
mod form;
pub mod session;
mod views;

use std::collections::BTreeMap;
use std::convert::Infallible;

use askama::Template;
use axum::Router;
use axum::extract::{Multipart, Path, Query, RawQuery, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::Deserialize;

use crate::state::AppState;
use crate::store::{JobFilter, StoreError};
use session::{SIGN_IN_COOKIE, Session, Viewer};
use views::*;

/// Jobs on one page of a listing.
const PAGE_SIZE: u32 = 20;
/// Jobs one live-status stream follows at most.
const MAX_FOLLOWED: usize = PAGE_SIZE as usize;
/// Days the usage chart shows.
const CHART_DAYS: i64 = 14;

/// The page's routes, under `/ui`.
pub(crate) fn routes(state: &AppState) -> Router<AppState> {
    let policy = content_security_policy(state.upstream().base_url());
    Router::new()
        .route("/ui", get(home))
        .route("/ui/", get(home))
        .route("/ui/sign-in", get(sign_in_form).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/card", get(job_card))
        .route("/ui/events", get(events))
        .route("/ui/new", get(new_form).post(create))
        .route("/ui/admin", get(admin::admin))
        .route("/ui/admin/keys", post(admin::admin_create_key))
        .route("/ui/admin/keys/{name}", post(admin::admin_update_key))
        .route("/ui/admin/keys/{name}/revoke", post(admin::admin_revoke_key))
        .route("/ui/admin/reconcile", post(admin::admin_reconcile))
        .route("/ui/assets/{file}", get(asset))
        .layer(axum::middleware::from_fn(move |request, next| {
            let policy = policy.clone();
            async move { secure_headers(policy, request, next).await }
        }))
}

/// `default-src 'none'` and only what the page uses: its own script and
/// style, its own fetches, and videos from the upstream's file hosts
/// (https, or the configured upstream itself, such as a simulator).
fn content_security_policy(upstream: &str) -> HeaderValue {
    let upstream = url::Url::parse(upstream).map(|u| u.origin().ascii_serialization()).unwrap_or_default();
    let upstream = if upstream == "null" { String::new() } else { format!(" {upstream}") };
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         media-src 'self' https:{upstream}; connect-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
}

async fn secure_headers(
    policy: HeaderValue,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert("content-security-policy", policy);
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    headers.entry(CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Whether cookies must be `Secure`: the page is served over TLS here, or
/// a TLS-terminating proxy in front says so.
fn over_tls(headers: &HeaderMap, tls: Option<&axum::Extension<crate::connection::OverTls>>) -> bool {
    tls.is_some()
        || headers.get("x-forwarded-proto").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// An error page, in the page's own words.
#[derive(Debug)]
pub(crate) struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError { status, message: message.into() }
    }

    fn not_found() -> Self {
        PageError::new(StatusCode::NOT_FOUND, "There is no such job, or it is not yours.")
    }

    fn forbidden(message: &str) -> Self {
        PageError::new(StatusCode::FORBIDDEN, message)
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "the team page could not read storage");
        PageError::new(StatusCode::SERVICE_UNAVAILABLE, "Storage is not answering; try again in a moment.")
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let page = ErrorPage { title: "Error".into(), message: self.message };
        let mut response = render(&page);
        *response.status_mut() = self.status;
        response
    }
}

/// A template as an HTML answer.
fn render(template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => ([(CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a team page template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page could not be drawn").into_response()
        }
    }
}

fn see_other(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response
        .headers_mut()
        .insert(LOCATION, HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/ui")));
    response
}

/// The session, or a redirect to the sign-in form.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Session, Response> {
    match session::current(state, headers).await {
        Ok(Some(session)) => Ok(session),
        Ok(None) => Err(see_other("/ui/sign-in")),
        Err(e) => Err(PageError::from(e).into_response()),
    }
}

/// A form post's session: signed in, from this site, with the session's token.
async fn posted_by(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    if !session::same_origin(headers) {
        return Err(PageError::forbidden("This form was sent from another site.").into_response());
    }
    let session = signed_in(state, headers).await?;
    if !session.csrf_matches(csrf) {
        return Err(PageError::forbidden(
            "This form has expired; go back, reload the page and send it again.",
        )
        .into_response());
    }
    Ok(session)
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match signed_in(&state, &headers).await {
        Ok(Session { viewer: Viewer::Admin, .. }) => see_other("/ui/admin"),
        Ok(_) => see_other("/ui/jobs"),
        Err(redirect) => redirect,
    }
}

async fn sign_in_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    tls: Option<axum::Extension<crate::connection::OverTls>>,
) -> Result<Response, PageError> {
    if let Ok(Some(_)) = session::current(&state, &headers).await {
        return Ok(see_other("/ui"));
    }
    sign_in_page(&headers, tls.as_ref(), None, StatusCode::OK)
}

fn sign_in_page(
    headers: &HeaderMap,
    tls: Option<&axum::Extension<crate::connection::OverTls>>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let csrf = session::random_token()?;
    let page = SignInPage { title: "Sign in".into(), csrf: csrf.clone(), error };
    let mut response = render(&page);
    *response.status_mut() = status;
    session::set_cookie(
        response.headers_mut(),
        session::cookie(SIGN_IN_COOKIE, &csrf, 3600, over_tls(headers, tls)),
    );
    Ok(response)
}

#[derive(Deserialize)]
struct SignInForm {
    secret: String,
    csrf: String,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    tls: Option<axum::Extension<crate::connection::OverTls>>,
    axum::Form(form): axum::Form<SignInForm>,
) -> Result<Response, PageError> {
    let expected = session::cookie_value(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    let csrf_ok = !expected.is_empty()
        && subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), form.csrf.as_bytes()).into();
    if !session::same_origin(&headers) || !csrf_ok {
        let error = "The sign-in form had expired; it was reloaded, sign in again.".to_owned();
        return sign_in_page(&headers, tls.as_ref(), Some(error), StatusCode::FORBIDDEN);
    }
    let Some(credential) = session::credential(&state, &form.secret) else {
        let error =
            "That is not a usable team key or admin token: check it, or ask your admin whether it was \
                     revoked or disabled."
                .to_owned();
        return sign_in_page(&headers, tls.as_ref(), Some(error), StatusCode::UNAUTHORIZED);
    };
    let secure = over_tls(&headers, tls.as_ref());
    let cookie = session::sign_in(&state, credential, &form.secret, secure).await?;
    let mut response = see_other("/ui");
    session::set_cookie(response.headers_mut(), cookie);
    session::set_cookie(response.headers_mut(), session::cookie(SIGN_IN_COOKIE, "", 0, secure));
    Ok(response)
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    tls: Option<axum::Extension<crate::connection::OverTls>>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, Response> {
    let session = posted_by(&state, &headers, &form.csrf).await?;
    let cookie = session::sign_out(&state, &session, over_tls(&headers, tls.as_ref()))
        .await
        .map_err(|e| PageError::from(e).into_response())?;
    let mut response = see_other("/ui/sign-in");
    session::set_cookie(response.headers_mut(), cookie);
    Ok(response)
}

/// The listing's query: filters and the cursor.
#[derive(Debug, Default, Deserialize)]
struct ListQuery {
    status: Option<String>,
    model: Option<String>,
    /// `created_at.local_id` of the last job on the previous page.
    before: Option<String>,
}

async fn jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Response> {
    let session = signed_in(&state, &headers).await?;
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let nonempty = |v: Option<String>| v.filter(|v| !v.is_empty());
    let key_id = match &session.viewer {
        Viewer::Member { record, .. } => Some(record.id),
        Viewer::Admin => None,
    };
    let filter = JobFilter {
        key_id,
        status: nonempty(query.status.clone()),
        model: nonempty(query.model.clone()),
        before: query.before.as_deref().and_then(|b| {
            let (at, id) = b.split_once('.')?;
            Some((at.parse().ok()?, id.to_owned()))
        }),
        // A member's deleted videos are gone from their page; the admin sees every job.
        visible_only: key_id.is_some(),
        limit: PAGE_SIZE,
        ..JobFilter::default()
    };
    let rows = state.store().job_history(&filter).await.map_err(page_error)?;
    let models = state.store().models_used(key_id).await.map_err(page_error)?;
    let names = key_names(&state).await.map_err(page_error)?;
    let next = (rows.len() == PAGE_SIZE as usize).then(|| {
        let last = rows.last().map(|j| format!("{}.{}", j.created_at, j.local_id)).unwrap_or_default();
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(s) = &filter.status {
            query.append_pair("status", s);
        }
        if let Some(m) = &filter.model {
            query.append_pair("model", m);
        }
        query.append_pair("before", &last);
        format!("/ui/jobs?{}", query.finish())
    });
    let admin = matches!(session.viewer, Viewer::Admin);
    let cards = rows
        .iter()
        .map(|j| JobCard::new(j, admin.then(|| names.get(&j.key_id).cloned()).flatten()))
        .collect();
    let page = JobsPage {
        title: if admin { "All generations".into() } else { "My generations".into() },
        nav: Nav::of(&session, "jobs"),
        cards,
        statuses: STATUSES.iter().map(|s| (*s).to_owned()).collect(),
        models,
        status: filter.status.unwrap_or_default(),
        model: filter.model.unwrap_or_default(),
        next,
        first_page: filter.before.is_none(),
    };
    Ok(render(&page))
}

/// The statuses a listing can be filtered by.
const STATUSES: [&str; 6] = ["queued", "generating", "completed", "error", "pending", "unknown"];

fn page_error(e: StoreError) -> Response {
    PageError::from(e).into_response()
}

/// Every key's name by id (revoked ones too: their jobs stay).
async fn key_names(state: &AppState) -> Result<BTreeMap<i64, String>, StoreError> {
    Ok(state.store().keys().await?.into_iter().map(|k| (k.id, k.name)).collect())
}

/// A job the viewer may see; another member's job is exactly like no job.
async fn visible_job(
    state: &AppState,
    session: &Session,
    id: &str,
) -> Result<crate::store::JobSummary, Response> {
    let job = state.store().job_summary(id).await.map_err(page_error)?;
    // A video its member deleted is gone for them; the admin still sees it.
    let deleted =
        |j: &crate::store::JobSummary| j.hidden_at.is_some() && !matches!(session.viewer, Viewer::Admin);
    job.filter(|j| session.viewer.may_see(j.key_id) && !deleted(j))
        .ok_or_else(|| PageError::not_found().into_response())
}

async fn job(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let session = signed_in(&state, &headers).await?;
    let job = visible_job(&state, &session, &id).await?;
    let owner = key_names(&state).await.map_err(page_error)?.get(&job.key_id).cloned();
    let attempts = match &job.generation_id {
        Some(id) if matches!(session.viewer, Viewer::Admin) => {
            state.store().webhook_attempts(id).await.map_err(page_error)?
        }
        _ => Vec::new(),
    };
    let details = job
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_default();
    let page = JobPage {
        title: format!("Generation {}", job.generation_id.as_deref().unwrap_or(&job.local_id)),
        nav: Nav::of(&session, "jobs"),
        card: JobCard::new(&job, matches!(session.viewer, Viewer::Admin).then_some(owner).flatten()),
        details,
        attempts: attempts.iter().map(AttemptRow::new).collect(),
    };
    Ok(render(&page))
}

/// One job's card alone, which the script swaps in when the job finishes.
async fn job_card(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Response> {
    let session = match session::current(&state, &headers).await {
        Ok(Some(session)) => session,
        Ok(None) => return Err(StatusCode::UNAUTHORIZED.into_response()),
        Err(e) => return Err(page_error(e)),
    };
    let job = visible_job(&state, &session, &id).await?;
    let owner = match session.viewer {
        Viewer::Admin => key_names(&state).await.map_err(page_error)?.get(&job.key_id).cloned(),
        Viewer::Member { .. } => None,
    };
    Ok(render(&CardFragment { card: JobCard::new(&job, owner) }))
}

/// `GET /ui/events?job=ID&job=ID…`: the live status of the page's
/// unfinished jobs, one stream for all of them (a browser holds only a few
/// connections per site). Each event is `{"job": ID, "status": …}`.
async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, Response> {
    let session = match session::current(&state, &headers).await {
        Ok(Some(session)) => session,
        Ok(None) => return Err(StatusCode::UNAUTHORIZED.into_response()),
        Err(e) => return Err(page_error(e)),
    };
    let ids: Vec<String> = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "job")
        .map(|(_, v)| v.into_owned())
        .take(MAX_FOLLOWED)
        .collect();
    let mut streams = Vec::new();
    for id in ids {
        let Ok(job) = visible_job(&state, &session, &id).await else { continue };
        let Some(generation_id) = job.generation_id else { continue };
        // The owner's key counts the stream, as the API's event stream does.
        let Some(owner) = state.keys().get(job.key_id) else { continue };
        let Ok(changes) = crate::events::job_changes(&state, owner, &generation_id).await else { continue };
        let local_id = job.local_id.clone();
        streams.push(
            changes
                .map(move |view| {
                    let finished = view.is_finished();
                    let data = serde_json::json!({"job": local_id, "status": view.status.as_str(), "finished": finished});
                    Ok::<_, Infallible>(Event::default().data(data.to_string()))
                })
                .boxed(),
        );
    }
    let merged = futures_util::stream::select_all(streams);
    Ok(Sse::new(merged).keep_alive(KeepAlive::default()).into_response())
}

/// `GET /ui/new?model=ID&video_url=URL`: the form, for the model chosen.
async fn new_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Response> {
    let session = signed_in(&state, &headers).await?;
    if matches!(session.viewer, Viewer::Admin) {
        return Err(PageError::forbidden("Generations are started with a team key; sign in with one.")
            .into_response());
    }
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let values: serde_json::Map<String, serde_json::Value> =
        query.iter().filter(|(k, _)| *k != "model").map(|(k, v)| (k.clone(), v.clone().into())).collect();
    // The headline model, unless the API no longer lists it: then the first it does.
    let listed = listed_models(&state);
    let headline = aimlvid::ExtendModel::default().id();
    let default = match listed.iter().find(|m| m.id == headline).or(listed.first()) {
        Some(choice) => choice.id.clone(),
        None => headline.to_owned(),
    };
    let model = query.get("model").cloned().unwrap_or(default);
    Ok(new_page(&state, &session, &model, &values, None, StatusCode::OK))
}

/// The catalog's models, but those the upstream's catalogue no longer lists.
fn listed_models(state: &AppState) -> Vec<form::ModelChoice> {
    let catalogue = state.catalogue();
    form::model_choices().into_iter().filter(|m| catalogue.no_longer_listed(&m.id).is_none()).collect()
}

fn new_page(
    state: &AppState,
    session: &Session,
    model: &str,
    values: &serde_json::Map<String, serde_json::Value>,
    error: Option<String>,
    status: StatusCode,
) -> Response {
    let spec = aimlvid::catalog::model(model);
    let page = NewPage {
        title: "New generation".into(),
        nav: Nav::of(session, "new"),
        models: listed_models(state),
        model: model.to_owned(),
        fields: spec.map(|s| form::fields(s, values)).unwrap_or_default(),
        error: error.or_else(|| {
            spec.is_none().then(|| format!("There is no model {model:?}; choose one from the list."))
        }),
        idempotency: session::random_token().unwrap_or_default(),
    };
    let mut response = render(&page);
    *response.status_mut() = status;
    response
}

/// `POST /ui/new` (multipart, for uploads): the same create as the API's.
async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Result<Response, Response> {
    let mut posted = Vec::new();
    let mut csrf = String::new();
    let mut model = String::new();
    let mut idempotency = None;
    let bad = |message: String| PageError::new(StatusCode::BAD_REQUEST, message).into_response();
    while let Some(field) =
        multipart.next_field().await.map_err(|e| bad(format!("The form could not be read: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        if let Some(param) = name.strip_prefix("file.") {
            let mime = field.content_type().unwrap_or("application/octet-stream").to_owned();
            let bytes = field.bytes().await.map_err(|e| bad(format!("The upload of {param} failed: {e}")))?;
            if !bytes.is_empty() {
                let uri = format!(
                    "data:{mime};base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(&bytes)
                );
                posted.push((name, form::Posted::File(uri)));
            }
            continue;
        }
        let text = field.text().await.map_err(|e| bad(format!("The form could not be read: {e}")))?;
        match name.as_str() {
            "csrf" => csrf = text,
            "model" => model = text,
            "idempotency" => idempotency = Some(text).filter(|k| !k.is_empty() && k.len() <= 255),
            _ => posted.push((name, form::Posted::Text(text))),
        }
    }
    let session = posted_by(&state, &headers, &csrf).await?;
    let Viewer::Member { key, .. } = &session.viewer else {
        return Err(PageError::forbidden("Generations are started with a team key; sign in with one.")
            .into_response());
    };
    // The form is drawn again with what was typed (never the uploads).
    let typed: serde_json::Map<String, serde_json::Value> = posted
        .iter()
        .filter_map(|(name, v)| match v {
            form::Posted::Text(text) => Some((name.strip_prefix("p.")?.to_owned(), text.clone().into())),
            form::Posted::File(_) => None,
        })
        .collect();
    let body = match form::body(&model, &posted) {
        Ok(body) => body,
        Err(e) => {
            return Ok(new_page(
                &state,
                &session,
                &model,
                &typed,
                Some(e.to_string()),
                StatusCode::BAD_REQUEST,
            ));
        }
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let request_hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&bytes).into();
    let create = crate::jobs::NewCreate {
        value: body,
        request_hash,
        idempotency_key: idempotency,
        remixed_from: None,
    };
    let jobs = state.jobs();
    let result = match jobs.admit(key.clone()) {
        Ok(member) => jobs.create(&member, create).await,
        Err(refusal) => Err(refusal),
    };
    match result {
        Ok(accepted) => Ok(see_other(&format!("/ui/jobs/{}", accepted.local_id))),
        // Refused as the API refuses it, with its status: a 429 stays a 429.
        Err(refusal) => Ok(new_page(&state, &session, &model, &typed, Some(refusal.message), refusal.status)),
    }
}

/// Refuses anyone but the admin.
/// The page's stylesheet and script, embedded in the binary.
#[derive(rust_embed::Embed)]
#[folder = "assets/page/"]
struct Assets;

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = Assets::get(&file) else { return StatusCode::NOT_FOUND.into_response() };
    let etag = format!(
        "\"{}\"",
        asset.metadata.sha256_hash().iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()
    );
    if headers.get(IF_NONE_MATCH).is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let content_type = match file.rsplit('.').next() {
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (ETAG, HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"\""))),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.data.into_owned(),
    )
        .into_response()
}
