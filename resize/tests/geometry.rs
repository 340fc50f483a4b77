//! Geometry options end to end, as properties on synthetic images (and the shared photos
//! where a real EXIF orientation matters): output sizes for `dpr`, `fit=pad`, `crop` and
//! `enlarge`; crop fractions and pixels agreeing; a focus point anchoring the cover window;
//! `rotate`/`flip` giving exactly the rotated source's pixels; padding bars and flattened
//! transparency in the background colour; `trim` within its threshold and not beyond; and
//! what an animation refuses; a `crop=w,h` window landing where each gravity puts it (with
//! rotation, a cover crop after it, and smart); `padding`'s size, colour and transparency
//! and its limits; `gravity=smart` keeping an off-centre subject (synthetic, and
//! the shared photos with the window printed); `blur` and `sharpen` lowering and raising the
//! high-frequency energy.

mod common;

use tessera_resize::{
    Crop, Decimal, Fit, Flip, FormatRequest, Gravity, Limits, Options, Output, OutputFormat,
    Pipeline, ResizeError, Rgba, Rotation,
};

fn png(options: Options) -> Options {
    Options {
        format: FormatRequest::Fixed(OutputFormat::Png),
        ..options
    }
}

fn process(bytes: &[u8], options: &Options) -> Output {
    Pipeline::new(Limits::default())
        .process(bytes, options)
        .unwrap_or_else(|e| panic!("{options:?}: {e}"))
}

fn refused(bytes: &[u8], options: &Options) -> String {
    match Pipeline::new(Limits::default()).process(bytes, options) {
        Err(e @ ResizeError::InvalidOption(_)) => e.to_string(),
        other => panic!("{options:?}: expected InvalidOption, got {other:?}"),
    }
}

fn encode_png(img: &image::RgbaImage) -> Vec<u8> {
    common::png_of(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgba8,
    )
}

/// A `w` x `h` opaque image whose every pixel is distinct: (x, y, x ^ y).
fn distinct(w: u32, h: u32) -> image::RgbaImage {
    image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([x as u8, y as u8, (x ^ y) as u8 ^ 0x55, 255])
    })
}

