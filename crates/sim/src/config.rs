//! Simulator configuration.

use std::time::Duration;

use crate::DEFAULT_API_KEY;

/// How a simulated upstream behaves. `Default` is a realistic upstream: one
/// key ([`DEFAULT_API_KEY`]), real time, a few seconds in the queue and about
/// 1 min 45 s of generation, no failures, unlimited credits.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Accepted `Authorization: Bearer` keys. Generations belong to the key that
    /// created them; another key cannot see them.
    pub api_keys: Vec<String>,
    /// Virtual seconds per real second (`1.0` = real time, `1000.0` = a
    /// 105 s generation takes 105 ms). Must be finite and not negative; `0.0`
    /// freezes virtual time, so jobs only finish through
    /// [`Simulator::complete_now`](crate::Simulator::complete_now).
    pub time_scale: f64,
    /// Virtual time a job stays `queued`.
    pub queue_time: Spread,
    /// Virtual time a job then stays `generating`, for models not in
    /// `model_generation_times`.
    pub generation_time: Spread,
    /// Per model id, its own generation time: models differ (a draft
    /// text-to-video model in half a minute, an avatar in several). Empty
    /// by default, so every model takes `generation_time`.
    pub model_generation_times: std::collections::BTreeMap<String, Spread>,
    /// Fraction of jobs (0.0..=1.0) that end in `error` instead of `completed`.
    pub failure_rate: f64,
    /// `meta.usage.credits_used` of a completed job (failed jobs report 0).
    pub credits_per_job: f64,
    /// Credits left; `None` is unlimited. Each create is charged
    /// `credits_per_job` when it is accepted; once the balance is below that,
    /// creates are refused with 403.
    pub credit_balance: Option<f64>,
    /// Unfinished jobs allowed per key; a create over it gets a genuine 429
    /// with `Retry-After`. `None` is unlimited.
    pub max_concurrent_jobs: Option<usize>,
    /// `None` serves [`SAMPLE_RESULT`](crate::SAMPLE_RESULT) as every result.
    /// `Some(n)` serves `SAMPLE_RESULT` followed by an MP4 `free` box that pads
    /// the file to exactly `n` bytes (still a valid MP4), generated on the fly
    /// in constant memory. `n` must be at least
    /// [`MIN_RESULT_SIZE`](crate::MIN_RESULT_SIZE).
    pub result_size: Option<u64>,
    /// Largest accepted create body; bigger ones get 413.
    pub max_body_bytes: usize,
    /// `None` answers a completed job's `video` as the catalog says its
    /// model does: one `{url}` object for most, a list of
    /// [`SEVERAL_RESULTS`](crate::SEVERAL_RESULTS) for the models that
    /// document `video` as an array (`bytedance/seedance-2-5`,
    /// `klingai/video-v3-omni-*`, …). `Some(n)` answers a list of `n` for
    /// every model.
    pub results_per_job: Option<usize>,
    /// A file host that ignores `Range` and always sends the whole file.
    pub ignore_range: bool,
    /// Reads create bodies at this many bytes a second (real time), as a
    /// slow uplink would deliver them; `None` reads them at full speed.
    pub upload_bytes_per_sec: Option<u64>,
    /// Sends result files at this many bytes a second (real time), as a
    /// slow downlink would; `None` sends them at full speed.
    pub download_bytes_per_sec: Option<u64>,
    /// Virtual time a completed job's result stays downloadable; after it
    /// the URL answers 403 (`Request has expired`), as a signed storage URL
    /// does. `None` keeps results for ever.
    pub result_ttl: Option<Duration>,
    /// Where completed jobs' files are announced (`video.url`), as a CDN
    /// in front of the upstream would serve them: `Some("https://cdn.example")`
    /// announces `https://cdn.example/files/{id}.mp4`. The real upstream's
    /// file URLs are https, which a create's `video_url` requires, so a
    /// finished result can be extended by its URL only under such a base.
    /// `None` announces this server's own address, where it serves them.
    pub files_url: Option<String>,
    /// Virtual time before a create shows in `GET /v2/logs`: the upstream's
    /// analytics pipeline is not instant.
    pub logs_delay: Duration,
    /// `GET /v2/logs` calls allowed per key in any 60 s (real time); more
    /// get 429. The upstream allows 200.
    pub logs_requests_per_minute: usize,
    /// Virtual time from a job's completion to its charge on the ledger
    /// (`GET /v2/billing/transactions`): the upstream records a charge
    /// after the generation reports `completed`, not with it. The entry is
    /// dated when it is recorded.
    pub ledger_delay: Duration,
    /// Models listed by `GET /v1/models` and accepted by creates beyond the
    /// built-in catalog, as the upstream adds models a build does not know
    /// (also at run time: [`Simulator::add_model`](crate::Simulator::add_model)).
    /// Empty by default.
    pub added_models: Vec<crate::AddedModel>,
    /// Built-in model ids the upstream no longer lists: absent from
    /// `GET /v1/models`, and a create for one is refused as an unknown model
    /// (also at run time: [`Simulator::drop_model`](crate::Simulator::drop_model)).
    /// Empty by default.
    pub dropped_models: Vec<String>,
    /// Seed of the one RNG behind durations, failures and fault rates, so a
    /// run is reproducible given the same sequence of requests.
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_keys: vec![DEFAULT_API_KEY.to_owned()],
            time_scale: 1.0,
            queue_time: Spread::Uniform { min: Duration::from_secs(2), max: Duration::from_secs(8) },
            generation_time: Spread::Normal {
                mean: Duration::from_secs(105),
                sd: Duration::from_secs(15),
                min: Duration::from_secs(30),
            },
            model_generation_times: std::collections::BTreeMap::new(),
            failure_rate: 0.0,
            credits_per_job: 120_000.0,
            credit_balance: None,
            max_concurrent_jobs: None,
            result_size: None,
            max_body_bytes: 64 * 1024 * 1024,
            results_per_job: None,
            ignore_range: false,
            upload_bytes_per_sec: None,
            download_bytes_per_sec: None,
            result_ttl: None,
            files_url: None,
            logs_delay: Duration::ZERO,
            logs_requests_per_minute: 200,
            ledger_delay: Duration::ZERO,
            added_models: Vec::new(),
            dropped_models: Vec::new(),
            seed: 0x5EED_A1A1_2025,
        }
    }
}

