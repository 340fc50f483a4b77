//! The pipeline: one synchronous call from input bytes to output bytes, owning every buffer
//! it needs so that a worker thread reuses them from one request to the next.
//!
//! Order of work, chosen for speed on photos: sniff → header and limits → decode (JPEG at
//! reduced DCT scale, and only the crop's rows and columns unless trim or smart must see
//! every pixel: [`decode_region`]) → trim (a scan of the decoded pixels, folded into the crop) → resize
//! (with the manual, cover, trim and smart crops folded into the resampling, no copy; the
//! smart window is searched on the decoded pixels first) → ICC to sRGB unless kept (on the
//! small output) → blur / sharpen (`crate::filter`, on the small output) → orientation
//! (EXIF, `rotate` and `flip` composed, on the small output) → `fit=pad`, `padding` /
//! background (`crate::canvas`) → the tenant's watermark (`crate::watermark`) → alpha
//! handling for the target format → encode (with the kept
//! metadata). `Timings` reports wall time per stage and the thread CPU time of the whole
//! call, which is what the node bills.
//!
//! Everything that decides the cost of a job is settled from the header, in [`plan_job`]:
//! the geometry plan, the JPEG DCT scale, the output format (see [`resolve_format`]) and
//! the memory estimate (`crate::budget`). [`probe`] runs exactly that and stops, so the
//! node's admission sees the same numbers and the same refusals as the pipeline.

use std::time::Instant;

use fast_image_resize as fir;

use crate::cancel::{self, Stop};
use crate::decode::{self, DecodeBuffers, DecodePlan, Header};
use crate::encode::{self, EncodeSettings, Frame};
use crate::geometry::{self, Plan};
use crate::metadata::Kept;
use crate::options::Rgba;
use crate::options::{MAX_BYTES_ENCODES, MAX_BYTES_QUALITY_MIN};
use crate::resample::{self, LANCZOS3_SUPPORT};
use crate::{
    animation, budget, canvas, color, filter, smart, sniff, trim, watermark, FormatRequest,
    InputFormat, Limits, Options, OutputFormat, ResizeError, Watermark,
};

/// Source plus output pixels one resize call may touch before the next stop check: about
/// 10-20 ms of Lanczos3 on one core here. Below it (every thumbnail of a camera photo) the
/// resize is one call, as it always was.
const RESIZE_BAND_PIXELS: f64 = 4_000_000.0;

/// Output rows per resize band for a source `src_w` wide whose crop is `crop_h` rows high,
/// resized to `rw` x `rh` (at least 16 rows, so the overlap of neighbouring bands' filter
/// reach stays a small part of the work).
fn resize_band_rows(src_w: f64, crop_h: f64, rw: u32, rh: u32) -> u32 {
    let per_row = crop_h / f64::from(rh) * src_w + f64::from(rw);
    ((RESIZE_BAND_PIXELS / per_row).ceil() as u32).clamp(16, rh.max(16))
}

/// Default JPEG shrink-on-load margin: decode at the smallest DCT scale that still leaves at
/// least this many decoded pixels per output pixel along each axis, so the Lanczos3 pass has
/// real detail to filter. Measured with `benches/versus_vips.rs` (fit in 400x400, JPEG q80,
/// PSNR against the float reference): margin 1.0 was ~15% faster on the 256 KB photos but
/// lost 0.6 dB on aitzgorri-256k (32.77 dB, libvips 33.36); 1.5 lost 0.2 dB on the large
/// seeding photo (1/8 instead of 1/4); 2.0 (libvips' own choice) is at or above libvips on
/// all four photos. `examples/margin_sweep.rs` measures it more widely (lossless out, so only
/// decode and resize count; 8 photos, 168 widths): at 2.0 no row falls below libvips; one
/// DCT scale further down, at 1.9-2.0 decoded pixels per output pixel, costs 0.9-15 dB
/// (mean 4.8) and puts 16 rows of 48 below libvips. Not lowered for speed (docs/BENCHMARKS.md,
/// "#18, fifth pass").
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
    /// The part of the source that was resized (after crop, trim, cover and smart crop).
    pub source_window: SourceWindow,
    pub timings: Timings,
}

/// A rectangle of the displayed source (full size, after EXIF orientation, before
/// `rotate`/`flip`), in pixels; fractional, as resampling crops with sub-pixel precision.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceWindow {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
}

impl SourceWindow {
    fn of(plan: &Plan, header: &Header) -> SourceWindow {
        let r = plan.source_window(header.width, header.height);
        SourceWindow {
            x: r.x,
            y: r.y,
            width: r.w,
            height: r.h,
        }
    }
}

