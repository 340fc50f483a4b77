//! The process harness: a cluster of real `tessera` node processes, their process faults
//! (stop, kill -9, SIGSTOP/SIGCONT, restart, restart with a wiped data directory) and one
//! fault API over the network backends, so suites and benches never start processes
//! themselves.
//!
//! - **Binary.** Cargo names a package's binary only to that package's tests and benches
//!   (`CARGO_BIN_EXE_*`), so the library takes its path: call
//!   `Cluster::start(spec, node_bin!())` from a test or bench of this package.
//! - **Configuration.** Every node gets the same cluster key and operator token, the
//!   other nodes as bootstrap peers (through the backend's routing; node 0 alone with
//!   [`ClusterSpec::seed_only`]), one worker, a short
//!   redial cap, and `TESSERA_*` variables from the caller's environment removed; then
//!   the spec's overrides ([`ClusterSpec::env`] for all, [`ClusterSpec::node_env`] per
//!   node), so suites set flush intervals, queue sizes, or the edge's test-only fault
//!   settings (storage faults and clock offsets, behind the edge's `fault-injection`
//!   feature; their admin endpoints are reached with [`Admin::call`]).
//! - **Backends** ([`Backend`]): `Direct` (loopback, no faults), `Proxy` (the userspace
//!   link layer of [`crate::link`], every fault, any user) and `Netns` (network
//!   namespaces, true partitions, root only; see [`crate::netns`]).
//! - **Logs.** Each node appends stdout and stderr to `node<i>.log` beside (not in) its
//!   data directory, so a wiped node keeps its history; a marker line precedes each start.
//! - **Command line.** [`Cluster::cli`] runs the same binary's admin commands
//!   (`tessera cluster leave`, …) against a node, as an operator would.
//! - **Cleanup.** Dropping the [`Cluster`] kills (SIGKILL) every process it started and
//!   removes its namespaces and temporary directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use thiserror::Error;

use crate::client::{self, ClientError, Reply, CALL_TIMEOUT_MS};
use crate::link::{CutKind, Link, LinkFaults, LinkMesh};
use crate::netns::{Netns, NetnsError, HTTP_PORT, P2P_PORT};

/// The operator token every node of a harness cluster accepts.
pub const OPERATOR_TOKEN: &str = "top_tessera-tests-operator";
/// The cluster key of every harness cluster (tests only: it is public).
pub const CLUSTER_KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// How long a node may take to answer `/readyz` 200 after it is started.
pub const READY_TIMEOUT_MS: u64 = 30_000;
/// How long `stop` waits after SIGTERM before it sends SIGKILL.
pub const STOP_GRACE_MS: u64 = 15_000;

/// The path of this package's node binary; only valid in its tests and benches.
#[macro_export]
macro_rules! node_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_tessera-node"))
    };
}

/// How the nodes reach each other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Straight to each other's loopback ports: no network faults.
    Direct,
    /// Through one userspace proxy per directed link ([`crate::link`]).
    Proxy,
    /// Each node in its own network namespace behind a router namespace
    /// ([`crate::netns`]); needs root.
    Netns,
}

/// What to start.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub nodes: usize,
    pub backend: Backend,
    /// Seeds the link layer's fault decisions.
    pub seed: u64,
    pub workers: usize,
    /// Environment overrides for every node, applied after the harness's defaults.
    pub env: Vec<(String, String)>,
    /// Environment overrides for one node (index, name, value), applied last.
    pub node_env: Vec<(usize, String, String)>,
    /// Bootstrap with one seed: node 0 gets no bootstrap peer and every other node only
    /// node 0's replication address, so the rest of the cluster must be found through
    /// the seed (membership, discovery). Off by default: every node gets all the others.
    pub seed_only: bool,
}

impl ClusterSpec {
    pub fn new(nodes: usize, backend: Backend) -> ClusterSpec {
        ClusterSpec {
            nodes,
            backend,
            seed: 0,
            workers: 1,
            env: Vec::new(),
            node_env: Vec::new(),
            seed_only: false,
        }
    }

