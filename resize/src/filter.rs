//! Gaussian blur and unsharp mask on interleaved 8-bit pixels: the `blur` and `sharpen`
//! operations, and the sharpening a thumbnail wants after a large downscale.
//!
//! Why here and not through `fast_image_resize` or `image`: neither has a blur whose cost
//! stays flat as sigma grows, neither is alpha-aware, and neither can be cancelled.
//!
//! How:
//! - Everything runs in f32 on premultiplied colour (for grey+alpha and RGBA the colour is
//!   weighted by alpha before blurring and divided by the blurred alpha after), so the colour
//!   of a transparent pixel never bleeds into its opaque neighbours.
//! - Below [`BOX_SIGMA_MIN`] the blur is a true separable Gaussian: a sampled kernel of
//!   radius `ceil(3·sigma)`, normalised to sum 1. The horizontal pass reads one row padded
//!   with its edge pixels and adds `w[k]·(row[i-k] + row[i+k])` over the contiguous row (one
//!   axpy per tap, which the compiler vectorises) into a ring of `2r+1` rows; the vertical
//!   pass does the same with whole rows of the ring as vectors, so both passes stream row
//!   by row with no transpose and no f32 copy of the image.
//! - From [`BOX_SIGMA_MIN`] up, three *extended* box passes per direction (Gwosdek et al.,
//!   "Theoretical foundations of Gaussian convolution by extended box filtering", 2011):
//!   each pass is a running sum over `2r+1` samples plus a fractional weight `alpha` on the
//!   two samples just outside, with `r` and `alpha` chosen so that the three passes'
//!   variance is exactly `sigma²` (plain integer boxes miss it by up to a few percent). Each
//!   output costs the same handful of adds whatever the sigma. Horizontal passes run on one
//!   row at a time in a small buffer; vertical passes keep one running-sum row.
//! - Edges clamp: samples beyond the image repeat the edge pixel (per pass on the box path).
//!
//! Accuracy, measured by the unit tests here against an f64 Gaussian of radius `4·sigma`
//! with the same clamped edges, on a 240x180 RGB image of random rectangles plus noise
//! (PSNR of the 8-bit outputs):
//!
//! | sigma | kernel path | box path |
//! |------:|------------:|---------:|
//! |     2 |    65.1 dB  |  54.0 dB |
//! |    10 |    59.0 dB  |  46.1 dB |
//! |    25 |    59.1 dB  |  42.8 dB |
//!
//! (The box path's variance is exact, but its shape is piecewise quadratic; that its PSNR
//! falls as sigma grows on this small image is probably its per-pass edge clamping, where
//! the reference clamps once; not investigated further.)
//!
//! Cost: [`filter_ops`] counts the samples the kernels touch, for the node's cost model;
//! [`filter_scratch_bytes`] is the memory a call takes from `scratch`.
//!
//! Cancellation: the stop check runs between passes and every
//! [`ROWS_PER_CHECK`](crate::cancel::ROWS_PER_CHECK) rows inside each pass.

use crate::cancel::{self, Stop, ROWS_PER_CHECK};
use crate::ResizeError;

/// Smallest blur sigma, in pixels: below it the kernel is a single tap (no-op).
pub const BLUR_SIGMA_MIN: f32 = 0.3;
/// Largest blur sigma, in pixels. The box path's cost does not depend on sigma; the bound
/// keeps the padded row buffers (`2·sigma` pixels) and the edge clamping meaningful.
pub const BLUR_SIGMA_MAX: f32 = 100.0;
/// Smallest unsharp-mask sigma, in pixels.
pub const SHARPEN_SIGMA_MIN: f32 = 0.3;
/// Largest unsharp-mask sigma, in pixels: sharpening is a fine-detail operation; beyond
/// this it is a local contrast change, which is not what the option is for.
pub const SHARPEN_SIGMA_MAX: f32 = 10.0;
/// Largest unsharp-mask amount (0 is the identity; 1 doubles the high frequencies).
pub const SHARPEN_AMOUNT_MAX: f32 = 10.0;
/// From this sigma up the blur uses three extended box passes instead of the Gaussian
/// kernel. Measured with `benches/filters.rs` (RGB, ~800x530, one core): see
/// docs/BENCHMARKS.md, "Filters and smart crop (#17)". The kernel path's cost grows with
/// `6·sigma`, the box path's is flat.
pub const BOX_SIGMA_MIN: f32 = 6.0;

/// Kernel radius in sigmas on the Gaussian-kernel path: the truncated tails hold 0.27% of
/// the weight, and the standard deviation of the truncated kernel is 1.3% under sigma.
const KERNEL_RADIUS_SIGMAS: f32 = 3.0;

