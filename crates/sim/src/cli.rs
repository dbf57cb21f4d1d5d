//! The simulator's command-line options, shared by the `aimlvid-sim`
//! binary and `aimlvid sim`, so both take the same flags with the same meaning.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;

use crate::{Fault, MIN_RESULT_SIZE, Route, RunningSim, SimConfig, Simulator, Spread};

/// Options that start a simulator on a port.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0: any free port).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// An accepted API key (repeat for several) [default: sim-key].
    #[arg(long = "key", value_name = "KEY")]
    pub keys: Vec<String>,
    /// Virtual seconds per real second (e.g. 60 makes a 105 s job take ~2 s).
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub time_scale: f64,
    /// Virtual seconds a job stays queued: `MIN-MAX` (uniform) or `SECS`.
    #[arg(long, value_name = "MIN-MAX", value_parser = parse_queue_secs)]
    pub queue_secs: Option<Spread>,
    /// Mean virtual seconds of generation (normally spread, sd = mean / 7).
    #[arg(long, value_name = "MEAN")]
    pub generation_secs: Option<f64>,
    /// A model's own mean generation seconds (same spread as
    /// --generation-secs), as ID=MEAN; repeat for several models
    #[arg(long = "model-generation-secs", value_name = "ID=MEAN", value_parser = parse_model_secs)]
    pub model_generation_secs: Vec<(String, f64)>,
    /// Fraction of jobs that end in `error`.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub failure_rate: f64,
    /// Probability that a create or poll gets a 429 (`Retry-After: 1`).
    #[arg(long, value_name = "P")]
    pub rate_limit_rate: Option<f64>,
    /// Probability that a create or poll gets a 503.
    #[arg(long, value_name = "P")]
    pub server_error_rate: Option<f64>,
    /// Pad every result MP4 to exactly this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub result_size: Option<u64>,
    /// Unfinished jobs allowed per key (further creates get 429).
    #[arg(long, value_name = "N")]
    pub max_concurrent_jobs: Option<usize>,
    /// Credits available (creates get 403 once spent) [default: unlimited].
    #[arg(long, value_name = "CREDITS")]
    pub credit_balance: Option<f64>,
    /// Virtual seconds a result stays downloadable (then its URL answers
    /// 403) [default: for ever].
    #[arg(long, value_name = "SECS")]
    pub result_ttl_secs: Option<f64>,
    /// Virtual seconds before a create shows in `GET /v2/logs`.
    #[arg(long, value_name = "SECS")]
    pub logs_delay_secs: Option<f64>,
    /// Answer `video` as a list of N results, as some models do.
    #[arg(long, value_name = "N")]
    pub results_per_job: Option<usize>,
    /// Serve results that ignore `Range` requests.
    #[arg(long)]
    pub ignore_range: bool,
    /// Read create bodies at this many bytes a second (a slow uplink).
    #[arg(long, value_name = "BYTES")]
    pub upload_bytes_per_sec: Option<u64>,
    /// Send result files at this many bytes a second (a slow downlink).
    #[arg(long, value_name = "BYTES")]
    pub download_bytes_per_sec: Option<u64>,
    /// List and accept a text-to-video model the build does not know
    /// (a required prompt, 5 or 10 s); repeat for several.
    #[arg(long = "add-model", value_name = "ID")]
    pub add_models: Vec<String>,
    /// Stop listing a built-in model and refuse creates for it, as a
    /// retired one; repeat for several.
    #[arg(long = "drop-model", value_name = "ID", value_parser = parse_known_model)]
    pub drop_models: Vec<String>,
    /// Seed for durations, failures and fault rates.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

