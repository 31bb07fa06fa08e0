//! A whole training-mode ultralytics `C2f` block as one CPU op with a hand-written backward.
//!
//! Why: composed from candle ops, a C2f is a narrow into two halves, a chain of Bottlenecks
//! (residual adds), a cat and its Convs — each an autograd node whose backward candle runs
//! single-threaded with a zero-filled gradient plus an add, and whose narrow backward pads with
//! zeros and concatenates (issue 7). Here cv1 and every Bottleneck write straight into one
//! concatenation buffer, the "split" halves and the Bottleneck inputs are channel views of it,
//! and the backward accumulates into one gradient buffer of the same layout: no copies, one
//! autograd node ([`super::fused_op`]). The Convs are [`super::conv_bn::Unit`]s (conv + BatchNorm + SiLU).
//!
//! Buffer layout (per image, channels × H·W): `ycat = [cv1 out (2c) | m0 out (c) | … | m(n−1) out (c)]`;
//! Bottleneck i reads channels `(1+i)·c..(2+i)·c` and writes `(2+i)·c..(3+i)·c`; cv2 reads all
//! `(2+n)·c` channels. Parameters travel as one flat tensor, per Conv in the order cv1,
//! m0.cv1, m0.cv2, …, cv2: `[weight (O·C·k·k), BatchNorm γ (O), β (O)]`.

use candle_core::{bail, Result, Shape};

use super::buffers::{add_views, Buf, View};
use super::conv::Geom;
use super::conv_bn::{ConvSpec, DxTarget, Unit, UnitGrads};
use super::fastmath::uninit_f32;
use super::fused_op::{write_in_order, FusedBlock, Saved};

/// The block's shape: hidden width `c`, `n` Bottlenecks, residual adds, and its Convs in
/// parameter order (cv1, m0.cv1, m0.cv2, …, cv2).
#[derive(Debug, Clone)]
pub(crate) struct C2fSpec {
    pub c: usize,
    pub n: usize,
    pub add: bool,
    pub convs: Vec<ConvSpec>,
    pub eps: f64,
}

impl C2fSpec {
    pub fn param_len(&self) -> usize {
        self.convs.iter().map(ConvSpec::param_len).sum()
    }
    /// Channels of the concatenation buffer.
    fn cat_channels(&self) -> usize {
        (2 + self.n) * self.c
    }
    /// The block's Convs over `params` for a batch of `nb` images of `h`×`w`.
    fn units<'a>(&self, params: &'a [f32], nb: usize, h: usize, w: usize) -> Result<Vec<Unit<'a>>> {
        let chained = self.convs.len() == 2 + 2 * self.n
            && self.convs[0].cout == 2 * self.c
            && (0..self.n).all(|i| self.convs[1 + 2 * i].cin == self.c && self.convs[2 + 2 * i].cout == self.c)
            && self.convs[1 + 2 * self.n].cin == self.cat_channels();
        if !chained {
            bail!(
                "kubeyolo C2f: Convs {:?} do not chain as a C2f of width {} with {} Bottlenecks",
                self.convs,
                self.c,
                self.n
            );
        }
        if params.len() != self.param_len() {
            bail!("kubeyolo C2f: {} parameter values, expected {}", params.len(), self.param_len());
        }
        let mut off = 0;
        self.convs
            .iter()
            .map(|s| {
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
                off += s.param_len();
                Ok(u)
            })
            .collect()
    }
}

/// What the forward keeps: the concatenation buffer, each Bottleneck's hidden activation, and
/// every Conv's [`Saved`] (in parameter order).
#[derive(Debug, Default)]
pub(crate) struct C2fState {
    ycat: Vec<f32>,
    hidden: Vec<Vec<f32>>,
    pub saved: Vec<Saved>,
}

/// Forward over contiguous `x` (nb, c1, h, w); returns y (nb, c2, h, w) and the state.
fn forward(
    spec: &C2fSpec,
    x: &[f32],
    params: &[f32],
    (nb, h, w): (usize, usize, usize),
) -> Result<(Vec<f32>, C2fState)> {
    let u = spec.units(params, nb, h, w)?;
    let (c, hw, ct) = (spec.c, h * w, spec.cat_channels());
    let c1 = spec.convs[0].cin;
    let mut ycat = uninit_f32(nb * ct * hw);
    let yb = Buf::of(&mut ycat);
    let mut saved = Vec::with_capacity(u.len());
    saved.push(u[0].forward(Buf::of_const(x), View::whole(c1 * hw), yb, View::channels(0, ct, hw)));
    let mut hidden = Vec::with_capacity(spec.n);
    for i in 0..spec.n {
        let (inp, out) = (View::channels((1 + i) * c, ct, hw), View::channels((2 + i) * c, ct, hw));
        let mut hbuf = uninit_f32(nb * c * hw);
        saved.push(u[1 + 2 * i].forward(yb, inp, Buf::of(&mut hbuf), View::whole(c * hw)));
        saved.push(u[2 + 2 * i].forward(Buf::of_const(&hbuf), View::whole(c * hw), yb, out));
        if spec.add {
            add_views(yb, out, yb, inp, nb, c * hw);
        }
        hidden.push(hbuf);
    }
    let last = u.len() - 1;
    let c2 = spec.convs[last].cout;
    let mut y = uninit_f32(nb * c2 * hw);
    saved.push(u[last].forward(yb, View::whole(ct * hw), Buf::of(&mut y), View::whole(c2 * hw)));
    Ok((y, C2fState { ycat, hidden, saved }))
}

