//! Storage: what must survive a restart (keys, jobs, usage), behind traits
//! so that another backend (PostgreSQL) can be added without touching the
//! handlers. The hot path never reaches it: see [`crate::view`].
//!
//! Longer than most files on purpose: it is the storage's whole vocabulary
//! (records, writes, outcomes, filters) and its traits, which the backends,
//! the writer and every reader share; the code is in the backends.

mod page;
mod postgres;
mod rows;
mod sql;
mod sqlite;
#[cfg(test)]
mod suite;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};

pub use postgres::{DEFAULT_LEASE, PostgresSettings, PostgresStore};
pub use sqlite::{DEFAULT_LOCK_WAIT, SqliteStore};

/// A key's row id.
pub type KeyId = i64;

/// A failed storage operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique value (such as a key name) is already taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// The backend failed.
    #[error("storage: {0}")]
    Backend(#[from] sqlx::Error),
    /// The backend could not be migrated.
    #[error("storage migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value could not be read back.
    #[error("storage holds an unreadable value: {0}")]
    Corrupt(String),
    /// The change asked for is incomplete or contradictory.
    #[error("{0}")]
    Invalid(String),
}

/// Shorthand for storage results.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a key may do. `None` is unlimited everywhere.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Model ids the key may create jobs with; `None` allows every model.
    #[serde(default)]
    pub allowed_models: Option<Vec<String>>,
    /// Requests per minute, creates and polls together.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Jobs created and not yet finished, at once.
    #[serde(default)]
    pub max_unfinished: Option<u32>,
    /// Credits the key may spend, counted from the upstream's `credits_used`.
    #[serde(default)]
    pub credit_budget: Option<f64>,
    /// The budget renews each period (UTC); `None` is one budget for the
    /// key's whole life.
    #[serde(default)]
    pub budget_period: Option<BudgetPeriod>,
}

/// How often a key's budget renews, at midnight UTC (weeks from Monday,
/// months from the 1st).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    /// Every day.
    Day,
    /// Every week, from Monday.
    Week,
    /// Every calendar month.
    Month,
}

impl BudgetPeriod {
    /// As stored and typed: `day`, `week`, `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Day => "day",
            BudgetPeriod::Week => "week",
            BudgetPeriod::Month => "month",
        }
    }

    /// The start (unix seconds) of the period holding `now` (unix seconds).
    pub fn start_of(self, now: i64) -> i64 {
        const DAY: i64 = 86_400;
        let day = now.div_euclid(DAY);
        match self {
            BudgetPeriod::Day => day * DAY,
            // 1970-01-01 was a Thursday: Monday is three days later.
            BudgetPeriod::Week => (day - (day + 3).rem_euclid(7)) * DAY,
            BudgetPeriod::Month => {
                let (year, month, _) = crate::calendar::civil_from_days(day);
                crate::calendar::days_from_civil(year, month, 1) * DAY
            }
        }
    }
}

impl std::str::FromStr for BudgetPeriod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "day" | "daily" => Ok(BudgetPeriod::Day),
            "week" | "weekly" => Ok(BudgetPeriod::Week),
            "month" | "monthly" => Ok(BudgetPeriod::Month),
            other => Err(format!("expected day, week, month or none, not {other:?}")),
        }
    }
}

/// The shape a key's webhook deliveries take. The webhook's URL and secret
/// are the same whichever it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// This server's own: the job's JSON, signed with `X-Aimlvid-Signature`.
    #[default]
    Aimlvid,
    /// OpenAI's video events (`video.completed`, `video.failed`), signed
    /// per Standard Webhooks, as openai-python's `client.webhooks.unwrap`
    /// verifies them.
    Openai,
}

impl WebhookFormat {
    /// Its name, as stored and written.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Aimlvid => "aimlvid",
            WebhookFormat::Openai => "openai",
        }
    }
}

impl std::fmt::Display for WebhookFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WebhookFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aimlvid" => Ok(WebhookFormat::Aimlvid),
            "openai" => Ok(WebhookFormat::Openai),
            other => Err(format!("the webhook format must be aimlvid or openai, not {other:?}")),
        }
    }
}

