//! Bounded counters (escrow): the one invariant merging cannot keep by itself — "a tenant's
//! usage never exceeds its hard quota" — kept without coordination on the request path.
//!
//! # Shape
//! For one (tenant, period, metric), a matrix of grow-only cells, each written by exactly
//! one node (so merge, the cell-wise maximum, loses nothing):
//! - `granted[i]`: rights node `i` created (only the tenant's home node grants, see below);
//! - `transferred[i→j]`: rights node `i` gave node `j` (a running total, written by `i`);
//! - `consumed[i]`: rights node `i` spent on admitted usage;
//! - `retired[i]`: rights node `i` destroyed when a quota was lowered (written by `i`).
//!
//! `local_rights(i) = granted[i] + Σ_j transferred[j→i] − Σ_j transferred[i→j] − consumed[i]
//! − retired[i]`. A node may consume, transfer or retire only its own local rights, checked
//! against its own replica, so it never needs another machine to decide.
//!
//! # Invariant
//! In every replica and every merge of replicas, for every node, what it spent, gave away
//! or retired is at most what it was granted or received; summed over nodes (transfers
//! cancel): `Σ consumed + Σ retired ≤ Σ granted`, so total consumed ≤ the limit
//! `Σ granted − Σ retired`. Why merging keeps it: a node's own cells only grow along its
//! single history, so in a join they come from one state of that node, which also held the
//! incoming cells that justified them; the join's incoming cells are at least those.
//! Because of that argument, a counter is replicated as a whole (its full state per key,
//! O(nodes²) cells), never cell by cell. Transfers are running totals, so a duplicated or
//! replayed message cannot create rights. [`BoundedCounter::decode`] refuses a state that
//! breaks the invariant.
//!
//! # Quota policy rules (rights are created exactly once)
//! - **Set or raise**: only the tenant's home node (recorded in the directory) calls
//!   [`BoundedCounter::grant`], with [`BoundedCounter::deficit`]`(quota)` computed on its
//!   own replica; other nodes obtain rights by transfer. The home node sees all its own
//!   grants, and retirements it has not yet seen only make its view of the limit too
//!   high, so a grant never lifts the real limit above the quota.
//! - **Lower** to `q` below the current limit: grants are never taken back (cells only
//!   grow), and usage already admitted stands. Each node, on learning the new policy, calls
//!   [`BoundedCounter::call_back`]`(node, q)`, which retires the lesser of its unspent
//!   rights and the excess `limit − q` in its view. Rights still held by a node that has not
//!   yet heard of the lowering may be spent first, so usage stays bounded by the quota in
//!   force before the lowering until the call-back reaches every holder. Concurrent
//!   call-backs may retire more than the excess; the home node then restores the shortfall
//!   with `grant(deficit(q))` — never above `q`, by the rule above.
//!
//! Why not `crdts`: it has no bounded counter, and its `PNCounter` lets any replica go
//! below zero, which is exactly what escrow exists to prevent.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::codec::{self, DecodeError, Kind};
use crate::ids::{CounterKey, IdHashMap, NodeId};

/// Why an escrow operation was refused. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EscrowError {
    #[error("node {node} holds {available} rights, {requested} requested")]
    InsufficientRights {
        node: NodeId,
        requested: u64,
        available: u64,
    },
    #[error("node {0} cannot transfer rights to itself")]
    SelfTransfer(NodeId),
    #[error("a cell of node {0} would overflow u64")]
    Overflow(NodeId),
}

/// One bounded counter (one tenant, period and metric). See the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedCounter {
    granted: BTreeMap<NodeId, u64>,
    transferred: BTreeMap<(NodeId, NodeId), u64>,
    consumed: BTreeMap<NodeId, u64>,
    retired: BTreeMap<NodeId, u64>,
}

fn add_cell<K: Ord>(
    cells: &mut BTreeMap<K, u64>,
    key: K,
    amount: u64,
    node: NodeId,
) -> Result<(), EscrowError> {
    let cell = cells.entry(key).or_insert(0);
    *cell = cell
        .checked_add(amount)
        .ok_or(EscrowError::Overflow(node))?;
    Ok(())
}

