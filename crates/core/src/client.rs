//! The client: configuration, and the create and poll calls.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret as _, SecretString};
use tracing::Instrument as _;

use crate::error::{ApiErrorBody, Error, Result, excerpt};
use crate::model::{CreateRequest, Generation};
use crate::observe::{CallKind, Exchange, Observer};
use crate::poll::{JobDurations, PollPolicy, Watch, WatchPolicy, watch};
use crate::pricing::{LiveCatalogue, ModelList, ModelListing, ModelQuery};
use crate::retry::{RetryPolicy, retry_after};
use crate::trace::{ClientRequestId, CreateLookup, LogPage, LogRow, Receipt, search_window};

/// How long an idle connection is kept for reuse.
const IDLE_CONNECTION_REUSE: Duration = Duration::from_secs(20);

/// The AI/ML API's address.
pub const DEFAULT_BASE_URL: &str = "https://api.aimlapi.com";

const GENERATIONS_PATH: &str = "v2/video/generations";

/// The environment variables [`Client::from_env`] reads the key from, first
/// set one wins: ours, then the official Python SDK's.
pub const API_KEY_ENV_VARS: [&str; 2] = ["AIMLAPI_API_KEY", "AIML_API_KEY"];

/// The environment variables [`Client::from_env`] reads the base URL from,
/// first set one wins: ours, then the official Python SDK's.
pub const BASE_URL_ENV_VARS: [&str; 2] = ["AIMLAPI_BASE_URL", "AIMLAPI_API_BASE"];

/// The environment variable [`Client::from_env`] reads a simulator's time
/// scale from (see [`ClientBuilder::time_scale`]): what `aimlvid sim
/// --time-scale N` prints beside the base URL and key to use.
pub const TIME_SCALE_ENV_VAR: &str = "AIMLVID_TIME_SCALE";

/// A client of the AI/ML API's video generation endpoints.
///
/// Cheap to clone: clones share one connection pool and configuration.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// For creates: no read timeout, whose timer would run while a large
    /// clip is still being uploaded; the create's own deadline covers it.
    uploads: reqwest::Client,
    /// Bytes a second an upload is allowed, at the slowest.
    min_upload_rate: u64,
    base_url: url::Url,
    endpoint: url::Url,
    auth: HeaderValue,
    poll: PollPolicy,
    /// Whether `poll` was set: else each job's schedule is fitted to its model.
    poll_set: bool,
    /// How much faster than real time the server runs.
    time_scale: f64,
    /// What each model's metrics said when last read, and until when that is trusted.
    metrics: Mutex<HashMap<String, KnownDurations>>,
    /// One metrics read at a time per model, so that many jobs of a model
    /// created at once cost one read.
    metrics_reads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The model of each recent create, so that `watch_created` can fit
    /// its schedule; bounded, oldest forgotten first.
    created_models: Mutex<VecDeque<(String, String)>>,
    retry: RetryPolicy,
    request_timeout: Duration,
    observer: Option<Arc<dyn Observer>>,
    validate: bool,
    /// The API's catalogue as last read or given: creates resolve aliases
    /// with it, else with the built-in catalog.
    live: Mutex<Option<Arc<LiveCatalogue>>>,
    /// The schemas of models only the live catalogue lists, read from
    /// their OpenAPI documents, by id.
    live_specs: Mutex<HashMap<String, Arc<crate::catalog::ModelSpec>>>,
}

/// The key is never shown: only the base URL and policies are.
impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("api_key", &"[redacted]")
            .field("poll", &self.inner.poll)
            .field("retry", &self.inner.retry)
            .field("request_timeout", &self.inner.request_timeout)
            .finish()
    }
}

/// Builds a [`Client`].
pub struct ClientBuilder {
    api_key: Option<SecretString>,
    base_url: String,
    poll: Option<PollPolicy>,
    time_scale: f64,
    /// `AIMLVID_TIME_SCALE`, read by `from_env`: used only for a server on
    /// this machine or a private network, and only if `time_scale` is not called.
    env_time_scale: Option<f64>,
    retry: RetryPolicy,
    connect_timeout: Duration,
    request_timeout: Duration,
    read_timeout: Duration,
    min_upload_rate: u64,
    user_agent: String,
    observer: Option<Arc<dyn Observer>>,
    allow_plain_http: bool,
    max_retry_after: Option<Duration>,
    validate: bool,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("base_url", &self.base_url)
            .field("poll", &self.poll)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            api_key: None,
            base_url: DEFAULT_BASE_URL.to_owned(),
            poll: None,
            time_scale: 1.0,
            env_time_scale: None,
            retry: RetryPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            // Creates may upload a clip of tens of megabytes inline.
            request_timeout: Duration::from_secs(120),
            read_timeout: Duration::from_secs(30),
            min_upload_rate: DEFAULT_MIN_UPLOAD_RATE,
            user_agent: concat!("aimlvid/", env!("CARGO_PKG_VERSION")).to_owned(),
            observer: None,
            allow_plain_http: false,
            max_retry_after: None,
            validate: true,
        }
    }
}

impl ClientBuilder {
    /// Whether [`Client::create`] checks each request against its model in
    /// the [catalog](crate::catalog) first, refusing one that does not fit
    /// with [`Error::Validation`] before anything is sent (on by default).
    /// Turn it off only when the catalog is behind the API you call. Off,
    /// it also sends a model the live catalogue no longer lists
    /// ([`Error::ModelNotListed`]). A model neither catalogue describes is
    /// sent unchecked either way; one only the live catalogue lists is
    /// checked against its document when on ([`Client::live_model_spec`]).
    pub fn validate_requests(mut self, on: bool) -> Self {
        self.validate = on;
        self
    }

    /// Reads the key and base URL from the environment, leaving everything
    /// else at its default: `AIMLAPI_API_KEY` (or `AIML_API_KEY`, the
    /// official Python SDK's name) and `AIMLAPI_BASE_URL` (or
    /// `AIMLAPI_API_BASE`). Variables that are unset or empty are ignored.
    /// `AIMLVID_TIME_SCALE`, for a simulator running that many times faster
    /// than real time, is used only when the base URL is on this machine or
    /// a private network (against the API it would only poll too often),
    /// and only if [`ClientBuilder::time_scale`] is not called.
    pub fn from_env() -> Self {
        let mut builder = ClientBuilder::default();
        if let Some(key) = first_env(&API_KEY_ENV_VARS) {
            builder = builder.api_key(key);
        }
        if let Some(base) = first_env(&BASE_URL_ENV_VARS) {
            builder = builder.base_url(base);
        }
        if let Some(raw) = first_env(&[TIME_SCALE_ENV_VAR]) {
            match raw.trim().parse::<f64>() {
                Ok(scale) if scale.is_finite() && scale > 0.0 => builder.env_time_scale = Some(scale),
                _ => tracing::warn!("ignoring {TIME_SCALE_ENV_VAR}={raw:?}: not a number above 0"),
            }
        }
        builder
    }

