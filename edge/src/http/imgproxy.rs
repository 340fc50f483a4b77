//! imgproxy-compatible URLs: `GET /ip/<tenant>/<signature>/<options>/<source>`, so a site
//! built on imgproxy moves by changing its base URL and its key/salt pair.
//!
//! - `<signature>`: imgproxy's scheme — URL-safe base64 (no padding) of HMAC-SHA256, keyed
//!   with the key's bytes, over the salt's bytes followed by everything after the signature
//!   segment (`/<options>/<source>`). The pair is the tenant's: the key is one of its active
//!   signing secrets (the bytes `tessera secret add` prints in hex), the salt derived from
//!   it ([`salt_of`], printed beside it), so adding, rotating and retiring secrets work as
//!   for Tessera's own signed URLs and the directory stores nothing new.
//! - `<options>`: imgproxy's processing options, `name:arg:arg` segments, translated into
//!   Tessera's own options ([`translate`]) and then parsed by the one parser every route
//!   uses. An option Tessera cannot honour exactly is a 400 naming it, never ignored.
//!   Geometry: `dpr`, `g:fp:x:y` (focus point), `rot`, `fl:h:v`, `t:<threshold>` (trim),
//!   `bg` (background), `ex:1` (pad a `fit` result to the box: `fit=pad`) and `el`
//!   (enlarge, false unless given, as in imgproxy, where Tessera's own default enlarges),
//!   `g:sm` (`gravity=smart`), `bl:<sigma>` (`blur`) and `sh:<sigma>` (`sharpen=1:<sigma>`:
//!   imgproxy's argument is the unsharp mask's sigma, at amount 1),
//!   `wm:<opacity>:<position>:<x>:<y>:<scale>` (`watermark`: the tenant's own mark, set by
//!   an operator; position `re` is `tile`), `c:w:h[:gravity]` (`crop=w,h`: a window placed
//!   by the gravity before resizing; pixels, or fractions below 1, not both in one crop;
//!   swapped to the source's frame under `rot:90`/`270`) and `pd:t[:r[:b[:l]]]`
//!   (`padding=t,r,b,l`) map onto the same options as Tessera's query. Tessera has one
//!   `gravity` for the crop window and the fill (or extend) that follows it: a `c` gravity
//!   is used when `g` is the same, or when no fill or extend needs `g`; otherwise the URL
//!   is refused, since one of the two would be wrong.
//! - `<source>`: URL-safe base64 of the URL (may be split by `/`), then `.<ext>`; or
//!   `plain/<percent-encoded URL>@<ext>`. `<ext>` picks the output format; without one
//!   the output keeps the source's family (imgproxy's default).
//!
//! After the signature and the options, a request is a Tessera signed URL in every way:
//! the tenant's standing, origins (SSRF rules), quota, metering and result cache
//! ([`crate::http::signed::serve`]).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tessera_crdt::TenantId;

use crate::http::error::ApiError;
use crate::http::routes::AppState;
use crate::http::signed::{self, invalid};

/// The route prefix.
pub const PREFIX: &str = "/ip/";

/// The internal key `extend` is gathered under until the resizing type is known.
const EXTEND: &str = "extend";

/// The internal key a crop's own gravity (`c:w:h:<gravity>`) is gathered under until the
/// request's `g` and resizing type are known ([`crop_gravity`]).
const CROP_GRAVITY: &str = "crop_gravity";

const BASE64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The imgproxy salt that goes with signing secret `secret` (its key): 16 bytes of
/// SHA-256 over a domain tag and the secret.
pub fn salt_of(secret: &[u8]) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(b"tessera imgproxy salt\0");
    hasher.update(secret);
    let digest = hasher.finalize();
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&digest[..16]);
    salt
}

