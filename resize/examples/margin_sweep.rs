//! Quality of JPEG shrink-on-load by how much Lanczos3 work it leaves: for each photo and a
//! range of output widths, the fit decoded at the DCT scale the default margin picks and at
//! the next one down, both against the float reference (full decode, f32 Lanczos3), with
//! libvips' `thumbnail` of the same width beside them. Lossless PNG out, so only the decode
//! scale and the resize are compared. What `JPEG_SHRINK_MARGIN` is chosen from (see its doc
//! and docs/BENCHMARKS.md, "#18, fifth pass").
//!
//! Run: `cargo run --workspace --profile bench --example margin_sweep [PHOTO...]` (default:
//! every JPEG photo in the shared photos directory but the CMYK and EXIF-rotated ones, which
//! the float reference, `image`'s decode, neither converts nor turns). libvips' column
//! needs the `vips` command and reads "-" without it.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;

use tessera_resize::{
    Fit, FormatRequest, Limits, Options, OutputFormat, Pipeline, JPEG_SHRINK_MARGIN,
};

/// Decoded pixels per output pixel at the smaller DCT scale, one row per value.
const RATIOS: [f64; 7] = [1.45, 1.55, 1.65, 1.75, 1.85, 1.95, 1.99];
/// Narrowest output compared.
const MIN_WIDTH_PX: u32 = 48;

/// One compared fit.
struct Row {
    /// Decoded pixels per output pixel at the next scale down.
    ratio: f64,
    /// PSNR at the next scale minus PSNR at the default margin.
    delta_db: f64,
    /// Whether each (default, next) is below libvips' PSNR, when libvips ran.
    below_vips: Option<(bool, bool)>,
}

fn ours(photo: &[u8], width: u32, margin: f64) -> (u32, u32, Vec<u8>) {
    let mut pipeline = Pipeline::new(Limits::default());
    pipeline.set_jpeg_shrink_margin(margin);
    let options = Options {
        width: Some(width),
        fit: Fit::Contain,
        format: FormatRequest::Fixed(OutputFormat::Png),
        ..Options::default()
    };
    let out = pipeline
        .process(photo, &options)
        .expect("the photo converts");
    common::decode_rgb8(&out.bytes)
}

fn vips(path: &Path, width: u32) -> Option<(u32, u32, Vec<u8>)> {
    let out = std::env::temp_dir().join(format!("margin-sweep-{}.png", std::process::id()));
    let status = Command::new("vips")
        .arg("thumbnail")
        .arg(path)
        .arg(&out)
        .arg(width.to_string())
        .args(["--height", "100000"])
        .status()
        .ok()?;
    let bytes = std::fs::read(&out).ok();
    let _ = std::fs::remove_file(&out);
    status.success().then_some(())?;
    Some(common::decode_rgb8(&bytes?))
}

fn main() {
    let dir = common::photos_dir().expect("the shared photos directory");
    let mut names: Vec<String> = std::env::args().skip(1).collect();
    if names.is_empty() {
        names = std::fs::read_dir(&dir)
            .expect("photos directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".jpg") && !n.contains("cmyk") && !n.contains("orientation"))
            .collect();
        names.sort();
    }
    println!(
        "photo | width | scale, default margin ({JPEG_SHRINK_MARGIN}) -> next | decoded px per \
         output px | PSNR default | PSNR next scale | delta | libvips"
    );
    let mut rows: Vec<Row> = Vec::new();
    for name in &names {
        let path = dir.join(name);
        let photo = std::fs::read(&path).expect("photo");
        let (sw, sh, src) = common::decode_rgb8(&photo);
        for num in [1u32, 2, 4] {
            let decoded_w = (sw * num).div_ceil(8);
            for r in RATIOS {
                let width = (f64::from(decoded_w) / r).round() as u32;
                if width < MIN_WIDTH_PX || width >= sw {
                    continue;
                }
                let (w, h, at_default) = ours(&photo, width, JPEG_SHRINK_MARGIN);
                // Exactly the shrink at this scale along the tighter axis (the output's
                // height is rounded): the margin that just selects it.
                let shrink = (f64::from(sw) / f64::from(w)).min(f64::from(sh) / f64::from(h));
                let exact = shrink * f64::from(num) / 8.0;
                if exact >= JPEG_SHRINK_MARGIN {
                    continue;
                }
                let (w2, h2, at_next) = ours(&photo, width, exact - 1e-9);
                assert_eq!((w, h), (w2, h2));
                assert_ne!(
                    at_default, at_next,
                    "{name} at {w}: the next scale was not used"
                );
                let reference = common::float_reference(sw, sh, &src, w, h);
                let p_default = common::psnr(&at_default, &reference);
                let p_next = common::psnr(&at_next, &reference);
                let p_vips = vips(&path, width).map(|(vw, vh, px)| {
                    if (vw, vh) == (w, h) {
                        common::psnr(&px, &reference)
                    } else {
                        common::psnr(&px, &common::float_reference(sw, sh, &src, vw, vh))
                    }
                });
                rows.push(Row {
                    ratio: exact,
                    delta_db: p_next - p_default,
                    below_vips: p_vips.map(|v| (p_default < v, p_next < v)),
                });
                println!(
                    "{name} | {w} | {}/8 -> {num}/8 | {exact:.2} | {p_default:.2} | {p_next:.2} | {:+.2} | {}",
                    num * 2,
                    p_next - p_default,
                    p_vips.map_or("-".into(), |p| format!("{p:.2}")),
                );
            }
        }
    }
    println!();
    println!(
        "decoded px per output px | rows | delta min / mean / max (dB) | rows below libvips, \
         default / next scale"
    );
    for lo in [1.4, 1.5, 1.6, 1.7, 1.8, 1.9] {
        let in_band: Vec<&Row> = rows
            .iter()
            .filter(|r| r.ratio >= lo && r.ratio < lo + 0.1)
            .collect();
        if in_band.is_empty() {
            continue;
        }
        let band: Vec<f64> = in_band.iter().map(|r| r.delta_db).collect();
        let below = |pick: fn((bool, bool)) -> bool| {
            in_band
                .iter()
                .filter(|r| r.below_vips.is_some_and(pick))
                .count()
        };
        let min = band.iter().copied().fold(f64::MAX, f64::min);
        let max = band.iter().copied().fold(f64::MIN, f64::max);
        let mean = band.iter().sum::<f64>() / band.len() as f64;
        println!(
            "[{lo:.1}, {:.1}) | {} | {min:+.2} / {mean:+.2} / {max:+.2} | {} / {}",
            lo + 0.1,
            band.len(),
            below(|(default, _)| default),
            below(|(_, next)| next),
        );
    }
}
