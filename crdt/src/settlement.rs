//! Settlements: a compacted billing period's final totals, which replace its ledger slots.
//!
//! # The invariant
//! A settlement of period `P` is a deterministic function of `P`'s final slots: one total
//! per (tenant, metric), summed over every origin, ascending, zeros left out, plus
//! `through`, per origin, the sequence number up to which that origin's usage is in it
//! (its seal's, or for an origin that sealed nothing — a decommissioned member — the
//! highest of its slots or its prefix). Two replicas that hold `P` final hold the same
//! slots, so they build byte-for-byte the same settlement (same encoding, same
//! [`Settlement::digest`]); the ledger keeps it in place of the slots it drops
//! (`Ledger::compact`), and refuses slots of a settled period from then on.
//!
//! A replica whose `vv[o]` is below `through[o]` for some origin may lack some of `P`'s
//! slots that were dropped everywhere else: it must receive the settlement itself before
//! its prefix may move past that point (the sync core withholds ledger chunks from such a
//! peer until it has the settlement; `Ledger::settlements_lacked_by`). A settlement can be
//! larger than a replication frame (100K tenants × 4 metrics is ~2 MB), so it travels in
//! [`SettlementPart`]s, each a range of its totals, assembled in order and checked against
//! the digest before it is applied ([`Assembly`]).
//!
//! Why not keep the slots, or send a snapshot of the ledger: the slots are what grows with
//! tenants × writers × months (the point of compacting), and a full ledger snapshot would
//! carry every open period too; a settlement is one number per (tenant, metric).

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError, Kind};
use crate::ids::{Metric, NodeId, TenantId};
use crate::period::Period;

/// A compacted period's final totals. See the module doc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settlement {
    pub period: Period,
    /// Per origin, ascending: usage up to this sequence number is in the totals.
    pub through: Vec<(NodeId, u64)>,
    /// Per (tenant, metric), ascending, no zeros.
    pub totals: Vec<(TenantId, Metric, u64)>,
}

impl Settlement {
    /// Cap on an encoded settlement (a store record; the wire carries parts).
    pub const BYTES_MAX: usize = 1 << 30;

    /// The total of `(tenant, metric)` (0 when absent).
    pub fn total(&self, tenant: TenantId, metric: Metric) -> u64 {
        self.totals
            .binary_search_by(|(t, m, _)| (*t, *m).cmp(&(tenant, metric)))
            .map_or(0, |at| self.totals[at].2)
    }

    /// FNV-1a of the canonical encoding: equal settlements, equal digests, on every
    /// replica and build (the encoding is postcard's, frozen).
    pub fn digest(&self) -> u64 {
        self.encode()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
                (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
            })
    }

    /// Checks the canonical order: origins and totals strictly ascending, no zero total.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |what: &str| Err(DecodeError::Invalid(format!("settlement: {what}")));
        if self.through.windows(2).any(|w| w[0].0 >= w[1].0) {
            return invalid("origins are not ascending");
        }
        if self
            .totals
            .windows(2)
            .any(|w| (w[0].0, w[0].1) >= (w[1].0, w[1].1))
        {
            return invalid("totals are not ascending");
        }
        if self.totals.iter().any(|(_, _, total)| *total == 0) {
            return invalid("a zero total");
        }
        Ok(())
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(Kind::Settlement, self)
    }

    /// Decodes at most [`Settlement::BYTES_MAX`] bytes and validates the result.
    pub fn decode(bytes: &[u8]) -> Result<Settlement, DecodeError> {
        let settlement: Settlement = codec::decode(Kind::Settlement, bytes, Self::BYTES_MAX)?;
        settlement.validate()?;
        Ok(settlement)
    }

    /// The part of this settlement after `after` (from the start when `None`), at most
    /// `entries_max` totals (at least one).
    pub fn part(&self, after: Option<(TenantId, Metric)>, entries_max: usize) -> SettlementPart {
        let start = match after {
            None => 0,
            Some(after) => self.totals.partition_point(|(t, m, _)| (*t, *m) <= after),
        };
        let end = start
            .saturating_add(entries_max.max(1))
            .min(self.totals.len());
        SettlementPart {
            period: self.period,
            digest: self.digest(),
            after,
            totals: self.totals[start..end].to_vec(),
            through: if end == self.totals.len() {
                self.through.clone()
            } else {
                Vec::new()
            },
            last: end == self.totals.len(),
        }
    }
}

/// A range of a settlement's totals, for the wire. The last part carries `through`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementPart {
    pub period: Period,
    /// The whole settlement's digest: the assembly is checked against it.
    pub digest: u64,
    /// The totals start after this (tenant, metric); `None`: the first part.
    pub after: Option<(TenantId, Metric)>,
    pub totals: Vec<(TenantId, Metric, u64)>,
    /// Set in the last part only.
    pub through: Vec<(NodeId, u64)>,
    pub last: bool,
}

