//! Finality of a billing period with real processes (issue #14; docs/PROTOCOL.md,
//! "Finality"): operators invoice from merged totals, so `GET /admin/v1/usage` must say
//! when a month's total can no longer change (`final`), and which members' seals it still
//! waits for (`missing_seals`). The nodes' clocks (`TESSERA_FAULT_CLOCK_OFFSET_MS`, the
//! same offset on every node) start a few seconds before the end of a month, with
//! `billing.seal_grace_ms` lowered to 4 s (so the request deadline to 2 s and the commit
//! timeout to 1 s), and clients bill resizes on every node across the month's end.
//!
//! - Healthy cluster (3 nodes): the old month reads `final: false` everywhere right after
//!   its end (no node sealed it yet), turns final on every node shortly after the grace,
//!   never earlier, and from then on reads the same totals on every node: exactly the
//!   resizes the clients were answered 200 for before the end. The new month gets the rest.
//! - Members killed (-9) before the end (4 nodes) block finality: the others read
//!   `final: false` with `missing_seals` naming them, well past the grace. One was cut off
//!   (userspace proxies) for its last two seconds, so it died with acknowledged usage
//!   nobody else held; restarted, it seals at once, that usage arrives with (before) its
//!   seal, and only the other is missing. That one never returns; decommissioned, it
//!   blocks nothing, and the month turns final on the live nodes with every acknowledged
//!   resize counted (its usage had reached them before it died).
//!
//! Billing time is write time, so a resize answered before the month's end (by the host's
//! clock plus the offset, which is each node's clock) is in the old month and one sent after
//! it in the new; the clients pause around the end so that none straddles it, and any that
//! does (or whose outcome is unknown) widens the expected total instead of guessing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hyper::{Method, StatusCode};
use serde_json::Value;
use tessera_tests::calendar::next_month;
use tessera_tests::client::{self, tiny_png, ClientError};
use tessera_tests::cluster::{Backend, Cluster, ClusterSpec, TenantKey};
use tessera_tests::link::{isolating, CutKind};
use tessera_tests::node_bin;

/// `http.request_deadline_ms` and `store.commit_timeout_ms`, lowered so that the grace may
/// be short: the edge refuses a grace not above their sum.
const DEADLINE_MS: u64 = 2_000;
const COMMIT_TIMEOUT_MS: u64 = 1_000;
/// `billing.seal_grace_ms`: each node seals the month this long after its end.
const GRACE_MS: u64 = 4_000;
/// How long before the month's end (by the nodes' clocks) the test starts: room for the
/// cluster to start, the key to reach every node and some load, on a loaded 2-core machine.
const LEAD_MS: u64 = 20_000;
/// The clients send nothing from this long before the month's end to this long after it,
/// so that no resize straddles the end (one that does is counted as in either month).
const QUIET_MS: u64 = 400;
/// Between two resizes of one client: a few dozen a second per node, well below what two
/// cores serve.
const CLIENT_PAUSE_MS: u64 = 15;
/// The bound on one resize: a node answers within its deadline plus its commit timeout.
const RESIZE_TIMEOUT_MS: u64 = 5_000;
/// The longest the test waits, after the grace, for a month to turn final.
const FINAL_WITHIN_MS: u64 = 20_000;

/// The host's clock; a node's is this plus its offset.
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as u64
}

async fn sleep_until_wall(at_ms: u64) {
    let now = wall_ms();
    if at_ms > now {
        tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
    }
}

/// The month's end the nodes are started before.
#[derive(Clone, Debug)]
struct Boundary {
    /// The month that ends (`YYYY-MM`), and the one that begins.
    old: String,
    new: String,
    /// The end, by the nodes' clocks (the first millisecond of `new`).
    end_ms: u64,
    /// The offset of every node's clock from the host's.
    offset_ms: i64,
}

impl Boundary {
    /// The end of a month `lead_ms` from now, by clocks shifted to get there.
    fn ahead(lead_ms: u64) -> Boundary {
        let now = wall_ms();
        let (old, new, until_ms) = next_month(now);
        Boundary {
            old,
            new,
            end_ms: now + until_ms,
            offset_ms: until_ms as i64 - lead_ms as i64,
        }
    }

