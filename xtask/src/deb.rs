//! `cargo xtask deb [--debug] [--test]`: Debian packages of the two
//! binaries, in `dist/` in Cargo's target directory (as `cargo xtask dist`):
//!
//! - `aimlvid_X.Y.Z-1_<arch>.deb`: the command, its man page and shell
//!   completions;
//! - `aimlvid-server_X.Y.Z-1_<arch>.deb`: the same for the server, plus its
//!   systemd unit (its own user, state in `/var/lib/aimlvid`, settings in
//!   `/etc/aimlvid/server.toml`, secrets in `/etc/aimlvid/server.env`,
//!   readable by root only) and the maintainer scripts that make and keep
//!   them (`pkg/debian/`).
//!
//! The packages are put together here and built with `dpkg-deb`, so no
//! packaging tool has to be installed. `--debug` packages the debug build
//! (what the tests already built) instead of a release build; `--test`
//! then installs, runs, removes, reinstalls and purges them with
//! `pkg/debian/test-install.sh`, which needs root.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use xshell::{Shell, cmd};

use crate::target_dir::{Profile, TargetDir};

/// What one package holds beyond its binary, man page and completions.
struct Package {
    name: &'static str,
    section: &'static str,
    depends: &'static str,
    summary: &'static str,
    description: &'static str,
    /// (source in the workspace, destination, mode).
    extra: &'static [(&'static str, &'static str, u32)],
    /// Maintainer scripts in `pkg/debian/`, as `<package>.<script>`.
    scripts: &'static [&'static str],
    /// Files under `/etc` that dpkg must not overwrite once edited.
    conffiles: &'static [&'static str],
}

const PACKAGES: [Package; 2] = [
    Package {
        name: "aimlvid",
        section: "video",
        depends: "libc6",
        summary: "extend and generate videos with the AI/ML API, and never lose a paid job",
        description: "The aimlvid command creates video generation jobs with the AI/ML API\n\
             (every video model: extend a clip with Veo 3.1, text-to-video,\n\
             image-to-video, avatars), follows them to a playable file, and keeps\n\
             a journal so that a crash or a lost network never loses a paid job.",
        extra: &[],
        scripts: &[],
        conffiles: &[],
    },
    Package {
        name: "aimlvid-server",
        section: "net",
        depends: "libc6, adduser",
        summary: "team proxy for the AI/ML API's video generation",
        description: "aimlvid-server holds a team's AI/ML API key, hands out team keys with\n\
             limits and budgets, polls every job upstream once however many members\n\
             read it, keeps every job in SQLite or PostgreSQL, and announces\n\
             finished jobs by signed webhooks. It runs as a hardened systemd service.",
        extra: &[
            ("pkg/debian/aimlvid-server.service", "lib/systemd/system/aimlvid-server.service", 0o644),
            ("pkg/debian/server.toml", "etc/aimlvid/server.toml", 0o644),
            ("pkg/debian/server.env", "usr/share/aimlvid-server/server.env", 0o644),
        ],
        scripts: &["postinst", "prerm", "postrm"],
        conffiles: &["/etc/aimlvid/server.toml"],
    },
];

/// The options `cargo xtask deb` takes.
#[derive(Debug, Default)]
pub(crate) struct Options {
    pub(crate) debug: bool,
    pub(crate) test: bool,
}

impl Options {
    pub(crate) fn parse(args: &[&str]) -> Result<Self> {
        let mut options = Options::default();
        for arg in args {
            match *arg {
                "--debug" => options.debug = true,
                "--test" => options.test = true,
                other => bail!("cargo xtask deb: unknown option {other}; use [--debug] [--test]"),
            }
        }
        Ok(options)
    }
}