fn rgba(bytes: &[u8]) -> image::RgbaImage {
    common::decode_back(bytes).to_rgba8()
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

// ------------------------------------------------------------------ sizes

#[test]
fn output_sizes_for_dpr_pad_crop_and_enlarge() {
    let input = encode_png(&distinct(200, 100));
    let size = |o: Options| {
        let out = process(&input, &png(o));
        let img = rgba(&out.bytes);
        assert_eq!((img.width(), img.height()), (out.width, out.height));
        (out.width, out.height)
    };
    let base = Options {
        width: Some(50),
        height: Some(40),
        ..Options::default()
    };
    // dpr multiplies the box; 1.5 rounds.
    assert_eq!(size(base), (50, 25));
    assert_eq!(
        size(Options {
            dpr: dec("2"),
            ..base
        }),
        (100, 50)
    );
    assert_eq!(
        size(Options {
            dpr: dec("1.5"),
            ..base
        }),
        (75, 38)
    );
    let cover = Options {
        fit: Fit::Cover,
        ..base
    };
    assert_eq!(
        size(Options {
            dpr: dec("3"),
            ..cover
        }),
        (150, 120)
    );
    // pad: exactly the box, whatever the aspect ratio; one side alone is contain.
    assert_eq!(
        size(Options {
            fit: Fit::Pad,
            ..base
        }),
        (50, 40)
    );
    assert_eq!(
        size(Options {
            fit: Fit::Pad,
            height: None,
            ..base
        }),
        (50, 25)
    );
    // crop with no size: the crop's size.
    let crop = Some(Crop::Pixels {
        x: 10,
        y: 20,
        w: 70,
        h: 30,
    });
    assert_eq!(
        size(Options {
            crop,
            ..Options::default()
        }),
        (70, 30)
    );
    // A crop that runs over the edge keeps what lies inside.
    let over = Some(Crop::Pixels {
        x: 150,
        y: 50,
        w: 100,
        h: 100,
    });
    assert_eq!(
        size(Options {
            crop: over,
            ..Options::default()
        }),
        (50, 50)
    );
    // crop, then fit: the crop's aspect ratio decides.
    assert_eq!(
        size(Options {
            crop,
            width: Some(35),
            ..Options::default()
        }),
        (35, 15)
    );
    // enlarge: default enlarges (contain), false keeps the source size, cover shrinks
    // the box to what the source has.
    let big = Options {
        width: Some(400),
        height: Some(400),
        ..Options::default()
    };
    assert_eq!(size(big), (400, 200));
    assert_eq!(
        size(Options {
            enlarge: Some(false),
            ..big
        }),
        (200, 100)
    );
    assert_eq!(
        size(Options {
            fit: Fit::Cover,
            enlarge: Some(false),
            ..big
        }),
        (200, 100)
    );
    assert_eq!(
        size(Options {
            fit: Fit::Cover,
            ..big
        }),
        (400, 400)
    );
    assert_eq!(
        size(Options {
            fit: Fit::Pad,
            enlarge: Some(false),
            ..big
        }),
        (400, 400)
    );
    assert_eq!(
        size(Options {
            fit: Fit::ScaleDown,
            ..big
        }),
        (200, 100)
    );
    assert_eq!(
        size(Options {
            width: Some(300),
            height: None,
            enlarge: Some(false),
            ..Options::default()
        }),
        (200, 100)
    );
}

#[test]
fn dpr_over_the_output_limit_is_refused() {
    let input = encode_png(&distinct(20, 20));
    let limits = Limits::default();
    let side = (limits.output_pixels_max as f64).sqrt() as u32;
    let o = Options {
        width: Some(side / 2 + 1),
        height: Some(side / 2 + 1),
        dpr: dec("2"),
        ..Options::default()
    };
    assert!(refused(&input, &o).contains("over the output limit"));
    let o = Options {
        width: Some(10_000),
        dpr: dec("2"),
        ..Options::default()
    };
    assert!(refused(&input, &o).contains("width"));
}

#[test]
fn invalid_values_are_refused_naming_the_option() {
    let input = encode_png(&distinct(20, 20));
    let cases = [
        (
            Options {
                dpr: dec("0.5"),
                ..Options::default()
            },
            "dpr",
        ),
        (
            Options {
                dpr: dec("4.01"),
                ..Options::default()
            },
            "dpr",
        ),
        (
            Options {
                crop: Some(Crop::Pixels {
                    x: 0,
                    y: 0,
                    w: 0,
                    h: 5,
                }),
                ..Options::default()
            },
            "crop",
        ),
        (
            Options {
                crop: Some(Crop::Pixels {
                    x: 30,
                    y: 0,
                    w: 5,
                    h: 5,
                }),
                ..Options::default()
            },
            "crop",
        ),
        (
            Options {
                crop: Some(Crop::Fractions {
                    x: dec("1"),
                    y: dec("0"),
                    w: dec("0.5"),
                    h: dec("0.5"),
                }),
                ..Options::default()
            },
            "crop",
        ),
        (
            Options {
                gravity: Gravity::FocusPoint {
                    x: dec("1.5"),
                    y: dec("0"),
                },
                ..Options::default()
            },
            "fp",
        ),
        (
            Options {
                fit: Fit::ScaleDown,
                enlarge: Some(true),
                ..Options::default()
            },
            "enlarge",
        ),
    ];
    for (options, name) in cases {
        let message = refused(&input, &options);
        assert!(message.contains(name), "{options:?}: {message}");
    }
}

// ------------------------------------------------------------------ crop

#[test]
fn crop_fractions_and_pixels_agree() {
    let input = encode_png(&distinct(200, 100));
    let pixels = Options {
        crop: Some(Crop::Pixels {
            x: 50,
            y: 25,
            w: 100,
            h: 50,
        }),
        ..png(Options::default())
    };
    let fractions = Options {
        crop: Some(Crop::Fractions {
            x: dec("0.25"),
            y: dec("0.25"),
            w: dec("0.5"),
            h: dec("0.5"),
        }),
        ..pixels
    };
    let (a, b) = (process(&input, &pixels), process(&input, &fractions));
    assert_eq!(a.bytes, b.bytes);
    // Without resizing, the crop is exactly the source's pixels.
    let img = rgba(&a.bytes);
    let src = distinct(200, 100);
    for (x, y, p) in img.enumerate_pixels() {
        assert_eq!(*p, *src.get_pixel(x + 50, y + 25));
    }
    let window = a.source_window;
    assert_eq!(
        (window.x, window.y, window.width, window.height),
        (50.0, 25.0, 100.0, 50.0)
    );
}

/// A JPEG crop decodes only the rows and columns around the crop (`crate::libjpeg`), and
/// the output is still those pixels: against a float reference of exactly the crop
/// (independent full decode, exact crop, f32 Lanczos3) it scores higher than against the
/// reference moved by two source pixels in any direction. Synthetic (always) and a shared
/// photo (progressive) where present; crops inside, at corners and along edges.
#[test]
fn a_jpeg_crop_is_the_crops_pixels() {
    let synthetic = {
        let img = image::RgbImage::from_fn(1200, 800, |x, y| {
            let v = ((x as f32 / 9.0).sin() * 60.0 + (y as f32 / 13.0).cos() * 60.0) as i32;
            image::Rgb([
                (128 + v) as u8,
                ((x * 255 / 1200) as i32 - v / 2).clamp(0, 255) as u8,
                ((y * 255 / 800) as u8) ^ ((x / 40 % 2) as u8 * 90),
            ])
        });
        common::jpeg_of(img.as_raw(), 1200, 800, 95)
    };
    let mut inputs = vec![("synthetic", synthetic)];
    if let Some(photo) = common::photo("seeding_by_Clements_Engelhardt.jpg") {
        inputs.push(("seeding", photo));
    }
    for (name, input) in inputs {
        let (sw, sh, src) = common::decode_rgb8(&input);
        let crops = [
            (sw / 4, sh / 4, sw / 2, sh / 2, 400),
            (0, 0, sw / 3, sh / 3, 200),
            (sw - sw / 5, sh / 2, sw / 5, sh / 2, 150),
            (sw / 3, sh - 64, sw / 3, 64, 300),
        ];
        for (x, y, w, h, out_w) in crops {
            let options = Options {
                crop: Some(Crop::Pixels { x, y, w, h }),
                width: Some(out_w),
                ..png(Options::default())
            };
            let out = process(&input, &options);
            let (ow, oh, got) = common::decode_rgb8(&out.bytes);
            let reference = |dx: i64, dy: i64| {
                let (x, y) = (i64::from(x) + dx, i64::from(y) + dy);
                let mut region = Vec::with_capacity(w as usize * h as usize * 3);
                for row in y..y + i64::from(h) {
                    let row = row.clamp(0, i64::from(sh) - 1) as usize;
                    for col in x..x + i64::from(w) {
                        let col = col.clamp(0, i64::from(sw) - 1) as usize;
                        let at = (row * sw as usize + col) * 3;
                        region.extend_from_slice(&src[at..at + 3]);
                    }
                }
                common::psnr(&got, &common::float_reference(w, h, &region, ow, oh))
            };
            let at_crop = reference(0, 0);
            let case = format!("{name}: crop {x},{y} {w}x{h} to {ow}x{oh}");
            assert!(at_crop > 35.0, "{case}: {at_crop:.2} dB");
            for (dx, dy) in [(-2, 0), (2, 0), (0, -2), (0, 2)] {
                let moved = reference(dx, dy);
                assert!(
                    at_crop > moved,
                    "{case}: {at_crop:.2} dB, moved {dx},{dy}: {moved:.2} dB"
                );
            }
        }
    }
}

/// Rows below a JPEG crop are never decoded: a file damaged (cut) below the crop still
/// serves the crop, while the whole image is refused as corrupt.
#[test]
fn a_jpeg_crop_above_damage_is_served_and_the_whole_image_is_refused() {
    let img = image::RgbImage::from_fn(256, 1024, |x, y| image::Rgb([x as u8, (y / 4) as u8, 77]));
    let mut input = common::jpeg_of(img.as_raw(), 256, 1024, 90);
    input.truncate(input.len() * 3 / 4);
    let whole = Pipeline::new(Limits::default()).process(&input, &png(Options::default()));
    assert!(matches!(whole, Err(ResizeError::Corrupt(_))), "{whole:?}");
    let options = Options {
        crop: Some(Crop::Pixels {
            x: 0,
            y: 0,
            w: 256,
            h: 200,
        }),
        ..png(Options::default())
    };
    let out = process(&input, &options);
    assert_eq!((out.width, out.height), (256, 200));
}

// ------------------------------------------------------------------ crop window

/// `crop=w,h`: an 80x40 window of a 200x100 image lands where each gravity puts it, and
/// is exactly those source pixels; 0 is the whole side, a window larger than the image is
/// the image, fractions are of the image's sides.
#[test]
fn a_crop_window_lands_where_the_gravity_puts_it() {
    let src = distinct(200, 100);
    let input = encode_png(&src);
    let window = Options {
        crop: Some(Crop::WindowPixels { w: 80, h: 40 }),
        ..png(Options::default())
    };
    let place = |options: &Options| {
        let out = process(&input, options);
        let w = out.source_window;
        ((w.x, w.y, w.width, w.height), out)
    };
    for (gravity, x, y) in [
        (Gravity::Center, 60.0, 30.0),
        (Gravity::North, 60.0, 0.0),
        (Gravity::NorthEast, 120.0, 0.0),
        (Gravity::East, 120.0, 30.0),
        (Gravity::SouthEast, 120.0, 60.0),
        (Gravity::South, 60.0, 60.0),
        (Gravity::SouthWest, 0.0, 60.0),
        (Gravity::West, 0.0, 30.0),
        (Gravity::NorthWest, 0.0, 0.0),
        // Centred on the point (0.3·200, 0.5·100), and moved back inside at the edges.
        (fp("0.3", "0.5"), 20.0, 30.0),
        (fp("0.95", "0.1"), 120.0, 0.0),
        (fp("0", "1"), 0.0, 60.0),
    ] {
        let (rect, out) = place(&Options { gravity, ..window });
        assert_eq!(rect, (x, y, 80.0, 40.0), "{gravity}");
        assert_eq!((out.width, out.height), (80, 40), "{gravity}");
        let img = rgba(&out.bytes);
        for (ox, oy, p) in img.enumerate_pixels() {
            let s = src.get_pixel(ox + x as u32, oy + y as u32);
            assert_eq!(p, s, "{gravity} at ({ox}, {oy})");
        }
    }
    let size = |crop: Crop, gravity: Gravity| {
        place(&Options {
            crop: Some(crop),
            gravity,
            ..window
        })
        .0
    };
    assert_eq!(
        size(Crop::WindowPixels { w: 0, h: 40 }, Gravity::South),
        (0.0, 60.0, 200.0, 40.0)
    );
    assert_eq!(
        size(Crop::WindowPixels { w: 500, h: 500 }, Gravity::SouthEast),
        (0.0, 0.0, 200.0, 100.0)
    );
    assert_eq!(
        size(
            Crop::WindowFractions {
                w: dec("0.5"),
                h: dec("0")
            },
            Gravity::East
        ),
        (100.0, 0.0, 100.0, 100.0)
    );
}

fn fp(x: &str, y: &str) -> Gravity {
    Gravity::FocusPoint {
        x: dec(x),
        y: dec(y),
    }
}

/// The window is sized in the source as displayed (like `crop=x,y,w,h`) and placed by the
/// gravity in the output's frame (like the cover window): turned a quarter, north is the
/// source's left; a cover window then lands inside the crop window by the same gravity.
#[test]
fn a_crop_window_shares_the_gravity_with_rotation_and_cover() {
    let input = encode_png(&distinct(200, 100));
    let window = Options {
        crop: Some(Crop::WindowPixels { w: 80, h: 40 }),
        ..png(Options::default())
    };
    let out = process(
        &input,
        &Options {
            rotate: Rotation::Deg90,
            gravity: Gravity::North,
            ..window
        },
    );
    assert_eq!((out.width, out.height), (40, 80));
    let w = out.source_window;
    assert_eq!((w.x, w.y, w.width, w.height), (0.0, 30.0, 80.0, 40.0));
    // A 100x100 window at the east, then a 2:1 cover window in it, east too: the cover
    // window's left edge stays at the crop window's, its height centred (east is 1, 0.5).
    let out = process(
        &input,
        &Options {
            crop: Some(Crop::WindowPixels { w: 100, h: 100 }),
            gravity: Gravity::East,
            width: Some(50),
            height: Some(25),
            fit: Fit::Cover,
            ..window
        },
    );
    let w = out.source_window;
    assert_eq!((w.x, w.y, w.width, w.height), (100.0, 25.0, 100.0, 50.0));
    assert_eq!((out.width, out.height), (50, 25));
    // With a rectangle crop first nothing moves: the rectangle is placed by its numbers.
    let out = process(
        &input,
        &Options {
            crop: Some(Crop::Pixels {
                x: 10,
                y: 10,
                w: 50,
                h: 50,
            }),
            gravity: Gravity::SouthEast,
            ..window
        },
    );
    let w = out.source_window;
    assert_eq!((w.x, w.y, w.width, w.height), (10.0, 10.0, 50.0, 50.0));
}

// ------------------------------------------------------------------ padding

/// `padding`: bars of the background around the result, sized in output pixels times
/// `dpr`, after `fit=pad`'s canvas; the content is untouched between them.
#[test]
fn padding_adds_bars_of_the_background_around_the_result() {
    let red = image::Rgba([255, 0, 0, 255]);
    let green = image::Rgba([0, 255, 0, 255]);
    let input = encode_png(&image::RgbaImage::from_pixel(40, 20, red));
    let padded = png(Options {
        padding: "1,2,3,4".parse().unwrap(),
        background: Some("00ff00".parse().unwrap()),
        ..Options::default()
    });
    let out = process(&input, &padded);
    assert_eq!((out.width, out.height), (46, 24));
    let img = rgba(&out.bytes);
    assert_eq!(img.dimensions(), (46, 24));
    for (x, y, p) in img.enumerate_pixels() {
        let inside = (4..44).contains(&x) && (1..21).contains(&y);
        assert_eq!(*p, if inside { red } else { green }, "({x}, {y})");
    }
    // dpr doubles the bars with the box; around a `fit=pad` canvas of its own.
    let out = process(
        &input,
        &Options {
            width: Some(20),
            dpr: dec("2"),
            ..padded
        },
    );
    assert_eq!((out.width, out.height), (40 + 12, 20 + 8));
    let img = rgba(&out.bytes);
    assert_eq!(*img.get_pixel(8, 2), red);
    assert_eq!(*img.get_pixel(7, 2), green);
    assert_eq!(*img.get_pixel(8, 1), green);
    assert_eq!(*img.get_pixel(47, 21), red);
    assert_eq!(*img.get_pixel(48, 21), green);
    assert_eq!(*img.get_pixel(47, 22), green);
    let out = process(
        &input,
        &Options {
            width: Some(40),
            height: Some(40),
            fit: Fit::Pad,
            padding: "5".parse().unwrap(),
            ..padded
        },
    );
    assert_eq!((out.width, out.height), (50, 50));
    let img = rgba(&out.bytes);
    // The image sits centred on its 40x40 canvas (rows 10..30), inside the 5 px bars.
    assert_eq!(*img.get_pixel(5, 15), red);
    assert_eq!(*img.get_pixel(44, 34), red);
    assert_eq!(*img.get_pixel(5, 14), green);
    assert_eq!(*img.get_pixel(4, 15), green);
}

/// Without `background` the bars are transparent where the format has alpha (PNG), and
/// white where it has not (JPEG), as `fit=pad`'s bars are; the probe (what the node
/// prices) sees the padded size.
#[test]
fn padding_is_transparent_in_png_and_white_in_jpeg() {
    let input = encode_png(&image::RgbaImage::from_pixel(
        30,
        30,
        image::Rgba([0, 0, 255, 255]),
    ));
    let padded = png(Options {
        padding: "10,0".parse().unwrap(),
        ..Options::default()
    });
    let out = process(&input, &padded);
    assert_eq!((out.width, out.height), (30, 50));
    let img = rgba(&out.bytes);
    assert_eq!(img.get_pixel(15, 5)[3], 0, "the bar is transparent");
    assert_eq!(img.get_pixel(15, 45)[3], 0, "the bar is transparent");
    assert_eq!(*img.get_pixel(15, 25), image::Rgba([0, 0, 255, 255]));
    let probe = tessera_resize::probe(&input, &padded, &Limits::default()).unwrap();
    assert_eq!((probe.output_width, probe.output_height), (30, 50));
    let jpeg = process(
        &input,
        &Options {
            format: FormatRequest::Fixed(OutputFormat::Jpeg),
            ..padded
        },
    );
    let img = common::decode_back(&jpeg.bytes).to_rgb8();
    assert!(img.get_pixel(15, 2).0.iter().all(|&v| v > 245), "white bar");
    let [r, g, b] = img.get_pixel(15, 25).0;
    assert!(r < 20 && g < 20 && b > 230, "blue content {:?}", [r, g, b]);
}

/// The padded output is what the output limits bound: the pixel limit, the side limit,
/// and the per-format limits (AVIF's 4.2 MP).
#[test]
fn padding_over_the_output_limits_is_refused() {
    let input = encode_png(&distinct(200, 100));
    let message = refused(
        &input,
        &Options {
            padding: "0,8100".parse().unwrap(),
            ..Options::default()
        },
    );
    assert!(
        message.contains("16400x100 with padding 0,8100"),
        "{message}"
    );
    let message = refused(
        &input,
        &Options {
            width: Some(4000),
            height: Some(4000),
            padding: "100".parse().unwrap(),
            ..Options::default()
        },
    );
    assert!(message.contains("padding"), "{message}");
    let message = refused(
        &input,
        &Options {
            padding: "1100".parse().unwrap(),
            format: FormatRequest::Fixed(OutputFormat::Avif),
            ..Options::default()
        },
    );
    assert!(
        message.contains("avif output of 5520000 pixels"),
        "{message}"
    );
}

// ------------------------------------------------------------------ focus point

/// A 400x100 gray image with a red block at x 300..340: a 100x100 cover window centred on
/// a focus point at the block keeps it; the centre (default) does not.
#[test]
fn a_focus_point_anchors_the_cover_window() {
    let img = image::RgbaImage::from_fn(400, 100, |x, _| {
        if (300..340).contains(&x) {
            image::Rgba([255, 0, 0, 255])
        } else {
            image::Rgba([128, 128, 128, 255])
        }
    });
    let input = encode_png(&img);
    let cover = png(Options {
        width: Some(100),
        height: Some(100),
        fit: Fit::Cover,
        ..Options::default()
    });
    let window = |x: &str, y: &str| {
        let out = process(
            &input,
            &Options {
                gravity: Gravity::FocusPoint {
                    x: dec(x),
                    y: dec(y),
                },
                ..cover
            },
        );
        (out.source_window.x, out.source_window.width, out)
    };
    // Centred on x = 0.8 * 400 = 320.
    let (x, w, out) = window("0.8", "0.5");
    assert_eq!((x, w), (270.0, 100.0));
    let red = |out: &Output| {
        rgba(&out.bytes)
            .pixels()
            .filter(|p| p[0] > 200 && p[1] < 50)
            .count()
    };
    assert!(red(&out) >= 35 * 100, "the block is in the window");
    // Clamped at the edges.
    assert_eq!(window("0.05", "0.5").0, 0.0);
    assert_eq!(window("1", "0").0, 300.0);
    assert_eq!(red(&process(&input, &cover)), 0, "the centre misses it");
}

// ------------------------------------------------------------------ rotate, flip

#[test]
fn rotate_and_flip_give_exactly_the_turned_source() {
    let src = distinct(5, 3);
    let input = encode_png(&src);
    use image::imageops::{flip_horizontal, flip_vertical, rotate180, rotate270, rotate90};
    let cases: [(Rotation, Flip, image::RgbaImage); 7] = [
        (Rotation::Deg90, Flip::None, rotate90(&src)),
        (Rotation::Deg180, Flip::None, rotate180(&src)),
        (Rotation::Deg270, Flip::None, rotate270(&src)),
        (Rotation::None, Flip::Horizontal, flip_horizontal(&src)),
        (Rotation::None, Flip::Vertical, flip_vertical(&src)),
        (Rotation::None, Flip::Both, rotate180(&src)),
        // Rotation first, then the flip (of the rotated image).
        (
            Rotation::Deg90,
            Flip::Horizontal,
            flip_horizontal(&rotate90(&src)),
        ),
    ];
    for (rotate, flip, expected) in cases {
        let out = process(
            &input,
            &png(Options {
                rotate,
                flip,
                ..Options::default()
            }),
        );
        assert_eq!(rgba(&out.bytes), expected, "{rotate:?} {flip:?}");
    }
    // w/h are the final output's: 5x3 turned is 3x5, asked for 6 wide it is 6x10.
    let out = process(
        &input,
        &png(Options {
            rotate: Rotation::Deg90,
            width: Some(6),
            ..Options::default()
        }),
    );
    assert_eq!((out.width, out.height), (6, 10));
}

/// The shared EXIF orientation-6 photo turned 270 degrees more is its stored pixels, as an
/// independent decoder (which ignores EXIF) reads them.
#[test]
fn rotate_composes_with_the_exif_orientation() {
    let Some(photo) = common::photo("friends-orientation6.jpg") else {
        return;
    };
    let stored = common::decode_back(&photo).to_rgb8();
    let out = process(
        &photo,
        &png(Options {
            rotate: Rotation::Deg270,
            ..Options::default()
        }),
    );
    assert_eq!((out.width, out.height), stored.dimensions());
    let got = common::decode_back(&out.bytes).to_rgb8();
    let psnr = common::psnr(got.as_raw(), stored.as_raw());
    assert!(psnr > 35.0, "PSNR {psnr:.1} dB");
    // And turned 90 more, it is the stored pixels upside down.
    let out = process(
        &photo,
        &png(Options {
            rotate: Rotation::Deg90,
            ..Options::default()
        }),
    );
    let got = common::decode_back(&out.bytes).to_rgb8();
    let upside_down = image::imageops::rotate180(&stored);
    let psnr = common::psnr(got.as_raw(), upside_down.as_raw());
    assert!(psnr > 35.0, "PSNR {psnr:.1} dB");
}

// ------------------------------------------------------------------ pad, background

#[test]
fn pad_fills_the_bars_with_the_background() {
    let red = image::RgbaImage::from_pixel(200, 100, image::Rgba([255, 0, 0, 255]));
    let input = encode_png(&red);
    let pad = png(Options {
        width: Some(100),
        height: Some(100),
        fit: Fit::Pad,
        background: Some("00ff00".parse::<Rgba>().unwrap()),
        ..Options::default()
    });
    let img = rgba(&process(&input, &pad).bytes);
    assert_eq!(img.dimensions(), (100, 100));
    let green = image::Rgba([0, 255, 0, 255]);
    for x in [0, 50, 99] {
        assert_eq!(*img.get_pixel(x, 0), green);
        assert_eq!(*img.get_pixel(x, 24), green);
        assert_eq!(*img.get_pixel(x, 50), image::Rgba([255, 0, 0, 255]));
        assert_eq!(*img.get_pixel(x, 75), green);
        assert_eq!(*img.get_pixel(x, 99), green);
    }
    // At the top (gravity north) the bar is all below.
    let north = rgba(
        &process(
            &input,
            &Options {
                gravity: Gravity::North,
                ..pad
            },
        )
        .bytes,
    );
    assert_eq!(*north.get_pixel(50, 10), image::Rgba([255, 0, 0, 255]));
    assert_eq!(*north.get_pixel(50, 60), green);
    // Without a background the bars are transparent in PNG and white in JPEG.
    let clear = rgba(
        &process(
            &input,
            &Options {
                background: None,
                ..pad
            },
        )
        .bytes,
    );
    assert_eq!(clear.get_pixel(50, 5)[3], 0);
    let jpeg = process(
        &input,
        &Options {
            background: None,
            format: FormatRequest::Fixed(OutputFormat::Jpeg),
            ..pad
        },
    );
    let bar = common::decode_back(&jpeg.bytes).to_rgb8();
    assert!(bar.get_pixel(50, 5).0.iter().all(|&v| v > 245));
}

#[test]
fn background_flattens_transparency_for_any_fit() {
    // Left half transparent, right half opaque blue.
    let img = image::RgbaImage::from_fn(20, 10, |x, _| {
        if x < 10 {
            image::Rgba([0, 0, 0, 0])
        } else {
            image::Rgba([0, 0, 255, 255])
        }
    });
    let input = encode_png(&img);
    let out = process(
        &input,
        &png(Options {
            background: Some("ff8000".parse().unwrap()),
            ..Options::default()
        }),
    );
    let back = common::decode_back(&out.bytes);
    assert!(!back.color().has_alpha(), "flattened: no alpha left");
    let back = back.to_rgb8();
    assert_eq!(back.get_pixel(2, 5).0, [255, 128, 0]);
    assert_eq!(back.get_pixel(15, 5).0, [0, 0, 255]);
}

// ------------------------------------------------------------------ trim

/// A white 120x80 image with a dark 40x30 block at (30, 20) and one off-white pixel (245)
/// at (5, 5): trimmed within 10 it is the block alone; within 5 the pixel is content.
#[test]
fn trim_removes_a_border_within_the_threshold_and_not_beyond() {
    let mut img = image::RgbaImage::from_pixel(120, 80, image::Rgba([255, 255, 255, 255]));
    for y in 20..50 {
        for x in 30..70 {
            img.put_pixel(x, y, image::Rgba([20, 40, 60, 255]));
        }
    }
    img.put_pixel(5, 5, image::Rgba([245, 245, 245, 255]));
    let input = encode_png(&img);
    let trim = |t| {
        process(
            &input,
            &png(Options {
                trim: Some(t),
                ..Options::default()
            }),
        )
    };
    let out = trim(10);
    assert_eq!((out.width, out.height), (40, 30));
    assert!(rgba(&out.bytes)
        .pixels()
        .all(|p| *p == image::Rgba([20, 40, 60, 255])));
    let out = trim(5);
    assert_eq!((out.width, out.height), (65, 45));
    // Trim, then fit: the trimmed aspect ratio decides.
    let out = process(
        &input,
        &png(Options {
            trim: Some(10),
            width: Some(20),
            ..Options::default()
        }),
    );
    assert_eq!((out.width, out.height), (20, 15));
}

// ------------------------------------------------------------------ animation

fn two_frame_gif() -> Vec<u8> {
    let palette = [255, 0, 0, 0, 0, 255];
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, 40, 20, &palette).unwrap();
        enc.set_repeat(gif::Repeat::Infinite).unwrap();
        for colour in [0u8, 1] {
            let frame = gif::Frame {
                width: 40,
                height: 20,
                delay: 10,
                buffer: std::borrow::Cow::Owned(vec![colour; 800]),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).unwrap();
        }
    }
    out
}

