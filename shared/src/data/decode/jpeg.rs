//! JPEG through libjpeg-turbo's decoder, set up exactly as OpenCV's `JpegDecoder` sets it up.
//!
//! Why libjpeg(-turbo): ultralytics reads images with `cv2.imdecode`, i.e. libjpeg-turbo with
//! the accurate integer IDCT (`JDCT_ISLOW`) and "fancy" (triangle-filter) chroma upsampling. Any
//! other decoder (the `image` crate's zune-jpeg) rounds differently in the IDCT, upsampling and
//! colour conversion, which moves scores and boxes. The library is `mozjpeg-sys`: mozjpeg's
//! decoder is libjpeg-turbo's, compiled from vendored C with `cc` (no cmake, no nasm; the
//! portable C paths produce the same pixels as libjpeg-turbo's SIMD paths).
//!
//! OpenCV's colour handling, reproduced: 1- and 3-component files are converted by libjpeg to
//! RGB (gray is replicated); 4-component files (CMYK, YCCK) are read as CMYK and converted with
//! OpenCV's `icvCvt_CMYK2BGR_8u_C4C3R` formula (`c = k - ((255 - c) * k >> 8)`, per channel).
//! EXIF orientation comes from the `Exif\0\0` APP1 segments (the last one that has a valid tag,
//! as OpenCV re-parses every such segment) and is applied after decoding.
//!
//! Errors: libjpeg reports fatal errors through `error_exit`, which must not return; ours unwinds
//! (`resume_unwind`, no panic message) back to [`decode`], which turns it into an
//! [`Error`]. Warnings (corrupt data that libjpeg recovers from, a missing end marker) are
//! silent and decoding goes on, as libjpeg does by default.

use std::ffi::{c_int, c_ulong};
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};

use image::RgbImage;
use mozjpeg_sys as ffi;

use super::exif;
use crate::error::{Error, Result};

const APP1: u8 = 0xE1;

/// Decoded JPEG pixels (before orientation) and the EXIF orientation.
pub struct Decoded {
    pub image: RgbImage,
    pub orientation: Option<u16>,
}

/// Whether bytes start like a JPEG (SOI + a marker), as OpenCV's signature check.
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Decode a JPEG as `cv2.imdecode(buf, IMREAD_COLOR)` does, without applying the orientation.
pub fn decode(bytes: &[u8]) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(Error::data("cannot decode JPEG: the file is empty"));
    }
    let mut err: Box<ffi::jpeg_error_mgr> = Box::new(unsafe { std::mem::zeroed() });
    let mut cinfo: Box<ffi::jpeg_decompress_struct> = Box::new(unsafe { std::mem::zeroed() });
    // Every libjpeg call (and only them) runs inside catch_unwind: error_exit unwinds to here.
    let result = catch_unwind(AssertUnwindSafe(|| unsafe {
        cinfo.common.err = ffi::jpeg_std_error(&mut err);
        err.error_exit = Some(error_exit);
        err.emit_message = Some(emit_message);
        ffi::jpeg_CreateDecompress(
            &mut *cinfo,
            ffi::JPEG_LIB_VERSION,
            std::mem::size_of::<ffi::jpeg_decompress_struct>(),
        );
        let guard = Destroy(&mut *cinfo as *mut _);
        let out = read(&mut *cinfo, bytes);
        drop(guard);
        out
    }));
    match result {
        Ok(d) => Ok(d),
        Err(payload) => {
            let why = payload.downcast_ref::<String>().cloned().unwrap_or_else(|| "libjpeg error".to_string());
            Err(Error::data(format!("cannot decode JPEG: {why}"))
                .with_hint("the file is corrupt or truncated: re-export it, or remove it from the dataset"))
        }
    }
}

/// `jpeg_destroy_decompress` on every path out (also while unwinding from `error_exit`).
struct Destroy(*mut ffi::jpeg_decompress_struct);

impl Drop for Destroy {
    fn drop(&mut self) {
        // Safety: the struct was created by jpeg_CreateDecompress and outlives this guard.
        unsafe { ffi::jpeg_destroy_decompress(&mut *self.0) }
    }
}

