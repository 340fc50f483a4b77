//! Size arithmetic: output dimensions per fit mode (with `dpr`, `enlarge`, `fit=pad`'s
//! canvas and `padding`), the crop window (manual crop rectangle or gravity-placed window,
//! trim, compass gravity, focus point), the JPEG shrink-on-load factor, and orientation
//! (EXIF composed with `rotate` and `flip`).
//!
//! One `gravity` places every window: a `crop=w,h` window inside the image, then a cover
//! window inside that, both read in the final frame (a focus point is mapped there from
//! the displayed source). `gravity=smart` searches once, for the final window anywhere in
//! the image (see [`plan`]).
//!
//! All decisions are made in the *displayed* (oriented) frame, because that is what the
//! caller sees and asks for; they are then mapped back to the *stored* frame, where decoding
//! and resizing happen. The orientation itself is applied last, on the small output, where
//! moving pixels is cheapest.

use crate::options::SIDE_MAX;
use crate::options::{Flip, Gravity, Padding, Rotation};
use crate::{Fit, Limits, Options, ResizeError};

/// A rectangle in pixels (fractional, as `fast_image_resize` crops with sub-pixel precision).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl Rect {
    fn intersect(self, other: Rect) -> Rect {
        let x = self.x.max(other.x);
        let y = self.y.max(other.y);
        Rect {
            x,
            y,
            w: ((self.x + self.w).min(other.x + other.w) - x).max(0.0),
            h: ((self.y + self.h).min(other.y + other.h) - y).max(0.0),
        }
    }
}

/// What to produce from a source of a given stored size and orientation.
///
/// Three frames are involved: *stored* (the decoder's pixels), *displayed source* (after
/// the EXIF orientation: what `crop`, `trim` and a focus point refer to) and *final* (after
/// `rotate` and `flip` as well: what `w`, `h`, fit and compass gravity refer to). All
/// three orientations are composed into one, [`Plan::orientation`], applied by [`orient`]
/// to the small output: a rotation costs no extra pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Plan {
    /// Final (displayed) output size: the canvas when padding (`fit=pad`, `padding`), else
    /// the resized image.
    pub out_w: u32,
    pub out_h: u32,
    /// The resized image in the final frame, and where it sits on the canvas (equal to
    /// `out_w` x `out_h` at 0,0 unless `Fit::Pad` or `padding` adds bars).
    pub content_w: u32,
    pub content_h: u32,
    pub pad_x: u32,
    pub pad_y: u32,
    /// Region of the full-size stored image to resize.
    pub crop: Rect,
    /// Where the crop may move (`gravity=smart` chooses its place after decoding): the
    /// image after a crop rectangle and `trim` (a window crop's place is the search's to
    /// choose), in the stored frame at full size.
    pub region: Rect,
    /// Size the crop is resized to, in the stored frame (content_w/content_h swapped when
    /// `orientation` swaps axes).
    pub resize_w: u32,
    pub resize_h: u32,
    /// EXIF orientation composed with `rotate` and `flip`: stored frame to final frame.
    pub orientation: u8,
    /// The EXIF orientation alone (stored frame to displayed source).
    pub exif_orientation: u8,
    /// `gravity=smart` on a window crop or a cover window smaller than `region`: the
    /// pipeline moves `crop` within `region` once the decoded pixels show where the
    /// content is.
    pub smart: bool,
}

impl Plan {
    /// Whether a canvas larger than the resized image is filled around it.
    pub(crate) fn pads(&self) -> bool {
        self.content_w != self.out_w || self.content_h != self.out_h
    }

    /// Where the displayed source's top-left pixel is stored, full-size pixels (the colour
    /// `trim` removes is that pixel's).
    pub(crate) fn exif_corner(&self, src_w: u32, src_h: u32) -> (f64, f64) {
        let corner = Rect {
            x: 0.0,
            y: 0.0,
            w: 1.0,
            h: 1.0,
        };
        let r = displayed_rect_to_stored(
            corner,
            self.exif_orientation,
            f64::from(src_w),
            f64::from(src_h),
        );
        (r.x, r.y)
    }

    /// The crop in the displayed source frame (after EXIF orientation), full-size pixels.
    pub(crate) fn source_window(&self, src_w: u32, src_h: u32) -> Rect {
        let e = self.exif_orientation;
        let (dw, dh) = displayed_size(src_w, src_h, e);
        displayed_rect_to_stored(self.crop, inverse(e), f64::from(dw), f64::from(dh))
    }
}

/// True when the orientation swaps width and height.
pub(crate) fn swaps_axes(orientation: u8) -> bool {
    matches!(orientation, 5..=8)
}

