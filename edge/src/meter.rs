//! Quota admission before work, and metering after it: the request path's two touches of
//! the replicated state. Both are local: one lock of the protocol core each.
//!
//! **Admission** spends rights from the tenant's bounded counters (escrow) for every hard
//! quota it has on what is known before work — one request, and the input's bytes — for
//! the periods those quotas are set on. All counters are checked first and spent together
//! under one lock, so a request refused on one quota spends nothing on another. With no
//! local rights, the consume itself asks a peer for some; the request waits for the
//! transfer only while `quota.transfer_wait_ms` and its deadline allow, and only when a
//! connected peer could send rights at all (a cut-off node refuses at once). It waits on
//! the transport's signal that rights arrived (`NetHandle::rights_arrivals`), not on a
//! timer, and tries again only then (and once when the wait is over); the attempt after a
//! wait does not count the request's demand again (`Node::consume_again`), so waiting does
//! not inflate the rights this node asks for. **Rights
//! follow delivered work**: admission hands back a [`Spent`] that returns the rights to
//! this node's local rights (the escrow's refunded cell, written only by this node and
//! never above what it consumed) unless its usage was written — a request shed after
//! admission, refused by the pipeline, cancelled at its deadline or abandoned by its
//! client before billing costs its tenant no quota. Once [`bill`] has put the usage in the
//! ledger, the rights stay spent whatever happens next (a client leaving during the
//! commit wait cannot unwrite the usage, so it must not get the rights back). Before, a tenant with a quota of 4 got 2 answers
//! when another tenant's overload made its other 2 requests fail.
//!
//! **Metering** adds requests, CPU time, bytes in and bytes out to this node's ledger slot
//! for the month, and waits for the group commit that makes them durable before the
//! response leaves (ack after durable). A commit that fails or times out answers 503.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_crdt::directory::KeyId;
use tessera_crdt::{CounterKey, Metric, Period, PeriodKind, TenantId};
use tessera_sync::Node;

use crate::error::ApiError;
use crate::replica::{now_ms, Replica};
use crate::routes::AppState;

/// What one admission needs: `(counter, amount)` per enforced quota of the tenant.
pub fn demands(node: &Node, tenant: TenantId, bytes_in: u64, now: u64) -> Vec<(CounterKey, u64)> {
    let Some(t) = node.directory().tenant(tenant) else {
        return Vec::new();
    };
    t.quotas()
        .filter_map(|(metric, kind, _, _)| {
            let amount = match metric {
                Metric::Requests => 1,
                Metric::BytesIn => bytes_in,
                // Not enforceable before work (the admin API refuses to set these).
                Metric::CpuMicros | Metric::BytesOut => return None,
            };
            Some((
                CounterKey::new(tenant, Period::containing(kind, now), metric),
                amount,
            ))
        })
        .collect()
}

/// Why an admission was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    /// Nothing left anywhere in this node's view: wait for the next period.
    Exhausted { period_end_ms: u64 },
    /// Rights exist elsewhere (or grants have not arrived yet) but are not here.
    /// `transfer_possible`: some connected peer could still send some (it holds rights
    /// for the counter, or, with no counter here yet, it may bring the grants). When
    /// none could, waiting is pointless: the request is refused at once (a partitioned
    /// node answers 429 fast instead of holding every request for the transfer wait).
    Unavailable { transfer_possible: bool },
}

/// Whether an admission attempt is the request's first (its demand counts) or one after
/// a wait for rights (it does not count again: see [`Node::consume_again`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    First,
    Again,
}

/// Spends every demand's rights at once, or none: all are checked first, under the caller's
/// one hold of the lock. A refusal asks a peer for rights (through the consume it makes).
pub fn try_admit(
    node: &mut Node,
    demands: &[(CounterKey, u64)],
    now: u64,
    attempt: Attempt,
) -> Result<(), Shortfall> {
    let short = demands
        .iter()
        .find(|(key, amount)| node.local_rights(key) < *amount)
        .copied();
    let Some((key, amount)) = short else {
        for (key, amount) in demands {
            node.consume(now, *key, *amount)
                .expect("rights were checked under the same lock");
        }
        return Ok(());
    };
    // Refused, and starts (or revives) a rights request to a peer.
    let _ = match attempt {
        Attempt::First => node.consume(now, key, amount),
        Attempt::Again => node.consume_again(now, key, amount),
    };
    let counter = node.escrow().get(&key);
    let left = counter.map_or(0, |c| {
        u128::from(c.limit()).saturating_sub(c.total_consumed())
    });
    if counter.is_some() && left < u128::from(amount) {
        return Err(Shortfall::Exhausted {
            period_end_ms: key.period.end_ms(),
        });
    }
    let transfer_possible = node
        .peers()
        .iter()
        .filter(|(_, peer)| peer.connected && !peer.left)
        .any(|(peer, _)| counter.is_none_or(|c| c.local_rights(*peer) > 0));
    Err(Shortfall::Unavailable { transfer_possible })
}

