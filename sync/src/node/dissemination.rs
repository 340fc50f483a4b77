//! Dissemination: how this node's changes, and what peers' pushes brought that is new here,
//! reach the fleet — batched pushes cut by bytes, sent to every peer in a full mesh or to
//! `gossip_fanout` random peers with relay over a partial mesh, escrow changes relayed
//! coalesced (see "Push (dissemination)" in docs/PROTOCOL.md). Split from `node.rs` so
//! the epidemic's rules read alone; the state stays the `Node`'s.

use super::*;

impl Node {
    pub(super) fn schedule_push(&mut self, now_ms: u64) {
        if self.push_due_ms.is_none() {
            self.push_due_ms = Some(now_ms + self.config.push_delay_ms);
            self.first_change_ms = Some(now_ms);
        }
    }

    /// Pushes everything local not pushed yet, in bounded messages (see [`Node::gossip`]).
    pub(super) fn flush_push(&mut self, now_ms: u64) {
        self.push_due_ms = None;
        let first_change_ms = self.first_change_ms.take().unwrap_or(now_ms);
        let relay = !self.connected_to_every_member(now_ms);
        // With no peer to send to (a node on its own, or cut off), the pushes would be
        // built and dropped: every peer that connects later is brought up to date by the
        // exchange on connect (pull, directory sync, escrow digest), never by old pushes.
        // Building them cloned every changed counter and walked the ledger's new entries
        // under the node's lock: 40% of a lone node's background hold (request_path bench).
        let audience = self.peers.values().any(|p| p.connected && !p.left);
        let own_chunks = if audience {
            self.own_chunks(self.ledger_pushed, self.config.ledger_entries_max)
        } else {
            self.ledger_pushed = self.ledger.version_vector().get(self.id);
            Vec::new()
        };
        for delta in own_chunks {
            self.ledger_pushed = delta.parts[0].to_seq;
            let push = Message::LedgerPush {
                delta,
                first_change_ms,
                relay,
            };
            self.gossip(push, self.id, &[], !relay);
        }
        let own_ops = self.directory.version_vector().get(self.id);
        while self.directory_pushed < own_ops {
            let since = with_entry(
                self.directory.version_vector(),
                self.id,
                self.directory_pushed,
            );
            let delta = self
                .directory
                .delta_since(&since, self.config.directory_budget());
            let ops: Vec<Op> = delta
                .ops
                .into_iter()
                .filter(|op| op.origin == self.id)
                .collect();
            let Some(last) = ops.last().map(Op::last_seq) else {
                break;
            };
            let push = Message::DirectoryPush {
                delta: DirectoryDelta { ops },
                relay,
            };
            self.gossip(push, self.id, &[], !relay);
            self.directory_pushed = last;
        }
        // Bounds `digest_stale` by the push interval.
        self.refresh_escrow_digest();
        if !audience {
            self.escrow_dirty.clear();
            return;
        }
        let dirty = sorted(&mut self.escrow_dirty);
        let counters = dirty
            .into_iter()
            .filter_map(|key| self.escrow.get(&key).map(|c| (key, c.clone())))
            .collect();
        for batch in self.escrow_batches(counters) {
            // Receivers in a partial mesh relay it on, coalesced (`relay_escrow`).
            self.gossip(Message::EscrowPush(batch), self.id, &[], !relay);
        }
    }

    /// Passes on the directory ops an exchange with `from` brought that were new here
    /// (those after `held`), as this node's own are pushed: to every other peer in a full
    /// mesh, else to the fanout with relay set. The origin's push missed this node (it was
    /// cut off), so it may have missed its neighbours too, and a neighbour's own link to
    /// the origin may still be stuck after the heal (TCP retransmissions backed off):
    /// without this, a revocation reached them only at their next anti-entropy round.
    pub(super) fn pass_on_directory(&mut self, now_ms: u64, from: NodeId, held: &VersionVector) {
        if held == self.directory.version_vector() {
            return;
        }
        let delta = self
            .directory
            .delta_since(held, self.config.directory_budget());
        if delta.ops.is_empty() {
            return;
        }
        let full_mesh = self.connected_to_every_member(now_ms);
        let origins: Vec<NodeId> = delta.ops.iter().map(|op| op.origin).collect();
        self.stats.directory_passed_on += delta.ops.len() as u64;
        let push = Message::DirectoryPush {
            delta,
            relay: !full_mesh,
        };
        self.gossip(push, from, &origins, full_mesh);
    }

    /// Passes on, to the fanout, the counters peers' pushes changed here since the last
    /// relay (whole, as merged here; not relayed again where they change nothing).
    pub(super) fn relay_escrow(&mut self) {
        self.escrow_relay_due_ms = None;
        let keys = sorted(&mut self.escrow_relay);
        let counters = keys
            .into_iter()
            .filter_map(|key| self.escrow.get(&key).map(|c| (key, c.clone())))
            .collect();
        for batch in self.escrow_batches(counters) {
            self.gossip(Message::EscrowPush(batch), self.id, &[], false);
        }
    }

