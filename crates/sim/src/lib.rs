//! A faithful, strict simulator of the AI/ML API's asynchronous video
//! generation endpoints.
//!
//! It serves the same HTTP surface as the upstream:
//!
//! - `POST /v2/video/generations` creates a job (Bearer auth, body validated
//!   against the model's published schema, credits and concurrency checked),
//! - `GET /v2/video/generations?generation_id=ID` polls it through
//!   `queued` → `generating` → `completed` | `error` as virtual time passes,
//! - `GET|HEAD /files/{id}.mp4` serves the result like a CDN (ranges, no auth),
//!
//! - `GET /v2/logs` and `GET /models/metrics`, the service endpoints a
//!   client uses to find a lost create and to see how long models take,
//! - `GET /v1/models`, the model catalogue, with each model's price, and
//!   `GET /docs-json?model=ID`, the OpenAPI document it links for each,
//! - `GET /v2/billing/transactions`, the account's ledger, where each
//!   completed job's charge is recorded under its generation id,
//!
//! with the upstream's error bodies and receipt headers, plus scriptable
//! faults (status codes, rate limits, latency, dropped connections,
//! truncated bodies, HTML error pages, creates whose answer is lost, failed
//! jobs, expiring results, slow links) and introspection for tests. The
//! crate's README shows how to use it in your own test suite.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use aimlvid_sim::{Fault, Route, SimConfig, Simulator};
//!
//! let sim = Simulator::start(SimConfig::fast()).await?;
//! sim.inject(Route::Create, Fault::Status(503), 1);
//! // point a client at sim.base_url() with key aimlvid_sim::DEFAULT_API_KEY ...
//! assert_eq!(sim.stats().jobs_created, 0);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

// The README's examples compile as doctests, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

mod billing;
mod catalogue;
pub mod cli;
mod config;
mod files;
mod http;
mod server;
mod service;
mod state;
mod validate;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

pub use catalogue::AddedModel;
pub use config::{SimConfig, Spread};
pub use server::RunningSim;

use state::{Job, State};

/// The API key a default [`SimConfig`] accepts.
pub const DEFAULT_API_KEY: &str = "sim-key";

/// How many videos a finished job of a model that documents a list of
/// results answers with (see [`SimConfig::results_per_job`]).
pub const SEVERAL_RESULTS: usize = 2;

const INPUT_BYTES: &[u8] = include_bytes!("../assets/input.mp4");
const RESULT_BYTES: &[u8] = include_bytes!("../assets/result.mp4");

/// A small valid MP4 (2 s, 320x180, H.264 + AAC) to send as a `video_url`
/// data URI or upload.
pub static SAMPLE_INPUT: &[u8] = INPUT_BYTES;

/// The MP4 every completed job serves (3 s, 320x180, H.264 + AAC), unless
/// [`SimConfig::result_size`] pads it.
pub static SAMPLE_RESULT: &[u8] = RESULT_BYTES;

/// Smallest valid [`SimConfig::result_size`]: [`SAMPLE_RESULT`] plus the 8-byte
/// header of the `free` box that pads it.
pub const MIN_RESULT_SIZE: u64 = RESULT_BYTES.len() as u64 + 8;

/// A route of the simulated upstream, for faults and request records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Route {
    /// `POST /v2/video/generations`.
    Create,
    /// `GET /v2/video/generations?generation_id=ID`.
    Poll,
    /// `GET|HEAD /files/{id}.mp4`.
    Download,
    /// `GET /v2/logs`.
    Logs,
    /// `GET /models/metrics`.
    Metrics,
    /// `GET /v1/models`.
    Models,
    /// `GET /docs-json?model=ID`, a model's OpenAPI document.
    Documents,
    /// `GET /v2/billing/transactions`.
    Billing,
    /// Faults: every request. In a [`RequestRecord`]: a request that matched
    /// none of the routes above (it got a 404).
    Any,
}

