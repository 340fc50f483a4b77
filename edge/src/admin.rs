//! The admin API (`/admin/v1/...`): tenants, keys, signing secrets, origins, quotas,
//! presets, merged usage with harvest, the cluster view, leaving the cluster, and
//! decommissioning a member that is gone for good.
//!
//! Every edit is a directory op made on this node's replica: it is durable (group commit)
//! before the answer leaves, and reaches the other nodes by push and anti-entropy. Reads
//! answer from the local replica, so they show what this node knows, with enough
//! freshness information (harvest) to tell how complete that is.
//!
//! Callers: operators (a token whose SHA-256 is configured), and for
//! `GET /admin/v1/usage` only, a tenant key with the `usage` scope, for its own tenant.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::{header, request::Parts, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use tessera_crdt::directory::{Change, DirectoryError, KeyId, Scopes, SecretId, TenantStatus};
use tessera_crdt::{Metric, NodeId, Period, PeriodKind, TenantId};
use tessera_sync::PeerView;

use crate::auth::{self, Caller};
use crate::control::{now_ms, ControlPlane, DurableError};
use crate::error::ApiError;
use crate::routes::AppState;

/// Ids handed out here stay below 2^53 so JavaScript clients read them exactly.
const ID_MAX: u64 = (1 << 53) - 1;

/// An admin request's body, at most the router's `http.admin_body_bytes_max`; a refusal
/// is a JSON error like every other (axum's own would be plain text).
struct AdminBody(axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for AdminBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(request, state)
            .await
            .map(AdminBody)
            .map_err(|rejection| match rejection.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the admin request body is larger than http.admin_body_bytes_max",
                ),
                status => ApiError::new(status, "body_read_failed", rejection.body_text()),
            })
    }
}

/// An admin query string of shape `T`; a malformed one is a JSON 400.
struct AdminQuery<T>(T);

impl<T: for<'de> Deserialize<'de> + Send, S: Send + Sync> FromRequestParts<S> for AdminQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(query)| AdminQuery(query))
            .map_err(|rejection| ApiError::bad_parameter(rejection.body_text()))
    }
}

/// The admin routes; bodies are bounded by `body_bytes_max`.
pub fn router(body_bytes_max: usize) -> Router<Arc<AppState>> {
    let router = Router::new()
        .route("/admin/v1/tenants", post(create_tenant).get(list_tenants))
        .route(
            "/admin/v1/tenants/{tenant}",
            get(show_tenant).delete(delete_tenant),
        )
        .route("/admin/v1/tenants/{tenant}/status", post(set_status))
        .route("/admin/v1/tenants/{tenant}/history", get(history))
        .route("/admin/v1/tenants/{tenant}/keys", post(create_key))
        .route("/admin/v1/tenants/{tenant}/keys/{key}", delete(revoke_key))
        .route(
            "/admin/v1/tenants/{tenant}/quotas/{metric}/{period}",
            put(set_quota),
        )
        .route("/admin/v1/tenants/{tenant}/origins", put(set_origin))
        .route("/admin/v1/tenants/{tenant}/secrets", post(add_secret))
        .route(
            "/admin/v1/tenants/{tenant}/secrets/{secret}",
            delete(retire_secret),
        )
        .route(
            "/admin/v1/tenants/{tenant}/secrets/{secret}/primary",
            post(primary_secret),
        )
        .route("/admin/v1/tenants/{tenant}/presets/{name}", put(set_preset))
        .route("/admin/v1/usage", get(usage))
        .route("/admin/v1/cluster", get(cluster))
        .route("/admin/v1/cluster/leave", post(cluster_leave))
        .route("/admin/v1/cluster/decommission", post(cluster_decommission))
        .route("/admin/v1/export/records", get(export_records))
        .route("/admin/v1/export/totals", get(export_totals));
    #[cfg(feature = "fault-injection")]
    let router = router.route("/admin/v1/faults", put(set_faults));
    router.layer(DefaultBodyLimit::max(body_bytes_max))
}

/// The store's injected fault (feature `fault-injection`, for the fault harness).
#[cfg(feature = "fault-injection")]
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetFaults {
    store: crate::faults::StoreMode,
    #[serde(default)]
    stall_ms: u64,
}