    /// Starts the nodes with node 0 as their only bootstrap peer (see
    /// [`ClusterSpec::seed_only`]), as an operator gives a large fleet one seed address.
    pub fn seed_only(mut self) -> ClusterSpec {
        self.seed_only = true;
        self
    }

    /// Sets `name` to `value` on every node (e.g. `TESSERA_STORE__FLUSH_INTERVAL_MS`).
    pub fn env(mut self, name: &str, value: &str) -> ClusterSpec {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets `name` to `value` on node `node` only.
    pub fn node_env(mut self, node: usize, name: &str, value: &str) -> ClusterSpec {
        self.node_env
            .push((node, name.to_owned(), value.to_owned()));
        self
    }

    pub fn seed(mut self, seed: u64) -> ClusterSpec {
        self.seed = seed;
        self
    }

    pub fn workers(mut self, workers: usize) -> ClusterSpec {
        self.workers = workers;
        self
    }
}

/// A fault the backend cannot inject, or could not.
#[derive(Debug, Error)]
pub enum FaultError {
    #[error("the {backend:?} backend cannot {what}")]
    Unsupported { backend: Backend, what: String },
    #[error(transparent)]
    Netns(#[from] NetnsError),
}

/// One node process and where to reach it.
pub struct Node {
    index: usize,
    http: SocketAddr,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Incremented by every wipe: the node comes back as a new identity.
    incarnation: u32,
}

impl Node {
    /// The node's HTTP address (API, admin, metrics), stable across restarts.
    pub fn http(&self) -> SocketAddr {
        self.http
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The log every start of this node appends to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id, while a process is running (or paused).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// How many times the data directory was wiped (a new identity each time).
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) with a pid this harness spawned and has not yet reaped, so
            // the pid names that process; it reads no memory of ours.
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
        }
    }
}

/// The network side of a cluster.
enum Net {
    Direct { p2p_ports: Vec<u16> },
    Proxy { p2p_ports: Vec<u16>, mesh: LinkMesh },
    Netns(Netns),
}

/// N node processes, their network, and the faults injected into both.
pub struct Cluster {
    spec: ClusterSpec,
    bin: PathBuf,
    nodes: Vec<Node>,
    net: Net,
    dir: tempfile::TempDir,
}

/// The ports the harness gives nodes: below Linux's ephemeral range (32768 and up), so
/// no outgoing connection (the proxies make many) takes a node's port while it is down
/// between a kill and a restart, or between the pick and the start.
const NODE_PORTS: std::ops::Range<u32> = 20_000..32_000;

static PORTS_PICKED: AtomicU32 = AtomicU32::new(0);

/// A loopback port that is free now, from [`NODE_PORTS`]; successive calls (and other
/// processes, by their pid) start from different places.
fn free_port() -> u16 {
    let span = NODE_PORTS.end - NODE_PORTS.start;
    let start = std::process::id().wrapping_mul(7_919).wrapping_add(
        PORTS_PICKED
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(104_729),
    );
    (0..span)
        .map(|k| (NODE_PORTS.start + start.wrapping_add(k) % span) as u16)
        .find(|port| TcpListener::bind((Ipv4Addr::LOCALHOST, *port)).is_ok())
        .expect("a free loopback port below the ephemeral range")
}

