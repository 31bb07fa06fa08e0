//! EXIF orientation: reading the tag the way OpenCV's `ExifReader` does, and applying it the way
//! OpenCV's `ExifTransform` does (`cv2.imread`/`cv2.imdecode` with `IMREAD_COLOR`).
//!
//! Why our own reader: OpenCV reads only IFD0 of the TIFF block ("II"/"MM", tag mark 42), takes
//! tag 0x0112 as an unsigned 16-bit value, and ignores values outside 1–8. The `image` crate's
//! JPEG path uses a different parser; matching OpenCV's rules here keeps the decoded frame (and so
//! every label, which ultralytics reads in the rotated frame) identical to ultralytics'.

use image::RgbImage;

/// The EXIF `Orientation` tag.
const ORIENTATION: u16 = 0x0112;

/// The orientation (1–8) in a TIFF-structured EXIF block (starting at "II"/"MM", i.e. after a
/// JPEG's `Exif\0\0`), or `None` when the block has no valid one. Malformed blocks give `None`
/// (OpenCV's parser stops on the first out-of-bounds read and keeps what it read before).
pub fn orientation(tiff: &[u8]) -> Option<u16> {
    let big = match tiff.get(..2)? {
        b"II" => false,
        b"MM" => true,
        _ => return None,
    };
    let u16_at = |o: usize| -> Option<u16> {
        let b = tiff.get(o..o + 2)?;
        Some(if big { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b = tiff.get(o..o + 4)?;
        let a = [b[0], b[1], b[2], b[3]];
        Some(if big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd0 = u32_at(4)? as usize;
    let entries = u16_at(ifd0)? as usize;
    let mut found = None;
    for i in 0..entries {
        let e = ifd0 + 2 + 12 * i;
        let Some(tag) = u16_at(e) else { break };
        if tag == ORIENTATION {
            found = u16_at(e + 8);
        }
    }
    found.filter(|o| (1..=8).contains(o))
}

/// Whether an orientation swaps width and height (5–8: the picture is transposed).
pub fn swaps_sides(orientation: u16) -> bool {
    (5..=8).contains(&orientation)
}

/// Apply an EXIF orientation as OpenCV's `ExifTransform` does: 2 flip left-right, 3 rotate 180°,
/// 4 flip top-bottom, 5 transpose, 6 transpose + flip left-right (90° clockwise), 7 transpose +
/// flip both, 8 transpose + flip top-bottom (90° counter-clockwise); 1 and anything else: as is.
pub fn apply(img: RgbImage, orientation: u16) -> RgbImage {
    if !(2..=8).contains(&orientation) {
        return img;
    }
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = if swaps_sides(orientation) { (h, w) } else { (w, h) };
    // Source (x, y) of output pixel (x, y).
    let src_of = |x: usize, y: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            _ => (w - 1 - y, x), // 8
        }
    };
    let src = img.as_raw();
    let mut out = vec![0u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let (sx, sy) = src_of(x, y);
            let s = (sy * w + sx) * 3;
            let d = (y * ow + x) * 3;
            out[d..d + 3].copy_from_slice(&src[s..s + 3]);
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("buffer size matches")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(big: bool, entries: &[(u16, u16, u16)]) -> Vec<u8> {
        let p16 = |v: u16| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let p32 = |v: u32| if big { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut b = if big { b"MM".to_vec() } else { b"II".to_vec() };
        b.extend(p16(42));
        b.extend(p32(8));
        b.extend(p16(entries.len() as u16));
        for &(tag, typ, val) in entries {
            b.extend(p16(tag));
            b.extend(p16(typ));
            b.extend(p32(1));
            b.extend(p16(val));
            b.extend([0, 0]);
        }
        b.extend(p32(0));
        b
    }

    #[test]
    fn reads_ifd0_orientation_in_both_byte_orders() {
        assert_eq!(orientation(&block(false, &[(0x010f, 2, 0), (0x0112, 3, 6)])), Some(6));
        assert_eq!(orientation(&block(true, &[(0x0112, 3, 8)])), Some(8));
        assert_eq!(orientation(&block(false, &[(0x0112, 3, 9)])), None);
        assert_eq!(orientation(&block(false, &[(0x0110, 3, 6)])), None);
        assert_eq!(orientation(b"IX*\0"), None);
        // truncated: the entry count promises more than is there
        let mut b = block(false, &[(0x0112, 3, 3)]);
        b.truncate(14);
        assert_eq!(orientation(&b), None);
    }

    #[test]
    fn orientations_map_corners_like_opencv() {
        // 3x2 image, pixel value = index; check where the top-left source pixel lands.
        let img = RgbImage::from_fn(3, 2, |x, y| image::Rgb([(y * 3 + x) as u8; 3]));
        let at = |im: &RgbImage, x, y| im.get_pixel(x, y).0[0];
        let r6 = apply(img.clone(), 6); // 90° clockwise: top-left goes to top-right
        assert_eq!((r6.width(), r6.height()), (2, 3));
        assert_eq!(at(&r6, 1, 0), 0);
        assert_eq!(at(&r6, 0, 0), 3);
        let r8 = apply(img.clone(), 8); // 90° counter-clockwise: top-left goes to bottom-left
        assert_eq!(at(&r8, 0, 2), 0);
        let r3 = apply(img.clone(), 3);
        assert_eq!(at(&r3, 2, 1), 0);
        assert_eq!(at(&apply(img.clone(), 2), 2, 0), 0);
        assert_eq!(at(&apply(img.clone(), 4), 0, 1), 0);
        assert_eq!(at(&apply(img.clone(), 5), 0, 0), 0);
        assert_eq!(at(&apply(img.clone(), 5), 1, 0), 3);
        assert_eq!(at(&apply(img.clone(), 7), 1, 2), 0);
        assert_eq!(apply(img.clone(), 1), img);
    }
}
