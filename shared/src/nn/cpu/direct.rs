//! A direct AVX-512 kernel for the shifted convolutions of [`super::shifted`]: every kernel tap
//! and input channel accumulated in registers, reading the padded image in place.
//!
//! Why: YOLOv8's convs are thin GEMMs (16–128 output channels, K = C per tap). Through the
//! `gemm` crate each of the k² = 9 taps is its own GEMM, and each packs its shifted view of the
//! input (C × pixels floats) before multiplying: with 16 output channels that packing costs as
//! much as the 2·16 FLOP per packed float it feeds, and the 9 partial sums make 9 passes over
//! the output. The shifted view needs no packing at all — for a fixed tap and channel, a run of
//! output pixels reads one contiguous run of the padded plane — so this kernel loads 48 pixels
//! (three 16-float vectors) of it, broadcasts 8 output channels' weights, and does 24 FMAs; the
//! 24 accumulators stay in registers across all taps and channels and are stored once.
//!
//! Used where the CPU has AVX-512F (checked once at run time; `KUBEYOLO_NO_AVX512=1` turns it
//! off); elsewhere the GEMMs run.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

/// Pixels (wide-grid columns) per micro-tile: three 16-float vectors.
pub(crate) const COLS: usize = 48;
/// Output channels per micro-tile.
const ROWS: usize = 8;
/// Weight floats an output-channel group may hold (≈ 512 KiB, a quarter of this CPU's L2).
const L2_WEIGHTS: usize = 128 * 1024;

/// Switched off by [`set_enabled`] (benchmarks time both paths in one process).
static DISABLED: AtomicBool = AtomicBool::new(false);

/// Turns the direct kernels off (`false`) or back on where the CPU has them: for benchmarks
/// that compare them with the GEMM path in one process.
pub fn set_enabled(on: bool) {
    DISABLED.store(!on, Ordering::Relaxed);
}

/// Whether the kernel runs: this CPU has AVX-512 ([`super::fastmath::avx512`]) and the kernel
/// is not switched off.
pub(crate) fn available() -> bool {
    !DISABLED.load(Ordering::Relaxed) && super::fastmath::avx512()
}

/// A shifted convolution: for each output channel `o` in `os` and column `q < cols`,
/// `dst[(o − os.start)·ld + q] = Σ_t Σ_c w[(t·O + o)·C + c] · x[c·plane + offs[t] + q]`.
///
/// `x`: C planes of `plane` floats (a padded image from the tile's first column, or an image
/// itself for a 1×1 conv with `offs = [0]`); `w`: taps × O × C (O = `w.len() / (taps·C)`).
/// With `par` = Rayon, column ranges of whole micro-tiles run on the threads.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv(
    x: &[f32],
    (plane, c): (usize, usize),
    offs: &[usize],
    w: &[f32],
    os: Range<usize>,
    cols: usize,
    (dst, ld): (&mut [f32], usize),
    par: gemm::Parallelism,
) {
    if os.is_empty() || cols == 0 {
        return;
    }
    assert!(ld >= cols && dst.len() >= (os.len() - 1) * ld + cols, "direct conv: output too short");
    let dp = SendPtr(dst.as_mut_ptr());
    match par {
        gemm::Parallelism::Rayon(n) if n > 1 && cols > 2 * COLS => {
            let per = cols.div_ceil(n).next_multiple_of(COLS);
            rayon::scope(|s| {
                for q0 in (0..cols).step_by(per) {
                    let os = os.clone();
                    s.spawn(move |_| {
                        let dp = dp;
                        // SAFETY: the tasks' column ranges are disjoint and inside `dst`'s rows
                        // (asserted above).
                        unsafe { conv_raw(&x[q0..], (plane, c), offs, w, os, per.min(cols - q0), (dp.0.add(q0), ld)) };
                    });
                }
            });
        }
        // SAFETY: `dst` holds every element written (asserted above) and is borrowed mutably.
        _ => unsafe { conv_raw(x, (plane, c), offs, w, os, cols, (dp.0, ld)) },
    }
}

