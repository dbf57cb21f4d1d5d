//! The result file: [`SAMPLE_RESULT`], optionally padded by an MP4 `free`
//! box, served in chunks computed on the fly so any size costs no memory.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::Stream;

use crate::SAMPLE_RESULT;

/// Largest chunk a file body yields.
const CHUNK: usize = 64 * 1024;

/// Padding bytes after the box header are zeros, served from here.
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// The file every completed job serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ResultFile {
    len: u64,
}

impl ResultFile {
    /// `size`: `None` for the bare sample, else the padded total (validated by
    /// [`SimConfig::validate`](crate::SimConfig::validate) to fit a box header).
    pub(crate) fn new(size: Option<u64>) -> Self {
        let sample = SAMPLE_RESULT.len() as u64;
        Self { len: size.unwrap_or(sample).max(sample) }
    }

    pub(crate) fn len(self) -> u64 {
        self.len
    }

    /// The `free` box header: a 32-bit size when it fits, else the 64-bit
    /// `largesize` form (size field 1).
    fn box_header(self) -> Vec<u8> {
        let pad = self.len - SAMPLE_RESULT.len() as u64;
        if pad == 0 {
            return Vec::new();
        }
        let mut header = Vec::with_capacity(16);
        match u32::try_from(pad) {
            Ok(size) => header.extend_from_slice(&size.to_be_bytes()),
            Err(_) => header.extend_from_slice(&1u32.to_be_bytes()),
        }
        header.extend_from_slice(b"free");
        if u32::try_from(pad).is_err() {
            header.extend_from_slice(&pad.to_be_bytes());
        }
        header
    }

    /// Bytes `[offset, min(offset + CHUNK, end))`.
    fn chunk(self, header: &[u8], offset: u64, end: u64) -> Bytes {
        let want = (end - offset).min(CHUNK as u64) as usize;
        let sample = SAMPLE_RESULT.len() as u64;
        if offset < sample {
            let start = offset as usize;
            let stop = (start + want).min(SAMPLE_RESULT.len());
            return Bytes::from_static(&SAMPLE_RESULT[start..stop]);
        }
        let in_pad = (offset - sample) as usize;
        if in_pad < header.len() {
            let stop = (in_pad + want).min(header.len());
            return Bytes::copy_from_slice(&header[in_pad..stop]);
        }
        Bytes::from_static(&ZEROS[..want])
    }

    /// Bytes `start..=end` as a stream of chunks.
    pub(crate) fn stream(
        self,
        start: u64,
        end_inclusive: u64,
    ) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        let header = self.box_header();
        let end = end_inclusive.saturating_add(1).min(self.len);
        futures_util::stream::unfold(start, move |offset| {
            let next = (offset < end).then(|| self.chunk(&header, offset, end));
            async move {
                let chunk = next?;
                let after = offset + chunk.len() as u64;
                Some((Ok(chunk), after))
            }
        })
    }
}

/// What a `Range` header asks of a file of `len` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    /// No (usable) range: the whole file, 200.
    Full,
    /// `start..=end`, 206.
    Partial { start: u64, end: u64 },
    /// Nothing of the file matches, 416.
    Unsatisfiable,
}

/// Parses one `Range` header. Invalid or multi-range headers are ignored
/// (the whole file is served), as RFC 9110 allows.
pub(crate) fn parse_range(header: &str, len: u64) -> RangeRequest {
    let Some((unit, spec)) = header.trim().split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Option<u64> {
        // `u64::from_str` accepts a leading `+`; a range does not.
        s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok())?
    };
    if first.is_empty() {
        // Suffix range: the last N bytes.
        return match number(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial { start: len - n.min(len), end: len - 1 },
            None => RangeRequest::Full,
        };
    }
    let Some(start) = number(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match number(last) {
            Some(end) if end >= start => Some(end),
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial { start, end: end.map_or(len - 1, |e| e.min(len - 1)) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    async fn collect(file: ResultFile, start: u64, end: u64) -> Vec<u8> {
        let chunks: Vec<_> = file.stream(start, end).collect().await;
        chunks.into_iter().flat_map(|c| c.unwrap_or_else(|never| match never {}).to_vec()).collect()
    }

    #[test]
    fn ranges() {
        use RangeRequest::*;
        let p = |start, end| Partial { start, end };
        assert_eq!(parse_range("bytes=0-", 100), p(0, 99));
        assert_eq!(parse_range("bytes=10-", 100), p(10, 99));
        assert_eq!(parse_range("bytes=10-19", 100), p(10, 19));
        assert_eq!(parse_range("bytes=10-1000", 100), p(10, 99));
        assert_eq!(parse_range("bytes=99-99", 100), p(99, 99));
        assert_eq!(parse_range(" Bytes = 5 - 6 ", 100), p(5, 6));
        assert_eq!(parse_range("bytes=-10", 100), p(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), p(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=200-300", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        // Invalid or unsupported: ignored.
        for ignored in [
            "bytes=5-1",
            "bytes=a-",
            "bytes=-",
            "bytes=+1-2",
            "items=0-1",
            "bytes=0-1,5-6",
            "bytes",
            "",
            "bytes=1-2-3",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(parse_range(ignored, 100), Full, "{ignored}");
        }
    }

    #[tokio::test]
    async fn bare_file_is_the_sample() {
        let file = ResultFile::new(None);
        assert_eq!(file.len(), SAMPLE_RESULT.len() as u64);
        assert_eq!(collect(file, 0, file.len() - 1).await, SAMPLE_RESULT);
        assert_eq!(collect(file, 5, 9).await, &SAMPLE_RESULT[5..10]);
    }

    #[tokio::test]
    async fn padded_file_ends_in_a_free_box() {
        let sample = SAMPLE_RESULT.len() as u64;
        for size in [crate::MIN_RESULT_SIZE, sample + 100, sample + 3 * CHUNK as u64 + 7] {
            let file = ResultFile::new(Some(size));
            let all = collect(file, 0, size - 1).await;
            assert_eq!(all.len() as u64, size);
            assert_eq!(&all[..SAMPLE_RESULT.len()], SAMPLE_RESULT);
            let pad = &all[SAMPLE_RESULT.len()..];
            assert_eq!(u32::from_be_bytes(pad[..4].try_into().unwrap()) as u64, size - sample);
            assert_eq!(&pad[4..8], b"free");
            assert!(pad[8..].iter().all(|b| *b == 0));
            // Any slice equals the same slice of the whole.
            let (a, b) = (sample - 3, size - 2);
            assert_eq!(collect(file, a, b).await, &all[a as usize..=b as usize]);
        }
    }

    #[tokio::test]
    async fn huge_padding_uses_largesize_and_streams_lazily() {
        let size = 5 * 1024 * 1024 * 1024u64;
        let file = ResultFile::new(Some(size));
        let header = file.box_header();
        assert_eq!(&header[..8], &[0, 0, 0, 1, b'f', b'r', b'e', b'e']);
        assert_eq!(u64::from_be_bytes(header[8..16].try_into().unwrap()), size - SAMPLE_RESULT.len() as u64);
        // The tail is reachable without producing what comes before it.
        let tail = collect(file, size - 10, size - 1).await;
        assert_eq!(tail, vec![0; 10]);
    }
}
