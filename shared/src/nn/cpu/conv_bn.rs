//! A whole training-mode ultralytics `Conv` — convolution, BatchNorm on batch statistics, SiLU —
//! as one CPU kernel with a hand-written backward, and the candle op that wraps it.
//!
//! Why: built from separate candle ops (conv, then BatchNorm + SiLU) every Conv is two autograd
//! nodes, and candle's backward pays for each node's input gradient with a zero-filled tensor plus
//! an add (`GradStore::or_insert`), single-threaded: with ~60 Convs per step that glue cost about
//! a quarter of a yolov8n training step (issue 7). Fused, a Conv is one node, the BatchNorm
//! statistics are taken while each image's conv output is still in cache, and the BatchNorm
//! backward feeds the conv's GEMMs image by image.
//!
//! The kernel ([`Unit`]) reads and writes images through [`View`]s, so a block made of several
//! Convs (C2f, [`super::c2f`]) can let them read channel slices of, and write straight into, a
//! shared concatenation buffer with no narrow or cat copies.
//!
//! Math (per output channel, M = N·OH·OW): `z = conv(x, W)`, `x̂ = (z − μ)·r` with
//! `r = 1/√(σ² + eps)` (biased σ², as PyTorch normalizes), `y = act(γ·x̂ + β)`. Backward:
//! `dz0 = dy·act'`, `dβ = Σ dz0`, `dγ = Σ dz0·x̂`, `dz = γ·r·(dz0 − dβ/M − x̂·dγ/M)`, then the
//! conv gradients `dW = Σ_n dz_n · cols(x_n)ᵀ` and `dx_n = col2im(Wᵀ · dz_n)` ([`super::conv`]).

use candle_core::{bail, Result, Shape};
use rayon::prelude::*;

use super::batchnorm::{row_bwd_dx, row_bwd_sums, row_fwd, row_stats, Chan};
use super::buffers::{Buf, View};
use super::conv::{col2im_add_rows, im2col_rows, plan, sgemm_ld, sum_partials, threads, transposed, Geom};
use super::fastmath::uninit_f32;
use super::fused_op::{write_in_order, FusedBlock, Saved};
use super::shifted::Shifted;

/// Runs `f(group, scratch)` for the image groups of a batch: when the batch has at least as many
/// images as threads, up to 4 groups per thread (each GEMM single-threaded; rayon hands groups to
/// whichever thread is free, so a core slowed by other load does not hold up the step), else one
/// group whose GEMMs are parallel inside. Returns the groups' results in order.
pub(crate) fn per_group<T: Send>(
    n: usize,
    scratch_len: usize,
    f: impl Fn(std::ops::Range<usize>, &mut Vec<f32>, gemm::Parallelism) -> T + Sync,
) -> Vec<T> {
    let (over_images, par) = plan(n);
    if over_images {
        let per = n.div_ceil((4 * threads()).min(n));
        let groups = n.div_ceil(per);
        (0..groups)
            .into_par_iter()
            .map(|gi| f(gi * per..((gi + 1) * per).min(n), &mut uninit_f32(scratch_len), par))
            .collect()
    } else {
        vec![f(0..n, &mut uninit_f32(scratch_len), par)]
    }
}

/// Bytes of im2col matrix one GEMM works on. A whole image's matrix of an early YOLOv8 layer is
/// 3–5 MB; bands bound the per-thread scratch and keep more of it in cache. Measured (issue 7):
/// 512 KiB bands slowed the mid layers (GEMMs too narrow), 2 MiB was neutral within the noise
/// of a step and only splits the largest matrices (first layers, the 40×40 head convs).
const BAND_BYTES: usize = 2 * 1024 * 1024;

/// How a conv reaches its input columns: shifted GEMMs (stride-1 "same" convs, [`Shifted`]),
/// the image itself (pointwise), or im2col band by band; with the scratch floats per thread.
struct ColsPlan {
    shifted: Option<Shifted>,
    /// Output-row bands an image is processed in (one band when pointwise).
    bands: Vec<std::ops::Range<usize>>,
    scratch: usize,
}

impl ColsPlan {
    fn new(g: &Geom, w: &[f32]) -> Self {
        let rows = if g.is_pointwise() { g.oh } else { (BAND_BYTES / (4 * g.ckk() * g.ow)).clamp(1, g.oh) };
        let bands = (0..g.oh).step_by(rows).map(|a| a..(a + rows).min(g.oh)).collect();
        let shifted = Shifted::applies(g).then(|| Shifted::new(g, w));
        let scratch = match &shifted {
            Some(sh) => sh.scratch_len(),
            None if g.is_pointwise() => 0,
            None => g.ckk() * rows * g.ow,
        };
        ColsPlan { shifted, bands, scratch }
    }
}