/// Rights one admitted request spent: given back to this node's local rights when
/// dropped, unless [`Spent::delivered`] said the answer was billed.
#[must_use = "dropping Spent refunds the request's quota rights at once"]
pub struct Spent {
    replica: Option<Arc<Replica>>,
    demands: Vec<(CounterKey, u64)>,
}

impl Spent {
    /// Nothing spent (no quota, or no payer).
    pub fn nothing() -> Self {
        Spent {
            replica: None,
            demands: Vec::new(),
        }
    }

    /// The answer was billed: the rights stay spent.
    pub fn delivered(mut self) {
        self.demands.clear();
    }
}

impl Drop for Spent {
    fn drop(&mut self) {
        let Some(replica) = self.replica.as_ref() else {
            return;
        };
        if self.demands.is_empty() {
            return;
        }
        {
            let mut node = replica.lock();
            let now = now_ms();
            for (key, amount) in self.demands.drain(..) {
                // Cannot fail: this node consumed at least `amount` of `key` for this very
                // request, and consumed cells only grow.
                if let Err(error) = node.refund(now, key, amount) {
                    tracing::error!(%error, "quota refund refused");
                }
            }
        }
        replica.wake_net();
    }
}

/// Spends the tenant's rights for this request, or says why not.
pub async fn admit(
    state: &AppState,
    tenant: TenantId,
    bytes_in: u64,
    deadline: Instant,
) -> Result<Spent, ApiError> {
    // Rights arrivals are marked seen before the first attempt, so rights that come
    // between it and the wait end the wait at once.
    let mut arrivals = state.replica.rights_arrivals();
    if let Some(arrivals) = arrivals.as_mut() {
        arrivals.borrow_and_update();
    }
    // The demands and the first attempt under one hold of the lock (the common case
    // ends here).
    let (demands, mut shortfall) = {
        let mut node = state.replica.lock();
        let now = now_ms();
        let demands = demands(&node, tenant, bytes_in, now);
        if demands.is_empty() {
            return Ok(Spent::nothing());
        }
        let shortfall = try_admit(&mut node, &demands, now, Attempt::First).err();
        (demands, shortfall)
    };
    let wait = Duration::from_millis(state.config.quota.transfer_wait_ms);
    let give_up = tokio::time::Instant::from_std(deadline.min(Instant::now() + wait));
    let mut waited = false;
    loop {
        state.replica.wake_net();
        match shortfall {
            None => {
                let how = if waited {
                    "admitted_after_transfer"
                } else {
                    "admitted_locally"
                };
                state
                    .metrics
                    .quota_decisions
                    .get_or_create(&outcome(how))
                    .inc();
                return Ok(Spent {
                    replica: Some(state.replica.clone()),
                    demands,
                });
            }
            Some(Shortfall::Unavailable {
                transfer_possible: true,
            }) if !waited || tokio::time::Instant::now() < give_up => {
                // Until rights arrive from a peer (then try again: they may be another
                // counter's, or another request's) or the wait is over (then a last try:
                // a grant may also come with the quota's policy, which no arrival marks).
                waited = true;
                state.metrics.quota_waits.inc();
                match arrivals.as_mut() {
                    Some(watch) => {
                        if let Ok(Err(_)) = tokio::time::timeout_at(give_up, watch.changed()).await
                        {
                            // The transport stopped: nothing more will arrive.
                            arrivals = None;
                        }
                    }
                    None => tokio::time::sleep_until(give_up).await,
                }
                shortfall = try_admit(
                    &mut state.replica.lock(),
                    &demands,
                    now_ms(),
                    Attempt::Again,
                )
                .err();
            }
            Some(Shortfall::Unavailable { .. }) => {
                state
                    .metrics
                    .quota_decisions
                    .get_or_create(&outcome("unavailable"))
                    .inc();
                return Err(ApiError::too_many(
                    "quota_unavailable",
                    "the tenant's quota has rights left on other nodes that could not be \
                     reached in time; retry shortly",
                    1,
                ));
            }
            Some(Shortfall::Exhausted { period_end_ms }) => {
                state
                    .metrics
                    .quota_decisions
                    .get_or_create(&outcome("exhausted"))
                    .inc();
                let retry_s = period_end_ms.saturating_sub(now_ms()).div_ceil(1000);
                return Err(ApiError::too_many(
                    "quota_exhausted",
                    "the tenant's quota for this period is used up",
                    u32::try_from(retry_s).unwrap_or(u32::MAX),
                ));
            }
        }
    }
}

