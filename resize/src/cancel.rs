//! Cooperative cancellation: the caller's stop check, and where the pipeline consults it.
//!
//! The node runs each job on a blocking worker and cannot kill it; instead it passes a
//! cheap closure (a deadline compared with the clock, a flag set when the client went away)
//! that the pipeline calls between stages and inside its long loops. When it returns true,
//! the job ends with [`ResizeError::Cancelled`] at the next check point and the worker is
//! free. Check points: before and after each stage, every [`ROWS_PER_CHECK`] rows of a JPEG
//! or PNG decode and of a JPEG or PNG encode, at every scan of a JPEG decode, at every
//! progress report of libwebp's encoder, and between resize bands (see `crate::pipeline`).
//! What cannot be interrupted (a GIF or WebP frame decode, an AVIF encode) is bounded by
//! limits instead and listed in the crate doc.

use crate::ResizeError;

/// The caller's stop check.
pub(crate) type Stop<'a> = &'a (dyn Fn() -> bool + 'a);

/// Rows decoded or encoded between two stop checks: at ~1-10 µs per row of a large image,
/// a check every 64 rows costs nothing measurable and answers within a millisecond or so.
pub(crate) const ROWS_PER_CHECK: usize = 64;

/// The unwind payload a stop check raises from inside a C library's callback (libjpeg);
/// the code that catches the unwind turns it into [`ResizeError::Cancelled`].
pub(crate) struct Cancelled;

/// `Err(Cancelled)` when the caller asked to stop.
pub(crate) fn check(stop: Stop<'_>) -> Result<(), ResizeError> {
    if stop() {
        Err(ResizeError::Cancelled)
    } else {
        Ok(())
    }
}
