//! The command line's grammar: every subcommand, flag and help text.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// The exit-code table, shown at the end of `--help` (README has the same).
const AFTER_HELP: &str = "\
Exit codes:
  0    success
  1    a local file could not be read or written (a paid job's video too: the
       error prints the `aimlvid download` command that gets it)
  2    usage or bad input; nothing was sent
  3    authentication: no API key, key refused, or out of credits
  4    invalid request: the API refused the request, or no such generation
  5    generation failed: the job ended in error
  6    not finished: timed out waiting, or not ready to download; the job keeps running
  7    network or upstream trouble (or a base URL that is not the API); nothing was
       created, or the job keeps running
  8    a create whose outcome is unknown: it may have been accepted and billed;
       it is journaled (aimlvid jobs) and must not simply be retried: `aimlvid
       resume` finds it in the API's request logs (and exits 8 while it cannot)
  130  interrupted (Ctrl-C); the job keeps running and the command that resumes it is printed

Configuration: flags, then the environment (AIMLAPI_API_KEY, AIMLAPI_BASE_URL),
then the config file (aimlvid.toml in the platform's config directory: base_url,
model, output_dir). The API key is read from the environment only. A journaled
job is always followed on the server that created it, unless --base-url says otherwise.

Environment:
  AIMLAPI_API_KEY     the API key (or AIML_API_KEY)
  AIMLAPI_BASE_URL    the server, as --base-url (or AIMLAPI_API_BASE)
  AIMLVID_JOURNAL     the journal directory, as --journal
  AIMLVID_CONFIG      the config file, as --config
  AIMLVID_ALLOW_HTTP  1 to allow a plain http:// base URL beyond this machine and private networks
  AIMLVID_TIME_SCALE  for a simulator on this machine or network started with --time-scale N:
                      divide every poll and retry wait by N (ignored for other servers)
  NO_COLOR            any value turns colour off";

/// Extend a video clip with the AI/ML API's Veo 3.1 models and get a playable file back.
///
/// Every created job is recorded in a local journal before waiting starts, so a
/// killed process, a crash or a lost network never loses a paid job: `aimlvid
/// resume` picks them all up again.
#[derive(Debug, Parser)]
#[command(name = "aimlvid", version, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Flags every subcommand accepts, shown under their own heading.
#[derive(Debug, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct Global {
    // `help` rather than a doc comment: rustdoc would flag the bare URL.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        help = "The API server, such as a team proxy [env: AIMLAPI_BASE_URL] [default: https://api.aimlapi.com]"
    )]
    pub(crate) base_url: Option<String>,

    /// Directory of the job journal [default: the platform's state directory]
    #[arg(long, global = true, value_name = "DIR", env = "AIMLVID_JOURNAL", hide_env_values = true)]
    pub(crate) journal: Option<PathBuf>,

    /// Config file [default: aimlvid.toml in the platform's config directory]
    #[arg(long, global = true, value_name = "FILE", env = "AIMLVID_CONFIG", hide_env_values = true)]
    pub(crate) config: Option<PathBuf>,

    /// Run against a simulator started in this process: no key, no network, a real MP4
    #[arg(long, global = true)]
    pub(crate) simulate: bool,

    /// Show the HTTP exchanges (-v), then more detail (-vv, -vvv); secrets are redacted
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub(crate) verbose: u8,

    /// No progress display; print only the result and errors
    #[arg(short, long, global = true, conflicts_with = "json")]
    pub(crate) quiet: bool,

    /// Print one JSON object per event on stdout (NDJSON), ending with a `result` object
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// When to use colours: auto (a terminal, and NO_COLOR unset), always or never
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub(crate) color: clap::ColorChoice,
}

/// The grammar as parsed and shown: `Cli`'s, with the global flags a
/// subcommand ignores hidden from its help.
pub(crate) fn command() -> clap::Command {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    // `sim` serves a simulator: it talks to no server, keeps no journal and
    // reads no config, so those global flags are not its to show (it
    // honours --json, -q, -v and --color). A global flag reaches each
    // subcommand that has no argument of its id, so `sim` gets hidden
    // copies of those: still accepted, and parsed alike.
    const UNUSED_BY_SIM: [&str; 4] = ["base_url", "journal", "config", "simulate"];
    let hidden: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|arg| UNUSED_BY_SIM.contains(&arg.get_id().as_str()))
        .map(|arg| arg.clone().global(false).hide(true))
        .collect();
    cmd.mut_subcommand("sim", |sim| sim.args(hidden))
}

