//! Winograd F(2×2, 3×3) for the eval path's stride-1 3×3 convs: 16 multiplications per 2×2
//! output tile and channel pair instead of 36.
//!
//! Why: after folding, fusing and tiling (issue 15), inference runs its convs at 60–75% of the
//! GEMM's peak, so fewer multiplications are what is left. Most of yolov8n's arithmetic at
//! 640 px is in stride-1 3×3 convs (the C2f bottlenecks and the Detect head's first two convs).
//!
//! With `U = G g Gᵀ` (each 3×3 kernel → 4×4, once at load), `V = Bᵀ d B` (each 4×4 input patch,
//! patches overlapping by 2) and `Y = Aᵀ M A` (4×4 → the 2×2 outputs), the conv is 16 independent
//! GEMMs, one per position ξ of the 4×4 transform: `M_ξ (O, T) = U_ξ (O, C) · V_ξ (C, T)` over
//! the T tiles of a block. Blocks are bands of tile rows small enough that V and M stay in
//! cache between the transforms and the GEMMs. In f32 the transforms add rounding of a few ulps
//! of the largest term; the outputs stay within 1e-5 of the direct sum on YOLOv8's activations
//! (tests below, and the unchanged parity fixtures).
//!
//! The inverse transform's rows go through the same epilogue (bias, SiLU, residual) as every
//! other folded conv ([`super::infer`]); training keeps its exact GEMM convs.

use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

use super::conv::{sgemm_ld, Geom};
use super::fastmath::{copy_short, multiversioned};

/// Positions of the 4×4 transform.
const XI: usize = 16;

/// [`set_enabled`]'s choice: 0 = not set (the default below), 1 = on, 2 = off.
static CHOICE: AtomicU8 = AtomicU8::new(0);

/// Forces the Winograd path on or off, over the default: for benchmarks that compare it with
/// the shifted / direct convs in one process.
pub fn set_enabled(on: bool) {
    CHOICE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
}

/// By default on where the CPU lacks AVX-512F, i.e. where the shifted convs run as 9 GEMMs: that
/// is where it was measured faster (benchmarks/RESULTS.md, issue 15). Where the direct AVX-512
/// kernel runs them, an earlier Winograd (before that kernel) measured level at 640 px and
/// slower at 320 px, so it stays off there until measured against the kernel (`--ab-winograd`).
pub(crate) fn enabled() -> bool {
    match CHOICE.load(Ordering::Relaxed) {
        0 => !super::fastmath::avx512(),
        c => c == 1,
    }
}

/// Input and output channels from which it pays: the transforms cost per channel and tile,
/// the products per channel pair, so narrow convs spend their saving on the transforms. Measured
/// per layer (`inference --profile --ab-winograd`, AVX2 Zen 3): yolov8n's 16- and 32-channel
/// bottlenecks ran up to 15% slower at 320 px and about level at 640; 64 channels and more ran
/// 5–35% faster at both sizes.
const MIN_CHANNELS: usize = 48;

/// Whether `g` is a conv this computes (3×3, stride 1, pad 1) and one where it pays.
pub(crate) fn applies(g: &Geom) -> bool {
    (g.kh, g.kw, g.stride, g.pad) == (3, 3, 1, 1) && g.c.min(g.o) >= MIN_CHANNELS
}

/// Scratch floats one tile row of a block takes (V and M for every channel), for sizing blocks.
pub(crate) fn floats_per_tile_row(t: &Tiling, c: usize, o: usize) -> usize {
    XI * (c + o) * t.tw
}

/// A stride-1, pad-1 3×3 conv's weights in the Winograd domain.
#[derive(Debug)]
pub(crate) struct Winograd {
    c: usize,
    o: usize,
    /// `U[ξ][o][c]`.
    u: Vec<f32>,
}

/// The geometry of one input size: tiles of 2×2 outputs, and the zero-padded plane they read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tiling {
    pub h: usize,
    pub w: usize,
    /// Tile rows and columns: ⌈H/2⌉, ⌈W/2⌉.
    pub th: usize,
    pub tw: usize,
}

