//! The inference convolution: an ultralytics `Conv` with its BatchNorm folded in (as `fuse()`
//! does), run as one kernel — GEMM, then bias, SiLU and an optional residual add in the single
//! pass that moves the GEMM's output into place.
//!
//! Why: the eval path built from candle ops ran every Conv as im2col + GEMM, then a bias add and
//! a SiLU as two more passes over the activation (SiLU single-threaded), and re-folded BatchNorm
//! on every call: `yolo-predict` took 1.8–2.4× ultralytics' time (issue 15). Here:
//! - stride-1 "same" convs use the shifted convs of [`super::shifted`] (no im2col matrix);
//!   stride-2 3×3 convs on small outputs run phase-split ([`super::phased`]) on the direct
//!   kernel, other strided convs build im2col bands; 1×1 convs read the image in place (on the
//!   direct kernel where the CPU has AVX-512F, else the GEMM);
//! - the output is cut into tiles (output-channel range × output-row band) that rayon spreads
//!   over threads, each with a single-threaded GEMM whose output is still in cache when its
//!   epilogue runs, so one image (batch 1, prediction) uses every core;
//! - inside a batch-parallel caller (one image per thread, validation) tiles run serially.
//!
//! Destinations are rows with their own stride, so a conv can write straight into a channel
//! slice of a concatenation buffer or into the columns of the Detect head's output.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::Arc;

use rayon::prelude::*;

use super::conv::{im2col_rows, sgemm_raw, threads, Geom};
use super::direct;
use super::fastmath::{multiversioned, sigmoid, uninit_f32};
use super::phased::Phased;
use super::shifted::{taps, Shifted};
use super::winograd::{self, Tiling, Winograd};

/// How a call may use threads: spread its tiles over rayon (an image at a time), or run them
/// in order (the caller already runs one image per thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Par {
    Tiles,
    Serial,
}

/// Output pixels a tile covers at least (narrower GEMMs lose efficiency), and the most floats
/// of im2col band or wide shifted output one tile keeps in scratch (≈ L2-sized).
const MIN_TILE_COLS: usize = 256;
const TILE_SCRATCH: usize = 256 * 1024;

/// Output pixels and weight floats up to which stride-2 convs run phase-split on the direct
/// kernel ([`Phased`]). Larger ones build im2col bands for the GEMM, which stay in L2 where
/// the phase planes of a large input do not, and whose packing pays off on 128 → 256 weights:
/// measured per layer with `inference --profile --ab-direct` (benchmarks/RESULTS.md, issue 15).
const PHASED_MAX_PIXELS: usize = 40 * 40;
const PHASED_MAX_WEIGHTS: usize = 160 * 1024;

thread_local! {
    /// Per-thread scratch reused across calls (im2col bands, wide shifted outputs).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch, grown to at least `n` floats (contents unspecified).
fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < n {
            *s = uninit_f32(n);
        }
        f(&mut s[..n])
    })
}

/// Where a conv writes: row `o` (output channel) of the result starts at `ptr + o·ld`, and
/// `OH·OW` floats of it are written. A contiguous (O, OH, OW) output has `ld = OH·OW`.
#[derive(Clone, Copy)]
pub(crate) struct Rows {
    ptr: *mut f32,
    len: usize,
    ld: usize,
}

// SAFETY: tasks write disjoint tiles (see `Rows::segment`).
unsafe impl Send for Rows {}
unsafe impl Sync for Rows {}

impl Rows {
    /// Rows of `ld` floats in `buf`.
    pub fn of(buf: &mut [f32], ld: usize) -> Self {
        Rows { ptr: buf.as_mut_ptr(), len: buf.len(), ld }
    }
    fn check(&self, o: usize, cols: Range<usize>) -> usize {
        let at = o * self.ld + cols.start;
        assert!(
            cols.start <= cols.end && at + cols.len() <= self.len,
            "folded conv: row {o} columns {cols:?} outside a buffer of {}",
            self.len
        );
        at
    }
    /// Row `o`, columns `cols`.
    /// SAFETY: no other live slice may overlap it (tiles are disjoint).
    #[allow(clippy::mut_from_ref)]
    unsafe fn segment(&self, o: usize, cols: Range<usize>) -> &mut [f32] {
        let at = self.check(o, cols.clone());
        std::slice::from_raw_parts_mut(self.ptr.add(at), cols.len())
    }
}

