//! Finality of billing periods on the simulator (issue #14, docs/PROTOCOL.md "Finality"):
//! every node seals its usage of a period `seal_grace_ms` after the period ends, and a
//! period is final on a node only once it holds every writer's seal and the usage before
//! it. Scenarios: a period that ends during a partition (final on neither side until the
//! heal, then final everywhere with the same totals, equal to what was written); a node
//! cut off with usage nobody saw, crashed, and back after the period closed (its usage
//! counted, the period final only then); a dead member, which blocks finality until it is
//! decommissioned; sealing under loss and duplication with every node sealing at once;
//! usage after a seal refused. Compaction: a final period replaced by its settlement, the
//! same bytes on every node, the totals unchanged, and a node that missed some of the
//! period's usage receiving the settlement (in parts) before anything else. Retirement of a
//! decommissioned member's identity, settlements forgotten after their retention (late
//! usage of a forgotten period taken by no one), and the directory's log folding
//! overwritten edits.
//!
//! The periods are UTC hours (the ledger takes any period; the edge bills months, which
//! end on hour boundaries, so the same seals cover them): the simulator starts at an hour
//! boundary and runs an hour and a bit. Seven nodes, small ids, `seal_grace_ms` 60 s; two
//! seeds each, a few seconds of CPU in a debug build. `TESSERA_SIM_SEEDS=<n>` runs more,
//! `TESSERA_SIM_SEED=<s>` replays one.

use tessera_crdt::directory::Change;
use tessera_crdt::ledger::{Finality, IncrementError};
use tessera_crdt::VersionVector;
use tessera_crdt::{CounterKey, Metric, Period, PeriodKind, TenantId};
use tessera_sync::sim::{fast_config, for_each_seed, NetConfig, Sim, START_MS};
use tessera_sync::{Input, Message, SyncConfig};

const N: usize = 7;
const SEEDS: u64 = 2;
const GRACE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;

fn config() -> SyncConfig {
    SyncConfig {
        seal_grace_ms: GRACE_MS,
        ..fast_config()
    }
}

/// The hour the simulator starts in.
fn hour() -> Period {
    let hour = Period::containing(PeriodKind::Hour, START_MS);
    assert_eq!(hour.start_ms(), START_MS, "the simulator starts on an hour");
    hour
}

/// The fleet on the wan, compacting a final period `after_ms` after its end.
fn compacting(seed: u64, after_ms: u64) -> Sim {
    let config = SyncConfig {
        compact_after_ms: after_ms,
        ..config()
    };
    Sim::new(N, seed, config, NetConfig::wan())
}

fn key(tenant: u64, metric: Metric) -> CounterKey {
    CounterKey::new(TenantId(tenant), hour(), metric)
}

/// Every up node writes a little usage of the hour every `every_ms` for `ms`.
fn write(sim: &mut Sim, nodes: &[usize], ms: u64, every_ms: u64) {
    for step in 0..ms / every_ms {
        for &i in nodes {
            if sim.is_up(i) {
                let tenant = 1 + (step + i as u64) % 5;
                sim.increment(i, key(tenant, Metric::Requests), 1 + i as u64);
            }
        }
        sim.run_for(every_ms);
    }
}

/// What was written for `tenant` in the hour, by every node (the truth).
fn written(sim: &Sim, tenant: u64) -> u64 {
    sim.truth
        .increments
        .iter()
        .filter(|((k, _), _)| *k == key(tenant, Metric::Requests))
        .map(|(_, v)| v)
        .sum()
}

fn missing(sim: &Sim, i: usize) -> Vec<usize> {
    match sim.node(i).finality(hour()) {
        Finality::Final => Vec::new(),
        Finality::Open { missing } => missing
            .iter()
            .map(|id| sim.ids.iter().position(|x| x == id).expect("a member"))
            .collect(),
    }
}