#[test]
fn animations_turn_every_frame_and_refuse_what_needs_a_canvas() {
    let gif = two_frame_gif();
    let gif_out = Options {
        format: FormatRequest::Fixed(OutputFormat::Gif),
        ..Options::default()
    };
    let out = process(
        &gif,
        &Options {
            rotate: Rotation::Deg90,
            width: Some(10),
            ..gif_out
        },
    );
    assert_eq!((out.width, out.height), (10, 20));
    let mut decoder = gif::DecodeOptions::new()
        .read_info(std::io::Cursor::new(&out.bytes))
        .unwrap();
    let mut frames = 0;
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        assert_eq!((frame.width, frame.height), (10, 20));
        frames += 1;
    }
    assert_eq!(frames, 2);
    for (options, name) in [
        (
            Options {
                fit: Fit::Pad,
                width: Some(10),
                height: Some(10),
                ..gif_out
            },
            "fit=pad",
        ),
        (
            Options {
                trim: Some(3),
                ..gif_out
            },
            "trim",
        ),
        (
            Options {
                background: Some("ffffff".parse().unwrap()),
                ..gif_out
            },
            "background",
        ),
        (
            Options {
                padding: "2".parse().unwrap(),
                ..gif_out
            },
            "padding",
        ),
    ] {
        let message = refused(&gif, &options);
        assert!(message.contains(name), "{message}");
    }
    // A still output of the same animation takes them.
    let still = Options {
        fit: Fit::Pad,
        width: Some(10),
        height: Some(10),
        format: FormatRequest::Fixed(OutputFormat::Png),
        ..Options::default()
    };
    assert_eq!(process(&gif, &still).width, 10);
    // A window crop is geometry the plan carries: every frame gets it.
    let out = process(
        &gif,
        &Options {
            crop: Some(Crop::WindowPixels { w: 10, h: 20 }),
            gravity: Gravity::East,
            ..gif_out
        },
    );
    assert_eq!((out.width, out.height), (10, 20));
    assert_eq!(out.source_window.x, 30.0);
}

