//! Bounded decoding of JPEG, PNG, WebP and GIF into an 8-bit interleaved buffer.
//!
//! Each decoder runs in two steps: read the header (dimensions, frame count, EXIF
//! orientation, ICC profile), check every [`Limits`] bound, and only then allocate and decode
//! pixels. JPEG goes through libjpeg-turbo (via `mozjpeg`) because it is the fastest decoder
//! and can scale by 1/2, 1/4 or 1/8 in the DCT domain ("shrink-on-load"), which the caller
//! chooses from the header through a callback ([`DecodePlan`]); the callback may also name
//! the region it will read (a crop or cover window and its filter's reach), and then only
//! that region's rows and iMCU columns are inverse-transformed (`crate::libjpeg`): rows
//! below it are never decoded, so damage there does not refuse the crop. PNG uses the `png` crate directly (not
//! `image`'s wrapper, which inflates iCCP before any limit can be set and reads the frame in
//! one call), GIF the `gif` crate directly (row by row, for the same reason), WebP
//! `image-webp` (`image`'s wrapper hides the frame count). The pixel buffer is the caller's and is reused between calls.
//!
//! Metadata is bounded before any decoder sees it: the JPEG markers before the first scan
//! and the PNG and WebP chunks are walked here, and an ICC profile or EXIF block over
//! `Limits::metadata_bytes_max` refuses the image ([`ResizeError::MetadataTooLarge`]). A
//! compressed PNG profile (iCCP) is inflated here with a bound of that size, so a deflate
//! bomb stops after `metadata_bytes_max` bytes; PNG text chunks (tEXt, zTXt, iTXt) are
//! never inflated at all (the pipeline strips metadata, so it never needs them).
//!
//! Output is always 8-bit: 1 (gray), 2 (gray+alpha), 3 (RGB) or 4 (RGBA) channels. CMYK
//! JPEGs are converted to RGB here (see [`crate::color`]); 16-bit PNGs are rounded to 8 bits.
//!
//! libjpeg reports fatal errors by calling an `error_exit` hook that must not return; the
//! `mozjpeg` crate and this module unwind out of it (`resume_unwind`, so no panic message is
//! printed) and the unwind is caught here and turned into [`ResizeError::Corrupt`]. Warnings
//! are fatal too, except the short list in [`jpeg_warning_is_harmless`]: libjpeg "recovers"
//! from corrupt or missing data by padding with grey or skipping to the next restart
//! marker, and a damaged photo must be refused, not served. More than [`JPEG_SCANS_MAX`]
//! scans is fatal too (a known CPU-exhaustion trick with progressive JPEGs; libjpeg-turbo's
//! own tools use the same bound).
//!
//! Cancellation: the caller's stop check runs every [`ROWS_PER_CHECK`] rows where a decoder
//! reads by rows (JPEG, PNG, GIF), at every JPEG scan (a progressive JPEG is entropy-decoded
//! scan by scan inside `jpeg_start_decompress`, through the trace hook), and before and after
//! the one call that decodes a whole WebP frame.

use std::cell::Cell;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::metadata::Orientation;
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, J_COLOR_SPACE as ColorSpace};

use crate::cancel::{self, Cancelled, Stop, ROWS_PER_CHECK};
use crate::color;
use crate::error::panic_message;
use crate::geometry::Rect;
use crate::libjpeg::{self, Jpeg};
use crate::metadata;
use crate::{InputFormat, Limits, ResizeError};

/// Most scans accepted in one JPEG (libjpeg-turbo's `TJFLAG_LIMITSCANS` uses the same value).
pub const JPEG_SCANS_MAX: u32 = 500;

/// What the header of an image declares, before any pixel is decoded: enough for the
/// geometry plan, the output format and the job's memory estimate (`crate::budget`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    /// Stored (un-oriented) width.
    pub width: u32,
    /// Stored (un-oriented) height.
    pub height: u32,
    /// EXIF orientation, 1..=8 (1 when absent or invalid).
    pub orientation: u8,
    /// Channels of the decoded 8-bit buffer (1..=4).
    pub channels: u8,
    /// Frames (1 for a still image).
    pub frames: u32,
    /// An RGB ICC profile will be applied after resizing.
    pub icc: bool,
    /// Scratch bytes per decoded pixel besides the pixel buffer (CMYK before conversion).
    pub scratch_bytes_per_pixel: u8,
    /// What the decoder itself holds during the decode, in bytes: libjpeg's whole-image
    /// coefficient buffer for multi-scan JPEGs, WebP/GIF frame and canvas buffers, row buffers.
    pub decoder_bytes: u64,
}

/// What the caller asks of a decode once it has read the header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DecodePlan {
    /// JPEG: the DCT scale numerator over 8 (1, 2, 4 or 8). Other formats ignore it.
    pub scale: u8,
    /// JPEG: the part of the stored image (full-size pixels) the caller will read. The
    /// decode then produces only the rows and iMCU columns that cover it ([`Decoded`]'s
    /// `left`/`top`). Other formats ignore it and decode the whole frame.
    pub region: Option<Rect>,
}

impl DecodePlan {
    /// The whole image at `scale`/8.
    pub(crate) fn whole(scale: u8) -> DecodePlan {
        DecodePlan {
            scale,
            region: None,
        }
    }
}

