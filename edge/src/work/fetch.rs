//! Fetching a signed URL's source image from a tenant's allowed origin, without letting
//! the URL reach what it must not (SSRF).
//!
//! Why hand-rolled on hyper's client connection rather than a general HTTP client: the
//! check that matters is on the *address actually connected to*, after DNS. So this
//! module resolves the host itself (with a timeout), refuses every address that is not
//! globally reachable (the table in [`refusal`]: loopback, private, link-local and cloud
//! metadata, CGNAT, documentation, benchmarking, multicast, reserved, unique-local and
//! site-local IPv6, everything outside IPv6 global unicast, and IPv4 hidden in IPv6 —
//! checked as the IPv4 address where it is the destination, refused whole where a
//! translator or tunnel decides), and connects to the checked address — never
//! re-resolving, so DNS rebinding
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

use crate::http::body::{self, Buffered};
use crate::http::error::{ApiError, ErrorCode};

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
    ApiError::forbidden(ErrorCode::SourceForbidden, message)
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

/// An origin as an operator writes it (`https://Images.Example.com:443/`), in the form
/// fetches compare against (`https://images.example.com`): http or https, a host, an
/// optional port, nothing else (a trailing `/` is tolerated). The reason when it is not one.
pub fn origin_of(text: &str) -> Result<String, &'static str> {
    if !text.contains("://") {
        return Err("no scheme");
    }
    let source = parse_source(text).map_err(|_| "not an http:// or https:// URL with a host")?;
    match source.path_and_query.as_str() {
        "/" if !text.ends_with("?") => Ok(source.origin),
        _ => Err("an origin has no path, query or fragment"),
    }
}

/// What an address range is to the SSRF check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// Nothing in it may be fetched without an allowance.
    Refused,
    /// An IPv6 form that carries an IPv4 address in the 32 bits above the lowest
    /// `shift_bits`: the address is allowed or refused as that IPv4 address is.
    Embeds { shift_bits: u32 },
}

/// A range of addresses, and why it is special.
#[derive(Debug, PartialEq, Eq)]
pub struct Range {
    net: IpAddr,
    prefix_len: u8,
    name: &'static str,
    form: Form,
}

impl Range {
    const fn v4(net: [u8; 4], prefix_len: u8, name: &'static str) -> Range {
        Range {
            net: IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], net[3])),
            prefix_len,
            name,
            form: Form::Refused,
        }
    }

    const fn v6(net: [u16; 8], prefix_len: u8, name: &'static str, form: Form) -> Range {
        let [a, b, c, d, e, f, g, h] = net;
        Range {
            net: IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)),
            prefix_len,
            name,
            form,
        }
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (net, ip, width) = match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                (u128::from(u32::from(net)), u128::from(u32::from(ip)), 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => (u128::from(net), u128::from(ip), 128),
            _ => return false,
        };
        (net ^ ip)
            .checked_shr(width - u32::from(self.prefix_len))
            .unwrap_or(0)
            == 0
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} ({})", self.net, self.prefix_len, self.name)
    }
}

const EMBEDS_LOW_32: Form = Form::Embeds { shift_bits: 0 };

