//! Content-aware crop anchor ("smart" gravity): where a `window_w` x `window_h` crop of an
//! image keeps the most interesting content, like libvips' `smartcrop --interesting
//! attention` or thumbor's feature detection.
//!
//! Why a summed-area table and not libvips' method: libvips blurs its saliency map and
//! centres the crop on the single brightest point, which can cut a large subject in half;
//! here every window position is scored by the saliency it holds (O(1) each from a
//! summed-area table) and the best one wins.
//!
//! Steps:
//! 1. Shrink the image to at most [`SMART_SIDE_MAX`] px on its long side with
//!    `fast_image_resize` (box filter: an average, which is what saliency at this scale
//!    wants, and the cheapest convolution). Everything after runs on that copy, so the cost
//!    is bounded whatever the input size (see [`smart_ops`]).
//! 2. Saliency per small pixel, in 0..~2.2:
//!    - edge energy, weight [`EDGE_WEIGHT`] = 1: Sobel magnitude of luma (BT.601),
//!      divided by [`EDGE_FULL`] (a 32-level step) and capped at 1. Texture and outlines
//!      are what a viewer looks at; the cap keeps one hard edge (a horizon) from
//!      outweighing a textured subject.
//!    - saturation, weight [`SATURATION_WEIGHT`] = 0.5: chroma `(max − min) / 255`. Vivid
//!      colour draws the eye, but large saturated areas (sky, a wall) are common, hence half
//!      weight.
//!    - skin, weight [`SKIN_WEIGHT`] = 0.7: how close the pixel's normalised RGB is to
//!      libvips' skin vector (0.78, 0.57, 0.44), 1 at the vector falling to 0 at a
//!      distance of 0.1, only for luma 40..=240 (libvips' own test uses the same vector).
//!      People are the usual subject of a photo.
//!    - for 2 and 4 channels all of it is multiplied by alpha/255: transparent areas hold
//!      nothing.
//!    - the sum is multiplied by a mild centre weight, 1 at the centre falling to
//!      1 − [`CENTRE_BIAS`] = 0.8 at the corners: photographers centre subjects, and it
//!      breaks near-ties toward the middle.
//! 3. Summed-area tables of saliency `s`, `s·x` and `s·y`; the window of the shrunk size
//!    with the largest sum wins. Among positions within [`TIE_FRACTION`] of the best sum,
//!    the one whose centre is nearest the saliency centroid of its own window is taken,
//!    so a subject smaller than the window sits in its middle, not against an edge.
//! 4. Scale back to input pixels and clamp so the window lies inside the image.
//!
//! Windows chosen for a square crop (side = the short side) of the shared photos, from the
//! test `smart_windows_of_the_shared_photos` in `tests/filters.rs` (top-left x, y, input px):
//!
//! | photo | size | window (x, y, side) |
//! |---|---|---|
//! | aitzgorri-1m.jpg | 3088x2056 | (1032, 0, 2056) |
//! | aitzgorri-256k.jpg | 1920x1278 | (642, 0, 1278) |
//! | aitzgorri_by_Aitzol_Berasategi.jpg | 3088x2056 | (1032, 0, 2056) |
//! | free_by_Peter_Nerlich.jpg | 2880x2160 | (574, 0, 2160) |
//! | friends-cmyk.jpg | 799x1200 | (0, 318, 799) |
//! | friends-gray.jpg | 799x1200 | (0, 318, 799) |
//! | friends-orientation6.jpg | 799x1200 | (0, 318, 799) |
//! | friends_by_Aitzol_Berasategi.jpg | 2056x3088 | (0, 818, 2056) |
//! | seeding-256k.jpg | 1920x1080 | (158, 0, 1080) |
//! | seeding_by_Clements_Engelhardt.jpg | 5312x2988 | (436, 0, 2988) |
//!
//! (Decoded with `image`, so the orientation-6 photo is in its stored, unrotated layout.
//! The scaled copies of one photo agree with each other, in proportion.)
//!
//! Nothing here knows about requests or options: the pipeline decides when to call it.

use fast_image_resize as fir;

