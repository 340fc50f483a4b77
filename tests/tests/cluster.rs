//! Three `tessera` processes on loopback, replicating over libp2p: usage from all three is
//! visible and identical on each; a key revoked on one node is refused on the others
//! within seconds; a quota hammered on all three ends with at most Q billed successes
//! and at least 0.99·Q; a node killed with SIGKILL under load and restarted loses no
//! acknowledged usage, and no node's totals ever go down; a node cut off (proxy backend)
//! keeps serving from the rights it holds, never overruns, and reconciles after the heal;
//! a node stopped with SIGTERM, or told `tessera cluster leave`, hands its unspent rights
//! to the others first (the rest of the quota stays usable), and serves again from its
//! peers' rights once restarted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tessera_tests::client::{self, tiny_png, ClientError, Reply};
use tessera_tests::cluster::{Backend, Cluster, ClusterSpec};
use tessera_tests::link::{isolating, CutKind};
use tessera_tests::node_bin;

/// The bound on one billed request in these suites.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn start(backend: Backend) -> Cluster {
    Cluster::start(ClusterSpec::new(3, backend), node_bin!()).await
}

/// A billed request; a transport failure panics (these suites inject no fault that
/// should leave a request unanswered).
async fn resize(addr: SocketAddr, key: &str, body: Vec<u8>) -> Reply {
    client::resize(addr, key, body, REQUEST_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("resize on {addr}: {e}"))
}

/// Polls until `key` is accepted on node `i` (the successful probe is billed).
async fn until_key_works(cluster: &Cluster, i: usize, key: &str, png: &[u8]) {
    let addr = cluster.addr(i);
    cluster
        .eventually(Duration::from_secs(15), "the key reaching a node", || {
            let (png, key) = (png.to_vec(), key.to_owned());
            async move { (resize(addr, &key, png).await.status == StatusCode::OK).then_some(()) }
        })
        .await;
}

async fn requests(cluster: &Cluster, i: usize, tenant: &str) -> u64 {
    cluster.admin(i).requests(tenant).await.unwrap()
}