/// imgproxy's signature of `path` (everything after the signature segment, with its
/// leading `/`) under `key` and `salt`.
pub fn sign(key: &[u8], salt: &[u8], path: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(salt);
    mac.update(path.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

/// An imgproxy URL taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct ImgproxyUrl {
    pub tenant: TenantId,
    pub signature: String,
    /// What was signed: `/<options>/<source>`.
    pub path: String,
    /// Tessera options as a query string.
    pub query: String,
    pub presets: Vec<String>,
    pub expires_s: Option<u64>,
    pub source: String,
}

/// Splits `path` (starting with [`PREFIX`]).
pub fn parse(path: &str) -> Result<ImgproxyUrl, ApiError> {
    let rest = path.strip_prefix(PREFIX).ok_or_else(ApiError::not_found)?;
    let (tenant, rest) = rest
        .split_once('/')
        .ok_or_else(|| invalid("expected /ip/<tenant>/<signature>/<options>/<source>"))?;
    let tenant = tenant
        .parse::<u64>()
        .map(TenantId)
        .map_err(|_| invalid("expected /ip/<tenant id>/<signature>/…"))?;
    let (signature, signed) = rest
        .split_once('/')
        .ok_or_else(|| invalid("the URL has no options and source after the signature"))?;
    if matches!(signature, "insecure" | "unsafe") {
        return Err(invalid(
            "unsigned imgproxy URLs are not served: sign them with the tenant's key and salt",
        ));
    }
    let mut segments = signed.split('/');
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut presets = Vec::new();
    let mut expires_s = None;
    let mut extension: Option<String> = None;
    let source = loop {
        let Some(segment) = segments.next() else {
            return Err(ApiError::bad_parameter("the imgproxy URL has no source"));
        };
        if segment == "plain" {
            let rest = segments.collect::<Vec<_>>().join("/");
            let (url, ext) = match rest.rsplit_once('@') {
                Some((url, ext)) if !ext.contains('/') => (url.to_owned(), Some(ext)),
                _ => (rest.clone(), None),
            };
            extension = ext.map(str::to_owned).or(extension);
            break percent_encoding::percent_decode_str(&url)
                .decode_utf8()
                .map_err(|_| ApiError::bad_parameter("the plain source URL is not UTF-8"))?
                .into_owned();
        }
        if segment == "enc" {
            return Err(ApiError::bad_parameter(
                "imgproxy's encrypted source URLs (enc/) are not supported: use base64 or plain/",
            ));
        }
        if !segment.contains(':') {
            // The base64 source, possibly split by `/`, then `.<ext>`.
            let mut encoded = segment.to_owned();
            for more in segments.by_ref() {
                encoded.push_str(more);
            }
            let (data, ext) = match encoded.split_once('.') {
                Some((data, ext)) => (data.to_owned(), Some(ext.to_owned())),
                None => (encoded, None),
            };
            extension = ext.or(extension);
            let bytes = BASE64
                .decode(data.trim_end_matches('='))
                .map_err(|_| ApiError::bad_parameter("the source is not URL-safe base64"))?;
            break String::from_utf8(bytes)
                .map_err(|_| ApiError::bad_parameter("the decoded source URL is not UTF-8"))?;
        }
        match translate(segment)? {
            Translated::Options(more) => pairs.extend(more),
            Translated::Presets(names) => presets.extend(names),
            Translated::Expires(at) => expires_s = Some(at),
            Translated::Format(ext) => extension = Some(ext),
            Translated::Nothing => {}
        }
    };
    // As in imgproxy, a later option overrides an earlier one (`rs:fit:100:100/w:200`
    // is 200 wide); Tessera's parser refuses repeats, so only the last of each is kept.
    let mut last: Vec<(String, String)> = Vec::new();
    for (key, value) in pairs {
        last.retain(|(k, _)| *k != key);
        last.push((key, value));
    }
    // `extend` pads a `fit` result to the box (Tessera's `fit=pad`); the other resizing
    // types fill the box already.
    if let Some(at) = last.iter().position(|(k, _)| k == EXTEND) {
        let (_, extend) = last.remove(at);
        let fit = last.iter_mut().find(|(k, _)| k == "fit");
        match fit {
            Some((_, fit)) if extend == "true" && fit == "contain" => *fit = "pad".into(),
            None if extend == "true" => last.push(("fit".into(), "pad".into())),
            _ => {}
        }
    }
    crop_gravity(&mut last)?;
    // imgproxy enlarges only when asked (`el:1`); Tessera's own default is to enlarge.
    if !last.iter().any(|(k, _)| k == "enlarge") {
        last.push(("enlarge".into(), "false".into()));
    }
    let format = match extension.as_deref().filter(|e| !e.is_empty()) {
        Some(ext) => format_of(ext)?,
        None => "original",
    };
    last.push(("format".into(), format.into()));
    let pairs = last;
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish();
    Ok(ImgproxyUrl {
        tenant,
        signature: signature.to_owned(),
        path: format!("/{signed}"),
        query,
        presets,
        expires_s,
        source,
    })
}

/// Settles the crop window's gravity and frame in the gathered `pairs`: Tessera's one
/// `gravity` places both the `crop=w,h` window and the cover window (or `fit=pad`'s image)
/// after it, so a crop gravity differing from `g` is taken only when nothing after the
/// crop uses `g`, and refused otherwise. The crop's size, given by imgproxy in the rotated
/// frame, is swapped into the source's under a quarter turn.
fn crop_gravity(pairs: &mut Vec<(String, String)>) -> Result<(), ApiError> {
    let value = |pairs: &[(String, String)], key: &str| {
        pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    if matches!(value(pairs, "rotate").as_deref(), Some("90" | "270")) {
        if let Some((_, crop)) = pairs.iter_mut().find(|(k, _)| k == "crop") {
            if let Some((w, h)) = crop.split_once(',') {
                *crop = format!("{h},{w}");
            }
        }
    }
    let Some(at) = pairs.iter().position(|(k, _)| k == CROP_GRAVITY) else {
        return Ok(());
    };
    let (_, crop) = pairs.remove(at);
    if value(pairs, "crop").is_none() {
        return Ok(());
    }
    let fill = value(pairs, "gravity").unwrap_or_else(|| "center".to_owned());
    let same = match (
        crop.parse::<tessera_resize::Gravity>(),
        fill.parse::<tessera_resize::Gravity>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => crop == fill,
    };
    if same {
        return Ok(());
    }
    // `g` places a cover window or a padded image only when both sides are given.
    let boxed = value(pairs, "w").is_some() && value(pairs, "h").is_some();
    let fit = value(pairs, "fit");
    if boxed && matches!(fit.as_deref(), Some("cover" | "pad")) {
        let after = if fit.as_deref() == Some("cover") {
            "the fill (rt:fill)"
        } else {
            "extend (ex:1)"
        };
        return Err(ApiError::bad_parameter(format!(
            "imgproxy option `c` has gravity {crop} and `g` is {fill}: Tessera places the crop \
             window and {after} with one gravity; give `c` no gravity, or the same as `g`"
        )));
    }
    pairs.retain(|(k, _)| k != "gravity");
    pairs.push(("gravity".to_owned(), crop));
    Ok(())
}

/// imgproxy's crop size `c:<w>:<h>` as `crop=w,h`: 0 is the whole side, a value of 1 or
/// more is pixels (a fraction part dropped, as imgproxy does), one below 1 with a point a
/// fraction of the side. Tessera's window is in pixels or in fractions, not a mix.
fn crop_of(option: &str, w: &str, h: &str) -> Result<String, ApiError> {
    enum Side<'a> {
        Pixels(&'a str),
        Fraction(&'a str),
    }
    fn side_of<'a>(option: &str, v: &'a str) -> Result<Side<'a>, ApiError> {
        let (whole, frac) = v.split_once('.').unwrap_or((v, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits(whole) || !digits(frac) || v.ends_with('.') {
            return Err(bad(
                option,
                "crop sizes are pixels, or fractions below 1 (0.5)",
            ));
        }
        Ok(
            match (whole.trim_start_matches('0'), frac.trim_end_matches('0')) {
                ("", "") => Side::Pixels("0"),
                ("", _) => Side::Fraction(v),
                (whole, _) => Side::Pixels(whole),
            },
        )
    }
    match (side_of(option, w)?, side_of(option, h)?) {
        (Side::Pixels(w), Side::Pixels(h)) => Ok(format!("{w},{h}")),
        (Side::Fraction(w), Side::Fraction(h)) => Ok(format!("{w},{h}")),
        (Side::Fraction(f), Side::Pixels("0")) => Ok(format!("{f},0")),
        (Side::Pixels("0"), Side::Fraction(f)) => Ok(format!("0,{f}")),
        _ => Err(unsupported(
            option,
            "a crop of a fraction by pixels has no Tessera counterpart (its window is in \
             pixels or in fractions)",
        )),
    }
}

/// imgproxy's `pd:<top>[:<right>[:<bottom>[:<left>]]]` as `padding=t,r,b,l`: as in CSS a
/// missing right is the top, a missing bottom the top, a missing left the right; an empty
/// argument keeps what the ones before it gave.
fn padding_of(option: &str, args: &[&str]) -> Result<String, ApiError> {
    let px = |v: &str| {
        v.parse::<u32>()
            .map_err(|_| bad(option, "padding is whole numbers of pixels"))
    };
    let mut sides = [0u32; 4];
    for (i, arg) in args.iter().enumerate().filter(|(_, a)| !a.is_empty()) {
        let v = px(arg)?;
        match i {
            0 => sides = [v; 4],
            1 => (sides[1], sides[3]) = (v, v),
            2 => sides[2] = v,
            _ => sides[3] = v,
        }
    }
    let [t, r, b, l] = sides;
    Ok(format!("{t},{r},{b},{l}"))
}

/// What one processing option becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum Translated {
    /// Tessera options, `(name, value)`.
    Options(Vec<(String, String)>),
    Presets(Vec<String>),
    Expires(u64),
    Format(String),
    /// An option that changes nothing Tessera does (`cb`, `ar:1`, `sm:1`).
    Nothing,
}

fn unsupported(option: &str, why: &str) -> ApiError {
    ApiError::bad_parameter(format!(
        "imgproxy option `{}` is not supported: {why}",
        option.chars().take(80).collect::<String>()
    ))
}

fn bad(option: &str, why: &str) -> ApiError {
    ApiError::bad_parameter(format!(
        "imgproxy option `{}`: {why}",
        option.chars().take(80).collect::<String>()
    ))
}

/// imgproxy's booleans: `1`, `t`, `true` and `0`, `f`, `false`.
fn boolean(option: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        _ => Err(bad(option, "expected 1/t/true or 0/f/false")),
    }
}

/// A size argument: `0` (or empty) means "not given".
fn size(option: &str, value: &str) -> Result<Option<String>, ApiError> {
    match value {
        "" | "0" => Ok(None),
        v if v.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(v.to_owned())),
        _ => Err(bad(option, "sizes are whole numbers of pixels")),
    }
}

