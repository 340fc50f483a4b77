//! The OpenAPI document stays true to the router: every route the code declares is in
//! `docs/openapi.json` with its methods, every documented path exists, and the node
//! serves the document.

mod common;

use std::collections::BTreeSet;

use common::{test_config, TestNode};
use hyper::StatusCode;

/// `(method, path)` pairs declared with `.route(...)` in `src/http/` (the only code that
/// knows the router), in OpenAPI
/// spelling (`{*rest}` → `{rest}`).
fn declared_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    let mut files = Vec::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
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
    let spec: serde_json::Value =
        serde_json::from_str(tessera_edge::http::routes::OPENAPI).unwrap();
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
    // The operator console's pages and forms are HTML for a browser, not the API
    // (docs/OPERATIONS.md, "Console", lists them).
    let missing: Vec<_> = declared
        .difference(&documented)
        .filter(|route| **route != test_only && !route.1.starts_with("/console"))
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

/// Every `"code"` string in the document's error examples.
fn example_codes(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match inner {
                    serde_json::Value::String(code) if key == "code" => {
                        out.insert(code.clone());
                    }
                    _ => example_codes(inner, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| example_codes(i, out)),
        _ => {}
    }
}

/// The error codes the server can answer with (`ErrorCode`) are exactly the document's
/// `Error.error.code` enum, and every example in the document uses one of them: a code
/// added on one side only fails here.
#[test]
fn error_codes_match_the_document() {
    use tessera_edge::http::error::ErrorCode;
    let spec: serde_json::Value =
        serde_json::from_str(tessera_edge::http::routes::OPENAPI).unwrap();
    let documented: BTreeSet<String> = spec["components"]["schemas"]["Error"]["properties"]
        ["error"]["properties"]["code"]["enum"]
        .as_array()
        .expect("Error.error.code has an enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let served: BTreeSet<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(
        served.len(),
        ErrorCode::ALL.len(),
        "a wire code is declared twice"
    );
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "codes the server answers with that the document lacks"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented codes the server never answers with"
    );
    let description = spec["components"]["schemas"]["Error"]["description"]
        .as_str()
        .unwrap();
    for code in &served {
        assert!(
            description.contains(code.as_str()),
            "{code} is missing from the Error description's list by status"
        );
    }
    let mut examples = BTreeSet::new();
    example_codes(&spec["paths"], &mut examples);
    example_codes(&spec["components"]["responses"], &mut examples);
    assert!(
        examples.len() >= 10,
        "the example scan found too little: {examples:?}"
    );
    let unknown: Vec<_> = examples.difference(&served).collect();
    assert!(
        unknown.is_empty(),
        "examples with codes the server never answers: {unknown:?}"
    );
}
