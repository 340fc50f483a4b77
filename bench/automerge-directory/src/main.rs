//! The measurement behind the tenant directory's design: the same 100K-tenant directory
//! held in Automerge 0.12 and in `tessera_crdt::Directory`, in one run.
//!
//! Run: `cargo run --release --manifest-path bench/automerge-directory/Cargo.toml`
//! (100K tenants: the workload of `crdt/benches/common`). Each tenant gets a name, a
//! status, a monthly request quota, an allowed origin, a signing secret and one API key
//! (prefix, 32-byte hash, scopes, creation time); edits are committed 1000 per change in
//! Automerge (one change per edit is slower still) and made one op per edit in the
//! directory. For each: build, save, cold load, building the key-prefix index the request
//! path needs (Automerge has none, so it is materialised from the loaded document), mean
//! lookup through that index, and heap bytes held after load (counted by this binary's
//! allocator, so the two are compared on the same footing).

#[path = "../../../crdt/benches/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use automerge::{transaction::Transactable, AutoCommit, ObjType, ReadDoc, Value, ROOT};
use common::{build_directory, live_bytes, prefix, TENANTS};
use tessera_crdt::directory::Directory;

struct Row {
    build: Duration,
    save: Duration,
    bytes: usize,
    load: Duration,
    index: Duration,
    lookup: Duration,
    heap_mb: f64,
}

fn mean_lookup(n: u64, mut lookup: impl FnMut(&str) -> bool) -> Duration {
    let probes: Vec<String> = (0..n).step_by(7).map(prefix).collect();
    let rounds = 1_000_000;
    let started = Instant::now();
    let mut hits = 0;
    for i in 0..rounds {
        hits += usize::from(lookup(black_box(&probes[i % probes.len()])));
    }
    let elapsed = started.elapsed() / rounds as u32;
    assert_eq!(hits, rounds, "every probe is a known key");
    elapsed
}

fn automerge(n: u64) -> Row {
    let started = Instant::now();
    let mut doc = AutoCommit::new();
    let tenants = doc.put_object(ROOT, "tenants", ObjType::Map).unwrap();
    let keys = doc.put_object(ROOT, "keys", ObjType::Map).unwrap();
    for i in 0..n {
        let t = doc
            .put_object(&tenants, i.to_string(), ObjType::Map)
            .unwrap();
        doc.put(&t, "name", format!("tenant-{i}")).unwrap();
        doc.put(&t, "status", "active").unwrap();
        doc.put(&t, "quota_requests_month", 1_000_000u64).unwrap();
        let origins = doc.put_object(&t, "origins", ObjType::Map).unwrap();
        doc.put(&origins, format!("https://images.tenant-{i}.example"), true)
            .unwrap();
        let secrets = doc.put_object(&t, "secrets", ObjType::Map).unwrap();
        doc.put(&secrets, "1", vec![(i % 253) as u8; 32]).unwrap();
        let k = doc.put_object(&keys, prefix(i), ObjType::Map).unwrap();
        doc.put(&k, "tenant", i).unwrap();
        doc.put(&k, "hash", vec![(i % 251) as u8; 32]).unwrap();
        doc.put(&k, "scopes", "resize,usage").unwrap();
        doc.put(&k, "created_ms", 1_790_000_000_000u64 + i).unwrap();
        doc.put(&k, "revoked", false).unwrap();
        if (i + 1) % 1000 == 0 {
            doc.commit();
        }
    }
    doc.commit();
    let build = started.elapsed();
    let started = Instant::now();
    let bytes = doc.save();
    let save = started.elapsed();
    drop(doc);

    let heap_before = live_bytes();
    let started = Instant::now();
    let doc = AutoCommit::load(&bytes).unwrap();
    let load = started.elapsed();
    let started = Instant::now();
    let (_, keys) = doc.get(ROOT, "keys").unwrap().unwrap();
    let mut index: HashMap<String, (u64, String, Vec<u8>)> = HashMap::new();
    for item in doc.map_range(&keys, ..) {
        let k = item.id();
        let scalar = |field: &str| match doc.get(&k, field).unwrap() {
            Some((Value::Scalar(s), _)) => s.into_owned(),
            _ => panic!("{field} missing"),
        };
        let tenant = scalar("tenant").as_u64().unwrap();
        let scopes = scalar("scopes").as_str().unwrap().to_owned();
        let hash = scalar("hash").as_bytes().unwrap().to_vec();
        index.insert(item.key.to_string(), (tenant, scopes, hash));
    }
    let index_time = started.elapsed();
    let heap_mb = (live_bytes() - heap_before) as f64 / (1 << 20) as f64;
    let lookup = mean_lookup(n, |p| index.get(p).is_some());
    Row {
        build,
        save,
        bytes: bytes.len(),
        load,
        index: index_time,
        lookup,
        heap_mb,
    }
}

fn directory(n: u64) -> Row {
    assert_eq!(
        n, TENANTS,
        "the shared directory workload has {TENANTS} tenants"
    );
    let started = Instant::now();
    let d = build_directory();
    let build = started.elapsed();
    let started = Instant::now();
    let bytes = d.encode();
    let save = started.elapsed();
    drop(d);

    let heap_before = live_bytes();
    let started = Instant::now();
    let d = Directory::decode(&bytes, usize::MAX).unwrap();
    // The index is part of the decoded view: nothing left to build.
    let load = started.elapsed();
    let heap_mb = (live_bytes() - heap_before) as f64 / (1 << 20) as f64;
    let lookup = mean_lookup(n, |p| d.lookup_key(p).next().is_some());
    Row {
        build,
        save,
        bytes: bytes.len(),
        load,
        index: Duration::ZERO,
        lookup,
        heap_mb,
    }
}

fn main() {
    let n = TENANTS;
    println!("{n} tenants, one key each");
    println!("| | build | save | bytes | cold load | index build | load + index | lookup | heap after load |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, row) in [
        ("automerge 0.12", automerge(n)),
        ("tessera Directory", directory(n)),
    ] {
        println!(
            "| {name} | {:.2?} | {:.2?} | {:.1} MB | {:.2?} | {:.2?} | {:.2?} | {:.0?} | {:.0} MB |",
            row.build,
            row.save,
            row.bytes as f64 / 1e6,
            row.load,
            row.index,
            row.load + row.index,
            row.lookup,
            row.heap_mb
        );
    }
}
