//! What a create is expected to cost, so that a key's budget can be held
//! to before the upstream says what a job cost.
//!
//! Each create reserves its expected cost against its key's budget and is
//! refused if the reservation would go over; when the job ends the
//! reservation is replaced by what the upstream charged (or released, for a
//! create that made no job). Overspend is therefore bounded by the jobs in
//! flight's misestimates, not by how many creates arrive at once.
//!
//! The expected cost of a model is, in order: the figure configured for it
//! (`[budget.estimates]`), the average charge of its finished jobs (learned
//! as they finish, and from storage at start), or the configured default.

use std::collections::HashMap;
use std::sync::Mutex;

use dashmap::DashMap;

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
    /// Credits per model id, used instead of what is learned.
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
    configured: HashMap<String, f64>,
    default: f64,
    /// Per model: the sum and count of finished jobs' charges.
    learned: Mutex<HashMap<String, (f64, u64)>>,
    /// Per upstream generation id: the credits reserved for it.
    holds: DashMap<String, Hold>,
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
        CostEstimates { configured, default, learned: Mutex::default(), holds: DashMap::new() }
    }

    /// Estimates starting from `settings`, nothing learned yet.
    pub fn from_settings(settings: CostSettings) -> Self {
        CostEstimates::new(settings.default_estimate, settings.estimates)
    }

    /// The credits a create of `model` is expected to cost.
    pub fn estimate(&self, model: &str) -> f64 {
        if let Some(credits) = self.configured.get(model) {
            return *credits;
        }
        let learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        match learned.get(model) {
            Some((sum, n)) if *n > 0 => sum / *n as f64,
            _ => self.default,
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_then_learned_then_default() {
        let costs = CostEstimates::new(500.0, HashMap::from([("a".to_owned(), 10.0)]));
        assert_eq!(costs.estimate("a"), 10.0);
        assert_eq!(costs.estimate("b"), 500.0);
        costs.learn("b", 100.0);
        costs.learn("b", 300.0);
        costs.learn("b", 0.0); // a failed job
        assert_eq!(costs.estimate("b"), 200.0);
        costs.learn("a", 1000.0);
        assert_eq!(costs.estimate("a"), 10.0, "configured wins");
        costs.seed([("c".to_owned(), 50.0, 4)]);
        costs.learn("c", 150.0);
        assert_eq!(costs.estimate("c"), 70.0);
    }

    #[test]
    fn holds_are_released_once() {
        let costs = CostEstimates::default();
        costs.hold("g", "m", 7.0);
        assert_eq!(costs.release("g"), Some(Hold { model: "m".into(), credits: 7.0 }));
        assert_eq!(costs.release("g"), None);
    }
}
