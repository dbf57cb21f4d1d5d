//! The upstream's service endpoints and call receipts: the tracing and cost
//! headers on every inference answer, `GET /v2/logs` (one row per create,
//! found again by `X-Client-Request-Id`) and `GET /models/metrics` (duration
//! percentiles drawn from the simulator's own jobs).

use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::Simulator;
use crate::http::{ApiError, authenticate};
use crate::state::{LogRow, js_number};

/// Credits per US dollar, as the upstream's documented figures imply
/// (500,000 credits = $0.25).
pub(crate) const CREDITS_PER_USD: f64 = 2_000_000.0;

/// The sliding window `GET /models/metrics` reports on, in virtual seconds.
pub(crate) const METRICS_WINDOW_SECS: u64 = 300;

/// Longest window `GET /v2/logs` accepts.
const MAX_LOGS_WINDOW: Duration = Duration::from_secs(92 * 24 * 3600);

/// The upstream's rule for `X-Client-Request-Id`: 1–128 characters of
/// `A-Za-z0-9._:-`. Anything else is silently dropped, never refused.
pub(crate) fn valid_client_request_id(value: &HeaderValue) -> Option<String> {
    let bytes = value.as_bytes();
    let ok = (1..=128).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'));
    ok.then(|| String::from_utf8_lossy(bytes).into_owned())
}

/// What an inference answer's headers report: set by the handler as a
/// response extension, written out by the middleware.
#[derive(Clone, Debug, Default)]
pub(crate) struct Receipt {
    /// `x-inference-id`.
    pub(crate) inference_id: Option<String>,
    /// `x-aimlapi-credits-used` (and `-usd-spent`): what this call cost.
    pub(crate) credits: Option<f64>,
}

impl Receipt {
    /// Writes the headers, echoing a valid client request id.
    pub(crate) fn write(&self, headers: &mut HeaderMap, client_request_id: Option<&str>) {
        let mut set = |name: &'static str, value: String| {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(name, value);
            }
        };
        if let Some(id) = &self.inference_id {
            set("x-inference-id", id.clone());
        }
        if let Some(id) = client_request_id {
            set("x-client-request-id", id.to_owned());
        }
        if let Some(credits) = self.credits {
            set("x-aimlapi-credits-used", format!("{}", credits.round() as i64));
            set("x-aimlapi-usd-spent", format!("{:.9}", credits / CREDITS_PER_USD));
        }
        set(
            "access-control-expose-headers",
            "x-inference-id, x-client-request-id, x-aimlapi-credits-used, x-aimlapi-usd-spent".to_owned(),
        );
    }
}

impl Simulator {
    /// Adds a create to the logs; `job` is the job it made, if accepted.
    /// Returns the row's inference id.
    pub(crate) fn log_create(
        &self,
        key_index: usize,
        model: String,
        request_id: String,
        client_request_id: Option<String>,
        job: Option<String>,
    ) -> String {
        let visible_at = self.virtual_now().saturating_add(self.config().logs_delay);
        let inference_id = job.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.lock().logs.push(LogRow {
            created: SystemTime::now(),
            visible_at,
            key_index,
            model,
            request_id,
            inference_id: inference_id.clone(),
            client_request_id,
            job,
        });
        inference_id
    }

    /// Counts a `GET /v2/logs` call; `Some(seconds)` to wait if over the limit.
    fn logs_call_refused(&self, key_index: usize) -> Option<u64> {
        let now = self.real_elapsed();
        let limit = self.config().logs_requests_per_minute;
        let mut state = self.lock();
        let calls = state.logs_calls.entry(key_index).or_default();
        while calls.front().is_some_and(|at| now.saturating_sub(*at) >= Duration::from_secs(60)) {
            calls.pop_front();
        }
        if calls.len() >= limit {
            let oldest = calls.front().copied().unwrap_or(now);
            let left = Duration::from_secs(60).saturating_sub(now.saturating_sub(oldest));
            return Some(left.as_secs_f64().ceil().max(1.0) as u64);
        }
        calls.push_back(now);
        None
    }

