//! Helpers every benchmark binary shares: medians and the machine's GEMM ceiling.

use std::borrow::Borrow;
use std::time::Instant;

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
                m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0,
                false, false, false, par,
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
