//! Watermarks end to end: an operator sets a tenant's image (`PUT …/watermark`, checked by
//! decoding: too large, not an image, a pixel bomb are refused), requests draw it with
//! `watermark=` where they ask (the pixels show it at its corner, at its opacity), the
//! ETag and the signed-URL result cache follow its version, and a request without one (no
//! watermark set, anonymous, removed) is a 400 `no_watermark`, refused before the upload
//! is read.

mod common;

use common::{hex_bytes, json_of, keyed_config, origin, Reply, TestNode, TOKEN};
use hyper::{Method, StatusCode};
use image::ImageEncoder;
use tessera_crdt::TenantId;

/// A `w` x `h` PNG of one colour.
fn png(w: u32, h: u32, rgba: [u8; 4]) -> Vec<u8> {
    let img = image::RgbaImage::from_pixel(w, h, image::Rgba(rgba));
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgba8)
        .unwrap();
    out
}

fn pixel(reply: &Reply, x: u32, y: u32) -> [u8; 4] {
    let img = image::load_from_memory(&reply.body)
        .unwrap_or_else(|e| panic!("{e}: {reply:?}"))
        .to_rgba8();
    img.get_pixel(x, y).0
}

async fn put_watermark(node: &TestNode, tenant: &str, file: Vec<u8>) -> Reply {
    let bearer = format!("Bearer {TOKEN}");
    common::request(
        node.addr,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}/watermark"),
        &[("authorization", &bearer)],
        file,
    )
    .await
}

#[tokio::test]
async fn a_tenants_watermark_is_drawn_where_asked_and_versioned() {
    let node = TestNode::start(keyed_config()).await;
    let tenant = common::create_tenant(node.addr, TOKEN, "marked").await;
    let (_, key) = common::create_key(node.addr, &tenant, "resize").await;
    let bearer = format!("Bearer {key}");
    let auth = [("authorization", bearer.as_str())];
    let white = png(100, 80, [255, 255, 255, 255]);
    let post = |query: &'static str| {
        let body = white.clone();
        let addr = node.addr;
        async move {
            common::request(
                addr,
                Method::POST,
                &format!("/v1/resize?{query}"),
                &auth,
                body,
            )
            .await
        }
    };

    // No watermark yet: refused before any work, nothing billed.
    let reply = post("format=png&watermark=1").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert_eq!(reply.error_code(), "no_watermark");

    // What an operator may set.
    for (file, status, code) in [
        (
            vec![0u8; 20_000],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            b"not an image".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            png(1100, 10, [0, 0, 0, 255]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_too_large",
        ),
    ] {
        let reply = put_watermark(&node, &tenant, file).await;
        assert_eq!(reply.status, status, "{reply:?}");
        assert_eq!(reply.error_code(), code);
    }
    let red = png(10, 8, [255, 0, 0, 255]);
    let reply = put_watermark(&node, &tenant, red.clone()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT, "{reply:?}");
    let shown = common::with_bearer(
        node.addr,
        TOKEN,
        Method::GET,
        &format!("/admin/v1/tenants/{tenant}/watermark"),
        None,
    )
    .await;
    assert_eq!(shown.header("content-type"), Some("image/png"));
    assert_eq!(&shown.body[..], &red[..], "the file as it was set");
    let detail = common::with_bearer(
        node.addr,
        TOKEN,
        Method::GET,
        &format!("/admin/v1/tenants/{tenant}"),
        None,
    )
    .await;
    assert_eq!(json_of(&detail)["watermark"]["bytes"], red.len());

    // Drawn at its corner, inset by the margins; the rest of the image untouched.
    let plain = post("format=png").await;
    let marked = post("format=png&watermark=1:southeast:5:4").await;
    assert_eq!(marked.status, StatusCode::OK, "{marked:?}");
    assert_eq!(pixel(&marked, 100 - 5 - 1, 80 - 4 - 1), [255, 0, 0, 255]);
    assert_eq!(pixel(&marked, 100 - 5 - 10, 80 - 4 - 8), [255, 0, 0, 255]);
    assert_eq!(pixel(&marked, 100 - 5, 80 - 4 - 1), [255, 255, 255, 255]);
    assert_eq!(pixel(&marked, 0, 0), [255, 255, 255, 255]);
    let half = post("format=png&watermark=0.5:northwest").await;
    let [r, g, b, _] = pixel(&half, 0, 0);
    assert_eq!(r, 255);
    assert!(
        (126..=129).contains(&g) && g == b,
        "half red over white: {g}"
    );
    let tiled = post("format=png&watermark=1:tile:10:0").await;
    assert_eq!(pixel(&tiled, 5, 0), [255, 0, 0, 255]);
    assert_eq!(pixel(&tiled, 15, 0), [255, 255, 255, 255], "the gap");
    assert_eq!(pixel(&tiled, 25, 70), [255, 0, 0, 255]);
    let scaled = post("format=png&watermark=1:northwest:0:0:0.5").await;
    assert_eq!(pixel(&scaled, 49, 39), [255, 0, 0, 255], "50 x 40");
    assert_eq!(pixel(&scaled, 51, 10), [255, 255, 255, 255]);

    // The ETag names the mark's version: another image, another tag.
    let etag = marked.header("etag").unwrap().to_owned();
    assert_ne!(Some(etag.as_str()), plain.header("etag"));
    let blue = png(10, 8, [0, 0, 255, 255]);
    assert_eq!(
        put_watermark(&node, &tenant, blue).await.status,
        StatusCode::NO_CONTENT
    );
    let remarked = post("format=png&watermark=1:southeast:5:4").await;
    assert_eq!(pixel(&remarked, 94, 75), [0, 0, 255, 255]);
    assert_ne!(remarked.header("etag"), Some(etag.as_str()));

    // A bad value names the option.
    let reply = post("watermark=2").await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error_code() == "invalid_parameter");
    assert!(String::from_utf8_lossy(&reply.body).contains("watermark"));

    // Removed: refused again.
    let reply = common::with_bearer(
        node.addr,
        TOKEN,
        Method::DELETE,
        &format!("/admin/v1/tenants/{tenant}/watermark"),
        None,
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let reply = post("format=png&watermark=1").await;
    assert_eq!(reply.error_code(), "no_watermark");
    node.stop().await;
}

