//! Rebalancing rights toward demand, between requests: idle holders hand what they hold
//! beyond a fair share back to the tenant's home, and the home gives its spare rights to
//! the members it sees consuming faster than their rights cover. Requests
//! (`node/broker.rs`) answer demand a node already has; this moves rights before it is
//! asked for. Split from `node.rs` so the policy reads alone.
//!
//! Why: with traffic moving between nodes, every node that was busy keeps what it had left
//! when the traffic moved on, so the quota ends up in slivers over many idle members. A
//! newly busy node then collects it from many donors, each a round trip that a lossy link
//! turns into a timeout. Handing the excess back to one place (the home, which already
//! grants) keeps the quota in few hands; the fair share each idle member keeps is what it
//! serves from while cut off, as before (docs/PROTOCOL.md, "Rebalancing").
//!
//! Safety is the escrow's: every move is a transfer of the mover's own rights.

use super::*;

/// State of the rebalancing policy (see the module doc).
#[derive(Debug, Default)]
pub(super) struct Rebalance {
    /// Home side: keys homed here whose members' consumption changed since the last pass.
    changed: BTreeSet<CounterKey>,
    /// Home side: per key, when its members' consumption was last read, and what it was.
    seen: BTreeMap<CounterKey, (u64, BTreeMap<NodeId, u64>)>,
    /// When the next home pass is due (`None`: nothing changed).
    pass_due_ms: Option<u64>,
    /// Holder side: keys this node stopped consuming for, with when to hand back their
    /// excess.
    idle: BTreeMap<CounterKey, u64>,
}

