//! The TCP server. Our own accept loop (rather than `axum::serve`) so a
//! handler can drop its connection without answering.

use std::net::SocketAddr;
use std::pin::pin;
use std::time::Duration;

use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Simulator;
use crate::http::ConnCtl;

/// How long a shutdown waits for in-flight requests before closing
/// connections anyway.
const GRACE: Duration = Duration::from_secs(5);

/// A running simulator; shuts the server down when dropped.
#[derive(Debug)]
pub struct RunningSim {
    sim: Simulator,
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl RunningSim {
    pub(crate) async fn bind(sim: Simulator, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(listener, sim.router(), shutdown.clone()));
        tracing::debug!(%addr, "simulator listening");
        Ok(Self { sim, addr, shutdown, task: Some(task) })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The simulator behind the server.
    pub fn sim(&self) -> &Simulator {
        &self.sim
    }

    /// Stops accepting, lets in-flight requests finish (for a few seconds at
    /// most) and returns once the server is down.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            // The serve task does not panic; if it was aborted there is
            // nothing left to wait for either way.
            let _ = task.await;
        }
    }
}

impl std::ops::Deref for RunningSim {
    type Target = Simulator;

    fn deref(&self) -> &Simulator {
        &self.sim
    }
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        // The serve task sees this and winds down on its own.
        self.shutdown.cancel();
    }
}

async fn serve(listener: TcpListener, router: axum::Router, shutdown: CancellationToken) {
    let connections = TaskTracker::new();
    let hard_stop = CancellationToken::new();
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(serve_connection(
                    stream,
                    peer,
                    router.clone(),
                    shutdown.clone(),
                    hard_stop.clone(),
                ));
            }
            Err(error) => {
                // Usually out of file descriptors; back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(GRACE, connections.wait()).await.is_err() {
        hard_stop.cancel();
        connections.wait().await;
    }
    tracing::debug!("simulator stopped");
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    shutdown: CancellationToken,
    hard_stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let drop_token = CancellationToken::new();
    let ctl = ConnCtl(drop_token.clone());
    let service = tower::ServiceExt::map_request(router, move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ctl.clone());
        req
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                break;
            }
            // Dropping the connection future closes the socket unanswered.
            () = drop_token.cancelled() => {
                tracing::debug!(%peer, "dropping connection (injected fault)");
                break;
            }
            () = hard_stop.cancelled() => break,
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
