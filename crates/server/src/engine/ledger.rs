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
pub struct LastReconciliation(Arc<Mutex<Option<ReconcileRun>>>);

/// One reconciliation run.
#[derive(Debug, Clone)]
pub struct ReconcileRun {
    /// When it ended, unix seconds.
    pub at: i64,
    /// Its result, or why there is none.
    pub outcome: Result<Arc<Reconciliation>, String>,
}

impl LastReconciliation {
    /// The last run, if there was one.
    pub fn get(&self) -> Option<ReconcileRun> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set(&self, run: ReconcileRun) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(run);
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
            state.last.set(ReconcileRun { at, outcome: Err(e.to_string()) });
            return Err(e);
        }
    };
    adopt_lost_creates(recovery, &mut report).await;
    for line in &report.findings {
        tracing::warn!(
            kind = ?line.kind,
            generation_id = %line.generation_id,
            model = %line.model,
            key = line.key.as_deref().unwrap_or("-"),
            proxy_credits = line.proxy_credits.unwrap_or(0.0),
            ledger_credits = line.ledger_credits.unwrap_or(0),
            adopted = line.adopted,
            "reconciliation: {}",
            line.kind.describe()
        );
    }
    tracing::info!(
        findings = report.findings.len(),
        proxy_credits = report.total.proxy_credits,
        ledger_credits = report.total.ledger_credits,
        "reconciled this server's charges with the upstream's ledger"
    );
    state.metrics.reconciled(&report);
    let report = Arc::new(report);
    state.last.set(ReconcileRun { at, outcome: Ok(report.clone()) });
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
