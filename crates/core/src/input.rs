//! Media sent to a model (the clip to extend, an image, a sound track): an
//! HTTPS URL, or a local file sent inline as a `data:` URI.

use std::fmt;
use std::path::Path;

use base64::Engine as _;

use crate::catalog::MediaKind;
use crate::error::{Error, Result};

/// The largest local file sent inline by default: 20 MiB, about 27 MiB once
/// base64-encoded. Veo extends clips of a few seconds, which are far smaller;
/// a larger file is better uploaded somewhere and passed as a URL.
pub const DEFAULT_MAX_INLINE_BYTES: u64 = 20 * 1024 * 1024;

/// A video given to a model: an HTTPS URL or a `data:` URI holding the video.
///
/// Checked when made, so a bad input fails before any request is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct VideoInput(String);

impl VideoInput {
    /// An `https://` URL, or an existing `data:video/...;base64,` URI.
    pub fn url(url: &str) -> Result<Self> {
        if url.starts_with("data:") {
            return Self::data_uri(url);
        }
        let parsed = url::Url::parse(url).map_err(|e| {
            Error::InvalidInput(format!(
                "{url:?} is not a valid URL ({e}); give an https:// URL or a local file"
            ))
        })?;
        match parsed.scheme() {
            "https" => Ok(VideoInput(url.to_owned())),
            scheme => Err(Error::InvalidInput(format!(
                "the API only fetches videos over https, not {scheme}:; give an https:// URL or a local file"
            ))),
        }
    }

    fn data_uri(uri: &str) -> Result<Self> {
        let header = uri.split_once(',').map(|(h, _)| h).unwrap_or(uri);
        if !header.starts_with("data:video/") || !header.ends_with(";base64") {
            return Err(Error::InvalidInput(
                "a data: URI must look like data:video/<type>;base64,<data>".to_owned(),
            ));
        }
        Ok(VideoInput(uri.to_owned()))
    }

    /// Reads a local video and encodes it as a `data:` URI, refusing files
    /// over [`DEFAULT_MAX_INLINE_BYTES`] or that are not videos.
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file_with_limit(path, DEFAULT_MAX_INLINE_BYTES).await
    }

    /// Like [`VideoInput::from_file`] with your own size limit, in bytes.
    pub async fn from_file_with_limit(path: impl AsRef<Path>, max_bytes: u64) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_limited(path, max_bytes).await?;
        let mime = video_mime(&bytes).ok_or_else(|| {
            Error::InvalidInput(format!(
                "{} is not a video (MP4, MOV, WebM, MKV, AVI…); give a video file",
                path.display()
            ))
        })?;
        Ok(Self::from_bytes_unchecked(mime, &bytes))
    }

    /// Encodes video bytes held in memory, checking that they are a video.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mime = video_mime(bytes).ok_or_else(|| {
            Error::InvalidInput("the bytes given are not a video (MP4, MOV, WebM, MKV, AVI…)".to_owned())
        })?;
        Ok(Self::from_bytes_unchecked(mime, bytes))
    }

    fn from_bytes_unchecked(mime: &str, bytes: &[u8]) -> Self {
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        VideoInput(format!("data:{mime};base64,{encoded}"))
    }

    /// Takes a command-line style argument: an `https://` URL, a `data:`
    /// URI, or else a path to a local file.
    pub async fn parse(arg: &str) -> Result<Self> {
        if arg.starts_with("https://") || arg.starts_with("data:") {
            return Self::url(arg);
        }
        // Any other scheme (http, ftp, file…) is a mistake, not a file name.
        if let Some((scheme, _)) = arg.split_once("://")
            && !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return Self::url(arg);
        }
        Self::from_file(arg).await
    }

    /// Whether the video travels inline, as a `data:` URI.
    pub fn is_inline(&self) -> bool {
        self.0.starts_with("data:")
    }

    /// The value sent as `video_url`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The value sent as `video_url`, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Inline videos are megabytes of base64: show their size, not their bytes.
impl fmt::Debug for VideoInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_inline() {
            let header = self.0.split_once(',').map_or("data:", |(h, _)| h);
            write!(f, "VideoInput({header},<{} bytes>)", self.0.len())
        } else {
            f.debug_tuple("VideoInput").field(&self.0).finish()
        }
    }
}

/// Any model's media parameter (an image, a clip, a sound track): an
/// HTTPS URL, or a local file sent inline as a `data:` URI of its own MIME
/// type, checked for kind and size before any request is sent.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaInput {
    kind: MediaKind,
    value: String,
}