/// `y = act(z + b) [+ r]` element-wise, `z` read from `src` (or `y` itself when `src` is None).
#[inline(always)]
fn epilogue_gen(y: &mut [f32], src: Option<&[f32]>, b: f32, act: bool, res: Option<&[f32]>) {
    let z = |v: f32| {
        if act {
            let t = v + b;
            t * sigmoid(t)
        } else {
            v + b
        }
    };
    match (src, res) {
        (Some(s), Some(r)) => y.iter_mut().zip(s).zip(r).for_each(|((y, &s), &r)| *y = z(s) + r),
        (Some(s), None) => y.iter_mut().zip(s).for_each(|(y, &s)| *y = z(s)),
        (None, Some(r)) => y.iter_mut().zip(r).for_each(|(y, &r)| *y = z(*y) + r),
        (None, None) => y.iter_mut().for_each(|y| *y = z(*y)),
    }
}

multiversioned!(fn epilogue = epilogue_gen / epilogue_avx2(y: &mut [f32], src: Option<&[f32]>, b: f32, act: bool, res: Option<&[f32]>) -> ());

/// A conv the direct kernel computes on a wide output grid (rows of `wide_row()` columns, the
/// last few garbage) from a per-channel re-laid-out copy of the image: zero-padded for stride 1
/// ([`Shifted`]), split into phase planes for stride 2 ([`Phased`]).
trait Wide: Sync {
    /// Floats per re-laid-out channel.
    fn plane_len(&self) -> usize;
    /// One channel (H, W) → its re-laid-out plane.
    fn prepare_plane(&self, xc: &[f32], out: &mut [f32]);
    fn wide_row(&self) -> usize;
    /// Output channels `os`, rows `oys` of the wide grid into `zw`.
    fn tile(&self, xp: &[f32], os: Range<usize>, oys: Range<usize>, zw: &mut [f32], par: gemm::Parallelism);
}

/// `Wide` for a conv type from its own methods (`$prepare`: how it re-lays out one channel).
macro_rules! wide_from_methods {
    ($t:ty, $prepare:ident) => {
        impl Wide for $t {
            fn plane_len(&self) -> usize {
                <$t>::plane_len(self)
            }
            fn prepare_plane(&self, xc: &[f32], out: &mut [f32]) {
                self.$prepare(xc, out)
            }
            fn wide_row(&self) -> usize {
                <$t>::wide_row(self)
            }
            fn tile(&self, xp: &[f32], os: Range<usize>, oys: Range<usize>, zw: &mut [f32], par: gemm::Parallelism) {
                self.forward_tile(xp, os, oys, zw, par)
            }
        }
    };
}
wide_from_methods!(Shifted, pad_plane);
wide_from_methods!(Phased, split_plane);

/// A Conv with BatchNorm folded in: `act(conv(x, w) + b)`, or a plain conv with bias
/// (`act = false`, the Detect head's last 1×1 convs).
#[derive(Debug, Clone)]
pub(crate) struct FoldedConv {
    pub c: usize,
    pub o: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub act: bool,
    /// (O, C, k, k): the im2col / pointwise GEMM's left operand.
    w: Vec<f32>,
    /// The same weights per kernel tap, for stride-1 "same" convs ([`Shifted`]) and stride-2
    /// 3×3 convs ([`Phased`]).
    taps: Option<Arc<Vec<f32>>>,
    /// The same weights in the Winograd domain, for stride-1 3×3 convs ([`Winograd`]).
    wino: Option<Arc<Winograd>>,
    b: Vec<f32>,
}

