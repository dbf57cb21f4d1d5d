//! How many polls a job costs, and how late its completion is noticed,
//! under our schedules and under the API sample code's fixed 15 s loop, for
//! the same simulated workload, for four models of different durations.
//!
//! ```text
//! cargo xtask bench client      # = cargo bench -p aimlvid --bench polling
//! ```
//!
//! The headline extend model runs on the simulator's default spread (queued
//! 2–8 s, then generating for a normal 105 s ± 15 s, at least 30 s: about
//! 110 s in all) under the default `PollPolicy`; a ~30 s, a ~1 min and a
//! ~5 min model run under `PollPolicy::for_durations`, fitted to what `GET
//! /models/metrics` reports after a warm-up, as the command line does.
//! Each model also runs as a library user gets it without choosing a
//! schedule: `watch_created` on a client with no poll policy set, once
//! against a simulator whose metrics describe the model (as the real API's
//! describe every user's jobs) and once against one that has none (the
//! family's prior). The simulator's clock runs `SCALE` times faster than
//! real time, each policy scaled to match. Polls and lag are counted by
//! the simulator: lag is the simulated time from a job's completion to the
//! first answer that reported it.

use std::time::{Duration, Instant};

use aimlvid::{Client, GenericRequest, PollPolicy};
use aimlvid_sim::{SimConfig, Simulator, Spread};

const JOBS: usize = 1000;
/// Jobs run before a fitted schedule is measured, for the metrics to describe.
const WARM_UP: usize = 400;
const SCALE: f64 = 20.0;
/// Creates are spread over this much real time, as a real workload's would be.
const CREATE_SPREAD: Duration = Duration::from_secs(5);

/// A model and how long its simulated jobs generate.
struct Workload {
    name: &'static str,
    model: &'static str,
    generation: Spread,
}

/// The headline extend model on the simulator's default spread, a quick
/// draft model of about 30 s, one of about a minute and a slow one of about
/// five minutes (plus 2–8 s queued, for all four).
fn workloads() -> [Workload; 4] {
    let s = Duration::from_secs;
    [
        Workload {
            name: "extend, ~110 s",
            model: "google/veo3-1-fast-extend-video",
            generation: SimConfig::default().generation_time,
        },
        Workload {
            name: "text-to-video, ~30 s",
            model: "bytedance/seedance-1-0-lite-t2v",
            generation: Spread::Normal { mean: s(25), sd: s(4), min: s(10) },
        },
        Workload {
            name: "text-to-video, ~60 s",
            model: "google/veo-3.1-t2v-fast",
            generation: Spread::Normal { mean: s(55), sd: s(8), min: s(20) },
        },
        Workload {
            name: "text-to-video, ~5 min",
            model: "openai/sora-2-pro-t2v",
            generation: Spread::Normal { mean: s(295), sd: s(30), min: s(120) },
        },
    ]
}

/// Which schedule a run waits on.
#[derive(Clone, Copy)]
enum Schedule {
    /// The default `PollPolicy`, tuned for the extend models.
    Default,
    /// Fitted to the model's durations as `GET /models/metrics` reports
    /// them after a warm-up, as the `aimlvid` command does.
    FromMetrics,
    /// The API sample code's loop.
    Fixed15,
    /// What a library user gets without choosing: `watch_created` on a
    /// client with no poll policy set, which reads the model's metrics
    /// (here describing a warm-up's jobs) and fits a schedule to them.
    LibraryDefault,
    /// The same against a simulator with no metrics for the model: the
    /// schedule is fitted to the model family's prior.
    LibraryPrior,
}

struct Figures {
    polls_mean: f64,
    polls_max: u64,
    lag_mean: f64,
    lag_p50: f64,
    lag_p95: f64,
    job_mean: f64,
    wall: Duration,
}

fn request(model: &str, i: usize) -> GenericRequest {
    let request = GenericRequest::new(model).param("prompt", format!("shot {i}"));
    if model.contains("extend") {
        request.param("video_url", "https://example.com/clip.mp4")
    } else {
        request
    }
}

/// Jobs of `workload` waited for on a fixed 5 s loop, for the simulator's
/// metrics to describe; not measured.
async fn warm_up(client: &Client, workload: &Workload) {
    let warm = PollPolicy::fixed(Duration::from_secs(5)).time_scaled(SCALE);
    let mut tasks = Vec::new();
    for i in 0..WARM_UP {
        let (client, request, warm) = (client.clone(), request(workload.model, i), warm.clone());
        tasks.push(tokio::spawn(async move {
            let created = client.create(&request).await?;
            client.watch_created_with(created, warm).finish().await
        }));
    }
    for task in tasks {
        task.await.unwrap().expect("every warm-up job completes");
    }
}

