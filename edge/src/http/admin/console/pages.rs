//! The console's pages (cluster, tenants, tenant, usage) and the forms they post.
//!
//! Each page copies what it shows out of the replica through the control plane's named
//! operations (one short hold each, or a few for a search), then renders after the hold;
//! each form calls the same edit the JSON API's route calls.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tessera_crdt::{Metric, Period, PeriodKind, TenantId};
use tessera_sync::PeerView;

use super::chart::{self, Bar};
use super::html::{age, csrf_field, notice, page, respond, time, Esc, Nav, Url};
use super::session::Session;
use super::{error_page, AdminQuery, LoggedIn, Posted};
use crate::control::now_ms;
use crate::control::ops::is_stale;
use crate::http::admin::{
    durable_error, mint_key, new_tenant, period_kind_name, resolve_tenant, revoke, scope_names,
    set_tenant_status, status_name,
};
use crate::http::error::{ApiError, ErrorCode};
use crate::http::routes::AppState;

/// Tenants a page of the tenants list shows.
const TENANTS_PER_PAGE: usize = 50;
/// Tenants a search reads per hold of the node's lock.
const SEARCH_HOLD: usize = 200;
/// Audit entries the tenant page shows (the newest).
const HISTORY_SHOWN: usize = 100;
/// Months the usage chart shows, ending with the chosen one.
const CHART_MONTHS: usize = 12;

/// A metric as the console shows it: a label and a unit for values as stored.
fn metric_label(metric: Metric) -> (&'static str, &'static str) {
    match metric {
        Metric::Requests => ("Requests", ""),
        Metric::CpuMicros => ("CPU", "µs"),
        Metric::BytesIn => ("Bytes in", "B"),
        Metric::BytesOut => ("Bytes out", "B"),
    }
}

fn member_state(view: &PeerView, decommissioned: bool) -> &'static str {
    if decommissioned {
        "decommissioned"
    } else if view.left {
        "left"
    } else if view.connected {
        "connected"
    } else {
        "disconnected"
    }
}

#[derive(Deserialize)]
pub(super) struct ClusterQuery {
    tenant: Option<String>,
}

