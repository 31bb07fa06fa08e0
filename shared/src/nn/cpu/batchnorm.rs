//! Training-mode BatchNorm (+ optional SiLU) as one CPU kernel with a hand-written backward.
//!
//! Why: `candle_nn::BatchNorm::forward_train` is ~10 tensor ops (transpose + copy, two means,
//! sub, sqr, div, mul, add, transpose back) and its output is a transposed view that the next
//! conv copies again; SiLU adds one op forward and ~6 backward. Each is a full pass over the
//! activation, and YOLOv8 has one BatchNorm + SiLU after every conv, so in a training step these
//! memory-bound passes cost about as much as the convolutions themselves. Here the forward is
//! two passes (statistics, then normalize + activate) and the backward two (reductions, then
//! the input gradient), all in NCHW, parallel over channels.
//!
//! Math (per channel, M = N·H·W elements, biased variance for normalizing as PyTorch does):
//! `x̂ = (x − μ)·r` with `r = 1/√(σ² + eps)`, `z = γ·x̂ + β`, `y = silu(z)` (or `z`).
//! Backward: `dz = dy·silu'(z)`, `dγ = Σ dz·x̂`, `dβ = Σ dz`,
//! `dx = γ·r·(dz − dβ/M − x̂·dγ/M)`.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::buffers::{Buf, View};
use super::conv::slice;
use super::fastmath::{multiversioned, sigmoid, uninit_f32};

/// Per-channel batch statistics of the last forward, shared between the op (for its backward)
/// and the caller (for the running-statistics update).
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    pub mean: Vec<f32>,
    /// Biased variance (what normalizes).
    pub var: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// One channel's constants for the row kernels.
#[derive(Clone, Copy)]
pub(crate) struct Chan {
    pub mean: f32,
    /// 1/√(σ² + eps).
    pub r: f32,
    pub gamma: f32,
    pub beta: f32,
    pub silu: bool,
}

/// Partial sums per row kernel: 16 lanes, one AVX-512 register (two AVX2 ones). With 8, the
/// SiLU-gradient pass used half of an AVX-512 datapath: ~4% of a 160 px training step (issue 13).
const LANES: usize = 16;

/// Σ(x − k) and Σ(x − k)² over a row, in [`LANES`] lanes (vectorizes; the shift k = the channel's
/// first value avoids the cancellation of E[x²] − E[x]² when |mean| ≫ std). A short last chunk
/// is padded with k (adding 0) so it takes the vector path too: rows are as short as 25 (5×5).
#[inline(always)]
fn stats_gen(xs: &[f32], k: f32) -> (f32, f32) {
    let mut acc = ([0f32; LANES], [0f32; LANES]);
    let (chunks, rem) = xs.as_chunks::<LANES>();
    for c in chunks {
        stats_step(&mut acc, c, k);
    }
    if !rem.is_empty() {
        stats_step(&mut acc, &padded(rem, k), k);
    }
    (acc.0.iter().sum::<f32>(), acc.1.iter().sum::<f32>())
}

/// A row's short last chunk, filled up to [`LANES`] with `fill`.
#[inline(always)]
fn padded(rem: &[f32], fill: f32) -> [f32; LANES] {
    let mut a = [fill; LANES];
    a[..rem.len()].copy_from_slice(rem);
    a
}

/// One chunk of [`stats_gen`]: a plain function, not a closure, so it is inlined into the
/// multiversioned copies (a closure was compiled without their target features: `mul_add`
/// became a libm call and the step ran 2× slower).
#[inline(always)]
fn stats_step((s, s2): &mut ([f32; LANES], [f32; LANES]), c: &[f32; LANES], k: f32) {
    for i in 0..LANES {
        let d = c[i] - k;
        s[i] += d;
        s2[i] += d * d;
    }
}
multiversioned!(pub(crate) fn row_stats = stats_gen / stats_avx2(xs: &[f32], k: f32) -> (f32, f32));

