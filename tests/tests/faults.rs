//! The fault suite: seeded nemesis schedules against real node processes, four clients
//! recording a history, and the checker over it ([`tessera_tests::checker`]).
//!
//! One run: a cluster of N nodes (userspace proxies between them, or network namespaces as
//! root), a tenant with a requests quota (set after some usage in the period, acknowledged
//! and read back from every node before the first fault, so the quota guarantee applies) and a tenant without one, with
//! two keys; four clients sending tiny resizes to random nodes (two on the quota'd tenant,
//! one per key of the other), a revoke of the second key in the middle of the faults, and a
//! reader polling every node's totals in rounds. At the final heal the billing clients
//! stop (so totals can settle); the client of the revoked key keeps probing every node;
//! the run ends once the totals converged and the revocation bound has passed (or at
//! [`SETTLE_LIMIT_MS`]). A failing run prints its seed and writes its history (JSON lines),
//! schedule, report and node logs to `target/fault-runs/<seed>-<backend>/` (every run
//! does with `FAULT_KEEP=1`); `FAULT_SEED=<n>` replays a schedule.
//!
//! In CI: [`fault_schedules_proxy`] (a fixed seed list, then seeds drawn per run) and
//! [`fault_schedules_netns`] (root only, skipped with a message otherwise), 3 nodes, 30 s
//! schedules; [`healthy_network_quota_liveness`] for the liveness check that only holds
//! on a healthy network. `scripts/soak.sh` drives [`soak`] (ignored here) for hours on 5
//! nodes, one summary line a run.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::json;
use tessera_tests::checker::{self, Report, Spec};
use tessera_tests::client::{self, ClientError};
use tessera_tests::cluster::{Backend, Cluster, ClusterSpec, OPERATOR_TOKEN};
use tessera_tests::history::{classify, Entry, NodeIndex, Op, Outcome, Recorder};
use tessera_tests::link;
use tessera_tests::nemesis::{self, ClusterState, CutKind, Fault, NodeState, Plan, Rng, Schedule};
use tessera_tests::node_bin;

/// Seeds every CI run replays on the proxy backend, besides the ones it draws.
/// 268287883345394: a revoke acknowledged by a cut-off node that is then wiped (the
/// checker must not demand a bound for what died with that disk).
/// 95619515571550 (2026-12-01): a revoke made on a node bridged to the third over lossy
/// links, then paused; after the heal the third accepted the revoked key 79–147 ms past the
/// bound (convergence 2,177 ms, in a whole-workspace test run). CI failed on it again on
/// 2026-12-03 (23–46 ms past), and alone it failed once in two runs: after the heal node 1
/// learned the revocation at once, but node 2's link to node 0 was stuck behind TCP
/// retransmissions and node 1 did not pass on what its exchange brought, so node 2 waited
/// for an anti-entropy round. Fixed by `Node::pass_on_directory` (sync's simulation test
/// `directory_ops_an_exchange_brings_are_passed_on_to_the_other_peers`).
const FIXED_SEEDS_PROXY: [u64; 4] = [1, 20261130, 268287883345394, 95619515571550];
/// Seeds every CI run replays on the netns backend (root), besides the ones it draws.
const FIXED_SEEDS_NETNS: [u64; 1] = [7];
/// The revocation bound the checker applies after a heal or a restart: the goal is 1 s,
/// doubled for a loaded 2-core CI machine.
const REVOCATION_BOUND_MS: u64 = 2_000;
/// The longest the suite waits after the final heal for the totals to agree.
const SETTLE_LIMIT_MS: u64 = 30_000;
/// The bound on one client resize: longer than a quota transfer wait and a commit, so a
/// timeout means the node is paused or cut off.
const RESIZE_TIMEOUT_MS: u64 = 3_000;
/// The bound on one usage read (a paused node must not stall a round for long).
const READ_TIMEOUT_MS: u64 = 1_000;
/// Between two requests of one client: ~40 requests a second each, enough to use the
/// quota up under faults without saturating two cores.
const CLIENT_PAUSE_MS: u64 = 20;
/// Between two rounds of reads.
const READ_EVERY_MS: u64 = 100;
/// The quota'd tenant's requests a month: used up during the faults.
const QUOTA_REQUESTS: u64 = 400;
/// Requests the quota'd tenant is billed in the period before its quota is set (the
/// README's "N requests a month" counts them).
const PRIOR_REQUESTS: u64 = 50;
/// Client ids in the history beyond the four clients.
const READER: u32 = 4;
const OPERATOR: u32 = 5;