/// Members, their freshness and lag, this node's addresses, and with `tenant` the quota
/// rights each node holds for it.
pub(super) async fn cluster(
    State(state): State<Arc<AppState>>,
    LoggedIn(session): LoggedIn,
    AdminQuery(query): AdminQuery<ClusterQuery>,
) -> Response {
    let tenant_text = query
        .tenant
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let tenant = match tenant_text {
        Some(text) => match resolve_tenant(&state, text).await {
            Ok(id) => Some(id),
            Err(e) => return error_page(&session, Nav::Cluster, e),
        },
        None => None,
    };
    let now = now_ms();
    let net = state.control.net_stats();
    let report = state.control.cluster_report(tenant, now);
    let stale_ms = state.config.cluster.peer_stale_ms;
    let mut body = String::with_capacity(8_192);
    let _ = write!(
        body,
        "<main id=\"page-cluster\"><h1>Cluster</h1>\
         <p>This node: <code id=\"this-node\">{}</code>{}{} · replication {}</p>",
        report.this_node,
        if report.this_decommissioned {
            " <strong class=\"bad\">decommissioned</strong>"
        } else {
            ""
        },
        state
            .control
            .peer_id()
            .is_empty()
            .then(String::new)
            .unwrap_or_else(|| format!(" · peer <code>{}</code>", Esc(state.control.peer_id()))),
        if net.is_some() {
            "on"
        } else {
            "off (single node)"
        },
    );
    if let Some(net) = &net {
        let addrs: Vec<String> = net
            .listen_addrs
            .iter()
            .map(|a| format!("<code>{}</code>", Esc(&a.to_string())))
            .collect();
        let _ = write!(
            body,
            "<p class=\"muted\">Listening on {}</p>",
            addrs.join(", ")
        );
    }
    body.push_str(
        "<h2>Members</h2><table id=\"members\"><thead><tr><th>Node</th><th>State</th>\
         <th>Last heard</th><th class=\"num\">Lag</th><th>Fresh</th>\
         <th class=\"num\">Messages sent</th><th class=\"num\">Received</th></tr></thead><tbody>",
    );
    if report.members.is_empty() {
        body.push_str("<tr><td colspan=\"7\" class=\"muted\">No other member known.</td></tr>");
    }
    for member in &report.members {
        let view = &member.view;
        let (sent, received) = net
            .as_ref()
            .and_then(|n| n.per_peer.get(&member.id).copied())
            .unwrap_or_default();
        let stale = is_stale(view, member.decommissioned, now, stale_ms);
        let _ = write!(
            body,
            "<tr data-node=\"{id}\"><td><code>{id}</code></td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td>{}</td><td class=\"num\">{sent}</td><td class=\"num\">{received}</td></tr>",
            member_state(view, member.decommissioned),
            view.last_heard_ms
                .map(|t| format!("{} ago", age(now.saturating_sub(t))))
                .unwrap_or_else(|| "never".into()),
            view.lag_ms.map(age).unwrap_or_else(|| "—".into()),
            if stale { "<span class=\"bad\">stale</span>" } else { "<span class=\"good\">fresh</span>" },
            id = member.id,
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        "<h2>Quota rights per node</h2>\
         <form method=\"get\" action=\"/console/cluster\" class=\"row\" id=\"rights-form\">\
         <label>Tenant (name or id)<input name=\"tenant\" value=\"{}\"></label>\
         <button type=\"submit\">Show</button></form>",
        Esc(tenant_text.unwrap_or(""))
    );
    if let (Some(tenant), Some(quotas)) = (tenant, report.quotas) {
        rights_table(&mut body, tenant, &quotas);
    }
    body.push_str("</main>");
    respond(
        StatusCode::OK,
        page("Cluster", Nav::Cluster, Some(&session), "", &body),
    )
}

/// The quotas of `tenant` in their current periods: limit, consumed, remaining, and the
/// unspent rights each node holds.
fn rights_table(body: &mut String, tenant: TenantId, quotas: &[crate::control::ops::QuotaRow]) {
    let _ = write!(
        body,
        "<table id=\"rights\" data-tenant=\"{}\"><thead><tr><th>Quota</th><th>Period</th>\
         <th class=\"num\">Limit</th><th class=\"num\">Consumed</th><th class=\"num\">Remaining</th>\
         <th>Rights per node</th></tr></thead><tbody>",
        tenant.0
    );
    if quotas.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">No quota set.</td></tr>");
    }
    for q in quotas {
        let limit = q.limit.unwrap_or(q.quota);
        let consumed = q.consumed.unwrap_or(0);
        let rights: Vec<String> = q
            .rights
            .iter()
            .map(|(node, rights)| format!("<code>{node}</code>: {rights}"))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{limit}</td><td class=\"num\">{consumed}</td>\
             <td class=\"num\">{}</td><td>{}</td></tr>",
            q.metric.name(),
            q.period,
            limit.saturating_sub(consumed),
            if rights.is_empty() {
                "<span class=\"muted\">not granted yet (no request since the period began)</span>".to_owned()
            } else {
                rights.join("<br>")
            },
        );
    }
    body.push_str("</tbody></table>");
}

#[derive(Deserialize)]
pub(super) struct TenantsQuery {
    q: Option<String>,
    after: Option<u64>,
}

/// Live tenants by id, a page at a time, optionally only those whose name contains `q`
/// (case-insensitive); and the form that creates one.
pub(super) async fn tenants(
    State(state): State<Arc<AppState>>,
    LoggedIn(session): LoggedIn,
    AdminQuery(query): AdminQuery<TenantsQuery>,
) -> Response {
    let search = query.q.as_deref().map(str::trim).unwrap_or("").to_owned();
    let after = query.after.map(TenantId);
    let (rows, next) = if search.is_empty() {
        let rows = state.control.tenants_page(after, TENANTS_PER_PAGE);
        let next = (rows.len() == TENANTS_PER_PAGE)
            .then(|| rows.last().map(|r| r.id))
            .flatten();
        (rows, next)
    } else {
        // A name is not an index of the directory: read it in holds of SEARCH_HOLD
        // tenants, on a blocking thread, until a page of matches (admin pages only).
        let (control, needle) = (state.control.clone(), search.to_lowercase());
        let found = tokio::task::spawn_blocking(move || {
            let mut rows = Vec::new();
            let mut cursor = after;
            loop {
                let batch = control.tenants_page(cursor, SEARCH_HOLD);
                let full = batch.len() == SEARCH_HOLD;
                for row in batch {
                    cursor = Some(row.id);
                    if row.name.to_lowercase().contains(&needle) {
                        rows.push(row);
                        if rows.len() == TENANTS_PER_PAGE {
                            return (rows, cursor);
                        }
                    }
                }
                if !full {
                    return (rows, None);
                }
            }
        })
        .await;
        match found {
            Ok(found) => found,
            Err(e) => {
                return error_page(
                    &session,
                    Nav::Tenants,
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        ErrorCode::InternalError,
                        e.to_string(),
                    ),
                )
            }
        }
    };
    let body = tenants_body(&session, &search, &rows, next);
    respond(
        StatusCode::OK,
        page("Tenants", Nav::Tenants, Some(&session), "", &body),
    )
}

