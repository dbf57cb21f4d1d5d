//! Every video model of the universal endpoint: its family, its parameters,
//! and validation of a request **before** it is sent.
//!
//! The catalog is generated data: `cargo xtask codegen` builds
//! `models.json` from the upstream's OpenAPI documents (kept in the
//! repository under `crates/core/api/`), and CI checks it is up to date. The
//! simulator validates requests with the same code and table, so a request
//! this module accepts is one the simulator accepts, and the other way round.
//!
//! ```
//! use aimlvid::catalog::{self, Family};
//! use serde_json::json;
//!
//! let model = catalog::model("google/veo3-1-fast-extend-video").unwrap();
//! assert_eq!(model.family, Family::Extend);
//! let duration = model.parameter("duration").unwrap();
//! assert_eq!(duration.default, Some(json!(7)));
//!
//! let refused = catalog::validate(&json!({
//!     "model": "google/veo3-1-fast-extend-video",
//!     "prompt": "The raccoon looks up",
//!     "video_url": "https://example.com/clip.mp4",
//!     "duration": 9,
//! }))
//! .unwrap_err();
//! assert!(refused.to_string().contains("duration"));
//! ```

mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::{Map, Value};

pub use schema::Issue;

/// Where the upstream documents its models; quoted when a model is unknown.
pub const MODELS_DOC_URL: &str = "https://docs.aimlapi.com/api-references/video-models";

/// What a model makes, and from what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Family {
    /// A video from a prompt alone (an image may be optional).
    TextToVideo,
    /// A video from one or more images.
    ImageToVideo,
    /// A video made from another video: edits, restyles, motion transfer.
    VideoToVideo,
    /// A clip continued where it ends (the Veo 3.1 extend models).
    Extend,
    /// A talking or singing person from an image or video and an audio track
    /// (avatars, lip-sync).
    Avatar,
}

impl Family {
    /// Every family, in the order they are listed.
    pub const ALL: [Family; 5] =
        [Family::TextToVideo, Family::ImageToVideo, Family::VideoToVideo, Family::Extend, Family::Avatar];

    /// The family's name, as `--family` takes it: `text-to-video`, ….
    pub fn as_str(self) -> &'static str {
        match self {
            Family::TextToVideo => "text-to-video",
            Family::ImageToVideo => "image-to-video",
            Family::VideoToVideo => "video-to-video",
            Family::Extend => "extend",
            Family::Avatar => "avatar",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Family {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Family::ALL.into_iter().find(|f| f.as_str().eq_ignore_ascii_case(s)).ok_or_else(|| {
            let names: Vec<&str> = Family::ALL.iter().map(|f| f.as_str()).collect();
            format!("unknown family {s:?}; the families are {}", names.join(", "))
        })
    }
}

/// The kind of media a parameter takes, as a URL or a `data:` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MediaKind {
    /// A picture (`image/*`).
    Image,
    /// A clip (`video/*`).
    Video,
    /// A sound track (`audio/*`).
    Audio,
}

impl MediaKind {
    /// `image`, `video` or `audio`: also the MIME type's top-level type.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Video => "video",
            MediaKind::Audio => "audio",
        }
    }
}

impl fmt::Display for MediaKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON type a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ParamType {
    /// A string.
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A list.
    Array,
    /// An object.
    Object,
    /// One of several shapes (the schema's `anyOf`/`oneOf`), or unconstrained.
    Any,
}

impl ParamType {
    fn of(schema: &Value) -> ParamType {
        match schema.get("type").and_then(Value::as_str) {
            Some("string") => ParamType::String,
            Some("integer") => ParamType::Integer,
            Some("number") => ParamType::Number,
            Some("boolean") => ParamType::Boolean,
            Some("array") => ParamType::Array,
            Some("object") => ParamType::Object,
            _ => ParamType::Any,
        }
    }

