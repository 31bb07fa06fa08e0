//! Small numeric helpers for the CPU kernels: a vectorizable `exp`/`sigmoid`, uninitialized
//! output buffers, and AVX2 detection for the kernels' multiversioned loops.
//!
//! Why: the BatchNorm+SiLU kernels spent ~10% of a training step in libm's scalar `expf`
//! (which also blocks vectorization), and zero-filling output buffers that a GEMM overwrites
//! anyway cost another ~5% (`memset`). Rust builds for baseline x86-64 (SSE2), so hot loops are
//! compiled three times — with AVX-512, with AVX2+FMA, and baseline — and picked at run time
//! ([`avx512`], [`avx2`]).

use std::sync::OnceLock;

/// `e^x` for f32 to ~2e-7 relative error, branch-free so loops over it vectorize.
/// Inputs are clamped to [−87, 88] (results stay finite and normal).
///
/// Written with fused multiply-adds (`mul_add`): in the AVX2 and AVX-512 versions of a
/// [`multiversioned`] loop each is one instruction, which made SiLU ~20% cheaper than separate
/// multiplies and adds (the division is not its bottleneck: a reciprocal by Newton steps was
/// slower). Call it from multiversioned loops only — in baseline code each `mul_add` is a
/// libm `fmaf` call.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    // Plain comparisons (not f32::clamp / as i32, which carry NaN / saturation rules) keep
    // every step a SIMD instruction.
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x.mul_add(std::f32::consts::LOG2_E, ROUND);
    let n = t - ROUND;
    let f = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    // Taylor polynomial of e^f on |f| ≤ ln2/2 (error ≤ f⁷/7! ≈ 1.2e-7).
    let p = f.mul_add(
        f.mul_add(
            f.mul_add(f.mul_add(f.mul_add(f.mul_add(1.0 / 720.0, 1.0 / 120.0), 1.0 / 24.0), 1.0 / 6.0), 0.5),
            1.0,
        ),
        1.0,
    );
    // t's low mantissa bits hold the integer n (|n| ≤ 127 ≪ 2^22): 2^n built from them.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    p * scale
}

/// `1 / (1 + e^−z)`.
#[inline(always)]
pub(crate) fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + exp(-z))
}

/// The DFL expectation of one box side (ultralytics' `DFL`): `bins` holds r planes of
/// n = `out.len()` logits (`bins[j·n + p]`), and `out[p] = Σ_j j · softmax_j(bins[·][p])` with the softmax
/// shifted by its maximum. Shared by the loss (`train::loss`) and the eval decode (`nn::fused`).
#[inline(always)]
fn dfl_side_gen(bins: &[f32], out: &mut [f32]) {
    let n = out.len();
    assert!(n > 0 && bins.len() % n == 0, "DFL: {} logits are not whole planes of {n}", bins.len());
    let mut mx = bins[..n].to_vec();
    for row in bins.chunks_exact(n).skip(1) {
        for (m, &v) in mx.iter_mut().zip(row) {
            *m = if v > *m { v } else { *m };
        }
    }
    let mut sum = vec![0f32; n];
    out.fill(0.0);
    for (j, row) in bins.chunks_exact(n).enumerate() {
        let jf = j as f32;
        for (((o, s), &v), &m) in out.iter_mut().zip(sum.iter_mut()).zip(row).zip(&mx) {
            let e = exp(v - m);
            *s += e;
            *o += e * jf;
        }
    }
    out.iter_mut().zip(&sum).for_each(|(o, s)| *o /= s);
}
multiversioned!(pub(crate) fn dfl_side = dfl_side_gen / dfl_side_avx2(bins: &[f32], out: &mut [f32]) -> ());

/// Whether this CPU runs AVX2 + FMA code (checked once).
pub(crate) fn avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether this CPU runs AVX-512 (F, BW, DQ, VL) code, checked once; `KUBEYOLO_NO_AVX512=1`
/// says no (the AVX2 versions and the GEMMs run instead).
pub(crate) fn avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512bw")
                && std::is_x86_feature_detected!("avx512dq")
                && std::is_x86_feature_detected!("avx512vl")
                && avx2()
                && std::env::var_os("KUBEYOLO_NO_AVX512").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `dst.copy_from_slice(src)` for the short rows of im2col and padded planes (10–160 floats)
/// without a libc
/// `memmove` call per row (those calls were ~5% of a training step's CPU time; inline, im2col and
/// its copies went from ~11% to ~9%, issue 7): 16-float
/// blocks (fixed-size copies compile to vector moves), then the tail.
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(16);
    let mut s = src.chunks_exact(16);
    for (a, b) in (&mut d).zip(&mut s) {
        let b: &[f32; 16] = b.try_into().expect("16-float block");
        let a: &mut [f32; 16] = a.try_into().expect("16-float block");
        *a = *b;
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = *b;
    }
}

/// A buffer of `n` f32 whose contents are unspecified, for outputs that the caller overwrites
/// completely before reading (GEMM destinations with `read_dst = false`, kernel outputs).
/// Skips the zero-fill `vec![0.0; n]` pays.
pub(crate) fn uninit_f32(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns the callers could observe: every caller writes
    // all `n` elements before any read (documented at each call site).
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_and_sigmoid_are_accurate() {
        let mut x = -80.0f32;
        while x < 80.0 {
            let (a, b) = (super::exp(x), x.exp());
            assert!(((a - b) / b).abs() < 5e-7, "exp({x}) = {a} vs {b}");
            let (s, t) = (super::sigmoid(x), 1.0 / (1.0 + (-x).exp()));
            assert!((s - t).abs() < 1e-7 + 5e-7 * t, "sigmoid({x}) = {s} vs {t}");
            x += 0.0137;
        }
        let tiny = super::sigmoid(-1e4);
        assert!((0.0..1e-37).contains(&tiny), "sigmoid(-1e4) = {tiny}");
        assert_eq!(super::sigmoid(1e4), 1.0);
    }
}

/// Defines `$name(args) -> ret` that runs `$generic(args)` compiled with AVX-512F when the CPU
/// has it ([`avx512`]), with AVX2+FMA when it has those (through the `$avx` wrapper), and as
/// baseline code otherwise. `$generic` should be `#[inline(always)]` so its body is compiled
/// into every version.
macro_rules! multiversioned {
    ($vis:vis fn $name:ident = $generic:ident / $avx:ident ( $($a:ident : $t:ty),* ) -> $r:ty) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx($($a: $t),*) -> $r {
            $generic($($a),*)
        }
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($a: $t),*) -> $r {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($a: $t),*) -> $r {
                    $generic($($a),*)
                }
                if $crate::nn::cpu::fastmath::avx512() {
                    // SAFETY: the CPU supports AVX-512F/BW/DQ/VL (checked at run time).
                    return unsafe { wide($($a),*) };
                }
                if $crate::nn::cpu::fastmath::avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
                    return unsafe { $avx($($a),*) };
                }
            }
            $generic($($a),*)
        }
    };
}
pub(crate) use multiversioned;
