//! The protocol core: one node's replication state machine, driven by inputs and read for
//! outputs, with no IO, no clock and no randomness of its own.
//!
//! # Driving it
//! The caller (the libp2p adapter, or the simulator in tests) owns the clock and the
//! network. It calls local operations ([`Node::increment`], [`Node::edit_directory`],
//! [`Node::consume`], [`Node::refund`], [`Node::leave`]) and [`Node::handle`] with
//! `(now_ms, Input)` for a message, a peer coming or going, or a tick; then drains
//! [`Node::take_outputs`] and sends them; then calls [`Node::handle`] with [`Input::Tick`]
//! again no later than [`Node::next_wakeup_ms`]. Outputs must leave only after the node's
//! state is persisted (a transfer sent and then forgotten by a crash would be given twice).
//!
//! # Peers' directory ops: durable before enforced
//! Auth must never enforce what a crash can take back: a node that refused a revoked key
//! and then, after a kill -9, accepted it again (the revocation having reached it from a
//! peer but not its disk) breaks the promise a revocation makes. So directory ops from
//! peers (pushes and anti-entropy sync alike) are *staged* ([`Directory::stage_delta`]):
//! held in the log, counted in the digest this node advertises (so peers do not resend
//! them; a resend is a duplicate, one comparison each), served onward to other peers,
//! handed to the store by [`Node::take_changes`] in [`Changes::directory`] — but not in
//! the view that requests read. Once the batch carrying them is committed, the caller
//! passes its [`Changes::directory_through`] to [`Node::promote`], which enforces them.
//! [`Node::state`] (a snapshot) includes staged ops, and a loaded state enforces all it
//! holds: anything persisted is durable. Directory causality is per origin (an origin's
//! op `n` only after `n − 1`), and staged ops extend each origin's prefix, so persisted
//! deltas replay in order on load whichever of their predecessors were also staged; the
//! view is order-independent across origins. A caller without a store promotes right
//! after it has recorded the batch (the simulator does: "commit, then promote"). Own
//! edits ([`Node::edit_directory`]) are enforced at once; the admin API answers only once
//! they are durable, and they leave the node only then (outputs wait for durability).
//! A persisting caller should commit promptly when [`Node::staged_directory_ops`] is
//! non-zero: that delay is how long a revocation from a peer waits to be enforced here.
//!
//! # Parts
//! The state is this file's [`Node`]; its behaviour is split by concern into `impl Node`
//! blocks, each file readable alone: `node/dissemination.rs` (pushes and relays),
//! `node/journal.rs` (applying peers' ledger and directory data, pull anti-entropy),
//! `node/broker.rs` (escrow counters, digests, rights requests and donations),
//! `node/quota.rs` (grants, call-backs, declarations, stranded rights), `node/mesh.rs`
//! (member rounds and the mesh), with the member table in [`crate::membership`]. This
//! file keeps the inputs, the local operations and the timers.
//!
//! # What it does
//! - **Push (dissemination)**: local ledger increments, directory ops and changed bounded
//!   counters are batched for `push_delay_ms` and pushed, in size-bounded messages: to
//!   every connected peer when this node is connected to every live member (a small
//!   cluster's full mesh), else to `gossip_fanout` random connected peers with `relay`
//!   set, and each receiver passes what is new to it on the same way, once (epidemic push
//!   over the bounded mesh: bytes per increment per node bounded by the fanout, not the
//!   fleet size). Escrow changes are relayed coalesced, every `ESCROW_RELAY_MS` at most
//!   (a busy counter changes 50 times a second). A node
//!   that every copy missed learns it from the member round (each entry carries the
//!   member's ledger sequence as the sender holds it) and pulls from that peer. Peers are
//!   trusted once they hold the cluster key: a relay, like a pull answer, carries any
//!   origin's data.
//! - **Pull anti-entropy**: every `anti_entropy_interval_ms` (jittered, with a per-node
//!   phase derived from the node id) it exchanges digests with one random connected peer:
//!   the ledger's version vector (the peer answers with a bounded chunk and `more`; the
//!   puller pulls again at once until caught up, so a node offline for weeks catches up in
//!   `changes / ledger_entries_max` round trips), the directory's two-party sync, and the
//!   escrow digest root (then buckets, then the counters of differing buckets).
//! - **Escrow transfers**: a node below its low-water mark for a key (`rights_low_water`,
//!   or what it spends in `rights_lead_ms` at its recent rate if more) asks the connected
//!   peer that holds the most rights in its view; one request per key at a time, timed
//!   out, retried with capped exponential backoff and jitter under a retry budget. A
//!   donor gives part of what it holds (half when idle for the key, only its surplus above
//!   a reserve when busy), never twice to the same requester and key within
//!   `donor_grace_ms`, and answers with its whole counter, so a duplicated or replayed
//!   reply merges to the same state and creates nothing.
//! - **Quota policy → grants**: only a tenant's home node (from the directory) turns a
//!   quota into grants, for the current period and the next; raising adds the deficit,
//!   lowering makes every node call back its unspent excess (rules in
//!   `tessera_crdt::escrow`). New grants are spread over the members the home knows.
//!
//! # What a quota bounds
//! A quota bounds the period's total usage as known to the tenant's home node. A node that
//! has not heard of a quota serves without it; what it served counts against the quota
//! once it hears of the quota (it declares its ledger usage beyond its net consumption
//! into the counter: `BoundedCounter::declare_unmetered`) — and, before that, once the home
//! sees it in the ledger (the home grants only `quota − usage of nodes that have not
//! consumed or declared anything`, looked at again as ledger data arrives). So usage
//! billed before `quota set` stands and leaves only the rest of the quota; a lowering below
//! it admits nothing more. Why the home's two sources cannot overrun together: a node's
//! declaration is written before its first consume of the counter (every consume runs the
//! quota pass first), and its counter cells travel as one state, so a view that shows any
//! consumption of that node also shows its declaration; a view in which its ledger slot is
//! ahead of its counter only counts metered usage as unmetered (the home grants less, and
//! grants again when the counter arrives: self-correcting). The overrun that remains is
//! inherent to serving without coordination: usage served by nodes that had not heard of
//! the quota and that the home had not heard of when it granted; it is called back from
//! unspent rights as soon as it is declared. Only monthly counters see prior usage (the
//! ledger bills by month; hourly quotas count from when they are known).
//! - **Membership**: when each peer was last heard from, and whether it is connected.
//! - **Hostile input**: every message is validated before use (sizes, formats, every
//!   counter's invariant); refusals are counted. A part that starts beyond what this
//!   replica holds of its origin is not applied (its gap is pulled).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;

use tessera_crdt::directory::{Change, Directory, DirectoryDelta, DirectoryError, Op, SyncMessage};
use tessera_crdt::ledger::{Delta, IncrementError};
use tessera_crdt::{
    BoundedCounter, CounterKey, EscrowBook, EscrowError, IdHashMap, IdHashSet, Ledger, NodeId,
    Period, PeriodKind, Settlement, TenantId, VersionVector,
};

use crate::config::SyncConfig;
use crate::escrow_digest::{bucket_of, EscrowDigest};
use crate::membership::{Liveness, MemberEntry, Membership};
use crate::message::{Message, MessageError, COUNTERS_MAX, SETTLED_MAX};
use crate::rng::{mix, Rng};

