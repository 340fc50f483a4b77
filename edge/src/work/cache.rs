//! A bounded cache of signed-URL results, so a popular URL is fetched from its origin and
//! converted once per TTL rather than once per request: in memory, and optionally on disk
//! behind it (`cache.disk_bytes_max`), where results survive a restart.
//!
//! Keyed by a digest of (tenant, the signed part of the URL, the options actually used —
//! which include the format `Accept` chose), so two URLs share an entry only when they
//! would produce the same bytes. Bounded in bytes and in time (`ttl_s`).
//!
//! Which results stay when the bytes run out is decided by `moka`'s TinyLFU (entries in
//! LRU order, and a frequency sketch of recent requests that admits a newcomer only if
//! it is asked for more often than the entries it would push out), in memory and for
//! the disk tier's index alike. Why not the obvious FIFO, which this module used before: a signed-URL
//! cache sees a few hot images among a long tail of URLs asked for once (a crawler, a
//! page of thumbnails), and under FIFO every one-off URL pushed the oldest entries out —
//! the popular ones first, since they were stored first
//! (`popular_results_outlive_a_stream_of_one_off_urls` fails under FIFO). Why not LRU:
//! the same stream of one-offs also flushes an LRU, only more slowly. A hit is still a request the tenant makes: it is admitted by the quota and
//! billed (bytes out, no CPU, no bytes in), and only successful answers are kept.
//!
//! A result is only as good as the policy that let it be made: each keeps the origins
//! its source came through (the source's, then each redirect's), and the caller serves a
//! hit only after the same checks as a miss — the tenant serving and the signature
//! verifying under a current secret (before the lookup), and every one of those origins
//! still allowed (on the hit) — against the directory of the moment, so a policy change
//! turns a hit away at once, in memory and on disk, across restarts too. Checking rather
//! than keying by a policy version keeps the tenant's other results when it only adds
//! an origin or a secret.
//!
//! The disk tier keeps one file per result in `<data_dir>/cache/` (`<key hex>.bin`:
//! magic, version, write time as Unix ms — the TTL must hold across restarts, so wall
//! time here —, the headers, the origins, the body; files of an older version, which
//! lack the origins, are foreign and deleted), written to a temporary name and renamed, never
//! fsynced: a result lost in a crash is fetched again, and a torn or foreign file fails
//! its checks and is deleted as a miss. Its index (key → write time, size) lives in
//! memory, rebuilt at start from the files' headers; an entry leaves the index when its
//! TTL runs out (counted from the file's write time, across restarts) or when the policy
//! evicts it, and its file is deleted then (the index's eviction listener). A file is
//! written before its entry enters the index, so an entry the policy refuses takes its
//! file with it. File work runs on tokio's blocking pool, never on a runtime thread.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use moka::notification::RemovalCause;
use moka::sync::Cache;
use moka::Expiry;

/// A kept answer.
#[derive(Debug)]
pub struct Cached {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The origins the source came through ([`crate::work::fetch::Fetched::origins`]), never
    /// empty: a hit is served only while the tenant allows each.
    pub origins: Vec<String>,
}

/// A memory-tier entry: the result and when it was stored (the TTL is checked against
/// the caller's clock, so tests can move time).
#[derive(Clone)]
struct Held {
    stored_at: Instant,
    cached: Arc<Cached>,
}

pub struct ResultCache {
    ttl: Duration,
    bytes_max: usize,
    /// `None` when the memory tier is off (`bytes_max == 0`).
    memory: Option<Cache<[u8; 32], Held>>,
    disk: Option<Arc<DiskCache>>,
}

/// A weight for moka (u32), never 0 so that every entry counts.
fn weight(bytes: u64) -> u32 {
    bytes.clamp(1, u64::from(u32::MAX)) as u32
}

impl ResultCache {
    /// `bytes_max == 0` disables the memory tier; `disk` adds the disk tier behind it.
    pub fn new(ttl: Duration, bytes_max: usize, disk: Option<DiskCache>) -> ResultCache {
        let memory = (bytes_max > 0).then(|| {
            Cache::builder()
                .max_capacity(bytes_max as u64)
                .weigher(|_, held: &Held| weight(held.cached.body.len() as u64))
                .time_to_live(ttl)
                .build()
        });
        ResultCache {
            ttl,
            bytes_max,
            memory,
            disk: disk.map(Arc::new),
        }
    }

