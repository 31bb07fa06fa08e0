//! `cache: disk`, as ultralytics does it: each decoded training image is kept beside its file as
//! `<stem>.npy` (`Path(im_file).with_suffix(".npy")`), a NumPy array of shape (h, w, 3) in
//! OpenCV's BGR order, written on first use and read instead of decoding the image after that.
//! The files are the ones ultralytics writes (`np.save(f, imread(im_file), allow_pickle=False)`),
//! so a dataset cached by either tool serves both.
//!
//! A cache file that cannot be read (truncated, another dtype) is decoded again and rewritten;
//! a folder that cannot be written (a read-only dataset volume) leaves the image uncached, with one
//! warning per run, as ultralytics disables the disk cache then.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use image::RgbImage;

use super::decode::load_rgb;
use crate::error::Result;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Where ultralytics keeps the cache of `image`.
pub fn npy_path(image: &Path) -> PathBuf {
    image.with_extension("npy")
}

/// The image through its disk cache: read from `<stem>.npy` when it holds a (h, w, 3) uint8
/// array, else decoded and stored there.
pub fn load_cached(image: &Path) -> Result<RgbImage> {
    let npy = npy_path(image);
    if let Some(img) = std::fs::read(&npy).ok().and_then(|b| parse_bgr(&b)) {
        return Ok(img);
    }
    let img = load_rgb(image)?;
    if let Err(e) = crate::files::write_atomic(&npy, &encode_bgr(&img)) {
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            eprintln!("warning: cache='disk' cannot write {} ({e}); images stay uncached", npy.display());
        }
    }
    Ok(img)
}

/// `np.save` of the image as OpenCV holds it: (h, w, 3) `|u1` in BGR order, format 1.0 with
/// NumPy's header padding (room for a longer first axis, then 64-byte alignment).
pub fn encode_bgr(img: &RgbImage) -> Vec<u8> {
    let (w, h) = (img.width(), img.height());
    let mut header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({h}, {w}, 3), }}");
    // numpy's GROWTH_AXIS_MAX_DIGITS = 21
    header.push_str(&" ".repeat(21usize.saturating_sub(h.to_string().len())));
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + img.as_raw().len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for px in img.as_raw().chunks_exact(3) {
        out.extend_from_slice(&[px[2], px[1], px[0]]);
    }
    out
}

/// A (h, w, 3) C-order uint8 `.npy` (format 1.x–3.x) as an RGB image; None for anything else.
pub fn parse_bgr(bytes: &[u8]) -> Option<RgbImage> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (major, rest) = (*rest.first()?, rest.get(2..)?);
    let (len, rest) = match major {
        1 => (u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize, rest.get(2..)?),
        2 | 3 => (u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize, rest.get(4..)?),
        _ => return None,
    };
    let header = std::str::from_utf8(rest.get(..len)?).ok()?;
    let data = rest.get(len..)?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !(compact.contains("'descr':'|u1'") || compact.contains("'descr':'<u1'"))
        || !compact.contains("'fortran_order':False")
    {
        return None;
    }
    let shape = compact.split("'shape':(").nth(1)?.split(')').next()?;
    let dims: Vec<usize> = shape.split(',').filter(|s| !s.is_empty()).map(|s| s.parse().ok()).collect::<Option<_>>()?;
    let [h, w, 3] = dims[..] else { return None };
    if data.len() != h * w * 3 || h == 0 || w == 0 {
        return None;
    }
    let rgb: Vec<u8> = data.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
    RgbImage::from_raw(w as u32, h as u32, rgb)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `np.save(f, np.arange(18, dtype=np.uint8).reshape(2, 3, 3), allow_pickle=False)` from
    /// NumPy 2 (the first 10 bytes, then the header text, then the data).
    fn numpy_bytes() -> Vec<u8> {
        let mut b = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let mut header = "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3, 3), }".to_string();
        header.push_str(&" ".repeat(118 - 1 - header.len()));
        header.push('\n');
        b.extend_from_slice(header.as_bytes());
        b.extend(0u8..18);
        b
    }

    #[test]
    fn writes_what_numpy_writes_and_reads_it_back() {
        // pixel (x, y) in BGR = bytes 3·(y·3 + x) .. +3 of the array
        let bgr: Vec<u8> = (0u8..18).collect();
        let rgb: Vec<u8> = bgr.chunks_exact(3).flat_map(|p| [p[2], p[1], p[0]]).collect();
        let img = RgbImage::from_raw(3, 2, rgb).unwrap();
        assert_eq!(encode_bgr(&img), numpy_bytes());
        assert_eq!(parse_bgr(&numpy_bytes()).unwrap(), img);
        assert_eq!(encode_bgr(&img).len() % 64, 18 % 64, "header aligned to 64 bytes");
    }

    #[test]
    fn refuses_other_arrays_and_truncated_files() {
        let good = numpy_bytes();
        assert!(parse_bgr(&good[..good.len() - 1]).is_none());
        let f32s = String::from_utf8_lossy(&good).replace("|u1", "<f4").into_bytes();
        assert!(parse_bgr(&f32s).is_none());
        let gray = String::from_utf8_lossy(&good).replace("(2, 3, 3)", "(2, 9)   ").into_bytes();
        assert!(parse_bgr(&gray).is_none());
        assert!(parse_bgr(b"not numpy").is_none());
    }

    #[test]
    fn caches_beside_the_image_and_reads_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("a.png");
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        img.save(&png).unwrap();
        assert_eq!(load_cached(&png).unwrap(), img);
        let npy = dir.path().join("a.npy");
        assert_eq!(parse_bgr(&std::fs::read(&npy).unwrap()).unwrap(), img);
        // the cache is what is read now: change it and see the change
        let other = RgbImage::from_pixel(2, 2, image::Rgb([1, 2, 3]));
        std::fs::write(&npy, encode_bgr(&other)).unwrap();
        assert_eq!(load_cached(&png).unwrap(), other);
        // a broken cache is rebuilt from the image
        std::fs::write(&npy, b"\x93NUMPY garbage").unwrap();
        assert_eq!(load_cached(&png).unwrap(), img);
        assert_eq!(parse_bgr(&std::fs::read(&npy).unwrap()).unwrap(), img);
    }
}