impl FoldedConv {
    /// `w` (O, C, k, k) and `b` (O,) already folded.
    pub fn new((c, o, k): (usize, usize, usize), (s, p): (usize, usize), act: bool, w: Vec<f32>, b: Vec<f32>) -> Self {
        assert_eq!((w.len(), b.len()), (o * c * k * k, o), "folded conv: weight/bias sizes");
        let g = self::Geom { n: 1, c, h: k, w: k, o, kh: k, kw: k, stride: s, pad: p, oh: 1, ow: 1 };
        let taps = (Shifted::applies(&g) || Phased::applies(&g)).then(|| Arc::new(taps(o, c, k, &w)));
        let wino = winograd::applies(&g).then(|| Arc::new(Winograd::new(o, c, &w)));
        FoldedConv { c, o, k, s, p, act, w, taps, wino, b }
    }

    /// Output size for an (H, W) input.
    pub fn out_hw(&self, (h, w): (usize, usize)) -> (usize, usize) {
        ((h + 2 * self.p - self.k) / self.s + 1, (w + 2 * self.p - self.k) / self.s + 1)
    }

    fn geom(&self, (h, w): (usize, usize)) -> Geom {
        let (oh, ow) = self.out_hw((h, w));
        Geom { n: 1, c: self.c, h, w, o: self.o, kh: self.k, kw: self.k, stride: self.s, pad: self.p, oh, ow }
    }

    /// One image into a contiguous (O, OH, OW) buffer: see [`Self::run_rows`].
    pub fn run(&self, x: &[f32], hw: (usize, usize), y: &mut [f32], res: Option<&[f32]>, par: Par) {
        let (oh, ow) = self.out_hw(hw);
        self.run_rows(x, hw, Rows::of(y, oh * ow), res, par);
    }

    /// One image `x` (C, H, W) → `dst` rows: `act(conv + b)`, plus `res` (O, OH, OW) when given
    /// (a Bottleneck's shortcut, added after the activation as ultralytics does).
    pub fn run_rows(&self, x: &[f32], hw: (usize, usize), dst: Rows, res: Option<&[f32]>, par: Par) {
        let g = self.geom(hw);
        assert_eq!(x.len(), g.in_len(), "folded conv: input is not (C, H, W)");
        if let Some(r) = res {
            assert_eq!(r.len(), g.out_len(), "folded conv: residual is not (O, OH, OW)");
        }
        if let Some(wg) = self.wino.as_ref().filter(|_| winograd::enabled()) {
            return self.run_winograd(x, &g, wg, dst, res, par);
        }
        match &self.taps {
            Some(wk) if Shifted::applies(&g) => {
                self.run_wide(x, &g, &Shifted::with_taps(&g, wk.clone()), dst, res, par)
            }
            Some(wk) if direct::available() && g.p() <= PHASED_MAX_PIXELS && g.ckk() * g.o <= PHASED_MAX_WEIGHTS => {
                self.run_wide(x, &g, &Phased::with_taps(&g, wk.clone()), dst, res, par)
            }
            _ => self.run_gemm(x, &g, dst, res, par),
        }
    }

    /// Output-row bands and channel ranges to split the output into, and each band's rows.
    /// `(oh, ow, o)`: output rows (or rows of Winograd tiles), their length, output channels.
    fn tiles(
        (oh, ow, o): (usize, usize, usize),
        band_floats_per_row: usize,
        par: Par,
    ) -> (Vec<(Range<usize>, Range<usize>)>, usize) {
        // Rows per band: bounded by the scratch a band needs, at least MIN_TILE_COLS pixels.
        let cap = (TILE_SCRATCH / band_floats_per_row.max(1)).max(1);
        let min_rows = MIN_TILE_COLS.div_ceil(ow).max(1);
        let mut rows = cap.max(1).min(oh);
        let want = if par == Par::Tiles { 2 * threads() } else { 1 };
        // Enough bands for the threads when the image is tall enough.
        let bands_for = |r: usize| oh.div_ceil(r);
        if bands_for(rows) < want {
            rows = oh.div_ceil(want).max(min_rows).min(rows);
        }
        let bands = bands_for(rows);
        // Too few bands: split the output channels too (chunks of ≥ 16 rows of W).
        let chunks = if bands < want { want.div_ceil(bands).min(o / 16).max(1) } else { 1 };
        let per = o.div_ceil(chunks);
        let mut t = Vec::with_capacity(bands * chunks);
        for b in 0..bands {
            for ch in 0..chunks {
                let os = ch * per..((ch + 1) * per).min(o);
                if !os.is_empty() {
                    t.push((os, b * rows..((b + 1) * rows).min(oh)));
                }
            }
        }
        (t, rows)
    }

