//! The optimizers ultralytics trains with — SGD (momentum, Nesterov, weight decay), Adam and
//! AdamW — over ultralytics' three parameter groups.
//!
//! Why not candle_nn's: its `SGD` has no momentum, Nesterov or weight decay, and its `AdamW`
//! applies one decay to every variable. ultralytics' `BaseTrainer.build_optimizer` splits the
//! parameters into three groups, each with its own learning rate during warm-up:
//!
//! | group | which parameters | weight decay |
//! |---|---|---|
//! | 0 [`ParamGroup::Weight`] | conv / linear weights | `decay` |
//! | 1 [`ParamGroup::Bn`] | normalization-layer weights | 0 |
//! | 2 [`ParamGroup::Bias`] | every parameter whose name contains `bias` | 0 |
//!
//! The update rules are PyTorch's (`torch.optim.SGD`, `Adam`, `AdamW`, default `eps = 1e-8`,
//! `dampening = 0`), so the same hyper-parameters give the same trajectory. `decay` is taken as
//! given: ultralytics scales `weight_decay` by `batch · accumulate / nbs` *before* building the
//! optimizer, and that scaling is the trainer's job. ultralytics 8.4's `optimizer=auto` picks
//! `MuSGD` for runs over 10 000 iterations; MuSGD is not implemented here.
//!
//! Updates are written with candle tensor ops, so they run on any device.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::{Error, Result};

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// `torch.optim.SGD(momentum, nesterov=True)` with L2 weight decay added to the gradient.
    Sgd,
    /// `torch.optim.Adam(betas=(momentum, 0.999))`, weight decay as L2 on the gradient.
    Adam,
    /// `torch.optim.AdamW(betas=(momentum, 0.999))`, decoupled weight decay.
    AdamW,
}

impl OptimizerKind {
    /// Parses ultralytics' `optimizer` cfg value (case-insensitive). `auto` is resolved by the
    /// trainer (it depends on the iteration count and class count), not here.
    pub fn parse(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "sgd" => Ok(Self::Sgd),
            "adam" => Ok(Self::Adam),
            "adamw" => Ok(Self::AdamW),
            other => Err(Error::config(format!("optimizer '{other}' is not supported"))
                .with_hint("use SGD, Adam or AdamW (or auto)")),
        }
    }
}

/// ultralytics' parameter groups, in its order (the index is the group's position).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ParamGroup {
    /// Conv weights: decayed.
    Weight = 0,
    /// BatchNorm weights: not decayed.
    Bn = 1,
    /// Biases (conv and BatchNorm): not decayed, own warm-up learning rate.
    Bias = 2,
}

impl ParamGroup {
    pub const ALL: [ParamGroup; 3] = [ParamGroup::Weight, ParamGroup::Bn, ParamGroup::Bias];