use crate::ResizeError;

/// Long side of the shrunk copy the saliency is computed on, px.
pub const SMART_SIDE_MAX: u32 = 256;
/// Weight of edge energy in the saliency.
pub const EDGE_WEIGHT: f32 = 1.0;
/// Sobel magnitude counted as a full edge (a 32-level luma step gives 4·32 = 128).
pub const EDGE_FULL: f32 = 128.0;
/// Weight of saturation (chroma) in the saliency.
pub const SATURATION_WEIGHT: f32 = 0.5;
/// Weight of skin-tone likelihood in the saliency.
pub const SKIN_WEIGHT: f32 = 0.7;
/// How much the saliency is reduced at the corners relative to the centre.
pub const CENTRE_BIAS: f32 = 0.2;
/// Window sums within this fraction of the best count as ties (then centred on content).
pub const TIE_FRACTION: f64 = 0.01;

/// libvips' skin colour in normalised RGB (r, g, b)/|rgb|.
const SKIN: [f32; 3] = [0.78, 0.57, 0.44];
/// Normalised-RGB distance from [`SKIN`] at which the skin score reaches 0.
const SKIN_RADIUS: f32 = 0.1;

/// Upper bound of the work [`smart_window`] does beyond the shrink, in "pixel ops" of the
/// shrunk copy: saliency (~40 ops per pixel: Sobel, chroma, skin), three summed-area
/// tables (3 each) and the window scan (~12 per position), over at most
/// `SMART_SIDE_MAX²` pixels. The shrink itself reads every input pixel once
/// (`width·height·channels` samples); [`smart_ops`] adds the two.
pub const SMART_SALIENCY_OPS_MAX: u64 = (SMART_SIDE_MAX as u64) * (SMART_SIDE_MAX as u64) * 64;

/// Ops of one [`smart_window`] call on a `width` x `height` x `channels` input: the shrink
/// (one op per input sample) plus [`SMART_SALIENCY_OPS_MAX`].
pub fn smart_ops(width: u32, height: u32, channels: u8) -> u64 {
    u64::from(width) * u64::from(height) * u64::from(channels) + SMART_SALIENCY_OPS_MAX
}

/// The shrunk size of a `width` x `height` image: the long side at most
/// [`SMART_SIDE_MAX`], aspect kept, never enlarged, at least 1 px.
fn shrunk_size(width: u32, height: u32) -> (u32, u32) {
    let long = width.max(height);
    if long <= SMART_SIDE_MAX {
        return (width, height);
    }
    let scale = f64::from(SMART_SIDE_MAX) / f64::from(long);
    let s = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
    (s(width), s(height))
}

