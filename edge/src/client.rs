//! A small HTTP/1 client for the CLI: one JSON request to a node's admin API, bounded by
//! a connect timeout and an overall timeout (a CLI that hangs on a dead node is worse
//! than one that says so). No retries: the operator decides whether to try again.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;

/// Largest answer read (reports are a few KB; an export can be large).
const RESPONSE_BYTES_MAX: usize = 1 << 30;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("node address {0:?}: expected http://host:port")]
    Address(String),
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("request to {addr} timed out after {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u64 },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("the node answered {status} with a body that is not JSON")]
    NotJson { status: StatusCode },
}

pub struct Client {
    authority: String,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// `node` is `http://host:port` (or `host:port`).
    pub fn new(
        node: &str,
        token: Option<String>,
        timeout: Duration,
    ) -> Result<Client, ClientError> {
        let authority = node
            .strip_prefix("http://")
            .unwrap_or(node)
            .trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') || node.starts_with("https://") {
            return Err(ClientError::Address(node.to_owned()));
        }
        Ok(Client {
            authority: authority.to_owned(),
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
        let timeout_ms = self.timeout.as_millis() as u64;
        tokio::time::timeout(self.timeout, self.call_inner(method, path, body))
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
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream =
            TcpStream::connect(&self.authority)
                .await
                .map_err(|e| ClientError::Connect {
                    addr: self.authority.clone(),
                    reason: e.to_string(),
                })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let bytes = match body {
            Some(body) => {
                request = request.header("content-type", "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Http(e.to_string()))?;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let t = Duration::from_secs(1);
        assert_eq!(
            Client::new("http://127.0.0.1:8080/", None, t)
                .unwrap()
                .authority,
            "127.0.0.1:8080"
        );
        assert_eq!(
            Client::new("node:80", None, t).unwrap().authority,
            "node:80"
        );
        assert!(Client::new("https://x:1", None, t).is_err());
        assert!(Client::new("http://x:1/admin", None, t).is_err());
        assert!(Client::new("", None, t).is_err());
    }
}
