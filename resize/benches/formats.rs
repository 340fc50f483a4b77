//! WebP and AVIF output (#18) against libvips, side by side in one run, one core: a fit in
//! 400x400 of the shared photos, JPEG in, WebP or AVIF q80 out; throughput, and quality at
//! equal bytes.
//!
//! Run: `cargo bench --workspace --bench formats` (options after `--`: `--seconds N` of
//! timing per side and row, default 1; `--rounds N`, default 3; `--photos a.jpg,b.jpg`;
//! `--avif-speeds 6,8,10` for one AVIF row per rav1e speed, default the node's, `none` for
//! WebP only; `--box N` for a fit in NxN instead of 400x400; `--jpeg-margin M` to decode our
//! side at another DCT scale (`JPEG_SHRINK_MARGIN`); `--webp-settings` for the libwebp
//! settings table instead, see [`webp_settings`]). The process pins itself to CPU 0; python
//! runs under `taskset -c 0` with `VIPS_CONCURRENCY=1`.
//!
//! What each column includes:
//! - ours: `Pipeline::process` from the JPEG bytes in memory to the encoded bytes, one reused
//!   pipeline (as a worker thread has), `q=80`, everything else default (AVIF at the node's
//!   default speed, floored by `avif_speed_min` of the output size).
//! - libvips: pyvips (cffi over the system libvips, operation cache off) in one `python3`
//!   process, timed inside python: `thumbnail_buffer(400, height=400)` (shrink-on-load) then
//!   `webpsave_buffer(Q=80)` or `heifsave_buffer(Q=80, compression='av1')` (libheif over
//!   libaom), defaults otherwise.
//! - Timing: the two sides take turns `--rounds` times (each turn best of 3 means over a
//!   third of its share of `--seconds`) and each side keeps its best turn, so a slow spell
//!   of the machine does not land on one side only. Each round's own ratio (libvips' turn
//!   over ours, back to back) is printed too, min / median / max: how far one turn of this
//!   machine's noise moves the ratio; and from 5 rounds their geometric mean with a 95%
//!   confidence interval ([`geometric_mean_ci95`]), which takes the rounds as independent
//!   samples: a slow spell longer than a round makes the interval too narrow, so read it
//!   beside the spread and the lag-1 autocorrelation printed with the rounds' ratios.
//! - PSNR: every output decoded by libvips (`new_from_buffer`, so both sides' files go
//!   through the same decoders) against the float reference (full decode of the photo with
//!   `image`, Lanczos3 in f64 to the output's size: `tests/common`), RGB, dB.
//! - "ours at vips' bytes": our `q` swept (`SWEEP`), and our PSNR interpolated linearly in
//!   log(bytes) at the byte size of libvips' q80 file: rate-distortion compared at equal
//!   size, which is what the issue's "PSNR at libvips' byte size" means. "q for vips' bytes"
//!   is the interpolated quality.
//! - "ratio if only decode and encode cost": libvips' time over our JPEG decode plus our
//!   encode (best of 5 calls each, not alternated, so as noisy as one turn), the ratio we
//!   would reach if the resize, colour and every copy were free: with this decoder and
//!   encoder, the ceiling of this comparison.
//!
//! Each side is skipped with a message when its program or module is missing.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::collections::HashMap;
use std::path::Path;

use harness::{flat_json, pin_to_cpu0, run_python, time_ms};
use tessera_resize::{
    Fit, FormatRequest, Limits, Options, OutputFormat, Pipeline, JPEG_SHRINK_MARGIN,
};

const PHOTOS: [&str; 3] = ["seeding-256k.jpg", "aitzgorri-256k.jpg", "aitzgorri-1m.jpg"];
/// The default box of the fit (`--box`).
const BOX_PX: u32 = 400;
const QUALITY: u8 = 80;
/// Our qualities swept for the rate-distortion curve.
const SWEEP: [u8; 9] = [40, 50, 60, 70, 75, 80, 85, 90, 95];

