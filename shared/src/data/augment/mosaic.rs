//! ultralytics' `Mosaic` (n = 4): four images around a random centre on a 2·imgsz canvas of
//! grey 114; boxes shifted with their image, clipped to the canvas, zero-area boxes dropped.

use rand::Rng;

use super::{grey, uniform, Sample};

/// The mosaic's random draw: the centre (xc, yc) on the 2s×2s canvas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MosaicDraws {
    pub xc: i64,
    pub yc: i64,
}

impl MosaicDraws {
    /// `yc, xc = (int(random.uniform(-x, 2 * s + x)) for x in self.border)`, border = -s // 2.
    pub fn draw(rng: &mut impl Rng, s: usize) -> Self {
        let x = -((s as i64 + 1) / 2); // Python's -s // 2 (floor)
        let lo = -x as f64;
        let hi = (2 * s as i64 + x) as f64;
        let yc = uniform(rng, lo, hi) as i64;
        let xc = uniform(rng, lo, hi) as i64;
        MosaicDraws { xc, yc }
    }
}

/// Place `imgs` (top-left, top-right, bottom-left, bottom-right; the first is the sample's own
/// image) around the centre, as `Mosaic.get_params` / `apply_image` / `_cat_labels` do.
pub fn mosaic4(imgs: [&Sample; 4], s: usize, d: MosaicDraws) -> Sample {
    let s2 = 2 * s as i64;
    let mut canvas = grey(2 * s, 2 * s);
    let (xc, yc) = (d.xc, d.yc);
    let mut boxes = Vec::new();
    let mut cls = Vec::new();
    for (i, p) in imgs.iter().enumerate() {
        let (w, h) = (p.width() as i64, p.height() as i64);
        let (x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b);
        match i {
            0 => {
                (x1a, y1a, x2a, y2a) = ((xc - w).max(0), (yc - h).max(0), xc, yc);
                (x1b, y1b, x2b, y2b) = (w - (x2a - x1a), h - (y2a - y1a), w, h);
            }
            1 => {
                (x1a, y1a, x2a, y2a) = (xc, (yc - h).max(0), (xc + w).min(s2), yc);
                (x1b, y1b, x2b, y2b) = (0, h - (y2a - y1a), w.min(x2a - x1a), h);
            }
            2 => {
                (x1a, y1a, x2a, y2a) = ((xc - w).max(0), yc, xc, s2.min(yc + h));
                (x1b, y1b, x2b, y2b) = (w - (x2a - x1a), 0, w, (y2a - y1a).min(h));
            }
            _ => {
                (x1a, y1a, x2a, y2a) = (xc, yc, (xc + w).min(s2), s2.min(yc + h));
                (x1b, y1b, x2b, y2b) = (0, 0, w.min(x2a - x1a), (y2a - y1a).min(h));
            }
        }
        copy_region(&mut canvas, &p.img, (x1a, y1a, x2a, y2a), (x1b, y1b, x2b, y2b));
        let (padw, padh) = ((x1a - x1b) as f32, (y1a - y1b) as f32);
        for (b, &c) in p.boxes.iter().zip(&p.cls) {
            boxes.push([b[0] + padw, b[1] + padh, b[2] + padw, b[3] + padh]);
            cls.push(c);
        }
    }
    let mut out = Sample { img: canvas, boxes, cls };
    out.clip(s2 as f32, s2 as f32);
    out.remove_zero_area();
    out
}

/// numpy's `img4[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]`. The two slices always have the
/// same size in `mosaic4` (ultralytics relies on that too); empty or reversed ranges copy nothing.
fn copy_region(dst: &mut image::RgbImage, src: &image::RgbImage, a: (i64, i64, i64, i64), b: (i64, i64, i64, i64)) {
    let (x1a, y1a, x2a, y2a) = a;
    let (x1b, y1b, _, _) = b;
    let w = (x2a - x1a).max(0) as usize;
    let h = (y2a - y1a).max(0) as usize;
    if w == 0 || h == 0 || x1b < 0 || y1b < 0 {
        return;
    }
    let (dw, sw) = (dst.width() as usize, src.width() as usize);
    let (x1a, y1a, x1b, y1b) = (x1a as usize, y1a as usize, x1b as usize, y1b as usize);
    let w = w.min(sw.saturating_sub(x1b)).min(dw.saturating_sub(x1a));
    let h = h.min((src.height() as usize).saturating_sub(y1b)).min((dst.height() as usize).saturating_sub(y1a));
    let s = src.as_raw();
    let d: &mut [u8] = dst;
    for y in 0..h {
        let so = ((y1b + y) * sw + x1b) * 3;
        let dof = ((y1a + y) * dw + x1a) * 3;
        d[dof..dof + w * 3].copy_from_slice(&s[so..so + w * 3]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(w: u32, h: u32, v: u8, boxes: Vec<[f32; 4]>) -> Sample {
        let cls = vec![0; boxes.len()];
        Sample { img: image::RgbImage::from_pixel(w, h, image::Rgb([v; 3])), boxes, cls }
    }

    #[test]
    fn centre_places_the_four_images() {
        let a = solid(64, 48, 10, vec![[0.0, 0.0, 64.0, 48.0]]);
        let b = solid(64, 64, 20, vec![[10.0, 10.0, 20.0, 20.0]]);
        let c = solid(32, 64, 30, vec![]);
        let d = solid(64, 64, 40, vec![[60.0, 60.0, 64.0, 64.0]]);
        let m = mosaic4([&a, &b, &c, &d], 64, MosaicDraws { xc: 50, yc: 70 });
        assert_eq!((m.width(), m.height()), (128, 128));
        assert_eq!(m.img.get_pixel(49, 69).0, [10; 3]); // top-left ends at the centre
        assert_eq!(m.img.get_pixel(50, 69).0, [20; 3]);
        assert_eq!(m.img.get_pixel(49, 70).0, [30; 3]);
        assert_eq!(m.img.get_pixel(50, 70).0, [40; 3]);
        assert_eq!(m.img.get_pixel(0, 0).0, [114; 3]); // above the 48-px-high first image
        // first image's box shifted by (50 - 64, 70 - 48) and clipped at 0.
        assert_eq!(m.boxes[0], [0.0, 22.0, 50.0, 70.0]);
        assert_eq!(m.boxes[1], [60.0, 16.0, 70.0, 26.0]);
        // the bottom-right box lands at y 130..134, below the canvas: clipped to zero area, dropped.
        assert_eq!(m.boxes.len(), 2);
    }

    #[test]
    fn centre_draw_range() {
        use rand::SeedableRng as _;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let d = MosaicDraws::draw(&mut rng, 64);
            assert!((32..96).contains(&d.xc) && (32..96).contains(&d.yc), "{d:?}");
        }
    }
}