    /// The type's JSON Schema name (`any` for [`ParamType::Any`]).
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Integer => "integer",
            ParamType::Number => "number",
            ParamType::Boolean => "boolean",
            ParamType::Array => "array",
            ParamType::Object => "object",
            ParamType::Any => "any",
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parameter of a model's request body.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Parameter {
    /// The body field, such as `duration`.
    pub name: String,
    /// Its JSON type.
    pub ty: ParamType,
    /// Whether a request must carry it.
    pub required: bool,
    /// The only values allowed, when the schema lists them.
    pub allowed: Vec<Value>,
    /// The smallest number allowed, if bounded.
    pub minimum: Option<f64>,
    /// The largest number allowed, if bounded.
    pub maximum: Option<f64>,
    /// What the upstream uses when the field is left out, of the declared
    /// type (the documents write some as strings; they are normalised).
    pub default: Option<Value>,
    /// The kind of media it takes, for URL-valued parameters.
    pub media: Option<MediaKind>,
    /// The parameter's schema, as the upstream documents it.
    pub schema: Value,
}

impl Parameter {
    /// Whether it takes a list (of media URLs, for a media parameter).
    pub fn is_list(&self) -> bool {
        self.ty == ParamType::Array
    }
}

/// A model of the universal video endpoint.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ModelSpec {
    /// The model id, such as `google/veo3-1-fast-extend-video`.
    pub id: String,
    /// What it makes, and from what.
    pub family: Family,
    /// Its request parameters other than `model`, required ones first, then
    /// by name.
    pub parameters: Vec<Parameter>,
    /// The whole request-body schema, as the upstream documents it.
    pub schema: Value,
    /// Whether its finished job may list several videos (`video` as an
    /// array), as the upstream documents for a few models.
    pub several_results: bool,
}

impl ModelSpec {
    /// The parameter called `name`.
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| p.name == name)
    }

    /// The parameter whose name is closest to `name`, when one is close
    /// enough to be what was meant (`durration` → `duration`).
    pub fn suggest_parameter(&self, name: &str) -> Option<&Parameter> {
        let lowered = name.to_lowercase();
        self.parameters
            .iter()
            .map(|p| (strsim::jaro_winkler(&lowered, &p.name.to_lowercase()), p))
            .filter(|(score, _)| *score > 0.85)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p)
    }

    /// The parameters that take media.
    pub fn media_parameters(&self) -> impl Iterator<Item = &Parameter> {
        self.parameters.iter().filter(|p| p.media.is_some())
    }

    /// Checks a whole request body (with `model`) against this model's
    /// schema.
    pub fn validate(&self, body: &Value) -> Result<(), Invalid> {
        let mut issues = Vec::new();
        schema::check(&self.schema, body, &mut Vec::new(), None, &mut issues);
        if issues.is_empty() { Ok(()) } else { Err(Invalid::Refused { model: self.id.clone(), issues }) }
    }

    /// A model known only by its request-body schema (from an OpenAPI
    /// document read at run time, say), read as `cargo xtask codegen`
    /// reads the built-in ones: media parameters are the URL-valued ones,
    /// their kind told by their names, and its family by the media it
    /// requires.
    pub fn from_schema(id: impl Into<String>, schema: Value) -> ModelSpec {
        let id = id.into();
        let schema = normalise_defaults(schema);
        let media: BTreeMap<String, MediaKind> = schema
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(name, property)| Some((name.clone(), media_kind(name, property)?)))
            .collect();
        let required: Vec<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let requires = |kind: MediaKind| required.iter().any(|name| media.get(*name) == Some(&kind));
        let named = |words: &[&str]| words.iter().any(|w| id.contains(w));
        let family = if requires(MediaKind::Audio) || named(&["lip-sync", "avatar"]) {
            Family::Avatar
        } else if id.contains("extend") {
            Family::Extend
        } else if requires(MediaKind::Video) || named(&["v2v", "video-to-video"]) {
            Family::VideoToVideo
        } else if requires(MediaKind::Image) || named(&["i2v", "image-to-video"]) {
            Family::ImageToVideo
        } else {
            Family::TextToVideo
        };
        spec(id, Entry { family, media, schema, several_results: false })
    }

    /// A model from the OpenAPI document the API links for it
    /// (`info.docsJson` in its catalogue): the request body of
    /// `POST /v2/video/generations`, with the document's local `$ref`s
    /// inlined. Refused when the document describes no such request, or
    /// one for other models only.
    pub fn from_openapi(id: impl Into<String>, document: &Value) -> Result<ModelSpec, DocumentError> {
        let id = id.into();
        let raw = document
            .pointer("/paths/~1v2~1video~1generations/post/requestBody/content/application~1json/schema")
            .ok_or_else(|| DocumentError::NoVideoRequest { model: id.clone() })?;
        let schema =
            inline_refs(document, raw, 0).ok_or_else(|| DocumentError::BrokenRef { model: id.clone() })?;
        let named = schema
            .pointer("/properties/model")
            .map(|m| m.get("enum").and_then(Value::as_array).into_iter().flatten().chain(m.get("const")))
            .map(|mut ids| ids.any(|named| named.as_str() == Some(id.as_str())));
        if named == Some(false) {
            return Err(DocumentError::OtherModel { model: id });
        }
        Ok(ModelSpec::from_schema(id, schema))
    }

    /// A smallest body the schema accepts, with placeholder values
    /// (`https://example.com/…` for media): a starting point for a request,
    /// and what the tests send for every model.
    pub fn example(&self) -> Value {
        example_of(&self.schema)
    }
}

