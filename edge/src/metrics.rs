//! Prometheus metrics of the node, in the text exposition format at `/metrics`.
//!
//! Latencies are histograms, not averages, so percentiles can be read off them; requests
//! are counted twice — when received and when answered, by status — so yield
//! (answered / received) is a simple ratio. All metrics live in one [`Metrics`] value that
//! the handlers share; the pool's gauges are handed to the pool so it keeps them current.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::pool::PoolGauges;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatusLabels {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabels {
    pub stage: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests_received: Family<RouteLabels, Counter>,
    pub requests_answered: Family<RouteStatusLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub requests_in_flight: Gauge,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub stage_duration: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub cpu_micros: Counter,
    pub shed: Family<ReasonLabels, Counter>,
    pub pool: PoolGauges,
}

/// 100 µs .. ~105 s in 21 doubling steps: covers a 304 answer and an AVIF encode alike.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 21))
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let requests_received = Family::<RouteLabels, Counter>::default();
        let requests_answered = Family::<RouteStatusLabels, Counter>::default();
        let request_duration = Family::new_with_constructor(latency_histogram as fn() -> _);
        let requests_in_flight = Gauge::default();
        let connections_open = Gauge::default();
        let connections_refused = Counter::default();
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let stage_duration = Family::new_with_constructor(latency_histogram as fn() -> _);
        let cpu_micros = Counter::default();
        let shed = Family::<ReasonLabels, Counter>::default();
        let pool = PoolGauges::default();
        registry.register(
            "http_requests_received",
            "HTTP requests whose head was received, by route",
            requests_received.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests_answered.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from request head received to response head ready, by route",
            request_duration.clone(),
        );
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being handled now",
            requests_in_flight.clone(),
        );
        registry.register(
            "http_connections_open",
            "Open client connections",
            connections_open.clone(),
        );
        registry.register(
            "http_connections_refused",
            "Connections closed at accept because connections_max was reached",
            connections_refused.clone(),
        );
        registry.register(
            "resize_bytes_in",
            "Request body bytes of resize requests that were processed",
            bytes_in.clone(),
        );
        registry.register(
            "resize_bytes_out",
            "Encoded image bytes sent in successful resize responses",
            bytes_out.clone(),
        );
        registry.register(
            "resize_stage_duration_seconds",
            "Time spent per resize stage (queue_wait, decode, resize, encode)",
            stage_duration.clone(),
        );
        registry.register(
            "resize_cpu_micros",
            "Thread CPU time spent in the resize pipeline, in microseconds",
            cpu_micros.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests refused before any work because of overload, by reason",
            shed.clone(),
        );
        registry.register(
            "pool_queue_depth",
            "Resize jobs waiting for a worker",
            pool.queue_depth.clone(),
        );
        registry.register(
            "pool_busy_workers",
            "Resize workers running a job",
            pool.busy_workers.clone(),
        );
        Self {
            registry,
            requests_received,
            requests_answered,
            request_duration,
            requests_in_flight,
            connections_open,
            connections_refused,
            bytes_in,
            bytes_out,
            stage_duration,
            cpu_micros,
            shed,
            pool,
        }
    }

    /// The whole registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_prefix() {
        let metrics = Metrics::new();
        metrics
            .requests_answered
            .get_or_create(&RouteStatusLabels {
                route: "/v1/resize",
                status: 200,
            })
            .inc();
        metrics
            .request_duration
            .get_or_create(&RouteLabels {
                route: "/v1/resize",
            })
            .observe(0.01);
        let text = metrics.render();
        assert!(
            text.contains("tessera_http_requests_total{route=\"/v1/resize\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tessera_http_request_duration_seconds_bucket"),
            "{text}"
        );
        assert!(text.contains("tessera_pool_queue_depth"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
