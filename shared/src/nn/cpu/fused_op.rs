//! The candle plumbing shared by kubeyolo's fused training blocks (a Conv, a C2f, a Detect
//! branch): one autograd node per block, parameters as one flat tensor, a hand-written backward.
//!
//! Why one place: each block only says how to compute its forward and backward on slices
//! ([`FusedBlock`]); keeping the state between the two passes, packing `[dx, dparams]` into one
//! gradient op, and updating the blocks' BatchNorm running statistics is the same for all.

use std::sync::{Arc, Mutex};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};

use super::buffers::lock;
use super::conv::slice;
use super::fastmath::uninit_f32;

/// A training block computed on CPU f32 slices, NCHW, with flat parameters.
pub(crate) trait FusedBlock: Clone + Send + Sync + 'static {
    /// What the forward keeps for the backward.
    type State: Send + 'static;
    /// The ops' names as candle reports them.
    const NAME: &'static str;
    const GRAD_NAME: &'static str;

    /// The output and its shape from contiguous `x` of shape `dims`.
    fn forward(
        &self,
        x: &[f32],
        params: &[f32],
        dims: (usize, usize, usize, usize),
    ) -> Result<(Vec<f32>, Shape, Self::State)>;

    /// Writes the parameter gradients (parameter order) into `dparams` and, when `dx` is given,
    /// the input gradient into it.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        st: &Self::State,
        x: &[f32],
        dy: &[f32],
        params: &[f32],
        dims: (usize, usize, usize, usize),
        dx: Option<&mut [f32]>,
        dparams: &mut [f32],
    ) -> Result<()>;

    /// The batch statistics of the block's BatchNorms, in parameter order.
    fn saved(st: &Self::State) -> &[Saved];
}

/// The forward op `x.apply_op2(params, FusedOp)`.
struct FusedOp<B: FusedBlock> {
    block: B,
    /// Filled by the forward (the caller reads the BatchNorm statistics), taken by the backward.
    state: Arc<Mutex<Option<B::State>>>,
}

impl<B: FusedBlock> CustomOp2 for FusedOp<B> {
    fn name(&self) -> &'static str {
        B::NAME
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, shape, st) =
            self.block.forward(slice(s1, l1, "input")?, slice(s2, l2, "parameters")?, l1.shape().dims4()?)?;
        *lock(&self.state)? = Some(st);
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(st) = lock(&self.state)?.take() else {
            bail!("{}: backward ran twice or without a forward", B::NAME);
        };
        // The network input (the image batch) needs no gradient: skip the first layer's dx.
        let need_dx = x.track_op();
        let op = FusedGrad { block: self.block.clone(), need_dx, state: Mutex::new(Some(st)) };
        let packed = x.apply_op3_no_bwd(&grad.contiguous()?, params, &op)?;
        let xl = if need_dx { x.elem_count() } else { 0 };
        let dx = if need_dx { Some(packed.narrow(0, 0, xl)?.reshape(x.shape())?) } else { None };
        Ok((dx, Some(packed.narrow(0, xl, params.elem_count())?)))
    }
}

/// `x.apply_op3_no_bwd(dy, params, FusedGrad)` → flat `[dx?, dparams]`.
struct FusedGrad<B: FusedBlock> {
    block: B,
    need_dx: bool,
    state: Mutex<Option<B::State>>,
}

impl<B: FusedBlock> CustomOp3 for FusedGrad<B> {
    fn name(&self) -> &'static str {
        B::GRAD_NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, dy, params) =
            (slice(s1, l1, "input")?, slice(s2, l2, "output gradient")?, slice(s3, l3, "parameters")?);
        let Some(st) = lock(&self.state)?.take() else {
            bail!("{}: no forward state", B::GRAD_NAME);
        };
        let xl = if self.need_dx { x.len() } else { 0 };
        // Fully written: the block writes every parameter gradient and, when asked, all of dx.
        let mut out = uninit_f32(xl + params.len());
        let (dx, dp) = out.split_at_mut(xl);
        self.block.backward(&st, x, dy, params, l1.shape().dims4()?, self.need_dx.then_some(dx), dp)?;
        Ok((CpuStorage::F32(out), Shape::from(xl + params.len())))
    }
}

/// Runs `block` on `x` with the parameters `parts` (concatenated, flattened, in the block's
/// parameter order) as one autograd node, then updates `bns` (the block's BatchNorms, in the
/// same order) from the batch statistics like `BatchNorm::forward_train`.
pub(crate) fn run<B: FusedBlock>(
    block: B,
    x: &Tensor,
    parts: &[Tensor],
    bns: &[&candle_nn::BatchNorm],
) -> Result<Tensor> {
    let params = Tensor::cat(parts, 0)?;
    let state = Arc::new(Mutex::new(None));
    let y = x.contiguous()?.apply_op2(&params, FusedOp { block, state: state.clone() })?;
    let (n, _, h, w) = y.dims4()?;
    let guard = lock(&state)?;
    let Some(st) = guard.as_ref() else {
        bail!("{}: forward left no statistics", B::NAME);
    };
    let saved = B::saved(st);
    if saved.len() != bns.len() {
        bail!("{}: {} BatchNorm statistics for {} BatchNorms", B::NAME, saved.len(), bns.len());
    }
    for (bn, s) in bns.iter().zip(saved) {
        super::batchnorm::update_running_stats(bn, &s.mean, &s.var, n * h * w)?;
    }
    Ok(y)
}

/// Writes `parts` one after another into `out` (a block's parameter gradients in order).
pub(crate) fn write_in_order<'a>(out: &mut [f32], parts: impl IntoIterator<Item = &'a [f32]>) {
    let mut off = 0;
    for p in parts {
        out[off..off + p.len()].copy_from_slice(p);
        off += p.len();
    }
    debug_assert_eq!(off, out.len(), "parameter gradients do not fill their buffer");
}

/// What a forward keeps for its backward.
#[derive(Debug, Default)]
pub(crate) struct Saved {
    /// Conv output before BatchNorm, contiguous (N, O, OH, OW).
    pub z: Vec<f32>,
    /// Batch mean and biased variance per output channel.
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}
