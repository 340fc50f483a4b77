//! The pipeline: one synchronous call from input bytes to output bytes, owning every buffer
//! it needs so that a worker thread reuses them from one request to the next.
//!
//! Order of work, chosen for speed on photos: sniff → header and limits → decode (JPEG at
//! reduced DCT scale) → resize (with the cover crop folded into the resampling, no copy) →
//! ICC to sRGB (on the small output) → orientation (on the small output) → alpha handling
//! for the target format → encode. `Timings` reports wall time per stage and the thread CPU
//! time of the whole call, which is what the node bills.

use std::time::Instant;

use fast_image_resize as fir;

use crate::decode::{self, DecodeBuffers, Header};
use crate::encode::{self, EncodeSettings, Frame};
use crate::geometry::{self, Plan};
use crate::{color, sniff, FormatRequest, InputFormat, Limits, Options, OutputFormat, ResizeError};

/// Default JPEG shrink-on-load margin: decode at the smallest DCT scale that still leaves at
/// least this many decoded pixels per output pixel along each axis, so the Lanczos3 pass has
/// real detail to filter. Measured with `benches/versus_vips.rs` (fit in 400x400, JPEG q80,
/// PSNR against the float reference): margin 1.0 was ~15% faster on the 256 KB photos but
/// lost 0.6 dB on aitzgorri-256k (32.77 dB, libvips 33.36); 1.5 lost 0.2 dB on the large
/// seeding photo (1/8 instead of 1/4); 2.0 (libvips' own choice) is at or above libvips on
/// all four photos.
pub const JPEG_SHRINK_MARGIN: f64 = 2.0;

/// Wall time per stage and thread CPU time of one [`Pipeline::process`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Header parsing, limit checks and decoding (incl. CMYK conversion), µs.
    pub decode_us: u64,
    /// Resampling, ICC conversion and orientation, µs.
    pub resize_us: u64,
    /// Alpha handling and encoding, µs.
    pub encode_us: u64,
    /// CPU time of the calling thread over the whole call (`CLOCK_THREAD_CPUTIME_ID`), µs.
    pub cpu_us: u64,
}

/// The result of one conversion.
#[derive(Debug)]
pub struct Output {
    /// The encoded image, without any metadata.
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
    pub width: u32,
    pub height: u32,
    /// The format the input bytes were sniffed as.
    pub input_format: InputFormat,
    pub timings: Timings,
}

/// Owns the reusable buffers. Not `Sync`; one per worker thread.
pub struct Pipeline {
    limits: Limits,
    decode: DecodeBuffers,
    resized: Vec<u8>,
    oriented: Vec<u8>,
    converted: Vec<u8>,
    scratch: Vec<u8>,
    resizer: fir::Resizer,
    jpeg_shrink_margin: f64,
}

impl Pipeline {
    /// A pipeline with empty buffers; they grow on first use and are kept.
    pub fn new(limits: Limits) -> Self {
        Pipeline {
            limits,
            decode: DecodeBuffers::default(),
            resized: Vec::new(),
            oriented: Vec::new(),
            converted: Vec::new(),
            scratch: Vec::new(),
            resizer: fir::Resizer::new(),
            jpeg_shrink_margin: JPEG_SHRINK_MARGIN,
        }
    }

    /// The limits every call is checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Overrides [`JPEG_SHRINK_MARGIN`] (for measurements; values below 1 trade quality for
    /// speed, larger values the reverse).
    pub fn set_jpeg_shrink_margin(&mut self, margin: f64) {
        self.jpeg_shrink_margin = margin.max(0.5);
    }

    /// Converts `input` as `options` asks.
    pub fn process(&mut self, input: &[u8], options: &Options) -> Result<Output, ResizeError> {
        let cpu_start_us = thread_cpu_us();
        let mut output = self.process_inner(input, options)?;
        output.timings.cpu_us = thread_cpu_us().saturating_sub(cpu_start_us);
        Ok(output)
    }