/// One run's settings.
#[derive(Clone, Copy, Debug)]
struct RunConfig {
    seed: u64,
    backend: Backend,
    nodes: usize,
    run_s: u64,
    /// A schedule with no fault at all (the healthy-network scenario).
    healthy: bool,
}

/// What a run produced.
struct RunResult {
    config: RunConfig,
    schedule: Schedule,
    report: Report,
    /// Set when the run failed and its evidence was written.
    saved: Option<PathBuf>,
}

impl RunResult {
    fn summary(&self) -> String {
        let kinds: BTreeSet<String> = self
            .report
            .violations
            .iter()
            .map(|v| {
                serde_json::to_value(v)
                    .ok()
                    .and_then(|v| v["violation"].as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
            .collect();
        let usable: Vec<String> = self
            .report
            .quota_usable
            .values()
            .map(|u| format!("{:.1}%", u * 100.0))
            .collect();
        format!(
            "seed={} backend={:?} nodes={} faults={} ok={} fail={} unknown={} at_risk_by_wipe={} \
             missing={} violations={} [{}] convergence_ms={} settled_ms={} quota_usable={}",
            self.config.seed,
            self.config.backend,
            self.config.nodes,
            self.schedule.fault_count(),
            self.report.ok,
            self.report.fail,
            self.report.unknown,
            self.report.at_risk_by_wipe,
            self.report.acknowledged_missing,
            self.report.violations.len(),
            kinds.into_iter().collect::<Vec<_>>().join(","),
            self.report
                .convergence_ms
                .map_or_else(|| "none".to_owned(), |ms| ms.to_string()),
            self.report
                .settled_ms
                .map_or_else(|| "none".to_owned(), |ms| ms.to_string()),
            usable.join(","),
        )
    }
}

/// An operation's outcome from what the client saw: a refused connection sent nothing.
fn outcome_of(
    result: &Result<client::Reply, ClientError>,
) -> (Outcome, Option<u16>, Option<String>) {
    match result {
        Ok(reply) => {
            let code = Some(reply.error_code()).filter(|c| !c.is_empty());
            let status = reply.status.as_u16();
            (classify(status, code.as_deref()), Some(status), code)
        }
        Err(ClientError::Connect { .. }) => (Outcome::Fail, None, Some("connect".into())),
        Err(ClientError::Timeout { .. }) => (Outcome::Unknown, None, Some("timeout".into())),
        Err(_) => (Outcome::Unknown, None, Some("http".into())),
    }
}

/// One client: resizes billed to `tenant` with `key`, each to a random node, until `stop`.
#[allow(clippy::too_many_arguments)]
async fn client_loop(
    id: u32,
    seed: u64,
    addrs: Vec<SocketAddr>,
    tenant: String,
    key: String,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng::new(seed ^ u64::from(id).wrapping_mul(0x9e37_79b9));
    let png = client::tiny_png();
    while !stop.load(Ordering::Relaxed) {
        let node = rng.range(0, addrs.len() as u64) as NodeIndex;
        let invoked_ms = recorder.now_ms();
        let result = client::resize(
            addrs[node],
            &key,
            png.clone(),
            Duration::from_millis(RESIZE_TIMEOUT_MS),
        )
        .await;
        let (outcome, status, code) = outcome_of(&result);
        recorder.record(Entry {
            client: id,
            node,
            op: Op::Resize {
                tenant: tenant.clone(),
                key: key.clone(),
            },
            invoked_ms,
            completed_ms: recorder.now_ms(),
            outcome,
            status,
            code,
            value: None,
        });
        tokio::time::sleep(Duration::from_millis(CLIENT_PAUSE_MS)).await;
    }
}

/// `GET /admin/v1/usage?tenant=` on one node, bounded by [`READ_TIMEOUT_MS`].
async fn read_requests(addr: SocketAddr, tenant: &str) -> Result<u64, ClientError> {
    let bearer = format!("Bearer {OPERATOR_TOKEN}");
    let path = format!("/admin/v1/usage?tenant={tenant}");
    let reply = client::request(
        addr,
        Method::GET,
        &path,
        &[("authorization", &bearer)],
        Vec::new(),
        Duration::from_millis(READ_TIMEOUT_MS),
    )
    .await?
    .expect_status(&path, StatusCode::OK)?;
    let body = reply.json();
    body["totals"]["requests"]
        .as_u64()
        .ok_or_else(|| ClientError::Body {
            what: "usage totals".into(),
            body: body.to_string(),
        })
}

/// Reads every tenant on every node, a round every [`READ_EVERY_MS`], until `stop`.
async fn reader_loop(
    addrs: Vec<SocketAddr>,
    tenants: Vec<String>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
) {
    let mut round = 0;
    while !stop.load(Ordering::Relaxed) {
        for (node, &addr) in addrs.iter().enumerate() {
            for tenant in &tenants {
                let (recorder, tenant) = (recorder.clone(), tenant.clone());
                // Spawned: a paused node's slow reads never hold the next round back.
                tokio::spawn(async move {
                    let invoked_ms = recorder.now_ms();
                    let result = read_requests(addr, &tenant).await;
                    let completed_ms = recorder.now_ms();
                    recorder.record(Entry {
                        client: READER,
                        node,
                        op: Op::ReadUsage {
                            tenant,
                            round: Some(round),
                        },
                        invoked_ms,
                        completed_ms,
                        outcome: if result.is_ok() {
                            Outcome::Ok
                        } else {
                            Outcome::Fail
                        },
                        status: None,
                        code: result.as_ref().err().map(|e| e.to_string()),
                        value: result.ok(),
                    });
                });
            }
        }
        round += 1;
        tokio::time::sleep(Duration::from_millis(READ_EVERY_MS)).await;
    }
}

/// Applies `fault` to the cluster. Returns false when the backend cannot inject it (the
/// event is then not recorded: the network stayed healthy).
async fn apply(cluster: &mut Cluster, fault: &Fault, wiped: &mut BTreeSet<NodeIndex>) -> bool {
    match fault {
        Fault::Partition { kind, cut, .. } => {
            let kind = match kind {
                CutKind::Drop => link::CutKind::Drop,
                CutKind::Reset => link::CutKind::Reset,
            };
            let links = cut.iter().copied().collect();
            cluster.partition(kind, &links).expect("a partition");
        }
        Fault::Link { from, to, faults } => {
            let faults = link::LinkFaults {
                delay_ms: faults.delay_ms,
                jitter_ms: faults.jitter_ms,
                loss: f64::from(faults.loss_percent) / 100.0,
                duplicate: f64::from(faults.dup_percent) / 100.0,
                ..link::LinkFaults::default()
            };
            if cluster.backend() != Backend::Proxy {
                return false;
            }
            cluster.set_link(*from, *to, faults).expect("link faults");
        }
        Fault::Heal => cluster.heal().expect("a heal"),
        Fault::Kill { node } => cluster.kill(*node),
        Fault::Wipe { node } => {
            cluster.kill(*node);
            wiped.insert(*node);
        }
        Fault::Restart { node } => {
            if wiped.remove(node) {
                cluster.wipe_and_restart(*node).await;
            } else {
                cluster.start_node(*node).await;
            }
        }
        Fault::Pause { node } => cluster.pause(*node),
        Fault::Resume { node } => cluster.resume(*node),
    }
    true
}

/// Whether a fault's event is recorded after it is applied (an undo: the cluster is only
/// whole again once it is done) rather than before (a fault: it may bite at once).
fn recorded_after(fault: &Fault) -> bool {
    matches!(
        fault,
        Fault::Heal | Fault::Restart { .. } | Fault::Resume { .. }
    )
}

/// The tenants and keys of a run.
struct Tenants {
    quota: tessera_tests::cluster::TenantKey,
    free: tessera_tests::cluster::TenantKey,
    /// The free tenant's second key, revoked mid-run.
    doomed: (String, String),
}

/// Creates the tenants on node 0, bills [`PRIOR_REQUESTS`] to the quota'd tenant, sets its
/// quota (all recorded), and waits until every node knows the quota and both keys.
async fn set_up(cluster: &Cluster, recorder: &Recorder) -> Tenants {
    let admin = cluster.admin(0);
    let quota = admin
        .tenant_with_key("quota", None)
        .await
        .expect("the quota'd tenant");
    // Usage billed in the period before the quota is set: the quota counts it.
    let png = client::tiny_png();
    for _ in 0..PRIOR_REQUESTS {
        let invoked_ms = recorder.now_ms();
        let timeout = Duration::from_millis(RESIZE_TIMEOUT_MS);
        let result = client::resize(cluster.addr(0), &quota.key, png.clone(), timeout).await;
        let (outcome, status, code) = outcome_of(&result);
        assert_eq!(
            outcome,
            Outcome::Ok,
            "a resize before the quota: {result:?}"
        );
        recorder.record(Entry {
            client: OPERATOR,
            node: 0,
            op: Op::Resize {
                tenant: quota.tenant.clone(),
                key: quota.key.clone(),
            },
            invoked_ms,
            completed_ms: recorder.now_ms(),
            outcome,
            status,
            code,
            value: None,
        });
    }
    let invoked_ms = recorder.now_ms();
    let set = admin.set_quota(&quota.tenant, QUOTA_REQUESTS).await;
    recorder.record(Entry {
        client: OPERATOR,
        node: 0,
        op: Op::SetQuota {
            tenant: quota.tenant.clone(),
            requests: QUOTA_REQUESTS,
        },
        invoked_ms,
        completed_ms: recorder.now_ms(),
        outcome: if set.is_ok() {
            Outcome::Ok
        } else {
            Outcome::Unknown
        },
        status: None,
        code: set.as_ref().err().map(|e| e.to_string()),
        value: None,
    });
    set.expect("setting the quota on a healthy cluster");
    let free = admin
        .tenant_with_key("free", None)
        .await
        .expect("the tenant without quota");
    let doomed = admin
        .create_key(&free.tenant, "resize,usage")
        .await
        .expect("a second key");
    // Every node knows the quota (the guarantee's precondition) and the free tenant.
    for i in 0..cluster.len() {
        let admin = cluster.admin(i);
        let (quota_t, free_t) = (quota.tenant.clone(), free.tenant.clone());
        cluster
            .eventually(
                Duration::from_secs(20),
                "the tenants known everywhere",
                || {
                    let (quota_t, free_t) = (quota_t.clone(), free_t.clone());
                    async move {
                        let q = admin
                            .call(Method::GET, &format!("/admin/v1/tenants/{quota_t}"), None)
                            .await
                            .ok()?;
                        let f = admin
                            .call(Method::GET, &format!("/admin/v1/tenants/{free_t}"), None)
                            .await
                            .ok()?;
                        let limit = json!(QUOTA_REQUESTS);
                        let quota_known = q.json()["quotas"]
                            .as_array()
                            .is_some_and(|qs| qs.iter().any(|x| x["limit"] == limit));
                        let keys_known = f.json()["keys"].as_array().is_some_and(|k| k.len() == 2);
                        (quota_known && keys_known).then_some(())
                    }
                },
            )
            .await;
    }
    Tenants {
        quota,
        free,
        doomed,
    }
}

/// At most two clusters at once in this test binary: CI has two cores, and a starved
/// cluster would measure the machine, not the protocol.
static CLUSTERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// Runs one schedule and checks it.
async fn run(config: RunConfig) -> RunResult {
    let _turn = CLUSTERS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let plan = Plan::new(config.nodes, config.run_s);
    let schedule = if config.healthy {
        let heal_ms = plan.run_ms - plan.quiet_ms;
        Schedule {
            seed: config.seed,
            plan,
            faults: vec![(heal_ms, Fault::Heal)],
            heal_ms,
        }
    } else {
        Schedule::generate(config.seed, plan)
    };
    let spec = ClusterSpec::new(config.nodes, config.backend).seed(config.seed);
    let mut cluster = Cluster::start(spec, node_bin!()).await;
    let recorder = Recorder::new();
    let tenants = set_up(&cluster, &recorder).await;
    let addrs: Vec<SocketAddr> = (0..cluster.len()).map(|i| cluster.addr(i)).collect();
    let stop_billing = Arc::new(AtomicBool::new(false));
    let stop_all = Arc::new(AtomicBool::new(false));
    // The revoked key's prober: on to the end when the revoke was acknowledged (its probes
    // are then refused and bill nothing), stopped with the billing clients otherwise (a key
    // still valid would keep billing, and totals never settle while writes go on).
    let stop_probing = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let clients = [
        (0, &tenants.quota.tenant, &tenants.quota.key, &stop_billing),
        (1, &tenants.quota.tenant, &tenants.quota.key, &stop_billing),
        (2, &tenants.free.tenant, &tenants.free.key, &stop_billing),
        (3, &tenants.free.tenant, &tenants.doomed.1, &stop_probing),
    ];
    for (id, tenant, key, stop) in clients {
        tasks.push(tokio::spawn(client_loop(
            id,
            config.seed,
            addrs.clone(),
            tenant.clone(),
            key.clone(),
            recorder.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(reader_loop(
        addrs.clone(),
        vec![tenants.quota.tenant.clone(), tenants.free.tenant.clone()],
        recorder.clone(),
        stop_all.clone(),
    )));

    // The nemesis, with the revoke in the middle of the faults.
    let revoke_at_ms = (plan.warmup_ms + schedule.heal_ms) / 2;
    let mut revoked = false;
    // The node that acknowledged the revoke, while the revoke can still be relied on (a
    // wipe of that node may take it along: then the key may stay valid, and bills).
    let mut revoked_on: Option<NodeIndex> = None;
    let mut state = ClusterState::new(config.nodes);
    let mut wiped = BTreeSet::new();
    let start = Instant::now();
    let sleep_until = |at_ms: u64| {
        let due = start + Duration::from_millis(at_ms);
        tokio::time::sleep_until(due.into())
    };
    for (at_ms, fault) in &schedule.faults {
        if !revoked && revoke_at_ms <= *at_ms {
            sleep_until(revoke_at_ms).await;
            revoked_on = revoke(&cluster, &state, &tenants, &recorder).await;
            revoked = true;
        }
        sleep_until(*at_ms).await;
        if matches!(fault, Fault::Wipe { node } if Some(*node) == revoked_on) {
            revoked_on = None;
        }
        let before = recorder.now_ms();
        if apply(&mut cluster, fault, &mut wiped).await {
            let after = recorder.now_ms();
            let at = if recorded_after(fault) { after } else { before };
            recorder.event_at(at, fault.clone());
            state.apply(fault);
        }
    }
    let heal_ms = recorder.now_ms();
    stop_billing.store(true, Ordering::Relaxed);
    if revoked_on.is_none() {
        stop_probing.store(true, Ordering::Relaxed);
    }

    // Settle: until converged and past the revocation bound, or the limit.
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = recorder.now_ms();
        let converged = checker::convergence_ms(&recorder.snapshot(), config.nodes).is_some();
        let bound_passed = now > heal_ms + REVOCATION_BOUND_MS + 2_000;
        if (converged && bound_passed) || now > heal_ms + SETTLE_LIMIT_MS {
            break;
        }
    }
    stop_all.store(true, Ordering::Relaxed);
    stop_probing.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a client task");
    }
    // Reads started by the last round finish within their timeout.
    tokio::time::sleep(Duration::from_millis(READ_TIMEOUT_MS + 100)).await;
    let history = recorder.snapshot();
    let report = checker::check(
        &history,
        &Spec {
            nodes: config.nodes,
            revocation_bound_ms: REVOCATION_BOUND_MS,
        },
    );
    let mut result = RunResult {
        config,
        schedule,
        report,
        saved: None,
    };
    let failed = !result.report.violations.is_empty()
        || (config.healthy && result.report.liveness(0.99).is_err());
    if failed || std::env::var_os("FAULT_KEEP").is_some() {
        let dir = runs_dir().join(format!("{}-{:?}", config.seed, config.backend).to_lowercase());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the fault-run folder");
        history
            .write_jsonl(&dir.join("history.jsonl"))
            .expect("writing the history");
        std::fs::write(
            dir.join("schedule.json"),
            serde_json::to_string_pretty(&result.schedule).expect("a schedule serialises"),
        )
        .expect("writing the schedule");
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(&result.report).expect("a report serialises"),
        )
        .expect("writing the report");
        cluster.save_logs(&dir).expect("saving the node logs");
        result.saved = Some(dir);
    }
    result
}

/// Revokes the doomed key on the running nodes in turn, until one acknowledges it (a node
/// wiped and still cut off does not know the tenant yet: 404; a paused one does not
/// answer); every attempt is recorded. Returns the node that acknowledged, if one did.
async fn revoke(
    cluster: &Cluster,
    state: &ClusterState,
    tenants: &Tenants,
    recorder: &Recorder,
) -> Option<NodeIndex> {
    let running = (0..cluster.len()).filter(|&i| state.nodes[i] == NodeState::Running);
    for node in running {
        let invoked_ms = recorder.now_ms();
        let result = cluster
            .admin(node)
            .revoke_key(&tenants.free.tenant, &tenants.doomed.0)
            .await;
        let (outcome, status) = match &result {
            Ok(()) => (Outcome::Ok, Some(204)),
            Err(ClientError::Status { status, .. }) => {
                (classify(status.as_u16(), None), Some(status.as_u16()))
            }
            Err(ClientError::Connect { .. }) => (Outcome::Fail, None),
            Err(_) => (Outcome::Unknown, None),
        };
        let acknowledged = outcome == Outcome::Ok;
        recorder.record(Entry {
            client: OPERATOR,
            node,
            op: Op::RevokeKey {
                tenant: tenants.free.tenant.clone(),
                key: tenants.doomed.1.clone(),
            },
            invoked_ms,
            completed_ms: recorder.now_ms(),
            outcome,
            status,
            code: result.err().map(|e| e.to_string()),
            value: None,
        });
        if acknowledged {
            return Some(node);
        }
    }
    None
}

/// Where failing runs write their evidence.
fn runs_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("fault-runs")
}

/// Runs one faulty schedule; prints its summary line (after `prefix`) and its
/// violations; returns the failure to report, naming the seed and the evidence folder.
async fn run_one(
    prefix: &str,
    seed: u64,
    backend: Backend,
    nodes: usize,
    run_s: u64,
) -> Option<String> {
    let result = run(RunConfig {
        seed,
        backend,
        nodes,
        run_s,
        healthy: false,
    })
    .await;
    println!("{prefix} {}", result.summary());
    let dir = result.saved.as_ref()?;
    if result.report.violations.is_empty() {
        println!("  kept (FAULT_KEEP): {}", dir.display());
        return None;
    }
    for v in &result.report.violations {
        println!("  violation (seed {seed}): {v}");
    }
    Some(format!(
        "FAULT_SEED={seed} ({backend:?}): {} violations, evidence in {}",
        result.report.violations.len(),
        dir.display()
    ))
}

/// Runs `seeds` one after the other; panics at the end naming every failing seed.
async fn run_seeds(seeds: &[u64], backend: Backend, nodes: usize, run_s: u64) {
    let mut failures = Vec::new();
    for &seed in seeds {
        failures.extend(run_one("fault run:", seed, backend, nodes, run_s).await);
    }
    assert!(
        failures.is_empty(),
        "failing schedules:\n{}",
        failures.join("\n")
    );
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_schedules_proxy() {
    // Five drawn schedules a CI run in all: three here and two on netns, or five here
    // where netns is unavailable.
    let netns = tessera_tests::netns::unavailable_reason().is_none();
    let drawn = env_or("FAULT_RUNS", if netns { 3 } else { 5 });
    let seeds = nemesis::seeds(&FIXED_SEEDS_PROXY, drawn);
    run_seeds(&seeds, Backend::Proxy, 3, 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_schedules_netns() {
    if let Some(reason) = tessera_tests::netns::unavailable_reason() {
        eprintln!("SKIPPED fault_schedules_netns: {reason}");
        return;
    }
    let seeds = nemesis::seeds(&FIXED_SEEDS_NETNS, env_or("FAULT_RUNS_NETNS", 2));
    run_seeds(&seeds, Backend::Netns, 3, 30).await;
}

/// On a healthy network, a quota'd tenant gets at least 99% of its quota, and every other
/// guarantee holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_network_quota_liveness() {
    let result = run(RunConfig {
        seed: 0,
        backend: Backend::Direct,
        nodes: 3,
        run_s: 20,
        healthy: true,
    })
    .await;
    eprintln!("healthy run: {}", result.summary());
    assert_eq!(result.report.violations, vec![], "{}", result.summary());
    assert_eq!(result.report.liveness(0.99), Ok(()), "{}", result.summary());
}

/// The soak: `scripts/soak.sh` runs this for `FAULT_SOAK_MINUTES`, schedule after
/// schedule (`FAULT_NODES`, default 5; `FAULT_SECONDS`, default 30; `FAULT_BACKEND`,
/// `proxy` or `netns`, default netns as root), one summary line a run; a given
/// `FAULT_SEED` runs that seed alone. Fails at the end if any run broke a guarantee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "hours long: run by scripts/soak.sh"]
async fn soak() {
    let nodes = env_or("FAULT_NODES", 5);
    let run_s = env_or("FAULT_SECONDS", 30);
    let minutes: u64 = env_or("FAULT_SOAK_MINUTES", 10);
    let backend = match std::env::var("FAULT_BACKEND").as_deref() {
        Ok("proxy") => Backend::Proxy,
        Ok("netns") => Backend::Netns,
        _ if tessera_tests::netns::unavailable_reason().is_none() => Backend::Netns,
        _ => Backend::Proxy,
    };
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let mut failing = Vec::new();
    let mut runs = 0;
    while runs == 0 || Instant::now() < until {
        for seed in nemesis::seeds(&[], 1) {
            failing.extend(run_one("SOAK", seed, backend, nodes, run_s).await);
        }
        runs += 1;
        if std::env::var("FAULT_SEED").is_ok() {
            break;
        }
    }
    assert!(failing.is_empty(), "failing seeds:\n{}", failing.join("\n"));
}