// The core's parts, each an `impl Node` block over the state below, readable alone.
mod broker;
mod dissemination;
mod finality;
mod journal;
mod mesh;
mod quota;
mod rebalance;

/// Something that happened to the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed; do whatever is due.
    Tick,
    /// A message from an authenticated peer.
    Message {
        from: NodeId,
        message: Message,
    },
    PeerConnected(NodeId),
    PeerDisconnected(NodeId),
    /// One of several connections to a peer closed and another stays: the peer is still
    /// connected, but frames sent on the closed one may be lost with it. After a heal both
    /// sides' dials complete at once and the per-peer limit closes the extra ones, often
    /// the very connection the exchange on connect went out on: without a new exchange
    /// the pull stayed "in flight" until `pull_timeout_ms`, and a revocation waited 2 s.
    ConnectionLost(NodeId),
}

/// Something the node wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// To one peer (request-response in the adapter). Shared: a push or relay to the
    /// fanout is one message behind one `Arc` for every recipient, built once under the
    /// node's lock instead of deep-copied (every counter, every entry) once per peer.
    Send { to: NodeId, message: Arc<Message> },
    /// Open a connection to this member, at the address its membership entry gives
    /// ([`Node::membership`]): the node keeps `mesh_peers` connections (see
    /// [`crate::membership`]). Nothing is owed back if the dial fails.
    Connect { to: NodeId },
    /// Close the connection to this peer: this node holds more than twice `mesh_peers`
    /// (a seed everyone bootstrapped from, or connections made for requests).
    Disconnect { to: NodeId },
}

/// What the node knows of a peer: every member heard of, directly or by gossip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerView {
    pub connected: bool,
    /// When it was last known alive (`None`: never): a message from it arrived, or its
    /// heartbeat advanced in a peer's membership table.
    pub last_heard_ms: Option<u64>,
    /// When the transport last reported it disconnected.
    pub disconnected_ms: Option<u64>,
    /// It announced it was leaving.
    pub left: bool,
    /// The replication lag of its last ledger push: arrival here minus the time of the
    /// batch's oldest increment there (clock skew between the two included).
    pub lag_ms: Option<u64>,
}

/// Upper bounds (ms) of the replication-lag histogram buckets; a last bucket counts the
/// rest.
pub const LAG_BUCKETS_MS: [u64; 12] =
    [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// Replication lag observed on ledger pushes, as a cumulative-ready histogram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LagHistogram {
    /// Observations per bucket of [`LAG_BUCKETS_MS`] (not cumulative), plus the overflow.
    pub counts: [u64; LAG_BUCKETS_MS.len() + 1],
    pub sum_ms: u64,
    pub count: u64,
}

impl LagHistogram {
    fn observe(&mut self, lag_ms: u64) {
        let bucket = LAG_BUCKETS_MS
            .iter()
            .position(|bound| lag_ms <= *bound)
            .unwrap_or(LAG_BUCKETS_MS.len());
        self.counts[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(lag_ms);
        self.count += 1;
    }
}

/// Counts of what the node refused or did, for metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_refused: u64,
    pub rights_requests_sent: u64,
    pub rights_retries: u64,
    pub rights_given: u64,
    /// Rights that arrived here from peers (grants spread by a home, transfers), by
    /// whatever message carried them.
    pub rights_received: u64,
    /// Rights this node, as a tenant's home, gave members for demand they had not asked
    /// for yet (`node/rebalance.rs`; also in `rights_given`).
    pub rights_spread_to_demand: u64,
    /// Rights this node handed back to a tenant's home after going idle (also in
    /// `rights_given`).
    pub rights_handed_back: u64,
    /// Periods this node compacted into settlements (issue #14).
    pub periods_compacted: u64,
    /// Settlements forgotten after `settlement_keep_ms`.
    pub settlements_forgotten: u64,
    /// Settlements received whole from peers, and settlement parts refused (out of order,
    /// or an assembly that failed its digest).
    pub settlements_received: u64,
    pub settlement_parts_refused: u64,
    /// Escrow counters forgotten because their period was sealed here.
    pub escrow_counters_dropped: u64,
    /// Decommissioned identities retired from the ledger (every slot of theirs compacted).
    pub identities_retired: u64,
    /// Directory ops folded into placeholders (superseded, older than the audit window).
    pub directory_ops_compacted: u64,
    pub ledger_chunks_applied: u64,
    /// Valid messages that brought nothing new: duplicates, replays, or data that an
    /// anti-entropy round delivered first. Harmless (merges are idempotent); counted.
    pub messages_stale: u64,
    /// Rights replies matching no request in flight (late, duplicated or replayed): the
    /// counter they carry merges harmlessly, and they start nothing.
    pub replies_unmatched: u64,
    /// Ledger parts not applied because they started beyond what this replica held of
    /// their origin (pushes lost before them); each pulls the gap from the sender.
    pub ledger_gaps: u64,
    /// Peers' directory ops an exchange brought here, passed on to the other peers
    /// (`pass_on_directory`).
    pub directory_passed_on: u64,
    /// Member tables that showed a peer holding increments this replica lacked (every
    /// push of them missed it); each pulls from that peer.
    pub ledger_behind: u64,
    /// Counters left out of an escrow message because their encoding alone is over the
    /// byte budget (`message_bytes_max`): the transport would drop the frame, so they are
    /// not sent and no peer hears of their change. An error, exported for the caller to
    /// log and alert on; a counter's size grows with the nodes that touched it.
    pub counters_oversize: u64,
    pub lag: LagHistogram,
}

/// What changed since the last [`Node::take_changes`], to be made durable. Applying the
/// batches in order to the state at the previous batch reproduces the node's state.
#[derive(Clone, Debug, Default)]
pub struct Changes {
    /// Own increments, in chunks, and every ledger delta received that brought something
    /// (replayed in order, they rebuild the ledger exactly: slots join by max).
    pub ledger: Vec<Delta>,
    /// Ops new since the last batch, every origin, in chunks of complete runs.
    pub directory: Vec<DirectoryDelta>,
    /// Whole counters (merging is idempotent).
    pub escrow: Vec<(CounterKey, BoundedCounter)>,
    /// [`Node::own_changes`] when the batch was taken: once it is durable, outputs
    /// reflecting own changes up to this point may leave.
    pub own_changes: u64,
    /// Every directory op this batch and the ones before it hand out (each origin's prefix):
    /// once the batch is durable, pass it to [`Node::promote`] to enforce the peers' ops it
    /// carries.
    pub directory_through: VersionVector,
    /// Periods compacted here (or whose settlement arrived), to apply after `ledger`: their
    /// slots are dropped, and slots of theirs in later batches ignored.
    pub settled: Vec<Settlement>,
    /// Origins retired here (`Ledger::retire`), to retire after `settled`.
    pub retired: Vec<NodeId>,
    /// Counters of every period ending at or before this were forgotten (sealed here): to
    /// drop after `escrow` ([`EscrowBook::forget_through`]).
    pub escrow_forgotten_through_ms: Option<u64>,
    /// Settlements of every period ending at or before this were forgotten
    /// (`Ledger::forget_settled`): to apply after `settled`.
    pub settlements_forgotten_before_ms: Option<u64>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.ledger.is_empty()
            && self.directory.is_empty()
            && self.escrow.is_empty()
            && self.settled.is_empty()
            && self.retired.is_empty()
            && self.escrow_forgotten_through_ms.is_none()
            && self.settlements_forgotten_before_ms.is_none()
    }
}

