//! The hostile corpus against a whole node (issue #11): every bomb of the bad-input list
//! sent at once, with a key, through `POST /v1/resize`. Each is refused with its 4xx (or
//! served, where it is a valid image), nothing refused is billed, and the process's peak
//! resident memory stays under the documented bound (docs/ARCHITECTURE.md, "Resource
//! bounds": the default configuration on 2 workers under 1 GiB with every bomb in
//! flight). A binary of its own, so the peak it reads is this node's alone.

mod common;
#[path = "../../resize/tests/hostile_inputs/mod.rs"]
mod hostile_inputs;

use hostile_inputs as gen;
use hyper::{Method, StatusCode};

/// Peak RSS growth allowed while the corpus is in flight, over the node at rest.
const GROWTH_KIB_MAX: u64 = 768 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bomb_at_once_is_refused_and_memory_stays_bounded() {
    let mut config = common::keyed_config();
    config.pool.queue_max = 64;
    config.pool.tenant_queue_max = 64;
    let node = common::TestNode::start(config).await;
    let tenant = common::create_tenant(node.addr, common::TOKEN, "hostile").await;
    let (_, key) = common::create_key(node.addr, &tenant, "resize").await;
    let bomb = gen::zlib_zeros(1 << 30);
    // The resize crate's corpus (its one case that needs the source's own size aside).
    let corpus: Vec<_> = gen::corpus(&bomb)
        .into_iter()
        .filter(|(_, _, expected)| *expected != "job_memory_exceeded")
        .collect();
    // Twice over: more bombs in flight than workers and queue together would decode.
    let corpus: Vec<_> = corpus.iter().chain(corpus.iter()).cloned().collect();
    let (peak_before_kib, rss_before_kib) = gen::rss_kib();
    let reset = gen::reset_peak_rss();
    let tasks: Vec<_> = corpus
        .into_iter()
        .map(|(name, body, expected)| {
            let (addr, bearer) = (node.addr, format!("Bearer {key}"));
            tokio::spawn(async move {
                let reply = common::request(
                    addr,
                    Method::POST,
                    "/v1/resize?w=64&h=64&format=png",
                    &[("authorization", &bearer)],
                    body,
                )
                .await;
                (name, expected, reply)
            })
        })
        .collect();
    let mut served = 0;
    for task in tasks {
        let (name, expected, reply) = task.await.unwrap();
        if expected == "ok" {
            assert_eq!(reply.status, StatusCode::OK, "{name}: {reply:?}");
            served += 1;
        } else {
            assert!(reply.status.is_client_error(), "{name}: {reply:?}");
            assert_eq!(reply.error_code(), expected, "{name}");
        }
    }
    let (peak_kib, _) = gen::rss_kib();
    let base_kib = if reset {
        rss_before_kib
    } else {
        peak_before_kib
    };
    let growth_kib = peak_kib.saturating_sub(base_kib);
    eprintln!(
        "peak RSS {} MiB with the corpus in flight ({} MiB at rest; peak reset: {reset})",
        peak_kib / 1024,
        base_kib / 1024
    );
    assert!(
        growth_kib < GROWTH_KIB_MAX,
        "grew {} MiB",
        growth_kib / 1024
    );
    // Only the valid images were billed.
    let totals = common::totals(node.addr, common::TOKEN, &tenant).await;
    assert_eq!(totals["requests"], served, "{totals}");
    node.stop().await;
}
