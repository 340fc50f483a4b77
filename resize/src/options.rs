//! What a caller may ask of one resize: target size (and device pixel ratio), fit mode,
//! gravity (compass, focus point), manual crop (a rectangle, or a window placed by the
//! gravity), trim, rotation and flip, padding and background, enlargement, output format
//! and encoder settings, with parsing from the query-string spellings and range
//! validation.
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
    /// Like `Contain`, then placed (at the gravity) on a canvas of exactly the requested box,
    /// filled with `Options::background` (transparent when none is given; white in a JPEG).
    /// With only one side given there is no box to fill and it is `Contain`.
    Pad,
}

impl Fit {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Contain => "contain",
            Fit::Cover => "cover",
            Fit::Fill => "fill",
            Fit::ScaleDown => "scale-down",
            Fit::Pad => "pad",
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
            "pad" => Ok(Fit::Pad),
            _ => Err(ParseError(format!(
                "unknown fit {s:?}; accepted: contain, cover, fill, scale-down, pad"
            ))),
        }
    }
}

/// Which part of the image `Fit::Cover` keeps when it crops, where a `crop=w,h` window is
/// taken before that (the same gravity places both), and where `Fit::Pad` places the image
/// on its canvas. Compass points are read in the final frame (after `rotate`/`flip`).
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
    /// Content-aware (`smart`): the cover window is placed where the image holds the most
    /// edges, colour and skin tones (`crate::smart`), found on the decoded pixels.
    Smart,
    /// A focus point (`fp:x:y`), as fractions 0..=1 of the displayed source (after EXIF
    /// orientation, before `rotate`/`flip`): the cover window is centred on it, moved only
    /// as far as needed to stay inside the image.
    FocusPoint {
        x: Decimal,
        y: Decimal,
    },
}

impl std::fmt::Display for Gravity {
    /// The canonical spelling (what `FromStr` reads back).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Gravity::Center => "center",
            Gravity::North => "north",
            Gravity::NorthEast => "northeast",
            Gravity::East => "east",
            Gravity::SouthEast => "southeast",
            Gravity::South => "south",
            Gravity::SouthWest => "southwest",
            Gravity::West => "west",
            Gravity::NorthWest => "northwest",
            Gravity::Smart => "smart",
            Gravity::FocusPoint { x, y } => return write!(f, "fp:{x}:{y}"),
        };
        f.write_str(name)
    }
}

