//! Reading a request body under three bounds: its size (`http.body_bytes_max`, declared
//! or streamed, chunked or not), its time (`http.body_read_timeout_ms`), and the bytes
//! all requests together may hold in memory (`http.buffered_bytes_max`).
//!
//! The third bound is what keeps memory flat under overload: without it, a burst of
//! connections each uploading a large body is buffered in full before the pool gets the
//! chance to refuse it. The budget is a semaphore counted in bytes; a body reserves its
//! declared length up front (or each chunk as it arrives, when there is no length), and
//! a request that cannot reserve is refused with 503 at once. The reservation travels
//! with the bytes ([`Buffered`]) and is returned when the request is answered.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// A body held in memory, with its share of the memory budget.
pub struct Buffered {
    pub bytes: Bytes,
    _reservation: OwnedSemaphorePermit,
}

/// Shared budget of buffered body bytes.
pub struct Budget {
    semaphore: Arc<Semaphore>,
    bytes_max: usize,
}

impl Budget {
    pub fn new(bytes_max: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(bytes_max)),
            bytes_max,
        }
    }

    /// Bytes currently reserved by bodies in memory.
    pub fn in_use(&self) -> usize {
        self.bytes_max - self.semaphore.available_permits()
    }

    fn reserve(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        u32::try_from(bytes)
            .ok()
            .and_then(|n| self.semaphore.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(|| {
                ApiError::overloaded(
                    "overloaded",
                    "too many request bodies are in memory; retry later",
                    1,
                )
            })
    }
}

/// Reads `body` whole, within `bytes_max` and `timeout`, reserving from `budget` as it goes.
/// The declared length is hyper's (from a validated `Content-Length`), `None` when chunked.
pub async fn read(
    body: Body,
    bytes_max: usize,
    timeout: Duration,
    budget: &Budget,
) -> Result<Buffered, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the limit of {bytes_max} bytes"),
        )
    };
    let declared = axum::body::HttpBody::size_hint(&body).exact();
    if declared.is_some_and(|n| n > bytes_max as u64) {
        return Err(too_large());
    }
    let declared = declared.unwrap_or(0) as usize;
    let mut reservation = budget.reserve(declared)?;
    let mut reserved = declared;
    let mut buffer = BytesMut::with_capacity(declared);
    let mut body = body;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "body_read_failed",
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
            if total > reserved {
                reservation.merge(budget.reserve(total - reserved)?);
                reserved = total;
            }
            buffer.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, reading).await {
        Ok(Ok(())) => Ok(Buffered {
            bytes: buffer.freeze(),
            _reservation: reservation,
        }),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
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

    #[tokio::test]
    async fn budget_is_reserved_and_returned() {
        let budget = Budget::new(1_000);
        let body = read(
            Body::from(vec![7u8; 600]),
            800,
            Duration::from_secs(1),
            &budget,
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(body.bytes.len(), 600);
        assert_eq!(budget.in_use(), 600);
        let refused = read(
            Body::from(vec![7u8; 600]),
            800,
            Duration::from_secs(1),
            &budget,
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
            &budget,
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
            &budget,
        )
        .await
        .err()
        .expect("over the per-request cap");
        assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(budget.in_use(), 0);
    }
}
