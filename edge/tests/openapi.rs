//! The OpenAPI document stays true to the router: every route the code declares is in
//! `docs/openapi.json` with its methods, every documented path exists, and the node
//! serves the document.

mod common;

use std::collections::BTreeSet;

use common::{test_config, TestNode};
use hyper::StatusCode;

/// `(method, path)` pairs declared with `.route(...)` in the router sources, in OpenAPI
/// spelling (`{*rest}` → `{rest}`).
fn declared_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for file in ["src/routes.rs", "src/admin.rs"] {
        let source =
            std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        // `.route("/path", get(x).delete(y))`, possibly over several lines.
        let flat: String = source.split_whitespace().collect::<Vec<_>>().join(" ");
        for chunk in flat.split(".route(").skip(1) {
            let Some(rest) = chunk.trim_start().strip_prefix('"') else {
                continue;
            };
            let Some((path, after)) = rest.split_once('"') else {
                continue;
            };
            // The handlers: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = after
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(after.len(), |(i, _)| i);
            let handlers = format!(" {}", &after[..end]);
            for method in ["get", "post", "put", "delete"] {
                let called = [" ", ",", "."]
                    .iter()
                    .any(|before| handlers.contains(&format!("{before}{method}(")));
                if called {
                    out.insert((method.to_owned(), path.replace("{*rest}", "{rest}")));
                }
            }
        }
    }
    out
}

fn documented_routes(spec: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "delete"] {
            if item.get(method).is_some() {
                out.insert((method.to_owned(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn every_route_is_documented_and_the_document_is_served() {
    let spec: serde_json::Value = serde_json::from_str(tessera_edge::routes::OPENAPI).unwrap();
    assert_eq!(spec["openapi"].as_str().unwrap().chars().next(), Some('3'));
    let declared = declared_routes();
    assert!(
        declared.len() >= 20,
        "the route scan found too little: {declared:?}"
    );
    let documented = documented_routes(&spec);
    // The fault harness's switch exists only in test builds (feature `fault-injection`,
    // `src/faults.rs`): not part of the API a node serves, so not documented.
    let test_only = ("put".to_owned(), "/admin/v1/faults".to_owned());
    let missing: Vec<_> = declared
        .difference(&documented)
        .filter(|route| **route != test_only)
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from docs/openapi.json: {missing:?}"
    );
    let stale: Vec<_> = documented.difference(&declared).collect();
    assert!(
        stale.is_empty(),
        "documented routes that do not exist: {stale:?}"
    );

    let node = TestNode::start(test_config()).await;
    let reply = node.get("/openapi.json").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let served: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(served, spec);
    node.stop().await;
}
