//! The materialised view of the directory: what the log's ops add up to, shaped for reads.
//!
//! Every field is a last-writer-wins register ([`Lww`]), a monotone mark ([`Mark`]) or a
//! grow-only set (the decommissioned nodes), so applying a set of ops in any order yields
//! the same view. Two choices are about scale
//! (100K tenants must fit well under 256 MB and load in well under a second):
//! - a tenant's small collections (quotas, origins, presets, secrets, keys) are sorted
//!   vectors ([`SmallMap`]), not `BTreeMap`s: a one-entry `BTreeMap` allocates a whole
//!   eleven-slot node, which at 100K tenants × five maps was most of the memory;
//! - tenants are found through a hash table (one probe: the request path reads a tenant's
//!   quotas on every admission, and a B-tree of 100K tenants cost several cache misses),
//!   with their ids also kept in order for listing;
//! - the key index stores, per public prefix, everything the request path needs (tenant,
//!   secret hash, scopes and the key's *standing*, kept current when the key or its tenant
//!   changes), with the prefix inline in the table: a lookup is one hash and one probe, no
//!   pointer chasing into the tenant or key maps.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use super::model::{limits, Change, KeyId, Op, Scopes, SecretId, Stamp, TenantStatus};
use crate::ids::{IdHashMap, Metric, NodeId, TenantId};
use crate::period::PeriodKind;

/// A last-writer-wins register: the value of the op with the highest stamp.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lww<T> {
    stamp: Stamp,
    value: T,
}

impl<T> Lww<T> {
    fn set(&mut self, stamp: Stamp, value: T) -> bool {
        if stamp > self.stamp {
            self.stamp = stamp;
            self.value = value;
            true
        } else {
            false
        }
    }

    pub fn get(&self) -> &T {
        &self.value
    }

    /// The stamp of the op that wrote the current value (default before any write).
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }
}

/// A monotone event: the first (lowest-stamped) op that set it, kept for the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub stamp: Stamp,
    pub at_ms: u64,
}

fn mark(slot: &mut Option<Mark>, stamp: Stamp, at_ms: u64) -> bool {
    if slot.is_none_or(|old| stamp < old.stamp) {
        let first = slot.is_none();
        *slot = Some(Mark { stamp, at_ms });
        first
    } else {
        false
    }
}

/// A map kept as a sorted vector: a few entries per tenant, so binary search over one
/// allocation beats a tree of nodes in both memory and time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmallMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap(Vec::new())
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    pub fn get<Q: Ord + ?Sized>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.0
            .binary_search_by(|(k, _)| k.borrow().cmp(key))
            .ok()
            .map(|at| &self.0[at].1)
    }

    fn get_or_default(&mut self, key: K) -> &mut V
    where
        V: Default,
    {
        let at = match self.0.binary_search_by(|(k, _)| k.cmp(&key)) {
            Ok(at) => at,
            Err(at) => {
                // Vec's first growth reserves four slots; most of these maps hold one
                // entry, so grow one at a time while small.
                if self.0.len() < 4 {
                    self.0.reserve_exact(1);
                }
                self.0.insert(at, (key, V::default()));
                at
            }
        };
        &mut self.0[at].1
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> + '_ {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A URL-signing secret of a tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SigningSecret {
    secret: Lww<Vec<u8>>,
    added: Option<Mark>,
    retired: Option<Mark>,
}

impl SigningSecret {
    pub fn is_active(&self) -> bool {
        self.added.is_some() && self.retired.is_none()
    }

    pub fn added(&self) -> Option<Mark> {
        self.added
    }

    pub fn retired(&self) -> Option<Mark> {
        self.retired
    }

    /// The secret bytes (for HMAC verification; never log them).
    pub fn secret(&self) -> &[u8] {
        self.secret.get()
    }
}

/// The materialised state of one tenant. A tenant can be referenced by ops that arrived
/// before its creation op (from another origin); it then exists here without `created`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tenant {
    created: Option<Mark>,
    deleted: Option<Mark>,
    name: Lww<String>,
    status: Lww<TenantStatus>,
    home: Lww<NodeId>,
    quotas: SmallMap<(Metric, PeriodKind), Lww<Option<u64>>>,
    origins: SmallMap<String, Lww<bool>>,
    presets: SmallMap<String, Lww<Option<String>>>,
    secrets: SmallMap<SecretId, SigningSecret>,
    primary_secret: Lww<Option<SecretId>>,
    keys: SmallMap<KeyId, ()>,
    /// Shared, so a clone of the tenant does not copy the image.
    watermark: Lww<Option<Arc<[u8]>>>,
}

