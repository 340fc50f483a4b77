//! What the directory measurements share: a live-heap counter (a global allocator wrapper)
//! and the 100K-tenant directory workload, so `benches/crdt.rs` and the Automerge
//! comparison in `bench/automerge-directory` measure exactly the same thing.

#![allow(dead_code)] // Each includer uses a different part.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tessera_crdt::directory::{Change, Directory, KeyId, Scopes, SecretId};
use tessera_crdt::{Metric, NodeId, PeriodKind, TenantId};

pub const TENANTS: u64 = 100_000;

pub fn live_bytes() -> usize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

pub struct Counting;

pub static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

pub fn prefix(i: u64) -> String {
    // Spread like random prefixes would be, but reproducible.
    format!("tk_{:012x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16)
}

/// 100K tenants, each with one API key, a monthly request quota, an allowed origin and a
/// signing secret: 500K ops, as an operator's scripts would create them.
pub fn build_directory() -> Directory {
    let mut d = Directory::new(NodeId(1));
    for i in 0..TENANTS {
        let tenant = TenantId(i);
        let at_ms = 1_790_000_000_000 + i;
        let mut edit = |change| {
            d.change(at_ms, "operator:bench", change)
                .expect("valid edit");
        };
        edit(Change::CreateTenant {
            tenant,
            name: format!("tenant-{i}"),
            home: NodeId(1 + i % 3),
        });
        edit(Change::CreateKey {
            tenant,
            key: KeyId(i),
            prefix: prefix(i),
            secret_hash: [(i % 251) as u8; 32],
            scopes: Scopes::RESIZE.union(Scopes::USAGE),
            label: "production".into(),
        });
        edit(Change::SetQuota {
            tenant,
            metric: Metric::Requests,
            period: PeriodKind::Month,
            limit: Some(1_000_000),
        });
        edit(Change::SetOrigin {
            tenant,
            origin: format!("https://images.tenant-{i}.example"),
            allowed: true,
        });
        edit(Change::AddSigningSecret {
            tenant,
            secret_id: SecretId(1),
            secret: vec![(i % 253) as u8; 32],
        });
    }
    d
}
