//! `aimlvid-sim`: serve the simulated AI/ML API video upstream locally.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aimlvid_sim::{Fault, MIN_RESULT_SIZE, Route, SimConfig, Simulator, Spread};
use anyhow::{Context, Result, bail};
use clap::Parser;

/// A local, strict simulator of the AI/ML API's video generation endpoints.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8787)]
    port: u16,
    /// An accepted API key (repeat for several) [default: sim-key].
    #[arg(long = "key", value_name = "KEY")]
    keys: Vec<String>,
    /// Virtual seconds per real second (e.g. 60 makes a 105 s job take ~2 s).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Virtual seconds a job stays queued: `MIN-MAX` (uniform) or `SECS`.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_queue_secs)]
    queue_secs: Option<Spread>,
    /// Mean virtual seconds of generation (normally spread, sd = mean / 7).
    #[arg(long, value_name = "MEAN")]
    generation_secs: Option<f64>,
    /// Fraction of jobs that end in `error`.
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Probability that a create or poll gets a 429 (`Retry-After: 1`).
    #[arg(long, value_name = "P")]
    rate_limit_rate: Option<f64>,
    /// Probability that a create or poll gets a 503.
    #[arg(long, value_name = "P")]
    server_error_rate: Option<f64>,
    /// Pad every result MP4 to exactly this many bytes.
    #[arg(long, value_name = "BYTES")]
    result_size: Option<u64>,
    /// Unfinished jobs allowed per key (further creates get 429).
    #[arg(long, value_name = "N")]
    max_concurrent_jobs: Option<usize>,
    /// Credits available (creates get 403 once spent) [default: unlimited].
    #[arg(long, value_name = "CREDITS")]
    credit_balance: Option<f64>,
    /// Seed for durations, failures and fault rates.
    #[arg(long)]
    seed: Option<u64>,
}

fn parse_queue_secs(s: &str) -> Result<Spread, String> {
    let secs = |v: &str| -> Result<Duration, String> {
        let n: f64 = v.trim().parse().map_err(|_| format!("not a number: {v:?}"))?;
        Duration::try_from_secs_f64(n).map_err(|_| format!("not a valid duration: {v:?}"))
    };
    match s.split_once('-') {
        Some((min, max)) => Ok(Spread::Uniform { min: secs(min)?, max: secs(max)? }),
        None => Ok(Spread::Fixed(secs(s)?)),
    }
}

fn config(args: &Args) -> Result<SimConfig> {
    let mut config = SimConfig::default();
    if !args.keys.is_empty() {
        config.api_keys = args.keys.clone();
    }
    config.time_scale = args.time_scale;
    if let Some(queue) = args.queue_secs {
        config.queue_time = queue;
    }
    if let Some(mean) = args.generation_secs {
        let mean = Duration::try_from_secs_f64(mean).context("--generation-secs")?;
        // The default's shape (105 s, sd 15 s, floor 30 s), scaled to the mean.
        config.generation_time = Spread::Normal { mean, sd: mean / 7, min: mean * 2 / 7 };
    }
    config.failure_rate = args.failure_rate;
    config.result_size = args.result_size;
    config.max_concurrent_jobs = args.max_concurrent_jobs;
    config.credit_balance = args.credit_balance;
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Err(problem) = config.validate() {
        bail!("{problem} (the smallest --result-size is {MIN_RESULT_SIZE})");
    }
    Ok(config)
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
    let config = config(&args)?;
    let keys = config.api_keys.join(", ");
    let sim = Simulator::start_on(config, SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    for (fault, rate) in [
        (Fault::RateLimited { retry_after_secs: 1 }, args.rate_limit_rate),
        (Fault::Status(503), args.server_error_rate),
    ] {
        if let Some(p) = rate {
            sim.set_fault_rate(Route::Create, fault.clone(), p);
            sim.set_fault_rate(Route::Poll, fault, p);
        }
    }

    // Printing the key is fine: it is a fake key that only this local
    // simulator accepts.
    println!("aimlvid-sim listening on {} (key: {keys})", sim.base_url());

    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    eprintln!("shutting down");
    sim.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn queue_secs_parse() {
        assert!(matches!(
            parse_queue_secs("2-8"),
            Ok(Spread::Uniform { min, max }) if min == Duration::from_secs(2) && max == Duration::from_secs(8)
        ));
        assert!(matches!(parse_queue_secs("0.5"), Ok(Spread::Fixed(d)) if d == Duration::from_millis(500)));
        assert!(parse_queue_secs("x-8").is_err());
        assert!(parse_queue_secs("-1").is_err());
    }

    #[test]
    fn options_make_a_config() {
        let args = Args::parse_from([
            "aimlvid-sim",
            "--key",
            "a",
            "--key",
            "b",
            "--time-scale",
            "60",
            "--generation-secs",
            "70",
            "--failure-rate",
            "0.1",
            "--seed",
            "7",
        ]);
        let built = config(&args).unwrap();
        assert_eq!(built.api_keys, ["a", "b"]);
        assert_eq!(built.time_scale, 60.0);
        assert_eq!(built.seed, 7);
        assert!(matches!(
            built.generation_time,
            Spread::Normal { mean, sd, min }
                if mean == Duration::from_secs(70) && sd == Duration::from_secs(10) && min == Duration::from_secs(20)
        ));
        let defaults = config_for(&["aimlvid-sim"]);
        assert_eq!(defaults.api_keys, [aimlvid_sim::DEFAULT_API_KEY]);
        assert!(config(&Args::parse_from(["aimlvid-sim", "--result-size", "10"])).is_err());
        assert!(config(&Args::parse_from(["aimlvid-sim", "--time-scale=-1"])).is_err());
    }

    fn config_for(argv: &[&str]) -> SimConfig {
        config(&Args::parse_from(argv)).unwrap()
    }
}
