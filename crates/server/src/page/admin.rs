//! The admin's pages: keys (issue, change, revoke), usage, unfinished and
//! unknown jobs, failed deliveries, the upstream's catalogue against the
//! build's, and reconciliation with the ledger.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::header::CACHE_CONTROL;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::session::{Session, Viewer};
use super::views::*;
use super::{CHART_DAYS, CsrfForm, PageError, chart, page_error, posted_by, render, see_other, signed_in};
use crate::admin::{IssueError, issue_key_with_format, update_key};
use crate::calendar::unix_now;
use crate::keys::limits::{self, LimitsText};
use crate::state::AppState;
use crate::store::{KeyUpdate, StoreError};
use secrecy::ExposeSecret as _;

fn admin_only(session: &Session) -> Result<(), PageError> {
    match session.viewer {
        Viewer::Admin => Ok(()),
        Viewer::Member { .. } => Err(PageError::forbidden("This page is for the server's admin.")),
    }
}

/// A post's session, if it is the admin's and carries its CSRF token.
async fn posted_by_admin(state: &AppState, headers: &HeaderMap, csrf: &str) -> Result<Session, Response> {
    let session = posted_by(state, headers, csrf).await?;
    admin_only(&session).map_err(IntoResponse::into_response)?;
    Ok(session)
}

