//! `tessera-tests`: the multi-process side of Tessera's tests.
//!
//! Real `tessera` processes (the shim binary `tessera-node`, which is `tessera_edge::cli`)
//! started, stopped, killed with SIGKILL, paused with SIGSTOP and restarted, with faults
//! injected between them, a seeded nemesis scheduling those faults, and a checker reading
//! the recorded history afterwards. The per-crate tests stay in their crates; what needs
//! several processes, or the whole workspace (the tidy rules), lives here.
//!
//! This crate is test code: it may panic on setup failures, and it is never a dependency
//! of a production crate.

pub mod calendar;
pub mod checker;
pub mod history;
pub mod nemesis;

pub mod client;
pub mod cluster;
pub mod link;
pub mod netns;
