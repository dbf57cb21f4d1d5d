//! What a create is expected to cost, so that a key's budget can be held
//! to before the upstream says what a job cost.
//!
//! Each create reserves its expected cost against its key's budget and is
//! refused if the reservation would go over; when the job ends the
//! reservation is replaced by what the upstream charged (or released, for a
//! create that made no job). Overspend is therefore bounded by the jobs in
//! flight's misestimates, not by how many creates arrive at once.
//!
//! The expected cost of a create is, in order: the model's price from the
//! upstream's catalogue (`GET /v1/models?include=pricing`, read at start and
//! daily) for the request's parameters; the average charge of the model's
//! finished jobs (learned as they finish, and from storage at start); the
//! figure configured for the model (`[budget.estimates]`); or the
//! configured default.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use aimlvid::{ModelListing, ModelQuery, Pricing};
use dashmap::DashMap;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Credits a create of a model nothing is known about is expected to cost,
/// by default: on the high side of video models' prices, so that a key's
/// budget errs towards refusing until a job of the model has finished and
/// its real price is learned.
pub const DEFAULT_JOB_ESTIMATE: f64 = 1_000_000.0;

/// What creates are expected to cost, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct CostSettings {
    /// Credits for a model neither configured nor learned yet.
    pub default_estimate: f64,
    /// Credits per model id, for a model without a price that no job has
    /// finished yet.
    pub estimates: HashMap<String, f64>,
}

impl Default for CostSettings {
    fn default() -> Self {
        CostSettings { default_estimate: DEFAULT_JOB_ESTIMATE, estimates: HashMap::new() }
    }
}

/// Expected costs per model, and the reservations of jobs in flight.
#[derive(Debug)]
pub struct CostEstimates {
    /// Per model id and alias: its price, as the catalogue last said.
    prices: RwLock<HashMap<String, Pricing>>,
    configured: HashMap<String, f64>,
    default: f64,
    /// Per model: the sum and count of finished jobs' charges.
    learned: Mutex<HashMap<String, (f64, u64)>>,
    /// Per upstream generation id: the credits reserved for it.
    holds: DashMap<String, Hold>,
    /// Per local id, for creates whose outcome is unknown (on a store of
    /// one server: a shared store holds theirs itself): the credits and
    /// key place they keep until the upstream's logs resolve them.
    unknown: DashMap<String, UnknownHold>,
}

/// What a create whose outcome is unknown keeps of its key's limits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UnknownHold {
    pub(crate) key_id: crate::store::KeyId,
    pub(crate) model: String,
    pub(crate) credits: f64,
}

/// A running job's reservation.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hold {
    /// Its model, to learn from its charge.
    pub(crate) model: String,
    pub(crate) credits: f64,
}

impl Default for CostEstimates {
    fn default() -> Self {
        CostEstimates::from_settings(CostSettings::default())
    }
}

impl CostEstimates {
    /// `default` for models not configured nor learned; `configured` per model.
    pub fn new(default: f64, configured: HashMap<String, f64>) -> Self {
        CostEstimates {
            prices: RwLock::default(),
            configured,
            default,
            learned: Mutex::default(),
            holds: DashMap::new(),
            unknown: DashMap::new(),
        }
    }

    /// Estimates starting from `settings`, nothing learned yet.
    pub fn from_settings(settings: CostSettings) -> Self {
        CostEstimates::new(settings.default_estimate, settings.estimates)
    }

    /// The credits a create of `model` with body `params` is expected to cost.
    pub fn estimate(&self, model: &str, params: &Value) -> f64 {
        let priced = self.prices.read().unwrap_or_else(|e| e.into_inner());
        if let Some(credits) = priced.get(model).and_then(|p| p.quote_credits(params)) {
            return credits;
        }
        drop(priced);
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((sum, n)) = learned.get(model)
            && *n > 0
        {
            return sum / *n as f64;
        }
        self.configured.get(model).copied().unwrap_or(self.default)
    }

