//! `cargo xtask codegen`: regenerate the model catalog.
//!
//! The inputs are the AI/ML API's public OpenAPI documents for its video
//! models, one JSON document per model page, as copied into
//! `crates/core/api/video-models/` by `cargo xtask api import`.
//! Each document that describes `POST /v2/video/generations` contributes its
//! model to `crates/core/src/catalog/models.json`, a JSON object keyed by
//! model id: the request-body schema (defaults normalised to the declared
//! type: the documents write `"default": "7"` on integers), which parameters
//! take media and of what kind, and the model's family. `aimlvid::catalog`
//! embeds that table; the library validates requests against it before
//! sending, and the simulator validates them with the same code, so the two
//! cannot disagree.
//!
//! One explicit override: the models in [`FROM_SUBMIT_PAYLOAD`] have pages
//! whose schema is a sibling's, so no page's `model` enum names them. Their
//! schemas are taken instead from their own entries in the API-wide create
//! schema, `Video.v2.SubmitVideoPayload`: from the documents in the folder
//! when they carry it (the upstream's raw ones), else from the extract
//! `api import` keeps beside the folder, `crates/core/api/submit-video-payload.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use crate::api::{self, PayloadPick};

/// The generated table, relative to the workspace root.
const OUTPUT: &str = "crates/core/src/catalog/models.json";

/// The endpoint whose request bodies we collect; documents for older
/// vendor-specific paths are legacy and skipped.
const CREATE_PATH: &str = "/v2/video/generations";

/// Schema keywords kept in the table: everything validation needs. The rest
/// (`description`, `example`, `title`, `x-*`, ...) is prose that only bloats it.
const KEPT_KEYWORDS: &[&str] = &[
    "type",
    "enum",
    "const",
    "default",
    "format",
    "properties",
    "required",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "items",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "pattern",
    "nullable",
    "anyOf",
    "oneOf",
    "allOf",
];

/// Models whose schema comes from their entry in `Video.v2.SubmitVideoPayload`,
/// not from a page: each is a real model (the API-wide schema lists it with
/// its own entry, the page's code samples use it), but its page copies a
/// sibling's request schema, `model` enum included, so no page names it.
/// `crates/core/api/README.md` tells the story; codegen fails once a page
/// names one of them (the override is then stale and should go).
const FROM_SUBMIT_PAYLOAD: &[&str] = &[
    // `Kling-AI_v1.5-standard-text-to-video.json` carries the
    // image-to-video schema and enum.
    "kling-video/v1.5/standard/text-to-video",
    // `VEED_fabric-1.0-fast.json` copies `veed/fabric-1.0`'s schema.
    "veed/fabric-1.0-fast",
];

/// `$ref` chains deeper than this are treated as a broken document.
const MAX_REF_DEPTH: usize = 32;

/// Regenerates the catalog from the OpenAPI documents in
/// `openapi_dir`, or with `check` only verifies that the committed file is up
/// to date (and fails if not).
pub(crate) fn run(openapi_dir: &Path, check: bool) -> Result<()> {
    let table = build_table(openapi_dir)?;
    let text = render(&table)?;

    let output = workspace_root().join(OUTPUT);
    if check {
        let committed =
            fs::read_to_string(&output).with_context(|| format!("reading {}", output.display()))?;
        if committed != text {
            bail!(
                "{OUTPUT} is out of date with the OpenAPI documents in {}; \
                 run `cargo xtask codegen` and commit the result",
                openapi_dir.display()
            );
        }
        println!("{OUTPUT} is up to date ({} models)", table.len());
    } else {
        fs::write(&output, text).with_context(|| format!("writing {}", output.display()))?;
        println!("wrote {OUTPUT} ({} models)", table.len());
    }
    Ok(())
}

/// One model per line: small, and diffs show which models changed.
fn render(table: &Map<String, Value>) -> Result<String> {
    let mut text = String::from("{\n");
    for (i, (id, schema)) in table.iter().enumerate() {
        let sep = if i + 1 == table.len() { "" } else { "," };
        text.push_str(&format!(
            "  {}: {}{sep}\n",
            serde_json::to_string(id)?,
            serde_json::to_string(schema)?
        ));
    }
    text.push_str("}\n");
    Ok(text)
}

/// The workspace root: xtask lives one level below it.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// One model's request schema and where it came from.
struct Candidate {
    file_name: String,
    title_matches: bool,
    schema: Value,
    /// The document's answer may carry a list of videos rather than one.
    several_results: bool,
}

