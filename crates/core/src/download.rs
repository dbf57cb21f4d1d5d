//! Fetching the finished video to disk: streamed, resumable, never half-written.

use std::path::{Path, PathBuf};

use futures_util::StreamExt as _;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_RANGE, ETAG, HeaderMap, IF_RANGE, LAST_MODIFIED, RANGE};
use tokio::io::AsyncWriteExt as _;
use tracing::Instrument as _;

use crate::client::{Client, status_error};
use crate::error::{Error, Result};
use crate::model::Generation;
use crate::observe::CallKind;
use crate::retry::retry_after;

/// How far a download has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadProgress {
    /// Bytes on disk so far, a resumed part included.
    pub received: u64,
    /// The file's full size, when the server said.
    pub total: Option<u64>,
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Where the file now is.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes that were already on disk from an earlier, interrupted try.
    pub resumed_from: u64,
}

/// The file a download writes into before it is complete: the destination
/// with `.part` appended. It is renamed into place only once whole.
pub fn partial_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

impl Client {
    /// Downloads a completed generation's video to `dest`.
    pub async fn download(&self, generation: &Generation, dest: impl AsRef<Path>) -> Result<Downloaded> {
        let url = generation.video_url().ok_or_else(|| {
            Error::InvalidInput(format!(
                "generation {} has no video to download (status {}); wait for it to complete first",
                generation.id, generation.status
            ))
        })?;
        let span = tracing::info_span!("download", generation_id = %generation.id);
        self.download_url(url, dest.as_ref(), |_| {}).instrument(span).await
    }

    /// Downloads `url` to `dest`, reporting progress as bytes arrive.
    ///
    /// The body streams to `dest` + `.part` in constant memory and is renamed
    /// into place only once complete and as long as the server announced, so
    /// `dest` is never half-written. If a `.part` file is already there, the
    /// download resumes from its end with a `Range` request, but only when
    /// the part came from the same URL and the server's validator (ETag or
    /// Last-Modified, kept in `.part.validator`) still matches (`If-Range`);
    /// otherwise, and whenever the server answers with the whole file or a
    /// range it was not asked for, it starts again from the beginning, so
    /// two versions of a file are never spliced. An attempt that made
    /// progress earns a fresh set of retries. Network errors,
    /// 429 and 5xx are retried under the client's retry policy, each retry
    /// resuming where the last stopped. The API key is not sent: result URLs
    /// point at a file host, which must not see it.
    pub async fn download_url<F>(&self, url: &str, dest: &Path, mut progress: F) -> Result<Downloaded>
    where
        F: FnMut(DownloadProgress) + Send,
    {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::InvalidInput(format!("the video URL is not valid ({e})")))?;
        let host = parsed.host_str().unwrap_or("the file host").to_owned();
        let part = partial_path(dest);
        let mut failures = 0;
        let (resumed_from, bytes) = loop {
            let before = file_len(&part).await?;
            match self.download_once(&parsed, &host, &part, &mut progress).await {
                Ok(done) => break done,
                Err(e) => {
                    // An attempt that got somewhere earns a fresh set of retries:
                    // a slow, flaky link still finishes.
                    if file_len(&part).await? > before {
                        failures = 0;
                    }
                    if !e.is_transient()
                        || failures + 1 >= self.retry_policy().max_attempts
                        || self.retry_policy().too_long(e.retry_after())
                    {
                        return Err(e);
                    }
                    failures += 1;
                    let wait = self.retry_policy().backoff(failures, e.retry_after());
                    tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "download interrupted; resuming");
                    tokio::time::sleep(wait).await;
                }
            }
        };
        tokio::fs::rename(&part, dest).await.map_err(|e| Error::Io {
            action: "moving the finished download to",
            path: dest.to_owned(),
            source: e,
        })?;
        remove_if_there(&validator_path(&part)).await?;
        tracing::info!(bytes, resumed_from, "downloaded");
        Ok(Downloaded { path: dest.to_owned(), bytes, resumed_from })
    }

    /// One request: appends to `part` what the server sends and returns,
    /// once the file is complete, the bytes it kept from before and its length.
    async fn download_once<F>(
        &self,
        url: &url::Url,
        host: &str,
        part: &Path,
        progress: &mut F,
    ) -> Result<(u64, u64)>
    where
        F: FnMut(DownloadProgress) + Send,
    {
        let mut offset = file_len(part).await?;
        let mut request = self.http().get(url.clone());
        if offset > 0 {
            // Resume only a part of this very file: same source, and a
            // validator the server will check (If-Range), or else start over.
            match read_validator(part).await? {
                Some(Validator { source, value }) if source == source_of(url) => {
                    request = request.header(RANGE, format!("bytes={offset}-")).header(IF_RANGE, value);
                }
                _ => {
                    tracing::info!(offset, "a part file of unknown origin; downloading from the start");
                    offset = 0;
                }
            }
        }
        let transport =
            |e: reqwest::Error| Error::Transport { host: host.to_owned(), source: e.without_url() };
        let started = std::time::Instant::now();
        let response = request.send().await;
        crate::client::log_exchange(
            &reqwest::Method::GET,
            url,
            response.as_ref().map(|r| r.status()),
            started,
        );
        self.observe(CallKind::Download, response.as_ref().ok().map(|r| r.status().as_u16()), started);
        let response = response.map_err(transport)?;
        let status = response.status();
        let range =
            response.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).map(parse_content_range);

        let (start, total) = match status {
            StatusCode::PARTIAL_CONTENT => match range.flatten() {
                Some(ContentRange { start: Some(start), total }) if start == offset => (offset, total),
                // A range we did not ask for: start again from nothing.
                _ => return Err(restart(part, host, offset).await?),
            },
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let total = range.flatten().and_then(|r| r.total);
                if total == Some(offset) {
                    // The part file already holds the whole video.
                    return Ok((offset, offset));
                }
                return Err(restart(part, host, offset).await?);
            }
            // The whole file: a first try, a server that ignores Range, or
            // (If-Range) a file that changed since the part was written.
            s if s.is_success() => (0, response.content_length()),
            // What a file host says of a URL that has expired or never was:
            // asking again will not help.
            s @ (StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE) => {
                let body = response.bytes().await.unwrap_or_default();
                return Err(Error::ResultUnavailable {
                    url_host: host.to_owned(),
                    status: s.as_u16(),
                    message: crate::error::excerpt(&body),
                });
            }
            s => {
                let wait = retry_after(response.headers());
                let body = response.bytes().await.unwrap_or_default();
                return Err(status_error(s, &body, wait, None));
            }
        };

        if start == 0 {
            write_validator(part, &source_of(url), response.headers()).await?;
        }
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(start > 0)
            .truncate(start == 0)
            .open(part)
            .await
            .map_err(|e| Error::Io { action: "writing", path: part.to_owned(), source: e })?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut received = start;
        progress(DownloadProgress { received, total });

        let mut body = response.bytes_stream();
        let streamed: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(transport)?;
                out.write_all(&chunk).await.map_err(|e| Error::Io {
                    action: "writing",
                    path: part.to_owned(),
                    source: e,
                })?;
                received += chunk.len() as u64;
                progress(DownloadProgress { received, total });
            }
            Ok(())
        }
        .await;
        // Whatever arrived is kept, so that the next try resumes after it.
        let flushed = async {
            out.flush().await?;
            out.get_ref().sync_all().await
        }
        .await
        .map_err(|e| Error::Io { action: "writing", path: part.to_owned(), source: e });
        streamed?;
        flushed?;
        match total {
            Some(total) if received != total => {
                Err(Error::IncompleteDownload { url_host: host.to_owned(), expected: total, received })
            }
            _ => Ok((start, received)),
        }
    }
}

