//! `tessera-edge`: the Tessera edge node (the `tessera` binary and its library).
//!
//! Four rooms, each saying what it is and what it may touch (docs/ARCHITECTURE.md has the
//! codemap and the rules, `tests/tests/tidy.rs` checks them):
//! - [`http`]: the only code that knows hyper, axum and JSON — the accept loop and
//!   connection caps, the routes (resize, signed URLs, the admin API, health, metrics),
//!   request bodies, parameters, entity tags, the one error shape, quota admission and
//!   metering as the handlers use them. It reaches the replicated state only through
//!   [`control::ControlPlane`]'s named operations.
//! - [`control`]: the control plane — the only code that sees the protocol core
//!   (the sync crate's `Node`) and its lock — with its writer, transport, store, usage
//!   records and credential checks ([`control::auth`]).
//! - [`work`]: what a request spends and the bounds on it, knowing neither HTTP nor the
//!   protocol core: the pool of blocking resize workers and its cost model, the source
//!   fetch, the result and idempotency caches, the per-tenant rate limit.
//! - [`cli`]: the `tessera` command (serve, config, admin commands) and its HTTP client.
//!
//! Beside them: [`config`] (layered, validated configuration) and [`faults`] (injected
//! store and clock faults for the fault harness; feature `fault-injection`, switching
//! nothing without it).
//!
//! This crate is the only one with a runtime, configuration loading and `main`; the image
//! work itself lives in `tessera-resize`, which knows nothing of HTTP or tokio.

pub mod cli;
pub mod config;
pub mod control;
pub mod faults;
pub mod http;
pub mod work;
