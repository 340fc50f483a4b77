//! What one admission's escrow decision costs as the fleet grows (issue #13): a bounded
//! counter with a full transfer matrix (every node gave every other node rights, so
//! N·(N−1) transfer cells) at N = 5, 20, 50, 100 and 200 nodes.
//!
//! Run: `cargo bench -p tessera-crdt --bench escrow_scale` (criterion; a filter after `--`
//! runs a subset, e.g. `-- consume`). Timed per N:
//! - `consume+local_rights`: one node spends a right and reads what it holds, as an
//!   admission does (the edge reads `local_rights` around each `consume`);
//! - `merge one grown cell`: a replica merges a peer's copy in which one transfer grew
//!   (a pushed counter; the cost of keeping per-node totals in step with the cells);
//! - `decode`: a counter decoded and validated (totals rebuilt from the cells).
//!
//! It uses only the public API, so the same file times an older build of the crate.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion};
use tessera_crdt::{BoundedCounter, NodeId};

const FLEET_SIZES: [u64; 5] = [5, 20, 50, 100, 200];

/// Rights granted to each node: far more than a benchmark run consumes.
const GRANT: u64 = 1 << 40;

/// Node ids spread over the 64-bit space as production ids are (random), deterministic.
fn node(i: u64) -> NodeId {
    NodeId((i + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// Every node granted [`GRANT`], then every node transfers one right to every other.
fn full_matrix(n: u64) -> BoundedCounter {
    let mut counter = BoundedCounter::new();
    for i in 0..n {
        counter.grant(node(i), GRANT).expect("grant");
    }
    for from in 0..n {
        for to in (0..n).filter(|to| *to != from) {
            counter.transfer(node(from), node(to), 1).expect("rights");
        }
    }
    counter
}

fn main() {
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();
    let counters: Vec<(u64, BoundedCounter)> = FLEET_SIZES
        .iter()
        .map(|n| {
            let started = Instant::now();
            let counter = full_matrix(*n);
            println!(
                "N = {n}: {} transfer cells, {} bytes encoded, built in {:.2?}",
                n * (n - 1),
                counter.encode().len(),
                started.elapsed()
            );
            (*n, counter)
        })
        .collect();

    let mut group = criterion.benchmark_group("escrow_scale/consume+local_rights");
    for (n, counter) in &counters {
        let mut counter = counter.clone();
        let spender = node(n / 2);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                counter.consume(spender, black_box(1)).expect("rights");
                counter.local_rights(black_box(spender))
            })
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("escrow_scale/merge one grown cell");
    for (n, counter) in &counters {
        let mut peer = counter.clone();
        peer.transfer(node(0), node(1), 1).expect("rights");
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || counter.clone(),
                |mut mine| {
                    mine.merge(&peer);
                    // Returned, so dropping the copy is not timed.
                    mine
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    let mut group = criterion.benchmark_group("escrow_scale/decode");
    for (n, counter) in &counters {
        let bytes = counter.encode();
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| BoundedCounter::decode(black_box(&bytes)).expect("decodes"))
        });
    }
    group.finish();

    criterion.final_summary();
}
