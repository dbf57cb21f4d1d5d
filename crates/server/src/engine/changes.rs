//! Other replicas' job changes, brought into this server's memory: on a
//! shared (PostgreSQL) store, the replica that polls a job stores each
//! change and announces it as it commits; every other replica that holds
//! the job in memory reads it again from the database and shows it (event
//! streams included). Jobs not in memory need nothing: a read of one goes
//! to the database anyway.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::store::Store;
use crate::view::{JobRequests, JobViews, view_of};

/// What bringing other replicas' changes in needs.
#[derive(Debug, Clone)]
pub(crate) struct Replicas {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) views: Arc<JobViews>,
    pub(crate) requests: Arc<JobRequests>,
}

/// Follows the store's change feed until `stop`.
pub(crate) async fn run(state: Replicas, stop: CancellationToken) {
    let mut feed = loop {
        match state.store.job_changes().await {
            Ok(Some(feed)) => break feed,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not listen for other replicas' job changes; trying again");
                if pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    };
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = feed.next() => next,
        };
        match next {
            Ok(Some(id)) => refresh(&state, &id).await,
            // Changes made while the connection was down were not heard: read every cached job again.
            Ok(None) => refresh_all(&state).await,
            Err(e) => {
                tracing::warn!(error = %e, "lost other replicas' job changes; reading cached jobs again once \
                    the database answers");
                while state.store.ping().await.is_err() {
                    if pause(&stop, Duration::from_secs(1)).await {
                        return;
                    }
                }
                refresh_all(&state).await;
            }
        }
    }
}

/// Waits `wait`; whether `stop` came first.
async fn pause(stop: &CancellationToken, wait: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(wait) => false,
    }
}

/// Reads a job another replica changed, if this one holds it in memory.
async fn refresh(state: &Replicas, id: &str) {
    // What it was asked for changes only when its member deletes it:
    // read again from storage at its next read.
    state.requests.forget(id);
    if state.views.get(id).is_none() {
        return;
    }
    match state.store.job_by_generation(id).await {
        Ok(Some(job)) => {
            if let Some((id, view)) = view_of(&job) {
                // `put` never moves a finished job back, whatever arrives late.
                state.views.put(&id, view);
            }
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(generation_id = id, error = %e, "could not read a job another replica changed")
        }
    }
}

/// Reads every unfinished job in memory again.
async fn refresh_all(state: &Replicas) {
    state.requests.clear();
    for id in state.views.unfinished_ids() {
        refresh(state, &id).await;
    }
}
