//! The control plane's named operations: every hold of the node's lock outside the writer
//! and the transport is one of these methods, and nothing else in the crate can take it
//! (`ControlPlane::lock` is private to `control`). Each takes the lock once, copies out
//! what its caller needs as plain data (no reference into the node survives the hold),
//! and lets go; rendering JSON, hashing, HMACs and waiting happen in the caller, after.
//!
//! Why: the lock is shared by every request's authentication, admission and billing and
//! by the transport, so a hold must stay in microseconds whatever an operator asks for
//! (docs/ARCHITECTURE.md, "Invariants"). Before, the handlers held the raw guard while
//! they rendered every tenant to JSON, scanned every ledger slot for an export or decoded
//! the whole directory log for one tenant's history, and a tiny resize's p99 went from
//! 1.7 ms to 60 ms while an operator listed tenants in a loop (issue #15). Listing and
//! exports now go in pages of a bounded size, one short hold each.
//!
//! The quota helpers ([`demands`], [`try_admit`], [`record_usage`]) are plain functions
//! over a locked node, so the request-path benchmark (`edge/benches/request_path.rs`)
//! runs exactly the code the operations run.

use std::collections::BTreeMap;
use std::sync::Arc;

use tessera_crdt::directory::{
    Change, DirectoryError, KeyId, Op, Scopes, SecretId, Stamp, Tenant, TenantStatus,
};
use tessera_crdt::ledger::{Finality, IncrementError};
use tessera_crdt::{CounterKey, Metric, NodeId, Period, PeriodKind, TenantId};
use tessera_sync::{Node, PeerView, Stats};

use super::records::Pending;
use super::ControlPlane;
use crate::control::auth::{self, Caller, Presented};
use crate::http::error::ApiError;

/// What one admission needs: `(counter, amount)` per enforced quota of the tenant.
pub fn demands(node: &Node, tenant: TenantId, bytes_in: u64, now: u64) -> Vec<(CounterKey, u64)> {
    let Some(t) = node.directory().tenant(tenant) else {
        return Vec::new();
    };
    t.quotas()
        .filter_map(|(metric, kind, _, _)| {
            let amount = match metric {
                Metric::Requests => 1,
                Metric::BytesIn => bytes_in,
                // Not enforceable before work (the admin API refuses to set these).
                Metric::CpuMicros | Metric::BytesOut => return None,
            };
            Some((
                CounterKey::new(tenant, Period::containing(kind, now), metric),
                amount,
            ))
        })
        .collect()
}

/// Why an admission was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// Nothing left anywhere in this node's view: wait for the next period.
    Exhausted { period_end_ms: u64 },
    /// Rights exist elsewhere (or grants have not arrived yet) but are not here.
    /// `transfer_possible`: some connected peer could still send some (it holds rights
    /// for the counter, or, with no counter here yet, it may bring the grants). When
    /// none could, waiting is pointless: the request is refused at once (a partitioned
    /// node answers 429 fast instead of holding every request for the transfer wait).
    Unavailable { transfer_possible: bool },
}

/// Whether an admission attempt is the request's first (its demand counts) or one after
/// a wait for rights (it does not count again: see [`Node::consume_again`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    First,
    Again,
}

/// Spends every demand's rights at once, or none: all are checked first, under the caller's
/// one hold of the lock. A refusal asks a peer for rights (through the consume it makes).
pub fn try_admit(
    node: &mut Node,
    demands: &[(CounterKey, u64)],
    now: u64,
    attempt: Attempt,
) -> Result<(), Shortfall> {
    let short = demands
        .iter()
        .find(|(key, amount)| node.local_rights(key) < *amount)
        .copied();
    let Some((key, amount)) = short else {
        for (key, amount) in demands {
            // After a wait, the refused attempt already counted this request's demand.
            match attempt {
                Attempt::First => node.consume(now, *key, *amount),
                Attempt::Again => node.consume_again(now, *key, *amount),
            }
            .expect("rights were checked under the same lock");
        }
        return Ok(());
    };
    // Refused, and starts (or revives) a rights request to a peer.
    let _ = match attempt {
        Attempt::First => node.consume(now, key, amount),
        Attempt::Again => node.consume_again(now, key, amount),
    };
    let counter = node.escrow().get(&key);
    let left = counter.map_or(0, |c| {
        u128::from(c.limit()).saturating_sub(c.total_consumed())
    });
    if counter.is_some() && left < u128::from(amount) {
        return Err(Shortfall::Exhausted {
            period_end_ms: key.period.end_ms(),
        });
    }
    let transfer_possible = node
        .peers()
        .iter()
        .filter(|(_, peer)| peer.connected && !peer.left)
        .any(|(peer, _)| counter.is_none_or(|c| c.local_rights(*peer) > 0));
    Err(Shortfall::Unavailable { transfer_possible })
}

