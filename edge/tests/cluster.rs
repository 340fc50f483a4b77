//! Three `tessera` processes on loopback, replicating over libp2p: usage from all three is
//! visible and identical on each; a key revoked on one node is refused on the others
//! within seconds; a quota hammered on all three ends with at most Q billed successes
//! and at least 0.99·Q; a node killed with SIGKILL under load and restarted loses no
//! acknowledged usage, and no node's totals ever go down.
//!
//! (These tests live in `edge/` because Cargo hands a package's binary only to that
//! package's own integration tests.)

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{json_of, request, Reply};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "top_cluster-test-operator";
const CLUSTER_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node process, its ports and its data directory.
struct Proc {
    child: Option<Child>,
    http: SocketAddr,
    p2p_port: u16,
    data_dir: PathBuf,
}

impl Proc {
    fn spawn(data_dir: &Path, http_port: u16, p2p_port: u16, peers: &[u16]) -> Proc {
        std::fs::create_dir_all(data_dir).unwrap();
        let bootstrap: Vec<String> = peers
            .iter()
            .map(|p| format!("\"/ip4/127.0.0.1/tcp/{p}\""))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("node.log"))
            .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
        for (name, _) in std::env::vars() {
            if name.starts_with("TESSERA_") {
                command.env_remove(name);
            }
        }
        let digest = tessera_edge::auth::hex(&tessera_edge::auth::sha256(TOKEN.as_bytes()));
        let child = command
            .args(["serve", "--listen", &format!("127.0.0.1:{http_port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--workers", "1"])
            .env("TESSERA_CLUSTER__CLUSTER_KEY", CLUSTER_KEY)
            .env(
                "TESSERA_CLUSTER__LISTEN",
                format!("[\"/ip4/127.0.0.1/tcp/{p2p_port}\"]"),
            )
            .env(
                "TESSERA_CLUSTER__BOOTSTRAP",
                format!("[{}]", bootstrap.join(",")),
            )
            .env(
                "TESSERA_AUTH__OPERATOR_TOKEN_SHA256",
                format!("[\"{digest}\"]"),
            )
            .env("TESSERA_POOL__QUEUE_MAX", "64")
            .env("TESSERA_LOG", "info")
            .env("TESSERA_CLUSTER__REDIAL_MAX_MS", "1000")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("tessera starts");
        Proc {
            child: Some(child),
            http: SocketAddr::from(([127, 0, 0, 1], http_port)),
            p2p_port,
            data_dir: data_dir.to_owned(),
        }
    }

    async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Ok(stream)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(self.http),
            )
            .await
            {
                drop(stream);
                let reply = request(self.http, Method::GET, "/readyz", &[], Vec::new()).await;
                if reply.status == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} never got ready: {}",
                self.http,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("node.log")).unwrap_or_default()
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

struct Cluster {
    nodes: Vec<Proc>,
    http_ports: Vec<u16>,
    p2p_ports: Vec<u16>,
    /// With a proxy mesh: `proxies[i][j]` carries node i's connections to node j.
    proxies: Vec<Vec<Option<Proxy>>>,
    _dir: tempfile::TempDir,
}

/// A userspace TCP proxy that can be cut (existing connections closed, new ones
/// refused) and healed: a partition between real processes without root.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if *cut_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        let _ = self.cut.send(cut);
    }
}

impl Cluster {
    async fn start(n: usize) -> Cluster {
        Cluster::start_with(n, false).await
    }