/// y = x·scale + shift, then SiLU.
#[inline(always)]
fn fwd_gen(xs: &[f32], ys: &mut [f32], scale: f32, shift: f32, silu: bool) {
    if silu {
        for (o, v) in ys.iter_mut().zip(xs) {
            let z = v * scale + shift;
            *o = z * sigmoid(z);
        }
    } else {
        for (o, v) in ys.iter_mut().zip(xs) {
            *o = v * scale + shift;
        }
    }
}
multiversioned!(pub(crate) fn row_fwd = fwd_gen / fwd_avx2(xs: &[f32], ys: &mut [f32], scale: f32, shift: f32, silu: bool) -> ());

/// dz = dy·silu'(z) (or dy) and x̂ for one element.
#[inline(always)]
fn dz_xh(xv: f32, d: f32, ch: Chan) -> (f32, f32) {
    let xh = (xv - ch.mean) * ch.r;
    if ch.silu {
        let z = ch.gamma * xh + ch.beta;
        let s = sigmoid(z);
        (d * s * (1.0 + z * (1.0 - s)), xh)
    } else {
        (d, xh)
    }
}

/// Writes dz into `dzs` and returns (Σ dz, Σ dz·x̂) over a row, in [`LANES`] lanes; a short last
/// chunk is padded with dy = 0 (dz = 0, adding nothing), as in [`stats_gen`].
#[inline(always)]
fn bwd_sums_gen(xs: &[f32], dys: &[f32], dzs: &mut [f32], ch: Chan) -> (f32, f32) {
    let mut acc = ([0f32; LANES], [0f32; LANES]);
    let ((xc, xr), (dc, dr), (oc, or)) =
        (xs.as_chunks::<LANES>(), dys.as_chunks::<LANES>(), dzs.as_chunks_mut::<LANES>());
    for ((x, d), o) in xc.iter().zip(dc).zip(oc) {
        bwd_sums_step(&mut acc, x, d, o, ch);
    }
    if !or.is_empty() {
        let mut o = [0f32; LANES];
        bwd_sums_step(&mut acc, &padded(xr, ch.mean), &padded(dr, 0.0), &mut o, ch);
        or.copy_from_slice(&o[..or.len()]);
    }
    (acc.0.iter().sum::<f32>(), acc.1.iter().sum::<f32>())
}

/// One chunk of [`bwd_sums_gen`] (a function for the reason given at [`stats_step`]).
#[inline(always)]
fn bwd_sums_step(
    (sb, sg): &mut ([f32; LANES], [f32; LANES]),
    x: &[f32; LANES],
    d: &[f32; LANES],
    o: &mut [f32; LANES],
    ch: Chan,
) {
    for i in 0..LANES {
        let (dz, xh) = dz_xh(x[i], d[i], ch);
        o[i] = dz;
        sb[i] += dz;
        sg[i] += dz * xh;
    }
}
multiversioned!(pub(crate) fn row_bwd_sums = bwd_sums_gen / bwd_sums_avx2(xs: &[f32], dys: &[f32], dzs: &mut [f32], ch: Chan) -> (f32, f32));

/// In place over the dz of pass 1: dx = γ·r·(dz − mb − x̂·mg), mb = Σdz/M, mg = Σdz·x̂/M.
#[inline(always)]
fn bwd_dx_gen(xs: &[f32], dxs: &mut [f32], ch: Chan, mb: f32, mg: f32) {
    let k = ch.gamma * ch.r;
    for (o, x) in dxs.iter_mut().zip(xs) {
        let xh = (x - ch.mean) * ch.r;
        *o = k * (*o - mb - xh * mg);
    }
}
multiversioned!(pub(crate) fn row_bwd_dx = bwd_dx_gen / bwd_dx_avx2(xs: &[f32], dxs: &mut [f32], ch: Chan, mb: f32, mg: f32) -> ());

/// Forward op: `x.apply_op3(gamma, beta, BnFwd)` → y (same shape as x, NCHW).
pub(crate) struct BnFwd {
    pub eps: f64,
    pub silu: bool,
    pub stats: Arc<Mutex<Stats>>,
}

