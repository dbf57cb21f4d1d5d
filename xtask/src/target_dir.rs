//! Where Cargo puts this workspace's build output, as Cargo itself says.
//!
//! That is `target/` in the workspace unless `CARGO_TARGET_DIR` or
//! `build.target-dir` (in a Cargo config file, or as
//! `CARGO_BUILD_TARGET_DIR`) names another folder, as CI caches and many
//! developers do. `cargo metadata` reports the folder whichever of them chose
//! it, and the `cargo build` and `cargo test` that xtask runs inherit the same
//! environment and configuration, so they build where it says. Every command
//! that reads or writes build output takes its paths from here (`screenshots`,
//! `bench client` and `bench replicas` only run `cargo test` or `cargo bench`,
//! which find it themselves).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use xshell::{Cmd, Shell, cmd};

/// A Cargo profile, by the folder Cargo builds it into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Profile {
    /// `cargo build`: the `dev` profile, in `debug/`.
    Debug,
    /// `cargo build --release`, in `release/`.
    Release,
}

impl Profile {
    pub(crate) fn debug_if(debug: bool) -> Self {
        if debug { Profile::Debug } else { Profile::Release }
    }

    /// The arguments that make `cargo build` build this profile.
    pub(crate) fn cargo_args(self) -> &'static [&'static str] {
        match self {
            Profile::Debug => &[],
            Profile::Release => &["--release"],
        }
    }

    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// Cargo's target directory for this workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetDir {
    dir: PathBuf,
}

impl TargetDir {
    /// Asks Cargo, from the shell's directory (the workspace root), with the
    /// shell's environment.
    pub(crate) fn locate(sh: &Shell) -> Result<TargetDir> {
        TargetDir::ask(metadata(sh))
    }

    fn ask(metadata: Cmd<'_>) -> Result<TargetDir> {
        let metadata =
            metadata.quiet().read().context("asking Cargo for its target directory (cargo metadata)")?;
        TargetDir::from_metadata(&metadata)
    }

    fn from_metadata(json: &str) -> Result<TargetDir> {
        let metadata: serde_json::Value =
            serde_json::from_str(json).context("reading the output of cargo metadata")?;
        let dir =
            metadata["target_directory"].as_str().context("cargo metadata named no target_directory")?;
        Ok(TargetDir { dir: PathBuf::from(dir) })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The binary `name` of this workspace, built for this machine with `profile`.
    pub(crate) fn binary(&self, profile: Profile, name: &str) -> PathBuf {
        self.dir.join(profile.dir()).join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
    }

    /// Where `dist` and `deb` put the archives and packages.
    pub(crate) fn dist(&self) -> PathBuf {
        self.dir.join("dist")
    }
}

fn metadata(sh: &Shell) -> Cmd<'_> {
    cmd!(sh, "cargo metadata --format-version 1 --no-deps")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo metadata` from the workspace root, without whatever target
    /// directory the tests themselves were run with.
    fn metadata_here(sh: &Shell) -> Cmd<'_> {
        sh.change_dir(crate::project_root());
        metadata(sh).env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET_DIR")
    }

    #[test]
    fn paths_are_under_the_directory_cargo_names() {
        let target =
            TargetDir::from_metadata(r#"{"packages":[],"target_directory":"/elsewhere/target"}"#).unwrap();
        let exe = std::env::consts::EXE_SUFFIX;
        assert_eq!(target.path(), Path::new("/elsewhere/target"));
        assert_eq!(target.dist(), Path::new("/elsewhere/target/dist"));
        assert_eq!(
            target.binary(Profile::Release, "aimlvid"),
            Path::new(&format!("/elsewhere/target/release/aimlvid{exe}"))
        );
        assert_eq!(
            target.binary(Profile::debug_if(true), "aimlvid-server"),
            Path::new(&format!("/elsewhere/target/debug/aimlvid-server{exe}"))
        );
        assert!(TargetDir::from_metadata(r#"{"packages":[]}"#).is_err());
        assert!(TargetDir::from_metadata("warning: not JSON").is_err());
    }

    #[test]
    fn cargo_target_dir_is_honoured() {
        let outside = std::env::temp_dir().join("aimlvid-xtask-target-dir-test");
        let sh = Shell::new().unwrap();
        let located = TargetDir::ask(metadata_here(&sh).env("CARGO_TARGET_DIR", &outside)).unwrap();
        assert_eq!(located.path(), outside);
    }

    #[test]
    fn build_target_dir_is_honoured() {
        // `build.target-dir` as an environment variable: Cargo reads its
        // config files and these variables alike. Relative to the workspace.
        let sh = Shell::new().unwrap();
        let located = TargetDir::ask(metadata_here(&sh).env("CARGO_BUILD_TARGET_DIR", "elsewhere")).unwrap();
        assert_eq!(located.path(), crate::project_root().join("elsewhere"));
    }
}