    /// The rows of `query` visible now, newest first, and how many match.
    fn log_page(&self, key_index: usize, query: &LogQuery) -> (Vec<Value>, usize) {
        let now = self.virtual_now();
        let state = self.lock();
        let matching: Vec<Value> = state
            .logs
            .iter()
            .rev()
            .filter(|row| row.key_index == key_index && row.visible_at <= now)
            .filter(|row| row.created >= query.start && row.created <= query.end)
            .filter(|row| {
                query.models.is_empty() || query.models.iter().any(|m| model_matches(m, &row.model))
            })
            .filter_map(|row| {
                let (status, credits) = match row.job.as_ref().and_then(|id| state.jobs.get(id)) {
                    Some(job) => job.outcome(now),
                    None => ("failed", 0.0),
                };
                (query.statuses.is_empty() || query.statuses.iter().any(|s| s == status)).then(|| {
                    json!({
                        "created": humantime::format_rfc3339_millis(row.created).to_string(),
                        "status": status,
                        "origin": "api",
                        "model": row.model,
                        "cost": {"usd": credits / CREDITS_PER_USD, "credits": js_number(credits)},
                        "tokens": {"input": 0, "output": 0, "total": 0},
                        "request_id": row.request_id,
                        "inference_id": row.inference_id,
                        "client_request_id": row.client_request_id,
                    })
                })
            })
            .collect();
        let total = matching.len();
        (matching.into_iter().skip(query.offset).take(query.limit).collect(), total)
    }

    /// Duration percentiles of the jobs that completed in the last window.
    fn metrics(&self, aliases: &[String]) -> Vec<Value> {
        let now = self.virtual_now();
        let window = Duration::from_secs(METRICS_WINDOW_SECS);
        let mut per_model: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
        let state = self.lock();
        for job in state.jobs.values() {
            if let Some((finished, took)) = job.completed_in(now)
                && now.saturating_sub(finished) < window
                && (aliases.is_empty() || aliases.iter().any(|a| model_matches(a, job.model())))
            {
                per_model.entry(job.model()).or_default().push(took.as_secs_f64() * 1000.0);
            }
        }
        per_model
            .into_iter()
            .map(|(model, mut ms)| {
                ms.sort_by(f64::total_cmp);
                let p = |q: f64| {
                    let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
                    js_number(ms[rank - 1].round())
                };
                json!({
                    "alias": model,
                    "endpoint": "/v2/video/generations",
                    "metrics": {"duration_ms": {"p50": p(0.5), "p75": p(0.75), "p90": p(0.9), "p99": p(0.99)}},
                })
            })
            .collect()
    }
}

/// `source/alias` matches itself and its bare alias.
fn model_matches(asked: &str, model: &str) -> bool {
    asked == model || model.split_once('/').is_some_and(|(_, alias)| alias == asked)
}

/// A parsed `GET /v2/logs` query.
#[derive(Debug)]
struct LogQuery {
    start: SystemTime,
    end: SystemTime,
    models: Vec<String>,
    statuses: Vec<String>,
    limit: usize,
    offset: usize,
}

impl LogQuery {
    fn parse(uri: &Uri) -> Result<LogQuery, ApiError> {
        let pairs: Vec<(String, String)> = uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let one = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let all =
            |name: &str| pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect::<Vec<_>>();
        let bad = |message: String| ApiError::new(400, message);

        let now = SystemTime::now();
        let (start, end) = match (one("period"), one("start"), one("end")) {
            (Some(period), None, None) => (now - parse_period(period).ok_or_else(|| {
                bad(format!("Invalid period {period:?}: expected a positive integer followed by h or d, such as 24h or 7d"))
            })?, now),
            (None, Some(start), Some(end)) => {
                let parse = |name: &str, v: &str| {
                    parse_instant(v).ok_or_else(|| bad(format!("Invalid {name} {v:?}: expected an ISO-8601 date and time")))
                };
                (parse("start", start)?, parse("end", end)?)
            }
            (None, None, None) => return Err(bad("Provide either period or both start and end".into())),
            (None, Some(_), None) | (None, None, Some(_)) => {
                return Err(bad("start and end must be given together".into()));
            }
            (Some(_), _, _) => return Err(bad("Provide either period or start and end, not both".into())),
        };
        let span = end.duration_since(start).map_err(|_| bad("end must not be earlier than start".into()))?;
        if span > MAX_LOGS_WINDOW {
            return Err(bad("The window must not exceed 92 days".into()));
        }
        let models = all("model");
        if models.len() > 50 {
            return Err(bad("At most 50 model values are accepted".into()));
        }
        let statuses = all("status");
        if let Some(s) = statuses.iter().find(|s| !matches!(s.as_str(), "succeeded" | "failed")) {
            return Err(bad(format!(
                "Invalid status {s:?}: expected succeeded or failed (repeat the parameter for both)"
            )));
        }
        let number = |name: &str, default: usize, min: usize, max: usize| -> Result<usize, ApiError> {
            match one(name) {
                None => Ok(default),
                Some(v) => v.parse::<usize>().ok().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
                    bad(format!("Invalid {name} {v:?}: expected an integer from {min} to {max}"))
                }),
            }
        };
        Ok(LogQuery {
            start,
            end,
            models,
            statuses,
            limit: number("limit", 50, 1, 100)?,
            offset: number("offset", 0, 0, usize::MAX)?,
        })
    }
}

