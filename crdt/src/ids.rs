//! Identities and keys shared by every replicated type: who wrote (`NodeId`), for whom
//! (`TenantId`), what was measured (`Metric`) and the key of one counter (`CounterKey`).
//!
//! They are small `Copy` integers on purpose: a counter slot is keyed by them millions of
//! times over (100K tenants × 4 metrics × nodes), and the binary encoding writes them as
//! varints, so a digest or delta stays a few bytes per entry.

use std::fmt;

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
    fn ids_encode_as_varints() {
        // One byte for a small id: digests stay O(nodes) small.
        assert_eq!(postcard::to_allocvec(&NodeId(5)).unwrap(), [5]);
        assert_eq!(postcard::to_allocvec(&Metric::BytesOut).unwrap(), [3]);
    }
}
