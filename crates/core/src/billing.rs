//! The account's ledger (`GET /v2/billing/transactions`): every movement
//! of the balance, newest first, with the generation id each charge is for.
//! What the API actually billed, to compare with what the jobs reported.

use std::fmt;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::credits::Credits;
use crate::error::{Error, Result};
use crate::observe::CallKind;

/// Which way money moved.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum Direction {
    /// `TOPUP`: money in.
    Topup,
    /// `CHARGE`: money out.
    Charge,
    /// A direction this version does not know, kept as the API wrote it.
    Other(String),
}

impl Direction {
    /// The API's name: `TOPUP`, `CHARGE`, or the unknown one as written.
    pub fn as_str(&self) -> &str {
        match self {
            Direction::Topup => "TOPUP",
            Direction::Charge => "CHARGE",
            Direction::Other(other) => other,
        }
    }
}

impl From<String> for Direction {
    fn from(name: String) -> Direction {
        match name.as_str() {
            "TOPUP" => Direction::Topup,
            "CHARGE" => Direction::Charge,
            _ => Direction::Other(name),
        }
    }
}

impl From<Direction> for String {
    fn from(direction: Direction) -> String {
        direction.as_str().to_owned()
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What produced a ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum TransactionType {
    /// `PAYMENT`: a top-up paid for.
    Payment,
    /// `BONUS`: credits given.
    Bonus,
    /// `REFUND`: money given back.
    Refund,
    /// `ADJUSTMENT`: a manual correction.
    Adjustment,
    /// `MODEL_USAGE`: a request billed; its `reference_id` is the inference
    /// id, which for a video generation is the generation id.
    ModelUsage,
    /// `CREDITS_EXPIRED`: credits that lapsed.
    CreditsExpired,
    /// `INIT`: the account's opening balance.
    Init,
    /// A type this version does not know, kept as the API wrote it.
    Other(String),
}

impl TransactionType {
    /// The API's name, such as `MODEL_USAGE`.
    pub fn as_str(&self) -> &str {
        match self {
            TransactionType::Payment => "PAYMENT",
            TransactionType::Bonus => "BONUS",
            TransactionType::Refund => "REFUND",
            TransactionType::Adjustment => "ADJUSTMENT",
            TransactionType::ModelUsage => "MODEL_USAGE",
            TransactionType::CreditsExpired => "CREDITS_EXPIRED",
            TransactionType::Init => "INIT",
            TransactionType::Other(other) => other,
        }
    }
}

impl From<String> for TransactionType {
    fn from(name: String) -> TransactionType {
        match name.as_str() {
            "PAYMENT" => TransactionType::Payment,
            "BONUS" => TransactionType::Bonus,
            "REFUND" => TransactionType::Refund,
            "ADJUSTMENT" => TransactionType::Adjustment,
            "MODEL_USAGE" => TransactionType::ModelUsage,
            "CREDITS_EXPIRED" => TransactionType::CreditsExpired,
            "INIT" => TransactionType::Init,
            _ => TransactionType::Other(name),
        }
    }
}

impl From<TransactionType> for String {
    fn from(kind: TransactionType) -> String {
        kind.as_str().to_owned()
    }
}

impl fmt::Display for TransactionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much moved, always positive ([`Transaction::direction`] carries
/// the sign).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Amount {
    /// In US dollars, as the API wrote it.
    pub usd: f64,
    /// In credits: the exact figure ([`Credits::usd_decimal`] writes it
    /// in dollars without rounding).
    pub credits: Credits,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Transaction {
    /// When it was recorded (UTC, as the API wrote it); see
    /// [`Transaction::created_at_time`].
    pub created_at: String,
    /// Money in or out.
    pub direction: Direction,
    /// What produced it.
    #[serde(rename = "type")]
    pub kind: TransactionType,
    /// How much moved.
    pub amount: Amount,
    /// The model a charge was for; `None` on top-ups, on charges that are
    /// not model usage, and when the API could not tell.
    #[serde(default)]
    pub model: Option<String>,
    /// What ties it to your records: for [`TransactionType::ModelUsage`]
    /// the inference id (a video generation's id), for a payment its
    /// transaction id; `None` for bonuses, expiries and adjustments.
    #[serde(default)]
    pub reference_id: Option<String>,
}

impl Transaction {
    /// [`Transaction::created_at`] as a time; `None` if the API wrote it in
    /// a form this version cannot read.
    pub fn created_at_time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(self.created_at.trim_end_matches(['Z', 'z'])).ok()
    }

    /// Whether it is a charge for a request, such as a generation
    /// (`CHARGE` of type `MODEL_USAGE`): what a job's reported cost is
    /// compared with.
    pub fn is_model_charge(&self) -> bool {
        self.direction == Direction::Charge && self.kind == TransactionType::ModelUsage
    }

    /// The signed amount: negative for money out.
    pub fn signed_credits(&self) -> Credits {
        match self.direction {
            Direction::Charge => -self.amount.credits,
            _ => self.amount.credits,
        }
    }
}

/// One page of the ledger.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TransactionPage {
    /// Its entries, newest first.
    pub data: Vec<Transaction>,
    /// Passed back as [`TransactionQuery::cursor`], the next page; `None`
    /// on the last.
    pub next_cursor: Option<String>,
    /// Whether another page follows.
    pub has_more: bool,
}

/// The answer as the API shapes it.
#[derive(Deserialize)]
struct WirePage {
    data: Vec<Transaction>,
    pagination: WirePagination,
}

#[derive(Deserialize)]
struct WirePagination {
    #[serde(default)]
    next_cursor: Option<String>,
    has_more: bool,
}

/// Which ledger entries to list. Every filter is optional; the default
/// lists everything, 50 a page.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// let week_ago = SystemTime::now() - Duration::from_secs(7 * 86_400);
/// let query = aimlvid::TransactionQuery::model_charges().from(week_ago).limit(100);
/// # let _ = query;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransactionQuery {
    /// Entries recorded at or after this moment.
    pub from: Option<SystemTime>,
    /// Entries recorded before this moment (later than `from`).
    pub to: Option<SystemTime>,
    /// Only money in, or only money out.
    pub direction: Option<Direction>,
    /// Only entries of this kind.
    pub kind: Option<TransactionType>,
    /// Entries a page, 1 to 100 (the API's default is 50).
    pub limit: Option<u8>,
    /// Where to continue: a page's [`TransactionPage::next_cursor`], verbatim.
    pub cursor: Option<String>,
}

