//! This node's side of membership: the member round, mirroring the table into the peer
//! views, and keeping its share of the bounded mesh (dial when short, prune when over,
//! shuffle and probe). The table itself is [`crate::membership`]. Split from `node.rs`.

use super::*;

impl Node {
    /// Fills in each entry's `ledger_seq` from this replica's version vector.
    pub(super) fn stamp_ledger_seqs(&self, entries: &mut [MemberEntry]) {
        let vv = self.ledger.version_vector();
        for entry in entries {
            entry.ledger_seq = vv.get(entry.node);
        }
    }

    /// Beats and sends one random connected peer the heartbeats this node knows.
    pub(super) fn member_round(&mut self, now_ms: u64) {
        let peers = self.connected_peers();
        if peers.is_empty() {
            return;
        }
        let peer = peers[self.rng.below(peers.len() as u64) as usize];
        self.send_members(now_ms, peer, false);
    }

    /// Beats and sends `peer` this node's member table: whole, with addresses (an
    /// anti-entropy round), or the heartbeats alone (a member round); decommissioned
    /// members left out, each entry stamped with its ledger sequence here.
    pub(super) fn send_members(&mut self, now_ms: u64, peer: NodeId, addresses: bool) {
        self.membership.beat(now_ms);
        let directory = &self.directory;
        let include = |node| !directory.is_decommissioned(node);
        let mut entries = if addresses {
            self.membership.entries(include)
        } else {
            self.membership.heartbeats(include)
        };
        self.stamp_ledger_seqs(&mut entries);
        self.send(
            peer,
            Message::Members {
                entries,
                answer: false,
            },
        );
    }

    /// Copies what a merged member table says of `entries`' members into the peer views:
    /// when each was last known alive, and whether it left.
    pub(super) fn mirror_members(&mut self, entries: &[MemberEntry]) {
        for entry in entries {
            let Some(member) = self.membership.get(entry.node) else {
                continue; // this node, or refused
            };
            let view = self.peers.entry(entry.node).or_default();
            if member.left {
                view.left = true;
            } else if let Some(alive_ms) = self.membership.alive_at_ms(entry.node) {
                view.left = false;
                view.last_heard_ms = view.last_heard_ms.max(Some(alive_ms));
            }
        }
    }

    /// Keeps this node's share of the mesh (see [`crate::membership`]), every
    /// `MESH_CHECK_MS`: with fewer than `mesh_peers` connections it asks the transport for
    /// connections to random live members; with more than twice that it closes random
    /// ones down to twice that; in between, every `MESH_SHUFFLE_MS` it connects to one more
    /// random member (so a mesh that formed around a partition mixes again). Every
    /// `MESH_PROBE_MS` it also tries one member it does not hear from: the only way a
    /// healed partition is found when each side holds enough connections.
    pub(super) fn maintain_mesh(&mut self, now_ms: u64) {
        let mesh_peers = self.config.mesh_peers;
        self.mesh_check_ms = (mesh_peers > 0).then_some(now_ms + MESH_CHECK_MS);
        if mesh_peers == 0 {
            return;
        }
        if now_ms >= self.mesh_probe_ms {
            self.mesh_probe_ms = now_ms + MESH_PROBE_MS;
            let silent: Vec<NodeId> = self
                .membership
                .members()
                .map(|entry| entry.node)
                .filter(|node| {
                    matches!(
                        self.liveness(*node, now_ms),
                        Liveness::Suspect | Liveness::Dead
                    ) && !self.directory.is_decommissioned(*node)
                })
                .collect();
            let probe = self.membership.dials(now_ms, 0, 1, silent, &mut self.rng);
            self.outputs
                .extend(probe.into_iter().map(|to| Output::Connect { to }));
        }
        let mut connected: Vec<NodeId> = self.connected_peers();
        let mesh_max = mesh_peers.saturating_mul(2);
        if connected.len() > mesh_max {
            while connected.len() > mesh_max {
                let at = self.rng.below(connected.len() as u64) as usize;
                let to = connected.swap_remove(at);
                self.outputs.push(Output::Disconnect { to });
            }
            return;
        }
        let connected = connected.len();
        let want = if connected < mesh_peers {
            mesh_peers
        } else if now_ms >= self.mesh_shuffle_ms && connected < mesh_max {
            self.mesh_shuffle_ms = now_ms + MESH_SHUFFLE_MS;
            connected + 1
        } else {
            return;
        };
        let candidates: Vec<NodeId> = self
            .membership
            .members()
            .map(|entry| entry.node)
            .filter(|node| {
                self.liveness(*node, now_ms) == Liveness::Alive
                    && !self.peers.get(node).is_some_and(|p| p.connected)
                    && !self.directory.is_decommissioned(*node)
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let dials = self
            .membership
            .dials(now_ms, connected, want, candidates, &mut self.rng);
        self.outputs
            .extend(dials.into_iter().map(|to| Output::Connect { to }));
        self.membership.prune(now_ms);
    }

    pub(super) fn connected_peers(&self) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.connected && !p.left)
            .map(|(id, _)| *id)
            .collect()
    }
}
