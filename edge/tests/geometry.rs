//! The geometry options over HTTP: each query name round-trips on `POST /v1/resize`
//! (status, output size, `Content-Type`), bad values answer 400 with a JSON error naming
//! the option, the ETag changes with an option and stays the same without it (or at its
//! default); the same options in a signed URL (a crop's and a padding's commas included)
//! and in imgproxy URLs (`dpr`, `g:fp`, `g:sm`, `ex:1`, `el`, `rot`, `fl`, `t`, `bg`, `bl`,
//! `sh`, `c` with its gravity, `pd`), against a local origin; `gravity=smart`, `blur` and
//! `sharpen` on POST.

mod common;

use common::{hex_bytes, json_of, origin, test_config, Reply, TestNode, TOKEN};
use hyper::{Method, StatusCode};
use image::ImageEncoder;
use tessera_crdt::TenantId;

/// A 200x100 PNG: red left half, blue right half, with a 10-pixel white border.
fn bordered() -> Vec<u8> {
    let img = image::RgbaImage::from_fn(200, 100, |x, y| {
        if x < 10 || y < 10 || x >= 190 || y >= 90 {
            image::Rgba([255, 255, 255, 255])
        } else if x < 100 {
            image::Rgba([255, 0, 0, 255])
        } else {
            image::Rgba([0, 0, 255, 255])
        }
    });
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(img.as_raw(), 200, 100, image::ExtendedColorType::Rgba8)
        .unwrap();
    out
}

fn size_of(reply: &Reply) -> (u32, u32) {
    let img = image::load_from_memory(&reply.body).unwrap_or_else(|e| panic!("{e}: {reply:?}"));
    (img.width(), img.height())
}

#[tokio::test]
async fn each_option_round_trips_on_post_resize() {
    let node = TestNode::start(test_config()).await;
    let input = bordered();
    let cases: [(&str, (u32, u32), &str); 16] = [
        ("w=50&dpr=2", (100, 50), "image/jpeg"),
        ("w=40&h=40&dpr=1.5&fit=cover", (60, 60), "image/jpeg"),
        ("crop=0,0,100,100&format=png", (100, 100), "image/png"),
        ("crop=0.5,0,0.5,1&w=50&format=webp", (50, 50), "image/webp"),
        (
            "w=50&h=50&fit=cover&gravity=fp:0.9:0.5&format=png",
            (50, 50),
            "image/png",
        ),
        (
            "w=80&h=80&fit=pad&background=00ff00&format=png",
            (80, 80),
            "image/png",
        ),
        ("rotate=90&format=png", (100, 200), "image/png"),
        ("rotate=270&w=20", (20, 40), "image/jpeg"),
        ("flip=hv&format=png", (200, 100), "image/png"),
        ("trim=5&format=png", (180, 80), "image/png"),
        ("w=400&enlarge=false", (200, 100), "image/jpeg"),
        ("w=400", (400, 200), "image/jpeg"),
        ("crop=80,40&gravity=e&format=png", (80, 40), "image/png"),
        (
            "crop=0.5,0&gravity=west&w=50&format=png",
            (50, 50),
            "image/png",
        ),
        ("padding=5,10&format=png", (220, 110), "image/png"),
        ("w=50&dpr=2&padding=5", (120, 70), "image/jpeg"),
    ];
    for (query, size, mime) in cases {
        let reply = node
            .post(&format!("/v1/resize?{query}"), &[], input.clone())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some(mime), "{query}");
        assert_eq!(size_of(&reply), size, "{query}");
    }
    // The pad bars are the background; the flip moved blue to the left; the window went
    // east (blue); the padding is transparent in PNG.
    let pixels = |query: &'static str| {
        let (node, input) = (&node, input.clone());
        async move {
            let reply = node.post(&format!("/v1/resize?{query}"), &[], input).await;
            image::load_from_memory(&reply.body).unwrap().to_rgba8()
        }
    };
    let pad = pixels("w=80&h=80&fit=pad&background=00ff00&format=png").await;
    assert_eq!(pad.get_pixel(40, 2).0, [0, 255, 0, 255]);
    let flipped = pixels("flip=h&format=png").await;
    assert_eq!(flipped.get_pixel(50, 50).0, [0, 0, 255, 255]);
    let east = pixels("crop=80,40&gravity=e&format=png").await;
    assert_eq!(east.get_pixel(20, 20).0, [0, 0, 255, 255]);
    let padded = pixels("padding=5,10&format=png").await;
    assert_eq!(padded.get_pixel(5, 2).0[3], 0);
    assert_eq!(padded.get_pixel(50, 50).0, [255, 0, 0, 255]);
    node.stop().await;
}

