//! Signed URLs against a local origin server: valid, tampered, expired and rotated-secret
//! cases; SSRF attempts (loopback by address, [::1], the metadata address, 10.x,
//! IPv4-mapped IPv6, a redirect to loopback) refused before any byte is fetched from
//! them; an origin that stalls or sends an endless body cut off within its bounds; and
//! only the successful requests billed. HTTPS origins: served when the certificate
//! verifies for the host against the configured roots; an untrusted certificate, a
//! certificate for another name and a redirect down to plain HTTP refused. Cached
//! results: served again, from memory and from disk after a restart, but refused like an
//! uncached URL, and not billed, once the tenant's policy changes (an origin denied, the
//! signing secret retired, the tenant suspended or deleted).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{hex_bytes, json_of, photo, photos_dir, test_config, Reply, TestNode};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tessera_crdt::TenantId;
use tessera_edge::http::signed::signed_path;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

const TOKEN: &str = "top_signed-url-test";

/// A tiny origin that misbehaves on request: raw HTTP/1.0-style answers by path.
async fn origin(photo: Vec<u8>, fetches: Arc<AtomicUsize>) -> SocketAddr {
    serve(photo, fetches, None, None).await
}

/// The same origin over TLS with the given certificate; `plain_port` is the plain
/// origin a downgrading redirect points at.
async fn tls_origin(
    photo: Vec<u8>,
    fetches: Arc<AtomicUsize>,
    certificate: &rcgen::CertifiedKey,
    plain_port: u16,
) -> SocketAddr {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
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
    serve(photo, fetches, Some(acceptor), Some(plain_port)).await
}

async fn serve(
    photo: Vec<u8>,
    fetches: Arc<AtomicUsize>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    plain_port: Option<u16>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let site = Site {
                photo: photo.clone(),
                fetches: fetches.clone(),
                own_port: addr.port(),
                plain_port: plain_port.unwrap_or(addr.port()),
            };
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => site.answer(stream).await,
                    // A client that refuses the certificate ends the handshake: no answer.
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            site.answer(stream).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// What an origin serves, by path.
struct Site {
    photo: Vec<u8>,
    fetches: Arc<AtomicUsize>,
    own_port: u16,
    plain_port: u16,
}

impl Site {
    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(self, mut stream: S) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let answer = |status: &str, extra: &str, len: usize| {
            format!(
                "HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n"
            )
        };
        match path.as_str() {
            "/photo.jpg" => {
                self.fetches.fetch_add(1, Ordering::SeqCst);
                let _ = stream
                    .write_all(
                        answer("200 OK", "Content-Type: image/jpeg\r\n", self.photo.len())
                            .as_bytes(),
                    )
                    .await;
                let _ = stream.write_all(&self.photo).await;
            }
            "/redirect-loopback" => {
                let to = format!("Location: http://127.0.0.1:{}/photo.jpg\r\n", self.own_port);
                let _ = stream
                    .write_all(answer("302 Found", &to, 0).as_bytes())
                    .await;
            }
            "/redirect-plain" => {
                let to = format!(
                    "Location: http://localhost:{}/photo.jpg\r\n",
                    self.plain_port
                );
                let _ = stream
                    .write_all(answer("302 Found", &to, 0).as_bytes())
                    .await;
            }
            "/redirect-same" => {
                let _ = stream
                    .write_all(answer("302 Found", "Location: /photo.jpg\r\n", 0).as_bytes())
                    .await;
            }
            "/stall" => tokio::time::sleep(Duration::from_secs(60)).await,
            "/endless" => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                let chunk = vec![0xffu8; 64 << 10];
                while stream.write_all(&chunk).await.is_ok() {}
            }
            _ => {
                let _ = stream
                    .write_all(answer("404 Not Found", "", 0).as_bytes())
                    .await;
            }
        }
        let _ = stream.shutdown().await;
    }
}

/// The test configuration with the operator token and no anonymous resizing.
fn signed_config() -> tessera_edge::config::Config {
    let mut config = test_config();
    config.auth.anonymous_resize = false;
    config.auth.operator_token_sha256 = vec![tessera_edge::control::auth::hex(
        &tessera_edge::control::auth::sha256(TOKEN.as_bytes()),
    )];
    config
}

