//! `Idempotency-Key`: a retry of a billed request with the same key, by the same tenant,
//! on the same node, within the TTL, gets the first answer again and is not billed again.
//!
//! What it covers, honestly: the cache is in memory on one node. A retry that reaches
//! another node (a load balancer that moved it), or this node after a restart, is
//! processed and billed again; the key is not replicated because a cluster-wide check
//! would put a remote call (or a consensus round) on the request path, which the product
//! refuses. Clients that need exactly-once billing across nodes should pin retries to a
//! node. Only successful answers are kept: a failed request billed nothing, so its retry
//! runs again. A retry while the first is still running gets 409; the same key with a
//! different request (query or body) gets 422.
//!
//! Bounded: entries expire after `ttl_s`, and beyond `entries_max` entries or
//! `bytes_max` stored bytes the oldest go first.
//!
//! Why oldest-first here when the result cache ([`crate::work::cache`]) keeps what is
//! popular: an entry is worth keeping for the retry that may follow its request, and
//! retries come soon after the first attempt (a client's backoff, seconds), once or a
//! few times — never "popularity". The entry most likely to be asked for again is the
//! newest, the least likely the oldest, which is what insertion order evicts. A
//! frequency-based policy (moka's TinyLFU) would do worse than wrong: its admission
//! filter refuses a newcomer asked for less often than the entry it would replace, so
//! under pressure a fresh request's answer would not be kept and its retry would be
//! billed again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use tessera_crdt::TenantId;

use crate::http::error::{ApiError, ErrorCode};

/// Longest accepted key.
pub const KEY_BYTES_MAX: usize = 255;

