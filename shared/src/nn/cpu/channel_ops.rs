//! Small NCHW CPU ops with direct backward kernels, each working plane by plane ((image, channel)
//! planes in parallel): a per-channel bias add (the Detect head's last convs), 2× nearest
//! upsampling (the neck) and SPPF's stride-1 max pool.
//!
//! Why: composed from candle ops, the bias and upsample backward are sums over broadcast axes,
//! which candle 0.11 runs as strided single-threaded reductions (~20% of a yolov8n training
//! step, issue 7), and the max pool is ~30 element-wise ops forward and more backward.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::lock;
use super::conv::slice;
use super::fastmath::uninit_f32;

/// Σ over images and pixels of `g` (N, C, H, W) per channel.
pub(crate) fn channel_sums(g: &[f32], (n, c, hw): (usize, usize, usize)) -> Vec<f32> {
    (0..c)
        .into_par_iter()
        .map(|ci| {
            (0..n)
                .map(|i| g[(i * c + ci) * hw..(i * c + ci + 1) * hw].iter().map(|&v| v as f64).sum::<f64>())
                .sum::<f64>() as f32
        })
        .collect()
}

/// `x.apply_op2(bias, ChannelBias)`: y = x + bias[c] for NCHW x and bias (C,).
pub(crate) struct ChannelBias;

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "kubeyolo-channel-bias"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let (x, b) = (slice(s1, l1, "input")?, slice(s2, l2, "bias")?);
        if b.len() != c {
            bail!("kubeyolo bias: {} values for {c} channels", b.len());
        }
        let hw = h * w;
        // Every element is written: one plane per task.
        let mut y = uninit_f32(x.len());
        y.par_chunks_mut(hw).zip(x.par_chunks(hw)).enumerate().for_each(|(p, (yp, xp))| {
            let bv = b[p % c];
            for (o, v) in yp.iter_mut().zip(xp) {
                *o = v + bv;
            }
        });
        debug_assert_eq!(x.len(), n * c * hw);
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.contiguous()?;
        let db = g.apply_op1_no_bwd(&ChannelSums)?.reshape(b.shape())?;
        Ok((Some(g), Some(db)))
    }
}

/// The bias gradient: Σ over images and pixels per channel, (N, C, H, W) → (C,).
struct ChannelSums;

impl CustomOp1 for ChannelSums {
    fn name(&self) -> &'static str {
        "kubeyolo-channel-sums"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        Ok((CpuStorage::F32(channel_sums(slice(s, l, "gradient")?, (n, c, h * w))), Shape::from(c)))
    }
}

/// `x.apply_op1(Upsample2x)`: nearest-neighbour 2× upsampling of NCHW x.
pub(crate) struct Upsample2x;

impl CustomOp1 for Upsample2x {
    fn name(&self) -> &'static str {
        "kubeyolo-upsample2x"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let x = slice(s, l, "input")?;
        // Every element is written: each output row pair from one input row.
        let mut y = uninit_f32(x.len() * 4);
        y.par_chunks_mut(4 * h * w).zip(x.par_chunks(h * w)).for_each(|(yp, xp)| upsample2x_plane(xp, yp, w));
        Ok((CpuStorage::F32(y), Shape::from((n, c, 2 * h, 2 * w))))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Downsample2xSum)?.reshape(x.shape())?))
    }
}

/// The upsample's gradient: each output pixel is the sum of its 2×2 block of the input.
struct Downsample2xSum;

