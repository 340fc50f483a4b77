//! Encoders: JPEG (libjpeg-turbo via `mozjpeg`), PNG (`png`), WebP (libwebp via `libwebp-sys`),
//! AVIF (rav1e via `ravif`), GIF (`gif`, one frame here; animations in `crate::animation`).
//! By default nothing but pixels is written: no EXIF, ICC, XMP or comments (pixels are
//! already sRGB and upright, so nothing of the input's metadata is needed). With
//! `strip=false` the [`Kept`] metadata goes in: the ICC profile in JPEG (`APP2`), PNG
//! (`iCCP`) and WebP (`ICCP`, through libwebp's mux), the rights-only EXIF block in JPEG
//! (`APP1`), PNG (`eXIf`), WebP (`EXIF`) and AVIF (an `Exif` item); AVIF gets no profile
//! (`ravif` writes no `colr` ICC box) and GIF nothing, so the pipeline converts their pixels
//! to sRGB as usual.
//!
//! JPEG uses libjpeg-turbo's classic settings (`set_fastest_defaults`: standard quantisation
//! tables, no trellis quantisation) with optimised Huffman tables and 4:2:0 chroma: mozjpeg's
//! trellis mode makes files ~10% smaller but costs several times the encode time, which for
//! thumbnails is most of the request. AVIF runs single-threaded (the node parallelises across
//! requests) with a speed floor that rises with the output size ([`avif_speed_min`]) so a
//! request cannot take minutes. rav1e is built with its `asm` feature (nasm, already needed
//! by libjpeg-turbo): it halves the encode of a 400 px thumbnail (seeding-256k.jpg at speed
//! 8: 363 → 162 ms, `benches/formats.rs`, docs/BENCHMARKS.md) for ~40 s more of a clean
//! build on 2 cores. (An earlier measurement, 16 % at speed 8, had left it out.) The default
//! speed is 9: against 8 it halves the encode again for 0.15–0.26 dB less PSNR at equal
//! bytes, still 0.95–1.24 dB above libvips' AVIF at its size (docs/BENCHMARKS.md); 10 would be another 3x but falls
//! below libvips' quality at equal bytes.
//!
//! WebP imports the pixels straight into YUV (`use_argb = 0`, as libvips does; lossy WebP is
//! YUV 4:2:0 whatever the import): the same bytes, 0.1–1.6 ms less of an 8–10 ms encode.
//! Two other levers were measured and left out: `libwebp-sys`'s `sse41` feature (no
//! measurable change, and it would make SSE4.1 a requirement of the binary) and libwebp's
//! `method` 2 instead of 4 (half the encode, but 0.3–0.6 dB less PSNR at equal bytes, below
//! libvips'). Every other setting stays libwebp's default too, each measured alone
//! (`cargo bench --workspace --bench formats -- --webp-settings`): method 3 is method 4;
//! `segments` 1 skips the analysis pass but switches off spatial noise shaping, which SSIM
//! sees; `pass`, `autofilter` and `preprocessing` cost time for nothing; `use_sharp_yuv`
//! does nothing on a YUV import. `libwebp-sys` stays at 0.9 (libwebp 1.3.1 with the
//! CVE-2023-4863 fix, which is in the decoder we do not call): 0.14's libwebp 1.6.0 encoded
//! the same 400 px thumbnail no faster (9.3–11.3 ms against 9.3–9.9). See
//! docs/BENCHMARKS.md, "WebP and AVIF output (#18)".
//!
//! Cancellation: JPEG and PNG are written in bands of [`ROWS_PER_CHECK`] rows with a stop
//! check between bands; WebP goes through libwebp directly (`libwebp-sys`) because only
//! there can its progress hook, called several times per encode, abort the encode; AVIF (rav1e via `ravif`) has no hook and runs to the end once started,
//! which `Limits::avif_output_pixels_max` bounds.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Compress};

use crate::cancel::{self, Stop, ROWS_PER_CHECK};
use crate::error::panic_message;
use crate::metadata::Kept;
use crate::options::avif_speed_min;
use crate::{OutputFormat, ResizeError};

