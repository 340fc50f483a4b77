//! The node's replicated state (one [`tessera_sync::Node`]), made durable by one writer
//! task and replicated by the libp2p transport.
//!
//! Shape, and why:
//! - **One lock, short holds.** The protocol core lives behind a `std::sync::Mutex` shared
//!   by the request path (key lookup, quota consume, usage increment: each well under a
//!   microsecond), the admin API and the transport. Nothing slow happens under it: no IO,
//!   no await.
//! - **Group commit.** Every change gets a ticket ([`Node::own_changes`]). One writer task
//!   takes everything pending ([`Node::take_changes`]), appends it to the store in one
//!   fsynced transaction, then publishes the ticket it covered; each billed request waits
//!   for its ticket before its response leaves. However many requests finish during one
//!   commit, the next commit carries them all.
//! - **Fail-stop.** If a commit fails, the writer stops and marks the replica failed:
//!   `/readyz` fails, billed requests get 503, and the transport sends nothing more (its
//!   durability gate never opens), so state that may be lost never leaves the node. A
//!   restart recovers from what is durable.
//! - **Identity.** The libp2p keypair lives in the store; the node id is derived from it.
//!   A node whose data directory is lost comes back as a new node with a fresh ledger slot
//!   (never an old slot from zero).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::histogram::Histogram;
use tessera_crdt::NodeId;
use tessera_sync::net::{self, DurabilityGate, Keypair, NetHandle, NetSettings, NetStats};
use tessera_sync::{Input, Node, SyncConfig};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch, Notify};

pub mod auth;
pub mod ops;
pub mod records;
pub mod store;

use crate::config::Config;
use crate::faults::StoreFaults;
use store::{LogCompactor, PendingRecords, Store, StoreError};

const IDENTITY: &str = "identity";
const OPERATOR: &str = "operator_token_sha256";

#[derive(Debug, Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored node identity does not decode: {0}")]
    Identity(String),
    #[error("starting replication: {0}")]
    Net(#[from] net::NetError),
    #[error("invalid replication address {0:?}")]
    Address(String),
    #[error("writing the generated operator token to {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
}

/// Logs each replication peer's passage from fresh to stale and back (stale: not heard
/// from within `stale_ms`, [`ops::is_stale`]), so an operator reading the log sees a
/// member go silent, not only its connection drop. Staleness comes from time passing, not
/// from an event, so this sleeps until the freshest-looking member could next turn stale
/// (at most `stale_ms`, and at most 5 s, to see one come back), then copies the members
/// in one short hold and compares. Ends when the control plane is dropped.
pub async fn log_freshness(control: std::sync::Weak<ControlPlane>, stale_ms: u64) {
    let mut stale = std::collections::BTreeSet::new();
    loop {
        let Some(plane) = control.upgrade() else {
            return;
        };
        let now = now_ms();
        let members = plane.cluster_report(None, now).members;
        drop(plane);
        let mut next_ms = stale_ms.min(5_000);
        for member in &members {
            let view = &member.view;
            if ops::is_stale(view, member.decommissioned, now, stale_ms) {
                if stale.insert(member.id) {
                    tracing::warn!(
                        peer = %member.id,
                        connected = view.connected,
                        last_heard_age_ms = view.last_heard_ms.map(|t| now.saturating_sub(t)),
                        "replication peer stale: not heard from within cluster.peer_stale_ms"
                    );
                }
            } else {
                if stale.remove(&member.id) {
                    tracing::info!(peer = %member.id, "replication peer heard from again");
                }
                if let Some(heard) = view.last_heard_ms {
                    next_ms = next_ms.min((heard + stale_ms + 1).saturating_sub(now));
                }
            }
        }
        stale.retain(|id| members.iter().any(|m| m.id == *id));
        tokio::time::sleep(Duration::from_millis(next_ms.max(100))).await;
    }
}

/// The file, in the data directory, that a generated operator token is written to.
pub const OPERATOR_TOKEN_FILE: &str = "operator-token";

