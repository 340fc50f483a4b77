//! The HTTP front door end to end, on a node served in-process: resizing, content
//! negotiation, conditional requests, and every kind of bad input the brief lists,
//! each answered with its documented status and a JSON error — and the node still
//! healthy, with nothing counted as processed, afterwards.

mod common;

use std::time::Duration;

use common::{photo, photos_dir, read_until_close, test_config, write_all, TestNode};
use hyper::StatusCode;
use tokio::net::TcpStream;

fn decode(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("response body decodes as an image")
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn resizes_a_photo_with_cache_headers() {
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(test_config()).await;
    let input = photo(&photos, "seeding-256k.jpg");
    let reply = node
        .post("/v1/resize?w=400&h=400", &[], input.clone())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.header("content-type"), Some("image/jpeg"));
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str())
    );
    assert!(
        reply.header("vary").is_none(),
        "no Vary without format=auto"
    );
    let image = decode(&reply.body);
    assert_eq!(image.width(), 400, "landscape photo fits the width");
    assert!(image.height() < 400);
    let etag = reply.header("etag").expect("ETag").to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");

    let again = node
        .post(
            "/v1/resize?w=400&h=400",
            &[("if-none-match", &etag)],
            input.clone(),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert!(again.body.is_empty());

    let other = node
        .post("/v1/resize?w=300", &[("if-none-match", &etag)], input)
        .await;
    assert_eq!(other.status, StatusCode::OK, "other options, other tag");
    assert_ne!(other.header("etag"), Some(etag.as_str()));
    assert_eq!(decode(&other.body).width(), 300);
    node.stop().await;
}