#[tokio::test]
async fn an_anonymous_request_has_no_watermark() {
    let node = TestNode::start(common::test_config()).await;
    let reply = node
        .post("/v1/resize?watermark=1", &[], png(10, 10, [0, 0, 0, 255]))
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
    assert_eq!(reply.error_code(), "no_watermark");
    node.stop().await;
}

/// A signed URL's cached result is keyed by the watermark's version: a new image is drawn
/// at once, never the old one from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_urls_cached_result_follows_the_watermark() {
    let origin_addr = origin(png(60, 40, [255, 255, 255, 255])).await;
    let local = format!("http://localhost:{}", origin_addr.port());
    let mut config = keyed_config();
    config.fetch.private_origins = vec![local.clone()];
    let node = TestNode::start(config).await;
    let tenant = common::create_tenant(node.addr, TOKEN, "signed-mark").await;
    let added = common::allow_and_add_secret(node.addr, &tenant, &local).await;
    let secret = hex_bytes(added["secret"].as_str().unwrap());
    let path = tessera_edge::http::signed::signed_path(
        TenantId(tenant.parse().unwrap()),
        &secret,
        "format=png&watermark=1:northwest",
        &format!("{local}/a.png"),
    );
    for (colour, expected) in [([0, 255, 0, 255], "miss"), ([0, 0, 255, 255], "miss")] {
        let reply = put_watermark(&node, &tenant, png(4, 4, colour)).await;
        assert_eq!(reply.status, StatusCode::NO_CONTENT);
        let first = common::request(node.addr, Method::GET, &path, &[], Vec::new()).await;
        assert_eq!(first.status, StatusCode::OK, "{first:?}");
        assert_eq!(first.header("x-cache"), Some(expected));
        assert_eq!(pixel(&first, 0, 0), colour);
        let again = common::request(node.addr, Method::GET, &path, &[], Vec::new()).await;
        assert_eq!(again.header("x-cache"), Some("hit"));
        assert_eq!(pixel(&again, 0, 0), colour);
    }
    node.stop().await;
}
