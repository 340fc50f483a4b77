//! Tenants: create, list (a page at a time), show, audit history, status, delete.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTenant {
    name: String,
    /// The node that turns the tenant's quotas into escrow grants (hex id); default: this
    /// node.
    home: Option<String>,
}

pub(super) async fn create_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminBody(body): AdminBody,
) -> Result<Response, ApiError> {
    let actor = operator(&state, &headers)?;
    let request: CreateTenant = json_body(&body)?;
    let (tenant, home) = new_tenant(&state, &actor, &request.name, request.home.as_deref()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": tenant.0.to_string(),
            "name": request.name,
            "home": home.to_string(),
            "status": "active",
        })),
    )
        .into_response())
}

/// Creates a tenant named `name`, homed on `home` (a node id in hex; default: this node),
/// once the name and the home pass the checks every creation passes (the API's and the
/// console's): visible text, not all digits, unique as far as this node knows, a home this
/// node knows of.
pub(super) async fn new_tenant(
    state: &AppState,
    actor: &Operator,
    name: &str,
    home: Option<&str>,
) -> Result<(TenantId, NodeId), ApiError> {
    visible_text("name", name)?;
    if name.is_empty() {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "a tenant needs a name",
        ));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "a tenant name cannot be all digits (it would read as an id)",
        ));
    }
    // Unique as far as this node knows (see `resolve_tenant`).
    if let Some(existing) = tenants_named(state, name).await?.first() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Exists,
            format!("a tenant named {name:?} exists (id {})", existing.0),
        ));
    }
    let home = match home {
        None => state.control.id(),
        Some(text) => NodeId(u64::from_str_radix(text, 16).map_err(|_| {
            ApiError::unprocessable(ErrorCode::InvalidField, "home must be a node id (hex)")
        })?),
    };
    // A home nobody knows would never grant the tenant's quotas.
    if !state.control.can_home(home) {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            format!(
                "home {home} is not a member this node knows of (or it was decommissioned); \
                 `tessera cluster status` lists the members"
            ),
        ));
    }
    let tenant = TenantId(random_id());
    edit(
        state,
        actor,
        vec![Change::CreateTenant {
            tenant,
            name: name.to_owned(),
            home,
        }],
    )
    .await?;
    Ok((tenant, home))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PageQuery {
    /// The last id of the previous page (its `next`).
    after: Option<String>,
    limit: Option<usize>,
}

/// A page of a listing: [`PAGE_DEFAULT`] items unless asked otherwise, at most
/// [`PAGE_MAX`]: each page is one short hold of the node's lock.
pub(super) const PAGE_DEFAULT: usize = 1_000;
pub(super) const PAGE_MAX: usize = 10_000;

pub(super) fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(PAGE_DEFAULT) {
        0 => Err(ApiError::bad_parameter("`limit` must be at least 1")),
        limit => Ok(limit.min(PAGE_MAX)),
    }
}

/// Live tenants by id, a page at a time (`after`: the previous page's `next`).
pub(super) async fn list_tenants(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    operator(&state, &headers)?;
    let after = query.after.as_deref().map(tenant_id).transpose()?;
    let limit = page_limit(query.limit)?;
    let page = state.control.tenants_page(after, limit);
    let next = (page.len() == limit)
        .then(|| page.last().map(|row| row.id.0.to_string()))
        .flatten();
    let tenants: Vec<Value> = page
        .iter()
        .map(|row| {
            json!({
                "id": row.id.0.to_string(),
                "name": row.name,
                "status": status_name(row.status),
                "home": row.home.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({ "tenants": tenants, "next": next })))
}

pub(super) fn status_name(status: TenantStatus) -> &'static str {
    match status {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
    }
}

pub(super) fn tenant_id(text: &str) -> Result<TenantId, ApiError> {
    parse_id("tenant", text).map(TenantId)
}

/// Live tenants named `name` ([`ControlPlane::tenants_named`], a scan in short holds), on
/// a blocking thread: off the runtime's workers.
async fn tenants_named(state: &AppState, name: &str) -> Result<Vec<TenantId>, ApiError> {
    let (control, name) = (state.control.clone(), name.to_owned());
    tokio::task::spawn_blocking(move || control.tenants_named(&name))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                e.to_string(),
            )
        })
}

