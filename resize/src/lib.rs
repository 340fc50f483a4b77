//! `tessera-resize`: the synchronous image pipeline behind every Tessera resize.
//!
//! One call turns encoded bytes into encoded bytes:
//! sniff the format from the bytes (never from a `Content-Type`) → read the header and
//! check every [`Limits`] bound *before* a pixel buffer is allocated → decode, at a reduced
//! scale where the format allows it (JPEG DCT scaling, "shrink-on-load") → convert to sRGB
//! (CMYK, ICC profiles, gray, 16-bit) → resize with `fast_image_resize` → apply EXIF
//! orientation → encode (JPEG, PNG, WebP, AVIF) with all metadata stripped.
//!
//! The crate is synchronous and never sees an async runtime: the node runs it on its own
//! bounded pool of blocking workers, one [`Pipeline`] per worker, so the buffers a
//! `Pipeline` keeps are reused from one request to the next without locking.
//!
//! Parts: [`limits`] (bounds), [`options`] (what a request asks, parsing, validation),
//! `sniff` (format from magic bytes), `decode` (bounded decoders), `color` (CMYK and ICC to
//! sRGB), `geometry` (fit, crop, shrink-on-load, orientation), `encode` (encoders),
//! [`pipeline`] (the call that ties them together), [`error`].
//!
//! Dependencies beyond `image`, `fast_image_resize` and `thiserror`, and why:
//! - `mozjpeg` (+ `mozjpeg-sys` for its error-manager types): libjpeg-turbo's SIMD decoder
//!   with DCT-domain scaling and its encoder; the fastest JPEG path available, and the
//!   benchmark target (1.5x libvips per core) is unreachable without shrink-on-load.
//! - `webp`: libwebp's lossy encoder (`image` only encodes lossless WebP).
//! - `ravif`: AVIF encoding (rav1e), built without `asm` (no nasm build of rav1e) and without
//!   threading (the node parallelises across requests).
//! - `gif`: counting frames without decoding them (`image`'s GIF decoder hides this).
//! - `image-webp`: the WebP decoder `image` wraps, used directly for its frame count.
//! - `moxcms`: ICC profiles (already built as part of `image`; see `color`).
//! - `libc`: `clock_gettime(CLOCK_THREAD_CPUTIME_ID)` for billing CPU time.
//! - `png` (already built for `image`): decoding row by row, with the iCCP and text chunks
//!   left alone (`image`'s wrapper inflates iCCP before limits can be set, and decodes a
//!   frame in one call, so it can neither bound metadata nor be cancelled), and encoding in
//!   bands.
//! - `fdeflate` (already built for `png`): inflating a PNG's ICC profile with a bound.
//! - `libwebp-sys` (already built for `webp`): the encoder's progress hook, which can abort
//!   an encode; `webp` does not expose it.
//!
//! What this crate must never know about: HTTP, tenants, billing, the network, tokio.

mod budget;
mod cancel;
mod color;
mod decode;
mod encode;
pub mod error;
mod geometry;
pub mod limits;
pub mod options;
pub mod pipeline;
mod sniff;

pub use decode::JPEG_SCANS_MAX;
pub use error::{ErrorClass, ResizeError};
pub use limits::Limits;
pub use options::{
    avif_speed_min, Fit, FormatRequest, Gravity, Options, OutputFormat, ParseError, SIDE_MAX,
};
pub use pipeline::{probe, Output, Pipeline, Probe, Timings, JPEG_SHRINK_MARGIN};
pub use sniff::{sniff, InputFormat};