    /// Sets the API key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(SecretString::from(key.into()));
        self
    }

    /// Allows a plain `http://` base URL on any host. Without it, `http://`
    /// is accepted only for loopback and private addresses (a simulator, a
    /// team proxy on the local network), since it sends the key unencrypted.
    pub fn allow_plain_http(mut self, allow: bool) -> Self {
        self.allow_plain_http = allow;
        self
    }

    /// Sets the server, such as a team proxy or a simulator. A trailing
    /// `/v1` or `/v2`, as some SDKs' base URLs have, is accepted.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// Sets when to poll while waiting, for every job. Without it, each
    /// job is polled on a schedule fitted to its model
    /// ([`Client::poll_policy_for`]).
    pub fn poll_policy(mut self, policy: PollPolicy) -> Self {
        self.poll = Some(policy);
        self
    }

    /// For a server whose clock runs `time_scale` times faster than real
    /// time, such as the `aimlvid-sim` simulator started with the same
    /// scale: divides every poll and retry wait by it. A scale that is not
    /// a finite number above 0 is ignored. Against the real API, leave it at 1.
    pub fn time_scale(mut self, time_scale: f64) -> Self {
        if time_scale.is_finite() && time_scale > 0.0 {
            self.time_scale = time_scale;
            self.env_time_scale = None;
        }
        self
    }

    /// Sets how polls and downloads are retried (creates are never retried
    /// once they may have reached the API).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the limit on establishing a connection.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// The longest `Retry-After` waited out, whatever retry policy is set
    /// (see [`RetryPolicy::max_retry_after`]).
    pub fn max_retry_after(mut self, d: Duration) -> Self {
        self.max_retry_after = Some(d);
        self
    }

    /// Sets the limit on one API call. A create gets this long for its
    /// answer, plus the time its body needs at [`ClientBuilder::min_upload_rate`].
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.request_timeout = d;
        self
    }

    /// Sets the slowest upload allowed, in bytes a second (default 64 KiB/s,
    /// about half a megabit: the largest inline clip, 27 MB of base64, gets
    /// about seven minutes). A create is never cut off mid-upload on a link
    /// at least this fast, so a slow uplink does not turn a create into one
    /// whose outcome is unknown.
    pub fn min_upload_rate(mut self, bytes_per_second: u64) -> Self {
        self.min_upload_rate = bytes_per_second.max(1);
        self
    }

    /// Sets the limit on silence while reading a response, downloads included.
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.read_timeout = d;
        self
    }

    /// Sets the `User-Agent` header.
    pub fn user_agent(mut self, agent: impl Into<String>) -> Self {
        self.user_agent = agent.into();
        self
    }

    /// Reports every HTTP exchange, retries included, to `observer`.
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<Client> {
        let key = self.api_key.ok_or(Error::MissingApiKey)?;
        if key.expose_secret().trim().is_empty() {
            return Err(Error::MissingApiKey);
        }
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", key.expose_secret().trim())).map_err(|_| {
                Error::Config("the API key contains characters not allowed in an HTTP header".into())
            })?;
        // Keeps the key out of reqwest's and hyper's own debug output.
        auth.set_sensitive(true);

        let base_url = normalise_base_url(&self.base_url)?;
        if base_url.scheme() == "http" && !self.allow_plain_http && !is_local(&base_url) {
            return Err(Error::PlainHttp { base_url: base_url.as_str().trim_end_matches('/').to_owned() });
        }
        let time_scale = match self.env_time_scale {
            Some(scale) if is_local(&base_url) => scale,
            _ => self.time_scale,
        };
        let endpoint = base_url
            .join(GENERATIONS_PATH)
            .map_err(|e| Error::Config(format!("base URL {:?}: {e}", self.base_url)))?;
        let http_builder = || {
            reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .user_agent(&self.user_agent)
                // Shorter than the idle limits servers and load balancers
                // commonly keep (30 s and up), so that a request, a create
                // above all, is never sent on a connection the server is
                // closing, which would leave its outcome unknown.
                .pool_idle_timeout(IDLE_CONNECTION_REUSE)
        };
        let setup = |e: reqwest::Error| Error::Config(format!("could not set up HTTP: {e}"));
        let http = http_builder().read_timeout(self.read_timeout).build().map_err(setup)?;
        let uploads = http_builder().build().map_err(setup)?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                uploads,
                min_upload_rate: self.min_upload_rate,
                base_url,
                endpoint,
                auth,
                poll_set: self.poll.is_some(),
                poll: self.poll.unwrap_or_default().time_scaled(time_scale),
                time_scale,
                metrics: Mutex::default(),
                metrics_reads: Mutex::default(),
                created_models: Mutex::default(),
                retry: RetryPolicy {
                    max_retry_after: self.max_retry_after.unwrap_or(self.retry.max_retry_after),
                    ..self.retry.time_scaled(time_scale)
                },
                request_timeout: self.request_timeout,
                observer: self.observer,
                validate: self.validate,
                live: Mutex::default(),
                live_specs: Mutex::default(),
            }),
        })
    }
}

fn first_env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// How long a read of a model's metrics is trusted before the next job of
/// that model reads them again: they describe the upstream's recent window.
const METRICS_TTL: Duration = Duration::from_secs(3600);
/// After a failed read, how long jobs go on the family's prior before one
/// tries again: a read that failed should not slow every job down.
const METRICS_RETRY: Duration = Duration::from_secs(300);
/// How long a job waits for its model's metrics before going on without
/// them; every job's first poll comes later than this.
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// A model's durations as a read of its metrics left them (`None`: the
/// upstream had none, or the read failed), trusted until `until`.
#[derive(Debug, Clone, Copy)]
struct KnownDurations {
    durations: Option<JobDurations>,
    until: tokio::time::Instant,
}

/// `GET /models/metrics`'s answer, the parts read here.
#[derive(serde::Deserialize)]
struct MetricsReport {
    #[serde(default)]
    models: Vec<ModelMetrics>,
}

#[derive(serde::Deserialize)]
struct ModelMetrics {
    alias: String,
    metrics: Option<MetricSet>,
}

#[derive(serde::Deserialize)]
struct MetricSet {
    duration_ms: Option<Percentiles>,
}

#[derive(serde::Deserialize)]
struct Percentiles {
    p50: f64,
    p90: f64,
}