impl<'de> Deserialize<'de> for WebhookFormat {
    /// From its name, refusing any other with a message naming the two.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A team key as stored. The key itself is never stored, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRecord {
    /// Row id.
    pub id: KeyId,
    /// A unique name, such as the member's.
    pub name: String,
    /// SHA-256 of the key.
    #[serde(skip)]
    pub hash: [u8; 32],
    /// The key's first characters, to tell keys apart.
    pub prefix: String,
    /// Its limits.
    #[serde(flatten)]
    pub limits: KeyLimits,
    /// Credits charged so far.
    pub credits_used: f64,
    /// Credits charged in the budget period that began at `period_start`.
    pub period_credits: f64,
    /// When the period `period_credits` counts began (unix seconds), if the
    /// key has a budget period and has been charged in one.
    pub period_start: Option<i64>,
    /// Whether the key may be used now (a disabled key can be enabled again).
    pub enabled: bool,
    /// Whether the key was revoked (for good).
    pub revoked: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Where the key's finished jobs are announced, if anywhere. (Its
    /// secret is not part of the record, so it cannot be listed by mistake.)
    pub webhook_url: Option<String>,
    /// The shape its webhook deliveries take.
    pub webhook_format: WebhookFormat,
}

/// A key's webhook: where to announce its finished jobs, and the secret
/// that signs the announcements.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// An `http` or `https` URL.
    pub url: String,
    /// The signing secret.
    pub secret: SecretString,
}

/// A key to add.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Its unique name.
    pub name: String,
    /// SHA-256 of the key.
    pub hash: [u8; 32],
    /// Its first characters.
    pub prefix: String,
    /// Its limits.
    pub limits: KeyLimits,
    /// Its webhook, if any.
    pub webhook: Option<Webhook>,
    /// The shape its webhook deliveries take (kept without a webhook too).
    pub webhook_format: WebhookFormat,
}

/// Changes to a key; each `None` leaves a setting as it is, and an inner
/// `None` (JSON `null`) lifts a limit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyUpdate {
    /// New allowed models.
    #[serde(default, deserialize_with = "present")]
    pub allowed_models: Option<Option<Vec<String>>>,
    /// New requests per minute (`null` or `"unlimited"`: no limit).
    #[serde(default, deserialize_with = "limit_present")]
    pub rpm: Option<Option<u32>>,
    /// New maximum of unfinished jobs (`null` or `"unlimited"`: no limit).
    #[serde(default, deserialize_with = "limit_present")]
    pub max_unfinished: Option<Option<u32>>,
    /// New credit budget.
    #[serde(default, deserialize_with = "present")]
    pub credit_budget: Option<Option<f64>>,
    /// New budget period.
    #[serde(default, deserialize_with = "present")]
    pub budget_period: Option<Option<BudgetPeriod>>,
    /// Enable or disable.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A new webhook URL, which takes a new secret; `null` removes the
    /// webhook and its secret.
    #[serde(default, deserialize_with = "present")]
    pub webhook_url: Option<Option<String>>,
    /// A new shape for its webhook deliveries; the secret stays.
    #[serde(default)]
    pub webhook_format: Option<WebhookFormat>,
}

/// Tells a field sent as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A count limit in a change, present: a number, or `null` or `"unlimited"`
/// (no limit), as a new key's JSON takes it too.
fn limit_present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u32>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Limit {
        Number(u32),
        Word(String),
    }
    match Option::<Limit>::deserialize(d)? {
        None => Ok(Some(None)),
        Some(Limit::Number(n)) => Ok(Some(Some(n))),
        Some(Limit::Word(word)) if word == "unlimited" => Ok(Some(None)),
        Some(Limit::Word(word)) => Err(serde::de::Error::custom(format!(
            "expected a whole number from 0 to 4294967295, null or \"unlimited\", not {word:?}"
        ))),
    }
}

impl KeyUpdate {
    /// Applies the changes to a set of limits and an enabled flag.
    pub fn apply(&self, limits: &mut KeyLimits, enabled: &mut bool) {
        if let Some(v) = &self.allowed_models {
            limits.allowed_models.clone_from(v);
        }
        if let Some(v) = self.rpm {
            limits.rpm = v;
        }
        if let Some(v) = self.max_unfinished {
            limits.max_unfinished = v;
        }
        if let Some(v) = self.credit_budget {
            limits.credit_budget = v;
        }
        if let Some(v) = self.budget_period {
            limits.budget_period = v;
        }
        if let Some(v) = self.enabled {
            *enabled = v;
        }
    }
}

