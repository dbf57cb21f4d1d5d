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

fn extend_by(model: &str) -> aimlvid::GenericRequest {
    aimlvid::GenericRequest::new(model)
        .param("prompt", "The raccoon looks up")
        .param("video_url", "https://example.com/raccoon.mp4")
}

#[tokio::test]
async fn an_alias_is_sent_as_its_id_and_validated_as_that_model() {
    let (sim, client) = start(config()).await;
    let created = client.create(&extend_by("veo3-1-fast-extend-video")).await.unwrap();
    assert_eq!(sim.job(&created.id).unwrap().model, "google/veo3-1-fast-extend-video");

    // The alias's model refuses a 9 s extension, before anything is sent.
    let refused =
        client.create(&extend_by("veo3-1-fast-extend-video").param("duration", 9)).await.unwrap_err();
    assert!(matches!(refused, aimlvid::Error::Validation(_)), "{refused}");
    assert_eq!(sim.stats().create_requests, 1, "only the valid create was sent");
}

#[tokio::test]
async fn the_live_catalogue_resolves_aliases_first_and_is_read_again_by_its_etag() {
    let (sim, client) = start(config()).await;
    assert!(client.held_catalogue().is_none());
    let first = client.live_catalogue().await.unwrap();
    assert!(first.etag.is_some() && first.models.iter().all(|m| m.pricing.is_some()));
    let again = client.live_catalogue().await.unwrap();
    assert_eq!(again, first);
    let statuses: Vec<u16> =
        sim.requests().iter().filter(|r| r.route == Route::Models).map(|r| r.status).collect();
    assert_eq!(statuses, [200, 304], "the second read is conditional");

    // An alias only the live catalogue knows resolves by it.
    assert_eq!(client.resolve_model("fairy-extend"), "fairy-extend", "unknown: sent as given");
    let mut live = (*first).clone();
    live.models.iter_mut().find(|m| m.id == "google/veo3-1-fast-extend-video").unwrap().aliases =
        vec!["fairy-extend".into()];
    client.set_live_catalogue(live);
    let created = client.create(&extend_by("fairy-extend")).await.unwrap();
    assert_eq!(sim.job(&created.id).unwrap().model, "google/veo3-1-fast-extend-video");
    // The built-in catalogue's alias still resolves where the live one is silent.
    assert_eq!(client.resolve_model("veo3-1-fast-extend-video"), "google/veo3-1-fast-extend-video");
}

#[tokio::test]
async fn a_model_the_api_no_longer_lists_is_refused_before_sending_once_its_catalogue_is_read() {
    let dropped = "google/veo-3.1-t2v-fast";
    let (sim, client) = start(SimConfig { dropped_models: vec![dropped.into()], ..config() }).await;
    let request = || aimlvid::GenericRequest::new(dropped).param("prompt", "A lighthouse at dusk");
    // Unread, the build's catalogue is all the client knows: the API refuses it.
    let refused = client.create(&request()).await.unwrap_err();
    assert!(matches!(refused, aimlvid::Error::InvalidRequest { .. }), "{refused}");
    assert_eq!(sim.stats().create_requests, 1);

    client.live_catalogue().await.unwrap();
    let refused = client.create(&request()).await.unwrap_err();
    let aimlvid::Error::ModelNotListed { model, alternatives } = &refused else { panic!("{refused}") };
    assert_eq!(model, dropped);
    assert!(
        alternatives.len() == 3 && alternatives.iter().all(|a| a.starts_with("google/")),
        "{alternatives:?}"
    );
    assert!(
        refused.to_string().starts_with(&format!("the API no longer lists {dropped}; the nearest")),
        "{refused}"
    );
    assert_eq!(sim.stats().create_requests, 1, "refused before sending");

    // A model added at run time changes the catalogue's ETag.
    sim.add_model(aimlvid_sim::AddedModel::text_to_video("acme/lumen-1"));
    let live = client.live_catalogue().await.unwrap();
    assert_eq!(live.get("lumen-1").map(|m| m.id.as_str()), Some("acme/lumen-1"));
    let lumen = aimlvid::GenericRequest::new("lumen-1").param("prompt", "A lighthouse at dusk");
    let created = client.create(&lumen).await.unwrap();
    assert_eq!(sim.job(&created.id).unwrap().model, "acme/lumen-1");
    assert_eq!(sim.stats().create_requests, 2);
}

#[tokio::test]
async fn a_model_only_the_api_lists_is_validated_by_the_document_it_links_read_once() {
    let (sim, client) = start(config()).await;
    sim.add_model(aimlvid_sim::AddedModel::text_to_video("acme/lumen-1"));
    let documents = || sim.requests().iter().filter(|r| r.route == Route::Documents).count();
    let lumen = || aimlvid::GenericRequest::new("lumen-1").param("prompt", "A lighthouse at dusk");
    // Without the live catalogue nothing links a document: the API refuses it alone.
    let refused = client.create(&lumen()).await.unwrap_err();
    assert!(matches!(refused, aimlvid::Error::InvalidRequest { .. }), "unknown as an alias: {refused}");
    assert_eq!(documents(), 0);

    client.live_catalogue().await.unwrap();
    for _ in 0..2 {
        let refused = client.create(&lumen().param("duration", 7)).await.unwrap_err();
        let aimlvid::Error::Validation(invalid) = &refused else { panic!("{refused}") };
        assert!(invalid.to_string().contains("duration"), "{invalid}");
    }
    assert_eq!(sim.stats().create_requests, 1, "only the first, unchecked, create was sent");
    assert_eq!(documents(), 1, "the document is read once");
    let spec = client.live_model_spec("acme/lumen-1").await.unwrap();
    assert_eq!(
        (spec.family, spec.parameter("duration").unwrap().default.clone()),
        (aimlvid::catalog::Family::TextToVideo, Some(json!(5)))
    );
    let created = client.create(&lumen().param("duration", 10)).await.unwrap();
    assert_eq!(sim.job(&created.id).unwrap().model, "acme/lumen-1");
    assert!(
        client.live_model_spec("google/veo3-1-fast-extend-video").await.is_none(),
        "built-in: its own schema"
    );
}
