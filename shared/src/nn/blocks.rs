//! The building blocks of a YOLOv8 network, one struct per ultralytics module: [`Conv`],
//! [`Bottleneck`], [`C2f`], [`C3`], [`Sppf`], [`Spp`] and the [`Detect`] head (with its fixed
//! [`Dfl`] integral).
//!
//! Each block is built from a `VarBuilder` path whose variable names are exactly ultralytics'
//! state-dict keys (`model.2.m.0.cv1.conv.weight`, `model.2.m.0.cv1.bn.running_mean`, …), so a
//! checkpoint moves between the two without renaming. Every convolution, upsample and SPPF pool
//! goes through [`super::ops`] (fast CPU kernels, gradient-correct workarounds for candle traps).
//!
//! Initial values are PyTorch's defaults (`kaiming_uniform_(a=√5)` → U(±1/√fan_in) for conv
//! weights, BatchNorm weight 1 / bias 0, running stats 0 / 1) and ultralytics' `Detect.bias_init`,
//! so training from scratch starts where ultralytics starts. BatchNorm uses ultralytics'
//! `initialize_weights` settings (eps 1e-3, momentum 0.03).
//!
//! `train = true` runs BatchNorm on batch statistics and updates the running statistics (the
//! forward used by the trainer); `train = false` folds BatchNorm into the convolution (as
//! ultralytics' `fuse()` does for prediction) and uses running statistics.

use candle_core::{Result, Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, Init, VarBuilder};

use super::ops;

/// BatchNorm epsilon ultralytics sets in `initialize_weights` (PyTorch's default is 1e-5).
pub const BN_EPS: f64 = 1e-3;
/// BatchNorm momentum ultralytics sets in `initialize_weights` (PyTorch's default is 0.1).
pub const BN_MOMENTUM: f64 = 0.03;

/// PyTorch's default conv init, `kaiming_uniform_(a=√5)`: U(−1/√fan_in, 1/√fan_in).
/// The same bound is PyTorch's default conv *bias* init.
pub fn torch_default_init(fan_in: usize) -> Init {
    let b = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform { lo: -b, up: b }
}

/// Multiply-accumulate counts as thop counts them (ultralytics' GFLOPs = 2 × MACs / 1e9):
/// conv = out elements × c_in × k², BatchNorm = 4 × elements, everything else free.
#[derive(Debug, Clone, Copy, Default)]
pub struct Macs(pub f64);

/// Spatial size of a feature map (H, W); used for the FLOPs count without running the network.
pub type Hw = (usize, usize);

fn conv_out(hw: Hw, k: usize, s: usize, p: usize) -> Hw {
    ((hw.0 + 2 * p - k) / s + 1, (hw.1 + 2 * p - k) / s + 1)
}

/// ultralytics `Conv`: Conv2d (no bias) → BatchNorm2d → SiLU (or identity when `act` is false).
#[derive(Debug, Clone)]
pub struct Conv {
    pub weight: Tensor,
    pub bn: BatchNorm,
    pub c1: usize,
    pub c2: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
    pub act: bool,
}

impl Conv {
    /// `Conv(c1, c2, k, s, p=None → k/2, act)` at `vb` (holding `conv.weight` and `bn.*`).
    pub fn new(vb: VarBuilder, c1: usize, c2: usize, k: usize, s: usize, p: Option<usize>, act: bool) -> Result<Self> {
        let weight = vb.pp("conv").get_with_hints((c2, c1, k, k), "weight", torch_default_init(c1 * k * k))?;
        let cfg = BatchNormConfig { eps: BN_EPS, remove_mean: true, affine: true, momentum: BN_MOMENTUM };
        let bn = candle_nn::batch_norm(c2, cfg, vb.pp("bn"))?;
        Ok(Conv { weight, bn, c1, c2, k, s, p: p.unwrap_or(k / 2), act })
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = if train {
            if ops::cpu_f32(x) && ops::cpu_f32(&self.weight) {
                // One fused autograd node on CPU (see `nn::cpu::conv_bn` for why).
                let block = super::cpu::conv_bn::ConvBnBlock {
                    spec: self.spec(),
                    stride: self.s,
                    pad: self.p,
                    eps: self.bn.eps(),
                };
                return super::cpu::fused_op::run(block, x, &self.fused_params()?, &[&self.bn]);
            }
            let y = ops::conv2d(x, &self.weight, None, self.s, self.p)?;
            return ops::batch_norm_train(&y, &self.bn, self.act);
        } else {
            // Fold BN into the conv (ultralytics `fuse_conv_and_bn`): one conv with bias.
            let (w, b) = self.fused()?;
            ops::conv2d(x, &w, Some(&b), self.s, self.p)?
        };
        if self.act {
            y.silu()
        } else {
            Ok(y)
        }
    }