/// Where a job is, as far as this server knows.
pub mod status {
    /// The create is on its way upstream; the row exists so that nothing is lost.
    pub const PENDING: &str = "pending";
    /// The create may have been accepted upstream, but its answer was lost.
    pub const UNKNOWN: &str = "unknown";
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobRecord {
    /// This server's id for the job, known before the upstream's.
    pub local_id: String,
    /// The key that created it.
    pub key_id: KeyId,
    /// The upstream's id, once known.
    pub generation_id: Option<String>,
    /// `pending`, `unknown`, or the upstream's status.
    pub status: String,
    /// The model asked for.
    pub model: String,
    /// The generation as last reported upstream, as JSON.
    pub body: Option<String>,
    /// The member's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the create body.
    pub request_hash: Vec<u8>,
    /// Credits charged, once finished.
    pub credits_charged: Option<f64>,
    /// Unix seconds.
    pub created_at: i64,
    /// What the create's answer headers said (inference id, cost), as JSON.
    pub receipt: Option<String>,
    /// Why a job is `unknown`.
    pub note: Option<String>,
    /// For a create whose outcome is unknown: whether it gave its key's
    /// place and budget hold back, the lookup window having passed
    /// ([`JobWrite::ReleaseHold`]).
    pub hold_released: bool,
    /// The create body as sent upstream, as JSON, media sent inline left
    /// out (see [`NewJob::params`]).
    pub params: Option<String>,
    /// The parameters whose inline media [`JobRecord::params`] leaves out.
    pub inline_media: Option<String>,
    /// The video (generation id) this job remixes.
    pub remixed_from: Option<String>,
    /// When its member deleted it (unix seconds): hidden from them, kept
    /// for billing and the admin.
    pub hidden_at: Option<i64>,
}

/// A create about to be sent upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// This server's id for it.
    pub local_id: String,
    /// The key creating it.
    pub key_id: KeyId,
    /// The model asked for.
    pub model: String,
    /// The member's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the create body.
    pub request_hash: [u8; 32],
    /// Credits held against the key's budget until the job ends. A
    /// [shared](JobReads::shared) store holds them itself, and refuses the
    /// job ([`Begun::OverLimit`]) if the key's limits would be passed.
    pub reserved: f64,
    /// The request's prompt, shown on the team page.
    pub prompt: Option<String>,
    /// What the job started from, shown on the team page: the input's URL,
    /// or a description of media sent inline (never the data itself).
    pub input: Option<String>,
    /// When it was asked for, unix seconds.
    pub created_at: i64,
    /// The create body as sent upstream, as JSON, with each media value
    /// sent inline (a `data:` URI) replaced by `null`: never the data,
    /// which may be tens of megabytes.
    pub params: Option<String>,
    /// The parameters whose inline media `params` leaves out,
    /// comma-separated; `None` if there were none.
    pub inline_media: Option<String>,
    /// The video (generation id) this job remixes, if it is a remix.
    pub remixed_from: Option<String>,
}

/// A job's end, as [`JobWrite::Finished`] records it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEnd {
    /// The final status.
    pub status: String,
    /// The generation as JSON, as stored.
    pub body: String,
    /// Credits to charge.
    pub credits: f64,
    /// The JSON a webhook announces: the job as members read it.
    pub announcement: String,
}

/// What [`JobWrite::Finished`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charged {
    /// The key charged.
    pub key_id: KeyId,
    /// Whether a webhook delivery was queued.
    pub webhook_queued: bool,
    /// The key's credits used, this charge included, as stored.
    pub key_credits_used: f64,
    /// The key's credits used in its current budget period, and when that
    /// period began; `None` for a key without a period.
    pub key_period: Option<(i64, f64)>,
}

/// What [`JobWrite::Begin`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Begun {
    /// The job was recorded as pending.
    Inserted,
    /// The key already used this `Idempotency-Key`: here is that job.
    Existing(Box<JobRecord>),
    /// Not recorded: the key's limits, counted across every server sharing
    /// the store, leave no room for it.
    OverLimit(LimitReached),
}

/// Which of a key's limits a new job would pass.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitReached {
    /// It has this many unfinished jobs, its most.
    Unfinished(u32),
    /// Its budget does not cover the job.
    Budget {
        /// Credits left, reservations of jobs in flight taken off.
        remaining: f64,
        /// What the job was expected to cost.
        expected: f64,
    },
}

