//! Image decoding to 8-bit RGB exactly as ultralytics reads images: `cv2.imdecode(buf,
//! IMREAD_COLOR)` (`ultralytics.utils.patches.imread`).
//!
//! - JPEG: libjpeg-turbo's decoder with OpenCV's settings ([`jpeg`]): the same pixels as cv2.
//! - EXIF orientation is applied, as `IMREAD_COLOR` does (it is not `IMREAD_IGNORE_ORIENTATION`):
//!   the decoded image, its size and so its labels are in the rotated frame. JPEG: OpenCV's
//!   reading of the `Exif` APP1 segment ([`exif`]); PNG (`eXIf`), WebP and TIFF: the `image`
//!   crate's reading of the same tag.
//! - Everything else (PNG, BMP, WebP, TIFF) through the `image` crate, converted as OpenCV's
//!   `IMREAD_COLOR` converts: gray replicated to 3 channels, alpha dropped (not composited),
//!   palettes expanded, 16-bit samples reduced to their high byte (`>> 8`, libpng's
//!   `png_set_strip_16`; the `image` crate would round `v * 255 / 65535` instead).
//!
//! [`image_size`] gives the decoded (rotated) size from headers only, as ultralytics'
//! `exif_size` does for its label cache, so sizes and decoded pixels never disagree.

pub mod exif;
pub mod jpeg;

use std::io::{BufReader, Cursor, Seek, SeekFrom};
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

use crate::error::{Error, Result};

const FORMATS_HINT: &str = "the file is corrupt or not an image format kubeyolo reads (jpg, png, bmp, webp, tiff)";

/// Decode encoded image bytes (jpg, png, bmp, webp, tiff) to 8-bit RGB as `cv2.imdecode(buf,
/// IMREAD_COLOR)` does, EXIF orientation applied.
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage> {
    if jpeg::is_jpeg(bytes) {
        let d = jpeg::decode(bytes)?;
        return Ok(exif::apply(d.image, d.orientation.unwrap_or(1)));
    }
    let decoder = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::data(format!("cannot read image: {e}")))?
        .into_decoder()
        .map_err(|e| Error::data(format!("cannot decode image: {e}")).with_hint(FORMATS_HINT))?;
    decode_other(decoder)
}

fn decode_other(mut decoder: impl ImageDecoder) -> Result<RgbImage> {
    let orientation = decoder.orientation().map(|o| o.to_exif()).unwrap_or(1);
    let img = DynamicImage::from_decoder(decoder)
        .map_err(|e| Error::data(format!("cannot decode image: {e}")).with_hint(FORMATS_HINT))?;
    Ok(exif::apply(to_rgb8(img), orientation as u16))
}

/// OpenCV's `IMREAD_COLOR` conversion to 8-bit, 3 channels (16-bit: high byte; alpha dropped).
fn to_rgb8(img: DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let hi = |v: u16| (v >> 8) as u8;
    let from16 = |data: &[u16], channels: usize| -> RgbImage {
        let mut out = Vec::with_capacity(w as usize * h as usize * 3);
        for p in data.chunks_exact(channels) {
            if channels < 3 {
                out.extend([hi(p[0]); 3]);
            } else {
                out.extend([hi(p[0]), hi(p[1]), hi(p[2])]);
            }
        }
        RgbImage::from_raw(w, h, out).expect("buffer size matches")
    };
    match img {
        DynamicImage::ImageLuma16(b) => from16(b.as_raw(), 1),
        DynamicImage::ImageLumaA16(b) => from16(b.as_raw(), 2),
        DynamicImage::ImageRgb16(b) => from16(b.as_raw(), 3),
        DynamicImage::ImageRgba16(b) => from16(b.as_raw(), 4),
        DynamicImage::ImageRgb8(b) => b,
        // 8-bit gray, gray+alpha, RGBA: replicate / drop alpha (the image crate's conversion);
        // float TIFFs: the image crate's scaling.
        other => other.to_rgb8(),
    }
}

/// Decode an image file (see [`decode_rgb`]); errors name the file.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io_at(path, "read image", e))?;
    decode_rgb(&bytes).map_err(|e| e.with_file(path))
}

/// (width, height) of the image [`load_rgb`] returns — EXIF orientations 5–8 swap the header's
/// sides — read from the headers only (ultralytics' `exif_size`). Errors name the file.
pub fn image_size(path: &Path) -> Result<(u32, u32)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io_at(path, "open image", e))?;
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 3];
    let n = std::io::Read::read(&mut r, &mut magic).map_err(|e| Error::io_at(path, "read image", e))?;
    r.seek(SeekFrom::Start(0)).map_err(|e| Error::io_at(path, "read image", e))?;
    let (w, h, orientation) = if jpeg::is_jpeg(&magic[..n]) {
        jpeg::header(&mut r).map_err(|e| e.with_file(path))?
    } else {
        let mut decoder = ImageReader::new(r)
            .with_guessed_format()
            .map_err(|e| Error::io_at(path, "read image", e))?
            .into_decoder()
            .map_err(|e| {
                Error::data(format!("cannot read image header: {e}")).with_hint(FORMATS_HINT).with_file(path)
            })?;
        let (w, h) = decoder.dimensions();
        (w, h, decoder.orientation().ok().map(|o| o.to_exif() as u16))
    };
    Ok(if orientation.is_some_and(exif::swaps_sides) { (h, w) } else { (w, h) })
}
