//! WebP and AVIF output (#18) against libvips, side by side in one run, one core: a fit in
//! 400x400 of the shared photos, JPEG in, WebP or AVIF q80 out; throughput, and quality at
//! equal bytes.
//!
//! Run: `cargo bench --workspace --bench formats` (options after `--`: `--seconds N` per
//! timing, default 1; `--photos a.jpg,b.jpg`; `--avif-speeds 6,8,10` for one AVIF row per
//! rav1e speed, default the node's 8). The process pins itself to CPU 0; python runs
//! under `taskset -c 0` with `VIPS_CONCURRENCY=1`.
//!
//! What each column includes:
//! - ours: `Pipeline::process` from the JPEG bytes in memory to the encoded bytes, one reused
//!   pipeline (as a worker thread has), `q=80`, everything else default (AVIF at the speed the
//!   node uses: `avif_speed` 8, floored by `avif_speed_min` of the output size); best of 3
//!   means over a third of `--seconds` each.
//! - libvips: pyvips (cffi over the system libvips, operation cache off) in one `python3`
//!   process, timed inside python: `thumbnail_buffer(400, height=400)` (shrink-on-load) then
//!   `webpsave_buffer(Q=80)` or `heifsave_buffer(Q=80, compression='av1')` (libheif over
//!   libaom), defaults otherwise; best of 3 means.
//! - PSNR: every output decoded by libvips (`new_from_buffer`, so both sides' files go
//!   through the same decoders) against the float reference (full decode of the photo with
//!   `image`, f32 Lanczos3 to the output's size), RGB, dB.
//! - "ours at vips' bytes": our `q` swept (`SWEEP`), and our PSNR interpolated linearly in
//!   log(bytes) at the byte size of libvips' q80 file: rate-distortion compared at equal
//!   size, which is what the issue's "PSNR at libvips' byte size" means. "q for vips' bytes"
//!   is the interpolated quality.
//!
//! Each side is skipped with a message when its program or module is missing.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use harness::{flat_json, pin_to_cpu0, python_script, time_ms};
use tessera_resize::{Fit, FormatRequest, Limits, Options, OutputFormat, Pipeline};

const PHOTOS: [&str; 3] = ["seeding-256k.jpg", "aitzgorri-256k.jpg", "aitzgorri-1m.jpg"];
const BOX_PX: u32 = 400;
const QUALITY: u8 = 80;
/// Our qualities swept for the rate-distortion curve.
const SWEEP: [u8; 9] = [40, 50, 60, 70, 75, 80, 85, 90, 95];

/// The python side. `time <photo> <outdir> <seconds>`: times libvips' WebP and AVIF q80,
/// writes its outputs as `vips.webp` / `vips.avif` in outdir and prints `{"webp": ms,
/// "avif": ms}`. `decode <file>...`: writes each file's RGB pixels next to it as `.rgb`
/// (raw, 8-bit, width and height in the name's sibling `.size`).
const PY: &str = r#"
import sys, time, json
import pyvips
pyvips.cache_set_max(0)
mode = sys.argv[1]
if mode == 'time':
    src, outdir, secs = sys.argv[2], sys.argv[3], float(sys.argv[4])
    buf = open(src, 'rb').read()
    def webp(): return pyvips.Image.thumbnail_buffer(buf, 400, height=400).webpsave_buffer(Q=80)
    def avif(): return pyvips.Image.thumbnail_buffer(buf, 400, height=400).heifsave_buffer(Q=80, compression='av1')
    res = {}
    for name, f in (('webp', webp), ('avif', avif)):
        open(outdir + '/vips.' + name, 'wb').write(f())
        res[name] = bench(f)
    print(json.dumps(res))
