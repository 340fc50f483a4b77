//! The violations found under real faults (the first three by an outside tester, issue
//! #12; the fourth by a CI fault run), each replayed as the scenario that broke, with real
//! processes:
//! 1. a revocation learned from a peer, then the node cut off and killed with -9: after its
//!    restart (still cut off) it must still refuse the key, three tries out of three;
//! 2. quota overruns: usage billed before a quota counts against it (100 billed, quota 50:
//!    nothing more), and a quota set on a home node killed at once is not granted again on
//!    top of what the others served meanwhile;
//! 3. dead connections: through a partition that drops packets silently, the peers are seen
//!    as disconnected, and after the heal the totals are identical within 2 s and a
//!    revocation made during the partition is enforced everywhere within 1 s.
//!
//! 4. a revocation made by a node cut off from both peers, then only one link healed: the
//!    node still cut off from the revoker must enforce it within the bound, through the
//!    healed peer (seen in a CI fault run, seed 95619515571550).
//!
//! Scenario 3 runs on network namespaces when root (CI is) and on the userspace link layer
//! otherwise; the others need no network fault beyond the link layer's cut.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use tessera_tests::client::{self, tiny_png, Reply};
use tessera_tests::cluster::{Backend, Cluster, ClusterSpec};
use tessera_tests::link::{between, isolating, CutKind};
use tessera_tests::{netns, node_bin};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

async fn resize(addr: SocketAddr, key: &str) -> Option<Reply> {
    client::resize(addr, key, tiny_png(), REQUEST_TIMEOUT)
        .await
        .ok()
}

async fn status(addr: SocketAddr, key: &str) -> Option<StatusCode> {
    resize(addr, key).await.map(|r| r.status)
}

