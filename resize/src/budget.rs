//! The job memory estimate: how many bytes one conversion will hold at its peak, computed
//! from the header and the plan before any pixel buffer is allocated, and checked against
//! `Limits::job_bytes_max` ([`ResizeError::JobMemoryExceeded`]).
//!
//! The estimate is the sum of every buffer the job may hold at once (an upper bound: the
//! decode buffers are still alive while the encoder runs, as they are in `Pipeline`):
//! - decode: the decoded pixels at the chosen JPEG DCT scale, scratch (CMYK before
//!   conversion), and what the decoder keeps itself (`Header::decoder_bytes`: libjpeg's
//!   whole-image coefficient buffer for progressive files, at full size whatever the scale;
//!   `image`'s GIF frame; WebP planes);
//! - resize: the resized image, `fast_image_resize`'s intermediate (output width × decoded
//!   height) and, with alpha, its premultiplied copy of the source;
//! - after resizing: the ICC scratch, the oriented copy, the padded or background canvas
//!   ([`extra_bytes`]) and the channel-adapted copy (one output image each, where the job
//!   needs it);
//! - encode: the output bytes (counted at the raw size) plus the encoder's working set per
//!   output pixel ([`encoder_bytes_per_pixel`]).
//!
//! Not counted: allocator overhead and the input itself (the caller holds it either way).
//! The bound this gives is the one the node's admission relies on: workers × `job_bytes_max`
//! plus the input bodies.

use crate::decode::Header;
use crate::geometry::Plan;
use crate::{Decimal, Limits, Options, OutputFormat, ResizeError};

/// The encoder's working set per output pixel, in bytes, besides the output itself; set
/// above what `examples/stretches.rs` measured (peak RSS growth of a 64x64 PNG enlarged, less
/// the resized image), since an estimate must not come in under the real figure.
/// - JPEG: with optimised Huffman tables libjpeg keeps every DCT coefficient of the image
///   (2 bytes × 1.5 coefficients per pixel at 4:2:0, 3 at 4:4:4): 6 (measured ~5.5 at
///   16.7 MP, quality 80).
/// - PNG: row filters and the deflate state are a few rows and ~300 KiB: counted as 1.
/// - WebP: libwebp's ARGB and YUVA copies of the picture and per-macroblock state: 12
///   (measured ~5.4 at 16.7 MP).
/// - GIF: the RGBA copy the quantiser works in, the palette indices and the LZW output: 6.
/// - AVIF: ravif's RGB and YUV copies and rav1e's frame, reference and lookahead state: 64
///   (measured ~25 at 4.2 MP, speed 10).
pub(crate) fn encoder_bytes_per_pixel(format: OutputFormat) -> u64 {
    match format {
        OutputFormat::Jpeg => 6,
        OutputFormat::Png => 1,
        OutputFormat::WebP => 12,
        OutputFormat::Avif => 64,
        OutputFormat::Gif => 6,
    }
}

/// Fixed overhead of any job (tables, encoder state, small buffers), bytes.
const JOB_OVERHEAD_BYTES: u64 = 4 << 20;

/// The decoded size for a JPEG DCT scale numerator (libjpeg rounds up).
pub(crate) fn scaled(side: u32, scale: u8) -> u64 {
    (u64::from(side) * u64::from(scale)).div_ceil(8)
}

/// The estimated peak working memory of a job, bytes (see the module doc).
pub(crate) fn job_bytes(header: &Header, scale: u8, plan: &Plan, format: OutputFormat) -> u64 {
    let ch = u64::from(header.channels);
    let (dw, dh) = (scaled(header.width, scale), scaled(header.height, scale));
    let decoded = dw * dh;
    let decode = decoded * (ch + u64::from(header.scratch_bytes_per_pixel)) + header.decoder_bytes;
    let (rw, rh) = (u64::from(plan.resize_w), u64::from(plan.resize_h));
    let alpha = header.channels == 2 || header.channels == 4;
    let resize = rw * rh * ch + rw * dh * ch + if alpha { decoded * ch } else { 0 };
    let out = u64::from(plan.out_w) * u64::from(plan.out_h);
    // The ICC scratch and the oriented copy exist only when there is a profile or a
    // rotation (EXIF or asked for); the channel-adapted copy only when the encoder takes other channels.
    let oriented = u64::from(header.icc) + u64::from(plan.orientation > 1);
    let same_channels = header.channels == 3
        || (header.channels == 1 && matches!(format, OutputFormat::Jpeg | OutputFormat::Png));
    let after = out * ch * oriented + if same_channels { 0 } else { out * 4 };
    let encode = out * (ch + encoder_bytes_per_pixel(format));
    decode + resize + after + encode + JOB_OVERHEAD_BYTES
}