/// Refuses a body its catalog model does not accept. A model the catalog
/// does not know may be newer than it, so it goes to the API unchecked.
fn check_against_catalog(body: &serde_json::Value) -> Result<()> {
    match crate::catalog::validate(body) {
        Ok(_) => Ok(()),
        Err(crate::catalog::Invalid::UnknownModel { given, .. }) => {
            tracing::debug!(model = %given, "model not in the catalog; sent unchecked");
            Ok(())
        }
        Err(invalid) => Err(Error::Validation(invalid)),
    }
}

/// The slowest upload a create is allowed by default, in bytes a second.
pub const DEFAULT_MIN_UPLOAD_RATE: u64 = 64 * 1024;

/// Whether a base URL points at this machine or a private network
/// (loopback, RFC 1918, link-local, IPv6 unique-local, or `localhost`):
/// where a plain `http://` base URL is accepted without
/// [`ClientBuilder::allow_plain_http`], and where a simulator may run.
pub fn is_local_url(url: &str) -> bool {
    url::Url::parse(url.trim()).is_ok_and(|url| is_local(&url))
}

fn is_local(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost" || name.ends_with(".localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_private() || ip.is_link_local(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unique_local() || ip.is_unicast_link_local(),
        None => false,
    }
}

fn normalise_base_url(raw: &str) -> Result<url::Url> {
    // Errors show the URL without anything before an `@`: a password.
    let shown = match raw.split_once("://") {
        Some((scheme, rest)) if rest.contains('@') => {
            format!("{scheme}://{}", rest.rsplit_once('@').map_or(rest, |(_, host)| host))
        }
        _ => raw.to_owned(),
    };
    let mut url = url::Url::parse(raw.trim()).map_err(|e| {
        Error::Config(format!("base URL {shown:?} is not a URL ({e}); use something like {DEFAULT_BASE_URL}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "base URL {shown:?} must start with https:// (or http:// for a local server)"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Shown without them: they are a secret, and reqwest would send
        // them as Basic auth in place of the key.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(Error::Config(format!(
            "base URL {url} has a user name or password in it: remove them (the API key is set on its \
             own, never in the URL)"
        )));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").or_else(|| path.strip_suffix("/v2")).unwrap_or(path);
    // A trailing slash makes `join` append rather than replace.
    url.set_path(&format!("{path}/"));
    url.set_query(None);
    Ok(url)
}

/// How a failed call ended, for deciding whether to try again.
struct Failure {
    error: Error,
    /// The request never left this machine (connection refused, DNS): safe
    /// to repeat even when repeating costs money.
    never_sent: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure { error, never_sent: false }
    }
}

impl Client {
    /// A client configured from the environment; see [`ClientBuilder::from_env`].
    pub fn from_env() -> Result<Client> {
        ClientBuilder::from_env().build()
    }

    /// A builder with every setting at its default.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The server this client talks to.
    pub fn base_url(&self) -> &str {
        self.inner.base_url.as_str()
    }

    /// The policy used while waiting for a job whose model is not known
    /// (one followed by id alone, [`Client::watch`]): the one set with
    /// [`ClientBuilder::poll_policy`], else [`PollPolicy::default`].
    pub fn poll_policy(&self) -> &PollPolicy {
        &self.inner.poll
    }

    /// The schedule a job of `model` is followed on by
    /// [`Client::create_and_wait`] and [`Client::watch_created`]: the
    /// policy set with [`ClientBuilder::poll_policy`], if any; else one
    /// fitted ([`PollPolicy::for_durations`]) to the model's durations as
    /// its metrics were last read (by [`Client::model_metrics`], or by the
    /// first job of that model this client followed), else to its family's
    /// typical durations ([`JobDurations::typical_of`]), else the default;
    /// divided by the client's time scale.
    pub fn poll_policy_for(&self, model: &str) -> PollPolicy {
        if self.inner.poll_set {
            return self.inner.poll.clone();
        }
        let measured = self.known_durations(model).and_then(|k| k.durations);
        let durations = measured
            .or_else(|| crate::catalog::model(model).map(|spec| JobDurations::typical_of(spec.family)));
        match durations {
            Some(d) => PollPolicy::for_durations(&d).time_scaled(self.inner.time_scale),
            None => self.inner.poll.clone(),
        }
    }

    fn known_durations(&self, model: &str) -> Option<KnownDurations> {
        self.inner.metrics.lock().unwrap_or_else(|e| e.into_inner()).get(model).copied()
    }

    /// [`Client::poll_policy_for`] `model`, after reading its metrics
    /// (`GET /models/metrics`) if this client has not done so within the
    /// hour: once per model however many jobs wait at once, for at most
    /// `METRICS_TIMEOUT`. A failed read falls back to the family's prior
    /// and is tried again only minutes later.
    pub(crate) async fn fitted_poll_policy(&self, model: &str) -> PollPolicy {
        if self.inner.poll_set {
            return self.inner.poll.clone();
        }
        let fresh = |client: &Client| {
            client.known_durations(model).is_some_and(|k| k.until > tokio::time::Instant::now())
        };
        if !fresh(self) {
            let gate = {
                let mut reads = self.inner.metrics_reads.lock().unwrap_or_else(|e| e.into_inner());
                reads.entry(model.to_owned()).or_default().clone()
            };
            let _reading = gate.lock().await;
            // Another job of this model may have read them while this one waited.
            if !fresh(self) {
                let read = tokio::time::timeout(METRICS_TIMEOUT, self.model_metrics(&[model])).await;
                let ok = matches!(read, Ok(Ok(_)));
                if !ok {
                    tracing::debug!(model, outcome = ?read.map(|r| r.err()), "model metrics not read; using the family's durations");
                }
                let mut metrics = self.inner.metrics.lock().unwrap_or_else(|e| e.into_inner());
                let now = tokio::time::Instant::now();
                match metrics.get_mut(model) {
                    // Just set by `model_metrics`.
                    Some(known) if ok && known.until > now => {}
                    // Measured before, but not this time: stale figures beat a prior.
                    Some(known) => known.until = now + if ok { METRICS_TTL } else { METRICS_RETRY },
                    None => {
                        let until = now + if ok { METRICS_TTL } else { METRICS_RETRY };
                        metrics.insert(model.to_owned(), KnownDurations { durations: None, until });
                    }
                }
            }
        }
        self.poll_policy_for(model)
    }

    /// Remembers which model a created job is of, for `watch_created`.
    fn remember_model(&self, id: &str, model: &str) {
        /// Enough for any number of jobs created and then watched at once.
        const KEPT: usize = 1024;
        let mut models = self.inner.created_models.lock().unwrap_or_else(|e| e.into_inner());
        if models.len() >= KEPT {
            models.pop_front();
        }
        models.push_back((id.to_owned(), model.to_owned()));
    }

