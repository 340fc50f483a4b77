//! Bounded decoding of JPEG, PNG, WebP and GIF into an 8-bit interleaved buffer.
//!
//! Each decoder runs in two steps: read the header (dimensions, frame count, EXIF
//! orientation, ICC profile), check every [`Limits`] bound, and only then allocate and decode
//! pixels. JPEG goes through libjpeg-turbo (via `mozjpeg`) because it is the fastest decoder
//! and can scale by 1/2, 1/4 or 1/8 in the DCT domain ("shrink-on-load"), which the caller
//! chooses from the header through a callback. PNG and GIF use `image`'s decoders, WebP uses
//! `image-webp` directly (`image`'s wrapper hides the frame count). The pixel buffer is the
//! caller's and is reused between calls.
//!
//! Output is always 8-bit: 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels. CMYK
//! JPEGs are converted to RGB here (see [`crate::color`]); 16-bit PNGs are rounded to 8 bits.
//!
//! libjpeg reports fatal errors by calling an `error_exit` hook that must not return; the
//! `mozjpeg` crate and this module unwind out of it (`resume_unwind`, so no panic message is
//! printed) and the unwind is caught here and turned into [`ResizeError::Corrupt`]. Two
//! warnings are made fatal too: premature end of data (a truncated file would otherwise be
//! padded with grey) and more than [`JPEG_SCANS_MAX`] scans (a known CPU-exhaustion trick with
//! progressive JPEGs; libjpeg-turbo's own tools use the same bound).

use std::cell::Cell;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use image::{ColorType, ImageDecoder};
use mozjpeg::{ColorSpace, Decompress, Marker};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr};

use crate::color;
use crate::error::panic_message;
use crate::{InputFormat, Limits, ResizeError};

/// Most scans accepted in one JPEG (libjpeg-turbo's `TJFLAG_LIMITSCANS` uses the same value).
pub const JPEG_SCANS_MAX: u32 = 500;

/// What the header of an image declares, before any pixel is decoded.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// Stored (un-oriented) width.
    pub width: u32,
    /// Stored (un-oriented) height.
    pub height: u32,
    /// EXIF orientation, 1..=8 (1 when absent or invalid).
    pub orientation: u8,
}

/// A decoded image whose pixels are in the caller's buffer.
#[derive(Debug)]
pub(crate) struct Decoded {
    pub width: u32,
    pub height: u32,
    /// 1, 2, 3 or 4 interleaved 8-bit channels.
    pub channels: u8,
    pub orientation: u8,
    /// An embedded ICC profile for RGB data that still has to be applied (CMYK and gray
    /// profiles are handled during decoding or ignored).
    pub icc: Option<Vec<u8>>,
}

/// Reusable buffers for decoding.
#[derive(Default)]
pub(crate) struct DecodeBuffers {
    /// The decoded 8-bit pixels.
    pub pixels: Vec<u8>,
    /// Scratch for 16-bit and CMYK data before conversion.
    pub scratch: Vec<u8>,
}

/// Decodes `input`, calling `plan` with the header once every limit is checked; for JPEG the
/// returned numerator (1, 2, 4 or 8, over 8) scales the decode in the DCT domain, the other
/// formats ignore it.
pub(crate) fn decode(
    format: InputFormat,
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<u8, ResizeError>,
) -> Result<Decoded, ResizeError> {
    // Defence in depth: a panic in any decoder on hostile input is a refusal, not a crash.
    match catch_unwind(AssertUnwindSafe(|| match format {
        InputFormat::Jpeg => decode_jpeg(input, limits, bufs, plan),
        InputFormat::Png => decode_png(input, limits, bufs, plan),
        InputFormat::Gif => decode_gif(input, limits, bufs, plan),
        InputFormat::WebP => decode_webp(input, limits, bufs, plan),
    })) {
        Ok(result) => result,
        Err(payload) => Err(ResizeError::Corrupt(panic_message(
            payload.as_ref(),
            "decoder failed",
        ))),
    }
}

/// Resizes `buf` to exactly `len` bytes without copying old contents that will be overwritten.
fn prepare(buf: &mut Vec<u8>, len: usize) -> Result<&mut [u8], ResizeError> {
    buf.clear();
    buf.try_reserve(len)
        .map_err(|_| ResizeError::Corrupt(format!("cannot allocate {len} bytes")))?;
    buf.resize(len, 0);
    Ok(&mut buf[..len])
}

// ---------------------------------------------------------------- JPEG