fn outcome(outcome: &'static str) -> crate::metrics::OutcomeLabels {
    crate::metrics::OutcomeLabels { outcome }
}

/// What one successful request is billed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub cpu_micros: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Who is billed, for the usage record.
#[derive(Clone, Copy, Debug)]
pub struct Payer {
    pub tenant: TenantId,
    /// The API key used, if any (signed URLs have none).
    pub key: Option<KeyId>,
    pub route: &'static str,
}

/// Adds one request's usage to this node's ledger slot for the month; returns the ticket
/// to wait on ([`Node::own_changes`] after it). Usage is stamped when it is billed, not
/// when the request was admitted: a request that straddles a period's end bills the new
/// period (its quota rights came from the old one's counter). Billing time is the write
/// time, so no usage reaches a period after this node sealed it (`billing.seal_grace_ms`
/// after its end) unless the clock steps back by more than the grace: then the increment
/// is refused (`IncrementError::Sealed`), logged, and the request answers 500.
pub fn record_usage(
    node: &mut Node,
    tenant: TenantId,
    usage: Usage,
    now: u64,
) -> Result<u64, tessera_crdt::ledger::IncrementError> {
    let period = Period::containing(PeriodKind::Month, now);
    for (metric, amount) in [
        (Metric::Requests, 1),
        (Metric::CpuMicros, usage.cpu_micros),
        (Metric::BytesIn, usage.bytes_in),
        (Metric::BytesOut, usage.bytes_out),
    ] {
        if amount > 0 {
            node.increment(now, CounterKey::new(tenant, period, metric), amount)?;
        }
    }
    Ok(node.own_changes())
}

/// Adds the request's usage to this node's slot, with its raw usage record, and waits
/// until both are durable. Returns the request id written in the record.
pub async fn bill(
    state: &AppState,
    payer: Payer,
    status: u16,
    usage: Usage,
    spent: Spent,
) -> Result<String, ApiError> {
    let tenant = payer.tenant;
    let request_id = crate::records::RequestId::next();
    let ticket = {
        let mut node = state.replica.lock();
        let now = now_ms();
        let ticket = record_usage(&mut node, tenant, usage, now).map_err(|e| {
            // A sealed period (the clock stepped back past `billing.seal_grace_ms`) or an
            // overflow: a bug or a broken clock, never a client's fault.
            tracing::error!(tenant = %tenant, error = %e, "usage not recorded");
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "metering_failed",
                e.to_string(),
            )
        })?;
        // Encoded by the writer, off the request path.
        state.replica.push_record(crate::records::Pending {
            at_ms: now,
            tenant,
            key: payer.key,
            request_id,
            route: payer.route,
            status,
            bytes_in: usage.bytes_in,
            bytes_out: usage.bytes_out,
            cpu_micros: usage.cpu_micros,
        });
        ticket
    };
    // From here the usage is in the ledger and will be committed whatever happens to this
    // request (a failed commit stops the node; a client that leaves does not unwrite it):
    // its quota rights stay spent, or usage could pass the quota.
    spent.delivered();
    state.replica.wake_net();
    let started = Instant::now();
    let result = state
        .replica
        .durable(ticket, state.commit_timeout())
        .await
        .map_err(|e| ApiError::overloaded("store_unavailable", e.to_string(), 1));
    state
        .metrics
        .commit_wait
        .observe(started.elapsed().as_secs_f64());
    result.map(|()| request_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_crdt::directory::Change;
    use tessera_crdt::NodeId;
    use tessera_sync::{Node, SyncConfig};

    #[test]
    fn a_node_with_no_peer_to_ask_does_not_wait() {
        let now = 1_790_000_000_000;
        let mut node = Node::empty(NodeId(1), SyncConfig::default(), 7, now);
        let tenant = TenantId(5);
        for change in [
            // Homed on a node this one is not connected to: no grant can arrive.
            Change::CreateTenant {
                tenant,
                name: "far".into(),
                home: NodeId(2),
            },
            Change::SetQuota {
                tenant,
                metric: Metric::Requests,
                period: PeriodKind::Month,
                limit: Some(10),
            },
        ] {
            node.edit_directory(now, "test", change).unwrap();
        }
        let demands = demands(&node, tenant, 100, now);
        assert_eq!(demands.len(), 1);
        assert_eq!(
            try_admit(&mut node, &demands, now, Attempt::First),
            Err(Shortfall::Unavailable {
                transfer_possible: false
            })
        );
    }
}
