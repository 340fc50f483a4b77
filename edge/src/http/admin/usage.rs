//! Merged usage of one tenant and period, with harvest: each node's contribution and how
//! fresh it is, so a reader can tell whether the sum is complete.

use super::*;

#[derive(Deserialize)]
pub(super) struct UsageQuery {
    tenant: Option<String>,
    period: Option<String>,
}

/// Merged totals of one tenant and period, with harvest: each node's contribution and
/// when this node last heard from it, so a reader can tell whether the sum is complete.
pub(super) async fn usage(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    AdminQuery(query): AdminQuery<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    // Who asks first: nothing about tenants is told to an unauthenticated caller.
    let credential = auth::bearer(header_str(&headers, header::AUTHORIZATION.as_str()))?;
    let is_operator = auth::is_operator(&state.operator_digests, credential);
    if !is_operator && credential.starts_with(auth::TOKEN_PREFIX) {
        return Err(ApiError::unauthorized(
            ErrorCode::InvalidToken,
            "the operator token is not valid",
        ));
    }
    let tenant = query
        .tenant
        .as_deref()
        .ok_or_else(|| ApiError::bad_parameter("the `tenant` parameter is required"))?;
    let tenant = resolve_tenant(&state, tenant).await?;
    if !is_operator {
        // Hashed before the lock; only the probe is made under it.
        let caller: Caller = auth::present(credential)
            .and_then(|presented| state.control.authenticate(&presented, Scopes::USAGE))?;
        if caller.tenant != tenant {
            return Err(ApiError::forbidden(
                ErrorCode::OtherTenant,
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
                ErrorCode::NotFound,
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

pub(super) fn metric_map(values: &[u64; 4]) -> Value {
    let mut map = serde_json::Map::new();
    for metric in Metric::ALL {
        map.insert(metric.name().to_owned(), values[metric.index()].into());
    }
    map.into()
}
