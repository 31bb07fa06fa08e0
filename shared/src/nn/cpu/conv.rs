//! kubeyolo's CPU convolution: forward, input gradient and weight gradient as im2col/col2im +
//! the `gemm` crate, wrapped in candle `CustomOp`s so autograd keeps working.
//!
//! Why: candle 0.11 computes the CPU conv input gradient with a naive `ConvTranspose2D` loop that
//! makes a YOLOv8 training step ~20× slower than PyTorch (issue 7). Here every conv is one GEMM
//! per image:
//! - forward      `Y_n (O, P)   = W (O, CKK) · cols(X_n) (CKK, P)`
//! - input grad   `dX_n = col2im(Wᵀ (CKK, O) · dY_n (O, P))`
//! - weight grad  `dW (O, CKK) = Σ_n dY_n (O, P) · cols(X_n)ᵀ (P, CKK)`
//!
//! with P = OH·OW and CKK = C·kh·kw. A 1×1 stride-1 unpadded conv needs no im2col/col2im at all
//! (`cols(X_n)` is `X_n` itself). Images are spread over rayon's threads (one single-threaded GEMM
//! per image) when the batch has at least as many images as threads; otherwise each GEMM is
//! parallel inside. Only CPU + f32 + contiguous tensors reach this module: [`super::ops::conv2d`]
//! dispatches everything else to candle's own conv.

use candle_core::{bail, CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::fastmath::{copy_short, multiversioned, uninit_f32};

/// The shape of one convolution (square stride and padding, dilation 1, no groups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub fn new(
        x: (usize, usize, usize, usize),
        w: (usize, usize, usize, usize),
        stride: usize,
        pad: usize,
    ) -> Result<Self> {
        let (n, c, h, wd) = x;
        let (o, c2, kh, kw) = w;
        if c != c2 {
            bail!("conv2d: input has {c} channels, weight expects {c2}");
        }
        if stride == 0 {
            bail!("conv2d: stride 0");
        }
        if h + 2 * pad < kh || wd + 2 * pad < kw {
            bail!("conv2d: kernel {kh}x{kw} larger than padded input {h}x{wd} (pad {pad})");
        }
        let oh = (h + 2 * pad - kh) / stride + 1;
        let ow = (wd + 2 * pad - kw) / stride + 1;
        Ok(Self { n, c, h, w: wd, o, kh, kw, stride, pad, oh, ow })
    }
    /// Output pixels per image.
    pub(crate) fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// Rows of the im2col matrix.
    pub(crate) fn ckk(&self) -> usize {
        self.c * self.kh * self.kw
    }
    /// A 1×1 stride-1 unpadded conv: the input image already is its im2col matrix.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
    pub(crate) fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub(crate) fn out_len(&self) -> usize {
        self.o * self.p()
    }
    /// The output columns `ox` whose input column `ox·s + kj − p` lies inside the image.
    fn valid_ox(&self, kj: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad);
        let lo = if p > kj { (p - kj).div_ceil(s) } else { 0 };
        let hi = if self.w + p > kj { ((self.w - 1 + p - kj) / s + 1).min(self.ow) } else { 0 };
        (lo.min(hi), hi)
    }
}

/// Copies image `x` (C, H, W) into its im2col matrix `cols` (C·kh·kw, OH·OW), zero padding.
pub(crate) fn im2col(x: &[f32], g: &Geom, cols: &mut [f32]) {
    im2col_rows(x, g, 0..g.oh, cols);
}

