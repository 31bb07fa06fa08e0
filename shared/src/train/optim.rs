//! Every optimizer ultralytics 8.4 trains with — SGD (Nesterov), Adam, Adamax, AdamW, NAdam,
//! RAdam, RMSprop and MuSGD — over ultralytics' parameter groups, with PyTorch's update rules.
//!
//! Why not candle_nn's: its `SGD` has no momentum, Nesterov or weight decay, and its `AdamW`
//! applies one decay to every variable. ultralytics' `BaseTrainer.build_optimizer` splits the
//! parameters into groups, each with its own learning rate during warm-up:
//!
//! | group | which parameters | weight decay |
//! |---|---|---|
//! | [`ParamGroup::Weight`] | conv / linear weights | `decay` |
//! | [`ParamGroup::Bn`] | normalization-layer weights | 0 |
//! | [`ParamGroup::Bias`] | every parameter whose name contains `bias` | 0 |
//! | [`ParamGroup::Muon`] | MuSGD only: every 2-D / 4-D parameter (checked first) | `decay` |
//!
//! Under MuSGD ultralytics splits each of the four in two, the first of each pair holding the
//! head's `cv3` / `one2one_cv3` parameters at 3× the learning rate ("boosted"), so it has eight
//! torch param groups: `[weight×3, weight, bn×3, bn, bias×3, bias, muon×3, muon]`. The other
//! optimizers have the three groups `[weight, bn, bias]`. [`Optimizer::param_groups`] lists them
//! in that order with their `initial_lr` (what `LambdaLR` and the warm-up scale).
//!
//! The update rules are torch.optim's single-tensor implementations (what PyTorch runs on CPU)
//! with ultralytics' arguments: `betas = (momentum, 0.999)` for the Adam family, `eps = 1e-8`,
//! RMSprop `alpha = 0.99` with `momentum`, SGD and MuSGD `nesterov = True`, NAdam
//! `momentum_decay = 4e-3`, L2 decay added to the gradient (AdamW: decoupled). The order of
//! floating-point operations follows PyTorch's kernels (`lerp`, `addcmul`, `addcdiv`), and NAdam's
//! `mu_product` is an f32 like torch's. `decay` is taken as given: ultralytics scales
//! `weight_decay` by `batch · accumulate / nbs` before building the optimizer (the trainer's job,
//! `schedule::scaled_weight_decay`).
//!
//! Warm-up: ultralytics sets every group's `lr` from `np.interp(ni, [0, nw], [start,
//! initial_lr · lf(epoch)])` with `start = warmup_bias_lr` for the `bias` groups and 0 for
//! `weight`, `bn` and `muon` — so the Muon groups warm up like the weight group — and sets
//! `momentum` only on groups that have that key: SGD, RMSprop, MuSGD, never the Adam family
//! (their β1 stays). [`Optimizer::set_lrs_by`] applies such a rule to every torch group exactly.
//!
//! Frozen parameters (ultralytics' `freeze` plus, always, `.dfl`) get no update: either drop them
//! from the `GradStore` (a parameter without a gradient is skipped, as PyTorch skips
//! `grad is None`) or name them with [`Optimizer::set_frozen`]; [`Optimizer::trainable_vars`] is
//! then what [`clip_grad_norm`] should see.
//!
//! Updates are written with candle tensor ops, so they run on any device.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use super::muon;
use crate::{Error, Result};

/// Which update rule (ultralytics' `optimizer` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD(momentum, nesterov=True)` with L2 weight decay added to the gradient.
    Sgd,
    /// `torch.optim.Adam(betas=(momentum, 0.999))`, weight decay as L2 on the gradient.
    Adam,
    /// `torch.optim.Adamax(betas=(momentum, 0.999))`, L2 decay.
    Adamax,
    /// `torch.optim.AdamW(betas=(momentum, 0.999))`, decoupled weight decay.
    AdamW,
    /// `torch.optim.NAdam(betas=(momentum, 0.999))`, `momentum_decay = 4e-3`, L2 decay.
    NAdam,
    /// `torch.optim.RAdam(betas=(momentum, 0.999))`, L2 decay.
    RAdam,
    /// `torch.optim.RMSprop(momentum=momentum)`, `alpha = 0.99`, L2 decay.
    RmsProp,
    /// ultralytics' `MuSGD(muon=0.2, sgd=1.0)`: Muon + Nesterov SGD on matrices, SGD elsewhere.
    MuSgd,
}

/// MuSGD's mix: the Muon step is scaled by `lr · MUSGD_MUON`, the SGD step by `lr · MUSGD_SGD`.
pub const MUSGD_MUON: f64 = 0.2;
pub const MUSGD_SGD: f64 = 1.0;
/// MuSGD's learning-rate factor for the head's `cv3` parameters.
pub const MUSGD_BOOST: f64 = 3.0;

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 8] =
        [Self::Sgd, Self::Adam, Self::Adamax, Self::AdamW, Self::NAdam, Self::RAdam, Self::RmsProp, Self::MuSgd];

    /// Parses ultralytics' `optimizer` cfg value, case-insensitively (`SGD`, `Adam`, `Adamax`,
    /// `AdamW`, `NAdam`, `RAdam`, `RMSprop`, `MuSGD`). `auto` depends on the iteration and class
    /// counts: resolve it with [`resolve_auto`].
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        if lower == "auto" {
            return Err(Error::config("optimizer 'auto' must be resolved first")
                .with_hint("call train::optim::resolve_auto with the iteration and class counts"));
        }
        Self::ALL.into_iter().find(|k| k.name().to_ascii_lowercase() == lower).ok_or_else(|| {
            Error::config(format!("optimizer '{name}' is not supported")).with_hint(
                "use one of SGD, Adam, Adamax, AdamW, NAdam, RAdam, RMSprop, MuSGD or auto (case-insensitive)",
            )
        })
    }

    /// ultralytics' spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sgd => "SGD",
            Self::Adam => "Adam",
            Self::Adamax => "Adamax",
            Self::AdamW => "AdamW",
            Self::NAdam => "NAdam",
            Self::RAdam => "RAdam",
            Self::RmsProp => "RMSprop",
            Self::MuSgd => "MuSGD",
        }
    }

    /// Whether the torch param groups have a `momentum` key, i.e. whether ultralytics' warm-up
    /// changes it (SGD, RMSprop, MuSGD). The Adam family has `betas` instead, left alone.
    pub fn has_momentum(self) -> bool {
        matches!(self, Self::Sgd | Self::RmsProp | Self::MuSgd)
    }
}

