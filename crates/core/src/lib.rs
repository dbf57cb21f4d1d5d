//! A typed client for the [AI/ML API](https://aimlapi.com)'s asynchronous
//! video generation, built around extending clips with Google Veo 3.1.
//!
//! A job is created with `POST /v2/video/generations`, which answers with an
//! id, and followed with `GET /v2/video/generations?generation_id=ID` as it
//! moves `queued` → `generating` → `completed` or `error`. This crate does
//! that dance for you, and does it carefully:
//!
//! - **Creating costs money**, so [`Client::create`] is retried only when the
//!   API cannot have accepted the request. When it may have, the error says
//!   so ([`Error::CreateOutcomeUnknown`]) instead of billing a second job.
//! - **Waiting** follows a [`PollPolicy`] fitted to each job's model
//!   ([`Client::poll_policy_for`]: its recent durations, read from the
//!   API's metrics once per model, else its family's typical ones), honours `Retry-After`, rides out storms of 429s and 5xx, can
//!   be watched as a [`Stream`](futures_util::Stream) of status changes
//!   ([`Client::watch_created`]), and stops when dropped.
//! - **Resuming** needs only the generation id: [`Client::wait`].
//! - **Downloading** streams to disk in constant memory, resumes a partial
//!   file, and never leaves a half-written one ([`Client::download_url`]).
//! - **Every video model** is in the [`catalog`], and a request that its
//!   model would refuse is refused before it is sent.
//! - **The key** is a secret: it never appears in `Debug` output, logs or errors.
//!
//! # Example
//!
//! Extend a local clip and save the result. Here the client talks to the
//! `aimlvid-sim` simulator, started in-process and running 600 times faster
//! than real time (so `time_scale(600.0)`: polls and retries wait 600 times
//! less); against the real API, drop the simulator lines and build the client
//! with `Client::from_env()` and `AIMLAPI_API_KEY` set.
//!
//! ```
//! use aimlvid::{Client, ExtendVideo, VideoInput};
//! use aimlvid_sim::{SimConfig, Simulator};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let sim = Simulator::start(SimConfig { time_scale: 600.0, ..SimConfig::default() }).await?;
//! # let dir = tempfile::tempdir()?;
//! # let clip = dir.path().join("clip.mp4");
//! # std::fs::write(&clip, aimlvid_sim::SAMPLE_INPUT)?;
//! # let output = dir.path().join("extended.mp4");
//! let client = Client::builder()
//!     .api_key(aimlvid_sim::DEFAULT_API_KEY)
//!     .base_url(sim.base_url())
//!     .time_scale(600.0)
//!     .build()?;
//!
//! let clip = VideoInput::from_file(&clip).await?; // or VideoInput::url("https://…")
//! let request = ExtendVideo::new("The raccoon looks up at a passing owl", clip);
//! // Polled on a schedule fitted to the model (`Client::poll_policy_for`).
//! let job = client.create_and_wait(&request).await?;
//! println!("{} used {:?} credits", job.id, job.credits_used());
//!
//! let file = client.download(&job, &output).await?;
//! assert_eq!(std::fs::read(&file.path)?, aimlvid_sim::SAMPLE_RESULT);
//! # Ok(())
//! # }
//! ```
//!
//! Any other model takes a [`GenericRequest`]: its parameters by name, media
//! as a [`MediaInput`] (a local file, sent inline, or a URL), checked against
//! the model in the [`catalog`] before anything is sent. `examples/generate.rs`
//! runs one with its progress.
//!
//! To show progress, follow the job's status changes instead of waiting:
//!
//! ```no_run
//! # async fn run(client: aimlvid::Client, request: aimlvid::ExtendVideo) -> aimlvid::Result<()> {
//! use futures_util::StreamExt as _;
//!
//! let created = client.create(&request).await?;
//! // Record `created.id` somewhere durable first: it is all that is needed
//! // to find the job again with `client.wait(id)`.
//! let mut changes = client.watch_created(created);
//! // A failed job ends the stream as `Err(Error::GenerationFailed)`:
//! // `job?` stops there, with the API's reason.
//! while let Some(job) = changes.next().await {
//!     println!("now {}", job?.status);
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod billing;
pub mod catalog;
mod client;
mod credits;
mod download;
mod error;
mod input;
mod model;
mod observe;
mod poll;
mod pricing;
mod retry;
mod trace;

pub use billing::{Amount, Direction, Transaction, TransactionPage, TransactionQuery, TransactionType};
pub use client::{
    API_KEY_ENV_VARS, BASE_URL_ENV_VARS, Client, ClientBuilder, DEFAULT_BASE_URL, DEFAULT_MIN_UPLOAD_RATE,
    TIME_SCALE_ENV_VAR, is_local_url,
};
pub use credits::{Credits, UsdParseError};
pub use download::{DownloadProgress, Downloaded, OpenedFile, partial_path};
pub use error::{Error, Result};
pub use input::{DEFAULT_MAX_INLINE_BYTES, MediaInput, VideoInput};
pub use model::{
    AspectRatio, CreateRequest, ExtendModel, ExtendVideo, Generation, GenerationError, GenericRequest, Meta,
    Provider, Resolution, Status, Usage, Video, Videos,
};
pub use observe::{CallKind, Exchange, Observer};
pub use poll::{JobDurations, PollPolicy, Watch};
pub use pricing::{
    CREDITS_PER_USD, CatalogueChanges, LiveCatalogue, ModelListing, ModelQuery, Pricing, Rate,
};
pub use retry::RetryPolicy;
pub use trace::{ClientRequestId, CreateLookup, LogCost, LogRow, Receipt};
