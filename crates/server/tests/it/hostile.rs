//! Hostile clients, with no key: connections that send nothing, a flood of
//! them from one address, and large bodies sent to the admin API.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

use crate::support::*;

fn address_of(proxy: &Proxy) -> SocketAddr {
    proxy.url.trim_start_matches("http://").parse().unwrap()
}

/// Ten thousand connections that send nothing, all from one address (a
/// second loopback address, as another host), cannot fill the server's
/// connection cap: ordinary requests from elsewhere are still answered at
/// once. (Without a per-address limit they would wait for a free slot.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_silent_connections_from_one_address_leave_everyone_else_served() {
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let address = address_of(&proxy);
    let mut silent = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        silent.push(socket.connect(address).await.expect("the listener takes the connection"));
    }
    // Each request on a connection of its own, as new clients arrive.
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(0).timeout(Duration::from_secs(5)).build().unwrap();
    let mut took = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let answer = client.get(format!("{}/healthz", proxy.url)).send().await.expect("answered");
        assert_eq!(answer.status(), 200);
        took.push(started.elapsed());
    }
    took.sort();
    let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!("beside 10,000 silent connections from one address: median {median:?}, slowest {slowest:?}");
    assert!(median < Duration::from_millis(100), "median {median:?}");
    drop(silent);
    proxy.stop().await;
}

/// Reads from `stream` until the server closes it; how long that took.
async fn closed_after<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await;
    match read {
        Ok(Ok(0) | Err(_)) => started.elapsed(),
        Ok(Ok(n)) => panic!("the server sent {n} bytes to a connection that sent none"),
        Err(_) => panic!("a silent connection was still open after 10 s"),
    }
}

/// A connection that sends nothing is closed after the first-byte timeout,
/// on plain HTTP (where HTTP/1's header timeout never starts, and telling
/// HTTP/1 from HTTP/2 waits for bytes) and over TLS alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_after_the_first_byte_timeout() {
    let sim = frozen_sim().await;
    let (dir, db) = temp_db();
    let quick = |c: &mut aimlvid_server::StateConfig| c.front.first_byte_timeout = Duration::from_millis(300);
    let plain = start_proxy_configured(&sim, &db, quick).await;
    let mut silent = tokio::net::TcpStream::connect(address_of(&plain)).await.unwrap();
    let took = closed_after(&mut silent).await;
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
    // A connection that does send is served as usual.
    let health = plain.http.get(format!("{}/healthz", plain.url)).send().await.unwrap();
    assert_eq!(health.status(), 200);
    plain.stop().await;

    let (cert, key, cert_pem) = crate::tls::self_signed(dir.path(), "server");
    let tls = aimlvid_server::tls::load(&cert, &key).unwrap();
    let secure = start_tls_proxy_configured(&sim, &dir.path().join("tls.db"), tls, &cert_pem, quick).await;
    let port: u16 = secure.url.rsplit(':').next().unwrap().parse().unwrap();
    let mut silent = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let took = closed_after(&mut silent).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    // One that completes its handshake, then sends nothing, is closed too.
    let roots = {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        let pem = std::fs::read(&cert).unwrap();
        let der = pem_to_der(&pem);
        roots.add(der.into()).unwrap();
        roots
    };
    let client =
        tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut shook = connector.connect("localhost".try_into().unwrap(), tcp).await.expect("handshake");
    let took = closed_after(&mut shook).await;
    assert!(took >= Duration::from_millis(250) && took < Duration::from_secs(5), "{took:?}");
    // Every answer over TLS carries HSTS.
    let health = secure.http.get(format!("{}/healthz", secure.url)).send().await.unwrap();
    assert_eq!(health.headers()["strict-transport-security"], "max-age=31536000");
    secure.stop().await;
}

/// This process's peak resident memory, in bytes.
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    kb * 1024
}

/// Fifty strangers each sending 100 MB to the admin API at once are refused
/// before their bodies are read: the server's memory stays flat. (Read
/// first, each body would take up to the 64 MiB request limit.) The admin
/// itself is held to small bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_admin_uploads_are_refused_unread() {
    if !std::path::Path::new("/proc/self/status").exists() {
        eprintln!("skipped: needs /proc to read the process's memory");
        return;
    }
    let sim = frozen_sim().await;
    let (_dir, db) = temp_db();
    let proxy = start_proxy(&sim, &db).await;
    let before = peak_memory();
    let chunk = bytes::Bytes::from(vec![b'{'; 1 << 20]);
    let mut uploads = tokio::task::JoinSet::new();
    for n in 0..50 {
        let (http, url, chunk) = (proxy.http.clone(), format!("{}/admin/keys", proxy.url), chunk.clone());
        let path = if n % 2 == 0 { url } else { format!("{url}/someone") };
        uploads.spawn(async move {
            let body =
                futures_util::stream::iter((0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
            let request = if path.ends_with("/keys") { http.post(&path) } else { http.patch(&path) };
            let sent = request
                .header("content-type", "application/json")
                .header("content-length", (100u64 << 20).to_string())
                .bearer_auth("not-the-admin-token")
                .body(reqwest::Body::wrap_stream(body))
                .send()
                .await;
            // The answer comes before the body is sent; the client may see it, or the close.
            sent.map(|r| r.status().as_u16()).unwrap_or(401)
        });
    }
    let statuses = uploads.join_all().await;
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    let grew = peak_memory().saturating_sub(before);
    eprintln!("peak memory grew by {} MB under 50 unauthenticated 100 MB admin uploads", grew >> 20);
    assert!(grew < 256 << 20, "peak memory grew by {} MB", grew >> 20);

    // The admin's own requests are small: a 100 KB body is refused.
    let large = serde_json::json!({ "name": "x".repeat(100 * 1024) });
    let refused = proxy
        .http
        .post(format!("{}/admin/keys", proxy.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&large)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 413);
    proxy.stop().await;
}

/// The DER bytes of the first PEM block in `pem`.
fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).unwrap();
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD.decode(body).unwrap()
}
