//! Stride-2 3×3 convolutions (pad 1: YOLOv8's downsampling Convs) as shifted convolutions over
//! the four phase planes of the padded input, for the direct kernel of [`super::direct`].
//!
//! Why: the GEMM path builds an im2col band (9 copies of every output pixel's inputs) and then
//! packs it again inside the GEMM; the first conv (3 → 16 channels, K = 27) ran at a fifth of
//! the GEMM ceiling (issue 15). Splitting the zero-padded input `xpad` by row and column
//! parity, `P_ab[i][j] = xpad[2i + a][2j + b]`, turns the strided reads into shifted ones:
//! tap (ki, kj) of output (oy, ox) reads
//! `xpad[2oy + ki][2ox + kj] = P_{ki%2, kj%2}[oy + ki/2][ox + kj/2]`,
//! so on a wide output grid of rows of `Wh` (the phase planes' row length; one garbage column
//! per row) every tap reads one contiguous run of one phase plane. The split is one pass over
//! the input instead of im2col's 2.25.

use std::sync::Arc;

use super::conv::Geom;
use super::direct;

/// The geometry and tap-ordered weights of one phase-split conv.
pub(crate) struct Phased {
    g: Geom,
    /// Phase-plane row length ⌈(W + 2)/2⌉ = OW + 1, and floats per phase plane (one spare:
    /// the wide grid's last garbage column reads one float past the plane).
    wh: usize,
    pp: usize,
    /// Each tap's offset from a channel's first phase plane.
    offs: [usize; 9],
    /// Weights in tap order ([`super::shifted::taps`]), shared like [`super::shifted::Shifted`]'s.
    wk: Arc<Vec<f32>>,
}

impl Phased {
    /// Whether `g` is a convolution this scheme computes: stride 2, 3×3, pad 1.
    pub fn applies(g: &Geom) -> bool {
        g.stride == 2 && g.kh == 3 && g.kw == 3 && g.pad == 1
    }

    /// With weights already in tap order ([`super::shifted::taps`]).
    pub fn with_taps(g: &Geom, wk: Arc<Vec<f32>>) -> Self {
        debug_assert!(Self::applies(g));
        debug_assert_eq!(wk.len(), 9 * g.o * g.c);
        let (hh, wh) = ((g.h + 3) / 2, (g.w + 3) / 2);
        debug_assert_eq!((g.oh + 1, g.ow + 1), (hh, wh));
        let pp = hh * wh + 1;
        let mut offs = [0; 9];
        for (t, off) in offs.iter_mut().enumerate() {
            let (ki, kj) = (t / 3, t % 3);
            *off = (2 * (ki % 2) + kj % 2) * pp + (ki / 2) * wh + kj / 2;
        }
        Phased { g: *g, wh, pp, offs, wk }
    }

    /// Floats per channel of the split input (four phase planes).
    pub fn plane_len(&self) -> usize {
        4 * self.pp
    }

    /// Output row `oy` occupies wide columns `oy·Wh ..`; the last of each row is garbage.
    pub fn wide_row(&self) -> usize {
        self.wh
    }

    /// One channel: `out` (`plane_len()` floats) ← the four phase planes of plane `xc` (H, W)
    /// zero-padded by 1. Every phase-plane float is written once (no separate zero fill).
    pub fn split_plane(&self, xc: &[f32], out: &mut [f32]) {
        let (h, w, wh, pp) = (self.g.h, self.g.w, self.wh, self.pp);
        let hh = (pp - 1) / wh;
        for a in 0..2 {
            let (even, odd) = out[2 * a * pp..(2 * a + 2) * pp].split_at_mut(pp);
            for i in 0..hh {
                let (er, or) = (&mut even[i * wh..(i + 1) * wh], &mut odd[i * wh..(i + 1) * wh]);
                // Padded row 2i + a holds input row 2i + a − 1, or padding.
                let Some(src) = (2 * i + a).checked_sub(1).filter(|&y| y < h).map(|y| &xc[y * w..(y + 1) * w]) else {
                    er.fill(0.0);
                    or.fill(0.0);
                    continue;
                };
                // Padded column X = x + 1: even X (b = 0) at X/2, odd X (b = 1) at X/2; column
                // 0 and those past W + 1 are padding.
                deinterleave(src, &mut er[1..], or);
                er[0] = 0.0;
                er[1 + w / 2..].fill(0.0);
                or[w.div_ceil(2)..].fill(0.0);
            }
            even[hh * wh] = 0.0;
            odd[hh * wh] = 0.0;
        }
    }

    /// Output channels `os`, output rows `oys` of the wide grid into `zw` (`os.len()` rows of
    /// `oys.len()·Wh`), from the split input `xs`.
    pub fn forward_tile(
        &self,
        xs: &[f32],
        os: std::ops::Range<usize>,
        oys: std::ops::Range<usize>,
        zw: &mut [f32],
        par: gemm::Parallelism,
    ) {
        let cols = oys.len() * self.wh;
        direct::conv(
            &xs[oys.start * self.wh..],
            (self.plane_len(), self.g.c),
            &self.offs,
            &self.wk,
            os,
            cols,
            (zw, cols),
            par,
        );
    }
}

/// `odd[j] = src[2j]`, `even[j] = src[2j + 1]` for the `src` pairs (and `odd` takes a last
/// unpaired value).
fn deinterleave(src: &[f32], even: &mut [f32], odd: &mut [f32]) {
    let mut pairs = src.chunks_exact(2);
    for ((p, e), o) in (&mut pairs).zip(even.iter_mut()).zip(odd.iter_mut()) {
        *o = p[0];
        *e = p[1];
    }
    if let [last] = pairs.remainder() {
        odd[src.len() / 2] = *last;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the defining sum on odd and even sizes (the phase planes' edges differ).
    #[test]
    fn matches_a_strided_conv() {
        if !direct::available() {
            eprintln!("skipped: no AVX-512F");
            return;
        }
        for &(c, o, h, w) in &[(3, 16, 9, 12), (5, 9, 8, 7), (2, 3, 1, 1), (4, 8, 2, 3)] {
            let g = Geom::new((1, c, h, w), (o, c, 3, 3), 2, 1).unwrap();
            let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5).collect();
            let wt: Vec<f32> = (0..o * c * 9).map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5).collect();
            let ph = Phased::with_taps(&g, Arc::new(super::super::shifted::taps(o, c, 3, &wt)));
            let mut xs = vec![f32::NAN; c * ph.plane_len()];
            for (xc, out) in x.chunks_exact(h * w).zip(xs.chunks_exact_mut(ph.plane_len())) {
                ph.split_plane(xc, out);
            }
            let mut zw = vec![f32::NAN; o * g.oh * ph.wide_row()];
            ph.forward_tile(&xs, 0..o, 0..g.oh, &mut zw, gemm::Parallelism::None);
            for oo in 0..o {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        let mut want = 0f32;
                        for cc in 0..c {
                            for ki in 0..3 {
                                for kj in 0..3 {
                                    let (y, xx) = ((2 * oy + ki) as isize - 1, (2 * ox + kj) as isize - 1);
                                    if (0..h as isize).contains(&y) && (0..w as isize).contains(&xx) {
                                        want += wt[((oo * c + cc) * 3 + ki) * 3 + kj]
                                            * x[(cc * h + y as usize) * w + xx as usize];
                                    }
                                }
                            }
                        }
                        let got = zw[(oo * g.oh + oy) * ph.wide_row() + ox];
                        assert!((got - want).abs() < 1e-5, "{c}x{h}x{w} o {oo} at ({oy}, {ox}): {got} vs {want}");
                    }
                }
            }
        }
    }
}
