//! What a model costs, as the API's catalogue (`GET /v1/models`) says:
//! read when a command needs it and cached for a day beside the journal.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aimlvid::{Client, ModelQuery, Pricing};
use serde::{Deserialize, Serialize};

use crate::journal::Journal;

/// How long prices are trusted.
const PRICES_TTL: Duration = Duration::from_secs(24 * 3600);

/// How long a command waits for the catalogue before going on without it.
const PRICES_TIMEOUT: Duration = Duration::from_secs(5);

/// Every video model's price as last read from one server.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CachedPrices {
    base_url: String,
    /// Seconds since the Unix epoch.
    fetched_at: u64,
    models: BTreeMap<String, Pricing>,
}

fn cache_path(journal: &Journal) -> PathBuf {
    journal.dir().join("cache").join("prices.json")
}

/// `model`'s pricing: from a cache under a day old, else from the API
/// (all video models at once, then cached), else none.
pub(crate) async fn pricing_of(client: &Client, journal: &Journal, model: &str) -> Option<Pricing> {
    let path = cache_path(journal);
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
    let cached: Option<CachedPrices> = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|c: &CachedPrices| c.base_url == client.base_url());
    if let Some(cached) = cached.as_ref().filter(|c| now.saturating_sub(c.fetched_at) < PRICES_TTL.as_secs())
    {
        return cached.models.get(model).cloned();
    }
    let query = ModelQuery::video().with_pricing();
    match tokio::time::timeout(PRICES_TIMEOUT, client.models(&query)).await {
        Ok(Ok(listings)) => {
            let fresh = CachedPrices {
                base_url: client.base_url().to_owned(),
                fetched_at: now,
                models: listings.into_iter().filter_map(|l| Some((l.id, l.pricing?))).collect(),
            };
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| std::fs::write(&path, serde_json::to_vec(&fresh).unwrap_or_default()));
            if let Err(e) = written {
                tracing::info!(error = %e, path = %path.display(), "prices not cached");
            }
            fresh.models.get(model).cloned()
        }
        other => {
            tracing::info!(outcome = ?other.map(|r| r.err().map(|e| e.to_string())), "the model catalogue was not read");
            // Stale prices beat none.
            cached.and_then(|c| c.models.get(model).cloned())
        }
    }
}
