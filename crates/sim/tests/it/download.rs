//! The CDN side: full downloads, ranges, HEAD, padding.

use aimlvid_sim::{MIN_RESULT_SIZE, SAMPLE_RESULT, SimConfig};

use crate::support::{client, create_job, error_body, start, wait_finished};

#[tokio::test]
async fn full_download_and_ranges_are_byte_identical() {
    let sim = start(SimConfig::fast()).await;
    let id = create_job(&sim).await;
    let answer = wait_finished(&sim, &id).await;
    let url = answer["video"]["url"].as_str().unwrap().to_owned();
    let len = SAMPLE_RESULT.len();

    // No auth needed: it is a CDN URL.
    let full = client().get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-type"], "video/mp4");
    assert_eq!(full.headers()["content-length"], len.to_string().as_str());
    assert!(full.headers().contains_key("x-request-id"));
    assert_eq!(full.bytes().await.unwrap(), SAMPLE_RESULT);

    for (range, start, end) in [
        (format!("bytes={}-", len / 2), len / 2, len - 1),
        ("bytes=0-99".to_owned(), 0, 99),
        ("bytes=1000-1999".to_owned(), 1000, 1999),
        ("bytes=-500".to_owned(), len - 500, len - 1),
        (format!("bytes=100-{}", len * 10), 100, len - 1),
    ] {
        let part = client().get(&url).header("range", &range).send().await.unwrap();
        assert_eq!(part.status(), 206, "{range}");
        assert_eq!(part.headers()["content-range"], format!("bytes {start}-{end}/{len}").as_str());
        assert_eq!(part.bytes().await.unwrap(), &SAMPLE_RESULT[start..=end], "{range}");
    }

    let beyond = client().get(&url).header("range", format!("bytes={len}-")).send().await.unwrap();
    assert_eq!(beyond.headers()["content-range"], format!("bytes */{len}").as_str());
    error_body(beyond, 416, &format!("/files/{id}.mp4")).await;

    // An If-Range for another version gets the whole file.
    let stale = client()
        .get(&url)
        .header("range", "bytes=0-9")
        .header("if-range", "\"some-other-etag\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    let etag = stale.headers()["etag"].clone();
    assert_eq!(stale.bytes().await.unwrap().len(), len);
    let fresh =
        client().get(&url).header("range", "bytes=0-9").header("if-range", etag).send().await.unwrap();
    assert_eq!(fresh.status(), 206);

    let head = client().head(&url).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], len.to_string().as_str());
    assert!(head.bytes().await.unwrap().is_empty());

    let stats = sim.stats();
    assert_eq!(stats.download_requests, 10);
    let ranged: usize = (len - len / 2) + 100 + 1000 + 500 + (len - 100);
    assert_eq!(stats.bytes_served, (len * 2 + ranged + 10) as u64);
}

#[tokio::test]
async fn unknown_or_unfinished_files_are_404() {
    let sim = start(SimConfig { time_scale: 0.0, ..SimConfig::default() }).await;
    let id = create_job(&sim).await;
    let path = format!("/files/{id}.mp4");
    let url = format!("{}{path}", sim.base_url());
    let early = client().get(&url).send().await.unwrap();
    error_body(early, 404, &path).await;
    let unknown = client().get(format!("{}/files/nope.mp4", sim.base_url())).send().await.unwrap();
    error_body(unknown, 404, "/files/nope.mp4").await;
    let no_suffix = client().get(format!("{}/files/{id}", sim.base_url())).send().await.unwrap();
    assert_eq!(no_suffix.status(), 404);

    assert!(sim.complete_now(&id));
    let done = client().get(&url).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(done.bytes().await.unwrap(), SAMPLE_RESULT);
    assert_eq!(sim.stats().bytes_served, SAMPLE_RESULT.len() as u64);
}

#[tokio::test]
async fn result_size_pads_with_a_free_box() {
    let size = 3 * 1024 * 1024 + 17;
    let sim = start(SimConfig { result_size: Some(size), ..SimConfig::fast() }).await;
    let id = create_job(&sim).await;
    let answer = wait_finished(&sim, &id).await;
    let url = answer["video"]["url"].as_str().unwrap().to_owned();

    let response = client().get(&url).send().await.unwrap();
    assert_eq!(response.content_length(), Some(size));
    let bytes = response.bytes().await.unwrap();
    assert_eq!(bytes.len() as u64, size);
    assert_eq!(&bytes[..SAMPLE_RESULT.len()], SAMPLE_RESULT);
    let pad = &bytes[SAMPLE_RESULT.len()..];
    assert_eq!(
        u64::from(u32::from_be_bytes(pad[..4].try_into().unwrap())),
        size - SAMPLE_RESULT.len() as u64
    );
    assert_eq!(&pad[4..8], b"free");
    assert!(pad[8..].iter().all(|b| *b == 0));

    // The tail by range.
    let tail = client().get(&url).header("range", format!("bytes={}-", size - 10)).send().await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &[0u8; 10]);
    assert!(MIN_RESULT_SIZE > SAMPLE_RESULT.len() as u64);
}