/// A decoded image whose pixels are in the caller's buffer: the whole frame, or (for a
/// JPEG asked for a region) the `width` x `height` block at `left`, `top` of it.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The buffer's size.
    pub width: u32,
    pub height: u32,
    /// Where the buffer sits in the decoded frame (0, 0 for a whole frame).
    pub left: u32,
    pub top: u32,
    /// The decoded frame's size (the stored size at the DCT scale).
    pub full_width: u32,
    pub full_height: u32,
    /// 1, 2, 3 or 4 interleaved 8-bit channels.
    pub channels: u8,
    /// An embedded ICC profile for RGB data that still has to be applied (CMYK and gray
    /// profiles are handled during decoding or ignored).
    pub icc: Option<Vec<u8>>,
    /// The source's EXIF `Artist` and `Copyright`, rebuilt as a block of their own
    /// ([`crate::metadata::rights_exif`]), for `strip=false`.
    pub rights_exif: Option<Vec<u8>>,
}

impl Decoded {
    /// A whole frame of `width` x `height`.
    fn whole(
        width: u32,
        height: u32,
        channels: u8,
        icc: Option<Vec<u8>>,
        rights_exif: Option<Vec<u8>>,
    ) -> Decoded {
        Decoded {
            width,
            height,
            left: 0,
            top: 0,
            full_width: width,
            full_height: height,
            channels,
            icc,
            rights_exif,
        }
    }
}

/// Reusable buffers for decoding.
#[derive(Default)]
pub(crate) struct DecodeBuffers {
    /// The decoded 8-bit pixels.
    pub pixels: Vec<u8>,
    /// Scratch for CMYK data before conversion and for one PNG row.
    pub scratch: Vec<u8>,
}

/// Decodes `input`, calling `plan` with the header once every limit is checked; for JPEG the
/// returned numerator (1, 2, 4 or 8, over 8) scales the decode in the DCT domain, the other
/// formats ignore it. `plan` may end the decode with an error before any pixel buffer is
/// allocated (that is how [`crate::probe`] reads only the header). `stop` is consulted at
/// the check points listed in the module doc.
pub(crate) fn decode(
    format: InputFormat,
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<DecodePlan, ResizeError>,
    stop: Stop<'_>,
) -> Result<Decoded, ResizeError> {
    cancel::check(stop)?;
    // Defence in depth: a panic in any decoder on hostile input is a refusal, not a crash.
    match catch_unwind(AssertUnwindSafe(|| match format {
        InputFormat::Jpeg => decode_jpeg(input, limits, bufs, plan, stop),
        InputFormat::Png => decode_png(input, limits, bufs, plan, stop),
        InputFormat::Gif => decode_gif(input, limits, bufs, plan, stop),
        InputFormat::WebP => decode_webp(input, limits, bufs, plan, stop),
    })) {
        Ok(result) => result,
        Err(payload) if payload.is::<Cancelled>() => Err(ResizeError::Cancelled),
        Err(payload) => Err(ResizeError::Corrupt(panic_message(
            payload.as_ref(),
            "decoder failed",
        ))),
    }
}

/// Resizes `buf` to exactly `len` bytes without copying old contents that will be overwritten.
fn prepare(buf: &mut Vec<u8>, len: usize) -> Result<&mut [u8], ResizeError> {
    reserve_empty(buf, len)?;
    buf.resize(len, 0);
    Ok(&mut buf[..len])
}

/// Empties `buf` with room for `len` bytes, none written: a fresh allocation of that size
/// costs address space, not memory, until its pages are filled.
fn reserve_empty(buf: &mut Vec<u8>, len: usize) -> Result<(), ResizeError> {
    buf.clear();
    buf.try_reserve(len)
        .map_err(|_| ResizeError::Corrupt(format!("cannot allocate {len} bytes")))
}

/// `a * b * c` in bytes, saturating (header values are at most 2^32 each).
fn bytes3(a: u32, b: u32, c: u64) -> u64 {
    u64::from(a).saturating_mul(u64::from(b)).saturating_mul(c)
}

// ---------------------------------------------------------------- JPEG