/// Creates a tenant: its id as text (for paths) and as a `TenantId` (for signing).
async fn create_tenant(node: &TestNode, name: &str) -> (String, TenantId) {
    let tenant = common::create_tenant(node.addr, TOKEN, name).await;
    let tenant_id = TenantId(tenant.parse().unwrap());
    (tenant, tenant_id)
}

/// The tenant's merged usage totals.
async fn totals(node: &TestNode, tenant: &str) -> Value {
    let reply = admin(
        node,
        Method::GET,
        &format!("/admin/v1/usage?tenant={tenant}"),
        None,
    )
    .await;
    json_of(&reply)["totals"].clone()
}

async fn admin(node: &TestNode, method: Method, path: &str, body: Option<Value>) -> Reply {
    common::with_bearer(node.addr, TOKEN, method, path, body).await
}

async fn add_secret(node: &TestNode, tenant: &str) -> (String, Vec<u8>) {
    let reply = admin(
        node,
        Method::POST,
        &format!("/admin/v1/tenants/{tenant}/secrets"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let body = json_of(&reply);
    (
        body["id"].as_str().unwrap().to_owned(),
        hex_bytes(body["secret"].as_str().unwrap()),
    )
}

async fn allow(node: &TestNode, tenant: &str, origin: &str) {
    let reply = admin(
        node,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}/origins"),
        Some(json!({ "origin": origin })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{origin}: {reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_verify_rotate_expire_and_refuse_ssrf() {
    let Some(photos) = photos_dir() else { return };
    let jpeg = photo(&photos, "seeding-256k.jpg");
    let fetches = Arc::new(AtomicUsize::new(0));
    let origin_addr = origin(jpeg.clone(), fetches.clone()).await;
    let port = origin_addr.port();
    let local = format!("http://localhost:{port}");
    let mut config = signed_config();
    config.fetch.private_origins = vec![local.clone()];
    config.fetch.timeout_ms = 1_500;
    config.fetch.bytes_max = 2 << 20;
    let node = TestNode::start(config).await;

    let (tenant, tenant_id) = create_tenant(&node, "acme").await;
    for origin in [
        local.clone(),
        format!("http://127.0.0.1:{port}"),
        format!("http://[::1]:{port}"),
        "http://169.254.169.254".to_owned(),
        "http://10.0.0.1".to_owned(),
        format!("http://[::ffff:127.0.0.1]:{port}"),
    ] {
        allow(&node, &tenant, &origin).await;
    }
    let (old_id, old) = add_secret(&node, &tenant).await;
    let get = |path: String| {
        let addr = node.addr;
        async move { common::request(addr, Method::GET, &path, &[], Vec::new()).await }
    };

    // Valid: served, cacheable, billed with the fetched bytes.
    let source = format!("{local}/photo.jpg");
    let path = signed_path(tenant_id, &old, "w=200,h=200", &source);
    let reply = get(path.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    assert!(reply.header("etag").is_some());
    assert!(reply.header("cache-control").unwrap().contains("max-age"));
    let image = image::load_from_memory(&reply.body).unwrap();
    assert_eq!(image.width(), 200);
    assert_eq!(reply.header("x-cache"), Some("miss"));
    let timing = reply.header("server-timing").unwrap();
    assert!(timing.starts_with("fetch;dur="), "{timing}");
    assert!(timing.contains("decode;dur="), "{timing}");
    // The same URL again: from the result cache, no fetch, same bytes, billed again.
    let fetched = fetches.load(Ordering::SeqCst);
    let again = get(path.clone()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("x-cache"), Some("hit"));
    assert_eq!(again.body, reply.body);
    // Its timing is its own, not the miss's decode and resize.
    let timing = again.header("server-timing").unwrap();
    assert!(timing.starts_with("cache;desc=hit, total;dur="), "{timing}");
    assert!(!timing.contains("decode"), "{timing}");
    let metrics = node.metrics().await;
    for needle in [
        "tessera_result_cache_lookups_total{outcome=\"hit\"} 1",
        "tessera_result_cache_lookups_total{outcome=\"miss\"} 1",
        "tessera_fetch_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), fetched);
    let etag = reply.header("etag").unwrap().to_owned();
    let conditional = common::request(
        node.addr,
        Method::GET,
        &path,
        &[("if-none-match", &etag)],
        Vec::new(),
    )
    .await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);

    // Percent-encoded source and a same-origin redirect: fine.
    let encoded = form_urlencoded::byte_serialize(source.as_bytes()).collect::<String>();
    let reply = get(signed_path(tenant_id, &old, "w=100", &encoded)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let reply = get(signed_path(
        tenant_id,
        &old,
        "w=100",
        &format!("{local}/redirect-same"),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    // Tampered options, tampered source, wrong tenant, garbage: refused.
    for tampered in [
        path.replace("w=200", "w=300"),
        path.replace("photo.jpg", "other.jpg"),
        path.replacen(&tenant, "12345", 1),
        format!("/v1/img/{tenant}.{}/_/{source}", "0".repeat(64)),
    ] {
        let reply = get(tampered.clone()).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{tampered}: {reply:?}");
        assert_eq!(reply.error_code(), "invalid_signature");
    }
    // Expired, and not yet expired.
    let reply = get(signed_path(tenant_id, &old, "w=100,exp=1000", &source)).await;
    assert_eq!(reply.error_code(), "signature_expired");
    let reply = get(signed_path(
        tenant_id,
        &old,
        "w=100,exp=99999999999",
        &source,
    ))
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    // Rotation: a new secret verifies alongside the old; retired, the old stops.
    let (_, new) = add_secret(&node, &tenant).await;
    assert_eq!(
        get(signed_path(tenant_id, &new, "w=100", &source))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(get(path.clone()).await.status, StatusCode::OK);
    let reply = admin(
        &node,
        Method::DELETE,
        &format!("/admin/v1/tenants/{tenant}/secrets/{old_id}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    assert_eq!(get(path.clone()).await.error_code(), "invalid_signature");
    assert_eq!(
        get(signed_path(tenant_id, &new, "w=100", &source))
            .await
            .status,
        StatusCode::OK
    );
    // Answered: 5 converted (fetched), 4 from the cache (one of them a 304).
    let billed_ok = 9;
    let fetched_bytes = 5 * jpeg.len() as u64;

    // An origin the tenant did not allow.
    let reply = get(signed_path(
        tenant_id,
        &new,
        "w=100",
        "http://example.org/a.jpg",
    ))
    .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "source_forbidden");

    // SSRF: allowed for the tenant, but private addresses without the node's allowance.
    for source in [
        format!("http://127.0.0.1:{port}/photo.jpg"),
        format!("http://[::1]:{port}/photo.jpg"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/a.jpg".to_owned(),
        format!("http://[::ffff:127.0.0.1]:{port}/photo.jpg"),
        format!("{local}/redirect-loopback"),
    ] {
        let started = Instant::now();
        let reply = get(signed_path(tenant_id, &new, "w=100", &source)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{source}: {reply:?}");
        assert_eq!(reply.error_code(), "source_forbidden", "{source}");
        // Refused for the address, not for the origin (which the tenant allows).
        let message = json_of(&reply)["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("may not be fetched"),
            "{source}: {message}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{source}: refused without trying"
        );
    }

    // An origin that stalls, one that never ends, one that has nothing.
    let started = Instant::now();
    let reply = get(signed_path(
        tenant_id,
        &new,
        "w=100",
        &format!("{local}/stall"),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT, "{reply:?}");
    assert_eq!(reply.error_code(), "source_timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    let reply = get(signed_path(
        tenant_id,
        &new,
        "w=100",
        &format!("{local}/endless"),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
    assert_eq!(reply.error_code(), "source_too_large");
    let reply = get(signed_path(
        tenant_id,
        &new,
        "w=100",
        &format!("{local}/missing"),
    ))
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "source_not_found");

    // Only the successes were billed.
    let totals = totals(&node, &tenant).await;
    assert_eq!(totals["requests"], billed_ok, "{totals}");
    assert_eq!(totals["bytes_in"], fetched_bytes);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origins_verify_the_certificate_and_refuse_downgrades() {
    let Some(photos) = photos_dir() else { return };
    let jpeg = photo(&photos, "seeding-256k.jpg");
    let fetches = Arc::new(AtomicUsize::new(0));
    let plain = origin(jpeg.clone(), fetches.clone()).await;
    // Trusted and for the right name; trusted but for another name; not trusted.
    let good = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_name =
        rcgen::generate_simple_self_signed(vec!["images.example.net".to_owned()]).unwrap();
    let untrusted = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let good_addr = tls_origin(jpeg.clone(), fetches.clone(), &good, plain.port()).await;
    let other_addr = tls_origin(jpeg.clone(), fetches.clone(), &other_name, plain.port()).await;
    let untrusted_addr = tls_origin(jpeg.clone(), fetches.clone(), &untrusted, plain.port()).await;
    let roots = tempfile::tempdir().unwrap();
    let roots_file = roots.path().join("roots.pem");
    std::fs::write(
        &roots_file,
        format!("{}{}", good.cert.pem(), other_name.cert.pem()),
    )
    .unwrap();

    let origins: Vec<String> = [good_addr, other_addr, untrusted_addr]
        .iter()
        .map(|a| format!("https://localhost:{}", a.port()))
        .chain([format!("http://localhost:{}", plain.port())])
        .collect();
    let mut config = signed_config();
    config.fetch.private_origins = origins.clone();
    config.fetch.tls_roots_pem_files = vec![roots_file.clone()];
    let node = TestNode::start(config).await;
    let (tenant, tenant_id) = create_tenant(&node, "tls").await;
    for origin in &origins {
        allow(&node, &tenant, origin).await;
    }
    let (_, secret) = add_secret(&node, &tenant).await;
    let get = |source: String| {
        let path = signed_path(tenant_id, &secret, "w=120", &source);
        let addr = node.addr;
        async move { common::request(addr, Method::GET, &path, &[], Vec::new()).await }
    };

    // Verified: fetched over TLS, resized, billed with the fetched bytes.
    let reply = get(format!("{}/photo.jpg", origins[0])).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(image::load_from_memory(&reply.body).unwrap().width(), 120);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    // A same-origin redirect stays on TLS: fine.
    let reply = get(format!("{}/redirect-same", origins[0])).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");

    // A trusted certificate for another name, and one nobody vouches for.
    for (origin, what) in [(&origins[1], "another name"), (&origins[2], "untrusted")] {
        let reply = get(format!("{origin}/photo.jpg")).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{what}: {reply:?}");
        assert_eq!(reply.error_code(), "source_tls", "{what}");
    }
    // Down from https:// to http://, even to an allowed origin: refused before fetching.
    let reply = get(format!("{}/redirect-plain", origins[0])).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");
    assert_eq!(reply.error_code(), "source_forbidden");
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "only the two verified fetches"
    );

    // Only the two successes billed.
    let totals = totals(&node, &tenant).await;
    assert_eq!(totals["requests"], 2, "{totals}");
    assert_eq!(totals["bytes_in"], 2 * jpeg.len() as u64);
    node.stop().await;

    // A roots file that holds no certificate stops the start, naming the key.
    let bad = roots.path().join("empty.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let mut config = test_config();
    config.fetch.tls_roots_pem_files = vec![bad];
    let error = config.validate().unwrap_err().to_string();
    assert!(error.contains("fetch.tls_roots_pem_files"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_cache_serves_results_after_a_restart() {
    let Some(photos) = photos_dir() else { return };
    let jpeg = photo(&photos, "seeding-256k.jpg");
    let fetches = Arc::new(AtomicUsize::new(0));
    let origin_addr = origin(jpeg.clone(), fetches.clone()).await;
    let local = format!("http://localhost:{}", origin_addr.port());
    let data = tempfile::tempdir().unwrap();
    let mut config = signed_config();
    config.data_dir = data.path().to_owned();
    config.fetch.private_origins = vec![local.clone()];
    config.cache.disk_bytes_max = 1 << 20;
    let node = TestNode::start(config.clone()).await;
    let (tenant, tenant_id) = create_tenant(&node, "disk").await;
    allow(&node, &tenant, &local).await;
    let (_, secret) = add_secret(&node, &tenant).await;
    let path = signed_path(tenant_id, &secret, "w=150", &format!("{local}/photo.jpg"));
    let first = common::request(node.addr, Method::GET, &path, &[], Vec::new()).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(first.header("x-cache"), Some("miss"));
    assert!(node.state.results.disk_bytes().unwrap() > first.body.len() as u64);
    node.stop().await;

    // A new process on the same data directory: the memory tier is empty, the disk
    // tier answers, and the origin is not asked again; the hit is still billed.
    let node = TestNode::start(config).await;
    let again = common::request(node.addr, Method::GET, &path, &[], Vec::new()).await;
    assert_eq!(again.status, StatusCode::OK, "{again:?}");
    assert_eq!(again.header("x-cache"), Some("hit"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    assert_eq!(again.header("content-type"), Some("image/jpeg"));
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "fetched once");
    let totals = totals(&node, &tenant).await;
    assert_eq!(totals["requests"], 2, "{totals}");
    assert_eq!(totals["bytes_out"], 2 * first.body.len() as u64, "{totals}");
    node.stop().await;
}

/// A change to a tenant's policy made after one of its signed URLs was answered and
/// kept in the result cache.
#[derive(Clone, Copy, Debug)]
enum PolicyChange {
    /// `tessera origin deny` of the URL's own origin.
    OriginDenied,
    /// The URL's origin stays allowed; the one it redirects to is denied.
    RedirectTargetDenied,
    /// The secret that signed the URL (the tenant's only one).
    SecretRetired,
    TenantSuspended,
    TenantDeleted,
}

impl PolicyChange {
    async fn apply(self, node: &TestNode, tenant: &str, secret_id: &str, origins: [&str; 2]) {
        let (method, path, body) = match self {
            PolicyChange::OriginDenied | PolicyChange::RedirectTargetDenied => {
                let origin = match self {
                    PolicyChange::OriginDenied => origins[0],
                    _ => origins[1],
                };
                (
                    Method::PUT,
                    format!("/admin/v1/tenants/{tenant}/origins"),
                    Some(json!({ "origin": origin, "allowed": false })),
                )
            }
            PolicyChange::SecretRetired => (
                Method::DELETE,
                format!("/admin/v1/tenants/{tenant}/secrets/{secret_id}"),
                None,
            ),
            PolicyChange::TenantSuspended => (
                Method::POST,
                format!("/admin/v1/tenants/{tenant}/status"),
                Some(json!({ "status": "suspended" })),
            ),
            PolicyChange::TenantDeleted => {
                (Method::DELETE, format!("/admin/v1/tenants/{tenant}"), None)
            }
        };
        let reply = admin(node, method, &path, body).await;
        assert!(reply.status.is_success(), "{self:?}: {reply:?}");
    }
}

/// A cached result is served only while a miss would be: after each policy change, the
/// next request for a cached URL is refused exactly as one for a URL never asked for
/// (same status, code and message), from the memory tier and from the disk tier after a
/// restart, nothing is fetched, and only the two answers before the change are billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_results_are_refused_after_a_policy_change() {
    let Some(photos) = photos_dir() else { return };
    let jpeg = photo(&photos, "seeding-256k.jpg");
    let scenarios = [
        (PolicyChange::OriginDenied, "source_forbidden"),
        (PolicyChange::RedirectTargetDenied, "source_forbidden"),
        (PolicyChange::SecretRetired, "invalid_signature"),
        (PolicyChange::TenantSuspended, "tenant_suspended"),
        (PolicyChange::TenantDeleted, "tenant_deleted"),
    ];
    for (change, code) in scenarios {
        for restart in [false, true] {
            let scenario = format!("{change:?}, restart: {restart}");
            let fetches = Arc::new(AtomicUsize::new(0));
            // The URL's origin, whose /redirect-plain sends to the second one.
            let target = origin(jpeg.clone(), fetches.clone()).await;
            let first = serve(jpeg.clone(), fetches.clone(), None, Some(target.port())).await;
            let origins = [first, target].map(|a| format!("http://localhost:{}", a.port()));
            let data = tempfile::tempdir().unwrap();
            let mut config = signed_config();
            config.data_dir = data.path().to_owned();
            config.fetch.private_origins = origins.to_vec();
            config.cache.disk_bytes_max = 1 << 20;
            let mut node = TestNode::start(config.clone()).await;
            let (tenant, tenant_id) = create_tenant(&node, "policy").await;
            for origin in &origins {
                allow(&node, &tenant, origin).await;
            }
            let (secret_id, secret) = add_secret(&node, &tenant).await;
            let source = match change {
                PolicyChange::RedirectTargetDenied => format!("{}/redirect-plain", origins[0]),
                _ => format!("{}/photo.jpg", origins[0]),
            };
            let cached = signed_path(tenant_id, &secret, "w=150", &source);
            let never_asked = signed_path(tenant_id, &secret, "w=151", &source);
            let get = |addr: SocketAddr, path: String| async move {
                common::request(addr, Method::GET, &path, &[], Vec::new()).await
            };
            let answered = get(node.addr, cached.clone()).await;
            assert_eq!(answered.status, StatusCode::OK, "{scenario}: {answered:?}");
            let hit = get(node.addr, cached.clone()).await;
            assert_eq!(
                hit.header("x-cache"),
                Some("hit"),
                "{scenario}: {}",
                hit.status
            );

            change
                .apply(&node, &tenant, &secret_id, [&origins[0], &origins[1]])
                .await;
            if restart {
                node.stop().await;
                node = TestNode::start(config).await;
            }
            let fetched = fetches.load(Ordering::SeqCst);
            let uncached = get(node.addr, never_asked).await;
            assert_eq!(uncached.status, StatusCode::FORBIDDEN, "{scenario}");
            assert_eq!(uncached.error_code(), code, "{scenario}: {uncached:?}");
            let refused = get(node.addr, cached).await;
            assert_eq!(
                refused.status,
                uncached.status,
                "{scenario}: x-cache {:?}",
                refused.header("x-cache")
            );
            assert_eq!(
                json_of(&refused)["error"],
                json_of(&uncached)["error"],
                "{scenario}"
            );
            assert_eq!(fetches.load(Ordering::SeqCst), fetched, "{scenario}");
            let totals = totals(&node, &tenant).await;
            assert_eq!(totals["requests"], 2, "{scenario}: {totals}");
            assert_eq!(
                totals["bytes_out"],
                2 * answered.body.len() as u64,
                "{scenario}: {totals}"
            );
            node.stop().await;
        }
    }
}

/// imgproxy's signature, re-written here from its documentation ("Signing a URL"):
/// URL-safe base64 (no padding) of HMAC-SHA256 keyed with the key's bytes over the salt's
/// bytes and the path after the signature segment.
fn imgproxy_sign(key: &[u8], salt: &[u8], path: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(salt);
    mac.update(path.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// imgproxy URLs: signed with the pair `secret add` prints, processed and billed as a
/// signed URL is; an option Tessera cannot honour, a wrong signature, an unsigned URL
/// refused; the same answer from imgproxy's base64 and plain source forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imgproxy_urls_sign_translate_and_bill_like_signed_urls() {
    use base64::Engine as _;
    let Some(photos) = photos_dir() else { return };
    let jpeg = photo(&photos, "seeding-256k.jpg");
    let fetches = Arc::new(AtomicUsize::new(0));
    let origin_addr = origin(jpeg, fetches.clone()).await;
    let local = format!("http://localhost:{}", origin_addr.port());
    let mut config = signed_config();
    config.fetch.private_origins = vec![local.clone()];
    let node = TestNode::start(config).await;
    let (tenant, _) = create_tenant(&node, "acme").await;
    allow(&node, &tenant, &local).await;
    let reply = admin(
        &node,
        Method::POST,
        &format!("/admin/v1/tenants/{tenant}/secrets"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let body = json_of(&reply);
    let key = hex_bytes(body["imgproxy"]["key"].as_str().unwrap());
    let salt = hex_bytes(body["imgproxy"]["salt"].as_str().unwrap());
    assert_eq!(key, hex_bytes(body["secret"].as_str().unwrap()));
    assert_eq!(salt.len(), 16);
    let get = |path: String| {
        let addr = node.addr;
        async move { common::request(addr, Method::GET, &path, &[], Vec::new()).await }
    };
    let url = |signed: &str| {
        format!(
            "/ip/{tenant}/{}{signed}",
            imgproxy_sign(&key, &salt, signed)
        )
    };

    let source = format!("{local}/photo.jpg");
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&source);
    let (head, tail) = encoded.split_at(10);
    let path = format!("/rs:fill:64:48/g:no/{head}/{tail}.webp");
    let reply = get(url(&path)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("image/webp"));
    let image = image::load_from_memory(&reply.body).unwrap();
    assert_eq!((image.width(), image.height()), (64, 48));
    // The plain form of the same source and options: the same image.
    let plain = get(url(&format!(
        "/rs:fill:64:48/g:no/plain/{}@webp",
        form_urlencoded::byte_serialize(source.as_bytes()).collect::<String>()
    )))
    .await;
    assert_eq!(plain.status, StatusCode::OK, "{plain:?}");
    assert_eq!(plain.body, reply.body);
    // Without an extension the output keeps the source's family (JPEG).
    let original = get(url(&format!("/w:32/plain/{source}"))).await;
    assert_eq!(original.header("content-type"), Some("image/jpeg"));

    // Refusals: an option Tessera cannot honour exactly, named; a signature from another
    // key; a tampered path; an unsigned URL.
    let mixed = get(url(&format!("/c:0.5:10/plain/{source}"))).await;
    assert_eq!(mixed.status, StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&mixed.body).contains("`c:0.5:10`"),
        "{mixed:?}"
    );
    let other_key = format!(
        "/ip/{tenant}/{}{path}",
        imgproxy_sign(b"other", &salt, &path)
    );
    assert_eq!(get(other_key).await.status, StatusCode::FORBIDDEN);
    let tampered = url(&path).replace("rs:fill:64", "rs:fill:65");
    assert_eq!(get(tampered).await.status, StatusCode::FORBIDDEN);
    let unsigned = format!("/ip/{tenant}/insecure{path}");
    assert_eq!(get(unsigned).await.status, StatusCode::FORBIDDEN);

    // Billed like any signed URL: the three answers, none of the refusals.
    assert_eq!(totals(&node, &tenant).await["requests"], 3);
    let metrics = node.metrics().await;
    assert!(metrics.contains("route=\"/ip\""), "{metrics}");
    node.stop().await;
}

/// `GET /v1/info/<tenant>.<signature>/_/<source>`: signed like `/v1/img`, the source
/// fetched from the tenant's origins, billed; options other than `exp` refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_info_urls_fetch_and_bill() {
    let Some(photos) = photos_dir() else { return };
    let jpeg = photo(&photos, "seeding-256k.jpg");
    let origin_addr = origin(jpeg.clone(), Arc::new(AtomicUsize::new(0))).await;
    let local = format!("http://localhost:{}", origin_addr.port());
    let mut config = signed_config();
    config.fetch.private_origins = vec![local.clone()];
    let node = TestNode::start(config).await;
    let (tenant, _) = create_tenant(&node, "acme").await;
    allow(&node, &tenant, &local).await;
    let (_, secret) = add_secret(&node, &tenant).await;
    let path = |options: &str| {
        let message = format!("{options}/{local}/photo.jpg");
        let mac = tessera_edge::http::signed::sign(&secret, &message);
        format!("/v1/info/{tenant}.{mac}/{message}")
    };
    let reply = common::request(node.addr, Method::GET, &path("_"), &[], Vec::new()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let body = json_of(&reply);
    let decoded = image::load_from_memory(&jpeg).unwrap();
    assert_eq!(
        (body["format"].as_str(), body["width"].as_u64()),
        (Some("jpeg"), Some(decoded.width().into()))
    );
    let with_options =
        common::request(node.addr, Method::GET, &path("w=10"), &[], Vec::new()).await;
    assert_eq!(with_options.status, StatusCode::BAD_REQUEST);
    let tampered = path("_").replace("photo.jpg", "other.jpg");
    let refused = common::request(node.addr, Method::GET, &tampered, &[], Vec::new()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(totals(&node, &tenant).await["requests"], 1);
    node.stop().await;
}
