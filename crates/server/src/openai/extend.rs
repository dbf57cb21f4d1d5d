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
        Source::Clip(data_uri) => {
            // Decoding and reading up to 20 MiB takes a while: off the
            // threads that answer requests.
            let clip = tokio::task::spawn_blocking(move || inline_clip(&data_uri))
                .await
                .map_err(|e| OpenAiError::internal(&e))??;
            // As for a video by id: the clip's own shape, said outright.
            if let Some(aspect) = clip.frame.and_then(|(w, h)| map::aspect_of_frame(spec, w, h)) {
                body.insert("aspect_ratio".into(), Value::from(aspect));
            }
            clip.url
        }
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

/// An uploaded clip, checked.
#[derive(Debug)]
struct Clip {
    /// The clip as the upstream takes it inline.
    url: String,
    /// Its frame as shown (width, height), when its container says.
    frame: Option<(u32, u32)>,
}

/// An uploaded clip, as the upstream takes it inline: a video, within the
/// size the library sends inline.
fn inline_clip(data_uri: &str) -> Result<Clip, OpenAiError> {
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
    Ok(Clip { url: clip.into_string(), frame: frame_of(&bytes) })
}

/// The frame of an MP4 or QuickTime clip's first video track as it is
/// shown: its track header's size, turned by a quarter if the track is;
/// `None` for other containers, or a header that says nothing.
fn frame_of(bytes: &[u8]) -> Option<(u32, u32)> {
    let context = mp4parse::read_mp4(&mut std::io::Cursor::new(bytes)).ok()?;
    let track = context.tracks.iter().find(|t| t.track_type == mp4parse::TrackType::Video)?;
    let header = track.tkhd.as_ref()?;
    // Sizes are 16.16 fixed point.
    let (w, h) = (header.width >> 16, header.height >> 16);
    let quarter_turn = header.matrix.a == 0 && header.matrix.d == 0;
    let (w, h) = if quarter_turn { (h, w) } else { (w, h) };
    (w > 0 && h > 0).then_some((w, h))
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

    /// The sample clip with its video track header's size and turn
    /// rewritten: (width, height) and whether it is turned a quarter.
    fn reshaped(width: u32, height: u32, quarter_turn: bool) -> Vec<u8> {
        let mut clip = aimlvid_sim::SAMPLE_INPUT.to_vec();
        // The first `tkhd` is the video track's. After its type (version
        // 0): 36 bytes of fields, the 3x3 matrix (36), width, height.
        let at = clip.windows(4).position(|w| w == b"tkhd").unwrap() + 4;
        assert_eq!(clip[at], 0, "a version 0 track header");
        let (matrix, size) = (at + 40, at + 76);
        if quarter_turn {
            // The matrix is stored a, b, u, c, d, v, x, y, w: a quarter turn
            // has a = d = 0, b = 1, c = -1 (16.16).
            for (i, v) in [(0, 0i32), (1, 0x10000), (3, -0x10000), (4, 0)] {
                clip[matrix + 4 * i..matrix + 4 * i + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        clip[size..size + 4].copy_from_slice(&(width << 16).to_be_bytes());
        clip[size + 4..size + 8].copy_from_slice(&(height << 16).to_be_bytes());
        clip
    }

    #[test]
    fn an_uploaded_clips_shape_is_read_from_its_track_header() {
        assert_eq!(frame_of(&reshaped(320, 180, false)), Some((320, 180)));
        assert_eq!(frame_of(&reshaped(180, 320, false)), Some((180, 320)));
        assert_eq!(frame_of(&reshaped(320, 180, true)), Some((180, 320)), "a phone's turned clip");
        assert_eq!(frame_of(&reshaped(0, 0, false)), None);
        assert_eq!(frame_of(b"\x1a\x45\xdf\xa3 a WebM header and nothing more"), None);
        let spec = aimlvid::catalog::model(DEFAULT_MODEL).unwrap();
        assert_eq!(map::aspect_of_frame(spec, 180, 320).as_deref(), Some("9:16"));
        assert_eq!(map::aspect_of_frame(spec, 640, 480), None, "4:3 stays auto");
    }

    #[test]
    fn an_uploaded_clip_must_be_a_video_within_the_inline_limit() {
        let text = base64::engine::general_purpose::STANDARD.encode(b"not a video at all");
        let sample = base64::engine::general_purpose::STANDARD.encode(aimlvid_sim::SAMPLE_INPUT);
        let clip = inline_clip(&format!("data:video/mp4;base64,{sample}")).unwrap();
        assert_eq!(clip.frame, Some((320, 180)), "the sample's frame, from its track header");
        assert!(clip.url.starts_with("data:video/mp4;base64,"));
        assert!(inline_clip(&format!("data:video/mp4;base64,{text}")).is_err());
        let huge = "A".repeat((aimlvid::DEFAULT_MAX_INLINE_BYTES as usize / 3 + 2) * 4);
        let refused = inline_clip(&format!("data:video/mp4;base64,{huge}")).unwrap_err();
        assert!(refused.message.contains("20 MiB"), "{}", refused.message);
    }
}