/// Writes a generated operator token where only the node's user can read it (mode 0600,
/// synced), instead of printing it to a log that others may read or ship. Only its digest
/// is stored; the operator reads the file once, then deletes it.
fn write_token_file(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()
}

/// Why a change could not be made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DurableError {
    #[error("the store failed; the node no longer takes billable work")]
    Failed,
    #[error("the store did not commit in time")]
    Timeout,
}

/// Why the usage records could not be moved to their files ([`ControlPlane::flush_records`]).
#[derive(Debug, Clone, Error)]
pub enum RotateError {
    #[error("the store writer has stopped")]
    WriterStopped,
    #[error("moving the records timed out")]
    Timeout,
    /// The store or the files failed (shared by every waiter of one rotation).
    #[error("moving the records failed: {0}")]
    Failed(Arc<RotateFailure>),
}

/// What failed in one rotation.
#[derive(Debug, Error)]
pub enum RotateFailure {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("writing the records' files: {0}")]
    Files(#[from] std::io::Error),
    #[error("the task moving the records panicked")]
    Panicked,
}

/// What the writer has made durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Durable {
    own_changes: u64,
    /// The writer's takes ([`Node::take_changes`] calls) that are committed.
    takes: u64,
    failed: bool,
}

pub struct ControlPlane {
    node: Arc<Mutex<Node>>,
    id: NodeId,
    peer_id: String,
    wake_writer: Arc<Notify>,
    durable: watch::Receiver<Durable>,
    failed: Arc<AtomicBool>,
    /// The writer's takes so far (advanced under the node lock).
    takes: Arc<AtomicU64>,
    stop_writer: watch::Sender<bool>,
    /// Usage records of billed requests, taken by the writer with the changes.
    records: Arc<Mutex<Vec<crate::control::records::Pending>>>,
    rotate: mpsc::Sender<oneshot::Sender<Result<(), RotateError>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    net: Option<NetHandle>,
    /// Replayed log records at start (for the start-up log line and tests).
    pub replayed: u64,
    /// With no operator token configured: the digest of the one kept in the store.
    pub operator_digest: Option<[u8; 32]>,
    /// Where that token was written, when this start generated it (see
    /// [`write_token_file`]).
    pub new_operator_token_file: Option<std::path::PathBuf>,
    /// The store's injected faults (a no-op without the feature `fault-injection`).
    faults: StoreFaults,
    /// How long each hold of the node's lock lasted (`tessera_node_lock_hold_seconds`).
    holds: Histogram,
    /// Refunds so far: rights back in this node's hands without a peer.
    freed: watch::Sender<u64>,
}

/// A hold of the node's lock, timed: its length is observed in the lock-hold histogram
/// when it ends, so the rule that holds stay short is measured, not assumed.
struct Held<'a> {
    guard: MutexGuard<'a, Node>,
    since: Instant,
    holds: &'a Histogram,
}

/// Takes the node's lock (a poisoned lock is taken as it is: the core's state is never
/// left half-changed by a panic in the edge, which holds it only to call the core).
fn hold<'a>(node: &'a Mutex<Node>, holds: &'a Histogram) -> Held<'a> {
    let guard = node.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    Held {
        guard,
        since: Instant::now(),
        holds,
    }
}

impl Deref for Held<'_> {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.guard
    }
}

impl DerefMut for Held<'_> {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.guard
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.holds.observe(self.since.elapsed().as_secs_f64());
    }
}

