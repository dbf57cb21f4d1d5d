//! `-v` and `RUST_LOG`: diagnostics on stderr, printed between progress redraws.

use std::io::Write;

use indicatif::MultiProgress;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// What each `-v` adds. The library logs every HTTP exchange (method,
/// URL without secrets, status, time) on the `aimlvid::http` target at
/// debug level, and its create/poll/download spans at info.
fn directives(verbose: u8, quiet: bool) -> &'static str {
    match verbose {
        0 if quiet => "error",
        // The library's warnings (a retry, a resumed download) are for -v;
        // the progress display says what a person needs of them.
        0 => "warn,aimlvid=error",
        1 => "warn,aimlvid=info,aimlvid::http=debug,aimlvid_cli=info",
        2 => "info,aimlvid=debug,aimlvid_cli=debug,aimlvid_sim=info",
        _ => "debug,aimlvid=trace,aimlvid_cli=trace,h2=info,rustls=info",
    }
}

/// Installs the subscriber: `RUST_LOG` if set, else the `-v` level.
pub(crate) fn init(verbose: u8, quiet: bool, colors: bool, multi: MultiProgress) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => EnvFilter::new(directives(verbose, quiet)),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Suspending(multi))
        .with_ansi(colors)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_target(verbose >= 2)
        .try_init();
}

/// Writes each log event to stderr with the progress bars out of the way,
/// so that lines and bars do not garble each other.
#[derive(Debug, Clone)]
struct Suspending(MultiProgress);

impl<'a> MakeWriter<'a> for Suspending {
    type Writer = SuspendingWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SuspendingWriter(&self.0)
    }
}

/// One event's writer: the formatter writes a whole event in one call.
#[derive(Debug)]
struct SuspendingWriter<'a>(&'a MultiProgress);

impl Write for SuspendingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_librarys_retries_are_logged_only_with_v() {
        let quiet = EnvFilter::new(directives(0, false)).to_string();
        assert!(quiet.contains("aimlvid=error"), "{quiet}");
        assert!(directives(1, false).contains("aimlvid=info"));
    }

    #[test]
    fn every_level_parses() {
        for verbose in 0..4 {
            for quiet in [false, true] {
                EnvFilter::try_new(directives(verbose, quiet)).unwrap();
            }
        }
    }
}
