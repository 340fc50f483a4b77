//! Inputs the fuzz targets (fuzz/) crashed on, replayed without AFL: each file under
//! `tests/fuzz-regressions/<target>/` is fed to what that target drives, and must now be
//! refused the way the target requires (a client error with a code), not crash a check.

use std::path::PathBuf;

use tessera_edge::http::admin;

/// The `admin_body` target's routes, in its order: the input's first byte picks one.
const ADMIN_ROUTES: [&str; 6] = [
    "CreateTenant",
    "SetStatus",
    "CreateKey",
    "SetQuota",
    "SetOrigin",
    "SetPreset",
];

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no inputs in {}", dir.display());
    out
}

#[test]
fn admin_bodies_that_crashed_the_fuzzer_are_client_errors() {
    for (path, bytes) in inputs("admin_body") {
        let (&selector, body) = bytes.split_first().unwrap();
        let route = ADMIN_ROUTES[usize::from(selector) % ADMIN_ROUTES.len()];
        let refused = admin::parse_body(route, body).expect_err(&path.display().to_string());
        assert!(refused.status.is_client_error(), "{path:?}: {refused:?}");
        assert_eq!(refused.code.as_str(), "invalid_json", "{path:?}");
    }
}

#[test]
fn every_admin_body_must_be_an_object() {
    // serde reads a struct from an array of its fields in order; the API refuses it.
    for (route, array) in [
        ("CreateTenant", r#"["acme"]"#),
        ("SetStatus", r#"["suspended"]"#),
        ("SetOrigin", r#" [":"]"#),
        ("SetQuota", "[5]"),
    ] {
        let refused = admin::parse_body(route, array.as_bytes()).unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.code.as_str()),
            (400, "invalid_json")
        );
    }
    assert!(admin::parse_body("CreateTenant", br#" {"name": "acme"}"#).is_ok());
}