impl Tenant {
    /// Whether a creation op for it has been applied.
    pub fn exists(&self) -> bool {
        self.created.is_some()
    }

    pub fn created(&self) -> Option<Mark> {
        self.created
    }

    pub fn deleted(&self) -> Option<Mark> {
        self.deleted
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.is_some()
    }

    pub fn name(&self) -> &str {
        self.name.get()
    }

    pub fn status(&self) -> TenantStatus {
        *self.status.get()
    }

    /// The node that turns this tenant's quota policy into escrow grants.
    pub fn home(&self) -> NodeId {
        *self.home.get()
    }

    /// Whether requests for this tenant may be served.
    pub fn is_serving(&self) -> bool {
        self.exists() && !self.is_deleted() && self.status() == TenantStatus::Active
    }

    /// The hard quota for `metric` over periods of `period`, if one is set.
    pub fn quota(&self, metric: Metric, period: PeriodKind) -> Option<u64> {
        self.quotas
            .get(&(metric, period))
            .and_then(|limit| *limit.get())
    }

    /// Every quota that is set, with the stamp of the edit that decided it.
    pub fn quotas(&self) -> impl Iterator<Item = (Metric, PeriodKind, u64, Stamp)> + '_ {
        self.quotas.iter().filter_map(|(&(metric, period), limit)| {
            limit.get().map(|l| (metric, period, l, limit.stamp()))
        })
    }

    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins
            .get(origin)
            .is_some_and(|allowed| *allowed.get())
    }

    /// Allowed origins, sorted.
    pub fn origins(&self) -> impl Iterator<Item = &str> + '_ {
        self.origins
            .iter()
            .filter(|(_, allowed)| *allowed.get())
            .map(|(origin, _)| origin.as_str())
    }

    pub fn preset(&self, name: &str) -> Option<&str> {
        self.presets
            .get(name)
            .and_then(|options| options.get().as_deref())
    }

    /// The watermark file, if one is set, and the stamp of the edit that set it: one per
    /// version, so a cache of the decoded image can be keyed by it.
    pub fn watermark(&self) -> Option<(&Arc<[u8]>, Stamp)> {
        self.watermark
            .get()
            .as_ref()
            .map(|image| (image, self.watermark.stamp()))
    }

    /// Presets that are set, sorted by name.
    pub fn presets(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.presets
            .iter()
            .filter_map(|(name, options)| options.get().as_deref().map(|o| (name.as_str(), o)))
    }

    /// Every signing secret ever added, active or retired.
    pub fn signing_secrets(&self) -> impl Iterator<Item = (SecretId, &SigningSecret)> + '_ {
        self.secrets
            .iter()
            .filter(|(_, secret)| secret.added.is_some())
            .map(|(id, secret)| (*id, secret))
    }

    /// Whether a secret with this id was ever added (retired or not).
    pub fn has_secret(&self, secret_id: SecretId) -> bool {
        self.secrets
            .get(&secret_id)
            .is_some_and(|secret| secret.added.is_some())
    }

    /// The secrets that verify signatures.
    pub fn active_secrets(&self) -> impl Iterator<Item = (SecretId, &[u8])> + '_ {
        self.secrets
            .iter()
            .filter(|(_, secret)| secret.is_active())
            .map(|(id, secret)| (*id, secret.secret()))
    }

    /// Whether `secret_id` is an active secret.
    pub fn secret_is_active(&self, secret_id: SecretId) -> bool {
        self.secrets
            .get(&secret_id)
            .is_some_and(SigningSecret::is_active)
    }

    /// The secret that signs: the primary if it is active, else the most recently added
    /// active secret, else none.
    pub fn signing_secret(&self) -> Option<(SecretId, &[u8])> {
        if let Some(id) = *self.primary_secret.get() {
            if let Some(secret) = self.secrets.get(&id).filter(|s| s.is_active()) {
                return Some((id, secret.secret()));
            }
        }
        self.secrets
            .iter()
            .filter(|(_, secret)| secret.is_active())
            .max_by_key(|(_, secret)| secret.added.map(|m| m.stamp))
            .map(|(id, secret)| (*id, secret.secret()))
    }

    /// Ids of the keys created for this tenant (revoked ones included), ascending.
    pub fn keys(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(id, ())| *id)
    }
}

