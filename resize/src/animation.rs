//! Animations kept animated: an animated GIF or WebP asked for as GIF or WebP (explicitly,
//! by `format=original`, or by `format=auto`) comes out with every frame resized and its
//! timing and loop count kept, instead of as its first frame.
//!
//! The job streams: one canvas is decoded (composited as a viewer shows it: GIF disposal
//! methods applied here, WebP blending by `image-webp`), resized with the same Lanczos3 and
//! cover crop as a still image, and handed to the encoder before the next frame is read, so
//! its memory does not grow with the frame count (only the encoded output does). A stop
//! check runs between frames and, for GIF, every [`ROWS_PER_CHECK`] rows of a frame; libwebp
//! checks through its progress hook while it encodes one frame.
//!
//! Every frame is decoded and resized, so the work grows with frames × pixels: the frame
//! count is bounded by `Limits::frames_max` and the total by
//! `Limits::animation_pixels_max`, both checked from the header before any pixel is decoded.
//!
//! Encoders: GIF with the `gif` crate (an exact palette when a frame has at most 256 colours,
//! else NeuQuant at speed 10, one palette per frame, as `gif::Frame::from_rgba_speed` does;
//! every frame is a whole canvas disposed to the background, so a partly transparent
//! frame never shows the one before it); WebP with libwebp's `WebPAnimEncoder` (the same
//! lossy settings as a still WebP, sub-frame rectangles and blending chosen by libwebp).
//! Why not `image`'s `GifEncoder`: it cannot take frames one at a time with a stop check
//! between them, and `image` has no animated WebP encoder.

use std::io::Cursor;

use fast_image_resize as fir;

use crate::cancel::{self, Stop, ROWS_PER_CHECK};
use crate::decode::{decoder_alloc_max, gif_row_order, Header};
use crate::geometry::{self, Plan};
use crate::{Fit, Gravity, InputFormat, Limits, Options, OutputFormat, Padding, ResizeError};

/// Whether a job with this input and output is kept animated.
pub(crate) fn animates(input_format: InputFormat, frames: u32, output: OutputFormat) -> bool {
    frames > 1
        && matches!(input_format, InputFormat::Gif | InputFormat::WebP)
        && matches!(output, OutputFormat::Gif | OutputFormat::WebP)
}

/// Refuses the options an animation kept animated cannot honour frame by frame (yet):
/// what needs a canvas (`fit=pad`, `padding`, `background`), a pixel scan (trim, smart
/// crop), a filter (blur, sharpen) or a blend (watermark). Geometry that the plan carries
/// (`crop`, rectangle or window, a compass or focus-point gravity, `dpr`, `enlarge`,
/// `rotate`, `flip`) applies to every frame.
pub(crate) fn check_options(options: &Options) -> Result<(), ResizeError> {
    let refused = [
        (options.fit == Fit::Pad, "fit=pad"),
        (options.padding != Padding::NONE, "padding"),
        (options.background.is_some(), "background"),
        (options.trim.is_some(), "trim"),
        (options.gravity == Gravity::Smart, "gravity=smart"),
        (options.blur.is_some(), "blur"),
        (options.sharpen.is_some(), "sharpen"),
        (options.watermark.is_some(), "watermark"),
    ];
    match refused.iter().find(|(on, _)| *on) {
        Some((_, name)) => Err(ResizeError::InvalidOption(format!(
            "{name} is not supported on an animated output; ask for a still format (e.g. \
             format=png) for the first frame"
        ))),
        None => Ok(()),
    }
}

/// Frames × the larger of canvas and output pixels: what `Limits::animation_pixels_max`
/// bounds (decoding grows with the canvas, resizing and encoding with the output).
pub(crate) fn pixels(header: &Header, plan: &Plan) -> u64 {
    let canvas = u64::from(header.width) * u64::from(header.height);
    let out = u64::from(plan.out_w) * u64::from(plan.out_h);
    u64::from(header.frames).saturating_mul(canvas.max(out))
}

