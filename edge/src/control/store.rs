//! The node's durable state in one redb file (`<data_dir>/tessera.redb`): its identity,
//! and the replicated state (ledger, directory, escrow counters) as a snapshot plus a log
//! of change batches.
//!
//! Why a snapshot plus a log: the protocol core hands out what changed since the last
//! batch ([`tessera_sync::Changes`]): own increments, received deltas, new directory ops,
//! changed counters. Appending that batch is one small write transaction whatever the size
//! of the state, which is what group commit needs (one fsync for every request answered in
//! the batch). Replaying the log over the snapshot rebuilds the state exactly (deltas join
//! by max, ops apply in order, counters merge), so restarting loses nothing that was
//! acknowledged. When the log grows past `log_bytes_max`, a [`LogCompactor`] folds it
//! into a fresh snapshot *from the store itself*, off the commit path and off the node's
//! lock: it reads the snapshot and the log up to some record in one read transaction,
//! replays them (as a restart would), compacts the directory by the node's own rule,
//! encodes, and in one short write transaction writes the new snapshot and drops the log
//! records it covers; records committed meanwhile stay in the log, after it.
//!
//! Why not the obvious snapshot of the running node's state: copying it under the
//! node's lock (`Node::state`) took 186–365 ms at the brief's scale, during which no
//! request could authenticate or be billed, and encoding it inside the commit held every
//! billed request's answer for as long again. The log already holds every change the
//! state went through (ledger compaction, retirement and forgetting included), so the
//! store can rebuild the state on its own; the only thing the log does not replay is the
//! directory's compaction, a local decision that the compactor makes again with the same
//! rule (`directory_audit_keep_ms`).
//!
//! Every operation returns a [`StoreError`] saying which step failed; a record that does
//! not decode stops the start (a node must not serve from state it cannot read).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tessera_crdt::directory::{DirectoryDelta, DirectoryError};
use tessera_crdt::ledger::{Delta, InvalidDelta};
use tessera_crdt::DecodeError;
use tessera_crdt::{Directory, EscrowBook, Ledger, NodeId, Settlement};
use tessera_sync::{Changes, NodeState};
use thiserror::Error;

use crate::faults::StoreFaults;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// Raw usage records waiting to be moved to their files (see `crate::control::records`).
const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");

const FORMAT: &[u8] = b"tessera-store-1";

/// Record tags in a log entry.
const TAG_LEDGER: u8 = 1;
const TAG_DIRECTORY: u8 = 2;
const TAG_ESCROW: u8 = 3;
/// A compacted period's settlement (after the batch's ledger deltas: it drops their slots
/// of that period, and later deltas' slots of it are ignored).
const TAG_SETTLED: u8 = 4;
/// Escrow counters of periods ending at or before a time were forgotten (8 bytes, LE).
const TAG_ESCROW_FORGOTTEN: u8 = 5;
/// An origin retired from the ledger (its node id, 8 bytes LE; after the settlements).
const TAG_RETIRED: u8 = 6;
/// Settlements of periods ending at or before a time were forgotten (8 bytes, LE; after
/// the settlements).
const TAG_SETTLEMENTS_FORGOTTEN: u8 = 7;

