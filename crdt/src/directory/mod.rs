//! The tenant directory: tenants, API keys (as hashes), URL-signing secrets, allowed
//! origins, hard quotas and presets — and the one cluster-scoped fact, which nodes were
//! decommissioned — replicated between nodes and edited on any of them.
//!
//! # Shape: an operation log per origin, materialised into registers
//! Every admin edit is an [`Op`]: who (`actor`), where (`origin` node and its sequence
//! number `seq`), when (`at_ms`, passed in, and a Lamport time `lamport`) and what
//! ([`Change`]). The directory keeps every op (that is the audit trail: who changed what,
//! when) and a materialised view built by applying them. Each field of the view is a
//! register resolved by the total order of [`Stamp`] `(lamport, origin)`, so applying the
//! same set of ops in any order gives the same view; a few fields are monotone flags instead
//! (see the rules below). The view is what requests read; the log is what replicas exchange.
//!
//! # Rules (what races resolve to)
//! - **Revocation is monotone.** `revoked` is set by any [`Change::RevokeKey`] and no op
//!   clears it: a revoke racing with a scope change, a relabel, a re-creation of the same
//!   key id or a tenant rename ends revoked on every replica.
//! - **Deletion is monotone.** A deleted tenant stays deleted; its keys stop working
//!   (lookups report [`KeyStanding::TenantDeleted`]) whatever key edits race with it.
//! - **Decommissioning is monotone.** [`Change::DecommissionNode`] adds a node to a
//!   grow-only set that no op shrinks ([`Directory::is_decommissioned`]): an operator
//!   retires a member that is gone for good, and it stays retired on every replica, however
//!   many origins decommission it and in whatever order their ops arrive. It concerns no
//!   tenant ([`Change::tenant`] is `None`), so it is in no tenant's history. A node refuses
//!   to decommission itself ([`DirectoryError::DecommissionSelf`]). What follows from it
//!   (rights recovered, staleness) is the sync core's: this crate only records it.
//! - **Everything else is last-writer-wins by stamp.** Name, status (active/suspended),
//!   home node, scopes, quotas, origins, presets, primary secret. The Lamport part makes an
//!   edit made after seeing another one win over it; concurrent edits are ordered by
//!   `(lamport, origin)`, so two admins setting a quota at once end with the same value on
//!   every replica.
//! - **Signing secrets** are added, then retired (monotone). Any active secret verifies;
//!   the primary (a register) signs, falling back to the newest active one if the primary
//!   was retired.
//!
//! # Replication: causal per origin, digest = version vector
//! A replica applies op `seq` of an origin only after `seq - 1`: an op that arrives early
//! is dropped (and counted) and comes again from anti-entropy. So a replica always holds a
//! complete prefix of every origin's log, its [`VersionVector`] says exactly which ops it
//! holds, and two replicas with equal vectors hold equal logs and equal views. Directory
//! edits are rare (admin actions), so dropping an early op costs one anti-entropy round at
//! worst. [`Directory::delta_since`] / [`Directory::apply_delta`] are the delta functions
//! and [`Directory::handle_sync`] is the whole two-party sync as pure functions: message
//! in, message out, until both sides hold the same log.
//!
//! # Staged ops: held, not yet enforced
//! A replica that persists its log must not enforce a peer's op before the op is durable:
//! a revocation enforced and then forgotten by a crash would let the key in again.
//! [`Directory::stage_delta`] and [`Directory::stage_sync`] take ops into the log (they
//! count in the version vector, are served to peers and written by
//! [`Directory::encode`]) without touching the view; [`Directory::promote`] enforces them
//! once the caller has made them durable. The view is always a prefix of every origin's
//! log ([`Directory::enforced`]); local edits and the enforcing paths (`apply_delta`,
//! `merge`, `decode`) enforce an origin's staged ops before appending to it. A decoded
//! replica enforces everything it holds: what was written is durable.
//!
//! # Compaction: runs of superseded edits folded into placeholders
//! The log is the audit trail and what replicas exchange, so it grew with every edit ever
//! made. [`Directory::compact`] folds an op once it is older than the audit window the
//! caller gives and *superseded*: it wrote registers only (never a creation, a mark, a
//! deletion, a revocation or a decommission) and each of them holds a later write in the
//! view. Folded ops next to each other in their origin's log, with the placeholders next
//! to them, become one placeholder, [`Change::CompactedRun`]`{ through_seq }`: it stands for
//! ops `seq..=through_seq` and keeps the last one's Lamport time and time (actor and
//! change dropped). Why it is safe without asking anyone: the op that superseded a folded
//! one is the register's current winner, never folded while it wins, and it is in its
//! origin's log here, so every replica ends up holding it; a replica that receives the
//! placeholder instead of the originals ends with the same register values, as it would
//! have after them all (a register is the maximum by stamp). Logs stay complete prefixes
//! (a placeholder advances its origin's entry to `through_seq`, a replica holding the
//! start of a run takes the rest), so version vectors, deltas, staging and sync keep their
//! meaning, and a node that joins later rebuilds the same view from the compacted log.
//!
//! What the log costs then: its live ops (creations, marks, each register's winner) and at
//! most one placeholder between two of them, whatever the number of edits ever made
//! (`crdt/examples/directory_compaction.rs`: a year of 200K quota edits a month at 100K
//! tenants keeps the log at ~10 MB; 4,077 bytes fall to 130 in the unit test below).
//!
//! Why not a snapshot and dropping the prefixes every member has acknowledged (the obvious
//! design): a member that joins later, or one back from weeks away, would then need the
//! materialised view itself, which is several megabytes at 100K tenants — larger than a
//! replication frame, so a paged transfer of an encodable view — and the acknowledgement
//! cut needs every member's directory digest, which a dead member holds back for ever.
//! Runs give the same bound (the log follows the state, not the history) with neither.
//!
//! # Why not Automerge
//! Automerge is the obvious base (concurrent edits merge, history is an audit trail), and
//! it was measured first: with 100K tenants and 100K keys, loading the saved document took
//! 1.4–2.0 s and materialising the key index from it another ~1.5 s, against a cold-start
//! goal under 1 s (docs/BENCHMARKS.md has the run and the command). The directory's schema
//! is fixed and every field is a register, a flag or a keyed set of those, so the same
//! semantics (merge, audit history with actors) fit in a purpose-built log that loads in a
//! fraction of that time. What is given up: Automerge's text CRDT and arbitrary nesting,
//! which nothing here needs.
//!
//! # Memory and the hot path
//! The log is kept *encoded* (one byte buffer per origin, as ops are stored and sent):
//! it is read only to answer a peer or list history, and 500K decoded ops with their
//! strings would cost several times the space. The view ([`view`]) is decoded and shaped
//! for reads: [`Directory::lookup_key`] goes from a key's public prefix to everything the
//! request path needs in one hash-table probe, without touching the log or the tenant
//! map. The secret hash is returned for the caller to compare in constant time; this crate
//! does no hashing of secrets itself.

mod model;
mod view;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, Kind};
use crate::ids::{IdHashMap, NodeId, TenantId};
use crate::version::VersionVector;

pub use model::{limits, Change, DirectoryError, KeyId, Op, Scopes, SecretId, Stamp, TenantStatus};
use view::View;
pub use view::{ApiKey, KeyMatch, KeyStanding, Lww, Mark, SigningSecret, SmallMap, Tenant};

/// A batch of ops for a peer: complete runs of each origin's log, ascending.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryDelta {
    pub ops: Vec<Op>,
}

impl DirectoryDelta {
    /// Cap on the ops of one decoded delta (the sync layer chunks well below it).
    pub const OPS_MAX: usize = 100_000;
    /// Cap on an encoded delta.
    pub const BYTES_MAX: usize = 64 << 20;

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(Kind::DirectoryDelta, self)
    }

    /// Decodes a delta, refusing more than `bytes_max` bytes or [`Self::OPS_MAX`] ops, and
    /// validating every op.
    pub fn decode(bytes: &[u8], bytes_max: usize) -> Result<DirectoryDelta, DecodeError> {
        let delta: DirectoryDelta =
            codec::decode(Kind::DirectoryDelta, bytes, bytes_max.min(Self::BYTES_MAX))?;
        delta
            .validate()
            .map_err(|error| DecodeError::Invalid(error.to_string()))?;
        Ok(delta)
    }

    /// Checks the op count and every op's fields.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        if self.ops.len() > Self::OPS_MAX {
            return Err(DirectoryError::TooManyOps {
                ops: self.ops.len(),
                ops_max: Self::OPS_MAX,
            });
        }
        self.ops.iter().try_for_each(Op::validate)
    }
}

/// What one delta may carry ([`Directory::delta_since`]): ops, and bytes of encoded ops,
/// so a message built from it fits the transport's frame whatever the ops hold (a
/// watermark is 16 KiB, a key a hundred bytes). A plain count bounds the ops alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaBudget {
    pub ops_max: usize,
    pub bytes_max: usize,
}

impl From<usize> for DeltaBudget {
    fn from(ops_max: usize) -> Self {
        DeltaBudget {
            ops_max,
            bytes_max: usize::MAX,
        }
    }
}

