//! The pool's cost model: how many nanoseconds of one worker a job will take, predicted
//! from what its header says before any pixel is decoded.
//!
//! A job's cost is `decode + encode`: decoding grows with the input's bytes and depends on
//! its format; resampling and encoding grow with the output's pixels and depend on the
//! output format (an AVIF pixel costs ~100x a JPEG pixel). Each rate starts from a prior
//! measured on the reference machine (docs/BENCHMARKS.md) and then follows what jobs on
//! this node actually took, as an exponentially weighted mean:
//! - a completed job teaches both rates from its stage timings;
//! - a job that failed or was cancelled teaches only when it ran longer than predicted
//!   (its elapsed time is then a lower bound of its cost), by scaling both rates up.
//!   Learning from successes alone let a tenant whose every job blew its deadline keep a
//!   model that called those jobs cheap.
//!
//! The pool uses the prediction three ways: to refuse up front a job that cannot finish
//! by its deadline even on an idle node (no work is done for it at all: an AVIF encode
//! cannot be interrupted once started), to estimate a new job's wait in the fair queue,
//! and as the job's size in that queue.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tessera_resize::{InputFormat, OutputFormat, Timings};

/// What the model needs to know of a job, read from the header by `tessera_resize::probe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub input_format: InputFormat,
    pub input_bytes: u64,
    pub output_format: OutputFormat,
    /// Output pixels, times the frames of an animation kept animated.
    pub output_pixels: u64,
    /// Encodes the job may run: 1, or up to `tessera_resize::MAX_BYTES_ENCODES` for a
    /// `max_bytes` search. Predictions take the worst case; such a job teaches only the
    /// decode rate (how many encodes it ran is not known here).
    pub encodes_max: u32,
    /// Pixel operations of `blur`, `sharpen` and the `gravity=smart` search
    /// (`tessera_resize::Probe::filter_ops`), charged at [`FILTER_NS_PER_OP`], so a large
    /// blur is priced (and refused when it cannot meet its deadline) by what it does.
    pub filter_ops: u64,
}

/// Worker time per filter operation, ns: a fixed rate, not learned (a job's stage timings
/// do not separate filtering from resampling). One op is one f32 sample touched by one
/// filter tap, or one sample of the smart search. From docs/BENCHMARKS.md ("Filters and
/// smart crop", 800x1202 RGB, one loaded core): blur sigma 3 (kernel path) 115 M ops in
/// 14.8 ms = 0.13 ns/op; sigma 30 (box path) 75 M ops in 29.7 ms = 0.40 ns/op; the smart
/// search 6.1 M ops in 1.6 ms = 0.27 ns/op. 1 ns rounds the worst up past the ±40% those
/// runs vary by, as a cold node errs towards refusing work it could have done rather than
/// starting work it cannot finish: a sigma-3 blur of a 1 MP RGB output (120 M ops) is
/// priced at 0.12 s.
pub const FILTER_NS_PER_OP: f64 = 1.0;

/// Learned rates, each an `f64` in an atomic (workers update them without a lock; a lost
/// update under a race costs one sample), each kept within `RATE_BAND` of its prior.
pub struct CostModel {
    decode_ns_per_byte: [Rate; 4],
    encode_ns_per_pixel: [Rate; 5],
}

struct Rate {
    value: AtomicU64,
    prior: f64,
}

/// How far a learned rate may move from its prior, either way. One request chooses its
/// own shape: a 24 MP photo resized to 1x1 pixel is a sample of ~10^6 ns per output
/// pixel, and unbounded, one such sample would make every later job look too costly to
/// admit, for every tenant. Within the band, the worst a request can do is make the node
/// predict 8x too much or too little for a while.
const RATE_BAND: f64 = 8.0;

impl Rate {
    fn new(prior: f64) -> Self {
        Rate {
            value: AtomicU64::new(prior.to_bits()),
            prior,
        }
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }
    fn set(&self, value: f64) {
        let value = value.clamp(self.prior / RATE_BAND, self.prior * RATE_BAND);
        self.value.store(value.to_bits(), Ordering::Relaxed);
    }
    /// Moves the rate a tenth of the way towards `sample`.
    fn learn(&self, sample: f64) {
        if sample.is_finite() && sample > 0.0 {
            self.set((1.0 - SAMPLE_WEIGHT) * self.get() + SAMPLE_WEIGHT * sample);
        }
    }
}

/// Weight of one sample in the moving means.
const SAMPLE_WEIGHT: f64 = 0.1;

fn input_index(format: InputFormat) -> usize {
    match format {
        InputFormat::Jpeg => 0,
        InputFormat::Png => 1,
        InputFormat::WebP => 2,
        InputFormat::Gif => 3,
    }
}

