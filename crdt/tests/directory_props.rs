//! Property tests of the tenant directory: merge is a join (commutative, associative,
//! idempotent) and the log only grows; sync over a faulty network (loss, duplication,
//! reordering, chunking) converges once anti-entropy runs, to the same log *and* the same
//! materialised view on every replica; the view does not depend on the order in which
//! origins' logs were interleaved; a revocation wins every race (scope change, relabel,
//! re-creation of the key id, tenant rename, suspension); concurrent quota edits end with
//! the same value everywhere; the audit history lists every change with its actor
//! (decommissions, which concern no tenant, in the whole history only); and
//! encodings round-trip while arbitrary bytes never panic the decoders; ops staged and
//! promoted in any steps are enforced exactly as promoted; and compaction, run by any
//! replica at any time in steps of any size, changes no view: after it, sync over the same
//! faulty network still converges to the view of every edit applied in full.

use proptest::prelude::*;
use tessera_crdt::directory::{
    Change, CompactCursor, Directory, DirectoryDelta, KeyId, KeyStanding, Scopes, SecretId,
    SyncMessage, TenantStatus,
};
use tessera_crdt::{Metric, NodeId, PeriodKind, TenantId, VersionVector};

const NODES: usize = 3;
const TENANTS: [TenantId; 2] = [TenantId(1), TenantId(2)];
const KEYS: [KeyId; 3] = [KeyId(10), KeyId(11), KeyId(12)];