    /// Takes the catalogue's prices; returns how many models have one.
    pub fn set_prices(&self, models: Vec<ModelListing>) -> usize {
        let mut prices = HashMap::new();
        for model in models {
            if let Some(pricing) = model.pricing {
                for alias in &model.aliases {
                    prices.insert(alias.clone(), pricing.clone());
                }
                prices.insert(model.id, pricing);
            }
        }
        let priced = prices.keys().filter(|id| id.contains('/')).count();
        *self.prices.write().unwrap_or_else(|e| e.into_inner()) = prices;
        priced
    }

    /// A job of `model` was charged `credits` (failed jobs, charged
    /// nothing, do not lower the estimate).
    pub fn learn(&self, model: &str, credits: f64) {
        if credits > 0.0 && credits.is_finite() {
            let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
            let entry = learned.entry(model.to_owned()).or_default();
            entry.0 += credits;
            entry.1 += 1;
        }
    }

    /// Seeds what storage knows: `(model, average charge, jobs)`.
    pub fn seed(&self, rows: impl IntoIterator<Item = (String, f64, u64)>) {
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        for (model, average, n) in rows {
            learned.insert(model, (average * n as f64, n));
        }
    }

    /// Keeps a running job's reservation until it ends.
    pub(crate) fn hold(&self, generation_id: &str, model: &str, credits: f64) {
        self.holds.insert(generation_id.to_owned(), Hold { model: model.to_owned(), credits });
    }

    /// The reservation of a job that ended, if it had one.
    pub(crate) fn release(&self, generation_id: &str) -> Option<Hold> {
        self.holds.remove(generation_id).map(|(_, hold)| hold)
    }

    /// Keeps the reservation (and, with it, its key's place) of a create
    /// whose outcome is unknown until it is resolved.
    pub(crate) fn hold_unknown(&self, local_id: &str, hold: UnknownHold) {
        self.unknown.insert(local_id.to_owned(), hold);
    }

    /// Takes the reservation of a create whose outcome was unknown: it was
    /// found (and becomes a running job's hold), refused, or given up on.
    pub(crate) fn take_unknown(&self, local_id: &str) -> Option<UnknownHold> {
        self.unknown.remove(local_id).map(|(_, hold)| hold)
    }

    /// Creates whose outcome is unknown holding a reservation here.
    pub fn unknown_holds(&self) -> usize {
        self.unknown.len()
    }
}

/// How often the catalogue's prices are read again.
const PRICE_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// How soon a failed read is tried again.
const PRICE_RETRY: Duration = Duration::from_secs(600);

/// The longest the start waits for the first read of prices.
pub(crate) const FIRST_PRICE_READ: Duration = Duration::from_secs(10);

/// What the last read of the upstream's catalogue said of the models this
/// build knows: those it lists that the build does not, and those it no
/// longer lists (a create for one is refused before anything is stored
/// or sent: the upstream would refuse it).
#[derive(Debug, Default)]
pub struct CatalogueWatch {
    last: std::sync::Mutex<Option<CatalogueRead>>,
}

/// One read of the catalogue, compared with the build's.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogueRead {
    /// When, unix seconds.
    pub at: i64,
    /// How it differs from the build's.
    pub changes: aimlvid::CatalogueChanges,
}

