//! Membership: who is in the cluster, how to reach each member, whether it is alive, and
//! which members this node keeps connections to (its share of a bounded partial mesh).
//!
//! # The invariant
//! Every member that has been alive in a connected part of the cluster within one gossip
//! spread is known to every node of that part, with an address to dial it at; a member
//! silent for `peer_stale_ms` in every view is dead everywhere, and one that said it left
//! is left everywhere. Nothing else in the core needs a full mesh: a node talks to the
//! members it is connected to (at least `mesh_peers` of them when the cluster has that
//! many), and sends a request to any other member by its address.
//!
//! # How
//! Each member has a *heartbeat*: its own clock in ms when it last beat (at least one more
//! than its previous beat, so it only grows, across restarts too), set at every member
//! round. Every `member_gossip_interval_ms` (1 s) a node sends one random connected peer
//! its heartbeats (node, heartbeat, left; no addresses), and every anti-entropy round its
//! whole table with addresses; the receiver keeps, per member, the entry with the higher heartbeat (at
//! equal heartbeats, `left` wins), and answers with the entries it holds newer than the
//! sender's. A member is *alive* here while its heartbeat advanced (or a message from it
//! arrived) within `member_suspect_ms`, *suspect* until `peer_stale_ms`, then *dead*. A
//! node that finds an entry about itself newer than its own (a forged or stale `left`, a
//! heartbeat from a previous life) beats above it at once: a node is the authority on
//! itself (SWIM's refutation).
//!
//! A node with fewer than `mesh_peers` connections asks the transport to connect to
//! random live members it is not connected to ([`crate::Output::Connect`]), at most once
//! per member per `MESH_DIAL_RETRY_MS`; peers found beyond the bootstrap list this way
//! make one seed address enough, and the mesh a random graph rather than a star.
//!
//! # Costs
//! A member round sends about 18 bytes per member (3.6 KB at N = 200) per second and
//! node; an anti-entropy round's table adds the addresses (~90 bytes per member: 18 KB
//! at N = 200 every 3 s); answers carry only the newer entries, without the addresses
//! the asker has. That is the "small constant × N" of issue #13's idle-cost goal;
//! per-member digests (Scuttlebutt) would cut it to what changed if it ever matters.
//! Why a member round at all: heartbeats riding only the 3 s anti-entropy rounds reached
//! non-neighbours with ages up to 33 s at N = 200 on the faulty network (p99 16 s), past
//! `peer_stale_ms`: live members reported dead. `examples/member_age.rs` measures it.
//!
//! # Why not the obvious crate (foca, SWIM)
//! foca is a sans-IO SWIM and fits the core's shape, but SWIM's failure detector probes a
//! uniformly random member every protocol period, and its dissemination piggybacks on
//! those probes. Over this transport (TCP + pnet + noise + yamux, no datagrams: the
//! cluster key cannot protect QUIC) a probe outside the node's few connections is a dial,
//! handshake included: with 8 connections at N = 200, 96% of probes. The transport
//! already detects a dead connection within 1.5 s (pings on every connection), and the
//! anti-entropy round already exchanges with a peer every few seconds; heartbeats
//! riding that exchange give liveness beyond the connections for the table's bytes, with
//! no dial. Suspicion here is the `member_suspect_ms` stage; refutation is the self-beat.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tessera_crdt::NodeId;

use crate::rng::Rng;

/// Members one message may describe (the version vectors' identity cap).
pub const MEMBERS_MAX: usize = 4_096;

/// Largest address a member may advertise (opaque to the core; the transport's encoding).
pub const ADDR_BYTES_MAX: usize = 512;

/// A member is not asked to be connected to again within this long (a dial that failed,
/// or whose peer dropped the connection, is not retried in a loop).
pub const MESH_DIAL_RETRY_MS: u64 = 5_000;

/// What one node says of one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEntry {
    pub node: NodeId,
    /// The member's clock when it last beat: only ever grows.
    pub heartbeat: u64,
    /// It said it was leaving (true until it beats again, alive).
    pub left: bool,
    /// How to reach it, in the transport's encoding (empty: unknown).
    pub addr: Vec<u8>,
    /// The member's own ledger sequence as the sender holds it (filled in by the core
    /// when it sends, not kept here): a receiver that holds less pulls from the sender,
    /// so an increment whose pushes all missed a node reaches it within a member round.
    pub ledger_seq: u64,
}