    /// The end by the host's clock.
    fn wall_ms(&self) -> u64 {
        self.end_ms.saturating_add_signed(-self.offset_ms)
    }

    /// The nodes' clock now.
    fn node_now_ms(&self) -> u64 {
        wall_ms().saturating_add_signed(self.offset_ms)
    }
}

/// `nodes` nodes with the clocks of `boundary` and the short grace.
fn spec(nodes: usize, backend: Backend, boundary: &Boundary) -> ClusterSpec {
    ClusterSpec::new(nodes, backend)
        .env(
            "TESSERA_HTTP__REQUEST_DEADLINE_MS",
            &DEADLINE_MS.to_string(),
        )
        .env(
            "TESSERA_STORE__COMMIT_TIMEOUT_MS",
            &COMMIT_TIMEOUT_MS.to_string(),
        )
        .env("TESSERA_BILLING__SEAL_GRACE_MS", &GRACE_MS.to_string())
        .env(
            "TESSERA_FAULT_CLOCK_OFFSET_MS",
            &boundary.offset_ms.to_string(),
        )
}

/// What became of one resize.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// 200: billed.
    Billed,
    /// No answer after sending it, or 503 `store_unavailable`: billed or not.
    Unknown,
    /// Not sent (the connection was refused): not billed.
    NotSent,
    /// Anything else: the test fails.
    Unexpected(String),
}

/// One resize by a client of node `node`, with the host's clock around it.
#[derive(Clone, Debug)]
struct Shot {
    node: usize,
    sent_ms: u64,
    answered_ms: u64,
    outcome: Outcome,
}

fn outcome(reply: Result<client::Reply, ClientError>) -> Outcome {
    match reply {
        Ok(r) if r.status == StatusCode::OK => Outcome::Billed,
        Ok(r)
            if r.status == StatusCode::SERVICE_UNAVAILABLE
                && r.error_code() == "store_unavailable" =>
        {
            Outcome::Unknown
        }
        Ok(r) => Outcome::Unexpected(format!("{} {}", r.status, r.text())),
        Err(ClientError::Connect { .. }) => Outcome::NotSent,
        Err(_) => Outcome::Unknown,
    }
}

async fn shoot(addr: SocketAddr, node: usize, key: &str) -> Shot {
    let sent_ms = wall_ms();
    let reply = client::resize(
        addr,
        key,
        tiny_png(),
        Duration::from_millis(RESIZE_TIMEOUT_MS),
    )
    .await;
    Shot {
        node,
        sent_ms,
        answered_ms: wall_ms(),
        outcome: outcome(reply),
    }
}