/// Newly connected peers queued for a sync while another exchange is in flight.
const CONNECT_SYNCS_MAX: usize = 3;

/// The longest a queued sync with a newly connected peer waits for the exchange in flight:
/// a few WAN round trips, enough for the first exchange to bring a heal's data.
const CONNECT_SYNC_WAIT_MS: u64 = 300;

/// How often a node looks at its mesh (short of `mesh_peers` connections, or over twice
/// that).
const MESH_CHECK_MS: u64 = 1_000;

/// How often a node whose mesh is full connects to one more random member anyway (the
/// excess is pruned): a mesh that formed while part of the fleet was unreachable (a
/// partition, a restart) mixes again instead of staying joined through a few nodes.
const MESH_SHUFFLE_MS: u64 = 30_000;

/// How often a node tries to connect to one member it does not hear from (suspect or
/// dead, neither left nor decommissioned): a partition heals unseen until someone tries
/// the link, and a mesh whose halves each hold enough connections would never try.
const MESH_PROBE_MS: u64 = 5_000;

/// Counters a peer's escrow push changed here are passed on at most this often, together:
/// a busy counter changes with every push of its holder (50 a second), and relaying each
/// change at once would multiply that by the fanout at every node. A quarter second per
/// hop keeps every node's view of who holds rights within a second or so at N = 200.
const ESCROW_RELAY_MS: u64 = 250;

/// Ops per directory chunk in [`Changes`].
const PERSIST_OPS_MAX: usize = 10_000;

/// Recent consumption of one key here: when, and how fast.
#[derive(Clone, Copy, Debug)]
struct Demand {
    last_ms: u64,
    window_start_ms: u64,
    /// Amount consumed (or asked for) in the current one-second window.
    window_amount: u64,
    /// Amount in the last complete window (per second).
    rate_per_s: u64,
}

impl Demand {
    fn new(now_ms: u64) -> Demand {
        Demand {
            last_ms: now_ms,
            window_start_ms: now_ms,
            window_amount: 0,
            rate_per_s: 0,
        }
    }

    fn record(&mut self, now_ms: u64, amount: u64) {
        let elapsed = now_ms.saturating_sub(self.window_start_ms);
        if elapsed >= 1_000 {
            // A gap of more than a window means the rate fell to nothing in between.
            self.rate_per_s = if elapsed < 2_000 {
                self.window_amount
            } else {
                0
            };
            self.window_start_ms = now_ms;
            self.window_amount = 0;
        }
        self.window_amount = self.window_amount.saturating_add(amount);
        self.last_ms = now_ms;
    }

    /// Per second, at least: the last complete window, or the current one so far.
    fn rate(&self) -> u64 {
        self.rate_per_s.max(self.window_amount)
    }
}

/// One rights request sent and not answered yet.
#[derive(Clone, Copy, Debug)]
struct Asked {
    id: u64,
    donor: NodeId,
    sent_ms: u64,
    /// What this request may bring: what was asked, or half of what the donor holds in
    /// this view if less (what an idle donor gives).
    expected: u64,
}

/// An escrow request in progress for one key.
#[derive(Clone, Debug)]
struct Request {
    /// Requests in flight, to distinct donors (at most `rights_donors_max`).
    in_flight: Vec<Asked>,
    /// Failed attempts in a row.
    failures: u32,
    /// No new attempt before this.
    next_try_ms: u64,
    /// Donors that had nothing in this episode (skipped until one gives).
    empty_donors: BTreeSet<NodeId>,
}

/// The persisted part of a node: everything else is rebuilt after a restart.
#[derive(Clone, Debug)]
pub struct NodeState {
    pub ledger: Ledger,
    pub directory: Directory,
    pub escrow: EscrowBook,
}

/// One node's protocol state machine. See the module doc.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    config: SyncConfig,
    rng: Rng,
    ledger: Ledger,
    directory: Directory,
    escrow: EscrowBook,
    escrow_digest: EscrowDigest,
    /// Keys whose counter a consume or a refund changed since the digest was last brought up
    /// to date (in that order, consecutive repeats dropped). They only note their key here;
    /// the digest is rehashed from the book before it is read or sent and at every push
    /// (see [`Node::escrow_digest`]), so what peers see is what eager updates gave.
    digest_stale: Vec<CounterKey>,
    peers: BTreeMap<NodeId, PeerView>,
    membership: Membership,
    /// When to look at the mesh again (see [`Node::maintain_mesh`]); `None` while it is
    /// full or nobody else is known.
    mesh_check_ms: Option<u64>,
    /// When the mesh next connects to one more member anyway (see `MESH_SHUFFLE_MS`).
    mesh_shuffle_ms: u64,
    /// When this node next tries a member it does not hear from (see `MESH_PROBE_MS`).
    mesh_probe_ms: u64,
    /// When the next member round is due (see [`crate::membership`]).
    next_member_round_ms: u64,
    outputs: Vec<Output>,
    stats: Stats,
    /// Own ledger sequence and directory sequence already pushed.
    ledger_pushed: u64,
    directory_pushed: u64,
    /// Counters changed here since the last push (sorted when pushed). Hash tables, here and
    /// below, for what the request path touches per key (one probe each); anything whose
    /// order reaches an output or the store is sorted when taken.
    escrow_dirty: IdHashSet<CounterKey>,
    push_due_ms: Option<u64>,
    next_anti_entropy_ms: u64,
    /// Pulls sent and not answered yet, by peer: sent at.
    pulls_in_flight: BTreeMap<NodeId, u64>,
    /// Peers newly connected while an exchange was in flight, with when they connected, to
    /// sync with one at a time (at most `CONNECT_SYNCS_MAX`; the random rounds reach the
    /// rest), each after `CONNECT_SYNC_WAIT_MS` at most.
    connect_syncs: VecDeque<(NodeId, u64)>,
    /// [`Node::leave`] was called: no more rights requests (rights asked for now would
    /// only strand here).
    leaving: bool,
    requests: BTreeMap<CounterKey, Request>,
    next_request_id: u64,
    /// Donor side: when each (requester, key) was last given rights.
    given_at: IdHashMap<(NodeId, CounterKey), u64>,
    /// When each `given_at` entry may lapse (see [`Expiries`]).
    given_expiry: Expiries<(NodeId, CounterKey)>,
    /// When this node last consumed for each key.
    consumed_at: IdHashMap<CounterKey, Demand>,
    /// When each `consumed_at` entry may lapse (see [`Expiries`]).
    consumed_expiry: Expiries<CounterKey>,
    /// More lapsed entries than a tick looks at were left, or counters of sealed periods
    /// to forget: tick again at this time.
    expiry_backlog_ms: Option<u64>,
    /// Bumped whenever rights for some counter arrive from a peer ([`Node::rights_epoch`]).
    rights_epoch: u64,
    retry_tokens: f64,
    tokens_at_ms: u64,
    /// The quota policy may have changed (directory ops applied) or a period rolled.
    quotas_dirty: bool,
    /// The hour of the last full pass (a new hour brings new hourly periods, a new month
    /// new monthly ones).
    quotas_hour: Option<Period>,
    /// Tenants whose ops arrived since the last pass: only they are looked at again (a
    /// pass over every tenant costs ~100 ms at 100K tenants, under the node's lock).
    quota_tenants: BTreeSet<TenantId>,
    /// The full pass in progress, walked in bounded steps (`node/quota.rs`).
    quota_sweep: Option<quota::QuotaSweep>,
    /// When the oldest change in the pending push batch was made.
    first_change_ms: Option<u64>,
    /// Count of changes to this node's own state (its ledger slot, its directory ops, its
    /// escrow cells): the ticket a durability gate waits for.
    own_changes: u64,
    /// What [`Node::take_changes`] has already handed out.
    persisted_own_seq: u64,
    /// Received ledger deltas that changed something, not yet handed out.
    persist_ledger: Vec<Delta>,
    persisted_directory: VersionVector,
    /// Counters changed (here or by a merge) since the last [`Node::take_changes`] (sorted
    /// when taken).
    persist_dirty: IdHashSet<CounterKey>,
    /// Counters a peer's escrow push changed, to pass on at `escrow_relay_due_ms`.
    escrow_relay: IdHashSet<CounterKey>,
    escrow_relay_due_ms: Option<u64>,
    /// Rights moved toward demand between requests (`node/rebalance.rs`).
    rebalance: rebalance::Rebalance,
    /// Sealed periods: compaction, settlements received, forgotten counters
    /// (`node/finality.rs`).
    periods: finality::Periods,
}