    /// Whether every live member is a connected peer: then a push sent to each of them
    /// reaches everyone, and nobody needs to relay it (a small cluster's full mesh).
    pub(super) fn connected_to_every_member(&self, now_ms: u64) -> bool {
        self.membership.members().all(|member| {
            self.peers.get(&member.node).is_some_and(|p| p.connected)
                || self.liveness(member.node, now_ms) != Liveness::Alive
                || self.directory.is_decommissioned(member.node)
        })
    }

    /// Epidemic push: sends `message` to every connected peer when `all` (this node is
    /// connected to every live member) or there are at most `gossip_fanout`, else to that
    /// many random ones; never to `from` (who sent it here) or to `origins` (whose data it
    /// is). Bytes per push per node are bounded by the
    /// fanout, not the fleet size; a receiver relays what is new to it the same way,
    /// once (a repeat brings nothing new), so with the mesh connected every member hears
    /// of it within a few hops, and one that missed every copy pulls it when the member
    /// round tells it a peer holds more (`MemberEntry::ledger_seq`).
    ///
    /// Every recipient's output shares the one message (`Arc`): the lock is held for
    /// building it once, whatever the fanout.
    pub(super) fn gossip(&mut self, message: Message, from: NodeId, origins: &[NodeId], all: bool) {
        let mut peers: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(id, p)| p.connected && !p.left && **id != from && !origins.contains(id))
            .map(|(id, _)| *id)
            .collect();
        let fanout = if all {
            usize::MAX
        } else {
            self.config.gossip_fanout.max(1)
        };
        while peers.len() > fanout {
            let at = self.rng.below(peers.len() as u64) as usize;
            peers.swap_remove(at);
        }
        let message = Arc::new(message);
        for peer in peers {
            self.outputs.push(Output::Send {
                to: peer,
                message: Arc::clone(&message),
            });
        }
    }

    /// Cuts counters into message-sized batches: at most `escrow_counters_max` each, and
    /// encoded within `message_bytes_max` (less [`ENVELOPE_BYTES`] for the rest of the
    /// message). A counter over the budget alone is left out and counted
    /// ([`Stats::counters_oversize`]): sent, the transport would drop its frame whole.
    pub(super) fn escrow_batches(
        &mut self,
        counters: Vec<(CounterKey, BoundedCounter)>,
    ) -> Vec<Vec<(CounterKey, BoundedCounter)>> {
        let count_max = self.config.escrow_counters_max.clamp(1, COUNTERS_MAX);
        let bytes_max = self.config.message_bytes_max.saturating_sub(ENVELOPE_BYTES);
        let mut batches = Vec::new();
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        for (key, counter) in counters {
            let bytes = counter_entry_bytes(&key, &counter);
            if bytes > bytes_max {
                self.stats.counters_oversize += 1;
                continue;
            }
            if batch.len() == count_max || batch_bytes + bytes > bytes_max {
                batches.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch_bytes += bytes;
            batch.push((key, counter));
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        batches
    }

    /// This node's own ledger changes after sequence `after_seq`, as deltas of one part
    /// each and at most `entries_max` entries, in order (for pushes and for the store).
    pub(super) fn own_chunks(&self, after_seq: u64, entries_max: usize) -> Vec<Delta> {
        let own = self.ledger.version_vector().get(self.id);
        let mut from = after_seq;
        let mut chunks = Vec::new();
        while from < own {
            let since = with_entry(self.ledger.version_vector(), self.id, from);
            let delta = self.ledger.delta_since(&since, entries_max);
            let Some(part) = delta.parts.into_iter().find(|p| p.origin == self.id) else {
                break;
            };
            if part.to_seq <= from {
                break;
            }
            from = part.to_seq;
            chunks.push(Delta { parts: vec![part] });
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crdt::Metric;

    #[test]
    fn a_push_to_every_peer_is_one_shared_message() {
        let now = 1_800_000_000_000;
        let mut node = Node::empty(NodeId(1), SyncConfig::default(), 3, now);
        let peers = [NodeId(2), NodeId(3), NodeId(4)];
        for peer in peers {
            node.handle(now, Input::PeerConnected(peer));
        }
        node.take_outputs();
        let key = CounterKey::new(
            TenantId(9),
            Period::containing(PeriodKind::Month, now),
            Metric::Requests,
        );
        node.increment(now, key, 1).unwrap();
        let due = now + node.config().push_delay_ms;
        node.handle(due, Input::Tick);
        let pushes: Vec<(NodeId, Arc<Message>)> = node
            .take_outputs()
            .into_iter()
            .filter_map(|output| match output {
                Output::Send { to, message } if message.kind() == "ledger_push" => {
                    Some((to, message))
                }
                _ => None,
            })
            .collect();
        let mut to: Vec<NodeId> = pushes.iter().map(|(to, _)| *to).collect();
        to.sort_unstable();
        assert_eq!(to, peers, "a full mesh: every peer");
        assert!(
            pushes.iter().all(|(_, m)| Arc::ptr_eq(m, &pushes[0].1)),
            "one message behind one Arc, not a copy per peer"
        );
    }
}
