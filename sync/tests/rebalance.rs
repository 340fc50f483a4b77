//! Rebalancing rights toward demand (issue #13, `node/rebalance.rs`) on the simulator: a
//! member that served a burst and went idle hands what it holds beyond a fair share back to
//! the tenant's home, and the home gives a newly busy member rights for its demand before
//! that member has collected them by requests. The same run with rebalancing off keeps the
//! idle member's rights where they are (so the assertions can fail). Safety is the
//! simulator's, checked at every step: no replica's net consumption above its limit.
//!
//! N = 20, wan, production-sized ids, two seeds; well under a second of CPU in a debug
//! build. `TESSERA_SIM_SEEDS=<n>` runs more seeds, `TESSERA_SIM_SEED=<s>` replays one.

use tessera_crdt::CounterKey;
use tessera_sync::sim::{for_each_seed, random_ids, NetConfig, Sim};
use tessera_sync::SyncConfig;

const N: usize = 20;
const SEEDS: u64 = 2;
const QUOTA: u64 = 10_000;
const TENANT: u64 = 7;

/// A fleet with the tenant's monthly quota of [`QUOTA`] settled, home node 0.
fn quota_fleet(seed: u64, config: SyncConfig) -> (Sim, CounterKey) {
    let mut sim = Sim::with_ids(random_ids(N, seed), seed, config, NetConfig::wan());
    let key = sim.settle_quota(TENANT, QUOTA);
    (sim, key)
}

/// One request per simulated ms at node `at` for `ms`, each consumed then billed;
/// returns how many were admitted.
fn serve(sim: &mut Sim, at: usize, key: CounterKey, ms: u64) -> u64 {
    let mut admitted = 0;
    for _ in 0..ms {
        if sim.consume(at, key, 1).is_ok() {
            sim.increment(at, key, 1);
            admitted += 1;
        }
        sim.run_for(1);
    }
    admitted
}

/// What a burst at node 1, a quiet spell, then traffic at node 2 leave: node 1's rights
/// after the quiet spell, what it handed back, what the home spread toward demand.
struct Outcome {
    idle_rights: u64,
    handed_back: u64,
    spread_to_demand: u64,
}

fn burst_then_move(seed: u64, config: SyncConfig) -> Outcome {
    let idle_after_ms = config.donor_busy_ms + config.rebalance_idle_ms + 2_000;
    let (mut sim, key) = quota_fleet(seed, config);
    // Node 1 collects rights for a 3 s burst at 1,000/s.
    serve(&mut sim, 1, key, 3_000);
    // Quiet, long enough for node 1 to hand back.
    sim.run_for(idle_after_ms);
    let idle_rights = sim.node(1).local_rights(&key);
    // Traffic at node 2.
    serve(&mut sim, 2, key, 3_000);
    let outcome = Outcome {
        idle_rights,
        handed_back: sim.node(1).stats().rights_handed_back,
        spread_to_demand: sim.node(0).stats().rights_spread_to_demand,
    };
    println!(
        "seed {seed}: node 1 idle holds {}, handed back {}, home spread {} toward demand",
        outcome.idle_rights, outcome.handed_back, outcome.spread_to_demand
    );
    outcome
}

#[test]
fn an_idle_holder_hands_its_excess_back_and_the_home_spreads_it_toward_demand() {
    for_each_seed(SEEDS, |seed| {
        let config = SyncConfig::default();
        // Node 1 keeps a fair share: the limit over the members it can reach and itself.
        let fair = QUOTA / N as u64;
        let on = burst_then_move(seed, config.clone());
        assert!(
            on.handed_back > 0 && on.idle_rights <= fair,
            "seed {seed}: idle node 1 still holds {} (fair share {fair}), handed back {}",
            on.idle_rights,
            on.handed_back
        );
        assert!(
            on.spread_to_demand > 0,
            "seed {seed}: the home gave nothing toward demand it saw"
        );
        let off = burst_then_move(
            seed,
            SyncConfig {
                rebalance_interval_ms: 0,
                ..config
            },
        );
        assert_eq!(
            (off.handed_back, off.spread_to_demand),
            (0, 0),
            "seed {seed}: rebalancing off moved rights"
        );
        assert!(
            off.idle_rights > fair,
            "seed {seed}: without rebalancing, idle node 1 kept only {} (the scenario no \
             longer leaves rights behind: it tests nothing)",
            off.idle_rights
        );
    });
}

/// What a request that waits for rights relies on (the edge's admission): the node's
/// `rights_epoch` moves when rights arrive from a peer, and only then, so a waiter wakes on
/// it instead of polling; and the same request's attempt after the wait
/// (`consume_again`) does not count its demand twice, while a new request does.
#[test]
fn rights_arriving_move_the_epoch_and_a_retried_consume_is_not_new_demand() {
    for_each_seed(SEEDS, |seed| {
        let (mut sim, key) = quota_fleet(seed, SyncConfig::default());
        // Node 3 spends what it was granted, then is refused: it asks its peers.
        while sim.consume(3, key, 1).is_ok() {}
        let demand = sim.node(3).demand_per_s(&key);
        let epoch = sim.node(3).rights_epoch();
        for _ in 0..50 {
            let _ = sim.with_node(3, |node, now| node.consume_again(now, key, 1));
        }
        assert_eq!(
            sim.node(3).demand_per_s(&key),
            demand,
            "seed {seed}: retries counted as demand"
        );
        let _ = sim.consume(3, key, 1);
        assert_eq!(
            sim.node(3).demand_per_s(&key),
            demand + 1,
            "seed {seed}: a new request is demand"
        );
        assert_eq!(
            sim.node(3).rights_epoch(),
            epoch,
            "seed {seed}: nothing arrived yet"
        );
        let received = sim.node(3).stats().rights_received;
        sim.run_for(2_000);
        assert!(
            sim.node(3).stats().rights_received > received,
            "seed {seed}: no rights arrived"
        );
        assert!(
            sim.node(3).rights_epoch() > epoch,
            "seed {seed}: rights arrived but the epoch did not move"
        );
        // Quiet (no demand, no transfers to it): the epoch stays.
        sim.run_for(30_000);
        let quiet = sim.node(3).rights_epoch();
        let quiet_received = sim.node(3).stats().rights_received;
        sim.run_for(5_000);
        assert_eq!(
            sim.node(3).rights_epoch() == quiet,
            sim.node(3).stats().rights_received == quiet_received,
            "seed {seed}: the epoch moves exactly when rights arrive"
        );
    });
}
