//! Prometheus metrics of the node at `/metrics`: OpenMetrics text for a scraper that asks
//! for it (`Accept: application/openmetrics-text`, as Prometheus does), the text format
//! 0.0.4 for any other ([`to_text_004`]).
//!
//! Names are in base units with the conventional suffixes (`_seconds`, `_bytes`,
//! `_total`); families with a closed set of labels (routes, stages, shed reasons, quota
//! outcomes, cache outcomes, refusal codes, TLS handshake failures) are created at start, so a rate reads 0, not
//! "no data", before the first event. `tessera_build_info` names the version;
//! `process_*` (CPU, memory, file descriptors, start time) are read from `/proc` at each
//! scrape, by the names every Prometheus client gives them.
//!
//! Latencies are histograms, not averages, so percentiles can be read off them; requests
//! are counted twice — when received and when answered, by status — so yield
//! (answered / received) is a simple ratio. All metrics live in one [`Metrics`] value that
//! the handlers share; the pool's gauges are handed to the pool so it keeps them current.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

use crate::work::pool::PoolGauges;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Every route label `observe` gives (the router's templates, `/admin`, `unmatched`).
pub const ROUTES: [&str; 12] = [
    "/v1/resize",
    "/v1/img",
    "/ip",
    "/v1/info",
    "/v1/info/signed",
    "/console",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/admin",
    "unmatched",
];
const STAGES: [&str; 4] = ["queue_wait", "decode", "resize", "encode"];
const SHED_REASONS: [&str; 6] = [
    "queue_full",
    "deadline_unreachable",
    "too_costly",
    "shutting_down",
    "rate_limited",
    "deadline_exceeded",
];
const QUOTA_OUTCOMES: [&str; 4] = [
    "admitted_locally",
    "admitted_after_transfer",
    "exhausted",
    "unavailable",
];
const CACHE_OUTCOMES: [&str; 2] = ["hit", "miss"];
/// Every reason of [`crate::http::tls::HandshakeFailure::reason`].
const TLS_HANDSHAKE_FAILURES: [&str; 2] = ["timeout", "error"];
const AUTH_CODES: [&str; 7] = [
    "missing_key",
    "malformed_key",
    "invalid_key",
    "key_revoked",
    "insufficient_scope",
    "tenant_suspended",
    "tenant_deleted",
];

pub struct Metrics {
    registry: Registry,
    /// `process_*`, without the node's prefix (their names are a convention).
    process: Registry,
    pub requests_received: Family<RouteLabels, Counter>,
    pub requests_answered: Family<RouteStatusLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub requests_in_flight: Gauge,
    pub connections_open: Gauge,
    pub connections_refused: Counter,
    pub connections_overflow: Counter,
    /// TLS handshakes on the listener that failed, by reason (timeout, error).
    pub tls_handshake_failures: Family<ReasonLabels, Counter>,
    pub bytes_in: Counter,
    pub bytes_out: Counter,
    pub stage_duration: Family<StageLabels, Histogram, fn() -> Histogram>,
    /// Thread CPU time of the resize pipeline (`tessera_resize_cpu_seconds_total`).
    pub cpu_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Signed-URL result cache lookups, by outcome (hit, miss).
    pub cache_lookups: Family<OutcomeLabels, Counter>,
    /// Successful origin fetches, from the first connection to the last body byte.
    pub fetch_duration: Histogram,
    /// Origin fetches that failed, by error code.
    pub fetch_errors: Family<CodeLabels, Counter>,
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
        let tls_handshake_failures = Family::<ReasonLabels, Counter>::default();
        let bytes_in = Counter::default();
        let bytes_out = Counter::default();
        let stage_duration = Family::new_with_constructor(latency_histogram as fn() -> _);
        let cpu_seconds = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        let cache_lookups = Family::<OutcomeLabels, Counter>::default();
        let fetch_duration = latency_histogram();
        let fetch_errors = Family::<CodeLabels, Counter>::default();
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running build: 1, with its version as a label",
            build_info,
        );
        registry.register(
            "result_cache_lookups",
            "Signed-URL result cache lookups, by outcome (hit: served without fetch or \
             conversion)",
            cache_lookups.clone(),
        );
        registry.register(
            "fetch_duration_seconds",
            "Successful origin fetches of signed URLs, from the first connection to the \
             last body byte",
            fetch_duration.clone(),
        );
        registry.register(
            "fetch_errors",
            "Origin fetches of signed URLs that failed, by error code",
            fetch_errors.clone(),
        );
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
            "tls_handshake_failures",
            "TLS handshakes on the HTTP listener that failed, by reason (timeout: not \
             finished within http.tls_handshake_timeout_ms; error: refused or cut)",
            tls_handshake_failures.clone(),
        );
        registry.register_with_unit(
            "resize_input",
            "Source image bytes of the resize requests that were processed",
            Unit::Bytes,
            bytes_in.clone(),
        );
        registry.register_with_unit(
            "resize_output",
            "Encoded image bytes of successful resize responses",
            Unit::Bytes,
            bytes_out.clone(),
        );
        registry.register(
            "resize_stage_duration_seconds",
            "Time spent per resize stage (queue_wait, decode, resize, encode)",
            stage_duration.clone(),
        );
        registry.register_with_unit(
            "resize_cpu",
            "Thread CPU time spent in the resize pipeline",
            Unit::Seconds,
            cpu_seconds.clone(),
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
        let mut process = Registry::default();
        process.register_collector(Box::new(Process));
        let metrics = Self {
            registry,
            process,
            requests_received,
            requests_answered,
            request_duration,
            requests_in_flight,
            connections_open,
            connections_refused,
            connections_overflow,
            tls_handshake_failures,
            bytes_in,
            bytes_out,
            stage_duration,
            cpu_seconds,
            cache_lookups,
            fetch_duration,
            fetch_errors,
            shed,
            pool,
            quota_decisions,
            quota_waits,
            auth_refused,
            billed,
            commit_wait,
            node_lock_hold,
        };
        metrics.create_known_series();
        metrics
    }

    /// Creates the series of every closed label set at 0, so they are scraped before
    /// their first event (see the module doc).
    fn create_known_series(&self) {
        for route in ROUTES {
            drop(self.requests_received.get_or_create(&RouteLabels { route }));
            drop(self.request_duration.get_or_create(&RouteLabels { route }));
            let ok = RouteStatusLabels { route, status: 200 };
            drop(self.requests_answered.get_or_create(&ok));
        }
        for stage in STAGES {
            drop(self.stage_duration.get_or_create(&StageLabels { stage }));
        }
        for reason in SHED_REASONS {
            drop(self.shed.get_or_create(&ReasonLabels { reason }));
        }
        for outcome in QUOTA_OUTCOMES {
            drop(
                self.quota_decisions
                    .get_or_create(&OutcomeLabels { outcome }),
            );
        }
        for outcome in CACHE_OUTCOMES {
            drop(self.cache_lookups.get_or_create(&OutcomeLabels { outcome }));
        }
        for code in AUTH_CODES {
            drop(self.auth_refused.get_or_create(&CodeLabels { code }));
        }
        for reason in TLS_HANDSHAKE_FAILURES {
            drop(
                self.tls_handshake_failures
                    .get_or_create(&ReasonLabels { reason }),
            );
        }
    }

    /// The whole registry as OpenMetrics text, `process_*` included.
    pub fn render(&self) -> String {
        use prometheus_client::encoding::text;
        let mut out = String::with_capacity(16 * 1024);
        text::encode_registry(&mut out, &self.registry).expect("writing to a String cannot fail");
        text::encode_registry(&mut out, &self.process).expect("writing to a String cannot fail");
        text::encode_eof(&mut out).expect("writing to a String cannot fail");
        out
    }

    /// Adds the replication metrics: figures the protocol core and the transport keep
    /// themselves, read by `read` at each scrape (copying them into registry counters on
    /// every change would put metric updates inside the core, which knows no registry).
    pub fn register_replication(
        &mut self,
        read: impl Fn() -> SyncSnapshot + Send + Sync + 'static,
    ) {
        self.registry.register_collector(Box::new(Replication {
            read: Box::new(read),
        }));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The process's figures from `/proc/self` (Linux), at each scrape: CPU seconds, resident
/// and virtual memory, open and maximum file descriptors, threads, start time. Nothing is
/// reported where `/proc` cannot be read.
#[derive(Debug)]
struct Process;

/// What `/proc/self/stat` says, in base units.
struct ProcStat {
    cpu_seconds: f64,
    virtual_bytes: u64,
    resident_bytes: u64,
    threads: u64,
    start_seconds: f64,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name is in parentheses and may hold spaces: fields start after it.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
        // Fields 3.. of proc(5), so index = field number - 3.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        // SAFETY: sysconf has no preconditions.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let (ticks, page) = (u64::try_from(ticks).ok()?, u64::try_from(page).ok()?);
        let boot_seconds: u64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())?;
        Some(ProcStat {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks as f64,
            virtual_bytes: field(23)?,
            resident_bytes: field(24)? * page,
            threads: field(20)?,
            start_seconds: boot_seconds as f64 + field(22)? as f64 / ticks as f64,
        })
    }
}