/// What one successful request is billed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_micros: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Adds one request's usage to this node's ledger slot for the month; returns the ticket
/// to wait on ([`Node::own_changes`] after it). Usage is stamped when it is billed, not
/// when the request was admitted: a request that straddles a period's end bills the new
/// period (its quota rights came from the old one's counter). Billing time is the write
/// time, so no usage reaches a period after this node sealed it (`billing.seal_grace_ms`
/// after its end) unless the clock steps back by more than the grace: then the increment
/// is refused (`IncrementError::Sealed`).
pub fn record_usage(
    node: &mut Node,
    tenant: TenantId,
    usage: Usage,
    now: u64,
) -> Result<u64, IncrementError> {
    let period = Period::containing(PeriodKind::Month, now);
    for (metric, amount) in [
        (Metric::Requests, 1),
        (Metric::CpuMicros, usage.cpu_micros),
        (Metric::BytesIn, usage.bytes_in),
        (Metric::BytesOut, usage.bytes_out),
    ] {
        if amount > 0 {
            node.increment(now, CounterKey::new(tenant, period, metric), amount)?;
        }
    }
    Ok(node.own_changes())
}

/// Rows a listing or an export copies in one hold of the lock: a page takes several.
pub const ROWS_PER_HOLD: usize = 200;

/// A first admission: the tenant's demands (empty: no quota applies) and, when some
/// were refused, why.
pub struct Admission {
    pub demands: Vec<(CounterKey, u64)>,
    pub shortfall: Option<Shortfall>,
}

/// What a signed URL's check needs of its tenant, copied out of the directory: the HMAC
/// is computed after the lock is let go.
pub struct SigningView {
    /// The active signing secrets: any of them verifies.
    pub secrets: Vec<Vec<u8>>,
    pub deleted: bool,
    pub serving: bool,
    pub presets: BTreeMap<String, String>,
    pub origins: Vec<String>,
    /// The watermark file and the stamp of its version (shared, not copied).
    pub watermark: Option<(Arc<[u8]>, Stamp)>,
}

/// A peer as the metrics show it: id, connected, ms since last heard, replication lag.
pub type PeerRow = (String, bool, Option<u64>, Option<u64>);

/// One tenant of a listing page.
pub struct TenantRow {
    pub id: TenantId,
    pub name: String,
    pub status: TenantStatus,
    pub home: NodeId,
}

impl TenantRow {
    fn of(id: TenantId, t: &Tenant) -> TenantRow {
        TenantRow {
            id,
            name: t.name().to_owned(),
            status: t.status(),
            home: t.home(),
        }
    }
}

/// Everything `GET /admin/v1/tenants/{id}` shows.
pub struct TenantDetail {
    pub row: TenantRow,
    pub deleted: bool,
    pub keys: Vec<KeyRow>,
    /// `(id, active, primary)`.
    pub secrets: Vec<(SecretId, bool, bool)>,
    pub origins: Vec<String>,
    /// `(metric, period kind, limit)`.
    pub quotas: Vec<(Metric, PeriodKind, u64)>,
    pub presets: Vec<(String, String)>,
    /// The watermark file's size, bytes, if one is set.
    pub watermark_bytes: Option<usize>,
}

pub struct KeyRow {
    pub id: KeyId,
    pub prefix: Option<String>,
    pub label: String,
    pub scopes: Scopes,
    pub created_ms: Option<u64>,
    pub revoked: bool,
}