/// The python side. `time <photo> <outdir> <seconds> <box>`: times libvips' WebP and AVIF
/// q80 of a fit in box x box,
/// writes its outputs as `vips.webp` / `vips.avif` in outdir and prints `{"webp": ms,
/// "avif": ms}`. `decode <file>...`: writes each file's RGB pixels next to it as `.rgb`
/// (raw, 8-bit, width and height in the name's sibling `.size`).
const PY: &str = r#"
import sys, time, json
import pyvips
pyvips.cache_set_max(0)
mode = sys.argv[1]
if mode == 'time':
    src, outdir, secs, box = sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
    buf = open(src, 'rb').read()
    def webp(): return pyvips.Image.thumbnail_buffer(buf, box, height=box).webpsave_buffer(Q=80)
    def avif(): return pyvips.Image.thumbnail_buffer(buf, box, height=box).heifsave_buffer(Q=80, compression='av1')
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
    run_python("python3", PY, args, "libvips")
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

/// The geometric mean of the rounds' ratios with its 95% confidence interval (Student's t
/// on the logarithms). A speed ratio is a quotient, so its logarithm
/// is what averages symmetrically; the interval says whether a run this noisy separates
/// the mean ratio from a goal such as 1.5. None under 5 rounds.
fn geometric_mean_ci95(ratios: &[f64]) -> Option<(f64, f64, f64)> {
    let n = ratios.len();
    if n < 5 {
        return None;
    }
    let (logs, mean) = logs_and_mean(ratios);
    let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    // Student's t at 97.5% for n - 1 degrees of freedom, by its Cornish-Fisher expansion
    // around the normal quantile (within 0.3% of the tables from 4 degrees up).
    let (z, df) = (1.959_964_f64, (n - 1) as f64);
    let t = z
        + (z.powi(3) + z) / (4.0 * df)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df.powi(2))
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * df.powi(3));
    let half = t * (var / n as f64).sqrt();
    Some((mean.exp(), (mean - half).exp(), (mean + half).exp()))
}

/// The lag-1 autocorrelation of the rounds' log ratios, or None under 5 rounds: near 0 when
/// consecutive rounds vary independently, as [`geometric_mean_ci95`] assumes; well above 0
/// when slow spells outlast a round, and the interval is then too narrow.
fn lag1_autocorrelation(ratios: &[f64]) -> Option<f64> {
    if ratios.len() < 5 {
        return None;
    }
    let (logs, mean) = logs_and_mean(ratios);
    let var: f64 = logs.iter().map(|l| (l - mean).powi(2)).sum();
    let cov: f64 = logs.windows(2).map(|w| (w[0] - mean) * (w[1] - mean)).sum();
    (var > 0.0).then(|| cov / var)
}

/// The ratios' natural logarithms and their mean (a non-empty slice).
fn logs_and_mean(ratios: &[f64]) -> (Vec<f64>, f64) {
    let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
    let mean = logs.iter().sum::<f64>() / logs.len() as f64;
    (logs, mean)
}

