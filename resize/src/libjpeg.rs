//! One libjpeg(-turbo) decompressor over a byte slice, with the FFI in one place.
//!
//! Why not the `mozjpeg` crate's `Decompress` (which the encoder still uses): it keeps
//! `cinfo` private, and a decode that needs only a region of the image wants two
//! libjpeg-turbo calls it does not wrap: `jpeg_crop_scanline` (inverse-transform, upsample
//! and colour-convert only the iMCU columns that hold the region) and `jpeg_skip_scanlines`
//! (no IDCT, upsampling or colour conversion for the rows above it). Rows below the region
//! are not decoded at all: the decoder is dropped once the region's last row is out. A crop
//! of the middle half of a photo then costs about half a full decode instead of all of it.
//!
//! Errors: libjpeg reports failures through the error manager the caller passes in, whose
//! `error_exit` (and fatal `emit_message`) unwind out of any call made here; the caller
//! catches the unwind (`crate::decode::decode`). So no method returns libjpeg's failures as
//! values, and `Drop` releases libjpeg's memory whichever way the decode ends.

use std::os::raw::{c_int, c_long, c_uint};

use mozjpeg_sys as ffi;
use mozjpeg_sys::{boolean, jpeg_decompress_struct, J_COLOR_SPACE};

/// The end-of-image marker appended to a prefix of the input.
pub(crate) const EOI: &[u8] = &[0xFF, 0xD9];

/// The bytes libjpeg reads: `head`, then `tail` (an EOI after a prefix, or nothing).
/// `mgr` is first so that libjpeg's `cinfo.src` pointer is a pointer to the whole struct.
#[repr(C)]
struct Source<'a> {
    mgr: ffi::jpeg_source_mgr,
    tail: &'a [u8],
}

/// A decompressor that has read the header of `head` + `tail`.
pub(crate) struct Jpeg<'a> {
    // Boxed: libjpeg keeps pointers to the error and source managers, and `cinfo` is
    // never moved while libjpeg's state refers to it.
    cinfo: Box<jpeg_decompress_struct>,
    _err: Box<ffi::jpeg_error_mgr>,
    _src: Box<Source<'a>>,
}

impl<'a> Jpeg<'a> {
    /// Reads the header of `head` followed by `tail`, keeping the marker segments listed
    /// in `markers` (whole, up to 64 KiB each: the caller bounds them before this call).
    pub(crate) fn new(
        head: &'a [u8],
        tail: &'a [u8],
        err: ffi::jpeg_error_mgr,
        markers: &[u8],
    ) -> Jpeg<'a> {
        let mut err = Box::new(err);
        let mut src = Box::new(Source {
            mgr: ffi::jpeg_source_mgr {
                next_input_byte: head.as_ptr(),
                bytes_in_buffer: head.len(),
                init_source: Some(source_nothing),
                fill_input_buffer: Some(source_fill),
                skip_input_data: Some(source_skip),
                resync_to_restart: Some(ffi::jpeg_resync_to_restart),
                term_source: Some(source_nothing),
            },
            tail,
        });
        // SAFETY: an all-zero struct is what `jpeg_CreateDecompress` expects (it keeps only
        // `err` and zeroes the rest itself).
        let mut cinfo: Box<jpeg_decompress_struct> = Box::new(unsafe { std::mem::zeroed() });
        cinfo.common.err = &mut *err;
        // SAFETY: `cinfo` is zeroed with a valid error manager, as the call requires.
        unsafe { ffi::jpeg_create_decompress(&mut *cinfo) };
        cinfo.src = &mut src.mgr;
        // From here on `Drop` destroys the decompressor, also when a call below unwinds.
        let mut jpeg = Jpeg {
            cinfo,
            _err: err,
            _src: src,
        };
        for &marker in markers {
            // SAFETY: a created decompressor before `jpeg_read_header`.
            unsafe { ffi::jpeg_save_markers(&mut jpeg.cinfo, c_int::from(marker), 0xFFFF) };
        }
        // SAFETY: a created decompressor with a source; `require_image` makes a header
        // without a frame an error (an unwind).
        unsafe { ffi::jpeg_read_header(&mut jpeg.cinfo, 1) };
        jpeg
    }

    /// Stored width and height from the frame header.
    pub(crate) fn size(&self) -> (u32, u32) {
        (self.cinfo.image_width, self.cinfo.image_height)
    }

    /// The colour space of the stored data (YCbCr, gray, CMYK, YCCK, ...).
    pub(crate) fn color_space(&self) -> J_COLOR_SPACE {
        self.cinfo.jpeg_color_space
    }

    /// Each component's (horizontal, vertical) sampling factor.
    pub(crate) fn sampling(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let components: &[ffi::jpeg_component_info] = if self.cinfo.comp_info.is_null() {
            &[]
        } else {
            // SAFETY: after `jpeg_read_header`, `comp_info` holds `num_components` entries,
            // alive as long as the decompressor.
            unsafe {
                std::slice::from_raw_parts(
                    self.cinfo.comp_info,
                    usize::try_from(self.cinfo.num_components).unwrap_or(0),
                )
            }
        };
        components.iter().map(|c| {
            (
                u64::try_from(c.h_samp_factor).unwrap_or(1),
                u64::try_from(c.v_samp_factor).unwrap_or(1),
            )
        })
    }

    /// The saved marker segments, as (marker code, data) in file order.
    pub(crate) fn markers(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        let mut next = self.cinfo.marker_list;
        std::iter::from_fn(move || {
            // SAFETY: libjpeg's list of saved markers, alive as long as the decompressor;
            // `data` holds `data_length` bytes.
            let marker = unsafe { next.as_ref()? };
            next = marker.next;
            let data = match marker.data.is_null() {
                true => &[][..],
                false => unsafe {
                    std::slice::from_raw_parts(marker.data, marker.data_length as usize)
                },
            };
            Some((marker.marker, data))
        })
    }

    /// Starts decompression at `scale`/8 of the stored size into `space`, without block
    /// smoothing (it only matters for incomplete progressive scans); returns the output
    /// size. A multi-scan file is entropy-decoded whole here.
    pub(crate) fn start(&mut self, scale: u8, space: J_COLOR_SPACE) -> (u32, u32) {
        self.cinfo.scale_num = c_uint::from(scale.clamp(1, 8));
        self.cinfo.scale_denom = 8;
        self.cinfo.out_color_space = space;
        self.cinfo.do_block_smoothing = 0;
        // SAFETY: a decompressor that has read its header; a non-suspending source, so
        // the call completes (or unwinds).
        unsafe { ffi::jpeg_start_decompress(&mut self.cinfo) };
        (self.cinfo.output_width, self.cinfo.output_height)
    }

    /// Narrows every row to the output columns `x..x + width` (in output pixels, inside
    /// the output width, `width` > 0), widened on the left to the nearest iMCU column;
    /// returns the columns actually produced. Only before the first row is read.
    pub(crate) fn crop_columns(&mut self, x: u32, width: u32) -> (u32, u32) {
        let (mut x, mut width) = (x, width);
        // SAFETY: started, no row read yet, and the columns are inside the output (the
        // caller's contract; libjpeg checks it again and unwinds if not).
        unsafe { ffi::jpeg_crop_scanline(&mut self.cinfo, &mut x, &mut width) };
        (x, width)
    }

    /// Skips `rows` output rows without producing them.
    pub(crate) fn skip_rows(&mut self, rows: u32) {
        let mut left = rows;
        while left > 0 {
            // SAFETY: a started decompressor with a non-suspending source.
            let skipped = unsafe { ffi::jpeg_skip_scanlines(&mut self.cinfo, left) };
            if skipped == 0 {
                break; // at the last row already
            }
            left -= skipped.min(left);
        }
    }

    /// Fills `dest` with whole output rows of `row_bytes` each (the output width times the
    /// channels, after any `crop_columns`). False if the image ended first.
    pub(crate) fn read_rows(&mut self, dest: &mut [u8], row_bytes: usize) -> bool {
        // The width libjpeg writes into each row.
        let width_bytes = self.cinfo.output_width as usize
            * usize::try_from(self.cinfo.out_color_components).unwrap_or(0);
        assert!(
            row_bytes >= width_bytes,
            "row of {row_bytes} bytes for {width_bytes}"
        );
        for row in dest.chunks_exact_mut(row_bytes) {
            let mut ptr = row.as_mut_ptr();
            // SAFETY: `ptr` addresses `row_bytes` >= `width_bytes` writable bytes.
            let read = unsafe { ffi::jpeg_read_scanlines(&mut self.cinfo, &mut ptr, 1) };
            if read == 0 {
                return false;
            }
        }
        true
    }

    /// Whether every output row has been read.
    pub(crate) fn all_rows_read(&self) -> bool {
        self.cinfo.output_scanline >= self.cinfo.output_height
    }

    /// Reads the rest of the file after the last row (the markers up to EOI), so that
    /// damage after the last scan is reported too.
    pub(crate) fn finish(&mut self) {
        // SAFETY: every row has been read (the caller checks `all_rows_read`).
        unsafe { ffi::jpeg_finish_decompress(&mut self.cinfo) };
    }
}

