//! Generators of hostile and broken inputs for the tests (no binary test files are
//! committed): PNGs with chosen chunks, deflate bombs, JPEGs with inserted segments or cut
//! short, WebPs in a VP8X container with metadata chunks, GIFs with extension floods.
//! Valid images to start from are encoded here, or by the pipeline itself.

#![allow(dead_code)]

use std::io::Write;

use tessera_resize::{FormatRequest, Limits, Options, OutputFormat, Pipeline};

/// A smooth RGB test image, `w` x `h`, row-major.
pub fn gradient(w: u32, h: u32) -> Vec<u8> {
    let mut px = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h {
        for x in 0..w {
            px.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    px
}

/// zlib of `data` (default level).
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zlib of `n` zero bytes, compressed in a stream (never held inflated): ~1 MB per GiB.
pub fn zlib_zeros(n: u64) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let k = left.min(block.len() as u64) as usize;
        e.write_all(&block[..k]).unwrap();
        left -= k as u64;
    }
    e.finish().unwrap()
}

/// One PNG chunk with its CRC.
pub fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 12);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out
}

/// The IHDR of an 8-bit RGB, non-interlaced PNG.
pub fn ihdr(w: u32, h: u32) -> Vec<u8> {
    ihdr_of(w, h, 2, false)
}

/// The IHDR of an 8-bit PNG of colour type `color` (2 RGB, 6 RGBA), Adam7 if `adam7`.
pub fn ihdr_of(w: u32, h: u32, color: u8, adam7: bool) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&w.to_be_bytes());
    d.extend_from_slice(&h.to_be_bytes());
    d.extend_from_slice(&[8, color, 0, 0, u8::from(adam7)]);
    chunk(b"IHDR", &d)
}

/// The zlib stream of an RGB image's rows (filter 0 each).
pub fn png_idat_data(w: u32, h: u32) -> Vec<u8> {
    let px = gradient(w, h);
    let mut raw = Vec::new();
    for row in px.chunks(w as usize * 3) {
        raw.push(0);
        raw.extend_from_slice(row);
    }
    zlib(&raw)
}

