//! Hostile and broken inputs: each one refused with the right variant, quickly, without a
//! large allocation and without a panic escaping.

mod common;

use tessera_resize::{FormatRequest, Limits, Options, OutputFormat, Pipeline, ResizeError};

fn run(bytes: &[u8]) -> Result<tessera_resize::Output, ResizeError> {
    let options = Options {
        width: Some(400),
        height: Some(400),
        ..Options::default()
    };
    Pipeline::new(Limits::default()).process(bytes, &options)
}

#[test]
fn bad_files_are_refused_with_the_right_variant() {
    type Expected = fn(&ResizeError) -> bool;
    let table: [(&str, Expected); 7] = [
        ("bad/empty.jpg", |e| matches!(e, ResizeError::Empty)),
        ("bad/truncated.jpg", |e| {
            matches!(e, ResizeError::Corrupt(_))
        }),
        ("bad/random-bytes.jpg", |e| {
            matches!(e, ResizeError::UnsupportedFormat | ResizeError::Corrupt(_))
        }),
        ("bad/text-not-image.png", |e| {
            matches!(e, ResizeError::UnsupportedFormat)
        }),
        ("bad/bomb-60000x60000.png", |e| {
            matches!(
                e,
                ResizeError::DimensionsTooLarge {
                    width: 60000,
                    height: 60000,
                    ..
                }
            )
        }),
        ("bad/bomb-65000x65000.jpg", |e| {
            matches!(
                e,
                ResizeError::DimensionsTooLarge {
                    width: 65000,
                    height: 65000,
                    ..
                }
            )
        }),
        ("bad/bomb-400mp-valid.png", |e| {
            matches!(
                e,
                ResizeError::DimensionsTooLarge {
                    width: 20000,
                    height: 20000,
                    ..
                }
            )
        }),
    ];
    for (name, expected) in table {
        let Some(bytes) = common::photo(name) else {
            return;
        };
        let err = run(&bytes).expect_err(name);
        assert!(expected(&err), "{name}: got {err:?}");
        eprintln!("{name}: {err}");
    }
}

#[test]
fn the_valid_400_megapixel_png_is_refused_even_under_raised_side_limits() {
    // With the side limits raised, the pixel budget still refuses it, from the header.
    let Some(bytes) = common::photo("bad/bomb-400mp-valid.png") else {
        return;
    };
    let limits = Limits {
        width_max: 100_000,
        height_max: 100_000,
        ..Limits::default()
    };
    let err = Pipeline::new(limits)
        .process(&bytes, &Options::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            ResizeError::DimensionsTooLarge {
                pixels: 400_000_000,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn input_byte_limit() {
    let Some(bytes) = common::photo("aitzgorri-256k.jpg") else {
        return;
    };
    let limits = Limits {
        input_bytes_max: 1000,
        ..Limits::default()
    };
    let err = Pipeline::new(limits)
        .process(&bytes, &Options::default())
        .unwrap_err();
    assert!(
        matches!(err, ResizeError::InputTooLarge { max: 1000, .. }),
        "{err:?}"
    );
}

#[test]
fn pixel_limit_applies_to_the_declared_size() {
    let Some(bytes) = common::photo("aitzgorri-256k.jpg") else {
        return;
    };
    let limits = Limits {
        pixels_max: 1920 * 1278 - 1,
        ..Limits::default()
    };
    let options = Options {
        width: Some(100),
        ..Options::default()
    };
    let err = Pipeline::new(limits).process(&bytes, &options).unwrap_err();
    assert!(
        matches!(
            err,
            ResizeError::DimensionsTooLarge {
                width: 1920,
                height: 1278,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Every prefix length and a set of byte corruptions of real files: an error or an image,
/// never a panic (a panic fails this test).
#[test]
fn truncated_and_corrupted_inputs_never_panic() {
    let names = [
        "aitzgorri-256k.jpg",
        "friends-orientation6.jpg",
        "friends-cmyk.jpg",
        "friends.webp",
        "friends-alpha.png",
        "friends-animated.gif",
        "free-16bit.png",
    ];
    let options = Options {
        width: Some(64),
        height: Some(64),
        format: FormatRequest::Fixed(OutputFormat::Png),
        ..Options::default()
    };
    let mut pipeline = Pipeline::new(Limits::default());
    for name in names {
        let Some(bytes) = common::photo(name) else {
            return;
        };
        let mut refused = 0;
        for i in 1..24 {
            let cut = &bytes[..bytes.len() * i / 24];
            if pipeline.process(cut, &options).is_err() {
                refused += 1;
            }
        }
        // Truncation must be detected for JPEG (libjpeg would otherwise pad with grey).
        if name.ends_with(".jpg") {
            assert_eq!(refused, 23, "{name}: every truncated JPEG is refused");
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..24 {
            let mut broken = bytes.clone();
            for _ in 0..16 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = 2 + (seed as usize) % (broken.len() - 2);
                broken[at] = (seed >> 32) as u8;
            }
            let _ = pipeline.process(&broken, &options);
        }
    }
}

#[test]
fn truncated_jpeg_headers_are_corrupt_not_panics() {
    let Some(bytes) = common::photo("aitzgorri-256k.jpg") else {
        return;
    };
    for len in [3usize, 4, 10, 20, 100, 300, 600] {
        let err = run(&bytes[..len]).unwrap_err();
        assert!(matches!(err, ResizeError::Corrupt(_)), "{len}: {err:?}");
    }
}

#[test]
fn animated_gif_over_the_frame_budget_is_refused() {
    let Some(bytes) = common::photo("friends-animated.gif") else {
        return;
    };
    let limits = Limits {
        frames_max: 3,
        ..Limits::default()
    };
    let err = Pipeline::new(limits)
        .process(&bytes, &Options::default())
        .unwrap_err();
    assert!(
        matches!(err, ResizeError::TooManyFrames { frames: 6, max: 3 }),
        "{err:?}"
    );
    // At the budget it is accepted (the first frame is used).
    let limits = Limits {
        frames_max: 6,
        ..Limits::default()
    };
    assert!(Pipeline::new(limits)
        .process(&bytes, &Options::default())
        .is_ok());
}

#[test]
fn output_larger_than_the_budget_is_refused() {
    let Some(bytes) = common::photo("aitzgorri-256k.jpg") else {
        return;
    };
    // Only a height: the width follows the aspect ratio and would exceed the side limit.
    let options = Options {
        height: Some(16_000),
        ..Options::default()
    };
    let err = Pipeline::new(Limits::default())
        .process(&bytes, &options)
        .unwrap_err();
    assert!(matches!(err, ResizeError::InvalidOption(_)), "{err:?}");
}