impl SimConfig {
    /// A config for fast tests: real-time scale 1000 and fixed durations, so
    /// a job is `queued` for 2 ms and `generating` for 5 ms of real time.
    pub fn fast() -> Self {
        Self {
            time_scale: 1000.0,
            queue_time: Spread::Fixed(Duration::from_secs(2)),
            generation_time: Spread::Fixed(Duration::from_secs(5)),
            ..Self::default()
        }
    }

    /// Checks the values [`Simulator::new`](crate::Simulator::new) would
    /// reject, with a message saying what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if !self.time_scale.is_finite() || self.time_scale < 0.0 {
            return Err(format!("time_scale must be finite and >= 0, got {}", self.time_scale));
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!("failure_rate must be within 0..=1, got {}", self.failure_rate));
        }
        if !self.credits_per_job.is_finite() || self.credits_per_job < 0.0 {
            return Err(format!("credits_per_job must be finite and >= 0, got {}", self.credits_per_job));
        }
        if let Some(balance) = self.credit_balance
            && balance.is_nan()
        {
            return Err("credit_balance must not be NaN".to_owned());
        }
        if let Some(size) = self.result_size
            && size < crate::MIN_RESULT_SIZE
        {
            return Err(format!(
                "result_size must be at least {} (the sample result plus an 8-byte box header), got {size}",
                crate::MIN_RESULT_SIZE
            ));
        }
        Ok(())
    }
}

/// A distribution of virtual durations.
#[derive(Clone, Copy, Debug)]
pub enum Spread {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly distributed between `min` and `max` (inclusive).
    Uniform {
        /// Shortest duration.
        min: Duration,
        /// Longest duration.
        max: Duration,
    },
    /// Normally distributed, never below `min`.
    Normal {
        /// Mean duration.
        mean: Duration,
        /// Standard deviation.
        sd: Duration,
        /// Floor applied after sampling.
        min: Duration,
    },
}

