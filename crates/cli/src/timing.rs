//! When to poll a job: a schedule fitted to how long its model's jobs take.
//!
//! The durations come from the API's `GET /models/metrics` (no key needed;
//! cached for a day beside the journal), else from the jobs of that model
//! the journal has seen finish on the same server (never the in-process
//! simulator's), else from the model's family in the catalog.

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
/// they came from.
pub(crate) async fn durations_of(
    client: &Client,
    journal: &Journal,
    model: &str,
) -> (Option<JobDurations>, Source) {
    if let Some(d) = from_metrics(client, journal, model).await {
        return (Some(d), Source::Metrics);
    }
    if let Some(d) = from_journal(journal, model, client.base_url()) {
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
    let (durations, source) = durations_of(client, journal, model).await;
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

/// What the journal's jobs of `model` on the server at `base_url` took, in
/// the server's time. Only jobs of that server count: jobs of the
/// in-process simulator (`--simulate`), or of another server, say nothing
/// about this one's, and a simulator's say nothing about the API's.
fn from_journal(journal: &Journal, model: &str, base_url: &str) -> Option<JobDurations> {
    let records = journal.load_all().ok()?;
    let samples: Vec<Duration> = records
        .iter()
        .filter(|r| r.model.as_deref() == Some(model) && !r.simulated && r.base_url == base_url)
        .filter_map(|r| {
            // An older record kept no scale: the API's ran at 1, a local server's may not have.
            let scale = r.time_scale.or_else(|| (!aimlvid::is_local_url(&r.base_url)).then_some(1.0))?;
            Duration::try_from_secs_f64(r.took_secs? * scale).ok()
        })
        .collect();
    JobDurations::from_samples(&samples)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::journal::{JobRecord, JobState};

    const API: &str = "https://api.aimlapi.com/";
    const MODEL: &str = "google/veo3-1-fast-extend-video";

    fn finished(journal: &Journal, base_url: &str, took: f64, simulated: bool, scale: Option<f64>) {
        let mut r = JobRecord::new(base_url.into(), PathBuf::from("/tmp/out.mp4"), JobState::Downloaded);
        r.model = Some(MODEL.into());
        r.took_secs = Some(took);
        r.simulated = simulated;
        r.time_scale = scale;
        journal.save(&mut r).unwrap();
    }

    #[test]
    fn only_jobs_of_the_same_server_and_never_simulated_ones_teach_durations() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().to_owned());
        let sim = "http://127.0.0.1:40000/";
        // `--simulate` runs: 0.1 s each at x1000 (100 s of simulated time).
        for _ in 0..5 {
            finished(&journal, sim, 0.1, true, Some(1000.0));
        }
        assert_eq!(from_journal(&journal, MODEL, API), None, "simulated jobs teach the API nothing");
        assert_eq!(from_journal(&journal, MODEL, sim), None, "nor the in-process simulator itself");

        // Real jobs on the API: 100, 110, 120 s.
        for took in [100.0, 110.0, 120.0] {
            finished(&journal, API, took, false, Some(1.0));
        }
        let api = from_journal(&journal, MODEL, API).unwrap();
        assert_eq!((api.p50, api.p90), (Duration::from_secs(110), Duration::from_secs(120)));
        assert_eq!(from_journal(&journal, "google/veo3-1-extend-video", API), None, "another model");

        // A simulator on this machine at x100, each job 1.2 s of real time:
        // its own durations in its time, and nothing for the API's.
        let local = "http://127.0.0.1:8787/";
        for _ in 0..3 {
            finished(&journal, local, 1.2, false, Some(100.0));
        }
        assert_eq!(from_journal(&journal, MODEL, local).unwrap().p50, Duration::from_secs(120));
        assert_eq!(from_journal(&journal, MODEL, API), Some(api), "the API's are unchanged");
        assert_eq!(from_journal(&journal, MODEL, "https://proxy.example/"), None, "another server");

        // Old records kept no scale: the API's ran at 1; a local server's is unknown.
        for took in [50.0, 50.0, 50.0, 50.0] {
            finished(&journal, API, took, false, None);
        }
        assert_eq!(from_journal(&journal, MODEL, API).unwrap().p50, Duration::from_secs(50));
        let other_local = "http://127.0.0.1:9999/";
        for _ in 0..3 {
            finished(&journal, other_local, 1.0, false, None);
        }
        assert_eq!(from_journal(&journal, MODEL, other_local), None);
    }
}
