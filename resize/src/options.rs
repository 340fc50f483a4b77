//! What a caller may ask of one resize: target size, fit mode, gravity, output format and
//! encoder settings, with parsing from the query-string spellings and range validation.
//!
//! Parsing lives here (not in the node) so that every front end (POST query, signed URL,
//! CLI) accepts exactly the same spellings and rejects with the same messages.

use std::str::FromStr;

use crate::{Limits, ResizeError};

/// Largest width or height a caller may request.
pub const SIDE_MAX: u32 = 16_384;

/// How the image is fitted into the requested box.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Fit {
    /// Scale to fit inside the box, keeping the aspect ratio (may enlarge).
    #[default]
    Contain,
    /// Scale to fill the box, keeping the aspect ratio, and crop what overflows (see [`Gravity`]).
    Cover,
    /// Stretch to exactly the box, ignoring the aspect ratio.
    Fill,
    /// Like `Contain`, but never enlarge.
    ScaleDown,
}

impl Fit {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Contain => "contain",
            Fit::Cover => "cover",
            Fit::Fill => "fill",
            Fit::ScaleDown => "scale-down",
        }
    }
}

impl FromStr for Fit {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "contain" => Ok(Fit::Contain),
            "cover" => Ok(Fit::Cover),
            "fill" => Ok(Fit::Fill),
            "scale-down" => Ok(Fit::ScaleDown),
            _ => Err(ParseError(format!(
                "unknown fit {s:?}; accepted: contain, cover, fill, scale-down"
            ))),
        }
    }
}

/// Which part of the image `Fit::Cover` keeps when it crops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Gravity {
    #[default]
    Center,
    North,
    NorthEast,
    East,
    SouthEast,
    South,
    SouthWest,
    West,
    NorthWest,
}

impl Gravity {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Gravity::Center => "center",
            Gravity::North => "north",
            Gravity::NorthEast => "northeast",
            Gravity::East => "east",
            Gravity::SouthEast => "southeast",
            Gravity::South => "south",
            Gravity::SouthWest => "southwest",
            Gravity::West => "west",
            Gravity::NorthWest => "northwest",
        }
    }

    /// Where the crop window sits along each axis: 0 = left/top, 0.5 = centre, 1 = right/bottom.
    pub(crate) fn anchor(self) -> (f64, f64) {
        match self {
            Gravity::Center => (0.5, 0.5),
            Gravity::North => (0.5, 0.0),
            Gravity::NorthEast => (1.0, 0.0),
            Gravity::East => (1.0, 0.5),
            Gravity::SouthEast => (1.0, 1.0),
            Gravity::South => (0.5, 1.0),
            Gravity::SouthWest => (0.0, 1.0),
            Gravity::West => (0.0, 0.5),
            Gravity::NorthWest => (0.0, 0.0),
        }
    }
}

impl FromStr for Gravity {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "center" | "centre" | "c" => Ok(Gravity::Center),
            "n" | "north" => Ok(Gravity::North),
            "ne" | "northeast" => Ok(Gravity::NorthEast),
            "e" | "east" => Ok(Gravity::East),
            "se" | "southeast" => Ok(Gravity::SouthEast),
            "s" | "south" => Ok(Gravity::South),
            "sw" | "southwest" => Ok(Gravity::SouthWest),
            "w" | "west" => Ok(Gravity::West),
            "nw" | "northwest" => Ok(Gravity::NorthWest),
            _ => Err(ParseError(format!(
                "unknown gravity {s:?}; accepted: center (centre, c), n (north), ne (northeast), \
                 e (east), se (southeast), s (south), sw (southwest), w (west), nw (northwest)"
            ))),
        }
    }
}

/// An encoded output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    Jpeg,
    Png,
    WebP,
    Avif,
    /// Animated when the input is (see `crate::animation`); else one frame.
    Gif,
}

impl OutputFormat {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::WebP => "webp",
            OutputFormat::Avif => "avif",
            OutputFormat::Gif => "gif",
        }
    }

    /// The media type for `Content-Type`.
    pub fn mime(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::WebP => "image/webp",
            OutputFormat::Avif => "image/avif",
            OutputFormat::Gif => "image/gif",
        }
    }
}

impl FromStr for OutputFormat {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "jpeg" | "jpg" => Ok(OutputFormat::Jpeg),
            "png" => Ok(OutputFormat::Png),
            "webp" => Ok(OutputFormat::WebP),
            "avif" => Ok(OutputFormat::Avif),
            "gif" => Ok(OutputFormat::Gif),
            _ => Err(ParseError(format!(
                "unknown format {s:?}; accepted: jpeg (jpg), png, webp, avif, gif"
            ))),
        }
    }
}

/// What the caller asked for; `Auto` is resolved by the pipeline after decoding,
/// because only then is it known whether the image has alpha.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FormatRequest {
    Fixed(OutputFormat),
    /// WebP if accepted; else AVIF if accepted; else PNG when the image has alpha, else JPEG.
    /// WebP wins over AVIF because it encodes ~50x faster at a similar size for thumbnails.
    /// An animated input stays animated: animated WebP if accepted, else GIF.
    Auto {
        webp: bool,
        avif: bool,
    },
    /// Same family as the input: JPEG in -> JPEG, PNG -> PNG, GIF -> GIF, WebP -> WebP
    /// (an animated GIF or WebP stays animated).
    Original,
}

