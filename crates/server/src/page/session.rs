//! Signing in to the team page: a team key or the admin token is exchanged
//! once for a session cookie, so the secret itself never travels again and
//! is never in a URL, the page or the browser's storage. Sessions live in
//! storage (as the hash of their token), expire, and end at sign-out, when
//! their key is rotated, disabled or revoked, or the admin token changes.

use std::sync::Arc;

use axum::http::header::{COOKIE, HOST, ORIGIN, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};
use subtle::ConstantTimeEq as _;

use crate::calendar::unix_now;
use crate::keys::{KeyEntry, hash_key};
use crate::state::AppState;
use crate::store::{KeyRecord, PageSession, StoreError};

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "aimlvid_session";
/// The cookie that carries the sign-in form's CSRF token (there is no
/// session to hold it yet).
pub(crate) const SIGN_IN_COOKIE: &str = "aimlvid_sign_in";

pub use crate::state::{DEFAULT_SESSION_HOURS, DEFAULT_SESSION_LIFETIME};

/// Who is signed in.
#[derive(Clone)]
pub(crate) enum Viewer {
    /// A member, by their key.
    Member { key: Arc<KeyEntry>, record: Arc<KeyRecord> },
    /// The server's admin.
    Admin,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Viewer::Member { record, .. } => write!(f, "Member({})", record.name),
            Viewer::Admin => f.write_str("Admin"),
        }
    }
}

impl Viewer {
    /// The name shown in the header.
    pub(crate) fn name(&self) -> String {
        match self {
            Viewer::Member { record, .. } => record.name.clone(),
            Viewer::Admin => "admin".to_owned(),
        }
    }

    /// Whether this viewer may see a job of `key_id`.
    pub(crate) fn may_see(&self, key_id: i64) -> bool {
        match self {
            Viewer::Member { record, .. } => record.id == key_id,
            Viewer::Admin => true,
        }
    }
}

/// A live session: who, and the token its forms carry.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) viewer: Viewer,
    pub(crate) csrf: String,
    token_hash: [u8; 32],
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("viewer", &self.viewer).finish_non_exhaustive()
    }
}

impl Session {
    /// Whether a form's CSRF token is this session's.
    pub(crate) fn csrf_matches(&self, presented: &str) -> bool {
        self.csrf.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

/// What a secret presented at sign-in turned out to be.
pub(crate) enum Credential {
    Admin,
    Member(Arc<KeyRecord>),
}

/// Checks a secret presented at sign-in: the admin token, or an enabled
/// team key. `None` says nothing of which was wrong.
pub(crate) fn credential(state: &AppState, secret: &str) -> Option<Credential> {
    let secret = secret.trim();
    if secret.is_empty() {
        return None;
    }
    if state.admin_enabled() && state.is_admin(secret) {
        return Some(Credential::Admin);
    }
    let (_, record) = state.keys().authenticate(secret)?;
    (record.enabled && !record.revoked).then_some(Credential::Member(record))
}

/// Starts a session for a checked credential; returns the cookie to set.
pub(crate) async fn sign_in(
    state: &AppState,
    credential: Credential,
    secret: &str,
    secure: bool,
) -> Result<HeaderValue, StoreError> {
    let token = random_token()?;
    let now = unix_now();
    let lifetime = state.team_page_sessions().unwrap_or(DEFAULT_SESSION_LIFETIME);
    let session = PageSession {
        key_id: match &credential {
            Credential::Admin => None,
            Credential::Member(record) => Some(record.id),
        },
        credential_hash: hash_key(secret.trim()),
        csrf: random_token()?,
        expires_at: now + lifetime.as_secs() as i64,
    };
    state.store().insert_session(&hash_key(&token), &session, now).await?;
    Ok(cookie(SESSION_COOKIE, &token, lifetime.as_secs(), secure))
}

/// The session a request's cookie names, if it is live and its credential
/// still works.
pub(crate) async fn current(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, StoreError> {
    let Some(token) = cookie_value(headers, SESSION_COOKIE) else { return Ok(None) };
    let token_hash = hash_key(token);
    let Some(stored) = state.store().session(&token_hash, unix_now()).await? else { return Ok(None) };
    let viewer = match stored.key_id {
        None => {
            // The admin token is kept only as its hash; a changed token ends its sessions.
            if !state.admin_enabled() || !state.admin_hash_is(&stored.credential_hash) {
                return Ok(None);
            }
            Viewer::Admin
        }
        Some(key_id) => {
            let Some(key) = state.keys().get(key_id) else { return Ok(None) };
            let record = key.record();
            let same_key: bool = record.hash.ct_eq(&stored.credential_hash).into();
            if !same_key || !record.enabled || record.revoked {
                return Ok(None);
            }
            Viewer::Member { key, record }
        }
    };
    Ok(Some(Session { viewer, csrf: stored.csrf, token_hash }))
}

/// Ends a session; returns the cookie that clears it in the browser.
pub(crate) async fn sign_out(
    state: &AppState,
    session: &Session,
    secure: bool,
) -> Result<HeaderValue, StoreError> {
    state.store().delete_session(&session.token_hash).await?;
    Ok(cookie(SESSION_COOKIE, "", 0, secure))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for `/ui` only, and
/// Secure when the page is served over TLS.
pub(crate) fn cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Path=/ui; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Adds a `Set-Cookie` header.
pub(crate) fn set_cookie(headers: &mut HeaderMap, value: HeaderValue) {
    headers.append(SET_COOKIE, value);
}

/// A cookie's value from the request.
pub(crate) fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// Whether a form post comes from this server's own pages: browsers send
/// `Sec-Fetch-Site` and `Origin` with every cross-site post, so a post that
/// another site made the browser send is refused even before its CSRF token
/// is looked at.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match headers.get(ORIGIN).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
            let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
            !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
        }
    }
}

/// 32 random bytes, hex.
pub(crate) fn random_token() -> Result<String, StoreError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Invalid(format!("no randomness for a session: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_http_only_strict_and_secure_only_over_tls() {
        let plain = cookie(SESSION_COOKIE, "t", 60, false);
        assert_eq!(plain, "aimlvid_session=t; Path=/ui; Max-Age=60; HttpOnly; SameSite=Strict");
        assert!(cookie(SESSION_COOKIE, "t", 60, true).to_str().unwrap().ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_static("a=1; aimlvid_session=tok; b=2"));
        assert_eq!(cookie_value(&headers, SESSION_COOKIE), Some("tok"));
        assert_eq!(cookie_value(&headers, "c"), None);
    }

    #[test]
    fn posts_from_other_sites_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("team.example:8080"));
        assert!(same_origin(&headers), "no Origin (an old browser, curl)");
        headers.insert(ORIGIN, HeaderValue::from_static("http://team.example:8080"));
        assert!(same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&headers));
        headers.insert(ORIGIN, HeaderValue::from_static("http://team.example:8080"));
        headers.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&headers));
    }
}
