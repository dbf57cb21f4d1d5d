//! House rules, checked as ordinary tests so that `cargo test` enforces them.

use std::fs;
use std::path::{Path, PathBuf};

use crate::project_root;

fn crate_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(project_root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("Cargo.toml").exists())
        .collect();
    dirs.push(project_root().join("xtask"));
    dirs.sort();
    dirs
}

/// Every dependency is declared once, in `[workspace.dependencies]`, but a
/// dev-dependency on a workspace member by path alone.
#[test]
fn dependencies_come_from_the_workspace() {
    for dir in crate_dirs() {
        let manifest = fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let mut section = String::new();
        for line in manifest.lines().map(str::trim) {
            if line.starts_with('[') {
                section = line.to_owned();
                continue;
            }
            let is_dep_section = section.ends_with("dependencies]");
            // The one exception: a dev-dependency on a workspace member by
            // path only, which `cargo publish` drops (breaking a cycle).
            let member_by_path =
                section == "[dev-dependencies]" && line.contains("path = \"../") && !line.contains("version");
            if is_dep_section && !line.is_empty() && !line.starts_with('#') && !member_by_path {
                assert!(
                    line.contains(".workspace = true") || line.contains("workspace = true"),
                    "{}: `{line}` in {section} should be `name.workspace = true`, \
                     with the version in the root [workspace.dependencies]",
                    dir.display()
                );
            }
        }
        assert!(
            manifest.contains("[lints]\nworkspace = true"),
            "{}: add `[lints] workspace = true`",
            dir.display()
        );
    }
}

/// Every crate has its paragraph in the architecture notes.
#[test]
fn every_crate_is_on_the_map() {
    let map = fs::read_to_string(project_root().join("docs/ARCHITECTURE.md")).unwrap();
    for dir in crate_dirs() {
        let rel = dir.strip_prefix(project_root()).unwrap().to_str().unwrap().to_owned();
        assert!(map.contains(&format!("`{rel}`")), "docs/ARCHITECTURE.md has no entry for `{rel}`");
    }
}

/// No stubs in shipped code.
#[test]
fn no_stubs_in_shipped_code() {
    let mut offenders = Vec::new();
    for dir in crate_dirs() {
        visit(&dir.join("src"), &mut |path, text| {
            for (n, line) in text.lines().enumerate() {
                if line.contains(concat!("todo", "!(")) || line.contains(concat!("unimplemented", "!(")) {
                    offenders.push(format!("{}:{}", path.display(), n + 1));
                }
            }
        });
    }
    assert!(offenders.is_empty(), "stubs left in: {offenders:?}");
}

/// The command line's modules, lowest first: each imports only modules
/// listed before it, so the flows (`jobs`) sit on the parts (journal,
/// report, config) and the commands on the flows, never in a circle.
const CLI_LAYERS: &[&str] = &[
    "exit", "journal", "logging", "cli", "report", "config", "sim", "cache", "timing", "prices", "jobs",
    "commands", "generate", "models", "main",
];

