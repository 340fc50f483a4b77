//! Issue #13's fleet-scale goals held in CI: the scenarios of `tessera_sync::sim::fleet`
//! (the ones `benches/fleet_scale.rs` measures at every N) at N = 50, two seeds each.
//!
//! - Quota liveness, traffic at 1 node, at 3 nodes and moving every 2 s: on the wan
//!   network at least 99% of the quota admitted within 1.5x the ideal time; on the faulty
//!   network at least 95% within 3x. Never more than the quota (asserted at every
//!   simulated ms by the scenario, and per node at every step by the simulator).
//! - Heal of a half/half partition (wan): bytes sent until every version vector is equal
//!   at most 3x the minimum, and equal version vectors (then equal ledgers) after it.
//!
//! CI-sized by the seed count and N alone: the sizes are the bench's (Q = 10,000, a 20 s
//! partition), since `tessera-sync` builds at opt-level 2 in the dev profile and the
//! whole file costs about 7 s of CPU in a debug build (2-core AMD EPYC; the heal about
//! 3 s, each liveness pair 0.4–0.8 s). Shrink [`QUOTA`] or [`HEAL_WRITE_MS`] here if
//! that grows.
//!
//! A failing run prints its seed; replay it with `TESSERA_SIM_SEED=<seed>`;
//! `TESSERA_SIM_SEEDS=<n>` runs more seeds. The figures each run saw are printed
//! (`cargo test -p tessera-sync --test fleet -- --nocapture`).

use tessera_sync::sim::fleet::{self, heal, liveness, Net, Shape};
use tessera_sync::sim::for_each_seed;

const N: usize = 50;
const SEEDS: u64 = 2;
/// The quota of the liveness runs (the bench's): an ideal time of 10 s.
const QUOTA: u64 = fleet::QUOTA;
/// Partitioned writes before the heal (the bench's: 19 s, then 1 s quiet).
const HEAL_WRITE_MS: u64 = fleet::HEAL_WRITE_MS;

/// At least `percent`% of the quota admitted by mark `mark` (0: 1x, 1: 1.5x, 2: 3x the
/// ideal time), for every seed.
fn live(shape: Shape, net: Net, mark: usize, percent: u64) {
    let times = ["1x", "1.5x", "3x"];
    for_each_seed(SEEDS, |seed| {
        let l = liveness(N, seed, shape, net, QUOTA);
        println!(
            "N={N} seed {seed} {shape:?} {net:?}: admitted {:?} of {QUOTA} by 1x / 1.5x / 3x",
            l.admitted
        );
        assert!(
            l.admitted[mark] * 100 >= percent * QUOTA,
            "seed {seed}, {shape:?} on {net:?}: {} of {QUOTA} admitted within {} the ideal \
             time, goal {percent}%",
            l.admitted[mark],
            times[mark]
        );
    });
}

#[test]
fn liveness_wan_one_node() {
    live(Shape::OneNode, Net::Wan, 1, 99);
}

#[test]
fn liveness_wan_three_nodes() {
    live(Shape::ThreeNodes, Net::Wan, 1, 99);
}

#[test]
fn liveness_wan_moving() {
    live(Shape::Moving, Net::Wan, 1, 99);
}

#[test]
fn liveness_faulty_one_node() {
    live(Shape::OneNode, Net::Faulty, 2, 95);
}

#[test]
fn liveness_faulty_three_nodes() {
    live(Shape::ThreeNodes, Net::Faulty, 2, 95);
}

#[test]
fn liveness_faulty_moving() {
    live(Shape::Moving, Net::Faulty, 2, 95);
}

#[test]
fn heal_bytes_within_3x_the_minimum() {
    for_each_seed(SEEDS, |seed| {
        let h = heal(N, seed, HEAL_WRITE_MS);
        println!(
            "N={N} seed {seed} heal: {} bytes, minimum {}, {:.2}x, converged in {:?} ms",
            h.bytes,
            h.minimum_bytes,
            h.ratio(),
            h.converged_ms
        );
        assert!(
            h.converged_ms.is_some(),
            "seed {seed}: version vectors still differ after the heal's wait"
        );
        assert!(
            h.ratio() <= 3.0,
            "seed {seed}: heal sent {} bytes, {:.2}x the minimum {} (goal: at most 3x)",
            h.bytes,
            h.ratio(),
            h.minimum_bytes
        );
    });
}
