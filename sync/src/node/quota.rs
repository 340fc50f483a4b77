//! Quota policy: the home node turns a tenant's quotas into grants (current and next
//! period) and spreads them over the live members that bill the tenant; every node calls
//! back rights above a lowered quota, declares usage it served unmetered, and counts the
//! rights of decommissioned members as stranded (see "What a quota bounds" in `node.rs`
//! and "Decommission" in docs/PROTOCOL.md). Split from `node.rs` so the policy reads alone.

use super::*;

/// Tenants one step of the full quota pass looks at: ~2 µs each at 100K tenants when every
/// one needs its grants created (the first pass after start), with the flushes that push
/// those grants to the peers. 128: a step and the flush after it stay near a millisecond
/// (at 256, the first minute after a start at 100K tenants had ~130 ticks over 1 ms, the
/// longest 4.7-4.9 ms; at 128, 28-65 and 2.1-2.3 ms, on a loaded 2-vCPU VM).
pub(super) const QUOTA_SWEEP_TENANTS: usize = 128;

/// Time between two steps of the full quota pass: leaves the lock to the request path
/// between steps, and ends a pass over 100K tenants in about 4 s.
pub(super) const QUOTA_STEP_MS: u64 = 5;

/// A full quota pass in progress (see [`Node::reconcile_quotas`]).
#[derive(Debug)]
pub(super) struct QuotaSweep {
    /// The last tenant (by id) a step looked at; `None`: none yet.
    after: Option<TenantId>,
    /// When the next step is due.
    due_ms: u64,
    /// Tenants not reached yet that were reconciled because they consumed: the step that
    /// reaches them skips them.
    done_early: IdHashSet<TenantId>,
}

impl Node {
    /// The home node's duty: turn quota policy into grants (current and next period);
    /// every node's duty: call back rights above a lowered quota.
    ///
    /// Tenants whose ops arrived (or that a refund touched) since the last call are looked
    /// at now, whatever their number (it is that of the changes). A *full pass* over every
    /// tenant is due at start, every new hour (new hourly periods; a new month brings new
    /// monthly ones) and after a decommission (stranded rights); it is not made in one
    /// call: it is started here and walked in steps of [`QUOTA_SWEEP_TENANTS`] tenants by
    /// [`Node::quota_sweep_step`], one step per tick, a step every [`QUOTA_STEP_MS`] (the
    /// node asks to be woken for it). Bound: a pass over `T` tenants ends within
    /// `ceil(T / QUOTA_SWEEP_TENANTS) × QUOTA_STEP_MS` plus the steps' own time — about
    /// 4 s at 100K tenants, far inside the hour it serves. A tenant the pass has not reached
    /// is reconciled alone before it consumes ([`Node::reconcile_unswept`]), so "every
    /// consume runs the quota pass first" (its declaration before its first consume, see
    /// "What a quota bounds") still holds; only what the pass does for tenants that do not
    /// consume (a home's grant for a next period, a call-back, stranded rights granted again)
    /// happens up to that bound later than it did when the pass was one call (~100 ms under
    /// the node's lock at 100K tenants; 200-500 ms for the first, which creates every
    /// grant).
    pub(super) fn reconcile_quotas(&mut self, now_ms: u64) {
        let hour = Period::containing(PeriodKind::Hour, now_ms);
        if self.quotas_dirty || self.quotas_hour != Some(hour) {
            self.quotas_dirty = false;
            self.quotas_hour = Some(hour);
            // (Re)started from the first tenant: one started earlier may have passed
            // tenants whose stranded rights changed since.
            self.quota_sweep = Some(QuotaSweep {
                after: None,
                due_ms: now_ms,
                done_early: IdHashSet::default(),
            });
            // The pass creates each tenant's counters for the current and the next
            // period. Sized ahead for one quota a tenant, the book's table grows here, in
            // one allocation while it is small (a first pass at start), instead of
            // rehashing every counter inside whichever step crosses its load factor (a
            // 34-48 ms step at 100K tenants); the digest, one hash a counter, likewise.
            // Tenants without a quota cost the unused slots; tenants with several still
            // grow the tables later.
            let counters = 2 * self.directory.tenants_seen();
            self.escrow.reserve_total(counters);
            self.escrow_digest.reserve_total(counters);
        }
        if self.quota_tenants.is_empty() {
            return;
        }
        let tenants: Vec<TenantId> = std::mem::take(&mut self.quota_tenants)
            .into_iter()
            .collect();
        self.reconcile_tenants(now_ms, tenants);
    }