/// The immutable part of a key, set by its creation op.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyIdent {
    tenant: TenantId,
    prefix: String,
    secret_hash: [u8; 32],
}

/// The materialised state of one API key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiKey {
    ident: Lww<Option<KeyIdent>>,
    created: Option<Mark>,
    scopes: Lww<Scopes>,
    label: Lww<String>,
    revoked: Option<Mark>,
}

impl ApiKey {
    /// Whether its creation op has been applied.
    pub fn exists(&self) -> bool {
        self.ident.get().is_some()
    }

    pub fn tenant(&self) -> Option<TenantId> {
        self.ident.get().as_ref().map(|ident| ident.tenant)
    }

    pub fn prefix(&self) -> Option<&str> {
        self.ident.get().as_ref().map(|ident| ident.prefix.as_str())
    }

    pub fn secret_hash(&self) -> Option<&[u8; 32]> {
        self.ident.get().as_ref().map(|ident| &ident.secret_hash)
    }

    pub fn created(&self) -> Option<Mark> {
        self.created
    }

    pub fn scopes(&self) -> Scopes {
        *self.scopes.get()
    }

    pub fn label(&self) -> &str {
        self.label.get()
    }

    pub fn revoked(&self) -> Option<Mark> {
        self.revoked
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.is_some()
    }
}

/// Whether a key found by prefix may be used, and if not, why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyStanding {
    Usable,
    Revoked,
    TenantSuspended,
    TenantDeleted,
    /// The key's tenant has not been created on this replica (yet).
    TenantUnknown,
}

/// One candidate for a key prefix, as the request path needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyMatch<'a> {
    pub key: KeyId,
    pub tenant: TenantId,
    /// Compare with the presented key's hash in constant time.
    pub secret_hash: &'a [u8; 32],
    pub scopes: Scopes,
    pub standing: KeyStanding,
}

/// A key prefix stored inline (prefixes are at most [`limits::KEY_PREFIX_BYTES_MAX`]
/// bytes), so the index table holds it without a pointer to follow.
#[derive(Clone, Copy)]
struct PrefixKey {
    len: u8,
    bytes: [u8; limits::KEY_PREFIX_BYTES_MAX],
}

impl PrefixKey {
    fn new(prefix: &str) -> Option<PrefixKey> {
        let len = prefix.len();
        if len > limits::KEY_PREFIX_BYTES_MAX {
            return None;
        }
        let mut bytes = [0; limits::KEY_PREFIX_BYTES_MAX];
        bytes[..len].copy_from_slice(prefix.as_bytes());
        Some(PrefixKey {
            len: len as u8,
            bytes,
        })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl PartialEq for PrefixKey {
    fn eq(&self, other: &PrefixKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for PrefixKey {}

impl Hash for PrefixKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::fmt::Debug for PrefixKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// What the request path needs about one key, kept current by the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexEntry {
    key: KeyId,
    tenant: TenantId,
    secret_hash: [u8; 32],
    scopes: Scopes,
    standing: KeyStanding,
}

/// The keys of one prefix, sorted by key id. Almost always one, held inline.
#[derive(Clone, Debug, PartialEq, Eq)]
enum IndexSlot {
    One(IndexEntry),
    Many(Vec<IndexEntry>),
}

impl IndexSlot {
    fn as_slice(&self) -> &[IndexEntry] {
        match self {
            IndexSlot::One(entry) => std::slice::from_ref(entry),
            IndexSlot::Many(entries) => entries,
        }
    }
}

/// The tenant `id` in `tenants`, created empty (and its id recorded in `ids`) if absent.
fn tenant_entry<'a>(
    tenants: &'a mut IdHashMap<TenantId, Box<Tenant>>,
    ids: &mut BTreeSet<TenantId>,
    id: TenantId,
) -> &'a mut Tenant {
    tenants.entry(id).or_insert_with(|| {
        ids.insert(id);
        Box::default()
    })
}

/// The view: tenants, keys, the key index and the decommissioned nodes. See the module doc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct View {
    /// Boxed: B-tree nodes hold eleven entries and are often half full, so inline values
    /// of a few hundred bytes would double the memory (measured: 226 → 170 MB at 100K).
    tenants: IdHashMap<TenantId, Box<Tenant>>,
    /// Every id of `tenants`, in order (what [`View::tenants`] walks).
    tenant_ids: BTreeSet<TenantId>,
    keys: BTreeMap<KeyId, Box<ApiKey>>,
    /// Public prefix → the keys with that prefix. SipHash with a per-process random key:
    /// the prefix comes from the request, so the table must not be floodable. (Its
    /// iteration order differs between processes; nothing iterates it.)
    index: HashMap<PrefixKey, IndexSlot>,
    /// Nodes decommissioned by a [`Change::DecommissionNode`]: grow-only, so final.
    decommissioned: BTreeSet<NodeId>,
}

