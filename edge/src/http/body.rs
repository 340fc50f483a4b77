//! Reading a request body under four bounds: its size (`http.body_bytes_max`, declared
//! or streamed, chunked or not), its time (`http.body_read_timeout_ms`), the bytes all
//! requests together may hold in memory (`http.buffered_bytes_max`), and the share of
//! that memory one tenant may hold (`http.tenant_buffered_bytes_max`).
//!
//! The memory bounds are what keep memory flat under overload: without them, a burst of
//! connections each uploading a large body is buffered in full before the pool gets the
//! chance to refuse it. Memory is charged **as it is allocated, never as declared**: a
//! `Content-Length` is a claim, and reserving it up front let 17 connections that each
//! declared 32 MiB and sent 3 bytes hold the whole budget for the body timeout (every
//! other tenant got 503). The buffer grows by doubling (at least 64 KiB, at most the
//! declared length), and each growth is charged before it happens, both to the global
//! budget (a semaphore counted in bytes) and to the payer's share (a map of bytes per
//! tenant, the anonymous caller counting as one). A growth that does not fit is refused
//! with 503 at once. The charge travels with the bytes ([`Buffered`]) and is returned
//! when the request is answered. A connection holds one body at a time (HTTP/1), so its
//! share is the per-body cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::BodyExt;
use tessera_crdt::TenantId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::http::error::{ApiError, ErrorCode};

/// The smallest step a body buffer grows by (fewer, larger charges for small bodies).
const GROWTH_BYTES_MIN: usize = 64 * 1024;

/// A body held in memory, with its share of the memory budget.
pub struct Buffered {
    pub bytes: Bytes,
    _charge: Charge,
}

/// Shared budget of buffered body bytes, with a cap per tenant.
pub struct Budget {
    semaphore: Arc<Semaphore>,
    bytes_max: usize,
    shares: Arc<Shares>,
}

/// Bytes held per payer. A plain mutex: one map probe per buffer growth, never held
/// across an await.
struct Shares {
    held: Mutex<HashMap<Option<TenantId>, usize>>,
    tenant_bytes_max: usize,
}

/// Who a body's memory is charged to: a budget and the payer (`None`: anonymous).
#[derive(Clone, Copy)]
pub struct Account<'a> {
    pub budget: &'a Budget,
    pub payer: Option<TenantId>,
}

/// Memory charged to the global budget and to one payer's share; given back on drop.
struct Charge {
    permit: Option<OwnedSemaphorePermit>,
    shares: Arc<Shares>,
    payer: Option<TenantId>,
    bytes: usize,
}

impl Buffered {
    /// Bytes charged to no budget (the pool's unit tests).
    #[cfg(test)]
    pub(crate) fn uncharged(bytes: Bytes) -> Self {
        Buffered {
            bytes,
            _charge: Charge {
                permit: None,
                shares: Arc::new(Shares {
                    held: Mutex::new(HashMap::new()),
                    tenant_bytes_max: 0,
                }),
                payer: None,
                bytes: 0,
            },
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.bytes == 0 {
            return;
        }
        let mut held = self.shares.lock();
        if let Some(share) = held.get_mut(&self.payer) {
            *share = share.saturating_sub(self.bytes);
            if *share == 0 {
                held.remove(&self.payer);
            }
        }
    }
}

impl Shares {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<TenantId>, usize>> {
        // A map of counters: a panic elsewhere cannot leave it half-updated.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn overloaded(message: &'static str) -> ApiError {
    ApiError::overloaded(ErrorCode::Overloaded, message, 1)
}

impl Budget {
    /// `bytes_max` for all bodies together, `tenant_bytes_max` for one payer's.
    pub fn new(bytes_max: usize, tenant_bytes_max: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
            shares: Arc::new(Shares {
                held: Mutex::new(HashMap::new()),
                tenant_bytes_max,
            }),
        }
    }

    /// Bytes currently charged by bodies in memory.
    pub fn in_use(&self) -> usize {
        self.bytes_max - self.semaphore.available_permits()
    }