/// A valid 8-bit RGB PNG of [`gradient`] stored with Adam7 interlacing: the seven passes'
/// sub-images one after the other, each row filter 0.
pub fn png_adam7(w: u32, h: u32) -> Vec<u8> {
    // (x start, y start, x step, y step) of each pass.
    const PASSES: [(u32, u32, u32, u32); 7] = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ];
    let px = gradient(w, h);
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in PASSES {
        if x0 >= w || y0 >= h {
            continue; // an empty pass has no rows at all
        }
        for y in (y0..h).step_by(dy as usize) {
            raw.push(0);
            for x in (x0..w).step_by(dx as usize) {
                let at = (y * w + x) as usize * 3;
                raw.extend_from_slice(&px[at..at + 3]);
            }
        }
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(ihdr_of(w, h, 2, true));
    out.extend(chunk(b"IDAT", &zlib(&raw)));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A valid 8-bit RGB PNG with `extra` chunks between IHDR and IDAT.
pub fn png_with(w: u32, h: u32, extra: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(ihdr(w, h));
    for c in extra {
        out.extend_from_slice(c);
    }
    out.extend(chunk(b"IDAT", &png_idat_data(w, h)));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A PNG whose IDAT stream is cut in half, then closed with IEND.
pub fn png_truncated(w: u32, h: u32) -> Vec<u8> {
    let data = png_idat_data(w, h);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(ihdr(w, h));
    out.extend(chunk(b"IDAT", &data[..data.len() / 2]));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// A PNG whose header declares `w` x `h` but whose IDAT holds one row.
pub fn png_huge_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(ihdr(w, h));
    out.extend(chunk(b"IDAT", &zlib(&[0; 64])));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// An iCCP chunk whose profile is `compressed` (a zlib stream).
pub fn iccp(compressed: &[u8]) -> Vec<u8> {
    let mut d = b"bomb\0\0".to_vec();
    d.extend_from_slice(compressed);
    chunk(b"iCCP", &d)
}

/// A zTXt chunk holding `compressed`.
pub fn ztxt(compressed: &[u8]) -> Vec<u8> {
    let mut d = b"Comment\0\0".to_vec();
    d.extend_from_slice(compressed);
    chunk(b"zTXt", &d)
}

/// A compressed iTXt chunk holding `compressed`.
pub fn itxt(compressed: &[u8]) -> Vec<u8> {
    let mut d = b"XML:com.adobe.xmp\0\x01\0\0\0".to_vec();
    d.extend_from_slice(compressed);
    chunk(b"iTXt", &d)
}

/// Converts `input` with the pipeline into `format` at `w` x `h` (fill).
pub fn convert(input: &[u8], format: OutputFormat, w: u32, h: u32, progressive: bool) -> Vec<u8> {
    let options = Options {
        width: Some(w),
        height: Some(h),
        fit: tessera_resize::Fit::Fill,
        format: FormatRequest::Fixed(format),
        progressive,
        ..Options::default()
    };
    Pipeline::new(Limits::default())
        .process(input, &options)
        .expect("the generator's own conversion works")
        .bytes
}

/// A valid JPEG, `w` x `h`.
pub fn jpeg(w: u32, h: u32, progressive: bool) -> Vec<u8> {
    convert(
        &png_with(64, 64, &[]),
        OutputFormat::Jpeg,
        w,
        h,
        progressive,
    )
}

/// `jpeg` with `segments` (each a marker byte and its payload) inserted after SOI.
pub fn jpeg_with_segments(base: &[u8], segments: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = base[..2].to_vec();
    for (marker, payload) in segments {
        out.extend_from_slice(&[0xFF, *marker]);
        out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        out.extend_from_slice(payload);
    }
    out.extend_from_slice(&base[2..]);
    out
}

/// `count` APP2 ICC_PROFILE segments of `each` bytes of profile data.
pub fn icc_segments(count: usize, each: usize) -> Vec<(u8, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let mut p = b"ICC_PROFILE\0".to_vec();
            p.push((i % 255 + 1) as u8);
            p.push(count.min(255) as u8);
            p.resize(14 + each, 0x11);
            (0xE2, p)
        })
        .collect()
}

/// Offset of the first SOS marker of a JPEG.
pub fn first_sos(jpeg: &[u8]) -> usize {
    let mut pos = 2;
    loop {
        let marker = jpeg[pos + 1];
        if marker == 0xDA {
            return pos;
        }
        let len = u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]) as usize;
        pos += 2 + len;
    }
}

