//! The usage ledger: grow-only counters keyed by (tenant, period, metric), one slot per
//! node, replicated by delta-state anti-entropy.
//!
//! # Shape
//! Each slot `(key, origin)` holds `value` (the origin's running total for the key) and
//! `seq`, the origin's sequence number of its *last* increment to that slot. Only the origin
//! writes its slots; every local increment takes the next number of the origin's own
//! sequence. Merge is the slot-wise (component-wise) maximum, so it is commutative,
//! associative and idempotent, and no read ever goes down.
//!
//! # Deltas and the version vector
//! A replica's [`VersionVector`] entry `vv[o] = s` means: *every slot of `o` whose last
//! increment (in `o`'s own history) has a sequence number ≤ `s` is held here at its final
//! value*. It is a cursor into `o`'s sequence, kept honest as follows:
//! - [`Ledger::delta_since`] sends, per origin, the slots whose `seq` lies in
//!   `(peer_vv[o], cut]`, ascending by `seq`, and claims `to_seq = cut`. The cut is either
//!   the sender's own `vv[o]` (everything sent) or the `seq` of the last slot in a chunk
//!   cut short by `entries_max` (never in the middle of equal `seq`s). Sending current
//!   values is always safe: merge is a maximum and values only grow.
//! - [`Ledger::apply_delta`] merges every entry, and raises `vv[o]` to `to_seq` only if the
//!   part's `from_seq` ≤ the local `vv[o]` (the chunk extends a prefix we have). A chunk
//!   that arrives early still contributes its values; its claim is dropped and the next
//!   anti-entropy round resends it. So loss, duplication and reordering only delay
//!   convergence, and applying chunks in order advances `vv` through complete prefixes.
//!
//! Why not `crdts::GCounter`: it keeps one number per actor for one counter, with no record
//! of *when* a slot last changed, so "what changed since the peer's version" would mean
//! shipping every slot (O(state)). The per-slot `seq` plus a per-origin index ordered by
//! `seq` (paged, so that an increment moves its slot in O(1); see `SeqIndex`) makes
//! extraction proportional to what changed. The version vector itself is
//! `crdts::VClock` (see [`crate::version`]).
//!
//! # Digest
//! The digest is the version vector: O(nodes) bytes whatever the number of tenants. Two
//! replicas exchange digests, and each sends what the other's vector lacks.
//!
//! # Seals and finality
//! Once a period has ended (plus a grace the caller picks), each origin *seals* it: a
//! promise never to write a slot of a period ending at or before `through_ms` again
//! ([`Ledger::seal`]; [`Ledger::increment`] then refuses such a slot with
//! [`IncrementError::Sealed`]). The seal is the slot of a reserved key ([`SEAL_KEY`],
//! tenant `u64::MAX`, which the directory never assigns) whose value is `through_ms`: it takes the
//! next number of the origin's sequence like any increment, so it rides the same deltas,
//! chunks, version vector and store, and its merge (a maximum) is the seal's own rule. It is
//! never counted in a total nor listed among the slots.
//!
//! Why that makes a total final: a replica whose `vv[o]` is at least the seq of `o`'s seal
//! slot holds every slot of `o` whose last increment came before the seal (the cursor's
//! meaning, above), and a sealed period's slots all did, since `o` wrote none of them after.
//! So a replica holding, for every origin that could have written to a period, a seal
//! covering it and the prefix up to that seal, holds the period's final slots: its totals
//! can no longer change, and every such replica computes the same ones
//! ([`Ledger::finality`]). A seal that arrives ahead of its prefix (an early chunk) proves
//! nothing until the prefix does.
//!
//! # Compaction
//! A final period can be *compacted* ([`Ledger::compact`]): its slots are replaced by its
//! [`Settlement`] (one total per tenant and metric, the same on every replica that calls
//! the period final), and slots of a settled period are ignored from then on, whoever sends
//! them. The version vector is untouched: the cursors still mean what they meant, minus the
//! dropped slots, which no replica needs again once it holds the settlement. A replica
//! that may lack some of them receives the settlement instead
//! ([`Ledger::settlements_lacked_by`], [`Ledger::apply_settlement`]).
//!
//! # Forgetting settlements
//! Settlements are the invoices: kept for a retention the caller chooses (two years, say),
//! then forgotten ([`Ledger::forget_settled`]), so the ledger does not grow with every
//! month ever billed. What is forgotten is a prefix of time: a watermark `before_ms` such
//! that every period ending at or before it is gone here, slots and settlement, and any
//! slot or settlement of such a period that arrives later is ignored, as a settled
//! period's slots are. The watermark never passes a period whose slots are still here
//! (one that is not final yet: a member missing for years), so nothing is forgotten that
//! was never settled here.
//!
//! # Retirement
//! An origin gone for good (decommissioned) whose every usage slot was compacted holds
//! nothing here but its seal: it can be *retired* ([`Ledger::retire`]). Its seal slot and
//! its version-vector entry are dropped, so identities that churn (a wiped node comes back
//! as a new one) no longer accumulate toward [`VersionVector::NODES_MAX`]; the retired
//! identity is remembered (8 bytes), and its entries are refused from then on, whoever
//! relays them, so a late message can never re-create its old slots.

use std::collections::{btree_map, BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::codec::{self, DecodeError, Kind};
use crate::ids::{CounterKey, IdHashMap, Metric, NodeId, TenantId};
use crate::period::Period;
use crate::settlement::Settlement;
use crate::version::VersionVector;

/// One node's slot of one counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The origin's running total for the key.
    pub value: u64,
    /// The origin's sequence number of its last increment to this slot.
    pub seq: u64,
}

impl Slot {
    fn join(&mut self, other: Slot) {
        self.value = self.value.max(other.value);
        self.seq = self.seq.max(other.seq);
    }
}

/// The reserved key whose slot holds an origin's seal (see the module doc): tenant
/// `u64::MAX` is never a tenant (the admin API assigns ids below 2^53, the largest a JSON
/// number carries exactly).
pub const SEAL_KEY: CounterKey = CounterKey {
    tenant: TenantId(u64::MAX),
    period: Period::Hour {
        hours_since_epoch: 0,
    },
    metric: Metric::Requests,
};

/// A local increment that cannot be recorded. Nothing was changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum IncrementError {
    #[error("counter {key:?} of node {node} would overflow u64")]
    Overflow { node: NodeId, key: CounterKey },
    #[error("node {0} has used up its sequence numbers")]
    SequenceExhausted(NodeId),
    /// The period ended before this node's seal: usage stamped in it now is a bug (a
    /// clock stepped back past the grace, or a caller stamping with an old time).
    #[error(
        "period {period} of {key:?} is sealed on node {node} (through {sealed_through_ms} ms)"
    )]
    Sealed {
        node: NodeId,
        key: CounterKey,
        period: Period,
        sealed_through_ms: u64,
    },
    /// The seals' tenant ([`SEAL_KEY`]) is reserved.
    #[error("tenant {} is reserved", u64::MAX)]
    Reserved,
}

/// Whether a period's totals can still change on a replica (see [`Ledger::finality`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finality {
    /// Every origin asked about sealed the period, and this replica holds each one's
    /// slots up to its seal: the totals are final.
    Final,
    /// The origins whose seal covering the period (or whose slots up to it) this replica
    /// lacks, ascending.
    Open { missing: Vec<NodeId> },
}

impl Finality {
    pub fn is_final(&self) -> bool {
        matches!(self, Finality::Final)
    }
}

/// A delta that breaks the rules of its format (see [`Delta::validate`]). Nothing was
/// changed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid delta: {0}")]
pub struct InvalidDelta(pub &'static str);

/// One slot in a delta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaEntry {
    pub key: CounterKey,
    pub value: u64,
    pub seq: u64,
}

/// The part of a delta about one origin's slots: the entries whose `seq` lies in
/// `(from_seq, to_seq]`, ascending, and the claim that they complete that range.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginDelta {
    pub origin: NodeId,
    pub from_seq: u64,
    pub to_seq: u64,
    pub entries: Vec<DeltaEntry>,
}

/// What a peer lacks, at most [`Delta::ENTRIES_MAX`] entries; see the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub parts: Vec<OriginDelta>,
}

impl Delta {
    /// Entries one delta may carry, whatever the caller asks for.
    pub const ENTRIES_MAX: usize = 16_384;
    /// Worst-case bytes of one entry: key (tenant 10, period 11, metric 1) + value 10 +
    /// seq 10 as varints.
    pub const ENTRY_BYTES_MAX: usize = 42;
    /// Worst-case bytes of one part's header: origin, from, to (10 each) + length (5).
    pub const PART_BYTES_MAX: usize = 35;
    /// Cap on an encoded delta: header, part count, every part and every entry at worst.
    pub const BYTES_MAX: usize = 2
        + 5
        + VersionVector::NODES_MAX * Self::PART_BYTES_MAX
        + Self::ENTRIES_MAX * Self::ENTRY_BYTES_MAX;

    /// Whether the delta carries nothing at all.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Number of slot entries.
    pub fn entry_count(&self) -> usize {
        self.parts.iter().map(|p| p.entries.len()).sum()
    }

    /// Checks the format rules: origins unique and ascending, at most
    /// [`VersionVector::NODES_MAX`] parts and [`Delta::ENTRIES_MAX`] entries, and in each
    /// part `from_seq ≤ to_seq` and entries ascending by `seq` within `(from_seq, to_seq]`.
    pub fn validate(&self) -> Result<(), InvalidDelta> {
        if self.parts.len() > VersionVector::NODES_MAX {
            return Err(InvalidDelta("too many origins"));
        }
        if self.entry_count() > Self::ENTRIES_MAX {
            return Err(InvalidDelta("too many entries"));
        }
        if self.parts.windows(2).any(|w| w[0].origin >= w[1].origin) {
            return Err(InvalidDelta("origins are not unique and ascending"));
        }
        for part in &self.parts {
            if part.from_seq > part.to_seq {
                return Err(InvalidDelta("from_seq is past to_seq"));
            }
            if part.entries.windows(2).any(|w| w[0].seq > w[1].seq) {
                return Err(InvalidDelta("entries are not ascending by seq"));
            }
            if part
                .entries
                .iter()
                .any(|e| e.seq <= part.from_seq || e.seq > part.to_seq)
            {
                return Err(InvalidDelta("an entry's seq is outside (from_seq, to_seq]"));
            }
        }
        Ok(())
    }