async fn run(workload: &Workload, schedule: Schedule) -> Figures {
    let mut config = SimConfig { time_scale: SCALE, ..SimConfig::default() };
    config.model_generation_times.insert(workload.model.to_owned(), workload.generation);
    let sim = Simulator::start(config).await.unwrap();
    let client =
        Client::builder().api_key(aimlvid_sim::DEFAULT_API_KEY).base_url(sim.base_url()).build().unwrap();
    let library_default = matches!(schedule, Schedule::LibraryDefault | Schedule::LibraryPrior);
    if matches!(schedule, Schedule::FromMetrics | Schedule::LibraryDefault) {
        warm_up(&client, workload).await;
    }
    // A client of its own, which has read no metrics and set no policy.
    let client = if library_default {
        Client::builder()
            .api_key(aimlvid_sim::DEFAULT_API_KEY)
            .base_url(sim.base_url())
            .time_scale(SCALE)
            .build()
            .unwrap()
    } else {
        client
    };
    let policy = match schedule {
        Schedule::LibraryDefault | Schedule::LibraryPrior => PollPolicy::default(),
        Schedule::Default => PollPolicy::default(),
        Schedule::Fixed15 => PollPolicy::fixed(Duration::from_secs(15)),
        Schedule::FromMetrics => {
            let metrics = client.model_metrics(&[workload.model]).await.unwrap();
            let (_, durations) = metrics.into_iter().find(|(m, _)| m == workload.model).expect("metrics");
            println!(
                "{}: metrics after {WARM_UP} jobs: p50 {:.1} s, p90 {:.1} s",
                workload.name,
                durations.p50.as_secs_f64(),
                durations.p90.as_secs_f64()
            );
            PollPolicy::for_durations(&durations)
        }
    }
    .time_scaled(SCALE);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let (client, policy) = (client.clone(), policy.clone());
        let request = request(workload.model, i);
        let start_at = tokio::time::Instant::now() + CREATE_SPREAD.mul_f64(i as f64 / JOBS as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            let created = client.create(&request).await?;
            let watch = if library_default {
                client.watch_created(created)
            } else {
                client.watch_created_with(created, policy)
            };
            watch.finish().await.map(|g| g.id)
        }));
    }
    let mut polls = Vec::with_capacity(JOBS);
    let mut lags = Vec::with_capacity(JOBS);
    let mut lengths = Vec::with_capacity(JOBS);
    for task in tasks {
        let id: String = task.await.unwrap().expect("every simulated job completes");
        let job = sim.job(&id).unwrap();
        let noticed = job.first_finished_answer_at.expect("completion was noticed");
        polls.push(job.polls);
        lags.push((noticed.saturating_sub(job.finishes_at)).as_secs_f64());
        lengths.push((job.finishes_at - job.created_at).as_secs_f64());
    }
    let wall = started.elapsed();
    lags.sort_by(f64::total_cmp);
    let n = JOBS as f64;
    Figures {
        polls_mean: polls.iter().sum::<u64>() as f64 / n,
        polls_max: polls.iter().copied().max().unwrap_or(0),
        lag_mean: lags.iter().sum::<f64>() / n,
        lag_p50: lags[JOBS / 2],
        lag_p95: lags[JOBS * 95 / 100],
        job_mean: lengths.iter().sum::<f64>() / n,
        wall,
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    println!("{JOBS} simulated jobs per model and schedule, simulator clock x{SCALE}\n");
    let mut rows = Vec::new();
    for workload in workloads() {
        let extend = workload.model.contains("extend");
        let ours = run(&workload, if extend { Schedule::Default } else { Schedule::FromMetrics }).await;
        let ours_name = if extend { "default PollPolicy" } else { "fitted to /models/metrics" };
        let seed = run(&workload, Schedule::Fixed15).await;
        let library = run(&workload, Schedule::LibraryDefault).await;
        let prior = run(&workload, Schedule::LibraryPrior).await;
        rows.push((workload, ours_name, ours, seed, library, prior));
    }
    println!();
    println!(
        "| model | schedule | mean job length | polls/job (mean) | polls/job (max) | lag mean | lag p50 | lag p95 | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (workload, ours_name, ours, seed, library, prior) in &rows {
        for (name, f) in [
            (*ours_name, ours),
            ("fixed 15 s loop (API sample)", seed),
            ("library default (no policy set; metrics read)", library),
            ("library default, no metrics (family prior)", prior),
        ] {
            println!(
                "| {} | {name} | {:.1} s | {:.2} | {} | {:.2} s | {:.2} s | {:.2} s | {:.1} s |",
                workload.name,
                f.job_mean,
                f.polls_mean,
                f.polls_max,
                f.lag_mean,
                f.lag_p50,
                f.lag_p95,
                f.wall.as_secs_f64()
            );
        }
    }
    println!();
    println!("Goal, for each model: fewer polls than the loop, and at most 0.33 of its lag.");
    for (workload, ours_name, ours, seed, library, prior) in &rows {
        for (name, f) in
            [(*ours_name, ours), ("library default", library), ("library default without metrics", prior)]
        {
            let met = f.polls_mean < seed.polls_mean && f.lag_mean <= seed.lag_mean / 3.0;
            println!(
                "{}: {name}: polls {:.2} vs {:.2} ({:+.0}%); lag {:.2} s vs {:.2} s ({:.2} of the loop's): {}",
                workload.name,
                f.polls_mean,
                seed.polls_mean,
                (f.polls_mean / seed.polls_mean - 1.0) * 100.0,
                f.lag_mean,
                seed.lag_mean,
                f.lag_mean / seed.lag_mean,
                if met { "met" } else { "MISSED" }
            );
        }
    }
}
