//! `cargo xtask api import --from DIR`: copies the upstream's OpenAPI
//! documents for its video models into `crates/core/api/video-models/`, so
//! that the repository holds the facts the catalogue and the simulator are
//! generated from, and a change to them shows as a diff.
//!
//! Each upstream document embeds the components of the whole API (some
//! 2,000 schemas, up to 4 MB); the copy keeps only the components its own
//! paths reach through `$ref`, which changes nothing any path means.
//! Documents for the legacy vendor-specific paths (no
//! `/v2/video/generations`) are left out and listed in the folder's README.
//!
//! Some of those legacy documents carry the API-wide create schema,
//! `Video.v2.SubmitVideoPayload` (one `anyOf` entry per model or group of
//! models), which no page's request body reaches. It is the only source for
//! the models whose pages copy a sibling's schema, so the import keeps it,
//! with the components it reaches, in `crates/core/api/submit-video-payload.json`
//! (see `codegen::FROM_SUBMIT_PAYLOAD`).

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value};

/// Where the copies live, relative to the workspace root.
pub(crate) const API_DIR: &str = "crates/core/api/video-models";
/// The universal endpoint a document must describe to be copied.
const CREATE_PATH: &str = "/v2/video/generations";
/// The API-wide create schema, under `components/schemas`.
pub(crate) const PAYLOAD_SCHEMA: &str = "Video.v2.SubmitVideoPayload";
/// Its extract's file name, beside the [`API_DIR`] folder (in `crates/core/api/`).
pub(crate) const PAYLOAD_FILE: &str = "submit-video-payload.json";
/// Where the README's generated part ends: from the first second-level
/// heading on, the README is written by hand and an import keeps it.
const README_KEPT_FROM: &str = "\n## ";

/// Copies the documents in `from` into [`API_DIR`], replacing what was there.
pub(crate) fn import(root: &Path, from: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = fs::read_dir(from)
        .with_context(|| format!("reading {}", from.display()))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    let out = root.join(API_DIR);
    if out.exists() {
        fs::remove_dir_all(&out).with_context(|| format!("clearing {}", out.display()))?;
    }
    fs::create_dir_all(&out)?;
    let (mut copied, mut legacy) = (0, Vec::new());
    let mut payload = PayloadPick::default();
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).context("a document's name")?.to_owned();
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        payload.offer(&name, &doc);
        if doc.pointer(&format!("/paths/{}", CREATE_PATH.replace('/', "~1"))).is_none() {
            legacy.push(name);
            continue;
        }
        let pruned = prune(&doc).with_context(|| format!("pruning {}", path.display()))?;
        let mut text = serde_json::to_string_pretty(&pruned)?;
        text.push('\n');
        fs::write(out.join(&name), text)?;
        copied += 1;
    }
    if copied == 0 {
        bail!("no document in {} describes {CREATE_PATH}", from.display());
    }
    let api = out.parent().context("the api folder")?;
    let payload_path = api.join(PAYLOAD_FILE);
    let payload_sources = match payload.extract()? {
        Some((extract, name, carriers)) => {
            let mut text = serde_json::to_string_pretty(&extract)?;
            text.push('\n');
            fs::write(&payload_path, text)?;
            Some((name, carriers))
        }
        None => {
            if payload_path.exists() {
                fs::remove_file(&payload_path)
                    .with_context(|| format!("removing {}", payload_path.display()))?;
            }
            println!("note: no document in {} carries {PAYLOAD_SCHEMA}", from.display());
            None
        }
    };
    let readme_path = api.join("README.md");
    // The hand-written part of the README (the notes after the generated
    // list), kept across imports.
    let kept = fs::read_to_string(&readme_path)
        .ok()
        .and_then(|old| old.find(README_KEPT_FROM).map(|at| old[at..].to_owned()))
        .unwrap_or_default();
    let mut readme = String::from(
        "# The upstream's video model documents\n\n\
         One OpenAPI document per video model page of the AI/ML API's documentation, copied by\n\
         `cargo xtask api import --from DIR`. Each keeps only the components its own paths reach\n\
         (the upstream embeds the whole API's in every document). `cargo xtask codegen` builds the\n\
         simulator's schema table from them, and `cargo xtask ci` checks that it is up to date.\n\n\
         Left out: the documents for the legacy vendor-specific paths, which do not describe\n\
         `POST /v2/video/generations`:\n\n",
    );
    for name in &legacy {
        readme.push_str(&format!("- `{name}`\n"));
    }
    if let Some((name, carriers)) = payload_sources {
        readme.push_str(&format!(
            "\n`{PAYLOAD_FILE}` keeps the API-wide create schema,\n\
             `{PAYLOAD_SCHEMA}`, with the components it reaches: `cargo xtask codegen` takes from\n\
             it the schemas of the models whose pages copy a sibling's (see below). Of the legacy\n\
             documents that carry it, in versions of different ages, it is the fullest's (most\n\
             `anyOf` entries):\n\n"
        ));
        for carrier in &carriers {
            let picked = if *carrier == name { " (this one)" } else { "" };
            readme.push_str(&format!("- `{carrier}`{picked}\n"));
        }
    }
    readme.push_str(&kept);
    fs::write(&readme_path, readme)?;
    println!("copied {copied} documents into {API_DIR}; left out {} legacy ones", legacy.len());
    Ok(())
}