    /// The peer's version vector after it applies this delta in order (what
    /// [`Ledger::apply_delta`] would do to it).
    pub fn advance(&self, peer: &mut VersionVector) {
        for part in &self.parts {
            if part.from_seq <= peer.get(part.origin) {
                peer.advance(part.origin, part.to_seq);
            }
        }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(Kind::LedgerDelta, self)
    }

    /// Decodes at most [`Delta::BYTES_MAX`] bytes and validates the result.
    pub fn decode(bytes: &[u8]) -> Result<Delta, DecodeError> {
        let delta: Delta = codec::decode(Kind::LedgerDelta, bytes, Self::BYTES_MAX)?;
        delta
            .validate()
            .map_err(|e| DecodeError::Invalid(e.0.to_owned()))?;
        Ok(delta)
    }
}

/// The smallest key, a bound for index ranges (not a valid period; never stored).
const KEY_MIN: CounterKey = CounterKey {
    tenant: TenantId(0),
    period: Period::Month { year: 0, month: 0 },
    metric: Metric::Requests,
};

/// Slots grouped by (tenant, period, origin), one per metric, hashed with
/// [`crate::ids::IdHasher`]: deterministic (this crate has no randomness), and the keys are
/// directory-assigned ids, not attacker-chosen strings. A hash map rather than a B-tree
/// because an increment at 1.2M slots was bound by the B-tree's cache misses
/// (docs/BENCHMARKS.md has both runs); grouped because a request adds to every metric of
/// its tenant at once, so its four increments find one entry (one cache miss, not four).
type SlotMap = IdHashMap<GroupKey, SlotGroup>;

/// (tenant, period, origin): what the slots of one [`SlotGroup`] share.
type GroupKey = (TenantId, Period, NodeId);

fn group_key(key: &CounterKey, origin: NodeId) -> GroupKey {
    (key.tenant, key.period, origin)
}

/// One origin's slots of one tenant and period, by [`Metric::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SlotGroup {
    /// Bit `i` set: the slot of metric `i` exists (an absent slot is all zero).
    present: u8,
    slots: [Slot; Metric::ALL.len()],
}

impl SlotGroup {
    fn get(&self, metric: Metric) -> Option<&Slot> {
        let i = metric.index();
        (self.present & (1 << i) != 0).then(|| &self.slots[i])
    }

    /// The slot of `metric`, and whether it existed (created zero if not).
    fn get_mut(&mut self, metric: Metric) -> (&mut Slot, bool) {
        let i = metric.index();
        let existed = self.present & (1 << i) != 0;
        self.present |= 1 << i;
        (&mut self.slots[i], existed)
    }

    fn iter(&self) -> impl Iterator<Item = (Metric, Slot)> + '_ {
        Metric::ALL
            .into_iter()
            .filter_map(|metric| self.get(metric).map(|slot| (metric, *slot)))
    }
}

/// One replica of the usage ledger. See the module doc.
#[derive(Clone, Debug)]
pub struct Ledger {
    /// The local node: the only origin [`Ledger::increment`] writes.
    node: NodeId,
    /// Every slot, by (tenant, period, origin) then metric: one hash probe per increment.
    slots: SlotMap,
    /// Number of slots (`slots` holds groups).
    slot_count: usize,
    /// Every key with a slot, ordered (for per-key reads in node order and exports).
    keys: BTreeSet<CounterKey>,
    /// Per origin, its slots ordered by `seq`: delta extraction walks only what changed.
    /// Its keys are also every origin with a slot (see [`Ledger::origins`]).
    by_seq: BTreeMap<NodeId, SeqIndex>,
    /// Complete prefix per origin; `vv[node]` is the local sequence.
    vv: VersionVector,
    /// Keys held per period (for compaction's schedule: which periods are here).
    periods: BTreeMap<Period, usize>,
    /// Compacted periods' totals, in place of their slots.
    settled: BTreeMap<Period, Settlement>,
    /// Retired origins: out of the version vector, their entries refused.
    retired: BTreeSet<NodeId>,
    /// Every period ending at or before this is forgotten here (see "Forgetting
    /// settlements"): no settlement, no slot, and none taken again.
    forgotten_before_ms: u64,
}

/// One origin's slots as `(seq, key)` pairs, ordered by seq: a map from seq to key,
/// paged. An origin gives each increment its own `seq`, so almost always a `seq` names one
/// slot, and the seqs in use are close together: the index is cut into pages of [`PAGE`]
/// consecutive seqs (a B-tree of pages, a few thousand at the brief's scale, so it stays
/// in cache). A page is dense (an array indexed by `seq % PAGE`) while at least
/// [`DENSE_MIN`] of its seqs name a slot, and sparse (an ordered list) below that, so an
/// increment's removal of its slot's old seq is one direct write into a dense page (one
/// cache miss) where a B-tree of 400K seqs cost a descent of several. Memory stays
/// bounded: a dense page holds at most `PAGE / DENSE_MIN` entries per live slot, and a
/// page with none is dropped. Pairs whose `seq` is already taken (a merged or hostile
/// state can hold some) go to a second, ordered set; reads merge the two.
#[derive(Clone, Debug, Default)]
struct SeqIndex {
    pages: BTreeMap<u64, Page>,
    shared: BTreeSet<(u64, CounterKey)>,
}

/// Seqs per page of a [`SeqIndex`].
const PAGE: u64 = 256;
/// A dense page with fewer live entries becomes sparse.
const DENSE_MIN: usize = PAGE as usize / 8;
/// A sparse page with more entries becomes dense (above [`DENSE_MIN`]: no flapping).
const SPARSE_MAX: usize = PAGE as usize / 4;

/// The page number and the offset in it of `seq`.
fn page_of(seq: u64) -> (u64, usize) {
    (seq / PAGE, (seq % PAGE) as usize)
}

/// The seqs `page * PAGE + offset` of one page that name a slot, with their keys.
#[derive(Clone, Debug)]
enum Page {
    /// `keys[offset]`, `PAGE` of them; `live` counts the `Some`s.
    Dense {
        live: usize,
        keys: Box<[Option<CounterKey>]>,
    },
    /// `(offset, key)`, ascending by offset, at most [`SPARSE_MAX`].
    Sparse(Vec<(u16, CounterKey)>),
}

impl Page {
    fn get(&self, offset: usize) -> Option<&CounterKey> {
        match self {
            Page::Dense { keys, .. } => keys[offset].as_ref(),
            Page::Sparse(entries) => entries
                .binary_search_by_key(&offset, |e| usize::from(e.0))
                .ok()
                .map(|i| &entries[i].1),
        }
    }

    fn len(&self) -> usize {
        match self {
            Page::Dense { live, .. } => *live,
            Page::Sparse(entries) => entries.len(),
        }
    }

    /// Sets the key at a free `offset`.
    fn put(&mut self, offset: usize, key: CounterKey) {
        match self {
            Page::Dense { live, keys } => {
                debug_assert!(keys[offset].is_none());
                keys[offset] = Some(key);
                *live += 1;
            }
            Page::Sparse(entries) => {
                let at = entries
                    .binary_search_by_key(&offset, |e| usize::from(e.0))
                    .unwrap_or_else(|at| at);
                entries.insert(at, (offset as u16, key));
                if entries.len() > SPARSE_MAX {
                    let mut keys = vec![None; PAGE as usize].into_boxed_slice();
                    for (offset, key) in entries.iter() {
                        keys[usize::from(*offset)] = Some(*key);
                    }
                    *self = Page::Dense {
                        live: entries.len(),
                        keys,
                    };
                }
            }
        }
    }

    /// Clears an occupied `offset`.
    fn clear(&mut self, offset: usize) {
        match self {
            Page::Dense { live, keys } => {
                debug_assert!(keys[offset].is_some());
                keys[offset] = None;
                *live -= 1;
                if *live < DENSE_MIN {
                    *self = Page::Sparse(Self::entries(keys).collect());
                }
            }
            Page::Sparse(entries) => {
                if let Ok(at) = entries.binary_search_by_key(&offset, |e| usize::from(e.0)) {
                    entries.remove(at);
                }
            }
        }
    }

    fn entries(keys: &[Option<CounterKey>]) -> impl Iterator<Item = (u16, CounterKey)> + '_ {
        keys.iter()
            .enumerate()
            .filter_map(|(offset, key)| key.map(|key| (offset as u16, key)))
    }

    /// `(offset, key)` ascending.
    fn iter(&self) -> impl Iterator<Item = (u16, CounterKey)> + '_ {
        let (dense, sparse) = match self {
            Page::Dense { keys, .. } => (Some(keys), None),
            Page::Sparse(entries) => (None, Some(entries)),
        };
        dense
            .into_iter()
            .flat_map(|keys| Self::entries(keys))
            .chain(
                sparse
                    .into_iter()
                    .flat_map(|entries| entries.iter().copied()),
            )
    }
}

impl SeqIndex {
    fn is_empty(&self) -> bool {
        self.pages.is_empty() && self.shared.is_empty()
    }

    fn insert(&mut self, seq: u64, key: CounterKey) {
        let (page_no, offset) = page_of(seq);
        let page = self
            .pages
            .entry(page_no)
            .or_insert_with(|| Page::Sparse(Vec::new()));
        match page.get(offset) {
            None => page.put(offset, key),
            Some(taken) => {
                if *taken != key {
                    self.shared.insert((seq, key));
                }
            }
        }
    }

