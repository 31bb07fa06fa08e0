//! Tensor operations the YOLOv8 network and its loss need, with gradients that are correct.
//!
//! Why this module exists: candle 0.11 has several ops whose *backward* is wrong or missing for
//! what YOLOv8 does (see `shared/notes/candle-0.11-for-training.md`):
//! - `upsample_nearest2d` backward overwrites instead of accumulating → [`upsample_nearest2x`];
//! - `max_pool2d` backward fails when kernel ≠ stride (SPPF's 5/1) → [`max_pool_same`];
//! - there is no `atan` (CIoU) → [`atan`];
//! - `softmax_last_dim` drops gradients → [`softmax_last`];
//! - `binary_cross_entropy_with_logit` is sigmoid-then-log (unstable) → [`bce_with_logits`];
//! - the CPU conv input gradient is a naive loop, ~20× slower than PyTorch → [`conv2d`].
//!
//! Every op here works on every device: fast CPU kernels are candle `CustomOp`s, and other
//! devices (CUDA) take candle's stock ops. All functions take and return NCHW `f32` tensors
//! unless said otherwise. The signatures are stable: the network (`nn::model`) calls them.

use candle_core::{DType, Device, Result, Tensor, D};

/// 2-D convolution, NCHW input `x` (N, C, H, W) and OIHW weight `w` (O, C, kh, kw), no groups,
/// dilation 1, the same `stride` and zero `padding` on both axes, optional `bias` of shape (O,).
///
/// Output (N, O, (H + 2p − kh)/s + 1, (W + 2p − kw)/s + 1). Gradients flow to `x`, `w` and `bias`.
/// On CPU with f32 this runs kubeyolo's im2col + GEMM kernels ([`super::cpu::conv`]); elsewhere it
/// is candle's `conv2d`. YOLOv8's `Conv` blocks pass `bias: None` (a BatchNorm follows); the
/// Detect head's last 1×1 convs pass their bias.
pub fn conv2d(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let y = if cpu_f32(x) && w.dtype() == DType::F32 && matches!(w.device(), Device::Cpu) {
        let w = w.contiguous()?;
        x.contiguous()?.apply_op2(&w, super::cpu::conv::ConvFwd { stride, pad: padding })?
    } else {
        x.conv2d(w, padding, stride, 1, 1)?
    };
    match bias {
        Some(b) if cpu_f32(&y) && cpu_f32(b) => y.apply_op2(&b.contiguous()?, super::cpu::channel_ops::ChannelBias),
        Some(b) => y.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?),
        None => Ok(y),
    }
}

/// Training-mode BatchNorm over NCHW `x` with `bn`'s weight and bias, followed by SiLU when
/// `silu` is true: ultralytics `Conv`'s `act(bn(conv(x)))` in train mode. Normalizes with the
/// batch statistics and updates `bn`'s running mean / variance with its momentum, exactly like
/// `bn.forward_train(x)` (then `.silu()`), which is what runs on non-CPU devices. On CPU (f32)
/// it is one fused kernel ([`super::cpu::batchnorm`]) with a hand-written backward: candle's version
/// is ~10 ops forward and more backward, each a full pass over the activation.
pub fn batch_norm_train(x: &Tensor, bn: &candle_nn::BatchNorm, silu: bool) -> Result<Tensor> {
    if cpu_f32(x) && bn.weight_and_bias().is_some_and(|(g, _)| g.dtype() == DType::F32) {
        return super::cpu::batchnorm::bn_train_cpu(x, bn, silu);
    }
    let y = bn.forward_train(x)?;
    if silu {
        y.silu()
    } else {
        Ok(y)
    }
}

/// Nearest-neighbour upsampling by 2 on H and W (ultralytics `nn.Upsample(None, 2, "nearest")`).
///
/// On CPU f32 a kernel of kubeyolo's own; elsewhere built from reshape + `broadcast_as` + reshape, whose backward (a sum over the broadcast axes)
/// accumulates correctly — candle's `upsample_nearest2d` backward overwrites the gradient.
pub fn upsample_nearest2x(x: &Tensor) -> Result<Tensor> {
    if cpu_f32(x) {
        // Same result; the backward is a direct 2×2 block sum (see `nn::cpu::channel_ops`).
        return x.contiguous()?.apply_op1(super::cpu::channel_ops::Upsample2x);
    }
    let (n, c, h, w) = x.dims4()?;
    x.reshape((n, c, h, 1, w, 1))?.broadcast_as((n, c, h, 2, w, 2))?.reshape((n, c, 2 * h, 2 * w))
}