/// Polls until the key is accepted (`accepted`) or refused as revoked on node `i`.
async fn until_key(cluster: &Cluster, i: usize, key: &str, accepted: bool) -> Duration {
    let wanted = if accepted {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    cluster.until_key_answers(i, key, wanted).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_learned_from_a_peer_survives_kill_9_while_cut_off() {
    let mut cluster = Cluster::start(ClusterSpec::new(3, Backend::Proxy), node_bin!()).await;
    let victim = 2;
    for attempt in 0..3 {
        let acme = cluster
            .admin(0)
            .tenant_with_key(&format!("acme{attempt}"), None)
            .await
            .unwrap();
        until_key(&cluster, victim, &acme.key, true).await;
        cluster
            .admin(0)
            .revoke_key(&acme.tenant, &acme.key_id)
            .await
            .unwrap();
        // The first refusal on the victim, then at once: cut off, kill -9, restart.
        let took = until_key(&cluster, victim, &acme.key, false).await;
        cluster
            .partition(CutKind::Drop, &isolating(victim, 3))
            .unwrap();
        cluster.kill(victim);
        cluster.start_node(victim).await;
        for _ in 0..5 {
            let after = status(cluster.addr(victim), &acme.key).await;
            assert_eq!(
                after,
                Some(StatusCode::UNAUTHORIZED),
                "attempt {attempt}: the victim refused the key {took:?} after the revoke, then \
                 accepted it after kill -9 and a restart while cut off\n{}",
                cluster.log_tail(victim, 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "attempt {attempt}: refused {took:?} after the revoke, still refused after kill -9"
        );
        cluster.heal().unwrap();
    }
}

/// Sends billed requests to `nodes` in turn until `refusals_in_a_row` final quota refusals
/// (429 `quota_exhausted`) come back, or `limit` passes; returns the successes.
async fn spend(cluster: &Cluster, nodes: &[usize], key: &str, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    let (mut ok, mut exhausted_in_a_row) = (0, 0);
    while exhausted_in_a_row < 20 && Instant::now() < deadline {
        let node = nodes[(ok + exhausted_in_a_row) as usize % nodes.len()];
        match resize(cluster.addr(node), key).await {
            Some(reply) if reply.status == StatusCode::OK => {
                ok += 1;
                exhausted_in_a_row = 0;
            }
            Some(reply) if reply.error_code() == "quota_exhausted" => exhausted_in_a_row += 1,
            // quota_unavailable (rights elsewhere, being moved) or no answer: try again.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    ok
}

async fn identical_requests(cluster: &Cluster, tenant: &str, expected: u64) {
    cluster
        .eventually(
            Duration::from_secs(15),
            "identical usage everywhere",
            || async {
                let all = cluster.requests_everywhere(tenant).await;
                all.iter().all(|t| *t == Some(expected)).then_some(())
            },
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_billed_before_a_quota_counts_against_it() {
    let cluster = Cluster::start(ClusterSpec::new(3, Backend::Direct), node_bin!()).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", None)
        .await
        .unwrap();
    for i in 0..3 {
        until_key(&cluster, i, &acme.key, true).await;
    }
    let mut billed = 3;
    while billed < 100 {
        let reply = resize(cluster.addr(0), &acme.key).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        billed += 1;
    }
    identical_requests(&cluster, &acme.tenant, 100).await;

    // 100 used, quota 50: nothing more this month, on any node.
    cluster.admin(0).set_quota(&acme.tenant, 50).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let more = spend(&cluster, &[0, 1, 2], &acme.key, Duration::from_secs(20)).await;
    assert_eq!(more, 0, "100 billed, then quota 50: {more} more admitted");

    // Raised to 150: only the other 50.
    cluster.admin(0).set_quota(&acme.tenant, 150).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let more = spend(&cluster, &[0, 1, 2], &acme.key, Duration::from_secs(30)).await;
    eprintln!("quota raised to 150 after 100 billed: {more} more admitted");
    assert!(
        more <= 50,
        "quota 150 after 100 billed: {more} more admitted"
    );
    assert!(
        more >= 45,
        "quota 150 after 100 billed: only {more} of 50 usable"
    );
    identical_requests(&cluster, &acme.tenant, 100 + more).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quota_set_on_a_home_killed_at_once_is_not_granted_on_top() {
    const QUOTA: u64 = 300;
    let mut cluster = Cluster::start(ClusterSpec::new(3, Backend::Direct), node_bin!()).await;
    let home = 0;
    let acme = cluster
        .admin(home)
        .tenant_with_key("acme", None)
        .await
        .unwrap();
    for i in 0..3 {
        until_key(&cluster, i, &acme.key, true).await;
    }
    // Acknowledged (durable on the home), and the home dies at once.
    cluster
        .admin(home)
        .set_quota(&acme.tenant, QUOTA)
        .await
        .unwrap();
    cluster.kill(home);
    // The others serve meanwhile: with the quota if they heard of it, without it if not.
    let mut served_while_down = 0;
    for n in 0..2 * QUOTA {
        let node = 1 + (n as usize % 2);
        if status(cluster.addr(node), &acme.key).await == Some(StatusCode::OK) {
            served_while_down += 1;
        }
    }
    cluster.start_node(home).await;
    let after = spend(&cluster, &[0, 1, 2], &acme.key, Duration::from_secs(40)).await;
    // Three probes, then what was served around the crash.
    let total = 3 + served_while_down + after;
    eprintln!(
        "quota {QUOTA}, home killed at once: {served_while_down} served while it was down, \
         {after} after its restart, {total} in all"
    );
    assert!(
        total <= QUOTA.max(3 + served_while_down) + 10,
        "quota {QUOTA}: {total} billed ({served_while_down} while the home was down, \
         {after} after: granted on top)"
    );
    identical_requests(&cluster, &acme.tenant, total).await;
}

/// Whether node `i` reports every peer disconnected.
async fn sees_no_peer(cluster: &Cluster, i: usize) -> bool {
    let Ok(view) = cluster.admin(i).cluster(None).await else {
        return false;
    };
    view["members"]
        .as_array()
        .is_some_and(|members| members.iter().all(|m| m["connected"] == false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_partition_is_seen_and_repaired_within_two_seconds_of_the_heal() {
    let (backend, converge_bound) = match netns::unavailable_reason() {
        None => (Backend::Netns, Duration::from_secs(2)),
        Some(reason) => {
            // The link layer's Drop cut holds bytes until a retransmission instant after the
            // heal (as TCP would): a looser bound, stated.
            eprintln!("namespaces unavailable ({reason}): the userspace link layer instead");
            (Backend::Proxy, Duration::from_secs(4))
        }
    };
    let mut cluster = Cluster::start(ClusterSpec::new(3, backend), node_bin!()).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", None)
        .await
        .unwrap();
    let spare = cluster
        .admin(0)
        .tenant_with_key("spare", None)
        .await
        .unwrap();
    for i in 0..3 {
        until_key(&cluster, i, &acme.key, true).await;
        until_key(&cluster, i, &spare.key, true).await;
    }
    let mut billed = 3;

    let isolated = 2;
    cluster
        .partition(CutKind::Drop, &isolating(isolated, 3))
        .unwrap();
    let cut_at = Instant::now();
    // The cut-off node sees its peers gone (and they see it gone), in seconds.
    let (_, seen) = cluster
        .eventually(
            Duration::from_secs(10),
            "the cut seen by the isolated node",
            || async { sees_no_peer(&cluster, isolated).await.then_some(()) },
        )
        .await;
    eprintln!("{backend:?}: the isolated node saw its peers gone {seen:?} after the cut");
    // Found dead by the liveness check (a silent link never fails on its own).
    let metrics = cluster.admin(isolated).metrics().await.unwrap();
    let dead = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_sync_connections_dead_total "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(
        dead.is_some_and(|d| d > 0),
        "no connection found dead: {dead:?}"
    );
    // Writes on both sides; a revocation on the majority side.
    for node in [0, 1, isolated] {
        for _ in 0..10 {
            if status(cluster.addr(node), &acme.key).await == Some(StatusCode::OK) {
                billed += 1;
            }
        }
    }
    cluster
        .admin(0)
        .revoke_key(&spare.tenant, &spare.key_id)
        .await
        .unwrap();
    let hold = Duration::from_secs(15).saturating_sub(cut_at.elapsed());
    tokio::time::sleep(hold).await;
    assert_eq!(
        status(cluster.addr(isolated), &spare.key).await,
        Some(StatusCode::OK),
        "the isolated node cannot know of the revocation yet"
    );

    cluster.heal().unwrap();
    let healed = Instant::now();
    let revoked_in = until_key(&cluster, isolated, &spare.key, false).await;
    // The probes that still went through before the revocation arrived are billed to spare.
    let converged = loop {
        let all = cluster.requests_everywhere(&acme.tenant).await;
        if all.iter().all(|t| *t == Some(billed)) {
            break healed.elapsed();
        }
        assert!(
            healed.elapsed() < Duration::from_secs(30),
            "not converged 30 s after the heal: {all:?}, expected {billed}\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "{backend:?}: after a 15 s silent partition, revocation enforced {revoked_in:?} and \
         totals identical {converged:?} after the heal"
    );
    assert!(
        converged < converge_bound,
        "{backend:?}: identical totals {converged:?} after the heal (goal < {converge_bound:?})"
    );
    assert!(
        revoked_in < converge_bound.min(Duration::from_secs(1)) + Duration::from_millis(500),
        "{backend:?}: revocation enforced {revoked_in:?} after the heal (goal < 1 s)"
    );
}

/// Seen in a CI fault run (seed 95619515571550): after a heal, node 1 learned a revocation
/// from node 0 at once, but node 2, whose own link to node 0 was still stuck, accepted the
/// key 2.3 s longer: node 1 did not pass on what its exchange with node 0 brought, and node
/// 2 waited for an anti-entropy round (every 3 s ± 25 %). Here node 0 revokes while cut off
/// from both, then only 0–1 heals: node 2 can learn it only through node 1, and must refuse
/// the key within 0.5 s of node 1, three times out of three (before the fix: 0.45–2.7 s).
/// Node 1 itself must learn it within the bound: this run also found the exchange on
/// connect lost with a connection closed by the per-peer limit (`Input::ConnectionLost`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revocation_reaches_a_node_still_cut_off_from_the_revoker_through_a_healed_peer() {
    let mut cluster = Cluster::start(ClusterSpec::new(3, Backend::Proxy), node_bin!()).await;
    let (revoker, relay, cut_off) = (0, 1, 2);
    for attempt in 0..3 {
        let acme = cluster
            .admin(revoker)
            .tenant_with_key(&format!("acme{attempt}"), None)
            .await
            .unwrap();
        for i in 0..3 {
            until_key(&cluster, i, &acme.key, true).await;
        }
        cluster
            .partition(CutKind::Drop, &isolating(revoker, 3))
            .unwrap();
        cluster
            .admin(revoker)
            .revoke_key(&acme.tenant, &acme.key_id)
            .await
            .unwrap();
        // Long enough for the connections across the cut to be found dead (1.5 s).
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            status(cluster.addr(cut_off), &acme.key).await,
            Some(StatusCode::OK),
            "attempt {attempt}: the cut-off node cannot know of the revocation yet"
        );
        cluster.heal_links(&between(&[revoker], &[relay])).unwrap();
        // Both polled from the heal on: when the healed peer learned it, and the other.
        let (learned, took) = tokio::join!(
            until_key(&cluster, relay, &acme.key, false),
            until_key(&cluster, cut_off, &acme.key, false)
        );
        eprintln!(
            "attempt {attempt}: refused {learned:?} after the partial heal on the healed peer, \
             {took:?} on the node still cut off"
        );
        // The healed pair's exchange brings it at once: their dials complete together at
        // the heal and the per-peer limit closes the extra connections, which used to
        // take the exchange on connect down with them (1.4-3.2 s in about 1 attempt of
        // 12 under a CPU hog, before `Input::ConnectionLost`).
        assert!(
            learned < Duration::from_millis(1_500),
            "attempt {attempt}: the healed peer refused the key only {learned:?} after its \
             link to the revoker healed (goal < 1 s, 1.5 s on the link layer)\n{}",
            cluster.log_tail(relay, 40)
        );
        // And passes it on to the node still cut off from the revoker.
        let passed_on = took.saturating_sub(learned);
        assert!(
            passed_on < Duration::from_millis(500),
            "attempt {attempt}: the node still cut off from the revoker refused the key \
             {passed_on:?} after the healed peer did ({learned:?} and {took:?} after the \
             partial heal): the healed peer did not pass it on\n{}",
            cluster.log_tail(cut_off, 40)
        );
        cluster.heal().unwrap();
    }
}
