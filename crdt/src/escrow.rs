//! Bounded counters (escrow): the one invariant merging cannot keep by itself — "a tenant's
//! usage never exceeds its hard quota" — kept without coordination on the request path.
//!
//! # Shape
//! For one (tenant, period, metric), a matrix of grow-only cells, each written by exactly
//! one node (so merge, the cell-wise maximum, loses nothing):
//! - `granted[i]`: rights node `i` created (only the tenant's home node grants, see below);
//! - `transferred[i→j]`: rights node `i` gave node `j` (a running total, written by `i`);
//! - `consumed[i]`: rights node `i` spent on admitted usage;
//! - `refunded[i]`: rights node `i` took back from its own consumption, for admitted work
//!   that was then not delivered (shed, failed, timed out); always `refunded[i] ≤
//!   consumed[i]`, so `consumed[i] − refunded[i]` is node `i`'s net consumption;
//! - `retired[i]`: rights node `i` destroyed when a quota was lowered (written by `i`).
//!
//! `local_rights(i) = granted[i] + Σ_j transferred[j→i] − Σ_j transferred[i→j]
//! − (consumed[i] − refunded[i]) − retired[i]`. A node may consume, transfer or retire only
//! its own local rights, and refund only its own consumption, checked against its own
//! replica, so it never needs another machine to decide. A refund is the only way a
//! node's rights go back up without a grant or a transfer: quota follows delivered work.
//!
//! # Invariant
//! In every replica and every merge of replicas, for every node, what it spent net of
//! refunds, gave away or retired is at most what it was granted or received, and it never
//! refunded more than it consumed. Summed over nodes (transfers cancel):
//! `Σ (consumed − refunded) + Σ retired ≤ Σ granted`, so total net consumption ≤ the
//! limit `Σ granted − Σ retired`. Why merging keeps it: a node's own cells (consumed,
//! refunded, retired, its transfers out) only grow along its single history, so in a join
//! they come from one state of that node — the later of the two views, each cell being a
//! maximum along one chain — which also held the incoming cells that justified them and
//! had `refunded ≤ consumed`; the join's incoming cells are at least those. (A node's net
//! outgoing may go down along its history, by a refund; the argument never needed it to
//! grow, only that all of the node's own cells come from one of its states.)
//! Because of that argument, a counter is replicated as a whole (its full state per key,
//! O(nodes²) cells), never cell by cell. Transfers and refunds are running totals, so a
//! duplicated or replayed message cannot create rights. [`BoundedCounter::decode`] refuses
//! a state that breaks the invariant.
//!
//! # Cost of a decision
//! Each node's transfer totals, `Σ_j transferred[j→i]` and `Σ_j transferred[i→j]`, are kept
//! beside the cells, so `local_rights` — and `consume`, `transfer`, `retire`, `refund`,
//! which check it — cost O(log nodes), not a pass over the N·(N−1) transfer cells of a
//! full matrix: that pass cost 27.7 µs per consume at N = 100 and 150 µs at N = 200
//! (issue #13), and the edge reads rights three times per admission under the sync node's
//! lock. The totals are derived state: an own transfer adds its amount, a merge adds the
//! growth of each transfer cell it raises; a decoded or deserialised counter rebuilds them
//! from its cells. They are never encoded nor compared (equality is over cells), and the
//! invariant is still checked from the cells. A consume and a rights read now take
//! 60–95 ns together at N = 5…200 (docs/BENCHMARKS.md, `--bench escrow_scale`).
//!
//! # Encoding
//! The refund cells came with format version 2 of [`Kind::BoundedCounter`] and
//! [`Kind::EscrowBook`] (the body gained a fifth map, after the other four, always
//! written, ordered by node: deterministic). Version 1 (no refunds) still decodes, as a
//! counter with no refund: stores hold snapshots written before.
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
//! - **Usage served without rights** (before the node serving it knew of the quota: set
//!   later, or set on a home that crashed before telling anyone) counts against the quota:
//!   that node, once it knows the quota, records it with
//!   [`BoundedCounter::declare_unmetered`] — a grant to itself consumed at once, so the
//!   limit and the consumption both grow by it and no spendable right is created. A node's
//!   unmetered usage is what its ledger slot billed beyond its net consumption (the sync
//!   core computes it). The home's `deficit` then sees a limit that already holds that
//!   usage, and a declaration that lifts the limit above the quota makes every node call
//!   back its unspent rights, as a lowering does. Before a node has consumed or declared
//!   anything ([`BoundedCounter::consumed_by`] is 0), the home counts its ledger slot as
//!   unmetered (and grants that much less), so usage it already knows of is not granted
//!   on top.
//! - **Refund after a lowering**: a refund gives its node back rights the limit still
//!   counts, so a node that had spent everything when it called back may hold some again;
//!   it calls back again (the sync core looks at the tenant after every refund).
//!
//! Why not `crdts`: it has no bounded counter, and its `PNCounter` lets any replica go
//! below zero, which is exactly what escrow exists to prevent. A refund is not a
//! PN-counter's decrement: a node takes back only what it consumed itself, so its net
//! consumption never goes below zero.

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
    #[error("node {node} may refund {refundable} rights, {requested} requested")]
    RefundBeyondConsumed {
        node: NodeId,
        requested: u64,
        refundable: u64,
    },
    /// The counter's period is sealed on this node (see `ledger::Ledger::seal`): its
    /// rights can be neither spent nor given back any more. Raised by the node, not by the
    /// counter, which knows nothing of time.
    #[error("node {node} sealed the counter's period (through {sealed_through_ms} ms)")]
    PeriodSealed {
        node: NodeId,
        sealed_through_ms: u64,
    },
}

/// One bounded counter (one tenant, period and metric). See the module doc.
///
/// Equality, `Debug` and the encoding are those of the cells alone; the flows are derived
/// from them (see "Cost" in the module doc).
#[derive(Clone, Default)]
pub struct BoundedCounter {
    cells: Cells,
    /// What each node received and gave by transfer: sums of `cells.transferred`.
    flows: Flows,
}

