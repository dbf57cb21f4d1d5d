//! Downloads: byte-identical, resumable, never half-written.

use aimlvid::{DownloadProgress, Error, partial_path};
use aimlvid_sim::{Fault, Route, SAMPLE_RESULT, SimConfig};

use crate::{config, extend_request, start};

#[tokio::test]
async fn the_downloaded_file_is_byte_identical_to_what_was_served() {
    let (sim, client) = start(config()).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.mp4");

    let mut seen = Vec::new();
    let file = client.download_url(done.video_url().unwrap(), &dest, |p| seen.push(p)).await.unwrap();

    assert_eq!(std::fs::read(&dest).unwrap(), SAMPLE_RESULT);
    assert_eq!((file.bytes, file.resumed_from), (SAMPLE_RESULT.len() as u64, 0));
    let total = Some(SAMPLE_RESULT.len() as u64);
    assert_eq!(seen.first(), Some(&DownloadProgress { received: 0, total }));
    assert_eq!(seen.last(), Some(&DownloadProgress { received: SAMPLE_RESULT.len() as u64, total }));
    assert!(!partial_path(&dest).exists());
    assert_eq!(sim.stats().download_requests, 1);
}

#[tokio::test]
async fn a_download_cut_halfway_resumes_with_a_range_request() {
    let (sim, client) = start(config()).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.mp4");
    sim.inject(Route::Download, Fault::TruncatedBody, 1);

    client.download(&done, &dest).await.unwrap();

    assert_eq!(std::fs::read(&dest).unwrap(), SAMPLE_RESULT);
    let downloads: Vec<_> = sim.requests().into_iter().filter(|r| r.route == Route::Download).collect();
    assert_eq!(downloads.len(), 2);
    assert_eq!(downloads[0].range, None);
    let range = downloads[1].range.as_deref().expect("the retry asked for a range");
    let offset: usize = range.strip_prefix("bytes=").unwrap().trim_end_matches('-').parse().unwrap();
    assert!(offset > 0 && offset < SAMPLE_RESULT.len(), "{range}");
}

#[tokio::test]
async fn a_partial_file_left_by_an_earlier_run_is_resumed() {
    let (sim, client) = start(config()).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.mp4");
    let half = SAMPLE_RESULT.len() / 2;
    std::fs::write(partial_path(&dest), &SAMPLE_RESULT[..half]).unwrap();

    let file = client.download(&done, &dest).await.unwrap();

    assert_eq!(file.resumed_from, half as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), SAMPLE_RESULT);
    assert_eq!(sim.stats().bytes_served, (SAMPLE_RESULT.len() - half) as u64);
}

#[tokio::test]
async fn a_large_result_streams_to_disk_with_its_announced_length() {
    let size = 8 * 1024 * 1024;
    let (_sim, client) = start(SimConfig { result_size: Some(size), ..config() }).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.mp4");

    let file = client.download(&done, &dest).await.unwrap();

    assert_eq!(file.bytes, size);
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), size);
}

#[tokio::test]
async fn a_generation_without_a_video_cannot_be_downloaded() {
    let (_sim, client) = start(config()).await;
    let created = client.create(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let err = client.download(&created, dir.path().join("x.mp4")).await.unwrap_err();

    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains("wait for it to complete first"), "{err}");
}
