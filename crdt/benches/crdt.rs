//! Costs and sizes of the replicated types at the scale the brief sets: a directory of 100K
//! tenants with 100K keys, a ledger of 100K tenants × 4 metrics × 3 nodes, and bounded
//! counter operations.
//!
//! Run: `cargo bench -p tessera-crdt --bench crdt` (criterion; add a filter after `--` to
//! run a subset, e.g. `-- directory`). Before the timed runs it prints the figures that are
//! sizes rather than times (bytes of a digest or delta, memory held by the directory,
//! one-shot build/save/load times); memory is counted by a global allocator wrapper that
//! tracks live heap bytes, so it is the directory's own footprint, not the process RSS.

mod common;

use std::hint::black_box;
use std::time::Instant;

use common::{build_directory, live_bytes, prefix, TENANTS};
use criterion::{BatchSize, Criterion};
use tessera_crdt::directory::Directory;
use tessera_crdt::{BoundedCounter, CounterKey, Ledger, Metric, NodeId, Period, TenantId};

const NODES: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

fn counter_key(tenant: u64, metric: usize) -> CounterKey {
    CounterKey::new(
        TenantId(tenant),
        Period::month(2026, 11).expect("valid month"),
        Metric::ALL[metric],
    )
}

/// Node 1's replica after every node incremented each of 100K tenants × 4 metrics once and
/// all replicas merged: 1.2M slots.
fn build_ledgers() -> (Ledger, Ledger) {
    let mut ledgers: Vec<Ledger> = NODES.iter().map(|n| Ledger::new(*n)).collect();
    for ledger in &mut ledgers {
        for tenant in 0..TENANTS {
            for metric in 0..4 {
                ledger
                    .increment(counter_key(tenant, metric), 1 + tenant % 7)
                    .expect("increment");
            }
        }
    }
    let (first, rest) = ledgers.split_at_mut(1);
    for other in rest.iter() {
        first[0].merge(other);
    }
    let a = first[0].clone();
    let mut b = rest[0].clone();
    b.merge(&a);
    (a, b)
}

fn report_sizes() {
    println!("== one-shot figures ==");
    let live_before = live_bytes();
    let started = Instant::now();
    let directory = build_directory();
    let built = started.elapsed();
    let held = live_bytes() - live_before;
    let started = Instant::now();
    let bytes = directory.encode();
    let encoded = started.elapsed();
    drop(directory);
    let live_before = live_bytes();
    let started = Instant::now();
    let loaded = Directory::decode(&bytes, usize::MAX).expect("decodes");
    let load = started.elapsed();
    let held_loaded = live_bytes() - live_before;
    println!(
        "directory {TENANTS} tenants, {} keys, {} ops: build {built:.2?}, save {encoded:.2?} ({:.1} MB), cold load {load:.2?}, heap held {:.1} MB after build, {:.1} MB after load",
        loaded.tenants().map(|(_, t)| t.keys().count()).sum::<usize>(),
        loaded.op_count(),
        bytes.len() as f64 / 1e6,
        held as f64 / (1 << 20) as f64,
        held_loaded as f64 / (1 << 20) as f64,
    );
    drop(loaded);

    let started = Instant::now();
    let (mut a, b) = build_ledgers();
    println!(
        "ledger {} slots built in {:.2?}; digest (version vector) when equal: {} bytes",
        a.slot_count(),
        started.elapsed(),
        b.version_vector().encode().len()
    );
    for i in 0..1_000u64 {
        a.increment(counter_key((i * 97) % TENANTS, (i % 4) as usize), 3)
            .expect("increment");
    }
    let delta = a.delta_since(b.version_vector(), usize::MAX);
    println!(
        "ledger after 1K increments on one node: digest {} bytes; delta {} entries, {} bytes encoded",
        a.version_vector().encode().len(),
        delta.entry_count(),
        delta.encode().len()
    );
    println!();
}

fn directory_benches(c: &mut Criterion) {
    let directory = build_directory();
    let prefixes: Vec<String> = (0..TENANTS).step_by(7).map(prefix).collect();
    let mut group = c.benchmark_group("directory");
    group.sample_size(10);
    group.bench_function("build 100K tenants", |b| b.iter(build_directory));
    group.bench_function("save 100K tenants", |b| b.iter(|| directory.encode()));
    let bytes = directory.encode();
    group.bench_function("cold load 100K tenants", |b| {
        b.iter(|| Directory::decode(&bytes, usize::MAX).expect("decodes"))
    });
    group.finish();
    let mut i = 0;
    c.bench_function("directory/key lookup (100K keys)", |b| {
        b.iter(|| {
            i = (i + 1) % prefixes.len();
            let found = directory.lookup_key(black_box(&prefixes[i])).next();
            black_box(found.map(|m| (m.standing, m.scopes)))
        })
    });
    c.bench_function("directory/key lookup miss", |b| {
        b.iter(|| {
            black_box(
                directory
                    .lookup_key(black_box("tk_000000000000"))
                    .next()
                    .is_none(),
            )
        })
    });
}

fn ledger_benches(c: &mut Criterion) {
    let (a, b) = build_ledgers();
    let mut ledger = a.clone();
    let mut i = 0u64;
    c.bench_function("ledger/increment (1.2M slots)", |bench| {
        bench.iter(|| {
            i = i.wrapping_add(7919);
            ledger
                .increment(counter_key(i % TENANTS, (i % 4) as usize), 1)
                .expect("increment")
        })
    });
    let mut changed = a.clone();
    for i in 0..1_000u64 {
        changed
            .increment(counter_key((i * 97) % TENANTS, (i % 4) as usize), 3)
            .expect("increment");
    }
    let peer = b.version_vector().clone();
    c.bench_function("ledger/delta after 1K changes", |bench| {
        bench.iter(|| changed.delta_since(black_box(&peer), usize::MAX))
    });
    let delta = changed.delta_since(&peer, usize::MAX);
    c.bench_function("ledger/apply 1K-change delta", |bench| {
        bench.iter_batched(
            || b.clone(),
            |mut replica| {
                replica.apply_delta(&delta).expect("applies");
                // Returned, so dropping 1.2M slots is not timed.
                replica
            },
            BatchSize::LargeInput,
        )
    });
}

fn escrow_benches(c: &mut Criterion) {
    let mut counter = BoundedCounter::new();
    for node in NODES {
        counter.grant(node, u64::MAX / 8).expect("grant");
    }
    c.bench_function("escrow/consume", |b| {
        b.iter(|| counter.consume(NODES[0], black_box(1)).expect("rights"))
    });
    c.bench_function("escrow/local_rights", |b| {
        b.iter(|| counter.local_rights(black_box(NODES[1])))
    });
    c.bench_function("escrow/transfer", |b| {
        b.iter(|| {
            counter
                .transfer(NODES[1], NODES[2], black_box(1))
                .expect("rights")
        })
    });
    let mut other = counter.clone();
    other.consume(NODES[2], 5).expect("rights");
    other.transfer(NODES[2], NODES[0], 5).expect("rights");
    c.bench_function("escrow/merge (3 nodes)", |b| {
        b.iter_batched(
            || counter.clone(),
            |mut mine| mine.merge(&other),
            BatchSize::SmallInput,
        )
    });
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    report_sizes();
    directory_benches(&mut criterion);
    ledger_benches(&mut criterion);
    escrow_benches(&mut criterion);
    criterion.final_summary();
}
