//! kubeyolo's CPU kernels, beside the network that runs on them (`nn::blocks`, `nn::fused`).
//!
//! - GEMM convolution: [`conv`] (im2col/col2im + `gemm`, candle ops for autograd), [`shifted`]
//!   (stride-1 "same" convs as accumulating GEMMs on shifted views of one padded copy);
//! - [`direct`]: an AVX-512 kernel for those shifted convs (all taps accumulated in registers,
//!   no packing), used by their forward where the CPU has AVX-512F, and by the eval path also
//!   for 1×1 convs and, through [`phased`], stride-2 3×3 convs;
//! - training blocks as single autograd nodes: [`conv_bn`] (Conv + BatchNorm + SiLU), [`c2f`],
//!   [`detect_branch`], all run by [`fused_op`]; [`batchnorm`] (train BatchNorm + SiLU);
//! - inference: [`infer`] (folded Conv with bias, SiLU and residual in the GEMM's output pass),
//!   [`winograd`] (F(2×2, 3×3) for its wide stride-1 3×3 convs on CPUs without AVX-512);
//! - small pieces: [`channel_ops`] (bias, 2× upsample, SPPF max pool), [`buffers`] (views into
//!   shared batch buffers), [`fastmath`] (vectorizable exp/sigmoid, AVX2 multiversioning).
//!
//! Every kernel takes f32 slices on the CPU; other devices take candle's stock ops (`nn::ops`).
//!
//! ## Runtime settings
//! Process-wide CPU runtime settings that make candle training fast on few cores. Call
//! [`tune_cpu_runtime`] once at the start of `main` of any binary that trains or predicts on CPU,
//! before the first tensor op.
//!
//! Why (measured with `perf` on a yolov8n training step, 2 cores, see benchmarks/RESULTS.md):
//! - **Page faults, ~25% of the step.** glibc serves allocations above its mmap threshold (128 KiB
//!   growing to 32 MiB) with fresh `mmap`s and returns them with `munmap` on free, so every
//!   activation and gradient buffer of every step is faulted in and zeroed by the kernel again.
//!   Turning `mmap` allocation off (`M_MMAP_MAX = 0`) and never trimming the heap keeps freed
//!   buffers for reuse: after the first step the process stops faulting. Peak memory is the same
//!   (a training step reaches it every iteration anyway).
//! - **Spinning thread pools, ~20%.** candle 0.11 runs element-wise ops on its own spinning
//!   "barrier pool" beside rayon's pool (which kubeyolo's conv and BatchNorm kernels use); with
//!   both pools on the same cores, waits and spins between every small op cost more than the
//!   parallelism brings. `CANDLE_NUM_THREADS=1` makes candle's element-wise ops run inline; the
//!   heavy ops (conv, BatchNorm) stay parallel on rayon.

pub mod batchnorm;
pub(crate) mod buffers;
pub(crate) mod c2f;
pub(crate) mod channel_ops;
pub mod conv;
pub(crate) mod conv_bn;
pub(crate) mod detect_branch;
pub mod direct;
pub mod fastmath;
pub(crate) mod fused_op;
pub(crate) mod infer;
pub(crate) mod phased;
pub(crate) mod shifted;
pub mod winograd;

/// Applies the settings above; `threads` sizes rayon's global pool (default: all CPUs, or
/// `RAYON_NUM_THREADS`). A user's explicit `CANDLE_NUM_THREADS` is respected. Idempotent; a
/// rayon pool that already exists is kept.
pub fn tune_cpu_runtime(threads: Option<usize>) {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Read once by candle when its pool starts (the first element-wise op); this runs before.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let mut b = rayon::ThreadPoolBuilder::new();
    if let Some(t) = threads {
        b = b.num_threads(t.max(1));
    }
    let _ = b.build_global();
    keep_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_MAX: i32 = -4;
    // SAFETY: mallopt only changes glibc allocator tunables; valid at any time.
    unsafe {
        mallopt(M_MMAP_MAX, 0);
        mallopt(M_TRIM_THRESHOLD, i32::MAX);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}