/// A result file as its host answered one read of it ([`Client::open_file`]):
/// the whole file (200), a range of it (206) or a range it cannot serve
/// (416), with the body not yet read, so that it can be passed on as it
/// arrives. `Debug` never shows the URL, which may carry a signature.
pub struct OpenedFile {
    response: reqwest::Response,
    host: String,
}

impl std::fmt::Debug for OpenedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedFile").field("status", &self.status()).field("host", &self.host).finish()
    }
}

impl OpenedFile {
    /// The HTTP status: 200, 206 or 416.
    pub fn status(&self) -> u16 {
        self.response.status().as_u16()
    }

    fn header(&self, name: reqwest::header::HeaderName) -> Option<&str> {
        self.response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    /// `Content-Type`, as the host said.
    pub fn content_type(&self) -> Option<&str> {
        self.header(reqwest::header::CONTENT_TYPE)
    }

    /// `Content-Length`: the bytes of this answer (of the range, for a 206),
    /// as the host said; it is said for a `HEAD` too.
    pub fn content_length(&self) -> Option<u64> {
        self.header(reqwest::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
    }

    /// `Content-Range` (`bytes 0-99/1000`, or `bytes */1000` with a 416).
    pub fn content_range(&self) -> Option<&str> {
        self.header(CONTENT_RANGE)
    }

    /// `ETag`: which version of the file this is, as the host said.
    pub fn etag(&self) -> Option<&str> {
        self.header(ETAG)
    }

    /// The body, chunk by chunk as it arrives; a broken connection ends it
    /// with [`Error::Transport`].
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<bytes::Bytes>> + Send + 'static {
        let host = self.host;
        self.response.bytes_stream().map(move |chunk| {
            chunk.map_err(|e| Error::Transport { host: host.clone(), source: e.without_url() })
        })
    }
}

impl Client {
    /// Opens a result file (a generation's `video.url`) for reading, with
    /// `range` (a `Range` header value such as `bytes=0-99`) passed on, and
    /// only its headers when `head` (a `HEAD` request). Sent once: the
    /// reader has the answer within the first byte, and a reader that
    /// retries re-reads from where it stopped with a range. As with
    /// [`Client::download_url`], the API key is not sent.
    ///
    /// A URL the host says has expired or never was (403, 404, 410) is
    /// [`Error::ResultUnavailable`]; other refusals are the errors a poll's
    /// would be; a 416 is an answer ([`OpenedFile::status`]), not an error.
    pub async fn open_file(&self, url: &str, range: Option<&str>, head: bool) -> Result<OpenedFile> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::InvalidInput(format!("the video URL is not valid ({e})")))?;
        let host = parsed.host_str().unwrap_or("the file host").to_owned();
        let method = if head { reqwest::Method::HEAD } else { reqwest::Method::GET };
        let mut request = self.http().request(method.clone(), parsed.clone());
        if let Some(range) = range {
            request = request.header(RANGE, range);
        }
        let started = std::time::Instant::now();
        let response = request.send().await;
        crate::client::log_exchange(&method, &parsed, response.as_ref().map(|r| r.status()), started);
        self.observe(CallKind::Download, response.as_ref().ok().map(|r| r.status().as_u16()), started);
        let response =
            response.map_err(|e| Error::Transport { host: host.clone(), source: e.without_url() })?;
        match response.status() {
            s if s.is_success() || s == StatusCode::RANGE_NOT_SATISFIABLE => {
                Ok(OpenedFile { response, host })
            }
            s @ (StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::GONE) => {
                let body = response.bytes().await.unwrap_or_default();
                Err(Error::ResultUnavailable {
                    url_host: host,
                    status: s.as_u16(),
                    message: crate::error::excerpt(&body),
                })
            }
            s => {
                let wait = retry_after(response.headers());
                let body = response.bytes().await.unwrap_or_default();
                Err(status_error(s, &body, wait, None))
            }
        }
    }
}

