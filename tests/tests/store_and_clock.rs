//! Faults inside a node, with real processes: a store whose commits stall or fail
//! (`PUT /admin/v1/faults`, feature `fault-injection`), and clocks that disagree
//! (`TESSERA_FAULT_CLOCK_OFFSET_MS`), one node's far enough ahead to be in the next month.
//!
//! - A stalled store delays billed answers past the commit timeout: they are answered 503
//!   `store_unavailable` (outcome unknown to the client); once the store recovers, every
//!   node agrees on a total within acknowledged + unknown.
//! - A failed store stops its node (fail-stop: not ready, billable work refused) while the
//!   others serve; after a restart it is back and every node agrees, nothing acknowledged
//!   lost.
//! - Skew: a node whose clock runs into the next month bills that month; every node reads
//!   the same total for each month, so the bill of a period does not depend on whose clock
//!   stamped it.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;
use tessera_tests::calendar::next_month;
use tessera_tests::client::{self, tiny_png};
use tessera_tests::cluster::{Backend, Cluster, ClusterSpec};
use tessera_tests::node_bin;

async fn resize(addr: SocketAddr, key: &str) -> Option<(StatusCode, String)> {
    client::resize(addr, key, tiny_png(), Duration::from_secs(10))
        .await
        .ok()
        .map(|r| (r.status, r.error_code()))
}

async fn set_store(cluster: &Cluster, i: usize, mode: &str, stall_ms: u64) {
    let reply = cluster
        .admin(i)
        .call(
            Method::PUT,
            "/admin/v1/faults",
            Some(json!({ "store": mode, "stall_ms": stall_ms })),
        )
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
}

/// Polls until every node reads the same total of `tenant` (in `period`, default this
/// month), within `[low, high]`; returns it.
async fn agreed(cluster: &Cluster, tenant: &str, period: Option<&str>, low: u64, high: u64) -> u64 {
    let path = match period {
        Some(p) => format!("/admin/v1/usage?tenant={tenant}&period={p}"),
        None => format!("/admin/v1/usage?tenant={tenant}"),
    };
    let (total, _) = cluster
        .eventually(
            Duration::from_secs(20),
            "every node reading one total",
            || {
                let path = path.clone();
                async move {
                    let mut seen = Vec::new();
                    for i in 0..cluster.len() {
                        let reply = cluster.admin(i).call(Method::GET, &path, None).await.ok()?;
                        seen.push(reply.json()["totals"]["requests"].as_u64()?);
                    }
                    let first = seen[0];
                    (seen.iter().all(|t| *t == first) && (low..=high).contains(&first))
                        .then_some(first)
                }
            },
        )
        .await;
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_or_failed_store_bills_nothing_it_did_not_answer() {
    let spec = ClusterSpec::new(3, Backend::Direct).env("TESSERA_STORE__COMMIT_TIMEOUT_MS", "1000");
    let mut cluster = Cluster::start(spec, node_bin!()).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", None)
        .await
        .unwrap();
    let mut acknowledged = 0;
    let mut unknown = 0;
    for i in 0..3 {
        cluster
            .until_key_answers(i, &acme.key, StatusCode::OK)
            .await;
        acknowledged += 1;
    }

    // Stalled: each commit takes 2.5 s against a 1 s commit timeout.
    set_store(&cluster, 1, "stall", 2_500).await;
    for _ in 0..3 {
        match resize(cluster.addr(1), &acme.key).await {
            Some((StatusCode::OK, _)) => acknowledged += 1,
            Some((StatusCode::SERVICE_UNAVAILABLE, code)) => {
                assert_eq!(code, "store_unavailable");
                unknown += 1;
            }
            other => panic!("a stalled store answered {other:?}"),
        }
    }
    assert!(
        unknown > 0,
        "a 2.5 s commit did not exceed the 1 s commit timeout"
    );
    // The others serve meanwhile.
    for _ in 0..5 {
        assert_eq!(
            resize(cluster.addr(0), &acme.key).await.unwrap().0,
            StatusCode::OK
        );
        acknowledged += 1;
    }
    set_store(&cluster, 1, "ok", 0).await;
    let total = agreed(
        &cluster,
        &acme.tenant,
        None,
        acknowledged,
        acknowledged + unknown,
    )
    .await;
    eprintln!("stalled store: {acknowledged} acknowledged, {unknown} unknown, {total} billed");

    // Failed: the node stops taking billable work; the others go on.
    set_store(&cluster, 2, "fail", 0).await;
    let (status, code) = resize(cluster.addr(2), &acme.key).await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{code}");
    unknown += 1; // store_unavailable: its usage may or may not be durable
    let ready = client::request(
        cluster.addr(2),
        Method::GET,
        "/readyz",
        &[],
        Vec::new(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, code) = resize(cluster.addr(2), &acme.key).await.unwrap();
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "store_failed")
    );
    for _ in 0..5 {
        assert_eq!(
            resize(cluster.addr(0), &acme.key).await.unwrap().0,
            StatusCode::OK
        );
        acknowledged += 1;
    }
    // A restart recovers from what is durable (the switch is gone with the process).
    cluster.kill(2);
    cluster.start_node(2).await;
    assert_eq!(
        resize(cluster.addr(2), &acme.key).await.unwrap().0,
        StatusCode::OK
    );
    acknowledged += 1;
    let total = agreed(
        &cluster,
        &acme.tenant,
        None,
        acknowledged,
        acknowledged + unknown,
    )
    .await;
    eprintln!(
        "failed store, restarted: {acknowledged} acknowledged, {unknown} unknown, {total} billed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_whose_clock_is_in_the_next_month_bills_it_and_every_node_agrees() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (this, next, until_next_ms) = next_month(now_ms);
    // Node 2 runs a minute past the month's end; node 1 two minutes behind.
    let ahead_ms = until_next_ms + 60_000;
    let spec = ClusterSpec::new(3, Backend::Direct)
        .node_env(2, "TESSERA_FAULT_CLOCK_OFFSET_MS", &ahead_ms.to_string())
        .node_env(1, "TESSERA_FAULT_CLOCK_OFFSET_MS", "-120000");
    let cluster = Cluster::start(spec, node_bin!()).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", None)
        .await
        .unwrap();
    let mut billed = [0u64; 3];
    for (i, billed) in billed.iter_mut().enumerate() {
        let addr = cluster.addr(i);
        cluster
            .until_key_answers(i, &acme.key, StatusCode::OK)
            .await;
        *billed += 1;
        for _ in 0..(3 + i as u64) {
            assert_eq!(resize(addr, &acme.key).await.unwrap().0, StatusCode::OK);
            *billed += 1;
        }
    }
    let in_this = billed[0] + billed[1];
    let in_next = billed[2];
    let this_total = agreed(&cluster, &acme.tenant, Some(&this), in_this, in_this).await;
    let next_total = agreed(&cluster, &acme.tenant, Some(&next), in_next, in_next).await;
    // Staleness is judged on each node's own clock (when it last heard from a peer), so a
    // skewed peer is not reported stale, nor does a skewed node find its peers stale.
    for i in 0..3 {
        let report = cluster.admin(i).usage(&acme.tenant).await.unwrap();
        assert_eq!(report["stale"], false, "node {i} under skew: {report}");
    }
    eprintln!(
        "clock skew (node 1 -2 min, node 2 +{} s into {next}): {this} reads {this_total} \
         and {next} reads {next_total} on every node",
        ahead_ms / 1000
    );
}
