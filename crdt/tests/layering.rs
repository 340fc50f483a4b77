//! Layering, checked by an ordinary test: `tessera-crdt` is pure data types, so its normal
//! (non-dev) dependency closure must never gain an async runtime, a network stack or a
//! storage engine. The sync layer and the node wrap it; it never reaches out to them.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;

/// Names of every package `package` depends on for normal use, transitively, read from
/// `cargo metadata` (dev- and build-dependencies excluded).
fn normal_dependency_closure(package: &str) -> BTreeSet<String> {
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--offline"])
        .current_dir(root_dir)
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: HashMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> = metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let root = names
        .iter()
        .find(|(_, name)| **name == package)
        .map(|(id, _)| *id)
        .unwrap_or_else(|| panic!("package {package} not in the workspace"));
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let dep_id = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(names[dep_id].to_owned()) {
                stack.push(dep_id);
            }
        }
    }
    seen
}

#[test]
fn crdt_knows_nothing_of_async_network_or_storage() {
    let closure = normal_dependency_closure("tessera-crdt");
    assert!(
        closure.contains("serde"),
        "closure looks wrong: {closure:?}"
    );
    let forbidden = [
        "tokio", "libp2p", "redb", "hyper", "axum", "mio", "futures", "reqwest",
    ];
    let leaked: Vec<_> = forbidden.iter().filter(|f| closure.contains(**f)).collect();
    assert!(
        leaked.is_empty(),
        "tessera-crdt depends on {leaked:?}; it must stay pure (no IO, no async)"
    );
}
