//! `tessera-edge`: the Tessera edge node (the `tessera` binary and its library).
//!
//! Parts, in request order:
//! - [`server`]: accept loop, timeouts, graceful shutdown; [`connections`]: caps per
//!   client and for the node, and the overflow lane that answers what is over them;
//! - [`routes`]: HTTP handlers (`POST /v1/resize`, health, readiness, metrics);
//! - [`body`]: request bodies under size, time and memory bounds;
//! - [`params`]: query string and `Accept` → resize options;
//! - [`pool`]: the bounded pool of blocking resize workers, with a fair queue between
//!   tenants and admission control; [`cost`]: its model of what a job costs;
//! - [`etag`]: entity tags and conditional requests;
//! - [`error`]: the JSON error shape every refusal takes;
//! - [`faults`]: injected store and clock faults for the fault harness (feature
//!   `fault-injection`; switches nothing without it);
//! - [`metrics`]: Prometheus metrics;
//! - [`config`]: layered, validated configuration;
//! - [`auth`]: API keys, operator tokens, the local key check;
//! - [`meter`]: quota admission (escrow) before work, metering (group commit) after;
//! - [`rate`]: the per-tenant token bucket;
//! - [`signed`]: signed URLs (`GET /v1/img/...`), [`fetch`]: their source, fetched
//!   with SSRF checks on the address connected to, and [`cache`]: their results;
//! - [`idempotency`]: answers kept for retries with the same `Idempotency-Key`;
//! - [`admin`]: the admin API (tenants, keys, quotas, usage with harvest, cluster);
//! - [`control`]: the control plane — the only code that sees the node's replicated
//!   state (the sync core's node) and its lock, through named operations — with its
//!   writer and transport, [`control::store`] (the redb file that makes it durable) and
//!   [`control::records`] (raw usage records, hourly files, their export);
//! - [`cli`]: the `tessera` command (serve, config, admin commands);
//! - [`client`]: the CLI's HTTP client for the admin API.
//!
//! This crate is the only one with a runtime, configuration loading and `main`; the image
//! work itself lives in `tessera-resize`, which knows nothing of HTTP or tokio.

pub mod admin;
pub mod auth;
pub mod body;
pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod connections;
pub mod control;
pub mod cost;
pub mod error;
pub mod etag;
pub mod faults;
pub mod fetch;
pub mod idempotency;
pub mod meter;
pub mod metrics;
pub mod params;
pub mod pool;
pub mod rate;
pub mod routes;
pub mod server;
pub mod signed;