    /// Nodes that reach each other only through cuttable proxies.
    async fn start_with(n: usize, proxied: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let http_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let p2p_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            http_ports,
            p2p_ports,
            proxies: Vec::new(),
            _dir: dir,
        };
        if proxied {
            for i in 0..n {
                let mut row = Vec::new();
                for j in 0..n {
                    row.push(if i == j {
                        None
                    } else {
                        Some(Proxy::start(cluster.p2p_ports[j]).await)
                    });
                }
                cluster.proxies.push(row);
            }
        }
        for i in 0..n {
            let proc = cluster.spawn(i);
            cluster.nodes.push(proc);
        }
        for node in &cluster.nodes {
            node.ready().await;
        }
        cluster
    }

    fn spawn(&self, i: usize) -> Proc {
        let peers: Vec<u16> = (0..self.p2p_ports.len())
            .filter(|j| *j != i)
            .map(
                |j| match self.proxies.get(i).and_then(|row| row[j].as_ref()) {
                    Some(proxy) => proxy.port,
                    None => self.p2p_ports[j],
                },
            )
            .collect();
        Proc::spawn(
            &self._dir.path().join(format!("node{i}")),
            self.http_ports[i],
            self.p2p_ports[i],
            &peers,
        )
    }

    /// Cuts (or heals) every link of node `i`.
    fn isolate(&self, i: usize, cut: bool) {
        for (a, row) in self.proxies.iter().enumerate() {
            for (b, proxy) in row.iter().enumerate() {
                if let Some(proxy) = proxy {
                    if a == i || b == i {
                        proxy.set_cut(cut);
                    }
                }
            }
        }
    }

    fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].http
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "--- node {i} (p2p {}) ---\n{}",
                    n.p2p_port,
                    tail(&n.log(), 40)
                )
            })
            .collect()
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

async fn admin(addr: SocketAddr, method: Method, path: &str, body: Option<Value>) -> Reply {
    common::with_bearer(addr, TOKEN, method, path, body).await
}

/// A small PNG: cheap to resize, so quota tests measure the quota, not the codec.
fn tiny_png() -> Vec<u8> {
    let image =
        image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 128]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn resize(addr: SocketAddr, key: &str, body: Vec<u8>) -> Reply {
    let bearer = format!("Bearer {key}");
    request(
        addr,
        Method::POST,
        "/v1/resize?w=16&format=png",
        &[("authorization", &bearer)],
        body,
    )
    .await
}

