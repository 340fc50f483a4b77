//! Fetching a signed URL's source image from a tenant's allowed origin, without letting
//! the URL reach what it must not (SSRF).
//!
//! Why hand-rolled on hyper's client connection rather than a general HTTP client: the
//! check that matters is on the *address actually connected to*, after DNS. So this
//! module resolves the host itself (with a timeout), refuses every address in a
//! forbidden range (loopback, private, link-local, CGNAT, metadata, unspecified,
//! multicast, unique-local IPv6, and IPv4 hidden in IPv6: mapped, compatible, 6to4,
//! NAT64), and connects to the checked address — never re-resolving, so DNS rebinding
//! cannot swap in another address after the check. Origins named in
//! `fetch.private_origins` may resolve to private addresses (an internal image store).
//!
//! Redirects are followed by hand, at most `redirects_max`, and each target is checked
//! again: same rules, and its origin must be allowed for the tenant too. Every step has
//! a timeout (DNS and connect: `connect_timeout_ms`; headers: `timeout_ms` overall), and
//! the body is streamed under `bytes_max` and the same deadline, so a stalling origin or
//! an endless body costs a bounded time and memory.
//!
//! `https://` origins are fetched over rustls (on *ring*, the crypto libp2p's noise
//! already builds), verifying the certificate against the Mozilla root set plus any
//! roots the operator adds (`fetch.tls_roots_pem_files`, for an internal CA), for the
//! URL's host name; the TLS handshake is inside the connect timeout. A redirect from
//! `https://` to `http://` is refused: it would hand the tenant's image to anyone on the
//! path while the tenant asked for TLS.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::{self, Budget, Buffered};
use crate::error::ApiError;

/// The fetch policy (from `[fetch]` in the configuration).
#[derive(Clone, Debug)]
pub struct FetchPolicy {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub bytes_max: usize,
    pub redirects_max: u32,
    /// Origins (`scheme://host[:port]`) allowed to resolve to private addresses.
    pub private_origins: Vec<String>,
    /// The TLS client for `https://` origins: which roots are trusted.
    pub tls: Arc<rustls::ClientConfig>,
}

/// Why the TLS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsRootsError {
    #[error("cannot read trusted roots from {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("{path} holds no PEM certificate")]
    Empty { path: PathBuf },
    #[error("a certificate in {path} is not a usable root: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The TLS client configuration: the Mozilla roots (webpki-roots) plus the PEM
/// certificates in `extra_roots` (an internal CA), HTTP/1.1 only.
pub fn tls_client(extra_roots: &[PathBuf]) -> Result<Arc<rustls::ClientConfig>, TlsRootsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for path in extra_roots {
        let read = |message: String| TlsRootsError::Read {
            path: path.clone(),
            message,
        };
        let certificates = CertificateDer::pem_file_iter(path)
            .map_err(|e| read(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read(e.to_string()))?;
        if certificates.is_empty() {
            return Err(TlsRootsError::Empty { path: path.clone() });
        }
        for certificate in certificates {
            roots.add(certificate).map_err(|e| TlsRootsError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Whether `path` names a readable PEM bundle with at least one root (config checks).
pub fn check_roots_file(path: &Path) -> Result<(), TlsRootsError> {
    tls_client(&[path.to_path_buf()]).map(|_| ())
}

/// A source URL split into what the checks need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// `scheme://host[:port]`, lower-case, default port omitted: what tenants allow.
    pub origin: String,
    pub host: String,
    pub port: u16,
    /// Path and query to request.
    pub path_and_query: String,
}

fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::forbidden("source_forbidden", message)
}

/// Parses and normalises an absolute `http(s)://` URL.
pub fn parse_source(url: &str) -> Result<Source, ApiError> {
    let uri: Uri = url
        .parse()
        .map_err(|_| ApiError::bad_parameter(format!("the source {url:?} is not a URL")))?;
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => {
            return Err(ApiError::bad_parameter(
                "the source must be an http:// or https:// URL",
            ))
        }
    };
    let authority = uri
        .authority()
        .ok_or_else(|| ApiError::bad_parameter("the source URL has no host"))?;
    if authority.as_str().contains('@') {
        return Err(ApiError::bad_parameter(
            "the source URL must not carry credentials",
        ));
    }
    let host = authority.host().to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(default_port);
    let origin = if port == default_port {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}:{port}")
    };
    Ok(Source {
        origin,
        host,
        port,
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
    })
}