impl View {
    pub(super) fn tenant(&self, tenant: TenantId) -> Option<&Tenant> {
        self.tenants
            .get(&tenant)
            .map(Box::as_ref)
            .filter(|t| t.exists())
    }

    pub(super) fn tenants(&self) -> impl Iterator<Item = (TenantId, &Tenant)> + '_ {
        self.tenants_after(None)
    }

    /// How many tenants this view has ever seen created (deleted ones included; an upper
    /// bound on [`View::tenants`]'s length, in O(1)).
    pub(super) fn tenants_seen(&self) -> usize {
        self.tenant_ids.len()
    }

    /// [`View::tenants`] from the first id after `after` (a listing's cursor).
    pub(super) fn tenants_after(
        &self,
        after: Option<TenantId>,
    ) -> impl Iterator<Item = (TenantId, &Tenant)> + '_ {
        let from = match after {
            Some(id) => std::ops::Bound::Excluded(id),
            None => std::ops::Bound::Unbounded,
        };
        self.tenant_ids
            .range((from, std::ops::Bound::Unbounded))
            .map(|id| (*id, self.tenants[id].as_ref()))
            .filter(|(_, t)| t.exists())
    }

    /// A key, created or not (a revocation can arrive before its creation).
    /// Whether `op` decides nothing any more in this view: it wrote registers only (no
    /// creation, mark, deletion, revocation or decommission), and each of them now holds a
    /// later write. Such an op can be compacted (see the directory's module doc).
    pub(super) fn superseded(&self, op: &Op) -> bool {
        let stamp = op.stamp();
        let later = |written: Option<Stamp>| written.is_some_and(|w| w > stamp);
        let tenant = |id: &TenantId| self.tenants.get(id);
        match &op.change {
            Change::RenameTenant { tenant: id, .. } => later(tenant(id).map(|t| t.name.stamp())),
            Change::SetTenantStatus { tenant: id, .. } => {
                later(tenant(id).map(|t| t.status.stamp()))
            }
            Change::SetHome { tenant: id, .. } => later(tenant(id).map(|t| t.home.stamp())),
            Change::SetPrimarySecret { tenant: id, .. } => {
                later(tenant(id).map(|t| t.primary_secret.stamp()))
            }
            Change::SetQuota {
                tenant: id,
                metric,
                period,
                ..
            } => later(
                tenant(id)
                    .and_then(|t| t.quotas.get(&(*metric, *period)))
                    .map(Lww::stamp),
            ),
            Change::SetOrigin {
                tenant: id, origin, ..
            } => later(
                tenant(id)
                    .and_then(|t| t.origins.get(origin.as_str()))
                    .map(Lww::stamp),
            ),
            Change::SetPreset {
                tenant: id, name, ..
            } => later(
                tenant(id)
                    .and_then(|t| t.presets.get(name.as_str()))
                    .map(Lww::stamp),
            ),
            Change::SetWatermark { tenant: id, .. } => {
                later(tenant(id).map(|t| t.watermark.stamp()))
            }
            Change::SetKeyScopes { key, .. } => later(self.keys.get(key).map(|k| k.scopes.stamp())),
            Change::SetKeyLabel { key, .. } => later(self.keys.get(key).map(|k| k.label.stamp())),
            _ => false,
        }
    }

    pub(super) fn key_any(&self, key: KeyId) -> Option<&ApiKey> {
        self.keys.get(&key).map(Box::as_ref)
    }

    pub(super) fn is_decommissioned(&self, node: NodeId) -> bool {
        self.decommissioned.contains(&node)
    }

    pub(super) fn decommissioned(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.decommissioned.iter().copied()
    }

    pub(super) fn lookup(&self, prefix: &str) -> impl Iterator<Item = KeyMatch<'_>> + '_ {
        let entries = PrefixKey::new(prefix)
            .and_then(|prefix| self.index.get(&prefix))
            .map_or(&[][..], IndexSlot::as_slice);
        entries.iter().map(|entry| KeyMatch {
            key: entry.key,
            tenant: entry.tenant,
            secret_hash: &entry.secret_hash,
            scopes: entry.scopes,
            standing: entry.standing,
        })
    }

    /// Applies one op. Order-independent: see the module doc of `directory`.
    pub(super) fn apply(&mut self, op: &Op) {
        let stamp = op.stamp();
        let at_ms = op.at_ms;
        match &op.change {
            Change::DecommissionNode { node } => {
                self.decommissioned.insert(*node);
            }
            Change::CreateKey {
                tenant: tenant_id,
                key,
                prefix,
                secret_hash,
                scopes,
                label,
                ..
            } => {
                let entry = self.keys.entry(*key).or_default();
                let old_prefix = entry.prefix().map(str::to_owned);
                let old_tenant = entry.tenant();
                let tenant_id = *tenant_id;
                let ident = KeyIdent {
                    tenant: tenant_id,
                    prefix: prefix.clone(),
                    secret_hash: *secret_hash,
                };
                let changed = entry.ident.set(stamp, Some(ident));
                mark(&mut entry.created, stamp, at_ms);
                entry.scopes.set(stamp, *scopes);
                entry.label.set(stamp, label.clone());
                if changed {
                    if let Some(old) = old_tenant.filter(|old| *old != tenant_id) {
                        if let Some(tenant) = self.tenants.get_mut(&old) {
                            tenant.keys.0.retain(|(id, ())| id != key);
                        }
                    }
                    tenant_entry(&mut self.tenants, &mut self.tenant_ids, tenant_id)
                        .keys
                        .get_or_default(*key);
                    if let Some(old_prefix) = old_prefix.filter(|old| old != prefix) {
                        self.unindex(*key, &old_prefix);
                    }
                }
                self.reindex(*key);
            }
            Change::SetKeyScopes { key, scopes, .. } => {
                if self
                    .keys
                    .entry(*key)
                    .or_default()
                    .scopes
                    .set(stamp, *scopes)
                {
                    self.reindex(*key);
                }
            }
            Change::SetKeyLabel { key, label, .. } => {
                self.keys
                    .entry(*key)
                    .or_default()
                    .label
                    .set(stamp, label.clone());
            }
            Change::RevokeKey { key, .. } => {
                if mark(
                    &mut self.keys.entry(*key).or_default().revoked,
                    stamp,
                    at_ms,
                ) {
                    self.reindex(*key);
                }
            }
            _ => self.apply_to_tenant(op),
        }
    }

    fn apply_to_tenant(&mut self, op: &Op) {
        let Some(tenant_id) = op.change.tenant() else {
            return;
        };
        let stamp = op.stamp();
        let at_ms = op.at_ms;
        let tenant = tenant_entry(&mut self.tenants, &mut self.tenant_ids, tenant_id);
        // Whether the standing of the tenant's keys may have changed.
        let standing_changed = match &op.change {
            Change::CreateTenant { name, home, .. } => {
                let first = mark(&mut tenant.created, stamp, at_ms);
                tenant.name.set(stamp, name.clone());
                tenant.home.set(stamp, *home);
                tenant.status.set(stamp, TenantStatus::Active) || first
            }
            Change::RenameTenant { name, .. } => {
                tenant.name.set(stamp, name.clone());
                false
            }
            Change::SetTenantStatus { status, .. } => tenant.status.set(stamp, *status),
            Change::SetHome { home, .. } => {
                tenant.home.set(stamp, *home);
                false
            }
            Change::DeleteTenant { .. } => mark(&mut tenant.deleted, stamp, at_ms),
            Change::AddSigningSecret {
                secret_id, secret, ..
            } => {
                let entry = tenant.secrets.get_or_default(*secret_id);
                entry.secret.set(stamp, secret.clone());
                mark(&mut entry.added, stamp, at_ms);
                false
            }
            Change::SetPrimarySecret { secret_id, .. } => {
                tenant.primary_secret.set(stamp, Some(*secret_id));
                false
            }
            Change::RetireSigningSecret { secret_id, .. } => {
                mark(
                    &mut tenant.secrets.get_or_default(*secret_id).retired,
                    stamp,
                    at_ms,
                );
                false
            }
            Change::SetOrigin {
                origin, allowed, ..
            } => {
                tenant
                    .origins
                    .get_or_default(origin.clone())
                    .set(stamp, *allowed);
                false
            }
            Change::SetQuota {
                metric,
                period,
                limit,
                ..
            } => {
                tenant
                    .quotas
                    .get_or_default((*metric, *period))
                    .set(stamp, *limit);
                false
            }
            Change::SetPreset { name, options, .. } => {
                tenant
                    .presets
                    .get_or_default(name.clone())
                    .set(stamp, options.clone());
                false
            }
            Change::SetWatermark { image, .. } => {
                tenant.watermark.set(stamp, image.as_deref().map(Arc::from));
                false
            }
            Change::CreateKey { .. }
            | Change::SetKeyScopes { .. }
            | Change::SetKeyLabel { .. }
            | Change::RevokeKey { .. }
            | Change::DecommissionNode { .. }
            | Change::Compacted
            | Change::CompactedRun { .. } => false,
        };
        if standing_changed {
            let keys: Vec<KeyId> = self.tenants[&tenant_id].keys().collect();
            for key in keys {
                self.reindex(key);
            }
        }
    }

    fn standing(&self, key: &ApiKey, tenant: TenantId) -> KeyStanding {
        if key.is_revoked() {
            return KeyStanding::Revoked;
        }
        match self.tenants.get(&tenant) {
            Some(t) if t.is_deleted() => KeyStanding::TenantDeleted,
            Some(t) if !t.exists() => KeyStanding::TenantUnknown,
            None => KeyStanding::TenantUnknown,
            Some(t) if t.status() == TenantStatus::Suspended => KeyStanding::TenantSuspended,
            Some(_) => KeyStanding::Usable,
        }
    }

    /// Writes the key's current entry under its current prefix.
    fn reindex(&mut self, key_id: KeyId) {
        let Some(key) = self.keys.get(&key_id) else {
            return;
        };
        let Some(ident) = key.ident.get().as_ref() else {
            return;
        };
        let entry = IndexEntry {
            key: key_id,
            tenant: ident.tenant,
            secret_hash: ident.secret_hash,
            scopes: key.scopes(),
            standing: self.standing(key, ident.tenant),
        };
        let prefix = PrefixKey::new(&ident.prefix).expect("prefixes are validated");
        match self.index.get_mut(&prefix) {
            None => {
                self.index.insert(prefix, IndexSlot::One(entry));
            }
            Some(IndexSlot::One(one)) if one.key == key_id => *one = entry,
            Some(slot) => {
                let mut entries = slot.as_slice().to_vec();
                match entries.binary_search_by_key(&key_id, |e| e.key) {
                    Ok(at) => entries[at] = entry,
                    Err(at) => entries.insert(at, entry),
                }
                *slot = IndexSlot::Many(entries);
            }
        }
    }

    /// Removes the key from the slot of a prefix it no longer has.
    fn unindex(&mut self, key_id: KeyId, prefix: &str) {
        let Some(prefix) = PrefixKey::new(prefix) else {
            return;
        };
        let Some(slot) = self.index.get_mut(&prefix) else {
            return;
        };
        let mut entries = slot.as_slice().to_vec();
        entries.retain(|e| e.key != key_id);
        match entries.len() {
            0 => {
                self.index.remove(&prefix);
            }
            1 => *slot = IndexSlot::One(entries[0]),
            _ => *slot = IndexSlot::Many(entries),
        }
    }
}