/// Cell-wise maximum; whether any cell grew.
fn join_cells<K: Ord + Copy>(cells: &mut BTreeMap<K, u64>, other: &BTreeMap<K, u64>) -> bool {
    let mut grew = false;
    for (key, value) in other {
        let cell = cells.entry(*key).or_insert(0);
        if *value > *cell {
            *cell = *value;
            grew = true;
        }
    }
    grew
}

fn sum(cells: &BTreeMap<NodeId, u64>) -> u128 {
    cells.values().map(|v| u128::from(*v)).sum()
}

impl BoundedCounter {
    /// Cells one counter may hold (all four kinds together) when decoded.
    pub const CELLS_MAX: usize = 65_536;
    /// Cap on an encoded counter: every cell at worst (two node ids and a value, 30 bytes).
    pub const BYTES_MAX: usize = 2 + 4 * 5 + Self::CELLS_MAX * 30;

    pub fn new() -> Self {
        BoundedCounter::default()
    }

    /// Rights `node` received: its grants plus transfers to it.
    pub fn incoming(&self, node: NodeId) -> u128 {
        let transfers_in: u128 = self
            .transferred
            .iter()
            .filter(|((_, to), _)| *to == node)
            .map(|(_, v)| u128::from(*v))
            .sum();
        u128::from(self.granted.get(&node).copied().unwrap_or(0)) + transfers_in
    }

    /// Rights `node` used: consumed, retired and transferred away.
    fn outgoing(&self, node: NodeId) -> u128 {
        let transfers_out: u128 = self
            .transferred
            .range((node, NodeId(0))..=(node, NodeId(u64::MAX)))
            .map(|(_, v)| u128::from(*v))
            .sum();
        u128::from(self.consumed.get(&node).copied().unwrap_or(0))
            + u128::from(self.retired.get(&node).copied().unwrap_or(0))
            + transfers_out
    }

    /// Rights `node` may still consume, transfer or retire, in this replica's view.
    pub fn local_rights(&self, node: NodeId) -> u64 {
        let rights = self.incoming(node).saturating_sub(self.outgoing(node));
        u64::try_from(rights).unwrap_or(u64::MAX)
    }

    fn require(&self, node: NodeId, requested: u64) -> Result<(), EscrowError> {
        let available = self.local_rights(node);
        if requested > available {
            return Err(EscrowError::InsufficientRights {
                node,
                requested,
                available,
            });
        }
        Ok(())
    }

