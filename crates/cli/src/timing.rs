//! When to poll a job: a schedule fitted to how long its model's jobs take.
//!
//! The durations come from the API's `GET /models/metrics` (no key needed;
//! cached for a day beside the journal), else from the jobs of that model
//! the journal has seen finish, else from the model's family in the catalog.

use std::collections::BTreeMap;
use std::time::Duration;

use aimlvid::{Client, JobDurations, PollPolicy};

use crate::journal::Journal;

/// How long a command waits for the metrics before going on without them.
const METRICS_TIMEOUT: Duration = Duration::from_secs(3);

/// Where a model's durations came from, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Metrics,
    Journal,
    Family,
    Default,
}

/// The durations of `model`'s jobs, in the API's (virtual) time, and where
/// they came from. `time_scale` converts the journal's real seconds.
pub(crate) async fn durations_of(
    client: &Client,
    journal: &Journal,
    model: &str,
    time_scale: f64,
) -> (Option<JobDurations>, Source) {
    if let Some(d) = from_metrics(client, journal, model).await {
        return (Some(d), Source::Metrics);
    }
    if let Some(d) = from_journal(journal, model, time_scale) {
        return (Some(d), Source::Journal);
    }
    match aimlvid::catalog::model(model) {
        Some(spec) => (Some(JobDurations::typical_of(spec.family)), Source::Family),
        None => (None, Source::Default),
    }
}

/// The poll schedule for a job of `model`, scaled by `time_scale`.
pub(crate) async fn policy_for(
    client: &Client,
    journal: &Journal,
    model: &str,
    time_scale: f64,
) -> PollPolicy {
    let (durations, source) = durations_of(client, journal, model, time_scale).await;
    tracing::debug!(model, ?durations, ?source, "poll schedule");
    let policy = match durations {
        Some(d) => PollPolicy::for_durations(&d),
        None => PollPolicy::default(),
    };
    policy.time_scaled(time_scale)
}

/// The API's recent percentiles for `model`: every measured model's are
/// read at once and cached a day, in milliseconds.
async fn from_metrics(client: &Client, journal: &Journal, model: &str) -> Option<JobDurations> {
    let fetch = async {
        let models = client.model_metrics(&[]).await?;
        Ok(models
            .into_iter()
            .map(|(id, d)| (id, (d.p50.as_millis() as u64, d.p90.as_millis() as u64)))
            .collect::<BTreeMap<String, (u64, u64)>>())
    };
    let metrics = crate::cache::day_cached(client, journal, "model-metrics", METRICS_TIMEOUT, fetch).await?;
    let (p50, p90) = metrics.get(model)?;
    Some(JobDurations::new(Duration::from_millis(*p50), Duration::from_millis(*p90)))
}

fn from_journal(journal: &Journal, model: &str, time_scale: f64) -> Option<JobDurations> {
    let records = journal.load_all().ok()?;
    let samples: Vec<Duration> = records
        .iter()
        .filter(|r| r.model.as_deref() == Some(model))
        .filter_map(|r| r.took_secs)
        .filter_map(|secs| Duration::try_from_secs_f64(secs * time_scale).ok())
        .collect();
    JobDurations::from_samples(&samples)
}
