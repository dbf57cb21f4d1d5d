//! How many polls a job costs, and how late its completion is noticed,
//! under the default `PollPolicy` and under the API sample code's fixed 15 s
//! loop, for the same simulated workload.
//!
//! ```text
//! cargo xtask bench client      # = cargo bench -p aimlvid --bench polling
//! ```
//!
//! Jobs run on the simulator's default spread (queued 2–8 s, then generating
//! for a normal 105 s ± 15 s, at least 30 s: about 110 s in all), with the
//! simulator's clock running `SCALE` times faster than real time and each
//! policy scaled to match. Polls and lag are counted by the simulator: lag is
//! the simulated time from a job's completion to the first answer that
//! reported it.

use std::time::{Duration, Instant};

use aimlvid::{Client, ExtendVideo, PollPolicy, VideoInput};
use aimlvid_sim::{SimConfig, Simulator};

const JOBS: usize = 1000;
const SCALE: f64 = 20.0;
/// Creates are spread over this much real time, as a real workload's would be.
const CREATE_SPREAD: Duration = Duration::from_secs(5);

struct Figures {
    polls_mean: f64,
    polls_max: u64,
    lag_mean: f64,
    lag_p50: f64,
    lag_p95: f64,
    job_mean: f64,
    wall: Duration,
}

async fn run(policy: PollPolicy) -> Figures {
    let sim = Simulator::start(SimConfig { time_scale: SCALE, ..SimConfig::default() }).await.unwrap();
    let client = Client::builder()
        .api_key(aimlvid_sim::DEFAULT_API_KEY)
        .base_url(sim.base_url())
        .poll_policy(policy.time_scaled(SCALE))
        .build()
        .unwrap();
    let video = VideoInput::url("https://example.com/clip.mp4").unwrap();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(JOBS);
    for i in 0..JOBS {
        let client = client.clone();
        let request = ExtendVideo::new(format!("shot {i}"), video.clone());
        let start_at = tokio::time::Instant::now() + CREATE_SPREAD.mul_f64(i as f64 / JOBS as f64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            client.create_and_wait(&request).await.map(|g| g.id)
        }));
    }
    let mut polls = Vec::with_capacity(JOBS);
    let mut lags = Vec::with_capacity(JOBS);
    let mut lengths = Vec::with_capacity(JOBS);
    for task in tasks {
        let id = task.await.unwrap().expect("every simulated job completes");
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
    println!("{JOBS} simulated jobs per policy, simulator clock x{SCALE}\n");
    let ours = run(PollPolicy::default()).await;
    let seed = run(PollPolicy::fixed(Duration::from_secs(15))).await;

    println!(
        "| policy | mean job length | polls/job (mean) | polls/job (max) | lag mean | lag p50 | lag p95 | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, f) in [("default PollPolicy", &ours), ("fixed 15 s loop (API sample)", &seed)] {
        println!(
            "| {name} | {:.1} s | {:.2} | {} | {:.2} s | {:.2} s | {:.2} s | {:.1} s |",
            f.job_mean,
            f.polls_mean,
            f.polls_max,
            f.lag_mean,
            f.lag_p50,
            f.lag_p95,
            f.wall.as_secs_f64()
        );
    }
    println!();
    println!(
        "polls: {:.2} vs {:.2} ({:+.0}%); lag: {:.2} s vs {:.2} s ({:.2} of the loop's; goal: fewer polls, at most 0.33)",
        ours.polls_mean,
        seed.polls_mean,
        (ours.polls_mean / seed.polls_mean - 1.0) * 100.0,
        ours.lag_mean,
        seed.lag_mean,
        ours.lag_mean / seed.lag_mean
    );
}