impl CatalogueWatch {
    /// The last read, if one succeeded.
    pub fn last(&self) -> Option<CatalogueRead> {
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The listed ids most like `model`, if the catalogue no longer lists it.
    pub fn no_longer_listed(&self, model: &str) -> Option<Vec<String>> {
        let last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (_, nearest) = last.as_ref()?.changes.dropped.iter().find(|(id, _)| id == model)?;
        Some(nearest.clone())
    }

    /// Keeps a read; says so in the log when it differs from the one before
    /// (so a daily read logs a change once, not every day).
    fn update(&self, changes: aimlvid::CatalogueChanges) {
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = last.as_ref().map(|read| &read.changes);
        let same = before.is_some_and(|b| b.added == changes.added && b.dropped == changes.dropped);
        if !same {
            if changes.is_empty() {
                tracing::info!(
                    listed = changes.listed,
                    "the upstream's catalogue lists exactly this build's models"
                );
            } else {
                let dropped: Vec<&str> = changes.dropped.iter().map(|(id, _)| id.as_str()).collect();
                tracing::warn!(
                    added = ?changes.added,
                    dropped = ?dropped,
                    "the upstream's catalogue differs from this build's: the added models are usable and \
                     checked by the upstream only; creates for the dropped ones are refused"
                );
            }
        }
        *last = Some(CatalogueRead { at: crate::calendar::unix_now(), changes });
    }
}

/// Reads the video models' prices from the upstream's catalogue, and
/// compares its models with the build's; returns when to read them again:
/// in a day, or in ten minutes after a failure (meanwhile estimates fall
/// back to what is learned or configured).
pub(crate) async fn read_prices(
    upstream: &aimlvid::Client,
    costs: &CostEstimates,
    catalogue: &CatalogueWatch,
) -> Duration {
    match upstream.models(&ModelQuery::video().with_pricing()).await {
        Ok(models) => {
            catalogue.update(aimlvid::LiveCatalogue::new(models.clone(), None).changes_from_build());
            let priced = costs.set_prices(models);
            tracing::info!(priced, "read the video models' prices from the upstream's catalogue");
            PRICE_REFRESH
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read model prices; budgets use learned or configured \
                estimates meanwhile; trying again in 10 minutes");
            PRICE_RETRY
        }
    }
}

/// Reads prices again after `wait`, and so on, until `stop`.
pub(crate) async fn refresh_prices(
    upstream: aimlvid::Client,
    costs: std::sync::Arc<CostEstimates>,
    catalogue: std::sync::Arc<CatalogueWatch>,
    mut wait: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = read_prices(&upstream, &costs, &catalogue).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priced_then_learned_then_configured_then_default() {
        let costs = CostEstimates::new(500.0, HashMap::from([("v/a".to_owned(), 10.0)]));
        let none = Value::Null;
        assert_eq!(costs.estimate("v/a", &none), 10.0);
        assert_eq!(costs.estimate("v/b", &none), 500.0);
        costs.learn("v/b", 100.0);
        costs.learn("v/b", 300.0);
        costs.learn("v/b", 0.0); // a failed job
        assert_eq!(costs.estimate("v/b", &none), 200.0);
        costs.learn("v/a", 1000.0);
        assert_eq!(costs.estimate("v/a", &none), 1000.0, "what was learned beats a guess");
        costs.seed([("v/c".to_owned(), 50.0, 4)]);
        costs.learn("v/c", 150.0);
        assert_eq!(costs.estimate("v/c", &none), 70.0);

        let listing: Vec<ModelListing> = serde_json::from_value(serde_json::json!([
            {"id": "v/b", "aliases": ["b"], "pricing": {"kind": "fixed", "currency": "USD",
                "units": [{"price": 0.05, "per": "second"}]}},
            {"id": "v/c", "pricing": {"kind": "variable", "currency": "USD"}},
        ]))
        .unwrap();
        assert_eq!(costs.set_prices(listing), 2);
        let eight_seconds = serde_json::json!({"duration": 8});
        assert_eq!(costs.estimate("v/b", &eight_seconds), 0.4 * aimlvid::CREDITS_PER_USD, "the price wins");
        assert_eq!(costs.estimate("b", &eight_seconds), 0.4 * aimlvid::CREDITS_PER_USD, "by its alias too");
        assert_eq!(costs.estimate("v/b", &none), 200.0, "no duration, no quote: learned");
        assert_eq!(costs.estimate("v/c", &none), 70.0, "a variable price cannot be quoted: learned");
    }

    #[test]
    fn holds_are_released_once() {
        let costs = CostEstimates::default();
        costs.hold("g", "m", 7.0);
        assert_eq!(costs.release("g"), Some(Hold { model: "m".into(), credits: 7.0 }));
        assert_eq!(costs.release("g"), None);
    }
}