impl CustomOp3 for BnFwd {
    fn name(&self) -> &'static str {
        "kubeyolo-batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        let x = slice(s1, l1, "input")?;
        let gamma = slice(s2, l2, "weight")?;
        let beta = slice(s3, l3, "bias")?;
        if gamma.len() != c || beta.len() != c {
            bail!("kubeyolo batch-norm: {c} channels but weight {} / bias {}", gamma.len(), beta.len());
        }
        let hw = h * w;
        let m = (n * hw) as f64;
        // Every element of y is written below (each (image, channel) row once).
        let mut y = uninit_f32(x.len());
        let yp = Buf::of(&mut y);
        let silu = self.silu;
        let eps = self.eps;
        let stats: Vec<(f32, f32)> = (0..c)
            .into_par_iter()
            .map(|ci| {
                // Pass 1: shifted sums per row in f32, accumulated over rows in f64.
                let k = x[ci * hw];
                let (mut s, mut s2) = (0f64, 0f64);
                for b in 0..n {
                    let (a, a2) = row_stats(&x[(b * c + ci) * hw..(b * c + ci + 1) * hw], k);
                    s += a as f64;
                    s2 += a2 as f64;
                }
                let ms = s / m;
                let mean = k as f64 + ms;
                let var = (s2 / m - ms * ms).max(0.0);
                let r = 1.0 / (var + eps).sqrt();
                let scale = (gamma[ci] as f64 * r) as f32;
                let shift = (beta[ci] as f64 - mean * gamma[ci] as f64 * r) as f32;
                // Pass 2: normalize (+ SiLU).
                for b in 0..n {
                    let off = (b * c + ci) * hw;
                    // SAFETY: channel ci of image b is written by this task only.
                    let ys = unsafe { yp.img_mut(View::channels(ci, c, hw), b, hw) };
                    row_fwd(&x[off..off + hw], ys, scale, shift, silu);
                }
                (mean as f32, var as f32)
            })
            .collect();
        let mut st = self.stats.lock().map_err(|_| candle_core::Error::Msg("batch-norm stats lock".into()))?;
        st.mean = stats.iter().map(|s| s.0).collect();
        st.var = stats.iter().map(|s| s.1).collect();
        st.gamma = gamma.to_vec();
        st.beta = beta.to_vec();
        Ok((CpuStorage::F32(y), Shape::from((n, c, h, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats = self.stats.lock().map_err(|_| candle_core::Error::Msg("batch-norm stats lock".into()))?.clone();
        let c = gamma.elem_count();
        let len = x.elem_count();
        let packed = x.apply_op2_no_bwd(&grad.contiguous()?, &BnBwd { eps: self.eps, silu: self.silu, stats })?;
        let dx = packed.narrow(0, 0, len)?.reshape(x.shape())?;
        let dgamma = packed.narrow(0, len, c)?;
        let dbeta = packed.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Backward op: `x.apply_op2_no_bwd(dy, BnBwd)` → flat `[dx (N·C·H·W), dγ (C), dβ (C)]`.
pub(crate) struct BnBwd {
    pub eps: f64,
    pub silu: bool,
    pub stats: Stats,
}

impl CustomOp2 for BnBwd {
    fn name(&self) -> &'static str {
        "kubeyolo-batch-norm-train-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l1.shape().dims4()?;
        if l2.shape().dims() != l1.shape().dims() {
            bail!("kubeyolo batch-norm grad: gradient shape {:?} vs input {:?}", l2.shape(), l1.shape());
        }
        let x = slice(s1, l1, "input")?;
        let dy = slice(s2, l2, "output gradient")?;
        let st = &self.stats;
        if st.mean.len() != c {
            bail!("kubeyolo batch-norm grad: no statistics from the forward pass");
        }
        let hw = h * w;
        let len = x.len();
        let m = (n * hw) as f32;
        // Every element is written below: dx rows by their channel's task, then dγ, dβ slots.
        let mut out = uninit_f32(len + 2 * c);
        let op = Buf::of(&mut out);
        let silu = self.silu;
        let eps = self.eps;
        (0..c).into_par_iter().for_each(|ci| {
            let r = (1.0 / (st.var[ci] as f64 + eps).sqrt()) as f32;
            let ch = Chan { mean: st.mean[ci], r, gamma: st.gamma[ci], beta: st.beta[ci], silu };
            // Pass 1: dz (kept in the dx rows), dβ = Σ dz, dγ = Σ dz·x̂.
            let (mut sb, mut sg) = (0f64, 0f64);
            for b in 0..n {
                let off = (b * c + ci) * hw;
                // SAFETY: channel ci of image b (and dγ/dβ slot ci) is written by this task only.
                let dzs = unsafe { op.img_mut(View::channels(ci, c, hw), b, hw) };
                let (ab, ag) = row_bwd_sums(&x[off..off + hw], &dy[off..off + hw], dzs, ch);
                sb += ab as f64;
                sg += ag as f64;
            }
            let (dbeta, dgamma) = (sb as f32, sg as f32);
            // Pass 2: dx from dz.
            let (mb, mg) = (dbeta / m, dgamma / m);
            for b in 0..n {
                let off = (b * c + ci) * hw;
                let dxs = unsafe { op.img_mut(View::channels(ci, c, hw), b, hw) };
                row_bwd_dx(&x[off..off + hw], dxs, ch, mb, mg);
            }
            unsafe {
                op.img_mut(View { off: len + ci, stride: 0 }, 0, 1)[0] = dgamma;
                op.img_mut(View { off: len + c + ci, stride: 0 }, 0, 1)[0] = dbeta;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(len + 2 * c)))
    }
}

/// Training-mode BatchNorm (+ SiLU) on CPU f32 with `bn`'s weight/bias, updating `bn`'s running
/// statistics like `candle_nn::BatchNorm::forward_train` (unbiased variance, `bn.momentum()`).
pub(crate) fn bn_train_cpu(x: &Tensor, bn: &candle_nn::BatchNorm, silu: bool) -> Result<Tensor> {
    let Some((gamma, beta)) = bn.weight_and_bias() else {
        bail!("kubeyolo batch-norm: BatchNorm without affine weight/bias");
    };
    let stats = Arc::new(Mutex::new(Stats::default()));
    let x = x.contiguous()?;
    let y =
        x.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, BnFwd { eps: bn.eps(), silu, stats: stats.clone() })?;
    let (mean, var) = {
        let st = stats.lock().map_err(|_| candle_core::Error::Msg("batch-norm stats lock".into()))?;
        (st.mean.clone(), st.var.clone())
    };
    let (n, _, h, w) = x.dims4()?;
    update_running_stats(bn, &mean, &var, n * h * w)?;
    Ok(y)
}

/// `bn`'s running mean / variance ← (1 − momentum)·running + momentum·batch, with the batch's
/// `var` (biased, over `count` values) made unbiased as PyTorch does.
pub(crate) fn update_running_stats(bn: &candle_nn::BatchNorm, mean: &[f32], var: &[f32], count: usize) -> Result<()> {
    let m = count as f64;
    let mom = bn.momentum();
    let dev = bn.running_mean().device();
    let c = mean.len();
    let mean_t = Tensor::from_slice(mean, c, dev)?;
    let var_unbiased = (Tensor::from_slice(var, c, dev)? * (m / (m - 1.0).max(1.0)))?;
    let rm = candle_core::Var::from_tensor(bn.running_mean())?;
    let rv = candle_core::Var::from_tensor(bn.running_var())?;
    rm.set(&((rm.as_tensor() * (1.0 - mom))? + (mean_t * mom)?)?)?;
    rv.set(&((rv.as_tensor() * (1.0 - mom))? + (var_unbiased * mom)?)?)?;
    Ok(())
}