    fn remove(&mut self, seq: u64, key: CounterKey) {
        let (page_no, offset) = page_of(seq);
        if let btree_map::Entry::Occupied(mut page) = self.pages.entry(page_no) {
            if page.get().get(offset) == Some(&key) {
                page.get_mut().clear(offset);
                if page.get().len() == 0 {
                    page.remove();
                }
                return;
            }
        }
        self.shared.remove(&(seq, key));
    }

    /// Every pair with `seq ≥ from`, ascending by `(seq, key)`.
    fn from(&self, from: u64) -> impl Iterator<Item = (u64, CounterKey)> + '_ {
        let mut one = self
            .pages
            .range(page_of(from).0..)
            .flat_map(|(page_no, page)| {
                let base = page_no * PAGE;
                page.iter()
                    .map(move |(offset, key)| (base + u64::from(offset), key))
            })
            .filter(move |(seq, _)| *seq >= from)
            .peekable();
        let mut shared = self.shared.range((from, KEY_MIN)..).copied().peekable();
        std::iter::from_fn(move || match (one.peek(), shared.peek()) {
            (Some(a), Some(b)) if b < a => shared.next(),
            (Some(_), _) => one.next(),
            (None, _) => shared.next(),
        })
    }
}

/// One page of [`Ledger::totals_page`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TotalsPage {
    /// `(tenant, totals by [`Metric::index`])`, ascending by tenant.
    pub rows: Vec<(TenantId, [u64; 4])>,
    /// Where the next page starts (after this tenant); `None` when nothing is left.
    pub resume_after: Option<TenantId>,
}

/// The stored shape of a ledger: flat, sorted, canonical.
#[derive(Serialize, Deserialize)]
struct LedgerRepr {
    node: NodeId,
    vv: VersionVector,
    slots: Vec<(CounterKey, NodeId, Slot)>,
    settled: Vec<Settlement>,
    retired: Vec<NodeId>,
    forgotten_before_ms: u64,
}

/// Version 2 of [`LedgerRepr`]: before settlements were forgotten.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct LedgerReprV2 {
    node: NodeId,
    vv: VersionVector,
    slots: Vec<(CounterKey, NodeId, Slot)>,
    settled: Vec<Settlement>,
    retired: Vec<NodeId>,
}

/// Version 1 of [`LedgerRepr`]: before settlements.
#[derive(Deserialize)]
struct LedgerReprV1 {
    node: NodeId,
    vv: VersionVector,
    slots: Vec<(CounterKey, NodeId, Slot)>,
}

impl Ledger {
    /// Cap on an encoded state. A ledger of 100K tenants × 4 metrics × 12 months × 8 nodes
    /// is about 38M slots, typically 15–25 bytes each; a larger file is refused unread.
    pub const STATE_BYTES_MAX: usize = 1 << 31;

    /// An empty replica owned by `node` (see [`NodeId`] on choosing it).
    pub fn new(node: NodeId) -> Ledger {
        Ledger {
            node,
            slots: SlotMap::default(),
            slot_count: 0,
            keys: BTreeSet::new(),
            by_seq: BTreeMap::new(),
            vv: VersionVector::new(),
            periods: BTreeMap::new(),
            settled: BTreeMap::new(),
            retired: BTreeSet::new(),
            forgotten_before_ms: 0,
        }
    }

    /// The local node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The digest to send to a peer: this replica's version vector.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// Adds `amount` to the local node's slot of `key`. An amount of 0 changes nothing.
    pub fn increment(&mut self, key: CounterKey, amount: u64) -> Result<(), IncrementError> {
        if key.tenant == SEAL_KEY.tenant {
            return Err(IncrementError::Reserved);
        }
        let sealed_through_ms = self.sealed_through(self.node);
        if key.period.end_ms() <= sealed_through_ms {
            return Err(IncrementError::Sealed {
                node: self.node,
                key,
                period: key.period,
                sealed_through_ms,
            });
        }
        self.write(key, amount)
    }

    /// Seals this node's slots of every period ending at or before `through_ms` (see the
    /// module doc): from now on [`Ledger::increment`] refuses them. Returns whether the
    /// seal moved (a seal never moves back; an older `through_ms` changes nothing).
    pub fn seal(&mut self, through_ms: u64) -> Result<bool, IncrementError> {
        let sealed = self.sealed_through(self.node);
        if through_ms <= sealed {
            return Ok(false);
        }
        self.write(SEAL_KEY, through_ms - sealed)?;
        Ok(true)
    }

    /// `origin`'s seal as held here: periods ending at or before this are sealed by it (0:
    /// none). Held is not proven: see [`Ledger::finality`].
    pub fn sealed_through(&self, origin: NodeId) -> u64 {
        self.get_slot(&SEAL_KEY, origin)
            .map_or(0, |slot| slot.value)
    }

