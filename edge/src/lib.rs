//! `tessera-edge`: the Tessera edge node (the `tessera` binary and its library).
//!
//! Parts, in request order:
//! - [`server`]: accept loop, connection limits and timeouts, graceful shutdown;
//! - [`routes`]: HTTP handlers (`POST /v1/resize`, health, readiness, metrics);
//! - [`body`]: request bodies under size, time and memory bounds;
//! - [`params`]: query string and `Accept` → resize options;
//! - [`pool`]: the bounded pool of blocking resize workers, with admission control;
//! - [`etag`]: entity tags and conditional requests;
//! - [`error`]: the JSON error shape every refusal takes;
//! - [`metrics`]: Prometheus metrics;
//! - [`config`]: layered, validated configuration.
//!
//! This crate is the only one with a runtime, configuration loading and `main`; the image
//! work itself lives in `tessera-resize`, which knows nothing of HTTP or tokio.

pub mod body;
pub mod config;
pub mod error;
pub mod etag;
pub mod metrics;
pub mod params;
pub mod pool;
pub mod routes;
pub mod server;
