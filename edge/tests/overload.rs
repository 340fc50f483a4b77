//! Overload and shutdown: more concurrent work than workers + queue gets fast 503s with
//! `Retry-After` while the admitted requests succeed; a request that cannot finish by its
//! deadline is refused before any work; SIGTERM-style shutdown lets in-flight requests finish,
//! and so does an operator's leave (`POST /admin/v1/cluster/leave`), which stops the node
//! the same way.

mod common;

use std::time::Duration;

use common::{keyed_config, photo, photos_dir, test_config, with_bearer, TestNode, TOKEN};
use hyper::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excess_requests_are_shed_while_the_rest_succeed() {
    let Some(photos) = photos_dir() else { return };
    let mut config = test_config();
    config.pool.workers = 1;
    config.pool.queue_max = 1;
    let node = TestNode::start(config).await;
    // The largest photo: a progressive 5312x2988 JPEG, tens of milliseconds per job.
    let input = photo(&photos, "seeding_by_Clements_Engelhardt.jpg");
    let requests = 12;
    let mut tasks = Vec::new();
    for _ in 0..requests {
        let addr = node.addr;
        let body = input.clone();
        tasks.push(tokio::spawn(async move {
            common::request(
                addr,
                hyper::Method::POST,
                "/v1/resize?w=400&h=400",
                &[],
                body,
            )
            .await
        }));
    }
    let mut ok = 0;
    let mut shed = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match reply.status {
            StatusCode::OK => {
                ok += 1;
                assert_eq!(reply.header("content-type"), Some("image/jpeg"));
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                shed += 1;
                assert_eq!(reply.error_code(), "overloaded");
                let retry: u32 = reply
                    .header("retry-after")
                    .expect("Retry-After on 503")
                    .parse()
                    .unwrap();
                assert!(retry >= 1);
            }
            other => panic!("unexpected {other}: {:?}", reply.body),
        }
    }
    assert_eq!(ok + shed, requests);
    // At least the first job runs; how many more depends on whether the worker takes it
    // before the others arrive, which the test does not control.
    assert!(ok >= 1, "admitted work completes: {ok} ok");
    assert!(
        shed >= 1,
        "with 1 worker and a queue of 1, {requests} at once must shed some"
    );
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("tessera_requests_shed_total{reason=\"queue_full\"}"),
        "{metrics}"
    );
    // Capacity is back once the burst is over.
    let reply = node.post("/v1/resize?w=100", &[], input).await;
    assert_eq!(reply.status, StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn a_request_that_cannot_meet_its_deadline_is_refused_before_work() {
    let Some(photos) = photos_dir() else { return };
    let mut config = test_config();
    config.http.request_deadline_ms = 1;
    let node = TestNode::start(config).await;
    let reply = node
        .post(
            "/v1/resize?w=100",
            &[],
            photo(&photos, "seeding_by_Clements_Engelhardt.jpg"),
        )
        .await;
    // The cost model says tens of milliseconds against a 1 ms budget: no retry can help.
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.error_code(), "too_costly");
    assert_eq!(node.state.pool.queue_len(), 0, "nothing was queued");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_stops() {
    let Some(photos) = photos_dir() else { return };
    let mut node = TestNode::start(test_config()).await;
    let addr = node.addr;
    let input = photo(&photos, "seeding_by_Clements_Engelhardt.jpg");
    let in_flight = tokio::spawn(async move {
        common::request(addr, hyper::Method::POST, "/v1/resize?w=300", &[], input).await
    });
    // Let the request reach the worker, then ask the node to stop.
    for _ in 0..200 {
        if node.state.metrics.requests_in_flight.get() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    node.begin_shutdown();
    let reply = in_flight.await.unwrap();
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the in-flight request completes"
    );
    assert!(!node.state.ready.load(std::sync::atomic::Ordering::Acquire));
    node.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// With a drain delay, shutdown turns `/readyz` to 503 first and goes on serving new
/// connections until the delay ends; only then does the listener close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_delay_fails_readiness_first_and_keeps_serving_until_it_ends() {
    let mut config = test_config();
    config.http.drain_delay_ms = 5_000;
    let mut node = TestNode::start(config).await;
    let addr = node.addr;
    assert_eq!(node.get("/readyz").await.status, StatusCode::OK);
    let asked = std::time::Instant::now();
    node.begin_shutdown();
    let mut unready = false;
    for _ in 0..200 {
        if !node.state.ready.load(std::sync::atomic::Ordering::Acquire) {
            unready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(unready, "readiness did not fail after the shutdown signal");
    // New connections during the delay are still served: unready, but alive.
    let readyz = node.get("/readyz").await;
    let healthz = node.get("/healthz").await;
    let during = asked.elapsed();
    assert_eq!(readyz.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(healthz.status, StatusCode::OK);
    assert!(
        during < Duration::from_millis(5_000),
        "too slow to check: {during:?}"
    );
    // Then the listener closes.
    assert!(node.stopped_within(Duration::from_secs(30)).await);
    assert!(
        asked.elapsed() >= Duration::from_millis(5_000),
        "stopped before the drain delay"
    );
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_before_the_body_is_sent() {
    let Some(photos) = photos_dir() else { return };
    let mut config = test_config();
    config.pool.workers = 1;
    config.pool.queue_max = 1;
    let node = TestNode::start(config).await;
    let input = photo(&photos, "seeding_by_Clements_Engelhardt.jpg");
    // Filling the queue races with the worker draining it, so an attempt in which the
    // queue emptied before the probe arrived (answered `100 Continue`) is tried again.
    for attempt in 1..=10 {
        let mut busy = Vec::new();
        for _ in 0..3 {
            let (addr, body) = (node.addr, input.clone());
            busy.push(tokio::spawn(async move {
                common::request(addr, hyper::Method::POST, "/v1/resize?w=400", &[], body).await
            }));
        }
        let mut full = false;
        for _ in 0..2_000 {
            if node.state.pool.queue_len() == 1 {
                full = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut refused = false;
        if full {
            // A client that waits for `100 Continue` is refused without sending its body.
            let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
            let head = "POST /v1/resize?w=10 HTTP/1.1\r\nhost: t\r\ncontent-length: 1000000\r\nexpect: 100-continue\r\n\r\n";
            common::write_all(&mut stream, head.as_bytes())
                .await
                .unwrap();
            let (received, _) =
                common::read_until_close(&mut stream, Duration::from_millis(1500)).await;
            let text = String::from_utf8_lossy(&received);
            if text.starts_with("HTTP/1.1 503") {
                assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
                assert!(text.contains("overloaded"), "{text}");
                refused = true;
            } else {
                assert!(text.starts_with("HTTP/1.1 100 Continue"), "{text}");
            }
        }
        for task in busy {
            let status = task.await.unwrap().status;
            assert!(matches!(
                status,
                StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE
            ));
        }
        if refused {
            node.stop().await;
            return;
        }
        eprintln!("attempt {attempt}: the queue drained before the probe; trying again");
    }
    panic!("never observed a full queue refusing a 100-continue request");
}

/// An operator's leave stops the server as its shutdown future would: answered 202 first,
/// then no more connections. (Alone, with no peers, there is nothing to hand over; the
/// hand-over itself is tested with real processes in `tests/tests/cluster.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_leave_stops_the_node_like_sigterm() {
    let mut node = TestNode::start(keyed_config()).await;
    let addr = node.addr;
    let leave = |token: &'static str| {
        tokio::time::timeout(
            Duration::from_secs(10),
            with_bearer(addr, token, Method::POST, "/admin/v1/cluster/leave", None),
        )
    };
    let refused = leave("top_not-the-operator").await.unwrap();
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(
        !node.stopped_within(Duration::from_millis(300)).await,
        "a refused leave stops nothing"
    );
    let accepted = leave(TOKEN).await.unwrap();
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let answer = common::json_of(&accepted);
    assert_eq!(answer["status"], "leaving", "{answer}");
    assert_eq!(answer["already_requested"], false, "{answer}");
    assert_eq!(answer["replication"], false, "{answer}");
    assert_eq!(
        answer["node"],
        node.state.control.id().to_string().as_str(),
        "{answer}"
    );
    assert!(
        node.stopped_within(Duration::from_secs(10)).await,
        "the server stops after a leave"
    );
    assert!(!node.state.ready.load(std::sync::atomic::Ordering::Acquire));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    node.stop().await;
}