/// One Conv's parameter gradients.
#[derive(Debug)]
pub(crate) struct UnitGrads {
    pub dw: Vec<f32>,
    pub dgamma: Vec<f32>,
    pub dbeta: Vec<f32>,
}

/// Gradient destination of a unit's input: buffer, view, and whether to add to what is there.
pub(crate) struct DxTarget {
    pub buf: Buf,
    pub view: View,
    pub accumulate: bool,
}

/// One training-mode Conv: geometry (with the batch size) and parameters.
pub(crate) struct Unit<'a> {
    pub g: Geom,
    /// (O, C, kh, kw).
    pub w: &'a [f32],
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub act: bool,
    pub eps: f64,
}

impl Unit<'_> {
    fn chan(&self, s: &Saved, o: usize) -> Chan {
        let r = (1.0 / (s.var[o] as f64 + self.eps).sqrt()) as f32;
        Chan { mean: s.mean[o], r, gamma: self.gamma[o], beta: self.beta[o], silu: self.act }
    }

    /// Forward: reads images of `x` at `xv`, writes `act(bn(conv(x)))` to `y` at `yv`.
    pub fn forward(&self, x: Buf, xv: View, y: Buf, yv: View) -> Saved {
        let g = &self.g;
        let (p, ckk, o) = (g.p(), g.ckk(), g.o);
        // Fully written: one GEMM (read_dst = false) per image.
        let mut z = uninit_f32(g.n * g.out_len());
        let zb = Buf::of(&mut z);
        let ColsPlan { shifted, bands, scratch } = ColsPlan::new(g, self.w);
        // Pass 1: conv per image (shifted GEMMs, or im2col band by band), then per (image,
        // channel) row: shift k (its first value), Σ(z − k) and Σ(z − k)² while the row is in cache.
        let rows: Vec<Vec<(f64, f64, f64)>> = per_group(g.n, scratch, |imgs, cols, par| {
            let mut out = Vec::with_capacity(imgs.len() * o);
            for i in imgs {
                // SAFETY: image i of z is this task's only; x is read-only here.
                let (xi, zi) =
                    unsafe { (x.img(xv, i, g.in_len()), zb.img_mut(View::whole(g.out_len()), i, g.out_len())) };
                if let Some(sh) = &shifted {
                    sh.forward(xi, zi, cols, par);
                }
                for band in bands.iter().filter(|_| shifted.is_none()) {
                    let (off, pc) = (band.start * g.ow, band.len() * g.ow);
                    let rhs: (&[f32], usize) = if g.is_pointwise() {
                        (&xi[off..], p)
                    } else {
                        im2col_rows(xi, g, band.clone(), cols);
                        (cols, pc)
                    };
                    sgemm_ld(o, pc, ckk, (&mut zi[off..], p), false, (self.w, ckk, false), (rhs.0, rhs.1, false), par);
                }
                for row in zi.chunks_exact(p) {
                    let k = row[0];
                    let (s, s2) = row_stats(row, k);
                    out.push((k as f64, s as f64, s2 as f64));
                }
            }
            out
        });
        // Combine rows (equal counts P) per channel: mean of means, M2 = Σ M2_row + P·Σ(mean_row − mean)².
        let rows: Vec<&(f64, f64, f64)> = rows.iter().flatten().collect();
        let (mut mean, mut var) = (vec![0f32; o], vec![0f32; o]);
        let pf = p as f64;
        for c in 0..o {
            let rc = (0..g.n).map(|i| rows[i * o + c]);
            let mu = rc.clone().map(|&(k, s, _)| k + s / pf).sum::<f64>() / g.n as f64;
            let m2 = rc
                .map(|&(k, s, s2)| {
                    let d = k + s / pf - mu;
                    (s2 - s * s / pf).max(0.0) + pf * d * d
                })
                .sum::<f64>();
            mean[c] = mu as f32;
            var[c] = (m2 / (g.n as f64 * pf)) as f32;
        }
        let saved = Saved { z, mean, var };
        // Pass 2: normalize + activate into y.
        let consts: Vec<(f32, f32)> = (0..o)
            .map(|c| {
                let r = 1.0 / (saved.var[c] as f64 + self.eps).sqrt();
                let scale = self.gamma[c] as f64 * r;
                (scale as f32, (self.beta[c] as f64 - saved.mean[c] as f64 * scale) as f32)
            })
            .collect();
        let zb = Buf::of_const(&saved.z);
        (0..g.n).into_par_iter().for_each(|i| {
            // SAFETY: image i of y is this task's only.
            let (zi, yi) = unsafe { (zb.img(View::whole(g.out_len()), i, g.out_len()), y.img_mut(yv, i, g.out_len())) };
            for ((zr, yr), &(scale, shift)) in zi.chunks_exact(p).zip(yi.chunks_exact_mut(p)).zip(&consts) {
                row_fwd(zr, yr, scale, shift, self.act);
            }
        });
        saved
    }

    /// Backward: from `dy` (images at `dyv`) and the forward's input `x` (at `xv`) and `saved`,
    /// returns the parameter gradients and, when `dx` is given, writes or adds the input gradient.
    pub fn backward(&self, saved: &Saved, x: Buf, xv: View, dy: Buf, dyv: View, dx: Option<DxTarget>) -> UnitGrads {
        let g = &self.g;
        let (p, ckk, o) = (g.p(), g.ckk(), g.o);
        let whole = View::whole(g.out_len());
        let chans: Vec<Chan> = (0..o).map(|c| self.chan(saved, c)).collect();
        // Pass A: dz0 = dy·act' into `dz`, and per (image, channel) Σ dz0, Σ dz0·x̂.
        let mut dz = uninit_f32(g.n * g.out_len());
        let dzb = Buf::of(&mut dz);
        let zb = Buf::of_const(&saved.z);
        let sums: Vec<Vec<(f32, f32)>> = (0..g.n)
            .into_par_iter()
            .map(|i| {
                // SAFETY: image i of dz is this task's only; z and dy are read-only here.
                let (zi, dyi, dzi) = unsafe {
                    (zb.img(whole, i, g.out_len()), dy.img(dyv, i, g.out_len()), dzb.img_mut(whole, i, g.out_len()))
                };
                zi.chunks_exact(p)
                    .zip(dyi.chunks_exact(p))
                    .zip(dzi.chunks_exact_mut(p))
                    .zip(&chans)
                    .map(|(((zr, dyr), dzr), ch)| row_bwd_sums(zr, dyr, dzr, *ch))
                    .collect()
            })
            .collect();
        let (mut dgamma, mut dbeta) = (vec![0f32; o], vec![0f32; o]);
        for c in 0..o {
            let (sb, sg) = sums.iter().fold((0f64, 0f64), |(a, b), s| (a + s[c].0 as f64, b + s[c].1 as f64));
            dbeta[c] = sb as f32;
            dgamma[c] = sg as f32;
        }
        let m = (g.n * p) as f32;
        // Pass B per image: dz in place, then band by band dW += dz·colsᵀ and dx += col2im(Wᵀ·dz).
        let ColsPlan { shifted, bands, scratch } = ColsPlan::new(g, self.w);
        let dx = dx.as_ref();
        let partials: Vec<Vec<f32>> = per_group(g.n, scratch, |imgs, cols, par| {
            // Written by the first GEMM (accumulate = false), then accumulated.
            let mut dwt = uninit_f32(o * ckk);
            let first = imgs.start;
            for i in imgs {
                // SAFETY: image i of dz (and of dx) is this task's only; z and x are read-only.
                let (zi, dzi, xi) = unsafe {
                    (zb.img(whole, i, g.out_len()), dzb.img_mut(whole, i, g.out_len()), x.img(xv, i, g.in_len()))
                };
                for ((zr, dzr), (c, ch)) in
                    zi.chunks_exact(p).zip(dzi.chunks_exact_mut(p)).zip(chans.iter().enumerate())
                {
                    row_bwd_dx(zr, dzr, *ch, dbeta[c] / m, dgamma[c] / m);
                }
                let dzi: &[f32] = dzi;
                // SAFETY: image i of the dx target is this task's only.
                let mut dxi = dx.map(|t| (unsafe { t.buf.img_mut(t.view, i, g.in_len()) }, t.accumulate));
                if let Some(sh) = &shifted {
                    sh.backward(xi, dzi, &mut dwt, i > first, dxi.as_mut().map(|(d, a)| (&mut **d, *a)), cols, par);
                    continue;
                }
                if let Some((d, false)) = dxi.as_mut() {
                    if !g.is_pointwise() {
                        d.fill(0.0);
                    }
                }
                for (bi, band) in bands.iter().enumerate() {
                    let (off, pc) = (band.start * g.ow, band.len() * g.ow);
                    let colsx: (&[f32], usize) = if g.is_pointwise() {
                        (&xi[off..], p)
                    } else {
                        im2col_rows(xi, g, band.clone(), cols);
                        (cols, pc)
                    };
                    let acc = i > first || bi > 0;
                    // dWᵀ (CKK, O) = cols · dzᵀ: in this orientation the gemm crate reads the
                    // im2col band in place; computing dW = dz · colsᵀ made it pack (copy) the
                    // whole band first — half of all GEMM packing time in a step (issue 7).
                    sgemm_ld(ckk, o, pc, (&mut dwt, o), acc, (colsx.0, colsx.1, false), (&dzi[off..], p, true), par);
                    if let Some((dxi, accumulate)) = dxi.as_mut() {
                        if g.is_pointwise() {
                            sgemm_ld(
                                ckk,
                                pc,
                                o,
                                (&mut dxi[off..], p),
                                *accumulate,
                                (self.w, ckk, true),
                                (&dzi[off..], p, false),
                                par,
                            );
                        } else {
                            sgemm_ld(
                                ckk,
                                pc,
                                o,
                                (&mut cols[..], pc),
                                false,
                                (self.w, ckk, true),
                                (&dzi[off..], p, false),
                                par,
                            );
                            col2im_add_rows(cols, g, band.clone(), dxi);
                        }
                    }
                }
            }
            dwt
        });
        let dwt = sum_partials(partials, o * ckk);
        let dw = match &shifted {
            Some(sh) => sh.dw(&dwt),
            None => transposed(&dwt, ckk, o),
        };
        UnitGrads { dw, dgamma, dbeta }
    }
}

