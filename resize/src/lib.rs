//! `tessera-resize`: the synchronous image pipeline behind every Tessera resize.
//!
//! One call turns encoded bytes into encoded bytes:
//! sniff the format from the bytes (never from a `Content-Type`) → read the header and
//! check every [`Limits`] bound *before* a pixel buffer is allocated → decode, at a reduced
//! scale where the format allows it (JPEG DCT scaling, "shrink-on-load") → convert to sRGB
//! (CMYK, ICC profiles, gray, 16-bit) → resize with `fast_image_resize` → apply EXIF
//! orientation (EXIF composed with the caller's `rotate`/`flip`, one pass) → padding and
//! background → the tenant's watermark → encode (JPEG, PNG, WebP, AVIF) with all metadata stripped.
//!
//! Every byte and CPU-second a request can cost is bounded from its header, before pixels
//! are allocated: input bytes, declared width/height/pixels, frames, metadata
//! (`metadata_bytes_max`: ICC and EXIF read or inflated, JPEG segments kept; PNG text is
//! never inflated), the job's estimated peak memory (`job_bytes_max`, see `budget`), output
//! pixels overall and per uninterruptible encoder (`webp_output_pixels_max`,
//! `avif_output_pixels_max`). Decoding is strict: a libjpeg warning about corrupt or missing
//! data, a PNG/GIF/WebP stream that ends early, or fewer JPEG rows than declared is
//! [`ResizeError::Corrupt`], never an image padded with grey. [`probe`] runs the header
//! stage alone, so the node can price a job (output format and pixels, memory) before
//! queueing it, and refuses what the pipeline would refuse from the header.
//!
//! Cancellation is cooperative ([`Pipeline::process_cancellable`]): the caller's stop check
//! runs between stages, every 64 rows of JPEG/PNG/GIF decoding and JPEG/PNG encoding, at
//! each JPEG scan, between resize bands of ~4 M source+output pixels, and at libwebp's
//! progress reports. What runs without a check, measured with `examples/stretches.rs` on the
//! shared 2-core machine (loaded, so ranges): an AVIF encode (4.2 MP at speed 10: 2.7-4.3 s;
//! 1 MP: 0.9-1.8 s; bounded by `avif_output_pixels_max`, and the node refuses AVIF work up
//! front by its cost model), a WebP frame decode (49 MP: 0.36-0.72 s), one scan of a
//! progressive JPEG (50 MP: ~0.2 s), the gaps between libwebp's progress reports (16.7 MP:
//! ~0.15 s); everything else ~0.1 s at most.
//!
//! The crate is synchronous and never sees an async runtime: the node runs it on its own
//! bounded pool of blocking workers, one [`Pipeline`] per worker, so the buffers a
//! `Pipeline` keeps are reused from one request to the next without locking.
//!
//! Parts: [`limits`] (bounds), [`options`] (what a request asks, parsing, validation),
//! `sniff` (format from magic bytes), `decode` (bounded decoders), `color` (CMYK and ICC to
//! sRGB), `geometry` (fit, crop, shrink-on-load, orientation), `resample` (the Lanczos3
//! filter), `encode` (encoders), `trim` (uniform borders), `canvas` (padding and
//! background), `filter` (blur, unsharp mask), `smart` (the content-aware crop anchor),
//! [`watermark`] (a tenant's logo blended over the result), `budget` (the job memory
//! estimate and filter operation count), `cancel` (stop checks), [`pipeline`] (the call
//! that ties them together, and [`probe`]), [`info`] (what an image is, for `/v1/info`),
//! [`error`].
//!
//! Dependencies beyond `image`, `fast_image_resize` and `thiserror`, and why:
//! - `mozjpeg` (+ `mozjpeg-sys` for its error-manager types): libjpeg-turbo's SIMD decoder
//!   with DCT-domain scaling and its encoder; the fastest JPEG path available, and the
//!   benchmark target (1.5x libvips per core) is unreachable without shrink-on-load.
//! - `libwebp-sys`: libwebp's lossy encoder (`image` only encodes lossless WebP), called
//!   directly (not through the `webp` crate) for its progress hook, which can abort an
//!   encode.
//! - `ravif`: AVIF encoding (rav1e), built with its `asm` feature (rav1e's nasm kernels:
//!   the encode ~2x faster, see `encode`) and run single-threaded (the node parallelises
//!   across requests).
//! - `gif`: counting frames without decoding them (`image`'s GIF decoder hides this), and
//!   decoding the first frame row by row (cancellable, extensions bounded).
//! - `image-webp`: the WebP decoder `image` wraps, used directly for its frame count.
//! - `moxcms`: ICC profiles (already built as part of `image`; see `color`).
//! - `libc`: `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` for billing CPU time.
//! - `png` (already built for `image`): decoding row by row, with the iCCP and text chunks
//!   left alone (`image`'s wrapper inflates iCCP before limits can be set, and decodes a
//!   frame in one call, so it can neither bound metadata nor be cancelled), and encoding in
//!   bands.
//! - `fdeflate` (already built for `png`): inflating a PNG's ICC profile with a bound.
//!
//! What this crate must never know about: HTTP, tenants, billing, the network, tokio.

mod animation;
mod budget;
mod cancel;
mod canvas;
mod color;
mod decode;
mod encode;
pub mod error;
#[doc(hidden)]
pub mod filter;
mod geometry;
pub mod info;
mod libjpeg;
pub mod limits;
mod metadata;
pub mod options;
pub mod pipeline;
mod resample;
#[doc(hidden)]
pub mod smart;
mod sniff;
mod trim;
pub mod watermark;

pub use decode::JPEG_SCANS_MAX;
pub use error::{ErrorClass, ResizeError};
pub use info::{info, ColorSpace, Info, InfoBuffers};
pub use limits::Limits;
pub use options::{
    avif_speed_min, Crop, Decimal, Fit, Flip, FormatQuality, FormatRequest, Gravity, Options,
    OutputFormat, Padding, ParseError, Rgba, Rotation, Sharpen, WatermarkOptions,
    WatermarkPosition, MAX_BYTES_ENCODES, MAX_BYTES_QUALITY_MIN, SIDE_MAX, WATERMARK_INSET_MAX_PX,
};
pub use pipeline::{probe, Output, Pipeline, Probe, SourceWindow, Timings, JPEG_SHRINK_MARGIN};
pub use sniff::{sniff, InputFormat};
pub use watermark::{Watermark, WATERMARK_BYTES_MAX};

/// The version of the bytes the pipeline writes: raised with every change that alters an
/// output for the same input and options (an encoder or its settings, a filter, a decode
/// scale, a codec library update). The node's ETags hash it, so a strong tag names one byte
/// sequence across deployments (RFC 9110, 8.8.1); `tests/output_version.rs` pins it to the
/// bytes of a fixed set of conversions and fails when they change and it does not.
pub const OUTPUT_VERSION: u32 = 1;