/// One change to the jobs. The server's writer gathers many of them, from
/// every request and poll, into one transaction ([`JobWrites::apply`]).
#[derive(Debug, Clone, PartialEq)]
pub enum JobWrite {
    /// Record a create before it is sent upstream (or find the job an
    /// earlier create with the same key and `Idempotency-Key` recorded).
    Begin(NewJob),
    /// Record the upstream's answer to a create.
    Created {
        /// This server's id for the job.
        local_id: String,
        /// The upstream's id.
        generation_id: String,
        /// Its status.
        status: String,
        /// The generation as JSON.
        body: String,
        /// The create's receipt headers as JSON, when there were any.
        receipt: Option<String>,
    },
    /// Record that a create's fate is unknown.
    Unknown {
        /// This server's id for the job.
        local_id: String,
        /// Why.
        note: String,
    },
    /// Mark a followed job the upstream says it does not know (`unknown`,
    /// with why), for an admin to look at; it is still asked about.
    Gone {
        /// The upstream's id.
        generation_id: String,
        /// What the upstream answered.
        note: String,
    },
    /// Give back, once, the key's place and budget hold of a create whose
    /// outcome is still unknown after the lookup window; the job is kept,
    /// and still looked up. Should it be found later, recording its id
    /// takes them again.
    ReleaseHold {
        /// This server's id for the job.
        local_id: String,
    },
    /// Forget a create the upstream definitely refused.
    Abandon {
        /// This server's id for the job.
        local_id: String,
    },
    /// Hide a job from its member (OpenAI's `DELETE /v1/videos/{id}`): it
    /// stays, charged and followed as before; the first hiding's time is kept.
    Hide {
        /// The upstream's id.
        generation_id: String,
    },
    /// Record a status change of an unfinished job (never undoing an end).
    Changed {
        /// The upstream's id.
        generation_id: String,
        /// The new status.
        status: String,
        /// The generation as JSON.
        body: String,
    },
    /// Record a job's end, charge its key and queue its webhook, all at most once.
    Finished {
        /// The upstream's id.
        generation_id: String,
        /// How it ended.
        end: JobEnd,
    },
    /// Replace what the server learned of a model's job durations.
    ModelTiming {
        /// The model id.
        model: String,
        /// The learned figures, as JSON.
        timing: String,
    },
    /// Forget up to `limit` finished jobs created before `before` (unix
    /// seconds), and their delivered, failed or cancelled webhook attempts.
    /// Jobs with a delivery still pending stay. Their charges stay on
    /// their keys.
    Prune {
        /// Unix seconds.
        before: i64,
        /// Jobs at most, to keep the transaction short.
        limit: u32,
    },
}

impl JobWrite {
    /// What the write is about, by the job's ids only (no bodies, prompts
    /// or inputs): for the log lines that name a write storage did not take.
    pub fn subject(&self) -> String {
        match self {
            JobWrite::Begin(job) => format!("create {} of key {}", job.local_id, job.key_id),
            JobWrite::Created { local_id, generation_id, .. } => {
                format!("create {local_id} accepted upstream as generation {generation_id}")
            }
            JobWrite::Unknown { local_id, .. } => format!("create {local_id} with an unknown outcome"),
            JobWrite::Gone { generation_id, .. } => format!("generation {generation_id} unknown upstream"),
            JobWrite::Abandon { local_id } => format!("create {local_id} refused upstream"),
            JobWrite::ReleaseHold { local_id } => format!("create {local_id} given up looking for"),
            JobWrite::Hide { generation_id } => format!("generation {generation_id} hidden by its member"),
            JobWrite::Changed { generation_id, status, .. } => {
                format!("generation {generation_id} now {status}")
            }
            JobWrite::Finished { generation_id, end } => {
                format!("generation {generation_id} ended {} ({} credits)", end.status, end.credits)
            }
            JobWrite::ModelTiming { model, .. } => format!("learned timing of {model}"),
            JobWrite::Prune { before, .. } => format!("pruning finished jobs created before {before}"),
        }
    }
}

/// What one [`JobWrite`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Done; nothing to report.
    Done,
    /// What [`JobWrite::Begin`] did.
    Begun(Begun),
    /// What [`JobWrite::Finished`] charged; `None` if the job had already finished.
    Finished(Option<Charged>),
    /// How many jobs [`JobWrite::Prune`] forgot.
    Pruned(u64),
    /// Whether [`JobWrite::ReleaseHold`] gave the hold back (false: it
    /// already had, or the job was resolved meanwhile).
    HoldReleased(bool),
}

/// The result of [`JobWrites::apply`]: `Err` if nothing was committed (try
/// again), else one result per write, `Err` for a write refused for good
/// (such as a broken uniqueness rule) while the others were committed.
pub type BatchResult = StoreResult<Vec<StoreResult<WriteOutcome>>>;