impl MediaInput {
    /// Takes a command-line style argument: an `https://` URL, a `data:`
    /// URI of the right kind, or else a path to a local file of that kind.
    pub async fn parse(arg: &str, kind: MediaKind) -> Result<Self> {
        if let Some(rest) = arg.strip_prefix("data:") {
            let header = rest.split_once(',').map_or(rest, |(h, _)| h);
            if !header.starts_with(&format!("{kind}/")) || !header.ends_with(";base64") {
                return Err(Error::InvalidInput(format!(
                    "a data: URI for {kind} must look like data:{kind}/<type>;base64,<data>"
                )));
            }
            return Ok(MediaInput { kind, value: arg.to_owned() });
        }
        if let Some((scheme, _)) = arg.split_once("://")
            && !scheme.is_empty()
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return match scheme {
                "https" => {
                    url::Url::parse(arg).map_err(|e| {
                        Error::InvalidInput(format!(
                            "{arg:?} is not a valid URL ({e}); give an https:// URL or a local file"
                        ))
                    })?;
                    Ok(MediaInput { kind, value: arg.to_owned() })
                }
                other => Err(Error::InvalidInput(format!(
                    "the API only fetches media over https, not {other}:; give an https:// URL or a local file"
                ))),
            };
        }
        Self::from_file_with_limit(arg, kind, DEFAULT_MAX_INLINE_BYTES).await
    }

    /// Reads a local file of `kind` and encodes it as a `data:` URI,
    /// refusing a file over `max_bytes` or of another kind.
    pub async fn from_file_with_limit(
        path: impl AsRef<Path>,
        kind: MediaKind,
        max_bytes: u64,
    ) -> Result<Self> {
        let path = path.as_ref();
        let bytes = read_limited(path, max_bytes).await?;
        Self::encode(&bytes, kind, &path.display().to_string())
    }

    /// Encodes media bytes held in memory (an upload, say) as a `data:`
    /// URI, checking from the bytes themselves that they are `kind`.
    pub fn from_bytes(bytes: &[u8], kind: MediaKind) -> Result<Self> {
        Self::encode(bytes, kind, "the data given")
    }

    fn encode(bytes: &[u8], kind: MediaKind, what: &str) -> Result<Self> {
        let mime = infer::get(bytes).filter(|t| t.matcher_type() == matcher_of(kind)).map(|t| t.mime_type());
        let mime = mime.ok_or_else(|| {
            let found = infer::get(bytes).map_or("not a recognised media file".to_owned(), |t| {
                format!("a file of type {}", t.mime_type())
            });
            Error::InvalidInput(format!("{what} is {found}, not {kind}; give {} file", a_kind(kind)))
        })?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(MediaInput { kind, value: format!("data:{mime};base64,{encoded}") })
    }

    /// The kind of media it holds.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }

    /// Whether it travels inline, as a `data:` URI.
    pub fn is_inline(&self) -> bool {
        self.value.starts_with("data:")
    }

    /// The value sent in the request.
    pub fn as_str(&self) -> &str {
        &self.value
    }

    /// The value sent in the request, owned.
    pub fn into_string(self) -> String {
        self.value
    }
}

/// The value a request sends, so that a `MediaInput` goes straight into
/// [`GenericRequest::param`](crate::GenericRequest::param):
/// `.param("image_url", media)`.
impl From<MediaInput> for serde_json::Value {
    fn from(media: MediaInput) -> Self {
        serde_json::Value::String(media.into_string())
    }
}

/// Inline media is megabytes of base64: show its size, not its bytes.
impl fmt::Debug for MediaInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_inline() {
            let header = self.value.split_once(',').map_or("data:", |(h, _)| h);
            write!(f, "MediaInput({header},<{} bytes>)", self.value.len())
        } else {
            f.debug_tuple("MediaInput").field(&self.value).finish()
        }
    }
}

fn matcher_of(kind: MediaKind) -> infer::MatcherType {
    match kind {
        MediaKind::Image => infer::MatcherType::Image,
        MediaKind::Video => infer::MatcherType::Video,
        MediaKind::Audio => infer::MatcherType::Audio,
    }
}

fn a_kind(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Image => "an image (PNG, JPEG, WebP…)",
        MediaKind::Video => "a video (MP4, MOV, WebM…)",
        MediaKind::Audio => "an audio (MP3, WAV, M4A…)",
    }
}

