//! `cargo xtask release X.Y.Z [--dry-run] [--skip-ci] [--debug-build] [--no-verify]`:
//! cuts a release.
//!
//! In order, stopping at the first failure: the working tree must be clean
//! and the version must be above the workspace's; `cargo xtask ci` (unless
//! `--skip-ci`, for a CI job that has just run it); the version set in the
//! workspace; CHANGELOG.md's Unreleased section moved under the version and
//! today's date; `cargo package` of the crates meant for crates.io (built
//! from their packages, as crates.io would); `cargo xtask dist`; then a
//! commit and a `vX.Y.Z` tag. `--dry-run` does all of it but the commit and
//! the tag, puts the manifest, lock file and changelog back as they were,
//! and says what it would have done. `--no-verify` (dry runs only) packages
//! the crates without building each from its package: CI's every-commit
//! dry run, which would otherwise spend five of its minutes rebuilding the
//! dependency tree three times; `cargo publish` on the tag verifies them.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use semver::Version;
use xshell::{Shell, cmd};

use crate::target_dir::{Profile, TargetDir};

/// The crates published to crates.io, in the order they must be published.
/// (The simulator depends on the library; the library's tests use the
/// simulator by path only, which publishing drops.)
pub(crate) const PUBLISHED: [&str; 3] = ["aimlvid", "aimlvid-sim", "aimlvid-cli"];
/// Our crates that other members name by version in `[workspace.dependencies]`.
const PINNED: [&str; 2] = ["aimlvid", "aimlvid-sim"];

/// What `release` was asked to do.
#[derive(Debug)]
pub(crate) struct Options {
    version: Version,
    dry_run: bool,
    skip_ci: bool,
    /// Archives and packages of the debug build: CI checks the machinery
    /// within its time budget; a real release builds with `--release`.
    debug_build: bool,
    /// Package without building each crate from its package.
    no_verify: bool,
}

impl Options {
    pub(crate) fn parse(args: &[&str]) -> Result<Options> {
        let usage = "usage: cargo xtask release X.Y.Z [--dry-run] [--skip-ci] [--debug-build] [--no-verify]";
        let mut version = None;
        let (mut dry_run, mut skip_ci, mut debug_build, mut no_verify) = (false, false, false, false);
        for arg in args {
            match *arg {
                "--dry-run" => dry_run = true,
                "--skip-ci" => skip_ci = true,
                "--debug-build" => debug_build = true,
                "--no-verify" => no_verify = true,
                v if version.is_none() && !v.starts_with('-') => {
                    version = Some(
                        Version::parse(v.trim_start_matches('v'))
                            .with_context(|| format!("{v:?} is not a version like 1.2.3; {usage}"))?,
                    );
                }
                other => bail!("unexpected {other:?}; {usage}"),
            }
        }
        if debug_build && !dry_run {
            bail!("--debug-build is for dry runs: a release ships release builds");
        }
        if no_verify && !dry_run {
            bail!("--no-verify is for dry runs: a release builds each crate from its package");
        }
        Ok(Options { version: version.context(usage)?, dry_run, skip_ci, debug_build, no_verify })
    }
}

/// Cuts the release `options` describe.
pub(crate) fn run(
    sh: &Shell,
    root: &Path,
    target_dir: &TargetDir,
    options: &Options,
    ci: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let new = &options.version;
    let status = cmd!(sh, "git status --porcelain").read()?;
    if !status.trim().is_empty() {
        bail!("the working tree has changes; commit or stash them first:\n{status}");
    }
    let current = Version::parse(&crate::dist::workspace_version(root)?)?;
    if new <= &current {
        bail!("{new} does not come after the workspace's version {current}");
    }
    let tag = format!("v{new}");
    if !cmd!(sh, "git tag --list {tag}").read()?.trim().is_empty() {
        bail!("the tag {tag} exists already");
    }
    if options.skip_ci {
        println!("release: not running `cargo xtask ci` (--skip-ci)");
    } else {
        ci().context("release: cargo xtask ci")?;
    }

    let files = ["Cargo.toml", "Cargo.lock", "CHANGELOG.md"];
    let saved: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            Ok(((*f).to_owned(), fs::read_to_string(root.join(f)).with_context(|| format!("reading {f}"))?))
        })
        .collect::<Result<_>>()?;
    let outcome = prepare(sh, root, target_dir, &current, new, options);
    if options.dry_run || outcome.is_err() {
        for (file, text) in &saved {
            fs::write(root.join(file), text)?;
        }
    }
    outcome?;
    if options.dry_run {
        println!(
            "release (dry run): would commit \"Release {new}\" (Cargo.toml, Cargo.lock, CHANGELOG.md) and tag {tag}; \
             then publish {} in that order; the files are back as they were",
            PUBLISHED.join(", ")
        );
        return Ok(());
    }
    let (message, title) = (format!("Release {new}"), format!("aimlvid {new}"));
    cmd!(sh, "git commit -am {message}").run()?;
    cmd!(sh, "git tag -a {tag} -m {title}").run()?;
    println!(
        "release: committed and tagged {tag}; push both (`git push --follow-tags`) to build and publish it"
    );
    Ok(())
}

