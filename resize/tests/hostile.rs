//! The hostile corpus of issue #11, generated here: deflate bombs in every compressed PNG
//! metadata chunk, metadata floods in JPEG, WebP and GIF, files cut short and closed as if
//! complete, tiny files declaring huge frames, jobs over the memory ceiling. One table of
//! (name, bytes, expected code); "ok" means the image is valid and must be served. Each
//! case also goes through `probe`, which must refuse what the header refuses, with the same
//! code. Peak memory per bomb is measured in `hostile_memory.rs` (a process of its own).

mod common;
mod hostile_inputs;

use std::sync::OnceLock;

use hostile_inputs as gen;
use tessera_resize::{
    probe, ErrorClass, FormatRequest, Limits, Options, OutputFormat, Pipeline, ResizeError,
};

/// zlib of 1 GiB of zeros (~1 MB), made once per test process.
fn gib_of_zeros() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| gen::zlib_zeros(1 << 30))
}

fn options() -> Options {
    Options {
        width: Some(64),
        height: Some(64),
        format: FormatRequest::Fixed(OutputFormat::Png),
        ..Options::default()
    }
}

fn code(result: &Result<tessera_resize::Output, ResizeError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

#[test]
fn hostile_corpus_is_refused_with_the_right_code() {
    let mut pipeline = Pipeline::new(Limits::default());
    let mut failures = Vec::new();
    for (name, bytes, expected) in gen::corpus(gib_of_zeros()) {
        let options = if expected == "job_memory_exceeded" {
            Options {
                format: FormatRequest::Fixed(OutputFormat::Png),
                ..Options::default()
            }
        } else {
            options()
        };
        let result = pipeline.process(&bytes, &options);
        let got = code(&result);
        eprintln!(
            "{name} ({} bytes): {got} {:?}",
            bytes.len(),
            result.as_ref().err()
        );
        if got != expected {
            failures.push(format!(
                "{name}: expected {expected}, got {got} ({:?})",
                result.err()
            ));
            continue;
        }
        if let Err(e) = &result {
            let class = e.class();
            let want = match expected {
                "undecodable_image" => ErrorClass::UnsupportedMedia,
                _ => ErrorClass::Unprocessable,
            };
            assert_eq!(class, want, "{name}");
        }
        // The probe refuses what the header refuses, with the same code; corrupt pixel
        // data is found only by decoding.
        let probed = probe(&bytes, &options, &Limits::default());
        match (expected, probed) {
            ("ok" | "undecodable_image", Ok(_)) => {}
            ("ok", Err(e)) => failures.push(format!("{name}: probe refused a valid image: {e}")),
            (want, Err(e)) if e.code() == want => {}
            (want, other) => failures.push(format!("{name}: probe gave {other:?}, wanted {want}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Rows land where they belong whichever order the file stores them in: a non-interlaced
/// PNG fills its frame as rows arrive, an interlaced one scatters its passes over a frame
/// made whole first. Both decode to the same pixels (PNG out at the same size: the same
/// bytes), and either, cut short, is refused.
#[test]
fn interlaced_and_plain_png_decode_to_the_same_pixels() {
    let same_size = |w: u32, h: u32| Options {
        width: Some(w),
        height: Some(h),
        format: FormatRequest::Fixed(OutputFormat::Png),
        ..Options::default()
    };
    let mut pipeline = Pipeline::new(Limits::default());
    // Sizes with every pass present, and with the later passes' partial rows and columns.
    for (w, h) in [(13, 9), (8, 8), (1, 1), (3, 2), (61, 47)] {
        let plain = gen::png_with(w, h, &[]);
        let adam7 = gen::png_adam7(w, h);
        assert_ne!(plain, adam7);
        let a = pipeline
            .process(&plain, &same_size(w, h))
            .expect("plain PNG");
        let b = pipeline
            .process(&adam7, &same_size(w, h))
            .expect("Adam7 PNG");
        assert_eq!((a.width, a.height), (w, h));
        assert!(
            a.bytes == b.bytes,
            "{w}x{h}: interlaced decodes differently"
        );
        let cut = gen::png_truncated(w, h);
        assert_eq!(
            code(&pipeline.process(&cut, &same_size(w, h))),
            "undecodable_image"
        );
    }
    // The interlaced file cut in its later passes (its IDAT halved, then IEND).
    let adam7 = gen::png_adam7(61, 47);
    let idat = adam7
        .windows(4)
        .position(|k| k == b"IDAT")
        .expect("an IDAT chunk")
        - 4;
    let len = u32::from_be_bytes(adam7[idat..idat + 4].try_into().unwrap()) as usize;
    let data = &adam7[idat + 8..idat + 8 + len];
    let mut cut = adam7[..idat].to_vec();
    cut.extend(gen::chunk(b"IDAT", &data[..len / 2]));
    cut.extend(gen::chunk(b"IEND", &[]));
    assert_eq!(
        code(&pipeline.process(&cut, &same_size(61, 47))),
        "undecodable_image"
    );
}

#[test]
fn metadata_bound_is_configurable() {
    // The same 3000-byte profile is refused under a 1000-byte bound.
    let png = gen::png_with(16, 16, &[gen::iccp(&gen::zlib(&[0x44; 3000]))]);
    let limits = Limits {
        metadata_bytes_max: 1000,
        ..Limits::default()
    };
    let err = Pipeline::new(limits).process(&png, &options()).unwrap_err();
    assert!(
        matches!(
            err,
            ResizeError::MetadataTooLarge {
                kind: "ICC profile",
                max: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.code(), "metadata_too_large");
}

#[test]
fn job_memory_ceiling_refuses_from_the_header_and_probe_agrees() {
    let png = gen::png_with(512, 512, &[]);
    let limits = Limits {
        job_bytes_max: 1 << 20,
        ..Limits::default()
    };
    let err = Pipeline::new(limits.clone())
        .process(&png, &options())
        .unwrap_err();
    assert!(
        matches!(err, ResizeError::JobMemoryExceeded { max, .. } if max == 1 << 20),
        "{err:?}"
    );
    assert_eq!(err.class(), ErrorClass::Unprocessable);
    assert_eq!(err.code(), "job_memory_exceeded");
    let probed = probe(&png, &options(), &limits).unwrap_err();
    assert_eq!(probed.code(), "job_memory_exceeded");
    // With the default ceiling the estimate is reported and the job runs.
    let p = probe(&png, &options(), &Limits::default()).unwrap();
    assert!(
        p.job_bytes > 512 * 512 * 3 && p.job_bytes < 64 << 20,
        "{p:?}"
    );
    Pipeline::new(Limits::default())
        .process(&png, &options())
        .unwrap();
}

#[test]
fn avif_and_webp_outputs_are_bounded_per_format() {
    let png = gen::png_with(64, 64, &[]);
    let limits = Limits {
        avif_output_pixels_max: 100 * 100,
        webp_output_pixels_max: 100 * 100,
        ..Limits::default()
    };
    let big = |format| Options {
        width: Some(200),
        height: Some(200),
        format,
        ..Options::default()
    };
    for format in [OutputFormat::Avif, OutputFormat::WebP] {
        let err = Pipeline::new(limits.clone())
            .process(&png, &big(FormatRequest::Fixed(format)))
            .unwrap_err();
        assert_eq!(err.code(), "invalid_parameter", "{format:?}: {err}");
        let probed = probe(&png, &big(FormatRequest::Fixed(format)), &limits).unwrap_err();
        assert_eq!(probed.code(), "invalid_parameter");
    }
    // `auto` falls back to what fits: JPEG for an opaque image.
    let auto = big(FormatRequest::Auto {
        webp: true,
        avif: true,
    });
    let out = Pipeline::new(limits.clone()).process(&png, &auto).unwrap();
    assert_eq!(out.format, OutputFormat::Jpeg);
    assert_eq!(
        probe(&png, &auto, &limits).unwrap().output_format,
        OutputFormat::Jpeg
    );
}

/// Real photos cut inside their entropy-coded data and closed with FFD9 (libjpeg would pad
/// the rest with grey and warn): refused, baseline and progressive, at full and reduced
/// DCT scale. One exception, by design: at 1/4 or 1/8 scale a progressive file's trailing
/// luma refinement scans are not read at all (`trailing_refinement_scans` in decode.rs), so
/// a cut inside them cannot be seen; the output is then byte-identical to the uncut file's.
#[test]
fn real_photos_cut_and_closed_with_eoi_are_refused() {
    for name in [
        "free_by_Peter_Nerlich.jpg",
        "friends_by_Aitzol_Berasategi.jpg",
    ] {
        let Some(bytes) = common::photo(name) else {
            return;
        };
        for width in [200, 2000] {
            let options = Options {
                width: Some(width),
                ..Options::default()
            };
            let whole = Pipeline::new(Limits::default())
                .process(&bytes, &options)
                .unwrap();
            for fraction in [0.3, 0.7, 0.95] {
                let cut = gen::jpeg_cut_with_eoi(&bytes, fraction);
                match Pipeline::new(Limits::default()).process(&cut, &options) {
                    Err(e) => assert_eq!(e.code(), "undecodable_image", "{name} at {fraction}"),
                    Ok(out) => {
                        eprintln!("{name} cut at {fraction}, width {width}: served (cut in skipped scans)");
                        assert!(
                            width == 200 && name.starts_with("friends"),
                            "{name} at {fraction}, w {width}"
                        );
                        assert_eq!(
                            out.bytes, whole.bytes,
                            "{name} at {fraction}: the output changed"
                        );
                    }
                }
            }
        }
    }
}

/// Strict decoding must not refuse real camera files: every photo of the shared set decodes,
/// at full scale and at the smallest DCT scale (the trimmed progressive path).
#[test]
fn every_shared_photo_still_decodes_under_strict_mode() {
    let Some(dir) = common::photos_dir() else {
        return;
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| {
            n.ends_with(".jpg")
                || n.ends_with(".png")
                || n.ends_with(".webp")
                || n.ends_with(".gif")
        })
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    let mut pipeline = Pipeline::new(Limits::default());
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        for width in [100, 4000] {
            let options = Options {
                width: Some(width),
                fit: tessera_resize::Fit::ScaleDown,
                ..Options::default()
            };
            let out = pipeline.process(&bytes, &options);
            assert!(out.is_ok(), "{name} at width {width}: {:?}", out.err());
        }
    }
}

/// `probe` predicts exactly what `process` produces: format and size, for each way the
/// format is chosen.
#[test]
fn probe_matches_the_pipeline() {
    let rgb = gen::png_with(300, 200, &[]);
    let jpeg = gen::jpeg(300, 200, false);
    let table = [
        (&rgb, FormatRequest::Original, Some(120), None),
        (&jpeg, FormatRequest::Original, None, Some(50)),
        (
            &jpeg,
            FormatRequest::Auto {
                webp: true,
                avif: false,
            },
            Some(64),
            Some(64),
        ),
        (
            &jpeg,
            FormatRequest::Auto {
                webp: false,
                avif: true,
            },
            Some(64),
            None,
        ),
        (
            &rgb,
            FormatRequest::Auto {
                webp: false,
                avif: false,
            },
            None,
            None,
        ),
        (
            &jpeg,
            FormatRequest::Fixed(OutputFormat::Png),
            Some(1000),
            Some(10),
        ),
    ];
    for (input, format, width, height) in table {
        let options = Options {
            width,
            height,
            format,
            avif_speed: 10,
            ..Options::default()
        };
        let p = probe(input, &options, &Limits::default()).unwrap();
        let out = Pipeline::new(Limits::default())
            .process(input, &options)
            .unwrap();
        assert_eq!(
            (
                p.output_format,
                p.output_width,
                p.output_height,
                p.input_format
            ),
            (out.format, out.width, out.height, out.input_format),
            "{format:?} {width:?}x{height:?}"
        );
        assert_eq!(p.frames, 1);
        assert!(p.width == 300 && p.height == 200);
    }
    // An animated GIF: frames counted from the header walk.
    if let Some(gif) = common::photo("friends-animated.gif") {
        let p = probe(&gif, &Options::default(), &Limits::default()).unwrap();
        assert_eq!(p.frames, 6);
    }
    // The same option errors as the pipeline.
    let bad = Options {
        quality: 0,
        ..Options::default()
    };
    assert_eq!(
        probe(&rgb, &bad, &Limits::default()).unwrap_err().code(),
        "invalid_parameter"
    );
    assert_eq!(
        probe(&[], &Options::default(), &Limits::default())
            .unwrap_err()
            .code(),
        "empty_body"
    );
    assert_eq!(
        probe(b"not an image", &Options::default(), &Limits::default())
            .unwrap_err()
            .code(),
        "unsupported_media_type"
    );
}
