//! Replication costs measured on the simulated network (protocol core only; no transport):
//! bytes of an idle anti-entropy round between two nodes holding 100K tenants, and what a
//! node that missed 1M increments needs to catch up (messages, bytes, round trips, virtual
//! time at 1–5 ms one-way delay, and the real CPU time the simulation took).
//!
//! Run: `cargo bench -p tessera-sync --bench catch_up` (the crate's dev-dependency on
//! itself turns on the `sim` feature it needs). Default protocol settings
//! (`SyncConfig::default()`: 4096 ledger entries per chunk, 3 s rounds).

use std::collections::BTreeMap;
use std::time::Instant;

use tessera_crdt::{CounterKey, Metric, Period, PeriodKind, TenantId};
use tessera_sync::sim::{NetConfig, Sim, START_MS};
use tessera_sync::SyncConfig;

fn key(tenant: u64, metric: Metric) -> CounterKey {
    CounterKey::new(
        TenantId(tenant),
        Period::containing(PeriodKind::Month, START_MS),
        metric,
    )
}

fn idle_round() {
    let config = SyncConfig::default();
    let mut sim = Sim::new(2, 1, config.clone(), NetConfig::perfect());
    for t in 0..100_000u64 {
        for metric in Metric::ALL {
            sim.increment(0, key(t, metric), 1);
        }
    }
    sim.run_for(120_000);
    sim.assert_converged(&BTreeMap::new());
    let before = (sim.bytes_sent, sim.messages_sent, sim.bytes_by_kind.clone());
    let span_ms = 300_000;
    sim.run_for(span_ms);
    let rounds = (span_ms / config.anti_entropy_interval_ms) * 2;
    let bytes = sim.bytes_sent - before.0;
    println!(
        "idle, 2 nodes, 100K tenants x 4 metrics (400K slots each): {} messages, {bytes} bytes over {rounds} rounds = {} bytes per round",
        sim.messages_sent - before.1,
        bytes / rounds
    );
    for (kind, total) in &sim.bytes_by_kind {
        let old = before.2.get(kind).copied().unwrap_or(0);
        if *total > old {
            println!("  {kind}: {} bytes per round", (total - old) / rounds);
        }
    }
}

fn catch_up() {
    let config = SyncConfig::default();
    let mut sim = Sim::new(3, 2, config, NetConfig::perfect());
    sim.partition(&[vec![0, 1], vec![2]]);
    let mut rng = tessera_sync::rng::Rng::new(9);
    for _ in 0..1_000_000u64 {
        let t = rng.below(100_000);
        let metric = Metric::ALL[rng.below(4) as usize];
        sim.increment(0, key(t, metric), 1 + rng.below(1000));
    }
    sim.run_for(10_000);
    let slots = sim.node(0).ledger().slot_count();
    let (bytes, messages) = (sim.bytes_sent, sim.messages_sent);
    let chunks_before = sim.node(2).stats().ledger_chunks_applied;
    let healed_at = sim.now_ms;
    sim.heal();
    let started = Instant::now();
    let mut caught_up_ms = None;
    for _ in 0..600 {
        sim.run_for(50);
        if sim.node(2).ledger().same_state(sim.node(0).ledger()) {
            caught_up_ms = Some(sim.now_ms - healed_at);
            break;
        }
    }
    let cpu = started.elapsed();
    let chunks = sim.node(2).stats().ledger_chunks_applied - chunks_before;
    println!(
        "catch-up after 1M increments ({slots} distinct slots changed): {} in virtual time (to the next 50 ms), {chunks} chunks, {} messages, {:.1} MB in all traffic meanwhile, simulation CPU {cpu:.2?}",
        caught_up_ms.map_or("not caught up in 30 s".to_owned(), |ms| format!("{ms} ms")),
        sim.messages_sent - messages,
        (sim.bytes_sent - bytes) as f64 / 1e6
    );
}

fn main() {
    idle_round();
    catch_up();
}
