//! Option parsing and validation: every accepted spelling, every boundary.

use tessera_resize::{
    sniff, ErrorClass, Fit, FormatRequest, Gravity, InputFormat, Limits, Options, OutputFormat,
    ResizeError,
};

#[test]
fn fit_spellings_round_trip() {
    for fit in [Fit::Contain, Fit::Cover, Fit::Fill, Fit::ScaleDown] {
        assert_eq!(fit.as_str().parse::<Fit>().unwrap(), fit);
    }
    let err = "stretch".parse::<Fit>().unwrap_err().to_string();
    assert!(
        err.contains("stretch") && err.contains("scale-down"),
        "{err}"
    );
}

#[test]
fn gravity_spellings() {
    let table = [
        ("center", Gravity::Center),
        ("centre", Gravity::Center),
        ("n", Gravity::North),
        ("north", Gravity::North),
        ("ne", Gravity::NorthEast),
        ("northeast", Gravity::NorthEast),
        ("e", Gravity::East),
        ("east", Gravity::East),
        ("se", Gravity::SouthEast),
        ("southeast", Gravity::SouthEast),
        ("s", Gravity::South),
        ("south", Gravity::South),
        ("sw", Gravity::SouthWest),
        ("southwest", Gravity::SouthWest),
        ("w", Gravity::West),
        ("west", Gravity::West),
        ("nw", Gravity::NorthWest),
        ("northwest", Gravity::NorthWest),
    ];
    for (s, g) in table {
        assert_eq!(s.parse::<Gravity>().unwrap(), g, "{s}");
        assert_eq!(g.to_string().parse::<Gravity>().unwrap(), g);
    }
    assert!("up"
        .parse::<Gravity>()
        .unwrap_err()
        .to_string()
        .contains("\"up\""));
}

/// Both crop forms and padding read back from their `Display` as the same value, and
/// each accepted spelling means what it says.
#[test]
fn crop_and_padding_spellings_round_trip() {
    use tessera_resize::{Crop, Padding};
    let d = |s: &str| s.parse::<tessera_resize::Decimal>().unwrap();
    for (s, crop, canonical) in [
        (
            "1,2,30,40",
            Crop::Pixels {
                x: 1,
                y: 2,
                w: 30,
                h: 40,
            },
            "1,2,30,40",
        ),
        (
            "0.1,0,0.5,1",
            Crop::Fractions {
                x: d("0.1"),
                y: d("0"),
                w: d("0.5"),
                h: d("1"),
            },
            "0.1,0.0,0.5,1.0",
        ),
        ("300,0", Crop::WindowPixels { w: 300, h: 0 }, "300,0"),
        ("0,0", Crop::WindowPixels { w: 0, h: 0 }, "0,0"),
        (
            "0.5,0",
            Crop::WindowFractions {
                w: d("0.5"),
                h: d("0"),
            },
            "0.5,0.0",
        ),
        (
            "1.0,0.25",
            Crop::WindowFractions {
                w: d("1"),
                h: d("0.25"),
            },
            "1.0,0.25",
        ),
    ] {
        assert_eq!(s.parse::<Crop>().unwrap(), crop, "{s}");
        assert_eq!(crop.to_string(), canonical, "{s}");
        assert_eq!(canonical.parse::<Crop>().unwrap(), crop, "{canonical}");
    }
    for bad in [
        "",
        "5",
        "1,2,3",
        "1,2,3,4,5",
        "1.5,0.5",
        "-1,2",
        "1,x",
        "0.5,",
    ] {
        let message = bad.parse::<Crop>().unwrap_err().to_string();
        assert!(message.contains("crop"), "{bad}: {message}");
    }
    let sides = |p: Padding| [p.top_px, p.right_px, p.bottom_px, p.left_px];
    for (s, expected) in [
        ("7", [7, 7, 7, 7]),
        ("1,2", [1, 2, 1, 2]),
        ("1,2,3", [1, 2, 3, 2]),
        ("1,2,3,4", [1, 2, 3, 4]),
        ("0", [0, 0, 0, 0]),
    ] {
        let padding = s.parse::<Padding>().unwrap();
        assert_eq!(sides(padding), expected, "{s}");
        let canonical = padding.to_string();
        assert_eq!(canonical.split(',').count(), 4, "{canonical}");
        assert_eq!(canonical.parse::<Padding>().unwrap(), padding);
    }
    assert_eq!("0".parse::<Padding>().unwrap(), Padding::NONE);
    assert_eq!(Padding::default(), Padding::NONE);
    for bad in ["", "1,2,3,4,5", "-1", "1.5", "a", "1,,2"] {
        let message = bad.parse::<Padding>().unwrap_err().to_string();
        assert!(message.contains("padding"), "{bad}: {message}");
    }
    // dpr multiplies each side, rounded.
    let scaled = "1,2,3,4".parse::<Padding>().unwrap().scaled(d("1.5"));
    assert_eq!(sides(scaled), [2, 3, 5, 6]);
}

