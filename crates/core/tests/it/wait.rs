//! Waiting: status changes, storms, Retry-After, cancellation, resuming.

use std::time::Duration;

use aimlvid::Status;
use aimlvid_sim::{Fault, Route, SimConfig, Spread};
use futures_util::StreamExt as _;

use crate::{config, extend_request, start};

#[tokio::test]
async fn a_watch_reports_each_status_change_once_in_order() {
    let (sim, client) = start(config()).await;
    let created = client.create(&extend_request()).await.unwrap();

    let statuses: Vec<Status> =
        client.watch_created(created.clone()).map(|g| g.unwrap().status).collect().await;

    assert_eq!(statuses, [Status::Queued, Status::Generating, Status::Completed]);
    let job = sim.job(&created.id).unwrap();
    assert!(job.first_finished_answer_at.is_some());
}

#[tokio::test]
async fn the_default_policy_waits_out_most_of_the_job_before_polling() {
    let (sim, client) = start(config()).await;

    let done = client.create_and_wait(&extend_request()).await.unwrap();

    assert_eq!(done.status, Status::Completed);
    assert_eq!(done.credits_used(), Some(120_000.0));
    let requests = sim.requests();
    let created_at = requests.iter().find(|r| r.route == Route::Create).unwrap().at;
    let first_poll = requests.iter().find(|r| r.route == Route::Poll).unwrap().at;
    // 85 s, less 10 % jitter, at 1000x: a sleep is never shorter than asked.
    assert!(
        first_poll - created_at >= Duration::from_micros(76_500),
        "first poll after {:?}",
        first_poll - created_at
    );
    // The job takes 115 s: after the first poll at ~85 s, one every ~3.5 s. A
    // loaded machine can only stretch the waits, so this bounds from above.
    let polls = sim.job(&done.id).unwrap().polls;
    assert!(polls <= 14, "{polls} polls");
}

#[tokio::test]
async fn storms_of_429_and_5xx_while_polling_still_complete() {
    let (sim, client) = start(config()).await;
    sim.set_fault_rate(Route::Poll, Fault::Status(503), 0.3);
    sim.set_fault_rate(Route::Poll, Fault::Status(429), 0.2);
    sim.set_fault_rate(Route::Poll, Fault::DropConnection, 0.1);

    let done = client.create_and_wait(&extend_request()).await.unwrap();

    assert_eq!(done.status, Status::Completed);
    let failed = sim.requests().iter().filter(|r| r.route == Route::Poll && r.status != 200).count();
    assert!(failed > 0, "the storm never hit");
}

#[tokio::test]
async fn retry_after_is_respected_while_polling() {
    let (sim, client) = start(config()).await;
    let created = client.create(&extend_request()).await.unwrap();
    sim.inject(Route::Poll, Fault::RateLimited { retry_after_secs: 1 }, 1);

    client.watch_created(created).finish().await.unwrap();

    let polls: Vec<_> = sim.requests().into_iter().filter(|r| r.route == Route::Poll).collect();
    assert_eq!(polls[0].status, 429);
    let gap = polls[1].at - polls[0].at;
    assert!(gap >= Duration::from_secs(1), "polled again after {gap:?}");
}

#[tokio::test]
async fn dropping_the_wait_stops_polling() {
    // A job far longer than the wait, however slow the machine running this.
    let long = SimConfig { generation_time: Spread::Fixed(Duration::from_secs(3600)), ..config() };
    let (sim, client) = start(long).await;
    let created = client.create(&extend_request()).await.unwrap();
    let id = created.id.clone();
    // Stop partway: the job needs 3.6 s; give up at 100 ms, after the first polls.
    let waited =
        tokio::time::timeout(Duration::from_millis(100), client.watch_created(created).finish()).await;
    assert!(waited.is_err(), "the job finished too soon for this test");

    let polls_at_drop = sim.job(&id).unwrap().polls;
    // Ten poll intervals later, nobody has asked again (one request may
    // already have been on the wire when the wait was dropped).
    tokio::time::sleep(Duration::from_millis(40)).await;
    assert!(sim.job(&id).unwrap().polls <= polls_at_drop + 1);
    assert!(sim.job(&id).unwrap().first_finished_answer_at.is_none());
}

#[tokio::test]
async fn a_job_is_resumed_from_nothing_but_its_id() {
    let (sim, client) = start(config()).await;
    let id = client.create(&extend_request()).await.unwrap().id;
    assert!(sim.complete_now(&id));

    // A new client, as in another process, knowing only the id.
    let other = crate::client_for(&sim);
    let done = other.wait(id.clone()).await.unwrap();

    assert_eq!((done.id.as_str(), done.status), (id.as_str(), Status::Completed));
    assert_eq!(sim.job(&id).unwrap().polls, 1, "a resumed wait polls at once");
}

/// Records every exchange it is told about.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<aimlvid::Exchange>>);