fn output_index(format: OutputFormat) -> usize {
    match format {
        OutputFormat::Jpeg => 0,
        OutputFormat::Png => 1,
        OutputFormat::WebP => 2,
        OutputFormat::Avif => 3,
        OutputFormat::Gif => 4,
    }
}

impl Default for CostModel {
    /// Priors measured on the reference machine (2 vCPU EPYC, `cargo bench -p
    /// tessera-resize --bench versus_vips` and the AVIF figures in docs/BENCHMARKS.md),
    /// rounded up: a cold node errs towards refusing work it could have done in time
    /// rather than starting work it cannot finish.
    fn default() -> Self {
        CostModel {
            // JPEG decodes at reduced DCT scale (~90 ns per input byte on the photos);
            // PNG, WebP and GIF decode every pixel of a better-compressed stream.
            decode_ns_per_byte: [
                Rate::new(120.0),
                Rate::new(150.0),
                Rate::new(200.0),
                Rate::new(150.0),
            ],
            // Resample + encode, per output pixel.
            encode_ns_per_pixel: [
                Rate::new(30.0),
                Rate::new(60.0),
                Rate::new(150.0),
                Rate::new(1_500.0),
                // GIF: NeuQuant palette search and LZW, per output pixel and frame.
                Rate::new(300.0),
            ],
        }
    }
}

impl CostModel {
    /// Predicted worker time for `shape`.
    pub fn predict(&self, shape: &Shape) -> Duration {
        let ns = self.decode_ns_per_byte[input_index(shape.input_format)].get()
            * shape.input_bytes as f64
            + self.encode_ns_per_pixel[output_index(shape.output_format)].get()
                * shape.output_pixels as f64
                * f64::from(shape.encodes_max.max(1))
            + FILTER_NS_PER_OP * shape.filter_ops as f64;
        Duration::from_nanos(ns.min(u64::MAX as f64) as u64)
    }

    /// The predicted part of `shape`'s work that no stop check can interrupt once begun:
    /// an AVIF encode (rav1e runs to the end). A job whose deadline is nearer than this
    /// is stopped before it starts the encode, not after.
    pub fn uninterruptible(&self, shape: &Shape) -> Duration {
        if shape.output_format != OutputFormat::Avif {
            return Duration::ZERO;
        }
        let ns = self.encode_ns_per_pixel[output_index(shape.output_format)].get()
            * shape.output_pixels as f64;
        Duration::from_nanos(ns.min(u64::MAX as f64) as u64)
    }

    /// Learns from a completed job's stage timings.
    pub fn completed(&self, shape: &Shape, timings: &Timings) {
        if shape.input_bytes > 0 {
            self.decode_ns_per_byte[input_index(shape.input_format)]
                .learn(timings.decode_us as f64 * 1e3 / shape.input_bytes as f64);
        }
        if shape.output_pixels > 0 && shape.encodes_max <= 1 && shape.filter_ops == 0 {
            self.encode_ns_per_pixel[output_index(shape.output_format)].learn(
                (timings.resize_us + timings.encode_us) as f64 * 1e3 / shape.output_pixels as f64,
            );
        }
    }