    /// `node` creates `amount` rights for itself (quota set or raised; only the tenant's
    /// home node calls this — see the module doc).
    pub fn grant(&mut self, node: NodeId, amount: u64) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        add_cell(&mut self.granted, node, amount, node)
    }

    /// `node` spends `amount` of its local rights on admitted usage.
    pub fn consume(&mut self, node: NodeId, amount: u64) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        self.require(node, amount)?;
        add_cell(&mut self.consumed, node, amount, node)
    }

    /// `from` gives `amount` of its local rights to `to`. The cell is a running total, so
    /// delivering this state twice gives `to` nothing extra.
    pub fn transfer(&mut self, from: NodeId, to: NodeId, amount: u64) -> Result<(), EscrowError> {
        if from == to {
            return Err(EscrowError::SelfTransfer(from));
        }
        if amount == 0 {
            return Ok(());
        }
        self.require(from, amount)?;
        add_cell(&mut self.transferred, (from, to), amount, from)
    }

    /// `node` destroys `amount` of its unspent rights (a quota was lowered).
    pub fn retire(&mut self, node: NodeId, amount: u64) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        self.require(node, amount)?;
        add_cell(&mut self.retired, node, amount, node)
    }

    /// The lowering rule: `node` retires the lesser of its unspent rights and the excess of
    /// the limit over `quota` in this view; returns how many it retired.
    pub fn call_back(&mut self, node: NodeId, quota: u64) -> Result<u64, EscrowError> {
        let excess = self.limit().saturating_sub(quota);
        let amount = excess.min(self.local_rights(node));
        self.retire(node, amount)?;
        Ok(amount)
    }

    /// What the home node should grant to bring the limit up to `quota` (0 if it is there).
    pub fn deficit(&self, quota: u64) -> u64 {
        quota.saturating_sub(self.limit())
    }

    /// Rights granted in total.
    pub fn total_granted(&self) -> u128 {
        sum(&self.granted)
    }

    /// Rights consumed in total: the usage admitted under this counter.
    pub fn total_consumed(&self) -> u128 {
        sum(&self.consumed)
    }

    /// Rights retired in total.
    pub fn total_retired(&self) -> u128 {
        sum(&self.retired)
    }

    /// The effective limit: granted minus retired (saturating into `u64`).
    pub fn limit(&self) -> u64 {
        let limit = self.total_granted().saturating_sub(self.total_retired());
        u64::try_from(limit).unwrap_or(u64::MAX)
    }

    /// Every node named by any cell.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .granted
            .keys()
            .chain(self.consumed.keys())
            .chain(self.retired.keys())
            .copied()
            .chain(self.transferred.keys().flat_map(|(a, b)| [*a, *b]))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Whether every node's outgoing rights are covered by its incoming ones — which
    /// implies `Σ consumed + Σ retired ≤ Σ granted`. True of every state built by this
    /// type's operations and merges.
    ///
    /// One pass over the cells (it runs on every decoded counter, so a hostile counter with
    /// tens of thousands of cells must not cost a pass per node).
    pub fn invariant_holds(&self) -> bool {
        // Per node: (incoming, outgoing).
        let mut flows: BTreeMap<NodeId, (u128, u128)> = BTreeMap::new();
        for (node, v) in &self.granted {
            flows.entry(*node).or_default().0 += u128::from(*v);
        }
        for ((from, to), v) in &self.transferred {
            flows.entry(*to).or_default().0 += u128::from(*v);
            flows.entry(*from).or_default().1 += u128::from(*v);
        }
        for (node, v) in self.consumed.iter().chain(&self.retired) {
            flows.entry(*node).or_default().1 += u128::from(*v);
        }
        flows
            .values()
            .all(|(incoming, outgoing)| outgoing <= incoming)
    }

    /// Cell-wise maximum.
    /// Returns whether any cell grew (so callers can tell a new state from a repeat without
    /// comparing copies).
    pub fn merge(&mut self, other: &BoundedCounter) -> bool {
        // Non-short-circuiting `|`: every kind of cell is joined.
        join_cells(&mut self.granted, &other.granted)
            | join_cells(&mut self.transferred, &other.transferred)
            | join_cells(&mut self.consumed, &other.consumed)
            | join_cells(&mut self.retired, &other.retired)
    }

    fn cell_count(&self) -> usize {
        self.granted.len() + self.transferred.len() + self.consumed.len() + self.retired.len()
    }

    /// Structural and invariant checks applied to every decoded counter; callers that
    /// receive a counter through another serde format (a network codec) call it too.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |why: &str| Err(DecodeError::Invalid(why.to_owned()));
        if self.cell_count() > Self::CELLS_MAX {
            return invalid("too many cells");
        }
        let zero = |cells: &BTreeMap<NodeId, u64>| cells.values().any(|v| *v == 0);
        if zero(&self.granted)
            || zero(&self.consumed)
            || zero(&self.retired)
            || self.transferred.values().any(|v| *v == 0)
        {
            return invalid("zero cell (not canonical)");
        }
        if self.transferred.keys().any(|(from, to)| from == to) {
            return invalid("self transfer");
        }
        if !self.invariant_holds() {
            return invalid("a node used more rights than it holds");
        }
        Ok(())
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(Kind::BoundedCounter, self)
    }

    /// Feeds the canonical encoding to `out` byte for byte, without allocating it (for
    /// hashing).
    pub fn encode_into<W: Extend<u8>>(&self, out: W) -> W {
        codec::encode_into(Kind::BoundedCounter, self, out)
    }

    /// Decodes at most [`BoundedCounter::BYTES_MAX`] bytes and refuses a counter that is
    /// not canonical or breaks the invariant.
    pub fn decode(bytes: &[u8]) -> Result<BoundedCounter, DecodeError> {
        let counter: BoundedCounter = codec::decode(Kind::BoundedCounter, bytes, Self::BYTES_MAX)?;
        counter.validate()?;
        Ok(counter)
    }
}