    /// Runs `f(tile)` for every tile: in parallel for `Par::Tiles` (one single-threaded GEMM
    /// each), and when there is a single tile with its GEMM parallel inside.
    fn for_tiles(
        tiles: Vec<(Range<usize>, Range<usize>)>,
        par: Par,
        f: impl Fn(Range<usize>, Range<usize>, gemm::Parallelism) + Sync,
    ) {
        match par {
            Par::Tiles if tiles.len() > 1 => {
                tiles.into_par_iter().for_each(|(os, oys)| f(os, oys, gemm::Parallelism::None))
            }
            Par::Tiles if threads() > 1 => {
                tiles.into_iter().for_each(|(os, oys)| f(os, oys, gemm::Parallelism::Rayon(threads())))
            }
            _ => tiles.into_iter().for_each(|(os, oys)| f(os, oys, gemm::Parallelism::None)),
        }
    }

    /// A conv computed on a wide output grid from a re-laid-out copy of the image ([`Wide`]).
    fn run_wide(&self, x: &[f32], g: &Geom, sh: &impl Wide, dst: Rows, res: Option<&[f32]>, par: Par) {
        let xp = relayout(x, g.h * g.w, sh.plane_len(), par, |xc, out| sh.prepare_plane(xc, out));
        let wp = sh.wide_row();
        let (tiles, rows) = Self::tiles((g.oh, g.ow, g.o), g.o * wp, par);
        let (p, ow) = (g.p(), g.ow);
        Self::for_tiles(tiles, par, |os, oys, gpar| {
            with_scratch(os.len() * rows * wp, |zw| {
                let cols = oys.len() * wp;
                sh.tile(&xp, os.clone(), oys.clone(), &mut zw[..os.len() * cols], gpar);
                for (i, o) in os.clone().enumerate() {
                    for (r, oy) in oys.clone().enumerate() {
                        let src = &zw[i * cols + r * wp..][..ow];
                        // SAFETY: tiles cover disjoint (channel, row) ranges.
                        let y = unsafe { dst.segment(o, oy * ow..(oy + 1) * ow) };
                        let rr = res.map(|r| &r[o * p + oy * ow..][..ow]);
                        epilogue(y, Some(src), self.b[o], self.act, rr);
                    }
                }
            })
        });
    }

    /// A stride-1 3×3 conv through [`Winograd`]: tiles are bands of tile rows × channel ranges.
    /// When the image is too small for a band per thread, each band's input is transformed once
    /// (its channels spread over the threads) and only the products are split by output
    /// channel: transforming it again for every channel range cost more than Winograd saved.
    fn run_winograd(&self, x: &[f32], g: &Geom, wg: &Winograd, dst: Rows, res: Option<&[f32]>, par: Par) {
        let t = Tiling::new((g.h, g.w));
        let xp = relayout(x, g.h * g.w, t.plane_len(), par, |xc, out| t.pad_plane(xc, out));
        let (tiles, rows) = Self::tiles((t.th, t.tw, g.o), winograd::floats_per_tile_row(&t, g.c, g.o), par);
        let (p, ow) = (g.p(), g.ow);
        let emit = |o: usize, oy: usize, row: &[f32]| {
            // SAFETY: tiles cover disjoint (channel, tile row) ranges.
            let y = unsafe { dst.segment(o, oy * ow..(oy + 1) * ow) };
            let rr = res.map(|r| &r[o * p + oy * ow..][..ow]);
            epilogue(y, Some(row), self.b[o], self.act, rr);
        };
        if par == Par::Tiles && tiles.iter().any(|(os, _)| os.len() < g.o) {
            let plane = t.plane_len();
            let mut v = uninit_f32(wg.v_len(&t, rows));
            let mut bands: Vec<Range<usize>> = tiles.iter().map(|(_, tys)| tys.clone()).collect();
            bands.dedup();
            for tys in bands {
                let v = &mut v[..wg.v_len(&t, tys.len())];
                let per_channel = v.len() / g.c;
                v.par_chunks_mut(per_channel).zip(xp.par_chunks(plane)).for_each(|(vc, xc)| {
                    with_scratch(8 * (t.tw + 1), |eo| Winograd::transform(&t, xc, tys.clone(), vc, eo))
                });
                let v = &*v;
                tiles.par_iter().filter(|(_, b)| *b == tys).for_each(|(os, tys)| {
                    with_scratch(Winograd::m_len(&t, tys.len(), os.len()), |s| {
                        wg.multiply(&t, v, os.clone(), tys.clone(), s, emit)
                    })
                });
            }
            return;
        }
        Self::for_tiles(tiles, par, |os, tys, _| {
            with_scratch(wg.scratch_len(&t, rows, os.len()), |s| wg.block(&t, &xp, os, tys, s, emit))
        });
    }