/// The manual page (roff): the command, its global flags, then every
/// subcommand with its own options inline, so that one page documents all
/// of them (no page per subcommand is shipped).
pub(crate) fn man_page() -> std::io::Result<Vec<u8>> {
    let mut cmd = command();
    // Built, so that each subcommand knows its full name (`aimlvid jobs rm`).
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    page.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands() {
        command_inline(sub, &mut page)?;
    }
    man.render_extra_section(&mut page)?;
    man.render_version_section(&mut page)?;
    Ok(page)
}

/// One subcommand (and its own subcommands) as a subsection: its usage,
/// description and options, without the global flags documented above.
fn command_inline(cmd: &clap::Command, page: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Write as _;
    if cmd.is_hide_set() || cmd.get_name() == "help" {
        return Ok(());
    }
    let own = cmd.clone().mut_args(|arg| if arg.is_global_set() { arg.hide(true) } else { arg });
    let name = own.get_bin_name().unwrap_or_else(|| own.get_name()).to_owned();
    writeln!(page, ".SS \"{name}\"")?;
    let man = clap_mangen::Man::new(own.clone());
    let mut sections = Vec::new();
    man.render_synopsis_section(&mut sections)?;
    man.render_description_section(&mut sections)?;
    if own.get_arguments().any(|arg| !arg.is_hide_set()) {
        man.render_options_section(&mut sections)?;
    }
    // Each of its sections becomes a paragraph of the subsection.
    for line in String::from_utf8_lossy(&sections).lines() {
        let line = if line.starts_with(".SH ") { ".PP" } else { line };
        writeln!(page, "{line}")?;
    }
    for sub in own.get_subcommands() {
        command_inline(sub, page)?;
    }
    Ok(())
}

/// Whether output uses colour: `--color`, then `NO_COLOR` (any non-empty
/// value turns colour off, see no-color.org), then whether stderr is a terminal.
pub(crate) fn use_colors(
    choice: clap::ColorChoice,
    no_color: Option<&std::ffi::OsStr>,
    terminal: bool,
) -> bool {
    match choice {
        clap::ColorChoice::Always => true,
        clap::ColorChoice::Never => false,
        clap::ColorChoice::Auto => terminal && no_color.is_none_or(|v| v.is_empty()),
    }
}

/// The `--color` in `args`, read before clap parses them so that clap's own
/// help and errors follow it too.
pub(crate) fn color_in_args(args: &[std::ffi::OsString]) -> clap::ColorChoice {
    let mut choice = clap::ColorChoice::Auto;
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        let value = match arg.strip_prefix("--color") {
            Some("") => args.next().map(|v| v.into_owned()),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => None,
        };
        match value.as_deref() {
            Some("always") => choice = clap::ColorChoice::Always,
            Some("never") => choice = clap::ColorChoice::Never,
            Some("auto") => choice = clap::ColorChoice::Auto,
            _ => {}
        }
    }
    choice
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Extend a clip: create the job, wait for it, and download the result
    Extend(ExtendArgs),
    /// Generate with any video model: text, image, video or audio in, a video out
    Generate(GenerateArgs),
    /// List the video models, or show one's parameters and price
    #[command(args_conflicts_with_subcommands = true)]
    Models(ModelsArgs),
    /// Ask once how a generation is doing
    Status {
        /// The generation id
        id: String,
    },
    /// Wait for a generation to finish, then download its result
    Wait {
        /// The generation id
        id: String,
        /// Where to write the video (a directory: into it) [default: the journal's path for the job, else ID.mp4]
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists
        #[arg(long)]
        force: bool,
    },
    /// Download a completed generation's result (resuming a partial download)
    Download {
        /// The generation id
        id: String,
        /// Where to write the video (a directory: into it) [default: the journal's path for the job, else ID.mp4]
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace the output file if it exists
        #[arg(long)]
        force: bool,
    },
    /// List the jobs recorded in the journal, or remove records from it
    Jobs {
        #[command(subcommand)]
        action: Option<JobsAction>,
    },
    /// Wait for and download every unfinished job in the journal, continuing chains
    Resume {
        /// Replace output files that exist
        #[arg(long)]
        force: bool,
        /// Also run failed jobs again (a failed chain step continues its
        /// chain), each once: a job already run again is not retried twice
        #[arg(long)]
        retry_failed: bool,
    },
    /// Run the upstream simulator on a port
    Sim(aimlvid_sim::cli::SimArgs),
    /// Print a shell completion script
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), as packages install it
    #[command(hide = true)]
    Man,
}