/// `PUT /admin/v1/faults` (feature `fault-injection` only): switches the store's commits
/// to fail or stall, or back to normal. Operator only, like every admin route.
#[cfg(feature = "fault-injection")]
async fn set_faults(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    operator(&state, &headers)?;
    let request: SetFaults = json_body(&body)?;
    state.control.faults().set(request.store, request.stall_ms);
    tracing::warn!(store = ?request.store, stall_ms = request.stall_ms, "injected store fault");
    Ok(StatusCode::NO_CONTENT)
}

/// The operator's actor name in the audit history: a short digest of the token.
struct Operator(String);

fn operator(state: &AppState, headers: &HeaderMap) -> Result<Operator, ApiError> {
    let token = auth::bearer(header_str(headers, header::AUTHORIZATION.as_str()))?;
    if auth::is_operator(&state.operator_digests, token) {
        let digest = auth::hex(&auth::sha256(token.as_bytes()));
        Ok(Operator(format!("operator:{}", &digest[..12])))
    } else {
        Err(ApiError::unauthorized(
            "invalid_token",
            "the operator token is not valid",
        ))
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn parse_id(what: &'static str, text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .ok()
        .filter(|id| (1..=ID_MAX).contains(id))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no {what} {text:?}"),
            )
        })
}

fn random_id() -> u64 {
    (u64::from_le_bytes(auth::random_bytes::<8>()) % ID_MAX) + 1
}

fn directory_error(error: DirectoryError) -> ApiError {
    use DirectoryError as E;
    let message = error.to_string();
    match error {
        E::UnknownTenant(_) | E::UnknownKey { .. } | E::UnknownSecret { .. } => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
        }
        E::TenantExists(_) | E::KeyExists(_) | E::SecretExists { .. } => {
            ApiError::new(StatusCode::CONFLICT, "exists", message)
        }
        E::TenantDeleted(_) => ApiError::new(StatusCode::CONFLICT, "tenant_deleted", message),
        E::KeyRevoked(_) => ApiError::new(StatusCode::CONFLICT, "key_revoked", message),
        E::DecommissionSelf(_) => ApiError::new(StatusCode::CONFLICT, "decommission_self", message),
        E::InvalidField { .. } | E::UnknownScope(_) => {
            ApiError::unprocessable("invalid_field", message)
        }
        E::Full { .. } | E::TooManyOps { .. } | E::SequenceExhausted(_) => {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "directory_full", message)
        }
    }
}

fn durable_error(error: DurableError) -> ApiError {
    ApiError::overloaded("store_unavailable", error.to_string(), 1)
}

/// Makes directory edits, durably, and returns once they are committed.
async fn edit(state: &AppState, actor: &Operator, changes: Vec<Change>) -> Result<(), ApiError> {
    edit_with(state, |control, now| {
        control
            .edit(now, &actor.0, changes)
            .map(|ticket| ((), ticket))
            .map_err(directory_error)
    })
    .await
}

/// Runs `edits` (a control-plane edit, given the time: one hold of the node lock), then waits
/// until whatever this node changed is committed: what it returns is answered only once
/// durable.
async fn edit_with<T>(
    state: &AppState,
    edits: impl FnOnce(&ControlPlane, u64) -> Result<(T, u64), ApiError>,
) -> Result<T, ApiError> {
    if state.control.is_failed() {
        return Err(durable_error(DurableError::Failed));
    }
    let (value, ticket) = edits(&state.control, now_ms())?;
    state.control.wake_net();
    state
        .control
        .durable(ticket, state.commit_timeout())
        .await
        .map_err(durable_error)?;
    Ok(value)
}

/// Every admin body is a JSON object. serde would also read a struct from an array of its
/// fields in order (`["acme"]`), a shape no client means and the API does not document
/// (found by the `admin_body` fuzz target), so anything else is refused first.
fn json_body<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