/// `GET /ui/admin`.
pub(super) async fn admin(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Response> {
    let session = signed_in(&state, &headers).await?;
    admin_page(&state, &session, None, None, StatusCode::OK).await
}

async fn admin_page(
    state: &AppState,
    session: &Session,
    issued: Option<IssuedKey>,
    error: Option<String>,
    status: StatusCode,
) -> Result<Response, Response> {
    admin_only(session).map_err(IntoResponse::into_response)?;
    let store = state.store();
    let keys = store.keys().await.map_err(page_error)?;
    let names: BTreeMap<i64, String> = keys.iter().map(|k| (k.id, k.name.clone())).collect();
    let today = unix_now().div_euclid(86_400) * 86_400;
    let usage = store.daily_usage(today - (CHART_DAYS - 1) * 86_400).await.map_err(page_error)?;
    let (chart, legend) = chart::usage_chart(&usage, &names, today, CHART_DAYS);
    let unfinished = store.unfinished_jobs().await.map_err(page_error)?;
    let attention = store.jobs_needing_attention().await.map_err(page_error)?;
    let failed = store.failed_deliveries(50).await.map_err(page_error)?;
    let counts = state.unfinished_per_key().await.map_err(page_error)?;
    let page = AdminPage {
        title: "Admin".into(),
        nav: Nav::of(session, "admin"),
        keys: keys
            .iter()
            .filter(|k| !k.revoked)
            .map(|k| KeyRow::new(k, counts.get(&k.id).copied().unwrap_or(0)))
            .collect(),
        revoked: keys.iter().filter(|k| k.revoked).map(|k| k.name.clone()).collect(),
        chart,
        legend: legend
            .into_iter()
            .map(|s| (s.name, s.colour.to_owned(), format!("{:.1}", s.credits)))
            .collect(),
        unfinished: unfinished.iter().take(100).map(|j| JobLine::new(j, &names)).collect(),
        unfinished_total: unfinished.len(),
        attention: attention.iter().map(|j| JobLine::new(j, &names)).collect(),
        failed: failed
            .iter()
            .map(|a| (names.get(&a.key_id).cloned().unwrap_or_default(), AttemptRow::new(a)))
            .collect(),
        issued,
        error,
        periods: ["", "day", "week", "month"].iter().map(|s| (*s).to_owned()).collect(),
        default_max_unfinished: limits::DEFAULT_MAX_UNFINISHED,
        reconciliation: state.last_reconciliation().get().as_ref().map(ReconcileView::new),
        catalogue: state.catalogue().last().as_ref().map(CatalogueView::new),
    };
    let mut response = render(&page);
    *response.status_mut() = status;
    Ok(response)
}

/// The key form's fields, as the `keys` command reads its flags
/// ([`LimitsText`]): blank is not given, so a new key gets the defaults
/// every way of issuing a key shares; the key table's rows show every
/// limit, so there a blank one is lifted ([`limits::lift_unset`]).
#[derive(Debug, Deserialize)]
pub(super) struct KeyForm {
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    rpm: String,
    #[serde(default)]
    max_unfinished: String,
    #[serde(default)]
    credit_budget: String,
    #[serde(default)]
    budget_period: String,
    #[serde(default)]
    allowed_models: String,
    #[serde(default)]
    webhook_url: String,
    #[serde(default)]
    webhook_format: String,
    #[serde(default)]
    enabled: Option<String>,
}

impl KeyForm {
    fn asked(&self) -> Result<KeyUpdate, String> {
        let text = LimitsText {
            models: Some(&self.allowed_models),
            rpm: Some(&self.rpm),
            max_unfinished: Some(&self.max_unfinished),
            budget: Some(&self.credit_budget),
            budget_usd: None,
            budget_period: Some(&self.budget_period),
            webhook_url: Some(&self.webhook_url),
            webhook_format: Some(&self.webhook_format),
        };
        text.parse().map_err(|e| e.to_string())
    }
}

/// `POST /ui/admin/keys`: issues a key and shows it, this once.
pub(super) async fn admin_create_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<KeyForm>,
) -> Result<Response, Response> {
    let session = posted_by_admin(&state, &headers, &form.csrf).await?;
    let asked = match form.asked() {
        Ok(asked) => asked,
        Err(e) => return admin_page(&state, &session, None, Some(e), StatusCode::BAD_REQUEST).await,
    };
    let webhook = asked.webhook_url.clone().flatten();
    let (new_limits, rules) = (limits::with_defaults(&asked), state.webhooks().target_rules());
    let format = asked.webhook_format.unwrap_or_default();
    match issue_key_with_format(
        state.store(),
        form.name.trim(),
        new_limits,
        webhook.as_deref(),
        format,
        rules,
    )
    .await
    {
        Ok(issued) => {
            state.reload_keys().await.map_err(page_error)?;
            let shown = IssuedKey {
                name: issued.record.name.clone(),
                key: issued.key.expose_secret().to_owned(),
                webhook_secret: issued.webhook_secret.as_ref().map(|s| s.expose_secret().to_owned()),
            };
            let mut response = admin_page(&state, &session, Some(shown), None, StatusCode::CREATED).await?;
            // The key is in this answer only: nothing may keep it.
            response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(e) => {
            let message = match e {
                IssueError::Store(StoreError::Conflict(_)) => {
                    format!("A key named {:?} already exists.", form.name.trim())
                }
                IssueError::Store(other) => return Err(page_error(other)),
                other => other.to_string(),
            };
            admin_page(&state, &session, None, Some(message), StatusCode::BAD_REQUEST).await
        }
    }
}

/// `POST /ui/admin/keys/{name}`: new limits, enabled or not.
pub(super) async fn admin_update_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<KeyForm>,
) -> Result<Response, Response> {
    let session = posted_by_admin(&state, &headers, &form.csrf).await?;
    let asked = match form.asked() {
        Ok(asked) => asked,
        Err(e) => return admin_page(&state, &session, None, Some(e), StatusCode::BAD_REQUEST).await,
    };
    // The row has no webhook field: the webhook stays as it is.
    let update = KeyUpdate {
        enabled: Some(form.enabled.is_some()),
        webhook_url: None,
        webhook_format: None,
        ..limits::lift_unset(asked)
    };
    match update_key(state.store(), &name, &update, state.webhooks().target_rules()).await {
        Ok(Some(_)) => {
            state.reload_keys().await.map_err(page_error)?;
            Ok(see_other("/ui/admin"))
        }
        Ok(None) => {
            Err(PageError::new(StatusCode::NOT_FOUND, format!("There is no key named {name:?}."))
                .into_response())
        }
        Err(IssueError::Store(e)) => Err(page_error(e)),
        Err(e) => admin_page(&state, &session, None, Some(e.to_string()), StatusCode::BAD_REQUEST).await,
    }
}

/// `POST /ui/admin/keys/{name}/revoke`: for good.
pub(super) async fn admin_revoke_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, Response> {
    posted_by_admin(&state, &headers, &form.csrf).await?;
    match state.store().revoke_key(&name).await.map_err(page_error)? {
        Some(_) => {
            state.reload_keys().await.map_err(page_error)?;
            Ok(see_other("/ui/admin"))
        }
        None => {
            Err(PageError::new(StatusCode::NOT_FOUND, format!("There is no key named {name:?}."))
                .into_response())
        }
    }
}

/// `POST /ui/admin/reconcile`: reconciles with the ledger now; the admin
/// page shows the result (or why there is none).
pub(super) async fn admin_reconcile(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Result<Response, Response> {
    posted_by_admin(&state, &headers, &form.csrf).await?;
    // A failure is kept as the last run, and shown there.
    let _ = crate::engine::ledger::reconcile_now(state.reconciler(), state.reconcile_window()).await;
    Ok(see_other("/ui/admin#reconciliation"))
}