/// Picks one `Video.v2.SubmitVideoPayload` among the documents that carry
/// it: the fullest (most `anyOf` entries; the upstream's documents hold
/// versions of different ages), then the first offered (files are offered
/// in name order). Both `api import` and `codegen` (for a folder of raw
/// documents) pick with it, so they pick the same one.
#[derive(Default)]
pub(crate) struct PayloadPick {
    /// The entries, the document's name and the document of the pick so far.
    best: Option<(usize, String, Value)>,
    /// Every document that carries the schema, in the order offered.
    carriers: Vec<String>,
}

impl PayloadPick {
    /// Considers `doc`, called `name`; one without the schema is passed over.
    pub(crate) fn offer(&mut self, name: &str, doc: &Value) {
        let Some(schema) = doc.pointer(&payload_pointer()) else { return };
        self.carriers.push(name.to_owned());
        let entries = schema.get("anyOf").and_then(Value::as_array).map_or(0, Vec::len);
        if self.best.as_ref().is_none_or(|(most, _, _)| entries > *most) {
            self.best = Some((entries, name.to_owned(), doc.clone()));
        }
    }

    /// The pick as a document of its own: only the schema and the
    /// components it reaches, with in `info` where it came from; and the
    /// pick's name and those of all the documents that carry the schema.
    /// `None` when none did.
    pub(crate) fn extract(self) -> Result<Option<(Value, String, Vec<String>)>> {
        let Some((_, name, doc)) = self.best else { return Ok(None) };
        let mut queue = VecDeque::from([format!("#{}", payload_pointer())]);
        let components = reached_components(&doc, &mut queue)?;
        let mut info = Map::new();
        info.insert("title".into(), PAYLOAD_SCHEMA.into());
        info.insert("version".into(), doc.pointer("/info/version").cloned().unwrap_or_else(|| "1.0".into()));
        info.insert(
            "description".into(),
            format!(
                "The API-wide create schema and the components it reaches, from {name} (the fullest of {}). \
                 Written by `cargo xtask api import`.",
                self.carriers.join(", ")
            )
            .into(),
        );
        let mut out = Map::new();
        out.insert("components".into(), Value::Object(components));
        out.insert("info".into(), Value::Object(info));
        out.insert("openapi".into(), doc.get("openapi").cloned().unwrap_or_else(|| "3.0.0".into()));
        out.insert("paths".into(), Value::Object(Map::new()));
        Ok(Some((Value::Object(out), name, self.carriers)))
    }
}

/// The JSON pointer to [`PAYLOAD_SCHEMA`] in a document.
pub(crate) fn payload_pointer() -> String {
    format!("/components/schemas/{}", PAYLOAD_SCHEMA.replace('~', "~0").replace('/', "~1"))
}

/// `doc` with only the components its other parts reach through `$ref`.
fn prune(doc: &Value) -> Result<Value> {
    let Value::Object(top) = doc else { bail!("not a JSON object") };
    let mut queue: VecDeque<String> = VecDeque::new();
    for (key, value) in top {
        if key != "components" {
            refs(value, &mut queue);
        }
    }
    let mut kept = reached_components(doc, &mut queue)?;
    // Security schemes are named by `security`, not by `$ref`: keep them all.
    if let Some(schemes) = doc.pointer("/components/securitySchemes") {
        kept.insert("securitySchemes".into(), schemes.clone());
    }
    let mut out = top.clone();
    if top.contains_key("components") {
        out.insert("components".into(), Value::Object(kept));
    }
    Ok(Value::Object(out))
}

