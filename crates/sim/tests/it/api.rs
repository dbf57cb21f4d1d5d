//! Auth, validation and not-found answers.

use aimlvid_sim::{DEFAULT_API_KEY, SAMPLE_INPUT, SimConfig};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::support::{
    CREATE_PATH, HEADLINE, body, client, create_job, create_with, error_body, poll_with, start,
};

#[tokio::test]
async fn auth_failures_are_401_and_never_echo_the_key() {
    let sim = start(SimConfig::fast()).await;
    let url = format!("{}{CREATE_PATH}", sim.base_url());

    let missing = client().post(&url).json(&body()).send().await.unwrap();
    let missing = error_body(missing, 401, CREATE_PATH).await;

    let secret = "sk-live-do-not-echo-me";
    let wrong = create_with(&sim, secret, &body()).await;
    let wrong_text = wrong.text().await.unwrap();
    assert!(!wrong_text.contains(secret), "{wrong_text}");
    let wrong: Value = serde_json::from_str(&wrong_text).unwrap();
    assert_eq!(wrong["statusCode"], 401);
    assert_ne!(missing["message"], wrong["message"]);
    assert_eq!(wrong["message"], "Invalid API key");

    let basic = client()
        .post(&url)
        .header("authorization", format!("Basic {secret}"))
        .json(&body())
        .send()
        .await
        .unwrap();
    let basic = error_body(basic, 401, CREATE_PATH).await;
    assert!(!basic.to_string().contains(secret));

    let poll = poll_with(&sim, secret, "whatever").await;
    error_body(poll, 401, CREATE_PATH).await;

    assert_eq!(sim.stats().jobs_created, 0);
    assert_eq!(sim.stats().create_requests, 3);
}