/// Owns the reusable buffers. Not `Sync`; one per worker thread.
pub struct Pipeline {
    limits: Limits,
    decode: DecodeBuffers,
    resized: Vec<u8>,
    oriented: Vec<u8>,
    converted: Vec<u8>,
    /// The padded canvas, or the image composited over `background`.
    canvas: Vec<u8>,
    /// `blur`/`sharpen` working memory, and the region copy of a smart crop.
    filter_scratch: Vec<u8>,
    /// The output with the watermark blended in, and the watermark scaled.
    marked: Vec<u8>,
    mark_scaled: Vec<u8>,
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
            canvas: Vec::new(),
            filter_scratch: Vec::new(),
            marked: Vec::new(),
            mark_scaled: Vec::new(),
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
        self.process_cancellable(input, options, &|| false)
    }

    /// Converts `input` as `options` asks, calling `stop` at check points (between stages,
    /// every 64 rows of a JPEG/PNG decode or JPEG/PNG encode, at each JPEG scan, at
    /// libwebp's progress reports) and returning [`ResizeError::Cancelled`] at the first
    /// one where it returns true. `stop` should be cheap (a clock read and a flag); the
    /// longest stretches without a check are listed in the crate doc.
    pub fn process_cancellable(
        &mut self,
        input: &[u8],
        options: &Options,
        stop: &dyn Fn() -> bool,
    ) -> Result<Output, ResizeError> {
        self.process_marked(input, options, None, stop)
    }

    /// [`Pipeline::process_cancellable`] with the tenant's watermark, which
    /// `options.watermark` draws (an error without one: the caller checks first).
    pub fn process_marked(
        &mut self,
        input: &[u8],
        options: &Options,
        watermark: Option<&Watermark>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Output, ResizeError> {
        let cpu_start_us = thread_cpu_us();
        let mut output = self.process_inner(input, options, watermark, stop)?;
        output.timings.cpu_us = thread_cpu_us().saturating_sub(cpu_start_us);
        Ok(output)
    }

    fn process_inner(
        &mut self,
        input: &[u8],
        options: &Options,
        watermark: Option<&Watermark>,
        stop: Stop<'_>,
    ) -> Result<Output, ResizeError> {
        let input_format = admit(input, options, &self.limits)?;
        let watermark = match (options.watermark, watermark) {
            (Some(spec), Some(mark)) => Some((spec, mark)),
            (Some(_), None) => {
                return Err(ResizeError::InvalidOption(
                    "watermark: there is no watermark image to draw".to_owned(),
                ))
            }
            (None, _) => None,
        };

        // ---- decode
        let start = Instant::now();
        let limits = &self.limits;
        let margin = self.jpeg_shrink_margin;
        let mut planned: Option<(Header, JobPlan)> = None;
        // An animation kept animated stops this decode at its header (the callback's
        // `Cancelled`) and goes through `crate::animation` instead.
        let decoded = decode::decode(
            input_format,
            input,
            limits,
            &mut self.decode,
            &mut |header| {
                let job = plan_job(header, input_format, options, limits, margin)?;
                planned = Some((*header, job));
                match job.animate {
                    true => Err(ResizeError::Cancelled),
                    false => Ok(DecodePlan {
                        scale: job.scale,
                        region: decode_region(&job.plan, job.scale, options, header),
                    }),
                }
            },
            stop,
        );
        if let (Err(ResizeError::Cancelled), Some((header, job))) = (&decoded, planned) {
            if job.animate {
                return self.animate(input, input_format, &header, &job, options, start, stop);
            }
        }
        let mut decoded = decoded?;
        let (header, job) =
            planned.ok_or_else(|| ResizeError::Corrupt("the decoder read no header".to_owned()))?;
        let mut plan = job.plan;
        let channels = decoded.channels;
        // The buffer (the whole frame unless a region was asked for) and the frame's scale.
        let (dw, dh) = (decoded.width, decoded.height);
        let (left, top) = (f64::from(decoded.left), f64::from(decoded.top));
        let sx = f64::from(decoded.full_width) / f64::from(header.width);
        let sy = f64::from(decoded.full_height) / f64::from(header.height);
        if let Some(threshold) = options.trim {
            // The border is found on the decoded pixels (at the DCT scale), and the job
            // planned again without it: a trimmed image has another aspect ratio, so its
            // output size, and memory, are checked again.
            let corner = plan.exif_corner(header.width, header.height);
            let corner = ((corner.0 * sx) as u32, (corner.1 * sy) as u32);
            if let Some(kept) = trim::kept(
                &self.decode.pixels,
                dw,
                dh,
                channels,
                corner,
                threshold,
                stop,
            )? {
                let kept = geometry::Rect {
                    x: kept.x / sx,
                    y: kept.y / sy,
                    w: kept.w / sx,
                    h: kept.h / sy,
                };
                plan = geometry::plan(
                    header.width,
                    header.height,
                    header.orientation,
                    options,
                    &self.limits,
                    Some(kept),
                )?;
                let decoded_pixels = u64::from(dw) * u64::from(dh);
                let bytes = budget::job_bytes(&header, job.scale, &plan, job.format)
                    + budget::extra_bytes(&plan, options, header.channels, decoded_pixels);
                if bytes > self.limits.job_bytes_max {
                    return Err(ResizeError::JobMemoryExceeded {
                        bytes,
                        max: self.limits.job_bytes_max,
                    });
                }
            }
        }
        if plan.smart {
            cancel::check(stop)?;
            plan.crop = self.smart_crop(&plan, channels, (dw, dh), (sx, sy))?;
        }
        let decode_us = elapsed_us(start);
        cancel::check(stop)?;

        // ---- resize, colour, orientation
        let start = Instant::now();
        let bpp = usize::from(channels);
        let crop = plan.crop;
        let (cx, cy) = ((crop.x * sx - left).max(0.0), (crop.y * sy - top).max(0.0));
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
            self.resized.clear();
            self.resized.resize(rw as usize * rh as usize * bpp, 0);
            // Alpha is premultiplied before and divided after resampling (`use_alpha`).
            let resize_options = fir::ResizeOptions::new()
                .resize_alg(resample::lanczos3())
                .use_alpha(channels == 2 || channels == 4);
            let band_rows = resize_band_rows(f64::from(dw), ch, rw, rh);
            if band_rows >= rh {
                // One call, as before banding existed: thumbnails never take the band path.
                let src = fir::images::ImageRef::new(dw, dh, &self.decode.pixels, pixel_type)
                    .map_err(|e| internal(&e))?;
                let mut dst =
                    fir::images::Image::from_slice_u8(rw, rh, &mut self.resized, pixel_type)
                        .map_err(|e| internal(&e))?;
                let resize_options = if whole {
                    resize_options
                } else {
                    resize_options.crop(cx, cy, cw, ch)
                };
                self.resizer
                    .resize(&src, &mut dst, &resize_options)
                    .map_err(|e| internal(&e))?;
            } else {
                // Output rows in bands, each from the source rows its filter reaches (so the
                // filter windows are those of the one-call resize: `fast_image_resize` clamps
                // them at the image's edges, not at the crop's; only its per-call fixed-point
                // rounding can move a few samples by 1-2 levels), with a stop check between
                // bands. The source view is cut to those rows because with alpha
                // the resizer premultiplies its whole source view on every call.
                let scale_y = ch / f64::from(rh);
                let reach = LANCZOS3_SUPPORT * scale_y.max(1.0) + 2.0;
                let row_src = dw as usize * bpp;
                let row_dst = rw as usize * bpp;
                for y0 in (0..rh).step_by(band_rows as usize) {
                    cancel::check(stop)?;
                    let y1 = (y0 + band_rows).min(rh);
                    let top = cy + f64::from(y0) * scale_y;
                    let bottom = if y1 == rh {
                        cy + ch
                    } else {
                        cy + f64::from(y1) * scale_y
                    };
                    let r0 = (top - reach).floor().max(0.0) as u32;
                    let r1 = ((bottom + reach).ceil() as u32).min(dh);
                    let src = fir::images::ImageRef::new(
                        dw,
                        r1 - r0,
                        &self.decode.pixels[r0 as usize * row_src..r1 as usize * row_src],
                        pixel_type,
                    )
                    .map_err(|e| internal(&e))?;
                    let mut dst = fir::images::Image::from_slice_u8(
                        rw,
                        y1 - y0,
                        &mut self.resized[y0 as usize * row_dst..y1 as usize * row_dst],
                        pixel_type,
                    )
                    .map_err(|e| internal(&e))?;
                    let band = resize_options.crop(
                        cx,
                        top - f64::from(r0),
                        cw,
                        (bottom - top).min(f64::from(r1) - top),
                    );
                    self.resizer
                        .resize(&src, &mut dst, &band)
                        .map_err(|e| internal(&e))?;
                }
            }
            &mut self.resized
        };
        // The image's alpha is settled from here on (an opaque `background` composites it
        // away; padding bars are not the image's and go white in a JPEG), so the format is
        // settled now: it decides whether the ICC profile is applied or kept (`strip=false`).
        let has_alpha = (channels == 2 || channels == 4)
            && options.background.is_none_or(|b| b.0[3] != 255)
            && resized[..rw as usize * rh as usize * bpp]
                .chunks_exact(bpp)
                .any(|p| p[bpp - 1] != 255);
        let format = resolve_format(
            options.format,
            input_format,
            header.frames,
            has_alpha,
            u64::from(plan.out_w) * u64::from(plan.out_h),
            &self.limits,
        )?;
        let keep_icc = options.keep_metadata
            && encode::carries_icc(format)
            && decoded
                .icc
                .as_ref()
                .is_some_and(|icc| icc.len() <= encode::ICC_BYTES_MAX);
        // The profile goes either into the output or onto the pixels, never both: moved,
        // not copied.
        let (kept_icc, applied_icc) = match decoded.icc.take() {
            Some(icc) if keep_icc => (Some(icc), None),
            other => (None, other),
        };
        let kept = Kept {
            icc: kept_icc,
            exif: decoded.rights_exif.take().filter(|_| options.keep_metadata),
        };
        if let Some(icc) = &applied_icc {
            color::rgb_icc_to_srgb(
                &mut resized[..rw as usize * rh as usize * bpp],
                channels,
                icc,
                &mut self.scratch,
            );
        }
        // Filters on the resized image (before orientation: a Gaussian is the same turned).
        let resized_len = rw as usize * rh as usize * bpp;
        if let Some(sigma) = options.blur {
            filter::gaussian_blur(
                &mut resized[..resized_len],
                rw,
                rh,
                channels,
                sigma.as_f64() as f32,
                &mut self.filter_scratch,
                stop,
            )?;
        }
        if let Some(sharpen) = options.sharpen {
            filter::unsharp_mask(
                &mut resized[..resized_len],
                rw,
                rh,
                channels,
                sharpen.sigma.as_f64() as f32,
                sharpen.amount.as_f64() as f32,
                &mut self.filter_scratch,
                stop,
            )?;
        }
        let pixels: &[u8] = if plan.orientation > 1 && plan.orientation <= 8 {
            geometry::orient(resized, rw, rh, bpp, plan.orientation, &mut self.oriented);
            &self.oriented
        } else {
            &resized[..]
        };
        let pixels = &pixels[..plan.content_w as usize * plan.content_h as usize * bpp];
        // Bars around a padded image, and transparency composited over `background` (an
        // image without an alpha channel is left as it is: nothing to composite).
        let flatten = options.background.is_some() && (channels == 2 || channels == 4);
        let (pixels, channels, has_alpha) = if plan.pads() || flatten {
            let background = options.background.unwrap_or(Rgba([0, 0, 0, 0]));
            let channels = canvas::compose(pixels, channels, &plan, background, &mut self.canvas);
            (&self.canvas[..], channels, channels == 2 || channels == 4)
        } else {
            (pixels, channels, has_alpha)
        };
        let (pixels, channels) = match watermark {
            Some((spec, mark)) => {
                cancel::check(stop)?;
                let channels = watermark::apply(
                    pixels,
                    channels,
                    (plan.out_w, plan.out_h),
                    mark,
                    &spec,
                    &mut self.resizer,
                    &mut self.mark_scaled,
                    &mut self.marked,
                )?;
                (&self.marked[..], channels)
            }
            None => (pixels, channels),
        };
        let resize_us = elapsed_us(start);
        cancel::check(stop)?;

        // ---- alpha handling and encoding
        let start = Instant::now();
        let (pixels, out_channels) =
            adapt_channels(pixels, channels, has_alpha, format, &mut self.converted);
        let frame = Frame {
            pixels,
            width: plan.out_w,
            height: plan.out_h,
            channels: out_channels,
        };
        let settings = EncodeSettings {
            quality: options.quality_for(format),
            progressive: options.progressive,
            avif_speed: options.avif_speed,
        };
        let mut bytes = Vec::with_capacity(pixels.len() / 8 + 1024);
        encode::encode(format, &frame, settings, &kept, &mut bytes, stop)?;
        if let Some(max) = options.max_bytes {
            if bytes.len() > max as usize && lossy(format) {
                bytes = fit_bytes(format, &frame, settings, &kept, bytes, max as usize, stop)?;
            }
        }
        let encode_us = elapsed_us(start);

        Ok(Output {
            bytes,
            format,
            width: plan.out_w,
            height: plan.out_h,
            input_format,
            source_window: SourceWindow::of(&plan, &header),
            timings: Timings {
                decode_us,
                resize_us,
                encode_us,
                cpu_us: 0,
            },
        })
    }

    /// `gravity=smart`: the plan's cover window moved within its region to where the
    /// content is (`crate::smart`), searched on the decoded pixels (stored frame, at the DCT
    /// scale `sx`, `sy`), on a copy of the region when a crop or trim narrowed it.
    fn smart_crop(
        &mut self,
        plan: &Plan,
        channels: u8,
        (dw, dh): (u32, u32),
        (sx, sy): (f64, f64),
    ) -> Result<geometry::Rect, ResizeError> {
        let bpp = usize::from(channels);
        let region = plan.region;
        // The region in decoded pixels, whole pixels inside it.
        let x0 = ((region.x * sx).ceil() as u32).min(dw - 1);
        let y0 = ((region.y * sy).ceil() as u32).min(dh - 1);
        let x1 = (((region.x + region.w) * sx).floor() as u32).clamp(x0 + 1, dw);
        let y1 = (((region.y + region.h) * sy).floor() as u32).clamp(y0 + 1, dh);
        let (rw, rh) = (x1 - x0, y1 - y0);
        let window_w = (plan.crop.w * sx).min(f64::from(rw));
        let window_h = (plan.crop.h * sy).min(f64::from(rh));
        let pixels = &self.decode.pixels[..dw as usize * dh as usize * bpp];
        let (x, y) = if (x0, y0, rw, rh) == (0, 0, dw, dh) {
            smart::smart_window(
                pixels,
                dw,
                dh,
                channels,
                window_w,
                window_h,
                &mut self.resizer,
            )?
        } else {
            self.filter_scratch.clear();
            for row in y0..y1 {
                let at = (row as usize * dw as usize + x0 as usize) * bpp;
                self.filter_scratch
                    .extend_from_slice(&pixels[at..at + rw as usize * bpp]);
            }
            smart::smart_window(
                &self.filter_scratch,
                rw,
                rh,
                channels,
                window_w,
                window_h,
                &mut self.resizer,
            )?
        };
        // Back to full-size stored pixels, kept inside the region.
        let crop = plan.crop;
        Ok(geometry::Rect {
            x: ((f64::from(x0) + x) / sx)
                .min(region.x + region.w - crop.w)
                .max(region.x),
            y: ((f64::from(y0) + y) / sy)
                .min(region.y + region.h - crop.h)
                .max(region.y),
            ..crop
        })
    }

    /// Every frame of an animation decoded, resized and encoded (`crate::animation`); the
    /// stage timings split as decode (the header) and encode (everything after).
    #[allow(clippy::too_many_arguments)]
    fn animate(
        &mut self,
        input: &[u8],
        input_format: InputFormat,
        header: &Header,
        job: &JobPlan,
        options: &Options,
        start: Instant,
        stop: Stop<'_>,
    ) -> Result<Output, ResizeError> {
        let decode_us = elapsed_us(start);
        let start = Instant::now();
        let mut bytes = Vec::new();
        animation::run(
            input,
            input_format,
            header,
            &job.plan,
            job.format,
            options.quality_for(job.format),
            &self.limits,
            &mut self.resizer,
            &mut bytes,
            stop,
        )?;
        Ok(Output {
            bytes,
            format: job.format,
            width: job.plan.out_w,
            height: job.plan.out_h,
            input_format,
            source_window: SourceWindow::of(&job.plan, header),
            timings: Timings {
                decode_us,
                resize_us: 0,
                encode_us: elapsed_us(start),
                cpu_us: 0,
            },
        })
    }
}