fn displayed_size(w: u32, h: u32, orientation: u8) -> (u32, u32) {
    if swaps_axes(orientation) {
        (h, w)
    } else {
        (w, h)
    }
}

/// An orientation as the displayed-to-stored mapping it stands for: transpose the
/// coordinates or not, then mirror the stored x and/or y axis (see [`orient`]).
fn parts(orientation: u8) -> (bool, bool, bool) {
    match orientation {
        2 => (false, true, false),
        3 => (false, true, true),
        4 => (false, false, true),
        5 => (true, false, false),
        6 => (true, false, true),
        7 => (true, true, true),
        8 => (true, true, false),
        _ => (false, false, false),
    }
}

fn from_parts(parts: (bool, bool, bool)) -> u8 {
    match parts {
        (false, false, false) => 1,
        (false, true, false) => 2,
        (false, true, true) => 3,
        (false, false, true) => 4,
        (true, false, false) => 5,
        (true, false, true) => 6,
        (true, true, true) => 7,
        (true, true, false) => 8,
    }
}

/// The one orientation that shows what `then` shows of an image first shown by `first`.
/// In mappings from displayed to stored coordinates, `s = F₁·T₁·(F₂·T₂·d)`; a mirror moved
/// past a transpose swaps its axes, so the product is `(F₁ ⊕ swap?(F₂))·T^(t₁ ⊕ t₂)`.
pub(crate) fn compose(first: u8, then: u8) -> u8 {
    let (t1, x1, y1) = parts(first);
    let (t2, x2, y2) = parts(then);
    let (x2, y2) = if t1 { (y2, x2) } else { (x2, y2) };
    from_parts((t1 ^ t2, x1 ^ x2, y1 ^ y2))
}

/// The orientation that undoes `orientation` (only the two quarter turns differ from
/// themselves).
pub(crate) fn inverse(orientation: u8) -> u8 {
    match orientation {
        6 => 8,
        8 => 6,
        o @ 1..=8 => o,
        _ => 1,
    }
}

/// The caller's rotation (clockwise), then flip, as an EXIF orientation.
pub(crate) fn user_orientation(rotate: Rotation, flip: Flip) -> u8 {
    let rotation = match rotate {
        Rotation::None => 1,
        Rotation::Deg90 => 6,
        Rotation::Deg180 => 3,
        Rotation::Deg270 => 8,
    };
    let mirror = match flip {
        Flip::None => 1,
        Flip::Horizontal => 2,
        Flip::Vertical => 4,
        Flip::Both => 3,
    };
    compose(rotation, mirror)
}

