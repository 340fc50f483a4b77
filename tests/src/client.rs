//! A small HTTP/1 client for talking to node processes, with a timeout on every call.
//!
//! The suites need to tell "the node answered N" from "no answer within the bound" (a
//! paused, killed or cut-off node leaves a request's outcome unknown), so every call
//! returns [`Reply`] or a [`ClientError`] instead of hanging or panicking. One connection
//! per request: the suites measure the node, and a fresh connection after a restart never
//! reuses a socket from the previous process.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

/// The bound on one admin or probe call (connect, send, read the whole body).
pub const CALL_TIMEOUT_MS: u64 = 5_000;

/// Why a call has no [`Reply`] (or not the one expected).
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{addr}: no complete answer within {timeout_ms} ms")]
    Timeout { addr: SocketAddr, timeout_ms: u64 },
    #[error("{addr}: connection failed: {message}")]
    Connect { addr: SocketAddr, message: String },
    #[error("{addr}: HTTP exchange failed: {message}")]
    Http { addr: SocketAddr, message: String },
    /// The node answered, with a status the helper did not expect.
    #[error("{what}: unexpected {status}: {body}")]
    Status {
        what: String,
        status: StatusCode,
        body: String,
    },
    #[error("{what}: the answer is not the JSON expected: {body}")]
    Body { what: String, body: String },
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The `error.code` of a JSON error body, or "" when there is none.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Ok(self)` when the status is `expected`, else [`ClientError::Status`].
    pub fn expect_status(self, what: &str, expected: StatusCode) -> Result<Reply, ClientError> {
        if self.status == expected {
            Ok(self)
        } else {
            Err(ClientError::Status {
                what: what.to_owned(),
                status: self.status,
                body: self.text(),
            })
        }
    }
}

/// One request to `addr`, bounded as a whole by `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| ClientError::Connect {
                addr,
                message: e.to_string(),
            })?;
        let http = |e: hyper::Error| ClientError::Http {
            addr,
            message: e.to_string(),
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http)?;
        tokio::spawn(connection);
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string());
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request =
            builder
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| ClientError::Http {
                    addr,
                    message: e.to_string(),
                })?;
        let response = sender.send_request(request).await.map_err(http)?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(http)?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(ClientError::Timeout {
            addr,
            timeout_ms: timeout.as_millis() as u64,
        }))
}

/// `POST /v1/resize?w=16&format=png` with an API key: the billed request of the suites.
pub async fn resize(
    addr: SocketAddr,
    key: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    let bearer = format!("Bearer {key}");
    request(
        addr,
        Method::POST,
        "/v1/resize?w=16&format=png",
        &[("authorization", &bearer)],
        body,
        timeout,
    )
    .await
}

/// A 32×32 PNG: cheap to resize, so quota and fault suites measure the cluster, not the
/// codec.
pub fn tiny_png() -> Vec<u8> {
    let image =
        image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encoding a PNG in memory");
    out.into_inner()
}
