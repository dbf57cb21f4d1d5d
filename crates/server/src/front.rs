//! The HTTP front: the accept loop both plain HTTP and TLS are served by,
//! with the limits a server facing the network needs: a time limit on
//! reading a request's headers (so a slowloris connection is closed), a cap
//! on open connections, HTTP/2 stream limits, and a shutdown that lets
//! in-flight requests finish for a while and then stops anyway.

use std::future::Future;
use std::sync::Arc;
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

/// The front's limits.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontLimits {
    /// Time to send a request's headers, from connecting or from the end of
    /// the previous request: a connection that takes longer is closed, so
    /// this is also how long a keep-alive connection may sit idle. Longer
    /// than the 20 s the `aimlvid` client keeps idle connections, so that a
    /// client never sends on a connection this server is closing.
    pub header_read_timeout: Duration,
    /// Connections open at once; further ones wait to be accepted.
    pub max_connections: usize,
    /// HTTP/2 streams open at once on one connection.
    pub max_streams_per_connection: u32,
    /// Longest pause while a request body arrives.
    pub body_idle_timeout: Duration,
    /// Slowest a request body may arrive, in bytes a second, after the
    /// first `body_idle_timeout` (a whole create body has that long plus
    /// its size at this rate).
    pub min_body_rate: u64,
    /// How long shutdown waits for in-flight requests before closing their
    /// connections. Creates in flight are recorded whatever happens: they
    /// run in tasks of their own, which shutdown waits for.
    pub shutdown_grace: Duration,
}

impl Default for FrontLimits {
    fn default() -> Self {
        FrontLimits {
            header_read_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_streams_per_connection: 100,
            body_idle_timeout: Duration::from_secs(30),
            min_body_rate: 16 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Marks requests that arrived over this server's own TLS.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

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
    let router = if tls.is_some() { router.layer(axum::Extension(OverTls)) } else { router };
    let service = TowerToHyperService::new(router);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams_per_connection)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
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
        let _ = tcp.set_nodelay(true);
        let (service, builder, tls) = (service.clone(), builder.clone(), tls.clone());
        // Taken before any handshake, so shutdown also waits for connections still in it.
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let Some(tls) = tls else {
                return run(builder, service, watcher, tcp, peer).await;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                Ok(Ok(stream)) => run(builder, service, watcher, stream, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
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
