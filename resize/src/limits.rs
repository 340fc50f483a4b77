//! Bounds on what one request may make the pipeline do.
//!
//! Every bound is checked against what the *header* declares, before any pixel buffer is
//! allocated, so a tiny file declaring a huge image (a decompression bomb) costs nothing.
//! `pixels_max` is checked on the declared size, not on the size after JPEG shrink-on-load:
//! a node's memory and CPU budget is then predictable from the header alone.

use crate::ResizeError;

/// Limits applied to every input and output of a [`crate::Pipeline`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted input, in bytes (default 32 MiB).
    pub input_bytes_max: usize,
    /// Largest declared width (default 16 384).
    pub width_max: u32,
    /// Largest declared height (default 16 384).
    pub height_max: u32,
    /// Largest declared width × height (default 50 000 000), on the un-shrunk size.
    pub pixels_max: u64,
    /// Largest number of frames of an animation (GIF, WebP, APNG); more is refused (default 100).
    pub frames_max: u32,
    /// Largest width × height of the output (default 16 777 216).
    pub output_pixels_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            input_bytes_max: 32 * 1024 * 1024,
            width_max: 16_384,
            height_max: 16_384,
            pixels_max: 50_000_000,
            frames_max: 100,
            output_pixels_max: 16_777_216,
        }
    }
}

impl Limits {
    /// Checks declared dimensions against the width, height and pixel bounds.
    pub(crate) fn check_dimensions(&self, width: u32, height: u32) -> Result<(), ResizeError> {
        let pixels = u64::from(width) * u64::from(height);
        if width > self.width_max || height > self.height_max || pixels > self.pixels_max {
            return Err(ResizeError::DimensionsTooLarge {
                width,
                height,
                pixels,
                width_max: self.width_max,
                height_max: self.height_max,
                pixels_max: self.pixels_max,
            });
        }
        if width == 0 || height == 0 {
            return Err(ResizeError::Corrupt(format!(
                "the header declares a {width}x{height} image"
            )));
        }
        Ok(())
    }

    /// Checks a frame count against `frames_max`.
    pub(crate) fn check_frames(&self, frames: u32) -> Result<(), ResizeError> {
        if frames > self.frames_max {
            return Err(ResizeError::TooManyFrames {
                frames,
                max: self.frames_max,
            });
        }
        Ok(())
    }
}