/// A node's standing, for usage and cluster reports.
#[derive(Clone, Debug)]
pub struct NodeRow {
    pub id: NodeId,
    pub view: PeerView,
    pub decommissioned: bool,
}

/// Whether what a member sent may be behind: not heard from within `stale_ms` (or never),
/// unless it left or was decommissioned — it will send nothing more, so nothing is missing.
/// The one rule for "stale" (usage's harvest, `cluster status`, the freshness log).
pub fn is_stale(view: &PeerView, decommissioned: bool, now_ms: u64, stale_ms: u64) -> bool {
    !view.left
        && !decommissioned
        && view
            .last_heard_ms
            .is_none_or(|t| now_ms.saturating_sub(t) > stale_ms)
}

/// What `GET /admin/v1/usage` reports, copied out in one hold.
pub struct UsageReport {
    pub totals: [u64; 4],
    /// Every node with usage in the period or known as a peer, with its contribution.
    pub per_node: BTreeMap<NodeId, [u64; 4]>,
    pub this_node: NodeId,
    pub peers: BTreeMap<NodeId, PeerView>,
    pub decommissioned: Vec<NodeId>,
    /// Writers whose seal is missing, with when each was last heard from (self: now).
    pub missing_seals: Vec<(NodeId, Option<u64>)>,
    pub settlement_digest: Option<u64>,
    pub forgotten: bool,
    /// The writer's ticket for a flush covering all of it.
    pub ticket: u64,
}

/// What `GET /admin/v1/cluster` reports.
pub struct ClusterReport {
    pub this_node: NodeId,
    pub this_decommissioned: bool,
    pub members: Vec<NodeRow>,
    /// With a tenant: per quota, `(metric, period, quota, limit, consumed, rights)`.
    pub quotas: Option<Vec<QuotaRow>>,
}

pub struct QuotaRow {
    pub metric: Metric,
    pub period: Period,
    pub quota: u64,
    pub limit: Option<u64>,
    pub consumed: Option<u64>,
    pub rights: Vec<(NodeId, u64)>,
}

impl ControlPlane {
    /// The request path's key check: `presented` was parsed and hashed before the lock;
    /// only the prefix probe and the constant-time comparison happen under it.
    pub fn authenticate(
        &self,
        presented: &Presented<'_>,
        scope: Scopes,
    ) -> Result<Caller, ApiError> {
        auth::check_presented(self.lock().directory(), presented, scope)
    }

    /// Spends the tenant's rights for a request ([`try_admit`], first attempt).
    pub fn admit(&self, tenant: TenantId, bytes_in: u64, now: u64) -> Admission {
        let mut node = self.lock();
        let demands = demands(&node, tenant, bytes_in, now);
        if demands.is_empty() {
            return Admission {
                demands,
                shortfall: None,
            };
        }
        let shortfall = try_admit(&mut node, &demands, now, Attempt::First).err();
        Admission { demands, shortfall }
    }

    /// The same request's attempt after a wait for rights.
    pub fn admit_again(&self, demands: &[(CounterKey, u64)], now: u64) -> Option<Shortfall> {
        try_admit(&mut self.lock(), demands, now, Attempt::Again).err()
    }

    /// Gives back the rights an admitted request spent and did not deliver; requests
    /// waiting for rights are told ([`ControlPlane::rights_freed`]).
    pub fn refund(&self, demands: &[(CounterKey, u64)], now: u64) {
        {
            let mut node = self.lock();
            for (key, amount) in demands {
                // Cannot fail: this node consumed at least `amount` of `key` for this
                // very request, and consumed cells only grow.
                if let Err(error) = node.refund(now, *key, *amount) {
                    tracing::error!(%error, "quota refund refused");
                }
            }
        }
        self.freed.send_modify(|refunds| *refunds += 1);
    }

    /// Bills one request: its usage into this node's ledger slot and its raw record into
    /// the writer's queue, in the same hold (so both land in the same commit). Returns
    /// the ticket to wait on.
    pub fn bill(
        &self,
        tenant: TenantId,
        usage: Usage,
        now: u64,
        record: Pending,
    ) -> Result<u64, IncrementError> {
        let mut node = self.lock();
        let ticket = record_usage(&mut node, tenant, usage, now)?;
        self.push_record(record);
        Ok(ticket)
    }