/// What the header settles about a job: the geometry, the JPEG DCT scale (8 for other
/// formats) and the output format as far as the header can tell.
#[derive(Clone, Copy, Debug)]
struct JobPlan {
    plan: Plan,
    scale: u8,
    format: OutputFormat,
    /// Every frame is kept (`crate::animation`), not only the first.
    animate: bool,
    /// The estimated peak working memory, checked against `Limits::job_bytes_max`.
    bytes: u64,
    /// Pixel operations of filters and the smart-crop search (`budget::filter_ops`).
    filter_ops: u64,
}

/// The part of the stored image a JPEG decode must produce for `plan` at `scale`/8: the
/// crop and the reach of the resampling filter around it (the decoded frame's edges clamp
/// that filter, so pixels past the crop count), or `None` for the whole frame: when `trim`
/// or `gravity=smart` must look at every pixel, or when the window is the whole image.
/// Rows and columns outside it are never inverse-transformed (`crate::libjpeg`).
fn decode_region(
    plan: &Plan,
    scale: u8,
    options: &Options,
    header: &Header,
) -> Option<geometry::Rect> {
    if options.trim.is_some() || plan.smart {
        return None;
    }
    let crop = plan.crop;
    // Decoded pixels per stored pixel, and per output pixel along each axis.
    let s = f64::from(scale.clamp(1, 8)) / 8.0;
    let reach = |len: f64, out: u32| {
        (LANCZOS3_SUPPORT * (len * s / f64::from(out.max(1))).max(1.0) + 2.0) / s
    };
    let (rx, ry) = (reach(crop.w, plan.resize_w), reach(crop.h, plan.resize_h));
    let (w, h) = (f64::from(header.width), f64::from(header.height));
    let x0 = (crop.x - rx).max(0.0);
    let y0 = (crop.y - ry).max(0.0);
    let x1 = (crop.x + crop.w + rx).min(w);
    let y1 = (crop.y + crop.h + ry).min(h);
    let whole = x0 == 0.0 && y0 == 0.0 && x1 == w && y1 == h;
    (!whole).then_some(geometry::Rect {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    })
}

