//! `/v1/info`: what an image is — format, dimensions, orientation, frames, colour space,
//! alpha, dominant colour — as JSON, for an uploaded body (`POST /v1/info`, a key with the
//! `resize` scope) or a source fetched through a signed URL
//! (`GET /v1/info/<tenant>.<signature>/<options>/<source>`, signed like `/v1/img`, its
//! only option `exp`).
//!
//! Billed as a request with the CPU time it took, like a conversion: the same quota
//! admission, worker pool and deadline (`tessera_resize::info` decodes at a small scale,
//! so it costs a fraction of a conversion), and the same refusals for bad input.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use serde_json::json;
use tessera_resize::ResizeError;

use crate::http::error::ApiError;
use crate::http::routes::{self, AppState};
use crate::http::{access, body, meter, signed};
use crate::work::cost::Shape;
use crate::work::pool::{Job, JobOutcome, Work};

/// The signed route's prefix.
pub const PREFIX: &str = "/v1/info/";

/// `POST /v1/info`: the body is the image; no parameters.
pub async fn post(
    State(state): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    if query.is_some_and(|q| !q.is_empty()) {
        return Err(ApiError::bad_parameter("POST /v1/info takes no parameters"));
    }
    let config = &state.config;
    let payer = routes::payer(&state, &headers, "/v1/info")?;
    if let Some(payer) = payer {
        routes::gate(&state, payer.tenant)?;
    }
    let buffered = routes::upload(&state, &headers, body, payer.map(|p| p.tenant)).await?;
    let deadline = Instant::now() + config.request_deadline();
    inspect(&state, payer, buffered, deadline).await
}

/// `GET /v1/info/<tenant>.<signature>/<options>/<source>`.
pub async fn signed(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = request.into_parts();
    let url = signed::parse_at(PREFIX, parts.uri.path(), parts.uri.query())?;
    let view = signed::verified_tenant(
        &state,
        url.tenant,
        |secret| {
            use subtle::ConstantTimeEq;
            bool::from(
                signed::sign(secret, &url.message)
                    .as_bytes()
                    .ct_eq(url.mac.as_bytes()),
            )
        },
        "as for /v1/img: hex HMAC-SHA256 of everything after the signature segment, keyed \
         with the bytes of one of the tenant's signing secrets",
    )?;
    if !url.query.is_empty() || url.preset.is_some() {
        return Err(ApiError::bad_parameter(
            "an info URL takes no options but exp (use _ for none)",
        ));
    }
    signed::not_expired(url.expires_s)?;
    routes::gate(&state, url.tenant)?;
    access::note(|facts| facts.tenant = Some(url.tenant));
    let origins = view.origins;
    let allowed = move |origin: &str| origins.iter().any(|o| o == origin);
    let (fetched, _) = signed::fetch_source(&state, url.tenant, &url.source, &allowed).await?;
    let payer = meter::Payer {
        tenant: url.tenant,
        key: None,
        route: "/v1/info",
    };
    let deadline = Instant::now() + state.config.request_deadline();
    inspect(&state, Some(payer), fetched.body, deadline).await
}

/// From the input in memory to the JSON answer: header checks, quota admission, the
/// worker pool, billing (CPU time, bytes in, the answer's bytes out).
async fn inspect(
    state: &Arc<AppState>,
    payer: Option<meter::Payer>,
    buffered: body::Buffered,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let input_bytes = buffered.bytes.len() as u64;
    if input_bytes == 0 {
        return Err(ResizeError::Empty.into());
    }
    access::note(|facts| facts.bytes_in = Some(input_bytes));
    let probe = tessera_resize::info::probe(&buffered.bytes, &state.limits)?;
    let shape = Shape {
        input_format: probe.input_format,
        input_bytes,
        output_format: probe.output_format,
        output_pixels: u64::from(probe.output_width) * u64::from(probe.output_height),
        encodes_max: 1,
        filter_ops: 0,
    };
    let spent = match payer {
        Some(payer) => meter::admit(state, payer.tenant, input_bytes, deadline).await?,
        None => meter::Spent::nothing(),
    };
    let flow = payer.map(|p: meter::Payer| p.tenant);
    let outcome = routes::queue(
        state,
        |reply| Job {
            input: buffered,
            options: tessera_resize::Options::default(),
            watermark: None,
            if_none_match: None,
            deadline,
            flow,
            shape,
            work: Work::Info,
            reply,
        },
        deadline,
    )
    .await?;
    let (info, queue_wait) = match outcome {
        JobOutcome::Info { result, queue_wait } => (result?, queue_wait),
        JobOutcome::Expired => return Err(routes::deadline_exceeded(&state.metrics)),
        JobOutcome::PushedOut { retry_after_s } => {
            return Err(routes::shed(
                &state.metrics,
                crate::work::pool::Rejected::QueueFull { retry_after_s },
            ))
        }
        JobOutcome::Done { .. } | JobOutcome::NotModified { .. } | JobOutcome::Panicked => {
            return Err(routes::internal_error())
        }
    };
    let [r, g, b] = info.dominant_color;
    let body = json!({
        "format": info.format.as_str(),
        "width": info.width,
        "height": info.height,
        "orientation": info.orientation,
        "frames": info.frames,
        "animated": info.frames > 1,
        "color_space": info.color_space.as_str(),
        "icc_profile": info.icc_profile,
        "has_alpha": info.has_alpha,
        "uses_alpha": info.uses_alpha,
        "dominant_color": format!("#{r:02x}{g:02x}{b:02x}"),
        "bytes": input_bytes,
    })
    .to_string();
    let mut request_id = None;
    if let Some(payer) = payer {
        let usage = meter::Usage {
            cpu_micros: info.cpu_us,
            bytes_in: input_bytes,
            bytes_out: body.len() as u64,
        };
        request_id = Some(meter::bill(state, payer, 200, usage, spent).await?);
        state.metrics.billed.inc();
    }
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let timing = format!(
        "queue;dur={:.1}, info;dur={:.1}",
        queue_wait.as_secs_f64() * 1e3,
        info.elapsed_us as f64 / 1e3
    );
    if let Ok(value) = HeaderValue::from_str(&timing) {
        headers.insert("server-timing", value);
    }
    if let Some(id) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        headers.insert("x-request-id", id);
    }
    Ok(response)
}
