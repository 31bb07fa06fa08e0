//! ultralytics' `Mosaic` (n = 4): four images around a random centre on a 2·imgsz canvas of
//! grey 114; boxes shifted with their image, clipped to the canvas, zero-area boxes dropped.

use rand::Rng;

use super::perspective::Region;
use super::{uniform, Sample};
use crate::data::image::PAD_VALUE;

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
    mosaic4_region(imgs, s, d, Region::whole(2 * s))
}

/// [`mosaic4`] with only `region` of the canvas built: the image is that rectangle (its pixel
/// (0, 0) is canvas pixel (x0, y0)); boxes are in whole-canvas coordinates, as in `mosaic4`.
/// Why: the random affine that follows reads, on average, a third of the canvas (scale
/// 0.5–1.5 of a 2s canvas into s); building only what it reads saves most of the copying.
pub fn mosaic4_region(imgs: [&Sample; 4], s: usize, d: MosaicDraws, region: Region) -> Sample {
    let s2 = 2 * s as i64;
    let (xc, yc) = (d.xc, d.yc);
    let mut boxes = Vec::new();
    let mut cls = Vec::new();
    let mut places = Vec::with_capacity(4);
    for (i, p) in imgs.iter().enumerate() {
        let (w, h) = (p.width() as i64, p.height() as i64);
        let (x1a, y1a, x2a, y2a, x1b, y1b);
        match i {
            0 => {
                (x1a, y1a, x2a, y2a) = ((xc - w).max(0), (yc - h).max(0), xc, yc);
                (x1b, y1b) = (w - (x2a - x1a), h - (y2a - y1a));
            }
            1 => {
                (x1a, y1a, x2a, y2a) = (xc, (yc - h).max(0), (xc + w).min(s2), yc);
                (x1b, y1b) = (0, h - (y2a - y1a));
            }
            2 => {
                (x1a, y1a, x2a, y2a) = ((xc - w).max(0), yc, xc, s2.min(yc + h));
                (x1b, y1b) = (w - (x2a - x1a), 0);
            }
            _ => {
                (x1a, y1a, x2a, y2a) = (xc, yc, (xc + w).min(s2), s2.min(yc + h));
                (x1b, y1b) = (0, 0);
            }
        }
        places.extend(Placement::new(&p.img, (x1a, y1a, x2a, y2a), (x1b, y1b), 2 * s));
        let (padw, padh) = ((x1a - x1b) as f32, (y1a - y1b) as f32);
        for (b, &c) in p.boxes.iter().zip(&p.cls) {
            boxes.push([b[0] + padw, b[1] + padh, b[2] + padw, b[3] + padh]);
            cls.push(c);
        }
    }
    let mut out = Sample { img: canvas(2 * s, region, &places), boxes, cls };
    out.clip(s2 as f32, s2 as f32);
    out.remove_zero_area();
    out
}

/// Where one image lands on the canvas: numpy's `img4[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]`
/// with both slices cut to what exists (the two always have the same size in `mosaic4`, which
/// ultralytics relies on too; empty or reversed ranges place nothing).
struct Placement<'a> {
    src: &'a image::RgbImage,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
    sx: usize,
    sy: usize,
}

impl<'a> Placement<'a> {
    fn new(
        src: &'a image::RgbImage,
        (x1a, y1a, x2a, y2a): (i64, i64, i64, i64),
        (x1b, y1b): (i64, i64),
        size: usize,
    ) -> Option<Self> {
        let (w, h) = ((x2a - x1a).max(0) as usize, (y2a - y1a).max(0) as usize);
        if w == 0 || h == 0 || x1b < 0 || y1b < 0 || x1a < 0 || y1a < 0 {
            return None;
        }
        let (x, y, sx, sy) = (x1a as usize, y1a as usize, x1b as usize, y1b as usize);
        let w = w.min((src.width() as usize).saturating_sub(sx)).min(size.saturating_sub(x));
        let h = h.min((src.height() as usize).saturating_sub(sy)).min(size.saturating_sub(y));
        (w > 0 && h > 0).then_some(Placement { src, x, y, w, h, sx, sy })
    }
}