/// Polls until every node reports the same request total and `accept` holds for it.
async fn until_identical(
    cluster: &Cluster,
    limit: Duration,
    what: &str,
    tenant: &str,
    accept: impl Fn(u64) -> bool,
) -> (u64, Duration) {
    cluster
        .eventually(limit, what, || async {
            let all = cluster.requests_everywhere(tenant).await;
            let first = all[0]?;
            (all.iter().all(|t| *t == Some(first)) && accept(first)).then_some(first)
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_converges_everywhere_and_revocation_spreads() {
    let cluster = start(Backend::Direct).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", None)
        .await
        .unwrap();
    let png = tiny_png();
    // The key reaches every node.
    for i in 1..3 {
        until_key_works(&cluster, i, &acme.key, &png).await;
    }
    // Now a known number of billed requests on each node.
    for i in 0..3 {
        for _ in 0..5 {
            let reply = resize(cluster.addr(i), &acme.key, png.clone()).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        }
    }
    // 15, plus the probe that first succeeded on node 1 and on node 2.
    let expected = 17;
    let reference = requests(&cluster, 0, &acme.tenant).await;
    let (total, took) = until_identical(
        &cluster,
        Duration::from_secs(10),
        "identical usage on every node",
        &acme.tenant,
        |t| t == expected,
    )
    .await;
    eprintln!("usage identical on all three nodes {took:?} after the last request: {total}");
    assert!(total >= reference);
    // Per-node harvest: three contributors, none stale.
    let report = cluster.admin(1).usage(&acme.tenant).await.unwrap();
    let contributors = report["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["usage"]["requests"].as_u64().unwrap() > 0)
        .count();
    assert_eq!(contributors, 3, "{report}");
    assert_eq!(report["stale"], false, "{report}");

    // Revoked on node 1: refused on nodes 0 and 2 within seconds.
    cluster
        .admin(1)
        .revoke_key(&acme.tenant, &acme.key_id)
        .await
        .unwrap();
    for i in [0, 2] {
        let addr = cluster.addr(i);
        let (_, took) = cluster
            .eventually(Duration::from_secs(5), "revocation reaching a node", || {
                let (png, key) = (png.clone(), acme.key.clone());
                async move {
                    let reply = resize(addr, &key, png).await;
                    (reply.status == StatusCode::UNAUTHORIZED).then_some(())
                }
            })
            .await;
        eprintln!("revocation refused on node {i} after {took:?}");
    }
    let view = cluster.admin(0).cluster(None).await.unwrap();
    assert_eq!(view["members"].as_array().unwrap().len(), 2, "{view}");
    let metrics = cluster.admin(0).metrics().await.unwrap();
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
    let cluster = start(Backend::Direct).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", Some(QUOTA))
        .await
        .unwrap();
    let png = tiny_png();
    // Until every node knows the key, refusals other than "exhausted" are expected (a
    // probe with no quota effect is not possible, so successes are counted from the start).
    let successes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..3 {
        for _ in 0..3 {
            let addr = cluster.addr(i);
            let (png, key, successes) = (png.clone(), acme.key.clone(), successes.clone());
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
                                other.push(format!("{} {}", reply.status, reply.text()));
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
    until_identical(
        &cluster,
        Duration::from_secs(10),
        "billed totals equal successes everywhere",
        &acme.tenant,
        |t| t == succeeded,
    )
    .await;
    let view = cluster.admin(0).cluster(Some(&acme.tenant)).await.unwrap();
    eprintln!("escrow after the run: {}", view["tenant"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_loses_no_acknowledged_usage() {
    let mut cluster = start(Backend::Direct).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", None)
        .await
        .unwrap();
    let png = tiny_png();
    let victim = 2;
    let addr = cluster.addr(victim);
    until_key_works(&cluster, victim, &acme.key, &png).await;
    let acknowledged = Arc::new(AtomicU64::new(1)); // the probe
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (png, key, acknowledged, stop) = (
            png.clone(),
            acme.key.clone(),
            acknowledged.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client::resize(addr, &key, png.clone(), Duration::from_secs(2)).await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = requests(&cluster, 0, &acme.tenant).await;
    cluster.kill(victim);
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    let acked = acknowledged.load(Ordering::Relaxed);
    eprintln!("acknowledged before kill -9: {acked}; node 0 had seen {before_kill}");
    assert!(acked > 10, "the load did not run");
    // Totals on the survivors never go down.
    assert!(requests(&cluster, 0, &acme.tenant).await >= before_kill);
    // Restart from the same data directory.
    cluster.start_node(victim).await;
    let (agreed, took) = until_identical(
        &cluster,
        Duration::from_secs(15),
        "every node holding every acknowledged request",
        &acme.tenant,
        |t| t >= acked,
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
    let mut cluster = start(Backend::Proxy).await;
    let limited = cluster
        .admin(0)
        .tenant_with_key("acme", Some(QUOTA))
        .await
        .unwrap();
    let free = cluster
        .admin(0)
        .tenant_with_key("free", None)
        .await
        .unwrap();
    let (key, png) = (limited.key.clone(), tiny_png());
    // Every node knows both keys and holds a share of the rights (one request each).
    let mut successes = 0;
    for i in 0..3 {
        for k in [&key, &free.key] {
            until_key_works(&cluster, i, k, &png).await;
        }
        successes += 1;
    }

    // Cut node 2 off. It keeps serving: the unlimited tenant without limit, the limited
    // one up to the rights it holds, never more.
    cluster.partition(CutKind::Reset, &isolating(2, 3)).unwrap();
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
            resize(cluster.addr(2), &free.key, png.clone()).await.status,
            StatusCode::OK
        );
    }
    let view = cluster.admin(2).cluster(None).await.unwrap();
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
    assert_eq!(
        cluster.direct_connections(),
        Vec::new(),
        "replication bypassed the link proxies"
    );

    // Heal: everything reconciles, and the rights stranded nowhere are usable again.
    cluster.heal().unwrap();
    let (_, took) = until_identical(
        &cluster,
        Duration::from_secs(30),
        "usage identical after the heal",
        &limited.tenant,
        |t| t == successes,
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
    let free_requests = requests(&cluster, 1, &free.tenant).await;
    assert!(free_requests >= 8, "{free_requests}");
}

/// The harness's process faults do what they say: a paused node answers nothing until
/// resumed, a stopped or killed one refuses connections, a restart keeps the identity,
/// and a wipe brings the node back as a new member that its peer then hears from.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn process_faults_pause_stop_kill_restart_and_wipe() {
    let mut spec = ClusterSpec::new(2, Backend::Direct);
    // Short, so the wiped identity's silence reaches the log within the test.
    spec.env
        .push(("TESSERA_CLUSTER__PEER_STALE_MS".into(), "3000".into()));
    let mut cluster = Cluster::start(spec, node_bin!()).await;
    let addr = cluster.addr(1);
    let health = || {
        client::request(
            addr,
            hyper::Method::GET,
            "/healthz",
            &[],
            Vec::new(),
            Duration::from_millis(500),
        )
    };
    let identity = |view: serde_json::Value| view["node"]["id"].as_str().unwrap().to_owned();
    let original = identity(cluster.admin(1).cluster(None).await.unwrap());

    cluster.pause(1);
    let paused = health().await;
    assert!(
        matches!(paused, Err(ClientError::Timeout { .. })),
        "{paused:?}"
    );
    cluster.resume(1);
    assert_eq!(health().await.unwrap().status, StatusCode::OK);

    assert!(
        cluster.stop(1).await,
        "SIGTERM stops a node within the grace"
    );
    let stopped = health().await;
    assert!(
        matches!(stopped, Err(ClientError::Connect { .. })),
        "{stopped:?}"
    );
    cluster.start_node(1).await;
    cluster.kill(1);
    cluster.start_node(1).await;
    cluster.restart(1).await;
    let restarted = identity(cluster.admin(1).cluster(None).await.unwrap());
    assert_eq!(restarted, original, "a restart keeps the node's identity");

    cluster.wipe_and_restart(1).await;
    assert_eq!(cluster.node(1).incarnation(), 1);
    let wiped = identity(cluster.admin(1).cluster(None).await.unwrap());
    assert_ne!(wiped, original, "a wiped node returns as a new identity");
    cluster
        .eventually(
            Duration::from_secs(15),
            "the peer connected to the new identity",
            || async {
                let view = cluster.admin(0).cluster(None).await.ok()?;
                view["members"]
                    .as_array()?
                    .iter()
                    .any(|m| m["node"] == wiped.as_str() && m["connected"] == true)
                    .then_some(())
            },
        )
        .await;
    // The old identity went silent for good: the other node's log says so (its
    // disconnection alone is not the same news: a member may stay silent while connected).
    cluster
        .eventually(
            Duration::from_secs(20),
            "node 0 logs the wiped identity as stale",
            || async {
                cluster
                    .log_tail(0, 400)
                    .lines()
                    .any(|l| l.contains("replication peer stale") && l.contains(&original))
                    .then_some(())
            },
        )
        .await;
}

/// The quota of the leave scenarios, and the node that leaves.
const LEAVE_QUOTA: u64 = 300;
const LEAVER: usize = 2;

/// The rights node `holder` holds of `tenant`'s quota in node `viewer`'s view.
async fn rights_of(cluster: &Cluster, viewer: usize, holder: &str, tenant: &str) -> Option<u64> {
    let rights = cluster.admin(viewer).rights(tenant).await.ok()?;
    Some(rights.get(holder).copied().unwrap_or(0))
}

/// Starts three nodes with a tenant whose monthly quota is [`LEAVE_QUOTA`]; once every
/// node has served it (one billed request each) and node [`LEAVER`] holds rights in its
/// own view, returns the tenant, the leaver's id and the rights it holds.
async fn three_nodes_holding_rights() -> (Cluster, tessera_tests::cluster::TenantKey, String, u64) {
    let cluster = start(Backend::Direct).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", Some(LEAVE_QUOTA))
        .await
        .unwrap();
    let png = tiny_png();
    for i in 0..3 {
        until_key_works(&cluster, i, &acme.key, &png).await;
    }
    let id = cluster.admin(LEAVER).node_id().await.unwrap();
    let (held, _) = cluster
        .eventually(
            Duration::from_secs(10),
            "the leaving node holding rights",
            || async {
                rights_of(&cluster, LEAVER, &id, &acme.tenant)
                    .await
                    .filter(|r| *r > 0)
            },
        )
        .await;
    (cluster, acme, id, held)
}

/// [`hammer`] on each of `nodes` at once; the successes of each.
async fn hammer_each(cluster: &Cluster, nodes: &[usize], key: &str) -> Vec<u64> {
    let tasks: Vec<_> = nodes
        .iter()
        .map(|i| {
            let addr = cluster.addr(*i);
            tokio::spawn(hammer(
                addr,
                key.to_owned(),
                tiny_png(),
                Duration::from_secs(30),
            ))
        })
        .collect();
    let mut each = Vec::new();
    for task in tasks {
        each.push(task.await.unwrap());
    }
    each
}

/// `successes` admitted in all: never above [`LEAVE_QUOTA`], and at least 99% of it.
fn assert_nearly_all_used(cluster: &Cluster, successes: u64, when: &str) {
    assert!(
        successes <= LEAVE_QUOTA,
        "quota overrun {when}: {successes} > {LEAVE_QUOTA}"
    );
    assert!(
        successes * 100 >= LEAVE_QUOTA * 99,
        "only {successes} of {LEAVE_QUOTA} used {when}\n{}",
        cluster.logs()
    );
}

/// Once node [`LEAVER`] (`id`) is gone: nodes 0 and 1 see it holding no rights of
/// `tenant`, and both bill what their clients saw (`successes` in all).
async fn survivors_hold_all(cluster: &Cluster, id: &str, tenant: &str, successes: u64) {
    for viewer in [0, 1] {
        until_no_rights(cluster, viewer, id, tenant).await;
    }
    cluster
        .eventually(
            Duration::from_secs(10),
            "billed totals equal successes on the survivors",
            || async {
                let all = cluster.requests_everywhere(tenant).await;
                (all[0] == Some(successes) && all[1] == Some(successes)).then_some(())
            },
        )
        .await;
}

/// Node `node` as node `viewer` sees it: its entry in the members of the cluster view.
async fn member(cluster: &Cluster, viewer: usize, node: &str) -> Option<serde_json::Value> {
    let view = cluster.admin(viewer).cluster(None).await.ok()?;
    view["members"]
        .as_array()?
        .iter()
        .find(|m| m["node"] == node)
        .cloned()
}

/// Polls until node `viewer` sees node `holder` holding no rights of `tenant`.
async fn until_no_rights(cluster: &Cluster, viewer: usize, holder: &str, tenant: &str) {
    cluster
        .eventually(
            Duration::from_secs(10),
            "the leaver's rights gone from a survivor's view",
            || async { (rights_of(cluster, viewer, holder, tenant).await? == 0).then_some(()) },
        )
        .await;
}

/// Issue #13: a node stopped with SIGTERM kept its unspent rights, stranded while it was
/// down — the survivors answered `quota_unavailable` with a third of the quota left
/// (before the fix this test measured 201 of 300 admitted: node 2's 99 rights stayed
/// with it). Now it hands them over before exiting, and the other two use ≥ 0.99·Q,
/// never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_with_sigterm_hands_its_rights_to_the_others() {
    let (mut cluster, acme, id, held) = three_nodes_holding_rights().await;
    // One billed request on each node so far.
    let mut successes = 3;
    assert!(
        cluster.stop(LEAVER).await,
        "SIGTERM stops a node within the grace"
    );
    let log = cluster.log_tail(LEAVER, 30);
    eprintln!(
        "node {LEAVER} held {held} rights; its leave: {}",
        log.lines()
            .find(|l| l.contains("the cluster"))
            .unwrap_or("(no leave logged)")
    );
    let each = hammer_each(&cluster, &[0, 1], &acme.key).await;
    let (a, b) = (each[0], each[1]);
    successes += a + b;
    // How the quota answers now: `quota_exhausted` once nothing is stranded.
    let end = resize(cluster.addr(0), &acme.key, tiny_png()).await;
    successes += u64::from(end.status == StatusCode::OK);
    eprintln!(
        "after the SIGTERM: {a} + {b} more on the two others; {successes} of {LEAVE_QUOTA}; \
         then {} {}",
        end.status,
        end.error_code()
    );
    assert_nearly_all_used(&cluster, successes, "after a SIGTERM");
    assert!(log.contains("left the cluster"), "{log}");
    survivors_hold_all(&cluster, &id, &acme.tenant, successes).await;
}

/// The same with a client on the node when SIGTERM comes, well past the node's first
/// share (so rights have been moving to it on demand): its last request finishes before
/// the hand-over (nothing consumes or refunds after it), what its demand still brings is
/// handed over too, and the quota is still used ≥ 0.99·Q, all of it billed. (Measured:
/// 125-127 served there, about 70 of this month's rights handed over in one pass.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_stopped_with_sigterm_under_load_strands_nothing() {
    let (mut cluster, acme, id, _) = three_nodes_holding_rights().await;
    let mut successes = 3;
    let served = Arc::new(AtomicU64::new(0));
    let busy = {
        let (addr, key, served) = (cluster.addr(LEAVER), acme.key.clone(), served.clone());
        tokio::spawn(async move {
            // Until the node stops answering.
            while let Ok(reply) = client::resize(addr, &key, tiny_png(), REQUEST_TIMEOUT).await {
                if reply.status == StatusCode::OK {
                    served.fetch_add(1, Ordering::Relaxed);
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    cluster
        .eventually(
            Duration::from_secs(10),
            "the node serving past its first share",
            || async { (served.load(Ordering::Relaxed) >= 120).then_some(()) },
        )
        .await;
    assert!(
        cluster.stop(LEAVER).await,
        "SIGTERM stops a node within the grace"
    );
    busy.await.unwrap();
    let on_leaver = served.load(Ordering::Relaxed);
    successes += on_leaver;
    let log = cluster.log_tail(LEAVER, 30);
    let each = hammer_each(&cluster, &[0, 1], &acme.key).await;
    successes += each.iter().sum::<u64>();
    eprintln!(
        "{on_leaver} served on node {LEAVER} until its SIGTERM ({}), then {each:?} on the \
         others: {successes} of {LEAVE_QUOTA}",
        log.lines()
            .find(|l| l.contains("the cluster"))
            .unwrap_or("no leave logged")
    );
    assert_nearly_all_used(&cluster, successes, "after a SIGTERM under load");
    survivors_hold_all(&cluster, &id, &acme.tenant, successes).await;
}

/// `tessera cluster leave` stops a node after handing its rights over; restarted, the node
/// rejoins (its peers no longer count it as gone), serves again from rights its peers give
/// it, and the quota is still used ≥ 0.99·Q in all, never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_left_serves_again_once_restarted() {
    let (mut cluster, acme, id, held) = three_nodes_holding_rights().await;
    let mut successes = 3;
    let output = cluster.cli(LEAVER, &["cluster", "leave", "--json"]).await;
    assert!(output.status.success(), "{output:?}");
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(answer["status"], "leaving", "{answer}");
    assert_eq!(answer["node"], id.as_str(), "{answer}");
    let exit = cluster.wait_exit(LEAVER, Duration::from_secs(15)).await;
    assert!(
        exit.is_some_and(|status| status.success()),
        "the node exits after leaving: {exit:?}\n{}",
        cluster.log_tail(LEAVER, 30)
    );
    for viewer in [0, 1] {
        until_no_rights(&cluster, viewer, &id, &acme.tenant).await;
    }
    for peer in [0, 1] {
        cluster
            .eventually(
                Duration::from_secs(10),
                "a peer counting the leaver as gone",
                || async { (member(&cluster, peer, &id).await?["left"] == true).then_some(()) },
            )
            .await;
    }
    eprintln!("node {LEAVER} left with {held} rights; the others hold them now");

    cluster.start_node(LEAVER).await;
    let png = tiny_png();
    let (_, took) = cluster
        .eventually(
            Duration::from_secs(15),
            "the restarted node serving from its peers' rights",
            || async {
                let reply = resize(cluster.addr(LEAVER), &acme.key, png.clone()).await;
                (reply.status == StatusCode::OK).then_some(())
            },
        )
        .await;
    successes += 1;
    eprintln!("restarted node {LEAVER} served {took:?} after it was ready");
    // A member again for each peer (it may have got its rights from the other one first).
    for peer in [0, 1] {
        cluster
            .eventually(
                Duration::from_secs(10),
                "a peer counting the restarted node as a member again",
                || async {
                    let member = member(&cluster, peer, &id).await?;
                    (member["connected"] == true && member["left"] == false).then_some(())
                },
            )
            .await;
    }
    let each = hammer_each(&cluster, &[0, 1, LEAVER], &acme.key).await;
    let (a, b, c) = (each[0], each[1], each[2]);
    successes += a + b + c;
    eprintln!("then {a} + {b} + {c} on the three nodes: {successes} of {LEAVE_QUOTA}");
    assert!(c > 0, "the restarted node kept serving");
    assert_nearly_all_used(&cluster, successes, "after a leave and a restart");
    until_identical(
        &cluster,
        Duration::from_secs(10),
        "billed totals equal successes everywhere",
        &acme.tenant,
        |t| t == successes,
    )
    .await;
}