/// Resizes on node `i` until one is answered 200 (the key reached the node: 401 before),
/// within 15 s; returns the attempts that were or may have been billed.
async fn until_serves(cluster: &Cluster, i: usize, key: &str) -> Vec<Shot> {
    let mut shots = Vec::new();
    let started = wall_ms();
    loop {
        let shot = shoot(cluster.addr(i), i, key).await;
        match shot.outcome {
            Outcome::Billed => {
                shots.push(shot);
                return shots;
            }
            Outcome::Unknown => shots.push(shot),
            Outcome::NotSent | Outcome::Unexpected(_) => {}
        }
        assert!(
            wall_ms() - started < 15_000,
            "the key did not reach node {i} within 15 s\n{}",
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client of node `node`: resizes one after another until `until_wall_ms` (host clock),
/// pausing around the month's end (see [`QUIET_MS`]).
fn spawn_client(
    addr: SocketAddr,
    node: usize,
    key: &str,
    boundary: &Boundary,
    until_wall_ms: u64,
) -> tokio::task::JoinHandle<Vec<Shot>> {
    let key = key.to_owned();
    let quiet = (boundary.wall_ms() - QUIET_MS, boundary.wall_ms() + QUIET_MS);
    tokio::spawn(async move {
        let mut shots = Vec::new();
        loop {
            let now = wall_ms();
            if now >= until_wall_ms {
                return shots;
            }
            if (quiet.0..quiet.1).contains(&now) {
                sleep_until_wall(quiet.1.min(until_wall_ms)).await;
                continue;
            }
            shots.push(shoot(addr, node, &key).await);
            tokio::time::sleep(Duration::from_millis(CLIENT_PAUSE_MS)).await;
        }
    })
}

/// What the clients know of a month's total: at least `billed`, at most `billed + open`
/// (resizes with an unknown outcome, or that straddled the end).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Expected {
    billed: u64,
    open: u64,
}

impl Expected {
    fn admits(&self, total: u64) -> bool {
        (self.billed..=self.billed + self.open).contains(&total)
    }
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.open == 0 {
            write!(f, "{}", self.billed)
        } else {
            write!(f, "{}..={}", self.billed, self.billed + self.open)
        }
    }
}

/// The expected totals of the old and the new month from `shots` (of the nodes `nodes`
/// only); panics on an unexpected answer.
fn expected(shots: &[Shot], boundary: &Boundary, nodes: &[usize]) -> (Expected, Expected) {
    let end = boundary.wall_ms();
    let (mut old, mut new) = (Expected::default(), Expected::default());
    for shot in shots.iter().filter(|s| nodes.contains(&s.node)) {
        let (billed, open) = match &shot.outcome {
            Outcome::Billed => (1, 0),
            Outcome::Unknown => (0, 1),
            Outcome::NotSent => continue,
            Outcome::Unexpected(answer) => panic!("node {} answered {answer}", shot.node),
        };
        if shot.answered_ms < end {
            old.billed += billed;
            old.open += open;
        } else if shot.sent_ms >= end {
            new.billed += billed;
            new.open += open;
        } else {
            // Straddled the end: billed in one month or the other.
            old.open += billed + open;
            new.open += billed + open;
        }
    }
    (old, new)
}

/// Node `i`'s usage report of `tenant` for `period`, `None` without a 200 answer.
async fn usage(cluster: &Cluster, i: usize, tenant: &str, period: &str) -> Option<Value> {
    let path = format!("/admin/v1/usage?tenant={tenant}&period={period}");
    let reply = cluster.admin(i).call(Method::GET, &path, None).await.ok()?;
    (reply.status == StatusCode::OK).then(|| reply.json())
}

fn missing(report: &Value) -> BTreeSet<String> {
    report["missing_seals"]
        .as_array()
        .unwrap_or_else(|| panic!("no missing_seals list: {report}"))
        .iter()
        .map(|m| m["node"].as_str().expect("a node id").to_owned())
        .collect()
}

fn is_final(report: &Value) -> bool {
    report["final"]
        .as_bool()
        .unwrap_or_else(|| panic!("no final flag: {report}"))
}

fn requests(report: &Value) -> u64 {
    report["totals"]["requests"]
        .as_u64()
        .unwrap_or_else(|| panic!("no requests total: {report}"))
}

/// Node `origin`'s requests in a report's per-node breakdown (0 when not listed).
fn requests_of(report: &Value, origin: &str) -> u64 {
    report["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["node"] == origin)
        .and_then(|n| n["usage"]["requests"].as_u64())
        .unwrap_or(0)
}

/// The node's clock when it wrote the report.
fn as_of_ms(report: &Value) -> u64 {
    report["as_of_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("no as_of_ms: {report}"))
}

/// Checks what every report must satisfy: final only once the grace after the end has
/// passed on the node's clock (its own seal comes no sooner), and then nothing missing.
fn check_report(node: usize, report: &Value, boundary: &Boundary) {
    if is_final(report) {
        assert!(
            as_of_ms(report) >= boundary.end_ms + GRACE_MS,
            "node {node} reads {} final {} ms after its end, before the grace of {GRACE_MS} ms: \
             {report}",
            boundary.old,
            as_of_ms(report) as i64 - boundary.end_ms as i64
        );
        assert!(
            missing(report).is_empty(),
            "node {node}: final with seals missing: {report}"
        );
    }
}

/// Right after the month's end, before the grace: every node in `nodes` reads the old
/// month open, with every member in `members` missing (none sealed it yet).
async fn assert_open(
    cluster: &Cluster,
    nodes: &[usize],
    members: &BTreeSet<String>,
    tenant: &str,
    boundary: &Boundary,
) {
    for &i in nodes {
        let report = usage(cluster, i, tenant, &boundary.old)
            .await
            .unwrap_or_else(|| panic!("node {i} did not answer a usage read"));
        let at = as_of_ms(&report);
        assert!(
            at < boundary.end_ms + GRACE_MS,
            "the read right after the end came {} ms after it, past the grace: too late to \
             check (machine too slow?)",
            at - boundary.end_ms
        );
        assert!(
            !is_final(&report),
            "node {i} reads {} final {} ms after its end, before any seal: {report}",
            boundary.old,
            at as i64 - boundary.end_ms as i64
        );
        assert_eq!(
            &missing(&report),
            members,
            "node {i}, {} ms after the end: missing seals {report}",
            at as i64 - boundary.end_ms as i64
        );
    }
}

async fn node_ids(cluster: &Cluster) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..cluster.len() {
        ids.push(cluster.admin(i).node_id().await.expect("a node id"));
    }
    ids
}

async fn join(clients: Vec<tokio::task::JoinHandle<Vec<Shot>>>) -> Vec<Shot> {
    let mut shots = Vec::new();
    for c in clients {
        shots.extend(c.await.expect("a client task"));
    }
    shots
}

/// Polls the nodes `nodes` every 100 ms until each has read the old month final, checking
/// every report ([`check_report`]) and that a node's final totals never change; panics
/// at `deadline` (host clock). Returns, per node, the first final report.
async fn until_final(
    cluster: &Cluster,
    nodes: &[usize],
    tenant: &str,
    boundary: &Boundary,
    deadline: u64,
) -> Vec<Value> {
    let mut first: Vec<Option<Value>> = vec![None; nodes.len()];
    let mut last: Vec<Option<Value>> = vec![None; nodes.len()];
    loop {
        for (k, &i) in nodes.iter().enumerate() {
            let Some(report) = usage(cluster, i, tenant, &boundary.old).await else {
                continue;
            };
            check_report(i, &report, boundary);
            if let Some(seen) = &first[k] {
                assert!(
                    is_final(&report) && report["totals"] == seen["totals"],
                    "node {i} read {} final with {}, later {report}",
                    boundary.old,
                    seen["totals"]
                );
            } else if is_final(&report) {
                first[k] = Some(report.clone());
            }
            last[k] = Some(report);
        }
        if first.iter().all(Option::is_some) {
            return first.into_iter().flatten().collect();
        }
        assert!(
            wall_ms() < deadline,
            "{} not final on every node of {nodes:?} {} ms after the grace; last reports: \
             {last:#?}\n{}",
            boundary.old,
            boundary.node_now_ms() as i64 - (boundary.end_ms + GRACE_MS) as i64,
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks that the first final reports agree on the totals, which are `old`, and prints
/// how long after the grace each node read final (by its clock, to within the polling).
fn assert_final_totals(reports: &[Value], nodes: &[usize], boundary: &Boundary, old: Expected) {
    for (report, i) in reports.iter().zip(nodes) {
        assert_eq!(
            report["totals"], reports[0]["totals"],
            "final totals differ between node {} and node {i}",
            nodes[0]
        );
        assert!(
            old.admits(requests(report)),
            "node {i} reads {} final with {} requests; the clients were answered 200 for {old} \
             in it: {report}",
            boundary.old,
            requests(report)
        );
        eprintln!(
            "node {i}: {} final {} ms after the grace (its clock), {} requests (clients: {old})",
            boundary.old,
            as_of_ms(report) - (boundary.end_ms + GRACE_MS),
            requests(report)
        );
    }
}

/// Polls until every node in `nodes` reads `expected` requests in `period`; panics after
/// 15 s.
async fn until_total(
    cluster: &Cluster,
    nodes: &[usize],
    tenant: &str,
    period: &str,
    expected: Expected,
) {
    cluster
        .eventually(
            Duration::from_secs(15),
            &format!("{period} reading {expected} on nodes {nodes:?}"),
            || async move {
                for &i in nodes {
                    let report = usage(cluster, i, tenant, period).await?;
                    if !expected.admits(requests(&report)) {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await;
}

/// `nodes` nodes started [`LEAD_MS`] before a month's end, tenant `acme` with a key, the
/// key served by every node (the shots that proved it), and more than `margin_ms` left
/// before the end for load.
async fn started_before_the_end(
    nodes: usize,
    backend: Backend,
    margin_ms: i64,
) -> (Boundary, Cluster, Vec<String>, TenantKey, Vec<Shot>) {
    let boundary = Boundary::ahead(LEAD_MS);
    let cluster = Cluster::start(spec(nodes, backend, &boundary), node_bin!()).await;
    let ids = node_ids(&cluster).await;
    let acme = cluster
        .admin(0)
        .tenant_with_key("acme", None)
        .await
        .unwrap();
    let mut shots = Vec::new();
    for i in 0..nodes {
        shots.extend(until_serves(&cluster, i, &acme.key).await);
    }
    let ready_before_end_ms = boundary.wall_ms() as i64 - wall_ms() as i64;
    assert!(
        ready_before_end_ms > margin_ms,
        "setup ended {ready_before_end_ms} ms before the month's end: too late for load before \
         it (raise LEAD_MS)"
    );
    (boundary, cluster, ids, acme, shots)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_month_turns_final_everywhere_after_its_end_with_the_billed_totals() {
    let started = wall_ms();
    let (boundary, cluster, ids, acme, mut shots) =
        started_before_the_end(3, Backend::Direct, 3_000).await;
    let all: BTreeSet<String> = ids.iter().cloned().collect();

    // Clients on every node across the end, until well after the grace.
    let load_until = boundary.wall_ms() + GRACE_MS + 2_000;
    let clients: Vec<_> = (0..3)
        .map(|i| spawn_client(cluster.addr(i), i, &acme.key, &boundary, load_until))
        .collect();

    // Before the end, and right after it: open everywhere, nobody's seal held.
    sleep_until_wall(boundary.wall_ms() - 1_500).await;
    for i in 0..3 {
        let report = usage(&cluster, i, &acme.tenant, &boundary.old)
            .await
            .unwrap();
        assert!(!is_final(&report), "node {i} before the end: {report}");
        assert_eq!(missing(&report), all, "node {i} before the end: {report}");
    }
    sleep_until_wall(boundary.wall_ms() + QUIET_MS / 2).await;
    assert_open(&cluster, &[0, 1, 2], &all, &acme.tenant, &boundary).await;
    eprintln!(
        "{} open on every node {} ms after its end (nodes' clock {})",
        boundary.old,
        boundary.node_now_ms() as i64 - boundary.end_ms as i64,
        boundary.node_now_ms()
    );

    // Final everywhere after the grace, with what the clients were answered 200 for.
    let deadline = boundary.wall_ms() + GRACE_MS + FINAL_WITHIN_MS;
    let finals = until_final(&cluster, &[0, 1, 2], &acme.tenant, &boundary, deadline).await;
    shots.extend(join(clients).await);
    let (old, new) = expected(&shots, &boundary, &[0, 1, 2]);
    assert_final_totals(&finals, &[0, 1, 2], &boundary, old);
    // Still final, still the same, once the clients stopped; the new month has the rest
    // and is open.
    for i in 0..3 {
        let report = usage(&cluster, i, &acme.tenant, &boundary.old)
            .await
            .unwrap();
        assert!(is_final(&report), "node {i}: {report}");
        assert_eq!(report["totals"], finals[0]["totals"], "node {i}: {report}");
    }
    until_total(&cluster, &[0, 1, 2], &acme.tenant, &boundary.new, new).await;
    for i in 0..3 {
        let report = usage(&cluster, i, &acme.tenant, &boundary.new)
            .await
            .unwrap();
        assert!(!is_final(&report), "node {i}, the new month: {report}");
    }
    eprintln!(
        "{}: {} requests final everywhere (clients: {old}); {}: {new} (open); {} resizes, \
         test {} ms",
        boundary.old,
        requests(&finals[0]),
        boundary.new,
        shots.len(),
        wall_ms() - started
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_member_blocks_finality_until_it_returns_or_is_decommissioned() {
    /// Cut off shortly before the end, killed with the usage it billed since unsent,
    /// restarted after the grace.
    const RESTARTED: usize = 2;
    /// How long before its kill that member is cut off.
    const CUT_MS: u64 = 2_000;
    /// Killed before the end once its usage reached every node; never comes back.
    const GONE: usize = 3;
    /// How long past the grace the blocked month is watched staying open.
    const HOLD_MS: u64 = 3_000;
    let started = wall_ms();
    let (boundary, mut cluster, ids, acme, mut shots) =
        started_before_the_end(4, Backend::Proxy, 6_000).await;

    let load_until = boundary.wall_ms() + GRACE_MS + 2_000;
    let live: Vec<_> = (0..2)
        .map(|i| spawn_client(cluster.addr(i), i, &acme.key, &boundary, load_until))
        .collect();
    let restarted = spawn_client(
        cluster.addr(RESTARTED),
        RESTARTED,
        &acme.key,
        &boundary,
        boundary.wall_ms() - QUIET_MS,
    );
    let gone = spawn_client(
        cluster.addr(GONE),
        GONE,
        &acme.key,
        &boundary,
        wall_ms() + 1_500,
    );

    // The member that never returns dies once every node holds its usage.
    shots.extend(gone.await.unwrap());
    let (gone_old, _) = expected(&shots, &boundary, &[GONE]);
    cluster
        .eventually(
            Duration::from_secs(15),
            "the doomed member's usage reaching every node",
            || {
                let (acme, boundary, ids) = (&acme, &boundary, &ids);
                let cluster = &cluster;
                async move {
                    for i in 0..4 {
                        let report = usage(cluster, i, &acme.tenant, &boundary.old).await?;
                        if !gone_old.admits(requests_of(&report, &ids[GONE])) {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
    cluster.kill(GONE);
    // The other is cut off while it goes on billing, and dies just before the end, right
    // after its last answer, with what it billed since the cut sent to nobody.
    sleep_until_wall(boundary.wall_ms() - QUIET_MS - CUT_MS).await;
    cluster
        .partition(CutKind::Reset, &isolating(RESTARTED, 4))
        .unwrap();
    shots.extend(restarted.await.unwrap());
    cluster.kill(RESTARTED);
    cluster.heal().unwrap();
    let (restarted_old, _) = expected(&shots, &boundary, &[RESTARTED]);
    let mut held = Vec::new();
    for i in 0..2 {
        let report = usage(&cluster, i, &acme.tenant, &boundary.old)
            .await
            .unwrap();
        held.push(requests_of(&report, &ids[RESTARTED]));
    }
    eprintln!(
        "kill -9 of node {RESTARTED} {} ms before the end: nodes 0 and 1 held {held:?} of its \
         {restarted_old} requests",
        boundary.wall_ms() as i64 - wall_ms() as i64,
    );
    assert!(
        held.iter().all(|h| *h < restarted_old.billed),
        "node {RESTARTED} billed {restarted_old} and the others held {held:?}: nothing unsent \
         at its kill, though it was cut off for {CUT_MS} ms"
    );

    // Right after the end nobody sealed; after the grace the live nodes did, and the two
    // dead members are still missing, for as long as they stay dead.
    sleep_until_wall(boundary.wall_ms() + QUIET_MS / 2).await;
    let all: BTreeSet<String> = ids.iter().cloned().collect();
    assert_open(&cluster, &[0, 1], &all, &acme.tenant, &boundary).await;
    let dead: BTreeSet<String> = [&ids[RESTARTED], &ids[GONE]].into_iter().cloned().collect();
    cluster
        .eventually(
            Duration::from_millis(GRACE_MS + FINAL_WITHIN_MS),
            "the live nodes missing only the dead members' seals",
            || {
                let (acme, boundary, dead) = (&acme, &boundary, &dead);
                let cluster = &cluster;
                async move {
                    for i in 0..2 {
                        let report = usage(cluster, i, &acme.tenant, &boundary.old).await?;
                        check_report(i, &report, boundary);
                        if missing(&report) != *dead {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
    eprintln!(
        "nodes 0 and 1 miss only the dead members' seals {} ms after the grace (nodes' clock)",
        boundary.node_now_ms() as i64 - (boundary.end_ms + GRACE_MS) as i64
    );
    let hold_until = wall_ms() + HOLD_MS;
    while wall_ms() < hold_until {
        for i in 0..2 {
            let report = usage(&cluster, i, &acme.tenant, &boundary.old)
                .await
                .unwrap();
            check_report(i, &report, &boundary);
            assert!(
                !is_final(&report) && missing(&report) == dead,
                "node {i} with two members dead: {report}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = usage(&cluster, 0, &acme.tenant, &boundary.old)
        .await
        .unwrap();
    eprintln!(
        "{} ms after the grace, node 0 still open: missing_seals {}",
        boundary.node_now_ms() as i64 - (boundary.end_ms + GRACE_MS) as i64,
        report["missing_seals"]
    );

    // Restarted, the member seals at once, after its unsent usage: only the member that
    // never returns is missing, and every acknowledged resize is held.
    let restart_ms = wall_ms();
    cluster.start_node(RESTARTED).await;
    let ready_ms = wall_ms();
    shots.extend(join(live).await);
    let (old, _) = expected(&shots, &boundary, &[0, 1, 2, 3]);
    let only_gone: BTreeSet<String> = [ids[GONE].clone()].into_iter().collect();
    cluster
        .eventually(
            Duration::from_secs(15),
            "every live node missing only the gone member's seal, with every resize counted",
            || {
                let (acme, boundary, only_gone, ids) = (&acme, &boundary, &only_gone, &ids);
                let cluster = &cluster;
                async move {
                    for i in 0..3 {
                        let report = usage(cluster, i, &acme.tenant, &boundary.old).await?;
                        check_report(i, &report, boundary);
                        if missing(&report) != *only_gone {
                            return None;
                        }
                        // Its seal is held, so is its usage before it.
                        assert!(
                            restarted_old.admits(requests_of(&report, &ids[RESTARTED])),
                            "node {i} holds the restarted member's seal but not its \
                             {restarted_old} requests: {report}"
                        );
                        if !old.admits(requests(&report)) {
                            return None;
                        }
                    }
                    Some(())
                }
            },
        )
        .await;
    eprintln!(
        "node {RESTARTED} restarted: its seal and usage everywhere {} ms after it was ready \
         ({} ms after its restart began)",
        wall_ms() - ready_ms,
        wall_ms() - restart_ms
    );

    // Decommissioned, the member that never returns blocks nothing: final on the live
    // nodes, with every acknowledged resize (its usage had reached them).
    let out = cluster
        .cli(0, &["cluster", "decommission", &ids[GONE]])
        .await;
    assert!(
        out.status.success(),
        "tessera cluster decommission: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let decommissioned_ms = wall_ms();
    let deadline = decommissioned_ms + FINAL_WITHIN_MS;
    let finals = until_final(&cluster, &[0, 1, 2], &acme.tenant, &boundary, deadline).await;
    eprintln!(
        "{} final on the live nodes {} ms after the decommission",
        boundary.old,
        wall_ms() - decommissioned_ms
    );
    assert_final_totals(&finals, &[0, 1, 2], &boundary, old);
    eprintln!(
        "{}: {} requests final on the live nodes (clients: {old}; node {RESTARTED} \
         {restarted_old}, node {GONE} {gone_old}); test {} ms",
        boundary.old,
        requests(&finals[0]),
        wall_ms() - started
    );
}
