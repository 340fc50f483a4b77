//! Quota policy: the home node turns a tenant's quotas into grants (current and next
//! period) and spreads them over the live members that bill the tenant; every node calls
//! back rights above a lowered quota, declares usage it served unmetered, and counts the
//! rights of decommissioned members as stranded (see "What a quota bounds" in `node.rs`
//! and "Decommission" in docs/PROTOCOL.md). Split from `node.rs` so the policy reads alone.

use super::*;

impl Node {
    /// The home node's duty: turn quota policy into grants (current and next period);
    /// every node's duty: call back rights above a lowered quota.
    pub(super) fn reconcile_quotas(&mut self, now_ms: u64) {
        let hour = Period::containing(PeriodKind::Hour, now_ms);
        let full = self.quotas_dirty || self.quotas_hour != Some(hour);
        if !full && self.quota_tenants.is_empty() {
            return;
        }
        let tenants: Vec<TenantId> = if full {
            self.quotas_dirty = false;
            self.quotas_hour = Some(hour);
            self.quota_tenants.clear();
            self.directory.tenants().map(|(id, _)| id).collect()
        } else {
            std::mem::take(&mut self.quota_tenants)
                .into_iter()
                .collect()
        };
        let mut work: Vec<(CounterKey, u64, bool)> = Vec::new();
        for tenant_id in tenants {
            let Some(tenant) = self.directory.tenant(tenant_id) else {
                continue;
            };
            if !tenant.is_serving() {
                continue;
            }
            let home = tenant.home() == self.id;
            for (metric, kind, quota, _) in tenant.quotas() {
                let current = Period::containing(kind, now_ms);
                for period in [Some(current), current.next()].into_iter().flatten() {
                    work.push((CounterKey::new(tenant_id, period, metric), quota, home));
                }
            }
        }
        for (key, quota, home) in work {
            self.declare_unmetered(now_ms, key);
            // The home grants only what the usage it knows of leaves of the quota.
            // Rights stranded on decommissioned members are granted again (see
            // `stranded`): they count in the limit but can never be spent.
            let quota = quota.saturating_add(self.stranded(&key));
            let target = if home {
                quota.saturating_sub(self.undeclared_usage(&key))
            } else {
                quota
            };
            let limit = self.escrow.get(&key).map_or(0, BoundedCounter::limit);
            if limit > target {
                let retired = self
                    .escrow
                    .counter_mut(key)
                    .call_back(self.id, target)
                    .unwrap_or(0);
                if retired > 0 {
                    self.touch(key);
                    self.schedule_push(now_ms);
                }
            }
            if home {
                let deficit = self.escrow.get(&key).map_or(target, |c| c.deficit(target));
                if deficit > 0 && self.escrow.counter_mut(key).grant(self.id, deficit).is_ok() {
                    if self.config.spread_grants {
                        self.spread(now_ms, key, deficit);
                    }
                    self.touch(key);
                    self.schedule_push(now_ms);
                }
            }
        }
    }

    /// Rights of `key` held, in this view, by members an operator decommissioned: the
    /// documented rule for recovering them (docs/PROTOCOL.md, "Decommission"). A
    /// decommissioned member spends and gives nothing any more (it refuses its own
    /// consumes once it hears of it, and its messages are refused everywhere), so the
    /// quota's limit is raised by what it holds and the home grants that much again. A view
    /// that later shows it gave some away before it died (a transfer that had not reached
    /// the home yet) lowers the target: every node calls its excess back, as for a lowered
    /// quota. Only for members gone for good.
    pub(super) fn stranded(&self, key: &CounterKey) -> u64 {
        let Some(counter) = self.escrow.get(key) else {
            return 0;
        };
        self.directory
            .decommissioned()
            .map(|node| counter.local_rights(node))
            .fold(0u64, u64::saturating_add)
    }

    /// Records in the counter of `key` the usage this node billed for it without spending
    /// rights (its ledger slot beyond its net consumption: served before it knew of the
    /// quota), so it counts against the quota (`BoundedCounter::declare_unmetered`). Usage
    /// admitted and not billed yet only makes the difference smaller for now: it is declared
    /// at a later pass if it is never matched by a consume.
    pub(super) fn declare_unmetered(&mut self, now_ms: u64, key: CounterKey) {
        let billed = self.ledger.slot(&key, self.id).value;
        let metered = self.escrow.get(&key).map_or(0, |c| c.refundable(self.id));
        let unmetered = billed.saturating_sub(metered);
        if unmetered > 0
            && self
                .escrow
                .counter_mut(key)
                .declare_unmetered(self.id, unmetered)
                .is_ok()
        {
            self.touch(key);
            self.schedule_push(now_ms);
        }
    }

    /// The home's reserve: usage of `key` in this node's ledger billed by nodes that, in
    /// this view, have neither consumed nor declared anything for it (all they billed was
    /// served without rights; they declare it once they hear of the quota, and from then
    /// on their usage is in the counter).
    pub(super) fn undeclared_usage(&self, key: &CounterKey) -> u64 {
        let counter = self.escrow.get(key);
        self.ledger
            .breakdown(key)
            .into_iter()
            .filter(|(origin, _)| counter.is_none_or(|c| c.consumed_by(*origin) == 0))
            .fold(0u64, |sum, (_, billed)| sum.saturating_add(billed))
    }

    /// Gives an equal share of a new grant to each live member that billed the tenant's
    /// metric this month, in this view (the home keeps its share and the remainder; with
    /// no such member, all of it). Rights go where demand was: spread over every identity
    /// ever seen, they strand on dead members and shrink every live node's share as the
    /// fleet grows; a member with new demand asks for rights (see `request_size`).
    pub(super) fn spread(&mut self, now_ms: u64, key: CounterKey, amount: u64) {
        let month = CounterKey::new(
            key.tenant,
            Period::containing(PeriodKind::Month, now_ms),
            key.metric,
        );
        let stale_ms = self.config.peer_stale_ms;
        let members: Vec<NodeId> = self
            .ledger
            .breakdown(&month)
            .into_iter()
            .filter(|(origin, billed)| {
                *billed > 0
                    && !self.directory.is_decommissioned(*origin)
                    && self.peers.get(origin).is_some_and(|p| {
                        !p.left
                            && (p.connected
                                || p.last_heard_ms
                                    .is_some_and(|t| now_ms.saturating_sub(t) <= stale_ms))
                    })
            })
            .map(|(origin, _)| origin)
            .collect();
        let share = amount / (members.len() as u64 + 1);
        if share == 0 {
            return;
        }
        for member in members {
            // Rights just granted are held: a transfer of a share cannot fail.
            let _ = self
                .escrow
                .counter_mut(key)
                .transfer(self.id, member, share);
        }
    }
}
