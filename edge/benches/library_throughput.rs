//! The ceiling the HTTP front door is measured against: conversions per second of the
//! resize library alone, one `Pipeline` per thread on as many threads as the node would
//! run workers, no HTTP, no queue. `scripts/bench-http.sh` runs this and then the same
//! photos through `tessera serve` under a load generator, and prints the ratio.
//!
//! Usage: `cargo bench -p tessera-edge --bench library_throughput -- [--query Q]
//! [--avif-speed N] [THREADS] [SECONDS] PHOTO...`. `Q` is the resize query string the HTTP
//! side sends (default `w=400&h=400&format=jpeg&q=80`), read by the node's own parser;
//! `N` is the node's `[output] avif_speed` (default the node's).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tessera_edge::config::OutputConfig;
use tessera_edge::http::params::{self, Defaults};
use tessera_resize::{Limits, Pipeline};

fn main() {
    let mut args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let mut flag = |name: &str| {
        let at = args.iter().position(|a| a == name)?;
        let value = args.get(at + 1).cloned();
        args.drain(at..(at + 2).min(args.len()));
        value
    };
    let query = flag("--query").unwrap_or_else(|| "w=400&h=400&format=jpeg&q=80".to_owned());
    let node = OutputConfig::default();
    let defaults = Defaults {
        quality: node.quality_default,
        avif_speed: flag("--avif-speed")
            .map(|s| s.parse().expect("--avif-speed is a number"))
            .unwrap_or(node.avif_speed),
    };
    let threads: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(2);
    let seconds: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let photos: Vec<&String> = args.iter().skip(2).collect();
    if photos.is_empty() {
        eprintln!(
            "usage: library_throughput [--query Q] [--avif-speed N] THREADS SECONDS PHOTO..."
        );
        return;
    }
    let options = params::parse(&query, None, defaults, &Limits::default())
        .unwrap_or_else(|e| panic!("--query {query}: {e:?}"))
        .options;
    println!("photo\tthreads\tconversions/s");
    for photo in photos {
        let input = Arc::new(std::fs::read(photo).unwrap_or_else(|e| panic!("{photo}: {e}")));
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (input, done, stop) = (input.clone(), done.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut pipeline = Pipeline::new(Limits::default());
                    while !stop.load(Ordering::Relaxed) {
                        pipeline.process(&input, &options).expect("photo converts");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            worker.join().unwrap();
        }
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        let name = std::path::Path::new(photo)
            .file_name()
            .unwrap()
            .to_string_lossy();
        println!("{name}\t{threads}\t{rate:.1}");
    }
}
