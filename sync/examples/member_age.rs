//! How old the freshest heartbeat of a non-neighbour is, across every pair of nodes of a
//! fleet started from one seed address (`Sim::with_seed_mesh`), on the wan and the faulty
//! networks: what `member_suspect_ms` and `peer_stale_ms` must stay above so a live member
//! is never suspected (see `sync/src/membership.rs`, "Costs").
//!
//! `cargo run --release -p tessera-sync --features sim --example member_age -- 200`
//! (the argument is N; 60 simulated seconds after a 20 s start, sampled every 500 ms).

use tessera_sync::sim::{random_ids, NetConfig, Sim};
use tessera_sync::SyncConfig;
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    for (name, net) in [("wan", NetConfig::wan()), ("faulty", NetConfig::faulty())] {
        let mut sim = Sim::with_seed_mesh(random_ids(n, 1), 1, SyncConfig::default(), net);
        sim.run_for(20_000);
        let mut ages = Vec::new();
        for _ in 0..120 {
            sim.run_for(500);
            for i in 0..n {
                for j in 0..n {
                    if i != j {
                        let node = sim.node(i);
                        let connected = node.peers().get(&sim.ids[j]).is_some_and(|p| p.connected);
                        if connected {
                            continue;
                        }
                        let at = node.membership().alive_at_ms(sim.ids[j]).unwrap_or(0);
                        ages.push(sim.now_ms - at);
                    }
                }
            }
        }
        ages.sort();
        let p = |q: f64| ages[((ages.len() as f64 - 1.0) * q) as usize];
        println!(
            "N={n} {name}: non-neighbour age p50 {} p99 {} p99.9 {} max {}  degrees {:?}",
            p(0.5),
            p(0.99),
            p(0.999),
            ages.last().unwrap(),
            {
                let d = sim.degrees();
                (d.iter().min().copied(), d.iter().max().copied())
            }
        );
    }
}
