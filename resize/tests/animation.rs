//! Animations kept animated: frames, timing, loop count and compositing survive a resize to
//! GIF or WebP; still formats take the first frame; the frame and pixel budgets refuse
//! what they bound; a stop check ends the job between frames.

mod common;

use std::borrow::Cow;
use std::io::Cursor;

use tessera_resize::{
    probe, Fit, FormatRequest, Limits, Options, OutputFormat, Pipeline, ResizeError,
};

const RED: [u8; 4] = [255, 0, 0, 255];
const GREEN: [u8; 4] = [0, 255, 0, 255];
const BLUE: [u8; 4] = [0, 0, 255, 255];

/// One frame of a test GIF: a rectangle of one colour (palette index) at a place.
struct Part {
    rect: (u16, u16, u16, u16),
    colour: u8,
    delay_cs: u16,
    dispose: gif::DisposalMethod,
}

/// A 64x48 GIF from `parts`, with a palette of red, green, blue and a transparent index 3.
fn gif_of(parts: &[Part], repeat: gif::Repeat) -> Vec<u8> {
    let palette = [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0];
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, 64, 48, &palette).unwrap();
        enc.set_repeat(repeat).unwrap();
        for p in parts {
            let (left, top, width, height) = p.rect;
            let frame = gif::Frame {
                left,
                top,
                width,
                height,
                delay: p.delay_cs,
                dispose: p.dispose,
                transparent: Some(3),
                buffer: Cow::Owned(vec![p.colour; usize::from(width) * usize::from(height)]),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).unwrap();
        }
    }
    out
}

/// Three whole-canvas frames: red 100 ms, green 50 ms, blue 200 ms, looping 3 times.
fn three_colours() -> Vec<u8> {
    let whole = |colour, delay_cs| Part {
        rect: (0, 0, 64, 48),
        colour,
        delay_cs,
        dispose: gif::DisposalMethod::Keep,
    };
    gif_of(
        &[whole(0, 10), whole(1, 5), whole(2, 20)],
        gif::Repeat::Finite(3),
    )
}

fn opts(width: u32, format: FormatRequest) -> Options {
    Options {
        width: Some(width),
        fit: Fit::Contain,
        format,
        ..Options::default()
    }
}

fn gif_out() -> FormatRequest {
    FormatRequest::Fixed(OutputFormat::Gif)
}

/// Decoded GIF: size, repeat, and per frame its delay and whole composited RGBA canvas.
struct Decoded {
    width: u32,
    height: u32,
    repeat: gif::Repeat,
    frames: Vec<(u16, Vec<u8>)>,
}

fn decode_gif(bytes: &[u8]) -> Decoded {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let mut dec = options.read_info(Cursor::new(bytes)).unwrap();
    let (w, h) = (u32::from(dec.width()), u32::from(dec.height()));
    let mut canvas = vec![0u8; (w * h * 4) as usize];
    let mut frames = Vec::new();
    while let Some(frame) = dec.read_next_frame().unwrap() {
        // Every frame Tessera writes is a whole canvas.
        assert_eq!((u32::from(frame.width), u32::from(frame.height)), (w, h));
        canvas.copy_from_slice(&frame.buffer);
        frames.push((frame.delay, canvas.clone()));
    }
    Decoded {
        width: w,
        height: h,
        repeat: dec.repeat(),
        frames,
    }
}

fn pixel(canvas: &[u8], width: u32, x: u32, y: u32) -> [u8; 4] {
    let at = ((y * width + x) * 4) as usize;
    canvas[at..at + 4].try_into().unwrap()
}

fn close(a: [u8; 4], b: [u8; 4]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 8)
}

#[test]
fn an_animated_gif_stays_an_animated_gif_with_its_timing_and_loops() {
    let out = Pipeline::new(Limits::default())
        .process(&three_colours(), &opts(32, gif_out()))
        .unwrap();
    assert_eq!(out.format, OutputFormat::Gif);
    assert_eq!((out.width, out.height), (32, 24));
    let gif = decode_gif(&out.bytes);
    assert_eq!((gif.width, gif.height), (32, 24));
    assert_eq!(gif.repeat, gif::Repeat::Finite(3));
    let delays: Vec<u16> = gif.frames.iter().map(|f| f.0).collect();
    assert_eq!(delays, [10, 5, 20]);
    for ((_, canvas), colour) in gif.frames.iter().zip([RED, GREEN, BLUE]) {
        for (x, y) in [(0, 0), (16, 12), (31, 23)] {
            let p = pixel(canvas, 32, x, y);
            assert!(close(p, colour), "({x},{y}) {p:?} vs {colour:?}");
        }
    }
}