/// Box passes per direction on the box path: three give a piecewise-quadratic kernel whose
/// PSNR against a true Gaussian is above 40 dB from sigma ~5 (table above).
const BOX_PASSES: usize = 3;

/// Which implementation a blur uses; normally chosen by sigma ([`Method::for_sigma`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Separable sampled Gaussian, `ceil(3·sigma)` taps each side.
    Kernel,
    /// Three extended box passes per direction.
    Boxes,
}

impl Method {
    /// The method [`gaussian_blur`] uses for `sigma`.
    pub fn for_sigma(sigma: f32) -> Method {
        if sigma >= BOX_SIGMA_MIN {
            Method::Boxes
        } else {
            Method::Kernel
        }
    }
}

/// Radius (taps each side of the centre) of the Gaussian kernel for `sigma`.
fn kernel_radius(sigma: f32) -> usize {
    (KERNEL_RADIUS_SIGMAS * sigma).ceil().max(1.0) as usize
}

/// Half of a normalised sampled Gaussian: `w[0]` is the centre tap, `w[k]` the weight of
/// the two samples `k` away.
fn kernel_weights(sigma: f32, radius: usize, weights: &mut Vec<f32>) {
    weights.clear();
    let s2 = 2.0 * f64::from(sigma) * f64::from(sigma);
    let raw: Vec<f64> = (0..=radius)
        .map(|k| (-((k * k) as f64) / s2).exp())
        .collect();
    let total = raw[0] + 2.0 * raw[1..].iter().sum::<f64>();
    weights.extend(raw.iter().map(|w| (w / total) as f32));
}

/// One extended box pass: radius `r`, end weight `alpha` (0 <= alpha < 1), such that
/// [`BOX_PASSES`] of them have variance `sigma²`.
#[derive(Clone, Copy, Debug)]
struct BoxPass {
    r: usize,
    alpha: f32,
    /// 1 / (2r + 1 + 2·alpha): the normalisation.
    inv: f32,
}

impl BoxPass {
    fn for_sigma(sigma: f32) -> BoxPass {
        let v = f64::from(sigma) * f64::from(sigma) / BOX_PASSES as f64;
        // Largest plain box (width 2r+1, variance r(r+1)/3) whose variance is at most v.
        let mut r = (((12.0 * v + 1.0).sqrt() - 1.0) / 2.0).floor().max(0.0) as usize;
        while (r * (r + 1)) as f64 / 3.0 > v && r > 0 {
            r -= 1;
        }
        let rf = r as f64;
        let alpha = ((2.0 * rf + 1.0) * (v - rf * (rf + 1.0) / 3.0))
            / (2.0 * ((rf + 1.0) * (rf + 1.0) - v));
        let alpha = alpha.clamp(0.0, 1.0);
        BoxPass {
            r,
            alpha: alpha as f32,
            inv: (1.0 / (2.0 * rf + 1.0 + 2.0 * alpha)) as f32,
        }
    }
}

/// Kernel multiply-adds (or running-sum adds) a blur or unsharp mask of `sigma` does on a
/// `width` x `height` x `channels` image, for the cost model. One op = one f32 sample
/// touched by one tap of one pass (a multiply-add on the kernel path; an add, subtract or
/// end-weight multiply-add on the box path, four per sample per pass), plus one op per
/// sample for loading (premultiply) and one for storing (unpremultiply, sharpen).
pub fn filter_ops(width: u32, height: u32, channels: u8, sigma: f32) -> u64 {
    let samples = u64::from(width) * u64::from(height) * u64::from(channels);
    let per_sample = match Method::for_sigma(sigma) {
        Method::Kernel => 2 * (2 * kernel_radius(sigma) as u64 + 1),
        Method::Boxes => 2 * BOX_PASSES as u64 * 4,
    };
    samples * (per_sample + 2)
}

/// Bytes a blur or unsharp mask of `sigma` takes from `scratch` (for the job memory
/// estimate): `2·ceil(3·sigma)+1` f32 rows on the kernel path, two f32 copies of the image
/// on the box path, and a few padded rows.
pub fn filter_scratch_bytes(width: u32, height: u32, channels: u8, sigma: f32) -> u64 {
    floats_needed(
        width as usize,
        height as usize,
        usize::from(channels),
        sigma,
        Method::for_sigma(sigma),
    ) as u64
        * 4
        + 4
}

fn floats_needed(w: usize, h: usize, ch: usize, sigma: f32, method: Method) -> usize {
    let n = w * ch;
    match method {
        Method::Kernel => {
            let r = kernel_radius(sigma);
            n * (2 * r + 1) + (w + 2 * r) * ch + n
        }
        Method::Boxes => {
            let p = BoxPass::for_sigma(sigma).r + 1;
            2 * n * h + 2 * (w + 2 * p) * ch + 2 * n
        }
    }
}

