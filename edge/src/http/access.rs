//! The request log: one structured line per request (`tracing` target
//! `tessera::request`, at info), written by the router's `observe` layer after the answer
//! is made, with what the handlers learnt on the way: the tenant and key that pay, the
//! bytes received, the steps' durations, the result cache's verdict, the error code.
//!
//! Handlers note those facts in a task-local ([`note`]) instead of threading them
//! through every return type: a refusal after authentication (a quota's 429) still names
//! its tenant. Successful answers are sampled (`log.requests_sample`, a share from 0 to
//! 1, exact over any run of requests, not random); every error (4xx, 5xx) is logged, and
//! successful health, readiness and metrics probes never are (a load balancer's checks
//! would drown the rest).

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use tessera_crdt::directory::KeyId;
use tessera_crdt::TenantId;

use crate::http::error::ErrorCode;

/// What the handlers learnt about a request, for its log line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Facts {
    pub tenant: Option<TenantId>,
    pub key: Option<KeyId>,
    pub bytes_in: Option<u64>,
    pub steps: Option<Steps>,
    /// `hit` or `miss` for a signed URL's result cache.
    pub cache: Option<&'static str>,
}

/// Where a conversion's time went, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Steps {
    pub fetch_ms: Option<f64>,
    pub queue_ms: f64,
    pub decode_ms: f64,
    pub resize_ms: f64,
    pub encode_ms: f64,
}

tokio::task_local! {
    static FACTS: RefCell<Facts>;
}

/// Adds to the facts of the request being handled (nothing outside a request).
pub fn note(f: impl FnOnce(&mut Facts)) {
    let _ = FACTS.try_with(|facts| f(&mut facts.borrow_mut()));
}

/// Runs a request's handling with room for its facts; returns them with its answer.
pub async fn scope<F: Future>(handling: F) -> (F::Output, Facts) {
    FACTS
        .scope(RefCell::new(Facts::default()), async {
            let answer = handling.await;
            let facts = FACTS.with(|facts| *facts.borrow());
            (answer, facts)
        })
        .await
}

/// Which successful answers are logged: `share` of them, exactly (the `n`-th is logged
/// when `floor(n × share)` steps up), without a random source.
#[derive(Debug)]
pub struct Sampler {
    share: f64,
    seen: AtomicU64,
}

impl Sampler {
    pub fn new(share: f64) -> Sampler {
        Sampler {
            share: share.clamp(0.0, 1.0),
            seen: AtomicU64::new(0),
        }
    }

    /// Whether the next successful answer is logged.
    pub fn take(&self) -> bool {
        if self.share >= 1.0 {
            return true;
        }
        if self.share <= 0.0 {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.share).floor() > (n * self.share).floor()
    }
}

/// One request's line.
pub struct Line<'a> {
    pub method: &'a str,
    pub route: &'static str,
    pub status: u16,
    pub code: Option<ErrorCode>,
    pub request_id: Option<&'a str>,
    pub bytes_out: Option<u64>,
    pub total_ms: f64,
    pub facts: Facts,
}

/// Whether a request's line is written: errors always, probes never when they succeed,
/// the rest as sampled.
pub fn wanted(route: &str, status: u16, sampler: &Sampler) -> bool {
    if status >= 400 {
        return true;
    }
    if matches!(route, "/healthz" | "/readyz" | "/metrics") {
        return false;
    }
    sampler.take()
}

/// Writes the line.
pub fn write(line: &Line<'_>) {
    let facts = &line.facts;
    let steps = facts.steps;
    tracing::info!(
        target: "tessera::request",
        method = line.method,
        route = line.route,
        status = line.status,
        code = line.code.map(ErrorCode::as_str),
        request_id = line.request_id,
        tenant = facts.tenant.map(|t| t.0),
        key = facts.key.map(tracing::field::display),
        bytes_in = facts.bytes_in,
        bytes_out = line.bytes_out,
        ms = round(line.total_ms),
        fetch_ms = steps.and_then(|s| s.fetch_ms).map(round),
        queue_ms = steps.map(|s| round(s.queue_ms)),
        decode_ms = steps.map(|s| round(s.decode_ms)),
        resize_ms = steps.map(|s| round(s.resize_ms)),
        encode_ms = steps.map(|s| round(s.encode_ms)),
        cache = facts.cache,
        "request"
    );
}

/// Milliseconds to a tenth, for a readable line.
fn round(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_takes_its_share_exactly() {
        for (share, of_1000) in [(1.0, 1000), (0.0, 0), (0.25, 250), (0.1, 100), (0.333, 333)] {
            let sampler = Sampler::new(share);
            let taken = (0..1000).filter(|_| sampler.take()).count();
            assert_eq!(taken, of_1000, "{share}");
        }
    }

    #[test]
    fn errors_are_always_written_and_successful_probes_never() {
        let none = Sampler::new(0.0);
        assert!(wanted("/v1/resize", 429, &none));
        assert!(wanted("/healthz", 503, &none));
        assert!(!wanted("/v1/resize", 200, &none));
        let all = Sampler::new(1.0);
        assert!(!wanted("/healthz", 200, &all));
        assert!(!wanted("/metrics", 200, &all));
        assert!(wanted("/v1/img", 304, &all));
    }

    #[tokio::test]
    async fn facts_noted_inside_a_request_come_back_with_its_answer() {
        let (answer, facts) = scope(async {
            note(|f| f.tenant = Some(TenantId(7)));
            tokio::task::yield_now().await;
            note(|f| f.cache = Some("hit"));
            42
        })
        .await;
        assert_eq!(answer, 42);
        assert_eq!(facts.tenant, Some(TenantId(7)));
        assert_eq!(facts.cache, Some("hit"));
        // Outside a request, noting is a no-op.
        note(|f| f.tenant = Some(TenantId(8)));
    }
}