impl SettlementPart {
    /// Totals one part may carry, whatever the sender asks for.
    pub const ENTRIES_MAX: usize = 16_384;

    /// Where the next part starts: after this part's last total.
    pub fn next_after(&self) -> Option<(TenantId, Metric)> {
        self.totals.last().map(|(t, m, _)| (*t, *m)).or(self.after)
    }
}

/// Where a receiver stands in a settlement: its period and digest, and the last total it
/// holds (`None`: none yet). A ledger pull carries it, so the provider sends the next part.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub period: Period,
    pub digest: u64,
    pub after: Option<(TenantId, Metric)>,
}

/// A settlement being received part by part, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assembly {
    pub period: Period,
    pub digest: u64,
    totals: Vec<(TenantId, Metric, u64)>,
}

/// Why a part was not taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AssemblyError {
    #[error("the part does not continue the assembly (another period, digest or offset)")]
    OutOfOrder,
    #[error("the assembled settlement does not match its digest")]
    Digest,
    #[error("the assembled settlement is not canonical: {0}")]
    Invalid(DecodeError),
    #[error("a part carries more than SettlementPart::ENTRIES_MAX totals, or the assembly would pass Assembly::TOTALS_MAX")]
    TooLarge,
}

impl Assembly {
    /// Totals an assembly may gather: 2M tenants × 4 metrics (~190 MB), far above the
    /// directory's scale, so a peer sending parts that never end is refused, not stored.
    pub const TOTALS_MAX: usize = 8_000_000;

    /// Starts an assembly with the first part, or finishes at once with a one-part
    /// settlement.
    pub fn start(part: SettlementPart) -> Result<Result<Settlement, Assembly>, AssemblyError> {
        if part.after.is_some() {
            return Err(AssemblyError::OutOfOrder);
        }
        Assembly {
            period: part.period,
            digest: part.digest,
            totals: Vec::new(),
        }
        .take(part)
    }

    /// Where the next part must start.
    pub fn next_after(&self) -> Option<(TenantId, Metric)> {
        self.totals.last().map(|(t, m, _)| (*t, *m))
    }

    /// Where this assembly stands, for the next pull.
    pub fn resume(&self) -> Resume {
        Resume {
            period: self.period,
            digest: self.digest,
            after: self.next_after(),
        }
    }

    /// Adds the next part; the settlement once the last part is in and checks out.
    pub fn take(
        mut self,
        part: SettlementPart,
    ) -> Result<Result<Settlement, Assembly>, AssemblyError> {
        if part.totals.len() > SettlementPart::ENTRIES_MAX
            || self.totals.len() + part.totals.len() > Self::TOTALS_MAX
        {
            return Err(AssemblyError::TooLarge);
        }
        if part.period != self.period
            || part.digest != self.digest
            || part.after != self.next_after()
        {
            return Err(AssemblyError::OutOfOrder);
        }
        self.totals.extend(part.totals);
        if !part.last {
            return Ok(Err(self));
        }
        let settlement = Settlement {
            period: self.period,
            through: part.through,
            totals: self.totals,
        };
        settlement.validate().map_err(AssemblyError::Invalid)?;
        if settlement.digest() != self.digest {
            return Err(AssemblyError::Digest);
        }
        Ok(Ok(settlement))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settlement(tenants: u64) -> Settlement {
        Settlement {
            period: Period::month(2026, 8).unwrap(),
            through: vec![(NodeId(1), 40), (NodeId(2), 7)],
            totals: (1..=tenants)
                .flat_map(|t| {
                    [
                        (TenantId(t), Metric::Requests, t),
                        (TenantId(t), Metric::BytesOut, 10 * t),
                    ]
                })
                .collect(),
        }
    }

    #[test]
    fn parts_assemble_into_the_same_settlement_and_a_wrong_part_is_refused() {
        let whole = settlement(50);
        let back = Settlement::decode(&whole.encode()).unwrap();
        assert_eq!(back, whole);
        assert_eq!(whole.total(TenantId(7), Metric::BytesOut), 70);
        assert_eq!(whole.total(TenantId(7), Metric::CpuMicros), 0);
        let mut part = whole.part(None, 16);
        let mut assembly = match Assembly::start(part.clone()).unwrap() {
            Err(assembly) => assembly,
            Ok(_) => panic!("100 totals in parts of 16 are not one part"),
        };
        // A replayed part is out of order.
        assert_eq!(
            assembly.clone().take(part.clone()),
            Err(AssemblyError::OutOfOrder)
        );
        let done = loop {
            part = whole.part(part.next_after(), 16);
            match assembly.take(part.clone()).unwrap() {
                Ok(done) => break done,
                Err(next) => assembly = next,
            }
        };
        assert_eq!(done, whole);
        assert_eq!(done.digest(), whole.digest());
        // A part whose totals were changed fails the digest.
        let mut forged = whole.part(None, 1_000);
        forged.totals[3].2 += 1;
        assert_eq!(Assembly::start(forged), Err(AssemblyError::Digest));
    }
}
