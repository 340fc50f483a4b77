//! Issue #13's fleet-scale scenarios on the simulator, shared by the bench that measures
//! them (`benches/fleet_scale.rs`, every N, one seed, a table) and the tests that hold
//! them to the goals in CI (`tests/fleet.rs`, N = 50, a few seeds, smaller sizes).
//!
//! Why here rather than in the bench: the bench is not built by `cargo test`, so a
//! scenario that lives only there is never checked in CI, and a copy in the tests drifts
//! from what the bench measures (the figures of docs/BENCHMARKS.md). One definition, sized
//! by its caller: the bench passes the sizes its doc states ([`QUOTA`], [`HEAL_WRITE_MS`]),
//! the tests smaller ones.
//!
//! Every run: the fleet is [`fleet`] (N nodes, default `SyncConfig`, random 64-bit ids
//! from the seed, a [`Net`], the mesh the nodes build from one seed address); the traffic draws from its own stream ([`traffic_rng`]), so
//! the same seed gives the same network, the same nodes and the same traffic.
//!
//! - [`liveness`]: one tenant, home node 0, a monthly request quota set at the home;
//!   [`SETUP_MS`] later, one request per simulated ms (1,000/s) offered in a [`Shape`],
//!   each admitted by `consume` then billed (a ledger increment), as the edge does;
//!   refused requests are not retried. The *ideal time* is quota / rate: what admitting
//!   the whole quota takes if rights were never the bottleneck. Reported: what was
//!   admitted by 1x, 1.5x and 3x the ideal time. Safety is asserted at every simulated
//!   ms: the true consumption never exceeds the quota (and the simulator checks each
//!   node's net consumption against its limit at every step).
//! - [`heal`]: wan; halves `0..N/2` and `N/2..N` partitioned; every node increments one
//!   key every [`HEAL_WRITE_EVERY_MS`] for the write time, then [`HEAL_QUIET_MS`] quiet
//!   (each half converges within itself, asserted), then the heal. Reported: bytes of
//!   every message sent from the heal until every ledger version vector is the same
//!   (equal ledgers then asserted), and the *minimum*: each node receiving, once, exactly
//!   the entries of the other half it lacks, as encoded `LedgerChunk`s in the fewest
//!   chunks the protocol allows (`ledger_entries_max` each), summed over receivers.

use std::collections::BTreeMap;

use tessera_crdt::{CounterKey, Metric, Period, PeriodKind, TenantId};

use super::{random_ids, NetConfig, Sim, START_MS};
use crate::rng::{mix, Rng};
use crate::{Message, SyncConfig};

/// The bench's monthly request quota Q (an ideal time of 10 s).
pub const QUOTA: u64 = 10_000;
/// Requests offered per second: one per simulated millisecond.
pub const RATE_PER_S: u64 = 1_000;
/// From the quota set at the home to the first request.
pub const SETUP_MS: u64 = 10_000;
/// How often the moving traffic shape picks another node.
pub const MOVE_EVERY_MS: u64 = 2_000;
/// The bench's write time before a heal (with [`HEAL_QUIET_MS`], a 20 s partition).
pub const HEAL_WRITE_MS: u64 = 19_000;
/// Quiet time between the last write and the heal.
pub const HEAL_QUIET_MS: u64 = 1_000;
/// Every node writes one key this often while partitioned.
pub const HEAL_WRITE_EVERY_MS: u64 = 100;
/// Tenants the partitioned writes draw from (metrics: all four).
pub const HEAL_TENANTS: u64 = 1_000;
/// How often convergence is checked after the heal.
pub const HEAL_POLL_MS: u64 = 10;
/// How long after the heal convergence is waited for.
pub const HEAL_WAIT_MS: u64 = 120_000;
/// The busy tenant of the liveness runs.
pub const TENANT: u64 = 1;

/// The escrow message kinds (as `Sim::bytes_by_kind` names them).
pub const ESCROW_KINDS: [&str; 6] = [
    "escrow_push",
    "escrow_digest",
    "escrow_buckets",
    "escrow_counters",
    "rights_request",
    "rights_reply",
];

/// `tenant`'s counter of `metric` in the month the simulator starts in.
pub fn key(tenant: u64, metric: Metric) -> CounterKey {
    CounterKey::new(
        TenantId(tenant),
        Period::containing(PeriodKind::Month, START_MS),
        metric,
    )
}

/// The traffic's own random stream (the network's is the simulator's).
pub fn traffic_rng(seed: u64, salt: u64) -> Rng {
    Rng::new(mix(seed ^ mix(salt)))
}