impl MemberEntry {
    /// Whether this entry supersedes `other` (same node): a later beat, or the same beat
    /// with `left`.
    fn newer_than(&self, other: &MemberEntry) -> bool {
        (self.heartbeat, self.left) > (other.heartbeat, other.left)
    }
}

/// A member's state in this view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Liveness {
    Alive,
    /// Not heard of for `member_suspect_ms`: still counted as a member, not chosen for
    /// new work (connections, requests).
    Suspect,
    /// Not heard of for `peer_stale_ms`.
    Dead,
    /// Said it left.
    Left,
}

impl Liveness {
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Alive => "alive",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
            Liveness::Left => "left",
        }
    }
}

/// The member table and this node's own entry. See the module doc.
#[derive(Clone, Debug)]
pub struct Membership {
    own: MemberEntry,
    /// Every other member heard of, by gossip or directly.
    table: BTreeMap<NodeId, MemberEntry>,
    /// When each member was last known alive here (its heartbeat advanced, or it sent
    /// something): the age liveness is judged by.
    alive_at_ms: BTreeMap<NodeId, u64>,
    /// When this node last asked to be connected to each member.
    dialed_at_ms: BTreeMap<NodeId, u64>,
    /// Grows whenever a member appears, changes address or leaves: a caller that mirrors
    /// the table (the transport's address book) looks again only then.
    version: u64,
}

impl Membership {
    pub fn new(own: NodeId, now_ms: u64) -> Membership {
        Membership {
            own: MemberEntry {
                node: own,
                heartbeat: now_ms,
                left: false,
                addr: Vec::new(),
                ledger_seq: 0,
            },
            table: BTreeMap::new(),
            alive_at_ms: BTreeMap::new(),
            dialed_at_ms: BTreeMap::new(),
            version: 0,
        }
    }

    /// This node's own entry.
    pub fn own(&self) -> &MemberEntry {
        &self.own
    }

    /// Sets the address this node advertises (the transport's encoding, at most
    /// [`ADDR_BYTES_MAX`] bytes; longer is cut off by the caller's encoding, not here).
    pub fn set_address(&mut self, addr: Vec<u8>) {
        self.own.addr = addr;
    }

    /// Beats: the own heartbeat becomes `now_ms`, or one more than before if the clock
    /// has not passed it.
    pub fn beat(&mut self, now_ms: u64) {
        self.own.heartbeat = now_ms.max(self.own.heartbeat + 1);
    }

    /// Marks this node as leaving (and beats, so the news supersedes its last beat).
    pub fn leave(&mut self, now_ms: u64) {
        self.beat(now_ms);
        self.own.left = true;
    }

    /// The change count (see the field).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Another member's entry, if known.
    pub fn get(&self, node: NodeId) -> Option<&MemberEntry> {
        self.table.get(&node)
    }

    /// Every other member known, in id order.
    pub fn members(&self) -> impl Iterator<Item = &MemberEntry> {
        self.table.values()
    }

    /// A member was heard from directly (a message, a connection): it is alive now.
    pub fn heard(&mut self, node: NodeId, now_ms: u64) {
        if node == self.own.node {
            return;
        }
        if let std::collections::btree_map::Entry::Vacant(vacant) = self.table.entry(node) {
            vacant.insert(MemberEntry {
                node,
                heartbeat: 0,
                left: false,
                addr: Vec::new(),
                ledger_seq: 0,
            });
            self.version += 1;
        }
        self.alive_at_ms.insert(node, now_ms);
    }

    /// A member said it left (the `Leaving` message): recorded as its gossip would be.
    pub fn left(&mut self, node: NodeId) {
        if let Some(entry) = self.table.get_mut(&node) {
            if !entry.left {
                entry.left = true;
                self.version += 1;
            }
        }
    }

    /// When `node` was last known alive here.
    pub fn alive_at_ms(&self, node: NodeId) -> Option<u64> {
        self.alive_at_ms.get(&node).copied()
    }

