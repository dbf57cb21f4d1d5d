//! Integration tests of the `aimlvid` client against the in-process simulator.

mod billing;
mod catalog;
mod create;
mod download;
mod errors;
mod models;
mod recover;
mod wait;

use std::time::Duration;

use aimlvid::{Client, PollPolicy, RetryPolicy};
use aimlvid_sim::{DEFAULT_API_KEY, RunningSim, SimConfig, Simulator, Spread};

/// Simulated seconds per real second: a two-minute job takes 120 ms.
const SCALE: f64 = 1000.0;

/// Jobs that queue for 5 s and generate for 110 s, simulated.
fn config() -> SimConfig {
    SimConfig {
        time_scale: SCALE,
        queue_time: Spread::Fixed(Duration::from_secs(5)),
        generation_time: Spread::Fixed(Duration::from_secs(110)),
        ..SimConfig::default()
    }
}

/// A client for `sim` whose waits run as fast as the simulator's clock.
fn client_for(sim: &RunningSim) -> Client {
    builder_for(sim).build().unwrap()
}

fn builder_for(sim: &RunningSim) -> aimlvid::ClientBuilder {
    Client::builder()
        .api_key(DEFAULT_API_KEY)
        .base_url(sim.base_url())
        .poll_policy(PollPolicy::default().time_scaled(SCALE))
        .retry_policy(RetryPolicy::default().time_scaled(50.0))
}

async fn start(config: SimConfig) -> (RunningSim, Client) {
    let sim = Simulator::start(config).await.unwrap();
    let client = client_for(&sim);
    (sim, client)
}

fn extend_request() -> aimlvid::ExtendVideo {
    let clip = aimlvid::VideoInput::url("https://example.com/raccoon.mp4").unwrap();
    aimlvid::ExtendVideo::new("Add a small fairy riding the raccoon", clip)
}
