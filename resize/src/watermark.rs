//! Watermarks: a tenant's small image (a logo) blended over the result of a request that
//! asks for it with `watermark=<opacity>[:<position>[:<x>[:<y>[:<scale>]]]]`
//! ([`crate::WatermarkOptions`]).
//!
//! The image is decoded once per version ([`Watermark::decode`], bounded by
//! [`WATERMARK_BYTES_MAX`], [`WATERMARK_SIDE_MAX`] and [`WATERMARK_PIXELS_MAX`] so a small
//! file cannot inflate into a large one) and kept by the caller; per request it is scaled
//! when `scale` asks (to that fraction of the output's width, aspect kept), its alpha
//! multiplied by the opacity, and blended "over" the finished output pixels (after resizing,
//! filters, orientation and padding, before encoding) at a compass position inset by
//! `x`/`y` pixels, or repeated over the whole image (`tile`, `x`/`y` the gaps). What lies
//! outside the output is clipped. A gray output becomes RGB where the mark is blended: the
//! mark keeps its colours.
//!
//! Why not `image::imageops::overlay`: it blends whole `ImageBuffer`s (the output copied in
//! and out of one) without an opacity; the loop here runs on the pipeline's own buffers,
//! once per covered pixel, in 8-bit fixed point like `crate::canvas`.

use crate::decode::{self, DecodeBuffers};
use crate::error::ResizeError;
use crate::limits::Limits;
use crate::options::{Gravity, WatermarkOptions, WatermarkPosition};
use crate::sniff::sniff;
use fast_image_resize as fir;

/// The largest watermark file accepted, bytes. It travels in the tenant directory, which
/// every node holds whole: a logo is a few KiB.
pub const WATERMARK_BYTES_MAX: usize = 16 << 10;

/// The widest and tallest watermark, pixels.
pub const WATERMARK_SIDE_MAX: u32 = 1024;

/// The most pixels a watermark may decode to (256 Ki: 1 MiB as RGBA), whatever its file
/// size: deflate and LZW inflate a few KiB into megapixels.
pub const WATERMARK_PIXELS_MAX: u64 = 1 << 18;

/// A decoded watermark: straight (not premultiplied) RGBA, 8 bits per channel.
#[derive(Clone, PartialEq, Eq)]
pub struct Watermark {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

impl std::fmt::Debug for Watermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Watermark({}x{})", self.width, self.height)
    }
}