/// One Conv's shape: input / output channels, square kernel, activation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub act: bool,
}

impl ConvSpec {
    pub fn param_len(&self) -> usize {
        self.cout * self.cin * self.k * self.k + 2 * self.cout
    }
}

/// A whole training Conv as a [`FusedBlock`]: parameters `[weight (O·C·k·k), γ (O), β (O)]`.
#[derive(Debug, Clone)]
pub(crate) struct ConvBnBlock {
    pub spec: ConvSpec,
    pub stride: usize,
    pub pad: usize,
    pub eps: f64,
}

impl ConvBnBlock {
    fn unit<'a>(&self, params: &'a [f32], (n, c, h, w): (usize, usize, usize, usize)) -> Result<Unit<'a>> {
        let s = &self.spec;
        if c != s.cin || params.len() != s.param_len() {
            bail!("kubeyolo conv block: input with {c} channels and {} parameter values for {s:?}", params.len());
        }
        let g = Geom::new((n, c, h, w), (s.cout, c, s.k, s.k), self.stride, self.pad)?;
        let wl = s.cout * g.ckk();
        Ok(Unit {
            g,
            w: &params[..wl],
            gamma: &params[wl..wl + s.cout],
            beta: &params[wl + s.cout..],
            act: s.act,
            eps: self.eps,
        })
    }
}

