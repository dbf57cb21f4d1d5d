//! `GET /v2/billing/transactions`: the account's ledger, one entry per
//! balance movement, newest first, paged by an opaque cursor.
//!
//! A completed job's charge goes on the ledger [`SimConfig::ledger_delay`]
//! after it completes (the upstream records it after the generation reports
//! `completed`), as a `CHARGE` of type `MODEL_USAGE` whose `reference_id` is
//! the generation id and whose amount is what the job's answer reported in
//! `meta.usage.credits_used`. A failed job is not charged: its hold is
//! rolled back, which is no movement. A limited starting balance
//! ([`SimConfig::credit_balance`]) is an `INIT` top-up. The ledger is the
//! account's, so every key sees every key's entries.
//!
//! [`SimConfig::ledger_delay`]: crate::SimConfig::ledger_delay
//! [`SimConfig::credit_balance`]: crate::SimConfig::credit_balance

use std::time::{Duration, SystemTime};

use aimlvid::catalog::Issue;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{ApiError, authenticate};
use crate::service::CREDITS_PER_USD;
use crate::state::{Job, State as SimState, Status, js_number};
use crate::{SimConfig, Simulator};

const DIRECTIONS: [&str; 2] = ["TOPUP", "CHARGE"];
const TYPES: [&str; 7] =
    ["PAYMENT", "BONUS", "REFUND", "ADJUSTMENT", "MODEL_USAGE", "CREDITS_EXPIRED", "INIT"];

/// One ledger entry.
#[derive(Clone, Debug)]
pub(crate) struct LedgerEntry {
    /// Order among entries of the same millisecond.
    seq: u64,
    /// Whole milliseconds, as the API shows it (and as a cursor holds it).
    created_at: SystemTime,
    direction: &'static str,
    kind: &'static str,
    /// Always above zero: a movement of nothing is not recorded.
    credits: u64,
    model: Option<String>,
    reference_id: Option<String>,
}

impl LedgerEntry {
    fn position(&self) -> (SystemTime, u64) {
        (self.created_at, self.seq)
    }
}

/// An entry as the API answers it, fields in the documented order.
#[derive(Serialize)]
struct EntryJson<'a> {
    created_at: String,
    direction: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    amount: AmountJson,
    model: Option<&'a str>,
    reference_id: Option<&'a str>,
}

#[derive(Serialize)]
struct AmountJson {
    usd: Value,
    credits: u64,
}

#[derive(Serialize)]
struct PageJson<'a> {
    data: Vec<EntryJson<'a>>,
    pagination: PaginationJson,
}

#[derive(Serialize)]
struct PaginationJson {
    next_cursor: Option<String>,
    has_more: bool,
}

fn render(entry: &LedgerEntry) -> EntryJson<'_> {
    EntryJson {
        created_at: humantime::format_rfc3339_millis(entry.created_at).to_string(),
        direction: entry.direction,
        kind: entry.kind,
        amount: AmountJson { usd: js_number(entry.credits as f64 / CREDITS_PER_USD), credits: entry.credits },
        model: entry.model.as_deref(),
        reference_id: entry.reference_id.as_deref(),
    }
}

