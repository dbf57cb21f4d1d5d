//! Reconciliation: what this proxy charged its keys, set against what the
//! upstream billed the account.
//!
//! The proxy charges each job what its answer reported
//! (`meta.usage.credits_used`). The account's ledger
//! (`GET /v2/billing/transactions`) is what the upstream billed: one
//! `MODEL_USAGE` charge per generation, its `reference_id` the generation
//! id. A reconciliation reads both over a window and lists where they part,
//! one [`Finding`] per generation:
//! - a charge for a generation the proxy has no record of. Either a create
//!   whose answer was lost ([`FindingKind::LostCreate`]: the upstream's
//!   request logs tie the generation to one of this proxy's `unknown` jobs
//!   by its `X-Client-Request-Id`, and the server adopts it), or a charge
//!   made around this proxy with its key ([`FindingKind::ChargedOutside`]);
//! - a job the proxy charged that the ledger has no charge for, once the
//!   ledger has had [`LEDGER_GRACE`] to record it ([`FindingKind::Uncharged`]);
//! - a job the ledger charged a different amount ([`FindingKind::ChargedDifferently`]).
//!
//! And, per key and in total, the proxy's spend against the ledger's.
//! Gathering ([`reconcile`]) reads; it never writes. Adopting a lost
//! create is the running server's (`engine::ledger`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aimlvid::{ClientRequestId, Credits, Transaction};
use serde::Serialize;

use crate::store::{JobRecord, JobSummary, KeyId, Store, StoreError};

/// How far back a reconciliation looks, unless told otherwise.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(7 * 86_400);

/// How long after a job ends its charge may take to reach the ledger: a
/// job that ended more recently is not reported as uncharged yet.
pub const LEDGER_GRACE: Duration = Duration::from_secs(10 * 60);

/// Why a reconciliation could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The ledger or the request logs could not be read. (The cause is in
    /// the message, not a `source`, so that a report of the chain says it once.)
    #[error("could not read the upstream's ledger or logs: {0}")]
    Upstream(aimlvid::Error),
    /// The proxy's own records could not be read.
    #[error("could not read this server's jobs: {0}")]
    Store(StoreError),
}

impl From<aimlvid::Error> for ReconcileError {
    fn from(e: aimlvid::Error) -> Self {
        ReconcileError::Upstream(e)
    }
}

impl From<StoreError> for ReconcileError {
    fn from(e: StoreError) -> Self {
        ReconcileError::Store(e)
    }
}

/// What kind of difference a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Charged for a create of this proxy whose answer was lost.
    LostCreate,
    /// Charged for a generation this proxy never made.
    ChargedOutside,
    /// Charged by this proxy, but not on the ledger.
    Uncharged,
    /// On the ledger at a different amount than this proxy charged.
    ChargedDifferently,
}

impl FindingKind {
    /// Its name in JSON and in metrics, such as `lost_create`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::LostCreate => "lost_create",
            FindingKind::ChargedOutside => "charged_outside",
            FindingKind::Uncharged => "uncharged",
            FindingKind::ChargedDifferently => "charged_differently",
        }
    }

    /// What the line means, in a few words.
    pub fn describe(self) -> &'static str {
        match self {
            FindingKind::LostCreate => "a create of this proxy whose answer was lost",
            FindingKind::ChargedOutside => "charged outside this proxy",
            FindingKind::Uncharged => "charged by this proxy, not on the ledger",
            FindingKind::ChargedDifferently => "charged a different amount",
        }
    }
}

/// One generation whose charge differs between the proxy and the ledger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// What differs.
    pub kind: FindingKind,
    /// The upstream's id of the generation.
    pub generation_id: String,
    /// Its model, as the ledger or the proxy names it.
    pub model: String,
    /// This proxy's id of the job, if it has one.
    pub local_id: Option<String>,
    /// The name of the key that made it, if this proxy knows it.
    pub key: Option<String>,
    /// What this proxy charged; `None` if it charged nothing yet.
    pub proxy_credits: Option<f64>,
    /// `proxy_credits` in dollars.
    pub proxy_usd: Option<String>,
    /// What the ledger charged; `None` if nothing.
    pub ledger_credits: Option<i64>,
    /// `ledger_credits` in dollars.
    pub ledger_usd: Option<String>,
    /// For a lost create: whether the server has since recorded it, and
    /// follows and charges it as any other job.
    pub adopted: bool,
    /// The key's id, for the server's adoption; not shown.
    #[serde(skip)]
    pub(crate) key_id: Option<KeyId>,
}