/// The peak working memory of an animated job, bytes: the decoder's canvas, frame and
/// state (and for GIF the copy kept for "restore to previous"), the resizer's output,
/// intermediate and premultiplied source, the encoder's copy of one output frame and
/// working set, and the encoded output, counted at one byte per output pixel per frame.
pub(crate) fn job_bytes(header: &Header, plan: &Plan, format: OutputFormat) -> u64 {
    let canvas = u64::from(header.width) * u64::from(header.height) * 4;
    let decode = canvas * 3 + header.decoder_bytes;
    let (rw, rh) = (u64::from(plan.resize_w), u64::from(plan.resize_h));
    let resize = rw * rh * 4 * 2 + rw * u64::from(header.height) * 4 + canvas;
    let out = u64::from(plan.out_w) * u64::from(plan.out_h);
    let encode = out * (4 + crate::budget::encoder_bytes_per_pixel(format) + 16)
        + out * u64::from(header.frames);
    decode + resize + encode + (4 << 20)
}

/// Decodes, resizes and encodes every frame of `input` (whose header, plan and output
/// format were settled by the pipeline) into `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    input: &[u8],
    input_format: InputFormat,
    header: &Header,
    plan: &Plan,
    format: OutputFormat,
    quality: u8,
    limits: &Limits,
    resizer: &mut fir::Resizer,
    out: &mut Vec<u8>,
    stop: Stop<'_>,
) -> Result<(), ResizeError> {
    let mut frames = Frames::open(input, input_format, limits)?;
    let (w, h) = (header.width, header.height);
    let channels = frames.channels();
    let mut canvas = Vec::new();
    try_zeroed(&mut canvas, w as usize * h as usize * usize::from(channels))?;
    let mut resized = Vec::new();
    let mut oriented = Vec::new();
    let mut encoder = Encoder::new(format, plan.out_w, plan.out_h, frames.loops(), quality, out)?;
    while let Some(delay_ms) = frames.next(&mut canvas, stop)? {
        cancel::check(stop)?;
        resize(resizer, &canvas, (w, h), channels, plan, &mut resized)?;
        let pixels = if plan.orientation > 1 && plan.orientation <= 8 {
            geometry::orient(
                &resized,
                plan.resize_w,
                plan.resize_h,
                usize::from(channels),
                plan.orientation,
                &mut oriented,
            );
            &oriented
        } else {
            &resized
        };
        cancel::check(stop)?;
        encoder.add(pixels, channels, delay_ms, stop)?;
    }
    encoder.finish()
}

/// `buf` resized to `len` zero bytes, refusing (as an error, not an abort) when the
/// allocator cannot provide them.
fn try_zeroed(buf: &mut Vec<u8>, len: usize) -> Result<(), ResizeError> {
    buf.clear();
    buf.try_reserve_exact(len)
        .map_err(|_| ResizeError::JobMemoryExceeded {
            bytes: len as u64,
            max: 0,
        })?;
    buf.resize(len, 0);
    Ok(())
}

/// One canvas resized to the plan's resize size, with its cover crop.
fn resize(
    resizer: &mut fir::Resizer,
    canvas: &[u8],
    (w, h): (u32, u32),
    channels: u8,
    plan: &Plan,
    out: &mut Vec<u8>,
) -> Result<(), ResizeError> {
    let internal = |e: &dyn std::fmt::Display| ResizeError::Encode(format!("resize: {e}"));
    let pixel_type = if channels == 4 {
        fir::PixelType::U8x4
    } else {
        fir::PixelType::U8x3
    };
    let (rw, rh) = (plan.resize_w, plan.resize_h);
    try_zeroed(out, rw as usize * rh as usize * usize::from(channels))?;
    let src = fir::images::ImageRef::new(w, h, canvas, pixel_type).map_err(|e| internal(&e))?;
    let mut dst =
        fir::images::Image::from_slice_u8(rw, rh, out, pixel_type).map_err(|e| internal(&e))?;
    let crop = plan.crop;
    let options = fir::ResizeOptions::new()
        .resize_alg(crate::resample::lanczos3())
        .use_alpha(channels == 4)
        .crop(crop.x, crop.y, crop.w, crop.h);
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| internal(&e))
}

// ---------------------------------------------------------------- decoding

/// How many times an animation plays: 0 for ever, else the count the file gives (GIF's
/// NETSCAPE loop count and WebP's loop count are carried over as the same number).
type Loops = u16;

