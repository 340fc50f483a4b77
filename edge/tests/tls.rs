//! A node that serves TLS itself (`http.tls_cert_file`, `http.tls_key_file`): the CLI's
//! client reaches it over verified https and plain HTTP to its port gets nothing; a
//! client that never sends its ClientHello is closed after `http.tls_handshake_timeout_ms`
//! and counted, and holds its place in the connection caps until then; a half-configured
//! or unreadable certificate stops the start.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{keyed_config, read_until_close, TestNode, TOKEN};
use hyper::{Method, StatusCode};
use tessera_edge::cli::client::Client;
use tessera_edge::config::{Config, Overrides};
use tessera_edge::http::server::{self, StartError};
use tessera_edge::http::tls::TlsError;
use tokio::net::TcpStream;

/// Generous bound on anything that should happen at once or after a short timeout.
const LIMIT: Duration = Duration::from_secs(5);

/// A self-signed certificate for `localhost`, written as PEM: (certificate, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("node.pem");
    let key = dir.join("node.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    (cert, key)
}

/// [`keyed_config`] serving TLS with `cert` and `key`.
fn tls_config(cert: &Path, key: &Path) -> Config {
    let mut config = keyed_config();
    config.http.tls_cert_file = Some(cert.to_owned());
    config.http.tls_key_file = Some(key.to_owned());
    config
}

/// A node serving TLS with a fresh self-signed certificate for `localhost`, and the
/// CLI's client for it, trusting that certificate (`--ca-file`).
struct TlsNode {
    node: TestNode,
    client: Client,
    _dir: tempfile::TempDir,
}

async fn tls_node(adjust: impl FnOnce(&mut Config)) -> TlsNode {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let mut config = tls_config(&cert, &key);
    adjust(&mut config);
    let node = TestNode::start(config).await;
    let url = format!("https://localhost:{}", node.addr.port());
    let client = Client::new(&url, Some(TOKEN.to_owned()), LIMIT, &[cert]).unwrap();
    TlsNode {
        node,
        client,
        _dir: dir,
    }
}

/// Waits for the node to close `silent`, a client that never sends its ClientHello,
/// without having sent it anything.
async fn closed_without_a_word(silent: &mut TcpStream) {
    let (received, closed) = read_until_close(silent, LIMIT).await;
    assert!(closed, "a silent client was not closed within {LIMIT:?}");
    assert!(received.is_empty(), "{received:?}");
}

