//! A small HTTP/1 client for the CLI: one JSON request to a node's admin API, bounded by
//! a connect timeout and an overall timeout (a CLI that hangs on a dead node is worse
//! than one that says so). No retries: the operator decides whether to try again.
//!
//! `https://` nodes are reached over TLS (rustls on ring, the same stack as the source
//! fetch, [`crate::work::fetch::tls_client`]): the Mozilla roots plus the PEM files
//! given with `--ca-file` (a node behind a private CA), the name checked against the
//! certificate — the operator token is a bearer credential and must not cross a network
//! in clear. Path segments are percent-encoded by the callers (`cli::segment`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::work::fetch::{tls_client, TlsRootsError};

/// Largest answer read (reports are a few KB; an export can be large).
const RESPONSE_BYTES_MAX: usize = 1 << 30;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("node address {0:?}: expected http://host[:port] or https://host[:port]")]
    Address(String),
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("TLS with {addr}: {reason} (a node behind a private CA: pass its certificate with --ca-file)")]
    Tls { addr: String, reason: String },
    #[error(transparent)]
    Roots(#[from] TlsRootsError),
    #[error("request to {addr} timed out after {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the node answered {status} with a body that is not JSON")]
    NotJson { status: StatusCode },
}

/// TLS to one node: the configuration and the name its certificate must carry.
struct Tls {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

pub struct Client {
    /// `host:port`, what is dialled and sent as `Host`.
    authority: String,
    tls: Option<Tls>,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// `node` is `http://host[:port]`, `https://host[:port]` or `host:port` (plain HTTP);
    /// `ca_files` are PEM roots trusted besides the Mozilla set, for `https://`.
    pub fn new(
        node: &str,
        token: Option<String>,
        timeout: Duration,
        ca_files: &[PathBuf],
    ) -> Result<Client, ClientError> {
        let invalid = || ClientError::Address(node.to_owned());
        let trimmed = node.trim_end_matches('/');
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("http://{trimmed}")
        };
        let uri: Uri = with_scheme.parse().map_err(|_| invalid())?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid()),
        };
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(invalid());
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(invalid)?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = format!("{host}:{port}");
        let tls = if https {
            // An IPv6 literal is written in brackets in a URL, not in a certificate.
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(bare.to_owned()).map_err(|_| invalid())?;
            Some(Tls {
                config: tls_client(ca_files)?,
                name,
            })
        } else {
            None
        };
        Ok(Client {
            authority,
            tls,
            token,
            timeout,
        })
    }

    /// Sends one request; returns the status and the JSON body (`null` when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, serde_json::Value), ClientError> {
        let (status, bytes) = self.call_raw(method, path, body).await?;
        if bytes.is_empty() {
            return Ok((status, serde_json::Value::Null));
        }
        let json = serde_json::from_slice(&bytes).map_err(|_| ClientError::NotJson { status })?;
        Ok((status, json))
    }

    /// Sends one request; returns the status and the body as it came.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let payload = body.map(|json| (Bytes::from(json.to_string()), "application/json"));
        self.send(method, path, payload).await
    }

    /// Sends one request whose body is `bytes` of `content_type` (an image file); returns
    /// the status and the body as it came.
    pub async fn call_bytes(
        &self,
        method: Method,
        path: &str,
        bytes: Bytes,
        content_type: &'static str,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.send(method, path, Some((bytes, content_type))).await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        payload: Option<(Bytes, &'static str)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let timeout_ms = self.timeout.as_millis() as u64;
        tokio::time::timeout(self.timeout, self.call_inner(method, path, payload))
            .await
            .map_err(|_| ClientError::Timeout {
                addr: self.authority.clone(),
                timeout_ms,
            })?
    }

    async fn call_inner(
        &self,
        method: Method,
        path: &str,
        payload: Option<(Bytes, &'static str)>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream =
            TcpStream::connect(&self.authority)
                .await
                .map_err(|e| ClientError::Connect {
                    addr: self.authority.clone(),
                    reason: e.to_string(),
                })?;
        let request = self.request(method, path, payload)?;
        match &self.tls {
            None => exchange(stream, request).await,
            Some(tls) => {
                let stream = tokio_rustls::TlsConnector::from(tls.config.clone())
                    .connect(tls.name.clone(), stream)
                    .await
                    .map_err(|e| ClientError::Tls {
                        addr: self.authority.clone(),
                        reason: e.to_string(),
                    })?;
                exchange(stream, request).await
            }
        }
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        payload: Option<(Bytes, &'static str)>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let bytes = match payload {
            Some((bytes, content_type)) => {
                request = request.header("content-type", content_type);
                bytes
            }
            None => Bytes::new(),
        };
        request
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Http(e.to_string()))
    }
}

