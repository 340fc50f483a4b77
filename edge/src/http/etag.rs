//! Entity tags for resize results, and `If-None-Match` matching.
//!
//! A result is fully determined by the input bytes, the options and the pipeline's output
//! version (`tessera_resize::OUTPUT_VERSION`, raised whenever output bytes change), so the
//! tag is a hash of exactly those — computed *before* any decoding, which
//! lets a conditional request be answered `304` without doing the work. SHA-256 (with the
//! CPU's SHA extensions, ~2 GB/s) rather than a faster non-cryptographic hash because a
//! tag that an attacker could collide on purpose would let one image stand for another in
//! a shared cache.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use tessera_resize::{Decimal, Flip, FormatRequest, Options, OutputFormat, Padding, Rotation};

/// The quoted strong ETag of a resize of `input` with `options`, and the watermark whose
/// file has SHA-256 `watermark` when one is drawn (another mark, another output).
pub fn compute(input: &[u8], options: &Options, watermark: Option<&[u8; 32]>) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tessera-resize/output-");
    hasher.update(tessera_resize::OUTPUT_VERSION.to_string().as_bytes());
    hasher.update([0]);
    hasher.update(canonical_options(options).as_bytes());
    hasher.update([0]);
    if let Some(digest) = watermark {
        hasher.update(b"watermark:");
        hasher.update(digest);
    }
    hasher.update(input);
    let digest = hasher.finalize();
    let mut tag = String::with_capacity(2 + 32);
    tag.push('"');
    for byte in &digest[..16] {
        let _ = write!(tag, "{byte:02x}"); // writing to a String cannot fail
    }
    tag.push('"');
    tag
}

/// `avif_speed`'s default when the first tags were given out.
const AVIF_SPEED_FIRST_DEFAULT: u8 = 8;