/// imgproxy's resizing type as Tessera's fit (`fill-down` and `auto` have no exact
/// counterpart).
fn fit_of(option: &str, kind: &str) -> Result<&'static str, ApiError> {
    match kind {
        "fit" => Ok("contain"),
        "fill" => Ok("cover"),
        "force" => Ok("fill"),
        "fill-down" | "auto" => Err(unsupported(
            option,
            "resizing types fill-down and auto have no exact Tessera counterpart (fit, fill, force do)",
        )),
        _ => Err(bad(option, "resizing type must be fit, fill, fill-down, force or auto")),
    }
}

/// imgproxy's gravity as Tessera's (`gravity=`): compass points, `sm`, `fp:x:y`.
fn gravity_of(option: &str, args: &[&str]) -> Result<String, ApiError> {
    let compass = |g: &str| -> Option<&'static str> {
        Some(match g {
            "ce" => "center",
            "no" => "north",
            "so" => "south",
            "ea" => "east",
            "we" => "west",
            "noea" => "northeast",
            "nowe" => "northwest",
            "soea" => "southeast",
            "sowe" => "southwest",
            _ => return None,
        })
    };
    match args {
        ["sm"] => Ok("smart".into()),
        ["fp", x, y] => Ok(format!("fp:{x}:{y}")),
        [g] | [g, "0", "0"] => compass(g).map(str::to_owned).ok_or_else(|| {
            bad(
                option,
                "gravity must be ce, no, so, ea, we, noea, nowe, soea, sowe, sm or fp:x:y",
            )
        }),
        [_, _, _] => Err(unsupported(option, "gravity offsets are not supported")),
        _ => Err(bad(
            option,
            "gravity takes a type and, for fp, two coordinates",
        )),
    }
}

