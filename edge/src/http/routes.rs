//! The HTTP routes and their handlers: `POST /v1/resize`, `/healthz`, `/readyz`,
//! `/metrics`, the admin API ([`crate::http::admin`]), plus JSON answers for unknown routes and
//! methods.
//!
//! A resize request goes: parse → authenticate (the local directory replica) → read the
//! body → quota admission (local escrow rights) → the worker pool → bill (usage durable
//! by group commit) → respond. Every refusal happens before anything is billed.
//!
//! The resize handler does only cheap, bounded work on the event loop — parse the query,
//! stream the body under a size cap and a deadline — and hands the bytes to the worker
//! pool; everything CPU-heavy (hashing for the ETag, decoding, resizing, encoding)
//! happens on a worker. Every refusal is decided before work starts, so a refused request
//! costs almost nothing (that is what keeps goodput flat under overload).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, MatchedPath, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tessera_resize::{Limits, Output, ResizeError};
use tokio::sync::oneshot;

use crate::config::Config;
use crate::control::auth;
use crate::control::ControlPlane;
use crate::http::body::{self, Budget};
use crate::http::connections::Over;
use crate::http::error::{ApiError, ErrorCode};
use crate::http::metrics::{Metrics, ReasonLabels, RouteLabels, RouteStatusLabels, StageLabels};
use crate::http::params::{self, Defaults};
use crate::http::{access, admin, meter};
use crate::work::cost::Shape;
use crate::work::idempotency;
use crate::work::pool::{Job, JobOutcome, Pool, Rejected, Work};
use bytes::Bytes;
use tessera_crdt::directory::Scopes;
use tessera_crdt::TenantId;

/// How long an early refusal waits for the rest of a body it throws away.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(1);

