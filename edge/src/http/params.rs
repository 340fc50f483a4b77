//! Parsing the resize query string (`w`, `h`, `dpr`, `fit`, `gravity`, `crop`, `trim`,
//! `rotate`, `flip`, `padding`, `background`, `enlarge`, `blur`, `sharpen`, `watermark`,
//! `format`, `q`, `q_jpeg`, `q_webp`, `q_avif`, `max_bytes`, `progressive`, `strip`) and the
//! `Accept` header into
//! [`tessera_resize::Options`]. The spellings of the values are `tessera_resize`'s
//! (`FromStr` on each option type), so every front end reads them alike.
//!
//! Strict on purpose: an unknown or repeated parameter is an error that names it, not a
//! silently ignored typo (`?widht=300` returning the full-size image would be billed and
//! wrong). Range checks on the values themselves belong to the pipeline
//! (`Options::validate`), so the node and the library cannot disagree on them.

use tessera_resize::{Flip, FormatRequest, Limits, Options, OutputFormat, Padding};

use crate::http::error::ApiError;

/// The parameters `POST /v1/resize` accepts, listed in error messages.
pub const ACCEPTED: &str = "w, h, dpr, fit, gravity, crop, trim, rotate, flip, padding, \
     background, enlarge, blur, sharpen, watermark, format, q, q_jpeg, q_webp, q_avif, \
     max_bytes, progressive, strip";

/// Defaults for what a request leaves out.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub quality: u8,
    pub avif_speed: u8,
}

/// The parsed request: options for the pipeline, and whether the answer depends on
/// `Accept` (so the response must say `Vary: Accept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub options: Options,
    pub vary_accept: bool,
}

pub fn parse(
    query: &str,
    accept: Option<&str>,
    defaults: Defaults,
    limits: &Limits,
) -> Result<Parsed, ApiError> {
    let mut options = Options {
        quality: defaults.quality,
        avif_speed: defaults.avif_speed,
        ..Options::default()
    };
    let mut vary_accept = false;
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if seen.iter().any(|k| *k == key) {
            return Err(ApiError::bad_parameter(format!(
                "parameter `{key}` is given more than once"
            )));
        }
        seen.push(key.clone().into_owned());
        if value.is_empty() {
            return Err(ApiError::bad_parameter(format!(
                "parameter `{key}` has an empty value"
            )));
        }
        match key.as_ref() {
            "w" => options.width = Some(dimension("w", &value)?),
            "h" => options.height = Some(dimension("h", &value)?),
            "q" => options.quality = quality("q", &value)?,
            "q_jpeg" => options.format_quality.jpeg = Some(quality("q_jpeg", &value)?),
            "q_webp" => options.format_quality.webp = Some(quality("q_webp", &value)?),
            "q_avif" => options.format_quality.avif = Some(quality("q_avif", &value)?),
            "max_bytes" => {
                options.max_bytes = Some(value.parse().map_err(|_| {
                    ApiError::bad_parameter(format!(
                        "parameter `max_bytes` is {value:?}; use a byte count from 1 to {}",
                        u32::MAX
                    ))
                })?)
            }
            "fit" => options.fit = value.parse().map_err(invalid("fit"))?,
            "gravity" => options.gravity = value.parse().map_err(invalid("gravity"))?,
            "dpr" => options.dpr = value.parse().map_err(invalid("dpr"))?,
            "crop" => options.crop = Some(value.parse().map_err(invalid("crop"))?),
            "background" => {
                options.background = Some(value.parse().map_err(invalid("background"))?)
            }
            "rotate" => options.rotate = value.parse().map_err(invalid("rotate"))?,
            "flip" => options.flip = value.parse().map_err(invalid("flip"))?,
            "padding" => options.padding = value.parse().map_err(invalid("padding"))?,
            "trim" => {
                options.trim = Some(value.parse().map_err(|_| {
                    ApiError::bad_parameter(format!(
                        "parameter `trim` is {value:?}; it must be a colour distance from 0 to 255"
                    ))
                })?)
            }
            "enlarge" => options.enlarge = Some(boolean("enlarge", &value)?),
            "blur" => options.blur = Some(value.parse().map_err(invalid("blur"))?),
            "sharpen" => options.sharpen = Some(value.parse().map_err(invalid("sharpen"))?),
            "progressive" => options.progressive = boolean("progressive", &value)?,
            "strip" => options.keep_metadata = !boolean("strip", &value)?,
            "watermark" => options.watermark = Some(value.parse().map_err(invalid("watermark"))?),
            "format" => {
                options.format = match value.as_ref() {
                    "auto" => {
                        vary_accept = true;
                        auto_from_accept(accept)
                    }
                    "original" => FormatRequest::Original,
                    other => FormatRequest::Fixed(
                        other.parse::<OutputFormat>().map_err(invalid("format"))?,
                    ),
                }
            }
            other => {
                return Err(ApiError::bad_parameter(format!(
                    "unknown parameter `{other}`; accepted: {ACCEPTED}"
                )))
            }
        }
    }
    options.format = canonical_format(options.format, limits);
    options.validate(limits).map_err(ApiError::from)?;
    Ok(Parsed {
        options,
        vary_accept,
    })
}

