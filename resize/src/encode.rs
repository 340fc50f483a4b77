//! Encoders: JPEG (libjpeg-turbo via `mozjpeg`), PNG (`image`), WebP (libwebp via `webp`),
//! AVIF (rav1e via `ravif`). Nothing but pixels is written: no EXIF, ICC, XMP or comments
//! (pixels are already sRGB and upright, so nothing of the input's metadata is needed).
//!
//! JPEG uses libjpeg-turbo's classic settings (`set_fastest_defaults`: standard quantisation
//! tables, no trellis quantisation) with optimised Huffman tables and 4:2:0 chroma: mozjpeg's
//! trellis mode makes files ~10% smaller but costs several times the encode time, which for
//! thumbnails is most of the request. AVIF runs single-threaded (the node parallelises across
//! requests) with a speed floor that rises with the output size ([`avif_speed_min`]) so a
//! request cannot take minutes. rav1e's `asm` feature was measured and left out: it made a
//! 400x266 thumbnail at speed 8 only 16% faster (526 vs 624 ms; 3x faster at speed 10 on
//! 6 MP) for a nasm build of rav1e that adds minutes to a clean build on 2 cores.

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::ImageEncoder;
use mozjpeg::{ColorSpace, Compress};

use crate::error::panic_message;
use crate::options::avif_speed_min;
use crate::{OutputFormat, ResizeError};

/// An 8-bit interleaved image to encode.
pub(crate) struct Frame<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA).
    pub channels: u8,
}

/// Encoder settings taken from the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EncodeSettings {
    pub quality: u8,
    pub progressive: bool,
    pub avif_speed: u8,
}

/// Encodes `frame` as `format` into `out` (cleared first). The frame's channels must suit
/// the format: JPEG takes 1 or 3, WebP 3 or 4, AVIF 3 or 4, PNG any.
pub(crate) fn encode(
    format: OutputFormat,
    frame: &Frame<'_>,
    settings: EncodeSettings,
    out: &mut Vec<u8>,
) -> Result<(), ResizeError> {
    out.clear();
    match catch_unwind(AssertUnwindSafe(|| match format {
        OutputFormat::Jpeg => encode_jpeg(frame, settings, out),
        OutputFormat::Png => encode_png(frame, out),
        OutputFormat::WebP => encode_webp(frame, settings, out),
        OutputFormat::Avif => encode_avif(frame, settings, out),
    })) {
        Ok(result) => result,
        Err(payload) => Err(ResizeError::Encode(panic_message(
            payload.as_ref(),
            "encoder panicked",
        ))),
    }
}

fn encode_jpeg(
    frame: &Frame<'_>,
    settings: EncodeSettings,
    out: &mut Vec<u8>,
) -> Result<(), ResizeError> {
    let space = match frame.channels {
        1 => ColorSpace::JCS_GRAYSCALE,
        3 => ColorSpace::JCS_RGB,
        n => {
            return Err(ResizeError::Encode(format!(
                "JPEG cannot take {n} channels"
            )))
        }
    };
    if frame.width > 65_535 || frame.height > 65_535 {
        return Err(ResizeError::Encode(
            "JPEG is limited to 65535 pixels per side".to_owned(),
        ));
    }
    let mut c = Compress::new(space);
    c.set_fastest_defaults();
    c.set_size(frame.width as usize, frame.height as usize);
    c.set_quality(f32::from(settings.quality));
    c.set_optimize_coding(true);
    if settings.progressive {
        c.set_progressive_mode();
    }
    if frame.channels == 3 {
        // 4:2:0, as libvips and browsers' encoders do below quality 90.
        let sampling = if settings.quality >= 90 {
            (1, 1)
        } else {
            (2, 2)
        };
        c.set_chroma_sampling_pixel_sizes(sampling, sampling);
    }
    let started = c
        .start_compress(std::mem::take(out))
        .map_err(|e| ResizeError::Encode(format!("JPEG: {e}")))?;
    let mut started = started;
    started
        .write_scanlines(frame.pixels)
        .map_err(|e| ResizeError::Encode(format!("JPEG: {e}")))?;
    *out = started
        .finish()
        .map_err(|e| ResizeError::Encode(format!("JPEG: {e}")))?;
    Ok(())
}

fn encode_png(frame: &Frame<'_>, out: &mut Vec<u8>) -> Result<(), ResizeError> {
    let color = match frame.channels {
        1 => image::ExtendedColorType::L8,
        2 => image::ExtendedColorType::La8,
        3 => image::ExtendedColorType::Rgb8,
        _ => image::ExtendedColorType::Rgba8,
    };
    image::codecs::png::PngEncoder::new_with_quality(
        &mut *out,
        image::codecs::png::CompressionType::Default,
        image::codecs::png::FilterType::Adaptive,
    )
    .write_image(frame.pixels, frame.width, frame.height, color)
    .map_err(|e| ResizeError::Encode(format!("PNG: {e}")))
}

fn encode_webp(
    frame: &Frame<'_>,
    settings: EncodeSettings,
    out: &mut Vec<u8>,
) -> Result<(), ResizeError> {
    let layout = match frame.channels {
        3 => webp::PixelLayout::Rgb,
        4 => webp::PixelLayout::Rgba,
        n => {
            return Err(ResizeError::Encode(format!(
                "WebP cannot take {n} channels"
            )))
        }
    };
    if frame.width > 16_383 || frame.height > 16_383 {
        return Err(ResizeError::Encode(
            "WebP is limited to 16383 pixels per side".to_owned(),
        ));
    }
    let encoder = webp::Encoder::new(frame.pixels, layout, frame.width, frame.height);
    let memory = encoder
        .encode_simple(false, f32::from(settings.quality))
        .map_err(|e| ResizeError::Encode(format!("WebP: {e:?}")))?;
    out.extend_from_slice(&memory);
    Ok(())
}

fn encode_avif(
    frame: &Frame<'_>,
    settings: EncodeSettings,
    out: &mut Vec<u8>,
) -> Result<(), ResizeError> {
    let pixels = u64::from(frame.width) * u64::from(frame.height);
    let speed = settings.avif_speed.clamp(1, 10).max(avif_speed_min(pixels));
    let encoder = ravif::Encoder::new()
        .with_quality(f32::from(settings.quality))
        .with_alpha_quality(f32::from(settings.quality))
        .with_speed(speed)
        .with_num_threads(Some(1));
    let (w, h) = (frame.width as usize, frame.height as usize);
    let encoded = match frame.channels {
        3 => {
            let px: Vec<ravif::RGB8> = frame
                .pixels
                .chunks_exact(3)
                .map(|p| ravif::RGB8::new(p[0], p[1], p[2]))
                .collect();
            encoder.encode_rgb(ravif::Img::new(&px[..], w, h))
        }
        4 => {
            let px: Vec<ravif::RGBA8> = frame
                .pixels
                .chunks_exact(4)
                .map(|p| ravif::RGBA8::new(p[0], p[1], p[2], p[3]))
                .collect();
            encoder.encode_rgba(ravif::Img::new(&px[..], w, h))
        }
        n => {
            return Err(ResizeError::Encode(format!(
                "AVIF cannot take {n} channels"
            )))
        }
    }
    .map_err(|e| ResizeError::Encode(format!("AVIF: {e}")))?;
    *out = encoded.avif_file;
    Ok(())
}