/// The replicated state of a counter: everything that is encoded and compared. The name
/// and field order are those of the derived encoding `BoundedCounter` had before it kept
/// flows, so every serde format writes the same bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename = "BoundedCounter")]
struct Cells {
    granted: CellMap<NodeId>,
    transferred: CellMap<(NodeId, NodeId)>,
    consumed: CellMap<NodeId>,
    retired: CellMap<NodeId>,
    /// Last in the encoding (format version 2 appended it; see the module doc).
    refunded: CellMap<NodeId>,
}

/// One kind of cell of a counter: a map from its key to its value, ordered by key, with a
/// lone cell kept inline. Most counters have one cell of a kind or none (the home grants,
/// the node serving a tenant consumes), and a request reads and writes them under the
/// node's lock: as `BTreeMap`s each non-empty kind was a heap node of its own, so a rights
/// check followed one more pointer per kind (a cache miss each at 200K counters) and a
/// copy of a counter (for a push, for the store) allocated one node per kind. Serialised
/// exactly as the `BTreeMap` it replaces (a map in key order), and read through one, so
/// every encoding stays byte for byte what it was.
///
/// Canonical: `Many` holds two cells or more, so the derived equality is the map's.
#[derive(Clone, Default, PartialEq, Eq)]
enum CellMap<K> {
    #[default]
    Empty,
    One((K, u64)),
    /// Ascending by key, no key twice. A boxed slice, not a `Vec` (no capacity word):
    /// a new key is rare (a node's first cell of the kind), and the counter travels inside
    /// messages whose size matters.
    Many(Box<[(K, u64)]>),
}

impl<K: Ord + Copy> CellMap<K> {
    fn as_slice(&self) -> &[(K, u64)] {
        match self {
            CellMap::Empty => &[],
            CellMap::One(cell) => std::slice::from_ref(cell),
            CellMap::Many(cells) => cells,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [(K, u64)] {
        match self {
            CellMap::Empty => &mut [],
            CellMap::One(cell) => std::slice::from_mut(cell),
            CellMap::Many(cells) => cells,
        }
    }

    fn get(&self, key: &K) -> Option<&u64> {
        let cells = self.as_slice();
        // A lone cell (the usual case) without a search.
        if let [(only, value)] = cells {
            return (only == key).then_some(value);
        }
        cells
            .binary_search_by(|(k, _)| k.cmp(key))
            .ok()
            .map(|at| &cells[at].1)
    }

    /// The cell of `key`, created 0 if absent.
    fn cell_mut(&mut self, key: K) -> &mut u64 {
        let at = match self.as_slice().binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => at,
            Err(at) => {
                match std::mem::take(self) {
                    CellMap::Empty => *self = CellMap::One((key, 0)),
                    CellMap::One(cell) => {
                        let mut cells = vec![cell];
                        cells.insert(at, (key, 0));
                        *self = CellMap::Many(cells.into_boxed_slice());
                    }
                    CellMap::Many(cells) => {
                        let mut cells = cells.into_vec();
                        cells.insert(at, (key, 0));
                        *self = CellMap::Many(cells.into_boxed_slice());
                    }
                }
                at
            }
        };
        &mut self.as_mut_slice()[at].1
    }

    fn insert(&mut self, key: K, value: u64) {
        *self.cell_mut(key) = value;
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &u64)> + '_ {
        self.as_slice().iter().map(|(k, v)| (k, v))
    }

    fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.as_slice().iter().map(|(k, _)| k)
    }

    fn values(&self) -> impl Iterator<Item = &u64> + '_ {
        self.as_slice().iter().map(|(_, v)| v)
    }
}

impl<'a, K: Ord + Copy> IntoIterator for &'a CellMap<K> {
    type Item = (&'a K, &'a u64);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (K, u64)>, fn(&'a (K, u64)) -> Self::Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter().map(|(k, v)| (k, v))
    }
}

impl<K: Ord + Copy> From<BTreeMap<K, u64>> for CellMap<K> {
    fn from(map: BTreeMap<K, u64>) -> Self {
        match map.len() {
            0 => CellMap::Empty,
            1 => CellMap::One(map.into_iter().next().expect("one cell")),
            _ => CellMap::Many(map.into_iter().collect::<Vec<_>>().into_boxed_slice()),
        }
    }
}

impl<K: Ord + Copy + fmt::Debug> fmt::Debug for CellMap<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Ord + Copy + Serialize> Serialize for CellMap<K> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de, K: Ord + Copy + Deserialize<'de>> Deserialize<'de> for CellMap<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through the map it replaces: duplicate keys and any order are read as it reads
        // them (the last value of a key wins), so a decoded counter is what it was.
        BTreeMap::<K, u64>::deserialize(deserializer).map(CellMap::from)
    }
}

/// One node's transfer totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Flow {
    /// `Σ_j transferred[j→node]`.
    received: u128,
    /// `Σ_j transferred[node→j]`.
    given: u128,
}

/// Per-node sums of the transfer cells, kept in step with them by every change (a transfer
/// adds its amount, a merge the growth of each cell) and rebuilt from them when a counter
/// is decoded. Sums of `u64` cells in `u128`: they cannot overflow.
///
/// A vector ordered by node, not a hash table: a node's few peers (at most the fleet) are
/// found by a binary search over one allocation, none at all for a counter without
/// transfers, and the counter stays as small as it was with `BTreeMap` cells (it travels
/// inline in the sync core's messages).
#[derive(Clone, Debug, Default)]
struct Flows(Vec<(NodeId, Flow)>);

impl Flows {
    /// The sums of `transferred`, from scratch.
    fn of(transferred: &CellMap<(NodeId, NodeId)>) -> Flows {
        let mut flows = Flows::default();
        for ((from, to), amount) in transferred {
            flows.add(*from, *to, *amount);
        }
        flows
    }

    /// The cell `from → to` grew by `amount`.
    fn add(&mut self, from: NodeId, to: NodeId, amount: u64) {
        self.flow_mut(from).given += u128::from(amount);
        self.flow_mut(to).received += u128::from(amount);
    }