/// Bound on one decoded snapshot part or record part (the directory's own cap is 64 MB;
/// a 100K-tenant ledger encodes to ~30 MB).
const PART_BYTES_MAX: usize = 1 << 30;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("opening the store at {path}: {source}")]
    Open {
        path: String,
        source: redb::DatabaseError,
    },
    #[error("the store at {path} has an unknown format (expected {expected})")]
    Format { path: String, expected: String },
    #[error("store transaction: {0}")]
    Transaction(#[from] redb::TransactionError),
    #[error("store table: {0}")]
    Table(#[from] redb::TableError),
    #[error("store read/write: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("store commit: {0}")]
    Commit(#[from] redb::CommitError),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    #[error("corrupt store: log record {seq}: {source}")]
    Record { seq: u64, source: RecordError },
}

/// The open store. One writer (redb serialises write transactions); besides it, the
/// records' mover ([`PendingRecords`]) and the log's compactor ([`LogCompactor`]) each
/// read in their own transactions and write in short ones of their own.
pub struct Store {
    db: Arc<Database>,
    /// Next log sequence number.
    next_seq: u64,
    /// Next record number.
    next_record: u64,
    /// Bytes in the log against their bound, shared with the compactor.
    log: LogSize,
    /// Injected faults (feature `fault-injection`; a no-op without it).
    faults: StoreFaults,
}

/// What [`Store::load`] found.
pub struct Loaded {
    pub state: NodeState,
    /// Log records replayed over the snapshot.
    pub records: u64,
}

impl Store {
    /// Opens (or creates) the store in `data_dir`.
    pub fn open(data_dir: &Path, log_bytes_max: u64) -> Result<Store, StoreError> {
        let path = data_dir.join("tessera.redb");
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let format = meta.get("format")?.map(|v| v.value().to_vec());
            match format {
                None => {
                    meta.insert("format", FORMAT)?;
                }
                Some(found) if found == FORMAT => {}
                Some(_) => {
                    return Err(StoreError::Format {
                        path: path.display().to_string(),
                        expected: String::from_utf8_lossy(FORMAT).into_owned(),
                    })
                }
            }
            txn.open_table(SNAPSHOT)?;
            txn.open_table(LOG)?;
            txn.open_table(RECORDS)?;
        }
        txn.commit()?;
        let (next_seq, log_bytes, next_record) = {
            let read = db.begin_read()?;
            let log = read.open_table(LOG)?;
            let next = log.last()?.map_or(1, |(k, _)| k.value() + 1);
            let mut bytes = 0u64;
            for entry in log.iter()? {
                bytes += entry?.1.value().len() as u64;
            }
            let records = read.open_table(RECORDS)?;
            let next_record = records.last()?.map_or(1, |(k, _)| k.value() + 1);
            (next, bytes, next_record)
        };
        Ok(Store {
            db: Arc::new(db),
            next_seq,
            next_record,
            log: LogSize {
                bytes: Arc::new(AtomicU64::new(log_bytes)),
                max: log_bytes_max,
            },
            faults: StoreFaults::default(),
        })
    }

    /// The switch of this store's injected faults (see [`crate::faults`]).
    pub fn faults(&self) -> StoreFaults {
        self.faults.clone()
    }

    /// A value of the meta table (the node's identity key, the operator token hash).
    pub fn meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db.begin_read()?;
        let meta = read.open_table(META)?;
        Ok(meta.get(name)?.map(|v| v.value().to_vec()))
    }

    /// Sets a meta value durably.
    pub fn set_meta(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(name, value)?;
        txn.commit()?;
        Ok(())
    }

    /// The replicated state as of the last commit: the snapshot with the log replayed.
    pub fn load(&self, node: NodeId) -> Result<Loaded, StoreError> {
        let read = self.db.begin_read()?;
        let (state, replayed) = load_in(&read, node)?;
        Ok(Loaded {
            state,
            records: replayed.records,
        })
    }

    /// The log's compactor (see the module doc), for `node`'s state, folding directory
    /// edits older than `directory_keep_ms` as the node does (0: never).
    pub fn log_compactor(&self, node: NodeId, directory_keep_ms: u64) -> LogCompactor {
        LogCompactor {
            db: self.db.clone(),
            node,
            directory_keep_ms,
            log: self.log.clone(),
            faults: self.faults.clone(),
        }
    }

    /// Appends one batch durably (fsync before return). Returns whether the log is over
    /// `log_bytes_max` (the caller then runs the [`LogCompactor`]).
    pub fn commit(
        &mut self,
        changes: &Changes,
        usage_records: &[Vec<u8>],
    ) -> Result<bool, StoreError> {
        injected_failure(&self.faults)?;
        let record = encode_record(changes);
        if record.is_empty() && usage_records.is_empty() {
            // Nothing to write: no transaction, no fsync (the writer wakes on timers).
            return Ok(self.log.due());
        }
        let txn = self.db.begin_write()?;
        {
            if !usage_records.is_empty() {
                let mut table = txn.open_table(RECORDS)?;
                for (i, line) in usage_records.iter().enumerate() {
                    table.insert(self.next_record + i as u64, line.as_slice())?;
                }
            }
            if !record.is_empty() {
                txn.open_table(LOG)?
                    .insert(self.next_seq, record.as_slice())?;
            }
        }
        txn.commit()?;
        if !record.is_empty() {
            self.log
                .bytes
                .fetch_add(record.len() as u64, Ordering::Relaxed);
            self.next_seq += 1;
        }
        self.next_record += usage_records.len() as u64;
        Ok(self.log.due())
    }

    /// The pending usage records, for the task that moves them to their files while
    /// this store goes on committing.
    pub fn pending_records(&self) -> PendingRecords {
        PendingRecords {
            db: self.db.clone(),
        }
    }

    /// Records in the log (for tests and the start-up log line).
    pub fn log_len(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read()?;
        Ok(read.open_table(LOG)?.len()?)
    }
}

