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

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde_json::{Map, Value};

/// Where the copies live, relative to the workspace root.
pub(crate) const API_DIR: &str = "crates/core/api/video-models";
/// The universal endpoint a document must describe to be copied.
const CREATE_PATH: &str = "/v2/video/generations";

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
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).context("a document's name")?.to_owned();
        let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
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
    fs::write(out.parent().context("the api folder")?.join("README.md"), readme)?;
    println!("copied {copied} documents into {API_DIR}; left out {} legacy ones", legacy.len());
    Ok(())
}

/// `doc` with only the components its other parts reach through `$ref`.
fn prune(doc: &Value) -> Result<Value> {
    let Value::Object(top) = doc else { bail!("not a JSON object") };
    let mut reached: BTreeSet<String> = BTreeSet::new();
    let mut queue: VecDeque<String> = VecDeque::new();
    for (key, value) in top {
        if key != "components" {
            refs(value, &mut queue);
        }
    }
    while let Some(reference) = queue.pop_front() {
        if !reached.insert(reference.clone()) {
            continue;
        }
        let pointer = reference.strip_prefix('#').with_context(|| format!("non-local $ref {reference}"))?;
        let target = doc.pointer(pointer).with_context(|| format!("dangling $ref {reference}"))?;
        refs(target, &mut queue);
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
}