/// Every bounded counter a replica holds, by (tenant, period, metric).
///
/// A hash table answers the request path's lookups in one probe (a B-tree of 200K
/// counters cost several cache misses per lookup, and admission makes a few); the keys
/// are also kept in order, for iteration and the canonical encoding, which are the same
/// as when the book was one `BTreeMap` (a map of counters in key order).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EscrowBook {
    counters: IdHashMap<CounterKey, BoundedCounter>,
    /// Every key of `counters`, in order.
    keys: BTreeSet<CounterKey>,
}

/// The book's counters in key order, for `Serialize` and `Debug`.
struct Ordered<'a>(&'a EscrowBook);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter())
    }
}

impl fmt::Debug for Ordered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.0.iter()).finish()
    }
}

impl fmt::Debug for EscrowBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EscrowBook")
            .field("counters", &Ordered(self))
            .finish()
    }
}

/// The encoded shape: a struct of one map, ordered by key (as the derived encoding of a
/// `BTreeMap` field wrote it).
#[derive(Serialize)]
#[serde(rename = "EscrowBook")]
struct BookRef<'a> {
    counters: Ordered<'a>,
}

#[derive(Deserialize)]
#[serde(rename = "EscrowBook")]
struct BookRepr {
    counters: BTreeMap<CounterKey, BoundedCounter>,
}

impl Serialize for EscrowBook {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        BookRef {
            counters: Ordered(self),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EscrowBook {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = BookRepr::deserialize(deserializer)?;
        let mut counters =
            IdHashMap::with_capacity_and_hasher(repr.counters.len(), Default::default());
        let keys = repr.counters.keys().copied().collect();
        counters.extend(repr.counters);
        Ok(EscrowBook { counters, keys })
    }
}

impl EscrowBook {
    /// Cap on an encoded book.
    pub const BYTES_MAX: usize = 1 << 30;

    pub fn new() -> Self {
        EscrowBook::default()
    }

    /// The counter of `key`, if any right was ever recorded for it.
    pub fn get(&self, key: &CounterKey) -> Option<&BoundedCounter> {
        self.counters.get(key)
    }

    /// The counter of `key` to change, if it exists (never creates one).
    pub fn get_mut(&mut self, key: &CounterKey) -> Option<&mut BoundedCounter> {
        self.counters.get_mut(key)
    }

    /// The counter of `key`, created empty if absent.
    pub fn counter_mut(&mut self, key: CounterKey) -> &mut BoundedCounter {
        match self.counters.entry(key) {
            Entry::Occupied(occupied) => occupied.into_mut(),
            Entry::Vacant(vacant) => {
                self.keys.insert(key);
                vacant.insert(BoundedCounter::default())
            }
        }
    }

    /// Rights `node` holds for `key` (0 for an unknown key).
    pub fn local_rights(&self, key: &CounterKey, node: NodeId) -> u64 {
        self.get(key).map_or(0, |c| c.local_rights(node))
    }

    /// Merges one counter received from a peer (counters travel whole; see the module doc).
    /// Returns whether the book changed (a cell grew, or the key is new here).
    pub fn merge_counter(&mut self, key: CounterKey, counter: &BoundedCounter) -> bool {
        match self.counters.entry(key) {
            Entry::Occupied(mut occupied) => occupied.get_mut().merge(counter),
            Entry::Vacant(vacant) => {
                self.keys.insert(key);
                vacant.insert(BoundedCounter::default()).merge(counter);
                true
            }
        }
    }

    /// Merges every counter of another book.
    pub fn merge(&mut self, other: &EscrowBook) {
        for (key, counter) in other.iter() {
            self.merge_counter(*key, counter);
        }
    }

    /// Number of counters.
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// Counters in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&CounterKey, &BoundedCounter)> + '_ {
        self.keys.iter().map(move |key| (key, &self.counters[key]))
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(Kind::EscrowBook, self)
    }