impl Tiling {
    pub fn new((h, w): (usize, usize)) -> Self {
        Tiling { h, w, th: h.div_ceil(2), tw: w.div_ceil(2) }
    }
    /// Padded row length: one zero column left, the image, zeros up to the last tile's patch.
    pub fn row(&self) -> usize {
        2 * self.tw + 2
    }
    /// Floats per padded channel plane (2·TH + 2 rows).
    pub fn plane_len(&self) -> usize {
        (2 * self.th + 2) * self.row()
    }
    /// One channel (H, W) → its zero-padded plane: pixel (y, x) at row y + 1, column x + 1.
    pub fn pad_plane(&self, xc: &[f32], out: &mut [f32]) {
        let r = self.row();
        out.fill(0.0);
        for (y, src) in xc.chunks_exact(self.w).enumerate() {
            let at = (y + 1) * r + 1;
            copy_short(&mut out[at..at + self.w], src);
        }
    }
}

impl Winograd {
    /// `w` is (O, C, 3, 3).
    pub fn new(o: usize, c: usize, w: &[f32]) -> Self {
        assert_eq!(w.len(), o * c * 9, "winograd: weights are not (O, C, 3, 3)");
        // G (4×3) = [[1,0,0], [½,½,½], [½,−½,½], [0,0,1]].
        const G: [[f32; 3]; 4] = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let mut u = vec![0f32; XI * o * c];
        for oo in 0..o {
            for cc in 0..c {
                let g = &w[(oo * c + cc) * 9..][..9];
                // t = G g (4×3), then U = t Gᵀ (4×4).
                let mut t = [[0f32; 3]; 4];
                for (i, gi) in G.iter().enumerate() {
                    for b in 0..3 {
                        t[i][b] = (0..3).map(|a| gi[a] * g[a * 3 + b]).sum();
                    }
                }
                for i in 0..4 {
                    for (j, gj) in G.iter().enumerate() {
                        let v: f32 = (0..3).map(|b| t[i][b] * gj[b]).sum();
                        u[((i * 4 + j) * o + oo) * c + cc] = v;
                    }
                }
            }
        }
        Winograd { c, o, u }
    }

    /// Floats of the transformed input ([`Self::transform`]) of `rows` tile rows.
    pub fn v_len(&self, t: &Tiling, rows: usize) -> usize {
        XI * self.c * rows * t.tw
    }

    /// Scratch floats [`Self::multiply`] needs for `rows` tile rows and `os` output channels.
    pub fn m_len(t: &Tiling, rows: usize, os: usize) -> usize {
        XI * os * rows * t.tw + 8 * (t.tw + 1) + 2 * t.tw
    }

    /// Scratch floats [`Self::block`] needs.
    pub fn scratch_len(&self, t: &Tiling, rows: usize, os: usize) -> usize {
        self.v_len(t, rows) + Self::m_len(t, rows, os)
    }

    /// Input channel `c`'s patches of tile rows `tys` from its padded plane `xc`
    /// ([`Tiling::pad_plane`]) into `vc` (16 rows ξ of `tys.len()·TW` tiles): channel `c` of the
    /// transformed input `V[c][ξ][tile]`, whose channels are independent (threads may fill them).
    /// `eo`: scratch of 8·(TW + 1) floats.
    pub fn transform(t: &Tiling, xc: &[f32], tys: Range<usize>, vc: &mut [f32], eo: &mut [f32]) {
        let (tw, nt, row) = (t.tw, tys.len() * t.tw, t.row());
        for (i, ty) in tys.enumerate() {
            let r = |k: usize| &xc[(2 * ty + k) * row..][..row];
            input_rows(r(0), r(1), r(2), r(3), vc, (i * tw, nt), tw, eo);
        }
    }

    /// Output channels `os` of tile rows `tys` from the transformed input `v` (every channel,
    /// [`Self::transform`]): calls `emit(o, oy, row)` with the `W` raw conv outputs (no bias)
    /// of every output row `oy` the tiles cover. `scratch`: [`Self::m_len`] floats.
    pub fn multiply(
        &self,
        t: &Tiling,
        v: &[f32],
        os: Range<usize>,
        tys: Range<usize>,
        scratch: &mut [f32],
        mut emit: impl FnMut(usize, usize, &[f32]),
    ) {
        let (c, tw, nt) = (self.c, t.tw, tys.len() * t.tw);
        let (m, rest) = scratch.split_at_mut(XI * os.len() * nt);
        let (s, out) = rest.split_at_mut(8 * (tw + 1));
        let out = &mut out[..2 * tw];
        // M_ξ (os, nt) = U_ξ (os, C) · V_ξ (C, nt); V_ξ's rows are XI·nt apart.
        for xi in 0..XI {
            sgemm_ld(
                os.len(),
                nt,
                c,
                (&mut m[xi * os.len() * nt..(xi + 1) * os.len() * nt], nt),
                false,
                (&self.u[(xi * self.o + os.start) * c..], c, false),
                (&v[xi * nt..], XI * nt, false),
                gemm::Parallelism::None,
            );
        }
        for (k, oo) in os.enumerate() {
            for (i, ty) in tys.clone().enumerate() {
                let at = (k * nt + i * tw, m.len() / XI);
                output_rows(m, at, tw, s, out, 0);
                emit(oo, 2 * ty, &out[..t.w]);
                if 2 * ty + 1 < t.h {
                    output_rows(m, at, tw, s, out, 1);
                    emit(oo, 2 * ty + 1, &out[..t.w]);
                }
            }
        }
    }

