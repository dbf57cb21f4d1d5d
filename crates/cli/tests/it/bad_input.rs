//! Bad input: a clear one-line error, exit 2, and no request at all.

use crate::{Env, stderr};

/// Runs `aimlvid extend ARGS` and checks it fails with exit 2, one line
/// on stderr containing `message`, nothing on stdout and nothing sent.
fn refused(env: &Env, args: &[&str], message: &str) {
    let out = env.cmd().arg("extend").args(args).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.starts_with("error: "), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.contains(message), "{args:?}: {err:?} lacks {message:?}");
    assert!(out.stdout.is_empty(), "{args:?}");
    let requests = env.sim.requests();
    assert!(requests.is_empty(), "{args:?} sent {requests:?}");
    assert!(env.records().is_empty(), "{args:?} journaled a job");
}

#[test]
fn bad_videos_are_refused_before_any_request() {
    let env = Env::new();
    std::fs::write(env.path("notes.mp4"), "not a video at all").unwrap();
    refused(&env, &["missing.mp4", "-p", "x"], "missing.mp4: no such file");
    refused(&env, &["notes.mp4", "-p", "x"], "notes.mp4 is not a video");
    refused(&env, &["ftp://example.com/a.mp4", "-p", "x"], "only fetches videos over https, not ftp:");
    refused(&env, &["http://example.com/a.mp4", "-p", "x"], "only fetches videos over https, not http:");
    refused(&env, &["-p", "x"], "give the VIDEO to extend");
}