thread_local! {
    /// Scans seen by the JPEG decoder running on this thread (libjpeg's error manager has no
    /// room for user data, and a decode never migrates between threads).
    static JPEG_SCANS: Cell<u32> = const { Cell::new(0) };
    /// The stop check of the JPEG decode running on this thread, for the trace hook; set by
    /// [`StopInstalled`] for exactly the duration of that decode.
    static JPEG_STOP: Cell<Option<*const (dyn Fn() -> bool + 'static)>> = const { Cell::new(None) };
}

/// Makes `stop` reachable from libjpeg's hooks while it lives (a guard, so an unwind out of
/// libjpeg removes it too).
struct StopInstalled;

impl StopInstalled {
    fn new(stop: Stop<'_>) -> Self {
        // SAFETY: only the lifetime is erased. The pointer is read only by
        // `jpeg_emit_message` on this thread while this guard lives, and the guard cannot
        // outlive `stop` (it is dropped at the end of `decode_jpeg`, which borrows `stop`).
        let ptr: *const (dyn Fn() -> bool + 'static) = unsafe {
            std::mem::transmute::<*const (dyn Fn() -> bool + '_), *const (dyn Fn() -> bool + 'static)>(
                stop,
            )
        };
        JPEG_STOP.with(|s| s.set(Some(ptr)));
        StopInstalled
    }
}

impl Drop for StopInstalled {
    fn drop(&mut self) {
        JPEG_STOP.with(|s| s.set(None));
    }
}

const JTRC_SOS: i32 = mozjpeg_sys::JTRC_SOS;

/// libjpeg warnings that do not mean lost or invented pixels, so a photo that raises them is
/// still decoded. Every other warning (`JWRN_HIT_MARKER` "premature end of data segment",
/// `JWRN_HUFF_BAD_CODE`, `JWRN_ARITH_BAD_CODE`, `JWRN_MUST_RESYNC`, `JWRN_NOT_SEQUENTIAL`,
/// `JWRN_BOGUS_PROGRESSION`, `JWRN_JPEG_EOF`, `JWRN_TOO_MUCH_DATA` and any added later) is
/// fatal: libjpeg goes on after them with grey or zeroed blocks.
/// - `JWRN_JFIF_MAJOR`: an unknown JFIF version number in APP0 (metadata only).
/// - `JWRN_ADOBE_XFORM`: an unknown Adobe transform code; libjpeg keeps the colour space
///   the component count implies.
/// - `JWRN_EXTRANEOUS_DATA`: bytes between the end of a segment and the next marker (some
///   cameras pad scans); they are skipped after the segment was decoded completely, and a
///   scan cut short raises `JWRN_HIT_MARKER` instead.
/// - `JWRN_BOGUS_ICC`: raised only by `jpeg_read_icc_profile`, which is not used (profiles
///   are assembled here, bounded).
fn jpeg_warning_is_harmless(code: i32) -> bool {
    [
        mozjpeg_sys::JWRN_JFIF_MAJOR,
        mozjpeg_sys::JWRN_ADOBE_XFORM,
        mozjpeg_sys::JWRN_EXTRANEOUS_DATA,
        mozjpeg_sys::JWRN_BOGUS_ICC,
    ]
    .contains(&code)
}

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
    if level < 0 && !jpeg_warning_is_harmless(code) {
        let message = jpeg_message(cinfo);
        std::panic::resume_unwind(Box::new(format!("corrupt JPEG: {message}")));
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
        // A progressive JPEG is entropy-decoded scan by scan before the first row comes
        // out, so a scan is the check point there.
        if let Some(stop) = JPEG_STOP.with(Cell::get) {
            // SAFETY: see `StopInstalled::new`: set only while the closure is alive.
            if unsafe { (*stop)() } {
                std::panic::resume_unwind(Box::new(Cancelled));
            }
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

/// What the markers before the first scan say, read without libjpeg.
#[derive(Debug, Default)]
struct JpegLayout {
    /// Bytes of the segments libjpeg is asked to keep (APP1, APP2, APP14).
    saved_bytes: u64,
    /// Bytes of ICC profile data in APP2 `ICC_PROFILE` segments.
    icc_bytes: u64,
    /// The frame is decoded through a whole-image coefficient buffer: progressive, or a
    /// first scan that does not hold every component (non-interleaved sequential).
    multi_scan: bool,
}

/// Walks the marker segments from SOI to the first SOS (lengths only, no decoding).
fn jpeg_layout(input: &[u8]) -> JpegLayout {
    let mut layout = JpegLayout::default();
    let mut components = 0u8;
    let mut pos = 2;
    loop {
        while input.get(pos) == Some(&0xFF) && input.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (input.get(pos), input.get(pos + 1)) else {
            return layout; // libjpeg will report what is wrong
        };
        let Some(len) = input
            .get(pos + 2..pos + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return layout;
        };
        let segment = input
            .get(pos + 4..(pos + 2 + len).min(input.len()))
            .unwrap_or_default();
        match marker {
            0xE1 | 0xEE => layout.saved_bytes += len as u64,
            0xE2 => {
                layout.saved_bytes += len as u64;
                if segment.starts_with(b"ICC_PROFILE\0") {
                    layout.icc_bytes += segment.len().saturating_sub(14) as u64;
                }
            }
            // SOF2, SOF6, SOF10, SOF14: progressive.
            0xC2 | 0xC6 | 0xCA | 0xCE => {
                layout.multi_scan = true;
                components = segment.get(5).copied().unwrap_or(0);
            }
            0xC0 | 0xC1 | 0xC3 | 0xC5 | 0xC7 | 0xC9 | 0xCB | 0xCD | 0xCF => {
                components = segment.get(5).copied().unwrap_or(0);
            }
            0xDA => {
                let in_scan = segment.first().copied().unwrap_or(0);
                layout.multi_scan |= in_scan < components;
                return layout;
            }
            0xD9 => return layout,
            _ => {}
        }
        pos += 2 + len;
    }
}

const APP1: u8 = 0xE1;
const APP2: u8 = 0xE2;
const APP14: u8 = 0xEE;
/// The marker segments libjpeg keeps for us: EXIF, ICC profile chunks, Adobe.
const JPEG_MARKERS: &[u8] = &[APP1, APP2, APP14];

/// Largest DCT scale numerator (over 8) at which trailing AC refinement scans of a
/// progressive JPEG are skipped (see [`trailing_refinement_scans`]).
const PROGRESSIVE_TRIM_SCALE_MAX: u8 = 2;

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
    plan: &mut dyn FnMut(&Header) -> Result<DecodePlan, ResizeError>,
    stop: Stop<'_>,
) -> Result<Decoded, ResizeError> {
    // libjpeg errors unwind as panics; `decode` catches them for every format.
    JPEG_SCANS.with(|s| s.set(0));
    let _installed = StopInstalled::new(stop);
    decode_jpeg_inner(input, limits, bufs, plan, stop)
}

fn decode_jpeg_inner(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<DecodePlan, ResizeError>,
    stop: Stop<'_>,
) -> Result<Decoded, ResizeError> {
    // Bounded before libjpeg copies the segments into its own memory.
    let layout = jpeg_layout(input);
    limits.check_metadata("ICC profile", layout.icc_bytes)?;
    limits.check_metadata("metadata segments", layout.saved_bytes)?;

    let mut jpeg = Jpeg::new(input, &[], jpeg_error_mgr(), JPEG_MARKERS);
    let (width, height) = jpeg.size();
    limits.check_dimensions(width, height)?;

    let mut orientation = 1;
    let mut rights_exif = None;
    let mut adobe = false;
    let mut icc_chunks: Vec<(u8, &[u8])> = Vec::new();
    for (marker, data) in jpeg.markers() {
        match marker {
            APP1 if data.starts_with(b"Exif\0\0") => {
                if let Some(o) = Orientation::from_exif_chunk(&data[6..]) {
                    orientation = o.to_exif();
                }
                rights_exif = rights_exif.or_else(|| metadata::rights_exif(&data[6..]));
            }
            APP2 if data.starts_with(b"ICC_PROFILE\0") && data.len() > 14 => {
                icc_chunks.push((data[12], &data[14..]));
            }
            APP14 if data.starts_with(b"Adobe") => adobe = true,
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

    let (out_space, channels) = match jpeg.color_space() {
        ColorSpace::JCS_GRAYSCALE => (ColorSpace::JCS_GRAYSCALE, 1u8),
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => (ColorSpace::JCS_CMYK, 4u8),
        _ => (ColorSpace::JCS_RGB, 3u8),
    };
    // A multi-scan frame keeps every DCT coefficient (2 bytes each, 64 per 8x8 block of
    // each component, at full size whatever the scale) until the last scan is read.
    let (h_max, v_max) = jpeg
        .sampling()
        .fold((1, 1), |(h, v), (ch, cv)| (h.max(ch), v.max(cv)));
    let coefficient_bytes: u64 = jpeg
        .sampling()
        .map(|(ch, cv)| {
            let w = (u64::from(width) * ch).div_ceil(h_max * 8) + 1;
            let h = (u64::from(height) * cv).div_ceil(v_max * 8) + 1;
            w * h * 128
        })
        .sum();
    let header = Header {
        width,
        height,
        orientation,
        channels: if channels == 4 { 3 } else { channels },
        frames: 1,
        icc: channels == 3 && icc.is_some(),
        scratch_bytes_per_pixel: if channels == 4 { 4 } else { 0 },
        // Otherwise libjpeg holds a few MCU rows: 16 rows per component, plus tables.
        decoder_bytes: if layout.multi_scan {
            coefficient_bytes
        } else {
            bytes3(width, 16 * 4, 2) + (1 << 20)
        },
    };
    let wanted = plan(&header)?;
    let scale = wanted.scale.clamp(1, 8);
    if scale <= PROGRESSIVE_TRIM_SCALE_MAX {
        if let Some(cut) = trailing_refinement_scans(input) {
            // Re-read the header from the trimmed stream (markers only: microseconds).
            drop(jpeg);
            JPEG_SCANS.with(|s| s.set(0));
            jpeg = Jpeg::new(&input[..cut], libjpeg::EOI, jpeg_error_mgr(), &[]);
        }
    }
    let (full_w, full_h) = jpeg.start(scale, out_space);
    // The rows and columns that hold the caller's region, in output pixels: the columns
    // widened to an iMCU boundary by libjpeg, the rows above skipped, the rows below never
    // decoded.
    let (mut left, mut top, mut w, mut h) = (0, 0, full_w, full_h);
    if let Some(region) = wanted.region {
        let (fx, fy) = (
            f64::from(full_w) / f64::from(width),
            f64::from(full_h) / f64::from(height),
        );
        let span = |start: f64, len: f64, f: f64, full: u32| {
            let a = ((start * f).floor().max(0.0) as u32).min(full - 1);
            let b = (((start + len) * f).ceil() as u32).clamp(a + 1, full);
            (a, b - a)
        };
        let (x, cw) = span(region.x, region.w, fx, full_w);
        (top, h) = span(region.y, region.h, fy, full_h);
        if cw < full_w {
            (left, w) = jpeg.crop_columns(x, cw);
        }
        jpeg.skip_rows(top);
    }
    let row_bytes = w as usize * usize::from(channels);
    let len = row_bytes * h as usize;
    let read = |jpeg: &mut Jpeg<'_>, dest: &mut [u8]| -> Result<(), ResizeError> {
        for band in dest.chunks_mut(row_bytes * ROWS_PER_CHECK) {
            cancel::check(stop)?;
            if !jpeg.read_rows(band, row_bytes) {
                // Not reachable with a source that never suspends; kept as a refusal.
                return Err(ResizeError::Corrupt(
                    "JPEG: fewer rows than declared".to_owned(),
                ));
            }
        }
        // Past the region's rows nothing is decoded; a whole image is read to its EOI.
        if jpeg.all_rows_read() {
            jpeg.finish();
        }
        Ok(())
    };

    let decoded = |channels, icc, rights_exif| Decoded {
        width: w,
        height: h,
        left,
        top,
        full_width: full_w,
        full_height: full_h,
        channels,
        icc,
        rights_exif,
    };
    if out_space == ColorSpace::JCS_CMYK {
        let cmyk = prepare(&mut bufs.scratch, len)?;
        read(&mut jpeg, cmyk)?;
        drop(jpeg);
        cancel::check(stop)?;
        let rgb = prepare(&mut bufs.pixels, w as usize * h as usize * 3)?;
        color::cmyk_to_rgb(&bufs.scratch[..len], rgb, adobe, icc.as_deref());
        return Ok(decoded(3, None, rights_exif));
    }

    let pixels = prepare(&mut bufs.pixels, len)?;
    read(&mut jpeg, pixels)?;
    // A gray profile is ignored (gray is treated as sRGB gray).
    let icc = if channels == 3 { icc } else { None };
    Ok(decoded(channels, icc, rights_exif))
}

// ---------------------------------------------------------------- PNG

/// What the chunks before the first `IDAT` say, read and bounded here.
#[derive(Debug, Default)]
struct PngChunks {
    /// Frames from `acTL` (1 for a still PNG).
    frames: u32,
    /// The inflated `iCCP` profile, when it is well-formed.
    icc: Option<Vec<u8>>,
    /// EXIF orientation from `eXIf`.
    orientation: u8,
    /// `Artist` and `Copyright` from `eXIf`.
    rights_exif: Option<Vec<u8>>,
}

/// Walks the chunks up to the first `IDAT`, without trusting any of them: an `iCCP` profile
/// is inflated with a bound of `metadata_bytes_max` (a deflate bomb stops there and refuses
/// the image), an `eXIf` chunk over that size refuses it, and text chunks are skipped
/// without inflating. Broken chunk framing is left to the `png` decoder to report.
fn png_chunks(input: &[u8], limits: &Limits) -> Result<PngChunks, ResizeError> {
    let mut chunks = PngChunks {
        frames: 1,
        icc: None,
        orientation: 1,
        rights_exif: None,
    };
    let cap = usize::try_from(limits.metadata_bytes_max).unwrap_or(usize::MAX);
    let mut pos = 8;
    while let Some(head) = input.get(pos..pos + 8) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let Some(data) = input.get(pos + 8..(pos + 8).saturating_add(len)) else {
            break;
        };
        match kind {
            b"IDAT" => break,
            b"acTL" if data.len() >= 4 => {
                chunks.frames = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
            }
            b"iCCP" if chunks.icc.is_none() => {
                // Profile name (1..=79 bytes), NUL, compression method 0, zlib stream.
                let Some(nul) = data.iter().take(80).position(|&b| b == 0) else {
                    break;
                };
                if data.get(nul + 1) == Some(&0) {
                    match fdeflate::decompress_to_vec_bounded(&data[nul + 2..], cap) {
                        Ok(profile) => chunks.icc = Some(profile),
                        Err(fdeflate::BoundedDecompressionError::OutputTooLarge { .. }) => {
                            limits.check_metadata("ICC profile", (cap as u64).saturating_add(1))?;
                        }
                        // A corrupt profile is ignored, as `png` itself does.
                        Err(_) => {}
                    }
                }
            }
            b"eXIf" => {
                limits.check_metadata("EXIF", data.len() as u64)?;
                if let Some(o) = Orientation::from_exif_chunk(data) {
                    chunks.orientation = o.to_exif();
                }
                chunks.rights_exif = metadata::rights_exif(data);
            }
            _ => {}
        }
        pos = pos + 12 + len;
    }
    Ok(chunks)
}

fn decode_png(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<DecodePlan, ResizeError>,
    stop: Stop<'_>,
) -> Result<Decoded, ResizeError> {
    let corrupt = |e: png::DecodingError| ResizeError::Corrupt(format!("PNG: {e}"));
    // IHDR must be the first chunk; its size is checked before the decoder exists.
    let ihdr = input
        .get(8..24)
        .filter(|h| &h[4..8] == b"IHDR")
        .ok_or_else(|| ResizeError::Corrupt("PNG: no IHDR chunk".to_owned()))?;
    let width = u32::from_be_bytes([ihdr[8], ihdr[9], ihdr[10], ihdr[11]]);
    let height = u32::from_be_bytes([ihdr[12], ihdr[13], ihdr[14], ihdr[15]]);
    limits.check_dimensions(width, height)?;
    let chunks = png_chunks(input, limits)?;
    limits.check_frames(chunks.frames)?;

    let mut dec = png::Decoder::new_with_limits(
        Cursor::new(input),
        png::Limits {
            // Everything but the caller's pixel buffer: row buffers and the inflater.
            bytes: 64 << 20,
        },
    );
    // Profiles were read above with a bound; text is never needed.
    dec.set_ignore_iccp_chunk(true);
    dec.set_ignore_text_chunk(true);
    dec.set_transformations(png::Transformations::EXPAND);
    let mut reader = dec.read_info().map_err(corrupt)?;
    let (color, depth) = reader.output_color_type();
    let channels = color.samples() as u8;
    let wide = depth == png::BitDepth::Sixteen;
    let rgb = matches!(color, png::ColorType::Rgb | png::ColorType::Rgba);
    let raw_row = reader
        .output_line_size(width)
        .ok_or_else(|| ResizeError::Corrupt("PNG: row too large".to_owned()))?;
    plan(&Header {
        width,
        height,
        orientation: chunks.orientation,
        channels,
        frames: chunks.frames,
        icc: rgb && chunks.icc.is_some(),
        scratch_bytes_per_pixel: 0,
        // The current and previous raw rows, one 8-bit row, and the inflater's window.
        decoder_bytes: 3 * raw_row as u64 + (1 << 20),
    })?;

    let row_bytes = width as usize * usize::from(channels);
    let len = row_bytes * height as usize;
    // A non-interlaced image comes row by row, in order, and its buffer grows with them: a
    // file that declares a large frame and ends after a few rows touches the pages of those
    // rows only (the job's memory estimate still counts the whole frame). Adam7's passes
    // scatter pixels over the whole frame, which has to exist, zeroed, before the first.
    let interlaced = reader.info().interlaced;
    let pixels = &mut bufs.pixels;
    if interlaced {
        prepare(pixels, len)?;
    } else {
        reserve_empty(pixels, len)?;
    }
    let row = prepare(&mut bufs.scratch, raw_row)?;
    let mut rows = 0usize;
    while let Some(interlace) = reader.read_row(row).map_err(corrupt)? {
        if rows.is_multiple_of(ROWS_PER_CHECK) {
            cancel::check(stop)?;
        }
        if wide {
            // In place: sample i is written after samples 2i and 2i+1 were read.
            for i in 0..row.len() / 2 {
                let v = u32::from(u16::from_be_bytes([row[2 * i], row[2 * i + 1]]));
                row[i] = ((v * 255 + 32_895) >> 16) as u8;
            }
        }
        match interlace {
            png::InterlaceInfo::Null(_) => {
                if pixels.len() + row_bytes > len {
                    return Err(ResizeError::Corrupt("PNG: too many rows".to_owned()));
                }
                pixels.extend_from_slice(&row[..row_bytes]);
            }
            png::InterlaceInfo::Adam7(info) => {
                png::expand_interlaced_row(pixels, row_bytes, row, &info, channels * 8);
            }
        }
        rows += 1;
    }
    if rows == 0 {
        return Err(ResizeError::Corrupt("PNG: no image data".to_owned()));
    }
    // The end of the frame (a missing or cut IDAT stream is an error here).
    reader.finish().map_err(corrupt)?;
    if pixels.len() != len {
        return Err(ResizeError::Corrupt(
            "PNG: fewer rows than declared".to_owned(),
        ));
    }
    let icc = if rgb { chunks.icc } else { None };
    Ok(Decoded::whole(
        width,
        height,
        channels,
        icc,
        chunks.rights_exif,
    ))
}

// ---------------------------------------------------------------- GIF

/// The `gif` and `image-webp` decoders' own allocation bound: the largest accepted image as
/// RGBA twice (frame and canvas) plus decoder state. The job's memory estimate is the tighter
/// check; this one stops a decoder that would allocate beyond what it declared.
pub(crate) fn decoder_alloc_max(limits: &Limits) -> u64 {
    limits.pixels_max.saturating_mul(8).saturating_add(64 << 20)
}

/// Counts frames without decompressing their pixels (the LZW data is skipped, so the cost
/// is bounded by the input size, which is itself bounded). The application extensions the
/// `gif` crate keeps (ICC, XMP) are bounded by `metadata_bytes_max` through its memory
/// limit; comment and other extensions are skipped without being kept.
fn gif_frames(input: &[u8], limits: &Limits) -> Result<u32, ResizeError> {
    let corrupt = |e: gif::DecodingError| match e {
        gif::DecodingError::MemoryLimit => ResizeError::MetadataTooLarge {
            kind: "GIF extensions",
            bytes: limits.metadata_bytes_max.saturating_add(1),
            max: limits.metadata_bytes_max,
        },
        e => ResizeError::Corrupt(format!("GIF: {e}")),
    };
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    options.skip_frame_decoding(true);
    options.check_frame_consistency(false);
    options.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(limits.metadata_bytes_max.max(1))
            .unwrap_or(std::num::NonZeroU64::MIN),
    ));
    let mut dec = options.read_info(Cursor::new(input)).map_err(corrupt)?;
    let mut frames = 0u32;
    while dec.next_frame_info().map_err(corrupt)?.is_some() {
        frames = frames.saturating_add(1);
    }
    Ok(frames)
}