    /// [`Self::transform`] of every channel, then [`Self::multiply`], on one thread.
    pub fn block(
        &self,
        t: &Tiling,
        xp: &[f32],
        os: Range<usize>,
        tys: Range<usize>,
        scratch: &mut [f32],
        emit: impl FnMut(usize, usize, &[f32]),
    ) {
        let (v, rest) = scratch.split_at_mut(self.v_len(t, tys.len()));
        let plane = t.plane_len();
        let eo = &mut rest[XI * os.len() * tys.len() * t.tw..];
        for (xc, vc) in xp.chunks_exact(plane).zip(v.chunks_exact_mut(XI * tys.len() * t.tw)) {
            Self::transform(t, xc, tys.clone(), vc, eo);
        }
        self.multiply(t, v, os, tys, rest, emit);
    }
}

/// `Bᵀ d B` of one tile row's `tw` patches (rows `r0..r3` of the padded plane): position ξ of
/// tile `x` goes to `v[ξ·step + at + x]`. `Bᵀ = [[1,0,−1,0], [0,1,1,0], [0,−1,1,0], [0,1,0,−1]]`.
/// `eo`: scratch of 8·(tw + 1) floats.
///
/// Laid out for vectors: `Bᵀ` down the 4 rows, split into even and odd columns (`E`, `O`), so
/// that tile `x`'s columns 2x..2x+3 are `E[x], O[x], E[x+1], O[x+1]` and each of the 16 outputs
/// is one contiguous pass over the tiles.
#[inline(always)]
fn input_rows_gen(
    r0: &[f32],
    r1: &[f32],
    r2: &[f32],
    r3: &[f32],
    v: &mut [f32],
    (at, step): (usize, usize),
    tw: usize,
    eo: &mut [f32],
) {
    let n = tw + 1;
    let (r0, r1, r2, r3) = (&r0[..2 * n], &r1[..2 * n], &r2[..2 * n], &r3[..2 * n]);
    let (e, o) = eo[..8 * n].split_at_mut(4 * n);
    // Bᵀ down the rows for columns `parity`, `parity + 2`, … into `dst` (4 rows of n).
    let down = |parity: usize, dst: &mut [f32]| {
        let (d0, rest) = dst.split_at_mut(n);
        let (d1, rest) = rest.split_at_mut(n);
        let (d2, d3) = rest.split_at_mut(n);
        for k in 0..n {
            let j = 2 * k + parity;
            let (a0, a1, a2, a3) = (r0[j], r1[j], r2[j], r3[j]);
            d0[k] = a0 - a2;
            d1[k] = a1 + a2;
            d2[k] = a2 - a1;
            d3[k] = a1 - a3;
        }
    };
    down(0, e);
    down(1, o);
    for i in 0..4 {
        let (ei, oi) = (&e[i * n..(i + 1) * n], &o[i * n..(i + 1) * n]);
        let out = |j: usize| (4 * i + j) * step + at;
        let (o0, o1, o2, o3) = (out(0), out(1), out(2), out(3));
        for x in 0..tw {
            v[o0 + x] = ei[x] - ei[x + 1];
        }
        for x in 0..tw {
            v[o1 + x] = oi[x] + ei[x + 1];
        }
        for x in 0..tw {
            v[o2 + x] = ei[x + 1] - oi[x];
        }
        for x in 0..tw {
            v[o3 + x] = oi[x] - oi[x + 1];
        }
    }
}

