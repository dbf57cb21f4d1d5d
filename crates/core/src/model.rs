//! The API's request and response bodies, typed.
//!
//! Field names and values follow the upstream's OpenAPI documents; every
//! optional field left unset is omitted, so the server's default applies.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::input::VideoInput;

/// A body for `POST /v2/video/generations`: any model's request.
///
/// Implemented by [`ExtendVideo`] and [`GenericRequest`]; implement it for
/// your own typed request to send it with [`Client::create`](crate::Client::create).
pub trait CreateRequest: Serialize + Send + Sync {
    /// The model id, such as `google/veo3-1-fast-extend-video`.
    fn model(&self) -> &str;
}

/// The two Veo 3.1 models that extend an existing clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ExtendModel {
    /// `google/veo3-1-fast-extend-video`: the faster, cheaper one.
    #[default]
    #[serde(rename = "google/veo3-1-fast-extend-video")]
    Fast,
    /// `google/veo3-1-extend-video`: the standard one.
    #[serde(rename = "google/veo3-1-extend-video")]
    Standard,
}

impl ExtendModel {
    /// The model id as the API spells it.
    pub fn id(self) -> &'static str {
        match self {
            ExtendModel::Fast => "google/veo3-1-fast-extend-video",
            ExtendModel::Standard => "google/veo3-1-extend-video",
        }
    }
}

impl fmt::Display for ExtendModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// Aspect ratio of the generated video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum AspectRatio {
    /// Follow the input clip (the server's default).
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// Landscape.
    #[serde(rename = "16:9")]
    Landscape,
    /// Portrait.
    #[serde(rename = "9:16")]
    Portrait,
}

impl AspectRatio {
    /// The value as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AspectRatio::Auto => "auto",
            AspectRatio::Landscape => "16:9",
            AspectRatio::Portrait => "9:16",
        }
    }
}

impl FromStr for AspectRatio {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AspectRatio::Auto),
            "16:9" => Ok(AspectRatio::Landscape),
            "9:16" => Ok(AspectRatio::Portrait),
            other => Err(format!("aspect ratio must be auto, 16:9 or 9:16, not {other:?}")),
        }
    }
}

/// Output resolution. The extend models accept only 720p.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Resolution {
    /// 720p.
    #[default]
    #[serde(rename = "720p")]
    P720,
}

/// Which provider runs the job.
///
/// The API reads this case-insensitively; unknown values are kept so a
/// provider added upstream can still be named.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Provider {
    /// Google first, then fal.ai as fallback (the server's default).
    #[default]
    Auto,
    /// Native Google, no fallback.
    Google,
    /// The fal.ai mirror.
    Fal,
    /// A value this version does not know.
    Other(String),
}

impl Provider {
    /// The value as sent to the API.
    pub fn as_str(&self) -> &str {
        match self {
            Provider::Auto => "auto",
            Provider::Google => "google",
            Provider::Fal => "fal",
            Provider::Other(s) => s,
        }
    }
}

impl FromStr for Provider {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Provider::Auto,
            "google" => Provider::Google,
            "fal" => Provider::Fal,
            _ => Provider::Other(s.to_owned()),
        })
    }
}

impl Serialize for Provider {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse().unwrap_or_else(|never| match never {}))
    }
}

/// A request to extend a clip with `google/veo3-1-fast-extend-video` or
/// `google/veo3-1-extend-video`.
///
/// ```
/// use aimlvid::{AspectRatio, ExtendVideo, VideoInput};
///
/// let video = VideoInput::url("https://example.com/clip.mp4").unwrap();
/// let request = ExtendVideo::new("Add a fairy riding the raccoon", video)
///     .aspect_ratio(AspectRatio::Portrait)
///     .generate_audio(false);
/// let json = serde_json::to_value(&request).unwrap();
/// assert_eq!(json["model"], "google/veo3-1-fast-extend-video");
/// assert_eq!(json["aspect_ratio"], "9:16");
/// assert!(json.get("duration").is_none()); // unset: the server's default
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExtendVideo {
    /// Which extend model runs the job.
    pub model: ExtendModel,
    /// What should happen in the extension.
    pub prompt: String,
    /// The clip to extend: an HTTPS URL or a `data:` URI.
    pub video_url: String,
    /// Aspect ratio; server default `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<AspectRatio>,
    /// Length of the extension in seconds; the API accepts only 7 (its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u32>,
    /// Resolution; server default 720p.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// Whether to generate sound; server default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate_audio: Option<bool>,
    /// Let the server rewrite a prompt that fails content checks; server default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_fix: Option<bool>,
    /// Provider routing; server default `auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
}