    /// The shape a fused CPU op needs.
    fn spec(&self) -> super::cpu::conv_bn::ConvSpec {
        super::cpu::conv_bn::ConvSpec { cin: self.c1, cout: self.c2, k: self.k, act: self.act }
    }

    /// Its parameters in a fused op's order: the flattened weight, BatchNorm γ, β.
    fn fused_params(&self) -> Result<[Tensor; 3]> {
        let Some((g, b)) = self.bn.weight_and_bias() else {
            candle_core::bail!("Conv: BatchNorm without affine parameters");
        };
        Ok([self.weight.flatten_all()?, g.clone(), b.clone()])
    }

    /// Conv weight and bias with BatchNorm (running statistics) folded in.
    pub fn fused(&self) -> Result<(Tensor, Tensor)> {
        let (gamma, beta) = match self.bn.weight_and_bias() {
            Some((g, b)) => (g.clone(), b.clone()),
            None => candle_core::bail!("BatchNorm without affine parameters"),
        };
        let scale = gamma.div(&(self.bn.running_var() + self.bn.eps())?.sqrt()?)?;
        let w = self.weight.broadcast_mul(&scale.reshape((self.c2, 1, 1, 1))?)?;
        let b = (beta - self.bn.running_mean().mul(&scale)?)?;
        Ok((w, b))
    }

    pub fn macs(&self, hw: Hw) -> (f64, Hw) {
        let o = conv_out(hw, self.k, self.s, self.p);
        let n = (o.0 * o.1 * self.c2) as f64;
        (n * (self.c1 * self.k * self.k) as f64 + 4.0 * n, o)
    }
}

/// A plain `nn.Conv2d` with bias (the last layer of each Detect branch).
#[derive(Debug, Clone)]
pub struct Conv2d {
    pub weight: Tensor,
    pub bias: Tensor,
    pub c1: usize,
    pub c2: usize,
}

impl Conv2d {
    /// 1×1 conv with bias; the bias starts at `bias_init` (Detect's `bias_init` overrides
    /// PyTorch's random default for every Detect conv, so it is set directly here).
    pub fn new_1x1(vb: VarBuilder, c1: usize, c2: usize, bias_init: f64) -> Result<Self> {
        let weight = vb.get_with_hints((c2, c1, 1, 1), "weight", torch_default_init(c1))?;
        let bias = vb.get_with_hints(c2, "bias", Init::Const(bias_init))?;
        Ok(Conv2d { weight, bias, c1, c2 })
    }
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        ops::conv2d(x, &self.weight, Some(&self.bias), 1, 0)
    }
    pub fn macs(&self, hw: Hw) -> f64 {
        (hw.0 * hw.1 * self.c2 * self.c1) as f64
    }
}

/// ultralytics `Bottleneck(c1, c2, shortcut, g=1, k=(k1, k2), e)`: two Convs, residual when
/// `shortcut` and c1 == c2.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    pub cv1: Conv,
    pub cv2: Conv,
    pub add: bool,
}

impl Bottleneck {
    pub fn new(vb: VarBuilder, c1: usize, c2: usize, shortcut: bool, k: (usize, usize), e: f64) -> Result<Self> {
        let c_ = (c2 as f64 * e) as usize;
        let cv1 = Conv::new(vb.pp("cv1"), c1, c_, k.0, 1, None, true)?;
        let cv2 = Conv::new(vb.pp("cv2"), c_, c2, k.1, 1, None, true)?;
        Ok(Bottleneck { cv1, cv2, add: shortcut && c1 == c2 })
    }
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.cv2.forward(&self.cv1.forward(x, train)?, train)?;
        if self.add {
            x + y
        } else {
            Ok(y)
        }
    }
    pub fn macs(&self, hw: Hw) -> (f64, Hw) {
        let (a, hw1) = self.cv1.macs(hw);
        let (b, hw2) = self.cv2.macs(hw1);
        (a + b, hw2)
    }
}

/// ultralytics `C2f(c1, c2, n, shortcut=False, g=1, e=0.5)`: split cv1's output in two, chain
/// `n` Bottlenecks on the second half, concatenate every intermediate, cv2.
#[derive(Debug, Clone)]
pub struct C2f {
    pub c: usize,
    pub cv1: Conv,
    pub cv2: Conv,
    pub m: Vec<Bottleneck>,
}