impl Gravity {
    /// Where the crop window (or the padded image) sits along each axis: 0 = left/top,
    /// 0.5 = centre, 1 = right/bottom. A focus point places a padded image like its own
    /// fractions; for a cover window `crate::geometry` centres the window on it instead.
    pub(crate) fn anchor(self) -> (f64, f64) {
        match self {
            Gravity::FocusPoint { x, y } => (x.as_f64(), y.as_f64()),
            Gravity::Center | Gravity::Smart => (0.5, 0.5),
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
            "smart" => Ok(Gravity::Smart),
            _ if s.starts_with("fp:") => {
                let bad = || {
                    ParseError(format!(
                        "focus point {s:?} must be fp:x:y with x and y fractions from 0 to 1"
                    ))
                };
                let (x, y) = s[3..].split_once(':').ok_or_else(bad)?;
                let (x, y) = (x.parse::<Decimal>(), y.parse::<Decimal>());
                match (x, y) {
                    (Ok(x), Ok(y)) if x <= Decimal::ONE && y <= Decimal::ONE => {
                        Ok(Gravity::FocusPoint { x, y })
                    }
                    _ => Err(bad()),
                }
            }
            _ => Err(ParseError(format!(
                "unknown gravity {s:?}; accepted: center (centre, c), n (north), ne (northeast), \
                 e (east), se (southeast), s (south), sw (southwest), w (west), nw (northwest), \
                 smart (content-aware), fp:x:y (a focus point, fractions 0..1)"
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
    /// Used by `Fit::Cover`, a window `crop` and `Fit::Pad`.
    pub gravity: Gravity,
    pub format: FormatRequest,
    /// 1..=100 (JPEG, WebP, AVIF); default 80.
    pub quality: u8,
    /// Progressive JPEG; default false.
    pub progressive: bool,
    /// 1..=10 (10 fastest); default 9 (see `crate::encode`). The effective speed is raised to
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
    /// Device pixel ratio, 1..=4 (default 1): multiplies `width` and `height`, so one
    /// layout size serves every screen density. The multiplied box is what the output limits
    /// are checked against. Without `width` and `height` it changes nothing.
    pub dpr: Decimal,
    /// A manual crop of the displayed source (after EXIF orientation, before `rotate` and
    /// `flip`), applied before fitting: a rectangle intersected with the image (and with
    /// `trim`), or a window (`crop=w,h`) of what `trim` left, placed by `gravity`. The one
    /// `gravity` places both the window and a later `Fit::Cover` window inside it.
    pub crop: Option<Crop>,
    /// `RRGGBB[AA]`: the colour of `Fit::Pad`'s and `padding`'s bars, and what transparent pixels are
    /// composited over (for any fit) when given. Without it transparency is kept where the
    /// output format has alpha and composited over white where it has not.
    pub background: Option<Rgba>,
    /// Clockwise rotation after the EXIF orientation; `width`/`height` are the final
    /// (rotated) output's.
    pub rotate: Rotation,
    /// Mirroring after `rotate`.
    pub flip: Flip,
    /// Bars of `background` around the result (after `fit=pad`'s canvas), output pixels
    /// times `dpr`; the padded output is what the output limits are checked against.
    pub padding: Padding,
    /// Removes a uniform border whose colour is within this distance (the largest
    /// per-channel difference, alpha included, 0..=255) of the top-left pixel's, found on
    /// the decoded pixels before fitting. A border taking the whole image is left alone.
    pub trim: Option<u8>,
    /// Whether the image may be scaled up. `None` (default): `Fit::ScaleDown` never
    /// enlarges, every other fit does. `Some(false)`: no fit enlarges (a cover crop of a
    /// small image comes out smaller than the box; a pad keeps the image at its size on the
    /// full canvas). `Some(true)` with `Fit::ScaleDown` is a contradiction, refused.
    pub enlarge: Option<bool>,
    /// Gaussian blur of the resized image, sigma in output pixels
    /// ([`crate::filter::BLUR_SIGMA_MIN`]..=[`crate::filter::BLUR_SIGMA_MAX`]).
    pub blur: Option<Decimal>,
    /// Unsharp mask of the resized image (after `blur` when both are given).
    pub sharpen: Option<Sharpen>,
    /// `strip=false`: keep the source's rights notice (EXIF `Artist`, `Copyright`) and its
    /// RGB ICC profile, leaving the pixels in that profile's colour space, in outputs that
    /// can carry them (the profile: JPEG, PNG, WebP; the notice: those and AVIF). Default
    /// false: bare sRGB pixels. Animations are written without metadata either way.
    pub keep_metadata: bool,
    /// The tenant's watermark blended over the result (`crate::watermark`); the image
    /// itself is the caller's to give ([`crate::Pipeline::process_marked`]).
    pub watermark: Option<WatermarkOptions>,
}

/// `sharpen=<amount>[:<sigma>]`: `out = in + amount·(in − blur_sigma(in))`. The sigma
/// defaults to [`Sharpen::SIGMA_DEFAULT`] (the usual thumbnail sharpening after a
/// downscale); imgproxy's `sh:<sigma>` is amount 1 at that sigma.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sharpen {
    pub amount: Decimal,
    pub sigma: Decimal,
}

impl Sharpen {
    pub const SIGMA_DEFAULT: Decimal = Decimal::ONE;
}

impl FromStr for Sharpen {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let (amount, sigma) = match s.split_once(':') {
            Some((amount, sigma)) => (amount, Some(sigma)),
            None => (s, None),
        };
        let amount = amount.parse::<Decimal>()?;
        let sigma = match sigma {
            Some(sigma) => sigma.parse::<Decimal>()?,
            None => Sharpen::SIGMA_DEFAULT,
        };
        Ok(Sharpen { amount, sigma })
    }
}

impl std::fmt::Display for Sharpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.sigma == Sharpen::SIGMA_DEFAULT {
            write!(f, "{}", self.amount)
        } else {
            write!(f, "{}:{}", self.amount, self.sigma)
        }
    }
}

/// A non-negative decimal number with at most six fractional digits, kept exactly as
/// millionths so that options stay `Eq + Hash` (ETags, cache keys) and print back as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Decimal(u64);

impl Decimal {
    pub const ZERO: Decimal = Decimal(0);
    pub const ONE: Decimal = Decimal(1_000_000);