/// The soft limit on open files (`/proc/self/limits`).
fn max_fds() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(stat) = ProcStat::read() else {
            return Ok(());
        };
        encoder
            .encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time of the process",
                None,
                MetricType::Counter,
            )?
            .encode_counter::<NoLabelSet, _, u64>(&stat.cpu_seconds, None)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory of the process",
                stat.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory of the process",
                stat.virtual_bytes as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process, seconds since the Unix epoch",
                stat.start_seconds,
            ),
            (
                "process_threads",
                "Threads of the process",
                stat.threads as f64,
            ),
        ];
        for (name, help, value) in gauges {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)?;
        }
        if let Ok(open) = std::fs::read_dir("/proc/self/fd") {
            encoder
                .encode_descriptor(
                    "process_open_fds",
                    "Open file descriptors of the process",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&(open.count() as i64))?;
        }
        if let Some(max) = max_fds() {
            encoder
                .encode_descriptor(
                    "process_max_fds",
                    "Limit on open file descriptors of the process",
                    None,
                    MetricType::Gauge,
                )?
                .encode_gauge(&(max as i64))?;
        }
        Ok(())
    }
}

/// OpenMetrics text (what [`Metrics::render`] writes) as the Prometheus text format 0.0.4,
/// for scrapers that do not ask for OpenMetrics: no `# EOF` or `# UNIT` line, and a
/// counter's `# HELP` and `# TYPE` name its samples (`…_total`), as 0.0.4 wants.
pub fn to_text_004(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match header {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = match tail {
                    "info" | "stateset" | "gaugehistogram" | "unknown" => "untyped",
                    other => other,
                };
                if counters.contains(name) {
                    out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                } else {
                    out.push_str(&format!("{prefix}{name} {tail}\n"));
                }
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The replication figures one scrape reports.
pub struct SyncSnapshot {
    pub stats: tessera_sync::Stats,
    pub net: Option<tessera_sync::net::NetStats>,
    /// Per peer: (node id, connected, last heard age in ms, last lag in ms).
    pub peers: Vec<(String, bool, Option<u64>, Option<u64>)>,
    pub store_failed: bool,
}

/// The replication metrics as a registry collector (see [`Metrics::register_replication`]).
struct Replication {
    read: Box<dyn Fn() -> SyncSnapshot + Send + Sync>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Replication")
    }
}

impl Collector for Replication {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        (self.read)().encode(&mut encoder)
    }
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Fmt {
    encoder
        .encode_descriptor(name, help, None, MetricType::Counter)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Fmt {
    encoder
        .encode_descriptor(name, help, None, MetricType::Gauge)?
        .encode_gauge(&value)
}

/// A counter family with one label, `label`, from `(label value, count)` pairs.
fn counters_by<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl IntoIterator<Item = (String, u64)> + 'a,
) -> Fmt {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value_label, count) in values {
        family
            .encode_family(&[(label, value_label.as_str())])?
            .encode_counter::<NoLabelSet, _, u64>(&count, None)?;
    }
    Ok(())
}