/// Why a model's OpenAPI document could not be read as its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// It describes no `POST /v2/video/generations` body.
    #[error(
        "the OpenAPI document of {model} describes no POST /v2/video/generations request body; the API checks its requests alone"
    )]
    NoVideoRequest {
        /// The model.
        model: String,
    },
    /// A `$ref` is not local, dangles, or nests too deep.
    #[error(
        "the OpenAPI document of {model} has a $ref that cannot be followed; the API checks its requests alone"
    )]
    BrokenRef {
        /// The model.
        model: String,
    },
    /// Its request body names other models only.
    #[error(
        "the OpenAPI document linked for {model} describes other models; the API checks its requests alone"
    )]
    OtherModel {
        /// The model.
        model: String,
    },
}

/// `$ref` chains deeper than this are taken for a broken document.
const MAX_REF_DEPTH: usize = 32;

/// `value` with the document's local `$ref`s (`#/...`) inlined; `None` for
/// one that cannot be followed.
fn inline_refs(document: &Value, value: &Value, depth: usize) -> Option<Value> {
    if depth > MAX_REF_DEPTH {
        return None;
    }
    Some(match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let target = document.pointer(reference.strip_prefix('#')?)?;
                return inline_refs(document, target, depth + 1);
            }
            let mut out = Map::new();
            for (key, v) in map {
                out.insert(key.clone(), inline_refs(document, v, depth)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| inline_refs(document, v, depth)).collect::<Option<_>>()?)
        }
        other => other.clone(),
    })
}

/// Defaults written as strings on numeric or boolean properties become
/// values of the declared type, as codegen makes them for built-in models.
fn normalise_defaults(mut schema: Value) -> Value {
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        for property in properties.values_mut() {
            let Value::Object(property) = property else { continue };
            let ty = property.get("type").and_then(Value::as_str).map(str::to_owned);
            let Some(Value::String(text)) = property.get("default") else { continue };
            let typed = match ty.as_deref() {
                Some("integer") => text.parse::<i64>().ok().map(Value::from),
                Some("number") => text.parse::<f64>().ok().map(Value::from),
                Some("boolean") => text.parse::<bool>().ok().map(Value::from),
                _ => None,
            };
            if let Some(typed) = typed {
                property.insert("default".into(), typed);
            }
        }
    }
    schema
}

/// The kind of media a top-level parameter takes, if any: a URL-valued
/// string (or list), named for what it holds; as codegen tells them.
fn media_kind(name: &str, schema: &Value) -> Option<MediaKind> {
    fn is_uri(schema: &Value) -> bool {
        let uri = |s: &Value| s.get("format").and_then(Value::as_str) == Some("uri");
        uri(schema)
            || schema.get("items").is_some_and(uri)
            || ["anyOf", "oneOf"]
                .iter()
                .any(|key| schema.get(*key).and_then(Value::as_array).is_some_and(|b| b.iter().any(is_uri)))
    }
    if !(is_uri(schema) || name.ends_with("_url") || name.ends_with("_urls")) {
        return None;
    }
    Some(if name.contains("audio") {
        MediaKind::Audio
    } else if name.contains("video") || name.starts_with("alpha") {
        MediaKind::Video
    } else {
        MediaKind::Image
    })
}

