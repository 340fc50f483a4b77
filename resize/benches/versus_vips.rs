//! Tessera's pipeline against `vipsthumbnail` (libvips), one core, same photos, same run.
//!
//! Run: `cargo bench -p tessera-resize --bench versus_vips` (options after `--`:
//! `--seconds N` per measurement, default 3; `--margin M` overrides the JPEG shrink-on-load
//! margin). The process pins itself to CPU 0 with `sched_setaffinity`, and runs vips as
//! `taskset -c 0 vipsthumbnail` with `VIPS_CONCURRENCY=1` in batch mode over many copies of
//! each photo in a temporary folder, so its process start-up is amortised. Each side is
//! measured three times and the best run is kept.
//!
//! Task: fit in 400x400, JPEG q80. Quality: PSNR of each output against a float reference
//! (full-resolution decode with `image`, f32 Lanczos3 to the output's size). vips is skipped
//! with a message when `/usr/bin/vipsthumbnail` is not installed.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_resize::{Fit, Limits, Options, Pipeline};

use harness::pin_to_cpu0;

const PHOTOS: [&str; 4] = [
    "seeding-256k.jpg",
    "aitzgorri-256k.jpg",
    "aitzgorri-1m.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
];

fn children_cpu() -> Duration {
    // SAFETY: `usage` is a valid, writable rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

struct Measured {
    per_s: f64,
    cpu_ms: f64,
    output: Vec<u8>,
    /// Mean decode, resize and encode wall time, ms (Tessera only).
    stages_ms: [f64; 3],
}

fn bench_tessera(bytes: &[u8], options: &Options, seconds: f64, margin: Option<f64>) -> Measured {
    let mut pipeline = Pipeline::new(Limits::default());
    if let Some(m) = margin {
        pipeline.set_jpeg_shrink_margin(m);
    }
    for _ in 0..3 {
        pipeline.process(bytes, options).unwrap();
    }
    let mut best = f64::MAX;
    let mut best_cpu = 0.0;
    let mut best_stages = [0.0; 3];
    let mut output = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        let (mut n, mut cpu_us, mut stages_us) = (0u64, 0u64, [0u64; 3]);
        while start.elapsed().as_secs_f64() < seconds / 3.0 {
            let out = pipeline.process(bytes, options).unwrap();
            cpu_us += out.timings.cpu_us;
            stages_us[0] += out.timings.decode_us;
            stages_us[1] += out.timings.resize_us;
            stages_us[2] += out.timings.encode_us;
            n += 1;
            output = out.bytes;
        }
        let per = start.elapsed().as_secs_f64() / n as f64;
        if per < best {
            best = per;
            best_cpu = cpu_us as f64 / n as f64 / 1000.0;
            best_stages = stages_us.map(|s| s as f64 / n as f64 / 1000.0);
        }
    }
    Measured {
        per_s: 1.0 / best,
        cpu_ms: best_cpu,
        output,
        stages_ms: best_stages,
    }
}