    /// `node`'s liveness in this view (`connected`: the transport holds a live connection
    /// to it, which it pings).
    pub fn liveness(
        &self,
        node: NodeId,
        connected: bool,
        now_ms: u64,
        suspect_ms: u64,
        dead_ms: u64,
    ) -> Liveness {
        if self.table.get(&node).is_some_and(|e| e.left) {
            return Liveness::Left;
        }
        if connected {
            return Liveness::Alive;
        }
        match self.alive_at_ms.get(&node) {
            Some(at) if now_ms.saturating_sub(*at) <= suspect_ms => Liveness::Alive,
            Some(at) if now_ms.saturating_sub(*at) <= dead_ms => Liveness::Suspect,
            _ => Liveness::Dead,
        }
    }

    /// The table to send a peer: own entry first, then every member `include` keeps
    /// (the caller leaves out decommissioned ones), at most [`MEMBERS_MAX`].
    pub fn entries(&self, include: impl Fn(NodeId) -> bool) -> Vec<MemberEntry> {
        std::iter::once(&self.own)
            .chain(self.table.values().filter(|e| include(e.node)))
            .take(MEMBERS_MAX)
            .cloned()
            .collect()
    }

    /// Merges a peer's table (entries `accept` refuses are skipped: decommissioned
    /// members) and returns what this node holds newer than it or that it lacks, for the
    /// answer.
    pub fn merge(
        &mut self,
        now_ms: u64,
        entries: &[MemberEntry],
        accept: impl Fn(NodeId) -> bool,
    ) -> Vec<MemberEntry> {
        let mut seen: BTreeMap<NodeId, &MemberEntry> = BTreeMap::new();
        for entry in entries {
            seen.insert(entry.node, entry);
            if entry.node == self.own.node {
                // About this node: if it claims more than this node said, refute.
                if entry.newer_than(&self.own) && !self.own.left {
                    self.own.heartbeat = entry.heartbeat.max(now_ms) + 1;
                }
                continue;
            }
            if !accept(entry.node) {
                continue;
            }
            match self.table.get_mut(&entry.node) {
                Some(known) if !entry.newer_than(known) => {}
                Some(known) => {
                    let advanced = entry.heartbeat > known.heartbeat;
                    if known.addr != entry.addr && !entry.addr.is_empty()
                        || known.left != entry.left
                    {
                        self.version += 1;
                    }
                    let addr = if entry.addr.is_empty() {
                        std::mem::take(&mut known.addr)
                    } else {
                        entry.addr.clone()
                    };
                    *known = MemberEntry {
                        addr,
                        ..entry.clone()
                    };
                    if advanced {
                        self.alive_at_ms.insert(entry.node, now_ms);
                    }
                }
                None => {
                    self.table.insert(entry.node, entry.clone());
                    // Heard of through gossip: alive as of now (its beat is recent in the
                    // sender's view, or the sender would not relay a live member; a dead
                    // one goes dead here after `peer_stale_ms` too).
                    if !entry.left {
                        self.alive_at_ms.insert(entry.node, now_ms);
                    }
                    self.version += 1;
                }
            }
        }
        let mut newer: Vec<MemberEntry> = Vec::new();
        if seen
            .get(&self.own.node)
            .is_none_or(|e| self.own.newer_than(e))
        {
            newer.push(self.own.clone());
        }
        newer.extend(
            self.table
                .values()
                .filter(|e| accept(e.node) && seen.get(&e.node).is_none_or(|s| e.newer_than(s)))
                .take(MEMBERS_MAX - 1)
                .map(|e| MemberEntry {
                    // The sender knows a member it mentioned, address included (addresses
                    // travel in the full tables of anti-entropy rounds).
                    addr: if seen.contains_key(&e.node) {
                        Vec::new()
                    } else {
                        e.addr.clone()
                    },
                    ..e.clone()
                }),
        );
        newer
    }

    /// The heartbeats alone (no addresses): what a member round sends, every
    /// `member_gossip_interval_ms`.
    pub fn heartbeats(&self, include: impl Fn(NodeId) -> bool) -> Vec<MemberEntry> {
        std::iter::once(&self.own)
            .chain(self.table.values().filter(|e| include(e.node)))
            .take(MEMBERS_MAX)
            .map(|e| MemberEntry {
                addr: Vec::new(),
                ..e.clone()
            })
            .collect()
    }

