//! What an image is, without converting it: format, dimensions, orientation, frames,
//! colour space, alpha, and a dominant colour — the answer of the node's `/v1/info`.
//!
//! Read under the pipeline's rules: the same admission (size, format sniffed from the
//! bytes), the same header limits, the same job-memory estimate, a decode at the smallest
//! scale that still shows the colours (JPEG DCT scaling to ~64 px on the long side, so an
//! info costs a fraction of a conversion), and the same stop checks.
//!
//! The dominant colour: the pixels of that small decode, converted to sRGB, counted in a
//! histogram of 4 bits per channel (4,096 cells, weighted by alpha, so transparent pixels
//! do not count), and the mean colour of the fullest cell — the colour most of the image
//! is, rather than the average of all of it (a red apple on a white table is white, not
//! pink).

use std::time::Instant;

use crate::decode::{self, DecodeBuffers};
use crate::options::{Fit, FormatRequest, OutputFormat};
use crate::pipeline::{admit, thread_cpu_us};
use crate::{budget, cancel, color, geometry, InputFormat, Limits, Options, ResizeError};

/// Long side, in pixels, of the decode the colours are read from (at least; JPEG scales
/// only by 1/8, 1/4, 1/2).
const SAMPLE_SIDE: u32 = 64;

/// What an image is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Info {
    pub format: InputFormat,
    /// Displayed width and height (after the EXIF orientation).
    pub width: u32,
    pub height: u32,
    /// EXIF orientation, 1..=8 (1 when absent).
    pub orientation: u8,
    /// Frames: more than 1 for an animation.
    pub frames: u32,
    pub color_space: ColorSpace,
    /// An embedded ICC profile that a conversion applies.
    pub icc_profile: bool,
    /// An alpha channel is declared.
    pub has_alpha: bool,
    /// Some pixel of the first frame is not opaque.
    pub uses_alpha: bool,
    /// sRGB, see the module doc.
    pub dominant_color: [u8; 3],
    /// CPU time of the calling thread, µs.
    pub cpu_us: u64,
    /// Wall time, µs.
    pub elapsed_us: u64,
}

/// How the pixels are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColorSpace {
    Gray,
    Rgb,
    Cmyk,
}

impl ColorSpace {
    pub fn as_str(self) -> &'static str {
        match self {
            ColorSpace::Gray => "gray",
            ColorSpace::Rgb => "rgb",
            ColorSpace::Cmyk => "cmyk",
        }
    }
}

/// The planning of an info: as a small PNG thumbnail would be planned, so the same
/// limits and memory estimate apply.
fn thumbnail() -> Options {
    Options {
        width: Some(SAMPLE_SIDE),
        height: Some(SAMPLE_SIDE),
        fit: Fit::Contain,
        format: FormatRequest::Fixed(OutputFormat::Png),
        ..Options::default()
    }
}

/// What [`info`] would refuse from the header alone, and the job's shape (the pipeline's
/// [`crate::probe`] of the small decode it makes), for pricing it before queueing.
pub fn probe(input: &[u8], limits: &Limits) -> Result<crate::Probe, ResizeError> {
    crate::probe(input, &thumbnail(), limits)
}

/// Reads what `input` is (see the module doc), calling `stop` at the decoder's check
/// points. `buffers` holds the small decode (kept by a worker between calls).
pub fn info(
    input: &[u8],
    limits: &Limits,
    buffers: &mut InfoBuffers,
    stop: &dyn Fn() -> bool,
) -> Result<Info, ResizeError> {
    let started = Instant::now();
    let cpu_start_us = thread_cpu_us();
    let thumbnail = thumbnail();
    let format = admit(input, &thumbnail, limits)?;
    let mut seen = None;
    let decoded = decode::decode(
        format,
        input,
        limits,
        &mut buffers.decode,
        &mut |header| {
            let plan = geometry::plan(
                header.width,
                header.height,
                header.orientation,
                &thumbnail,
                limits,
                None,
            )?;
            let scale = if format == InputFormat::Jpeg {
                geometry::jpeg_scale(&plan, 1.0)
            } else {
                8
            };
            budget::check(limits, header, scale, &plan, OutputFormat::Png)?;
            seen = Some(*header);
            Ok(decode::DecodePlan::whole(scale))
        },
        stop,
    )?;
    let header = seen.ok_or_else(|| ResizeError::Corrupt("the decoder read no header".into()))?;
    cancel::check(stop)?;
    let (width, height) = if geometry::swaps_axes(header.orientation) {
        (header.height, header.width)
    } else {
        (header.width, header.height)
    };
    let channels = decoded.channels;
    let pixels = &buffers.decode.pixels
        [..decoded.width as usize * decoded.height as usize * usize::from(channels)];
    // A grid of at most SAMPLE_SIDE² pixels, converted to sRGB like a conversion's.
    let step_x = (decoded.width / SAMPLE_SIDE).max(1) as usize;
    let step_y = (decoded.height / SAMPLE_SIDE).max(1) as usize;
    let bpp = usize::from(channels);
    buffers.sample.clear();
    for y in (0..decoded.height as usize).step_by(step_y) {
        let row = &pixels[y * decoded.width as usize * bpp..][..decoded.width as usize * bpp];
        for pixel in row.chunks_exact(bpp).step_by(step_x) {
            buffers.sample.extend_from_slice(pixel);
        }
    }
    if let Some(icc) = &decoded.icc {
        color::rgb_icc_to_srgb(&mut buffers.sample, channels, icc, &mut buffers.scratch);
    }
    let uses_alpha =
        matches!(channels, 2 | 4) && buffers.sample.chunks_exact(bpp).any(|p| p[bpp - 1] != 255);
    Ok(Info {
        format,
        width,
        height,
        orientation: header.orientation,
        frames: header.frames,
        color_space: if header.scratch_bytes_per_pixel > 0 {
            ColorSpace::Cmyk
        } else if channels <= 2 {
            ColorSpace::Gray
        } else {
            ColorSpace::Rgb
        },
        icc_profile: header.icc,
        has_alpha: matches!(channels, 2 | 4),
        uses_alpha,
        dominant_color: dominant(&buffers.sample, channels),
        cpu_us: thread_cpu_us().saturating_sub(cpu_start_us),
        elapsed_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    })
}