/// Every node in `nodes` calls the hour final, with totals equal to what was written.
fn final_everywhere_with_the_truth(sim: &Sim, seed: u64, nodes: &[usize]) {
    for &i in nodes {
        assert_eq!(
            missing(sim, i),
            Vec::<usize>::new(),
            "seed {seed}: node {i} does not call the hour final"
        );
        for tenant in 1..=5 {
            assert_eq!(
                sim.node(i).ledger().total(&key(tenant, Metric::Requests)),
                written(sim, tenant),
                "seed {seed}: node {i}'s final total of tenant {tenant}"
            );
        }
    }
}

/// `late` (entries a node wrote earlier), pushed to node 0 now by node 1 as a relay.
fn relay_late(sim: &mut Sim, late: &tessera_crdt::Delta) {
    let relayer = sim.ids[1];
    sim.with_node(0, |node, now| {
        node.handle(
            now,
            Input::Message {
                from: relayer,
                message: Message::LedgerPush {
                    delta: late.clone(),
                    first_change_ms: now,
                    relay: true,
                },
            },
        );
    });
}

#[test]
fn a_period_that_ends_during_a_partition_is_final_only_after_the_heal() {
    for_each_seed(SEEDS, |seed| {
        let mut sim = Sim::new(N, seed, config(), NetConfig::wan());
        let all: Vec<usize> = (0..N).collect();
        write(&mut sim, &all, 30 * 60_000, 1_000);
        let (a, b): (Vec<usize>, Vec<usize>) = (0..N).partition(|i| *i < 4);
        sim.partition(&[a.clone(), b.clone()]);
        write(&mut sim, &all, 30 * 60_000, 1_000);
        // The hour ended during the partition; every node sealed it.
        sim.run_until(START_MS + HOUR_MS + GRACE_MS + 10_000);
        for &i in &all {
            let other = if a.contains(&i) { &b } else { &a };
            assert_eq!(
                &missing(&sim, i),
                other,
                "seed {seed}: node {i} waits for exactly the other side's seals"
            );
        }
        sim.heal();
        sim.run_for(10_000);
        final_everywhere_with_the_truth(&sim, seed, &all);
        // And usage of a sealed hour is refused.
        let refused = sim.with_node(0, |node, now| {
            node.increment(now, key(1, Metric::Requests), 1)
        });
        assert!(
            matches!(refused, Err(IncrementError::Sealed { .. })),
            "seed {seed}: {refused:?}"
        );
    });
}

#[test]
fn a_node_back_after_the_period_closed_with_unsent_usage_is_counted_before_finality() {
    for_each_seed(SEEDS, |seed| {
        let mut sim = Sim::new(N, seed, config(), NetConfig::wan());
        let all: Vec<usize> = (0..N).collect();
        let others: Vec<usize> = (0..N - 1).collect();
        let late = N - 1;
        write(&mut sim, &all, 10 * 60_000, 1_000);
        // Node 6 is cut off, bills usage nobody sees, and crashes (durable state kept).
        sim.partition(&[others.clone(), vec![late]]);
        write(&mut sim, &all, 10 * 60_000, 1_000);
        sim.crash(late);
        sim.run_until(START_MS + 3 * HOUR_MS);
        for &i in &others {
            assert_eq!(missing(&sim, i), vec![late], "seed {seed}: node {i}");
            assert!(
                sim.node(i).ledger().total(&key(1, Metric::Requests)) < written(&sim, 1),
                "seed {seed}: node {i} already has the cut-off node's usage"
            );
        }
        // Back two hours after the hour closed: it seals at once, after its usage.
        sim.heal();
        sim.restart(late);
        sim.run_for(15_000);
        final_everywhere_with_the_truth(&sim, seed, &all);
    });
}

#[test]
fn a_dead_member_blocks_finality_until_it_is_decommissioned() {
    for_each_seed(SEEDS, |seed| {
        let mut sim = Sim::new(N, seed, config(), NetConfig::wan());
        let all: Vec<usize> = (0..N).collect();
        write(&mut sim, &all, 20 * 60_000, 1_000);
        let dead = 3;
        sim.run_for(5_000);
        sim.crash(dead);
        let live: Vec<usize> = all.iter().copied().filter(|i| *i != dead).collect();
        sim.run_until(START_MS + HOUR_MS + GRACE_MS + 10_000);
        for &i in &live {
            assert_eq!(missing(&sim, i), vec![dead], "seed {seed}: node {i}");
        }
        let dead_id = sim.ids[dead];
        sim.with_node(0, |node, now| {
            node.edit_directory(now, "ops", Change::DecommissionNode { node: dead_id })
        })
        .expect("decommission");
        sim.run_for(10_000);
        // Its usage counts as it reached the live nodes: all of it, here (it died after
        // its last write had replicated).
        final_everywhere_with_the_truth(&sim, seed, &live);
    });
}

