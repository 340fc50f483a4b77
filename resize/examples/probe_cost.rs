//! Measures what `probe` costs: the node calls it on the event loop for every request,
//! before admission, to size the job for the fair queue and the cost model. Times the
//! shared photos and every case of the hostile corpus (the worst cases being the bounded
//! iCCP inflate and metadata floods), median and maximum of repeated calls.
//! Run with `cargo run --release -p tessera-resize --example probe_cost`.

#[path = "../tests/hostile_inputs/mod.rs"]
mod gen;

use std::time::{Duration, Instant};

use tessera_resize::{probe, FormatRequest, Limits, Options, OutputFormat};

fn time(input: &[u8], options: &Options, limits: &Limits, runs: usize) -> (Duration, Duration) {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            let _ = std::hint::black_box(probe(input, options, limits));
            started.elapsed()
        })
        .collect();
    samples.sort();
    (samples[runs / 2], samples[runs - 1])
}

fn main() {
    let limits = Limits::default();
    let options = Options {
        width: Some(400),
        height: Some(400),
        format: FormatRequest::Fixed(OutputFormat::Jpeg),
        ..Options::default()
    };
    println!(
        "{:<45} {:>10} {:>12} {:>12}",
        "input", "bytes", "median µs", "max µs"
    );
    let photos = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/photos");
    let mut names: Vec<_> = std::fs::read_dir(&photos)
        .map(|dir| dir.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    let mut cases: Vec<(String, Vec<u8>)> = names
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| {
            Some((
                p.file_name()?.to_string_lossy().into_owned(),
                std::fs::read(&p).ok()?,
            ))
        })
        .collect();
    let bomb = gen::zlib_zeros(1 << 30);
    cases.extend(
        gen::corpus(&bomb)
            .into_iter()
            .map(|(name, bytes, _)| (name.to_owned(), bytes)),
    );
    for (name, input) in cases {
        let (median, max) = time(&input, &options, &limits, 50);
        println!(
            "{:<45} {:>10} {:>12.1} {:>12.1}",
            name,
            input.len(),
            median.as_secs_f64() * 1e6,
            max.as_secs_f64() * 1e6
        );
    }
}