fn tenants_body(
    session: &Session,
    search: &str,
    rows: &[crate::control::ops::TenantRow],
    next: Option<TenantId>,
) -> String {
    let mut body = String::with_capacity(4_096 + rows.len() * 200);
    let _ = write!(
        body,
        "<main id=\"page-tenants\"><h1>Tenants</h1>\
         <form method=\"get\" action=\"/console/tenants\" class=\"row\" id=\"search\">\
         <label>Name contains<input name=\"q\" value=\"{}\" type=\"search\"></label>\
         <button type=\"submit\">Search</button></form>\
         <table id=\"tenants\"><thead><tr><th>Name</th><th>Id</th><th>Status</th><th>Home</th></tr></thead><tbody>",
        Esc(search)
    );
    if rows.is_empty() {
        body.push_str("<tr><td colspan=\"4\" class=\"muted\">No tenant.</td></tr>");
    }
    for row in rows {
        let _ = write!(
            body,
            "<tr><td><a class=\"tenant-link\" href=\"/console/tenants/{id}\">{}</a></td>\
             <td><code>{id}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            Esc(&row.name),
            status_name(row.status),
            row.home,
            id = row.id.0,
        );
    }
    body.push_str("</tbody></table>");
    if let Some(next) = next {
        let _ = write!(
            body,
            "<p><a id=\"next-page\" href=\"/console/tenants?q={}&amp;after={}\">Next page</a></p>",
            Url(search),
            next.0
        );
    }
    let _ = write!(
        body,
        "<h2>New tenant</h2><form id=\"create-tenant\" method=\"post\" action=\"/console/tenants\" class=\"row\">{}\
         <label>Name<input name=\"name\" required maxlength=\"200\"></label>\
         <label>Home node (hex id, default this node)<input name=\"home\" pattern=\"[0-9a-fA-F]{{1,16}}\"></label>\
         <button type=\"submit\">Create</button></form></main>",
        csrf_field(session)
    );
    body
}

/// `POST /console/tenants`: creates a tenant, then shows it.
pub(super) async fn create_tenant(
    State(state): State<Arc<AppState>>,
    Posted {
        session,
        actor,
        form,
    }: Posted,
) -> Response {
    let name = form.get("name").unwrap_or("").trim();
    let home = form.get("home").map(str::trim).filter(|h| !h.is_empty());
    match new_tenant(&state, &actor, name, home).await {
        Ok((tenant, _)) => {
            tenant_page(
                &state,
                &session,
                tenant,
                StatusCode::CREATED,
                &notice(true, &format!("Tenant {name:?} created.")),
            )
            .await
        }
        Err(e) => error_page(&session, Nav::Tenants, e),
    }
}

/// `GET /console/tenants/{tenant}`.
pub(super) async fn tenant(
    State(state): State<Arc<AppState>>,
    LoggedIn(session): LoggedIn,
    Path(tenant): Path<String>,
) -> Response {
    match resolve_tenant(&state, &tenant).await {
        Ok(id) => tenant_page(&state, &session, id, StatusCode::OK, "").await,
        Err(e) => error_page(&session, Nav::Tenants, e),
    }
}