/// Why a request was refused before it was sent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// The body is not a JSON object.
    #[error("the request body must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    /// The body names no model.
    #[error("the request names no model; list them with `aimlvid models` or see {MODELS_DOC_URL}")]
    MissingModel,
    /// The model is not in the catalog.
    #[error("unknown model {given:?}{}; list them with `aimlvid models` or see {MODELS_DOC_URL}",
        .suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    UnknownModel {
        /// The id given (shortened if long).
        given: String,
        /// The closest catalog id, if one is close.
        suggestion: Option<String>,
    },
    /// The model's schema refuses the body.
    #[error("{model} does not accept this request:{}", describe(.issues))]
    Refused {
        /// The model id.
        model: String,
        /// Each problem, in zod's shape.
        issues: Vec<Issue>,
    },
}

/// One line per issue: the field, what was given, what is allowed.
fn describe(issues: &[Issue]) -> String {
    let mut text = String::new();
    for issue in issues {
        let expected = match issue.detail("expected").and_then(Value::as_str) {
            Some("unknown") | None => String::new(),
            Some(ty) => format!(" ({ty})"),
        };
        let line = if issue.detail("received").and_then(Value::as_str) == Some("undefined") {
            format!("{} is required{expected} but was not given", issue.field())
        } else {
            format!("{}: {}", issue.field(), issue.message)
        };
        text.push_str("\n  - ");
        text.push_str(&line);
    }
    text
}

/// Validates a whole create body: its `model` must be in the catalog and
/// the rest must fit that model's schema. Returns the model.
pub fn validate(body: &Value) -> Result<&'static ModelSpec, Invalid> {
    let Value::Object(map) = body else {
        return Err(Invalid::NotAnObject(schema::type_name(body)));
    };
    let id = match map.get("model") {
        Some(Value::String(id)) => id,
        Some(_) | None => return Err(Invalid::MissingModel),
    };
    let spec = model(id).ok_or_else(|| Invalid::UnknownModel {
        given: schema::truncate(id, 80),
        suggestion: suggest(id).map(str::to_owned),
    })?;
    spec.validate(body)?;
    Ok(spec)
}

/// Every model, sorted by id.
pub fn models() -> impl Iterator<Item = &'static ModelSpec> {
    CATALOG.values()
}

/// The model with this id.
pub fn model(id: &str) -> Option<&'static ModelSpec> {
    CATALOG.get(id)
}

/// The model called `name`: by its id, or by the alias the API gives every
/// model, its id without the developer (`veo3-1-fast-extend-video`) when
/// that names one model only.
pub fn resolve(name: &str) -> Option<&'static ModelSpec> {
    model(name).or_else(|| {
        let mut named = models().filter(|m| m.id.split_once('/').is_some_and(|(_, alias)| alias == name));
        // An alias two developers share names neither.
        named.next().filter(|_| named.next().is_none())
    })
}

/// Models whose id contains `text` (ignoring case; empty matches all), of
/// `family` if given, sorted by id.
pub fn search(text: &str, family: Option<Family>) -> Vec<&'static ModelSpec> {
    let text = text.to_lowercase();
    models()
        .filter(|m| family.is_none_or(|f| m.family == f))
        .filter(|m| m.id.to_lowercase().contains(&text))
        .collect()
}

/// The catalog id closest to a mistyped one, if any is close enough to be
/// what was meant.
pub fn suggest(id: &str) -> Option<&'static str> {
    let lowered = id.to_lowercase();
    models()
        .map(|m| (strsim::jaro_winkler(&lowered, &m.id.to_lowercase()), m.id.as_str()))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, id)| id)
}

/// A model id, or a pattern of them where `*` stands for any run of
/// characters (`google/*`, `*-text-to-video`): what a team key's allowlist
/// holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelPattern(String);

