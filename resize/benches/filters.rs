//! Tessera's blur, unsharp mask and smart-crop anchor against libvips and Pillow, one core,
//! same pixels, same run.
//!
//! Run: `cargo bench -p tessera-resize --bench filters` (option after `--`: `--seconds N`
//! per measurement, default 1). The process pins itself to CPU 0; every other program runs
//! under `taskset -c 0` with `VIPS_CONCURRENCY=1`.
//!
//! Input: each photo decoded with `image`, resized to 800 px wide (Lanczos3), kept in memory
//! for Tessera and written as PNG (for Pillow and pyvips) and as a `.v` file (for the vips
//! CLI, so no codec runs in the CLI's timed work).
//!
//! What each column includes, honestly:
//! - ours: the kernel call on an in-memory buffer, plus a ~0.1 ms copy of the input into the
//!   work buffer (blur is in place); buffers reused between calls, best of 3 means.
//! - vips (in process): `pyvips` (cffi over the system libvips, operation cache off), the
//!   operation plus `write_to_memory` of its result from an image already in memory; best
//!   of 3 means. Python's call overhead is some µs per call.
//! - vips CLI: one `vips <op> in.v out.v` process, best of 5: process start, libvips
//!   init, mapping the `.v` input, the operation, writing the `.v` output. The "CLI − copy"
//!   column subtracts the best `vips copy in.v out.v` (the same run with no operation).
//! - Pillow: `Image.filter(...)` alone, timed inside python (`/usr/bin/python3`).
//! - PSNR: the 8-bit output against an f64 Gaussian (radius 4·sigma, edges clamped).
//! - `vips sharpen` is not an unsharp mask: it sharpens L* in CIELAB with a non-linear
//!   curve (including two colour conversions); it is listed as the nearest libvips
//!   operation, not the same work. Pillow has no smart crop.
//!
//! Each side skipped with a message when its program or module is missing.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use harness::{flat_json, pin_to_cpu0, program_best_ms, run_python, time_ms};

use fast_image_resize as fir;
use tessera_resize::filter::{self, Method};
use tessera_resize::smart;

const PHOTOS: [&str; 2] = [
    "friends_by_Aitzol_Berasategi.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
];
const WIDTH: u32 = 800;
const BLUR_SIGMAS: [f32; 4] = [1.0, 3.0, 10.0, 30.0];
const NEVER: &dyn Fn() -> bool = &|| false;

/// The python side: `lib` is `pil` or `vips`; prints one JSON object of op → ms.
const PY: &str = r#"
import sys, time, json
lib, src, outdir, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
res = {}
if lib == 'pil':
    from PIL import Image, ImageFilter
    im = Image.open(src).convert('RGB'); im.load()
    for s in [1, 3, 10, 30]:
        res['blur%d' % s] = bench(lambda: im.filter(ImageFilter.GaussianBlur(s)))
        im.filter(ImageFilter.GaussianBlur(s)).save('%s/pil_blur%d.png' % (outdir, s))
    res['sharpen'] = bench(lambda: im.filter(ImageFilter.UnsharpMask(1, 100, 0)))
else:
    import pyvips
    pyvips.cache_set_max(0)
    im = pyvips.Image.new_from_file(src).copy_memory()
    for s in [1, 3, 10, 30]:
        res['blur%d' % s] = bench(lambda: im.gaussblur(s).write_to_memory())
        im.gaussblur(s).write_to_file('%s/vips_blur%d.png' % (outdir, s))
    res['sharpen'] = bench(lambda: im.sharpen(sigma=1).write_to_memory())
    side = min(im.width, im.height)
    res['smart'] = bench(lambda: im.smartcrop(side, side, interesting='attention').write_to_memory())
print(json.dumps(res))
"#;

fn python(python: &str, lib: &str, png: &Path, dir: &Path, seconds: f64) -> HashMap<String, f64> {
    let seconds = seconds.to_string();
    let args = [
        OsStr::new(lib),
        png.as_os_str(),
        dir.as_os_str(),
        OsStr::new(&seconds),
    ];
    run_python(python, PY, args, lib)
        .map(|text| flat_json(&text))
        .unwrap_or_default()
}