/// A tenant: status, keys (create, revoke), signing secrets, origins, quotas with used,
/// remaining and rights per node, presets, and the audit history.
async fn tenant_page(
    state: &AppState,
    session: &Session,
    id: TenantId,
    status: StatusCode,
    shown: &str,
) -> Response {
    let now = now_ms();
    let Some(t) = state.control.tenant_detail(id) else {
        return error_page(
            session,
            Nav::Tenants,
            ApiError::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, "no such tenant"),
        );
    };
    let report = state.control.cluster_report(Some(id), now);
    let history = state.control.history(id);
    let csrf = csrf_field(session);
    let mut body = String::with_capacity(16_384);
    let status_text = status_name(t.row.status);
    let _ = write!(
        body,
        "<main id=\"page-tenant\" data-tenant=\"{id}\"><h1>{}</h1>\
         <p>Id <code>{id}</code> · status <strong id=\"tenant-status\">{status_text}</strong>{} · home <code>{}</code> · \
         <a href=\"/console/usage?tenant={id}\">usage</a> · <a href=\"/console/cluster?tenant={id}\">rights per node</a></p>",
        Esc(&t.row.name),
        if t.deleted { " <strong class=\"bad\">deleted</strong>" } else { "" },
        t.row.home,
        id = id.0,
    );
    if !t.deleted {
        let (next, label) = if status_text == "active" {
            ("suspended", "Suspend")
        } else {
            ("active", "Reactivate")
        };
        let _ = write!(
            body,
            "<form id=\"set-status\" method=\"post\" action=\"/console/tenants/{}/status\" class=\"row\">{csrf}\
             <input type=\"hidden\" name=\"status\" value=\"{next}\"><button type=\"submit\">{label}</button></form>",
            id.0
        );
    }
    // Keys.
    body.push_str(
        "<h2>API keys</h2><table id=\"keys\"><thead><tr><th>Prefix</th><th>Label</th><th>Scopes</th>\
         <th>Created</th><th>State</th><th></th></tr></thead><tbody>",
    );
    if t.keys.is_empty() {
        body.push_str("<tr><td colspan=\"6\" class=\"muted\">No key.</td></tr>");
    }
    for key in &t.keys {
        let prefix = key.prefix.clone().unwrap_or_else(|| key.id.to_string());
        let action = if key.revoked {
            String::new()
        } else {
            format!(
                "<form class=\"inline revoke-key\" method=\"post\" action=\"/console/tenants/{}/keys/{}/revoke\">{csrf}\
                 <button type=\"submit\">Revoke</button></form>",
                id.0,
                Url(&prefix)
            )
        };
        let _ = write!(
            body,
            "<tr data-key-prefix=\"{p}\"><td><code>{p}</code></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"key-state\">{}</td><td>{action}</td></tr>",
            Esc(&key.label),
            scope_names(key.scopes).join(", "),
            key.created_ms.map(time).unwrap_or_default(),
            if key.revoked { "<span class=\"bad\">revoked</span>" } else { "active" },
            p = Esc(&prefix),
        );
    }
    let _ = write!(
        body,
        "</tbody></table><form id=\"create-key\" method=\"post\" action=\"/console/tenants/{}/keys\" class=\"row\">{csrf}\
         <label>Label<input name=\"label\" maxlength=\"200\"></label>\
         <label><span><input type=\"checkbox\" name=\"scope\" value=\"resize\" checked> resize</span></label>\
         <label><span><input type=\"checkbox\" name=\"scope\" value=\"usage\"> usage</span></label>\
         <button type=\"submit\">Create key</button></form>",
        id.0
    );
    // Signing secrets.
    body.push_str("<h2>URL-signing secrets</h2><table id=\"secrets\"><thead><tr><th>Id</th><th>State</th></tr></thead><tbody>");
    if t.secrets.is_empty() {
        body.push_str("<tr><td colspan=\"2\" class=\"muted\">None: signed URLs are refused (<code>tessera secret add</code>).</td></tr>");
    }
    for (sid, active, primary) in &t.secrets {
        let _ = write!(
            body,
            "<tr><td><code>{sid}</code></td><td>{}</td></tr>",
            match (active, primary) {
                (true, true) => "primary (signs)",
                (true, false) => "active (verifies)",
                _ => "retired",
            }
        );
    }
    body.push_str("</tbody></table>");
    // Origins.
    body.push_str("<h2>Allowed origins</h2><ul id=\"origins\">");
    if t.origins.is_empty() {
        body.push_str("<li class=\"muted\">None: signed URLs cannot fetch a source.</li>");
    }
    for origin in &t.origins {
        let _ = write!(body, "<li><code>{}</code></li>", Esc(origin));
    }
    body.push_str("</ul>");
    // Quotas: the limits set, and how the current periods stand.
    body.push_str(
        "<h2>Quotas</h2><table id=\"quotas\"><thead><tr><th>Metric</th><th>Per</th><th class=\"num\">Limit</th></tr></thead><tbody>",
    );
    if t.quotas.is_empty() {
        body.push_str("<tr><td colspan=\"3\" class=\"muted\">No quota: usage is metered, not limited.</td></tr>");
    }
    for (metric, kind, limit) in &t.quotas {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{limit}</td></tr>",
            metric.name(),
            period_kind_name(*kind)
        );
    }
    body.push_str("</tbody></table>");
    if let Some(quotas) = &report.quotas {
        if !quotas.is_empty() {
            body.push_str("<h3>Current periods</h3>");
            rights_table(&mut body, id, quotas);
        }
    }
    // Presets.
    body.push_str("<h2>Presets</h2><table id=\"presets\"><thead><tr><th>Name</th><th>Options</th></tr></thead><tbody>");
    if t.presets.is_empty() {
        body.push_str("<tr><td colspan=\"2\" class=\"muted\">None.</td></tr>");
    }
    for (name, options) in &t.presets {
        let _ = write!(
            body,
            "<tr><td><code>{}</code></td><td><code>{}</code></td></tr>",
            Esc(name),
            Esc(options)
        );
    }
    body.push_str("</tbody></table>");
    // Audit history, newest first.
    let _ = write!(
        body,
        "<h2>Audit history</h2><p class=\"muted\">{} change(s){}.</p><table id=\"history\"><thead><tr><th>When</th><th>Who</th>\
         <th>Node</th><th>Change</th></tr></thead><tbody>",
        history.len(),
        if history.len() > HISTORY_SHOWN { format!(", the newest {HISTORY_SHOWN} shown") } else { String::new() }
    );
    for op in history.iter().rev().take(HISTORY_SHOWN) {
        let _ = write!(
            body,
            "<tr><td class=\"time\">{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            time(op.at_ms),
            Esc(&op.actor),
            op.origin,
            Esc(&op.change.to_string())
        );
    }
    body.push_str("</tbody></table></main>");
    respond(
        status,
        page(&t.row.name, Nav::Tenants, Some(session), shown, &body),
    )
}