/// What [`Directory::apply_delta`] did with each op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Ops that extended a log and changed the view.
    pub applied: usize,
    /// Ops already held.
    pub duplicate: usize,
    /// Ops past a gap in their origin's log: dropped, anti-entropy brings them again.
    pub early: usize,
}

/// The two-party sync protocol's messages (see [`Directory::handle_sync`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage {
    /// "This is what I hold; send what I lack."
    Digest(VersionVector),
    /// "Here is (a chunk of) what you lack, and this is what I hold."
    Ops {
        delta: DirectoryDelta,
        digest: VersionVector,
    },
}

impl SyncMessage {
    pub const BYTES_MAX: usize = DirectoryDelta::BYTES_MAX + VersionVector::BYTES_MAX;

    pub fn encode(&self) -> Vec<u8> {
        codec::encode(Kind::DirectorySync, self)
    }

    pub fn decode(bytes: &[u8], bytes_max: usize) -> Result<SyncMessage, DecodeError> {
        let message: SyncMessage =
            codec::decode(Kind::DirectorySync, bytes, bytes_max.min(Self::BYTES_MAX))?;
        if let SyncMessage::Ops { delta, .. } = &message {
            delta
                .validate()
                .map_err(|error| DecodeError::Invalid(error.to_string()))?;
        }
        Ok(message)
    }
}

/// Where an incremental compaction of the log stands ([`Directory::compact_step`]): the
/// next op to look at (its origin and seq; seqs survive compaction, positions in the log
/// do not). The default starts at the first origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CompactCursor {
    origin: Option<NodeId>,
    seq: u64,
}

/// One origin's log: its entries — ops, and placeholders each standing for a run of
/// compacted ops — encoded back to back; `ends[i]` is where entry `i` ends. Entry `i` is
/// op `i + 1` when no run comes before it. `placeholders` lists the placeholder entries,
/// ascending, each with the ops beyond one per entry that the placeholders up to it stand
/// for (cumulative): finding the entry holding a seq is a binary search over them, and a
/// run of folded edits costs one entry, whatever its length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct OriginLog {
    bytes: Vec<u8>,
    ends: Vec<u32>,
    placeholders: Vec<(u32, u64)>,
}

impl OriginLog {
    /// Entries held (a placeholder counts one).
    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Ops held: the origin's last seq here.
    fn ops(&self) -> u64 {
        self.ends.len() as u64 + self.placeholders.last().map_or(0, |(_, extra)| *extra)
    }

    /// The seq of the first op entry `index` stands for.
    fn first_seq(&self, index: usize) -> u64 {
        let before = self
            .placeholders
            .partition_point(|(at, _)| (*at as usize) < index);
        let extra = match before {
            0 => 0,
            j => self.placeholders[j - 1].1,
        };
        index as u64 + 1 + extra
    }

    /// The entry holding op `seq`, if held.
    fn entry_of(&self, seq: u64) -> Option<usize> {
        if seq == 0 || seq > self.ops() {
            return None;
        }
        // The first placeholder whose run ends at `seq` or later (`at + 1 + extra` is the
        // last seq of the placeholder at `at`, increasing along the list).
        let j = self
            .placeholders
            .partition_point(|(at, extra)| u64::from(*at) + 1 + extra < seq);
        let extra_before = match j {
            0 => 0,
            j => self.placeholders[j - 1].1,
        };
        let index = seq - 1 - extra_before;
        let index = match self.placeholders.get(j) {
            Some((at, _)) => index.min(u64::from(*at)),
            None => index,
        };
        Some(index as usize)
    }

    /// Whether entry `index` is a placeholder.
    fn is_placeholder(&self, index: usize) -> bool {
        self.placeholders
            .binary_search_by_key(&index, |(at, _)| *at as usize)
            .is_ok()
    }

    fn op_bytes(&self, index: usize) -> &[u8] {
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        &self.bytes[start..self.ends[index] as usize]
    }

    fn op(&self, index: usize) -> Op {
        postcard::from_bytes(self.op_bytes(index)).expect("the log holds only ops it encoded")
    }

    fn push(&mut self, op: &Op) {
        let encoded = postcard::to_allocvec(op).expect("postcard serialises every op");
        self.push_encoded(&encoded, op);
    }

    /// Appends `op` as `encoded` (its bytes as read: a stored state is not re-encoded on
    /// load). It must start at `self.ops() + 1`.
    fn push_encoded(&mut self, encoded: &[u8], op: &Op) {
        if op.is_compacted() {
            let index = u32::try_from(self.len()).expect("entries are fewer than bytes");
            let extra = self.placeholders.last().map_or(0, |(_, extra)| *extra);
            self.placeholders
                .push((index, extra + (op.last_seq() - op.seq)));
        }
        self.push_bytes(encoded);
    }

    /// Appends an entry's bytes (not a placeholder's: see [`OriginLog::push_encoded`]).
    fn push_bytes(&mut self, encoded: &[u8]) {
        self.bytes.extend_from_slice(encoded);
        // A state is capped at `STATE_BYTES_MAX` (1 GiB), so offsets fit in 32 bits.
        self.ends
            .push(u32::try_from(self.bytes.len()).expect("an origin's log is under 4 GiB"));
    }

    fn shrink_to_fit(&mut self) {
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.placeholders.shrink_to_fit();
    }
}

/// One replica of the tenant directory. See the module doc.
#[derive(Clone, Debug)]
pub struct Directory {
    node: NodeId,
    /// Every op held, by origin: complete prefixes only, encoded.
    log: BTreeMap<NodeId, OriginLog>,
    /// `vv[o]` = number of ops held of origin `o`.
    vv: VersionVector,
    /// The highest Lamport time seen.
    lamport: u64,
    view: View,
    /// `enforced[o]` = ops of origin `o` the view reflects: a prefix of the log. Ops past
    /// it are *staged* (see [`Directory::stage_delta`]); with none staged it equals `vv`.
    enforced: VersionVector,
    /// Ops held but not in the view yet.
    staged: usize,
    /// Per tenant, where its ops are in the log (origin, seq): a history decodes those
    /// alone, not the whole log. Folded ops leave it.
    by_tenant: IdHashMap<TenantId, Vec<(NodeId, u64)>>,
}

impl Directory {
    /// Cap on an encoded directory (100K tenants with a key, a quota, an origin and a
    /// signing secret each is about 31 MB).
    pub const STATE_BYTES_MAX: usize = 1 << 30;

