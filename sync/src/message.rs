//! The messages nodes exchange, their binary encoding and their validation.
//!
//! One enum for every kind, so a transport moves opaque bytes and the core alone decides
//! what they mean. Every message is validated before it touches state: size caps on every
//! collection, each delta's own format rules, and every bounded counter's invariant (a
//! counter that claims a node spent more than it held is refused, so a hostile or corrupt
//! peer cannot make rights appear). The encoding is a version byte plus postcard; the
//! libp2p adapter may use another serde format, and then calls [`Message::validate`].

use serde::{Deserialize, Serialize};
use thiserror::Error;

use tessera_crdt::codec::DecodeError;
use tessera_crdt::directory::{DirectoryDelta, DirectoryError, SyncMessage};
use tessera_crdt::ledger::{Delta, InvalidDelta};
use tessera_crdt::settlement::Resume;
use tessera_crdt::{BoundedCounter, CounterKey, Period, SettlementPart, VersionVector};

use crate::escrow_digest::BUCKETS;
use crate::membership::{MemberEntry, MembersError, Membership};

/// Counters one message may carry.
pub const COUNTERS_MAX: usize = 4096;

/// The wire format version, first byte of every encoded message. 3: bounded counters carry
/// refund cells (a node of version 2 would misread them, so it refuses them whole). 4:
/// member tables (a node of version 3 would count every exchange as garbage and drop the
/// connection). 5: ledger pulls list the puller's settled periods, and settlements travel
/// in parts (billing-period compaction). 6: ledger pulls carry the puller's forgotten
/// settlements' watermark, and directory placeholders stand for runs of ops.
pub const WIRE_VERSION: u8 = 6;

/// Settled periods a pull may list.
pub const SETTLED_MAX: usize = 4096;

/// Everything a node sends another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// New ledger increments, the origin's or relayed (see "Dissemination" in
    /// [`crate::node`]). `first_change_ms` is the origin's clock when the oldest increment
    /// in the batch was made: the receiver's clock minus it is the replication lag (clock
    /// skew included). `relay`: the receiver passes what is new to it on.
    LedgerPush {
        delta: Delta,
        first_change_ms: u64,
        relay: bool,
    },
    /// "This is my ledger digest; send what I lack." With the periods the puller has
    /// settled, the end of those it has forgotten (every period ending at or before
    /// `forgotten_before_ms`: it takes none of them back), and where it stands in a
    /// settlement it is receiving from this peer (its period, digest and last total), if
    /// any: a provider that compacted a period the puller may lack slots of sends the
    /// settlement, part by part, before any chunk.
    LedgerPull {
        digest: VersionVector,
        settled: Vec<Period>,
        forgotten_before_ms: u64,
        resume: Option<Resume>,
    },
    /// One part of a settlement the puller lacks (see `tessera_crdt::settlement`).
    SettlementPart(SettlementPart),
    /// Part of what the puller lacked; `more` when another pull would bring more.
    LedgerChunk { delta: Delta, more: bool },
    /// New directory ops, the origin's or relayed, as [`Message::LedgerPush`].
    DirectoryPush { delta: DirectoryDelta, relay: bool },
    /// One step of the directory's two-party sync.
    Directory(SyncMessage),
    /// Bounded counters the sender changed (whole counters: see `tessera_crdt::escrow`).
    EscrowPush(Vec<(CounterKey, BoundedCounter)>),
    /// The sender's escrow digest root.
    EscrowDigest { root: u64 },
    /// The sender's escrow bucket hashes (after roots differed).
    EscrowBuckets { buckets: Vec<u64> },
    /// The sender's counters in some buckets, and the buckets it wants the receiver's
    /// counters of.
    EscrowCounters {
        counters: Vec<(CounterKey, BoundedCounter)>,
        want: Vec<u16>,
    },
    /// "I am low on rights for `key`; give me up to `want`."
    RightsRequest {
        request_id: u64,
        key: CounterKey,
        want: u64,
    },
    /// The donor's counter after giving `given` (possibly 0) to the requester.
    RightsReply {
        request_id: u64,
        key: CounterKey,
        given: u64,
        counter: BoundedCounter,
    },
    /// The sender is leaving the cluster (its unused rights were handed over first).
    Leaving,
    /// Member table entries (see [`crate::membership`]): the sender's whole table in an
    /// anti-entropy exchange, or, with `answer`, the entries it holds newer than the ones
    /// it was sent.
    Members {
        entries: Vec<MemberEntry>,
        answer: bool,
    },
}