#[test]
fn format_spellings_and_mime() {
    assert_eq!("jpg".parse::<OutputFormat>().unwrap(), OutputFormat::Jpeg);
    assert_eq!("jpeg".parse::<OutputFormat>().unwrap(), OutputFormat::Jpeg);
    assert_eq!("png".parse::<OutputFormat>().unwrap(), OutputFormat::Png);
    assert_eq!("webp".parse::<OutputFormat>().unwrap(), OutputFormat::WebP);
    assert_eq!("avif".parse::<OutputFormat>().unwrap(), OutputFormat::Avif);
    assert_eq!("gif".parse::<OutputFormat>().unwrap(), OutputFormat::Gif);
    assert!("bmp".parse::<OutputFormat>().is_err());
    assert_eq!(OutputFormat::Gif.mime(), "image/gif");
    assert_eq!(OutputFormat::Avif.mime(), "image/avif");
    assert_eq!(OutputFormat::WebP.mime(), "image/webp");
    assert_eq!(OutputFormat::Jpeg.mime(), "image/jpeg");
    assert_eq!(OutputFormat::Png.mime(), "image/png");
}

fn invalid(options: Options) -> String {
    match options.validate(&Limits::default()) {
        Err(e @ ResizeError::InvalidOption(_)) => {
            assert_eq!(e.class(), ErrorClass::BadRequest);
            assert_eq!(e.code(), "invalid_parameter");
            e.to_string()
        }
        other => panic!("expected InvalidOption for {options:?}, got {other:?}"),
    }
}

#[test]
fn validate_edge_cases() {
    let ok = Options::default();
    assert!(ok.validate(&Limits::default()).is_ok());
    assert_eq!(ok.quality, 80);
    assert_eq!(ok.avif_speed, 9);
    assert!(!ok.progressive);

    invalid(Options {
        width: Some(0),
        ..ok
    });
    invalid(Options {
        height: Some(0),
        ..ok
    });
    invalid(Options {
        width: Some(16_385),
        ..ok
    });
    assert!(Options {
        width: Some(16_384),
        ..ok
    }
    .validate(&Limits::default())
    .is_ok());
    assert!(Options {
        width: Some(1),
        height: Some(1),
        ..ok
    }
    .validate(&Limits::default())
    .is_ok());
    // 16384 x 16384 is over the default output pixel budget (16 777 216).
    let msg = invalid(Options {
        width: Some(16_384),
        height: Some(16_384),
        ..ok
    });
    assert!(msg.contains("16384x16384"), "{msg}");
    assert!(Options {
        width: Some(4096),
        height: Some(4096),
        ..ok
    }
    .validate(&Limits::default())
    .is_ok());
    invalid(Options { quality: 0, ..ok });
    invalid(Options { quality: 101, ..ok });
    assert!(Options { quality: 1, ..ok }
        .validate(&Limits::default())
        .is_ok());
    assert!(Options { quality: 100, ..ok }
        .validate(&Limits::default())
        .is_ok());
    invalid(Options {
        avif_speed: 0,
        ..ok
    });
    invalid(Options {
        avif_speed: 11,
        ..ok
    });
    assert!(Options {
        avif_speed: 1,
        ..ok
    }
    .validate(&Limits::default())
    .is_ok());
    assert!(Options {
        avif_speed: 10,
        ..ok
    }
    .validate(&Limits::default())
    .is_ok());

    let small = Limits {
        output_pixels_max: 100,
        ..Limits::default()
    };
    assert!(Options {
        width: Some(10),
        height: Some(10),
        ..ok
    }
    .validate(&small)
    .is_ok());
    assert!(Options {
        width: Some(10),
        height: Some(11),
        ..ok
    }
    .validate(&small)
    .is_err());
    // Padding: each side within SIDE_MAX, and a box plus its padding (times dpr) within
    // the output limits.
    let padding = |s: &str| s.parse::<tessera_resize::Padding>().unwrap();
    assert!(Options {
        width: Some(8),
        height: Some(8),
        padding: padding("1"),
        ..ok
    }
    .validate(&small)
    .is_ok());
    let msg = Options {
        width: Some(8),
        height: Some(8),
        padding: padding("1,2,1,1"),
        ..ok
    }
    .validate(&small)
    .expect_err("10x10 is 100 pixels, 11x10 is over")
    .to_string();
    assert!(
        msg.contains("padding 1,2,1,1") && msg.contains("11x10"),
        "{msg}"
    );
    let msg = invalid(Options {
        padding: padding("16385,0"),
        ..ok
    });
    assert!(msg.contains("padding"), "{msg}");
    let msg = invalid(Options {
        width: Some(16_000),
        padding: padding("0,200"),
        ..ok
    });
    assert!(msg.contains("16400x?"), "{msg}");
    let msg = invalid(Options {
        width: Some(4000),
        padding: padding("0,100"),
        dpr: "4".parse().unwrap(),
        ..ok
    });
    assert!(msg.contains("16800x?"), "{msg}");
    let msg = invalid(Options {
        crop: Some(tessera_resize::Crop::WindowFractions {
            w: "1.5".parse().unwrap(),
            h: "0".parse().unwrap(),
        }),
        ..ok
    });
    assert!(msg.contains("crop"), "{msg}");
    let _ = FormatRequest::Auto {
        webp: true,
        avif: false,
    };
}