/// Keys and their usage.
#[async_trait]
pub trait KeyStore: Send + Sync + std::fmt::Debug {
    /// Adds a key.
    async fn insert_key(&self, key: &NewKey) -> StoreResult<KeyRecord>;
    /// Every key, revoked ones included.
    async fn keys(&self) -> StoreResult<Vec<KeyRecord>>;
    /// A number that changes whenever a key is added, revoked or has its
    /// settings changed (not when it is charged), by any process: a cheap
    /// check of whether [`KeyStore::keys`] needs reading again.
    async fn keys_version(&self) -> StoreResult<i64>;
    /// Changes a key's limits, enabled flag or webhook; `None` if there is
    /// no such key. A new webhook URL is stored with `webhook_secret`, which
    /// it requires ([`StoreError::Invalid`] without it).
    async fn update_key(
        &self,
        name: &str,
        update: &KeyUpdate,
        webhook_secret: Option<&SecretString>,
    ) -> StoreResult<Option<KeyRecord>>;
    /// Per key, its unfinished jobs as the store itself counts them (every
    /// replica's, creates in flight and those whose outcome is unknown
    /// included); `None` for a store that leaves counting to its one server.
    async fn unfinished_counts(&self) -> StoreResult<Option<std::collections::HashMap<KeyId, u32>>> {
        Ok(None)
    }
    /// Revokes a key for good; `None` if there is no such key.
    async fn revoke_key(&self, name: &str) -> StoreResult<Option<KeyRecord>>;
    /// Gives a key a new secret (its hash and prefix), keeping its id and so
    /// its jobs, webhook, spend and limits; `None` if there is no such
    /// usable key.
    async fn rotate_key(&self, name: &str, hash: &[u8; 32], prefix: &str) -> StoreResult<Option<KeyRecord>>;
}

/// What is read of the jobs: everything that holds storage may read them.
#[async_trait]
pub trait JobReads: Send + Sync + std::fmt::Debug {
    /// The job a key created with this `Idempotency-Key`, if any.
    async fn job_by_idempotency_key(
        &self,
        key_id: KeyId,
        idempotency_key: &str,
    ) -> StoreResult<Option<JobRecord>>;
    /// A job by the upstream's id.
    async fn job_by_generation(&self, generation_id: &str) -> StoreResult<Option<JobRecord>>;
    /// Jobs with an upstream id that have not finished, to be polled.
    async fn unfinished_jobs(&self) -> StoreResult<Vec<JobRecord>>;
    /// Creates whose outcome is unknown (no upstream id), oldest first, for
    /// this server to look up: on a [shared](JobReads::shared) store, those
    /// no other replica is looking up, leased to this one while it does.
    // A read although it leases: the lease only says which replica looks
    // a lost create up (its owner and lease time), never what the job is;
    // every change to a job's state still goes through the writer.
    async fn unknown_jobs(&self) -> StoreResult<Vec<JobRecord>>;
    /// Every job marked `unknown`, with or without an upstream id: lost
    /// creates and jobs the upstream does not know. Oldest first.
    async fn jobs_needing_attention(&self) -> StoreResult<Vec<JobRecord>>;
    /// Per model, the average charge of its jobs charged in the last 30
    /// days and their number: `(model, average credits, jobs)`. Recent
    /// prices are the ones that matter, and start-up reads only them.
    async fn model_costs(&self) -> StoreResult<Vec<(String, f64, u64)>>;
    /// The most recently created jobs with an upstream id, newest first.
    async fn recent_jobs(&self, limit: u32) -> StoreResult<Vec<JobRecord>>;
    /// Whether several servers may share this store, each following the
    /// jobs it holds a lease on ([`JobLeases::take_over_jobs`]). A SQLite
    /// file has one server, which follows every unfinished job.
    fn shared(&self) -> bool {
        false
    }
    /// Changes other servers sharing this store make to jobs, as they
    /// commit; `None` for a store with one server.
    async fn job_changes(&self) -> StoreResult<Option<Box<dyn JobChangeFeed>>> {
        Ok(None)
    }
    /// What was learned of each model's job durations, as
    /// [`JobWrite::ModelTiming`] stored it: `(model, timing)` pairs.
    async fn model_timings(&self) -> StoreResult<Vec<(String, String)>>;
}

/// Changes to the jobs. Only the writer ([`crate::engine::writer`]) holds
/// this: [`Store`], which the HTTP state and every reader hold, leaves it
/// out, so nothing else can change a job:
///
/// ```compile_fail
/// use aimlvid_server::store::JobWrites as _;
/// async fn write_from_a_handler(state: aimlvid_server::AppState) {
///     let _ = state.store().apply(&[]).await; // `Store` has no `apply`
/// }
/// ```
#[async_trait]
pub trait JobWrites: Send + Sync + std::fmt::Debug {
    /// Applies `writes` in order, in one transaction: one commit, one log
    /// sync, however many writes. See [`BatchResult`].
    async fn apply(&self, writes: &[JobWrite]) -> BatchResult;
}