impl ModelPattern {
    /// A pattern; refuses an empty one.
    pub fn new(pattern: impl Into<String>) -> Result<Self, String> {
        let pattern = pattern.into();
        if pattern.trim().is_empty() {
            return Err("a model pattern cannot be empty".to_owned());
        }
        Ok(ModelPattern(pattern))
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `id` fits the pattern (case matters, as in model ids).
    pub fn matches(&self, id: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = id.strip_prefix(first) else { return false };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty(); // no `*`: the whole id
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }

    /// The catalog's models that fit the pattern.
    pub fn models(&self) -> impl Iterator<Item = &'static ModelSpec> + '_ {
        models().filter(|m| self.matches(&m.id))
    }
}

impl fmt::Display for ModelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One generated entry of `models.json`.
#[derive(Deserialize)]
struct Entry {
    family: Family,
    media: BTreeMap<String, MediaKind>,
    schema: Value,
    #[serde(default)]
    several_results: bool,
}

static CATALOG: LazyLock<BTreeMap<String, ModelSpec>> = LazyLock::new(|| {
    // Generated and checked by `cargo xtask codegen --check`; a parse failure
    // is a build defect, which this module's tests catch.
    let entries: BTreeMap<String, Entry> =
        serde_json::from_str(include_str!("models.json")).expect("models.json matches the catalog's shape");
    entries.into_iter().map(|(id, entry)| (id.clone(), spec(id, entry))).collect()
});

fn spec(id: String, entry: Entry) -> ModelSpec {
    let required: Vec<&str> = entry
        .schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let empty = Map::new();
    let properties = entry.schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let mut parameters: Vec<Parameter> = properties
        .iter()
        .filter(|(name, _)| name.as_str() != "model")
        .map(|(name, schema)| Parameter {
            name: name.clone(),
            ty: ParamType::of(schema),
            required: required.contains(&name.as_str()),
            allowed: schema.get("enum").and_then(Value::as_array).cloned().unwrap_or_default(),
            minimum: schema.get("minimum").or_else(|| schema.get("exclusiveMinimum")).and_then(Value::as_f64),
            maximum: schema.get("maximum").or_else(|| schema.get("exclusiveMaximum")).and_then(Value::as_f64),
            default: schema.get("default").cloned(),
            media: entry.media.get(name).copied(),
            schema: schema.clone(),
        })
        .collect();
    parameters.sort_by(|a, b| b.required.cmp(&a.required).then_with(|| a.name.cmp(&b.name)));
    ModelSpec {
        id,
        family: entry.family,
        parameters,
        schema: entry.schema,
        several_results: entry.several_results,
    }
}

/// The smallest value `schema` accepts, built from the schema alone.
fn example_of(schema: &Value) -> Value {
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = schema.get(key).and_then(|b| b.get(0)) {
            return example_of(first);
        }
    }
    let min = |key: &str| schema.get(key).and_then(Value::as_f64);
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => match schema.get("format").and_then(Value::as_str) {
            Some("uri") => Value::from("https://example.com/asset.mp4"),
            Some("uuid") => Value::from("60ac7c34-3224-4b14-8e7d-0aa0db708325"),
            _ => Value::from("x".repeat(min("minLength").unwrap_or(1.0) as usize)),
        },
        Some("integer") => Value::from(min("minimum").unwrap_or(1.0) as i64),
        Some("number") => Value::from(min("minimum").unwrap_or(1.0)),
        Some("boolean") => Value::from(false),
        Some("array") => {
            let item = example_of(schema.get("items").unwrap_or(&Value::Null));
            let n = min("minItems").unwrap_or(0.0) as usize;
            Value::Array(vec![item; n])
        }
        Some("object") => {
            let mut out = Map::new();
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                let property = schema.get("properties").and_then(|p| p.get(name));
                out.insert(name.into(), example_of(property.unwrap_or(&Value::Null)));
            }
            Value::Object(out)
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use serde_json::json;

    #[test]
    fn the_catalog_holds_every_documented_model() {
        // 141 named by the pages' schemas, and the 2 whose pages copy a
        // sibling's, from the API-wide create schema (crates/core/api/README.md).
        assert_eq!(models().count(), 143);
        let extend: Vec<&str> = search("", Some(Family::Extend)).iter().map(|m| m.id.as_str()).collect();
        assert_eq!(extend, ["google/veo3-1-extend-video", "google/veo3-1-fast-extend-video"]);
        for family in Family::ALL {
            assert!(!search("", Some(family)).is_empty(), "no model of family {family}");
        }
    }

