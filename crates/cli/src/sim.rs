//! `aimlvid sim`, and the in-process simulator behind `--simulate`.

use aimlvid_sim::cli::SimArgs;
use aimlvid_sim::{RunningSim, SimConfig, Simulator};
use serde_json::json;

use crate::exit::Failure;
use crate::report::Reporter;

/// How much faster than real time `--simulate` runs: a two-minute job takes
/// two seconds, slow enough to watch the live line, fast enough to wait for.
pub(crate) const SIMULATE_TIME_SCALE: f64 = 60.0;

/// Serves the simulator until Ctrl-C.
pub(crate) async fn serve(args: &SimArgs, report: &Reporter) -> anyhow::Result<()> {
    let sim = args.start().await.map_err(|problem| Failure::usage(format!("simulator: {problem}")))?;
    let key = sim.config().api_keys[0].clone();
    let base_url = sim.base_url();
    report.event(json!({"event": "listening", "base_url": base_url, "time_scale": args.time_scale}));
    // Printing the key is fine: only this local simulator accepts it.
    report.note(format!("simulator listening on {base_url} (Ctrl-C stops it); try:"));
    report.note(format!(
        "  AIMLAPI_BASE_URL={base_url} AIMLAPI_API_KEY={key} AIMLVID_TIME_SCALE={} aimlvid extend clip.mp4 -p \"…\"",
        args.time_scale
    ));
    crate::exit::ctrl_c().await;
    sim.shutdown().await;
    report.result(json!({"event": "result", "ok": true}), Some("simulator stopped".into()), None)?;
    Ok(())
}

/// Starts the in-process simulator behind `--simulate`.
pub(crate) async fn start_in_process() -> anyhow::Result<RunningSim> {
    let config = SimConfig { time_scale: SIMULATE_TIME_SCALE, ..SimConfig::default() };
    Ok(Simulator::start(config).await?)
}
