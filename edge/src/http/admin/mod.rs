//! The admin API (`/admin/v1/...`): tenants, keys, signing secrets, origins, quotas,
//! presets, watermarks, merged usage with harvest, the cluster view, leaving the cluster, and
//! decommissioning a member that is gone for good.
//!
//! Every edit is a directory op made on this node's replica: it is durable (group commit)
//! before the answer leaves, and reaches the other nodes by push and anti-entropy. Reads
//! answer from the local replica, so they show what this node knows, with enough
//! freshness information (harvest) to tell how complete that is.
//!
//! Callers: operators (a token whose SHA-256 is configured), and for
//! `GET /admin/v1/usage` only, a tenant key with the `usage` scope, for its own tenant.
//!
//! This module holds the router, the body and query extractors, the operator check and
//! the edit helpers every route shares; the routes live by subject in `tenants`,
//! `credentials`, `policy` (quotas, origins, presets, the watermark), `usage`, `cluster` and
//! `export`. Each reaches the node's state through one named operation of the control
//! plane and renders JSON after its lock is released.

use std::sync::Arc;

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

use crate::control::auth::{self, Caller};
use crate::control::ops::is_stale;
use crate::control::{now_ms, ControlPlane, DurableError};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::routes::AppState;

mod cluster;
pub mod console;
mod credentials;
mod export;
mod policy;
mod tenants;
mod usage;

use cluster::*;
use credentials::*;
use export::*;
use policy::*;
use tenants::*;
use usage::*;

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
                    ErrorCode::PayloadTooLarge,
                    "the admin request body is larger than http.admin_body_bytes_max",
                ),
                status => ApiError::new(status, ErrorCode::BodyReadFailed, rejection.body_text()),
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
        .route(
            "/admin/v1/tenants/{tenant}/watermark",
            put(set_watermark)
                .get(get_watermark)
                .delete(remove_watermark),
        )
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

impl Operator {
    /// The actor of operator token `token` (`operator:<12 hex digits of its SHA-256>`), the
    /// same from the API, the CLI and the console.
    fn of(token: &str) -> Operator {
        let digest = auth::hex(&auth::sha256(token.as_bytes()));
        Operator(format!("operator:{}", &digest[..12]))
    }
}

fn operator(state: &AppState, headers: &HeaderMap) -> Result<Operator, ApiError> {
    let token = auth::bearer(header_str(headers, header::AUTHORIZATION.as_str()))?;
    if auth::is_operator(&state.operator_digests, token) {
        Ok(Operator::of(token))
    } else {
        Err(ApiError::unauthorized(
            ErrorCode::InvalidToken,
            "the operator token is not valid",
        ))
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A key's or a secret's id as every answer prints it: 16 hex digits (`KeyId`'s and
/// `SecretId`'s `Display`), the one form the API takes and shows.
fn parse_hex_id(what: &'static str, text: &str) -> Result<u64, ApiError> {
    Some(text)
        .filter(|t| t.len() == 16)
        .and_then(|t| u64::from_str_radix(t, 16).ok())
        .filter(|id| (1..=ID_MAX).contains(id))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!(
                    "no {what} {:?} (a {what} is named by its 16-hex-digit id, as `{what} list` \
                     shows{})",
                    text.chars().take(40).collect::<String>(),
                    if what == "key" {
                        ", or by its 12-character prefix"
                    } else {
                        ""
                    }
                ),
            )
        })
}

fn parse_id(what: &'static str, text: &str) -> Result<u64, ApiError> {
    text.parse::<u64>()
        .ok()
        .filter(|id| (1..=ID_MAX).contains(id))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
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
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
        }
        E::TenantExists(_) | E::KeyExists(_) | E::SecretExists { .. } => {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::Exists, message)
        }
        E::TenantDeleted(_) => {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::TenantDeleted, message)
        }
        E::KeyRevoked(_) => ApiError::new(StatusCode::CONFLICT, ErrorCode::KeyRevoked, message),
        E::DecommissionSelf(_) => {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::DecommissionSelf, message)
        }
        E::InvalidField { .. } | E::UnknownScope(_) => {
            ApiError::unprocessable(ErrorCode::InvalidField, message)
        }
        E::Full { .. } | E::TooManyOps { .. } | E::SequenceExhausted(_) => ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::DirectoryFull,
            message,
        ),
    }
}

pub(super) fn durable_error(error: DurableError) -> ApiError {
    ApiError::overloaded(ErrorCode::StoreUnavailable, error.to_string(), 1)
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
            ErrorCode::InvalidJson,
            "the body must be a JSON object",
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidJson,
            e.to_string(),
        )
    })
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

/// Refuses text an operator would misread: control characters, and the invisible
/// formatting characters that reorder or hide text (bidirectional overrides and isolates,
/// such as U+202E, zero-width marks). Checked on new edits only: the directory's own
/// rules, which its replicas apply to every op they receive, stay as they were.
pub(super) fn visible_text(field: &str, value: &str) -> Result<(), ApiError> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{061C}' | '\u{FEFF}')
    };
    match value.chars().find(|c| hidden(*c)) {
        Some(c) => Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            format!(
                "{field} holds an invisible or control character (U+{:04X})",
                c as u32
            ),
        )),
        None => Ok(()),
    }
}