/// A colour as `RRGGBB`: imgproxy gives `R:G:B` (decimal) or a hex colour.
fn colour_of(option: &str, args: &[&str]) -> Result<String, ApiError> {
    match args {
        [r, g, b] => {
            let c = |v: &str| {
                v.parse::<u8>()
                    .map_err(|_| bad(option, "channels are 0..255"))
            };
            Ok(format!("{:02x}{:02x}{:02x}", c(r)?, c(g)?, c(b)?))
        }
        [hex] if hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_ascii_lowercase())
        }
        [hex] if hex.len() == 3 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(hex
            .chars()
            .flat_map(|c| [c, c])
            .collect::<String>()
            .to_ascii_lowercase()),
        _ => Err(bad(option, "a colour is R:G:B or a hex colour")),
    }
}

/// The output format of an imgproxy extension.
fn format_of(ext: &str) -> Result<&'static str, ApiError> {
    match ext {
        "jpg" | "jpeg" => Ok("jpeg"),
        "png" => Ok("png"),
        "webp" => Ok("webp"),
        "avif" => Ok("avif"),
        "gif" => Ok("gif"),
        other => Err(ApiError::bad_parameter(format!(
            "imgproxy format `{}` is not supported: jpg, png, webp, avif, gif are",
            other.chars().take(20).collect::<String>()
        ))),
    }
}

/// One processing option (`name:arg:…`) in Tessera's terms.
pub fn translate(option: &str) -> Result<Translated, ApiError> {
    let mut parts = option.split(':');
    let name = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    let pair = |k: &str, v: String| (k.to_owned(), v);
    let one = |k: &str, v: &str| Ok(Translated::Options(vec![pair(k, v.to_owned())]));
    match (name, args.as_slice()) {
        ("rs" | "resize", [kind, rest @ ..]) if rest.len() <= 4 => {
            let mut out = Vec::new();
            if !kind.is_empty() {
                out.push(pair("fit", fit_of(option, kind)?.into()));
            }
            out.extend(size_args(option, rest)?);
            Ok(Translated::Options(out))
        }
        ("s" | "size", rest) if !rest.is_empty() && rest.len() <= 4 => {
            Ok(Translated::Options(size_args(option, rest)?))
        }
        ("rt" | "resizing_type", [kind]) => one("fit", fit_of(option, kind)?),
        ("w" | "width", [w]) => Ok(Translated::Options(
            size(option, w)?.map(|w| pair("w", w)).into_iter().collect(),
        )),
        ("h" | "height", [h]) => Ok(Translated::Options(
            size(option, h)?.map(|h| pair("h", h)).into_iter().collect(),
        )),
        ("el" | "enlarge", [e]) => one(
            "enlarge",
            if boolean(option, e)? { "true" } else { "false" },
        ),
        ("ex" | "extend", [e]) => one(EXTEND, &boolean(option, e)?.to_string()),
        ("ex" | "extend", [_, ..]) => Err(unsupported(
            option,
            "extend's gravity and offsets are not supported",
        )),
        ("g" | "gravity", args) if !args.is_empty() => one("gravity", &gravity_of(option, args)?),
        ("c" | "crop", [w, h, gravity @ ..]) => {
            let crop = crop_of(option, w, h)?;
            let mut out = vec![pair("crop", crop.clone())];
            if !gravity.is_empty() && crop != "0,0" {
                out.push(pair(CROP_GRAVITY, gravity_of(option, gravity)?));
            }
            Ok(Translated::Options(out))
        }
        ("pd" | "padding", args) if !args.is_empty() && args.len() <= 4 => {
            one("padding", &padding_of(option, args)?)
        }
        ("dpr", [d]) => one("dpr", d),
        ("q" | "quality", [q]) => match *q {
            "0" => Ok(Translated::Nothing),
            q => one("q", q),
        },
        ("fq" | "format_quality", args) if !args.is_empty() && args.len() % 2 == 0 => {
            let mut out = Vec::new();
            for kv in args.chunks(2) {
                let key = match kv[0] {
                    "jpg" | "jpeg" => "q_jpeg",
                    "webp" => "q_webp",
                    "avif" => "q_avif",
                    _ => {
                        return Err(unsupported(
                            option,
                            "format quality is for jpg, webp and avif",
                        ))
                    }
                };
                // 0 means "the default quality" in imgproxy.
                if kv[1] != "0" {
                    out.push(pair(key, kv[1].to_owned()));
                }
            }
            Ok(Translated::Options(out))
        }
        ("mb" | "max_bytes", [bytes]) => match *bytes {
            "0" => Ok(Translated::Nothing),
            bytes => one("max_bytes", bytes),
        },
        ("bg" | "background", args) if !args.is_empty() => {
            one("background", &colour_of(option, args)?)
        }
        ("bl" | "blur", [sigma]) => match *sigma {
            "0" => Ok(Translated::Nothing),
            sigma => one("blur", sigma),
        },
        // imgproxy's `sh` gives the unsharp mask's sigma; its amount is 1.
        ("sh" | "sharpen", [sigma]) => match *sigma {
            "0" => Ok(Translated::Nothing),
            sigma => one("sharpen", &format!("1:{sigma}")),
        },
        ("rot" | "rotate", [angle]) => match *angle {
            "0" => Ok(Translated::Nothing),
            "90" | "180" | "270" => one("rotate", angle),
            _ => Err(bad(option, "rotation is 0, 90, 180 or 270")),
        },
        ("fl" | "flip", [h, v]) => {
            let flip = match (boolean(option, h)?, boolean(option, v)?) {
                (false, false) => return Ok(Translated::Nothing),
                (true, false) => "h",
                (false, true) => "v",
                (true, true) => "hv",
            };
            one("flip", flip)
        }
        // `wm:%opacity:%position:%x:%y:%scale`: the tenant's watermark (imgproxy's default
        // position is the centre; 0 opacity draws nothing, 0 scale keeps the mark's size).
        ("wm" | "watermark", args) if !args.is_empty() && args.len() <= 5 => {
            if args[0] == "0" {
                return Ok(Translated::Nothing);
            }
            let position = match args.get(1).copied().unwrap_or("ce") {
                "re" => "tile".to_owned(),
                g => gravity_of(option, &[g]).and_then(|g| match g.as_str() {
                    "smart" => Err(bad(
                        option,
                        "a watermark's position is a compass point or re",
                    )),
                    _ => Ok(g),
                })?,
            };
            let offset = |i: usize| match args.get(i).copied() {
                None | Some("") => Ok("0"),
                Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(v),
                Some(_) => Err(bad(
                    option,
                    "offsets are whole numbers of pixels, not negative",
                )),
            };
            let mut value = format!("{}:{position}:{}:{}", args[0], offset(2)?, offset(3)?);
            if let Some(scale) = args.get(4).filter(|s| !s.is_empty() && **s != "0") {
                value.push(':');
                value.push_str(scale);
            }
            one("watermark", &value)
        }
        ("t" | "trim", [threshold]) => one("trim", threshold),
        ("t" | "trim", [_, ..]) => Err(unsupported(
            option,
            "trim's colour and equal-sides arguments are not supported",
        )),
        ("f" | "format" | "ext", [ext]) => Ok(Translated::Format((*ext).to_owned())),
        ("pr" | "preset", names) if !names.is_empty() => Ok(Translated::Presets(
            names.iter().map(|n| (*n).to_owned()).collect(),
        )),
        ("exp" | "expires", [at]) => at
            .parse::<u64>()
            .map(Translated::Expires)
            .map_err(|_| bad(option, "expires is a time in Unix seconds")),
        ("cb" | "cachebuster", [_]) => Ok(Translated::Nothing),
        ("ar" | "auto_rotate", [a]) => match boolean(option, a)? {
            true => Ok(Translated::Nothing),
            false => Err(unsupported(
                option,
                "Tessera always applies the EXIF orientation",
            )),
        },
        ("sm" | "strip_metadata", [s]) => match boolean(option, s)? {
            true => Ok(Translated::Nothing),
            false => Err(unsupported(
                option,
                "imgproxy keeps every tag with sm:0; Tessera keeps only the rights notice and \
                 the ICC profile, with `strip=false` on /v1/resize and /v1/img",
            )),
        },
        (
            "rs" | "resize" | "s" | "size" | "rt" | "resizing_type" | "w" | "width" | "h"
            | "height" | "el" | "enlarge" | "ex" | "extend" | "g" | "gravity" | "dpr" | "q"
            | "quality" | "bg" | "background" | "bl" | "blur" | "sh" | "sharpen" | "rot" | "rotate"
            | "fl" | "flip" | "t" | "trim" | "f" | "format" | "ext" | "pr" | "preset" | "exp"
            | "expires" | "cb" | "cachebuster" | "ar" | "auto_rotate" | "sm" | "strip_metadata"
            | "fq" | "format_quality" | "mb" | "max_bytes" | "wm" | "watermark" | "c" | "crop"
            | "pd" | "padding",
            _,
        ) => Err(bad(option, "wrong number of arguments")),
        _ => Err(unsupported(
            option,
            "supported: rs, s, rt, w, h, el, ex, g, c, dpr, q, fq, mb, bg, bl, sh, wm, rot, fl, \
             t, pd, f, pr, exp, cb, ar, sm",
        )),
    }
}

