//! The resampling filter every resize in this crate uses: Lanczos3, handed to
//! `fast_image_resize` as a custom filter that evaluates one sine per tap instead of two.
//!
//! `fast_image_resize` computes its weights afresh on every call (it has no cache to keep
//! between calls), and its built-in Lanczos3 is `sinc(x) * sinc(x / 3)`: two `sin` calls per
//! tap. For a photo thumbnail (1544x1028 → 400x266 after shrink-on-load) that is ~16,000 taps,
//! ~1.4 % of the whole WebP request in `perf`. With `θ = πx/3`, `sin(πx) = sin 3θ =
//! 3 sin θ − 4 sin³θ`, so one sine gives both factors. The weights agree with the built-in
//! filter's to within a few units in the last place, and once `fast_image_resize` has
//! normalised them and rounded them to fixed point, the output bytes are the same (both
//! checked by the tests below over thousands of sizes, scales and crops; the pinned outputs
//! of `tests/output_version.rs` did not move either). It saves ~0.1 ms of that request
//! (`examples/prof_webp.rs`, docs/BENCHMARKS.md).

use std::f64::consts::PI;

use fast_image_resize as fir;

/// Lanczos3's support, in source pixels at scale 1 (as `fast_image_resize` uses it).
pub(crate) const LANCZOS3_SUPPORT: f64 = 3.0;

/// The resize algorithm of every resize in the crate: Lanczos3 convolution.
pub(crate) fn lanczos3() -> fir::ResizeAlg {
    fir::ResizeAlg::Convolution(fir::FilterType::Custom(
        fir::Filter::new("Lanczos3", lanczos3_weight, LANCZOS3_SUPPORT)
            .expect("3.0 is a finite, positive support"),
    ))
}

/// `sinc(x) · sinc(x / 3)` on [−3, 3) (the interval of `fast_image_resize`'s own), zero
/// outside; one `sin` per call.
fn lanczos3_weight(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else if (-LANCZOS3_SUPPORT..LANCZOS3_SUPPORT).contains(&x) {
        let theta = x * (PI / 3.0);
        let s = theta.sin();
        // sin(πx) · sin(πx/3) / (πx · πx/3), with sin(πx) = sin θ · (3 − 4 sin²θ).
        let sin_pi_x = s * (3.0 - 4.0 * s * s);
        (sin_pi_x * s) / (3.0 * theta * theta)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two-sine definition (as `fast_image_resize` writes it).
    fn reference(x: f64) -> f64 {
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                (x * PI).sin() / (x * PI)
            }
        };
        if (-3.0..3.0).contains(&x) {
            sinc(x) * sinc(x / 3.0)
        } else {
            0.0
        }
    }

    /// Resizes one row of `width` pseudo-random RGB pixels (its columns `left..left +
    /// span`) to `out` pixels with `alg`.
    fn resize_row(width: u32, left: f64, span: f64, out: u32, alg: fir::ResizeAlg) -> Vec<u8> {
        let pixels = crate::filter::tests::noise(width, 1, 3, u64::from(width) | 1 << 32);
        let src = fir::images::ImageRef::new(width, 1, &pixels, fir::PixelType::U8x3)
            .expect("a row of width pixels");
        let mut dst = fir::images::Image::new(out, 1, fir::PixelType::U8x3);
        let options = fir::ResizeOptions::new()
            .resize_alg(alg)
            .crop(left, 0.0, span, 1.0);
        fir::Resizer::new()
            .resize(&src, &mut dst, &options)
            .expect("same pixel type on both sides");
        dst.into_vec()
    }

    /// The output-bytes promise behind `OUTPUT_VERSION` staying where it was when this filter
    /// replaced the built-in one: over thousands of sizes, scales (down and up) and
    /// fractional crops, the two filters give the same bytes once `fast_image_resize` has
    /// normalised and rounded their weights (the weights themselves differ in the last bits;
    /// `fast_image_resize` derives the vertical pass's weights with the same function).
    #[test]
    fn same_bytes_as_the_built_in_lanczos3() {
        let built_in = fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3);
        let mut compared = 0;
        for width in 1..=700u32 {
            for out in [1, 2, 3, 5, 16, 64, 200, 266, 400, 1000] {
                for (left, span) in [
                    (0.0, f64::from(width)),
                    (f64::from(width) * 0.137, f64::from(width) * 0.71),
                ] {
                    assert_eq!(
                        resize_row(width, left, span, out, lanczos3()),
                        resize_row(width, left, span, out, built_in),
                        "{width} px (crop {left}+{span}) to {out}"
                    );
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 14_000);
    }

    #[test]
    fn one_sine_is_the_two_sine_lanczos3() {
        let mut worst = 0.0f64;
        for i in -40_000..=40_000 {
            let x = f64::from(i) / 10_000.0;
            worst = worst.max((lanczos3_weight(x) - reference(x)).abs());
        }
        assert!(worst < 1e-14, "largest difference {worst:e}");
        assert_eq!(lanczos3_weight(0.0), 1.0);
        assert_eq!(lanczos3_weight(3.0), 0.0);
        assert_eq!(lanczos3_weight(7.5), 0.0);
        // An even function.
        assert_eq!(lanczos3_weight(1.25), lanczos3_weight(-1.25));
    }
}