fn parse_known_model(id: &str) -> Result<String, String> {
    match aimlvid::catalog::model(id.trim()) {
        Some(model) => Ok(model.id.clone()),
        None => Err(format!("{id:?} is not a model the simulator knows; `aimlvid models` lists them")),
    }
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

/// The default's shape (105 s, sd 15 s, floor 30 s), scaled to `mean`.
fn shaped_like_the_default(mean: Duration) -> Spread {
    Spread::Normal { mean, sd: mean / 7, min: mean * 2 / 7 }
}

/// `ID=MEAN`, as `--model-generation-secs` takes it.
fn parse_model_secs(s: &str) -> Result<(String, f64), String> {
    let (id, mean) =
        s.split_once('=').ok_or_else(|| format!("{s:?} is not ID=MEAN (e.g. google/veo3=60)"))?;
    let mean: f64 = mean.trim().parse().map_err(|_| format!("{mean:?} is not a number of seconds"))?;
    if aimlvid::catalog::model(id.trim()).is_none() {
        return Err(format!("{id:?} is not a model the simulator knows; `aimlvid models` lists them"));
    }
    Ok((id.trim().to_owned(), mean))
}

impl SimArgs {
    /// The simulator configuration these options describe, or what is wrong with them.
    pub fn config(&self) -> Result<SimConfig, String> {
        let mut config = SimConfig::default();
        if !self.keys.is_empty() {
            config.api_keys = self.keys.clone();
        }
        config.time_scale = self.time_scale;
        if let Some(queue) = self.queue_secs {
            config.queue_time = queue;
        }
        if let Some(mean) = self.generation_secs {
            let mean = Duration::try_from_secs_f64(mean)
                .map_err(|_| format!("--generation-secs {mean} is not a duration"))?;
            // The default's shape (105 s, sd 15 s, floor 30 s), scaled to the mean.
            config.generation_time = shaped_like_the_default(mean);
        }
        for (model, mean) in &self.model_generation_secs {
            let mean = Duration::try_from_secs_f64(*mean)
                .map_err(|_| format!("--model-generation-secs {model}={mean} is not a duration"))?;
            config.model_generation_times.insert(model.clone(), shaped_like_the_default(mean));
        }
        config.added_models =
            self.add_models.iter().map(|id| crate::AddedModel::text_to_video(id.trim())).collect();
        config.dropped_models = self.drop_models.clone();
        config.failure_rate = self.failure_rate;
        config.result_size = self.result_size;
        config.max_concurrent_jobs = self.max_concurrent_jobs;
        config.credit_balance = self.credit_balance;
        let secs = |flag: &str, v: f64| {
            Duration::try_from_secs_f64(v).map_err(|_| format!("--{flag} {v} is not a duration"))
        };
        config.result_ttl = self.result_ttl_secs.map(|v| secs("result-ttl-secs", v)).transpose()?;
        if let Some(v) = self.logs_delay_secs {
            config.logs_delay = secs("logs-delay-secs", v)?;
        }
        config.results_per_job = self.results_per_job;
        config.ignore_range = self.ignore_range;
        config.upload_bytes_per_sec = self.upload_bytes_per_sec;
        config.download_bytes_per_sec = self.download_bytes_per_sec;
        if let Some(seed) = self.seed {
            config.seed = seed;
        }
        config
            .validate()
            .map_err(|problem| format!("{problem} (the smallest --result-size is {MIN_RESULT_SIZE})"))?;
        Ok(config)
    }

    /// The address to listen on.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    /// Starts the simulator these options describe, with its fault rates set.
    pub async fn start(&self) -> Result<RunningSim, String> {
        let config = self.config()?;
        let addr = self.addr();
        let sim =
            Simulator::start_on(config, addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        for (fault, rate) in [
            (Fault::RateLimited { retry_after_secs: 1 }, self.rate_limit_rate),
            (Fault::Status(503), self.server_error_rate),
        ] {
            if let Some(p) = rate {
                sim.set_fault_rate(Route::Create, fault.clone(), p);
                sim.set_fault_rate(Route::Poll, fault, p);
            }
        }
        Ok(sim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory as _, Parser};

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        sim: SimArgs,
    }

    fn parse(argv: &[&str]) -> SimArgs {
        Wrapper::parse_from(std::iter::once("sim").chain(argv.iter().copied())).sim
    }

    #[test]
    fn options_are_well_formed() {
        Wrapper::command().debug_assert();
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
        let built = parse(&[
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
            "--result-size",
            "524288000",
            "--result-ttl-secs",
            "3600",
            "--logs-delay-secs",
            "2.5",
        ])
        .config()
        .unwrap();
        assert_eq!(built.api_keys, ["a", "b"]);
        assert_eq!(built.time_scale, 60.0);
        assert_eq!(built.seed, 7);
        assert_eq!(built.result_size, Some(524_288_000));
        assert_eq!(built.result_ttl, Some(Duration::from_secs(3600)));
        assert_eq!(built.logs_delay, Duration::from_millis(2500));
        assert!(parse(&["--result-ttl-secs=-1"]).config().is_err());
        assert!(matches!(
            built.generation_time,
            Spread::Normal { mean, sd, min }
                if mean == Duration::from_secs(70) && sd == Duration::from_secs(10) && min == Duration::from_secs(20)
        ));
        assert_eq!(parse(&[]).config().unwrap().api_keys, [crate::DEFAULT_API_KEY]);
        let err = parse(&["--result-size", "10"]).config().unwrap_err();
        assert!(err.contains("the smallest --result-size is"), "{err}");
        assert!(parse(&["--time-scale=-1"]).config().is_err());
    }
}
