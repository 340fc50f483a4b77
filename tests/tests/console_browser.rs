//! The operator console in a real browser: two `tessera` processes, a tenant with a quota,
//! usage billed on both, then `tests/browser/console.py` drives headless Chromium over the
//! DevTools protocol — logs in through the form, reads the cluster, tenants, tenant and
//! usage pages, revokes a key by clicking its form's button, checks the API refuses it,
//! logs out — and fails on any console error, exception, CSP violation or failed load.
//! Screenshots go to `<target>/tmp/console-screenshots/` (named in the output).
//!
//! Needs `chromium` and Python's `websocket` module (Debian: `python3-websocket`), which
//! `scripts/setup.sh` installs; without them the test fails, saying so.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hyper::StatusCode;
use tessera_tests::client::{self, tiny_png};
use tessera_tests::cluster::{Backend, Cluster, ClusterSpec, OPERATOR_TOKEN};
use tessera_tests::node_bin;

/// Debian's interpreter first: `python3-websocket` is installed for it, not for a Python
/// a version manager put earlier on `PATH`.
fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/console.py");
    let chromium = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|name| Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("no chromium on PATH: run scripts/setup.sh (it installs Debian's chromium and python3-websocket)");

    let cluster = Cluster::start(ClusterSpec::new(2, Backend::Direct), node_bin!()).await;
    let admin = cluster.admin(0);
    let tenant = admin.create_tenant("acme").await.unwrap();
    admin.set_quota(&tenant, 1_000).await.unwrap();
    let (_, key) = admin.create_key(&tenant, "resize,usage").await.unwrap();
    // Usage on both nodes (the key reaches node 1 by replication), and node 0 knowing it.
    for i in 0..2 {
        let addr = cluster.addr(i);
        cluster
            .eventually(
                Duration::from_secs(20),
                "a billed resize on each node",
                || {
                    let key = key.clone();
                    async move {
                        let reply = client::resize(addr, &key, tiny_png(), Duration::from_secs(10))
                            .await
                            .ok()?;
                        (reply.status == StatusCode::OK).then_some(())
                    }
                },
            )
            .await;
    }
    cluster
        .eventually(Duration::from_secs(20), "node 1's usage on node 0", || {
            let (admin, tenant) = (admin, tenant.clone());
            async move { (admin.requests(&tenant).await.ok()? >= 2).then_some(()) }
        })
        .await;

    let revoked = key.clone();
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let base = format!("http://{}", cluster.addr(0));
    let run = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .arg(&script)
            .args([
                "--base",
                &base,
                "--token",
                OPERATOR_TOKEN,
                "--tenant",
                &tenant,
                "--key",
                &key,
            ])
            .args(["--members", "1", "--chromium", chromium])
            .arg("--shots")
            .arg(&shots)
            .output()
            .expect("running tests/browser/console.py")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    println!("{stdout}");
    assert!(
        run.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}\nnode 0's log:\n{}",
        cluster.log_tail(0, 40)
    );
    assert!(stdout.contains("console browser test: passed"), "{stdout}");

    // The revocation made in the browser (on node 0) reaches node 1 too.
    let addr = cluster.addr(1);
    cluster
        .eventually(
            Duration::from_secs(20),
            "the revoked key refused on node 1",
            || {
                let key = revoked.clone();
                async move {
                    let reply = client::resize(addr, &key, tiny_png(), Duration::from_secs(10))
                        .await
                        .ok()?;
                    (reply.status == StatusCode::UNAUTHORIZED).then_some(())
                }
            },
        )
        .await;
}
