//! Tessera's geometry options (#17) end to end against libvips (pyvips) and Pillow: JPEG in,
//! JPEG q80 out, one core, same photos, same run.
//!
//! Run: `cargo bench -p tessera-resize --bench geometry` (option after `--`: `--seconds N`
//! per measurement, default 1). The process pins itself to CPU 0; every other program runs
//! under `taskset -c 0` with `VIPS_CONCURRENCY=1`.
//!
//! Operations, per photo (all JPEG q80 out):
//! 1. `fit` 400x400 (contain; the baseline of `versus_vips`);
//! 2. `crop` of the centre half (`crop=0.25,0.25,0.5,0.5`), then 400 wide;
//! 3. `rotate=90`, 400 wide (after the rotation);
//! 4. `flip=h`, fit 400x400;
//! 5. `fit=pad` 400x400, background 336699;
//! 6. `gravity=smart`, cover 300x300;
//! 7. `gravity=fp:0.3:0.3`, cover 300x300;
//! 8. `trim=10`, fit 400x400, on the photo padded with a uniform 128 px border (made once
//!    here with `image`: full decode, border added, JPEG q92; the border is MCU-aligned);
//! 9. `blur=3` and `sharpen=1` after a 400-wide resize;
//! 10. `watermark=0.5:southeast:10:10` after a 400x400 fit: a 120x40 RGBA logo (white
//!     stripes, alpha 255 and 96, made here as a PNG) blended at half opacity. Ours decodes
//!     the logo once (`Watermark::decode`, as the node's cache does); libvips loads it once
//!     and per image multiplies its alpha and `composite2`s it `over`; Pillow pastes it with
//!     its alpha halved as the mask.
//!
//! What each column includes, honestly:
//! - ours: `Pipeline::process` from the JPEG bytes in memory to the JPEG bytes, one reused
//!   pipeline (as a worker thread has); best of 3 means, each over a third of `--seconds`.
//! - libvips: `pyvips` (cffi over the system libvips, operation cache off) in one python
//!   process, timed inside python from the bytes in memory to `jpegsave_buffer(Q=80)`:
//!   `thumbnail_buffer` (shrink-on-load) then `rot90`/`fliphor`/`gravity` (pad)/`crop`
//!   (focus point, after a cover-sized thumbnail, as imgproxy does)/`gaussblur`/`sharpen`;
//!   `crop=` and `trim=` load with `new_from_buffer(shrink=s)` at the shrink-on-load factor
//!   Tessera uses (margin 2, the same rule as `vips thumbnail`), then `find_trim` (on a
//!   `copy_memory` of the decode, so it is decoded once), `crop`, `resize`. `smart` is `thumbnail_buffer(crop='attention')`. Best of 3 means.
//! - Pillow: `Image.open` + `draft` (shrink-on-load, same factor) + `thumbnail`/`resize(box=)`
//!   (LANCZOS) + `transpose`/`ImageOps.pad`/`filter`, `save(quality=80)` to memory, timed
//!   inside python (`/usr/bin/python3`); trim is `ImageChops.difference` to the corner colour,
//!   thresholded, `getbbox`. Pillow has no smart crop.
//! - vips CLI (secondary): one `vipsthumbnail` process per image, best of 5, for the two
//!   operations it can express (fit, smart); it mostly measures process start.
//! - PSNR: each decoded output against a float reference of the same geometry (for the
//!   watermark: the fit's reference with the logo blended in float): full
//!   resolution decode with `image`, the region (whole photo, crop, focus-point window or
//!   the known un-padded interior) resized with f32 Lanczos3 to the output's size, then
//!   turned/mirrored/padded exactly, or blurred (f64 Gaussian, radius 4·sigma, edges
//!   clamped) or unsharp-masked (amount 1, sigma 1, Tessera's and Pillow's definition) in
//!   float, rounded once. Pad: the better of the two centred placements (rounding of the
//!   offset). Smart crop has no reference. `vips sharpen` is another operator (L* in CIELAB,
//!   non-linear), so no PSNR is given for it. An output whose size differs from the
//!   reference's gets none either (printed as a note).
//!
//! Each side is skipped with a message when its program or module is missing.

#[path = "../tests/common/mod.rs"]
mod common;
mod harness;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;