    /// The flow of `node`, created zero if absent.
    fn flow_mut(&mut self, node: NodeId) -> &mut Flow {
        let at = match self.0.binary_search_by_key(&node, |(n, _)| *n) {
            Ok(at) => at,
            Err(at) => {
                self.0.insert(at, (node, Flow::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    fn get(&self, node: NodeId) -> Flow {
        self.0
            .binary_search_by_key(&node, |(n, _)| *n)
            .map_or_else(|_| Flow::default(), |at| self.0[at].1)
    }
}

impl From<Cells> for BoundedCounter {
    fn from(cells: Cells) -> Self {
        let flows = Flows::of(&cells.transferred);
        BoundedCounter { cells, flows }
    }
}

impl PartialEq for BoundedCounter {
    fn eq(&self, other: &Self) -> bool {
        self.cells == other.cells
    }
}

impl Eq for BoundedCounter {}

impl fmt::Debug for BoundedCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Cells {
            granted,
            transferred,
            consumed,
            retired,
            refunded,
        } = &self.cells;
        f.debug_struct("BoundedCounter")
            .field("granted", granted)
            .field("transferred", transferred)
            .field("consumed", consumed)
            .field("retired", retired)
            .field("refunded", refunded)
            .finish()
    }
}

impl Serialize for BoundedCounter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.cells.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for BoundedCounter {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Cells::deserialize(deserializer).map(BoundedCounter::from)
    }
}

/// A counter as format version 1 encoded it: no refund cells.
#[derive(Deserialize)]
#[serde(rename = "BoundedCounter")]
struct CounterV1 {
    granted: BTreeMap<NodeId, u64>,
    transferred: BTreeMap<(NodeId, NodeId), u64>,
    consumed: BTreeMap<NodeId, u64>,
    retired: BTreeMap<NodeId, u64>,
}

impl From<CounterV1> for BoundedCounter {
    fn from(v1: CounterV1) -> Self {
        Cells {
            granted: v1.granted.into(),
            transferred: v1.transferred.into(),
            consumed: v1.consumed.into(),
            retired: v1.retired.into(),
            refunded: CellMap::Empty,
        }
        .into()
    }
}

/// A sink that only counts the bytes fed to it.
struct ByteCount(usize);

impl Extend<u8> for ByteCount {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.0 += bytes.into_iter().count();
    }
}

/// The oldest format version of the escrow kinds this build decodes.
const OLDEST_VERSION: u8 = 1;

fn add_cell<K: Ord + Copy>(
    cells: &mut CellMap<K>,
    key: K,
    amount: u64,
    node: NodeId,
) -> Result<(), EscrowError> {
    let cell = cells.cell_mut(key);
    *cell = cell
        .checked_add(amount)
        .ok_or(EscrowError::Overflow(node))?;
    Ok(())
}

/// Cell-wise maximum; whether any cell grew. `grown(key, by)` hears of each cell that grew.
fn join_cells<K: Ord + Copy>(
    cells: &mut CellMap<K>,
    other: &CellMap<K>,
    mut grown: impl FnMut(K, u64),
) -> bool {
    let mut grew = false;
    for (key, value) in other {
        let cell = cells.cell_mut(*key);
        if *value > *cell {
            grown(*key, *value - *cell);
            *cell = *value;
            grew = true;
        }
    }
    grew
}

fn sum(cells: &CellMap<NodeId>) -> u128 {
    cells.values().map(|v| u128::from(*v)).sum()
}

impl BoundedCounter {
    /// Cells one counter may hold (all five kinds together) when decoded.
    pub const CELLS_MAX: usize = 65_536;
    /// Cap on an encoded counter: every cell at worst (two node ids and a value, 30 bytes).
    pub const BYTES_MAX: usize = 2 + 5 * 5 + Self::CELLS_MAX * 30;

    pub fn new() -> Self {
        BoundedCounter::default()
    }

    /// Rights `node` received: its grants plus transfers to it. O(log nodes).
    pub fn incoming(&self, node: NodeId) -> u128 {
        u128::from(self.cells.granted.get(&node).copied().unwrap_or(0))
            + self.flows.get(node).received
    }

    /// Rights `node` used: consumed net of refunds, retired and transferred away.
    /// O(log nodes).
    fn outgoing(&self, node: NodeId) -> u128 {
        u128::from(self.refundable(node))
            + u128::from(self.cells.retired.get(&node).copied().unwrap_or(0))
            + self.flows.get(node).given
    }

    /// What `node` consumed and has not refunded: its net consumption, and the most it may
    /// still refund.
    pub fn refundable(&self, node: NodeId) -> u64 {
        let consumed = self.cells.consumed.get(&node).copied().unwrap_or(0);
        consumed.saturating_sub(self.cells.refunded.get(&node).copied().unwrap_or(0))
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
        add_cell(&mut self.cells.granted, node, amount, node)
    }

    /// `node` records `amount` of usage it admitted without spending rights (served before
    /// it knew of the quota): granted to itself and consumed in one step, so the limit and
    /// the consumption both count it and no spendable right is created (see the module
    /// doc). Nothing changes if either cell would overflow.
    pub fn declare_unmetered(&mut self, node: NodeId, amount: u64) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        let granted = self.cells.granted.get(&node).copied().unwrap_or(0);
        let consumed = self.cells.consumed.get(&node).copied().unwrap_or(0);
        let (Some(granted), Some(consumed)) =
            (granted.checked_add(amount), consumed.checked_add(amount))
        else {
            return Err(EscrowError::Overflow(node));
        };
        self.cells.granted.insert(node, granted);
        self.cells.consumed.insert(node, consumed);
        Ok(())
    }

    /// What `node` ever consumed (refunds not deducted): 0 means it has neither spent a right
    /// nor declared unmetered usage for this counter.
    pub fn consumed_by(&self, node: NodeId) -> u64 {
        self.cells.consumed.get(&node).copied().unwrap_or(0)
    }