    /// The model of a job just created by this client, forgotten once asked.
    fn take_created_model(&self, id: &str) -> Option<String> {
        let mut models = self.inner.created_models.lock().unwrap_or_else(|e| e.into_inner());
        let at = models.iter().position(|(created, _)| created == id);
        at.and_then(|at| models.remove(at)).map(|(_, model)| model)
    }

    /// The policy used to retry polls and downloads.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.retry
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Starts a generation job and returns it as created (usually `queued`).
    ///
    /// A model given by an alias is sent as its id ([`Client::resolve_model`]),
    /// and validated as that model. Once the client holds the API's live
    /// catalogue ([`Client::live_catalogue`]), a built-in model it no longer
    /// lists is refused with [`Error::ModelNotListed`] before anything is sent.
    ///
    /// This call costs money, so it is retried only when the API cannot
    /// have accepted it: the connection was refused before anything was
    /// sent, or the API answered 429. When the request may have been
    /// accepted but the answer was lost (a timeout or 5xx after sending),
    /// it fails with [`Error::CreateOutcomeUnknown`] instead of starting a
    /// second, billed, job; that error names the fresh
    /// [`ClientRequestId`] the create was sent with, by which
    /// [`Client::find_create`] finds the job again.
    pub async fn create(&self, request: &impl CreateRequest) -> Result<Generation> {
        self.create_with_id(request, &ClientRequestId::random()).await
    }