impl CustomOp1 for Downsample2xSum {
    fn name(&self) -> &'static str {
        "kubeyolo-upsample2x-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h2, w2) = l.shape().dims4()?;
        if h2 % 2 != 0 || w2 % 2 != 0 {
            bail!("kubeyolo upsample grad: odd size {h2}×{w2}");
        }
        let (h, w) = (h2 / 2, w2 / 2);
        let g = slice(s, l, "gradient")?;
        let mut out = uninit_f32(g.len() / 4);
        out.par_chunks_mut(h * w).zip(g.par_chunks(h2 * w2)).for_each(|(op, gp)| {
            for (orow, grows) in op.chunks_exact_mut(w).zip(gp.chunks_exact(2 * w2)) {
                let (a, b) = grows.split_at(w2);
                for (j, o) in orow.iter_mut().enumerate() {
                    *o = a[2 * j] + a[2 * j + 1] + b[2 * j] + b[2 * j + 1];
                }
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }
}

/// `x.apply_op1(MaxPoolSame { k, .. })`: max pool with odd kernel `k`, stride 1, padding `k / 2`
/// counted as −∞ (PyTorch semantics): the output has the input's size. The backward sends each
/// output's gradient to the first maximum of its window in row-major order, as PyTorch does.
pub(crate) struct MaxPoolSame {
    pub k: usize,
    /// Per output element, the plane offset of its window's maximum (filled by the forward).
    pub argmax: Arc<Mutex<Vec<u32>>>,
}

impl CustomOp1 for MaxPoolSame {
    fn name(&self) -> &'static str {
        "kubeyolo-max-pool-same"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (_, _, h, w) = l.shape().dims4()?;
        if self.k % 2 == 0 || h * w > u32::MAX as usize {
            bail!("kubeyolo max pool: kernel {} must be odd", self.k);
        }
        let x = slice(s, l, "input")?;
        // Every element of both buffers is written: one plane per task.
        let mut y = uninit_f32(x.len());
        let mut arg = vec![0u32; x.len()];
        y.par_chunks_mut(h * w).zip(arg.par_chunks_mut(h * w)).zip(x.par_chunks(h * w)).for_each_init(
            || RowMax::new(h * w),
            |rows, ((yp, ap), xp)| max_pool_plane_argmax(xp, yp, ap, rows, (h, w), self.k),
        );
        *lock(&self.argmax)? = arg;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let arg = std::mem::take(&mut *lock(&self.argmax)?);
        if arg.len() != x.elem_count() {
            bail!("kubeyolo max pool: backward ran twice or without a forward");
        }
        let (_, _, h, w) = x.dims4()?;
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&MaxPoolScatter { arg, hw: h * w })?))
    }
}

/// The window maximum of one point: a candidate replaces the running maximum when it is the
/// first, larger, or NaN — so a window's result is its last NaN if it has one, else its first
/// maximum in scan order (PyTorch's rule).
#[inline(always)]
fn replaces(first: bool, v: f32, best: f32) -> bool {
    first || v > best || v.is_nan()
}

/// The row pass of [`max_pool_plane_argmax`]: per pixel, its row window's maximum and column.
pub(crate) struct RowMax {
    val: Vec<f32>,
    col: Vec<u32>,
}

impl RowMax {
    pub fn new(hw: usize) -> Self {
        RowMax { val: vec![0.0; hw], col: vec![0; hw] }
    }
}

/// [`max_pool_plane`] with the argmax, as two 1-D passes: each row window's maximum and its
/// column, then over the window's rows in order. Scanning the rows top to bottom with the same
/// rule keeps the row-major result (the last NaN, else the first maximum: the earliest row that
/// reaches it, at its first column), with 2k instead of k² comparisons per pixel: the training
/// SPPF's three 5×5 pools were ~0.7 % of a 160 px step (issue 13).
pub(crate) fn max_pool_plane_argmax(
    xp: &[f32],
    yp: &mut [f32],
    ap: &mut [u32],
    rows: &mut RowMax,
    (h, w): (usize, usize),
    k: usize,
) {
    let p = k / 2;
    for i in 0..h {
        let xr = &xp[i * w..(i + 1) * w];
        for j in 0..w {
            let (mut best, mut at, mut first) = (f32::NEG_INFINITY, 0, true);
            for (xx, &v) in xr.iter().enumerate().take((j + p + 1).min(w)).skip(j.saturating_sub(p)) {
                if replaces(first, v, best) {
                    (best, at, first) = (v, xx, false);
                }
            }
            rows.val[i * w + j] = best;
            rows.col[i * w + j] = at as u32;
        }
    }
    for i in 0..h {
        for j in 0..w {
            let (mut best, mut at, mut first) = (f32::NEG_INFINITY, 0, true);
            for yy in i.saturating_sub(p)..(i + p + 1).min(h) {
                let q = yy * w + j;
                let v = rows.val[q];
                if replaces(first, v, best) {
                    (best, at, first) = (v, yy * w + rows.col[q] as usize, false);
                }
            }
            yp[i * w + j] = best;
            ap[i * w + j] = at as u32;
        }
    }
}

/// One plane (H, W) of [`MaxPoolSame`] by its definition: `yp` ← the max over each `k`×`k`
/// window (−∞ padding; NaN wins, as in PyTorch), `ap` ← the plane offset of that maximum when
/// given. The reference the two-pass versions are tested against.
#[cfg(test)]
pub(crate) fn max_pool_plane(xp: &[f32], yp: &mut [f32], mut ap: Option<&mut [u32]>, (h, w): (usize, usize), k: usize) {
    let p = (k / 2) as isize;
    for i in 0..h as isize {
        for j in 0..w as isize {
            let (mut best, mut at) = (f32::NEG_INFINITY, 0usize);
            let mut first = true;
            for yy in (i - p).max(0)..(i + p + 1).min(h as isize) {
                for xx in (j - p).max(0)..(j + p + 1).min(w as isize) {
                    let q = yy as usize * w + xx as usize;
                    let v = xp[q];
                    if replaces(first, v, best) {
                        (best, at, first) = (v, q, false);
                    }
                }
            }
            let o = i as usize * w + j as usize;
            yp[o] = best;
            if let Some(ap) = ap.as_deref_mut() {
                ap[o] = at as u32;
            }
        }
    }
}

