//! House rules, checked by an ordinary test (after rust-analyzer's `tidy.rs`): every module
//! says what it is for, no debugging leftovers or stubs, the code is formatted, and the
//! layering holds — the resize pipeline and the CRDTs never depend on an async runtime, a
//! network stack or a storage engine, only `edge` has a `main`, and only `tests/` starts
//! clusters of processes. (They live in `tests/`, the package for what spans the
//! workspace.) And the edge reaches its protocol core only through its control plane, and
//! the resize tests do not compile their own copy of the generic resizer (CI time).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn workspace_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    assert!(!files.is_empty());
    files
}

/// "path: needle" for each workspace source file `select` picks that contains a needle.
fn files_containing(select: impl Fn(&Path) -> bool, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for path in workspace_rust_files().into_iter().filter(|p| select(p)) {
        let text = std::fs::read_to_string(&path).unwrap();
        for needle in needles.iter().filter(|n| text.contains(**n)) {
            found.push(format!("{}: {needle}", path.display()));
        }
    }
    found
}

#[test]
fn every_module_starts_with_a_doc_comment() {
    let missing: Vec<_> = workspace_rust_files()
        .into_iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            !text.lines().any(|line| line.starts_with("//!"))
                || !text
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.starts_with("//!") || l.starts_with("#!["))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a leading //! doc: {missing:#?}"
    );
}

#[test]
fn no_debugging_leftovers_or_stubs() {
    let needles = [
        concat!("dbg", "!("),
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
    ];
    let mut found = Vec::new();
    for path in workspace_rust_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            if needles.iter().any(|n| line.contains(n)) {
                found.push(format!("{}:{}", path.display(), number + 1));
            }
        }
    }
    assert!(found.is_empty(), "leftovers: {found:#?}");
}

#[test]
fn code_is_formatted() {
    let output = Command::new(env!("CARGO"))
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(workspace_root())
        .output();
    match output {
        Ok(out) if out.status.success() => {}
        Ok(out) if String::from_utf8_lossy(&out.stderr).contains("not installed") => {
            eprintln!("SKIP: rustfmt is not installed")
        }
        Ok(out) => panic!(
            "cargo fmt --check failed; run `cargo fmt --all`:\n{}",
            String::from_utf8_lossy(&out.stdout)
        ),
        Err(err) => eprintln!("SKIP: cannot run cargo fmt: {err}"),
    }
}

/// Names of every package `package` depends on for normal (non-dev, non-build) use,
/// transitively, from `cargo metadata`.
fn normal_dependency_closure(package: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        // Not `--offline`: metadata covers every platform's dependencies, and a fresh
        // machine has downloaded only the host's.
        .args(["metadata", "--format-version", "1"])
        .current_dir(workspace_root())
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

/// Crates whose presence in a pure crate's dependency closure means IO or async crept in.
const IO_CRATES: [&str; 10] = [
    "tokio",
    "hyper",
    "axum",
    "libp2p",
    "redb",
    "mio",
    "tower",
    "reqwest",
    "async-std",
    "futures",
];

fn assert_pure(package: &str) {
    let closure = normal_dependency_closure(package);
    let leaked: Vec<_> = IO_CRATES.iter().filter(|f| closure.contains(**f)).collect();
    assert!(
        leaked.is_empty(),
        "{package} depends on {leaked:?}; it must stay synchronous and IO-free"
    );
}

#[test]
fn resize_knows_nothing_of_async_or_network() {
    assert_pure("tessera-resize");
}

#[test]
fn crdt_knows_nothing_of_network_storage_or_async() {
    assert_pure("tessera-crdt");
}

/// The sync crate's protocol core builds without its transport (feature `net`), and that
/// build's dependency closure has no IO crate. (`cargo tree` with `-p` resolves features
/// for the one package, unlike `cargo metadata`, which unifies the workspace's.)
#[test]
fn sync_core_knows_nothing_of_network_storage_or_async() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "tessera-sync",
            "--no-default-features",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(workspace_root())
        .output()
        .expect("running cargo tree");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let closure: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        closure.contains("tessera-crdt"),
        "cargo tree output unexpected:\n{text}"
    );
    let leaked: Vec<_> = IO_CRATES.iter().filter(|f| closure.contains(**f)).collect();
    assert!(leaked.is_empty(), "the sync core depends on {leaked:?}");
}