/// `jpeg` cut at `fraction` of its entropy-coded data and closed with EOI (FFD9).
pub fn jpeg_cut_with_eoi(jpeg: &[u8], fraction: f64) -> Vec<u8> {
    let sos = first_sos(jpeg);
    let cut = sos + ((jpeg.len() - sos) as f64 * fraction) as usize;
    let mut out = jpeg[..cut].to_vec();
    // Do not leave half a marker or a stuffed byte pair at the cut.
    while out.last() == Some(&0xFF) {
        out.pop();
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

/// `jpeg` with its frame header patched to declare `w` x `h`.
pub fn jpeg_declaring(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut out = jpeg.to_vec();
    let mut pos = 2;
    loop {
        let marker = out[pos + 1];
        if (0xC0..=0xC2).contains(&marker) {
            out[pos + 5..pos + 7].copy_from_slice(&h.to_be_bytes());
            out[pos + 7..pos + 9].copy_from_slice(&w.to_be_bytes());
            return out;
        }
        let len = u16::from_be_bytes([out[pos + 2], out[pos + 3]]) as usize;
        pos += 2 + len;
    }
}

/// One RIFF chunk (padded to an even size).
pub fn riff_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut out = kind.to_vec();
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
    out
}

/// A lossy WebP (`w` x `h`) rewrapped in a VP8X container with `meta` chunks before the
/// bitstream (flags set for ICC and EXIF so decoders look for them).
pub fn webp_with(w: u32, h: u32, meta: &[Vec<u8>]) -> Vec<u8> {
    let simple = convert(&png_with(64, 64, &[]), OutputFormat::WebP, w, h, false);
    let bitstream = &simple[12..]; // the VP8 chunk
    let mut vp8x = vec![0x20 | 0x08, 0, 0, 0];
    vp8x.extend_from_slice(&(w - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(h - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(riff_chunk(b"VP8X", &vp8x));
    for m in meta {
        body.extend_from_slice(m);
    }
    body.extend_from_slice(bitstream);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

/// A simple lossy WebP cut in the middle of its bitstream (RIFF sizes left as they were).
pub fn webp_truncated(w: u32, h: u32) -> Vec<u8> {
    let simple = convert(&png_with(64, 64, &[]), OutputFormat::WebP, w, h, false);
    simple[..simple.len() / 2].to_vec()
}

/// A valid 2-colour GIF89a, `w` x `h`, with `extensions` (raw bytes) before the image.
pub fn gif_with(w: u16, h: u16, extensions: &[u8]) -> Vec<u8> {
    let mut out = b"GIF89a".to_vec();
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&[0x80, 0, 0]); // global colour table of 2 entries
    out.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    out.extend_from_slice(extensions);
    out.push(0x2C);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&w.to_le_bytes());
    out.extend_from_slice(&h.to_le_bytes());
    out.push(0);
    out.extend(gif_lzw_black(u32::from(w) * u32::from(h)));
    out.push(0x3B);
    out
}

/// LZW data (minimum code size 2) for `n` pixels of index 0: a clear code before each
/// pixel keeps every code 3 bits wide, so no dictionary logic is needed.
fn gif_lzw_black(n: u32) -> Vec<u8> {
    let mut bits: Vec<bool> = Vec::new();
    let put = |code: u32, bits: &mut Vec<bool>| {
        for i in 0..3 {
            bits.push(code >> i & 1 == 1);
        }
    };
    for _ in 0..n {
        put(4, &mut bits); // clear
        put(0, &mut bits); // index 0
    }
    put(5, &mut bits); // end of information
    let bytes: Vec<u8> = bits
        .chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |b, (i, &v)| b | (u8::from(v) << i))
        })
        .collect();
    let mut out = vec![2u8];
    for block in bytes.chunks(255) {
        out.push(block.len() as u8);
        out.extend_from_slice(block);
    }
    out.push(0);
    out
}

/// `count` comment extensions of 255 bytes each.
pub fn gif_comments(count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..count {
        out.extend_from_slice(&[0x21, 0xFE, 255]);
        out.extend(std::iter::repeat_n(b'x', 255));
        out.push(0);
    }
    out
}

/// An application extension carrying an ICC profile (`ICCRGBG1012`) of `bytes` bytes.
pub fn gif_icc_extension(bytes: usize) -> Vec<u8> {
    let mut out = vec![0x21, 0xFF, 11];
    out.extend_from_slice(b"ICCRGBG1012");
    let mut left = bytes;
    while left > 0 {
        let k = left.min(255);
        out.push(k as u8);
        out.extend(std::iter::repeat_n(0x22, k));
        left -= k;
    }
    out.push(0);
    out
}