/// Max pooling with kernel `k` (odd), stride 1 and padding `k / 2`, so the output has the input's
/// size: SPPF's `nn.MaxPool2d(k, 1, k // 2)`. Padding counts as −∞ (PyTorch semantics), never 0.
///
/// On CPU f32 a direct kernel whose backward sends each gradient to the window's first maximum
/// (PyTorch's rule). Elsewhere separable: max over `k` shifted windows along H, then along W;
/// the backward of `maximum` routes the gradient to the maximum (split in half on exact ties).
pub fn max_pool_same(x: &Tensor, k: usize) -> Result<Tensor> {
    if k % 2 == 0 {
        candle_core::bail!("max_pool_same: kernel {k} must be odd");
    }
    let p = k / 2;
    if p == 0 {
        return Ok(x.clone());
    }
    if cpu_f32(x) {
        let argmax = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        return x.contiguous()?.apply_op1(super::cpu::channel_ops::MaxPoolSame { k, argmax });
    }
    let (n, c, h, w) = x.dims4()?;
    // Along H.
    let pad_h = Tensor::full(f32::NEG_INFINITY, (n, c, p, w), x.device())?.to_dtype(x.dtype())?;
    let xp = Tensor::cat(&[&pad_h, x, &pad_h], 2)?;
    let mut m = xp.narrow(2, 0, h)?;
    for i in 1..k {
        m = m.maximum(&xp.narrow(2, i, h)?)?;
    }
    // Along W.
    let pad_w = Tensor::full(f32::NEG_INFINITY, (n, c, h, p), x.device())?.to_dtype(x.dtype())?;
    let mp = Tensor::cat(&[&pad_w, &m, &pad_w], 3)?;
    let mut out = mp.narrow(3, 0, w)?;
    for i in 1..k {
        out = out.maximum(&mp.narrow(3, i, w)?)?;
    }
    Ok(out)
}

/// Element-wise arctangent with gradient `1 / (1 + x²)` (candle has no atan; CIoU needs it).
///
/// Two argument halvings, `atan(x) = 2·atan(x / (1 + √(1 + x²)))`, bring |x| below tan(π/8), where
/// an odd Taylor polynomial of degree 15 is accurate to ~1e-7. Only differentiable ops are used.
pub fn atan(x: &Tensor) -> Result<Tensor> {
    let halve = |t: &Tensor| -> Result<Tensor> {
        let den = ((t.sqr()? + 1.0)?.sqrt()? + 1.0)?;
        t.div(&den)
    };
    let z = halve(&halve(x)?)?;
    let z2 = z.sqr()?;
    // Horner on z·(1 − z²/3 + z⁴/5 − …) up to z^15.
    let coeffs = [1.0, -1.0 / 3.0, 1.0 / 5.0, -1.0 / 7.0, 1.0 / 9.0, -1.0 / 11.0, 1.0 / 13.0, -1.0 / 15.0];
    let mut acc = Tensor::full(coeffs[7] as f32, z.shape(), z.device())?.to_dtype(z.dtype())?;
    for &c in coeffs[..7].iter().rev() {
        acc = (acc.mul(&z2)? + c)?;
    }
    acc.mul(&z)? * 4.0
}

/// Binary cross-entropy on logits, element-wise (no reduction), numerically stable:
/// `max(x, 0) − x·t + log(1 + exp(−|x|))` (PyTorch's `BCEWithLogitsLoss(reduction="none")`).
///
/// The gradient is `sigmoid(x) − t` everywhere, including x = 0 (candle's relu'(0) = 1 and
/// |x|'(0) = 1 cancel correctly).
pub fn bce_with_logits(x: &Tensor, t: &Tensor) -> Result<Tensor> {
    let softplus_tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (x.relu()? - x.mul(t)?)? + softplus_tail
}

/// Softmax over the last dimension that keeps gradients (`candle_nn::ops::softmax_last_dim` has
/// no backward).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    candle_nn::ops::softmax(x, D::Minus1)
}

/// True when `x` is on the CPU in f32, the case kubeyolo's own kernels handle.
pub(crate) fn cpu_f32(x: &Tensor) -> bool {
    matches!(x.device(), Device::Cpu) && x.dtype() == DType::F32
}
