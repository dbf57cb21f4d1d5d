//! Webhooks: when a job finishes, the server POSTs it to its key's webhook
//! URL, signed with the key's webhook secret.
//!
//! A delivery is queued in storage in the transaction that finishes the job
//! (see [`JobWrite::Finished`](crate::store::JobWrite::Finished)),
//! and made by one background task, which retries failures with
//! exponential backoff up to a bounded number of attempts and records
//! every attempt. Pending deliveries are resumed at the next start, so
//! delivery is at least once: receivers should ignore a repeated
//! [`DELIVERY_HEADER`].
//!
//! One slow or dead receiver does not hold up the others: each host gets
//! at most [`WebhookConfig::per_host`] attempts at a time, and a host that
//! fails [`WebhookConfig::breaker_failures`] times in a row (no answer, a
//! timeout, a 5xx or 429) rests: its deliveries wait, without spending
//! attempts, until one probe shows it answering again. Each rest is twice
//! the last, up to [`WebhookConfig::breaker_max_rest`].
//!
//! # Verifying a delivery
//!
//! The [`SIGNATURE_HEADER`] is `t=<unix seconds>,v1=<hex>`, where `<hex>`
//! is the HMAC-SHA256, keyed with the webhook secret (the whole string,
//! `whsec_…`, as printed), of `"<t>.<body>"`: the timestamp, a dot, and the
//! raw request body. Recompute it over the body as received, compare in
//! constant time, and refuse a `t` far from now (say five minutes) to stop
//! replays. [`verify`] does exactly that.
//!
//! # The `openai` format
//!
//! A key whose [`WebhookFormat`] is `openai` gets OpenAI's video events
//! instead, signed per Standard Webhooks: see [`standard`]. The format is
//! applied when each attempt is made, from the key as it is then (as its
//! URL and secret are): what is queued is the job's end, so changing a
//! key's format changes its pending deliveries too, and a receiver gets
//! the shape it was last set up for.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit as _, Mac as _};
use secrecy::ExposeSecret as _;
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{AttemptOutcome, DueWebhook, KeyId, Store, StoreResult, WebhookFormat, delivery};

pub mod standard;
mod targets;

use targets::PublicAddressesOnly;
pub use targets::{TargetRules, check_url, is_public};

/// The signature header: `t=<unix seconds>,v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-aimlvid-signature";
/// Names the delivery; the same on every attempt of it.
pub const DELIVERY_HEADER: &str = "x-aimlvid-delivery";
/// The attempt's number, from 1.
pub const ATTEMPT_HEADER: &str = "x-aimlvid-attempt";

type HmacSha256 = hmac::Hmac<Sha256>;

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Attempts per delivery, the first included.
    pub max_attempts: u32,
    /// Wait before the second attempt; each later wait doubles.
    pub first_retry: Duration,
    /// The longest wait between attempts.
    pub max_retry: Duration,
    /// Limit on one attempt.
    pub timeout: Duration,
    /// Deliver to loopback, private, link-local (cloud metadata) and
    /// unique-local addresses too. Off by default: a key's webhook URL is a
    /// member's to set, and must not reach into the server's network.
    pub allow_private_targets: bool,
    /// Deliver over plain `http://` too. Off by default.
    pub allow_plain_http: bool,
    /// Attempts in flight to one host (name and port) at a time.
    pub per_host: usize,
    /// Failures in a row after which a host rests.
    pub breaker_failures: u32,
    /// A host's first rest; each later one doubles.
    pub breaker_rest: Duration,
    /// The longest rest.
    pub breaker_max_rest: Duration,
}

impl Default for WebhookConfig {
    /// Ten attempts over about an hour and a half: waits of 10 s, 20 s, … 42 min.
    fn default() -> Self {
        WebhookConfig {
            max_attempts: 10,
            first_retry: Duration::from_secs(10),
            max_retry: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            allow_private_targets: false,
            allow_plain_http: false,
            per_host: 4,
            breaker_failures: 5,
            breaker_rest: Duration::from_secs(30),
            breaker_max_rest: Duration::from_secs(600),
        }
    }
}

