//! Where settings come from: flags, then the environment, then the config file.
//!
//! The config file (`aimlvid.toml`) holds only `base_url`, `model` and
//! `output_dir`. It never holds the API key: a key belongs in the
//! environment (or in whatever secret manager sets it), not in a file that is
//! easy to commit, back up or share by accident.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Deserialize;

use crate::cli::{Global, ModelArg};
use crate::exit::Failure;

/// The environment variables that name the server, as the library reads them.
const BASE_URL_VARS: [&str; 2] = aimlvid::BASE_URL_ENV_VARS;
/// The environment variables that hold the key, as the library reads them.
pub(crate) const KEY_VARS: [&str; 2] = aimlvid::API_KEY_ENV_VARS;

/// The contents of `aimlvid.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// The server, when neither `--base-url` nor the environment names one.
    pub(crate) base_url: Option<String>,
    /// The default `--model`.
    pub(crate) model: Option<String>,
    /// Where default output files go, instead of the current directory.
    pub(crate) output_dir: Option<PathBuf>,
    /// Present only to refuse it with a helpful message.
    api_key: Option<toml::Value>,
}

/// Everything resolved from flags, environment and config file, before any
/// command runs.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The base URL given by `--base-url`, if any: it beats everything.
    flag_base_url: Option<String>,
    /// The environment's base URL: a job's journaled one beats it, since a
    /// job exists only on the server that created it.
    env_base_url: Option<String>,
    /// The config file's base URL, if any: a job's journaled one beats it.
    file_base_url: Option<String>,
    /// The journal directory.
    pub(crate) journal_dir: PathBuf,
    /// Whether `--journal` (not the environment) chose the journal, so
    /// printed resume commands must repeat it.
    pub(crate) journal_from_flag: bool,
    /// The config file's `model`, as written: `generate`'s default, and
    /// `extend`'s when it names an extend model (see `extend_model`).
    model: Option<String>,
    /// Where default output files go.
    pub(crate) output_dir: PathBuf,
    /// Factor dividing poll and retry waits.
    pub(crate) time_scale: f64,
}

impl Settings {
    /// Resolves the settings, reading the config file if there is one.
    pub(crate) fn resolve(global: &Global) -> anyhow::Result<Settings> {
        let file = load_config(global.config.as_deref())?;
        // Checked by the command that uses it, so that a model for one
        // command does not break the others.
        let model = file.model.filter(|m| !m.trim().is_empty());
        let journal_dir = match &global.journal {
            Some(dir) => dir.clone(),
            None => default_journal_dir()?,
        };
        // Clap folds AIMLVID_JOURNAL into the same field; only a value that
        // differs from the environment's came from the flag.
        let journal_from_flag = global.journal.is_some()
            && std::env::var_os("AIMLVID_JOURNAL").map(PathBuf::from) != global.journal;
        let time_scale = time_scale_from_env()?;
        Ok(Settings {
            flag_base_url: global.base_url.clone(),
            env_base_url: first_env(&BASE_URL_VARS),
            file_base_url: file.base_url,
            journal_dir,
            journal_from_flag,
            model,
            output_dir: file.output_dir.unwrap_or_default(),
            time_scale,
        })
    }

    /// `generate`'s model when `-m` is not given: the config file's
    /// (`fast` and `standard` stand for the extend models, as for `extend`).
    pub(crate) fn generate_model(&self) -> Option<String> {
        let name = self.model.as_deref()?;
        Some(match as_extend_model(name) {
            Some(model) => aimlvid::ExtendModel::from(model).id().to_owned(),
            None => name.to_owned(),
        })
    }

    /// `extend`'s model when `-m` is not given: the config file's if it is
    /// an extend model, refused if it is another, else fast.
    pub(crate) fn extend_model(&self) -> Result<ModelArg, Failure> {
        let Some(name) = self.model.as_deref() else { return Ok(ModelArg::Fast) };
        as_extend_model(name).ok_or_else(|| {
            Failure::usage(format!(
                "the config file's model {name:?} is not an extend model; give extend -m fast or \
                 -m standard (or set model to one of them), or run {name} with `aimlvid generate`"
            ))
        })
    }

    /// The server to talk to about a job: `--base-url`, else the server
    /// the job was created on (from the journal; the job exists nowhere
    /// else), else the environment's, else the config file's, else the API.
    pub(crate) fn base_url(&self, journaled: Option<&str>) -> String {
        self.flag_base_url
            .clone()
            .or_else(|| journaled.map(str::to_owned))
            .or_else(|| self.env_base_url.clone())
            .or_else(|| self.file_base_url.clone())
            .unwrap_or_else(|| aimlvid::DEFAULT_BASE_URL.to_owned())
    }
}

/// `fast`, `standard` or an extend model's id, in any case.
fn as_extend_model(name: &str) -> Option<ModelArg> {
    <ModelArg as clap::ValueEnum>::from_str(name.trim(), true).ok()
}