    /// One step of the full pass in progress, if one is due: the next
    /// [`QUOTA_SWEEP_TENANTS`] tenants after the last one it looked at (by id). Returns how
    /// many tenants it looked at (for tests).
    pub(super) fn quota_sweep_step(&mut self, now_ms: u64) -> usize {
        let Some(sweep) = self.quota_sweep.as_mut() else {
            return 0;
        };
        if sweep.due_ms > now_ms {
            return 0;
        }
        let batch: Vec<TenantId> = self
            .directory
            .tenants_after(sweep.after)
            .take(QUOTA_SWEEP_TENANTS)
            .map(|(id, _)| id)
            .collect();
        let looked_at = batch.len();
        let tenants: Vec<TenantId> = batch
            .iter()
            .copied()
            .filter(|t| !sweep.done_early.contains(t))
            .collect();
        match batch.last() {
            Some(last) if looked_at == QUOTA_SWEEP_TENANTS => {
                sweep.after = Some(*last);
                sweep.due_ms = retry_at(now_ms, QUOTA_STEP_MS);
            }
            // The last tenant was in this step.
            _ => self.quota_sweep = None,
        }
        self.reconcile_tenants(now_ms, tenants);
        looked_at
    }

    /// When the next step of the full pass is due (`None`: no pass in progress).
    pub(super) fn quota_sweep_due_ms(&self) -> Option<u64> {
        self.quota_sweep.as_ref().map(|sweep| sweep.due_ms)
    }

    /// Before `tenant` consumes: if a full pass is in progress and has not reached it yet,
    /// it is reconciled now (once per pass), as the pass made in one call did before any
    /// consume.
    pub(super) fn reconcile_unswept(&mut self, now_ms: u64, tenant: TenantId) {
        let Some(sweep) = self.quota_sweep.as_mut() else {
            return;
        };
        if sweep.after.is_some_and(|after| tenant <= after) || !sweep.done_early.insert(tenant) {
            return;
        }
        self.reconcile_tenants(now_ms, vec![tenant]);
    }

    /// Grants, declarations and call-backs for these tenants' quotas (see
    /// [`Node::reconcile_quotas`]).
    fn reconcile_tenants(&mut self, now_ms: u64, tenants: Vec<TenantId>) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crdt::directory::Change;
    use tessera_crdt::Metric;

    const HOME: NodeId = NodeId(1);
    const QUOTA: u64 = 1_000;

    /// A node homing `count` tenants, each with a monthly requests quota, fresh from its
    /// store (the full pass is due).
    fn node_with_tenants(count: u64, now_ms: u64) -> (Node, Vec<TenantId>) {
        let mut directory = Directory::new(HOME);
        let tenants: Vec<TenantId> = (1..=count).map(|i| TenantId(i * 7)).collect();
        for (i, tenant) in tenants.iter().enumerate() {
            for change in [
                Change::CreateTenant {
                    tenant: *tenant,
                    name: format!("t{i}"),
                    home: HOME,
                },
                Change::SetQuota {
                    tenant: *tenant,
                    metric: Metric::Requests,
                    period: PeriodKind::Month,
                    limit: Some(QUOTA),
                },
            ] {
                directory.change(now_ms, "test", change).unwrap();
            }
        }
        let state = NodeState {
            ledger: Ledger::new(HOME),
            directory,
            escrow: EscrowBook::new(),
        };
        let node = Node::new(HOME, SyncConfig::default(), 7, state, now_ms);
        (node, tenants)
    }

    fn month_key(tenant: TenantId, now_ms: u64) -> CounterKey {
        CounterKey::new(
            tenant,
            Period::containing(PeriodKind::Month, now_ms),
            Metric::Requests,
        )
    }

    #[test]
    fn the_full_pass_goes_in_bounded_steps_and_ends_within_its_bound() {
        let count = 3 * QUOTA_SWEEP_TENANTS as u64 + 10;
        let start = 1_800_000_000_000;
        let (mut node, tenants) = node_with_tenants(count, start);
        let steps = count.div_ceil(QUOTA_SWEEP_TENANTS as u64);
        let mut now = start;
        let mut ticks = 0;
        // The first tick starts the pass (due since `Node::new`) and makes its first step.
        loop {
            let before = node.escrow().iter().count();
            node.handle(now, Input::Tick);
            let made = node.escrow().iter().count() - before;
            // Two periods (this month and the next) per tenant, at most a step's tenants.
            assert!(
                made <= 2 * QUOTA_SWEEP_TENANTS,
                "{made} counters in one tick"
            );
            ticks += 1;
            assert!(ticks <= steps, "the pass took more than {steps} steps");
            if node.quota_sweep.is_none() {
                break;
            }
            now = node.next_wakeup_ms();
        }
        assert_eq!(ticks, steps);
        // Done within the documented bound: a step every QUOTA_STEP_MS.
        assert!(now - start <= steps * QUOTA_STEP_MS + QUOTA_STEP_MS);
        assert_eq!(node.escrow().iter().count() as u64, 2 * count);
        for tenant in tenants {
            assert_eq!(node.local_rights(&month_key(tenant, now)), QUOTA);
        }
    }