/// Which server follows which jobs, and the creates a stopped server left
/// in flight: job writes made outside the writer, by start-up and the lease
/// task only (nothing else is given this).
///
/// They stay out of the writer because they are not changes a request or
/// a poll makes: start-up runs them before the writer exists, and a lease
/// renewal queued behind a busy or retrying writer could come too late (a
/// lapsed lease hands this server's jobs to another). Taking jobs over
/// also returns them, to follow, which the writer's batches do not.
#[async_trait]
pub trait JobLeases: Send + Sync + std::fmt::Debug {
    /// Marks creates left `pending` by a previous run as `unknown`: that
    /// run may or may not have reached the upstream. Returns how many.
    async fn pending_to_unknown(&self) -> StoreResult<u64>;
    /// Unfinished jobs no live server follows (never leased, or their
    /// lease lapsed), now leased to this one, which is to follow them.
    /// Only for a [shared](JobReads::shared) store.
    async fn take_over_jobs(&self) -> StoreResult<Vec<JobRecord>> {
        Ok(Vec::new())
    }
    /// Extends this server's leases; returns how many jobs it holds.
    async fn renew_leases(&self) -> StoreResult<u64> {
        Ok(0)
    }
    /// Gives this server's leases up (at a clean stop), so that another
    /// takes its jobs over at once rather than when the leases lapse.
    async fn release_leases(&self) -> StoreResult<()> {
        Ok(())
    }
}

/// The states of a webhook attempt.
pub mod delivery {
    /// Not made yet; due at its `due_at`.
    pub const PENDING: &str = "pending";
    /// Answered with a 2xx: the delivery is done.
    pub const DELIVERED: &str = "delivered";
    /// Refused or not answered; a later attempt follows unless this was the last.
    pub const FAILED: &str = "failed";
    /// Not made: the key's webhook was removed or the key revoked.
    pub const CANCELLED: &str = "cancelled";
}

/// A webhook attempt that is due.
#[derive(Debug)]
pub struct DueWebhook {
    /// The attempt's row id.
    pub id: i64,
    /// Shared by every attempt of one delivery.
    pub delivery_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The job's key.
    pub key_id: KeyId,
    /// The job.
    pub generation_id: String,
    /// The job's final status.
    pub event: String,
    /// The JSON to send, in the [`WebhookFormat::Aimlvid`] shape.
    pub body: String,
    /// When the delivery was queued (unix milliseconds): the same on
    /// every attempt of it.
    pub queued_at_ms: i64,
    /// The key's webhook as it is now; `None` if it was removed or the key revoked.
    pub target: Option<Webhook>,
    /// The shape the key's deliveries take now.
    pub format: WebhookFormat,
}

/// How an attempt went, to record.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// One of [`delivery`]'s states other than pending.
    pub state: &'static str,
    /// Where it was sent.
    pub url: Option<String>,
    /// The answer's status.
    pub response_status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// Unix milliseconds.
    pub attempted_at_ms: i64,
    /// How long it took.
    pub duration_ms: i64,
    /// When to try again (unix milliseconds); `None` ends the delivery.
    pub retry_at_ms: Option<i64>,
}

/// A recorded webhook attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookAttempt {
    /// Row id.
    pub id: i64,
    /// Shared by every attempt of one delivery.
    pub delivery_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The job's key.
    pub key_id: KeyId,
    /// The job.
    pub generation_id: String,
    /// The job's final status.
    pub event: String,
    /// One of [`delivery`]'s states.
    pub state: String,
    /// When it is or was due, unix milliseconds.
    pub due_at_ms: i64,
    /// Where it was sent.
    pub url: Option<String>,
    /// The answer's status.
    pub response_status: Option<u16>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was made, unix milliseconds.
    pub attempted_at_ms: Option<i64>,
    /// How long it took.
    pub duration_ms: Option<i64>,
}

/// Webhook deliveries: a queue that survives restarts, and the record of
/// every attempt.
#[async_trait]
pub trait WebhookStore: Send + Sync + std::fmt::Debug {
    /// Claims up to `limit` pending attempts due by `now_ms`, oldest first,
    /// with their key's webhook, skipping the keys in `skip`: each claimed
    /// attempt is due again only at `lease_until_ms`, so it is not taken
    /// twice while it is being made, and is made again if whoever took it
    /// never records it.
    async fn claim_due_webhooks(
        &self,
        now_ms: i64,
        limit: u32,
        skip: &[KeyId],
        lease_until_ms: i64,
    ) -> StoreResult<Vec<DueWebhook>>;
    /// Makes claimed attempts that were not made (`ids`) due at `due_ms`:
    /// at once when a stop cut them short, later when their host is resting.
    async fn release_webhooks(&self, ids: &[i64], due_ms: i64) -> StoreResult<()>;
    /// When the next pending attempt of a key not in `skip` is due, if any.
    async fn next_webhook_due(&self, skip: &[KeyId]) -> StoreResult<Option<i64>>;
    /// Records an attempt's outcome and, in the same transaction, queues
    /// the next attempt if the outcome asks for one.
    async fn webhook_attempted(&self, id: i64, outcome: &AttemptOutcome) -> StoreResult<()>;
    /// Every attempt for a job, in order.
    async fn webhook_attempts(&self, generation_id: &str) -> StoreResult<Vec<WebhookAttempt>>;
}

