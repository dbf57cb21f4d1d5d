//! Built-in TLS (rustls), for teams without a reverse proxy in front:
//! a certificate chain and key from PEM files, HTTP/2 and HTTP/1.1 offered
//! by ALPN, and the same graceful shutdown as plain HTTP.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::AppState;

/// A TLS configuration from PEM files: `cert` holds the certificate chain
/// (the server's certificate first), `key` its private key (PKCS#8, PKCS#1
/// or SEC1). Errors name the files, never their contents.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Arc<ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the TLS certificate chain from {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no PEM certificate", cert.display());
    let private_key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the TLS private key from {}", key.display()))?;
    // The provider is named, not taken from the process default, so that no
    // other crate's choice of rustls backend can change or break it.
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .with_context(|| {
            format!("the key in {} does not fit the certificate in {}", key.display(), cert.display())
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `state` over TLS on `listener` until `shutdown` resolves, then
/// stops accepting, lets in-flight requests finish (event streams end) and
/// stops the background tasks: [`crate::serve`], with TLS.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: AppState,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::front::serve(listener, state, Some(TlsAcceptor::from(tls)), shutdown).await
}