/// Top-left (x, y), in input pixels, of the `window_w` x `window_h` window of the image
/// that holds the most salient content. The window always lies inside the image; a
/// window as wide (high) as the image gets x = 0 (y = 0).
pub fn smart_window(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    window_w: f64,
    window_h: f64,
    resizer: &mut fir::Resizer,
) -> Result<(f64, f64), ResizeError> {
    if !(1..=4).contains(&channels)
        || width == 0
        || height == 0
        || pixels.len() != width as usize * height as usize * usize::from(channels)
    {
        return Err(ResizeError::InvalidOption(format!(
            "smart crop: {} bytes for {width}x{height}x{channels}",
            pixels.len()
        )));
    }
    let (wf, hf) = (f64::from(width), f64::from(height));
    let fits = |v: f64, side: f64| v.is_finite() && v > 0.0 && v <= side * (1.0 + 1e-9);
    if !fits(window_w, wf) || !fits(window_h, hf) {
        return Err(ResizeError::InvalidOption(format!(
            "smart crop window {window_w}x{window_h} does not fit in {width}x{height}"
        )));
    }
    let (sw, sh) = shrunk_size(width, height);
    let ch = usize::from(channels);
    let shrunk: std::borrow::Cow<'_, [u8]> = if (sw, sh) == (width, height) {
        std::borrow::Cow::Borrowed(pixels)
    } else {
        let pixel_type = match channels {
            1 => fir::PixelType::U8,
            2 => fir::PixelType::U8x2,
            3 => fir::PixelType::U8x3,
            _ => fir::PixelType::U8x4,
        };
        let internal = |e: &dyn std::fmt::Display| ResizeError::Encode(format!("smart: {e}"));
        let src = fir::images::ImageRef::new(width, height, pixels, pixel_type)
            .map_err(|e| internal(&e))?;
        let mut dst = fir::images::Image::new(sw, sh, pixel_type);
        let options = fir::ResizeOptions::new()
            .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Box))
            .use_alpha(false);
        resizer
            .resize(&src, &mut dst, &options)
            .map_err(|e| internal(&e))?;
        std::borrow::Cow::Owned(dst.into_vec())
    };
    let saliency = saliency_map(&shrunk, sw as usize, sh as usize, ch);
    // Window size in shrunk pixels, at least 1, at most the shrunk side.
    let kw = ((window_w * f64::from(sw) / wf).round() as usize).clamp(1, sw as usize);
    let kh = ((window_h * f64::from(sh) / hf).round() as usize).clamp(1, sh as usize);
    let (px, py) = best_window(&saliency, sw as usize, sh as usize, kw, kh);
    // Scale the window's centre back, so rounding of its size does not shift it.
    let cx = (px as f64 + kw as f64 / 2.0) * wf / f64::from(sw);
    let cy = (py as f64 + kh as f64 / 2.0) * hf / f64::from(sh);
    let x = (cx - window_w / 2.0).clamp(0.0, (wf - window_w).max(0.0));
    let y = (cy - window_h / 2.0).clamp(0.0, (hf - window_h).max(0.0));
    Ok((x, y))
}

/// Saliency of every pixel of a small image (see the module doc for the terms).
fn saliency_map(px: &[u8], w: usize, h: usize, ch: usize) -> Vec<f32> {
    let luma: Vec<f32> = px
        .chunks_exact(ch)
        .map(|p| match ch {
            1 | 2 => f32::from(p[0]),
            _ => 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]),
        })
        .collect();
    let mut out = vec![0.0f32; w * h];
    let l = |x: isize, y: isize| {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        luma[y * w + x]
    };
    let (half_w, half_h) = (w as f32 / 2.0, h as f32 / 2.0);
    for y in 0..h {
        for x in 0..w {
            let (xi, yi) = (x as isize, y as isize);
            let gx = l(xi + 1, yi - 1) + 2.0 * l(xi + 1, yi) + l(xi + 1, yi + 1)
                - l(xi - 1, yi - 1)
                - 2.0 * l(xi - 1, yi)
                - l(xi - 1, yi + 1);
            let gy = l(xi - 1, yi + 1) + 2.0 * l(xi, yi + 1) + l(xi + 1, yi + 1)
                - l(xi - 1, yi - 1)
                - 2.0 * l(xi, yi - 1)
                - l(xi + 1, yi - 1);
            let edge = ((gx * gx + gy * gy).sqrt() / EDGE_FULL).min(1.0);
            let p = &px[(y * w + x) * ch..][..ch];
            let (saturation, skin) = if ch >= 3 {
                let rgb = [f32::from(p[0]), f32::from(p[1]), f32::from(p[2])];
                let max = rgb[0].max(rgb[1]).max(rgb[2]);
                let min = rgb[0].min(rgb[1]).min(rgb[2]);
                let mag = (rgb[0] * rgb[0] + rgb[1] * rgb[1] + rgb[2] * rgb[2]).sqrt();
                let luma = luma[y * w + x];
                let skin = if mag > 0.0 && (40.0..=240.0).contains(&luma) {
                    let d = (0..3)
                        .map(|c| (rgb[c] / mag - SKIN[c]).powi(2))
                        .sum::<f32>()
                        .sqrt();
                    (1.0 - d / SKIN_RADIUS).max(0.0)
                } else {
                    0.0
                };
                ((max - min) / 255.0, skin)
            } else {
                (0.0, 0.0)
            };
            let mut s = EDGE_WEIGHT * edge + SATURATION_WEIGHT * saturation + SKIN_WEIGHT * skin;
            if ch == 2 || ch == 4 {
                s *= f32::from(p[ch - 1]) / 255.0;
            }
            let dx = (x as f32 + 0.5 - half_w) / half_w;
            let dy = (y as f32 + 0.5 - half_h) / half_h;
            s *= 1.0 - CENTRE_BIAS * (dx * dx + dy * dy) / 2.0;
            out[y * w + x] = s;
        }
    }
    out
}