/// Inline clips are megabytes of base64: `Debug` shows their size, as
/// [`VideoInput`]'s does, never their bytes.
impl std::fmt::Debug for ExtendVideo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let video_url = match self.video_url.split_once(',') {
            Some((header, _)) if header.starts_with("data:") => {
                format!("{header},<{} bytes>", self.video_url.len())
            }
            _ => self.video_url.clone(),
        };
        f.debug_struct("ExtendVideo")
            .field("model", &self.model)
            .field("prompt", &self.prompt)
            .field("video_url", &video_url)
            .field("aspect_ratio", &self.aspect_ratio)
            .field("duration", &self.duration)
            .field("resolution", &self.resolution)
            .field("generate_audio", &self.generate_audio)
            .field("auto_fix", &self.auto_fix)
            .field("provider", &self.provider)
            .finish()
    }
}

impl ExtendVideo {
    /// A request for the fast model with every optional field left to the server.
    pub fn new(prompt: impl Into<String>, video: VideoInput) -> Self {
        ExtendVideo {
            model: ExtendModel::Fast,
            prompt: prompt.into(),
            video_url: video.into_string(),
            aspect_ratio: None,
            duration: None,
            resolution: None,
            generate_audio: None,
            auto_fix: None,
            provider: None,
        }
    }

    /// Chooses the model.
    pub fn model(mut self, model: ExtendModel) -> Self {
        self.model = model;
        self
    }

    /// Sets the aspect ratio.
    pub fn aspect_ratio(mut self, aspect_ratio: AspectRatio) -> Self {
        self.aspect_ratio = Some(aspect_ratio);
        self
    }

    /// Sets the extension length in seconds (the API accepts only 7).
    pub fn duration(mut self, seconds: u32) -> Self {
        self.duration = Some(seconds);
        self
    }

    /// Sets the resolution.
    pub fn resolution(mut self, resolution: Resolution) -> Self {
        self.resolution = Some(resolution);
        self
    }

    /// Turns sound generation on or off.
    pub fn generate_audio(mut self, on: bool) -> Self {
        self.generate_audio = Some(on);
        self
    }

    /// Lets the server rewrite a prompt that fails its checks.
    pub fn auto_fix(mut self, on: bool) -> Self {
        self.auto_fix = Some(on);
        self
    }

    /// Chooses the provider.
    pub fn provider(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self
    }
}

impl CreateRequest for ExtendVideo {
    fn model(&self) -> &str {
        self.model.id()
    }
}

/// A request for any video model: its id plus the model's documented
/// parameters as JSON.
///
/// ```
/// use aimlvid::GenericRequest;
///
/// let request = GenericRequest::new("google/veo-3.1-t2v-fast")
///     .param("prompt", "A lighthouse at dusk")
///     .param("duration", 8);
/// let json = serde_json::to_value(&request).unwrap();
/// assert_eq!(json["model"], "google/veo-3.1-t2v-fast");
/// assert_eq!(json["duration"], 8);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenericRequest {
    /// The model id.
    pub model: String,
    /// Every other field of the body.
    #[serde(flatten)]
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl GenericRequest {
    /// A request for `model` with no parameters yet.
    pub fn new(model: impl Into<String>) -> Self {
        GenericRequest { model: model.into(), params: serde_json::Map::new() }
    }

    /// Adds or replaces one parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.params.insert(name.into(), value.into());
        self
    }
}

impl CreateRequest for GenericRequest {
    fn model(&self) -> &str {
        &self.model
    }
}

/// Where a generation is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// Waiting for a worker.
    Queued,
    /// Being generated.
    Generating,
    /// Done; the video is ready. Older pages of the API call it `complete`.
    Completed,
    /// Failed; see [`Generation::error`].
    Error,
    /// A status this version does not know; kept as sent.
    Other(String),
}