fn bench_vips(
    vips: &Path,
    bytes: &[u8],
    name: &str,
    seconds: f64,
    tessera_per_s: f64,
) -> Option<Measured> {
    let dir = std::env::temp_dir().join(format!("tessera-versus-vips-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    // Enough copies for about a third of the time budget per run at half Tessera's speed.
    let copies = ((tessera_per_s / 2.0 * seconds / 3.0) as usize).clamp(10, 400);
    let files: Vec<PathBuf> = (0..copies)
        .map(|i| {
            let p = dir.join(format!("copy{i:04}.jpg"));
            std::fs::write(&p, bytes).unwrap();
            p
        })
        .collect();
    let mut best: Option<(f64, f64)> = None;
    for _ in 0..3 {
        let cpu_before = children_cpu();
        let start = Instant::now();
        let status = Command::new("taskset")
            .args(["-c", "0"])
            .arg(vips)
            .args(["-s", "400x400", "-o", "%s_t.jpg[Q=80]"])
            .args(&files)
            .env("VIPS_CONCURRENCY", "1")
            .status()
            .ok()?;
        let wall = start.elapsed().as_secs_f64();
        let cpu = (children_cpu() - cpu_before).as_secs_f64();
        if !status.success() {
            eprintln!("vipsthumbnail failed on {name}: {status}");
            return None;
        }
        let per = wall / copies as f64;
        if best.is_none_or(|(b, _)| per < b) {
            best = Some((per, cpu / copies as f64 * 1000.0));
        }
    }
    let output = std::fs::read(dir.join("copy0000_t.jpg")).ok()?;
    let _ = std::fs::remove_dir_all(&dir);
    let (per, cpu_ms) = best?;
    Some(Measured {
        per_s: 1.0 / per,
        cpu_ms,
        output,
        stages_ms: [0.0; 3],
    })
}

unsafe extern "C-unwind" fn unwind_on_error(cinfo: &mut mozjpeg_sys::jpeg_common_struct) {
    let _ = cinfo;
    std::panic::resume_unwind(Box::new("libjpeg error"));
}

/// The entropy-decoding bound: CPU time of `jpeg_read_coefficients` alone (Huffman decoding
/// of every scan into DCT coefficients, no IDCT, upsampling or colour conversion), ms.
fn entropy_bound_ms(bytes: &[u8], seconds: f64) -> f64 {
    use mozjpeg_sys as ffi;
    let once = || {
        // SAFETY: standard libjpeg decompression sequence on a valid in-memory JPEG; errors
        // unwind out of `unwind_on_error` (the photos are valid, so none is expected).
        unsafe {
            let mut err: ffi::jpeg_error_mgr = std::mem::zeroed();
            ffi::jpeg_std_error(&mut err);
            err.error_exit = Some(unwind_on_error);
            let mut cinfo: ffi::jpeg_decompress_struct = std::mem::zeroed();
            cinfo.common.err = &mut err;
            ffi::jpeg_create_decompress(&mut cinfo);
            ffi::jpeg_mem_src(&mut cinfo, bytes.as_ptr(), bytes.len() as _);
            ffi::jpeg_read_header(&mut cinfo, 1);
            let coefficients = ffi::jpeg_read_coefficients(&mut cinfo);
            std::hint::black_box(coefficients);
            ffi::jpeg_finish_decompress(&mut cinfo);
            ffi::jpeg_destroy_decompress(&mut cinfo);
        }
    };
    once();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed().as_secs_f64() < seconds / 6.0 {
            once();
            n += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1000.0 / f64::from(n));
    }
    best
}

fn psnr_vs_reference(src: &(u32, u32, Vec<u8>), output: &[u8]) -> (f64, u32, u32) {
    let (ow, oh, ours) = common::decode_rgb8(output);
    let reference = common::float_reference(src.0, src.1, &src.2, ow, oh);
    (common::psnr(&ours, &reference), ow, oh)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
    };
    let seconds = arg("--seconds").unwrap_or(3.0);
    let margin = arg("--margin");

    let Some(dir) = common::photos_dir() else {
        return;
    };
    if pin_to_cpu0() {
        println!("pinned to CPU 0 (sched_setaffinity)");
    } else {
        println!("WARNING: could not pin to CPU 0; numbers are not per core");
    }
    let vips = Path::new("/usr/bin/vipsthumbnail");
    let vips = vips.exists().then_some(vips);
    if vips.is_none() {
        println!(
            "SKIP vips: /usr/bin/vipsthumbnail is not installed (apt-get install libvips-tools)"
        );
    }
    if let Some(m) = margin {
        println!("JPEG shrink-on-load margin overridden: {m}");
    }
    let options = Options {
        width: Some(400),
        height: Some(400),
        fit: Fit::Contain,
        quality: 80,
        ..Options::default()
    };

    let mut stage_rows = Vec::new();
    println!(
        "\n{:<36} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>9}",
        "photo (fit 400x400, JPEG q80)",
        "tessera/s",
        "cpu ms",
        "vips/s",
        "cpu ms",
        "ratio",
        "PSNR T",
        "PSNR V",
        "size T",
        "size V"
    );
    for name in PHOTOS {
        let Ok(bytes) = std::fs::read(dir.join(name)) else {
            println!("{name}: missing, skipped");
            continue;
        };
        let t = bench_tessera(&bytes, &options, seconds, margin);
        let v = vips.and_then(|vips| bench_vips(vips, &bytes, name, seconds, t.per_s));
        let src = common::decode_rgb8(&bytes);
        let (pt, tw, th) = psnr_vs_reference(&src, &t.output);
        let fmt = |v: Option<f64>, prec: usize| v.map_or("-".to_owned(), |v| format!("{v:.prec$}"));
        let (vps, vcpu, ratio, pv, vsize) = match &v {
            Some(v) => {
                let (pv, vw, vh) = psnr_vs_reference(&src, &v.output);
                if (vw, vh) != (tw, th) {
                    println!("  note: vips output is {vw}x{vh}, ours {tw}x{th}");
                }
                (
                    Some(v.per_s),
                    Some(v.cpu_ms),
                    Some(t.per_s / v.per_s),
                    Some(pv),
                    Some(v.output.len() as f64 / 1024.0),
                )
            }
            None => (None, None, None, None, None),
        };
        println!(
            "{:<36} {:>9.1} {:>9.2} {:>9} {:>9} {:>7} {:>9.2} {:>9} {:>8.1}K {:>8}K",
            format!("{name} ({}x{})", src.0, src.1),
            t.per_s,
            t.cpu_ms,
            fmt(vps, 1),
            fmt(vcpu, 2),
            fmt(ratio, 2),
            pt,
            fmt(pv, 2),
            t.output.len() as f64 / 1024.0,
            fmt(vsize, 1),
        );
        let entropy_ms = entropy_bound_ms(&bytes, seconds);
        stage_rows.push(format!(
            "{name:<36} {:>9.2} {:>9.2} {:>9.2} {:>12.2} {:>10.2}",
            t.stages_ms[0],
            t.stages_ms[1],
            t.stages_ms[2],
            entropy_ms,
            t.cpu_ms / entropy_ms
        ));
    }
    println!(
        "\n{:<36} {:>9} {:>9} {:>9} {:>12} {:>10}",
        "Tessera stages (ms per conversion)",
        "decode",
        "resize",
        "encode",
        "entropy only",
        "total/entr"
    );
    for row in stage_rows {
        println!("{row}");
    }
}