/// The components of `doc` that the `$ref`s in `queue` reach, directly or
/// through others, grouped by kind as under `components`.
fn reached_components(doc: &Value, queue: &mut VecDeque<String>) -> Result<Map<String, Value>> {
    let mut reached: BTreeSet<String> = BTreeSet::new();
    while let Some(reference) = queue.pop_front() {
        if !reached.insert(reference.clone()) {
            continue;
        }
        let pointer = reference.strip_prefix('#').with_context(|| format!("non-local $ref {reference}"))?;
        let target = doc.pointer(pointer).with_context(|| format!("dangling $ref {reference}"))?;
        refs(target, queue);
    }
    let mut kept = Map::new();
    for reference in &reached {
        // `#/components/<kind>/<name>`: kept under the same kind and name.
        let parts: Vec<&str> = reference.trim_start_matches("#/").split('/').collect();
        if let ["components", kind, name] = parts[..] {
            let unescape = |s: &str| s.replace("~1", "/").replace("~0", "~");
            let value = doc.pointer(reference.trim_start_matches('#')).cloned().unwrap_or(Value::Null);
            let group = kept.entry(unescape(kind)).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(group) = group {
                group.insert(unescape(name), value);
            }
        }
    }
    Ok(kept)
}

/// Every `$ref` in `value`, queued.
fn refs(value: &Value, queue: &mut VecDeque<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                queue.push_back(reference.clone());
            }
            for v in map.values() {
                refs(v, queue);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, queue)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pruning_keeps_what_paths_reach_and_nothing_else() {
        let doc = json!({
            "paths": {"/v2/video/generations": {"post": {"requestBody": {"$ref": "#/components/schemas/A"}}}},
            "components": {
                "schemas": {
                    "A": {"properties": {"b": {"$ref": "#/components/schemas/B~1x"}}},
                    "B/x": {"type": "string"},
                    "Unused": {"properties": {"a": {"$ref": "#/components/schemas/A"}}},
                },
                "securitySchemes": {"access-token": {"type": "http"}},
            },
        });
        let pruned = prune(&doc).unwrap();
        let schemas = pruned.pointer("/components/schemas").unwrap().as_object().unwrap();
        assert_eq!(schemas.keys().collect::<Vec<_>>(), ["A", "B/x"]);
        assert!(pruned.pointer("/components/securitySchemes/access-token").is_some());
        assert_eq!(pruned["paths"], doc["paths"]);
    }

    #[test]
    fn the_create_schema_is_taken_from_the_fullest_document_with_what_it_reaches() {
        let doc = |entries: usize| {
            let entry = json!({"$ref": "#/components/schemas/E"});
            json!({
                "openapi": "3.0.0",
                "paths": {"/v2/generate/video/x": {}},
                "components": {"schemas": {
                    "Video.v2.SubmitVideoPayload": {"anyOf": vec![entry; entries]},
                    "E": {"properties": {"model": {"enum": ["a/b"]}}},
                    "Unused": {"type": "string"},
                }},
            })
        };
        let mut pick = PayloadPick::default();
        pick.offer("a.json", &doc(1));
        pick.offer("b.json", &json!({"paths": {}}));
        pick.offer("c.json", &doc(2));
        pick.offer("d.json", &doc(2));
        let (extract, name, carriers) = pick.extract().unwrap().unwrap();
        assert_eq!(
            (name.as_str(), carriers),
            ("c.json", vec!["a.json".to_owned(), "c.json".into(), "d.json".into()])
        );
        let schemas = extract.pointer("/components/schemas").unwrap().as_object().unwrap();
        assert_eq!(schemas.keys().collect::<Vec<_>>(), ["E", "Video.v2.SubmitVideoPayload"]);
        assert_eq!(extract.pointer(&payload_pointer()), doc(2).pointer(&payload_pointer()));
        assert!(PayloadPick::default().extract().unwrap().is_none());
    }
}