/// `width:height:enlarge:extend` as in `rs` and `s`.
fn size_args(option: &str, args: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    if let Some(w) = args.first() {
        if let Some(w) = size(option, w)? {
            out.push(("w".to_owned(), w));
        }
    }
    if let Some(h) = args.get(1) {
        if let Some(h) = size(option, h)? {
            out.push(("h".to_owned(), h));
        }
    }
    if let Some(e) = args.get(2).filter(|e| !e.is_empty()) {
        out.push(("enlarge".to_owned(), boolean(option, e)?.to_string()));
    }
    if let Some(x) = args.get(3).filter(|x| !x.is_empty()) {
        out.push((EXTEND.to_owned(), boolean(option, x)?.to_string()));
    }
    Ok(out)
}

/// `GET /ip/...`
pub async fn handler(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let (parts, _) = request.into_parts();
    if parts.uri.query().is_some() {
        return Err(ApiError::bad_parameter(
            "an imgproxy URL has no query string (percent-encode a plain source's `?`)",
        ));
    }
    let url = parse(parts.uri.path())?;
    // Verify first: nothing about the tenant is revealed to an unsigned request.
    let tenant = signed::verified_tenant(
        &state,
        url.tenant,
        |secret| {
            bool::from(
                sign(secret, &salt_of(secret), &url.path)
                    .as_bytes()
                    .ct_eq(url.signature.as_bytes()),
            )
        },
        "imgproxy's scheme: URL-safe base64 of HMAC-SHA256 over the salt and the path after \
         the signature, with one of the tenant's signing secrets as the key and the salt \
         `tessera secret add` printed beside it",
    )?;
    let query = signed::with_presets(&tenant.presets, &url.presets, &url.query)?;
    signed::not_expired(url.expires_s)?;
    let verified = signed::Verified {
        tenant: url.tenant,
        message: url.path,
        query,
        source: url.source,
        origins: tenant.origins,
        watermark: tenant.watermark,
        route: "/ip",
    };
    signed::serve(&state, &parts.headers, verified, started).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// imgproxy's documentation's own example ("Signing a URL"): key `secret`, salt
    /// `hello`, and the signature it publishes.
    #[test]
    fn signs_as_imgproxy_documents() {
        let path =
            "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
        assert_eq!(
            sign(b"secret", b"hello", path),
            "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8"
        );
        let url = parse(&format!(
            "/ip/7/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8{path}"
        ))
        .unwrap();
        assert_eq!(url.tenant, TenantId(7));
        assert_eq!(url.path, path);
        assert_eq!(url.source, "http://example.com/images/curiosity.jpg");
        assert_eq!(
            url.query,
            "fit=cover&w=300&h=400&enlarge=false&gravity=smart&format=png"
        );
    }

    /// What the translation writes is a query the route's parser takes, and it reads back
    /// through `params::to_query` unchanged (the fuzz target's property; its first crash
    /// was `enlarge=false`, which every imgproxy URL carries, missing from the round trip).
    #[test]
    fn translated_options_parse_and_round_trip() {
        use crate::http::params;
        use tessera_resize::Limits;
        let defaults = params::Defaults {
            quality: 80,
            avif_speed: 8,
        };
        for options in [
            "rs:fill:300:400:0/g:sm",
            "w:300/h:200/q:70/fq:jpg:60:webp:50/mb:9000",
            "s:100:50:1:1/g:fp:0.3:0.7/bl:2/sh:0.5/rot:90/fl:1:0/t:10/bg:ff0000/dpr:2",
            "rs:fit:100:100:0:1/bg:10:20:30/el:0/fl:1:1/rot:270/f:webp",
            "wm:0.5:soea:10:5:0.2",
            "wm:1:re",
            "wm:0.7",
            "c:300:200:no/rs:fit:100:100/pd:10:20",
            "c:0.5:0:fp:0.2:0.7/w:50/pd:1:2:3/dpr:2/bg:ff0000",
            "c:300:200/g:sm/rs:fill:100:100/rot:90/pd:0",
            "c:0:0/pd:5::7:1/ex:1/rs:fit:100:100",
        ] {
            let url = parse(&format!("/ip/1/sig/{options}/aHR0cDovL2EvYi5qcGc")).unwrap();
            let first = params::parse(&url.query, None, defaults, &Limits::default())
                .unwrap_or_else(|e| panic!("{options}: {}: {}", url.query, e.message));
            let canonical = params::to_query(&first.options);
            let again = params::parse(&canonical, None, defaults, &Limits::default())
                .unwrap_or_else(|e| panic!("{canonical}: {}", e.message));
            assert_eq!(again, first, "{options} -> {} -> {canonical}", url.query);
        }
    }

    #[test]
    fn sources_base64_split_padded_or_plain() {
        let q = |p: &str| parse(&format!("/ip/1/sig/{p}")).unwrap();
        assert_eq!(q("w:100/aHR0cDovL2EvYi5qcGc").source, "http://a/b.jpg");
        assert_eq!(
            q("w:100/aHR0cDovL2EvYi5qcGc").query,
            "w=100&enlarge=false&format=original"
        );
        assert_eq!(
            q("aHR0cDov/L2EvYi5qcGc.webp").query,
            "enlarge=false&format=webp"
        );
        assert_eq!(q("plain/http://a/b+c.jpg@avif").source, "http://a/b+c.jpg");
        assert_eq!(
            q("plain/http://a/b+c.jpg@avif").query,
            "enlarge=false&format=avif"
        );
        assert_eq!(
            q("plain/http%3A%2F%2Fu%40a%2Fb%20c.jpg").source,
            "http://u@a/b c.jpg"
        );
        assert_eq!(
            q("f:jpg/plain/http://a/b.png").query,
            "enlarge=false&format=jpeg"
        );
        assert_eq!(
            q("el:1/plain/http://a/b.png").query,
            "enlarge=true&format=original"
        );
        // Later options override earlier ones; extend pads only a `fit`.
        assert_eq!(
            q("rs:fit:100:100/w:200/plain/http://a/b").query,
            "fit=contain&h=100&w=200&enlarge=false&format=original"
        );
        assert_eq!(
            q("rs:fit:100:100:0:1/plain/http://a/b").query,
            "fit=pad&w=100&h=100&enlarge=false&format=original"
        );
        assert_eq!(
            q("ex:1/rs:fill:100:100/plain/http://a/b").query,
            "fit=cover&w=100&h=100&enlarge=false&format=original"
        );
        assert_eq!(
            q("ex:1/w:10/plain/http://a/b").query,
            "w=10&fit=pad&enlarge=false&format=original"
        );
        for bad in [
            "/ip/1/insecure/w:1/plain/http://a/b",
            "/ip/x/s/w:1/plain/http://a",
            "/ip/1/s/w:1",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("/ip/1/s/enc/abc").is_err());
        assert!(parse("/ip/1/s/plain/http://a/b@gif").is_ok());
        assert!(parse("/ip/1/s/plain/http://a/b@bmp").is_err());
    }

    /// A table of option strings and what each becomes, or that it is refused by name.
    #[test]
    fn options_translate_or_are_refused_by_name() {
        let ok = |o: &str| match translate(o).unwrap() {
            Translated::Options(pairs) => pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&"),
            other => format!("{other:?}"),
        };
        for (option, tessera) in [
            ("rs:fit:300:200", "fit=contain&w=300&h=200"),
            ("resize:fill:300:0:1", "fit=cover&w=300&enlarge=true"),
            (
                "rs:force:10:20:0:1",
                "fit=fill&w=10&h=20&enlarge=false&extend=true",
            ),
            ("s:100:50", "w=100&h=50"),
            ("rt:fill", "fit=cover"),
            ("w:120", "w=120"),
            ("h:0", ""),
            ("el:1", "enlarge=true"),
            ("ex:1", "extend=true"),
            ("g:sm", "gravity=smart"),
            ("g:noea", "gravity=northeast"),
            ("g:fp:0.25:0.75", "gravity=fp:0.25:0.75"),
            ("gravity:ce:0:0", "gravity=center"),
            ("dpr:2", "dpr=2"),
            ("q:70", "q=70"),
            ("bg:255:0:10", "background=ff000a"),
            ("bg:FFF", "background=ffffff"),
            ("bl:2.5", "blur=2.5"),
            ("sh:0.7", "sharpen=1:0.7"),
            ("rot:90", "rotate=90"),
            ("fl:1:1", "flip=hv"),
            ("t:10", "trim=10"),
            ("fq:jpg:70:webp:60:avif:50", "q_jpeg=70&q_webp=60&q_avif=50"),
            ("format_quality:webp:0:jpeg:85", "q_jpeg=85"),
            ("mb:20000", "max_bytes=20000"),
            ("mb:0", "Nothing"),
            ("wm:0.5:soea:10:5:0.2", "watermark=0.5:southeast:10:5:0.2"),
            ("wm:1:re:4", "watermark=1:tile:4:0"),
            ("watermark:0.3", "watermark=0.3:center:0:0"),
            ("wm:1:nowe:0:0:0", "watermark=1:northwest:0:0"),
            ("wm:0", "Nothing"),
            ("c:300:200", "crop=300,200"),
            ("crop:0.5:0", "crop=0.5,0"),
            ("c:0:0.25", "crop=0,0.25"),
            ("c:0.5:0.25", "crop=0.5,0.25"),
            ("c:300.7:0200", "crop=300,200"),
            ("c:1.0:1", "crop=1,1"),
            ("c:0.0:0", "crop=0,0"),
            ("c:0:0:no", "crop=0,0"),
            ("c:300:200:no", "crop=300,200&crop_gravity=north"),
            ("c:300:200:sm", "crop=300,200&crop_gravity=smart"),
            (
                "c:300:200:fp:0.2:0.3",
                "crop=300,200&crop_gravity=fp:0.2:0.3",
            ),
            ("pd:10", "padding=10,10,10,10"),
            ("pd:10:20", "padding=10,20,10,20"),
            ("pd:1:2:3", "padding=1,2,3,2"),
            ("padding:1:2:3:4", "padding=1,2,3,4"),
            ("pd:5::7", "padding=5,5,7,5"),
            ("pd:0", "padding=0,0,0,0"),
        ] {
            assert_eq!(ok(option), tessera, "{option}");
        }
        assert_eq!(
            translate("pr:a:b").unwrap(),
            Translated::Presets(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            translate("exp:1700000000").unwrap(),
            Translated::Expires(1_700_000_000)
        );
        assert_eq!(translate("cb:xyz").unwrap(), Translated::Nothing);
        assert_eq!(translate("rot:0").unwrap(), Translated::Nothing);
        for (option, named) in [
            ("rs:auto:100:100", "rs:auto:100:100"),
            ("c:0.5:300", "c:0.5:300"),
            ("c:100", "c:100"),
            ("c", "c"),
            ("c:-5:10", "c:-5:10"),
            ("c:.5:10", "c:.5:10"),
            ("c:5.:10", "c:5.:10"),
            ("c:100:100:no:10:5", "c:100:100:no:10:5"),
            ("c:100:100:up", "c:100:100:up"),
            ("pd", "pd"),
            ("pd:1:2:3:4:5", "pd:1:2:3:4:5"),
            ("pd:x", "pd:x"),
            ("pd:-1", "pd:-1"),
            ("g:no:10:5", "g:no:10:5"),
            ("wm:0.5:sm", "wm:0.5:sm"),
            ("wm:0.5:soea:-5", "wm:0.5:soea:-5"),
            ("ar:0", "ar:0"),
            ("rot:45", "rot:45"),
            ("w:abc", "w:abc"),
            ("bg:zz", "bg:zz"),
            ("q", "q"),
            ("fq:png:50", "fq:png:50"),
            ("fq:jpg", "fq:jpg"),
        ] {
            let error = translate(option).unwrap_err();
            assert_eq!(error.status, axum::http::StatusCode::BAD_REQUEST);
            assert!(
                error.message.contains(&format!("`{named}`")),
                "{option}: {}",
                error.message
            );
        }
    }

    /// The crop's own gravity becomes the one `gravity` when nothing after the crop needs
    /// `g`, or when it is `g`; a crop gravity that differs from a `g` a fill or extend
    /// uses is refused, naming `c`. imgproxy sizes the crop in the rotated frame, Tessera
    /// in the source's: a quarter turn swaps it.
    #[test]
    fn a_crop_gravity_shares_the_one_gravity_or_is_refused() {
        // The query, decoded (its commas and colons are percent-encoded).
        let q = |p: &str| {
            parse(&format!("/ip/1/sig/{p}/plain/http://a/b@png")).map(|u| {
                form_urlencoded::parse(u.query.as_bytes())
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join("&")
            })
        };
        for (options, query) in [
            (
                "c:300:200:no/w:100",
                "crop=300,200&w=100&gravity=north&enlarge=false&format=png",
            ),
            (
                "c:300:200:sm/rs:fit:100:100",
                "crop=300,200&fit=contain&w=100&h=100&gravity=smart&enlarge=false&format=png",
            ),
            (
                "g:no/c:300:200:no/rs:fill:100:100",
                "gravity=north&crop=300,200&fit=cover&w=100&h=100&enlarge=false&format=png",
            ),
            (
                "c:300:200:ce/rs:fill:100:100",
                "crop=300,200&fit=cover&w=100&h=100&enlarge=false&format=png",
            ),
            (
                "g:fp:0.5:0.25/c:300:200:fp:0.50:0.250/rs:fill:10:10",
                "gravity=fp:0.5:0.25&crop=300,200&fit=cover&w=10&h=10&enlarge=false&format=png",
            ),
            // A fill with one side given places nothing by `g`.
            (
                "g:so/c:300:200:no/rs:fill:100",
                "crop=300,200&fit=cover&w=100&gravity=north&enlarge=false&format=png",
            ),
            // Without a crop gravity the one `g` places both.
            (
                "c:300:200/g:sm/rs:fill:100:100",
                "crop=300,200&gravity=smart&fit=cover&w=100&h=100&enlarge=false&format=png",
            ),
            (
                "c:300:200/rot:90",
                "crop=200,300&rotate=90&enlarge=false&format=png",
            ),
            (
                "rot:270/c:0.5:0",
                "rotate=270&crop=0,0.5&enlarge=false&format=png",
            ),
        ] {
            assert_eq!(
                q(options).unwrap_or_else(|e| panic!("{options}: {}", e.message)),
                query,
                "{options}"
            );
        }
        for options in [
            "c:300:200:no/rs:fill:100:100",
            "g:so/c:300:200:no/rs:fill:100:100",
            "c:300:200:sm/rs:fill:100:100",
            "c:300:200:ea/rs:fit:100:100:0:1",
            "c:300:200:ea/ex:1/s:100:100",
        ] {
            let error = q(options).unwrap_err();
            assert_eq!(
                error.status,
                axum::http::StatusCode::BAD_REQUEST,
                "{options}"
            );
            assert!(
                error.message.contains("`c`") && error.message.contains("one gravity"),
                "{options}: {}",
                error.message
            );
        }
    }

    /// What the geometry options translate to is Tessera's own query: it parses into the
    /// options each names, with imgproxy's default of not enlarging.
    #[test]
    fn translated_geometry_parses_into_the_options() {
        use tessera_resize::{Crop, Fit, Flip, Gravity, Limits, Padding, Rgba, Rotation};
        let options = |p: &str| {
            let url = parse(&format!("/ip/1/sig/{p}/plain/http://a/b@png")).unwrap();
            let defaults = crate::http::params::Defaults {
                quality: 80,
                avif_speed: 8,
            };
            crate::http::params::parse(&url.query, None, defaults, &Limits::default())
                .unwrap_or_else(|e| panic!("{p}: {}", e.message))
                .options
        };
        let o = options("rs:fit:100:80:1:1/dpr:2/g:fp:0.3:0.6/rot:90/fl:1:0/t:8/bg:10:20:30");
        assert_eq!((o.width, o.height, o.fit), (Some(100), Some(80), Fit::Pad));
        assert_eq!(o.enlarge, Some(true));
        assert_eq!(o.dpr, "2".parse().unwrap());
        assert_eq!(o.gravity, "fp:0.3:0.6".parse::<Gravity>().unwrap());
        assert_eq!((o.rotate, o.flip), (Rotation::Deg90, Flip::Horizontal));
        assert_eq!(o.trim, Some(8));
        assert_eq!(o.background, Some(Rgba([10, 20, 30, 255])));
        assert_eq!(options("w:50").enlarge, Some(false));
        assert_eq!(options("ex:1/s:10:10").fit, Fit::Pad);
        let o = options("rs:fill:10:10/g:sm/bl:2/sh:0.5");
        assert_eq!(o.gravity, Gravity::Smart);
        assert_eq!(o.blur, Some("2".parse().unwrap()));
        assert_eq!(o.sharpen, Some("1:0.5".parse().unwrap()));
        // A crop window with its gravity, and padding.
        let o = options("c:300:200:no/rs:fit:100:100/pd:10:20");
        assert_eq!(o.crop, Some(Crop::WindowPixels { w: 300, h: 200 }));
        assert_eq!(o.gravity, Gravity::North);
        let p = o.padding;
        assert_eq!(
            [p.top_px, p.right_px, p.bottom_px, p.left_px],
            [10, 20, 10, 20]
        );
        let o = options("c:0.5:0:fp:0.2:0.7/w:50/pd:1:2:3");
        let half = Crop::WindowFractions {
            w: "0.5".parse().unwrap(),
            h: "0".parse().unwrap(),
        };
        assert_eq!((o.crop, o.padding), (Some(half), "1,2,3".parse().unwrap()));
        assert_eq!(o.gravity, "fp:0.2:0.7".parse::<Gravity>().unwrap());
        let o = options("c:300:200/g:sm/rs:fill:100:100/rot:90/pd:0");
        assert_eq!(o.crop, Some(Crop::WindowPixels { w: 200, h: 300 }));
        assert_eq!((o.gravity, o.padding), (Gravity::Smart, Padding::NONE));
    }
}