/// `n` f32s carved from the byte scratch buffer (grown as needed, never shrunk). The
/// contents are garbage; every user writes before it reads.
fn floats(scratch: &mut Vec<u8>, n: usize) -> &mut [f32] {
    let bytes = n * 4 + 4;
    if scratch.len() < bytes {
        scratch.resize(bytes, 0);
    }
    // SAFETY: every bit pattern is a valid f32, and `align_to_mut` only hands out the
    // suitably aligned middle of the buffer; the 4 spare bytes cover the misaligned head.
    let (_, mid, _) = unsafe { scratch.align_to_mut::<f32>() };
    &mut mid[..n]
}

fn validate(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    sigma: f32,
    sigma_range: (f32, f32),
) -> Result<(), ResizeError> {
    if !(1..=4).contains(&channels) {
        return Err(ResizeError::InvalidOption(format!(
            "filter: {channels} channels (1 to 4)"
        )));
    }
    let len = width as usize * height as usize * usize::from(channels);
    if pixels.len() != len || width == 0 || height == 0 {
        return Err(ResizeError::InvalidOption(format!(
            "filter: {} bytes for {width}x{height}x{channels}",
            pixels.len()
        )));
    }
    if !(sigma >= sigma_range.0 && sigma <= sigma_range.1) {
        return Err(ResizeError::InvalidOption(format!(
            "sigma {sigma} outside {}..={}",
            sigma_range.0, sigma_range.1
        )));
    }
    Ok(())
}

/// Blurs `pixels` in place with a Gaussian of standard deviation `sigma` px
/// ([`BLUR_SIGMA_MIN`]..=[`BLUR_SIGMA_MAX`]); alpha-aware for 2 and 4 channels.
pub fn gaussian_blur(
    pixels: &mut [u8],
    width: u32,
    height: u32,
    channels: u8,
    sigma: f32,
    scratch: &mut Vec<u8>,
    stop: Stop<'_>,
) -> Result<(), ResizeError> {
    gaussian_blur_with(
        Method::for_sigma(sigma),
        pixels,
        width,
        height,
        channels,
        sigma,
        scratch,
        stop,
    )
}

/// [`gaussian_blur`] with the method forced (for tests and the benchmark).
#[doc(hidden)]
#[allow(clippy::too_many_arguments)]
pub fn gaussian_blur_with(
    method: Method,
    pixels: &mut [u8],
    width: u32,
    height: u32,
    channels: u8,
    sigma: f32,
    scratch: &mut Vec<u8>,
    stop: Stop<'_>,
) -> Result<(), ResizeError> {
    validate(
        pixels,
        width,
        height,
        channels,
        sigma,
        (BLUR_SIGMA_MIN, BLUR_SIGMA_MAX),
    )?;
    let ch = usize::from(channels);
    let alpha = ch == 2 || ch == 4;
    blur_rows(
        method,
        pixels,
        width,
        height,
        ch,
        sigma,
        scratch,
        stop,
        |blurred, row| {
            if alpha {
                for (o, b) in row.chunks_exact_mut(ch).zip(blurred.chunks_exact(ch)) {
                    let a = b[ch - 1];
                    let k = if a > 0.0 { 255.0 / a } else { 0.0 };
                    for c in 0..ch - 1 {
                        o[c] = to_u8(b[c] * k);
                    }
                    o[ch - 1] = to_u8(a);
                }
            } else {
                for (o, &b) in row.iter_mut().zip(blurred) {
                    *o = to_u8(b);
                }
            }
        },
    )
}

/// Sharpens `pixels` in place: `out = in + amount·(in − blur_sigma(in))` on the colour
/// channels, rounded and clamped; alpha is left as it is. `sigma` px is in
/// [`SHARPEN_SIGMA_MIN`]..=[`SHARPEN_SIGMA_MAX`], `amount` in 0..=[`SHARPEN_AMOUNT_MAX`].
/// The blur is alpha-weighted (like [`gaussian_blur`]), so transparent neighbours do not
/// add halos of their hidden colour.
#[allow(clippy::too_many_arguments)]
pub fn unsharp_mask(
    pixels: &mut [u8],
    width: u32,
    height: u32,
    channels: u8,
    sigma: f32,
    amount: f32,
    scratch: &mut Vec<u8>,
    stop: Stop<'_>,
) -> Result<(), ResizeError> {
    validate(
        pixels,
        width,
        height,
        channels,
        sigma,
        (SHARPEN_SIGMA_MIN, SHARPEN_SIGMA_MAX),
    )?;
    if !(0.0..=SHARPEN_AMOUNT_MAX).contains(&amount) {
        return Err(ResizeError::InvalidOption(format!(
            "sharpen amount {amount} outside 0..={SHARPEN_AMOUNT_MAX}"
        )));
    }
    let ch = usize::from(channels);
    let alpha = ch == 2 || ch == 4;
    let colour = if alpha { ch - 1 } else { ch };
    blur_rows(
        Method::for_sigma(sigma),
        pixels,
        width,
        height,
        ch,
        sigma,
        scratch,
        stop,
        |blurred, row| {
            if alpha {
                for (o, b) in row.chunks_exact_mut(ch).zip(blurred.chunks_exact(ch)) {
                    let a = b[ch - 1];
                    if a <= 0.0 {
                        continue;
                    }
                    let k = 255.0 / a;
                    for c in 0..colour {
                        let v = f32::from(o[c]);
                        o[c] = to_u8(v + amount * (v - b[c] * k));
                    }
                }
            } else {
                for (o, &b) in row.iter_mut().zip(blurred) {
                    let v = f32::from(*o);
                    *o = to_u8(v + amount * (v - b));
                }
            }
        },
    )
}

