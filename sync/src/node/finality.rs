//! Sealing and finality of billing periods (issue #14; docs/PROTOCOL.md, "Finality"): each
//! node seals its own ledger slots of every hour — hence every month — that ended at least
//! `seal_grace_ms` ago, and reads a period as final once it holds the seal of every member
//! that could have written to it. The ledger's seal and the argument that a final total
//! can no longer change are `tessera_crdt::ledger`'s ("Seals and finality"); what this part
//! adds is the set of writers, which only the node knows (its member table, the origins in
//! its ledger, the directory's decommissions). Split from `node.rs` so the rule reads alone.

use tessera_crdt::ledger::Finality;

use super::*;

impl Node {
    /// Seals what `seal_grace_ms` allows: every hour that ended at least that long ago. A
    /// node that was down for weeks seals its old periods at its first tick, after the
    /// usage it had not sent (its own sequence orders them).
    pub(super) fn seal_due(&mut self, now_ms: u64) {
        let through_ms = self.seal_through_ms(now_ms);
        if through_ms > self.ledger.sealed_through(self.id)
            && self.ledger.seal(through_ms).unwrap_or(false)
        {
            self.own_changes += 1;
            self.schedule_push(now_ms);
        }
    }

    /// The seal this node owes at `now_ms`: the start of the hour containing
    /// `now_ms − seal_grace_ms`.
    fn seal_through_ms(&self, now_ms: u64) -> u64 {
        Period::containing(
            PeriodKind::Hour,
            now_ms.saturating_sub(self.config.seal_grace_ms),
        )
        .start_ms()
    }

    /// Refuses a consume or a refund of a counter whose period is sealed here.
    pub(super) fn refuse_sealed(&self, period: Period) -> Result<(), EscrowError> {
        let sealed_through_ms = self.ledger.sealed_through(self.id);
        if period.end_ms() <= sealed_through_ms {
            return Err(EscrowError::PeriodSealed {
                node: self.id,
                sealed_through_ms,
            });
        }
        Ok(())
    }

    /// The members whose seal a period needs before it is final here: this node, every
    /// member in its table (alive, suspect, dead or left: any may hold usage not yet
    /// seen) and every origin in its ledger, less the members an operator decommissioned
    /// (their usage counts as held here: docs/PROTOCOL.md, "Finality").
    pub fn period_writers(&self) -> BTreeSet<NodeId> {
        let mut writers = self.ledger.writers();
        writers.extend(self.membership.members().map(|m| m.node));
        writers.insert(self.id);
        writers.retain(|node| !self.directory.is_decommissioned(*node));
        writers
    }

    /// Whether `period`'s totals are final in this replica, or which writers' seals (or
    /// the usage before them) it still lacks.
    pub fn finality(&self, period: Period) -> Finality {
        self.ledger.finality(period, self.period_writers())
    }
}
