//! Quota decisions under steady load across a slow network: three `tessera` processes
//! whose links each add a fixed one-way delay (userspace proxies: `tc netem` is not
//! available on these machines), a tenant with a monthly request quota and a tenant
//! without one, and oha driving the same fixed-rate load at one node for each tenant in
//! turn, in the same run. Reports p50/p99 latency with and without the quota, and the
//! share of quota decisions the node took from rights it already held (from its
//! metrics), to check that escrow keeps the quota off the request path's latency.
//!
//! Usage: `cargo bench -p tessera-edge --bench quota_latency -- [DELAY_MS] [RATE] [SECONDS] [QUOTA]`
//! (defaults 50 ms, 100 requests/s, 15 s, 4500: the node's third of the quota runs out
//! mid-run, so rights must move to it across the slow links while it serves). A last
//! round measures a *first touch*: a tenant whose quota was set before the home node saw
//! its peers, so every right sits there and the loaded node starts with none (each
//! round prints the rights per node, so the reader sees which case ran). Needs `oha`.

use std::io::Write;
use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TOKEN: &str = "top_quota-latency-bench";
const CLUSTER_KEY: &str = "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b";

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One direction of a delayed link: every chunk is written `delay` after it was read.
async fn delayed_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until((at + delay).into()).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// A proxy to `target` adding `delay` each way.
async fn delay_proxy(target: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let _ = inbound.set_nodelay(true);
                let _ = outbound.set_nodelay(true);
                let (ir, iw) = inbound.into_split();
                let (or, ow) = outbound.into_split();
                tokio::join!(delayed_pipe(ir, ow, delay), delayed_pipe(or, iw, delay));
            });
        }
    });
    port
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &Path, http: u16, p2p: u16, peers: &[u16]) -> Node {
    std::fs::create_dir_all(dir).unwrap();
    let digest = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(TOKEN.as_bytes());
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let bootstrap: Vec<String> = peers
        .iter()
        .map(|p| format!("\"/ip4/127.0.0.1/tcp/{p}\""))
        .collect();
    let log = std::fs::File::create(dir.join("node.log")).unwrap();
    Node(
        Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--listen", &format!("127.0.0.1:{http}")])
            .arg("--data-dir")
            .arg(dir)
            .args(["--workers", "1"])
            .env("TESSERA_LOG", "warn")
            .env("TESSERA_CLUSTER__CLUSTER_KEY", CLUSTER_KEY)
            .env(
                "TESSERA_CLUSTER__LISTEN",
                format!("[\"/ip4/127.0.0.1/tcp/{p2p}\"]"),
            )
            .env(
                "TESSERA_CLUSTER__BOOTSTRAP",
                format!("[{}]", bootstrap.join(",")),
            )
            .env(
                "TESSERA_AUTH__OPERATOR_TOKEN_SHA256",
                format!("[\"{digest}\"]"),
            )
            .env("TESSERA_POOL__QUEUE_MAX", "256")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("tessera starts"),
    )
}