// ------------------------------------------------------------------ smart crop

/// A flat gray 400x200 PNG with a textured, coloured subject at x 280..360, y 60..140.
fn off_centre_subject() -> Vec<u8> {
    encode_png(&image::RgbaImage::from_fn(400, 200, |x, y| {
        if (280..360).contains(&x) && (60..140).contains(&y) {
            // A checkerboard in skin-ish and saturated colours: edges and colour.
            if (x / 4 + y / 4) % 2 == 0 {
                image::Rgba([220, 160, 120, 255])
            } else {
                image::Rgba([40, 90, 200, 255])
            }
        } else {
            image::Rgba([128, 128, 128, 255])
        }
    }))
}

/// Processes `off_centre_subject()` with `smart` (a `gravity=smart` request): its window
/// holds the subject's columns, where the centre gravity's (at `centre_x`) cuts them.
fn holds_the_subject(input: &[u8], smart: &Options, centre_x: f64) -> Output {
    let out = process(input, smart);
    let w = out.source_window;
    assert!(
        w.x <= 280.0 && w.x + w.width >= 360.0,
        "the window {w:?} holds the subject (x 280..360)"
    );
    let centre = Options {
        gravity: Gravity::Center,
        ..*smart
    };
    let x = process(input, &centre).source_window.x;
    assert_eq!(x, centre_x, "the centre window cuts it");
    assert!(x + w.width < 360.0 || x > 280.0);
    out
}

