//! One whole node, in-process, end to end: operator creates a tenant and keys, the tenant
//! resizes with its key, usage shows exactly what was billed (requests, CPU, bytes), and
//! every refusal — bad keys, revoked keys, suspended tenants, missing scopes, another
//! tenant's usage, bad images, exhausted quotas — is answered with its status and code
//! and bills nothing. A restart from the same data directory keeps all of it.

mod common;

use common::{json_of, photo, photos_dir, Reply, TestNode};
use hyper::{Method, StatusCode};
use image::ImageEncoder;
use serde_json::{json, Value};
use tessera_edge::config::Config;

use common::TOKEN;

fn config(data_dir: &std::path::Path) -> Config {
    let mut config = common::keyed_config();
    config.data_dir = data_dir.to_owned();
    config
}

async fn admin(node: &TestNode, method: Method, path: &str, body: Option<Value>) -> Reply {
    common::with_bearer(node.addr, TOKEN, method, path, body).await
}

/// `GET /admin/v1/tenants/{tenant}`, as JSON.
async fn tenant_detail(node: &TestNode, tenant: &str) -> Value {
    json_of(
        &admin(
            node,
            Method::GET,
            &format!("/admin/v1/tenants/{tenant}"),
            None,
        )
        .await,
    )
}

async fn create_tenant(node: &TestNode, name: &str) -> String {
    common::create_tenant(node.addr, TOKEN, name).await
}

async fn create_key(node: &TestNode, tenant: &str, scopes: &str) -> (String, String) {
    common::create_key(node.addr, tenant, scopes).await
}

async fn resize(node: &TestNode, key: Option<&str>, query: &str, body: Vec<u8>) -> Reply {
    let bearer = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    node.post(&format!("/v1/resize?{query}"), &headers, body)
        .await
}

async fn usage(node: &TestNode, tenant: &str, credential: &str) -> Reply {
    let bearer = format!("Bearer {credential}");
    common::request(
        node.addr,
        Method::GET,
        &format!("/admin/v1/usage?tenant={tenant}"),
        &[("authorization", &bearer)],
        Vec::new(),
    )
    .await
}

async fn totals(node: &TestNode, tenant: &str) -> Value {
    common::totals(node.addr, common::TOKEN, tenant).await
}