    /// What a signed URL of `tenant` is checked against (`None`: no such tenant).
    pub fn signing_view(&self, tenant: TenantId) -> Option<SigningView> {
        let node = self.lock();
        let t = node.directory().tenant(tenant).filter(|t| t.exists())?;
        Some(SigningView {
            secrets: t.active_secrets().map(|(_, s)| s.to_vec()).collect(),
            deleted: t.is_deleted(),
            serving: t.is_serving(),
            presets: t
                .presets()
                .map(|(name, options)| (name.to_owned(), options.to_owned()))
                .collect(),
            origins: t.origins().map(str::to_owned).collect(),
            watermark: t.watermark().map(|(file, stamp)| (file.clone(), stamp)),
        })
    }

    /// The tenant's watermark file and the stamp of its version, if it has one.
    pub fn watermark(&self, tenant: TenantId) -> Option<(Arc<[u8]>, Stamp)> {
        let node = self.lock();
        let t = node.directory().tenant(tenant).filter(|t| t.exists())?;
        t.watermark().map(|(file, stamp)| (file.clone(), stamp))
    }

    /// The core's counters and each peer's freshness, for `/metrics`.
    pub fn sync_snapshot(&self, now: u64) -> (Stats, Vec<PeerRow>) {
        let node = self.lock();
        let peers = node
            .peers()
            .iter()
            .map(|(id, view)| {
                (
                    id.to_string(),
                    view.connected,
                    view.last_heard_ms.map(|t| now.saturating_sub(t)),
                    view.lag_ms,
                )
            })
            .collect();
        (node.stats().clone(), peers)
    }

    /// Makes an operator's directory edits, in order, in one hold; returns the ticket
    /// that covers them. The first refused edit stops the rest (those before it stay).
    pub fn edit(&self, now: u64, actor: &str, changes: Vec<Change>) -> Result<u64, DirectoryError> {
        let mut node = self.lock();
        for change in changes {
            node.edit_directory(now, actor, change)?;
        }
        Ok(node.own_changes())
    }

    /// Decommissions `target`; says whether it was already, and the ticket.
    pub fn decommission(
        &self,
        now: u64,
        actor: &str,
        target: NodeId,
    ) -> Result<(bool, u64), DirectoryError> {
        let mut node = self.lock();
        let already = node.directory().is_decommissioned(target);
        node.edit_directory(now, actor, Change::DecommissionNode { node: target })?;
        Ok((already, node.own_changes()))
    }

    /// Up to `limit` live tenants (created, not deleted) after `after`, ascending by id,
    /// looking at [`ROWS_PER_HOLD`] tenants a hold (deleted ones included, so a directory
    /// of deleted tenants does not make one hold long; a page of 1,000 in one hold took up
    /// to ~0.5 ms on a loaded machine: `scripts/bench-operator.sh`).
    pub fn tenants_page(&self, after: Option<TenantId>, limit: usize) -> Vec<TenantRow> {
        let mut page: Vec<TenantRow> = Vec::with_capacity(limit.min(ROWS_PER_HOLD));
        let mut cursor = after;
        while page.len() < limit {
            let node = self.lock();
            let mut ended = true;
            for (id, t) in node.directory().tenants_after(cursor).take(ROWS_PER_HOLD) {
                cursor = Some(id);
                if t.exists() && !t.is_deleted() {
                    page.push(TenantRow::of(id, t));
                    if page.len() == limit {
                        break;
                    }
                }
                ended = false;
            }
            drop(node);
            if ended {
                break;
            }
        }
        page
    }

    /// Live tenants named `name`, by id: a scan in holds of [`ROWS_PER_HOLD`] tenants
    /// (a name is not an index of the directory; this is for admin calls, ~100 holds at
    /// 100K tenants, each a few microseconds).
    pub fn tenants_named(&self, name: &str) -> Vec<TenantId> {
        let mut found = Vec::new();
        let mut cursor = None;
        loop {
            let node = self.lock();
            let mut seen = 0;
            for (id, t) in node.directory().tenants_after(cursor).take(ROWS_PER_HOLD) {
                cursor = Some(id);
                seen += 1;
                if t.exists() && !t.is_deleted() && t.name() == name {
                    found.push(id);
                }
            }
            drop(node);
            if seen < ROWS_PER_HOLD {
                return found;
            }
        }
    }