    /// The memory tier, then the disk tier (a disk hit is kept in memory again).
    pub async fn lookup(&self, key: &[u8; 32], now: Instant) -> Option<Arc<Cached>> {
        if let Some(hit) = self.get(key, now) {
            return Some(hit);
        }
        let disk = self.disk.clone()?;
        let key = *key;
        let hit = Arc::new(
            tokio::task::spawn_blocking(move || disk.get(&key))
                .await
                .ok()??,
        );
        self.put(key, hit.clone(), now);
        Some(hit)
    }

    /// Keeps a result in memory and, when there is a disk tier, on disk (a failed write
    /// is logged and otherwise ignored: it is a cache).
    pub async fn store(&self, key: [u8; 32], cached: Cached, now: Instant) {
        let cached = Arc::new(cached);
        self.put(key, cached.clone(), now);
        if let Some(disk) = self.disk.clone() {
            let written = tokio::task::spawn_blocking(move || disk.put(key, &cached)).await;
            if let Ok(Err(error)) = written {
                tracing::warn!(%error, "writing a result to the disk cache failed");
            }
        }
    }

    /// Bytes held on disk, when there is a disk tier.
    pub fn disk_bytes(&self) -> Option<u64> {
        self.disk.as_ref().map(|d| d.bytes())
    }

    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<Arc<Cached>> {
        let memory = self.memory.as_ref()?;
        let held = memory.get(key)?;
        if now.saturating_duration_since(held.stored_at) >= self.ttl {
            memory.invalidate(key);
            return None;
        }
        Some(held.cached)
    }

    /// Offers a result to the memory tier; the policy decides whether it stays, and
    /// the bound holds when this returns (pending evictions are run here: this follows
    /// a fetch and a resize, so their cost does not show).
    pub fn put(&self, key: [u8; 32], cached: Arc<Cached>, now: Instant) {
        let Some(memory) = &self.memory else { return };
        let size = cached.body.len();
        if size == 0 || size > self.bytes_max {
            return;
        }
        memory.insert(
            key,
            Held {
                stored_at: now,
                cached,
            },
        );
        memory.run_pending_tasks();
    }

    /// Bytes held in memory (for tests and metrics).
    pub fn bytes(&self) -> usize {
        self.memory.as_ref().map_or(0, |memory| {
            memory.run_pending_tasks();
            memory.weighted_size() as usize
        })
    }
}

/// Magic and format version at the head of every cache file.
const DISK_MAGIC: &[u8; 5] = b"TSRC2";
/// Magic, write time (u64), header length (u32) and origins length (u32).
const DISK_HEAD: usize = DISK_MAGIC.len() + 8 + 4 + 4;
/// Headers (or origins) longer than this mark a file as not ours.
const DISK_HEADERS_MAX: usize = 64 << 10;

/// A disk-tier index entry: the file's write time (Unix ms) and size.
#[derive(Clone, Copy, Debug)]
struct DiskEntry {
    written_ms: u64,
    size: u64,
}

/// An index entry lives until its file's TTL runs out, counted from the write time
/// (which may be before this process started), not from its entry into the index.
struct UntilStale {
    ttl_ms: u64,
}

impl UntilStale {
    fn left(&self, entry: &DiskEntry) -> Option<Duration> {
        let age_ms = unix_ms().saturating_sub(entry.written_ms);
        Some(Duration::from_millis(self.ttl_ms.saturating_sub(age_ms)))
    }
}

impl Expiry<[u8; 32], DiskEntry> for UntilStale {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        entry: &DiskEntry,
        _created_at: Instant,
    ) -> Option<Duration> {
        self.left(entry)
    }

    fn expire_after_update(
        &self,
        _key: &[u8; 32],
        entry: &DiskEntry,
        _updated_at: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        self.left(entry)
    }
}

