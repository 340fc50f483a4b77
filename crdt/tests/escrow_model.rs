//! Bounded counter (escrow) against a sequential model. Random nodes grant (home only),
//! consume, refund part of what they consumed, transfer, call back rights after a quota is
//! lowered, and ship whole counter states over a network that loses, duplicates and
//! reorders them. After every step, in every replica: the invariant holds (no node used
//! more than it held, none refunded more than it consumed), net consumption is within the
//! limit, no view exceeds what really happened, and no rights were created by merging or
//! duplicated delivery.
//! After a final full exchange every replica agrees with the model exactly. Merge is
//! checked to be a join, and encodings to round-trip and never panic on arbitrary bytes.

use proptest::prelude::*;
use tessera_crdt::escrow::{BoundedCounter, EscrowError};
use tessera_crdt::NodeId;

const NODES: usize = 4;
/// Node 0 is the tenant's home node: the only one that grants.
const HOME: usize = 0;

fn node(i: usize) -> NodeId {
    NodeId(i as u64 + 10)
}

#[derive(Clone, Debug)]
enum Op {
    Grant { amount: u64 },
    Consume { at: usize, amount: u64 },
    Refund { at: usize, amount: u64 },
    Transfer { from: usize, to: usize, amount: u64 },
    CallBack { at: usize, quota: u64 },
    Send { from: usize, to: usize },
    Deliver { pick: usize },
    Duplicate { pick: usize },
    Drop { pick: usize },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (1u64..40).prop_map(|amount| Op::Grant { amount }),
        4 => (0..NODES, 1u64..15).prop_map(|(at, amount)| Op::Consume { at, amount }),
        2 => (0..NODES, 1u64..10).prop_map(|(at, amount)| Op::Refund { at, amount }),
        3 => (0..NODES, 0..NODES, 1u64..20)
            .prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
        1 => (0..NODES, 0u64..60).prop_map(|(at, quota)| Op::CallBack { at, quota }),
        3 => (0..NODES, 0..NODES).prop_map(|(from, to)| Op::Send { from, to }),
        3 => any::<usize>().prop_map(|pick| Op::Deliver { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Duplicate { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Drop { pick }),
    ]
}

/// What really happened, sequentially: each node's own actions, and the transfers it was
/// really sent (whether or not its replica has heard of them yet).
#[derive(Default)]
struct Model {
    granted: [u64; NODES],
    consumed: [u64; NODES],
    refunded: [u64; NODES],
    retired: [u64; NODES],
    sent: [[u64; NODES]; NODES],
}

impl Model {
    /// Rights node `i` really holds: everything granted to or sent to it, less its use.
    fn true_rights(&self, i: usize) -> u64 {
        let incoming: u64 = self.granted[i] + (0..NODES).map(|j| self.sent[j][i]).sum::<u64>();
        let outgoing: u64 = self.consumed[i] - self.refunded[i]
            + self.retired[i]
            + self.sent[i].iter().sum::<u64>();
        incoming - outgoing
    }

    fn total(cells: &[u64; NODES]) -> u128 {
        cells.iter().map(|v| u128::from(*v)).sum()
    }