impl Status {
    /// The status as the API spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Queued => "queued",
            Status::Generating => "generating",
            Status::Completed => "completed",
            Status::Error => "error",
            Status::Other(s) => s,
        }
    }

    /// Whether the job has finished, well or badly: nothing will change any
    /// more. Besides `completed` and `error`, the words some models use for
    /// an end (`failed`, `cancelled`) count.
    pub fn is_finished(&self) -> bool {
        matches!(self, Status::Completed) || self.is_failure()
    }

    /// Whether the job ended without a result: `error`, or `failed`,
    /// `cancelled` (`canceled`) as some models say.
    pub fn is_failure(&self) -> bool {
        match self {
            Status::Error => true,
            Status::Other(s) => matches!(s.as_str(), "failed" | "cancelled" | "canceled"),
            _ => false,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&str> for Status {
    fn from(s: &str) -> Self {
        match s {
            "queued" => Status::Queued,
            "generating" => Status::Generating,
            "completed" | "complete" => Status::Completed,
            "error" => Status::Error,
            other => Status::Other(other.to_owned()),
        }
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Status::from(s.as_str()))
    }
}

/// A generation job as the API reports it, from create to completion.
///
/// Fields the API adds that this version does not know are kept in
/// [`Generation::extra`], so a proxy can pass them on unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Generation {
    /// The generation id: all that is needed to find the job again.
    pub id: String,
    /// Where the job is.
    pub status: Status,
    /// The result, once completed: one video, or (for models that make
    /// several, such as `bytedance/seedance-2-5`) a list of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<Videos>,
    /// Why it failed, once failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<GenerationError>,
    /// Usage, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    /// Any other fields, as sent.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// What the response headers of the call that returned this said
    /// (ids, cost), when there were any. Not part of the JSON.
    #[serde(skip)]
    pub receipt: Option<crate::Receipt>,
}

impl Generation {
    /// A generation known only by its id, in the given status.
    pub fn new(id: impl Into<String>, status: Status) -> Self {
        Generation {
            id: id.into(),
            status,
            video: None,
            error: None,
            meta: None,
            extra: Default::default(),
            receipt: None,
        }
    }

    /// The URL of the finished video, the first if there are several.
    pub fn video_url(&self) -> Option<&str> {
        self.video_urls().into_iter().next()
    }

    /// The URLs of every finished video, in the API's order.
    pub fn video_urls(&self) -> Vec<&str> {
        match &self.video {
            None => Vec::new(),
            Some(Videos::One(video)) => vec![video.url.as_str()],
            Some(Videos::Many(videos)) => videos.iter().map(|v| v.url.as_str()).collect(),
        }
    }

    /// The job itself, or [`Error::GenerationFailed`](crate::Error::GenerationFailed)
    /// with the API's reason if it ended without a result (`error`,
    /// `failed`, `cancelled`).
    pub fn into_result(self) -> crate::Result<Generation> {
        if !self.status.is_failure() {
            return Ok(self);
        }
        let (name, message) = match self.error {
            Some(e) => (e.name, e.message),
            None => ("Error".to_owned(), "the API gave no reason".to_owned()),
        };
        Err(crate::Error::GenerationFailed { id: self.id, name, message })
    }

    /// Credits the job cost, once the API has said.
    pub fn credits_used(&self) -> Option<f64> {
        self.meta.as_ref()?.usage.as_ref()?.credits_used
    }
}

/// A generation's result: most models give one video, some a list. Kept in
/// the shape the API used, so that it is written back the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Videos {
    /// `"video": {"url": …}`.
    One(Video),
    /// `"video": [{"url": …}, …]`.
    Many(Vec<Video>),
}

/// The finished video.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Video {
    /// Where to download it from. It may carry a signature: treat it as private.
    pub url: String,
}

/// Why a generation failed, as the API says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationError {
    /// A short error name.
    #[serde(default)]
    pub name: String,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
}

