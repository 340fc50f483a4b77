//! Peak memory of hostile inputs: each runs on a fresh thread, in a test process of its own
//! (one test, so nothing else allocates meanwhile), with the process's peak RSS (VmHWM)
//! reset before and read after. The bound: 64 MiB per job beyond the pixel buffer the
//! header makes the pipeline fill (zero for every bomb, and for the tiny PNG declaring a
//! huge frame, whose buffer grows with its rows; the declared image, an allowance, for the
//! JPEG one, which is refused only when its data runs out).
//! Then the same corpus through the watermark decoder (`Watermark::decode`, what an
//! operator's upload and a replicated watermark go through), with its own bound.

mod hostile_inputs;

use hostile_inputs as gen;
use tessera_resize::watermark::{WATERMARK_PIXELS_MAX, WATERMARK_SIDE_MAX};
use tessera_resize::{
    FormatRequest, Limits, Options, OutputFormat, Pipeline, Watermark, WATERMARK_BYTES_MAX,
};

/// What a job may add to the peak RSS besides its pixel buffer.
const JOB_OVERHEAD_MAX_BYTES: u64 = 64 << 20;

/// What decoding one watermark may add to the peak RSS: its pixels twice (the decode
/// buffer and the RGBA copy, at most `WATERMARK_PIXELS_MAX` pixels of 4 bytes each) and
/// 8 MiB of decoder state.
const WATERMARK_MAX_BYTES: u64 = 2 * 4 * WATERMARK_PIXELS_MAX + (8 << 20);

#[test]
fn hostile_inputs_stay_within_the_memory_bound() {
    let bomb = gen::zlib_zeros(1 << 30);
    let big = vec![0x33u8; 65_000];
    let base_jpeg = gen::jpeg(256, 256, false);
    let mut exif = b"MM\0*\0\0\0\x08".to_vec();
    exif.resize(5 << 20, 0);
    let declared = 7000u64 * 7000 * 3;
    // (name, input, pixel bytes the header makes the pipeline allocate)
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        (
            "png iCCP bomb (1 GiB)",
            gen::png_with(16, 16, &[gen::iccp(&bomb)]),
            0,
        ),
        (
            "png zTXt bomb (1 GiB)",
            gen::png_with(16, 16, &[gen::ztxt(&bomb)]),
            0,
        ),
        (
            "png iTXt bomb (1 GiB)",
            gen::png_with(16, 16, &[gen::itxt(&bomb)]),
            0,
        ),
        (
            "png eXIf of 5 MiB",
            gen::png_with(16, 16, &[gen::chunk(b"eXIf", &exif)]),
            0,
        ),
        (
            "jpeg ICC flood",
            gen::jpeg_with_segments(&base_jpeg, &gen::icc_segments(70, 65_000)),
            0,
        ),
        (
            "jpeg APP1 flood",
            gen::jpeg_with_segments(&base_jpeg, &vec![(0xE1, big.clone()); 70]),
            0,
        ),
        (
            "webp ICCP of 5 MiB",
            gen::webp_with(64, 64, &[gen::riff_chunk(b"ICCP", &vec![1; 5 << 20])]),
            0,
        ),
        (
            "gif ICC extension of 5 MiB",
            gen::gif_with(16, 16, &gen::gif_icc_extension(5 << 20)),
            0,
        ),
        (
            "gif comment flood",
            gen::gif_with(16, 16, &gen::gif_comments(20_000)),
            0,
        ),
        (
            "jpeg 16x16 declaring 7000x7000",
            gen::jpeg_declaring(&gen::jpeg(16, 16, false), 7000, 7000),
            declared,
        ),
        // A non-interlaced PNG fills its frame as rows arrive: this one, none.
        (
            "png 7000x7000 header, one row",
            gen::png_huge_header(7000, 7000),
            0,
        ),
    ];
    let options = Options {
        width: Some(64),
        height: Some(64),
        format: FormatRequest::Fixed(OutputFormat::Png),
        ..Options::default()
    };
    let mut failures = Vec::new();
    for (name, input, pixel_bytes) in &cases {
        let Some((code, growth)) = peak_growth(|| {
            Pipeline::new(Limits::default())
                .process(input, &options)
                .map(drop)
        }) else {
            eprintln!("SKIP: /proc/self/clear_refs cannot reset the peak RSS here");
            return;
        };
        eprintln!(
            "{name} ({} bytes): {code}, peak RSS growth {:.1} MiB (pixel buffer {:.1} MiB)",
            input.len(),
            growth as f64 / (1 << 20) as f64,
            *pixel_bytes as f64 / (1 << 20) as f64
        );
        if growth > pixel_bytes + JOB_OVERHEAD_MAX_BYTES {
            failures.push(format!("{name}: {growth} bytes"));
        }
    }
    // The watermark decoder: every case small enough to be a watermark file, and bombs of
    // its own size — metadata bombs inflating to 8 MiB, a file declaring the largest image
    // it may decode, and one just over its side limit.
    let side = WATERMARK_SIDE_MAX;
    let mut marks: Vec<(String, Vec<u8>)> = cases
        .iter()
        .filter(|(_, input, _)| input.len() <= WATERMARK_BYTES_MAX)
        .map(|(name, input, _)| (name.to_string(), input.clone()))
        .collect();
    let small_bomb = gen::zlib_zeros(8 << 20);
    marks.push((
        "png iCCP bomb (8 MiB)".to_owned(),
        gen::png_with(16, 16, &[gen::iccp(&small_bomb)]),
    ));
    marks.push((
        "png zTXt bomb (8 MiB)".to_owned(),
        gen::png_with(16, 16, &[gen::ztxt(&small_bomb)]),
    ));
    marks.push((
        "gif comment flood".to_owned(),
        gen::gif_with(16, 16, &gen::gif_comments(60)),
    ));
    marks.push((
        format!("png {side}x256 header, one row"),
        gen::png_huge_header(side, (WATERMARK_PIXELS_MAX / u64::from(side)) as u32),
    ));
    marks.push((
        format!("png {}x{} header", side + 1, side + 1),
        gen::png_huge_header(side + 1, side + 1),
    ));
    for (name, input) in &marks {
        assert!(
            input.len() <= WATERMARK_BYTES_MAX,
            "{name} is a watermark-sized file"
        );
        let Some((code, growth)) = peak_growth(|| Watermark::decode(input).map(drop)) else {
            return;
        };
        eprintln!(
            "watermark: {name} ({} bytes): {code}, peak RSS growth {:.1} MiB",
            input.len(),
            growth as f64 / (1 << 20) as f64
        );
        if growth > WATERMARK_MAX_BYTES {
            failures.push(format!("watermark {name}: {growth} bytes"));
        }
    }
    assert!(
        marks.len() >= 7,
        "the corpus gave too few watermark-sized files"
    );
    assert!(failures.is_empty(), "{failures:?}");
}

/// Runs `job` on a fresh thread with the peak RSS reset before; its outcome's code and
/// how far the peak grew over the RSS before it, bytes (`None`: the peak cannot be reset).
fn peak_growth(
    job: impl FnOnce() -> Result<(), tessera_resize::ResizeError> + Send,
) -> Option<(&'static str, u64)> {
    if !gen::reset_peak_rss() {
        return None;
    }
    let (_, before_kib) = gen::rss_kib();
    let code = std::thread::scope(|s| {
        s.spawn(|| match job() {
            Ok(()) => "ok",
            Err(e) => e.code(),
        })
        .join()
        .unwrap()
    });
    let (peak_kib, _) = gen::rss_kib();
    Some((code, peak_kib.saturating_sub(before_kib) * 1024))
}