/// Sets the version, moves the changelog, checks the packages, builds dist
/// (and the Debian packages, where `dpkg` is at hand).
fn prepare(
    sh: &Shell,
    root: &Path,
    target_dir: &TargetDir,
    current: &Version,
    new: &Version,
    options: &Options,
) -> Result<()> {
    let debug_build = options.debug_build;
    set_workspace_version(sh, root, current, new).context("release: setting the version")?;
    move_changelog(sh, root, new).context("release: the changelog")?;
    package(sh, new, options.no_verify).context("release: cargo package")?;
    crate::dist::run(sh, root, target_dir, Profile::debug_if(debug_build))
        .context("release: cargo xtask dist")?;
    // Debian packages where dpkg is at hand (CI's Linux runners build them
    // on the tag too), installed and exercised where that is allowed.
    if cmd!(sh, "dpkg-deb --version").quiet().ignore_stdout().run().is_ok() {
        let test = cmd!(sh, "id -u").read().is_ok_and(|uid| uid.trim() == "0");
        crate::deb::run(sh, root, target_dir, &crate::deb::Options { debug: debug_build, test })
            .context("release: cargo xtask deb")?;
    }
    Ok(())
}

/// `Cargo.toml` and `Cargo.lock` at the version `new`.
fn set_workspace_version(sh: &Shell, root: &Path, current: &Version, new: &Version) -> Result<()> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    fs::write(root.join("Cargo.toml"), set_version(&manifest, current, new)?)?;
    cmd!(sh, "cargo update --workspace --offline").run()?;
    Ok(())
}

/// CHANGELOG.md's Unreleased entries under `new` and today's date (UTC).
fn move_changelog(sh: &Shell, root: &Path, new: &Version) -> Result<()> {
    let date = cmd!(sh, "date -u +%Y-%m-%d").read()?;
    let changelog = fs::read_to_string(root.join("CHANGELOG.md"))?;
    fs::write(root.join("CHANGELOG.md"), release_changelog(&changelog, new, date.trim())?)?;
    Ok(())
}

/// `cargo package` of the published crates, each built from its package
/// unless `no_verify`.
fn package(sh: &Shell, new: &Version, no_verify: bool) -> Result<()> {
    forget_earlier_packages(sh, new)?;
    let packages: Vec<String> = PUBLISHED.iter().flat_map(|p| ["-p".to_owned(), (*p).to_owned()]).collect();
    let verify: &[&str] = if no_verify { &["--no-verify"] } else { &[] };
    cmd!(sh, "cargo package --locked --allow-dirty {verify...} {packages...}").run()?;
    Ok(())
}

/// Removes what Cargo kept from an earlier `cargo package` of our crates
/// at `version`: the sources it unpacked and the artifacts it built. Cargo
/// verifies each package against the others through a registry of its own,
/// and takes a registry crate of a given name and version to be immutable,
/// so it would reuse both however the code changed since: a second dry run
/// of the same version would build against the first one's code.
fn forget_earlier_packages(sh: &Shell, version: &Version) -> Result<()> {
    let packages: Vec<String> = PUBLISHED.iter().flat_map(|p| ["-p".to_owned(), (*p).to_owned()]).collect();
    cmd!(sh, "cargo clean --quiet {packages...}").run()?;
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let Ok(registries) = fs::read_dir(home.join("registry/src")) else { return Ok(()) };
    for registry in registries {
        let registry = registry?.path();
        for name in PUBLISHED {
            let unpacked = registry.join(format!("{name}-{version}"));
            if unpacked.exists() {
                fs::remove_dir_all(&unpacked).with_context(|| format!("removing {}", unpacked.display()))?;
            }
        }
    }
    Ok(())
}