/// `t` without its sub-millisecond part.
fn whole_millis(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SystemTime::UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

/// Credits as the ledger counts them: whole and never negative.
fn whole_credits(credits: f64) -> u64 {
    if credits.is_finite() && credits > 0.0 { credits.round() as u64 } else { 0 }
}

/// Puts the starting balance on a new simulator's ledger.
pub(crate) fn open_ledger(state: &mut SimState, config: &SimConfig, at: SystemTime) {
    let credits = config.credit_balance.map_or(0, whole_credits);
    if credits > 0 {
        push(state, whole_millis(at), "TOPUP", "INIT", credits, None, None);
    }
}

/// Appends an entry (the ledger is re-sorted by the caller when needed).
fn push(
    state: &mut SimState,
    created_at: SystemTime,
    direction: &'static str,
    kind: &'static str,
    credits: u64,
    model: Option<String>,
    reference_id: Option<String>,
) {
    let seq = state.ledger.len() as u64;
    state.ledger.push(LedgerEntry { seq, created_at, direction, kind, credits, model, reference_id });
}

impl Simulator {
    /// When a job's charge is recorded: its completion plus the ledger delay,
    /// on the wall clock.
    fn charged_at(&self, job: &Job) -> SystemTime {
        let finished = job.finished_wall.unwrap_or_else(|| self.wall_at(job.finishes_at));
        let scale = self.config().time_scale;
        let delay = if scale > 0.0 {
            crate::config::secs(self.config().ledger_delay.as_secs_f64() / scale)
        } else {
            Duration::ZERO
        };
        whole_millis(finished + delay)
    }

    /// Records the charges due by `now`: each job that completed at least
    /// the ledger delay ago. Only jobs not yet settled are looked at.
    fn settle_ledger(&self, state: &mut SimState, now: Duration) {
        let delay = self.config().ledger_delay;
        let mut due = Vec::new();
        let SimState { unbilled, jobs, .. } = state;
        unbilled.retain(|id| {
            let Some(job) = jobs.get(id) else { return false };
            match job.status(now) {
                // Its hold was rolled back: no movement, no entry.
                Status::Error => false,
                Status::Completed if now >= job.finishes_at.saturating_add(delay) => {
                    let credits = job.charge_override.unwrap_or_else(|| whole_credits(job.credits_used));
                    due.push((self.charged_at(job), credits, job.model().to_owned(), job.id.clone()));
                    false
                }
                _ => true,
            }
        });
        if due.is_empty() {
            return;
        }
        for (at, credits, model, id) in due {
            if credits > 0 {
                push(state, at, "CHARGE", "MODEL_USAGE", credits, Some(model), Some(id));
            }
        }
        state.ledger.sort_by_key(LedgerEntry::position);
    }

    /// Test helper: a charge this simulator's callers never saw. A job of
    /// `model` that the first key created directly (no
    /// `X-Client-Request-Id`), completed now at `credits`: it is in
    /// `GET /v2/logs` without a client request id, polls as `completed`, and
    /// its charge goes on the ledger as any other (after
    /// [`SimConfig::ledger_delay`]). It counts in [`Stats::jobs_created`]
    /// but not as a create request. Returns its generation id.
    ///
    /// [`Stats::jobs_created`]: crate::Stats::jobs_created
    pub fn add_foreign_charge(&self, model: &str, credits: u64) -> String {
        let now = self.virtual_now();
        let wall = self.wall_now();
        let id = uuid::Uuid::new_v4().to_string();
        let job = Job::completed(id.clone(), model.to_owned(), 0, now, wall, credits as f64);
        {
            let mut state = self.lock();
            if let Some(balance) = state.credit_balance.as_mut() {
                *balance -= credits as f64;
            }
            state.jobs.insert(id.clone(), job);
            state.unbilled.insert(id.clone());
            state.stats.jobs_created += 1;
        }
        self.log_create(0, model.to_owned(), uuid::Uuid::new_v4().to_string(), None, Some(id.clone()));
        id
    }

    /// Test helper: the ledger charges job `id` `credits` instead of what
    /// its answer reports (`meta.usage.credits_used`), as a billing error
    /// upstream would; `0` leaves it off the ledger altogether (an amount is
    /// always positive, so nothing moved). Applies whether or not the charge
    /// is recorded yet. Returns `false` if there is no such job or it
    /// failed (a failed job is never charged).
    pub fn charge_differently(&self, id: &str, credits: u64) -> bool {
        let now = self.virtual_now();
        let mut state = self.lock();
        let Some(job) = state.jobs.get_mut(id).filter(|job| job.status(now) != Status::Error) else {
            return false;
        };
        job.charge_override = Some(credits);
        let recorded = state
            .ledger
            .iter()
            .position(|e| e.kind == "MODEL_USAGE" && e.reference_id.as_deref() == Some(id));
        match recorded {
            Some(at) if credits == 0 => {
                state.ledger.remove(at);
            }
            Some(at) => state.ledger[at].credits = credits,
            None => {}
        }
        true
    }

    /// One page of the ledger, newest first, and the cursor after it.
    fn ledger_page(&self, query: &LedgerQuery) -> (Vec<LedgerEntry>, Option<(SystemTime, u64)>) {
        let now = self.virtual_now();
        let mut state = self.lock();
        self.settle_ledger(&mut state, now);
        let mut matching = state
            .ledger
            .iter()
            .rev()
            .filter(|e| query.after.is_none_or(|after| e.position() < after))
            .filter(|e| query.from.is_none_or(|from| e.created_at >= from))
            .filter(|e| query.to.is_none_or(|to| e.created_at < to))
            .filter(|e| query.direction.is_none_or(|d| e.direction == d))
            .filter(|e| query.kind.is_none_or(|k| e.kind == k));
        let page: Vec<LedgerEntry> = matching.by_ref().take(query.limit).cloned().collect();
        let more = matching.next().is_some();
        let next = if more { page.last().map(LedgerEntry::position) } else { None };
        (page, next)
    }
}

/// A parsed query.
#[derive(Debug)]
struct LedgerQuery {
    from: Option<SystemTime>,
    to: Option<SystemTime>,
    direction: Option<&'static str>,
    kind: Option<&'static str>,
    limit: usize,
    /// Only entries before this position (from the cursor).
    after: Option<(SystemTime, u64)>,
}

impl LedgerQuery {
    /// Validates as the upstream's zod schema does (every issue at once,
    /// "Query validation error"), then the rules between values.
    fn parse(uri: &Uri) -> Result<LedgerQuery, ApiError> {
        let pairs: Vec<(String, String)> = uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let mut issues = Vec::new();
        // A repeated parameter reaches the validator as an array.
        let mut one = |name: &'static str| -> Option<String> {
            let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone());
            let first = values.next()?;
            if values.next().is_some() {
                issues.push(
                    Issue::new(&[name.into()], "invalid_type", "Expected string, received array")
                        .with("expected", "string")
                        .with("received", "array"),
                );
                return None;
            }
            Some(first)
        };
        let (from, to, direction, kind, limit, cursor) =
            (one("from"), one("to"), one("direction"), one("type"), one("limit"), one("cursor"));

        let instant = |name: &'static str, value: Option<String>, issues: &mut Vec<Issue>| {
            let value = value?;
            let parsed = parse_datetime(&value);
            if parsed.is_none() {
                issues.push(
                    Issue::new(&[name.into()], "invalid_string", "Invalid datetime")
                        .with("validation", "datetime"),
                );
            }
            parsed
        };
        let from = instant("from", from, &mut issues);
        let to = instant("to", to, &mut issues);
        let choice =
            |name: &'static str, value: Option<String>, options: &[&'static str], issues: &mut Vec<Issue>| {
                let value = value?;
                let found = options.iter().copied().find(|o| *o == value);
                if found.is_none() {
                    let expected = options.iter().map(|o| format!("'{o}'")).collect::<Vec<_>>().join(" | ");
                    issues.push(
                        Issue::new(
                            &[name.into()],
                            "invalid_enum_value",
                            format!("Invalid enum value. Expected {expected}, received '{value}'"),
                        )
                        .with("options", options.to_vec())
                        .with("received", value),
                    );
                }
                found
            };
        let direction = choice("direction", direction, &DIRECTIONS, &mut issues);
        let kind = choice("type", kind, &TYPES, &mut issues);
        let limit = match limit {
            None => 50,
            Some(value) => parse_limit(&value).map_err(|issue| issues.push(issue)).unwrap_or(50),
        };
        if !issues.is_empty() {
            return Err(ApiError::with_issues(
                400,
                "Query validation error",
                issues.iter().map(Issue::to_json),
            ));
        }
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            return Err(ApiError::new(400, "Invalid window: `to` must be later than `from`"));
        }
        let after = match cursor {
            None => None,
            Some(cursor) => Some(decode_cursor(&cursor).ok_or_else(|| {
                ApiError::new(
                    400,
                    "Invalid cursor: pass pagination.next_cursor back exactly as it was returned",
                )
            })?),
        };
        Ok(LedgerQuery { from, to, direction, kind, limit, after })
    }
}