enum Frames<'a> {
    Gif(Box<GifFrames<'a>>),
    WebP(Box<image_webp::WebPDecoder<Cursor<&'a [u8]>>>),
}

impl<'a> Frames<'a> {
    fn open(
        input: &'a [u8],
        input_format: InputFormat,
        limits: &Limits,
    ) -> Result<Self, ResizeError> {
        match input_format {
            InputFormat::Gif => GifFrames::open(input, limits).map(|g| Frames::Gif(Box::new(g))),
            InputFormat::WebP => {
                let mut dec =
                    image_webp::WebPDecoder::new(Cursor::new(input)).map_err(webp_corrupt)?;
                dec.set_memory_limit(
                    usize::try_from(decoder_alloc_max(limits)).unwrap_or(usize::MAX),
                );
                Ok(Frames::WebP(Box::new(dec)))
            }
            _ => Err(ResizeError::Encode(format!(
                "{input_format:?} cannot be animated"
            ))),
        }
    }

    fn channels(&self) -> u8 {
        match self {
            Frames::Gif(_) => 4,
            Frames::WebP(dec) if dec.has_alpha() => 4,
            Frames::WebP(_) => 3,
        }
    }

    fn loops(&self) -> Loops {
        match self {
            Frames::Gif(gif) => match gif.decoder.repeat() {
                gif::Repeat::Infinite => 0,
                gif::Repeat::Finite(n) => n.max(1),
            },
            Frames::WebP(dec) => match dec.loop_count() {
                image_webp::LoopCount::Forever => 0,
                image_webp::LoopCount::Times(n) => n.get(),
            },
        }
    }

    /// Composites the next frame onto `canvas` (as a viewer shows it) and returns its
    /// display time in milliseconds, or `None` after the last frame.
    fn next(&mut self, canvas: &mut [u8], stop: Stop<'_>) -> Result<Option<u32>, ResizeError> {
        match self {
            Frames::Gif(gif) => gif.next(canvas, stop),
            Frames::WebP(dec) => match dec.read_frame(canvas) {
                Ok(delay_ms) => Ok(Some(delay_ms)),
                Err(image_webp::DecodingError::NoMoreFrames) => Ok(None),
                Err(e) => Err(webp_corrupt(e)),
            },
        }
    }
}

fn webp_corrupt(e: image_webp::DecodingError) -> ResizeError {
    ResizeError::Corrupt(format!("WebP: {e}"))
}

fn gif_corrupt(e: gif::DecodingError) -> ResizeError {
    ResizeError::Corrupt(format!("GIF: {e}"))
}

/// A GIF read frame by frame with the `gif` crate, composited here: each frame is drawn
/// over the canvas where it is not transparent, and the previous frame's disposal
/// (keep, clear its rectangle to transparent, or restore what was under it) is applied
/// before the next one is drawn.
struct GifFrames<'a> {
    decoder: gif::Decoder<Cursor<&'a [u8]>>,
    width: usize,
    height: usize,
    row: Vec<u8>,
    /// What the canvas held under the previous frame, for `DisposalMethod::Previous`.
    saved: Vec<u8>,
    /// The previous frame's rectangle and disposal, applied before the next frame.
    pending: Option<(Rect, gif::DisposalMethod)>,
}

#[derive(Clone, Copy)]
struct Rect {
    left: usize,
    top: usize,
    width: usize,
    height: usize,
}

impl<'a> GifFrames<'a> {
    fn open(input: &'a [u8], limits: &Limits) -> Result<Self, ResizeError> {
        let mut options = gif::DecodeOptions::new();
        options.set_color_output(gif::ColorOutput::RGBA);
        options.set_memory_limit(gif::MemoryLimit::Bytes(
            std::num::NonZeroU64::new(decoder_alloc_max(limits))
                .unwrap_or(std::num::NonZeroU64::MIN),
        ));
        let decoder = options.read_info(Cursor::new(input)).map_err(gif_corrupt)?;
        let (width, height) = (usize::from(decoder.width()), usize::from(decoder.height()));
        Ok(GifFrames {
            decoder,
            width,
            height,
            row: Vec::new(),
            saved: Vec::new(),
            pending: None,
        })
    }