/// A scripted misbehaviour of the upstream.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Fault {
    /// An error-shaped body with this status (429 carries `Retry-After: 1`).
    Status(u16),
    /// 429 with this `Retry-After`.
    RateLimited {
        /// Seconds in the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// Wait this long (real time), then handle the request normally.
    Latency(Duration),
    /// Close the TCP connection without sending a byte of response.
    DropConnection,
    /// Send the headers with the full `Content-Length`, then half the body,
    /// then close the connection. On polls and downloads the request is
    /// otherwise handled normally; a create is not performed and the cut body
    /// is a 502 error body (use [`Fault::AfterAccept`] for a cut create answer).
    TruncatedBody,
    /// 200 with an HTML error page (`content-type: text/html`), as a proxy in
    /// front of the upstream might answer.
    NonJson,
    /// Create only: the job is created (counted, billed) and then the inner
    /// fault is applied to the answer, so the client cannot know the job
    /// exists. If the create is refused anyway (400, 401, ...), the refusal
    /// is answered as usual. On other routes the inner fault applies directly.
    AfterAccept(Box<Fault>),
}

/// Request counters (a snapshot).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Stats {
    /// Creates received, whatever their outcome.
    pub create_requests: u64,
    /// Jobs that exist.
    pub jobs_created: u64,
    /// Polls received, whatever their outcome.
    pub poll_requests: u64,
    /// File requests received (including `HEAD` and ranges).
    pub download_requests: u64,
    /// File body bytes sent.
    pub bytes_served: u64,
}

/// One job, as the simulator sees it (a snapshot).
#[derive(Clone, Debug, PartialEq)]
pub struct JobStats {
    /// Generation id.
    pub id: String,
    /// Model id.
    pub model: String,
    /// Index in [`SimConfig::api_keys`] of the key that created the job.
    pub key_index: usize,
    /// Polls answered with this job's status.
    pub polls: u64,
    /// Virtual time of creation.
    pub created_at: Duration,
    /// Virtual time at which it becomes `completed` or `error`.
    pub finishes_at: Duration,
    /// Virtual time of the first poll answer that reported it finished: when
    /// the client noticed.
    pub first_finished_answer_at: Option<Duration>,
    /// The validated create body (long `data:` URIs elided to their length).
    pub request: Value,
}

/// One request received, in arrival order.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRecord {
    /// Which route it hit ([`Route::Any`]: none, it got a 404).
    pub route: Route,
    /// HTTP method.
    pub method: String,
    /// Real time since the simulator started ([`tokio::time::Instant`]).
    pub at: Duration,
    /// Response status; `0` while unanswered or if the connection was
    /// dropped without a response.
    pub status: u16,
    /// The generation it concerned: the id polled or downloaded, or the id a
    /// create produced.
    pub generation_id: Option<String>,
    /// The `Range` header of a download.
    pub range: Option<String>,
}

/// Cheap-clone handle (an `Arc` inside) to the simulated upstream's state.
#[derive(Clone, Debug)]
pub struct Simulator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: SimConfig,
    started: Instant,
    /// The wall-clock time at `started`: the sim's dates are this plus
    /// `started.elapsed()`, so they follow a paused or advanced tokio clock.
    started_wall: std::time::SystemTime,
    state: Mutex<State>,
}

impl Simulator {
    /// A simulator whose clock starts now.
    ///
    /// # Panics
    ///
    /// If the config is invalid (see [`SimConfig::validate`]).
    pub fn new(config: SimConfig) -> Self {
        if let Err(problem) = config.validate() {
            panic!("invalid SimConfig: {problem}");
        }
        let mut state = State::new(&config);
        let started_wall = std::time::SystemTime::now();
        billing::open_ledger(&mut state, &config, started_wall);
        Self {
            inner: Arc::new(Inner {
                config,
                started: Instant::now(),
                started_wall,
                state: Mutex::new(state),
            }),
        }
    }

    /// The whole upstream as an axum router, for embedding or `oneshot` tests.
    ///
    /// Without [`Simulator::start`]'s server, [`Fault::DropConnection`] cannot
    /// close a connection; the router then answers 502 with a body that fails
    /// on the first read.
    pub fn router(&self) -> axum::Router {
        http::router(self.clone())
    }

