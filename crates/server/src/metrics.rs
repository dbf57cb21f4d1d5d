//! Prometheus metrics from a fixed registry of atomics.
//!
//! Every series the server records on a request is known when it starts
//! (routes, status codes, upstream call kinds and outcomes), so each is a
//! slot in a preallocated array: recording is a few relaxed atomic adds,
//! with no lock, no map look-up and no allocation. Figures that already
//! live elsewhere (credits and unfinished jobs per key, jobs in memory) are
//! read when `/metrics` is scraped, so they cost nothing in between.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use aimlvid::{CallKind, Exchange};

/// Histogram bucket bounds, in nanoseconds: from a status read served from
/// memory (tens of microseconds) to a create uploading a large clip.
const BUCKETS_NS: [u64; 21] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
];

/// A latency histogram with fixed buckets. Buckets are stored
/// non-cumulative (one add per observation) and summed when rendered.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = BUCKETS_NS.iter().position(|&bound| ns <= bound).unwrap_or(BUCKETS_NS.len());
        self.buckets[slot].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(ns, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = BUCKETS_NS.get(i).map_or_else(|| "+Inf".to_owned(), |ns| seconds(*ns));
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", seconds(self.sum_ns.load(Relaxed)));
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count.load(Relaxed));
    }
}

/// Nanoseconds as a decimal number of seconds, without float noise.
fn seconds(ns: u64) -> String {
    let (whole, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac == 0 {
        return whole.to_string();
    }
    let frac = format!("{frac:09}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

/// The routes requests are counted under, as `(method, route)` labels. The
/// route is the router's pattern, so ids never become labels.
const ROUTES: [(&str, &str); 18] = [
    ("POST", "/v2/video/generations"),
    ("GET", "/v2/video/generations"),
    ("GET", "/v2/video/generations/{id}/events"),
    // OpenAI's videos API.
    ("POST", "/v1/videos"),
    ("GET", "/v1/videos"),
    ("GET", "/v1/videos/{id}"),
    ("DELETE", "/v1/videos/{id}"),
    ("GET", "/v1/videos/{id}/content"),
    ("POST", "/v1/videos/{id}/remix"),
    ("POST", "/v1/videos/extensions"),
    ("GET", "/admin/keys"),
    ("POST", "/admin/keys"),
    ("PATCH", "/admin/keys/{name}"),
    ("DELETE", "/admin/keys/{name}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    // Anything else: unknown paths, other methods.
    ("other", "other"),
];

/// Status codes 100–599, one counter each.
const CODES: usize = 500;

/// Counters and latencies of one route.
#[derive(Debug)]
struct RouteMetrics {
    codes: Box<[AtomicU64]>,
    latency: Histogram,
}

impl Default for RouteMetrics {
    fn default() -> Self {
        RouteMetrics { codes: (0..CODES).map(|_| AtomicU64::new(0)).collect(), latency: Histogram::default() }
    }
}

/// Outcomes of upstream calls, as the `outcome` label.
const OUTCOMES: [&str; 5] = ["ok", "client_error", "rate_limited", "server_error", "transport_error"];
/// The kinds of call the server makes (it never downloads; it reads the logs to find lost creates, the
/// catalogue for prices, and the ledger to reconcile).
const KINDS: [CallKind; 5] =
    [CallKind::Create, CallKind::Poll, CallKind::Logs, CallKind::Models, CallKind::Billing];

/// The kinds of reconciliation finding, as the `kind` label.
const FINDINGS: [crate::reconcile::FindingKind; 4] = [
    crate::reconcile::FindingKind::LostCreate,
    crate::reconcile::FindingKind::ChargedOutside,
    crate::reconcile::FindingKind::Uncharged,
    crate::reconcile::FindingKind::ChargedDifferently,
];

fn outcome_index(status: Option<u16>) -> usize {
    match status {
        Some(200..=399) => 0,
        Some(429) => 2,
        Some(400..=499) => 1,
        Some(_) => 3,
        None => 4,
    }
}

fn kind_index(kind: CallKind) -> Option<usize> {
    KINDS.iter().position(|k| *k == kind)
}

/// Everything counted between scrapes.
#[derive(Debug)]
pub struct Metrics {
    routes: Box<[RouteMetrics]>,
    upstream_calls: [[AtomicU64; OUTCOMES.len()]; KINDS.len()],
    upstream_latency: [Histogram; KINDS.len()],
    followed: AtomicI64,
    creates_unknown: AtomicU64,
    storage_reads: AtomicU64,
    event_streams: AtomicI64,
    webhook_attempts: [AtomicU64; WEBHOOK_OUTCOMES.len()],
    webhooks_given_up: AtomicU64,
    webhook_hosts_resting: AtomicI64,
    storage_batches: AtomicU64,
    storage_writes: AtomicU64,
    storage_write_failures: AtomicU64,
    reconcile_findings: [AtomicU64; FINDINGS.len()],
    /// The proxy's spend in the last reconciliation's window, as `f64` bits.
    reconcile_proxy_credits: AtomicU64,
    reconcile_ledger_credits: AtomicI64,
    reconcile_last_success: AtomicI64,
    reconcile_failures: AtomicU64,
}

/// Outcomes of webhook attempts, as the `outcome` label.
const WEBHOOK_OUTCOMES: [&str; 3] =
    [crate::store::delivery::DELIVERED, crate::store::delivery::FAILED, crate::store::delivery::CANCELLED];

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            routes: ROUTES.iter().map(|_| RouteMetrics::default()).collect(),
            upstream_calls: Default::default(),
            upstream_latency: Default::default(),
            followed: AtomicI64::new(0),
            creates_unknown: AtomicU64::new(0),
            storage_reads: AtomicU64::new(0),
            event_streams: AtomicI64::new(0),
            webhook_attempts: Default::default(),
            webhooks_given_up: AtomicU64::new(0),
            webhook_hosts_resting: AtomicI64::new(0),
            storage_batches: AtomicU64::new(0),
            storage_writes: AtomicU64::new(0),
            storage_write_failures: AtomicU64::new(0),
            reconcile_findings: Default::default(),
            reconcile_proxy_credits: AtomicU64::new(0),
            reconcile_ledger_credits: AtomicI64::new(0),
            reconcile_last_success: AtomicI64::new(0),
            reconcile_failures: AtomicU64::new(0),
        }
    }
}

/// A route's slot in the registry, found once per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId(usize);

impl RouteId {
    /// The slot of a request matched to `pattern` (`None` when no route
    /// matched) with `method`.
    pub fn of(method: &axum::http::Method, pattern: Option<&str>) -> RouteId {
        let method = method.as_str();
        let found = pattern.and_then(|p| ROUTES.iter().position(|(m, r)| *m == method && *r == p));
        RouteId(found.unwrap_or(ROUTES.len() - 1))
    }
}

impl Metrics {
    /// Counts a request answered with `status` after `elapsed`.
    pub fn request(&self, route: RouteId, status: u16, elapsed: Duration) {
        let route = &self.routes[route.0];
        if let Some(counter) = usize::from(status).checked_sub(100).and_then(|i| route.codes.get(i)) {
            counter.fetch_add(1, Relaxed);
        }
        route.latency.observe(elapsed);
    }

    /// A job started (+1) or stopped (-1) being followed upstream.
    pub fn followed(&self, delta: i64) {
        self.followed.fetch_add(delta, Relaxed);
    }

    /// A create whose outcome the upstream left unknown.
    pub fn create_unknown(&self) {
        self.creates_unknown.fetch_add(1, Relaxed);
    }

    /// A status read that missed memory and went to storage.
    pub fn storage_read(&self) {
        self.storage_reads.fetch_add(1, Relaxed);
    }

    /// An events stream opened (+1) or closed (-1).
    pub fn event_stream(&self, delta: i64) {
        self.event_streams.fetch_add(delta, Relaxed);
    }

    /// A webhook attempt ended in `outcome` (a [`delivery`](crate::store::delivery) state).
    pub fn webhook_attempt(&self, outcome: &str) {
        if let Some(i) = WEBHOOK_OUTCOMES.iter().position(|o| *o == outcome) {
            self.webhook_attempts[i].fetch_add(1, Relaxed);
        }
    }

    /// A webhook host started (+1) or stopped (-1) resting after failures.
    pub fn webhook_hosts_resting(&self, delta: i64) {
        self.webhook_hosts_resting.fetch_add(delta, Relaxed);
    }

    /// A webhook delivery failed its last attempt.
    pub fn webhook_given_up(&self) {
        self.webhooks_given_up.fetch_add(1, Relaxed);
    }

    /// The writer committed a batch of `writes` job changes.
    pub fn storage_batch(&self, writes: usize) {
        self.storage_batches.fetch_add(1, Relaxed);
        self.storage_writes.fetch_add(writes as u64, Relaxed);
    }

    /// A batch of job changes failed to commit (it is retried).
    pub fn storage_write_failed(&self) {
        self.storage_write_failures.fetch_add(1, Relaxed);
    }

    /// Batches that failed to commit so far (each retried until it did).
    pub fn storage_write_failures(&self) -> u64 {
        self.storage_write_failures.load(Relaxed)
    }

    /// A reconciliation with the ledger ended with `report`.
    pub fn reconciled(&self, report: &crate::reconcile::Reconciliation) {
        for (kind, gauge) in FINDINGS.iter().zip(&self.reconcile_findings) {
            gauge.store(report.count(*kind) as u64, Relaxed);
        }
        self.reconcile_proxy_credits.store(report.total.proxy_credits.to_bits(), Relaxed);
        self.reconcile_ledger_credits.store(report.total.ledger_credits, Relaxed);
        self.reconcile_last_success.store(report.until, Relaxed);
    }

    /// A reconciliation could not be made.
    pub fn reconciliation_failed(&self) {
        self.reconcile_failures.fetch_add(1, Relaxed);
    }

    /// Jobs being followed upstream now.
    pub fn unfinished_jobs(&self) -> i64 {
        self.followed.load(Relaxed)
    }

    /// Writes every series in the Prometheus text format (0.0.4).
    /// `extra` holds the figures read from the rest of the state.
    pub fn render(&self, extra: &Snapshot) -> String {
        let mut out = String::with_capacity(16 * 1024);
        out.push_str("# HELP aimlvid_build_info The server's version.\n# TYPE aimlvid_build_info gauge\n");
        let _ = writeln!(out, "aimlvid_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));

        out.push_str(
            "# HELP aimlvid_http_requests_total Requests answered, by method, route and status code.\n\
             # TYPE aimlvid_http_requests_total counter\n",
        );
        for ((method, route), m) in ROUTES.iter().zip(self.routes.iter()) {
            for (i, counter) in m.codes.iter().enumerate() {
                let n = counter.load(Relaxed);
                if n > 0 {
                    let code = i + 100;
                    let _ = writeln!(
                        out,
                        "aimlvid_http_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{code}\"}} {n}"
                    );
                }
            }
        }
        out.push_str(
            "# HELP aimlvid_http_request_duration_seconds Time from a request's arrival to its answer's \
             headers, by method and route.\n\
             # TYPE aimlvid_http_request_duration_seconds histogram\n",
        );
        for ((method, route), m) in ROUTES.iter().zip(self.routes.iter()) {
            if m.latency.count.load(Relaxed) > 0 {
                let labels = format!("method=\"{method}\",route=\"{route}\"");
                m.latency.render(&mut out, "aimlvid_http_request_duration_seconds", &labels);
            }
        }

        out.push_str(
            "# HELP aimlvid_upstream_calls_total HTTP exchanges with the upstream, retries included, \
             by kind and outcome.\n# TYPE aimlvid_upstream_calls_total counter\n",
        );
        for (kind, outcomes) in KINDS.iter().zip(&self.upstream_calls) {
            for (outcome, counter) in OUTCOMES.iter().zip(outcomes) {
                let _ = writeln!(
                    out,
                    "aimlvid_upstream_calls_total{{kind=\"{}\",outcome=\"{outcome}\"}} {}",
                    kind.as_str(),
                    counter.load(Relaxed)
                );
            }
        }
        out.push_str(
            "# HELP aimlvid_upstream_call_duration_seconds Time of one exchange with the upstream, by kind.\n\
             # TYPE aimlvid_upstream_call_duration_seconds histogram\n",
        );
        for (kind, histogram) in KINDS.iter().zip(&self.upstream_latency) {
            let labels = format!("kind=\"{}\"", kind.as_str());
            histogram.render(&mut out, "aimlvid_upstream_call_duration_seconds", &labels);
        }
        out.push_str(
            "# HELP aimlvid_creates_outcome_unknown_total Creates the upstream may have accepted but \
             whose answer was lost.\n# TYPE aimlvid_creates_outcome_unknown_total counter\n",
        );
        let _ = writeln!(out, "aimlvid_creates_outcome_unknown_total {}", self.creates_unknown.load(Relaxed));

        out.push_str(
            "# HELP aimlvid_storage_write_batches_total Transactions the writer committed.\n\
             # TYPE aimlvid_storage_write_batches_total counter\n",
        );
        let _ = writeln!(out, "aimlvid_storage_write_batches_total {}", self.storage_batches.load(Relaxed));
        out.push_str(
            "# HELP aimlvid_storage_writes_total Job changes stored (creates, status changes, ends).\n\
             # TYPE aimlvid_storage_writes_total counter\n",
        );
        let _ = writeln!(out, "aimlvid_storage_writes_total {}", self.storage_writes.load(Relaxed));
        out.push_str(
            "# HELP aimlvid_storage_write_failures_total Batches that failed to commit; each is retried \
             until it commits, never dropped.\n# TYPE aimlvid_storage_write_failures_total counter\n",
        );
        let _ = writeln!(
            out,
            "aimlvid_storage_write_failures_total {}",
            self.storage_write_failures.load(Relaxed)
        );
        out.push_str(
            "# HELP aimlvid_unfinished_jobs Jobs not yet finished upstream, each followed by the scheduler.\n\
             # TYPE aimlvid_unfinished_jobs gauge\n",
        );
        let _ = writeln!(out, "aimlvid_unfinished_jobs {}", self.followed.load(Relaxed));
        out.push_str(
            "# HELP aimlvid_key_unfinished_jobs Jobs created and not finished, by key (pending creates \
             included), as counted for max_unfinished.\n# TYPE aimlvid_key_unfinished_jobs gauge\n",
        );
        for key in &extra.keys {
            let _ = writeln!(
                out,
                "aimlvid_key_unfinished_jobs{{key=\"{}\"}} {}",
                escape(&key.name),
                key.unfinished
            );
        }
        out.push_str(
            "# HELP aimlvid_credits_charged_total Credits charged to each key, from the upstream's \
             credits_used, since the key was issued.\n# TYPE aimlvid_credits_charged_total counter\n",
        );
        for key in &extra.keys {
            let _ = writeln!(
                out,
                "aimlvid_credits_charged_total{{key=\"{}\"}} {}",
                escape(&key.name),
                key.credits
            );
        }

        out.push_str(
            "# HELP aimlvid_jobs_in_memory Jobs held in memory to answer status reads.\n\
             # TYPE aimlvid_jobs_in_memory gauge\n",
        );
        let _ = writeln!(out, "aimlvid_jobs_in_memory {}", extra.jobs_in_memory);
        out.push_str(
            "# HELP aimlvid_jobs_evicted_total Finished jobs evicted from memory, least recently used first.\n\
             # TYPE aimlvid_jobs_evicted_total counter\n",
        );
        let _ = writeln!(out, "aimlvid_jobs_evicted_total {}", extra.jobs_evicted);
        out.push_str(
            "# HELP aimlvid_job_storage_reads_total Status reads of jobs not in memory, answered from \
             storage.\n# TYPE aimlvid_job_storage_reads_total counter\n",
        );
        let _ = writeln!(out, "aimlvid_job_storage_reads_total {}", self.storage_reads.load(Relaxed));
        out.push_str(
            "# HELP aimlvid_event_streams Open event streams.\n# TYPE aimlvid_event_streams gauge\n",
        );
        let _ = writeln!(out, "aimlvid_event_streams {}", self.event_streams.load(Relaxed));
        out.push_str(
            "# HELP aimlvid_webhook_attempts_total Webhook attempts, by outcome.\n\
             # TYPE aimlvid_webhook_attempts_total counter\n",
        );
        for (outcome, counter) in WEBHOOK_OUTCOMES.iter().zip(&self.webhook_attempts) {
            let _ = writeln!(
                out,
                "aimlvid_webhook_attempts_total{{outcome=\"{outcome}\"}} {}",
                counter.load(Relaxed)
            );
        }
        out.push_str(
            "# HELP aimlvid_webhooks_given_up_total Webhook deliveries whose every attempt failed.\n\
             # TYPE aimlvid_webhooks_given_up_total counter\n",
        );
        let _ = writeln!(out, "aimlvid_webhooks_given_up_total {}", self.webhooks_given_up.load(Relaxed));
        out.push_str(
            "# HELP aimlvid_webhook_hosts_resting Webhook hosts resting after failing in a row.\n\
             # TYPE aimlvid_webhook_hosts_resting gauge\n",
        );
        let _ = writeln!(out, "aimlvid_webhook_hosts_resting {}", self.webhook_hosts_resting.load(Relaxed));
        self.render_reconciliation(&mut out);
        out
    }

    fn render_reconciliation(&self, out: &mut String) {
        out.push_str(
            "# HELP aimlvid_reconcile_failures_total Reconciliations with the ledger that could not be made.\n\
             # TYPE aimlvid_reconcile_failures_total counter\n",
        );
        let _ = writeln!(out, "aimlvid_reconcile_failures_total {}", self.reconcile_failures.load(Relaxed));
        let last = self.reconcile_last_success.load(Relaxed);
        if last == 0 {
            return;
        }
        out.push_str(
            "# HELP aimlvid_reconcile_last_success_timestamp_seconds When the last reconciliation with the \
             upstream's ledger was made.\n# TYPE aimlvid_reconcile_last_success_timestamp_seconds gauge\n",
        );
        let _ = writeln!(out, "aimlvid_reconcile_last_success_timestamp_seconds {last}");
        out.push_str(
            "# HELP aimlvid_reconcile_findings Generations whose charge differs between this server and the \
             ledger, by kind, in the last reconciliation.\n# TYPE aimlvid_reconcile_findings gauge\n",
        );
        for (kind, gauge) in FINDINGS.iter().zip(&self.reconcile_findings) {
            let _ = writeln!(
                out,
                "aimlvid_reconcile_findings{{kind=\"{}\"}} {}",
                kind.as_str(),
                gauge.load(Relaxed)
            );
        }
        out.push_str(
            "# HELP aimlvid_reconcile_spend_credits Credits spent in the last reconciliation's window, as \
             this server and as the ledger count them.\n# TYPE aimlvid_reconcile_spend_credits gauge\n",
        );
        let proxy = f64::from_bits(self.reconcile_proxy_credits.load(Relaxed));
        let _ = writeln!(out, "aimlvid_reconcile_spend_credits{{source=\"proxy\"}} {proxy}");
        let ledger = self.reconcile_ledger_credits.load(Relaxed);
        let _ = writeln!(out, "aimlvid_reconcile_spend_credits{{source=\"ledger\"}} {ledger}");
    }
}

impl aimlvid::Observer for Metrics {
    fn exchange(&self, exchange: &Exchange) {
        let Some(kind) = kind_index(exchange.kind) else { return };
        self.upstream_calls[kind][outcome_index(exchange.status)].fetch_add(1, Relaxed);
        self.upstream_latency[kind].observe(exchange.elapsed);
    }
}

/// Figures read from the rest of the state when metrics are scraped.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every usable key.
    pub keys: Vec<KeyFigures>,
    /// Jobs in the in-memory view.
    pub jobs_in_memory: usize,
    /// Finished jobs evicted from it so far.
    pub jobs_evicted: u64,
}

/// One key's figures.
#[derive(Debug)]
pub struct KeyFigures {
    /// The key's name.
    pub name: String,
    /// Jobs created and not finished.
    pub unfinished: u32,
    /// Credits charged so far.
    pub credits: f64,
}

/// A label value, escaped as the text format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn routes_resolve_to_their_own_slot_and_the_rest_to_other() {
        let get = RouteId::of(&Method::GET, Some("/v2/video/generations"));
        let post = RouteId::of(&Method::POST, Some("/v2/video/generations"));
        assert_ne!(get, post);
        let other = RouteId::of(&Method::GET, None);
        assert_eq!(other, RouteId::of(&Method::PUT, Some("/v2/video/generations")));
        assert_eq!(ROUTES[other.0], ("other", "other"));
    }

    #[test]
    fn histograms_are_cumulative_with_exact_bounds() {
        let metrics = Metrics::default();
        let route = RouteId::of(&Method::GET, Some("/healthz"));
        metrics.request(route, 200, Duration::from_micros(20));
        metrics.request(route, 200, Duration::from_micros(30));
        metrics.request(route, 503, Duration::from_secs(500));
        let text = metrics.render(&Snapshot::default());
        let labels = "method=\"GET\",route=\"/healthz\"";
        for line in [
            format!("aimlvid_http_requests_total{{{labels},code=\"200\"}} 2"),
            format!("aimlvid_http_requests_total{{{labels},code=\"503\"}} 1"),
            format!("aimlvid_http_request_duration_seconds_bucket{{{labels},le=\"0.000025\"}} 1"),
            format!("aimlvid_http_request_duration_seconds_bucket{{{labels},le=\"0.00005\"}} 2"),
            format!("aimlvid_http_request_duration_seconds_bucket{{{labels},le=\"120\"}} 2"),
            format!("aimlvid_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 3"),
            format!("aimlvid_http_request_duration_seconds_sum{{{labels}}} 500.00005"),
            format!("aimlvid_http_request_duration_seconds_count{{{labels}}} 3"),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(seconds(1_500_000_000), "1.5");
        assert_eq!(seconds(25_000), "0.000025");
    }
}