    pub fn new(node: NodeId) -> Directory {
        Directory {
            node,
            log: BTreeMap::new(),
            vv: VersionVector::new(),
            lamport: 0,
            view: View::default(),
            enforced: VersionVector::new(),
            staged: 0,
            by_tenant: IdHashMap::default(),
        }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The digest: which prefix of every origin's log this replica holds.
    pub fn version_vector(&self) -> &VersionVector {
        &self.vv
    }

    /// Makes a local edit, after checking it against the current view (so an admin gets
    /// a typed error for, say, revoking a key that does not exist). Returns the new op,
    /// which the caller persists and pushes to peers. A refused edit changes nothing.
    pub fn change(
        &mut self,
        at_ms: u64,
        actor: &str,
        change: Change,
    ) -> Result<Op, DirectoryError> {
        change.validate()?;
        self.check_local(&change)?;
        let seq = self
            .vv
            .get(self.node)
            .checked_add(1)
            .ok_or(DirectoryError::SequenceExhausted(self.node))?;
        let lamport = self.lamport + 1;
        if lamport > limits::LAMPORT_MAX {
            return Err(DirectoryError::SequenceExhausted(self.node));
        }
        let op = Op {
            origin: self.node,
            seq,
            lamport,
            at_ms,
            actor: actor.to_owned(),
            change,
        };
        op.validate()?;
        self.check_room(1)?;
        self.append(&op);
        Ok(op)
    }

    fn check_local(&self, change: &Change) -> Result<(), DirectoryError> {
        let Some(tenant_id) = change.tenant() else {
            // Cluster-scoped. Repeating a decommission is allowed: it changes nothing.
            return match change {
                Change::DecommissionNode { node } if *node == self.node => {
                    Err(DirectoryError::DecommissionSelf(*node))
                }
                Change::Compacted | Change::CompactedRun { .. } => {
                    Err(DirectoryError::InvalidField {
                        field: "change",
                        reason: "a compacted op is not an edit".into(),
                    })
                }
                _ => Ok(()),
            };
        };
        let tenant = self.view.tenant(tenant_id);
        if let Change::CreateTenant { .. } = change {
            return match tenant {
                Some(_) => Err(DirectoryError::TenantExists(tenant_id)),
                None => Ok(()),
            };
        }
        let tenant = tenant.ok_or(DirectoryError::UnknownTenant(tenant_id))?;
        if tenant.is_deleted() {
            return Err(DirectoryError::TenantDeleted(tenant_id));
        }
        match change {
            Change::CreateKey { key, .. } => {
                if self
                    .view
                    .key_any(*key)
                    .is_some_and(|k| k.exists() || k.is_revoked())
                {
                    return Err(DirectoryError::KeyExists(*key));
                }
                Ok(())
            }
            Change::SetKeyScopes { key, .. }
            | Change::SetKeyLabel { key, .. }
            | Change::RevokeKey { key, .. } => {
                let found = self
                    .view
                    .key_any(*key)
                    .filter(|k| k.tenant() == Some(tenant_id));
                let found = found.ok_or(DirectoryError::UnknownKey {
                    tenant: tenant_id,
                    key: *key,
                })?;
                if found.is_revoked() {
                    return Err(DirectoryError::KeyRevoked(*key));
                }
                Ok(())
            }
            Change::AddSigningSecret { secret_id, .. } => {
                if tenant.has_secret(*secret_id) {
                    return Err(DirectoryError::SecretExists {
                        tenant: tenant_id,
                        secret_id: *secret_id,
                    });
                }
                Ok(())
            }
            Change::SetPrimarySecret { secret_id, .. }
            | Change::RetireSigningSecret { secret_id, .. } => {
                if !tenant.secret_is_active(*secret_id) {
                    return Err(DirectoryError::UnknownSecret {
                        tenant: tenant_id,
                        secret_id: *secret_id,
                    });
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Refuses growth that could take the encoded state past [`Self::STATE_BYTES_MAX`]
    /// (an op encodes to at most ~2 KB, given [`limits`]).
    fn check_room(&self, ops: usize) -> Result<(), DirectoryError> {
        const OP_BYTES_MAX: usize = 4096;
        let held: usize = self.log.values().map(|log| log.bytes.len()).sum();
        if held.saturating_add(ops.saturating_mul(OP_BYTES_MAX)) > Self::STATE_BYTES_MAX {
            return Err(DirectoryError::Full {
                bytes_max: Self::STATE_BYTES_MAX,
            });
        }
        Ok(())
    }

    /// Adds an op that extends its origin's log by exactly one, and applies it to the view.
    fn append(&mut self, op: &Op) {
        self.append_with(op, None);
    }

    /// [`Directory::append`], storing `encoded` (the op's bytes as read) when given. Ops of
    /// the same origin staged before it are enforced first, so the view stays a prefix of
    /// every origin's log.
    fn append_with(&mut self, op: &Op, encoded: Option<&[u8]>) {
        self.promote_origin(op.origin, op.seq - 1, &mut Vec::new());
        self.append_staged(op, encoded);
        self.enforce(op);
    }

    /// Adds an op that extends its origin's log by exactly one, leaving the view as it is.
    fn append_staged(&mut self, op: &Op, encoded: Option<&[u8]>) {
        debug_assert_eq!(op.seq, self.vv.get(op.origin) + 1);
        self.lamport = self.lamport.max(op.lamport);
        self.vv.advance(op.origin, op.last_seq());
        let log = self.log.entry(op.origin).or_default();
        match encoded {
            Some(bytes) => log.push_encoded(bytes, op),
            None => log.push(op),
        }
        if let Some(tenant) = op.change.tenant() {
            self.by_tenant
                .entry(tenant)
                .or_default()
                .push((op.origin, op.seq));
        }
        self.staged += 1;
    }

    /// Applies to the view the held op that follows its origin's enforced prefix.
    fn enforce(&mut self, op: &Op) {
        debug_assert_eq!(op.seq, self.enforced.get(op.origin) + 1);
        self.view.apply(op);
        self.enforced.advance(op.origin, op.last_seq());
        self.staged -= 1;
    }

    /// Enforces `origin`'s staged ops up to `seq` (at most what is held), noting the
    /// tenants they concern in `tenants` (cluster-scoped ops concern none).
    fn promote_origin(&mut self, origin: NodeId, seq: u64, tenants: &mut Vec<TenantId>) {
        let from = self.enforced.get(origin);
        let to = seq.min(self.vv.get(origin));
        if from >= to {
            return;
        }
        // The enforced prefix ends where an entry does, and so does `to` when it comes from
        // a version vector of this log; a run that `to` cuts stays staged.
        let ops: Vec<Op> = {
            let log = &self.log[&origin];
            let start = log.entry_of(from + 1).unwrap_or(log.len());
            (start..log.len())
                .map(|i| log.op(i))
                .take_while(|op| op.last_seq() <= to)
                .collect()
        };
        for op in &ops {
            tenants.extend(op.change.tenant());
            self.enforce(op);
        }
    }

    /// Ops held but not enforced yet (see [`Directory::stage_delta`]).
    pub fn staged(&self) -> usize {
        self.staged
    }

    /// Which prefix of every origin's log the view reflects (equal to
    /// [`Directory::version_vector`] when nothing is staged).
    pub fn enforced(&self) -> &VersionVector {
        &self.enforced
    }

    /// Enforces every staged op within `through` (each origin's prefix up to
    /// `through[origin]`): the caller has made those ops durable. Returns the tenants the
    /// newly enforced ops concern, in log order (repeats kept), so their quota policy can be
    /// looked at again; a cluster-scoped op adds none (a promoted decommission shows in
    /// [`Directory::decommissioned`]).
    pub fn promote(&mut self, through: &VersionVector) -> Vec<TenantId> {
        let mut tenants = Vec::new();
        if self.staged == 0 {
            return tenants;
        }
        let origins: Vec<NodeId> = self.log.keys().copied().collect();
        for origin in origins {
            self.promote_origin(origin, through.get(origin), &mut tenants);
        }
        tenants
    }

    /// The request path: every key whose public prefix is `prefix`, with what it may do.
    /// Almost always zero or one; two only if two nodes minted the same random prefix.
    pub fn lookup_key<'a>(&'a self, prefix: &str) -> impl Iterator<Item = KeyMatch<'a>> + 'a {
        self.view.lookup(prefix)
    }

    /// A created tenant (deleted ones included: check [`Tenant::is_serving`]).
    pub fn tenant(&self, tenant: TenantId) -> Option<&Tenant> {
        self.view.tenant(tenant)
    }

    /// Every created tenant (deleted ones included), by id.
    /// Every created tenant after `after`, by id: a page of a listing starts here.
    pub fn tenants_after(
        &self,
        after: Option<TenantId>,
    ) -> impl Iterator<Item = (TenantId, &Tenant)> + '_ {
        self.view.tenants_after(after)
    }

    /// How many tenants this directory has seen created, deleted ones included: O(1), an
    /// upper bound on the length of [`Directory::tenants`] (for sizing tables ahead).
    pub fn tenants_seen(&self) -> usize {
        self.view.tenants_seen()
    }

    pub fn tenants(&self) -> impl Iterator<Item = (TenantId, &Tenant)> + '_ {
        self.view.tenants()
    }

    /// A created key (revoked ones included).
    pub fn key(&self, key: KeyId) -> Option<&ApiKey> {
        self.view.key_any(key).filter(|k| k.exists())
    }

    /// Whether `node` was decommissioned (by an enforced op: a staged one counts once
    /// promoted). Final: once true, true forever.
    pub fn is_decommissioned(&self, node: NodeId) -> bool {
        self.view.is_decommissioned(node)
    }

    /// Every decommissioned node (by enforced ops), ascending.
    pub fn decommissioned(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.view.decommissioned()
    }

    /// Number of entries held (every origin): ops, a placeholder for a compacted run
    /// counting one.
    pub fn op_count(&self) -> usize {
        self.log.values().map(OriginLog::len).sum()
    }

    fn ops(&self) -> impl Iterator<Item = Op> + '_ {
        self.log
            .values()
            .flat_map(|log| (0..log.len()).map(move |i| log.op(i)))
    }

    /// The audit trail of one tenant: every op that concerned it, in stamp order (which
    /// respects causality: an edit made after seeing another is listed after it).
    /// Decodes the tenant's ops only (an index of where they are), not the whole log.
    pub fn history(&self, tenant: TenantId) -> Vec<Op> {
        let Some(places) = self.by_tenant.get(&tenant) else {
            return Vec::new();
        };
        let mut ops: Vec<Op> = places
            .iter()
            .filter_map(|(origin, seq)| {
                let log = self.log.get(origin)?;
                let op = log.op(log.entry_of(*seq)?);
                (!op.is_compacted()).then_some(op)
            })
            .collect();
        ops.sort_by_key(Op::stamp);
        ops
    }

    /// Every op held (cluster-scoped ones included, compacted ones left out), in stamp
    /// order.
    pub fn all_history(&self) -> Vec<Op> {
        let mut ops: Vec<Op> = self.ops().filter(|op| !op.is_compacted()).collect();
        ops.sort_by_key(Op::stamp);
        ops
    }

    /// Whether two replicas hold the same log (and so the same view).
    pub fn same_state(&self, other: &Directory) -> bool {
        self.vv == other.vv && self.log == other.log
    }

    /// Whether the materialised views are equal (tests check it agrees with
    /// [`Directory::same_state`]).
    pub fn same_view(&self, other: &Directory) -> bool {
        self.view == other.view
    }

    /// What a peer with digest `peer` lacks: for each origin, the ops after the peer's
    /// prefix, ascending, within `budget` (ops, and bytes of encoded ops), but at least one
    /// if anything is missing, so a chunked exchange always progresses.
    pub fn delta_since(
        &self,
        peer: &VersionVector,
        budget: impl Into<DeltaBudget>,
    ) -> DirectoryDelta {
        let DeltaBudget { ops_max, bytes_max } = budget.into();
        let ops_max = ops_max.max(1);
        let mut ops = Vec::new();
        let mut bytes = 0usize;
        'origins: for (origin, log) in &self.log {
            // A placeholder the peer holds part of is sent whole: it takes the rest.
            let Some(start) = log.entry_of(peer.get(*origin).saturating_add(1)) else {
                continue;
            };
            for i in start..log.len() {
                bytes = bytes.saturating_add(log.op_bytes(i).len());
                if ops.len() == ops_max || (bytes > bytes_max && !ops.is_empty()) {
                    break 'origins;
                }
                ops.push(log.op(i));
            }
        }
        DirectoryDelta { ops }
    }