/// Everything a handler needs, shared by all connections.
pub struct AppState {
    pub config: Config,
    /// Derived from `config` once at start: the pipeline's limits, the defaults for what
    /// a request leaves out, and the `Cache-Control` of successful answers.
    pub limits: Limits,
    pub defaults: Defaults,
    pub cache_control: HeaderValue,
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
    /// Memory budget shared by all request bodies being held.
    pub body_budget: Budget,
    /// Cleared when shutdown starts, so `/readyz` turns load balancers away first.
    pub ready: AtomicBool,
    /// The replicated state, its store and its transport.
    pub control: Arc<ControlPlane>,
    /// SHA-256 digests of the operator tokens.
    pub operator_digests: Vec<[u8; 32]>,
    pub rate: crate::work::rate::RateLimiter,
    pub idempotency: Arc<crate::work::idempotency::IdempotencyCache>,
    pub fetch: crate::work::fetch::FetchPolicy,
    /// The listener's TLS (`http.tls_cert_file`, `http.tls_key_file`); `None`: plain
    /// HTTP. See [`AppState::serves_tls`].
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Signed-URL results kept for identical requests.
    pub results: crate::work::cache::ResultCache,
    /// Set by `POST /admin/v1/cluster/leave`; the server then shuts down and hands this
    /// node's rights to its peers.
    pub leave: crate::http::server::LeaveRequest,
    /// Which successful requests the request log writes (`log.requests_sample`).
    pub access_sampler: crate::http::access::Sampler,
    /// The operator console's sessions.
    pub console: crate::http::admin::console::session::Sessions,
    /// Tenants' watermarks, decoded.
    pub marks: crate::work::marks::Marks,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/resize", post(resize))
        .route("/v1/img/{*rest}", get(crate::http::signed::handler))
        .route("/ip/{*rest}", get(crate::http::imgproxy::handler))
        .route("/v1/info", post(crate::http::info::post))
        .route("/v1/info/{*rest}", get(crate::http::info::signed))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(admin::router(state.config.http.admin_body_bytes_max))
        .merge(if state.config.console.enabled {
            admin::console::router().layer(DefaultBodyLimit::max(
                state.config.http.admin_body_bytes_max,
            ))
        } else {
            Router::new()
        })
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request by its route template (never the raw path, whose
/// cardinality a client controls).
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route: &'static str = match request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str())
    {
        Some("/v1/resize") => "/v1/resize",
        Some("/v1/img/{*rest}") => "/v1/img",
        Some("/ip/{*rest}") => "/ip",
        Some("/v1/info") => "/v1/info",
        Some("/v1/info/{*rest}") => "/v1/info/signed",
        Some("/healthz") => "/healthz",
        Some("/readyz") => "/readyz",
        Some("/metrics") => "/metrics",
        Some("/openapi.json") => "/openapi.json",
        Some(path) if path.starts_with("/admin/") => "/admin",
        Some(path) if path.starts_with("/console") => "/console",
        _ => "unmatched",
    };
    let metrics = &state.metrics;
    let started = Instant::now();
    let method = request.method().clone();
    metrics
        .requests_received
        .get_or_create(&RouteLabels { route })
        .inc();
    metrics.requests_in_flight.inc();
    let (response, facts) = access::scope(next.run(request)).await;
    metrics.requests_in_flight.dec();
    let status = response.status().as_u16();
    if access::wanted(route, status, &state.access_sampler) {
        access::write(&access::Line {
            method: method.as_str(),
            route,
            status,
            code: response.extensions().get::<ErrorCode>().copied(),
            request_id: response
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
            bytes_out: hyper::body::Body::size_hint(response.body()).exact(),
            total_ms: started.elapsed().as_secs_f64() * 1e3,
            facts,
        });
    }
    metrics
        .request_duration
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests_answered
        .get_or_create(&RouteStatusLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The OpenAPI document of the public and admin APIs (`docs/openapi.json`, compiled in).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The overflow lane's router ([`crate::http::connections`]): health and readiness answered as
/// usual, everything else refused with the cap that was hit.
pub fn overflow_router(state: Arc<AppState>, over: Over) -> Router {
    let refuse = move || async move {
        match over {
            Over::Client => ApiError::too_many(
                ErrorCode::TooManyConnections,
                "this client holds its share of the node's connections; reuse or close one",
                1,
            ),
            Over::Node => ApiError::overloaded(
                ErrorCode::Overloaded,
                "the node holds as many connections as it serves; retry later",
                1,
            ),
        }
    };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(refuse)
        .with_state(state)
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.control.is_failed() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::StoreFailed,
            "the node cannot persist usage and takes no billable work",
        )
        .into_response();
    }
    if state.ready.load(Ordering::Acquire) {
        axum::Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotReady,
            "the node is shutting down",
        )
        .into_response()
    }
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the text format 0.0.4.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let open_metrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let text = state.metrics.render();
    if open_metrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            crate::http::metrics::to_text_004(&text),
        )
            .into_response()
    }
}

/// What the replication collector reads at a scrape ([`Metrics::register_replication`]).
pub fn sync_snapshot(control: &ControlPlane) -> crate::http::metrics::SyncSnapshot {
    let net = control.net_stats();
    let (stats, peers) = control.sync_snapshot(crate::control::now_ms());
    crate::http::metrics::SyncSnapshot {
        stats,
        net,
        peers,
        store_failed: control.is_failed(),
    }
}

/// Who pays for a resize: a tenant (authenticated key with the resize scope) or nobody
/// (`auth.anonymous_resize`).
pub(crate) fn payer(
    state: &AppState,
    headers: &HeaderMap,
    route: &'static str,
) -> Result<Option<meter::Payer>, ApiError> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if authorization.is_none() && state.config.auth.anonymous_resize {
        return Ok(None);
    }
    // Parsed and hashed before the lock; only the probe is made under it.
    let checked = auth::bearer(authorization)
        .and_then(auth::present)
        .and_then(|presented| state.control.authenticate(&presented, Scopes::RESIZE));
    match checked {
        Ok(caller) => {
            access::note(|facts| {
                facts.tenant = Some(caller.tenant);
                facts.key = Some(caller.key);
            });
            Ok(Some(meter::Payer {
                tenant: caller.tenant,
                key: Some(caller.key),
                route,
            }))
        }
        Err(error) => {
            state
                .metrics
                .auth_refused
                .get_or_create(&crate::http::metrics::CodeLabels {
                    code: error.code.as_str(),
                })
                .inc();
            Err(error)
        }
    }
}