/// The query string that [`parse`] reads back as `options` (given the same `Accept` and
/// `defaults.avif_speed`, which no parameter sets): every option spelled out, so a
/// canonical request can be written from parsed options — the fuzz targets check that
/// parsing is stable this way. The destructuring names every field of [`Options`], so an
/// option added to the pipeline without a spelling here does not compile.
pub fn to_query(options: &Options) -> String {
    let Options {
        width,
        height,
        fit,
        gravity,
        format,
        quality,
        progressive,
        avif_speed: _,
        format_quality,
        max_bytes,
        dpr,
        crop,
        background,
        rotate,
        flip,
        padding,
        trim,
        enlarge,
        blur,
        sharpen,
        keep_metadata,
        watermark,
    } = *options;
    let format = match format {
        FormatRequest::Fixed(format) => format.as_str(),
        FormatRequest::Auto { .. } => "auto",
        FormatRequest::Original => "original",
    };
    let pairs: [(&str, Option<String>); 23] = [
        ("w", width.map(|w| w.to_string())),
        ("h", height.map(|h| h.to_string())),
        ("dpr", Some(dpr.to_string())),
        ("fit", Some(fit.as_str().to_owned())),
        ("gravity", Some(gravity.to_string())),
        ("crop", crop.map(|c| c.to_string())),
        ("trim", trim.map(|t| t.to_string())),
        ("rotate", Some(rotate.degrees().to_string())),
        (
            "flip",
            (flip != Flip::None).then(|| flip.as_str().to_owned()),
        ),
        (
            "padding",
            (padding != Padding::NONE).then(|| padding.to_string()),
        ),
        ("background", background.map(|b| b.to_string())),
        ("enlarge", enlarge.map(|e| e.to_string())),
        ("blur", blur.map(|b| b.to_string())),
        ("sharpen", sharpen.map(|s| s.to_string())),
        ("watermark", watermark.map(|w| w.to_string())),
        ("format", Some(format.to_owned())),
        ("q", Some(quality.to_string())),
        ("q_jpeg", format_quality.jpeg.map(|q| q.to_string())),
        ("q_webp", format_quality.webp.map(|q| q.to_string())),
        ("q_avif", format_quality.avif.map(|q| q.to_string())),
        ("max_bytes", max_bytes.map(|b| b.to_string())),
        ("progressive", Some(progressive.to_string())),
        ("strip", Some((!keep_metadata).to_string())),
    ];
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            pairs
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v.as_str()))),
        )
        .finish()
}

/// A boolean parameter: `true`/`1` or `false`/`0`.
fn boolean(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ApiError::bad_parameter(format!(
            "parameter `{name}` is {other:?}; use true or false"
        ))),
    }
}