impl C2f {
    pub fn new(vb: VarBuilder, c1: usize, c2: usize, n: usize, shortcut: bool, e: f64) -> Result<Self> {
        let c = (c2 as f64 * e) as usize;
        let cv1 = Conv::new(vb.pp("cv1"), c1, 2 * c, 1, 1, None, true)?;
        let cv2 = Conv::new(vb.pp("cv2"), (2 + n) * c, c2, 1, 1, None, true)?;
        let m = (0..n)
            .map(|i| Bottleneck::new(vb.pp("m").pp(i), c, c, shortcut, (3, 3), 1.0))
            .collect::<Result<Vec<_>>>()?;
        Ok(C2f { c, cv1, cv2, m })
    }
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && ops::cpu_f32(x) && ops::cpu_f32(&self.cv1.weight) {
            // One fused autograd node on CPU (see `nn::cpu::c2f` for why).
            return self.forward_train_cpu(x);
        }
        self.forward_composed(x, train)
    }

    /// The block from candle ops (cv1, narrow, Bottlenecks, cat, cv2): the path off the CPU and
    /// in eval mode, and the reference the fused CPU training op is tested against.
    pub fn forward_composed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.cv1.forward(x, train)?;
        let mut ys = vec![y.narrow(1, 0, self.c)?, y.narrow(1, self.c, self.c)?];
        for b in &self.m {
            let next = b.forward(&ys[ys.len() - 1], train)?;
            ys.push(next);
        }
        self.cv2.forward(&Tensor::cat(&ys, 1)?, train)
    }
    /// The block's Convs in the fused op's parameter order: cv1, m0.cv1, m0.cv2, …, cv2.
    fn convs(&self) -> Vec<&Conv> {
        let inner = self.m.iter().flat_map(|b| [&b.cv1, &b.cv2]);
        std::iter::once(&self.cv1).chain(inner).chain(std::iter::once(&self.cv2)).collect()
    }

    fn forward_train_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let convs = self.convs();
        let spec = super::cpu::c2f::C2fSpec {
            c: self.c,
            n: self.m.len(),
            add: self.m.first().is_some_and(|b| b.add),
            convs: convs.iter().map(|cv| cv.spec()).collect(),
            eps: self.cv1.bn.eps(),
        };
        let mut parts = Vec::with_capacity(3 * convs.len());
        for cv in &convs {
            parts.extend(cv.fused_params()?);
        }
        let bns: Vec<&BatchNorm> = convs.iter().map(|cv| &cv.bn).collect();
        super::cpu::fused_op::run(spec, x, &parts, &bns)
    }

    pub fn macs(&self, hw: Hw) -> (f64, Hw) {
        let (mut t, hw1) = self.cv1.macs(hw);
        for b in &self.m {
            t += b.macs(hw1).0;
        }
        let (c, hw2) = self.cv2.macs(hw1);
        (t + c, hw2)
    }
}

/// ultralytics `C3(c1, c2, n, shortcut=True, g=1, e=0.5)` (YOLOv5-style CSP block).
#[derive(Debug, Clone)]
pub struct C3 {
    pub cv1: Conv,
    pub cv2: Conv,
    pub cv3: Conv,
    pub m: Vec<Bottleneck>,
}

impl C3 {
    pub fn new(vb: VarBuilder, c1: usize, c2: usize, n: usize, shortcut: bool, e: f64) -> Result<Self> {
        let c_ = (c2 as f64 * e) as usize;
        let cv1 = Conv::new(vb.pp("cv1"), c1, c_, 1, 1, None, true)?;
        let cv2 = Conv::new(vb.pp("cv2"), c1, c_, 1, 1, None, true)?;
        let cv3 = Conv::new(vb.pp("cv3"), 2 * c_, c2, 1, 1, None, true)?;
        let m = (0..n)
            .map(|i| Bottleneck::new(vb.pp("m").pp(i), c_, c_, shortcut, (1, 3), 1.0))
            .collect::<Result<Vec<_>>>()?;
        Ok(C3 { cv1, cv2, cv3, m })
    }
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut a = self.cv1.forward(x, train)?;
        for b in &self.m {
            a = b.forward(&a, train)?;
        }
        let b = self.cv2.forward(x, train)?;
        self.cv3.forward(&Tensor::cat(&[a, b], 1)?, train)
    }
    pub fn macs(&self, hw: Hw) -> (f64, Hw) {
        let (mut t, hw1) = self.cv1.macs(hw);
        for b in &self.m {
            t += b.macs(hw1).0;
        }
        t += self.cv2.macs(hw).0;
        let (c, hw2) = self.cv3.macs(hw1);
        (t + c, hw2)
    }
}