/// The checks that need no decoder: options, empty and oversized bodies, the format.
pub(crate) fn admit(
    input: &[u8],
    options: &Options,
    limits: &Limits,
) -> Result<InputFormat, ResizeError> {
    options.validate(limits)?;
    if input.is_empty() {
        return Err(ResizeError::Empty);
    }
    if input.len() > limits.input_bytes_max {
        return Err(ResizeError::InputTooLarge {
            bytes: input.len(),
            max: limits.input_bytes_max,
        });
    }
    sniff(input).ok_or(ResizeError::UnsupportedFormat)
}

/// Plans a job from its header: geometry, DCT scale, output format (with a declared alpha
/// channel standing for alpha: the worst case, PNG rather than JPEG, for `format=auto`) and
/// the memory estimate, refused over `Limits::job_bytes_max`.
fn plan_job(
    header: &Header,
    input_format: InputFormat,
    options: &Options,
    limits: &Limits,
    margin: f64,
) -> Result<JobPlan, ResizeError> {
    let plan = geometry::plan(
        header.width,
        header.height,
        header.orientation,
        options,
        limits,
        None,
    )?;
    let scale = if input_format == InputFormat::Jpeg {
        geometry::jpeg_scale(&plan, margin)
    } else {
        8
    };
    let alpha = header.channels == 2 || header.channels == 4;
    let out_pixels = u64::from(plan.out_w) * u64::from(plan.out_h);
    let format = resolve_format(
        options.format,
        input_format,
        header.frames,
        alpha,
        out_pixels,
        limits,
    )?;
    let animate = animation::animates(input_format, header.frames, format);
    let decoded = (
        budget::scaled(header.width, scale),
        budget::scaled(header.height, scale),
    );
    let decoded_pixels = decoded.0 * decoded.1;
    let filter_ops = budget::filter_ops(&plan, options, header.channels, decoded);
    let bytes = if animate {
        animation::check_options(options)?;
        limits.check_animation(header.frames, animation::pixels(header, &plan))?;
        animation::job_bytes(header, &plan, format)
    } else {
        // A `max_bytes` search holds two more encoded outputs (counted at the raw size).
        let search = match options.max_bytes {
            Some(_) if lossy(format) => {
                2 * u64::from(plan.out_w) * u64::from(plan.out_h) * u64::from(header.channels)
            }
            _ => 0,
        };
        budget::job_bytes(header, scale, &plan, format)
            + search
            + budget::extra_bytes(&plan, options, header.channels, decoded_pixels)
    };
    if bytes > limits.job_bytes_max {
        return Err(ResizeError::JobMemoryExceeded {
            bytes,
            max: limits.job_bytes_max,
        });
    }
    Ok(JobPlan {
        plan,
        scale,
        format,
        animate,
        bytes,
        filter_ops,
    })
}

