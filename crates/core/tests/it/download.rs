//! Downloads: byte-identical, resumable, never half-written.

use aimlvid::RetryPolicy;
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

/// A download cut halfway with no retry, leaving its part file (and the
/// part's validator) behind, as a killed process would.
async fn leave_a_part(
    sim: &aimlvid_sim::RunningSim,
    done: &aimlvid::Generation,
    dest: &std::path::Path,
) -> u64 {
    let once = crate::builder_for(sim).retry_policy(RetryPolicy::none()).build().unwrap();
    sim.inject(Route::Download, Fault::TruncatedBody, 1);
    assert!(once.download(done, dest).await.is_err());
    let left = std::fs::metadata(partial_path(dest)).unwrap().len();
    assert!(left > 0 && left < SAMPLE_RESULT.len() as u64, "{left}");
    left
}

/// The downloads the simulator saw: `(status, Range)`.
fn downloads(sim: &aimlvid_sim::RunningSim) -> Vec<(u16, Option<String>)> {
    sim.requests().into_iter().filter(|r| r.route == Route::Download).map(|r| (r.status, r.range)).collect()
}

#[tokio::test]
async fn a_partial_file_left_by_an_earlier_run_is_resumed() {
    let (sim, client) = start(config()).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.mp4");
    let left = leave_a_part(&sim, &done, &dest).await;

    let file = client.download(&done, &dest).await.unwrap();

    assert_eq!(file.resumed_from, left);
    assert_eq!(std::fs::read(&dest).unwrap(), SAMPLE_RESULT);
    assert_eq!(downloads(&sim).last().unwrap().0, 206);
    assert!(!dir.path().join("out.mp4.part.validator").exists(), "tidied away with the part");
}

#[tokio::test]
async fn a_partial_file_of_unknown_origin_is_downloaded_again_whole() {
    let (sim, client) = start(config()).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.mp4");
    // Some other file's first half, and nothing to say where it came from.
    std::fs::write(partial_path(&dest), vec![0xAB; SAMPLE_RESULT.len() / 2]).unwrap();

    let file = client.download(&done, &dest).await.unwrap();

    assert_eq!((file.resumed_from, std::fs::read(&dest).unwrap()), (0, SAMPLE_RESULT.to_vec()));
    assert_eq!(downloads(&sim), [(200, None)], "no Range for a part it cannot vouch for");
}

#[tokio::test]
async fn a_part_of_a_file_that_changed_since_is_replaced_by_the_new_file_whole() {
    let (sim, client) = start(config()).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.mp4");
    let left = leave_a_part(&sim, &done, &dest).await;
    assert!(sim.replace_result(&done.id));

    let file = client.download(&done, &dest).await.unwrap();

    assert_eq!((file.resumed_from, std::fs::read(&dest).unwrap()), (0, SAMPLE_RESULT.to_vec()));
    // The resume asked If-Range with the old ETag; the host sent the new file whole.
    let (status, range) = downloads(&sim).pop().unwrap();
    assert_eq!((status, range), (200, Some(format!("bytes={left}-"))));
    assert_eq!(sim.stats().bytes_served, left + SAMPLE_RESULT.len() as u64);
}

#[tokio::test]
async fn a_host_that_ignores_range_gets_the_file_again_whole() {
    let (sim, client) = start(SimConfig { ignore_range: true, ..config() }).await;
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.mp4");
    let left = leave_a_part(&sim, &done, &dest).await;

    client.download(&done, &dest).await.unwrap();

    assert_eq!(
        std::fs::read(&dest).unwrap(),
        SAMPLE_RESULT,
        "not spliced onto the {left} bytes already there"
    );
    assert_eq!(downloads(&sim).pop().unwrap().0, 200);
}

#[tokio::test]
async fn an_attempt_that_made_progress_earns_fresh_retries() {
    let (sim, _) = start(config()).await;
    // Two attempts allowed, and four cuts in a row: each cut attempt still
    // brings bytes, so the download goes on past the policy's two.
    let client = crate::builder_for(&sim)
        .retry_policy(RetryPolicy { max_attempts: 2, ..RetryPolicy::default().time_scaled(crate::SCALE) })
        .build()
        .unwrap();
    let done = client.create_and_wait(&extend_request()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.mp4");
    sim.inject(Route::Download, Fault::TruncatedBody, 4);

    client.download(&done, &dest).await.unwrap();

    assert_eq!(std::fs::read(&dest).unwrap(), SAMPLE_RESULT);
    assert_eq!(downloads(&sim).len(), 5);
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