/// The columns of output rows `oys` only: `cols` (C·kh·kw, oys.len()·OW), so a GEMM can work
/// on a band of the output whose im2col matrix stays in cache.
#[inline(always)]
fn im2col_rows_gen(x: &[f32], g: &Geom, oys: std::ops::Range<usize>, cols: &mut [f32]) {
    let (p, hw) = (oys.len() * g.ow, g.h * g.w);
    for c in 0..g.c {
        let xc = &x[c * hw..(c + 1) * hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let dst = &mut cols[row * p..(row + 1) * p];
                let (lo, hi) = g.valid_ox(kj);
                for (r, oy) in oys.clone().enumerate() {
                    let d = &mut dst[r * g.ow..(r + 1) * g.ow];
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        d.fill(0.0);
                        continue;
                    }
                    let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    d[..lo].fill(0.0);
                    d[hi..].fill(0.0);
                    if hi > lo {
                        let ix0 = lo * g.stride + kj - g.pad;
                        match g.stride {
                            1 => copy_short(&mut d[lo..hi], &xr[ix0..ix0 + (hi - lo)]),
                            // Every other pixel: pairs (vectorizes as a shuffle, unlike a
                            // run-time stride).
                            2 => {
                                let src = &xr[ix0..];
                                let n = hi - lo;
                                let full = (src.len() / 2).min(n);
                                for (v, pair) in d[lo..lo + full].iter_mut().zip(src.chunks_exact(2)) {
                                    *v = pair[0];
                                }
                                if full < n {
                                    d[lo + full] = src[2 * full];
                                }
                            }
                            s => {
                                for (k, v) in d[lo..hi].iter_mut().enumerate() {
                                    *v = xr[ix0 + k * s];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

multiversioned!(pub(crate) fn im2col_rows = im2col_rows_gen / im2col_rows_avx2(x: &[f32], g: &Geom, oys: std::ops::Range<usize>, cols: &mut [f32]) -> ());

/// Adds the im2col-shaped gradient `cols` (C·kh·kw, OH·OW) back into image gradient `dx` (C, H, W).
pub(crate) fn col2im_add(cols: &[f32], g: &Geom, dx: &mut [f32]) {
    col2im_add_rows(cols, g, 0..g.oh, dx);
}

/// [`col2im_add`] for the band of output rows `oys` (`cols` as [`im2col_rows`] lays it out).
#[inline(always)]
fn col2im_add_rows_gen(cols: &[f32], g: &Geom, oys: std::ops::Range<usize>, dx: &mut [f32]) {
    let (p, hw) = (oys.len() * g.ow, g.h * g.w);
    for c in 0..g.c {
        let dxc = &mut dx[c * hw..(c + 1) * hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = (c * g.kh + ki) * g.kw + kj;
                let src = &cols[row * p..(row + 1) * p];
                let (lo, hi) = g.valid_ox(kj);
                if hi <= lo {
                    continue;
                }
                let ix0 = lo * g.stride + kj - g.pad;
                for (r, oy) in oys.clone().enumerate() {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let s = &src[r * g.ow + lo..r * g.ow + hi];
                    let xr = &mut dxc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    match g.stride {
                        1 => {
                            for (d, v) in xr[ix0..ix0 + (hi - lo)].iter_mut().zip(s) {
                                *d += *v;
                            }
                        }
                        2 => {
                            let dst = &mut xr[ix0..];
                            let full = (dst.len() / 2).min(s.len());
                            for (pair, v) in dst.chunks_exact_mut(2).zip(&s[..full]) {
                                pair[0] += *v;
                            }
                            if full < s.len() {
                                dst[2 * full] += s[full];
                            }
                        }
                        st => {
                            for (k, v) in s.iter().enumerate() {
                                xr[ix0 + k * st] += *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

multiversioned!(pub(crate) fn col2im_add_rows = col2im_add_rows_gen / col2im_add_rows_avx2(cols: &[f32], g: &Geom, oys: std::ops::Range<usize>, dx: &mut [f32]) -> ());

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, row-major slices with the given row strides
/// unless a `*_t` flag says the operand is stored transposed (its rows are the math columns).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    par: gemm::Parallelism,
) {
    let lhs_ld = if lhs_t { m } else { k };
    let rhs_ld = if rhs_t { k } else { n };
    sgemm_ld(m, n, k, (dst, n), accumulate, (lhs, lhs_ld, lhs_t), (rhs, rhs_ld, rhs_t), par);
}

/// [`sgemm`] on sub-matrices: each operand comes with its leading dimension (the distance
/// between consecutive stored rows), so a GEMM can read or write a band of columns of a wider
/// matrix in place.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm_ld(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_ld): (&mut [f32], usize),
    accumulate: bool,
    (lhs, lhs_ld, lhs_t): (&[f32], usize, bool),
    (rhs, rhs_ld, rhs_t): (&[f32], usize, bool),
    par: gemm::Parallelism,
) {
    // The last element each operand's strides address must lie inside its slice.
    let last = |rows: usize, cols: usize, ld: usize| if rows == 0 || cols == 0 { 0 } else { (rows - 1) * ld + cols };
    assert!(dst.len() >= last(m, n, dst_ld), "sgemm: dst too short");
    let (lr, lc) = if lhs_t { (k, m) } else { (m, k) };
    let (rr, rc) = if rhs_t { (n, k) } else { (k, n) };
    assert!(lhs.len() >= last(lr, lc, lhs_ld) && rhs.len() >= last(rr, rc, rhs_ld), "sgemm: operand too short");
    // SAFETY: the asserts above keep every element these strides address inside its slice.
    unsafe {
        sgemm_raw(m, n, k, (dst.as_mut_ptr(), dst_ld), accumulate, (lhs, lhs_ld, lhs_t), (rhs, rhs_ld, rhs_t), par)
    }
}

/// [`sgemm_ld`] writing through a raw destination pointer, for parallel tasks that each write
/// their own tile of one output matrix (their row ranges interleave, so no task can hold a
/// `&mut` slice covering its rows without overlapping another's).
///
/// # Safety
/// `dst + r·dst_ld + c` must be valid and written by no one else for every r < m, c < n, and
/// the operands must hold every element their strides address.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm_raw(
    m: usize,
    n: usize,
    k: usize,
    (dst, dst_ld): (*mut f32, usize),
    accumulate: bool,
    (lhs, lhs_ld, lhs_t): (&[f32], usize, bool),
    (rhs, rhs_ld, rhs_t): (&[f32], usize, bool),
    par: gemm::Parallelism,
) {
    // Row-major A (m×k): row stride ld, column stride 1. Stored transposed (k×m): row stride 1,
    // column stride ld.
    let (lhs_cs, lhs_rs) = if lhs_t { (lhs_ld as isize, 1) } else { (1, lhs_ld as isize) };
    let (rhs_cs, rhs_rs) = if rhs_t { (rhs_ld as isize, 1) } else { (1, rhs_ld as isize) };
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_ld as isize,
        accumulate,
        lhs.as_ptr(),
        lhs_cs,
        lhs_rs,
        rhs.as_ptr(),
        rhs_cs,
        rhs_rs,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

pub(crate) fn threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// How to spread work: per image over threads (batch ≥ threads), or inside each GEMM.
pub(crate) fn plan(n: usize) -> (bool, gemm::Parallelism) {
    let t = threads();
    if t > 1 && n >= t {
        (true, gemm::Parallelism::None)
    } else if t > 1 {
        (false, gemm::Parallelism::Rayon(t))
    } else {
        (false, gemm::Parallelism::None)
    }
}

/// Runs `f(image index, output chunk, scratch)` for every image, in parallel when planned.
fn per_image<F>(out: &mut [f32], chunk: usize, scratch_len: usize, over_images: bool, f: F)
where
    F: Fn(usize, &mut [f32], &mut Vec<f32>) + Send + Sync,
{
    if over_images {
        out.par_chunks_mut(chunk).enumerate().for_each_init(|| uninit_f32(scratch_len), |s, (i, o)| f(i, o, s));
    } else {
        let mut s = uninit_f32(scratch_len);
        for (i, o) in out.chunks_mut(chunk).enumerate() {
            f(i, o, &mut s);
        }
    }
}

/// Forward: `y (N, O, OH, OW)` from `x (N, C, H, W)` and `w (O, C, kh, kw)`.
pub(crate) fn conv_fwd(x: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    let (p, ckk) = (g.p(), g.ckk());
    // Fully written: one GEMM (read_dst = false) per image.
    let mut y = uninit_f32(g.n * g.out_len());
    let (over_images, par) = plan(g.n);
    let scratch = if g.is_pointwise() { 0 } else { ckk * p };
    per_image(&mut y, g.out_len(), scratch, over_images, |i, yi, cols| {
        let xi = &x[i * g.in_len()..(i + 1) * g.in_len()];
        let cols: &[f32] = if g.is_pointwise() {
            xi
        } else {
            im2col(xi, g, cols);
            cols
        };
        sgemm(g.o, p, ckk, yi, false, w, false, cols, false, par);
    });
    y
}

/// Input gradient: `dx (N, C, H, W)` from `dy (N, O, OH, OW)` and `w`.
pub(crate) fn conv_bwd_input(dy: &[f32], w: &[f32], g: &Geom) -> Vec<f32> {
    let (p, ckk) = (g.p(), g.ckk());
    // Pointwise: fully written by one GEMM per image; otherwise col2im accumulates into zeros.
    let mut dx = if g.is_pointwise() { uninit_f32(g.n * g.in_len()) } else { vec![0f32; g.n * g.in_len()] };
    let (over_images, par) = plan(g.n);
    let scratch = if g.is_pointwise() { 0 } else { ckk * p };
    per_image(&mut dx, g.in_len(), scratch, over_images, |i, dxi, cols| {
        let dyi = &dy[i * g.out_len()..(i + 1) * g.out_len()];
        if g.is_pointwise() {
            sgemm(ckk, p, g.o, dxi, false, w, true, dyi, false, par);
        } else {
            sgemm(ckk, p, g.o, cols, false, w, true, dyi, false, par);
            col2im_add(cols, g, dxi);
        }
    });
    dx
}

/// Weight gradient: `dw (O, C, kh, kw)` from `x` and `dy`, summed over the batch (accumulated
/// transposed, per thread, then transposed once).
pub(crate) fn conv_bwd_weight(x: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    let (p, ckk) = (g.p(), g.ckk());
    let wlen = g.o * ckk;
    let (over_images, par) = plan(g.n);
    let scratch = if g.is_pointwise() { 0 } else { ckk * p };
    // One partial sum per group of images; group count = threads when spreading over images.
    let groups = if over_images { threads().min(g.n) } else { 1 };
    let per_group = g.n.div_ceil(groups);
    let mut partial = vec![0f32; groups * wlen];
    let body = |gi: usize, dw: &mut [f32], cols: &mut Vec<f32>| {
        let first = gi * per_group;
        let last = ((gi + 1) * per_group).min(g.n);
        for i in first..last {
            let xi = &x[i * g.in_len()..(i + 1) * g.in_len()];
            let dyi = &dy[i * g.out_len()..(i + 1) * g.out_len()];
            let cols: &[f32] = if g.is_pointwise() {
                xi
            } else {
                im2col(xi, g, cols);
                cols
            };
            // dWᵀ (CKK, O) = cols · dyᵀ: this orientation lets gemm read cols in place (see
            // `conv_bn`'s weight gradient).
            sgemm(ckk, g.o, p, dw, i > first, cols, false, dyi, true, par);
        }
    };
    if over_images {
        partial.par_chunks_mut(wlen).enumerate().for_each_init(|| uninit_f32(scratch), |s, (gi, dw)| body(gi, dw, s));
    } else {
        let mut s = uninit_f32(scratch);
        body(0, &mut partial[..wlen], &mut s);
    }
    let (first, rest) = partial.split_at_mut(wlen);
    for r in rest.chunks(wlen) {
        for (a, b) in first.iter_mut().zip(r) {
            *a += *b;
        }
    }
    transposed(first, ckk, g.o)
}

/// The (cols × rows) transpose of row-major `src` (rows × cols): weight gradients are
/// accumulated transposed (see [`conv_bwd_weight`]) and turned around once at the end.
///
/// In blocks of 16 source rows, so every write is a run of 16 floats (a cache line) and the 16
/// rows being read stay in cache: the plain row-by-row loop wrote one float per cache line and
/// was ~1% of a 160 px training step (run on every conv's weights, every step; issue 13).
pub(crate) fn transposed(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 16;
    debug_assert_eq!(src.len(), rows * cols);
    let mut t = uninit_f32(rows * cols);
    for r0 in (0..rows).step_by(B) {
        let rb = B.min(rows - r0);
        let block = &src[r0 * cols..(r0 + rb) * cols];
        for c in 0..cols {
            for (i, d) in t[c * rows + r0..][..rb].iter_mut().enumerate() {
                *d = block[i * cols + c];
            }
        }
    }
    t
}

/// The element-wise sum of per-thread partial results (`len` zeros when there are none).
pub(crate) fn sum_partials(parts: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut parts = parts.into_iter();
    let mut sum = parts.next().unwrap_or_else(|| vec![0f32; len]);
    for part in parts {
        for (a, b) in sum.iter_mut().zip(&part) {
            *a += *b;
        }
    }
    sum
}

/// The f32 slice of a contiguous CPU tensor's storage (every CPU kernel's custom ops use it).
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let data = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => bail!("kubeyolo CPU op: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("kubeyolo CPU op: {what} must be contiguous"),
    }
}

/// The forward op: `x.apply_op2(w, ConvFwd)`; its backward runs the two gradient ops below.
pub(crate) struct ConvFwd {
    pub stride: usize,
    pub pad: usize,
}

impl CustomOp2 for ConvFwd {
    fn name(&self) -> &'static str {
        "kubeyolo-conv2d"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.shape().dims4()?, l2.shape().dims4()?, self.stride, self.pad)?;
        let y = conv_fwd(slice(s1, l1, "input")?, slice(s2, l2, "weight")?, &g);
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        // The network input (the image batch) needs no gradient: skip the first conv's dx.
        let dx = if x.track_op() {
            Some(grad.apply_op2_no_bwd(w, &ConvBwdInput { stride: self.stride, pad: self.pad, x_shape: x.dims4()? })?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &ConvBwdWeight { stride: self.stride, pad: self.pad, w_shape: w.dims4()? })?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `dy.apply_op2_no_bwd(w, ConvBwdInput)` → dx.
pub(crate) struct ConvBwdInput {
    pub stride: usize,
    pub pad: usize,
    pub x_shape: (usize, usize, usize, usize),
}

impl CustomOp2 for ConvBwdInput {
    fn name(&self) -> &'static str {
        "kubeyolo-conv2d-grad-input"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(self.x_shape, l2.shape().dims4()?, self.stride, self.pad)?;
        if l1.shape().dims4()? != (g.n, g.o, g.oh, g.ow) {
            bail!("kubeyolo conv grad: output gradient shape {:?} does not match {g:?}", l1.shape());
        }
        let dx = conv_bwd_input(slice(s1, l1, "output gradient")?, slice(s2, l2, "weight")?, &g);
        Ok((CpuStorage::F32(dx), Shape::from(self.x_shape)))
    }
}

/// `x.apply_op2_no_bwd(dy, ConvBwdWeight)` → dw.
pub(crate) struct ConvBwdWeight {
    pub stride: usize,
    pub pad: usize,
    pub w_shape: (usize, usize, usize, usize),
}

impl CustomOp2 for ConvBwdWeight {
    fn name(&self) -> &'static str {
        "kubeyolo-conv2d-grad-weight"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = Geom::new(l1.shape().dims4()?, self.w_shape, self.stride, self.pad)?;
        if l2.shape().dims4()? != (g.n, g.o, g.oh, g.ow) {
            bail!("kubeyolo conv grad: output gradient shape {:?} does not match {g:?}", l2.shape());
        }
        let dw = conv_bwd_weight(slice(s1, l1, "input")?, slice(s2, l2, "output gradient")?, &g);
        Ok((CpuStorage::F32(dw), Shape::from(self.w_shape)))
    }
}