impl TransactionQuery {
    /// Every entry.
    pub fn new() -> TransactionQuery {
        TransactionQuery::default()
    }

    /// The charges for requests (`CHARGE`, `MODEL_USAGE`): one a billed
    /// generation, under its id.
    pub fn model_charges() -> TransactionQuery {
        TransactionQuery::new().direction(Direction::Charge).kind(TransactionType::ModelUsage)
    }

    /// Only entries recorded at or after `from`.
    pub fn from(mut self, from: SystemTime) -> Self {
        self.from = Some(from);
        self
    }

    /// Only entries recorded before `to`.
    pub fn to(mut self, to: SystemTime) -> Self {
        self.to = Some(to);
        self
    }

    /// Only entries moving money this way.
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = Some(direction);
        self
    }

    /// Only entries of this kind.
    pub fn kind(mut self, kind: TransactionType) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Entries a page, 1 to 100.
    pub fn limit(mut self, limit: u8) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continue after the page that gave this cursor.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// The query string, after the checks the API would otherwise make.
    fn to_query(&self) -> Result<Vec<(&'static str, String)>> {
        if let Some(limit) = self.limit
            && !(1..=100).contains(&limit)
        {
            return Err(Error::InvalidInput(format!(
                "a ledger page holds 1 to 100 entries, not {limit}; nothing was sent"
            )));
        }
        if let (Some(from), Some(to)) = (self.from, self.to)
            && to <= from
        {
            return Err(Error::InvalidInput(
                "the ledger window must end (`to`) later than it starts (`from`); nothing was sent".into(),
            ));
        }
        let time = |t: SystemTime| humantime::format_rfc3339_millis(t).to_string();
        let mut query = Vec::new();
        if let Some(from) = self.from {
            query.push(("from", time(from)));
        }
        if let Some(to) = self.to {
            query.push(("to", time(to)));
        }
        if let Some(direction) = &self.direction {
            query.push(("direction", direction.as_str().to_owned()));
        }
        if let Some(kind) = &self.kind {
            query.push(("type", kind.as_str().to_owned()));
        }
        if let Some(limit) = self.limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            query.push(("cursor", cursor.clone()));
        }
        Ok(query)
    }
}

/// An answer that would make a walk through the pages go wrong.
fn broken_pages(reason: &str) -> Error {
    Error::Decode { status: 200, reason: format!("the ledger's pagination {reason}"), excerpt: String::new() }
}

