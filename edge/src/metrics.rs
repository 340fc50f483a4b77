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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests_received: Family<RouteLabels, Counter>,
    pub requests_answered: Family<RouteStatusLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub requests_in_flight: Gauge,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub connections_overflow: Counter,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub stage_duration: Family<StageLabels, Histogram, fn() -> Histogram>,
    pub cpu_micros: Counter,
    pub shed: Family<ReasonLabels, Counter>,
    pub pool: PoolGauges,
    /// Quota admissions by outcome (admitted, exhausted, unavailable).
    pub quota_decisions: Family<OutcomeLabels, Counter>,
    /// Times a request slept waiting for a rights transfer.
    pub quota_waits: Counter,
    /// Requests refused by authentication, by error code.
    pub auth_refused: Family<CodeLabels, Counter>,
    /// Requests billed (usage durable before the answer).
    pub billed: Counter,
    /// Time a billed request waited for its group commit.
    pub commit_wait: Histogram,
    /// Every hold of the node's lock by the edge and its writer.
    pub node_lock_hold: Histogram,
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
        let connections_overflow = Counter::default();
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let stage_duration = Family::new_with_constructor(latency_histogram as fn() -> _);
        let cpu_micros = Counter::default();
        let shed = Family::<ReasonLabels, Counter>::default();
        let pool = PoolGauges::default();
        let quota_decisions = Family::<OutcomeLabels, Counter>::default();
        let quota_waits = Counter::default();
        let auth_refused = Family::<CodeLabels, Counter>::default();
        let billed = Counter::default();
        let commit_wait = latency_histogram();
        // 1 µs to ~0.5 s: a hold is microseconds; anything past a millisecond is a bug.
        let node_lock_hold = Histogram::new(exponential_buckets(1e-6, 2.0, 20));
        registry.register(
            "node_lock_hold_seconds",
            "How long each hold of the node's lock lasted (request path, admin API, writer; \
             not the transport)",
            node_lock_hold.clone(),
        );
        registry.register(
            "quota_decisions",
            "Quota decisions by outcome: admitted_locally, admitted_after_transfer (waited for rights from a peer), exhausted, unavailable",
            quota_decisions.clone(),
        );
        registry.register(
            "quota_transfer_waits",
            "Waits of a request for escrow rights from a peer (each ends when rights arrive or the wait is over)",
            quota_waits.clone(),
        );
        registry.register(
            "auth_refused",
            "Requests refused by authentication or authorization, by error code",
            auth_refused.clone(),
        );
        registry.register(
            "billed_requests",
            "Requests whose usage was made durable before they were answered",
            billed.clone(),
        );
        registry.register(
            "store_commit_wait_seconds",
            "Time a billed request waited for the group commit of its usage",
            commit_wait.clone(),
        );
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
            "Connections closed at accept: over a connection cap, with the overflow lane full",
            connections_refused.clone(),
        );
        registry.register(
            "http_connections_overflow",
            "Connections over a cap (per client or the node's) answered once in the overflow lane",
            connections_overflow.clone(),
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
        registry.register(
            "pool_work_past_deadline_seconds",
            "Worker time a job used after its deadline (cancelled at a check point, or \
             finished too late to be answered)",
            pool.past_deadline.clone(),
        );
        Self {
            registry,
            requests_received,
            requests_answered,
            request_duration,
            requests_in_flight,
            connections_open,
            connections_refused,
            connections_overflow,
            bytes_in,
            bytes_out,
            stage_duration,
            cpu_micros,
            shed,
            pool,
            quota_decisions,
            quota_waits,
            auth_refused,
            billed,
            commit_wait,
            node_lock_hold,
        }
    }

    /// The whole registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The registry plus the replication metrics read from the protocol core and the
    /// transport at scrape time (they keep their own counters; copying them into
    /// registry counters on every change would put metric updates inside the core).
    pub fn render_with(&self, sync: &SyncSnapshot) -> String {
        let mut out = self.render();
        let eof = out.rfind("# EOF").unwrap_or(out.len());
        out.truncate(eof);
        sync.encode(&mut out);
        out.push_str("# EOF\n");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The replication figures one scrape reports.
pub struct SyncSnapshot {
    pub stats: tessera_sync::Stats,
    pub net: Option<tessera_sync::net::NetStats>,
    /// Per peer: (node id, connected, last heard age in ms, last lag in ms).
    pub peers: Vec<(String, bool, Option<u64>, Option<u64>)>,
    pub store_failed: bool,
}

impl SyncSnapshot {
    fn encode(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP tessera_store_failed 1 when a store commit failed and the node stopped taking billable work");
        let _ = writeln!(out, "# TYPE tessera_store_failed gauge");
        let _ = writeln!(out, "tessera_store_failed {}", u8::from(self.store_failed));
        let stats = &self.stats;
        let counters: [(&str, &str, u64); 12] = [
            (
                "sync_messages_refused",
                "Messages refused by validation (changed nothing)",
                stats.messages_refused,
            ),
            (
                "sync_ledger_behind",
                "Member tables that showed a peer holding increments every push of which missed this node; each pulled them",
                stats.ledger_behind,
            ),
            (
                "sync_messages_stale",
                "Valid messages that brought nothing new (duplicates, replays)",
                stats.messages_stale,
            ),
            (
                "sync_counters_oversize",
                "Escrow counters not sent because one alone is over the message byte limit (an error)",
                stats.counters_oversize,
            ),
            (
                "sync_ledger_gaps",
                "Ledger pushes that started beyond this replica (pushes lost before them); each pulled the gap",
                stats.ledger_gaps,
            ),
            (
                "sync_replies_unmatched",
                "Rights replies matching no request in flight (late or replayed)",
                stats.replies_unmatched,
            ),
            (
                "sync_rights_requests",
                "Escrow rights requests sent",
                stats.rights_requests_sent,
            ),
            (
                "sync_rights_retries",
                "Escrow rights requests that were retries",
                stats.rights_retries,
            ),
            (
                "sync_rights_given",
                "Escrow rights given to peers",
                stats.rights_given,
            ),
            (
                "sync_rights_received",
                "Escrow rights received from peers",
                stats.rights_received,
            ),
            (
                "sync_rights_spread_to_demand",
                "Escrow rights this node, as a tenant's home, gave members for demand before they asked",
                stats.rights_spread_to_demand,
            ),
            (
                "sync_rights_handed_back",
                "Escrow rights this node handed back to a tenant's home after going idle",
                stats.rights_handed_back,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(out, "# HELP tessera_{name} {help}");
            let _ = writeln!(out, "# TYPE tessera_{name} counter");
            let _ = writeln!(out, "tessera_{name}_total {value}");
        }
        let lag = &stats.lag;
        let _ = writeln!(out, "# HELP tessera_sync_replication_lag_seconds Time from a peer's increment to its arrival here (ledger pushes; clock skew included)");
        let _ = writeln!(out, "# TYPE tessera_sync_replication_lag_seconds histogram");
        let mut cumulative = 0;
        for (i, bound) in tessera_sync::LAG_BUCKETS_MS.iter().enumerate() {
            cumulative += lag.counts[i];
            let _ = writeln!(
                out,
                "tessera_sync_replication_lag_seconds_bucket{{le=\"{}\"}} {cumulative}",
                *bound as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "tessera_sync_replication_lag_seconds_bucket{{le=\"+Inf\"}} {}",
            lag.count
        );
        let _ = writeln!(
            out,
            "tessera_sync_replication_lag_seconds_sum {}",
            lag.sum_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "tessera_sync_replication_lag_seconds_count {}",
            lag.count
        );
        let _ = writeln!(out, "# HELP tessera_sync_peer_last_heard_age_seconds Time since a message from the peer last arrived");
        let _ = writeln!(out, "# TYPE tessera_sync_peer_last_heard_age_seconds gauge");
        for (peer, _, age, _) in &self.peers {
            if let Some(age) = age {
                let _ = writeln!(
                    out,
                    "tessera_sync_peer_last_heard_age_seconds{{peer=\"{peer}\"}} {}",
                    *age as f64 / 1000.0
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP tessera_sync_peer_connected 1 when the peer is connected"
        );
        let _ = writeln!(out, "# TYPE tessera_sync_peer_connected gauge");
        for (peer, connected, _, _) in &self.peers {
            let _ = writeln!(
                out,
                "tessera_sync_peer_connected{{peer=\"{peer}\"}} {}",
                u8::from(*connected)
            );
        }
        let Some(net) = &self.net else {
            return;
        };
        let _ = writeln!(
            out,
            "# HELP tessera_sync_peers_connected Peers with an open connection"
        );
        let _ = writeln!(out, "# TYPE tessera_sync_peers_connected gauge");
        let _ = writeln!(out, "tessera_sync_peers_connected {}", net.peers_connected);
        let _ = writeln!(out, "# HELP tessera_sync_connections_open Replication connections the transport holds (including ones being closed)");
        let _ = writeln!(out, "# TYPE tessera_sync_connections_open gauge");
        let _ = writeln!(
            out,
            "tessera_sync_connections_open {}",
            net.connections_open
        );
        let _ = writeln!(out, "# HELP tessera_sync_connections_dead Replication connections closed because they answered no ping within cluster.liveness_timeout_ms");
        let _ = writeln!(out, "# TYPE tessera_sync_connections_dead counter");
        let _ = writeln!(
            out,
            "tessera_sync_connections_dead_total {}",
            net.connections_dead
        );
        for (direction, by_kind) in [("sent", &net.sent), ("received", &net.received)] {
            let _ = writeln!(out, "# HELP tessera_sync_messages_{direction} Replication messages {direction}, by kind");
            let _ = writeln!(out, "# TYPE tessera_sync_messages_{direction} counter");
            for (kind, (messages, _)) in by_kind.iter() {
                let _ = writeln!(
                    out,
                    "tessera_sync_messages_{direction}_total{{kind=\"{kind}\"}} {messages}"
                );
            }
            let _ = writeln!(
                out,
                "# HELP tessera_sync_bytes_{direction} Replication bytes {direction}, by kind"
            );
            let _ = writeln!(out, "# TYPE tessera_sync_bytes_{direction} counter");
            for (kind, (_, bytes)) in by_kind.iter() {
                let _ = writeln!(
                    out,
                    "tessera_sync_bytes_{direction}_total{{kind=\"{kind}\"}} {bytes}"
                );
            }
        }
        for (direction, index) in [("sent", 0), ("received", 1)] {
            let _ = writeln!(out, "# HELP tessera_sync_peer_messages_{direction} Replication messages {direction}, by peer");
            let _ = writeln!(out, "# TYPE tessera_sync_peer_messages_{direction} counter");
            for (peer, counts) in &net.per_peer {
                let value = if index == 0 { counts.0 } else { counts.1 };
                let _ = writeln!(
                    out,
                    "tessera_sync_peer_messages_{direction}_total{{peer=\"{peer}\"}} {value}"
                );
            }
        }
        let _ = writeln!(out, "# HELP tessera_sync_refused_frames Frames refused by the transport (malformed, oversized, wrong version)");
        let _ = writeln!(out, "# TYPE tessera_sync_refused_frames counter");
        let _ = writeln!(
            out,
            "tessera_sync_refused_frames_total {}",
            net.refused_frames
        );
        let _ = writeln!(out, "# HELP tessera_sync_disconnected_for_garbage Peers disconnected for sending refused frames");
        let _ = writeln!(out, "# TYPE tessera_sync_disconnected_for_garbage counter");
        let _ = writeln!(
            out,
            "tessera_sync_disconnected_for_garbage_total {}",
            net.disconnected_for_garbage
        );
        let _ = writeln!(out, "# HELP tessera_sync_held_back Output batches dropped because the store did not make them durable in time");
        let _ = writeln!(out, "# TYPE tessera_sync_held_back counter");
        let _ = writeln!(out, "tessera_sync_held_back_total {}", net.held_back);
        let _ = writeln!(out, "# HELP tessera_sync_messages_oversize Messages not sent for being over the frame limit (an error: the core's and the transport's caps disagree)");
        let _ = writeln!(out, "# TYPE tessera_sync_messages_oversize counter");
        let _ = writeln!(
            out,
            "tessera_sync_messages_oversize_total {}",
            net.messages_oversize
        );
        let admission = &net.admission;
        let _ = writeln!(out, "# HELP tessera_sync_inbound_denied Inbound replication connections refused at admission, by reason");
        let _ = writeln!(out, "# TYPE tessera_sync_inbound_denied counter");
        for (reason, count) in [
            ("backoff", admission.denied_backoff),
            ("pending_per_ip", admission.denied_pending_per_ip),
            ("established_per_ip", admission.denied_established_per_ip),
        ] {
            let _ = writeln!(
                out,
                "tessera_sync_inbound_denied_total{{reason=\"{reason}\"}} {count}"
            );
        }
        for (name, help, value) in [
            (
                "handshake_failures",
                "Inbound handshakes that failed or timed out (no cluster key, garbage, silence)",
                admission.handshake_failures,
            ),
            (
                "handshake_backoffs",
                "Times an address was put in backoff for failed handshakes",
                admission.backoffs,
            ),
        ] {
            let _ = writeln!(out, "# HELP tessera_sync_{name} {help}");
            let _ = writeln!(out, "# TYPE tessera_sync_{name} counter");
            let _ = writeln!(out, "tessera_sync_{name}_total {value}");
        }
        let _ = writeln!(
            out,
            "# HELP tessera_sync_admission_addresses Addresses with a handshake-failure record"
        );
        let _ = writeln!(out, "# TYPE tessera_sync_admission_addresses gauge");
        let _ = writeln!(
            out,
            "tessera_sync_admission_addresses {}",
            admission.addresses_tracked
        );
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