    /// `whole` units.
    pub const fn whole(whole: u32) -> Decimal {
        Decimal(whole as u64 * 1_000_000)
    }

    /// The value in millionths.
    pub const fn from_millionths(millionths: u64) -> Decimal {
        Decimal(millionths)
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl FromStr for Decimal {
    type Err = ParseError;
    /// Digits, optionally a `.` and 1 to 6 more digits; at most 1 000 000 in all.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || {
            ParseError(format!(
                "{s:?} is not a decimal number (digits, optionally a point and up to 6 digits)"
            ))
        };
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || whole.len() > 7 || !digits(whole) || frac.len() > 6 || !digits(frac)
        {
            return Err(bad());
        }
        if s.contains('.') && frac.is_empty() {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let frac_millionths: u64 = format!("{frac:0<6}").parse().map_err(|_| bad())?;
        Ok(Decimal(whole * 1_000_000 + frac_millionths))
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (whole, frac) = (self.0 / 1_000_000, self.0 % 1_000_000);
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// `crop=x,y,w,h`: in pixels of the displayed source, or (when a value has a `.` and all
/// four are at most 1) in fractions of its width and height. `crop=w,h`: a window of that
/// size (same rules for pixels and fractions; 0 is the whole side) placed by the request's
/// `gravity` (imgproxy's `c:w:h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Crop {
    Pixels {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
    },
    Fractions {
        x: Decimal,
        y: Decimal,
        w: Decimal,
        h: Decimal,
    },
    /// A `w` x `h` pixel window (0: the whole side), placed by the gravity.
    WindowPixels {
        w: u32,
        h: u32,
    },
    /// A window of fractions of the image's width and height (0: the whole side), placed
    /// by the gravity.
    WindowFractions {
        w: Decimal,
        h: Decimal,
    },
}

impl Crop {
    /// The rectangle in pixels of a displayed source `src_w` x `src_h` (not yet clipped);
    /// `None` for a window, which has no place until the gravity gives it one.
    pub(crate) fn to_pixels(self, src_w: f64, src_h: f64) -> Option<(f64, f64, f64, f64)> {
        match self {
            Crop::Pixels { x, y, w, h } => {
                Some((f64::from(x), f64::from(y), f64::from(w), f64::from(h)))
            }
            Crop::Fractions { x, y, w, h } => Some((
                x.as_f64() * src_w,
                y.as_f64() * src_h,
                w.as_f64() * src_w,
                h.as_f64() * src_h,
            )),
            Crop::WindowPixels { .. } | Crop::WindowFractions { .. } => None,
        }
    }

    /// The size of a window crop within an image (or what is left of it) `avail_w` x
    /// `avail_h`, in its pixels: 0 is the whole side, and a window larger than the image
    /// is the image's side. `None` for a rectangle.
    pub(crate) fn window_size(self, avail_w: f64, avail_h: f64) -> Option<(f64, f64)> {
        let side = |v: f64, avail: f64| if v == 0.0 { avail } else { v.min(avail) };
        let (w, h) = match self {
            Crop::WindowPixels { w, h } => (f64::from(w), f64::from(h)),
            Crop::WindowFractions { w, h } => (w.as_f64() * avail_w, h.as_f64() * avail_h),
            Crop::Pixels { .. } | Crop::Fractions { .. } => return None,
        };
        Some((side(w, avail_w), side(h, avail_h)))
    }
}

impl FromStr for Crop {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = |why: &str| {
            ParseError(format!(
                "crop {s:?}: {why}; use x,y,w,h in whole pixels, or four fractions 0..1 \
                 written with a point (0.1,0.1,0.5,0.5); or w,h (a window placed by the \
                 gravity, 0 for a whole side) in pixels or fractions (0.5,0.0)"
            ))
        };
        let values: Vec<&str> = s.split(',').collect();
        if !matches!(values.len(), 2 | 4) {
            return Err(bad("expected four values (x,y,w,h) or two (w,h)"));
        }
        let decimals = values
            .iter()
            .map(|v| v.parse::<Decimal>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e.to_string()))?;
        if values.iter().any(|v| v.contains('.')) {
            if decimals.iter().any(|d| *d > Decimal::ONE) {
                return Err(bad("values with a point are fractions, at most 1"));
            }
            return Ok(match decimals[..] {
                [w, h] => Crop::WindowFractions { w, h },
                [x, y, w, h] => Crop::Fractions { x, y, w, h },
                _ => return Err(bad("expected four values (x,y,w,h) or two (w,h)")),
            });
        }
        let pixels = values
            .iter()
            .map(|v| v.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("pixel values are whole numbers"))?;
        match pixels[..] {
            [w, h] => Ok(Crop::WindowPixels { w, h }),
            [x, y, w, h] => Ok(Crop::Pixels { x, y, w, h }),
            _ => Err(bad("expected four values (x,y,w,h) or two (w,h)")),
        }
    }
}

impl std::fmt::Display for Crop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Fractions always print a point, so they read back as fractions.
        let p = |d: &Decimal| {
            let s = d.to_string();
            if s.contains('.') {
                s
            } else {
                format!("{s}.0")
            }
        };
        match self {
            Crop::Pixels { x, y, w, h } => write!(f, "{x},{y},{w},{h}"),
            Crop::Fractions { x, y, w, h } => {
                write!(f, "{},{},{},{}", p(x), p(y), p(w), p(h))
            }
            Crop::WindowPixels { w, h } => write!(f, "{w},{h}"),
            Crop::WindowFractions { w, h } => write!(f, "{},{}", p(w), p(h)),
        }
    }
}