/// A kept answer.
#[derive(Clone, Debug)]
pub struct Stored {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

enum Entry {
    InFlight {
        fingerprint: [u8; 32],
    },
    Done {
        fingerprint: [u8; 32],
        answer: Stored,
    },
}

type Key = (TenantId, String);

struct Inner {
    entries: HashMap<Key, (Instant, Entry)>,
    /// Insertion order, for expiry and eviction.
    order: VecDeque<(Instant, Key)>,
    bytes: usize,
}

pub struct IdempotencyCache {
    ttl: Duration,
    entries_max: usize,
    bytes_max: usize,
    inner: Mutex<Inner>,
}

/// What to do with a request carrying a key.
pub enum Begin {
    /// First time: run it, then [`Claim::finish`].
    Fresh(Claim),
    /// Seen and answered: send this again, bill nothing.
    Replay(Stored),
}

/// The right to run a keyed request; dropped without [`Claim::finish`], it frees the key.
pub struct Claim {
    cache: Arc<IdempotencyCache>,
    key: Option<Key>,
}

/// Checks an `Idempotency-Key` header value.
pub fn parse_key(value: &[u8]) -> Result<String, ApiError> {
    if value.is_empty()
        || value.len() > KEY_BYTES_MAX
        || !value.iter().all(|b| b.is_ascii_graphic())
    {
        return Err(ApiError::bad_parameter(format!(
            "Idempotency-Key must be 1 to {KEY_BYTES_MAX} visible ASCII characters"
        )));
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

impl IdempotencyCache {
    pub fn new(ttl: Duration, entries_max: usize, bytes_max: usize) -> Arc<IdempotencyCache> {
        Arc::new(IdempotencyCache {
            ttl,
            entries_max: entries_max.max(1),
            bytes_max,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn begin(
        self: &Arc<Self>,
        tenant: TenantId,
        key: String,
        fingerprint: [u8; 32],
        now: Instant,
    ) -> Result<Begin, ApiError> {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        let map_key = (tenant, key);
        match inner.entries.get(&map_key) {
            Some((_, Entry::InFlight { .. })) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    ErrorCode::IdempotencyInProgress,
                    "a request with this Idempotency-Key is still being processed",
                ))
            }
            Some((_, Entry::Done { fingerprint: f, .. })) if *f != fingerprint => {
                return Err(ApiError::unprocessable(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used for a different request",
                ))
            }
            Some((_, Entry::Done { answer, .. })) => return Ok(Begin::Replay(answer.clone())),
            None => {}
        }
        while inner.entries.len() >= self.entries_max {
            if !self.evict_oldest(&mut inner) {
                break;
            }
        }
        inner
            .entries
            .insert(map_key.clone(), (now, Entry::InFlight { fingerprint }));
        inner.order.push_back((now, map_key.clone()));
        Ok(Begin::Fresh(Claim {
            cache: self.clone(),
            key: Some(map_key),
        }))
    }

    fn expire(&self, inner: &mut Inner, now: Instant) {
        while let Some((at, _)) = inner.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            self.evict_oldest(inner);
        }
    }

    /// Drops the oldest entry (if the order queue still names it).
    fn evict_oldest(&self, inner: &mut Inner) -> bool {
        let Some((at, key)) = inner.order.pop_front() else {
            return false;
        };
        if inner.entries.get(&key).is_some_and(|(t, _)| *t == at) {
            if let Some((_, Entry::Done { answer, .. })) = inner.entries.remove(&key) {
                inner.bytes -= answer.body.len();
            }
        }
        true
    }
}

impl Claim {
    /// Keeps `answer` for retries (successful answers only).
    pub fn finish(mut self, answer: Stored) {
        let Some(key) = self.key.take() else { return };
        let cache = &self.cache;
        let mut inner = cache.lock();
        let size = answer.body.len();
        if size > cache.bytes_max {
            inner.entries.remove(&key);
            return;
        }
        while inner.bytes + size > cache.bytes_max {
            if !cache.evict_oldest(&mut inner) {
                break;
            }
        }
        let now = Instant::now();
        if let Some((at, entry)) = inner.entries.get_mut(&key) {
            if let Entry::InFlight { fingerprint } = *entry {
                *entry = Entry::Done {
                    fingerprint,
                    answer,
                };
                *at = now;
                inner.bytes += size;
                inner.order.push_back((now, key));
            }
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cache.lock().entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static [u8]) -> Stored {
        Stored {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn first_runs_retry_replays_until_the_ttl() {
        let cache = IdempotencyCache::new(Duration::from_secs(10), 100, 1 << 20);
        let t0 = Instant::now();
        let a = TenantId(1);
        let Ok(Begin::Fresh(claim)) = cache.begin(a, "k".into(), [1; 32], t0) else {
            panic!("fresh")
        };
        // While running: 409.
        assert_eq!(
            cache.begin(a, "k".into(), [1; 32], t0).err().unwrap().code,
            ErrorCode::IdempotencyInProgress
        );
        claim.finish(answer(b"image"));
        let Ok(Begin::Replay(stored)) = cache.begin(a, "k".into(), [1; 32], t0) else {
            panic!("replay")
        };
        assert_eq!(&stored.body[..], b"image");
        // Another request under the same key: 422. Another tenant: its own key space.
        assert_eq!(
            cache.begin(a, "k".into(), [2; 32], t0).err().unwrap().code,
            ErrorCode::IdempotencyKeyReused
        );
        assert!(matches!(
            cache.begin(TenantId(2), "k".into(), [2; 32], t0),
            Ok(Begin::Fresh(_))
        ));
        // After the TTL the key is free again.
        assert!(matches!(
            cache.begin(a, "k".into(), [1; 32], t0 + Duration::from_secs(60)),
            Ok(Begin::Fresh(_))
        ));
    }

    #[test]
    fn a_dropped_claim_frees_the_key() {
        let cache = IdempotencyCache::new(Duration::from_secs(10), 100, 1 << 20);
        let t0 = Instant::now();
        let claim = cache.begin(TenantId(1), "k".into(), [1; 32], t0);
        drop(claim);
        assert!(matches!(
            cache.begin(TenantId(1), "k".into(), [1; 32], t0),
            Ok(Begin::Fresh(_))
        ));
    }

    #[test]
    fn bounded_in_entries_and_bytes() {
        let cache = IdempotencyCache::new(Duration::from_secs(10), 3, 10);
        let t0 = Instant::now();
        for i in 0..10 {
            if let Ok(Begin::Fresh(claim)) = cache.begin(TenantId(1), format!("k{i}"), [0; 32], t0)
            {
                claim.finish(answer(b"12345"));
            }
        }
        let inner = cache.lock();
        assert!(inner.entries.len() <= 3);
        assert!(inner.bytes <= 10);
    }

    #[test]
    fn keys_are_checked() {
        assert!(parse_key(b"abc-123").is_ok());
        assert!(parse_key(b"").is_err());
        assert!(parse_key(b"has space").is_err());
        assert!(parse_key(&[b'a'; 256]).is_err());
    }
}