    /// Consumption net of refunds, all nodes.
    fn net_consumed(&self) -> u128 {
        Model::total(&self.consumed) - Model::total(&self.refunded)
    }
}

fn check_replicas(replicas: &[BoundedCounter], model: &Model) -> Result<(), TestCaseError> {
    let granted = Model::total(&model.granted);
    let consumed = Model::total(&model.consumed);
    let refunded = Model::total(&model.refunded);
    let net = model.net_consumed();
    let retired = Model::total(&model.retired);
    prop_assert!(net + retired <= granted, "model broke the invariant");
    let mut rights_at_owner = 0u128;
    for (i, replica) in replicas.iter().enumerate() {
        // Includes `refunded ≤ consumed` for every node.
        prop_assert!(replica.invariant_holds(), "invariant broken at replica {i}");
        prop_assert!(replica.validate().is_ok(), "replica {i} would be refused");
        // Net consumption within the limit, in every view.
        prop_assert!(replica.total_consumed() <= u128::from(replica.limit()));
        // A view never exceeds what really happened (gross: a view may lack a refund, so
        // its net may be above the true net, never its gross).
        prop_assert!(replica.total_granted() <= granted);
        prop_assert!(replica.total_consumed() + replica.total_refunded() <= consumed);
        prop_assert!(replica.total_refunded() <= refunded);
        prop_assert!(replica.total_retired() <= retired);
        // Own cells are exact in the own replica.
        prop_assert_eq!(
            replica.refundable(node(i)),
            model.consumed[i] - model.refunded[i]
        );
        // A node never believes it holds rights it does not really hold.
        let own = replica.local_rights(node(i));
        prop_assert!(
            own <= model.true_rights(i),
            "node {i} holds {own}, really {}",
            model.true_rights(i)
        );
        rights_at_owner += u128::from(own);
    }
    // No rights created by merging or duplicated delivery.
    prop_assert!(rights_at_owner + net + retired <= granted);
    Ok(())
}

fn merged(a: &BoundedCounter, b: &BoundedCounter) -> BoundedCounter {
    let mut m = a.clone();
    m.merge(b);
    m
}

/// Replicas reached by random operations and merges (for the lattice laws).
fn replicas_strategy() -> impl Strategy<Value = Vec<BoundedCounter>> {
    prop::collection::vec(op_strategy(), 0..60).prop_map(|ops| run(ops, &mut Model::default()).0)
}

/// Runs `ops`, returning the replicas and the messages still in flight. Every refusal is
/// checked to be one the model predicts could happen.
fn run(ops: Vec<Op>, model: &mut Model) -> (Vec<BoundedCounter>, Vec<(usize, BoundedCounter)>) {
    let mut replicas = vec![BoundedCounter::new(); NODES];
    let mut network: Vec<(usize, BoundedCounter)> = Vec::new();
    for op in ops {
        apply(op, &mut replicas, &mut network, model);
    }
    (replicas, network)
}

/// `amount` if the operation was done, 0 if it was refused exactly as the model predicts.
fn done_or_refused(result: Result<(), EscrowError>, refusal: EscrowError, amount: u64) -> u64 {
    match result {
        Ok(()) => amount,
        Err(e) => {
            assert_eq!(e, refusal);
            0
        }
    }
}

fn apply(
    op: Op,
    replicas: &mut [BoundedCounter],
    network: &mut Vec<(usize, BoundedCounter)>,
    model: &mut Model,
) {
    match op {
        Op::Grant { amount } => {
            replicas[HOME].grant(node(HOME), amount).unwrap();
            model.granted[HOME] += amount;
        }
        Op::Consume { at, amount } => {
            let refusal = EscrowError::InsufficientRights {
                node: node(at),
                requested: amount,
                available: replicas[at].local_rights(node(at)),
            };
            let result = replicas[at].consume(node(at), amount);
            model.consumed[at] += done_or_refused(result, refusal, amount);
        }
        Op::Refund { at, amount } => {
            let refusal = EscrowError::RefundBeyondConsumed {
                node: node(at),
                requested: amount,
                refundable: model.consumed[at] - model.refunded[at],
            };
            let result = replicas[at].refund(node(at), amount);
            model.refunded[at] += done_or_refused(result, refusal, amount);
        }
        Op::Transfer { from, to, amount } => {
            match replicas[from].transfer(node(from), node(to), amount) {
                Ok(()) => model.sent[from][to] += amount,
                Err(EscrowError::SelfTransfer(_)) => assert_eq!(from, to),
                Err(e) => assert!(matches!(e, EscrowError::InsufficientRights { .. })),
            }
        }
        Op::CallBack { at, quota } => {
            let retired = replicas[at].call_back(node(at), quota).unwrap();
            model.retired[at] += retired;
        }
        Op::Send { from, to } => network.push((to, replicas[from].clone())),
        Op::Deliver { pick } | Op::Duplicate { pick } | Op::Drop { pick } => {
            if network.is_empty() {
                return;
            }
            let index = pick % network.len();
            let (to, state) = match op {
                Op::Duplicate { .. } => network[index].clone(),
                _ => network.remove(index),
            };
            if !matches!(op, Op::Drop { .. }) {
                let decoded = BoundedCounter::decode(&state.encode()).unwrap();
                replicas[to].merge(&decoded);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn escrow_matches_the_sequential_model(ops in prop::collection::vec(op_strategy(), 0..120)) {
        let mut model = Model::default();
        let mut replicas = vec![BoundedCounter::new(); NODES];
        let mut network = Vec::new();
        for op in ops {
            let before = replicas.clone();
            apply(op, &mut replicas, &mut network, &mut model);
            for (old, new) in before.iter().zip(&replicas) {
                prop_assert_eq!(&merged(new, old), new, "state went down");
            }
            check_replicas(&replicas, &model)?;
        }
        // Heal: everyone learns everything (states travel whole).
        let mut all = BoundedCounter::new();
        for replica in &replicas {
            all.merge(replica);
        }
        for replica in replicas.iter_mut() {
            replica.merge(&all);
        }
        check_replicas(&replicas, &model)?;
        for (i, replica) in replicas.iter().enumerate() {
            prop_assert_eq!(replica, &all);
            prop_assert_eq!(replica.total_granted(), Model::total(&model.granted));
            prop_assert_eq!(replica.total_consumed(), model.net_consumed());
            prop_assert_eq!(replica.total_refunded(), Model::total(&model.refunded));
            prop_assert_eq!(replica.total_retired(), Model::total(&model.retired));
            // Every right really held is usable by its holder: nothing is lost either.
            prop_assert_eq!(replica.local_rights(node(i)), model.true_rights(i));
        }
        for (i, replica) in replicas.iter_mut().enumerate() {
            let rights = model.true_rights(i);
            prop_assert!(replica.consume(node(i), rights).is_ok());
            prop_assert!(replica.consume(node(i), 1).is_err());
        }
    }

    #[test]
    fn merge_is_a_join(replicas in replicas_strategy()) {
        let [a, b, c] = [&replicas[0], &replicas[1], &replicas[2]];
        prop_assert_eq!(merged(a, b), merged(b, a));
        prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
        prop_assert_eq!(&merged(a, a), a);
        let all = merged(&merged(a, b), c);
        prop_assert!(all.invariant_holds());
        prop_assert_eq!(&merged(&all, a), &all, "merge only grows");
    }

    #[test]
    fn encoding_round_trips(replicas in replicas_strategy()) {
        for replica in &replicas {
            prop_assert_eq!(&BoundedCounter::decode(&replica.encode()).unwrap(), replica);
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = BoundedCounter::decode(&bytes);
        let _ = tessera_crdt::EscrowBook::decode(&bytes);
        // Both versions the escrow kinds still read (1: no refund cells).
        for (version, kind) in [(1u8, 4u8), (1, 5), (2, 4), (2, 5)] {
            let mut framed = vec![version, kind];
            framed.extend_from_slice(&bytes);
            if let Ok(counter) = BoundedCounter::decode(&framed) {
                prop_assert!(counter.invariant_holds());
            }
            let _ = tessera_crdt::EscrowBook::decode(&framed);
        }
    }
}