#[tokio::test]
async fn bad_values_answer_400_naming_the_option() {
    let node = TestNode::start(test_config()).await;
    let input = bordered();
    for (query, name) in [
        ("dpr=0", "dpr"),
        ("dpr=4.5", "dpr"),
        ("w=9000&dpr=2", "width"),
        ("w=4000&h=4000&dpr=2", "output limit"),
        ("crop=1,2,3", "crop"),
        ("crop=300,0,10,10", "crop"),
        ("crop=0,0,0,10", "crop"),
        ("gravity=fp:2:0", "gravity"),
        ("background=blue", "background"),
        ("rotate=45", "rotate"),
        ("flip=d", "flip"),
        ("trim=300", "trim"),
        ("enlarge=maybe", "enlarge"),
        ("fit=scale-down&enlarge=true", "enlarge"),
        ("rotate=90&rotate=90", "more than once"),
        ("crop=1.5,0.5", "crop"),
        ("crop=10", "crop"),
        ("padding=1,2,3,4,5", "padding"),
        ("padding=x", "padding"),
        ("w=4000&h=4000&padding=100", "padding"),
        ("padding=16000", "padding"),
    ] {
        let reply = node
            .post(&format!("/v1/resize?{query}"), &[], input.clone())
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}: {reply:?}");
        assert_eq!(reply.error_code(), "invalid_parameter", "{query}");
        let message = json_of(&reply)["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(name), "{query}: {message}");
    }
    node.stop().await;
}

#[tokio::test]
async fn the_etag_changes_with_an_option_and_not_without_it() {
    let node = TestNode::start(test_config()).await;
    let input = bordered();
    let tag = |query: &'static str| {
        let input = input.clone();
        let node = &node;
        async move {
            let reply = node.post(&format!("/v1/resize?{query}"), &[], input).await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {reply:?}");
            reply.header("etag").unwrap().to_owned()
        }
    };
    let plain = tag("w=50").await;
    assert_eq!(plain, tag("w=50").await);
    // At their defaults the options are not there at all.
    assert_eq!(plain, tag("w=50&dpr=1&rotate=0&padding=0").await);
    let mut seen = vec![plain];
    for query in [
        "w=50&dpr=2",
        "w=50&crop=0,0,50,50",
        "w=50&h=50&fit=cover&gravity=fp:0.2:0.2",
        "w=50&h=50&fit=pad",
        "w=50&background=ff0000",
        "w=50&rotate=90",
        "w=50&flip=v",
        "w=50&trim=3",
        "w=50&enlarge=true",
        "w=50&h=50&fit=cover&gravity=smart",
        "w=50&blur=2",
        "w=50&sharpen=1",
        "w=50&sharpen=1:0.5",
        "w=50&crop=50,50",
        "w=50&crop=50,50&gravity=ne",
        "w=50&padding=1",
        "w=50&padding=1,2",
    ] {
        let t = tag(query).await;
        assert!(!seen.contains(&t), "{query}: {t}");
        seen.push(t);
    }
    node.stop().await;
}

// ------------------------------------------------------------------ signed and imgproxy