async fn resize(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let config = &state.config;
    let payer = payer(&state, &headers, "/v1/resize")?;
    if let Some(payer) = payer {
        gate(&state, payer.tenant)?;
    }
    let idempotency_key = match (payer, headers.get("idempotency-key")) {
        (Some(_), Some(value)) => Some(idempotency::parse_key(value.as_bytes())?),
        _ => None,
    };
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let parsed = params::parse(
        query.as_deref().unwrap_or(""),
        accept,
        state.defaults,
        &state.limits,
    )?;
    // Before the upload is read: a request for a watermark there is none of is refused
    // at once.
    let watermark = watermark_for(&state, payer.map(|p| p.tenant), &parsed.options, |t| {
        state.control.watermark(t)
    })
    .await?;

    let buffered = upload(&state, &headers, body, payer.map(|p| p.tenant)).await?;
    let input = buffered.bytes.clone();
    // The processing budget starts once the upload is complete: a slow upload is the
    // body timeout's business, and must not eat the time the work needs.
    let deadline = Instant::now() + config.request_deadline();
    if input.is_empty() {
        // Refused here to spare a trip through the pool; the library's error says why.
        return Err(ResizeError::Empty.into());
    }
    let mut claim = None;
    if let (Some(payer), Some(key)) = (payer, idempotency_key) {
        let fingerprint = request_fingerprint(query.as_deref().unwrap_or(""), &input);
        match state
            .idempotency
            .begin(payer.tenant, key, fingerprint, Instant::now())?
        {
            idempotency::Begin::Replay(stored) => {
                let mut response = Response::new(Body::from(stored.body));
                *response.status_mut() = stored.status;
                *response.headers_mut() = stored.headers;
                set(response.headers_mut(), "idempotent-replayed", "true");
                return Ok(response);
            }
            idempotency::Begin::Fresh(fresh) => claim = Some(fresh),
        }
    }
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    convert(
        &state,
        payer,
        Recipe { parsed, watermark },
        buffered,
        if_none_match,
        deadline,
        claim,
    )
    .await
}

/// Reads a request's upload once the pool would take its work: when the queue is already
/// full it is shed before the body is read (refusing costs a few microseconds, reading a
/// large upload first would not) and the body drained in the background, unless the
/// client asked `Expect: 100-continue` and so never sends it; otherwise read under the
/// size, time and memory bounds, charged to `payer`'s share.
pub(crate) async fn upload(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    payer: Option<TenantId>,
) -> Result<body::Buffered, ApiError> {
    let config = &state.config;
    if let Err(rejected) = state.pool.check_admission(payer) {
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue {
            // Answer first, drain after: the 503 goes out at once while the rest of the
            // upload is read and dropped in the background (bounded in bytes and time).
            tokio::spawn(body::discard(
                body,
                config.http.body_bytes_max,
                DISCARD_TIMEOUT,
            ));
        }
        return Err(shed(&state.metrics, rejected));
    }
    let account = body::Account {
        budget: &state.body_budget,
        payer,
    };
    body::read(
        body,
        config.http.body_bytes_max,
        config.body_read_timeout(),
        account,
    )
    .await
}