/// The stored order of a frame's rows: top to bottom, or GIF's four interlace passes
/// (every 8th row from 0, every 8th from 4, every 4th from 2, every 2nd from 1).
pub(crate) fn gif_row_order(height: usize, interlaced: bool) -> Box<dyn Iterator<Item = usize>> {
    if interlaced {
        Box::new(
            (0..height)
                .step_by(8)
                .chain((4..height).step_by(8))
                .chain((2..height).step_by(4))
                .chain((1..height).step_by(2)),
        )
    } else {
        Box::new(0..height)
    }
}

/// Decodes the first frame with the `gif` crate, row by row (a stop check every
/// [`ROWS_PER_CHECK`] rows: an LZW stream that resets its dictionary at every pixel takes
/// ~0.1 s per megapixel), onto a transparent RGBA canvas of the logical screen size, as
/// `image`'s GIF decoder did before.
fn decode_gif(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<DecodePlan, ResizeError>,
    stop: Stop<'_>,
) -> Result<Decoded, ResizeError> {
    let corrupt = |e: gif::DecodingError| ResizeError::Corrupt(format!("GIF: {e}"));
    // The logical screen size is at bytes 6..10 (little-endian); checked before any decoder
    // reads the extensions that follow it.
    let screen = input
        .get(6..10)
        .ok_or_else(|| ResizeError::Corrupt("GIF: no logical screen descriptor".to_owned()))?;
    let width = u32::from(u16::from_le_bytes([screen[0], screen[1]]));
    let height = u32::from(u16::from_le_bytes([screen[2], screen[3]]));
    limits.check_dimensions(width, height)?;
    let frames = gif_frames(input, limits)?;
    if frames == 0 {
        return Err(ResizeError::Corrupt("GIF has no frames".to_owned()));
    }
    limits.check_frames(frames)?;
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    options.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(decoder_alloc_max(limits)).unwrap_or(std::num::NonZeroU64::MIN),
    ));
    let mut dec = options.read_info(Cursor::new(input)).map_err(corrupt)?;
    let frame = dec
        .next_frame_info()
        .map_err(corrupt)?
        .ok_or_else(|| ResizeError::Corrupt("GIF has no frames".to_owned()))?;
    let (left, top) = (usize::from(frame.left), usize::from(frame.top));
    let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
    let interlaced = frame.interlaced;
    plan(&Header {
        width,
        height,
        orientation: 1,
        channels: 4,
        frames,
        icc: false,
        scratch_bytes_per_pixel: 0,
        // One row of the frame, and the LZW table.
        decoder_bytes: bytes3(u32::from(frame.width), 4, 1) + (1 << 20),
    })?;
    let (sw, sh) = (width as usize, height as usize);
    let canvas = prepare(&mut bufs.pixels, sw * sh * 4)?;
    let row = prepare(&mut bufs.scratch, fw * 4)?;
    // The part of each frame row that lies on the screen.
    let visible = fw.min(sw.saturating_sub(left)) * 4;
    for (i, y) in gif_row_order(fh, interlaced).enumerate() {
        if i.is_multiple_of(ROWS_PER_CHECK) {
            cancel::check(stop)?;
        }
        if !dec.fill_buffer(row).map_err(corrupt)? {
            return Err(ResizeError::Corrupt(
                "GIF: the frame data ends early".to_owned(),
            ));
        }
        if top + y < sh && visible > 0 {
            let at = ((top + y) * sw + left) * 4;
            canvas[at..at + visible].copy_from_slice(&row[..visible]);
        }
    }
    Ok(Decoded::whole(width, height, 4, None, None))
}