#[test]
fn concurrent_seals_over_a_lossy_network_reach_the_same_final_totals() {
    for_each_seed(SEEDS, |seed| {
        let mut sim = Sim::new(N, seed, config(), NetConfig::faulty());
        let all: Vec<usize> = (0..N).collect();
        // Writes up to the hour's last second, then every node seals at once.
        write(&mut sim, &all, HOUR_MS, 2_000);
        sim.run_until(START_MS + HOUR_MS + GRACE_MS + 30_000);
        final_everywhere_with_the_truth(&sim, seed, &all);
        for &i in &all {
            assert_eq!(
                sim.node(i).ledger().sealed_through(sim.ids[i]),
                START_MS + HOUR_MS,
                "seed {seed}: node {i} sealed through the hour's end"
            );
        }
    });
}

#[test]
fn compaction_settles_a_final_period_the_same_everywhere_and_a_node_that_missed_usage_receives_it()
{
    for_each_seed(SEEDS, |seed| {
        let after_ms = 30 * 60_000;
        let mut sim = compacting(seed, after_ms);
        let all: Vec<usize> = (0..N).collect();
        let late = N - 1;
        // 300 tenants' usage of the hour: settlements of several parts (64 totals each).
        for round in 0..60u64 {
            for &i in &all {
                for t in 0..5 {
                    let tenant = 1 + (round * 5 + t) % 300;
                    sim.increment(i, key(tenant, Metric::Requests), 1 + i as u64);
                }
            }
            sim.run_for(20_000);
        }
        // Node 6 hears nothing more from the others (its own messages still go out): it
        // misses the rest of the hour's usage, while its seal reaches everyone.
        let cut = (0..N - 1).map(|j| (j, late)).collect();
        sim.set_cut(cut);
        write(
            &mut sim,
            &all[..N - 1],
            HOUR_MS - 20 * 60_000 - 10_000,
            5_000,
        );
        let totals_before: Vec<u64> = (1..=300)
            .map(|t| sim.node(0).ledger().total(&key(t, Metric::Requests)))
            .collect();
        sim.run_until(START_MS + HOUR_MS + after_ms + 2 * 60_000);
        let settled: Vec<Vec<u8>> = all[..N - 1]
            .iter()
            .map(|&i| {
                let ledger = sim.node(i).ledger();
                assert_eq!(
                    ledger.slots().count(),
                    0,
                    "seed {seed}: node {i} kept slots"
                );
                ledger
                    .settlement(hour())
                    .unwrap_or_else(|| panic!("seed {seed}: node {i} did not compact"))
                    .encode()
            })
            .collect();
        assert!(
            settled.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: the settlements differ"
        );
        assert!(
            sim.node(late).ledger().settlement(hour()).is_none(),
            "seed {seed}: node 6 cannot have compacted: it is not final there"
        );
        let totals_after: Vec<u64> = (1..=300)
            .map(|t| sim.node(0).ledger().total(&key(t, Metric::Requests)))
            .collect();
        assert_eq!(
            totals_before, totals_after,
            "seed {seed}: compaction changed totals"
        );
        // Node 6 hears the others again: it takes the settlement, then the rest.
        sim.heal();
        sim.run_for(20_000);
        let node6 = sim.node(late);
        assert!(
            node6.stats().settlements_received >= 1,
            "seed {seed}: node 6 received no settlement"
        );
        assert_eq!(
            node6
                .ledger()
                .settlement(hour())
                .map(|s| s.encode())
                .as_ref(),
            Some(&settled[0]),
            "seed {seed}: node 6's settlement"
        );
        assert!(node6.finality(hour()).is_final(), "seed {seed}: node 6");
        for tenant in 1..=5 {
            assert_eq!(
                node6.ledger().total(&key(tenant, Metric::Requests)),
                written(&sim, tenant),
                "seed {seed}: node 6's total of tenant {tenant}"
            );
        }
        println!(
            "seed {seed}: {} tenants settled, {} bytes; node 6 took it in parts ({} refused)",
            totals_after.iter().filter(|t| **t > 0).count(),
            settled[0].len(),
            node6.stats().settlement_parts_refused
        );
    });
}