/// ultralytics `SPPF(c1, c2, k=5, n=3)`: cv1, three chained stride-1 max pools (−∞ padding),
/// concatenate, cv2. `cv1_act`: YOLOv8 yamls (`[c2, k]` rows) keep SiLU on cv1 — ultralytics 8.4
/// restores it for such "legacy" rows; newer rows (`[c2, k, n, shortcut]`) drop it.
#[derive(Debug, Clone)]
pub struct Sppf {
    pub cv1: Conv,
    pub cv2: Conv,
    pub k: usize,
    pub n: usize,
    pub add: bool,
}

impl Sppf {
    pub fn new(
        vb: VarBuilder,
        c1: usize,
        c2: usize,
        k: usize,
        n: usize,
        shortcut: bool,
        cv1_act: bool,
    ) -> Result<Self> {
        let c_ = c1 / 2;
        let cv1 = Conv::new(vb.pp("cv1"), c1, c_, 1, 1, None, cv1_act)?;
        let cv2 = Conv::new(vb.pp("cv2"), c_ * (n + 1), c2, 1, 1, None, true)?;
        Ok(Sppf { cv1, cv2, k, n, add: shortcut && c1 == c2 })
    }
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut ys = vec![self.cv1.forward(x, train)?];
        for _ in 0..self.n {
            let next = ops::max_pool_same(&ys[ys.len() - 1], self.k)?;
            ys.push(next);
        }
        let y = self.cv2.forward(&Tensor::cat(&ys, 1)?, train)?;
        if self.add {
            y + x
        } else {
            Ok(y)
        }
    }
    pub fn macs(&self, hw: Hw) -> (f64, Hw) {
        let (a, hw1) = self.cv1.macs(hw);
        let (b, hw2) = self.cv2.macs(hw1);
        (a + b, hw2)
    }
}

/// ultralytics `SPP(c1, c2, k=(5, 9, 13))`: parallel stride-1 max pools.
#[derive(Debug, Clone)]
pub struct Spp {
    pub cv1: Conv,
    pub cv2: Conv,
    pub ks: Vec<usize>,
}

impl Spp {
    pub fn new(vb: VarBuilder, c1: usize, c2: usize, ks: Vec<usize>) -> Result<Self> {
        let c_ = c1 / 2;
        let cv1 = Conv::new(vb.pp("cv1"), c1, c_, 1, 1, None, true)?;
        let cv2 = Conv::new(vb.pp("cv2"), c_ * (ks.len() + 1), c2, 1, 1, None, true)?;
        Ok(Spp { cv1, cv2, ks })
    }
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.cv1.forward(x, train)?;
        let mut ys = vec![x.clone()];
        for &k in &self.ks {
            ys.push(ops::max_pool_same(&x, k)?);
        }
        self.cv2.forward(&Tensor::cat(&ys, 1)?, train)
    }
    pub fn macs(&self, hw: Hw) -> (f64, Hw) {
        let (a, hw1) = self.cv1.macs(hw);
        let (b, hw2) = self.cv2.macs(hw1);
        (a + b, hw2)
    }
}

/// ultralytics `DFL(c1=16)`: the expected value of a softmax over `c1` bins, as a fixed 1×1 conv
/// whose weight is `0, 1, …, c1−1` (`model.22.dfl.conv.weight`, a parameter without gradient).
#[derive(Debug, Clone)]
pub struct Dfl {
    pub weight: Tensor,
    pub c1: usize,
}

impl Dfl {
    pub fn new(vb: VarBuilder, c1: usize) -> Result<Self> {
        let weight = vb.pp("conv").get_with_hints((1, c1, 1, 1), "weight", Init::Const(0.0))?;
        // Fill 0..c1 into the (VarMap-owned) variable so it is saved and loaded like ultralytics'.
        let arange =
            Tensor::arange(0u32, c1 as u32, weight.device())?.to_dtype(weight.dtype())?.reshape((1, c1, 1, 1))?;
        if weight.is_variable() {
            candle_core::Var::from_tensor(&weight)?.set(&arange)?;
            Ok(Dfl { weight, c1 })
        } else {
            Ok(Dfl { weight: arange, c1 })
        }
    }