    /// Members to connect to now: with `connected` of them (not left) below
    /// `mesh_peers`, up to the deficit of random `candidates` (live, not connected, not
    /// asked for within [`MESH_DIAL_RETRY_MS`]).
    pub fn dials(
        &mut self,
        now_ms: u64,
        connected: usize,
        mesh_peers: usize,
        candidates: Vec<NodeId>,
        rng: &mut Rng,
    ) -> Vec<NodeId> {
        let deficit = mesh_peers.saturating_sub(connected);
        if deficit == 0 {
            return Vec::new();
        }
        let mut pool: Vec<NodeId> = candidates
            .into_iter()
            .filter(|node| {
                self.dialed_at_ms
                    .get(node)
                    .is_none_or(|at| now_ms.saturating_sub(*at) >= MESH_DIAL_RETRY_MS)
            })
            .collect();
        let mut chosen = Vec::new();
        while chosen.len() < deficit && !pool.is_empty() {
            let at = rng.below(pool.len() as u64) as usize;
            let node = pool.swap_remove(at);
            self.dialed_at_ms.insert(node, now_ms);
            chosen.push(node);
        }
        chosen
    }

    /// Forgets dial times older than the retry period (bounded by the table anyway).
    pub fn prune(&mut self, now_ms: u64) {
        self.dialed_at_ms
            .retain(|_, at| now_ms.saturating_sub(*at) < MESH_DIAL_RETRY_MS);
    }

    /// Checks a received table's bounds.
    pub fn validate(entries: &[MemberEntry]) -> Result<(), MembersError> {
        if entries.len() > MEMBERS_MAX {
            return Err(MembersError::TooMany {
                members: entries.len(),
            });
        }
        if let Some(e) = entries.iter().find(|e| e.addr.len() > ADDR_BYTES_MAX) {
            return Err(MembersError::AddressTooLong {
                bytes: e.addr.len(),
            });
        }
        Ok(())
    }
}

