//! `aimlvid-sim`: serve the simulated AI/ML API video upstream locally.

use aimlvid_sim::cli::SimArgs;
use anyhow::{Context, Result};
use clap::Parser;

/// A local, strict simulator of the AI/ML API's video generation endpoints.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    sim: SimArgs,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let args = Args::parse();
    let sim = args.sim.start().await.map_err(anyhow::Error::msg)?;
    let keys = sim.config().api_keys.join(", ");
    // Printing the key is fine: it is a fake key that only this local
    // simulator accepts.
    println!("aimlvid-sim listening on {} (key: {keys})", sim.base_url());

    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    eprintln!("shutting down");
    sim.shutdown().await;
    Ok(())
}
