//! `POST /v1/info`: what an image is, as JSON — checked against what the `image` crate
//! reads from the same files — billed as one request with its CPU time, and refused like
//! a conversion (no key, parameters, an empty or unknown body).

mod common;

use common::*;
use hyper::{Method, StatusCode};

async fn info(node: &TestNode, key: &str, body: Vec<u8>) -> Reply {
    let bearer = format!("Bearer {key}");
    request(
        node.addr,
        Method::POST,
        "/v1/info",
        &[("authorization", &bearer)],
        body,
    )
    .await
}

#[tokio::test]
async fn info_reads_an_image_and_bills_it() {
    let Some(photos) = photos_dir() else { return };
    let node = TestNode::start(keyed_config()).await;
    let tenant = create_tenant(node.addr, TOKEN, "acme").await;
    let (_, key) = create_key(node.addr, &tenant, "resize").await;

    let jpeg = photo(&photos, "seeding-256k.jpg");
    let decoded = image::load_from_memory(&jpeg).unwrap();
    let reply = info(&node, &key, jpeg.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("x-request-id").is_some());
    assert!(reply.header("server-timing").unwrap().contains("info;dur="));
    let body = json_of(&reply);
    assert_eq!(body["format"], "jpeg");
    assert_eq!(body["width"], decoded.width());
    assert_eq!(body["height"], decoded.height());
    assert_eq!(body["frames"], 1);
    assert_eq!(body["animated"], false);
    assert_eq!(body["has_alpha"], false);
    assert_eq!(body["bytes"], jpeg.len());
    let colour = body["dominant_color"].as_str().unwrap();
    assert!(colour.len() == 7 && colour.starts_with('#'), "{colour}");

    // A PNG with alpha, mostly one colour: read exactly.
    let png = {
        let image = image::RgbaImage::from_fn(120, 80, |x, _| {
            if x < 100 {
                image::Rgba([32, 64, 128, 255])
            } else {
                image::Rgba([0, 0, 0, 0])
            }
        });
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    };
    let body = json_of(&info(&node, &key, png).await);
    assert_eq!(
        (
            &body["format"],
            &body["width"],
            &body["height"],
            &body["has_alpha"],
            &body["uses_alpha"]
        ),
        (
            &"png".into(),
            &120.into(),
            &80.into(),
            &true.into(),
            &true.into()
        )
    );
    assert_eq!(body["dominant_color"], "#204080");

    // Billed: two requests, their CPU time, the bytes in.
    let billed = totals(node.addr, TOKEN, &tenant).await;
    assert_eq!(billed["requests"], 2);
    assert!(billed["cpu_micros"].as_u64().unwrap() > 0);
    assert!(billed["bytes_in"].as_u64().unwrap() > jpeg.len() as u64);

    // The shared photos' particular cases.
    for (name, field, expected) in [
        (
            "friends-orientation6.jpg",
            "orientation",
            serde_json::json!(6),
        ),
        ("friends-cmyk.jpg", "color_space", "cmyk".into()),
        ("friends-gray.jpg", "color_space", "gray".into()),
        ("friends-animated.gif", "animated", true.into()),
        ("friends.webp", "format", "webp".into()),
        ("free-16bit.png", "format", "png".into()),
    ] {
        let body = json_of(&info(&node, &key, photo(&photos, name)).await);
        assert_eq!(body[field], expected, "{name}: {body}");
    }
    // Orientation 6: the displayed size is the stored one turned.
    let turned = photo(&photos, "friends-orientation6.jpg");
    let stored = image::load_from_memory(&turned).unwrap();
    let body = json_of(&info(&node, &key, turned).await);
    assert_eq!(
        (body["width"].as_u64(), body["height"].as_u64()),
        (Some(stored.height().into()), Some(stored.width().into()))
    );
    let requests = 2 + 7;

    // Refusals, none billed.
    let none = request(node.addr, Method::POST, "/v1/info", &[], jpeg.clone()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {key}");
    let with_query = request(
        node.addr,
        Method::POST,
        "/v1/info?w=10",
        &[("authorization", &bearer)],
        jpeg,
    )
    .await;
    assert_eq!(with_query.status, StatusCode::BAD_REQUEST);
    assert_eq!(with_query.error_code(), "invalid_parameter");
    let empty = info(&node, &key, Vec::new()).await;
    assert_eq!(empty.status.as_u16() / 100, 4, "{empty:?}");
    let garbage = info(&node, &key, b"not an image at all".to_vec()).await;
    assert_eq!(
        garbage.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{garbage:?}"
    );
    assert_eq!(
        totals(node.addr, TOKEN, &tenant).await["requests"],
        requests
    );
    node.stop().await;
}
