//! The journal's replication: applying ledger deltas and directory ops from peers (only
//! what extends each origin's prefix), and the pull anti-entropy that repairs what pushes
//! missed (a round with one random peer, the exchange on connect, queued one at a time
//! after a heal). Split from `node.rs` so the repair path reads alone.

use super::*;

impl Node {
    /// Applies what of `delta` starts within this replica's prefixes (pulling the rest
    /// from `from`) and returns that part if it brought anything new.
    pub(super) fn apply_ledger(
        &mut self,
        now_ms: u64,
        from: NodeId,
        delta: &Delta,
    ) -> Result<Option<Delta>, MessageError> {
        // Everything it carries is within what this replica already holds (a complete
        // prefix per origin): a duplicate or a replay.
        let vv = self.ledger.version_vector();
        let stale = delta.parts.iter().all(|p| vv.get(p.origin) >= p.to_seq);
        // A part that starts beyond what this replica holds of its origin (a push after
        // pushes lost to a partition) is not applied: its slots would sit past the version
        // vector, where no pull answer carries them on, so if the origin then vanished (a
        // wiped node) this replica would show usage it could never pass on, and the bill
        // would read differently here for ever. The sender holds the gap: pull it.
        if delta.parts.iter().any(|p| p.from_seq > vv.get(p.origin)) {
            let contiguous = Delta {
                parts: delta
                    .parts
                    .iter()
                    .filter(|p| p.from_seq <= vv.get(p.origin))
                    .cloned()
                    .collect(),
            };
            self.stats.ledger_gaps += 1;
            self.send_pull(now_ms, from);
            self.apply_contiguous(&contiguous, stale)?;
            return Ok((!stale && !contiguous.parts.is_empty()).then_some(contiguous));
        }
        self.apply_contiguous(delta, stale)?;
        Ok((!stale && !delta.parts.is_empty()).then(|| delta.clone()))
    }

    /// Applies a delta whose parts each start within what this replica holds.
    pub(super) fn apply_contiguous(
        &mut self,
        delta: &Delta,
        stale: bool,
    ) -> Result<(), MessageError> {
        if delta.parts.is_empty() {
            return Ok(());
        }
        self.ledger.apply_delta(delta)?;
        if stale {
            self.stats.messages_stale += 1;
        } else {
            // Usage from a node that has not declared anything for a quota'd counter: the
            // home grants that much less (see `undeclared_usage`), so look again.
            for part in &delta.parts {
                for entry in &part.entries {
                    if self
                        .escrow
                        .get(&entry.key)
                        .is_some_and(|c| c.consumed_by(part.origin) == 0)
                    {
                        self.quota_tenants.insert(entry.key.tenant);
                    }
                }
            }
            self.persist_ledger.push(delta.clone());
        }
        Ok(())
    }

    /// Stages a peer's ops (held, enforced by [`Node::promote`] once durable); returns
    /// how many were new.
    pub(super) fn stage_directory(
        &mut self,
        delta: &DirectoryDelta,
    ) -> Result<usize, MessageError> {
        let report = self.directory.stage_delta(delta)?;
        if report.applied == 0 {
            self.stats.messages_stale += 1;
        }
        Ok(report.applied)
    }

    pub(super) fn answer_pull(
        &mut self,
        now_ms: u64,
        from: NodeId,
        digest: &VersionVector,
        settled: &[Period],
        forgotten_before_ms: u64,
        resume: Option<tessera_crdt::settlement::Resume>,
    ) {
        // A period compacted here that the puller may lack slots of: the settlement
        // first, part by part; no chunk moves its prefix past the dropped slots before.
        let entries_max = self.config.ledger_entries_max;
        let part = self
            .ledger
            .settlements_lacked_by(digest, settled)
            .find(|settlement| settlement.period.end_ms() > forgotten_before_ms)
            .map(|settlement| {
                let after = resume
                    .filter(|r| r.period == settlement.period && r.digest == settlement.digest())
                    .and_then(|r| r.after);
                settlement.part(after, entries_max)
            });
        if let Some(part) = part {
            self.send(from, Message::SettlementPart(part));
            return;
        }
        let delta = self
            .ledger
            .delta_since(digest, self.config.ledger_entries_max);
        let mut after = digest.clone();
        delta.advance(&mut after);
        let more = !self.ledger.version_vector().is_covered_by(&after);
        self.send(from, Message::LedgerChunk { delta, more });
        // The puller holds something we lack: pull it back.
        if !digest.is_covered_by(self.ledger.version_vector()) {
            self.send_pull(now_ms, from);
        }
    }

    pub(super) fn send_pull(&mut self, now_ms: u64, to: NodeId) {
        if self
            .pulls_in_flight
            .get(&to)
            .is_some_and(|sent| now_ms.saturating_sub(*sent) < self.config.pull_timeout_ms)
        {
            return;
        }
        self.pulls_in_flight.insert(to, now_ms);
        let digest = self.ledger.version_vector().clone();
        let settled = self
            .ledger
            .settled_periods()
            .rev()
            .take(SETTLED_MAX)
            .collect();
        let resume = self.periods.resume(to);
        self.send(
            to,
            Message::LedgerPull {
                digest,
                settled,
                forgotten_before_ms: self.ledger.forgotten_before_ms(),
                resume,
            },
        );
    }

    pub(super) fn anti_entropy_round(&mut self, now_ms: u64) {
        let peers = self.connected_peers();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.rng.below(peers.len() as u64) as usize];
        self.sync_with(now_ms, peer);
    }

    /// One anti-entropy exchange with `peer`: member tables, directory sync, ledger pull,
    /// escrow digest. The directory goes before the ledger: the peer answers in that order
    /// on the same connection, so a revocation is not queued behind a ledger chunk (up to
    /// `ledger_entries_max` entries) on a slow link.
    pub(super) fn sync_with(&mut self, now_ms: u64, peer: NodeId) {
        self.send_members(now_ms, peer, true);
        let start = self.directory.sync_start();
        self.send(peer, Message::Directory(start));
        self.pulls_in_flight.remove(&peer);
        self.send_pull(now_ms, peer);
        let root = self.escrow_digest().root();
        self.send(peer, Message::EscrowDigest { root });
    }

    /// Whether a ledger pull is in flight and not timed out (an exchange is under way).
    pub(super) fn exchange_in_flight(&self, now_ms: u64) -> bool {
        self.pulls_in_flight
            .values()
            .any(|sent_ms| now_ms.saturating_sub(*sent_ms) < self.config.pull_timeout_ms)
    }

    /// Starts the next queued sync with a newly connected peer (if still connected) once
    /// no exchange is in flight or it has waited `CONNECT_SYNC_WAIT_MS`: a pull lost on a
    /// link that died silently stays "in flight" for `pull_timeout_ms`, which must not hold
    /// a heal's repair back for that long.
    pub(super) fn next_connect_sync(&mut self, now_ms: u64) {
        while let Some((peer, queued_ms)) = self.connect_syncs.front().copied() {
            if self.exchange_in_flight(now_ms) && now_ms < queued_ms + CONNECT_SYNC_WAIT_MS {
                return;
            }
            self.connect_syncs.pop_front();
            if self
                .peers
                .get(&peer)
                .is_some_and(|p| p.connected && !p.left)
            {
                self.sync_with(now_ms, peer);
            }
        }
    }
}