impl Drop for Jpeg<'_> {
    fn drop(&mut self) {
        // SAFETY: created in `new`; valid in any state, including after an unwind.
        unsafe { ffi::jpeg_destroy_decompress(&mut self.cinfo) };
    }
}

unsafe extern "C-unwind" fn source_nothing(_cinfo: &mut jpeg_decompress_struct) {}

/// Called when `head` (then `tail`) is used up. Past the end it raises libjpeg's own
/// "premature end of JPEG file" warning (`JWRN_JPEG_EOF`, which the caller's error manager
/// makes fatal) and then, like libjpeg's memory source, supplies an EOI.
unsafe extern "C-unwind" fn source_fill(cinfo: &mut jpeg_decompress_struct) -> boolean {
    // SAFETY: `cinfo.src` is the `mgr` field of a `Source` (see `Jpeg::new`), which is
    // `repr(C)` with `mgr` first.
    let src = unsafe { &mut *cinfo.src.cast::<Source<'_>>() };
    if src.tail.is_empty() {
        // SAFETY: the error manager set in `Jpeg::new`.
        unsafe {
            let err = &mut *cinfo.common.err;
            err.msg_code = ffi::JWRN_JPEG_EOF;
            if let Some(emit) = err.emit_message {
                emit(&mut cinfo.common, -1);
            }
        }
        src.mgr.next_input_byte = EOI.as_ptr();
        src.mgr.bytes_in_buffer = EOI.len();
    } else {
        src.mgr.next_input_byte = src.tail.as_ptr();
        src.mgr.bytes_in_buffer = src.tail.len();
        src.tail = &[];
    }
    1
}

unsafe extern "C-unwind" fn source_skip(cinfo: &mut jpeg_decompress_struct, bytes: c_long) {
    let Ok(mut bytes) = usize::try_from(bytes) else {
        return;
    };
    // SAFETY: as in `source_fill`.
    unsafe {
        while bytes > (*cinfo.src).bytes_in_buffer {
            bytes -= (*cinfo.src).bytes_in_buffer;
            source_fill(cinfo);
        }
        let src = &mut *cinfo.src;
        src.next_input_byte = src.next_input_byte.add(bytes);
        src.bytes_in_buffer -= bytes;
    }
}