/// ultralytics 8.4's `optimizer=auto` rule (`build_optimizer`): over 10 000 iterations `MuSGD`
/// with lr 0.01, else `AdamW` with `lr_fit = round(0.002 · 5 / (4 + nc), 6)`; momentum 0.9 either
/// way, and the trainer must then start the bias warm-up at 0 (`warmup_bias_lr = 0`) and record
/// the chosen optimizer and lr in its args (a resume rebuilds the choice from them). Any other
/// name is parsed and returned with `lr0` and `momentum` unchanged.
///
/// Returns `(kind, lr, momentum, auto)`; `auto` says the rule applied (→ `warmup_bias_lr = 0`).
/// `iterations` is ultralytics' `ceil(n_images / max(batch, nbs)) · epochs` ([`auto_iterations`]);
/// `nc` is the dataset's class count (ultralytics uses 10 when the dataset has none).
pub fn resolve_auto(
    name: &str,
    lr0: f64,
    momentum: f64,
    nc: usize,
    iterations: usize,
) -> Result<(OptimizerKind, f64, f64, bool)> {
    if !name.trim().eq_ignore_ascii_case("auto") {
        return Ok((OptimizerKind::parse(name)?, lr0, momentum, false));
    }
    if iterations > 10_000 {
        Ok((OptimizerKind::MuSgd, 0.01, 0.9, true))
    } else {
        Ok((OptimizerKind::AdamW, round_decimals(0.002 * 5.0 / (4.0 + nc as f64), 6), 0.9, true))
    }
}

/// The iteration count `optimizer=auto` looks at: `ceil(n_images / max(batch, nbs)) · epochs`.
pub fn auto_iterations(n_images: usize, batch: usize, nbs: usize, epochs: usize) -> usize {
    n_images.div_ceil(batch.max(nbs).max(1)) * epochs
}

/// Python's `round(x, digits)`: the double nearest to `x` correctly rounded to `digits` decimals
/// (Rust's exact decimal formatting does that rounding, ties to even like Python).
fn round_decimals(x: f64, digits: usize) -> f64 {
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// ultralytics' `freeze_layer_names`: `model.{i}.` for every frozen layer index, plus `.dfl`
/// (always frozen). A parameter is frozen when its name contains any of them.
/// Layers are indices (`3`) or, as the cfg's `freeze` list allows, module paths (`23.cv2`).
pub fn freeze_layer_names<T: std::fmt::Display>(layers: &[T]) -> Vec<String> {
    layers.iter().map(|i| format!("model.{i}.")).chain(std::iter::once(".dfl".to_string())).collect()
}

/// ultralytics' parameter groups (the index is the group's position in its `g` list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamGroup {
    /// Conv weights: decayed.
    Weight = 0,
    /// BatchNorm weights: not decayed.
    Bn = 1,
    /// Biases (conv and BatchNorm): not decayed, own warm-up start (`warmup_bias_lr`).
    Bias = 2,
    /// MuSGD only: every 2-D / 4-D parameter, decayed, Muon + SGD update; warms up like Weight.
    Muon = 3,
}

impl ParamGroup {
    /// The groups every optimizer has, which the trainer's warm-up and schedule drive
    /// (`schedule::WarmupState::lr` is indexed by them). Setting Weight's lr, momentum or decay
    /// sets Muon's too ([`Optimizer::set_lr`]): ultralytics warms up, schedules and re-decays both
    /// identically, so a trainer that drives these three drives MuSGD exactly.
    pub const ALL: [ParamGroup; 3] = [ParamGroup::Weight, ParamGroup::Bn, ParamGroup::Bias];
    /// All four, Muon included.
    pub const EVERY: [ParamGroup; 4] = [ParamGroup::Weight, ParamGroup::Bn, ParamGroup::Bias, ParamGroup::Muon];

    /// Whether setting group `self` also sets `other`: itself, and Weight → Muon.
    fn drives(self, other: ParamGroup) -> bool {
        self == other || (self == ParamGroup::Weight && other == ParamGroup::Muon)
    }

    /// The group of a parameter from its ultralytics state-dict name and rank, as
    /// `build_optimizer` decides it for every optimizer but MuSGD: `bias` in the name → Bias; a
    /// weight of a normalization layer (in YOLOv8 the only 1-D weights; also any name with
    /// `.bn.`) → Bn; else Weight.
    pub fn of(name: &str, rank: usize) -> Self {
        if name.contains("bias") {
            ParamGroup::Bias
        } else if rank == 1 || name.contains(".bn.") || name.starts_with("bn.") || name.contains("logit_scale") {
            ParamGroup::Bn
        } else {
            ParamGroup::Weight
        }
    }

