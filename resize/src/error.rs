//! The one error type of the pipeline, and how each variant maps onto an HTTP-ish class.
//!
//! Every failure a hostile or broken input can cause is an ordinary value here (never a
//! panic), so the node can answer it with a 4xx and never bill it. `class` and `code` are the
//! only mapping the node needs: the crate knows nothing of HTTP itself, only which of six
//! broad classes a failure belongs to, and a stable snake_case code for JSON bodies.

/// Why a resize was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// The input has no bytes at all.
    #[error("the image is empty (0 bytes)")]
    Empty,
    /// The input is larger than `Limits::input_bytes_max`.
    #[error("the image is {bytes} bytes, over the limit of {max} bytes")]
    InputTooLarge { bytes: usize, max: usize },
    /// The bytes are not JPEG, PNG, WebP or GIF (decided by sniffing, never by a content type).
    #[error("unsupported format: the bytes are not JPEG, PNG, WebP or GIF")]
    UnsupportedFormat,
    /// The bytes start like a supported format but cannot be decoded (truncated, corrupt).
    #[error("the image cannot be decoded: {0}")]
    Corrupt(String),
    /// The header declares dimensions over `Limits` (refused before any pixel is allocated).
    #[error("the image is {width}x{height} ({pixels} pixels), over the limit of {width_max}x{height_max} and {pixels_max} pixels")]
    DimensionsTooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        width_max: u32,
        height_max: u32,
        pixels_max: u64,
    },
    /// An animation has more frames than `Limits::frames_max`.
    #[error("the animation has {frames} frames, over the limit of {max}")]
    TooManyFrames { frames: u32, max: u32 },
    /// An animation kept animated would touch more than `Limits::animation_pixels_max`
    /// pixels (frames × the larger of canvas and output).
    #[error("the animation has {frames} frames, {pixels} pixels in all, over the limit of {max} pixels for an animated output (ask for a still format for its first frame)")]
    AnimationTooLarge { frames: u32, pixels: u64, max: u64 },
    /// A request option is out of range or its result would exceed the output limits.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// An embedded metadata item the pipeline reads (ICC profile, EXIF) is, or inflates to,
    /// more than `Limits::metadata_bytes_max`. Refused rather than ignored: dropping an ICC
    /// profile would serve wrong colours as a success, and no real camera or editor writes
    /// metadata this large (it is a decompression bomb or a flood).
    #[error("the image's {kind} is {bytes} bytes or more, over the limit of {max} bytes")]
    MetadataTooLarge {
        /// What was too large: "ICC profile", "EXIF", "metadata segments".
        kind: &'static str,
        /// The size seen when the bound was crossed (a lower bound for inflated data).
        bytes: u64,
        max: u64,
    },
    /// The job's estimated peak working memory (decode, resize and encode buffers, see
    /// `crate::budget`) is over `Limits::job_bytes_max`; refused from the header, before
    /// any pixel buffer is allocated.
    #[error("the job would need about {bytes} bytes of memory, over the limit of {max} bytes")]
    JobMemoryExceeded { bytes: u64, max: u64 },
    /// The caller's stop check returned true (deadline passed, client gone); no output.
    #[error("the job was cancelled")]
    Cancelled,
    /// The encoder failed (should not happen on validated input).
    #[error("encoding failed: {0}")]
    Encode(String),
}

/// Broad class of a [`ResizeError`], for the caller to map onto a status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request itself is wrong (400).
    BadRequest,
    /// The body is over the byte limit (413).
    PayloadTooLarge,
    /// The bytes are not a supported, decodable image (415).
    UnsupportedMedia,
    /// A well-formed image that this service refuses to process (422).
    Unprocessable,
    /// A failure on our side (500).
    Internal,
    /// The caller cancelled the job through its stop check (the node answers 503 when its
    /// deadline passed, nothing when the client went away).
    Cancelled,
}

impl ResizeError {
    /// The broad class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            ResizeError::Empty | ResizeError::InvalidOption(_) => ErrorClass::BadRequest,
            ResizeError::InputTooLarge { .. } => ErrorClass::PayloadTooLarge,
            ResizeError::UnsupportedFormat | ResizeError::Corrupt(_) => {
                ErrorClass::UnsupportedMedia
            }
            ResizeError::DimensionsTooLarge { .. }
            | ResizeError::TooManyFrames { .. }
            | ResizeError::AnimationTooLarge { .. }
            | ResizeError::MetadataTooLarge { .. }
            | ResizeError::JobMemoryExceeded { .. } => ErrorClass::Unprocessable,
            ResizeError::Cancelled => ErrorClass::Cancelled,
            ResizeError::Encode(_) => ErrorClass::Internal,
        }
    }

    /// A stable snake_case machine code, used in JSON error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            ResizeError::Empty => "empty_body",
            ResizeError::InputTooLarge { .. } => "payload_too_large",
            ResizeError::UnsupportedFormat => "unsupported_media_type",
            ResizeError::Corrupt(_) => "undecodable_image",
            ResizeError::DimensionsTooLarge { .. } => "image_too_large",
            ResizeError::TooManyFrames { .. } => "too_many_frames",
            ResizeError::AnimationTooLarge { .. } => "animation_too_large",
            ResizeError::InvalidOption(_) => "invalid_parameter",
            ResizeError::MetadataTooLarge { .. } => "metadata_too_large",
            ResizeError::JobMemoryExceeded { .. } => "job_memory_exceeded",
            ResizeError::Cancelled => "cancelled",
            ResizeError::Encode(_) => "encode_failed",
        }
    }
}

/// The message of a caught panic (`String` or `&str` payloads), else `fallback`: codecs
/// that unwind on hostile input become typed errors, not crashes.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send), fallback: &str) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        fallback.to_owned()
    }
}
