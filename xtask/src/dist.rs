//! `cargo xtask dist`: release archives of the two binaries for this
//! machine's target, in `dist/` in Cargo's target directory (`target/dist/`
//! unless `CARGO_TARGET_DIR` or `build.target-dir` moves it):
//!
//! - `aimlvid-X.Y.Z-<target>.tar.gz` and `aimlvid-server-X.Y.Z-<target>.tar.gz`,
//!   each holding its binary, README.md, CHANGELOG.md, the licence files,
//!   shell completions (`completions/`) and a man page (`man/<bin>.1`),
//!   both made by the binary itself from its clap definitions;
//! - `SHA256SUMS`, in `sha256sum`'s format, so `sha256sum -c` checks them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use sha2::Digest as _;
use xshell::{Shell, cmd};

use crate::target_dir::{Profile, TargetDir};

/// The binaries shipped (built by the packages `aimlvid-cli` and `aimlvid-server`).
const BINARIES: [&str; 2] = ["aimlvid", "aimlvid-server"];
/// Files from the workspace root in every archive.
const DOCS: [&str; 4] = ["README.md", "CHANGELOG.md", "LICENSE-MIT", "LICENSE-APACHE"];
/// Shells a completion script is shipped for, and its file name.
const SHELLS: [(&str, &str); 4] =
    [("bash", "{bin}.bash"), ("zsh", "_{bin}"), ("fish", "{bin}.fish"), ("powershell", "_{bin}.ps1")];

/// Builds the archives, from a release build (or the debug build, with
/// `Profile::Debug`: for CI, which checks the machinery, not the optimiser),
/// checks them, and returns their paths.
pub(crate) fn run(sh: &Shell, root: &Path, target_dir: &TargetDir, profile: Profile) -> Result<Vec<PathBuf>> {
    let version = workspace_version(root)?;
    let target = host_target(sh)?;
    let release = profile.cargo_args();
    cmd!(sh, "cargo build {release...} --locked -p aimlvid-cli -p aimlvid-server").run()?;
    let dist = target_dir.dist();
    if dist.exists() {
        fs::remove_dir_all(&dist).with_context(|| format!("clearing {}", dist.display()))?;
    }
    fs::create_dir_all(&dist)?;
    let mut archives = Vec::new();
    for bin in BINARIES {
        let name = format!("{bin}-{version}-{target}");
        let stage = dist.join(&name);
        fs::create_dir_all(stage.join("completions"))?;
        fs::create_dir_all(stage.join("man"))?;
        let exe = format!("{bin}{}", std::env::consts::EXE_SUFFIX);
        let built = target_dir.binary(profile, bin);
        fs::copy(&built, stage.join(&exe)).with_context(|| format!("copying {}", built.display()))?;
        for doc in DOCS {
            fs::copy(root.join(doc), stage.join(doc)).with_context(|| format!("copying {doc}"))?;
        }
        for (shell, file) in SHELLS {
            let script = cmd!(sh, "{built} completions {shell}").output()?.stdout;
            fs::write(stage.join("completions").join(file.replace("{bin}", bin)), script)?;
        }
        let page = cmd!(sh, "{built} man").output()?.stdout;
        if !String::from_utf8_lossy(&page).contains(".TH ") {
            bail!("`{bin} man` did not print a man page");
        }
        fs::write(stage.join("man").join(format!("{bin}.1")), page)?;
        let archive = format!("{name}.tar.gz");
        let _dir = sh.push_dir(&dist);
        cmd!(sh, "tar -czf {archive} {name}").run()?;
        fs::remove_dir_all(&stage)?;
        archives.push(dist.join(archive));
    }
    let mut sums = String::new();
    for archive in &archives {
        let bytes = fs::read(archive)?;
        let digest = sha2::Sha256::digest(&bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let file = archive.file_name().and_then(|f| f.to_str()).context("an archive name")?;
        sums.push_str(&format!("{hex}  {file}\n"));
    }
    fs::write(dist.join("SHA256SUMS"), sums)?;
    check(sh, &dist, &version)?;
    for archive in &archives {
        println!("{}", archive.display());
    }
    println!("{}", dist.join("SHA256SUMS").display());
    Ok(archives)
}

/// Checks the archives as a user would: the checksums verify, each binary
/// prints the version being released, and each man page renders.
fn check(sh: &Shell, dist: &Path, version: &str) -> Result<()> {
    {
        let _dir = sh.push_dir(dist);
        cmd!(sh, "sha256sum --quiet -c SHA256SUMS").run().context("SHA256SUMS does not verify")?;
    }
    let unpacked = dist.join("check");
    fs::create_dir_all(&unpacked)?;
    for bin in BINARIES {
        let name = format!("{bin}-{version}-{}", host_target(sh)?);
        let archive = dist.join(format!("{name}.tar.gz"));
        cmd!(sh, "tar -xzf {archive} -C {unpacked}").run()?;
        let exe = unpacked.join(&name).join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
        let printed = cmd!(sh, "{exe} --version").read()?;
        if printed.trim() != format!("{bin} {version}") {
            bail!("{} prints {printed:?}, not version {version}", exe.display());
        }
        let page = unpacked.join(&name).join("man").join(format!("{bin}.1"));
        if cmd!(sh, "man --version").quiet().ignore_stdout().ignore_stderr().run().is_ok() {
            let rendered = cmd!(sh, "man -l {page}").env("MANWIDTH", "80").env("MANPAGER", "cat").read()?;
            if !rendered.contains("NAME") || !rendered.contains(bin) {
                bail!("man -l {} rendered no page", page.display());
            }
        }
    }
    fs::remove_dir_all(&unpacked)?;
    println!("dist: checksums verify, the binaries print {version}, the man pages render");
    Ok(())
}

/// The workspace's version, from `[workspace.package]`.
pub(crate) fn workspace_version(root: &Path) -> Result<String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))?;
    let mut in_package = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[workspace.package]";
        } else if in_package && let Some(value) = line.strip_prefix("version") {
            let value = value.trim_start().trim_start_matches('=').trim().trim_matches('"');
            return Ok(value.to_owned());
        }
    }
    bail!("no version in [workspace.package] of Cargo.toml")
}

/// This machine's target triple, as rustc names it.
fn host_target(sh: &Shell) -> Result<String> {
    let info = cmd!(sh, "rustc -vV").read()?;
    info.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(str::to_owned)
        .context("rustc -vV named no host")
}
