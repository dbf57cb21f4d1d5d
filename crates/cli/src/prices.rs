//! What the API's catalogue (`GET /v1/models`) says of its video models:
//! which it lists, under which aliases, and at what price. Kept a day
//! beside the journal with its ETag, so that reading it again is a
//! conditional request whose unchanged answer has no body.

use std::sync::Arc;
use std::time::Duration;

use aimlvid::catalog::ModelSpec;
use aimlvid::{Client, LiveCatalogue, Pricing};

use crate::journal::Journal;

/// How long a command waits for the catalogue before going on without it.
const CATALOGUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The cache file's name.
const CACHE_NAME: &str = "catalogue";

/// The live catalogue as last kept, and the one read now, if it could be.
pub(crate) struct Read {
    /// What the cache held before this read (for `models --check`'s price changes).
    pub(crate) before: Option<LiveCatalogue>,
    /// What the client now holds: read now, or kept (fresh, or stale when
    /// the API could not be reached).
    pub(crate) now: Option<Arc<LiveCatalogue>>,
    /// Whether `now` came from the API during this call.
    pub(crate) read_now: bool,
}

/// Gives `client` the live catalogue: the cached one if under a day old
/// (unless `revalidate`), else read again (conditionally, by its ETag) and
/// cached; a stale one when the API cannot be reached. None when there is
/// neither.
pub(crate) async fn live_catalogue(client: &Client, journal: &Journal, revalidate: bool) -> Read {
    let cached = crate::cache::load::<LiveCatalogue>(client, journal, CACHE_NAME);
    let before = cached.as_ref().map(|(catalogue, _)| catalogue.clone());
    if let Some((catalogue, fresh)) = cached {
        client.set_live_catalogue(catalogue);
        if fresh && !revalidate {
            return Read { before, now: client.held_catalogue(), read_now: false };
        }
    }
    match tokio::time::timeout(CATALOGUE_TIMEOUT, client.live_catalogue()).await {
        Ok(Ok(catalogue)) => {
            crate::cache::store(client, journal, CACHE_NAME, &*catalogue);
            Read { before, now: Some(catalogue), read_now: true }
        }
        other => {
            tracing::info!(outcome = ?other.map(|r| r.err().map(|e| e.to_string())), "catalogue not read");
            Read { before, now: client.held_catalogue(), read_now: false }
        }
    }
}

/// The schema of `model`, which only the live catalogue lists, from the
/// OpenAPI document it links (kept a day like the catalogue), given to
/// `client` too so that its create checks by it without reading it again.
pub(crate) async fn live_spec(client: &Client, journal: &Journal, model: &str) -> Option<Arc<ModelSpec>> {
    let safe: String = model
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '.') { c } else { '_' })
        .collect();
    let name = format!("document-{safe}");
    let document =
        crate::cache::day_cached(client, journal, &name, CATALOGUE_TIMEOUT, client.model_document(model))
            .await??;
    match ModelSpec::from_openapi(model, &document) {
        Ok(spec) => {
            client.set_live_model_spec(spec.clone());
            Some(Arc::new(spec))
        }
        Err(e) => {
            tracing::info!(error = %e, "no schema");
            None
        }
    }
}

/// `model`'s pricing, by the live catalogue.
pub(crate) async fn pricing_of(client: &Client, journal: &Journal, model: &str) -> Option<Pricing> {
    let catalogue = live_catalogue(client, journal, false).await.now?;
    catalogue.get(model)?.pricing.clone()
}