/// Wall-clock milliseconds since the Unix epoch: the node's clock for the protocol core.
/// Shifted by the injected clock offset of [`crate::faults`] (0 in production builds).
pub fn now_ms() -> u64 {
    crate::faults::shift_ms(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

impl ControlPlane {
    /// Opens the store in the data directory, restores the state, starts the writer and,
    /// when a cluster key is configured, the transport. Every hold of the node's lock by
    /// the edge and the writer is observed in `holds`. Must run inside a tokio runtime.
    pub async fn start(config: &Config, holds: Histogram) -> Result<ControlPlane, ControlError> {
        let mut store = Store::open(&config.data_dir, config.store.log_bytes_max)?;
        let keypair = match store.meta(IDENTITY)? {
            Some(bytes) => Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| ControlError::Identity(e.to_string()))?,
            None => {
                let keypair = Keypair::generate_ed25519();
                let bytes = keypair
                    .to_protobuf_encoding()
                    .map_err(|e| ControlError::Identity(e.to_string()))?;
                store.set_meta(IDENTITY, &bytes)?;
                keypair
            }
        };
        let (operator_digest, new_operator_token_file) =
            if config.auth.operator_token_sha256.is_empty() {
                match store.meta(OPERATOR)? {
                    Some(bytes) => (<[u8; 32]>::try_from(bytes.as_slice()).ok(), None),
                    None => {
                        let (token, digest) = crate::control::auth::new_operator_token();
                        let digest =
                            crate::control::auth::parse_digest(&digest).expect("a fresh digest");
                        // The file first: a digest stored without its token would lock the
                        // operator out.
                        let path = config.data_dir.join(OPERATOR_TOKEN_FILE);
                        write_token_file(&path, &token).map_err(|source| {
                            ControlError::TokenFile {
                                path: path.display().to_string(),
                                source,
                            }
                        })?;
                        store.set_meta(OPERATOR, &digest)?;
                        (Some(digest), Some(path))
                    }
                }
            } else {
                (None, None)
            };
        let peer_id = keypair.public().to_peer_id();
        let id = net::node_id_of(&peer_id);
        let loaded = store.load(id)?;
        let sync_config = SyncConfig {
            peer_stale_ms: config.cluster.peer_stale_ms,
            mesh_peers: config.cluster.mesh_peers,
            seal_grace_ms: config.billing.seal_grace_ms,
            compact_after_ms: config.billing.retention_days * 86_400_000,
            settlement_keep_ms: config.billing.settlement_retention_days * 86_400_000,
            directory_audit_keep_ms: config.store.audit_retention_days * 86_400_000,
            // The transport's frame limit: the core cuts its messages below it.
            message_bytes_max: config.cluster.message_bytes_max,
            ..SyncConfig::default()
        };
        let now = now_ms();
        let node = Arc::new(Mutex::new(Node::new(
            id,
            sync_config,
            id.0 ^ now,
            loaded.state,
            now,
        )));
        let wake_writer = Arc::new(Notify::new());
        let (durable_tx, durable) = watch::channel(Durable::default());
        let (gate_tx, gate_rx) = watch::channel(0u64);
        let failed = Arc::new(AtomicBool::new(false));
        let takes = Arc::new(AtomicU64::new(0));
        let (stop_writer, writer_stopped) = watch::channel(false);
        let records = Arc::new(Mutex::new(Vec::new()));
        let faults = store.faults();
        let (rotate, rotate_requests) = mpsc::channel(16);
        let writer = tokio::spawn(writer(Writer {
            node_id: id,
            store,
            stopped: writer_stopped,
            node: node.clone(),
            takes: takes.clone(),
            wake: wake_writer.clone(),
            durable: durable_tx,
            gate: gate_tx,
            failed: failed.clone(),
            interval: Duration::from_millis(config.store.flush_interval_ms),
            records: records.clone(),
            records_dir: crate::control::records::directory(&config.data_dir),
            records_interval: Duration::from_millis(config.store.records_interval_ms),
            records_keep_ms: config.store.records_retention_days * 86_400_000,
            directory_keep_ms: config.store.audit_retention_days * 86_400_000,
            rotate_requests,
            holds: holds.clone(),
        }));
        let net = match config.cluster_key() {
            None => {
                // Nothing else would tick the core (seals, compaction, forgetting).
                tokio::spawn(ticker(node.clone(), holds.clone(), stop_writer.subscribe()));
                None
            }
            Some(cluster_key) => {
                let parse = |addrs: &[String]| {
                    addrs
                        .iter()
                        .map(|a| a.parse().map_err(|_| ControlError::Address(a.clone())))
                        .collect::<Result<Vec<_>, _>>()
                };
                let settings = NetSettings {
                    listen: parse(&config.cluster.listen)?,
                    bootstrap: parse(&config.cluster.bootstrap)?,
                    advertise: parse(&config.cluster.advertise)?,
                    mdns: config.cluster.mdns,
                    message_bytes_max: config.cluster.message_bytes_max,
                    request_timeout_ms: config.cluster.request_timeout_ms,
                    connections_max: config.cluster.connections_max,
                    redial_base_ms: config.cluster.redial_base_ms,
                    redial_max_ms: config.cluster.redial_max_ms,
                    redial_lost_max_ms: config.cluster.redial_lost_max_ms,
                    dial_timeout_ms: config.cluster.dial_timeout_ms,
                    ping_interval_ms: config.cluster.ping_interval_ms,
                    liveness_timeout_ms: config.cluster.liveness_timeout_ms,
                    clock_offset_ms: crate::faults::clock_offset_ms(),
                    admission: net::AdmissionSettings {
                        pending_incoming_max: config.cluster.pending_incoming_max,
                        pending_per_ip_max: config.cluster.pending_per_ip_max,
                        established_per_ip_max: config.cluster.established_per_ip_max,
                        handshake_timeout_ms: config.cluster.handshake_timeout_ms,
                        ipv6_prefix_bits: config.cluster.ipv6_prefix_bits,
                        ..net::AdmissionSettings::default()
                    },
                    ..NetSettings::new(cluster_key)
                };
                let gate = DurabilityGate {
                    request: wake_writer.clone(),
                    durable: gate_rx,
                    wait_ms: config.cluster.durable_wait_ms,
                };
                Some(net::spawn(keypair, settings, node.clone(), Some(gate)).await?)
            }
        };
        Ok(ControlPlane {
            node,
            id,
            peer_id: peer_id.to_string(),
            wake_writer,
            durable,
            failed,
            takes,
            stop_writer,
            records,
            rotate,
            writer: Mutex::new(Some(writer)),
            net,
            replayed: loaded.records,
            operator_digest,
            new_operator_token_file,
            faults,
            holds,
            freed: watch::channel(0).0,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The store's fault switch (see [`crate::faults`]; it switches nothing without the
    /// feature `fault-injection`).
    pub fn faults(&self) -> &StoreFaults {
        &self.faults
    }

    /// The protocol core, for the named operations (`ops`) and the leave alone: private
    /// to `control`, so no other code can hold it. Never across an await.
    fn lock(&self) -> Held<'_> {
        hold(&self.node, &self.holds)
    }

    /// Runs `f` on the protocol core, for tests that set up a state no API reaches (a
    /// member heard of once, say). Only with the feature `fault-injection`.
    #[cfg(feature = "fault-injection")]
    pub fn with_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        f(&mut self.lock())
    }

    /// After a local change: let the transport send its push now rather than at its next
    /// timer.
    pub fn wake_net(&self) {
        if let Some(net) = &self.net {
            net.wake();
        }
    }

    /// Waits until every change up to `ticket` ([`Node::own_changes`] after the change)
    /// is durable.
    pub async fn durable(&self, ticket: u64, timeout: Duration) -> Result<(), DurableError> {
        self.wait(timeout, |d| d.failed || d.own_changes >= ticket)
            .await
    }

    /// Call with the node locked, after reading state to report: a ticket for
    /// [`ControlPlane::flushed`].
    fn take_ticket(&self) -> u64 {
        self.takes.load(Ordering::Acquire) + 1
    }

    /// Waits until everything the node held when the ticket was taken (own changes and
    /// data from peers) is durable: the next take of the writer, once committed.
    pub async fn flushed(&self, ticket: u64, timeout: Duration) -> Result<(), DurableError> {
        self.wait(timeout, |d| d.failed || d.takes >= ticket).await
    }

    async fn wait(
        &self,
        timeout: Duration,
        done: impl FnMut(&Durable) -> bool,
    ) -> Result<(), DurableError> {
        self.wake_writer.notify_one();
        let mut durable = self.durable.clone();
        let waited =
            tokio::time::timeout(
                timeout,
                async move { durable.wait_for(done).await.map(|d| *d) },
            )
            .await;
        match waited {
            Ok(Ok(d)) if !d.failed => Ok(()),
            Ok(_) => Err(DurableError::Failed),
            Err(_) => Err(DurableError::Timeout),
        }
    }

    /// Queues a usage record. Call with the node locked, in the same hold as the usage
    /// increments it describes, so both land in the same commit.
    fn push_record(&self, record: records::Pending) {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(record);
    }

    /// Moves every usage record committed so far to its file; returns once done.
    pub async fn flush_records(&self, timeout: Duration) -> Result<(), RotateError> {
        let (reply, done) = oneshot::channel();
        self.rotate
            .send(reply)
            .await
            .map_err(|_| RotateError::WriterStopped)?;
        self.wake_writer.notify_one();
        match tokio::time::timeout(timeout, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RotateError::WriterStopped),
            Err(_) => Err(RotateError::Timeout),
        }
    }

    /// Stops the transport and the writer after a last commit; the store is closed when
    /// this returns.
    pub async fn shutdown(&self) {
        if let Some(net) = &self.net {
            net.stop();
        }
        let _ = self.stop_writer.send(true);
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }

    /// The store failed: no billable work any more.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Whether the replication transport runs (a cluster key is configured).
    pub fn is_replicating(&self) -> bool {
        self.net.is_some()
    }

    /// Changes when rights arrive from a peer ([`NetHandle::rights_arrivals`]); `None`
    /// without replication (no peer can send any).
    pub fn rights_arrivals(&self) -> Option<watch::Receiver<u64>> {
        self.net.as_ref().map(NetHandle::rights_arrivals)
    }

    /// Changes when a request here gives rights back (a refund): a request waiting for
    /// rights tries again then, as when rights arrive from a peer.
    pub fn rights_freed(&self) -> watch::Receiver<u64> {
        self.freed.subscribe()
    }

    pub fn net_stats(&self) -> Option<NetStats> {
        self.net.as_ref().map(NetHandle::stats)
    }

    /// Graceful leave: hands this node's unspent quota rights to connected peers
    /// ([`Node::leave`]: each counter's rights to the peer holding most of it, then a
    /// goodbye), lets the transport send that once it is durable, and stops the
    /// transport; within `wait`.
    ///
    /// Call it after the last request that could consume or refund has finished: a refund
    /// after the hand-over would give the rights back to a node that is going away.
    /// Rights may still arrive after a hand-over — answers to rights requests this node
    /// sent while it was serving, and the requests its recent demand makes until that
    /// demand is a second old — so each pass waits [`LEAVE_SETTLE`] and hands over again
    /// whatever came, until a pass brings nothing (no rights here, no request sent) or
    /// `wait` is spent. Rights that arrive after that stay here until the node returns.
    pub async fn leave(&self, wait: Duration) -> Handover {
        let mut handover = Handover::default();
        let Some(net) = &self.net else {
            return handover;
        };
        let deadline = Instant::now() + wait;
        loop {
            let (requests_sent, ticket) = {
                let mut node = self.lock();
                if !node
                    .peers()
                    .values()
                    .any(|peer| peer.connected && !peer.left)
                {
                    // Nobody to hand the rights to: they stay here.
                    handover.kept = own_rights(&node);
                    break;
                }
                let before = own_rights(&node);
                node.leave();
                handover.rights += before.saturating_sub(own_rights(&node));
                handover.passes += 1;
                (node.stats().rights_requests_sent, node.own_changes())
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if let Err(error) = self.durable(ticket, remaining).await {
                // Not durable: the transport holds it back (and so nothing leaves).
                handover.failed = Some(error);
                handover.kept = own_rights(&self.lock());
                break;
            }
            net.wake();
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(LEAVE_SETTLE.min(remaining)).await;
            let node = self.lock();
            handover.kept = own_rights(&node);
            let quiet = handover.kept == 0 && node.stats().rights_requests_sent == requests_sent;
            if quiet || Instant::now() >= deadline {
                break;
            }
        }
        net.stop();
        handover
    }
}

/// How long a leave lets the transport send a hand-over before it looks for rights that
/// arrived meanwhile (several round trips on a LAN; the transport is stopped after the
/// last pass).
pub const LEAVE_SETTLE: Duration = Duration::from_millis(200);

/// What [`ControlPlane::leave`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Handover {
    /// Rights handed to peers, every counter and pass together.
    pub rights: u64,
    /// Hand-overs made ([`Node::leave`] calls): more than one when rights kept arriving.
    pub passes: u32,
    /// Rights still held when the leave ended (no connected peer, `wait` spent, or the
    /// store failed): they stay with this node until it returns.
    pub kept: u64,
    /// The hand-over could not be made durable, so it was not sent.
    pub failed: Option<DurableError>,
}

/// This node's unspent rights, every counter together.
fn own_rights(node: &Node) -> u64 {
    node.escrow()
        .iter()
        .map(|(key, _)| node.local_rights(key))
        .fold(0, u64::saturating_add)
}

/// The writer task's state.
struct Writer {
    /// This node, named in its usage records.
    node_id: NodeId,
    store: Store,
    stopped: watch::Receiver<bool>,
    node: Arc<Mutex<Node>>,
    takes: Arc<AtomicU64>,
    wake: Arc<Notify>,
    durable: watch::Sender<Durable>,
    gate: watch::Sender<u64>,
    failed: Arc<AtomicBool>,
    interval: Duration,
    records: Arc<Mutex<Vec<crate::control::records::Pending>>>,
    records_dir: std::path::PathBuf,
    records_interval: Duration,
    /// Hourly record files are deleted this long after their hour (0: never).
    records_keep_ms: u64,
    rotate_requests: mpsc::Receiver<oneshot::Sender<Result<(), RotateError>>>,
    /// Directory edits older than this are folded by the log's compactor, as by the node.
    directory_keep_ms: u64,
    holds: Histogram,
}

/// The writer: commits pending changes when woken (a request waits, or the transport
/// staged peers' directory ops, which are enforced only once durable: [`Node::promote`]
/// after the commit) or every `interval` (other changes from peers), one transaction at a
/// time; on stop, commits once more and closes the store.
async fn writer(writer: Writer) {
    let Writer {
        node_id,
        mut store,
        mut stopped,
        node,
        takes,
        wake,
        durable,
        gate,
        failed,
        interval,
        records,
        records_dir,
        records_interval,
        records_keep_ms,
        rotate_requests,
        directory_keep_ms,
        holds,
    } = writer;
    let mut last = false;
    // Records move to their files beside the commits, not between them: a rotation
    // (thousands of records read, appended, fsynced, removed) used to hold up every
    // billed request's commit while it ran. It ends after the last commit (`Ok`), or
    // at once if the writer fails (the sender dropped).
    let (commits_over, commits_over_rx) = oneshot::channel();
    let mover = tokio::spawn(move_records(
        store.pending_records(),
        records_dir,
        records_interval,
        records_keep_ms,
        rotate_requests,
        commits_over_rx,
    ));
    // The log folds into a fresh snapshot beside the commits too (store::LogCompactor):
    // the node's state is never copied under its lock for it.
    let fold_due = Arc::new(Notify::new());
    let (folds_over, folds_over_rx) = oneshot::channel();
    let folder = tokio::spawn(fold_log(
        store.log_compactor(node_id, directory_keep_ms),
        fold_due.clone(),
        folds_over_rx,
    ));
    let mut flush_at = tokio::time::Instant::now() + interval;
    while !last {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(flush_at) => {}
            _ = stopped.changed() => last = true,
        }
        flush_at = tokio::time::Instant::now() + interval;
        let (changes, usage_records) = {
            let mut node = hold(&node, &holds);
            let changes = node.take_changes();
            let usage_records = std::mem::take(
                &mut *records
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            );
            takes.fetch_add(1, Ordering::AcqRel);
            (changes, usage_records)
        };
        let usage_records: Vec<Vec<u8>> = usage_records.iter().map(|r| r.encode(node_id)).collect();
        let take = takes.load(Ordering::Acquire);
        let own_changes = changes.own_changes;
        let directory_through = changes.directory_through.clone();
        if changes.is_empty() && !last {
            durable.send_if_modified(|d| {
                let advanced = d.own_changes < own_changes || d.takes < take;
                d.own_changes = d.own_changes.max(own_changes);
                d.takes = d.takes.max(take);
                advanced
            });
            gate.send_if_modified(|g| {
                let advanced = *g < own_changes;
                *g = (*g).max(own_changes);
                advanced
            });
            continue;
        }
        let outcome = tokio::task::spawn_blocking(move || {
            let result = store.commit(&changes, &usage_records);
            (store, result)
        })
        .await;
        match outcome {
            Ok((returned, Ok(due))) => {
                store = returned;
                if due {
                    fold_due.notify_one();
                }
                // Durable now: the peers' directory ops this batch carried may be enforced.
                hold(&node, &holds).promote(&directory_through);
                durable.send_modify(|d| {
                    d.own_changes = d.own_changes.max(own_changes);
                    d.takes = d.takes.max(take);
                });
                gate.send_modify(|g| *g = (*g).max(own_changes));
            }
            Ok((_, Err(error))) => {
                tracing::error!(%error, "store commit failed: the node stops taking billable work");
                failed.store(true, Ordering::Release);
                durable.send_modify(|d| d.failed = true);
                break;
            }
            Err(panic) => {
                tracing::error!(%panic, "store writer panicked: the node stops taking billable work");
                failed.store(true, Ordering::Release);
                durable.send_modify(|d| d.failed = true);
                break;
            }
        }
    }
    // After the last commit the records it carried go to their files once more; after a
    // failed one, the store takes no more writes (the mover stops at once). Either way
    // both tasks are awaited: each holds the database, and the store is closed, so that
    // the same file can be opened again, only when this task ends.
    if last && !failed.load(Ordering::Acquire) {
        let _ = commits_over.send(());
    } else {
        drop(commits_over);
    }
    let _ = folds_over.send(());
    let _ = mover.await;
    let _ = folder.await;
}

