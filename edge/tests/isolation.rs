//! Tenant isolation on one node: what one tenant (or one client) does cannot take another
//! tenant's share of the workers, the body memory or the connections, and a tenant's
//! quota buys only answers it received. Each scenario is one of the review's findings
//! (issue #11), reproduced against a whole node in-process.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{photo, photos_dir, read_until_close, write_all, TestNode};
use hyper::{Method, StatusCode};
use serde_json::json;
use tokio::net::{TcpSocket, TcpStream};

/// The scenarios load both cores on purpose; run one at a time so that each measures its
/// own node and not its neighbours'.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn tenant_with_key(node: &TestNode, name: &str) -> (String, String) {
    let tenant = common::create_tenant(node.addr, common::TOKEN, name).await;
    let (_, key) = common::create_key(node.addr, &tenant, "resize").await;
    (tenant, key)
}

async fn set_request_quota(node: &TestNode, tenant: &str, limit: u64) {
    let reply = common::with_bearer(
        node.addr,
        common::TOKEN,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}/quotas/requests/month"),
        Some(json!({ "limit": limit })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
}

async fn resize(addr: SocketAddr, key: &str, query: &str, body: Vec<u8>) -> common::Reply {
    let bearer = format!("Bearer {key}");
    common::request(
        addr,
        Method::POST,
        &format!("/v1/resize?{query}"),
        &[("authorization", &bearer)],
        body,
    )
    .await
}

/// Refused work spent none of the tenant's quota: each of its `limit` requests still
/// serves, and exactly those are billed.
async fn whole_quota_serves(node: &TestNode, key: &str, tenant: &str, limit: u64, input: &[u8]) {
    for _ in 0..limit {
        let reply = resize(node.addr, key, "w=64", input.to_vec()).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    }
    assert_eq!(
        common::totals(node.addr, common::TOKEN, tenant).await["requests"],
        limit
    );
}

/// A connection from `source` (an address in 127.0.0.0/8) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// The value of the first metric line starting with `name` (labels included).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Tenant B sends a request every 200 ms, `count` times; returns its successes and
/// latencies.
async fn light_tenant(
    addr: SocketAddr,
    key: String,
    input: Vec<u8>,
    count: usize,
) -> (usize, Vec<Duration>) {
    let mut ok = 0;
    let mut latencies = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        let reply = resize(addr, &key, "w=200&h=200&fit=cover", input.clone()).await;
        latencies.push(started.elapsed());
        if reply.status == StatusCode::OK {
            ok += 1;
        } else {
            eprintln!("light tenant refused: {} {:?}", reply.status, reply.body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    latencies.sort();
    (ok, latencies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_tenant_does_not_starve_a_light_one() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(common::keyed_config()).await;
    let (_, heavy) = tenant_with_key(&node, "heavy").await;
    let (_, light) = tenant_with_key(&node, "light").await;
    let big = photo(&photos, "aitzgorri-1m.jpg");
    let small = photo(&photos, "seeding-256k.jpg");
    let rounds = 25;

    let (alone_ok, alone) = light_tenant(node.addr, light.clone(), small.clone(), 10).await;
    assert_eq!(alone_ok, 10);

    // Tenant A: 24 connections sending 1 MB photos back to back (a refusal is retried
    // after 5 ms, not after its Retry-After).
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut flood = Vec::new();
    for _ in 0..24 {
        let (stop, served, key, body) = (stop.clone(), served.clone(), heavy.clone(), big.clone());
        let addr = node.addr;
        flood.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = resize(addr, &key, "w=800&h=800&format=webp", body.clone()).await;
                if reply.status == StatusCode::OK {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, flooded) = light_tenant(node.addr, light.clone(), small.clone(), rounds).await;
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    eprintln!(
        "light tenant alone: p50 {:?} p99 {:?}; under the flood: {ok}/{rounds} served, p50 {:?} \
         p99 {:?}; flooding tenant served {}",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99),
        percentile(&flooded, 0.5),
        percentile(&flooded, 0.99),
        served.load(Ordering::Relaxed),
    );
    assert!(
        served.load(Ordering::Relaxed) > 0,
        "the flood was served too"
    );
    // Generous: the target is 95%; a FIFO served 22%.
    assert!(ok * 100 >= rounds * 90, "light tenant served {ok}/{rounds}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_bodies_that_never_arrive_hold_no_memory() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(photos) = photos_dir() else { return };
    let mut config = common::keyed_config();
    config.http.buffered_bytes_max = 64 << 20;
    config.http.tenant_buffered_bytes_max = 32 << 20;
    config.http.body_bytes_max = 32 << 20;
    config.fetch.bytes_max = 32 << 20;
    let node = TestNode::start(config).await;
    let (_, idle) = tenant_with_key(&node, "idle").await;
    let (tenant, busy) = tenant_with_key(&node, "busy").await;
    // 40 uploads declaring 32 MiB each (1.25 GiB claimed against a 64 MiB budget), three
    // bytes sent. Reserved as declared, three of them held the whole budget.
    let mut held = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(node.addr).await.unwrap();
        let head = format!(
            "POST /v1/resize?w=100 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {idle}\r\n\
             content-length: {}\r\n\r\nabc",
            32 << 20
        );
        write_all(&mut stream, head.as_bytes()).await.unwrap();
        held.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let in_use = node.state.body_budget.in_use();
    eprintln!("40 declared-but-unsent bodies hold {in_use} bytes of the budget");
    assert!(in_use <= 40 * 64 * 1024, "charged as declared: {in_use}");
    let reply = resize(
        node.addr,
        &busy,
        "w=100",
        photo(&photos, "seeding-256k.jpg"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    drop(held);
    assert_eq!(
        common::totals(node.addr, common::TOKEN, &tenant).await["requests"],
        1
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_hold_every_connection() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut config = common::test_config();
    config.http.connections_max = 64;
    config.http.connections_per_client_max = 16;
    config.http.overflow_connections_max = 8;
    let node = TestNode::start(config).await;
    // 127.0.0.2 takes its 16 connections and leaves them idle.
    let mut greedy = Vec::new();
    for _ in 0..16 {
        greedy.push(connect_from("127.0.0.2", node.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Its 17th is answered once: health as usual, work with a JSON 429.
    for (request, status, code) in [
        ("GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n", "200", None),
        (
            "POST /v1/resize?w=10 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n",
            "429",
            Some("too_many_connections"),
        ),
    ] {
        let mut extra = connect_from("127.0.0.2", node.addr).await.unwrap();
        write_all(&mut extra, request.as_bytes()).await.unwrap();
        let (answer, closed) = read_until_close(&mut extra, Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(
            closed,
            "the overflow lane serves one request per connection"
        );
        if let Some(code) = code {
            assert!(
                answer.contains(code) && answer.contains("retry-after"),
                "{answer}"
            );
        }
    }
    // Hundreds more from it are closed at accept or answered, never queued.
    let mut more = Vec::new();
    for _ in 0..300 {
        if let Ok(stream) = connect_from("127.0.0.2", node.addr).await {
            more.push(stream);
        }
    }
    // Everyone else is served as usual.
    let reply = node.get("/healthz").await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = common::request(node.addr, Method::POST, "/v1/resize?w=10", &[], Vec::new()).await;
    assert_eq!(
        reply.error_code(),
        "empty_body",
        "served, and refused for its own reason"
    );
    let metrics = node.metrics().await;
    assert!(
        metric(&metrics, "tessera_http_connections_overflow_total") >= 2.0,
        "{metrics}"
    );
    drop((greedy, more));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_past_its_deadline_is_refused_up_front_and_costs_no_quota() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(photos) = photos_dir() else { return };
    let mut config = common::keyed_config();
    config.http.request_deadline_ms = 3_000;
    let node = TestNode::start(config).await;
    let (tenant, key) = tenant_with_key(&node, "avif").await;
    set_request_quota(&node, &tenant, 2).await;
    let input = photo(&photos, "seeding-256k.jpg");
    for (query, code) in [
        // 16.8 megapixels of AVIF at q100 ran ~22 s past a 10 s deadline: over the AVIF
        // output bound, refused from the header.
        (
            "w=5461&h=3072&fit=fill&format=avif&q=100",
            "invalid_parameter",
        ),
        // 4.2 megapixels of AVIF: within the bound, but several seconds of work that
        // cannot be interrupted, against a 3 s deadline.
        ("w=2048&h=2048&fit=fill&format=avif&q=100", "too_costly"),
    ] {
        let started = Instant::now();
        let reply = resize(node.addr, &key, query, input.clone()).await;
        eprintln!("{query}: refused in {:?}", started.elapsed());
        assert!(reply.status.is_client_error(), "{reply:?}");
        assert_eq!(reply.error_code(), code);
    }
    // Nothing billed, no right spent: both requests of the quota still serve, and no more.
    whole_quota_serves(&node, &key, &tenant, 2, &input).await;
    let reply = resize(node.addr, &key, "w=64", input.clone()).await;
    assert_eq!(reply.error_code(), "quota_exhausted");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_leaves_stops_its_work_and_costs_no_quota() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(photos) = photos_dir() else { return };
    let mut config = common::keyed_config();
    config.pool.workers = 1;
    let node = TestNode::start(config).await;
    let (tenant, key) = tenant_with_key(&node, "leaver").await;
    set_request_quota(&node, &tenant, 1).await;
    let input = photo(&photos, "aitzgorri-1m.jpg");
    // A few seconds of lossless PNG encoding at 12 megapixels; the client leaves after
    // 300 ms.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let head = format!(
        "POST /v1/resize?w=4000&h=3000&fit=fill&format=png HTTP/1.1\r\nhost: x\r\n\
         authorization: Bearer {key}\r\ncontent-length: {}\r\n\r\n",
        input.len()
    );
    write_all(&mut stream, head.as_bytes()).await.unwrap();
    write_all(&mut stream, &input).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = |text: &str| metric(text, "tessera_pool_busy_workers");
    assert_eq!(busy(&node.metrics().await), 1.0, "the work started");
    drop(stream);
    let left = Instant::now();
    // The worker is released at its next check point (bounded wait so a regression fails
    // instead of hanging).
    while busy(&node.metrics().await) != 0.0 {
        assert!(
            left.elapsed() < Duration::from_secs(30),
            "the worker kept working"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("worker released {:?} after the client left", left.elapsed());
    // Its right came back: the quota of one still serves one request.
    whole_quota_serves(&node, &key, &tenant, 1, &photo(&photos, "seeding-256k.jpg")).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_overruns_its_deadline_is_stopped_and_costs_no_quota() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(photos) = photos_dir() else { return };
    let mut config = common::keyed_config();
    config.pool.workers = 1;
    config.http.request_deadline_ms = 1_500;
    let node = TestNode::start(config).await;
    let (tenant, key) = tenant_with_key(&node, "overrun").await;
    set_request_quota(&node, &tenant, 1).await;
    // 16 megapixels of lossless PNG: the cost model's prior (a cold node) says ~1.1 s, the
    // encoder takes ~6 s here; the worker must stop at a check point.
    let started = Instant::now();
    let reply = resize(
        node.addr,
        &key,
        "w=4000&h=4000&fit=fill&format=png",
        photo(&photos, "aitzgorri-1m.jpg"),
    )
    .await;
    eprintln!("answered {} in {:?}", reply.status, started.elapsed());
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.error_code(), "deadline_exceeded");
    let text = loop {
        let text = node.metrics().await;
        if metric(&text, "tessera_pool_busy_workers") == 0.0 {
            break text;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the worker kept working"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let past = metric(&text, "tessera_pool_work_past_deadline_seconds_sum");
    eprintln!("worker time past the deadline: {:.1} ms", past * 1e3);
    // The documented slack is tens of milliseconds (a check every 64 rows); the brief's
    // bound, 1 s, is what a regression would break.
    assert!(past < 1.0, "{past} s of work past the deadline");
    assert!(
        metric(&text, "tessera_pool_work_past_deadline_seconds_count") >= 1.0,
        "{text}"
    );
    // The right came back and nothing was billed.
    whole_quota_serves(&node, &key, &tenant, 1, &photo(&photos, "seeding-256k.jpg")).await;
    node.stop().await;
}