/// The off-centre subject: a square smart cover window keeps it; the centre would cut it.
#[test]
fn smart_crop_keeps_an_off_centre_subject() {
    let input = off_centre_subject();
    let smart = png(Options {
        width: Some(100),
        height: Some(100),
        fit: Fit::Cover,
        gravity: Gravity::Smart,
        ..Options::default()
    });
    let w = holds_the_subject(&input, &smart, 100.0).source_window;
    println!("smart window on the synthetic image: {w:?}");
    assert_eq!((w.width, w.height), (200.0, 200.0));
    // Within a manual crop the window stays inside the crop.
    let cropped = process(
        &input,
        &Options {
            crop: Some(Crop::Pixels {
                x: 0,
                y: 0,
                w: 300,
                h: 200,
            }),
            ..smart
        },
    );
    let w = cropped.source_window;
    assert!(w.x >= 0.0 && w.x + w.width <= 300.0 + 1e-9, "{w:?}");
    assert!(w.x + w.width >= 290.0, "{w:?} leans towards the subject");
}

/// `crop=w,h` with `gravity=smart`: the search places the window (any fit), and with a
/// cover crop after it, the final window, anywhere in the image.
#[test]
fn a_smart_crop_window_keeps_an_off_centre_subject() {
    let input = off_centre_subject();
    let window = png(Options {
        crop: Some(Crop::WindowPixels { w: 160, h: 200 }),
        gravity: Gravity::Smart,
        ..Options::default()
    });
    let out = holds_the_subject(&input, &window, 120.0);
    let w = out.source_window;
    assert_eq!(
        (w.width, w.height, out.width, out.height),
        (160.0, 200.0, 160, 200)
    );
    let cover = process(
        &input,
        &Options {
            crop: Some(Crop::WindowPixels { w: 300, h: 200 }),
            width: Some(50),
            height: Some(50),
            fit: Fit::Cover,
            ..window
        },
    );
    let w = cover.source_window;
    assert_eq!((w.width, w.height), (200.0, 200.0));
    assert!(w.x <= 280.0 && w.x + w.width >= 360.0, "{w:?}");
}