/// An 8-bit interleaved image to encode.
pub(crate) struct Frame<'a> {
    pub pixels: &'a [u8],
    pub width: u32,
    pub height: u32,
    /// 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA).
    pub channels: u8,
}

/// Encoder settings taken from the request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EncodeSettings {
    pub quality: u8,
    pub progressive: bool,
    pub avif_speed: u8,
}

/// Profile bytes in one JPEG `APP2` segment (65535 less the length field and the
/// 14-byte `ICC_PROFILE` header).
const JPEG_ICC_SEGMENT_BYTES: usize = 65_519;

/// The largest ICC profile an output carries: what 255 JPEG segments hold (~16 MB, far over
/// `Limits::metadata_bytes_max`'s default); a larger one is applied to the pixels instead.
pub(crate) const ICC_BYTES_MAX: usize = 255 * JPEG_ICC_SEGMENT_BYTES;

/// Whether `format` can carry an ICC profile here: where it cannot, pixels are converted
/// to sRGB even when `strip=false` keeps the metadata.
pub(crate) fn carries_icc(format: OutputFormat) -> bool {
    matches!(
        format,
        OutputFormat::Jpeg | OutputFormat::Png | OutputFormat::WebP
    )
}

/// Encodes `frame` as `format` into `out` (cleared first), with the `kept` metadata the
/// format can carry. The frame's channels must suit the format: JPEG takes 1 or 3, WebP 3
/// or 4, AVIF 3 or 4, PNG any.
pub(crate) fn encode(
    format: OutputFormat,
    frame: &Frame<'_>,
    settings: EncodeSettings,
    kept: &Kept,
    out: &mut Vec<u8>,
    stop: Stop<'_>,
) -> Result<(), ResizeError> {
    out.clear();
    cancel::check(stop)?;
    match catch_unwind(AssertUnwindSafe(|| match format {
        OutputFormat::Jpeg => encode_jpeg(frame, settings, kept, out, stop),
        OutputFormat::Png => encode_png(frame, kept, out, stop),
        OutputFormat::WebP => {
            encode_webp(frame, settings, out, stop)?;
            webp_with_metadata(out, kept)
        }
        OutputFormat::Avif => encode_avif(frame, settings, kept, out),
        OutputFormat::Gif => crate::animation::encode_still_gif(
            frame.pixels,
            frame.width,
            frame.height,
            frame.channels,
            out,
        ),
    })) {
        Ok(result) => result,
        Err(payload) => Err(ResizeError::Encode(panic_message(
            payload.as_ref(),
            "encoder panicked",
        ))),
    }
}