#[test]
fn a_decommissioned_member_is_retired_once_its_usage_is_settled_and_its_late_entries_are_refused() {
    for_each_seed(SEEDS, |seed| {
        let after_ms = 10 * 60_000;
        let mut sim = compacting(seed, after_ms);
        let all: Vec<usize> = (0..N).collect();
        write(&mut sim, &all, 20 * 60_000, 1_000);
        let dead = 3;
        let dead_id = sim.ids[dead];
        sim.run_for(5_000);
        // What the dead member sent, to replay once it is retired.
        let late = sim
            .node(dead)
            .ledger()
            .delta_since(&VersionVector::new(), 100_000);
        sim.crash(dead);
        let live: Vec<usize> = all.iter().copied().filter(|i| *i != dead).collect();
        sim.run_until(START_MS + HOUR_MS + GRACE_MS + 10_000);
        sim.with_node(0, |node, now| {
            node.edit_directory(now, "ops", Change::DecommissionNode { node: dead_id })
        })
        .expect("decommission");
        sim.run_until(START_MS + HOUR_MS + after_ms + 2 * 60_000);
        for &i in &live {
            let node = sim.node(i);
            assert!(
                node.ledger().is_retired(dead_id),
                "seed {seed}: node {i} did not retire the decommissioned member"
            );
            assert_eq!(node.ledger().version_vector().get(dead_id), 0);
            assert!(!node.period_writers().contains(&dead_id));
        }
        final_everywhere_with_the_truth(&sim, seed, &live);
        // Its entries, relayed late by a live member: refused, nothing re-created.
        relay_late(&mut sim, &late);
        sim.run_for(10_000);
        for &i in &live {
            assert_eq!(
                sim.node(i).ledger().version_vector().get(dead_id),
                0,
                "seed {seed}: node {i} took the retired member's entries back"
            );
            assert_eq!(
                sim.node(i).ledger().slots().count(),
                0,
                "seed {seed}: node {i}"
            );
        }
        final_everywhere_with_the_truth(&sim, seed, &live);
    });
}