/// The networks of the scenarios ([`NetConfig`]'s presets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Net {
    /// 1–5 ms one way.
    Perfect,
    /// 20–60 ms one way, no loss.
    Wan,
    /// 1–200 ms one way, 20% lost, 10% duplicated.
    Faulty,
}

impl Net {
    /// The simulator's settings for this network.
    pub fn config(self) -> NetConfig {
        match self {
            Net::Perfect => NetConfig::perfect(),
            Net::Wan => NetConfig::wan(),
            Net::Faulty => NetConfig::faulty(),
        }
    }
}

/// Where the liveness traffic arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Shape {
    /// All at node 1 (never the home).
    OneNode,
    /// Nodes 1, 2, 3 in turn, a third each.
    ThreeNodes,
    /// One node at a time, another drawn every [`MOVE_EVERY_MS`] from the seed, starting
    /// at node 1.
    Moving,
}

/// `n` nodes with random ids from `seed`, default `SyncConfig`, on `net`, connected as a
/// production fleet started from one seed address is: each node given node 0 only, the
/// mesh built by the nodes themselves ([`Sim::with_seed_mesh`]: degree 8 to 16, pruned and
/// shuffled by the core), pushes relayed over it.
pub fn fleet(n: usize, seed: u64, net: Net) -> Sim {
    Sim::with_seed_mesh(
        random_ids(n, seed),
        seed,
        SyncConfig::default(),
        net.config(),
    )
}

/// What a run dropped for its size, by kind.
pub type Oversized = BTreeMap<&'static str, u64>;

/// What a [`liveness`] run saw.
#[derive(Clone, Debug)]
pub struct Liveness {
    /// The quota the run was given.
    pub quota: u64,
    /// Admitted by 1x, 1.5x and 3x the ideal time.
    pub admitted: [u64; 3],
    /// Most cells any replica holds in the counter at the end.
    pub cells: usize,
    /// That counter's encoded bytes.
    pub counter_bytes: usize,
    /// `escrow_push` bytes per second during the ideal time.
    pub escrow_push_bytes_per_s: f64,
    /// Every [`ESCROW_KINDS`] together, per second during the ideal time.
    pub escrow_bytes_per_s: f64,
    /// Messages dropped for their size.
    pub oversized: Oversized,
}

impl Liveness {
    /// The ideal time: the quota at [`RATE_PER_S`].
    pub fn ideal_ms(&self) -> u64 {
        ideal_ms(self.quota)
    }
}

fn ideal_ms(quota: u64) -> u64 {
    quota * 1_000 / RATE_PER_S
}

/// The liveness scenario (see the module doc) with a quota of `quota` requests, at `n`
/// nodes (at least 4: the home and three traffic nodes).
pub fn liveness(n: usize, seed: u64, shape: Shape, net: Net, quota: u64) -> Liveness {
    assert!(
        n >= 4,
        "the 3-node shape needs nodes 1 to 3 besides the home"
    );
    let mut sim = fleet(n, seed, net);
    sim.create_tenant(0, TENANT, 0, Some(quota));
    sim.run_for(SETUP_MS);
    let k = key(TENANT, Metric::Requests);
    let ideal = ideal_ms(quota);
    let mut rng = traffic_rng(seed, 1);
    let mut busy = 1;
    let mut admitted = 0u64;
    let mut at_marks = [0u64; 3];
    let marks_ms = [ideal, ideal * 3 / 2, ideal * 3];
    let before = sim.bytes_by_kind.clone();
    let mut window_bytes = BTreeMap::new();
    for t in 0..marks_ms[2] {
        let at = match shape {
            Shape::OneNode => 1,
            Shape::ThreeNodes => 1 + (t % 3) as usize,
            Shape::Moving => {
                if t > 0 && t % MOVE_EVERY_MS == 0 {
                    // Another node than the busy one, uniformly.
                    busy = (busy + 1 + rng.below(n as u64 - 1) as usize) % n;
                }
                busy
            }
        };
        if sim.consume(at, k, 1).is_ok() {
            admitted += 1;
            sim.increment(at, k, 1);
        }
        sim.run_for(1);
        let consumed = sim.truth.consumed.get(&k).copied().unwrap_or(0);
        assert!(
            consumed <= quota && admitted == consumed,
            "seed {seed}: {consumed} consumed ({admitted} admitted) against a quota of {quota} \
             after {} ms of traffic",
            t + 1
        );
        for (mark, at_ms) in marks_ms.iter().enumerate() {
            if t + 1 == *at_ms {
                at_marks[mark] = admitted;
            }
        }
        if t + 1 == ideal {
            window_bytes = sim.bytes_by_kind.clone();
        }
    }
    let grew = |kind: &str| {
        window_bytes.get(kind).copied().unwrap_or(0) - before.get(kind).copied().unwrap_or(0)
    };
    let window_s = ideal as f64 / 1_000.0;
    let (cells, counter_bytes) = sim
        .up_nodes()
        .into_iter()
        .filter_map(|i| sim.node(i).escrow().get(&k).cloned())
        .map(|c| (c.cell_count(), c.encoded_len()))
        .max()
        .unwrap_or((0, 0));
    Liveness {
        quota,
        admitted: at_marks,
        cells,
        counter_bytes,
        escrow_push_bytes_per_s: grew("escrow_push") as f64 / window_s,
        escrow_bytes_per_s: ESCROW_KINDS.iter().map(|k| grew(k)).sum::<u64>() as f64 / window_s,
        oversized: sim.oversized_by_kind.clone(),
    }
}

