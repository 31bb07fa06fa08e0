//! One training-mode Detect branch (`cv2.i` or `cv3.i`: Conv 3×3, Conv 3×3, then a 1×1 conv with
//! bias) as one CPU op with a hand-written backward.
//!
//! Why: as three autograd nodes plus the bias add, each branch hands candle four full-size
//! activation gradients to zero-fill and add single-threaded; at the 40×40 level of a yolov8n
//! step those boundaries cost more than the branch's own BatchNorms (issue 7). Inside the op the
//! Convs are [`super::conv_bn::Unit`]s and the last conv is a per-image GEMM + bias.
//!
//! Parameters travel as one flat tensor: `[c0 weight, c0 γ, c0 β, c1 weight, c1 γ, c1 β,
//! c2 weight (O, C1), c2 bias (O)]`.

use candle_core::{bail, Result, Shape};
use rayon::prelude::*;

use super::buffers::{Buf, View};
use super::channel_ops::channel_sums;
use super::conv::{plan, sgemm, sum_partials, transposed, Geom};
use super::conv_bn::{per_group, ConvSpec, DxTarget, Unit};
use super::fastmath::uninit_f32;
use super::fused_op::{write_in_order, FusedBlock, Saved};

/// The branch's shape: its two Convs and the final conv's output channels.
#[derive(Debug, Clone)]
pub(crate) struct BranchSpec {
    pub c0: ConvSpec,
    pub c1: ConvSpec,
    pub out: usize,
    pub eps: f64,
}

impl BranchSpec {
    pub fn param_len(&self) -> usize {
        let conv = |s: &ConvSpec| s.cout * s.cin * s.k * s.k + 2 * s.cout;
        conv(&self.c0) + conv(&self.c1) + self.out * self.c1.cout + self.out
    }

    /// The two Convs, the final weight (O, C1) and bias over `params`.
    fn parts<'a>(
        &self,
        params: &'a [f32],
        nb: usize,
        h: usize,
        w: usize,
    ) -> Result<(Unit<'a>, Unit<'a>, &'a [f32], &'a [f32])> {
        if params.len() != self.param_len() || self.c1.cin != self.c0.cout {
            bail!("kubeyolo Detect branch: {} parameter values for {:?}", params.len(), self);
        }
        let mut off = 0;
        let mut unit = |s: &ConvSpec| -> Result<Unit<'a>> {
            let wl = s.cout * s.cin * s.k * s.k;
            let g = Geom::new((nb, s.cin, h, w), (s.cout, s.cin, s.k, s.k), 1, s.k / 2)?;
            let u = Unit {
                g,
                w: &params[off..off + wl],
                gamma: &params[off + wl..off + wl + s.cout],
                beta: &params[off + wl + s.cout..off + wl + 2 * s.cout],
                act: s.act,
                eps: self.eps,
            };
            off += wl + 2 * s.cout;
            Ok(u)
        };
        let (u0, u1) = (unit(&self.c0)?, unit(&self.c1)?);
        let wl = self.out * self.c1.cout;
        Ok((u0, u1, &params[off..off + wl], &params[off + wl..]))
    }
}

/// What the forward keeps: both hidden activations and the two Convs' [`Saved`].
#[derive(Debug, Default)]
pub(crate) struct BranchState {
    h0: Vec<f32>,
    h1: Vec<f32>,
    pub saved: [Saved; 2],
}

impl FusedBlock for BranchSpec {
    type State = BranchState;
    const NAME: &'static str = "kubeyolo-detect-branch";
    const GRAD_NAME: &'static str = "kubeyolo-detect-branch-grad";