/// `POST /console/tenants/{tenant}/keys`: creates a key and shows it, once.
pub(super) async fn create_key(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Posted {
        session,
        actor,
        form,
    }: Posted,
) -> Response {
    let scopes: Vec<&str> = form.all("scope").collect();
    let label = form.get("label").unwrap_or("").trim().to_owned();
    let result = async {
        let id = resolve_tenant(&state, &tenant).await?;
        let minted = mint_key(&state, &actor, id, &scopes.join(","), &label).await?;
        Ok::<_, ApiError>((id, minted))
    }
    .await;
    match result {
        Ok((id, minted)) => {
            let shown = format!(
                "<div id=\"notice\" class=\"ok\" role=\"status\"><p>Key <code>{}</code> created. \
                 Copy it now: it is shown once, only its digest is stored.</p>\
                 <p id=\"new-key\" class=\"secret\">{}</p></div>",
                Esc(&minted.prefix),
                Esc(&minted.key)
            );
            tenant_page(&state, &session, id, StatusCode::CREATED, &shown).await
        }
        Err(e) => error_page(&session, Nav::Tenants, e),
    }
}

/// `POST /console/tenants/{tenant}/keys/{key}/revoke` (`key`: its prefix or id).
pub(super) async fn revoke_key(
    State(state): State<Arc<AppState>>,
    Path((tenant, key)): Path<(String, String)>,
    Posted {
        session,
        actor,
        form: _,
    }: Posted,
) -> Response {
    let result = async {
        let id = resolve_tenant(&state, &tenant).await?;
        revoke(&state, &actor, id, &key).await?;
        Ok::<_, ApiError>(id)
    }
    .await;
    match result {
        Ok(id) => {
            let shown = notice(
                true,
                &format!("Key {key} revoked: every node refuses it once the change reaches it."),
            );
            tenant_page(&state, &session, id, StatusCode::OK, &shown).await
        }
        Err(e) => error_page(&session, Nav::Tenants, e),
    }
}