/// Reads `body` as the JSON body of the admin route whose body type is `route`
/// (`CreateTenant`, `SetStatus`, `CreateKey`, `SetQuota`, `SetOrigin`, `SetPreset`), as that
/// route does first; the entry of the `admin_body` fuzz target (fuzz/).
pub fn parse_body(route: &str, body: &[u8]) -> Result<(), ApiError> {
    match route {
        "CreateTenant" => json_body::<CreateTenant>(body).map(drop),
        "SetStatus" => json_body::<SetStatus>(body).map(drop),
        "CreateKey" => json_body::<CreateKey>(body).map(drop),
        "SetQuota" => json_body::<SetQuota>(body).map(drop),
        "SetOrigin" => json_body::<SetOrigin>(body).map(drop),
        "SetPreset" => json_body::<SetPreset>(body).map(drop),
        _ => Err(ApiError::not_found()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    name: String,
    /// The node that turns the tenant's quotas into escrow grants (hex id); default: this
    /// node.
    home: Option<String>,
}

async fn create_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminBody(body): AdminBody,
) -> Result<Response, ApiError> {
    let actor = operator(&state, &headers)?;
    let request: CreateTenant = json_body(&body)?;
    let home = match request.home.as_deref() {
        None => state.control.id(),
        Some(text) => NodeId(u64::from_str_radix(text, 16).map_err(|_| {
            ApiError::unprocessable("invalid_field", "home must be a node id (hex)")
        })?),
    };
    let tenant = TenantId(random_id());
    edit(
        &state,
        &actor,
        vec![Change::CreateTenant {
            tenant,
            name: request.name.clone(),
            home,
        }],
    )
    .await?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    /// The last id of the previous page (its `next`).
    after: Option<String>,
    limit: Option<usize>,
}

/// A page of a listing: [`PAGE_DEFAULT`] items unless asked otherwise, at most
/// [`PAGE_MAX`]: each page is one short hold of the node's lock.
const PAGE_DEFAULT: usize = 1_000;
const PAGE_MAX: usize = 10_000;

fn page_limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(PAGE_DEFAULT) {
        0 => Err(ApiError::bad_parameter("`limit` must be at least 1")),
        limit => Ok(limit.min(PAGE_MAX)),
    }
}

/// Live tenants by id, a page at a time (`after`: the previous page's `next`).
async fn list_tenants(
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

fn status_name(status: TenantStatus) -> &'static str {
    match status {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
    }
}

fn tenant_id(text: &str) -> Result<TenantId, ApiError> {
    parse_id("tenant", text).map(TenantId)
}

async fn show_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    operator(&state, &headers)?;
    let id = tenant_id(&tenant)?;
    let t = state
        .control
        .tenant_detail(id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such tenant"))?;
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
    })))
}

fn scope_names(scopes: Scopes) -> Vec<&'static str> {
    [("resize", Scopes::RESIZE), ("usage", Scopes::USAGE)]
        .into_iter()
        .filter(|(_, s)| scopes.contains(*s))
        .map(|(name, _)| name)
        .collect()
}

fn period_kind_name(kind: PeriodKind) -> &'static str {
    match kind {
        PeriodKind::Month => "month",
        PeriodKind::Hour => "hour",
    }
}

async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, ApiError> {
    operator(&state, &headers)?;
    let id = tenant_id(&tenant)?;
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

async fn delete_tenant(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = tenant_id(&tenant)?;
    edit(&state, &actor, vec![Change::DeleteTenant { tenant }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetStatus {
    status: String,
}

async fn set_status(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = tenant_id(&tenant)?;
    let request: SetStatus = json_body(&body)?;
    let status = match request.status.as_str() {
        "active" => TenantStatus::Active,
        "suspended" => TenantStatus::Suspended,
        other => {
            return Err(ApiError::unprocessable(
                "invalid_field",
                format!("status {other:?}: expected \"active\" or \"suspended\""),
            ))
        }
    };
    edit(
        &state,
        &actor,
        vec![Change::SetTenantStatus { tenant, status }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default)]
    scopes: Option<String>,
    #[serde(default)]
    label: String,
}

async fn create_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    AdminBody(body): AdminBody,
) -> Result<Response, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = tenant_id(&tenant)?;
    let request: CreateKey = if body.is_empty() {
        CreateKey {
            scopes: None,
            label: String::new(),
        }
    } else {
        json_body(&body)?
    };
    let scopes =
        Scopes::parse(request.scopes.as_deref().unwrap_or("resize")).map_err(directory_error)?;
    let minted = auth::new_key();
    let key = KeyId(random_id());
    edit(
        &state,
        &actor,
        vec![Change::CreateKey {
            tenant,
            key,
            prefix: minted.prefix.clone(),
            secret_hash: minted.secret_hash,
            scopes,
            label: request.label.clone(),
        }],
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": key.0.to_string(),
            "tenant": tenant.0.to_string(),
            "key": minted.key,
            "prefix": minted.prefix,
            "scopes": scope_names(scopes),
            "label": request.label,
            "note": "the key is shown once; only its digest is stored",
        })),
    )
        .into_response())
}

