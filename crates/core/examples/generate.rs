//! Generates a video with any model of the catalog, showing its progress.
//!
//! ```text
//! cargo run -p aimlvid --example generate -- [MODEL] [PROMPT] [IMAGE] [OUTPUT]
//! ```
//!
//! MODEL defaults to `google/veo-3.1-i2v` (image to video); IMAGE is a local
//! file or an https:// URL, sent as the model's `image_url`. With
//! `AIMLAPI_API_KEY` set, this talks to the API at `AIMLAPI_BASE_URL`;
//! without one it starts the simulator in-process, 60 times faster than
//! real time, and a real MP4 comes out either way.

use std::time::Instant;

use aimlvid::catalog::MediaKind;
use aimlvid::{Client, GenericRequest, MediaInput};
use aimlvid_sim::{SimConfig, Simulator};
use futures_util::StreamExt as _;

const SIM_SCALE: f64 = 60.0;

/// The smallest PNG header the media check recognises, for the simulator.
const SAMPLE_PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "google/veo-3.1-i2v".into());
    let prompt = args.next().unwrap_or_else(|| "Waves roll in under a pink sky".into());
    let image_arg = args.next();
    let output = args.next().unwrap_or_else(|| "generated.mp4".into());

    let has_key =
        ["AIMLAPI_API_KEY", "AIML_API_KEY"].iter().any(|v| std::env::var(v).is_ok_and(|k| !k.is_empty()));
    // Kept alive until the end: dropping it stops the simulator.
    let mut _sim = None;
    let client = if has_key {
        Client::from_env()?
    } else {
        let sim = Simulator::start(SimConfig { time_scale: SIM_SCALE, ..SimConfig::default() }).await?;
        println!("AIMLAPI_API_KEY is not set: using the simulator at {}", sim.base_url());
        let client = Client::builder()
            .api_key(aimlvid_sim::DEFAULT_API_KEY)
            .base_url(sim.base_url())
            .time_scale(SIM_SCALE)
            .build()?;
        _sim = Some(sim);
        client
    };

    let mut request = GenericRequest::new(&model).param("prompt", prompt);
    let image = match image_arg {
        Some(arg) => Some(MediaInput::parse(&arg, MediaKind::Image).await?),
        None if !has_key => {
            let path = std::env::temp_dir().join(format!("aimlvid-example-{}.png", std::process::id()));
            std::fs::write(&path, SAMPLE_PNG)?;
            let media = MediaInput::parse(&path.display().to_string(), MediaKind::Image).await;
            std::fs::remove_file(&path)?;
            Some(media?)
        }
        None => None,
    };
    if let Some(image) = image {
        request = request.param("image_url", image);
    }

    let started = Instant::now();
    // Checked against the model's schema first: a refused request is not sent.
    let created = client.create(&request).await?;
    println!("generation {} created; if this stops, resume with its id", created.id);
    let mut changes = client.watch_created(created);
    let mut last = None;
    // A failed job ends the stream with `Err(GenerationFailed)`: `?` stops there.
    while let Some(job) = changes.next().await {
        let job = job?;
        println!("{:>6.1}s  {}", started.elapsed().as_secs_f64(), job.status);
        last = Some(job);
    }
    let done = last.ok_or_else(|| anyhow::anyhow!("the watch reported nothing"))?.into_result()?;
    let file = client.download(&done, std::path::Path::new(&output)).await?;
    println!(
        "saved {} ({} bytes) in {:.1}s",
        file.path.display(),
        file.bytes,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
