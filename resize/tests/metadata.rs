//! `strip=false` (`Options::keep_metadata`): the source's rights notice and ICC profile
//! reach the output in each format that can carry them, nothing else of the source's EXIF
//! does, pixels stay in the profile's space exactly when the profile is kept, and the
//! default output stays bare. Outputs are read back with `image`'s decoders, an
//! independent implementation.

mod hostile_inputs;

use std::io::Cursor;

use hostile_inputs as gen;
use image::ImageDecoder;
use tessera_resize::{FormatRequest, Limits, Options, Output, OutputFormat, Pipeline};

const ARTIST: &str = "Ana Lopez";
const COPYRIGHT: &str = "(c) 2026 Ana Lopez, all rights reserved";
const MAKE: &str = "SecretCam";

/// A big-endian camera-like EXIF block (TIFF, no `Exif\0\0`): Make, Orientation 6,
/// Artist, Copyright and a GPS IFD pointer, written here independently of the crate.
fn camera_exif() -> Vec<u8> {
    let artist = format!("{ARTIST}\0");
    let copyright = format!("{COPYRIGHT}\0");
    let make = format!("{MAKE}\0");
    let entries: [(u16, u16, u32, Vec<u8>); 5] = [
        (0x010F, 2, make.len() as u32, make.into_bytes()),
        (0x0112, 3, 1, 6u16.to_be_bytes().to_vec()),
        (0x013B, 2, artist.len() as u32, artist.into_bytes()),
        (0x8298, 2, copyright.len() as u32, copyright.into_bytes()),
        (0x8825, 4, 1, 0u32.to_be_bytes().to_vec()),
    ];
    let data_start = 8 + 2 + 12 * entries.len() + 4;
    let mut t = b"MM\0*".to_vec();
    t.extend_from_slice(&8u32.to_be_bytes());
    t.extend_from_slice(&(entries.len() as u16).to_be_bytes());
    let mut data = Vec::new();
    for (tag, kind, count, value) in &entries {
        t.extend_from_slice(&tag.to_be_bytes());
        t.extend_from_slice(&kind.to_be_bytes());
        t.extend_from_slice(&count.to_be_bytes());
        if value.len() <= 4 {
            let mut v = [0u8; 4];
            v[..value.len()].copy_from_slice(value);
            t.extend_from_slice(&v);
        } else {
            t.extend_from_slice(&((data_start + data.len()) as u32).to_be_bytes());
            data.extend_from_slice(value);
        }
    }
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&data);
    t
}

/// Display P3: wide enough that converting to sRGB moves saturated colours.
fn p3_profile() -> Vec<u8> {
    moxcms::ColorProfile::new_display_p3()
        .encode()
        .expect("moxcms encodes its own profile")
}

/// A 64 x 48 saturated PNG (red to green, blue rising down).
fn saturated_png(extra: &[Vec<u8>]) -> Vec<u8> {
    let (w, h) = (64u32, 48u32);
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            raw.extend_from_slice(&[
                (255 - x * 255 / (w - 1)) as u8,
                (x * 255 / (w - 1)) as u8,
                (y * 255 / (h - 1)) as u8,
            ]);
        }
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(gen::ihdr(w, h));
    for chunk in extra {
        png.extend_from_slice(chunk);
    }
    png.extend(gen::chunk(b"IDAT", &gen::zlib(&raw)));
    png.extend(gen::chunk(b"IEND", &[]));
    png
}

fn run(input: &[u8], format: OutputFormat, keep_metadata: bool) -> Output {
    let options = Options {
        width: Some(32),
        format: FormatRequest::Fixed(format),
        quality: 90,
        keep_metadata,
        ..Options::default()
    };
    Pipeline::new(Limits::default())
        .process(input, &options)
        .expect("processes")
}

/// The ICC profile and EXIF block `image` reads back from an output.
fn read_back(bytes: &[u8], format: OutputFormat) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    fn both(mut d: impl ImageDecoder) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        let icc = d.icc_profile().expect("reads the profile");
        let exif = d.exif_metadata().expect("reads EXIF");
        (icc, exif)
    }
    match format {
        OutputFormat::Jpeg => {
            both(image::codecs::jpeg::JpegDecoder::new(Cursor::new(bytes)).expect("a JPEG"))
        }
        OutputFormat::Png => {
            both(image::codecs::png::PngDecoder::new(Cursor::new(bytes)).expect("a PNG"))
        }
        OutputFormat::WebP => {
            both(image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).expect("a WebP"))
        }
        other => panic!("no reader for {other:?}"),
    }
}