    /// Whether `period`'s totals are final here, given the origins that could have written
    /// to it: each must have sealed it, and this replica must hold its slots up to that
    /// seal (`vv[o]` ≥ the seal's seq).
    pub fn finality(&self, period: Period, writers: impl IntoIterator<Item = NodeId>) -> Finality {
        let end_ms = period.end_ms();
        let mut missing: Vec<NodeId> = writers
            .into_iter()
            .filter(|origin| match self.get_slot(&SEAL_KEY, *origin) {
                Some(seal) => seal.value < end_ms || self.vv.get(*origin) < seal.seq,
                None => true,
            })
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            Finality::Final
        } else {
            Finality::Open { missing }
        }
    }

    /// Compacts `period` if it is final for `writers` (see [`Ledger::finality`]): builds
    /// its settlement, drops its slots, and returns the settlement (`None`: not final, or
    /// already compacted). Cost: one pass over the keys held (the key set is ordered by
    /// tenant first), once per period.
    pub fn compact(
        &mut self,
        period: Period,
        writers: impl IntoIterator<Item = NodeId>,
    ) -> Option<Settlement> {
        if period == SEAL_KEY.period || self.is_closed(period) {
            return None;
        }
        let writers: BTreeSet<NodeId> = writers.into_iter().collect();
        if !self.finality(period, writers.iter().copied()).is_final() {
            return None;
        }
        let keys: Vec<CounterKey> = self
            .keys
            .iter()
            .filter(|key| key.period == period)
            .copied()
            .collect();
        let mut totals = Vec::with_capacity(keys.len());
        let mut through: BTreeMap<NodeId, u64> = writers
            .iter()
            .map(|w| (*w, self.get_slot(&SEAL_KEY, *w).map_or(0, |seal| seal.seq)))
            .collect();
        for key in &keys {
            let mut total = 0u64;
            for origin in self.origins() {
                if let Some(slot) = self.get_slot(key, *origin) {
                    total = total.saturating_add(slot.value);
                    if !writers.contains(origin) {
                        // An origin that needed no seal (decommissioned): its usage is in
                        // up to the latest of its prefix and its slots here.
                        let at = through.entry(*origin).or_insert(self.vv.get(*origin));
                        *at = (*at).max(slot.seq);
                    }
                }
            }
            if total > 0 {
                totals.push((key.tenant, key.metric, total));
            }
        }
        let settlement = Settlement {
            period,
            through: through.into_iter().collect(),
            totals,
        };
        self.drop_period(period);
        self.settled.insert(period, settlement.clone());
        Some(settlement)
    }

    /// Takes a settlement made elsewhere (see [`crate::settlement`]): drops this replica's
    /// slots of its period and keeps the settlement. Returns whether it was new here (a
    /// period settled already keeps its settlement: built from the same final slots, it
    /// is the same).
    pub fn apply_settlement(&mut self, settlement: Settlement) -> bool {
        if settlement.period == SEAL_KEY.period || self.is_closed(settlement.period) {
            return false;
        }
        self.drop_period(settlement.period);
        self.settled.insert(settlement.period, settlement);
        true
    }

    /// Whether `period`'s slots are gone here for good: settled, or forgotten (never the
    /// seals' reserved period, whatever the watermark).
    fn is_closed(&self, period: Period) -> bool {
        self.settled.contains_key(&period)
            || (period != SEAL_KEY.period && period.end_ms() <= self.forgotten_before_ms)
    }

    /// Forgets the settlements of periods ending at or before `before_ms` (see "Forgetting
    /// settlements"), stopping short of any period whose slots are still here. The
    /// watermark moves to the end of the latest settlement forgotten (so replicas that
    /// forgot the same settlements hold the same state), and never back. Returns it; it is
    /// persisted and given again on load ([`Ledger::forgotten_before_ms`]).
    pub fn forget_settled(&mut self, before_ms: u64) -> u64 {
        let open = self
            .periods()
            .map(|period| period.end_ms())
            .min()
            .unwrap_or(u64::MAX);
        let limit = before_ms.min(open.saturating_sub(1));
        let Some(watermark) = self
            .settled
            .keys()
            .map(|period| period.end_ms())
            .filter(|end| *end <= limit)
            .max()
        else {
            return self.forgotten_before_ms;
        };
        if watermark <= self.forgotten_before_ms {
            return self.forgotten_before_ms;
        }
        self.forgotten_before_ms = watermark;
        self.settled.retain(|period, _| period.end_ms() > watermark);
        self.forgotten_before_ms
    }

    /// Every period ending at or before this is forgotten here (0: none).
    pub fn forgotten_before_ms(&self) -> u64 {
        self.forgotten_before_ms
    }

    /// The settlement of `period`, if compacted here.
    pub fn settlement(&self, period: Period) -> Option<&Settlement> {
        self.settled.get(&period)
    }

    /// Every compacted period, ascending.
    pub fn settled_periods(&self) -> impl DoubleEndedIterator<Item = Period> + '_ {
        self.settled.keys().copied()
    }

    /// Every period with a slot here (seals aside), ascending.
    pub fn periods(&self) -> impl Iterator<Item = Period> + '_ {
        self.periods
            .keys()
            .copied()
            .filter(|period| *period != SEAL_KEY.period)
    }

    /// The settlements a peer at `peer` that has compacted `peer_settled` may lack slots
    /// of: those it has not settled, whose `through` is past its prefix for some origin.
    /// Such a peer must take the settlement before any chunk moves its prefix past it.
    pub fn settlements_lacked_by<'a>(
        &'a self,
        peer: &'a VersionVector,
        peer_settled: &'a [Period],
    ) -> impl Iterator<Item = &'a Settlement> + 'a {
        self.settled.values().filter(move |s| {
            !peer_settled.contains(&s.period)
                && s.through
                    .iter()
                    .any(|(origin, seq)| peer.get(*origin) < *seq)
        })
    }

    fn insert_key(&mut self, key: CounterKey) {
        if self.keys.insert(key) {
            *self.periods.entry(key.period).or_default() += 1;
        }
    }

    /// Drops every slot of `period` (and its index entries).
    fn drop_period(&mut self, period: Period) {
        if self.periods.remove(&period).is_none() {
            return;
        }
        let by_seq = &mut self.by_seq;
        let mut dropped = 0usize;
        self.slots.retain(|&(tenant, p, origin), group| {
            if p != period {
                return true;
            }
            let index = by_seq.entry(origin).or_default();
            for (metric, slot) in group.iter() {
                index.remove(slot.seq, CounterKey::new(tenant, p, metric));
                dropped += 1;
            }
            false
        });
        self.by_seq.retain(|_, index| !index.is_empty());
        self.slot_count -= dropped;
        self.keys.retain(|key| key.period != period);
        // A hash table keeps its capacity: without this, the month before a compaction
        // (one more month of slots) would set the size for good (measured: 1.64 GB held for
        // 12M slots after a year, against 1.01 GB after the first compaction).
        self.slots.shrink_to_fit();
    }

    /// Retires `origin` (see "Retirement" in the module doc) if it holds no usage slot here
    /// any more (every period it wrote compacted): drops its seal and its version-vector
    /// entry, and refuses its entries from now on. Returns whether it was retired now. The
    /// caller decides who may be retired (a member decommissioned: gone for good).
    pub fn retire(&mut self, origin: NodeId) -> bool {
        if origin == self.node || self.retired.contains(&origin) {
            return false;
        }
        let only_seal = self
            .by_seq
            .get(&origin)
            .is_none_or(|index| index.from(0).all(|(_, key)| key == SEAL_KEY));
        if !only_seal {
            return false;
        }
        if let Some(group) = self.slots.remove(&group_key(&SEAL_KEY, origin)) {
            self.slot_count -= group.iter().count();
        }
        self.by_seq.remove(&origin);
        if !self
            .by_seq
            .keys()
            .any(|o| self.slots.contains_key(&group_key(&SEAL_KEY, *o)))
            && self.keys.remove(&SEAL_KEY)
        {
            self.periods.remove(&SEAL_KEY.period);
        }
        self.vv.forget(origin);
        self.retired.insert(origin);
        true
    }

    /// Whether `origin` was retired here.
    pub fn is_retired(&self, origin: NodeId) -> bool {
        self.retired.contains(&origin)
    }

    /// Every origin this replica has heard of: each with a slot or a prefix here.
    pub fn writers(&self) -> BTreeSet<NodeId> {
        let mut writers: BTreeSet<NodeId> = self.origins().copied().collect();
        writers.extend(self.vv.iter().map(|(origin, _)| origin));
        writers
    }

    /// Adds `amount` to the local slot of `key` (no seal check: see `increment`).
    fn write(&mut self, key: CounterKey, amount: u64) -> Result<(), IncrementError> {
        if amount == 0 {
            return Ok(());
        }
        let node = self.node;
        let seq = self
            .vv
            .get(node)
            .checked_add(1)
            .ok_or(IncrementError::SequenceExhausted(node))?;
        // One probe of the slot map; the by-seq index then moves this slot to the end.
        let group = self.slots.entry(group_key(&key, node)).or_default();
        let old = match group.get(key.metric) {
            Some(slot) => {
                let value = slot
                    .value
                    .checked_add(amount)
                    .ok_or(IncrementError::Overflow { node, key })?;
                let old_seq = slot.seq;
                *group.get_mut(key.metric).0 = Slot { value, seq };
                Some(old_seq)
            }
            None => {
                *group.get_mut(key.metric).0 = Slot { value: amount, seq };
                self.insert_key(key);
                self.slot_count += 1;
                None
            }
        };
        let index = self.by_seq.entry(node).or_default();
        if let Some(old_seq) = old {
            index.remove(old_seq, key);
        }
        index.insert(seq, key);
        self.vv.advance(node, seq);
        Ok(())
    }

    /// Every origin with a slot, ascending (a slot can arrive before its origin's prefix is
    /// complete, so this is not the version vector's list).
    fn origins(&self) -> impl Iterator<Item = &NodeId> + '_ {
        self.by_seq.keys()
    }

    /// The slot of `origin` for `key` (zero if absent).
    pub fn slot(&self, key: &CounterKey, origin: NodeId) -> Slot {
        self.get_slot(key, origin).copied().unwrap_or_default()
    }

    fn get_slot(&self, key: &CounterKey, origin: NodeId) -> Option<&Slot> {
        self.slots
            .get(&group_key(key, origin))
            .and_then(|group| group.get(key.metric))
    }

    /// The merged total of one counter: the sum over nodes (saturating at `u64::MAX`).
    pub fn total(&self, key: &CounterKey) -> u64 {
        if let Some(settled) = self.settled.get(&key.period) {
            return settled.total(key.tenant, key.metric);
        }
        self.origins()
            .filter_map(|origin| self.get_slot(key, *origin))
            .fold(0u64, |sum, slot| sum.saturating_add(slot.value))
    }

    /// The merged totals of a tenant in a period, indexed by [`Metric::index`].
    pub fn totals(&self, tenant: TenantId, period: Period) -> [u64; 4] {
        Metric::ALL.map(|metric| self.total(&CounterKey::new(tenant, period, metric)))
    }

    /// Merged totals of `period` for up to `limit` tenants with usage in it, the first
    /// after `after`, ascending (an export's page), looking at no more than `visits_max`
    /// tenants with keys (a sparse period does not make one call walk every tenant). A
    /// settled period's come from its settlement. Each tenant costs a seek and its own
    /// keys of the period (keys are ordered by tenant first), not the ledger's size.
    pub fn totals_page(
        &self,
        period: Period,
        after: Option<TenantId>,
        limit: usize,
        visits_max: usize,
    ) -> TotalsPage {
        let mut rows: Vec<(TenantId, [u64; 4])> = Vec::new();
        let first = match after {
            Some(TenantId(u64::MAX)) => return TotalsPage::default(),
            Some(t) => TenantId(t.0 + 1),
            None => TenantId(0),
        };
        if limit == 0 {
            return TotalsPage {
                rows,
                resume_after: after,
            };
        }
        if let Some(settlement) = self.settled.get(&period) {
            // Every tenant listed has a row: a visit is a row.
            let cap = limit.min(visits_max.max(1));
            let start = settlement.totals.partition_point(|(t, _, _)| *t < first);
            for (tenant, metric, value) in &settlement.totals[start..] {
                if rows.last().map(|(last, _)| last) != Some(tenant) {
                    if rows.len() == cap {
                        let resume_after = rows.last().map(|(t, _)| *t);
                        return TotalsPage { rows, resume_after };
                    }
                    rows.push((*tenant, [0u64; 4]));
                }
                if let Some((_, values)) = rows.last_mut() {
                    values[metric.index()] = *value;
                }
            }
            return TotalsPage {
                rows,
                resume_after: None,
            };
        }
        // The least key of a tenant (the least period and metric by their order; a
        // comparison bound only, never a key held).
        let least = |tenant| {
            CounterKey::new(
                tenant,
                Period::Month { year: 0, month: 0 },
                Metric::Requests,
            )
        };
        let mut cursor = first;
        let mut visits = 0;
        loop {
            let Some(next) = self.keys.range(least(cursor)..).next() else {
                return TotalsPage {
                    rows,
                    resume_after: None,
                };
            };
            let tenant = next.tenant;
            if tenant == SEAL_KEY.tenant {
                // The seals' reserved tenant sorts last: nothing after it.
                return TotalsPage {
                    rows,
                    resume_after: None,
                };
            }
            visits += 1;
            let keys = self.keys.range(
                CounterKey::new(tenant, period, Metric::Requests)
                    ..=CounterKey::new(tenant, period, Metric::BytesOut),
            );
            let mut values = [0u64; 4];
            let mut held = false;
            for key in keys {
                values[key.metric.index()] = self.total(key);
                held = true;
            }
            if held {
                rows.push((tenant, values));
            }
            if rows.len() == limit || visits >= visits_max {
                return TotalsPage {
                    rows,
                    resume_after: Some(tenant),
                };
            }
            cursor = TenantId(tenant.0 + 1);
        }
    }

    /// Each node's contribution to a counter, in node order (nodes with a slot only; none
    /// once its period is compacted: see [`Ledger::settlement`]).
    pub fn breakdown(&self, key: &CounterKey) -> Vec<(NodeId, u64)> {
        self.origins()
            .filter_map(|origin| {
                self.get_slot(key, *origin)
                    .map(|slot| (*origin, slot.value))
            })
            .collect()
    }

    /// Every slot as `(key, origin, slot)`, by key then origin (for exports and checks).
    pub fn slots(&self) -> impl Iterator<Item = (CounterKey, NodeId, Slot)> + '_ {
        self.all_slots().filter(|(key, _, _)| *key != SEAL_KEY)
    }

    /// [`Ledger::slots`] with the seals (for the encoding).
    fn all_slots(&self) -> impl Iterator<Item = (CounterKey, NodeId, Slot)> + '_ {
        self.keys.iter().flat_map(move |key| {
            self.origins().filter_map(move |origin| {
                self.get_slot(key, *origin)
                    .map(|slot| (*key, *origin, *slot))
            })
        })
    }

    /// Number of slots held (keys × nodes that wrote them).
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Whether two replicas hold the same replicated state (slots, settlements and version
    /// vector); the local node id is not part of it.
    pub fn same_state(&self, other: &Ledger) -> bool {
        self.slots == other.slots
            && self.vv == other.vv
            && self.settled == other.settled
            && self.retired == other.retired
            && self.forgotten_before_ms == other.forgotten_before_ms
    }

    /// Full-state merge: settlements, slot-wise maximum and version-vector maximum (settled
    /// periods and origins retired here aside).
    pub fn merge(&mut self, other: &Ledger) {
        for settlement in other.settled.values() {
            self.apply_settlement(settlement.clone());
        }
        for (&(tenant, period, origin), group) in &other.slots {
            if self.is_closed(period) || self.retired.contains(&origin) {
                continue;
            }
            for (metric, slot) in group.iter() {
                self.join_slot(CounterKey::new(tenant, period, metric), origin, slot);
            }
        }
        let mut vv = other.vv.clone();
        for origin in &self.retired {
            vv.forget(*origin);
        }
        self.vv.merge(&vv);
    }

    /// What a peer whose digest is `peer` lacks, at most `entries_max` entries (clamped to
    /// 1..=[`Delta::ENTRIES_MAX`]). An empty delta means the peer lacks nothing this
    /// replica can prove complete. Apply, advance the digest ([`Delta::advance`]) and ask
    /// again for the next chunk, or use [`Ledger::chunks_since`].
    pub fn delta_since(&self, peer: &VersionVector, entries_max: usize) -> Delta {
        let mut budget = entries_max.clamp(1, Delta::ENTRIES_MAX);
        let mut parts = Vec::new();
        for (origin, have_seq) in self.vv.iter() {
            let from_seq = peer.get(origin);
            if have_seq <= from_seq {
                continue;
            }
            let Some(part) = self.origin_delta(origin, from_seq, have_seq, budget) else {
                // Out of budget: later origins go in the next chunk.
                break;
            };
            budget -= part.entries.len();
            parts.push(part);
        }
        Delta { parts }
    }

    /// The entries of `origin` with `seq` in `(from_seq, have_seq]`, at most `budget`, cut
    /// at a `seq` boundary; `None` when not even one step of progress fits.
    fn origin_delta(
        &self,
        origin: NodeId,
        from_seq: u64,
        have_seq: u64,
        budget: usize,
    ) -> Option<OriginDelta> {
        let index = self.by_seq.get(&origin);
        let mut pending = index
            .into_iter()
            .flat_map(|index| index.from(from_seq.saturating_add(1)))
            .take_while(|(seq, _)| *seq <= have_seq)
            .peekable();
        let mut entries = Vec::new();
        while entries.len() < budget {
            let Some((seq, key)) = pending.next() else {
                break;
            };
            let slot = self.slot(&key, origin);
            entries.push(DeltaEntry {
                key,
                value: slot.value,
                seq,
            });
        }
        let to_seq = match pending.peek() {
            None => have_seq,
            Some((next_seq, _)) => {
                // Cut short: never split equal seqs, so the claim stays a complete prefix.
                while entries.last().is_some_and(|e| e.seq == *next_seq) {
                    entries.pop();
                }
                entries.last()?.seq
            }
        };
        Some(OriginDelta {
            origin,
            from_seq,
            to_seq,
            entries,
        })
    }

    /// Every chunk a peer at `peer` lacks, lazily, each at most `entries_max` entries;
    /// applying them in order brings the peer up to this replica. Stops when a chunk would
    /// make no progress.
    pub fn chunks_since(&self, peer: VersionVector, entries_max: usize) -> DeltaChunks<'_> {
        DeltaChunks {
            ledger: self,
            peer,
            entries_max,
        }
    }

    /// Merges a delta. Idempotent, and in any order the values converge; `vv` advances
    /// only through complete prefixes (see the module doc). An invalid delta is refused
    /// whole.
    pub fn apply_delta(&mut self, delta: &Delta) -> Result<(), InvalidDelta> {
        delta.validate()?;
        if delta.parts.iter().any(|p| self.retired.contains(&p.origin)) {
            // A retired origin's entries, relayed late: refused, the rest applied.
            let rest = Delta {
                parts: delta
                    .parts
                    .iter()
                    .filter(|p| !self.retired.contains(&p.origin))
                    .cloned()
                    .collect(),
            };
            return self.apply_delta(&rest);
        }
        for part in &delta.parts {
            for entry in &part.entries {
                if self.is_closed(entry.key.period) {
                    // Compacted (or forgotten) here: its total is final and its slots
                    // are gone.
                    continue;
                }
                let slot = Slot {
                    value: entry.value,
                    seq: entry.seq,
                };
                self.join_slot(entry.key, part.origin, slot);
            }
        }
        delta.advance(&mut self.vv);
        Ok(())
    }

    fn join_slot(&mut self, key: CounterKey, origin: NodeId, incoming: Slot) {
        let group = self.slots.entry(group_key(&key, origin)).or_default();
        let (slot, existed) = group.get_mut(key.metric);
        let (old_seq, new_seq) = if existed {
            let old_seq = slot.seq;
            slot.join(incoming);
            (Some(old_seq), slot.seq)
        } else {
            *slot = incoming;
            self.insert_key(key);
            self.slot_count += 1;
            (None, incoming.seq)
        };
        if old_seq != Some(new_seq) {
            let index = self.by_seq.entry(origin).or_default();
            if let Some(old_seq) = old_seq {
                index.remove(old_seq, key);
            }
            index.insert(new_seq, key);
        }
    }

    /// The canonical encoding of the whole replica (for the local store or a full
    /// transfer).
    pub fn encode(&self) -> Vec<u8> {
        let slots = self.all_slots().collect();
        codec::encode(
            Kind::LedgerState,
            &LedgerRepr {
                node: self.node,
                vv: self.vv.clone(),
                slots,
                settled: self.settled.values().cloned().collect(),
                retired: self.retired.iter().copied().collect(),
                forgotten_before_ms: self.forgotten_before_ms,
            },
        )
    }

    /// Decodes at most [`Ledger::STATE_BYTES_MAX`] bytes; slots must be sorted by
    /// (key, node) without duplicates.
    pub fn decode(bytes: &[u8]) -> Result<Ledger, DecodeError> {
        Self::decode_bounded(bytes, Self::STATE_BYTES_MAX)
    }

    /// [`Ledger::decode`] with a caller's lower cap.
    pub fn decode_bounded(bytes: &[u8], bytes_max: usize) -> Result<Ledger, DecodeError> {
        let (version, body) = codec::open_versioned(Kind::LedgerState, bytes, bytes_max, 1)?;
        let repr: LedgerRepr = match version {
            1 => {
                let v1: LedgerReprV1 = codec::parse(body)?;
                LedgerRepr {
                    node: v1.node,
                    vv: v1.vv,
                    slots: v1.slots,
                    settled: Vec::new(),
                    retired: Vec::new(),
                    forgotten_before_ms: 0,
                }
            }
            2 => {
                let v2: LedgerReprV2 = codec::parse(body)?;
                LedgerRepr {
                    node: v2.node,
                    vv: v2.vv,
                    slots: v2.slots,
                    settled: v2.settled,
                    retired: v2.retired,
                    forgotten_before_ms: 0,
                }
            }
            _ => codec::parse(body)?,
        };
        if repr
            .slots
            .windows(2)
            .any(|w| (w[0].0, w[0].1) >= (w[1].0, w[1].1))
        {
            return Err(DecodeError::Invalid(
                "ledger slots are not sorted and unique".to_owned(),
            ));
        }
        if repr.settled.windows(2).any(|w| w[0].period >= w[1].period) {
            return Err(DecodeError::Invalid(
                "ledger settlements are not sorted and unique".to_owned(),
            ));
        }
        let mut ledger = Ledger::new(repr.node);
        ledger.forgotten_before_ms = repr.forgotten_before_ms;
        for settlement in repr.settled {
            if settlement.period.end_ms() <= ledger.forgotten_before_ms {
                return Err(DecodeError::Invalid(
                    "a ledger settlement of a forgotten period".to_owned(),
                ));
            }
            settlement.validate()?;
            ledger.settled.insert(settlement.period, settlement);
        }
        for (key, node, slot) in repr.slots {
            if ledger.is_closed(key.period) {
                return Err(DecodeError::Invalid(
                    "a ledger slot of a settled or forgotten period".to_owned(),
                ));
            }
            ledger.join_slot(key, node, slot);
        }
        ledger.vv = repr.vv;
        ledger.retired = repr.retired.into_iter().collect();
        if ledger
            .retired
            .iter()
            .any(|o| ledger.vv.get(*o) > 0 || ledger.by_seq.contains_key(o))
        {
            return Err(DecodeError::Invalid(
                "a retired origin with slots or a prefix".to_owned(),
            ));
        }
        Ok(ledger)
    }
}

