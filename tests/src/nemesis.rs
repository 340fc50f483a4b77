//! The seeded nemesis: a schedule of faults, `(at_ms, Fault)`, drawn from one seed, so a
//! failing run is replayed exactly by its seed (`FAULT_SEED=<n>`).
//!
//! A schedule mixes partitions of every shape ([`Shape`]: halves, one node isolated, a
//! bridge, a ring) of both kinds ([`CutKind`]: the sender fails at once, or packets vanish
//! and TCP backs off), degraded links (delay, jitter, loss, duplication), kill -9 with a
//! restart, SIGSTOP pauses, and, rarely, a wipe (the node returns as a new identity). Every
//! fault is undone before [`Schedule::heal_ms`], where one final [`Fault::Heal`] stands,
//! followed by a quiet period with every node running and every link healthy: that is
//! where the checker measures convergence.
//!
//! The generator is pure (no clock, no OS randomness): the PRNG is splitmix64, written
//! here so the schedule for a seed never changes with a dependency's version.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::history::NodeIndex;

/// splitmix64 (Steele, Lea, Flood 2014): small, fast, and enough to draw a schedule.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    /// One of `items`, which must not be empty.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() as u64) as usize]
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.range(0, i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// How a cut link fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CutKind {
    /// The sender learns at once (proxy: connection reset; netns: blackhole route).
    Reset,
    /// Packets silently vanish, as on a real cut: TCP backs off and nobody is told.
    Drop,
}

/// The shape of a partition, over the cluster's nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case")]
pub enum Shape {
    /// Two sides, neither reaching the other.
    Halves,
    /// One node reaches nobody and nobody reaches it.
    Isolated { node: NodeIndex },
    /// Two sides that only reach each other through `bridge`, which reaches both.
    Bridge { bridge: NodeIndex },
    /// Each node reaches only its neighbours on a ring. On three nodes, where every pair
    /// is neighbours, the ring is one-way: each node reaches only the next one.
    Ring,
}

/// A degraded link: what the userspace proxy does to each chunk it forwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkFaults {
    pub delay_ms: u64,
    pub jitter_ms: u64,
    pub loss_percent: u8,
    pub dup_percent: u8,
}

/// One thing the nemesis does. Links are directed: `(from, to)` is the traffic `from`
/// sends to `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Cut every directed link in `cut` (the shape's complement of what may talk).
    Partition {
        kind: CutKind,
        shape: Shape,
        cut: Vec<(NodeIndex, NodeIndex)>,
    },
    /// Degrade one directed link.
    Link {
        from: NodeIndex,
        to: NodeIndex,
        faults: LinkFaults,
    },
    /// Every partition and every degraded link undone.
    Heal,
    /// SIGKILL.
    Kill { node: NodeIndex },
    /// SIGKILL, then the data directory removed: the next [`Fault::Restart`] brings the
    /// node back as a new identity.
    Wipe { node: NodeIndex },
    /// Start a killed or wiped node again, on the same address.
    Restart { node: NodeIndex },
    /// SIGSTOP.
    Pause { node: NodeIndex },
    /// SIGCONT.
    Resume { node: NodeIndex },
}

/// The directed links a partition of `shape` over `nodes` nodes cuts. `sides` orders the
/// nodes for the shapes that need a choice (which half, which side of the bridge, the
/// ring's order): a permutation of `0..nodes`.
pub fn cut_links(nodes: usize, shape: Shape, sides: &[NodeIndex]) -> Vec<(NodeIndex, NodeIndex)> {
    let reaches: Box<dyn Fn(NodeIndex, NodeIndex) -> bool> = match shape {
        Shape::Halves => {
            let left: BTreeSet<_> = sides[..nodes / 2].iter().copied().collect();
            Box::new(move |a, b| left.contains(&a) == left.contains(&b))
        }
        Shape::Isolated { node } => Box::new(move |a, b| a != node && b != node),
        Shape::Bridge { bridge } => {
            let others: Vec<_> = sides.iter().copied().filter(|&n| n != bridge).collect();
            let left: BTreeSet<_> = others[..others.len() / 2].iter().copied().collect();
            Box::new(move |a, b| {
                a == bridge || b == bridge || left.contains(&a) == left.contains(&b)
            })
        }
        Shape::Ring => {
            let position: BTreeMap<_, _> = sides.iter().enumerate().map(|(i, &n)| (n, i)).collect();
            Box::new(move |a, b| {
                let (pa, pb) = (position[&a], position[&b]);
                let next = |p: usize| (p + 1) % nodes;
                if nodes <= 3 {
                    next(pa) == pb
                } else {
                    next(pa) == pb || next(pb) == pa
                }
            })
        }
    };
    let mut cut = Vec::new();
    for a in 0..nodes {
        for b in 0..nodes {
            if a != b && !reaches(a, b) {
                cut.push((a, b));
            }
        }
    }
    cut
}