    /// Bytes currently charged to `payer`.
    pub fn held_by(&self, payer: Option<TenantId>) -> usize {
        self.shares.lock().get(&payer).copied().unwrap_or(0)
    }
}

impl Account<'_> {
    fn charge(&self) -> Charge {
        Charge {
            permit: None,
            shares: self.budget.shares.clone(),
            payer: self.payer,
            bytes: 0,
        }
    }

    /// Adds `bytes` to `charge`: the payer's share first (its cap), then the global budget.
    fn grow(&self, charge: &mut Charge, bytes: usize) -> Result<(), ApiError> {
        let shares = &self.budget.shares;
        {
            let mut held = shares.lock();
            let share = held.entry(self.payer).or_insert(0);
            if *share + bytes > shares.tenant_bytes_max {
                if *share == 0 {
                    held.remove(&self.payer);
                }
                return Err(overloaded(
                    "this tenant's request bodies in memory are at its share of the budget; \
                     retry later",
                ));
            }
            *share += bytes;
        }
        let permit = u32::try_from(bytes)
            .ok()
            .and_then(|n| self.budget.semaphore.clone().try_acquire_many_owned(n).ok());
        let Some(permit) = permit else {
            let mut held = shares.lock();
            if let Some(share) = held.get_mut(&self.payer) {
                *share -= bytes;
                if *share == 0 {
                    held.remove(&self.payer);
                }
            }
            return Err(overloaded(
                "too many request bodies are in memory; retry later",
            ));
        };
        match &mut charge.permit {
            Some(held) => held.merge(permit),
            none => *none = Some(permit),
        }
        charge.bytes += bytes;
        Ok(())
    }
}

/// Reads `body` whole, within `bytes_max` and `timeout`, charging `account` as the buffer
/// grows. The declared length is hyper's (from a validated `Content-Length`), `None`
/// when chunked; it is checked against `bytes_max` and caps the growth steps, nothing more.
pub async fn read(
    body: Body,
    bytes_max: usize,
    timeout: Duration,
    account: Account<'_>,
) -> Result<Buffered, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than the limit of {bytes_max} bytes"),
        )
    };
    let declared = axum::body::HttpBody::size_hint(&body).exact();
    if declared.is_some_and(|n| n > bytes_max as u64) {
        return Err(too_large());
    }
    let growth_max = declared.map_or(bytes_max, |n| n as usize);
    let mut charge = account.charge();
    let mut buffer: Vec<u8> = Vec::new();
    let mut body = body;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BodyReadFailed,
                    format!("the request body could not be read: {err}"),
                )
            })?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers carry nothing we use
            };
            let total = buffer.len() + data.len();
            if total > bytes_max {
                return Err(too_large());
            }
            if total > buffer.capacity() {
                // Double, within [the bytes needed, the declared length or the cap].
                let capacity = (buffer.capacity() * 2)
                    .max(GROWTH_BYTES_MIN)
                    .min(growth_max)
                    .max(total);
                account.grow(&mut charge, capacity - buffer.capacity())?;
                buffer.reserve_exact(capacity - buffer.len());
            }
            buffer.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(Ok(())) => Ok(Buffered {
            bytes: Bytes::from(buffer),
            _charge: charge,
        }),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BodyTimeout,
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

