//! The model catalogue, `GET /v1/models`, and what its prices quote.

use aimlvid::{CREDITS_PER_USD, ModelQuery, Pricing};
use aimlvid_sim::{Fault, Route, SimConfig};
use serde_json::json;

use crate::{config, start};

#[tokio::test]
async fn the_catalogue_lists_every_video_model_with_a_price_that_matches_the_charge() {
    let (sim, client) = start(SimConfig { credits_per_job: 300_000.0, ..config() }).await;
    // A 503 on the first try is ridden out: the catalogue is safe to ask again.
    sim.inject(Route::Models, Fault::Status(503), 1);
    let models = client.models(&ModelQuery::video().with_pricing()).await.unwrap();
    assert!(models.len() > 100, "{} models", models.len());
    let extend = models.iter().find(|m| m.id == "google/veo3-1-fast-extend-video").unwrap();
    assert_eq!(extend.aliases, ["veo3-1-fast-extend-video"]);
    let pricing = extend.pricing.as_ref().expect("asked for prices");
    assert!(matches!(pricing, Pricing::Fixed { .. }), "{pricing:?}");
    assert_eq!(pricing.quote_credits(&json!({"prompt": "x"})), Some(300_000.0));
    assert_eq!(pricing.quote_usd(&json!({})), Some(300_000.0 / CREDITS_PER_USD));

    // Without `include=pricing`, no prices; an alias finds its model.
    let one = client.models(&ModelQuery::default().id("veo3-1-fast-extend-video")).await.unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!((one[0].id.as_str(), one[0].pricing.is_none()), ("google/veo3-1-fast-extend-video", true));
}