/// What a replay went through: log records, their bytes, and the last one's number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    pub records: u64,
    pub bytes: u64,
    pub last_seq: Option<u64>,
}

/// The snapshot with the log replayed over it, as of the read transaction `read`.
fn load_in(
    read: &redb::ReadTransaction,
    node: NodeId,
) -> Result<(NodeState, Replayed), StoreError> {
    let snapshot = read.open_table(SNAPSHOT)?;
    let part = |name: &str| -> Result<Option<Vec<u8>>, StoreError> {
        Ok(snapshot.get(name)?.map(|v| v.value().to_vec()))
    };
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("snapshot {what}: {e}"))
    };
    let mut state =
        NodeState {
            ledger: match part("ledger")? {
                Some(bytes) => Ledger::decode_bounded(&bytes, PART_BYTES_MAX)
                    .map_err(|e| corrupt("ledger", &e))?,
                None => Ledger::new(node),
            },
            directory: match part("directory")? {
                Some(bytes) => Directory::decode(&bytes, PART_BYTES_MAX)
                    .map_err(|e| corrupt("directory", &e))?,
                None => Directory::new(node),
            },
            escrow: match part("escrow")? {
                Some(bytes) => EscrowBook::decode(&bytes).map_err(|e| corrupt("escrow", &e))?,
                None => EscrowBook::new(),
            },
        };
    if state.ledger.node() != node || state.directory.node() != node {
        return Err(StoreError::Corrupt(
            "the snapshot belongs to another node identity".into(),
        ));
    }
    let log = read.open_table(LOG)?;
    let mut replayed = Replayed::default();
    for entry in log.iter()? {
        let (seq, bytes) = entry?;
        apply_record(&mut state, bytes.value()).map_err(|source| StoreError::Record {
            seq: seq.value(),
            source,
        })?;
        replayed.records += 1;
        replayed.bytes += bytes.value().len() as u64;
        replayed.last_seq = Some(seq.value());
    }
    Ok((state, replayed))
}

/// Folds the store's log into its snapshot, from the store alone (see the module doc).
/// Runs beside the writer: its read sees a consistent snapshot and log prefix, and its
/// one write transaction replaces the snapshot and removes exactly that prefix, so what
/// the writer commits meanwhile stays, after it, and a crash at any point leaves either
/// the old snapshot with the whole log or the new one with the rest — the same state.
pub struct LogCompactor {
    db: Arc<Database>,
    node: NodeId,
    directory_keep_ms: u64,
    log: LogSize,
    faults: StoreFaults,
}

/// The log's size against `store.log_bytes_max`, shared by the store (which adds each
/// record it commits) and the compactor (which takes off what it folds). The fold's
/// subtraction may come before the writer's addition for a record the fold already read
/// (the addition follows the commit); both are modular, and the writer reads the sum
/// only after its own addition, so the value it sees is exact.
#[derive(Clone)]
struct LogSize {
    bytes: Arc<AtomicU64>,
    max: u64,
}

impl LogSize {
    /// Whether the log is over its bound.
    fn due(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) > self.max
    }
}

/// The store's injected failure, as the error a failing disk would give (a no-op
/// without the feature `fault-injection`).
fn injected_failure(faults: &StoreFaults) -> Result<(), StoreError> {
    faults.before_commit().map_err(|injected| {
        StoreError::Storage(redb::StorageError::Io(std::io::Error::other(injected)))
    })
}

impl LogCompactor {
    /// Whether the log is over `log_bytes_max` (what the writer's commits report).
    pub fn due(&self) -> bool {
        self.log.due()
    }

    /// One fold at wall time `now_ms` (blocking: seconds of CPU at the brief's scale, and
    /// a transient second copy of the state in memory). Returns what it folded.
    pub fn run(&self, now_ms: u64) -> Result<Replayed, StoreError> {
        let (mut state, replayed) = load_in(&self.db.begin_read()?, self.node)?;
        let Some(last_seq) = replayed.last_seq else {
            return Ok(replayed);
        };
        if self.directory_keep_ms > 0 {
            state
                .directory
                .compact(now_ms.saturating_sub(self.directory_keep_ms));
        }
        let parts = [
            ("ledger", state.ledger.encode()),
            ("directory", state.directory.encode()),
            ("escrow", state.escrow.encode()),
        ];
        drop(state);
        injected_failure(&self.faults)?;
        let txn = self.db.begin_write()?;
        {
            let mut snapshot = txn.open_table(SNAPSHOT)?;
            for (name, bytes) in &parts {
                snapshot.insert(*name, bytes.as_slice())?;
            }
            txn.open_table(LOG)?.retain_in(..=last_seq, |_, _| false)?;
        }
        txn.commit()?;
        self.log.bytes.fetch_sub(replayed.bytes, Ordering::Relaxed);
        Ok(replayed)
    }
}