#[test]
fn sniff_uses_magic_bytes_only() {
    assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(InputFormat::Jpeg));
    assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(InputFormat::Png));
    assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(InputFormat::WebP));
    assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), None);
    assert_eq!(sniff(b"GIF89a...."), Some(InputFormat::Gif));
    assert_eq!(sniff(b"GIF87a...."), Some(InputFormat::Gif));
    assert_eq!(sniff(b"<html>image.png</html>"), None);
    assert_eq!(sniff(b""), None);
    assert_eq!(sniff(&[0xFF, 0xD8]), None);
}

#[test]
fn error_classes_and_codes() {
    let table: Vec<(ResizeError, ErrorClass, &str)> = vec![
        (ResizeError::Empty, ErrorClass::BadRequest, "empty_body"),
        (
            ResizeError::InputTooLarge { bytes: 2, max: 1 },
            ErrorClass::PayloadTooLarge,
            "payload_too_large",
        ),
        (
            ResizeError::UnsupportedFormat,
            ErrorClass::UnsupportedMedia,
            "unsupported_media_type",
        ),
        (
            ResizeError::Corrupt("x".into()),
            ErrorClass::UnsupportedMedia,
            "undecodable_image",
        ),
        (
            ResizeError::DimensionsTooLarge {
                width: 1,
                height: 1,
                pixels: 1,
                width_max: 0,
                height_max: 0,
                pixels_max: 0,
            },
            ErrorClass::Unprocessable,
            "image_too_large",
        ),
        (
            ResizeError::TooManyFrames { frames: 2, max: 1 },
            ErrorClass::Unprocessable,
            "too_many_frames",
        ),
        (
            ResizeError::InvalidOption("x".into()),
            ErrorClass::BadRequest,
            "invalid_parameter",
        ),
        (
            ResizeError::MetadataTooLarge {
                kind: "ICC profile",
                bytes: 2,
                max: 1,
            },
            ErrorClass::Unprocessable,
            "metadata_too_large",
        ),
        (
            ResizeError::JobMemoryExceeded { bytes: 2, max: 1 },
            ErrorClass::Unprocessable,
            "job_memory_exceeded",
        ),
        (ResizeError::Cancelled, ErrorClass::Cancelled, "cancelled"),
        (
            ResizeError::Encode("x".into()),
            ErrorClass::Internal,
            "encode_failed",
        ),
    ];
    for (e, class, code) in table {
        assert_eq!(e.class(), class, "{e:?}");
        assert_eq!(e.code(), code, "{e:?}");
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn avif_speed_floor_rises_with_output_size() {
    use tessera_resize::avif_speed_min;
    assert_eq!(avif_speed_min(400 * 400), 4);
    assert_eq!(avif_speed_min(1000 * 1000), 6);
    assert_eq!(avif_speed_min(4096 * 4096), 10);
}

#[test]
fn per_format_quality_falls_back_to_quality_and_is_range_checked() {
    let options = Options {
        quality: 70,
        format_quality: tessera_resize::FormatQuality {
            webp: Some(55),
            avif: Some(40),
            ..Default::default()
        },
        ..Options::default()
    };
    assert_eq!(options.quality_for(OutputFormat::Jpeg), 70);
    assert_eq!(options.quality_for(OutputFormat::WebP), 55);
    assert_eq!(options.quality_for(OutputFormat::Avif), 40);
    assert_eq!(options.quality_for(OutputFormat::Png), 70);
    let limits = tessera_resize::Limits::default();
    assert!(options.validate(&limits).is_ok());
    let bad = Options {
        format_quality: tessera_resize::FormatQuality {
            jpeg: Some(101),
            ..Default::default()
        },
        ..Options::default()
    };
    let err = bad.validate(&limits).unwrap_err().to_string();
    assert!(err.contains("q_jpeg 101"), "{err}");
    let zero = Options {
        max_bytes: Some(0),
        ..Options::default()
    };
    assert!(zero.validate(&limits).is_err());
}
