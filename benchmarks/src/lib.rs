//! Helpers every benchmark binary shares: medians, the machine's GEMM ceiling, and the
//! deterministic random targets that the loss and train-step benchmarks hand to both sides.

use std::borrow::Borrow;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use kubeyolo::data::Targets;

/// The median (mean of the middle two for an even count; NaN when empty).
pub fn median<B: Borrow<f64>>(v: impl IntoIterator<Item = B>) -> f64 {
    let mut v: Vec<f64> = v.into_iter().map(|x| *x.borrow()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// Best-of-4 GFLOP/s of an m×k · k×n f32 GEMM with the gemm crate on `threads` threads: the
/// ceiling the network's convolutions (GEMMs of these kinds of shapes) can approach.
pub fn gemm_gflops(m: usize, n: usize, k: usize, threads: usize) -> f64 {
    let a = vec![1.0f32; m * k];
    let b = vec![0.5f32; k * n];
    let mut c = vec![0f32; m * n];
    let par = if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None };
    let mut best = f64::INFINITY;
    for _ in 0..4 {
        let t = Instant::now();
        // SAFETY: a (m×k), b (k×n), c (m×n) are row-major and outlive the call.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                c.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr(),
                1,
                k as isize,
                b.as_ptr(),
                1,
                n as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                par,
            )
        };
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * n * k) as f64 / best / 1e9
}

/// Best-of-4 GFLOP/s of a 2048³ f32 GEMM on `threads` threads (the machine's sgemm peak).
pub fn gemm_peak(threads: usize) -> f64 {
    gemm_gflops(2048, 2048, 2048, threads)
}

/// Deterministic uniform numbers in [0, 1) (and normals): the same inputs on every run, with no
/// dependency on a random crate's stream.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.next().max(1e-7), self.next());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// `per_image` random boxes in every image of a batch: sides 2–32 % of the input, wholly inside
/// it, classes uniform over `nc`.
pub fn random_targets(rng: &mut Lcg, batch: usize, nc: usize, per_image: usize) -> Targets {
    let mut t = Targets::default();
    for b in 0..batch {
        for _ in 0..per_image {
            let (w, h) = (0.02 + 0.3 * rng.next(), 0.02 + 0.3 * rng.next());
            let (x, y) = (w / 2.0 + (1.0 - w) * rng.next(), h / 2.0 + (1.0 - h) * rng.next());
            t.push(b, (rng.next() * nc as f32) as usize % nc, [x, y, w, h]);
        }
    }
    t
}

/// Writes targets as ultralytics' batch keys (`batch_idx`, `cls`, `bboxes`) plus `imgsz` (h, w) and
/// any `extra` arrays into one npz for the Python side of a benchmark.
pub fn write_targets_npz(
    path: &Path,
    t: &Targets,
    imgsz: (usize, usize),
    extra: &[(&str, &Tensor)],
) -> kubeyolo::Result<()> {
    let cpu = &Device::Cpu;
    let bi = Tensor::from_vec(t.batch_idx.iter().map(|&v| v as i64).collect::<Vec<_>>(), t.len(), cpu)?;
    let cl = Tensor::from_vec(t.cls.iter().map(|&v| v as i64).collect::<Vec<_>>(), t.len(), cpu)?;
    let bb = Tensor::from_vec(t.bboxes.iter().flatten().copied().collect::<Vec<_>>(), (t.len(), 4), cpu)?;
    let sz = Tensor::new(&[imgsz.0 as i64, imgsz.1 as i64], cpu)?;
    let mut arrays = vec![("batch_idx", &bi), ("cls", &cl), ("bboxes", &bb), ("imgsz", &sz)];
    arrays.extend_from_slice(extra);
    Tensor::write_npz(&arrays, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(super::median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(super::median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(super::median(Vec::<f64>::new()).is_nan());
        let mut v = vec![5.0, 7.0];
        assert_eq!(super::median(&mut v), 6.0);
    }
}
