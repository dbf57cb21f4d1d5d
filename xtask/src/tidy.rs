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