/// The disk tier: results as files under one directory, bounded in bytes and by TTL.
pub struct DiskCache {
    dir: PathBuf,
    ttl_ms: u64,
    bytes_max: u64,
    index: Cache<[u8; 32], DiskEntry>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex_key(key: &[u8; 32]) -> String {
    crate::control::auth::hex(key)
}

fn parse_key(name: &str) -> Option<[u8; 32]> {
    let stem = name.strip_suffix(".bin")?;
    crate::control::auth::parse_digest(stem)
}

fn file_path(dir: &Path, key: &[u8; 32]) -> PathBuf {
    dir.join(format!("{}.bin", hex_key(key)))
}

impl DiskCache {
    /// Opens (creating) `dir` and indexes the files in it: unreadable, expired or foreign
    /// files and leftover temporaries are deleted; while over `bytes_max`, the policy
    /// chooses which go.
    pub fn open(dir: &Path, ttl: Duration, bytes_max: u64) -> std::io::Result<DiskCache> {
        std::fs::create_dir_all(dir)?;
        let ttl_ms = ttl.as_millis() as u64;
        let now = unix_ms();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let head = parse_key(&name).and_then(|key| {
                let mut head = [0u8; DISK_HEAD];
                let mut file = std::fs::File::open(&path).ok()?;
                file.read_exact(&mut head).ok()?;
                let written = decode_head(&head)?.written_ms;
                let size = file.metadata().ok()?.len();
                (now.saturating_sub(written) < ttl_ms).then_some((written, key, size))
            });
            match head {
                Some(found_one) => found.push(found_one),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        // Newest first: re-indexed files all start at frequency 0 and the policy refuses
        // a newcomer no more asked for than the entry it would replace, so when they are
        // over the bound the first ones in stay: the newest.
        found.sort_unstable_by(|a, b| b.cmp(a));
        let owned = dir.to_owned();
        let index = Cache::builder()
            .max_capacity(bytes_max)
            .weigher(|_, entry: &DiskEntry| weight(entry.size))
            .expire_after(UntilStale { ttl_ms })
            .eviction_listener(move |key: Arc<[u8; 32]>, _, cause| {
                // A replaced entry's file was overwritten by its successor's.
                if cause != RemovalCause::Replaced {
                    let _ = std::fs::remove_file(file_path(&owned, &key));
                }
            })
            .build();
        for (written_ms, key, size) in found {
            index.insert(key, DiskEntry { written_ms, size });
        }
        index.run_pending_tasks();
        Ok(DiskCache {
            dir: dir.to_owned(),
            ttl_ms,
            bytes_max,
            index,
        })
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        file_path(&self.dir, key)
    }

    /// Bytes held on disk (for tests and metrics).
    pub fn bytes(&self) -> u64 {
        self.index.run_pending_tasks();
        self.index.weighted_size()
    }

    /// Reads a result (blocking). A file that fails its checks is deleted: a miss.
    pub fn get(&self, key: &[u8; 32]) -> Option<Cached> {
        let entry = self.index.get(key)?;
        if unix_ms().saturating_sub(entry.written_ms) >= self.ttl_ms {
            self.index.invalidate(key);
            return None;
        }
        let read = std::fs::read(self.path(key))
            .ok()
            .and_then(|bytes| decode(&bytes));
        match read {
            Some((at, cached)) if at == entry.written_ms => Some(cached),
            // Torn, foreign, or replaced since the index was read: the listener
            // deletes the file with the entry.
            _ => {
                self.index.invalidate(key);
                None
            }
        }
    }

    /// Writes a result (blocking): the file first, then its index entry, then the
    /// evictions that keep the bound.
    pub fn put(&self, key: [u8; 32], cached: &Cached) -> std::io::Result<()> {
        let now = unix_ms();
        let encoded = encode(now, cached);
        let size = encoded.len() as u64;
        if size > self.bytes_max {
            return Ok(());
        }
        let path = self.path(&key);
        let temporary =
            path.with_extension(format!("tmp{}", crate::control::records::RequestId::next()));
        let written = std::fs::File::create(&temporary)
            .and_then(|mut file| file.write_all(&encoded))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
            return written;
        }
        self.index.insert(
            key,
            DiskEntry {
                written_ms: now,
                size,
            },
        );
        self.index.run_pending_tasks();
        Ok(())
    }
}

/// The head of a file: its write time and the lengths of its headers and origins.
struct DiskHead {
    written_ms: u64,
    headers_len: usize,
    origins_len: usize,
}

fn decode_head(head: &[u8]) -> Option<DiskHead> {
    if head.len() < DISK_HEAD || &head[..DISK_MAGIC.len()] != DISK_MAGIC {
        return None;
    }
    let at = DISK_MAGIC.len();
    let length = |from: usize| {
        head[from..from + 4]
            .try_into()
            .ok()
            .map(|word| u32::from_le_bytes(word) as usize)
    };
    let decoded = DiskHead {
        written_ms: u64::from_le_bytes(head[at..at + 8].try_into().ok()?),
        headers_len: length(at + 8)?,
        origins_len: length(at + 12)?,
    };
    (decoded.headers_len <= DISK_HEADERS_MAX && decoded.origins_len <= DISK_HEADERS_MAX)
        .then_some(decoded)
}

/// `name: value` lines (header values never hold a newline), the origins one a line
/// (an origin holds no newline either), then the body.
fn encode(written_ms: u64, cached: &Cached) -> Vec<u8> {
    let mut headers = Vec::new();
    for (name, value) in &cached.headers {
        headers.extend_from_slice(name.as_str().as_bytes());
        headers.extend_from_slice(b": ");
        headers.extend_from_slice(value.as_bytes());
        headers.push(b'\n');
    }
    let origins = cached.origins.join("\n");
    let mut out = Vec::with_capacity(DISK_HEAD + headers.len() + origins.len() + cached.body.len());
    out.extend_from_slice(DISK_MAGIC);
    out.extend_from_slice(&written_ms.to_le_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    out.extend_from_slice(&(origins.len() as u32).to_le_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(origins.as_bytes());
    out.extend_from_slice(&cached.body);
    out
}

fn decode(bytes: &[u8]) -> Option<(u64, Cached)> {
    let head = decode_head(bytes)?;
    let headers_end = DISK_HEAD.checked_add(head.headers_len)?;
    let origins_end = headers_end.checked_add(head.origins_len)?;
    let text = std::str::from_utf8(bytes.get(DISK_HEAD..headers_end)?).ok()?;
    let mut headers = HeaderMap::new();
    for line in text.lines() {
        let (name, value) = line.split_once(": ")?;
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(value).ok()?,
        );
    }
    let origins: Vec<String> = std::str::from_utf8(bytes.get(headers_end..origins_end)?)
        .ok()?
        .lines()
        .map(str::to_owned)
        .collect();
    let body = Bytes::copy_from_slice(&bytes[origins_end..]);
    let cached = Cached {
        headers,
        body,
        origins,
    };
    // Without an origin to check a hit against, a result cannot be served.
    (!cached.body.is_empty() && !cached.origins.is_empty()).then_some((head.written_ms, cached))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(n: usize) -> Arc<Cached> {
        Arc::new(Cached {
            headers: HeaderMap::new(),
            body: Bytes::from(vec![7u8; n]),
            origins: vec!["http://img.example.com".to_owned()],
        })
    }

    #[test]
    fn hits_expire_and_bytes_stay_bounded() {
        let cache = ResultCache::new(Duration::from_secs(10), 100, None);
        let t0 = Instant::now();
        cache.put([1; 32], cached(40), t0);
        assert!(cache.get(&[1; 32], t0).is_some());
        assert!(cache.get(&[1; 32], t0 + Duration::from_secs(11)).is_none());
        for key in 2..10u8 {
            cache.put([key; 32], cached(40), t0);
            assert!(cache.bytes() <= 100, "after {key}: {}", cache.bytes());
        }
        let kept = (2..10u8)
            .filter(|key| cache.get(&[*key; 32], t0).is_some())
            .count();
        assert!((1..=2).contains(&kept), "{kept} of 40 bytes each in 100");
        // Too big for the cache at all: not kept.
        cache.put([11; 32], cached(101), t0);
        assert!(cache.get(&[11; 32], t0).is_none());
    }

    /// The reason for the policy: a hot result asked for again and again stays while a
    /// long stream of URLs asked for once goes through a cache ten results large. Under
    /// the FIFO this module had before, the hot result went after ten of them.
    #[test]
    fn popular_results_outlive_a_stream_of_one_off_urls() {
        let cache = ResultCache::new(Duration::from_secs(600), 1_000, None);
        let t0 = Instant::now();
        let hot = [0xAA; 32];
        cache.put(hot, cached(100), t0);
        for n in 0..2_000u32 {
            let mut key = [0; 32];
            key[..4].copy_from_slice(&n.to_le_bytes());
            // A miss, then the result stored: what a request for a new URL does.
            assert!(cache.get(&key, t0).is_none());
            cache.put(key, cached(100), t0);
            assert!(cache.bytes() <= 1_000);
            // The hot result is asked for now and then, as a popular image is (under
            // FIFO it went after ten one-offs whatever its hits).
            if n % 5 == 0 {
                assert!(cache.get(&hot, t0).is_some(), "the hot result went at {n}");
            }
        }
        assert!(cache.get(&hot, t0).is_some());
    }

    #[test]
    fn disabled_with_zero_bytes() {
        let cache = ResultCache::new(Duration::from_secs(10), 0, None);
        cache.put([1; 32], cached(1), Instant::now());
        assert!(cache.get(&[1; 32], Instant::now()).is_none());
    }

    fn with_headers(n: usize, fill: u8) -> Cached {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("image/webp"));
        headers.insert("etag", HeaderValue::from_static("\"abc\""));
        headers.append("vary", HeaderValue::from_static("Accept"));
        Cached {
            headers,
            body: Bytes::from(vec![fill; n]),
            // A source that redirected once.
            origins: vec![
                "http://img.example.com".to_owned(),
                "https://cdn.example.net:8443".to_owned(),
            ],
        }
    }

    #[test]
    fn disk_results_survive_a_reopen_and_stay_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        let disk = DiskCache::open(dir.path(), ttl, 10_000).unwrap();
        disk.put([1; 32], &with_headers(3_000, 1)).unwrap();
        disk.put([2; 32], &with_headers(3_000, 2)).unwrap();
        let hit = disk.get(&[1; 32]).unwrap();
        assert_eq!(hit.body, Bytes::from(vec![1u8; 3_000]));
        assert_eq!(hit.headers, with_headers(3_000, 1).headers);
        assert_eq!(hit.origins, with_headers(3_000, 1).origins);
        drop(disk);

        // Reopened (a restart): indexed from the files; a leftover temporary and a
        // foreign file are cleared.
        std::fs::write(dir.path().join("junk.tmp123"), b"x").unwrap();
        std::fs::write(
            dir.path().join(format!("{}.bin", hex_key(&[9; 32]))),
            b"nope",
        )
        .unwrap();
        let disk = DiskCache::open(dir.path(), ttl, 10_000).unwrap();
        assert_eq!(disk.get(&[2; 32]).unwrap().body[0], 2);
        assert!(disk.get(&[9; 32]).is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        // More than fit: the bound holds, and the files are exactly the index's.
        for key in 3..8u8 {
            disk.put([key; 32], &with_headers(3_000, key)).unwrap();
            assert!(disk.bytes() <= 10_000);
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count() as u64,
                disk.index.entry_count()
            );
        }
        let kept: Vec<u8> = (1..8u8)
            .filter(|key| disk.get(&[*key; 32]).is_some())
            .collect();
        assert!((1..=3).contains(&kept.len()), "kept {kept:?}");
        for key in &kept {
            assert_eq!(disk.get(&[*key; 32]).unwrap().body[0], *key);
        }

        // A torn file is a miss, and is deleted.
        let torn = dir.path().join(format!("{}.bin", hex_key(&[kept[0]; 32])));
        let bytes = std::fs::read(&torn).unwrap();
        std::fs::write(&torn, &bytes[..10]).unwrap();
        assert!(disk.get(&[kept[0]; 32]).is_none());
        assert!(!torn.exists());
    }