/// The decoding proper (libjpeg may unwind out of any call here).
unsafe fn read(cinfo: &mut ffi::jpeg_decompress_struct, bytes: &[u8]) -> Decoded {
    ffi::jpeg_mem_src(cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
    ffi::jpeg_save_markers(cinfo, APP1 as c_int, 0xFFFF);
    ffi::jpeg_read_header(cinfo, 1);

    let mut orientation = None;
    let mut m = cinfo.marker_list;
    while !m.is_null() {
        let marker = &*m;
        if marker.marker == APP1 && marker.data_length > 6 && !marker.data.is_null() {
            let data = std::slice::from_raw_parts(marker.data, marker.data_length as usize);
            if data.starts_with(b"Exif\0\0") {
                if let Some(o) = exif::orientation(&data[6..]) {
                    orientation = Some(o);
                }
            }
        }
        m = marker.next;
    }

    let cmyk = cinfo.num_components == 4;
    cinfo.out_color_space = if cmyk { ffi::JCS_CMYK } else { ffi::JCS_EXT_RGB };
    // libjpeg's defaults, which OpenCV keeps; set explicitly because parity depends on them.
    cinfo.dct_method = ffi::J_DCT_METHOD::JDCT_ISLOW;
    cinfo.do_fancy_upsampling = 1;
    ffi::jpeg_start_decompress(cinfo);

    let (w, h) = (cinfo.output_width as usize, cinfo.output_height as usize);
    let comps = cinfo.output_components as usize;
    let mut out = vec![0u8; w * h * 3];
    let mut row = vec![0u8; w * comps];
    while (cinfo.output_scanline as usize) < h {
        let y = cinfo.output_scanline as usize;
        let dst: *mut u8 = if cmyk { row.as_mut_ptr() } else { out[y * w * 3..].as_mut_ptr() };
        let mut rows = [dst];
        if ffi::jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), 1) != 1 {
            break; // cannot happen with a memory source (it inserts an EOI at the end)
        }
        if cmyk {
            for (o, p) in out[y * w * 3..(y + 1) * w * 3].chunks_exact_mut(3).zip(row.chunks_exact(4)) {
                let k = p[3] as i32;
                for c in 0..3 {
                    o[c] = (k - (((255 - p[c] as i32) * k) >> 8)) as u8;
                }
            }
        }
    }
    // No jpeg_finish_decompress: OpenCV ignores errors after the last row (trailing garbage),
    // and destroying the decompressor is all the cleanup needed.
    Decoded { image: RgbImage::from_raw(w as u32, h as u32, out).expect("buffer size matches"), orientation }
}

extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let msg = unsafe { message(cinfo) };
    // resume_unwind: no panic hook, nothing printed; caught in `decode`.
    std::panic::resume_unwind(Box::new(msg));
}

extern "C-unwind" fn emit_message(_cinfo: &mut ffi::jpeg_common_struct, _level: c_int) {}

/// libjpeg's text for the current error.
unsafe fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    let Some(err) = cinfo.err.as_ref() else { return "libjpeg error".into() };
    let Some(fmt) = err.format_message else { return format!("libjpeg error {}", err.msg_code) };
    let mut buf = [0u8; 200]; // JMSG_LENGTH_MAX
                              // mozjpeg-sys declares the buffer as &[u8; 80]; libjpeg writes at most JMSG_LENGTH_MAX bytes.
    let f: unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, *mut u8) = std::mem::transmute(fmt);
    f(cinfo, buf.as_mut_ptr());
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Width, height and EXIF orientation from a JPEG's markers, reading only up to the first scan
/// (what `jpeg_read_header` reads), for header-only checks on whole datasets.
pub fn header(r: &mut impl Read) -> Result<(u32, u32, Option<u16>)> {
    let bad = |why: &str| Error::data(format!("not a readable JPEG header: {why}"));
    let mut b2 = [0u8; 2];
    r.read_exact(&mut b2).map_err(|_| bad("empty file"))?;
    if b2 != [0xFF, 0xD8] {
        return Err(bad("no start-of-image marker"));
    }
    let mut size = None;
    let mut orientation = None;
    loop {
        // next marker: 0xFF (fill bytes allowed), then the code
        let mut b = [0u8; 1];
        r.read_exact(&mut b).map_err(|_| bad("ends before the first scan"))?;
        if b[0] != 0xFF {
            return Err(bad("garbage between segments"));
        }
        let mut code = 0xFF;
        while code == 0xFF {
            r.read_exact(&mut b).map_err(|_| bad("ends before the first scan"))?;
            code = b[0];
        }
        if code == 0x01 || (0xD0..=0xD7).contains(&code) {
            continue; // standalone markers (TEM, RSTn)
        }
        if code == 0xD9 {
            return Err(bad("end of image before any scan"));
        }
        r.read_exact(&mut b2).map_err(|_| bad("truncated segment"))?;
        let len = u16::from_be_bytes(b2) as usize;
        if len < 2 {
            return Err(bad("segment length under 2"));
        }
        let mut data = vec![0u8; len - 2];
        r.read_exact(&mut data).map_err(|_| bad("truncated segment"))?;
        match code {
            0xDA => break, // start of scan: libjpeg's header ends here
            0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                if data.len() < 5 {
                    return Err(bad("short frame header"));
                }
                let h = u16::from_be_bytes([data[1], data[2]]) as u32;
                let w = u16::from_be_bytes([data[3], data[4]]) as u32;
                size = Some((w, h));
            }
            APP1 if data.starts_with(b"Exif\0\0") => {
                if let Some(o) = exif::orientation(&data[6..]) {
                    orientation = Some(o);
                }
            }
            _ => {}
        }
    }
    match size {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h, orientation)),
        Some(_) => Err(bad("zero width or height (DNL-defined heights are not supported)")),
        None => Err(bad("no frame header before the first scan")),
    }
}
