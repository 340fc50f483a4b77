//! One conversion in a loop, for A/B runs of two builds and for `perf`: a fit in 400x400 of
//! a photo, WebP (or JPEG) q80, through one reused [`Pipeline`] as a node worker runs it;
//! prints the best call with its decode / resize / encode split. Used for the #18 levers in
//! docs/BENCHMARKS.md ("#18, third pass"): build, copy the binary aside, change, build again,
//! then alternate the two under `taskset -c 0`.
//!
//! Run: `cargo build --workspace --profile bench --example prof_webp &&
//! taskset -c 0 target/release/examples/prof_webp PHOTO [CALLS] [webp|jpeg] [MARGIN]`.

use std::time::Instant;

use tessera_resize::{Fit, FormatRequest, Limits, Options, OutputFormat, Pipeline};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: prof_webp PHOTO [CALLS] [webp|jpeg] [MARGIN]");
        std::process::exit(2);
    };
    let photo = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let calls: usize = args
        .get(1)
        .map_or(100, |n| n.parse().expect("CALLS is a count"));
    let format = match args.get(2).map(String::as_str) {
        None | Some("webp") => OutputFormat::WebP,
        Some("jpeg") => OutputFormat::Jpeg,
        Some(other) => panic!("format {other}: webp or jpeg"),
    };
    let margin: Option<f64> = args.get(3).map(|m| m.parse().expect("MARGIN is a number"));
    let options = Options {
        width: Some(400),
        height: Some(400),
        fit: Fit::Contain,
        format: FormatRequest::Fixed(format),
        quality: 80,
        ..Options::default()
    };
    let mut pipeline = Pipeline::new(Limits::default());
    if let Some(margin) = margin {
        pipeline.set_jpeg_shrink_margin(margin);
    }
    let mut best = (f64::MAX, Default::default());
    for _ in 0..calls {
        let start = Instant::now();
        let out = pipeline
            .process(&photo, &options)
            .expect("the photo converts");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        if ms < best.0 {
            best = (ms, out.timings);
        }
    }
    let (ms, t) = best;
    println!(
        "best of {calls}: {ms:.2} ms (decode {:.2} / resize {:.2} / encode {:.2} ms)",
        t.decode_us as f64 / 1e3,
        t.resize_us as f64 / 1e3,
        t.encode_us as f64 / 1e3,
    );
}