/// Rounds to the nearest level and clamps to 0..=255 (`as` saturates, NaN gives 0).
#[inline(always)]
fn to_u8(v: f32) -> u8 {
    (v + 0.5) as u8
}

/// The shared engine: blurs the premultiplied image and hands each blurred row (f32,
/// premultiplied, `width·ch` samples) to `sink` with the matching row of `pixels`, top to
/// bottom. `pixels` is only read before the first call of `sink`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn blur_rows(
    method: Method,
    pixels: &mut [u8],
    width: u32,
    height: u32,
    ch: usize,
    sigma: f32,
    scratch: &mut Vec<u8>,
    stop: Stop<'_>,
    mut sink: impl FnMut(&[f32], &mut [u8]),
) -> Result<(), ResizeError> {
    let (w, h) = (width as usize, height as usize);
    let n = w * ch;
    let buf = floats(scratch, floats_needed(w, h, ch, sigma, method));
    cancel::check(stop)?;
    match method {
        Method::Kernel => {
            // Rows are blurred horizontally into a ring of 2r+1 rows as the vertical pass
            // needs them, so the working set is a few hundred KB, not an f32 image: the
            // vertical sum for output row y reads rows y-r..=y+r, all loaded (from the
            // original pixels, rows > y are not yet written) before row y is written.
            let r = kernel_radius(sigma);
            let mut weights = Vec::with_capacity(r + 1);
            kernel_weights(sigma, r, &mut weights);
            let slots = 2 * r + 1;
            let (ring, rest) = buf.split_at_mut(n * slots);
            let (padded, rest) = rest.split_at_mut((w + 2 * r) * ch);
            let acc = &mut rest[..n];
            let mut loaded = 0usize;
            for y in 0..h {
                if y % ROWS_PER_CHECK == ROWS_PER_CHECK - 1 {
                    cancel::check(stop)?;
                }
                while loaded < h && loaded <= y + r {
                    let slot = loaded % slots;
                    load_padded(&pixels[loaded * n..(loaded + 1) * n], ch, r, padded);
                    kernel_row(padded, &weights, ch, &mut ring[slot * n..(slot + 1) * n]);
                    loaded += 1;
                }
                let row = |k: isize| {
                    let slot = k.clamp(0, h as isize - 1) as usize % slots;
                    &ring[slot * n..(slot + 1) * n]
                };
                let yi = y as isize;
                let w0 = weights[0];
                for (a, &s) in acc.iter_mut().zip(row(yi)) {
                    *a = w0 * s;
                }
                for (k, &wk) in weights.iter().enumerate().skip(1) {
                    let (up, down) = (row(yi - k as isize), row(yi + k as isize));
                    for ((a, &u), &d) in acc.iter_mut().zip(up).zip(down) {
                        *a += wk * (u + d);
                    }
                }
                sink(acc, &mut pixels[y * n..(y + 1) * n]);
            }
        }
        Method::Boxes => {
            let pass = BoxPass::for_sigma(sigma);
            let p = pass.r + 1;
            let padded_len = (w + 2 * p) * ch;
            let (image_a, rest) = buf.split_at_mut(n * h);
            let (image_b, rest) = rest.split_at_mut(n * h);
            let (pad_a, rest) = rest.split_at_mut(padded_len);
            let (pad_b, rest) = rest.split_at_mut(padded_len);
            let acc = &mut rest[..n];
            // Horizontal: all passes on one row while it is in L1.
            for (y, (src, dst)) in pixels
                .chunks_exact(n)
                .zip(image_a.chunks_exact_mut(n))
                .enumerate()
            {
                if y % ROWS_PER_CHECK == ROWS_PER_CHECK - 1 {
                    cancel::check(stop)?;
                }
                load_padded(src, ch, p, pad_a);
                for i in 0..BOX_PASSES {
                    let (from, to) = if i % 2 == 0 {
                        (&*pad_a, &mut *pad_b)
                    } else {
                        (&*pad_b, &mut *pad_a)
                    };
                    if i + 1 == BOX_PASSES {
                        box_row(from, pass, ch, w, dst);
                    } else {
                        box_row(from, pass, ch, w, &mut to[p * ch..(p + w) * ch]);
                        replicate_edges(to, ch, p, w);
                    }
                }
            }
            // Vertical: running sums of whole rows, A → B → A → sink.
            for i in 0..BOX_PASSES {
                cancel::check(stop)?;
                let (from, to) = if i % 2 == 0 {
                    (&*image_a, &mut *image_b)
                } else {
                    (&*image_b, &mut *image_a)
                };
                let last = i + 1 == BOX_PASSES;
                box_columns(from, pass, n, h, acc, stop, |y, out| {
                    if last {
                        sink(out, &mut pixels[y * n..(y + 1) * n]);
                    } else {
                        to[y * n..(y + 1) * n].copy_from_slice(out);
                    }
                })?;
            }
        }
    }
    Ok(())
}