impl aimlvid::Observer for Recorder {
    fn exchange(&self, exchange: &aimlvid::Exchange) {
        self.0.lock().unwrap().push(*exchange);
    }
}

#[tokio::test]
async fn an_observer_sees_every_exchange_retries_included() {
    use aimlvid::CallKind;
    let sim = aimlvid_sim::Simulator::start(config()).await.unwrap();
    let recorder = std::sync::Arc::new(Recorder::default());
    let client = crate::builder_for(&sim).observer(recorder.clone()).build().unwrap();
    sim.inject(Route::Poll, Fault::Status(503), 2);
    sim.inject(Route::Poll, Fault::DropConnection, 1);

    let done = client.create_and_wait(&extend_request()).await.unwrap();
    assert_eq!(done.status, Status::Completed);

    let seen = recorder.0.lock().unwrap().clone();
    let served = sim.requests();
    assert_eq!(seen.len(), served.len(), "one report per request the upstream saw");
    assert_eq!((seen[0].kind, seen[0].status), (CallKind::Create, Some(200)));
    let polls: Vec<_> = seen[1..].iter().map(|e| (e.kind, e.status)).collect();
    assert!(polls.iter().all(|(kind, _)| *kind == CallKind::Poll));
    assert_eq!(polls.iter().filter(|(_, s)| *s == Some(503)).count(), 2);
    assert_eq!(polls.iter().filter(|(_, s)| s.is_none()).count(), 1, "the dropped connection has no status");
}

