//! Test harness: a node served in-process on 127.0.0.1:0, a one-request HTTP/1 client,
//! raw-socket helpers for the misbehaving clients, and the shared photos.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tessera_edge::config::Config;
use tessera_edge::http::routes::AppState;
use tessera_edge::http::server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestNode {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    /// The data directory, when the node made its own (removed with the node).
    pub data_dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestNode {
    /// Starts a node; with the default data directory, in a fresh temporary one.
    pub async fn start(mut config: Config) -> Self {
        let data_dir = (config.data_dir == Config::default().data_dir).then(|| {
            let dir = tempfile::tempdir().unwrap();
            config.data_dir = dir.path().to_owned();
            dir
        });
        config.validate().expect("test config is valid");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = server::build_state(config).await.expect("node starts");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(server::run(listener, state.clone(), async {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            data_dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Signals shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn stop(mut self) {
        self.begin_shutdown();
        if let Some(handle) = self.handle.take() {
            handle.await.unwrap().unwrap();
        }
    }

    /// Waits up to `limit` for the server to stop by itself (an operator's leave); true
    /// once it has returned without error.
    pub async fn stopped_within(&mut self, limit: Duration) -> bool {
        let Some(handle) = self.handle.as_mut() else {
            return true;
        };
        match tokio::time::timeout(limit, handle).await {
            Ok(result) => {
                self.handle = None;
                result.unwrap().unwrap();
                true
            }
            Err(_) => false,
        }
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        request(self.addr, Method::POST, path, headers, body).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        request(self.addr, Method::GET, path, &[], Vec::new()).await
    }

    pub async fn metrics(&self) -> String {
        String::from_utf8(self.get("/metrics").await.body.to_vec()).unwrap()
    }
}

/// A small configuration for tests: 2 workers, short timeouts, resizing without a key
/// (the front-door tests; `tests/node_api.rs` covers keys and billing).
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.auth.anonymous_resize = true;
    config.pool.workers = 2;
    config.pool.queue_max = 16;
    config.http.shutdown_grace_ms = 5_000;
    config
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `error.code` of a JSON error body (panics if the body is not one).
    pub fn error_code(&self) -> String {
        let json: serde_json::Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body));
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "error without message: {json}"
        );
        json["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned()
    }
}

/// The JSON body of a reply (panics if it is not JSON).
pub fn json_of(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("not JSON ({e}): {reply:?}"))
}

/// A request with `Authorization: Bearer <token>` and an optional JSON body.
pub async fn with_bearer(
    addr: SocketAddr,
    token: &str,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Reply {
    let bearer = format!("Bearer {token}");
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    request(addr, method, path, &[("authorization", &bearer)], body).await
}

pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let response = sender
        .send_request(builder.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// Reads from a raw socket until EOF or `limit`; returns what arrived and whether the
/// server closed the connection within the limit.
pub async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let outcome = tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (received, outcome.is_ok())
}

pub async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    stream.write_all(bytes).await?;
    stream.flush().await
}

pub fn photos_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/photos"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: test photos not found at {} (they live in the shared folder beside the checkout)",
            dir.display()
        );
        None
    }
}

pub fn photo(dir: &std::path::Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Creates a tenant through the admin API with the operator `token`; returns its id.
pub async fn create_tenant(addr: SocketAddr, token: &str, name: &str) -> String {
    let reply = with_bearer(
        addr,
        token,
        Method::POST,
        "/admin/v1/tenants",
        Some(serde_json::json!({ "name": name })),
    )
    .await;
    assert_eq!(reply.status, hyper::StatusCode::CREATED, "{reply:?}");
    json_of(&reply)["id"].as_str().unwrap().to_owned()
}

/// The operator token of [`keyed_config`] nodes.
pub const TOKEN: &str = "top_test-operator-token";

/// [`test_config`] with keys required and [`TOKEN`] as the operator token.
pub fn keyed_config() -> Config {
    let mut config = test_config();
    config.auth.anonymous_resize = false;
    config.auth.operator_token_sha256 = vec![tessera_edge::control::auth::hex(
        &tessera_edge::control::auth::sha256(TOKEN.as_bytes()),
    )];
    config
}

/// Creates a key for `tenant` with `scopes` (comma separated); returns (key id, key).
pub async fn create_key(addr: SocketAddr, tenant: &str, scopes: &str) -> (String, String) {
    let reply = with_bearer(
        addr,
        TOKEN,
        Method::POST,
        &format!("/admin/v1/tenants/{tenant}/keys"),
        Some(serde_json::json!({ "scopes": scopes, "label": "test" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let body = json_of(&reply);
    (
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

/// The merged usage totals of `tenant`, read with the operator `token`.
pub async fn totals(addr: SocketAddr, token: &str, tenant: &str) -> serde_json::Value {
    let reply = with_bearer(
        addr,
        token,
        Method::GET,
        &format!("/admin/v1/usage?tenant={tenant}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    json_of(&reply)["totals"].clone()
}

/// A local origin answering every request with `body` as a PNG (for signed-URL tests;
/// the node under test must allow `http://localhost:<port>` as a private origin).
pub async fn origin(body: Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&body).await;
            });
        }
    });
    addr
}

/// Bytes from hex digits (panics on anything else).
pub fn hex_bytes(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Allows `origin` for `tenant` (as [`TOKEN`]'s operator) and adds the tenant a signing
/// secret; returns the secret's answer (`secret`, `imgproxy.key`, `imgproxy.salt`, hex).
pub async fn allow_and_add_secret(
    addr: SocketAddr,
    tenant: &str,
    origin: &str,
) -> serde_json::Value {
    let reply = with_bearer(
        addr,
        TOKEN,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}/origins"),
        Some(serde_json::json!({ "origin": origin })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let reply = with_bearer(
        addr,
        TOKEN,
        Method::POST,
        &format!("/admin/v1/tenants/{tenant}/secrets"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    json_of(&reply)
}
