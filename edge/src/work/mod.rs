//! What a request spends, and the bounds on it: the pieces that do or avoid work,
//! knowing neither HTTP nor the protocol core.
//!
//! - [`pool`]: the bounded pool of blocking resize workers, with a fair queue between
//!   tenants and admission control; [`cost`]: its model of what a job costs;
//! - [`fetch`]: a signed URL's source, fetched with SSRF checks on the address connected
//!   to, under time, byte and redirect bounds;
//! - [`cache`]: signed-URL results (memory, and optionally disk);
//! - [`idempotency`]: answers kept for retries with the same `Idempotency-Key`;
//! - [`marks`]: tenants' watermarks, decoded once per version;
//! - [`rate`]: the per-tenant token bucket.
//!
//! Why apart from [`crate::http`]: each is a bounded resource with its own invariant
//! (bytes, entries, slots, tokens) that tests can drive without a server.

pub mod cache;
pub mod cost;
pub mod fetch;
pub mod idempotency;
pub mod marks;
pub mod pool;
pub mod rate;