/// Converts one row of u8 pixels to f32 (colour premultiplied by alpha/255 when `ch` is 2
/// or 4) into the middle of `padded`, and repeats the edge pixels `pad` times each side.
fn load_padded(src: &[u8], ch: usize, pad: usize, padded: &mut [f32]) {
    let w = src.len() / ch;
    let mid = &mut padded[pad * ch..(pad + w) * ch];
    if ch == 2 || ch == 4 {
        for (d, s) in mid.chunks_exact_mut(ch).zip(src.chunks_exact(ch)) {
            let a = f32::from(s[ch - 1]);
            let k = a * (1.0 / 255.0);
            for c in 0..ch - 1 {
                d[c] = f32::from(s[c]) * k;
            }
            d[ch - 1] = a;
        }
    } else {
        for (d, &s) in mid.iter_mut().zip(src) {
            *d = f32::from(s);
        }
    }
    replicate_edges(padded, ch, pad, w);
}

/// Fills the `pad` pixels each side of the `w` pixels in the middle of `padded` with copies
/// of the first and last of them.
fn replicate_edges(padded: &mut [f32], ch: usize, pad: usize, w: usize) {
    let (head, tail) = padded.split_at_mut(pad * ch);
    let first: [f32; 4] = std::array::from_fn(|c| if c < ch { tail[c] } else { 0.0 });
    let last_at = (w - 1) * ch;
    let last: [f32; 4] = std::array::from_fn(|c| if c < ch { tail[last_at + c] } else { 0.0 });
    for px in head.chunks_exact_mut(ch) {
        px.copy_from_slice(&first[..ch]);
    }
    for px in tail[w * ch..].chunks_exact_mut(ch) {
        px.copy_from_slice(&last[..ch]);
    }
}

/// One horizontal Gaussian pass: `out[i] = Σ w[|k|]·padded[i + (r + k)·ch]`, one
/// contiguous axpy per tap pair.
fn kernel_row(padded: &[f32], weights: &[f32], ch: usize, out: &mut [f32]) {
    let n = out.len();
    let r = weights.len() - 1;
    let centre = &padded[r * ch..r * ch + n];
    let w0 = weights[0];
    for (o, &s) in out.iter_mut().zip(centre) {
        *o = w0 * s;
    }
    for (k, &wk) in weights.iter().enumerate().skip(1) {
        let left = &padded[(r - k) * ch..(r - k) * ch + n];
        let right = &padded[(r + k) * ch..(r + k) * ch + n];
        for ((o, &a), &b) in out.iter_mut().zip(left).zip(right) {
            *o += wk * (a + b);
        }
    }
}

/// One horizontal extended-box pass over a row padded by `r + 1` pixels each side.
fn box_row(padded: &[f32], pass: BoxPass, ch: usize, w: usize, out: &mut [f32]) {
    match ch {
        1 => box_row_n::<1>(padded, pass, w, out),
        2 => box_row_n::<2>(padded, pass, w, out),
        3 => box_row_n::<3>(padded, pass, w, out),
        _ => box_row_n::<4>(padded, pass, w, out),
    }
}

fn box_row_n<const CH: usize>(padded: &[f32], pass: BoxPass, w: usize, out: &mut [f32]) {
    let BoxPass { r, alpha, inv } = pass;
    let p = r + 1;
    let px = |i: usize| -> [f32; CH] { std::array::from_fn(|c| padded[i * CH + c]) };
    let mut sum = [0.0f32; CH];
    for i in p - r..=p + r {
        let v = px(i);
        for c in 0..CH {
            sum[c] += v[c];
        }
    }
    for (x, o) in out.chunks_exact_mut(CH).take(w).enumerate() {
        // Window of output x: padded pixels x+1 ..= x+2r+1, ends x and x+2r+2.
        let lo = px(x);
        let hi = px(x + 2 * r + 2);
        let first = px(x + 1);
        for c in 0..CH {
            o[c] = (sum[c] + alpha * (lo[c] + hi[c])) * inv;
            sum[c] += hi[c] - first[c];
        }
    }
}