/// Iterator over the chunks a peer lacks; see [`Ledger::chunks_since`].
pub struct DeltaChunks<'a> {
    ledger: &'a Ledger,
    peer: VersionVector,
    entries_max: usize,
}

impl Iterator for DeltaChunks<'_> {
    type Item = Delta;

    fn next(&mut self) -> Option<Delta> {
        let delta = self.ledger.delta_since(&self.peer, self.entries_max);
        let before = self.peer.clone();
        delta.advance(&mut self.peer);
        (self.peer != before).then_some(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tenant: u64, metric: Metric) -> CounterKey {
        CounterKey::new(TenantId(tenant), Period::month(2026, 11).unwrap(), metric)
    }

    #[test]
    fn a_seal_refuses_later_usage_in_the_periods_it_covers_and_never_moves_back() {
        let november = Period::month(2026, 11).unwrap();
        let december = november.next().unwrap();
        let mut a = Ledger::new(NodeId(1));
        a.increment(key(7, Metric::Requests), 3).unwrap();
        assert_eq!(a.seal(november.end_ms()), Ok(true));
        assert_eq!(
            a.seal(november.end_ms() - 1),
            Ok(false),
            "a seal never moves back"
        );
        assert_eq!(a.sealed_through(NodeId(1)), november.end_ms());
        assert!(matches!(
            a.increment(key(7, Metric::Requests), 1),
            Err(IncrementError::Sealed { period, .. }) if period == november
        ));
        a.increment(CounterKey::new(TenantId(7), december, Metric::Requests), 1)
            .unwrap();
        assert_eq!(
            a.increment(
                CounterKey::new(TenantId(u64::MAX), december, Metric::Requests),
                1
            ),
            Err(IncrementError::Reserved)
        );
        // Not usage: no total, no slot listed; but kept by the encoding.
        assert_eq!(a.total(&key(7, Metric::Requests)), 3);
        assert_eq!(a.slots().count(), 2);
        let back = Ledger::decode(&a.encode()).unwrap();
        assert!(back.same_state(&a));
        assert_eq!(back.sealed_through(NodeId(1)), november.end_ms());
    }

    #[test]
    fn a_period_is_final_only_with_every_writers_seal_and_the_prefix_up_to_it() {
        let november = Period::month(2026, 11).unwrap();
        let (a_id, b_id) = (NodeId(1), NodeId(2));
        let mut a = Ledger::new(a_id);
        let mut b = Ledger::new(b_id);
        a.increment(key(7, Metric::Requests), 3).unwrap();
        a.increment(key(8, Metric::Requests), 5).unwrap();
        a.seal(november.end_ms()).unwrap();
        b.seal(november.end_ms()).unwrap();
        assert_eq!(
            b.finality(november, [a_id, b_id]),
            Finality::Open {
                missing: vec![a_id]
            }
        );
        // Only the seal arrives (a chunk ahead of its prefix): proves nothing yet.
        let full = a.delta_since(&VersionVector::new(), 100);
        let seal_only = Delta {
            parts: vec![OriginDelta {
                origin: a_id,
                from_seq: 2,
                to_seq: 3,
                entries: full.parts[0]
                    .entries
                    .iter()
                    .copied()
                    .filter(|e| e.key == SEAL_KEY)
                    .collect(),
            }],
        };
        b.apply_delta(&seal_only).unwrap();
        assert_eq!(b.sealed_through(a_id), november.end_ms());
        assert!(!b.finality(november, [a_id, b_id]).is_final());
        b.apply_delta(&full).unwrap();
        assert_eq!(b.finality(november, [a_id, b_id]), Finality::Final);
        assert_eq!(b.total(&key(8, Metric::Requests)), 5);
        // A later period is not covered by these seals.
        let december = november.next().unwrap();
        assert_eq!(
            b.finality(december, b.writers()),
            Finality::Open {
                missing: vec![a_id, b_id]
            }
        );
    }

    #[test]
    fn a_retired_origin_leaves_the_version_vector_and_its_late_entries_are_refused() {
        let november = Period::month(2026, 11).unwrap();
        let december = november.next().unwrap();
        let (a_id, b_id, c_id) = (NodeId(1), NodeId(2), NodeId(3));
        let mut a = Ledger::new(a_id);
        let mut b = Ledger::new(b_id);
        let mut c = Ledger::new(c_id);
        a.increment(key(1, Metric::Requests), 7).unwrap();
        a.seal(november.end_ms()).unwrap();
        b.seal(november.end_ms()).unwrap();
        c.increment(CounterKey::new(TenantId(1), december, Metric::Requests), 2)
            .unwrap();
        let from_a = a.delta_since(&VersionVector::new(), 100);
        b.apply_delta(&from_a).unwrap();
        b.apply_delta(&c.delta_since(&VersionVector::new(), 100))
            .unwrap();
        assert!(!b.retire(a_id), "November still holds its slot");
        b.compact(november, [a_id, b_id]).expect("final");
        assert!(b.retire(a_id));
        assert!(!b.retire(a_id), "once");
        assert!(!b.retire(b_id), "never itself");
        assert!(!b.retire(c_id), "December's slot is not compacted");
        assert_eq!(b.version_vector().get(a_id), 0);
        assert_eq!(b.sealed_through(a_id), 0);
        assert!(!b.writers().contains(&a_id));
        let slots = b.slot_count();
        // Its entries relayed late change nothing, and take no place in the vector.
        b.apply_delta(&from_a).unwrap();
        let mut whole = Ledger::new(NodeId(9));
        whole.apply_delta(&from_a).unwrap();
        b.merge(&whole);
        assert_eq!(b.slot_count(), slots);
        assert_eq!(b.version_vector().get(a_id), 0);
        assert_eq!(
            b.total(&key(1, Metric::Requests)),
            7,
            "its usage stays settled"
        );
        let back = Ledger::decode(&b.encode()).unwrap();
        assert!(back.same_state(&b));
        assert!(back.is_retired(a_id));
    }

    #[test]
    fn compaction_keeps_the_totals_drops_the_slots_and_is_the_same_everywhere() {
        let november = Period::month(2026, 11).unwrap();
        let december = november.next().unwrap();
        let dec = |t: u64| CounterKey::new(TenantId(t), december, Metric::Requests);
        let (a_id, b_id) = (NodeId(1), NodeId(2));
        let mut a = Ledger::new(a_id);
        let mut b = Ledger::new(b_id);
        for t in 1..=20 {
            a.increment(key(t, Metric::Requests), t).unwrap();
            b.increment(key(t, Metric::BytesOut), 100 * t).unwrap();
        }
        a.seal(november.end_ms()).unwrap();
        b.seal(november.end_ms()).unwrap();
        a.increment(dec(1), 5).unwrap();
        let from_a = a.delta_since(&VersionVector::new(), 1_000);
        let from_b = b.delta_since(&VersionVector::new(), 1_000);
        a.apply_delta(&from_b).unwrap();
        b.apply_delta(&from_a).unwrap();
        let before: Vec<[u64; 4]> = (1..=20).map(|t| a.totals(TenantId(t), november)).collect();
        // Not final for a writer that did not seal.
        assert_eq!(a.compact(november, [a_id, b_id, NodeId(3)]), None);
        let sa = a.compact(november, [a_id, b_id]).expect("final");
        let sb = b.compact(november, [a_id, b_id]).expect("final");
        assert_eq!(
            sa.encode(),
            sb.encode(),
            "byte-for-byte the same settlement"
        );
        assert_eq!(sa.digest(), sb.digest());
        assert_eq!(a.compact(november, [a_id, b_id]), None, "compacted once");
        let after: Vec<[u64; 4]> = (1..=20).map(|t| a.totals(TenantId(t), november)).collect();
        assert_eq!(before, after);
        assert_eq!(a.total(&dec(1)), 5, "another period is untouched");
        assert_eq!(a.slots().count(), 1, "November's 40 slots are gone");
        assert!(a.breakdown(&key(3, Metric::Requests)).is_empty());
        // A late copy of November's slots changes nothing.
        a.apply_delta(&from_b).unwrap();
        assert_eq!(a.totals(TenantId(3), november), before[2]);
        assert_eq!(a.slots().count(), 1);
        // The store keeps it.
        let back = Ledger::decode(&a.encode()).unwrap();
        assert!(back.same_state(&a));
        assert_eq!(back.settlement(november), Some(&sa));

        // A replica that never saw November: it lacks the settlement, which it takes
        // before the chunks; then the month is final there too, with the same totals.
        let mut c = Ledger::new(NodeId(3));
        let lacked: Vec<Settlement> = a
            .settlements_lacked_by(c.version_vector(), &[])
            .cloned()
            .collect();
        assert_eq!(lacked, vec![sa.clone()]);
        assert!(c.apply_settlement(lacked[0].clone()));
        for chunk in a.chunks_since(c.version_vector().clone(), 1_000) {
            c.apply_delta(&chunk).unwrap();
        }
        assert_eq!(c.finality(november, [a_id, b_id]), Finality::Final);
        assert_eq!(
            (1..=20)
                .map(|t| c.totals(TenantId(t), november))
                .collect::<Vec<_>>(),
            before
        );
        // Past the cut on every origin now: nothing lacked, even without saying so.
        assert_eq!(a.settlements_lacked_by(c.version_vector(), &[]).count(), 0);
        assert_eq!(
            a.settlements_lacked_by(c.version_vector(), &[november])
                .count(),
            0
        );
    }

    #[test]
    fn forgotten_settlements_stay_forgotten_and_never_pass_an_open_period() {
        let october = Period::month(2026, 10).unwrap();
        let november = october.next().unwrap();
        let december = november.next().unwrap();
        let at = |t: u64, period: Period| CounterKey::new(TenantId(t), period, Metric::Requests);
        let (a_id, b_id) = (NodeId(1), NodeId(2));
        let mut a = Ledger::new(a_id);
        let mut b = Ledger::new(b_id);
        a.increment(at(1, october), 3).unwrap();
        a.increment(at(1, november), 4).unwrap();
        b.increment(at(1, october), 5).unwrap();
        a.seal(november.end_ms()).unwrap();
        b.seal(october.end_ms()).unwrap();
        a.increment(at(1, december), 6).unwrap();
        let from_a = a.delta_since(&VersionVector::new(), 100);
        let from_b = b.delta_since(&VersionVector::new(), 100);
        a.apply_delta(&from_b).unwrap();
        let october_settled = a.compact(october, [a_id, b_id]).expect("final");
        // November is not final (B sealed October only): its slots stay, and nothing at
        // or after its end may be forgotten.
        assert_eq!(a.compact(november, [a_id, b_id]), None);
        assert_eq!(a.forget_settled(u64::MAX), october.end_ms());
        assert_eq!(a.settlement(october), None, "October is forgotten");
        assert_eq!(a.total(&at(1, october)), 0);
        assert_eq!(a.total(&at(1, november)), 4, "November's slots are kept");
        assert_eq!(a.forgotten_before_ms(), october.end_ms());
        // Late slots and a late settlement of October are ignored.
        a.apply_delta(&from_b).unwrap();
        let mut whole = Ledger::new(NodeId(9));
        whole.apply_delta(&from_b).unwrap();
        a.merge(&whole);
        assert!(!a.apply_settlement(october_settled.clone()));
        assert_eq!(a.total(&at(1, october)), 0);
        assert_eq!(a.slots().filter(|(k, _, _)| k.period == october).count(), 0);
        // The watermark never goes back, and it is stored.
        assert_eq!(a.forget_settled(0), october.end_ms());
        let back = Ledger::decode(&a.encode()).unwrap();
        assert!(back.same_state(&a));
        // A replica that holds October's settlement gives it to one that forgot it:
        // refused; one that never had it takes it.
        let mut c = Ledger::new(NodeId(3));
        c.apply_delta(&from_a).unwrap();
        assert!(c.apply_settlement(october_settled));
        assert_eq!(c.total(&at(1, october)), 8);
    }

    #[test]
    fn totals_pages_cover_every_tenant_once_settled_or_not() {
        let november = Period::month(2026, 11).unwrap();
        let december = november.next().unwrap();
        let (a_id, b_id) = (NodeId(1), NodeId(2));
        let mut a = Ledger::new(a_id);
        let mut b = Ledger::new(b_id);
        for t in 1..=25u64 {
            for (period, node) in [(november, &mut a), (december, &mut b)] {
                for metric in [Metric::Requests, Metric::BytesOut] {
                    node.increment(CounterKey::new(TenantId(t * 3), period, metric), t)
                        .unwrap();
                }
            }
            a.increment(
                CounterKey::new(TenantId(t * 3), december, Metric::Requests),
                1,
            )
            .unwrap();
        }
        a.seal(november.end_ms()).unwrap();
        b.seal(november.end_ms()).unwrap();
        let from_b = b.delta_since(&VersionVector::new(), 1_000);
        a.apply_delta(&from_b).unwrap();
        let pages = |ledger: &Ledger, period: Period, limit: usize| {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                // Two tenants visited a call at most: pages come short, never wrong.
                let page = ledger.totals_page(period, after, limit, 2);
                assert!(page.rows.len() <= limit.min(2));
                all.extend(page.rows);
                match page.resume_after {
                    Some(tenant) => after = Some(tenant),
                    None => return all,
                }
            }
        };
        for period in [november, december] {
            let expected: Vec<(TenantId, [u64; 4])> = (1..=25u64)
                .map(|t| (TenantId(t * 3), a.totals(TenantId(t * 3), period)))
                .collect();
            for limit in [1, 7, 25, 100] {
                assert_eq!(
                    pages(&a, period, limit),
                    expected,
                    "{period}, pages of {limit}"
                );
            }
        }
        let before = pages(&a, november, 4);
        a.compact(november, [a_id, b_id]).expect("final");
        assert_eq!(pages(&a, november, 4), before, "from the settlement");
        assert_eq!(
            a.totals_page(november, Some(TenantId(u64::MAX)), 5, 5),
            TotalsPage::default()
        );
    }

    #[test]
    fn increments_only_the_local_slot_and_reads_merge() {
        let mut a = Ledger::new(NodeId(1));
        let mut b = Ledger::new(NodeId(2));
        a.increment(key(7, Metric::Requests), 3).unwrap();
        b.increment(key(7, Metric::Requests), 4).unwrap();
        b.increment(key(7, Metric::BytesOut), 100).unwrap();
        a.merge(&b);
        assert_eq!(a.total(&key(7, Metric::Requests)), 7);
        assert_eq!(
            a.breakdown(&key(7, Metric::Requests)),
            [(NodeId(1), 3), (NodeId(2), 4)]
        );
        assert_eq!(
            a.totals(TenantId(7), Period::month(2026, 11).unwrap()),
            [7, 0, 0, 100]
        );
        assert_eq!(a.slot(&key(7, Metric::Requests), NodeId(1)).seq, 1);
        assert_eq!(a.version_vector().get(NodeId(2)), 2);
    }

    #[test]
    fn slots_sharing_a_seq_are_kept_and_read_in_seq_then_key_order() {
        let origin = NodeId(2);
        let entry = |tenant: u64, seq: u64| DeltaEntry {
            key: key(tenant, Metric::Requests),
            value: seq * 10,
            seq,
        };
        let part = |from_seq: u64, to_seq: u64, entries: Vec<DeltaEntry>| Delta {
            parts: vec![OriginDelta {
                origin,
                from_seq,
                to_seq,
                entries,
            }],
        };
        let mut a = Ledger::new(NodeId(1));
        // A (hostile or merged) state where seq 2 names two slots, the larger key first.
        a.apply_delta(&part(0, 2, vec![entry(9, 1), entry(5, 2), entry(3, 2)]))
            .unwrap();
        let seqs = |a: &Ledger| -> Vec<(u64, u64)> {
            a.delta_since(&VersionVector::new(), 100).parts[0]
                .entries
                .iter()
                .map(|e| (e.seq, e.key.tenant.0))
                .collect()
        };
        assert_eq!(seqs(&a), [(1, 9), (2, 3), (2, 5)]);
        // Later increments move each slot out of whichever part of the index held it.
        a.apply_delta(&part(2, 4, vec![entry(5, 3), entry(3, 4)]))
            .unwrap();
        assert_eq!(seqs(&a), [(1, 9), (3, 5), (4, 3)]);
        // A cut never splits equal seqs.
        a.apply_delta(&part(4, 5, vec![entry(7, 5), entry(8, 5)]))
            .unwrap();
        let first = a.delta_since(&VersionVector::new(), 4);
        assert_eq!(first.parts[0].to_seq, 4);
        assert_eq!(first.entry_count(), 3);
    }

    #[test]
    fn the_paged_index_lists_exactly_the_live_slots_in_seq_order() {
        // Many increments over a few hundred slots: pages fill, thin out (dense to sparse),
        // empty and go, and sparse ones fill up again.
        let mut a = Ledger::new(NodeId(1));
        let mut x: u64 = 7;
        for round in 0..40_000u64 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // Skewed: a few hot tenants, many cold ones.
            let tenant = if round % 3 == 0 {
                (x >> 33) % 5
            } else {
                (x >> 33) % 400
            };
            let metric = Metric::ALL[((x >> 20) % 4) as usize];
            a.increment(key(tenant, metric), 1 + (x >> 60)).unwrap();
            if round % 9_999 == 0 {
                let index = &a.by_seq[&NodeId(1)];
                for page in index.pages.values() {
                    match page {
                        Page::Dense { live, keys } => {
                            assert!(*live >= DENSE_MIN);
                            assert_eq!(keys.iter().filter(|k| k.is_some()).count(), *live);
                        }
                        Page::Sparse(entries) => {
                            assert!(!entries.is_empty() && entries.len() <= SPARSE_MAX);
                            assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
                        }
                    }
                }
            }
        }
        let mut expected: Vec<(u64, CounterKey, u64)> = a
            .slots()
            .map(|(key, _, slot)| (slot.seq, key, slot.value))
            .collect();
        expected.sort_unstable();
        let listed: Vec<(u64, CounterKey, u64)> = a
            .delta_since(&VersionVector::new(), Delta::ENTRIES_MAX)
            .parts[0]
            .entries
            .iter()
            .map(|e| (e.seq, e.key, e.value))
            .collect();
        assert_eq!(listed, expected);
        // From a point in the middle, and in chunks.
        let mid = expected[expected.len() / 2].0;
        let since = a.delta_since(&with(NodeId(1), mid - 1), Delta::ENTRIES_MAX);
        assert_eq!(
            since.parts[0].entries.len(),
            expected.len() - expected.len() / 2
        );
        let mut b = Ledger::new(NodeId(2));
        for chunk in a.chunks_since(VersionVector::new(), 97) {
            b.apply_delta(&chunk).unwrap();
        }
        assert!(a.same_state(&b));
        let all = |l: &Ledger| l.delta_since(&VersionVector::new(), Delta::ENTRIES_MAX);
        assert_eq!(all(&b), all(&a));
        let back = Ledger::decode(&a.encode()).unwrap();
        assert!(back.same_state(&a));
        assert_eq!(back.encode(), a.encode());
    }

    fn with(node: NodeId, seq: u64) -> VersionVector {
        let mut vv = VersionVector::new();
        vv.advance(node, seq);
        vv
    }

    #[test]
    fn zero_and_overflowing_increments_change_nothing() {
        let mut a = Ledger::new(NodeId(1));
        a.increment(key(1, Metric::CpuMicros), 0).unwrap();
        assert_eq!(a.slot_count(), 0);
        assert!(a.version_vector().is_empty());
        a.increment(key(1, Metric::CpuMicros), u64::MAX).unwrap();
        let before = a.clone();
        assert_eq!(
            a.increment(key(1, Metric::CpuMicros), 1),
            Err(IncrementError::Overflow {
                node: NodeId(1),
                key: key(1, Metric::CpuMicros)
            })
        );
        assert!(a.same_state(&before));
    }

    #[test]
    fn delta_carries_only_what_the_peer_lacks() {
        let mut a = Ledger::new(NodeId(1));
        for tenant in 0..100 {
            a.increment(key(tenant, Metric::Requests), 1).unwrap();
        }
        let mut b = Ledger::new(NodeId(2));
        b.apply_delta(&a.delta_since(b.version_vector(), 1000))
            .unwrap();
        assert!(a.same_state(&b));
        a.increment(key(5, Metric::Requests), 1).unwrap();
        let delta = a.delta_since(b.version_vector(), 1000);
        assert_eq!(delta.entry_count(), 1);
        b.apply_delta(&delta).unwrap();
        assert!(a.same_state(&b));
        assert!(a.delta_since(b.version_vector(), 1000).is_empty());
    }

    #[test]
    fn chunks_advance_through_complete_prefixes() {
        let mut a = Ledger::new(NodeId(1));
        for round in 0..3 {
            for tenant in 0..10 {
                a.increment(key(tenant, Metric::Requests), round + 1)
                    .unwrap();
            }
        }
        let mut b = Ledger::new(NodeId(2));
        let chunks: Vec<_> = a.chunks_since(VersionVector::new(), 4).collect();
        assert_eq!(chunks.len(), 3, "10 live slots in chunks of 4");
        for chunk in &chunks {
            assert!(chunk.entry_count() <= 4);
            b.apply_delta(chunk).unwrap();
            // After each chunk, every slot whose last seq is covered holds its final value.
            let covered = b.version_vector().get(NodeId(1));
            for tenant in 0..10 {
                let final_slot = a.slot(&key(tenant, Metric::Requests), NodeId(1));
                if final_slot.seq <= covered {
                    assert_eq!(
                        b.slot(&key(tenant, Metric::Requests), NodeId(1)),
                        final_slot
                    );
                }
            }
        }
        assert!(a.same_state(&b));
    }

    #[test]
    fn an_early_chunk_keeps_its_values_but_not_its_claim() {
        let mut a = Ledger::new(NodeId(1));
        for tenant in 0..6 {
            a.increment(key(tenant, Metric::Requests), 1).unwrap();
        }
        let chunks: Vec<_> = a.chunks_since(VersionVector::new(), 3).collect();
        assert_eq!(chunks.len(), 2);
        let mut b = Ledger::new(NodeId(2));
        b.apply_delta(&chunks[1]).unwrap();
        assert_eq!(b.version_vector().get(NodeId(1)), 0);
        assert_eq!(b.total(&key(5, Metric::Requests)), 1);
        b.apply_delta(&chunks[0]).unwrap();
        assert_eq!(b.version_vector().get(NodeId(1)), 3);
        // The resend of what was early completes the vector.
        for chunk in a.chunks_since(b.version_vector().clone(), 3) {
            b.apply_delta(&chunk).unwrap();
        }
        assert!(a.same_state(&b));
    }

    #[test]
    fn equal_seqs_are_never_split_across_chunks() {
        // Honest origins never reuse a seq; a corrupt peer might. The claim must stay true.
        let entry = |tenant, seq| DeltaEntry {
            key: key(tenant, Metric::Requests),
            value: 1,
            seq,
        };
        let mut b = Ledger::new(NodeId(2));
        b.apply_delta(&Delta {
            parts: vec![OriginDelta {
                origin: NodeId(1),
                from_seq: 0,
                to_seq: 2,
                entries: vec![entry(1, 1), entry(2, 1), entry(3, 2)],
            }],
        })
        .unwrap();
        assert!(b.delta_since(&VersionVector::new(), 1).is_empty());
        let two = b.delta_since(&VersionVector::new(), 2);
        assert_eq!(two.entry_count(), 2);
        assert_eq!(two.parts[0].to_seq, 1);
        let chunks: Vec<_> = b.chunks_since(VersionVector::new(), 2).collect();
        assert_eq!(chunks.len(), 2);
        let mut c = Ledger::new(NodeId(3));
        for chunk in &chunks {
            c.apply_delta(chunk).unwrap();
        }
        assert!(c.same_state(&b));
    }

    #[test]
    fn invalid_deltas_are_refused_whole() {
        let entry = DeltaEntry {
            key: key(1, Metric::Requests),
            value: 1,
            seq: 5,
        };
        let part = |from_seq, to_seq, entries: Vec<DeltaEntry>| OriginDelta {
            origin: NodeId(1),
            from_seq,
            to_seq,
            entries,
        };
        let cases = [
            Delta {
                parts: vec![part(0, 4, vec![entry])],
            },
            Delta {
                parts: vec![part(5, 9, vec![entry])],
            },
            Delta {
                parts: vec![part(9, 4, vec![])],
            },
            Delta {
                parts: vec![part(0, 9, vec![entry, DeltaEntry { seq: 2, ..entry }])],
            },
            Delta {
                parts: vec![part(0, 9, vec![]), part(0, 9, vec![])],
            },
        ];
        for delta in cases {
            let mut b = Ledger::new(NodeId(2));
            assert!(b.apply_delta(&delta).is_err(), "{delta:?}");
            assert_eq!(b.slot_count(), 0);
            assert!(Delta::decode(&delta.encode()).is_err());
        }
    }

    #[test]
    fn digest_of_equal_replicas_is_tiny_and_independent_of_tenants() {
        let mut a = Ledger::new(NodeId(1));
        for tenant in 0..10_000 {
            a.increment(key(tenant, Metric::Requests), 1).unwrap();
        }
        let mut b = Ledger::new(NodeId(2));
        b.merge(&a);
        assert!(a.version_vector().encode().len() < 16);
        assert!(a.delta_since(b.version_vector(), 100).is_empty());
    }

    #[test]
    fn worst_case_entry_fits_its_byte_bound() {
        let entry = DeltaEntry {
            key: CounterKey::new(
                TenantId(u64::MAX),
                Period::hour(u64::MAX / 3_600_000).unwrap(),
                Metric::BytesOut,
            ),
            value: u64::MAX,
            seq: u64::MAX,
        };
        let bytes = postcard::to_allocvec(&entry).unwrap();
        assert!(bytes.len() <= Delta::ENTRY_BYTES_MAX, "{}", bytes.len());
        let month_entry = DeltaEntry {
            key: CounterKey::new(
                TenantId(u64::MAX),
                Period::month_containing(u64::MAX),
                Metric::BytesOut,
            ),
            ..entry
        };
        assert!(postcard::to_allocvec(&month_entry).unwrap().len() <= Delta::ENTRY_BYTES_MAX);
        let part = OriginDelta {
            origin: NodeId(u64::MAX),
            from_seq: u64::MAX,
            to_seq: u64::MAX,
            entries: Vec::new(),
        };
        // The empty entry list is one byte here; a full one needs up to 3 more for its length.
        assert!(postcard::to_allocvec(&part).unwrap().len() + 4 <= Delta::PART_BYTES_MAX);
    }

    #[test]
    fn a_version_1_state_still_decodes_as_a_ledger_without_settlements() {
        #[derive(Serialize)]
        struct V1 {
            node: NodeId,
            vv: VersionVector,
            slots: Vec<(CounterKey, NodeId, Slot)>,
        }
        let mut a = Ledger::new(NodeId(3));
        a.increment(key(2, Metric::BytesIn), 10).unwrap();
        let v1 = V1 {
            node: NodeId(3),
            vv: a.version_vector().clone(),
            slots: a.slots().collect(),
        };
        let mut bytes = vec![1, Kind::LedgerState as u8];
        bytes.extend(postcard::to_allocvec(&v1).unwrap());
        let back = Ledger::decode(&bytes).unwrap();
        assert!(back.same_state(&a));
        assert_eq!(back.settled_periods().count(), 0);
    }

    #[test]
    fn a_version_2_state_still_decodes_as_a_ledger_that_forgot_nothing() {
        let november = Period::month(2026, 11).unwrap();
        let mut a = Ledger::new(NodeId(3));
        a.increment(key(2, Metric::BytesIn), 10).unwrap();
        a.seal(november.end_ms()).unwrap();
        a.compact(november, [NodeId(3)]).expect("final");
        let v2 = LedgerReprV2 {
            node: NodeId(3),
            vv: a.version_vector().clone(),
            slots: a.all_slots().collect(),
            settled: a.settled.values().cloned().collect(),
            retired: Vec::new(),
        };
        let mut bytes = vec![2, Kind::LedgerState as u8];
        bytes.extend(postcard::to_allocvec(&v2).unwrap());
        let back = Ledger::decode(&bytes).unwrap();
        assert!(back.same_state(&a));
        assert_eq!(back.forgotten_before_ms(), 0);
        assert!(back.settlement(november).is_some());
    }

    #[test]
    fn state_round_trips_and_unsorted_state_is_refused() {
        let mut a = Ledger::new(NodeId(3));
        a.increment(key(2, Metric::BytesIn), 10).unwrap();
        a.increment(key(1, Metric::BytesIn), 10).unwrap();
        let bytes = a.encode();
        let back = Ledger::decode(&bytes).unwrap();
        assert!(back.same_state(&a));
        assert_eq!(back.node(), NodeId(3));
        assert_eq!(back.encode(), bytes);
        let repr = LedgerRepr {
            node: NodeId(3),
            vv: VersionVector::new(),
            slots: vec![
                (key(2, Metric::BytesIn), NodeId(1), Slot::default()),
                (key(1, Metric::BytesIn), NodeId(1), Slot::default()),
            ],
            settled: Vec::new(),
            retired: Vec::new(),
            forgotten_before_ms: 0,
        };
        assert!(matches!(
            Ledger::decode(&codec::encode(Kind::LedgerState, &repr)),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(
            Ledger::decode_bounded(&bytes, 4),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
