//! Every model of the catalog, generated from its schema: a smallest valid
//! request is accepted by the simulator, and each kind of mistake is refused
//! by the client before anything is sent.

use aimlvid::catalog::{self, ParamType};
use aimlvid::{Error, GenericRequest};
use serde_json::{Value, json};

use crate::*;

fn request_of(body: &Value) -> GenericRequest {
    serde_json::from_value(body.clone()).unwrap()
}

#[tokio::test]
async fn every_models_smallest_request_is_accepted_and_each_mistake_refused_before_sending() {
    let (sim, client) = start(config()).await;
    let (mut enums, mut missing, mut types) = (0, 0, 0);
    for model in catalog::models() {
        let example = model.example();
        let created = client.create(&request_of(&example)).await;
        assert!(created.is_ok(), "{}: {example} was refused: {}", model.id, created.unwrap_err());

        let sent_before = sim.requests().len();
        let refused = |body: Value| {
            let client = client.clone();
            async move {
                match client.create(&request_of(&body)).await {
                    Err(Error::Validation(invalid)) => invalid.to_string(),
                    other => panic!("{body} was not refused client-side: {other:?}"),
                }
            }
        };
        let with = |name: &str, value: Value| {
            let mut body = example.clone();
            body[name] = value;
            body
        };

        // A value outside an enum: the message names the allowed ones.
        let enumerated = model
            .parameters
            .iter()
            .find(|p| !p.allowed.is_empty() && matches!(p.ty, ParamType::String | ParamType::Integer));
        if let Some(p) = enumerated {
            let wrong = if p.ty == ParamType::String { json!("not-an-option") } else { json!(987_654) };
            let message = refused(with(&p.name, wrong)).await;
            let first_allowed = match &p.allowed[0] {
                Value::String(s) => format!("'{s}'"),
                other => other.to_string(),
            };
            for part in [&model.id, &p.name, &first_allowed] {
                assert!(message.contains(part.as_str()), "{}: {message:?} lacks {part}", model.id);
            }
            enums += 1;
        }

        // A required field left out.
        if let Some(p) = model.parameters.iter().find(|p| p.required) {
            let mut body = example.clone();
            body.as_object_mut().unwrap().remove(&p.name);
            let message = refused(body).await;
            let says = match p.ty {
                ParamType::Any => format!("{} is required but", p.name),
                ty => format!("{} is required ({ty})", p.name),
            };
            assert!(message.contains(&model.id) && message.contains(&says), "{}: {message:?}", model.id);
            missing += 1;
        }

        // A value of the wrong type.
        let typed = model.parameters.iter().find(|p| {
            matches!(p.ty, ParamType::String | ParamType::Integer | ParamType::Number | ParamType::Boolean)
        });
        if let Some(p) = typed {
            let wrong = if p.ty == ParamType::String { json!(12345) } else { json!("wrong") };
            let message = refused(with(&p.name, wrong)).await;
            let says = format!("{}: Expected {}", p.name, p.ty);
            assert!(message.contains(&model.id) && message.contains(&says), "{}: {message:?}", model.id);
            types += 1;
        }

        assert_eq!(sim.requests().len(), sent_before, "{}: a refused request reached the API", model.id);
    }
    // Most models have each kind of field to get wrong; all have some.
    assert!(enums > 120 && missing > 120 && types == catalog::models().count(), "{enums} {missing} {types}");
}

#[tokio::test]
async fn a_model_the_catalog_does_not_know_is_sent_for_the_api_to_judge() {
    let (sim, client) = start(config()).await;
    let request = GenericRequest::new("acme/brand-new-model").param("prompt", "x");
    match client.create(&request).await {
        Err(Error::InvalidRequest { message, .. }) => assert!(message.contains("Unknown model"), "{message}"),
        other => panic!("expected the simulator's 400: {other:?}"),
    }
    assert_eq!(sim.requests().len(), 1);
}

#[tokio::test]
async fn validation_can_be_turned_off_for_a_catalog_behind_the_api() {
    let (sim, _) = start(config()).await;
    let client = builder_for(&sim).validate_requests(false).build().unwrap();
    let request = GenericRequest::new("google/veo-3.1-t2v").param("prompt", "x").param("duration", 9);
    assert!(matches!(client.create(&request).await, Err(Error::InvalidRequest { .. })));
    assert_eq!(sim.requests().len(), 1, "sent, and refused by the API instead");
}