/// `/metrics` read over https.
async fn metrics(client: &Client) -> String {
    let (status, body) = client
        .call_raw(Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    String::from_utf8(body.to_vec()).unwrap()
}

/// Polls `/metrics` until `tessera_tls_handshake_failures_total{reason}` reads `count`.
async fn until_failures_counted(client: &Client, reason: &str, count: u64) -> String {
    let line = format!("tessera_tls_handshake_failures_total{{reason=\"{reason}\"}} {count}");
    until_metrics_show(client, &line).await
}

/// Polls `/metrics` over https until it holds `line` (a connection that just ended may
/// still hold its slot for a moment); returns the text that did.
async fn until_metrics_show(client: &Client, line: &str) -> String {
    let shown = tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok((_, body)) = client.call_raw(Method::GET, "/metrics", None).await {
                let text = String::from_utf8_lossy(&body).into_owned();
                if text.contains(line) {
                    return text;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    shown.unwrap_or_else(|_| panic!("/metrics never showed {line:?}"))
}

#[tokio::test]
async fn the_cli_reaches_a_tls_node_and_plain_http_gets_nothing() {
    let TlsNode { node, client, _dir } = tls_node(|_| {}).await;
    assert!(node.state.serves_tls());

    let (status, _) = client
        .call_raw(Method::GET, "/healthz", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    // The operator token travels inside TLS to the admin API on the same listener.
    let (status, cluster) = client
        .call(Method::GET, "/admin/v1/cluster", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{cluster}");

    // Plain HTTP to the TLS port: no HTTP answer, and the connection is closed.
    let mut plain = TcpStream::connect(node.addr).await.unwrap();
    common::write_all(
        &mut plain,
        b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let (answer, closed) = read_until_close(&mut plain, LIMIT).await;
    assert!(closed, "the node kept a plain-HTTP connection open");
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    let plain_client = Client::new(
        &format!("http://localhost:{}", node.addr.port()),
        None,
        LIMIT,
        &[],
    )
    .unwrap();
    assert!(plain_client
        .call_raw(Method::GET, "/healthz", None)
        .await
        .is_err());
    until_failures_counted(&client, "error", 2).await;
    node.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_handshake_timeout_and_counted() {
    let TlsNode { node, client, _dir } = tls_node(|config| {
        config.http.tls_handshake_timeout_ms = 300;
    })
    .await;
    let before = metrics(&client).await;
    assert!(
        before.contains("tessera_tls_handshake_failures_total{reason=\"timeout\"} 0"),
        "the family exists at 0 before the first failure: {before}"
    );

    let mut silent = TcpStream::connect(node.addr).await.unwrap();
    closed_without_a_word(&mut silent).await;
    until_failures_counted(&client, "timeout", 1).await;
    node.stop().await;
}

#[tokio::test]
async fn a_connection_in_its_handshake_holds_its_place_in_the_caps() {
    let TlsNode { node, client, _dir } = tls_node(|config| {
        // One connection per client and no overflow lane: a second one is closed at accept.
        config.http.connections_per_client_max = 1;
        config.http.overflow_connections_max = 0;
        config.http.tls_handshake_timeout_ms = 2_000;
    })
    .await;

    let mut silent = TcpStream::connect(node.addr).await.unwrap();
    // Accepted after the silent one (the backlog is in order), while it is in its
    // handshake: over the client's cap.
    let refused = client.call_raw(Method::GET, "/healthz", None).await;
    assert!(refused.is_err(), "{refused:?}");
    closed_without_a_word(&mut silent).await;
    // Its place is free again once the handshake timed out (the poll retries while the
    // previous poll's connection still holds the client's one place).
    let text = until_failures_counted(&client, "timeout", 1).await;
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("tessera_http_connections_refused_total "))
        .and_then(|n| n.trim().parse().ok())
        .expect("the refused connections counter");
    assert!(refused >= 1, "{text}");
    node.stop().await;
}

#[test]
fn a_certificate_without_its_key_or_the_reverse_is_refused_naming_both() {
    for name in ["TESSERA_HTTP__TLS_CERT_FILE", "TESSERA_HTTP__TLS_KEY_FILE"] {
        let env = vec![(name.to_owned(), "/etc/tessera/node.pem".to_owned())];
        let err = Config::load(None, env, &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http.tls_cert_file") && err.contains("http.tls_key_file"),
            "{name}: {err}"
        );
    }
}

/// `build_state`'s error (the state itself has no `Debug`).
async fn start_error(config: Config) -> StartError {
    match server::build_state(config).await {
        Ok(_) => panic!("the node started"),
        Err(err) => err,
    }
}

#[tokio::test]
async fn a_certificate_or_key_that_is_not_usable_pem_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let data = |config: Config| Config {
        data_dir: dir.path().join("data"),
        ..config
    };

    let err = start_error(data(tls_config(&junk, &key))).await;
    assert!(
        matches!(err, StartError::Tls(TlsError::NoCertificate { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("http.tls_cert_file"), "{err}");

    let err = start_error(data(tls_config(&cert, &junk))).await;
    assert!(
        matches!(err, StartError::Tls(TlsError::Key { .. })),
        "{err}"
    );

    let missing = dir.path().join("missing.pem");
    let err = start_error(data(tls_config(&missing, &key))).await;
    assert!(
        matches!(err, StartError::Tls(TlsError::Certificates { .. })),
        "{err}"
    );

    // A key that is not the certificate's.
    let other = tempfile::tempdir().unwrap();
    let (_, other_key) = self_signed(other.path());
    let err = start_error(data(tls_config(&cert, &other_key))).await;
    assert!(
        matches!(err, StartError::Tls(TlsError::Unusable { .. })),
        "{err}"
    );
    // Nothing was opened: the store's directory was never made.
    assert!(!dir.path().join("data").exists());
}

/// The console's cookies over TLS are `Secure` (over plain HTTP they are not:
/// `tests/console.rs`). Read with a bare rustls client, since the CLI's shows no headers.
#[tokio::test]
async fn console_cookies_are_secure_over_tls() {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let node = TestNode::start(tls_config(&cert, &key)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(&cert).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(node.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = hyper::Request::get("/console/login")
        .header("host", "localhost")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cookie.starts_with("tessera_login=") && cookie.ends_with("; Secure"),
        "{cookie}"
    );
    node.stop().await;
}