/// Spend over the window, as the proxy and the ledger count it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spend {
    /// The key's name; `None` for the total.
    pub key: Option<String>,
    /// Credits this proxy charged for the jobs that ended in the window.
    pub proxy_credits: f64,
    /// `proxy_credits` in dollars.
    pub proxy_usd: String,
    /// Credits the ledger charged in the window.
    pub ledger_credits: i64,
    /// `ledger_credits` in dollars.
    pub ledger_usd: String,
}

impl Spend {
    fn new(key: Option<String>, proxy: f64, ledger: i64) -> Spend {
        Spend {
            key,
            proxy_credits: proxy,
            proxy_usd: usd(proxy),
            ledger_credits: ledger,
            ledger_usd: Credits::new(ledger).usd_decimal(),
        }
    }

    /// Whether the two agree to the credit.
    pub fn agrees(&self) -> bool {
        same_amount(self.proxy_credits, self.ledger_credits)
    }
}

/// A reconciliation's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconciliation {
    /// The window's start, unix seconds.
    pub since: i64,
    /// When it was made (the window's end), unix seconds.
    pub until: i64,
    /// Every difference, one per generation, by kind and then generation id.
    pub findings: Vec<Finding>,
    /// Per key that spent in the window, by name.
    pub keys: Vec<Spend>,
    /// All keys, and every model charge on the ledger.
    pub total: Spend,
}

impl Reconciliation {
    /// How many findings are of `kind`.
    pub fn count(&self, kind: FindingKind) -> usize {
        self.findings.iter().filter(|f| f.kind == kind).count()
    }
}

/// Reads the ledger's model charges and this proxy's jobs from `since` to
/// now, ties charges for unknown generations to this proxy's lost creates
/// through the request logs, and compares.
pub async fn reconcile(
    store: &dyn Store,
    upstream: &aimlvid::Client,
    since: SystemTime,
) -> Result<Reconciliation, ReconcileError> {
    let until = unix(SystemTime::now());
    let since_secs = unix(since);
    let charges: Vec<Transaction> =
        upstream.model_charges_since(since).await?.into_iter().filter(Transaction::is_model_charge).collect();
    let mut jobs = store.billed_jobs(since_secs).await?;
    // A charge in the window for a job that began and ended before it.
    let known: std::collections::HashSet<String> =
        jobs.iter().filter_map(|j| j.generation_id.clone()).collect();
    let mut strangers = Vec::new();
    for id in charges.iter().filter_map(|c| c.reference_id.as_deref()) {
        if known.contains(id) || strangers.iter().any(|s| s == id) {
            continue;
        }
        match store.generation_summary(id).await? {
            Some(job) => jobs.push(job),
            None => strangers.push(id.to_owned()),
        }
    }
    let lost = if strangers.is_empty() { HashMap::new() } else { lost_creates(store, upstream).await? };
    let names: HashMap<KeyId, String> = store.keys().await?.into_iter().map(|k| (k.id, k.name)).collect();
    Ok(compare(&Inputs {
        jobs: &jobs,
        charges: &charges,
        lost: &lost,
        names: &names,
        since: since_secs,
        until,
    }))
}