#[tokio::test]
async fn answers_that_never_decode_end_the_wait_with_an_excerpt_not_at_the_deadline() {
    let (sim, client) = start(config()).await;
    let id = client.create(&extend_request()).await.unwrap().id;
    sim.inject(Route::Poll, Fault::NonJson, 100);

    let started = std::time::Instant::now();
    let err = client.wait(id.clone()).await.unwrap_err();

    let aimlvid::Error::Decode { excerpt, .. } = &err else { panic!("{err:?}") };
    assert!(excerpt.starts_with("<html>"), "{excerpt}");
    assert_eq!(sim.stats().poll_requests, 5, "five unreadable answers in a row, then the error");
    // The policy's deadline is 1.8 s at this scale; the retries take a fraction of it.
    assert!(started.elapsed() < client.poll_policy().deadline, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_result_given_as_a_list_is_read_and_its_first_video_downloaded() {
    let (sim, client) = start(SimConfig { results_per_job: Some(3), ..config() }).await;
    let created = client.create(&extend_request()).await.unwrap();
    let done = client.watch_created(created).finish().await.unwrap();
    assert_eq!(done.video_urls().len(), 3, "{done:?}");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("first.mp4");
    client.download(&done, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), aimlvid_sim::SAMPLE_RESULT);
    let _ = sim;
}

#[tokio::test]
async fn by_default_a_job_is_polled_on_a_schedule_fitted_to_its_model() {
    // A text-to-video job of a minute: the extend-tuned default's first
    // poll, 85 s after the create, would notice it 25 s late.
    let config = SimConfig {
        queue_time: Spread::Fixed(Duration::from_secs(2)),
        generation_time: Spread::Fixed(Duration::from_secs(58)),
        ..config()
    };
    let sim = aimlvid_sim::Simulator::start(config).await.unwrap();
    let client = aimlvid::Client::builder()
        .api_key(aimlvid_sim::DEFAULT_API_KEY)
        .base_url(sim.base_url())
        .time_scale(crate::SCALE)
        .build()
        .unwrap();
    let model = "google/veo-3.1-t2v-fast";
    let done =
        client.create_and_wait(&aimlvid::GenericRequest::new(model).param("prompt", "x")).await.unwrap();

    let job = sim.job(&done.id).unwrap();
    let lag = job.first_finished_answer_at.unwrap() - job.finishes_at;
    assert!(lag < Duration::from_secs(12), "noticed {lag:?} late");
    let family = aimlvid::JobDurations::typical_of(aimlvid::catalog::Family::TextToVideo);
    assert_eq!(
        client.poll_policy_for(model),
        aimlvid::PollPolicy::for_durations(&family).time_scaled(crate::SCALE)
    );

    // Once the client has read the model's metrics, they are what it fits.
    let measured = client.model_metrics(&[model]).await.unwrap();
    let (_, durations) = measured.iter().find(|(id, _)| id == model).unwrap();
    assert_eq!(
        client.poll_policy_for(model),
        aimlvid::PollPolicy::for_durations(durations).time_scaled(crate::SCALE)
    );
    // A policy set by hand is used for every model.
    let fixed = aimlvid::PollPolicy::fixed(Duration::from_millis(5));
    let client = aimlvid::Client::builder().api_key("k").poll_policy(fixed.clone()).build().unwrap();
    assert_eq!(client.poll_policy_for(model), fixed);
}

#[tokio::test]
async fn a_failed_job_ends_the_stream_with_its_error() {
    let (sim, client) = start(SimConfig { time_scale: 0.0, ..config() }).await;
    let created = client.create(&extend_request()).await.unwrap();
    sim.fail_now(&created.id);
    let items: Vec<_> = client.watch_created(created.clone()).collect().await;
    assert!(matches!(&items[0], Ok(g) if g.status == Status::Queued), "{items:?}");
    let Some(Err(aimlvid::Error::GenerationFailed { id, .. })) = items.last() else { panic!("{items:?}") };
    assert_eq!(id, &created.id);
    assert!(items.iter().filter_map(|i| i.as_ref().ok()).all(|g| !g.status.is_failure()));
}

/// A client with no poll policy set, against `sim` at `scale`.
fn unset_client(sim: &aimlvid_sim::RunningSim, scale: f64) -> aimlvid::Client {
    aimlvid::Client::builder()
        .api_key(aimlvid_sim::DEFAULT_API_KEY)
        .base_url(sim.base_url())
        .time_scale(scale)
        .build()
        .unwrap()
}

fn metrics_reads(sim: &aimlvid_sim::RunningSim) -> usize {
    sim.requests().iter().filter(|r| r.route == Route::Metrics).count()
}

#[tokio::test]
async fn by_default_the_first_job_of_a_model_reads_its_metrics_once_for_all() {
    // Jobs of 32 s, where the family's prior (a minute) would first poll at
    // about 44 s. A coarser clock than the other tests', so that a sleep's
    // overshoot stays a fraction of a simulated second.
    const SCALE: f64 = 100.0;
    let model = "google/veo-3.1-t2v-fast";
    let config = SimConfig {
        time_scale: SCALE,
        queue_time: Spread::Fixed(Duration::from_secs(2)),
        generation_time: Spread::Fixed(Duration::from_secs(30)),
        ..config()
    };
    let sim = aimlvid_sim::Simulator::start(config).await.unwrap();
    let request = aimlvid::GenericRequest::new(model).param("prompt", "x");
    // Other users' jobs, which the API's metrics then describe.
    let others = crate::client_for(&sim);
    for _ in 0..3 {
        let created = others.create(&request).await.unwrap();
        others
            .watch_created_with(created, aimlvid::PollPolicy::fixed(Duration::from_millis(5)))
            .finish()
            .await
            .unwrap();
    }
    assert_eq!(metrics_reads(&sim), 0);

    let client = unset_client(&sim, SCALE);
    let family = aimlvid::JobDurations::typical_of(aimlvid::catalog::Family::TextToVideo);
    assert_eq!(client.poll_policy_for(model), aimlvid::PollPolicy::for_durations(&family).time_scaled(SCALE));
    let jobs = futures_util::future::join_all((0..3).map(|_| client.create_and_wait(&request))).await;

    assert_eq!(metrics_reads(&sim), 1, "one read for the three jobs");
    // Fitted to jobs of 32 s: first polled at most then, not at the prior's ~44 s.
    let fitted = client.poll_policy_for(model);
    assert!(fitted.first_delay <= Duration::from_secs_f64(32.0 / SCALE), "{fitted:?}");
    for job in jobs {
        let job = sim.job(&job.unwrap().id).unwrap();
        let lag = job.first_finished_answer_at.unwrap() - job.finishes_at;
        // The prior would notice each about 12 s late; the metrics' schedule, within a poll (3 s).
        assert!(lag < Duration::from_secs(6), "noticed {lag:?} late");
    }
    // Later jobs reuse what was read.
    client.create_and_wait(&request).await.unwrap();
    assert_eq!(metrics_reads(&sim), 1);
}

#[tokio::test]
async fn metrics_that_cannot_be_read_leave_the_family_prior_without_asking_again_each_job() {
    let (sim, _) =
        start(SimConfig { generation_time: Spread::Fixed(Duration::from_secs(20)), ..config() }).await;
    sim.set_fault_rate(Route::Metrics, Fault::Status(404), 1.0);
    let client = unset_client(&sim, crate::SCALE);
    let model = "google/veo-3.1-t2v-fast";
    let request = aimlvid::GenericRequest::new(model).param("prompt", "x");

    client.create_and_wait(&request).await.unwrap();
    client.create_and_wait(&request).await.unwrap();

    assert_eq!(metrics_reads(&sim), 1, "a failed read is not repeated for every job");
    let family = aimlvid::JobDurations::typical_of(aimlvid::catalog::Family::TextToVideo);
    assert_eq!(
        client.poll_policy_for(model),
        aimlvid::PollPolicy::for_durations(&family).time_scaled(crate::SCALE)
    );
    // A client with a policy of its own never reads them.
    let (sim, set) = start(config()).await;
    set.create_and_wait(&crate::extend_request()).await.unwrap();
    assert_eq!(metrics_reads(&sim), 0);
}