    /// Learns from a job that failed or was cancelled after running for `elapsed`: only
    /// when that is more than predicted, scaling both of its rates up.
    pub fn unfinished(&self, shape: &Shape, elapsed: Duration) {
        let predicted = self.predict(shape).as_secs_f64();
        let ran = elapsed.as_secs_f64();
        if predicted <= 0.0 || ran <= predicted {
            return;
        }
        // As a completed job would move it, at most: towards twice the prediction.
        let factor = 1.0 + SAMPLE_WEIGHT * (ran / predicted - 1.0).min(1.0);
        for rate in [
            &self.decode_ns_per_byte[input_index(shape.input_format)],
            &self.encode_ns_per_pixel[output_index(shape.output_format)],
        ] {
            rate.set(rate.get() * factor);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn avif(pixels: u64) -> Shape {
        Shape {
            input_format: InputFormat::Jpeg,
            input_bytes: 250_000,
            output_format: OutputFormat::Avif,
            output_pixels: pixels,
            encodes_max: 1,
            filter_ops: 0,
        }
    }

    #[test]
    fn completed_jobs_pull_the_rates_towards_what_they_took() {
        let model = CostModel::default();
        let shape = avif(1_000_000);
        let before = model.predict(&shape);
        // Nearly four times faster than the prior, many times over: the prediction
        // converges (25 ms of decode + 410 ms of resize and encode).
        let timings = Timings {
            decode_us: 25_000,
            resize_us: 10_000,
            encode_us: 400_000,
            cpu_us: 0,
        };
        for _ in 0..100 {
            model.completed(&shape, &timings);
        }
        let after = model.predict(&shape);
        assert!(after < before / 3, "{before:?} -> {after:?}");
        assert!((after.as_millis() as i64 - 435).abs() < 10, "{after:?}");
    }

    #[test]
    fn one_odd_request_cannot_move_a_rate_out_of_its_band() {
        let model = CostModel::default();
        let jpeg = Shape {
            input_format: InputFormat::Jpeg,
            input_bytes: 1,
            output_format: OutputFormat::Jpeg,
            output_pixels: 1,
            encodes_max: 1,
            filter_ops: 0,
        };
        // A 24 MP photo resized to one pixel: a millisecond of resampling for one pixel.
        let odd = Timings {
            decode_us: 60_000,
            resize_us: 1_000,
            encode_us: 10,
            cpu_us: 0,
        };
        for _ in 0..1_000 {
            model.completed(&jpeg, &odd);
            model.unfinished(&jpeg, Duration::from_secs(100));
        }
        let thumbnail = Shape {
            input_bytes: 250_000,
            output_pixels: 480_000,
            ..jpeg
        };
        let predicted = model.predict(&thumbnail);
        assert!(
            predicted <= CostModel::default().predict(&thumbnail) * RATE_BAND as u32,
            "{predicted:?}"
        );
        assert!(predicted < Duration::from_secs(1), "{predicted:?}");
    }

    #[test]
    fn only_an_avif_encode_is_uninterruptible() {
        let model = CostModel::default();
        let shape = avif(1_000_000);
        let tail = model.uninterruptible(&shape);
        assert!(tail > Duration::ZERO && tail < model.predict(&shape));
        let webp = Shape {
            output_format: OutputFormat::WebP,
            ..shape
        };
        assert_eq!(model.uninterruptible(&webp), Duration::ZERO);
    }

    #[test]
    fn an_unfinished_job_only_ever_raises_the_prediction() {
        let model = CostModel::default();
        let shape = avif(16_000_000);
        let before = model.predict(&shape);
        model.unfinished(&shape, before / 2);
        assert_eq!(
            model.predict(&shape),
            before,
            "a quick failure says nothing"
        );
        model.unfinished(&shape, before * 3);
        let after = model.predict(&shape);
        assert!(after > before, "{before:?} -> {after:?}");
        // Other output formats' rates are untouched.
        let jpeg = Shape {
            output_format: OutputFormat::Jpeg,
            input_bytes: 0,
            ..shape
        };
        assert_eq!(model.predict(&jpeg), CostModel::default().predict(&jpeg));
    }

    /// A `max_bytes` job is predicted at its worst case (every encode of the search) and
    /// does not teach the encode rate: it may have run one encode or eight.
    #[test]
    fn a_max_bytes_search_is_predicted_at_its_worst_and_teaches_only_decoding() {
        let model = CostModel::default();
        let one = avif(1_000_000);
        let search = Shape {
            encodes_max: 8,
            ..one
        };
        let decode = model.predict(&Shape {
            output_pixels: 0,
            ..one
        });
        let close = |a: Duration, b: Duration| a.as_nanos().abs_diff(b.as_nanos()) <= 16;
        assert!(close(
            model.predict(&search) - decode,
            (model.predict(&one) - decode) * 8
        ));
        let quick = Timings {
            decode_us: 25_000,
            resize_us: 1_000,
            encode_us: 1_000,
            cpu_us: 0,
        };
        for _ in 0..100 {
            model.completed(&search, &quick);
        }
        let encode_after = model.predict(&one)
            - model.predict(&Shape {
                output_pixels: 0,
                ..one
            });
        assert!(close(
            encode_after,
            CostModel::default().predict(&one) - decode
        ));
    }

    /// A blur is priced by its filter operations, on top of decoding and encoding, and
    /// does not teach the encode rate (its time is not the encoder's).
    #[test]
    fn filter_ops_are_priced_and_do_not_teach_the_encode_rate() {
        let model = CostModel::default();
        let plain = Shape {
            output_format: OutputFormat::Jpeg,
            ..avif(1_000_000)
        };
        let blurred = Shape {
            filter_ops: 2_000_000_000,
            ..plain
        };
        let extra = model.predict(&blurred) - model.predict(&plain);
        assert_eq!(extra, Duration::from_secs(2));
        let slow = Timings {
            decode_us: 25_000,
            resize_us: 2_000_000,
            encode_us: 10_000,
            cpu_us: 0,
        };
        for _ in 0..50 {
            model.completed(&blurred, &slow);
        }
        let encode = |m: &CostModel| {
            m.predict(&plain)
                - m.predict(&Shape {
                    output_pixels: 0,
                    ..plain
                })
        };
        assert_eq!(encode(&model), encode(&CostModel::default()));
    }
}
