//! When to poll a job: a schedule fitted to how long its model's jobs take.
//!
//! The durations come from the API's `GET /models/metrics` (no key needed;
//! cached for a day beside the journal), else from the jobs of that model
//! the journal has seen finish, else from the model's family in the catalog.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aimlvid::{Client, JobDurations, PollPolicy};
use serde::{Deserialize, Serialize};

use crate::journal::Journal;

/// How long the metrics are trusted.
const METRICS_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a command waits for the metrics before going on without them.
const METRICS_TIMEOUT: Duration = Duration::from_secs(3);

/// The API's metrics as last fetched from one server.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CachedMetrics {
    base_url: String,
    /// Seconds since the Unix epoch.
    fetched_at: u64,
    /// Model id → (p50, p90), in milliseconds.
    models: BTreeMap<String, (u64, u64)>,
}

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

fn cache_path(journal: &Journal) -> PathBuf {
    journal.dir().join("cache").join("model-metrics.json")
}

async fn from_metrics(client: &Client, journal: &Journal, model: &str) -> Option<JobDurations> {
    let path = cache_path(journal);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let cached: Option<CachedMetrics> =
        std::fs::read(&path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let fresh = cached.as_ref().filter(|c| {
        c.base_url == client.base_url() && now.saturating_sub(c.fetched_at) < METRICS_TTL.as_secs()
    });
    let metrics = match fresh {
        Some(cached) => cached,
        None => {
            let fetched = tokio::time::timeout(METRICS_TIMEOUT, client.model_metrics(&[])).await;
            match fetched {
                Ok(Ok(models)) => {
                    let cache = CachedMetrics {
                        base_url: client.base_url().to_owned(),
                        fetched_at: now,
                        models: models
                            .into_iter()
                            .map(|(id, d)| (id, (d.p50.as_millis() as u64, d.p90.as_millis() as u64)))
                            .collect(),
                    };
                    save(&path, &cache);
                    return lookup(&cache, model);
                }
                other => {
                    tracing::info!(outcome = ?other.map(|r| r.err().map(|e| e.to_string())), "model metrics not read");
                    // Stale figures beat none.
                    return cached
                        .as_ref()
                        .filter(|c| c.base_url == client.base_url())
                        .and_then(|c| lookup(c, model));
                }
            }
        }
    };
    lookup(metrics, model)
}

fn lookup(metrics: &CachedMetrics, model: &str) -> Option<JobDurations> {
    let (p50, p90) = metrics.models.get(model)?;
    Some(JobDurations::new(Duration::from_millis(*p50), Duration::from_millis(*p90)))
}

/// A cache is a convenience: failing to write it is logged, not fatal.
fn save(path: &std::path::Path, cache: &CachedMetrics) {
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, serde_json::to_vec(cache).unwrap_or_default()));
    if let Err(e) = written {
        tracing::info!(error = %e, path = %path.display(), "model metrics not cached");
    }
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