    fn process_inner(&mut self, input: &[u8], options: &Options) -> Result<Output, ResizeError> {
        options.validate(&self.limits)?;
        if input.is_empty() {
            return Err(ResizeError::Empty);
        }
        if input.len() > self.limits.input_bytes_max {
            return Err(ResizeError::InputTooLarge {
                bytes: input.len(),
                max: self.limits.input_bytes_max,
            });
        }
        let input_format = sniff(input).ok_or(ResizeError::UnsupportedFormat)?;

        // ---- decode
        let start = Instant::now();
        let limits = &self.limits;
        let margin = self.jpeg_shrink_margin;
        let mut planned: Option<(Header, Plan)> = None;
        let decoded = decode::decode(
            input_format,
            input,
            limits,
            &mut self.decode,
            &mut |header| {
                let plan = geometry::plan(
                    header.width,
                    header.height,
                    header.orientation,
                    options,
                    limits,
                )?;
                planned = Some((*header, plan));
                Ok(if input_format == InputFormat::Jpeg {
                    geometry::jpeg_scale(&plan, margin)
                } else {
                    8
                })
            },
        )?;
        let (header, plan) =
            planned.ok_or_else(|| ResizeError::Corrupt("the decoder read no header".to_owned()))?;
        let decode_us = elapsed_us(start);

        // ---- resize, colour, orientation
        let start = Instant::now();
        let channels = decoded.channels;
        let bpp = usize::from(channels);
        let (dw, dh) = (decoded.width, decoded.height);
        let sx = f64::from(dw) / f64::from(header.width);
        let sy = f64::from(dh) / f64::from(header.height);
        let crop = plan.crop;
        let (cx, cy) = ((crop.x * sx).max(0.0), (crop.y * sy).max(0.0));
        let cw = (crop.w * sx).min(f64::from(dw) - cx);
        let ch = (crop.h * sy).min(f64::from(dh) - cy);
        let (rw, rh) = (plan.resize_w, plan.resize_h);
        let whole = cx == 0.0 && cy == 0.0 && cw == f64::from(dw) && ch == f64::from(dh);
        let resized: &mut Vec<u8> = if whole && rw == dw && rh == dh {
            &mut self.decode.pixels
        } else {
            let pixel_type = match channels {
                1 => fir::PixelType::U8,
                2 => fir::PixelType::U8x2,
                3 => fir::PixelType::U8x3,
                _ => fir::PixelType::U8x4,
            };
            let internal = |e: &dyn std::fmt::Display| ResizeError::Encode(format!("resize: {e}"));
            let src = fir::images::ImageRef::new(dw, dh, &self.decode.pixels, pixel_type)
                .map_err(|e| internal(&e))?;
            self.resized.clear();
            self.resized.resize(rw as usize * rh as usize * bpp, 0);
            let mut dst = fir::images::Image::from_slice_u8(rw, rh, &mut self.resized, pixel_type)
                .map_err(|e| internal(&e))?;
            // Alpha is premultiplied before and divided after resampling (`use_alpha`).
            let mut resize_options = fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
                .use_alpha(channels == 2 || channels == 4);
            if !whole {
                resize_options = resize_options.crop(cx, cy, cw, ch);
            }
            self.resizer
                .resize(&src, &mut dst, &resize_options)
                .map_err(|e| internal(&e))?;
            &mut self.resized
        };
        if let Some(icc) = &decoded.icc {
            color::rgb_icc_to_srgb(
                &mut resized[..rw as usize * rh as usize * bpp],
                channels,
                icc,
                &mut self.scratch,
            );
        }
        let pixels: &[u8] = if decoded.orientation > 1 && decoded.orientation <= 8 {
            geometry::orient(
                resized,
                rw,
                rh,
                bpp,
                decoded.orientation,
                &mut self.oriented,
            );
            &self.oriented
        } else {
            &resized[..]
        };
        let pixels = &pixels[..plan.out_w as usize * plan.out_h as usize * bpp];
        let resize_us = elapsed_us(start);

        // ---- alpha handling and encoding
        let start = Instant::now();
        let has_alpha =
            (channels == 2 || channels == 4) && pixels.chunks_exact(bpp).any(|p| p[bpp - 1] != 255);
        let format = match options.format {
            FormatRequest::Fixed(f) => f,
            FormatRequest::Auto { webp: true, .. } => OutputFormat::WebP,
            FormatRequest::Auto { avif: true, .. } => OutputFormat::Avif,
            FormatRequest::Auto { .. } if has_alpha => OutputFormat::Png,
            FormatRequest::Auto { .. } => OutputFormat::Jpeg,
            FormatRequest::Original => match input_format {
                InputFormat::Jpeg => OutputFormat::Jpeg,
                InputFormat::Png | InputFormat::Gif => OutputFormat::Png,
                InputFormat::WebP => OutputFormat::WebP,
            },
        };
        let (pixels, out_channels) =
            adapt_channels(pixels, channels, has_alpha, format, &mut self.converted);
        let frame = Frame {
            pixels,
            width: plan.out_w,
            height: plan.out_h,
            channels: out_channels,
        };
        let settings = EncodeSettings {
            quality: options.quality,
            progressive: options.progressive,
            avif_speed: options.avif_speed,
        };
        let mut bytes = Vec::with_capacity(pixels.len() / 8 + 1024);
        encode::encode(format, &frame, settings, &mut bytes)?;
        let encode_us = elapsed_us(start);

        Ok(Output {
            bytes,
            format,
            width: plan.out_w,
            height: plan.out_h,
            input_format,
            timings: Timings {
                decode_us,
                resize_us,
                encode_us,
                cpu_us: 0,
            },
        })
    }
}