/// Jobs other servers changed, as they commit.
#[async_trait]
pub trait JobChangeFeed: Send {
    /// The next changed job's generation id; `Ok(None)` when changes may
    /// have been missed (the connection was lost and is being made again),
    /// so that whatever was cached is read again.
    async fn next(&mut self) -> StoreResult<Option<String>>;
}

/// Where the server keeps its keys and jobs.
#[derive(Debug, Clone)]
pub enum Database {
    /// A SQLite file: one server.
    Sqlite(std::path::PathBuf),
    /// A PostgreSQL database: one server or several replicas.
    Postgres(PostgresSettings),
}

impl Database {
    /// Where it is, fit for a log line: a file's path, or a PostgreSQL
    /// database's host and name (never its password).
    pub fn describe(&self) -> String {
        use secrecy::ExposeSecret as _;
        match self {
            Database::Sqlite(path) => path.display().to_string(),
            Database::Postgres(settings) => match url::Url::parse(settings.url.expose_secret()) {
                Ok(url) => format!(
                    "postgres://{}{}{}",
                    url.host_str().unwrap_or("localhost"),
                    url.port().map(|p| format!(":{p}")).unwrap_or_default(),
                    url.path()
                ),
                Err(_) => "a PostgreSQL database".to_owned(),
            },
        }
    }

    /// Opens it, bringing its schema up to this version (`serve`, `migrate`).
    pub async fn open(&self) -> StoreResult<OpenStore> {
        Ok(match self {
            Database::Sqlite(path) => OpenStore::Sqlite(SqliteStore::open(path).await?),
            Database::Postgres(settings) => OpenStore::Postgres(PostgresStore::open(settings).await?),
        })
    }

    /// Opens it for a command beside running servers (`keys`, `jobs`):
    /// never migrates a database in use.
    pub async fn open_beside_server(&self) -> StoreResult<OpenStore> {
        Ok(match self {
            Database::Sqlite(path) => OpenStore::Sqlite(SqliteStore::open_beside_server(path).await?),
            Database::Postgres(settings) => {
                OpenStore::Postgres(PostgresStore::open_beside_server(settings).await?)
            }
        })
    }
}

/// An open store of either backend.
#[derive(Debug, Clone)]
pub enum OpenStore {
    /// See [`SqliteStore`].
    Sqlite(SqliteStore),
    /// See [`PostgresStore`].
    Postgres(PostgresStore),
}

impl OpenStore {
    /// The whole backend, to start a server on.
    pub fn shared(&self) -> std::sync::Arc<dyn Backend> {
        match self {
            OpenStore::Sqlite(store) => std::sync::Arc::new(store.clone()),
            OpenStore::Postgres(store) => std::sync::Arc::new(store.clone()),
        }
    }

    /// The store, to read and manage keys with here (never to write jobs).
    pub fn get(&self) -> &dyn Store {
        match self {
            OpenStore::Sqlite(store) => store,
            OpenStore::Postgres(store) => store,
        }
    }

    /// Closes its connections.
    pub async fn close(&self) {
        match self {
            OpenStore::Sqlite(store) => store.close().await,
            OpenStore::Postgres(store) => store.close().await,
        }
    }
}

/// Which jobs a listing holds: newest first (or oldest first),
/// [`JobFilter::limit`] at a time, past the cursor of the previous page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// One key's jobs; `None` for every key's.
    pub key_id: Option<KeyId>,
    /// Only jobs with this status.
    pub status: Option<String>,
    /// Only jobs of this model.
    pub model: Option<String>,
    /// Only jobs older than this one: `(created_at, local_id)` of the last
    /// job of the previous page.
    pub before: Option<(i64, String)>,
    /// Only jobs newer than this one: `(created_at, local_id)` of the last
    /// job of the previous page, oldest first.
    pub after: Option<(i64, String)>,
    /// Oldest first rather than newest first.
    pub oldest_first: bool,
    /// Only jobs the upstream accepted (with a generation id).
    pub accepted_only: bool,
    /// Leave out jobs their member deleted ([`JobWrite::Hide`]).
    pub visible_only: bool,
    /// At most this many.
    pub limit: u32,
}