/// Reads every document and picks one schema per model id.
fn build_table(openapi_dir: &Path) -> Result<Map<String, Value>> {
    let mut files: Vec<PathBuf> = fs::read_dir(openapi_dir)
        .with_context(|| format!("reading {}", openapi_dir.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    // Sorted so that every later tie-break is independent of directory order.
    files.sort();

    let mut by_model: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    let mut payload = PayloadPick::default();
    for path in &files {
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        payload.offer(&file_name, &doc);
        let Some(raw) =
            doc.pointer("/paths/~1v2~1video~1generations/post/requestBody/content/application~1json/schema")
        else {
            continue;
        };
        let schema =
            resolve_refs(&doc, raw, 0).with_context(|| format!("resolving $ref in {}", path.display()))?;
        let ids = model_ids(&schema);
        if ids.is_empty() {
            eprintln!("warning: {} describes {CREATE_PATH} but names no model; skipped", path.display());
            continue;
        }
        let title = schema.get("title").and_then(Value::as_str);
        let stripped = strip(&schema);
        let several_results = match doc
            .pointer("/paths/~1v2~1video~1generations/post/responses/200/content/application~1json/schema")
        {
            Some(answer) => {
                let answer = resolve_refs(&doc, answer, 0)
                    .with_context(|| format!("resolving $ref in {}", path.display()))?;
                answer.pointer("/properties/video").is_some_and(allows_list)
            }
            None => false,
        };
        for id in ids {
            by_model.entry(id.clone()).or_default().push(Candidate {
                file_name: file_name.clone(),
                title_matches: title == Some(id.as_str()),
                schema: stripped.clone(),
                several_results,
            });
        }
    }

    // A few model ids are described by two documents (a page and its
    // renamed copy). Pick deterministically: prefer the document whose schema
    // `title` is the model id (the page written for that model), then the
    // first file name in byte order.
    let mut table: BTreeMap<String, Value> = BTreeMap::new();
    for (id, mut candidates) in by_model {
        candidates.sort_by(|a, b| {
            b.title_matches.cmp(&a.title_matches).then_with(|| a.file_name.cmp(&b.file_name))
        });
        if let Some(best) = candidates.into_iter().next() {
            table.insert(id.clone(), entry(&id, normalise_defaults(best.schema), best.several_results));
        }
    }
    if table.is_empty() {
        bail!("no document in {} describes {CREATE_PATH}", openapi_dir.display());
    }

    let payload = match payload.extract()? {
        Some((extract, _, _)) => extract,
        None => {
            let path = openapi_dir.parent().unwrap_or(openapi_dir).join(api::PAYLOAD_FILE);
            let text = fs::read_to_string(&path).with_context(|| {
                format!(
                    "reading {} (no document in {} carries {}, which the schemas of {} come from)",
                    path.display(),
                    openapi_dir.display(),
                    api::PAYLOAD_SCHEMA,
                    FROM_SUBMIT_PAYLOAD.join(" and ")
                )
            })?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
    };
    for id in FROM_SUBMIT_PAYLOAD {
        if table.contains_key(*id) {
            bail!(
                "a page in {} now documents {id}; remove it from FROM_SUBMIT_PAYLOAD in xtask/src/codegen.rs \
                 and from the notes in crates/core/api/README.md",
                openapi_dir.display()
            );
        }
        let schema = payload_entry(&payload, id)?;
        // The create schema describes no answer: one video, as most models.
        table.insert((*id).to_owned(), entry(id, normalise_defaults(strip(&schema)), false));
    }
    Ok(table.into_iter().collect())
}

/// Model `id`'s request schema from its entry in `Video.v2.SubmitVideoPayload`
/// (an `anyOf` of one object schema per model or group of models), `$ref`s
/// inlined. An entry for a group names several models in its `model` enum;
/// it is narrowed to `id`, as every page's names its own model only. Fails
/// unless exactly one entry names `id` (or several, all alike).
fn payload_entry(payload: &Value, id: &str) -> Result<Value> {
    let raw = payload
        .pointer(&api::payload_pointer())
        .with_context(|| format!("no {} in the create schema's document", api::PAYLOAD_SCHEMA))?;
    let resolved = resolve_refs(payload, raw, 0)
        .with_context(|| format!("resolving $ref in {}", api::PAYLOAD_SCHEMA))?;
    let mut found: Vec<Value> = Vec::new();
    collect_entries(&resolved, id, &mut found);
    let mut schema = match found.len() {
        1 => found.remove(0),
        0 => bail!("{} has no entry for {id}", api::PAYLOAD_SCHEMA),
        n => bail!("{} has {n} different entries for {id}", api::PAYLOAD_SCHEMA),
    };
    let model = schema
        .pointer_mut("/properties/model")
        .and_then(Value::as_object_mut)
        .with_context(|| format!("the {} entry for {id} has no `model` property", api::PAYLOAD_SCHEMA))?;
    model.remove("const");
    model.insert("enum".into(), Value::Array(vec![id.into()]));
    Ok(schema)
}

/// The object schemas among `schema`'s `anyOf`/`oneOf` branches (nested
/// ones too) whose `model` names `id`.
fn collect_entries(schema: &Value, id: &str, found: &mut Vec<Value>) {
    let branches = ["anyOf", "oneOf"].iter().filter_map(|key| schema.get(*key).and_then(Value::as_array));
    for branch in branches.flatten() {
        if model_ids(branch).iter().any(|named| named == id) {
            if !found.contains(branch) {
                found.push(branch.clone());
            }
        } else {
            collect_entries(branch, id, found);
        }
    }
}

/// Whether a schema is a list, or a union with a list among its branches.
fn allows_list(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("array")
        || ["anyOf", "oneOf"]
            .iter()
            .any(|key| schema.get(*key).and_then(Value::as_array).is_some_and(|b| b.iter().any(allows_list)))
}

/// A catalog entry: family, media parameters, schema, and whether the
/// answer may list several videos; keys sorted.
fn entry(id: &str, schema: Value, several_results: bool) -> Value {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut media = Map::new();
    if let Some(Value::Object(properties)) = schema.get("properties") {
        for (name, property) in properties {
            if let Some(kind) = media_kind(name, property) {
                media.insert(name.clone(), kind.into());
            }
        }
    }
    let family = family(id, &required, &media);
    let mut entry = Map::new();
    entry.insert("family".into(), family.into());
    entry.insert("media".into(), Value::Object(media));
    entry.insert("schema".into(), schema);
    if several_results {
        entry.insert("several_results".into(), true.into());
    }
    Value::Object(entry)
}

/// What kind of media a top-level parameter takes, if any: a URL-valued
/// string (or list of them), named for what it holds.
fn media_kind(name: &str, schema: &Value) -> Option<&'static str> {
    fn is_uri(schema: &Value) -> bool {
        let uri = |s: &Value| s.get("format").and_then(Value::as_str) == Some("uri");
        uri(schema)
            || schema.get("items").is_some_and(uri)
            || ["anyOf", "oneOf"].iter().any(|key| {
                schema.get(*key).and_then(Value::as_array).is_some_and(|branches| branches.iter().any(is_uri))
            })
    }
    let named_url = name.ends_with("_url") || name.ends_with("_urls");
    if !is_uri(schema) && !named_url {
        return None;
    }
    Some(if name.contains("audio") {
        "audio"
    } else if name.contains("video") || name.starts_with("alpha") {
        "video"
    } else {
        "image"
    })
}

/// The model's family, from the media it requires, then from its name.
fn family(id: &str, required: &[&str], media: &Map<String, Value>) -> &'static str {
    let requires =
        |kind: &str| required.iter().any(|name| media.get(*name).and_then(Value::as_str) == Some(kind));
    let named = |words: &[&str]| words.iter().any(|w| id.contains(w));
    if requires("audio") || named(&["lip-sync", "avatar", "omnihuman"]) {
        "avatar"
    } else if id.contains("extend") {
        "extend"
    } else if requires("video") || named(&["v2v", "video-to-video"]) {
        "video-to-video"
    } else if requires("image") || named(&["i2v", "image-to-video"]) {
        "image-to-video"
    } else {
        "text-to-video"
    }
}

/// Defaults written as strings on numeric or boolean properties
/// (`"default": "7"` on an integer) become values of the declared type.
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

/// The model ids a request schema accepts (`properties.model.enum`/`const`).
fn model_ids(schema: &Value) -> Vec<String> {
    let Some(model) = schema.pointer("/properties/model") else {
        return Vec::new();
    };
    let mut ids: Vec<String> = model
        .get("enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(model.get("const"))
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Inlines local `$ref`s (`#/...`) so the table is self-contained.
fn resolve_refs(doc: &Value, value: &Value, depth: usize) -> Result<Value> {
    if depth > MAX_REF_DEPTH {
        bail!("$ref nesting deeper than {MAX_REF_DEPTH}");
    }
    Ok(match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let pointer =
                    reference.strip_prefix('#').with_context(|| format!("non-local $ref {reference}"))?;
                let target = doc.pointer(pointer).with_context(|| format!("dangling $ref {reference}"))?;
                return resolve_refs(doc, target, depth + 1);
            }
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), resolve_refs(doc, v, depth)?);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| resolve_refs(doc, v, depth)).collect::<Result<_>>()?)
        }
        other => other.clone(),
    })
}