    /// Serves a new simulator on `127.0.0.1` at a free port.
    pub async fn start(config: SimConfig) -> std::io::Result<RunningSim> {
        Self::start_on(config, std::net::SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Serves a new simulator on `addr`, in a spawned task.
    pub async fn start_on(config: SimConfig, addr: std::net::SocketAddr) -> std::io::Result<RunningSim> {
        RunningSim::bind(Self::new(config), addr).await
    }

    /// Scripts a fault: the next `times` requests to `route` get `fault`.
    /// Scripted faults are served first-in first-out across `route` and
    /// [`Route::Any`], and before any rate fault.
    pub fn inject(&self, route: Route, fault: Fault, times: usize) {
        self.lock().faults.inject(route, fault, times);
    }

    /// A fault storm: each request to `route` gets `fault` with this
    /// probability (drawn from the seeded RNG). Setting the same route and
    /// fault again replaces the probability; `0.0` removes it.
    pub fn set_fault_rate(&self, route: Route, fault: Fault, probability: f64) {
        self.lock().faults.set_rate(route, fault, probability);
    }

    /// Removes every scripted fault and fault rate.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// A snapshot of one job.
    pub fn job(&self, id: &str) -> Option<JobStats> {
        self.lock().jobs.get(id).map(Job::stats)
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.lock().requests.clone()
    }

    /// Virtual time since the simulator started (real time × `time_scale`).
    pub fn virtual_now(&self) -> Duration {
        config::secs(self.inner.started.elapsed().as_secs_f64() * self.inner.config.time_scale)
    }

    /// Test helper: the job completes successfully now. Returns `false` if
    /// there is no such job or it had already finished.
    pub fn complete_now(&self, id: &str) -> bool {
        let now = self.virtual_now();
        let wall = self.wall_now();
        let credits = self.inner.config.credits_per_job;
        self.lock().jobs.get_mut(id).is_some_and(|job| {
            let done = job.complete_now(now, credits);
            if done {
                job.finished_wall = Some(wall);
            }
            done
        })
    }

    /// Test helper: the job fails now (status `error`, no credits used; a
    /// hold on the balance is given back). Returns `false` if there is no
    /// such job or it had already finished.
    pub fn fail_now(&self, id: &str) -> bool {
        let now = self.virtual_now();
        let wall = self.wall_now();
        self.lock().jobs.get_mut(id).is_some_and(|job| {
            let done = job.fail_now(now);
            if done {
                job.finished_wall = Some(wall);
            }
            done
        })
    }

    /// Credits left (`None`: unlimited). Credits held for jobs that have
    /// since failed are back.
    pub fn credit_balance(&self) -> Option<f64> {
        let now = self.virtual_now();
        let mut state = self.lock();
        state.refund_failed(now);
        state.credit_balance
    }

    /// The configuration this simulator runs with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// Every model id the simulator accepts (sorted).
    pub fn models() -> impl Iterator<Item = &'static str> {
        aimlvid::catalog::models().map(|m| m.id.as_str())
    }

    /// The published request schema of a model, as the simulator validates it.
    pub fn model_schema(model: &str) -> Option<&'static Value> {
        aimlvid::catalog::model(model).map(|m| &m.schema)
    }

