//! Raw usage records: one line per billed request (time, tenant, key, node, request id,
//! route, status, bytes, CPU), kept for compliance beside the aggregated ledger.
//!
//! A record is written in the same store transaction as the usage it describes (the
//! group commit), so a request is answered only once both are durable, and a failed
//! commit leaves neither. The writer then moves records from the store to hourly files
//! (`<data_dir>/usage/records-YYYY-MM-DDTHH.jsonl`, appended and fsynced, then deleted
//! from the store); a crash between the two may repeat a record in a file, which the
//! export removes by request id. Export writes JSON lines or Parquet.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use serde::{Deserialize, Serialize};
use tessera_crdt::directory::KeyId;
use tessera_crdt::{NodeId, TenantId};

/// A record as the request path queues it: plain numbers, nothing allocated; the store
/// writer encodes it as a [`Record`] line, off the request path, before its commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub at_ms: u64,
    pub tenant: TenantId,
    pub key: Option<KeyId>,
    pub request_id: RequestId,
    pub route: &'static str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cpu_micros: u64,
}

impl Pending {
    /// The JSON line (without its newline) the store and the hourly files keep.
    pub fn encode(&self, node: NodeId) -> Vec<u8> {
        serde_json::to_vec(&Record {
            at_ms: self.at_ms,
            tenant: self.tenant.0.to_string(),
            key: self.key.map(|k| k.to_string()),
            node: node.to_string(),
            request_id: self.request_id.to_string(),
            route: self.route.to_owned(),
            status: self.status,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            cpu_micros: self.cpu_micros,
        })
        .expect("a record serialises")
    }
}

/// A billed request's id: 16 hex digits, unique within a run of the node (a bijective
/// mix of a counter) and, being seeded at random each start, across runs in practice.
/// Made without a system call, unlike drawing 8 random bytes per request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(pub u64);

impl RequestId {
    pub fn next() -> RequestId {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;
        static SEED: OnceLock<u64> = OnceLock::new();
        static COUNT: AtomicU64 = AtomicU64::new(0);
        let seed =
            *SEED.get_or_init(|| u64::from_le_bytes(crate::control::auth::random_bytes::<8>()));
        // SplitMix64's finaliser: a bijection on u64, so distinct counts give distinct ids.
        let mut z = seed.wrapping_add(COUNT.fetch_add(1, Ordering::Relaxed));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        RequestId(z ^ (z >> 31))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One billed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub at_ms: u64,
    pub tenant: String,
    /// The API key's id, or `null` for a signed URL.
    pub key: Option<String>,
    pub node: String,
    pub request_id: String,
    pub route: String,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub cpu_micros: u64,
}

pub fn directory(data_dir: &Path) -> PathBuf {
    data_dir.join("usage")
}

/// The hourly file a record written at `at_ms` goes to.
fn file_for(dir: &Path, at_ms: u64) -> PathBuf {
    let hour = tessera_crdt::Period::containing(tessera_crdt::PeriodKind::Hour, at_ms);
    let name = hour.to_string().replace(':', "");
    dir.join(format!("records-{name}.jsonl"))
}

/// Appends encoded records (JSON without the newline) to their hourly files and syncs
/// them.
pub fn append(dir: &Path, records: &[(u64, Vec<u8>)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    // Buffered: two write calls per record (the line, its newline) were most of a
    // rotation's system time; a file is written in large appends, then fsynced.
    let mut open: Option<(PathBuf, BufWriter<File>)> = None;
    let finish = |file: BufWriter<File>| -> std::io::Result<()> {
        file.into_inner().map_err(|e| e.into_error())?.sync_data()
    };
    for (_, line) in records {
        let at_ms = serde_json::from_slice::<Record>(line).map_or(0, |r| r.at_ms);
        let path = file_for(dir, at_ms);
        if open.as_ref().is_none_or(|(p, _)| *p != path) {
            if let Some((_, file)) = open.take() {
                finish(file)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .open(&path)?;
            let mut file = BufWriter::with_capacity(1 << 16, file);
            // A crash mid-append leaves a torn last line. Appending straight after it
            // would glue the next record to it and lose that record's only whole copy
            // when it was the torn one; a newline first keeps the torn part on its own
            // line (skipped on reading; its record is still in the store and comes again).
            if ends_torn(file.get_ref())? {
                file.write_all(b"\n")?;
            }
            open = Some((path, file));
        }
        let (_, file) = open.as_mut().expect("opened above");
        file.write_all(line)?;
        file.write_all(b"\n")?;
    }
    if let Some((_, file)) = open {
        finish(file)?;
    }
    Ok(())
}

/// Whether `file` is non-empty and its last byte is not a newline.
fn ends_torn(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

/// The hour of an hourly file, from its name (`None`: not one of ours).
fn hour_of(path: &Path) -> Option<tessera_crdt::Period> {
    let name = path.file_name()?.to_str()?;
    let hour = name.strip_prefix("records-")?.strip_suffix(".jsonl")?;
    hour.parse().ok()
}

/// Every hourly file of `dir` with its hour, oldest first (none if the directory was
/// never made).
fn hourly_files(dir: &Path) -> std::io::Result<Vec<(tessera_crdt::Period, PathBuf)>> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter_map(|p| Some((hour_of(&p)?, p)))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    files.sort();
    Ok(files)
}

/// The hourly files of `dir` whose hour overlaps `[from_ms, to_ms)`, oldest first.
pub fn files(dir: &Path, from_ms: u64, to_ms: u64) -> std::io::Result<Vec<PathBuf>> {
    Ok(hourly_files(dir)?
        .into_iter()
        .filter(|(hour, _)| hour.end_ms() > from_ms && hour.start_ms() < to_ms)
        .map(|(_, path)| path)
        .collect())
}

/// Deletes the hourly files of hours that ended at or before `before_ms` (the records'
/// retention, `store.records_retention_days`); returns how many. Files whose names are
/// not ours are left alone.
pub fn prune(dir: &Path, before_ms: u64) -> std::io::Result<usize> {
    let mut deleted = 0;
    for (hour, path) in hourly_files(dir)? {
        if hour.end_ms() > before_ms {
            break;
        }
        std::fs::remove_file(&path)?;
        deleted += 1;
    }
    Ok(deleted)
}

/// One hourly file's records within `[from_ms, to_ms)`, without repeats, in time order.
/// A repeat (a record appended again after a crash) is the same line, so it has the same
/// time and lands in the same hourly file: removing repeats file by file removes them all.
fn read_file(path: &Path, from_ms: u64, to_ms: u64) -> std::io::Result<Vec<Record>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        // A torn last line (a crash mid-append) is skipped: its record is still in the
        // store and is appended again.
        let Ok(record) = serde_json::from_str::<Record>(&line) else {
            continue;
        };
        if record.at_ms >= from_ms && record.at_ms < to_ms && seen.insert(record.request_id.clone())
        {
            out.push(record);
        }
    }
    out.sort_by_key(|r| r.at_ms);
    Ok(out)
}

/// The format of an export of records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// One Parquet file: a row group per hourly file, Snappy-compressed columns, `at_ms`
    /// typed as a UTC timestamp in milliseconds (the same numbers as the JSON lines).
    Parquet,
}