/// A stable, explicit text form of the options (not `Debug`, whose shape may change).
pub(crate) fn canonical_options(options: &Options) -> String {
    let format = match options.format {
        FormatRequest::Fixed(format) => format.as_str().to_owned(),
        FormatRequest::Auto { webp, avif } => format!("auto:webp={webp}:avif={avif}"),
        FormatRequest::Original => "original".to_owned(),
    };
    // The AVIF speed changes only AVIF bytes. For a request that cannot produce AVIF it is
    // written as the default it had when tags were first given out, so those tags stay the
    // same when the default moves (it went from 8 to 9 with #18).
    let avif_speed = match options.format {
        FormatRequest::Fixed(OutputFormat::Avif) | FormatRequest::Auto { avif: true, .. } => {
            options.avif_speed
        }
        _ => AVIF_SPEED_FIRST_DEFAULT,
    };
    let fq = options.format_quality;
    let mut text = format!(
        "w={:?};h={:?};fit={};gravity={};format={};q={};progressive={};avif_speed={};\
         q_jpeg={:?};q_webp={:?};q_avif={:?};max_bytes={:?}",
        options.width,
        options.height,
        options.fit.as_str(),
        options.gravity,
        format,
        options.quality,
        options.progressive,
        avif_speed,
        fq.jpeg,
        fq.webp,
        fq.avif,
        options.max_bytes,
    );
    // Options added since tags were first given out appear only when not at their default,
    // so every tag given out before them stays the same.
    let added: [(&str, Option<String>); 9] = [
        (
            "dpr",
            (options.dpr != Decimal::ONE).then(|| options.dpr.to_string()),
        ),
        ("crop", options.crop.map(|c| c.to_string())),
        ("background", options.background.map(|b| b.to_string())),
        (
            "rotate",
            (options.rotate != Rotation::None).then(|| options.rotate.degrees().to_string()),
        ),
        (
            "flip",
            (options.flip != Flip::None).then(|| options.flip.as_str().to_owned()),
        ),
        ("trim", options.trim.map(|t| t.to_string())),
        ("enlarge", options.enlarge.map(|e| e.to_string())),
        ("blur", options.blur.map(|b| b.to_string())),
        ("sharpen", options.sharpen.map(|s| s.to_string())),
    ];
    for (name, value) in added {
        if let Some(value) = value {
            let _ = write!(text, ";{name}={value}"); // writing to a String cannot fail
        }
    }
    // Options added later are written only when not at their default, so the tags of
    // requests that do not use them stay what they were.
    if options.keep_metadata {
        text.push_str(";strip=false");
    }
    if let Some(watermark) = options.watermark {
        let _ = write!(text, ";watermark={watermark}"); // writing to a String cannot fail
    }
    if options.padding != Padding::NONE {
        let _ = write!(text, ";padding={}", options.padding); // writing to a String cannot fail
    }
    text
}

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, RFC 9110 13.1.2).
pub fn matches(header: &str, etag: &str) -> bool {
    let header = header.trim();
    if header == "*" {
        return true;
    }
    let ours = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(|candidate| candidate.trim().trim_start_matches("W/"))
        .any(|candidate| candidate == ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_depends_on_input_and_every_option() {
        let base = Options::default();
        let tag = compute(b"abc", &base, None);
        assert_eq!(tag.len(), 34);
        assert_eq!(tag, compute(b"abc", &base, None), "deterministic");
        assert_ne!(tag, compute(b"abd", &base, None));
        let variants = [
            Options {
                width: Some(10),
                ..base
            },
            Options {
                height: Some(10),
                ..base
            },
            Options {
                quality: 50,
                ..base
            },
            Options {
                progressive: !base.progressive,
                ..base
            },
            Options {
                fit: tessera_resize::Fit::Cover,
                ..base
            },
            Options {
                gravity: tessera_resize::Gravity::North,
                ..base
            },
            Options {
                format: FormatRequest::Auto {
                    webp: true,
                    avif: false,
                },
                ..base
            },
            Options {
                format_quality: tessera_resize::FormatQuality {
                    webp: Some(60),
                    ..Default::default()
                },
                ..base
            },
            Options {
                format_quality: tessera_resize::FormatQuality {
                    avif: Some(60),
                    ..Default::default()
                },
                ..base
            },
            Options {
                max_bytes: Some(10_000),
                ..base
            },
            Options {
                dpr: "2".parse().unwrap(),
                ..base
            },
            Options {
                crop: Some("0,0,10,10".parse().unwrap()),
                ..base
            },
            Options {
                crop: Some("0.0,0.0,0.5,0.5".parse().unwrap()),
                ..base
            },
            Options {
                gravity: "fp:0.2:0.3".parse().unwrap(),
                ..base
            },
            Options {
                fit: tessera_resize::Fit::Pad,
                ..base
            },
            Options {
                background: Some("ffffff".parse().unwrap()),
                ..base
            },
            Options {
                rotate: Rotation::Deg90,
                ..base
            },
            Options {
                flip: Flip::Horizontal,
                ..base
            },
            Options {
                trim: Some(0),
                ..base
            },
            Options {
                enlarge: Some(true),
                ..base
            },
            Options {
                gravity: tessera_resize::Gravity::Smart,
                ..base
            },
            Options {
                blur: Some("2".parse().unwrap()),
                ..base
            },
            Options {
                sharpen: Some("1".parse().unwrap()),
                ..base
            },
            Options {
                sharpen: Some("1:0.5".parse().unwrap()),
                ..base
            },
            Options {
                keep_metadata: true,
                ..base
            },
            Options {
                watermark: Some("0.5".parse().unwrap()),
                ..base
            },
            Options {
                watermark: Some("0.5:tile".parse().unwrap()),
                ..base
            },
            Options {
                crop: Some("10,10".parse().unwrap()),
                ..base
            },
            Options {
                crop: Some("0.5,0.0".parse().unwrap()),
                ..base
            },
            Options {
                padding: "1,2,3,4".parse().unwrap(),
                ..base
            },
            Options {
                padding: "4,3,2,1".parse().unwrap(),
                ..base
            },
        ];
        let mut tags = vec![tag];
        for variant in variants {
            let t = compute(b"abc", &variant, None);
            assert!(!tags.contains(&t), "{variant:?}");
            tags.push(t);
        }
        // The same options with another watermark file.
        let marked = Options {
            watermark: Some("0.5".parse().unwrap()),
            ..base
        };
        let one = compute(b"abc", &marked, Some(&[1; 32]));
        assert!(!tags.contains(&one));
        assert_ne!(one, compute(b"abc", &marked, Some(&[2; 32])));
    }

    /// The AVIF speed is part of the tag where the output can be AVIF (the bytes differ) and
    /// nowhere else (a JPEG's tag did not move when the default speed did).
    #[test]
    fn the_avif_speed_counts_only_where_avif_can_come_out() {
        let at = |format, avif_speed| {
            compute(
                b"abc",
                &Options {
                    format,
                    avif_speed,
                    ..Options::default()
                },
                None,
            )
        };
        let jpeg = FormatRequest::Fixed(OutputFormat::Jpeg);
        let avif = FormatRequest::Fixed(OutputFormat::Avif);
        let auto = FormatRequest::Auto {
            webp: false,
            avif: true,
        };
        let webp_only = FormatRequest::Auto {
            webp: true,
            avif: false,
        };
        assert_eq!(at(jpeg, 8), at(jpeg, 9));
        assert_eq!(at(webp_only, 8), at(webp_only, 9));
        assert_ne!(at(avif, 8), at(avif, 9));
        assert_ne!(at(auto, 8), at(auto, 9));
    }

    /// Tags given out before the geometry options existed stay the same: the text hashed for
    /// default options is exactly what it was. The tag itself moves only with
    /// `tessera_resize::OUTPUT_VERSION` (the package version hashed before version 1 of it).
    #[test]
    fn default_options_hash_as_before() {
        assert_eq!(
            canonical_options(&Options::default()),
            "w=None;h=None;fit=contain;gravity=center;format=jpeg;q=80;progressive=false;\
             avif_speed=8;q_jpeg=None;q_webp=None;q_avif=None;max_bytes=None"
        );
        assert_eq!(
            compute(b"abc", &Options::default(), None),
            "\"51391ce6c534d216bf5d3d77f42b8938\""
        );
    }

    #[test]
    fn if_none_match_forms() {
        let tag = "\"abc\"";
        assert!(matches("\"abc\"", tag));
        assert!(matches("W/\"abc\"", tag));
        assert!(matches("\"x\", \"abc\"", tag));
        assert!(matches("*", tag));
        assert!(!matches("\"abd\"", tag));
        assert!(!matches("", tag));
        assert!(!matches("abc", tag));
    }
}
