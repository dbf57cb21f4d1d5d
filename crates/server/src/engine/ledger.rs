//! The server's own reconciliation ([`crate::reconcile`]): once a day, and
//! when the admin asks. A lost create it finds (a charge the request logs
//! tie to one of this server's `unknown` jobs) is adopted at once: recorded,
//! followed and charged to its key, as the recovery round would. The last
//! result is kept for the admin page, the admin API and `/metrics`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::engine::recover::Recovery;
use crate::metrics::Metrics;
use crate::reconcile::{FindingKind, ReconcileError, Reconciliation};

/// What reconciling needs: recovery's handles (to read and to adopt), the
/// metrics, and where the last result is kept. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reconciler {
    pub(crate) recovery: Recovery,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) last: LastReconciliation,
    /// How far back a reconciliation looks, unless asked otherwise.
    pub(crate) window: Duration,
}

/// How often the server reconciles, unless configured otherwise.
pub const DEFAULT_RECONCILE_INTERVAL: Duration = Duration::from_secs(86_400);

/// The first reconciliation comes this long after start: the server has
/// resumed its jobs by then, and a restart loop does not read the ledger
/// on every start.
const FIRST_RECONCILE: Duration = Duration::from_secs(5 * 60);

/// The last reconciliation the server made, and how it went.
#[derive(Debug, Clone, Default)]
pub struct LastReconciliation(Arc<Mutex<ReconcileRun>>);

/// The last reconciliations: the last that was made, and a failure since.
#[derive(Debug, Clone, Default)]
pub struct ReconcileRun {
    /// The last reconciliation made: when (unix seconds), and its result.
    /// A failure later does not hide it.
    pub made: Option<(i64, Arc<Reconciliation>)>,
    /// The last attempt, if it failed after `made`: when, and why.
    pub failed: Option<(i64, String)>,
}

impl LastReconciliation {
    /// The last runs, if there was one.
    pub fn get(&self) -> Option<ReconcileRun> {
        let runs = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        (runs.made.is_some() || runs.failed.is_some()).then_some(runs)
    }

    fn made(&self, at: i64, report: Arc<Reconciliation>) -> Option<Arc<Reconciliation>> {
        let mut runs = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        runs.failed = None;
        runs.made.replace((at, report)).map(|(_, before)| before)
    }

    fn failed(&self, at: i64, why: String) {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).failed = Some((at, why));
    }
}

/// Reconciles every `every`, over the reconciler's window, until `stop`.
pub(crate) async fn run(state: Reconciler, every: Duration, stop: CancellationToken) {
    let window = state.window;
    let first = tokio::time::Instant::now() + FIRST_RECONCILE.min(every);
    let mut tick = tokio::time::interval_at(first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Its failure is logged and kept by `reconcile_now`; the next day retries.
        let _ = reconcile_now(&state, window).await;
    }
}

/// Reconciles the last `window` now, adopts the lost creates found, and
/// keeps the result.
pub async fn reconcile_now(
    state: &Reconciler,
    window: Duration,
) -> Result<Arc<Reconciliation>, ReconcileError> {
    let since = SystemTime::now().checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let recovery = &state.recovery;
    let result = crate::reconcile::reconcile(recovery.store.as_ref(), &recovery.upstream, since).await;
    let at = crate::calendar::unix_now();
    let mut report = match result {
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(error = %e, "could not reconcile with the upstream's ledger; trying again at the next run");
            state.metrics.reconciliation_failed();
            state.last.failed(at, e.to_string());
            return Err(e);
        }
    };
    adopt_lost_creates(recovery, &mut report).await;
    state.metrics.reconciled(&report);
    let report = Arc::new(report);
    let before = state.last.made(at, report.clone());
    // A difference is logged once, when a run first finds it; the admin
    // page, the admin API and /metrics show every one each time.
    let new: Vec<_> = report
        .findings
        .iter()
        .filter(|line| {
            before.as_ref().is_none_or(|b| {
                !b.findings.iter().any(|f| f.kind == line.kind && f.generation_id == line.generation_id)
            })
        })
        .collect();
    for line in &new {
        tracing::warn!(
            kind = line.kind.as_str(),
            generation_id = %line.generation_id,
            model = %line.model,
            key = line.key.as_deref().unwrap_or("-"),
            proxy_credits = line.proxy_credits,
            proxy_usd = line.proxy_usd.as_deref(),
            ledger_credits = line.ledger_credits,
            ledger_usd = line.ledger_usd.as_deref(),
            adopted = line.adopted,
            "reconciliation: {}",
            line.kind.describe()
        );
    }
    tracing::info!(
        findings = report.findings.len(),
        new = new.len(),
        proxy_credits = report.total.proxy_credits,
        ledger_credits = report.total.ledger_credits,
        "reconciled this server's charges with the upstream's ledger"
    );
    Ok(report)
}

/// Records each lost create's generation on its job, as the recovery
/// round would have; one that cannot be read now is left for that round.
async fn adopt_lost_creates(state: &Recovery, report: &mut Reconciliation) {
    if report.count(FindingKind::LostCreate) == 0 {
        return;
    }
    let unknown = match state.store.unknown_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the unknown creates to adopt; the recovery round will");
            return;
        }
    };
    for line in report.findings.iter_mut().filter(|f| f.kind == FindingKind::LostCreate) {
        let Some(job) = unknown.iter().find(|j| Some(&j.local_id) == line.local_id.as_ref()) else {
            continue;
        };
        match state.upstream.poll_once(&line.generation_id).await {
            Ok(generation) => line.adopted = crate::engine::recover::adopt(state, job, generation).await,
            Err(e) => {
                tracing::warn!(local_id = %job.local_id, generation_id = %line.generation_id, error = %e,
                "a lost create's generation could not be read; the recovery round will try again")
            }
        }
    }
}
