//! `POST /v1/videos/extensions`: OpenAI's extend, on Veo 3.1's extend
//! models, through the same create path as every other create of this
//! front. The clip is the member's own completed video, by its id (sent
//! by the upstream's own file URL), or an uploaded one (sent inline).

use aimlvid::catalog::ModelSpec;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Map, Value};

use super::{
    OpenAiError, authenticate, create_video, finished_file_url, map, own_generation, read_fields,
    typed_fields, videos::idempotency_key,
};
use crate::api::Authorization;
use crate::state::AppState;

/// The extend model used when none is named: the fast one.
const DEFAULT_MODEL: &str = "google/veo3-1-fast-extend-video";

/// `POST /v1/videos/extensions`: JSON, or multipart as openai-python sends
/// it (`video[id]` for a video by id, read as `{"video": {"id"}}` by the
/// form reader; a file part `video` for a clip).
pub(super) async fn extend(
    State(state): State<AppState>,
    authorization: Authorization,
    request: Request,
) -> Result<Response, OpenAiError> {
    let key = authenticate(&state, &authorization)?;
    let idempotency_key = idempotency_key(request.headers())?;
    let mut fields = read_fields(&state, request).await?;
    let spec = extend_model(fields.remove("model"))?;
    let mut body = Map::new();
    let video_url = match source(&mut fields)? {
        Source::Video(id) => {
            // Said outright rather than left `auto`, which comes to the
            // same for the upstream, so the extension reads back with its
            // source's size (clients such as async-openai need one).
            let (source, generation) = own_generation(&state, &key, &id).await?;
            let empty = Value::Object(Map::new());
            let params = source.params.as_deref().unwrap_or(&empty);
            let size = map::size_of_body(aimlvid::catalog::model(&source.model), params);
            if let Some(aspect) = map::aspect_for(spec, &size) {
                body.insert("aspect_ratio".into(), Value::from(aspect));
            }
            source_url(&id, &generation)?
        }
        Source::Clip(data_uri) => inline_clip(&data_uri)?,
    };
    let text = |v: Value| match v {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let unfit = |u: map::Unfit| OpenAiError::invalid(u.param, u.message);
    if let Some(seconds) = fields.remove("seconds").map(text) {
        let (name, value) = map::duration(spec, &seconds).map_err(unfit)?;
        body.insert(name, value);
    }
    if let Some(size) = fields.remove("size").map(text) {
        body.extend(map::size(spec, &size).map_err(unfit)?);
    }
    typed_fields(spec, &mut fields);
    body.extend(fields);
    body.insert("model".into(), Value::from(spec.id.clone()));
    body.insert("video_url".into(), Value::from(video_url));
    create_video(&state, &key, Value::Object(body), idempotency_key).await
}

/// `model`: one of the extend models (by id or alias), the fast one when
/// none is named.
fn extend_model(named: Option<Value>) -> Result<&'static ModelSpec, OpenAiError> {
    let extend_models = || {
        aimlvid::catalog::ModelPattern::new("*-extend-video")
            .map(|p| p.models().map(|m| m.id.clone()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let name = match named {
        None => DEFAULT_MODEL.to_owned(),
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
    };
    aimlvid::catalog::model(&name)
        .or_else(|| aimlvid::catalog::resolve(&name))
        .filter(|spec| spec.id.ends_with("-extend-video"))
        .ok_or_else(|| {
            OpenAiError::invalid(
                "model",
                format!(
                    "Model '{name}' cannot extend a video; the extend models are {} (the default is {DEFAULT_MODEL})",
                    extend_models().join(" and ")
                ),
            )
        })
}

/// What to extend.
#[derive(Debug, PartialEq)]
enum Source {
    /// The member's own video, by id.
    Video(String),
    /// An uploaded clip, as the `data:` URI the form reader made of it.
    Clip(String),
}

/// `video`: `{"id": …}` (in JSON; `video[id]` in a form, as the openai
/// SDKs send it; the reference's JSON as text, as async-openai sends it),
/// an uploaded file, or an id.
fn source(fields: &mut Map<String, Value>) -> Result<Source, OpenAiError> {
    let missing =
        || OpenAiError::invalid("video", "`video` is required: {\"id\": \"video_…\"} or a video file");
    let video = match fields.remove("video") {
        Some(Value::String(s)) if s.trim_start().starts_with('{') => {
            Some(serde_json::from_str::<Value>(&s).map_err(|_| missing())?)
        }
        other => other,
    };
    match video {
        Some(Value::Object(o)) => match o.get("id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(Source::Video(id.clone())),
            _ => Err(missing()),
        },
        Some(Value::String(s)) if s.starts_with("data:") => Ok(Source::Clip(s)),
        Some(Value::String(id)) if !id.is_empty() => Ok(Source::Video(id)),
        _ => Err(missing()),
    }
}

/// The upstream's own file URL of the member's completed video `id`,
/// whose generation is `generation`.
fn source_url(id: &str, generation: &Value) -> Result<String, OpenAiError> {
    let url =
        finished_file_url(id, generation).map_err(|e| OpenAiError { param: Some("video".into()), ..e })?;
    // The upstream takes an https URL or the video inline; its files are
    // served over https, so another scheme (a simulator on this machine)
    // cannot be passed on, and the catalog check would name only the scheme.
    if !url.starts_with("https://") {
        return Err(OpenAiError::invalid(
            "video",
            format!(
                "Video '{id}' is on a file host the upstream does not fetch from (not https); \
                 download its content and upload it as `video` instead"
            ),
        ));
    }
    Ok(url)
}

/// An uploaded clip, as the upstream takes it inline: a video, within the
/// size the library sends inline.
fn inline_clip(data_uri: &str) -> Result<String, OpenAiError> {
    let encoded = data_uri.split_once(',').map_or("", |(_, data)| data);
    let limit = aimlvid::DEFAULT_MAX_INLINE_BYTES;
    // The size from the encoding's length, before decoding megabytes that are refused anyway.
    if (encoded.len() as u64 / 4) * 3 > limit + 3 {
        return Err(OpenAiError::invalid(
            "video",
            format!(
                "The uploaded video is about {} MiB; clips are sent to the upstream inline, up to {} MiB: \
                 upload a shorter clip, or extend a finished video by its id",
                encoded.len() as u64 * 3 / 4 / (1024 * 1024),
                limit / (1024 * 1024)
            ),
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| OpenAiError::invalid("video", "The uploaded video could not be read"))?;
    // Its type from its bytes: the SDK labels a file by its name, often
    // as application/octet-stream.
    let clip = aimlvid::VideoInput::from_bytes(&bytes).map_err(|_| {
        OpenAiError::invalid("video", "The uploaded file is not a video (MP4, MOV, WebM, MKV, AVI…)")
    })?;
    Ok(clip.into_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_video_is_an_id_in_json_or_in_a_form_or_an_uploaded_clip() {
        let by_id = |v| source(&mut fields(v)).unwrap();
        assert_eq!(by_id(json!({"video": {"id": "abc"}})), Source::Video("abc".into()));
        // async-openai: the reference's JSON in a text field.
        assert_eq!(by_id(json!({"video": "{\"id\":\"abc\"}"})), Source::Video("abc".into()));
        assert_eq!(
            by_id(json!({"video": "data:video/mp4;base64,AAAA"})),
            Source::Clip("data:video/mp4;base64,AAAA".into())
        );
        for bad in
            [json!({}), json!({"video": {"url": "x"}}), json!({"video": 3}), json!({"video": "{not json"})]
        {
            assert_eq!(source(&mut fields(bad)).unwrap_err().param.as_deref(), Some("video"));
        }
    }

    #[test]
    fn only_an_extend_model_extends_and_the_fast_one_by_default() {
        assert_eq!(extend_model(None).unwrap().id, DEFAULT_MODEL);
        assert_eq!(
            extend_model(Some(json!("google/veo3-1-extend-video"))).unwrap().id,
            "google/veo3-1-extend-video"
        );
        let refused = extend_model(Some(json!("sora-2"))).unwrap_err();
        assert_eq!(refused.param.as_deref(), Some("model"));
        assert!(refused.message.contains("google/veo3-1-extend-video"), "{}", refused.message);
    }

    #[test]
    fn an_uploaded_clip_must_be_a_video_within_the_inline_limit() {
        let text = base64::engine::general_purpose::STANDARD.encode(b"not a video at all");
        assert!(inline_clip(&format!("data:video/mp4;base64,{text}")).is_err());
        let huge = "A".repeat((aimlvid::DEFAULT_MAX_INLINE_BYTES as usize / 3 + 2) * 4);
        let refused = inline_clip(&format!("data:video/mp4;base64,{huge}")).unwrap_err();
        assert!(refused.message.contains("20 MiB"), "{}", refused.message);
    }
}