use harness::{flat_json, pin_to_cpu0, program_best_ms, run_python, time_ms};

use fast_image_resize as fir;
use tessera_resize::{
    Crop, Decimal, Fit, Flip, Gravity, Limits, Options, Pipeline, Rgba, Rotation, Sharpen,
};

const PHOTOS: [&str; 3] = ["seeding-256k.jpg", "aitzgorri-256k.jpg", "aitzgorri-1m.jpg"];
/// Border added around the photo for `trim` (a multiple of 16: whole MCUs).
const BORDER: u32 = 128;
const BORDER_RGB: [u8; 3] = [236, 236, 230];
const PAD_RGB: [u8; 3] = [0x33, 0x66, 0x99];
const TRIM: u8 = 10;
const FP: (f64, f64) = (0.3, 0.3);

/// The python side: `lib` is `pil` or `vips`; prints one flat JSON object of op → ms.
const PY: &str = r#"
import sys, time, json, io, math
lib, src, padded, outdir, secs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
BG = (0x33, 0x66, 0x99); FP = (0.3, 0.3); TRIM = 10; BIG = 100000
src_buf = open(src, 'rb').read(); pad_buf = open(padded, 'rb').read()
LOGO = outdir + '/logo.png'; MARGIN = 10
def rnd(v): return int(math.floor(v + 0.5))
def shrink_for(cw, ch, ow, oh):
    # Tessera's and vips thumbnail's rule: keep at least 2 decoded pixels per output pixel.
    for s in (8, 4, 2):
        if cw / s >= 2 * ow and ch / s >= 2 * oh: return s
    return 1
def fit_size(w, h, bw, bh):
    if bw / w <= bh / h: return bw, max(1, rnd(h * bw / w))
    return max(1, rnd(w * bh / h)), bh
def fp_box(W, H, side):
    s = max(side / W, side / H); cw = min(side / s, W); ch = min(side / s, H)
    return (min(max(FP[0] * W - cw / 2, 0), W - cw), min(max(FP[1] * H - ch / 2, 0), H - ch), cw, ch)
