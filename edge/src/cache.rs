//! A bounded in-memory cache of signed-URL results, so a popular URL is fetched from its
//! origin and converted once per TTL rather than once per request.
//!
//! Keyed by a digest of (tenant, the signed part of the URL, the options actually used —
//! which include the format `Accept` chose), so two URLs share an entry only when they
//! would produce the same bytes. Bounded in bytes (oldest entries go first) and in time
//! (`ttl_s`). A hit is still a request the tenant makes: it is admitted by the quota and
//! billed (bytes out, no CPU, no bytes in), and only successful answers are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bytes::Bytes;

/// A kept answer.
#[derive(Debug)]
pub struct Cached {
    pub headers: HeaderMap,
    pub body: Bytes,
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
}

impl ResultCache {
    /// `bytes_max == 0` disables the cache.
    pub fn new(ttl: Duration, bytes_max: usize) -> ResultCache {
        ResultCache {
            ttl,
            bytes_max,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &[u8; 32], now: Instant) -> Option<Arc<Cached>> {
        let inner = self.lock();
        let (at, cached) = inner.entries.get(key)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| cached.clone())
    }

    pub fn put(&self, key: [u8; 32], cached: Cached, now: Instant) {
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
        if let Some((_, old)) = inner.entries.insert(key, (now, Arc::new(cached))) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(n: usize) -> Cached {
        Cached {
            headers: HeaderMap::new(),
            body: Bytes::from(vec![7u8; n]),
        }
    }

    #[test]
    fn hits_expire_and_bytes_stay_bounded() {
        let cache = ResultCache::new(Duration::from_secs(10), 100);
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
        let cache = ResultCache::new(Duration::from_secs(10), 0);
        cache.put([1; 32], cached(1), Instant::now());
        assert!(cache.get(&[1; 32], Instant::now()).is_none());
    }
}
