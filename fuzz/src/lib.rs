//! What the fuzz targets (`targets/`) and the seed generator (`corpus/`) share: how a
//! target's input bytes become a request, and the properties checked on the answer.
//!
//! A target panics (AFL records a crash) only when a property of the code under test is
//! broken; an input the code refuses with a typed error is a normal outcome.

use tessera_resize::{
    Fit, FormatQuality, FormatRequest, Gravity, Limits, Options, Output, OutputFormat, Probe,
    ResizeError,
};

/// The node's limits with every number scaled down so one execution of the resize target
/// takes milliseconds: 1 MP declared, 64 x 64 output, 32 x 32 AVIF (rav1e cannot be
/// interrupted), 8 frames, 256 KiB of metadata, 48 MiB per job.
pub fn resize_limits() -> Limits {
    Limits {
        input_bytes_max: 1 << 20,
        width_max: 4096,
        height_max: 4096,
        pixels_max: 1 << 20,
        frames_max: 8,
        animation_pixels_max: 1 << 16,
        output_pixels_max: 64 * 64,
        metadata_bytes_max: 256 << 10,
        job_bytes_max: 48 << 20,
        webp_output_pixels_max: 64 * 64,
        avif_output_pixels_max: 32 * 32,
    }
}

/// The request one selector byte stands for: bits 0-2 the output format (fixed, auto with
/// or without WebP/AVIF, original), bits 3-4 the fit, bits 5-6 the box (48 x 40, width 64,
/// height 40, or none: original size within the output limit), bit 7 progressive JPEG
/// with a 2 KiB `max_bytes` (the quality search runs on every lossy encoder) and
/// `strip=false` (the source's rights and profile go into the output).
/// The gravity follows the selector too, so cover crops move around.
pub fn resize_options(selector: u8) -> Options {
    let format = match selector & 7 {
        0 => FormatRequest::Fixed(OutputFormat::Jpeg),
        1 => FormatRequest::Fixed(OutputFormat::Png),
        2 => FormatRequest::Fixed(OutputFormat::WebP),
        3 => FormatRequest::Fixed(OutputFormat::Avif),
        4 => FormatRequest::Auto {
            webp: true,
            avif: false,
        },
        5 => FormatRequest::Auto {
            webp: false,
            avif: true,
        },
        6 => FormatRequest::Auto {
            webp: false,
            avif: false,
        },
        _ => FormatRequest::Original,
    };
    let fit = [Fit::Contain, Fit::Cover, Fit::Fill, Fit::ScaleDown][usize::from(selector >> 3 & 3)];
    let (width, height) = match selector >> 5 & 3 {
        0 => (Some(48), Some(40)),
        1 => (Some(64), None),
        2 => (None, Some(40)),
        _ => (None, None),
    };
    let gravity = [
        Gravity::Center,
        Gravity::North,
        Gravity::NorthEast,
        Gravity::East,
        Gravity::SouthEast,
        Gravity::South,
        Gravity::SouthWest,
        Gravity::West,
        Gravity::NorthWest,
    ][usize::from(selector) % 9];
    Options {
        width,
        height,
        fit,
        gravity,
        format,
        quality: 75,
        progressive: selector & 0x80 != 0,
        // Fastest: the output is tiny and the encoder's speed is not what is under test.
        avif_speed: 10,
        format_quality: FormatQuality::default(),
        max_bytes: (selector & 0x80 != 0).then_some(2048),
        keep_metadata: selector & 0x80 != 0,
        // The geometry and filter options (dpr, crop, rotate, pad, blur, ...) at their
        // defaults: this target is about hostile bytes, not option combinations.
        ..Options::default()
    }
}

/// The contract between admission ([`tessera_resize::probe`]) and the worker
/// ([`tessera_resize::Pipeline::process`]) on one input, and the output's bounds.
pub fn check_resize(
    probed: &Result<Probe, ResizeError>,
    served: &Result<Output, ResizeError>,
    limits: &Limits,
) {
    match (probed, served) {
        (Err(refused), Err(failed)) => assert_eq!(
            refused.code(),
            failed.code(),
            "probe refused with {refused}, the pipeline with {failed}"
        ),
        (Err(refused), Ok(output)) => panic!(
            "probe refused ({refused}) what the pipeline served as a {}x{} {:?}",
            output.width, output.height, output.format
        ),
        (Ok(_), Err(_)) => {}
        (Ok(probe), Ok(output)) => {
            assert_eq!(probe.input_format, output.input_format);
            assert_eq!(
                (probe.output_width, probe.output_height),
                (output.width, output.height),
                "probe predicted another output size"
            );
            // Auto without WebP/AVIF predicts PNG for an input with alpha; an image whose
            // every pixel is opaque is answered as JPEG instead (see `Probe::output_format`).
            assert!(
                probe.output_format == output.format
                    || (probe.output_format == OutputFormat::Png
                        && output.format == OutputFormat::Jpeg),
                "probe predicted {:?}, the pipeline answered {:?}",
                probe.output_format,
                output.format
            );
            let pixels = u64::from(output.width) * u64::from(output.height);
            assert!(output.width > 0 && output.height > 0 && pixels <= limits.output_pixels_max);
            assert!(!output.bytes.is_empty());
        }
    }
}

/// A refusal by an edge parser must be the client's fault (4xx) and carry a code.
pub fn assert_client_error(error: &tessera_edge::http::error::ApiError) {
    assert!(
        error.status.is_client_error() && !error.code.as_str().is_empty(),
        "a parser refused with {} {}: {}",
        error.status,
        error.code,
        error.message
    );
}

/// `params::parse` on `query` and `accept` with the node's defaults: a refusal is a client
/// error, and what parses is valid for the pipeline and survives a round trip through
/// `params::to_query`.
pub fn check_query(query: &str, accept: Option<&str>, limits: &Limits) {
    use tessera_edge::http::params;
    let defaults = params::Defaults {
        quality: 80,
        avif_speed: 8,
    };
    match params::parse(query, accept, defaults, limits) {
        Err(e) => assert_client_error(&e),
        Ok(parsed) => {
            parsed
                .options
                .validate(limits)
                .expect("parsed options are valid for the pipeline");
            let canonical = params::to_query(&parsed.options);
            let again = params::parse(&canonical, accept, defaults, limits)
                .unwrap_or_else(|e| panic!("{canonical:?} does not parse: {}", e.message));
            assert_eq!(
                again, parsed,
                "{query:?} and its canonical form {canonical:?} differ"
            );
        }
    }
}

