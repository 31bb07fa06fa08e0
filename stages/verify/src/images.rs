//! The cheap half of ultralytics' `verify_image_label` for every image of a split: the file
//! opens, its header decodes, its format is one kubeyolo (and ultralytics) reads, both sides are
//! at least 10 px, and a JPEG ends with the end-of-image marker.
//!
//! Why header-only: verify runs before anything expensive and must stay fast on datasets of
//! hundreds of thousands of images, so pixels are never decoded (`image_size` reads just the
//! header). Files are checked in parallel (rayon). Semantics follow ultralytics: a bad image is
//! dropped by its training (a warning), not a reason to stop; only a split left with no usable
//! image is a problem (decided by the caller). A JPEG without the `FF D9` end marker is only a
//! warning: ultralytics repairs it ("corrupt JPEG restored and saved"); verify never writes to
//! the dataset, so it says what to do instead.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use image::{ImageFormat, ImageReader};
use rayon::prelude::*;

/// ultralytics rejects images whose height or width is below this (`shape > 9`).
pub const MIN_SIDE: u32 = 10;

/// What is wrong with one image.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Unusable: training skips it. The reason says why.
    Corrupt(String),
    /// A JPEG without its end-of-image marker (truncated?): still usable.
    TruncatedJpeg,
}

/// The outcome of checking one split's images.
#[derive(Debug, Default)]
pub struct Scan {
    /// Images checked.
    pub checked: usize,
    /// Every finding, in image order.
    pub findings: Vec<(PathBuf, Finding)>,
}

impl Scan {
    /// Images training skips.
    pub fn corrupt(&self) -> usize {
        self.findings.iter().filter(|(_, f)| matches!(f, Finding::Corrupt(_))).count()
    }
    /// Images that are usable (possibly with a warning).
    pub fn usable(&self) -> usize {
        self.checked - self.corrupt()
    }
}

/// Check `images` in parallel (order of the findings = order of `images`).
pub fn scan(images: &[PathBuf]) -> Scan {
    let findings = images.par_iter().filter_map(|p| check_image(p).map(|f| (p.clone(), f))).collect();
    Scan { checked: images.len(), findings }
}

/// Check one image from its header; `None` when it is fine.
pub fn check_image(path: &Path) -> Option<Finding> {
    // decoder messages may span lines or end in a newline: keep the warning on one line
    let corrupt = |why: String| Some(Finding::Corrupt(why.split_whitespace().collect::<Vec<_>>().join(" ")));
    let reader = match ImageReader::open(path) {
        Ok(r) => r,
        Err(e) => return corrupt(format!("cannot open: {e}")),
    };
    // The content decides the format; the suffix only when the magic bytes say nothing.
    let reader = match reader.with_guessed_format() {
        Ok(r) => r,
        Err(e) => return corrupt(format!("cannot read: {e}")),
    };
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp | ImageFormat::WebP | ImageFormat::Tiff)) => {
            f
        }
        Some(f) => {
            return corrupt(format!(
                "image format {} is not one kubeyolo reads (jpg, png, bmp, webp, tiff)",
                f.extensions_str().first().copied().unwrap_or("?")
            ))
        }
        None => return corrupt("not a recognised image format (jpg, png, bmp, webp, tiff)".into()),
    };
    // The size decoding will give (EXIF-rotated, ultralytics' `exif_size`), from the same header
    // reader the decoder agrees with (libjpeg's markers for JPEG).
    drop(reader);
    let (w, h) = match kubeyolo::data::image::image_size(path) {
        Ok(d) => d,
        Err(e) => return corrupt(format!("header does not decode as {}: {}", format.extensions_str()[0], e.message)),
    };
    if w < MIN_SIDE || h < MIN_SIDE {
        return corrupt(format!("image size {w}x{h} is under {MIN_SIDE} pixels on a side"));
    }
    if format == ImageFormat::Jpeg && !ends_with_eoi(path) {
        return Some(Finding::TruncatedJpeg);
    }
    None
}

/// Whether the file's last two bytes are the JPEG end-of-image marker `FF D9` (ultralytics'
/// corrupt-JPEG test). An unreadable tail counts as missing.
fn ends_with_eoi(path: &Path) -> bool {
    let mut tail = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-2))?;
            f.read_exact(&mut tail)
        })
        .is_ok()
        && tail == [0xff, 0xd9]
}

/// The warning text for one finding: the file, the reason, and what to do.
pub fn describe(path: &Path, finding: &Finding) -> String {
    match finding {
        Finding::Corrupt(why) => {
            format!("{}: corrupt image ({why}): remove or re-export the file; training skips it", path.display())
        }
        Finding::TruncatedJpeg => format!(
            "{}: JPEG has no end-of-image marker (truncated?); ultralytics restores and re-saves such a file, \
             kubeyolo reads it as is (missing rows may be grey): re-export it to be sure",
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(dir: &Path, name: &str, w: u32, h: u32) -> PathBuf {
        let p = dir.join(name);
        image::RgbImage::new(w, h).save_with_format(&p, ImageFormat::Png).unwrap();
        p
    }

    #[test]
    fn findings_per_kind() {
        let d = tempfile::tempdir().unwrap();
        let good = write_png(d.path(), "good.png", 32, 16);
        let small = write_png(d.path(), "small.png", 32, 9);
        let garbage = d.path().join("garbage.jpg");
        std::fs::write(&garbage, b"definitely not a jpeg file").unwrap();
        let jpg = d.path().join("cut.jpg");
        image::RgbImage::new(32, 32).save_with_format(&jpg, ImageFormat::Jpeg).unwrap();
        let full = std::fs::read(&jpg).unwrap();
        assert_eq!(&full[full.len() - 2..], &[0xff, 0xd9]);
        assert_eq!(check_image(&jpg), None);
        std::fs::write(&jpg, &full[..full.len() - 2]).unwrap();
        // a PNG named .jpg is fine: the content decides
        let png_as_jpg = d.path().join("png.jpg");
        std::fs::copy(&good, &png_as_jpg).unwrap();

        assert_eq!(check_image(&good), None);
        assert_eq!(check_image(&png_as_jpg), None);
        assert!(matches!(check_image(&small), Some(Finding::Corrupt(w)) if w.contains("32x9")));
        assert!(matches!(check_image(&garbage), Some(Finding::Corrupt(_))));
        assert!(
            matches!(check_image(&d.path().join("missing.png")), Some(Finding::Corrupt(w)) if w.contains("cannot open"))
        );
        assert_eq!(check_image(&jpg), Some(Finding::TruncatedJpeg));

        let s = scan(&[good, small, garbage, jpg]);
        assert_eq!((s.checked, s.corrupt(), s.usable(), s.findings.len()), (4, 2, 2, 3));
    }
}