/// The usage records a commit leaves in the store, shared with the task that moves them
/// to their hourly files ([`crate::control::records`]). Reading takes a read transaction
/// of its own (never in the writer's way); removing takes one short write transaction,
/// serialised with the writer's commits by redb, over keys the writer never writes again
/// (records are numbered upward).
#[derive(Clone)]
pub struct PendingRecords {
    db: Arc<Database>,
}

impl PendingRecords {
    /// The newest record's number, if any record waits.
    pub fn last_key(&self) -> Result<Option<u64>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RECORDS)?;
        let last = table.last()?.map(|(k, _)| k.value());
        Ok(last)
    }

    /// Records waiting up to number `through`, oldest first, at most `max`.
    pub fn batch(&self, max: usize, through: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RECORDS)?;
        let mut out = Vec::new();
        for entry in table.range(..=through)?.take(max) {
            let (k, v) = entry?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Forgets the records up to `last` (once they are safely in their files): the range
    /// only, not a scan of the table.
    pub fn remove_through(&self, last: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(RECORDS)?.retain_in(..=last, |_, _| false)?;
        txn.commit()?;
        Ok(())
    }
}

/// A log record: parts of (tag, length, bytes).
fn encode_record(changes: &Changes) -> Vec<u8> {
    let mut out = Vec::new();
    let mut part = |tag: u8, bytes: Vec<u8>| {
        out.push(tag);
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    };
    for delta in &changes.ledger {
        part(TAG_LEDGER, delta.encode());
    }
    for delta in &changes.directory {
        part(TAG_DIRECTORY, delta.encode());
    }
    if !changes.escrow.is_empty() {
        let mut book = EscrowBook::new();
        for (key, counter) in &changes.escrow {
            book.merge_counter(*key, counter);
        }
        part(TAG_ESCROW, book.encode());
    }
    for settlement in &changes.settled {
        part(TAG_SETTLED, settlement.encode());
    }
    for origin in &changes.retired {
        part(TAG_RETIRED, origin.0.to_le_bytes().to_vec());
    }
    if let Some(through_ms) = changes.escrow_forgotten_through_ms {
        part(TAG_ESCROW_FORGOTTEN, through_ms.to_le_bytes().to_vec());
    }
    if let Some(before_ms) = changes.settlements_forgotten_before_ms {
        part(TAG_SETTLEMENTS_FORGOTTEN, before_ms.to_le_bytes().to_vec());
    }
    out
}