/// Keeps only validation keywords, recursively, with keys in sorted order.
///
/// Keys are inserted sorted so the output is the same whether or not some
/// crate in the build turns on serde_json's `preserve_order`.
fn strip(schema: &Value) -> Value {
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut keys: Vec<&String> = map.keys().filter(|k| KEPT_KEYWORDS.contains(&k.as_str())).collect();
    keys.sort();
    let mut out = Map::new();
    for key in keys {
        let value = &map[key];
        let kept = match key.as_str() {
            // Property names are data, not keywords: keep them all.
            "properties" => match value {
                Value::Object(props) => {
                    let mut names: Vec<&String> = props.keys().collect();
                    names.sort();
                    let mut kept = Map::new();
                    for name in names {
                        kept.insert(name.clone(), strip(&props[name]));
                    }
                    Value::Object(kept)
                }
                other => other.clone(),
            },
            "items" => strip(value),
            "anyOf" | "oneOf" | "allOf" => match value {
                Value::Array(branches) => Value::Array(branches.iter().map(strip).collect()),
                other => other.clone(),
            },
            _ => value.clone(),
        };
        out.insert(key.clone(), kept);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A document carrying the create schema: one entry per override, one
    /// of them shared by a group and reached through `$ref`.
    fn payload() -> Value {
        json!({
            "paths": {},
            "components": {"schemas": {
                "Video.v2.SubmitVideoPayload": {"anyOf": [
                    {"type": "object", "properties": {"model": {"type": "string", "enum": ["a/other"]}}},
                    {"$ref": "#/components/schemas/Group"},
                    {"type": "object", "description": "prose",
                     "properties": {"model": {"type": "string", "enum": ["veed/fabric-1.0-fast"]},
                                    "audio_url": {"type": "string", "format": "uri"},
                                    "steps": {"type": "integer", "default": "7"}},
                     "required": ["model", "audio_url"]},
                ]},
                "Group": {"type": "object", "properties": {
                    "model": {"type": "string", "enum": ["a/first", "kling-video/v1.5/standard/text-to-video"]},
                    "prompt": {"type": "string"},
                }, "required": ["model", "prompt"]},
            }},
        })
    }

    /// A page for `id`, describing the create endpoint.
    fn page(id: &str) -> Value {
        json!({"paths": {"/v2/video/generations": {"post": {"requestBody": {"content": {"application/json": {
            "schema": {"type": "object", "properties": {"model": {"type": "string", "enum": [id]}}, "required": ["model"]}
        }}}}}}})
    }

    #[test]
    fn an_entry_for_a_group_is_narrowed_to_the_one_model() {
        let kling = payload_entry(&payload(), "kling-video/v1.5/standard/text-to-video").unwrap();
        assert_eq!(
            kling["properties"]["model"],
            json!({"type": "string", "enum": ["kling-video/v1.5/standard/text-to-video"]})
        );
        assert_eq!(kling["required"], json!(["model", "prompt"]));
        assert!(
            payload_entry(&payload(), "acme/absent")
                .unwrap_err()
                .to_string()
                .contains("no entry for acme/absent")
        );

        let mut twice = payload();
        twice["components"]["schemas"]["Video.v2.SubmitVideoPayload"]["anyOf"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "object", "properties": {"model": {"enum": ["veed/fabric-1.0-fast"]}}}));
        let error = payload_entry(&twice, "veed/fabric-1.0-fast").unwrap_err().to_string();
        assert!(error.contains("2 different entries"), "{error}");
    }

    #[test]
    fn the_overrides_join_the_pages_and_go_stale_once_a_page_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, doc: &Value| fs::write(dir.path().join(name), doc.to_string()).unwrap();
        write("a_page.json", &page("a/other"));
        // A legacy document: no create path, but the create schema.
        write("legacy.json", &payload());
        let table = build_table(dir.path()).unwrap();
        assert_eq!(
            table.keys().collect::<Vec<_>>(),
            ["a/other", "kling-video/v1.5/standard/text-to-video", "veed/fabric-1.0-fast"]
        );
        let fabric = &table["veed/fabric-1.0-fast"];
        assert_eq!(fabric["family"], "avatar");
        assert_eq!(fabric["media"], json!({"audio_url": "audio"}));
        // Stripped of prose, defaults typed, as a page's schema is.
        assert_eq!(fabric["schema"]["properties"]["steps"], json!({"type": "integer", "default": 7}));
        assert!(fabric["schema"].get("description").is_none());

        write("fast_page.json", &page("veed/fabric-1.0-fast"));
        let error = build_table(dir.path()).unwrap_err().to_string();
        assert!(error.contains("now documents veed/fabric-1.0-fast"), "{error}");
    }

    #[test]
    fn without_the_create_schema_the_extract_beside_the_folder_is_read() {
        let root = tempfile::tempdir().unwrap();
        let pages = root.path().join("video-models");
        fs::create_dir(&pages).unwrap();
        fs::write(pages.join("a_page.json"), page("a/other").to_string()).unwrap();
        let error = format!("{:#}", build_table(&pages).unwrap_err());
        assert!(error.contains(api::PAYLOAD_FILE) && error.contains("veed/fabric-1.0-fast"), "{error}");
        fs::write(root.path().join(api::PAYLOAD_FILE), payload().to_string()).unwrap();
        assert_eq!(build_table(&pages).unwrap().len(), 3);
    }
}
