//! Sealing, finality and compaction of billing periods (issue #14; docs/PROTOCOL.md,
//! "Finality" and "Compaction"): each node seals its own ledger slots of every hour — hence
//! every month — that ended at least `seal_grace_ms` ago (and forgets its escrow counters
//! of those periods), reads a period as final once it holds the seal of every member that
//! could have written to it, and compacts a final period `compact_after_ms` after its end
//! into its settlement, which a peer that may lack its slots receives part by part. The ledger's seal and the argument that a final total
//! can no longer change are `tessera_crdt::ledger`'s ("Seals and finality"); what this part
//! adds is the set of writers, which only the node knows (its member table, the origins in
//! its ledger, the directory's decommissions). Split from `node.rs` so the rule reads alone.

use tessera_crdt::ledger::Finality;
use tessera_crdt::settlement::{Assembly, Resume, SettlementPart};

use super::*;

/// How often the compaction pass looks for periods due (a pass walks the periods held,
/// a handful).
const COMPACTION_CHECK_MS: u64 = 60_000;

/// How often a sweep of the directory's log starts.
const DIRECTORY_COMPACTION_MS: u64 = 3_600_000;
/// Entries one step of a sweep looks at, under the node's lock: 2,000 decode in a few
/// hundred µs (a 20K-entry step took 2-3 ms on a quiet machine, more on a loaded one,
/// against a goal of no hold over 1 ms; a whole 400K-op log took 40-80 ms).
const DIRECTORY_COMPACTION_STEP_OPS: usize = 2_000;
/// Between two steps of a sweep: 400K entries are swept in ~17 minutes.
const DIRECTORY_COMPACTION_STEP_MS: u64 = 5_000;

/// State of the periods' life cycle (see the module doc).
#[derive(Debug)]
pub(super) struct Periods {
    /// No seal before this: a node whose store held none of its own entries waits
    /// `seal_grace_ms` after its start (see [`Node::seal_due`]).
    first_seal_ms: u64,
    /// Settlements being received, by the peer sending them.
    assemblies: BTreeMap<NodeId, Assembly>,
    /// Settlements made or taken here since the last [`Node::take_changes`].
    pub(super) persist_settled: Vec<Settlement>,
    /// Origins retired here since the last [`Node::take_changes`].
    pub(super) persist_retired: Vec<NodeId>,
    /// The latest sweep of forgotten counters since the last [`Node::take_changes`].
    pub(super) persist_forgotten_ms: Option<u64>,
    /// The ledger's forgotten-settlements watermark, when it moved since the last
    /// [`Node::take_changes`].
    pub(super) persist_settlements_forgotten_ms: Option<u64>,
    /// When the compaction pass runs next.
    next_compaction_ms: u64,
    /// When the directory's log is compacted next, and where the sweep stands.
    next_directory_compaction_ms: u64,
    directory_cursor: tessera_crdt::directory::CompactCursor,
    /// This node's seal when its escrow counters were last swept.
    escrow_swept_through_ms: u64,
}

impl Periods {
    /// At start, sealing from `first_seal_ms` on.
    pub(super) fn new(first_seal_ms: u64) -> Periods {
        Periods {
            first_seal_ms,
            assemblies: BTreeMap::new(),
            persist_settled: Vec::new(),
            persist_retired: Vec::new(),
            persist_forgotten_ms: None,
            persist_settlements_forgotten_ms: None,
            next_compaction_ms: 0,
            next_directory_compaction_ms: 0,
            directory_cursor: tessera_crdt::directory::CompactCursor::default(),
            escrow_swept_through_ms: 0,
        }
    }

    /// Where a settlement from `peer` stands, for the next pull to it.
    pub(super) fn resume(&self, peer: NodeId) -> Option<Resume> {
        self.assemblies.get(&peer).map(Assembly::resume)
    }
}

/// Counters of sealed periods one tick forgets: at a month's end every tenant's monthly
/// counters go at once (100K at the brief's scale, each removed from the book and five
/// per-key tables, tens of ms in one call); in steps of this many a tick holds the lock
/// about a millisecond at most, and the rest goes over the next ticks, a millisecond apart.
pub(super) const FORGET_STEP: usize = 2_048;

impl Node {
    /// Seals what `seal_grace_ms` allows: every hour that ended at least that long ago. A
    /// node that was down for weeks seals its old periods at its first tick, after the
    /// usage it had not sent (its own sequence orders them). A node that starts with none
    /// of its own entries in its store waits `seal_grace_ms` first: were it an identity
    /// reused on an empty disk, a seal written at once would take a sequence number its
    /// earlier life already used, and the peers' copies of that life's entries below it
    /// would never be sent back to it; by then it has pulled them. (A fresh node has
    /// written nothing to seal: the wait only delays periods that ended just before it
    /// joined.) Returns whether counters of sealed periods are left to forget (a backlog:
    /// tick again at once).
    pub(super) fn seal_due(&mut self, now_ms: u64) -> bool {
        if now_ms < self.periods.first_seal_ms {
            return false;
        }
        let through_ms = self.seal_through_ms(now_ms);
        if through_ms > self.ledger.sealed_through(self.id)
            && self.ledger.seal(through_ms).unwrap_or(false)
        {
            self.own_changes += 1;
            self.schedule_push(now_ms);
        }
        let sealed_ms = self.ledger.sealed_through(self.id);
        if sealed_ms > self.periods.escrow_swept_through_ms {
            if !self.forget_sealed_counters(sealed_ms) {
                return true;
            }
            self.periods.escrow_swept_through_ms = sealed_ms;
        }
        false
    }