/// What a [`heal`] run saw.
#[derive(Clone, Debug)]
pub struct Heal {
    /// Bytes sent cluster-wide from the heal until equal version vectors everywhere.
    pub bytes: u64,
    /// The minimum (see the module doc).
    pub minimum_bytes: u64,
    /// From the heal to identical version vectors everywhere (`None`: not within
    /// [`HEAL_WAIT_MS`]).
    pub converged_ms: Option<u64>,
    /// Messages dropped for their size.
    pub oversized: Oversized,
}

impl Heal {
    /// Measured bytes over the minimum.
    pub fn ratio(&self) -> f64 {
        self.bytes as f64 / self.minimum_bytes as f64
    }
}

/// The heal scenario (see the module doc) at `n` nodes, with `write_ms` of partitioned
/// writes before [`HEAL_QUIET_MS`] of quiet and the heal.
pub fn heal(n: usize, seed: u64, write_ms: u64) -> Heal {
    let mut sim = fleet(n, seed, Net::Wan);
    sim.run_for(5_000);
    let (a, b): (Vec<usize>, Vec<usize>) = (0..n).partition(|i| *i < n / 2);
    sim.partition(&[a.clone(), b.clone()]);
    let mut rng = traffic_rng(seed, 3);
    for _ in 0..write_ms / HEAL_WRITE_EVERY_MS {
        for i in 0..n {
            let tenant = rng.below(HEAL_TENANTS);
            let metric = Metric::ALL[rng.below(Metric::ALL.len() as u64) as usize];
            sim.increment(i, key(tenant, metric), 1 + rng.below(100));
        }
        sim.run_for(HEAL_WRITE_EVERY_MS);
    }
    sim.run_for(HEAL_QUIET_MS);
    for half in [&a, &b] {
        for i in &half[1..] {
            assert!(
                sim.node(*i).ledger().same_state(sim.node(half[0]).ledger()),
                "seed {seed}: a half did not converge within itself before the heal"
            );
        }
    }
    // Per receiver: the entries it lacks, from a node of the other half, in chunks.
    let entries_max = sim.config.ledger_entries_max;
    let mut minimum_bytes = 0u64;
    for (receivers, provider) in [(&a, b[0]), (&b, a[0])] {
        for r in receivers {
            let have = sim.node(*r).ledger().version_vector().clone();
            for delta in sim.node(provider).ledger().chunks_since(have, entries_max) {
                let chunk = Message::LedgerChunk { delta, more: false };
                minimum_bytes += chunk.encode().len() as u64;
            }
        }
    }
    let before = sim.bytes_sent;
    let healed_at = sim.now_ms;
    sim.heal();
    let mut converged_ms = None;
    while sim.now_ms < healed_at + HEAL_WAIT_MS {
        sim.run_for(HEAL_POLL_MS);
        let first = sim.node(0).ledger().version_vector().clone();
        if (1..n).all(|i| *sim.node(i).ledger().version_vector() == first) {
            converged_ms = Some(sim.now_ms - healed_at);
            break;
        }
    }
    let bytes = sim.bytes_sent - before;
    if converged_ms.is_some() {
        for i in 1..n {
            assert!(
                sim.node(i).ledger().same_state(sim.node(0).ledger()),
                "seed {seed}: equal version vectors, different ledgers"
            );
        }
    }
    Heal {
        bytes,
        minimum_bytes,
        converged_ms,
        oversized: sim.oversized_by_kind.clone(),
    }
}