/// Buffers [`info`] reuses from one call to the next.
#[derive(Default)]
pub struct InfoBuffers {
    decode: DecodeBuffers,
    sample: Vec<u8>,
    scratch: Vec<u8>,
}

/// The mean colour of the fullest cell of a 4-bit-per-channel histogram of `pixels`
/// (`channels` interleaved), each pixel weighted by its alpha; black when every pixel is
/// transparent.
pub(crate) fn dominant(pixels: &[u8], channels: u8) -> [u8; 3] {
    let bpp = usize::from(channels);
    let rgb = |p: &[u8]| -> [u8; 3] {
        match channels {
            1 | 2 => [p[0]; 3],
            _ => [p[0], p[1], p[2]],
        }
    };
    let alpha = |p: &[u8]| -> u64 {
        match channels {
            2 | 4 => u64::from(p[bpp - 1]),
            _ => 255,
        }
    };
    let cell = |c: [u8; 3]| {
        (usize::from(c[0] >> 4) << 8) | (usize::from(c[1] >> 4) << 4) | usize::from(c[2] >> 4)
    };
    let mut weight = vec![0u64; 4096];
    for p in pixels.chunks_exact(bpp) {
        weight[cell(rgb(p))] += alpha(p);
    }
    let (best, &total) = weight
        .iter()
        .enumerate()
        .max_by_key(|(i, w)| (**w, std::cmp::Reverse(*i)))
        .expect("4096 cells");
    if total == 0 {
        return [0, 0, 0];
    }
    let mut sum = [0u64; 3];
    for p in pixels.chunks_exact(bpp) {
        let c = rgb(p);
        if cell(c) == best {
            let a = alpha(p);
            for (s, v) in sum.iter_mut().zip(c) {
                *s += u64::from(v) * a;
            }
        }
    }
    sum.map(|s| ((s + total / 2) / total) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
        let image = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba(pixel(x, y)));
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn the_dominant_colour_is_the_majority_not_the_mean() {
        // Three quarters white, a quarter red: white (the mean would be pink).
        let input = png(200, 100, |x, _| {
            if x < 50 {
                [200, 20, 20, 255]
            } else {
                [250, 250, 250, 255]
            }
        });
        let read = info(
            &input,
            &Limits::default(),
            &mut InfoBuffers::default(),
            &|| false,
        )
        .unwrap();
        assert_eq!(read.format, InputFormat::Png);
        assert_eq!(
            (read.width, read.height, read.frames, read.orientation),
            (200, 100, 1, 1)
        );
        assert_eq!(read.dominant_color, [250, 250, 250]);
        assert!(read.has_alpha && !read.uses_alpha);
        assert_eq!(read.color_space, ColorSpace::Rgb);
        // Transparent pixels do not count.
        let input = png(100, 100, |x, _| {
            if x < 80 {
                [0, 0, 255, 0]
            } else {
                [10, 200, 10, 255]
            }
        });
        let read = info(
            &input,
            &Limits::default(),
            &mut InfoBuffers::default(),
            &|| false,
        )
        .unwrap();
        assert_eq!(read.dominant_color, [10, 200, 10]);
        assert!(read.uses_alpha);
        assert_eq!(dominant(&[0, 0, 0, 0], 4), [0, 0, 0]);
        // Gray with alpha: two pixels in one cell, their mean.
        assert_eq!(dominant(&[7, 255, 9, 255], 2), [8, 8, 8]);
    }

    #[test]
    fn refuses_what_the_pipeline_refuses() {
        let limits = Limits::default();
        let mut buffers = InfoBuffers::default();
        assert!(matches!(
            info(b"", &limits, &mut buffers, &|| false),
            Err(ResizeError::Empty)
        ));
        assert!(matches!(
            info(b"not an image", &limits, &mut buffers, &|| false),
            Err(ResizeError::UnsupportedFormat)
        ));
        let small = Limits {
            pixels_max: 100,
            ..limits
        };
        let input = png(20, 20, |_, _| [1, 2, 3, 255]);
        assert!(info(&input, &small, &mut buffers, &|| false).is_err());
        assert!(matches!(
            info(&input, &Limits::default(), &mut buffers, &|| true),
            Err(ResizeError::Cancelled)
        ));
    }
}
