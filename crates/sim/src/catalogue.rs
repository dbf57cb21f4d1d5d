//! `GET /v1/models`: the live model catalogue, as the upstream serves it
//! (no key needed, filters, `include` sections, an ETag), listing the video
//! models the simulator validates. With `include=pricing` each carries a
//! `fixed` price per generation: what the simulator charges a create, in
//! US dollars. Models can be added and dropped ([`AddedModel`],
//! [`Simulator::add_model`], [`Simulator::drop_model`]), as the upstream's
//! catalogue moves under a build's feet.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::Simulator;
use crate::service::CREDITS_PER_USD;
use aimlvid::catalog::{self, MediaKind, ModelSpec};
use std::collections::{BTreeMap, BTreeSet};

/// A model the simulator lists and accepts beyond the built-in catalog.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct AddedModel {
    /// Its id, such as `sim/lumen-1`.
    pub id: String,
    /// Other names a create may give it; listed as `aliases`.
    pub aliases: Vec<String>,
    /// Its request body's JSON Schema: creates are validated against it,
    /// with the same checker as the built-in models.
    pub schema: Value,
}

impl AddedModel {
    /// A model of this id and request schema, whose alias is its id
    /// without the developer (`sim/lumen-1` → `lumen-1`), as the upstream
    /// names its models' aliases.
    pub fn new(id: impl Into<String>, schema: Value) -> Self {
        let id = id.into();
        let alias = id.split_once('/').map_or(id.as_str(), |(_, alias)| alias).to_owned();
        AddedModel { aliases: vec![alias], id, schema }
    }

    /// A text-to-video model of this id: a required `prompt` and a
    /// `duration` of 5 or 10 seconds (5 when left out).
    pub fn text_to_video(id: impl Into<String>) -> Self {
        let id = id.into();
        let schema = json!({
            "type": "object",
            "properties": {
                "model": {"type": "string", "enum": [id]},
                "prompt": {"type": "string"},
                "duration": {"type": "integer", "enum": [5, 10], "default": 5},
            },
            "required": ["model", "prompt"],
        });
        AddedModel::new(id, schema)
    }
}

/// How the models listed differ from the built-in catalog: small, so a
/// create copies it rather than validating under the lock.
#[derive(Debug, Default, Clone)]
pub(crate) struct Listed {
    added: BTreeMap<String, (AddedModel, ModelSpec)>,
    dropped: BTreeSet<String>,
}

impl Listed {
    pub(crate) fn add(&mut self, model: AddedModel) {
        self.dropped.remove(&model.id);
        let spec = ModelSpec::from_schema(model.id.clone(), model.schema.clone());
        self.added.insert(model.id.clone(), (model, spec));
    }

    /// Whether `id` was listed before.
    pub(crate) fn drop(&mut self, id: &str) -> bool {
        let added = self.added.remove(id).is_some();
        let built_in = catalog::model(id).is_some() && self.dropped.insert(id.to_owned());
        added || built_in
    }

    /// The added model a create names, by id or alias.
    pub(crate) fn added(&self, name: &str) -> Option<&ModelSpec> {
        self.added
            .values()
            .find(|(model, _)| model.id == name || model.aliases.iter().any(|a| a == name))
            .map(|(_, spec)| spec)
    }

    /// Whether a built-in model is no longer listed.
    pub(crate) fn is_dropped(&self, id: &str) -> bool {
        self.dropped.contains(id)
    }

    /// Every listed model, built-in ones first.
    fn entries(&self) -> Vec<Entry> {
        let built_in =
            catalog::models().filter(|m| !self.dropped.contains(&m.id)).map(|m| Entry::of(m, None));
        built_in
            .chain(self.added.values().map(|(model, spec)| Entry::of(spec, Some(&model.aliases))))
            .collect()
    }
}

impl Simulator {
    /// Lists `model` in `GET /v1/models` from now on and accepts creates
    /// for it (validated against its schema), as the upstream adds a model
    /// a build does not know. Replaces an added model of the same id.
    pub fn add_model(&self, model: AddedModel) {
        self.lock().listed.add(model);
    }