    /// `node` spends `amount` of its local rights on admitted usage.
    pub fn consume(&mut self, node: NodeId, amount: u64) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        self.require(node, amount)?;
        add_cell(&mut self.cells.consumed, node, amount, node)
    }

    /// `node` takes back `amount` of what it consumed, for admitted work that was not
    /// delivered: the rights are its own again. Refused beyond what it consumed and has not
    /// refunded yet. The cell is a running total, like a transfer.
    pub fn refund(&mut self, node: NodeId, amount: u64) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        let refundable = self.refundable(node);
        if amount > refundable {
            return Err(EscrowError::RefundBeyondConsumed {
                node,
                requested: amount,
                refundable,
            });
        }
        add_cell(&mut self.cells.refunded, node, amount, node)
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
        add_cell(&mut self.cells.transferred, (from, to), amount, from)?;
        self.flows.add(from, to, amount);
        Ok(())
    }

    /// `node` destroys `amount` of its unspent rights (a quota was lowered).
    pub fn retire(&mut self, node: NodeId, amount: u64) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        self.require(node, amount)?;
        add_cell(&mut self.cells.retired, node, amount, node)
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
        sum(&self.cells.granted)
    }

    /// Rights consumed in total net of refunds: the usage admitted under this counter and
    /// not given back (what a quota decision compares with the limit).
    pub fn total_consumed(&self) -> u128 {
        sum(&self.cells.consumed).saturating_sub(sum(&self.cells.refunded))
    }

    /// Rights refunded in total (admitted work not delivered).
    pub fn total_refunded(&self) -> u128 {
        sum(&self.cells.refunded)
    }

    /// Rights retired in total.
    pub fn total_retired(&self) -> u128 {
        sum(&self.cells.retired)
    }

    /// The effective limit: granted minus retired (saturating into `u64`).
    pub fn limit(&self) -> u64 {
        let limit = self.total_granted().saturating_sub(self.total_retired());
        u64::try_from(limit).unwrap_or(u64::MAX)
    }

    /// Every node named by any cell.
    pub fn nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .cells
            .granted
            .keys()
            .chain(self.cells.consumed.keys())
            .chain(self.cells.retired.keys())
            .copied()
            .chain(self.cells.transferred.keys().flat_map(|(a, b)| [*a, *b]))
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Whether every node's outgoing rights are covered by its incoming ones and no node
    /// refunded more than it consumed — which implies `Σ (consumed − refunded) + Σ retired
    /// ≤ Σ granted`. True of every state built by this type's operations and merges.
    ///
    /// One pass over the cells (it runs on every decoded counter, so a hostile counter with
    /// tens of thousands of cells must not cost a pass per node).
    pub fn invariant_holds(&self) -> bool {
        // Per node: (incoming, outgoing).
        let mut flows: BTreeMap<NodeId, (u128, u128)> = BTreeMap::new();
        for (node, v) in &self.cells.granted {
            flows.entry(*node).or_default().0 += u128::from(*v);
        }
        for ((from, to), v) in &self.cells.transferred {
            flows.entry(*to).or_default().0 += u128::from(*v);
            flows.entry(*from).or_default().1 += u128::from(*v);
        }
        for (node, v) in self.cells.consumed.iter().chain(&self.cells.retired) {
            flows.entry(*node).or_default().1 += u128::from(*v);
        }
        for (node, v) in &self.cells.refunded {
            if *v > self.cells.consumed.get(node).copied().unwrap_or(0) {
                return false;
            }
            // Within what the node consumed, so within its outgoing.
            flows.entry(*node).or_default().1 -= u128::from(*v);
        }
        flows
            .values()
            .all(|(incoming, outgoing)| outgoing <= incoming)
    }

    /// Cell-wise maximum.
    /// Returns whether any cell grew (so callers can tell a new state from a repeat without
    /// comparing copies).
    /// The flows move by the growth of each transfer cell.
    pub fn merge(&mut self, other: &BoundedCounter) -> bool {
        let (cells, theirs, flows) = (&mut self.cells, &other.cells, &mut self.flows);
        let ignore = |_, _| {};
        // Non-short-circuiting `|`: every kind of cell is joined.
        join_cells(&mut cells.granted, &theirs.granted, ignore)
            | join_cells(
                &mut cells.transferred,
                &theirs.transferred,
                |(from, to), by| flows.add(from, to, by),
            )
            | join_cells(&mut cells.consumed, &theirs.consumed, ignore)
            | join_cells(&mut cells.retired, &theirs.retired, ignore)
            | join_cells(&mut cells.refunded, &theirs.refunded, ignore)
    }

    /// How many cells the counter holds (grants, transfers, consumptions, retirements,
    /// refunds: one per written entry): what it costs to keep and to send, and what
    /// decoding caps (`CELLS_MAX`).
    pub fn cell_count(&self) -> usize {
        self.cells.granted.len()
            + self.cells.transferred.len()
            + self.cells.consumed.len()
            + self.cells.retired.len()
            + self.cells.refunded.len()
    }

    /// Structural and invariant checks applied to every decoded counter; callers that
    /// receive a counter through another serde format (a network codec) call it too.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |why: &str| Err(DecodeError::Invalid(why.to_owned()));
        if self.cell_count() > Self::CELLS_MAX {
            return invalid("too many cells");
        }
        let zero = |cells: &CellMap<NodeId>| cells.values().any(|v| *v == 0);
        if zero(&self.cells.granted)
            || zero(&self.cells.consumed)
            || zero(&self.cells.retired)
            || zero(&self.cells.refunded)
            || self.cells.transferred.values().any(|v| *v == 0)
        {
            return invalid("zero cell (not canonical)");
        }
        if self.cells.transferred.keys().any(|(from, to)| from == to) {
            return invalid("self transfer");
        }
        if !self.invariant_holds() {
            return invalid(
                "a node used more rights than it holds, or refunded more than it consumed",
            );
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

    /// `encode().len()`, counted without allocating the encoding (the sync core bounds
    /// batches by bytes). One pass over the cells: varints make each cell's size depend on
    /// its value.
    pub fn encoded_len(&self) -> usize {
        self.encode_into(ByteCount(0)).0
    }

    /// Decodes at most [`BoundedCounter::BYTES_MAX`] bytes (format version 1 or 2) and
    /// refuses a counter that is not canonical or breaks the invariant.
    pub fn decode(bytes: &[u8]) -> Result<BoundedCounter, DecodeError> {
        let (version, body) =
            codec::open_versioned(Kind::BoundedCounter, bytes, Self::BYTES_MAX, OLDEST_VERSION)?;
        // Either way the flows are rebuilt from the cells (`From<Cells>`).
        let counter = match version {
            1 => codec::parse::<CounterV1>(body)?.into(),
            _ => codec::parse::<BoundedCounter>(body)?,
        };
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
    /// Every key of `counters` by the end of its period, earliest first: forgetting the
    /// periods sealed takes them from the front instead of scanning every key (a scan of
    /// 200K keys, each period's end computed, held the node's lock 5-6 ms every hour).
    by_end: BTreeSet<(u64, CounterKey)>,
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
struct BookRepr<C> {
    counters: BTreeMap<CounterKey, C>,
}

impl<C: Into<BoundedCounter>> From<BookRepr<C>> for EscrowBook {
    fn from(repr: BookRepr<C>) -> Self {
        let mut counters =
            IdHashMap::with_capacity_and_hasher(repr.counters.len(), Default::default());
        let keys = repr.counters.keys().copied().collect();
        let by_end = repr
            .counters
            .keys()
            .map(|k| (k.period.end_ms(), *k))
            .collect();
        counters.extend(repr.counters.into_iter().map(|(k, c)| (k, c.into())));
        EscrowBook {
            counters,
            keys,
            by_end,
        }
    }
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
        Ok(BookRepr::<BoundedCounter>::deserialize(deserializer)?.into())
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
                self.by_end.insert((key.period.end_ms(), key));
                vacant.insert(BoundedCounter::default())
            }
        }
    }

    /// Forgets the counters of periods ending at or before `through_ms` (periods over and
    /// sealed: their rights can be neither spent nor given back any more), at most `max` of
    /// them, earliest-ending first; returns their keys (fewer than `max`: none is left).
    /// Not a merge: the caller also ignores such counters from peers from then on, or they
    /// come back. Cost: O(log n) per counter forgotten, nothing for the others.
    pub fn forget_through(&mut self, through_ms: u64, max: usize) -> Vec<CounterKey> {
        let mut gone = Vec::new();
        while gone.len() < max {
            match self.by_end.first() {
                Some(&(end_ms, key)) if end_ms <= through_ms => {
                    self.by_end.pop_first();
                    self.keys.remove(&key);
                    self.counters.remove(&key);
                    gone.push(key);
                }
                _ => break,
            }
        }
        gone
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
                self.by_end.insert((key.period.end_ms(), key));
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

    /// Makes room for `total` counters in all, if the book has less: the table's growth
    /// (a rehash of every counter it holds) then happens here, once, instead of in whichever
    /// insert crosses its load factor. A no-op when `total` fits already.
    pub fn reserve_total(&mut self, total: usize) {
        self.counters
            .reserve(total.saturating_sub(self.counters.len()));
    }

    /// How many counters the book holds room for before its table grows.
    pub fn capacity(&self) -> usize {
        self.counters.capacity()
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

    /// Decodes at most [`EscrowBook::BYTES_MAX`] bytes (format version 1 or 2), validating
    /// every counter.
    pub fn decode(bytes: &[u8]) -> Result<EscrowBook, DecodeError> {
        let (version, body) =
            codec::open_versioned(Kind::EscrowBook, bytes, Self::BYTES_MAX, OLDEST_VERSION)?;
        let book: EscrowBook = match version {
            1 => codec::parse::<BookRepr<CounterV1>>(body)?.into(),
            _ => codec::parse(body)?,
        };
        for counter in book.counters.values() {
            counter.validate()?;
        }
        Ok(book)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOME: NodeId = NodeId(1);
    const EDGE: NodeId = NodeId(2);
    const FAR: NodeId = NodeId(3);

    #[test]
    fn cell_count_is_one_per_written_entry() {
        let mut c = BoundedCounter::new();
        assert_eq!(c.cell_count(), 0);
        c.grant(HOME, 10).unwrap();
        c.transfer(HOME, EDGE, 4).unwrap();
        c.transfer(HOME, FAR, 1).unwrap();
        c.consume(EDGE, 2).unwrap();
        c.refund(EDGE, 1).unwrap();
        c.retire(HOME, 1).unwrap();
        assert_eq!(c.cell_count(), 6);
        // A running total grows in its cell: no new cell.
        c.transfer(HOME, EDGE, 1).unwrap();
        assert_eq!(c.cell_count(), 6);
    }

    /// `node`'s transfer totals recomputed by a scan of every transfer cell (as
    /// `local_rights` did before it kept flows).
    fn scanned_flow(c: &BoundedCounter, node: NodeId) -> Flow {
        let mut flow = Flow::default();
        for ((from, to), v) in &c.cells.transferred {
            if *to == node {
                flow.received += u128::from(*v);
            }
            if *from == node {
                flow.given += u128::from(*v);
            }
        }
        flow
    }

    /// The kept flows equal a recomputation from the cells, for every node the counter
    /// names or keeps a flow for, and for each of `also` (nodes it may not know).
    fn check_flows(c: &BoundedCounter, also: &[NodeId]) -> Result<(), TestCaseError> {
        let rebuilt = Flows::of(&c.cells.transferred);
        let kept = c.flows.0.iter().map(|(node, _)| *node);
        for node in c
            .nodes()
            .into_iter()
            .chain(kept)
            .chain(also.iter().copied())
        {
            let scanned = scanned_flow(c, node);
            prop_assert_eq!(c.flows.get(node), scanned, "kept flow of {}", node);
            prop_assert_eq!(rebuilt.get(node), scanned, "rebuilt flow of {}", node);
            let granted = c.cells.granted.get(&node).copied().unwrap_or(0);
            let incoming = u128::from(granted) + scanned.received;
            prop_assert_eq!(c.incoming(node), incoming);
            let outgoing = u128::from(c.refundable(node))
                + u128::from(c.cells.retired.get(&node).copied().unwrap_or(0))
                + scanned.given;
            let rights = u64::try_from(incoming.saturating_sub(outgoing)).unwrap_or(u64::MAX);
            prop_assert_eq!(c.local_rights(node), rights, "rights of {}", node);
        }
        Ok(())
    }

    #[derive(Clone, Debug)]
    enum Op {
        Grant {
            at: usize,
            amount: u64,
        },
        Unmetered {
            at: usize,
            amount: u64,
        },
        Consume {
            at: usize,
            amount: u64,
        },
        Refund {
            at: usize,
            amount: u64,
        },
        Transfer {
            from: usize,
            to: usize,
            amount: u64,
        },
        Retire {
            at: usize,
            amount: u64,
        },
        CallBack {
            at: usize,
            quota: u64,
        },
        /// Replica `into` merges replica `from`'s state.
        Merge {
            into: usize,
            from: usize,
        },
        /// Replica `at` is replaced by its own encoding, decoded (a restart).
        Reload {
            at: usize,
        },
    }

    /// Up to eight nodes; amounts mostly small, sometimes near `u64::MAX` (refused grants
    /// and transfers must leave the flows alone).
    fn ops_strategy() -> impl Strategy<Value = (usize, Vec<Op>)> {
        (1usize..=8).prop_flat_map(|nodes| {
            let at = 0..nodes;
            let amount = prop_oneof![
                8 => 0u64..40,
                1 => Just(u64::MAX / 2),
                1 => Just(u64::MAX),
            ];
            let op = prop_oneof![
                2 => (at.clone(), amount.clone()).prop_map(|(at, amount)| Op::Grant { at, amount }),
                1 => (at.clone(), amount.clone())
                    .prop_map(|(at, amount)| Op::Unmetered { at, amount }),
                3 => (at.clone(), amount.clone())
                    .prop_map(|(at, amount)| Op::Consume { at, amount }),
                1 => (at.clone(), amount.clone())
                    .prop_map(|(at, amount)| Op::Refund { at, amount }),
                5 => (at.clone(), at.clone(), amount.clone())
                    .prop_map(|(from, to, amount)| Op::Transfer { from, to, amount }),
                1 => (at.clone(), amount).prop_map(|(at, amount)| Op::Retire { at, amount }),
                1 => (at.clone(), 0u64..200).prop_map(|(at, quota)| Op::CallBack { at, quota }),
                4 => (at.clone(), at.clone()).prop_map(|(into, from)| Op::Merge { into, from }),
                1 => at.prop_map(|at| Op::Reload { at }),
            ];
            (Just(nodes), prop::collection::vec(op, 0..80))
        })
    }

    proptest! {
        /// Every node acts on its own replica; replicas merge each other's states in any
        /// order. After every step, in every replica, the kept transfer totals equal a
        /// recomputation from the cells for every node, and so do `incoming` and
        /// `local_rights`; the encoding's length is what `encoded_len` says.
        #[test]
        fn kept_flows_equal_a_recomputation_after_any_ops_and_merges(
            (nodes, ops) in ops_strategy()
        ) {
            let ids: Vec<NodeId> = (0..nodes).map(|i| NodeId(i as u64 * 7 + 3)).collect();
            let mut replicas = vec![BoundedCounter::new(); nodes];
            for op in ops {
                // Refusals are part of the test: a refused op must change nothing.
                let _ = match op {
                    Op::Grant { at, amount } => replicas[at].grant(ids[at], amount),
                    Op::Unmetered { at, amount } => {
                        replicas[at].declare_unmetered(ids[at], amount)
                    }
                    Op::Consume { at, amount } => replicas[at].consume(ids[at], amount),
                    Op::Refund { at, amount } => replicas[at].refund(ids[at], amount),
                    Op::Transfer { from, to, amount } => {
                        replicas[from].transfer(ids[from], ids[to], amount)
                    }
                    Op::Retire { at, amount } => replicas[at].retire(ids[at], amount),
                    Op::CallBack { at, quota } => {
                        replicas[at].call_back(ids[at], quota).map(|_| ())
                    }
                    Op::Merge { into, from } => {
                        let theirs = replicas[from].clone();
                        replicas[into].merge(&theirs);
                        Ok(())
                    }
                    Op::Reload { at } => {
                        let decoded = BoundedCounter::decode(&replicas[at].encode());
                        prop_assert_eq!(decoded.as_ref(), Ok(&replicas[at]));
                        replicas[at] = decoded.unwrap();
                        Ok(())
                    }
                };
                for replica in &replicas {
                    check_flows(replica, &ids)?;
                    prop_assert!(replica.invariant_holds());
                    prop_assert_eq!(replica.encoded_len(), replica.encode().len());
                }
            }
        }
    }

    #[test]
    fn decoded_counters_rebuild_their_flows() {
        let mut c = BoundedCounter::new();
        c.grant(HOME, 1_000).unwrap();
        c.transfer(HOME, EDGE, 300).unwrap();
        c.transfer(HOME, FAR, 200).unwrap();
        c.transfer(EDGE, FAR, 120).unwrap();
        c.transfer(FAR, HOME, 50).unwrap();
        c.consume(FAR, 70).unwrap();
        c.refund(FAR, 5).unwrap();
        let all = [HOME, EDGE, FAR, NodeId(99)];
        let decoded = BoundedCounter::decode(&c.encode()).unwrap();
        assert_eq!(decoded, c);
        check_flows(&decoded, &all).unwrap();
        assert_eq!(
            decoded.flows.get(FAR),
            Flow {
                received: 320,
                given: 50
            }
        );
        // Through serde alone, as a network codec reads a counter inside its messages.
        let body = postcard::to_allocvec(&c).unwrap();
        let deserialized: BoundedCounter = postcard::from_bytes(&body).unwrap();
        check_flows(&deserialized, &all).unwrap();
        assert_eq!(deserialized.local_rights(FAR), c.local_rights(FAR));
        // Version 1, and the counters of a book.
        let v1 = BoundedCounter::decode(&unhex(COUNTER_V1)).unwrap();
        check_flows(&v1, &all).unwrap();
        assert_eq!(v1.local_rights(EDGE), 50);
        for bytes in [
            unhex(BOOK_V1),
            EscrowBook::decode(&unhex(BOOK_V1)).unwrap().encode(),
        ] {
            for (_, counter) in EscrowBook::decode(&bytes).unwrap().iter() {
                check_flows(counter, &all).unwrap();
            }
        }
    }

    #[test]
    fn the_encoding_and_debug_are_those_of_the_cells_alone() {
        // The derived shape the counter had before it kept flows.
        #[derive(Debug, Serialize)]
        struct BoundedCounter {
            granted: BTreeMap<NodeId, u64>,
            transferred: BTreeMap<(NodeId, NodeId), u64>,
            consumed: BTreeMap<NodeId, u64>,
            retired: BTreeMap<NodeId, u64>,
            refunded: BTreeMap<NodeId, u64>,
        }
        let mut c = super::BoundedCounter::new();
        c.grant(HOME, u64::MAX / 3).unwrap();
        c.transfer(HOME, EDGE, 1 << 40).unwrap();
        c.transfer(EDGE, FAR, 127).unwrap();
        c.consume(FAR, 100).unwrap();
        c.refund(FAR, 1).unwrap();
        c.retire(HOME, 128).unwrap();
        fn map<K: Ord + Copy>(cells: &CellMap<K>) -> BTreeMap<K, u64> {
            cells.iter().map(|(k, v)| (*k, *v)).collect()
        }
        let before = BoundedCounter {
            granted: map(&c.cells.granted),
            transferred: map(&c.cells.transferred),
            consumed: map(&c.cells.consumed),
            retired: map(&c.cells.retired),
            refunded: map(&c.cells.refunded),
        };
        assert_eq!(c.encode(), codec::encode(Kind::BoundedCounter, &before));
        assert_eq!(format!("{c:?}"), format!("{before:?}"));
        // Equal cells are equal counters, however the flows were reached.
        let decoded = super::BoundedCounter::decode(&c.encode()).unwrap();
        assert_eq!(decoded, c);
    }

    proptest! {
        /// A kind of cell written in any order (inline while it holds one cell) reads,
        /// iterates, prints and serialises as the `BTreeMap` it replaced, and reads back
        /// through one as itself.
        #[test]
        fn cell_maps_behave_as_ordered_maps(
            writes in prop::collection::vec((0u64..12, 0u64..1_000), 0..24)
        ) {
            let mut cells: CellMap<NodeId> = CellMap::default();
            let mut map: BTreeMap<NodeId, u64> = BTreeMap::new();
            for (node, amount) in writes {
                *cells.cell_mut(NodeId(node)) += amount;
                *map.entry(NodeId(node)).or_insert(0) += amount;
                prop_assert_eq!(cells.len(), map.len());
                prop_assert!(!matches!(&cells, CellMap::Many(v) if v.len() < 2));
                for node in 0..13 {
                    prop_assert_eq!(cells.get(&NodeId(node)), map.get(&NodeId(node)));
                }
                let pairs: Vec<(NodeId, u64)> = cells.iter().map(|(k, v)| (*k, *v)).collect();
                let expected: Vec<(NodeId, u64)> = map.iter().map(|(k, v)| (*k, *v)).collect();
                prop_assert_eq!(pairs, expected);
                prop_assert_eq!(format!("{cells:?}"), format!("{map:?}"));
                let bytes = postcard::to_allocvec(&cells).unwrap();
                prop_assert_eq!(&bytes, &postcard::to_allocvec(&map).unwrap());
                let back: CellMap<NodeId> = postcard::from_bytes(&bytes).unwrap();
                prop_assert!(back == cells);
            }
        }
    }

    #[test]
    fn encoded_len_is_the_length_of_the_encoding() {
        let mut c = BoundedCounter::new();
        assert_eq!(c.encoded_len(), c.encode().len());
        // Values across varint widths, and a full transfer matrix of 20 nodes.
        let nodes: Vec<NodeId> = (0..20).map(|i| NodeId(i * 0x0123_4567_89ab)).collect();
        for (i, node) in nodes.iter().enumerate() {
            c.grant(*node, 100 + (1 << (3 * i + 1))).unwrap();
        }
        for from in &nodes {
            for to in nodes.iter().filter(|to| *to != from) {
                c.transfer(*from, *to, 1).unwrap();
            }
            assert_eq!(c.encoded_len(), c.encode().len());
        }
        c.consume(nodes[19], u64::MAX >> 8).unwrap();
        c.refund(nodes[19], 1 << 20).unwrap();
        c.retire(nodes[18], 1 << 50).unwrap();
        assert_eq!(c.encoded_len(), c.encode().len());
        assert!(c.encoded_len() > 380 * 4);
    }

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
    fn declared_unmetered_usage_counts_against_the_quota_and_creates_no_rights() {
        let mut c = BoundedCounter::new();
        // Node EDGE served 80 before it knew of a quota of 100; the home grants the rest.
        c.declare_unmetered(EDGE, 80).unwrap();
        assert_eq!(
            (c.limit(), c.total_consumed(), c.local_rights(EDGE)),
            (80, 80, 0)
        );
        assert_eq!(c.deficit(100), 20);
        c.grant(HOME, c.deficit(100)).unwrap();
        assert_eq!(c.local_rights(HOME), 20);
        // Declared above the quota: the excess is called back from unspent rights.
        c.declare_unmetered(EDGE, 50).unwrap();
        assert_eq!(c.call_back(HOME, 100).unwrap(), 20);
        assert_eq!(c.local_rights(HOME) + c.local_rights(EDGE), 0);
        assert!(c.invariant_holds());
        assert_eq!(c.consumed_by(EDGE), 130);
        assert_eq!(
            c.declare_unmetered(EDGE, u64::MAX),
            Err(EscrowError::Overflow(EDGE))
        );
        assert_eq!(
            c.consumed_by(EDGE),
            130,
            "a refused declaration changes nothing"
        );
    }

    #[test]
    fn decode_refuses_states_that_break_the_invariant() {
        let mut c = BoundedCounter::new();
        c.grant(HOME, 5).unwrap();
        c.consume(HOME, 5).unwrap();
        assert_eq!(BoundedCounter::decode(&c.encode()), Ok(c.clone()));
        let mut forged = c.clone();
        forged.cells.consumed.insert(EDGE, 1);
        assert!(matches!(
            BoundedCounter::decode(&forged.encode()),
            Err(DecodeError::Invalid(_))
        ));
        let mut zero = c.clone();
        zero.cells.retired.insert(HOME, 0);
        assert!(BoundedCounter::decode(&zero.encode()).is_err());
        let mut selfish = c;
        selfish.cells.transferred.insert((HOME, HOME), 1);
        assert!(BoundedCounter::decode(&selfish.encode()).is_err());
    }

    #[test]
    fn a_refund_gives_back_only_what_the_node_consumed() {
        let mut home = BoundedCounter::new();
        home.grant(HOME, 4).unwrap();
        home.transfer(HOME, EDGE, 2).unwrap();
        home.consume(HOME, 2).unwrap();
        assert_eq!(home.local_rights(HOME), 0);
        // The work of one admitted request was not delivered: its right comes back.
        home.refund(HOME, 1).unwrap();
        assert_eq!(home.local_rights(HOME), 1);
        assert_eq!(home.total_consumed(), 1);
        assert_eq!(home.total_refunded(), 1);
        assert_eq!(home.refundable(HOME), 1);
        // Never beyond what the node itself consumed and has not refunded.
        assert_eq!(
            home.refund(HOME, 2),
            Err(EscrowError::RefundBeyondConsumed {
                node: HOME,
                requested: 2,
                refundable: 1
            })
        );
        assert_eq!(
            home.refund(EDGE, 1),
            Err(EscrowError::RefundBeyondConsumed {
                node: EDGE,
                requested: 1,
                refundable: 0
            })
        );
        home.consume(HOME, 1).unwrap();
        assert_eq!(home.total_consumed(), 2);
        assert!(home.invariant_holds());
        // Replicated twice, the refund gives nothing extra.
        let mut edge = BoundedCounter::new();
        edge.merge(&home);
        edge.merge(&home);
        assert_eq!(edge, home);
        assert_eq!(edge.local_rights(HOME), 0);
        assert_eq!(edge.local_rights(EDGE), 2);
    }

    #[test]
    fn a_refund_after_a_lowering_is_called_back_again() {
        let mut home = BoundedCounter::new();
        home.grant(HOME, 10).unwrap();
        home.consume(HOME, 10).unwrap();
        // Lowered to 4 with nothing unspent: nothing to retire.
        assert_eq!(home.call_back(HOME, 4).unwrap(), 0);
        home.refund(HOME, 5).unwrap();
        assert_eq!(home.call_back(HOME, 4).unwrap(), 5);
        assert_eq!(home.limit(), 5);
        assert_eq!(home.total_consumed(), 5);
        assert_eq!(home.local_rights(HOME), 0);
        assert!(home.invariant_holds());
    }

    #[test]
    fn decode_refuses_a_refund_beyond_consumption() {
        let mut c = BoundedCounter::new();
        c.grant(HOME, 5).unwrap();
        c.consume(HOME, 3).unwrap();
        c.refund(HOME, 2).unwrap();
        assert_eq!(BoundedCounter::decode(&c.encode()), Ok(c.clone()));
        let mut forged = c.clone();
        forged.cells.refunded.insert(HOME, 4);
        assert!(!forged.invariant_holds());
        assert!(BoundedCounter::decode(&forged.encode()).is_err());
        // A refund by a node that never consumed (it would hand it rights from nothing).
        let mut foreign = c.clone();
        foreign.cells.refunded.insert(EDGE, 1);
        assert!(BoundedCounter::decode(&foreign.encode()).is_err());
        let mut zero = c;
        zero.cells.refunded.insert(EDGE, 0);
        assert!(BoundedCounter::decode(&zero.encode()).is_err());
    }

    /// Bytes written by the build before refunds (format version 1): grant 300 to HOME,
    /// 200 of them to EDGE, EDGE consumed 150, HOME retired 7; and a book of that counter
    /// (tenant 9, requests) and a grant of 5 to EDGE (tenant 3, bytes in), November 2026.
    const COUNTER_V1: &str = "01040101ac02010102c80101029601010107";
    const BOOK_V1: &str =
        "0105020300ea0f0b020102050000000900ea0f0b000101ac02010102c80101029601010107";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn version_1_encodings_still_decode_and_re_encode_as_version_2() {
        use crate::ids::{Metric, TenantId};
        use crate::period::Period;
        let mut expected = BoundedCounter::new();
        expected.grant(HOME, 300).unwrap();
        expected.transfer(HOME, EDGE, 200).unwrap();
        expected.consume(EDGE, 150).unwrap();
        expected.retire(HOME, 7).unwrap();
        let v1 = unhex(COUNTER_V1);
        let counter = BoundedCounter::decode(&v1).unwrap();
        assert_eq!(counter, expected);
        // Version 2: the same body plus an empty refund map.
        let mut v2 = vec![2, Kind::BoundedCounter as u8];
        v2.extend_from_slice(&v1[2..]);
        v2.push(0);
        assert_eq!(counter.encode(), v2);
        let month = Period::month(2026, 11).unwrap();
        let mut book = EscrowBook::new();
        *book.counter_mut(CounterKey::new(TenantId(9), month, Metric::Requests)) = expected;
        book.counter_mut(CounterKey::new(TenantId(3), month, Metric::BytesIn))
            .grant(EDGE, 5)
            .unwrap();
        let stored = EscrowBook::decode(&unhex(BOOK_V1)).unwrap();
        assert_eq!(stored, book);
        assert_eq!(EscrowBook::decode(&stored.encode()), Ok(book));
        // A version-1 body is never read as version 2 (its fifth map is missing).
        let mut relabelled = unhex(COUNTER_V1);
        relabelled[0] = 2;
        assert!(BoundedCounter::decode(&relabelled).is_err());
    }

    #[test]
    fn forgetting_takes_the_earliest_ending_periods_first_and_stops_at_its_bound() {
        use crate::ids::{Metric, TenantId};
        use crate::period::{Period, PeriodKind};
        let october = Period::month(2026, 10).unwrap();
        let november = Period::month(2026, 11).unwrap();
        let hour = Period::containing(PeriodKind::Hour, october.end_ms() + 1);
        let mut book = EscrowBook::new();
        for t in [5u64, 1, 3] {
            for period in [november, october, hour] {
                book.counter_mut(CounterKey::new(TenantId(t), period, Metric::Requests))
                    .grant(HOME, t)
                    .unwrap();
            }
        }
        // Decoded or built, a book forgets the same way.
        let mut decoded = EscrowBook::decode(&book.encode()).unwrap();
        for book in [&mut book, &mut decoded] {
            let first = book.forget_through(hour.end_ms(), 4);
            assert_eq!(first.len(), 4);
            // October's three, then the first of the hour's.
            assert!(first[..3].iter().all(|k| k.period == october), "{first:?}");
            assert_eq!(first[3].period, hour);
            let rest = book.forget_through(hour.end_ms(), 4);
            assert_eq!(rest.len(), 2);
            assert!(rest.iter().all(|k| k.period == hour));
            assert!(book.forget_through(hour.end_ms(), 4).is_empty());
            assert_eq!(book.len(), 3);
            assert!(book.iter().all(|(k, _)| k.period == november));
        }
        assert_eq!(book, decoded);
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