    /// [`Client::create`], sent with your own `X-Client-Request-Id` (an
    /// order number, a job id): record it before calling, and a create whose
    /// answer is lost can be found with [`Client::find_create`] even after a
    /// crash. Use each id for one create only.
    pub async fn create_with_id(
        &self,
        request: &impl CreateRequest,
        client_request_id: &ClientRequestId,
    ) -> Result<Generation> {
        let span = tracing::info_span!(
            "create",
            model = request.model(),
            client_request_id = client_request_id.as_str(),
            generation_id = tracing::field::Empty
        );
        async {
            let mut body = serde_json::to_value(request)
                .map_err(|e| Error::InvalidInput(format!("the request could not be encoded as JSON: {e}")))?;
            let model = self.resolve_model_of(&mut body);
            if self.inner.validate {
                self.check_listed(&model)?;
                match self.live_model_spec(&model).await {
                    Some(spec) => spec.validate(&body)?,
                    None => check_against_catalog(&body)?,
                }
            }
            let body = Bytes::from(body.to_string());
            // Time to upload the body on the slowest link allowed, then to answer.
            let upload = Duration::from_secs_f64(body.len() as f64 / self.inner.min_upload_rate as f64);
            let deadline = self.inner.request_timeout.saturating_add(upload);
            let mut failures = 0;
            let mut unreachable_waited = Duration::ZERO;
            loop {
                let sent = self
                    .inner
                    .uploads
                    .post(self.inner.endpoint.clone())
                    .header(AUTHORIZATION, self.inner.auth.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .header("x-client-request-id", client_request_id.as_str())
                    .timeout(deadline)
                    .body(body.clone());
                let failure = match self.send(sent, CallKind::Create, None).await {
                    Ok((status, bytes, receipt)) => match decode::<Generation>(status, &bytes) {
                        Ok(mut generation) => {
                            generation.receipt = receipt;
                            self.remember_model(&generation.id, &model);
                            tracing::Span::current().record("generation_id", generation.id.as_str());
                            tracing::info!(status = %generation.status, "created");
                            return Ok(generation);
                        }
                        // A 2xx we cannot read most likely means the job exists.
                        Err(e) => {
                            return Err(Error::CreateOutcomeUnknown {
                                cause: e.to_string(),
                                client_request_id: client_request_id.clone(),
                            });
                        }
                    },
                    Err(Failure { error: Error::NotFound { message, .. }, .. }) => {
                        // No generation id was asked for: the path itself is unknown there.
                        return Err(Error::NotTheApi { host: self.host(), status: 404, message });
                    }
                    // Method not allowed, not implemented: the endpoint
                    // takes no POST there, so nothing was accepted (unlike
                    // other 5xx, which may follow an acceptance).
                    Err(Failure { error: Error::Upstream { status: status @ (405 | 501), message, .. }, .. }) => {
                        return Err(Error::NotTheApi { host: self.host(), status, message });
                    }
                    Err(failure) => failure,
                };
                let safe_to_repeat = failure.never_sent || matches!(failure.error, Error::RateLimited { .. });
                if !safe_to_repeat {
                    return Err(match failure.error {
                        e @ (Error::Transport { .. } | Error::Decode { .. }) => Error::CreateOutcomeUnknown {
                            cause: e.to_string(),
                            client_request_id: client_request_id.clone(),
                        },
                        Error::Upstream { status, message, request_id, .. } if status >= 500 => {
                            let id = request_id.map(|id| format!(", request id {id}")).unwrap_or_default();
                            Error::CreateOutcomeUnknown {
                                cause: format!("HTTP {status} {message}{id}"),
                                client_request_id: client_request_id.clone(),
                            }
                        }
                        other => other,
                    });
                }
                failures += 1;
                if failures >= self.inner.retry.max_attempts || self.inner.retry.too_long(failure.error.retry_after())
                {
                    return Err(failure.error);
                }
                let wait = self.inner.retry.backoff(failures, failure.error.retry_after());
                if failure.never_sent {
                    if !self.inner.retry.retry_unreachable(unreachable_waited, wait) {
                        return Err(failure.error);
                    }
                    unreachable_waited += wait;
                }
                tracing::warn!(error = %failure.error, wait_ms = wait.as_millis() as u64, "create not accepted; retrying");
                tokio::time::sleep(wait).await;
            }
        }
        .instrument(span)
        .await
    }

    /// Asks once how a generation is doing, retrying network errors,
    /// timeouts, 429 and 5xx under the client's [`RetryPolicy`].
    pub async fn get(&self, id: &str) -> Result<Generation> {
        self.retrying("poll", || self.get_once(id)).await
    }

    /// Runs `call` again after a transient failure, under the client's
    /// [`RetryPolicy`], for calls that are safe to repeat.
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut failures = 0;
        let mut unreachable_waited = Duration::ZERO;
        loop {
            match call().await {
                Ok(value) => return Ok(value),
                Err(e)
                    if e.is_transient()
                        && failures + 1 < self.inner.retry.max_attempts
                        && !self.inner.retry.too_long(e.retry_after()) =>
                {
                    failures += 1;
                    let wait = self.inner.retry.backoff(failures, e.retry_after());
                    if e.is_unreachable() {
                        if !self.inner.retry.retry_unreachable(unreachable_waited, wait) {
                            return Err(e);
                        }
                        unreachable_waited += wait;
                    }
                    tracing::debug!(call = what, error = %e, wait_ms = wait.as_millis() as u64, "failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Asks once how a generation is doing, with no retry: for callers
    /// that run their own schedule and back-off across many jobs, such as
    /// a proxy. Errors are as [`Client::get`]'s; [`Error::is_transient`]
    /// tells which are worth another try later.
    pub async fn poll_once(&self, id: &str) -> Result<Generation> {
        self.get_once(id).await
    }

    /// One poll, no retry.
    pub(crate) async fn get_once(&self, id: &str) -> Result<Generation> {
        let span = tracing::debug_span!("poll", generation_id = id);
        async {
            let request = self
                .inner
                .http
                .get(self.inner.endpoint.clone())
                .query(&[("generation_id", id)])
                .header(AUTHORIZATION, self.inner.auth.clone())
                .timeout(self.inner.request_timeout);
            let (status, bytes, receipt) =
                self.send(request, CallKind::Poll, Some(id)).await.map_err(|f| f.error)?;
            let mut generation: Generation = decode(status, &bytes)?;
            generation.receipt = receipt;
            tracing::debug!(status = %generation.status, "polled");
            Ok(generation)
        }
        .instrument(span)
        .await
    }

    /// Follows a generation known by its id until it finishes, polling at
    /// once and then under the client's [`PollPolicy`]. Use this to resume
    /// a job created earlier, even by another process.
    pub fn watch(&self, id: impl Into<String>) -> Watch {
        watch(self.clone(), id.into(), None, WatchPolicy::Set(self.inner.poll.clone()))
    }

    /// Follows a job just returned by [`Client::create`]: reports it as
    /// created, then polls from the policy's `first_delay` on, on the
    /// schedule of [`Client::poll_policy_for`] its model (this client
    /// remembers the model of the jobs it created). Unless a poll policy
    /// was set, the first job of a model this client follows reads the
    /// model's metrics (`GET /models/metrics`, for at most two seconds,
    /// before its first poll) and later ones reuse them for an hour.
    pub fn watch_created(&self, created: Generation) -> Watch {
        let id = created.id.clone();
        let policy = match self.take_created_model(&id) {
            Some(model) if !self.inner.poll_set => WatchPolicy::FitTo(model),
            _ => WatchPolicy::Set(self.inner.poll.clone()),
        };
        watch(self.clone(), id, Some(created), policy)
    }

    /// [`Client::watch_created`] on a schedule of its own, such as one
    /// fitted to the model's durations ([`PollPolicy::for_durations`]).
    pub fn watch_created_with(&self, created: Generation, policy: PollPolicy) -> Watch {
        let id = created.id.clone();
        self.take_created_model(&id);
        watch(self.clone(), id, Some(created), WatchPolicy::Set(policy))
    }

    /// Waits for a generation known by its id to finish; see [`Client::watch`].
    pub async fn wait(&self, id: impl Into<String>) -> Result<Generation> {
        self.watch(id).finish().await
    }

    /// Creates a job and waits for it to finish. Returns the completed job,
    /// or [`Error::GenerationFailed`], [`Error::TimedOut`] (the job keeps its
    /// id, so it can be waited for again), or the create's own error.
    pub async fn create_and_wait(&self, request: &impl CreateRequest) -> Result<Generation> {
        let created = self.create(request).await?;
        // Its schedule is fitted to the request's model (see `poll_policy_for`).
        self.watch_created(created).finish().await
    }

    /// Looks a create whose answer was lost up in the API's request logs
    /// (`GET /v2/logs`) by the [`ClientRequestId`] it was sent with, and
    /// returns the job as it is now, or that the create was refused, or
    /// that the logs do not hold it (yet: they lag the API a little).
    ///
    /// `model` narrows the search; `sent_at` is when the create was sent
    /// (the logs are searched from a little before it). Log queries are
    /// retried under the client's [`RetryPolicy`]; the API allows 200 a minute.
    pub async fn find_create(
        &self,
        client_request_id: &ClientRequestId,
        model: Option<&str>,
        sent_at: std::time::SystemTime,
    ) -> Result<CreateLookup> {
        let found = self.find_logged_creates(std::slice::from_ref(client_request_id), model, sent_at).await?;
        let Some(row) = found.into_iter().next() else {
            return Ok(CreateLookup::NotLogged);
        };
        match self.get(&row.inference_id).await {
            Ok(generation) => Ok(CreateLookup::Accepted(Box::new(generation))),
            // A refused create is logged as failed under an id no job has.
            Err(Error::NotFound { .. }) if row.failed() => Ok(CreateLookup::Refused),
            Err(e) => Err(e),
        }
    }

    /// The request-log rows of the creates sent with any of `ids`, in one
    /// pass over the logs from `sent_at` (the earliest of their sends) on:
    /// for a caller with many creates to find at once, such as a proxy.
    /// A create retried after a 429 can have several rows; the one that
    /// made a job is preferred.
    pub async fn find_logged_creates(
        &self,
        ids: &[ClientRequestId],
        model: Option<&str>,
        sent_at: std::time::SystemTime,
    ) -> Result<Vec<LogRow>> {
        let mut wanted: std::collections::HashMap<&str, Option<LogRow>> =
            ids.iter().map(|id| (id.as_str(), None)).collect();
        let (start, end) = search_window(sent_at);
        let url = self.inner.base_url.join("v2/logs").map_err(|e| Error::Config(e.to_string()))?;
        const PAGE: usize = 100;
        let mut offset = 0;
        loop {
            let mut query = vec![
                ("start", start.clone()),
                ("end", end.clone()),
                ("limit", PAGE.to_string()),
                ("offset", offset.to_string()),
            ];
            if let Some(model) = model {
                query.push(("model", model.to_owned()));
            }
            let page: LogPage = self.get_json(&url, &query, CallKind::Logs).await?;
            let rows = page.data.len();
            for row in page.data {
                if let Some(slot) = row.client_request_id.as_deref().and_then(|id| wanted.get_mut(id))
                    && slot.as_ref().is_none_or(|kept| kept.failed() && !row.failed())
                {
                    *slot = Some(row);
                }
            }
            let all_found = wanted.values().all(|slot| slot.as_ref().is_some_and(|row| !row.failed()));
            if all_found || !page.pagination.has_more || rows == 0 {
                break;
            }
            offset += rows;
        }
        Ok(wanted.into_values().flatten().collect())
    }

    /// The API's model catalogue (`GET /v1/models`), filtered and
    /// expanded as `query` asks; retried like a poll.
    ///
    /// ```no_run
    /// # async fn run(client: aimlvid::Client) -> aimlvid::Result<()> {
    /// use aimlvid::ModelQuery;
    /// let models = client.models(&ModelQuery::video().with_pricing()).await?;
    /// for model in &models {
    ///     let price = model.pricing.as_ref().and_then(|p| p.quote_usd(&serde_json::json!({})));
    ///     println!("{}: {price:?} USD", model.id);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn models(&self, query: &ModelQuery) -> Result<Vec<ModelListing>> {
        let url = self.inner.base_url.join("v1/models").map_err(|e| Error::Config(e.to_string()))?;
        let list: ModelList = self.get_json(&url, &query.to_query(), CallKind::Models).await?;
        Ok(list.data)
    }

    /// Reads the API's video models with their prices (`GET /v1/models`)
    /// and keeps them: from then on a create resolves a model's alias with
    /// them ([`Client::create`]). If the client already holds a catalogue
    /// with an ETag, the read is conditional and an unchanged catalogue
    /// costs no body. Retried like a poll.
    pub async fn live_catalogue(&self) -> Result<Arc<LiveCatalogue>> {
        let url = self.inner.base_url.join("v1/models").map_err(|e| Error::Config(e.to_string()))?;
        let query = ModelQuery::video().with_pricing().to_query();
        let held = self.held_catalogue();
        let read = self
            .retrying(CallKind::Models.as_str(), || async {
                let mut request = self
                    .inner
                    .http
                    .get(url.clone())
                    .query(&query)
                    .header(AUTHORIZATION, self.inner.auth.clone())
                    .timeout(self.inner.request_timeout);
                if let Some(etag) = held.as_ref().and_then(|c| c.etag.as_deref()) {
                    request = request.header(reqwest::header::IF_NONE_MATCH, etag);
                }
                self.read_catalogue(request).await
            })
            .await?;
        let catalogue = match (read, held) {
            (Some(fresh), _) => Arc::new(fresh),
            (None, Some(held)) => return Ok(held),
            // A 304 to an unconditional read: nothing to keep.
            (None, None) => {
                return Err(Error::Decode {
                    status: 304,
                    reason: "304 Not Modified to a request without If-None-Match".into(),
                    excerpt: String::new(),
                });
            }
        };
        self.set_live_catalogue_arc(catalogue.clone());
        Ok(catalogue)
    }

    /// One read of the catalogue: `None` for 304 Not Modified.
    async fn read_catalogue(&self, request: reqwest::RequestBuilder) -> Result<Option<LiveCatalogue>> {
        let host = self.host();
        let transport = |e: reqwest::Error| Error::Transport { host: host.clone(), source: e.without_url() };
        let (http, request) = request.build_split();
        let request = request.map_err(transport)?;
        let (method, url) = (request.method().clone(), request.url().clone());
        let started = std::time::Instant::now();
        let response = match http.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                log_exchange(&method, &url, Err(&e), started);
                self.observe(CallKind::Models, None, started);
                return Err(transport(e));
            }
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        let etag =
            response.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = response.bytes().await;
        log_exchange(&method, &url, bytes.as_ref().map(|_| status), started);
        self.observe(CallKind::Models, bytes.as_ref().ok().map(|_| status.as_u16()), started);
        let bytes = bytes.map_err(transport)?;
        if status == StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(status, &bytes, wait, None));
        }
        let list: ModelList = decode(status, &bytes)?;
        Ok(Some(LiveCatalogue::new(list.data, etag)))
    }

    /// Gives the client a catalogue read earlier (from a cache, say), as if
    /// [`Client::live_catalogue`] had just read it.
    pub fn set_live_catalogue(&self, catalogue: LiveCatalogue) {
        self.set_live_catalogue_arc(Arc::new(catalogue));
    }

    fn set_live_catalogue_arc(&self, catalogue: Arc<LiveCatalogue>) {
        *self.inner.live.lock().unwrap_or_else(|e| e.into_inner()) = Some(catalogue);
    }

    /// The catalogue the client holds, if it has read or been given one.
    pub fn held_catalogue(&self) -> Option<Arc<LiveCatalogue>> {
        self.inner.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The id of the model requested as `name`: by the live catalogue the
    /// client holds, else by the built-in one; `name` itself when neither
    /// knows it (the API decides).
    pub fn resolve_model(&self, name: &str) -> String {
        let held = self.held_catalogue();
        held.as_ref()
            .and_then(|live| live.get(name))
            .map(|listing| listing.id.clone())
            .or_else(|| crate::catalog::resolve(name).map(|spec| spec.id.clone()))
            .unwrap_or_else(|| name.to_owned())
    }

    /// The OpenAPI document the held live catalogue links for `model`
    /// (`info.docsJson`), as JSON; `None` when it links none. The key is
    /// sent only to the API's own host. Retried like a poll.
    pub async fn model_document(&self, model: &str) -> Result<Option<serde_json::Value>> {
        let Some(link) = self
            .held_catalogue()
            .and_then(|live| live.get(model)?.info.get("docsJson")?.as_str().map(str::to_owned))
        else {
            return Ok(None);
        };
        let url = url::Url::parse(&link).map_err(|e| {
            Error::InvalidInput(format!("the catalogue links {model}'s document as {link:?}: {e}"))
        })?;
        let own = url.origin() == self.inner.base_url.origin();
        let document = self
            .retrying(CallKind::Models.as_str(), || async {
                let mut request = self.inner.http.get(url.clone()).timeout(self.inner.request_timeout);
                if own {
                    request = request.header(AUTHORIZATION, self.inner.auth.clone());
                }
                let (status, bytes, _) =
                    self.send(request, CallKind::Models, None).await.map_err(|f| f.error)?;
                decode::<serde_json::Value>(status, &bytes)
            })
            .await?;
        Ok(Some(document))
    }

    /// The schema of a model only the held live catalogue lists, from its
    /// OpenAPI document ([`Client::model_document`]), read once and kept;
    /// `None` for a built-in model, or where no usable document can be had
    /// (the API then checks the request alone).
    pub async fn live_model_spec(&self, model: &str) -> Option<Arc<crate::catalog::ModelSpec>> {
        if crate::catalog::model(model).is_some() {
            return None;
        }
        if let Some(spec) = self.inner.live_specs.lock().unwrap_or_else(|e| e.into_inner()).get(model) {
            return Some(spec.clone());
        }
        let read = match self.model_document(model).await {
            Ok(Some(document)) => {
                crate::catalog::ModelSpec::from_openapi(model, &document).map_err(|e| e.to_string())
            }
            Ok(None) => return None,
            Err(e) => Err(e.to_string()),
        };
        match read {
            Ok(spec) => {
                let spec = Arc::new(spec);
                self.set_live_model_spec_arc(spec.clone());
                Some(spec)
            }
            Err(reason) => {
                tracing::info!(model, %reason, "no schema for the model; the API checks it");
                None
            }
        }
    }

    /// Gives the client a live-only model's schema read earlier (from a
    /// cached document, say), as if [`Client::live_model_spec`] had read it.
    pub fn set_live_model_spec(&self, spec: crate::catalog::ModelSpec) {
        self.set_live_model_spec_arc(Arc::new(spec));
    }

    fn set_live_model_spec_arc(&self, spec: Arc<crate::catalog::ModelSpec>) {
        self.inner.live_specs.lock().unwrap_or_else(|e| e.into_inner()).insert(spec.id.clone(), spec);
    }

    /// Refuses a built-in model the live catalogue the client holds no
    /// longer lists: the API would refuse it, perhaps after a charge.
    fn check_listed(&self, model: &str) -> Result<()> {
        let Some(live) = self.held_catalogue() else { return Ok(()) };
        if live.get(model).is_some() || crate::catalog::model(model).is_none() {
            return Ok(());
        }
        Err(Error::ModelNotListed { model: model.to_owned(), alternatives: live.nearest(model, 3) })
    }

    /// Puts the resolved id in a create body's `model` and returns it.
    fn resolve_model_of(&self, body: &mut serde_json::Value) -> String {
        let Some(given) = body.get("model").and_then(serde_json::Value::as_str).map(str::to_owned) else {
            return String::new();
        };
        let id = self.resolve_model(&given);
        if id != given {
            tracing::debug!(alias = %given, model = %id, "alias resolved");
            body["model"] = serde_json::Value::String(id.clone());
        }
        id
    }

    /// How long each model's recent successful jobs took
    /// (`GET /models/metrics`, no key needed): the median and the 90th
    /// percentile over the upstream's short window, for the `models` given
    /// (all measured ones when empty). A model with no recent success is
    /// absent: that means no data, not no time. Retried like a poll.
    pub async fn model_metrics(&self, models: &[&str]) -> Result<Vec<(String, JobDurations)>> {
        let url = self.inner.base_url.join("models/metrics").map_err(|e| Error::Config(e.to_string()))?;
        let query: Vec<(&str, String)> = models.iter().map(|m| ("aliases", (*m).to_owned())).collect();
        let report: MetricsReport = self.get_json(&url, &query, CallKind::Metrics).await?;
        let measured: Vec<(String, JobDurations)> = report
            .models
            .into_iter()
            .filter_map(|m| {
                let ms = m.metrics?.duration_ms?;
                let at = |v: f64| Duration::try_from_secs_f64(v / 1000.0).ok();
                Some((m.alias, JobDurations::new(at(ms.p50)?, at(ms.p90)?)))
            })
            .collect();
        // Later jobs of these models are polled on schedules fitted to them.
        let until = tokio::time::Instant::now() + METRICS_TTL;
        let mut known = self.inner.metrics.lock().unwrap_or_else(|e| e.into_inner());
        for (model, durations) in &measured {
            known.insert(model.clone(), KnownDurations { durations: Some(*durations), until });
        }
        drop(known);
        Ok(measured)
    }

    /// A GET of a JSON document, retried like a poll.
    pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &url::Url,
        query: &[(&str, String)],
        kind: CallKind,
    ) -> Result<T> {
        self.retrying(kind.as_str(), || async {
            let request = self
                .inner
                .http
                .get(url.clone())
                .query(query)
                .header(AUTHORIZATION, self.inner.auth.clone())
                .timeout(self.inner.request_timeout);
            let (status, bytes, _) = self.send(request, kind, None).await.map_err(|f| f.error)?;
            decode::<T>(status, &bytes)
        })
        .await
    }

    /// Sends one request and reads the whole answer, turning every non-2xx
    /// status into its typed error.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        kind: CallKind,
        id: Option<&str>,
    ) -> Result<(StatusCode, Bytes, Option<Receipt>), Failure> {
        let host = self.host();
        let transport = |e: reqwest::Error| Error::Transport { host: host.clone(), source: e.without_url() };
        let (http, request) = request.build_split();
        let request = request.map_err(|e| Failure { never_sent: true, error: transport(e) })?;
        let (method, url) = (request.method().clone(), request.url().clone());
        let started = std::time::Instant::now();
        let response = match http.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                log_exchange(&method, &url, Err(&e), started);
                self.observe(kind, None, started);
                return Err(Failure { never_sent: e.is_connect(), error: transport(e) });
            }
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        let receipt = Receipt::from_headers(response.headers());
        let bytes = response.bytes().await;
        log_exchange(&method, &url, bytes.as_ref().map(|_| status), started);
        self.observe(kind, bytes.as_ref().ok().map(|_| status.as_u16()), started);
        let bytes = bytes.map_err(transport)?;
        if status.is_success() {
            return Ok((status, bytes, receipt));
        }
        Err(status_error(status, &bytes, wait, id).into())
    }

    /// Tells the observer, if any, about one exchange.
    pub(crate) fn observe(&self, kind: CallKind, status: Option<u16>, started: std::time::Instant) {
        if let Some(observer) = &self.inner.observer {
            observer.exchange(&Exchange { kind, status, elapsed: started.elapsed() });
        }
    }

    fn host(&self) -> String {
        let url = &self.inner.base_url;
        match (url.host_str(), url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => url.as_str().to_owned(),
        }
    }
}