    /// Stops listing the model `id` in `GET /v1/models`, and refuses
    /// creates for it as an unknown model, as the upstream retires one.
    /// Returns whether it was listed.
    pub fn drop_model(&self, id: &str) -> bool {
        self.lock().listed.drop(id)
    }
}

/// The endpoint type the universal video endpoint's models carry.
const VIDEO_TYPE: &str = "video";

/// Optional sections a request asked for.
#[derive(Debug, Default)]
struct Sections {
    pricing: bool,
    modalities: bool,
    capabilities: bool,
}

/// A parsed query: sections and filters (each filter a set of accepted values).
#[derive(Debug, Default)]
struct Query {
    sections: Sections,
    ids: Vec<String>,
    types: Vec<String>,
    tags: Vec<String>,
    modalities: Vec<String>,
    input_modalities: Vec<String>,
    output_modalities: Vec<String>,
    capabilities: Vec<String>,
}

impl Query {
    fn parse(uri: &Uri) -> Query {
        let mut query = Query::default();
        let pairs =
            uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect::<Vec<_>>());
        for (name, value) in pairs.unwrap_or_default() {
            // Comma-separated and repeated values are both accepted.
            let values = value.split(',').map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned);
            let list = match name.as_str() {
                "include" => {
                    for section in values {
                        match section.as_str() {
                            "pricing" => query.sections.pricing = true,
                            "modalities" => query.sections.modalities = true,
                            "capabilities" => query.sections.capabilities = true,
                            "all" => {
                                query.sections =
                                    Sections { pricing: true, modalities: true, capabilities: true }
                            }
                            // Unknown sections are ignored, not refused.
                            _ => {}
                        }
                    }
                    continue;
                }
                "details" if matches!(value.as_str(), "true" | "1") => {
                    query.sections = Sections { pricing: true, modalities: true, capabilities: true };
                    continue;
                }
                "id" => &mut query.ids,
                "type" => &mut query.types,
                "tags" => &mut query.tags,
                "modalities" => &mut query.modalities,
                "input_modalities" => &mut query.input_modalities,
                "output_modalities" => &mut query.output_modalities,
                "capabilities" => &mut query.capabilities,
                _ => continue,
            };
            list.extend(values);
        }
        query
    }
}

/// What the catalogue says of one model, whatever was asked.
struct Entry {
    id: String,
    aliases: Vec<String>,
    input: Vec<&'static str>,
    capabilities: Vec<&'static str>,
}

impl Entry {
    fn of(model: &ModelSpec, aliases: Option<&Vec<String>>) -> Entry {
        let takes = |kind: MediaKind| model.media_parameters().any(|p| p.media == Some(kind));
        let mut input = vec!["text"];
        let mut capabilities = Vec::new();
        if takes(MediaKind::Image) {
            input.push("image");
            capabilities.push("image_to_video");
        }
        if takes(MediaKind::Video) {
            input.push("video");
            capabilities.push("video_to_video");
        }
        if takes(MediaKind::Audio) {
            input.push("audio");
        }
        if capabilities.is_empty() {
            capabilities.push("text_to_video");
        }
        let id = model.id.as_str();
        let aliases = aliases
            .cloned()
            .unwrap_or_else(|| vec![id.split_once('/').map_or(id, |(_, alias)| alias).to_owned()]);
        Entry { id: id.to_owned(), aliases, input, capabilities }
    }

    fn keep(&self, query: &Query) -> bool {
        let any = |wanted: &[String], have: &[&str]| {
            wanted.is_empty() || wanted.iter().any(|w| have.contains(&w.as_str()))
        };
        (query.ids.is_empty() || query.ids.iter().any(|w| *w == self.id || self.aliases.contains(w)))
            && any(&query.types, &[VIDEO_TYPE])
            && any(&query.tags, &["playground:video"])
            && any(&query.modalities, &[&self.input[..], &["video"]].concat())
            && any(&query.input_modalities, &self.input)
            && any(&query.output_modalities, &["video"])
            && any(&query.capabilities, &self.capabilities)
    }