/// A job as the team page shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct JobSummary {
    /// This server's id for the job.
    pub local_id: String,
    /// The key that created it.
    pub key_id: KeyId,
    /// The upstream's id, once known.
    pub generation_id: Option<String>,
    /// `pending`, `unknown`, or the upstream's status.
    pub status: String,
    /// The model asked for.
    pub model: String,
    /// The generation as last reported upstream, as JSON.
    pub body: Option<String>,
    /// Credits charged, once finished.
    pub credits_charged: Option<f64>,
    /// Why a job is `unknown`.
    pub note: Option<String>,
    /// The request's prompt.
    pub prompt: Option<String>,
    /// What the job started from (a URL, or a description of inline media).
    pub input: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// When it last changed (for a finished job, when it finished), unix seconds.
    pub updated_at: i64,
    /// The create body as sent upstream, media sent inline left out (see
    /// [`NewJob::params`]).
    pub params: Option<String>,
    /// The parameters whose inline media `params` leaves out.
    pub inline_media: Option<String>,
    /// The video (generation id) this job remixes.
    pub remixed_from: Option<String>,
    /// When its member deleted it, unix seconds.
    pub hidden_at: Option<i64>,
}

/// One key's charges on one UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct DailyUsage {
    /// The key.
    pub key_id: KeyId,
    /// The day's first second (unix seconds, UTC).
    pub day: i64,
    /// Credits charged for the jobs created that day.
    pub credits: f64,
    /// Jobs created that day.
    pub jobs: u64,
}

/// A signed-in team page session. The cookie's token is kept only as a
/// hash, so a copy of the database signs nobody in.
#[derive(Clone, PartialEq)]
pub struct PageSession {
    /// The member's key; `None` for the admin.
    pub key_id: Option<KeyId>,
    /// SHA-256 of the key or admin token signed in with: a session ends
    /// when its key is rotated or the admin token changed.
    pub credential_hash: [u8; 32],
    /// The token every form of this session carries.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for PageSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageSession")
            .field("key_id", &self.key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What the team page reads, and its sessions.
#[async_trait]
pub trait PageStore: Send + Sync + std::fmt::Debug {
    /// Jobs as [`JobFilter`] asks, newest first.
    async fn job_history(&self, filter: &JobFilter) -> StoreResult<Vec<JobSummary>>;
    /// One job by this server's id.
    async fn job_summary(&self, local_id: &str) -> StoreResult<Option<JobSummary>>;
    /// The models a key (or, for `None`, any key) has used, by name.
    async fn models_used(&self, key_id: Option<KeyId>) -> StoreResult<Vec<String>>;
    /// Each key's charges per day, for jobs created since `since` (unix seconds).
    async fn daily_usage(&self, since: i64) -> StoreResult<Vec<DailyUsage>>;
    /// Jobs with a generation id that changed (for a finished job: ended)
    /// or began at or after `since` (unix seconds): what a reconciliation
    /// sets against the upstream's ledger.
    async fn billed_jobs(&self, since: i64) -> StoreResult<Vec<JobSummary>>;
    /// The job of a generation, as the page shows jobs.
    async fn generation_summary(&self, generation_id: &str) -> StoreResult<Option<JobSummary>>;
    /// Webhook deliveries that gave up (their last attempt failed), newest first.
    async fn failed_deliveries(&self, limit: u32) -> StoreResult<Vec<WebhookAttempt>>;
    /// Stores a new session under the hash of its token, and forgets
    /// sessions that expired before `now`.
    async fn insert_session(&self, token_hash: &[u8; 32], session: &PageSession, now: i64)
    -> StoreResult<()>;
    /// The session of a token's hash, unless it expired before `now`.
    async fn session(&self, token_hash: &[u8; 32], now: i64) -> StoreResult<Option<PageSession>>;
    /// Ends a session (signing out).
    async fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()>;
}

/// Storage as the server's readers use it: keys, webhooks and the page,
/// and the jobs to read. The HTTP state and the engine's tasks hold this;
/// it has no job writes ([`JobWrites`], [`JobLeases`]), so code holding it
/// cannot change a job.
#[async_trait]
pub trait Store: KeyStore + JobReads + WebhookStore + PageStore {
    /// Whether the backend answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
}

/// A complete storage backend, as opened: [`Store`] and the job writes.
/// Only [`AppState::start`](crate::AppState::start) takes one, to hand the
/// writes to the writer and the lease task, and [`Store`] to the rest.
pub trait Backend: Store + JobWrites + JobLeases {}

impl<T: Store + JobWrites + JobLeases + ?Sized> Backend for T {}