/// The shared photos, square windows chosen by the smart crop, printed for the record;
/// each lies inside its photo, and on the off-centre portrait (friends) it differs from
/// the centre window.
#[test]
fn smart_windows_of_the_shared_photos() {
    let Some(dir) = common::photos_dir() else {
        return;
    };
    let smart = Options {
        width: Some(200),
        height: Some(200),
        fit: Fit::Cover,
        gravity: Gravity::Smart,
        ..Options::default()
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jpg") && !n.contains("_by_"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        let out = process(&bytes, &smart);
        let centre = process(
            &bytes,
            &Options {
                gravity: Gravity::Center,
                ..smart
            },
        );
        let (w, c) = (out.source_window, centre.source_window);
        println!(
            "{name}: smart window x {:.0} y {:.0} side {:.0} (centre x {:.0} y {:.0})",
            w.x, w.y, w.width, c.x, c.y
        );
        assert_eq!((out.width, out.height), (200, 200));
        assert!((w.width - c.width).abs() < 1e-6 && (w.height - c.height).abs() < 1e-6);
        assert!(w.x >= 0.0 && w.y >= 0.0);
        if name == "friends-orientation6.jpg" || name == "friends-gray.jpg" {
            assert!(
                (w.x - c.x).abs() + (w.y - c.y).abs() > 20.0,
                "{name}: the smart window {w:?} moved from the centre {c:?}"
            );
        }
    }
}

