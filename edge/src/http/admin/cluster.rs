//! The cluster view (members, freshness, lag, rights per node), leaving the cluster, and
//! decommissioning a member that is gone for good.

use super::*;

#[derive(Deserialize)]
pub(super) struct ClusterQuery {
    tenant: Option<String>,
}

/// Members (every peer, and every node decommissioned in the directory), freshness,
/// replication lag and message counts; with `tenant`, the escrow rights each node holds
/// for that tenant's quotas in the current periods.
pub(super) async fn cluster(
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
pub(super) async fn cluster_leave(
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
pub(super) struct Decommission {
    /// The node's id as `/admin/v1/cluster` prints it: 16 hex digits.
    node: String,
}

/// A node id as `/admin/v1/cluster` prints it (16 hex digits); anything else is a 400.
/// (Lenient parsing would let a truncated or mistyped id through, and a decommission is
/// final.)
pub(super) fn parse_node_id(text: &str) -> Result<NodeId, ApiError> {
    let well_formed = text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
    match u64::from_str_radix(text, 16) {
        Ok(id) if well_formed => Ok(NodeId(id)),
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidNodeId,
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
pub(super) async fn cluster_decommission(
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