/// A file's bytes, refused by size before it is read.
async fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    let meta = tokio::fs::metadata(path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::InvalidInput(format!("{}: no such file", path.display())),
        _ => Error::Io { action: "reading", path: path.to_owned(), source: e },
    })?;
    if !meta.is_file() {
        return Err(Error::InvalidInput(format!("{} is not a file", path.display())));
    }
    if meta.len() > max_bytes {
        return Err(Error::InvalidInput(format!(
            "{} is {} MiB, over the {} MiB that can be sent inline; upload it somewhere and pass its https:// URL",
            path.display(),
            meta.len().div_ceil(1024 * 1024),
            max_bytes / (1024 * 1024)
        )));
    }
    tokio::fs::read(path).await.map_err(|e| Error::Io { action: "reading", path: path.to_owned(), source: e })
}

fn video_mime(bytes: &[u8]) -> Option<&'static str> {
    infer::get(bytes).filter(|t| t.matcher_type() == infer::MatcherType::Video).map(|t| t.mime_type())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn media_goes_into_a_generic_request_as_its_value() {
        let media =
            MediaInput::parse("https://example.com/a.png", crate::catalog::MediaKind::Image).await.unwrap();
        let request = crate::GenericRequest::new("google/veo-3.1-i2v").param("image_url", media);
        let body = serde_json::to_value(&request).unwrap();
        assert_eq!(body["image_url"], "https://example.com/a.png");
    }

    const MP4_HEADER: &[u8] = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom";

    #[test]
    fn only_https_urls_are_accepted() {
        assert!(VideoInput::url("https://example.com/a.mp4").is_ok());
        let err = VideoInput::url("http://example.com/a.mp4").unwrap_err().to_string();
        assert_eq!(
            err,
            "the API only fetches videos over https, not http:; give an https:// URL or a local file"
        );
        assert!(VideoInput::url("data:text/plain;base64,aGk=").is_err());
        assert!(VideoInput::url("data:video/mp4;base64,AAAA").is_ok());
    }

    #[test]
    fn bytes_become_a_data_uri_with_the_right_mime_type() {
        let input = VideoInput::from_bytes(MP4_HEADER).unwrap();
        assert!(input.as_str().starts_with("data:video/mp4;base64,AAAAGGZ0eXBtcDQy"));
        assert!(format!("{input:?}").starts_with("VideoInput(data:video/mp4;base64,<"));
        assert!(VideoInput::from_bytes(b"hello, world").is_err());
    }

    #[tokio::test]
    async fn files_are_checked_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("notes.mp4");
        std::fs::write(&text, "not a video").unwrap();
        let err = VideoInput::from_file(&text).await.unwrap_err().to_string();
        assert!(
            err.ends_with("notes.mp4 is not a video (MP4, MOV, WebM, MKV, AVI…); give a video file"),
            "{err}"
        );

        let big = dir.path().join("big.mp4");
        let mut bytes = MP4_HEADER.to_vec();
        bytes.resize(3 * 1024 * 1024, 0);
        std::fs::write(&big, &bytes).unwrap();
        let err = VideoInput::from_file_with_limit(&big, 1024 * 1024).await.unwrap_err().to_string();
        assert!(err.contains("is 3 MiB, over the 1 MiB that can be sent inline"), "{err}");
        assert!(VideoInput::from_file_with_limit(&big, 4 * 1024 * 1024).await.unwrap().is_inline());

        let missing = dir.path().join("missing.mp4");
        let err = VideoInput::parse(missing.to_str().unwrap()).await.unwrap_err().to_string();
        assert!(err.ends_with("missing.mp4: no such file"), "{err}");
        assert!(VideoInput::parse("ftp://example.com/a.mp4").await.is_err());
    }

    #[tokio::test]
    async fn media_files_must_be_of_the_kind_the_parameter_takes() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("frame.png");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").unwrap();
        let image = MediaInput::parse(png.to_str().unwrap(), MediaKind::Image).await.unwrap();
        assert!(image.as_str().starts_with("data:image/png;base64,"));
        assert!(format!("{image:?}").starts_with("MediaInput(data:image/png;base64,<"));

        let err = MediaInput::parse(png.to_str().unwrap(), MediaKind::Audio).await.unwrap_err().to_string();
        assert!(
            err.ends_with(
                "frame.png is a file of type image/png, not audio; give an audio (MP3, WAV, M4A…) file"
            ),
            "{err}"
        );
        let url = MediaInput::parse("https://example.com/a.png", MediaKind::Image).await.unwrap();
        assert!(!url.is_inline());
        assert!(MediaInput::parse("http://example.com/a.png", MediaKind::Image).await.is_err());
        assert!(MediaInput::parse("data:video/mp4;base64,AAAA", MediaKind::Image).await.is_err());
    }
}
