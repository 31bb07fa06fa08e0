//! ultralytics' `train_batch{N}.jpg` (`utils/plotting.py::plot_images`): up to 16 images of a
//! training batch tiled in a square grid (white canvas, white tile borders), each box drawn in
//! its class colour (ultralytics' 20-colour palette) with the class name above it, and the file
//! name in the tile's top-left corner. A mosaic wider than 1920 px is scaled down, as there.

use std::path::Path;

use image::RgbImage;
use plotters::prelude::*;
use plotters::style::RGBColor;

use crate::data::image::resize_linear;
use crate::data::loader::Batch;
use crate::error::{Error, Result};
use crate::files;

/// ultralytics' `Colors` palette (hex order of `ultralytics.utils.plotting.Colors`).
const PALETTE: [u32; 20] = [
    0x042AFF, 0x0BDBEB, 0xF3F3F3, 0x00DFB7, 0x111F68, 0xFF6FDD, 0xFF444F, 0xCCED00, 0x00F344, 0xBD00FF, 0x00B4FF,
    0xDD00BA, 0x00FFFF, 0x26C000, 0x01FFB3, 0x7D24FF, 0x7B0068, 0xFF1B6C, 0xFC6D2F, 0xA2FF0B,
];

fn class_colour(c: usize) -> RGBColor {
    let h = PALETTE[c % PALETTE.len()];
    RGBColor((h >> 16) as u8, (h >> 8) as u8, h as u8)
}

const MAX_SUBPLOTS: usize = 16;
const MAX_SIZE: f64 = 1920.0;

/// The tiled mosaic and the geometry used to place labels: (canvas, tile scale, grid side).
fn tile(batch: &Batch) -> Result<(RgbImage, f64, usize, usize, usize)> {
    let (b, h, w) = batch.shape;
    if b == 0 || h == 0 || w == 0 || batch.images.len() != b * 3 * h * w {
        return Err(Error::internal(format!(
            "plot_training_batch: batch of shape {:?} holds {} bytes",
            batch.shape,
            batch.images.len()
        )));
    }
    let n = b.min(MAX_SUBPLOTS);
    let ns = (n as f64).sqrt().ceil() as usize;
    let scale = (MAX_SIZE / ns as f64 / h.max(w) as f64).min(1.0);
    let (th, tw) =
        if scale < 1.0 { ((h as f64 * scale).ceil() as usize, (w as f64 * scale).ceil() as usize) } else { (h, w) };
    let mut canvas = RgbImage::from_pixel((ns * tw) as u32, (ns * th) as u32, image::Rgb([255; 3]));
    for i in 0..n {
        let chw = &batch.images[i * 3 * h * w..(i + 1) * 3 * h * w];
        let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let k = y as usize * w + x as usize;
            image::Rgb([chw[k], chw[h * w + k], chw[2 * h * w + k]])
        });
        let img = if scale < 1.0 { resize_linear(&img, tw, th) } else { img };
        let (x0, y0) = ((i % ns) * tw, (i / ns) * th);
        image::imageops::replace(&mut canvas, &img, x0 as i64, y0 as i64);
    }
    Ok((canvas, scale, ns, th, tw))
}