/// Every range a source may not be fetched from without `fetch.private_origins`, the
/// more specific first (the first match decides). IPv4: every special-purpose block
/// that is not globally reachable. IPv6: the same, then everything outside global
/// unicast (2000::/3), which nothing public is numbered from.
///
/// IPv6 forms that carry an IPv4 address: where the IPv4 address *is* the destination
/// — IPv4-mapped (the socket connects to it over IPv4), well-known NAT64 64:ff9b::/96
/// (RFC 6052 forbids it for non-global IPv4; DNS64 networks need it for every
/// IPv4-only origin) and 6to4 (2002:aabb:ccdd::, the relay delivers to aa.bb.cc.dd) —
/// the embedded address is checked by the IPv4 rules. Where a translator or tunnel
/// we do not see decides what is reached — IPv4-compatible ::/96 (deprecated),
/// IPv4-translated ::ffff:0:0:0/96 (SIIT), local-use NAT64 64:ff9b:1::/48 (the
/// operator's own translator, with any prefix length) and Teredo 2001::/32 (server
/// IPv4 in bits 32..64, the client's XOR-ed in the last 32: two addresses, neither
/// the one the packet is addressed to) — the whole range is refused.
const REFUSED: [Range; 35] = [
    Range::v4([0, 0, 0, 0], 8, "\"this network\""),
    Range::v4([10, 0, 0, 0], 8, "private"),
    Range::v4([100, 64, 0, 0], 10, "shared address space, CGNAT"),
    Range::v4([127, 0, 0, 0], 8, "loopback"),
    Range::v4([169, 254, 0, 0], 16, "link-local, cloud metadata"),
    Range::v4([172, 16, 0, 0], 12, "private"),
    Range::v4([192, 0, 0, 0], 24, "IETF protocol assignments"),
    Range::v4([192, 0, 2, 0], 24, "documentation"),
    Range::v4([192, 88, 99, 0], 24, "6to4 relay anycast"),
    Range::v4([192, 168, 0, 0], 16, "private"),
    Range::v4([198, 18, 0, 0], 15, "benchmarking"),
    Range::v4([198, 51, 100, 0], 24, "documentation"),
    Range::v4([203, 0, 113, 0], 24, "documentation"),
    Range::v4([224, 0, 0, 0], 4, "multicast"),
    Range::v4([255, 255, 255, 255], 32, "limited broadcast"),
    Range::v4([240, 0, 0, 0], 4, "reserved"),
    Range::v6([0; 8], 128, "unspecified", Form::Refused),
    Range::v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback", Form::Refused),
    Range::v6([0; 8], 96, "IPv4-compatible", Form::Refused),
    Range::v6(
        [0, 0, 0, 0, 0, 0xffff, 0, 0],
        96,
        "IPv4-mapped",
        EMBEDS_LOW_32,
    ),
    Range::v6(
        [0, 0, 0, 0, 0xffff, 0, 0, 0],
        96,
        "IPv4-translated, SIIT",
        Form::Refused,
    ),
    Range::v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64", EMBEDS_LOW_32),
    Range::v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "local-use NAT64",
        Form::Refused,
    ),
    Range::v6(
        [0x100, 0, 0, 0, 0, 0, 0, 0],
        64,
        "discard-only",
        Form::Refused,
    ),
    Range::v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, "Teredo", Form::Refused),
    Range::v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        "benchmarking",
        Form::Refused,
    ),
    Range::v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "ORCHID",
        Form::Refused,
    ),
    Range::v6(
        [0x2001, 0x20, 0, 0, 0, 0, 0, 0],
        28,
        "ORCHIDv2",
        Form::Refused,
    ),
    Range::v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation",
        Form::Refused,
    ),
    Range::v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation",
        Form::Refused,
    ),
    Range::v6(
        [0x2002, 0, 0, 0, 0, 0, 0, 0],
        16,
        "6to4",
        Form::Embeds { shift_bits: 80 },
    ),
    Range::v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "unique local",
        Form::Refused,
    ),
    Range::v6(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        "link-local",
        Form::Refused,
    ),
    Range::v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "site-local",
        Form::Refused,
    ),
    Range::v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", Form::Refused),
];

/// IPv6 outside global unicast 2000::/3, checked after [`REFUSED`] (which names the
/// special ranges in it).
const NOT_GLOBAL_UNICAST: [Range; 3] = [
    Range::v6([0; 8], 3, "not global unicast", Form::Refused),
    Range::v6(
        [0x4000, 0, 0, 0, 0, 0, 0, 0],
        2,
        "not global unicast",
        Form::Refused,
    ),
    Range::v6(
        [0x8000, 0, 0, 0, 0, 0, 0, 0],
        1,
        "not global unicast",
        Form::Refused,
    ),
];

/// Why an address may not be fetched without an allowance: its range, and the IPv6
/// form it was found in when it is an embedded IPv4 address.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub range: &'static Range,
    pub inside: Option<&'static Range>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.inside {
            None => write!(f, "{}", self.range),
            Some(inside) => write!(f, "{} inside {inside}", self.range),
        }
    }
}