#[tokio::test]
async fn tenant_key_resize_and_exact_usage_across_a_restart() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let (key_id, key) = create_key(&node, &tenant, "resize").await;
    let input = photo(&photos, "seeding-256k.jpg");

    let mut bytes_out = 0;
    for width in [100, 200, 300] {
        let reply = resize(&node, Some(&key), &format!("w={width}"), input.clone()).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        bytes_out += reply.body.len() as u64;
    }
    let t = totals(&node, &tenant).await;
    assert_eq!(t["requests"], 3);
    assert_eq!(t["bytes_in"], 3 * input.len() as u64);
    assert_eq!(t["bytes_out"], bytes_out);
    assert!(t["cpu_micros"].as_u64().unwrap() > 0, "{t}");
    let report = json_of(&usage(&node, &tenant, TOKEN).await);
    assert_eq!(report["nodes"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["nodes"][0]["this_node"], true);
    assert_eq!(report["stale"], false);

    // Revoked: refused, nothing billed.
    let reply = admin(
        &node,
        Method::DELETE,
        &format!("/admin/v1/tenants/{tenant}/keys/{key_id}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let reply = resize(&node, Some(&key), "w=100", input.clone()).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.error_code(), "key_revoked");
    assert_eq!(totals(&node, &tenant).await, t);

    // Restart from the same directory: usage, keys and revocation all survive.
    let (_, second_key) = create_key(&node, &tenant, "resize").await;
    node.stop().await;
    let node = TestNode::start(config(dir.path())).await;
    assert_eq!(totals(&node, &tenant).await, t);
    let reply = resize(&node, Some(&key), "w=100", input.clone()).await;
    assert_eq!(reply.error_code(), "key_revoked");
    let reply = resize(&node, Some(&second_key), "w=100", input.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(totals(&node, &tenant).await["requests"], 4);
    node.stop().await;
}

#[tokio::test]
async fn every_bad_credential_is_refused_and_nothing_is_billed() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let (_, key) = create_key(&node, &tenant, "resize").await;
    let (_, usage_only) = create_key(&node, &tenant, "usage").await;
    let input = photo(&photos, "seeding-256k.jpg");
    let unknown = "tsk_0123456789ab_0123456789abcdef0123456789abcdef";
    let wrong_secret = format!("{}_{}", &key[..16], "f".repeat(32));

    let cases: Vec<(Option<&str>, StatusCode, &str)> = vec![
        (None, StatusCode::UNAUTHORIZED, "missing_key"),
        (Some("not-a-key"), StatusCode::UNAUTHORIZED, "malformed_key"),
        (Some(unknown), StatusCode::UNAUTHORIZED, "invalid_key"),
        (Some(&wrong_secret), StatusCode::UNAUTHORIZED, "invalid_key"),
        (
            Some(&usage_only),
            StatusCode::FORBIDDEN,
            "insufficient_scope",
        ),
        (Some(TOKEN), StatusCode::UNAUTHORIZED, "malformed_key"),
    ];
    for (credential, status, code) in cases {
        let reply = resize(&node, credential, "w=100", input.clone()).await;
        assert_eq!(reply.status, status, "{credential:?}: {reply:?}");
        assert_eq!(reply.error_code(), code, "{credential:?}");
        if status == StatusCode::UNAUTHORIZED {
            assert!(reply.header("www-authenticate").is_some());
        }
    }
    // A malformed Authorization header.
    let reply = node
        .post(
            "/v1/resize?w=100",
            &[("authorization", "Basic abc")],
            input.clone(),
        )
        .await;
    assert_eq!(reply.error_code(), "malformed_key");

    // Suspended tenant: 403; reactivated: served.
    let status_path = format!("/admin/v1/tenants/{tenant}/status");
    let reply = admin(
        &node,
        Method::POST,
        &status_path,
        Some(json!({ "status": "suspended" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let reply = resize(&node, Some(&key), "w=100", input.clone()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "tenant_suspended");
    assert_eq!(totals(&node, &tenant).await["requests"], 0);
    admin(
        &node,
        Method::POST,
        &status_path,
        Some(json!({ "status": "active" })),
    )
    .await;
    let reply = resize(&node, Some(&key), "w=100", input.clone()).await;
    assert_eq!(reply.status, StatusCode::OK);

    // Deleted tenant: its keys stop working.
    let other = create_tenant(&node, "gone").await;
    let (_, other_key) = create_key(&node, &other, "resize").await;
    let reply = admin(
        &node,
        Method::DELETE,
        &format!("/admin/v1/tenants/{other}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = resize(&node, Some(&other_key), "w=100", input.clone()).await;
    assert_eq!(reply.error_code(), "tenant_deleted");

    // The admin API wants the operator token.
    for bearer in [
        None,
        Some("Bearer top_wrong"),
        Some("Bearer ".to_owned() + &key).as_deref(),
    ] {
        let headers: Vec<(&str, &str)> = bearer
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        let reply = common::request(
            node.addr,
            Method::GET,
            "/admin/v1/tenants",
            &headers,
            Vec::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bearer:?}");
    }
    assert_eq!(totals(&node, &tenant).await["requests"], 1);
    node.stop().await;
}

#[tokio::test]
async fn a_tenant_key_reads_its_own_usage_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let a = create_tenant(&node, "a").await;
    let b = create_tenant(&node, "b").await;
    let (_, a_usage) = create_key(&node, &a, "usage").await;
    let (_, a_resize) = create_key(&node, &a, "resize").await;
    let reply = usage(&node, &a, &a_usage).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let reply = usage(&node, &b, &a_usage).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "other_tenant");
    let reply = usage(&node, &a, &a_resize).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.error_code(), "insufficient_scope");
    let reply = usage(&node, "12345", "tsk_x").await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    let reply = usage(&node, "12345", TOKEN).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "unknown tenant");
    assert_eq!(reply.error_code(), "not_found");
    let reply = usage(&node, &a, "top_wrong").await;
    assert_eq!(reply.error_code(), "invalid_token");
    let reply = admin(&node, Method::GET, "/admin/v1/usage", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "invalid_parameter");
    node.stop().await;
}

#[tokio::test]
async fn bad_input_with_a_valid_key_is_refused_and_not_billed() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.http.body_bytes_max = 2 << 20;
    let node = TestNode::start(cfg).await;
    let tenant = create_tenant(&node, "acme").await;
    let (_, key) = create_key(&node, &tenant, "resize").await;
    let good = photo(&photos, "seeding-256k.jpg");
    let bad = photos.join("bad");
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        ("w=100", Vec::new(), StatusCode::BAD_REQUEST),
        (
            "w=100",
            photo(&bad, "truncated.jpg"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "w=100",
            photo(&bad, "random-bytes.jpg"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "w=100",
            photo(&bad, "text-not-image.png"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "w=100",
            photo(&bad, "bomb-65000x65000.jpg"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        ("w=0", good.clone(), StatusCode::BAD_REQUEST),
        ("w=100&fit=sideways", good.clone(), StatusCode::BAD_REQUEST),
        ("w=100&q=1000", good.clone(), StatusCode::BAD_REQUEST),
        ("w=100", vec![0xff; 3 << 20], StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (query, body, status) in cases {
        let reply = resize(&node, Some(&key), query, body).await;
        assert_eq!(reply.status, status, "{query}: {reply:?}");
        reply.error_code();
    }
    let t = totals(&node, &tenant).await;
    assert_eq!(
        t,
        json!({ "requests": 0, "cpu_micros": 0, "bytes_in": 0, "bytes_out": 0 })
    );
    let metrics = node.metrics().await;
    let billed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_billed_requests_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert_eq!(billed as u64, t["requests"].as_u64().unwrap());
    node.stop().await;
}

#[tokio::test]
async fn a_request_quota_admits_exactly_its_limit() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let (_, key) = create_key(&node, &tenant, "resize").await;
    let reply = admin(
        &node,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}/quotas/requests/month"),
        Some(json!({ "limit": 3 })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    // A quota on what is only known after the work is refused.
    let reply = admin(
        &node,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}/quotas/cpu_micros/month"),
        Some(json!({ "limit": 3 })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.error_code(), "quota_not_enforceable");

    let input = photo(&photos, "seeding-256k.jpg");
    let mut ok = 0;
    for _ in 0..5 {
        let reply = resize(&node, Some(&key), "w=64", input.clone()).await;
        match reply.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(reply.error_code(), "quota_exhausted");
                let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
                assert!(retry >= 1);
            }
            other => panic!("unexpected {other}: {reply:?}"),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(totals(&node, &tenant).await["requests"], 3);
    let cluster = admin(
        &node,
        Method::GET,
        &format!("/admin/v1/cluster?tenant={tenant}"),
        None,
    )
    .await;
    let cluster = json_of(&cluster);
    assert_eq!(cluster["tenant"]["quotas"][0]["consumed"], 3, "{cluster}");
    node.stop().await;
}

#[tokio::test]
async fn admin_edits_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let cases: Vec<(Method, String, Option<Value>, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/admin/v1/tenants".into(),
            Some(json!({ "nom": "x" })),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/admin/v1/tenants".into(),
            Some(json!({ "name": "x".repeat(300) })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::POST,
            "/admin/v1/tenants/999/keys".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/admin/v1/tenants/abc/keys".into(),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            format!("/admin/v1/tenants/{tenant}/keys"),
            Some(json!({ "scopes": "admin" })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::PUT,
            format!("/admin/v1/tenants/{tenant}/quotas/requests/week"),
            Some(json!({ "limit": 1 })),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Method::PUT,
            format!("/admin/v1/tenants/{tenant}/presets/thumb"),
            Some(json!({ "options": "w=0" })),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            Method::DELETE,
            format!("/admin/v1/tenants/{tenant}/keys/0000000000000077"),
            None,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let reply = admin(&node, method.clone(), &path, body).await;
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        assert_eq!(reply.error_code(), code, "{method} {path}");
    }
    // Refused by the extractors before any handler: still JSON errors, nothing created.
    let bearer = format!("Bearer {TOKEN}");
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(70 << 10));
    let reply = common::request(
        node.addr,
        Method::POST,
        "/admin/v1/tenants",
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        huge.into_bytes(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply:?}");
    assert_eq!(reply.error_code(), "payload_too_large");
    for path in [
        "/admin/v1/export/records?from_ms=soon",
        "/admin/v1/export/totals?to_ms=-1",
    ] {
        let reply = admin(&node, Method::GET, path, None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {reply:?}");
        assert_eq!(reply.error_code(), "invalid_parameter", "{path}");
    }
    let listed = json_of(&admin(&node, Method::GET, "/admin/v1/tenants", None).await);
    assert_eq!(listed["tenants"].as_array().unwrap().len(), 1, "{listed}");
    // Valid edits show up in the tenant and its audit history.
    let reply = admin(
        &node,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}/presets/thumb"),
        Some(json!({ "options": "w=200&h=200&fit=cover" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let reply = admin(
        &node,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}/origins"),
        Some(json!({ "origin": "https://img.example.com" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let reply = admin(
        &node,
        Method::POST,
        &format!("/admin/v1/tenants/{tenant}/secrets"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let shown = tenant_detail(&node, &tenant).await;
    assert_eq!(shown["presets"]["thumb"], "w=200&h=200&fit=cover");
    assert_eq!(shown["origins"][0], "https://img.example.com");
    assert_eq!(shown["signing_secrets"].as_array().unwrap().len(), 1);
    let history = json_of(
        &admin(
            &node,
            Method::GET,
            &format!("/admin/v1/tenants/{tenant}/history"),
            None,
        )
        .await,
    );
    let history = history["history"].as_array().unwrap().clone();
    assert_eq!(history.len(), 4, "{history:?}");
    assert!(history
        .iter()
        .all(|h| h["actor"].as_str().unwrap().starts_with("operator:")));
    assert!(
        !history.iter().any(|h| h["change"]
            .as_str()
            .unwrap()
            .contains(&shown["id"].to_string())
            && h["change"].as_str().unwrap().contains("secret: [")),
        "secrets are redacted"
    );
    node.stop().await;
}

#[tokio::test]
async fn an_idempotent_retry_is_answered_again_and_billed_once() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let (_, key) = create_key(&node, &tenant, "resize").await;
    let input = photo(&photos, "seeding-256k.jpg");
    let bearer = format!("Bearer {key}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("idempotency-key", "order-42"),
    ];
    let first = node.post("/v1/resize?w=120", &headers, input.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert!(first.header("idempotent-replayed").is_none());
    let again = node.post("/v1/resize?w=120", &headers, input.clone()).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("etag"), first.header("etag"));
    // The same key for another request: refused.
    let other = node.post("/v1/resize?w=121", &headers, input.clone()).await;
    assert_eq!(other.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(other.error_code(), "idempotency_key_reused");
    // A malformed key: refused before any work.
    let bad = node
        .post(
            "/v1/resize?w=120",
            &[
                ("authorization", bearer.as_str()),
                ("idempotency-key", "has space"),
            ],
            input.clone(),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(totals(&node, &tenant).await["requests"], 1);
    node.stop().await;
}

#[tokio::test]
async fn the_per_tenant_rate_limit_refuses_bursts_without_billing() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.quota.rate_per_s = 0.5;
    cfg.quota.rate_burst = 2.0;
    let node = TestNode::start(cfg).await;
    let tenant = create_tenant(&node, "acme").await;
    let (_, key) = create_key(&node, &tenant, "resize").await;
    let input = photo(&photos, "seeding-256k.jpg");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let reply = resize(&node, Some(&key), "w=64", input.clone()).await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(reply.error_code(), "rate_limited");
            assert!(reply.header("retry-after").is_some());
        }
        statuses.push(reply.status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert_eq!(totals(&node, &tenant).await["requests"], 2);
    node.stop().await;
}

/// Runs the `tessera` CLI against the node (blocking, off the runtime).
async fn cli(node: &TestNode, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    for (name, _) in std::env::vars() {
        if name.starts_with("TESSERA_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .args(["--node", &format!("http://{}", node.addr), "--token", TOKEN]);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_records_export_as_jsonl_and_parquet_and_the_cli_drives_it_all() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;

    // The CLI: create a tenant and a key, list them.
    let out = cli(&node, &["tenant", "create", "acme", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let tenant = serde_json::from_slice::<Value>(&out.stdout).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = cli(
        &node,
        &["key", "create", &tenant, "--scopes", "resize", "--json"],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let created = serde_json::from_slice::<Value>(&out.stdout).unwrap();
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["id"].as_str().unwrap().to_owned();
    let out = cli(&node, &["tenant", "list"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID") && table.contains("acme"), "{table}");

    let input = photo(&photos, "seeding-256k.jpg");
    let mut request_ids = Vec::new();
    for width in [50, 60, 70] {
        let reply = resize(&node, Some(&key), &format!("w={width}"), input.clone()).await;
        assert_eq!(reply.status, StatusCode::OK);
        request_ids.push(reply.header("x-request-id").unwrap().to_owned());
    }
    // A refused request leaves no record.
    let reply = resize(&node, Some(&key), "w=0", input.clone()).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);

    let reply = admin(
        &node,
        Method::GET,
        "/admin/v1/export/records?format=jsonl",
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    // Streamed, not built whole first (its length is not known before the end).
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert_eq!(reply.header("content-length"), None);
    let records: Vec<Value> = reply
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    for (record, id) in records.iter().zip(&request_ids) {
        assert_eq!(record["request_id"], id.as_str());
        assert_eq!(record["tenant"], tenant.as_str());
        assert_eq!(record["key"], key_id.as_str());
        assert_eq!(record["status"], 200);
        assert_eq!(record["bytes_in"], input.len() as u64);
        assert!(record["cpu_micros"].as_u64().unwrap() > 0);
    }
    let files = std::fs::read_dir(dir.path().join("usage")).unwrap().count();
    assert!(files >= 1, "records moved to hourly files");

    // Parquet through the CLI.
    let parquet_path = dir.path().join("records.parquet");
    let out = cli(
        &node,
        &[
            "export",
            "records",
            "--format",
            "parquet",
            "--out",
            parquet_path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(&parquet_path).unwrap()).unwrap();
    assert_eq!(reader.metadata().file_metadata().num_rows(), 3);

    // Totals, and the usage table.
    let out = cli(&node, &["export", "totals"]).await;
    let line: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["usage"]["requests"], 3, "{line}");
    let out = cli(&node, &["usage", &tenant]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("TOTAL") && table.contains(" 3 "), "{table}");
    // A CLI error names the problem and fails.
    let out = cli(&node, &["key", "revoke", &tenant, "999"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not_found"),
        "{out:?}"
    );
    node.stop().await;
}

// It sets up a member heard of once through the core itself (`ControlPlane::with_node`,
// feature `fault-injection`, which `cargo test --workspace` turns on).
#[cfg(feature = "fault-injection")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_decommissions_a_dead_member_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let path = "/admin/v1/cluster/decommission";
    let dead = tessera_crdt::NodeId(0xdead_beef);
    let dead_hex = dead.to_string();
    // A member known here but never heard from since: every usage read says stale.
    {
        use tessera_sync::Input;
        node.state.control.with_node(|core| {
            core.handle(0, Input::PeerConnected(dead));
            core.handle(0, Input::PeerDisconnected(dead));
        });
    }
    let report = json_of(&usage(&node, &tenant, TOKEN).await);
    assert_eq!(report["stale"], true, "{report}");

    // Operator only.
    let body = json!({ "node": dead_hex });
    for token in [None, Some("top_not-the-token"), Some("tsk_000000000000_0")] {
        let reply = match token {
            Some(token) => {
                common::with_bearer(node.addr, token, Method::POST, path, Some(body.clone())).await
            }
            None => {
                let bytes = body.to_string().into_bytes();
                common::request(node.addr, Method::POST, path, &[], bytes).await
            }
        };
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{token:?}: {reply:?}"
        );
    }
    // Refusals, each a JSON error that records nothing.
    let own = json_of(&admin(&node, Method::GET, "/admin/v1/cluster", None).await)["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not 16 hex digits: short, long, a non-digit, a sign, empty.
    let malformed = [
        "deadbeef",
        "000000000deadbeef",
        "00000000deadbeeg",
        "+0000000deadbeef",
        "",
    ];
    let mut cases: Vec<(Value, StatusCode, &str)> = malformed
        .iter()
        .map(|id| {
            (
                json!({ "node": id }),
                StatusCode::BAD_REQUEST,
                "invalid_node_id",
            )
        })
        .collect();
    cases.extend([
        (
            json!({ "node": 3735928559u64 }),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json!({ "nodes": dead_hex }),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            json!({ "node": "0000000000000000" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            json!({ "node": own }),
            StatusCode::CONFLICT,
            "decommission_self",
        ),
    ]);
    for (body, status, code) in cases {
        let reply = admin(&node, Method::POST, path, Some(body.clone())).await;
        assert_eq!(reply.status, status, "{body}: {reply:?}");
        assert_eq!(reply.error_code(), code, "{body}");
    }
    assert_eq!(
        node.state
            .control
            .with_node(|core| core.directory().decommissioned().count()),
        0
    );

    // Recorded: the view, the cluster report and the usage report say so.
    let reply = admin(&node, Method::POST, path, Some(body.clone())).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let answer = json_of(&reply);
    assert_eq!(answer["node"], dead_hex.as_str());
    assert_eq!(answer["decommissioned"], true);
    assert_eq!(answer["already_decommissioned"], false);
    assert!(answer["actor"].as_str().unwrap().starts_with("operator:"));
    assert!(node
        .state
        .control
        .with_node(|core| core.directory().is_decommissioned(dead)));
    let cluster = json_of(&admin(&node, Method::GET, "/admin/v1/cluster", None).await);
    let members = cluster["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{cluster}");
    assert_eq!(members[0]["node"], dead_hex.as_str());
    assert_eq!(members[0]["decommissioned"], true);
    assert_eq!(members[0]["stale"], false);
    assert_eq!(cluster["node"]["decommissioned"], false);
    let report = json_of(&usage(&node, &tenant, TOKEN).await);
    assert_eq!(report["stale"], false, "{report}");
    // Again: accepted, and said to be a repeat.
    let reply = admin(&node, Method::POST, path, Some(body.clone())).await;
    assert_eq!(json_of(&reply)["already_decommissioned"], true, "{reply:?}");

    // The CLI, on a member never heard of here: listed, decommissioned, not stale.
    let other = "00000000000abcde";
    let out = cli(&node, &["cluster", "decommission", other, "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["node"], other);
    let out = cli(&node, &["cluster", "status"]).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("DECOMMISSIONED"), "{table}");
    let row = table.lines().find(|l| l.starts_with(other)).unwrap();
    assert!(row.ends_with("false  true"), "{table}");
    let out = cli(&node, &["cluster", "decommission", &own]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("decommission_self"),
        "{out:?}"
    );

    // Durable: a restart keeps both.
    node.stop().await;
    let node = TestNode::start(config(dir.path())).await;
    let directory: Vec<_> = node
        .state
        .control
        .with_node(|core| core.directory().decommissioned().collect());
    assert_eq!(directory, vec![tessera_crdt::NodeId(0xabcde), dead]);
    node.stop().await;
}

// The switch exists only in test builds with the feature (`cargo test --workspace` turns it
// on through `tessera-tests`; `cargo test -p tessera-edge --features fault-injection`).
#[cfg(feature = "fault-injection")]
#[tokio::test]
async fn a_store_that_cannot_commit_stops_billable_work_and_bills_nothing() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let (_, key) = create_key(&node, &tenant, "resize").await;
    let input = photo(&photos, "seeding-256k.jpg");
    assert_eq!(
        resize(&node, Some(&key), "w=80", input.clone())
            .await
            .status,
        StatusCode::OK
    );

    // The disk "fills up": the request in flight is refused, not answered unbilled.
    node.state
        .control
        .faults()
        .set(tessera_edge::faults::StoreMode::Fail, 0);
    let reply = resize(&node, Some(&key), "w=81", input.clone()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
    assert_eq!(reply.error_code(), "store_unavailable");
    assert!(reply.header("retry-after").is_some());
    // From now on: not ready, and billable work refused before any work.
    let ready = node.get("/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.error_code(), "store_failed");
    let reply = resize(&node, Some(&key), "w=82", input.clone()).await;
    assert_eq!(reply.error_code(), "store_failed");
    let metrics = node.metrics().await;
    assert!(metrics.contains("tessera_store_failed 1"), "{metrics}");
    node.stop().await;

    // A restart recovers what was durable: exactly the one answered request.
    let node = TestNode::start(config(dir.path())).await;
    assert_eq!(node.get("/readyz").await.status, StatusCode::OK);
    assert_eq!(totals(&node, &tenant).await["requests"], 1);
    node.stop().await;
}

/// Listing tenants goes a page at a time (each page one short hold of the node's lock):
/// the pages cover every live tenant once, in id order, and say where the next starts;
/// the CLI follows them. Every hold of the lock, this listing's included, is observed in
/// the lock-hold histogram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_listed_in_pages_and_every_lock_hold_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let mut created = Vec::new();
    for i in 0..25 {
        created.push(create_tenant(&node, &format!("t{i}")).await);
    }
    let deleted = created.remove(7);
    let reply = admin(
        &node,
        Method::DELETE,
        &format!("/admin/v1/tenants/{deleted}"),
        None,
    )
    .await;
    assert!(reply.status.is_success(), "{reply:?}");
    created.sort_by_key(|id| id.parse::<u64>().unwrap());

    let mut listed = Vec::new();
    let mut path = "/admin/v1/tenants?limit=10".to_owned();
    let mut pages = 0;
    loop {
        let page = json_of(&admin(&node, Method::GET, &path, None).await);
        pages += 1;
        let tenants = page["tenants"].as_array().unwrap();
        assert!(tenants.len() <= 10, "{page}");
        listed.extend(tenants.iter().map(|t| t["id"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(next) => path = format!("/admin/v1/tenants?limit=10&after={next}"),
            None => break,
        }
    }
    assert_eq!(listed, created, "every live tenant once, in id order");
    assert_eq!(pages, 3);
    let whole = json_of(&admin(&node, Method::GET, "/admin/v1/tenants", None).await);
    assert_eq!(whole["tenants"].as_array().unwrap().len(), 24);
    assert_eq!(whole["next"], Value::Null);
    let reply = admin(&node, Method::GET, "/admin/v1/tenants?limit=0", None).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    let out = cli(&node, &["tenant", "list", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["tenants"].as_array().unwrap().len(), 24);

    let metrics = node.metrics().await;
    let holds: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tessera_node_lock_hold_seconds_count "))
        .expect("the lock-hold histogram")
        .parse()
        .unwrap();
    // At least: 25 creations, a deletion, five listings.
    assert!(holds >= 31, "{holds} holds observed");
    node.stop().await;
}

/// A node on its own (no cluster key, so no transport to tick its core) still seals its
/// periods and reads them final: last month is final here a grace after the start. Before,
/// nothing ticked such a node's core: `final` stayed false for ever, and nothing was ever
/// compacted or forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_its_own_seals_and_reads_last_month_final() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.http.request_deadline_ms = 1_000;
    config.store.commit_timeout_ms = 500;
    config.billing.seal_grace_ms = 2_000;
    assert!(config.cluster_key().is_none());
    let node = TestNode::start(config).await;
    let tenant = create_tenant(&node, "acme").await;
    let now = tessera_edge::control::now_ms();
    let this_month = tessera_crdt::Period::containing(tessera_crdt::PeriodKind::Month, now);
    let last_month = tessera_crdt::Period::containing(
        tessera_crdt::PeriodKind::Month,
        this_month.start_ms() - 1,
    );
    let path = format!("/admin/v1/usage?tenant={tenant}&period={last_month}");
    let started = std::time::Instant::now();
    let report = loop {
        let report = json_of(&admin(&node, Method::GET, &path, None).await);
        if report["final"] == true || started.elapsed() > std::time::Duration::from_secs(30) {
            break report;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(report["final"], true, "{report}");
    assert_eq!(report["missing_seals"], json!([]), "{report}");
    // This month is not over: not final.
    let path = format!("/admin/v1/usage?tenant={tenant}&period={this_month}");
    let report = json_of(&admin(&node, Method::GET, &path, None).await);
    assert_eq!(report["final"], false, "{report}");
    node.stop().await;
}

/// The totals export, streamed a page at a time: one JSON line per tenant with usage in
/// the period, the usage merged, no row count up front.
#[tokio::test]
async fn totals_export_streams_a_line_per_tenant_with_usage() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let input = photo(&photos, "seeding-256k.jpg");
    let mut billed = std::collections::BTreeMap::new();
    for (name, requests) in [("one", 1u64), ("two", 2)] {
        let tenant = create_tenant(&node, name).await;
        let (_, key) = create_key(&node, &tenant, "resize").await;
        for _ in 0..requests {
            let reply = resize(&node, Some(&key), "w=16", input.clone()).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        }
        billed.insert(tenant, requests);
    }
    // A tenant with no usage has no line.
    create_tenant(&node, "idle").await;
    let reply = admin(&node, Method::GET, "/admin/v1/export/totals", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(reply.header("x-rows"), None);
    let lines: Vec<Value> = std::str::from_utf8(&reply.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let exported: std::collections::BTreeMap<String, u64> = lines
        .iter()
        .map(|l| {
            (
                l["tenant"].as_str().unwrap().to_owned(),
                l["usage"]["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(exported, billed, "{lines:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_record_files_past_their_retention_are_deleted() {
    use tessera_crdt::{Period, PeriodKind};
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage");
    std::fs::create_dir_all(&usage).unwrap();
    let now = tessera_edge::control::now_ms();
    let name = |at_ms: u64| {
        let hour = Period::containing(PeriodKind::Hour, at_ms).to_string();
        usage.join(format!("records-{hour}.jsonl"))
    };
    let old = name(now - 3 * 86_400_000);
    let recent = name(now - 3_600_000);
    for path in [&old, &recent] {
        std::fs::write(path, b"").unwrap();
    }
    let mut config = config(dir.path());
    config.store.records_retention_days = 2;
    let node = TestNode::start(config).await;
    // The mover prunes at start, then hourly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while old.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !old.exists(),
        "a file 3 days old outlived a 2-day retention"
    );
    assert!(recent.exists(), "an hour-old file was deleted");
    node.stop().await;
}

/// A node with no operator token configured generates one at its first start and writes
/// it to a file only its user can read (not to the log); it works, and a restart does not
/// make another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_operator_token_goes_to_a_private_file_and_works() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.auth.operator_token_sha256.clear();
    let node = TestNode::start(config.clone()).await;
    let path = dir.path().join(tessera_edge::control::OPERATOR_TOKEN_FILE);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(token.starts_with("top_"), "{token}");
    let listing =
        common::with_bearer(node.addr, &token, Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(listing.status, StatusCode::OK, "{listing:?}");
    let wrong = common::with_bearer(node.addr, TOKEN, Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    node.stop().await;
    // Read and deleted by the operator; the next start keeps the stored digest.
    std::fs::remove_file(&path).unwrap();
    let node = TestNode::start(config).await;
    assert!(!path.exists(), "a second token was generated");
    let listing =
        common::with_bearer(node.addr, &token, Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(listing.status, StatusCode::OK);
    node.stop().await;
}

/// What an operator could store by mistake is refused with a reason, at the API (so the
/// CLI and scripts alike): origins that would never match a fetch, names with hidden
/// characters, keys without a scope, a home no member is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_what_would_silently_never_work() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let origins = format!("/admin/v1/tenants/{tenant}/origins");
    for bad in [
        "images.example.com",
        "javascript:alert(1)",
        "https://images.example.com/photos",
        "https://images.example.com/?x=1",
        "ftp://images.example.com",
        "https://user@images.example.com",
    ] {
        let reply = admin(&node, Method::PUT, &origins, Some(json!({ "origin": bad }))).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{bad}: {reply:?}"
        );
        assert_eq!(reply.error_code(), "invalid_field", "{bad}");
    }
    // Written as operators do, stored as fetches compare.
    for (written, stored) in [
        (
            "HTTPS://Images.Example.com:443/",
            "https://images.example.com",
        ),
        ("http://cdn.example.com:8080", "http://cdn.example.com:8080"),
    ] {
        let reply = admin(
            &node,
            Method::PUT,
            &origins,
            Some(json!({ "origin": written })),
        )
        .await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT, "{written}: {reply:?}");
        let shown = tenant_detail(&node, &tenant).await;
        let listed: Vec<&str> = shown["origins"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.as_str())
            .collect();
        assert!(listed.contains(&stored), "{written} -> {listed:?}");
    }

    for name in ["evil\u{202E}gpj.exe", "zero\u{200B}width", "tab\there"] {
        let reply = admin(
            &node,
            Method::POST,
            "/admin/v1/tenants",
            Some(json!({ "name": name })),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}: {reply:?}"
        );
    }
    let reply = admin(
        &node,
        Method::POST,
        "/admin/v1/tenants",
        Some(json!({ "name": "elsewhere", "home": "00000000000000ff" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{reply:?}");
    let reply = admin(
        &node,
        Method::POST,
        &format!("/admin/v1/tenants/{tenant}/keys"),
        Some(json!({ "scopes": "" })),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{reply:?}");
    node.stop().await;
}

/// The CLI lists what a tenant has — keys, secrets, origins, quotas, presets — as tables,
/// and as JSON (that part only) with `--json`; and carries its watermark file both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_a_tenant_s_keys_secrets_origins_quotas_and_presets() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let t = tenant.as_str();
    for args in [
        vec![
            "key",
            "create",
            t,
            "--scopes",
            "resize,usage",
            "--label",
            "web",
        ],
        vec!["secret", "add", t],
        vec!["origin", "allow", t, "https://img.example.com"],
        vec!["quota", "set", t, "--metric", "bytes_in", "--limit", "5000"],
        vec!["preset", "set", t, "thumb", "w=100&h=100"],
    ] {
        let out = cli(&node, &args).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    let text = |out: std::process::Output| {
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let keys = text(cli(&node, &["key", "list", t]).await);
    assert!(keys.starts_with("ID"), "{keys}");
    assert!(keys.contains("web") && keys.contains("resize"), "{keys}");
    let secrets = text(cli(&node, &["secret", "list", t]).await);
    assert_eq!(secrets.lines().count(), 2, "{secrets}");
    let origins = text(cli(&node, &["origin", "list", t]).await);
    assert_eq!(origins, "https://img.example.com\n");
    let quotas = text(cli(&node, &["quota", "list", t]).await);
    assert!(
        quotas.contains("bytes_in") && quotas.contains("5000"),
        "{quotas}"
    );
    let presets = text(cli(&node, &["preset", "list", t]).await);
    assert!(
        presets.contains("thumb") && presets.contains("w=100&h=100"),
        "{presets}"
    );
    let json: Value =
        serde_json::from_str(&text(cli(&node, &["origin", "list", t, "--json"]).await)).unwrap();
    assert_eq!(json, json!(["https://img.example.com"]));

    // The watermark travels as a file: set, read back byte for byte, cleared.
    let logo = dir.path().join("logo.png");
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            &[255u8, 0, 0, 255].repeat(6),
            3,
            2,
            image::ExtendedColorType::Rgba8,
        )
        .unwrap();
    std::fs::write(&logo, &png).unwrap();
    let logo = logo.to_str().unwrap();
    text(cli(&node, &["watermark", "set", t, logo]).await);
    let back = dir.path().join("back.png");
    text(
        cli(
            &node,
            &["watermark", "get", t, "--out", back.to_str().unwrap()],
        )
        .await,
    );
    assert_eq!(std::fs::read(&back).unwrap(), png);
    text(cli(&node, &["watermark", "clear", t]).await);
    let gone = cli(&node, &["watermark", "get", t]).await;
    assert!(!gone.status.success(), "{gone:?}");
    let refused = cli(&node, &["watermark", "set", t, "Cargo.toml"]).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("unsupported_media_type"),
        "{refused:?}"
    );
    node.stop().await;
}

/// A key is named one way everywhere: its 16-hex-digit id, as creation, listings and
/// usage records show it — or the prefix its holder sees in the key itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_revoked_by_its_id_or_its_prefix_and_one_id_form_shows_everywhere() {
    let Some(photos) = photos_dir() else { return };
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let tenant = create_tenant(&node, "acme").await;
    let created = json_of(
        &admin(
            &node,
            Method::POST,
            &format!("/admin/v1/tenants/{tenant}/keys"),
            Some(json!({ "scopes": "resize" })),
        )
        .await,
    );
    let (id, key, prefix) = (
        created["id"].as_str().unwrap().to_owned(),
        created["key"].as_str().unwrap().to_owned(),
        created["prefix"].as_str().unwrap().to_owned(),
    );
    assert_eq!(id.len(), 16, "{created}");
    assert!(key.contains(&prefix), "{created}");
    let listed = tenant_detail(&node, &tenant).await;
    assert_eq!(listed["keys"][0]["id"], id.as_str());
    let input = photo(&photos, "seeding-256k.jpg");
    assert_eq!(
        resize(&node, Some(&key), "w=50", input.clone())
            .await
            .status,
        StatusCode::OK
    );
    // A decimal form is not an id any more: 404, saying which forms are.
    let decimal = u64::from_str_radix(&id, 16).unwrap().to_string();
    let reply = admin(
        &node,
        Method::DELETE,
        &format!("/admin/v1/tenants/{tenant}/keys/{decimal}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    assert!(
        String::from_utf8_lossy(&reply.body).contains("16-hex-digit id"),
        "{reply:?}"
    );
    let reply = admin(
        &node,
        Method::DELETE,
        &format!("/admin/v1/tenants/{tenant}/keys/{prefix}"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let refused = resize(&node, Some(&key), "w=50", input).await;
    assert_eq!(refused.error_code(), "key_revoked");
    node.stop().await;
}

/// Tenant names are unique (as far as the node knows) and name a tenant wherever its id
/// does, in the API and so in the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_names_are_unique_and_name_the_tenant_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let node = TestNode::start(config(dir.path())).await;
    let id = create_tenant(&node, "acme").await;
    let again = admin(
        &node,
        Method::POST,
        "/admin/v1/tenants",
        Some(json!({ "name": "acme" })),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{again:?}");
    assert_eq!(again.error_code(), "exists");
    assert!(
        String::from_utf8_lossy(&again.body).contains(&id),
        "{again:?}"
    );
    let digits = admin(
        &node,
        Method::POST,
        "/admin/v1/tenants",
        Some(json!({ "name": "12345" })),
    )
    .await;
    assert_eq!(
        digits.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{digits:?}"
    );
    // By name, the same tenant as by id.
    assert_eq!(tenant_detail(&node, "acme").await["id"], id.as_str());
    let out = cli(&node, &["key", "create", "acme", "--json"]).await;
    assert!(out.status.success(), "{out:?}");
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["tenant"], id.as_str());
    let missing = admin(&node, Method::GET, "/admin/v1/tenants/nobody", None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // Deleted, the name is free again.
    let deleted = admin(
        &node,
        Method::DELETE,
        &format!("/admin/v1/tenants/{id}"),
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{deleted:?}");
    let other = create_tenant(&node, "acme").await;
    assert_ne!(other, id);
    node.stop().await;
}