/// The same output has the same tag whatever else `Accept` lists: a browser that accepts
/// AVIF and WebP gets WebP, exactly as one that accepts WebP alone, and a cache or a
/// conditional request must see one entity (before, listing AVIF changed the tag).
#[tokio::test]
async fn the_etag_of_one_output_does_not_depend_on_accept() {
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(test_config()).await;
    let input = photo(&photos, "seeding-256k.jpg");
    let mut tags = Vec::new();
    for accept in [
        "image/webp",
        "image/avif,image/webp,*/*",
        "image/webp;q=1, image/avif",
    ] {
        let reply = node
            .post(
                "/v1/resize?w=32&format=auto",
                &[("accept", accept)],
                input.clone(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header("content-type"), Some("image/webp"), "{accept}");
        tags.push(reply.header("etag").unwrap().to_owned());
    }
    assert!(tags.windows(2).all(|w| w[0] == w[1]), "{tags:?}");
    let avif = node
        .post(
            "/v1/resize?w=32&format=auto",
            &[("accept", "image/avif")],
            input.clone(),
        )
        .await;
    assert_ne!(
        avif.header("etag").unwrap(),
        tags[0],
        "another output, another tag"
    );
    let revalidated = node
        .post(
            "/v1/resize?w=32&format=auto",
            &[
                ("accept", "image/avif,image/webp"),
                ("if-none-match", &tags[0]),
            ],
            input,
        )
        .await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    node.stop().await;
}

#[tokio::test]
async fn format_auto_follows_accept_and_varies() {
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(test_config()).await;
    let input = photo(&photos, "aitzgorri-256k.jpg");
    let cases = [
        ("image/avif,image/webp,*/*;q=0.8", "image/webp"),
        ("*/*", "image/jpeg"),
        ("image/webp;q=0", "image/jpeg"),
    ];
    for (accept, expected) in cases {
        let reply = node
            .post(
                "/v1/resize?w=200&format=auto",
                &[("accept", accept)],
                input.clone(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{accept}");
        assert_eq!(reply.header("content-type"), Some(expected), "{accept}");
        assert_eq!(reply.header("vary"), Some("Accept"), "{accept}");
        assert_eq!(decode(&reply.body).width(), 200);
    }
    let png = node
        .post("/v1/resize?w=120&format=png", &[], input.clone())
        .await;
    assert_eq!(png.header("content-type"), Some("image/png"));
    assert_eq!(decode(&png.body).width(), 120);
    node.stop().await;
}

#[tokio::test]
async fn the_bytes_decide_the_format_not_the_content_type() {
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(test_config()).await;
    let jpeg = photo(&photos, "seeding-256k.jpg");
    for content_type in [
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "image/png",
        "text/plain",
    ] {
        let reply = node
            .post(
                "/v1/resize?w=64",
                &[("content-type", content_type)],
                jpeg.clone(),
            )
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{content_type}");
    }
    let reply = node.post("/v1/resize?w=64", &[], jpeg.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "no content type at all");
    let text = b"<html><body>not an image</body></html>".to_vec();
    let reply = node
        .post("/v1/resize?w=64", &[("content-type", "image/jpeg")], text)
        .await;
    assert_eq!(reply.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    reply.error_code();
    node.stop().await;
}

#[tokio::test]
async fn every_bad_file_is_refused_and_the_node_stays_healthy() {
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(test_config()).await;
    let cases = [
        ("empty.jpg", StatusCode::BAD_REQUEST),
        ("truncated.jpg", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("random-bytes.jpg", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("text-not-image.png", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("bomb-60000x60000.png", StatusCode::UNPROCESSABLE_ENTITY),
        ("bomb-65000x65000.jpg", StatusCode::UNPROCESSABLE_ENTITY),
        ("bomb-400mp-valid.png", StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (name, expected) in cases {
        let body = photo(&photos.join("bad"), name);
        let reply = node.post("/v1/resize?w=100", &[], body).await;
        assert_eq!(reply.status, expected, "{name}: {:?}", reply.body);
        let code = reply.error_code();
        eprintln!("{name}: {} {code}", reply.status);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{name}"
        );
    }
    let metrics = node.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tessera_resize_output_bytes_total"),
        0.0,
        "no bad input produced output"
    );
    assert_eq!(node.get("/healthz").await.status, StatusCode::OK);
    let good = node
        .post("/v1/resize?w=50", &[], photo(&photos, "friends.webp"))
        .await;
    assert_eq!(
        good.status,
        StatusCode::OK,
        "still serving after the bad inputs"
    );
    node.stop().await;
}

#[tokio::test]
async fn bad_parameters_get_400_before_any_work() {
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(test_config()).await;
    let input = photo(&photos, "aitzgorri-256k.jpg");
    let queries = [
        "w=0",
        "h=0",
        "w=-1",
        "w=abc",
        "w=1e3",
        "w=99999999999",
        "w=1000000",
        "q=0",
        "q=101",
        "q=high",
        "fit=squash",
        "gravity=up",
        "format=bmp",
        "progressive=perhaps",
        "width=100",
        "w=1&w=2",
        "w=",
    ];
    for query in queries {
        let reply = node
            .post(&format!("/v1/resize?{query}"), &[], input.clone())
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.error_code(), "invalid_parameter", "{query}");
    }
    let metrics = node.metrics().await;
    assert_eq!(
        metric_value(&metrics, "tessera_resize_input_bytes_total"),
        0.0,
        "no refused request reached the pipeline"
    );
    node.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let node = TestNode::start(test_config()).await;
    let reply = node.get("/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error_code(), "not_found");
    let reply = node.get("/v1/resize").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.error_code(), "method_not_allowed");
    assert_eq!(node.get("/readyz").await.status, StatusCode::OK);
    node.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused_declared_or_chunked() {
    let Some(photos) = photos_dir() else { return };
    let mut config = test_config();
    config.http.body_bytes_max = 100_000;
    let node = TestNode::start(config).await;
    let input = photo(&photos, "seeding-256k.jpg");
    assert!(input.len() > 100_000);
    let reply = node.post("/v1/resize?w=10", &[], input.clone()).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reply.error_code(), "payload_too_large");

    // Chunked, no length: refused once the running total passes the cap.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let head = "POST /v1/resize?w=10 HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n";
    write_all(&mut stream, head.as_bytes()).await.unwrap();
    for chunk in input.chunks(16 * 1024) {
        let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
        frame.extend_from_slice(chunk);
        frame.extend_from_slice(b"\r\n");
        if write_all(&mut stream, &frame).await.is_err() {
            break; // the server may stop reading once it has refused
        }
    }
    let _ = write_all(&mut stream, b"0\r\n\r\n").await;
    let (received, _) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");

    // Under the cap, chunked works.
    let small = photo(&photos, "friends.webp");
    assert!(small.len() < 100_000);
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let mut request = format!(
        "POST /v1/resize?w=10 HTTP/1.1\r\nhost: test\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        small.len()
    )
    .into_bytes();
    request.extend_from_slice(&small);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    write_all(&mut stream, &request).await.unwrap();
    let (received, closed) = read_until_close(&mut stream, Duration::from_secs(10)).await;
    assert!(closed);
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    node.stop().await;
}

#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    let mut config = test_config();
    config.http.header_read_timeout_ms = 300;
    config.http.body_read_timeout_ms = 300;
    let node = TestNode::start(config).await;

    // Slowloris: a head that never completes.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    write_all(&mut stream, b"POST /v1/resize HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(
        closed,
        "a client that never finishes its head is disconnected"
    );

    // A body that stalls.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    write_all(
        &mut stream,
        b"POST /v1/resize HTTP/1.1\r\nhost: t\r\ncontent-length: 1000\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let (received, _) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("body_timeout"), "{text}");

    // An idle keep-alive connection after a complete request.
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    write_all(&mut stream, b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    let (received, closed) = read_until_close(&mut stream, Duration::from_secs(5)).await;
    assert!(String::from_utf8_lossy(&received).starts_with("HTTP/1.1 200"));
    assert!(closed, "an idle keep-alive connection is closed");
    node.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_answered_once_then_closed_at_accept() {
    let mut config = test_config();
    config.http.connections_max = 1;
    config.http.overflow_connections_max = 1;
    let node = TestNode::start(config).await;
    let mut first = TcpStream::connect(node.addr).await.unwrap();
    write_all(&mut first, b"GET /healthz HTTP/1.1\r\nhost: t\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Over the cap: the overflow lane answers health checks, and work with a JSON 503.
    for (request, expected) in [
        ("GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n", "HTTP/1.1 200"),
        ("GET /metrics HTTP/1.1\r\nhost: t\r\n\r\n", "HTTP/1.1 503"),
    ] {
        let mut over = TcpStream::connect(node.addr).await.unwrap();
        write_all(&mut over, request.as_bytes()).await.unwrap();
        let (received, closed) = read_until_close(&mut over, Duration::from_secs(5)).await;
        let received = String::from_utf8_lossy(&received);
        assert!(closed && received.starts_with(expected), "{received}");
        if expected.ends_with("503") {
            assert!(received.contains("\"overloaded\"") && received.contains("retry-after"));
        }
    }
    // With the lane held too, a newcomer is closed at accept.
    let mut second = TcpStream::connect(node.addr).await.unwrap();
    write_all(&mut second, b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = TcpStream::connect(node.addr).await.unwrap();
    let _ = write_all(&mut third, b"GET /healthz HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let (received, closed) = read_until_close(&mut third, Duration::from_secs(5)).await;
    assert!(
        closed && received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    write_all(&mut first, b"\r\n").await.unwrap();
    drop((first, second));
    let metrics = node.metrics().await;
    assert!(metric_value(&metrics, "tessera_http_connections_refused_total") >= 1.0);
    assert!(metric_value(&metrics, "tessera_http_connections_overflow_total") >= 2.0);
    node.stop().await;
}

#[tokio::test]
async fn metrics_describe_requests_stages_and_pool() {
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(test_config()).await;
    let input = photo(&photos, "aitzgorri-256k.jpg");
    let ok = node.post("/v1/resize?w=100", &[], input.clone()).await;
    assert_eq!(ok.status, StatusCode::OK);
    let bad = node.post("/v1/resize?w=0", &[], input.clone()).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let text = node.metrics().await;
    for needle in [
        "tessera_http_requests_total{route=\"/v1/resize\",status=\"200\"} 1",
        "tessera_http_requests_total{route=\"/v1/resize\",status=\"400\"} 1",
        "tessera_http_requests_received_total{route=\"/v1/resize\"} 2",
        "tessera_http_request_duration_seconds_bucket{le=",
        "tessera_resize_stage_duration_seconds_count{stage=\"decode\"} 1",
        "tessera_resize_stage_duration_seconds_count{stage=\"encode\"} 1",
        "tessera_pool_queue_depth 0",
        "tessera_pool_busy_workers 0",
        "tessera_http_requests_in_flight",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert_eq!(
        metric_value(&text, "tessera_resize_input_bytes_total"),
        input.len() as f64
    );
    assert_eq!(
        metric_value(&text, "tessera_resize_output_bytes_total"),
        ok.body.len() as f64
    );
    assert!(metric_value(&text, "tessera_resize_cpu_seconds_total") > 0.0);
    node.stop().await;
}

/// `/metrics` speaks OpenMetrics to a scraper that asks for it and the text format 0.0.4
/// to any other; every family with a closed label set is there from the start (at 0),
/// with the build and the process figures.
#[tokio::test]
async fn metrics_negotiate_their_format_and_show_every_family_from_the_start() {
    let node = TestNode::start(test_config()).await;
    let plain = node.get("/metrics").await;
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(plain.body.to_vec()).unwrap();
    assert!(!text.contains("# EOF"), "{text}");
    assert!(!text.contains("# UNIT"), "{text}");
    for needle in [
        "# TYPE tessera_billed_requests_total counter",
        "# TYPE tessera_resize_cpu_seconds_total counter",
        "tessera_requests_shed_total{reason=\"queue_full\"} 0",
        "tessera_quota_decisions_total{outcome=\"exhausted\"} 0",
        "tessera_result_cache_lookups_total{outcome=\"hit\"} 0",
        "tessera_auth_refused_total{code=\"key_revoked\"} 0",
        "tessera_http_requests_received_total{route=\"/v1/img\"} 0",
        "tessera_fetch_duration_seconds_count 0",
        "tessera_build_info{version=\"",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_max_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let rss = metric_value(&text, "process_resident_memory_bytes");
    assert!(rss > 1e6, "{rss}");

    let open = common::request(
        node.addr,
        hyper::Method::GET,
        "/metrics",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
        Vec::new(),
    )
    .await;
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = String::from_utf8(open.body.to_vec()).unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert!(
        text.contains("# TYPE tessera_billed_requests counter"),
        "{text}"
    );
    node.stop().await;
}

/// Every metric the sample alert rules (`packaging/prometheus-alerts.yml`) query is one
/// a node exports: a renamed metric would silence an alert without a word.
#[tokio::test]
async fn the_sample_alert_rules_query_metrics_that_exist() {
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/prometheus-alerts.yml"
    ))
    .unwrap();
    let node = TestNode::start(test_config()).await;
    let text = node.metrics().await;
    node.stop().await;
    let mut names: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("tessera_") || w.starts_with("process_"))
        .map(|w| {
            // A histogram's series name their family with a suffix.
            ["_bucket", "_sum", "_count"]
                .into_iter()
                .find_map(|suffix| w.strip_suffix(suffix))
                .unwrap_or(w)
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "the alert rules query {name}, which /metrics does not export"
        );
    }
}

/// An animated GIF stays animated (#17): as a GIF for `format=original`, as an animated
/// WebP for `format=auto` when WebP is accepted, as its first frame for a still format;
/// and an animation over `limits.animation_pixels_max` is a 422 naming its code.
#[tokio::test]
async fn animations_stay_animated_as_gif_and_webp() {
    use image::AnimationDecoder;
    let Some(photos) = photos_dir() else { return };
    let input = photo(&photos, "friends-animated.gif");
    let node = TestNode::start(test_config()).await;

    let reply = node
        .post("/v1/resize?w=160&format=original", &[], input.clone())
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.header("content-type"), Some("image/gif"));
    let frames = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&reply.body))
        .unwrap()
        .into_frames()
        .collect_frames()
        .unwrap();
    assert_eq!(frames.len(), 6);
    assert_eq!(frames[0].buffer().width(), 160);

    let reply = node
        .post(
            "/v1/resize?w=160&format=auto",
            &[("accept", "image/avif,image/webp,*/*")],
            input.clone(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("image/webp"));
    // An animated WebP: a RIFF with an ANIM chunk and one ANMF chunk per frame.
    let anmf = reply.body.windows(4).filter(|w| w == b"ANMF").count();
    assert!(reply.body.windows(4).any(|w| w == b"ANIM"));
    assert_eq!(anmf, 6);

    let reply = node
        .post("/v1/resize?w=160&format=png", &[], input.clone())
        .await;
    assert_eq!(reply.header("content-type"), Some("image/png"));
    assert_eq!(decode(&reply.body).width(), 160);
    node.stop().await;

    let mut config = test_config();
    config.limits.animation_pixels_max = 1_000;
    let node = TestNode::start(config).await;
    let reply = node
        .post("/v1/resize?w=160&format=gif", &[], input.clone())
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.error_code(), "animation_too_large");
    let reply = node.post("/v1/resize?w=160&format=jpeg", &[], input).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "a still output is not bound by it"
    );
    node.stop().await;
}

/// `max_bytes` and the per-format qualities end to end (#17): the answer fits the budget,
/// and each option makes its own ETag.
#[tokio::test]
async fn max_bytes_and_per_format_quality() {
    let Some(photos) = photos_dir() else { return };
    let input = photo(&photos, "seeding-256k.jpg");
    let node = TestNode::start(test_config()).await;
    let full = node.post("/v1/resize?w=600&q=90", &[], input.clone()).await;
    assert_eq!(full.status, StatusCode::OK);
    let max = full.body.len() / 2;
    let fitted = node
        .post(
            &format!("/v1/resize?w=600&q=90&max_bytes={max}"),
            &[],
            input.clone(),
        )
        .await;
    assert_eq!(fitted.status, StatusCode::OK, "{:?}", fitted.body);
    assert!(fitted.body.len() <= max, "{} > {max}", fitted.body.len());
    assert_eq!(decode(&fitted.body).width(), 600);
    assert_ne!(fitted.header("etag"), full.header("etag"));

    let webp = |q: &'static str| {
        let input = input.clone();
        let node = &node;
        async move {
            node.post(&format!("/v1/resize?w=600&format=webp{q}"), &[], input)
                .await
        }
    };
    let (plain, low) = (webp("").await, webp("&q_webp=20&q_jpeg=95").await);
    assert!(low.body.len() < plain.body.len());
    let bad = node.post("/v1/resize?w=600&q_webp=0", &[], input).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.error_code() == "invalid_parameter");
    node.stop().await;
}

/// `strip=false` keeps the source's copyright notice (and only it) in the answer, under an
/// ETag of its own; by default the answer carries none; a bad value is a 400.
#[tokio::test]
async fn strip_false_keeps_the_copyright_notice() {
    let Some(photos) = photos_dir() else { return };
    let copyright = b"(c) 2026 Ana Lopez\0";
    let make = b"SecretCam\0";
    // A little-endian TIFF block: Make, then Copyright, both out of line.
    let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x02\0".to_vec();
    let data_at = 8 + 2 + 2 * 12 + 4;
    for (tag, text, at) in [
        (0x010Fu16, &make[..], data_at),
        (0x8298, &copyright[..], data_at + make.len()),
    ] {
        exif.extend_from_slice(&tag.to_le_bytes());
        exif.extend_from_slice(&2u16.to_le_bytes());
        exif.extend_from_slice(&(text.len() as u32).to_le_bytes());
        exif.extend_from_slice(&(at as u32).to_le_bytes());
    }
    exif.extend_from_slice(&[0; 4]);
    exif.extend_from_slice(make);
    exif.extend_from_slice(copyright);
    let photo = photo(&photos, "seeding-256k.jpg");
    let mut input = photo[..2].to_vec();
    input.extend_from_slice(&[0xFF, 0xE1]);
    input.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
    input.extend_from_slice(&exif);
    input.extend_from_slice(&photo[2..]);

    let node = TestNode::start(test_config()).await;
    let has = |body: &[u8], what: &[u8]| body.windows(what.len()).any(|w| w == what);
    let bare = node.post("/v1/resize?w=200", &[], input.clone()).await;
    let kept = node
        .post("/v1/resize?w=200&strip=false", &[], input.clone())
        .await;
    assert_eq!(bare.status, StatusCode::OK);
    assert_eq!(kept.status, StatusCode::OK, "{:?}", kept.body);
    assert!(!has(&bare.body, b"Ana Lopez"));
    assert!(has(&kept.body, b"(c) 2026 Ana Lopez"));
    assert!(!has(&kept.body, b"SecretCam"), "only the rights are kept");
    assert_ne!(bare.header("etag"), kept.header("etag"));
    let same = node
        .post("/v1/resize?w=200&strip=true", &[], input.clone())
        .await;
    assert_eq!(same.header("etag"), bare.header("etag"));
    let bad = node.post("/v1/resize?w=200&strip=no", &[], input).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error_code(), "invalid_parameter");
    node.stop().await;
}
