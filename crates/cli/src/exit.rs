//! Exit codes, and which error earns which.
//!
//! The table is part of the interface: `--help` and README list it, and
//! scripts branch on it. Change a number only with a major version.

/// Success.
pub(crate) const OK: u8 = 0;
/// A local file could not be read or written (or anything unforeseen).
pub(crate) const LOCAL: u8 = 1;
/// Usage or bad input: nothing was sent.
pub(crate) const USAGE: u8 = 2;
/// No key, key refused, or out of credits.
pub(crate) const AUTH: u8 = 3;
/// The API refused the request, or knows no such generation.
pub(crate) const INVALID: u8 = 4;
/// The generation ended in error.
pub(crate) const FAILED: u8 = 5;
/// Timed out waiting, or not ready to download: the job keeps running.
pub(crate) const NOT_FINISHED: u8 = 6;
/// Network or upstream trouble: nothing was created, or a job that exists is fine.
pub(crate) const NETWORK: u8 = 7;
/// A create whose outcome is unknown: it may have been accepted and billed.
/// Apart from 7 so that a retry loop on failure cannot pay twice.
pub(crate) const OUTCOME_UNKNOWN: u8 = 8;
/// Ctrl-C; 128 + SIGINT, as shells report it.
pub(crate) const INTERRUPTED: u8 = 130;

/// An error the command line itself detected, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    pub(crate) code: u8,
    message: String,
}

impl Failure {
    /// Bad input or usage (exit 2): said before any request is sent.
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure { code: USAGE, message: message.into() }
    }

    /// A failure with the given exit code.
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }
}

/// Another aimlvid process holds the job's journal record (it is following
/// the job): this one leaves it alone.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Busy(pub(crate) String);

/// Ctrl-C arrived: the message says what is still running and how to
/// pick it up again. Printed as is, not as an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Interrupted(pub(crate) String);

/// The exit code an error deserves: the first cause in its chain that says.
pub(crate) fn code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if cause.is::<Interrupted>() {
            return INTERRUPTED;
        }
        if cause.is::<Busy>() {
            return NOT_FINISHED;
        }
        if let Some(e) = cause.downcast_ref::<aimlvid::Error>() {
            return code_for_api(e);
        }
    }
    LOCAL
}

fn code_for_api(e: &aimlvid::Error) -> u8 {
    use aimlvid::Error as E;
    match e {
        E::MissingApiKey | E::Unauthorized { .. } | E::OutOfCredits { .. } => AUTH,
        E::Config(_)
        | E::PlainHttp { .. }
        | E::InvalidInput(_)
        | E::Validation(_)
        | E::ModelNotListed { .. } => USAGE,
        // A request was sent (so not 2), to a server that is not the API:
        // nothing was created, as when nothing listens there at all.
        E::NotTheApi { .. } => NETWORK,
        E::InvalidRequest { .. } | E::NotFound { .. } => INVALID,
        E::GenerationFailed { .. } => FAILED,
        E::TimedOut { .. } => NOT_FINISHED,
        E::Io { .. } => LOCAL,
        E::CreateOutcomeUnknown { .. } => OUTCOME_UNKNOWN,
        // Rate limits, 5xx, transport, decode, incomplete downloads, and
        // whatever a later library version adds.
        _ => NETWORK,
    }
}

/// The name of an exit code's kind, as `--json` results give it.
pub(crate) fn kind(code: u8) -> &'static str {
    match code {
        OK => "ok",
        USAGE => "usage",
        AUTH => "auth",
        INVALID => "invalid_request",
        FAILED => "generation_failed",
        NOT_FINISHED => "not_finished",
        NETWORK => "network",
        OUTCOME_UNKNOWN => "create_outcome_unknown",
        INTERRUPTED => "interrupted",
        _ => "local",
    }
}

/// Whether the error is only that stdout was closed (`aimlvid jobs | head`),
/// which is not a failure.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Resolves when Ctrl-C arrives; never, where signals cannot be watched.
pub(crate) async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A library error in the command line's own words, where the library's
/// names its Rust API (`ClientBuilder::…`, `Client::…`) or says what the
/// command line says better (its flags and commands).
fn in_cli_words(e: &aimlvid::Error) -> Option<String> {
    use aimlvid::Error as E;
    const BASE_URL: &str = "--base-url, AIMLAPI_BASE_URL or the config file's base_url";
    Some(match e {
        E::MissingApiKey => "no API key: set AIMLAPI_API_KEY in the environment (keys are at \
                             https://aimlapi.com/app/keys), or add --simulate to try aimlvid without one"
            .to_owned(),
        E::PlainHttp { base_url } => format!(
            "base URL {base_url} would send the API key unencrypted over plain http://; use https://, \
             or, for a server on a network you trust, set AIMLVID_ALLOW_HTTP=1"
        ),
        E::NotTheApi { host, status, message } => format!(
            "{host} does not look like the AI/ML API: a create there was answered {status} ({message}); \
             check the base URL ({BASE_URL}); nothing was created"
        ),
        e if e.is_unreachable() => {
            let E::Transport { host, .. } = e else { return None };
            format!(
                "cannot connect to {host}; check that the server is running, and the base URL ({BASE_URL})"
            )
        }
        E::CreateOutcomeUnknown { cause, client_request_id } => format!(
            "the create request may have been accepted, but its answer was lost ({cause}); a job may \
             exist and be billed. It was not retried, so that it is not paid twice: `aimlvid resume` \
             finds it in the API's request logs by its client request id {client_request_id}; or look in \
             your generation history at https://aimlapi.com/app before creating it again"
        ),
        _ => return None,
    })
}