/// The output format for a request, an input format and its frame count, whether the
/// output has alpha, and its size. `format=auto` takes WebP if accepted, else AVIF if
/// accepted, each only while the output is within that format's pixel bound
/// (`Limits::webp_output_pixels_max`, `avif_output_pixels_max`), else PNG with alpha and
/// JPEG without; an animated GIF or WebP keeps its animation (WebP if accepted, else GIF).
/// An explicit WebP or AVIF over its bound is refused.
pub(crate) fn resolve_format(
    request: FormatRequest,
    input_format: InputFormat,
    frames: u32,
    has_alpha: bool,
    out_pixels: u64,
    limits: &Limits,
) -> Result<OutputFormat, ResizeError> {
    let fits = |format: OutputFormat| match format {
        OutputFormat::WebP => out_pixels <= limits.webp_output_pixels_max,
        OutputFormat::Avif => out_pixels <= limits.avif_output_pixels_max,
        OutputFormat::Jpeg | OutputFormat::Png | OutputFormat::Gif => true,
    };
    let animated = frames > 1 && matches!(input_format, InputFormat::Gif | InputFormat::WebP);
    let format = match request {
        FormatRequest::Fixed(f) => f,
        FormatRequest::Auto { webp: true, .. } if animated && fits(OutputFormat::WebP) => {
            OutputFormat::WebP
        }
        FormatRequest::Auto { .. } if animated => OutputFormat::Gif,
        FormatRequest::Auto { webp: true, .. } if fits(OutputFormat::WebP) => OutputFormat::WebP,
        FormatRequest::Auto { avif: true, .. } if fits(OutputFormat::Avif) => OutputFormat::Avif,
        FormatRequest::Auto { .. } if has_alpha => OutputFormat::Png,
        FormatRequest::Auto { .. } => OutputFormat::Jpeg,
        FormatRequest::Original => input_format.family(),
    };
    if !fits(format) {
        let max = match format {
            OutputFormat::WebP => limits.webp_output_pixels_max,
            _ => limits.avif_output_pixels_max,
        };
        return Err(ResizeError::InvalidOption(format!(
            "a {} output of {out_pixels} pixels is over its limit of {max} pixels",
            format.as_str()
        )));
    }
    Ok(format)
}