#[test]
fn a_mistyped_file_is_reported_before_a_missing_key() {
    let env = Env::new();
    let out =
        env.cmd().env_remove("AIMLAPI_API_KEY").args(["extend", "missing.mp4", "-p", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.mp4: no such file"), "{}", stderr(&out));
}

#[test]
fn bad_prompts_and_options_are_refused_before_any_request() {
    let env = Env::new();
    env.clip();
    refused(&env, &["clip.mp4", "-p", ""], "the prompt is empty");
    refused(&env, &["clip.mp4", "-p", "   "], "the prompt is empty");
    refused(&env, &["clip.mp4", "-p", "a", "-p", ""], "prompt 2 is empty");
    refused(&env, &["clip.mp4", "-p", "x", "--duration", "8"], "accept only --duration 7");
    refused(&env, &["clip.mp4", "-p", "x", "--resolution", "1080p"], "accept only --resolution 720p");
    refused(
        &env,
        &["clip.mp4", "-p", "x", "--aspect-ratio", "4:3"],
        "invalid value '4:3' for '--aspect-ratio",
    );
    refused(&env, &["clip.mp4", "-p", "x", "--provider", "acme"], "invalid value 'acme' for '--provider");
    refused(&env, &["clip.mp4", "-p", "x", "--model", "turbo"], "invalid value 'turbo' for '--model");
    refused(&env, &["clip.mp4", "-p", "x", "--times", "0"], "--times");
    refused(&env, &["clip.mp4"], "--prompt");
    refused(&env, &["clip.mp4", "-p", "x", "--no-wait", "--times", "2"], "cannot be used with");
    refused(
        &env,
        &["clip.mp4", "-p", "a", "-p", "b", "--no-wait"],
        "--no-wait creates one job, but 2 prompts",
    );
}

#[test]
fn a_missing_key_says_how_to_set_one() {
    let env = Env::new();
    env.clip();
    let out =
        env.cmd().env_remove("AIMLAPI_API_KEY").args(["extend", "clip.mp4", "-p", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no API key: set AIMLAPI_API_KEY in the environment (export AIMLAPI_API_KEY=<your key>"),
        "{err}"
    );
    assert!(err.contains("--simulate"), "{err}");
    assert!(env.sim.requests().is_empty());
}

#[test]
fn a_bad_config_file_or_base_url_is_a_usage_error() {
    let env = Env::new();
    env.clip();
    std::fs::write(env.path("aimlvid.toml"), "api_key = \"sk-in-a-file\"\n").unwrap();
    let out = env.cmd().args(["--config", "aimlvid.toml", "jobs"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("api_key is not read from files; set AIMLAPI_API_KEY"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("sk-in-a-file"));

    let out =
        env.cmd().args(["--base-url", "api.example.com", "extend", "clip.mp4", "-p", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a URL"), "{}", stderr(&out));
    assert!(env.sim.requests().is_empty());
}

#[test]
fn a_base_url_that_is_not_the_api_is_said_so_on_create() {
    let env = crate::Env::new();
    let url = format!("{}/not-the-api/", env.sim.base_url());
    let out = env
        .cmd()
        .args(["--base-url", &url, "generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x"])
        .output()
        .unwrap();
    // A request was sent, so not 2 ("nothing was sent"); nothing was
    // created, as when nothing listens at a wrong base URL.
    assert_eq!(out.status.code(), Some(7));
    let err = crate::stderr(&out);
    assert!(
        err.contains("does not look like the AI/ML API: a create there was answered 404")
            && err
                .contains("check the base URL (--base-url, AIMLAPI_BASE_URL or the config file's base_url)")
            && !err.contains("not found"),
        "{err}"
    );
    assert!(env.records().is_empty(), "a create answered 404 made no job");
}

/// A web server that is not the API, as `python3 -m http.server` is: it
/// answers each request with `status` and an HTML page, and counts the
/// POSTs (creates) among them.
fn not_the_api(status: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut post = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                post.get_or_insert_with(|| line.starts_with("POST "));
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            if post == Some(true) {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let page = "<html><body><h1>Error response</h1><p>Unsupported method ('POST')</p></body></html>";
            let _ = write!(
                stream,
                "HTTP/1.0 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    (url, served)
}

#[test]
fn a_local_server_that_takes_no_post_is_not_the_api_and_leaves_no_unknown_create() {
    for status in ["501 Unsupported method ('POST')", "405 Method Not Allowed"] {
        let env = crate::Env::new();
        let (url, served) = not_the_api(status);
        let out = env
            .cmd()
            .env("AIMLAPI_BASE_URL", &url)
            .args(["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x"])
            .output()
            .unwrap();
        let err = crate::stderr(&out);
        assert_eq!(out.status.code(), Some(7), "{status}: not 8, a create of unknown outcome: {err}");
        let code = &status[..3];
        assert!(
            err.contains(&format!("does not look like the AI/ML API: a create there was answered {code}"))
                && err.contains("nothing was created"),
            "{err}"
        );
        assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 1, "sent once, never retried");
        assert!(env.records().is_empty(), "{status}: {:#?}", env.records());
    }
}

#[test]
fn a_base_url_with_credentials_is_refused_before_anything_is_sent_or_stored() {
    let env = crate::Env::new();
    let url = env.sim.base_url().replacen("http://", "http://user:s3cret-pass@", 1);
    for args in [
        &["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x"][..],
        &["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x", "--dry-run"][..],
        &["status", "some-id"][..],
    ] {
        let out = env.cmd().args(["--base-url", &url]).args(args).output().unwrap();
        let err = crate::stderr(&out);
        if args.contains(&"--dry-run") {
            // A dry run sends nothing anyway; it only cannot price.
            assert!(!err.contains("s3cret") && !crate::stdout(&out).contains("s3cret"), "{err}");
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("has a user name or password in it"), "{err}");
        assert!(!err.contains("s3cret") && !crate::stdout(&out).contains("s3cret"), "{err}");
    }
    assert!(env.sim.requests().is_empty(), "nothing was sent");
    assert!(env.records().is_empty());
    // Nothing under the state or journal directories holds the password.
    let mut stack = vec![env.dir.path().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n != "clip.mp4") {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                assert!(!text.contains("s3cret"), "{} holds the password", path.display());
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn cached_answers_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = crate::Env::new();
    // One left readable to all by an older version is replaced.
    let cache = env.journal_dir().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let old = cache.join("model-metrics.json");
    std::fs::write(&old, "{}").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.cmd().args(["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x", "--dry-run"]).assert().success();
    env.cmd().args(["generate", "-m", "google/veo-3.1-t2v-fast", "-p", "x"]).assert().success();
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(files.iter().any(|p| p.ends_with("catalogue.json")), "{files:?}");
    assert!(files.iter().any(|p| p.ends_with("model-metrics.json")), "{files:?}");
    for path in files {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", path.display());
    }
}
