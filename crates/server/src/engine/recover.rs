//! Finds creates whose outcome is unknown in the upstream's request logs.
//!
//! Every create goes upstream with the job's local id as its
//! `X-Client-Request-Id`, and the upstream logs it (`GET /v2/logs`) with the
//! generation it made. So a create whose answer was lost (a timeout, a 5xx
//! after acceptance, a crash mid-request) is looked up there: one pass over
//! the logs per round for every `unknown` job. A found job gets its
//! generation id and is followed like any other (a member repeating the
//! create with its Idempotency-Key now gets it); a create the upstream
//! logged as refused is forgotten, as a refusal answered at once would be.
//! A job the logs do not hold stays `unknown` and is looked up again next
//! round: the logs lag the API, and nothing paid is ever given up on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aimlvid::{ClientRequestId, Generation, Receipt};
use tokio_util::sync::CancellationToken;

use crate::engine::scheduler::{FollowJob, Scheduler};
use crate::engine::settle::Settle;
use crate::store::{JobRecord, JobWrite, Store, WriteOutcome};

/// What looking unknown creates up, and adopting the ones found, needs.
#[derive(Debug, Clone)]
pub(crate) struct Recovery {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) upstream: aimlvid::Client,
    pub(crate) settle: Settle,
    pub(crate) scheduler: Scheduler,
    /// How long an unknown create keeps counting while the logs lack it.
    pub(crate) unknown_window: Duration,
}

/// How often unknown creates are looked up, by default.
pub(crate) const DEFAULT_RECOVER_INTERVAL: Duration = Duration::from_secs(60);

/// After this long without a log row, a create most likely never reached
/// the upstream: it gives its key's place and reservation back, and is
/// reported (once) for an operator to look at. Unless configured otherwise.
pub(crate) const DEFAULT_UNKNOWN_WINDOW: Duration = Duration::from_secs(30 * 60);

/// A receipt as stored with its job.
pub(crate) fn receipt_json(receipt: &Receipt) -> String {
    serde_json::json!({
        "inference_id": receipt.inference_id,
        "credits": receipt.credits_used,
        "usd": receipt.usd_spent,
    })
    .to_string()
}

/// Looks unknown creates up every `every` until `stop`.
pub(crate) async fn run(state: Recovery, every: Duration, stop: CancellationToken) {
    let mut reported = std::collections::HashSet::new();
    // The first round one interval after start: a create that just failed
    // is not in the logs yet anyway.
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = recover_once(&state, &mut reported).await {
            tracing::warn!(error = %e, "could not look unknown creates up in the upstream's logs; trying again later");
        }
    }
}

/// One round; returns how many unknown creates were resolved.
pub(crate) async fn recover_once(
    state: &Recovery,
    reported: &mut std::collections::HashSet<String>,
) -> Result<usize, Box<dyn std::error::Error + Send + Sync>> {
    let unknown = state.store.unknown_jobs().await?;
    if unknown.is_empty() {
        return Ok(0);
    }
    let by_id: HashMap<&str, &JobRecord> = unknown.iter().map(|j| (j.local_id.as_str(), j)).collect();
    let ids: Vec<ClientRequestId> =
        unknown.iter().filter_map(|j| ClientRequestId::new(j.local_id.clone()).ok()).collect();
    let oldest = unknown.iter().map(|j| j.created_at).min().unwrap_or(0);
    let since = UNIX_EPOCH + Duration::from_secs(u64::try_from(oldest).unwrap_or(0));
    let rows = state.upstream.find_logged_creates(&ids, None, since).await?;
    let mut resolved = 0;
    let mut resolved_now = std::collections::HashSet::new();
    for row in rows {
        let Some(job) = row.client_request_id.as_deref().and_then(|id| by_id.get(id)) else { continue };
        resolved_now.insert(job.local_id.as_str());
        match state.upstream.poll_once(&row.inference_id).await {
            Ok(generation) => {
                if adopt(state, job, generation).await {
                    resolved += 1;
                }
            }
            Err(aimlvid::Error::NotFound { .. }) if row.failed() => {
                tracing::info!(local_id = %job.local_id, "an unknown create was refused upstream; nothing was charged");
                state.settle.writer.write(JobWrite::Abandon { local_id: job.local_id.clone() }).await?;
                state.settle.reservations.give_back_unknown(&job.local_id);
                resolved += 1;
            }
            Err(e) => {
                tracing::warn!(local_id = %job.local_id, generation_id = %row.inference_id, error = %e,
                    "found an unknown create upstream but could not read it; trying again later");
            }
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    for job in &unknown {
        let age = Duration::from_secs(u64::try_from(now - job.created_at).unwrap_or(0));
        if age < state.unknown_window || resolved_now.contains(job.local_id.as_str()) {
            continue;
        }
        // Past the window, it most likely never reached the upstream: its
        // key's place and reservation go back, once; it is still looked up.
        if !job.hold_released {
            let release = JobWrite::ReleaseHold { local_id: job.local_id.clone() };
            if let WriteOutcome::HoldReleased(true) = state.settle.writer.write(release).await? {
                state.settle.reservations.give_back_unknown(&job.local_id);
            }
        }
        if reported.insert(job.local_id.clone()) {
            tracing::warn!(local_id = %job.local_id, key_id = job.key_id, age_secs = age.as_secs(),
                "an unknown create is still not in the upstream's request logs: it most likely never \
                 reached the upstream, and no longer counts against its key; still looking");
        }
    }
    if resolved > 0 {
        tracing::info!(
            resolved,
            left = unknown.len() - resolved,
            "unknown creates found in the upstream's logs"
        );
    }
    Ok(resolved)
}

/// Gives an unknown job the generation the logs say it made, and follows
/// it; false if storage did not take it (it stays unknown, looked up again).
pub(crate) async fn adopt(state: &Recovery, job: &JobRecord, generation: Generation) -> bool {
    let body = serde_json::to_string(&generation).unwrap_or_default();
    let created = JobWrite::Created {
        local_id: job.local_id.clone(),
        generation_id: generation.id.clone(),
        status: generation.status.as_str().to_owned(),
        body,
        receipt: None,
    };
    if let Err(e) = state.settle.writer.write(created).await {
        tracing::error!(local_id = %job.local_id, generation_id = %generation.id, error = %e,
            "could not record a recovered create");
        return false;
    }
    tracing::info!(local_id = %job.local_id, generation_id = %generation.id, "recovered an unknown create");
    // Its place and reservation were kept while it was unknown, and now
    // belong to the running job; if they were given back (the lookup window
    // passed, or this server started since, or a shared store holds them),
    // it counts here again now.
    state.settle.reservations.adopt(job, &generation.id);
    if generation.status.is_finished() {
        state.settle.record(job.key_id, &generation).await;
    } else {
        state.settle.views.put(&generation.id, crate::view::JobView::new(job.key_id, &generation));
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        state.scheduler.follow(FollowJob {
            id: generation.id.clone(),
            key_id: job.key_id,
            model: job.model.clone(),
            age: Duration::from_secs(u64::try_from(now - job.created_at).unwrap_or(0)),
            status: generation.status.clone(),
            fresh: false,
        });
    }
    true
}