/// imgproxy's signature, as its documentation describes it ("Signing a URL").
fn imgproxy_sign(key: &[u8], salt: &[u8], path: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(salt);
    mac.update(path.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_and_imgproxy_urls_take_the_geometry_options() {
    let origin_addr = origin(bordered()).await;
    let local = format!("http://localhost:{}", origin_addr.port());
    let mut config = test_config();
    config.auth.anonymous_resize = false;
    config.auth.operator_token_sha256 = vec![tessera_edge::control::auth::hex(
        &tessera_edge::control::auth::sha256(TOKEN.as_bytes()),
    )];
    config.fetch.private_origins = vec![local.clone()];
    let node = TestNode::start(config).await;
    let tenant = common::create_tenant(node.addr, TOKEN, "geo").await;
    let addr = node.addr;
    let body = common::allow_and_add_secret(addr, &tenant, &local).await;
    let secret = hex_bytes(body["secret"].as_str().unwrap());
    let key = hex_bytes(body["imgproxy"]["key"].as_str().unwrap());
    let salt = hex_bytes(body["imgproxy"]["salt"].as_str().unwrap());
    let get = |path: String| async move {
        common::request(addr, Method::GET, &path, &[], Vec::new()).await
    };
    let source = format!("{local}/a.png");
    let tenant_id = TenantId(tenant.parse().unwrap());

    // Signed URLs: the same options, a crop's commas included.
    for (options, size) in [
        ("crop=0,0,100,100,rotate=90,format=png", (100, 100)),
        ("crop=0,0,100,50,rotate=90,format=png", (50, 100)),
        ("w=30,dpr=2,flip=h,format=png", (60, 30)),
        ("w=60,h=60,fit=pad,background=000000,format=png", (60, 60)),
        ("trim=5,enlarge=false,w=500,format=png", (180, 80)),
        ("crop=80,40,gravity=e,padding=1,2,format=png", (84, 42)),
    ] {
        let path = tessera_edge::http::signed::signed_path(tenant_id, &secret, options, &source);
        let reply = get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{options}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("image/png"));
        assert_eq!(size_of(&reply), size, "{options}");
    }
    let path = tessera_edge::http::signed::signed_path(tenant_id, &secret, "rotate=33", &source);
    let reply = get(path).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&reply.body).contains("rotate"));

    // imgproxy URLs.
    let url = |signed: &str| {
        format!(
            "/ip/{tenant}/{}{signed}",
            imgproxy_sign(&key, &salt, signed)
        )
    };
    let plain = format!("plain/{source}");
    for (options, size, mime) in [
        ("rs:fit:50:50/dpr:2", (100, 50), "image/png"),
        ("rs:fill:40:40/g:fp:0.9:0.5", (40, 40), "image/png"),
        ("rs:fit:80:80/ex:1/bg:0:255:0", (80, 80), "image/png"),
        ("rot:90", (100, 200), "image/png"),
        ("fl:1:0", (200, 100), "image/png"),
        ("t:5", (180, 80), "image/png"),
        // imgproxy does not enlarge unless asked.
        ("w:400", (200, 100), "image/png"),
        ("w:400/el:1", (400, 200), "image/png"),
        ("w:50/rot:270@jpg", (50, 100), "image/jpeg"),
        ("rs:fill:40:40/g:sm", (40, 40), "image/png"),
        ("w:100/bl:2", (100, 50), "image/png"),
        ("w:100/sh:0.7", (100, 50), "image/png"),
        ("c:80:40:ea", (80, 40), "image/png"),
        ("c:0.5:0:we/rs:fit:50:50", (50, 50), "image/png"),
        ("g:ea/c:80:40/rs:fill:40:40", (40, 40), "image/png"),
        ("pd:5:10", (220, 110), "image/png"),
        ("w:100/pd:5/dpr:2@jpg", (220, 120), "image/jpeg"),
    ] {
        let (options, ext) = options.split_once('@').unwrap_or((options, "png"));
        let reply = get(url(&format!("/{options}/{plain}@{ext}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{options}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some(mime), "{options}");
        assert_eq!(size_of(&reply), size, "{options}");
    }
    // The padded bars are green, the focus point kept the blue side.
    let padded = get(url(&format!("/rs:fit:80:80/ex:1/bg:0:255:0/{plain}@png"))).await;
    let padded = image::load_from_memory(&padded.body).unwrap().to_rgb8();
    assert_eq!(padded.get_pixel(40, 2).0, [0, 255, 0]);
    let focused = get(url(&format!("/rs:fill:40:40/g:fp:0.75:0.5/{plain}@png"))).await;
    let focused = image::load_from_memory(&focused.body).unwrap().to_rgb8();
    assert_eq!(focused.get_pixel(20, 20).0, [0, 0, 255]);
    let cropped = get(url(&format!("/c:80:40:ea/{plain}@png"))).await;
    let cropped = image::load_from_memory(&cropped.body).unwrap().to_rgb8();
    assert_eq!(cropped.get_pixel(20, 20).0, [0, 0, 255]);
    // Refused by name: a crop of a fraction by pixels, a crop gravity that the fill's
    // differs from (one gravity places both), a bad rotation.
    for (option, named) in [
        ("c:0.5:10", "`c:0.5:10`"),
        ("c:10:10:no/rs:fill:40:40", "`c`"),
        ("rot:45", "`rot:45`"),
    ] {
        let reply = get(url(&format!("/{option}/{plain}@png"))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{option}");
        assert!(
            String::from_utf8_lossy(&reply.body).contains(named),
            "{option}: {reply:?}"
        );
    }
    node.stop().await;
}

#[tokio::test]
async fn smart_blur_and_sharpen_round_trip() {
    let node = TestNode::start(test_config()).await;
    let input = bordered();
    for (query, size) in [
        ("w=50&h=50&fit=cover&gravity=smart&format=png", (50, 50)),
        ("w=100&blur=2&format=png", (100, 50)),
        ("w=100&sharpen=0.8&format=png", (100, 50)),
        ("w=100&sharpen=1:0.5&blur=1&format=png", (100, 50)),
    ] {
        let reply = node
            .post(&format!("/v1/resize?{query}"), &[], input.clone())
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {reply:?}");
        assert_eq!(reply.header("content-type"), Some("image/png"));
        assert_eq!(size_of(&reply), size, "{query}");
    }
    for (query, name) in [
        ("blur=0.1", "blur"),
        ("blur=1000", "blur"),
        ("sharpen=0", "sharpen"),
        ("sharpen=2:30", "sharpen"),
    ] {
        let reply = node
            .post(&format!("/v1/resize?{query}"), &[], input.clone())
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}: {reply:?}");
        let message = json_of(&reply)["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(name), "{query}: {message}");
    }
    node.stop().await;
}