/// What a node is doing, as the faults applied so far left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    Running,
    Paused,
    Down,
}

/// The cluster as a sequence of faults leaves it: used to check a schedule, and by the
/// checker to know when the network was healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterState {
    pub nodes: Vec<NodeState>,
    pub cut: BTreeSet<(NodeIndex, NodeIndex)>,
    pub degraded: BTreeSet<(NodeIndex, NodeIndex)>,
}

impl ClusterState {
    pub fn new(nodes: usize) -> Self {
        Self {
            nodes: vec![NodeState::Running; nodes],
            cut: BTreeSet::new(),
            degraded: BTreeSet::new(),
        }
    }

    pub fn apply(&mut self, fault: &Fault) {
        match fault {
            Fault::Partition { cut, .. } => self.cut.extend(cut.iter().copied()),
            Fault::Link { from, to, .. } => {
                self.degraded.insert((*from, *to));
            }
            Fault::Heal => {
                self.cut.clear();
                self.degraded.clear();
            }
            Fault::Kill { node } | Fault::Wipe { node } => self.nodes[*node] = NodeState::Down,
            Fault::Restart { node } | Fault::Resume { node } => {
                self.nodes[*node] = NodeState::Running
            }
            Fault::Pause { node } => self.nodes[*node] = NodeState::Paused,
        }
    }

    /// Every node running, no link cut or degraded.
    pub fn is_healthy(&self) -> bool {
        self.cut.is_empty()
            && self.degraded.is_empty()
            && self.nodes.iter().all(|&s| s == NodeState::Running)
    }
}

/// The knobs of a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub nodes: usize,
    /// The whole run, faults and quiet period.
    pub run_ms: u64,
    /// No fault before this: the cluster forms, the quota is set and known everywhere.
    pub warmup_ms: u64,
    /// After the final heal: every node running, every link healthy.
    pub quiet_ms: u64,
}

impl Plan {
    /// A run of `run_s` seconds on `nodes` nodes: 3 s of warm-up, a quiet third (at least
    /// 8 s) at the end.
    pub fn new(nodes: usize, run_s: u64) -> Self {
        let run_ms = run_s * 1000;
        Self {
            nodes,
            run_ms,
            warmup_ms: 3000,
            quiet_ms: (run_ms / 3).max(8000),
        }
    }
}

/// A seed's schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub seed: u64,
    pub plan: Plan,
    /// Sorted by time; the last is the final [`Fault::Heal`] at `heal_ms`.
    pub faults: Vec<(u64, Fault)>,
    pub heal_ms: u64,
}

/// The shortest and longest a network fault lasts.
const NET_FAULT_MS: (u64, u64) = (1000, 7000);
/// The longest the final partition lasts (it may span most of a short run's faults).
const FINAL_PARTITION_MS_MAX: u64 = 15_000;
/// The shortest and longest a process stays killed or paused.
const PROC_FAULT_MS: (u64, u64) = (500, 5000);