impl Spread {
    /// Draws one duration.
    pub(crate) fn sample(&self, rng: &mut fastrand::Rng) -> Duration {
        match *self {
            Spread::Fixed(d) => d,
            Spread::Uniform { min, max } => {
                let (lo, hi) = if min <= max { (min, max) } else { (max, min) };
                let span = (hi - lo).as_secs_f64();
                lo + secs(span * rng.f64())
            }
            Spread::Normal { mean, sd, min } => {
                // Box-Muller; `1 - f64()` keeps the logarithm's argument in (0, 1].
                let u1 = 1.0 - rng.f64();
                let u2 = rng.f64();
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let x = mean.as_secs_f64() + z * sd.as_secs_f64();
                secs(x).max(min)
            }
        }
    }
}

/// Seconds to a `Duration`, saturating instead of panicking.
pub(crate) fn secs(s: f64) -> Duration {
    if s.is_nan() || s <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(s).unwrap_or(Duration::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_is_fixed() {
        let mut rng = fastrand::Rng::with_seed(1);
        let d = Duration::from_millis(1234);
        for _ in 0..100 {
            assert_eq!(Spread::Fixed(d).sample(&mut rng), d);
        }
    }

    #[test]
    fn uniform_stays_in_bounds_either_way_round() {
        let mut rng = fastrand::Rng::with_seed(2);
        let (a, b) = (Duration::from_secs(2), Duration::from_secs(8));
        for spread in [Spread::Uniform { min: a, max: b }, Spread::Uniform { min: b, max: a }] {
            let samples: Vec<_> = (0..2000).map(|_| spread.sample(&mut rng)).collect();
            assert!(samples.iter().all(|d| (a..=b).contains(d)));
            // Spread out, not stuck at one end.
            assert!(samples.iter().any(|d| *d < Duration::from_secs(3)));
            assert!(samples.iter().any(|d| *d > Duration::from_secs(7)));
        }
    }

    #[test]
    fn normal_respects_floor_and_centres_on_mean() {
        let mut rng = fastrand::Rng::with_seed(3);
        let spread = Spread::Normal {
            mean: Duration::from_secs(105),
            sd: Duration::from_secs(15),
            min: Duration::from_secs(30),
        };
        let samples: Vec<f64> = (0..5000).map(|_| spread.sample(&mut rng).as_secs_f64()).collect();
        assert!(samples.iter().all(|s| *s >= 30.0));
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!((mean - 105.0).abs() < 2.0, "mean {mean}");
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!((var.sqrt() - 15.0).abs() < 2.0, "sd {}", var.sqrt());

        // A floor above the mean clamps everything.
        let floored = Spread::Normal {
            mean: Duration::from_secs(1),
            sd: Duration::from_secs(1),
            min: Duration::from_secs(10),
        };
        assert!((0..100).all(|_| floored.sample(&mut rng) == Duration::from_secs(10)));
    }

    #[test]
    fn sampling_is_seeded() {
        let spread = SimConfig::default().generation_time;
        let a: Vec<_> = {
            let mut rng = fastrand::Rng::with_seed(9);
            (0..10).map(|_| spread.sample(&mut rng)).collect()
        };
        let b: Vec<_> = {
            let mut rng = fastrand::Rng::with_seed(9);
            (0..10).map(|_| spread.sample(&mut rng)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn validate_rejects_nonsense() {
        assert!(SimConfig::default().validate().is_ok());
        let bad = |f: fn(&mut SimConfig)| {
            let mut c = SimConfig::default();
            f(&mut c);
            c.validate().is_err()
        };
        assert!(bad(|c| c.time_scale = -1.0));
        assert!(bad(|c| c.time_scale = f64::INFINITY));
        assert!(bad(|c| c.failure_rate = 1.5));
        assert!(bad(|c| c.result_size = Some(10)));
        assert!(!bad(|c| c.result_size = Some(crate::MIN_RESULT_SIZE)));
    }
}