impl FusedBlock for ConvBnBlock {
    type State = Saved;
    const NAME: &'static str = "kubeyolo-conv-bn-act";
    const GRAD_NAME: &'static str = "kubeyolo-conv-bn-act-grad";

    fn forward(
        &self,
        x: &[f32],
        params: &[f32],
        dims: (usize, usize, usize, usize),
    ) -> Result<(Vec<f32>, Shape, Saved)> {
        let unit = self.unit(params, dims)?;
        let g = unit.g;
        let mut y = uninit_f32(g.n * g.out_len());
        let saved = unit.forward(Buf::of_const(x), View::whole(g.in_len()), Buf::of(&mut y), View::whole(g.out_len()));
        Ok((y, Shape::from((g.n, g.o, g.oh, g.ow)), saved))
    }

    fn backward(
        &self,
        st: &Saved,
        x: &[f32],
        dy: &[f32],
        params: &[f32],
        dims: (usize, usize, usize, usize),
        dx: Option<&mut [f32]>,
        dparams: &mut [f32],
    ) -> Result<()> {
        let unit = self.unit(params, dims)?;
        let g = unit.g;
        let target = dx.map(|d| DxTarget { buf: Buf::of(d), view: View::whole(g.in_len()), accumulate: false });
        let gr = unit.backward(
            st,
            Buf::of_const(x),
            View::whole(g.in_len()),
            Buf::of_const(dy),
            View::whole(g.out_len()),
            target,
        );
        write_in_order(dparams, [&gr.dw[..], &gr.dgamma[..], &gr.dbeta[..]]);
        Ok(())
    }

    fn saved(st: &Saved) -> &[Saved] {
        std::slice::from_ref(st)
    }
}