impl Node {
    /// A node restored from its persisted state (or empty: `NodeState` of fresh types).
    /// `seed` drives its jitter and peer choice; `now_ms` schedules its first round at a
    /// phase derived from its id.
    pub fn new(id: NodeId, config: SyncConfig, seed: u64, state: NodeState, now_ms: u64) -> Node {
        let escrow_digest = EscrowDigest::of(state.escrow.iter());
        let phase = mix(id.0) % config.anti_entropy_interval_ms.max(1);
        let ledger_pushed = state.ledger.version_vector().get(id);
        let directory_pushed = state.directory.version_vector().get(id);
        let persisted_own_seq = state.ledger.version_vector().get(id);
        let persisted_directory = state.directory.version_vector().clone();
        Node {
            id,
            rng: Rng::new(seed ^ mix(id.0)),
            ledger: state.ledger,
            directory: state.directory,
            escrow: state.escrow,
            escrow_digest,
            digest_stale: Vec::new(),
            peers: BTreeMap::new(),
            membership: Membership::new(id, now_ms),
            mesh_check_ms: (config.mesh_peers > 0).then_some(now_ms),
            mesh_shuffle_ms: now_ms + MESH_SHUFFLE_MS + phase % MESH_SHUFFLE_MS,
            mesh_probe_ms: now_ms + MESH_PROBE_MS + phase % MESH_PROBE_MS,
            next_member_round_ms: now_ms + phase % config.member_gossip_interval_ms.max(1),
            outputs: Vec::new(),
            stats: Stats::default(),
            ledger_pushed,
            directory_pushed,
            escrow_dirty: IdHashSet::default(),
            push_due_ms: None,
            next_anti_entropy_ms: now_ms + phase,
            pulls_in_flight: BTreeMap::new(),
            connect_syncs: VecDeque::new(),
            leaving: false,
            requests: BTreeMap::new(),
            next_request_id: 1,
            given_at: IdHashMap::default(),
            given_expiry: Expiries::default(),
            consumed_at: IdHashMap::default(),
            consumed_expiry: Expiries::default(),
            expiry_backlog_ms: None,
            rights_epoch: 0,
            retry_tokens: f64::from(config.rights_retry_budget_per_s),
            tokens_at_ms: now_ms,
            quotas_dirty: true,
            quotas_hour: None,
            quota_tenants: BTreeSet::new(),
            quota_sweep: None,
            first_change_ms: None,
            own_changes: 0,
            persisted_own_seq,
            persist_ledger: Vec::new(),
            persisted_directory,
            persist_dirty: IdHashSet::default(),
            escrow_relay: IdHashSet::default(),
            escrow_relay_due_ms: None,
            rebalance: rebalance::Rebalance::default(),
            // A node whose store held none of its own entries seals only after
            // `seal_grace_ms` (see `Node::seal_due`).
            periods: finality::Periods::new(if ledger_pushed > 0 {
                now_ms
            } else {
                now_ms.saturating_add(config.seal_grace_ms)
            }),
            config,
        }
    }