/// `POST /console/tenants/{tenant}/status` (`status`: `active` or `suspended`).
pub(super) async fn set_status(
    State(state): State<Arc<AppState>>,
    Path(tenant): Path<String>,
    Posted {
        session,
        actor,
        form,
    }: Posted,
) -> Response {
    let status = form.get("status").unwrap_or("").to_owned();
    let result = async {
        let id = resolve_tenant(&state, &tenant).await?;
        set_tenant_status(&state, &actor, id, &status).await?;
        Ok::<_, ApiError>(id)
    }
    .await;
    match result {
        Ok(id) => {
            let shown = notice(true, &format!("Tenant is now {status}."));
            tenant_page(&state, &session, id, StatusCode::OK, &shown).await
        }
        Err(e) => error_page(&session, Nav::Tenants, e),
    }
}

#[derive(Deserialize)]
pub(super) struct UsageQuery {
    tenant: Option<String>,
    period: Option<String>,
    metric: Option<String>,
}

/// A tenant's merged usage in a month: totals, each node's contribution and freshness
/// (harvest), the period's finality, and a chart of the months before it.
pub(super) async fn usage(
    State(state): State<Arc<AppState>>,
    LoggedIn(session): LoggedIn,
    AdminQuery(query): AdminQuery<UsageQuery>,
) -> Response {
    let now = now_ms();
    let tenant_text = query.tenant.as_deref().map(str::trim).unwrap_or("");
    let period_text = query
        .period
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let metric = Metric::ALL
        .into_iter()
        .find(|m| Some(m.name()) == query.metric.as_deref())
        .unwrap_or(Metric::Requests);
    let mut body = String::with_capacity(8_192);
    let metric_options: String = Metric::ALL
        .iter()
        .map(|m| {
            format!(
                "<option value=\"{}\"{}>{}</option>",
                m.name(),
                if *m == metric { " selected" } else { "" },
                metric_label(*m).0
            )
        })
        .collect();
    let _ = write!(
        body,
        "<main id=\"page-usage\"><h1>Usage</h1>\
         <form method=\"get\" action=\"/console/usage\" class=\"row\" id=\"usage-form\">\
         <label>Tenant (name or id)<input name=\"tenant\" value=\"{}\" required></label>\
         <label>Month<input name=\"period\" value=\"{}\" placeholder=\"{}\" pattern=\"[0-9]{{4}}-[0-9]{{2}}\"></label>\
         <label>Chart<select name=\"metric\">{metric_options}</select></label>\
         <button type=\"submit\">Show</button></form>",
        Esc(tenant_text),
        Esc(period_text.unwrap_or("")),
        Period::containing(PeriodKind::Month, now),
    );
    if tenant_text.is_empty() {
        body.push_str("</main>");
        return respond(
            StatusCode::OK,
            page("Usage", Nav::Usage, Some(&session), "", &body),
        );
    }
    let tenant = match resolve_tenant(&state, tenant_text).await {
        Ok(t) => t,
        Err(e) => return error_page(&session, Nav::Usage, e),
    };
    let period = match period_text {
        None => Period::containing(PeriodKind::Month, now),
        Some(text) => match text.parse::<Period>() {
            Ok(p @ Period::Month { .. }) => p,
            _ => {
                return error_page(
                    &session,
                    Nav::Usage,
                    ApiError::bad_parameter(format!(
                        "period {text:?}: expected a month such as 2026-11"
                    )),
                )
            }
        },
    };
    let Some(report) = state.control.usage_report(tenant, period, now) else {
        return error_page(
            &session,
            Nav::Usage,
            ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such tenant on this node",
            ),
        );
    };
    let name = state
        .control
        .tenant_detail(tenant)
        .map(|t| t.row.name)
        .unwrap_or_else(|| tenant.0.to_string());
    // The chart: this month and the ones before it, merged totals from the ledger.
    let mut months = vec![period];
    while months.len() < CHART_MONTHS {
        match months.last().and_then(|p| p.start_ms().checked_sub(1)) {
            Some(before) if before >= 1 => {
                months.push(Period::containing(PeriodKind::Month, before))
            }
            _ => break,
        }
    }
    months.reverse();
    let (label, unit) = metric_label(metric);
    let bars: Vec<Bar> = months
        .iter()
        .map(|m| {
            let value = if *m == period {
                report.totals[metric.index()]
            } else {
                state
                    .control
                    .usage_report(tenant, *m, now)
                    .map(|r| r.totals[metric.index()])
                    .unwrap_or(0)
            };
            Bar {
                label: m.to_string(),
                value,
                title: format!("{m}: {}", chart::short(value, unit)),
            }
        })
        .collect();
    let stale_ms = state.config.cluster.peer_stale_ms;
    let never_heard = PeerView::default();
    let _ = write!(
        body,
        "<h2><a href=\"/console/tenants/{}\">{}</a> in {period}</h2><p>Period <strong id=\"finality\">{}</strong>{}</p>\
         <table id=\"totals\"><thead><tr>",
        tenant.0,
        Esc(&name),
        if report.missing_seals.is_empty() {
            "final"
        } else {
            "open"
        },
        if report.forgotten {
            " · forgotten (settled and compacted past retention)"
        } else {
            ""
        },
    );
    for m in Metric::ALL {
        let _ = write!(body, "<th class=\"num\">{}</th>", metric_label(m).0);
    }
    body.push_str("</tr></thead><tbody><tr>");
    for m in Metric::ALL {
        let _ = write!(
            body,
            "<td class=\"num\">{}</td>",
            chart::short(report.totals[m.index()], metric_label(m).1)
        );
    }
    body.push_str("</tr></tbody></table>");
    let _ = write!(
        body,
        "<h2>{label} by month</h2>{}",
        chart::bars(
            "usage-chart",
            &format!("{label} by month, merged over every node"),
            unit,
            &bars
        )
    );
    body.push_str(
        "<h2>Harvest: each node's contribution</h2><table id=\"harvest\"><thead><tr><th>Node</th>\
         <th class=\"num\">Requests</th><th class=\"num\">CPU</th><th class=\"num\">Bytes in</th><th class=\"num\">Bytes out</th>\
         <th>Last heard</th><th>Fresh</th></tr></thead><tbody>",
    );
    // This node is listed even before it bills anything: its zero is part of the harvest.
    let mut per_node = report.per_node.clone();
    per_node.entry(report.this_node).or_default();
    for (node, values) in &per_node {
        let this = *node == report.this_node;
        let view = report.peers.get(node).unwrap_or(&never_heard);
        let decommissioned = report.decommissioned.contains(node);
        let stale = !this && is_stale(view, decommissioned, now, stale_ms);
        let _ = write!(
            body,
            "<tr><td><code>{node}</code>{}</td>",
            if this { " (this node)" } else { "" }
        );
        for m in Metric::ALL {
            let _ = write!(
                body,
                "<td class=\"num\">{}</td>",
                chart::short(values[m.index()], metric_label(m).1)
            );
        }
        let _ = write!(
            body,
            "<td>{}</td><td>{}</td></tr>",
            if this {
                "now".to_owned()
            } else {
                view.last_heard_ms
                    .map(|t| format!("{} ago", age(now.saturating_sub(t))))
                    .unwrap_or_else(|| "never".into())
            },
            if decommissioned {
                "decommissioned"
            } else if stale {
                "<span class=\"bad\">stale</span>"
            } else {
                "<span class=\"good\">fresh</span>"
            }
        );
    }
    body.push_str("</tbody></table>");
    if !report.missing_seals.is_empty() {
        body.push_str("<p class=\"muted\">Seals missing from: ");
        let missing: Vec<String> = report
            .missing_seals
            .iter()
            .map(|(n, _)| format!("<code>{n}</code>"))
            .collect();
        body.push_str(&missing.join(", "));
        body.push_str(
            " (the period becomes final once every member that could write it has sealed it).</p>",
        );
    }
    body.push_str("</main>");
    // Monotonic reads, as the API: show only what survives a crash of this node.
    if let Err(e) = state
        .control
        .flushed(report.ticket, state.commit_timeout())
        .await
    {
        return error_page(&session, Nav::Usage, durable_error(e));
    }
    respond(
        StatusCode::OK,
        page("Usage", Nav::Usage, Some(&session), "", &body),
    )
}
