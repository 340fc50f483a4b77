//! How long the directory's log compaction holds its caller, and what it saves, at the
//! brief's scale: 100,000 tenants, each created and then given three quota edits (400K
//! ops, by an actor named like a real operator): a whole pass (`Directory::compact`), and
//! one step of the sweep the sync core runs under the node's lock (`compact_step`, 20K
//! ops), the pause it adds once a minute while a sweep is under way. Then a year of edits:
//! each month every tenant's quota is changed twice and the log compacted, to show that
//! the log's size follows the directory's state, not the number of edits ever made.
//!
//! `cargo run --release -p tessera-crdt --example directory_compaction`

use std::time::Instant;

use tessera_crdt::directory::CompactCursor;
use tessera_crdt::{Change, Directory, Metric, NodeId, PeriodKind, TenantId};

fn main() {
    let mut directory = Directory::new(NodeId(1));
    for t in 1..=100_000u64 {
        let tenant = TenantId(t);
        let create = Change::CreateTenant {
            tenant,
            name: format!("tenant-{t}"),
            home: NodeId(1),
        };
        directory
            .change(1, "operator-alice", create)
            .expect("a tenant");
        for i in 0..3u64 {
            let quota = Change::SetQuota {
                tenant,
                metric: Metric::Requests,
                period: PeriodKind::Month,
                limit: Some(1_000 + i),
            };
            directory
                .change(2 + i, "operator-alice", quota)
                .expect("a quota");
        }
    }
    let mut stepped = directory.clone();
    let mut cursor = CompactCursor::default();
    let start = Instant::now();
    let (step_folded, _) = stepped.compact_step(u64::MAX, &mut cursor, 20_000);
    let step = start.elapsed();
    println!("one step of 20,000 ops: {step_folded} folded in {step:?}");
    let before = directory.log_bytes();
    let start = Instant::now();
    let folded = directory.compact(u64::MAX);
    let first = start.elapsed();
    let start = Instant::now();
    let again = directory.compact(u64::MAX);
    let idle = start.elapsed();
    let mut cursor = CompactCursor::default();
    let start = Instant::now();
    let (nothing, _) = directory.compact_step(u64::MAX, &mut cursor, 20_000);
    println!(
        "one step of 20,000 ops with nothing to fold ({nothing}): {:?}",
        start.elapsed()
    );
    println!(
        "400000 ops, {} entries after, log {before} -> {} bytes; {folded} folded in {first:?}; a pass with nothing \
         to fold ({again}) {idle:?}",
        directory.op_count(),
        directory.log_bytes()
    );
    let mut sizes = Vec::new();
    for month in 0..12u64 {
        for t in 1..=100_000u64 {
            for i in 0..2u64 {
                let quota = Change::SetQuota {
                    tenant: TenantId(t),
                    metric: Metric::Requests,
                    period: PeriodKind::Month,
                    limit: Some(2_000 + month * 10 + i),
                };
                directory
                    .change(10 + month, "operator-alice", quota)
                    .expect("a quota");
            }
        }
        directory.compact(u64::MAX);
        sizes.push(format!("{:.1}", directory.log_bytes() as f64 / 1_000_000.0));
    }
    println!(
        "a year of monthly edits (200K a month), compacted monthly: log MB {} ({} entries \
         for {} edits made)",
        sizes.join(", "),
        directory.op_count(),
        400_000 + 12 * 200_000
    );
}