/// One resize request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Options {
    /// Target width; `None` with a height keeps the aspect ratio; both `None`: original size
    /// (scaled down if it exceeds `Limits::output_pixels_max`).
    pub width: Option<u32>,
    /// Target height; see `width`.
    pub height: Option<u32>,
    pub fit: Fit,
    /// Used by `Fit::Cover`.
    pub gravity: Gravity,
    pub format: FormatRequest,
    /// 1..=100 (JPEG, WebP, AVIF); default 80.
    pub quality: u8,
    /// Progressive JPEG; default false.
    pub progressive: bool,
    /// 1..=10 (10 fastest); default 8. The effective speed is raised to
    /// [`avif_speed_min`] of the output size, so a request cannot take minutes.
    pub avif_speed: u8,
    /// Quality for one output format, over `quality` (`q_jpeg`, `q_webp`, `q_avif`), so one
    /// URL can serve `format=auto` at the quality each format needs.
    pub format_quality: FormatQuality,
    /// Largest encoded size wanted, bytes: a JPEG, WebP or AVIF still over it is encoded
    /// again at lower qualities (a bisection, at most [`MAX_BYTES_ENCODES`] encodes in all,
    /// down to [`MAX_BYTES_QUALITY_MIN`]); the best quality that fits is kept, else the
    /// smallest tried. PNG, GIF and animations are lossless or palette-bound here and are
    /// answered as encoded.
    pub max_bytes: Option<u32>,
    /// `strip=false`: keep the source's rights notice (EXIF `Artist`, `Copyright`) and its
    /// RGB ICC profile, leaving the pixels in that profile's colour space, in outputs that
    /// can carry them (the profile: JPEG, PNG, WebP; the notice: those and AVIF). Default
    /// false: bare sRGB pixels. Animations are written without metadata either way.
    pub keep_metadata: bool,
}

/// Per-format qualities; `None` falls back to `Options::quality`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct FormatQuality {
    pub jpeg: Option<u8>,
    pub webp: Option<u8>,
    pub avif: Option<u8>,
}

/// Most encodes one `max_bytes` request may run, the first included: enough for a
/// bisection of qualities 10..=99 to its last step (log2 of 90, rounded up, plus one).
pub const MAX_BYTES_ENCODES: u32 = 8;

/// The lowest quality the `max_bytes` search goes down to (below it JPEG blocks and WebP
/// smearing make a thumbnail useless; imgproxy stops at 10 too).
pub const MAX_BYTES_QUALITY_MIN: u8 = 10;

/// Slowest AVIF speed allowed for an output of `pixels` pixels (rav1e, single thread, no
/// asm). Measured on this machine (aitzgorri-1m.jpg): 400x266 at speed 1 took 11.5 s and
/// at speed 8 0.6 s; 1200x799 at speed 1 took 89 s, 1230x819 at speed 6 5.4 s; 3088x2056 at
/// speed 6 21.9 s and at speed 10 7.1 s (about 1.1 s per megapixel, so the largest output
/// allowed by default, 16.7 MP, stays under ~20 s).
pub fn avif_speed_min(pixels: u64) -> u8 {
    match pixels {
        0..=300_000 => 4,
        300_001..=1_000_000 => 6,
        _ => 10,
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            width: None,
            height: None,
            fit: Fit::Contain,
            gravity: Gravity::Center,
            format: FormatRequest::Fixed(OutputFormat::Jpeg),
            quality: 80,
            progressive: false,
            avif_speed: 8,
            format_quality: FormatQuality::default(),
            max_bytes: None,
            keep_metadata: false,
        }
    }
}

impl Options {
    /// The quality an output in `format` is encoded at.
    pub fn quality_for(&self, format: OutputFormat) -> u8 {
        let specific = match format {
            OutputFormat::Jpeg => self.format_quality.jpeg,
            OutputFormat::WebP => self.format_quality.webp,
            OutputFormat::Avif => self.format_quality.avif,
            OutputFormat::Png | OutputFormat::Gif => None,
        };
        specific.unwrap_or(self.quality)
    }

    /// Checks ranges: width/height 0 or over [`SIDE_MAX`], a requested box over
    /// `limits.output_pixels_max`, a quality (`quality`, `q_jpeg`, `q_webp`, `q_avif`) 0 or
    /// over 100, `max_bytes` 0, avif_speed outside 1..=10.
    pub fn validate(&self, limits: &Limits) -> Result<(), ResizeError> {
        for (name, value) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = value {
                if v == 0 || v > SIDE_MAX {
                    return Err(ResizeError::InvalidOption(format!(
                        "{name} {v} is out of range 1..={SIDE_MAX}"
                    )));
                }
            }
        }
        if let (Some(w), Some(h)) = (self.width, self.height) {
            let pixels = u64::from(w) * u64::from(h);
            if pixels > limits.output_pixels_max {
                return Err(ResizeError::InvalidOption(format!(
                    "{w}x{h} is {pixels} pixels, over the output limit of {}",
                    limits.output_pixels_max
                )));
            }
        }
        let qualities = [
            ("quality", Some(self.quality)),
            ("q_jpeg", self.format_quality.jpeg),
            ("q_webp", self.format_quality.webp),
            ("q_avif", self.format_quality.avif),
        ];
        for (name, quality) in qualities {
            if let Some(q) = quality.filter(|q| !(1..=100).contains(q)) {
                return Err(ResizeError::InvalidOption(format!(
                    "{name} {q} is out of range 1..=100"
                )));
            }
        }
        if self.max_bytes == Some(0) {
            return Err(ResizeError::InvalidOption(
                "max_bytes 0 is out of range: at least 1".to_owned(),
            ));
        }
        if !(1..=10).contains(&self.avif_speed) {
            return Err(ResizeError::InvalidOption(format!(
                "avif_speed {} is out of range 1..=10",
                self.avif_speed
            )));
        }
        Ok(())
    }
}

/// A value that does not parse; the message names it and the accepted spellings.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);