/// Reads and drops up to `bytes_max` of `body` within `timeout`, keeping nothing.
///
/// Used with an early refusal: a client still sending its body when the connection is
/// closed gets a reset and may never see the 503 and its `Retry-After`, so the handler
/// answers and leaves this running beside the connection. Discarding costs bandwidth but
/// no memory. Clients that sent `Expect: 100-continue` are not drained:
/// hyper sends `100 Continue` only when the body is read, so they never send it.
pub async fn discard(body: Body, bytes_max: usize, timeout: Duration) {
    let mut body = body;
    let mut seen = 0usize;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen += data.len();
                if seen > bytes_max {
                    return;
                }
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body with no declared length, as a chunked upload arrives.
    async fn chunked(bytes: Vec<u8>) -> Body {
        let (mut sender, body) = http_body_util::channel::Channel::<Bytes>::new(16);
        for chunk in bytes.chunks(100) {
            sender
                .send_data(Bytes::copy_from_slice(chunk))
                .await
                .unwrap();
        }
        assert_eq!(axum::body::HttpBody::size_hint(&body).exact(), None);
        Body::new(body)
    }

    fn anonymous(budget: &Budget) -> Account<'_> {
        Account {
            budget,
            payer: None,
        }
    }

    #[tokio::test]
    async fn budget_is_reserved_and_returned() {
        let budget = Budget::new(1_000, 1_000);
        let body = read(
            Body::from(vec![7u8; 600]),
            800,
            Duration::from_secs(1),
            anonymous(&budget),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(body.bytes.len(), 600);
        assert_eq!(budget.in_use(), 600);
        let refused = read(
            Body::from(vec![7u8; 600]),
            800,
            Duration::from_secs(1),
            anonymous(&budget),
        )
        .await
        .err()
        .expect("over budget");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.retry_after_s.is_some());
        // A body without a declared length reserves as it streams, and is refused too.
        let streamed = read(
            chunked(vec![7u8; 600]).await,
            800,
            Duration::from_secs(1),
            anonymous(&budget),
        )
        .await
        .err()
        .expect("over budget while streaming");
        assert_eq!(streamed.status, StatusCode::SERVICE_UNAVAILABLE);
        drop(body);
        assert_eq!(
            budget.in_use(),
            0,
            "answered requests give their bytes back"
        );
        let too_large = read(
            chunked(vec![7u8; 900]).await,
            800,
            Duration::from_secs(1),
            anonymous(&budget),
        )
        .await
        .err()
        .expect("over the per-request cap");
        assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(budget.in_use(), 0);
    }

    /// A body is charged as it arrives (in growth steps), not up to its cap; a tenant's
    /// bodies stop at its share while another tenant still gets the rest of the budget.
    /// (A declared length that never arrives: `tests/isolation.rs`.)
    #[tokio::test]
    async fn memory_is_charged_as_it_arrives_and_per_tenant() {
        let budget = Budget::new(1 << 20, 256 * 1024);
        let heavy = Some(TenantId(1));
        // Three bytes of an upload with no declared length: one growth step is charged.
        let (mut sender, trickle) = http_body_util::channel::Channel::<Bytes>::new(16);
        sender.send_data(Bytes::from_static(b"abc")).await.unwrap();
        let account = Account {
            budget: &budget,
            payer: heavy,
        };
        let pending = read(
            Body::new(trickle),
            1 << 20,
            Duration::from_secs(30),
            account,
        );
        tokio::pin!(pending);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut pending)
                .await
                .is_err(),
            "still waiting for the rest"
        );
        assert_eq!(
            budget.in_use(),
            GROWTH_BYTES_MIN,
            "one growth step, not the cap"
        );
        assert_eq!(budget.held_by(heavy), GROWTH_BYTES_MIN);
        drop(sender);
        let body = pending.await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(&body.bytes[..], b"abc");
        drop(body);
        assert_eq!(budget.in_use(), 0);

        // One tenant's share: 256 KiB. Its third 100 KiB body is refused...
        let account = |tenant| Account {
            budget: &budget,
            payer: Some(TenantId(tenant)),
        };
        let mut kept = Vec::new();
        for _ in 0..2 {
            kept.push(
                read(
                    Body::from(vec![1u8; 100 * 1024]),
                    1 << 20,
                    Duration::from_secs(1),
                    account(1),
                )
                .await
                .unwrap_or_else(|e| panic!("{e:?}")),
            );
        }
        let refused = read(
            Body::from(vec![1u8; 100 * 1024]),
            1 << 20,
            Duration::from_secs(1),
            account(1),
        )
        .await
        .err()
        .expect("over the tenant's share");
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            budget.held_by(Some(TenantId(1))),
            200 * 1024,
            "a refusal keeps nothing"
        );
        // ...while another tenant is served from the same budget.
        let other = read(
            Body::from(vec![1u8; 100 * 1024]),
            1 << 20,
            Duration::from_secs(1),
            account(2),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        drop((kept, other));
        assert_eq!(budget.in_use(), 0);
        assert_eq!(budget.held_by(Some(TenantId(1))), 0);
    }
}