/// [`max_pool_plane`] without the argmax, as two 1-D passes (rows, then columns): the same
/// maxima (max is associative, −∞ padding is "skip"), k + k instead of k² comparisons per
/// pixel, and a column pass that vectorizes. `tmp` holds H·W floats. For finite inputs (the
/// eval path; NaN order is not kept).
pub(crate) fn max_pool_plane_fast(xp: &[f32], yp: &mut [f32], tmp: &mut [f32], (h, w): (usize, usize), k: usize) {
    let p = k / 2;
    for (tr, xr) in tmp.chunks_exact_mut(w).zip(xp.chunks_exact(w)) {
        for (j, t) in tr.iter_mut().enumerate() {
            *t = xr[j.saturating_sub(p)..(j + p + 1).min(w)].iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        }
    }
    for i in 0..h {
        let y = &mut yp[i * w..(i + 1) * w];
        y.copy_from_slice(&tmp[i.saturating_sub(p) * w..][..w]);
        for r in i.saturating_sub(p) + 1..(i + p + 1).min(h) {
            for (a, &b) in y.iter_mut().zip(&tmp[r * w..(r + 1) * w]) {
                *a = a.max(b);
            }
        }
    }
}

/// One plane of [`Upsample2x`]: `yp` (2H, 2W) ← nearest-neighbour 2× of `xp` (H, W).
pub(crate) fn upsample2x_plane(xp: &[f32], yp: &mut [f32], w: usize) {
    for (yr, xr) in yp.chunks_exact_mut(4 * w).zip(xp.chunks_exact(w)) {
        let (top, bottom) = yr.split_at_mut(2 * w);
        for (o, v) in top.chunks_exact_mut(2).zip(xr) {
            o[0] = *v;
            o[1] = *v;
        }
        bottom.copy_from_slice(top);
    }
}

/// The max pool's gradient: each output gradient added at its window's maximum.
struct MaxPoolScatter {
    arg: Vec<u32>,
    hw: usize,
}

impl CustomOp1 for MaxPoolScatter {
    fn name(&self) -> &'static str {
        "kubeyolo-max-pool-same-grad"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = slice(s, l, "gradient")?;
        let mut dx = vec![0f32; g.len()];
        dx.par_chunks_mut(self.hw).zip(g.par_chunks(self.hw)).zip(self.arg.par_chunks(self.hw)).for_each(
            |((dp, gp), ap)| {
                for (v, &a) in gp.iter().zip(ap) {
                    dp[a as usize] += *v;
                }
            },
        );
        Ok((CpuStorage::F32(dx), l.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_pass_argmax_equals_the_window_scan() {
        // Ties (values repeat every 5), NaNs and both parities of size, for every SPPF kernel.
        for (h, w) in [(7, 9), (6, 5), (1, 4), (5, 5)] {
            for k in [3, 5, 9, 13] {
                for nan_at in [None, Some(0), Some(h * w / 2), Some(h * w - 1)] {
                    let mut x: Vec<f32> = (0..h * w).map(|i| ((i * 7) % 5) as f32).collect();
                    if let Some(q) = nan_at {
                        x[q] = f32::NAN;
                    }
                    let (mut a, mut b) = (vec![0f32; h * w], vec![0f32; h * w]);
                    let (mut aa, mut ab) = (vec![0u32; h * w], vec![0u32; h * w]);
                    super::max_pool_plane(&x, &mut a, Some(&mut aa), (h, w), k);
                    let mut rows = super::RowMax::new(h * w);
                    super::max_pool_plane_argmax(&x, &mut b, &mut ab, &mut rows, (h, w), k);
                    assert_eq!(aa, ab, "argmax {h}x{w} k {k} NaN at {nan_at:?}");
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&a), bits(&b), "max {h}x{w} k {k}");
                }
            }
        }
    }

    #[test]
    fn separable_max_pool_equals_the_window_max() {
        let (h, w) = (7, 9);
        let x: Vec<f32> = (0..h * w).map(|i| ((i * 37) % 23) as f32 - 11.0).collect();
        for k in [3, 5, 9, 13] {
            let (mut a, mut b, mut t) = (vec![0f32; h * w], vec![0f32; h * w], vec![0f32; h * w]);
            super::max_pool_plane(&x, &mut a, None, (h, w), k);
            super::max_pool_plane_fast(&x, &mut b, &mut t, (h, w), k);
            assert_eq!(a, b, "k {k}");
        }
    }
}