/// `padding=top,right,bottom,left`: bars of `Options::background` added around the
/// result (after resizing, filters, `rotate`/`flip` and `fit=pad`), in output pixels
/// before `dpr` multiplies them (imgproxy's `pd`). Read as in CSS: one value is every
/// side, two are vertical and horizontal, three top, horizontal and bottom; written back
/// as four.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Padding {
    pub top_px: u32,
    pub right_px: u32,
    pub bottom_px: u32,
    pub left_px: u32,
}

impl Padding {
    /// No padding (the default).
    pub const NONE: Padding = Padding {
        top_px: 0,
        right_px: 0,
        bottom_px: 0,
        left_px: 0,
    };

    /// Each side multiplied by `dpr` and rounded: the bars actually added.
    pub fn scaled(self, dpr: Decimal) -> Padding {
        let scale = |v: u32| {
            let scaled = (f64::from(v) * dpr.as_f64()).round();
            scaled.min(f64::from(u32::MAX)) as u32
        };
        Padding {
            top_px: scale(self.top_px),
            right_px: scale(self.right_px),
            bottom_px: scale(self.bottom_px),
            left_px: scale(self.left_px),
        }
    }

    /// Left plus right, and top plus bottom: what the padding adds to each dimension.
    pub fn added_px(self) -> (u64, u64) {
        (
            u64::from(self.left_px) + u64::from(self.right_px),
            u64::from(self.top_px) + u64::from(self.bottom_px),
        )
    }
}

impl FromStr for Padding {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || {
            ParseError(format!(
                "padding {s:?} must be 1 to 4 whole numbers of pixels separated by commas \
                 (top,right,bottom,left, read as in CSS)"
            ))
        };
        let sides = s
            .split(',')
            .map(|v| v.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        let [top_px, right_px, bottom_px, left_px] = match sides[..] {
            [all] => [all; 4],
            [vertical, horizontal] => [vertical, horizontal, vertical, horizontal],
            [top, horizontal, bottom] => [top, horizontal, bottom, horizontal],
            [top, right, bottom, left] => [top, right, bottom, left],
            _ => return Err(bad()),
        };
        Ok(Padding {
            top_px,
            right_px,
            bottom_px,
            left_px,
        })
    }
}

impl std::fmt::Display for Padding {
    /// Always the four sides, top, right, bottom, left.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Padding {
            top_px,
            right_px,
            bottom_px,
            left_px,
        } = self;
        write!(f, "{top_px},{right_px},{bottom_px},{left_px}")
    }
}

/// A colour with alpha, from `RRGGBB` (opaque) or `RRGGBBAA` in hex.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Rgba(pub [u8; 4]);

impl FromStr for Rgba {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let hex = s.strip_prefix('#').unwrap_or(s);
        if !matches!(hex.len(), 6 | 8) || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseError(format!(
                "colour {s:?} must be RRGGBB or RRGGBBAA in hex"
            )));
        }
        let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).unwrap_or(0);
        let alpha = if hex.len() == 8 { byte(6) } else { 255 };
        Ok(Rgba([byte(0), byte(2), byte(4), alpha]))
    }
}