fn node(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

/// A random admin edit over a small id space, so edits collide.
fn change_strategy() -> impl Strategy<Value = Change> {
    let tenant = prop::sample::select(TENANTS.to_vec());
    let key = prop::sample::select(KEYS.to_vec());
    let scopes = prop::sample::select(vec![
        Scopes::RESIZE,
        Scopes::USAGE,
        Scopes::RESIZE.union(Scopes::USAGE),
    ]);
    prop_oneof![
        3 => (tenant.clone(), "[a-z]{1,6}", 0usize..NODES)
            .prop_map(|(tenant, name, home)| Change::CreateTenant { tenant, name, home: node(home) }),
        2 => (tenant.clone(), "[a-z]{1,6}").prop_map(|(tenant, name)| Change::RenameTenant { tenant, name }),
        1 => (tenant.clone(), any::<bool>()).prop_map(|(tenant, suspended)| Change::SetTenantStatus {
            tenant,
            status: if suspended { TenantStatus::Suspended } else { TenantStatus::Active },
        }),
        1 => tenant.clone().prop_map(|tenant| Change::DeleteTenant { tenant }),
        4 => (tenant.clone(), key.clone(), "[a-f0-9]{4,6}", any::<u8>(), scopes.clone()).prop_map(
            |(tenant, key, prefix, hash, scopes)| Change::CreateKey {
                tenant,
                key,
                prefix: format!("tk_{prefix}"),
                secret_hash: [hash; 32],
                scopes,
                label: String::new(),
            }
        ),
        2 => (tenant.clone(), key.clone(), scopes).prop_map(|(tenant, key, scopes)| Change::SetKeyScopes { tenant, key, scopes }),
        1 => (tenant.clone(), key.clone(), "[a-z]{0,4}").prop_map(|(tenant, key, label)| Change::SetKeyLabel { tenant, key, label }),
        2 => (tenant.clone(), key).prop_map(|(tenant, key)| Change::RevokeKey { tenant, key }),
        1 => (tenant.clone(), 0u64..3, any::<u8>()).prop_map(|(tenant, id, byte)| Change::AddSigningSecret {
            tenant,
            secret_id: SecretId(id),
            secret: vec![byte; 32],
        }),
        1 => (tenant.clone(), 0u64..3).prop_map(|(tenant, id)| Change::SetPrimarySecret { tenant, secret_id: SecretId(id) }),
        1 => (tenant.clone(), 0u64..3).prop_map(|(tenant, id)| Change::RetireSigningSecret { tenant, secret_id: SecretId(id) }),
        1 => (tenant.clone(), 0u8..3, any::<bool>()).prop_map(|(tenant, i, allowed)| Change::SetOrigin {
            tenant,
            origin: format!("https://o{i}.example"),
            allowed,
        }),
        2 => (tenant.clone(), prop::option::of(0u64..1000)).prop_map(|(tenant, limit)| Change::SetQuota {
            tenant,
            metric: Metric::Requests,
            period: PeriodKind::Month,
            limit,
        }),
        1 => (tenant.clone(), 0u8..2, prop::option::of("w=[0-9]{2}")).prop_map(|(tenant, i, options)| Change::SetPreset {
            tenant,
            name: format!("p{i}"),
            options,
        }),
        1 => (tenant, prop::option::of(prop::collection::vec(any::<u8>(), 1..64)))
            .prop_map(|(tenant, image)| Change::SetWatermark { tenant, image }),
        // Replicas' own ids and one beyond them (an edit naming its own replica is refused).
        1 => (0..NODES + 1).prop_map(|i| Change::DecommissionNode { node: node(i) }),
    ]
}

/// Applies `change` at replica `at`, ignoring edits its view refuses (unknown tenant and
/// the like): a refused edit leaves no op, which the tests below also check.
fn edit(replica: &mut Directory, at_ms: u64, actor: &str, change: Change) -> bool {
    let before = replica.op_count();
    match replica.change(at_ms, actor, change) {
        Ok(_) => true,
        Err(_) => {
            assert_eq!(replica.op_count(), before, "a refused edit left an op");
            false
        }
    }
}

/// Replicas built from random edits and random full merges among them.
fn directories_strategy() -> impl Strategy<Value = Vec<Directory>> {
    let step = (0..NODES, change_strategy(), 0..NODES, 0u8..5);
    prop::collection::vec(step, 0..40).prop_map(|steps| {
        let mut replicas: Vec<Directory> = (0..NODES).map(|i| Directory::new(node(i))).collect();
        for (i, (at, change, other, what)) in steps.into_iter().enumerate() {
            if what == 0 && other != at {
                let source = replicas[other].clone();
                replicas[at].merge(&source);
            } else {
                edit(&mut replicas[at], i as u64, "admin", change);
            }
        }
        replicas
    })
}

/// Every replica merges every other, in `order` (a full exchange, as after a heal).
fn merge_all(replicas: &mut [Directory], order: &[usize]) {
    for &a in order {
        for &b in order {
            if a != b {
                let source = replicas[b].clone();
                replicas[a].merge(&source);
            }
        }
    }
}

fn merged(a: &Directory, b: &Directory) -> Directory {
    let mut m = a.clone();
    m.merge(b);
    m
}

fn assert_same(a: &Directory, b: &Directory) -> Result<(), TestCaseError> {
    prop_assert!(
        a.same_state(b),
        "logs differ:\n{:?}\n{:?}",
        a.version_vector(),
        b.version_vector()
    );
    prop_assert!(a.same_view(b), "same log but different views");
    Ok(())
}

#[derive(Clone, Debug)]
enum NetStep {
    Edit {
        at: usize,
        change: Change,
    },
    /// `from` sends what `to` lacked at some earlier digest, in chunks of `chunk` ops; the
    /// network drops, duplicates and reorders the chunks as told.
    Send {
        from: usize,
        to: usize,
        chunk: usize,
        drop_mask: u8,
        duplicate: bool,
        reverse: bool,
    },
}

fn net_strategy() -> impl Strategy<Value = Vec<NetStep>> {
    net_steps(change_strategy(), 60)
}

/// Edits that write registers only (what compaction folds once overwritten), over the
/// tenants and keys [`seeded`] creates, with the other edits now and then.
fn register_change_strategy() -> impl Strategy<Value = Change> {
    let tenant = prop::sample::select(TENANTS.to_vec());
    let key = prop::sample::select(KEYS.to_vec());
    let scopes = prop::sample::select(vec![Scopes::RESIZE, Scopes::USAGE]);
    prop_oneof![
        4 => (tenant.clone(), prop::option::of(0u64..1000)).prop_map(|(tenant, limit)| Change::SetQuota {
            tenant,
            metric: Metric::Requests,
            period: PeriodKind::Month,
            limit,
        }),
        2 => (tenant.clone(), "[a-z]{1,6}").prop_map(|(tenant, name)| Change::RenameTenant { tenant, name }),
        2 => (key, scopes).prop_map(|(key, scopes)| Change::SetKeyScopes { tenant: TENANTS[0], key, scopes }),
        1 => (tenant.clone(), 0u8..2, prop::option::of("w=[0-9]{2}")).prop_map(|(tenant, i, options)| Change::SetPreset {
            tenant,
            name: format!("p{i}"),
            options,
        }),
        1 => (tenant, prop::option::of(prop::collection::vec(any::<u8>(), 1..64)))
            .prop_map(|(tenant, image)| Change::SetWatermark { tenant, image }),
        1 => change_strategy(),
    ]
}

/// Replicas and a reference holding both tenants and every key (of the first tenant),
/// created on the first replica.
fn seeded() -> (Vec<Directory>, Directory) {
    let mut first = Directory::new(node(0));
    for (i, tenant) in TENANTS.into_iter().enumerate() {
        let name = format!("t{i}");
        first
            .change(
                0,
                "admin",
                Change::CreateTenant {
                    tenant,
                    name,
                    home: node(0),
                },
            )
            .unwrap();
    }
    for key in KEYS {
        let create = Change::CreateKey {
            tenant: TENANTS[0],
            key,
            prefix: format!("tk_{}", key.0),
            secret_hash: [1; 32],
            scopes: Scopes::RESIZE,
            label: String::new(),
        };
        first.change(0, "admin", create).unwrap();
    }
    let mut replicas: Vec<Directory> = (0..NODES).map(|i| Directory::new(node(i))).collect();
    let mut reference = Directory::new(NodeId(99));
    for r in replicas.iter_mut().chain([&mut reference]) {
        r.merge(&first);
    }
    (replicas, reference)
}

fn net_steps(
    change: impl Strategy<Value = Change>,
    steps_max: usize,
) -> impl Strategy<Value = Vec<NetStep>> {
    let step = prop_oneof![
        2 => (0..NODES, change).prop_map(|(at, change)| NetStep::Edit { at, change }),
        1 => (0..NODES, 0..NODES, 1usize..4, any::<u8>(), any::<bool>(), any::<bool>()).prop_map(
            |(from, to, chunk, drop_mask, duplicate, reverse)| NetStep::Send { from, to, chunk, drop_mask, duplicate, reverse }
        ),
    ];
    prop::collection::vec(step, 0..steps_max)
}

/// `from` sends what `to` lacked at its last known digest (possibly stale), in chunks of
/// `chunk` ops (a placeholder counts one), through the wire encoding; the network drops
/// the chunks `drop_mask` says, duplicates them all or reverses their order, as told.
fn deliver(
    replicas: &mut [Directory],
    digests: &mut [VersionVector],
    from: usize,
    to: usize,
    (chunk, drop_mask, duplicate, reverse): (usize, u8, bool, bool),
) {
    if from == to {
        return;
    }
    let mut chunks = Vec::new();
    let mut cursor = digests[to].clone();
    loop {
        let delta = replicas[from].delta_since(&cursor, chunk);
        if delta.is_empty() {
            break;
        }
        for op in &delta.ops {
            cursor.advance(op.origin, op.last_seq());
        }
        chunks.push(delta);
    }
    if reverse {
        chunks.reverse();
    }
    for (c, delta) in chunks.iter().enumerate() {
        if drop_mask & (1 << (c % 8)) != 0 {
            continue;
        }
        let delta = DirectoryDelta::decode(&delta.encode(), usize::MAX).unwrap();
        replicas[to].apply_delta(&delta).unwrap();
        if duplicate {
            replicas[to].apply_delta(&delta).unwrap();
        }
    }
    digests[to] = replicas[to].version_vector().clone();
}

/// Anti-entropy after the faults: the two-party sync between every ordered pair.
fn sync_every_pair(replicas: &mut [Directory]) -> Result<(), TestCaseError> {
    for a in 0..replicas.len() {
        for b in 0..replicas.len() {
            if a != b {
                let (x, y) = two(replicas, a, b);
                sync_pair(x, y, 2)?;
            }
        }
    }
    Ok(())
}

/// Runs the two-party sync protocol to completion through encoded messages.
fn sync_pair(a: &mut Directory, b: &mut Directory, ops_max: usize) -> Result<usize, TestCaseError> {
    let mut message = Some(a.sync_start());
    let mut to_b = true;
    let mut messages = 0;
    while let Some(m) = message {
        let bytes = m.encode();
        let decoded = SyncMessage::decode(&bytes, usize::MAX).expect("own messages decode");
        message = if to_b {
            b.handle_sync(&decoded, ops_max)
        } else {
            a.handle_sync(&decoded, ops_max)
        }
        .expect("valid messages are accepted");
        to_b = !to_b;
        messages += 1;
        prop_assert!(messages < 10_000, "sync does not terminate");
    }
    Ok(messages)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn merge_is_commutative(replicas in directories_strategy()) {
        assert_same(&merged(&replicas[0], &replicas[1]), &merged(&replicas[1], &replicas[0]))?;
    }

    #[test]
    fn merge_is_associative(replicas in directories_strategy()) {
        let left = merged(&merged(&replicas[0], &replicas[1]), &replicas[2]);
        let right = merged(&replicas[0], &merged(&replicas[1], &replicas[2]));
        assert_same(&left, &right)?;
    }

    #[test]
    fn merge_is_idempotent_and_only_grows(replicas in directories_strategy()) {
        let once = merged(&replicas[0], &replicas[1]);
        assert_same(&merged(&once, &replicas[1]), &once)?;
        assert_same(&merged(&once, &once), &once)?;
        // The merged log holds every op of both sides.
        prop_assert!(replicas[0].version_vector().is_covered_by(once.version_vector()));
        prop_assert!(replicas[1].version_vector().is_covered_by(once.version_vector()));
        prop_assert!(once.op_count() >= replicas[0].op_count().max(replicas[1].op_count()));
    }

    /// The view is a function of the set of ops: replaying the same logs with the origins
    /// interleaved in another order gives the same view.
    #[test]
    fn view_does_not_depend_on_interleaving(replicas in directories_strategy(), order in prop::collection::vec(0..NODES, 0..200)) {
        let mut all = replicas[0].clone();
        for r in &replicas[1..] {
            all.merge(r);
        }
        let ops = all.delta_since(&VersionVector::new(), usize::MAX).ops;
        let mut per_origin: Vec<Vec<_>> = (0..NODES).map(|i| ops.iter().filter(|op| op.origin == node(i)).cloned().collect()).collect();
        for log in &mut per_origin {
            log.reverse();
        }
        let mut replay = Directory::new(NodeId(99));
        let mut picks = order.into_iter().chain((0..NODES).cycle().take(ops.len() * NODES));
        while per_origin.iter().any(|log| !log.is_empty()) {
            let i = picks.next().expect("enough picks");
            if let Some(op) = per_origin[i].pop() {
                let report = replay.apply_delta(&DirectoryDelta { ops: vec![op] }).unwrap();
                prop_assert_eq!(report.applied, 1);
            }
        }
        assert_same(&replay, &all)?;
    }

    /// Edits, then lossy, duplicated, reordered, chunked delivery; then a full sync between
    /// every pair: every replica holds the same log and view, equal to the merge of all.
    #[test]
    fn faulty_network_converges(steps in net_strategy()) {
        let mut replicas: Vec<Directory> = (0..NODES).map(|i| Directory::new(node(i))).collect();
        let mut digests: Vec<VersionVector> = vec![VersionVector::new(); NODES];
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                NetStep::Edit { at, change } => {
                    edit(&mut replicas[at], i as u64, "admin", change);
                }
                NetStep::Send { from, to, chunk, drop_mask, duplicate, reverse } => {
                    deliver(&mut replicas, &mut digests, from, to, (chunk, drop_mask, duplicate, reverse));
                }
            }
        }
        let mut union = replicas[0].clone();
        for r in &replicas[1..] {
            union.merge(r);
        }
        sync_every_pair(&mut replicas)?;
        for r in &replicas {
            assert_same(r, &union)?;
        }
    }

    /// [`faulty_network_converges`] with replicas compacting their logs in bounded steps
    /// between edits and deliveries (folding edits older than a moving audit window), so
    /// that placeholders for runs are sent, cut by stale digests, received in part and
    /// merged. Every replica ends with every op (the version vector of a reference that
    /// saw every edit and never compacted) and its view; so does a fresh replica synced
    /// from a compacted one; and a last full compaction changes no view.
    #[test]
    fn compaction_anywhere_changes_no_view(
        steps in net_steps(register_change_strategy(), 80),
        compactions in prop::collection::vec((0..NODES, 1usize..6, 0u64..20), 0..80),
    ) {
        let (mut replicas, mut reference) = seeded();
        let mut cursors = [CompactCursor::default(); NODES];
        let mut digests: Vec<VersionVector> = vec![replicas[0].version_vector().clone(); NODES];
        let mut compactions = compactions.into_iter();
        let mut folded = 0;
        for (i, step) in steps.into_iter().enumerate() {
            match step {
                NetStep::Edit { at, change } => {
                    if let Ok(op) = replicas[at].change(i as u64, "admin", change) {
                        reference.apply_delta(&DirectoryDelta { ops: vec![op] }).unwrap();
                    }
                }
                NetStep::Send { from, to, chunk, drop_mask, duplicate, reverse } => {
                    deliver(&mut replicas, &mut digests, from, to, (chunk, drop_mask, duplicate, reverse));
                }
            }
            if let Some((at, budget, window)) = compactions.next() {
                let before_ms = (i as u64).saturating_sub(window);
                folded += replicas[at].compact_step(before_ms, &mut cursors[at], budget).0;
            }
        }
        sync_every_pair(&mut replicas)?;
        for r in &replicas {
            prop_assert_eq!(r.version_vector(), reference.version_vector());
            prop_assert!(r.same_view(&reference), "compaction changed a view");
            let back = Directory::decode(&r.encode(), usize::MAX).unwrap();
            prop_assert!(back.same_view(&reference), "a compacted log decodes to another view");
            // The per-tenant history index: what is left of the history, in order.
            for tenant in TENANTS {
                let full = reference.history(tenant);
                let left = r.history(tenant);
                prop_assert!(left.iter().all(|op| full.contains(op)), "a history op from nowhere");
                prop_assert_eq!(&back.history(tenant), &left);
            }
        }
        let mut fresh = Directory::new(NodeId(50));
        sync_pair(&mut fresh, &mut replicas[0], 1)?;
        prop_assert!(fresh.same_view(&reference), "a replica synced from a compacted one differs");
        for r in &mut replicas {
            r.compact(u64::MAX);
            prop_assert!(r.same_view(&reference), "a full compaction changed a view");
            prop_assert!(r.op_count() <= reference.op_count());
        }
        // How often the steps fold (`cargo test -- --nocapture`): most cases should.
        println!("folded {folded} ops in steps");
    }

    /// A key is revoked on one replica while the others, concurrently, change its scopes,
    /// relabel it, re-create the same key id, rename or suspend its tenant — and merges
    /// happen in any order. Every replica ends with the key revoked, the lookup refusing it.
    #[test]
    fn revocation_wins_every_race(
        racing in prop::collection::vec((1..NODES, 0u8..5, any::<u8>(), prop::option::of(0..NODES)), 1..16),
    ) {
        let tenant = TENANTS[0];
        let key = KEYS[0];
        let mut origin = Directory::new(node(0));
        origin.change(1, "ops", Change::CreateTenant { tenant, name: "acme".into(), home: node(0) }).unwrap();
        let tenant_only = origin.clone();
        origin.change(2, "ops", Change::CreateKey {
            tenant, key, prefix: "tk_race".into(), secret_hash: [1; 32], scopes: Scopes::RESIZE, label: String::new(),
        }).unwrap();
        // Replicas 0 and 1 hold the key; replica 2 holds only the tenant, so it can mint
        // the same key id again (a collision, or a replayed creation) in the race.
        let mut replicas: Vec<Directory> = (0..NODES).map(|i| {
            let mut d = Directory::new(node(i));
            d.merge(if i == 2 { &tenant_only } else { &origin });
            d
        }).collect();
        replicas[0].change(10, "alice", Change::RevokeKey { tenant, key }).unwrap();
        for (i, (at, what, byte, merge_from)) in racing.into_iter().enumerate() {
            if let Some(from) = merge_from.filter(|from| *from != at) {
                let source = replicas[from].clone();
                replicas[at].merge(&source);
            }
            let at_ms = 20 + i as u64;
            let change = match what {
                0 => Change::SetKeyScopes { tenant, key, scopes: Scopes::RESIZE.union(Scopes::USAGE) },
                1 => Change::SetKeyLabel { tenant, key, label: format!("l{byte}") },
                2 => Change::RenameTenant { tenant, name: format!("n{byte}") },
                3 => Change::SetTenantStatus { tenant, status: TenantStatus::Active },
                _ => Change::CreateKey { tenant, key, prefix: "tk_race".into(), secret_hash: [byte; 32], scopes: Scopes::RESIZE, label: String::new() },
            };
            // A racer whose view already shows the key revoked (or, for a creation, the key
            // existing) is refused locally; the race is with those that have not heard.
            edit(&mut replicas[at], at_ms, "bob", change);
        }
        merge_all(&mut replicas, &(0..NODES).collect::<Vec<_>>());
        for r in &replicas {
            prop_assert!(r.key(key).unwrap().is_revoked());
            let standing: Vec<KeyStanding> = r.lookup_key("tk_race").map(|m| m.standing).collect();
            prop_assert_eq!(standing, vec![KeyStanding::Revoked]);
            assert_same(r, &replicas[0])?;
        }
    }

    /// A tenant is deleted on one replica while the others, concurrently, create keys for
    /// it, change scopes, rename it or set it active again. Every replica ends with the
    /// tenant deleted and every one of its keys refused.
    #[test]
    fn deleted_tenant_keys_stop_working_whatever_races(
        racing in prop::collection::vec((1..NODES, 0u8..4, 0usize..KEYS.len(), prop::option::of(0..NODES)), 1..16),
    ) {
        let tenant = TENANTS[0];
        let mut origin = Directory::new(node(0));
        origin.change(1, "ops", Change::CreateTenant { tenant, name: "acme".into(), home: node(0) }).unwrap();
        origin.change(2, "ops", Change::CreateKey {
            tenant, key: KEYS[0], prefix: "tk_k0".into(), secret_hash: [1; 32], scopes: Scopes::RESIZE, label: String::new(),
        }).unwrap();
        let mut replicas: Vec<Directory> = (0..NODES).map(|i| { let mut d = Directory::new(node(i)); d.merge(&origin); d }).collect();
        replicas[0].change(10, "alice", Change::DeleteTenant { tenant }).unwrap();
        for (i, (at, what, k, merge_from)) in racing.into_iter().enumerate() {
            if let Some(from) = merge_from.filter(|from| *from != at) {
                let source = replicas[from].clone();
                replicas[at].merge(&source);
            }
            let key = KEYS[k];
            let change = match what {
                0 => Change::CreateKey { tenant, key, prefix: format!("tk_k{k}"), secret_hash: [2; 32], scopes: Scopes::RESIZE, label: String::new() },
                1 => Change::SetKeyScopes { tenant, key, scopes: Scopes::RESIZE.union(Scopes::USAGE) },
                2 => Change::RenameTenant { tenant, name: format!("r{i}") },
                _ => Change::SetTenantStatus { tenant, status: TenantStatus::Active },
            };
            edit(&mut replicas[at], 20 + i as u64, "bob", change);
        }
        merge_all(&mut replicas, &(0..NODES).collect::<Vec<_>>());
        for r in &replicas {
            prop_assert!(r.tenant(tenant).unwrap().is_deleted());
            prop_assert!(!r.tenant(tenant).unwrap().is_serving());
            for (k, _) in KEYS.iter().enumerate() {
                for found in r.lookup_key(&format!("tk_k{k}")) {
                    prop_assert_eq!(found.standing, KeyStanding::TenantDeleted, "key {} still usable", found.key);
                }
            }
            assert_same(r, &replicas[0])?;
        }
    }

    /// Two admins set a quota concurrently on different replicas: after sync every replica
    /// holds the value with the higher stamp, whatever order the merges ran in.
    #[test]
    fn concurrent_quota_edits_resolve_deterministically(limits in prop::collection::vec((0..NODES, 0u64..1_000_000), 2..8), forward in any::<bool>()) {
        let tenant = TENANTS[0];
        let mut base = Directory::new(node(0));
        base.change(1, "ops", Change::CreateTenant { tenant, name: "acme".into(), home: node(0) }).unwrap();
        let mut replicas: Vec<Directory> = (0..NODES).map(|i| { let mut d = Directory::new(node(i)); d.merge(&base); d }).collect();
        let mut stamps = Vec::new();
        for (at, limit) in limits {
            let op = replicas[at]
                .change(5, "admin", Change::SetQuota { tenant, metric: Metric::Requests, period: PeriodKind::Month, limit: Some(limit) })
                .unwrap();
            stamps.push((op.stamp(), limit));
        }
        let winner = stamps.iter().max_by_key(|(stamp, _)| *stamp).unwrap().1;
        let order: Vec<usize> = if forward { (0..NODES).collect() } else { (0..NODES).rev().collect() };
        merge_all(&mut replicas, &order);
        for r in &replicas {
            prop_assert_eq!(r.tenant(tenant).unwrap().quota(Metric::Requests, PeriodKind::Month), Some(winner));
        }
    }

    /// The audit trail lists every accepted edit of a tenant once, with its actor, time
    /// and origin, in an order that respects what each editor had seen.
    #[test]
    fn audit_history_lists_every_change_with_its_actor(steps in prop::collection::vec((0..NODES, change_strategy(), 0..NODES, any::<bool>()), 0..40)) {
        let mut replicas: Vec<Directory> = (0..NODES).map(|i| Directory::new(node(i))).collect();
        let mut accepted: Vec<(NodeId, u64, String)> = Vec::new();
        for (i, (at, change, other, merge)) in steps.into_iter().enumerate() {
            if merge && at != other {
                let source = replicas[other].clone();
                replicas[at].merge(&source);
                continue;
            }
            let actor = format!("admin-{at}-{i}");
            if edit(&mut replicas[at], 1_000 + i as u64, &actor, change.clone()) {
                accepted.push((node(at), 1_000 + i as u64, actor));
            }
        }
        let mut all = replicas[0].clone();
        for r in &replicas[1..] {
            all.merge(r);
        }
        let history = all.all_history();
        prop_assert_eq!(history.len(), accepted.len());
        for (origin, at_ms, actor) in &accepted {
            let found = history.iter().filter(|op| op.origin == *origin && op.at_ms == *at_ms && &op.actor == actor).count();
            prop_assert_eq!(found, 1, "change by {} at {} listed {} times", actor, at_ms, found);
        }
        // Per tenant, the history is the tenant's share of the whole, in stamp order; the
        // rest is cluster-scoped (decommissions).
        let mut listed = history.iter().filter(|op| op.change.tenant().is_none()).count();
        for tenant in TENANTS {
            let ops = all.history(tenant);
            prop_assert!(ops.windows(2).all(|w| w[0].stamp() < w[1].stamp()));
            prop_assert!(ops.iter().all(|op| op.change.tenant() == Some(tenant)));
            listed += ops.len();
        }
        prop_assert_eq!(listed, history.len());
        // Causality: each origin's ops appear in its own order (stamps grow with seq).
        for i in 0..NODES {
            let seqs: Vec<u64> = history.iter().filter(|op| op.origin == node(i)).map(|op| op.seq).collect();
            prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "origin order broken: {:?}", seqs);
        }
    }

    #[test]
    fn staged_ops_are_enforced_exactly_as_promoted(
        replicas in directories_strategy(),
        chunk in 1usize..6,
        cuts in prop::collection::vec(0u64..8, 0..6),
    ) {
        // Replica 0 learns what the others hold by staging it in chunks, promoting each
        // origin's prefix up to a random cut after each chunk: its view is always that of
        // exactly the ops promoted (and its own), and promoting everything ends where
        // applying does.
        let mut full = replicas[0].clone();
        for other in &replicas[1..] {
            full.merge(other);
        }
        let mut staged = replicas[0].clone();
        let mut step = 0;
        loop {
            let delta = full.delta_since(staged.version_vector(), chunk);
            if delta.is_empty() {
                break;
            }
            staged.stage_delta(&delta).unwrap();
            let cut = cuts.get(step).copied().unwrap_or(0);
            step += 1;
            let mut through = VersionVector::new();
            for i in 0..NODES {
                through.advance(node(i), cut);
            }
            staged.promote(&through);
            let enforced = staged.enforced().clone();
            let mut reference = Directory::new(node(0));
            reference
                .apply_delta(&DirectoryDelta {
                    ops: full
                        .delta_since(&VersionVector::new(), usize::MAX)
                        .ops
                        .into_iter()
                        .filter(|op| op.seq <= enforced.get(op.origin))
                        .collect(),
                })
                .unwrap();
            prop_assert!(staged.same_view(&reference), "the view is not the promoted prefix");
        }
        prop_assert!(staged.same_state(&full));
        staged.promote(full.version_vector());
        prop_assert_eq!(staged.staged(), 0);
        assert_same(&staged, &full)?;
    }

    #[test]
    fn state_round_trips(replicas in directories_strategy()) {
        for r in &replicas {
            let back = Directory::decode(&r.encode(), usize::MAX).unwrap();
            prop_assert!(back == *r);
            prop_assert!(back.same_view(r));
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Directory::decode(&bytes, usize::MAX);
        let _ = DirectoryDelta::decode(&bytes, usize::MAX);
        let _ = SyncMessage::decode(&bytes, usize::MAX);
        let mut framed = vec![1u8, 6];
        framed.extend_from_slice(&bytes);
        let _ = Directory::decode(&framed, usize::MAX);
        framed[1] = 7;
        let _ = DirectoryDelta::decode(&framed, usize::MAX);
        framed[1] = 8;
        let _ = SyncMessage::decode(&framed, usize::MAX);
    }

    #[test]
    fn corrupted_state_never_panics(replicas in directories_strategy(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let bytes = replicas[0].encode();
        let mut corrupted = bytes.clone();
        let i = at.index(corrupted.len());
        corrupted[i] = byte;
        if let Ok(decoded) = Directory::decode(&corrupted, usize::MAX) {
            // Whatever decodes is a well-formed directory: it re-encodes to itself.
            let again = Directory::decode(&decoded.encode(), usize::MAX).unwrap();
            prop_assert!(again == decoded);
        }
    }
}

fn two(replicas: &mut [Directory], a: usize, b: usize) -> (&mut Directory, &mut Directory) {
    assert_ne!(a, b);
    if a < b {
        let (left, right) = replicas.split_at_mut(b);
        (&mut left[a], &mut right[0])
    } else {
        let (left, right) = replicas.split_at_mut(a);
        (&mut right[0], &mut left[b])
    }
}