    /// The group under `kind`: MuSGD first takes every 2-D / 4-D parameter into Muon.
    pub fn of_kind(kind: OptimizerKind, name: &str, rank: usize) -> Self {
        if kind == OptimizerKind::MuSgd && (rank == 2 || rank == 4) {
            ParamGroup::Muon
        } else {
            Self::of(name, rank)
        }
    }

    /// ultralytics' `param_group` name: "weight", "bn", "bias", "muon".
    pub fn name(self) -> &'static str {
        match self {
            ParamGroup::Weight => "weight",
            ParamGroup::Bn => "bn",
            ParamGroup::Bias => "bias",
            ParamGroup::Muon => "muon",
        }
    }

    /// Which of the three warm-up learning rates (`schedule::WarmupState::lr`: weight, bn, bias)
    /// this group takes: Muon warms up like Weight (from 0).
    pub fn warmup_slot(self) -> usize {
        match self {
            ParamGroup::Muon => 0,
            g => g as usize,
        }
    }
}

/// Whether a variable is a buffer (BatchNorm running statistics), never a trained parameter.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var") || name.ends_with("num_batches_tracked")
}

/// Per-group hyper-parameters; the trainer changes `lr` (and SGD `momentum`) during warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupHyp {
    pub lr: f64,
    /// SGD / RMSprop / MuSGD momentum, or the Adam family's β1.
    pub momentum: f64,
    pub weight_decay: f64,
}

/// One torch param group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Group {
    pub group: ParamGroup,
    /// MuSGD: the head's `cv3` parameters at [`MUSGD_BOOST`]× the learning rate.
    pub boosted: bool,
    /// The lr the group was built with (`LambdaLR`'s `initial_lr`): lr0, or 3·lr0 when boosted.
    pub initial_lr: f64,
    pub hyp: GroupHyp,
}

impl Group {
    fn lr_scale(&self) -> f64 {
        if self.boosted {
            MUSGD_BOOST
        } else {
            1.0
        }
    }
}

struct Param {
    name: String,
    var: Var,
    /// Index into `Optimizer::groups`.
    gi: usize,
    frozen: bool,
    /// SGD / MuSGD-Muon / RMSprop: momentum buffer. Adam family: first moment.
    m: Option<Tensor>,
    /// Adam / NAdam / RAdam: second moment. Adamax: exponentially weighted infinity norm.
    /// RMSprop: square average. MuSGD on Muon parameters: the SGD momentum buffer.
    v: Option<Tensor>,
    /// Number of updates this parameter received (bias corrections).
    steps: i32,
    /// NAdam: the product of the μ_t, an f32 as in torch.
    mu_product: f32,
}

/// An optimizer over named variables in ultralytics' parameter groups.
pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<Param>,
    groups: Vec<Group>,
    beta2: f64,
    eps: f64,
}

/// The index of the head (`model.N`, the largest N among the names), whose `cv3` MuSGD boosts.
fn head_index<'a>(names: impl Iterator<Item = &'a str>) -> Option<usize> {
    names.filter_map(|n| n.strip_prefix("model.")?.split('.').next()?.parse::<usize>().ok()).max()
}

/// Whether MuSGD gives this parameter 3× the lr: the head's `cv3` / `one2one_cv3` (and
/// ultralytics' segmentation `proto.semseg` / `SemanticSegment` names).
fn is_boosted(name: &str, head: Option<usize>) -> bool {
    let in_head = head.is_some_and(|h| {
        let p = format!("model.{h}.");
        name.strip_prefix(&p).is_some_and(|rest| rest.starts_with("cv3.") || rest.starts_with("one2one_cv3."))
    });
    in_head || name.contains("proto.semseg") || name.contains("SemanticSegment")
}

/// torch's `lerp(start, end, w)` on CPU: `start + w·(end − start)` for w < 0.5, else
/// `end − (end − start)·(1 − w)`.
fn lerp(start: &Tensor, end: &Tensor, w: f64) -> Result<Tensor> {
    let d = (end - start)?;
    Ok(if w < 0.5 { (start + (d * w)?)? } else { (end - (d * (1.0 - w))?)? })
}

impl Optimizer {
    /// Builds the optimizer as `build_optimizer(model, name, lr, momentum, decay)` does for a
    /// resolved `name` (see [`resolve_auto`]): every group starts at `lr` (boosted MuSGD groups at
    /// 3·lr) and `momentum`; Weight and Muon have weight decay `decay`, Bn and Bias none.
    /// Buffers (`running_mean`, `running_var`) are skipped. Names are sorted, so the order (and
    /// thus floating-point results) does not depend on hash-map order.
    pub fn new(
        kind: OptimizerKind,
        vars: impl IntoIterator<Item = (String, Var)>,
        lr: f64,
        momentum: f64,
        decay: f64,
    ) -> Self {
        let mut vars: Vec<(String, Var)> = vars.into_iter().filter(|(n, _)| !is_buffer(n)).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let musgd = kind == OptimizerKind::MuSgd;
        let mut groups = Vec::new();
        let order: &[ParamGroup] = if musgd { &ParamGroup::EVERY } else { &ParamGroup::ALL };
        for &g in order {
            let wd = if matches!(g, ParamGroup::Weight | ParamGroup::Muon) { decay } else { 0.0 };
            for boosted in if musgd { &[true, false][..] } else { &[false][..] } {
                let initial_lr = if *boosted { lr * MUSGD_BOOST } else { lr };
                groups.push(Group {
                    group: g,
                    boosted: *boosted,
                    initial_lr,
                    hyp: GroupHyp { lr: initial_lr, momentum, weight_decay: wd },
                });
            }
        }
        let head = head_index(vars.iter().map(|(n, _)| n.as_str()));
        let params = vars
            .into_iter()
            .map(|(name, var)| {
                let group = ParamGroup::of_kind(kind, &name, var.rank());
                let boosted = musgd && is_boosted(&name, head);
                let gi = groups.iter().position(|g| g.group == group && g.boosted == boosted).unwrap_or(0);
                Param { name, var, gi, frozen: false, m: None, v: None, steps: 0, mu_product: 1.0 }
            })
            .collect();
        Optimizer { kind, params, groups, beta2: 0.999, eps: 1e-8 }
    }