    /// One tenant with its keys, secrets, origins, quotas and presets.
    pub fn tenant_detail(&self, id: TenantId) -> Option<TenantDetail> {
        let node = self.lock();
        let directory = node.directory();
        let t = directory.tenant(id).filter(|t| t.exists())?;
        let keys = t
            .keys()
            .filter_map(|key| directory.key(key).map(|k| (key, k)))
            .map(|(key, k)| KeyRow {
                id: key,
                prefix: k.prefix().map(str::to_owned),
                label: k.label().to_owned(),
                scopes: k.scopes(),
                created_ms: k.created().map(|m| m.at_ms),
                revoked: k.is_revoked(),
            })
            .collect();
        let primary = t.signing_secret().map(|(id, _)| id);
        Some(TenantDetail {
            row: TenantRow::of(id, t),
            deleted: t.is_deleted(),
            keys,
            secrets: t
                .signing_secrets()
                .map(|(sid, s)| (sid, s.is_active(), Some(sid) == primary))
                .collect(),
            origins: t.origins().map(str::to_owned).collect(),
            quotas: t
                .quotas()
                .map(|(metric, kind, limit, _)| (metric, kind, limit))
                .collect(),
            presets: t
                .presets()
                .map(|(name, options)| (name.to_owned(), options.to_owned()))
                .collect(),
            watermark_bytes: t.watermark().map(|(file, _)| file.len()),
        })
    }

    /// A tenant's audit trail (the directory keeps a per-tenant index: only its ops are
    /// decoded).
    pub fn history(&self, id: TenantId) -> Vec<Op> {
        self.lock().directory().history(id)
    }

    /// Whether `tenant` is known here at all: in the directory, or with usage in `period`.
    fn knows(node: &Node, tenant: TenantId, period: Period) -> bool {
        node.directory().tenant(tenant).is_some_and(|t| t.exists())
            || Metric::ALL
                .iter()
                .any(|m| node.ledger().total(&CounterKey::new(tenant, period, *m)) > 0)
    }

    /// A tenant's merged usage in `period` as this node knows it (`None`: unknown tenant),
    /// with a ticket for the flush that makes it durable.
    pub fn usage_report(&self, tenant: TenantId, period: Period, now: u64) -> Option<UsageReport> {
        let node = self.lock();
        if !Self::knows(&node, tenant, period) {
            return None;
        }
        let ledger = node.ledger();
        let mut per_node: BTreeMap<NodeId, [u64; 4]> = BTreeMap::new();
        let mut totals = [0u64; 4];
        for metric in Metric::ALL {
            let key = CounterKey::new(tenant, period, metric);
            totals[metric.index()] = ledger.total(&key);
            for (origin, value) in ledger.breakdown(&key) {
                per_node.entry(origin).or_default()[metric.index()] = value;
            }
        }
        let peers = node.peers().clone();
        for peer in peers.keys() {
            per_node.entry(*peer).or_default();
        }
        let missing_seals = match node.finality(period) {
            Finality::Final => Vec::new(),
            Finality::Open { missing } => missing
                .into_iter()
                .map(|id| {
                    let last_heard = if id == node.id() {
                        Some(now)
                    } else {
                        peers
                            .get(&id)
                            .and_then(|view| view.last_heard_ms)
                            .or_else(|| node.membership().alive_at_ms(id))
                    };
                    (id, last_heard)
                })
                .collect(),
        };
        Some(UsageReport {
            totals,
            per_node,
            this_node: node.id(),
            peers,
            decommissioned: node.directory().decommissioned().collect(),
            missing_seals,
            settlement_digest: ledger.settlement(period).map(|s| s.digest()),
            forgotten: period.end_ms() <= ledger.forgotten_before_ms(),
            ticket: self.take_ticket(),
        })
    }

