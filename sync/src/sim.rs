//! A simulated network for the protocol core (feature `sim`), in the manner of raft-rs's
//! test harness and chitchat's simulator: N nodes in one process, a virtual clock, and a
//! network that delays, drops, duplicates and reorders messages, cuts links in any shape,
//! and crashes and restarts nodes from their persisted state. Everything is driven by one
//! seed, so a failing run replays exactly.
//!
//! The simulator also keeps the *truth* — what each node incremented, which consumes and
//! refunds succeeded — so tests can check replicas against it, not just against each other.
//!
//! # Why a module of the crate
//! The protocol's tests (`sync/tests/simulation.rs`), its benches (`catch_up`,
//! `fleet_scale`) and any suite that wants to drive many cores at once share one
//! simulator; a copy pulled in with `#[path]` drifts. It is behind the `sim` feature so
//! the node binary never carries it; the crate's own tests and benches enable it (see
//! `sync/Cargo.toml`). Like the core it drives, it does no IO, reads no clock and never
//! sees tokio: time is [`Sim::now_ms`], and every random choice comes from the seed.
//!
//! # What it models, and how faithfully
//! - **Delivery**: each message is encoded once, then delivered to each recipient after a
//!   delay drawn from [`NetConfig`], lost or duplicated with its probabilities. Messages
//!   are decoded on arrival, so everything crosses the real encoding.
//! - **Connections**: a full mesh ([`Sim::new`], [`Sim::with_ids`]: every node connected
//!   to every other, what small clusters are), or the mesh the nodes build themselves
//!   from one seed address ([`Sim::with_seed_mesh`]: their [`Output::Connect`]s are dials
//!   that complete a round trip later). A send reaches any linked node, connected or not
//!   (the transport dials a member beyond the mesh).
//! - **The frame limit**: the transport drops, silently, any message over its
//!   `message_bytes_max` (1 MiB by default). The simulator drops it too and counts it in
//!   [`Sim::oversized_messages`]; [`Sim::assert_converged`] fails when any was dropped, so
//!   a chunking bug fails the tests that check convergence.
//! - **Durability**: before a step's outputs leave, its [`Node::take_changes`] batch is
//!   applied to a durable copy through the encodings (as the edge's store does); a crash
//!   keeps exactly that copy, and a restart loads it through the encodings again.
//! - **Node ids**: `100 + i` by default (small, readable in failures); [`random_ids`]
//!   draws 64-bit ids from the seed, as production nodes have (a postcard varint of a
//!   random id is 9–10 bytes, not 1), for measurements of message sizes at fleet scale.
//! - **Accounting**: every message put on a link is counted ([`Sim::messages_sent`],
//!   [`Sim::bytes_sent`], and per kind in [`Sim::bytes_by_kind`]), lost ones included:
//!   they were sent.
//!
//! [`fleet`] holds issue #13's fleet-scale scenarios (quota
//! liveness, heal traffic), shared by the `fleet_scale` bench and `tests/fleet.rs`.

pub mod fleet;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use tessera_crdt::directory::Change;
use tessera_crdt::{CounterKey, EscrowError, Metric, NodeId, Period, PeriodKind, TenantId};

use crate::rng::{mix, Rng};
use crate::{Changes, Input, Message, Node, NodeState, Output, SyncConfig};

/// The transport's default frame limit (`cluster.message_bytes_max`, 1 MiB): a larger
/// message is dropped there, and here.
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;

/// 2026-11-10T00:00:00Z: every simulated run happens inside one billing month.
pub const START_MS: u64 = 1_794_268_800_000;

/// How the simulated network treats each message: a one-way delay uniform in
/// `delay_min_ms..=delay_max_ms`, lost with probability `loss`, else delivered twice with
/// probability `duplicate`.
#[derive(Clone, Debug)]
pub struct NetConfig {
    pub delay_min_ms: u64,
    pub delay_max_ms: u64,
    pub loss: f64,
    pub duplicate: f64,
}

impl NetConfig {
    /// A LAN: 1–5 ms one way, nothing lost or duplicated.
    pub fn perfect() -> NetConfig {
        NetConfig {
            delay_min_ms: 1,
            delay_max_ms: 5,
            loss: 0.0,
            duplicate: 0.0,
        }
    }

    /// Links between regions: 20–60 ms one way, nothing lost or duplicated.
    pub fn wan() -> NetConfig {
        NetConfig {
            delay_min_ms: 20,
            delay_max_ms: 60,
            loss: 0.0,
            duplicate: 0.0,
        }
    }

