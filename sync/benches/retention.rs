//! Ledger memory and disk per node over a year, with compaction and without (issue #14).
//!
//! One replica holds the usage of `WRITERS` nodes, each writing all four metrics of every
//! tenant every month, for twelve simulated months (from 2026-01). At each month's end every
//! writer seals it (its seal, the slot of the reserved key, after its usage, as the sync
//! core writes it); with compaction on, a month final at the replica whose end is
//! `RETENTION_MONTHS` behind is replaced by its settlement (`Ledger::compact`, what
//! `billing.retention_days` = 92 does), and a settlement is forgotten `SETTLEMENT_MONTHS`
//! after its month ends (`Ledger::forget_settled`: `billing.settlement_retention_days`,
//! whose default is 25 months; 6 here, so that a year shows it). Each writer's usage
//! reaches the replica as the
//! deltas replication carries (`Ledger::apply_delta`, chunks of `Delta::ENTRIES_MAX`).
//!
//! Measured at `TENANTS` tenants (the heap of the replica with a counting allocator, and
//! its `Ledger::encode` length, what the store's snapshot writes), and printed for 100,000
//! tenants (× 100,000 / `TENANTS`: the per-slot costs do not depend on the count). Run:
//! `cargo bench -p tessera-sync --bench retention` (`RETENTION_WRITERS`, default 10: how
//! many nodes write each tenant; `RETENTION_TENANTS`, default 10,000).

mod common;

use tessera_crdt::ledger::{DeltaEntry, OriginDelta, SEAL_KEY};
use tessera_crdt::{CounterKey, Delta, Ledger, Metric, NodeId, Period, TenantId};

use common::live_bytes;

/// Months a final month is kept before it is compacted.
const RETENTION_MONTHS: usize = 3;
/// Months a settlement is kept (after its month's end) before it is forgotten.
const SETTLEMENT_MONTHS: usize = 6;
/// Months simulated.
const MONTHS: usize = 12;

struct Month {
    period: Period,
    slots: usize,
    heap_bytes: isize,
    encoded_bytes: usize,
}

/// Twelve months of `writers` nodes writing every tenant; compacting or not.
fn year(writers: u64, tenants: u64, compact: bool) -> Vec<Month> {
    let ids: Vec<NodeId> = (1..=writers).map(|w| NodeId(0x5eed_0000 + w)).collect();
    let before = live_bytes();
    let mut replica = Ledger::new(NodeId(1));
    let mut seqs = vec![0u64; ids.len()];
    let mut period = Period::month(2026, 1).expect("a month");
    let mut months: Vec<Month> = Vec::new();
    let mut periods = Vec::new();
    for _ in 0..MONTHS {
        periods.push(period);
        for (w, origin) in ids.iter().enumerate() {
            // The writer's month: every key once (its running totals), then its seal.
            let mut entries: Vec<DeltaEntry> = (1..=tenants)
                .flat_map(|t| Metric::ALL.map(|m| CounterKey::new(TenantId(t), period, m)))
                .map(|key| {
                    seqs[w] += 1;
                    DeltaEntry {
                        key,
                        value: 1 + seqs[w] % 997,
                        seq: seqs[w],
                    }
                })
                .collect();
            seqs[w] += 1;
            entries.push(DeltaEntry {
                key: SEAL_KEY,
                value: period.end_ms(),
                seq: seqs[w],
            });
            for chunk in entries.chunks(Delta::ENTRIES_MAX) {
                let delta = Delta {
                    parts: vec![OriginDelta {
                        origin: *origin,
                        from_seq: chunk[0].seq - 1,
                        to_seq: chunk[chunk.len() - 1].seq,
                        entries: chunk.to_vec(),
                    }],
                };
                replica.apply_delta(&delta).expect("a valid delta");
            }
        }
        if compact && periods.len() > RETENTION_MONTHS {
            let due = periods[periods.len() - 1 - RETENTION_MONTHS];
            assert!(
                replica.compact(due, ids.iter().copied()).is_some(),
                "{due} is final: every writer sealed it"
            );
        }
        if compact && periods.len() > SETTLEMENT_MONTHS {
            let due = periods[periods.len() - 1 - SETTLEMENT_MONTHS];
            assert!(replica.forget_settled(due.end_ms()) >= due.end_ms());
            assert!(replica.settlement(due).is_none(), "{due} is forgotten");
        }
        months.push(Month {
            period,
            slots: replica.slot_count(),
            heap_bytes: live_bytes() - before,
            encoded_bytes: replica.encode().len(),
        });
        period = period.next().expect("a next month");
    }
    months
}

fn gb(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.2} GB", bytes / 1e9)
    } else {
        format!("{:.0} MB", bytes / 1e6)
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: {v:?} is not a number"))
    })
}

fn main() {
    let writers = env_or("RETENTION_WRITERS", 10);
    let tenants = env_or("RETENTION_TENANTS", 10_000);
    let scale = 100_000.0 / tenants as f64;
    println!(
        "retention: {writers} writers per tenant, {tenants} tenants measured, shown for \
         100,000; compaction {RETENTION_MONTHS} months after a month ends, its settlement \
         forgotten {SETTLEMENT_MONTHS} months after"
    );
    let on = year(writers, tenants, true);
    let off = year(writers, tenants, false);
    println!(
        "| month | slots held, compaction on / off | memory per node, on / off | disk (snapshot) per node, on / off |"
    );
    println!("|---|---|---|---|");
    for (a, b) in on.iter().zip(&off) {
        println!(
            "| {} | {:.1}M / {:.1}M | {} / {} | {} / {} |",
            a.period,
            a.slots as f64 * scale / 1e6,
            b.slots as f64 * scale / 1e6,
            gb(a.heap_bytes as f64 * scale),
            gb(b.heap_bytes as f64 * scale),
            gb(a.encoded_bytes as f64 * scale),
            gb(b.encoded_bytes as f64 * scale),
        );
    }
}