/// Writes the records of `files` within `[from_ms, to_ms)` to `out`, without repeats, in
/// time order, one hourly file at a time: memory holds one hour of this node's records,
/// not the export. Returns how many rows were written. An error of `out` (the client
/// left) stops it.
pub fn export(
    files: &[PathBuf],
    from_ms: u64,
    to_ms: u64,
    format: ExportFormat,
    out: impl Write + Send,
) -> std::io::Result<u64> {
    let mut rows = 0;
    match format {
        ExportFormat::Jsonl => {
            let mut out = BufWriter::with_capacity(1 << 16, out);
            for path in files {
                for record in read_file(path, from_ms, to_ms)? {
                    serde_json::to_writer(&mut out, &record)?;
                    out.write_all(b"\n")?;
                    rows += 1;
                }
            }
            out.flush()?;
        }
        ExportFormat::Parquet => {
            let mut writer = SerializedFileWriter::new(out, parquet_schema(), parquet_props())
                .map_err(std::io::Error::other)?;
            for path in files {
                let records = read_file(path, from_ms, to_ms)?;
                if records.is_empty() {
                    continue;
                }
                write_row_group(&mut writer, &records).map_err(std::io::Error::other)?;
                rows += records.len() as u64;
            }
            writer
                .into_inner()
                .map_err(std::io::Error::other)?
                .flush()?;
        }
    }
    Ok(rows)
}

fn parquet_schema() -> Arc<parquet::schema::types::Type> {
    Arc::new(
        parse_message_type(
            "message usage_record {
                required int64 at_ms (TIMESTAMP(MILLIS, true));
                required binary tenant (UTF8);
                optional binary key (UTF8);
                required binary node (UTF8);
                required binary request_id (UTF8);
                required binary route (UTF8);
                required int32 status;
                required int64 bytes_in;
                required int64 bytes_out;
                required int64 cpu_micros;
            }",
        )
        .expect("the records schema parses"),
    )
}

fn parquet_props() -> Arc<WriterProperties> {
    Arc::new(
        WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build(),
    )
}