#[test]
fn a_models_openapi_document_reads_as_codegen_reads_it() {
    let id = "google/veo3-1-fast-extend-video";
    let document: serde_json::Value =
        serde_json::from_str(include_str!("../../api/video-models/Google_veo3-1-fast-extend-video.json"))
            .unwrap();
    let read = aimlvid::catalog::ModelSpec::from_openapi(id, &document).unwrap();
    let built_in = aimlvid::catalog::model(id).unwrap();
    assert_eq!(read.family, built_in.family);
    let shape = |spec: &aimlvid::catalog::ModelSpec| {
        spec.parameters
            .iter()
            .map(|p| (p.name.clone(), p.required, p.media, p.default.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&read), shape(built_in));
    let body = serde_json::json!({"model": id, "prompt": "x", "video_url": "https://example.com/a.mp4", "duration": 9});
    assert_eq!(read.validate(&body).is_err(), built_in.validate(&body).is_err());
    assert!(read.validate(&body).is_err());

    assert!(matches!(
        aimlvid::catalog::ModelSpec::from_openapi("acme/other", &document),
        Err(aimlvid::catalog::DocumentError::OtherModel { .. })
    ));
    assert!(matches!(
        aimlvid::catalog::ModelSpec::from_openapi(id, &serde_json::json!({"paths": {}})),
        Err(aimlvid::catalog::DocumentError::NoVideoRequest { .. })
    ));
    let looping = serde_json::json!({"paths": {"/v2/video/generations": {"post": {"requestBody": {"content": {"application/json": {"schema": {"$ref": "#/a"}}}}}}}, "a": {"$ref": "#/a"}});
    assert!(matches!(
        aimlvid::catalog::ModelSpec::from_openapi(id, &looping),
        Err(aimlvid::catalog::DocumentError::BrokenRef { .. })
    ));
}

/// The two models whose pages copy a sibling's schema have their own, from
/// the API-wide create schema (crates/core/api/README.md): a correct
/// request is accepted and sent, a wrong one refused before sending.
#[tokio::test]
async fn the_models_whose_pages_copy_a_siblings_schema_validate_by_their_own() {
    let shape = |id: &str| {
        let model = catalog::model(id).unwrap_or_else(|| panic!("{id} is in the catalog"));
        let parameters: Vec<(&str, bool)> =
            model.parameters.iter().map(|p| (p.name.as_str(), p.required)).collect();
        (model.family, parameters)
    };
    assert_eq!(
        shape("veed/fabric-1.0-fast"),
        (catalog::Family::Avatar, vec![("audio_url", true), ("image_url", true), ("resolution", true)])
    );
    let fabric = catalog::model("veed/fabric-1.0-fast").unwrap();
    assert_eq!(fabric.parameter("resolution").unwrap().allowed, [json!("480p"), json!("720p")]);
    assert_eq!(fabric.parameter("audio_url").unwrap().media, Some(catalog::MediaKind::Audio));
    assert_eq!(
        shape("kling-video/v1.5/standard/text-to-video"),
        (
            catalog::Family::TextToVideo,
            vec![
                ("prompt", true),
                ("aspect_ratio", false),
                ("camera_control", false),
                ("cfg_scale", false),
                ("duration", false),
                ("external_task_id", false),
                ("negative_prompt", false),
                ("type", false),
            ]
        )
    );

    let (sim, client) = start(config()).await;
    let fabric = json!({
        "model": "veed/fabric-1.0-fast",
        "image_url": "https://example.com/face.png",
        "audio_url": "https://example.com/song.mp3",
        "resolution": "480p",
    });
    let kling = json!({
        "model": "kling-video/v1.5/standard/text-to-video",
        "prompt": "A lighthouse in a storm",
        "aspect_ratio": "9:16",
        "cfg_scale": 0.7,
        "camera_control": {"type": "forward_up"},
    });
    // The sibling's schema would refuse both: fabric-1.0 has no `-fast` in
    // its enum, the Kling page asks for `image_url`.
    for good in [&fabric, &kling] {
        assert_eq!(catalog::validate(good).map(|m| m.id.as_str()), Ok(good["model"].as_str().unwrap()));
        client.create(&request_of(good)).await.unwrap_or_else(|e| panic!("{good} was refused: {e}"));
    }
    assert_eq!(sim.requests().len(), 2);

    let wrong = |body: &Value, field: &str, value: Option<Value>| {
        let mut body = body.clone();
        match value {
            Some(value) => body[field] = value,
            None => {
                body.as_object_mut().unwrap().remove(field);
            }
        }
        body
    };
    for (bad, says) in [
        (wrong(&fabric, "resolution", None), "resolution is required (string) but was not given"),
        (wrong(&fabric, "resolution", Some(json!("1080p"))), "resolution: Invalid enum value"),
        (wrong(&kling, "prompt", None), "prompt is required (string) but was not given"),
        (wrong(&kling, "cfg_scale", Some(json!(2))), "cfg_scale"),
        (wrong(&kling, "camera_control", Some(json!({"type": "spin"}))), "camera_control.type"),
    ] {
        let message = catalog::validate(&bad).unwrap_err().to_string();
        assert!(message.contains(bad["model"].as_str().unwrap()) && message.contains(says), "{message:?}");
        match client.create(&request_of(&bad)).await {
            Err(Error::Validation(_)) => {}
            other => panic!("{bad} was not refused client-side: {other:?}"),
        }
    }
    assert_eq!(sim.requests().len(), 2, "a refused request reached the API");
}
