//! What the HTTP front knows of a connection: the timeouts and caps it is
//! held to ([`FrontLimits`]) and whether it came over TLS ([`OverTls`]).
//! Apart from the front (`front.rs`, which enforces them), so that the
//! state and the pages below the front can use them without importing the
//! accept loop.

use std::time::Duration;

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
    /// Connections open at once from one peer address; further ones from
    /// it are closed as soon as they are accepted. 0: no such limit (behind
    /// a reverse proxy every connection comes from the proxy's address).
    pub max_connections_per_peer: usize,
    /// Time from accepting a connection to its first byte (of a request,
    /// or of a TLS handshake): a connection that sends nothing is closed.
    pub first_byte_timeout: Duration,
    /// `Strict-Transport-Security: max-age=…` on every answer served over
    /// this server's own TLS; `None` sends no such header.
    pub hsts_max_age: Option<Duration>,
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
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            first_byte_timeout: Duration::from_secs(10),
            hsts_max_age: Some(Duration::from_secs(365 * 86_400)),
            max_streams_per_connection: 100,
            body_idle_timeout: Duration::from_secs(30),
            min_body_rate: 16 * 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Connections from one address at once, unless configured otherwise.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 256;

/// Marks requests that arrived over this server's own TLS.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;
