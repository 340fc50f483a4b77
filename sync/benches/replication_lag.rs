//! Replication over real libp2p on loopback, three nodes in one process (each with its
//! own transport task on a two-thread tokio runtime):
//! - **lag**: 1000 increments at one node, one every 10 ms, each to its own counter;
//!   the time from the increment to its value being visible on both other nodes (polled
//!   every millisecond), as p50/p99/max;
//! - **heal**: one node cut off (its transport stopped) for 30 s while both sides keep
//!   writing, then reconnected (a new transport for the same node state and key): the time
//!   until all three ledgers are identical.
//!
//! Run: `cargo bench -p tessera-sync --bench replication_lag`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::multiaddr::Protocol;
use libp2p::{identity, Multiaddr};
use tessera_crdt::{CounterKey, Metric, Period, PeriodKind, TenantId};
use tessera_sync::net::{node_id_of, spawn, NetHandle, NetSettings};
use tessera_sync::{Node, SyncConfig};

const KEY: [u8; 32] = [3; 32];

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

struct Peer {
    keypair: identity::Keypair,
    node: Arc<Mutex<Node>>,
    net: NetHandle,
    addr: Multiaddr,
}

async fn connect(
    keypair: identity::Keypair,
    node: Arc<Mutex<Node>>,
    bootstrap: Vec<Multiaddr>,
) -> Peer {
    let peer_id = keypair.public().to_peer_id();
    let mut settings = NetSettings::new(KEY);
    settings.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    settings.bootstrap = bootstrap;
    settings.redial_base_ms = 100;
    settings.redial_max_ms = 1_000;
    let net = spawn(keypair.clone(), settings, node.clone(), None)
        .await
        .expect("transport starts");
    let addr = net.stats().listen_addrs[0]
        .clone()
        .with(Protocol::P2p(peer_id));
    Peer {
        keypair,
        node,
        net,
        addr,
    }
}

async fn start(bootstrap: Vec<Multiaddr>) -> Peer {
    let keypair = identity::Keypair::generate_ed25519();
    let id = node_id_of(&keypair.public().to_peer_id());
    let node = Arc::new(Mutex::new(Node::empty(
        id,
        SyncConfig::default(),
        1,
        now_ms(),
    )));
    connect(keypair, node, bootstrap).await
}

fn key(tenant: u64) -> CounterKey {
    CounterKey::new(
        TenantId(tenant),
        Period::containing(PeriodKind::Month, now_ms()),
        Metric::Requests,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn lag(peers: &[Peer]) {
    let rounds = 1000u64;
    let mut lags = Vec::new();
    for i in 0..rounds {
        let k = key(1_000_000 + i);
        let started = Instant::now();
        peers[0]
            .node
            .lock()
            .expect("node")
            .increment(now_ms(), k, 1)
            .expect("increment");
        peers[0].net.wake();
        loop {
            let seen = peers[1..]
                .iter()
                .all(|p| p.node.lock().expect("node").ledger().total(&k) == 1);
            if seen {
                lags.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!("increment {i} not replicated in 10 s");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let spent = started.elapsed();
        if spent < Duration::from_millis(10) {
            tokio::time::sleep(Duration::from_millis(10) - spent).await;
        }
    }
    lags.sort();
    println!(
        "lag, increment to visible on both other nodes, {rounds} increments: p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags[lags.len() - 1]
    );
}

async fn heal(peers: &mut Vec<Peer>) {
    let cut = peers.pop().expect("three peers");
    cut.net.stop();
    let started = Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(30) {
        for (n, p) in peers.iter().chain(std::iter::once(&cut)).enumerate() {
            p.node
                .lock()
                .expect("node")
                .increment(now_ms(), key(i % 1000), 1 + n as u64)
                .expect("increment");
            p.net.wake();
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let writes = i * 3;
    // As configured in a cluster: every other node's address is a bootstrap address.
    let bootstrap = vec![peers[0].addr.clone(), peers[1].addr.clone()];
    let reconnected = Instant::now();
    let back = connect(cut.keypair.clone(), cut.node.clone(), bootstrap).await;
    peers.push(back);
    loop {
        let first = peers[0].node.lock().expect("node").ledger().clone();
        if peers[1..]
            .iter()
            .all(|p| p.node.lock().expect("node").ledger().same_state(&first))
        {
            break;
        }
        if reconnected.elapsed() > Duration::from_secs(60) {
            panic!("not converged 60 s after the heal");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "heal: 30 s cut with {writes} writes on both sides; identical ledgers {:.0?} after reconnecting (default 3 s anti-entropy rounds)",
        reconnected.elapsed()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let a = start(vec![]).await;
        let b = start(vec![a.addr.clone()]).await;
        let c = start(vec![a.addr.clone(), b.addr.clone()]).await;
        let mut peers = vec![a, b, c];
        // Let the connections and the gossip mesh form.
        tokio::time::sleep(Duration::from_secs(3)).await;
        lag(&peers).await;
        heal(&mut peers).await;
        for p in &peers {
            p.net.stop();
        }
    });
}