    fn next(&mut self, canvas: &mut [u8], stop: Stop<'_>) -> Result<Option<u32>, ResizeError> {
        if let Some((rect, dispose)) = self.pending.take() {
            self.dispose(canvas, rect, dispose);
        }
        let Some(frame) = self.decoder.next_frame_info().map_err(gif_corrupt)? else {
            return Ok(None);
        };
        let rect = Rect {
            left: usize::from(frame.left),
            top: usize::from(frame.top),
            width: usize::from(frame.width),
            height: usize::from(frame.height),
        };
        let (dispose, interlaced) = (frame.dispose, frame.interlaced);
        // GIF delays are in hundredths of a second.
        let delay_ms = u32::from(frame.delay) * 10;
        if dispose == gif::DisposalMethod::Previous {
            self.save(canvas, rect);
        }
        try_zeroed(&mut self.row, rect.width * 4)?;
        // The part of each frame row that lies on the canvas.
        let visible = rect.width.min(self.width.saturating_sub(rect.left));
        for (i, y) in gif_row_order(rect.height, interlaced).enumerate() {
            if i.is_multiple_of(ROWS_PER_CHECK) {
                cancel::check(stop)?;
            }
            if !self
                .decoder
                .fill_buffer(&mut self.row)
                .map_err(gif_corrupt)?
            {
                return Err(ResizeError::Corrupt(
                    "GIF: the frame data ends early".to_owned(),
                ));
            }
            if rect.top + y >= self.height {
                continue;
            }
            let at = ((rect.top + y) * self.width + rect.left) * 4;
            let dst = &mut canvas[at..at + visible * 4];
            for (d, s) in dst.chunks_exact_mut(4).zip(self.row.chunks_exact(4)) {
                // Transparent pixels of the frame leave the canvas as it was.
                if s[3] != 0 {
                    d.copy_from_slice(s);
                }
            }
        }
        self.pending = Some((rect, dispose));
        Ok(Some(delay_ms))
    }

    /// The canvas rows under `rect`, clipped to the canvas, as byte ranges.
    fn rows(&self, rect: Rect) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let visible = rect.width.min(self.width.saturating_sub(rect.left));
        (rect.top..(rect.top + rect.height).min(self.height)).map(move |y| {
            let at = (y * self.width + rect.left) * 4;
            at..at + visible * 4
        })
    }

    fn save(&mut self, canvas: &[u8], rect: Rect) {
        let ranges: Vec<_> = self.rows(rect).collect();
        self.saved.clear();
        for r in ranges {
            self.saved.extend_from_slice(&canvas[r]);
        }
    }

    fn dispose(&mut self, canvas: &mut [u8], rect: Rect, dispose: gif::DisposalMethod) {
        match dispose {
            gif::DisposalMethod::Background => {
                // Browsers clear to transparent rather than to the background colour.
                for r in self.rows(rect).collect::<Vec<_>>() {
                    canvas[r].fill(0);
                }
            }
            gif::DisposalMethod::Previous => {
                let mut from = 0;
                for r in self.rows(rect).collect::<Vec<_>>() {
                    let n = r.len();
                    canvas[r].copy_from_slice(&self.saved[from..from + n]);
                    from += n;
                }
            }
            gif::DisposalMethod::Any | gif::DisposalMethod::Keep => {}
        }
    }
}

// ---------------------------------------------------------------- encoding