/// An error on one line: the messages of its chain down to the library's
/// error (whose message already includes its direct cause, and which is
/// put in the command line's words), then the deepest cause, which is
/// often the useful one ("Connection refused").
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut chain = err.chain();
    for cause in chain.by_ref() {
        if let Some(e) = cause.downcast_ref::<aimlvid::Error>() {
            parts.push(in_cli_words(e).unwrap_or_else(|| e.to_string()));
            break;
        }
        parts.push(cause.to_string());
    }
    let mut line = parts.join(": ");
    if let Some(root) = chain.last() {
        let root = root.to_string();
        if !line.contains(&root) {
            line.push_str(&format!(" (cause: {root})"));
        }
    }
    line.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn library_errors_map_to_their_documented_codes() {
        let cases: Vec<(aimlvid::Error, u8)> = vec![
            (aimlvid::Error::MissingApiKey, AUTH),
            (aimlvid::Error::Unauthorized { message: "m".into(), request_id: None }, AUTH),
            (aimlvid::Error::OutOfCredits { message: "m".into(), request_id: None }, AUTH),
            (aimlvid::Error::InvalidInput("x".into()), USAGE),
            (
                aimlvid::Error::InvalidRequest { message: "m".into(), details: vec![], request_id: None },
                INVALID,
            ),
            (aimlvid::Error::NotFound { id: "g".into(), message: "m".into() }, INVALID),
            (
                aimlvid::Error::GenerationFailed { id: "g".into(), name: "n".into(), message: "m".into() },
                FAILED,
            ),
            (
                aimlvid::Error::TimedOut {
                    id: "g".into(),
                    last_status: aimlvid::Status::Queued,
                    waited: Duration::from_secs(1),
                },
                NOT_FINISHED,
            ),
            (
                aimlvid::Error::CreateOutcomeUnknown {
                    cause: "c".into(),
                    client_request_id: aimlvid::ClientRequestId::new("k").unwrap(),
                },
                OUTCOME_UNKNOWN,
            ),
            (aimlvid::Error::RateLimited { message: "m".into(), retry_after: None }, NETWORK),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            let err = anyhow::Error::new(error).context("while doing something");
            assert_eq!(code_for(&err), code, "{shown}");
        }
    }

    #[test]
    fn cli_failures_and_interrupts_keep_their_codes() {
        assert_eq!(code_for(&Failure::usage("bad").into()), USAGE);
        assert_eq!(code_for(&Interrupted("stop".into()).into()), INTERRUPTED);
        assert_eq!(code_for(&anyhow::anyhow!("something else")), LOCAL);
        let pipe =
            anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe)).context("writing");
        assert!(is_broken_pipe(&pipe));
        assert!(!is_broken_pipe(&anyhow::anyhow!("x")));
    }

    #[test]
    fn library_errors_are_told_without_rust_names() {
        let client_request_id = aimlvid::ClientRequestId::new("k1").unwrap();
        let cases = [
            aimlvid::Error::MissingApiKey,
            aimlvid::Error::PlainHttp { base_url: "http://proxy.example".into() },
            aimlvid::Error::NotTheApi {
                host: "example.com".into(),
                status: 404,
                message: "Cannot POST".into(),
            },
            aimlvid::Error::CreateOutcomeUnknown { cause: "timed out".into(), client_request_id },
        ];
        let rust_name = |s: &str| s.split_whitespace().any(|w| w.contains("::"));
        for error in cases {
            let library = error.to_string();
            let line = one_line(&anyhow::Error::new(error));
            assert!(!rust_name(&line), "{line}");
            assert!(rust_name(&library) || line != library, "no rewording needed for: {library}");
        }
        let line = one_line(&anyhow::Error::new(aimlvid::Error::NotTheApi {
            host: "example.com".into(),
            status: 404,
            message: "Cannot POST".into(),
        }));
        assert!(line.contains("--base-url") && !line.contains("not found"), "{line}");
    }

    #[test]
    fn errors_fit_on_one_line_without_repeating_themselves() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied\nreally");
        let lib = aimlvid::Error::Io { action: "writing", path: "/x/out.mp4".into(), source: io };
        let err = anyhow::Error::new(lib).context("saving the result");
        assert_eq!(one_line(&err), "saving the result: writing /x/out.mp4: denied really");
        let plain = anyhow::anyhow!("root").context("middle").context("top");
        assert_eq!(one_line(&plain), "top: middle: root");
    }
}