    /// Decodes at most [`EscrowBook::BYTES_MAX`] bytes, validating every counter.
    pub fn decode(bytes: &[u8]) -> Result<EscrowBook, DecodeError> {
        let book: EscrowBook = codec::decode(Kind::EscrowBook, bytes, Self::BYTES_MAX)?;
        for counter in book.counters.values() {
            counter.validate()?;
        }
        Ok(book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: NodeId = NodeId(1);
    const EDGE: NodeId = NodeId(2);
    const FAR: NodeId = NodeId(3);

    #[test]
    fn rights_move_by_grant_and_transfer_and_are_spent_once() {
        let mut c = BoundedCounter::new();
        c.grant(HOME, 100).unwrap();
        c.transfer(HOME, EDGE, 30).unwrap();
        assert_eq!(c.local_rights(HOME), 70);
        assert_eq!(c.local_rights(EDGE), 30);
        c.consume(EDGE, 30).unwrap();
        assert_eq!(
            c.consume(EDGE, 1),
            Err(EscrowError::InsufficientRights {
                node: EDGE,
                requested: 1,
                available: 0
            })
        );
        assert_eq!(
            c.transfer(EDGE, FAR, 1),
            Err(EscrowError::InsufficientRights {
                node: EDGE,
                requested: 1,
                available: 0
            })
        );
        assert_eq!(
            c.transfer(HOME, HOME, 1),
            Err(EscrowError::SelfTransfer(HOME))
        );
        assert_eq!(c.total_consumed(), 30);
        assert!(c.invariant_holds());
    }

    #[test]
    fn duplicated_transfer_delivery_creates_nothing() {
        let mut home = BoundedCounter::new();
        home.grant(HOME, 10).unwrap();
        home.transfer(HOME, EDGE, 10).unwrap();
        let mut edge = BoundedCounter::new();
        edge.merge(&home);
        edge.merge(&home);
        assert_eq!(edge.local_rights(EDGE), 10);
        edge.consume(EDGE, 10).unwrap();
        edge.merge(&home);
        assert_eq!(edge.local_rights(EDGE), 0);
    }

    #[test]
    fn partitioned_nodes_cannot_overrun_the_quota_together() {
        let mut home = BoundedCounter::new();
        home.grant(HOME, 10).unwrap();
        home.transfer(HOME, EDGE, 5).unwrap();
        let mut edge = home.clone();
        // Partition: each spends what it holds, and no more.
        home.consume(HOME, 5).unwrap();
        edge.consume(EDGE, 5).unwrap();
        assert!(home.consume(HOME, 1).is_err());
        assert!(edge.consume(EDGE, 1).is_err());
        home.merge(&edge);
        assert_eq!(home.total_consumed(), 10);
        assert!(home.invariant_holds());
    }

    #[test]
    fn lowering_a_quota_retires_unspent_rights_and_keeps_admitted_usage() {
        let mut home = BoundedCounter::new();
        home.grant(HOME, 100).unwrap();
        home.transfer(HOME, EDGE, 60).unwrap();
        let mut edge = home.clone();
        edge.consume(EDGE, 50).unwrap();
        home.consume(HOME, 10).unwrap();
        // Quota lowered to 70. Both nodes call back in their own (partitioned) views.
        assert_eq!(home.call_back(HOME, 70).unwrap(), 30);
        assert_eq!(edge.call_back(EDGE, 70).unwrap(), 10);
        home.merge(&edge);
        edge.merge(&home);
        // Admitted usage (60) stands; together they over-retired (limit 60 < 70).
        assert_eq!(home.total_consumed(), 60);
        assert_eq!(home.limit(), 60);
        assert!(home.invariant_holds());
        // The home node restores the shortfall, never above the new quota.
        let deficit = home.deficit(70);
        assert_eq!(deficit, 10);
        home.grant(HOME, deficit).unwrap();
        assert_eq!(home.limit(), 70);
        assert_eq!(home.call_back(HOME, 70).unwrap(), 0);
        assert_eq!(home.deficit(70), 0);
        // Lowering below admitted usage retires everything unspent, nothing more.
        assert_eq!(home.call_back(HOME, 0).unwrap(), 10);
        assert_eq!(home.local_rights(HOME), 0);
        assert!(home.total_consumed() <= home.total_granted() - home.total_retired());
    }

    #[test]
    fn raising_from_a_stale_view_never_lifts_the_limit_above_the_quota() {
        let mut home = BoundedCounter::new();
        home.grant(HOME, 100).unwrap();
        home.transfer(HOME, EDGE, 50).unwrap();
        let mut edge = home.clone();
        // Lowered to 60: edge retires 40 (its view), home has not heard yet.
        edge.call_back(EDGE, 60).unwrap();
        // Home, stale, sees limit 100 ≥ 60 and grants nothing.
        assert_eq!(home.deficit(60), 0);
        home.merge(&edge);
        assert_eq!(home.limit(), 60);
    }

    #[test]
    fn decode_refuses_states_that_break_the_invariant() {
        let mut c = BoundedCounter::new();
        c.grant(HOME, 5).unwrap();
        c.consume(HOME, 5).unwrap();
        assert_eq!(BoundedCounter::decode(&c.encode()), Ok(c.clone()));
        let mut forged = c.clone();
        forged.consumed.insert(EDGE, 1);
        assert!(matches!(
            BoundedCounter::decode(&forged.encode()),
            Err(DecodeError::Invalid(_))
        ));
        let mut zero = c.clone();
        zero.retired.insert(HOME, 0);
        assert!(BoundedCounter::decode(&zero.encode()).is_err());
        let mut selfish = c;
        selfish.transferred.insert((HOME, HOME), 1);
        assert!(BoundedCounter::decode(&selfish.encode()).is_err());
    }

    #[test]
    fn book_keeps_one_counter_per_key() {
        use crate::ids::{Metric, TenantId};
        use crate::period::Period;
        let key = CounterKey::new(
            TenantId(1),
            Period::month(2026, 11).unwrap(),
            Metric::Requests,
        );
        let mut a = EscrowBook::new();
        a.counter_mut(key).grant(HOME, 10).unwrap();
        let mut b = EscrowBook::new();
        b.merge(&a);
        b.counter_mut(key).transfer(HOME, EDGE, 4).unwrap();
        a.merge(&b);
        assert_eq!(a.local_rights(&key, EDGE), 4);
        assert_eq!(a, b);
        assert_eq!(EscrowBook::decode(&a.encode()), Ok(a));
    }

    #[test]
    fn book_encodes_as_one_ordered_map_of_counters() {
        use crate::ids::{Metric, TenantId};
        use crate::period::Period;
        // The shape the book had as a derived struct over a `BTreeMap`: stored books and
        // peers' encodings must keep decoding, and new ones must be the same bytes.
        #[derive(Serialize)]
        struct Before {
            counters: BTreeMap<CounterKey, BoundedCounter>,
        }
        let mut book = EscrowBook::new();
        let mut before = Before {
            counters: BTreeMap::new(),
        };
        for t in [9u64, 3, 700, 1, 42, 5] {
            for metric in [Metric::BytesIn, Metric::Requests] {
                let key = CounterKey::new(TenantId(t), Period::month(2026, 11).unwrap(), metric);
                let counter = book.counter_mut(key);
                counter.grant(HOME, t + 10).unwrap();
                counter.transfer(HOME, EDGE, t).unwrap();
                before.counters.insert(key, counter.clone());
            }
        }
        let bytes = book.encode();
        assert_eq!(bytes, codec::encode(Kind::EscrowBook, &before));
        let keys: Vec<CounterKey> = book.iter().map(|(k, _)| *k).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(EscrowBook::decode(&bytes), Ok(book.clone()));
        assert_eq!(
            format!("{book:?}"),
            format!("EscrowBook {{ counters: {:?} }}", before.counters)
        );
        let c = book.iter().next().unwrap().1;
        let mut streamed = Vec::new();
        streamed = c.encode_into(streamed);
        assert_eq!(streamed, c.encode());
    }
}