impl std::fmt::Display for Rgba {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [r, g, b, a] = self.0;
        write!(f, "{r:02x}{g:02x}{b:02x}")?;
        if a != 255 {
            write!(f, "{a:02x}")?;
        }
        Ok(())
    }
}

/// A clockwise rotation by a multiple of 90 degrees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Rotation {
    #[default]
    None,
    Deg90,
    Deg180,
    Deg270,
}

impl Rotation {
    pub fn degrees(self) -> u16 {
        match self {
            Rotation::None => 0,
            Rotation::Deg90 => 90,
            Rotation::Deg180 => 180,
            Rotation::Deg270 => 270,
        }
    }
}

impl FromStr for Rotation {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "0" => Ok(Rotation::None),
            "90" => Ok(Rotation::Deg90),
            "180" => Ok(Rotation::Deg180),
            "270" => Ok(Rotation::Deg270),
            _ => Err(ParseError(format!(
                "rotation {s:?} must be 0, 90, 180 or 270 (degrees clockwise)"
            ))),
        }
    }
}

/// Mirroring: `h` swaps left and right, `v` top and bottom.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Flip {
    #[default]
    None,
    Horizontal,
    Vertical,
    Both,
}

impl Flip {
    /// The canonical spelling (`none` is the default and is never written in a query).
    pub fn as_str(self) -> &'static str {
        match self {
            Flip::None => "none",
            Flip::Horizontal => "h",
            Flip::Vertical => "v",
            Flip::Both => "hv",
        }
    }
}

impl FromStr for Flip {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "h" => Ok(Flip::Horizontal),
            "v" => Ok(Flip::Vertical),
            "hv" | "vh" => Ok(Flip::Both),
            _ => Err(ParseError(format!("flip {s:?} must be h, v or hv"))),
        }
    }
}

/// `watermark=<opacity>[:<position>[:<x>[:<y>[:<scale>]]]]`: how the tenant's watermark is
/// drawn (imgproxy's `wm` has the same arguments). `opacity` 0..=1 (above 0) multiplies the
/// mark's alpha; `position` is a compass point (default `southeast`) or `tile`; `x`/`y`
/// are the inset from the edges the mark is anchored to (the gaps between tiles), pixels,
/// at most [`WATERMARK_INSET_MAX_PX`]; `scale` (0..=1, above 0) draws the mark at that
/// fraction of the output's width, else it is drawn at its own size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WatermarkOptions {
    pub opacity: Decimal,
    pub position: WatermarkPosition,
    pub x_px: u32,
    pub y_px: u32,
    pub scale: Option<Decimal>,
}

/// The largest watermark inset or tile gap, pixels.
pub const WATERMARK_INSET_MAX_PX: u32 = 4096;

/// Where a watermark goes: anchored at a compass point, or repeated over the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WatermarkPosition {
    /// One of the nine compass gravities (never `smart` or a focus point).
    At(Gravity),
    Tile,
}

impl FromStr for WatermarkOptions {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = |why: String| {
            ParseError(format!(
                "watermark {s:?}: {why}; use <opacity>[:<position>[:<x>[:<y>[:<scale>]]]], \
                 e.g. 0.5:southeast:10:10:0.2"
            ))
        };
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() > 5 {
            return Err(bad("at most five values".into()));
        }
        let opacity: Decimal = parts[0].parse().map_err(|e: ParseError| bad(e.0))?;
        let position = match parts.get(1) {
            None => WatermarkPosition::At(Gravity::SouthEast),
            Some(&"tile") => WatermarkPosition::Tile,
            Some(g) => match g.parse::<Gravity>().map_err(|e| bad(e.0))? {
                Gravity::Smart | Gravity::FocusPoint { .. } => {
                    return Err(bad("the position is a compass point or tile".into()))
                }
                g => WatermarkPosition::At(g),
            },
        };
        let px = |i: usize| -> Result<u32, ParseError> {
            parts.get(i).map_or(Ok(0), |v| {
                v.parse::<u32>()
                    .map_err(|_| bad(format!("{v:?} is not a whole number of pixels")))
            })
        };
        let scale = match parts.get(4) {
            None => None,
            Some(v) => Some(v.parse::<Decimal>().map_err(|e| bad(e.0))?),
        };
        Ok(WatermarkOptions {
            opacity,
            position,
            x_px: px(2)?,
            y_px: px(3)?,
            scale,
        })
    }
}