/// One request and its answer over `io` (plain or TLS).
async fn exchange<IO>(
    io: IO,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), ClientError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    tokio::spawn(connection);
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), RESPONSE_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let t = Duration::from_secs(1);
        let authority = |node: &str| Client::new(node, None, t, &[]).map(|c| c.authority);
        assert_eq!(
            authority("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(authority("node:80").unwrap(), "node:80");
        assert_eq!(authority("http://node").unwrap(), "node:80");
        assert_eq!(authority("https://node").unwrap(), "node:443");
        assert_eq!(authority("https://[::1]:8443").unwrap(), "[::1]:8443");
        assert!(Client::new("https://x:1", None, t, &[])
            .unwrap()
            .tls
            .is_some());
        assert!(Client::new("http://x:1", None, t, &[])
            .unwrap()
            .tls
            .is_none());
        assert!(authority("http://x:1/admin").is_err());
        assert!(authority("ftp://x:1").is_err());
        assert!(authority("").is_err());
    }

    /// A node that speaks TLS with `certificate` and answers one JSON body, echoing the
    /// bearer token it was sent.
    async fn tls_node(certificate: &rcgen::CertifiedKey) -> std::net::SocketAddr {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(certificate.cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                certificate.key_pair.serialize_der(),
            )),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let Ok(mut stream) = acceptor.accept(stream).await else {
                    continue;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                let token = head
                    .lines()
                    .find_map(|l| l.strip_prefix("authorization: bearer "))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let body = format!("{{\"token\":\"{token}\"}}");
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        addr
    }

    /// Over `https://` the token travels inside TLS to a node whose certificate chains
    /// to a trusted root (here the `--ca-file`); a certificate from no trusted root, or
    /// for another name, ends the call before anything is sent.
    #[tokio::test]
    async fn https_nodes_are_reached_over_verified_tls() {
        let dir = tempfile::tempdir().unwrap();
        let node_cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let ca_file = dir.path().join("node.pem");
        std::fs::write(&ca_file, node_cert.cert.pem()).unwrap();
        let addr = tls_node(&node_cert).await;
        let t = Duration::from_secs(5);
        let url = format!("https://localhost:{}", addr.port());

        let trusted = Client::new(
            &url,
            Some("top_secret".into()),
            t,
            std::slice::from_ref(&ca_file),
        )
        .unwrap();
        let (status, body) = trusted
            .call(Method::GET, "/admin/v1/cluster", None)
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["token"], "top_secret");

        let untrusted = Client::new(&url, Some("top_secret".into()), t, &[]).unwrap();
        let refused = untrusted.call(Method::GET, "/admin/v1/cluster", None).await;
        assert!(
            matches!(refused, Err(ClientError::Tls { .. })),
            "{refused:?}"
        );

        // The right root but another name: 127.0.0.1 is not on the certificate.
        let by_ip = format!("https://127.0.0.1:{}", addr.port());
        let wrong_name = Client::new(&by_ip, None, t, &[ca_file]).unwrap();
        let refused = wrong_name
            .call(Method::GET, "/admin/v1/cluster", None)
            .await;
        assert!(
            matches!(refused, Err(ClientError::Tls { .. })),
            "{refused:?}"
        );

        // A CA file that is not PEM is refused when the client is made.
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        assert!(matches!(
            Client::new(&url, None, t, &[junk]),
            Err(ClientError::Roots(_))
        ));
    }
}