/// After a fold that failed, the next waits this long (a fold costs seconds of CPU, and
/// the log stays readable meanwhile: a restart replays it whole).
const FOLD_RETRY: Duration = Duration::from_secs(60);

/// Folds the store's log into a fresh snapshot each time the writer finds it over
/// `store.log_bytes_max` ([`LogCompactor`]), one fold at a time; returns when the writer
/// ends (after a fold under way, so that the store closes after it).
async fn fold_log(compactor: LogCompactor, due: Arc<Notify>, mut over: oneshot::Receiver<()>) {
    let compactor = Arc::new(compactor);
    loop {
        tokio::select! {
            biased;
            _ = &mut over => return,
            () = due.notified() => {}
        }
        // Commits made during a fold still found the log over the bound (it shrinks only
        // when the fold ends) and left a wake-up: not a reason to fold again at once.
        if !compactor.due() {
            continue;
        }
        let running = compactor.clone();
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || running.run(now_ms())).await {
            Ok(Ok(folded)) => tracing::info!(
                records = folded.records,
                bytes = folded.bytes,
                ms = started.elapsed().as_millis() as u64,
                "folded the store's log into a snapshot"
            ),
            failed => {
                match failed {
                    Ok(Err(error)) => tracing::warn!(%error, "folding the store's log failed"),
                    _ => tracing::warn!("folding the store's log panicked"),
                }
                tokio::select! {
                    () = tokio::time::sleep(FOLD_RETRY) => {}
                    _ = &mut over => return,
                }
            }
        }
    }
}