impl Schedule {
    /// Draws the schedule for `seed`. Panics if the plan leaves no time for faults or has
    /// fewer than 3 nodes (the bridge needs two sides and a bridge).
    pub fn generate(seed: u64, plan: Plan) -> Self {
        assert!(plan.nodes >= 3, "a schedule needs at least 3 nodes");
        assert!(
            plan.warmup_ms + plan.quiet_ms + NET_FAULT_MS.0 < plan.run_ms,
            "no time left for faults in {plan:?}"
        );
        let heal_ms = plan.run_ms - plan.quiet_ms;
        let mut rng = Rng::new(seed);
        let mut faults = network_track(&mut rng, plan, heal_ms);
        // Independent process tracks, each over its own nodes, so at most `tracks` nodes
        // are down or paused at once and a majority always runs.
        let tracks = (plan.nodes - 1) / 2;
        let mut wiped = false;
        for track in 0..tracks {
            let mine: Vec<NodeIndex> = (0..plan.nodes).filter(|n| n % tracks == track).collect();
            faults.extend(process_track(&mut rng, plan, heal_ms, &mine, &mut wiped));
        }
        // Stable: a fault and its undo at the same instant keep their order.
        faults.sort_by_key(|(at, _)| *at);
        faults.push((heal_ms, Fault::Heal));
        Self {
            seed,
            plan,
            faults,
            heal_ms,
        }
    }

    /// How many faults (undos and the final heal not counted).
    pub fn fault_count(&self) -> usize {
        self.faults
            .iter()
            .filter(|(_, f)| {
                !matches!(
                    f,
                    Fault::Heal | Fault::Restart { .. } | Fault::Resume { .. }
                )
            })
            .count()
    }
}

/// One track of back-to-back episodes from the warm-up to the heal: a gap drawn from
/// `gap_ms`, then the faults `draw` gives, then its undo `len_ms` later (cut short before
/// the heal).
fn track(
    rng: &mut Rng,
    plan: Plan,
    heal_ms: u64,
    gap_ms: (u64, u64),
    len_ms: (u64, u64),
    mut draw: impl FnMut(&mut Rng) -> (Vec<Fault>, Fault),
) -> Vec<(u64, Fault)> {
    let mut out = Vec::new();
    let mut t = plan.warmup_ms;
    loop {
        t += rng.range(gap_ms.0, gap_ms.1);
        if t + len_ms.0 >= heal_ms {
            return out;
        }
        let end = (t + rng.range(len_ms.0, len_ms.1)).min(heal_ms - 1);
        let (faults, undo) = draw(rng);
        out.extend(faults.into_iter().map(|f| (t, f)));
        out.push((end, undo));
        t = end;
    }
}

/// A partition of a random shape and kind.
fn partition(rng: &mut Rng, nodes: usize) -> Fault {
    let kind = rng.pick(&[CutKind::Reset, CutKind::Drop]);
    let mut sides: Vec<NodeIndex> = (0..nodes).collect();
    rng.shuffle(&mut sides);
    let shape = match rng.range(0, 4) {
        0 => Shape::Halves,
        1 => Shape::Isolated { node: sides[0] },
        2 => Shape::Bridge { bridge: sides[0] },
        _ => Shape::Ring,
    };
    let cut = cut_links(nodes, shape, &sides);
    Fault::Partition { kind, shape, cut }
}

/// Partitions and degraded links, one at a time; the last episode is a partition that the
/// final heal ends (so convergence is measured from a partition's heal, not from a heal
/// of a network that was already whole).
fn network_track(rng: &mut Rng, plan: Plan, heal_ms: u64) -> Vec<(u64, Fault)> {
    let nodes = plan.nodes;
    let mut out = track(rng, plan, heal_ms, (300, 2000), NET_FAULT_MS, |rng| {
        if rng.chance(65) {
            (vec![partition(rng, nodes)], Fault::Heal)
        } else {
            let links = (0..rng.range(1, 4))
                .map(|_| {
                    let from = rng.range(0, nodes as u64) as NodeIndex;
                    let to = (from + rng.range(1, nodes as u64) as NodeIndex) % nodes;
                    let faults = LinkFaults {
                        delay_ms: rng.range(0, 200),
                        jitter_ms: rng.range(0, 100),
                        loss_percent: rng.range(0, 30) as u8,
                        dup_percent: rng.range(0, 20) as u8,
                    };
                    Fault::Link { from, to, faults }
                })
                .collect();
            (links, Fault::Heal)
        }
    });
    // The last episode's undo gives way to a partition lasting until the final heal: from
    // then, or longer (up to FINAL_PARTITION_MS_MAX, over the episodes before it), since
    // what a long silent cut does to reconnection is what convergence must survive.
    let last_undo = match out.last() {
        Some((at, Fault::Heal)) => {
            let at = *at;
            out.pop();
            at
        }
        _ => heal_ms,
    };
    let len_ms = rng.range(NET_FAULT_MS.0, FINAL_PARTITION_MS_MAX);
    let start = last_undo.min(heal_ms - len_ms).max(plan.warmup_ms);
    // What would have happened in the network from then on is replaced (a heal inside the
    // final partition would end it); an episode still open then joins it until the heal.
    out.retain(|(at, _)| *at < start);
    out.push((start, partition(rng, nodes)));
    out
}

