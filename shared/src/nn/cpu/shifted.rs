//! Stride-1 "same" convolutions (3×3, pad 1 — most of YOLOv8's convs) without an im2col matrix:
//! one zero-padded copy of the image and k² accumulating GEMMs on shifted views of it.
//!
//! Why: im2col writes k² = 9 copies of every input pixel, forward and again backward (for the
//! weight gradient), and col2im reads 9 back: ~14% of a yolov8n training step (issue 7). With
//! the input padded to rows of `Wp = W + 2p` pixels, the input pixel under kernel tap (ki, kj) of
//! output pixel (oy, ox) is at `(oy + ki)·Wp + ox + kj`: for a fixed tap, all output pixels read
//! one contiguous run of the padded plane. So, with the output computed on a "wide" grid of
//! `OH × Wp` columns (the last 2p columns of each row are garbage, dropped when copying out):
//! - forward      `Z_wide (O, OH·Wp) = Σ_t W_t (O, C) · Xpad[:, off_t ..]`
//! - weight grad  `dW_tᵀ (C, O) = Xpad[:, off_t ..] · dZ_wideᵀ` (garbage columns of dZ_wide zeroed)
//! - input grad   `dXpad[:, off_t ..] += W_tᵀ · dZ_wide`, then the padding is cropped away
//!
//! with `off_t = ki·Wp + kj`. Each padded channel plane carries `k − 1` extra zeros so every
//! shifted view stays inside its own plane (views of neighbouring channels never alias).
//!
//! Where the CPU has AVX-512F the forward runs on [`super::direct`] instead of the k² GEMMs
//! (same sum, all taps in registers). The backward stays on GEMMs: running dX as the same
//! kernel on the padded dZ with the taps reversed, and the 1×1 convs of the training blocks on
//! it, measured 2–4% slower per training step (`train_step --ab-direct`, issue 13).

use std::sync::Arc;

use super::conv::{sgemm_ld, transposed, Geom};
use super::direct;
use super::fastmath::{copy_short, uninit_f32};

/// The geometry and re-laid-out weights of one shifted conv.
pub(crate) struct Shifted {
    g: Geom,
    /// Padded row length W + 2p, padded plane stride (H + 2p)·Wp + k − 1, wide columns OH·Wp.
    wp: usize,
    plane: usize,
    pw: usize,
    /// Weights per tap: `wk[t]` is W_t (O, C), t = ki·k + kj (shared: the eval path re-lays
    /// the weights out once and builds a `Shifted` per input size).
    wk: Arc<Vec<f32>>,
    /// Each tap's offset into a padded plane, `ki·Wp + kj`.
    offs: Vec<usize>,
}

impl Shifted {
    /// Whether `g` is a convolution this scheme computes: stride 1, square odd kernel > 1 with
    /// "same" padding.
    pub fn applies(g: &Geom) -> bool {
        g.stride == 1 && g.kh == g.kw && g.kh > 1 && g.kh % 2 == 1 && g.pad == g.kh / 2
    }

    /// `w` is (O, C, k, k).
    pub fn new(g: &Geom, w: &[f32]) -> Self {
        Self::with_taps(g, Arc::new(taps(g.o, g.c, g.kh, w)))
    }

    /// With weights already in tap order ([`taps`]).
    pub fn with_taps(g: &Geom, wk: Arc<Vec<f32>>) -> Self {
        let wp = g.w + 2 * g.pad;
        let plane = (g.h + 2 * g.pad) * wp + g.kh - 1;
        debug_assert_eq!(wk.len(), g.kh * g.kw * g.o * g.c);
        let offs = (0..g.kh * g.kw).map(|t| (t / g.kw) * wp + t % g.kw).collect();
        Shifted { g: *g, wp, plane, pw: g.oh * wp, wk, offs }
    }

    /// Padded row length W + 2p: an output row `oy` occupies wide columns `oy·Wp ..`.
    pub fn wide_row(&self) -> usize {
        self.wp
    }

    /// Output channels `os`, output rows `oys` of the wide grid into `zw` (`os.len()` rows of
    /// `oys.len()·Wp` floats; the last 2p columns of each output row are garbage), from the
    /// padded input `xp` ([`Self::pad`]).
    pub fn forward_tile(
        &self,
        xp: &[f32],
        os: std::ops::Range<usize>,
        oys: std::ops::Range<usize>,
        zw: &mut [f32],
        par: gemm::Parallelism,
    ) {
        let (c, cols) = (self.g.c, oys.len() * self.wp);
        if direct::available() {
            // All taps at once in registers, reading the padded image in place (no packing).
            direct::conv(&xp[oys.start * self.wp..], (self.plane, c), &self.offs, &self.wk, os, cols, (zw, cols), par);
            return;
        }
        for t in 0..self.g.kh * self.g.kw {
            let off = self.tap_offset(t) + oys.start * self.wp;
            let w = &self.w_tap(t)[os.start * c..];
            sgemm_ld(
                os.len(),
                cols,
                c,
                (&mut zw[..], cols),
                t > 0,
                (w, c, false),
                (&xp[off..], self.plane, false),
                par,
            );
        }
    }

    fn tap_offset(&self, t: usize) -> usize {
        self.offs[t]
    }

    fn w_tap(&self, t: usize) -> &[f32] {
        let oc = self.g.o * self.g.c;
        &self.wk[t * oc..(t + 1) * oc]
    }