async fn revoke_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = tenant_id(&tenant)?;
    let key = KeyId(parse_id("key", &key)?);
    edit(&state, &actor, vec![Change::RevokeKey { tenant, key }]).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn parse_metric(text: &str) -> Option<Metric> {
    Metric::ALL.into_iter().find(|m| m.name() == text)
}

fn parse_period_kind(text: &str) -> Option<PeriodKind> {
    match text {
        "month" => Some(PeriodKind::Month),
        "hour" => Some(PeriodKind::Hour),
        _ => None,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQuota {
    limit: Option<u64>,
}

async fn set_quota(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, metric, period)): Path<(String, String, String)>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = tenant_id(&tenant)?;
    let metric = parse_metric(&metric).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_field",
            format!("metric {metric:?}: expected requests, cpu_micros, bytes_in or bytes_out"),
        )
    })?;
    // Hard quotas are enforced before work starts, so only what is known then can have
    // one: the request itself and its input bytes. CPU time and output bytes are known
    // only after the work, when refusing would be too late to keep a hard bound.
    if !matches!(metric, Metric::Requests | Metric::BytesIn) {
        return Err(ApiError::unprocessable(
            "quota_not_enforceable",
            format!(
                "a hard quota on {} cannot be enforced before the work is done; \
                 quotas exist for requests and bytes_in",
                metric.name()
            ),
        ));
    }
    let period = parse_period_kind(&period).ok_or_else(|| {
        ApiError::unprocessable(
            "invalid_field",
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
struct SetOrigin {
    origin: String,
    #[serde(default = "yes")]
    allowed: bool,
}

fn yes() -> bool {
    true
}

async fn set_origin(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = tenant_id(&tenant)?;
    let request: SetOrigin = json_body(&body)?;
    edit(
        &state,
        &actor,
        vec![Change::SetOrigin {
            tenant,
            origin: request.origin,
            allowed: request.allowed,
        }],
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = tenant_id(&tenant)?;
    let secret = auth::random_bytes::<32>();
    let secret_id = SecretId(random_id());
    edit(
        &state,
        &actor,
        vec![Change::AddSigningSecret {
            tenant,
            secret_id,
            secret: secret.to_vec(),
        }],
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": secret_id.0.to_string(),
            "secret": auth::hex(&secret),
        })),
    )
        .into_response())
}

async fn retire_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, secret)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    secret_edit(&state, &headers, &tenant, &secret, |tenant, secret_id| {
        Change::RetireSigningSecret { tenant, secret_id }
    })
    .await
}

async fn primary_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, secret)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    secret_edit(&state, &headers, &tenant, &secret, |tenant, secret_id| {
        Change::SetPrimarySecret { tenant, secret_id }
    })
    .await
}