/// Whether an address may be fetched from without an explicit allowance.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (incl. fd00:ec2::254)
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // 169.254/16, the metadata address included
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

/// IPv4 addresses carried inside IPv6 ones: mapped (::ffff:a.b.c.d), compatible
/// (::a.b.c.d), 6to4 (2002:aabb:ccdd::) and NAT64 (64:ff9b::a.b.c.d).
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let from =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] && !(s[6] == 0 && s[7] <= 1) {
        return Some(from(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(from(s[1], s[2]));
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return Some(from(s[6], s[7]));
    }
    None
}

/// Resolves `source` and returns the first address the policy allows to connect to.
async fn resolve(source: &Source, policy: &FetchPolicy) -> Result<SocketAddr, ApiError> {
    let host = source.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, source.port)],
        Err(_) => tokio::time::timeout(
            policy.connect_timeout,
            tokio::net::lookup_host((host, source.port)),
        )
        .await
        .map_err(|_| {
            source_error(
                StatusCode::GATEWAY_TIMEOUT,
                "source_timeout",
                "resolving the source host timed out",
            )
        })?
        .map_err(|e| {
            source_error(
                StatusCode::BAD_GATEWAY,
                "source_unavailable",
                format!("the source host does not resolve: {e}"),
            )
        })?
        .collect(),
    };
    let private_ok = policy.private_origins.contains(&source.origin);
    addrs
        .iter()
        .copied()
        .find(|addr| private_ok || is_public(addr.ip()))
        .ok_or_else(|| {
            forbidden(format!(
                "the source {} resolves only to addresses that may not be fetched ({})",
                source.origin,
                addrs
                    .iter()
                    .map(|a| a.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn source_error(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// Fetches `url` for a tenant whose allowed origins `allowed` decides, following checked
/// redirects, under the policy's bounds, reserving memory from `budget`.
pub async fn fetch(
    url: &str,
    allowed: &(dyn Fn(&str) -> bool + Sync),
    policy: &FetchPolicy,
    budget: &Budget,
) -> Result<Buffered, ApiError> {
    let deadline = Instant::now() + policy.timeout;
    let mut source = parse_source(url)?;
    let mut redirects = 0;
    loop {
        if !allowed(&source.origin) {
            return Err(forbidden(format!(
                "the origin {} is not allowed for this tenant",
                source.origin
            )));
        }
        let addr = resolve(&source, policy).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let response = tokio::time::timeout(remaining, request(addr, &source, policy))
            .await
            .map_err(|_| {
                source_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    "source_timeout",
                    "the source did not answer in time",
                )
            })??;
        let status = response.status();
        if status.is_redirection() {
            redirects += 1;
            if redirects > policy.redirects_max {
                return Err(source_error(
                    StatusCode::BAD_GATEWAY,
                    "source_redirects",
                    format!(
                        "the source redirected more than {} times",
                        policy.redirects_max
                    ),
                ));
            }
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    source_error(
                        StatusCode::BAD_GATEWAY,
                        "source_unavailable",
                        "the source redirected without a Location",
                    )
                })?;
            let next = if location.starts_with('/') {
                format!("{}{}", source.origin, location)
            } else {
                location.to_owned()
            };
            let next = parse_source(&next)?;
            if source.origin.starts_with("https://") && next.origin.starts_with("http://") {
                return Err(forbidden(format!(
                    "the source redirected from https:// to {}, which is not encrypted",
                    next.origin
                )));
            }
            source = next;
            continue;
        }
        if status == StatusCode::NOT_FOUND {
            return Err(source_error(
                StatusCode::NOT_FOUND,
                "source_not_found",
                "the source answered 404",
            ));
        }
        if !status.is_success() {
            return Err(source_error(
                StatusCode::BAD_GATEWAY,
                "source_status",
                format!("the source answered {status}"),
            ));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        return body::read(
            Body::new(response.into_body()),
            policy.bytes_max,
            remaining,
            budget,
        )
        .await
        .map_err(|error| match error.code {
            "payload_too_large" => source_error(
                StatusCode::BAD_GATEWAY,
                "source_too_large",
                format!("the source is larger than {} bytes", policy.bytes_max),
            ),
            "body_timeout" => source_error(
                StatusCode::GATEWAY_TIMEOUT,
                "source_timeout",
                "the source body did not arrive in time",
            ),
            "body_read_failed" => {
                source_error(StatusCode::BAD_GATEWAY, "source_unavailable", error.message)
            }
            _ => error,
        });
    }
}

async fn request(
    addr: SocketAddr,
    source: &Source,
    policy: &FetchPolicy,
) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        source_error(
            StatusCode::BAD_GATEWAY,
            "source_unavailable",
            format!("{what} the source: {e}"),
        )
    };
    let stream = tokio::time::timeout(policy.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            source_error(
                StatusCode::GATEWAY_TIMEOUT,
                "source_timeout",
                "connecting to the source timed out",
            )
        })?
        .map_err(|e| unavailable("connecting to", &e))?;
    let _ = stream.set_nodelay(true);
    if !source.origin.starts_with("https://") {
        return send(stream, source).await;
    }
    let host = source.host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        ApiError::bad_parameter(format!("the source host {host:?} is not a valid TLS name"))
    })?;
    let tls = tokio::time::timeout(
        policy.connect_timeout,
        tokio_rustls::TlsConnector::from(policy.tls.clone()).connect(name, stream),
    )
    .await
    .map_err(|_| {
        source_error(
            StatusCode::GATEWAY_TIMEOUT,
            "source_timeout",
            "the TLS handshake with the source timed out",
        )
    })?
    .map_err(|e| {
        source_error(
            StatusCode::BAD_GATEWAY,
            "source_tls",
            format!("the TLS handshake with {} failed: {e}", source.origin),
        )
    })?;
    send(tls, source).await
}

