//! The one place a job's new state is recorded: storage first (through the
//! writer), then what follows from it (the charge on the key's entry, the
//! reservation given way, the webhook woken), then the in-memory view, so
//! that what members are shown is always what a restart would show. The
//! scheduler, the create path and recovery all record through it.

use std::sync::Arc;

use aimlvid::Generation;

use crate::engine::writer::{WriteError, Writer};
use crate::reservations::Reservations;
use crate::store::{JobEnd, JobWrite, KeyId, WriteOutcome};
use crate::view::{JobView, JobViews};
use crate::webhooks::Webhooks;

/// What recording a job's state needs, and no more. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Settle {
    pub(crate) writer: Writer,
    pub(crate) views: Arc<JobViews>,
    pub(crate) reservations: Reservations,
    pub(crate) webhooks: Arc<Webhooks>,
}

impl Settle {
    /// Records a job's new state; returns whether it was stored (only a
    /// stopping server, or a write storage refuses for good, leaves it
    /// unstored, and then it is not shown either).
    pub async fn record(&self, key_id: KeyId, generation: &Generation) -> bool {
        let id = generation.id.as_str();
        let status = generation.status.as_str();
        let body = match serde_json::to_string(generation) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(generation_id = id, error = %e, "could not encode a generation");
                return false;
            }
        };
        let view = JobView::new(key_id, generation);
        let finished = generation.status.is_finished();
        let credits = generation.credits_used().unwrap_or(0.0);
        let write = if finished {
            // A webhook announces the job exactly as members read it.
            let announcement = String::from_utf8_lossy(&view.body).into_owned();
            let end = JobEnd { status: status.to_owned(), body, credits, announcement };
            JobWrite::Finished { generation_id: id.to_owned(), end }
        } else {
            JobWrite::Changed { generation_id: id.to_owned(), status: status.to_owned(), body }
        };
        match self.writer.write(write).await {
            Ok(WriteOutcome::Finished(Some(charged))) => {
                self.reservations.settle(id, &charged, credits);
                if charged.webhook_queued {
                    self.webhooks.wake();
                }
            }
            Ok(_) => {}
            Err(WriteError::Stopped) => {
                // Not stored, so not shown: the next start polls the job again.
                return false;
            }
            Err(e) => {
                tracing::error!(generation_id = id, error = %e, "storage refused a status; not shown");
                return false;
            }
        }
        tracing::debug!(generation_id = id, status, "job status");
        self.views.put(id, view);
        true
    }
}