impl std::fmt::Display for WatermarkOptions {
    /// Every value spelled out (what `FromStr` reads back).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            WatermarkPosition::Tile => write!(f, "{}:tile", self.opacity)?,
            WatermarkPosition::At(g) => write!(f, "{}:{g}", self.opacity)?,
        }
        write!(f, ":{}:{}", self.x_px, self.y_px)?;
        if let Some(scale) = self.scale {
            write!(f, ":{scale}")?;
        }
        Ok(())
    }
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

/// Slowest AVIF speed allowed for an output of `pixels` pixels (rav1e, single thread).
/// Measured before rav1e's assembly was enabled (which about halves these times, so the
/// floors are now conservative), on the machine of the time (aitzgorri-1m.jpg): 400x266 at speed 1 took 11.5 s and
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
            avif_speed: 9,
            format_quality: FormatQuality::default(),
            max_bytes: None,
            dpr: Decimal::ONE,
            crop: None,
            background: None,
            rotate: Rotation::None,
            flip: Flip::None,
            padding: Padding::NONE,
            trim: None,
            enlarge: None,
            blur: None,
            sharpen: None,
            keep_metadata: false,
            watermark: None,
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

    /// `width` and `height` multiplied by `dpr` (rounded): the box actually produced.
    pub fn box_size(&self) -> (Option<u32>, Option<u32>) {
        let scale = |v: Option<u32>| {
            v.map(|v| {
                let scaled = (f64::from(v) * self.dpr.as_f64()).round();
                scaled.min(f64::from(u32::MAX)).max(1.0) as u32
            })
        };
        (scale(self.width), scale(self.height))
    }

    /// Checks ranges: width/height 0 or over [`SIDE_MAX`] (also once multiplied by `dpr`),
    /// a requested box over `limits.output_pixels_max`, `dpr` outside 1..=4, a quality
    /// (`quality`, `q_jpeg`, `q_webp`, `q_avif`) 0 or over 100, `max_bytes` 0, avif_speed
    /// outside 1..=10, a crop of zero width or height or starting outside the image, a
    /// window crop's fractions over 1, a padding side over [`SIDE_MAX`] (or a box plus its
    /// padding over the output limits), a focus point outside 0..=1, `enlarge=true` with
    /// `fit=scale-down`.
    pub fn validate(&self, limits: &Limits) -> Result<(), ResizeError> {
        let invalid = |msg: String| Err(ResizeError::InvalidOption(msg));
        if self.dpr < Decimal::ONE || self.dpr > Decimal::whole(4) {
            return invalid(format!("dpr {} is out of range 1..=4", self.dpr));
        }
        match self.crop {
            Some(c @ Crop::Pixels { w, h, .. }) if w == 0 || h == 0 => {
                return invalid(format!(
                    "crop {c}: width and height must be at least 1 pixel"
                ));
            }
            Some(c @ Crop::Fractions { x, y, w, h })
                if w == Decimal::ZERO
                    || h == Decimal::ZERO
                    || x >= Decimal::ONE
                    || y >= Decimal::ONE =>
            {
                return invalid(format!(
                    "crop {c}: fractions x and y must be below 1, w and h above 0 (all 0..=1)"
                ));
            }
            Some(c @ Crop::WindowFractions { w, h }) if w > Decimal::ONE || h > Decimal::ONE => {
                return invalid(format!(
                    "crop {c}: a window's fractions are 0..=1 (0 is the whole side)"
                ));
            }
            _ => {}
        }
        let p = self.padding;
        if [p.top_px, p.right_px, p.bottom_px, p.left_px]
            .iter()
            .any(|&side| side > SIDE_MAX)
        {
            return invalid(format!(
                "padding {p}: each side is out of range 0..={SIDE_MAX} pixels"
            ));
        }
        if let Gravity::FocusPoint { x, y } = self.gravity {
            if x > Decimal::ONE || y > Decimal::ONE {
                return invalid(format!(
                    "gravity fp:{x}:{y}: the focus point's fractions are out of range 0..=1"
                ));
            }
        }
        if let Some(sigma) = self.blur {
            let (min, max) = (
                f64::from(crate::filter::BLUR_SIGMA_MIN),
                f64::from(crate::filter::BLUR_SIGMA_MAX),
            );
            if !(min..=max).contains(&sigma.as_f64()) {
                return invalid(format!(
                    "blur {sigma} is out of range {min}..={max} (sigma, pixels)"
                ));
            }
        }
        if let Some(Sharpen { amount, sigma }) = self.sharpen {
            let amount_max = f64::from(crate::filter::SHARPEN_AMOUNT_MAX);
            if amount == Decimal::ZERO || amount.as_f64() > amount_max {
                return invalid(format!(
                    "sharpen amount {amount} is out of range: above 0, at most {amount_max}"
                ));
            }
            let (min, max) = (
                f64::from(crate::filter::SHARPEN_SIGMA_MIN),
                f64::from(crate::filter::SHARPEN_SIGMA_MAX),
            );
            if !(min..=max).contains(&sigma.as_f64()) {
                return invalid(format!(
                    "sharpen sigma {sigma} is out of range {min}..={max}"
                ));
            }
        }
        if let Some(w) = self.watermark {
            if w.opacity == Decimal::ZERO || w.opacity > Decimal::ONE {
                return invalid(format!(
                    "watermark opacity {} is out of range: above 0, at most 1",
                    w.opacity
                ));
            }
            if w.scale
                .is_some_and(|s| s == Decimal::ZERO || s > Decimal::ONE)
            {
                return invalid(format!(
                    "watermark {w}: the scale is a fraction of the output's width, above 0, at most 1"
                ));
            }
            if w.x_px.max(w.y_px) > WATERMARK_INSET_MAX_PX {
                return invalid(format!(
                    "watermark {w}: insets are at most {WATERMARK_INSET_MAX_PX} pixels"
                ));
            }
        }
        if self.enlarge == Some(true) && self.fit == Fit::ScaleDown {
            return invalid(
                "enlarge=true contradicts fit=scale-down (which never enlarges); use fit=contain"
                    .to_owned(),
            );
        }
        for (name, value) in [("width", self.width), ("height", self.height)] {
            if let Some(v) = value {
                if v == 0 || v > SIDE_MAX {
                    return Err(ResizeError::InvalidOption(format!(
                        "{name} {v} is out of range 1..={SIDE_MAX}"
                    )));
                }
            }
        }
        let (box_w, box_h) = self.box_size();
        for (name, value) in [("width", box_w), ("height", box_h)] {
            match value {
                Some(v) if v > SIDE_MAX => {
                    return invalid(format!(
                        "{name} {v} (times dpr {}) is out of range 1..={SIDE_MAX}",
                        self.dpr
                    ))
                }
                _ => {}
            }
        }
        if let (Some(w), Some(h)) = (box_w, box_h) {
            let pixels = u64::from(w) * u64::from(h);
            if pixels > limits.output_pixels_max {
                return Err(ResizeError::InvalidOption(format!(
                    "{w}x{h} is {pixels} pixels, over the output limit of {}",
                    limits.output_pixels_max
                )));
            }
        }
        // The box is the most a fit answers along a side it gives; the padding is added
        // around it (`geometry::plan` checks the padded output itself once the image's size
        // is known).
        let (add_w, add_h) = self.padding.scaled(self.dpr).added_px();
        let padded_w = box_w.map(|w| u64::from(w) + add_w);
        let padded_h = box_h.map(|h| u64::from(h) + add_h);
        let over_side = |side: Option<u64>| side.is_some_and(|v| v > u64::from(SIDE_MAX));
        let over_pixels = match (padded_w, padded_h) {
            (Some(w), Some(h)) => w * h > limits.output_pixels_max,
            _ => false,
        };
        if self.padding != Padding::NONE
            && (over_side(padded_w) || over_side(padded_h) || over_pixels)
        {
            let side = |v: Option<u64>| v.map_or("?".to_owned(), |v| v.to_string());
            return invalid(format!(
                "the box with padding {} (times dpr {}) is {}x{}, over the output limits \
                 ({SIDE_MAX} per side, {} pixels)",
                self.padding,
                self.dpr,
                side(padded_w),
                side(padded_h),
                limits.output_pixels_max
            ));
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