/// `manifest` with `[workspace.package]`'s version and our pinned crates'
/// versions in `[workspace.dependencies]` set to `new`.
fn set_version(manifest: &str, current: &Version, new: &Version) -> Result<String> {
    let (old, new) = (format!("\"{current}\""), format!("\"{new}\""));
    let mut section = String::new();
    let mut changed = 0;
    let mut out = String::with_capacity(manifest.len());
    for line in manifest.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_owned();
        }
        let ours = (section == "[workspace.package]" && trimmed.starts_with("version"))
            || (section == "[workspace.dependencies]"
                && PINNED.iter().any(|name| trimmed.starts_with(&format!("{name} ="))));
        if ours && line.contains(&old) {
            out.push_str(&line.replacen(&old, &new, 1));
            changed += 1;
        } else {
            out.push_str(line);
        }
    }
    if changed != 1 + PINNED.len() {
        bail!("expected to set {} versions in Cargo.toml, set {changed}", 1 + PINNED.len());
    }
    Ok(out)
}

/// `changelog` with its Unreleased entries under `## [new] - date`, and an
/// empty Unreleased section above them.
fn release_changelog(changelog: &str, new: &Version, date: &str) -> Result<String> {
    const UNRELEASED: &str = "## [Unreleased]";
    let start = changelog.find(UNRELEASED).context("CHANGELOG.md has no \"## [Unreleased]\" section")?;
    let body_start = start + UNRELEASED.len();
    let body_end = changelog[body_start..].find("\n## ").map_or(changelog.len(), |i| body_start + i + 1);
    let body = &changelog[body_start..body_end];
    if body.trim().is_empty() {
        bail!("CHANGELOG.md's Unreleased section is empty: say what this release changes first");
    }
    Ok(format!(
        "{}{UNRELEASED}\n\n## [{new}] - {date}{}{}",
        &changelog[..start],
        body.trim_end_matches('\n').to_owned() + "\n\n",
        &changelog[body_end..]
    )
    .replace("\n\n\n", "\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_set_in_the_workspace_and_our_pinned_crates_only() {
        let manifest = "[workspace.package]\nversion = \"0.1.0\"\n\n[workspace.dependencies]\n\
             aimlvid = { path = \"crates/core\", version = \"0.1.0\" }\n\
             aimlvid-sim = { path = \"crates/sim\", version = \"0.1.0\" }\n\
             other = \"0.1.0\"\n";
        let set = set_version(manifest, &Version::new(0, 1, 0), &Version::new(0, 2, 0)).unwrap();
        assert_eq!(set.matches("\"0.2.0\"").count(), 3, "{set}");
        assert!(set.contains("other = \"0.1.0\""), "{set}");
        assert!(
            set_version(
                "[workspace.package]\nversion = \"9.9.9\"\n",
                &Version::new(0, 1, 0),
                &Version::new(0, 2, 0)
            )
            .is_err()
        );
    }

    #[test]
    fn the_unreleased_section_moves_under_the_version() {
        let changelog = "# Changelog\n\nIntro.\n\n## [Unreleased]\n\n### Added\n\n- A thing.\n\n## [0.1.0] - 2026-01-01\n\n- First.\n";
        let released = release_changelog(changelog, &Version::new(0, 2, 0), "2026-11-30").unwrap();
        assert_eq!(
            released,
            "# Changelog\n\nIntro.\n\n## [Unreleased]\n\n## [0.2.0] - 2026-11-30\n\n### Added\n\n- A thing.\n\n\
             ## [0.1.0] - 2026-01-01\n\n- First.\n"
        );
        let empty = "# Changelog\n\n## [Unreleased]\n\n## [0.1.0] - 2026-01-01\n";
        assert!(
            release_changelog(empty, &Version::new(0, 2, 0), "2026-11-30").is_err(),
            "nothing to release"
        );
    }

    #[test]
    fn options_need_a_version() {
        let options = Options::parse(&["v0.2.0", "--dry-run"]).unwrap();
        assert_eq!((options.version, options.dry_run, options.skip_ci), (Version::new(0, 2, 0), true, false));
        assert!(Options::parse(&["--dry-run"]).is_err());
        assert!(Options::parse(&["two"]).is_err());
        assert!(Options::parse(&["0.2.0", "--dry-run", "--no-verify"]).unwrap().no_verify);
        assert!(Options::parse(&["0.2.0", "--no-verify"]).is_err(), "a real release verifies its packages");
    }
}