impl Client {
    /// One page of the account's ledger (`GET /v2/billing/transactions`),
    /// newest first, as `query` filters it; retried like a poll. The API
    /// records a generation's charge after the job reports `completed`, so
    /// a charge missing just after is late, not lost.
    ///
    /// A query the API would refuse (a limit outside 1 to 100, a window
    /// that ends before it starts) is refused with [`Error::InvalidInput`]
    /// before anything is sent.
    pub async fn billing_transactions(&self, query: &TransactionQuery) -> Result<TransactionPage> {
        let pairs = query.to_query()?;
        let url = url::Url::parse(self.base_url())
            .and_then(|base| base.join("v2/billing/transactions"))
            .map_err(|e| Error::Config(e.to_string()))?;
        let page: WirePage = self.get_json(&url, &pairs, CallKind::Billing).await?;
        Ok(TransactionPage {
            data: page.data,
            next_cursor: page.pagination.next_cursor,
            has_more: page.pagination.has_more,
        })
    }

    /// Every entry `query` selects, walking the pages from its cursor (if
    /// any) to the last, newest first. Entries recorded during the walk,
    /// being newer than its first page, are not included: walk again from
    /// the newest entry seen to catch them.
    pub async fn all_billing_transactions(&self, query: &TransactionQuery) -> Result<Vec<Transaction>> {
        let mut query = query.clone();
        let mut entries = Vec::new();
        let mut cursors = std::collections::HashSet::new();
        loop {
            let page = self.billing_transactions(&query).await?;
            entries.extend(page.data);
            if !page.has_more {
                return Ok(entries);
            }
            let Some(next) = page.next_cursor else {
                return Err(broken_pages("says more pages follow but gives no cursor"));
            };
            // A cursor handed out twice would walk the same pages for ever.
            if !cursors.insert(next.clone()) {
                return Err(broken_pages(&format!("handed out cursor {next:?} twice")));
            }
            query.cursor = Some(next);
        }
    }

    /// The charges for requests (generations among them) recorded since
    /// `from`, all pages, 100 at a time, newest first: what the account
    /// was billed, to set against what its jobs reported.
    pub async fn model_charges_since(&self, from: SystemTime) -> Result<Vec<Transaction>> {
        self.all_billing_transactions(&TransactionQuery::model_charges().from(from).limit(100)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn an_entry_reads_as_documented_and_keeps_unknown_names() {
        let entry: Transaction = serde_json::from_value(json!({
            "created_at": "2026-08-17T10:00:00.000Z",
            "direction": "CHARGE",
            "type": "MODEL_USAGE",
            "amount": {"usd": 1.56, "credits": 3_120_000},
            "model": "openai/gpt-5",
            "reference_id": "V1StGXR8Z5jdHi6BmyT8k",
        }))
        .unwrap();
        assert!(entry.is_model_charge());
        assert_eq!(entry.amount.credits, Credits::new(3_120_000));
        assert_eq!(entry.signed_credits(), Credits::new(-3_120_000));
        let at = entry.created_at_time().unwrap();
        assert_eq!(humantime::format_rfc3339_millis(at).to_string(), entry.created_at);

        let odd: Transaction = serde_json::from_value(json!({
            "created_at": "2026-08-17T10:00:00.000Z", "direction": "SIDEWAYS", "type": "GIFT",
            "amount": {"usd": 0.5, "credits": 1_000_000}, "model": null, "reference_id": null,
        }))
        .unwrap();
        assert_eq!(odd.direction, Direction::Other("SIDEWAYS".into()));
        assert_eq!(odd.kind.as_str(), "GIFT");
        assert_eq!(serde_json::to_value(&odd).unwrap()["type"], "GIFT", "written back as read");
        assert!(!odd.is_model_charge());
    }

    #[test]
    fn queries_are_checked_and_written_as_the_api_reads_them() {
        let from = SystemTime::UNIX_EPOCH + Duration::from_millis(1_786_960_800_250);
        let query =
            TransactionQuery::model_charges().from(from).to(from + Duration::from_secs(60)).limit(100);
        assert_eq!(
            query.to_query().unwrap(),
            [
                ("from", "2026-08-17T10:00:00.250Z".to_owned()),
                ("to", "2026-08-17T10:01:00.250Z".to_owned()),
                ("direction", "CHARGE".to_owned()),
                ("type", "MODEL_USAGE".to_owned()),
                ("limit", "100".to_owned()),
            ]
        );
        assert!(TransactionQuery::new().to_query().unwrap().is_empty());
        for bad in [TransactionQuery::new().limit(0), TransactionQuery::new().limit(101)] {
            assert!(matches!(bad.to_query(), Err(Error::InvalidInput(_))), "{bad:?}");
        }
        let backwards = TransactionQuery::new().from(from).to(from);
        assert!(matches!(backwards.to_query(), Err(Error::InvalidInput(m)) if m.contains("later")));
    }
}