fn cli(http: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .args([
            "--node",
            &format!("http://127.0.0.1:{http}"),
            "--token",
            TOKEN,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Creates a tenant (with a monthly request quota, if given) and a key: (id, key).
fn tenant(http: u16, name: &str, quota: Option<u64>) -> (String, String) {
    let id = cli(http, &["tenant", "create", name])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    if let Some(quota) = quota {
        cli(http, &["quota", "set", &id, "--limit", &quota.to_string()]);
    }
    let key = cli(http, &["key", "create", &id])["key"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, key)
}

fn scrape(http: u16) -> String {
    let out = Command::new("curl")
        .args(["-fsS", &format!("http://127.0.0.1:{http}/metrics")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs oha at a fixed rate; returns (p50 ms, p99 ms, status codes).
fn oha(http: u16, key: &str, body: &Path, rate: u32, seconds: u32) -> (f64, f64, String) {
    let out = Command::new("oha")
        .args([
            "--no-tui",
            "--output-format",
            "json",
            "-m",
            "POST",
            "-T",
            "image/png",
        ])
        .arg("-D")
        .arg(body)
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args(["-c", "32", "-q", &rate.to_string(), "--latency-correction"])
        .args(["-z", &format!("{seconds}s")])
        .arg(format!("http://127.0.0.1:{http}/v1/resize?w=16&format=png"))
        .output()
        .expect("oha runs (cargo install oha --locked)");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("oha JSON");
    let p = |q: &str| json["latencyPercentiles"][q].as_f64().unwrap_or(f64::NAN) * 1000.0;
    (
        p("p50"),
        p("p99"),
        json["statusCodeDistribution"].to_string(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let delay_ms: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(50);
    let rate: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(15);
    let quota: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(4500);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let http: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let p2p: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let delay = Duration::from_millis(delay_ms);
    // proxies[i][j]: node i's links to node j, delayed.
    let proxies: Vec<Vec<u16>> = runtime.block_on(async {
        let mut rows = Vec::new();
        for i in 0..3 {
            let mut row = Vec::new();
            for (j, target) in p2p.iter().enumerate() {
                row.push(if i == j {
                    0
                } else {
                    delay_proxy(*target, delay).await
                });
            }
            rows.push(row);
        }
        rows
    });
    let _nodes: Vec<Node> = (0..3)
        .map(|i| {
            let peers: Vec<u16> = (0..3).filter(|j| *j != i).map(|j| proxies[i][j]).collect();
            spawn(&dir.path().join(format!("n{i}")), http[i], p2p[i], &peers)
        })
        .collect();
    for port in &http {
        let started = Instant::now();
        while Command::new("curl")
            .args(["-fsS", &format!("http://127.0.0.1:{port}/readyz")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "node never ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // Set at once, before the nodes have connected: the home node keeps every right
    // (the first-touch round below).
    let (early, early_key) = tenant(http[0], "early", Some(quota));
    // The home node spreads a new quota's rights over the members it is connected to:
    // wait until it sees both peers, or it keeps them all.
    let started = Instant::now();
    while cli(http[0], &["cluster", "status"])["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["connected"] == true).count())
        < 2
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the cluster never formed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (limited, limited_key) = tenant(http[0], "limited", Some(quota));
    let (_, free_key) = tenant(http[0], "free", None);
    // Let the directory and the grants reach every node (over the slow links).
    std::thread::sleep(Duration::from_secs(5));

    let png = dir.path().join("tiny.png");
    let image = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 90]));
    image.save(&png).unwrap();
    let target = http[1];
    println!(
        "3 nodes, {delay_ms} ms one-way delay on every link; {rate} req/s for {seconds} s at one node; quota {quota}/month spread over 3"
    );
    println!("{:<10} {:>9} {:>9}  codes", "tenant", "p50 ms", "p99 ms");
    let quota_round = |label: &str, tenant: &str, key: &str| {
        let rights = |when: &str| {
            let view = cli(target, &["cluster", "status", "--tenant", tenant]);
            println!(
                "           rights per node {when}: {}",
                view["tenant"]["quotas"]
            );
        };
        rights("before");
        let before = scrape(target);
        let (p50, p99, codes) = oha(target, key, &png, rate, seconds);
        let after = scrape(target);
        println!("{label:<10} {p50:>9.2} {p99:>9.2}  {codes}");
        let series = |o: &str| format!("tessera_quota_decisions_total{{outcome=\"{o}\"}}");
        let d = |o: &str| metric(&after, &series(o)) - metric(&before, &series(o));
        let (local, transfer, exhausted, unavailable) = (
            d("admitted_locally"),
            d("admitted_after_transfer"),
            d("exhausted"),
            d("unavailable"),
        );
        let total = local + transfer + exhausted + unavailable;
        let sync = |name: &str| metric(&after, name) - metric(&before, name);
        println!(
            "           decisions: {total} — local {local} ({:.3}%), after a transfer {transfer}, exhausted {exhausted}, unavailable {unavailable}; rights requests {}, retries {}, received {}",
            100.0 * local / total.max(1.0),
            sync("tessera_sync_rights_requests_total"),
            sync("tessera_sync_rights_retries_total"),
            sync("tessera_sync_rights_received_total"),
        );
        rights("after");
        std::io::stdout().flush().unwrap();
    };
    for round in 0..2 {
        let (p50, p99, codes) = oha(target, &free_key, &png, rate, seconds);
        println!(
            "{:<10} {p50:>9.2} {p99:>9.2}  {codes}",
            format!("free#{round}")
        );
        quota_round(&format!("quota#{round}"), &limited, &limited_key);
    }
    // First touch: a tenant whose rights all sit on its home node (its quota was set
    // before the home node saw any peer), loaded on another node, which must fetch
    // rights for its very first requests across the slow links.
    quota_round("first", &early, &early_key);
}
