//! The checker: reads a recorded [`History`] after the run and lists every guarantee it
//! breaks. The guarantees are Tessera's billing and auth contract under faults:
//!
//! - **No acknowledged usage lost**: after the final heal, each node's last read of a
//!   tenant's total is at least the tenant's acknowledged requests. Requests acknowledged
//!   by a node whose disk was later wiped ([`Fault::Wipe`]) are not counted in that lower
//!   bound (a wiped disk loses what was not yet replicated; the node's durability contract
//!   is its own disk) and are reported as `at_risk_by_wipe`.
//! - **No double counting**: no read, at any time on any node, exceeds the tenant's
//!   acknowledged plus unknown-outcome requests invoked before the read completed (an
//!   unknown outcome may have been billed once, never twice).
//! - **Hard quota never overrun**: for a tenant with a requests quota, acknowledged
//!   requests ≤ quota, and no read ever shows more billed than the quota (rights are spent
//!   before work, so even unknown outcomes stay inside it). This holds *given the quota was
//!   set, acknowledged, and known everywhere before the first fault*: the checker verifies
//!   the acknowledgment came before the first fault event; the suite makes sure every node
//!   knows it (reads it back from each) before the nemesis starts.
//! - **Quota liveness**: the fraction of the quota acknowledged ([`Report::quota_usable`]).
//!   Asserted (≥ 99%) only by the healthy-network scenario ([`Report::liveness`]); under
//!   faults it is reported, since a cut-off node may rightly refuse.
//! - **Convergence after the final heal**: the time from the final [`Fault::Heal`] to the
//!   first polling round in which every node read, for every tenant, the same total, and
//!   that total covers every acknowledged request. The suite stops billing clients at the
//!   final heal, so the totals can settle. Never converging is a violation; the time is
//!   reported (the < 2 s goal is the suite's assertion to make).
//! - **Monotonic reads per node**, across kill -9 and restarts: a read invoked after another
//!   read on the same node completed never returns less. A wipe starts the node over.
//! - **Revocation applied everywhere within a bound**: after a revoke acknowledged at `t`,
//!   a request with that key invoked after the first moment the cluster was healthy for
//!   `revocation_bound_ms` past `max(t, heal)` and acknowledged, on any node, is a violation
//!   (a node wiped after `t` gets the same allowance again from its return); and a node
//!   that refused the key as revoked must never accept it again, even after kill -9 and a
//!   restart (only a wipe, a new identity, starts it over).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{Entry, History, NodeIndex, Op, Outcome};
use crate::nemesis::{ClusterState, Fault};

/// What the checker needs to know beyond the history.
#[derive(Clone, Debug)]
pub struct Spec {
    pub nodes: usize,
    /// The bound within which a revocation must be enforced everywhere once the cluster
    /// is healthy.
    pub revocation_bound_ms: u64,
}

/// The error code of a refusal because the key was revoked (`edge/src/control/auth.rs`).
pub const KEY_REVOKED: &str = tessera_edge::http::error::ErrorCode::KeyRevoked.as_str();

/// A broken guarantee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// A node's last read after the final heal is below the acknowledged requests.
    Lost {
        tenant: String,
        node: NodeIndex,
        read: u64,
        acknowledged: u64,
    },
    /// A read above acknowledged + unknown-outcome requests.
    DoubleCounted {
        tenant: String,
        node: NodeIndex,
        at_ms: u64,
        read: u64,
        bound: u64,
    },
    /// More acknowledged (or billed, as read) than the quota.
    QuotaOverrun {
        tenant: String,
        quota: u64,
        acknowledged: u64,
        read_max: u64,
    },
    /// The quota was not acknowledged before the first fault: the quota guarantee was not
    /// set up, so it could not be checked.
    QuotaNotSetBeforeFaults { tenant: String },
    /// The totals never agreed on every node after the final heal.
    NotConverged,
    /// A node read less than it had read before.
    NonMonotonic {
        tenant: String,
        node: NodeIndex,
        earlier: u64,
        later: u64,
        at_ms: u64,
    },
    /// A revoked key accepted after the bound.
    RevokedAccepted {
        key: String,
        node: NodeIndex,
        invoked_ms: u64,
        deadline_ms: u64,
    },
    /// A node that refused a key as revoked accepted it again.
    RevocationForgotten {
        key: String,
        node: NodeIndex,
        refused_ms: u64,
        accepted_invoked_ms: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{self:?}"),
        }
    }
}