thread_local! {
    /// Scans seen by the JPEG decoder running on this thread (libjpeg's error manager has no
    /// room for user data, and a decode never migrates between threads).
    static JPEG_SCANS: Cell<u32> = const { Cell::new(0) };
}

const JTRC_SOS: i32 = mozjpeg_sys::JTRC_SOS;
const JWRN_JPEG_EOF: i32 = mozjpeg_sys::JWRN_JPEG_EOF;

fn jpeg_message(cinfo: &mut jpeg_common_struct) -> String {
    // SAFETY: `err` is the error manager libjpeg is calling us through, so it is valid;
    // `format_message` writes at most JMSG_LENGTH_MAX (80) bytes including the NUL.
    unsafe {
        let Some(err) = cinfo.err.as_ref() else {
            return "libjpeg error".to_owned();
        };
        match err.format_message {
            Some(format) => {
                let buffer = [0u8; 80];
                format(cinfo, &buffer);
                let text = buffer.split(|&c| c == 0).next().unwrap_or_default();
                String::from_utf8_lossy(text).into_owned()
            }
            None => format!("libjpeg error {}", err.msg_code),
        }
    }
}

unsafe extern "C-unwind" fn jpeg_error_exit(cinfo: &mut jpeg_common_struct) {
    let message = jpeg_message(cinfo);
    // `resume_unwind` skips the panic hook: a corrupt upload prints nothing.
    std::panic::resume_unwind(Box::new(message));
}

unsafe extern "C-unwind" fn jpeg_emit_message(cinfo: &mut jpeg_common_struct, level: i32) {
    // SAFETY: as in `jpeg_message`.
    let code = unsafe { cinfo.err.as_ref().map_or(0, |e| e.msg_code) };
    if level < 0 && code == JWRN_JPEG_EOF {
        std::panic::resume_unwind(Box::new("truncated JPEG: premature end of data".to_owned()));
    }
    if level == 1 && code == JTRC_SOS {
        let scans = JPEG_SCANS.with(|s| {
            s.set(s.get() + 1);
            s.get()
        });
        if scans > JPEG_SCANS_MAX {
            std::panic::resume_unwind(Box::new(format!(
                "JPEG has more than {JPEG_SCANS_MAX} scans"
            )));
        }
    }
}

fn jpeg_error_mgr() -> jpeg_error_mgr {
    // SAFETY: an all-zero error manager is what `jpeg_std_error` expects to fill in.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    // SAFETY: `err` is a valid, exclusively borrowed error manager.
    unsafe { mozjpeg_sys::jpeg_std_error(&mut err) };
    err.error_exit = Some(jpeg_error_exit);
    err.emit_message = Some(jpeg_emit_message);
    // Level-1 trace messages include one per scan (JTRC_SOS), which we count.
    err.trace_level = 1;
    err
}

const JPEG_MARKERS: &[Marker] = &[Marker::APP(1), Marker::APP(2), Marker::APP(14)];

/// Largest DCT scale numerator (over 8) at which trailing AC refinement scans of a
/// progressive JPEG are skipped (see [`trailing_refinement_scans`]).
const PROGRESSIVE_TRIM_SCALE_MAX: u8 = 2;

/// The bytes libjpeg reads: the whole input, or a prefix followed by a synthetic EOI.
type JpegInput<'a> = std::io::Chain<&'a [u8], &'a [u8]>;