/// Refusals for a paying tenant before any work: a node that cannot persist takes no
/// billable work, and the tenant's request rate on this node.
pub(crate) fn gate(state: &AppState, tenant: TenantId) -> Result<(), ApiError> {
    if state.control.is_failed() {
        return Err(ApiError::overloaded(
            ErrorCode::StoreFailed,
            "the node cannot persist usage and takes no billable work",
            5,
        ));
    }
    if let Err(retry_after_s) = state.rate.check(tenant, Instant::now()) {
        state
            .metrics
            .shed
            .get_or_create(&ReasonLabels {
                reason: "rate_limited",
            })
            .inc();
        return Err(ApiError::too_many(
            ErrorCode::RateLimited,
            "the tenant's request rate on this node is above its limit",
            retry_after_s,
        ));
    }
    Ok(())
}

/// What a conversion makes: the parsed options, and the tenant's watermark when they draw
/// one ([`watermark_for`]).
pub(crate) struct Recipe {
    pub parsed: params::Parsed,
    pub watermark: Option<Arc<crate::work::marks::Mark>>,
}

/// The watermark `options` draw, `tenant`'s: none when they draw none; a 400 when the
/// request has no tenant (anonymous) or the tenant has no watermark. `file` gives the
/// tenant's watermark file and its version's stamp, called only when one is drawn (signed
/// routes have it from the signing view; `POST /v1/resize` reads the directory then).
pub(crate) async fn watermark_for(
    state: &AppState,
    tenant: Option<TenantId>,
    options: &tessera_resize::Options,
    file: impl FnOnce(TenantId) -> Option<(Arc<[u8]>, tessera_crdt::directory::Stamp)>,
) -> Result<Option<Arc<crate::work::marks::Mark>>, ApiError> {
    if options.watermark.is_none() {
        return Ok(None);
    }
    let Some(tenant) = tenant else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::NoWatermark,
            "`watermark` draws the tenant's watermark: authenticate with the tenant's key",
        ));
    };
    let Some((file, stamp)) = file(tenant) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::NoWatermark,
            "the tenant has no watermark (an operator sets one: `tessera watermark set`)",
        ));
    };
    state.marks.resolve(tenant, file, stamp).await.map(Some)
}

