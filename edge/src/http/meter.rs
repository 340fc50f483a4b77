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
use tessera_crdt::{CounterKey, TenantId};

pub use crate::control::ops::{Shortfall, Usage};
use crate::control::{now_ms, ControlPlane};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::routes::AppState;

/// Rights one admitted request spent: given back to this node's local rights when
/// dropped, unless [`Spent::delivered`] said the answer was billed.
#[must_use = "dropping Spent refunds the request's quota rights at once"]
pub struct Spent {
    control: Option<Arc<ControlPlane>>,
    demands: Vec<(CounterKey, u64)>,
}

impl Spent {
    /// Nothing spent (no quota, or no payer).
    pub fn nothing() -> Self {
        Spent {
            control: None,
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
        let Some(control) = self.control.as_ref() else {
            return;
        };
        if self.demands.is_empty() {
            return;
        }
        control.refund(&std::mem::take(&mut self.demands), now_ms());
        control.wake_net();
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
    let mut arrivals = state.control.rights_arrivals();
    if let Some(arrivals) = arrivals.as_mut() {
        arrivals.borrow_and_update();
    }
    let mut freed = state.control.rights_freed();
    freed.borrow_and_update();
    // The demands and the first attempt in one hold of the lock (the common case ends
    // here).
    let crate::control::ops::Admission {
        demands,
        mut shortfall,
    } = state.control.admit(tenant, bytes_in, now_ms());
    if demands.is_empty() {
        return Ok(Spent::nothing());
    }
    let wait = Duration::from_millis(state.config.quota.transfer_wait_ms);
    let give_up = tokio::time::Instant::from_std(deadline.min(Instant::now() + wait));
    let mut waited = false;
    loop {
        state.control.wake_net();
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
                    control: Some(state.control.clone()),
                    demands,
                });
            }
            Some(Shortfall::Unavailable {
                transfer_possible: true,
            }) if tokio::time::Instant::now() < give_up => {
                // Until rights arrive from a peer or come back from a request here that
                // was not delivered (then try again: they may be another counter's, or
                // taken by another request), or the wait is over (then a last try: a
                // grant may also come with the quota's policy, which nothing marks).
                waited = true;
                state.metrics.quota_waits.inc();
                let arrived = async {
                    match arrivals.as_mut() {
                        Some(watch) => watch.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    still = arrived => {
                        if !still {
                            // The transport stopped: nothing more will arrive.
                            arrivals = None;
                        }
                    }
                    _ = freed.changed() => {}
                    () = tokio::time::sleep_until(give_up) => {}
                }
                shortfall = state.control.admit_again(&demands, now_ms());
            }
            Some(Shortfall::Unavailable { .. }) => {
                state
                    .metrics
                    .quota_decisions
                    .get_or_create(&outcome("unavailable"))
                    .inc();
                return Err(ApiError::too_many(
                    ErrorCode::QuotaUnavailable,
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
                    ErrorCode::QuotaExhausted,
                    "the tenant's quota for this period is used up",
                    u32::try_from(retry_s).unwrap_or(u32::MAX),
                ));
            }
        }
    }
}

fn outcome(outcome: &'static str) -> crate::http::metrics::OutcomeLabels {
    crate::http::metrics::OutcomeLabels { outcome }
}

/// Who is billed, for the usage record.
#[derive(Clone, Copy, Debug)]
pub struct Payer {
    pub tenant: TenantId,
    /// The API key used, if any (signed URLs have none).
    pub key: Option<KeyId>,
    pub route: &'static str,
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
    let request_id = crate::control::records::RequestId::next();
    let now = now_ms();
    // Encoded by the writer, off the request path.
    let record = crate::control::records::Pending {
        at_ms: now,
        tenant,
        key: payer.key,
        request_id,
        route: payer.route,
        status,
        bytes_in: usage.bytes_in,
        bytes_out: usage.bytes_out,
        cpu_micros: usage.cpu_micros,
    };
    let ticket = state
        .control
        .bill(tenant, usage, now, record)
        .map_err(|e| {
            // A sealed period (the clock stepped back past `billing.seal_grace_ms`) or an
            // overflow: a bug or a broken clock, never a client's fault.
            tracing::error!(tenant = %tenant, error = %e, "usage not recorded");
            ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::MeteringFailed,
                e.to_string(),
            )
        })?;
    // From here the usage is in the ledger and will be committed whatever happens to this
    // request (a failed commit stops the node; a client that leaves does not unwrite it):
    // its quota rights stay spent, or usage could pass the quota.
    spent.delivered();
    state.control.wake_net();
    let started = Instant::now();
    let result = state
        .control
        .durable(ticket, state.commit_timeout())
        .await
        .map_err(|e| ApiError::overloaded(ErrorCode::StoreUnavailable, e.to_string(), 1));
    state
        .metrics
        .commit_wait
        .observe(started.elapsed().as_secs_f64());
    result.map(|()| request_id.to_string())
}