/// Builds the packages (and tests them with `--test`); returns their paths.
pub(crate) fn run(
    sh: &Shell,
    root: &Path,
    target_dir: &TargetDir,
    options: &Options,
) -> Result<Vec<PathBuf>> {
    let version = crate::dist::workspace_version(root)?;
    let arch =
        cmd!(sh, "dpkg --print-architecture").read().context("dpkg is needed to build .deb packages")?;
    let profile = Profile::debug_if(options.debug);
    let release = profile.cargo_args();
    cmd!(sh, "cargo build {release...} --locked -p aimlvid-cli -p aimlvid-server").run()?;
    let dist = target_dir.dist();
    fs::create_dir_all(&dist)?;
    let mut debs = Vec::new();
    for package in &PACKAGES {
        let built = target_dir.binary(profile, package.name);
        let stage = dist.join(format!("{}-deb", package.name));
        if stage.exists() {
            fs::remove_dir_all(&stage)?;
        }
        stage_package(sh, root, package, &built, &stage)?;
        let installed_kib = size_of(&stage)?.div_ceil(1024);
        let control = format!(
            "Package: {name}\nVersion: {version}-1\nArchitecture: {arch}\n\
             Maintainer: aimlvid developers <aimlvid@users.noreply.github.com>\n\
             Installed-Size: {installed_kib}\nDepends: {depends}\nSection: {section}\nPriority: optional\n\
             Homepage: https://github.com/aimlvid/aimlvid\nDescription: {summary}\n{description}\n",
            name = package.name,
            depends = package.depends,
            section = package.section,
            summary = package.summary,
            description =
                package.description.lines().map(|l| format!(" {}", l.trim())).collect::<Vec<_>>().join("\n"),
        );
        let debian = stage.join("DEBIAN");
        fs::create_dir_all(&debian)?;
        write_file(&debian.join("control"), control.as_bytes(), 0o644)?;
        if !package.conffiles.is_empty() {
            write_file(
                &debian.join("conffiles"),
                format!("{}\n", package.conffiles.join("\n")).as_bytes(),
                0o644,
            )?;
        }
        for script in package.scripts {
            let source = root.join("pkg/debian").join(format!("{}.{script}", package.name));
            write_file(
                &debian.join(script),
                &fs::read(&source).with_context(|| source.display().to_string())?,
                0o755,
            )?;
        }
        let deb = dist.join(format!("{}_{version}-1_{arch}.deb", package.name));
        cmd!(sh, "dpkg-deb --root-owner-group -Zxz --build {stage} {deb}").quiet().run()?;
        fs::remove_dir_all(&stage)?;
        println!("{}", deb.display());
        debs.push(deb);
    }
    if options.test {
        let script = root.join("pkg/debian/test-install.sh");
        let (cli, server) = (&debs[0], &debs[1]);
        cmd!(sh, "bash {script} {cli} {server} {version}").run()?;
    }
    Ok(debs)
}

/// Lays out a package's files under `stage`, as they land on `/`.
fn stage_package(sh: &Shell, root: &Path, package: &Package, built: &Path, stage: &Path) -> Result<()> {
    let bin = package.name;
    let exe = stage.join("usr/bin").join(bin);
    fs::create_dir_all(exe.parent().context("a bin directory")?)?;
    fs::copy(built, &exe).with_context(|| format!("copying {}", built.display()))?;
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755))?;
    // Debug builds are big with symbols; packages do not need them.
    if cmd!(sh, "strip --version").quiet().ignore_stdout().run().is_ok() {
        cmd!(sh, "strip --strip-unneeded {exe}").run()?;
    }
    let page = cmd!(sh, "{exe} man").output()?.stdout;
    if !String::from_utf8_lossy(&page).contains(".TH ") {
        bail!("`{bin} man` did not print a man page");
    }
    let man = stage.join("usr/share/man/man1").join(format!("{bin}.1"));
    write_file(&man, &page, 0o644)?;
    cmd!(sh, "gzip -9n {man}").run()?;
    for (shell, path) in [
        ("bash", format!("usr/share/bash-completion/completions/{bin}")),
        ("zsh", format!("usr/share/zsh/vendor-completions/_{bin}")),
        ("fish", format!("usr/share/fish/vendor_completions.d/{bin}.fish")),
    ] {
        let script = cmd!(sh, "{exe} completions {shell}").output()?.stdout;
        write_file(&stage.join(path), &script, 0o644)?;
    }
    let doc = stage.join("usr/share/doc").join(bin);
    write_file(&doc.join("copyright"), copyright().as_bytes(), 0o644)?;
    write_file(&doc.join("README.md"), &fs::read(root.join("README.md"))?, 0o644)?;
    for (source, destination, mode) in package.extra {
        let bytes = fs::read(root.join(source)).with_context(|| format!("reading {source}"))?;
        write_file(&stage.join(destination), &bytes, *mode)?;
    }
    Ok(())
}

/// The package's copyright file, in Debian's machine-readable format.
fn copyright() -> String {
    let mit = fs::read_to_string(crate::project_root().join("LICENSE-MIT")).unwrap_or_default();
    let mit: String = mit
        .lines()
        .map(|l| if l.trim().is_empty() { " .\n".to_owned() } else { format!(" {l}\n") })
        .collect();
    format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: aimlvid\nSource: https://github.com/aimlvid/aimlvid\n\n\
         Files: *\nCopyright: the aimlvid developers\nLicense: MIT or Apache-2.0\n\n\
         License: MIT\n{mit}\n\
         License: Apache-2.0\n On Debian systems, the complete text of the Apache License 2.0 is in\n \
         /usr/share/common-licenses/Apache-2.0.\n"
    )
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Bytes under `dir`, for `Installed-Size`.
fn size_of(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { size_of(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}