/// `limit` as zod's coerced integer from 1 to 100 checks it.
fn parse_limit(value: &str) -> Result<usize, Issue> {
    let path = ["limit".into()];
    let number: f64 = match value.trim() {
        "" => 0.0,
        v => v.parse().unwrap_or(f64::NAN),
    };
    if number.is_nan() {
        return Err(Issue::new(&path, "invalid_type", "Expected number, received nan")
            .with("expected", "number")
            .with("received", "nan"));
    }
    if number.fract() != 0.0 {
        return Err(Issue::new(&path, "invalid_type", "Expected integer, received float")
            .with("expected", "integer")
            .with("received", "float"));
    }
    let bound = |code: &'static str, key: &'static str, n: u64, words: &str| {
        Issue::new(&path, code, format!("Number must be {words} {n}"))
            .with(key, n)
            .with("type", "number")
            .with("inclusive", true)
            .with("exact", false)
    };
    if number < 1.0 {
        return Err(bound("too_small", "minimum", 1, "greater than or equal to"));
    }
    if number > 100.0 {
        return Err(bound("too_big", "maximum", 100, "less than or equal to"));
    }
    Ok(number as usize)
}

/// ISO-8601 with an offset, as zod's `datetime({ offset: true })` takes
/// it: `YYYY-MM-DDTHH:MM:SS`, optional fraction, then `Z` or `±HH[[:]MM]`.
/// A time without an offset is refused.
fn parse_datetime(value: &str) -> Option<SystemTime> {
    let bytes = value.as_bytes();
    let digits =
        |range: std::ops::Range<usize>| bytes.get(range).is_some_and(|b| b.iter().all(u8::is_ascii_digit));
    let shaped = digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(7) == Some(&b'-')
        && digits(8..10)
        && bytes.get(10) == Some(&b'T')
        && digits(11..13)
        && bytes.get(13) == Some(&b':')
        && digits(14..16)
        && bytes.get(16) == Some(&b':')
        && digits(17..19);
    if !shaped {
        return None;
    }
    let mut rest = &value[19..];
    let mut fraction = "";
    if let Some(after_dot) = rest.strip_prefix('.') {
        let n = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        fraction = &rest[..=n];
        rest = &after_dot[n..];
    }
    let local = humantime::parse_rfc3339_weak(&format!("{}{fraction}", &value[..19])).ok()?;
    let offset_secs = match rest {
        "Z" => 0i64,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let offset = &rest[1..];
            let (h, m) = match offset.len() {
                2 => (offset, "00"),
                4 => (&offset[..2], &offset[2..]),
                5 if offset.as_bytes()[2] == b':' => (&offset[..2], &offset[3..]),
                _ => return None,
            };
            if !(h.bytes().all(|b| b.is_ascii_digit()) && m.bytes().all(|b| b.is_ascii_digit())) {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60)
        }
    };
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    // Local time minus its offset is UTC.
    if offset_secs >= 0 { local.checked_sub(shift) } else { local.checked_add(shift) }
}

