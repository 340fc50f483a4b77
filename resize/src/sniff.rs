//! Format detection from magic bytes.
//!
//! The bytes decide the format, never a `Content-Type`: clients send
//! `application/octet-stream`, curl's form type or plain lies, and a decoder chosen by a
//! header would be fed bytes it was never meant to parse.

/// An input format the pipeline decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputFormat {
    Jpeg,
    Png,
    WebP,
    Gif,
}

impl InputFormat {
    /// Lower-case name, e.g. for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            InputFormat::Jpeg => "jpeg",
            InputFormat::Png => "png",
            InputFormat::WebP => "webp",
            InputFormat::Gif => "gif",
        }
    }

    /// The output format of the same family (what `format=original` answers, and the
    /// media type of a file in this format: `family().mime()`).
    pub fn family(self) -> crate::OutputFormat {
        match self {
            InputFormat::Jpeg => crate::OutputFormat::Jpeg,
            InputFormat::Png => crate::OutputFormat::Png,
            InputFormat::Gif => crate::OutputFormat::Gif,
            InputFormat::WebP => crate::OutputFormat::WebP,
        }
    }
}

/// Detects the format from the first bytes only; `None` for anything else.
pub fn sniff(bytes: &[u8]) -> Option<InputFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(InputFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(InputFormat::Png)
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(InputFormat::WebP)
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some(InputFormat::Gif)
    } else {
        None
    }
}