enum Encoder<'a> {
    /// The encoder, the output size, and the RGBA copy the quantiser works in.
    Gif(Box<gif::Encoder<&'a mut Vec<u8>>>, (u16, u16), Vec<u8>),
    WebP(WebPAnim<'a>),
}

impl<'a> Encoder<'a> {
    fn new(
        format: OutputFormat,
        width: u32,
        height: u32,
        loops: Loops,
        quality: u8,
        out: &'a mut Vec<u8>,
    ) -> Result<Self, ResizeError> {
        out.clear();
        match format {
            OutputFormat::Gif => {
                let (w, h) = gif_size(width, height)?;
                let mut enc = gif::Encoder::new(out, w, h, &[]).map_err(gif_encode)?;
                enc.set_repeat(match loops {
                    0 => gif::Repeat::Infinite,
                    n => gif::Repeat::Finite(n),
                })
                .map_err(gif_encode)?;
                Ok(Encoder::Gif(Box::new(enc), (w, h), Vec::new()))
            }
            OutputFormat::WebP => {
                WebPAnim::new(width, height, loops, quality, out).map(Encoder::WebP)
            }
            _ => Err(ResizeError::Encode(format!(
                "{} cannot be animated",
                format.as_str()
            ))),
        }
    }

    fn add(
        &mut self,
        pixels: &[u8],
        channels: u8,
        delay_ms: u32,
        stop: Stop<'_>,
    ) -> Result<(), ResizeError> {
        match self {
            Encoder::Gif(enc, (w, h), rgba) => {
                let (w, h) = (*w, *h);
                let mut frame = gif_frame(w, h, pixels, channels, rgba)?;
                frame.delay = u16::try_from(delay_ms.div_ceil(10)).unwrap_or(u16::MAX);
                frame.dispose = gif::DisposalMethod::Background;
                enc.write_frame(&frame).map_err(gif_encode)
            }
            Encoder::WebP(anim) => anim.add(pixels, channels, delay_ms, stop),
        }
    }

    fn finish(self) -> Result<(), ResizeError> {
        match self {
            Encoder::Gif(enc, _, _) => enc.into_inner().map(drop).map_err(gif_encode),
            Encoder::WebP(anim) => anim.finish(),
        }
    }
}

fn gif_encode(e: gif::EncodingError) -> ResizeError {
    ResizeError::Encode(format!("GIF: {e}"))
}

fn gif_size(width: u32, height: u32) -> Result<(u16, u16), ResizeError> {
    match (u16::try_from(width), u16::try_from(height)) {
        (Ok(w), Ok(h)) => Ok((w, h)),
        _ => Err(ResizeError::InvalidOption(format!(
            "a GIF is at most 65535 pixels per side, not {width}x{height}"
        ))),
    }
}

/// One GIF frame from RGB or RGBA pixels, through `rgba` (the quantiser takes RGBA and
/// writes into it).
fn gif_frame(
    w: u16,
    h: u16,
    pixels: &[u8],
    channels: u8,
    rgba: &mut Vec<u8>,
) -> Result<gif::Frame<'static>, ResizeError> {
    let n = usize::from(w) * usize::from(h);
    rgba.clear();
    match channels {
        4 => rgba.extend_from_slice(&pixels[..n * 4]),
        3 => {
            rgba.reserve(n * 4);
            for p in pixels[..n * 3].chunks_exact(3) {
                rgba.extend_from_slice(&[p[0], p[1], p[2], 255]);
            }
        }
        c => {
            return Err(ResizeError::Encode(format!(
                "GIF: cannot take {c} channels"
            )))
        }
    }
    Ok(gif::Frame::from_rgba_speed(w, h, rgba, GIF_QUANTISER_SPEED))
}

/// NeuQuant's sampling factor (1 best, 30 fastest): the `gif` crate's recommended
/// compromise.
const GIF_QUANTISER_SPEED: i32 = 10;

/// A still image as a one-frame GIF (`format=gif` on a still input, or a GIF's first
/// frame when the animation is not kept).
pub(crate) fn encode_still_gif(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    out: &mut Vec<u8>,
) -> Result<(), ResizeError> {
    let (w, h) = gif_size(width, height)?;
    let mut rgba = Vec::new();
    let frame = gif_frame(w, h, pixels, channels, &mut rgba)?;
    let mut enc = gif::Encoder::new(&mut *out, w, h, &[]).map_err(gif_encode)?;
    enc.write_frame(&frame).map_err(gif_encode)?;
    enc.into_inner().map(drop).map_err(gif_encode)
}

/// libwebp's animation encoder, freed on every path (`Drop`).
struct WebPAnim<'a> {
    encoder: *mut libwebp_sys::WebPAnimEncoder,
    config: libwebp_sys::WebPConfig,
    width: u32,
    height: u32,
    timestamp_ms: i32,
    out: &'a mut Vec<u8>,
}

impl<'a> WebPAnim<'a> {
    fn new(
        width: u32,
        height: u32,
        loops: Loops,
        quality: u8,
        out: &'a mut Vec<u8>,
    ) -> Result<Self, ResizeError> {
        use libwebp_sys as ffi;
        if width > 16_383 || height > 16_383 {
            return Err(ResizeError::Encode(
                "WebP is limited to 16383 pixels per side".to_owned(),
            ));
        }
        let mut config =
            ffi::WebPConfig::new().map_err(|()| ResizeError::Encode("WebP: config".to_owned()))?;
        config.lossless = 0;
        config.alpha_compression = 1;
        config.quality = f32::from(quality);
        // SAFETY: `options` is plain data initialised by libwebp before it is read; the
        // encoder returned is checked for null and owned by `Self`, which deletes it.
        let encoder = unsafe {
            let mut options = std::mem::zeroed::<ffi::WebPAnimEncoderOptions>();
            if ffi::WebPAnimEncoderOptionsInitInternal(
                &mut options,
                ffi::WEBP_MUX_ABI_VERSION as i32,
            ) == 0
            {
                return Err(ResizeError::Encode("WebP: animation options".to_owned()));
            }
            options.anim_params.loop_count = i32::from(loops);
            ffi::WebPAnimEncoderNewInternal(
                width as i32,
                height as i32,
                &options,
                ffi::WEBP_MUX_ABI_VERSION as i32,
            )
        };
        if encoder.is_null() {
            return Err(ResizeError::Encode(
                "WebP: cannot create the animation encoder".to_owned(),
            ));
        }
        Ok(WebPAnim {
            encoder,
            config,
            width,
            height,
            timestamp_ms: 0,
            out,
        })
    }