type Fmt = std::fmt::Result;

impl SyncSnapshot {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> Fmt {
        gauge(
            encoder,
            "store_failed",
            "1 when a store commit failed and the node stopped taking billable work",
            i64::from(self.store_failed),
        )?;
        let stats = &self.stats;
        let counters: [(&str, &str, u64); 13] = [
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
                "sync_directory_passed_on",
                "Peers' directory ops an anti-entropy exchange brought here, passed on to the other peers",
                stats.directory_passed_on,
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
            counter(encoder, name, help, value)?;
        }
        let lag = &stats.lag;
        // Per bucket, not cumulative (the encoder sums them); the last is the overflow,
        // which the encoder writes as `+Inf` when its bound is infinite.
        let buckets: Vec<(f64, u64)> = tessera_sync::LAG_BUCKETS_MS
            .iter()
            .map(|bound_ms| *bound_ms as f64 / 1000.0)
            .chain([f64::INFINITY])
            .zip(lag.counts)
            .collect();
        encoder
            .encode_descriptor(
                "sync_replication_lag",
                "Time from a peer's increment to its arrival here (ledger pushes; clock skew included)",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(lag.sum_ms as f64 / 1000.0, lag.count, &buckets, None)?;
        let mut heard = encoder.encode_descriptor(
            "sync_peer_last_heard_age",
            "Time since a message from the peer last arrived",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for (peer, _, age, _) in &self.peers {
            if let Some(age) = age {
                heard
                    .encode_family(&[("peer", peer.as_str())])?
                    .encode_gauge(&(*age as f64 / 1000.0))?;
            }
        }
        let mut connected = encoder.encode_descriptor(
            "sync_peer_connected",
            "1 when the peer is connected",
            None,
            MetricType::Gauge,
        )?;
        for (peer, is_connected, _, _) in &self.peers {
            connected
                .encode_family(&[("peer", peer.as_str())])?
                .encode_gauge(&i64::from(*is_connected))?;
        }
        let Some(net) = &self.net else {
            return Ok(());
        };
        gauge(
            encoder,
            "sync_peers_connected",
            "Peers with an open connection",
            net.peers_connected as i64,
        )?;
        gauge(
            encoder,
            "sync_connections_open",
            "Replication connections the transport holds (including ones being closed)",
            i64::from(net.connections_open),
        )?;
        counter(
            encoder,
            "sync_connections_dead",
            "Replication connections closed because they answered no ping within cluster.liveness_timeout_ms",
            net.connections_dead,
        )?;
        for (direction, by_kind) in [("sent", &net.sent), ("received", &net.received)] {
            counters_by(
                encoder,
                &format!("sync_messages_{direction}"),
                &format!("Replication messages {direction}, by kind"),
                "kind",
                by_kind
                    .iter()
                    .map(|(kind, (messages, _))| (kind.to_string(), *messages)),
            )?;
            counters_by(
                encoder,
                &format!("sync_bytes_{direction}"),
                &format!("Replication bytes {direction}, by kind"),
                "kind",
                by_kind
                    .iter()
                    .map(|(kind, (_, bytes))| (kind.to_string(), *bytes)),
            )?;
        }
        for (direction, index) in [("sent", 0), ("received", 1)] {
            counters_by(
                encoder,
                &format!("sync_peer_messages_{direction}"),
                &format!("Replication messages {direction}, by peer"),
                "peer",
                net.per_peer.iter().map(|(peer, counts)| {
                    (
                        peer.to_string(),
                        if index == 0 { counts.0 } else { counts.1 },
                    )
                }),
            )?;
        }
        counter(
            encoder,
            "sync_refused_frames",
            "Frames refused by the transport (malformed, oversized, wrong version)",
            net.refused_frames,
        )?;
        counter(
            encoder,
            "sync_disconnected_for_garbage",
            "Peers disconnected for sending refused frames",
            net.disconnected_for_garbage,
        )?;
        counter(
            encoder,
            "sync_held_back",
            "Output batches dropped because the store did not make them durable in time",
            net.held_back,
        )?;
        counter(
            encoder,
            "sync_messages_oversize",
            "Messages not sent for being over the frame limit (an error: the core's and the transport's caps disagree)",
            net.messages_oversize,
        )?;
        let admission = &net.admission;
        counters_by(
            encoder,
            "sync_inbound_denied",
            "Inbound replication connections refused at admission, by reason",
            "reason",
            [
                ("backoff", admission.denied_backoff),
                ("pending_per_ip", admission.denied_pending_per_ip),
                ("established_per_ip", admission.denied_established_per_ip),
            ]
            .map(|(reason, count)| (reason.to_owned(), count)),
        )?;
        counter(
            encoder,
            "sync_handshake_failures",
            "Inbound handshakes that failed or timed out (no cluster key, garbage, silence)",
            admission.handshake_failures,
        )?;
        counter(
            encoder,
            "sync_handshake_backoffs",
            "Times an address was put in backoff for failed handshakes",
            admission.backoffs,
        )?;
        gauge(
            encoder,
            "sync_admission_addresses",
            "Addresses with a handshake-failure record",
            admission.addresses_tracked as i64,
        )
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

    #[test]
    fn the_text_format_0_0_4_names_counters_by_their_samples_and_drops_eof_and_units() {
        let open = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total 3\n\
                    # HELP x_seconds Time.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\n\
                    x_seconds_sum 1.5\n# TYPE x_info info\nx_info{v=\"1\"} 1\n# EOF\n";
        assert_eq!(
            to_text_004(open),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total 3\n\
             # HELP x_seconds Time.\n# TYPE x_seconds histogram\nx_seconds_sum 1.5\n\
             # TYPE x_info untyped\nx_info{v=\"1\"} 1\n"
        );
    }

    /// The replication figures come out of the registry, at each scrape, in the text
    /// format the hand-written encoder produced before: `_total` on counters, the unit
    /// in histogram and age names, cumulative buckets ending in `+Inf`, one line per
    /// peer and per message kind — and a change in the source shows at the next scrape.
    #[test]
    fn replication_figures_are_read_at_each_scrape() {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let refused = Arc::new(AtomicU64::new(3));
        let mut metrics = Metrics::new();
        let source = refused.clone();
        metrics.register_replication(move || {
            let mut stats = tessera_sync::Stats {
                messages_refused: source.load(Ordering::Relaxed),
                ..Default::default()
            };
            stats.lag.counts[0] = 2;
            stats.lag.counts[tessera_sync::LAG_BUCKETS_MS.len()] = 1;
            stats.lag.count = 3;
            stats.lag.sum_ms = 2_500;
            let mut net = tessera_sync::net::NetStats {
                peers_connected: 1,
                ..Default::default()
            };
            net.sent.insert("ledger_push", (5, 700));
            SyncSnapshot {
                stats,
                net: Some(net),
                peers: vec![("n2".to_owned(), true, Some(1_500), None)],
                store_failed: false,
            }
        });
        let text = metrics.render();
        let first = tessera_sync::LAG_BUCKETS_MS[0] as f64 / 1000.0;
        for line in [
            "# TYPE tessera_store_failed gauge".to_owned(),
            "tessera_store_failed 0".to_owned(),
            "# TYPE tessera_sync_messages_refused counter".to_owned(),
            "tessera_sync_messages_refused_total 3".to_owned(),
            "# TYPE tessera_sync_replication_lag_seconds histogram".to_owned(),
            format!("tessera_sync_replication_lag_seconds_bucket{{le=\"{first}\"}} 2"),
            // Whole-number bounds read `1.0`, not `1` as the hand-written text had them
            // (prometheus-client's float format; Prometheus 3 reads both alike, on 2.x a
            // query pinned to `le="1"` needs `le="1.0"`).
            "tessera_sync_replication_lag_seconds_bucket{le=\"1.0\"} 2".to_owned(),
            "tessera_sync_replication_lag_seconds_bucket{le=\"+Inf\"} 3".to_owned(),
            "tessera_sync_replication_lag_seconds_sum 2.5".to_owned(),
            "tessera_sync_replication_lag_seconds_count 3".to_owned(),
            "tessera_sync_peer_last_heard_age_seconds{peer=\"n2\"} 1.5".to_owned(),
            "tessera_sync_peer_connected{peer=\"n2\"} 1".to_owned(),
            "tessera_sync_peers_connected 1".to_owned(),
            "tessera_sync_messages_sent_total{kind=\"ledger_push\"} 5".to_owned(),
            "tessera_sync_bytes_sent_total{kind=\"ledger_push\"} 700".to_owned(),
            "tessera_sync_inbound_denied_total{reason=\"backoff\"} 0".to_owned(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        refused.store(4, Ordering::Relaxed);
        assert!(metrics
            .render()
            .contains("\ntessera_sync_messages_refused_total 4\n"));
    }
}