#[tokio::test]
async fn create_answers_a_queued_job() {
    let sim = start(SimConfig::fast()).await;
    let response = create_with(&sim, DEFAULT_API_KEY, &body()).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let answer: Value = response.json().await.unwrap();
    let id = answer["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    assert_eq!(answer, json!({"id": id, "status": "queued"}));
    let job = sim.job(id).unwrap();
    assert_eq!(job.model, HEADLINE);
    assert_eq!(job.key_index, 0);
    assert_eq!(job.request, body());
}

async fn rejected(body: &Value) -> Value {
    let sim = start(SimConfig::fast()).await;
    let response = create_with(&sim, DEFAULT_API_KEY, body).await;
    let answer = error_body(response, 400, CREATE_PATH).await;
    assert_eq!(sim.stats().jobs_created, 0);
    answer
}

#[tokio::test]
async fn validation_errors_have_the_upstream_shape() {
    let mut bad_ratio = body();
    bad_ratio["aspect_ratio"] = json!("4:3");
    let answer = rejected(&bad_ratio).await;
    assert_eq!(answer["message"], "Body validation error");
    assert_eq!(
        answer["errors"],
        json!([{
            "path": ["aspect_ratio"],
            "code": "invalid_enum_value",
            "expected": "'auto' | '16:9' | '9:16'",
            "received": "'4:3'",
            "message": "Invalid enum value. Expected 'auto' | '16:9' | '9:16', received '4:3'",
        }])
    );

    let mut no_prompt = body();
    no_prompt.as_object_mut().unwrap().remove("prompt");
    let answer = rejected(&no_prompt).await;
    assert_eq!(
        answer["errors"],
        json!([{"path": ["prompt"], "code": "invalid_type", "expected": "string",
                "received": "undefined", "message": "Required"}])
    );

    let mut blank_prompt = body();
    blank_prompt["prompt"] = json!("   ");
    let answer = rejected(&blank_prompt).await;
    assert_eq!(answer["errors"][0]["code"], "too_small");

    let mut http = body();
    http["video_url"] = json!("http://example.com/clip.mp4");
    let answer = rejected(&http).await;
    let message = answer["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("an HTTPS URL or a data: URI is required"), "{message}");

    let mut not_video = body();
    not_video["video_url"] = json!(format!(
        "data:video/mp4;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(b"GIF89a definitely not a video")
    ));
    let answer = rejected(&not_video).await;
    assert_eq!(answer["errors"][0]["message"], "Invalid data: URI: the payload is not a recognizable video");

    let mut wrong_type = body();
    wrong_type["generate_audio"] = json!("yes");
    let answer = rejected(&wrong_type).await;
    assert_eq!(answer["errors"][0]["message"], "Expected boolean, received string");
}

#[tokio::test]
async fn a_data_uri_video_is_accepted() {
    let sim = start(SimConfig::fast()).await;
    let mut with_data = body();
    let uri =
        format!("data:video/mp4;base64,{}", base64::engine::general_purpose::STANDARD.encode(SAMPLE_INPUT));
    with_data["video_url"] = json!(uri);
    let response = create_with(&sim, DEFAULT_API_KEY, &with_data).await;
    assert_eq!(response.status(), 200);
    let id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    // The kept request elides the payload.
    let kept = sim.job(&id).unwrap().request;
    assert_eq!(kept["video_url"], format!("data:video/mp4;base64,<{} bytes elided>", uri.len()));
}

#[tokio::test]
async fn unknown_or_missing_model_points_at_the_docs() {
    let answer = rejected(&json!({"model": "acme/video-9000", "prompt": "x"})).await;
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains("'acme/video-9000'"), "{message}");
    assert!(message.contains("docs"), "{message}");

    let answer = rejected(&json!({"prompt": "x"})).await;
    assert!(answer["message"].as_str().unwrap().contains("docs"));

    let answer = rejected(&json!(["not", "an", "object"])).await;
    assert_eq!(answer["message"], "Body validation error");
    assert_eq!(answer["errors"][0]["message"], "Expected object, received array");
}

#[tokio::test]
async fn malformed_json_and_non_json_bodies_are_400() {
    let sim = start(SimConfig::fast()).await;
    let url = format!("{}{CREATE_PATH}", sim.base_url());
    let broken = client()
        .post(&url)
        .bearer_auth(DEFAULT_API_KEY)
        .header("content-type", "application/json")
        .body("{\"model\": ")
        .send()
        .await
        .unwrap();
    error_body(broken, 400, CREATE_PATH).await;

    // Without a JSON content type the upstream sees an empty body.
    let text =
        client().post(&url).bearer_auth(DEFAULT_API_KEY).body(body().to_string()).send().await.unwrap();
    let answer = error_body(text, 400, CREATE_PATH).await;
    assert!(answer["message"].as_str().unwrap().starts_with("Missing model."));
}

#[tokio::test]
async fn ids_are_per_key_and_unknown_ids_are_404() {
    let sim =
        start(SimConfig { api_keys: vec![DEFAULT_API_KEY.into(), "second-key".into()], ..SimConfig::fast() })
            .await;
    let id = create_job(&sim).await;

    let unknown = poll_with(&sim, DEFAULT_API_KEY, "60ac7c34-3224-4b14-8e7d-0aa0db708325").await;
    let unknown = error_body(unknown, 404, CREATE_PATH).await;
    let other_key = poll_with(&sim, "second-key", &id).await;
    let other_key = error_body(other_key, 404, CREATE_PATH).await;
    // Indistinguishable: the other key cannot learn the id exists.
    assert_eq!(unknown["message"], other_key["message"]);

    assert_eq!(poll_with(&sim, DEFAULT_API_KEY, &id).await.status(), 200);
    assert_eq!(sim.job(&id).unwrap().polls, 1);

    let missing = client()
        .get(format!("{}{CREATE_PATH}", sim.base_url()))
        .bearer_auth(DEFAULT_API_KEY)
        .send()
        .await
        .unwrap();
    let missing = error_body(missing, 400, CREATE_PATH).await;
    assert_eq!(missing["errors"][0]["path"], json!(["generation_id"]));

    let path = client().get(format!("{}/v1/nothing/here", sim.base_url())).send().await.unwrap();
    let path = error_body(path, 404, "/v1/nothing/here").await;
    assert_eq!(path["message"], "Cannot GET /v1/nothing/here");
}

/// The two models whose pages copy a sibling's schema (their schemas come
/// from the API-wide create schema; crates/core/api/README.md) are served
/// like any other: listed, documented, their creates validated.
#[tokio::test]
async fn the_models_from_the_create_schema_are_listed_documented_and_validated() {
    let sim = start(SimConfig::fast()).await;
    let fabric = json!({
        "model": "veed/fabric-1.0-fast",
        "image_url": "https://example.com/face.png",
        "audio_url": "https://example.com/song.mp3",
        "resolution": "720p",
    });
    let kling = json!({
        "model": "kling-video/v1.5/standard/text-to-video",
        "prompt": "A lighthouse in a storm",
        "camera_control": {"type": "simple", "config": {"zoom": 5}},
        "duration": 10,
    });
    for (good, field, bad) in [
        // `resolution` has no default for the fast model: it must be given.
        (&fabric, "resolution", None),
        (&kling, "duration", Some(json!(7))),
    ] {
        let id = good["model"].as_str().unwrap();
        let created = create_with(&sim, DEFAULT_API_KEY, good).await;
        assert_eq!(created.status(), 200, "{id}: {}", created.text().await.unwrap());

        let mut wrong = good.clone();
        match bad {
            Some(bad) => wrong[field] = bad,
            None => {
                wrong.as_object_mut().unwrap().remove(field);
            }
        }
        let answer = error_body(create_with(&sim, DEFAULT_API_KEY, &wrong).await, 400, CREATE_PATH).await;
        assert_eq!(answer["message"], "Body validation error", "{id}");
        assert_eq!(answer["errors"][0]["path"], json!([field]), "{id}: {answer}");

        let listed: Value = client()
            .get(format!("{}/v1/models", sim.base_url()))
            .query(&[("id", id)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed["data"][0]["id"], id, "{listed}");
        let docs = listed["data"][0]["info"]["docsJson"].as_str().unwrap();
        let document: Value = client().get(docs).send().await.unwrap().json().await.unwrap();
        let schema = &document["components"]["schemas"]["Request"];
        assert_eq!(schema["properties"]["model"]["enum"], json!([id]), "{id}");
        assert_eq!(schema, &aimlvid::catalog::model(id).unwrap().schema);
    }
    assert_eq!(sim.stats().jobs_created, 2);
}