multiversioned!(fn input_rows = input_rows_gen / input_rows_avx2(r0: &[f32], r1: &[f32], r2: &[f32], r3: &[f32], v: &mut [f32], at: (usize, usize), tw: usize, eo: &mut [f32]) -> ());

/// Output row `half` (0: the tiles' top rows, 1: bottom) of one tile row from `M`: position ξ of
/// tile `x` at `m[ξ·step + at + x]`, into `out` (2·tw floats). `Aᵀ = [[1,1,1,0], [0,1,−1,−1]]`.
#[inline(always)]
fn output_rows_gen(m: &[f32], (at, step): (usize, usize), tw: usize, s: &mut [f32], out: &mut [f32], half: usize) {
    // s[j] (tw floats each) = row `half` of Aᵀ M: combine the 4 rows of M per column j.
    let row = |i: usize, j: usize| &m[(4 * i + j) * step + at..][..tw];
    for j in 0..4 {
        let sj = &mut s[j * tw..(j + 1) * tw];
        let (m0, m1, m2, m3) = (row(0, j), row(1, j), row(2, j), row(3, j));
        if half == 0 {
            for x in 0..tw {
                sj[x] = m0[x] + m1[x] + m2[x];
            }
        } else {
            for x in 0..tw {
                sj[x] = m1[x] - m2[x] - m3[x];
            }
        }
    }
    let (s0, s1, s2, s3) = (&s[..tw], &s[tw..2 * tw], &s[2 * tw..3 * tw], &s[3 * tw..4 * tw]);
    for x in 0..tw {
        out[2 * x] = s0[x] + s1[x] + s2[x];
        out[2 * x + 1] = s1[x] - s2[x] - s3[x];
    }
}

multiversioned!(fn output_rows = output_rows_gen / output_rows_avx2(m: &[f32], at: (usize, usize), tw: usize, s: &mut [f32], out: &mut [f32], half: usize) -> ());

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the direct sum, for even and odd sizes, one and several tile-row blocks and a
    /// channel range.
    #[test]
    fn matches_the_direct_conv() {
        for &(c, o, h, w) in &[(3usize, 5usize, 6usize, 8usize), (16, 8, 7, 5), (8, 24, 1, 9), (5, 3, 11, 2)] {
            let x: Vec<f32> = (0..c * h * w).map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * 3.0).collect();
            let wt: Vec<f32> = (0..o * c * 9).map(|i| ((i * 104729 % 997) as f32 / 498.0 - 1.0) * 0.3).collect();
            let want = |oo: usize, y: usize, xx: usize| -> f32 {
                let mut s = 0f64;
                for cc in 0..c {
                    for ki in 0..3 {
                        for kj in 0..3 {
                            let (iy, ix) = (y as isize + ki as isize - 1, xx as isize + kj as isize - 1);
                            if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                s += (x[(cc * h + iy as usize) * w + ix as usize]
                                    * wt[((oo * c + cc) * 3 + ki) * 3 + kj])
                                    as f64;
                            }
                        }
                    }
                }
                s as f32
            };
            let wg = Winograd::new(o, c, &wt);
            let t = Tiling::new((h, w));
            let mut xp = vec![f32::NAN; c * t.plane_len()];
            for (xc, pc) in x.chunks(h * w).zip(xp.chunks_mut(t.plane_len())) {
                t.pad_plane(xc, pc);
            }
            let os = 1.min(o - 1)..o;
            for rows in [1, t.th] {
                let mut got = vec![f32::NAN; o * h * w];
                let mut ty = 0;
                while ty < t.th {
                    let tys = ty..(ty + rows).min(t.th);
                    let mut scratch = vec![f32::NAN; wg.scratch_len(&t, tys.len(), os.len())];
                    wg.block(&t, &xp, os.clone(), tys.clone(), &mut scratch, |oo, oy, r| {
                        got[(oo * h + oy) * w..][..w].copy_from_slice(r)
                    });
                    ty = tys.end;
                }
                for oo in os.clone() {
                    for y in 0..h {
                        for xx in 0..w {
                            let (g, e) = (got[(oo * h + y) * w + xx], want(oo, y, xx));
                            assert!(
                                (g - e).abs() < 1e-5 * (1.0 + e.abs()),
                                "{c}x{o} {h}x{w} ({oo},{y},{xx}): {g} vs {e}"
                            );
                        }
                    }
                }
                assert!(got[..os.start * h * w].iter().all(|v| v.is_nan()), "wrote a channel outside its range");
            }
        }
    }
}
