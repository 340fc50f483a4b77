//! A bounded cache of signed-URL results, so a popular URL is fetched from its origin and
//! converted once per TTL rather than once per request: in memory, and optionally on disk
//! behind it (`cache.disk_bytes_max`), where results survive a restart.
//!
//! Keyed by a digest of (tenant, the signed part of the URL, the options actually used —
//! which include the format `Accept` chose), so two URLs share an entry only when they
//! would produce the same bytes. Bounded in bytes (oldest entries go first) and in time
//! (`ttl_s`). A hit is still a request the tenant makes: it is admitted by the quota and
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
//! memory, rebuilt at start from the files' headers; the oldest files go first when the
//! bytes exceed the bound. File work runs on tokio's blocking pool, never on a runtime
//! thread.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;

/// A kept answer.
#[derive(Debug)]
pub struct Cached {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The origins the source came through ([`crate::fetch::Fetched::origins`]), never
    /// empty: a hit is served only while the tenant allows each.
    pub origins: Vec<String>,
}

struct Inner {
    entries: HashMap<[u8; 32], (Instant, Arc<Cached>)>,
    order: VecDeque<(Instant, [u8; 32])>,
    bytes: usize,
}

pub struct ResultCache {
    ttl: Duration,
    bytes_max: usize,
    inner: Mutex<Inner>,
    disk: Option<Arc<DiskCache>>,
}