    /// Real time since the simulator started.
    fn real_elapsed(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The simulator's wall clock: its start plus the (tokio) time elapsed.
    fn wall_now(&self) -> std::time::SystemTime {
        self.inner.started_wall + self.real_elapsed()
    }

    /// The wall-clock time at which virtual time reached `at`. Frozen
    /// virtual time never moves, so there it is now.
    fn wall_at(&self, at: Duration) -> std::time::SystemTime {
        let scale = self.inner.config.time_scale;
        if scale > 0.0 {
            self.inner.started_wall + config::secs(at.as_secs_f64() / scale)
        } else {
            self.wall_now()
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated
        // in a way that matters to a test double, so keep serving.
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Scripted faults and fault rates.
#[derive(Debug, Default)]
struct Faults {
    /// Per route, in injection order, with a global sequence number so
    /// `Route::Any` and route-specific scripts interleave first-in first-out.
    scripted: HashMap<Route, VecDeque<(u64, Fault)>>,
    next_seq: u64,
    rates: Vec<(Route, Fault, f64)>,
}

impl Faults {
    fn inject(&mut self, route: Route, fault: Fault, times: usize) {
        let queue = self.scripted.entry(route).or_default();
        for _ in 0..times {
            queue.push_back((self.next_seq, fault.clone()));
            self.next_seq += 1;
        }
    }

    fn set_rate(&mut self, route: Route, fault: Fault, probability: f64) {
        self.rates.retain(|(r, f, _)| !(*r == route && *f == fault));
        if probability > 0.0 {
            self.rates.push((route, fault, probability.min(1.0)));
        }
    }

    fn clear(&mut self) {
        self.scripted.clear();
        self.rates.clear();
    }

    /// The fault for the next request to `route`, if any.
    fn take(&mut self, route: Route, rng: &mut fastrand::Rng) -> Option<Fault> {
        let front = |q: Option<&VecDeque<(u64, Fault)>>| q.and_then(|q| q.front()).map(|f| f.0);
        let own = if route == Route::Any { None } else { front(self.scripted.get(&route)) };
        let any = front(self.scripted.get(&Route::Any));
        let pick = match (own, any) {
            (Some(a), Some(b)) => Some(if a < b { route } else { Route::Any }),
            (Some(_), None) => Some(route),
            (None, Some(_)) => Some(Route::Any),
            (None, None) => None,
        };
        if let Some(queue_route) = pick {
            return self.scripted.get_mut(&queue_route).and_then(VecDeque::pop_front).map(|(_, f)| f);
        }
        for (r, fault, p) in &self.rates {
            if (*r == route || *r == Route::Any) && rng.f64() < *p {
                return Some(fault.clone());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_faults_are_fifo_across_route_and_any() {
        let mut faults = Faults::default();
        let mut rng = fastrand::Rng::with_seed(1);
        faults.inject(Route::Poll, Fault::Status(500), 1);
        faults.inject(Route::Any, Fault::Status(502), 1);
        faults.inject(Route::Poll, Fault::Status(503), 2);
        assert_eq!(faults.take(Route::Create, &mut rng), Some(Fault::Status(502)));
        assert_eq!(faults.take(Route::Poll, &mut rng), Some(Fault::Status(500)));
        assert_eq!(faults.take(Route::Create, &mut rng), None);
        assert_eq!(faults.take(Route::Poll, &mut rng), Some(Fault::Status(503)));
        assert_eq!(faults.take(Route::Poll, &mut rng), Some(Fault::Status(503)));
        assert_eq!(faults.take(Route::Poll, &mut rng), None);
    }

    #[test]
    fn scripted_faults_come_before_rates_and_rates_can_be_removed() {
        let mut faults = Faults::default();
        let mut rng = fastrand::Rng::with_seed(1);
        faults.set_rate(Route::Create, Fault::Status(503), 1.0);
        faults.inject(Route::Create, Fault::NonJson, 1);
        assert_eq!(faults.take(Route::Create, &mut rng), Some(Fault::NonJson));
        assert_eq!(faults.take(Route::Create, &mut rng), Some(Fault::Status(503)));
        assert_eq!(faults.take(Route::Poll, &mut rng), None);
        faults.set_rate(Route::Create, Fault::Status(503), 0.0);
        assert_eq!(faults.take(Route::Create, &mut rng), None);
    }

    #[test]
    fn fault_rates_hit_about_as_often_as_asked() {
        let mut faults = Faults::default();
        let mut rng = fastrand::Rng::with_seed(7);
        faults.set_rate(Route::Any, Fault::Status(500), 0.25);
        let hits = (0..10_000).filter(|_| faults.take(Route::Poll, &mut rng).is_some()).count();
        assert!((2200..2800).contains(&hits), "{hits}");
    }

    #[test]
    fn sample_assets_are_mp4() {
        for asset in [SAMPLE_INPUT, SAMPLE_RESULT] {
            assert_eq!(&asset[4..8], b"ftyp");
            assert!(infer::is_video(asset));
        }
        assert!(SAMPLE_INPUT.len() < 60_000);
        assert!(SAMPLE_RESULT.len() < 100_000);
        assert_ne!(SAMPLE_INPUT, SAMPLE_RESULT);
    }
}
