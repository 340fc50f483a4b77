//! Tunables of the protocol core, every one with its unit in its name and a default sized
//! for a small cluster (3–20 nodes) on a WAN. The edge loads them from its config file;
//! tests shrink them to make simulated runs short.

/// See each field.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncConfig {
    /// How long new local changes wait to be pushed together (one message per batch).
    pub push_delay_ms: u64,
    /// Ledger entries per pushed or pulled message.
    pub ledger_entries_max: usize,
    /// Directory ops per message (also cut by bytes: [`SyncConfig::directory_budget`]).
    pub directory_ops_max: usize,
    /// Counters per escrow message (at most `message::COUNTERS_MAX`).
    pub escrow_counters_max: usize,
    /// Largest encoded message the transport carries (its frame limit): escrow batches are
    /// cut by bytes as well as by count, so none is over it (a counter's size grows with
    /// the nodes that touched it, so a count alone cannot bound a batch).
    pub message_bytes_max: usize,
    /// Mean time between anti-entropy rounds (each with one random peer).
    pub anti_entropy_interval_ms: u64,
    /// Spread of that interval, as a fraction (0.25 = ±25%).
    pub anti_entropy_jitter: f64,
    /// A pull unanswered for this long may be sent again.
    pub pull_timeout_ms: u64,
    /// A peer not heard from (directly or by gossip) for this long is reported stale and
    /// counts as dead: no rights are spread to it.
    pub peer_stale_ms: u64,
    /// A member not heard from for this long is suspect: not asked for rights or
    /// connected to until heard of again. Several anti-entropy rounds: heartbeats travel
    /// by gossip, a few hops to the far side of a large mesh.
    pub member_suspect_ms: u64,
    /// Peers a node sends each push to (its own, or one it relays): all its connected
    /// peers when it is connected to every live member (a full mesh: nobody relays),
    /// else this many random ones, and every receiver relays what is new to it the same
    /// way once. Bytes per increment per node are bounded by it, whatever the fleet size.
    pub gossip_fanout: usize,
    /// How often a node sends one random connected peer its members' heartbeats.
    pub member_gossip_interval_ms: u64,
    /// Connections a node keeps, at least (when the cluster has that many other live
    /// members): below, it asks the transport to connect to random ones. The mesh is a
    /// random graph of this degree or more, not a full mesh nor a star through a seed.
    /// 0: a fixed topology — connections only to the bootstrap list (and whoever dials
    /// in), and requests only to connected peers (for networks where members' own
    /// addresses must not be dialled, such as a test harness routing every link through
    /// its own proxy).
    pub mesh_peers: usize,
    /// Escrow: a node with fewer local rights than this for a key asks peers for more.
    pub rights_low_water: u64,
    /// Escrow: ... or with fewer than it spends in this long at its recent rate (so the
    /// transfer lands before it runs dry; cover a round trip and a retry).
    pub rights_lead_ms: u64,
    /// Escrow: the least a request asks for (it asks more when the limit is large, or when
    /// its recent demand is: see `rights_request_cover_ms`).
    pub rights_request_min: u64,
    /// Escrow: a request asks for at least what this node spends in this long at its recent
    /// rate, so a busy node collects its rights in few round trips, whatever the fleet size.
    pub rights_request_cover_ms: u64,
    /// Escrow: requests in flight at once for one key, to distinct donors (the rights
    /// held in the fleet are spread; one donor at a time made collecting them O(N)
    /// sequential round trips). Every request after the first draws from the retry budget.
    pub rights_donors_max: usize,
    /// Escrow: a request unanswered for this long counts as failed.
    pub rights_request_timeout_ms: u64,
    /// Escrow: first retry delay; doubled per failure up to `rights_retry_max_ms`, with
    /// ±50% jitter.
    pub rights_retry_base_ms: u64,
    pub rights_retry_max_ms: u64,
    /// Escrow: failed attempts in a row before a node stops asking until new demand.
    pub rights_attempts_max: u32,
    /// Escrow: retries allowed per second across all keys (a token bucket of this size).
    pub rights_retry_budget_per_s: u32,
    /// Escrow: a donor gives the same requester rights for the same key at most once per
    /// this period, so duplicated or replayed requests cannot drain it.
    pub donor_grace_ms: u64,
    /// Escrow: a node that consumed for the key within this long has *demand*: as a donor
    /// it keeps a reserve, and only with demand does it ask peers for rights. 500 ms, not
    /// the 1 s it was: once traffic has moved on, a former busy node's reserve (twice what
    /// it spends in `rights_lead_ms` at its old rate) held the last rights of a nearly
    /// spent quota away from the newly busy one for a second (docs/BENCHMARKS.md,
    /// "Rebalancing").
    pub donor_busy_ms: u64,
    /// Escrow: the home node spreads newly granted rights evenly over the live members that
    /// billed the tenant (this period or the last); with none, it keeps them.
    pub spread_grants: bool,
    /// Escrow rebalancing (`node/rebalance.rs`): how often the home gives its spare rights
    /// to members consuming faster than their rights cover, after it hears of their
    /// consumption. 0: no rebalancing (rights move only when asked for).
    pub rebalance_interval_ms: u64,
    /// Escrow rebalancing: a holder that has not consumed for a key for this long (after
    /// `donor_busy_ms`) hands what it holds beyond a fair share back to the home.
    pub rebalance_idle_ms: u64,
    /// Finality: a node seals its ledger slots of every hour (so every month) that ended at
    /// least this long ago, and never writes them again. Longer than a request's deadline
    /// plus the commit timeout, so usage billed just before a period ended is written
    /// before the seal whatever the clock's small steps (the edge checks this).
    pub seal_grace_ms: u64,
    /// Compaction: a period final here is replaced by its settlement (its totals) once it
    /// ended this long ago; its slots are dropped. 0: never. Only final periods are
    /// compacted, so a member offline with usage of the period holds compaction back until
    /// it returns (or is decommissioned); a peer that lacks some of the dropped slots
    /// receives the settlement instead.
    pub compact_after_ms: u64,
    /// Settlements (the invoices) are forgotten once their period ended this long ago
    /// (`Ledger::forget_settled`; never past a period not final yet). 0: kept for ever.
    /// Should exceed `compact_after_ms` by the time a member may stay offline and still
    /// come back with usage to deliver.
    pub settlement_keep_ms: u64,
    /// Directory log compaction: edits older than this that later edits have overwritten
    /// are folded into placeholders (`Directory::compact`), checked hourly; this is the
    /// audit window the history keeps whole. 0: never.
    pub directory_audit_keep_ms: u64,
}