    /// Scratch floats the per-image functions need.
    pub fn scratch_len(&self) -> usize {
        2 * self.g.c * self.plane + self.g.o * self.pw
    }

    /// `xp` ← image `xi` (C, H, W) with zero padding, planes of `plane` floats.
    pub fn pad(&self, xi: &[f32], xp: &mut [f32]) {
        let hw = self.g.h * self.g.w;
        for (xc, xpc) in xi.chunks_exact(hw).zip(xp.chunks_exact_mut(self.plane)) {
            self.pad_plane(xc, xpc);
        }
    }

    /// One channel of [`Self::pad`]: `xpc` (`plane` floats) ← plane `xc` (H, W) zero-padded.
    pub fn pad_plane(&self, xc: &[f32], xpc: &mut [f32]) {
        let (g, p) = (&self.g, self.g.pad);
        xpc.fill(0.0);
        for (y, src) in xc.chunks_exact(g.w).enumerate() {
            let at = (y + p) * self.wp + p;
            copy_short(&mut xpc[at..at + g.w], src);
        }
    }

    /// Floats per padded channel plane.
    pub fn plane_len(&self) -> usize {
        self.plane
    }

    /// Forward of one image: `zi` (O, OH·OW) ← conv(xi).
    pub fn forward(&self, xi: &[f32], zi: &mut [f32], scratch: &mut [f32], par: gemm::Parallelism) {
        let g = &self.g;
        let (xp, rest) = scratch.split_at_mut(g.c * self.plane);
        let zw = &mut rest[g.c * self.plane..][..g.o * self.pw];
        self.pad(xi, xp);
        self.forward_tile(xp, 0..g.o, 0..g.oh, zw, par);
        for (zr, wr) in zi.chunks_exact_mut(g.ow).zip(zw.chunks_exact(self.wp)) {
            copy_short(zr, &wr[..g.ow]);
        }
    }

    /// Backward of one image from its conv-output gradient `dzi` (O, OH·OW): adds the weight
    /// gradient to `dwt` (taps × C × O; written when `!acc`) and, when `dx` is given, writes or
    /// adds (`dx.1`) the input gradient.
    pub fn backward(
        &self,
        xi: &[f32],
        dzi: &[f32],
        dwt: &mut [f32],
        acc: bool,
        dx: Option<(&mut [f32], bool)>,
        scratch: &mut [f32],
        par: gemm::Parallelism,
    ) {
        let g = &self.g;
        let (xp, rest) = scratch.split_at_mut(g.c * self.plane);
        let (dxp, dzw) = rest.split_at_mut(g.c * self.plane);
        let dzw = &mut dzw[..g.o * self.pw];
        self.pad(xi, xp);
        // dZ_wide: dz rows with the garbage columns zeroed.
        for (wr, zr) in dzw.chunks_exact_mut(self.wp).zip(dzi.chunks_exact(g.ow)) {
            copy_short(&mut wr[..g.ow], zr);
            wr[g.ow..].fill(0.0);
        }
        let (c, o) = (g.c, g.o);
        for t in 0..g.kh * g.kw {
            let off = self.tap_offset(t);
            sgemm_ld(
                c,
                o,
                self.pw,
                (&mut dwt[t * c * o..(t + 1) * c * o], o),
                acc,
                (&xp[off..], self.plane, false),
                (&dzw[..], self.pw, true),
                par,
            );
        }
        if let Some((dxi, accumulate)) = dx {
            dxp.fill(0.0);
            for t in 0..g.kh * g.kw {
                let off = self.tap_offset(t);
                sgemm_ld(
                    c,
                    self.pw,
                    o,
                    (&mut dxp[off..], self.plane),
                    true,
                    (self.w_tap(t), c, true),
                    (&dzw[..], self.pw, false),
                    par,
                );
            }
            let p = g.pad;
            for cc in 0..c {
                for y in 0..g.h {
                    let d = &mut dxi[(cc * g.h + y) * g.w..(cc * g.h + y + 1) * g.w];
                    let at = cc * self.plane + (y + p) * self.wp + p;
                    let s = &dxp[at..at + g.w];
                    if accumulate {
                        for (a, b) in d.iter_mut().zip(s) {
                            *a += *b;
                        }
                    } else {
                        copy_short(d, s);
                    }
                }
            }
        }
    }

    /// The weight gradient (O, C, k, k) from the taps × C × O accumulator.
    ///
    /// Input channel by input channel: the k² rows `(t, cc)` are read in order while each output
    /// channel's k² taps are written as one run, and the O output runs of consecutive channels
    /// share cache lines (the loop over taps outermost wrote one float per line; issue 13).
    pub fn dw(&self, dwt: &[f32]) -> Vec<f32> {
        let (k2, c, o) = (self.g.kh * self.g.kw, self.g.c, self.g.o);
        let mut dw = uninit_f32(k2 * c * o);
        for cc in 0..c {
            for oo in 0..o {
                for (t, d) in dw[(oo * c + cc) * k2..][..k2].iter_mut().enumerate() {
                    *d = dwt[(t * c + cc) * o + oo];
                }
            }
        }
        dw
    }
}

/// Conv weights (O, C, k, k) re-laid out per kernel tap: `[t][o][c]`, t = ki·k + kj — the
/// (O·C × k²) weight matrix transposed.
pub(crate) fn taps(o: usize, c: usize, k: usize, w: &[f32]) -> Vec<f32> {
    debug_assert_eq!(w.len(), o * c * k * k);
    transposed(w, o * c, k * k)
}
