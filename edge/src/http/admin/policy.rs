//! What a tenant may do: quotas (hard or soft, per metric and period), allowed origins for
//! signed URLs, presets, and its watermark (an image file, the body of the request as is).

use super::*;

pub fn parse_metric(text: &str) -> Option<Metric> {
    Metric::ALL.into_iter().find(|m| m.name() == text)
}

pub(super) fn parse_period_kind(text: &str) -> Option<PeriodKind> {
    match text {
        "month" => Some(PeriodKind::Month),
        "hour" => Some(PeriodKind::Hour),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetQuota {
    limit: Option<u64>,
}

pub(super) async fn set_quota(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, metric, period)): Path<(String, String, String)>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    let metric = parse_metric(&metric).ok_or_else(|| {
        ApiError::unprocessable(
            ErrorCode::InvalidField,
            format!("metric {metric:?}: expected requests, cpu_micros, bytes_in or bytes_out"),
        )
    })?;
    // Hard quotas are enforced before work starts, so only what is known then can have
    // one: the request itself and its input bytes. CPU time and output bytes are known
    // only after the work, when refusing would be too late to keep a hard bound.
    if !matches!(metric, Metric::Requests | Metric::BytesIn) {
        return Err(ApiError::unprocessable(
            ErrorCode::QuotaNotEnforceable,
            format!(
                "a hard quota on {} cannot be enforced before the work is done; \
                 quotas exist for requests and bytes_in",
                metric.name()
            ),
        ));
    }
    let period = parse_period_kind(&period).ok_or_else(|| {
        ApiError::unprocessable(
            ErrorCode::InvalidField,
            format!("period {period:?}: expected month or hour"),
        )
    })?;
    let request: SetQuota = json_body(&body)?;
    edit(
        &state,
        &actor,
        vec![Change::SetQuota {
            tenant,
            metric,
            period,
            limit: request.limit,
        }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetOrigin {
    origin: String,
    #[serde(default = "yes")]
    allowed: bool,
}

pub(super) fn yes() -> bool {
    true
}

pub(super) async fn set_origin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    let request: SetOrigin = json_body(&body)?;
    // Stored as fetches compare it (`scheme://host[:port]`, lowercase, default port
    // dropped): anything else would be kept and never match.
    let origin = crate::work::fetch::origin_of(&request.origin).map_err(|reason| {
        ApiError::unprocessable(
            ErrorCode::InvalidField,
            format!(
                "origin {:?}: {reason}; expected scheme://host[:port], e.g. https://images.example.com",
                request.origin.chars().take(100).collect::<String>()
            ),
        )
    })?;
    edit(
        &state,
        &actor,
        vec![Change::SetOrigin {
            tenant,
            origin,
            allowed: request.allowed,
        }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetPreset {
    options: Option<String>,
}

pub(super) async fn set_preset(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    let request: SetPreset = json_body(&body)?;
    if let Some(options) = &request.options {
        // A preset must be a valid set of resize options now, not at first use.
        crate::http::params::parse(options, None, state.defaults, &state.limits)?;
    }
    edit(
        &state,
        &actor,
        vec![Change::SetPreset {
            tenant,
            name,
            options: request.options,
        }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /admin/v1/tenants/{tenant}/watermark`: the body is the image file (PNG, WebP, GIF
/// or JPEG, at most `WATERMARK_BYTES_MAX` bytes), decoded before it is stored so that only
/// a usable mark reaches the directory (decoding runs on the blocking pool).
pub(super) async fn set_watermark(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    crate::work::marks::decode_blocking(body.clone()).await?;
    edit(
        &state,
        &actor,
        vec![Change::SetWatermark {
            tenant,
            image: Some(body.to_vec()),
        }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /admin/v1/tenants/{tenant}/watermark`: the file as it was set.
pub(super) async fn get_watermark(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    let Some((file, _)) = state.control.watermark(tenant) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "the tenant has no watermark",
        ));
    };
    let mime = tessera_resize::sniff(&file)
        .map_or("application/octet-stream", |format| format.family().mime());
    // The directory's own bytes, shared: no copy.
    let body = axum::body::Bytes::from_owner(file);
    Ok(([(header::CONTENT_TYPE, mime)], body).into_response())
}

/// `DELETE /admin/v1/tenants/{tenant}/watermark`.
pub(super) async fn remove_watermark(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    edit(
        &state,
        &actor,
        vec![Change::SetWatermark {
            tenant,
            image: None,
        }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
