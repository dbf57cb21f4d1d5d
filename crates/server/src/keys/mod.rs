//! Team keys: generating, hashing, and the in-memory table that
//! authenticates every request without touching the database.

pub mod limits;

use crate::calendar::unix_now;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use tokio::time::Instant;

use crate::store::{KeyId, KeyRecord};

/// What every team key starts with, so a leaked one is easy to recognise.
pub const KEY_PREFIX: &str = "amv_";

/// What every webhook signing secret starts with.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";

/// A new random key: [`KEY_PREFIX`] and 256 bits from the OS, in hex.
pub fn generate_key() -> std::io::Result<String> {
    generate_secret(KEY_PREFIX)
}

/// A new random secret: `prefix` and 256 bits from the OS, in hex.
pub fn generate_secret(prefix: &str) -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut key = String::with_capacity(prefix.len() + 64);
    key.push_str(prefix);
    for b in bytes {
        key.push(char::from(HEX[usize::from(b >> 4)]));
        key.push(char::from(HEX[usize::from(b & 15)]));
    }
    Ok(key)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// SHA-256 of a key: the only form in which keys are stored or compared.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The start of a key, enough to tell keys apart in a listing.
pub fn key_prefix(key: &str) -> String {
    key.chars().take(KEY_PREFIX.len() + 6).collect()
}

/// A key known to the server, with its live counters.
#[derive(Debug)]
pub struct KeyEntry {
    /// The key's id, which never changes (kept apart so reading it takes no lock).
    id: KeyId,
    record: RwLock<Arc<KeyRecord>>,
    counters: Mutex<Counters>,
    /// Bumped when the key is revoked, disabled or rotated: whatever was
    /// opened with it before (event streams) ends.
    epoch: tokio::sync::watch::Sender<u64>,
    /// Event streams open with this key.
    streams: std::sync::atomic::AtomicU32,
    /// Its creates on their way upstream: at most [`CREATES_PER_KEY`] at
    /// once, so that one key cannot take every place the server has.
    creates: tokio::sync::Semaphore,
}

/// A key's creates on their way upstream at once.
pub const CREATES_PER_KEY: usize = 8;

#[derive(Debug)]
struct Counters {
    /// Token bucket for requests per minute.
    tokens: f64,
    refilled: Instant,
    /// Jobs created and not finished (pending creates included).
    unfinished: u32,
    credits_used: f64,
    /// Credits reserved by jobs in flight, at their expected cost.
    reserved: f64,
    /// For a key whose budget renews: the current period's start (unix
    /// seconds) and its spend, as storage last said.
    period: Option<(i64, f64)>,
}

impl Counters {
    /// Takes a stored period figure: a later period replaces, the same
    /// period can only grow (storage is never behind a charge we saw).
    fn merge_period(&mut self, stored: Option<(i64, f64)>) {
        match (self.period, stored) {
            (_, None) => {}
            (Some((ours, credits)), Some((theirs, stored))) if ours == theirs => {
                self.period = Some((ours, credits.max(stored)));
            }
            (Some((ours, _)), Some((theirs, _))) if ours > theirs => {}
            (_, stored) => self.period = stored,
        }
    }
}

/// Why a request was refused by a key's limits.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Over the requests-per-minute limit; retry after this long.
    Rate(Duration),
    /// Too many unfinished jobs.
    Unfinished(u32),
    /// The credit budget would be exceeded.
    Budget {
        /// Credits left of the budget, reservations of jobs in flight taken off.
        remaining: f64,
        /// What the create was expected to cost.
        expected: f64,
    },
}

impl KeyEntry {
    fn new(record: KeyRecord, unfinished: u32, now: Instant) -> Self {
        let counters = Counters {
            tokens: record.limits.rpm.map_or(0.0, f64::from),
            refilled: now,
            unfinished,
            credits_used: record.credits_used,
            reserved: 0.0,
            period: record.period_start.map(|start| (start, record.period_credits)),
        };
        KeyEntry {
            id: record.id,
            record: RwLock::new(Arc::new(record)),
            counters: Mutex::new(counters),
            epoch: tokio::sync::watch::Sender::new(0),
            streams: std::sync::atomic::AtomicU32::new(0),
            creates: tokio::sync::Semaphore::new(CREATES_PER_KEY),
        }
    }