/// This proxy's creates with an unknown outcome that the request logs show
/// made a generation, by generation id.
async fn lost_creates(
    store: &dyn Store,
    upstream: &aimlvid::Client,
) -> Result<HashMap<String, JobRecord>, ReconcileError> {
    // Read-only (`unknown_jobs` would lease them on a shared store, and the
    // command runs beside live servers): the unknown creates, without the
    // followed jobs the upstream does not know, which have their generation.
    let unknown: Vec<JobRecord> = store
        .jobs_needing_attention()
        .await?
        .into_iter()
        .filter(|j| j.generation_id.is_none() && j.status == crate::store::status::UNKNOWN)
        .collect();
    if unknown.is_empty() {
        return Ok(HashMap::new());
    }
    let ids: Vec<ClientRequestId> =
        unknown.iter().filter_map(|j| ClientRequestId::new(j.local_id.clone()).ok()).collect();
    let oldest = unknown.iter().map(|j| j.created_at).min().unwrap_or(0);
    let sent = UNIX_EPOCH + Duration::from_secs(u64::try_from(oldest).unwrap_or(0));
    let rows = upstream.find_logged_creates(&ids, None, sent).await?;
    let mut by_local: HashMap<String, JobRecord> =
        unknown.into_iter().map(|j| (j.local_id.clone(), j)).collect();
    Ok(rows
        .into_iter()
        .filter(|row| !row.failed())
        .filter_map(|row| {
            let job = by_local.remove(row.client_request_id.as_deref()?)?;
            Some((row.inference_id, job))
        })
        .collect())
}

/// What [`compare`] sets side by side.
pub(crate) struct Inputs<'a> {
    /// The proxy's jobs that may have been billed in the window.
    pub jobs: &'a [JobSummary],
    /// The ledger's model charges in the window.
    pub charges: &'a [Transaction],
    /// Lost creates found in the logs, by generation id.
    pub lost: &'a HashMap<String, JobRecord>,
    /// Key names by id.
    pub names: &'a HashMap<KeyId, String>,
    /// The window, unix seconds.
    pub since: i64,
    pub until: i64,
}

/// The comparison itself, without input or output.
pub(crate) fn compare(inputs: &Inputs<'_>) -> Reconciliation {
    let Inputs { jobs, charges, lost, names, since, until } = *inputs;
    // Per generation: credits charged, and the model the ledger names.
    let mut ledger: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    let mut ledger_total = 0i64;
    let mut findings = Vec::new();
    for charge in charges {
        let credits = charge.amount.credits.get();
        ledger_total += credits;
        let model = charge.model.as_deref().unwrap_or("");
        match charge.reference_id.as_deref() {
            Some(id) => ledger.entry(id).or_insert((0, model)).0 += credits,
            // Nothing ties it to a generation, so nothing here can explain it.
            None => findings.push(finding(
                FindingKind::ChargedOutside,
                "",
                model,
                None,
                names,
                None,
                Some(credits),
            )),
        }
    }
    let by_generation: HashMap<&str, &JobSummary> =
        jobs.iter().filter_map(|j| Some((j.generation_id.as_deref()?, j))).collect();
    let mut ledger_per_key: HashMap<KeyId, i64> = HashMap::new();
    for (&id, &(credits, model)) in &ledger {
        if let Some(job) = by_generation.get(id) {
            *ledger_per_key.entry(job.key_id).or_default() += credits;
            let finished = aimlvid::Status::from(job.status.as_str()).is_finished();
            let proxy = job.credits_charged.unwrap_or(0.0);
            // An unfinished job is charged by the proxy when it ends.
            if finished && !same_amount(proxy, credits) {
                findings.push(finding(
                    FindingKind::ChargedDifferently,
                    id,
                    &job.model,
                    Some(job),
                    names,
                    Some(proxy),
                    Some(credits),
                ));
            }
        } else if let Some(job) = lost.get(id) {
            *ledger_per_key.entry(job.key_id).or_default() += credits;
            let mut line = finding(FindingKind::LostCreate, id, model, None, names, None, Some(credits));
            line.local_id = Some(job.local_id.clone());
            line.key = names.get(&job.key_id).cloned();
            line.key_id = Some(job.key_id);
            if line.model.is_empty() {
                line.model.clone_from(&job.model);
            }
            findings.push(line);
        } else {
            findings.push(finding(FindingKind::ChargedOutside, id, model, None, names, None, Some(credits)));
        }
    }
    let settled_by = until - LEDGER_GRACE.as_secs() as i64;
    let mut proxy_per_key: HashMap<KeyId, f64> = HashMap::new();
    for job in jobs {
        let Some(id) = job.generation_id.as_deref() else { continue };
        if !aimlvid::Status::from(job.status.as_str()).is_finished() || job.updated_at < since {
            continue;
        }
        let proxy = job.credits_charged.unwrap_or(0.0);
        *proxy_per_key.entry(job.key_id).or_default() += proxy;
        if !ledger.contains_key(id) && !same_amount(proxy, 0) && job.updated_at <= settled_by {
            findings.push(finding(
                FindingKind::Uncharged,
                id,
                &job.model,
                Some(job),
                names,
                Some(proxy),
                None,
            ));
        }
    }
    findings.sort_by(|a, b| (a.kind, &a.generation_id).cmp(&(b.kind, &b.generation_id)));
    let mut keys: Vec<Spend> = proxy_per_key
        .keys()
        .chain(ledger_per_key.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|id| {
            let name = names.get(id).cloned().unwrap_or_else(|| format!("key {id}"));
            Spend::new(
                Some(name),
                proxy_per_key.get(id).copied().unwrap_or(0.0),
                ledger_per_key.get(id).copied().unwrap_or(0),
            )
        })
        .collect();
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    // `+ 0.0`: an empty sum of floats is -0.0, which would print as "-0".
    let total = Spend::new(None, proxy_per_key.values().sum::<f64>() + 0.0, ledger_total);
    Reconciliation { since, until, findings, keys, total }
}