/// From the input in memory to the answer: quota admission, the worker pool, billing,
/// the response (shared by `POST /v1/resize` and signed URLs).
pub(crate) async fn convert(
    state: &Arc<AppState>,
    payer: Option<meter::Payer>,
    recipe: Recipe,
    buffered: body::Buffered,
    if_none_match: Option<String>,
    deadline: Instant,
    claim: Option<idempotency::Claim>,
) -> Result<Response, ApiError> {
    let Recipe { parsed, watermark } = recipe;
    let input = buffered.bytes.clone();
    if input.is_empty() {
        // Refused here to spare a trip through the pool; the library's error says why.
        return Err(ResizeError::Empty.into());
    }
    let input_bytes = input.len() as u64;
    access::note(|facts| facts.bytes_in = Some(input_bytes));
    // The header alone (no pixels, no metadata inflated): a refusal it can decide costs
    // no quota and no queue slot, and what it reads sizes the job for the fair queue.
    let probe = tessera_resize::probe(&input, &parsed.options, &state.limits)?;
    let shape = Shape {
        input_format: probe.input_format,
        input_bytes,
        output_format: probe.output_format,
        // Every frame of a kept animation is resized and encoded.
        output_pixels: u64::from(probe.output_width)
            * u64::from(probe.output_height)
            * u64::from(probe.output_frames),
        encodes_max: match parsed.options.max_bytes {
            Some(_) => tessera_resize::MAX_BYTES_ENCODES,
            None => 1,
        },
        filter_ops: probe.filter_ops,
    };
    // Rights spent here come back unless the answer is billed (dropping `spent`).
    let spent = match payer {
        Some(payer) => meter::admit(state, payer.tenant, input_bytes, deadline).await?,
        None => meter::Spent::nothing(),
    };
    let outcome = queue(
        state,
        |reply| Job {
            input: buffered,
            options: parsed.options,
            watermark,
            if_none_match,
            deadline,
            flow: payer.map(|p| p.tenant),
            shape,
            work: Work::Resize,
            reply,
        },
        deadline,
    )
    .await?;

    match outcome {
        JobOutcome::NotModified { etag } => {
            let mut request_id = None;
            if let Some(payer) = payer {
                let usage = meter::Usage {
                    bytes_in: input_bytes,
                    ..meter::Usage::default()
                };
                request_id = Some(meter::bill(state, payer, 304, usage, spent).await?);
                state.metrics.billed.inc();
            }
            let mut response = StatusCode::NOT_MODIFIED.into_response();
            if let Some(id) = &request_id {
                set(response.headers_mut(), "x-request-id", id);
            }
            set_cache_headers(state, response.headers_mut(), &etag, parsed.vary_accept);
            keep_for_retries(claim, &response, Bytes::new());
            Ok(response)
        }
        JobOutcome::Done {
            result,
            etag,
            queue_wait,
        } => {
            let output = result?;
            record_output(&state.metrics, input_bytes, queue_wait, &output);
            access::note(|facts| {
                let fetch_ms = facts.steps.and_then(|s| s.fetch_ms);
                facts.steps = Some(access::Steps {
                    fetch_ms,
                    queue_ms: queue_wait.as_secs_f64() * 1e3,
                    decode_ms: output.timings.decode_us as f64 / 1e3,
                    resize_ms: output.timings.resize_us as f64 / 1e3,
                    encode_ms: output.timings.encode_us as f64 / 1e3,
                });
            });
            let mut request_id = None;
            if let Some(payer) = payer {
                let usage = meter::Usage {
                    cpu_micros: output.timings.cpu_us,
                    bytes_in: input_bytes,
                    bytes_out: output.bytes.len() as u64,
                };
                request_id = Some(meter::bill(state, payer, 200, usage, spent).await?);
                state.metrics.billed.inc();
            }
            let timing = format!(
                "queue;dur={:.1}, decode;dur={:.1}, resize;dur={:.1}, encode;dur={:.1}",
                queue_wait.as_secs_f64() * 1e3,
                output.timings.decode_us as f64 / 1e3,
                output.timings.resize_us as f64 / 1e3,
                output.timings.encode_us as f64 / 1e3,
            );
            let body = Bytes::from(output.bytes);
            let mut response = Response::new(Body::from(body.clone()));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(output.format.mime()),
            );
            set_cache_headers(state, headers, &etag, parsed.vary_accept);
            set(headers, "server-timing", &timing);
            set(headers, "x-image-width", &output.width.to_string());
            set(headers, "x-image-height", &output.height.to_string());
            if let Some(id) = &request_id {
                set(headers, "x-request-id", id);
            }
            keep_for_retries(claim, &response, body);
            Ok(response)
        }
        JobOutcome::Expired => Err(deadline_exceeded(&state.metrics)),
        JobOutcome::PushedOut { retry_after_s } => {
            Err(shed(&state.metrics, Rejected::QueueFull { retry_after_s }))
        }
        JobOutcome::Panicked | JobOutcome::Info { .. } => Err(internal_error()),
    }
}

/// The answer to a job that panicked (a bug, logged by the pool).
pub(crate) fn internal_error() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::InternalError,
        "the image could not be processed because of an internal error",
    )
}

/// Queues the job `make` builds around its reply channel, and waits for the outcome until
/// `deadline`: a refusal at submission is shed (429/503), a lost worker a 500, the
/// deadline a 503.
pub(crate) async fn queue(
    state: &AppState,
    make: impl FnOnce(oneshot::Sender<JobOutcome>) -> Job,
    deadline: Instant,
) -> Result<JobOutcome, ApiError> {
    let (reply, outcome) = oneshot::channel();
    if let Err(rejected) = state.pool.submit(make(reply), Instant::now()) {
        return Err(shed(&state.metrics, rejected));
    }
    match tokio::time::timeout_at(deadline.into(), outcome).await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::WorkerLost,
            "the resize worker stopped before answering",
        )),
        Err(_) => Err(deadline_exceeded(&state.metrics)),
    }
}