/// `aimlvid jobs …`.
#[derive(Debug, Subcommand)]
pub(crate) enum JobsAction {
    /// Remove journal records, by record key or generation id
    ///
    /// A record whose job may still run or be billed (creating, unknown,
    /// queued, generating, completed but not downloaded) is removed only
    /// with --force: without its record, `aimlvid resume` no longer finds it.
    Rm {
        /// Record keys (as `aimlvid jobs --json` shows them) or generation ids
        #[arg(required = true, value_name = "KEY|ID")]
        records: Vec<String>,
        /// Remove records of jobs that may still run or be billed
        #[arg(long)]
        force: bool,
    },
    /// Remove the records of finished jobs: downloaded, failed or refused
    Prune {
        /// Only records older than this, such as 30d or 12h
        #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
        /// Say what would be removed, remove nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// `aimlvid extend`.
#[derive(Debug, Args)]
pub(crate) struct ExtendArgs {
    /// The clip to extend: a local video file or an https:// URL [optional with --simulate]
    // Checked when the command runs: clap cannot see a global `--simulate`
    // given before the subcommand name.
    #[arg(value_name = "VIDEO")]
    pub(crate) video: Option<String>,

    /// What should happen in the extension; repeat to extend several times in a chain
    #[arg(short, long = "prompt", value_name = "TEXT", required = true)]
    pub(crate) prompts: Vec<String>,

    #[arg(
        short,
        long,
        value_name = "FILE",
        help = "Where to write the result (a directory: into it) [default: <VIDEO stem>-extended.mp4, or extended.mp4 for a URL]"
    )]
    pub(crate) output: Option<PathBuf>,

    /// Replace the output file if it exists
    #[arg(long)]
    pub(crate) force: bool,

    /// The extend model [default: fast, or the config file's `model`]
    #[arg(short, long, value_enum)]
    pub(crate) model: Option<ModelArg>,

    /// Aspect ratio of the result [server default: auto]
    #[arg(long, value_name = "RATIO", value_parser = ["auto", "16:9", "9:16"])]
    pub(crate) aspect_ratio: Option<String>,

    /// Length of the extension in seconds; the extend models accept only 7 [server default: 7]
    #[arg(long, value_name = "SECONDS")]
    pub(crate) duration: Option<u32>,

    /// Resolution; the extend models accept only 720p [server default: 720p]
    #[arg(long, value_name = "RES")]
    pub(crate) resolution: Option<String>,

    /// Do not generate sound
    #[arg(long)]
    pub(crate) no_audio: bool,

    /// Let the API rewrite a prompt that fails its content checks
    #[arg(long)]
    pub(crate) auto_fix: bool,

    /// Which provider runs the job [server default: auto]
    #[arg(long, value_enum)]
    pub(crate) provider: Option<ProviderArg>,

    /// Extend this many times, each result becoming the next input (repeats the prompt list)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub(crate) times: u32,

    /// Create the job, print its id and exit without waiting
    #[arg(long, conflicts_with = "times")]
    pub(crate) no_wait: bool,

    /// Check the request and print it (the video elided) with its price where known; send nothing
    #[arg(long, conflicts_with = "no_wait")]
    pub(crate) dry_run: bool,
}

/// `aimlvid generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The model id, such as google/veo-3.1-t2v-fast (`aimlvid models` lists them) [default: the config file's `model`]
    #[arg(short, long, value_name = "ID", value_parser = ModelIdParser, hide_possible_values = true)]
    pub(crate) model: Option<String>,

    /// What the video should show
    #[arg(short, long, value_name = "TEXT")]
    pub(crate) prompt: Option<String>,

    /// An image for the model's image parameter: a local file or an https:// URL (repeat for a list)
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) image: Vec<String>,

    /// A video for the model's video parameter: a local file or an https:// URL (repeat for a list)
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) video: Vec<String>,

    /// A sound track for the model's audio parameter: a local file or an https:// URL (repeat for a list)
    #[arg(long, value_name = "FILE|URL")]
    pub(crate) audio: Vec<String>,

    /// Any other parameter, typed from the model's schema: duration=10 sends a number,
    /// last_image_url=end.png sends the file (`aimlvid models show ID` lists them)
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub(crate) params: Vec<String>,

    /// Where to write the result (a directory: into it) [default: <model name>.mp4; more results: -2, -3… beside it]
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// Replace the output file if it exists
    #[arg(long)]
    pub(crate) force: bool,

    /// Create the job, print its id and exit without waiting
    #[arg(long)]
    pub(crate) no_wait: bool,

    /// Check the request and print it (media elided) with its price where known; send nothing
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Send the request without checking it against the catalog (for a model or
    /// parameter newer than this aimlvid)
    #[arg(long)]
    pub(crate) skip_validation: bool,
}