fn encode_jpeg(
    frame: &Frame<'_>,
    settings: EncodeSettings,
    kept: &Kept,
    out: &mut Vec<u8>,
    stop: Stop<'_>,
) -> Result<(), ResizeError> {
    let space = match frame.channels {
        1 => ColorSpace::JCS_GRAYSCALE,
        3 => ColorSpace::JCS_RGB,
        n => {
            return Err(ResizeError::Encode(format!(
                "JPEG cannot take {n} channels"
            )))
        }
    };
    if frame.width > 65_535 || frame.height > 65_535 {
        return Err(ResizeError::Encode(
            "JPEG is limited to 65535 pixels per side".to_owned(),
        ));
    }
    let mut c = Compress::new(space);
    c.set_fastest_defaults();
    c.set_size(frame.width as usize, frame.height as usize);
    c.set_quality(f32::from(settings.quality));
    c.set_optimize_coding(true);
    if settings.progressive {
        c.set_progressive_mode();
    }
    if frame.channels == 3 {
        // 4:2:0, as libvips and browsers' encoders do below quality 90.
        let sampling = if settings.quality >= 90 {
            (1, 1)
        } else {
            (2, 2)
        };
        c.set_chroma_sampling_pixel_sizes(sampling, sampling);
    }
    let started = c
        .start_compress(std::mem::take(out))
        .map_err(|e| ResizeError::Encode(format!("JPEG: {e}")))?;
    let mut started = started;
    if let Some(exif) = &kept.exif {
        // One APP1 segment holds at most 65533 bytes; the rebuilt block is a few hundred.
        let mut app1 = Vec::with_capacity(6 + exif.len());
        app1.extend_from_slice(b"Exif\0\0");
        app1.extend_from_slice(exif);
        if app1.len() <= 65_533 {
            started.write_marker(mozjpeg::Marker::APP(1), &app1);
        }
    }
    if let Some(icc) = kept.icc.as_deref() {
        // `ICC_PROFILE\0`, the segment's number counted from 1, the count, then the data
        // (ICC.1 B.4). Not `write_icc_profile`: `mozjpeg` numbers its segments from 0,
        // which readers that check the numbering (zune-jpeg, so `image`) drop.
        let chunks = icc.chunks(JPEG_ICC_SEGMENT_BYTES);
        let count = chunks.len() as u8; // at most 255: `ICC_BYTES_MAX`
        let mut app2 = Vec::with_capacity(14 + JPEG_ICC_SEGMENT_BYTES.min(icc.len()));
        for (i, chunk) in chunks.enumerate() {
            app2.clear();
            app2.extend_from_slice(b"ICC_PROFILE\0");
            app2.push(i as u8 + 1);
            app2.push(count);
            app2.extend_from_slice(chunk);
            started.write_marker(mozjpeg::Marker::APP(2), &app2);
        }
    }
    let row_bytes = frame.width as usize * usize::from(frame.channels);
    for band in frame.pixels.chunks(row_bytes * ROWS_PER_CHECK) {
        // Dropping `started` destroys the compressor (`mozjpeg`'s `Drop`).
        cancel::check(stop)?;
        started
            .write_scanlines(band)
            .map_err(|e| ResizeError::Encode(format!("JPEG: {e}")))?;
    }
    *out = started
        .finish()
        .map_err(|e| ResizeError::Encode(format!("JPEG: {e}")))?;
    Ok(())
}

fn encode_png(
    frame: &Frame<'_>,
    kept: &Kept,
    out: &mut Vec<u8>,
    stop: Stop<'_>,
) -> Result<(), ResizeError> {
    let err = |e: png::EncodingError| ResizeError::Encode(format!("PNG: {e}"));
    let color = match frame.channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    };
    // The settings `image`'s `PngEncoder` used here before (CompressionType::Default,
    // FilterType::Adaptive), written through a stream so rows go in bands.
    let mut info = png::Info::with_size(frame.width, frame.height);
    info.color_type = color;
    info.bit_depth = png::BitDepth::Eight;
    info.icc_profile = kept.icc.as_deref().map(std::borrow::Cow::Borrowed);
    info.exif_metadata = kept.exif.as_deref().map(std::borrow::Cow::Borrowed);
    let mut encoder = png::Encoder::with_info(&mut *out, info).map_err(err)?;
    encoder.set_compression(png::Compression::Balanced);
    encoder.set_filter(png::Filter::Adaptive);
    let mut writer = encoder.write_header().map_err(err)?;
    let mut stream = writer.stream_writer().map_err(err)?;
    let row_bytes = frame.width as usize * usize::from(frame.channels);
    for band in frame.pixels.chunks(row_bytes * ROWS_PER_CHECK) {
        cancel::check(stop)?;
        std::io::Write::write_all(&mut stream, band)
            .map_err(|e| ResizeError::Encode(format!("PNG: {e}")))?;
    }
    stream.finish().map_err(err)?;
    writer.finish().map_err(err)
}