    /// A fresh node with empty state.
    pub fn empty(id: NodeId, config: SyncConfig, seed: u64, now_ms: u64) -> Node {
        let state = NodeState {
            ledger: Ledger::new(id),
            directory: Directory::new(id),
            escrow: EscrowBook::new(),
        };
        Node::new(id, config, seed, state, now_ms)
    }

    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn escrow(&self) -> &EscrowBook {
        &self.escrow
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn peers(&self) -> &BTreeMap<NodeId, PeerView> {
        &self.peers
    }

    /// The member table: every member heard of, its address and heartbeat (see
    /// [`crate::membership`]).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// Sets the address this node advertises to its peers, in the transport's encoding (at
    /// most [`crate::membership::ADDR_BYTES_MAX`] bytes).
    pub fn set_address(&mut self, addr: Vec<u8>) {
        self.membership.set_address(addr);
    }

    /// `node`'s liveness in this view: connected, or heard of (directly or by gossip)
    /// within `member_suspect_ms` is alive; then suspect, then dead after `peer_stale_ms`.
    pub fn liveness(&self, node: NodeId, now_ms: u64) -> Liveness {
        let view = self.peers.get(&node);
        if view.is_some_and(|p| p.left) {
            return Liveness::Left;
        }
        self.membership.liveness(
            node,
            view.is_some_and(|p| p.connected),
            now_ms,
            self.config.member_suspect_ms,
            self.config.peer_stale_ms,
        )
    }

    /// Peers known but not heard from within `peer_stale_ms` (or never); neither a member
    /// that left nor one an operator decommissioned is stale (both are gone on purpose).
    pub fn stale_peers(&self, now_ms: u64) -> Vec<NodeId> {
        self.peers
            .iter()
            .filter(|(id, p)| {
                !p.left
                    && !self.directory.is_decommissioned(**id)
                    && p.last_heard_ms
                        .is_none_or(|t| now_ms.saturating_sub(t) > self.config.peer_stale_ms)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The state to persist (staged directory ops included: a snapshot taken with the
    /// batch that hands them out makes them durable with it).
    pub fn state(&self) -> NodeState {
        NodeState {
            ledger: self.ledger.clone(),
            directory: self.directory.clone(),
            escrow: self.escrow.clone(),
        }
    }

    /// Count of own-state changes so far (see [`Changes::own_changes`]). Outputs taken
    /// now may reflect changes up to this count; a caller that persists must not send
    /// them before the batch holding this count is durable.
    pub fn own_changes(&self) -> u64 {
        self.own_changes
    }

    /// Everything that changed since the previous call (own and merged), for the store.
    /// Once handed out it is not handed out again: a caller whose write fails must stop
    /// (restart from what is durable) rather than carry on.
    pub fn take_changes(&mut self) -> Changes {
        let mut ledger = std::mem::take(&mut self.persist_ledger);
        let own = self.own_chunks(self.persisted_own_seq, Delta::ENTRIES_MAX);
        if let Some(last) = own.last() {
            self.persisted_own_seq = last.parts[0].to_seq;
        }
        ledger.extend(own);
        let mut directory = Vec::new();
        loop {
            let chunk = self
                .directory
                .delta_since(&self.persisted_directory, PERSIST_OPS_MAX);
            if chunk.is_empty() {
                break;
            }
            for op in &chunk.ops {
                self.persisted_directory.advance(op.origin, op.last_seq());
            }
            directory.push(chunk);
        }
        let escrow = sorted(&mut self.persist_dirty)
            .into_iter()
            .filter_map(|key| self.escrow.get(&key).map(|c| (key, c.clone())))
            .collect();
        Changes {
            ledger,
            directory,
            escrow,
            own_changes: self.own_changes,
            directory_through: self.persisted_directory.clone(),
            settled: std::mem::take(&mut self.periods.persist_settled),
            retired: std::mem::take(&mut self.periods.persist_retired),
            escrow_forgotten_through_ms: self.periods.persist_forgotten_ms.take(),
            settlements_forgotten_before_ms: self.periods.persist_settlements_forgotten_ms.take(),
        }
    }

    /// Enforces the peers' directory ops that a committed batch made durable: call it with
    /// that batch's [`Changes::directory_through`] once the batch is durable (see the
    /// module doc, "Peers' directory ops"). Returns how many ops it enforced. Calling it
    /// again, or with an older batch's vector, does nothing.
    pub fn promote(&mut self, directory_through: &VersionVector) -> usize {
        let before = self.directory.decommissioned().count();
        let tenants = self.directory.promote(directory_through);
        if self.directory.decommissioned().count() != before {
            // Stranded rights to recover (see `stranded`): every quota, again.
            self.quotas_dirty = true;
        }
        let promoted = tenants.len();
        // A quota, a home or a status may have changed: look at those tenants again.
        self.quota_tenants.extend(tenants);
        promoted
    }

    /// Peers' directory ops held but not enforced until a commit covers them: a persisting
    /// caller commits soon when this is non-zero (the delay is that of an enforced
    /// revocation).
    pub fn staged_directory_ops(&self) -> usize {
        self.directory.staged()
    }

    /// Outputs produced since the last call.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.outputs)
    }

    /// The latest time the caller must deliver the next [`Input::Tick`].
    pub fn next_wakeup_ms(&self) -> u64 {
        let mut next = self.next_anti_entropy_ms;
        if let Some((_, queued_ms)) = self.connect_syncs.front() {
            // A queued sync starts when no exchange is in flight (an answer: an input), or
            // when it has waited long enough.
            next = next.min(queued_ms + CONNECT_SYNC_WAIT_MS);
        }
        if let Some(due) = self.push_due_ms {
            next = next.min(due);
        }
        if let Some(due) = self.mesh_check_ms {
            next = next.min(due);
        }
        if let Some(due) = self.escrow_relay_due_ms {
            next = next.min(due);
        }
        next = next.min(self.next_member_round_ms);
        next = next.min(self.next_seal_ms());
        if let Some(due) = self.rebalance.next_due_ms() {
            next = next.min(due);
        }
        if let Some(due) = self.quota_sweep_due_ms() {
            next = next.min(due);
        }
        if let Some(due) = self.expiry_backlog_ms {
            next = next.min(due);
        }
        for request in self.requests.values() {
            let timeout_ms = self.config.rights_request_timeout_ms;
            next = next.min(match request.in_flight.iter().map(|a| a.sent_ms).min() {
                Some(sent_ms) => sent_ms + timeout_ms,
                // Gave up: only new demand (a consume) wakes it.
                None if request.failures >= self.config.rights_attempts_max => continue,
                None => request.next_try_ms,
            });
        }
        next
    }

    // ---- local operations -------------------------------------------------------------

    /// Adds usage to this node's ledger slot; pushed within `push_delay_ms`.
    pub fn increment(
        &mut self,
        now_ms: u64,
        key: CounterKey,
        amount: u64,
    ) -> Result<(), IncrementError> {
        self.ledger.increment(key, amount)?;
        self.own_changes += 1;
        self.schedule_push(now_ms);
        Ok(())
    }

    /// Makes a directory edit here; pushed within `push_delay_ms`.
    pub fn edit_directory(
        &mut self,
        now_ms: u64,
        actor: &str,
        change: Change,
    ) -> Result<Op, DirectoryError> {
        let op = self.directory.change(now_ms, actor, change)?;
        self.own_changes += 1;
        match op.change.tenant() {
            Some(tenant) => self.quota_tenants.insert(tenant),
            // A decommission: stranded rights to recover in every quota.
            None => std::mem::replace(&mut self.quotas_dirty, true),
        };
        self.schedule_push(now_ms);
        self.reconcile_quotas(now_ms);
        Ok(op)
    }

    /// Rights this node holds for `key`.
    pub fn local_rights(&self, key: &CounterKey) -> u64 {
        self.escrow.local_rights(key, self.id)
    }

    /// Spends `amount` of this node's rights for `key` (the quota check of a request).
    /// When rights run low, a request to peers is started; a refusal says whether rights
    /// exist elsewhere in this node's view (`Insufficient` with `available` local only).
    /// The amount counts as demand, refused or not: it sizes the rights this node asks for.
    pub fn consume(
        &mut self,
        now_ms: u64,
        key: CounterKey,
        amount: u64,
    ) -> Result<(), EscrowError> {
        self.consume_with(now_ms, key, amount, true)
    }

    /// [`Node::consume`] again for the same request, after it waited for rights: the
    /// amount is not counted as demand a second time (the demand rate sets the low-water
    /// mark and request sizes, and would otherwise grow with every wait).
    pub fn consume_again(
        &mut self,
        now_ms: u64,
        key: CounterKey,
        amount: u64,
    ) -> Result<(), EscrowError> {
        self.consume_with(now_ms, key, amount, false)
    }

    /// How many times rights have arrived from peers so far: a waiter for rights compares
    /// it before and after instead of polling (the transport publishes it).
    pub fn rights_epoch(&self) -> u64 {
        self.rights_epoch
    }

    /// The demand rate of `key` here, per second (what was consumed or asked for in the
    /// last complete second, or the current one if higher); 0 for a key never consumed.
    pub fn demand_per_s(&self, key: &CounterKey) -> u64 {
        self.consumed_at.get(key).map_or(0, Demand::rate)
    }

    fn consume_with(
        &mut self,
        now_ms: u64,
        key: CounterKey,
        amount: u64,
        new_demand: bool,
    ) -> Result<(), EscrowError> {
        self.reconcile_quotas(now_ms);
        self.reconcile_unswept(now_ms, key.tenant);
        self.refuse_sealed(key.period)?;
        if self.directory.is_decommissioned(self.id) {
            // Its rights were granted again elsewhere: spending them would spend twice.
            return Err(EscrowError::InsufficientRights {
                node: self.id,
                requested: amount,
                available: 0,
            });
        }
        // One probe of the book: spend, read what is left; the digest is brought up to date
        // later (`digest_stale`). No counter yet: refuse without creating an empty one
        // (which the digest would not know of, and peers would exchange for nothing).
        let id = self.id;
        let (result, rights) = match self.escrow.get_mut(&key) {
            Some(counter) => {
                let result = counter.consume(id, amount);
                (result, counter.local_rights(id))
            }
            None if amount == 0 => (Ok(()), 0),
            None => (
                Err(EscrowError::InsufficientRights {
                    node: id,
                    requested: amount,
                    available: 0,
                }),
                0,
            ),
        };
        let demand = match self.consumed_at.entry(key) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                self.consumed_expiry
                    .push(now_ms.saturating_add(self.config.donor_busy_ms), key);
                entry.insert(Demand::new(now_ms))
            }
        };
        if new_demand {
            demand.record(now_ms, amount);
        }
        let rate = demand.rate();
        let low_water = self.low_water_at(rate);
        if result.is_ok() {
            self.own_cell_changed(now_ms, key, amount);
        } else if let Some(request) = self.requests.get_mut(&key) {
            // New demand after giving up: try again now.
            if request.in_flight.is_empty() && request.failures >= self.config.rights_attempts_max {
                request.failures = 0;
                request.next_try_ms = now_ms;
                request.empty_donors.clear();
            }
        }
        self.maybe_request_with(now_ms, key, rights, low_water);
        result
    }

    /// Gives back `amount` of the rights this node consumed for `key`, for admitted work that
    /// was not delivered (shed, failed, timed out): quota follows delivered work. Like a
    /// consume it is an own change (counted in [`Node::own_changes`], handed to
    /// [`Node::take_changes`], pushed within `push_delay_ms`). Refused beyond what this node
    /// consumed for `key` and has not refunded yet. The tenant's quota policy is looked at
    /// again: rights given back above a lowered quota are called back.
    pub fn refund(&mut self, now_ms: u64, key: CounterKey, amount: u64) -> Result<(), EscrowError> {
        if amount == 0 {
            return Ok(());
        }
        self.refuse_sealed(key.period)?;
        let id = self.id;
        let Some(counter) = self.escrow.get_mut(&key) else {
            return Err(EscrowError::RefundBeyondConsumed {
                node: id,
                requested: amount,
                refundable: 0,
            });
        };
        counter.refund(id, amount)?;
        self.own_cell_changed(now_ms, key, amount);
        self.quota_tenants.insert(key.tenant);
        self.reconcile_quotas(now_ms);
        Ok(())
    }

    /// A consume or a refund of `amount` changed this node's cells of `key` (nothing if 0):
    /// the digest noted stale (rehashed later, see `digest_stale`), pushed with the next
    /// batch, persisted with the next [`Node::take_changes`].
    fn own_cell_changed(&mut self, now_ms: u64, key: CounterKey, amount: u64) {
        if amount > 0 && self.digest_stale.last() != Some(&key) {
            self.digest_stale.push(key);
        }
        self.mark_changed(key);
        self.schedule_push(now_ms);
    }

    /// The rights other nodes hold for `key`, in this node's view: every unspent right
    /// (granted − retired − net consumed: transfers cancel out of the sum) less this
    /// node's. O(N) sums of per-node cells, not a scan of the transfer matrix.
    pub fn rights_elsewhere(&self, key: &CounterKey) -> u64 {
        self.escrow.get(key).map_or(0, |counter| {
            let unspent = counter
                .total_granted()
                .saturating_sub(counter.total_retired())
                .saturating_sub(counter.total_consumed());
            let elsewhere = unspent.saturating_sub(u128::from(counter.local_rights(self.id)));
            u64::try_from(elsewhere).unwrap_or(u64::MAX)
        })
    }

    /// Graceful leave: hands every unused right to a connected peer (the one holding the
    /// most rights for the key, so demand stays where it is), pushes, and says goodbye.
    /// From then on this node asks nobody for rights, and peers that heard the goodbye
    /// give it none; rights that still arrive (a reply already under way) are handed over
    /// by calling it again.
    pub fn leave(&mut self) {
        self.leaving = true;
        self.requests.clear();
        // Decommissioned: its rights were granted again elsewhere; handing them over
        // would create them twice.
        let keys: Vec<CounterKey> = if self.directory.is_decommissioned(self.id) {
            Vec::new()
        } else {
            self.escrow.iter().map(|(k, _)| *k).collect()
        };
        for key in keys {
            let rights = self.local_rights(&key);
            if rights == 0 {
                continue;
            }
            let heir = self
                .connected_peers()
                .into_iter()
                .max_by_key(|p| (self.escrow.local_rights(&key, *p), *p));
            if let Some(heir) = heir {
                if self
                    .escrow
                    .counter_mut(key)
                    .transfer(self.id, heir, rights)
                    .is_ok()
                {
                    self.touch(key);
                }
            }
        }
        self.flush_push(0);
        // The goodbye for the peers connected now, and the own entry marked left (one
        // beat later than any before it) for them to gossip on to the others.
        self.membership.leave(0);
        let own = self.membership.own().clone();
        for peer in self.connected_peers() {
            self.send(
                peer,
                Message::Members {
                    entries: vec![own.clone()],
                    answer: true,
                },
            );
            self.send(peer, Message::Leaving);
        }
    }

    // ---- inputs -----------------------------------------------------------------------

    /// Handles one input; outputs accumulate for [`Node::take_outputs`].
    pub fn handle(&mut self, now_ms: u64, input: Input) {
        match input {
            Input::Tick => self.tick(now_ms),
            Input::PeerConnected(peer) => {
                self.membership.heard(peer, now_ms);
                let view = self.peers.entry(peer).or_default();
                let was_connected = view.connected;
                view.connected = true;
                view.left = false;
                view.last_heard_ms = Some(now_ms);
                // A peer (re)appearing after a partition or a restart: repair at once
                // rather than at the next random round — but one exchange at a time.
                // After a heal every newly reachable peer connects at once, and syncing
                // with each would fetch the same missing data from all of them (at 200
                // nodes, 100x the data a half/half heal needs). Queued instead: the
                // first exchange brings the data, the next ones only compare digests.
                if !was_connected {
                    self.sync_on_connect(now_ms, peer);
                }
            }
            Input::ConnectionLost(peer) => {
                // What was in flight with the peer may have gone down with the closed
                // connection (its answer will not come): repaired as on a connect.
                if self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.connected && !p.left)
                {
                    self.pulls_in_flight.remove(&peer);
                    self.sync_on_connect(now_ms, peer);
                }
            }
            Input::PeerDisconnected(peer) => {
                let view = self.peers.entry(peer).or_default();
                view.connected = false;
                view.disconnected_ms = Some(now_ms);
                self.pulls_in_flight.remove(&peer);
                self.mesh_check_ms = Some(now_ms);
            }
            Input::Message { from, message } => {
                // From itself, or from a member the operator decommissioned (it takes no
                // part any more: a late state of it must not bring its rights back).
                if from == self.id || self.directory.is_decommissioned(from) {
                    self.stats.messages_refused += 1;
                    return;
                }
                if let Err(_error) = self.receive(now_ms, from, message) {
                    self.stats.messages_refused += 1;
                }
            }
        }
    }

    /// The exchange with a peer that (re)connected: at once when no other exchange is in
    /// flight, else queued (at most `CONNECT_SYNCS_MAX`, see `next_connect_sync`).
    fn sync_on_connect(&mut self, now_ms: u64, peer: NodeId) {
        if !self.exchange_in_flight(now_ms) {
            self.sync_with(now_ms, peer);
        } else if self.connect_syncs.len() < CONNECT_SYNCS_MAX
            && !self.connect_syncs.iter().any(|(p, _)| *p == peer)
        {
            self.connect_syncs.push_back((peer, now_ms));
        }
    }

    fn tick(&mut self, now_ms: u64) {
        let forgetting = self.seal_due(now_ms);
        self.compact_due(now_ms);
        self.compact_directory_due(now_ms);
        self.reconcile_quotas(now_ms);
        self.quota_sweep_step(now_ms);
        if self.mesh_check_ms.is_some_and(|due| due <= now_ms) {
            self.maintain_mesh(now_ms);
        }
        if self.next_member_round_ms <= now_ms {
            self.member_round(now_ms);
            self.next_member_round_ms =
                self.next_round_ms(now_ms, self.config.member_gossip_interval_ms);
        }
        self.next_connect_sync(now_ms);
        if self.push_due_ms.is_some_and(|due| due <= now_ms) {
            self.flush_push(now_ms);
        }
        if self.escrow_relay_due_ms.is_some_and(|due| due <= now_ms) {
            self.relay_escrow();
        }
        if self.next_anti_entropy_ms <= now_ms {
            self.anti_entropy_round(now_ms);
            self.next_anti_entropy_ms =
                self.next_round_ms(now_ms, self.config.anti_entropy_interval_ms);
        }
        let keys: Vec<CounterKey> = self.requests.keys().copied().collect();
        for key in keys {
            self.maybe_request(now_ms, key);
        }
        // Forget donor grace entries and consumption times that no longer matter: only
        // entries whose deadline passed are looked at, at most EXPIRY_CHECKS_MAX of each
        // kind per tick (a backlog ticks again at once), not every entry on every tick.
        let grace = self.config.donor_grace_ms;
        let mut due = Vec::new();
        let mut backlog = self
            .given_expiry
            .pop_due(now_ms, EXPIRY_CHECKS_MAX, &mut due);
        for entry in due {
            match self.given_at.get(&entry) {
                Some(at) if now_ms.saturating_sub(*at) <= grace => {
                    // Given again since: look again when that gift's grace ends.
                    self.given_expiry.push(at.saturating_add(grace), entry);
                }
                Some(_) => {
                    self.given_at.remove(&entry);
                }
                None => {}
            }
        }
        let busy = self.config.donor_busy_ms;
        let mut due = Vec::new();
        backlog |= self
            .consumed_expiry
            .pop_due(now_ms, EXPIRY_CHECKS_MAX, &mut due);
        let mut went_idle = Vec::new();
        for key in due {
            match self.consumed_at.get(&key) {
                Some(d) if now_ms.saturating_sub(d.last_ms) <= busy => {
                    self.consumed_expiry
                        .push(d.last_ms.saturating_add(busy), key);
                }
                Some(_) => {
                    self.consumed_at.remove(&key);
                    went_idle.push(key);
                }
                None => {}
            }
        }
        self.expiry_backlog_ms = (backlog || forgetting).then(|| retry_at(now_ms, 0));
        for key in went_idle {
            self.note_idle(now_ms, key);
        }
        self.rebalance_due(now_ms);
    }

    /// When the next periodic round is due: `interval_ms` from now, jittered by
    /// `anti_entropy_jitter`, never this same millisecond.
    fn next_round_ms(&mut self, now_ms: u64, interval_ms: u64) -> u64 {
        now_ms
            + self
                .rng
                .jitter(interval_ms, self.config.anti_entropy_jitter)
                .max(1)
    }

    fn receive(&mut self, now_ms: u64, from: NodeId, message: Message) -> Result<(), MessageError> {
        message.validate()?;
        let view = self.peers.entry(from).or_default();
        view.last_heard_ms = Some(now_ms);
        self.membership.heard(from, now_ms);
        match message {
            Message::LedgerPush {
                delta,
                first_change_ms,
                relay,
            } => {
                let fresh = self.apply_ledger(now_ms, from, &delta)?;
                let lag_ms = now_ms.saturating_sub(first_change_ms);
                if let Some(origin) = delta.parts.first().map(|p| p.origin) {
                    if fresh.is_some() {
                        self.stats.lag.observe(lag_ms);
                        self.peers.entry(origin).or_default().lag_ms = Some(lag_ms);
                    }
                }
                if let (Some(fresh), true) = (fresh, relay) {
                    let origins: Vec<NodeId> = fresh.parts.iter().map(|p| p.origin).collect();
                    self.gossip(
                        Message::LedgerPush {
                            delta: fresh,
                            first_change_ms,
                            relay: true,
                        },
                        from,
                        &origins,
                        false,
                    );
                }
            }
            Message::LedgerPull {
                digest,
                settled,
                forgotten_before_ms,
                resume,
            } => self.answer_pull(now_ms, from, &digest, &settled, forgotten_before_ms, resume),
            Message::SettlementPart(part) => self.take_settlement_part(now_ms, from, part),
            Message::LedgerChunk { delta, more } => {
                self.pulls_in_flight.remove(&from);
                self.apply_ledger(now_ms, from, &delta)?;
                self.stats.ledger_chunks_applied += 1;
                if more {
                    self.send_pull(now_ms, from);
                } else {
                    self.next_connect_sync(now_ms);
                }
            }
            Message::DirectoryPush { delta, relay } => {
                if self.stage_directory(&delta)? > 0 && relay {
                    let origins: Vec<NodeId> = delta.ops.iter().map(|op| op.origin).collect();
                    self.gossip(
                        Message::DirectoryPush { delta, relay },
                        from,
                        &origins,
                        false,
                    );
                }
            }
            Message::Directory(sync) => {
                // Staged, like a push: enforced by `promote` once durable.
                let held = matches!(sync, SyncMessage::Ops { .. })
                    .then(|| self.directory.version_vector().clone());
                let reply = self
                    .directory
                    .stage_sync(&sync, self.config.directory_budget())?;
                if let Some(reply) = reply {
                    self.send(from, Message::Directory(reply));
                }
                if let Some(held) = held {
                    self.pass_on_directory(now_ms, from, &held);
                }
            }
            Message::EscrowPush(counters) => {
                let changed = self.merge_counters(now_ms, &counters);
                if changed.is_empty() {
                    self.stats.messages_stale += 1;
                } else if !self.connected_to_every_member(now_ms) {
                    // In a partial mesh the sender reached only its fanout: pass the
                    // change on, coalesced (see `ESCROW_RELAY_MS`).
                    self.escrow_relay.extend(changed);
                    self.escrow_relay_due_ms
                        .get_or_insert(now_ms + ESCROW_RELAY_MS);
                }
            }
            Message::EscrowDigest { root } => {
                let digest = self.escrow_digest();
                if root != digest.root() {
                    let buckets = digest.buckets().to_vec();
                    self.send(from, Message::EscrowBuckets { buckets });
                }
            }
            Message::EscrowBuckets { buckets } => {
                let want = self.escrow_digest().differing(&buckets);
                self.send_counters(from, &want, want.clone());
            }
            Message::EscrowCounters { counters, want } => {
                self.merge_counters(now_ms, &counters);
                if !want.is_empty() {
                    self.send_counters(from, &want, Vec::new());
                }
            }
            Message::RightsRequest {
                request_id,
                key,
                want,
            } => self.donate(now_ms, from, request_id, key, want),
            Message::RightsReply {
                request_id,
                key,
                given,
                counter,
            } => {
                let _ = self.merge_counters(now_ms, &[(key, counter)]);
                let matched = self.requests.get_mut(&key).and_then(|request| {
                    let at = request
                        .in_flight
                        .iter()
                        .position(|a| a.id == request_id && a.donor == from)?;
                    request.in_flight.swap_remove(at);
                    if given > 0 {
                        request.failures = 0;
                        request.empty_donors.clear();
                    } else {
                        request.empty_donors.insert(from);
                    }
                    request.next_try_ms = now_ms;
                    Some(())
                });
                if matched.is_none() {
                    self.stats.replies_unmatched += 1;
                }
                self.maybe_request(now_ms, key);
            }
            Message::Leaving => {
                let view = self.peers.entry(from).or_default();
                view.left = true;
                self.membership.left(from);
            }
            Message::Members { entries, answer } => {
                let version = self.membership.version();
                let directory = &self.directory;
                let newer = self
                    .membership
                    .merge(now_ms, &entries, |node| !directory.is_decommissioned(node));
                self.mirror_members(&entries);
                if self.membership.version() != version {
                    self.mesh_check_ms = Some(now_ms);
                }
                // The sender holds increments this replica lacks (every push of them
                // missed it): pull them.
                let vv = self.ledger.version_vector();
                if entries.iter().any(|e| e.ledger_seq > vv.get(e.node)) {
                    self.stats.ledger_behind += 1;
                    self.send_pull(now_ms, from);
                }
                let mut newer = newer;
                self.stamp_ledger_seqs(&mut newer);
                if !answer && !newer.is_empty() {
                    self.send(
                        from,
                        Message::Members {
                            entries: newer,
                            answer: true,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    fn send(&mut self, to: NodeId, message: Message) {
        self.outputs.push(Output::Send {
            to,
            message: Arc::new(message),
        });
    }
}

/// Lapsed entries of each timed table (`given_at`, `consumed_at`) one tick looks at: a
/// few hundred microseconds at most (4,096 measured 1-2 ms on the shared 2-vCPU VM); a
/// burst beyond it (100K keys whose demand ended together) is worked off over the next
/// ticks, one millisecond apart (~100 ticks for 100K).
const EXPIRY_CHECKS_MAX: usize = 1_024;

/// When entries of a timed table may lapse: a min-heap of `(deadline, key)`, one item per
/// live entry (pushed when the entry is created, pushed again with its new deadline when
/// it is found refreshed). A tick pops only what is due, so forgetting costs
/// O(lapsed · log n) instead of a scan of every entry on every tick (~100K keys at 100K
/// tenants). An entry is forgotten at the first tick after its deadline, as the scan did,
/// unless more than [`EXPIRY_CHECKS_MAX`] lapse at once (then within a few ticks).
#[derive(Debug)]
struct Expiries<K: Ord>(BinaryHeap<Reverse<(u64, K)>>);

impl<K: Ord> Default for Expiries<K> {
    fn default() -> Self {
        Expiries(BinaryHeap::new())
    }
}

impl<K: Ord + Copy> Expiries<K> {
    fn push(&mut self, deadline_ms: u64, key: K) {
        self.0.push(Reverse((deadline_ms, key)));
    }

    /// Moves into `out` the keys whose deadline is before `now_ms`, at most `budget`, in
    /// deadline order; returns whether more are due.
    fn pop_due(&mut self, now_ms: u64, budget: usize, out: &mut Vec<K>) -> bool {
        while let Some(Reverse((deadline_ms, key))) = self.0.peek().copied() {
            if deadline_ms >= now_ms {
                return false;
            }
            if out.len() == budget {
                return true;
            }
            self.0.pop();
            out.push(key);
        }
        false
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Bytes an escrow message spends besides its counters (wire version, kind, list
/// lengths, a reply's ids and amount, a bucket list): a generous bound.
const ENVELOPE_BYTES: usize = 4_096;

/// The encoded size of one `(key, counter)` entry of an escrow message.
fn counter_entry_bytes(key: &CounterKey, counter: &BoundedCounter) -> usize {
    // Sizing without allocating: postcard's counting flavour.
    postcard::serialize_with_flavor(&(key, counter), postcard::ser_flavors::Size::default())
        .unwrap_or(usize::MAX)
}

/// Empties a set (keeping its table for the next batch) and returns its keys in order: what
/// reaches an output or the store must not depend on a hash table's order.
fn sorted(set: &mut IdHashSet<CounterKey>) -> Vec<CounterKey> {
    let mut keys: Vec<CounterKey> = set.drain().collect();
    keys.sort_unstable();
    keys
}

/// When to try again after `delay_ms`: never the same millisecond, so every tick moves
/// the node's next wakeup into the future (the driver's contract), whatever the config.
fn retry_at(now_ms: u64, delay_ms: u64) -> u64 {
    now_ms + delay_ms.max(1)
}

/// Capped exponential backoff after `failures` failures in a row (before jitter).
fn backoff_ms(config: &SyncConfig, failures: u32) -> u64 {
    config
        .rights_retry_base_ms
        .saturating_mul(1u64 << failures.min(20))
        .min(config.rights_retry_max_ms)
}

/// `vv` with `origin`'s entry replaced by `seq` (which may be lower).
fn with_entry(vv: &VersionVector, origin: NodeId, seq: u64) -> VersionVector {
    let mut out = VersionVector::new();
    for (node, value) in vv.iter() {
        if node != origin {
            out.advance(node, value);
        }
    }
    out.advance(origin, seq);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crdt::Metric;

    #[test]
    fn lapsed_demand_is_forgotten_in_bounded_steps_and_fresh_demand_is_kept() {
        let now = 1_800_000_000_000;
        let mut node = Node::empty(NodeId(1), SyncConfig::default(), 5, now);
        let month = Period::containing(PeriodKind::Month, now);
        let count = 2 * EXPIRY_CHECKS_MAX + 5;
        let keys: Vec<CounterKey> = (1..=count as u64)
            .map(|t| CounterKey::new(TenantId(t), month, Metric::Requests))
            .collect();
        for key in &keys {
            // Refused (no rights here), but it is demand all the same.
            let _ = node.consume(now, *key, 1);
        }
        assert_eq!(node.consumed_at.len(), count);
        let busy = node.config().donor_busy_ms;
        // One key consumes again just before the others lapse: it stays busy.
        let _ = node.consume(now + busy, keys[0], 1);
        let mut at = now + busy + 1;
        let mut ticks = 0;
        loop {
            let before = node.consumed_at.len();
            node.handle(at, Input::Tick);
            assert!(before - node.consumed_at.len() <= EXPIRY_CHECKS_MAX);
            ticks += 1;
            if node.expiry_backlog_ms.is_none() {
                break;
            }
            assert!(ticks <= 3, "a backlog of {count} takes 3 ticks");
            let ticked = at;
            at = node.next_wakeup_ms();
            assert_eq!(at, ticked + 1, "a backlog ticks again at once");
        }
        assert_eq!(ticks, 3);
        assert_eq!(node.consumed_at.len(), 1, "only the refreshed key is busy");
        assert!(node.consumed_at.contains_key(&keys[0]));
        assert_eq!(node.consumed_expiry.len(), 1, "one deadline per live entry");
        node.handle(now + 2 * busy + 1, Input::Tick);
        assert!(node.consumed_at.is_empty());
        assert_eq!(node.consumed_expiry.len(), 0);
    }
}