/// The value of `--name` in the command line, parsed.
fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = arg(&args, "--seconds").unwrap_or(1.0);
    let rounds: u32 = arg::<u32>(&args, "--rounds").unwrap_or(3).max(1);
    let photos: Vec<String> = arg::<String>(&args, "--photos")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| PHOTOS.iter().map(|s| (*s).to_owned()).collect());
    // AVIF rows, one per rav1e speed (the node's default unless given); each is floored
    // by `avif_speed_min` of the output size as in the node.
    let avif_speeds: Vec<u8> = arg::<String>(&args, "--avif-speeds")
        .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
        .unwrap_or_else(|| vec![Options::default().avif_speed]);
    let margin: Option<f64> = arg(&args, "--jpeg-margin");
    let box_px: u32 = arg(&args, "--box").unwrap_or(BOX_PX);
    println!("pinned to CPU 0: {}", pin_to_cpu0());
    let Some(dir) = common::photos_dir() else {
        return;
    };
    let out_dir = std::env::temp_dir().join(format!("tessera-formats-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("temp dir");

    let mut pipeline = Pipeline::new(Limits::default());
    if let Some(margin) = margin {
        pipeline.set_jpeg_shrink_margin(margin);
        println!("JPEG shrink-on-load margin {margin} (the node's: {JPEG_SHRINK_MARGIN})");
    }
    if args.iter().any(|a| a == "--webp-settings") {
        webp_settings(&dir, &photos, seconds, &mut pipeline);
        return;
    }
    println!(
        "\nfit {box_px}x{box_px}, q{QUALITY}, one core; ms per image, best of {rounds} rounds \
         alternating the two sides; PSNR (dB) against the float reference"
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
    for name in &photos {
        let Ok(photo) = std::fs::read(dir.join(name)) else {
            eprintln!("SKIP {name}: not in {}", dir.display());
            continue;
        };
        let src = dir.join(name);
        let rows: Vec<(OutputFormat, &str, Option<u8>)> =
            std::iter::once((OutputFormat::WebP, "webp", None))
                .chain(
                    avif_speeds
                        .iter()
                        .map(|&speed| (OutputFormat::Avif, "avif", Some(speed))),
                )
                .collect();
        let options = |format: OutputFormat, speed: Option<u8>, quality: u8| Options {
            width: Some(box_px),
            height: Some(box_px),
            fit: Fit::Contain,
            format: FormatRequest::Fixed(format),
            quality,
            avif_speed: speed.unwrap_or(Options::default().avif_speed),
            ..Options::default()
        };
        // Timing: the sides take turns, `rounds` times, and each keeps its best, so a
        // slow spell of the machine (this VM has them) lands on both sides alike.
        let mut vips: HashMap<String, f64> = HashMap::new();
        let mut ours = vec![f64::MAX; rows.len()];
        // Each round's own ratio (libvips' turn over ours, taken back to back), per row.
        let mut round_ratios: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
        for _ in 0..rounds {
            let round = python(&[
                "time",
                src.to_str().expect("utf-8 path"),
                out_dir.to_str().expect("utf-8 path"),
                &(seconds / f64::from(rounds)).to_string(),
                &box_px.to_string(),
            ])
            .map(|text| flat_json(&text))
            .unwrap_or_default();
            for (k, v) in &round {
                let best = vips.entry(k.clone()).or_insert(f64::MAX);
                *best = best.min(*v);
            }
            for ((best, ratios), &(format, ext, speed)) in
                ours.iter_mut().zip(&mut round_ratios).zip(&rows)
            {
                let at_q80 = options(format, speed, QUALITY);
                let ms = time_ms(seconds / f64::from(rounds), || {
                    pipeline.process(&photo, &at_q80).expect("our encode");
                });
                *best = best.min(ms);
                ratios.extend(round.get(ext).map(|v| v / ms));
            }
        }
        for ((&(format, ext, speed), ours_ms), mut ratios) in
            rows.iter().zip(ours).zip(round_ratios)
        {
            let label = speed.map_or(ext.to_owned(), |s| format!("{ext} s{s}"));
            let at_q80 = options(format, speed, QUALITY);
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
                let out = pipeline
                    .process(&photo, &options(format, speed, q))
                    .expect("our encode");
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
            let [decode, resize, encode] = stages.map(|us| us as f64 / 1000.0);
            // The ratio if everything but the JPEG decode and the encode cost nothing.
            let bound = vips_ms.map(|v| v / (decode + encode));
            let mean = geometric_mean_ci95(&ratios).map_or("-".to_owned(), |(g, lo, hi)| {
                format!("{g:.3} (95% CI {lo:.3}-{hi:.3})")
            });
            let in_order: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
            let r1 = lag1_autocorrelation(&ratios).map_or("-".to_owned(), |r| format!("{r:.2}"));
            ratios.sort_by(f64::total_cmp);
            let spread = match (ratios.first(), ratios.last()) {
                (Some(low), Some(high)) => {
                    format!("{low:.2} / {:.2} / {high:.2}", ratios[ratios.len() / 2])
                }
                _ => "-".to_owned(),
            };
            println!(
                "    ours: decode {decode:.2} / resize {resize:.2} / encode {encode:.2} ms \
                 (ratio if only decode and encode cost: {}; each round's own ratio, min / \
                 median / max: {spread}, geometric mean {mean}); {}",
                fmt(bound, 2),
                curve_text.join(", ")
            );
            println!(
                "    rounds' ratios in time order (lag-1 autocorrelation of their logarithms \
                 {r1}): {}",
                in_order.join(" ")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// libwebp's settings the node does not use, one at a time against its own (`method` 4,
/// `sns_strength` 50, `segments` 4, `filter_strength` 60: libwebp's and libvips' defaults),
/// on our own q80 thumbnail of each photo (kept as RGB through a lossless PNG): the encode
/// time at q80, and PSNR and SSIM against that thumbnail interpolated at the byte size of
/// the node's q80 file. `--webp-settings` prints this instead of the comparison.
fn webp_settings(dir: &Path, photos: &[String], seconds: f64, pipeline: &mut Pipeline) {
    type Tweak = fn(&mut libwebp_sys::WebPConfig);
    let settings: [(&str, Tweak); 11] = [
        ("the node's (method 4)", |_| {}),
        ("method 3", |c| c.method = 3),
        ("method 2", |c| c.method = 2),
        ("segments 1", |c| c.segments = 1),
        ("segments 2", |c| c.segments = 2),
        ("sns_strength 25", |c| c.sns_strength = 25),
        ("filter_strength 30", |c| c.filter_strength = 30),
        ("preprocessing 1", |c| c.preprocessing = 1),
        ("pass 2", |c| c.pass = 2),
        ("autofilter", |c| c.autofilter = 1),
        ("method 2 + segments 1", |c| {
            c.method = 2;
            c.segments = 1;
        }),
    ];
    println!("\nlibwebp settings on our q{QUALITY} thumbnail; one core; quality at the node's q{QUALITY} bytes");
    for name in photos {
        let Ok(photo) = std::fs::read(dir.join(name)) else {
            eprintln!("SKIP {name}: not in {}", dir.display());
            continue;
        };
        let png = pipeline
            .process(
                &photo,
                &Options {
                    width: Some(BOX_PX),
                    height: Some(BOX_PX),
                    fit: Fit::Contain,
                    format: FormatRequest::Fixed(OutputFormat::Png),
                    ..Options::default()
                },
            )
            .expect("our thumbnail");
        let thumb = common::decode_back(&png.bytes).to_rgb8();
        let (w, h) = thumb.dimensions();
        let px = thumb.into_raw();
        let node_bytes = webp::encode(&px, w, h, f32::from(QUALITY), |_| {}).len() as f64;
        println!("{name} ({w}x{h}, {node_bytes} B at q{QUALITY})");
        println!(
            "  {:<24} {:>10} {:>9} {:>8}",
            "setting", "encode ms", "PSNR dB", "SSIM"
        );
        for (label, tweak) in settings {
            let ms = time_ms(seconds, || {
                webp::encode(&px, w, h, f32::from(QUALITY), tweak);
            });
            let (mut psnrs, mut ssims) = (Vec::new(), Vec::new());
            for q in SWEEP {
                let bytes = webp::encode(&px, w, h, f32::from(q), tweak);
                let back = webp::decode(&bytes);
                let x = (bytes.len() as f64).ln();
                psnrs.push((x, common::psnr(&px, &back)));
                ssims.push((x, webp::ssim_luma(&px, &back, w as usize, h as usize)));
            }
            let at = |curve: &[(f64, f64)], p: usize| {
                interpolate(curve, node_bytes.ln()).map_or("-".to_owned(), |v| format!("{v:.p$}"))
            };
            println!(
                "  {label:<24} {ms:>10.2} {:>9} {:>8}",
                at(&psnrs, 3),
                at(&ssims, 5)
            );
        }
    }
}

/// libwebp called directly, for [`webp_settings`].
mod webp {
    use libwebp_sys as ffi;

    /// Lossy WebP of RGB `px` at `quality`, libwebp's defaults changed by `tweak`.
    pub fn encode(
        px: &[u8],
        w: u32,
        h: u32,
        quality: f32,
        tweak: fn(&mut ffi::WebPConfig),
    ) -> Vec<u8> {
        let mut config = ffi::WebPConfig::new().expect("config");
        config.quality = quality;
        tweak(&mut config);
        let mut picture = ffi::WebPPicture::new().expect("picture");
        picture.use_argb = 0;
        picture.width = w as i32;
        picture.height = h as i32;
        let mut writer = std::mem::MaybeUninit::<ffi::WebPMemoryWriter>::uninit();
        // SAFETY: `px` holds h rows of 3w bytes; the writer is initialised before use and
        // cleared after; the picture is freed.
        unsafe {
            assert!(ffi::WebPPictureImportRGB(&mut picture, px.as_ptr(), (w * 3) as i32) != 0);
            ffi::WebPMemoryWriterInit(writer.as_mut_ptr());
            picture.writer = Some(ffi::WebPMemoryWrite);
            picture.custom_ptr = writer.as_mut_ptr().cast();
            assert!(ffi::WebPValidateConfig(&config) != 0);
            assert!(ffi::WebPEncode(&config, &mut picture) != 0);
            let mut writer = writer.assume_init();
            let out = std::slice::from_raw_parts(writer.mem, writer.size).to_vec();
            ffi::WebPMemoryWriterClear(&mut writer);
            ffi::WebPPictureFree(&mut picture);
            out
        }
    }

    /// RGB pixels of a WebP file (libwebp's decoder, libvips' too).
    pub fn decode(bytes: &[u8]) -> Vec<u8> {
        let (mut w, mut h) = (0, 0);
        // SAFETY: libwebp returns null or a buffer of w*h*3 bytes, freed with WebPFree.
        unsafe {
            let p = ffi::WebPDecodeRGB(bytes.as_ptr(), bytes.len(), &mut w, &mut h);
            assert!(!p.is_null(), "our own WebP decodes");
            let out = std::slice::from_raw_parts(p, (w * h * 3) as usize).to_vec();
            ffi::WebPFree(p.cast());
            out
        }
    }

    /// Mean SSIM of the BT.601 luma of two RGB images, 8x8 windows every 4 pixels
    /// (Wang et al.'s constants): the check that a setting does not buy PSNR with what
    /// the eye sees, which is what `sns_strength` and `segments` trade.
    pub fn ssim_luma(a: &[u8], b: &[u8], w: usize, h: usize) -> f64 {
        let luma = |p: &[u8]| -> Vec<f64> {
            p.chunks_exact(3)
                .map(|c| {
                    0.299 * f64::from(c[0]) + 0.587 * f64::from(c[1]) + 0.114 * f64::from(c[2])
                })
                .collect()
        };
        let (la, lb) = (luma(a), luma(b));
        let (c1, c2) = ((0.01f64 * 255.0).powi(2), (0.03f64 * 255.0).powi(2));
        let (mut sum, mut n) = (0.0, 0u32);
        for y in (0..h.saturating_sub(8)).step_by(4) {
            for x in (0..w.saturating_sub(8)).step_by(4) {
                let at = |l: &[f64], i: usize| l[(y + i / 8) * w + x + i % 8];
                let mean = |l: &[f64]| (0..64).map(|i| at(l, i)).sum::<f64>() / 64.0;
                let (ma, mb) = (mean(&la), mean(&lb));
                let (mut va, mut vb, mut cov) = (0.0, 0.0, 0.0);
                for i in 0..64 {
                    let (p, q) = (at(&la, i) - ma, at(&lb, i) - mb);
                    va += p * p;
                    vb += q * q;
                    cov += p * q;
                }
                let (va, vb, cov) = (va / 63.0, vb / 63.0, cov / 63.0);
                sum += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                    / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                n += 1;
            }
        }
        sum / f64::from(n.max(1))
    }
}
