//! Colour conversion to sRGB: CMYK JPEGs and embedded ICC profiles.
//!
//! ICC profiles are parsed and applied with `moxcms`, not `lcms2` or `qcms`:
//! - it is already compiled into the tree as a dependency of `image` 0.25 (zero extra
//!   build time, where `lcms2` would add a C library and `qcms` a second CMS);
//! - it is pure Rust, so parsing a hostile profile from an upload cannot corrupt memory
//!   (a profile is attacker-controlled input like any other);
//! - it handles RGB matrix/TRC and LUT-based (v2 and v4) profiles, and CMYK LUT profiles.
//!
//! A profile that does not parse, or a transform that fails, is ignored and the pixels are
//! treated as sRGB: an odd profile is no reason to refuse a photo. Calls are wrapped in
//! `catch_unwind` for the same reason.
//!
//! CMYK without a profile uses the naive conversion `R = (1 - C)(1 - K)`. JPEGs with an
//! Adobe APP14 marker store CMYK inverted (Photoshop's convention; 255 = no ink); that is
//! undone first. The profile transform, where there is one, is applied on the shrunk-on-load
//! image; an RGB profile is applied after resizing, on the few output pixels (resizing
//! happens in the encoded space anyway, so the order changes nothing visible).

use std::panic::{catch_unwind, AssertUnwindSafe};

use moxcms::{ColorProfile, DataColorSpace, Layout, TransformOptions};

/// Converts interleaved CMYK to interleaved RGB. `adobe_inverted`: the data comes from a JPEG
/// with an Adobe APP14 marker, where 255 means no ink.
pub(crate) fn cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8], adobe_inverted: bool, icc: Option<&[u8]>) {
    if let Some(icc) = icc {
        if cmyk_icc(cmyk, rgb, adobe_inverted, icc) {
            return;
        }
    }
    for (px, out) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        // With inverted data each value is already (1 - ink).
        let (c, m, y, k) = if adobe_inverted {
            (px[0], px[1], px[2], px[3])
        } else {
            (255 - px[0], 255 - px[1], 255 - px[2], 255 - px[3])
        };
        let k = u32::from(k);
        out[0] = div255(u32::from(c) * k);
        out[1] = div255(u32::from(m) * k);
        out[2] = div255(u32::from(y) * k);
    }
}

/// `v / 255` rounded, for `v <= 255 * 255`.
#[inline]
fn div255(v: u32) -> u8 {
    ((v + 128 + ((v + 128) >> 8)) >> 8) as u8
}

fn cmyk_icc(cmyk: &[u8], rgb: &mut [u8], adobe_inverted: bool, icc: &[u8]) -> bool {
    catch_unwind(AssertUnwindSafe(|| {
        let Ok(profile) = ColorProfile::new_from_slice(icc) else {
            return false;
        };
        if profile.color_space != DataColorSpace::Cmyk {
            return false;
        }
        let srgb = ColorProfile::new_srgb();
        let Ok(transform) = profile.create_transform_8bit(
            Layout::Rgba,
            &srgb,
            Layout::Rgb,
            TransformOptions::default(),
        ) else {
            return false;
        };
        if adobe_inverted {
            // ICC CMYK means 0 = no ink.
            let plain: Vec<u8> = cmyk.iter().map(|v| 255 - v).collect();
            transform.transform(&plain, rgb).is_ok()
        } else {
            transform.transform(cmyk, rgb).is_ok()
        }
    }))
    .unwrap_or(false)
}

/// Converts RGB (3 channels) or RGBA (4 channels, alpha kept) pixels from the embedded
/// profile to sRGB in place. Returns false (pixels untouched) when the profile is unusable
/// or already sRGB.
pub(crate) fn rgb_icc_to_srgb(
    pixels: &mut [u8],
    channels: u8,
    icc: &[u8],
    scratch: &mut Vec<u8>,
) -> bool {
    let layout = match channels {
        3 => Layout::Rgb,
        4 => Layout::Rgba,
        _ => return false,
    };
    catch_unwind(AssertUnwindSafe(|| {
        let Ok(profile) = ColorProfile::new_from_slice(icc) else {
            return false;
        };
        if profile.color_space != DataColorSpace::Rgb {
            return false;
        }
        let srgb = ColorProfile::new_srgb();
        if is_srgb(&profile, &srgb) {
            return false;
        }
        let Ok(transform) =
            profile.create_transform_8bit(layout, &srgb, layout, TransformOptions::default())
        else {
            return false;
        };
        scratch.clear();
        scratch.extend_from_slice(pixels);
        transform.transform(scratch, pixels).is_ok()
    }))
    .unwrap_or(false)
}

/// True when the profile's colorants match sRGB's closely (the transform would be a no-op
/// up to rounding), which saves building a transform for the common "sRGB IEC61966-2.1" tag.
fn is_srgb(profile: &ColorProfile, srgb: &ColorProfile) -> bool {
    let close = |a: moxcms::Xyzd, b: moxcms::Xyzd| {
        (a.x - b.x).abs() < 0.002 && (a.y - b.y).abs() < 0.002 && (a.z - b.z).abs() < 0.002
    };
    profile.red_trc.is_some()
        && profile.red_trc == srgb.red_trc
        && profile.green_trc == srgb.green_trc
        && profile.blue_trc == srgb.blue_trc
        && close(profile.red_colorant, srgb.red_colorant)
        && close(profile.green_colorant, srgb.green_colorant)
        && close(profile.blue_colorant, srgb.blue_colorant)
}