    fn forward(
        &self,
        x: &[f32],
        params: &[f32],
        (nb, c, h, w): (usize, usize, usize, usize),
    ) -> Result<(Vec<f32>, Shape, BranchState)> {
        if c != self.c0.cin {
            bail!("kubeyolo Detect branch: input has {c} channels, the branch expects {}", self.c0.cin);
        }
        let (u0, u1, w2, b2) = self.parts(params, nb, h, w)?;
        let (hw, m0, m1, out) = (h * w, self.c0.cout, self.c1.cout, self.out);
        let mut h0 = uninit_f32(nb * m0 * hw);
        let s0 = u0.forward(Buf::of_const(x), View::whole(c * hw), Buf::of(&mut h0), View::whole(m0 * hw));
        let mut h1 = uninit_f32(nb * m1 * hw);
        let s1 = u1.forward(Buf::of_const(&h0), View::whole(m0 * hw), Buf::of(&mut h1), View::whole(m1 * hw));
        // y_i = W2 · h1_i + b2, every element written.
        let mut y = uninit_f32(nb * out * hw);
        let (_, par) = plan(nb);
        y.par_chunks_mut(out * hw).zip(h1.par_chunks(m1 * hw)).for_each(|(yi, hi)| {
            sgemm(out, hw, m1, yi, false, w2, false, hi, false, par);
            for (row, b) in yi.chunks_exact_mut(hw).zip(b2) {
                for v in row {
                    *v += *b;
                }
            }
        });
        Ok((y, Shape::from((nb, out, h, w)), BranchState { h0, h1, saved: [s0, s1] }))
    }

    fn backward(
        &self,
        st: &BranchState,
        x: &[f32],
        dy: &[f32],
        params: &[f32],
        (nb, c, h, w): (usize, usize, usize, usize),
        dx: Option<&mut [f32]>,
        dparams: &mut [f32],
    ) -> Result<()> {
        let (u0, u1, w2, _) = self.parts(params, nb, h, w)?;
        let (hw, m0, m1, out) = (h * w, self.c0.cout, self.c1.cout, self.out);
        // Last conv: dW2ᵀ (M1, O) = Σ_i h1_i · dy_iᵀ (per group, then summed), db2 = Σ dy,
        // dh1_i = W2ᵀ · dy_i.
        let mut dh1 = uninit_f32(nb * m1 * hw);
        let dh1b = Buf::of(&mut dh1);
        let partials = per_group(nb, 0, |imgs, _, par| {
            let mut dwt = uninit_f32(m1 * out);
            let first = imgs.start;
            for i in imgs {
                let (hi, dyi) = (&st.h1[i * m1 * hw..(i + 1) * m1 * hw], &dy[i * out * hw..(i + 1) * out * hw]);
                sgemm(m1, out, hw, &mut dwt, i > first, hi, false, dyi, true, par);
                // SAFETY: image i of dh1 is this task's only.
                let dhi = unsafe { dh1b.img_mut(View::whole(m1 * hw), i, m1 * hw) };
                sgemm(m1, hw, out, dhi, false, w2, true, dyi, false, par);
            }
            dwt
        });
        let dwt = sum_partials(partials, m1 * out);
        let db2 = channel_sums(dy, (nb, out, hw));
        // The two Convs, back to front.
        let mut dh0 = uninit_f32(nb * m0 * hw);
        let to_h0 = DxTarget { buf: Buf::of(&mut dh0), view: View::whole(m0 * hw), accumulate: false };
        let g1 = u1.backward(
            &st.saved[1],
            Buf::of_const(&st.h0),
            View::whole(m0 * hw),
            Buf::of_const(&dh1),
            View::whole(m1 * hw),
            Some(to_h0),
        );
        let to_x = dx.map(|d| DxTarget { buf: Buf::of(d), view: View::whole(c * hw), accumulate: false });
        let g0 = u0.backward(
            &st.saved[0],
            Buf::of_const(x),
            View::whole(c * hw),
            Buf::of_const(&dh0),
            View::whole(m0 * hw),
            to_x,
        );
        let dw2 = transposed(&dwt, m1, out);
        let convs = [&g0, &g1].into_iter().flat_map(|g| [&g.dw[..], &g.dgamma[..], &g.dbeta[..]]);
        write_in_order(dparams, convs.chain([&dw2[..], &db2[..]]));
        Ok(())
    }

    fn saved(st: &BranchState) -> &[Saved] {
        &st.saved
    }
}