    fn add(
        &mut self,
        pixels: &[u8],
        channels: u8,
        delay_ms: u32,
        stop: Stop<'_>,
    ) -> Result<(), ResizeError> {
        use libwebp_sys as ffi;
        let import = match channels {
            3 => ffi::WebPPictureImportRGB,
            4 => ffi::WebPPictureImportRGBA,
            n => {
                return Err(ResizeError::Encode(format!(
                    "WebP cannot take {n} channels"
                )))
            }
        };
        let stride = self.width as usize * usize::from(channels);
        if pixels.len() < stride * self.height as usize {
            return Err(ResizeError::Encode("WebP: short pixel buffer".to_owned()));
        }
        let mut picture = ffi::WebPPicture::new()
            .map_err(|()| ResizeError::Encode("WebP: picture".to_owned()))?;
        picture.use_argb = 1;
        picture.width = self.width as i32;
        picture.height = self.height as i32;
        // SAFETY: the pixel buffer holds `height` rows of `stride` bytes (checked above);
        // `user_data` points at `stop`, which outlives the call; the picture is freed on
        // every path after the import; the encoder is live (owned by `self`).
        let ok = unsafe {
            if import(&mut picture, pixels.as_ptr(), stride as i32) == 0 {
                ffi::WebPPictureFree(&mut picture);
                return Err(ResizeError::Encode(
                    "WebP: out of memory importing".to_owned(),
                ));
            }
            picture.progress_hook = Some(crate::encode::webp_progress);
            picture.user_data = (&stop as *const Stop<'_>).cast_mut().cast();
            let ok = ffi::WebPAnimEncoderAdd(
                self.encoder,
                &mut picture,
                self.timestamp_ms,
                &self.config,
            );
            ffi::WebPPictureFree(&mut picture);
            ok != 0
        };
        if !ok {
            cancel::check(stop)?;
            return Err(ResizeError::Encode(format!("WebP: {}", self.error())));
        }
        self.timestamp_ms = self
            .timestamp_ms
            .saturating_add(i32::try_from(delay_ms).unwrap_or(i32::MAX));
        Ok(())
    }

    fn error(&self) -> String {
        // SAFETY: the encoder is live; libwebp returns a NUL-terminated string it owns.
        unsafe {
            let msg = libwebp_sys::WebPAnimEncoderGetError(self.encoder);
            if msg.is_null() {
                "unknown error".to_owned()
            } else {
                std::ffi::CStr::from_ptr(msg).to_string_lossy().into_owned()
            }
        }
    }

    fn finish(self) -> Result<(), ResizeError> {
        use libwebp_sys as ffi;
        let mut data = ffi::WebPData::default();
        // SAFETY: a null frame marks the end (its timestamp is the last frame's end); the
        // assembled data is owned by libwebp until `WebPDataClear`.
        let ok = unsafe {
            ffi::WebPAnimEncoderAdd(
                self.encoder,
                std::ptr::null_mut(),
                self.timestamp_ms,
                std::ptr::null(),
            ) != 0
                && ffi::WebPAnimEncoderAssemble(self.encoder, &mut data) != 0
        };
        if ok && !data.bytes.is_null() {
            // SAFETY: libwebp wrote `size` bytes at `bytes`.
            self.out
                .extend_from_slice(unsafe { std::slice::from_raw_parts(data.bytes, data.size) });
        }
        // SAFETY: `data` is empty or libwebp's own allocation.
        unsafe { ffi::WebPDataClear(&mut data) };
        if ok {
            Ok(())
        } else {
            Err(ResizeError::Encode(format!("WebP: {}", self.error())))
        }
    }
}

impl Drop for WebPAnim<'_> {
    fn drop(&mut self) {
        // SAFETY: the encoder was created in `new`, is non-null and deleted only here.
        unsafe { libwebp_sys::WebPAnimEncoderDelete(self.encoder) };
    }
}