/// An edit naming one signing secret of one tenant.
async fn secret_edit(
    state: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    secret: &str,
    change: impl FnOnce(TenantId, SecretId) -> Change,
) -> Result<StatusCode, ApiError> {
    let actor = operator(state, headers)?;
    let tenant = tenant_id(tenant)?;
    let secret_id = SecretId(parse_id("secret", secret)?);
    edit(state, &actor, vec![change(tenant, secret_id)]).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPreset {
    options: Option<String>,
}

async fn set_preset(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, name)): Path<(String, String)>,
    AdminBody(body): AdminBody,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = tenant_id(&tenant)?;
    let request: SetPreset = json_body(&body)?;
    if let Some(options) = &request.options {
        // A preset must be a valid set of resize options now, not at first use.
        crate::params::parse(options, None, state.defaults, &state.limits)?;
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

#[derive(Deserialize)]
struct UsageQuery {
    tenant: Option<String>,
    period: Option<String>,
}

/// Merged totals of one tenant and period, with harvest: each node's contribution and
/// when this node last heard from it, so a reader can tell whether the sum is complete.
async fn usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    // Who asks first: nothing about tenants is told to an unauthenticated caller.
    let credential = auth::bearer(header_str(&headers, header::AUTHORIZATION.as_str()))?;
    let is_operator = auth::is_operator(&state.operator_digests, credential);
    if !is_operator && credential.starts_with(auth::TOKEN_PREFIX) {
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the operator token is not valid",
        ));
    }
    let tenant = query
        .tenant
        .as_deref()
        .ok_or_else(|| ApiError::bad_parameter("the `tenant` parameter is required"))?;
    let tenant = tenant_id(tenant)?;
    if !is_operator {
        // Hashed before the lock; only the probe is made under it.
        let caller: Caller = auth::present(credential)
            .and_then(|presented| state.control.authenticate(&presented, Scopes::USAGE))?;
        if caller.tenant != tenant {
            return Err(ApiError::forbidden(
                "other_tenant",
                "a tenant key may read its own tenant's usage only",
            ));
        }
    }
    let now = now_ms();
    let period = match query.period.as_deref() {
        None => Period::containing(PeriodKind::Month, now),
        Some(text) => text.parse::<Period>().map_err(|e| {
            ApiError::bad_parameter(format!("period {text:?}: {e} (expected e.g. 2026-11)"))
        })?,
    };
    let usage = state
        .control
        .usage_report(tenant, period, now)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such tenant on this node",
            )
        })?;
    // Rendered after the hold.
    let stale_ms = state.config.cluster.peer_stale_ms;
    let never_heard = PeerView::default();
    let mut any_stale = false;
    let nodes: Vec<Value> = usage
        .per_node
        .iter()
        .map(|(id, values)| {
            let this = *id == usage.this_node;
            let view = usage.peers.get(id).unwrap_or(&never_heard);
            let last_heard = if this { Some(now) } else { view.last_heard_ms };
            let decommissioned = usage.decommissioned.contains(id);
            let stale = !this && is_stale(view, decommissioned, now, stale_ms);
            any_stale |= stale;
            json!({
                "node": id.to_string(),
                "this_node": this,
                "usage": metric_map(values),
                "last_heard_ms": last_heard,
                "last_heard_age_ms": last_heard.map(|t| now.saturating_sub(t)),
                "stale": stale,
                "left": view.left,
                "decommissioned": decommissioned,
            })
        })
        .collect();
    // Finality: every member that could have written the period sealed it, and this
    // replica holds its usage up to the seal (docs/PROTOCOL.md, "Finality").
    let missing: Vec<Value> = usage
        .missing_seals
        .iter()
        .map(|(id, last_heard)| {
            json!({
                "node": id.to_string(),
                "this_node": *id == usage.this_node,
                "last_heard_ms": last_heard,
                "last_heard_age_ms": last_heard.map(|t| now.saturating_sub(t)),
            })
        })
        .collect();
    let report = json!({
        "tenant": tenant.0.to_string(),
        "period": period.to_string(),
        "totals": metric_map(&usage.totals),
        "nodes": nodes,
        "stale": any_stale,
        "final": missing.is_empty(),
        "missing_seals": missing,
        "compacted": usage.settlement_digest.is_some(),
        "settlement_digest": usage.settlement_digest.map(|d| format!("{d:016x}")),
        "forgotten": usage.forgotten,
        "as_of_ms": now,
    });
    let ticket = usage.ticket;
    // Monotonic reads: what is reported must survive a crash of this node, so answer
    // only once a commit that includes it is done.
    state
        .control
        .flushed(ticket, state.commit_timeout())
        .await
        .map_err(durable_error)?;
    Ok(Json(report))
}

/// Whether what a member sent may be behind: not heard from within `stale_ms` (or never),
/// unless it left or was decommissioned — it will send nothing more, so nothing is missing.
fn is_stale(view: &PeerView, decommissioned: bool, now_ms: u64, stale_ms: u64) -> bool {
    !view.left
        && !decommissioned
        && view
            .last_heard_ms
            .is_none_or(|t| now_ms.saturating_sub(t) > stale_ms)
}

fn metric_map(values: &[u64; 4]) -> Value {
    let mut map = serde_json::Map::new();
    for metric in Metric::ALL {
        map.insert(metric.name().to_owned(), values[metric.index()].into());
    }
    map.into()
}

#[derive(Deserialize)]
struct ClusterQuery {
    tenant: Option<String>,
}

