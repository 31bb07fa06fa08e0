//! ultralytics' `MixUp` (blend with a second augmented image, labels concatenated) and `CutMix`
//! (paste a random rectangle of the second image where the first has no objects; keep the
//! second image's boxes that the rectangle covers by at least 10%).

use rand::Rng;

use super::{uniform, Sample};

/// `MixUp.apply_image` / `apply_instances`: `(img1·r + img2·(1 - r)).astype(uint8)`, computed
/// in float64 and truncated like numpy.
pub fn mixup(mut a: Sample, b: &Sample, r: f64) -> Sample {
    let bb = b.img.as_raw();
    let aa: &mut [u8] = &mut a.img;
    for (x, &y) in aa.iter_mut().zip(bb) {
        *x = (*x as f64 * r + y as f64 * (1.0 - r)) as u8;
    }
    a.boxes.extend_from_slice(&b.boxes);
    a.cls.extend_from_slice(&b.cls);
    a
}

/// A Beta(α, β) sample (numpy's `np.random.beta` distribution) from two Gamma samples.
pub fn beta(rng: &mut impl Rng, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    x / (x + y)
}

/// Gamma(shape, 1) by Marsaglia and Tsang's method (shape ≥ 1; boosted for shape < 1).
fn gamma(rng: &mut impl Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let (x, v) = loop {
            let x = normal(rng);
            let v = 1.0 + c * x;
            if v > 0.0 {
                break (x, v * v * v);
            }
        };
        let u: f64 = rng.gen();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// A standard normal sample (Box–Muller).
fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// CutMix's draws: `num_areas` (3) candidate rectangles and which eligible one to take.
#[derive(Debug, Clone, PartialEq)]
pub struct CutMixDraws {
    /// Candidate areas (x1, y1, x2, y2) in pixels, as `_rand_bbox` draws them.
    pub areas: Vec<[i64; 4]>,
    /// Uniform in [0, 1): picks one of the areas that overlap no box (`np.random.choice`).
    pub choice: f64,
}

impl CutMixDraws {
    pub fn draw(rng: &mut impl Rng, w: usize, h: usize) -> Self {
        let areas = (0..3)
            .map(|_| {
                let lam = uniform(rng, 0.0, 1.0); // Beta(1, 1)
                let cut = (1.0 - lam).sqrt();
                let (cw, ch) = ((w as f64 * cut) as i64, (h as f64 * cut) as i64);
                let cx = rng.gen_range(0..w.max(1)) as i64;
                let cy = rng.gen_range(0..h.max(1)) as i64;
                let (w, h) = (w as i64, h as i64);
                [
                    (cx - cw / 2).clamp(0, w),
                    (cy - ch / 2).clamp(0, h),
                    (cx + cw / 2).clamp(0, w),
                    (cy + ch / 2).clamp(0, h),
                ]
            })
            .collect();
        CutMixDraws { areas, choice: rng.gen() }
    }
}

/// ultralytics' `bbox_ioa`: intersection over the area of `b` (eps 1e-7).
fn ioa(a: [f32; 4], b: [f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    iw * ih / ((b[2] - b[0]) * (b[3] - b[1]) + 1e-7)
}

/// `CutMix.get_params` + `apply_image` + `apply_instances` with the draws given.
pub fn cutmix(mut a: Sample, b: &Sample, d: &CutMixDraws) -> Sample {
    let areas: Vec<[f32; 4]> = d.areas.iter().map(|r| r.map(|v| v as f32)).collect();
    let free: Vec<usize> =
        (0..areas.len()).filter(|&k| a.boxes.iter().map(|bx| ioa(areas[k], *bx)).sum::<f32>() <= 0.0).collect();
    if free.is_empty() {
        return a;
    }
    let k = free[((d.choice * free.len() as f64) as usize).min(free.len() - 1)];
    let area = areas[k];
    let picked: Vec<usize> = (0..b.boxes.len()).filter(|&j| ioa(area, b.boxes[j]) >= 0.1).collect();
    if picked.is_empty() {
        return a;
    }
    let [x1, y1, x2, y2] = d.areas[k].map(|v| v.max(0) as usize);
    let w = a.width();
    let bw = b.width();
    let yend = y2.min(a.height()).min(b.height());
    let (src, dst) = (b.img.as_raw(), &mut *a.img);
    for y in y1..yend {
        let (x2c, x1c) = (x2.min(w).min(bw), x1);
        if x2c > x1c {
            dst[(y * w + x1c) * 3..(y * w + x2c) * 3].copy_from_slice(&src[(y * bw + x1c) * 3..(y * bw + x2c) * 3]);
        }
    }
    let (fx1, fy1, fx2, fy2) = (x1 as f32, y1 as f32, x2 as f32, y2 as f32);
    for j in picked {
        let bx = b.boxes[j];
        a.boxes.push([bx[0].clamp(fx1, fx2), bx[1].clamp(fy1, fy2), bx[2].clamp(fx1, fx2), bx[3].clamp(fy1, fy2)]);
        a.cls.push(b.cls[j]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn solid(v: u8, boxes: Vec<[f32; 4]>) -> Sample {
        let cls = vec![v as usize; boxes.len()];
        Sample { img: image::RgbImage::from_pixel(32, 32, image::Rgb([v; 3])), boxes, cls }
    }

    #[test]
    fn mixup_blends_and_concatenates() {
        let m = mixup(solid(100, vec![[0.0, 0.0, 4.0, 4.0]]), &solid(201, vec![[1.0, 1.0, 5.0, 5.0]]), 0.5);
        assert_eq!(m.img.get_pixel(3, 3).0, [150; 3]); // 150.5 truncated
        assert_eq!(m.cls, vec![100, 201]);
    }

    #[test]
    fn beta_32_has_the_right_moments() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let xs: Vec<f64> = (0..20000).map(|_| beta(&mut rng, 32.0, 32.0)).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        // Beta(32, 32): mean 0.5, variance 1/260 = 0.003846.
        assert!((mean - 0.5).abs() < 0.002, "{mean}");
        assert!((var - 1.0 / 260.0).abs() < 0.0003, "{var}");
    }

    #[test]
    fn cutmix_pastes_where_no_box_is() {
        let a = solid(10, vec![[0.0, 0.0, 8.0, 8.0]]);
        let b = solid(200, vec![[20.0, 20.0, 30.0, 30.0]]);
        let d = CutMixDraws { areas: vec![[0, 0, 16, 16], [16, 16, 32, 32], [2, 2, 4, 4]], choice: 0.0 };
        let m = cutmix(a, &b, &d);
        assert_eq!(m.img.get_pixel(20, 20).0, [200; 3]);
        assert_eq!(m.img.get_pixel(15, 15).0, [10; 3]);
        assert_eq!(m.boxes[1], [20.0, 20.0, 30.0, 30.0]);
        assert_eq!(m.cls, vec![10, 200]);
    }
}