#[test]
fn the_command_lines_modules_import_downwards_only() {
    let src = project_root().join("crates/cli/src");
    let mut seen = Vec::new();
    let mut offenders = Vec::new();
    visit(&src, &mut |path, text| {
        let module = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let Some(level) = CLI_LAYERS.iter().position(|m| *m == module) else {
            offenders.push(format!("{module}.rs is not in CLI_LAYERS; add it where it belongs"));
            return;
        };
        seen.push(module.clone());
        for (n, line) in text.lines().enumerate() {
            for used in line.split("crate::").skip(1) {
                let name: String =
                    used.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                // `crate::{a, b}` and items of the crate root are `main`'s.
                let Some(target) = CLI_LAYERS.iter().position(|m| *m == name) else { continue };
                if target >= level && name != module {
                    offenders.push(format!("{module}.rs:{} uses crate::{name}, a module above it", n + 1));
                }
            }
        }
    });
    assert!(seen.len() == CLI_LAYERS.len(), "modules listed but missing: {seen:?}");
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// The server's modules in layers, lowest first: a module imports only
/// from its own layer or those before it. The fronts (the API, the page,
/// the admin API) sit on the HTTP state, the state on the jobs service,
/// the jobs service on the engine's parts, and those on storage, keys,
/// budgets, views and metrics, so no part below can reach up into a
/// front, and a background task never holds the HTTP state. `lib` is the
/// crate root (`crate::app`, `crate::serve`).
const SERVER_LAYERS: &[&[&str]] = &[
    &["calendar", "connection"],
    &["store", "view", "metrics", "keys", "budget", "reservations", "webhooks", "reconcile"],
    &["engine"],
    &["jobs"],
    &["state"],
    &["error", "observe", "api", "events", "admin", "page", "openai"],
    &["front", "tls", "config", "lib"],
];

/// Items the crate root re-exports, by the module that defines them.
const SERVER_ROOT_ITEMS: &[(&str, &str)] = &[
    ("AppState", "state"),
    ("StartError", "state"),
    ("StateConfig", "state"),
    ("DEFAULT_BODY_LIMIT", "state"),
    ("REQUEST_ID", "observe"),
    ("ApiError", "error"),
    ("CREATE_STATUS", "api"),
    ("IDEMPOTENCY_KEY", "api"),
];

/// A server source file's module path (`engine::scheduler`), and what it
/// names with `crate::` and `super::` outside comments, as module paths.
fn server_modules() -> Vec<(String, Vec<(usize, String)>)> {
    let src = project_root().join("crates/server/src");
    let mut modules = Vec::new();
    visit(&src, &mut |path, text| {
        let relative = path.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = relative.iter().map(|p| p.to_str().unwrap().to_owned()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let module = parts.join("::");
        let parent = parts[..parts.len().saturating_sub(1)].join("::");
        let mut uses = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for (prefix, base) in [("crate::", None), ("super::", Some(parent.as_str()))] {
                for used in code.split(prefix).skip(1) {
                    let path: String = used
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                        .collect();
                    let mut named: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
                    // Only module names (lower case) make the path; an item ends it.
                    if let Some(first) = named.first()
                        && let Some((_, owner)) = SERVER_ROOT_ITEMS.iter().find(|(item, _)| item == first)
                        && base.is_none()
                    {
                        named = vec![owner];
                    }
                    let modules: Vec<&str> = named
                        .into_iter()
                        .take_while(|p| p.starts_with(|c: char| c.is_ascii_lowercase()))
                        .collect();
                    let target = match base {
                        None => modules.join("::"),
                        // `super::*` or `super::Item`: the parent's own items (in a
                        // test module, the file's), never another module.
                        Some(_) if modules.is_empty() => continue,
                        Some("") => modules.join("::"),
                        Some(base) => std::iter::once(base).chain(modules).collect::<Vec<_>>().join("::"),
                    };
                    uses.push((n + 1, if target.is_empty() { "lib".to_owned() } else { target }));
                }
            }
        }
        modules.push((module, uses));
    });
    modules
}

fn server_layer(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or(module);
    SERVER_LAYERS.iter().position(|layer| layer.contains(&top))
}

#[test]
fn the_servers_modules_import_downwards_only() {
    let mut offenders = Vec::new();
    for (module, uses) in server_modules() {
        if module == "main" {
            continue; // the binary, which uses the library from outside
        }
        let Some(level) = server_layer(&module) else {
            offenders.push(format!("{module} is not in SERVER_LAYERS; add it where it belongs"));
            continue;
        };
        for (line, target) in uses {
            if let Some(target_level) = server_layer(&target)
                && target_level > level
            {
                offenders.push(format!("{module}:{line} uses crate::{target}, a layer above it"));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// No two of the server's modules import each other, directly or round a
/// circle (a module and its own submodules aside).
#[test]
fn the_servers_modules_import_in_no_circle() {
    let modules = server_modules();
    let names: Vec<&str> = modules.iter().map(|(m, _)| m.as_str()).collect();
    // The module a path names: the longest module path it starts with.
    let resolve = |target: &str| -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, name) in names.iter().enumerate() {
            let matches = target == *name || target.starts_with(&format!("{name}::"));
            if matches && best.is_none_or(|b| names[b].len() < name.len()) {
                best = Some(i);
            }
        }
        best
    };
    let related = |a: &str, b: &str| a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"));
    let edges: Vec<Vec<usize>> = modules
        .iter()
        .map(|(module, uses)| {
            let mut to: Vec<usize> = uses
                .iter()
                .filter_map(|(_, target)| resolve(target))
                .filter(|&t| names[t] != module && !related(module, names[t]))
                .collect();
            to.sort_unstable();
            to.dedup();
            to
        })
        .collect();
    // Depth-first search for a back edge; the circle is the path from its target.
    fn visit_from(
        at: usize,
        edges: &[Vec<usize>],
        state: &mut [u8],
        path: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[at] = 1;
        path.push(at);
        for &next in &edges[at] {
            if state[next] == 1 {
                let start = path.iter().position(|&p| p == next).unwrap();
                return Some(path[start..].to_vec());
            }
            if state[next] == 0
                && let Some(circle) = visit_from(next, edges, state, path)
            {
                return Some(circle);
            }
        }
        path.pop();
        state[at] = 2;
        None
    }
    let mut state = vec![0u8; names.len()];
    for start in 0..names.len() {
        if state[start] == 0
            && let Some(circle) = visit_from(start, &edges, &mut state, &mut Vec::new())
        {
            let circle: Vec<&str> = circle.iter().map(|&i| names[i]).collect();
            panic!("the server's modules import round a circle: {}", circle.join(" -> "));
        }
    }
}

fn visit(dir: &Path, f: &mut dyn FnMut(&Path, &str)) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            visit(&path, f);
        } else if path.extension().is_some_and(|e| e == "rs") {
            f(&path, &fs::read_to_string(&path).unwrap());
        }
    }
}