// ------------------------------------------------------------------ blur, sharpen

/// Sum of squared differences between horizontal and vertical neighbours: the image's
/// high-frequency energy.
fn high_frequency(img: &image::RgbImage) -> f64 {
    let mut sum = 0.0;
    for y in 0..img.height() - 1 {
        for x in 0..img.width() - 1 {
            let p = img.get_pixel(x, y).0;
            for q in [img.get_pixel(x + 1, y).0, img.get_pixel(x, y + 1).0] {
                for c in 0..3 {
                    sum += (f64::from(p[c]) - f64::from(q[c])).powi(2);
                }
            }
        }
    }
    sum
}

#[test]
fn blur_lowers_and_sharpen_raises_the_high_frequencies() {
    let img = image::RgbaImage::from_fn(120, 90, |x, y| {
        let v = if (x / 6 + y / 6) % 2 == 0 { 60 } else { 190 };
        image::Rgba([v, (x * 2) as u8, (y * 2) as u8, 255])
    });
    let input = encode_png(&img);
    let base = png(Options {
        width: Some(100),
        ..Options::default()
    });
    let energy = |o: Options| {
        let out = process(&input, &o);
        assert_eq!((out.width, out.height), (100, 75));
        high_frequency(&common::decode_back(&out.bytes).to_rgb8())
    };
    let plain = energy(base);
    let blurred = energy(Options {
        blur: Some(dec("2")),
        ..base
    });
    let more = energy(Options {
        blur: Some(dec("6")),
        ..base
    });
    let sharpened = energy(Options {
        sharpen: Some("1".parse().unwrap()),
        ..base
    });
    println!("high-frequency energy: plain {plain:.0}, blur 2 {blurred:.0}, blur 6 {more:.0}, sharpen 1 {sharpened:.0}");
    assert!(blurred < plain * 0.7, "{blurred} vs {plain}");
    assert!(more < blurred, "{more} vs {blurred}");
    assert!(sharpened > plain * 1.1, "{sharpened} vs {plain}");
}