    #[test]
    fn string_defaults_on_integers_are_numbers() {
        for model in models() {
            for p in &model.parameters {
                if let (ParamType::Integer, Some(default)) = (p.ty, &p.default) {
                    assert!(default.is_i64(), "{}.{}: default {default}", model.id, p.name);
                }
            }
        }
    }

    #[test]
    fn media_parameters_know_their_kind() {
        let omnihuman = model("bytedance/omnihuman").unwrap();
        assert_eq!(omnihuman.family, Family::Avatar);
        assert_eq!(omnihuman.parameter("audio_url").unwrap().media, Some(MediaKind::Audio));
        assert_eq!(omnihuman.parameter("image_url").unwrap().media, Some(MediaKind::Image));
        let multi = model("kling-video/v1.6/standard/multi-image-to-video").unwrap();
        let list = multi.parameter("image_list").unwrap();
        assert_eq!((list.media, list.is_list(), list.required), (Some(MediaKind::Image), true, true));
        assert_eq!(model("google/veo-3.1-t2v").unwrap().media_parameters().count(), 0);
        let several: Vec<&str> = models().filter(|m| m.several_results).map(|m| m.id.as_str()).collect();
        assert!(several.contains(&"bytedance/seedance-2-5") && several.len() >= 12, "{several:?}");
    }

    #[test]
    fn every_models_example_is_valid() {
        for model in models() {
            let body = model.example();
            assert_eq!(body["model"], json!(model.id));
            assert_eq!(validate(&body).map(|m| &m.id), Ok(&model.id), "{body}");
        }
    }

    #[test]
    fn refusals_name_the_model_the_field_what_was_given_and_what_is_allowed() {
        let body = json!({"model": "google/veo3-1-fast-extend-video", "prompt": "x", "duration": 9});
        let message = validate(&body).unwrap_err().to_string();
        assert!(
            message.starts_with("google/veo3-1-fast-extend-video does not accept this request:"),
            "{message}"
        );
        assert!(message.contains("video_url is required (string) but was not given"), "{message}");
        assert!(message.contains("duration: Invalid enum value. Expected 7, received 9"), "{message}");
    }

    #[test]
    fn unknown_models_get_a_suggestion() {
        let refused = validate(&json!({"model": "google/veo3-1-fast-extend-vdeo"})).unwrap_err();
        assert!(
            refused.to_string().contains("did you mean \"google/veo3-1-fast-extend-video\""),
            "{refused}"
        );
        assert_eq!(suggest("something/else-entirely-unlike-any"), None);
        assert_eq!(validate(&json!([])).unwrap_err(), Invalid::NotAnObject("array"));
    }

    #[test]
    fn patterns_match_ids_with_stars_anywhere() {
        let fits = |pattern: &str, id: &str| ModelPattern::new(pattern).unwrap().matches(id);
        assert!(fits("google/*", "google/veo3"));
        assert!(!fits("google/*", "googles/veo3"));
        assert!(fits("*-text-to-video", "klingai/v2.1-master-text-to-video"));
        assert!(!fits("*-text-to-video", "klingai/v2.1-master-text-to-video-x"));
        assert!(fits("google/veo3", "google/veo3"));
        assert!(!fits("google/veo3", "google/veo3-1-extend-video"));
        assert!(fits("*veo*extend*", "google/veo3-1-fast-extend-video"));
        assert!(fits("a*a", "aa") && !fits("a*a", "a"));
        assert!(fits("*", "anything"));
        assert_eq!(ModelPattern::new("*-extend-video").unwrap().models().count(), 2);
        assert!(ModelPattern::new(" ").is_err());
    }

    #[test]
    fn issues_name_nested_fields_as_a_reader_writes_them() {
        let issue =
            Issue::new(&[json!("keyframes"), json!("frame0"), json!("url")], "invalid_string", "Invalid url");
        assert_eq!(issue.field(), "keyframes.frame0.url");
        assert_eq!(Issue::new(&[json!("image_list"), json!(2)], "x", "y").field(), "image_list[2]");
        assert_eq!(Issue::new(&[], "x", "y").field(), "body");
    }
}