/// What [`probe`] reads from a header: enough for the node to predict a job's cost before
/// queueing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The format the bytes were sniffed as.
    pub input_format: InputFormat,
    /// Declared (stored, un-oriented) width and height.
    pub width: u32,
    pub height: u32,
    /// Frames (1 for a still image; GIF frames are counted without decoding them).
    pub frames: u32,
    /// The output format the pipeline will use. For `format=auto` without WebP or AVIF and
    /// an input with an alpha channel this is PNG, though the pipeline answers JPEG when
    /// every pixel turns out opaque (which is cheaper): an upper bound of the cost.
    pub output_format: OutputFormat,
    /// Output width and height (displayed frame), exactly as the pipeline produces them.
    pub output_width: u32,
    pub output_height: u32,
    /// Frames of the output: every frame when an animation is kept, else 1.
    pub output_frames: u32,
    /// The job's estimated peak working memory in bytes (checked against
    /// `Limits::job_bytes_max`), at the default [`JPEG_SHRINK_MARGIN`].
    pub job_bytes: u64,
    /// Pixel operations of `blur`, `sharpen` and the `gravity=smart` search (0 without
    /// them): one op is one sample touched by one filter tap (`filter::filter_ops`), or one
    /// sample of the smart search (`smart::smart_ops`). The node prices them separately.
    pub filter_ops: u64,
}