/// One row group of `records`.
fn write_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    records: &[Record],
) -> Result<(), parquet::errors::ParquetError> {
    let mut group = writer.next_row_group()?;
    let int64 =
        |f: fn(&Record) -> u64| -> Vec<i64> { records.iter().map(|r| f(r) as i64).collect() };
    let text = |f: fn(&Record) -> &str| -> Vec<ByteArray> {
        records.iter().map(|r| ByteArray::from(f(r))).collect()
    };
    let mut column = 0;
    while let Some(mut writer) = group.next_column()? {
        match column {
            0 => {
                writer
                    .typed::<Int64Type>()
                    .write_batch(&int64(|r| r.at_ms), None, None)?;
            }
            2 => {
                let keys: Vec<ByteArray> = records
                    .iter()
                    .filter_map(|r| r.key.as_deref().map(ByteArray::from))
                    .collect();
                let levels: Vec<i16> = records.iter().map(|r| i16::from(r.key.is_some())).collect();
                writer
                    .typed::<ByteArrayType>()
                    .write_batch(&keys, Some(&levels), None)?;
            }
            1 | 3 | 4 | 5 => {
                let values = match column {
                    1 => text(|r| &r.tenant),
                    3 => text(|r| &r.node),
                    4 => text(|r| &r.request_id),
                    _ => text(|r| &r.route),
                };
                writer
                    .typed::<ByteArrayType>()
                    .write_batch(&values, None, None)?;
            }
            6 => {
                let values: Vec<i32> = records.iter().map(|r| i32::from(r.status)).collect();
                writer
                    .typed::<Int32Type>()
                    .write_batch(&values, None, None)?;
            }
            _ => {
                let values = match column {
                    7 => int64(|r| r.bytes_in),
                    8 => int64(|r| r.bytes_out),
                    _ => int64(|r| r.cpu_micros),
                };
                writer
                    .typed::<Int64Type>()
                    .write_batch(&values, None, None)?;
            }
        }
        writer.close()?;
        column += 1;
    }
    group.close()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

    /// Every record of `dir` within `[from_ms, to_ms)`, as the JSON-lines export reads them.
    fn read_all(dir: &Path, from_ms: u64, to_ms: u64) -> std::io::Result<Vec<Record>> {
        let mut out = Vec::new();
        export(
            &files(dir, from_ms, to_ms)?,
            from_ms,
            to_ms,
            ExportFormat::Jsonl,
            &mut out,
        )?;
        Ok(out
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).unwrap())
            .collect())
    }

    #[test]
    fn request_ids_do_not_repeat_and_pending_records_encode_as_records() {
        let ids: BTreeSet<u64> = (0..10_000).map(|_| RequestId::next().0).collect();
        assert_eq!(ids.len(), 10_000);
        let id = RequestId::next();
        assert_eq!(id.to_string().len(), 16);
        let pending = Pending {
            at_ms: 7,
            tenant: TenantId(42),
            key: Some(KeyId(9)),
            request_id: id,
            route: "resize",
            status: 200,
            bytes_in: 1,
            bytes_out: 2,
            cpu_micros: 3,
        };
        let record: Record = serde_json::from_slice(&pending.encode(NodeId(5))).unwrap();
        assert_eq!(record.tenant, "42");
        assert_eq!(record.key.as_deref(), Some("0000000000000009"));
        assert_eq!(record.node, NodeId(5).to_string());
        assert_eq!(record.request_id, id.to_string());
        assert_eq!(
            (record.at_ms, record.status, record.cpu_micros),
            (7, 200, 3)
        );
    }

    fn record(at_ms: u64, id: &str, key: Option<&str>) -> Record {
        Record {
            at_ms,
            tenant: "7".into(),
            key: key.map(str::to_owned),
            node: "00000000000000aa".into(),
            request_id: id.into(),
            route: "/v1/resize".into(),
            status: 200,
            bytes_in: 1000,
            bytes_out: 100,
            cpu_micros: 5000,
        }
    }

    /// A crash in the middle of the first record of an append leaves it torn; the store
    /// still holds it and the next rotation appends it again. That copy must read back:
    /// glued to the torn bytes, it did not, and the record was lost.
    #[test]
    fn a_record_torn_by_a_crash_reads_back_after_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let first = serde_json::to_vec(&record(10, "a", None)).unwrap();
        let second = serde_json::to_vec(&record(11, "b", None)).unwrap();
        append(dir.path(), &[(0, first.clone())]).unwrap();
        let path = file_for(dir.path(), 10);
        // The crash: half of "b" reached the file.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&second[..second.len() / 2]).unwrap();
        drop(file);
        // After the restart, the store's pending records go out again.
        append(dir.path(), &[(1, second)]).unwrap();
        let ids: Vec<String> = read_all(dir.path(), 0, u64::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn files_rotate_by_hour_and_read_back_without_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let hour_ms = 3_600_000;
        let lines: Vec<(u64, Vec<u8>)> = [
            record(10, "a", Some("1")),
            record(hour_ms + 5, "b", None),
            record(20, "a", Some("1")), // a repeat after a crash
        ]
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64, serde_json::to_vec(r).unwrap()))
        .collect();
        append(dir.path(), &lines).unwrap();
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 2, "one file per hour");
        let all = read_all(dir.path(), 0, u64::MAX).unwrap();
        assert_eq!(
            all.iter()
                .map(|r| r.request_id.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(read_all(dir.path(), hour_ms, u64::MAX).unwrap().len(), 1);
    }

    #[test]
    fn files_past_their_retention_are_deleted_and_a_range_reads_only_its_hours() {
        let dir = tempfile::tempdir().unwrap();
        let hour_ms = 3_600_000;
        let start = 1_800_000_000_000 / hour_ms * hour_ms;
        let lines: Vec<(u64, Vec<u8>)> = (0..4)
            .map(|h| {
                let record = record(start + h * hour_ms + 5, &h.to_string(), None);
                (h, serde_json::to_vec(&record).unwrap())
            })
            .collect();
        append(dir.path(), &lines).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"kept").unwrap();
        // A range reads the files of its hours only.
        let second = files(dir.path(), start + hour_ms, start + 2 * hour_ms).unwrap();
        assert_eq!(second, [file_for(dir.path(), start + hour_ms)]);
        // Hours that ended at or before the bound go; the rest, and others' files, stay.
        assert_eq!(prune(dir.path(), start + 2 * hour_ms).unwrap(), 2);
        let ids: Vec<String> = read_all(dir.path(), 0, u64::MAX)
            .unwrap()
            .into_iter()
            .map(|r| r.request_id)
            .collect();
        assert_eq!(ids, ["2", "3"]);
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(prune(dir.path(), start + 2 * hour_ms).unwrap(), 0);
    }

    #[test]
    fn parquet_holds_every_row_and_column_with_a_row_group_per_hour() {
        let dir = tempfile::tempdir().unwrap();
        let hour_ms = 3_600_000;
        let lines: Vec<(u64, Vec<u8>)> = [
            record(1, "a", Some("9")),
            record(2, "b", None),
            record(hour_ms + 1, "c", None),
            record(2, "b", None), // a repeat after a crash
        ]
        .iter()
        .enumerate()
        .map(|(i, r)| (i as u64, serde_json::to_vec(r).unwrap()))
        .collect();
        append(dir.path(), &lines).unwrap();
        let mut bytes = Vec::new();
        let files = files(dir.path(), 0, u64::MAX).unwrap();
        let rows = export(&files, 0, u64::MAX, ExportFormat::Parquet, &mut bytes).unwrap();
        assert_eq!(rows, 3);
        let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).unwrap();
        let meta = reader.metadata();
        assert_eq!(meta.file_metadata().num_rows(), 3);
        assert_eq!(meta.num_row_groups(), 2);
        let schema = meta.file_metadata().schema_descr();
        assert_eq!(schema.num_columns(), 10);
        // Time is typed: readers show an instant (UTC), not a bare integer.
        assert_eq!(
            schema.column(0).logical_type_ref(),
            Some(&parquet::basic::LogicalType::Timestamp {
                is_adjusted_to_u_t_c: true,
                unit: parquet::basic::TimeUnit::MILLIS,
            })
        );
        let rows: Vec<String> = reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| row.unwrap().to_string())
            .collect();
        assert!(rows[0].contains("request_id: \"a\""), "{rows:?}");
        assert!(rows[1].contains("key: null"), "{rows:?}");
        assert!(rows[2].contains("request_id: \"c\""), "{rows:?}");
        // An export of nothing is still a Parquet file, of no rows.
        let mut empty = Vec::new();
        assert_eq!(
            export(
                &files,
                5 * hour_ms,
                u64::MAX,
                ExportFormat::Parquet,
                &mut empty
            )
            .unwrap(),
            0
        );
        let reader = SerializedFileReader::new(bytes::Bytes::from(empty)).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }

    /// The export stops at the first error of its output (a client that left) instead
    /// of reading every file to the end.
    #[test]
    fn an_export_stops_when_its_output_fails() {
        struct Gone;
        impl Write for Gone {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<(u64, Vec<u8>)> = (0..20_000u64)
            .map(|i| {
                (
                    i,
                    serde_json::to_vec(&record(i, &i.to_string(), None)).unwrap(),
                )
            })
            .collect();
        append(dir.path(), &lines).unwrap();
        let files = files(dir.path(), 0, u64::MAX).unwrap();
        let error = export(&files, 0, u64::MAX, ExportFormat::Jsonl, Gone).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(export(&files, 0, u64::MAX, ExportFormat::Parquet, Gone).is_err());
    }
}