/// `region` of the `size`² canvas: grey 114 wherever no image lands, the placed images
/// elsewhere, each byte written once. Why: filling the whole canvas first (as numpy's
/// `np.full` does) wrote 4·imgsz² pixels per sample, most of them overwritten at once.
fn canvas(size: usize, r: Region, places: &[Placement]) -> image::RgbImage {
    assert!(
        r.x0 < r.x1 && r.x1 <= size && r.y0 < r.y1 && r.y1 <= size,
        "mosaic: region {r:?} outside the {size}² canvas"
    );
    let (rw, rh) = (r.x1 - r.x0, r.y1 - r.y0);
    let row = rw * 3;
    for p in places {
        assert!(p.x + p.w <= size && p.y + p.h <= size, "mosaic: placement outside the canvas");
        assert!(
            p.sx + p.w <= p.src.width() as usize && p.sy + p.h <= p.src.height() as usize,
            "mosaic: placement outside its image"
        );
    }
    let mut buf: Vec<u8> = Vec::with_capacity(row * rh);
    let dst = buf.as_mut_ptr();
    let mut segs: Vec<(usize, usize, &Placement)> = Vec::with_capacity(places.len());
    for y in r.y0..r.y1 {
        // the placements on this row, cut to the region's columns
        segs.clear();
        segs.extend(
            places
                .iter()
                .filter(|p| (p.y..p.y + p.h).contains(&y))
                .map(|p| (p.x.max(r.x0), (p.x + p.w).min(r.x1), p))
                .filter(|(lo, hi, _)| lo < hi),
        );
        segs.sort_by_key(|&(lo, _, _)| lo);
        let out = (y - r.y0) * row;
        let mut x = r.x0;
        for &(lo, hi, p) in &segs {
            // SAFETY: writes stay in this row of the allocation (r.x0 <= x, lo, hi <= r.x1);
            // reads stay in the source row (lo - p.x + p.sx + (hi - lo) <= p.sx + p.w, asserted).
            unsafe {
                if lo > x {
                    std::ptr::write_bytes(dst.add(out + (x - r.x0) * 3), PAD_VALUE, (lo - x) * 3);
                }
                let src =
                    p.src.as_raw().as_ptr().add(((p.sy + y - p.y) * p.src.width() as usize + p.sx + lo - p.x) * 3);
                std::ptr::copy_nonoverlapping(src, dst.add(out + (lo - r.x0) * 3), (hi - lo) * 3);
            }
            x = x.max(hi);
        }
        if x < r.x1 {
            // SAFETY: as above.
            unsafe { std::ptr::write_bytes(dst.add(out + (x - r.x0) * 3), PAD_VALUE, (r.x1 - x) * 3) };
        }
    }
    // SAFETY: every row was written from r.x0 to r.x1: gaps with 114, the rest by copies
    // (placements on one row never overlap: the top two meet at xc, as the bottom two do).
    unsafe { buf.set_len(row * rh) };
    image::RgbImage::from_raw(rw as u32, rh as u32, buf).expect("canvas size")
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

    /// The reference: numpy's order of operations, a full 114 canvas, then each image's
    /// slice assigned in turn.
    fn naive(imgs: [&Sample; 4], s: usize, d: MosaicDraws) -> image::RgbImage {
        let mut canvas = image::RgbImage::from_pixel(2 * s as u32, 2 * s as u32, image::Rgb([PAD_VALUE; 3]));
        let s2 = 2 * s as i64;
        for (i, p) in imgs.iter().enumerate() {
            let (w, h) = (p.width() as i64, p.height() as i64);
            let (x1a, y1a, x2a, y2a) = match i {
                0 => ((d.xc - w).max(0), (d.yc - h).max(0), d.xc, d.yc),
                1 => (d.xc, (d.yc - h).max(0), (d.xc + w).min(s2), d.yc),
                2 => ((d.xc - w).max(0), d.yc, d.xc, s2.min(d.yc + h)),
                _ => (d.xc, d.yc, (d.xc + w).min(s2), s2.min(d.yc + h)),
            };
            let (x1b, y1b) = match i {
                0 => (w - (x2a - x1a), h - (y2a - y1a)),
                1 => (0, h - (y2a - y1a)),
                2 => (w - (x2a - x1a), 0),
                _ => (0, 0),
            };
            for y in y1a.max(0)..y2a {
                for x in x1a.max(0)..x2a {
                    let (sx, sy) = (x - x1a + x1b, y - y1a + y1b);
                    if sx >= 0 && sy >= 0 && sx < w && sy < h && x < s2 && y < s2 {
                        canvas.put_pixel(x as u32, y as u32, *p.img.get_pixel(sx as u32, sy as u32));
                    }
                }
            }
        }
        canvas
    }

    #[test]
    fn canvas_equals_fill_then_assign() {
        use rand::{Rng, SeedableRng as _};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..60 {
            let s = 32;
            let imgs: Vec<Sample> = (0..4u8)
                .map(|k| {
                    let (w, h) = (rng.gen_range(1..=40u32), rng.gen_range(1..=40u32));
                    Sample {
                        img: image::RgbImage::from_fn(w, h, |x, y| image::Rgb([k * 50 + 1, x as u8, y as u8])),
                        boxes: vec![],
                        cls: vec![],
                    }
                })
                .collect();
            let d = MosaicDraws::draw(&mut rng, s);
            let m = mosaic4([&imgs[0], &imgs[1], &imgs[2], &imgs[3]], s, d);
            assert_eq!(m.img, naive([&imgs[0], &imgs[1], &imgs[2], &imgs[3]], s, d), "{d:?}");
        }
    }

    /// Building only the part of the canvas the affine reads gives the same warped image and
    /// boxes as building it all, for ultralytics' default draws and wider ones (rotation, shear,
    /// scales that read the whole canvas or beyond it).
    #[test]
    fn region_canvas_warps_like_the_whole_canvas() {
        use crate::data::augment::perspective::{self as pp, AffineDraws};
        use rand::{Rng, SeedableRng as _};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let s = 64;
        let mut partial = 0;
        for k in 0..80 {
            let imgs: Vec<Sample> = (0..4u8)
                .map(|i| {
                    let (w, h) = (rng.gen_range(20..=64u32), rng.gen_range(20..=64u32));
                    let img = image::RgbImage::from_fn(w, h, |x, y| {
                        image::Rgb([i * 60 + (x % 7) as u8, (x * y % 251) as u8, y as u8])
                    });
                    Sample { img, boxes: vec![[2.0, 3.0, w as f32 - 4.0, h as f32 - 2.0]], cls: vec![i as usize] }
                })
                .collect();
            let ims = [&imgs[0], &imgs[1], &imgs[2], &imgs[3]];
            let d = MosaicDraws::draw(&mut rng, s);
            let wide = k % 2 == 1;
            let a = AffineDraws {
                perspective: [0.0; 2],
                angle: if wide { rng.gen_range(-45.0..45.0) } else { 0.0 },
                scale: rng.gen_range(if wide { 0.3..2.0 } else { 0.5..1.5 }),
                shear: if wide { [rng.gen_range(-10.0..10.0), rng.gen_range(-10.0..10.0)] } else { [0.0; 2] },
                translate: [rng.gen_range(0.4..0.6), rng.gen_range(0.4..0.6)],
            };
            let (m, scale) = pp::affine_matrix(&a, 2 * s, 2 * s, (s, s));
            let whole = pp::random_perspective(&mosaic4(ims, s, d), &m, scale, (s, s), false);
            let r = pp::source_region(&m, (s, s), (2 * s, 2 * s)).expect("a region");
            partial += ((r.x1 - r.x0) * (r.y1 - r.y0) < 4 * s * s) as usize;
            let part = pp::random_perspective_at(&mosaic4_region(ims, s, d, r), (r.x0, r.y0), &m, scale, (s, s), false);
            assert_eq!(part, whole, "case {k}: {a:?} region {r:?}");
        }
        assert!(partial > 40, "most cases must build only part of the canvas ({partial} of 80)");
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