/// Kills, pauses and (at most once per schedule) a wipe, one node of `nodes` at a time.
fn process_track(
    rng: &mut Rng,
    plan: Plan,
    heal_ms: u64,
    nodes: &[NodeIndex],
    wiped: &mut bool,
) -> Vec<(u64, Fault)> {
    track(rng, plan, heal_ms, (1000, 4000), PROC_FAULT_MS, |rng| {
        let node = rng.pick(nodes);
        let roll = rng.range(0, 100);
        let (fault, undo) = if roll < 5 && !*wiped {
            *wiped = true;
            (Fault::Wipe { node }, Fault::Restart { node })
        } else if roll < 55 {
            (Fault::Kill { node }, Fault::Restart { node })
        } else {
            (Fault::Pause { node }, Fault::Resume { node })
        };
        (vec![fault], undo)
    })
}

/// The seeds to run: `FAULT_SEED=<n>` alone when set (a replay); otherwise `fixed`, then
/// `drawn` seeds drawn from the clock and the process id. Each is printed, so a failing run
/// in CI names the seed to replay.
pub fn seeds(fixed: &[u64], drawn: usize) -> Vec<u64> {
    if let Ok(text) = std::env::var("FAULT_SEED") {
        let seed = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FAULT_SEED={text:?} is not a u64"));
        eprintln!("FAULT_SEED={seed} (replay)");
        return vec![seed];
    }
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    let mut rng = Rng::new(clock ^ u64::from(std::process::id()).rotate_left(32));
    let seeds: Vec<u64> = fixed
        .iter()
        .copied()
        .chain((0..drawn).map(|_| rng.next_u64() >> 16))
        .collect();
    eprintln!("fault seeds this run: {seeds:?} (replay one with FAULT_SEED=<n>)");
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_draws_the_same_schedule() {
        let plan = Plan::new(3, 30);
        assert_eq!(Schedule::generate(42, plan), Schedule::generate(42, plan));
        assert_ne!(
            Schedule::generate(42, plan).faults,
            Schedule::generate(43, plan).faults
        );
    }

    #[test]
    fn every_schedule_ends_healed_with_every_node_running() {
        for nodes in [3, 4, 5] {
            for seed in 0..300 {
                let s = Schedule::generate(seed, Plan::new(nodes, 30));
                assert!(s.faults.windows(2).all(|w| w[0].0 <= w[1].0));
                assert_eq!(s.faults.last(), Some(&(s.heal_ms, Fault::Heal)));
                assert!(s.faults.iter().all(|(at, _)| *at >= s.plan.warmup_ms));
                let mut state = ClusterState::new(nodes);
                let mut down_max = 0;
                for (at, fault) in &s.faults {
                    // Nothing is left to undo at the final heal but the network, and
                    // it heals a partition.
                    if *at == s.heal_ms {
                        assert!(state.nodes.iter().all(|&n| n == NodeState::Running));
                        assert!(
                            !state.cut.is_empty(),
                            "seed {seed}: the final heal heals a cut"
                        );
                    }
                    state.apply(fault);
                    let down = state.nodes.iter().filter(|&&n| n != NodeState::Running);
                    down_max = down_max.max(down.count());
                }
                assert!(
                    state.is_healthy(),
                    "seed {seed} on {nodes} nodes: {state:?}"
                );
                assert!(down_max <= (nodes - 1) / 2, "a majority always runs");
                assert!(s.fault_count() > 3, "seed {seed}: too quiet");
            }
        }
    }

    #[test]
    fn schedules_mix_every_kind_of_fault() {
        let mut seen = BTreeSet::new();
        for seed in 0..100 {
            for (_, fault) in Schedule::generate(seed, Plan::new(3, 30)).faults {
                let name = match fault {
                    Fault::Partition { kind, shape, .. } => format!("{kind:?} {shape:?}")
                        .split(' ')
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => format!("{other:?}").split(' ').next().unwrap().to_owned(),
                };
                seen.insert(name);
            }
        }
        for kind in ["Reset", "Drop"] {
            for shape in ["Halves", "Isolated", "Bridge", "Ring"] {
                assert!(
                    seen.contains(&format!("{kind} {shape}")),
                    "{kind} {shape} in {seen:?}"
                );
            }
        }
        for other in ["Link", "Kill", "Wipe", "Pause", "Restart", "Resume", "Heal"] {
            assert!(seen.contains(other), "{other} in {seen:?}");
        }
    }

    /// Who can send to whom once `cut` is applied.
    fn reach(nodes: usize, cut: &[(NodeIndex, NodeIndex)]) -> Vec<BTreeSet<NodeIndex>> {
        (0..nodes)
            .map(|a| {
                (0..nodes)
                    .filter(|&b| b != a && !cut.contains(&(a, b)))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn shapes_are_what_they_claim() {
        for nodes in [3, 4, 5, 6] {
            let mut rng = Rng::new(nodes as u64);
            for _ in 0..20 {
                let mut sides: Vec<NodeIndex> = (0..nodes).collect();
                rng.shuffle(&mut sides);

                // Halves: two non-empty sides, complete inside, nothing across.
                let r = reach(nodes, &cut_links(nodes, Shape::Halves, &sides));
                let left: BTreeSet<_> = sides[..nodes / 2].iter().copied().collect();
                assert!(!left.is_empty() && left.len() < nodes);
                for (a, peers) in r.iter().enumerate() {
                    for b in (0..nodes).filter(|&b| b != a) {
                        assert_eq!(peers.contains(&b), left.contains(&a) == left.contains(&b));
                    }
                }

                // Isolated: the node reaches nobody, nobody reaches it, the rest is whole.
                let lone = sides[0];
                let r = reach(
                    nodes,
                    &cut_links(nodes, Shape::Isolated { node: lone }, &sides),
                );
                assert!(r[lone].is_empty());
                for a in (0..nodes).filter(|&a| a != lone) {
                    assert_eq!(r[a].len(), nodes - 2);
                }

                // Bridge: the bridge reaches everyone; the others split into two non-empty
                // sides that reach each other only through it.
                let bridge = sides[0];
                let r = reach(nodes, &cut_links(nodes, Shape::Bridge { bridge }, &sides));
                assert_eq!(r[bridge].len(), nodes - 1);
                let others: Vec<_> = (0..nodes).filter(|&n| n != bridge).collect();
                let a = others[0];
                let side_a: BTreeSet<_> = others
                    .iter()
                    .copied()
                    .filter(|&b| b == a || r[a].contains(&b))
                    .collect();
                assert!(side_a.len() < others.len(), "two sides");
                for &x in &others {
                    assert!(r[x].contains(&bridge));
                    for &y in others.iter().filter(|&&y| y != x) {
                        assert_eq!(
                            r[x].contains(&y),
                            side_a.contains(&x) == side_a.contains(&y)
                        );
                    }
                }

                // Ring: on 3 nodes each node reaches exactly the next one (one-way, and
                // every node is reached once); above, exactly its two neighbours, both ways.
                let r = reach(nodes, &cut_links(nodes, Shape::Ring, &sides));
                let want = if nodes <= 3 { 1 } else { 2 };
                for (a, peers) in r.iter().enumerate() {
                    assert_eq!(peers.len(), want, "node {a} reaches {peers:?}");
                    if nodes > 3 {
                        assert!(peers.iter().all(|&b| r[b].contains(&a)));
                    }
                }
                let reached: BTreeSet<_> = r.iter().flatten().copied().collect();
                assert_eq!(reached.len(), nodes);
                // And it is one ring, not two: walking from a node visits all of them.
                let mut seen = BTreeSet::from([sides[0]]);
                let mut at = sides[0];
                for _ in 0..nodes {
                    at = *r[at].iter().find(|b| !seen.contains(b)).unwrap_or(&at);
                    seen.insert(at);
                }
                assert_eq!(seen.len(), nodes);
            }
        }
    }
}