/// What an `Idempotency-Key` stands for: the options and the body.
fn request_fingerprint(query: &str, input: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update((query.len() as u64).to_le_bytes());
    hasher.update(query.as_bytes());
    hasher.update(input);
    hasher.finalize().into()
}

fn keep_for_retries(claim: Option<idempotency::Claim>, response: &Response, body: Bytes) {
    if let Some(claim) = claim {
        claim.finish(idempotency::Stored {
            status: response.status(),
            headers: response.headers().clone(),
            body,
        });
    }
}

/// The caching headers a `200` and a `304` of the same resource must both carry.
fn set_cache_headers(state: &AppState, headers: &mut HeaderMap, etag: &str, vary_accept: bool) {
    set(headers, header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, state.cache_control.clone());
    if vary_accept {
        headers.insert(header::VARY, HeaderValue::from_static("Accept"));
    }
}

fn set(headers: &mut HeaderMap, name: impl header::IntoHeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

fn record_output(metrics: &Metrics, input_bytes: u64, queue_wait: Duration, output: &Output) {
    metrics.bytes_in.inc_by(input_bytes);
    metrics.bytes_out.inc_by(output.bytes.len() as u64);
    metrics
        .cpu_seconds
        .inc_by(output.timings.cpu_us as f64 / 1e6);
    let stages = [
        ("queue_wait", queue_wait.as_secs_f64()),
        ("decode", output.timings.decode_us as f64 / 1e6),
        ("resize", output.timings.resize_us as f64 / 1e6),
        ("encode", output.timings.encode_us as f64 / 1e6),
    ];
    for (stage, seconds) in stages {
        metrics
            .stage_duration
            .get_or_create(&StageLabels { stage })
            .observe(seconds);
    }
}

pub(crate) fn shed(metrics: &Metrics, rejected: Rejected) -> ApiError {
    let (reason, error) = match rejected {
        Rejected::QueueFull { retry_after_s } => (
            "queue_full",
            ApiError::overloaded(
                ErrorCode::Overloaded,
                "all resize workers are busy and the queue is full; retry later",
                retry_after_s,
            ),
        ),
        Rejected::DeadlineUnreachable {
            wait_estimate,
            retry_after_s,
        } => (
            "deadline_unreachable",
            ApiError::overloaded(
                ErrorCode::Overloaded,
                format!(
                    "the expected wait ({} ms) exceeds the request deadline; retry later",
                    wait_estimate.as_millis()
                ),
                retry_after_s,
            ),
        ),
        Rejected::TooCostly {
            predicted,
            deadline,
        } => (
            "too_costly",
            ApiError::unprocessable(
                ErrorCode::TooCostly,
                format!(
                    "this conversion is expected to take {} ms of work, more than the request \
                     deadline of {} ms allows; ask for a smaller output or a faster format",
                    predicted.as_millis(),
                    deadline.as_millis()
                ),
            ),
        ),
        Rejected::ShuttingDown => (
            "shutting_down",
            ApiError::overloaded(ErrorCode::ShuttingDown, "the node is shutting down", 1),
        ),
    };
    metrics.shed.get_or_create(&ReasonLabels { reason }).inc();
    error
}

pub(crate) fn deadline_exceeded(metrics: &Metrics) -> ApiError {
    metrics
        .shed
        .get_or_create(&ReasonLabels {
            reason: "deadline_exceeded",
        })
        .inc();
    ApiError::overloaded(
        ErrorCode::DeadlineExceeded,
        "the request could not be completed within its deadline; retry later",
        1,
    )
}

impl AppState {
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.config.store.commit_timeout_ms)
    }

    /// Whether the node's listener serves TLS (every connection, admin API included):
    /// what decides, e.g., that a cookie the node sets may be marked `Secure`. A node
    /// behind a TLS-terminating proxy serves plain HTTP here and answers false.
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }
}
