//! The accept loop: connections, their limits and timeouts, and graceful shutdown.
//!
//! Shaped like mini-redis's `server::run`: it takes an already bound listener and a
//! shutdown future, so tests bind port 0 and stop the server whenever they like, and
//! `main` passes a future that completes on SIGTERM/SIGINT. An operator's leave
//! (`POST /admin/v1/cluster/leave`, [`LeaveRequest`]) stops it the same way.
//!
//! Shutdown runs in an order that keeps quota rights where they can be spent: stop
//! accepting, let in-flight requests finish (then drop the stragglers, which refunds their
//! rights), stop the pool, and only then hand this node's unspent rights to its peers
//! (`cluster.leave_on_shutdown`, or always on a leave): nothing can consume or refund
//! after the hand-over. Last, the replica's final commit.
//!
//! Served with hyper's HTTP/1 connection builder directly (not `axum::serve`) because the
//! node needs knobs axum does not expose: a header read timeout (which also closes idle
//! keep-alive connections: slowloris protection) and caps on open connections, per client
//! and for the node, enforced at accept ([`crate::http::connections`]): a connection over a cap
//! is answered once in a small overflow lane (health checks served, everything else a JSON
//! 429/503 with `Retry-After`), and closed only when that lane is full too — a bounded
//! refusal instead of unbounded memory.
//!
//! TLS is served in-process when `http.tls_cert_file` and `http.tls_key_file` are set
//! ([`crate::http::tls`]): many operators run a node without a proxy in front of it, and
//! the admin API on this same listener takes the operator token, a bearer credential
//! that must never cross a network in clear. The handshake cannot hold a connection's
//! place for ever: a connection takes its slot in the caps at accept, as a plain one
//! does, and keeps it through the handshake, which must finish within
//! `http.tls_handshake_timeout_ms` or the connection is closed (logged at debug, since
//! scanners do this all day, and counted in `tessera_tls_handshake_failures_total`). A
//! finished handshake is then served by the same code as a plain connection, generic
//! over the stream (`Lane::serve`): the same header timeout, lanes and graceful shutdown.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::control::auth;
use crate::control::{ControlError, ControlPlane};
use crate::http::body::Budget;
use crate::http::connections::{Admission, ConnectionCaps, Doorman, Over};
use crate::http::metrics::{Metrics, ReasonLabels};
use crate::http::params::Defaults;
use crate::http::routes::{self, AppState};
use crate::http::tls::{self, TlsError};
use crate::work::pool::Pool;

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("opening the disk cache in {dir}: {source}")]
    DiskCache {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Builds the shared state: metrics registry, the replica (store, state, transport) and
/// the worker pool, sized from `config`. Must run inside a tokio runtime.
pub async fn build_state(config: Config) -> Result<Arc<AppState>, StartError> {
    // Before the store is touched: a bad roots file, certificate or key stops the start
    // with nothing opened.
    let fetch = config.fetch_policy()?;
    let tls = tls::acceptor(&config.http)?;
    let config_sample = config.log.requests_sample;
    let mut metrics = Metrics::new();
    let control = Arc::new(ControlPlane::start(&config, metrics.node_lock_hold.clone()).await?);
    let replicated = control.clone();
    metrics.register_replication(move || routes::sync_snapshot(&replicated));
    if control.is_replicating() {
        tokio::spawn(crate::control::log_freshness(
            Arc::downgrade(&control),
            config.cluster.peer_stale_ms,
        ));
    }
    let metrics = Arc::new(metrics);
    let operator_digests = config
        .auth
        .operator_token_sha256
        .iter()
        .filter_map(|d| auth::parse_digest(d))
        .chain(control.operator_digest)
        .collect();
    let limits = config.resize_limits();
    let pool = Pool::start(config.pool_size(), limits.clone(), metrics.pool.clone());
    let cache_control = format!("public, max-age={}", config.output.cache_max_age_s);
    let rate = crate::work::rate::RateLimiter::new(
        config.quota.rate_per_s,
        config.quota.rate_burst,
        config.quota.rate_tenants_max,
    );
    let idempotency = crate::work::idempotency::IdempotencyCache::new(
        Duration::from_secs(config.idempotency.ttl_s),
        config.idempotency.entries_max,
        config.idempotency.bytes_max,
    );
    let cache_ttl = Duration::from_secs(config.cache.ttl_s);
    let disk_cache = match config.cache.disk_bytes_max {
        0 => None,
        bytes_max => {
            let dir = config.data_dir.join("cache");
            Some(
                crate::work::cache::DiskCache::open(&dir, cache_ttl, bytes_max)
                    .map_err(|source| StartError::DiskCache { dir, source })?,
            )
        }
    };
    let results =
        crate::work::cache::ResultCache::new(cache_ttl, config.cache.bytes_max, disk_cache);
    Ok(Arc::new(AppState {
        body_budget: Budget::new(
            config.http.buffered_bytes_max,
            config.tenant_buffered_bytes_max(),
        ),
        limits,
        defaults: Defaults {
            quality: config.output.quality_default,
            avif_speed: config.output.avif_speed,
        },
        cache_control: HeaderValue::from_str(&cache_control)
            .expect("a number in ASCII is a valid header value"),
        config,
        pool,
        metrics,
        ready: true.into(),
        rate,
        idempotency,
        fetch,
        tls,
        results,
        control,
        operator_digests,
        leave: LeaveRequest::new(),
        access_sampler: crate::http::access::Sampler::new(config_sample),
        console: Default::default(),
        marks: crate::work::marks::Marks::new(crate::work::marks::MARKS_BYTES_MAX),
    }))
}

/// An operator's request that this node leave the cluster: hand its unspent rights to
/// its peers and shut down as on SIGTERM. [`run`] waits for it beside its shutdown future.
/// A watch rather than a notification: a request made before the accept loop looks is
/// not lost, and requests after the first change nothing.
pub struct LeaveRequest(watch::Sender<bool>);

impl LeaveRequest {
    pub fn new() -> Self {
        LeaveRequest(watch::Sender::new(false))
    }

    /// Asks the node to leave; true for the first request, false if one was made before.
    pub fn request(&self) -> bool {
        self.0
            .send_if_modified(|requested| !std::mem::replace(requested, true))
    }

    /// Completes once a leave is requested.
    async fn requested(&self) {
        let mut requested = self.0.subscribe();
        // The sender lives in the state that `run` holds: it cannot be dropped first.
        let _ = requested.wait_for(|requested| *requested).await;
    }
}

impl Default for LeaveRequest {
    fn default() -> Self {
        LeaveRequest::new()
    }
}

/// How long a connection in the overflow lane may take to send its request head.
const OVERFLOW_HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// How a connection is served once admitted: the normal lane or an overflow lane, each
/// its own hyper builder and router.
struct Lane {
    http: hyper::server::conn::http1::Builder,
    router: axum::Router,
}

impl Lane {
    /// Serves `io` — a TCP stream, or the TLS stream over one — until it closes, under
    /// the graceful shutdown `watcher`. The one serve path, whatever the transport.
    async fn serve<IO>(&self, io: IO, watcher: Watcher) -> hyper::Result<()>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.router.clone());
        watcher
            .watch(self.http.serve_connection(TokioIo::new(io), service))
            .await
    }
}