    /// (B, 4·c1, A) distributions → (B, 4, A) expected distances (in grid cells).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, a) = x.dims3()?;
        // view(b, 4, c1, a) → softmax over the c1 bins → weighted sum with the conv weight.
        let x = x.reshape((b, 4, self.c1, a))?.transpose(2, 3)?; // (b, 4, a, c1)
        let p = ops::softmax_last(&x.contiguous()?)?;
        let w = self.weight.reshape((self.c1, 1))?;
        p.reshape((b * 4 * a, self.c1))?.matmul(&w)?.reshape((b, 4, a))
    }
}

/// One Detect branch: `Sequential(Conv(x, c, 3), Conv(c, c, 3), Conv2d(c, out, 1))`.
#[derive(Debug, Clone)]
pub struct DetectBranch {
    pub c0: Conv,
    pub c1: Conv,
    pub c2: Conv2d,
}

impl DetectBranch {
    pub fn new(vb: VarBuilder, cin: usize, c: usize, out: usize, bias: f64) -> Result<Self> {
        Ok(DetectBranch {
            c0: Conv::new(vb.pp("0"), cin, c, 3, 1, None, true)?,
            c1: Conv::new(vb.pp("1"), c, c, 3, 1, None, true)?,
            c2: Conv2d::new_1x1(vb.pp("2"), c, out, bias)?,
        })
    }
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if train && ops::cpu_f32(x) && ops::cpu_f32(&self.c0.weight) && self.c0.s == 1 && self.c1.s == 1 {
            // One fused autograd node on CPU (see `nn::cpu::detect_branch` for why).
            return self.forward_train_cpu(x);
        }
        self.forward_composed(x, train)
    }

    /// The branch from its three layers' own forwards: the path off the CPU and in eval mode,
    /// and the reference the fused CPU training op is tested against.
    pub fn forward_composed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.c2.forward(&self.c1.forward(&self.c0.forward(x, train)?, train)?)
    }

    fn forward_train_cpu(&self, x: &Tensor) -> Result<Tensor> {
        let spec = super::cpu::detect_branch::BranchSpec {
            c0: self.c0.spec(),
            c1: self.c1.spec(),
            out: self.c2.c2,
            eps: self.c0.bn.eps(),
        };
        let mut parts = Vec::with_capacity(8);
        parts.extend(self.c0.fused_params()?);
        parts.extend(self.c1.fused_params()?);
        parts.extend([self.c2.weight.flatten_all()?, self.c2.bias.clone()]);
        super::cpu::fused_op::run(spec, x, &parts, &[&self.c0.bn, &self.c1.bn])
    }

    fn macs(&self, hw: Hw) -> f64 {
        let (a, hw1) = self.c0.macs(hw);
        let (b, hw2) = self.c1.macs(hw1);
        a + b + self.c2.macs(hw2)
    }
}

/// ultralytics `Detect(nc, reg_max=16, ch)` in its YOLOv8 ("legacy") form: per level a box
/// branch `cv2.i` (4·reg_max outputs) and a class branch `cv3.i` (nc outputs), plus the DFL.
#[derive(Debug, Clone)]
pub struct Detect {
    pub nc: usize,
    pub reg_max: usize,
    pub strides: Vec<f64>,
    pub cv2: Vec<DetectBranch>,
    pub cv3: Vec<DetectBranch>,
    pub dfl: Dfl,
}

/// Raw head outputs, per level, before any decoding — what the loss consumes.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// Box distributions per level, (B, 4·reg_max, H_i, W_i).
    pub box_levels: Vec<Tensor>,
    /// Class logits per level, (B, nc, H_i, W_i).
    pub cls_levels: Vec<Tensor>,
    /// Stride of each level in input pixels (8, 16, 32 for YOLOv8).
    pub strides: Vec<f64>,
    pub reg_max: usize,
    pub nc: usize,
}

impl HeadOutput {
    /// Per level `cat([box, cls], 1)`: (B, 4·reg_max + nc, H_i, W_i), ultralytics ≤ 8.3's
    /// training output.
    pub fn levels(&self) -> Result<Vec<Tensor>> {
        self.box_levels.iter().zip(&self.cls_levels).map(|(b, c)| Tensor::cat(&[b, c], 1)).collect()
    }
    /// All levels' box distributions flattened and concatenated: (B, 4·reg_max, A) — ultralytics
    /// 8.4's `preds["boxes"]`. Anchors are ordered level by level, row-major within a level.
    pub fn boxes(&self) -> Result<Tensor> {
        flat_cat(&self.box_levels)
    }
    /// All levels' class logits: (B, nc, A) — ultralytics 8.4's `preds["scores"]` (logits).
    pub fn scores(&self) -> Result<Tensor> {
        flat_cat(&self.cls_levels)
    }
    /// (H_i, W_i) of every level, for anchor generation.
    pub fn level_shapes(&self) -> Result<Vec<Hw>> {
        self.box_levels.iter().map(|t| Ok((t.dim(2)?, t.dim(3)?))).collect()
    }
}