    /// All trainable variables of a `VarMap` (its buffers are skipped).
    pub fn from_varmap(
        kind: OptimizerKind,
        varmap: &candle_nn::VarMap,
        lr: f64,
        momentum: f64,
        decay: f64,
    ) -> Result<Self> {
        let data = varmap.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
        let vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Self::new(kind, vars, lr, momentum, decay))
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// The torch param groups, in ultralytics' order.
    pub fn param_groups(&self) -> &[Group] {
        &self.groups
    }

    /// The numbers ultralytics logs as `{bn} weight(decay=0.0), {weight} weight(decay=…),
    /// {bias} bias(decay=0.0)`, in the order (weight, bn, bias); under MuSGD the first is the
    /// Muon group's count, as ultralytics reports it. Frozen parameters count (they are in
    /// ultralytics' groups too).
    pub fn group_sizes(&self) -> [usize; 3] {
        let first = if self.kind == OptimizerKind::MuSgd { ParamGroup::Muon } else { ParamGroup::Weight };
        [self.group_size(first), self.group_size(ParamGroup::Bn), self.group_size(ParamGroup::Bias)]
    }

    /// Number of parameters (tensors) in `g`, boosted and not.
    pub fn group_size(&self, g: ParamGroup) -> usize {
        self.params.iter().filter(|p| self.groups[p.gi].group == g).count()
    }

    /// The group a named parameter belongs to (None for unknown names and buffers).
    pub fn group_of(&self, name: &str) -> Option<ParamGroup> {
        self.params.iter().find(|p| p.name == name).map(|p| self.groups[p.gi].group)
    }

    /// The torch group index of a named parameter (into [`Self::param_groups`]).
    pub fn group_index_of(&self, name: &str) -> Option<usize> {
        self.params.iter().find(|p| p.name == name).map(|p| p.gi)
    }

    /// The hyper-parameters of the (un-boosted) group `g`; a group this optimizer lacks (Muon
    /// outside MuSGD) reports the Weight group's.
    pub fn hyp(&self, g: ParamGroup) -> GroupHyp {
        self.groups.iter().find(|x| x.group == g && !x.boosted).unwrap_or(&self.groups[0]).hyp
    }

    /// Sets the lr of group `g` (Weight: Muon too): `lr` for its un-boosted part, 3·`lr` for
    /// MuSGD's boosted part. That is ultralytics' value whenever the warm-up starts from 0 (weight, bn, muon; bias with
    /// `warmup_bias_lr = 0`) and after warm-up; for a boosted bias group warming up from a nonzero
    /// `warmup_bias_lr` use [`Self::set_lrs_by`].
    pub fn set_lr(&mut self, g: ParamGroup, lr: f64) {
        for x in self.groups.iter_mut().filter(|x| g.drives(x.group)) {
            x.hyp.lr = lr * x.lr_scale();
        }
    }

    /// Sets every torch group's lr to `f(group)` — e.g. ultralytics' warm-up
    /// `interp(ni, [0, nw], [if bias {warmup_bias_lr} else {0}, g.initial_lr · lf])`, or
    /// `g.initial_lr · lf` for `LambdaLR` at an epoch start.
    pub fn set_lrs_by(&mut self, f: impl Fn(&Group) -> f64) {
        for x in &mut self.groups {
            x.hyp.lr = f(x);
        }
    }

    /// Sets the lr of one torch group (index into [`Self::param_groups`]).
    pub fn set_group_lr(&mut self, index: usize, lr: f64) -> Result<()> {
        let n = self.groups.len();
        let g = self.groups.get_mut(index).ok_or_else(|| Error::internal(format!("param group {index} of {n}")))?;
        g.hyp.lr = lr;
        Ok(())
    }

    /// SGD / RMSprop / MuSGD momentum of group `g` (Weight: Muon too; ultralytics warms it up,
    /// the same value for every group). A no-op for the Adam
    /// family: their groups have no `momentum` key, so ultralytics' warm-up leaves β1 alone.
    pub fn set_momentum(&mut self, g: ParamGroup, momentum: f64) {
        if !self.kind.has_momentum() {
            return;
        }
        for x in self.groups.iter_mut().filter(|x| g.drives(x.group)) {
            x.hyp.momentum = momentum;
        }
    }

    /// Weight decay of group `g` (Weight: Muon too — ultralytics re-sets both "weight" and
    /// "muon" when the batch size changes).
    pub fn set_weight_decay(&mut self, g: ParamGroup, wd: f64) {
        for x in self.groups.iter_mut().filter(|x| g.drives(x.group)) {
            x.hyp.weight_decay = wd;
        }
    }

    /// Freezes every parameter whose name contains one of `patterns` (ultralytics' `freeze`
    /// test, see [`freeze_layer_names`]) and unfreezes the rest; returns how many are frozen.
    /// Frozen parameters keep their group (ultralytics keeps them in the optimizer) but never
    /// get an update, even when the `GradStore` has a gradient for them.
    pub fn set_frozen(&mut self, patterns: &[String]) -> usize {
        let mut n = 0;
        for p in &mut self.params {
            p.frozen = patterns.iter().any(|x| p.name.contains(x.as_str()));
            n += p.frozen as usize;
        }
        n
    }