/// ultralytics' train_batch{N}.jpg: up to 16 images tiled, boxes + class names. Written atomically.
pub fn plot_training_batch(batch: &Batch, names: &[String], path: &Path) -> Result<()> {
    super::register_fonts()?;
    let (mut canvas, _scale, ns, th, tw) = tile(batch)?;
    let n = batch.shape.0.min(MAX_SUBPLOTS);
    let (cw, ch) = (canvas.width(), canvas.height());
    let fs = ((th + tw) as f64 / 2.0 * 0.05).clamp(10.0, 24.0) as u32;
    {
        let raw: &mut [u8] = &mut canvas;
        let root = super::glyphs::TextFix(BitMapBackend::with_buffer(raw, (cw, ch))).into_drawing_area();
        let draw = || -> super::DrawResult {
            for i in 0..n {
                let (x0, y0) = (((i % ns) * tw) as i32, ((i / ns) * th) as i32);
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + tw as i32 - 1, y0 + th as i32 - 1)],
                    WHITE.stroke_width(2),
                ))?;
                if let Some(p) = batch.paths.get(i) {
                    let name: String =
                        p.file_name().map(|s| s.to_string_lossy().chars().take(40).collect()).unwrap_or_default();
                    root.draw(&Text::new(
                        name,
                        (x0 + 5, y0 + 3),
                        (super::FONT, fs).into_font().color(&RGBColor(220, 220, 220)),
                    ))?;
                }
            }
            for ((&bi, &c), b) in batch.targets.batch_idx.iter().zip(&batch.targets.cls).zip(&batch.targets.bboxes) {
                if bi >= n {
                    continue;
                }
                let (x0, y0) = ((bi % ns) * tw, (bi / ns) * th);
                let (cx, cy, bw, bh) = (
                    b[0] as f64 * tw as f64,
                    b[1] as f64 * th as f64,
                    b[2] as f64 * tw as f64,
                    b[3] as f64 * th as f64,
                );
                let (x1, y1) = ((x0 as f64 + cx - bw / 2.0) as i32, (y0 as f64 + cy - bh / 2.0) as i32);
                let (x2, y2) = ((x0 as f64 + cx + bw / 2.0) as i32, (y0 as f64 + cy + bh / 2.0) as i32);
                let col = class_colour(c);
                root.draw(&Rectangle::new([(x1, y1), (x2, y2)], col.stroke_width(2)))?;
                let label = names.get(c).cloned().unwrap_or_else(|| c.to_string());
                let lw = super::text_width(&label, fs) as i32 + 4;
                let ly = (y1 - fs as i32 - 2).max(y0 as i32);
                root.draw(&Rectangle::new([(x1, ly), (x1 + lw, ly + fs as i32 + 2)], col.filled()))?;
                let luma = 0.299 * col.0 as f64 + 0.587 * col.1 as f64 + 0.114 * col.2 as f64;
                let tc = if luma > 140.0 { BLACK } else { WHITE };
                root.draw(&Text::new(label, (x1 + 2, ly + 1), (super::FONT, fs).into_font().color(&tc)))?;
            }
            Ok(())
        };
        draw().map_err(|e| Error::internal(format!("cannot draw the training batch: {e}")))?;
        root.present().map_err(|e| Error::internal(format!("cannot draw the training batch: {e}")))?;
    }
    let mut jpg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpg, 90)
        .encode_image(&canvas)
        .map_err(|e| Error::internal(format!("cannot encode {}: {e}", path.display())))?;
    files::write_atomic(path, &jpg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Targets;

    #[test]
    fn tiles_images_and_draws_boxes() {
        let (b, h, w) = (5, 40, 60);
        let mut targets = Targets::default();
        targets.push(0, 1, [0.5, 0.5, 0.5, 0.5]);
        targets.push(4, 0, [0.25, 0.25, 0.2, 0.2]);
        let batch = Batch {
            images: vec![30; b * 3 * h * w],
            shape: (b, h, w),
            targets,
            paths: (0..b).map(|i| format!("/d/im{i}.jpg").into()).collect(),
            indices: (0..b).collect(),
        };
        let (canvas, scale, ns, th, tw) = tile(&batch).unwrap();
        assert_eq!((ns, th, tw, scale), (3, 40, 60, 1.0));
        assert_eq!(canvas.dimensions(), (180, 120));
        assert_eq!(canvas.get_pixel(170, 110).0, [255; 3]); // empty 9th tile stays white
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("train_batch0.jpg");
        plot_training_batch(&batch, &["a".into(), "b".into()], &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (180, 120));
        // the class-1 box edge (colour 0x0BDBEB) at x = 15 of tile 0
        let px = img.get_pixel(15, 20).0;
        assert!(px[2] > 150 && px[0] < 100, "{px:?}");
    }
}