/// What a cursor holds: the position of the last entry of its page.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cursor {
    v: u64,
    c: String,
    i: u64,
}

fn encode_cursor((at, seq): (SystemTime, u64)) -> String {
    let json = format!(r#"{{"v":1,"c":"{}","i":{seq}}}"#, humantime::format_rfc3339_millis(at));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// A cursor this simulator issued, in exactly the form it issued it.
fn decode_cursor(cursor: &str) -> Option<(SystemTime, u64)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let parsed: Cursor = serde_json::from_slice(&bytes).ok()?;
    if parsed.v != 1 {
        return None;
    }
    let at = humantime::parse_rfc3339(&parsed.c).ok()?;
    let position = (at, parsed.i);
    (encode_cursor(position) == cursor).then_some(position)
}

/// `GET /v2/billing/transactions`.
pub(crate) async fn transactions(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(e) = authenticate(&sim, &headers) {
        return e.into_response();
    }
    let query = match LedgerQuery::parse(&uri) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    let (page, next) = sim.ledger_page(&query);
    let body = PageJson {
        data: page.iter().map(render).collect(),
        pagination: PaginationJson { next_cursor: next.map(encode_cursor), has_more: next.is_some() },
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_need_an_offset() {
        let utc = parse_datetime("2026-08-01T00:00:00Z").unwrap();
        assert_eq!(humantime::format_rfc3339(utc).to_string(), "2026-08-01T00:00:00Z");
        for same in ["2026-08-01T02:00:00+02:00", "2026-08-01T02:00:00+0200", "2026-08-01T02:00:00+02"] {
            assert_eq!(parse_datetime(same), Some(utc), "{same}");
        }
        assert_eq!(parse_datetime("2026-07-31T22:30:00-01:30"), Some(utc));
        let fine = parse_datetime("2026-08-01T00:00:00.250Z").unwrap();
        assert_eq!(fine.duration_since(utc).unwrap(), Duration::from_millis(250));
        for bad in [
            "2026-08-01T00:00:00",
            "2026-08-01",
            "2026-08-01 00:00:00Z",
            "2026-08-01T00:00Z",
            "2026-08-01T00:00:00z",
            "2026-08-01T00:00:00.Z",
            "2026-13-01T00:00:00Z",
            "2026-08-01T00:00:00+2:00",
            "yesterday",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn cursors_are_accepted_only_as_issued() {
        let at = parse_datetime("2026-08-17T10:00:00.000Z").unwrap();
        let cursor = encode_cursor((at, 7));
        assert_eq!(decode_cursor(&cursor), Some((at, 7)));
        let json =
            String::from_utf8(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cursor).unwrap());
        assert_eq!(json.unwrap(), r#"{"v":1,"c":"2026-08-17T10:00:00.000Z","i":7}"#);
        let padded = base64::engine::general_purpose::URL_SAFE
            .encode(base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&cursor).unwrap());
        let spaced = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"v":1, "c":"2026-08-17T10:00:00.000Z","i":7}"#);
        let other_version = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"v":2,"c":"2026-08-17T10:00:00.000Z","i":7}"#);
        // The documentation's own example has no position within its millisecond.
        let documented = "eyJ2IjoxLCJjIjoiMjAyNi0wOC0xN1QxMDowMDowMC4wMDBaIn0";
        for bad in [padded.as_str(), &spaced, &other_version, documented, "", "not base64!"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn limits_are_checked_as_zod_checks_them() {
        assert_eq!(parse_limit("1").unwrap(), 1);
        assert_eq!(parse_limit("100").unwrap(), 100);
        let code = |v: &str| parse_limit(v).unwrap_err().code;
        assert_eq!(code("0"), "too_small");
        assert_eq!(code("101"), "too_big");
        assert_eq!(code("2.5"), "invalid_type");
        assert_eq!(parse_limit("abc").unwrap_err().message, "Expected number, received nan");
    }
}