/// Serves `listener` until `shutdown` completes or a leave is requested, then drains:
/// `/readyz` fails at once while the node goes on accepting for `http.drain_delay_ms` (a
/// load balancer's health checks see it leave before connections are refused), then stops
/// accepting, lets in-flight requests finish for at most `http.shutdown_grace_ms` (and
/// drops the rest), stops the worker pool, hands this node's quota rights to its peers
/// (on a leave, or with `cluster.leave_on_shutdown`) and closes the replica.
pub async fn run(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config: &Config = &state.config;
    let doorman = Doorman::new(ConnectionCaps {
        connections_max: config.http.connections_max,
        per_client_max: config.http.connections_per_client_max,
        overflow_max: config.http.overflow_connections_max,
    });
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout())
        .keep_alive(true)
        .max_headers(100);
    let served = Arc::new(Lane {
        http,
        router: routes::router(state.clone()),
    });
    // The overflow lane: one request per connection, and a short wait for its head.
    let mut overflow_http = hyper::server::conn::http1::Builder::new();
    overflow_http
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout().min(OVERFLOW_HEAD_TIMEOUT))
        .keep_alive(false)
        .max_headers(100);
    let overflow = [Over::Client, Over::Node].map(|over| {
        Arc::new(Lane {
            http: overflow_http.clone(),
            router: routes::overflow_router(state.clone(), over),
        })
    });
    tracing::info!(
        address = %listener.local_addr()?,
        tls = state.serves_tls(),
        workers = state.pool.workers(),
        queue_max = state.pool.queue_max(),
        "tessera listening"
    );

    tokio::pin!(shutdown);
    // Every connection's task, so that none outlives the shutdown (finished ones are
    // reaped at each accept).
    let mut connections = JoinSet::new();
    // Once shutdown starts: whether it is a leave; accepting ends at `drained`.
    let mut draining: Option<bool> = None;
    let drained = tokio::time::sleep(Duration::from_secs(86_400));
    tokio::pin!(drained);
    let leaving = loop {
        let stop = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => Ok(accepted),
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown, if draining.is_none() => Err(false),
            () = state.leave.requested(), if draining.is_none() => Err(true),
            () = &mut drained, if draining.is_some() => break draining == Some(true),
        };
        let (stream, peer) = match stop {
            Ok(accepted) => accepted,
            Err(leaving) => {
                // Unready first; the listener stays open for the drain delay.
                state.ready.store(false, Ordering::Release);
                tracing::info!(
                    leaving,
                    drain_delay_ms = config.http.drain_delay_ms,
                    "draining: /readyz answers 503, connections are still served until the \
                     drain delay ends"
                );
                draining = Some(leaving);
                drained
                    .as_mut()
                    .reset(tokio::time::Instant::now() + config.drain_delay());
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let (slot, lane) = match doorman.admit(peer.ip()) {
            Admission::Serve(slot) => (slot, served.clone()),
            Admission::Overflow(slot, over) => {
                state.metrics.connections_overflow.inc();
                (slot, overflow[usize::from(over == Over::Node)].clone())
            }
            Admission::Close => {
                state.metrics.connections_refused.inc();
                drop(stream);
                continue;
            }
        };
        // Taken now, not after the handshake: a connection still in its handshake is
        // waited for by the graceful shutdown like any other.
        let watcher = graceful.watcher();
        let tls = state.tls.clone();
        let handshake_timeout = config.tls_handshake_timeout();
        let metrics = state.metrics.clone();
        metrics.connections_open.inc();
        connections.spawn(async move {
            // The slot is held from accept to close, handshake included: a client that
            // never finishes its handshake still counts against the caps until its
            // timeout ends it.
            let ended = match tls {
                None => lane.serve(stream, watcher).await,
                Some(acceptor) => {
                    match tls::handshake(&acceptor, stream, handshake_timeout).await {
                        Ok(stream) => lane.serve(stream, watcher).await,
                        Err(failure) => {
                            // Scanners and plain-HTTP probes do this all day: not a warning.
                            tracing::debug!(%peer, %failure, "TLS handshake failed");
                            metrics
                                .tls_handshake_failures
                                .get_or_create(&ReasonLabels {
                                    reason: failure.reason(),
                                })
                                .inc();
                            Ok(())
                        }
                    }
                }
            };
            if let Err(err) = ended {
                tracing::debug!(%peer, %err, "connection ended with an error");
            }
            metrics.connections_open.dec();
            drop(slot);
        });
    };

    tracing::info!(
        leaving,
        "shutting down: no new connections, finishing in-flight requests"
    );
    drop(listener);
    if tokio::time::timeout(config.shutdown_grace(), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = config.http.shutdown_grace_ms,
            "grace period over; remaining connections are dropped"
        );
    }
    // Dropped, not left running: a request dropped here refunds its quota rights now,
    // before any hand-over, never after it.
    connections.shutdown().await;
    let pool_state = state.clone();
    let _ = tokio::task::spawn_blocking(move || pool_state.pool.join()).await;
    if leaving || config.cluster.leave_on_shutdown {
        leave(&state).await;
    }
    state.control.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Hands this node's unspent quota rights to its peers ([`ControlPlane::leave`]), bounded by
/// `cluster.leave_timeout_ms`, and says how it went.
async fn leave(state: &AppState) {
    if !state.control.is_replicating() {
        return; // alone: no peer to hand anything to
    }
    let timeout = state.config.leave_timeout();
    let handover = state.control.leave(timeout).await;
    let timeout_ms = state.config.cluster.leave_timeout_ms;
    match handover.failed {
        Some(error) => tracing::warn!(
            %error,
            kept = handover.kept,
            "leaving the cluster: the hand-over could not be made durable; rights stay here"
        ),
        None if handover.kept > 0 => tracing::warn!(
            rights = handover.rights,
            passes = handover.passes,
            kept = handover.kept,
            timeout_ms,
            "leaving the cluster: some rights stay with this node until it returns (no \
             connected peer, or they arrived too late)"
        ),
        None => tracing::info!(
            rights = handover.rights,
            passes = handover.passes,
            "left the cluster: unspent quota rights handed to peers"
        ),
    }
}