/// Drops a part file that cannot be resumed, and reports a retryable error.
async fn restart(part: &Path, host: &str, offset: u64) -> Result<Error> {
    remove_if_there(part).await?;
    remove_if_there(&validator_path(part)).await?;
    Ok(Error::IncompleteDownload { url_host: host.to_owned(), expected: offset, received: 0 })
}

async fn remove_if_there(path: &Path) -> Result<()> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io { action: "removing", path: path.to_owned(), source: e }),
    }
}

/// What a part file holds: where it came from (the URL without its query,
/// which signed URLs change on every fetch) and the server's validator of
/// that version (its ETag, or its Last-Modified date).
#[derive(Debug, PartialEq, Eq)]
struct Validator {
    source: String,
    value: String,
}

/// Beside the part file: `<dest>.part.validator`.
fn validator_path(part: &Path) -> PathBuf {
    let mut name = part.as_os_str().to_owned();
    name.push(".validator");
    PathBuf::from(name)
}

fn source_of(url: &url::Url) -> String {
    let mut source = url.clone();
    source.set_query(None);
    source.set_fragment(None);
    source.to_string()
}

async fn read_validator(part: &Path) -> Result<Option<Validator>> {
    let path = validator_path(part);
    match tokio::fs::read_to_string(&path).await {
        Ok(text) => Ok(text.split_once('\n').map(|(source, value)| Validator {
            source: source.to_owned(),
            value: value.trim_end().to_owned(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io { action: "reading", path, source: e }),
    }
}

/// Records what a fresh part file is a part of; without a validator from
/// the server, removes any old record, so the part is never resumed blind.
async fn write_validator(part: &Path, source: &str, headers: &HeaderMap) -> Result<()> {
    let path = validator_path(part);
    let value = headers.get(ETAG).or_else(|| headers.get(LAST_MODIFIED)).and_then(|v| v.to_str().ok());
    match value {
        Some(value) => tokio::fs::write(&path, format!("{source}\n{value}\n")).await.map_err(|e| Error::Io {
            action: "writing",
            path,
            source: e,
        }),
        None => remove_if_there(&path).await,
    }
}

async fn file_len(path: &Path) -> Result<u64> {
    match tokio::fs::metadata(path).await {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::Io { action: "reading", path: path.to_owned(), source: e }),
    }
}

#[derive(Debug, PartialEq, Eq)]
struct ContentRange {
    start: Option<u64>,
    total: Option<u64>,
}

/// Parses `bytes 100-199/1000`, `bytes 100-199/*` and `bytes */1000`.
fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = match total {
        "*" => None,
        n => Some(n.parse().ok()?),
    };
    let start = match range {
        "*" => None,
        r => Some(r.split_once('-')?.0.parse().ok()?),
    };
    Some(ContentRange { start, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(
            parse_content_range("bytes 100-199/1000"),
            Some(ContentRange { start: Some(100), total: Some(1000) })
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some(ContentRange { start: Some(5), total: None }));
        assert_eq!(parse_content_range("bytes */42"), Some(ContentRange { start: None, total: Some(42) }));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }

    #[test]
    fn the_part_file_sits_beside_the_destination() {
        assert_eq!(partial_path(Path::new("out/clip.mp4")), PathBuf::from("out/clip.mp4.part"));
    }
}