/// Sends the GET over an established (plain or TLS) connection.
async fn send<S>(
    stream: S,
    source: &Source,
) -> Result<hyper::Response<hyper::body::Incoming>, ApiError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let unavailable = |what: &str, e: &dyn std::fmt::Display| {
        source_error(
            StatusCode::BAD_GATEWAY,
            "source_unavailable",
            format!("{what} the source: {e}"),
        )
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable("talking to", &e))?;
    tokio::spawn(connection);
    let host = if (source.origin.starts_with("http://") && source.port == 80)
        || (source.origin.starts_with("https://") && source.port == 443)
    {
        source.host.clone()
    } else {
        format!("{}:{}", source.host, source.port)
    };
    let request = hyper::Request::get(&source.path_and_query)
        .header(header::HOST, host)
        .header(header::USER_AGENT, "tessera")
        .header(header::ACCEPT, "image/*")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| unavailable("building a request to", &e))?;
    sender
        .send_request(request)
        .await
        .map_err(|e| unavailable("requesting from", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_ranges() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "64:ff9b::a9fe:a9fe",
            "fd00:ec2::254",
            "fe80::1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad} must be refused");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(good.parse().unwrap()), "{good} is public");
        }
    }

    #[test]
    fn sources_normalise_to_origins() {
        let s = parse_source("http://Img.Example.com/a/b.jpg?v=2").unwrap();
        assert_eq!(s.origin, "http://img.example.com");
        assert_eq!(s.path_and_query, "/a/b.jpg?v=2");
        let s = parse_source("http://img.example.com:8080/x").unwrap();
        assert_eq!(s.origin, "http://img.example.com:8080");
        assert_eq!(s.port, 8080);
        let s = parse_source("http://[::1]:9/x").unwrap();
        assert_eq!(s.origin, "http://[::1]:9");
        assert!(parse_source("ftp://x/y").is_err());
        assert!(parse_source("http://user:pw@x/y").is_err());
        assert!(parse_source("/relative").is_err());
    }
}