#[test]
fn filter_and_smart_options_are_validated_and_refused_on_animations() {
    let input = encode_png(&distinct(20, 20));
    for (options, name) in [
        (
            Options {
                blur: Some(dec("0.1")),
                ..Options::default()
            },
            "blur",
        ),
        (
            Options {
                blur: Some(dec("500")),
                ..Options::default()
            },
            "blur",
        ),
        (
            Options {
                sharpen: Some("0".parse().unwrap()),
                ..Options::default()
            },
            "sharpen",
        ),
        (
            Options {
                sharpen: Some("1:50".parse().unwrap()),
                ..Options::default()
            },
            "sharpen sigma",
        ),
    ] {
        let message = refused(&input, &options);
        assert!(message.contains(name), "{message}");
    }
    let gif = two_frame_gif();
    let gif_out = Options {
        format: FormatRequest::Fixed(OutputFormat::Gif),
        ..Options::default()
    };
    for (options, name) in [
        (
            Options {
                gravity: Gravity::Smart,
                fit: Fit::Cover,
                width: Some(10),
                height: Some(10),
                ..gif_out
            },
            "gravity=smart",
        ),
        (
            Options {
                blur: Some(dec("1")),
                ..gif_out
            },
            "blur",
        ),
        (
            Options {
                sharpen: Some("1".parse().unwrap()),
                ..gif_out
            },
            "sharpen",
        ),
    ] {
        let message = refused(&gif, &options);
        assert!(message.contains(name), "{message}");
    }
}
