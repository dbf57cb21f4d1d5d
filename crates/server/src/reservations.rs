//! One owner of every create's reservation: the place it takes among its
//! key's unfinished jobs and the credits it holds against the key's budget.
//! How each state of a create counts is decided here, once:
//!
//! - **pending** (recorded, on its way upstream): counts. A `Reservation`
//!   guard gives it back if the create ends without a job, whatever way it ends.
//! - **running** (the upstream made a job): counts, held against its
//!   generation until its end settles it (`Reservation::running`).
//! - **unknown** (its answer was lost; it may be billed): counts, across
//!   restarts, until the upstream's logs resolve it (`Reservations::adopt`)
//!   or the lookup window passes (`Reservations::give_back_unknown`, once).
//! - **finished**: the hold gives way to the real charge, which teaches the
//!   model's expected cost (`Reservations::settle`).
//! - **refused**: given back at once (the guard, or
//!   `Reservations::give_back_unknown` for an unknown one refused later).
//!
//! On a shared (PostgreSQL) store, the database keeps each key's places and
//! holds for every replica: a create is refused there when over the limit,
//! and the write that ends, refuses or releases a job gives its hold back
//! in the same transaction. This server's counters then count the jobs it
//! follows, and an unknown create is the database's alone. On a SQLite
//! store the counters here are the only ones, so they keep unknown creates
//! too, and are rebuilt from storage at start (`Reservations::resume`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::budget::{CostEstimates, UnknownHold};
use crate::keys::{KeyEntry, KeyTable, Refusal};
use crate::store::{Charged, JobRecord, KeyId};

/// The reservations of every create in flight. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reservations {
    costs: Arc<CostEstimates>,
    keys: Arc<KeyTable>,
    /// Whether the store keeps places and holds itself (see the module's notes).
    shared: bool,
}

impl Reservations {
    /// The reservations kept in `costs` and `keys`, beside a store that is
    /// `shared` by replicas or not.
    pub fn new(costs: Arc<CostEstimates>, keys: Arc<KeyTable>, shared: bool) -> Reservations {
        Reservations { costs, keys, shared }
    }

    /// A new create of `model` with `params` takes a place of `key` and its
    /// expected cost, or is refused by the key's limits.
    pub(crate) fn reserve(
        &self,
        key: Arc<KeyEntry>,
        model: &str,
        params: &serde_json::Value,
    ) -> Result<Reservation, Refusal> {
        let credits = self.costs.estimate(model, params);
        key.reserve_job(credits)?;
        Ok(Reservation { owner: self.clone(), key, model: model.to_owned(), credits, kept: false })
    }

    /// At start: the places and holds of the jobs found unfinished (each
    /// held against its generation) and, on a store of one server, of the
    /// creates still unknown. Returns each key's `(places, credits)`, for
    /// the key table.
    pub(crate) fn resume(
        &self,
        unfinished: &[JobRecord],
        unknown: &[JobRecord],
    ) -> HashMap<KeyId, (u32, f64)> {
        let mut per_key: HashMap<KeyId, (u32, f64)> = HashMap::new();
        for job in unfinished {
            let expected = self.costs.estimate(&job.model, &serde_json::Value::Null);
            if let Some(id) = &job.generation_id {
                self.costs.hold(id, &job.model, expected);
            }
            let entry = per_key.entry(job.key_id).or_default();
            entry.0 += 1;
            entry.1 += expected;
        }
        if !self.shared {
            for job in unknown.iter().filter(|job| !job.hold_released) {
                let expected = self.costs.estimate(&job.model, &serde_json::Value::Null);
                let hold = UnknownHold { key_id: job.key_id, model: job.model.clone(), credits: expected };
                self.costs.hold_unknown(&job.local_id, hold);
                let entry = per_key.entry(job.key_id).or_default();
                entry.0 += 1;
                entry.1 += expected;
            }
        }
        per_key
    }

    /// A running job ended and its key was charged: the hold gives way to
    /// the charge, which teaches the model's expected cost.
    pub(crate) fn settle(&self, generation_id: &str, charged: &Charged, credits: f64) {
        let hold = self.costs.release(generation_id);
        if let Some(hold) = &hold {
            self.costs.learn(&hold.model, credits);
        }
        if let Some(entry) = self.keys.get(charged.key_id) {
            entry.job_charged(charged.key_credits_used, charged.key_period, hold.map_or(0.0, |h| h.credits));
        }
    }

    /// An unknown create was refused upstream, or the lookup window passed:
    /// what it kept here goes back, once (a second call finds nothing).
    pub(crate) fn give_back_unknown(&self, local_id: &str) {
        if let Some(kept) = self.costs.take_unknown(local_id)
            && let Some(key) = self.keys.get(kept.key_id)
        {
            key.job_ended(kept.credits);
        }
    }

    /// An unknown create was found upstream as `generation_id`: what it kept
    /// becomes the running job's hold. If it kept nothing here (the window
    /// passed, the server started since, or a shared store holds it), it
    /// takes its place again now.
    pub(crate) fn adopt(&self, job: &JobRecord, generation_id: &str) {
        let credits = match self.costs.take_unknown(&job.local_id) {
            Some(kept) => kept.credits,
            None => {
                let expected = self.costs.estimate(&job.model, &serde_json::Value::Null);
                if let Some(key) = self.keys.get(job.key_id) {
                    key.job_resumed(expected);
                }
                expected
            }
        };
        self.costs.hold(generation_id, &job.model, credits);
    }
}