/// Reads only the header of `input` (no pixel is decoded, metadata is read within
/// `Limits::metadata_bytes_max`) and returns what the job would be, or the error the
/// pipeline would refuse it with from its header (limits, metadata, job memory, options).
/// Errors that only decoding finds (corrupt pixel data) are not found here.
pub fn probe(input: &[u8], options: &Options, limits: &Limits) -> Result<Probe, ResizeError> {
    let input_format = admit(input, options, limits)?;
    let mut planned: Option<(Header, JobPlan)> = None;
    // The header callback refuses to go on once the job is planned, so the decoder stops
    // before allocating pixels; `Cancelled` is that refusal, not the caller's.
    let result = decode::decode(
        input_format,
        input,
        limits,
        &mut DecodeBuffers::default(),
        &mut |header| {
            let job = plan_job(header, input_format, options, limits, JPEG_SHRINK_MARGIN)?;
            planned = Some((*header, job));
            Err(ResizeError::Cancelled)
        },
        &|| false,
    );
    match (result, planned) {
        (Err(ResizeError::Cancelled), Some((header, job))) => Ok(Probe {
            input_format,
            width: header.width,
            height: header.height,
            frames: header.frames,
            output_format: job.format,
            output_width: job.plan.out_w,
            output_height: job.plan.out_h,
            output_frames: if job.animate { header.frames } else { 1 },
            job_bytes: job.bytes,
            filter_ops: job.filter_ops,
        }),
        (Err(e), _) => Err(e),
        (Ok(_), _) => Err(ResizeError::Corrupt(
            "the decoder read no header".to_owned(),
        )),
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

/// Whether `max_bytes` can trade quality for bytes in `format`.
fn lossy(format: OutputFormat) -> bool {
    matches!(
        format,
        OutputFormat::Jpeg | OutputFormat::WebP | OutputFormat::Avif
    )
}

/// `max_bytes`: given `first`, the encode at the requested quality that came out over
/// `max`, bisects the qualities below it (down to [`MAX_BYTES_QUALITY_MIN`]) for the highest
/// whose output fits, in at most [`MAX_BYTES_ENCODES`] encodes in all. Returns that output,
/// else the smallest one tried (the floor's, when the bisection reached it). Encoded size
/// is monotone enough in quality for a bisection (not strictly: a step may gain a few
/// bytes, so the result is a quality that fits, not always the highest that would).
fn fit_bytes(
    format: OutputFormat,
    frame: &Frame<'_>,
    settings: EncodeSettings,
    kept: &Kept,
    first: Vec<u8>,
    max: usize,
    stop: Stop<'_>,
) -> Result<Vec<u8>, ResizeError> {
    let (mut lo, mut hi) = (MAX_BYTES_QUALITY_MIN, settings.quality.saturating_sub(1));
    let mut smallest = first;
    let mut fits: Option<Vec<u8>> = None;
    let mut encodes = 1;
    let mut bytes = Vec::with_capacity(smallest.len());
    while lo <= hi && encodes < MAX_BYTES_ENCODES {
        let quality = lo + (hi - lo) / 2;
        encode::encode(
            format,
            frame,
            EncodeSettings {
                quality,
                ..settings
            },
            kept,
            &mut bytes,
            stop,
        )?;
        encodes += 1;
        if bytes.len() <= max {
            lo = quality + 1;
            fits = Some(std::mem::take(&mut bytes));
        } else {
            hi = quality.saturating_sub(1);
            if bytes.len() < smallest.len() {
                std::mem::swap(&mut smallest, &mut bytes);
            }
        }
        if hi < MAX_BYTES_QUALITY_MIN {
            break;
        }
    }
    Ok(fits.unwrap_or(smallest))
}

fn elapsed_us(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// CPU time consumed by the calling thread, µs.
pub(crate) fn thread_cpu_us() -> u64 {
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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::{Fit, Pipeline};

    /// `pixels` (`w` x `h`, RGB) as a PNG, through the same `png` crate the decoder reads.
    fn png_rgb(w: u32, h: u32, pixels: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(pixels).unwrap();
        writer.finish().unwrap();
        out
    }

    /// The RGB pixels of a PNG.
    fn png_pixels(bytes: &[u8]) -> Vec<u8> {
        let mut reader = png::Decoder::new(Cursor::new(bytes)).read_info().unwrap();
        let mut px = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut px).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        px.truncate(info.buffer_size());
        px
    }

    /// The banded resize (large jobs, so a stop is seen between bands) computes what one
    /// `fast_image_resize` call over the whole image computes: the bands use the same
    /// filter windows, and only the fixed-point rounding `fast_image_resize` picks per call
    /// (from that call's coefficients) can differ: measured, 0.26% of samples by 1 or 2
    /// levels out of 255. (A unit test, not in `tests/`: the reference call here shares this
    /// crate's instance of the generic resizer, where an integration test compiled its own,
    /// two minutes of a clean test build.)
    #[test]
    fn banded_resize_matches_one_call() {
        let (w, h) = (2400u32, 1600u32);
        // A noisy image, so a wrong filter window would show.
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let px: Vec<u8> = (0..w * h * 3)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((i % 251) as u8).wrapping_add((seed >> 60) as u8)
            })
            .collect();
        let png = png_rgb(w, h, &px);
        for (tw, th, fit) in [
            (3600, 2400, Fit::Fill),
            (1000, 1000, Fit::Cover),
            (700, 2100, Fit::Cover),
        ] {
            assert!(
                resize_band_rows(f64::from(w), f64::from(h), tw, th) < th,
                "{tw}x{th} takes the band path"
            );
            let options = Options {
                width: Some(tw),
                height: Some(th),
                fit,
                format: FormatRequest::Fixed(OutputFormat::Png),
                ..Options::default()
            };
            let out = Pipeline::new(Limits::default())
                .process(&png, &options)
                .unwrap();
            let got = png_pixels(&out.bytes);
            // The reference: one call, with the crop the pipeline's cover plan makes.
            let (sw, sh) = (f64::from(w), f64::from(h));
            let scale = (f64::from(tw) / sw).max(f64::from(th) / sh);
            let (cw, ch) = (
                (f64::from(tw) / scale).min(sw),
                (f64::from(th) / scale).min(sh),
            );
            let src = fir::images::ImageRef::new(w, h, &px, fir::PixelType::U8x3).unwrap();
            let mut dst = fir::images::Image::new(tw, th, fir::PixelType::U8x3);
            let mut resize = fir::ResizeOptions::new()
                .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
                .use_alpha(false);
            if fit == Fit::Cover && (cw < sw || ch < sh) {
                resize = resize.crop((sw - cw) * 0.5, (sh - ch) * 0.5, cw, ch);
            }
            fir::Resizer::new().resize(&src, &mut dst, &resize).unwrap();
            let want = dst.buffer();
            assert_eq!(got.len(), want.len());
            let differing = got.iter().zip(want).filter(|(a, b)| a != b).count();
            let worst = got
                .iter()
                .zip(want)
                .map(|(&a, &b)| a.abs_diff(b))
                .max()
                .unwrap_or(0);
            eprintln!(
                "{tw}x{th} {fit:?}: {differing} of {} samples differ, by at most {worst}",
                got.len()
            );
            assert!(worst <= 2, "{tw}x{th}: a sample differs by {worst}");
            assert!(
                differing * 100 <= got.len(),
                "{tw}x{th}: {differing} samples differ"
            );
        }
    }
}
