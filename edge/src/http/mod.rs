//! The node's HTTP side: the only code that knows hyper, axum and JSON.
//!
//! In request order:
//! - [`server`]: accept loop, timeouts, graceful shutdown; [`connections`]: caps per
//!   client and for the node, and the overflow lane that answers what is over them;
//!   [`tls`]: the listener's certificate and key, and the bounded TLS handshake;
//! - [`routes`]: the handlers of `POST /v1/resize`, health, readiness and metrics, and
//!   the router; [`signed`]: signed URLs (`GET /v1/img/...`); [`imgproxy`]: imgproxy's
//!   URLs (`GET /ip/...`) onto the same path; [`info`]: what an image is (`/v1/info`);
//!   [`admin`]: the admin API
//!   (tenants, keys, quotas, usage with harvest, cluster);
//! - [`body`]: request bodies under size, time and memory bounds;
//! - [`params`]: query string and `Accept` → resize options;
//! - [`etag`]: entity tags and conditional requests;
//! - [`meter`]: quota admission before work and metering after it, as handlers await
//!   them (the state they touch is the control plane's);
//! - [`error`]: the JSON error shape every refusal takes;
//! - [`metrics`]: the Prometheus registry and its families; [`access`]: the request log,
//!   a line per request.
//!
//! Why one room for all of it: what a client or an operator sees — status codes, error
//! codes, headers, JSON shapes — is decided here and nowhere else, so the OpenAPI document
//! (`docs/openapi.json`) is checked against one place.

pub mod access;
pub mod admin;
pub mod body;
pub mod connections;
pub mod error;
pub mod etag;
pub mod imgproxy;
pub mod info;
pub mod meter;
pub mod metrics;
pub mod params;
pub mod routes;
pub mod server;
pub mod signed;
pub mod tls;
