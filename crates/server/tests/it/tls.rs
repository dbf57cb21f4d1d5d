//! Built-in TLS, with a self-signed certificate made for the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aimlvid_server::store::KeyLimits;
use futures_util::StreamExt as _;

use crate::support::*;

/// A self-signed certificate for `localhost` and its key, as PEM files in
/// `dir`; returns their paths and the certificate's PEM.
pub(crate) fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    let cert_pem = certified.cert.pem();
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, cert_pem)
}

#[tokio::test]
async fn the_proxy_serves_https_and_http2_with_a_certificate_from_pem_files() {
    let sim = frozen_sim().await;
    let (dir, db) = temp_db();
    let (cert, key_file, cert_pem) = self_signed(dir.path(), "server");
    let tls = aimlvid_server::tls::load(&cert, &key_file).unwrap();
    let proxy = start_tls_proxy(&sim, &db, tls, &cert_pem).await;

    let health = proxy.http.get(format!("{}/healthz", proxy.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.version(), reqwest::Version::HTTP_2, "ALPN offers h2");

    let key = proxy.key("secure", KeyLimits::default()).await;
    let created = post(&proxy.http, &proxy.endpoint(), Some(&key), &create_body("over TLS")).await;
    assert_eq!(created.status, 200, "{created:?}");
    let id = created.body["id"].as_str().unwrap();
    let read = get(&proxy.http, &proxy.endpoint(), Some(&key), Some(id)).await;
    assert_eq!((read.status, &read.body["id"]), (200, &created.body["id"]));

    // Plain HTTP to the TLS port, and a client that does not trust the certificate, both fail.
    let port = proxy.url.rsplit(':').next().unwrap();
    let plain = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/healthz")).send().await;
    assert!(plain.is_err(), "{plain:?}");
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let untrusting = reqwest::Client::builder().resolve("localhost", address).build().unwrap();
    assert!(untrusting.get(format!("{}/healthz", proxy.url)).send().await.is_err());

    // An open event stream ends at shutdown rather than holding it up.
    let events = proxy
        .http
        .get(format!("{}/v2/video/generations/{id}/events", proxy.url))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let mut events = events.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("queued"));
    tokio::time::timeout(Duration::from_secs(10), proxy.stop()).await.expect("TLS shutdown hung");
    // HTTP/2 may end the stream with an empty frame before the end itself.
    while let Some(Ok(chunk)) = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap() {
        assert!(chunk.is_empty(), "no further event: {chunk:?}");
    }
}

#[test]
fn unreadable_or_mismatched_pem_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed(dir.path(), "one");
    let (_, other_key, _) = self_signed(dir.path(), "two");
    let missing = dir.path().join("missing.key");
    let error = |cert: &Path, key: &Path| format!("{:#}", aimlvid_server::tls::load(cert, key).unwrap_err());

    assert!(error(&cert, &missing).contains("missing.key"));
    let empty = dir.path().join("empty.crt");
    std::fs::write(&empty, "no certificate here\n").unwrap();
    assert!(error(&empty, &key).contains("empty.crt"));
    let mismatched = error(&cert, &other_key);
    assert!(mismatched.contains("does not fit"), "{mismatched}");
    let key_text = std::fs::read_to_string(&other_key).unwrap();
    let body = key_text.lines().nth(1).unwrap();
    assert!(!mismatched.contains(body), "an error never shows the key");
}
