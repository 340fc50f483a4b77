//! Padding and background: the resized (and oriented) image placed on a canvas of the
//! output size filled with the background colour (`fit=pad`), or composited over it in
//! place of its transparency (`background` with any fit), in one pass that writes each
//! output pixel once.
//!
//! The canvas has as few channels as the result needs: gray when the image is gray and
//! the background is a gray, and alpha only when the background is not opaque (a
//! transparent background keeps the image's own alpha; a JPEG output composites what is
//! left over white, as for any image, in the pipeline's channel adaptation).

use crate::geometry::Plan;
use crate::options::Rgba;

/// Writes the canvas for `plan` into `out` from `src` (the image at `content_w` x
/// `content_h`, `channels` bytes per pixel) and returns its channel count.
pub(crate) fn compose(
    src: &[u8],
    channels: u8,
    plan: &Plan,
    background: Rgba,
    out: &mut Vec<u8>,
) -> u8 {
    let [br, bg, bb, ba] = background.0;
    let gray = channels <= 2 && br == bg && bg == bb;
    let alpha = ba != 255;
    let n = usize::from(if gray { 1u8 } else { 3 }) + usize::from(alpha);
    let fill: &[u8] = match (gray, alpha) {
        (true, false) => &[br],
        (true, true) => &[br, ba],
        (false, false) => &[br, bg, bb],
        (false, true) => &[br, bg, bb, ba],
    };
    let (ow, oh) = (plan.out_w as usize, plan.out_h as usize);
    out.clear();
    out.reserve(ow * oh * n);
    for _ in 0..ow * oh {
        out.extend_from_slice(fill);
    }
    let bpp = usize::from(channels);
    let (cw, ch) = (plan.content_w as usize, plan.content_h as usize);
    let (px, py) = (plan.pad_x as usize, plan.pad_y as usize);
    let back = [u32::from(br), u32::from(bg), u32::from(bb)];
    let ba = u32::from(ba);
    for y in 0..ch {
        let src_row = &src[y * cw * bpp..(y + 1) * cw * bpp];
        let at = ((py + y) * ow + px) * n;
        let dst_row = &mut out[at..at + cw * n];
        for (s, d) in src_row.chunks_exact(bpp).zip(dst_row.chunks_exact_mut(n)) {
            let (colour, a): ([u8; 3], u32) = match channels {
                1 => ([s[0]; 3], 255),
                2 => ([s[0]; 3], u32::from(s[1])),
                3 => ([s[0], s[1], s[2]], 255),
                _ => ([s[0], s[1], s[2]], u32::from(s[3])),
            };
            // Porter-Duff "over" in 8-bit: the image (colour, a) over the background.
            let under = ba * (255 - a); // background weight, ×255
            let out_a255 = a * 255 + under; // result alpha, ×255²/255 = ×255
            for (i, v) in d[..if gray { 1 } else { 3 }].iter_mut().enumerate() {
                let c = u32::from(colour[i]);
                // Fully transparent over fully transparent: 0.
                *v = (c * a * 255 + back[i] * under + out_a255 / 2)
                    .checked_div(out_a255)
                    .unwrap_or(0) as u8;
            }
            if alpha {
                d[n - 1] = ((out_a255 + 127) / 255) as u8;
            }
        }
    }
    n as u8
}