// ---------------------------------------------------------------- WebP

/// Sum of the sizes of the `ICCP`, `EXIF` and `XMP ` chunks of a RIFF WebP file (walking
/// chunk headers only), so a flood or an oversized chunk is refused before `image-webp`
/// reads any of them.
fn webp_metadata_bytes(input: &[u8]) -> u64 {
    let mut total = 0u64;
    let mut pos = 12;
    while let Some(head) = input.get(pos..pos + 8) {
        let len = u64::from(u32::from_le_bytes([head[4], head[5], head[6], head[7]]));
        if matches!(&head[..4], b"ICCP" | b"EXIF" | b"XMP ") {
            total = total.saturating_add(len);
        }
        // Chunks are padded to an even size.
        let Some(next) = usize::try_from(len + (len & 1))
            .ok()
            .and_then(|l| (pos + 8).checked_add(l))
        else {
            break;
        };
        pos = next;
    }
    total
}

fn decode_webp(
    input: &[u8],
    limits: &Limits,
    bufs: &mut DecodeBuffers,
    plan: &mut dyn FnMut(&Header) -> Result<DecodePlan, ResizeError>,
    stop: Stop<'_>,
) -> Result<Decoded, ResizeError> {
    let corrupt = |e: image_webp::DecodingError| ResizeError::Corrupt(format!("WebP: {e}"));
    limits.check_metadata("metadata chunks", webp_metadata_bytes(input))?;
    let mut dec = image_webp::WebPDecoder::new(Cursor::new(input)).map_err(corrupt)?;
    let (width, height) = dec.dimensions();
    limits.check_dimensions(width, height)?;
    let frames = if dec.is_animated() {
        dec.num_frames()
    } else {
        1
    };
    limits.check_frames(frames)?;
    // Metadata reads are held to the metadata bound, the pixel decode to the decoder's.
    dec.set_memory_limit(usize::try_from(limits.metadata_bytes_max).unwrap_or(usize::MAX));
    let exif = dec.exif_metadata().ok().flatten();
    let orientation = exif
        .as_deref()
        .and_then(Orientation::from_exif_chunk)
        .map_or(1, Orientation::to_exif);
    let rights_exif = exif.as_deref().and_then(metadata::rights_exif);
    let icc = dec.icc_profile().ok().flatten();
    let channels: u8 = if dec.has_alpha() { 4 } else { 3 };
    plan(&Header {
        width,
        height,
        orientation,
        channels,
        frames,
        icc: icc.is_some(),
        scratch_bytes_per_pixel: 0,
        // Lossless: ARGB words and transform buffers; lossy: YUV planes; animated: a canvas
        // besides the frame. Four bytes per pixel covers each.
        decoder_bytes: bytes3(width, height, 4) + (1 << 20),
    })?;
    dec.set_memory_limit(usize::try_from(decoder_alloc_max(limits)).unwrap_or(usize::MAX));
    let len = dec
        .output_buffer_size()
        .ok_or_else(|| ResizeError::Corrupt("WebP: image too large".to_owned()))?;
    let buf = prepare(&mut bufs.pixels, len)?;
    // One call decodes the whole frame: the check points are around it.
    cancel::check(stop)?;
    dec.read_image(buf).map_err(corrupt)?;
    cancel::check(stop)?;
    Ok(Decoded::whole(width, height, channels, icc, rights_exif))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JPEG of a smooth gradient with texture (so every iMCU column differs), encoded
    /// by libjpeg with the given chroma sampling and scan layout.
    fn jpeg(
        width: u32,
        height: u32,
        space: ColorSpace,
        sampling: u8,
        progressive: bool,
    ) -> Vec<u8> {
        let channels = if space == ColorSpace::JCS_GRAYSCALE {
            1
        } else {
            3
        };
        let pixels: Vec<u8> = (0..height)
            .flat_map(|y| (0..width).map(move |x| (x, y)))
            .flat_map(|(x, y)| {
                let v = [
                    (x * 255 / width) as u8 ^ ((y % 7) as u8 * 9),
                    (y * 255 / height) as u8,
                    ((x * 7 + y * 13) % 256) as u8,
                ];
                v.into_iter().take(channels)
            })
            .collect();
        let mut c = mozjpeg::Compress::new(space);
        // Baseline unless asked (mozjpeg's own defaults are progressive).
        c.set_fastest_defaults();
        c.set_size(width as usize, height as usize);
        c.set_quality(85.0);
        if progressive {
            c.set_progressive_mode();
        }
        if channels == 3 {
            let s = (sampling, sampling);
            c.set_chroma_sampling_pixel_sizes(s, s);
        }
        let mut started = c.start_compress(Vec::new()).unwrap();
        started.write_scanlines(&pixels).unwrap();
        started.finish().unwrap()
    }

    fn run(input: &[u8], plan: DecodePlan, bufs: &mut DecodeBuffers) -> Decoded {
        decode(
            InputFormat::Jpeg,
            input,
            &Limits::default(),
            bufs,
            &mut |_| Ok(plan),
            &|| false,
        )
        .unwrap()
    }

    /// A region decode (columns cropped by libjpeg, rows above skipped, rows below never
    /// decoded) yields exactly the pixels of the whole decode at that place, covering the
    /// region asked for, at every DCT scale, for 4:4:4, 4:2:0, gray and progressive files.
    #[test]
    fn a_region_decode_is_the_same_pixels_as_the_whole_decode_there() {
        let cases = [
            (ColorSpace::JCS_RGB, 1, false),
            (ColorSpace::JCS_RGB, 2, false),
            (ColorSpace::JCS_RGB, 2, true),
            (ColorSpace::JCS_GRAYSCALE, 1, false),
        ];
        let regions = [
            (100.0, 80.0, 300.0, 200.0),
            (0.0, 0.0, 50.0, 50.0),
            (433.5, 250.25, 66.5, 49.75),
            (1.0, 299.0, 498.0, 1.0),
            (250.0, 0.0, 250.0, 300.0),
        ];
        let (width, height) = (500, 300);
        for (space, sampling, progressive) in cases {
            let input = jpeg(width, height, space, sampling, progressive);
            for scale in [8, 4, 2, 1] {
                let mut whole_bufs = DecodeBuffers::default();
                let whole = run(&input, DecodePlan::whole(scale), &mut whole_bufs);
                let bpp = usize::from(whole.channels);
                for (x, y, w, h) in regions {
                    let case = format!(
                        "{space:?} {sampling} {progressive} scale {scale} region {x},{y} {w}x{h}"
                    );
                    let mut bufs = DecodeBuffers::default();
                    let region = Rect { x, y, w, h };
                    let part = run(
                        &input,
                        DecodePlan {
                            scale,
                            region: Some(region),
                        },
                        &mut bufs,
                    );
                    assert_eq!(
                        (part.full_width, part.full_height),
                        (whole.width, whole.height),
                        "{case}"
                    );
                    // It covers the region, in decoded pixels.
                    let f = f64::from(whole.width) / f64::from(width);
                    assert!(
                        f64::from(part.left) <= (x * f).floor(),
                        "{case}: left {}",
                        part.left
                    );
                    assert!(
                        f64::from(part.top) <= (y * f).floor(),
                        "{case}: top {}",
                        part.top
                    );
                    assert!(
                        f64::from(part.left + part.width)
                            >= ((x + w) * f).ceil().min(f64::from(whole.width)),
                        "{case}"
                    );
                    assert!(
                        f64::from(part.top + part.height)
                            >= ((y + h) * f).ceil().min(f64::from(whole.height)),
                        "{case}"
                    );
                    // And less than the whole image where the region is smaller.
                    assert!(
                        u64::from(part.width) * u64::from(part.height)
                            < u64::from(whole.width) * u64::from(whole.height),
                        "{case}"
                    );
                    // libjpeg upsamples chroma at the cropped columns' edges as at an
                    // image edge, so there the outermost column differs (by up to 28 levels on this
                    // synthetic chroma)
                    // (the region the pipeline asks for has the filter's reach plus two
                    // pixels of margin, where those columns weigh nothing).
                    let row_bytes = part.width as usize * bpp;
                    for row in 0..part.height as usize {
                        let at = ((part.top as usize + row) * whole.width as usize
                            + part.left as usize)
                            * bpp;
                        let expected = &whole_bufs.pixels[at..at + row_bytes];
                        let got = &bufs.pixels[row * row_bytes..][..row_bytes];
                        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
                            let column = (i / bpp) as u32;
                            let edge = (column == 0 && part.left > 0)
                                || (column + 1 == part.width
                                    && part.left + part.width < whole.width);
                            assert!(
                                edge || g == e,
                                "{case}: row {row} column {column}: {g} vs {e}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Rows below the region are not decoded, so damage there does not refuse the crop,
    /// while the whole decode of the same file is refused.
    #[test]
    fn a_region_above_damage_decodes_and_the_whole_image_does_not() {
        let input = jpeg(64, 512, ColorSpace::JCS_RGB, 2, false);
        let cut = &input[..input.len() * 3 / 4];
        let whole = decode(
            InputFormat::Jpeg,
            cut,
            &Limits::default(),
            &mut DecodeBuffers::default(),
            &mut |_| Ok(DecodePlan::whole(8)),
            &|| false,
        );
        assert!(matches!(whole, Err(ResizeError::Corrupt(_))), "{whole:?}");
        let region = Rect {
            x: 0.0,
            y: 0.0,
            w: 64.0,
            h: 100.0,
        };
        let part = run(
            cut,
            DecodePlan {
                scale: 8,
                region: Some(region),
            },
            &mut DecodeBuffers::default(),
        );
        assert!(part.height >= 100 && part.height < 512, "{}", part.height);
    }
}