    /// Applies a peer's ops: validated as a whole first (an invalid op refuses the delta
    /// and changes nothing); then each op that extends its origin's log is applied, ops
    /// already held are skipped and ops past a gap are dropped.
    pub fn apply_delta(&mut self, delta: &DirectoryDelta) -> Result<ApplyReport, DirectoryError> {
        self.take_delta(delta, true)
    }

    /// [`Directory::apply_delta`] that holds the new ops without enforcing them: they
    /// extend the log (and so the version vector, what [`Directory::delta_since`] serves and
    /// what [`Directory::encode`] writes) but not the view, until [`Directory::promote`].
    /// What this is for: a replica that persists its log enforces a peer's ops only once
    /// they are durable, so a crash never takes back what it enforced (a revocation
    /// enforced, then forgotten by a restart, would let the key in again). A staged op is
    /// held: a peer resending it is a duplicate, answered at the cost of a comparison.
    pub fn stage_delta(&mut self, delta: &DirectoryDelta) -> Result<ApplyReport, DirectoryError> {
        self.take_delta(delta, false)
    }

    fn take_delta(
        &mut self,
        delta: &DirectoryDelta,
        enforce: bool,
    ) -> Result<ApplyReport, DirectoryError> {
        delta.validate()?;
        self.check_room(delta.ops.len())?;
        let mut report = ApplyReport::default();
        for op in &delta.ops {
            let held = self.vv.get(op.origin);
            if op.last_seq() <= held {
                report.duplicate += 1;
            } else if op.seq <= held + 1 {
                let op = rest_of(op, held);
                if enforce {
                    self.append(&op);
                } else {
                    self.append_staged(&op, None);
                }
                report.applied += 1;
            } else {
                report.early += 1;
            }
        }
        Ok(report)
    }

    /// Full-state merge: takes every op of `other` this replica lacks. The result is the
    /// union of the two logs, so merge is commutative, associative and idempotent.
    pub fn merge(&mut self, other: &Directory) {
        // Both logs are complete prefixes, so each op after our prefix extends our log.
        // The other's encoded bytes are stored as they are (no re-encoding).
        for (origin, log) in &other.log {
            let held = self.vv.get(*origin);
            let Some(start) = log.entry_of(held.saturating_add(1)) else {
                continue;
            };
            for i in start..log.len() {
                let op = log.op(i);
                if op.seq > held {
                    self.append_with(&op, Some(log.op_bytes(i)));
                } else {
                    // A run this replica holds the start of: the rest of it.
                    self.append_with(&rest_of(&op, held), None);
                }
            }
        }
    }

    /// Compacts the whole log (see "Compaction" in the module doc): every enforced op made
    /// before `before_ms` that is superseded in the view is folded, with the placeholders
    /// next to it, into one placeholder ([`Change::CompactedRun`]) per run. Returns how many
    /// ops were folded now. One pass over the log, each op decoded (tens of ms at 400K
    /// ops): a caller holding a lock uses [`Directory::compact_step`] instead.
    pub fn compact(&mut self, before_ms: u64) -> usize {
        let mut cursor = CompactCursor::default();
        let mut folded = 0;
        loop {
            let (now, swept) = self.compact_step(before_ms, &mut cursor, usize::MAX);
            folded += now;
            if swept {
                return folded;
            }
        }
    }

    /// One bounded step of [`Directory::compact`]: looks at up to `budget` entries of one
    /// origin from `cursor`, folds what qualifies, and moves the cursor on. Returns how
    /// many ops it folded, and whether the cursor went past the last origin (a sweep of
    /// the whole log is complete; the cursor starts over). A step that folds rewrites its
    /// origin's log (a copy of its bytes; ops are decoded only where looked at).
    pub fn compact_step(
        &mut self,
        before_ms: u64,
        cursor: &mut CompactCursor,
        budget: usize,
    ) -> (usize, bool) {
        let next = match cursor.origin {
            None => self.log.keys().next().copied(),
            Some(origin) => self.log.range(origin..).next().map(|(o, _)| *o),
        };
        let Some(origin) = next else {
            *cursor = CompactCursor::default();
            return (0, true);
        };
        if cursor.origin != Some(origin) {
            cursor.seq = 1;
        }
        let enforced = self.enforced.get(origin);
        let log = &self.log[&origin];
        let start = log.entry_of(cursor.seq.max(1)).unwrap_or(log.len());
        let end = start.saturating_add(budget.max(1)).min(log.len());
        let mut folds: Vec<(usize, Op)> = Vec::new();
        for i in start..end {
            if log.is_placeholder(i) {
                continue;
            }
            let op = log.op(i);
            if op.last_seq() <= enforced && op.at_ms < before_ms && self.view.superseded(&op) {
                folds.push((i, op));
            }
        }
        let more = end < log.len();
        let next_seq = if more { log.first_seq(end) } else { 0 };
        let folded = folds.len();
        // Folded ops leave the history index: one pass over each tenant's places.
        let mut gone: BTreeMap<TenantId, std::collections::BTreeSet<u64>> = BTreeMap::new();
        for (_, op) in &folds {
            if let Some(tenant) = op.change.tenant() {
                gone.entry(tenant).or_default().insert(op.seq);
            }
        }
        for (tenant, seqs) in gone {
            if let Some(places) = self.by_tenant.get_mut(&tenant) {
                places.retain(|(o, seq)| *o != origin || !seqs.contains(seq));
            }
        }
        if !folds.is_empty() {
            let rebuilt = fold(origin, log, folds, enforced);
            self.log.insert(origin, rebuilt);
        }
        if more {
            *cursor = CompactCursor {
                origin: Some(origin),
                seq: next_seq,
            };
            return (folded, false);
        }
        // This origin is done: the next one, if any.
        match self
            .log
            .range((
                std::ops::Bound::Excluded(origin),
                std::ops::Bound::Unbounded,
            ))
            .next()
        {
            Some((next, _)) => {
                *cursor = CompactCursor {
                    origin: Some(*next),
                    seq: 1,
                };
                (folded, false)
            }
            None => {
                *cursor = CompactCursor::default();
                (folded, true)
            }
        }
    }

    /// Bytes of the log held (every origin's encoded ops).
    pub fn log_bytes(&self) -> usize {
        self.log.values().map(|log| log.bytes.len()).sum()
    }

    /// The start of a sync session with a peer.
    pub fn sync_start(&self) -> SyncMessage {
        SyncMessage::Digest(self.vv.clone())
    }

    /// One step of the two-party sync: applies what the message carries and returns the
    /// reply, or `None` when both sides hold the same log as far as this side can tell.
    /// Each reply carries at most `ops_max` ops; a session between two replicas that
    /// lack `n` ops in all ends within about `2 + 2n / ops_max` messages.
    pub fn handle_sync(
        &mut self,
        message: &SyncMessage,
        budget: impl Into<DeltaBudget>,
    ) -> Result<Option<SyncMessage>, DirectoryError> {
        self.sync_step(message, budget.into(), true)
    }

    /// [`Directory::handle_sync`] that stages the ops it receives (see
    /// [`Directory::stage_delta`]). Digests and replies cover staged ops: they are held.
    pub fn stage_sync(
        &mut self,
        message: &SyncMessage,
        budget: impl Into<DeltaBudget>,
    ) -> Result<Option<SyncMessage>, DirectoryError> {
        self.sync_step(message, budget.into(), false)
    }