    fn run_gemm(&self, x: &[f32], g: &Geom, dst: Rows, res: Option<&[f32]>, par: Par) {
        let pointwise = g.is_pointwise();
        let ckk = g.ckk();
        let (tiles, rows) = Self::tiles((g.oh, g.ow, g.o), if pointwise { 0 } else { ckk * g.ow }, par);
        let (p, ow) = (g.p(), g.ow);
        Self::for_tiles(tiles, par, |os, oys, gpar| {
            let cols = oys.len() * ow;
            let c0 = oys.start * ow;
            let scratch = if pointwise { 0 } else { ckk * rows * ow };
            with_scratch(scratch, |band| {
                let (rhs, rhs_ld): (&[f32], usize) = if pointwise {
                    (&x[c0..], p)
                } else {
                    im2col_rows(x, g, oys.clone(), &mut band[..ckk * cols]);
                    (&band[..ckk * cols], cols)
                };
                let at = dst.check(os.start, c0..c0 + cols);
                if os.len() > 1 {
                    dst.check(os.end - 1, c0..c0 + cols);
                }
                // SAFETY: rows os × columns c0.. of `dst` were bounds-checked above and belong
                // to this tile alone; the operands hold every element their strides address.
                unsafe {
                    if pointwise && matches!(gpar, gemm::Parallelism::None) && direct::available() {
                        direct::conv_raw(rhs, (p, g.c), &[0], &self.w, os.clone(), cols, (dst.ptr.add(at), dst.ld));
                    } else {
                        sgemm_raw(
                            os.len(),
                            cols,
                            ckk,
                            (dst.ptr.add(at), dst.ld),
                            false,
                            (&self.w[os.start * ckk..], ckk, false),
                            (rhs, rhs_ld, false),
                            gpar,
                        );
                    }
                }
                for o in os.clone() {
                    // SAFETY: as above; the GEMM is done with these elements.
                    let y = unsafe { dst.segment(o, c0..c0 + cols) };
                    let rr = res.map(|r| &r[o * p + c0..][..cols]);
                    epilogue(y, None, self.b[o], self.act, rr);
                }
            })
        });
    }
}

