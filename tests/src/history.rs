//! The recorded history of a fault run: every client operation with who sent it, to which
//! node, when it was invoked and when it completed, and what came back; plus the events the
//! nemesis applied (faults, kills, restarts, wipes), on the same clock.
//!
//! The checker ([`crate::checker`]) reads it after the fact, as Jepsen does: the suite
//! never asserts while the run goes on, so a fault can never hide behind an early panic,
//! and a failing run can write the whole history (JSON lines) for a human to replay.
//!
//! **Outcomes** follow what the node's code guarantees about billing (`edge/src/http/meter.rs`,
//! `edge/src/http/routes.rs`): an answer in 2xx/3xx was billed ([`Outcome::Ok`]); a 4xx, and a
//! 503 the node gives *before* any billing (`overloaded`, `deadline_exceeded`,
//! `shutting_down`, `store_failed`), billed nothing ([`Outcome::Fail`]); everything else —
//! a timeout, a reset connection, `store_unavailable` (the usage is in the ledger and the
//! commit wait gave up), any other 5xx — may or may not have been billed
//! ([`Outcome::Unknown`]). An unknown outcome widens the checker's bounds instead of being
//! ignored.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tessera_edge::http::error::ErrorCode;

use serde::{Deserialize, Serialize};

use crate::nemesis::Fault;

/// Which of the cluster's nodes (its index in the harness, stable across restarts).
pub type NodeIndex = usize;

/// What a client asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// `POST /v1/resize` billed to `tenant` with API key `key`: one request of usage when
    /// acknowledged.
    Resize { tenant: String, key: String },
    /// `GET /admin/v1/usage` for `tenant` on one node: the node's merged request total for
    /// the month in [`Entry::value`]. Reads of one polling round share `round`, so the
    /// checker can tell when every node read the same total at once.
    ReadUsage { tenant: String, round: Option<u64> },
    /// `DELETE /admin/v1/tenants/{tenant}/keys/{key}`.
    RevokeKey { tenant: String, key: String },
    /// A requests-per-month hard quota set for `tenant`.
    SetQuota { tenant: String, requests: u64 },
}

/// What came back, as far as billing is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: the node says it was done (and, for a resize, billed and durable).
    Ok,
    /// A definite refusal: nothing was done, nothing billed.
    Fail,
    /// Nobody knows: the operation may or may not have taken effect.
    Unknown,
}

/// The 503 codes the node answers before any usage is written (`edge/src/http/routes.rs`:
/// `gate`, `shed`, `deadline_exceeded`; `edge/src/http/body.rs`). `store_unavailable` is not
/// one of them: it is answered after the usage is in the ledger.
const UNBILLED_503_CODES: [&str; 4] = [
    ErrorCode::Overloaded.as_str(),
    ErrorCode::DeadlineExceeded.as_str(),
    ErrorCode::ShuttingDown.as_str(),
    ErrorCode::StoreFailed.as_str(),
];

/// The outcome an HTTP answer stands for (see the module doc); `code` is the stable
/// `error.code` of an error body, if there was one.
pub fn classify(status: u16, code: Option<&str>) -> Outcome {
    match status {
        200..=399 => Outcome::Ok,
        400..=499 => Outcome::Fail,
        503 if code.is_some_and(|c| UNBILLED_503_CODES.contains(&c)) => Outcome::Fail,
        _ => Outcome::Unknown,
    }
}

/// One completed client operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Which client (task) sent it; one client has one operation in flight at a time.
    pub client: u32,
    pub node: NodeIndex,
    #[serde(flatten)]
    pub op: Op,
    /// Milliseconds since the run started, before the request was sent.
    pub invoked_ms: u64,
    /// Milliseconds since the run started, when the answer (or the error) came back.
    pub completed_ms: u64,
    pub outcome: Outcome,
    /// The HTTP status, when an answer came back at all.
    pub status: Option<u16>,
    /// The error body's `error.code`, or the transport error's kind (`timeout`,
    /// `connect`, ...).
    pub code: Option<String>,
    /// The value a read returned.
    pub value: Option<u64>,
}

/// Something the nemesis (or the suite) did to the cluster, when it was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub fault: Fault,
}

/// One line of the JSON-lines file: an operation or an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Line {
    Op(Entry),
    Event(Event),
}

/// A whole run's history, in completion order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub entries: Vec<Entry>,
    pub events: Vec<Event>,
}

impl History {
    /// Writes the history as JSON lines (events, then operations), one object a line.
    pub fn write_jsonl(&self, path: &Path) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        let lines = self
            .events
            .iter()
            .cloned()
            .map(Line::Event)
            .chain(self.entries.iter().cloned().map(Line::Op));
        for line in lines {
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads a history written by [`History::write_jsonl`].
    pub fn read_jsonl(text: &str) -> serde_json::Result<Self> {
        let mut history = Self::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str(line)? {
                Line::Op(entry) => history.entries.push(entry),
                Line::Event(event) => history.events.push(event),
            }
        }
        Ok(history)
    }
}

/// The shared recorder the clients and the nemesis write to while the run goes on:
/// cloneable, one clock (the run's start) for everyone.
#[derive(Clone, Debug)]
pub struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// Starts the run's clock now.
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            history: Arc::default(),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn record(&self, entry: Entry) {
        self.lock().entries.push(entry);
    }

    /// Records `fault` as applied at `at_ms` (from [`Recorder::now_ms`]: before a fault is
    /// applied, after an undo is done, so the healthy windows the checker derives are never
    /// longer than the real ones).
    pub fn event_at(&self, at_ms: u64, fault: Fault) {
        self.lock().events.push(Event { at_ms, fault });
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> History {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        // A client task that panicked holding the lock left a consistent Vec behind.
        self.history.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_what_was_billed() {
        assert_eq!(classify(200, None), Outcome::Ok);
        assert_eq!(classify(304, None), Outcome::Ok);
        assert_eq!(classify(429, Some("quota_exhausted")), Outcome::Fail);
        assert_eq!(classify(401, Some("key_revoked")), Outcome::Fail);
        assert_eq!(classify(503, Some("overloaded")), Outcome::Fail);
        assert_eq!(classify(503, Some("store_unavailable")), Outcome::Unknown);
        assert_eq!(classify(503, None), Outcome::Unknown);
        assert_eq!(classify(500, Some("metering_failed")), Outcome::Unknown);
    }

    #[test]
    fn a_history_survives_json_lines() {
        let history = History {
            entries: vec![Entry {
                client: 3,
                node: 1,
                op: Op::Resize {
                    tenant: "t".into(),
                    key: "k".into(),
                },
                invoked_ms: 5,
                completed_ms: 9,
                outcome: Outcome::Unknown,
                status: None,
                code: Some("timeout".into()),
                value: None,
            }],
            events: vec![Event {
                at_ms: 7,
                fault: Fault::Kill { node: 2 },
            }],
        };
        let dir = std::env::temp_dir().join(format!("tessera-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        history.write_jsonl(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(History::read_jsonl(&text).unwrap(), history);
    }
}