    fn render(&self, sections: &Sections, usd_per_job: f64, docs: &str) -> Value {
        let developer = self.id.split_once('/').map_or("", |(vendor, _)| vendor);
        let mut entry = json!({
            "id": self.id,
            "aliases": self.aliases,
            "type": VIDEO_TYPE,
            "info": {
                "name": self.aliases.first().unwrap_or(&self.id),
                "developer": developer,
                "docsJson": format!(
                    "{docs}/docs-json?model={}&endpoint=video",
                    url::form_urlencoded::byte_serialize(self.id.as_bytes()).collect::<String>()
                ),
            },
            "tags": ["playground:video"],
        });
        if sections.modalities {
            entry["modalities"] = json!({"input": self.input, "output": ["video"]});
        }
        if sections.capabilities {
            entry["capabilities"] = json!(self.capabilities);
        }
        if sections.pricing {
            entry["pricing"] = json!({
                "kind": "fixed",
                "currency": "USD",
                "units": [{"price": usd_per_job, "per": "generation"}],
            });
        }
        entry
    }
}

/// `GET /v1/models`: no key needed; answers 304 to a matching `If-None-Match`.
pub(crate) async fn models(State(sim): State<Simulator>, headers: HeaderMap, uri: Uri) -> Response {
    let query = Query::parse(&uri);
    let usd_per_job = sim.config().credits_per_job / CREDITS_PER_USD;
    // Documents are linked on the host asked, as the upstream links its own.
    let docs = match headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => "https://api.aimlapi.com".to_owned(),
    };
    let entries = sim.lock().listed.entries();
    let data: Vec<Value> = entries
        .into_iter()
        .filter(|entry| entry.keep(&query))
        .map(|entry| entry.render(&query.sections, usd_per_job, &docs))
        .collect();
    let body = json!({"object": "list", "data": data}).to_string();
    let digest = sha2::Sha256::digest(body.as_bytes());
    let etag = format!("\"{}\"", digest[..8].iter().map(|b| format!("{b:02x}")).collect::<String>());
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (StatusCode::OK, [(header::ETAG, etag), (header::CONTENT_TYPE, "application/json".to_owned())], body)
        .into_response()
}

/// `GET /docs-json?model=ID`: a listed model's OpenAPI document, its
/// request body under `POST /v2/video/generations` (behind a `$ref`, as the
/// upstream's documents write it); 404 for a model not listed.
pub(crate) async fn document(State(sim): State<Simulator>, uri: Uri) -> Response {
    let model = crate::http::query_param(&uri, "model").unwrap_or_default();
    let schema = {
        let state = sim.lock();
        match state.listed.added(&model) {
            Some(spec) => Some(spec.schema.clone()),
            None if state.listed.is_dropped(&model) => None,
            None => catalog::model(&model).map(|spec| spec.schema.clone()),
        }
    };
    let Some(schema) = schema else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"message": format!("No document for model {model}"), "statusCode": 404}).to_string(),
        )
            .into_response();
    };
    let document = json!({
        "openapi": "3.0.0",
        "info": {"title": "AIML API", "version": "1.0.0"},
        "paths": {"/v2/video/generations": {"post": {
            "operationId": "_v2_video_generations",
            "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Request"}}}},
        }}},
        "components": {"schemas": {"Request": schema}},
    });
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], document.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_sections_follow_the_query() {
        let uri: Uri =
            "/v1/models?include=pricing&include=bogus&id=veo3-1-fast-extend-video,nope".parse().unwrap();
        let query = Query::parse(&uri);
        assert!(query.sections.pricing && !query.sections.modalities);
        let extend = Entry::of(catalog::model("google/veo3-1-fast-extend-video").unwrap(), None);
        assert!(extend.keep(&query), "matched by its alias");
        assert_eq!(extend.capabilities, ["video_to_video"]);
        let rendered = extend.render(&query.sections, 0.06, "https://api.aimlapi.com");
        assert_eq!(rendered["pricing"]["units"][0], json!({"price": 0.06, "per": "generation"}));
        assert!(rendered.get("modalities").is_none());
        let chat: Uri = "/v1/models?type=openai/chat-completions".parse().unwrap();
        assert!(!extend.keep(&Query::parse(&chat)), "only video models are served here");
    }
}
