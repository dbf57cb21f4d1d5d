//! What the API said about its models (prices, recent durations), kept a
//! day beside the journal, so that commands do not ask again each time.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aimlvid::Client;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::journal::Journal;

/// How long an answer is trusted.
const TTL: Duration = Duration::from_secs(24 * 3600);

/// One answer, and the server and time it came from.
#[derive(Debug, Serialize, Deserialize)]
struct Entry<T> {
    base_url: String,
    /// Seconds since the Unix epoch.
    fetched_at: u64,
    value: T,
}

fn path_of(journal: &Journal, name: &str) -> PathBuf {
    journal.dir().join("cache").join(format!("{name}.json"))
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// `<journal>/cache/<name>.json`'s value for `client`'s server, however
/// old, and whether it is under a day old.
pub(crate) fn load<T: DeserializeOwned>(client: &Client, journal: &Journal, name: &str) -> Option<(T, bool)> {
    let entry: Entry<T> = std::fs::read(path_of(journal, name))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|e: &Entry<T>| e.base_url == client.base_url())?;
    let fresh = now_secs().saturating_sub(entry.fetched_at) < TTL.as_secs();
    Some((entry.value, fresh))
}

/// Keeps `value` as `name`'s for `client`'s server, read now.
pub(crate) fn store<T: Serialize>(client: &Client, journal: &Journal, name: &str, value: &T) {
    let path = path_of(journal, name);
    let entry = Entry { base_url: client.base_url().to_owned(), fetched_at: now_secs(), value };
    // A cache is a convenience: failing to write it is logged, not fatal.
    let written = write_private(&path, &serde_json::to_vec(&entry).unwrap_or_default());
    if let Err(e) = written {
        tracing::info!(error = %e, path = %path.display(), "not cached");
    }
}

/// `<journal>/cache/<name>.json`'s value for `client`'s server if under a
/// day old; else `fetch`'s, cached, if it answers within `timeout`; else
/// the older value (stale figures beat none), if any.
pub(crate) async fn day_cached<T, F>(
    client: &Client,
    journal: &Journal,
    name: &str,
    timeout: Duration,
    fetch: F,
) -> Option<T>
where
    T: Serialize + DeserializeOwned,
    F: Future<Output = aimlvid::Result<T>>,
{
    let cached = load::<T>(client, journal, name);
    if let Some((value, true)) = cached {
        return Some(value);
    }
    match tokio::time::timeout(timeout, fetch).await {
        Ok(Ok(value)) => {
            store(client, journal, name, &value);
            Some(value)
        }
        other => {
            tracing::info!(name, outcome = ?other.map(|r| r.err().map(|e| e.to_string())), "not read");
            cached.map(|(value, _)| value)
        }
    }
}

/// Writes `path` readable by its owner only (as the journal is), in a
/// directory only its owner can enter, by a fresh file renamed into place:
/// a file an older version left readable to all is replaced, not reused.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
