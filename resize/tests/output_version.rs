//! `OUTPUT_VERSION` is raised whenever the pipeline's output bytes change: this test pins the
//! version to a digest of a fixed set of conversions (synthetic inputs made here, so nothing
//! is skipped: JPEG decoded at a DCT scale, whole and by region, and at full size; PNG with
//! and without alpha; every still encoder; the filters) and fails when the bytes move and
//! the version does not (checked: a JPEG shrink margin of 1.5 instead of 2 fails it). The
//! node's ETags hash the version, so a tag given out before such a change is not given to
//! different bytes after it.
//!
//! When it fails on purpose (an encoder setting, a filter, a codec update), raise
//! `tessera_resize::OUTPUT_VERSION` and set `PINNED` to the pair the failure prints.

mod common;

use common::{jpeg_of, png_of};
use image::ExtendedColorType;
use tessera_resize::{Fit, FormatRequest, Limits, Options, OutputFormat, Pipeline, OUTPUT_VERSION};

/// (`OUTPUT_VERSION`, FNV-1a 64 of every conversion's output bytes, in order).
const PINNED: (u32, u64) = (1, 0xd6eb_0678_489c_48d2);

/// A 257x191 RGB picture with what resampling and encoders react to: smooth gradients, hard
/// edges, fine stripes and noise (a fixed LCG, so the same on every machine).
fn picture() -> (u32, u32, Vec<u8>) {
    let (w, h) = (257u32, 191u32);
    let mut seed = 0x2545_f491u32;
    let mut pixels = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 27) as u8; // 0..31
            let stripes = if (x / 3 + y / 5) % 2 == 0 { 40 } else { 0 };
            let disc = (x as i32 - 160).pow(2) + (y as i32 - 90).pow(2) < 50 * 50;
            pixels.push((x * 200 / w) as u8 + noise);
            pixels.push(if disc {
                220
            } else {
                (y * 180 / h) as u8 + stripes
            });
            pixels.push(((x + y) * 120 / (w + h)) as u8 + noise / 2 + stripes);
        }
    }
    (w, h, pixels)
}

/// FNV-1a, 64 bits: a digest fixed by its definition (std's hashers are not).
fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn output_bytes_change_only_with_the_output_version() {
    let (w, h, rgb) = picture();
    let rgba: Vec<u8> = rgb
        .chunks_exact(3)
        .enumerate()
        .flat_map(|(i, p)| [p[0], p[1], p[2], (i % 251) as u8])
        .collect();
    let inputs = [
        ("jpeg", jpeg_of(&rgb, w, h, 90)),
        ("png", png_of(&rgb, w, h, ExtendedColorType::Rgb8)),
        ("png-alpha", png_of(&rgba, w, h, ExtendedColorType::Rgba8)),
    ];
    let fixed = FormatRequest::Fixed;
    let base = Options {
        width: Some(64),
        height: Some(64),
        quality: 80,
        avif_speed: 10,
        ..Options::default()
    };
    let cases = [
        // Every encoder; from the JPEG, at 64 px, the decode is DCT-scaled (shrink-on-load).
        Options {
            format: fixed(OutputFormat::Jpeg),
            ..base
        },
        Options {
            format: fixed(OutputFormat::Jpeg),
            progressive: true,
            ..base
        },
        Options {
            format: fixed(OutputFormat::Png),
            ..base
        },
        Options {
            format: fixed(OutputFormat::WebP),
            ..base
        },
        Options {
            format: fixed(OutputFormat::Avif),
            ..base
        },
        // A full-scale decode, a cover crop (the JPEG region decode) and the filters.
        Options {
            format: fixed(OutputFormat::WebP),
            width: Some(200),
            height: None,
            ..base
        },
        Options {
            format: fixed(OutputFormat::Jpeg),
            fit: Fit::Cover,
            height: Some(20),
            ..base
        },
        Options {
            format: fixed(OutputFormat::Jpeg),
            blur: Some("1.5".parse().expect("a sigma")),
            sharpen: Some("1".parse().expect("a sharpen")),
            ..base
        },
    ];
    let mut pipeline = Pipeline::new(Limits::default());
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    for (name, input) in &inputs {
        for (i, options) in cases.iter().enumerate() {
            let out = pipeline
                .process(input, options)
                .unwrap_or_else(|e| panic!("{name} case {i}: {e}"));
            digest = fnv1a(digest, &(out.bytes.len() as u64).to_le_bytes());
            digest = fnv1a(digest, &out.bytes);
        }
    }
    assert_eq!(
        (OUTPUT_VERSION, digest),
        PINNED,
        "the output bytes are not those pinned: if the change is meant, raise OUTPUT_VERSION \
         (now {OUTPUT_VERSION}) and set PINNED to (the new version, {digest:#x})"
    );
}
