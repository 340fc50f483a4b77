//! Bounds on what one request may make the pipeline do.
//!
//! Every bound is checked against what the *header* declares, before any pixel buffer is
//! allocated, so a tiny file declaring a huge image (a decompression bomb) costs nothing.
//! `pixels_max` is checked on the declared size, not on the size after JPEG shrink-on-load:
//! a node's memory and CPU budget is then predictable from the header alone.
//!
//! Besides pixels, the bounds cover what a header can make a decoder allocate or inflate:
//! metadata (`metadata_bytes_max`, checked while walking chunks/markers, with a bounded
//! inflater for compressed PNG profiles), the job's estimated peak working memory
//! (`job_bytes_max`, see `crate::budget`) and the output size per encoder whose memory and
//! time grow with it and cannot be interrupted or bounded from outside (AVIF, WebP).

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
    /// Largest total of pixels an animation kept animated makes the job touch: frames ×
    /// the larger of the canvas and the output (default 100 000 000: 100 frames of a
    /// 1000x1000 GIF). Over it the job is refused ([`ResizeError::AnimationTooLarge`]);
    /// asking for a still format (JPEG, PNG, AVIF) takes the first frame only.
    pub animation_pixels_max: u64,
    /// Largest width × height of the output (default 16 777 216).
    pub output_pixels_max: u64,
    /// Largest metadata item the pipeline reads or inflates (ICC profile, EXIF), and largest
    /// total of the JPEG segments libjpeg keeps in memory (APP1, APP2, APP14), in bytes
    /// (default 4 MiB; real ICC profiles are a few KiB, rarely 1 MiB). Text chunks are never
    /// inflated at all.
    pub metadata_bytes_max: u64,
    /// Largest estimated peak working memory of one job, in bytes (default 512 MiB, so the
    /// default two workers stay under ~1 GiB of pixel and codec buffers). See `crate::budget`
    /// for what the estimate counts.
    pub job_bytes_max: u64,
    /// Largest WebP output, in pixels (default 16 777 216; libwebp itself stops at 16383 per
    /// side). Over it, `format=auto` falls back to JPEG/PNG and an explicit WebP is refused.
    pub webp_output_pixels_max: u64,
    /// Largest AVIF output, in pixels (default 4 194 304). rav1e cannot be interrupted once
    /// it runs, and at its fastest speed takes ~1.1 s per megapixel on one core here, so this
    /// bounds the one stretch of a job that a stop check cannot end. Over it, `format=auto`
    /// falls back and an explicit AVIF is refused.
    pub avif_output_pixels_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            input_bytes_max: 32 * 1024 * 1024,
            width_max: 16_384,
            height_max: 16_384,
            pixels_max: 50_000_000,
            frames_max: 100,
            animation_pixels_max: 100_000_000,
            output_pixels_max: 16_777_216,
            metadata_bytes_max: 4 << 20,
            job_bytes_max: 512 << 20,
            webp_output_pixels_max: 16_777_216,
            avif_output_pixels_max: 4_194_304,
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

    /// Checks the size of a metadata item (or a lower bound of it) against `metadata_bytes_max`.
    pub(crate) fn check_metadata(&self, kind: &'static str, bytes: u64) -> Result<(), ResizeError> {
        if bytes > self.metadata_bytes_max {
            return Err(ResizeError::MetadataTooLarge {
                kind,
                bytes,
                max: self.metadata_bytes_max,
            });
        }
        Ok(())
    }

    /// Checks the pixels an animated job touches against `animation_pixels_max`.
    pub(crate) fn check_animation(&self, frames: u32, pixels: u64) -> Result<(), ResizeError> {
        if pixels > self.animation_pixels_max {
            return Err(ResizeError::AnimationTooLarge {
                frames,
                pixels,
                max: self.animation_pixels_max,
            });
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