/// `AIMLVID_TIME_SCALE` divides every poll and retry wait. It exists for
/// tests and demos against a simulator started with the same `--time-scale`
/// (against the real API it would only poll too often), so it is an
/// environment variable and not a flag in `--help`.
fn time_scale_from_env() -> anyhow::Result<f64> {
    let Some(raw) = first_env(&["AIMLVID_TIME_SCALE"]) else { return Ok(1.0) };
    match raw.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        _ => Err(Failure::usage(format!("AIMLVID_TIME_SCALE must be a number above 0, not {raw:?}")).into()),
    }
}

/// The first of `names` set to something other than blanks.
pub(crate) fn first_env(names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

fn project_dirs() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "aimlvid")
}

/// `$XDG_STATE_HOME/aimlvid/jobs` on Linux; where the platform has no state
/// directory, its local data directory instead.
fn default_journal_dir() -> anyhow::Result<PathBuf> {
    let dirs = project_dirs().ok_or_else(|| {
        Failure::usage("cannot find a home directory for the job journal; pass --journal DIR")
    })?;
    let base = dirs.state_dir().unwrap_or_else(|| dirs.data_local_dir());
    Ok(base.join("jobs"))
}

/// Reads the config file: the one named by `--config` (which must exist), or
/// `aimlvid.toml` in the platform's config directory (which may not).
fn load_config(explicit: Option<&Path>) -> anyhow::Result<ConfigFile> {
    let (path, must_exist) = match explicit {
        Some(path) => (path.to_owned(), true),
        None => match project_dirs() {
            Some(dirs) => (dirs.config_dir().join("aimlvid.toml"), false),
            None => return Ok(ConfigFile::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => return Ok(ConfigFile::default()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::usage(format!("config file {}: no such file", path.display())).into());
        }
        Err(e) => return Err(e).with_context(|| format!("reading config file {}", path.display())),
    };
    parse_config(&text).map_err(|e| Failure::usage(format!("config file {}: {e}", path.display())).into())
}

fn parse_config(text: &str) -> Result<ConfigFile, String> {
    // The message from toml spans lines (it quotes the source); keep it to one.
    let file: ConfigFile =
        toml::from_str(text).map_err(|e| e.message().trim().replace('\n', " ").to_string())?;
    if file.api_key.is_some() {
        return Err(format!(
            "api_key is not read from files; set {} in the environment instead, and remove it from the file",
            KEY_VARS[0]
        ));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_file_holds_three_settings() {
        let file = parse_config(
            "base_url = \"https://proxy.example\"\nmodel = \"standard\"\noutput_dir = \"videos\"\n",
        )
        .unwrap();
        assert_eq!(file.base_url.as_deref(), Some("https://proxy.example"));
        assert_eq!(file.model.as_deref(), Some("standard"));
        assert_eq!(file.output_dir, Some(PathBuf::from("videos")));
        assert!(parse_config("").unwrap().base_url.is_none());
    }

    fn with_model(model: Option<&str>) -> Settings {
        Settings {
            flag_base_url: None,
            env_base_url: None,
            file_base_url: None,
            journal_dir: PathBuf::new(),
            journal_from_flag: false,
            model: model.map(str::to_owned),
            output_dir: PathBuf::new(),
            time_scale: 1.0,
        }
    }

    #[test]
    fn the_config_model_is_generates_default_and_extends_when_it_is_an_extend_model() {
        let t2v = with_model(Some("google/veo-3.1-t2v-fast"));
        assert_eq!(t2v.generate_model().as_deref(), Some("google/veo-3.1-t2v-fast"));
        assert_eq!(
            t2v.extend_model().unwrap_err().to_string(),
            "the config file's model \"google/veo-3.1-t2v-fast\" is not an extend model; give extend -m fast \
             or -m standard (or set model to one of them), or run google/veo-3.1-t2v-fast with `aimlvid generate`"
        );
        let standard = with_model(Some("Standard"));
        assert_eq!(standard.extend_model().unwrap(), ModelArg::Standard);
        assert_eq!(standard.generate_model().as_deref(), Some("google/veo3-1-extend-video"));
        let by_id = with_model(Some("google/veo3-1-extend-video"));
        assert_eq!(by_id.extend_model().unwrap(), ModelArg::Standard);
        let none = with_model(None);
        assert_eq!((none.extend_model().unwrap(), none.generate_model()), (ModelArg::Fast, None));
    }

    #[test]
    fn keys_and_typos_in_the_config_file_are_refused() {
        let err = parse_config("api_key = \"sk-secret\"\n").unwrap_err();
        assert!(err.contains("set AIMLAPI_API_KEY in the environment"), "{err}");
        assert!(!err.contains("sk-secret"), "{err}");
        let err = parse_config("base_ulr = \"x\"\n").unwrap_err();
        assert!(err.contains("base_ulr"), "{err}");
        assert!(!err.contains('\n'));
    }
}