#[test]
fn format_original_keeps_a_gif_a_gif_and_auto_keeps_it_moving() {
    let input = three_colours();
    let original = Pipeline::new(Limits::default())
        .process(&input, &opts(32, FormatRequest::Original))
        .unwrap();
    assert_eq!(original.format, OutputFormat::Gif);
    assert_eq!(decode_gif(&original.bytes).frames.len(), 3);
    // Without WebP in Accept, `auto` picks GIF over AVIF, JPEG or PNG: a still would lose
    // the animation.
    let auto = FormatRequest::Auto {
        webp: false,
        avif: true,
    };
    let out = Pipeline::new(Limits::default())
        .process(&input, &opts(32, auto))
        .unwrap();
    assert_eq!(out.format, OutputFormat::Gif);
    let auto = FormatRequest::Auto {
        webp: true,
        avif: true,
    };
    let out = Pipeline::new(Limits::default())
        .process(&input, &opts(32, auto))
        .unwrap();
    assert_eq!(out.format, OutputFormat::WebP);
    // A still format takes the first frame, as before.
    let out = Pipeline::new(Limits::default())
        .process(&input, &opts(32, FormatRequest::Fixed(OutputFormat::Png)))
        .unwrap();
    let png = image::load_from_memory(&out.bytes).unwrap().to_rgba8();
    assert!(close(png.get_pixel(16, 12).0, RED));
}

#[test]
fn an_animated_gif_becomes_an_animated_webp_and_back() {
    let out = Pipeline::new(Limits::default())
        .process(
            &three_colours(),
            &opts(32, FormatRequest::Fixed(OutputFormat::WebP)),
        )
        .unwrap();
    assert_eq!(out.format, OutputFormat::WebP);
    let mut dec = image_webp::WebPDecoder::new(Cursor::new(&out.bytes[..])).unwrap();
    assert!(dec.is_animated());
    assert_eq!(dec.num_frames(), 3);
    assert_eq!(dec.dimensions(), (32, 24));
    assert_eq!(
        dec.loop_count(),
        image_webp::LoopCount::Times(3.try_into().unwrap())
    );
    let mut buf = vec![0u8; dec.output_buffer_size().unwrap()];
    let channels = buf.len() / (32 * 24);
    let mut delays = Vec::new();
    for colour in [RED, GREEN, BLUE] {
        delays.push(dec.read_frame(&mut buf).unwrap());
        let p = &buf[(12 * 32 + 16) * channels..][..3];
        assert!(
            p.iter().zip(colour).all(|(a, b)| a.abs_diff(b) <= 24),
            "{p:?} vs {colour:?}"
        );
    }
    assert_eq!(delays, [100, 50, 200]);

    // WebP in, GIF out: the same frames and timing.
    let back = Pipeline::new(Limits::default())
        .process(&out.bytes, &opts(16, gif_out()))
        .unwrap();
    let gif = decode_gif(&back.bytes);
    assert_eq!((gif.width, gif.height), (16, 12));
    assert_eq!(gif.repeat, gif::Repeat::Finite(3));
    let delays: Vec<u16> = gif.frames.iter().map(|f| f.0).collect();
    assert_eq!(delays, [10, 5, 20]);
}

#[test]
fn gif_frames_are_composited_with_their_disposal_methods() {
    // 1: red everywhere (keep). 2: a blue 32x24 square at the top left, then cleared to
    // transparent (background). 3: a green 16x16 square at the bottom right (keep).
    // 4: a blue 16x16 square at the top right, restored afterwards (previous). 5: a green
    // 8x8 square at the bottom left (keep).
    let parts = [
        Part {
            rect: (0, 0, 64, 48),
            colour: 0,
            delay_cs: 10,
            dispose: gif::DisposalMethod::Keep,
        },
        Part {
            rect: (0, 0, 32, 24),
            colour: 2,
            delay_cs: 10,
            dispose: gif::DisposalMethod::Background,
        },
        Part {
            rect: (48, 32, 16, 16),
            colour: 1,
            delay_cs: 10,
            dispose: gif::DisposalMethod::Keep,
        },
        Part {
            rect: (40, 0, 16, 16),
            colour: 2,
            delay_cs: 10,
            dispose: gif::DisposalMethod::Previous,
        },
        Part {
            rect: (0, 40, 8, 8),
            colour: 1,
            delay_cs: 10,
            dispose: gif::DisposalMethod::Keep,
        },
    ];
    let input = gif_of(&parts, gif::Repeat::Infinite);
    // At the same size, so each pixel is exactly one input pixel (no resampling blur).
    let out = Pipeline::new(Limits::default())
        .process(&input, &opts(64, gif_out()))
        .unwrap();
    let gif = decode_gif(&out.bytes);
    assert_eq!(gif.repeat, gif::Repeat::Infinite);
    assert_eq!(gif.frames.len(), 5);
    let at = |frame: usize, x, y| pixel(&gif.frames[frame].1, 64, x, y);
    let clear = |p: [u8; 4]| p[3] == 0;
    // Frame 2: blue over red.
    assert!(close(at(1, 5, 5), BLUE) && close(at(1, 50, 40), RED));
    // Frame 3: the blue square was cleared to transparent; the green square drawn; red kept.
    assert!(clear(at(2, 5, 5)), "{:?}", at(2, 5, 5));
    assert!(close(at(2, 50, 40), GREEN) && close(at(2, 40, 5), RED));
    // Frame 4: blue square at (40,0); the rest as frame 3.
    assert!(close(at(3, 45, 5), BLUE) && clear(at(3, 5, 5)));
    // Frame 5: what was under frame 4 (red) is back; a green square at the bottom left.
    assert!(close(at(4, 45, 5), RED) && close(at(4, 4, 44), GREEN));
    assert!(clear(at(4, 5, 5)) && close(at(4, 50, 40), GREEN));
}

