//! Identities and keys shared by every replicated type: who wrote (`NodeId`), for whom
//! (`TenantId`), what was measured (`Metric`) and the key of one counter (`CounterKey`).
//!
//! They are small `Copy` integers on purpose: a counter slot is keyed by them millions of
//! times over (100K tenants × 4 metrics × nodes), and the binary encoding writes them as
//! varints, so a digest or delta stays a few bytes per entry.
//!
//! The hash tables keyed by them (ledger slots, escrow counters, the sync core's per-key
//! state) use [`IdHasher`]: deterministic (this crate has no randomness, and the sync core
//! replays seeds) and a few nanoseconds per key, where std's SipHash took tens on the
//! request path. It is not keyed, which is fine for ids assigned by the directory or chosen
//! by nodes; a table keyed by request input (the directory's key-prefix index) keeps std's
//! randomly keyed SipHash.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

use crate::period::Period;

/// Identity of one replica, which is also the owner of one counter slot.
///
/// The node chooses its own id (for example at random when it first creates its store) and
/// persists it with its data. Ids are never reused: a node that lost its data comes back
/// with a *new* id and so a fresh slot, because re-using an old slot from zero would make
/// its new increments invisible behind the higher values its peers already hold (merge is
/// a maximum), losing usage. This crate never invents an id; it is always passed in.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Identity of a tenant, assigned by the tenant directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantId(pub u64);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A billed quantity. The variant order is the encoding (a one-byte index), so new metrics
/// are only ever appended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Metric {
    /// Answered, billable requests.
    Requests,
    /// CPU time spent converting, in microseconds.
    CpuMicros,
    /// Request body (source image) bytes.
    BytesIn,
    /// Response body (converted image) bytes.
    BytesOut,
}

impl Metric {
    /// Every metric, in encoding order.
    pub const ALL: [Metric; 4] = [
        Metric::Requests,
        Metric::CpuMicros,
        Metric::BytesIn,
        Metric::BytesOut,
    ];

    /// The metric's stable name, as used in APIs and exports.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::CpuMicros => "cpu_micros",
            Metric::BytesIn => "bytes_in",
            Metric::BytesOut => "bytes_out",
        }
    }

    /// The position of the metric in [`Metric::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The key of one replicated counter: a tenant's metric in one billing period.
///
/// Ordered tenant first, then period, then metric, so every counter of a tenant and
/// period is adjacent in an ordered map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CounterKey {
    pub tenant: TenantId,
    pub period: Period,
    pub metric: Metric,
}

impl CounterKey {
    pub fn new(tenant: TenantId, period: Period, metric: Metric) -> Self {
        CounterKey {
            tenant,
            period,
            metric,
        }
    }
}

/// A fast deterministic hasher for small integer keys (see the module doc): each word is
/// folded in by rotate, xor and multiply (FxHash's step), and the result is finished with
/// SplitMix64's mixer, so every bit of the hash depends on every bit of the key (hashbrown
/// takes the bucket from the low bits and a tag from the high ones).
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

impl IdHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for IdHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn write_isize(&mut self, i: isize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Builds [`IdHasher`]s.
pub type IdBuildHasher = BuildHasherDefault<IdHasher>;
/// A hash map keyed by ids, with [`IdHasher`].
pub type IdHashMap<K, V> = HashMap<K, V, IdBuildHasher>;
/// A hash set of ids, with [`IdHasher`].
pub type IdHashSet<K> = HashSet<K, IdBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_and_indices_are_stable() {
        let names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["requests", "cpu_micros", "bytes_in", "bytes_out"]);
        for (i, m) in Metric::ALL.iter().enumerate() {
            assert_eq!(m.index(), i);
        }
    }

    #[test]
    fn node_id_displays_as_fixed_width_hex() {
        assert_eq!(NodeId(0xab).to_string(), "00000000000000ab");
    }

    #[test]
    fn id_hasher_is_deterministic_and_spreads_small_keys() {
        use std::hash::BuildHasher;
        let build = IdBuildHasher::default();
        let key = |t: u64| {
            CounterKey::new(
                TenantId(t),
                Period::month(2026, 11).unwrap(),
                Metric::Requests,
            )
        };
        assert_eq!(build.hash_one(key(7)), build.hash_one(key(7)));
        assert_ne!(build.hash_one(key(7)), build.hash_one(key(8)));
        // Consecutive ids land in different low-bit buckets and high-bit tags.
        let low: HashSet<u64> = (0..64).map(|t| build.hash_one(key(t)) & 63).collect();
        let high: HashSet<u64> = (0..64).map(|t| build.hash_one(key(t)) >> 57).collect();
        assert!(
            low.len() > 32 && high.len() > 32,
            "{} {}",
            low.len(),
            high.len()
        );
    }

    #[test]
    fn ids_encode_as_varints() {
        // One byte for a small id: digests stay O(nodes) small.
        assert_eq!(postcard::to_allocvec(&NodeId(5)).unwrap(), [5]);
        assert_eq!(postcard::to_allocvec(&Metric::BytesOut).unwrap(), [3]);
    }
}