    /// The variables that are not frozen, in name order: what [`clip_grad_norm`] should see.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.params.iter().filter(|p| !p.frozen).map(|p| p.var.clone()).collect()
    }

    /// The optimizer state as named tensors, for checkpoints: per parameter `<param>.m`,
    /// `<param>.v`, `<param>.steps` (f32) and, for NAdam, `<param>.mu_product` (f32); per torch
    /// group `optimizer.group.<i>` = `[lr, momentum, weight_decay, initial_lr]` (f64, exact).
    /// Parameters with no update yet have no per-parameter entries.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for p in &self.params {
            if let Some(m) = &p.m {
                out.insert(format!("{}.m", p.name), m.clone());
            }
            if let Some(v) = &p.v {
                out.insert(format!("{}.v", p.name), v.clone());
            }
            if p.steps > 0 {
                out.insert(format!("{}.steps", p.name), Tensor::new(&[p.steps as f32], p.var.device())?);
                if self.kind == OptimizerKind::NAdam {
                    out.insert(format!("{}.mu_product", p.name), Tensor::new(&[p.mu_product], p.var.device())?);
                }
            }
        }
        let dev = candle_core::Device::Cpu;
        for (i, g) in self.groups.iter().enumerate() {
            let h = g.hyp;
            out.insert(
                format!("optimizer.group.{i}"),
                Tensor::new(&[h.lr, h.momentum, h.weight_decay, g.initial_lr], &dev)?,
            );
        }
        Ok(out)
    }

    /// Restores what [`Self::state_tensors`] saved (unknown names are ignored; group entries
    /// are restored only when they are four f64 values, as saved).
    pub fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        let scalar = |t: &Tensor| -> Result<f32> {
            Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?.first().copied().unwrap_or(0.0))
        };
        for p in &mut self.params {
            if let Some(m) = state.get(&format!("{}.m", p.name)) {
                p.m = Some(m.to_device(p.var.device())?);
            }
            if let Some(v) = state.get(&format!("{}.v", p.name)) {
                p.v = Some(v.to_device(p.var.device())?);
            }
            if let Some(s) = state.get(&format!("{}.steps", p.name)) {
                p.steps = scalar(s)? as i32;
            }
            if let Some(s) = state.get(&format!("{}.mu_product", p.name)) {
                p.mu_product = scalar(s)?;
            }
        }
        for (i, g) in self.groups.iter_mut().enumerate() {
            if let Some(t) = state.get(&format!("optimizer.group.{i}")) {
                if let Ok([lr, mom, wd, init]) =
                    <[f64; 4]>::try_from(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
                {
                    g.hyp = GroupHyp { lr, momentum: mom, weight_decay: wd };
                    g.initial_lr = init;
                }
            }
        }
        Ok(())
    }

    /// One update from the gradients of a `backward()`. Parameters without a gradient (unused,
    /// or dropped by the trainer) and frozen ones are left alone, as PyTorch does for
    /// `grad is None`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for gi in 0..self.groups.len() {
            let h = self.groups[gi].hyp;
            // Detached: arithmetic on the variable itself would record an autograd graph, and the
            // momentum buffers would then chain every step's graph (gradients included) to the
            // next one — a leak of ~60 MB per yolov8n step.
            let mut live: Vec<(usize, Tensor)> = Vec::new();
            for (i, p) in self.params.iter().enumerate() {
                if p.gi == gi && !p.frozen {
                    if let Some(g) = grads.get(p.var.as_tensor()) {
                        live.push((i, g.detach()));
                    }
                }
            }
            if live.is_empty() {
                continue;
            }
            if self.groups[gi].group == ParamGroup::Muon {
                self.step_musgd_muon(&live, h)?;
                continue;
            }
            for (i, grad) in live {
                let p = &mut self.params[i];
                let w = p.var.as_tensor().detach();
                let kind = if self.kind == OptimizerKind::MuSgd { OptimizerKind::Sgd } else { self.kind };
                let new_w = update(kind, p, &w, &grad, h, self.beta2, self.eps)?;
                p.var.set(&new_w)?;
            }
        }
        Ok(())
    }

    /// MuSGD on a `use_muon` group: the batched Muon update at `lr · 0.2` (no decay), then a
    /// Nesterov SGD step at `lr · 1.0` whose decay reads the weights *after* the Muon step.
    fn step_musgd_muon(&mut self, live: &[(usize, Tensor)], h: GroupHyp) -> Result<()> {
        let grads: Vec<Tensor> = live.iter().map(|(_, g)| g.clone()).collect();
        let mut moms: Vec<Tensor> = live
            .iter()
            .map(|(i, g)| self.params[*i].m.clone().map_or_else(|| g.zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()?;
        let updates = muon::muon_update(&grads, &mut moms, h.momentum, true)?;
        for (((i, g), m), u) in live.iter().zip(moms).zip(updates) {
            let p = &mut self.params[*i];
            let w = (p.var.as_tensor().detach() - (u * (h.lr * MUSGD_MUON))?)?;
            let g = if h.weight_decay != 0.0 { (g + (&w * h.weight_decay)?)? } else { g.clone() };
            let buf = match &p.v {
                Some(b) => ((b * h.momentum)? + &g)?,
                None => g.clone(),
            };
            let upd = (&g + (&buf * h.momentum)?)?;
            p.m = Some(m);
            p.v = Some(buf);
            p.steps += 1;
            p.var.set(&(w - (upd * (h.lr * MUSGD_SGD))?)?)?;
        }
        Ok(())
    }
}

/// One per-parameter update (every rule but MuSGD's Muon groups); returns the new weights and
/// updates the state in `p`. Mirrors torch.optim's `_single_tensor_*` functions.
fn update(
    kind: OptimizerKind,
    p: &mut Param,
    w: &Tensor,
    grad: &Tensor,
    h: GroupHyp,
    beta2: f64,
    eps: f64,
) -> Result<Tensor> {
    let l2 = |g: &Tensor| -> Result<Tensor> {
        Ok(if h.weight_decay != 0.0 { (g + (w * h.weight_decay)?)? } else { g.clone() })
    };
    let zeros = || w.zeros_like();
    p.steps += 1;
    let step = p.steps as f64;
    let b1 = h.momentum;
    Ok(match kind {
        OptimizerKind::Sgd | OptimizerKind::MuSgd => {
            // g += wd·w; buf = μ·buf + g (buf = g at first); g += μ·buf (Nesterov).
            let g = l2(grad)?;
            if h.momentum == 0.0 {
                (w - (g * h.lr)?)?
            } else {
                let buf = match &p.m {
                    Some(b) => ((b * h.momentum)? + &g)?,
                    None => g.clone(),
                };
                let g = (g + (&buf * h.momentum)?)?;
                p.m = Some(buf);
                (w - (g * h.lr)?)?
            }
        }
        OptimizerKind::Adam | OptimizerKind::AdamW => {
            let (w, g) = if kind == OptimizerKind::AdamW {
                let w = if h.weight_decay != 0.0 { (w * (1.0 - h.lr * h.weight_decay))? } else { w.clone() };
                (w, grad.clone())
            } else {
                (w.clone(), l2(grad)?)
            };
            let m = lerp(&p.m.take().map_or_else(zeros, Ok)?, &g, 1.0 - b1)?;
            let v = p.v.take().map_or_else(zeros, Ok)?;
            let v = ((v * beta2)? + ((&g * (1.0 - beta2))? * &g)?)?;
            let bc1 = 1.0 - b1.powf(step);
            let bc2 = 1.0 - beta2.powf(step);
            // denom = √v / √bc2 + eps; w += (−lr / bc1) · m / denom.
            let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
            let upd = (&m * (-h.lr / bc1))?.div(&denom)?;
            p.m = Some(m);
            p.v = Some(v);
            (w + upd)?
        }
        OptimizerKind::Adamax => {
            let g = l2(grad)?;
            let m = lerp(&p.m.take().map_or_else(zeros, Ok)?, &g, 1.0 - b1)?;
            let u = p.v.take().map_or_else(zeros, Ok)?;
            let u = (u * beta2)?.maximum(&(g.abs()? + eps)?)?;
            let clr = h.lr / (1.0 - b1.powf(step));
            let upd = (&m * -clr)?.div(&u)?;
            p.m = Some(m);
            p.v = Some(u);
            (w + upd)?
        }
        OptimizerKind::NAdam => {
            const MOMENTUM_DECAY: f64 = 4e-3;
            let bc2 = 1.0 - beta2.powf(step);
            let g = l2(grad)?;
            let mu = b1 * (1.0 - 0.5 * 0.96f64.powf(step * MOMENTUM_DECAY));
            let mu_next = b1 * (1.0 - 0.5 * 0.96f64.powf((step + 1.0) * MOMENTUM_DECAY));
            p.mu_product *= mu as f32; // a float32 tensor in torch
            let mp = p.mu_product as f64;
            let m = lerp(&p.m.take().map_or_else(zeros, Ok)?, &g, 1.0 - b1)?;
            let v = p.v.take().map_or_else(zeros, Ok)?;
            let v = ((v * beta2)? + ((&g * (1.0 - beta2))? * &g)?)?;
            let denom = ((&v / bc2)?.sqrt()? + eps)?;
            let mp_next = mp * mu_next;
            let w = (w + (&g * (-h.lr * (1.0 - mu) / (1.0 - mp)))?.div(&denom)?)?;
            let w = (w + (&m * (-h.lr * mu_next / (1.0 - mp_next)))?.div(&denom)?)?;
            p.m = Some(m);
            p.v = Some(v);
            w
        }
        OptimizerKind::RAdam => {
            let g = l2(grad)?;
            let m = lerp(&p.m.take().map_or_else(zeros, Ok)?, &g, 1.0 - b1)?;
            let v = p.v.take().map_or_else(zeros, Ok)?;
            let v = ((v * beta2)? + ((&g * (1.0 - beta2))? * &g)?)?;
            let bc1 = 1.0 - b1.powf(step);
            let bc2 = 1.0 - beta2.powf(step);
            let bcm = (&m / bc1)?;
            let rho_inf = 2.0 / (1.0 - beta2) - 1.0;
            let rho_t = rho_inf - 2.0 * step * beta2.powf(step) / bc2;
            let upd = if rho_t > 5.0 {
                let rect =
                    ((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)).powf(0.5);
                let denom = (v.sqrt()? + eps)?;
                let adaptive = (denom.ones_like()? * bc2.powf(0.5))?.div(&denom)?;
                (((&bcm * h.lr)? * adaptive)? * rect)?
            } else {
                (&bcm * h.lr)?
            };
            p.m = Some(m);
            p.v = Some(v);
            (w - upd)?
        }
        OptimizerKind::RmsProp => {
            const ALPHA: f64 = 0.99;
            let g = l2(grad)?;
            let sq = p.v.take().map_or_else(zeros, Ok)?;
            let sq = ((sq * ALPHA)? + ((&g * (1.0 - ALPHA))? * &g)?)?;
            let avg = (sq.sqrt()? + eps)?;
            let new_w = if h.momentum > 0.0 {
                let buf = p.m.take().map_or_else(zeros, Ok)?;
                let buf = ((buf * h.momentum)? + g.div(&avg)?)?;
                let w = (w - (&buf * h.lr)?)?;
                p.m = Some(buf);
                w
            } else {
                (w + (&g * -h.lr)?.div(&avg)?)?
            };
            p.v = Some(sq);
            new_w
        }
    })
}

/// `torch.nn.utils.clip_grad_norm_(params, max_norm)` as ultralytics calls it before every
/// optimizer step (`max_norm = 10`): the total L2 norm over the gradients of `vars` (those with
/// one), and every gradient scaled by `min(max_norm / (norm + 1e-6), 1)` — computed in f32 the way
/// torch does (`max_norm / t` is `t.reciprocal() · max_norm`). Returns the norm (before clipping).
/// Pass the trainable variables only ([`Optimizer::trainable_vars`]): ultralytics' frozen
/// parameters have no gradient.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut norms = Vec::new();
    let mut present = Vec::new();
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            let g = g.detach();
            norms.push(g.to_dtype(DType::F32)?.sqr()?.sum_all()?.sqrt()?);
            present.push((v.clone(), g));
        }
    }
    if norms.is_empty() {
        return Ok(0.0);
    }
    // One read of all the per-tensor norms: on a GPU a read per tensor waits for the device each
    // time (~180 round trips a step for yolov8n); the host then sums them in the same order.
    let norms = Tensor::stack(&norms, 0)?.to_vec1::<f32>()?;
    let total = norms.iter().map(|n| n * n).sum::<f32>().sqrt();
    let coef = (1.0f32 / (total + 1e-6f32)) * max_norm as f32;
    let coef = coef.min(1.0);
    // torch multiplies by the clamped coefficient always; by 1.0 that changes nothing
    if coef < 1.0 {
        for (v, g) in present {
            grads.insert(v.as_tensor(), (g * coef as f64)?);
        }
    }
    Ok(total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn var(vals: &[f32]) -> Var {
        Var::from_slice(vals, vals.len(), &Device::Cpu).unwrap()
    }

    #[test]
    fn groups_follow_ultralytics() {
        assert_eq!(ParamGroup::of("model.0.conv.weight", 4), ParamGroup::Weight);
        assert_eq!(ParamGroup::of("model.0.bn.weight", 1), ParamGroup::Bn);
        assert_eq!(ParamGroup::of("model.0.bn.bias", 1), ParamGroup::Bias);
        assert_eq!(ParamGroup::of("model.22.cv2.0.2.bias", 1), ParamGroup::Bias);
        assert!(is_buffer("model.0.bn.running_var"));
    }

    /// Reference values computed with the PyTorch update rules by hand (two steps, grad = w).
    fn run(kind: OptimizerKind, wd: f64) -> Vec<f32> {
        let w = Var::from_slice(&[1.0f32, -2.0], (1, 2), &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(kind, vec![("model.0.conv.weight".to_string(), w.clone())], 0.1, 0.9, wd);
        assert_eq!(opt.group_of("model.0.conv.weight"), Some(ParamGroup::Weight));
        for _ in 0..2 {
            let loss = (w.as_tensor().sqr().unwrap() * 0.5).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            opt.step(&g).unwrap();
        }
        w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    /// The optimizer state must not hold an autograd graph: one that did would keep every step's
    /// gradients alive through the momentum chain (a leak that grows each step).
    #[test]
    fn state_keeps_no_autograd_graph() {
        for kind in OptimizerKind::ALL {
            let w = Var::from_slice(&[1.0f32, -2.0], (1, 2), &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(kind, vec![("model.0.conv.weight".to_string(), w.clone())], 0.1, 0.9, 5e-4);
            for _ in 0..3 {
                let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
            }
            for p in &opt.params {
                for t in [&p.m, &p.v].into_iter().flatten() {
                    assert!(!t.track_op(), "{kind:?}: optimizer state records an autograd graph");
                }
            }
        }
    }

    fn sgd_ref(w0: f64, lr: f64, mu: f64, wd: f64) -> f64 {
        let mut w = w0;
        let mut buf: Option<f64> = None;
        for _ in 0..2 {
            let g = w + wd * w;
            let b = match buf {
                Some(b) => mu * b + g,
                None => g,
            };
            buf = Some(b);
            w -= lr * (g + mu * b);
        }
        w
    }

    fn adam_ref(w0: f64, lr: f64, b1: f64, wd: f64, decoupled: bool) -> f64 {
        let (mut w, mut m, mut v) = (w0, 0.0, 0.0);
        for t in 1..=2 {
            let mut g = w;
            if decoupled {
                w *= 1.0 - lr * wd;
            } else {
                g += wd * w;
            }
            m = b1 * m + (1.0 - b1) * g;
            v = 0.999 * v + 0.001 * g * g;
            let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - 0.999f64.powi(t));
            w -= lr / bc1 * m / (v.sqrt() / bc2.sqrt() + 1e-8);
        }
        w
    }

    #[test]
    fn updates_match_torch_rules() {
        for (kind, wd) in [
            (OptimizerKind::Sgd, 0.0),
            (OptimizerKind::Sgd, 0.05),
            (OptimizerKind::Adam, 0.05),
            (OptimizerKind::AdamW, 0.05),
        ] {
            let got = run(kind, wd);
            for (i, w0) in [1.0f64, -2.0].iter().enumerate() {
                let want = match kind {
                    OptimizerKind::Sgd => sgd_ref(*w0, 0.1, 0.9, wd),
                    OptimizerKind::Adam => adam_ref(*w0, 0.1, 0.9, wd, false),
                    OptimizerKind::AdamW => adam_ref(*w0, 0.1, 0.9, wd, true),
                    other => unreachable!("{other:?} is checked against the torch fixtures"),
                };
                assert!((got[i] as f64 - want).abs() < 1e-5, "{kind:?} wd {wd}: {} vs {want}", got[i]);
            }
        }
    }

    #[test]
    fn no_decay_on_bn_and_bias() {
        let wconv = Var::from_slice(&[1.0f32; 4], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let bnw = var(&[1.0]);
        let bias = var(&[1.0]);
        let mut opt = Optimizer::new(
            OptimizerKind::AdamW,
            vec![
                ("m.conv.weight".into(), wconv.clone()),
                ("m.bn.weight".into(), bnw.clone()),
                ("m.bn.bias".into(), bias.clone()),
                ("m.bn.running_mean".into(), var(&[0.0])),
            ],
            0.1,
            0.9,
            0.5,
        );
        assert_eq!(opt.group_sizes(), [1, 1, 1]);
        // Zero loss gradient (x · 0, not a 0 affine, which candle prunes): only decay moves.
        let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).unwrap();
        for v in [&wconv, &bnw, &bias] {
            let t = v.as_tensor();
            loss = (loss + t.mul(&t.zeros_like().unwrap()).unwrap().sum_all().unwrap()).unwrap();
        }
        let g = loss.backward().unwrap();
        opt.step(&g).unwrap();
        let wv = wconv.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((wv - 0.95).abs() < 1e-6, "{wv}");
        assert_eq!(bnw.as_tensor().to_vec1::<f32>().unwrap()[0], 1.0);
        assert_eq!(bias.as_tensor().to_vec1::<f32>().unwrap()[0], 1.0);
    }

    /// Weight drives Muon; the Adam family ignores momentum (ultralytics' groups have no key);
    /// MuSGD's boosted groups get 3× the lr; frozen parameters never move.
    #[test]
    fn group_setters_and_freeze() {
        let dev = &Device::Cpu;
        let vars = || {
            vec![
                ("model.0.conv.weight".to_string(), Var::ones((2, 2, 1, 1), candle_core::DType::F32, dev).unwrap()),
                ("model.1.cv3.0.weight".to_string(), Var::ones((2, 2, 1, 1), candle_core::DType::F32, dev).unwrap()),
                ("model.1.cv3.0.bias".to_string(), var(&[1.0, 1.0])),
                ("model.1.dfl.conv.weight".to_string(), Var::ones((1, 2, 1, 1), candle_core::DType::F32, dev).unwrap()),
            ]
        };
        let mut mu = Optimizer::new(OptimizerKind::MuSgd, vars(), 0.01, 0.9, 5e-4);
        assert_eq!(mu.param_groups().len(), 8);
        assert_eq!(mu.group_of("model.0.conv.weight"), Some(ParamGroup::Muon));
        let cv3 = mu.group_index_of("model.1.cv3.0.weight").unwrap();
        assert!(mu.param_groups()[cv3].boosted && mu.param_groups()[cv3].group == ParamGroup::Muon);
        assert!(mu.param_groups()[mu.group_index_of("model.1.cv3.0.bias").unwrap()].boosted);
        assert!(!mu.param_groups()[mu.group_index_of("model.0.conv.weight").unwrap()].boosted);
        mu.set_lr(ParamGroup::Weight, 0.5);
        mu.set_momentum(ParamGroup::Weight, 0.8);
        assert_eq!(mu.param_groups()[cv3].hyp.lr, 1.5);
        assert_eq!(mu.hyp(ParamGroup::Muon), GroupHyp { lr: 0.5, momentum: 0.8, weight_decay: 5e-4 });
        assert_eq!(mu.hyp(ParamGroup::Bias).lr, 0.01);

        let mut adam = Optimizer::new(OptimizerKind::Adam, vars(), 0.01, 0.9, 5e-4);
        adam.set_momentum(ParamGroup::Weight, 0.5);
        assert_eq!(adam.hyp(ParamGroup::Weight).momentum, 0.9);
        assert_eq!(adam.set_frozen(&freeze_layer_names(&[0])), 2);
        assert_eq!(adam.trainable_vars().len(), 2);
        let all: Vec<Var> = vars().into_iter().map(|(_, v)| v).collect();
        let mut opt = Optimizer::new(
            OptimizerKind::Sgd,
            vars().into_iter().zip(&all).map(|((n, _), v)| (n, v.clone())),
            0.1,
            0.9,
            0.0,
        );
        opt.set_frozen(&freeze_layer_names::<usize>(&[]));
        let loss = all.iter().map(|v| v.as_tensor().sum_all().unwrap()).reduce(|a, b| (a + b).unwrap()).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
        assert_eq!(
            all[3].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1.0, 1.0],
            "frozen .dfl moved"
        );
        assert!(all[0].as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()[0] < 1.0);
    }

    #[test]
    fn clip_scales_only_above_max_norm() {
        let a = var(&[3.0, 4.0]);
        let b = var(&[12.0]);
        let loss = ((a.as_tensor().sum_all().unwrap() * 1.0).unwrap() + b.as_tensor().sum_all().unwrap()).unwrap();
        let mut g = loss.backward().unwrap();
        g.insert(a.as_tensor(), Tensor::new(&[3.0f32, 4.0], &Device::Cpu).unwrap());
        g.insert(b.as_tensor(), Tensor::new(&[12.0f32], &Device::Cpu).unwrap());
        let n = clip_grad_norm(&mut g, &[a.clone(), b.clone()], 100.0).unwrap();
        assert_eq!(n, 13.0);
        assert_eq!(g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap(), vec![12.0]);
        let n = clip_grad_norm(&mut g, &[a.clone(), b.clone()], 1.3).unwrap();
        assert_eq!(n, 13.0);
        let gb = g.get(b.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        assert!((gb - 1.2).abs() < 1e-6, "{gb}");
    }
}