/// Summed-area table with a zero first row and column: `t[(y)(w+1) + x]` is the sum of
/// `v(x', y')` over x' < x, y' < y.
fn summed_area(sal: &[f32], w: usize, h: usize, f: impl Fn(usize, usize, f32) -> f64) -> Vec<f64> {
    let stride = w + 1;
    let mut t = vec![0.0f64; stride * (h + 1)];
    for y in 0..h {
        let mut row = 0.0f64;
        for x in 0..w {
            row += f(x, y, sal[y * w + x]);
            t[(y + 1) * stride + x + 1] = t[y * stride + x + 1] + row;
        }
    }
    t
}

/// The top-left of the `kw` x `kh` window of the `w` x `h` saliency map with the largest
/// sum, ties (within [`TIE_FRACTION`]) broken toward the window centred on its content.
fn best_window(sal: &[f32], w: usize, h: usize, kw: usize, kh: usize) -> (usize, usize) {
    let stride = w + 1;
    let s = summed_area(sal, w, h, |_, _, v| f64::from(v));
    let sx = summed_area(sal, w, h, |x, _, v| f64::from(v) * (x as f64 + 0.5));
    let sy = summed_area(sal, w, h, |_, y, v| f64::from(v) * (y as f64 + 0.5));
    let rect = |t: &[f64], x: usize, y: usize| {
        t[(y + kh) * stride + x + kw] - t[y * stride + x + kw] - t[(y + kh) * stride + x]
            + t[y * stride + x]
    };
    let positions = || (0..=h - kh).flat_map(|y| (0..=w - kw).map(move |x| (x, y)));
    let best = positions()
        .map(|(x, y)| rect(&s, x, y))
        .fold(0.0f64, f64::max);
    if best <= 0.0 {
        // Nothing salient (a uniform image): the centre.
        return ((w - kw) / 2, (h - kh) / 2);
    }
    let floor = best * (1.0 - TIE_FRACTION);
    let mut chosen = (0, 0);
    let mut chosen_off = f64::MAX;
    for (x, y) in positions() {
        let total = rect(&s, x, y);
        if total < floor {
            continue;
        }
        let (mx, my) = (rect(&sx, x, y) / total, rect(&sy, x, y) / total);
        let (cx, cy) = (x as f64 + kw as f64 / 2.0, y as f64 + kh as f64 / 2.0);
        let off = (mx - cx).powi(2) + (my - cy).powi(2);
        if off < chosen_off {
            chosen = (x, y);
            chosen_off = off;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    const GREY: [u8; 3] = [128, 128, 128];

    /// A flat grey `w` x `h` RGB image with a `side` px subject centred at (cx, cy).
    fn with_subject(
        w: u32,
        h: u32,
        cx: u32,
        cy: u32,
        side: u32,
        subject: impl Fn(u32, u32) -> [u8; 3],
    ) -> Vec<u8> {
        let mut px = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                let inside = x + side / 2 >= cx
                    && x < cx + side / 2
                    && y + side / 2 >= cy
                    && y < cy + side / 2;
                px.extend_from_slice(&if inside { subject(x, y) } else { GREY });
            }
        }
        px
    }

    fn checker(x: u32, y: u32) -> [u8; 3] {
        if (x / 4 + y / 4).is_multiple_of(2) {
            [40, 40, 40]
        } else {
            [220, 220, 220]
        }
    }
    fn skin(_: u32, _: u32) -> [u8; 3] {
        // (0.78, 0.57, 0.44) scaled: a typical light skin tone.
        [210, 153, 118]
    }
    fn saturated(_: u32, _: u32) -> [u8; 3] {
        [230, 20, 30]
    }

    fn assert_inside(x: f64, y: f64, ww: f64, wh: f64, w: u32, h: u32) {
        assert!(x >= 0.0 && y >= 0.0, "({x}, {y})");
        assert!(x + ww <= f64::from(w) + 1e-9, "x {x} + {ww} > {w}");
        assert!(y + wh <= f64::from(h) + 1e-9, "y {y} + {wh} > {h}");
    }

    #[test]
    fn window_contains_an_off_centre_subject() {
        type Subject = fn(u32, u32) -> [u8; 3];
        let subjects: [(&str, Subject); 3] = [
            ("texture", checker),
            ("skin", skin),
            ("saturated", saturated),
        ];
        // (image w, h, subject centre, window w, h)
        let layouts = [
            ("left third", 900, 500, (150, 250), 400.0, 500.0),
            ("right third", 900, 500, (750, 250), 400.0, 500.0),
            ("top", 500, 900, (250, 120), 500.0, 400.0),
            ("bottom right corner", 800, 800, (700, 700), 300.0, 300.0),
            (
                "top left corner, small image",
                200,
                150,
                (30, 25),
                80.0,
                60.0,
            ),
        ];
        let mut resizer = fir::Resizer::new();
        for (name, subject) in subjects {
            for (place, w, h, (cx, cy), ww, wh) in layouts {
                let side = w.min(h) / 8;
                let px = with_subject(w, h, cx, cy, side, subject);
                let (x, y) = smart_window(&px, w, h, 3, ww, wh, &mut resizer).unwrap();
                assert_inside(x, y, ww, wh, w, h);
                let (cx, cy) = (f64::from(cx), f64::from(cy));
                assert!(
                    cx >= x && cx <= x + ww && cy >= y && cy <= y + wh,
                    "{name} subject at {place} ({cx}, {cy}): window ({x:.1}, {y:.1}) {ww}x{wh}"
                );
            }
        }
    }

    #[test]
    fn uniform_image_gives_a_valid_window() {
        let mut resizer = fir::Resizer::new();
        for ch in 1..=4u8 {
            let px = vec![90u8; 640 * 480 * usize::from(ch)];
            let (x, y) = smart_window(&px, 640, 480, ch, 300.0, 480.0, &mut resizer).unwrap();
            assert_inside(x, y, 300.0, 480.0, 640, 480);
            assert!((x - 170.0).abs() < 3.0 && y == 0.0, "centred: ({x}, {y})");
        }
    }

    #[test]
    fn window_is_inside_for_awkward_sizes() {
        let mut resizer = fir::Resizer::new();
        let px = with_subject(1001, 333, 990, 320, 20, checker);
        for (ww, wh) in [
            (1.0, 1.0),
            (1001.0, 333.0),
            (1000.6, 12.3),
            (0.4, 333.0),
            (77.7, 0.9),
        ] {
            let (x, y) = smart_window(&px, 1001, 333, 3, ww, wh, &mut resizer).unwrap();
            assert_inside(x, y, ww, wh, 1001, 333);
        }
        for (ww, wh) in [(0.0, 1.0), (1002.0, 10.0), (10.0, f64::NAN), (-1.0, 5.0)] {
            assert!(smart_window(&px, 1001, 333, 3, ww, wh, &mut resizer).is_err());
        }
    }

    #[test]
    fn transparent_areas_are_not_interesting() {
        // A textured but fully transparent left half, a faint texture on the opaque right.
        let (w, h) = (400u32, 200u32);
        let mut px = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let [r, g, b] = checker(x, y);
                if x < w / 2 {
                    px.extend_from_slice(&[r, g, b, 0]);
                } else {
                    let v = if (x / 4 + y / 4).is_multiple_of(2) {
                        120
                    } else {
                        136
                    };
                    px.extend_from_slice(&[v, v, v, 255]);
                }
            }
        }
        let mut resizer = fir::Resizer::new();
        let (x, _) = smart_window(&px, w, h, 4, 150.0, 200.0, &mut resizer).unwrap();
        assert!(x >= 200.0, "window at x {x} is over the transparent half");
    }
}
