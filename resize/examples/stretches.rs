//! Measures, per format, the longest stretch between two stop checks (what a cancelled job
//! may still run for), the job's time, and its peak RSS growth next to the memory estimate
//! `probe` reports, on large generated inputs at the default limits. Run with
//! `cargo run -p tessera-resize --example stretches [name filter]` (the codecs are optimised
//! in the dev profile too; this crate's own loops are not, so its figures are upper bounds).
//! Run one case per process for clean RSS figures: memory freed by an earlier job stays in
//! the allocator and hides the next job's growth.

#[path = "../tests/hostile_inputs/mod.rs"]
mod gen;

use std::cell::Cell;
use std::time::{Duration, Instant};

use tessera_resize::{probe, FormatRequest, Limits, Options, OutputFormat, Pipeline};

fn options(width: u32, format: OutputFormat) -> Options {
    Options {
        width: Some(width),
        format: FormatRequest::Fixed(format),
        avif_speed: 10,
        ..Options::default()
    }
}

/// Encodes `png` as `format` at full size, with limits raised for the generator only.
fn make(png: &[u8], format: OutputFormat, progressive: bool) -> Vec<u8> {
    let limits = Limits {
        output_pixels_max: u64::MAX,
        job_bytes_max: u64::MAX,
        webp_output_pixels_max: u64::MAX,
        ..Limits::default()
    };
    let options = Options {
        progressive,
        ..Options {
            quality: 90,
            ..options(0, format)
        }
    };
    let options = Options {
        width: None,
        ..options
    };
    Pipeline::new(limits).process(png, &options).unwrap().bytes
}

fn main() {
    let (w, h) = (7071, 7071);
    eprintln!("generating inputs ({w}x{h})...");
    let png = gen::png_with(w, h, &[]);
    let jpeg = make(&png, OutputFormat::Jpeg, false);
    let progressive = make(&png, OutputFormat::Jpeg, true);
    let webp = make(&gen::png_with(16_383, 3000, &[]), OutputFormat::WebP, false);
    let gif = gen::gif_with(5000, 5000, &[]);
    let small = gen::png_with(64, 64, &[]);
    let cases: Vec<(&str, &[u8], Options)> = vec![
        (
            "PNG 50 MP -> JPEG 400",
            &png,
            options(400, OutputFormat::Jpeg),
        ),
        (
            "PNG 50 MP -> PNG 4096",
            &png,
            options(4096, OutputFormat::Png),
        ),
        (
            "JPEG 50 MP -> JPEG 4096",
            &jpeg,
            options(4096, OutputFormat::Jpeg),
        ),
        (
            "progressive JPEG 50 MP -> JPEG 4096",
            &progressive,
            options(4096, OutputFormat::Jpeg),
        ),
        (
            "progressive JPEG 50 MP -> JPEG 400",
            &progressive,
            options(400, OutputFormat::Jpeg),
        ),
        (
            "WebP 49 MP -> JPEG 400",
            &webp,
            options(400, OutputFormat::Jpeg),
        ),
        (
            "GIF 25 MP -> PNG 400",
            &gif,
            options(400, OutputFormat::Png),
        ),
        (
            "JPEG 50 MP -> WebP 4096 (16.7 MP)",
            &jpeg,
            options(4096, OutputFormat::WebP),
        ),
        (
            "JPEG 50 MP -> AVIF 2048 (4.2 MP, speed 10)",
            &jpeg,
            options(2048, OutputFormat::Avif),
        ),
        (
            "JPEG 50 MP -> AVIF 1024 (1 MP, speed 10)",
            &jpeg,
            options(1024, OutputFormat::Avif),
        ),
        (
            "PNG 64 -> WebP 4096 (16.7 MP)",
            &small,
            options(4096, OutputFormat::WebP),
        ),
        (
            "PNG 64 -> AVIF 2048 (4.2 MP, speed 10)",
            &small,
            options(2048, OutputFormat::Avif),
        ),
        (
            "PNG 64 -> JPEG 4096 (16.7 MP)",
            &small,
            options(4096, OutputFormat::Jpeg),
        ),
    ];
    let filter = std::env::args().nth(1).unwrap_or_default();
    for (name, input, options) in cases {
        if !name.contains(&filter) {
            continue;
        }
        // A fresh pipeline per case: its buffers are this job's alone.
        let mut pipeline = Pipeline::new(Limits::default());
        let estimate = probe(input, &options, &Limits::default()).map(|p| p.job_bytes);
        gen::reset_peak_rss();
        let (_, before_kib) = gen::rss_kib();
        let last = Cell::new(Instant::now());
        let gap = Cell::new(Duration::ZERO);
        let checks = Cell::new(0u32);
        let stop = || {
            checks.set(checks.get() + 1);
            gap.set(gap.get().max(last.get().elapsed()));
            last.set(Instant::now());
            false
        };
        let started = Instant::now();
        let result = pipeline.process_cancellable(input, &options, &stop);
        let total = started.elapsed();
        gap.set(gap.get().max(last.get().elapsed()));
        let (peak_kib, _) = gen::rss_kib();
        let mib = |b: u64| b as f64 / f64::from(1 << 20);
        println!(
            "{name}: {} in {:.0} ms, {} checks, longest stretch {:.0} ms; peak RSS growth {:.0} MiB, estimate {}",
            match &result {
                Ok(o) => format!("{}x{}", o.width, o.height),
                Err(e) => e.code().to_owned(),
            },
            total.as_secs_f64() * 1e3,
            checks.get(),
            gap.get().as_secs_f64() * 1e3,
            mib(peak_kib.saturating_sub(before_kib) * 1024),
            match estimate {
                Ok(b) => format!("{:.0} MiB", mib(b)),
                Err(e) => e.code().to_owned(),
            }
        );
    }
}