/// `aimlvid models`.
#[derive(Debug, Args)]
pub(crate) struct ModelsArgs {
    #[command(subcommand)]
    pub(crate) action: Option<ModelsAction>,

    /// Only models whose id contains this
    pub(crate) search: Option<String>,

    /// Only models of this family
    #[arg(long, value_name = "FAMILY", value_parser = family_parser())]
    pub(crate) family: Option<aimlvid::catalog::Family>,

    /// Compare this build's catalog with the API's: models it adds, models
    /// it no longer lists (creates for them are refused), price changes
    #[arg(long, conflicts_with_all = ["search", "family"])]
    pub(crate) check: bool,
}

/// `aimlvid models …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelsAction {
    /// A model's parameters (type, default, allowed values, required) and its price
    Show {
        /// The model id
        #[arg(value_parser = ModelIdParser, hide_possible_values = true)]
        id: String,
    },
}

fn family_parser() -> impl clap::builder::TypedValueParser<Value = aimlvid::catalog::Family> {
    use clap::builder::TypedValueParser as _;
    let names: Vec<&'static str> = aimlvid::catalog::Family::ALL.iter().map(|f| f.as_str()).collect();
    clap::builder::PossibleValuesParser::new(names).map(|name| name.parse().expect("a listed family"))
}

/// Any model id (the catalog may be behind the API), with the catalog's
/// ids offered to shell completion.
#[derive(Debug, Clone, Copy)]
struct ModelIdParser;

impl clap::builder::TypedValueParser for ModelIdParser {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<String, clap::Error> {
        clap::builder::NonEmptyStringValueParser::new().parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(aimlvid::catalog::models().map(|m| clap::builder::PossibleValue::new(m.id.as_str()))))
    }
}

/// `--model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ModelArg {
    /// google/veo3-1-fast-extend-video: faster and cheaper
    #[value(alias = "google/veo3-1-fast-extend-video")]
    Fast,
    /// google/veo3-1-extend-video
    #[value(alias = "google/veo3-1-extend-video")]
    Standard,
}

impl From<ModelArg> for aimlvid::ExtendModel {
    fn from(m: ModelArg) -> Self {
        match m {
            ModelArg::Fast => aimlvid::ExtendModel::Fast,
            ModelArg::Standard => aimlvid::ExtendModel::Standard,
        }
    }
}

/// `--provider`: the documented values only, so a typo fails here rather than upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderArg {
    /// Google first, then fal.ai as fallback
    Auto,
    /// Google only
    Google,
    /// fal.ai only
    Fal,
}

impl From<ProviderArg> for aimlvid::Provider {
    fn from(p: ProviderArg) -> Self {
        match p {
            ProviderArg::Auto => aimlvid::Provider::Auto,
            ProviderArg::Google => aimlvid::Provider::Google,
            ProviderArg::Fal => aimlvid::Provider::Fal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_grammar_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_every_exit_code() {
        let help = Cli::command().render_long_help().to_string();
        for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "6 ", "7 ", "8 ", "130 "] {
            assert!(help.contains(&format!("\n  {code}")), "{code} missing from:\n{help}");
        }
    }

    #[test]
    fn global_flags_have_their_own_heading_and_the_environment_is_listed() {
        let help = Cli::command().render_long_help().to_string();
        let global = help.find("Global options:").expect("a Global options heading");
        for flag in ["--base-url", "--journal", "--simulate", "--json", "--color"] {
            let at = help.find(&format!("      {flag}")).or_else(|| help.find(&format!(", {flag}"))).unwrap();
            assert!(at > global, "{flag} is not under Global options:\n{help}");
        }
        assert!(help.contains("AIMLVID_TIME_SCALE"), "{help}");
        let mut cli = Cli::command();
        // Global flags reach the subcommands when the command is built, as parsing does.
        cli.build();
        let extend = cli.find_subcommand_mut("extend").unwrap().render_long_help().to_string();
        let (own, global) = extend.split_once("Global options:").expect("extend's help separates them");
        assert!(own.contains("--prompt") && !own.contains("--base-url"), "{extend}");
        assert!(global.contains("--base-url"), "{extend}");
    }

    /// Every subcommand, nested ones too, as built.
    fn all_subcommands(cmd: &clap::Command) -> Vec<clap::Command> {
        let mut all = Vec::new();
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            all.push(sub.clone());
            all.extend(all_subcommands(sub));
        }
        all
    }

