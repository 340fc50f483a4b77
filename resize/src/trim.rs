//! `trim`: finding a uniform border on the decoded pixels, so that it can be folded into the
//! crop (no pixel is copied; the resize simply starts inside the border).
//!
//! The border's colour is the top-left pixel's *as displayed* (the caller passes where
//! that pixel is stored); a pixel belongs to the border when none of its channels (alpha
//! included) differs from that colour by more than the threshold. The kept rectangle is the
//! bounding box of every pixel that does not belong, so a border need not be as wide on
//! every side. The scan reads each row at most once (the sides only up to the bounds found
//! so far), with a stop check every [`ROWS_PER_CHECK`] rows.

use crate::cancel::{self, Stop, ROWS_PER_CHECK};
use crate::geometry::Rect;
use crate::ResizeError;

/// The part of the `width` x `height` image (`channels` bytes per pixel) left once the
/// border of the colour at `corner` is removed, in its pixels; `None` when there is no
/// border, or when the whole image is that colour (nothing would be left).
pub(crate) fn kept(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    corner: (u32, u32),
    threshold: u8,
    stop: Stop<'_>,
) -> Result<Option<Rect>, ResizeError> {
    let (w, h, bpp) = (width as usize, height as usize, usize::from(channels));
    if w == 0 || h == 0 || pixels.len() < w * h * bpp {
        return Ok(None);
    }
    let at = (corner.1.min(height - 1) as usize * w + corner.0.min(width - 1) as usize) * bpp;
    let reference = &pixels[at..at + bpp];
    let differs = |p: &[u8]| {
        p.iter()
            .zip(reference)
            .any(|(&a, &b)| a.abs_diff(b) > threshold)
    };
    let row = |y: usize| &pixels[y * w * bpp..(y + 1) * w * bpp];
    // First and last rows holding a pixel that differs.
    let mut top = None;
    for y in 0..h {
        if y % ROWS_PER_CHECK == 0 {
            cancel::check(stop)?;
        }
        if row(y).chunks_exact(bpp).any(differs) {
            top = Some(y);
            break;
        }
    }
    let Some(top) = top else {
        return Ok(None);
    };
    let mut bottom = top;
    for y in (top..h).rev() {
        if row(y).chunks_exact(bpp).any(differs) {
            bottom = y;
            break;
        }
    }
    // Leftmost and rightmost differing columns over those rows.
    let (mut left, mut right) = (w, 0usize);
    for (i, y) in (top..=bottom).enumerate() {
        if i % ROWS_PER_CHECK == 0 {
            cancel::check(stop)?;
        }
        let r = row(y);
        if let Some(x) = (0..left).find(|&x| differs(&r[x * bpp..(x + 1) * bpp])) {
            left = x;
        }
        if let Some(x) = (right..w)
            .rev()
            .find(|&x| differs(&r[x * bpp..(x + 1) * bpp]))
        {
            right = x;
        }
    }
    let right = right.max(left);
    if top == 0 && left == 0 && bottom == h - 1 && right == w - 1 {
        return Ok(None);
    }
    Ok(Some(Rect {
        x: left as f64,
        y: top as f64,
        w: (right + 1 - left) as f64,
        h: (bottom + 1 - top) as f64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6x5 gray image, value 10 everywhere but a 2x2 block of 200 at (3,1) and one pixel
    /// of 14 at (1,3) (within a threshold of 4, beyond 3).
    fn image() -> Vec<u8> {
        let mut px = vec![10u8; 30];
        for (x, y) in [(3, 1), (4, 1), (3, 2), (4, 2)] {
            px[y * 6 + x] = 200;
        }
        px[3 * 6 + 1] = 14;
        px
    }

    #[test]
    fn the_border_within_the_threshold_goes() {
        let kept = kept(&image(), 6, 5, 1, (0, 0), 4, &|| false).unwrap();
        let r = kept.expect("a border");
        assert_eq!((r.x, r.y, r.w, r.h), (3.0, 1.0, 2.0, 2.0));
        // Threshold 3: the pixel of 14 is content too.
        let r = kept_at(3);
        assert_eq!((r.x, r.y, r.w, r.h), (1.0, 1.0, 4.0, 3.0));
    }

    fn kept_at(threshold: u8) -> Rect {
        kept(&image(), 6, 5, 1, (0, 0), threshold, &|| false)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn a_uniform_image_or_no_border_is_left_alone() {
        assert_eq!(kept(&[7; 12], 4, 3, 1, (0, 0), 0, &|| false).unwrap(), None);
        let edge: Vec<u8> = (0..12).map(|i| if i == 0 { 0 } else { 9 }).collect();
        // The corner differs from its neighbours: everything is "content".
        assert_eq!(kept(&edge, 4, 3, 1, (0, 0), 0, &|| false).unwrap(), None);
    }
}