/// [`conv`] on one thread, writing through a raw pointer (for tasks that write disjoint tiles
/// of the same rows).
///
/// # Safety
/// `dst + i·ld + q` must be valid for writes, and used by no one else, for every
/// `i < os.len()`, `q < cols`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv_raw(
    x: &[f32],
    (plane, c): (usize, usize),
    offs: &[usize],
    w: &[f32],
    os: Range<usize>,
    cols: usize,
    (dst, ld): (*mut f32, usize),
) {
    assert!(available(), "direct conv: AVX-512F not available");
    let o_all = w.len() / (offs.len() * c).max(1);
    assert_eq!(w.len(), offs.len() * o_all * c, "direct conv: weights are not taps × O × C");
    assert!(os.end <= o_all && ld >= cols, "direct conv: channel range or row stride");
    if os.is_empty() || cols == 0 {
        return;
    }
    let max_off = offs.iter().copied().max().unwrap_or(0);
    assert!(c > 0 && x.len() >= (c - 1) * plane + max_off + cols, "direct conv: no channels or input too short");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present (asserted); the asserts above bound every input index the
    // kernel reads (tail columns are masked, not read or written), the caller the outputs.
    unsafe {
        avx512::tile(x.as_ptr(), (plane, c), offs, w.as_ptr(), o_all, os, cols, (dst, ld))
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("direct conv: x86-64 only")
}

/// A raw output pointer handed to tasks that write disjoint parts of one buffer.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: used only for disjoint writes (see `conv`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{COLS, L2_WEIGHTS, ROWS};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Walks the tile in micro-tiles: column blocks outside (the input they read stays in L1
    /// across the channel blocks), channel blocks of 8 (then 4, 2, 1) inside; output channels
    /// in groups whose weights fit in L2, so they are not re-read from L3 for every column block.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        x: *const f32,
        (plane, c): (usize, usize),
        offs: &[usize],
        w: *const f32,
        o_all: usize,
        os: Range<usize>,
        cols: usize,
        (dst, ld): (*mut f32, usize),
    ) {
        let group = (L2_WEIGHTS / (offs.len() * c)).max(ROWS) / ROWS * ROWS;
        for g0 in os.clone().step_by(group) {
            let g = g0..(g0 + group).min(os.end);
            let mut q = 0;
            while q < cols {
                let n = (cols - q).min(COLS);
                let masks = [lanes(n, 0), lanes(n, 16), lanes(n, 32)];
                let mut o = g.start;
                while o < g.end {
                    let d = dst.add((o - os.start) * ld + q);
                    let wo = w.add(o * c);
                    let args = (x.add(q), plane, c, offs, wo, o_all * c, d, ld, masks, n);
                    o += match g.end - o {
                        r if r >= ROWS => micro::<ROWS>(args),
                        r if r >= 4 => micro::<4>(args),
                        r if r >= 2 => micro::<2>(args),
                        _ => micro::<1>(args),
                    };
                }
                q += n;
            }
        }
    }

    /// The mask of lanes `from..from+16` that lie below `n`.
    #[inline(always)]
    fn lanes(n: usize, from: usize) -> __mmask16 {
        let k = n.saturating_sub(from).min(16);
        if k == 16 {
            0xffff
        } else {
            ((1u32 << k) - 1) as __mmask16
        }
    }

    /// Arguments of [`micro`]: input at the block's first column, plane stride, channels, tap
    /// offsets, weights at the block's first channel in tap 0, tap stride (O·C), output and its
    /// row stride, column masks, columns.
    type Micro<'a> = (*const f32, usize, usize, &'a [usize], *const f32, usize, *mut f32, usize, [__mmask16; 3], usize);

    /// R output channels × `n` ≤ 48 columns; returns R.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn micro<const R: usize>((x, plane, c, offs, w, tap_stride, dst, ld, m, n): Micro) -> usize {
        let mut acc = [[_mm512_setzero_ps(); 3]; R];
        let full = n == COLS;
        for (t, &off) in offs.iter().enumerate() {
            let xt = x.add(off);
            let wt = w.add(t * tap_stride);
            for cc in 0..c {
                let xp = xt.add(cc * plane);
                let xv = if full {
                    [_mm512_loadu_ps(xp), _mm512_loadu_ps(xp.add(16)), _mm512_loadu_ps(xp.add(32))]
                } else {
                    [
                        _mm512_maskz_loadu_ps(m[0], xp),
                        _mm512_maskz_loadu_ps(m[1], xp.add(16)),
                        _mm512_maskz_loadu_ps(m[2], xp.add(32)),
                    ]
                };
                let wc = wt.add(cc);
                for (j, a) in acc.iter_mut().enumerate() {
                    let wv = _mm512_set1_ps(*wc.add(j * c));
                    a[0] = _mm512_fmadd_ps(wv, xv[0], a[0]);
                    a[1] = _mm512_fmadd_ps(wv, xv[1], a[1]);
                    a[2] = _mm512_fmadd_ps(wv, xv[2], a[2]);
                }
            }
        }
        for (j, a) in acc.iter().enumerate() {
            for (v, &av) in a.iter().enumerate() {
                let d = dst.add(j * ld + 16 * v);
                if full {
                    _mm512_storeu_ps(d, av);
                } else {
                    _mm512_mask_storeu_ps(d, m[v], av);
                }
            }
        }
        R
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the defining sum, over channel counts that exercise every micro-tile height
    /// (8, 4, 2, 1), column counts with and without a masked tail, weight groups smaller than
    /// O, serial and over rayon.
    #[test]
    fn matches_the_sum() {
        if !available() {
            eprintln!("skipped: no AVX-512F");
            return;
        }
        for &(c, o_all, cols, plane) in
            &[(3, 16, 96, 200), (16, 15, 50, 120), (5, 9, 7, 40), (1, 1, 1, 10), (8, 8, 45, 80), (200, 170, 50, 60)]
        {
            let offs = [0usize, 1, 5, 9];
            let x: Vec<f32> = (0..c * plane).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let w: Vec<f32> = (0..offs.len() * o_all * c).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
            let os = 1.min(o_all - 1)..o_all;
            let ld = cols + 3;
            for par in [gemm::Parallelism::None, gemm::Parallelism::Rayon(2)] {
                let mut dst = vec![f32::NAN; os.len() * ld];
                conv(&x, (plane, c), &offs, &w, os.clone(), cols, (&mut dst, ld), par);
                for (i, o) in os.clone().enumerate() {
                    for q in 0..cols {
                        let want: f32 = (0..offs.len())
                            .flat_map(|t| (0..c).map(move |cc| (t, cc)))
                            .map(|(t, cc)| w[(t * o_all + o) * c + cc] * x[cc * plane + offs[t] + q])
                            .sum();
                        let got = dst[i * ld + q];
                        assert!((got - want).abs() < 1e-5, "c {c} o {o} q {q}: {got} vs {want}");
                    }
                    assert!(dst[i * ld + cols..(i + 1) * ld].iter().all(|v| v.is_nan()), "wrote past its columns");
                }
            }
        }
    }
}
