//! Quota decisions under steady load across a slow network: three `tessera` processes
//! whose links each add a fixed one-way delay (the harness's userspace link layer: `tc
//! netem` is not available on these machines), a tenant with a monthly request quota and
//! a tenant without one, and oha driving the same fixed-rate load at one node for each
//! tenant in turn, in the same run. Reports p50/p99 latency with and without the quota,
//! and the share of quota decisions the node took from rights it already held (from its
//! metrics), to check that escrow keeps the quota off the request path's latency.
//!
//! Usage: `cargo bench -p tessera-tests --bench quota_latency -- [DELAY_MS] [RATE] [SECONDS] [QUOTA]`
//! (defaults 50 ms, 100 requests/s, 15 s, 4500: the node's third of the quota runs out
//! mid-run, so rights must move to it across the slow links while it serves). A last
//! round measures a *first touch*: a tenant whose quota was set before the home node saw
//! its peers, so every right sits there and the loaded node starts with none (each
//! round prints the rights per node, so the reader sees which case ran). Needs `oha`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_tests::client::tiny_png;
use tessera_tests::cluster::{Admin, Backend, Cluster, ClusterSpec, TenantKey};
use tessera_tests::link::LinkFaults;
use tessera_tests::node_bin;

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Runs oha at a fixed rate; returns (p50 ms, p99 ms, status codes).
fn oha(addr: SocketAddr, key: &str, body: &Path, rate: u32, seconds: u32) -> (f64, f64, String) {
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
        .arg(format!("http://{addr}/v1/resize?w=16&format=png"))
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
    // Declared first, dropped last: the cluster's proxies run on it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let spec = ClusterSpec::new(3, Backend::Proxy)
        .env("TESSERA_LOG", "warn")
        .env("TESSERA_POOL__QUEUE_MAX", "256");
    let mut cluster = runtime.block_on(Cluster::start(spec, node_bin!()));
    for from in 0..3 {
        for to in (0..3).filter(|to| *to != from) {
            let faults = LinkFaults {
                delay_ms,
                ..LinkFaults::default()
            };
            cluster.set_link(from, to, faults).unwrap();
        }
    }
    let home = cluster.admin(0);
    let tenant = |name: &str, quota: Option<u64>| -> TenantKey {
        runtime.block_on(home.tenant_with_key(name, quota)).unwrap()
    };
    // Set at once, before the nodes have connected: the home node keeps every right
    // (the first-touch round below).
    let early = tenant("early", Some(quota));
    // The home node spreads a new quota's rights over the members it is connected to:
    // wait until it sees both peers, or it keeps them all.
    let started = Instant::now();
    while runtime.block_on(home.cluster(None)).unwrap()["members"]
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
    let limited = tenant("limited", Some(quota));
    let free = tenant("free", None);
    // Let the directory and the grants reach every node (over the slow links).
    std::thread::sleep(Duration::from_secs(5));

    let png = cluster.dir().join("tiny.png");
    std::fs::write(&png, tiny_png()).unwrap();
    let target: Admin = cluster.admin(1);
    println!(
        "3 nodes, {delay_ms} ms one-way delay on every link; {rate} req/s for {seconds} s at one node; quota {quota}/month spread over 3"
    );
    println!("{:<10} {:>9} {:>9}  codes", "tenant", "p50 ms", "p99 ms");
    let scrape = || runtime.block_on(target.metrics()).unwrap();
    let quota_round = |label: &str, tenant: &TenantKey| {
        let rights = |when: &str| {
            let view = runtime
                .block_on(target.cluster(Some(&tenant.tenant)))
                .unwrap();
            println!(
                "           rights per node {when}: {}",
                view["tenant"]["quotas"]
            );
        };
        rights("before");
        let before = scrape();
        let (p50, p99, codes) = oha(target.addr, &tenant.key, &png, rate, seconds);
        let after = scrape();
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
        let (p50, p99, codes) = oha(target.addr, &free.key, &png, rate, seconds);
        println!(
            "{:<10} {p50:>9.2} {p99:>9.2}  {codes}",
            format!("free#{round}")
        );
        quota_round(&format!("quota#{round}"), &limited);
    }
    // First touch: a tenant whose rights all sit on its home node (its quota was set
    // before the home node saw any peer), loaded on another node, which must fetch
    // rights for its very first requests across the slow links.
    quota_round("first", &early);
}
