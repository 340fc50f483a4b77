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
//! acknowledged. When the log grows past `log_bytes_max`, the next batch also writes a
//! fresh snapshot and drops the log it covers, in the same transaction.
//!
//! Every operation returns a [`StoreError`] saying which step failed; a record that does
//! not decode stops the start (a node must not serve from state it cannot read).

use std::path::Path;

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

/// The open store. One writer at a time (redb serialises write transactions); reads
/// happen only at start.
pub struct Store {
    db: Database,
    /// Next log sequence number.
    next_seq: u64,
    /// Next record number.
    next_record: u64,
    /// Bytes in the log since the last snapshot.
    log_bytes: u64,
    log_bytes_max: u64,
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
            db,
            next_seq,
            next_record,
            log_bytes,
            log_bytes_max,
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
        let snapshot = read.open_table(SNAPSHOT)?;
        let part = |name: &str| -> Result<Option<Vec<u8>>, StoreError> {
            Ok(snapshot.get(name)?.map(|v| v.value().to_vec()))
        };
        let corrupt = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("snapshot {what}: {e}"))
        };
        let mut state = NodeState {
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
        let mut records = 0;
        for entry in log.iter()? {
            let (seq, bytes) = entry?;
            apply_record(&mut state, bytes.value()).map_err(|source| StoreError::Record {
                seq: seq.value(),
                source,
            })?;
            records += 1;
        }
        Ok(Loaded { state, records })
    }

    /// Appends one batch durably (fsync before return). With `snapshot`, the state that
    /// includes this batch, written in the same transaction, after which the log is
    /// emptied. Returns whether a snapshot is due (the caller then passes one next time).
    pub fn commit(
        &mut self,
        changes: &Changes,
        usage_records: &[Vec<u8>],
        snapshot: Option<&NodeState>,
    ) -> Result<bool, StoreError> {
        if let Err(injected) = self.faults.before_commit() {
            return Err(StoreError::Storage(redb::StorageError::Io(
                std::io::Error::other(injected),
            )));
        }
        let record = encode_record(changes);
        if record.is_empty() && usage_records.is_empty() && snapshot.is_none() {
            // Nothing to write: no transaction, no fsync (the writer wakes on timers).
            return Ok(self.log_bytes > self.log_bytes_max);
        }
        let txn = self.db.begin_write()?;
        {
            if !usage_records.is_empty() {
                let mut table = txn.open_table(RECORDS)?;
                for (i, line) in usage_records.iter().enumerate() {
                    table.insert(self.next_record + i as u64, line.as_slice())?;
                }
            }
            let mut log = txn.open_table(LOG)?;
            if !record.is_empty() {
                log.insert(self.next_seq, record.as_slice())?;
            }
            if let Some(state) = snapshot {
                let mut table = txn.open_table(SNAPSHOT)?;
                table.insert("ledger", state.ledger.encode().as_slice())?;
                table.insert("directory", state.directory.encode().as_slice())?;
                table.insert("escrow", state.escrow.encode().as_slice())?;
                log.retain(|_, _| false)?;
            }
        }
        txn.commit()?;
        if snapshot.is_some() {
            self.log_bytes = 0;
        } else if !record.is_empty() {
            self.log_bytes += record.len() as u64;
        }
        if !record.is_empty() {
            self.next_seq += 1;
        }
        self.next_record += usage_records.len() as u64;
        Ok(self.log_bytes > self.log_bytes_max)
    }

    /// Usage records waiting in the store, oldest first, at most `max`.
    pub fn usage_records(&self, max: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let read = self.db.begin_read()?;
        let table = read.open_table(RECORDS)?;
        let mut out = Vec::new();
        for entry in table.iter()?.take(max) {
            let (k, v) = entry?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Forgets usage records up to `last` (once they are safely in their files).
    pub fn remove_usage_records(&mut self, last: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        txn.open_table(RECORDS)?.retain(|k, _| k > last)?;
        txn.commit()?;
        Ok(())
    }

    /// Records in the log (for tests and the start-up log line).
    pub fn log_len(&self) -> Result<u64, StoreError> {
        let read = self.db.begin_read()?;
        Ok(read.open_table(LOG)?.len()?)
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
                state.escrow.forget_through(eight_bytes(tag, body)?);
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
    fn batches_replay_to_the_same_state_across_reopen_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let id = NodeId(7);
        let mut node = Node::empty(id, SyncConfig::default(), 1, 0);
        {
            let mut store = Store::open(dir.path(), 200).unwrap();
            for round in 0..20u64 {
                for t in 0..5 {
                    node.increment(round, key(t), round + 1).unwrap();
                }
                let changes = node.take_changes();
                let due = store.commit(&changes, &[], None).unwrap();
                if due {
                    let changes = node.take_changes();
                    store.commit(&changes, &[], Some(&node.state())).unwrap();
                    assert_eq!(store.log_len().unwrap(), 0);
                }
            }
        }
        let store = Store::open(dir.path(), 200).unwrap();
        let loaded = store.load(id).unwrap();
        assert!(loaded.state.ledger.same_state(node.ledger()));
        assert_eq!(loaded.state.ledger.total(&key(3)), (1..=20).sum::<u64>());
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