/// `format` with what cannot change the output dropped, so that two `Accept` headers
/// leading to the same output make the same request — the same ETag, the same cache key.
/// `format=auto` picks AVIF only when WebP is not accepted or the output is too large for
/// WebP; with AVIF's pixel limit at most WebP's (the default), an output too large for WebP
/// is too large for AVIF as well, so once WebP is accepted, whether AVIF is does not matter.
fn canonical_format(format: FormatRequest, limits: &Limits) -> FormatRequest {
    match format {
        FormatRequest::Auto {
            webp: true,
            avif: true,
        } if limits.avif_output_pixels_max <= limits.webp_output_pixels_max => {
            FormatRequest::Auto {
                webp: true,
                avif: false,
            }
        }
        other => other,
    }
}

fn invalid<E: std::fmt::Display>(name: &'static str) -> impl Fn(E) -> ApiError {
    move |err| ApiError::bad_parameter(format!("parameter `{name}`: {err}"))
}

fn dimension(name: &str, value: &str) -> Result<u32, ApiError> {
    match value.parse::<u64>() {
        Ok(0) => Err(ApiError::bad_parameter(format!(
            "parameter `{name}` must be at least 1"
        ))),
        Ok(n) => u32::try_from(n).map_err(|_| {
            ApiError::bad_parameter(format!("parameter `{name}` is {n}, far too large"))
        }),
        Err(_) => Err(ApiError::bad_parameter(format!(
            "parameter `{name}` is {value:?}; it must be a positive whole number of pixels"
        ))),
    }
}

fn quality(name: &str, value: &str) -> Result<u8, ApiError> {
    match value.parse::<u32>() {
        Ok(q @ 1..=100) => Ok(q as u8),
        _ => Err(ApiError::bad_parameter(format!(
            "parameter `{name}` is {value:?}; it must be a whole number from 1 to 100"
        ))),
    }
}