/// Members (every peer, and every node decommissioned in the directory), freshness,
/// replication lag and message counts; with `tenant`, the escrow rights each node holds
/// for that tenant's quotas in the current periods.
async fn cluster(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<ClusterQuery>,
) -> Result<Json<Value>, ApiError> {
    operator(&state, &headers)?;
    let tenant = query.tenant.as_deref().map(tenant_id).transpose()?;
    let now = now_ms();
    let net = state.control.net_stats();
    let report = state.control.cluster_report(tenant, now);
    // Rendered after the hold.
    let stale_ms = state.config.cluster.peer_stale_ms;
    let members: Vec<Value> = report
        .members
        .iter()
        .map(|member| {
            let view = &member.view;
            let (sent, received) = net
                .as_ref()
                .and_then(|n| n.per_peer.get(&member.id).copied())
                .unwrap_or_default();
            json!({
                "node": member.id.to_string(),
                "connected": view.connected,
                "left": view.left,
                "decommissioned": member.decommissioned,
                "last_heard_ms": view.last_heard_ms,
                "last_heard_age_ms": view.last_heard_ms.map(|t| now.saturating_sub(t)),
                "stale": is_stale(view, member.decommissioned, now, stale_ms),
                "replication_lag_ms": view.lag_ms,
                "messages_sent": sent,
                "messages_received": received,
            })
        })
        .collect();
    let mut answer = json!({
        "node": {
            "id": report.this_node.to_string(),
            "decommissioned": report.this_decommissioned,
            "peer_id": state.control.peer_id(),
            "listen": net.as_ref().map(|n| n.listen_addrs.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_default(),
            "replication": net.is_some(),
        },
        "members": members,
    });
    if let (Some(tenant), Some(quotas)) = (tenant, report.quotas) {
        let quotas: Vec<Value> = quotas
            .iter()
            .map(|q| {
                let rights: Vec<Value> = q
                    .rights
                    .iter()
                    .map(|(n, rights)| json!({ "node": n.to_string(), "rights": rights }))
                    .collect();
                json!({
                    "metric": q.metric.name(),
                    "period": q.period.to_string(),
                    "quota": q.quota,
                    "limit": q.limit,
                    "consumed": q.consumed,
                    "rights": rights,
                })
            })
            .collect();
        answer["tenant"] = json!({ "id": tenant.0.to_string(), "quotas": quotas });
    }
    Ok(Json(answer))
}

/// `POST /admin/v1/cluster/leave`: this node stops as on SIGTERM — no new connections,
/// in-flight requests finished — and, whatever `cluster.leave_on_shutdown` says, hands
/// its unspent quota rights to its connected peers before it exits. Answered 202 at once:
/// the hand-over comes after every in-flight request, this one included.
async fn cluster_leave(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = operator(&state, &headers)?;
    let first = state.leave.request();
    let node = state.control.id().to_string();
    if first {
        tracing::info!(actor = actor.0, "leave requested: shutting down");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "node": node,
            "status": "leaving",
            "already_requested": !first,
            "replication": state.control.is_replicating(),
            "shutdown_grace_ms": state.config.http.shutdown_grace_ms,
            "leave_timeout_ms": state.config.cluster.leave_timeout_ms,
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decommission {
    /// The node's id as `/admin/v1/cluster` prints it: 16 hex digits.
    node: String,
}

/// A node id as `/admin/v1/cluster` prints it (16 hex digits); anything else is a 400.
/// (Lenient parsing would let a truncated or mistyped id through, and a decommission is
/// final.)
fn parse_node_id(text: &str) -> Result<NodeId, ApiError> {
    let well_formed = text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
    match u64::from_str_radix(text, 16) {
        Ok(id) if well_formed => Ok(NodeId(id)),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_node_id",
            format!("node {text:?}: expected 16 hex digits, as /admin/v1/cluster prints it"),
        )),
    }
}

/// `POST /admin/v1/cluster/decommission`: records that a member is gone for good (dead,
/// its data lost), as a directory op durable before the answer, like every edit. Every
/// node that applies it stops counting that member as stale, and the quota rights
/// stranded with it are recovered by the quotas' home nodes (docs/PROTOCOL.md). Final:
/// there is no undo, and the node, should it come back, consumes nothing (a node that lost
/// its data comes back under a new id anyway). This node's own id is refused (409
/// `decommission_self`: a live node leaves instead); a node decommissioned already is
/// recorded again, harmlessly, and the answer says so.
async fn cluster_decommission(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminBody(body): AdminBody,
) -> Result<Json<Value>, ApiError> {
    let actor = operator(&state, &headers)?;
    let request: Decommission = json_body(&body)?;
    let target = parse_node_id(&request.node)?;
    let (already, at_ms) = edit_with(&state, |control, now| {
        control
            .decommission(now, &actor.0, target)
            .map(|(already, ticket)| ((already, now), ticket))
            .map_err(directory_error)
    })
    .await?;
    tracing::info!(actor = actor.0, node = %target, already, "member decommissioned");
    Ok(Json(json!({
        "node": target.to_string(),
        "decommissioned": true,
        "already_decommissioned": already,
        "actor": actor.0,
        "at_ms": at_ms,
    })))
}

impl AppState {
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.config.store.commit_timeout_ms)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    from_ms: Option<u64>,
    #[serde(default)]
    to_ms: Option<u64>,
    #[serde(default)]
    period: Option<String>,
}