/// Buffers only some options add, bytes: the canvas of `fit=pad` or `background` (the
/// output at 4 bytes per pixel at most); the filter scratch of `blur`/`sharpen` (one
/// buffer, reused: the larger of the two, `crate::filter::filter_scratch_bytes`); for
/// `gravity=smart` the copy of the region the window may move in (the decoded image, at
/// most, when a crop or trim narrows it) and the search's shrunk copy and tables; for a
/// watermark, the blended copy of the output and the scaled mark.
pub(crate) fn extra_bytes(
    plan: &Plan,
    options: &Options,
    channels: u8,
    decoded_pixels: u64,
) -> u64 {
    let out = u64::from(plan.out_w) * u64::from(plan.out_h);
    let canvas = if plan.pads() || options.background.is_some() {
        out * 4
    } else {
        0
    };
    let scratch = |sigma: Decimal| {
        crate::filter::filter_scratch_bytes(
            plan.resize_w,
            plan.resize_h,
            channels,
            sigma.as_f64() as f32,
        )
    };
    let filter = options
        .blur
        .map(scratch)
        .unwrap_or(0)
        .max(options.sharpen.map(|s| scratch(s.sigma)).unwrap_or(0));
    let smart = if plan.smart {
        let side = u64::from(crate::smart::SMART_SIDE_MAX);
        let search = side * side * (u64::from(channels) + 4 * 4);
        let region = if options.crop.is_some() || options.trim.is_some() {
            decoded_pixels * u64::from(channels)
        } else {
            0
        };
        search + region
    } else {
        0
    };
    // The output copied with the watermark blended in, and the mark scaled (drawn at most
    // the output's size: `crate::watermark`).
    let watermark = if options.watermark.is_some() {
        out * 4 * 2
    } else {
        0
    };
    canvas + filter + smart + watermark
}

/// Pixel operations of the work besides decoding, resizing and encoding, for the node's
/// cost model: `blur` and `sharpen` on the resized image (`crate::filter::filter_ops`),
/// the `gravity=smart` search on the decoded image (`crate::smart::smart_ops`) and the
/// watermark's copy, scaling and blend.
pub(crate) fn filter_ops(plan: &Plan, options: &Options, channels: u8, decoded: (u64, u64)) -> u64 {
    let ops = |sigma: Decimal| {
        crate::filter::filter_ops(
            plan.resize_w,
            plan.resize_h,
            channels,
            sigma.as_f64() as f32,
        )
    };
    let smart = if plan.smart {
        let side = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        crate::smart::smart_ops(side(decoded.0), side(decoded.1), channels)
    } else {
        0
    };
    // A watermark: the output copied, the mark scaled and blended, at most the output's
    // pixels each.
    let watermark = if options.watermark.is_some() {
        3 * u64::from(plan.out_w) * u64::from(plan.out_h)
    } else {
        0
    };
    options.blur.map(ops).unwrap_or(0)
        + options.sharpen.map(|s| ops(s.sigma)).unwrap_or(0)
        + smart
        + watermark
}

/// Checks the estimate against `limits.job_bytes_max`.
pub(crate) fn check(
    limits: &Limits,
    header: &Header,
    scale: u8,
    plan: &Plan,
    format: OutputFormat,
) -> Result<(), ResizeError> {
    let bytes = job_bytes(header, scale, plan, format);
    if bytes > limits.job_bytes_max {
        return Err(ResizeError::JobMemoryExceeded {
            bytes,
            max: limits.job_bytes_max,
        });
    }
    Ok(())
}
