//! `tessera-sync`: replication of the usage ledger, the tenant directory and the escrow
//! bounded counters between Tessera nodes.
//!
//! Its heart is the **protocol core**, sans-IO: [`node::Node`] is a state machine fed
//! `(now_ms, Input)` and read for `Output`s, with a seeded [`rng::Rng`] and no clock, no
//! sockets and no async runtime, so every behaviour is testable on a simulated network
//! (`sim`) and replayable from a seed. The transport (libp2p) drives it from outside.
//!
//! Parts:
//! - [`node`]: push, pull anti-entropy, directory sync, escrow transfers and grants,
//!   membership view;
//! - [`membership`]: the member table, heartbeat gossip, liveness and the bounded mesh;
//! - [`message`]: the wire messages, their encoding and validation;
//! - [`escrow_digest`]: bucket hashes that let idle replicas compare escrow state in 8 bytes;
//! - [`config`]: the tunables;
//! - [`rng`]: the seeded generator;
//! - `sim` (feature `sim`, off by default; this crate's tests and benches turn it on): the
//!   simulated network the protocol is tested and measured on — N cores, a virtual clock,
//!   loss, duplication, delay, partitions, crashes — as pure as the core;
//! - `net` (feature `net`, on by default): the libp2p transport that drives a node between
//!   processes — the only module with IO, a clock and tokio. The core compiles without it
//!   (`--no-default-features`), and `tests/tests/tidy.rs` checks that build's dependencies.

pub mod config;
pub mod escrow_digest;
pub mod membership;
pub mod message;
#[cfg(feature = "net")]
pub mod net;
pub mod node;
pub mod rng;
#[cfg(feature = "sim")]
pub mod sim;

pub use config::SyncConfig;
pub use message::{Message, MessageError};
pub use node::{
    Changes, Input, LagHistogram, Node, NodeState, Output, PeerView, Stats, LAG_BUCKETS_MS,
};