/// f64 separable Gaussian, radius 4·sigma, edges clamped, rounded to u8 (RGB).
fn reference(px: &[u8], w: usize, h: usize, sigma: f64) -> Vec<u8> {
    let ch = 3;
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
    let mut col = vec![0.0f64; w * ch];
    for y in 0..h {
        col.iter_mut().for_each(|v| *v = 0.0);
        for (j, &kv) in k.iter().enumerate() {
            let yy = (y as isize + j as isize - r).clamp(0, h as isize - 1) as usize;
            for (c, &t) in col.iter_mut().zip(&tmp[yy * w * ch..(yy + 1) * w * ch]) {
                *c += kv * t;
            }
        }
        for (o, &c) in out[y * w * ch..(y + 1) * w * ch].iter_mut().zip(&col) {
            *o = (c + 0.5) as u8;
        }
    }
    out
}

fn psnr_of_png(path: &Path, reference: &[u8]) -> Option<f64> {
    let img = image::open(path).ok()?.to_rgb8();
    (img.as_raw().len() == reference.len()).then(|| common::psnr(img.as_raw(), reference))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(1.0);
    if common::photos_dir().is_none() {
        return;
    }
    if pin_to_cpu0() {
        println!("pinned to CPU 0 (sched_setaffinity)");
    } else {
        println!("WARNING: could not pin to CPU 0; numbers are not per core");
    }
    let has_vips = Path::new("/usr/bin/vips").exists();
    if !has_vips {
        println!("SKIP vips CLI: /usr/bin/vips is not installed (apt-get install libvips-tools)");
    }
    let tmp = std::env::temp_dir().join(format!("tessera-filters-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();

    let mut resizer = fir::Resizer::new();
    let mut scratch = Vec::new();
    for name in PHOTOS {
        let Some(bytes) = common::photo(name) else {
            continue;
        };
        let (sw, sh, src) = common::decode_rgb8(&bytes);
        let (w, h) = (
            WIDTH,
            (f64::from(sh) * f64::from(WIDTH) / f64::from(sw)).round() as u32,
        );
        let src_img = fir::images::ImageRef::new(sw, sh, &src, fir::PixelType::U8x3).unwrap();
        let mut dst = fir::images::Image::new(w, h, fir::PixelType::U8x3);
        resizer
            .resize(&src_img, &mut dst, &fir::ResizeOptions::new())
            .unwrap();
        let px = dst.into_vec();
        let png = tmp.join("in.png");
        image::save_buffer(&png, &px, w, h, image::ExtendedColorType::Rgb8).unwrap();
        let v_in = tmp.join("in.v").display().to_string();
        let v_out = tmp.join("out.v").display().to_string();
        let s = |v: &str| v.to_owned();
        let vips_copy = if has_vips {
            Command::new("vips")
                .args(["copy", &png.display().to_string(), &v_in])
                .status()
                .ok()
                .filter(|s| s.success())
                .and_then(|_| program_best_ms("vips", &[s("copy"), v_in.clone(), v_out.clone()]))
        } else {
            None
        };
        let pil = python("/usr/bin/python3", "pil", &png, &tmp, seconds);
        let pyvips = python("python3", "vips", &png, &tmp, seconds);
        if pil.is_empty() {
            println!("SKIP Pillow: /usr/bin/python3 -c 'import PIL' failed (apt-get install python3-pil)");
        }
        if pyvips.is_empty() {
            println!(
                "SKIP vips in process: python3 -c 'import pyvips' failed (pip install pyvips)"
            );
        }
        let side = w.min(h);

        println!("\n{name}, resized to {w}x{h} RGB");
        println!(
            "{:<22} {:>8} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8}",
            "op",
            "ours ms",
            "vips ms",
            "CLI ms",
            "CLI-copy",
            "PIL ms",
            "ratio",
            "PSNR us",
            "PSNR vip",
            "PSNR PIL"
        );
        let fmt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
        let row = |op: String, ours: f64, key: &str, cli: Option<f64>, psnr: [Option<f64>; 3]| {
            let v = pyvips.get(key).copied();
            println!(
                "{:<22} {:>8.2} {:>9} {:>9} {:>9} {:>8} {:>7} {:>8} {:>8} {:>8}",
                op,
                ours,
                fmt(v, 2),
                fmt(cli, 1),
                fmt(cli.zip(vips_copy).map(|(c, b)| c - b), 1),
                fmt(pil.get(key).copied(), 2),
                fmt(v.map(|v| v / ours), 2),
                fmt(psnr[0], 1),
                fmt(psnr[1], 1),
                fmt(psnr[2], 1),
            );
        };
        let mut work = px.clone();
        for sigma in BLUR_SIGMAS {
            let ours = time_ms(seconds, || {
                work.copy_from_slice(&px);
                filter::gaussian_blur(&mut work, w, h, 3, sigma, &mut scratch, NEVER).unwrap();
            });
            work.copy_from_slice(&px);
            filter::gaussian_blur(&mut work, w, h, 3, sigma, &mut scratch, NEVER).unwrap();
            let want = reference(&px, w as usize, h as usize, f64::from(sigma));
            let key = format!("blur{}", sigma as u32);
            let cli = has_vips
                .then(|| {
                    program_best_ms(
                        "vips",
                        &[
                            s("gaussblur"),
                            v_in.clone(),
                            v_out.clone(),
                            sigma.to_string(),
                        ],
                    )
                })
                .flatten();
            row(
                format!("gaussian_blur {sigma} ({:?})", Method::for_sigma(sigma)),
                ours,
                &key,
                cli,
                [
                    Some(common::psnr(&work, &want)),
                    psnr_of_png(&tmp.join(format!("vips_{key}.png")), &want),
                    psnr_of_png(&tmp.join(format!("pil_{key}.png")), &want),
                ],
            );
        }
        let ours = time_ms(seconds, || {
            work.copy_from_slice(&px);
            filter::unsharp_mask(&mut work, w, h, 3, 1.0, 1.0, &mut scratch, NEVER).unwrap();
        });
        let cli = has_vips
            .then(|| {
                program_best_ms(
                    "vips",
                    &[
                        s("sharpen"),
                        v_in.clone(),
                        v_out.clone(),
                        s("--sigma"),
                        s("1"),
                    ],
                )
            })
            .flatten();
        row(s("unsharp_mask 1, 1"), ours, "sharpen", cli, [None; 3]);
        let mut window = (0.0, 0.0);
        let ours = time_ms(seconds, || {
            window =
                smart::smart_window(&px, w, h, 3, f64::from(side), f64::from(side), &mut resizer)
                    .unwrap();
        });
        let cli = has_vips
            .then(|| {
                program_best_ms(
                    "vips",
                    &[
                        s("smartcrop"),
                        v_in.clone(),
                        v_out.clone(),
                        side.to_string(),
                        side.to_string(),
                        s("--interesting"),
                        s("attention"),
                    ],
                )
            })
            .flatten();
        row(
            format!("smart_window {side}²"),
            ours,
            "smart",
            cli,
            [None; 3],
        );
        println!(
            "  smart window at ({:.0}, {:.0}); vips `copy` of the .v alone: {} ms",
            window.0,
            window.1,
            fmt(vips_copy, 1)
        );

        println!("  kernel vs box path (ms), to place BOX_SIGMA_MIN:");
        for sigma in [2.0f32, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0] {
            let mut t = [0.0; 2];
            for (i, method) in [Method::Kernel, Method::Boxes].into_iter().enumerate() {
                t[i] = time_ms(seconds / 2.0, || {
                    work.copy_from_slice(&px);
                    filter::gaussian_blur_with(
                        method,
                        &mut work,
                        w,
                        h,
                        3,
                        sigma,
                        &mut scratch,
                        NEVER,
                    )
                    .unwrap();
                });
            }
            println!(
                "    sigma {sigma:>4}: kernel {:>7.2}  boxes {:>7.2}",
                t[0], t[1]
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