impl WebhookConfig {
    /// The wait after failed attempt number `attempt` (from 1).
    pub fn retry_after(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.first_retry.saturating_mul(1 << doublings).min(self.max_retry)
    }
}

/// The [`SIGNATURE_HEADER`] value for `body` sent at `timestamp`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let mut header = format!("t={timestamp},v1=");
    for byte in digest {
        header.push(char::from(HEX[usize::from(byte >> 4)]));
        header.push(char::from(HEX[usize::from(byte & 15)]));
    }
    header
}

/// Whether `header` is a valid signature of `body` under `secret`, made
/// within `tolerance` of `now` (unix seconds). Compares in constant time.
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance: Duration) -> bool {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex)) => signatures.extend(decode_hex(hex)),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else { return false };
    if now.abs_diff(timestamp) > tolerance.as_secs() {
        return false;
    }
    signatures.iter().any(|signature| mac(secret, timestamp, body).verify_slice(signature).is_ok())
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl WebhookConfig {
    /// The targets this configuration allows.
    pub fn target_rules(&self) -> TargetRules {
        TargetRules {
            allow_private_targets: self.allow_private_targets,
            allow_plain_http: self.allow_plain_http,
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Attempts in flight at once, to all hosts.
const CONCURRENT: usize = 32;
/// How long the worker sleeps with nothing pending and no wake-up: a
/// safety net, since every queued delivery wakes it.
const IDLE: Duration = Duration::from_secs(60);
/// Beyond the attempt's timeout, how long a claimed attempt is held before
/// it is due again (if this process died making it): enough to record the
/// outcome of an attempt that ran to its timeout, short enough that a dead
/// replica's attempts are made again within half a minute.
const LEASE_MARGIN: Duration = Duration::from_secs(15);

/// The delivery worker's equipment.
#[derive(Debug)]
pub(crate) struct Webhooks {
    http: reqwest::Client,
    config: WebhookConfig,
    wake: Notify,
}

/// How an attempt went for its host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// The host answered in time (whatever it said, short of 5xx or 429).
    Answered,
    /// No answer, a timeout, a 5xx or a 429.
    Failing,
    /// Nothing was sent (refused target, cancelled delivery).
    NotAsked,
}

/// What the worker knows of one receiving host.
#[derive(Debug, Default)]
struct Host {
    in_flight: usize,
    /// Failures in a row.
    failures: u32,
    /// Resting until then (unix ms); after it, one probe at a time.
    rest_until: Option<i64>,
    /// The next rest.
    next_rest: Option<Duration>,
}

/// The hosts the worker has seen, and which keys deliver to which.
#[derive(Debug, Default)]
struct Hosts {
    hosts: HashMap<String, Host>,
    keys: HashMap<KeyId, String>,
}

impl Hosts {
    /// Attempts `host` may start now.
    fn room(&self, host: &str, config: &WebhookConfig, now_ms: i64) -> usize {
        let Some(state) = self.hosts.get(host) else { return config.per_host.max(1) };
        let limit = match state.rest_until {
            Some(until) if until > now_ms => 0,
            // Rested: one probe decides whether it is back.
            Some(_) => 1,
            None => config.per_host.max(1),
        };
        limit.saturating_sub(state.in_flight)
    }

    /// Keys whose host can take no attempt now: not claimed until it can.
    fn full_keys(&self, config: &WebhookConfig, now_ms: i64) -> Vec<KeyId> {
        let mut keys: Vec<KeyId> = self
            .keys
            .iter()
            .filter(|(_, host)| self.room(host, config, now_ms) == 0)
            .map(|(key, _)| *key)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// When the first resting host may be probed.
    fn next_probe(&self, now_ms: i64) -> Option<i64> {
        self.hosts.values().filter_map(|h| h.rest_until).filter(|&until| until > now_ms).min()
    }

    /// Takes an attempt's outcome into account; returns how the number of
    /// resting hosts changed.
    fn settled(&mut self, host: &str, health: Health, config: &WebhookConfig, now_ms: i64) -> i64 {
        let Some(state) = self.hosts.get_mut(host) else { return 0 };
        state.in_flight = state.in_flight.saturating_sub(1);
        match health {
            Health::NotAsked => 0,
            Health::Answered => {
                state.failures = 0;
                state.next_rest = None;
                if state.rest_until.take().is_some() {
                    tracing::info!(host, "webhook receiver answers again; deliveries resume");
                    return -1;
                }
                0
            }
            Health::Failing => {
                state.failures = state.failures.saturating_add(1);
                let resting = state.rest_until.is_some_and(|until| until > now_ms);
                if state.failures < config.breaker_failures.max(1) || resting {
                    return 0;
                }
                let first = state.rest_until.is_none();
                let rest = state.next_rest.unwrap_or(config.breaker_rest);
                state.next_rest = Some(rest.saturating_mul(2).min(config.breaker_max_rest));
                state.rest_until = Some(now_ms + i64::try_from(rest.as_millis()).unwrap_or(i64::MAX / 2));
                tracing::warn!(
                    host,
                    failures = state.failures,
                    rest_secs = rest.as_secs_f64(),
                    "webhook receiver keeps failing; its deliveries wait, without spending attempts, \
                     until it answers a probe"
                );
                i64::from(first)
            }
        }
    }
}

/// The host (name and port) a webhook URL delivers to.
fn host_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    Some(format!("{}:{}", url.host_str()?, url.port_or_known_default()?))
}

impl Webhooks {
    /// The targets webhook URLs may name.
    pub(crate) fn target_rules(&self) -> TargetRules {
        self.config.target_rules()
    }

    pub(crate) fn new(config: WebhookConfig) -> reqwest::Result<Self> {
        let mut http = reqwest::Client::builder()
            // A receiver that moved should be updated, not followed with a signed body.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .user_agent(concat!("aimlvid-server/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private_targets {
            // Checked where the connection is made, so a name that resolves
            // to a private address (or is re-pointed to one) never gets one.
            http = http.dns_resolver(Arc::new(PublicAddressesOnly));
        }
        let http = http.build()?;
        Ok(Webhooks { http, config, wake: Notify::new() })
    }

    /// Tells the worker that a delivery was queued.
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Delivers whatever is due, keeping each host within its limits, then
    /// sleeps until the next attempt is due, an attempt ends or a delivery
    /// is queued, until `stop`. Attempts cut short by `stop` are released,
    /// to be made again at the next start.
    pub(crate) async fn run(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
        metrics: &Arc<Metrics>,
        stop: &CancellationToken,
    ) {
        let mut hosts = Hosts::default();
        // Tasks, not futures polled here: an attempt recording its outcome
        // must not wait on this loop, which may itself wait on storage.
        let mut in_flight: JoinSet<(i64, Option<String>, Health)> = JoinSet::new();
        let mut claimed: HashSet<i64> = HashSet::new();
        loop {
            let now = unix_ms();
            let free = CONCURRENT.saturating_sub(in_flight.len());
            let mut pause = IDLE;
            if free > 0 {
                let next = match self.claim_due(store.as_ref(), &mut hosts, free, now).await {
                    Ok(due) => {
                        for (due, host) in due {
                            claimed.insert(due.id);
                            let (webhooks, store, metrics) = (self.clone(), store.clone(), metrics.clone());
                            in_flight.spawn(async move {
                                let id = due.id;
                                let health = webhooks.attempt(due, store.as_ref(), &metrics).await;
                                (id, host, health)
                            });
                        }
                        store.next_webhook_due(&hosts.full_keys(&self.config, unix_ms())).await
                    }
                    Err(e) => Err(e),
                };
                match next {
                    Ok(next) => {
                        if let Some(next) = next.into_iter().chain(hosts.next_probe(unix_ms())).min() {
                            pause = Duration::from_millis(u64::try_from(next - unix_ms()).unwrap_or(0));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read webhook deliveries; will try again");
                        pause = Duration::from_secs(1);
                    }
                }
            }
            // With every slot taken, only an attempt ending makes room.
            let timer = in_flight.len() < CONCURRENT;
            tokio::select! {
                () = stop.cancelled() => break,
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => match done {
                    Ok((id, host, health)) => {
                        claimed.remove(&id);
                        if let Some(host) = host {
                            metrics.webhook_hosts_resting(hosts.settled(&host, health, &self.config, unix_ms()));
                        }
                    }
                    // Its claim lapses and the attempt is made again.
                    Err(e) => tracing::error!(error = %e, "a webhook attempt failed"),
                },
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause), if timer => {}
            }
        }
        in_flight.abort_all();
        while in_flight.join_next().await.is_some() {}
        let cut: Vec<i64> = claimed.into_iter().collect();
        if let Err(e) = store.release_webhooks(&cut, unix_ms()).await {
            // Made again once their claim lapses instead.
            tracing::warn!(error = %e, "could not release webhook attempts cut short by the stop");
        }
    }

    /// Claims what is due for hosts with room; what a host cannot take now
    /// goes back, due when it can.
    async fn claim_due(
        &self,
        store: &dyn Store,
        hosts: &mut Hosts,
        free: usize,
        now: i64,
    ) -> StoreResult<Vec<(DueWebhook, Option<String>)>> {
        let full = hosts.full_keys(&self.config, now);
        let lease =
            now + i64::try_from((self.config.timeout + LEASE_MARGIN).as_millis()).unwrap_or(i64::MAX / 2);
        let due =
            store.claim_due_webhooks(now, u32::try_from(free).unwrap_or(u32::MAX), &full, lease).await?;
        let mut started = Vec::with_capacity(due.len());
        let mut later: HashMap<i64, Vec<i64>> = HashMap::new();
        for due in due {
            let host = due.target.as_ref().and_then(|t| host_of(&t.url));
            if let Some(host) = &host {
                hosts.keys.insert(due.key_id, host.clone());
                if hosts.room(host, &self.config, now) == 0 {
                    let when =
                        hosts.hosts.get(host).and_then(|h| h.rest_until).filter(|&t| t > now).unwrap_or(now);
                    later.entry(when).or_default().push(due.id);
                    continue;
                }
                hosts.hosts.entry(host.clone()).or_default().in_flight += 1;
            }
            started.push((due, host));
        }
        for (when, ids) in later {
            if let Err(e) = store.release_webhooks(&ids, when).await {
                // Due again once their claim lapses instead.
                tracing::warn!(error = %e, "could not put back webhook attempts for a busy host");
            }
        }
        Ok(started)
    }

    async fn attempt(&self, due: DueWebhook, store: &dyn Store, metrics: &Metrics) -> Health {
        let attempted_at_ms = unix_ms();
        let started = Instant::now();
        let Some(target) = &due.target else {
            tracing::info!(
                generation_id = due.generation_id,
                "webhook removed or key revoked; delivery cancelled"
            );
            let outcome = AttemptOutcome {
                state: delivery::CANCELLED,
                url: None,
                response_status: None,
                error: Some("the key's webhook was removed, or the key revoked".into()),
                attempted_at_ms,
                duration_ms: 0,
                retry_at_ms: None,
            };
            metrics.webhook_attempt(delivery::CANCELLED);
            self.record(store, &due, &outcome).await;
            return Health::NotAsked;
        };
        if let Err(refusal) = self.check_target(&target.url) {
            let sent: Result<reqwest::Response, String> = Err(refusal);
            self.settle(&due, target, sent, attempted_at_ms, started, store, metrics).await;
            return Health::NotAsked;
        }
        let request = match self.request(&due, target, attempted_at_ms / 1000) {
            Ok(request) => request,
            Err(refusal) => {
                self.settle(&due, target, Err(refusal), attempted_at_ms, started, store, metrics).await;
                return Health::NotAsked;
            }
        };
        let sent = request.send().await.map_err(|e| describe(&e));
        let health = match &sent {
            Ok(answer) if answer.status().is_server_error() || answer.status() == 429 => Health::Failing,
            Ok(_) => Health::Answered,
            // The resolver's refusal of a private address says nothing of the host.
            Err(e) if e.contains("not public") => Health::NotAsked,
            Err(_) => Health::Failing,
        };
        self.settle(&due, target, sent, attempted_at_ms, started, store, metrics).await;
        health
    }

    /// The attempt's request, in the key's format, signed at `timestamp`.
    fn request(
        &self,
        due: &DueWebhook,
        target: &crate::store::Webhook,
        timestamp: i64,
    ) -> Result<reqwest::RequestBuilder, String> {
        let secret = target.secret.expose_secret();
        let request = self.http.post(&target.url).header(reqwest::header::CONTENT_TYPE, "application/json");
        Ok(match due.format {
            WebhookFormat::Aimlvid => request
                .header(SIGNATURE_HEADER, sign(secret, timestamp, due.body.as_bytes()))
                .header(DELIVERY_HEADER, &due.delivery_id)
                .header(ATTEMPT_HEADER, due.attempt)
                .body(due.body.clone()),
            WebhookFormat::Openai => {
                let id = standard::message_id(&due.delivery_id);
                let body =
                    standard::video_event(&due.delivery_id, &due.generation_id, &due.event, due.queued_at_ms);
                let signature = standard::sign(secret, &id, timestamp, body.as_bytes())
                    .map_err(|e| format!("refused: {e}"))?;
                request
                    .header(standard::ID_HEADER, id)
                    .header(standard::TIMESTAMP_HEADER, timestamp)
                    .header(standard::SIGNATURE_HEADER, signature)
                    .body(body)
            }
        })
    }

    /// Refuses a target the configuration does not allow, before any
    /// connection: plain http, or an address literal that is not public.
    fn check_target(&self, url: &str) -> Result<(), String> {
        // The same rules as when the URL was saved; the configuration may
        // have changed since.
        check_url(url, self.config.target_rules()).map(drop).map_err(|e| format!("refused: {e}"))
    }

    /// Records an attempt's outcome and plans the next.
    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        due: &DueWebhook,
        target: &crate::store::Webhook,
        sent: Result<reqwest::Response, String>,
        attempted_at_ms: i64,
        started: Instant,
        store: &dyn Store,
        metrics: &Metrics,
    ) {
        let (response_status, error) = match sent {
            Ok(response) if response.status().is_success() => (Some(response.status().as_u16()), None),
            Ok(response) => {
                (Some(response.status().as_u16()), Some(format!("answered {}", response.status())))
            }
            Err(e) => (None, Some(e)),
        };
        let delivered = error.is_none();
        let last = due.attempt >= self.config.max_attempts;
        let retry_at_ms = (!delivered && !last).then(|| {
            unix_ms() + i64::try_from(self.config.retry_after(due.attempt).as_millis()).unwrap_or(i64::MAX)
        });
        // The host only: a URL may carry a token in its path or query.
        let host = url::Url::parse(&target.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        let (generation_id, attempt) = (due.generation_id.as_str(), due.attempt);
        match (&error, retry_at_ms) {
            (None, _) => tracing::info!(generation_id, attempt, host, "webhook delivered"),
            (Some(error), Some(_)) => {
                tracing::warn!(generation_id, attempt, host, error, "webhook failed; will retry")
            }
            (Some(error), None) => {
                tracing::error!(generation_id, attempt, host, error, "webhook failed; giving up");
                metrics.webhook_given_up();
            }
        }
        let outcome = AttemptOutcome {
            state: if delivered { delivery::DELIVERED } else { delivery::FAILED },
            url: Some(target.url.clone()),
            response_status,
            error,
            attempted_at_ms,
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            retry_at_ms,
        };
        metrics.webhook_attempt(outcome.state);
        self.record(store, due, &outcome).await
    }

    async fn record(&self, store: &dyn Store, due: &DueWebhook, outcome: &AttemptOutcome) {
        if let Err(e) = store.webhook_attempted(due.id, outcome).await {
            // The attempt stays pending and is made again once its claim
            // lapses: a duplicate, not a loss.
            tracing::error!(generation_id = due.generation_id, error = %e, "could not record a webhook attempt");
        }
    }
}

/// Why a request failed, without its URL.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut text =
        if error.is_connect() { "could not connect".to_owned() } else { "request failed".to_owned() };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_the_timestamp_and_body() {
        // RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
        let header = sign("Jefe", 0, b"what do ya want for nothing?");
        assert!(header.starts_with("t=0,v1="), "{header}");
        // The signed text is "0." followed by the body, so check it through the MAC itself.
        let mut expected = HmacSha256::new_from_slice(b"Jefe").unwrap();
        expected.update(b"0.what do ya want for nothing?");
        assert_eq!(decode_hex(&header[7..]).unwrap(), expected.finalize().into_bytes().to_vec());
        let mut rfc = HmacSha256::new_from_slice(b"Jefe").unwrap();
        rfc.update(b"what do ya want for nothing?");
        assert_eq!(
            decode_hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843").unwrap(),
            rfc.finalize().into_bytes().to_vec()
        );
    }

    #[test]
    fn verification_checks_secret_body_and_age() {
        let tolerance = Duration::from_secs(300);
        let header = sign("whsec_a", 1_000, b"{}");
        assert!(verify("whsec_a", &header, b"{}", 1_100, tolerance));
        assert!(!verify("whsec_b", &header, b"{}", 1_100, tolerance), "another secret");
        assert!(!verify("whsec_a", &header, b"{ }", 1_100, tolerance), "another body");
        assert!(!verify("whsec_a", &header, b"{}", 1_400, tolerance), "too old");
        assert!(
            !verify("whsec_a", &header.replace("t=1000", "t=1001"), b"{}", 1_000, tolerance),
            "another time"
        );
        assert!(!verify("whsec_a", "v1=00", b"{}", 1_000, tolerance), "no time");
    }

    #[test]
    fn a_host_that_keeps_failing_rests_then_takes_one_probe() {
        let config = WebhookConfig {
            per_host: 2,
            breaker_failures: 3,
            breaker_rest: Duration::from_secs(10),
            breaker_max_rest: Duration::from_secs(25),
            ..WebhookConfig::default()
        };
        let mut hosts = Hosts::default();
        hosts.keys.insert(7, "hooks.example:443".into());
        let host = "hooks.example:443";
        assert_eq!(hosts.room(host, &config, 0), 2);
        let state = hosts.hosts.entry(host.into()).or_default();
        state.in_flight = 2;
        assert_eq!(hosts.full_keys(&config, 0), [7], "two in flight fill it");

        let mut changes = 0;
        for _ in 0..2 {
            changes += hosts.settled(host, Health::Failing, &config, 0);
        }
        assert_eq!((changes, hosts.room(host, &config, 0)), (0, 2), "two failures are not enough");
        hosts.hosts.get_mut(host).unwrap().in_flight = 2;
        assert_eq!(hosts.settled(host, Health::Failing, &config, 1_000), 1, "the third rests it");
        assert_eq!(hosts.settled(host, Health::Failing, &config, 1_000), 0, "once");
        assert_eq!(hosts.room(host, &config, 10_999), 0);
        assert_eq!(hosts.next_probe(1_000), Some(11_000));
        assert_eq!(hosts.room(host, &config, 11_000), 1, "one probe after the rest");

        hosts.hosts.get_mut(host).unwrap().in_flight = 1;
        assert_eq!(hosts.settled(host, Health::Failing, &config, 11_500), 0, "a failed probe rests it again");
        assert_eq!(hosts.next_probe(11_500), Some(31_500), "for twice as long");
        hosts.hosts.get_mut(host).unwrap().in_flight = 1;
        assert_eq!(hosts.settled(host, Health::Failing, &config, 31_500), 0);
        assert_eq!(hosts.next_probe(31_500), Some(56_500), "up to the longest rest");
        hosts.hosts.get_mut(host).unwrap().in_flight = 1;
        assert_eq!(hosts.settled(host, Health::Answered, &config, 57_000), -1, "an answer ends the rest");
        assert_eq!(hosts.room(host, &config, 57_000), 2);
        assert!(hosts.full_keys(&config, 57_000).is_empty());
    }

    #[test]
    fn hosts_are_told_apart_by_name_and_port() {
        assert_eq!(host_of("https://hooks.example/a?token=x").as_deref(), Some("hooks.example:443"));
        assert_eq!(host_of("http://127.0.0.1:8080/hook").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host_of("not a url"), None);
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        let config = WebhookConfig::default();
        let waits: Vec<u64> = (1..=10).map(|a| config.retry_after(a).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]);
        assert_eq!(config.retry_after(u32::MAX), config.max_retry);
    }
}
