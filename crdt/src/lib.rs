//! `tessera-crdt`: every replicated data type of Tessera, as pure state machines.
//!
//! Parts:
//! - [`ids`]: `NodeId`, `TenantId`, `Metric`, `CounterKey`, and `IdHasher` for tables keyed
//!   by them;
//! - [`period`]: billing periods (UTC month) and chart buckets (UTC hour) from a timestamp
//!   passed in;
//! - [`version`]: the version vector, the ledger's compact anti-entropy digest;
//! - [`ledger`]: the usage ledger, grow-only counters with delta-state replication, sealed
//!   per period by each writer;
//! - [`settlement`]: a compacted period's final totals, which replace its ledger slots;
//! - [`escrow`]: bounded counters (rights granted, transferred, consumed, retired) that
//!   guard hard quotas without coordination on the request path;
//! - [`directory`]: the tenant directory (tenants, API keys as hashes, signing secrets,
//!   origins, quotas, presets) as an op log with an audit trail and a key-prefix index;
//! - [`codec`]: the versioned, bounded binary envelope of every encoding.
//!
//! What this crate must never know about: IO, async runtimes, networks, storage engines,
//! clocks or randomness. Time (`at_ms`) and identity (`NodeId`) are passed in; the sync
//! layer moves the bytes, the store persists them. A test (`tests/tests/tidy.rs`) fails if the
//! dependency closure gains tokio, libp2p, redb, hyper, axum, mio, futures or reqwest.
//!
//! Every merge here is commutative, associative and idempotent, so at-least-once delivery
//! in any order is enough (property tests in `tests/`).

pub mod codec;
pub mod directory;
pub mod escrow;
pub mod ids;
pub mod ledger;
pub mod period;
pub mod settlement;
pub mod version;

pub use codec::DecodeError;
pub use directory::{
    Change, DeltaBudget, Directory, DirectoryDelta, DirectoryError, KeyId, KeyStanding, Scopes,
    SecretId,
};
pub use escrow::{BoundedCounter, EscrowBook, EscrowError};
pub use ids::{
    CounterKey, IdBuildHasher, IdHashMap, IdHashSet, IdHasher, Metric, NodeId, TenantId,
};
pub use ledger::{Delta, Ledger};
pub use period::{Period, PeriodKind};
pub use settlement::{Settlement, SettlementPart};
pub use version::VersionVector;
