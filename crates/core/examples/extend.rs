//! Extends a clip and saves the result.
//!
//! ```text
//! cargo run -p aimlvid --example extend -- [VIDEO] [PROMPT] [OUTPUT]
//! ```
//!
//! VIDEO is a local file or an https:// URL. With `AIMLAPI_API_KEY` set, this
//! talks to the API at `AIMLAPI_BASE_URL` (default https://api.aimlapi.com).
//! Without a key it starts the simulator in-process, running 60 times faster
//! than real time, and extends its sample clip: a real MP4 comes out either way.

use std::time::Instant;

use aimlvid::{Client, ExtendVideo, VideoInput};
use aimlvid_sim::{SimConfig, Simulator};
use futures_util::StreamExt as _;

const SIM_SCALE: f64 = 60.0;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let mut args = std::env::args().skip(1);
    let video_arg = args.next();
    let prompt =
        args.next().unwrap_or_else(|| "The camera slowly pulls back to reveal the whole forest".into());
    let output = args.next().unwrap_or_else(|| "extended.mp4".into());

    let has_key =
        ["AIMLAPI_API_KEY", "AIML_API_KEY"].iter().any(|v| std::env::var(v).is_ok_and(|k| !k.is_empty()));
    // Kept alive until the end: dropping it stops the simulator.
    let mut _sim = None;
    let (client, video) = if has_key {
        let video = video_arg.ok_or_else(|| anyhow::anyhow!("usage: extend VIDEO [PROMPT] [OUTPUT]"))?;
        (Client::from_env()?, VideoInput::parse(&video).await?)
    } else {
        let sim = Simulator::start(SimConfig { time_scale: SIM_SCALE, ..SimConfig::default() }).await?;
        println!("AIMLAPI_API_KEY is not set: using the simulator at {}", sim.base_url());
        let client = Client::builder()
            .api_key(aimlvid_sim::DEFAULT_API_KEY)
            .base_url(sim.base_url())
            .time_scale(SIM_SCALE)
            .build()?;
        let video = match video_arg {
            Some(arg) => VideoInput::parse(&arg).await?,
            None => VideoInput::from_bytes(aimlvid_sim::SAMPLE_INPUT)?,
        };
        _sim = Some(sim);
        (client, video)
    };

    let started = Instant::now();
    let created = client.create(&ExtendVideo::new(prompt, video)).await?;
    println!("generation {} created; if this stops, resume with its id", created.id);
    let mut changes = client.watch_created(created);
    let mut last = None;
    while let Some(job) = changes.next().await {
        let job = job?;
        println!("{:>6.1}s  {}", started.elapsed().as_secs_f64(), job.status);
        last = Some(job);
    }
    let done = last.ok_or_else(|| anyhow::anyhow!("the watch reported nothing"))?.into_result()?;
    let file = client.download(&done, std::path::Path::new(&output)).await?;
    println!(
        "saved {} ({} bytes, {:?} credits) in {:.1}s",
        file.path.display(),
        file.bytes,
        done.credits_used(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