trait JpegInputExt<'a> {
    fn full(input: &'a [u8]) -> JpegInput<'a>;
    fn trimmed(input: &'a [u8], cut: usize) -> JpegInput<'a>;
}

impl<'a> JpegInputExt<'a> for JpegInput<'a> {
    fn full(input: &'a [u8]) -> JpegInput<'a> {
        std::io::Read::chain(input, &[][..])
    }
    fn trimmed(input: &'a [u8], cut: usize) -> JpegInput<'a> {
        std::io::Read::chain(&input[..cut], &[0xFF, 0xD9][..])
    }
}

/// For a complete progressive JPEG (SOF2 ... EOI), the offset where its trailing run of luma
/// AC successive-approximation refinement scans (one component, Ss >= 1, Ah >= 1) begins, if
/// there is one.
///
/// Such a scan only adds the least significant bit of the luma AC coefficients, yet in the
/// standard scan script (libjpeg's `jpeg_simple_progression`) it is the last scan and about
/// half of the file (48% of `seeding_by_Clements_Engelhardt.jpg`), so about half of the
/// entropy decoding, which bounds decoding time. When the decode is scaled to 1/4 or 1/8 and
/// then resampled further, that bit does not reach the output. Measured on that photo, fit
/// in 400x400, JPEG q80 (`benches/versus_vips.rs`): PSNR against the float reference 36.50 →
/// 36.51 dB (libvips: 36.50 dB), CPU per conversion 124 → 84 ms. Dropping the chroma
/// refinement scans as well saved another ~9 ms but cost 0.03 dB, so they are kept, and so
/// is every scan before the trailing run (the DC refinement among them).
fn trailing_refinement_scans(input: &[u8]) -> Option<usize> {
    let mut pos = 2; // after SOI
    let mut progressive = false;
    let mut luma_id = None;
    // (offset of the SOS marker, is a luma AC refinement scan)
    let mut scans: Vec<(usize, bool)> = Vec::new();
    loop {
        // At a marker (possibly preceded by fill bytes).
        while input.get(pos) == Some(&0xFF) && input.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if input.get(pos) != Some(&0xFF) {
            return None;
        }
        let marker = *input.get(pos + 1)?;
        if marker == 0xD9 {
            break; // EOI: the file is complete
        }
        let len = usize::from(u16::from_be_bytes([
            *input.get(pos + 2)?,
            *input.get(pos + 3)?,
        ]));
        let segment = input.get(pos + 4..pos + 2 + len)?;
        match marker {
            0xC2 => {
                progressive = true;
                // Frame header: P, Y, X, Nf, then (id, sampling, table) per component.
                luma_id = segment.get(6).copied();
            }
            0xDA => {
                let ns = usize::from(*segment.first()?);
                let tail = segment.get(1 + 2 * ns..1 + 2 * ns + 3)?;
                let (ss, ah) = (tail[0], tail[2] >> 4);
                let luma_only = ns == 1 && segment.get(1).copied() == luma_id;
                scans.push((pos, luma_only && ss >= 1 && ah >= 1));
                // Skip the entropy-coded data: up to the next marker that is not a stuffed
                // zero or a restart marker.
                pos += 2 + len;
                loop {
                    let ff = pos + input.get(pos..)?.iter().position(|&b| b == 0xFF)?;
                    let next = *input.get(ff + 1)?;
                    if next == 0x00 || (0xD0..=0xD7).contains(&next) || next == 0xFF {
                        pos = ff + 1;
                        continue;
                    }
                    pos = ff;
                    break;
                }
                continue;
            }
            _ => {}
        }
        pos += 2 + len;
    }
    if !progressive {
        return None;
    }
    let keep = scans.iter().rposition(|&(_, refinement)| !refinement)?;
    scans.get(keep + 1).map(|&(offset, _)| offset)
}

fn decode_jpeg(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<u8, ResizeError>,
) -> Result<Decoded, ResizeError> {
    // libjpeg errors unwind as panics; `decode` catches them for every format.
    JPEG_SCANS.with(|s| s.set(0));
    decode_jpeg_inner(input, limits, bufs, plan)
}

fn decode_jpeg_inner(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<u8, ResizeError>,
) -> Result<Decoded, ResizeError> {
    let mut dec = Decompress::with_markers(JPEG_MARKERS)
        .with_err(jpeg_error_mgr())
        .from_reader(JpegInput::full(input))
        .map_err(|e| ResizeError::Corrupt(format!("JPEG header: {e}")))?;
    let (width, height) = (dec.width() as u32, dec.height() as u32);
    limits.check_dimensions(width, height)?;

    let mut orientation = 1;
    let mut adobe = false;
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    for m in dec.markers() {
        match m.marker {
            Marker::APP(1) if m.data.starts_with(b"Exif\0\0") => {
                if let Some(o) = Orientation::from_exif_chunk(&m.data[6..]) {
                    orientation = o.to_exif();
                }
            }
            Marker::APP(2) if m.data.starts_with(b"ICC_PROFILE\0") && m.data.len() > 14 => {
                icc_chunks.push((m.data[12], &m.data[14..]));
            }
            Marker::APP(14) if m.data.starts_with(b"Adobe") => adobe = true,
            _ => {}
        }
    }
    icc_chunks.sort_by_key(|c| c.0);
    let icc: Option<Vec<u8>> = (!icc_chunks.is_empty()).then(|| {
        icc_chunks
            .iter()
            .flat_map(|c| c.1.iter().copied())
            .collect()
    });

    let header = Header {
        width,
        height,
        orientation,
    };
    let scale = plan(&header)?.clamp(1, 8);
    if scale <= PROGRESSIVE_TRIM_SCALE_MAX {
        if let Some(cut) = trailing_refinement_scans(input) {
            // Re-read the header from the trimmed stream (markers only: microseconds).
            drop(dec);
            JPEG_SCANS.with(|s| s.set(0));
            dec = Decompress::with_markers(&[])
                .with_err(jpeg_error_mgr())
                .from_reader(JpegInput::trimmed(input, cut))
                .map_err(|e| ResizeError::Corrupt(format!("JPEG header: {e}")))?;
        }
    }
    dec.scale(scale);
    // Smoothing only matters for incomplete progressive scans (buffered-image mode).
    dec.do_block_smoothing(false);

    let (out_space, channels) = match dec.color_space() {
        ColorSpace::JCS_GRAYSCALE => (ColorSpace::JCS_GRAYSCALE, 1u8),
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => (ColorSpace::JCS_CMYK, 4u8),
        _ => (ColorSpace::JCS_RGB, 3u8),
    };
    let mut started = dec
        .to_colorspace(out_space)
        .map_err(|e| ResizeError::Corrupt(format!("JPEG: {e}")))?;
    let (w, h) = (started.width() as u32, started.height() as u32);
    let len = w as usize * h as usize * usize::from(channels);

    if out_space == ColorSpace::JCS_CMYK {
        let cmyk = prepare(&mut bufs.scratch, len)?;
        started
            .read_scanlines_into(cmyk)
            .map_err(|e| ResizeError::Corrupt(format!("JPEG: {e}")))?;
        started
            .finish()
            .map_err(|e| ResizeError::Corrupt(format!("JPEG: {e}")))?;
        let rgb = prepare(&mut bufs.pixels, w as usize * h as usize * 3)?;
        color::cmyk_to_rgb(&bufs.scratch[..len], rgb, adobe, icc.as_deref());
        return Ok(Decoded {
            width: w,
            height: h,
            channels: 3,
            orientation,
            icc: None,
        });
    }

    let pixels = prepare(&mut bufs.pixels, len)?;
    started
        .read_scanlines_into(pixels)
        .map_err(|e| ResizeError::Corrupt(format!("JPEG: {e}")))?;
    started
        .finish()
        .map_err(|e| ResizeError::Corrupt(format!("JPEG: {e}")))?;
    // A gray profile is ignored (gray is treated as sRGB gray).
    let icc = if channels == 3 { icc } else { None };
    Ok(Decoded {
        width: w,
        height: h,
        channels,
        orientation,
        icc,
    })
}

// ---------------------------------------------------------------- PNG

/// Frame count of an APNG from its `acTL` chunk (1 for a still PNG), walking chunk headers
/// up to the first `IDAT` without decompressing anything.
fn apng_frames(input: &[u8]) -> u32 {
    let mut pos = 8;
    while pos + 8 <= input.len() {
        let len = u32::from_be_bytes([input[pos], input[pos + 1], input[pos + 2], input[pos + 3]]);
        let kind = &input[pos + 4..pos + 8];
        let data = pos + 8;
        if kind == b"IDAT" {
            break;
        }
        if kind == b"acTL" && data + 4 <= input.len() {
            return u32::from_be_bytes([
                input[data],
                input[data + 1],
                input[data + 2],
                input[data + 3],
            ]);
        }
        pos = data.saturating_add(len as usize).saturating_add(4);
    }
    1
}

fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    // Room for the largest accepted image at 16-bit RGBA plus decoder state.
    l.max_alloc = Some(limits.pixels_max.saturating_mul(8).saturating_add(64 << 20));
    l
}

fn decode_png(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<u8, ResizeError>,
) -> Result<Decoded, ResizeError> {
    let corrupt = |e: image::ImageError| ResizeError::Corrupt(format!("PNG: {e}"));
    let mut dec = image::codecs::png::PngDecoder::new(Cursor::new(input)).map_err(corrupt)?;
    let (width, height) = dec.dimensions();
    limits.check_dimensions(width, height)?;
    limits.check_frames(apng_frames(input))?;
    dec.set_limits(image_limits(limits)).map_err(corrupt)?;
    let orientation = dec.orientation().map(Orientation::to_exif).unwrap_or(1);
    let icc = dec.icc_profile().ok().flatten();
    plan(&Header {
        width,
        height,
        orientation,
    })?;
    let color = dec.color_type();
    let channels = color.channel_count();
    let len = dec.total_bytes() as usize;
    if color.bytes_per_pixel() == channels {
        let buf = prepare(&mut bufs.pixels, len)?;
        dec.read_image(buf).map_err(corrupt)?;
    } else {
        let wide = prepare(&mut bufs.scratch, len)?;
        dec.read_image(wide).map_err(corrupt)?;
        let narrow = prepare(&mut bufs.pixels, len / 2)?;
        for (out, v) in narrow.iter_mut().zip(bufs.scratch.chunks_exact(2)) {
            // The decoder wrote native-endian u16; round to the nearest 8-bit value.
            let v = u32::from(u16::from_ne_bytes([v[0], v[1]]));
            *out = ((v * 255 + 32_895) >> 16) as u8;
        }
    }
    let icc = if matches!(
        color,
        ColorType::Rgb8 | ColorType::Rgba8 | ColorType::Rgb16 | ColorType::Rgba16
    ) {
        icc
    } else {
        None
    };
    Ok(Decoded {
        width,
        height,
        channels,
        orientation,
        icc,
    })
}

// ---------------------------------------------------------------- GIF

/// Counts frames without decompressing their pixels (the LZW data is skipped, so the cost
/// is bounded by the input size, which is itself bounded).
fn gif_frames(input: &[u8]) -> Result<u32, ResizeError> {
    let corrupt = |e: gif::DecodingError| ResizeError::Corrupt(format!("GIF: {e}"));
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    options.skip_frame_decoding(true);
    options.check_frame_consistency(false);
    let mut dec = options.read_info(Cursor::new(input)).map_err(corrupt)?;
    let mut frames = 0u32;
    while dec.next_frame_info().map_err(corrupt)?.is_some() {
        frames = frames.saturating_add(1);
    }
    Ok(frames)
}

fn decode_gif(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<u8, ResizeError>,
) -> Result<Decoded, ResizeError> {
    let corrupt = |e: image::ImageError| ResizeError::Corrupt(format!("GIF: {e}"));
    let mut dec = image::codecs::gif::GifDecoder::new(Cursor::new(input)).map_err(corrupt)?;
    let (width, height) = dec.dimensions();
    limits.check_dimensions(width, height)?;
    let frames = gif_frames(input)?;
    if frames == 0 {
        return Err(ResizeError::Corrupt("GIF has no frames".to_owned()));
    }
    limits.check_frames(frames)?;
    dec.set_limits(image_limits(limits)).map_err(corrupt)?;
    plan(&Header {
        width,
        height,
        orientation: 1,
    })?;
    let channels = dec.color_type().channel_count();
    let buf = prepare(&mut bufs.pixels, dec.total_bytes() as usize)?;
    dec.read_image(buf).map_err(corrupt)?;
    Ok(Decoded {
        width,
        height,
        channels,
        orientation: 1,
        icc: None,
    })
}

// ---------------------------------------------------------------- WebP

fn decode_webp(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<u8, ResizeError>,
) -> Result<Decoded, ResizeError> {
    let corrupt = |e: image_webp::DecodingError| ResizeError::Corrupt(format!("WebP: {e}"));
    let mut dec = image_webp::WebPDecoder::new(Cursor::new(input)).map_err(corrupt)?;
    let (width, height) = dec.dimensions();
    limits.check_dimensions(width, height)?;
    if dec.is_animated() {
        limits.check_frames(dec.num_frames())?;
    }
    let orientation = dec
        .exif_metadata()
        .ok()
        .flatten()
        .and_then(|exif| Orientation::from_exif_chunk(&exif))
        .map_or(1, Orientation::to_exif);
    let icc = dec.icc_profile().ok().flatten();
    plan(&Header {
        width,
        height,
        orientation,
    })?;
    dec.set_memory_limit(
        usize::try_from(image_limits(limits).max_alloc.unwrap_or(u64::MAX)).unwrap_or(usize::MAX),
    );
    let channels: u8 = if dec.has_alpha() { 4 } else { 3 };
    let len = dec
        .output_buffer_size()
        .ok_or_else(|| ResizeError::Corrupt("WebP: image too large".to_owned()))?;
    let buf = prepare(&mut bufs.pixels, len)?;
    dec.read_image(buf).map_err(corrupt)?;
    Ok(Decoded {
        width,
        height,
        channels,
        orientation,
        icc,
    })
}