/// Backward from `dy` (nb, c2, h, w): the parameter gradients in parameter order and, when
/// `dx` is given, the input gradient written there.
fn backward(
    spec: &C2fSpec,
    st: &C2fState,
    x: &[f32],
    dy: &[f32],
    params: &[f32],
    (nb, h, w): (usize, usize, usize),
    dx: Option<&mut [f32]>,
) -> Result<Vec<UnitGrads>> {
    let u = spec.units(params, nb, h, w)?;
    let (c, hw, ct) = (spec.c, h * w, spec.cat_channels());
    let last = u.len() - 1;
    let (c1, c2) = (spec.convs[0].cin, spec.convs[last].cout);
    let ycat = Buf::of_const(&st.ycat);
    // Fully written by cv2's input gradient (accumulate = false).
    let mut dcat = uninit_f32(nb * ct * hw);
    let db = Buf::of(&mut dcat);
    let mut grads: Vec<Option<UnitGrads>> = (0..u.len()).map(|_| None).collect();
    let to_cat = DxTarget { buf: db, view: View::whole(ct * hw), accumulate: false };
    grads[last] = Some(u[last].backward(
        &st.saved[last],
        ycat,
        View::whole(ct * hw),
        Buf::of_const(dy),
        View::whole(c2 * hw),
        Some(to_cat),
    ));
    for i in (0..spec.n).rev() {
        let (inp, out) = (View::channels((1 + i) * c, ct, hw), View::channels((2 + i) * c, ct, hw));
        let (a, b) = (1 + 2 * i, 2 + 2 * i);
        let mut dh = uninit_f32(nb * c * hw);
        let to_hidden = DxTarget { buf: Buf::of(&mut dh), view: View::whole(c * hw), accumulate: false };
        grads[b] = Some(u[b].backward(
            &st.saved[b],
            Buf::of_const(&st.hidden[i]),
            View::whole(c * hw),
            db,
            out,
            Some(to_hidden),
        ));
        if spec.add {
            // The residual: the Bottleneck's input also receives its output's gradient.
            add_views(db, inp, db, out, nb, c * hw);
        }
        let to_input = DxTarget { buf: db, view: inp, accumulate: true };
        grads[a] =
            Some(u[a].backward(&st.saved[a], ycat, inp, Buf::of_const(&dh), View::whole(c * hw), Some(to_input)));
    }
    let to_x = dx.map(|d| DxTarget { buf: Buf::of(d), view: View::whole(c1 * hw), accumulate: false });
    grads[0] =
        Some(u[0].backward(&st.saved[0], Buf::of_const(x), View::whole(c1 * hw), db, View::channels(0, ct, hw), to_x));
    Ok(grads.into_iter().flatten().collect())
}

impl FusedBlock for C2fSpec {
    type State = C2fState;
    const NAME: &'static str = "kubeyolo-c2f";
    const GRAD_NAME: &'static str = "kubeyolo-c2f-grad";

    fn forward(
        &self,
        x: &[f32],
        params: &[f32],
        (nb, c1, h, w): (usize, usize, usize, usize),
    ) -> Result<(Vec<f32>, Shape, C2fState)> {
        if c1 != self.convs[0].cin {
            bail!("kubeyolo C2f: input has {c1} channels, the block expects {}", self.convs[0].cin);
        }
        let (y, st) = forward(self, x, params, (nb, h, w))?;
        let c2 = self.convs[self.convs.len() - 1].cout;
        Ok((y, Shape::from((nb, c2, h, w)), st))
    }

    fn backward(
        &self,
        st: &C2fState,
        x: &[f32],
        dy: &[f32],
        params: &[f32],
        (nb, _, h, w): (usize, usize, usize, usize),
        dx: Option<&mut [f32]>,
        dparams: &mut [f32],
    ) -> Result<()> {
        let grads = backward(self, st, x, dy, params, (nb, h, w), dx)?;
        write_in_order(dparams, grads.iter().flat_map(|g| [&g.dw[..], &g.dgamma[..], &g.dbeta[..]]));
        Ok(())
    }

    fn saved(st: &C2fState) -> &[Saved] {
        &st.saved
    }
}
