//! How long the directory's log compaction holds its caller, and what it saves, at the
//! brief's scale: 100,000 tenants, each created and then given three quota edits (400K
//! ops, by an actor named like a real operator). The sync core runs `Directory::compact`
//! hourly under the node's lock, so this is the pause it adds once an hour.
//!
//! `cargo run --release -p tessera-crdt --example directory_compaction`

use std::time::Instant;

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
    let before = directory.log_bytes();
    let start = Instant::now();
    let folded = directory.compact(u64::MAX);
    let first = start.elapsed();
    let start = Instant::now();
    let again = directory.compact(u64::MAX);
    let idle = start.elapsed();
    println!(
        "{} ops, log {before} -> {} bytes; {folded} folded in {first:?}; a pass with nothing \
         to fold ({again}) {idle:?}",
        directory.op_count(),
        directory.log_bytes()
    );
}