impl ResultCache {
    /// `bytes_max == 0` disables the memory tier; `disk` adds the disk tier behind it.
    pub fn new(ttl: Duration, bytes_max: usize, disk: Option<DiskCache>) -> ResultCache {
        ResultCache {
            ttl,
            bytes_max,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<Arc<Cached>> {
        let inner = self.lock();
        let (at, cached) = inner.entries.get(key)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| cached.clone())
    }

    pub fn put(&self, key: [u8; 32], cached: Arc<Cached>, now: Instant) {
        let size = cached.body.len();
        if size == 0 || size > self.bytes_max {
            return;
        }
        let mut inner = self.lock();
        // Expired entries first, then the oldest, until the new one fits.
        while let Some((at, oldest)) = inner.order.front().copied() {
            let expired = now.saturating_duration_since(at) >= self.ttl;
            if !expired && inner.bytes + size <= self.bytes_max {
                break;
            }
            inner.order.pop_front();
            if inner.entries.get(&oldest).is_some_and(|(t, _)| *t == at) {
                if let Some((_, gone)) = inner.entries.remove(&oldest) {
                    inner.bytes -= gone.body.len();
                }
            }
        }
        if let Some((_, old)) = inner.entries.insert(key, (now, cached)) {
            inner.bytes -= old.body.len();
        }
        inner.bytes += size;
        inner.order.push_back((now, key));
    }

    /// Bytes held (for tests and metrics).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

/// Magic and format version at the head of every cache file.
const DISK_MAGIC: &[u8; 5] = b"TSRC2";
/// Magic, write time (u64), header length (u32) and origins length (u32).
const DISK_HEAD: usize = DISK_MAGIC.len() + 8 + 4 + 4;
/// Headers (or origins) longer than this mark a file as not ours.
const DISK_HEADERS_MAX: usize = 64 << 10;

struct DiskIndex {
    /// Key → (write time in Unix ms, file size).
    entries: HashMap<[u8; 32], (u64, u64)>,
    order: VecDeque<(u64, [u8; 32])>,
    bytes: u64,
}

/// The disk tier: results as files under one directory, bounded in bytes and by TTL.
pub struct DiskCache {
    dir: PathBuf,
    ttl_ms: u64,
    bytes_max: u64,
    index: Mutex<DiskIndex>,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex_key(key: &[u8; 32]) -> String {
    crate::auth::hex(key)
}

fn parse_key(name: &str) -> Option<[u8; 32]> {
    let stem = name.strip_suffix(".bin")?;
    crate::auth::parse_digest(stem)
}

impl DiskCache {
    /// Opens (creating) `dir` and indexes the files in it: unreadable, expired or foreign
    /// files and leftover temporaries are deleted; the oldest go while over `bytes_max`.
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
        found.sort_unstable();
        let cache = DiskCache {
            dir: dir.to_owned(),
            ttl_ms,
            bytes_max,
            index: Mutex::new(DiskIndex {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        };
        let mut victims = Vec::new();
        {
            let mut index = cache.lock();
            for (written, key, size) in found {
                index.entries.insert(key, (written, size));
                index.order.push_back((written, key));
                index.bytes += size;
            }
            cache.evict(&mut index, 0, now, &mut victims);
        }
        cache.remove(&victims);
        Ok(cache)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskIndex> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}.bin", hex_key(key)))
    }

    /// Drops expired entries, then the oldest, until `incoming` more bytes fit; the keys
    /// whose files are to be deleted go to `victims`.
    fn evict(&self, index: &mut DiskIndex, incoming: u64, now: u64, victims: &mut Vec<[u8; 32]>) {
        while let Some((written, oldest)) = index.order.front().copied() {
            let expired = now.saturating_sub(written) >= self.ttl_ms;
            if !expired && index.bytes + incoming <= self.bytes_max {
                break;
            }
            index.order.pop_front();
            if index
                .entries
                .get(&oldest)
                .is_some_and(|(w, _)| *w == written)
            {
                if let Some((_, size)) = index.entries.remove(&oldest) {
                    index.bytes -= size;
                    victims.push(oldest);
                }
            }
        }
    }

    fn remove(&self, victims: &[[u8; 32]]) {
        for key in victims {
            let _ = std::fs::remove_file(self.path(key));
        }
    }

    /// Bytes held on disk (for tests and metrics).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Reads a result (blocking). A file that fails its checks is deleted: a miss.
    pub fn get(&self, key: &[u8; 32]) -> Option<Cached> {
        let now = unix_ms();
        let written = {
            let index = self.lock();
            let (written, _) = *index.entries.get(key)?;
            written
        };
        if now.saturating_sub(written) >= self.ttl_ms {
            return None;
        }
        let path = self.path(key);
        let read = std::fs::read(&path).ok().and_then(|bytes| decode(&bytes));
        match read {
            Some((at, cached)) if at == written => Some(cached),
            _ => {
                let mut index = self.lock();
                if let Some((_, size)) = index.entries.remove(key) {
                    index.bytes -= size;
                }
                drop(index);
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Writes a result (blocking), making room first.
    pub fn put(&self, key: [u8; 32], cached: &Cached) -> std::io::Result<()> {
        let now = unix_ms();
        let encoded = encode(now, cached);
        let size = encoded.len() as u64;
        if size > self.bytes_max {
            return Ok(());
        }
        let mut victims = Vec::new();
        {
            let mut index = self.lock();
            if let Some((_, old)) = index.entries.remove(&key) {
                index.bytes -= old;
            }
            self.evict(&mut index, size, now, &mut victims);
            // Reserved before the write, so concurrent writers respect the bound.
            index.entries.insert(key, (now, size));
            index.order.push_back((now, key));
            index.bytes += size;
        }
        self.remove(&victims);
        let path = self.path(&key);
        let temporary =
            path.with_extension(format!("tmp{}", crate::control::records::RequestId::next()));
        let written = std::fs::File::create(&temporary)
            .and_then(|mut file| file.write_all(&encoded))
            .and_then(|()| std::fs::rename(&temporary, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temporary);
            let mut index = self.lock();
            if index.entries.get(&key).is_some_and(|(w, _)| *w == now) {
                index.entries.remove(&key);
                index.bytes -= size;
            }
        }
        written
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
        cache.put([2; 32], cached(40), t0);
        cache.put([3; 32], cached(40), t0);
        assert!(cache.bytes() <= 100);
        assert!(cache.get(&[1; 32], t0).is_none(), "the oldest made room");
        assert!(cache.get(&[3; 32], t0).is_some());
        // Too big for the cache at all: not kept.
        cache.put([4; 32], cached(101), t0);
        assert!(cache.get(&[4; 32], t0).is_none());
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
        // A third and a fourth do not fit with the first two: the oldest go.
        disk.put([3; 32], &with_headers(3_000, 3)).unwrap();
        disk.put([4; 32], &with_headers(3_000, 4)).unwrap();
        assert!(disk.bytes() <= 10_000);
        assert!(disk.get(&[1; 32]).is_none(), "the oldest made room");
        assert!(disk.get(&[4; 32]).is_some());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);

        // A torn file is a miss, and is deleted.
        let torn = dir.path().join(format!("{}.bin", hex_key(&[4; 32])));
        let bytes = std::fs::read(&torn).unwrap();
        std::fs::write(&torn, &bytes[..10]).unwrap();
        assert!(disk.get(&[4; 32]).is_none());
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
