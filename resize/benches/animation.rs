//! Animated GIF → animated WebP and GIF thumbnails: Tessera against `gif2webp` (libwebp's
//! own converter) and libvips (`vips copy`, `vipsthumbnail`), one core, same files, same run.
//!
//! Run: `cargo bench -p tessera-resize --bench animation` (`-- --seconds N` per measurement,
//! default 2). The process pins itself and the tools it starts to CPU 0 (`taskset -p`).
//! Inputs: the shared photo GIF (320x480, 6 frames) and a synthetic 600x400, 12-frame GIF
//! panning across `seeding-256k.jpg` (written with the `gif` crate, NeuQuant palettes),
//! which stands for a short video clip.
//!
//! Tasks: (A) the whole animation as animated lossy WebP q80 at its own size;
//! (B) a 160x160-fit GIF thumbnail; (C) a 160x160-fit animated WebP thumbnail, q80.
//! External tools are timed per process, best of three runs of several calls; their
//! start-up (a `--version` call, measured the same way) is shown and subtracted in the
//! "net" column. Quality: mean PSNR over frames against the source frames (A) or against a
//! float Lanczos3 reference of each source frame (B, C); bytes of each output.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use image::AnimationDecoder;
use tessera_resize::{Fit, FormatRequest, Limits, Options, OutputFormat, Pipeline};

use harness::time_ms;

/// Best-of-three seconds per call of `f` ([`harness::time_ms`] in seconds).
fn time_per_call(seconds: f64, f: impl FnMut()) -> f64 {
    time_ms(seconds, f) / 1000.0
}

/// Every frame of an animated GIF or WebP as composited RGB, with the size.
fn frames_of(bytes: &[u8]) -> (u32, u32, Vec<Vec<u8>>) {
    let frames = if bytes.starts_with(b"GIF") {
        image::codecs::gif::GifDecoder::new(Cursor::new(bytes))
            .unwrap()
            .into_frames()
            .collect_frames()
            .unwrap()
    } else {
        image::codecs::webp::WebPDecoder::new(Cursor::new(bytes))
            .unwrap()
            .into_frames()
            .collect_frames()
            .unwrap()
    };
    let (w, h) = frames[0].buffer().dimensions();
    let rgb = frames
        .iter()
        .map(|f| {
            image::DynamicImage::ImageRgba8(f.buffer().clone())
                .to_rgb8()
                .into_raw()
        })
        .collect();
    (w, h, rgb)
}

/// Mean PSNR of `output`'s frames against `source` frames, each resized by the float
/// reference when the sizes differ.
fn mean_psnr(source: &(u32, u32, Vec<Vec<u8>>), output: &[u8]) -> (f64, u32, u32, usize) {
    let (ow, oh, frames) = frames_of(output);
    let n = frames.len().min(source.2.len());
    let total: f64 = (0..n)
        .map(|i| {
            let reference = if (ow, oh) == (source.0, source.1) {
                source.2[i].clone()
            } else {
                common::float_reference(source.0, source.1, &source.2[i], ow, oh)
            };
            common::psnr(&frames[i], &reference).min(99.0)
        })
        .sum();
    (total / n as f64, ow, oh, frames.len())
}

/// A 600x400 clip of 12 frames panning across a photo, 80 ms each, looping.
fn synthetic_clip(photo: &[u8]) -> Vec<u8> {
    let src = image::load_from_memory(photo).unwrap().to_rgba8();
    let (fw, fh) = (600u32, 400u32);
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, fw as u16, fh as u16, &[]).unwrap();
        enc.set_repeat(gif::Repeat::Infinite).unwrap();
        for i in 0..12 {
            let x = (src.width() - fw) * i / 11;
            let mut rgba = image::imageops::crop_imm(&src, x, 0, fw, fh)
                .to_image()
                .into_raw();
            let mut frame = gif::Frame::from_rgba_speed(fw as u16, fh as u16, &mut rgba, 10);
            frame.delay = 8;
            enc.write_frame(&frame).unwrap();
        }
    }
    out
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .env("VIPS_CONCURRENCY", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("runs");
    assert!(status.success(), "{program} {args:?}: {status}");
}

fn tessera(input: &[u8], options: &Options) -> Vec<u8> {
    Pipeline::new(Limits::default())
        .process(input, options)
        .expect("converts")
        .bytes
}

