//! Property tests of the usage ledger: merge is a join (commutative, associative,
//! idempotent), state only grows, and delta-state replication over a faulty network
//! (loss, duplication, reordering, chunking) converges to the full-state merge once
//! anti-entropy resends — with every version-vector claim a really complete prefix along
//! the way. Encodings round-trip, and decoding arbitrary or corrupted bytes never panics.

use proptest::prelude::*;
use tessera_crdt::ledger::{Delta, Ledger};
use tessera_crdt::{CounterKey, Metric, NodeId, Period, TenantId, VersionVector};

const NODES: usize = 3;

fn node(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

fn key_strategy() -> impl Strategy<Value = CounterKey> {
    (0u64..4, 0usize..2, 0usize..4).prop_map(|(tenant, period, metric)| {
        let period = [
            Period::month(2026, 12).unwrap(),
            Period::hour(500_000).unwrap(),
        ][period];
        CounterKey::new(TenantId(tenant), period, Metric::ALL[metric])
    })
}

/// A replica built from random local increments and random full merges among replicas.
fn ledgers_strategy() -> impl Strategy<Value = Vec<Ledger>> {
    let op = (0..NODES, key_strategy(), 1u64..50, 0..NODES, any::<bool>());
    prop::collection::vec(op, 0..40).prop_map(|ops| {
        let mut ledgers: Vec<Ledger> = (0..NODES).map(|i| Ledger::new(node(i))).collect();
        for (at, key, amount, other, merge) in ops {
            if merge && other != at {
                let source = ledgers[other].clone();
                ledgers[at].merge(&source);
            } else {
                ledgers[at].increment(key, amount).unwrap();
            }
        }
        ledgers
    })
}

fn merged(a: &Ledger, b: &Ledger) -> Ledger {
    let mut m = a.clone();
    m.merge(b);
    m
}

/// `small ≤ big` in the lattice: joining `small` into `big` changes nothing.
fn covered(small: &Ledger, big: &Ledger) -> bool {
    merged(big, small).same_state(big)
}

/// Every claim of `replica`'s version vector is a complete prefix of each origin's own
/// history: a slot whose final `seq` is covered is held at its final value.
fn claims_are_complete(replica: &Ledger, origins: &[Ledger]) -> Result<(), String> {
    for origin in origins {
        let covered_seq = replica.version_vector().get(origin.node());
        for (key, owner, slot) in origin.slots() {
            if owner == origin.node()
                && slot.seq <= covered_seq
                && replica.slot(&key, owner) != slot
            {
                return Err(format!(
                    "{} claims {covered_seq} of {} but holds {:?} for {key:?}, final {slot:?}",
                    replica.node(),
                    origin.node(),
                    replica.slot(&key, owner)
                ));
            }
        }
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum NetOp {
    Increment {
        at: usize,
        key: CounterKey,
        amount: u64,
    },
    /// `from` computes what `to` lacks from `to`'s current digest, in chunks.
    Send {
        from: usize,
        to: usize,
        entries_max: usize,
    },
    Deliver {
        pick: usize,
    },
    Duplicate {
        pick: usize,
    },
    Drop {
        pick: usize,
    },
}

fn net_op_strategy() -> impl Strategy<Value = NetOp> {
    prop_oneof![
        3 => (0..NODES, key_strategy(), 1u64..20)
            .prop_map(|(at, key, amount)| NetOp::Increment { at, key, amount }),
        2 => (0..NODES, 0..NODES, 1usize..5)
            .prop_map(|(from, to, entries_max)| NetOp::Send { from, to, entries_max }),
        3 => any::<usize>().prop_map(|pick| NetOp::Deliver { pick }),
        1 => any::<usize>().prop_map(|pick| NetOp::Duplicate { pick }),
        1 => any::<usize>().prop_map(|pick| NetOp::Drop { pick }),
    ]
}

/// Pull-based anti-entropy until nothing moves: every ordered pair, chunks in order.
fn anti_entropy(replicas: &mut [Ledger], entries_max: usize) {
    loop {
        let mut moved = false;
        for from in 0..replicas.len() {
            for to in 0..replicas.len() {
                if from == to {
                    continue;
                }
                let source = replicas[from].clone();
                let chunks: Vec<Delta> = source
                    .chunks_since(replicas[to].version_vector().clone(), entries_max)
                    .collect();
                for chunk in chunks {
                    replicas[to].apply_delta(&chunk).unwrap();
                    moved = true;
                }
            }
        }
        if !moved {
            return;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_a_join(ledgers in ledgers_strategy()) {
        let [a, b, c] = [&ledgers[0], &ledgers[1], &ledgers[2]];
        prop_assert!(merged(a, b).same_state(&merged(b, a)), "commutative");
        prop_assert!(
            merged(&merged(a, b), c).same_state(&merged(a, &merged(b, c))),
            "associative"
        );
        prop_assert!(merged(a, a).same_state(a), "idempotent");
        prop_assert!(covered(a, &merged(a, b)), "merge only grows");
    }

    #[test]
    fn increments_only_grow_state(ledgers in ledgers_strategy(), key in key_strategy(), amount in 1u64..9) {
        let mut after = ledgers[0].clone();
        after.increment(key, amount).unwrap();
        prop_assert!(covered(&ledgers[0], &after));
        prop_assert_eq!(after.total(&key), ledgers[0].total(&key) + amount);
    }

    #[test]
    fn faulty_delta_delivery_converges_to_the_full_merge(
        ops in prop::collection::vec(net_op_strategy(), 0..80),
        final_entries_max in 1usize..4,
    ) {
        // `truth[i]` does only node i's own increments: the full-state merge of them all is
        // what every replica must end with.
        let mut truth: Vec<Ledger> = (0..NODES).map(|i| Ledger::new(node(i))).collect();
        let mut replicas = truth.clone();
        let mut network: Vec<(usize, Delta)> = Vec::new();
        for op in ops {
            let before: Vec<Ledger> = replicas.clone();
            match op {
                NetOp::Increment { at, key, amount } => {
                    truth[at].increment(key, amount).unwrap();
                    replicas[at].increment(key, amount).unwrap();
                }
                NetOp::Send { from, to, entries_max } => {
                    if from != to {
                        let peer = replicas[to].version_vector().clone();
                        for chunk in replicas[from].chunks_since(peer, entries_max) {
                            prop_assert!(chunk.entry_count() <= entries_max);
                            network.push((to, chunk));
                        }
                    }
                }
                NetOp::Deliver { pick } | NetOp::Duplicate { pick } | NetOp::Drop { pick } => {
                    if network.is_empty() {
                        continue;
                    }
                    let index = pick % network.len();
                    let (to, delta) = match op {
                        NetOp::Duplicate { .. } => network[index].clone(),
                        _ => network.remove(index),
                    };
                    if !matches!(op, NetOp::Drop { .. }) {
                        // Wire it through the codec as the sync layer would.
                        let decoded = Delta::decode(&delta.encode()).unwrap();
                        prop_assert_eq!(&decoded, &delta);
                        replicas[to].apply_delta(&decoded).unwrap();
                    }
                }
            }
            for (replica, old) in replicas.iter().zip(&before) {
                prop_assert!(covered(old, replica), "state went down at {}", replica.node());
                claims_are_complete(replica, &truth).map_err(TestCaseError::fail)?;
            }
        }
        anti_entropy(&mut replicas, final_entries_max);
        let mut full = Ledger::new(NodeId(99));
        for t in &truth {
            full.merge(t);
        }
        for replica in &replicas {
            prop_assert!(replica.same_state(&full), "{} did not converge", replica.node());
        }
    }

    #[test]
    fn state_and_digest_round_trip(ledgers in ledgers_strategy()) {
        for ledger in &ledgers {
            let bytes = ledger.encode();
            let back = Ledger::decode(&bytes).unwrap();
            prop_assert!(back.same_state(ledger));
            prop_assert_eq!(back.encode(), bytes);
            let vv = ledger.version_vector();
            prop_assert_eq!(&VersionVector::decode(&vv.encode()).unwrap(), vv);
            let delta = ledger.delta_since(&VersionVector::new(), 7);
            prop_assert_eq!(Delta::decode(&delta.encode()).unwrap(), delta);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = Ledger::decode(&bytes);
        let _ = Delta::decode(&bytes);
        let _ = VersionVector::decode(&bytes);
        // With a valid header, so the body parser is exercised too.
        for kind in 1u8..=3 {
            let mut framed = vec![1, kind];
            framed.extend_from_slice(&bytes);
            let _ = Ledger::decode(&framed);
            let _ = Delta::decode(&framed);
            let _ = VersionVector::decode(&framed);
        }
    }

    #[test]
    fn decoding_corrupted_encodings_never_panics(
        ledgers in ledgers_strategy(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let encodings = [
            ledgers[0].encode(),
            ledgers[1].delta_since(&VersionVector::new(), 5).encode(),
        ];
        for mut bytes in encodings {
            for (at, value) in &flips {
                let index = at % bytes.len();
                bytes[index] = *value;
            }
            if let Ok(ledger) = Ledger::decode(&bytes) {
                // Whatever decodes is usable: reads and re-encoding do not panic.
                let _ = ledger.encode();
                let _ = ledger.delta_since(&VersionVector::new(), 3);
            }
            if let Ok(delta) = Delta::decode(&bytes) {
                let mut target = Ledger::new(NodeId(50));
                prop_assert!(target.apply_delta(&delta).is_ok());
            }
        }
    }
}