/// What the checker found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Resize requests by outcome.
    pub ok: usize,
    pub fail: usize,
    pub unknown: usize,
    /// Acknowledged requests not counted in the lost-usage bound because their node was
    /// wiped afterwards.
    pub at_risk_by_wipe: usize,
    /// Acknowledged requests missing from the lowest final read, summed over tenants: the
    /// usage a wipe actually lost (what exceeds `at_risk_by_wipe` is a [`Violation::Lost`]).
    pub acknowledged_missing: u64,
    /// Milliseconds from the final heal to the first round of equal, complete totals.
    pub convergence_ms: Option<u64>,
    /// The same, from the later of the final heal and the completion of the last request
    /// that billed or may have (a request admitted before the heal, answered after it, moves
    /// the point where totals can agree): the replication's own share of `convergence_ms`.
    pub settled_ms: Option<u64>,
    /// Per quota'd tenant, acknowledged requests over the quota.
    pub quota_usable: BTreeMap<String, f64>,
    pub violations: Vec<Violation>,
}

impl Report {
    /// The quota-liveness check, for healthy-network runs only: every quota'd tenant got
    /// at least `fraction_min` of its quota acknowledged.
    pub fn liveness(&self, fraction_min: f64) -> Result<(), String> {
        let short: Vec<String> = self
            .quota_usable
            .iter()
            .filter(|(_, &used)| used < fraction_min)
            .map(|(tenant, used)| format!("{tenant}: {:.2}% usable", used * 100.0))
            .collect();
        if short.is_empty() {
            Ok(())
        } else {
            Err(short.join(", "))
        }
    }
}

/// Intervals `[from, to)` in which every node ran and no link was cut or degraded, from
/// the events the nemesis recorded; the last one is open (`u64::MAX`).
pub fn healthy_windows(history: &History, nodes: usize) -> Vec<(u64, u64)> {
    let mut state = ClusterState::new(nodes);
    let mut windows = Vec::new();
    let mut open = Some(0);
    for event in &history.events {
        state.apply(&event.fault);
        match (open, state.is_healthy()) {
            (Some(from), false) => {
                windows.push((from, event.at_ms));
                open = None;
            }
            (None, true) => open = Some(event.at_ms),
            _ => {}
        }
    }
    if let Some(from) = open {
        windows.push((from, u64::MAX));
    }
    windows
}

/// The first moment at or after `t` by which the cluster has been healthy for `bound_ms`
/// without a break.
fn deadline_after(windows: &[(u64, u64)], t: u64, bound_ms: u64) -> Option<u64> {
    windows.iter().find_map(|&(from, to)| {
        let start = from.max(t);
        let deadline = start.checked_add(bound_ms)?;
        (deadline <= to).then_some(deadline)
    })
}

fn resize_of(entry: &Entry) -> Option<(&str, &str)> {
    match &entry.op {
        Op::Resize { tenant, key } => Some((tenant, key)),
        _ => None,
    }
}

/// What every check reads from a history, computed once.
struct Facts<'a> {
    /// `(node, at_ms)` of every wipe.
    wipes: Vec<(NodeIndex, u64)>,
    final_heal_ms: u64,
    /// Successful reads and the tenant read.
    reads: Vec<(&'a Entry, &'a str)>,
    /// Every tenant billed by a resize.
    tenants: BTreeSet<&'a str>,
    /// Acknowledged resizes per tenant.
    acknowledged: BTreeMap<&'a str, u64>,
    /// Acknowledged resizes per tenant whose node was not wiped afterwards: what a final
    /// read must reach.
    lower: BTreeMap<&'a str, u64>,
    at_risk_by_wipe: usize,
    /// Completion of the last resize that billed or may have (ok or unknown).
    last_write_ms: u64,
}

