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

/// Every dependency is declared once, in `[workspace.dependencies]`.
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
            if is_dep_section && !line.is_empty() && !line.starts_with('#') {
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
