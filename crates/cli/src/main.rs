//! `aimlvid`: extend a clip with the AI/ML API and get a playable file back.
//!
//! `main` parses the command line, sets up logging and a Tokio runtime, runs
//! the command, and turns its outcome into one line on stderr (or a JSON
//! `result` object) and an exit code from [`exit`].

mod cache;
mod cli;
mod commands;
mod config;
mod exit;
mod generate;
mod jobs;
mod journal;
mod logging;
mod models;
mod prices;
mod report;
mod sim;
mod timing;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::FromArgMatches as _;
use indicatif::{MultiProgress, ProgressDrawTarget};
use std::io::IsTerminal as _;

use crate::cli::{Cli, Command, JobsAction, ModelsAction};
use crate::config::Settings;
use crate::exit::Interrupted;
use crate::jobs::App;
use crate::report::{Mode, Reporter};

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let choice = cli::color_in_args(&args);
    let no_color = std::env::var_os("NO_COLOR");
    let colors = cli::use_colors(choice, no_color.as_deref(), std::io::stderr().is_terminal());
    let parsed = cli::command()
        .color(if colors { clap::ColorChoice::Always } else { clap::ColorChoice::Never })
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e, colors),
    };
    let mode = Mode::detect(cli.global.quiet, cli.global.json);
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
    logging::init(cli.global.verbose, cli.global.quiet || cli.global.json, colors, multi.clone());
    let report = Reporter::new(mode, multi, colors);

    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            report.failure(&format!("cannot start the async runtime: {e}"), exit::LOCAL, false);
            return ExitCode::from(exit::LOCAL);
        }
    };
    let outcome = runtime.block_on(run(cli, &report));
    // Whatever is still running (an in-process simulator's tasks) ends with us.
    runtime.shutdown_timeout(Duration::from_millis(200));
    let code = match outcome {
        Ok(code) => code,
        Err(err) if exit::is_broken_pipe(&err) => exit::OK,
        Err(err) => {
            let code = exit::code_for(&err);
            let interrupted = err.chain().any(|c| c.is::<Interrupted>());
            report.failure(&exit::one_line(&err), code, interrupted);
            code
        }
    };
    ExitCode::from(code)
}

async fn run(cli: Cli, report: &Reporter) -> anyhow::Result<u8> {
    let command = match cli.command {
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cli::command(), "aimlvid", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)?;
            out.flush()?;
            return Ok(exit::OK);
        }
        Command::Man => {
            let page = cli::man_page()?;
            let mut out = std::io::stdout().lock();
            out.write_all(&page)?;
            out.flush()?;
            return Ok(exit::OK);
        }
        Command::Sim(args) => {
            sim::serve(&args, report).await?;
            return Ok(exit::OK);
        }
        command => command,
    };
    let settings = Settings::resolve(&cli.global)?;
    let app = App::new(settings, report, cli.global.simulate).await?;
    match command {
        Command::Extend(args) => commands::extend(&app, args).await,
        Command::Generate(args) => generate::generate(&app, args).await,
        Command::Models(args) => match args.action {
            Some(ModelsAction::Show { id }) => models::show(&app, &id).await,
            None if args.check => models::check(&app).await,
            None => models::list(&app, args.search.as_deref(), args.family),
        },
        Command::Status { id } => commands::status(&app, &id).await,
        Command::Wait { id, output, force } => commands::wait(&app, &id, output, force).await,
        Command::Download { id, output, force } => commands::download(&app, &id, output, force).await,
        Command::Jobs { action: None } => commands::jobs(&app),
        Command::Jobs { action: Some(JobsAction::Rm { records, force }) } => {
            commands::jobs_rm(&app, &records, force)
        }
        Command::Jobs { action: Some(JobsAction::Prune { older_than, dry_run }) } => {
            commands::jobs_prune(&app, older_than, dry_run)
        }
        Command::Resume { force, retry_failed } => commands::resume(&app, force, retry_failed).await,
        Command::Completions { .. } | Command::Man | Command::Sim(_) => unreachable!("handled above"),
    }
}

/// Clap's errors span several lines; scripts and people get the first
/// paragraph on one line, then clap's `tip:` lines (how to fix it) as they
/// are. Help and version go out as clap prints them.
fn usage_error(e: &clap::Error, colors: bool) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(exit::USAGE);
    }
    let _ = std::io::stderr().write_all(usage_message(e, colors).as_bytes());
    ExitCode::from(exit::USAGE)
}

fn usage_message(e: &clap::Error, colors: bool) -> String {
    let rendered = e.render();
    let plain = rendered.to_string();
    let styled = if colors { rendered.ansi().to_string() } else { plain.clone() };
    // The styled text has the same lines as the plain one: match on the plain.
    let lines: Vec<(&str, &str)> = plain.lines().map(str::trim).zip(styled.lines().map(str::trim)).collect();
    let first: Vec<&str> = lines.iter().take_while(|(p, _)| !p.is_empty()).map(|(_, s)| *s).collect();
    let mut out = format!("{} (see aimlvid --help)\n", first.join(" "));
    for (_, tip) in lines.iter().filter(|(p, _)| p.starts_with("tip:")) {
        out.push_str(&format!("  {tip}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_are_one_line_and_keep_clap_tips() {
        let e = cli::command().try_get_matches_from(["aimlvid", "extend", "--prompt"]).unwrap_err();
        let text = usage_message(&e, false);
        assert_eq!(text.lines().count(), 1, "{text}");
        let e = cli::command().try_get_matches_from(["aimlvid", "--pormpt", "x", "extend"]).unwrap_err();
        let text = usage_message(&e, false);
        assert!(text.lines().next().unwrap().starts_with("error: unexpected argument '--pormpt'"), "{text}");
        assert!(text.lines().skip(1).any(|l| l.trim_start().starts_with("tip:")), "{text}");
        assert!(!text.contains('\x1b'), "no colour unless asked: {text:?}");
        assert!(usage_message(&e, true).contains('\x1b'));
    }

    #[test]
    fn colours_follow_the_flag_then_no_color_then_the_terminal() {
        use clap::ColorChoice::{Always, Auto, Never};
        let set = Some(std::ffi::OsStr::new("1"));
        assert!(cli::use_colors(Always, set, false));
        assert!(!cli::use_colors(Never, None, true));
        assert!(cli::use_colors(Auto, None, true));
        assert!(!cli::use_colors(Auto, set, true), "NO_COLOR");
        assert!(cli::use_colors(Auto, Some(std::ffi::OsStr::new("")), true), "an empty NO_COLOR is unset");
        assert!(!cli::use_colors(Auto, None, false));
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(cli::color_in_args(&args(&["aimlvid", "--color", "never", "jobs"])), Never);
        assert_eq!(cli::color_in_args(&args(&["aimlvid", "jobs", "--color=always"])), Always);
        assert_eq!(cli::color_in_args(&args(&["aimlvid", "--", "--color=always"])), Auto);
    }
}