    /// Forgets the escrow counters of periods sealed here: their rights can be neither
    /// spent nor given back (`refuse_sealed`), and the ledger is the bill. Hourly quotas
    /// would otherwise leave one counter per tenant per hour for ever. Their copies from
    /// peers are ignored from now on (`is_sealed_here`). At most [`FORGET_STEP`] counters a
    /// call; returns whether none is left. Those left for the next ticks are already
    /// inert: their rights are refused, their copies from peers ignored.
    fn forget_sealed_counters(&mut self, sealed_ms: u64) -> bool {
        self.periods.persist_forgotten_ms = Some(sealed_ms);
        let gone = self.escrow.forget_through(sealed_ms, FORGET_STEP);
        let done = gone.len() < FORGET_STEP;
        for key in gone {
            self.escrow_digest.remove(&key);
            self.escrow_dirty.remove(&key);
            self.persist_dirty.remove(&key);
            self.escrow_relay.remove(&key);
            self.requests.remove(&key);
            self.stats.escrow_counters_dropped += 1;
        }
        done
    }

    /// Whether `period` is sealed on this node (its counters forgotten, its slots final).
    pub(super) fn is_sealed_here(&self, period: Period) -> bool {
        period.end_ms() <= self.ledger.sealed_through(self.id)
    }

    /// Compacts every period final here whose end is `compact_after_ms` old, then retires
    /// every decommissioned member left with no usage slot here (at most once a minute;
    /// 0: never).
    pub(super) fn compact_due(&mut self, now_ms: u64) {
        let after_ms = self.config.compact_after_ms;
        if after_ms == 0 || now_ms < self.periods.next_compaction_ms {
            return;
        }
        self.periods.next_compaction_ms = now_ms + COMPACTION_CHECK_MS;
        let due: Vec<Period> = self
            .ledger
            .periods()
            .filter(|period| period.end_ms().saturating_add(after_ms) <= now_ms)
            .collect();
        if !due.is_empty() {
            let writers = self.period_writers();
            for period in due {
                if let Some(settlement) = self.ledger.compact(period, writers.iter().copied()) {
                    self.stats.periods_compacted += 1;
                    self.periods.persist_settled.push(settlement);
                }
            }
        }
        let gone: Vec<NodeId> = self.directory.decommissioned().collect();
        for node in gone {
            if self.ledger.retire(node) {
                self.stats.identities_retired += 1;
                self.periods.persist_retired.push(node);
            }
        }
        let keep_ms = self.config.settlement_keep_ms;
        if keep_ms > 0 {
            let settled = self.ledger.settled_periods().count();
            let before = self.ledger.forgotten_before_ms();
            let now = self.ledger.forget_settled(now_ms.saturating_sub(keep_ms));
            if now != before {
                self.stats.settlements_forgotten +=
                    (settled - self.ledger.settled_periods().count()) as u64;
                self.periods.persist_settlements_forgotten_ms = Some(now);
            }
        }
    }

    /// Folds the directory's superseded edits older than `directory_audit_keep_ms`: a
    /// sweep of the log starts hourly and goes a bounded step every 5 s (0: never). Not
    /// persisted by itself: the store's next snapshot writes the compacted log, and a
    /// restart from the older log compacts again.
    pub(super) fn compact_directory_due(&mut self, now_ms: u64) {
        let keep_ms = self.config.directory_audit_keep_ms;
        if keep_ms == 0 || now_ms < self.periods.next_directory_compaction_ms {
            return;
        }
        let (folded, swept) = self.directory.compact_step(
            now_ms.saturating_sub(keep_ms),
            &mut self.periods.directory_cursor,
            DIRECTORY_COMPACTION_STEP_OPS,
        );
        self.stats.directory_ops_compacted += folded as u64;
        self.periods.next_directory_compaction_ms = now_ms
            + if swept {
                DIRECTORY_COMPACTION_MS
            } else {
                DIRECTORY_COMPACTION_STEP_MS
            };
    }

    /// A part of a settlement this node lacks, from `from` (an answer to its pull):
    /// assembled in order; once whole and checked, the period's slots here are replaced by
    /// it. Either way the next pull goes out at once (for the next part, or the chunks).
    pub(super) fn take_settlement_part(&mut self, now_ms: u64, from: NodeId, part: SettlementPart) {
        self.pulls_in_flight.remove(&from);
        if self.ledger.settlement(part.period).is_some() {
            self.periods.assemblies.remove(&from);
            return;
        }
        let step = match self.periods.assemblies.remove(&from) {
            Some(assembly) if part.after.is_some() => assembly.take(part),
            _ => Assembly::start(part),
        };
        match step {
            Ok(Ok(settlement)) => {
                // Refused when its period is forgotten here: nothing to keep or persist.
                if self.ledger.apply_settlement(settlement.clone()) {
                    self.periods.persist_settled.push(settlement);
                    self.stats.settlements_received += 1;
                } else {
                    self.stats.settlement_parts_refused += 1;
                }
            }
            Ok(Err(assembly)) => {
                self.periods.assemblies.insert(from, assembly);
            }
            Err(_) => self.stats.settlement_parts_refused += 1,
        }
        self.send_pull(now_ms, from);
    }

    /// When the next seal is due: an hour after the last one's end, plus the grace (an
    /// idle node must not wait for another timer to seal).
    pub(super) fn next_seal_ms(&self) -> u64 {
        let sealed_ms = self.ledger.sealed_through(self.id);
        let due_ms = if sealed_ms == 0 {
            0
        } else {
            sealed_ms
                .saturating_add(3_600_000)
                .saturating_add(self.config.seal_grace_ms)
        };
        due_ms.max(self.periods.first_seal_ms)
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
        if self.is_sealed_here(period) {
            return Err(EscrowError::PeriodSealed {
                node: self.id,
                sealed_through_ms: self.ledger.sealed_through(self.id),
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