    /// This key's turn to send a create upstream (first come, first served).
    pub async fn create_turn(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.creates.acquire().await.expect("the semaphore is never closed")
    }

    /// Changes when the key is revoked, disabled or rotated.
    pub fn epoch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    fn end_epoch(&self) {
        self.epoch.send_modify(|e| *e += 1);
    }

    /// Counts an event stream opened with this key, unless `max` are open;
    /// give it back with [`KeyEntry::stream_closed`].
    pub fn stream_opened(&self, max: u32) -> bool {
        use std::sync::atomic::Ordering;
        self.streams.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// An event stream of this key closed.
    pub fn stream_closed(&self) {
        self.streams.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// The key's settings as last loaded.
    pub fn record(&self) -> Arc<KeyRecord> {
        self.record.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one request from the key's per-minute allowance; `record` is
    /// the key's settings as just read with [`KeyEntry::record`].
    pub fn take_request(&self, record: &KeyRecord, now: Instant) -> Result<(), Refusal> {
        let Some(rpm) = record.limits.rpm else { return Ok(()) };
        let capacity = f64::from(rpm);
        let per_sec = capacity / 60.0;
        let mut c = self.counters();
        let elapsed = now.saturating_duration_since(c.refilled).as_secs_f64();
        c.tokens = (c.tokens + elapsed * per_sec).min(capacity);
        c.refilled = now;
        if c.tokens >= 1.0 {
            c.tokens -= 1.0;
            return Ok(());
        }
        if per_sec <= 0.0 {
            return Err(Refusal::Rate(Duration::from_secs(60)));
        }
        Err(Refusal::Rate(Duration::from_secs_f64((1.0 - c.tokens) / per_sec)))
    }

    /// Reserves a slot for a new job expected to cost `expected` credits,
    /// checking the unfinished-jobs limit and that the budget covers what
    /// is spent, what jobs in flight reserved and this one; release it
    /// with [`KeyEntry::job_ended`].
    pub fn reserve_job(&self, expected: f64) -> Result<(), Refusal> {
        self.reserve_job_at(expected, unix_now())
    }

    /// [`KeyEntry::reserve_job`] at `now` (unix seconds): a budget that
    /// renews counts only the current period's spend.
    pub fn reserve_job_at(&self, expected: f64, now: i64) -> Result<(), Refusal> {
        let record = self.record();
        let mut c = self.counters();
        if let Some(budget) = record.limits.credit_budget {
            let spent = match record.limits.budget_period {
                None => c.credits_used,
                Some(period) => match c.period {
                    Some((start, credits)) if start == period.start_of(now) => credits,
                    // Nothing charged yet in this period.
                    _ => 0.0,
                },
            };
            let remaining = budget - spent - c.reserved;
            if expected > remaining || remaining <= 0.0 {
                return Err(Refusal::Budget { remaining: remaining.max(0.0), expected });
            }
        }
        if let Some(max) = record.limits.max_unfinished
            && c.unfinished >= max
        {
            return Err(Refusal::Unfinished(max));
        }
        c.unfinished += 1;
        c.reserved += expected;
        Ok(())
    }

    /// Counts a job again that had ended for this key, reserving `expected`
    /// for it: an unknown create found upstream after its slot was released.
    /// Never refused: the job exists and is paid for.
    pub fn job_resumed(&self, expected: f64) {
        let mut c = self.counters();
        c.unfinished += 1;
        c.reserved += expected;
    }

    /// A job of this key was never created (or ended without a charge):
    /// the `reserved` credits held for it are given back.
    pub fn job_ended(&self, reserved: f64) {
        let mut c = self.counters();
        c.unfinished = c.unfinished.saturating_sub(1);
        c.reserved = (c.reserved - reserved).max(0.0);
    }

    /// A job of this key was charged: storage says the key has now used
    /// `key_total` credits. The stored total is taken, never added to, so
    /// that a reload of the key from storage (which holds the charge
    /// already) cannot count it twice.
    pub fn job_charged(&self, key_total: f64, key_period: Option<(i64, f64)>, reserved: f64) {
        let mut c = self.counters();
        c.unfinished = c.unfinished.saturating_sub(1);
        c.credits_used = c.credits_used.max(key_total);
        c.merge_period(key_period);
        c.reserved = (c.reserved - reserved).max(0.0);
    }

    /// Credits reserved by this key's jobs in flight.
    pub fn credits_reserved(&self) -> f64 {
        self.counters().reserved
    }

    /// Credits charged so far.
    pub fn credits_used(&self) -> f64 {
        self.counters().credits_used
    }

    /// Jobs created and not finished.
    pub fn unfinished(&self) -> u32 {
        self.counters().unfinished
    }
}

/// Every usable key, by the SHA-256 of its secret. Revoked keys are absent.
///
/// Sharded maps, so authenticating takes no global lock.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_hash: DashMap<[u8; 32], Arc<KeyEntry>>,
    by_id: DashMap<KeyId, Arc<KeyEntry>>,
    /// One sync at a time, so that two reloads cannot each make an entry
    /// for a new key and leave the two maps holding different ones.
    syncing: Mutex<()>,
}

impl KeyTable {
    /// Finds the key a request presented, with its settings as they are
    /// now. The table is searched by the SHA-256 of what was presented (so
    /// timing depends on a hash, not on how much of a guess was right);
    /// the entry's current hash is then compared again, so a secret rotated
    /// away while a lookup raced the reload cannot authenticate.
    pub fn authenticate(&self, presented: &str) -> Option<(Arc<KeyEntry>, Arc<KeyRecord>)> {
        let hash = hash_key(presented);
        let entry = self.by_hash.get(&hash)?.clone();
        let record = entry.record();
        let matches: bool = record.hash.ct_eq(&hash).into();
        matches.then_some((entry, record))
    }

    /// A key by id, revoked keys excluded.
    pub fn get(&self, id: KeyId) -> Option<Arc<KeyEntry>> {
        self.by_id.get(&id).map(|e| e.clone())
    }

    /// Brings the table in line with the stored keys, keeping the live
    /// counters of keys it already has. `unfinished` gives a new key's count
    /// of unfinished jobs and the credits they reserve.
    pub fn sync(&self, records: Vec<KeyRecord>, unfinished: impl Fn(KeyId) -> (u32, f64)) {
        let _one_at_a_time = self.syncing.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut live = std::collections::HashSet::new();
        for record in records {
            if record.revoked {
                continue;
            }
            live.insert(record.id);
            match self.by_id.get(&record.id).map(|e| e.clone()) {
                Some(entry) => {
                    // Credits are charged in storage first, so its figure is never behind ours.
                    let stored_credits = record.credits_used;
                    let stored_period = record.period_start.map(|start| (start, record.period_credits));
                    let old = entry.record();
                    if old.hash != record.hash {
                        // Rotated: the new secret finds the entry, the old one nothing.
                        self.by_hash.remove(&old.hash);
                        self.by_hash.insert(record.hash, entry.clone());
                    }
                    let ended = old.hash != record.hash || (old.enabled && !record.enabled);
                    *entry.record.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(record);
                    {
                        let mut c = entry.counters();
                        c.credits_used = c.credits_used.max(stored_credits);
                        c.merge_period(stored_period);
                    }
                    if ended {
                        entry.end_epoch();
                    }
                }
                None => {
                    let (unfinished, reserved) = unfinished(record.id);
                    let (id, hash) = (record.id, record.hash);
                    let entry = Arc::new(KeyEntry::new(record, unfinished, now));
                    entry.counters().reserved = reserved;
                    self.by_hash.insert(hash, entry.clone());
                    self.by_id.insert(id, entry);
                }
            }
        }
        self.by_id.retain(|id, entry| {
            let keep = live.contains(id);
            if !keep {
                entry.end_epoch();
            }
            keep
        });
        self.by_hash.retain(|hash, entry| live.contains(&entry.id()) && entry.record().hash == *hash);
    }

    /// Every usable key.
    pub fn entries(&self) -> Vec<Arc<KeyEntry>> {
        self.by_id.iter().map(|e| e.value().clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::KeyLimits;

    fn record(id: KeyId, key: &str, limits: KeyLimits) -> KeyRecord {
        KeyRecord {
            id,
            name: format!("k{id}"),
            hash: hash_key(key),
            prefix: key_prefix(key),
            limits,
            credits_used: 0.0,
            period_credits: 0.0,
            period_start: None,
            enabled: true,
            revoked: false,
            created_at: 0,
            webhook_url: None,
            webhook_format: crate::store::WebhookFormat::Aimlvid,
        }
    }

    #[test]
    fn keys_are_random_prefixed_and_hashed() {
        let (a, b) = (generate_key().unwrap(), generate_key().unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX) && a.len() == KEY_PREFIX.len() + 64, "{a}");
        assert_eq!(hash_key(&a), hash_key(&a));
        assert_ne!(hash_key(&a), hash_key(&b));
        assert_eq!(key_prefix(&a).len(), 10);
    }

    #[test]
    fn the_table_authenticates_by_hash_and_drops_revoked_keys() {
        let table = KeyTable::default();
        table.sync(vec![record(1, "amv_one", KeyLimits::default())], |_| (0, 0.0));
        assert_eq!(table.authenticate("amv_one").map(|(e, _)| e.id()), Some(1));
        assert!(table.authenticate("amv_two").is_none());
        let mut revoked = record(1, "amv_one", KeyLimits::default());
        revoked.revoked = true;
        table.sync(vec![revoked], |_| (0, 0.0));
        assert!(table.authenticate("amv_one").is_none());
        assert!(table.get(1).is_none());
    }

    #[test]
    fn the_rate_limit_is_a_token_bucket() {
        let limits = KeyLimits { rpm: Some(2), ..KeyLimits::default() };
        let entry = KeyEntry::new(record(1, "k", limits), 0, Instant::now());
        let record = entry.record();
        let start = Instant::now();
        assert_eq!(entry.take_request(&record, start), Ok(()));
        assert_eq!(entry.take_request(&record, start), Ok(()));
        let wait = |r: Result<(), Refusal>| match r {
            Err(Refusal::Rate(d)) => d.as_secs_f64(),
            other => panic!("not a rate refusal: {other:?}"),
        };
        assert!((wait(entry.take_request(&record, start)) - 30.0).abs() < 1e-6);
        // Half a token back after 15 s: 15 s more to go.
        let later = start + Duration::from_secs(15);
        assert!((wait(entry.take_request(&record, later)) - 15.0).abs() < 1e-6);
        assert_eq!(entry.take_request(&record, start + Duration::from_secs(30)), Ok(()));
    }

    #[test]
    fn unfinished_jobs_and_the_budget_are_limited() {
        let limits = KeyLimits { max_unfinished: Some(1), credit_budget: Some(10.0), ..KeyLimits::default() };
        let entry = KeyEntry::new(record(1, "k", limits), 0, Instant::now());
        assert_eq!(entry.reserve_job(3.0), Ok(()));
        assert_eq!(entry.reserve_job(3.0), Err(Refusal::Unfinished(1)));
        entry.job_charged(4.0, None, 3.0);
        assert_eq!(entry.credits_reserved(), 0.0);
        assert_eq!(entry.reserve_job(3.0), Ok(()));
        entry.job_charged(10.0, None, 3.0);
        assert_eq!(entry.credits_used(), 10.0);
        assert_eq!(entry.reserve_job(0.0), Err(Refusal::Budget { remaining: 0.0, expected: 0.0 }));
        assert_eq!(entry.unfinished(), 0);
    }

    #[test]
    fn a_reload_between_a_charge_and_its_notice_does_not_count_it_twice() {
        let table = KeyTable::default();
        let limits = KeyLimits { credit_budget: Some(100.0), ..KeyLimits::default() };
        table.sync(vec![record(1, "k", limits.clone())], |_| (1, 30.0));
        let entry = table.get(1).unwrap();
        // Storage charged the job (the key now holds 20), and a reload
        // reads that before the job's end reaches the entry.
        let stored = KeyRecord { credits_used: 20.0, ..record(1, "k", limits) };
        table.sync(vec![stored], |_| (0, 0.0));
        assert_eq!(entry.credits_used(), 20.0);
        entry.job_charged(20.0, None, 30.0);
        assert_eq!(entry.credits_used(), 20.0, "counted once");
        assert_eq!(entry.credits_reserved(), 0.0);
        assert_eq!(entry.unfinished(), 0);
    }

    #[test]
    fn a_budget_that_renews_counts_only_its_period() {
        use crate::store::BudgetPeriod;
        let limits = KeyLimits {
            credit_budget: Some(100.0),
            budget_period: Some(BudgetPeriod::Day),
            ..KeyLimits::default()
        };
        let entry = KeyEntry::new(record(1, "k", limits), 0, Instant::now());
        let monday_noon = 1_795_996_800 + 12 * 3600; // 2026-11-30T12:00:00Z
        let day = BudgetPeriod::Day.start_of(monday_noon);
        assert!(entry.reserve_job_at(80.0, monday_noon).is_ok());
        entry.job_charged(80.0, Some((day, 80.0)), 80.0);
        assert_eq!(
            entry.reserve_job_at(30.0, monday_noon),
            Err(Refusal::Budget { remaining: 20.0, expected: 30.0 }),
            "today's budget is mostly spent"
        );
        // Tomorrow the budget is whole again; the lifetime figure still counts.
        assert!(entry.reserve_job_at(90.0, monday_noon + 86_400).is_ok());
        assert_eq!(entry.credits_used(), 80.0);
        // A stale period figure from a reload does not bring yesterday back.
        entry.job_charged(170.0, Some((day + 86_400, 90.0)), 90.0);
        entry.counters().merge_period(Some((day, 80.0)));
        assert_eq!(entry.counters().period, Some((day + 86_400, 90.0)));
    }

    #[test]
    fn periods_start_at_midnight_utc_on_monday_and_the_first() {
        use crate::store::BudgetPeriod;
        // 2026-11-29T15:30:00Z, a Sunday.
        let now = 1_795_996_800 - 86_400 + 15 * 3600 + 1800;
        assert_eq!(BudgetPeriod::Day.start_of(now), 1_795_996_800 - 86_400); // 2026-11-29T00:00Z
        assert_eq!(BudgetPeriod::Week.start_of(now), 1_795_996_800 - 7 * 86_400); // Mon 2026-11-23
        assert_eq!(BudgetPeriod::Month.start_of(now), 1_793_491_200); // 2026-11-01T00:00Z
        assert_eq!(BudgetPeriod::Month.start_of(0), 0);
        assert_eq!(BudgetPeriod::Week.start_of(0), -3 * 86_400, "1970-01-01 was a Thursday");
        assert_eq!(BudgetPeriod::Month.start_of(951_868_800), 951_868_800, "2000-03-01, after a leap day");
    }

    #[test]
    fn reservations_keep_parallel_creates_within_the_budget() {
        let limits = KeyLimits { credit_budget: Some(100.0), ..KeyLimits::default() };
        let entry = KeyEntry::new(record(1, "k", limits), 0, Instant::now());
        let accepted = (0..50).filter(|_| entry.reserve_job(30.0).is_ok()).count();
        assert_eq!(accepted, 3, "3 x 30 fits in 100, a fourth would not");
        assert_eq!(entry.reserve_job(30.0), Err(Refusal::Budget { remaining: 10.0, expected: 30.0 }));
        // Settled at the real price, 20 each: room for two more at 30.
        for total in [20.0, 40.0, 60.0] {
            entry.job_charged(total, None, 30.0);
        }
        assert_eq!(entry.credits_used(), 60.0);
        assert!(entry.reserve_job(30.0).is_ok());
        assert!(entry.reserve_job(30.0).is_err(), "60 spent + 30 reserved + 30 > 100");
        // A refused create gives its reservation back.
        entry.job_ended(30.0);
        assert!(entry.reserve_job(30.0).is_ok());
    }
}