#[test]
fn settlements_are_forgotten_after_their_retention_and_late_usage_of_them_changes_nothing() {
    for_each_seed(SEEDS, |seed| {
        let after_ms = 10 * 60_000;
        let keep_ms = 20 * 60_000;
        let config = SyncConfig {
            compact_after_ms: after_ms,
            settlement_keep_ms: keep_ms,
            ..config()
        };
        let mut sim = Sim::new(N, seed, config, NetConfig::wan());
        let all: Vec<usize> = (0..N).collect();
        write(&mut sim, &all, 20 * 60_000, 1_000);
        // Everything node 2 wrote, to replay once the hour is forgotten.
        let late = sim
            .node(2)
            .ledger()
            .delta_since(&VersionVector::new(), 100_000);
        // Compacted everywhere first, the same settlement on every node.
        sim.run_until(START_MS + HOUR_MS + after_ms + 2 * 60_000);
        let digests: Vec<Option<u64>> = all
            .iter()
            .map(|&i| sim.node(i).ledger().settlement(hour()).map(|s| s.digest()))
            .collect();
        assert!(
            digests[0].is_some() && digests.windows(2).all(|w| w[0] == w[1]),
            "seed {seed}: not settled the same everywhere: {digests:?}"
        );
        // A holder of the settlement answers a puller that lacks the hour's slots with the
        // settlement; one whose pull says it forgot the hour, with chunks (before, it
        // sent the settlement for ever, and the puller, refusing it, pulled again).
        let puller = sim.ids[1];
        let pull = |forgotten_before_ms| Message::LedgerPull {
            digest: VersionVector::new(),
            settled: Vec::new(),
            forgotten_before_ms,
            resume: None,
        };
        let answers = sim.with_node(0, |node, now| {
            [0, hour().end_ms()].map(|forgotten_before_ms| {
                node.handle(
                    now,
                    Input::Message {
                        from: puller,
                        message: pull(forgotten_before_ms),
                    },
                );
                node.take_outputs()
                    .into_iter()
                    .filter_map(|output| match output {
                        tessera_sync::Output::Send { to, message } if to == puller => {
                            Some(message.kind())
                        }
                        _ => None,
                    })
                    .find(|kind| *kind == "settlement_part" || *kind == "ledger_chunk")
            })
        });
        assert_eq!(
            answers,
            [Some("settlement_part"), Some("ledger_chunk")],
            "seed {seed}"
        );
        // Then forgotten everywhere, and the next hour (still open) untouched.
        let next = hour().next().expect("an hour");
        sim.increment(0, CounterKey::new(TenantId(1), next, Metric::Requests), 9);
        sim.run_until(START_MS + HOUR_MS + keep_ms + 2 * 60_000);
        for &i in &all {
            let ledger = sim.node(i).ledger();
            assert_eq!(ledger.settlement(hour()), None, "seed {seed}: node {i}");
            assert!(
                ledger.forgotten_before_ms() >= hour().end_ms(),
                "seed {seed}: node {i} forgot through {}",
                ledger.forgotten_before_ms()
            );
            assert_eq!(ledger.total(&key(1, Metric::Requests)), 0);
            assert_eq!(sim.node(i).stats().settlements_forgotten, 1);
        }
        // Node 2's usage of the hour, relayed late: taken by no one.
        relay_late(&mut sim, &late);
        sim.run_for(10_000);
        for &i in &all {
            let ledger = sim.node(i).ledger();
            assert_eq!(
                ledger
                    .slots()
                    .filter(|(k, _, _)| k.period == hour())
                    .count(),
                0,
                "seed {seed}: node {i} took a forgotten hour's slots back"
            );
            assert_eq!(
                ledger.total(&CounterKey::new(TenantId(1), next, Metric::Requests)),
                9,
                "seed {seed}: node {i}: the open hour"
            );
        }
    });
}

#[test]
fn the_directory_folds_overwritten_edits_and_a_node_back_later_rebuilds_the_same_view() {
    for_each_seed(SEEDS, |seed| {
        let mut sim = Sim::new(
            N,
            seed,
            SyncConfig {
                directory_audit_keep_ms: 60_000,
                ..config()
            },
            NetConfig::wan(),
        );
        let away = N - 1;
        sim.crash(away);
        sim.create_tenant(0, 42, 0, Some(10));
        sim.run_for(5_000);
        for limit in 11..=110 {
            sim.with_node(limit as usize % (N - 1), |node, now| {
                node.edit_directory(
                    now,
                    "ops",
                    Change::SetQuota {
                        tenant: TenantId(42),
                        metric: Metric::Requests,
                        period: PeriodKind::Month,
                        limit: Some(limit),
                    },
                )
            })
            .expect("a quota edit");
            sim.run_for(1_000);
        }
        // The hourly sweep (a step a minute, an origin a step here) folds what the audit
        // window (60 s here) no longer keeps whole.
        sim.run_until(START_MS + HOUR_MS + 10 * 60_000);
        for i in 0..N - 1 {
            let node = sim.node(i);
            assert!(
                node.stats().directory_ops_compacted >= 99,
                "seed {seed}: node {i} folded {}",
                node.stats().directory_ops_compacted
            );
            assert!(node.directory().same_view(sim.node(0).directory()));
        }
        sim.restart(away);
        sim.run_for(10_000);
        let view = sim.node(away).directory();
        assert!(
            view.same_view(sim.node(0).directory()),
            "seed {seed}: the node back rebuilt another view from the folded log"
        );
        assert_eq!(
            view.tenant(TenantId(42))
                .and_then(|t| t.quota(Metric::Requests, PeriodKind::Month)),
            Some(110)
        );
    });
}