fn round_side(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

/// Computes the output of `options` for a stored `src_w` x `src_h` image with EXIF
/// `orientation`. `trim` is the part of the stored image (full-size pixels) left after
/// `Options::trim`, once the decoded pixels have shown it; the plan from the header has
/// none and is planned again with it.
pub(crate) fn plan(
    src_w: u32,
    src_h: u32,
    orientation: u8,
    options: &Options,
    limits: &Limits,
    trim: Option<Rect>,
) -> Result<Plan, ResizeError> {
    let exif = if (1..=8).contains(&orientation) {
        orientation
    } else {
        1
    };
    let user = user_orientation(options.rotate, options.flip);
    let combined = compose(exif, user);
    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    // The displayed source, then the region of it that is kept.
    let (dw, dh) = displayed_size(src_w, src_h, exif);
    let (dwf, dhf) = (f64::from(dw), f64::from(dh));
    let mut region = Rect {
        x: 0.0,
        y: 0.0,
        w: dwf,
        h: dhf,
    };
    if let Some((crop, (x, y, w, h))) = options.crop.and_then(|c| Some((c, c.to_pixels(dwf, dhf)?)))
    {
        region = region.intersect(Rect { x, y, w, h });
        if region.w < 0.5 || region.h < 0.5 {
            return Err(ResizeError::InvalidOption(format!(
                "crop {crop} lies outside the {dw}x{dh} image (less than a pixel is left)"
            )));
        }
    }
    if let Some(trim) = trim {
        let kept = displayed_rect_to_stored(trim, inverse(exif), dwf, dhf);
        let trimmed = region.intersect(kept);
        // A trim that leaves nothing of a manual crop is ignored rather than refused: the
        // caller cannot know where the border is.
        if trimmed.w >= 0.5 && trimmed.h >= 0.5 {
            region = trimmed;
        }
    }
    // A window crop's size, in the displayed source like a rectangle's, of what is left.
    let crop_window = options.crop.and_then(|c| c.window_size(region.w, region.h));
    // The final frame: the displayed source turned by `rotate`/`flip`.
    let (fw, fh) = displayed_size(dw, dh, user);
    let (fwf, fhf) = (f64::from(fw), f64::from(fh));
    let region = displayed_rect_to_stored(region, inverse(user), fwf, fhf);
    let focus = match options.gravity {
        Gravity::FocusPoint { x, y } => {
            let point = Rect {
                x: x.as_f64() * dwf,
                y: y.as_f64() * dhf,
                w: 0.0,
                h: 0.0,
            };
            let p = displayed_rect_to_stored(point, inverse(user), fwf, fhf);
            Some((p.x, p.y))
        }
        _ => None,
    };
    // `outer` is where a smart window may move: the whole of what is left, since one search
    // for the final window there finds what a window crop and then a cover crop would keep.
    let outer = region;
    let region = match crop_window {
        Some((w, h)) => {
            let (w, h) = if swaps_axes(user) { (h, w) } else { (w, h) };
            let (x, y) = place(region, w, h, options.gravity, focus);
            Rect { x, y, w, h }
        }
        None => region,
    };

    let (wf, hf) = (region.w, region.h);
    let (w, h) = (round_side(wf), round_side(hf));
    let enlarge = options.enlarge.unwrap_or(options.fit != Fit::ScaleDown);
    let (box_w, box_h) = options.box_size();
    // (content size, window within the region, canvas size)
    let whole = Rect {
        x: 0.0,
        y: 0.0,
        w: wf,
        h: hf,
    };
    let (content_w, content_h, window, canvas) = match (box_w, box_h) {
        (None, None) => {
            let pixels = u64::from(w) * u64::from(h);
            if pixels <= limits.output_pixels_max {
                (w, h, whole, None)
            } else {
                let s = (limits.output_pixels_max as f64 / pixels as f64).sqrt();
                (
                    (wf * s).floor().max(1.0) as u32,
                    (hf * s).floor().max(1.0) as u32,
                    whole,
                    None,
                )
            }
        }
        (Some(tw), None) => {
            let tw = if enlarge { tw } else { tw.min(w) };
            (tw, round_side(hf * f64::from(tw) / wf), whole, None)
        }
        (None, Some(th)) => {
            let th = if enlarge { th } else { th.min(h) };
            (round_side(wf * f64::from(th) / hf), th, whole, None)
        }
        (Some(tw), Some(th)) => {
            let (twf, thf) = (f64::from(tw), f64::from(th));
            match options.fit {
                Fit::Fill if enlarge => (tw, th, whole, None),
                Fit::Fill => (tw.min(w), th.min(h), whole, None),
                Fit::Contain | Fit::ScaleDown | Fit::Pad => {
                    let mut scale = (twf / wf).min(thf / hf);
                    if !enlarge && scale >= 1.0 {
                        scale = 1.0;
                    }
                    let canvas = (options.fit == Fit::Pad).then_some((tw, th));
                    // The binding side gets exactly the requested length.
                    if scale == twf / wf {
                        (tw, round_side(hf * scale).min(th), whole, canvas)
                    } else if scale == thf / hf {
                        (round_side(wf * scale).min(tw), th, whole, canvas)
                    } else {
                        (w.min(tw), h.min(th), whole, canvas)
                    }
                }
                Fit::Cover => {
                    let mut scale = (twf / wf).max(thf / hf);
                    let (ow, oh) = if !enlarge && scale > 1.0 {
                        scale = 1.0;
                        (tw.min(w), th.min(h))
                    } else {
                        (tw, th)
                    };
                    let cw = (f64::from(ow) / scale).min(wf);
                    let ch = (f64::from(oh) / scale).min(hf);
                    let focus = focus.map(|(px, py)| (px - region.x, py - region.y));
                    let (x, y) = place(whole, cw, ch, options.gravity, focus);
                    (ow, oh, Rect { x, y, w: cw, h: ch }, None)
                }
            }
        }
    };
    let (canvas_w, canvas_h) = canvas.unwrap_or((content_w, content_h));
    // `padding` around the result (and around `fit=pad`'s canvas), in output pixels.
    let padding = options.padding.scaled(options.dpr);
    let (add_w, add_h) = padding.added_px();
    let (padded_w, padded_h) = (u64::from(canvas_w) + add_w, u64::from(canvas_h) + add_h);
    if padded_w > u64::from(SIDE_MAX)
        || padded_h > u64::from(SIDE_MAX)
        || padded_w * padded_h > limits.output_pixels_max
    {
        let padded = if padding == Padding::NONE {
            String::new()
        } else {
            format!(" with padding {}", options.padding)
        };
        return Err(ResizeError::InvalidOption(format!(
            "the output would be {padded_w}x{padded_h}{padded}, over the output limits \
             ({SIDE_MAX} per side, {} pixels)",
            limits.output_pixels_max
        )));
    }
    // Both within SIDE_MAX: checked above.
    let (out_w, out_h) = (padded_w as u32, padded_h as u32);
    let (pad_x, pad_y) = if canvas.is_some() {
        let (ax, ay) = options.gravity.anchor();
        (
            (f64::from(canvas_w - content_w) * ax).round() as u32,
            (f64::from(canvas_h - content_h) * ay).round() as u32,
        )
    } else {
        (0, 0)
    };
    let (pad_x, pad_y) = (pad_x + padding.left_px, pad_y + padding.top_px);

    let window = Rect {
        x: region.x + window.x,
        y: region.y + window.y,
        ..window
    };
    // The smart search moves the final window within `outer`: a window crop's place is
    // the search's to choose as well, so it takes any fit; without one only a cover
    // window has room to move.
    let smart = options.gravity == Gravity::Smart
        && (crop_window.is_some() || (options.fit == Fit::Cover && canvas.is_none()))
        && (window.w < outer.w - 0.5 || window.h < outer.h - 0.5);
    let crop = displayed_rect_to_stored(window, combined, sw, sh);
    let region = displayed_rect_to_stored(outer, combined, sw, sh);
    let (resize_w, resize_h) = displayed_size(content_w, content_h, combined);
    Ok(Plan {
        out_w,
        out_h,
        content_w,
        content_h,
        pad_x,
        pad_y,
        crop,
        region,
        resize_w,
        resize_h,
        orientation: combined,
        exif_orientation: exif,
        smart,
    })
}

/// Top-left of a `w` x `h` window (no larger than `region`) inside `region`: centred on
/// the focus point `focus` and moved back inside, else at the gravity's anchor (a smart
/// window starts centred; the pipeline moves it).
fn place(region: Rect, w: f64, h: f64, gravity: Gravity, focus: Option<(f64, f64)>) -> (f64, f64) {
    let (x_max, y_max) = (region.x + region.w - w, region.y + region.h - h);
    match focus {
        Some((px, py)) => (
            (px - w / 2.0).min(x_max).max(region.x),
            (py - h / 2.0).min(y_max).max(region.y),
        ),
        None => {
            let (ax, ay) = gravity.anchor();
            (
                region.x + (region.w - w) * ax,
                region.y + (region.h - h) * ay,
            )
        }
    }
}

/// Maps a rectangle of the displayed image to the stored image (`sw` x `sh`). With the
/// [`inverse`] orientation and the displayed size it maps the other way.
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
///
/// Powers of two only, although libjpeg-turbo decodes at any eighth: its SIMD inverse DCTs
/// are the 8x8, 4x4 and 2x2 ones, and the others are plain C. Measured on aitzgorri-1m.jpg
/// (3088x2056, fit 400x400, WebP q80, best of 60, one core): 3/8 instead of 1/2 took the
/// resize from 1.8 to 1.2-1.3 ms and the decode from 13.3-13.8 to 14.1-15.4 ms, a loss.
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

    /// Orienting by `first` and then by `then` is orienting once by `compose(first, then)`,
    /// and `inverse` undoes: checked on pixels, for every pair.
    #[test]
    fn composed_orientations_agree_with_two_passes() {
        let (w, h) = (3u32, 2u32);
        let src: Vec<u8> = (0..6).collect();
        for first in 1..=8u8 {
            let mut once = Vec::new();
            let (w1, h1) = orient(&src, w, h, 1, first, &mut once);
            let mut back = Vec::new();
            orient(&once, w1, h1, 1, inverse(first), &mut back);
            assert_eq!(back, src, "inverse of {first}");
            for then in 1..=8u8 {
                let mut twice = Vec::new();
                let size2 = orient(&once, w1, h1, 1, then, &mut twice);
                let mut direct = Vec::new();
                let size = orient(&src, w, h, 1, compose(first, then), &mut direct);
                assert_eq!((direct, size), (twice, size2), "{first} then {then}");
            }
        }
    }

    #[test]
    fn rotations_are_clockwise() {
        // 2x1 stored [a b]: turned 90 degrees clockwise it is a column, a on top.
        let mut dst = Vec::new();
        let o = user_orientation(Rotation::Deg90, Flip::None);
        assert_eq!(orient(&[1, 2], 2, 1, 1, o, &mut dst), (1, 2));
        assert_eq!(dst, [1, 2]);
        let o = user_orientation(Rotation::Deg270, Flip::None);
        orient(&[1, 2], 2, 1, 1, o, &mut dst);
        assert_eq!(dst, [2, 1]);
        let o = user_orientation(Rotation::None, Flip::Horizontal);
        orient(&[1, 2], 2, 1, 1, o, &mut dst);
        assert_eq!(dst, [2, 1]);
    }
}