/// `24h`, `7d`.
fn parse_period(period: &str) -> Option<Duration> {
    let unit = match period.chars().last()? {
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let n: u64 = period[..period.len() - 1].parse().ok().filter(|n| *n > 0)?;
    n.checked_mul(unit).map(Duration::from_secs)
}

/// ISO-8601 with `Z`, a `±HH:MM` offset, or none (read as UTC).
fn parse_instant(value: &str) -> Option<SystemTime> {
    let value = value.trim();
    if let Ok(t) = humantime::parse_rfc3339_weak(value.trim_end_matches(['Z', 'z'])) {
        return Some(t);
    }
    // An explicit offset: parse the local part, then shift it to UTC.
    let (local, sign, offset) = [('+', 1i64), ('-', -1i64)].iter().find_map(|(c, sign)| {
        let at = value.rfind(*c).filter(|at| *at > 10)?;
        Some((&value[..at], *sign, &value[at + 1..]))
    })?;
    let (h, m) = offset.split_once(':').unwrap_or((offset.get(..2)?, offset.get(2..)?));
    let shift = h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60;
    let local = humantime::parse_rfc3339_weak(local).ok()?;
    let shift = Duration::from_secs(shift.unsigned_abs());
    if sign > 0 { local.checked_sub(shift) } else { local.checked_add(shift) }
}

/// `GET /v2/logs`.
pub(crate) async fn logs(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    let key_index = match authenticate(&sim, &headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    if let Some(wait) = sim.logs_call_refused(key_index) {
        return ApiError::too_many("Too many requests: at most 200 log queries per 60 seconds", wait)
            .into_response();
    }
    let query = match LogQuery::parse(&uri) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    if let Some(prefix) = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "key_prefix")
            .map(|(_, v)| v.into_owned())
    }) && !sim.config().api_keys.get(key_index).is_some_and(|key| key.starts_with(&prefix))
    {
        return ApiError::new(403, "Listing another key's requests needs a management key").into_response();
    }
    let (data, total) = sim.log_page(key_index, &query);
    let body = json!({
        "data": data,
        "pagination": {
            "limit": query.limit,
            "offset": query.offset,
            "total": total,
            "has_more": query.offset.saturating_add(query.limit) < total,
        },
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// `GET /models/metrics`: no key needed.
pub(crate) async fn metrics(State(sim): State<Simulator>, uri: Uri) -> Response {
    let pairs: Vec<(String, String)> = uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if let Some((name, _)) = pairs.iter().find(|(k, _)| k != "aliases") {
        return ApiError::new(400, format!("Unknown query parameter {name:?}: only aliases is accepted"))
            .into_response();
    }
    let aliases: Vec<String> = pairs.into_iter().map(|(_, v)| v).collect();
    if aliases.len() > 100 {
        return ApiError::new(400, "At most 100 aliases are accepted").into_response();
    }
    let body = json!({
        "window_seconds": METRICS_WINDOW_SECS,
        "generated_at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        "models": sim.metrics(&aliases),
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_request_ids_follow_the_documented_alphabet() {
        let ok = |s: &str| valid_client_request_id(&HeaderValue::from_str(s).unwrap()).is_some();
        assert!(ok("order-8f21c4"));
        assert!(ok("a.b_c:d-E9"));
        assert!(ok(&"x".repeat(128)));
        assert!(!ok(&"x".repeat(129)));
        assert!(!ok("has space"));
        assert!(!ok("slash/no"));
        assert!(!ok(""));
    }

    #[test]
    fn periods_and_instants_parse_as_documented() {
        assert_eq!(parse_period("24h"), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_period("7d"), Some(Duration::from_secs(7 * 86_400)));
        for bad in ["0h", "7", "d", "7w", "-1d", "1.5h"] {
            assert_eq!(parse_period(bad), None, "{bad}");
        }
        let utc = parse_instant("2026-07-01T00:00:00Z").unwrap();
        assert_eq!(parse_instant("2026-07-01T00:00:00").unwrap(), utc);
        assert_eq!(parse_instant("2026-07-01T02:00:00+02:00").unwrap(), utc);
        assert_eq!(parse_instant("2026-06-30T22:30:00-01:30").unwrap(), utc);
        assert!(parse_instant("yesterday").is_none());
    }

    #[test]
    fn bare_aliases_match_their_model() {
        assert!(model_matches("google/veo3-1-fast-extend-video", "google/veo3-1-fast-extend-video"));
        assert!(model_matches("veo3-1-fast-extend-video", "google/veo3-1-fast-extend-video"));
        assert!(!model_matches("veo3", "google/veo3-1-fast-extend-video"));
    }
}
