//! A compact digest of a node's bounded counters, for anti-entropy.
//!
//! Escrow counters travel whole and merge by cell-wise maximum, so there is no per-origin
//! sequence to summarise them with (unlike the ledger). Instead each counter is hashed
//! (FNV-1a over its key and canonical encoding), counters are spread over [`BUCKETS`]
//! buckets by key, a bucket's hash is the XOR of its counters' hashes (so one counter's
//! change updates it in O(1)), and the root hashes the buckets. Two idle replicas compare
//! 8-byte roots; when they differ they compare buckets (2 KB) and exchange only the
//! counters of differing buckets. FNV-1a is written out (not `DefaultHasher`) because the
//! digest must be identical on every node and every build. Encodings are fed to the hash
//! as they are produced, never built; the encoding holds every cell, refunds included, so
//! a refund a peer missed makes the digests differ and anti-entropy carries it. The node
//! updates the digest lazily for consumes and refunds (the request path only notes the
//! key; the counter is rehashed before the digest is read or sent, and at every push), so
//! peers see exactly what eager updates would give.

use tessera_crdt::{BoundedCounter, CounterKey, IdHashMap};

/// Buckets per digest.
pub const BUCKETS: usize = 256;

/// FNV-1a over `bytes`, continuing from `hash` (start from [`FNV_OFFSET`]).
pub(crate) fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a as a byte sink, so an encoder can write into the hash.
struct Fnv1a(u64);

impl Extend<u8> for Fnv1a {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        for byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The bucket a key falls in.
pub fn bucket_of(key: &CounterKey) -> usize {
    bucket_of_hash(key_hash(key))
}

/// FNV-1a of the key's postcard encoding.
fn key_hash(key: &CounterKey) -> u64 {
    postcard::to_extend(key, Fnv1a(FNV_OFFSET))
        .expect("postcard serialises counter keys")
        .0
}

fn bucket_of_hash(key_hash: u64) -> usize {
    (key_hash % BUCKETS as u64) as usize
}

/// A counter's hash, continuing from its key's hash. Never 0, so an empty bucket and a
/// bucket of hashes that cancel are told apart less often; collisions only cost an extra
/// exchange, never correctness.
fn counter_hash(key_hash: u64, counter: &BoundedCounter) -> u64 {
    counter.encode_into(Fnv1a(key_hash)).0 | 1
}

/// Bucket hashes kept current as counters change. See the module doc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EscrowDigest {
    buckets: Vec<u64>,
    /// Each counter's current hash (never iterated: a hash table).
    hashes: IdHashMap<CounterKey, u64>,
}

impl Default for EscrowDigest {
    fn default() -> Self {
        EscrowDigest {
            buckets: vec![0; BUCKETS],
            hashes: IdHashMap::default(),
        }
    }
}

impl EscrowDigest {
    /// The digest of every counter in `counters`.
    pub fn of<'a>(
        counters: impl IntoIterator<Item = (&'a CounterKey, &'a BoundedCounter)>,
    ) -> EscrowDigest {
        let mut digest = EscrowDigest::default();
        for (key, counter) in counters {
            digest.update(key, counter);
        }
        digest
    }

    /// Records the current value of one counter.
    pub fn update(&mut self, key: &CounterKey, counter: &BoundedCounter) {
        let key_hash = key_hash(key);
        let hash = counter_hash(key_hash, counter);
        let bucket = bucket_of_hash(key_hash);
        if let Some(old) = self.hashes.insert(*key, hash) {
            self.buckets[bucket] ^= old;
        }
        self.buckets[bucket] ^= hash;
    }

    /// Makes room for `total` counters in all (see [`EscrowBook::reserve_total`]: the
    /// digest holds one hash per counter of the book, and grows with it).
    ///
    /// [`EscrowBook::reserve_total`]: tessera_crdt::EscrowBook::reserve_total
    pub fn reserve_total(&mut self, total: usize) {
        self.hashes.reserve(total.saturating_sub(self.hashes.len()));
    }

    /// Takes a forgotten counter out of the digest.
    pub fn remove(&mut self, key: &CounterKey) {
        if let Some(old) = self.hashes.remove(key) {
            self.buckets[bucket_of_hash(key_hash(key))] ^= old;
        }
    }

    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    pub fn root(&self) -> u64 {
        self.buckets.iter().fold(FNV_OFFSET, |hash, bucket| {
            fnv1a(&bucket.to_le_bytes(), hash)
        })
    }

    /// Buckets whose hash differs from `theirs` (all of them if `theirs` is malformed).
    pub fn differing(&self, theirs: &[u64]) -> Vec<u16> {
        (0..BUCKETS)
            .filter(|b| theirs.get(*b) != Some(&self.buckets[*b]))
            .map(|b| b as u16)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tessera_crdt::{Metric, NodeId, Period, TenantId};

    fn key(t: u64) -> CounterKey {
        CounterKey::new(
            TenantId(t),
            Period::month(2026, 11).unwrap(),
            Metric::Requests,
        )
    }

    #[test]
    fn streamed_hashes_equal_hashes_of_the_encodings() {
        let k = key(42);
        let key_bytes = postcard::to_allocvec(&k).unwrap();
        assert_eq!(key_hash(&k), fnv1a(&key_bytes, FNV_OFFSET));
        let mut c = BoundedCounter::new();
        c.grant(NodeId(1), 1000).unwrap();
        c.transfer(NodeId(1), NodeId(2), 300).unwrap();
        c.consume(NodeId(2), 7).unwrap();
        assert_eq!(
            counter_hash(key_hash(&k), &c),
            fnv1a(&c.encode(), key_hash(&k)) | 1
        );
    }

    #[test]
    fn incremental_equals_from_scratch_and_detects_changes() {
        let mut counters: BTreeMap<CounterKey, BoundedCounter> = BTreeMap::new();
        let mut digest = EscrowDigest::default();
        for t in 0..50 {
            let mut c = BoundedCounter::new();
            c.grant(NodeId(1), 10 + t).unwrap();
            digest.update(&key(t), &c);
            counters.insert(key(t), c);
        }
        assert_eq!(digest, EscrowDigest::of(&counters));
        let before = digest.root();
        let c = counters.get_mut(&key(7)).unwrap();
        c.consume(NodeId(1), 1).unwrap();
        digest.update(&key(7), c);
        assert_ne!(digest.root(), before);
        assert_eq!(digest, EscrowDigest::of(&counters));
        // A refund changes the root, and a replica without it differs in that bucket.
        let without_refund = digest.clone();
        let c = counters.get_mut(&key(7)).unwrap();
        c.refund(NodeId(1), 1).unwrap();
        digest.update(&key(7), c);
        assert_ne!(digest.root(), without_refund.root());
        assert_eq!(
            digest.differing(without_refund.buckets()),
            vec![bucket_of(&key(7)) as u16]
        );
        assert_eq!(digest, EscrowDigest::of(&counters));
        let theirs = EscrowDigest::default();
        assert!(digest
            .differing(theirs.buckets())
            .contains(&(bucket_of(&key(7)) as u16)));
        assert!(digest.differing(digest.buckets()).is_empty());
    }
}
