//! The HTTP front: the accept loop both plain HTTP and TLS are served by,
//! with the limits a server facing the network needs: a time limit on a
//! connection's first byte (so one that sends nothing is closed) and on
//! reading a request's headers (so a slowloris connection is closed), a cap
//! on open connections and a smaller one per peer address (so one host
//! cannot take them all), HTTP/2 stream limits, and a shutdown that lets
//! in-flight requests finish for a while and then stops anyway.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::AppState;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub use crate::connection::{DEFAULT_MAX_CONNECTIONS_PER_PEER, FrontLimits, OverTls};

/// Open connections per peer address.
#[derive(Debug, Default)]
struct PeerConnections {
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection of a peer, counted until dropped.
#[derive(Debug)]
struct PeerConnection {
    peers: Arc<PeerConnections>,
    address: IpAddr,
}

impl PeerConnections {
    /// Counts a connection from `address`, unless it already has `max` open.
    fn enter(self: &Arc<Self>, address: IpAddr, max: usize) -> Option<PeerConnection> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(address).or_default();
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(PeerConnection { peers: self.clone(), address })
    }
}

impl Drop for PeerConnection {
    fn drop(&mut self) {
        let mut open = self.peers.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Waits for a connection's first byte; false if none came in time (or it closed).
async fn first_byte(tcp: &tokio::net::TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(within, tcp.peek(&mut byte)).await, Ok(Ok(n)) if n > 0)
}

/// A connection that must send its first byte by a deadline: reading it
/// fails with `TimedOut` if none came. For a TLS connection once its
/// handshake is done, where peeking at the socket would see the handshake.
#[derive(Debug)]
struct FirstByteBy<I> {
    io: I,
    /// `None` once a byte was read.
    deadline: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<I> FirstByteBy<I> {
    fn new(io: I, within: Duration) -> Self {
        FirstByteBy { io, deadline: Some(Box::pin(tokio::time::sleep(within))) }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for FirstByteBy<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let late =
                    self.deadline.as_mut().is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if late {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no first byte in time",
                    )));
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for FirstByteBy<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serves `state` on `listener`, over TLS when `tls` is given, until
/// `shutdown` resolves; then stops accepting, ends event streams, lets
/// in-flight requests finish (for `shutdown_grace` at most) and stops the
/// background tasks.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.front_limits().clone();
    let router = crate::app(state.clone());
    // The team page marks its cookies Secure when it is served over TLS.
    let router = match (&tls, limits.hsts_max_age) {
        (None, _) => router,
        (Some(_), None) => router.layer(axum::Extension(OverTls)),
        (Some(_), Some(max_age)) => {
            let hsts = axum::http::HeaderValue::try_from(format!("max-age={}", max_age.as_secs()))
                .expect("digits make a header value");
            router.layer(axum::Extension(OverTls)).layer(
                tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    hsts,
                ),
            )
        }
    };
    let service = TowerToHyperService::new(router);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let peers = Arc::new(PeerConnections::default());
    // Shutdown does not wait for connections that have sent nothing yet.
    let closing = tokio_util::sync::CancellationToken::new();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // A free connection slot first, so that over the cap, connections
        // wait in the listen backlog rather than in memory.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Closed at once: counting it against the cap would let one host fill it.
        let Some(from_peer) = peers.enter(peer.ip(), limits.max_connections_per_peer) else {
            tracing::debug!(%peer, "too many connections from this address; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (first_byte_timeout, closing) = (limits.first_byte_timeout, closing.clone());
        let (service, builder, tls) = (service.clone(), builder.clone(), tls.clone());
        // Taken before any handshake, so shutdown also waits for connections still in it.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let (_permit, _from_peer) = (permit, from_peer);
            // Before any protocol reads it: HTTP/1's header timeout starts
            // only once a request begins, and the protocol sniffing of
            // HTTP/1 against HTTP/2 waits without a limit.
            let sent = tokio::select! {
                sent = first_byte(&tcp, first_byte_timeout) => sent,
                () = closing.cancelled() => false,
            };
            if !sent {
                tracing::debug!(%peer, "no first byte in time; closed");
                return;
            }
            let Some(tls) = tls else {
                return run(builder, service, watcher, tcp, peer).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                // A handshake is not a request: the first byte of one is owed too.
                Ok(Ok(stream)) => {
                    run(builder, service, watcher, FirstByteBy::new(stream, first_byte_timeout), peer).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    closing.cancel();
    // Event streams would otherwise hold their connections open until their jobs end.
    state.drain();
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            grace_secs = limits.shutdown_grace.as_secs(),
            "requests still in flight after the shutdown grace; closing their connections"
        );
    }
    state.stop().await;
    Ok(())
}

/// Serves one connection until it closes or shutdown ends it.
async fn run<I>(
    builder: auto::Builder<TokioExecutor>,
    service: TowerToHyperService<axum::Router>,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    peer: std::net::SocketAddr,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