def crop_box(W, H): return (W / 4, H / 4, W / 2, H / 2)
res = {}
if lib == 'pil':
    from PIL import Image, ImageOps, ImageFilter, ImageChops
    L = Image.Resampling.LANCZOS
    LUT = ([0] * (TRIM + 1) + [255] * (255 - TRIM)) * 3
    def save(im):
        out = io.BytesIO(); im.save(out, 'JPEG', quality=80); return out.getvalue()
    def thumb(buf, size):
        im = Image.open(io.BytesIO(buf)); im.thumbnail(size, L); return im
    def region(buf, boxf, sizef):
        im = Image.open(io.BytesIO(buf)); W, H = im.size
        x, y, w, h = boxf(W, H); ow, oh = sizef(w, h)
        s = shrink_for(w, h, ow, oh)
        im.draft('RGB', (W // s, H // s))
        kx, ky = im.size[0] / W, im.size[1] / H
        return save(im.resize((ow, oh), L, box=(x * kx, y * ky, (x + w) * kx, (y + h) * ky)))
    def trim():
        im = Image.open(io.BytesIO(pad_buf)); W, H = im.size
        ow, oh = fit_size(W, H, 400, 400); s = shrink_for(W, H, ow, oh)
        im.draft('RGB', (W // s, H // s)); im.load()
        corner = im.getpixel((0, 0))
        bbox = ImageChops.difference(im, Image.new('RGB', im.size, corner)).point(LUT).getbbox()
        kx, ky = W / im.size[0], H / im.size[1]
        ow, oh = fit_size((bbox[2] - bbox[0]) * kx, (bbox[3] - bbox[1]) * ky, 400, 400)
        return save(im.resize((ow, oh), L, box=bbox))
    ops = {
        'fit': lambda: save(thumb(src_buf, (400, 400))),
        'crop': lambda: region(src_buf, crop_box, lambda w, h: (400, max(1, rnd(h * 400 / w)))),
        'rotate': lambda: save(thumb(src_buf, (BIG, 400)).transpose(Image.Transpose.ROTATE_270)),
        'flip': lambda: save(thumb(src_buf, (400, 400)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
        'pad': lambda: save(ImageOps.pad(thumb(src_buf, (400, 400)), (400, 400), L, color=BG)),
        'fp': lambda: region(src_buf, lambda W, H: fp_box(W, H, 300), lambda w, h: (300, 300)),
        'trim': trim,
        'blur': lambda: save(thumb(src_buf, (400, BIG)).filter(ImageFilter.GaussianBlur(3))),
        'sharpen': lambda: save(thumb(src_buf, (400, BIG)).filter(ImageFilter.UnsharpMask(1, 100, 0))),
    }
    logo = Image.open(LOGO); logo.load()
    def watermark():
        im = thumb(src_buf, (400, 400))
        mask = logo.getchannel('A').point(lambda v: (v + 1) // 2)
        im.paste(logo.convert('RGB'), (im.width - MARGIN - logo.width, im.height - MARGIN - logo.height), mask)
        return save(im)
    ops['watermark'] = watermark
else:
    import pyvips
    pyvips.cache_set_max(0)
    def save(im): return im.jpegsave_buffer(Q=80)
    def thumb(buf, w, h, **kw): return pyvips.Image.thumbnail_buffer(buf, w, height=h, **kw)
    def region(buf, boxf, sizef):
        hd = pyvips.Image.new_from_buffer(buf, '', access='sequential'); W, H = hd.width, hd.height
        x, y, w, h = boxf(W, H); ow, oh = sizef(w, h)
        im = pyvips.Image.new_from_buffer(buf, '', access='sequential', shrink=shrink_for(w, h, ow, oh))
        kx, ky = im.width / W, im.height / H
        l, t = rnd(x * kx), rnd(y * ky)
        cw, ch = min(rnd(w * kx), im.width - l), min(rnd(h * ky), im.height - t)
        return save(im.crop(l, t, cw, ch).resize(ow / cw, vscale=oh / ch))
    def fp():
        hd = pyvips.Image.new_from_buffer(src_buf, '')
        t = thumb(src_buf, BIG, 300) if hd.width >= hd.height else thumb(src_buf, 300, BIG)
        l = min(max(rnd(FP[0] * t.width - 150), 0), t.width - 300)
        u = min(max(rnd(FP[1] * t.height - 150), 0), t.height - 300)
        return save(t.crop(l, u, 300, 300))
    def trim():
        hd = pyvips.Image.new_from_buffer(pad_buf, ''); W, H = hd.width, hd.height
        ow, oh = fit_size(W, H, 400, 400)
        # Decoded once into memory: getpoint, find_trim and crop each read it.
        im = pyvips.Image.new_from_buffer(pad_buf, '', shrink=shrink_for(W, H, ow, oh)).copy_memory()
        l, t, w, h = im.find_trim(threshold=TRIM, background=im.getpoint(0, 0))
        ow, oh = fit_size(w * W / im.width, h * H / im.height, 400, 400)
        return save(im.crop(l, t, w, h).resize(ow / w, vscale=oh / h))
    ops = {
        'fit': lambda: save(thumb(src_buf, 400, 400)),
        'crop': lambda: region(src_buf, crop_box, lambda w, h: (400, max(1, rnd(h * 400 / w)))),
        'rotate': lambda: save(thumb(src_buf, BIG, 400).rot90()),
        'flip': lambda: save(thumb(src_buf, 400, 400).fliphor()),
        'pad': lambda: save(thumb(src_buf, 400, 400).gravity('centre', 400, 400, extend='background', background=list(BG))),
        'smart': lambda: save(thumb(src_buf, 300, 300, crop='attention')),
        'fp': fp,
        'trim': trim,
        'blur': lambda: save(thumb(src_buf, 400, BIG).gaussblur(3)),
        'sharpen': lambda: save(thumb(src_buf, 400, BIG).sharpen(sigma=1)),
    }
    logo = pyvips.Image.new_from_file(LOGO).copy_memory()
    def watermark():
        t = thumb(src_buf, 400, 400)
        mark = logo * [1, 1, 1, 0.5]
        out = t.composite2(mark, 'over', x=t.width - MARGIN - logo.width, y=t.height - MARGIN - logo.height)
        return save(out.extract_band(0, n=3).cast('uchar'))
    ops['watermark'] = watermark
for name, f in ops.items():
    res[name] = bench(f)
    open('%s/%s_%s.jpg' % (outdir, lib, name), 'wb').write(f())
print(json.dumps(res))
"#;

fn python(python: &str, lib: &str, files: [&Path; 3], seconds: f64) -> HashMap<String, f64> {
    let seconds = seconds.to_string();
    let args = std::iter::once(OsStr::new(lib))
        .chain(files.map(Path::as_os_str))
        .chain([OsStr::new(&seconds)]);
    run_python(python, PY, args, lib)
        .map(|text| flat_json(&text))
        .unwrap_or_default()
}

/// An RGB image in f32 (the float reference's working form).
struct Float {
    w: u32,
    h: u32,
    px: Vec<f32>,
}

impl Float {
    fn of(w: u32, h: u32, px: &[u8]) -> Float {
        Float {
            w,
            h,
            px: px.iter().map(|&v| f32::from(v)).collect(),
        }
    }

    /// The region `(x, y, w, h)` (fractional source pixels) resized to `ow` x `oh`, f32
    /// Lanczos3.
    fn resized(&self, region: (f64, f64, f64, f64), ow: u32, oh: u32) -> Float {
        let bytes: Vec<u8> = self.px.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let src =
            fir::images::Image::from_vec_u8(self.w, self.h, bytes, fir::PixelType::F32x3).unwrap();
        let mut dst = fir::images::Image::new(ow, oh, fir::PixelType::F32x3);
        fir::Resizer::new()
            .resize(
                &src,
                &mut dst,
                &fir::ResizeOptions::new()
                    .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Lanczos3))
                    .crop(region.0, region.1, region.2, region.3),
            )
            .unwrap();
        let px = dst
            .buffer()
            .chunks_exact(4)
            .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Float { w: ow, h: oh, px }
    }

    /// Separable Gaussian in f64, radius 4·sigma, edges clamped.
    fn blurred(&self, sigma: f64) -> Float {
        let (w, h) = (self.w as usize, self.h as usize);
        let r = (4.0 * sigma).ceil() as isize;
        let k: Vec<f64> = (-r..=r)
            .map(|i| (-(i * i) as f64 / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f64 = k.iter().sum();
        let k: Vec<f64> = k.iter().map(|v| v / total).collect();
        let mut tmp = vec![0.0f64; self.px.len()];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let mut s = 0.0;
                    for (j, &kv) in k.iter().enumerate() {
                        let xx = (x as isize + j as isize - r).clamp(0, w as isize - 1) as usize;
                        s += kv * f64::from(self.px[(y * w + xx) * 3 + c]);
                    }
                    tmp[(y * w + x) * 3 + c] = s;
                }
            }
        }
        let mut px = vec![0.0f32; self.px.len()];
        for y in 0..h {
            for (i, o) in px[y * w * 3..(y + 1) * w * 3].iter_mut().enumerate() {
                let mut s = 0.0;
                for (j, &kv) in k.iter().enumerate() {
                    let yy = (y as isize + j as isize - r).clamp(0, h as isize - 1) as usize;
                    s += kv * tmp[yy * w * 3 + i];
                }
                *o = s as f32;
            }
        }
        Float {
            w: self.w,
            h: self.h,
            px,
        }
    }

    /// `in + amount·(in − blur_sigma(in))`.
    fn sharpened(&self, amount: f64, sigma: f64) -> Float {
        let blurred = self.blurred(sigma);
        let px = self
            .px
            .iter()
            .zip(&blurred.px)
            .map(|(&v, &b)| (f64::from(v) + amount * (f64::from(v) - f64::from(b))) as f32)
            .collect();
        Float {
            w: self.w,
            h: self.h,
            px,
        }
    }

    fn rounded(&self) -> Rgb {
        Rgb {
            w: self.w,
            h: self.h,
            px: self
                .px
                .iter()
                .map(|v| v.round().clamp(0.0, 255.0) as u8)
                .collect(),
        }
    }
}

/// An 8-bit RGB image.
#[derive(Clone)]
struct Rgb {
    w: u32,
    h: u32,
    px: Vec<u8>,
}

impl Rgb {
    /// The logo blended "over" in float at `opacity`, `MARGIN` px from the bottom-right,
    /// rounded once.
    fn watermarked(&self, opacity: f64) -> Rgb {
        let logo = logo_rgba();
        let (x0, y0) = (self.w - MARGIN - LOGO_W, self.h - MARGIN - LOGO_H);
        let mut px = self.px.clone();
        for y in 0..LOGO_H {
            for x in 0..LOGO_W {
                let l = ((y * LOGO_W + x) * 4) as usize;
                let a = f64::from(logo[l + 3]) / 255.0 * opacity;
                let d = (((y0 + y) * self.w + x0 + x) * 3) as usize;
                for c in 0..3 {
                    let v = f64::from(logo[l + c]) * a + f64::from(px[d + c]) * (1.0 - a);
                    px[d + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Rgb {
            w: self.w,
            h: self.h,
            px,
        }
    }

    /// Turned 90° clockwise.
    fn rot90(&self) -> Rgb {
        let (w, h) = (self.w as usize, self.h as usize);
        let mut px = vec![0u8; self.px.len()];
        for y in 0..h {
            for x in 0..w {
                let (nx, ny) = (h - 1 - y, x);
                let (o, i) = ((ny * h + nx) * 3, (y * w + x) * 3);
                px[o..o + 3].copy_from_slice(&self.px[i..i + 3]);
            }
        }
        Rgb {
            w: self.h,
            h: self.w,
            px,
        }
    }

    /// Mirrored left to right.
    fn flipped(&self) -> Rgb {
        let w = self.w as usize;
        let mut px = self.px.clone();
        for row in px.chunks_exact_mut(w * 3) {
            for x in 0..w / 2 {
                for c in 0..3 {
                    row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
                }
            }
        }
        Rgb { px, ..*self }
    }

    /// Placed at `(dx, dy)` on a `cw` x `ch` canvas of `bg`.
    fn padded(&self, cw: u32, ch: u32, dx: u32, dy: u32, bg: [u8; 3]) -> Rgb {
        let mut px: Vec<u8> = bg
            .iter()
            .copied()
            .cycle()
            .take(cw as usize * ch as usize * 3)
            .collect();
        let row = self.w as usize * 3;
        for (y, src) in self.px.chunks_exact(row).enumerate() {
            let at = ((y + dy as usize) * cw as usize + dx as usize) * 3;
            px[at..at + row].copy_from_slice(src);
        }
        Rgb { w: cw, h: ch, px }
    }
}

fn round_side(v: f64) -> u32 {
    (v.round() as u32).max(1)
}

/// Contain in `bw` x `bh`: the binding side gets exactly its length (as Tessera's plan).
fn fit_size(w: f64, h: f64, bw: u32, bh: u32) -> (u32, u32) {
    let (bwf, bhf) = (f64::from(bw), f64::from(bh));
    if bwf / w <= bhf / h {
        (bw, round_side(h * bwf / w))
    } else {
        (round_side(w * bhf / h), bh)
    }
}

/// One operation: its row name, the python key, Tessera's options, and whether its input is
/// the photo with a border (for `trim`).
struct Op {
    name: &'static str,
    key: &'static str,
    options: Options,
    padded_input: bool,
}

/// The logo of the `watermark` op: `LOGO_W` x `LOGO_H` RGBA, white vertical stripes 8 px
/// wide, alternately opaque and at alpha 96, drawn `MARGIN` px from the bottom-right.
const LOGO_W: u32 = 120;
const LOGO_H: u32 = 40;
const MARGIN: u32 = 10;

fn logo_rgba() -> Vec<u8> {
    (0..LOGO_H)
        .flat_map(|_| (0..LOGO_W).map(|x| if (x / 8) % 2 == 0 { 255u8 } else { 96 }))
        .flat_map(|a| [255, 255, 255, a])
        .collect()
}

fn logo_png() -> Vec<u8> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            &logo_rgba(),
            LOGO_W,
            LOGO_H,
            image::ExtendedColorType::Rgba8,
        )
        .unwrap();
    out
}

fn ops() -> Vec<Op> {
    let base = Options {
        quality: 80,
        ..Options::default()
    };
    let w400 = Options {
        width: Some(400),
        ..base
    };
    let box400 = Options {
        width: Some(400),
        height: Some(400),
        fit: Fit::Contain,
        ..base
    };
    let cover300 = Options {
        width: Some(300),
        height: Some(300),
        fit: Fit::Cover,
        ..base
    };
    let quarter = Decimal::from_millionths(250_000);
    let half = Decimal::from_millionths(500_000);
    let fp = Decimal::from_millionths(300_000);
    let op = |name, key, options| Op {
        name,
        key,
        options,
        padded_input: false,
    };
    vec![
        op("fit 400x400 (baseline)", "fit", box400),
        op(
            "crop centre half, w400",
            "crop",
            Options {
                crop: Some(Crop::Fractions {
                    x: quarter,
                    y: quarter,
                    w: half,
                    h: half,
                }),
                ..w400
            },
        ),
        op(
            "rotate=90, w400",
            "rotate",
            Options {
                rotate: Rotation::Deg90,
                ..w400
            },
        ),
        op(
            "flip=h, fit 400x400",
            "flip",
            Options {
                flip: Flip::Horizontal,
                ..box400
            },
        ),
        op(
            "fit=pad 400x400 bg",
            "pad",
            Options {
                fit: Fit::Pad,
                background: Some(Rgba([PAD_RGB[0], PAD_RGB[1], PAD_RGB[2], 255])),
                ..box400
            },
        ),
        op(
            "gravity=smart 300x300",
            "smart",
            Options {
                gravity: Gravity::Smart,
                ..cover300
            },
        ),
        op(
            "gravity=fp:0.3:0.3 300x300",
            "fp",
            Options {
                gravity: Gravity::FocusPoint { x: fp, y: fp },
                ..cover300
            },
        ),
        Op {
            name: "trim=10 (border), fit 400",
            key: "trim",
            options: Options {
                trim: Some(TRIM),
                ..box400
            },
            padded_input: true,
        },
        op(
            "w400 + blur=3",
            "blur",
            Options {
                blur: Some(Decimal::whole(3)),
                ..w400
            },
        ),
        op(
            "w400 + sharpen=1",
            "sharpen",
            Options {
                sharpen: Some(Sharpen {
                    amount: Decimal::ONE,
                    sigma: Sharpen::SIGMA_DEFAULT,
                }),
                ..w400
            },
        ),
        op(
            "fit 400 + watermark 0.5 se",
            "watermark",
            Options {
                watermark: Some(tessera_resize::WatermarkOptions {
                    opacity: half,
                    position: tessera_resize::WatermarkPosition::At(Gravity::SouthEast),
                    x_px: MARGIN,
                    y_px: MARGIN,
                    scale: None,
                }),
                ..box400
            },
        ),
    ]
}

/// The float references of `key` on `src` (the photo) or `padded` (with its border).
fn references(key: &str, src: &Float, padded: &Float) -> Vec<Rgb> {
    let (w, h) = (f64::from(src.w), f64::from(src.h));
    let whole = (0.0, 0.0, w, h);
    let (fw, fh) = fit_size(w, h, 400, 400);
    let w400 = (400, round_side(h * 400.0 / w));
    match key {
        "fit" => vec![src.resized(whole, fw, fh).rounded()],
        "flip" => vec![src.resized(whole, fw, fh).rounded().flipped()],
        "crop" => {
            let region = (w / 4.0, h / 4.0, w / 2.0, h / 2.0);
            vec![src
                .resized(region, 400, round_side(h / 2.0 * 400.0 / (w / 2.0)))
                .rounded()]
        }
        // 400 wide after the turn: 400 high before it.
        "rotate" => vec![src
            .resized(whole, round_side(w * 400.0 / h), 400)
            .rounded()
            .rot90()],
        "pad" => {
            let content = src.resized(whole, fw, fh).rounded();
            let (ex, ey) = (400 - fw, 400 - fh);
            let mut out = Vec::new();
            for dx in [ex / 2, ex.div_ceil(2)] {
                for dy in [ey / 2, ey.div_ceil(2)] {
                    out.push(content.padded(400, 400, dx, dy, PAD_RGB));
                }
            }
            out
        }
        "fp" => {
            let s = (300.0 / w).max(300.0 / h);
            let (cw, ch) = ((300.0 / s).min(w), (300.0 / s).min(h));
            let x = (FP.0 * w - cw / 2.0).clamp(0.0, w - cw);
            let y = (FP.1 * h - ch / 2.0).clamp(0.0, h - ch);
            vec![src.resized((x, y, cw, ch), 300, 300).rounded()]
        }
        "trim" => {
            let b = f64::from(BORDER);
            let (iw, ih) = (f64::from(padded.w) - 2.0 * b, f64::from(padded.h) - 2.0 * b);
            let (ow, oh) = fit_size(iw, ih, 400, 400);
            vec![padded.resized((b, b, iw, ih), ow, oh).rounded()]
        }
        "blur" => vec![src.resized(whole, w400.0, w400.1).blurred(3.0).rounded()],
        "sharpen" => vec![src
            .resized(whole, w400.0, w400.1)
            .sharpened(1.0, 1.0)
            .rounded()],
        "watermark" => vec![src.resized(whole, fw, fh).rounded().watermarked(0.5)],
        _ => Vec::new(),
    }
}

/// PSNR of the JPEG at `path` (or in `bytes`) against the best-matching reference; a note
/// when no reference has its size.
fn psnr(bytes: Option<&[u8]>, refs: &[Rgb], who: &str, notes: &mut Vec<String>) -> Option<f64> {
    let bytes = bytes?;
    if refs.is_empty() {
        return None;
    }
    let (w, h, px) = common::decode_rgb8(bytes);
    let best = refs
        .iter()
        .filter(|r| (r.w, r.h) == (w, h))
        .map(|r| common::psnr(&px, &r.px))
        .fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))));
    if best.is_none() {
        notes.push(format!(
            "{who} output is {w}x{h}, the reference {}x{}: no PSNR",
            refs[0].w, refs[0].h
        ));
    }
    best
}

/// The photo with a uniform `BORDER` on every side, as a JPEG q92 (made with `image`).
fn padded_jpeg(w: u32, h: u32, px: &[u8]) -> Vec<u8> {
    let (pw, ph) = (w + 2 * BORDER, h + 2 * BORDER);
    let src = Rgb {
        w,
        h,
        px: px.to_vec(),
    };
    let canvas = src.padded(pw, ph, BORDER, BORDER, BORDER_RGB);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92)
        .encode(&canvas.px, pw, ph, image::ExtendedColorType::Rgb8)
        .unwrap();
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(1.0);
    let Some(dir) = common::photos_dir() else {
        return;
    };
    if pin_to_cpu0() {
        println!("pinned to CPU 0 (sched_setaffinity)");
    } else {
        println!("WARNING: could not pin to CPU 0; numbers are not per core");
    }
    let has_cli = Path::new("/usr/bin/vipsthumbnail").exists();
    if !has_cli {
        println!("SKIP vips CLI: /usr/bin/vipsthumbnail is not installed (apt-get install libvips-tools)");
    }
    let tmp = std::env::temp_dir().join(format!("tessera-geometry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let ops = ops();
    let mut pipeline = Pipeline::new(Limits::default());
    let logo = logo_png();
    std::fs::write(tmp.join("logo.png"), &logo).unwrap();
    let mark = tessera_resize::Watermark::decode(&logo).unwrap();

    for name in PHOTOS {
        let Some(bytes) = common::photo(name) else {
            continue;
        };
        let photo = dir.join(name);
        let (sw, sh, src_px) = common::decode_rgb8(&bytes);
        let padded = padded_jpeg(sw, sh, &src_px);
        let padded_path = tmp.join("padded.jpg");
        std::fs::write(&padded_path, &padded).unwrap();
        let src = Float::of(sw, sh, &src_px);
        let (pw, ph, pad_px) = common::decode_rgb8(&padded);
        let pad_src = Float::of(pw, ph, &pad_px);
        drop((src_px, pad_px));

        let files = [photo.as_path(), padded_path.as_path(), tmp.as_path()];
        let pil = python("/usr/bin/python3", "pil", files, seconds);
        if pil.is_empty() {
            println!("SKIP Pillow: /usr/bin/python3 -c 'import PIL' failed (apt-get install python3-pil)");
        }
        let vips = python("python3", "vips", files, seconds);
        if vips.is_empty() {
            println!(
                "SKIP vips in process: python3 -c 'import pyvips' failed (pip install pyvips)"
            );
        }
        let out = |v: &str| tmp.join(v).display().to_string();
        let photo_s = photo.display().to_string();
        let cli = |size: &str, extra: &[&str], o: &str| -> Option<f64> {
            has_cli.then_some(())?;
            let mut a = vec![photo_s.clone(), "-s".to_owned(), size.to_owned()];
            a.extend(extra.iter().map(|s| (*s).to_owned()));
            a.extend(["-o".to_owned(), format!("{}[Q=80]", out(o))]);
            program_best_ms("vipsthumbnail", &a)
        };
        let cli_ms: HashMap<&str, Option<f64>> = [
            ("fit", cli("400x400", &[], "cli_fit.jpg")),
            (
                "smart",
                cli("300x300", &["--smartcrop", "attention"], "cli_smart.jpg"),
            ),
        ]
        .into_iter()
        .collect();

        println!(
            "\n{name} ({sw}x{sh}; trim input {pw}x{ph}, {} KB), JPEG q80 out, ms per image",
            padded.len() / 1024
        );
        println!(
            "{:<28} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6}   {:>6} {:>6} {:>6}",
            "op",
            "ours",
            "libvips",
            "Pillow",
            "vipsCLI",
            "ratio",
            "PSNR",
            "vips",
            "PIL",
            "dec",
            "resize",
            "enc"
        );
        let fmt = |v: Option<f64>, p: usize| v.map_or("-".to_owned(), |v| format!("{v:.p$}"));
        let mut notes = Vec::new();
        for op in &ops {
            let input: &[u8] = if op.padded_input { &padded } else { &bytes };
            let ours = time_ms(seconds, || {
                pipeline
                    .process_marked(input, &op.options, Some(&mark), &|| false)
                    .unwrap();
            });
            // Stage split (wall), mean of a few calls outside the timed loop.
            let mut stages = [0u64; 3];
            let mut output = None;
            for _ in 0..8 {
                let o = pipeline
                    .process_marked(input, &op.options, Some(&mark), &|| false)
                    .unwrap();
                stages[0] += o.timings.decode_us;
                stages[1] += o.timings.resize_us;
                stages[2] += o.timings.encode_us;
                output = Some(o);
            }
            let output = output.unwrap();
            let stages = stages.map(|s| s as f64 / 8.0 / 1000.0);
            let refs = references(op.key, &src, &pad_src);
            let read = |lib: &str| std::fs::read(tmp.join(format!("{lib}_{}.jpg", op.key))).ok();
            let (vips_out, pil_out) = (
                read("vips").filter(|_| vips.contains_key(op.key)),
                read("pil").filter(|_| pil.contains_key(op.key)),
            );
            let p_ours = psnr(Some(&output.bytes), &refs, "ours", &mut notes);
            let p_vips = if op.key == "sharpen" {
                None
            } else {
                psnr(vips_out.as_deref(), &refs, "libvips", &mut notes)
            };
            let p_pil = psnr(pil_out.as_deref(), &refs, "Pillow", &mut notes);
            let v = vips.get(op.key).copied();
            println!(
                "{:<28} {:>8.2} {:>8} {:>8} {:>8} {:>6} {:>6} {:>6} {:>6}   {:>6.2} {:>6.2} {:>6.2}",
                op.name,
                ours,
                fmt(v, 2),
                fmt(pil.get(op.key).copied(), 2),
                fmt(cli_ms.get(op.key).copied().flatten(), 1),
                fmt(v.map(|v| v / ours), 2),
                fmt(p_ours, 2),
                fmt(p_vips, 2),
                fmt(p_pil, 2),
                stages[0],
                stages[1],
                stages[2],
            );
            for n in notes.drain(..) {
                println!("    note ({}): {n}", op.key);
            }
            if matches!(op.key, "smart" | "fp" | "trim") {
                let wdw = output.source_window;
                println!(
                    "    ours: window {:.0},{:.0} {:.0}x{:.0} of the source, output {}x{}",
                    wdw.x, wdw.y, wdw.width, wdw.height, output.width, output.height
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