/// Why a log record could not be replayed: the store is corrupt (or from a build that
/// wrote what this one cannot read).
#[derive(Debug, Error)]
pub enum RecordError {
    #[error("a part header is truncated")]
    TruncatedHeader,
    #[error("a part of {len} bytes is truncated")]
    TruncatedPart { len: usize },
    #[error("unknown part tag {0}")]
    UnknownTag(u8),
    #[error("a part with tag {tag} is {len} bytes, not 8")]
    NotEightBytes { tag: u8, len: usize },
    #[error("{0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Ledger(#[from] InvalidDelta),
    #[error("{0}")]
    Directory(#[from] DirectoryError),
}

/// The 8-byte little-endian number a part of `tag` carries.
fn eight_bytes(tag: u8, body: &[u8]) -> Result<u64, RecordError> {
    let bytes: [u8; 8] = body.try_into().map_err(|_| RecordError::NotEightBytes {
        tag,
        len: body.len(),
    })?;
    Ok(u64::from_le_bytes(bytes))
}

fn apply_record(state: &mut NodeState, mut bytes: &[u8]) -> Result<(), RecordError> {
    while !bytes.is_empty() {
        if bytes.len() < 5 {
            return Err(RecordError::TruncatedHeader);
        }
        let tag = bytes[0];
        let len = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        let body = bytes
            .get(5..5 + len)
            .ok_or(RecordError::TruncatedPart { len })?;
        bytes = &bytes[5 + len..];
        match tag {
            TAG_LEDGER => state.ledger.apply_delta(&Delta::decode(body)?)?,
            TAG_DIRECTORY => {
                let delta = DirectoryDelta::decode(body, PART_BYTES_MAX)?;
                state.directory.apply_delta(&delta)?;
            }
            TAG_ESCROW => state.escrow.merge(&EscrowBook::decode(body)?),
            TAG_SETTLED => {
                state.ledger.apply_settlement(Settlement::decode(body)?);
            }
            TAG_RETIRED => {
                state.ledger.retire(NodeId(eight_bytes(tag, body)?));
            }
            TAG_ESCROW_FORGOTTEN => {
                state
                    .escrow
                    .forget_through(eight_bytes(tag, body)?, usize::MAX);
            }
            TAG_SETTLEMENTS_FORGOTTEN => {
                state.ledger.forget_settled(eight_bytes(tag, body)?);
            }
            other => return Err(RecordError::UnknownTag(other)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crdt::{CounterKey, Metric, Period, PeriodKind, TenantId};
    use tessera_sync::{Node, SyncConfig};

    fn key(t: u64) -> CounterKey {
        CounterKey::new(
            TenantId(t),
            Period::containing(PeriodKind::Month, 0),
            Metric::Requests,
        )
    }

    #[test]
    fn batches_replay_to_the_same_state_across_reopen_and_folds() {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeId(7);
        let mut node = Node::empty(id, SyncConfig::default(), 1, 0);
        let mut folds = 0;
        {
            let mut store = Store::open(dir.path(), 200).unwrap();
            let compactor = store.log_compactor(id, 0);
            for round in 0..20u64 {
                for t in 0..5 {
                    node.increment(round, key(t), round + 1).unwrap();
                }
                let changes = node.take_changes();
                let due = store.commit(&changes, &[]).unwrap();
                if due {
                    // A fold beside the writer: the next batch lands after its read.
                    let before = store.log_len().unwrap();
                    let folded = compactor.run(0).unwrap();
                    assert_eq!(folded.records, before);
                    assert_eq!(store.log_len().unwrap(), 0);
                    assert!(!store.log.due(), "the fold took its bytes off");
                    folds += 1;
                }
            }
            // One more batch after the last fold: the reopen replays it over the snapshot.
            node.increment(20, key(3), 21).unwrap();
            store.commit(&node.take_changes(), &[]).unwrap();
            assert_eq!(store.log_len().unwrap(), 1);
        }
        assert!(folds >= 2, "{folds} folds");
        let store = Store::open(dir.path(), 200).unwrap();
        let loaded = store.load(id).unwrap();
        assert!(loaded.state.ledger.same_state(node.ledger()));
        assert_eq!(loaded.state.ledger.total(&key(3)), (1..=21).sum::<u64>());
    }

    /// The fold compacts the directory by the node's rule, so the snapshot does not keep
    /// every superseded edit the running node folded; the view it loads is the same.
    #[test]
    fn a_fold_compacts_the_directory_like_the_node() {
        use tessera_crdt::directory::Change;
        let dir = tempfile::tempdir().unwrap();
        let id = NodeId(7);
        let mut node = Node::empty(id, SyncConfig::default(), 1, 0);
        let mut store = Store::open(dir.path(), u64::MAX).unwrap();
        let tenant = TenantId(1);
        let create = Change::CreateTenant {
            tenant,
            name: "a".into(),
            home: id,
        };
        node.edit_directory(1, "op", create).unwrap();
        for at in 2..40u64 {
            let name = format!("name-{at}");
            node.edit_directory(at, "op", Change::RenameTenant { tenant, name })
                .unwrap();
        }
        store.commit(&node.take_changes(), &[]).unwrap();
        let uncompacted = store.load(id).unwrap().state.directory.encode().len();
        store.log_compactor(id, 1_000).run(1_000_000).unwrap();
        let loaded = store.load(id).unwrap().state.directory;
        assert!(
            loaded.encode().len() < uncompacted / 2,
            "{} of {uncompacted} bytes",
            loaded.encode().len()
        );
        assert_eq!(
            loaded.tenant(tenant).map(|t| t.name().to_owned()),
            Some("name-39".to_owned())
        );
    }

    #[test]
    fn a_corrupt_record_stops_the_load_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeId(7);
        let mut store = Store::open(dir.path(), u64::MAX).unwrap();
        let txn = store.db.begin_write().unwrap();
        txn.open_table(LOG)
            .unwrap()
            .insert(1, [TAG_LEDGER, 3, 0, 0, 0, 1, 2, 3].as_slice())
            .unwrap();
        txn.commit().unwrap();
        store.next_seq = 2;
        let error = store.load(id).err().expect("refused");
        assert!(error.to_string().contains("log record 1"), "{error}");
    }

    #[test]
    fn another_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), u64::MAX).unwrap();
            store.set_meta("format", b"something-else").unwrap();
        }
        let error = Store::open(dir.path(), u64::MAX).err().expect("refused");
        assert!(matches!(error, StoreError::Format { .. }), "{error}");
    }
}
