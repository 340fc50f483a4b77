//! Size arithmetic: output dimensions per fit mode, the cover crop window per gravity, the
//! JPEG shrink-on-load factor, and EXIF orientation.
//!
//! All decisions are made in the *displayed* (oriented) frame, because that is what the
//! caller sees and asks for; they are then mapped back to the *stored* frame, where decoding
//! and resizing happen. The orientation itself is applied last, on the small output, where
//! moving pixels is cheapest.

use crate::options::SIDE_MAX;
use crate::{Fit, Limits, Options, ResizeError};

/// A rectangle in pixels (fractional, as `fast_image_resize` crops with sub-pixel precision).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// What to produce from a source of a given stored size and orientation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Plan {
    /// Final (displayed) output size.
    pub out_w: u32,
    pub out_h: u32,
    /// Region of the full-size stored image to resize.
    pub crop: Rect,
    /// Size the crop is resized to, in the stored frame (out_w/out_h swapped for
    /// orientations 5..=8).
    pub resize_w: u32,
    pub resize_h: u32,
}

/// True when the orientation swaps width and height.
pub(crate) fn swaps_axes(orientation: u8) -> bool {
    matches!(orientation, 5..=8)
}

fn round_side(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

/// Computes the output of `options` for a stored `src_w` x `src_h` image.
pub(crate) fn plan(
    src_w: u32,
    src_h: u32,
    orientation: u8,
    options: &Options,
    limits: &Limits,
) -> Result<Plan, ResizeError> {
    let swap = swaps_axes(orientation);
    // Displayed source size.
    let (w, h) = if swap { (src_h, src_w) } else { (src_w, src_h) };
    let (wf, hf) = (f64::from(w), f64::from(h));
    let full = Rect {
        x: 0.0,
        y: 0.0,
        w: wf,
        h: hf,
    };

    let (out_w, out_h, crop) = match (options.width, options.height) {
        (None, None) => {
            let pixels = u64::from(w) * u64::from(h);
            if pixels <= limits.output_pixels_max {
                (w, h, full)
            } else {
                let s = (limits.output_pixels_max as f64 / pixels as f64).sqrt();
                (
                    (wf * s).floor().max(1.0) as u32,
                    (hf * s).floor().max(1.0) as u32,
                    full,
                )
            }
        }
        (Some(tw), None) => {
            let tw = if options.fit == Fit::ScaleDown {
                tw.min(w)
            } else {
                tw
            };
            (tw, round_side(hf * f64::from(tw) / wf), full)
        }
        (None, Some(th)) => {
            let th = if options.fit == Fit::ScaleDown {
                th.min(h)
            } else {
                th
            };
            (round_side(wf * f64::from(th) / hf), th, full)
        }
        (Some(tw), Some(th)) => {
            let (twf, thf) = (f64::from(tw), f64::from(th));
            match options.fit {
                Fit::Fill => (tw, th, full),
                Fit::Contain | Fit::ScaleDown => {
                    let mut scale = (twf / wf).min(thf / hf);
                    if options.fit == Fit::ScaleDown && scale >= 1.0 {
                        scale = 1.0;
                    }
                    // The binding side gets exactly the requested length.
                    if scale == twf / wf {
                        (tw, round_side(hf * scale).min(th), full)
                    } else if scale == thf / hf {
                        (round_side(wf * scale).min(tw), th, full)
                    } else {
                        (w, h, full)
                    }
                }
                Fit::Cover => {
                    let scale = (twf / wf).max(thf / hf);
                    let cw = (twf / scale).min(wf);
                    let ch = (thf / scale).min(hf);
                    let (ax, ay) = options.gravity.anchor();
                    (
                        tw,
                        th,
                        Rect {
                            x: (wf - cw) * ax,
                            y: (hf - ch) * ay,
                            w: cw,
                            h: ch,
                        },
                    )
                }
            }
        }
    };

    if out_w > SIDE_MAX
        || out_h > SIDE_MAX
        || u64::from(out_w) * u64::from(out_h) > limits.output_pixels_max
    {
        return Err(ResizeError::InvalidOption(format!(
            "the output would be {out_w}x{out_h}, over the output limits \
             ({SIDE_MAX} per side, {} pixels)",
            limits.output_pixels_max
        )));
    }

    let crop = displayed_rect_to_stored(crop, orientation, f64::from(src_w), f64::from(src_h));
    let (resize_w, resize_h) = if swap { (out_h, out_w) } else { (out_w, out_h) };
    Ok(Plan {
        out_w,
        out_h,
        crop,
        resize_w,
        resize_h,
    })
}

/// Maps a rectangle of the displayed image to the stored image (`sw` x `sh`).
fn displayed_rect_to_stored(r: Rect, orientation: u8, sw: f64, sh: f64) -> Rect {
    let Rect { x, y, w, h } = r;
    match orientation {
        2 => Rect {
            x: sw - x - w,
            y,
            w,
            h,
        },
        3 => Rect {
            x: sw - x - w,
            y: sh - y - h,
            w,
            h,
        },
        4 => Rect {
            x,
            y: sh - y - h,
            w,
            h,
        },
        5 => Rect {
            x: y,
            y: x,
            w: h,
            h: w,
        },
        6 => Rect {
            x: y,
            y: sh - x - w,
            w: h,
            h: w,
        },
        7 => Rect {
            x: sw - y - h,
            y: sh - x - w,
            w: h,
            h: w,
        },
        8 => Rect {
            x: sw - y - h,
            y: x,
            w: h,
            h: w,
        },
        _ => r,
    }
}

/// The JPEG DCT scale numerator (over 8: 1, 2, 4 or 8) for a plan: the smallest decode that
/// still has at least `margin` source pixels per output pixel along both axes of the crop.
pub(crate) fn jpeg_scale(plan: &Plan, margin: f64) -> u8 {
    let shrink_x = plan.crop.w / f64::from(plan.resize_w);
    let shrink_y = plan.crop.h / f64::from(plan.resize_h);
    let shrink = shrink_x.min(shrink_y);
    for (num, factor) in [(1u8, 8.0), (2, 4.0), (4, 2.0)] {
        if shrink >= factor * margin {
            return num;
        }
    }
    8
}

/// Writes `src` (stored frame, `w` x `h`, `bpp` bytes per pixel) into `dst` in the displayed
/// frame for EXIF `orientation`. Returns the displayed size.
pub(crate) fn orient(
    src: &[u8],
    w: u32,
    h: u32,
    bpp: usize,
    orientation: u8,
    dst: &mut Vec<u8>,
) -> (u32, u32) {
    let (w, h) = (w as usize, h as usize);
    let (dw, dh) = if swaps_axes(orientation) {
        (h, w)
    } else {
        (w, h)
    };
    dst.clear();
    dst.resize(dw * dh * bpp, 0);
    for dy in 0..dh {
        let row = &mut dst[dy * dw * bpp..(dy + 1) * dw * bpp];
        for (dx, px) in row.chunks_exact_mut(bpp).enumerate() {
            let (sx, sy) = match orientation {
                2 => (w - 1 - dx, dy),
                3 => (w - 1 - dx, h - 1 - dy),
                4 => (dx, h - 1 - dy),
                5 => (dy, dx),
                6 => (dy, h - 1 - dx),
                7 => (w - 1 - dy, h - 1 - dx),
                8 => (w - 1 - dy, dx),
                _ => (dx, dy),
            };
            let s = (sy * w + sx) * bpp;
            px.copy_from_slice(&src[s..s + bpp]);
        }
    }
    (dw as u32, dh as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x2 stored image whose pixels are their own index, oriented and mapped back:
    /// the crop mapping and the pixel mapping must agree for every orientation.
    #[test]
    fn rect_mapping_agrees_with_pixel_mapping() {
        let (w, h) = (3u32, 2u32);
        let src: Vec<u8> = (0..6).collect();
        for o in 1..=8u8 {
            let mut dst = Vec::new();
            let (dw, _dh) = orient(&src, w, h, 1, o, &mut dst);
            // Each displayed pixel, as a 1x1 rect, maps to the stored pixel it came from.
            for (i, &v) in dst.iter().enumerate() {
                let (dx, dy) = ((i as u32 % dw) as f64, (i as u32 / dw) as f64);
                let r = displayed_rect_to_stored(
                    Rect {
                        x: dx,
                        y: dy,
                        w: 1.0,
                        h: 1.0,
                    },
                    o,
                    3.0,
                    2.0,
                );
                let s = (r.y as usize) * 3 + r.x as usize;
                assert_eq!(s as u8, v, "orientation {o} displayed ({dx},{dy})");
            }
        }
    }
}
