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

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::c2f::ConvSpec;
use super::conv::{plan, sgemm, slice, sum_partials, transposed, Geom};
use super::channel_ops::channel_sums;
use super::conv_bn::{lock, per_group, Buf, DxTarget, Saved, Unit, UnitGrads, View};
use super::fastmath::uninit_f32;

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
    fn parts<'a>(&self, params: &'a [f32], nb: usize, h: usize, w: usize) -> Result<(Unit<'a>, Unit<'a>, &'a [f32], &'a [f32])> {
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

/// The forward op `x.apply_op2(params, BranchOp)` → (N, out, H, W).
pub(crate) struct BranchOp {
    pub spec: BranchSpec,
    /// Filled by the forward (the caller reads the BatchNorm statistics), taken by the backward.
    pub state: Arc<Mutex<Option<BranchState>>>,
}

impl CustomOp2 for BranchOp {
    fn name(&self) -> &'static str {
        "kubeyolo-detect-branch"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (nb, c, h, w) = l1.shape().dims4()?;
        if c != self.spec.c0.cin {
            bail!("kubeyolo Detect branch: input has {c} channels, the branch expects {}", self.spec.c0.cin);
        }
        let (x, params) = (slice(s1, l1, "input")?, slice(s2, l2, "parameters")?);
        let (u0, u1, w2, b2) = self.spec.parts(params, nb, h, w)?;
        let (hw, m0, m1, out) = (h * w, self.spec.c0.cout, self.spec.c1.cout, self.spec.out);
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
        *lock(&self.state)? = Some(BranchState { h0, h1, saved: [s0, s1] });
        Ok((CpuStorage::F32(y), Shape::from((nb, out, h, w))))
    }

    fn bwd(&self, x: &Tensor, params: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(st) = lock(&self.state)?.take() else {
            bail!("kubeyolo Detect branch: backward ran twice or without a forward");
        };
        let need_dx = x.track_op();
        let op = BranchBwd { spec: self.spec.clone(), need_dx, state: Mutex::new(Some(st)) };
        let packed = x.apply_op3_no_bwd(&grad.contiguous()?, params, &op)?;
        let xl = if need_dx { x.elem_count() } else { 0 };
        let dx = if need_dx { Some(packed.narrow(0, 0, xl)?.reshape(x.shape())?) } else { None };
        Ok((dx, Some(packed.narrow(0, xl, params.elem_count())?)))
    }
}

/// `x.apply_op3_no_bwd(dy, params, BranchBwd)` → flat `[dx?, dparams]`.
struct BranchBwd {
    spec: BranchSpec,
    need_dx: bool,
    state: Mutex<Option<BranchState>>,
}

impl CustomOp3 for BranchBwd {
    fn name(&self) -> &'static str {
        "kubeyolo-detect-branch-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<(CpuStorage, Shape)> {
        let (nb, c, h, w) = l1.shape().dims4()?;
        let (x, dy, params) = (slice(s1, l1, "input")?, slice(s2, l2, "output gradient")?, slice(s3, l3, "parameters")?);
        let Some(st) = lock(&self.state)?.take() else {
            bail!("kubeyolo Detect branch grad: no forward state");
        };
        let (u0, u1, w2, _) = self.spec.parts(params, nb, h, w)?;
        let (hw, m0, m1, out) = (h * w, self.spec.c0.cout, self.spec.c1.cout, self.spec.out);
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
        let g1 = u1.backward(&st.saved[1], Buf::of_const(&st.h0), View::whole(m0 * hw), Buf::of_const(&dh1), View::whole(m1 * hw), Some(to_h0));
        let xl = if self.need_dx { x.len() } else { 0 };
        let mut outv = uninit_f32(xl + params.len());
        let (dx, dp) = outv.split_at_mut(xl);
        let to_x = self.need_dx.then(|| DxTarget { buf: Buf::of(dx), view: View::whole(c * hw), accumulate: false });
        let g0 = u0.backward(&st.saved[0], Buf::of_const(x), View::whole(c * hw), Buf::of_const(&dh0), View::whole(m0 * hw), to_x);
        let mut off = 0;
        let mut put = |part: &[f32]| {
            dp[off..off + part.len()].copy_from_slice(part);
            off += part.len();
        };
        for g in [&g0, &g1] {
            let UnitGrads { dw, dgamma, dbeta } = g;
            put(dw);
            put(dgamma);
            put(dbeta);
        }
        put(&transposed(&dwt, m1, out));
        put(&db2);
        Ok((CpuStorage::F32(outv), Shape::from(xl + params.len())))
    }
}