    #[test]
    fn the_first_pass_sizes_the_escrow_book_once_before_its_steps() {
        // Without the reservation the table doubles inside the steps (a rehash of every
        // counter under the lock, tens of ms at 100K tenants); with it, never after the
        // first tick.
        let count = 8 * QUOTA_SWEEP_TENANTS as u64;
        let mut now = 1_800_000_000_000;
        let (mut node, _) = node_with_tenants(count, now);
        node.handle(now, Input::Tick);
        let capacity = node.escrow().capacity();
        assert!(capacity >= 2 * count as usize, "{capacity}");
        while node.quota_sweep.is_some() {
            now = node.next_wakeup_ms();
            node.handle(now, Input::Tick);
            assert_eq!(
                node.escrow().capacity(),
                capacity,
                "the table grew mid-pass"
            );
        }
        assert_eq!(node.escrow().len() as u64, 2 * count);
    }

    #[test]
    fn a_tenant_the_pass_has_not_reached_is_reconciled_before_it_consumes() {
        let count = 2 * QUOTA_SWEEP_TENANTS as u64;
        let start = 1_800_000_000_000;
        let (mut node, tenants) = node_with_tenants(count, start);
        node.handle(start, Input::Tick);
        let last = *tenants.last().unwrap();
        let key = month_key(last, start);
        assert_eq!(node.local_rights(&key), 0, "the first step stops before it");
        node.consume(start + 1, key, 1)
            .expect("granted before the consume");
        assert_eq!(node.local_rights(&key), QUOTA - 1);
        // The step that reaches it does not grant it again.
        while node.quota_sweep.is_some() {
            let now = node.next_wakeup_ms();
            node.handle(now, Input::Tick);
        }
        assert_eq!(node.local_rights(&key), QUOTA - 1);
        assert_eq!(node.escrow().get(&key).unwrap().limit(), QUOTA);
    }

    #[test]
    fn a_sealed_month_s_counters_are_forgotten_in_bounded_steps() {
        // More tenants than one tick forgets: the month's counters go over two ticks,
        // the second one due at once, and none of them is spent meanwhile.
        let count = super::super::finality::FORGET_STEP as u64 + 100;
        let mut now = 1_800_000_000_000;
        let (mut node, tenants) = node_with_tenants(count, now);
        while {
            node.handle(now, Input::Tick);
            node.quota_sweep.is_some()
        } {
            now = node.next_wakeup_ms();
        }
        let month = Period::containing(PeriodKind::Month, now);
        let of_month = |node: &Node| {
            node.escrow()
                .iter()
                .filter(|(k, _)| k.period == month)
                .count() as u64
        };
        assert_eq!(of_month(&node), count);
        // Well after the month ended and its seal's grace passed.
        now = month.end_ms() + 86_400_000;
        node.handle(now, Input::Tick);
        assert_eq!(
            of_month(&node),
            100,
            "one step forgets FORGET_STEP counters"
        );
        assert!(node.next_wakeup_ms() <= now + 1, "the rest is due at once");
        let key = CounterKey::new(*tenants.last().unwrap(), month, Metric::Requests);
        assert!(
            node.consume(now, key, 1).is_err(),
            "a sealed month's rights are inert"
        );
        node.handle(node.next_wakeup_ms(), Input::Tick);
        assert_eq!(of_month(&node), 0);
    }

    #[test]
    fn a_new_hour_starts_a_new_pass() {
        let start = 1_800_000_000_000;
        let (mut node, _) = node_with_tenants(10, start);
        node.handle(start, Input::Tick);
        assert!(node.quota_sweep.is_none(), "10 tenants: one step");
        let next_hour = Period::containing(PeriodKind::Hour, start).end_ms();
        node.handle(next_hour - 1, Input::Tick);
        assert!(node.quota_sweep.is_none());
        node.reconcile_quotas(next_hour);
        assert!(node.quota_sweep.is_some());
        assert_eq!(node.quota_sweep_step(next_hour), 10);
        assert!(node.quota_sweep.is_none());
    }
}