impl Watermark {
    /// Decodes a watermark file (PNG, WebP, GIF or JPEG; the first frame of an animation),
    /// refusing more than [`WATERMARK_BYTES_MAX`] bytes, a side over [`WATERMARK_SIDE_MAX`]
    /// or more than [`WATERMARK_PIXELS_MAX`] pixels before any pixel is allocated.
    pub fn decode(bytes: &[u8]) -> Result<Watermark, ResizeError> {
        if bytes.is_empty() {
            return Err(ResizeError::Empty);
        }
        if bytes.len() > WATERMARK_BYTES_MAX {
            return Err(ResizeError::InputTooLarge {
                bytes: bytes.len(),
                max: WATERMARK_BYTES_MAX,
            });
        }
        let format = sniff(bytes).ok_or(ResizeError::UnsupportedFormat)?;
        let limits = Limits {
            input_bytes_max: WATERMARK_BYTES_MAX,
            width_max: WATERMARK_SIDE_MAX,
            height_max: WATERMARK_SIDE_MAX,
            pixels_max: WATERMARK_PIXELS_MAX,
            frames_max: 1 << 10,
            metadata_bytes_max: 64 << 10,
            ..Limits::default()
        };
        let mut buffers = DecodeBuffers::default();
        let decoded = decode::decode(
            format,
            bytes,
            &limits,
            &mut buffers,
            &mut |_| Ok(decode::DecodePlan::whole(8)),
            &|| false,
        )?;
        let (width, height) = (decoded.width, decoded.height);
        let pixels =
            &buffers.pixels[..width as usize * height as usize * usize::from(decoded.channels)];
        let mut rgba = Vec::with_capacity(width as usize * height as usize * 4);
        for p in pixels.chunks_exact(usize::from(decoded.channels)) {
            match decoded.channels {
                1 => rgba.extend_from_slice(&[p[0], p[0], p[0], 255]),
                2 => rgba.extend_from_slice(&[p[0], p[0], p[0], p[1]]),
                3 => rgba.extend_from_slice(&[p[0], p[1], p[2], 255]),
                _ => rgba.extend_from_slice(&p[..4]),
            }
        }
        Ok(Watermark {
            width,
            height,
            rgba,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Memory held, bytes (for a cache's weigher).
    pub fn bytes(&self) -> usize {
        self.rgba.len()
    }
}

/// The size the mark is drawn at on an output `out_w` x `out_h`: `scale` times the output's
/// width (aspect kept, at least 1 x 1, and never taller than the output, so the scaled
/// copy is at most the output's size), else its own size (clipped when drawn).
fn drawn_size(
    mark: &Watermark,
    options: &WatermarkOptions,
    (out_w, out_h): (u32, u32),
) -> (u32, u32) {
    match options.scale {
        Some(scale) => {
            let aspect = f64::from(mark.height) / f64::from(mark.width);
            let w = (f64::from(out_w) * scale.as_f64()).min(f64::from(out_h) / aspect);
            let h = (w * aspect).round().clamp(1.0, f64::from(out_h));
            (w.round().clamp(1.0, f64::from(out_w)) as u32, h as u32)
        }
        None => (mark.width, mark.height),
    }
}

/// Blends `mark` over `pixels` (`out_w` x `out_h`, `channels` bytes per pixel) as `options`
/// says, writing the result to `out` and returning its channel count (gray becomes RGB,
/// gray with alpha RGBA). `scaled` holds the mark scaled, when `scale` is given.
#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(
    pixels: &[u8],
    channels: u8,
    (out_w, out_h): (u32, u32),
    mark: &Watermark,
    options: &WatermarkOptions,
    resizer: &mut fir::Resizer,
    scaled: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<u8, ResizeError> {
    let (mw, mh) = drawn_size(mark, options, (out_w, out_h));
    let src: &[u8] = if (mw, mh) == (mark.width, mark.height) {
        &mark.rgba
    } else {
        let internal = |e: &dyn std::fmt::Display| ResizeError::Encode(format!("watermark: {e}"));
        scaled.clear();
        scaled.resize(mw as usize * mh as usize * 4, 0);
        let from =
            fir::images::ImageRef::new(mark.width, mark.height, &mark.rgba, fir::PixelType::U8x4)
                .map_err(|e| internal(&e))?;
        let mut to = fir::images::Image::from_slice_u8(mw, mh, scaled, fir::PixelType::U8x4)
            .map_err(|e| internal(&e))?;
        let resize_options = fir::ResizeOptions::new()
            .resize_alg(crate::resample::lanczos3())
            .use_alpha(true);
        resizer
            .resize(&from, &mut to, &resize_options)
            .map_err(|e| internal(&e))?;
        scaled
    };
    // The output, gray widened to RGB.
    let n: u8 = if channels == 2 || channels == 4 { 4 } else { 3 };
    out.clear();
    out.reserve(out_w as usize * out_h as usize * usize::from(n));
    match channels {
        1 => pixels
            .iter()
            .for_each(|&g| out.extend_from_slice(&[g, g, g])),
        2 => pixels
            .chunks_exact(2)
            .for_each(|p| out.extend_from_slice(&[p[0], p[0], p[0], p[1]])),
        _ => out.extend_from_slice(pixels),
    }
    let opacity = (options.opacity.as_f64() * 256.0).round() as u32; // 0..=256
    let mut draw =
        |x0: i64, y0: i64| blend_at(out, (out_w, out_h), n, src, (mw, mh), (x0, y0), opacity);
    match options.position {
        WatermarkPosition::Tile => {
            let step_x = i64::from(mw) + i64::from(options.x_px);
            let step_y = i64::from(mh) + i64::from(options.y_px);
            let mut y = 0;
            while y < i64::from(out_h) {
                let mut x = 0;
                while x < i64::from(out_w) {
                    draw(x, y);
                    x += step_x;
                }
                y += step_y;
            }
        }
        WatermarkPosition::At(gravity) => {
            let (x, y) = place(
                gravity,
                (out_w, out_h),
                (mw, mh),
                (options.x_px, options.y_px),
            );
            draw(x, y);
        }
    }
    Ok(n)
}

/// Where a mark `mw` x `mh` goes on an output `out_w` x `out_h` at a compass `gravity`, inset
/// by `x`/`y` pixels from the edges it is anchored to (a centred axis ignores its inset).
/// May be negative (a mark larger than the output is clipped).
fn place(
    gravity: Gravity,
    (out_w, out_h): (u32, u32),
    (mw, mh): (u32, u32),
    (x, y): (u32, u32),
) -> (i64, i64) {
    let (ax, ay) = gravity.anchor();
    let axis = |anchor: f64, out: u32, size: u32, inset: u32| -> i64 {
        let free = i64::from(out) - i64::from(size);
        if anchor <= 0.0 {
            i64::from(inset)
        } else if anchor >= 1.0 {
            free - i64::from(inset)
        } else {
            (free as f64 * anchor).round() as i64
        }
    };
    (axis(ax, out_w, mw, x), axis(ay, out_h, mh, y))
}

/// Blends the RGBA `mark` (`mw` x `mh`) at (`x0`, `y0`) over `out` (`n` = 3 or 4 channels),
/// its alpha scaled by `opacity` (0..=256), clipped to the output.
fn blend_at(
    out: &mut [u8],
    (out_w, out_h): (u32, u32),
    n: u8,
    mark: &[u8],
    (mw, mh): (u32, u32),
    (x0, y0): (i64, i64),
    opacity: u32,
) {
    let n = usize::from(n);
    let xs = x0.max(0)..(x0 + i64::from(mw)).min(i64::from(out_w));
    let ys = y0.max(0)..(y0 + i64::from(mh)).min(i64::from(out_h));
    if xs.is_empty() || ys.is_empty() {
        return;
    }
    for y in ys {
        let my = (y - y0) as usize;
        let row = &mark[(my * mw as usize + (xs.start - x0) as usize) * 4..]
            [..(xs.end - xs.start) as usize * 4];
        let at = (y as usize * out_w as usize + xs.start as usize) * n;
        let dst = &mut out[at..at + (xs.end - xs.start) as usize * n];
        for (s, d) in row.chunks_exact(4).zip(dst.chunks_exact_mut(n)) {
            // The mark's alpha times the opacity, 0..=255.
            let a = (u32::from(s[3]) * opacity + 128) >> 8;
            if a == 0 {
                continue;
            }
            if n == 3 {
                // Over an opaque pixel: a plain mix.
                for i in 0..3 {
                    let v = u32::from(s[i]) * a + u32::from(d[i]) * (255 - a);
                    d[i] = ((v + 127) / 255) as u8;
                }
            } else {
                // Porter-Duff "over" in straight alpha: out_a = a + da·(1 − a).
                let da = u32::from(d[3]);
                let under = da * (255 - a); // ×255
                let out_a255 = a * 255 + under; // ×255
                if out_a255 == 0 {
                    continue;
                }
                for i in 0..3 {
                    let v = u32::from(s[i]) * a * 255 + u32::from(d[i]) * under;
                    d[i] = ((v + out_a255 / 2) / out_a255) as u8;
                }
                d[3] = ((out_a255 + 127) / 255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Decimal;

    fn mark(w: u32, h: u32, rgba: [u8; 4]) -> Watermark {
        Watermark {
            width: w,
            height: h,
            rgba: rgba.repeat(w as usize * h as usize),
        }
    }

    fn options(position: WatermarkPosition) -> WatermarkOptions {
        WatermarkOptions {
            opacity: Decimal::ONE,
            position,
            x_px: 0,
            y_px: 0,
            scale: None,
        }
    }

    fn run(
        pixels: &[u8],
        channels: u8,
        size: (u32, u32),
        mark: &Watermark,
        o: &WatermarkOptions,
    ) -> (Vec<u8>, u8) {
        let mut out = Vec::new();
        let n = apply(
            pixels,
            channels,
            size,
            mark,
            o,
            &mut fir::Resizer::new(),
            &mut Vec::new(),
            &mut out,
        )
        .unwrap();
        (out, n)
    }

    #[test]
    fn an_opaque_mark_lands_in_its_corner_inset_by_the_margins() {
        let base = vec![0u8; 10 * 8 * 3];
        let red = mark(3, 2, [255, 0, 0, 255]);
        let o = WatermarkOptions {
            x_px: 1,
            y_px: 2,
            ..options(WatermarkPosition::At(Gravity::SouthEast))
        };
        let (out, n) = run(&base, 3, (10, 8), &red, &o);
        assert_eq!(n, 3);
        let red_at = |x: usize, y: usize| out[(y * 10 + x) * 3] == 255;
        let covered: Vec<(usize, usize)> = (0..8)
            .flat_map(|y| (0..10).map(move |x| (x, y)))
            .filter(|&(x, y)| red_at(x, y))
            .collect();
        // 10 - 3 - 1 = 6..9 across, 8 - 2 - 2 = 4..6 down.
        let expected: Vec<(usize, usize)> =
            (4..6).flat_map(|y| (6..9).map(move |x| (x, y))).collect();
        assert_eq!(covered, expected);
    }

    #[test]
    fn opacity_mixes_and_transparent_mark_pixels_leave_the_image_alone() {
        let base = vec![100u8; 4 * 4 * 3];
        let mut half = mark(2, 1, [200, 200, 200, 255]);
        half.rgba[4..].copy_from_slice(&[0, 0, 0, 0]);
        let o = WatermarkOptions {
            opacity: "0.5".parse().unwrap(),
            ..options(WatermarkPosition::At(Gravity::NorthWest))
        };
        let (out, _) = run(&base, 3, (4, 4), &half, &o);
        assert_eq!(&out[..3], &[150, 150, 150], "half of 200 over 100");
        assert_eq!(&out[3..6], &[100, 100, 100], "a transparent mark pixel");
        assert!(out[6..].iter().all(|&v| v == 100));
    }

    #[test]
    fn a_tiled_mark_covers_the_image_with_its_gaps() {
        let base = vec![0u8; 7 * 7];
        let white = mark(2, 2, [255, 255, 255, 255]);
        let o = WatermarkOptions {
            x_px: 1,
            y_px: 1,
            ..options(WatermarkPosition::Tile)
        };
        let (out, n) = run(&base, 1, (7, 7), &white, &o);
        assert_eq!(n, 3, "gray widened to RGB");
        for y in 0..7 {
            for x in 0..7 {
                let on = x % 3 != 2 && y % 3 != 2;
                assert_eq!(out[(y * 7 + x) * 3] == 255, on, "({x}, {y})");
            }
        }
    }

    #[test]
    fn scale_is_a_fraction_of_the_output_width_and_a_large_mark_is_clipped() {
        let base = vec![0u8; 20 * 10 * 4];
        let blue = mark(10, 5, [0, 0, 255, 255]);
        let o = WatermarkOptions {
            scale: Some("0.5".parse().unwrap()),
            ..options(WatermarkPosition::At(Gravity::NorthWest))
        };
        let (out, n) = run(&base, 4, (20, 10), &blue, &o);
        assert_eq!(n, 4);
        let blue =
            |x: usize, y: usize| out[(y * 20 + x) * 4 + 2] > 128 && out[(y * 20 + x) * 4 + 3] > 128;
        assert!(blue(9, 4) && !blue(10, 0) && !blue(0, 5), "drawn 10 x 5");
        // Over transparent pixels the mark's own alpha is the result's.
        assert_eq!(out[3], 255);
        let big = mark(50, 50, [9, 9, 9, 255]);
        let (out, _) = run(
            &base,
            4,
            (20, 10),
            &big,
            &options(WatermarkPosition::At(Gravity::Center)),
        );
        assert!(
            out.chunks_exact(4).all(|p| p == [9, 9, 9, 255]),
            "clipped to the output"
        );
    }

    /// Through the pipeline: the mark is drawn on the encoded output; asked for without
    /// an image, or on an animation kept animated, it is refused.
    #[test]
    fn the_pipeline_draws_the_mark_and_refuses_what_it_cannot_draw() {
        use crate::{FormatRequest, Options, OutputFormat, Pipeline};
        let mut source = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut source, 40, 30);
            encoder.set_color(png::ColorType::Grayscale);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[255u8; 40 * 30]).unwrap();
        }
        let options = Options {
            format: FormatRequest::Fixed(OutputFormat::Png),
            watermark: Some("1:northeast:2:3".parse().unwrap()),
            ..Options::default()
        };
        let mut pipeline = Pipeline::new(Limits::default());
        let refused = pipeline.process(&source, &options).unwrap_err();
        assert!(refused.to_string().contains("watermark"), "{refused}");
        let red = mark(4, 4, [255, 0, 0, 255]);
        let output = pipeline
            .process_marked(&source, &options, Some(&red), &|| false)
            .unwrap();
        let decoded = image::load_from_memory(&output.bytes).unwrap().to_rgb8();
        assert_eq!(
            decoded.get_pixel(40 - 2 - 1, 3).0,
            [255, 0, 0],
            "gray widened to RGB"
        );
        assert_eq!(decoded.get_pixel(40 - 2 - 4, 3 + 3).0, [255, 0, 0]);
        assert_eq!(decoded.get_pixel(40 - 2, 3).0, [255, 255, 255]);
        assert_eq!(decoded.get_pixel(0, 0).0, [255, 255, 255]);
        let animated = crate::animation::check_options(&options).unwrap_err();
        assert!(animated.to_string().contains("watermark"), "{animated}");
    }

    #[test]
    fn decoding_refuses_large_files_and_pixel_bombs() {
        assert!(matches!(Watermark::decode(&[]), Err(ResizeError::Empty)));
        let big = vec![0u8; WATERMARK_BYTES_MAX + 1];
        assert!(matches!(
            Watermark::decode(&big),
            Err(ResizeError::InputTooLarge { .. })
        ));
        // A small PNG declaring 2000 x 2000.
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, 2000, 2000);
            encoder.set_color(png::ColorType::Grayscale);
            encoder.set_compression(png::Compression::High);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&vec![0u8; 2000 * 2000]).unwrap();
        }
        assert!(png.len() <= WATERMARK_BYTES_MAX, "{} bytes", png.len());
        assert!(matches!(
            Watermark::decode(&png),
            Err(ResizeError::DimensionsTooLarge { .. })
        ));
        let mut small = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut small, 3, 2);
            encoder.set_color(png::ColorType::GrayscaleAlpha);
            let mut writer = encoder.write_header().unwrap();
            writer
                .write_image_data(&[10, 255, 20, 0, 30, 128, 40, 255, 50, 255, 60, 255])
                .unwrap();
        }
        let mark = Watermark::decode(&small).unwrap();
        assert_eq!((mark.width(), mark.height()), (3, 2));
        assert_eq!(&mark.rgba[..8], &[10, 10, 10, 255, 20, 20, 20, 0]);
    }
}