/// One vertical extended-box pass over the `h` rows of `n` samples in `from`, edges
/// clamped; hands each output row to `emit` (`acc` holds it).
fn box_columns(
    from: &[f32],
    pass: BoxPass,
    n: usize,
    h: usize,
    acc: &mut [f32],
    stop: Stop<'_>,
    mut emit: impl FnMut(usize, &[f32]),
) -> Result<(), ResizeError> {
    let BoxPass { r, alpha, inv } = pass;
    let row = |y: isize| {
        let y = y.clamp(0, h as isize - 1) as usize;
        &from[y * n..(y + 1) * n]
    };
    let r = r as isize;
    let mut sum = vec![0.0f32; n];
    for y in -r..=r {
        for (s, &v) in sum.iter_mut().zip(row(y)) {
            *s += v;
        }
    }
    for y in 0..h {
        if y % ROWS_PER_CHECK == ROWS_PER_CHECK - 1 {
            cancel::check(stop)?;
        }
        let yi = y as isize;
        let (lo, hi, first) = (row(yi - r - 1), row(yi + r + 1), row(yi - r));
        for ((((a, s), &l), &u), &f) in acc
            .iter_mut()
            .zip(sum.iter_mut())
            .zip(lo)
            .zip(hi)
            .zip(first)
        {
            *a = (*s + alpha * (l + u)) * inv;
            *s += u - f;
        }
        emit(y, acc);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const NEVER: &dyn Fn() -> bool = &|| false;

    /// xorshift64*: deterministic test noise.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            (self.next() >> 11) % n
        }
    }

    /// `w` x `h` pixels of `ch` channels of uniform noise (also `crate::resample`'s tests).
    pub(crate) fn noise(w: u32, h: u32, ch: u8, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        (0..w as usize * h as usize * usize::from(ch))
            .map(|_| rng.below(256) as u8)
            .collect()
    }

    /// Random flat rectangles plus ±16 noise: edges at every scale, like a photo.
    fn scene(w: u32, h: u32, ch: u8, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        let ch = usize::from(ch);
        let (w, h) = (w as usize, h as usize);
        let mut px = vec![128u8; w * h * ch];
        for _ in 0..40 {
            let (x0, y0) = (rng.below(w as u64) as usize, rng.below(h as u64) as usize);
            let (rw, rh) = (
                1 + rng.below(w as u64 / 3) as usize,
                1 + rng.below(h as u64 / 3) as usize,
            );
            let colour: Vec<u8> = (0..ch).map(|_| rng.below(256) as u8).collect();
            for y in y0..(y0 + rh).min(h) {
                for x in x0..(x0 + rw).min(w) {
                    px[(y * w + x) * ch..][..ch].copy_from_slice(&colour);
                }
            }
        }
        for v in &mut px {
            *v = (i32::from(*v) + rng.below(33) as i32 - 16).clamp(0, 255) as u8;
        }
        px
    }

    /// f64 Gaussian of radius 4·sigma, separable, edges clamped, rounded to u8.
    fn reference(px: &[u8], w: usize, h: usize, ch: usize, sigma: f64) -> Vec<u8> {
        let r = (4.0 * sigma).ceil() as isize;
        let k: Vec<f64> = (-r..=r)
            .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f64 = k.iter().sum();
        let k: Vec<f64> = k.iter().map(|v| v / total).collect();
        let mut tmp = vec![0.0f64; px.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..ch {
                    let mut s = 0.0;
                    for (j, &kv) in k.iter().enumerate() {
                        let xx = (x as isize + j as isize - r).clamp(0, w as isize - 1) as usize;
                        s += kv * f64::from(px[(y * w + xx) * ch + c]);
                    }
                    tmp[(y * w + x) * ch + c] = s;
                }
            }
        }
        let mut out = vec![0u8; px.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..ch {
                    let mut s = 0.0;
                    for (j, &kv) in k.iter().enumerate() {
                        let yy = (y as isize + j as isize - r).clamp(0, h as isize - 1) as usize;
                        s += kv * tmp[(yy * w + x) * ch + c];
                    }
                    out[(y * w + x) * ch + c] = (s + 0.5) as u8;
                }
            }
        }
        out
    }

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        let mse = a
            .iter()
            .zip(b)
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        10.0 * (255.0f64 * 255.0 / mse.max(1e-12)).log10()
    }

    /// The blurred f32 plane of a 1-channel image, before rounding.
    fn blur_f32(px: &[u8], w: u32, h: u32, sigma: f32, method: Method) -> Vec<f32> {
        let mut copy = px.to_vec();
        let mut out = Vec::with_capacity(px.len());
        blur_rows(
            method,
            &mut copy,
            w,
            h,
            1,
            sigma,
            &mut Vec::new(),
            NEVER,
            |b, _| out.extend_from_slice(b),
        )
        .unwrap();
        out
    }

    #[test]
    fn constant_image_stays_constant() {
        for ch in 1..=4u8 {
            for sigma in [0.3f32, 1.0, 2.5, 6.0, 17.0, 100.0] {
                let mut px = vec![0u8; 37 * 23 * usize::from(ch)];
                for (i, v) in px.iter_mut().enumerate() {
                    *v = [200, 13, 77, 255][i % usize::from(ch)];
                }
                let before = px.clone();
                gaussian_blur(&mut px, 37, 23, ch, sigma, &mut Vec::new(), NEVER).unwrap();
                assert_eq!(px, before, "channels {ch}, sigma {sigma}");
            }
        }
    }

    #[test]
    fn mean_is_preserved() {
        for method in [Method::Kernel, Method::Boxes] {
            for sigma in [1.0f32, 3.0, 10.0, 25.0] {
                let mut px = noise(200, 150, 3, 7);
                let mean = |p: &[u8]| p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64;
                let before = mean(&px);
                gaussian_blur_with(method, &mut px, 200, 150, 3, sigma, &mut Vec::new(), NEVER)
                    .unwrap();
                let after = mean(&px);
                assert!(
                    (after - before).abs() < 0.5,
                    "{method:?} sigma {sigma}: mean {before:.3} -> {after:.3}"
                );
            }
        }
    }

    #[test]
    fn impulse_spreads_with_standard_deviation_sigma() {
        for sigma in [2.0f32, 5.0, 10.0, 25.0] {
            let size = (10.0 * sigma) as u32 | 1;
            let c = (size / 2) as usize;
            let mut px = vec![0u8; (size * size) as usize];
            px[c * size as usize + c] = 255;
            let method = Method::for_sigma(sigma);
            let out = blur_f32(&px, size, size, sigma, method);
            let (mut total, mut var_x, mut var_y) = (0.0f64, 0.0f64, 0.0f64);
            for (i, &v) in out.iter().enumerate() {
                let (x, y) = (i % size as usize, i / size as usize);
                let v = f64::from(v);
                total += v;
                var_x += v * (x as f64 - c as f64).powi(2);
                var_y += v * (y as f64 - c as f64).powi(2);
            }
            for (axis, var) in [("x", var_x), ("y", var_y)] {
                let sd = (var / total).sqrt();
                assert!(
                    (sd / f64::from(sigma) - 1.0).abs() < 0.05,
                    "{method:?} sigma {sigma}: measured sd along {axis} {sd:.3}"
                );
            }
            assert!((total - 255.0).abs() < 0.5, "sigma {sigma}: mass {total}");
        }
    }

    #[test]
    fn both_paths_match_a_float_gaussian() {
        let (w, h, ch) = (240u32, 180u32, 3u8);
        let src = scene(w, h, ch, 11);
        for (sigma, kernel_min_db, box_min_db) in
            [(2.0f32, 55.0, 40.0), (10.0, 55.0, 40.0), (25.0, 55.0, 40.0)]
        {
            let want = reference(&src, w as usize, h as usize, 3, f64::from(sigma));
            for (method, min_db) in [(Method::Kernel, kernel_min_db), (Method::Boxes, box_min_db)] {
                let mut px = src.clone();
                gaussian_blur_with(method, &mut px, w, h, ch, sigma, &mut Vec::new(), NEVER)
                    .unwrap();
                let db = psnr(&px, &want);
                println!("{method:?} sigma {sigma}: PSNR {db:.1} dB");
                assert!(db >= min_db, "{method:?} sigma {sigma}: PSNR {db:.1} dB");
            }
        }
    }

    #[test]
    fn transparent_colour_does_not_bleed() {
        // Left half opaque red, right half fully transparent green.
        for (ch, opaque, clear) in [
            (4u8, vec![255u8, 0, 0, 255], vec![0u8, 255, 0, 0]),
            (2, vec![40, 255], vec![250, 0]),
        ] {
            let (w, h) = (64u32, 16u32);
            let chu = usize::from(ch);
            let mut px = Vec::new();
            for _ in 0..h {
                for x in 0..w {
                    px.extend_from_slice(if x < w / 2 { &opaque } else { &clear });
                }
            }
            for sigma in [1.0f32, 4.0, 12.0] {
                let mut out = px.clone();
                gaussian_blur(&mut out, w, h, ch, sigma, &mut Vec::new(), NEVER).unwrap();
                for (i, p) in out.chunks_exact(chu).enumerate() {
                    if p[chu - 1] > 0 {
                        assert_eq!(
                            &p[..chu - 1],
                            &opaque[..chu - 1],
                            "channels {ch} sigma {sigma} pixel {i}: {p:?}"
                        );
                    }
                }
                // The alpha itself is blurred: the edge is soft.
                let mid = (w / 2) as usize * chu + chu - 1;
                assert!(
                    out[mid] > 0 && out[mid] < 255,
                    "sigma {sigma}: alpha {}",
                    out[mid]
                );
            }
        }
    }

    #[test]
    fn unsharp_amount_zero_is_identity() {
        for ch in 1..=4u8 {
            let src = scene(50, 40, ch, 3);
            let mut px = src.clone();
            unsharp_mask(&mut px, 50, 40, ch, 1.5, 0.0, &mut Vec::new(), NEVER).unwrap();
            assert_eq!(px, src, "channels {ch}");
        }
    }

    #[test]
    fn unsharp_overshoots_a_step_and_keeps_flats() {
        let (w, h) = (60u32, 8u32);
        let mut px = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                let v = if x < w / 2 { 80u8 } else { 160 };
                px.extend_from_slice(&[v, v, v, 200]);
            }
        }
        let alpha_before: Vec<u8> = px.chunks_exact(4).map(|p| p[3]).collect();
        unsharp_mask(&mut px, w, h, 4, 2.0, 1.0, &mut Vec::new(), NEVER).unwrap();
        let row: Vec<u8> = px[..w as usize * 4].chunks_exact(4).map(|p| p[0]).collect();
        let half = (w / 2) as usize;
        assert!(row[half - 1] < 80, "dark side undershoots: {row:?}");
        assert!(row[half] > 160, "bright side overshoots: {row:?}");
        // Far from the edge (> 3 sigma) nothing moves.
        assert!(row[..half - 8].iter().all(|&v| v == 80), "{row:?}");
        assert!(row[half + 8..].iter().all(|&v| v == 160), "{row:?}");
        let alpha_after: Vec<u8> = px.chunks_exact(4).map(|p| p[3]).collect();
        assert_eq!(alpha_after, alpha_before);
    }

    #[test]
    fn unsharp_leaves_alpha_untouched() {
        let src = scene(40, 30, 2, 5);
        let mut px = src.clone();
        unsharp_mask(&mut px, 40, 30, 2, 3.0, 4.0, &mut Vec::new(), NEVER).unwrap();
        let alpha = |p: &[u8]| p.chunks_exact(2).map(|p| p[1]).collect::<Vec<_>>();
        assert_eq!(alpha(&px), alpha(&src));
        assert_ne!(px, src, "the colour was sharpened");
    }

    #[test]
    fn out_of_range_arguments_are_refused() {
        let mut px = vec![0u8; 12];
        let mut s = Vec::new();
        for sigma in [0.0f32, 0.29, 100.5, f32::NAN] {
            assert!(gaussian_blur(&mut px, 2, 2, 3, sigma, &mut s, NEVER).is_err());
        }
        assert!(gaussian_blur(&mut px, 2, 2, 4, 1.0, &mut s, NEVER).is_err());
        assert!(unsharp_mask(&mut px, 2, 2, 3, 10.5, 1.0, &mut s, NEVER).is_err());
        assert!(unsharp_mask(&mut px, 2, 2, 3, 1.0, -0.1, &mut s, NEVER).is_err());
        assert!(unsharp_mask(&mut px, 2, 2, 3, 1.0, 10.1, &mut s, NEVER).is_err());
    }

    #[test]
    fn a_stop_cancels_both_paths() {
        for sigma in [2.0f32, 20.0] {
            let mut px = vec![9u8; 300 * 300];
            let calls = std::cell::Cell::new(0);
            let stop = || {
                calls.set(calls.get() + 1);
                calls.get() > 2
            };
            let r = gaussian_blur(&mut px, 300, 300, 1, sigma, &mut Vec::new(), &stop);
            assert!(
                matches!(r, Err(ResizeError::Cancelled)),
                "sigma {sigma}: {r:?}"
            );
        }
    }

    #[test]
    fn ops_grow_with_sigma_on_the_kernel_path_only() {
        let small = filter_ops(100, 100, 3, 1.0);
        let kernel = filter_ops(100, 100, 3, 5.0);
        let boxes = filter_ops(100, 100, 3, 50.0);
        assert!(small < kernel, "{small} {kernel}");
        assert_eq!(boxes, filter_ops(100, 100, 3, 100.0));
        assert!(boxes < kernel, "{boxes} {kernel}");
    }
}