struct Row {
    task: String,
    who: &'static str,
    ms: f64,
    net_ms: f64,
    bytes: usize,
    psnr: f64,
    size: String,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2.0);
    let Some(dir) = common::photos_dir() else {
        return;
    };
    let pid = std::process::id().to_string();
    let pinned = Command::new("taskset")
        .args(["-p", "-c", "0", &pid])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    println!(
        "{}",
        if pinned {
            "pinned to CPU 0 (taskset -p); tools started from here inherit it"
        } else {
            "WARNING: could not pin to CPU 0; numbers are not per core"
        }
    );
    let have = |p: &str| Path::new(p).exists();
    let (gif2webp, vips) = (have("/usr/bin/gif2webp"), have("/usr/bin/vips"));
    if !gif2webp || !vips {
        println!("SKIP some tools: apt-get install webp libvips-tools");
    }
    let tmp = std::env::temp_dir().join(format!("tessera-bench-animation-{pid}"));
    std::fs::create_dir_all(&tmp).unwrap();
    let startup = |program: &str, arg: &str| time_per_call(seconds, || run(program, &[arg]));
    let gif2webp_start = if gif2webp {
        startup("gif2webp", "-version")
    } else {
        0.0
    };
    let vips_start = if vips {
        startup("vips", "--version")
    } else {
        0.0
    };
    println!(
        "start-up per call: gif2webp {:.1} ms, vips {:.1} ms",
        gif2webp_start * 1e3,
        vips_start * 1e3
    );

    let mut inputs = Vec::new();
    if let Ok(b) = std::fs::read(dir.join("friends-animated.gif")) {
        inputs.push(("friends-animated.gif", b));
    }
    if let Ok(b) = std::fs::read(dir.join("seeding-256k.jpg")) {
        inputs.push(("pan-600x400x12.gif", synthetic_clip(&b)));
    }
    let mut rows = Vec::new();
    for (name, input) in &inputs {
        let path = tmp.join(name);
        std::fs::write(&path, input).unwrap();
        let src = path.to_str().unwrap().to_owned();
        let source = frames_of(input);
        let out = |n: &str| tmp.join(n).to_str().unwrap().to_owned();
        let mut push = |task: &str, who, secs: f64, start: f64, bytes: Vec<u8>| {
            let (psnr, w, h, frames) = mean_psnr(&source, &bytes);
            rows.push(Row {
                task: format!("{name} {task}"),
                who,
                ms: secs * 1e3,
                net_ms: (secs - start) * 1e3,
                bytes: bytes.len(),
                psnr,
                size: format!("{w}x{h}x{frames}"),
            });
        };

        // (A) whole animation → animated WebP q80.
        let webp = Options {
            format: FormatRequest::Fixed(OutputFormat::WebP),
            quality: 80,
            ..Options::default()
        };
        let t = time_per_call(seconds, || drop(tessera(input, &webp)));
        push("→ webp", "tessera", t, 0.0, tessera(input, &webp));
        if gif2webp {
            let o = out("a-gif2webp.webp");
            let args = ["-lossy", "-q", "80", src.as_str(), "-o", o.as_str()];
            let t = time_per_call(seconds, || run("gif2webp", &args));
            push(
                "→ webp",
                "gif2webp",
                t,
                gif2webp_start,
                std::fs::read(&o).unwrap(),
            );
        }
        if vips {
            let (i, o) = (format!("{src}[n=-1]"), out("a-vips.webp"));
            let o_q = format!("{o}[Q=80]");
            let t = time_per_call(seconds, || run("vips", &["copy", &i, &o_q]));
            push("→ webp", "vips", t, vips_start, std::fs::read(&o).unwrap());
        }

        // (B, C) 160x160-fit thumbnails as GIF and as WebP q80.
        for (format, ext) in [(OutputFormat::Gif, "gif"), (OutputFormat::WebP, "webp")] {
            let thumb = Options {
                width: Some(160),
                height: Some(160),
                fit: Fit::Contain,
                format: FormatRequest::Fixed(format),
                quality: 80,
                ..Options::default()
            };
            let task = format!("→ 160 {ext}");
            let t = time_per_call(seconds, || drop(tessera(input, &thumb)));
            push(&task, "tessera", t, 0.0, tessera(input, &thumb));
            if vips {
                let i = format!("{src}[n=-1]");
                let o = out(&format!("t-vips.{ext}"));
                let o_opt = if ext == "webp" {
                    format!("{o}[Q=80]")
                } else {
                    o.clone()
                };
                let args = ["thumbnail", i.as_str(), o_opt.as_str(), "160"];
                let t = time_per_call(seconds, || run("vips", &args));
                push(&task, "vips", t, vips_start, std::fs::read(&o).unwrap());
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "\n{:<36} {:<9} {:>9} {:>9} {:>10} {:>8} {:>12}",
        "input and task", "who", "ms/call", "net ms", "bytes", "PSNR", "output"
    );
    for r in rows {
        println!(
            "{:<36} {:<9} {:>9.1} {:>9.1} {:>10} {:>8.2} {:>12}",
            r.task, r.who, r.ms, r.net_ms, r.bytes, r.psnr, r.size
        );
    }
}