/// `format=auto`: which modern formats the client says it accepts. Only an explicit
/// `image/webp` or `image/avif` with a non-zero q counts; `*/*` and `image/*` do not,
/// because browsers send them for every image whatever they can decode.
pub fn auto_from_accept(accept: Option<&str>) -> FormatRequest {
    let mut webp = false;
    let mut avif = false;
    for item in accept.unwrap_or("").split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim();
            p.strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        if refused {
            continue;
        }
        match media.as_str() {
            "image/webp" => webp = true,
            "image/avif" => avif = true,
            _ => {}
        }
    }
    FormatRequest::Auto { webp, avif }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: Defaults = Defaults {
        quality: 80,
        avif_speed: 8,
    };

    fn parse_ok(query: &str) -> Options {
        parse(query, None, DEFAULTS, &Limits::default())
            .unwrap_or_else(|e| panic!("{query}: {e:?}"))
            .options
    }

    fn parse_err(query: &str) -> ApiError {
        parse(query, None, DEFAULTS, &Limits::default()).expect_err(query)
    }

    /// `to_query` is `parse`'s inverse: the defaults, every parameter at once, and each
    /// spelling a value can take read back as the same options.
    #[test]
    fn to_query_reads_back_as_the_same_options() {
        for query in [
            "",
            "w=300&h=200&dpr=2.5&fit=pad&gravity=fp:0.25:0.75&crop=0.1,0.2,0.5,0.5&trim=12\
             &rotate=270&flip=hv&padding=1,2,3,4&background=ff000080&enlarge=false&blur=1.5\
             &sharpen=2:0.8&format=webp&q=70&q_jpeg=60&q_webp=50&q_avif=40&max_bytes=9000\
             &progressive=true&strip=false&watermark=0.5:southwest:10:20:0.25",
            "w=40&fit=cover&gravity=smart&crop=10,20,300,400&format=auto&rotate=90&flip=v",
            "h=40&fit=scale-down&crop=0.0,0,1,1.0&format=original&enlarge=false&sharpen=1",
            "format=png&rotate=0&trim=0&strip=true&gravity=sw&watermark=1&padding=0",
            "watermark=0.3:tile:5:0",
            "w=50&h=50&fit=cover&gravity=ne&crop=300,0&padding=5,6",
            "crop=0.5,0&gravity=fp:0.1:0.9&padding=1,2,3",
            "crop=0,0&gravity=smart",
        ] {
            for accept in [None, Some("image/avif,image/webp")] {
                let first = parse(query, accept, DEFAULTS, &Limits::default())
                    .unwrap_or_else(|e| panic!("{query}: {e:?}"));
                let canonical = to_query(&first.options);
                let again = parse(&canonical, accept, DEFAULTS, &Limits::default())
                    .unwrap_or_else(|e| panic!("{canonical}: {e:?}"));
                assert_eq!(again, first, "{query} -> {canonical}");
            }
        }
    }

    #[test]
    fn good_queries() {
        let o = parse_ok("w=300&h=200&fit=cover&gravity=ne&format=webp&q=70&progressive=true");
        assert_eq!(o.width, Some(300));
        assert_eq!(o.height, Some(200));
        assert_eq!(o.fit, tessera_resize::Fit::Cover);
        assert_eq!(o.gravity, tessera_resize::Gravity::NorthEast);
        assert_eq!(o.format, FormatRequest::Fixed(OutputFormat::WebP));
        assert_eq!(o.quality, 70);
        assert!(o.progressive);
        let o = parse_ok("");
        assert_eq!((o.width, o.height, o.quality), (None, None, 80));
        assert_eq!(
            parse_ok("fit=scale-down").fit,
            tessera_resize::Fit::ScaleDown
        );
        let o = parse_ok("q_jpeg=85&q_webp=70&q_avif=50&max_bytes=20000&format=gif");
        assert_eq!(
            o.format_quality,
            tessera_resize::FormatQuality {
                jpeg: Some(85),
                webp: Some(70),
                avif: Some(50),
            }
        );
        assert_eq!(o.max_bytes, Some(20_000));
        assert_eq!(o.format, FormatRequest::Fixed(OutputFormat::Gif));
    }

    /// Each geometry option's spellings, and that leaving it out is the default.
    #[test]
    fn geometry_options() {
        use tessera_resize::{Crop, Decimal, Flip, Gravity, Rgba, Rotation};
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let o = parse_ok(
            "w=100&h=50&dpr=2.5&fit=pad&background=ff000080&rotate=270&flip=hv&trim=12\
             &enlarge=false&gravity=fp:0.25:1",
        );
        assert_eq!(o.dpr, d("2.5"));
        assert_eq!(o.fit, tessera_resize::Fit::Pad);
        assert_eq!(o.background, Some(Rgba([255, 0, 0, 128])));
        assert_eq!(o.rotate, Rotation::Deg270);
        assert_eq!(o.flip, Flip::Both);
        assert_eq!(o.trim, Some(12));
        assert_eq!(o.enlarge, Some(false));
        assert_eq!(
            o.gravity,
            Gravity::FocusPoint {
                x: d("0.25"),
                y: d("1")
            }
        );
        assert_eq!(
            parse_ok("crop=10,20,300,200").crop,
            Some(Crop::Pixels {
                x: 10,
                y: 20,
                w: 300,
                h: 200
            })
        );
        assert_eq!(
            parse_ok("crop=0.1,0,0.5,1").crop,
            Some(Crop::Fractions {
                x: d("0.1"),
                y: d("0"),
                w: d("0.5"),
                h: d("1")
            })
        );
        // Two values: a window placed by the gravity; 0 is the whole side.
        assert_eq!(
            parse_ok("crop=300,0&gravity=n").crop,
            Some(Crop::WindowPixels { w: 300, h: 0 })
        );
        assert_eq!(
            parse_ok("crop=0.5,0").crop,
            Some(Crop::WindowFractions {
                w: d("0.5"),
                h: d("0")
            })
        );
        // Padding reads as CSS: all, vertical/horizontal, top/horizontal/bottom, four.
        for (query, sides) in [
            ("padding=5", [5, 5, 5, 5]),
            ("padding=5,10", [5, 10, 5, 10]),
            ("padding=1,2,3", [1, 2, 3, 2]),
            ("padding=1,2,3,4", [1, 2, 3, 4]),
        ] {
            let p = parse_ok(query).padding;
            assert_eq!(
                [p.top_px, p.right_px, p.bottom_px, p.left_px],
                sides,
                "{query}"
            );
        }
        assert_eq!(parse_ok("w=10").padding, tessera_resize::Padding::NONE);
        assert_eq!(
            parse_ok("background=00FF00").background,
            Some(Rgba([0, 255, 0, 255]))
        );
        assert_eq!(parse_ok("rotate=0").rotate, Rotation::None);
        assert_eq!(parse_ok("enlarge=1").enlarge, Some(true));
        assert_eq!(parse_ok("gravity=smart").gravity, Gravity::Smart);
        assert_eq!(parse_ok("blur=2.5").blur, Some(d("2.5")));
        let s = parse_ok("sharpen=0.8").sharpen.unwrap();
        assert_eq!((s.amount, s.sigma), (d("0.8"), d("1")));
        let s = parse_ok("sharpen=1:0.5").sharpen.unwrap();
        assert_eq!((s.amount, s.sigma), (d("1"), d("0.5")));
        let o = parse_ok("w=10");
        assert_eq!(
            (
                o.dpr,
                o.crop,
                o.background,
                o.rotate,
                o.flip,
                o.trim,
                o.enlarge
            ),
            (
                Decimal::ONE,
                None,
                None,
                Rotation::None,
                Flip::None,
                None,
                None
            )
        );
    }

    #[test]
    fn strip_false_keeps_metadata_and_true_is_the_default() {
        assert!(!parse_ok("w=10").keep_metadata);
        assert!(!parse_ok("strip=true").keep_metadata);
        assert!(!parse_ok("strip=1").keep_metadata);
        assert!(parse_ok("strip=false").keep_metadata);
        assert!(parse_ok("strip=0").keep_metadata);
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        let cases = [
            ("w=0", "`w`"),
            ("h=0", "`h`"),
            ("w=-5", "`w`"),
            ("w=abc", "`w`"),
            ("w=1.5", "`w`"),
            ("w=99999999999999999999", "`w`"),
            ("w=4294967296", "`w`"),
            ("w=100000", "width"),
            ("q=0", "`q`"),
            ("q=101", "`q`"),
            ("q=-1", "`q`"),
            ("q_jpeg=0", "`q_jpeg`"),
            ("q_webp=101", "`q_webp`"),
            ("q_avif=x", "`q_avif`"),
            ("max_bytes=0", "max_bytes"),
            ("max_bytes=-3", "`max_bytes`"),
            ("max_bytes=99999999999", "`max_bytes`"),
            ("fit=squash", "`fit`"),
            ("gravity=up", "`gravity`"),
            ("format=bmp", "`format`"),
            ("progressive=maybe", "`progressive`"),
            ("dpr=0.5", "dpr"),
            ("dpr=5", "dpr"),
            ("dpr=two", "`dpr`"),
            ("w=10000&dpr=2", "width"),
            ("w=4000&h=4000&dpr=2", "output limit"),
            ("crop=1,2,3", "`crop`"),
            ("crop=1,2,0,3", "crop"),
            ("crop=0.5,0.5,1.5,0.1", "`crop`"),
            ("crop=1,2,3.5,4", "`crop`"),
            ("crop=-1,0,5,5", "`crop`"),
            ("crop=5", "`crop`"),
            ("crop=1,2,3,4,5", "`crop`"),
            ("crop=1.5,0.5", "`crop`"),
            ("crop=10,0.5x", "`crop`"),
            ("padding=", "empty"),
            ("padding=1,2,3,4,5", "`padding`"),
            ("padding=-1", "`padding`"),
            ("padding=1.5", "`padding`"),
            ("padding=16385", "padding"),
            ("w=4000&h=4000&padding=100", "padding"),
            ("w=16000&padding=0,200", "padding"),
            ("gravity=fp:1.2:0", "`gravity`"),
            ("gravity=fp:0.5", "`gravity`"),
            ("background=red", "`background`"),
            ("background=12345", "`background`"),
            ("rotate=45", "`rotate`"),
            ("flip=x", "`flip`"),
            ("trim=256", "`trim`"),
            ("trim=-1", "`trim`"),
            ("enlarge=yes", "`enlarge`"),
            ("fit=scale-down&enlarge=true", "enlarge"),
            ("blur=0", "blur"),
            ("blur=101", "blur"),
            ("blur=x", "`blur`"),
            ("sharpen=0", "sharpen"),
            ("sharpen=11", "sharpen"),
            ("sharpen=1:20", "sharpen sigma"),
            ("sharpen=1:", "`sharpen`"),
            ("strip=no", "`strip`"),
            ("strip=true&strip=false", "more than once"),
            ("widht=300", "`widht`"),
            ("w=10&w=20", "more than once"),
            ("w=", "empty"),
        ];
        for (query, needle) in cases {
            let err = parse_err(query);
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST, "{query}");
            assert_eq!(
                err.code,
                crate::http::error::ErrorCode::InvalidParameter,
                "{query}"
            );
            assert!(err.message.contains(needle), "{query}: {}", err.message);
        }
    }

    #[test]
    fn accept_decides_auto() {
        let auto = |accept| auto_from_accept(Some(accept));
        assert_eq!(
            auto("image/avif,image/webp,*/*;q=0.8"),
            FormatRequest::Auto {
                webp: true,
                avif: true
            }
        );
        assert_eq!(
            auto("*/*"),
            FormatRequest::Auto {
                webp: false,
                avif: false
            }
        );
        assert_eq!(
            auto("image/*"),
            FormatRequest::Auto {
                webp: false,
                avif: false
            }
        );
        assert_eq!(
            auto("image/webp;q=0, image/avif"),
            FormatRequest::Auto {
                webp: false,
                avif: true
            }
        );
        assert_eq!(
            auto_from_accept(None),
            FormatRequest::Auto {
                webp: false,
                avif: false
            }
        );
        let parsed = parse(
            "format=auto",
            Some("image/webp"),
            DEFAULTS,
            &Limits::default(),
        )
        .unwrap();
        assert!(parsed.vary_accept);
        assert_eq!(
            parsed.options.format,
            FormatRequest::Auto {
                webp: true,
                avif: false
            }
        );
    }

    #[test]
    fn accept_headers_with_the_same_output_make_the_same_request() {
        let parse_with = |accept, limits: &Limits| {
            parse("format=auto&w=100", Some(accept), DEFAULTS, limits)
                .unwrap()
                .options
        };
        let limits = Limits::default();
        let webp = parse_with("image/webp", &limits);
        assert_eq!(parse_with("image/avif,image/webp", &limits), webp);
        assert_eq!(parse_with("image/webp, image/avif;q=0.9", &limits), webp);
        assert_ne!(
            parse_with("image/avif", &limits),
            webp,
            "AVIF alone is AVIF"
        );
        // Where AVIF's limit is above WebP's, an output too large for WebP may be AVIF:
        // then the two differ.
        let wider_avif = Limits {
            avif_output_pixels_max: limits.webp_output_pixels_max + 1,
            ..limits
        };
        assert_ne!(
            parse_with("image/avif,image/webp", &wider_avif),
            parse_with("image/webp", &wider_avif)
        );
    }
}