fn finding(
    kind: FindingKind,
    generation_id: &str,
    model: &str,
    job: Option<&JobSummary>,
    names: &HashMap<KeyId, String>,
    proxy: Option<f64>,
    ledger: Option<i64>,
) -> Finding {
    Finding {
        kind,
        generation_id: generation_id.to_owned(),
        model: model.to_owned(),
        local_id: job.map(|j| j.local_id.clone()),
        key: job.and_then(|j| names.get(&j.key_id).cloned()),
        proxy_credits: proxy,
        proxy_usd: proxy.map(usd),
        ledger_credits: ledger,
        ledger_usd: ledger.map(|c| Credits::new(c).usd_decimal()),
        adopted: false,
        key_id: job.map(|j| j.key_id),
    }
}

/// The proxy keeps credits as floating point; the ledger counts whole
/// credits. They agree when they round to the same credit.
fn same_amount(proxy: f64, ledger: i64) -> bool {
    (proxy - ledger as f64).abs() < 0.5
}

fn usd(credits: f64) -> String {
    Credits::from_f64_rounded(credits).unwrap_or_default().usd_decimal()
}

fn unix(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A ledger charge of `credits` for `generation`, for tests.
#[cfg(test)]
pub(crate) fn test_charge(generation: &str, credits: i64) -> Transaction {
    serde_json::from_value(serde_json::json!({
        "created_at": "2027-01-15T08:00:00.000Z",
        "direction": "CHARGE",
        "type": "MODEL_USAGE",
        "amount": {"usd": credits as f64 / 2e6, "credits": credits},
        "model": "google/veo3-1-fast-extend-video",
        "reference_id": generation,
    }))
    .expect("a ledger entry as documented")
}

#[cfg(test)]
mod tests {
    use super::*;
    const NOW: i64 = 1_800_000_000;

    fn job(
        local: &str,
        key: KeyId,
        generation: &str,
        status: &str,
        credits: Option<f64>,
        ended: i64,
    ) -> JobSummary {
        JobSummary {
            local_id: local.into(),
            key_id: key,
            generation_id: Some(generation.into()),
            status: status.into(),
            model: "google/veo3-1-fast-extend-video".into(),
            body: None,
            credits_charged: credits,
            note: None,
            prompt: None,
            input: None,
            created_at: ended - 60,
            updated_at: ended,
            params: None,
            inline_media: None,
            remixed_from: None,
            hidden_at: None,
        }
    }

    fn charge(generation: &str, credits: i64) -> Transaction {
        test_charge(generation, credits)
    }

    fn lost_job(local: &str, key: KeyId) -> JobRecord {
        JobRecord {
            local_id: local.into(),
            key_id: key,
            generation_id: None,
            status: "unknown".into(),
            model: "google/veo3-1-fast-extend-video".into(),
            body: None,
            idempotency_key: None,
            request_hash: vec![],
            credits_charged: None,
            created_at: NOW - 3600,
            receipt: None,
            note: None,
            hold_released: false,
            params: None,
            inline_media: None,
            remixed_from: None,
            hidden_at: None,
        }
    }

    fn run(
        jobs: &[JobSummary],
        charges: &[Transaction],
        lost: &HashMap<String, JobRecord>,
    ) -> Reconciliation {
        let names = HashMap::from([(1, "ana".to_owned()), (2, "bo".to_owned())]);
        compare(&Inputs { jobs, charges, lost, names: &names, since: NOW - 86_400, until: NOW })
    }

    #[test]
    fn matching_charges_report_nothing_and_spend_agrees() {
        let jobs = [job("l1", 1, "g1", "completed", Some(2480.0), NOW - 3600)];
        let report = run(&jobs, &[charge("g1", 2480)], &HashMap::new());
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(report.total, Spend::new(None, 2480.0, 2480));
        assert!(report.total.agrees());
        assert_eq!(report.total.ledger_usd, "0.00124");
        assert_eq!(report.keys.len(), 1);
        assert_eq!(report.keys[0].key.as_deref(), Some("ana"));
    }

    #[test]
    fn each_kind_of_difference_is_reported_once() {
        let jobs = [
            job("l1", 1, "g-diff", "completed", Some(1000.0), NOW - 3600),
            job("l2", 2, "g-uncharged", "completed", Some(500.0), NOW - 3600),
            job("l3", 2, "g-ok", "completed", Some(700.0), NOW - 3600),
        ];
        let charges = [
            charge("g-diff", 1500),
            charge("g-ok", 700),
            charge("g-foreign", 900),
            charge("g-lost", 300),
            charge("g-foreign", 100),
        ];
        let lost = HashMap::from([("g-lost".to_owned(), lost_job("l4", 1))]);
        let report = run(&jobs, &charges, &lost);
        let kinds: Vec<(FindingKind, &str)> =
            report.findings.iter().map(|f| (f.kind, f.generation_id.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (FindingKind::LostCreate, "g-lost"),
                (FindingKind::ChargedOutside, "g-foreign"),
                (FindingKind::Uncharged, "g-uncharged"),
                (FindingKind::ChargedDifferently, "g-diff"),
            ]
        );
        let foreign = &report.findings[1];
        assert_eq!((foreign.ledger_credits, foreign.key.as_deref()), (Some(1000), None));
        let lost = &report.findings[0];
        assert_eq!((lost.local_id.as_deref(), lost.key.as_deref()), (Some("l4"), Some("ana")));
        let diff = &report.findings[3];
        assert_eq!((diff.proxy_credits, diff.ledger_credits), (Some(1000.0), Some(1500)));
        assert_eq!(report.total.proxy_credits, 2200.0);
        assert_eq!(report.total.ledger_credits, 3500);
        let ana = report.keys.iter().find(|k| k.key.as_deref() == Some("ana")).unwrap();
        assert_eq!((ana.proxy_credits, ana.ledger_credits), (1000.0, 1800));
    }

    #[test]
    fn a_charge_late_to_the_ledger_is_not_reported_within_the_grace() {
        let jobs = [job("l1", 1, "g1", "completed", Some(800.0), NOW - 60)];
        assert!(run(&jobs, &[], &HashMap::new()).findings.is_empty());
        let jobs = [job("l1", 1, "g1", "completed", Some(800.0), NOW - LEDGER_GRACE.as_secs() as i64 - 1)];
        assert_eq!(run(&jobs, &[], &HashMap::new()).count(FindingKind::Uncharged), 1);
    }

    #[test]
    fn a_failed_job_the_ledger_charged_is_a_difference_and_a_running_one_is_not() {
        let jobs = [
            job("l1", 1, "g-failed", "error", Some(0.0), NOW - 3600),
            job("l2", 1, "g-running", "generating", None, NOW - 3600),
        ];
        let report = run(&jobs, &[charge("g-failed", 400), charge("g-running", 400)], &HashMap::new());
        let kinds: Vec<_> = report.findings.iter().map(|f| (f.kind, f.generation_id.as_str())).collect();
        assert_eq!(kinds, [(FindingKind::ChargedDifferently, "g-failed")]);
    }

    #[test]
    fn floating_point_credits_agree_with_whole_ones() {
        let jobs = [job("l1", 1, "g1", "completed", Some(2_480.000_000_1), NOW - 3600)];
        assert!(run(&jobs, &[charge("g1", 2480)], &HashMap::new()).findings.is_empty());
    }
}