/// Why `ip` may not be fetched from without an explicit allowance; `None` if it may.
pub fn refusal(ip: IpAddr) -> Option<Refusal> {
    let range = REFUSED
        .iter()
        .chain(&NOT_GLOBAL_UNICAST)
        .find(|range| range.contains(ip))?;
    match (range.form, ip) {
        (Form::Embeds { shift_bits }, IpAddr::V6(v6)) => {
            let v4 = Ipv4Addr::from((u128::from(v6) >> shift_bits) as u32);
            refusal(IpAddr::V4(v4)).map(|embedded| Refusal {
                range: embedded.range,
                inside: Some(range),
            })
        }
        _ => Some(Refusal {
            range,
            inside: None,
        }),
    }
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
                ErrorCode::SourceTimeout,
                "resolving the source host timed out",
            )
        })?
        .map_err(|e| {
            source_error(
                StatusCode::BAD_GATEWAY,
                ErrorCode::SourceUnavailable,
                format!("the source host does not resolve: {e}"),
            )
        })?
        .collect(),
    };
    let private_ok = policy.private_origins.contains(&source.origin);
    addrs
        .iter()
        .copied()
        .find(|addr| private_ok || refusal(addr.ip()).is_none())
        .ok_or_else(|| {
            forbidden(format!(
                "the source {} resolves only to addresses that may not be fetched ({})",
                source.origin,
                addrs
                    .iter()
                    .map(|a| match refusal(a.ip()) {
                        Some(why) => format!("{}: {why}", a.ip()),
                        None => a.ip().to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

fn source_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(status, code, message)
}

/// A fetched source: its bytes, and every origin they came through.
pub struct Fetched {
    pub body: Buffered,
    /// The source's origin, then each redirect's, in order: what a result made from
    /// these bytes depends on the tenant still allowing.
    pub origins: Vec<String>,
}

/// Refuses `origin` unless `allowed` (the tenant's allowed origins) says yes: the same
/// answer whether the origin is about to be fetched or a cached result came from it.
pub fn check_origin(origin: &str, allowed: &(dyn Fn(&str) -> bool + Sync)) -> Result<(), ApiError> {
    if allowed(origin) {
        return Ok(());
    }
    Err(forbidden(format!(
        "the origin {origin} is not allowed for this tenant"
    )))
}

/// Fetches `url` for a tenant whose allowed origins `allowed` decides, following checked
/// redirects, under the policy's bounds, charging the body's memory to `account` (the
/// tenant's share of the body budget, as an upload would be).
pub async fn fetch(
    url: &str,
    allowed: &(dyn Fn(&str) -> bool + Sync),
    policy: &FetchPolicy,
    account: body::Account<'_>,
) -> Result<Fetched, ApiError> {
    let deadline = Instant::now() + policy.timeout;
    let mut source = parse_source(url)?;
    let mut origins = Vec::new();
    let mut redirects = 0;
    loop {
        check_origin(&source.origin, allowed)?;
        origins.push(source.origin.clone());
        let addr = resolve(&source, policy).await?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let response = tokio::time::timeout(remaining, request(addr, &source, policy))
            .await
            .map_err(|_| {
                source_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorCode::SourceTimeout,
                    "the source did not answer in time",
                )
            })??;
        let status = response.status();
        if status.is_redirection() {
            redirects += 1;
            if redirects > policy.redirects_max {
                return Err(source_error(
                    StatusCode::BAD_GATEWAY,
                    ErrorCode::SourceRedirects,
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
                        ErrorCode::SourceUnavailable,
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
                ErrorCode::SourceNotFound,
                "the source answered 404",
            ));
        }
        if !status.is_success() {
            return Err(source_error(
                StatusCode::BAD_GATEWAY,
                ErrorCode::SourceStatus,
                format!("the source answered {status}"),
            ));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        return body::read(
            Body::new(response.into_body()),
            policy.bytes_max,
            remaining,
            account,
        )
        .await
        .map(|body| Fetched { body, origins })
        .map_err(|error| match error.code {
            ErrorCode::PayloadTooLarge => source_error(
                StatusCode::BAD_GATEWAY,
                ErrorCode::SourceTooLarge,
                format!("the source is larger than {} bytes", policy.bytes_max),
            ),
            ErrorCode::BodyTimeout => source_error(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::SourceTimeout,
                "the source body did not arrive in time",
            ),
            ErrorCode::BodyReadFailed => source_error(
                StatusCode::BAD_GATEWAY,
                ErrorCode::SourceUnavailable,
                error.message,
            ),
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
            ErrorCode::SourceUnavailable,
            format!("{what} the source: {e}"),
        )
    };
    let stream = tokio::time::timeout(policy.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            source_error(
                StatusCode::GATEWAY_TIMEOUT,
                ErrorCode::SourceTimeout,
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
            ErrorCode::SourceTimeout,
            "the TLS handshake with the source timed out",
        )
    })?
    .map_err(|e| {
        source_error(
            StatusCode::BAD_GATEWAY,
            ErrorCode::SourceTls,
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
            ErrorCode::SourceUnavailable,
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

    /// Every refused range, from inside (its first and last address) and from just
    /// outside (the neighbours of those), with the reason it is refused or `None`.
    #[test]
    fn addresses_refused_with_their_range_and_allowed_just_outside() {
        let cases: &[(&str, Option<&str>)] = &[
            // IPv4.
            ("0.0.0.0", Some("0.0.0.0/8 (\"this network\")")),
            ("0.255.255.255", Some("0.0.0.0/8 (\"this network\")")),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some("10.0.0.0/8 (private)")),
            ("10.255.255.255", Some("10.0.0.0/8 (private)")),
            ("11.0.0.0", None),
            ("100.63.255.255", None),
            (
                "100.64.0.0",
                Some("100.64.0.0/10 (shared address space, CGNAT)"),
            ),
            (
                "100.127.255.255",
                Some("100.64.0.0/10 (shared address space, CGNAT)"),
            ),
            ("100.128.0.0", None),
            ("126.255.255.255", None),
            ("127.0.0.0", Some("127.0.0.0/8 (loopback)")),
            ("127.255.255.255", Some("127.0.0.0/8 (loopback)")),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            (
                "169.254.0.0",
                Some("169.254.0.0/16 (link-local, cloud metadata)"),
            ),
            (
                "169.254.169.254",
                Some("169.254.0.0/16 (link-local, cloud metadata)"),
            ),
            (
                "169.254.255.255",
                Some("169.254.0.0/16 (link-local, cloud metadata)"),
            ),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some("172.16.0.0/12 (private)")),
            ("172.31.255.255", Some("172.16.0.0/12 (private)")),
            ("172.32.0.0", None),
            ("191.255.255.255", None),
            (
                "192.0.0.0",
                Some("192.0.0.0/24 (IETF protocol assignments)"),
            ),
            (
                "192.0.0.255",
                Some("192.0.0.0/24 (IETF protocol assignments)"),
            ),
            ("192.0.1.0", None),
            ("192.0.1.255", None),
            ("192.0.2.0", Some("192.0.2.0/24 (documentation)")),
            ("192.0.2.255", Some("192.0.2.0/24 (documentation)")),
            ("192.0.3.0", None),
            ("192.88.98.255", None),
            ("192.88.99.0", Some("192.88.99.0/24 (6to4 relay anycast)")),
            ("192.88.99.255", Some("192.88.99.0/24 (6to4 relay anycast)")),
            ("192.88.100.0", None),
            ("192.167.255.255", None),
            ("192.168.0.0", Some("192.168.0.0/16 (private)")),
            ("192.168.255.255", Some("192.168.0.0/16 (private)")),
            ("192.169.0.0", None),
            ("198.17.255.255", None),
            ("198.18.0.0", Some("198.18.0.0/15 (benchmarking)")),
            ("198.19.255.255", Some("198.18.0.0/15 (benchmarking)")),
            ("198.20.0.0", None),
            ("198.51.99.255", None),
            ("198.51.100.0", Some("198.51.100.0/24 (documentation)")),
            ("198.51.100.255", Some("198.51.100.0/24 (documentation)")),
            ("198.51.101.0", None),
            ("203.0.112.255", None),
            ("203.0.113.0", Some("203.0.113.0/24 (documentation)")),
            ("203.0.113.255", Some("203.0.113.0/24 (documentation)")),
            ("203.0.114.0", None),
            ("223.255.255.255", None),
            ("224.0.0.0", Some("224.0.0.0/4 (multicast)")),
            ("239.255.255.255", Some("224.0.0.0/4 (multicast)")),
            ("240.0.0.0", Some("240.0.0.0/4 (reserved)")),
            ("255.255.255.254", Some("240.0.0.0/4 (reserved)")),
            (
                "255.255.255.255",
                Some("255.255.255.255/32 (limited broadcast)"),
            ),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            // IPv6: loopback, unspecified and IPv4-compatible.
            ("::", Some("::/128 (unspecified)")),
            ("::1", Some("::1/128 (loopback)")),
            ("::2", Some("::/96 (IPv4-compatible)")),
            ("::8.8.8.8", Some("::/96 (IPv4-compatible)")),
            ("::255.255.255.255", Some("::/96 (IPv4-compatible)")),
            ("::1:0:0", Some("::/3 (not global unicast)")),
            // IPv4-mapped: the embedded address decides.
            ("::ffff:8.8.8.8", None),
            (
                "::ffff:0.0.0.0",
                Some("0.0.0.0/8 (\"this network\") inside ::ffff:0.0.0.0/96 (IPv4-mapped)"),
            ),
            (
                "::ffff:10.0.0.1",
                Some("10.0.0.0/8 (private) inside ::ffff:0.0.0.0/96 (IPv4-mapped)"),
            ),
            (
                "::ffff:127.0.0.1",
                Some("127.0.0.0/8 (loopback) inside ::ffff:0.0.0.0/96 (IPv4-mapped)"),
            ),
            (
                "::ffff:255.255.255.255",
                Some(
                    "255.255.255.255/32 (limited broadcast) inside ::ffff:0.0.0.0/96 (IPv4-mapped)",
                ),
            ),
            ("::fffe:ffff:ffff", Some("::/3 (not global unicast)")),
            ("::1:0:0:0", Some("::/3 (not global unicast)")),
            // SIIT: refused whole, a public IPv4 address inside too.
            ("::fffe:ffff:ffff:ffff", Some("::/3 (not global unicast)")),
            (
                "::ffff:0:0:0",
                Some("::ffff:0:0:0/96 (IPv4-translated, SIIT)"),
            ),
            (
                "::ffff:0:808:808",
                Some("::ffff:0:0:0/96 (IPv4-translated, SIIT)"),
            ),
            (
                "::ffff:0:a00:1",
                Some("::ffff:0:0:0/96 (IPv4-translated, SIIT)"),
            ),
            (
                "::ffff:0:ffff:ffff",
                Some("::ffff:0:0:0/96 (IPv4-translated, SIIT)"),
            ),
            ("::ffff:1:0:0", Some("::/3 (not global unicast)")),
            // NAT64, well-known prefix: the embedded address decides.
            ("64:ff9b::808:808", None),
            (
                "64:ff9b::a9fe:a9fe",
                Some("169.254.0.0/16 (link-local, cloud metadata) inside 64:ff9b::/96 (NAT64)"),
            ),
            (
                "64:ff9b::7f00:1",
                Some("127.0.0.0/8 (loopback) inside 64:ff9b::/96 (NAT64)"),
            ),
            ("64:ff9b::1:0:0", Some("::/3 (not global unicast)")),
            (
                "64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("::/3 (not global unicast)"),
            ),
            // NAT64, local-use prefix: refused whole.
            ("64:ff9b:1::", Some("64:ff9b:1::/48 (local-use NAT64)")),
            (
                "64:ff9b:1:0:808:808::",
                Some("64:ff9b:1::/48 (local-use NAT64)"),
            ),
            (
                "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
                Some("64:ff9b:1::/48 (local-use NAT64)"),
            ),
            ("64:ff9b:2::", Some("::/3 (not global unicast)")),
            (
                "64:ff9b:0:ffff:ffff:ffff:ffff:ffff",
                Some("::/3 (not global unicast)"),
            ),
            // Discard-only.
            (
                "ff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("::/3 (not global unicast)"),
            ),
            ("100::", Some("100::/64 (discard-only)")),
            ("100::ffff:ffff:ffff:ffff", Some("100::/64 (discard-only)")),
            ("100:0:0:1::", Some("::/3 (not global unicast)")),
            // Global unicast starts at 2000::.
            (
                "1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("::/3 (not global unicast)"),
            ),
            ("2000::", None),
            ("2000:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            // Teredo: refused whole (server and obfuscated client IPv4 inside).
            ("2001::", Some("2001::/32 (Teredo)")),
            (
                "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                Some("2001::/32 (Teredo)"),
            ),
            (
                "2001:0:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("2001::/32 (Teredo)"),
            ),
            ("2001:1::", None),
            ("2001:1:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:2::", Some("2001:2::/48 (benchmarking)")),
            (
                "2001:2:0:ffff:ffff:ffff:ffff:ffff",
                Some("2001:2::/48 (benchmarking)"),
            ),
            ("2001:2:1::", None),
            ("2001:f:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:10::", Some("2001:10::/28 (ORCHID)")),
            (
                "2001:1f:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("2001:10::/28 (ORCHID)"),
            ),
            ("2001:20::", Some("2001:20::/28 (ORCHIDv2)")),
            (
                "2001:2f:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("2001:20::/28 (ORCHIDv2)"),
            ),
            ("2001:30::", None),
            ("2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2001:db8::", Some("2001:db8::/32 (documentation)")),
            (
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("2001:db8::/32 (documentation)"),
            ),
            ("2001:db9::", None),
            // 6to4: the embedded address (bits 16..48) decides.
            ("2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("2002:808:808::1", None),
            (
                "2002::",
                Some("0.0.0.0/8 (\"this network\") inside 2002::/16 (6to4)"),
            ),
            (
                "2002:7f00:1::",
                Some("127.0.0.0/8 (loopback) inside 2002::/16 (6to4)"),
            ),
            (
                "2002:a00:1:ffff:ffff:ffff:ffff:ffff",
                Some("10.0.0.0/8 (private) inside 2002::/16 (6to4)"),
            ),
            (
                "2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("255.255.255.255/32 (limited broadcast) inside 2002::/16 (6to4)"),
            ),
            ("2003::", None),
            ("2606:4700::1111", None),
            // The newer documentation block.
            ("3ffe:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("3fff::", Some("3fff::/20 (documentation)")),
            (
                "3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("3fff::/20 (documentation)"),
            ),
            ("3fff:1000::", None),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", None),
            ("4000::", Some("4000::/2 (not global unicast)")),
            (
                "7fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("4000::/2 (not global unicast)"),
            ),
            ("8000::", Some("8000::/1 (not global unicast)")),
            (
                "fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("8000::/1 (not global unicast)"),
            ),
            ("fc00::", Some("fc00::/7 (unique local)")),
            ("fd00:ec2::254", Some("fc00::/7 (unique local)")),
            (
                "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("fc00::/7 (unique local)"),
            ),
            ("fe00::", Some("8000::/1 (not global unicast)")),
            (
                "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("8000::/1 (not global unicast)"),
            ),
            ("fe80::", Some("fe80::/10 (link-local)")),
            (
                "febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("fe80::/10 (link-local)"),
            ),
            ("fec0::", Some("fec0::/10 (site-local)")),
            (
                "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("fec0::/10 (site-local)"),
            ),
            ("ff00::", Some("ff00::/8 (multicast)")),
            ("ff02::1", Some("ff00::/8 (multicast)")),
            (
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                Some("ff00::/8 (multicast)"),
            ),
        ];
        let mut wrong = Vec::new();
        for (address, expected) in cases {
            let got = refusal(address.parse().unwrap()).map(|why| why.to_string());
            if got.as_deref() != *expected {
                wrong.push(format!("{address}: expected {expected:?}, got {got:?}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
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