impl Rebalance {
    /// The earliest time a rebalancing step is due.
    pub(super) fn next_due_ms(&self) -> Option<u64> {
        let idle = self.idle.values().min().copied();
        match (self.pass_due_ms, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Node {
    /// Notes a merged counter for the home's next pass, if this node is its tenant's home.
    pub(super) fn note_consumption(&mut self, now_ms: u64, key: CounterKey) {
        let interval_ms = self.config.rebalance_interval_ms;
        if interval_ms == 0 || !self.is_home_of(key.tenant) {
            return;
        }
        self.rebalance.changed.insert(key);
        self.rebalance
            .pass_due_ms
            .get_or_insert(now_ms + interval_ms);
    }

    /// Notes that this node stopped consuming for `key`: its excess is handed back after
    /// `rebalance_idle_ms` more without demand.
    pub(super) fn note_idle(&mut self, now_ms: u64, key: CounterKey) {
        if self.config.rebalance_interval_ms == 0 || self.is_home_of(key.tenant) {
            return;
        }
        self.rebalance
            .idle
            .insert(key, now_ms + self.config.rebalance_idle_ms);
    }

    fn is_home_of(&self, tenant: TenantId) -> bool {
        self.directory
            .tenant(tenant)
            .is_some_and(|t| t.home() == self.id)
    }

    /// Runs the rebalancing steps that are due.
    pub(super) fn rebalance_due(&mut self, now_ms: u64) {
        if self.rebalance.pass_due_ms.is_some_and(|due| due <= now_ms) {
            self.rebalance.pass_due_ms = None;
            let keys = std::mem::take(&mut self.rebalance.changed);
            for key in keys {
                self.respread(now_ms, key);
            }
            // Forget readings of periods that ended.
            self.rebalance
                .seen
                .retain(|key, _| key.period.end_ms() > now_ms);
        }
        if self.rebalance.idle.values().any(|due| *due <= now_ms) {
            let due: Vec<CounterKey> = self
                .rebalance
                .idle
                .iter()
                .filter(|(_, due)| **due <= now_ms)
                .map(|(key, _)| *key)
                .collect();
            for key in due {
                self.rebalance.idle.remove(&key);
                self.hand_back(now_ms, key);
            }
        }
    }

    /// The home's pass over `key`: reads each member's consumption since the last pass,
    /// and gives a member whose rights (in this view) cover less than
    /// `rights_request_cover_ms` at that rate the difference, from what the home holds
    /// beyond its own reserve (shared in proportion when it is short), sending the counter
    /// straight to it.
    fn respread(&mut self, now_ms: u64, key: CounterKey) {
        if self.directory.is_decommissioned(self.id) {
            // Its rights were granted again elsewhere: giving them would give twice.
            return;
        }
        let Some(counter) = self.escrow.get(&key) else {
            return;
        };
        let reading: BTreeMap<NodeId, u64> = counter
            .nodes()
            .into_iter()
            .filter(|node| *node != self.id)
            .map(|node| (node, counter.consumed_by(node)))
            .collect();
        let Some((read_ms, before)) = self.rebalance.seen.insert(key, (now_ms, reading.clone()))
        else {
            return;
        };
        let elapsed_ms = now_ms.saturating_sub(read_ms).max(1_000);
        let cover_ms = self.config.rights_request_cover_ms;
        let mut needs: Vec<(NodeId, u64)> = Vec::new();
        for (node, consumed) in &reading {
            let spent = consumed.saturating_sub(before.get(node).copied().unwrap_or(0));
            if spent == 0 || !self.reachable(*node, now_ms) {
                continue;
            }
            let cover = spent.saturating_mul(cover_ms) / elapsed_ms;
            let need = cover.saturating_sub(counter.local_rights(*node));
            if need > 0 {
                needs.push((*node, need));
            }
        }
        let reserve = if self.is_busy(now_ms, &key) {
            self.low_water(&key).saturating_mul(2)
        } else {
            0
        };
        let spare = counter.local_rights(self.id).saturating_sub(reserve);
        let total: u64 = needs.iter().map(|(_, need)| need).sum();
        if spare == 0 || total == 0 {
            return;
        }
        let mut moved = false;
        for (node, need) in needs {
            let share = if total <= spare {
                need
            } else {
                u64::try_from(u128::from(spare) * u128::from(need) / u128::from(total)).unwrap_or(0)
            };
            if share > 0 && self.give(now_ms, key, node, share) {
                self.stats.rights_spread_to_demand =
                    self.stats.rights_spread_to_demand.saturating_add(share);
                moved = true;
            }
        }
        if moved {
            self.touch(key);
            self.schedule_push(now_ms);
        }
    }

    /// A holder idle for `key` since `rebalance_idle_ms`: hands what it holds beyond a
    /// fair share (the limit over the reachable members, itself included) back to the
    /// home, if the home is reachable.
    fn hand_back(&mut self, now_ms: u64, key: CounterKey) {
        // Busy again, leaving (the hand-over moves everything), or decommissioned (its
        // rights were granted again elsewhere): nothing to hand back.
        if self.consumed_at.contains_key(&key)
            || self.leaving
            || self.directory.is_decommissioned(self.id)
        {
            return;
        }
        let Some(home) = self.directory.tenant(key.tenant).map(|t| t.home()) else {
            return;
        };
        if home == self.id || !self.reachable(home, now_ms) {
            return;
        }
        let limit = self.escrow.get(&key).map_or(0, BoundedCounter::limit);
        let fair = limit / (self.reachable_members(now_ms) as u64 + 1);
        let excess = self.local_rights(&key).saturating_sub(fair);
        if excess > 0 && self.give(now_ms, key, home, excess) {
            self.stats.rights_handed_back = self.stats.rights_handed_back.saturating_add(excess);
            self.touch(key);
            self.schedule_push(now_ms);
        }
    }

    /// Transfers `amount` of this node's rights for `key` to `to` and sends `to` the
    /// counter (a push reaches only the fanout; the receiver should not wait for a relay).
    fn give(&mut self, now_ms: u64, key: CounterKey, to: NodeId, amount: u64) -> bool {
        if !self.transfer_rights(now_ms, key, to, amount) {
            return false;
        }
        let counter = self.escrow.get(&key).cloned().unwrap_or_default();
        let budget = self.config.message_bytes_max.saturating_sub(ENVELOPE_BYTES);
        if counter_entry_bytes(&key, &counter) > budget {
            // Too big to send alone: the push and anti-entropy carry it (counted).
            self.stats.counters_oversize += 1;
        } else {
            self.send(to, Message::EscrowPush(vec![(key, counter)]));
        }
        true
    }
}