/// libwebp's progress hook: returning 0 aborts the encode (`VP8_ENC_ERROR_USER_ABORT`).
/// `user_data` points at the caller's [`Stop`] for the duration of `WebPEncode`.
pub(crate) unsafe extern "C" fn webp_progress(
    _percent: i32,
    picture: *const libwebp_sys::WebPPicture,
) -> i32 {
    // SAFETY: `encode_webp` sets `user_data` to a `Stop` that outlives `WebPEncode`.
    let stop = unsafe { &*((*picture).user_data as *const Stop<'_>) };
    // A panicking stop check must not unwind into C: it counts as a stop.
    match catch_unwind(AssertUnwindSafe(stop)) {
        Ok(false) => 1,
        _ => 0,
    }
}

fn encode_webp(
    frame: &Frame<'_>,
    settings: EncodeSettings,
    out: &mut Vec<u8>,
    stop: Stop<'_>,
) -> Result<(), ResizeError> {
    use libwebp_sys as ffi;
    let import = match frame.channels {
        3 => ffi::WebPPictureImportRGB,
        4 => ffi::WebPPictureImportRGBA,
        n => {
            return Err(ResizeError::Encode(format!(
                "WebP cannot take {n} channels"
            )))
        }
    };
    if frame.width > 16_383 || frame.height > 16_383 {
        return Err(ResizeError::Encode(
            "WebP is limited to 16383 pixels per side".to_owned(),
        ));
    }
    let stride = frame.width as usize * usize::from(frame.channels);
    if frame.pixels.len() < stride * frame.height as usize {
        return Err(ResizeError::Encode("WebP: short pixel buffer".to_owned()));
    }
    // The settings `webp::Encoder::encode_simple(false, quality)` used before (the `webp`
    // crate hides the progress hook): lossy, compressed alpha.
    let mut config =
        ffi::WebPConfig::new().map_err(|()| ResizeError::Encode("WebP: config".to_owned()))?;
    config.lossless = 0;
    config.alpha_compression = 1;
    config.quality = f32::from(settings.quality);
    let mut picture =
        ffi::WebPPicture::new().map_err(|()| ResizeError::Encode("WebP: picture".to_owned()))?;
    // Lossy WebP is YUV 4:2:0: importing straight into YUV saves the ARGB copy and the
    // second conversion pass `use_argb = 1` costs (libvips imports the same way).
    picture.use_argb = 0;
    picture.width = frame.width as i32;
    picture.height = frame.height as i32;
    let mut writer = std::mem::MaybeUninit::<ffi::WebPMemoryWriter>::uninit();
    // SAFETY: the pixel buffer holds `height` rows of `stride` bytes (checked above); the
    // writer is initialised before use and cleared after; `user_data` points at `stop`,
    // which outlives `WebPEncode`; the picture is freed on every path after the import.
    let (ok, error) = unsafe {
        if import(&mut picture, frame.pixels.as_ptr(), stride as i32) == 0 {
            ffi::WebPPictureFree(&mut picture);
            return Err(ResizeError::Encode(
                "WebP: out of memory importing".to_owned(),
            ));
        }
        ffi::WebPMemoryWriterInit(writer.as_mut_ptr());
        picture.writer = Some(ffi::WebPMemoryWrite);
        picture.custom_ptr = writer.as_mut_ptr().cast();
        picture.progress_hook = Some(webp_progress);
        picture.user_data = (&stop as *const Stop<'_>).cast_mut().cast();
        let ok =
            ffi::WebPValidateConfig(&config) != 0 && ffi::WebPEncode(&config, &mut picture) != 0;
        let mut writer = writer.assume_init();
        if ok && !writer.mem.is_null() {
            out.extend_from_slice(std::slice::from_raw_parts(writer.mem, writer.size));
        }
        ffi::WebPMemoryWriterClear(&mut writer);
        ffi::WebPPictureFree(&mut picture);
        (ok, picture.error_code)
    };
    match (ok, error) {
        (true, _) => Ok(()),
        (false, ffi::WebPEncodingError::VP8_ENC_ERROR_USER_ABORT) => Err(ResizeError::Cancelled),
        (false, e) => Err(ResizeError::Encode(format!("WebP: {e:?}"))),
    }
}

fn encode_avif(
    frame: &Frame<'_>,
    settings: EncodeSettings,
    kept: &Kept,
    out: &mut Vec<u8>,
) -> Result<(), ResizeError> {
    let pixels = u64::from(frame.width) * u64::from(frame.height);
    let speed = settings.avif_speed.clamp(1, 10).max(avif_speed_min(pixels));
    let mut encoder = ravif::Encoder::new()
        .with_quality(f32::from(settings.quality))
        .with_alpha_quality(f32::from(settings.quality))
        .with_speed(speed)
        .with_num_threads(Some(1));
    if let Some(exif) = &kept.exif {
        encoder = encoder.with_exif(exif.as_slice());
    }
    let (w, h) = (frame.width as usize, frame.height as usize);
    let encoded = match frame.channels {
        3 => {
            let px: Vec<ravif::RGB8> = frame
                .pixels
                .chunks_exact(3)
                .map(|p| ravif::RGB8::new(p[0], p[1], p[2]))
                .collect();
            encoder.encode_rgb(ravif::Img::new(&px[..], w, h))
        }
        4 => {
            let px: Vec<ravif::RGBA8> = frame
                .pixels
                .chunks_exact(4)
                .map(|p| ravif::RGBA8::new(p[0], p[1], p[2], p[3]))
                .collect();
            encoder.encode_rgba(ravif::Img::new(&px[..], w, h))
        }
        n => {
            return Err(ResizeError::Encode(format!(
                "AVIF cannot take {n} channels"
            )))
        }
    }
    .map_err(|e| ResizeError::Encode(format!("AVIF: {e}")))?;
    *out = encoded.avif_file;
    Ok(())
}

/// Adds the `kept` ICC profile and EXIF block to an encoded still WebP in `out` (a VP8X
/// container is made around the bitstream by libwebp's mux); nothing to add leaves it as is.
fn webp_with_metadata(out: &mut Vec<u8>, kept: &Kept) -> Result<(), ResizeError> {
    use libwebp_sys as ffi;
    if kept.icc.is_none() && kept.exif.is_none() {
        return Ok(());
    }
    let failed = |what: &str, e: ffi::WebPMuxError| {
        ResizeError::Encode(format!("WebP: adding metadata, {what}: {e:?}"))
    };
    let image = ffi::WebPData {
        bytes: out.as_ptr(),
        size: out.len(),
    };
    // SAFETY: every `WebPData` handed to the mux points at a live buffer (`out`, `kept`'s),
    // copied by the mux (`copy_data` 1) before they are touched again; the assembled data
    // is copied out and freed; the mux is deleted on every path once created.
    unsafe {
        let mux = ffi::WebPMuxCreateInternal(&image, 1, ffi::WEBP_MUX_ABI_VERSION as _);
        if mux.is_null() {
            return Err(ResizeError::Encode(
                "WebP: the encoder's output did not parse for metadata".to_owned(),
            ));
        }
        let chunks = [
            (c"ICCP", kept.icc.as_deref()),
            (c"EXIF", kept.exif.as_deref()),
        ];
        for (fourcc, data) in chunks {
            let Some(data) = data else { continue };
            let chunk = ffi::WebPData {
                bytes: data.as_ptr(),
                size: data.len(),
            };
            let e = ffi::WebPMuxSetChunk(mux, fourcc.as_ptr(), &chunk, 1);
            if e != ffi::WebPMuxError::WEBP_MUX_OK {
                ffi::WebPMuxDelete(mux);
                return Err(failed("chunk", e));
            }
        }
        let mut assembled = ffi::WebPData::default();
        let e = ffi::WebPMuxAssemble(mux, &mut assembled);
        ffi::WebPMuxDelete(mux);
        if e != ffi::WebPMuxError::WEBP_MUX_OK {
            ffi::WebPDataClear(&mut assembled);
            return Err(failed("assembling", e));
        }
        out.clear();
        out.extend_from_slice(std::slice::from_raw_parts(assembled.bytes, assembled.size));
        ffi::WebPDataClear(&mut assembled);
    }
    Ok(())
}