/// Converts `pixels` to channels the encoder of `format` takes:
/// - JPEG has no alpha: alpha is composited over white (what a browser shows on a white page);
/// - opaque alpha channels are dropped (smaller files, faster encoding);
/// - WebP and AVIF take only RGB(A), so gray is expanded.
fn adapt_channels<'a>(
    pixels: &'a [u8],
    channels: u8,
    has_alpha: bool,
    format: OutputFormat,
    out: &'a mut Vec<u8>,
) -> (&'a [u8], u8) {
    let wants_gray = matches!(format, OutputFormat::Jpeg | OutputFormat::Png);
    match (channels, has_alpha, wants_gray) {
        (1, _, true) | (3, _, _) => (pixels, channels),
        (2, true, _) | (4, true, _) if format == OutputFormat::Png => (pixels, channels),
        (4, true, _) if format != OutputFormat::Jpeg => (pixels, 4),
        _ => {
            out.clear();
            let keep_alpha = has_alpha && format != OutputFormat::Jpeg;
            let color_out = if channels <= 2 && wants_gray { 1 } else { 3 };
            let n = color_out + usize::from(keep_alpha);
            let bpp = usize::from(channels);
            out.reserve(pixels.len() / bpp * n);
            for p in pixels.chunks_exact(bpp) {
                let (color, alpha): (&[u8], u8) = match channels {
                    1 => (&p[..1], 255),
                    2 => (&p[..1], p[1]),
                    _ => (&p[..3], p[3]),
                };
                let flatten = |v: u8| -> u8 {
                    if keep_alpha {
                        v
                    } else {
                        // v·a + 255·(1 − a), rounded.
                        let a = u32::from(alpha);
                        ((u32::from(v) * a + 255 * (255 - a) + 127) / 255) as u8
                    }
                };
                if color_out == 1 || color.len() == 3 {
                    out.extend(color.iter().map(|&v| flatten(v)));
                } else {
                    let v = flatten(color[0]);
                    out.extend_from_slice(&[v, v, v]);
                }
                if keep_alpha {
                    out.push(alpha);
                }
            }
            (&out[..], n as u8)
        }
    }
}

fn elapsed_us(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// CPU time consumed by the calling thread, µs.
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000)
        .saturating_add(ts.tv_nsec as u64 / 1_000)
}
