//! Per-tenant request-rate limit: a token bucket per tenant, local to the node.
//!
//! Separate from the hard quota (which is cluster-wide and exact, by escrow): this one
//! smooths bursts and protects the node, so it needs no coordination — each node allows
//! `requests_per_s` per tenant, refilled continuously, with `burst` in reserve. A refusal
//! is a 429 `rate_limited` whose `Retry-After` says when a token will be there.
//!
//! Memory is bounded: at most `tenants_max` buckets; when full, buckets that have refilled
//! completely (indistinguishable from a fresh one) are dropped first, and if none has,
//! the request is limited rather than the table grown.

use std::sync::Mutex;
use std::time::Instant;

use tessera_crdt::{IdHashMap, TenantId};

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    requests_per_s: f64,
    burst: f64,
    tenants_max: usize,
    /// Keyed by authenticated tenants only (ids the directory assigned), so the fast
    /// unkeyed id hash is safe here.
    buckets: Mutex<IdHashMap<TenantId, Bucket>>,
}

impl RateLimiter {
    /// `requests_per_s == 0` disables the limit.
    pub fn new(requests_per_s: f64, burst: f64, tenants_max: usize) -> RateLimiter {
        RateLimiter {
            requests_per_s,
            burst: burst.max(1.0),
            tenants_max: tenants_max.max(1),
            buckets: Mutex::new(IdHashMap::default()),
        }
    }

    /// Takes a token for `tenant` at `now`; `Err(retry_after_s)` when there is none.
    pub fn check(&self, tenant: TenantId, now: Instant) -> Result<(), u32> {
        if self.requests_per_s <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // The common case, a known tenant: one probe.
        if let Some(bucket) = buckets.get_mut(&tenant) {
            return self.take(bucket, now);
        }
        if buckets.len() >= self.tenants_max {
            let (rate, burst) = (self.requests_per_s, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
            if buckets.len() >= self.tenants_max {
                return Err(1);
            }
        }
        let bucket = buckets.entry(tenant).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.take(bucket, now)
    }

    fn take(&self, bucket: &mut Bucket, now: Instant) -> Result<(), u32> {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.requests_per_s).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait_s = (1.0 - bucket.tokens) / self.requests_per_s;
            Err(wait_s.ceil().max(1.0) as u32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::new(2.0, 3.0, 10);
        let t0 = Instant::now();
        let a = TenantId(1);
        for _ in 0..3 {
            assert!(limiter.check(a, t0).is_ok());
        }
        assert_eq!(limiter.check(a, t0), Err(1));
        // Another tenant has its own bucket.
        assert!(limiter.check(TenantId(2), t0).is_ok());
        // Half a second refills one token at 2/s.
        assert!(limiter.check(a, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.check(a, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn disabled_when_rate_is_zero() {
        let limiter = RateLimiter::new(0.0, 1.0, 1);
        for t in 0..100 {
            assert!(limiter.check(TenantId(t), Instant::now()).is_ok());
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let limiter = RateLimiter::new(1.0, 1.0, 2);
        let t0 = Instant::now();
        assert!(limiter.check(TenantId(1), t0).is_ok());
        assert!(limiter.check(TenantId(2), t0).is_ok());
        // Full and nobody refilled: the newcomer is limited, the table does not grow.
        assert!(limiter.check(TenantId(3), t0).is_err());
        // Later, refilled buckets make room.
        assert!(limiter
            .check(TenantId(3), t0 + Duration::from_secs(5))
            .is_ok());
        assert!(limiter.buckets.lock().unwrap().len() <= 2);
    }
}