fn flat_cat(levels: &[Tensor]) -> Result<Tensor> {
    let flat = levels.iter().map(|t| t.flatten_from(2)).collect::<Result<Vec<_>>>()?;
    Tensor::cat(&flat, D::Minus1)
}

impl Detect {
    /// `ch`: input channels per level, `strides`: their strides (for `bias_init`).
    pub fn new(vb: VarBuilder, nc: usize, reg_max: usize, ch: &[usize], strides: &[f64]) -> Result<Self> {
        let c2 = 16.max(ch[0] / 4).max(reg_max * 4);
        let c3 = ch[0].max(nc.min(100));
        let mut cv2 = Vec::new();
        let mut cv3 = Vec::new();
        for (i, (&x, &s)) in ch.iter().zip(strides).enumerate() {
            // Detect.bias_init: box 2.0; cls log(5 / nc / (640 / s)²) (.01 objects per 640 image).
            cv2.push(DetectBranch::new(vb.pp("cv2").pp(i), x, c2, 4 * reg_max, 2.0)?);
            let cls_bias = (5.0 / nc as f64 / (640.0 / s).powi(2)).ln();
            cv3.push(DetectBranch::new(vb.pp("cv3").pp(i), x, c3, nc, cls_bias)?);
        }
        let dfl = Dfl::new(vb.pp("dfl"), reg_max)?;
        Ok(Detect { nc, reg_max, strides: strides.to_vec(), cv2, cv3, dfl })
    }

    pub fn forward(&self, xs: &[Tensor], train: bool) -> Result<HeadOutput> {
        let mut box_levels = Vec::with_capacity(xs.len());
        let mut cls_levels = Vec::with_capacity(xs.len());
        for (i, x) in xs.iter().enumerate() {
            box_levels.push(self.cv2[i].forward(x, train)?);
            cls_levels.push(self.cv3[i].forward(x, train)?);
        }
        Ok(HeadOutput { box_levels, cls_levels, strides: self.strides.clone(), reg_max: self.reg_max, nc: self.nc })
    }

    /// MACs for inputs of sizes `hws` (includes the DFL integral over all anchors, as thop does).
    pub fn macs(&self, hws: &[Hw]) -> f64 {
        let mut t = 0.0;
        let mut anchors = 0;
        for (i, &hw) in hws.iter().enumerate() {
            t += self.cv2[i].macs(hw) + self.cv3[i].macs(hw);
            anchors += hw.0 * hw.1;
        }
        t + (4 * anchors * self.reg_max) as f64
    }
}

/// Parameter counts (ultralytics counts `nn.Parameter`s: conv weights/biases, BN weight/bias and
/// the DFL weight; BN running statistics are buffers and do not count).
impl Conv {
    pub fn params(&self) -> usize {
        self.weight.elem_count() + 2 * self.c2
    }
}
impl Conv2d {
    pub fn params(&self) -> usize {
        self.weight.elem_count() + self.bias.elem_count()
    }
}
impl Bottleneck {
    pub fn params(&self) -> usize {
        self.cv1.params() + self.cv2.params()
    }
}
impl C2f {
    pub fn params(&self) -> usize {
        self.cv1.params() + self.cv2.params() + self.m.iter().map(Bottleneck::params).sum::<usize>()
    }
}
impl C3 {
    pub fn params(&self) -> usize {
        self.cv1.params() + self.cv2.params() + self.cv3.params() + self.m.iter().map(Bottleneck::params).sum::<usize>()
    }
}
impl Sppf {
    pub fn params(&self) -> usize {
        self.cv1.params() + self.cv2.params()
    }
}
impl Spp {
    pub fn params(&self) -> usize {
        self.cv1.params() + self.cv2.params()
    }
}
impl DetectBranch {
    pub fn params(&self) -> usize {
        self.c0.params() + self.c1.params() + self.c2.params()
    }
}
impl Detect {
    pub fn params(&self) -> usize {
        self.cv2.iter().chain(&self.cv3).map(DetectBranch::params).sum::<usize>() + self.reg_max
    }
}