#[test]
fn the_photo_gif_keeps_its_frames() {
    let Some(bytes) = common::photo("friends-animated.gif") else {
        return;
    };
    let options = opts(160, FormatRequest::Original);
    let p = probe(&bytes, &options, &Limits::default()).unwrap();
    assert_eq!(
        (p.output_format, p.frames, p.output_frames),
        (OutputFormat::Gif, 6, 6)
    );
    let out = Pipeline::new(Limits::default())
        .process(&bytes, &options)
        .unwrap();
    let gif = decode_gif(&out.bytes);
    assert_eq!(gif.frames.len(), 6);
    assert_eq!((gif.width, gif.height), (p.output_width, p.output_height));
    // A still output is one frame, and the probe says so.
    let still = opts(160, FormatRequest::Fixed(OutputFormat::Jpeg));
    assert_eq!(
        probe(&bytes, &still, &Limits::default())
            .unwrap()
            .output_frames,
        1
    );
}

#[test]
fn the_animation_pixel_budget_refuses_before_decoding() {
    // 3 frames of 64x48 = 9 216 pixels.
    let limits = Limits {
        animation_pixels_max: 9_215,
        ..Limits::default()
    };
    let input = three_colours();
    let err = Pipeline::new(limits.clone())
        .process(&input, &opts(32, gif_out()))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ResizeError::AnimationTooLarge {
                frames: 3,
                pixels: 9_216,
                max: 9_215
            }
        ),
        "{err:?}"
    );
    assert!(matches!(
        probe(&input, &opts(32, gif_out()), &limits),
        Err(ResizeError::AnimationTooLarge { .. })
    ));
    // A still output decodes one frame and is not bound by it.
    assert!(Pipeline::new(limits)
        .process(&input, &opts(32, FormatRequest::Fixed(OutputFormat::Png)))
        .is_ok());
    // The frame count bound holds for animations too.
    let limits = Limits {
        frames_max: 2,
        ..Limits::default()
    };
    let err = Pipeline::new(limits)
        .process(&input, &opts(32, gif_out()))
        .unwrap_err();
    assert!(matches!(
        err,
        ResizeError::TooManyFrames { frames: 3, max: 2 }
    ));
}

#[test]
fn a_stop_check_ends_an_animation_between_frames() {
    let input = three_colours();
    for format in [gif_out(), FormatRequest::Fixed(OutputFormat::WebP)] {
        let calls = std::cell::Cell::new(0u32);
        // Let the header and the first frame through, then stop.
        let stop = || {
            calls.set(calls.get() + 1);
            calls.get() > 4
        };
        let err = Pipeline::new(Limits::default())
            .process_cancellable(&input, &opts(32, format), &stop)
            .unwrap_err();
        assert!(matches!(err, ResizeError::Cancelled), "{err:?}");
        assert!(calls.get() > 4);
    }
}

#[test]
fn a_still_image_can_be_asked_for_as_gif() {
    let img = image::RgbImage::from_fn(40, 30, |x, _| {
        if x < 20 {
            image::Rgb([255, 0, 0])
        } else {
            image::Rgb([0, 0, 255])
        }
    });
    let mut png = Vec::new();
    img.write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let out = Pipeline::new(Limits::default())
        .process(&png, &opts(20, gif_out()))
        .unwrap();
    assert_eq!(out.format, OutputFormat::Gif);
    let gif = decode_gif(&out.bytes);
    assert_eq!(gif.frames.len(), 1);
    assert_eq!((gif.width, gif.height), (20, 15));
    assert!(close(pixel(&gif.frames[0].1, 20, 2, 7), RED));
    assert!(close(pixel(&gif.frames[0].1, 20, 17, 7), BLUE));
}