    /// The group of a parameter from its ultralytics state-dict name and rank, as
    /// `build_optimizer` decides it: `bias` in the name → Bias; a weight of a normalization
    /// layer (in YOLOv8 the only 1-D weights; also any name with `.bn.`) → Bn; else Weight.
    pub fn of(name: &str, rank: usize) -> Self {
        if name.contains("bias") {
            ParamGroup::Bias
        } else if rank == 1 || name.contains(".bn.") || name.starts_with("bn.") {
            ParamGroup::Bn
        } else {
            ParamGroup::Weight
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
    /// SGD momentum, or Adam's β1.
    pub momentum: f64,
    pub weight_decay: f64,
}

struct Param {
    name: String,
    var: Var,
    group: ParamGroup,
    /// SGD: momentum buffer. Adam: first moment.
    m: Option<Tensor>,
    /// Adam: second moment.
    v: Option<Tensor>,
    /// Adam: number of updates this parameter received (its bias correction).
    steps: i32,
}

/// An optimizer over named variables in ultralytics' three groups.
pub struct Optimizer {
    kind: OptimizerKind,
    params: Vec<Param>,
    groups: [GroupHyp; 3],
    beta2: f64,
    eps: f64,
}

impl Optimizer {
    /// Builds the optimizer as `build_optimizer(model, name, lr, momentum, decay)` does: every
    /// group starts at `lr` and `momentum`; group 0 has weight decay `decay`, groups 1–2 none.
    /// Buffers (`running_mean`, `running_var`) are skipped. Names are sorted, so the order (and
    /// thus floating-point results) does not depend on hash-map order.
    pub fn new(kind: OptimizerKind, vars: impl IntoIterator<Item = (String, Var)>, lr: f64, momentum: f64, decay: f64) -> Self {
        let mut params: Vec<Param> = vars
            .into_iter()
            .filter(|(n, _)| !is_buffer(n))
            .map(|(name, var)| {
                let group = ParamGroup::of(&name, var.rank());
                Param { name, var, group, m: None, v: None, steps: 0 }
            })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        let g = |wd| GroupHyp { lr, momentum, weight_decay: wd };
        Optimizer { kind, params, groups: [g(decay), g(0.0), g(0.0)], beta2: 0.999, eps: 1e-8 }
    }

    /// All trainable variables of a `VarMap` (its buffers are skipped).
    pub fn from_varmap(kind: OptimizerKind, varmap: &candle_nn::VarMap, lr: f64, momentum: f64, decay: f64) -> Result<Self> {
        let data = varmap.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
        let vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Self::new(kind, vars, lr, momentum, decay))
    }

    pub fn kind(&self) -> OptimizerKind {
        self.kind
    }

    /// Number of parameters (tensors) in each group, in ultralytics' order (weight, bn, bias).
    pub fn group_sizes(&self) -> [usize; 3] {
        let mut n = [0; 3];
        for p in &self.params {
            n[p.group as usize] += 1;
        }
        n
    }

    /// The group a named parameter belongs to (None for unknown names and buffers).
    pub fn group_of(&self, name: &str) -> Option<ParamGroup> {
        self.params.iter().find(|p| p.name == name).map(|p| p.group)
    }

    pub fn hyp(&self, g: ParamGroup) -> GroupHyp {
        self.groups[g as usize]
    }
    pub fn set_lr(&mut self, g: ParamGroup, lr: f64) {
        self.groups[g as usize].lr = lr;
    }
    /// SGD momentum (ultralytics warms it up), or Adam's β1.
    pub fn set_momentum(&mut self, g: ParamGroup, momentum: f64) {
        self.groups[g as usize].momentum = momentum;
    }
    pub fn set_weight_decay(&mut self, g: ParamGroup, wd: f64) {
        self.groups[g as usize].weight_decay = wd;
    }

    /// The optimizer state as named tensors (`<param>.m`, `<param>.v`, `<param>.steps` as f32),
    /// for checkpoints; parameters with no update yet are absent.
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
            }
        }
        Ok(out)
    }

    /// Restores what [`Self::state_tensors`] saved (unknown names are ignored).
    pub fn load_state_tensors(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        for p in &mut self.params {
            if let Some(m) = state.get(&format!("{}.m", p.name)) {
                p.m = Some(m.to_device(p.var.device())?);
            }
            if let Some(v) = state.get(&format!("{}.v", p.name)) {
                p.v = Some(v.to_device(p.var.device())?);
            }
            if let Some(s) = state.get(&format!("{}.steps", p.name)) {
                p.steps = s.flatten_all()?.to_vec1::<f32>()?.first().copied().unwrap_or(0.0) as i32;
            }
        }
        Ok(())
    }

    /// One update from the gradients of a `backward()`. Parameters without a gradient (frozen,
    /// e.g. the DFL conv, or unused) are left alone, as PyTorch does for `grad is None`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        let (kind, beta2, eps) = (self.kind, self.beta2, self.eps);
        for p in &mut self.params {
            let Some(grad) = grads.get(p.var.as_tensor()) else { continue };
            // Detached: arithmetic on the variable itself would record an autograd graph, and the
            // momentum buffers would then chain every step's graph (gradients included) to the
            // next one — a leak of ~60 MB per yolov8n step.
            let grad = &grad.detach();
            let h = self.groups[p.group as usize];
            let w = &p.var.as_tensor().detach();
            let new_w = match kind {
                OptimizerKind::Sgd => {
                    // torch: g += wd·w; buf = μ·buf + g (buf = g at first); g += μ·buf (Nesterov).
                    let g = if h.weight_decay != 0.0 { (grad + (w * h.weight_decay)?)? } else { grad.clone() };
                    let buf = match &p.m {
                        Some(b) => ((b * h.momentum)? + &g)?,
                        None => g.clone(),
                    };
                    let g = (g + (&buf * h.momentum)?)?;
                    p.m = Some(buf);
                    (w - (g * h.lr)?)?
                }
                OptimizerKind::Adam | OptimizerKind::AdamW => {
                    let b1 = h.momentum;
                    let (w, g) = if kind == OptimizerKind::AdamW {
                        let w = if h.weight_decay != 0.0 { (w * (1.0 - h.lr * h.weight_decay))? } else { w.clone() };
                        (w, grad.clone())
                    } else if h.weight_decay != 0.0 {
                        (w.clone(), (grad + (w * h.weight_decay)?)?)
                    } else {
                        (w.clone(), grad.clone())
                    };
                    let m = match &p.m {
                        Some(m) => ((m * b1)? + (&g * (1.0 - b1))?)?,
                        None => (&g * (1.0 - b1))?,
                    };
                    let g2 = g.sqr()?;
                    let v = match &p.v {
                        Some(v) => ((v * beta2)? + (g2 * (1.0 - beta2))?)?,
                        None => (g2 * (1.0 - beta2))?,
                    };
                    p.steps += 1;
                    let bc1 = 1.0 - b1.powi(p.steps);
                    let bc2 = 1.0 - beta2.powi(p.steps);
                    // torch: denom = √v / √bc2 + eps; w -= (lr / bc1) · m / denom.
                    let denom = ((v.sqrt()? / bc2.sqrt())? + eps)?;
                    let upd = (m.div(&denom)? * (h.lr / bc1))?;
                    p.m = Some(m);
                    p.v = Some(v);
                    (w - upd)?
                }
            };
            p.var.set(&new_w)?;
        }
        Ok(())
    }
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
        for kind in [OptimizerKind::Sgd, OptimizerKind::Adam, OptimizerKind::AdamW] {
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
        for (kind, wd) in [(OptimizerKind::Sgd, 0.0), (OptimizerKind::Sgd, 0.05), (OptimizerKind::Adam, 0.05), (OptimizerKind::AdamW, 0.05)] {
            let got = run(kind, wd);
            for (i, w0) in [1.0f64, -2.0].iter().enumerate() {
                let want = match kind {
                    OptimizerKind::Sgd => sgd_ref(*w0, 0.1, 0.9, wd),
                    OptimizerKind::Adam => adam_ref(*w0, 0.1, 0.9, wd, false),
                    OptimizerKind::AdamW => adam_ref(*w0, 0.1, 0.9, wd, true),
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
}