/// The hostile corpus: (name, input, expected code or "ok") for a request of a 64x64 PNG
/// (the `job_memory_exceeded` case at the source's own size). `bomb` is zlib of 1 GiB of
/// zeros ([`zlib_zeros`]), made once by the caller.
pub fn corpus(bomb: &[u8]) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let base_jpeg = jpeg(256, 256, false);
    let payload = |n: usize| vec![0x33u8; n];
    let mut exif = b"MM\0*\0\0\0\x08".to_vec();
    exif.resize(5 << 20, 0);
    vec![
        // PNG: compressed metadata chunks inflating to 1 GiB.
        (
            "png iCCP bomb (1 GiB)",
            png_with(16, 16, &[iccp(bomb)]),
            "metadata_too_large",
        ),
        // Text is never inflated (the pipeline strips metadata), so the pixels are served.
        (
            "png zTXt bomb (1 GiB)",
            png_with(16, 16, &[ztxt(bomb)]),
            "ok",
        ),
        (
            "png iTXt bomb (1 GiB)",
            png_with(16, 16, &[itxt(bomb)]),
            "ok",
        ),
        (
            "png eXIf of 5 MiB",
            png_with(16, 16, &[chunk(b"eXIf", &exif)]),
            "metadata_too_large",
        ),
        (
            "png small iCCP",
            png_with(16, 16, &[iccp(&zlib(&payload(3000)))]),
            "ok",
        ),
        (
            "png corrupt iCCP stream",
            png_with(16, 16, &[iccp(&payload(100))]),
            "ok",
        ),
        (
            "png 7000x7000 header, one row of data",
            png_huge_header(7000, 7000),
            "undecodable_image",
        ),
        (
            "png IDAT cut, IEND appended",
            png_truncated(256, 256),
            "undecodable_image",
        ),
        // JPEG: segments libjpeg would keep in memory, and files cut short.
        (
            "jpeg ICC flood (70 x 65000 B)",
            jpeg_with_segments(&base_jpeg, &icc_segments(70, 65_000)),
            "metadata_too_large",
        ),
        (
            "jpeg APP1 flood (70 x 65000 B)",
            jpeg_with_segments(&base_jpeg, &vec![(0xE1, payload(65_000)); 70]),
            "metadata_too_large",
        ),
        (
            "jpeg APP15 flood (not kept)",
            jpeg_with_segments(&base_jpeg, &vec![(0xEF, payload(65_000)); 70]),
            "ok",
        ),
        (
            "jpeg small ICC",
            jpeg_with_segments(&base_jpeg, &icc_segments(2, 1000)),
            "ok",
        ),
        (
            "jpeg baseline cut, FFD9 appended",
            jpeg_cut_with_eoi(&base_jpeg, 0.5),
            "undecodable_image",
        ),
        (
            "jpeg progressive cut, FFD9 appended",
            jpeg_cut_with_eoi(&jpeg(256, 256, true), 0.5),
            "undecodable_image",
        ),
        (
            "jpeg 16x16 declaring 7000x7000",
            jpeg_declaring(&jpeg(16, 16, false), 7000, 7000),
            "undecodable_image",
        ),
        // WebP: metadata chunks in a VP8X container.
        (
            "webp ICCP of 5 MiB",
            webp_with(64, 64, &[riff_chunk(b"ICCP", &payload(5 << 20))]),
            "metadata_too_large",
        ),
        (
            "webp EXIF flood (100 x 64 KiB)",
            webp_with(64, 64, &vec![riff_chunk(b"EXIF", &payload(64 << 10)); 100]),
            "metadata_too_large",
        ),
        (
            "webp small EXIF",
            webp_with(64, 64, &[riff_chunk(b"EXIF", &payload(100))]),
            "ok",
        ),
        (
            "webp bitstream cut",
            webp_truncated(256, 256),
            "undecodable_image",
        ),
        // GIF: extension floods and a cut frame.
        (
            "gif comment flood (20000 x 255 B)",
            gif_with(16, 16, &gif_comments(20_000)),
            "ok",
        ),
        (
            "gif ICC extension of 5 MiB",
            gif_with(16, 16, &gif_icc_extension(5 << 20)),
            "metadata_too_large",
        ),
        (
            "gif frame data cut",
            {
                let g = gif_with(256, 256, &[]);
                g[..g.len() / 2].to_vec()
            },
            "undecodable_image",
        ),
        // Over the job memory ceiling from the header alone: a 50 MP RGBA PNG at its
        // original size (decode, premultiplied copy, resize, 16.7 MP encode).
        (
            "png 7071x7071 RGBA at original size",
            png_rgba_header(7071, 7071),
            "job_memory_exceeded",
        ),
    ]
}

/// A PNG header declaring an RGBA image, with a token IDAT (refused before decoding).
pub fn png_rgba_header(w: u32, h: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(ihdr_of(w, h, 6, false));
    out.extend(chunk(b"IDAT", &zlib(&[0; 64])));
    out.extend(chunk(b"IEND", &[]));
    out
}

/// Peak resident set size of this process (VmHWM) and current RSS (VmRSS), in KiB.
pub fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs); false if refused.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