/// One re-laid-out copy of the image `x` (channels of `hw` floats → planes of `plane_len`),
/// shared read-only by every tile; channels in parallel for `Par::Tiles`.
fn relayout(x: &[f32], hw: usize, plane_len: usize, par: Par, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    // SAFETY (uninit): `f` writes every float of its plane.
    let mut xp = uninit_f32(x.len() / hw * plane_len);
    if par == Par::Tiles {
        xp.par_chunks_mut(plane_len).zip(x.par_chunks(hw)).for_each(|(out, xc)| f(xc, out));
    } else {
        xp.chunks_mut(plane_len).zip(x.chunks(hw)).for_each(|(out, xc)| f(xc, out));
    }
    xp
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Every path (shifted, im2col, pointwise; tiled and serial; residual) against candle's
    /// conv + bias + SiLU.
    #[test]
    fn folded_conv_matches_candle() {
        let dev = Device::Cpu;
        let cases = [
            (3, 16, 3, 2, 1, 17, 23),
            (16, 32, 3, 1, 1, 20, 9),
            (32, 24, 1, 1, 0, 13, 40),
            (8, 8, 3, 1, 1, 64, 48),
            (40, 64, 3, 2, 1, 11, 7),
            // Winograd-wide: a small image (bands split by channel) and a taller odd one.
            (64, 64, 3, 1, 1, 9, 13),
            (48, 80, 3, 1, 1, 41, 30),
        ];
        for (i, &(c, o, k, s, p, h, w)) in cases.iter().enumerate() {
            let x = Tensor::randn(0f32, 1.0, (1, c, h, w), &dev).unwrap();
            let wt = (Tensor::randn(0f32, 1.0, (o, c, k, k), &dev).unwrap() * 0.2).unwrap();
            let b = Tensor::randn(0f32, 1.0, o, &dev).unwrap();
            let z = x.conv2d(&wt, p, s, 1, 1).unwrap().broadcast_add(&b.reshape((1, o, 1, 1)).unwrap()).unwrap();
            let (oh, ow) = (z.dim(2).unwrap(), z.dim(3).unwrap());
            let res = Tensor::randn(0f32, 1.0, (1, o, oh, ow), &dev).unwrap();
            let fc = FoldedConv::new(
                (c, o, k),
                (s, p),
                true,
                wt.flatten_all().unwrap().to_vec1().unwrap(),
                b.to_vec1().unwrap(),
            );
            let xv: Vec<f32> = x.flatten_all().unwrap().to_vec1().unwrap();
            let rv: Vec<f32> = res.flatten_all().unwrap().to_vec1().unwrap();
            for par in [Par::Tiles, Par::Serial] {
                for with_res in [false, true] {
                    let mut y = vec![f32::NAN; o * oh * ow];
                    fc.run(&xv, (h, w), &mut y, with_res.then_some(&rv[..]), par);
                    let mut want = z.silu().unwrap();
                    if with_res {
                        want = (want + &res).unwrap();
                    }
                    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
                    let err = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                    assert!(err < 1e-4, "case {i} {par:?} res {with_res}: max error {err}");
                    // The Winograd path itself, whatever this CPU's default is.
                    if let Some(wg) = &fc.wino {
                        let mut y = vec![f32::NAN; o * oh * ow];
                        let r = with_res.then_some(&rv[..]);
                        fc.run_winograd(&xv, &fc.geom((h, w)), wg, Rows::of(&mut y, oh * ow), r, par);
                        let err = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        assert!(err < 1e-4, "case {i} winograd {par:?} res {with_res}: max error {err}");
                    }
                }
            }
        }
    }

    /// A plain conv (no activation) written into a column range of wider rows.
    #[test]
    fn writes_into_strided_rows() {
        let (c, o, h, w) = (8, 5, 4, 6);
        let wv: Vec<f32> = (0..o * c).map(|i| (i as f32 * 0.37).sin()).collect();
        let bv: Vec<f32> = (0..o).map(|i| i as f32).collect();
        let x: Vec<f32> = (0..c * h * w).map(|i| (i as f32 * 0.11).cos()).collect();
        let fc = FoldedConv::new((c, o, 1), (1, 0), false, wv.clone(), bv.clone());
        let ld = 100;
        let mut out = vec![-7f32; o * ld];
        fc.run_rows(&x, (h, w), Rows::of(&mut out[10..], ld), None, Par::Tiles);
        for oo in 0..o {
            for px in 0..h * w {
                let want: f32 = (0..c).map(|cc| wv[oo * c + cc] * x[cc * h * w + px]).sum::<f32>() + bv[oo];
                assert!((out[10 + oo * ld + px] - want).abs() < 1e-5);
            }
            assert_eq!(out[10 + oo * ld + h * w], -7.0, "wrote past its columns");
        }
    }
}
