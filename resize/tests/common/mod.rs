//! Helpers shared by the integration tests and the `versus_vips` bench: locating the shared
//! photos (skipping cleanly where they are absent), encoding synthetic inputs and decoding
//! outputs back with `image`, and the float reference (full-resolution decode → f64
//! Lanczos3) that PSNR is measured against.

#![allow(dead_code)]

use std::path::PathBuf;

use image::ImageEncoder;

/// The shared photo folder, or `None` (with a message) when it is missing.
pub fn photos_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/photos"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: shared photos not found at {}", dir.display());
        None
    }
}

/// Reads a photo by its path relative to the photo folder; `None` (skip) when absent.
pub fn photo(name: &str) -> Option<Vec<u8>> {
    let dir = photos_dir()?;
    match std::fs::read(dir.join(name)) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIP: cannot read photo {name}: {e}");
            None
        }
    }
}

/// `pixels` (`w` x `h`, 8-bit, laid out as `color` says) as a PNG, with `image`'s encoder.
pub fn png_of(pixels: &[u8], w: u32, h: u32, color: image::ExtendedColorType) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(pixels, w, h, color)
        .expect("PNG encodes");
    out
}

/// RGB `pixels` (`w` x `h`) as a baseline JPEG at `quality`, with `image`'s encoder.
pub fn jpeg_of(pixels: &[u8], w: u32, h: u32, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(pixels, w, h, image::ExtendedColorType::Rgb8)
        .expect("JPEG encodes");
    out
}

/// Decodes any output back with `image` (JPEG, PNG, WebP).
pub fn decode_back(bytes: &[u8]) -> image::DynamicImage {
    image::load_from_memory(bytes).expect("output decodes back")
}

/// RGB8 pixels of a full-resolution decode (via `image`, an independent decoder).
pub fn decode_rgb8(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let img = decode_back(bytes).to_rgb8();
    (img.width(), img.height(), img.into_raw())
}

/// The float reference: `src` (RGB8) resized to `w` x `h` with Lanczos3 in f64, rounded.
///
/// Written here, not called from `fast_image_resize`: the oracle stays independent of the
/// library the pipeline resizes with, and each test binary that called its generic resizer
/// compiled its own copy of it (about two minutes of a clean test build per binary). The
/// convention is Pillow's, which `fast_image_resize` follows: separable, each output sample
/// centred at `(i + 0.5) * scale` in the source, the kernel widened by the scale when
/// shrinking, its window cut at the image's edges and the weights renormalised.
pub fn float_reference(src_w: u32, src_h: u32, src: &[u8], w: u32, h: u32) -> Vec<u8> {
    let (sw, sh, w, h) = (src_w as usize, src_h as usize, w as usize, h as usize);
    assert_eq!(src.len(), sw * sh * 3);
    // Rows first, into a float buffer `w` wide and `sh` high.
    let mut rows = vec![0f64; w * sh * 3];
    for (x, (first, weights)) in lanczos3_windows(sw, w).iter().enumerate() {
        for y in 0..sh {
            let line = &src[(y * sw + first) * 3..];
            let mut sum = [0f64; 3];
            for (k, weight) in weights.iter().enumerate() {
                for (c, s) in sum.iter_mut().enumerate() {
                    *s += weight * f64::from(line[k * 3 + c]);
                }
            }
            rows[(y * w + x) * 3..][..3].copy_from_slice(&sum);
        }
    }
    let mut out = vec![0u8; w * h * 3];
    for (y, (first, weights)) in lanczos3_windows(sh, h).iter().enumerate() {
        for x in 0..w * 3 {
            let sum: f64 = weights
                .iter()
                .enumerate()
                .map(|(k, weight)| weight * rows[(first + k) * w * 3 + x])
                .sum();
            out[y * w * 3 + x] = sum.round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// For each of `dst` output samples along one axis of `src`: its first source sample and
/// the normalised Lanczos3 weights from there.
fn lanczos3_windows(src: usize, dst: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = src as f64 / dst as f64;
    let widen = scale.max(1.0);
    let support = 3.0 * widen;
    (0..dst)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let first = (center - support + 0.5).floor().max(0.0) as usize;
            let end = ((center + support + 0.5).floor() as usize).min(src);
            let mut weights: Vec<f64> = (first..end)
                .map(|j| lanczos3((j as f64 - center + 0.5) / widen))
                .collect();
            let total: f64 = weights.iter().sum();
            weights.iter_mut().for_each(|weight| *weight /= total);
            (first, weights)
        })
        .collect()
}

/// The Lanczos kernel with three lobes: sinc(x) sinc(x / 3) inside |x| < 3.
fn lanczos3(x: f64) -> f64 {
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            let px = std::f64::consts::PI * x;
            px.sin() / px
        }
    };
    if x.abs() < 3.0 {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Peak signal-to-noise ratio of two equally sized 8-bit buffers, dB.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let mse: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Mean absolute difference per channel value.
pub fn mean_abs_error(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .sum::<f64>()
        / a.len() as f64
}