/// The core's timers on a node without a transport (no cluster key): ticks at
/// [`Node::next_wakeup_ms`] (at most every 10 ms, at least every minute) until the writer
/// is told to stop. Before, such a node never ticked: it never sealed a period (its usage
/// never read final), compacted, or forgot anything. What the core sends is dropped:
/// there is no one to send it to.
async fn ticker(node: Arc<Mutex<Node>>, holds: Histogram, mut stopped: watch::Receiver<bool>) {
    loop {
        let wakeup_ms = hold(&node, &holds).next_wakeup_ms();
        let sleep_ms = wakeup_ms.saturating_sub(now_ms()).clamp(10, 60_000);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
            _ = stopped.changed() => return,
        }
        let now = now_ms();
        let mut core = hold(&node, &holds);
        if core.next_wakeup_ms() <= now {
            core.handle(now, Input::Tick);
        }
        core.take_outputs();
    }
}

/// Moves usage records from the store to their hourly files every `interval`, when an
/// export asks ([`ControlPlane::flush_records`]: every record committed before the ask is
/// in the files when it is answered), and once more after the writer's last commit.
/// Once an hour (and at start) it deletes the files past `keep_ms` (0: never).
async fn move_records(
    pending: PendingRecords,
    dir: std::path::PathBuf,
    interval: Duration,
    keep_ms: u64,
    mut requests: mpsc::Receiver<oneshot::Sender<Result<(), RotateError>>>,
    mut commits_over: oneshot::Receiver<()>,
) {
    let mut next_at = tokio::time::Instant::now() + interval;
    let mut next_prune = tokio::time::Instant::now();
    loop {
        if keep_ms > 0 && tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + Duration::from_secs(3_600);
            let (dir, before_ms) = (dir.clone(), now_ms().saturating_sub(keep_ms));
            match tokio::task::spawn_blocking(move || records::prune(&dir, before_ms)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(files)) => {
                    tracing::info!(files, "deleted usage record files past their retention");
                }
                Ok(Err(error)) => tracing::warn!(%error, "deleting old usage record files failed"),
                Err(error) => tracing::warn!(%error, "deleting old usage record files panicked"),
            }
        }
        let mut waiting = Vec::new();
        let last = tokio::select! {
            () = tokio::time::sleep_until(next_at) => false,
            Some(reply) = requests.recv() => {
                waiting.push(reply);
                false
            }
            over = &mut commits_over => match over {
                Ok(()) => true,
                // The writer failed: the store takes no more writes.
                Err(_) => return,
            },
        };
        while let Ok(reply) = requests.try_recv() {
            waiting.push(reply);
        }
        let (from, to) = (pending.clone(), dir.clone());
        let moved = tokio::task::spawn_blocking(move || rotate_records(&from, &to))
            .await
            .unwrap_or(Err(RotateFailure::Panicked))
            .map_err(|e| RotateError::Failed(Arc::new(e)));
        if let Err(error) = &moved {
            // The records stay in the store; the next rotation tries again.
            tracing::warn!(%error, "moving usage records to their files failed");
        }
        for reply in waiting {
            let _ = reply.send(moved.clone());
        }
        if last {
            return;
        }
        next_at = tokio::time::Instant::now() + interval;
    }
}

/// Moves usage records from the store to their hourly files, in bounded batches.
/// Moves only the records already there when it starts: the writer adds more meanwhile,
/// and a disk slower than the request rate must not keep one rotation (and an export
/// waiting for it) going for ever.
fn rotate_records(pending: &PendingRecords, dir: &std::path::Path) -> Result<(), RotateFailure> {
    let Some(through) = pending.last_key()? else {
        return Ok(());
    };
    loop {
        let batch = pending.batch(10_000, through)?;
        let Some((last, _)) = batch.last() else {
            return Ok(());
        };
        let last = *last;
        records::append(dir, &batch)?;
        pending.remove_through(last)?;
    }
}