/// Why a member list from a peer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembersError {
    #[error("{members} members, more than the cap of {MEMBERS_MAX}")]
    TooMany { members: usize },
    #[error("an address of {bytes} bytes, more than the cap of {ADDR_BYTES_MAX}")]
    AddressTooLong { bytes: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: u64, heartbeat: u64, left: bool) -> MemberEntry {
        MemberEntry {
            node: NodeId(node),
            heartbeat,
            left,
            addr: format!("addr-{node}").into_bytes(),
            ledger_seq: 0,
        }
    }

    const ALL: fn(NodeId) -> bool = |_| true;

    #[test]
    fn merge_keeps_the_later_beat_and_answers_with_what_the_sender_lacks() {
        let mut m = Membership::new(NodeId(1), 1_000);
        assert!(m
            .merge(1_000, &[entry(2, 500, false), entry(3, 700, false)], ALL)
            .iter()
            .all(|e| e.node == NodeId(1)));
        let version = m.version();
        // An older beat changes nothing; a newer one advances the member's liveness.
        m.merge(2_000, &[entry(2, 400, false)], ALL);
        assert_eq!(m.get(NodeId(2)).unwrap().heartbeat, 500);
        assert_eq!(m.alive_at_ms(NodeId(2)), Some(1_000));
        let answer = m.merge(3_000, &[entry(2, 600, false)], ALL);
        assert_eq!(m.get(NodeId(2)).unwrap().heartbeat, 600);
        assert_eq!(m.alive_at_ms(NodeId(2)), Some(3_000));
        assert_eq!(m.version(), version, "a beat alone is no table change");
        // The answer: own entry and member 3, which the sender did not mention (with its
        // address: the sender does not know it).
        let nodes: Vec<u64> = answer.iter().map(|e| e.node.0).collect();
        assert_eq!(nodes, vec![1, 3]);
        assert_eq!(answer[1].addr, b"addr-3");
        // A heartbeat without an address keeps the address known.
        m.merge(
            3_200,
            &[MemberEntry {
                addr: Vec::new(),
                ..entry(3, 650, false)
            }],
            ALL,
        );
        assert_eq!(m.get(NodeId(3)).unwrap().addr, b"addr-3");
        assert!(m.heartbeats(ALL).iter().all(|e| e.addr.is_empty()));
        // Same beat with `left` wins; the table changed.
        m.merge(3_500, &[entry(3, 700, true)], ALL);
        assert!(m.get(NodeId(3)).unwrap().left);
        assert!(m.version() > version);
        assert_eq!(
            m.liveness(NodeId(3), true, 3_500, 10_000, 30_000),
            Liveness::Left
        );
    }

    #[test]
    fn liveness_ages_from_alive_to_suspect_to_dead_and_a_connection_is_alive() {
        let mut m = Membership::new(NodeId(1), 0);
        m.merge(1_000, &[entry(2, 900, false)], ALL);
        let at = |m: &Membership, now| m.liveness(NodeId(2), false, now, 10_000, 30_000);
        assert_eq!(at(&m, 11_000), Liveness::Alive);
        assert_eq!(at(&m, 11_001), Liveness::Suspect);
        assert_eq!(at(&m, 31_001), Liveness::Dead);
        assert_eq!(
            m.liveness(NodeId(2), true, 31_001, 10_000, 30_000),
            Liveness::Alive
        );
        m.heard(NodeId(2), 40_000);
        assert_eq!(at(&m, 45_000), Liveness::Alive);
        assert_eq!(
            m.liveness(NodeId(9), false, 0, 10_000, 30_000),
            Liveness::Dead,
            "never heard of"
        );
    }

    #[test]
    fn a_node_refutes_a_newer_claim_about_itself() {
        let mut m = Membership::new(NodeId(1), 1_000);
        let answer = m.merge(1_500, &[entry(1, 5_000, true)], ALL);
        assert!(m.own().heartbeat > 5_000 && !m.own().left);
        assert_eq!(
            answer[0].node,
            NodeId(1),
            "the refutation goes back at once"
        );
        assert!(answer[0].newer_than(&entry(1, 5_000, true)));
        // Leaving itself is not refuted.
        m.leave(6_000);
        let heartbeat = m.own().heartbeat;
        m.merge(6_500, &[entry(1, heartbeat, false)], ALL);
        assert!(m.own().left);
    }

    #[test]
    fn refused_members_are_neither_learned_nor_sent() {
        let mut m = Membership::new(NodeId(1), 0);
        let not_4 = |n: NodeId| n != NodeId(4);
        m.merge(10, &[entry(2, 5, false), entry(4, 5, false)], not_4);
        assert!(m.get(NodeId(4)).is_none());
        m.heard(NodeId(4), 20);
        let sent: Vec<u64> = m.entries(not_4).iter().map(|e| e.node.0).collect();
        assert_eq!(sent, vec![1, 2]);
    }

    #[test]
    fn dials_fill_the_deficit_once_per_retry_period() {
        let mut m = Membership::new(NodeId(1), 0);
        let mut rng = Rng::new(7);
        let candidates: Vec<NodeId> = (2..20).map(NodeId).collect();
        let first = m.dials(0, 5, 8, candidates.clone(), &mut rng);
        assert_eq!(first.len(), 3);
        assert!(m.dials(0, 8, 8, candidates.clone(), &mut rng).is_empty());
        let again = m.dials(1_000, 5, 8, candidates.clone(), &mut rng);
        assert!(
            again.iter().all(|n| !first.contains(n)),
            "not the same ones"
        );
        let later = m.dials(MESH_DIAL_RETRY_MS, 0, 20, candidates, &mut rng);
        assert_eq!(
            later.len(),
            18 - 3,
            "the first three are due again; the other three not yet"
        );
    }

    #[test]
    fn tables_over_the_caps_are_refused() {
        let many = vec![entry(2, 1, false); MEMBERS_MAX + 1];
        assert!(Membership::validate(&many).is_err());
        let mut long = entry(2, 1, false);
        long.addr = vec![0; ADDR_BYTES_MAX + 1];
        assert!(Membership::validate(&[long]).is_err());
        assert!(Membership::validate(&[entry(2, 1, false)]).is_ok());
    }
}
