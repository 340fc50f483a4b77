//! Fuzz target: the admin routes' JSON bodies (`tessera_edge::http::admin::parse_body`), then what
//! the route does with a body that parses: the checks it makes (status names, the home node's
//! hex id, key scopes, a preset's resize options) and the directory edit it asks for, applied
//! to a directory holding one tenant.
//!
//! Input: one byte choosing the route (its body type), then the body.
//! Properties: no panic; a refused body is a client error (4xx); an edit the local directory
//! accepts is accepted by a peer that receives it, and both then show the same directory (a
//! node must never acknowledge an edit its peers would refuse).

use serde_json::Value;
use tessera_crdt::{Change, Directory, Metric, NodeId, PeriodKind, Scopes, TenantId};
use tessera_edge::http::admin;
use tessera_resize::Limits;

const ROUTES: [&str; 6] = [
    "CreateTenant",
    "SetStatus",
    "CreateKey",
    "SetQuota",
    "SetOrigin",
    "SetPreset",
];

/// The tenant every edit but `CreateTenant` is about.
const TENANT: TenantId = TenantId(7);
const HOME: NodeId = NodeId(1);

fn main() {
    let limits = Limits::default();
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, body)) = data.split_first() else {
            return;
        };
        let route = ROUTES[usize::from(selector) % ROUTES.len()];
        if let Err(e) = admin::parse_body(route, body) {
            tessera_fuzz::assert_client_error(&e);
            return;
        }
        let json: Value = serde_json::from_slice(body).expect("a body that parses is JSON");
        let text = |field: &str| json.get(field).and_then(Value::as_str);
        let change = match route {
            "CreateTenant" => {
                let home = match text("home") {
                    None => HOME,
                    Some(hex) => match u64::from_str_radix(hex, 16) {
                        Ok(id) => NodeId(id),
                        Err(_) => return,
                    },
                };
                Change::CreateTenant {
                    tenant: TenantId(8),
                    name: text("name").expect("name is required").to_owned(),
                    home,
                }
            }
            "SetStatus" => Change::SetTenantStatus {
                tenant: TENANT,
                status: match text("status") {
                    Some("active") => tessera_crdt::directory::TenantStatus::Active,
                    Some("suspended") => tessera_crdt::directory::TenantStatus::Suspended,
                    _ => return,
                },
            },
            "CreateKey" => match Scopes::parse(text("scopes").unwrap_or("resize")) {
                Err(_) => return,
                Ok(scopes) => Change::CreateKey {
                    tenant: TENANT,
                    key: tessera_crdt::KeyId(3),
                    prefix: "tsk_fuzz".to_owned(),
                    secret_hash: [7; 32],
                    scopes,
                    label: text("label").unwrap_or("").to_owned(),
                },
            },
            "SetQuota" => Change::SetQuota {
                tenant: TENANT,
                metric: Metric::Requests,
                period: PeriodKind::Month,
                limit: json.get("limit").and_then(Value::as_u64),
            },
            "SetOrigin" => Change::SetOrigin {
                tenant: TENANT,
                origin: text("origin").expect("origin is required").to_owned(),
                allowed: json.get("allowed").and_then(Value::as_bool).unwrap_or(true),
            },
            _ => {
                let options = text("options");
                if let Some(options) = options {
                    tessera_fuzz::check_query(options, None, &limits);
                    let defaults = tessera_edge::http::params::Defaults {
                        quality: 80,
                        avif_speed: 8,
                    };
                    if tessera_edge::http::params::parse(options, None, defaults, &limits).is_err()
                    {
                        return;
                    }
                }
                Change::SetPreset {
                    tenant: TENANT,
                    name: "thumb".to_owned(),
                    options: options.map(str::to_owned),
                }
            }
        };
        check_edit(change);
    });
}

/// Applies `change` on a node holding [`TENANT`]; if that node accepts it, a peer must
/// accept what it sends and end with the same view.
fn check_edit(change: Change) {
    let mut local = Directory::new(HOME);
    local
        .change(
            1,
            "operator",
            Change::CreateTenant {
                tenant: TENANT,
                name: "fuzz".to_owned(),
                home: HOME,
            },
        )
        .expect("a fresh directory creates a tenant");
    if local.change(2, "operator", change).is_err() {
        return;
    }
    let mut peer = Directory::new(NodeId(2));
    let delta = local.delta_since(peer.version_vector(), usize::MAX);
    peer.apply_delta(&delta)
        .expect("a peer accepts an edit the local node accepted");
    assert!(peer.same_view(&local), "the peer shows another directory");
}