/// Beyond dependencies: the core's sources (all of `sync/src` but the transport,
/// `net.rs` and `net/`) read no clock and no OS randomness.
#[test]
fn sync_core_reads_no_clock_and_no_os_randomness() {
    let sync = workspace_root().join("sync").join("src");
    let transport = sync.join("net.rs");
    let transport_parts = sync.join("net");
    for path in workspace_rust_files()
        .into_iter()
        .filter(|p| p.starts_with(&sync) && *p != transport && !p.starts_with(&transport_parts))
    {
        let text = std::fs::read_to_string(&path).expect("readable source");
        for forbidden in [
            "Instant::now",
            "SystemTime",
            "thread_rng",
            "getrandom",
            "std::net",
            "std::fs",
            "RandomState",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}",
                path.display()
            );
        }
    }
}

#[test]
fn only_edge_has_a_main() {
    // `bench/` holds by-hand measurement programs outside the workspace (own manifests).
    let measurements = workspace_root().join("bench");
    let mains: Vec<_> = workspace_rust_files()
        .into_iter()
        .filter(|p| !p.starts_with(&measurements))
        .filter(|p| p.ends_with("src/main.rs") || p.to_string_lossy().contains("/src/bin/"))
        .collect();
    // The one exception: the fault harness's shim, which is `tessera_edge::cli::run()`.
    let shim = workspace_root().join("tests/src/bin/tessera-node.rs");
    assert!(
        mains
            .iter()
            .all(|p| p.starts_with(workspace_root().join("edge")) || *p == shim),
        "{mains:#?}"
    );
}

/// Clusters of node processes and their process faults are the harness's job
/// (`tests/src/cluster.rs`): a second copy elsewhere drifts from it, as the bench's copy
/// once did. Single-process tests of the binary (`edge/tests/cli.rs`) stay where they are.
#[test]
fn only_the_harness_starts_clusters_of_processes() {
    let tests = workspace_root().join("tests");
    let needles = [
        concat!("TESSERA_CLUSTER", "__BOOTSTRAP"),
        concat!("SIG", "KILL"),
        concat!("SIG", "STOP"),
        concat!("SIG", "CONT"),
    ];
    let found = files_containing(|p| !p.starts_with(&tests), &needles);
    assert!(
        found.is_empty(),
        "multi-process harness code outside tests/ (use tessera_tests::cluster): {found:#?}"
    );
}

/// The edge's control plane (`edge/src/control/`) is the only code that sees the protocol
/// core (`tessera_sync::Node`) and its lock: every hold is one of its named operations,
/// which copy out what they serve (issue #15). Handlers that took the raw guard rendered
/// JSON and scanned the ledger under it. The compiler keeps the lock itself private to
/// `control`; this keeps the core's type out of the rest of `edge/src` (benches and
/// tests may drive a core directly).
#[test]
fn only_the_control_plane_sees_the_protocol_core() {
    let edge_src = workspace_root().join("edge/src");
    let control = edge_src.join("control");
    let needles = [
        concat!("tessera_sync::", "Node"),
        concat!("tessera_sync::{", "Node"),
        concat!("MutexGuard<", "'_, Node>"),
        concat!("Mutex<", "Node>"),
    ];
    let found = files_containing(
        |p| p.starts_with(&edge_src) && !p.starts_with(&control),
        &needles,
    );
    assert!(
        found.is_empty(),
        "the protocol core outside edge/src/control (add a named operation): {found:#?}"
    );
}

/// The resize package's integration tests and examples (which `cargo test` builds) never
/// call `fast_image_resize`'s generic resizer themselves: a generic is compiled again in
/// every crate that instantiates it, here at the package's opt-level 3, and four such
/// targets once cost two minutes of a clean test build each (docs/TESTING.md, "What CI's
/// time goes to"). They call the library, or `tests/common`'s float reference; a check
/// that needs the resizer itself is a unit test inside the library. (Benches, which CI
/// does not build, may.)
#[test]
fn resize_tests_do_not_compile_their_own_resizer() {
    let resize = workspace_root().join("resize");
    let dirs = [resize.join("tests"), resize.join("examples")];
    let needles = [
        concat!("fir::", "images::"),
        concat!("fast_image_resize::", "images::"),
        concat!("ResizeOptions::", "new("),
    ];
    let found = files_containing(|p| dirs.iter().any(|d| p.starts_with(d)), &needles);
    assert!(
        found.is_empty(),
        "resize tests that instantiate fast_image_resize's resizer: {found:#?}"
    );
}