/// A pending create's place and credits: given back when dropped, unless
/// the create became a running job or an unknown one. A guard, so that no
/// early return, refusal or panic can leak it.
#[derive(Debug)]
pub(crate) struct Reservation {
    owner: Reservations,
    key: Arc<KeyEntry>,
    model: String,
    credits: f64,
    kept: bool,
}

impl Reservation {
    /// The credits reserved.
    pub(crate) fn credits(&self) -> f64 {
        self.credits
    }

    /// The job runs upstream now as `generation_id`; its end settles the
    /// reservation ([`Reservations::settle`]).
    pub(crate) fn running(mut self, generation_id: &str) {
        self.owner.costs.hold(generation_id, &self.model, self.credits);
        self.kept = true;
    }

    /// The create's outcome is unknown: it may be billed, so it keeps
    /// counting against its key until the upstream's logs resolve it. A
    /// shared store holds its place and reservation itself (in the row it
    /// recorded), so this server's own count lets it go.
    pub(crate) fn unknown(mut self, local_id: &str) {
        if self.owner.shared {
            return;
        }
        let hold = UnknownHold { key_id: self.key.id(), model: self.model.clone(), credits: self.credits };
        self.owner.costs.hold_unknown(local_id, hold);
        self.kept = true;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.kept {
            self.key.job_ended(self.credits);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::hash_key;
    use crate::store::{KeyLimits, KeyRecord};

    /// A table with key 1, allowed two unfinished jobs, and reservations of
    /// 10 credits a create over it.
    fn table(shared: bool) -> (Reservations, Arc<KeyEntry>) {
        let keys = Arc::new(KeyTable::default());
        let record = KeyRecord {
            id: 1,
            name: "k".into(),
            hash: hash_key("amv_k"),
            prefix: "amv_k".into(),
            limits: KeyLimits { max_unfinished: Some(2), ..KeyLimits::default() },
            credits_used: 0.0,
            period_credits: 0.0,
            period_start: None,
            enabled: true,
            revoked: false,
            created_at: 0,
            webhook_url: None,
            webhook_format: crate::store::WebhookFormat::Aimlvid,
        };
        keys.sync(vec![record], |_| (0, 0.0));
        let costs = Arc::new(CostEstimates::new(10.0, HashMap::new()));
        let key = keys.get(1).unwrap();
        (Reservations::new(costs, keys, shared), key)
    }

    fn unknown_job(local: &str) -> JobRecord {
        JobRecord {
            local_id: local.into(),
            key_id: 1,
            generation_id: None,
            status: "unknown".into(),
            model: "m".into(),
            body: None,
            idempotency_key: None,
            request_hash: vec![],
            credits_charged: None,
            created_at: 0,
            receipt: None,
            note: None,
            hold_released: false,
            params: None,
            inline_media: None,
            remixed_from: None,
            hidden_at: None,
        }
    }

    #[test]
    fn a_pending_create_gives_its_place_back_unless_it_ran_or_may_be_billed() {
        let (reservations, key) = table(false);
        let none = serde_json::Value::Null;
        drop(reservations.reserve(key.clone(), "m", &none).unwrap());
        assert_eq!(key.unfinished(), 0, "refused or failed: given back");
        reservations.reserve(key.clone(), "m", &none).unwrap().running("g1");
        reservations.reserve(key.clone(), "m", &none).unwrap().unknown("lost");
        assert_eq!(key.unfinished(), 2);
        assert!(reservations.reserve(key.clone(), "m", &none).is_err(), "both places taken");
        let charged = Charged { key_id: 1, webhook_queued: false, key_credits_used: 12.0, key_period: None };
        reservations.settle("g1", &charged, 12.0);
        assert_eq!(key.unfinished(), 1, "the running job ended");
    }

    #[test]
    fn an_unknown_create_counts_until_resolved_then_is_given_back_once() {
        let (reservations, key) = table(false);
        let none = serde_json::Value::Null;
        reservations.reserve(key.clone(), "m", &none).unwrap().unknown("lost");
        reservations.reserve(key.clone(), "m", &none).unwrap().unknown("other");
        assert_eq!(key.unfinished(), 2);
        reservations.give_back_unknown("lost");
        reservations.give_back_unknown("lost");
        assert_eq!(key.unfinished(), 1, "given back once");
        // Found after all: it takes its place again; one still held moves to its job.
        reservations.adopt(&unknown_job("lost"), "g-lost");
        reservations.adopt(&unknown_job("other"), "g-other");
        assert_eq!(key.unfinished(), 2);
        let charged = Charged { key_id: 1, webhook_queued: false, key_credits_used: 10.0, key_period: None };
        reservations.settle("g-lost", &charged, 10.0);
        reservations.settle("g-other", &charged, 10.0);
        assert_eq!(key.unfinished(), 0);
    }

    #[test]
    fn a_shared_store_keeps_unknown_creates_itself() {
        let (reservations, key) = table(true);
        reservations.reserve(key.clone(), "m", &serde_json::Value::Null).unwrap().unknown("lost");
        assert_eq!(key.unfinished(), 0, "the database counts it for every replica");
        let resumed = reservations.resume(&[], &[unknown_job("lost")]);
        assert!(resumed.is_empty());
        let (single, _) = table(false);
        assert_eq!(single.resume(&[], &[unknown_job("lost")]).get(&1), Some(&(1, 10.0)));
    }
}