    #[test]
    fn the_man_page_documents_every_flag_of_every_subcommand() {
        let page = String::from_utf8(man_page().unwrap()).unwrap().replace("\\-", "-");
        assert!(!page.contains("aimlvid-extend(1)") && !page.contains("(1)"), "no pages that do not exist");
        let mut cmd = command();
        cmd.build();
        let mut checked = 0;
        for sub in std::iter::once(cmd.clone()).chain(all_subcommands(&cmd)) {
            if sub.is_hide_set() {
                continue;
            }
            let name = sub.get_bin_name().unwrap_or(sub.get_name()).to_owned();
            assert!(page.contains(&format!(".SS \"{name}\"")) || sub.get_name() == "aimlvid", "{name}");
            for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
                let mut names: Vec<String> = arg.get_long().map(|l| format!("--{l}")).into_iter().collect();
                names.extend(arg.get_short().map(|s| format!("-{s}")));
                if arg.is_positional() {
                    names.extend(arg.get_value_names().into_iter().flatten().map(|v| v.to_string()));
                }
                for flag in names {
                    assert!(page.contains(&flag), "{name}'s {flag} is not in the man page");
                    checked += 1;
                }
            }
        }
        // The ones a newcomer missed, among them.
        for flag in ["--param", "--times", "--dry-run", "--retry-failed", "--older-than", "--family"] {
            assert!(page.contains(flag), "{flag}");
        }
        assert!(checked > 50, "only {checked} flags checked");
    }

    #[test]
    fn sim_help_shows_only_the_flags_it_uses() {
        let mut cmd = command();
        // Global flags reach the subcommands when the command is built, as parsing does.
        cmd.build();
        let sim = cmd.find_subcommand_mut("sim").unwrap().render_long_help().to_string();
        for ignored in ["--simulate", "--base-url", "--journal", "--config"] {
            assert!(!sim.contains(ignored), "{ignored} in:\n{sim}");
        }
        for used in ["--port", "--time-scale", "--json", "--quiet", "--verbose"] {
            assert!(sim.contains(used), "{used} missing from:\n{sim}");
        }
        let extend = cmd.find_subcommand_mut("extend").unwrap().render_long_help().to_string();
        assert!(extend.contains("--simulate") && extend.contains("--base-url"), "{extend}");
    }

    #[test]
    fn simulate_is_accepted_before_or_after_the_subcommand() {
        for args in
            [["aimlvid", "extend", "-p", "x", "--simulate"], ["aimlvid", "--simulate", "extend", "-p", "x"]]
        {
            let cli = Cli::try_parse_from(args).unwrap();
            assert!(cli.global.simulate);
        }
    }

    #[test]
    fn completions_offer_every_model_id_and_any_id_is_accepted() {
        let mut script = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "aimlvid", &mut script);
        let script = String::from_utf8(script).unwrap();
        assert!(script.contains("google/veo-3.1-t2v-fast"), "model ids are completed");
        let cli = Cli::try_parse_from(["aimlvid", "generate", "-m", "acme/next-year", "-p", "x"]).unwrap();
        let Command::Generate(args) = cli.command else { panic!("not generate") };
        assert_eq!(args.model.as_deref(), Some("acme/next-year"));
        let cli = Cli::try_parse_from(["aimlvid", "models", "show", "google/veo3"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Models(ModelsArgs { action: Some(ModelsAction::Show { .. }), .. })
        ));
        let cli = Cli::try_parse_from(["aimlvid", "models", "veo", "--family", "extend"]).unwrap();
        let Command::Models(args) = cli.command else { panic!("not models") };
        assert_eq!(
            (args.search.as_deref(), args.family),
            (Some("veo"), Some(aimlvid::catalog::Family::Extend))
        );
    }

    #[test]
    fn models_accept_their_full_ids() {
        let cli = Cli::try_parse_from([
            "aimlvid",
            "extend",
            "a.mp4",
            "-p",
            "x",
            "-m",
            "google/veo3-1-extend-video",
        ])
        .unwrap();
        let Command::Extend(args) = cli.command else { panic!("not extend") };
        assert_eq!(args.model, Some(ModelArg::Standard));
    }
}
