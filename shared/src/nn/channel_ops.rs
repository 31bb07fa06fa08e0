//! Two small NCHW CPU ops with direct backward kernels: a per-channel bias add (the Detect head's
//! last convs) and 2× nearest upsampling (the neck).
//!
//! Why: composed from candle ops, their backward is a sum over broadcast axes, which candle 0.11
//! runs as a strided single-threaded reduction — about 6% of a yolov8n training step (issue 7).
//! Here the backward is one contiguous pass per (image, channel) plane, parallel over planes.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::conv::slice;
use super::fastmath::uninit_f32;

/// Σ over images and pixels of `g` (N, C, H, W) per channel.
fn channel_sums(g: &[f32], (n, c, hw): (usize, usize, usize)) -> Vec<f32> {
    (0..c)
        .into_par_iter()
        .map(|ci| (0..n).map(|i| g[(i * c + ci) * hw..(i * c + ci + 1) * hw].iter().map(|&v| v as f64).sum::<f64>()).sum::<f64>() as f32)
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
        y.par_chunks_mut(4 * h * w).zip(x.par_chunks(h * w)).for_each(|(yp, xp)| {
            for (yr, xr) in yp.chunks_exact_mut(4 * w).zip(xp.chunks_exact(w)) {
                let (top, bottom) = yr.split_at_mut(2 * w);
                for (o, v) in top.chunks_exact_mut(2).zip(xr) {
                    o[0] = *v;
                    o[1] = *v;
                }
                bottom.copy_from_slice(top);
            }
        });
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
