//! The listener's TLS: the certificate chain and key of `http.tls_cert_file` and
//! `http.tls_key_file`, read once at start-up into a rustls server configuration, and the
//! bounded handshake each accepted connection goes through before hyper sees it.
//!
//! rustls on *ring*, chosen explicitly (`builder_with_provider`), like the CLI's client
//! and the origin fetch ([`crate::work::fetch::tls_client`]): one crypto stack in the
//! binary. rustls's safe default protocol versions (TLS 1.3 and 1.2), no client
//! certificates, ALPN `http/1.1` (the only protocol served; a client that offers only
//! `h2` is refused in the handshake rather than misunderstood after it). A file that
//! cannot be read, holds no PEM item of its kind, or a key that does not match the
//! certificate stops the start with [`TlsError`]: a node configured for TLS never falls
//! back to serving in clear.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::HttpConfig;

/// Why the listener's TLS could not be set up from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("http.tls_cert_file {path}: cannot read PEM certificates: {source}")]
    Certificates { path: PathBuf, source: pem::Error },
    #[error("http.tls_cert_file {path} holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error(
        "http.tls_key_file {path}: cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1): \
         {source}"
    )]
    Key { path: PathBuf, source: pem::Error },
    #[error(
        "http.tls_cert_file {cert} and http.tls_key_file {key} are not a usable pair: {source}"
    )]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// The acceptor for the listener when `http.tls_cert_file` and `http.tls_key_file` are
/// set (validation guarantees both or neither); `None` serves plain HTTP.
pub fn acceptor(http: &HttpConfig) -> Result<Option<TlsAcceptor>, TlsError> {
    let (Some(cert), Some(key)) = (&http.tls_cert_file, &http.tls_key_file) else {
        return Ok(None);
    };
    server_config(cert, key).map(|config| Some(TlsAcceptor::from(config)))
}

fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certificates = CertificateDer::pem_file_iter(cert)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: cert.to_owned(),
            source,
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::Key {
        path: key.to_owned(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_single_cert(certificates, private_key)
        .map_err(|source| TlsError::Unusable {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How a handshake failed: the `reason` label of `tessera_tls_handshake_failures_total`.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// Not finished within `http.tls_handshake_timeout_ms` (a silent or slow client).
    Timeout,
    /// Refused by rustls or cut by the client (plain HTTP to the TLS port, no shared
    /// protocol version or cipher suite, a reset).
    Error(std::io::Error),
}

impl HandshakeFailure {
    /// One of [`crate::http::metrics`]'s closed set of handshake failure reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Error(_) => "error",
        }
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Timeout => f.write_str("timed out"),
            HandshakeFailure::Error(err) => err.fmt(f),
        }
    }
}

/// The server side of the handshake on `stream`, given at most `timeout`.
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
) -> Result<TlsStream<TcpStream>, HandshakeFailure> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(err)) => Err(HandshakeFailure::Error(err)),
        Err(_) => Err(HandshakeFailure::Timeout),
    }
}