impl SyncConfig {
    /// What one directory message carries: `directory_ops_max` ops, and ops of at most half
    /// the frame (`message_bytes_max`) in bytes, the rest left to the digest beside them,
    /// so a run of large ops (watermarks) is cut into messages the transport carries.
    pub fn directory_budget(&self) -> tessera_crdt::DeltaBudget {
        tessera_crdt::DeltaBudget {
            ops_max: self.directory_ops_max,
            bytes_max: self.message_bytes_max / 2,
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            push_delay_ms: 20,
            ledger_entries_max: 4096,
            directory_ops_max: 1024,
            escrow_counters_max: 1024,
            message_bytes_max: 1 << 20,
            anti_entropy_interval_ms: 3_000,
            anti_entropy_jitter: 0.25,
            pull_timeout_ms: 2_000,
            peer_stale_ms: 30_000,
            member_suspect_ms: 15_000,
            member_gossip_interval_ms: 1_000,
            gossip_fanout: 8,
            mesh_peers: 8,
            rights_low_water: 10,
            rights_lead_ms: 500,
            rights_request_min: 20,
            rights_request_cover_ms: 2_000,
            rights_donors_max: 4,
            rights_request_timeout_ms: 1_000,
            rights_retry_base_ms: 100,
            rights_retry_max_ms: 5_000,
            rights_attempts_max: 8,
            rights_retry_budget_per_s: 20,
            donor_grace_ms: 50,
            donor_busy_ms: 500,
            spread_grants: true,
            rebalance_interval_ms: 1_000,
            rebalance_idle_ms: 5_000,
            seal_grace_ms: 600_000,
            compact_after_ms: 92 * 24 * 3_600_000,
            settlement_keep_ms: 760 * 24 * 3_600_000,
            directory_audit_keep_ms: 365 * 24 * 3_600_000,
        }
    }
}