impl<'a> Facts<'a> {
    fn of(history: &'a History) -> Self {
        let entries = &history.entries;
        let wipes: Vec<(NodeIndex, u64)> = history
            .events
            .iter()
            .filter_map(|e| match e.fault {
                Fault::Wipe { node } => Some((node, e.at_ms)),
                _ => None,
            })
            .collect();
        let final_heal_ms = history
            .events
            .iter()
            .rev()
            .find(|e| e.fault == Fault::Heal)
            .map_or(0, |e| e.at_ms);
        let reads = entries
            .iter()
            .filter(|e| e.outcome == Outcome::Ok && e.value.is_some())
            .filter_map(|e| match &e.op {
                Op::ReadUsage { tenant, .. } => Some((e, tenant.as_str())),
                _ => None,
            })
            .collect();
        let mut facts = Self {
            wipes,
            final_heal_ms,
            reads,
            tenants: entries
                .iter()
                .filter_map(resize_of)
                .map(|(t, _)| t)
                .collect(),
            acknowledged: BTreeMap::new(),
            lower: BTreeMap::new(),
            at_risk_by_wipe: 0,
            last_write_ms: entries
                .iter()
                .filter(|e| e.outcome != Outcome::Fail && resize_of(e).is_some())
                .map(|e| e.completed_ms)
                .max()
                .unwrap_or(0),
        };
        for e in entries.iter().filter(|e| e.outcome == Outcome::Ok) {
            if let Some((tenant, _)) = resize_of(e) {
                *facts.acknowledged.entry(tenant).or_default() += 1;
                if facts.wiped_after(e.node, e.invoked_ms) {
                    facts.at_risk_by_wipe += 1;
                } else {
                    *facts.lower.entry(tenant).or_default() += 1;
                }
            }
        }
        facts
    }

    fn wiped_after(&self, node: NodeIndex, t: u64) -> bool {
        self.wipes.iter().any(|&(n, at)| n == node && at >= t)
    }

    fn lower(&self, tenant: &str) -> u64 {
        self.lower.get(tenant).copied().unwrap_or(0)
    }

    /// When the first polling round after the final heal completed in which each of the
    /// `nodes` nodes read, for every tenant, the same total, covering [`Facts::lower`].
    fn converged_at(&self, nodes: usize) -> Option<u64> {
        let mut rounds: BTreeMap<u64, Vec<(&Entry, &str)>> = BTreeMap::new();
        for &(e, tenant) in &self.reads {
            if let Op::ReadUsage {
                round: Some(round), ..
            } = e.op
            {
                if e.invoked_ms >= self.final_heal_ms {
                    rounds.entry(round).or_default().push((e, tenant));
                }
            }
        }
        rounds
            .values()
            .filter(|round| {
                self.tenants.iter().all(|&tenant| {
                    let values: Vec<(NodeIndex, u64)> = round
                        .iter()
                        .filter(|(_, t)| *t == tenant)
                        .map(|(e, _)| (e.node, e.value.unwrap_or(0)))
                        .collect();
                    let readers: BTreeSet<NodeIndex> = values.iter().map(|&(n, _)| n).collect();
                    let distinct: BTreeSet<u64> = values.iter().map(|&(_, v)| v).collect();
                    readers.len() == nodes
                        && distinct.len() == 1
                        && distinct.iter().all(|&v| v >= self.lower(tenant))
                })
            })
            .map(|round| round.iter().map(|(e, _)| e.completed_ms).max().unwrap_or(0))
            .min()
    }
}

/// Milliseconds from the final heal to convergence (see the module doc), if the history
/// shows it yet: cheap enough for a suite to poll while the run goes on.
pub fn convergence_ms(history: &History, nodes: usize) -> Option<u64> {
    let facts = Facts::of(history);
    let at = facts.converged_at(nodes)?;
    Some(at.saturating_sub(facts.final_heal_ms))
}