else:
    for path in sys.argv[2:]:
        im = pyvips.Image.new_from_buffer(open(path, 'rb').read(), '')
        if im.hasalpha(): im = im.flatten()
        # 10-bit AVIF decodes as 16-bit rgb16: to 8-bit sRGB, as a browser displays it.
        im = im.colourspace('srgb')
        if im.format != 'uchar': im = im.cast('uchar')
        open(path + '.rgb', 'wb').write(im.extract_band(0, n=3).write_to_memory())
        open(path + '.size', 'w').write('%d %d' % (im.width, im.height))
"#;

fn python(args: &[&str]) -> Option<String> {
    let out = Command::new("taskset")
        .args(["-c", "0", "python3", "-c", &python_script(PY)])
        .args(args)
        .env("VIPS_CONCURRENCY", "1")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "SKIP libvips: python failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// PSNR of each file against the fit's float reference, decoded by libvips.
fn psnr_of(files: &[&Path], photo: &[u8]) -> Vec<Option<f64>> {
    let args: Vec<&str> = std::iter::once("decode")
        .chain(files.iter().map(|p| p.to_str().expect("utf-8 path")))
        .collect();
    if python(&args).is_none() {
        return vec![None; files.len()];
    }
    let (sw, sh, src) = common::decode_rgb8(photo);
    let mut references: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    files
        .iter()
        .map(|file| {
            let size = std::fs::read_to_string(
                file.with_extension(format!("{}.size", file.extension()?.to_str()?)),
            )
            .ok()?;
            let (w, h) = size.split_once(' ')?;
            let (w, h): (u32, u32) = (w.parse().ok()?, h.parse().ok()?);
            let pixels =
                std::fs::read(file.with_extension(format!("{}.rgb", file.extension()?.to_str()?)))
                    .ok()?;
            let reference = references
                .entry((w, h))
                .or_insert_with(|| common::float_reference(sw, sh, &src, w, h));
            Some(common::psnr(&pixels, reference))
        })
        .collect()
}

/// Linear interpolation of `y` at `x` on points sorted by `x` (None outside them).
fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    points.windows(2).find_map(|w| {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        (x0 <= x && x <= x1).then(|| {
            if x1 == x0 {
                y0
            } else {
                y0 + (y1 - y0) * (x - x0) / (x1 - x0)
            }
        })
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(1.0);
    let photos: Vec<String> = args
        .iter()
        .position(|a| a == "--photos")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| PHOTOS.iter().map(|s| (*s).to_owned()).collect());
    // AVIF rows, one per rav1e speed (the node's default, 8, unless given); each is
    // floored by `avif_speed_min` of the output size as in the node.
    let avif_speeds: Vec<u8> = args
        .iter()
        .position(|a| a == "--avif-speeds")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![Options::default().avif_speed]);
    println!("pinned to CPU 0: {}", pin_to_cpu0());
    let Some(dir) = common::photos_dir() else {
        return;
    };
    let out_dir = std::env::temp_dir().join(format!("tessera-formats-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("temp dir");

    println!(
        "\nfit {BOX_PX}x{BOX_PX}, q{QUALITY}, one core; ms per image; PSNR (dB) against the float reference"
    );
    println!(
        "{:<22} {:<8} {:>8} {:>8} {:>6} {:>8} {:>8} {:>7} {:>7} {:>9} {:>8}",
        "photo",
        "fmt",
        "ours ms",
        "vips ms",
        "ratio",
        "ours B",
        "vips B",
        "ours dB",
        "vips dB",
        "ours@vB",
        "q@vB"
    );
    let mut pipeline = Pipeline::new(Limits::default());
    for name in &photos {
        let Ok(photo) = std::fs::read(dir.join(name)) else {
            eprintln!("SKIP {name}: not in {}", dir.display());
            continue;
        };
        let src = dir.join(name);
        let vips: HashMap<String, f64> = python(&[
            "time",
            src.to_str().expect("utf-8 path"),
            out_dir.to_str().expect("utf-8 path"),
            &seconds.to_string(),
        ])
        .map(|text| flat_json(&text))
        .unwrap_or_default();
        let rows = std::iter::once((OutputFormat::WebP, "webp", None)).chain(
            avif_speeds
                .iter()
                .map(|&speed| (OutputFormat::Avif, "avif", Some(speed))),
        );
        for (format, ext, speed) in rows {
            let options = |quality: u8| Options {
                width: Some(BOX_PX),
                height: Some(BOX_PX),
                fit: Fit::Contain,
                format: FormatRequest::Fixed(format),
                quality,
                avif_speed: speed.unwrap_or(Options::default().avif_speed),
                ..Options::default()
            };
            let label = speed.map_or(ext.to_owned(), |s| format!("{ext} s{s}"));
            let at_q80 = options(QUALITY);
            let ours_ms = time_ms(seconds, || {
                pipeline.process(&photo, &at_q80).expect("our encode");
            });
            // Our stages, best of 5 calls each.
            let mut stages = [u64::MAX; 3];
            for _ in 0..5 {
                let t = pipeline
                    .process(&photo, &at_q80)
                    .expect("our encode")
                    .timings;
                for (best, us) in stages
                    .iter_mut()
                    .zip([t.decode_us, t.resize_us, t.encode_us])
                {
                    *best = (*best).min(us);
                }
            }
            // The sweep: one file per quality.
            let mut files = Vec::new();
            let mut sizes = Vec::new();
            for q in SWEEP {
                let out = pipeline.process(&photo, &options(q)).expect("our encode");
                let path = out_dir.join(format!("ours-q{q}.{ext}"));
                std::fs::write(&path, &out.bytes).expect("write output");
                sizes.push(out.bytes.len() as f64);
                files.push(path);
            }
            let vips_file = out_dir.join(format!("vips.{ext}"));
            let vips_bytes = std::fs::metadata(&vips_file).map(|m| m.len() as f64).ok();
            let mut all: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
            if vips_bytes.is_some() {
                all.push(&vips_file);
            }
            let scores = psnr_of(&all, &photo);
            let q80 = SWEEP.iter().position(|&q| q == QUALITY).expect("q80 swept");
            let ours_db = scores[q80];
            let vips_db = vips_bytes.and_then(|_| scores.last().copied().flatten());
            // Bytes grow with q; interpolate PSNR and q in log(bytes).
            let curve: Vec<(f64, f64)> = sizes
                .iter()
                .zip(&scores)
                .filter_map(|(b, s)| Some((b.ln(), (*s)?)))
                .collect();
            let q_curve: Vec<(f64, f64)> = sizes
                .iter()
                .zip(SWEEP)
                .map(|(b, q)| (b.ln(), f64::from(q)))
                .collect();
            let at_vips = vips_bytes.and_then(|b| interpolate(&curve, b.ln()));
            let q_at_vips = vips_bytes.and_then(|b| interpolate(&q_curve, b.ln()));
            let vips_ms = vips.get(ext).copied();
            let fmt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
            println!(
                "{:<22} {:<8} {:>8.2} {:>8} {:>6} {:>8} {:>8} {:>7} {:>7} {:>9} {:>8}",
                name,
                label,
                ours_ms,
                fmt(vips_ms, 2),
                fmt(vips_ms.map(|v| v / ours_ms), 2),
                sizes[q80],
                fmt(vips_bytes, 0),
                fmt(ours_db, 2),
                fmt(vips_db, 2),
                fmt(at_vips, 2),
                fmt(q_at_vips, 1),
            );
            let curve_text: Vec<String> = SWEEP
                .iter()
                .zip(&sizes)
                .zip(&scores)
                .map(|((q, b), s)| format!("q{q} {b:.0} B {}", fmt(*s, 2)))
                .collect();
            println!(
                "    ours: decode {:.2} / resize {:.2} / encode {:.2} ms; {}",
                stages[0] as f64 / 1000.0,
                stages[1] as f64 / 1000.0,
                stages[2] as f64 / 1000.0,
                curve_text.join(", ")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