/// A tenant named in a path or a query: its id (digits), or its name when exactly one
/// live tenant has it (names are unique on creation, as far as the creating node knew:
/// two nodes creating the same name at once both succeed, and then only the id names
/// either).
pub(super) async fn resolve_tenant(state: &AppState, text: &str) -> Result<TenantId, ApiError> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return tenant_id(text);
    }
    match tenants_named(state, text).await?.as_slice() {
        [id] => Ok(*id),
        [] => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no tenant {:?} (by id or name)", text.chars().take(100).collect::<String>()),
        )),
        several => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::AmbiguousName,
            format!(
                "{} tenants are named {text:?} (created at once on different nodes): use an id, one of {}",
                several.len(),
                several.iter().map(|t| t.0.to_string()).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

pub(super) async fn show_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    operator(&state, &headers)?;
    let id = resolve_tenant(&state, &tenant).await?;
    let t = state.control.tenant_detail(id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such tenant")
    })?;
    let keys: Vec<Value> = t
        .keys
        .iter()
        .map(|k| {
            json!({
                "id": k.id.to_string(),
                "prefix": k.prefix,
                "label": k.label,
                "scopes": scope_names(k.scopes),
                "created_ms": k.created_ms,
                "revoked": k.revoked,
            })
        })
        .collect();
    let secrets: Vec<Value> = t
        .secrets
        .iter()
        .map(|(sid, active, primary)| {
            json!({
                "id": sid.to_string(),
                "active": active,
                "primary": primary,
            })
        })
        .collect();
    let quotas: Vec<Value> = t
        .quotas
        .iter()
        .map(|(metric, kind, limit)| {
            json!({ "metric": metric.name(), "period": period_kind_name(*kind), "limit": limit })
        })
        .collect();
    let presets: Value = t
        .presets
        .into_iter()
        .map(|(name, options)| (name, Value::from(options)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(Json(json!({
        "id": id.0.to_string(),
        "name": t.row.name,
        "status": status_name(t.row.status),
        "deleted": t.deleted,
        "home": t.row.home.to_string(),
        "keys": keys,
        "signing_secrets": secrets,
        "origins": t.origins,
        "quotas": quotas,
        "presets": presets,
        "watermark": t.watermark_bytes.map(|bytes| json!({ "bytes": bytes })),
    })))
}

pub(super) fn scope_names(scopes: Scopes) -> Vec<&'static str> {
    [("resize", Scopes::RESIZE), ("usage", Scopes::USAGE)]
        .into_iter()
        .filter(|(_, s)| scopes.contains(*s))
        .map(|(name, _)| name)
        .collect()
}

pub(super) fn period_kind_name(kind: PeriodKind) -> &'static str {
    match kind {
        PeriodKind::Month => "month",
        PeriodKind::Hour => "hour",
    }
}

pub(super) async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    operator(&state, &headers)?;
    let id = resolve_tenant(&state, &tenant).await?;
    let ops: Vec<Value> = state
        .control
        .history(id)
        .iter()
        .map(|op| {
            json!({
                "actor": op.actor,
                "node": op.origin.to_string(),
                "at_ms": op.at_ms,
                "change": op.change.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({ "tenant": id.0.to_string(), "history": ops })))
}

pub(super) async fn delete_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    edit(&state, &actor, vec![Change::DeleteTenant { tenant }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetStatus {
    status: String,
}

pub(super) async fn set_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    let request: SetStatus = json_body(&body)?;
    set_tenant_status(&state, &actor, tenant, &request.status).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Suspends (`"suspended"`) or reactivates (`"active"`) a tenant.
pub(super) async fn set_tenant_status(
    state: &AppState,
    actor: &Operator,
    tenant: TenantId,
    status: &str,
) -> Result<(), ApiError> {
    let status = match status {
        "active" => TenantStatus::Active,
        "suspended" => TenantStatus::Suspended,
        other => {
            return Err(ApiError::unprocessable(
                ErrorCode::InvalidField,
                format!("status {other:?}: expected \"active\" or \"suspended\""),
            ))
        }
    };
    edit(
        state,
        actor,
        vec![Change::SetTenantStatus { tenant, status }],
    )
    .await
}