impl Cluster {
    /// Starts `spec.nodes` nodes of `bin` (see [`node_bin!`]) and waits until every one
    /// answers `/readyz`. Panics on setup failures (with the nodes' logs); for the netns
    /// backend, check [`crate::netns::unavailable_reason`] first to skip cleanly.
    pub async fn start(spec: ClusterSpec, bin: &Path) -> Cluster {
        let n = spec.nodes;
        let dir = tempfile::Builder::new()
            .prefix("tessera-cluster-")
            .tempdir()
            .expect("a temporary directory");
        let net = match spec.backend {
            Backend::Direct => Net::Direct {
                p2p_ports: (0..n).map(|_| free_port()).collect(),
            },
            Backend::Proxy => {
                let p2p_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
                let mesh = LinkMesh::start(&p2p_ports, spec.seed)
                    .await
                    .expect("the link proxies start");
                Net::Proxy { p2p_ports, mesh }
            }
            Backend::Netns => Net::Netns(Netns::create(n).expect("network namespaces")),
        };
        let nodes = (0..n)
            .map(|i| {
                let http = match &net {
                    Net::Netns(netns) => SocketAddr::from((netns.node_addr(i), HTTP_PORT)),
                    _ => SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
                };
                Node {
                    index: i,
                    http,
                    data_dir: dir.path().join(format!("node{i}")),
                    log_path: dir.path().join(format!("node{i}.log")),
                    child: None,
                    paused: false,
                    incarnation: 0,
                }
            })
            .collect();
        let mut cluster = Cluster {
            spec,
            bin: bin.to_owned(),
            nodes,
            net,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn backend(&self) -> Backend {
        self.spec.backend
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i`'s HTTP address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].http
    }

    /// The admin client of node `i`, with the operator token.
    pub fn admin(&self, i: usize) -> Admin {
        Admin {
            addr: self.nodes[i].http,
        }
    }

    /// The cluster's temporary directory (data directories and logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The multiaddr node `i` listens on for replication, and the ones it dials: every
    /// other node, or with [`ClusterSpec::seed_only`] node 0 alone (none for node 0).
    fn p2p_addrs(&self, i: usize) -> (String, Vec<String>) {
        let seed_only = self.spec.seed_only;
        let others = (0..self.len()).filter(|j| *j != i && (!seed_only || *j == 0));
        let loopback = |port: u16| format!("/ip4/127.0.0.1/tcp/{port}");
        match &self.net {
            Net::Direct { p2p_ports } => (
                loopback(p2p_ports[i]),
                others.map(|j| loopback(p2p_ports[j])).collect(),
            ),
            Net::Proxy { p2p_ports, mesh } => (
                loopback(p2p_ports[i]),
                others.map(|j| loopback(mesh.port(i, j))).collect(),
            ),
            Net::Netns(netns) => {
                let at = |j: usize| format!("/ip4/{}/tcp/{P2P_PORT}", netns.node_addr(j));
                (at(i), others.map(at).collect())
            }
        }
    }

    fn spawn(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is already running");
        let node = &self.nodes[i];
        std::fs::create_dir_all(&node.data_dir).expect("creating a data directory");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("opening a node log");
        let _ = writeln!(
            log,
            "=== harness: starting node {i} (incarnation {}) ===",
            node.incarnation
        );
        let (listen, bootstrap) = self.p2p_addrs(i);
        let mut command = match &self.net {
            Net::Netns(netns) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", netns.namespace(i)])
                    .arg(&self.bin);
                command
            }
            _ => Command::new(&self.bin),
        };
        for (name, _) in std::env::vars() {
            if name.starts_with("TESSERA_") {
                command.env_remove(name);
            }
        }
        let digest = tessera_edge::control::auth::hex(&tessera_edge::control::auth::sha256(
            OPERATOR_TOKEN.as_bytes(),
        ));
        let quoted: Vec<String> = bootstrap.iter().map(|a| format!("\"{a}\"")).collect();
        command
            .args(["serve", "--listen", &node.http.to_string()])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--workers", &self.spec.workers.to_string()])
            .env("TESSERA_CLUSTER__CLUSTER_KEY", CLUSTER_KEY)
            .env("TESSERA_CLUSTER__LISTEN", format!("[\"{listen}\"]"))
            .env(
                "TESSERA_CLUSTER__BOOTSTRAP",
                format!("[{}]", quoted.join(",")),
            )
            .env(
                "TESSERA_AUTH__OPERATOR_TOKEN_SHA256",
                format!("[\"{digest}\"]"),
            )
            .env("TESSERA_POOL__QUEUE_MAX", "64")
            // Folds of the store's log into a snapshot every 32 KB instead of 64 MB, so
            // they run under every fault schedule (kill -9 mid-fold, a fold beside the
            // commits of a loaded node) rather than never.
            .env("TESSERA_STORE__LOG_BYTES_MAX", "32768")
            .env("TESSERA_LOG", "info")
            .env("TESSERA_CLUSTER__REDIAL_MAX_MS", "1000");
        if matches!(self.net, Net::Proxy { .. }) {
            // Every link runs through its own proxy, which is where faults are made: the
            // nodes must not dial the direct addresses their member tables advertise.
            command.env("TESSERA_CLUSTER__MESH_PEERS", "0");
        }
        for (name, value) in &self.spec.env {
            command.env(name, value);
        }
        for (_, name, value) in self.spec.node_env.iter().filter(|(n, ..)| *n == i) {
            command.env(name, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("cloning a log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting node {i} ({}): {e}", self.bin.display()));
        let node = &mut self.nodes[i];
        node.child = Some(child);
        node.paused = false;
    }

    /// Waits until node `i` answers `/readyz` with 200; panics with its log after
    /// [`READY_TIMEOUT_MS`] or if the process exits.
    pub async fn wait_ready(&mut self, i: usize) {
        let started = Instant::now();
        loop {
            let probe = client::request(
                self.nodes[i].http,
                Method::GET,
                "/readyz",
                &[],
                Vec::new(),
                Duration::from_millis(1_000),
            )
            .await;
            if probe.is_ok_and(|r| r.status == StatusCode::OK) {
                return;
            }
            let exited = self.nodes[i]
                .child
                .as_mut()
                .map_or(Ok(None), Child::try_wait);
            assert!(
                matches!(exited, Ok(None)) && self.nodes[i].child.is_some(),
                "node {i} exited before it was ready ({exited:?}):\n{}",
                self.log_tail(i, 60)
            );
            assert!(
                started.elapsed() < Duration::from_millis(READY_TIMEOUT_MS),
                "node {i} not ready within {READY_TIMEOUT_MS} ms:\n{}",
                self.log_tail(i, 60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts node `i` again (same data directory, same ports) after a stop or kill, and
    /// waits until it is ready.
    pub async fn start_node(&mut self, i: usize) {
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// SIGTERM (after SIGCONT if paused), then waits for the exit; SIGKILL after
    /// [`STOP_GRACE_MS`]. Returns false if the grace ran out.
    pub async fn stop(&mut self, i: usize) -> bool {
        let node = &mut self.nodes[i];
        if node.paused {
            node.signal(libc::SIGCONT);
        }
        node.signal(libc::SIGTERM);
        let started = Instant::now();
        let graceful = loop {
            match node.child.as_mut().map(Child::try_wait) {
                None | Some(Ok(Some(_))) | Some(Err(_)) => break true,
                Some(Ok(None)) if started.elapsed() > Duration::from_millis(STOP_GRACE_MS) => {
                    break false
                }
                Some(Ok(None)) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        self.kill(i);
        graceful
    }

    /// Waits up to `limit` for node `i`'s process to exit by itself (after
    /// `tessera cluster leave`, say) and reaps it. `None`: still running after `limit`, or
    /// no process.
    pub async fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            let node = &mut self.nodes[i];
            match node.child.as_mut().map(Child::try_wait)? {
                Ok(Some(status)) => {
                    node.child = None;
                    node.paused = false;
                    return Some(status);
                }
                Ok(None) if started.elapsed() < limit => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) | Err(_) => return None,
            }
        }
    }

    /// Runs the `tessera` command line (`args`, e.g. `["cluster", "leave"]`) against
    /// node `i`'s admin API with the operator token, bounded by its `--timeout-ms`
    /// ([`CALL_TIMEOUT_MS`]).
    pub async fn cli(&self, i: usize, args: &[&str]) -> Output {
        let mut command = Command::new(&self.bin);
        for (name, _) in std::env::vars() {
            if name.starts_with("TESSERA_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .arg("--node")
            .arg(format!("http://{}", self.nodes[i].http))
            .args(["--timeout-ms", &CALL_TIMEOUT_MS.to_string()])
            .env("TESSERA_TOKEN", OPERATOR_TOKEN)
            .stdin(Stdio::null());
        tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("the command line's thread")
            .unwrap_or_else(|e| panic!("running the command line: {e}"))
    }

    /// SIGKILL and reap: the process gets no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// SIGSTOP: the process keeps its sockets but runs nothing (a GC pause, a frozen VM).
    pub fn pause(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
        self.nodes[i].paused = self.nodes[i].child.is_some();
    }

    /// SIGCONT after [`Cluster::pause`].
    pub fn resume(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
        self.nodes[i].paused = false;
    }

    /// A graceful stop (if running), then a start with the same data directory and ports.
    pub async fn restart(&mut self, i: usize) {
        self.stop(i).await;
        self.start_node(i).await;
    }

    /// SIGKILL (if running), the data directory emptied, then a start: the node comes back
    /// with a new key pair, so the cluster sees a new member.
    pub async fn wipe_and_restart(&mut self, i: usize) {
        self.kill(i);
        let dir = self.nodes[i].data_dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir).expect("wiping a data directory");
        }
        self.nodes[i].incarnation += 1;
        self.start_node(i).await;
    }

    /// Cuts every directed link in `links` with `kind` (other links keep their state).
    pub fn partition(&mut self, kind: CutKind, links: &BTreeSet<Link>) -> Result<(), FaultError> {
        match &mut self.net {
            Net::Direct { .. } => Err(FaultError::Unsupported {
                backend: Backend::Direct,
                what: "partition".to_owned(),
            }),
            Net::Proxy { mesh, .. } => {
                mesh.cut(kind, links);
                Ok(())
            }
            Net::Netns(netns) => Ok(netns.cut(kind, links)?),
        }
    }

    /// Removes every cut and every link fault.
    pub fn heal(&mut self) -> Result<(), FaultError> {
        match &mut self.net {
            Net::Direct { .. } => Ok(()),
            Net::Proxy { mesh, .. } => {
                mesh.heal();
                Ok(())
            }
            Net::Netns(netns) => Ok(netns.heal()?),
        }
    }

    /// Heals the cut of the links in `links` only, the other cuts staying (proxy backend
    /// only).
    pub fn heal_links(&mut self, links: &BTreeSet<Link>) -> Result<(), FaultError> {
        match &self.net {
            Net::Proxy { mesh, .. } => {
                mesh.uncut(links);
                Ok(())
            }
            Net::Direct { .. } | Net::Netns(_) => Err(FaultError::Unsupported {
                backend: self.spec.backend,
                what: "heal some links only".to_owned(),
            }),
        }
    }

    /// Sets the faults of the bytes node `from` sends to node `to` (proxy backend only).
    pub fn set_link(
        &mut self,
        from: usize,
        to: usize,
        faults: LinkFaults,
    ) -> Result<(), FaultError> {
        match &self.net {
            Net::Proxy { mesh, .. } => {
                mesh.set_faults(from, to, faults);
                Ok(())
            }
            Net::Direct { .. } | Net::Netns(_) => Err(FaultError::Unsupported {
                backend: self.spec.backend,
                what: "set per-link faults (delay, loss, duplication, reordering, bandwidth)"
                    .to_owned(),
            }),
        }
    }

    /// Proxy backend: established replication connections that bypass the proxies (see
    /// [`crate::link::direct_connections`]); always empty for the other backends.
    pub fn direct_connections(&self) -> Vec<(u16, std::net::SocketAddrV4)> {
        match &self.net {
            Net::Proxy { p2p_ports, mesh } => {
                crate::link::direct_connections(p2p_ports, &mesh.ports())
            }
            _ => Vec::new(),
        }
    }

    /// The last `lines` lines of node `i`'s log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Every node's last 40 log lines, for assertion messages.
    pub fn logs(&self) -> String {
        (0..self.len())
            .map(|i| format!("--- node {i} ---\n{}\n", self.log_tail(i, 40)))
            .collect()
    }

    /// Copies every node's whole log into `dest` (created), e.g. for a failing run.
    pub fn save_logs(&self, dest: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dest)?;
        for node in &self.nodes {
            if node.log_path.exists() {
                std::fs::copy(&node.log_path, dest.join(format!("node{}.log", node.index)))?;
            }
        }
        Ok(())
    }

    /// Polls `check` every 50 ms until it returns `Some`; panics with `what` and the logs
    /// after `limit`. Returns the value and how long it took.
    pub async fn eventually<T, F, Fut>(
        &self,
        limit: Duration,
        what: &str,
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
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls node `i` with a resize under `key` until it is answered `status` (200: the
    /// key reached the node, and that probe is billed; 401: its revocation did), within
    /// 15 s; returns how long it took.
    pub async fn until_key_answers(&self, i: usize, key: &str, status: StatusCode) -> Duration {
        let addr = self.addr(i);
        let (_, took) = self
            .eventually(
                Duration::from_secs(15),
                "the key's state reaching a node",
                || {
                    let key = key.to_owned();
                    async move {
                        let reply =
                            client::resize(addr, &key, client::tiny_png(), Duration::from_secs(5))
                                .await
                                .ok()?;
                        (reply.status == status).then_some(())
                    }
                },
            )
            .await;
        took
    }

    /// Each node's total billed requests of `tenant` (`None` where no answer came).
    pub async fn requests_everywhere(&self, tenant: &str) -> Vec<Option<u64>> {
        let mut all = Vec::new();
        for i in 0..self.len() {
            all.push(self.admin(i).requests(tenant).await.ok());
        }
        all
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// A tenant with one API key, as the admin helpers create them.
#[derive(Clone, Debug)]
pub struct TenantKey {
    pub tenant: String,
    pub key_id: String,
    pub key: String,
}

/// A node's admin API with the operator token; every call bounded by
/// [`CALL_TIMEOUT_MS`]. Helpers return [`ClientError::Status`] on an unexpected status.
#[derive(Clone, Copy, Debug)]
pub struct Admin {
    pub addr: SocketAddr,
}

impl Admin {
    /// Any request with the operator token and an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Reply, ClientError> {
        let bearer = format!("Bearer {OPERATOR_TOKEN}");
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let mut headers = vec![("authorization", bearer.as_str())];
        if !body.is_empty() {
            headers.push(("content-type", "application/json"));
        }
        client::request(
            self.addr,
            method,
            path,
            &headers,
            body,
            Duration::from_millis(CALL_TIMEOUT_MS),
        )
        .await
    }

    async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        expected: StatusCode,
    ) -> Result<Value, ClientError> {
        let what = format!("{method} {path}");
        let reply = self.call(method, path, body).await?;
        Ok(reply.expect_status(&what, expected)?.json())
    }

    /// Creates a tenant; returns its id.
    pub async fn create_tenant(&self, name: &str) -> Result<String, ClientError> {
        let body = self
            .json(
                Method::POST,
                "/admin/v1/tenants",
                Some(json!({ "name": name })),
                StatusCode::CREATED,
            )
            .await?;
        string_field(&body, "id", "create tenant")
    }

    /// Creates a key with `scopes` (e.g. `"resize,usage"`); returns (key id, key).
    pub async fn create_key(
        &self,
        tenant: &str,
        scopes: &str,
    ) -> Result<(String, String), ClientError> {
        let body = self
            .json(
                Method::POST,
                &format!("/admin/v1/tenants/{tenant}/keys"),
                Some(json!({ "scopes": scopes })),
                StatusCode::CREATED,
            )
            .await?;
        Ok((
            string_field(&body, "id", "create key")?,
            string_field(&body, "key", "create key")?,
        ))
    }

    /// Sets the monthly request quota of `tenant`.
    pub async fn set_quota(&self, tenant: &str, limit: u64) -> Result<(), ClientError> {
        let path = format!("/admin/v1/tenants/{tenant}/quotas/requests/month");
        self.call(Method::PUT, &path, Some(json!({ "limit": limit })))
            .await?
            .expect_status(&format!("PUT {path}"), StatusCode::NO_CONTENT)?;
        Ok(())
    }

    pub async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<(), ClientError> {
        let path = format!("/admin/v1/tenants/{tenant}/keys/{key_id}");
        self.call(Method::DELETE, &path, None)
            .await?
            .expect_status(&format!("DELETE {path}"), StatusCode::NO_CONTENT)?;
        Ok(())
    }

    /// A tenant named `name`, its quota (if any), and a key scoped `resize,usage`.
    pub async fn tenant_with_key(
        &self,
        name: &str,
        quota: Option<u64>,
    ) -> Result<TenantKey, ClientError> {
        let tenant = self.create_tenant(name).await?;
        if let Some(limit) = quota {
            self.set_quota(&tenant, limit).await?;
        }
        let (key_id, key) = self.create_key(&tenant, "resize,usage").await?;
        Ok(TenantKey {
            tenant,
            key_id,
            key,
        })
    }

    /// The usage report of `tenant` this period (totals and per-node harvest).
    pub async fn usage(&self, tenant: &str) -> Result<Value, ClientError> {
        self.json(
            Method::GET,
            &format!("/admin/v1/usage?tenant={tenant}"),
            None,
            StatusCode::OK,
        )
        .await
    }

    /// The merged totals of `tenant` this period.
    pub async fn totals(&self, tenant: &str) -> Result<Value, ClientError> {
        Ok(self.usage(tenant).await?["totals"].clone())
    }

    /// The merged billed request count of `tenant` this period.
    pub async fn requests(&self, tenant: &str) -> Result<u64, ClientError> {
        let totals = self.totals(tenant).await?;
        totals["requests"]
            .as_u64()
            .ok_or_else(|| ClientError::Body {
                what: "usage totals".to_owned(),
                body: totals.to_string(),
            })
    }

    /// The node's view of the cluster (members, connected), with a tenant's escrow if given.
    pub async fn cluster(&self, tenant: Option<&str>) -> Result<Value, ClientError> {
        let path = match tenant {
            Some(t) => format!("/admin/v1/cluster?tenant={t}"),
            None => "/admin/v1/cluster".to_owned(),
        };
        self.json(Method::GET, &path, None, StatusCode::OK).await
    }

    /// The rights each node holds, in this node's view, of `tenant`'s first quota in the
    /// current period, by node id (empty before the node knows of a grant).
    pub async fn rights(&self, tenant: &str) -> Result<BTreeMap<String, u64>, ClientError> {
        let view = self.cluster(Some(tenant)).await?;
        let rights = view["tenant"]["quotas"][0]["rights"]
            .as_array()
            .map(|cells| {
                cells
                    .iter()
                    .filter_map(|cell| {
                        Some((cell["node"].as_str()?.to_owned(), cell["rights"].as_u64()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(rights)
    }

    /// This node's id.
    pub async fn node_id(&self) -> Result<String, ClientError> {
        let view = self.cluster(None).await?;
        string_field(&view["node"], "id", "cluster view")
    }

    /// The node's Prometheus exposition.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let reply = self.call(Method::GET, "/metrics", None).await?;
        Ok(reply.expect_status("GET /metrics", StatusCode::OK)?.text())
    }
}

fn string_field(body: &Value, field: &str, what: &str) -> Result<String, ClientError> {
    body[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ClientError::Body {
            what: what.to_owned(),
            body: body.to_string(),
        })
}