/// Runs every check over `history`.
pub fn check(history: &History, spec: &Spec) -> Report {
    let entries = &history.entries;
    let facts = Facts::of(history);
    let mut report = Report {
        at_risk_by_wipe: facts.at_risk_by_wipe,
        ..Report::default()
    };
    for e in entries.iter().filter(|e| resize_of(e).is_some()) {
        match e.outcome {
            Outcome::Ok => report.ok += 1,
            Outcome::Fail => report.fail += 1,
            Outcome::Unknown => report.unknown += 1,
        }
    }
    let Facts {
        wipes,
        final_heal_ms,
        reads,
        tenants,
        acknowledged,
        ..
    } = &facts;
    let final_heal_ms = *final_heal_ms;
    let first_fault_ms = history.events.first().map_or(u64::MAX, |e| e.at_ms);

    // Lost: each node's last read of each tenant after the final heal.
    let mut missing: BTreeMap<&str, u64> = tenants.iter().map(|&t| (t, 0)).collect();
    for node in 0..spec.nodes {
        for &tenant in tenants {
            let last = reads
                .iter()
                .filter(|(e, t)| *t == tenant && e.node == node && e.invoked_ms >= final_heal_ms)
                .max_by_key(|(e, _)| e.completed_ms);
            let want = facts.lower(tenant);
            if let Some((e, _)) = last {
                let read = e.value.unwrap_or(0);
                let acked = acknowledged.get(tenant).copied().unwrap_or(0);
                missing.insert(tenant, missing[tenant].max(acked.saturating_sub(read)));
                if read < want {
                    report.violations.push(Violation::Lost {
                        tenant: tenant.to_owned(),
                        node,
                        read,
                        acknowledged: want,
                    });
                }
            }
        }
    }

    report.acknowledged_missing = missing.values().sum();

    // Double counting: every read against what may have been billed before it completed.
    for (e, tenant) in reads {
        let bound = entries
            .iter()
            .filter(|r| r.outcome != Outcome::Fail && r.invoked_ms < e.completed_ms)
            .filter(|r| resize_of(r).is_some_and(|(t, _)| t == *tenant))
            .count() as u64;
        let read = e.value.unwrap_or(0);
        if read > bound {
            report.violations.push(Violation::DoubleCounted {
                tenant: (*tenant).to_owned(),
                node: e.node,
                at_ms: e.completed_ms,
                read,
                bound,
            });
        }
    }

    // Quotas: the last acknowledged setting of each tenant.
    let mut quotas: BTreeMap<&str, (u64, &Entry)> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.outcome == Outcome::Ok) {
        if let Op::SetQuota { tenant, requests } = &e.op {
            quotas.insert(tenant, (*requests, e));
        }
    }
    for (tenant, (quota, set)) in quotas {
        if set.completed_ms > first_fault_ms {
            report.violations.push(Violation::QuotaNotSetBeforeFaults {
                tenant: tenant.to_owned(),
            });
            continue;
        }
        let acked = acknowledged.get(tenant).copied().unwrap_or(0);
        let read_max = reads
            .iter()
            .filter(|(_, t)| *t == tenant)
            .filter_map(|(e, _)| e.value)
            .max()
            .unwrap_or(0);
        if acked > quota || read_max > quota {
            report.violations.push(Violation::QuotaOverrun {
                tenant: tenant.to_owned(),
                quota,
                acknowledged: acked,
                read_max,
            });
        }
        let usable = if quota == 0 {
            1.0
        } else {
            acked as f64 / quota as f64
        };
        report.quota_usable.insert(tenant.to_owned(), usable);
    }

    // Convergence: the first round after the final heal in which every node read every
    // tenant at the same total, covering every acknowledged request.
    match facts.converged_at(spec.nodes) {
        Some(at) => {
            report.convergence_ms = Some(at.saturating_sub(final_heal_ms));
            report.settled_ms = Some(at.saturating_sub(final_heal_ms.max(facts.last_write_ms)));
        }
        None => report.violations.push(Violation::NotConverged),
    }

    // Monotonic reads per node: a read invoked after another completed on the same node
    // (and no wipe of the node between them) reads at least as much.
    for (later, tenant) in reads {
        let earlier = reads
            .iter()
            .filter(|(e, t)| {
                t == tenant
                    && e.node == later.node
                    && e.completed_ms < later.invoked_ms
                    && !wipes.iter().any(|&(n, at)| {
                        n == later.node && at >= e.completed_ms && at <= later.invoked_ms
                    })
            })
            .filter_map(|(e, _)| e.value)
            .max();
        if let (Some(earlier), Some(value)) = (earlier, later.value) {
            if value < earlier {
                report.violations.push(Violation::NonMonotonic {
                    tenant: (*tenant).to_owned(),
                    node: later.node,
                    earlier,
                    later: value,
                    at_ms: later.completed_ms,
                });
            }
        }
    }

    check_revocations(history, spec, wipes, &mut report);
    report
}