/// Logs one HTTP exchange (method, URL, status or error, time) at debug
/// level on the `aimlvid::http` target, which `aimlvid -v` shows. The key
/// travels only in a header and is never logged; see [`loggable_url`].
pub(crate) fn log_exchange(
    method: &reqwest::Method,
    url: &url::Url,
    outcome: std::result::Result<StatusCode, &reqwest::Error>,
    started: std::time::Instant,
) {
    let ms = started.elapsed().as_millis() as u64;
    let url = loggable_url(url);
    match outcome {
        Ok(status) => {
            tracing::debug!(target: "aimlvid::http", "{method} {url} -> {} in {ms} ms", status.as_u16())
        }
        Err(e) => {
            // reqwest's message embeds the full URL, signature and all.
            let text = match e.url() {
                Some(full) => e.to_string().replace(full.as_str(), &url),
                None => e.to_string(),
            };
            tracing::debug!(target: "aimlvid::http", "{method} {url} -> failed after {ms} ms: {text}")
        }
    }
}

/// A URL as it may be logged: without user name or password, and with
/// every query value but `generation_id` replaced, since a result URL may
/// carry a signature.
pub(crate) fn loggable_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    if !shown.username().is_empty() || shown.password().is_some() {
        let _ = shown.set_username("redacted");
        let _ = shown.set_password(None);
    }
    let pairs: Vec<(String, String)> = shown
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "generation_id" { v.into_owned() } else { "redacted".to_owned() };
            (k.into_owned(), v)
        })
        .collect();
    if pairs.is_empty() {
        shown.set_query(None);
    } else {
        shown.query_pairs_mut().clear().extend_pairs(pairs);
    }
    shown.to_string()
}