/// The entries of IFD0 of a TIFF block: (tag, ASCII value when it is text).
fn ifd0(tiff: &[u8]) -> Vec<(u16, String)> {
    let tiff = tiff.strip_prefix(b"Exif\0\0").unwrap_or(tiff);
    let big = &tiff[..2] == b"MM";
    let u16_at = |i: usize| {
        let b = [tiff[i], tiff[i + 1]];
        if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |i: usize| {
        let b = [tiff[i], tiff[i + 1], tiff[i + 2], tiff[i + 3]];
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let ifd = u32_at(4) as usize;
    (0..usize::from(u16_at(ifd)))
        .map(|i| {
            let e = ifd + 2 + 12 * i;
            let (tag, kind, count) = (u16_at(e), u16_at(e + 2), u32_at(e + 4) as usize);
            let text = if kind == 2 {
                let at = if count <= 4 {
                    e + 8
                } else {
                    u32_at(e + 8) as usize
                };
                String::from_utf8_lossy(&tiff[at..at + count])
                    .trim_end_matches('\0')
                    .to_owned()
            } else {
                String::new()
            };
            (tag, text)
        })
        .collect()
}

fn rights_only(exif: &[u8]) {
    let entries = ifd0(exif);
    assert_eq!(
        entries,
        vec![(0x013B, ARTIST.to_owned()), (0x8298, COPYRIGHT.to_owned())],
        "only Artist and Copyright are kept"
    );
}

#[test]
fn strip_false_keeps_the_profile_and_the_rights_in_jpeg_png_and_webp() {
    let profile = p3_profile();
    let exif = camera_exif();
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&exif);
    let mut app2 = b"ICC_PROFILE\0\x01\x01".to_vec();
    app2.extend_from_slice(&profile);
    let base = run(&saturated_png(&[]), OutputFormat::Jpeg, false).bytes;
    let sources = [
        (
            "JPEG",
            gen::jpeg_with_segments(&base, &[(0xE1, app1), (0xE2, app2)]),
        ),
        (
            "PNG",
            saturated_png(&[gen::iccp(&gen::zlib(&profile)), gen::chunk(b"eXIf", &exif)]),
        ),
    ];
    for (name, source) in &sources {
        for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::WebP] {
            let kept = run(source, format, true);
            // Orientation 6 was applied (32 wide in, displayed 48 x 64 → 32 x 43), once.
            assert_eq!((kept.width, kept.height), (32, 43), "{name} → {format:?}");
            let (icc, exif) = read_back(&kept.bytes, format);
            assert_eq!(
                icc.as_deref(),
                Some(&profile[..]),
                "{name} → {format:?}: the profile is kept byte for byte"
            );
            rights_only(&exif.unwrap_or_else(|| panic!("{name} → {format:?}: no EXIF")));

            let bare = run(source, format, false);
            assert_eq!(
                read_back(&bare.bytes, format),
                (None, None),
                "{name} → {format:?}: the default output carries no metadata"
            );
            assert!(
                !String::from_utf8_lossy(&kept.bytes).contains(MAKE),
                "{name} → {format:?}: the camera make leaked"
            );
        }
    }
}

#[test]
fn avif_keeps_the_rights_and_converts_the_pixels() {
    let exif = camera_exif();
    let profile = p3_profile();
    let source = saturated_png(&[gen::iccp(&gen::zlib(&profile)), gen::chunk(b"eXIf", &exif)]);
    let kept = run(&source, OutputFormat::Avif, true).bytes;
    let text = String::from_utf8_lossy(&kept);
    assert!(text.contains(COPYRIGHT) && text.contains(ARTIST));
    assert!(!text.contains(MAKE));
    let bare = run(&source, OutputFormat::Avif, false).bytes;
    assert!(!String::from_utf8_lossy(&bare).contains(COPYRIGHT));
    // No profile can be written, so the pixels were converted as by default: the two
    // outputs differ only by the EXIF item.
    assert!(kept.len() > bare.len());
    assert!(kept.len() - bare.len() < 200 + COPYRIGHT.len() + ARTIST.len());
}

#[test]
fn pixels_stay_in_the_profile_space_exactly_when_it_is_kept() {
    let profile = p3_profile();
    let tagged = saturated_png(&[gen::iccp(&gen::zlib(&profile))]);
    let untagged = saturated_png(&[]);
    let png = |input: &[u8], keep: bool| {
        let out = run(input, OutputFormat::Png, keep);
        image::load_from_memory(&out.bytes)
            .expect("decodes")
            .to_rgb8()
            .into_raw()
    };
    // Kept: the P3 values untouched, as the untagged source's.
    assert_eq!(png(&tagged, true), png(&untagged, false));
    // Stripped: converted to sRGB, so saturated values move.
    let converted = png(&tagged, false);
    let moved = converted
        .iter()
        .zip(png(&untagged, false))
        .filter(|(a, b)| a.abs_diff(*b) > 8)
        .count();
    assert!(
        moved > converted.len() / 10,
        "P3 → sRGB moved only {moved} samples"
    );
}

#[test]
fn a_source_without_rights_gets_no_exif_and_a_gif_gets_nothing() {
    let profile = p3_profile();
    let source = saturated_png(&[gen::iccp(&gen::zlib(&profile))]);
    let out = run(&source, OutputFormat::Jpeg, true);
    let (icc, exif) = read_back(&out.bytes, OutputFormat::Jpeg);
    assert_eq!(icc.as_deref(), Some(&profile[..]));
    assert_eq!(exif, None);
    let gif = run(&source, OutputFormat::Gif, true).bytes;
    assert!(!gif.windows(4).any(|w| w == b"ICCR" || w == b"acsp"));
}
