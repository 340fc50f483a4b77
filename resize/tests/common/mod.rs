//! Helpers shared by the integration tests and the `versus_vips` bench: locating the shared
//! photos (skipping cleanly where they are absent), encoding synthetic inputs and decoding
//! outputs back with `image`, and the float reference (full-resolution decode → f32
//! Lanczos3) that PSNR is measured against.

#![allow(dead_code)]

use std::path::PathBuf;

use fast_image_resize as fir;
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

/// The float reference: `src` (RGB8) resized to `w` x `h` with Lanczos3 in f32, rounded.
pub fn float_reference(src_w: u32, src_h: u32, src: &[u8], w: u32, h: u32) -> Vec<u8> {
    let f: Vec<f32> = src.iter().map(|&v| f32::from(v)).collect();
    let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_ne_bytes()).collect();
    let src_img =
        fir::images::Image::from_vec_u8(src_w, src_h, bytes, fir::PixelType::F32x3).unwrap();
    let mut dst = fir::images::Image::new(w, h, fir::PixelType::F32x3);
    let mut r = fir::Resizer::new();
    r.resize(
        &src_img,
        &mut dst,
        &fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3)),
    )
    .unwrap();
    dst.buffer()
        .chunks_exact(4)
        .map(|c| {
            f32::from_ne_bytes([c[0], c[1], c[2], c[3]])
                .round()
                .clamp(0.0, 255.0) as u8
        })
        .collect()
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