/// Maps an error answer to its typed error.
pub(crate) fn status_error(
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
    id: Option<&str>,
) -> Error {
    let parsed = ApiErrorBody::parse(body);
    let message = parsed.message();
    let request_id = parsed.request_id.clone();
    match status.as_u16() {
        400 | 422 => Error::InvalidRequest { message, details: parsed.details(), request_id },
        401 => Error::Unauthorized { message, request_id },
        403 => Error::OutOfCredits { message, request_id },
        404 => Error::NotFound { id: id.unwrap_or("(none)").to_owned(), message },
        413 => Error::InvalidRequest {
            message,
            details: vec![
                "the request body is too large for the server; send the video as an https:// URL".into(),
            ],
            request_id,
        },
        429 => Error::RateLimited { message, retry_after },
        code => Error::Upstream { status: code, message, request_id, retry_after },
    }
}

fn decode<T: serde::de::DeserializeOwned>(status: StatusCode, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Decode {
        status: status.as_u16(),
        reason: e.to_string(),
        excerpt: excerpt(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalised() {
        for (raw, expected) in [
            ("https://api.aimlapi.com", "https://api.aimlapi.com/v2/video/generations"),
            ("https://api.aimlapi.com/", "https://api.aimlapi.com/v2/video/generations"),
            ("https://api.aimlapi.com/v1", "https://api.aimlapi.com/v2/video/generations"),
            ("https://api.aimlapi.com/v2/", "https://api.aimlapi.com/v2/video/generations"),
            ("http://127.0.0.1:8787/team", "http://127.0.0.1:8787/team/v2/video/generations"),
        ] {
            let base = normalise_base_url(raw).unwrap();
            assert_eq!(base.join(GENERATIONS_PATH).unwrap().as_str(), expected, "{raw}");
        }
        assert!(normalise_base_url("ftp://x").is_err());
        for with_credentials in [
            "http://user:secret@127.0.0.1:8787/",
            "https://secret@api.example.com",
            "ftp://user:secret@x",
            "http://user:sec ret@[::1",
        ] {
            let err = normalise_base_url(with_credentials).unwrap_err().to_string();
            assert!(!err.contains("secret") && !err.contains("sec ret"), "{err}");
        }
        let build = |url: &str, allow: bool| {
            Client::builder().api_key("k").base_url(url).allow_plain_http(allow).build().map(drop)
        };
        for local in [
            "http://127.0.0.1:8787",
            "http://localhost:1",
            "http://10.1.2.3",
            "http://192.168.0.9",
            "http://[::1]:80",
        ] {
            assert!(build(local, false).is_ok(), "{local}");
        }
        let err = build("http://proxy.example.com", false).unwrap_err().to_string();
        assert!(err.contains("unencrypted") && err.contains("allow_plain_http"), "{err}");
        assert!(build("http://proxy.example.com", true).is_ok(), "when allowed");
        assert!(build("https://proxy.example.com", false).is_ok());
        assert!(is_local_url("http://127.0.0.1:8787/") && is_local_url("https://172.16.0.1"));
        assert!(
            !is_local_url("https://api.aimlapi.com")
                && !is_local_url("http://8.8.8.8")
                && !is_local_url("nonsense")
        );
        assert!(normalise_base_url("api.aimlapi.com").is_err());
    }

    #[test]
    fn the_environments_time_scale_is_for_local_servers_unless_one_is_set() {
        let from_env = |url: &str| ClientBuilder {
            env_time_scale: Some(10.0),
            ..Client::builder().api_key("k").base_url(url)
        };
        let first = |builder: ClientBuilder| builder.build().unwrap().poll_policy().first_delay;
        let default = PollPolicy::default().first_delay;
        assert_eq!(first(from_env("http://127.0.0.1:8787")), default / 10, "a simulator here");
        assert_eq!(first(from_env("https://api.aimlapi.com")), default, "never the API");
        assert_eq!(first(from_env("http://127.0.0.1:8787").time_scale(2.0)), default / 2, "set in code");
    }

    #[test]
    fn logged_urls_carry_no_secrets() {
        let url = url::Url::parse("https://user:pw@cdn.example/v.mp4?X-Sig=abc&generation_id=g1").unwrap();
        assert_eq!(loggable_url(&url), "https://redacted@cdn.example/v.mp4?X-Sig=redacted&generation_id=g1");
        let url = url::Url::parse("https://api.aimlapi.com/v2/video/generations").unwrap();
        assert_eq!(loggable_url(&url), "https://api.aimlapi.com/v2/video/generations");
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let client = Client::builder().api_key("sk-very-secret").build().unwrap();
        let shown = format!("{client:?} {:?}", Client::builder().api_key("sk-very-secret"));
        assert!(!shown.contains("sk-very-secret"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn a_missing_or_blank_key_says_how_to_set_one() {
        let err = Client::builder().build().unwrap_err();
        assert!(matches!(err, Error::MissingApiKey));
        assert!(err.to_string().contains("AIMLAPI_API_KEY"));
        assert!(matches!(Client::builder().api_key("  ").build(), Err(Error::MissingApiKey)));
    }

    #[test]
    fn statuses_map_to_their_errors() {
        let body = br#"{"message":"Too many","statusCode":429,"requestId":"r"}"#;
        let e = status_error(StatusCode::TOO_MANY_REQUESTS, body, Some(Duration::from_secs(2)), None);
        assert!(matches!(e, Error::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2)));
        assert!(e.is_transient());
        let e = status_error(StatusCode::GATEWAY_TIMEOUT, br#"{"message":"Generation timeout"}"#, None, None);
        assert!(matches!(e, Error::Upstream { status: 504, .. }));
        assert!(e.is_transient());
        let e = status_error(StatusCode::NOT_FOUND, b"{}", None, Some("g1"));
        assert!(matches!(&e, Error::NotFound { id, .. } if id == "g1"));
        assert!(!e.is_transient());
        let e = status_error(StatusCode::FORBIDDEN, br#"{"message":"Insufficient credits"}"#, None, None);
        assert!(matches!(e, Error::OutOfCredits { .. }));
    }
}