fn check_revocations(
    history: &History,
    spec: &Spec,
    wipes: &[(NodeIndex, u64)],
    report: &mut Report,
) {
    let windows = healthy_windows(history, spec.nodes);
    let entries = &history.entries;
    let accepted = |key: &str| -> Vec<&Entry> {
        entries
            .iter()
            .filter(|e| e.outcome == Outcome::Ok)
            .filter(|e| resize_of(e).is_some_and(|(_, k)| k == key))
            .collect()
    };
    // Everywhere within the bound.
    for revoke in entries.iter().filter(|e| e.outcome == Outcome::Ok) {
        let Op::RevokeKey { key, .. } = &revoke.op else {
            continue;
        };
        // Acknowledged by a node whose disk was then wiped, and never seen enforced
        // anywhere else: it may have died with that disk before any peer heard of it (as
        // usage does, `at_risk_by_wipe`), so no bound holds for it.
        let wiped_at = wipes
            .iter()
            .filter(|&&(n, at)| n == revoke.node && at >= revoke.completed_ms)
            .map(|&(_, at)| at)
            .min();
        if let Some(wiped_at) = wiped_at {
            let escaped = entries.iter().any(|e| {
                e.outcome == Outcome::Fail
                    && e.code.as_deref() == Some(KEY_REVOKED)
                    && resize_of(e).is_some_and(|(_, k)| k == key)
                    && (e.node != revoke.node || e.invoked_ms > wiped_at)
            });
            if !escaped {
                continue;
            }
        }
        let Some(deadline) =
            deadline_after(&windows, revoke.completed_ms, spec.revocation_bound_ms)
        else {
            continue;
        };
        for e in accepted(key)
            .into_iter()
            .filter(|e| e.invoked_ms > deadline)
        {
            // A node wiped after the revoke is a new identity: it learns the revocation
            // like any joining node, and gets the same allowance from its return.
            let relearning = wipes
                .iter()
                .filter(|&&(n, at)| n == e.node && at >= revoke.completed_ms && at <= e.invoked_ms)
                .filter_map(|&(_, at)| deadline_after(&windows, at, spec.revocation_bound_ms))
                .any(|again| e.invoked_ms <= again);
            if !relearning {
                report.violations.push(Violation::RevokedAccepted {
                    key: key.clone(),
                    node: e.node,
                    invoked_ms: e.invoked_ms,
                    deadline_ms: deadline,
                });
            }
        }
    }
    // Never un-learned on a node that enforced it.
    let refusals = entries
        .iter()
        .filter(|e| e.outcome == Outcome::Fail && e.code.as_deref() == Some(KEY_REVOKED));
    let mut reported = BTreeSet::new();
    for refusal in refusals {
        let Some((_, key)) = resize_of(refusal) else {
            continue;
        };
        for e in accepted(key).into_iter().filter(|e| {
            e.node == refusal.node
                && e.invoked_ms > refusal.completed_ms
                && !wipes
                    .iter()
                    .any(|&(n, at)| n == e.node && at >= refusal.completed_ms && at <= e.invoked_ms)
        }) {
            if reported.insert((e.node, e.invoked_ms, key)) {
                report.violations.push(Violation::RevocationForgotten {
                    key: key.to_owned(),
                    node: e.node,
                    refused_ms: refusal.completed_ms,
                    accepted_invoked_ms: e.invoked_ms,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;
    use crate::nemesis::{CutKind, Shape};

    const SPEC: Spec = Spec {
        nodes: 2,
        revocation_bound_ms: 1000,
    };

    fn op(node: NodeIndex, op: Op, at: u64, outcome: Outcome) -> Entry {
        Entry {
            client: 0,
            node,
            op,
            invoked_ms: at,
            completed_ms: at + 5,
            outcome,
            status: None,
            code: None,
            value: None,
        }
    }

    fn resize(node: NodeIndex, key: &str, at: u64, outcome: Outcome) -> Entry {
        let op_ = Op::Resize {
            tenant: "t".into(),
            key: key.into(),
        };
        op(node, op_, at, outcome)
    }

    fn read(node: NodeIndex, round: u64, at: u64, value: u64) -> Entry {
        let op_ = Op::ReadUsage {
            tenant: "t".into(),
            round: Some(round),
        };
        Entry {
            value: Some(value),
            ..op(node, op_, at, Outcome::Ok)
        }
    }

    fn event(at_ms: u64, fault: Fault) -> Event {
        Event { at_ms, fault }
    }

    /// Two acknowledged requests on node 0, one unknown on node 1, a partition healed at
    /// 1000, then reads that agree: the good history every test below breaks one way.
    fn good() -> History {
        let cut = Fault::Partition {
            kind: CutKind::Drop,
            shape: Shape::Isolated { node: 1 },
            cut: vec![(0, 1), (1, 0)],
        };
        History {
            entries: vec![
                resize(0, "k", 100, Outcome::Ok),
                resize(0, "k", 200, Outcome::Ok),
                resize(1, "k", 300, Outcome::Unknown),
                resize(1, "k", 400, Outcome::Fail),
                read(0, 0, 500, 2),
                read(1, 0, 500, 0),
                read(0, 1, 1100, 2),
                read(1, 1, 1100, 1),
                read(0, 2, 1300, 3),
                read(1, 2, 1300, 3),
            ],
            events: vec![event(50, cut), event(1000, Fault::Heal)],
        }
    }

    fn assert_found(v: &[Violation], found: impl Fn(&Violation) -> bool) {
        assert!(v.iter().any(found), "not found in {v:?}");
    }

    fn violations(history: &History) -> Vec<Violation> {
        check(history, &SPEC).violations
    }

    #[test]
    fn a_good_history_passes_and_is_measured() {
        let report = check(&good(), &SPEC);
        assert_eq!(report.violations, vec![]);
        assert_eq!((report.ok, report.fail, report.unknown), (2, 1, 1));
        // Round 2 completed at 1305, the heal was at 1000.
        assert_eq!(report.convergence_ms, Some(305));
        assert_eq!(convergence_ms(&good(), 2), Some(305));
        assert_eq!(convergence_ms(&good(), 3), None, "a third node never read");
        // Every write ended before the heal: all of it is the replication's.
        assert_eq!(report.settled_ms, Some(305));
    }

    #[test]
    fn a_write_answered_after_the_heal_is_not_counted_as_replication_time() {
        let mut history = good();
        // Admitted before the heal, answered at 1155; the round of 1300 reads it everywhere.
        history.entries.push(resize(0, "k", 1150, Outcome::Ok));
        for entry in &mut history.entries {
            if matches!(entry.op, Op::ReadUsage { round: Some(2), .. }) {
                entry.value = Some(4);
            }
        }
        let report = check(&history, &SPEC);
        assert_eq!(report.violations, vec![]);
        assert_eq!(report.convergence_ms, Some(305));
        assert_eq!(report.settled_ms, Some(150));
    }

    #[test]
    fn lost_usage_is_found() {
        let mut h = good();
        h.entries.push(resize(1, "k", 600, Outcome::Ok));
        h.entries.push(resize(1, "k", 650, Outcome::Ok));
        let v = violations(&h);
        assert_found(&v, |v| {
            matches!(
                v,
                Violation::Lost {
                    read: 3,
                    acknowledged: 4,
                    ..
                }
            )
        });
        assert!(v.contains(&Violation::NotConverged), "{v:?}");
    }

    #[test]
    fn usage_acknowledged_before_a_wipe_is_at_risk_not_lost() {
        let mut h = good();
        h.entries.push(resize(1, "k", 600, Outcome::Ok));
        h.entries.push(resize(1, "k", 650, Outcome::Ok));
        h.events.insert(1, event(700, Fault::Wipe { node: 1 }));
        h.events.insert(2, event(800, Fault::Restart { node: 1 }));
        let report = check(&h, &SPEC);
        assert_eq!(report.at_risk_by_wipe, 2, "{report:?}");
        assert_eq!(report.acknowledged_missing, 1, "4 acknowledged, 3 read");
        assert_eq!(report.violations, vec![]);
    }

    #[test]
    fn double_counting_is_found() {
        let mut h = good();
        // 2 acknowledged + 1 unknown could bill 3; a read of 4 counted something twice.
        h.entries.push(read(0, 3, 1400, 4));
        let v = violations(&h);
        assert_found(&v, |v| {
            matches!(
                v,
                Violation::DoubleCounted {
                    read: 4,
                    bound: 3,
                    ..
                }
            )
        });
        // And a read counting a request invoked after it completed is counted twice too.
        let mut h = good();
        h.entries[2].invoked_ms = 2000;
        h.entries[2].completed_ms = 2005;
        let v = violations(&h);
        assert_found(&v, |v| matches!(v, Violation::DoubleCounted { .. }));
    }

    #[test]
    fn a_quota_overrun_is_found_and_liveness_is_measured() {
        let set = |requests, at| {
            let op_ = Op::SetQuota {
                tenant: "t".into(),
                requests,
            };
            op(0, op_, at, Outcome::Ok)
        };
        // A third acknowledged request uses the whole quota of 3.
        let mut h = good();
        h.entries.insert(0, set(3, 0));
        h.entries.push(resize(1, "k", 600, Outcome::Ok));
        let report = check(&h, &SPEC);
        assert_eq!(report.violations, vec![]);
        assert_eq!(report.quota_usable["t"], 1.0);
        assert_eq!(report.liveness(0.99), Ok(()));
        let mut h = good();
        h.entries.insert(0, set(3, 0));
        h.entries.push(resize(1, "k", 600, Outcome::Ok));
        h.entries.push(resize(1, "k", 650, Outcome::Ok));
        h.entries.push(read(0, 3, 1400, 4));
        h.entries.push(read(1, 3, 1400, 4));
        let v = violations(&h);
        assert!(
            v.contains(&Violation::QuotaOverrun {
                tenant: "t".into(),
                quota: 3,
                acknowledged: 4,
                read_max: 4,
            }),
            "{v:?}"
        );
        // Half the quota usable fails liveness.
        let mut h = good();
        h.entries.insert(0, set(4, 0));
        let report = check(&h, &SPEC);
        assert_eq!(report.quota_usable["t"], 0.5);
        assert!(report.liveness(0.99).is_err());
        // Set after the first fault: not a guarantee the run can check.
        let mut h = good();
        h.entries.insert(0, set(100, 60));
        assert!(violations(&h).contains(&Violation::QuotaNotSetBeforeFaults { tenant: "t".into() }));
    }

    #[test]
    fn billing_past_the_quota_is_an_overrun_even_when_unacknowledged() {
        let mut h = good();
        let op_ = Op::SetQuota {
            tenant: "t".into(),
            requests: 2,
        };
        h.entries.insert(0, op(0, op_, 0, Outcome::Ok));
        let v = violations(&h);
        assert_found(&v, |v| {
            matches!(v, Violation::QuotaOverrun { read_max: 3, .. })
        });
    }

    #[test]
    fn totals_that_never_agree_do_not_converge() {
        let mut h = good();
        h.entries
            .retain(|e| !matches!(e.op, Op::ReadUsage { round: Some(2), .. }));
        let report = check(&h, &SPEC);
        assert_eq!(report.convergence_ms, None);
        assert!(report.violations.contains(&Violation::NotConverged));
        // Equal totals that miss an acknowledged request are not convergence either.
        let mut h = good();
        h.entries.push(read(0, 3, 1400, 1));
        h.entries.push(read(1, 3, 1400, 1));
        h.entries
            .retain(|e| !matches!(e.op, Op::ReadUsage { round: Some(2), .. }));
        assert!(violations(&h).contains(&Violation::NotConverged));
    }

    #[test]
    fn a_read_going_down_is_found_across_a_restart_but_not_across_a_wipe() {
        let mut h = good();
        h.events.insert(1, event(600, Fault::Kill { node: 0 }));
        h.events.insert(2, event(700, Fault::Restart { node: 0 }));
        h.entries.push(read(0, 9, 800, 1));
        let v = violations(&h);
        assert_found(&v, |v| {
            matches!(
                v,
                Violation::NonMonotonic {
                    node: 0,
                    earlier: 2,
                    later: 1,
                    ..
                }
            )
        });
        h.events[1].fault = Fault::Wipe { node: 0 };
        let v = violations(&h);
        assert!(
            !v.iter()
                .any(|v| matches!(v, Violation::NonMonotonic { .. })),
            "{v:?}"
        );
        // Overlapping reads may see either order.
        let mut h = good();
        h.entries.push(read(0, 9, 498, 1));
        assert_eq!(violations(&h), vec![]);
    }

    fn revocation_violations(history: &History) -> Vec<Violation> {
        violations(history)
            .into_iter()
            .filter(|v| {
                matches!(
                    v,
                    Violation::RevokedAccepted { .. } | Violation::RevocationForgotten { .. }
                )
            })
            .collect()
    }

    fn revoke(node: NodeIndex, at: u64) -> Entry {
        let op_ = Op::RevokeKey {
            tenant: "t".into(),
            key: "r".into(),
        };
        op(node, op_, at, Outcome::Ok)
    }

    fn refused(node: NodeIndex, at: u64) -> Entry {
        Entry {
            code: Some(KEY_REVOKED.into()),
            status: Some(401),
            ..resize(node, "r", at, Outcome::Fail)
        }
    }

    #[test]
    fn a_revoked_key_accepted_past_the_bound_after_the_heal_is_found() {
        // Revoked at 200 during the partition (healed at 1000): accepting it until
        // 2000 is allowed, after that it is not.
        let mut h = good();
        h.entries.push(revoke(0, 200));
        h.entries.push(resize(1, "r", 1900, Outcome::Ok));
        assert_eq!(revocation_violations(&h), vec![]);
        h.entries.push(resize(1, "r", 2100, Outcome::Ok));
        let late = |invoked_ms, deadline_ms| Violation::RevokedAccepted {
            key: "r".into(),
            node: 1,
            invoked_ms,
            deadline_ms,
        };
        assert_eq!(revocation_violations(&h), vec![late(2100, 2000)]);
        // A node wiped after the revoke is a new identity and gets the same allowance
        // from its return (restart at 2600: healthy again, bound until 3600).
        let mut h = good();
        h.entries.push(revoke(0, 200));
        h.events.push(event(2500, Fault::Wipe { node: 1 }));
        h.events.push(event(2600, Fault::Restart { node: 1 }));
        h.entries.push(resize(1, "r", 2700, Outcome::Ok));
        assert_eq!(revocation_violations(&h), vec![]);
        h.entries.push(resize(1, "r", 3700, Outcome::Ok));
        assert_eq!(revocation_violations(&h), vec![late(3700, 2000)]);
    }

    #[test]
    fn a_revocation_that_died_with_a_wiped_disk_has_no_bound_unless_it_escaped() {
        // Acknowledged on node 0 at 200 while it was cut off, node 0 wiped at 400: nobody
        // else may ever have heard of it (fault seed 268287883345394, proxy backend).
        let mut h = good();
        h.entries.push(revoke(0, 200));
        h.events.insert(1, event(400, Fault::Wipe { node: 0 }));
        h.events.insert(2, event(500, Fault::Restart { node: 0 }));
        h.entries.push(resize(1, "r", 2100, Outcome::Ok));
        assert_eq!(revocation_violations(&h), vec![]);
        // Seen enforced on node 1 first: it escaped the wipe, and the bound holds again.
        h.entries.push(refused(1, 300));
        assert!(matches!(
            revocation_violations(&h)[..],
            [Violation::RevokedAccepted { node: 1, .. }, ..]
        ));
    }

    #[test]
    fn a_revocation_forgotten_after_a_restart_is_found() {
        // Node 1 refused the key at 300 (within the partition), was killed and restarted
        // while still cut off, and accepted it again: the bound has not passed, the
        // refusal is what convicts it.
        let mut h = good();
        h.entries.push(revoke(0, 200));
        h.entries.push(refused(1, 300));
        h.events.insert(1, event(400, Fault::Kill { node: 1 }));
        h.events.insert(2, event(500, Fault::Restart { node: 1 }));
        h.entries.push(resize(1, "r", 600, Outcome::Ok));
        assert_eq!(
            revocation_violations(&h),
            vec![Violation::RevocationForgotten {
                key: "r".into(),
                node: 1,
                refused_ms: 305,
                accepted_invoked_ms: 600,
            }],
        );
        // On another node, or after a wipe, it is not (yet) a violation.
        h.entries.last_mut().unwrap().node = 0;
        assert_eq!(revocation_violations(&h), vec![]);
        h.entries.last_mut().unwrap().node = 1;
        h.events[1].fault = Fault::Wipe { node: 1 };
        assert_eq!(revocation_violations(&h), vec![]);
    }

    #[test]
    fn healthy_windows_follow_the_events() {
        let mut h = good();
        h.events.push(event(1500, Fault::Pause { node: 0 }));
        h.events.push(event(1600, Fault::Resume { node: 0 }));
        assert_eq!(
            healthy_windows(&h, 2),
            vec![(0, 50), (1000, 1500), (1600, u64::MAX)]
        );
        assert_eq!(
            deadline_after(&healthy_windows(&h, 2), 1200, 400),
            Some(2000)
        );
        assert_eq!(
            deadline_after(&healthy_windows(&h, 2), 1000, 400),
            Some(1400)
        );
    }
}