async fn create_tenant_and_key(addr: SocketAddr, quota: Option<u64>) -> (String, String, String) {
    let reply = admin(
        addr,
        Method::POST,
        "/admin/v1/tenants",
        Some(json!({ "name": "acme" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let tenant = json_of(&reply)["id"].as_str().unwrap().to_owned();
    if let Some(limit) = quota {
        let reply = admin(
            addr,
            Method::PUT,
            &format!("/admin/v1/tenants/{tenant}/quotas/requests/month"),
            Some(json!({ "limit": limit })),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    }
    let reply = admin(
        addr,
        Method::POST,
        &format!("/admin/v1/tenants/{tenant}/keys"),
        Some(json!({ "scopes": "resize,usage" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let body = json_of(&reply);
    (
        tenant,
        body["id"].as_str().unwrap().to_owned(),
        body["key"].as_str().unwrap().to_owned(),
    )
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
async fn eventually<T, F, Fut>(
    limit: Duration,
    what: &str,
    cluster: &Cluster,
    mut check: F,
) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return (value, started.elapsed());
        }
        assert!(
            started.elapsed() < limit,
            "{what} not within {limit:?}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn totals(addr: SocketAddr, tenant: &str) -> Value {
    common::totals(addr, TOKEN, tenant).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_converges_everywhere_and_revocation_spreads() {
    let cluster = Cluster::start(3).await;
    let (tenant, key_id, key) = create_tenant_and_key(cluster.addr(0), None).await;
    let png = tiny_png();
    // The key reaches every node.
    for i in 1..3 {
        let addr = cluster.addr(i);
        let png = png.clone();
        let key = key.clone();
        eventually(Duration::from_secs(15), "the key reaching a node", &cluster, || {
            let (png, key) = (png.clone(), key.clone());
            async move { (resize(addr, &key, png).await.status == StatusCode::OK).then_some(()) }
        })
        .await;
    }
    // Now a known number of billed requests on each node.
    for i in 0..3 {
        for _ in 0..5 {
            let reply = resize(cluster.addr(i), &key, png.clone()).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        }
    }
    // 15, plus the probe that first succeeded on node 1 and on node 2.
    let expected = 17;
    let reference = totals(cluster.addr(0), &tenant).await;
    let (final_totals, took) = eventually(
        Duration::from_secs(10),
        "identical usage on every node",
        &cluster,
        || {
            let tenant = tenant.clone();
            let addrs: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
            async move {
                let mut all = Vec::new();
                for addr in addrs {
                    all.push(totals(addr, &tenant).await);
                }
                let requests = all[0]["requests"].as_u64().unwrap();
                (all.iter().all(|t| *t == all[0]) && requests == expected).then(|| all[0].clone())
            }
        },
    )
    .await;
    eprintln!("usage identical on all three nodes {took:?} after the last request: {final_totals}");
    assert!(final_totals["requests"].as_u64() >= reference["requests"].as_u64());
    // Per-node harvest: three contributors, none stale.
    let report = json_of(
        &admin(
            cluster.addr(1),
            Method::GET,
            &format!("/admin/v1/usage?tenant={tenant}"),
            None,
        )
        .await,
    );
    let contributors = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["usage"]["requests"].as_u64().unwrap() > 0)
        .count();
    assert_eq!(contributors, 3, "{report}");
    assert_eq!(report["stale"], false, "{report}");

    // Revoked on node 1: refused on nodes 0 and 2 within seconds.
    let reply = admin(
        cluster.addr(1),
        Method::DELETE,
        &format!("/admin/v1/tenants/{tenant}/keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    for i in [0, 2] {
        let addr = cluster.addr(i);
        let (_, took) = eventually(
            Duration::from_secs(5),
            "revocation reaching a node",
            &cluster,
            || {
                let (png, key) = (png.clone(), key.clone());
                async move {
                    let reply = resize(addr, &key, png).await;
                    (reply.status == StatusCode::UNAUTHORIZED).then_some(())
                }
            },
        )
        .await;
        eprintln!("revocation refused on node {i} after {took:?}");
    }
    let cluster_view =
        json_of(&admin(cluster.addr(0), Method::GET, "/admin/v1/cluster", None).await);
    assert_eq!(
        cluster_view["members"].as_array().unwrap().len(),
        2,
        "{cluster_view}"
    );
    let metrics = request(cluster.addr(0), Method::GET, "/metrics", &[], Vec::new()).await;
    let metrics = String::from_utf8_lossy(&metrics.body);
    assert!(
        metrics.contains("tessera_sync_peers_connected 2"),
        "{metrics}"
    );
    assert!(metrics.contains("tessera_sync_messages_received_total{kind=\"ledger_push\"}"));
    assert!(metrics.contains("tessera_sync_replication_lag_seconds_count"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_hammered_on_three_nodes_is_never_overrun_and_nearly_all_used() {
    const QUOTA: u64 = 300;
    let cluster = Cluster::start(3).await;
    let (tenant, _, key) = create_tenant_and_key(cluster.addr(0), Some(QUOTA)).await;
    let png = tiny_png();
    // Wait until every node knows the key (a probe with no quota effect is not possible,
    // so the probes are counted as successes too).
    let successes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..3 {
        for _ in 0..3 {
            let addr = cluster.addr(i);
            let (png, key, successes) = (png.clone(), key.clone(), successes.clone());
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut exhausted_in_a_row = 0;
                let mut other = Vec::new();
                while exhausted_in_a_row < 20 && started.elapsed() < Duration::from_secs(40) {
                    let reply = resize(addr, &key, png.clone()).await;
                    match reply.status {
                        StatusCode::OK => {
                            successes.fetch_add(1, Ordering::Relaxed);
                            exhausted_in_a_row = 0;
                        }
                        StatusCode::TOO_MANY_REQUESTS
                            if reply.error_code() == "quota_exhausted" =>
                        {
                            exhausted_in_a_row += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        _ => {
                            // Key not replicated yet, rights in transit, overload.
                            if other.len() < 5 {
                                other.push(format!(
                                    "{} {}",
                                    reply.status,
                                    String::from_utf8_lossy(&reply.body)
                                ));
                            }
                            exhausted_in_a_row = 0;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                other
            }));
        }
    }
    for task in tasks {
        let other = task.await.unwrap();
        if !other.is_empty() {
            eprintln!("non-final refusals seen: {other:?}");
        }
    }
    let succeeded = successes.load(Ordering::Relaxed);
    eprintln!("quota {QUOTA}: {succeeded} successes");
    assert!(succeeded <= QUOTA, "quota overrun: {succeeded} > {QUOTA}");
    assert!(
        succeeded * 100 >= QUOTA * 99,
        "only {succeeded} of {QUOTA} used\n{}",
        cluster.logs()
    );
    // Billing agrees with what clients saw, on every node.
    let tenant2 = tenant.clone();
    eventually(
        Duration::from_secs(10),
        "billed totals equal successes everywhere",
        &cluster,
        || {
            let tenant = tenant2.clone();
            let addrs: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
            async move {
                for addr in addrs {
                    if totals(addr, &tenant).await["requests"].as_u64() != Some(succeeded) {
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;
    let view = json_of(
        &admin(
            cluster.addr(0),
            Method::GET,
            &format!("/admin/v1/cluster?tenant={tenant}"),
            None,
        )
        .await,
    );
    eprintln!("escrow after the run: {}", view["tenant"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_usage() {
    let mut cluster = Cluster::start(3).await;
    let (tenant, _, key) = create_tenant_and_key(cluster.addr(0), None).await;
    let png = tiny_png();
    let victim = 2;
    let addr = cluster.addr(victim);
    eventually(
        Duration::from_secs(15),
        "the key reaching the victim",
        &cluster,
        || {
            let (png, key) = (png.clone(), key.clone());
            async move { (resize(addr, &key, png).await.status == StatusCode::OK).then_some(()) }
        },
    )
    .await;
    let acknowledged = Arc::new(AtomicU64::new(1)); // the probe
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (png, key, acknowledged, stop) =
            (png.clone(), key.clone(), acknowledged.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let bearer = format!("Bearer {key}");
                let outcome = tokio::time::timeout(Duration::from_secs(2), async {
                    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await
                            .ok()?;
                    tokio::spawn(connection);
                    let request = hyper::Request::post("/v1/resize?w=16&format=png")
                        .header("host", addr.to_string())
                        .header("authorization", bearer)
                        .body(http_body_util::Full::new(bytes::Bytes::from(png.clone())))
                        .unwrap();
                    let response = sender.send_request(request).await.ok()?;
                    Some(response.status())
                })
                .await;
                match outcome {
                    Ok(Some(StatusCode::OK)) => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = totals(cluster.addr(0), &tenant).await["requests"]
        .as_u64()
        .unwrap();
    cluster.nodes[victim].kill9();
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let acked = acknowledged.load(Ordering::Relaxed);
    eprintln!("acknowledged before kill -9: {acked}; node 0 had seen {before_kill}");
    assert!(acked > 10, "the load did not run");
    // Totals on the survivors never go down.
    assert!(
        totals(cluster.addr(0), &tenant).await["requests"]
            .as_u64()
            .unwrap()
            >= before_kill
    );
    // Restart from the same data directory.
    let restarted = cluster.spawn(victim);
    cluster.nodes[victim] = restarted;
    cluster.nodes[victim].ready().await;
    let tenant2 = tenant.clone();
    let (agreed, took) = eventually(
        Duration::from_secs(15),
        "every node holding every acknowledged request",
        &cluster,
        || {
            let tenant = tenant2.clone();
            let addrs: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
            async move {
                let mut all = Vec::new();
                for addr in addrs {
                    all.push(totals(addr, &tenant).await["requests"].as_u64().unwrap());
                }
                (all.iter().all(|t| *t == all[0]) && all[0] >= acked).then_some(all[0])
            }
        },
    )
    .await;
    eprintln!("after restart: {agreed} billed everywhere ({acked} acknowledged) within {took:?}");
    // Nothing double counted: at most the acknowledged plus the requests in flight at the
    // kill (4 clients).
    assert!(agreed <= acked + 4, "{agreed} billed, {acked} acknowledged");
}

/// Hammers `addr` with `key` until the quota says exhausted (or unavailable) 20 times in a
/// row or `limit` passes; returns the successes.
async fn hammer(addr: SocketAddr, key: String, png: Vec<u8>, limit: Duration) -> u64 {
    let started = Instant::now();
    let (mut ok, mut refused_in_a_row) = (0, 0);
    while refused_in_a_row < 20 && started.elapsed() < limit {
        let reply = resize(addr, &key, png.clone()).await;
        match reply.status {
            StatusCode::OK => {
                ok += 1;
                refused_in_a_row = 0;
            }
            StatusCode::TOO_MANY_REQUESTS => {
                refused_in_a_row += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_off_keeps_serving_never_overruns_and_reconciles() {
    const QUOTA: u64 = 200;
    let cluster = Cluster::start_with(3, true).await;
    let (tenant, _, key) = create_tenant_and_key(cluster.addr(0), Some(QUOTA)).await;
    let (free_tenant, _, free_key) = create_tenant_and_key(cluster.addr(0), None).await;
    let png = tiny_png();
    // Every node knows both keys and holds a share of the rights (one request each).
    let mut successes = 0;
    for i in 0..3 {
        let addr = cluster.addr(i);
        for k in [&key, &free_key] {
            eventually(Duration::from_secs(15), "keys reaching every node", &cluster, || {
                let (png, k) = (png.clone(), k.clone());
                async move { (resize(addr, &k, png).await.status == StatusCode::OK).then_some(()) }
            })
            .await;
        }
        successes += 1;
    }

    // Cut node 2 off. It keeps serving: the unlimited tenant without limit, the limited
    // one up to the rights it holds, never more.
    cluster.isolate(2, true);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let isolated = hammer(
        cluster.addr(2),
        key.clone(),
        png.clone(),
        Duration::from_secs(20),
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            resize(cluster.addr(2), &free_key, png.clone()).await.status,
            StatusCode::OK
        );
    }
    let view = json_of(&admin(cluster.addr(2), Method::GET, "/admin/v1/cluster", None).await);
    assert!(
        view["members"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["connected"] == false),
        "node 2 is cut off: {view}"
    );
    // Meanwhile the connected majority spends what it holds and can move between them.
    let (a, b) = tokio::join!(
        hammer(
            cluster.addr(0),
            key.clone(),
            png.clone(),
            Duration::from_secs(20)
        ),
        hammer(
            cluster.addr(1),
            key.clone(),
            png.clone(),
            Duration::from_secs(20)
        ),
    );
    successes += isolated + a + b;
    eprintln!("during the partition: isolated node {isolated}, others {a} + {b}; total {successes} of {QUOTA}");
    assert!(
        isolated > 0,
        "the isolated node served from the rights it held"
    );
    assert!(
        successes <= QUOTA,
        "quota overrun during the partition: {successes}"
    );

    // Heal: everything reconciles, and the rights stranded nowhere are usable again.
    cluster.isolate(2, false);
    let tenant2 = tenant.clone();
    let (_, took) = eventually(
        Duration::from_secs(30),
        "usage identical after the heal",
        &cluster,
        || {
            let tenant = tenant2.clone();
            let addrs: Vec<SocketAddr> = (0..3).map(|i| cluster.addr(i)).collect();
            async move {
                let mut all = Vec::new();
                for addr in addrs {
                    all.push(totals(addr, &tenant).await["requests"].as_u64().unwrap());
                }
                (all.iter().all(|t| *t == successes)).then_some(())
            }
        },
    )
    .await;
    eprintln!("identical usage {took:?} after the heal");
    let more = hammer(
        cluster.addr(0),
        key.clone(),
        png.clone(),
        Duration::from_secs(20),
    )
    .await;
    successes += more;
    eprintln!("after the heal: {more} more; {successes} of {QUOTA}");
    assert!(
        successes <= QUOTA,
        "quota overrun after the heal: {successes}"
    );
    assert!(
        successes * 100 >= QUOTA * 99,
        "only {successes} of {QUOTA} usable after the heal"
    );
    let free = totals(cluster.addr(1), &free_tenant).await["requests"]
        .as_u64()
        .unwrap();
    assert!(free >= 8, "{free}");
}