    #[test]
    fn disk_results_expire_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskCache::open(dir.path(), Duration::from_millis(30), 10_000).unwrap();
        disk.put([1; 32], &with_headers(100, 1)).unwrap();
        assert!(disk.get(&[1; 32]).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(disk.get(&[1; 32]).is_none());
        let disk = DiskCache::open(dir.path(), Duration::from_millis(30), 10_000).unwrap();
        assert_eq!(disk.bytes(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A file that does not say which origins its result came through cannot be checked
    /// against the tenant's policy: at open and at a read it is foreign, deleted, a miss.
    #[test]
    fn disk_files_without_their_origins_are_misses() {
        let now = unix_ms();
        let version_1 = {
            let mut file = b"TSRC1".to_vec();
            file.extend_from_slice(&now.to_le_bytes());
            let headers = b"content-type: image/webp\n";
            file.extend_from_slice(&(headers.len() as u32).to_le_bytes());
            file.extend_from_slice(headers);
            file.extend_from_slice(&[1; 100]);
            file
        };
        let no_origins = encode(
            now,
            &Cached {
                origins: Vec::new(),
                ..with_headers(100, 2)
            },
        );
        let scenarios: [(&str, Vec<u8>, bool); 3] = [
            ("with its origins", encode(now, &with_headers(100, 3)), true),
            ("version 1, before origins were kept", version_1, false),
            ("no origin", no_origins, false),
        ];
        for (what, file, served) in scenarios {
            // Read by a running node.
            assert_eq!(decode(&file).is_some(), served, "{what}, read");
            // Found at open (a restart).
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("{}.bin", hex_key(&[5; 32])));
            std::fs::write(&path, &file).unwrap();
            let disk = DiskCache::open(dir.path(), Duration::from_secs(60), 10_000).unwrap();
            assert_eq!(disk.get(&[5; 32]).is_some(), served, "{what}, at open");
            assert_eq!(path.exists(), served, "{what}, at open");
        }
    }
}