fn export_format(format: Option<&str>) -> Result<bool, ApiError> {
    match format.unwrap_or("jsonl") {
        "jsonl" => Ok(false),
        "parquet" => Ok(true),
        other => Err(ApiError::bad_parameter(format!(
            "format {other:?}: expected jsonl or parquet"
        ))),
    }
}

fn file_response(content_type: &'static str, body: Vec<u8>, rows: usize) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    response
        .headers_mut()
        .insert("x-rows", axum::http::HeaderValue::from(rows as u64));
    response
}

/// This node's raw usage records (every request it billed), as JSON lines or Parquet.
async fn export_records(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    operator(&state, &headers)?;
    let parquet = export_format(query.format.as_deref())?;
    state
        .control
        .flush_records(state.commit_timeout())
        .await
        .map_err(|e| ApiError::overloaded("store_unavailable", e.to_string(), 1))?;
    let dir = crate::control::records::directory(&state.config.data_dir);
    let (from, to) = (query.from_ms.unwrap_or(0), query.to_ms.unwrap_or(u64::MAX));
    let records =
        tokio::task::spawn_blocking(move || crate::control::records::read_all(&dir, from, to))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "export_failed",
                    e.to_string(),
                )
            })?
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "export_failed",
                    e.to_string(),
                )
            })?;
    let rows = records.len();
    if parquet {
        let body = crate::control::records::to_parquet(&records).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "export_failed",
                e.to_string(),
            )
        })?;
        Ok(file_response("application/vnd.apache.parquet", body, rows))
    } else {
        Ok(file_response(
            "application/x-ndjson",
            crate::control::records::to_jsonl(&records),
            rows,
        ))
    }
}

/// Merged totals of every tenant for a period (default: this month), as JSON lines,
/// with the same harvest caveat as `/admin/v1/usage`: what this node knows.
async fn export_totals(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<ExportQuery>,
) -> Result<Response, ApiError> {
    operator(&state, &headers)?;
    if export_format(query.format.as_deref())? {
        return Err(ApiError::bad_parameter(
            "totals are exported as jsonl (records can be parquet)",
        ));
    }
    let period = match query.period.as_deref() {
        None => Period::containing(PeriodKind::Month, now_ms()),
        Some(text) => text.parse::<Period>().map_err(|e| {
            ApiError::bad_parameter(format!("period {text:?}: {e} (expected e.g. 2026-11)"))
        })?,
    };
    // A page of tenants per hold of the node's lock (settled periods from their
    // settlement), each rendered after its hold.
    let mut body = Vec::new();
    let mut rows = 0;
    let mut after = None;
    loop {
        let page = state.control.totals_page(period, after, PAGE_DEFAULT);
        for (tenant, values) in &page {
            let line = json!({
                "tenant": tenant.0.to_string(),
                "period": period.to_string(),
                "usage": metric_map(values),
            });
            serde_json::to_writer(&mut body, &line).expect("JSON serialises");
            body.push(b'\n');
        }
        rows += page.len();
        match page.last() {
            Some((last, _)) if page.len() == PAGE_DEFAULT => after = Some(*last),
            _ => break,
        }
    }
    Ok(file_response("application/x-ndjson", body, rows))
}