    /// The key of `tenant` whose public prefix is `prefix`, if exactly one has it.
    pub fn key_with_prefix(&self, tenant: TenantId, prefix: &str) -> Option<KeyId> {
        let core = self.lock();
        let mut found = core
            .directory()
            .lookup_key(prefix)
            .filter(|m| m.tenant == tenant)
            .map(|m| m.key);
        let key = found.next()?;
        found.next().is_none().then_some(key)
    }

    /// Whether `node` can home a tenant: this node, or a member heard of (directly or by
    /// gossip) that was not decommissioned.
    pub fn can_home(&self, node: NodeId) -> bool {
        let core = self.lock();
        !core.directory().is_decommissioned(node)
            && (node == core.id() || core.peers().contains_key(&node))
    }

    /// Members, freshness and, with a tenant, the escrow rights each node holds for its
    /// quotas in the current periods.
    pub fn cluster_report(&self, tenant: Option<TenantId>, now: u64) -> ClusterReport {
        let node = self.lock();
        let directory = node.directory();
        let peers = node.peers();
        // A decommissioned node stays listed (as such) even where it was never a peer.
        let ids: std::collections::BTreeSet<NodeId> = peers
            .keys()
            .copied()
            .chain(directory.decommissioned())
            .filter(|id| *id != node.id())
            .collect();
        let members = ids
            .into_iter()
            .map(|id| NodeRow {
                id,
                view: peers.get(&id).cloned().unwrap_or_default(),
                decommissioned: directory.is_decommissioned(id),
            })
            .collect();
        let quotas = tenant.map(|tenant| {
            let Some(t) = directory.tenant(tenant) else {
                return Vec::new();
            };
            t.quotas()
                .map(|(metric, kind, quota, _)| {
                    let period = Period::containing(kind, now);
                    let counter = node.escrow().get(&CounterKey::new(tenant, period, metric));
                    QuotaRow {
                        metric,
                        period,
                        quota,
                        limit: counter.map(|c| c.limit()),
                        consumed: counter.map(|c| c.total_consumed() as u64),
                        rights: counter
                            .map(|c| {
                                c.nodes()
                                    .into_iter()
                                    .map(|n| (n, c.local_rights(n)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }
                })
                .collect()
        });
        ClusterReport {
            this_node: node.id(),
            this_decommissioned: directory.is_decommissioned(node.id()),
            members,
            quotas,
        }
    }

    /// Merged totals of `period` for up to `limit` tenants after `after`, ascending: a
    /// compacted period's from its settlement, otherwise summed over the slots of those
    /// tenants only (the ledger's keys are ordered by tenant first).
    pub fn totals_page(
        &self,
        period: Period,
        after: Option<TenantId>,
        limit: usize,
    ) -> Vec<(TenantId, [u64; 4])> {
        let mut page: Vec<(TenantId, [u64; 4])> = Vec::with_capacity(limit.min(ROWS_PER_HOLD));
        let mut cursor = after;
        while page.len() < limit {
            let want = limit - page.len();
            let step = self
                .lock()
                .ledger()
                .totals_page(period, cursor, want, ROWS_PER_HOLD);
            page.extend(step.rows);
            match step.resume_after {
                Some(tenant) => cursor = Some(tenant),
                None => break,
            }
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crdt::directory::Change;
    use tessera_sync::SyncConfig;

    #[test]
    fn a_node_with_no_peer_to_ask_does_not_wait() {
        let now = 1_790_000_000_000;
        let mut node = Node::empty(NodeId(1), SyncConfig::default(), 7, now);
        let tenant = TenantId(5);
        for change in [
            // Homed on a node this one is not connected to: no grant can arrive.
            Change::CreateTenant {
                tenant,
                name: "far".into(),
                home: NodeId(2),
            },
            Change::SetQuota {
                tenant,
                metric: Metric::Requests,
                period: PeriodKind::Month,
                limit: Some(10),
            },
        ] {
            node.edit_directory(now, "test", change).unwrap();
        }
        let demands = demands(&node, tenant, 100, now);
        assert_eq!(demands.len(), 1);
        assert_eq!(
            try_admit(&mut node, &demands, now, Attempt::First),
            Err(Shortfall::Unavailable {
                transfer_possible: false
            })
        );
    }
}