/// Why a message was refused. Nothing was changed. Each carried value's own error is
/// kept as it came (`#[from]`), so a caller can tell a bad delta from a bad counter.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MessageError {
    #[error("message of {bytes} bytes exceeds the cap of {bytes_max}")]
    TooLarge { bytes: usize, bytes_max: usize },
    #[error("empty message")]
    Empty,
    #[error("unknown wire version {0}")]
    Version(u8),
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("{0}")]
    Ledger(#[from] InvalidDelta),
    #[error("invalid directory ops: {0}")]
    Directory(#[from] DirectoryError),
    #[error("invalid escrow counter: {0}")]
    Counter(#[from] DecodeError),
    #[error("invalid member list: {0}")]
    Members(#[from] MembersError),
    #[error("{count} {what}, more than the cap of {cap}")]
    TooMany {
        what: &'static str,
        count: usize,
        cap: usize,
    },
    #[error("{count} escrow buckets, expected {BUCKETS}")]
    Buckets { count: usize },
    #[error("an escrow bucket outside 0..{BUCKETS}")]
    BucketOutOfRange,
}

impl Message {
    /// A short name per kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::LedgerPush { .. } => "ledger_push",
            Message::LedgerPull { .. } => "ledger_pull",
            Message::SettlementPart(_) => "settlement_part",
            Message::LedgerChunk { .. } => "ledger_chunk",
            Message::DirectoryPush { .. } => "directory_push",
            Message::Directory(_) => "directory_sync",
            Message::EscrowPush(_) => "escrow_push",
            Message::EscrowDigest { .. } => "escrow_digest",
            Message::EscrowBuckets { .. } => "escrow_buckets",
            Message::EscrowCounters { .. } => "escrow_counters",
            Message::RightsRequest { .. } => "rights_request",
            Message::RightsReply { .. } => "rights_reply",
            Message::Leaving => "leaving",
            Message::Members { .. } => "members",
        }
    }

    /// Checks every bound and every carried value's own rules.
    pub fn validate(&self) -> Result<(), MessageError> {
        let too_many = |what, count: usize, cap| {
            if count > cap {
                Err(MessageError::TooMany { what, count, cap })
            } else {
                Ok(())
            }
        };
        let counters = |list: &[(CounterKey, BoundedCounter)]| -> Result<(), MessageError> {
            too_many("counters", list.len(), COUNTERS_MAX)?;
            list.iter()
                .try_for_each(|(_, counter)| Ok(counter.validate()?))
        };
        match self {
            Message::LedgerPush { delta, .. } | Message::LedgerChunk { delta, .. } => {
                Ok(delta.validate()?)
            }
            Message::DirectoryPush { delta, .. } => Ok(delta.validate()?),
            Message::Directory(SyncMessage::Ops { delta, .. }) => Ok(delta.validate()?),
            Message::EscrowPush(list) => counters(list),
            Message::EscrowCounters {
                counters: list,
                want,
            } => {
                too_many("wanted buckets", want.len(), BUCKETS)?;
                if want.iter().any(|b| usize::from(*b) >= BUCKETS) {
                    return Err(MessageError::BucketOutOfRange);
                }
                counters(list)
            }
            Message::EscrowBuckets { buckets } => {
                if buckets.len() != BUCKETS {
                    return Err(MessageError::Buckets {
                        count: buckets.len(),
                    });
                }
                Ok(())
            }
            Message::RightsReply { counter, .. } => Ok(counter.validate()?),
            Message::Members { entries, .. } => Ok(Membership::validate(entries)?),
            Message::LedgerPull { settled, .. } => {
                too_many("settled periods listed", settled.len(), SETTLED_MAX)
            }
            Message::SettlementPart(part) => {
                too_many(
                    "settlement totals",
                    part.totals.len(),
                    SettlementPart::ENTRIES_MAX,
                )?;
                too_many(
                    "settlement origins",
                    part.through.len(),
                    VersionVector::NODES_MAX,
                )
            }
            Message::Directory(SyncMessage::Digest(_))
            | Message::EscrowDigest { .. }
            | Message::RightsRequest { .. }
            | Message::Leaving => Ok(()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![WIRE_VERSION];
        // Postcard fails only on unsupported types; every field here is plain data.
        bytes.extend(postcard::to_allocvec(self).expect("postcard serialises every message"));
        bytes
    }

    /// Decodes and validates at most `bytes_max` bytes.
    pub fn decode(bytes: &[u8], bytes_max: usize) -> Result<Message, MessageError> {
        if bytes.len() > bytes_max {
            return Err(MessageError::TooLarge {
                bytes: bytes.len(),
                bytes_max,
            });
        }
        let [version, body @ ..] = bytes else {
            return Err(MessageError::Empty);
        };
        if *version != WIRE_VERSION {
            return Err(MessageError::Version(*version));
        }
        let message: Message = postcard::from_bytes(body)?;
        message.validate()?;
        Ok(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crdt::{Metric, NodeId, Period, TenantId};

    #[test]
    fn round_trip_and_refusals() {
        let key = CounterKey::new(
            TenantId(1),
            Period::month(2026, 11).unwrap(),
            Metric::Requests,
        );
        let mut counter = BoundedCounter::new();
        counter.grant(NodeId(1), 10).unwrap();
        counter.consume(NodeId(1), 3).unwrap();
        counter.refund(NodeId(1), 2).unwrap();
        let message = Message::RightsReply {
            request_id: 3,
            key,
            given: 2,
            counter,
        };
        let bytes = message.encode();
        assert_eq!(Message::decode(&bytes, 1 << 20).unwrap(), message);
        assert!(matches!(
            Message::decode(&bytes, 3),
            Err(MessageError::TooLarge { .. })
        ));
        assert!(matches!(
            Message::decode(&[9, 0], 64),
            Err(MessageError::Version(9))
        ));
        for cut in 0..bytes.len() {
            assert!(Message::decode(&bytes[..cut], 1 << 20).is_err());
        }
        let short = Message::EscrowBuckets {
            buckets: vec![0; 3],
        };
        assert!(matches!(
            Message::decode(&short.encode(), 1 << 20),
            Err(MessageError::Buckets { count: 3 })
        ));
    }
}
