//! What a model costs, as the API's catalogue (`GET /v1/models`) says:
//! read when a command needs it and cached for a day beside the journal.

use std::collections::BTreeMap;
use std::time::Duration;

use aimlvid::{Client, ModelQuery, Pricing};

use crate::journal::Journal;

/// How long a command waits for the catalogue before going on without it.
const PRICES_TIMEOUT: Duration = Duration::from_secs(5);

/// `model`'s pricing: every video model's is read at once and cached a day.
pub(crate) async fn pricing_of(client: &Client, journal: &Journal, model: &str) -> Option<Pricing> {
    let fetch = async {
        let listings = client.models(&ModelQuery::video().with_pricing()).await?;
        Ok(listings.into_iter().filter_map(|l| Some((l.id, l.pricing?))).collect::<BTreeMap<_, _>>())
    };
    let mut prices = crate::cache::day_cached(client, journal, "prices", PRICES_TIMEOUT, fetch).await?;
    prices.remove(model)
}