    fn sync_step(
        &mut self,
        message: &SyncMessage,
        budget: DeltaBudget,
        enforce: bool,
    ) -> Result<Option<SyncMessage>, DirectoryError> {
        match message {
            SyncMessage::Digest(peer) => Ok(Some(SyncMessage::Ops {
                delta: self.delta_since(peer, budget),
                digest: self.vv.clone(),
            })),
            SyncMessage::Ops { delta, digest } => {
                self.take_delta(delta, enforce)?;
                if !self.vv.is_covered_by(digest) {
                    // The peer lacks ops we hold: send them, and our digest so it pulls
                    // whatever else it holds that we lack.
                    Ok(Some(SyncMessage::Ops {
                        delta: self.delta_since(digest, budget),
                        digest: self.vv.clone(),
                    }))
                } else if !digest.is_covered_by(&self.vv) {
                    Ok(Some(SyncMessage::Digest(self.vv.clone())))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The encoding of the whole replica: node id, op count, then every op (the view is
    /// derived). The ops are copied from the log as they are held, already encoded.
    pub fn encode(&self) -> Vec<u8> {
        let header = (self.node, self.op_count() as u64);
        let mut bytes = codec::encode(Kind::DirectoryState, &header);
        bytes.reserve(self.log.values().map(|log| log.bytes.len()).sum());
        for log in self.log.values() {
            bytes.extend_from_slice(&log.bytes);
        }
        bytes
    }

    /// Decodes a replica and rebuilds its view, refusing more than `bytes_max` bytes,
    /// any invalid op, any log with a gap or out of order, and trailing bytes.
    pub fn decode(bytes: &[u8], bytes_max: usize) -> Result<Directory, DecodeError> {
        let body = codec::open(
            Kind::DirectoryState,
            bytes,
            bytes_max.min(Self::STATE_BYTES_MAX),
        )?;
        let malformed = |e: postcard::Error| DecodeError::Malformed(e.to_string());
        let ((node, count), mut rest): ((NodeId, u64), _) =
            postcard::take_from_bytes(body).map_err(malformed)?;
        let mut directory = Directory::new(node);
        for _ in 0..count {
            let (op, after): (Op, _) = postcard::take_from_bytes(rest).map_err(malformed)?;
            let encoded = &rest[..rest.len() - after.len()];
            rest = after;
            op.validate()
                .map_err(|error| DecodeError::Invalid(error.to_string()))?;
            let held = directory.vv.get(op.origin);
            if op.seq != held + 1 {
                return Err(DecodeError::Invalid(format!(
                    "op {} of node {} does not follow op {held}",
                    op.seq, op.origin
                )));
            }
            directory.append_with(&op, Some(encoded));
        }
        if !rest.is_empty() {
            return Err(DecodeError::Trailing(rest.len()));
        }
        for log in directory.log.values_mut() {
            log.shrink_to_fit();
        }
        Ok(directory)
    }
}

/// `op` without the ops up to `held` (a placeholder's run, when a replica holds its
/// start); `op` itself when it follows `held`.
fn rest_of(op: &Op, held: u64) -> Op {
    Op {
        seq: op.seq.max(held + 1),
        ..op.clone()
    }
}

/// `log` with the ops of `folds` (entry index and op, ascending) turned into placeholders,
/// and every run of adjacent enforced placeholders (ending at or before `enforced`)
/// merged into one: it stands for the run's ops and carries the Lamport time and time of
/// its last one (the highest of the run: an origin's times increase along its log). A
/// staged placeholder (from a peer, not durable yet) is a barrier, kept as it is: merging
/// it would put the enforced prefix inside a run, and merge two staged entries into one.
fn fold(origin: NodeId, log: &OriginLog, folds: Vec<(usize, Op)>, enforced: u64) -> OriginLog {
    let mut rebuilt = OriginLog::default();
    let mut folds = folds.into_iter().peekable();
    let mut run: Option<Op> = None;
    let mut seq = 1;
    for i in 0..log.len() {
        let (op, foldable) = match folds.next_if(|(at, _)| *at == i) {
            Some((_, op)) => (Some(op), true),
            None if log.is_placeholder(i) => {
                let op = log.op(i);
                let enforced_here = op.last_seq() <= enforced;
                (Some(op), enforced_here)
            }
            None => (None, false),
        };
        match op {
            Some(op) if foldable => {
                let through_seq = op.last_seq();
                let first = run.as_ref().map_or(seq, |run| run.seq);
                run = Some(Op {
                    origin,
                    seq: first,
                    lamport: op.lamport,
                    at_ms: op.at_ms,
                    actor: String::new(),
                    change: Change::CompactedRun { through_seq },
                });
                seq = through_seq + 1;
            }
            other => {
                if let Some(run) = run.take() {
                    rebuilt.push(&run);
                }
                match other {
                    // A staged placeholder, as it is (its run recorded).
                    Some(op) => {
                        seq = op.last_seq() + 1;
                        rebuilt.push_encoded(log.op_bytes(i), &op);
                    }
                    None => {
                        rebuilt.push_bytes(log.op_bytes(i));
                        seq += 1;
                    }
                }
            }
        }
    }
    if let Some(run) = run {
        rebuilt.push(&run);
    }
    rebuilt.shrink_to_fit();
    rebuilt
}

impl PartialEq for Directory {
    fn eq(&self, other: &Directory) -> bool {
        self.node == other.node && self.same_state(other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Metric;
    use crate::period::PeriodKind;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);
    const T: TenantId = TenantId(7);
    const K: KeyId = KeyId(70);

    fn with_tenant_and_key(node: NodeId) -> Directory {
        let mut d = Directory::new(node);
        d.change(
            1_000,
            "ops",
            Change::CreateTenant {
                tenant: T,
                name: "acme".into(),
                home: node,
            },
        )
        .unwrap();
        d.change(
            1_001,
            "ops",
            Change::CreateKey {
                tenant: T,
                key: K,
                prefix: "tk_acme01".into(),
                secret_hash: [9; 32],
                scopes: Scopes::RESIZE,
                label: "ci".into(),
            },
        )
        .unwrap();
        d
    }

    /// The standing of the key [`with_tenant_and_key`] creates.
    fn standing(d: &Directory) -> KeyStanding {
        d.lookup_key("tk_acme01").next().unwrap().standing
    }

    fn sync(a: &mut Directory, b: &mut Directory) {
        let mut message = Some(a.sync_start());
        let mut turn_b = true;
        let mut steps = 0;
        while let Some(m) = message {
            message = if turn_b {
                b.handle_sync(&m, 3)
            } else {
                a.handle_sync(&m, 3)
            }
            .unwrap();
            turn_b = !turn_b;
            steps += 1;
            assert!(steps < 1000, "sync does not terminate");
        }
    }

    /// A watermark is a register: the later edit wins on every replica, removal included,
    /// an overwritten image is compacted away, and a delta cut by bytes carries the big
    /// ops a few at a time (at least one) where a count alone would put them all in one.
    #[test]
    fn watermarks_replicate_compact_and_travel_in_byte_bounded_deltas() {
        let set = |byte: u8| Change::SetWatermark {
            tenant: T,
            image: Some(vec![byte; limits::WATERMARK_BYTES_MAX]),
        };
        let mut a = with_tenant_and_key(A);
        let mut b = Directory::new(B);
        for i in 0..8u8 {
            a.change(2_000 + u64::from(i), "ops", set(i)).unwrap();
        }
        let peer = b.version_vector().clone();
        let whole = a.delta_since(&peer, 1024);
        assert_eq!(whole.ops.len(), 10, "two ops of set-up, eight watermarks");
        let cut = a.delta_since(
            &peer,
            DeltaBudget {
                ops_max: 1024,
                bytes_max: 3 * limits::WATERMARK_BYTES_MAX,
            },
        );
        assert_eq!(
            cut.ops.len(),
            4,
            "the set-up and two watermarks fit, not a third"
        );
        assert_eq!(cut.ops[..], whole.ops[..4]);
        let tiny = DeltaBudget {
            ops_max: 1024,
            bytes_max: 1,
        };
        assert_eq!(a.delta_since(&peer, tiny).ops.len(), 1, "always one op");
        sync(&mut a, &mut b);
        let (image, _) = b.tenant(T).unwrap().watermark().unwrap();
        assert_eq!(image[0], 7);
        b.change(
            3_000,
            "ops",
            Change::SetWatermark {
                tenant: T,
                image: None,
            },
        )
        .unwrap();
        sync(&mut a, &mut b);
        assert!(a.tenant(T).unwrap().watermark().is_none());
        assert!(a.same_view(&b));
        let before = a.encode().len();
        a.compact(u64::MAX);
        assert!(
            a.encode().len() < before - 7 * limits::WATERMARK_BYTES_MAX,
            "overwritten images are compacted away: {} -> {}",
            before,
            a.encode().len()
        );
        let too_big = Change::SetWatermark {
            tenant: T,
            image: Some(vec![0; limits::WATERMARK_BYTES_MAX + 1]),
        };
        assert!(a.change(4_000, "ops", too_big).is_err());
        let empty = Change::SetWatermark {
            tenant: T,
            image: Some(Vec::new()),
        };
        assert!(a.change(4_000, "ops", empty).is_err());
    }

    #[test]
    fn compaction_folds_superseded_edits_and_every_replica_keeps_the_same_view() {
        let quota = |limit: u64| Change::SetQuota {
            tenant: T,
            metric: Metric::Requests,
            period: PeriodKind::Month,
            limit: Some(limit),
        };
        let mut a = with_tenant_and_key(A);
        let mut b = Directory::new(B);
        sync(&mut a, &mut b);
        // 200 quota edits and 50 scope edits on A; B's last quota edit wins over A's (it
        // saw them), and B revokes the key.
        for i in 0..200u64 {
            a.change(2_000 + i, "ops", quota(i)).unwrap();
        }
        for i in 0..50u64 {
            let scopes = if i % 2 == 0 {
                Scopes::USAGE
            } else {
                Scopes::RESIZE
            };
            a.change(
                3_000 + i,
                "ops",
                Change::SetKeyScopes {
                    tenant: T,
                    key: K,
                    scopes,
                },
            )
            .unwrap();
        }
        sync(&mut a, &mut b);
        b.change(4_000, "ops", quota(999)).unwrap();
        b.change(4_001, "ops", Change::RevokeKey { tenant: T, key: K })
            .unwrap();
        sync(&mut a, &mut b);
        let uncompacted = a.clone();
        let before_bytes = a.log_bytes();
        // The same, in steps of 7 ops (what the sync core does under its lock).
        let mut stepped = a.clone();
        let mut cursor = CompactCursor::default();
        let mut steps = 0;
        while !stepped.compact_step(u64::MAX, &mut cursor, 7).1 {
            steps += 1;
        }
        assert!(steps > 30, "{steps} steps");
        // Only edits older than the audit window fold: those before 2_100 here.
        let folded = a.compact(2_100);
        assert_eq!(
            folded, 100,
            "quota edits 2_000..2_100, every one overwritten"
        );
        let folded = a.compact(u64::MAX);
        // The other 100 quota edits (B's wins) and 49 of the 50 scope edits (the last
        // one still holds the register); never the creations nor the revocation.
        assert_eq!(folded, 149);
        assert_eq!(a.compact(u64::MAX), 0, "nothing left to fold");
        assert!(stepped.same_state(&a), "steps fold what one pass folds");
        assert_eq!(a.version_vector(), uncompacted.version_vector());
        assert!(a.same_view(&uncompacted), "compaction changed the view");
        let after_bytes = a.log_bytes();
        // A's 249 folded edits, adjacent in its log, are one placeholder: A's log is the
        // two creations, it and the last scope edit; B's is its quota edit and the
        // revocation.
        assert_eq!(a.op_count(), 6);
        assert!(
            after_bytes * 10 < before_bytes,
            "log {before_bytes} -> {after_bytes} bytes"
        );
        // A hundred more quota edits on A cost two entries once folded: a placeholder for
        // 99 and the winner (B's edit is a placeholder now).
        let mut more = a.clone();
        for i in 0..100u64 {
            more.change(6_000 + i, "ops", quota(i)).unwrap();
        }
        more.compact(u64::MAX);
        assert_eq!(more.op_count(), 8);
        // And a hundred more after them, none: their placeholder joins the previous one.
        for i in 0..100u64 {
            more.change(7_000 + i, "ops", quota(i)).unwrap();
        }
        more.compact(u64::MAX);
        assert_eq!(more.op_count(), 8);
        // A replica built from the compacted log, alone or through sync, has the same
        // view; and the compacted replica decodes to it too.
        let mut c = Directory::new(NodeId(3));
        sync(&mut a, &mut c);
        assert!(c.same_view(&b));
        let back = Directory::decode(&a.encode(), usize::MAX).unwrap();
        assert!(back.same_view(&b));
        assert_eq!(
            a.tenant(T)
                .unwrap()
                .quota(Metric::Requests, PeriodKind::Month),
            Some(999)
        );
        // History keeps what was not folded, and never shows a placeholder.
        let history = a.history(T);
        assert!(history.iter().all(|op| !op.is_compacted()));
        assert_eq!(
            history.len(),
            2 + 1 + 1 + 1,
            "creations, B's quota, the last scope edit, the revocation"
        );
        let placeholder = Change::CompactedRun { through_seq: 1 };
        assert!(a.change(5_000, "ops", placeholder).is_err());
        println!("directory log: {before_bytes} bytes before compaction, {after_bytes} after");
    }

    /// Entries and seqs: a log of op 1, a run 2..=5, op 6, a run of one (7), a run 8..=9.
    #[test]
    fn a_log_with_placeholders_finds_the_entry_of_every_seq() {
        let op = |seq: u64, through: Option<u64>| Op {
            origin: A,
            seq,
            lamport: through.unwrap_or(seq),
            at_ms: 0,
            actor: String::new(),
            change: match through {
                Some(through_seq) => Change::CompactedRun { through_seq },
                None => Change::DeleteTenant { tenant: T },
            },
        };
        let mut log = OriginLog::default();
        for entry in [
            op(1, None),
            op(2, Some(5)),
            op(6, None),
            op(7, Some(7)),
            op(8, Some(9)),
        ] {
            log.push(&entry);
        }
        assert_eq!(log.len(), 5);
        assert_eq!(log.ops(), 9);
        let entries: Vec<Option<usize>> = (0..=10).map(|seq| log.entry_of(seq)).collect();
        let expected = [None, Some(0), Some(1), Some(1), Some(1), Some(1), Some(2)];
        assert_eq!(&entries[..7], &expected);
        assert_eq!(&entries[7..], &[Some(3), Some(4), Some(4), None]);
        let firsts: Vec<u64> = (0..5).map(|i| log.first_seq(i)).collect();
        assert_eq!(firsts, [1, 2, 6, 7, 8]);
        let placeholders: Vec<bool> = (0..5).map(|i| log.is_placeholder(i)).collect();
        assert_eq!(placeholders, [false, true, false, true, true]);
    }

    /// A staged placeholder (a peer's run, not durable yet) next to ops this replica folds
    /// stays apart: the enforced prefix never ends inside a run, and promoting it later
    /// enforces it whole.
    #[test]
    fn compaction_never_merges_a_staged_placeholder() {
        let quota = |limit: u64| Change::SetQuota {
            tenant: T,
            metric: Metric::Requests,
            period: PeriodKind::Month,
            limit: Some(limit),
        };
        let mut a = Directory::new(A);
        let create = Change::CreateTenant {
            tenant: T,
            name: "acme".into(),
            home: A,
        };
        a.change(1, "ops", create).unwrap();
        for i in 0..24u64 {
            a.change(2 + i, "ops", quota(i)).unwrap();
        }
        let early = a.delta_since(&VersionVector::new(), 10);
        assert_eq!(a.compact(u64::MAX), 23);
        // B holds A's first ten ops, outdoes them with an edit of its own, then stages
        // the rest of A's log: the placeholder for 2..=24 (its part from 11 on) and op 25.
        let mut b = Directory::new(B);
        b.apply_delta(&early).unwrap();
        b.change(100, "ops", quota(999)).unwrap();
        let rest = a.delta_since(b.version_vector(), 100);
        b.stage_delta(&rest).unwrap();
        assert_eq!(b.staged(), 2);
        // A's ops 2..=10 fold here, right before the staged placeholder.
        assert_eq!(b.compact(u64::MAX), 9);
        assert_eq!(b.staged(), 2, "the staged entries are left as they were");
        let through = b.version_vector().clone();
        b.promote(&through);
        assert_eq!(b.staged(), 0);
        assert_eq!(b.enforced(), b.version_vector());
        let mut reference = Directory::new(NodeId(3));
        reference.merge(&a);
        reference.merge(&b);
        assert!(b.same_view(&reference));
        // A legacy single placeholder (the first compaction's) reads as a run of one.
        let legacy = Op {
            origin: NodeId(9),
            seq: 1,
            lamport: 1,
            at_ms: 0,
            actor: String::new(),
            change: Change::Compacted,
        };
        let mut c = Directory::new(NodeId(4));
        c.apply_delta(&DirectoryDelta { ops: vec![legacy] })
            .unwrap();
        assert_eq!(c.version_vector().get(NodeId(9)), 1);
        assert!(c.history(T).is_empty());
        let back = Directory::decode(&c.encode(), usize::MAX).unwrap();
        assert!(back.same_state(&c));
    }

    #[test]
    fn a_placeholder_must_end_within_its_own_ops_and_time() {
        let run = |seq: u64, lamport: u64, through_seq: u64| DirectoryDelta {
            ops: vec![Op {
                origin: A,
                seq,
                lamport,
                at_ms: 0,
                actor: String::new(),
                change: Change::CompactedRun { through_seq },
            }],
        };
        assert!(run(3, 9, 9).validate().is_ok());
        assert!(run(3, 9, 3).validate().is_ok());
        assert!(run(3, 9, 2).validate().is_err(), "ends before it starts");
        assert!(
            run(3, 9, 10).validate().is_err(),
            "op 10 would have a time of 10 or more"
        );
        assert!(run(3, 9, u64::MAX).validate().is_err());
    }

    #[test]
    fn lookup_reports_standing() {
        let mut d = with_tenant_and_key(A);
        let found: Vec<_> = d.lookup_key("tk_acme01").collect();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].standing, KeyStanding::Usable);
        assert_eq!(found[0].tenant, T);
        assert_eq!(found[0].secret_hash, &[9; 32]);
        assert!(found[0].scopes.contains(Scopes::RESIZE));
        assert!(!found[0].scopes.contains(Scopes::USAGE));
        assert_eq!(d.lookup_key("tk_other").count(), 0);

        d.change(
            2_000,
            "ops",
            Change::SetTenantStatus {
                tenant: T,
                status: TenantStatus::Suspended,
            },
        )
        .unwrap();
        assert_eq!(standing(&d), KeyStanding::TenantSuspended);
        d.change(3_000, "ops", Change::RevokeKey { tenant: T, key: K })
            .unwrap();
        assert_eq!(standing(&d), KeyStanding::Revoked);
    }

    #[test]
    fn local_edits_are_checked() {
        let mut d = with_tenant_and_key(A);
        let err = d
            .change(
                1,
                "ops",
                Change::CreateTenant {
                    tenant: T,
                    name: "again".into(),
                    home: A,
                },
            )
            .unwrap_err();
        assert_eq!(err, DirectoryError::TenantExists(T));
        let other = TenantId(8);
        let err = d
            .change(
                1,
                "ops",
                Change::RenameTenant {
                    tenant: other,
                    name: "x".into(),
                },
            )
            .unwrap_err();
        assert_eq!(err, DirectoryError::UnknownTenant(other));
        let err = d
            .change(
                1,
                "ops",
                Change::RevokeKey {
                    tenant: T,
                    key: KeyId(1),
                },
            )
            .unwrap_err();
        assert_eq!(
            err,
            DirectoryError::UnknownKey {
                tenant: T,
                key: KeyId(1)
            }
        );
        d.change(1, "ops", Change::RevokeKey { tenant: T, key: K })
            .unwrap();
        let err = d
            .change(
                1,
                "ops",
                Change::SetKeyScopes {
                    tenant: T,
                    key: K,
                    scopes: Scopes::USAGE,
                },
            )
            .unwrap_err();
        assert_eq!(err, DirectoryError::KeyRevoked(K));
        let err = d
            .change(
                1,
                "ops",
                Change::RenameTenant {
                    tenant: T,
                    name: "\u{7}bell".into(),
                },
            )
            .unwrap_err();
        assert!(matches!(
            err,
            DirectoryError::InvalidField { field: "name", .. }
        ));
        let err = d
            .change(
                1,
                &"x".repeat(limits::ACTOR_BYTES_MAX + 1),
                Change::DeleteTenant { tenant: T },
            )
            .unwrap_err();
        assert!(matches!(
            err,
            DirectoryError::InvalidField { field: "actor", .. }
        ));
        d.change(1, "ops", Change::DeleteTenant { tenant: T })
            .unwrap();
        let err = d
            .change(
                1,
                "ops",
                Change::RenameTenant {
                    tenant: T,
                    name: "y".into(),
                },
            )
            .unwrap_err();
        assert_eq!(err, DirectoryError::TenantDeleted(T));
        // Refused edits leave no op behind.
        assert_eq!(d.op_count(), 4);
    }

    #[test]
    fn signing_secret_rotation() {
        let mut d = with_tenant_and_key(A);
        let one = SecretId(1);
        let two = SecretId(2);
        d.change(
            1,
            "ops",
            Change::AddSigningSecret {
                tenant: T,
                secret_id: one,
                secret: vec![1; 32],
            },
        )
        .unwrap();
        assert_eq!(d.tenant(T).unwrap().signing_secret().unwrap().0, one);
        d.change(
            2,
            "ops",
            Change::AddSigningSecret {
                tenant: T,
                secret_id: two,
                secret: vec![2; 32],
            },
        )
        .unwrap();
        d.change(
            3,
            "ops",
            Change::SetPrimarySecret {
                tenant: T,
                secret_id: one,
            },
        )
        .unwrap();
        let tenant = d.tenant(T).unwrap();
        assert_eq!(tenant.signing_secret().unwrap().0, one, "the primary signs");
        assert_eq!(tenant.active_secrets().count(), 2, "both verify");
        d.change(
            4,
            "ops",
            Change::RetireSigningSecret {
                tenant: T,
                secret_id: one,
            },
        )
        .unwrap();
        let tenant = d.tenant(T).unwrap();
        assert_eq!(
            tenant.signing_secret().unwrap().0,
            two,
            "a retired primary falls back"
        );
        assert_eq!(
            tenant
                .active_secrets()
                .map(|(id, _)| id)
                .collect::<Vec<_>>(),
            vec![two]
        );
        let err = d
            .change(
                5,
                "ops",
                Change::SetPrimarySecret {
                    tenant: T,
                    secret_id: one,
                },
            )
            .unwrap_err();
        assert!(matches!(err, DirectoryError::UnknownSecret { .. }));
        let short = d.change(
            5,
            "ops",
            Change::AddSigningSecret {
                tenant: T,
                secret_id: SecretId(3),
                secret: vec![0; 8],
            },
        );
        assert!(matches!(
            short,
            Err(DirectoryError::InvalidField {
                field: "secret",
                ..
            })
        ));
    }

    #[test]
    fn sync_converges_in_chunks_both_ways() {
        let mut a = with_tenant_and_key(A);
        let mut b = Directory::new(B);
        for i in 0..10u64 {
            a.change(
                i,
                "ops",
                Change::SetOrigin {
                    tenant: T,
                    origin: format!("https://a{i}.example"),
                    allowed: true,
                },
            )
            .unwrap();
        }
        sync(&mut b, &mut a);
        assert!(a.same_state(&b));
        b.change(
            50,
            "other",
            Change::RenameTenant {
                tenant: T,
                name: "acme2".into(),
            },
        )
        .unwrap();
        a.change(
            50,
            "ops",
            Change::SetPreset {
                tenant: T,
                name: "thumb".into(),
                options: Some("w=100".into()),
            },
        )
        .unwrap();
        sync(&mut a, &mut b);
        assert!(a.same_state(&b) && a.same_view(&b));
        assert_eq!(b.tenant(T).unwrap().name(), "acme2");
        assert_eq!(b.tenant(T).unwrap().preset("thumb"), Some("w=100"));
    }

    #[test]
    fn early_ops_are_dropped_then_repaired() {
        let a = with_tenant_and_key(A);
        let mut b = Directory::new(B);
        let delta = a.delta_since(&VersionVector::new(), 100);
        let second_only = DirectoryDelta {
            ops: vec![delta.ops[1].clone()],
        };
        let report = b.apply_delta(&second_only).unwrap();
        assert_eq!(
            report,
            ApplyReport {
                applied: 0,
                duplicate: 0,
                early: 1
            }
        );
        assert_eq!(b.op_count(), 0);
        let report = b.apply_delta(&delta).unwrap();
        assert_eq!(report.applied, 2);
        let report = b.apply_delta(&delta).unwrap();
        assert_eq!(report.duplicate, 2);
        assert!(a.same_state(&b));
    }

    #[test]
    fn staged_ops_are_held_but_enforced_only_when_promoted() {
        let a = {
            let mut a = with_tenant_and_key(A);
            a.change(3_000, "ops", Change::RevokeKey { tenant: T, key: K })
                .unwrap();
            a
        };
        let mut b = Directory::new(B);
        b.apply_delta(&a.delta_since(&VersionVector::new(), 2))
            .unwrap();
        let revoke = a.delta_since(b.version_vector(), 100);
        let report = b.stage_delta(&revoke).unwrap();
        assert_eq!(report.applied, 1);
        assert_eq!(b.staged(), 1);
        // Held: counted in the digest and served, but the key still works here.
        assert_eq!(b.version_vector(), a.version_vector());
        assert!(b.delta_since(&VersionVector::new(), 100).ops.len() == 3);
        assert_eq!(standing(&b), KeyStanding::Usable);
        // A peer resending it: a duplicate, nothing staged twice.
        assert_eq!(b.stage_delta(&revoke).unwrap().duplicate, 1);
        assert_eq!(b.handle_sync(&a.sync_start(), 10).unwrap(), {
            Some(SyncMessage::Ops {
                delta: DirectoryDelta::default(),
                digest: a.version_vector().clone(),
            })
        });
        // Promoting short of the op enforces nothing; through it, the key is refused.
        assert!(b.promote(&VersionVector::new()).is_empty());
        assert_eq!(b.promote(a.version_vector()), vec![T]);
        assert_eq!(b.staged(), 0);
        assert_eq!(standing(&b), KeyStanding::Revoked);
        assert!(a.same_view(&b));
    }

    #[test]
    fn a_decoded_replica_enforces_what_was_staged_and_local_edits_enforce_first() {
        let a = with_tenant_and_key(A);
        let mut b = Directory::new(B);
        b.stage_delta(&a.delta_since(&VersionVector::new(), 100))
            .unwrap();
        assert!(b.tenant(T).is_none());
        let back = Directory::decode(&b.encode(), usize::MAX).unwrap();
        assert_eq!(back.staged(), 0);
        assert!(back.same_view(&a));
        // An enforcing path over a staged origin enforces its prefix first.
        let mut c = Directory::new(B);
        let delta = a.delta_since(&VersionVector::new(), 100);
        c.stage_delta(&DirectoryDelta {
            ops: vec![delta.ops[0].clone()],
        })
        .unwrap();
        c.apply_delta(&delta).unwrap();
        assert_eq!(c.staged(), 0);
        assert!(c.same_view(&a));
    }

    #[test]
    fn invalid_delta_changes_nothing() {
        let a = with_tenant_and_key(A);
        let mut b = Directory::new(B);
        let mut delta = a.delta_since(&VersionVector::new(), 100);
        delta.ops[1].lamport = u64::MAX;
        assert!(b.apply_delta(&delta).is_err());
        assert_eq!(b.op_count(), 0);
    }

    #[test]
    fn encode_decode_round_trip_and_refusals() {
        let mut d = with_tenant_and_key(A);
        d.change(
            5,
            "ops",
            Change::SetQuota {
                tenant: T,
                metric: Metric::Requests,
                period: PeriodKind::Month,
                limit: Some(10),
            },
        )
        .unwrap();
        let bytes = d.encode();
        let back = Directory::decode(&bytes, usize::MAX).unwrap();
        assert_eq!(back, d);
        assert!(back.same_view(&d));
        assert_eq!(
            back.tenant(T)
                .unwrap()
                .quota(Metric::Requests, PeriodKind::Month),
            Some(10)
        );
        assert!(matches!(
            Directory::decode(&bytes, 10),
            Err(DecodeError::TooLarge { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(Directory::decode(&bytes[..cut], usize::MAX).is_err());
        }
        let delta = d.delta_since(&VersionVector::new(), 2);
        assert_eq!(
            DirectoryDelta::decode(&delta.encode(), usize::MAX).unwrap(),
            delta
        );
        let message = SyncMessage::Ops {
            delta,
            digest: d.version_vector().clone(),
        };
        assert_eq!(
            SyncMessage::decode(&message.encode(), usize::MAX).unwrap(),
            message
        );
    }

    #[test]
    fn audit_history_redacts_secrets() {
        let mut d = with_tenant_and_key(A);
        d.change(
            9,
            "alice",
            Change::AddSigningSecret {
                tenant: T,
                secret_id: SecretId(1),
                secret: b"sixteen-byte-key-x".to_vec(),
            },
        )
        .unwrap();
        let history = d.history(T);
        assert_eq!(history.len(), 3);
        let text = history[2].change.to_string();
        assert!(
            text.contains("redacted") && !text.contains("sixteen"),
            "{text}"
        );
        assert_eq!(history[2].actor, "alice");
    }

    const C: NodeId = NodeId(3);
    const D: NodeId = NodeId(4);

    fn decommissioned(d: &Directory) -> Vec<NodeId> {
        d.decommissioned().collect()
    }

    #[test]
    fn a_decommission_is_recorded_final_and_idempotent() {
        let mut a = with_tenant_and_key(A);
        assert!(!a.is_decommissioned(C));
        let op = a
            .change(2_000, "ops", Change::DecommissionNode { node: C })
            .unwrap();
        assert_eq!(op.change.tenant(), None);
        assert_eq!(op.change.to_string(), "decommission node 0000000000000003");
        assert!(a.is_decommissioned(C));
        assert!(!a.is_decommissioned(A) && !a.is_decommissioned(D));
        assert_eq!(decommissioned(&a), vec![C]);
        // Again: another op in the log, the same view.
        let before = a.clone();
        a.change(2_001, "other", Change::DecommissionNode { node: C })
            .unwrap();
        assert_eq!(a.op_count(), before.op_count() + 1);
        assert!(a.same_view(&before));
        // In the full history, in no tenant's.
        assert_eq!(a.history(T).len(), 2);
        assert_eq!(a.all_history().len(), 4);
        // Refused, leaving no op: itself, and the id no node has.
        let ops = a.op_count();
        assert_eq!(
            a.change(3_000, "ops", Change::DecommissionNode { node: A }),
            Err(DirectoryError::DecommissionSelf(A))
        );
        assert!(matches!(
            a.change(3_000, "ops", Change::DecommissionNode { node: NodeId(0) }),
            Err(DirectoryError::InvalidField { field: "node", .. })
        ));
        assert_eq!(a.op_count(), ops);
        assert!(!a.is_decommissioned(A));
        // Nothing about tenants changed.
        assert_eq!(standing(&a), KeyStanding::Usable);
    }

    #[test]
    fn decommissions_from_several_origins_merge_in_any_order() {
        let mut a = with_tenant_and_key(A);
        let mut b = Directory::new(B);
        a.change(10, "ops", Change::DecommissionNode { node: C })
            .unwrap();
        b.change(11, "ops", Change::DecommissionNode { node: D })
            .unwrap();
        b.change(12, "ops", Change::DecommissionNode { node: C })
            .unwrap();
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert!(ab.same_state(&ba) && ab.same_view(&ba));
        assert_eq!(decommissioned(&ab), vec![C, D]);
        // A third replica taking B's ops before A's, as deltas.
        let mut c = Directory::new(NodeId(5));
        c.apply_delta(&b.delta_since(&VersionVector::new(), 100))
            .unwrap();
        assert_eq!(decommissioned(&c), vec![C, D]);
        c.apply_delta(&a.delta_since(&VersionVector::new(), 100))
            .unwrap();
        assert!(c.same_view(&ab));
        // And by two-party sync.
        sync(&mut a, &mut b);
        assert!(a.same_state(&b) && a.same_view(&ab) && b.same_view(&ab));
    }

    #[test]
    fn a_staged_decommission_is_enforced_only_when_promoted() {
        let mut a = Directory::new(A);
        a.change(10, "ops", Change::DecommissionNode { node: C })
            .unwrap();
        let mut b = Directory::new(B);
        let delta = a.delta_since(&VersionVector::new(), 100);
        assert_eq!(b.stage_delta(&delta).unwrap().applied, 1);
        assert_eq!(b.staged(), 1);
        assert_eq!(b.version_vector(), a.version_vector());
        assert!(!b.is_decommissioned(C));
        assert_eq!(decommissioned(&b), vec![]);
        // Promoting short of it does nothing; through it, it is enforced (and names no
        // tenant).
        assert!(b.promote(&VersionVector::new()).is_empty());
        assert!(!b.is_decommissioned(C));
        assert!(b.promote(a.version_vector()).is_empty());
        assert_eq!(b.staged(), 0);
        assert!(b.is_decommissioned(C));
        assert!(a.same_view(&b));
    }

    #[test]
    fn a_decommission_round_trips_and_an_invalid_one_is_refused_from_peers() {
        let mut d = with_tenant_and_key(A);
        d.change(10, "ops", Change::DecommissionNode { node: C })
            .unwrap();
        let back = Directory::decode(&d.encode(), usize::MAX).unwrap();
        assert_eq!(back, d);
        assert!(back.same_view(&d));
        assert!(back.is_decommissioned(C));
        let delta = d.delta_since(&VersionVector::new(), 100);
        assert_eq!(
            DirectoryDelta::decode(&delta.encode(), usize::MAX).unwrap(),
            delta
        );
        // A peer's op naming node 0 refuses its whole delta.
        let mut bad = delta.clone();
        bad.ops[2].change = Change::DecommissionNode { node: NodeId(0) };
        assert!(matches!(
            DirectoryDelta::decode(&bad.encode(), usize::MAX),
            Err(DecodeError::Invalid(_))
        ));
        let mut e = Directory::new(B);
        assert!(e.apply_delta(&bad).is_err());
        assert_eq!(e.op_count(), 0);
    }

    /// A directory state written before `DecommissionNode` existed (at 948f0c9): node 1,
    /// tenant 7 created, key 70 created, a monthly request quota of 10, preset `thumb`,
    /// key 70 revoked. Appending a variant leaves the others' encodings as they were.
    const STATE_BEFORE_DECOMMISSION: &str = "01060105010101e807036f707300070461636d650101\
        0202e907036f707305074609746b5f61636d65303109090909090909090909090909090909090909\
        0909090909090909090909090901026369010303ea07036f70730d070000010a010404eb07036f70\
        730e07057468756d620105773d313030010505ec07036f7073080746";

    #[test]
    fn a_state_encoded_before_decommissioning_existed_still_decodes() {
        let bytes: Vec<u8> = (0..STATE_BEFORE_DECOMMISSION.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&STATE_BEFORE_DECOMMISSION[i..i + 2], 16).unwrap())
            .collect();
        let d = Directory::decode(&bytes, usize::MAX).unwrap();
        assert_eq!(d.node(), A);
        assert_eq!(d.op_count(), 5);
        let tenant = d.tenant(T).unwrap();
        assert_eq!(tenant.name(), "acme");
        assert_eq!(tenant.quota(Metric::Requests, PeriodKind::Month), Some(10));
        assert_eq!(tenant.preset("thumb"), Some("w=100"));
        assert_eq!(standing(&d), KeyStanding::Revoked);
        assert_eq!(decommissioned(&d), vec![]);
        // Re-encoded byte for byte.
        assert_eq!(d.encode(), bytes);
    }
}
