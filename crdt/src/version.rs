//! The version vector: for each origin node, how far into that node's own sequence of
//! increments a replica is known to be complete. It is the ledger's anti-entropy digest.
//!
//! Built on `crdts::VClock`, which is exactly this lattice (a map node → counter, merged by
//! pointwise maximum). It is wrapped rather than exposed so that (a) the names say what the
//! numbers mean here (a *complete prefix*, not just "events seen"), and (b) the encoding is
//! canonical and validated: a sorted list of `(node, seq)` pairs with positive sequence
//! numbers, O(nodes) bytes and independent of the number of tenants.

use std::collections::BTreeMap;

use crdts::{CmRDT, CvRDT, Dot, VClock};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, Kind};
use crate::ids::NodeId;

/// Per-origin complete-prefix sequence numbers. Missing origins are at 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionVector {
    clock: VClock<NodeId>,
}

impl VersionVector {
    /// Nodes a digest may name; far above any cluster, so a hostile digest stays small.
    pub const NODES_MAX: usize = 4096;
    /// Cap on an encoded version vector: header + `NODES_MAX` pairs of two varints.
    pub const BYTES_MAX: usize = 2 + 5 + Self::NODES_MAX * 20;

    pub fn new() -> Self {
        VersionVector::default()
    }

    /// The complete prefix known for `origin` (0 when nothing is known).
    pub fn get(&self, origin: NodeId) -> u64 {
        self.clock.get(&origin)
    }

    /// Raises `origin`'s entry to `seq` if it is lower; never lowers it.
    pub fn advance(&mut self, origin: NodeId, seq: u64) {
        if seq > 0 {
            self.clock.apply(Dot::new(origin, seq));
        }
    }

    /// Forgets `origin` (a retired identity: see `Ledger::retire`). Not a lattice
    /// operation: the caller must also refuse that origin's entries from then on.
    pub fn forget(&mut self, origin: NodeId) {
        self.clock.dots.remove(&origin);
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        self.clock.merge(other.clock.clone());
    }

    /// Whether every entry of `self` is ≤ the same entry of `other`.
    pub fn is_covered_by(&self, other: &VersionVector) -> bool {
        self.iter().all(|(node, seq)| other.get(node) >= seq)
    }

    /// `(origin, seq)` pairs with `seq > 0`, in node order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, u64)> + '_ {
        self.clock.iter().map(|dot| (*dot.actor, dot.counter))
    }

    /// Number of origins with a non-zero entry.
    pub fn len(&self) -> usize {
        self.clock.dots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clock.is_empty()
    }

    /// The canonical encoding (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(Kind::VersionVector, self)
    }

    /// Decodes and validates an encoding made by [`VersionVector::encode`].
    pub fn decode(bytes: &[u8]) -> Result<VersionVector, DecodeError> {
        codec::decode(Kind::VersionVector, bytes, Self::BYTES_MAX)
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<I: IntoIterator<Item = (NodeId, u64)>>(pairs: I) -> Self {
        let mut vv = VersionVector::new();
        for (node, seq) in pairs {
            vv.advance(node, seq);
        }
        vv
    }
}

impl Serialize for VersionVector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for VersionVector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let pairs = Vec::<(NodeId, u64)>::deserialize(deserializer)?;
        if pairs.len() > Self::NODES_MAX {
            return Err(D::Error::custom("version vector names too many nodes"));
        }
        if pairs.windows(2).any(|w| w[0].0 >= w[1].0) || pairs.iter().any(|(_, s)| *s == 0) {
            return Err(D::Error::custom(
                "version vector is not sorted, unique and positive",
            ));
        }
        let dots: BTreeMap<NodeId, u64> = pairs.into_iter().collect();
        Ok(VersionVector {
            clock: VClock { dots },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_never_lowers_and_merge_is_pointwise_max() {
        let mut a: VersionVector = [(NodeId(1), 5), (NodeId(2), 1)].into_iter().collect();
        a.advance(NodeId(1), 3);
        assert_eq!(a.get(NodeId(1)), 5);
        a.advance(NodeId(3), 0);
        assert_eq!(a.len(), 2);
        let b: VersionVector = [(NodeId(2), 7), (NodeId(4), 2)].into_iter().collect();
        a.merge(&b);
        let pairs: Vec<_> = a.iter().collect();
        assert_eq!(pairs, [(NodeId(1), 5), (NodeId(2), 7), (NodeId(4), 2)]);
        assert!(b.is_covered_by(&a));
        assert!(!a.is_covered_by(&b));
    }

    #[test]
    fn encoding_is_small_canonical_and_validated() {
        let vv: VersionVector = [(NodeId(1), 1000), (NodeId(2), 1)].into_iter().collect();
        let bytes = vv.encode();
        assert!(bytes.len() <= 2 + 1 + 2 * 4, "{} bytes", bytes.len());
        assert_eq!(VersionVector::decode(&bytes), Ok(vv));
        // Unsorted, duplicate or zero entries are refused.
        for pairs in [
            vec![(NodeId(2), 1u64), (NodeId(1), 1)],
            vec![(NodeId(1), 1), (NodeId(1), 2)],
            vec![(NodeId(1), 0)],
        ] {
            let bytes = codec::encode(Kind::VersionVector, &pairs);
            assert!(VersionVector::decode(&bytes).is_err(), "{pairs:?}");
        }
    }
}