    /// A bad network: 1–200 ms one way (so heavy reordering), 20% lost, 10% duplicated.
    pub fn faulty() -> NetConfig {
        NetConfig {
            delay_min_ms: 1,
            delay_max_ms: 200,
            loss: 0.2,
            duplicate: 0.1,
        }
    }
}

/// Protocol settings shrunk so simulated minutes hold many rounds.
pub fn fast_config() -> SyncConfig {
    SyncConfig {
        anti_entropy_interval_ms: 500,
        ledger_entries_max: 64,
        directory_ops_max: 16,
        escrow_counters_max: 16,
        pull_timeout_ms: 1_000,
        rights_request_timeout_ms: 300,
        rights_retry_base_ms: 50,
        rights_retry_max_ms: 1_000,
        ..SyncConfig::default()
    }
}

/// Node ids `100`, `101`, …: small and readable in failure messages (what [`Sim::new`]
/// uses).
pub fn small_ids(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| NodeId(100 + i as u64)).collect()
}

/// `n` distinct random 64-bit node ids drawn from `seed`, as production nodes choose
/// theirs: what fleet-scale measurements of message sizes need. The stream is separate
/// from the simulator's own, so the same seed drives the same network either way.
pub fn random_ids(n: usize, seed: u64) -> Vec<NodeId> {
    let mut rng = Rng::new(mix(seed ^ 0x1d50_f1d5));
    let mut seen = BTreeSet::new();
    let mut ids = Vec::with_capacity(n);
    while ids.len() < n {
        let id = rng.next_u64();
        if id != 0 && seen.insert(id) {
            ids.push(NodeId(id));
        }
    }
    ids
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Delivery {
    at_ms: u64,
    /// Unique, so deliveries at the same time keep their sending order and the bytes are
    /// never compared.
    order: u64,
    from: usize,
    to: usize,
    bytes: Arc<[u8]>,
}

/// What really happened, to check replicas against.
#[derive(Default, Debug)]
pub struct Truth {
    /// Sum of local increments per (key, node).
    pub increments: BTreeMap<(CounterKey, NodeId), u64>,
    /// Net consumption per key: successful consumes less successful refunds.
    pub consumed: BTreeMap<CounterKey, u64>,
    /// Successful refunds per key.
    pub refunded: BTreeMap<CounterKey, u64>,
}

/// N nodes on a simulated network. See the module doc.
pub struct Sim {
    pub now_ms: u64,
    pub rng: Rng,
    pub seed: u64,
    pub config: SyncConfig,
    pub net: NetConfig,
    pub ids: Vec<NodeId>,
    nodes: Vec<Option<Node>>,
    /// Each node's durable state, built only from [`Node::take_changes`] batches (through
    /// their encodings), as the edge's store builds it.
    durable: Vec<NodeState>,
    /// A crashed node's state as persisted at the crash.
    saved: Vec<Option<NodeState>>,
    /// Directed links that are cut.
    cut: BTreeSet<(usize, usize)>,
    /// In mesh mode ([`Sim::with_seed_mesh`]), the connections the transports hold, as
    /// `(low, high)` pairs; `None`: every linked pair is connected (a full mesh).
    mesh: Option<BTreeSet<(usize, usize)>>,
    /// Dials under way in mesh mode: when they complete, and between whom.
    dials: BinaryHeap<Reverse<(u64, usize, usize)>>,
    /// Connections a node asked to close (mesh mode), closed once its step is routed.
    pending_disconnects: Vec<(usize, usize)>,
    queue: BinaryHeap<Reverse<Delivery>>,
    order: u64,
    restarts: u64,
    pub truth: Truth,
    pub bytes_sent: u64,
    pub messages_sent: u64,
    pub bytes_by_kind: BTreeMap<&'static str, u64>,
    /// Frame limit: a message encoded larger is dropped before it is sent, as the
    /// transport drops it (default [`MESSAGE_BYTES_MAX`]).
    pub message_bytes_max: usize,
    /// Messages dropped for being over `message_bytes_max`, and the same per message kind.
    pub oversized_messages: u64,
    pub oversized_by_kind: BTreeMap<&'static str, u64>,
}

impl Sim {
    /// `n` nodes with ids `100 + i` ([`small_ids`]), all connected.
    pub fn new(n: usize, seed: u64, config: SyncConfig, net: NetConfig) -> Sim {
        Sim::with_ids(small_ids(n), seed, config, net)
    }

    /// One node per id (for example [`random_ids`]), all connected. Node `i` runs with seed
    /// `seed + i`.
    pub fn with_ids(ids: Vec<NodeId>, seed: u64, config: SyncConfig, net: NetConfig) -> Sim {
        let n = ids.len();
        let mut sim = Sim::unconnected(ids, seed, config, net);
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    sim.input(a, Input::PeerConnected(sim.ids[b]));
                }
            }
        }
        sim
    }

    fn unconnected(ids: Vec<NodeId>, seed: u64, config: SyncConfig, net: NetConfig) -> Sim {
        let n = ids.len();
        let durable = ids.iter().map(|id| empty_state(*id)).collect();
        let nodes = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                Some(Node::empty(
                    *id,
                    config.clone(),
                    seed.wrapping_add(i as u64),
                    START_MS,
                ))
            })
            .collect();
        Sim {
            now_ms: START_MS,
            rng: Rng::new(seed),
            seed,
            config,
            net,
            ids,
            nodes,
            durable,
            saved: vec![None; n],
            cut: BTreeSet::new(),
            mesh: None,
            dials: BinaryHeap::new(),
            pending_disconnects: Vec::new(),
            queue: BinaryHeap::new(),
            order: 0,
            restarts: 0,
            truth: Truth::default(),
            bytes_sent: 0,
            messages_sent: 0,
            bytes_by_kind: BTreeMap::new(),
            message_bytes_max: MESSAGE_BYTES_MAX,
            oversized_messages: 0,
            oversized_by_kind: BTreeMap::new(),
        }
    }

    /// One node per id, as [`Sim::with_ids`], but connected the way a fleet started with
    /// one bootstrap address each is: every node to node 0 (the seed) only. From there
    /// the nodes' own mesh maintenance ([`Output::Connect`]) makes the connections, each
    /// dial taking a round trip; a node redials the seed whenever it is not connected to
    /// it (as the transport redials its bootstrap list), and a restarted seed is redialled
    /// by everyone. Sends go to any linked node (the transport dials a member it is not
    /// connected to).
    pub fn with_seed_mesh(ids: Vec<NodeId>, seed: u64, config: SyncConfig, net: NetConfig) -> Sim {
        let n = ids.len();
        let mut sim = Sim::unconnected(ids, seed, config, net);
        sim.mesh = Some(BTreeSet::new());
        for i in 1..n {
            sim.connect(0, i);
        }
        sim
    }

    /// Whether nodes `a` and `b` are connected (in a full mesh: linked).
    pub fn connected(&self, a: usize, b: usize) -> bool {
        match &self.mesh {
            Some(mesh) => mesh.contains(&(a.min(b), a.max(b))),
            None => self.linked(a, b),
        }
    }

    /// Connections each node holds (its degree in the mesh).
    pub fn degrees(&self) -> Vec<usize> {
        (0..self.len())
            .map(|a| {
                (0..self.len())
                    .filter(|b| *b != a && self.connected(a, *b))
                    .count()
            })
            .collect()
    }

    /// Connects `a` and `b` (mesh mode) if both are up and linked both ways, telling both.
    fn connect(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        let Some(mesh) = &self.mesh else { return };
        if a == b || mesh.contains(&pair) || !self.linked(a, b) || !self.linked(b, a) {
            return;
        }
        self.mesh.as_mut().expect("mesh mode").insert(pair);
        self.input(a, Input::PeerConnected(self.ids[b]));
        self.input(b, Input::PeerConnected(self.ids[a]));
    }

    /// Drops the connection between `a` and `b` (mesh mode), telling whichever is up.
    fn disconnect(&mut self, a: usize, b: usize) {
        let pair = (a.min(b), a.max(b));
        if !self.mesh.as_mut().is_some_and(|m| m.remove(&pair)) {
            return;
        }
        self.input(a, Input::PeerDisconnected(self.ids[b]));
        self.input(b, Input::PeerDisconnected(self.ids[a]));
    }

    /// Mesh mode: every up node not connected to the seed and short of `mesh_peers`
    /// connections redials it (as the transport redials its bootstrap list).
    fn redial_seed(&mut self) {
        let mesh_peers = self.config.mesh_peers;
        let degrees = self.degrees();
        for (i, degree) in degrees.into_iter().enumerate().skip(1) {
            if mesh_peers == 0 || degree < mesh_peers {
                self.connect(0, i);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node is up")
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    pub fn up_nodes(&self) -> Vec<usize> {
        (0..self.len()).filter(|i| self.is_up(*i)).collect()
    }

    /// Messages waiting in the network (sent, not yet delivered or dropped).
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    fn linked(&self, a: usize, b: usize) -> bool {
        a != b && !self.cut.contains(&(a, b)) && self.is_up(a) && self.is_up(b)
    }

    /// Runs `f` on node `i` at the current time, then routes its outputs.
    pub fn with_node<R>(&mut self, i: usize, f: impl FnOnce(&mut Node, u64) -> R) -> R {
        let now = self.now_ms;
        let node = self.nodes[i].as_mut().expect("node is up");
        let result = f(node, now);
        self.route(i);
        self.check_node(i);
        for (a, b) in std::mem::take(&mut self.pending_disconnects) {
            self.disconnect(a, b);
        }
        result
    }

    fn input(&mut self, i: usize, input: Input) {
        if self.nodes[i].is_none() {
            return;
        }
        self.with_node(i, |node, now| node.handle(now, input));
    }

    /// Creates tenant `tenant` (named `t<tenant>`) at node `at` with node `home` as its
    /// home and, if given, a monthly request quota: the setup of every quota scenario.
    pub fn create_tenant(&mut self, at: usize, tenant: u64, home: usize, quota: Option<u64>) {
        let home = self.ids[home];
        self.with_node(at, |node, now| {
            node.edit_directory(
                now,
                "admin",
                Change::CreateTenant {
                    tenant: TenantId(tenant),
                    name: format!("t{tenant}"),
                    home,
                },
            )?;
            match quota {
                Some(limit) => node
                    .edit_directory(
                        now,
                        "admin",
                        Change::SetQuota {
                            tenant: TenantId(tenant),
                            metric: Metric::Requests,
                            period: PeriodKind::Month,
                            limit: Some(limit),
                        },
                    )
                    .map(drop),
                None => Ok(()),
            }
        })
        .expect("tenant and quota");
    }

    /// The setup of the quota scenarios: 2 s for the fleet to connect, tenant `tenant` created
    /// at node 0 with node 0 as its home and a monthly request quota of `quota`, 3 s for the
    /// grant to settle; returns the quota's counter key (this month's requests).
    pub fn settle_quota(&mut self, tenant: u64, quota: u64) -> CounterKey {
        self.run_for(2_000);
        self.create_tenant(0, tenant, 0, Some(quota));
        self.run_for(3_000);
        CounterKey::new(
            TenantId(tenant),
            Period::containing(PeriodKind::Month, self.now_ms),
            Metric::Requests,
        )
    }

    /// A local increment at node `i`, recorded in the truth.
    pub fn increment(&mut self, i: usize, key: CounterKey, amount: u64) {
        let id = self.ids[i];
        self.with_node(i, |node, now| node.increment(now, key, amount))
            .expect("increment");
        *self.truth.increments.entry((key, id)).or_default() += amount;
    }

    /// A consume at node `i`, recorded in the truth when it succeeds.
    pub fn consume(&mut self, i: usize, key: CounterKey, amount: u64) -> Result<(), EscrowError> {
        let result = self.with_node(i, |node, now| node.consume(now, key, amount));
        if result.is_ok() {
            *self.truth.consumed.entry(key).or_default() += amount;
        }
        result
    }

    /// A refund at node `i` (admitted work not delivered), recorded in the truth when it
    /// succeeds.
    pub fn refund(&mut self, i: usize, key: CounterKey, amount: u64) -> Result<(), EscrowError> {
        let result = self.with_node(i, |node, now| node.refund(now, key, amount));
        if result.is_ok() {
            *self.truth.consumed.entry(key).or_default() -= amount;
            *self.truth.refunded.entry(key).or_default() += amount;
        }
        result
    }

    fn route(&mut self, from: usize) {
        let Some(node) = self.nodes[from].as_mut() else {
            return;
        };
        // Persist before anything leaves (the driver's contract), then enforce the peers'
        // directory ops that batch made durable: commit, then promote, as the edge's writer.
        let changes = node.take_changes();
        let outputs = node.take_outputs();
        persist(&mut self.durable[from], &changes);
        node.promote(&changes.directory_through);
        for output in outputs {
            let (to, message) = match output {
                Output::Send { to, message } => (to, message),
                Output::Connect { to } => {
                    // A dial: a round trip later, if the link lets it through.
                    if self.mesh.is_some() {
                        if let Some(to) = self.ids.iter().position(|id| *id == to) {
                            let rtt = 2 * self.net.delay_max_ms;
                            self.dials.push(Reverse((self.now_ms + rtt, from, to)));
                        }
                    }
                    continue;
                }
                Output::Disconnect { to } => {
                    if let Some(to) = self.ids.iter().position(|id| *id == to) {
                        self.pending_disconnects.push((from, to));
                    }
                    continue;
                }
            };
            let bytes: Arc<[u8]> = message.encode().into();
            let kind = message.kind();
            if bytes.len() > self.message_bytes_max {
                // The transport drops it before it is sent; so does the simulator, and
                // counts it (convergence checks fail on any).
                self.oversized_messages += 1;
                *self.oversized_by_kind.entry(kind).or_default() += 1;
                continue;
            }
            if let Some(to) = self.ids.iter().position(|id| *id == to) {
                self.transmit(from, to, kind, &bytes);
            }
        }
    }

    fn transmit(&mut self, from: usize, to: usize, kind: &'static str, bytes: &Arc<[u8]>) {
        self.messages_sent += 1;
        self.bytes_sent += bytes.len() as u64;
        *self.bytes_by_kind.entry(kind).or_default() += bytes.len() as u64;
        if !self.linked(from, to) || self.rng.unit() < self.net.loss {
            return;
        }
        let copies = if self.rng.unit() < self.net.duplicate {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let spread = self.net.delay_max_ms - self.net.delay_min_ms + 1;
            let at_ms = self.now_ms + self.net.delay_min_ms + self.rng.below(spread);
            self.order += 1;
            self.queue.push(Reverse(Delivery {
                at_ms,
                order: self.order,
                from,
                to,
                bytes: Arc::clone(bytes),
            }));
        }
    }

    /// Advances virtual time to `until_ms`, delivering messages and ticking nodes.
    pub fn run_until(&mut self, until_ms: u64) {
        // Ticks at one instant: a node whose wakeup never advances would repeat them for
        // ever. (Deliveries cannot, with `delay_min_ms` ≥ 1 as in every `NetConfig` here:
        // each takes one message off the queue, and what it sends arrives later. So the
        // guard does not depend on how many messages one millisecond holds: tens of
        // thousands at N = 200.)
        let mut same_time_ticks = 0u32;
        let mut last_time = self.now_ms;
        loop {
            let next_delivery = self.queue.peek().map(|Reverse(d)| d.at_ms);
            let next_dial = self.dials.peek().map(|Reverse((at, ..))| *at);
            let next_tick = self
                .nodes
                .iter()
                .flatten()
                .map(|n| n.next_wakeup_ms())
                .min();
            let next = [next_delivery, next_dial, next_tick]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next.filter(|t| *t <= until_ms) else {
                break;
            };
            self.now_ms = self.now_ms.max(next);
            if self.now_ms != last_time {
                same_time_ticks = 0;
                last_time = self.now_ms;
            }
            if next_dial == Some(next) && next_delivery != Some(next) {
                let Reverse((_, a, b)) = self.dials.pop().expect("peeked");
                self.connect(a, b);
            } else if next_delivery == Some(next) {
                let Reverse(d) = self.queue.pop().expect("peeked");
                // A link cut while the message was in flight drops it.
                if self.linked(d.from, d.to) {
                    let message = Message::decode(&d.bytes, self.message_bytes_max)
                        .expect("own messages decode");
                    let from = self.ids[d.from];
                    self.input(d.to, Input::Message { from, message });
                }
            } else {
                same_time_ticks += 1;
                assert!(
                    same_time_ticks < 100_000,
                    "seed {}: time stuck at {} (a wakeup that never advances)",
                    self.seed,
                    self.now_ms
                );
                for i in 0..self.len() {
                    if self.nodes[i]
                        .as_ref()
                        .is_some_and(|n| n.next_wakeup_ms() <= self.now_ms)
                    {
                        self.input(i, Input::Tick);
                    }
                }
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    pub fn run_for(&mut self, ms: u64) {
        self.run_until(self.now_ms + ms);
    }

    /// Sets which directed links are cut, telling nodes about (dis)connections.
    pub fn set_cut(&mut self, cut: BTreeSet<(usize, usize)>) {
        if self.mesh.is_some() {
            // Connections over a link now cut die (the transport's pings find them);
            // nothing connects by itself when a link comes back but the seed's redial.
            self.cut = cut;
            let pairs: Vec<(usize, usize)> = self.mesh.iter().flatten().copied().collect();
            for (a, b) in pairs {
                if !self.linked(a, b) || !self.linked(b, a) {
                    self.disconnect(a, b);
                }
            }
            self.redial_seed();
            return;
        }
        let before: Vec<(usize, usize, bool)> = self
            .pairs()
            .map(|(a, b)| (a, b, self.linked(a, b)))
            .collect();
        self.cut = cut;
        for (a, b, was) in before {
            let now = self.linked(a, b);
            if was && !now {
                self.input(a, Input::PeerDisconnected(self.ids[b]));
            } else if !was && now {
                self.input(a, Input::PeerConnected(self.ids[b]));
            }
        }
    }

    fn pairs(&self) -> impl Iterator<Item = (usize, usize)> {
        let n = self.len();
        (0..n).flat_map(move |a| (0..n).filter(move |b| *b != a).map(move |b| (a, b)))
    }

    /// Cuts every link between the groups (links inside a group stay).
    pub fn partition(&mut self, groups: &[Vec<usize>]) {
        let group_of = |i: usize| groups.iter().position(|g| g.contains(&i));
        let cut = self
            .pairs()
            .filter(|(a, b)| group_of(*a) != group_of(*b))
            .collect();
        self.set_cut(cut);
    }

    /// Keeps only the given undirected links.
    pub fn only_links(&mut self, links: &[(usize, usize)]) {
        let keep: BTreeSet<(usize, usize)> = links
            .iter()
            .flat_map(|(a, b)| [(*a, *b), (*b, *a)])
            .collect();
        let cut = self.pairs().filter(|p| !keep.contains(p)).collect();
        self.set_cut(cut);
    }

    pub fn heal(&mut self) {
        self.set_cut(BTreeSet::new());
    }

    /// Crashes node `i`: its state as persisted so far is kept, everything else is lost.
    pub fn crash(&mut self, i: usize) {
        let Some(node) = self.nodes[i].take() else {
            return;
        };
        // Every step persisted its changes before its outputs left, so what is durable is
        // exactly the node's state.
        let state = node.state();
        let durable = &self.durable[i];
        assert!(
            durable.ledger.same_state(&state.ledger),
            "durable ledger differs from the node's"
        );
        assert!(
            durable.directory.same_state(&state.directory),
            "durable directory differs from the node's"
        );
        assert_eq!(
            durable.escrow.encode(),
            state.escrow.encode(),
            "durable escrow differs from the node's"
        );
        self.saved[i] = Some(durable.clone());
        if self.mesh.is_some() {
            for j in 0..self.len() {
                let pair = (i.min(j), i.max(j));
                if self.mesh.as_mut().is_some_and(|m| m.remove(&pair)) {
                    self.input(j, Input::PeerDisconnected(self.ids[i]));
                }
            }
            return;
        }
        for j in 0..self.len() {
            if j != i {
                self.input(j, Input::PeerDisconnected(self.ids[i]));
            }
        }
    }

    /// Restarts a crashed node from its persisted state (through its encodings, as the
    /// store would).
    pub fn restart(&mut self, i: usize) {
        let Some(state) = self.saved[i].take() else {
            return;
        };
        let state = NodeState {
            ledger: tessera_crdt::Ledger::decode(&state.ledger.encode()).expect("ledger decodes"),
            directory: tessera_crdt::Directory::decode(&state.directory.encode(), usize::MAX)
                .expect("directory decodes"),
            escrow: tessera_crdt::EscrowBook::decode(&state.escrow.encode())
                .expect("escrow decodes"),
        };
        self.restarts += 1;
        let seed = self.seed ^ (self.restarts << 32);
        self.nodes[i] = Some(Node::new(
            self.ids[i],
            self.config.clone(),
            seed,
            state,
            self.now_ms,
        ));
        if self.mesh.is_some() {
            self.redial_seed();
            return;
        }
        for j in 0..self.len() {
            if self.linked(i, j) {
                self.input(i, Input::PeerConnected(self.ids[j]));
                self.input(j, Input::PeerConnected(self.ids[i]));
            }
        }
    }

    /// Invariants that must hold at every step, checked on the node that just acted.
    fn check_node(&self, i: usize) {
        let Some(node) = self.nodes[i].as_ref() else {
            return;
        };
        for (key, counter) in node.escrow().iter() {
            assert!(
                counter.invariant_holds()
                    && counter.total_consumed() <= u128::from(counter.limit()),
                "seed {}: escrow invariant broken at node {i} for {key:?}: {counter:?}",
                self.seed
            );
        }
    }

    /// Every replica agrees with the others and with the truth, and no message was
    /// dropped for its size. Call after healing and a quiet period.
    pub fn assert_converged(&self, quotas: &BTreeMap<CounterKey, u64>) {
        assert_eq!(
            self.oversized_messages, 0,
            "seed {}: messages over the {}-byte frame limit were dropped: {:?}",
            self.seed, self.message_bytes_max, self.oversized_by_kind
        );
        let up = self.up_nodes();
        let first = self.node(up[0]);
        for &i in &up[1..] {
            let node = self.node(i);
            assert!(
                node.ledger().same_state(first.ledger()),
                "seed {}: ledgers differ ({} vs {})",
                self.seed,
                up[0],
                i
            );
            assert!(
                node.directory().same_state(first.directory()),
                "seed {}: directories differ",
                self.seed
            );
            assert!(
                node.directory().same_view(first.directory()),
                "seed {}: directory views differ",
                self.seed
            );
            if node.escrow() != first.escrow() {
                let differing: Vec<String> = first
                    .escrow()
                    .iter()
                    .filter(|(k, c)| node.escrow().get(k) != Some(*c))
                    .map(|(k, c)| {
                        format!(
                            "{k:?}:\n  {}: {c:?}\n  {i}: {:?}",
                            up[0],
                            node.escrow().get(k)
                        )
                    })
                    .collect();
                panic!(
                    "seed {}: escrow books differ ({} vs {i}):\n{}",
                    self.seed,
                    up[0],
                    differing.join("\n")
                );
            }
        }
        self.assert_truthful();
        // Ledger totals equal the sum of local increments.
        let mut totals: BTreeMap<CounterKey, u64> = BTreeMap::new();
        for ((key, _), amount) in &self.truth.increments {
            *totals.entry(*key).or_default() += amount;
        }
        for (key, total) in &totals {
            assert_eq!(
                first.ledger().total(key),
                *total,
                "seed {}: total of {key:?}",
                self.seed
            );
        }
        // Escrow: net consumption equals the successful consumes less the successful
        // refunds, never above the quota.
        for (key, consumed) in &self.truth.consumed {
            let counter = first
                .escrow()
                .get(key)
                .expect("consumed keys have counters");
            assert_eq!(
                counter.total_consumed(),
                u128::from(*consumed),
                "seed {}: consumed of {key:?}",
                self.seed
            );
            let refunded = self.truth.refunded.get(key).copied().unwrap_or(0);
            assert_eq!(
                counter.total_refunded(),
                u128::from(refunded),
                "seed {}: refunded of {key:?}",
                self.seed
            );
        }
        for (key, quota) in quotas {
            if let Some(counter) = first.escrow().get(key) {
                assert!(
                    counter.total_consumed() <= u128::from(*quota),
                    "seed {}: quota {quota} overrun: {counter:?}",
                    self.seed
                );
                // Usage declared as served without rights lifts the limit with the
                // consumption: never a spendable right above the quota. Rights held by
                // decommissioned members are granted again and never spent: not spendable.
                let stranded: u128 = first
                    .directory()
                    .decommissioned()
                    .map(|node| u128::from(counter.local_rights(node)))
                    .sum();
                let spendable = u128::from(counter.limit()) - stranded;
                assert!(
                    spendable <= u128::from(*quota).max(counter.total_consumed()),
                    "seed {}: rights created: limit {} less {stranded} stranded > quota {quota}",
                    self.seed,
                    counter.limit()
                );
            }
        }
    }

    /// No replica holds, for any origin, more than that origin really incremented: data
    /// is only ever attributed to the node that wrote it.
    pub fn assert_truthful(&self) {
        for i in self.up_nodes() {
            for (key, origin, slot) in self.node(i).ledger().slots() {
                let truth = self
                    .truth
                    .increments
                    .get(&(key, origin))
                    .copied()
                    .unwrap_or(0);
                assert!(
                    slot.value <= truth,
                    "seed {}: node {i} holds {} for {origin} on {key:?}, truth {truth}",
                    self.seed,
                    slot.value
                );
            }
        }
    }
}

/// The seeds a randomized suite runs: `TESSERA_SIM_SEED=n` replays one, otherwise
/// `TESSERA_SIM_SEEDS` (default `default_count`) seeds from 0.
pub fn seeds(default_count: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("TESSERA_SIM_SEED") {
        return vec![seed.parse().expect("TESSERA_SIM_SEED is a number")];
    }
    let count = std::env::var("TESSERA_SIM_SEEDS").map_or(default_count, |n| {
        n.parse().expect("TESSERA_SIM_SEEDS is a number")
    });
    (0..count).collect()
}

/// Runs `run` for each seed, printing the seed that fails so it can be replayed.
pub fn for_each_seed(default_count: u64, run: impl Fn(u64) + std::panic::RefUnwindSafe) {
    for seed in seeds(default_count) {
        let outcome = std::panic::catch_unwind(|| run(seed));
        if let Err(panic) = outcome {
            eprintln!("failing seed: {seed} (replay with TESSERA_SIM_SEED={seed})");
            std::panic::resume_unwind(panic);
        }
    }
}

/// A fresh node's persisted state.
pub fn empty_state(id: NodeId) -> NodeState {
    NodeState {
        ledger: tessera_crdt::Ledger::new(id),
        directory: tessera_crdt::Directory::new(id),
        escrow: tessera_crdt::EscrowBook::new(),
    }
}

/// Applies one batch of changes to a durable state, through the batch's encodings.
pub fn persist(state: &mut NodeState, changes: &Changes) {
    for delta in &changes.ledger {
        let delta = tessera_crdt::ledger::Delta::decode(&delta.encode()).expect("delta decodes");
        state.ledger.apply_delta(&delta).expect("delta applies");
    }
    for delta in &changes.directory {
        let delta = tessera_crdt::directory::DirectoryDelta::decode(&delta.encode(), usize::MAX)
            .expect("directory delta decodes");
        let report = state
            .directory
            .apply_delta(&delta)
            .expect("directory delta applies");
        assert_eq!(
            report.applied,
            delta.ops.len(),
            "persisted ops apply in order"
        );
    }
    for (key, counter) in &changes.escrow {
        let counter =
            tessera_crdt::BoundedCounter::decode(&counter.encode()).expect("counter decodes");
        state.escrow.merge_counter(*key, &counter);
    }
    for settlement in &changes.settled {
        let settlement =
            tessera_crdt::Settlement::decode(&settlement.encode()).expect("settlement decodes");
        state.ledger.apply_settlement(settlement);
    }
    for origin in &changes.retired {
        state.ledger.retire(*origin);
    }
    if let Some(through_ms) = changes.escrow_forgotten_through_ms {
        state.escrow.forget_through(through_ms, usize::MAX);
    }
    if let Some(before_ms) = changes.settlements_forgotten_before_ms {
        state.ledger.forget_settled(before_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crdt::Period;

    fn key(tenant: u64) -> CounterKey {
        CounterKey::new(
            TenantId(tenant),
            Period::containing(PeriodKind::Month, START_MS),
            Metric::Requests,
        )
    }

    #[test]
    fn random_ids_are_distinct_large_and_replayable() {
        let ids = random_ids(200, 7);
        assert_eq!(ids, random_ids(200, 7));
        assert_ne!(ids, random_ids(200, 8));
        assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 200);
        // Production-sized: most need the full 9–10 varint bytes.
        let large = ids.iter().filter(|id| id.0 >= 1 << 56).count();
        assert!(large > 150, "{large}");
        let sim = Sim::with_ids(ids.clone(), 7, fast_config(), NetConfig::perfect());
        assert_eq!(sim.ids, ids);
        assert_eq!(sim.node(3).id(), ids[3]);
    }

    #[test]
    fn oversized_messages_are_counted_and_dropped_like_the_transport_drops_them() {
        let mut sim = Sim::new(3, 1, fast_config(), NetConfig::perfect());
        sim.run_for(1_000);
        let pushed = |sim: &Sim| sim.bytes_by_kind.get("ledger_push").copied();
        let before = pushed(&sim);
        // One push of 60 slots (a chunk holds 64) is far over a 200-byte frame limit:
        // dropped, counted once per peer it was for (two), never sent. A pull answered meanwhile carries the same slots: dropped too. Nothing
        // else here is that large.
        sim.message_bytes_max = 200;
        for t in 0..60 {
            sim.increment(0, key(t), 1);
        }
        sim.run_for(fast_config().push_delay_ms + 10);
        assert_eq!(sim.oversized_by_kind.get("ledger_push"), Some(&2));
        let chunks = sim.oversized_by_kind.get("ledger_chunk").copied();
        assert_eq!(
            sim.oversized_messages,
            2 + chunks.unwrap_or(0),
            "{:?}",
            sim.oversized_by_kind
        );
        assert_eq!(pushed(&sim), before, "nothing of it was sent");
        assert_eq!(sim.node(1).ledger().total(&key(0)), 0, "nothing arrived");
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            sim.assert_converged(&BTreeMap::new())
        }));
        assert!(outcome.is_err(), "a dropped message fails convergence");
    }

    #[test]
    fn the_wan_network_is_slower_than_the_perfect_one_and_loses_nothing() {
        let wan = NetConfig::wan();
        assert!(wan.delay_min_ms >= 20 && wan.delay_max_ms <= 60);
        assert_eq!((wan.loss, wan.duplicate), (0.0, 0.0));
        let mut sim = Sim::new(2, 3, fast_config(), wan);
        sim.run_for(1_000);
        sim.increment(0, key(1), 5);
        let config = fast_config();
        sim.run_for(config.push_delay_ms + 19);
        assert_eq!(sim.node(1).ledger().total(&key(1)), 0, "not before 20 ms");
        sim.run_for(41);
        assert_eq!(sim.node(1).ledger().total(&key(1)), 5);
        sim.assert_converged(&BTreeMap::new());
    }
}