/// Additional details about a generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// What the job cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// What a generation cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Credits charged for the job; `None` while the API has not said
    /// (it may send `null`).
    #[serde(default)]
    pub credits_used: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_inline_clip_is_shown_by_its_size_in_debug_output() {
        let clip = format!("data:video/mp4;base64,{}", "A".repeat(10_000));
        let request = ExtendVideo {
            video_url: clip,
            ..ExtendVideo::new("p", VideoInput::url("https://x/a.mp4").unwrap())
        };
        let shown = format!("{request:?}");
        assert!(shown.contains("data:video/mp4;base64,<10022 bytes>"), "{shown}");
        assert!(shown.len() < 400, "{shown}");
    }

    #[test]
    fn failed_and_cancelled_end_a_job_as_failures_and_keep_their_words() {
        for word in ["failed", "cancelled", "canceled", "error"] {
            let status = Status::from(word);
            assert!(status.is_finished() && status.is_failure(), "{word}");
            assert_eq!(status.as_str(), word);
            let generation: Generation = serde_json::from_value(json!({"id": "g", "status": word})).unwrap();
            assert!(matches!(generation.into_result(), Err(crate::Error::GenerationFailed { .. })), "{word}");
        }
        for word in ["queued", "generating", "rendering"] {
            assert!(!Status::from(word).is_finished(), "{word}");
        }
        assert!(Status::from("completed").is_finished() && !Status::from("completed").is_failure());
    }

    #[test]
    fn a_result_may_be_one_video_or_several_and_keeps_its_shape() {
        let one: Generation = serde_json::from_value(
            json!({"id": "g", "status": "completed", "video": {"url": "https://a/1.mp4"}}),
        )
        .unwrap();
        assert_eq!(one.video_urls(), ["https://a/1.mp4"]);
        let many: Generation = serde_json::from_value(json!({
            "id": "g", "status": "completed",
            "video": [{"url": "https://a/1.mp4"}, {"url": "https://a/2.mp4"}],
            "meta": {"usage": {"credits_used": null}},
        }))
        .unwrap();
        assert_eq!(many.video_urls(), ["https://a/1.mp4", "https://a/2.mp4"]);
        assert_eq!(many.video_url(), Some("https://a/1.mp4"));
        assert_eq!(many.credits_used(), None, "null credits read as not known yet");
        let back = serde_json::to_value(&many).unwrap();
        assert!(back["video"].is_array(), "written back as it came: {back}");
    }

    #[test]
    fn statuses_parse_including_the_old_spelling_and_unknowns() {
        for (text, status) in [
            ("queued", Status::Queued),
            ("generating", Status::Generating),
            ("completed", Status::Completed),
            ("complete", Status::Completed),
            ("error", Status::Error),
            ("moderating", Status::Other("moderating".into())),
        ] {
            let parsed: Status = serde_json::from_value(json!(text)).unwrap();
            assert_eq!(parsed, status, "{text}");
        }
        assert_eq!(serde_json::to_value(Status::Completed).unwrap(), json!("completed"));
        assert!(!Status::Other("moderating".into()).is_finished());
    }

    #[test]
    fn a_completed_generation_round_trips_with_unknown_fields() {
        let body = json!({
            "id": "60ac7c34",
            "status": "completed",
            "video": {"url": "https://cdn.example/v.mp4"},
            "meta": {"usage": {"credits_used": 120000}},
            "created_at": 17
        });
        let generation: Generation = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(generation.video_url(), Some("https://cdn.example/v.mp4"));
        assert_eq!(generation.credits_used(), Some(120000.0));
        assert_eq!(generation.extra["created_at"], 17);
        assert_eq!(
            serde_json::to_value(&generation).unwrap(),
            json!({
                "id": "60ac7c34",
                "status": "completed",
                "video": {"url": "https://cdn.example/v.mp4"},
                "meta": {"usage": {"credits_used": 120000.0}},
                "created_at": 17
            })
        );
    }

    #[test]
    fn a_failed_generation_parses_nulls() {
        let body = json!({"id": "g", "status": "error", "video": null,
            "error": {"name": "GenerationError", "message": "blocked"}, "meta": null});
        let generation: Generation = serde_json::from_value(body).unwrap();
        assert_eq!(generation.error.as_ref().unwrap().message, "blocked");
        assert_eq!(generation.credits_used(), None);
    }

    #[test]
    fn every_documented_extend_field_serialises_as_documented() {
        let video = VideoInput::url("https://example.com/a.mp4").unwrap();
        let request = ExtendVideo::new("p", video)
            .model(ExtendModel::Standard)
            .aspect_ratio(AspectRatio::Landscape)
            .duration(7)
            .resolution(Resolution::P720)
            .generate_audio(true)
            .auto_fix(false)
            .provider("FAL".parse().unwrap());
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            json!({
                "model": "google/veo3-1-extend-video",
                "prompt": "p",
                "video_url": "https://example.com/a.mp4",
                "aspect_ratio": "16:9",
                "duration": 7,
                "resolution": "720p",
                "generate_audio": true,
                "auto_fix": false,
                "provider": "fal"
            })
        );
        let back: ExtendVideo = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
    }

    #[test]
    fn bad_aspect_ratios_say_what_is_accepted() {
        assert_eq!(
            "4:3".parse::<AspectRatio>().unwrap_err(),
            "aspect ratio must be auto, 16:9 or 9:16, not \"4:3\""
        );
    }
}
