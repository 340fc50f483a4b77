//! A tenant's credentials: API keys (created, revoked) and URL-signing secrets (added,
//! retired, made primary).

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateKey {
    #[serde(default)]
    scopes: Option<String>,
    #[serde(default)]
    label: String,
}

pub(super) async fn create_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
    AdminBody(body): AdminBody,
) -> Result<Response, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    let request: CreateKey = if body.is_empty() {
        CreateKey {
            scopes: None,
            label: String::new(),
        }
    } else {
        json_body(&body)?
    };
    let minted = mint_key(
        &state,
        &actor,
        tenant,
        request.scopes.as_deref().unwrap_or("resize"),
        &request.label,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": minted.id.to_string(),
            "tenant": tenant.0.to_string(),
            "key": minted.key,
            "prefix": minted.prefix,
            "scopes": scope_names(minted.scopes),
            "label": request.label,
            "note": "the key is shown once; only its digest is stored",
        })),
    )
        .into_response())
}

/// A key just created: the only time its secret exists outside its holder.
pub(super) struct MintedKey {
    pub id: KeyId,
    pub key: String,
    pub prefix: String,
    pub scopes: Scopes,
}

/// Creates a key of `tenant` with `scopes` (comma-separated names, at least one) and
/// `label`, durably; only its digest is stored.
pub(super) async fn mint_key(
    state: &AppState,
    actor: &Operator,
    tenant: TenantId,
    scopes: &str,
    label: &str,
) -> Result<MintedKey, ApiError> {
    visible_text("label", label)?;
    let scopes = Scopes::parse(scopes).map_err(directory_error)?;
    if scopes == Scopes::empty() {
        return Err(ApiError::unprocessable(
            ErrorCode::InvalidField,
            "a key needs at least one scope: resize, usage",
        ));
    }
    let minted = auth::new_key();
    let key = KeyId(random_id());
    edit(
        state,
        actor,
        vec![Change::CreateKey {
            tenant,
            key,
            prefix: minted.prefix.clone(),
            secret_hash: minted.secret_hash,
            scopes,
            label: label.to_owned(),
        }],
    )
    .await?;
    Ok(MintedKey {
        id: key,
        key: minted.key,
        prefix: minted.prefix,
        scopes,
    })
}

pub(super) async fn revoke_key(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, key)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
    revoke(&state, &actor, tenant, &key).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes the key of `tenant` named by `key`: its id, or the prefix its holder sees in
/// the key itself (`tsk_<prefix>_…`).
pub(super) async fn revoke(
    state: &AppState,
    actor: &Operator,
    tenant: TenantId,
    key: &str,
) -> Result<(), ApiError> {
    let key = match state.control.key_with_prefix(tenant, key) {
        Some(found) => found,
        None => KeyId(parse_hex_id("key", key)?),
    };
    edit(state, actor, vec![Change::RevokeKey { tenant, key }]).await
}

pub(super) async fn add_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let actor = operator(&state, &headers)?;
    let tenant = resolve_tenant(&state, &tenant).await?;
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
            "id": secret_id.to_string(),
            "secret": auth::hex(&secret),
            // The same secret as imgproxy's key/salt pair (`GET /ip/...`).
            "imgproxy": {
                "key": auth::hex(&secret),
                "salt": auth::hex(&crate::http::imgproxy::salt_of(&secret)),
            },
        })),
    )
        .into_response())
}

pub(super) async fn retire_secret(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((tenant, secret)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    secret_edit(&state, &headers, &tenant, &secret, |tenant, secret_id| {
        Change::RetireSigningSecret { tenant, secret_id }
    })
    .await
}

pub(super) async fn primary_secret(
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
pub(super) async fn secret_edit(
    state: &AppState,
    headers: &HeaderMap,
    tenant: &str,
    secret: &str,
    change: impl FnOnce(TenantId, SecretId) -> Change,
) -> Result<StatusCode, ApiError> {
    let actor = operator(state, headers)?;
    let tenant = resolve_tenant(state, tenant).await?;
    let secret_id = SecretId(parse_hex_id("secret", secret)?);
    edit(state, &actor, vec![change(tenant, secret_id)]).await?;
    Ok(StatusCode::NO_CONTENT)
}
