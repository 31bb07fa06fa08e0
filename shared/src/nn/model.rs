//! The YOLOv8 network as a graph of [`super::blocks`], built from a model yaml exactly as
//! ultralytics' `parse_model` builds it, and its summary (layers, parameters, gradients, GFLOPs).
//!
//! Building rules copied from `ultralytics/nn/tasks.py::parse_model` (8.4):
//! - the scale row `[depth, width, max_channels]` comes from the requested name (`yolov8s.yaml`);
//! - output channels of Conv/C2f/C3/SPPF/SPP/Bottleneck: `make_divisible(min(c2, max_channels)
//!   · width, 8)`; repeats `max(round(n · depth), 1)` when n > 1 (Python's round: half to even);
//! - `nc` from the dataset overrides the yaml's; a bare `nc` argument means that `nc`;
//! - C2f/C3 take the repeats as their `n`, other modules repeated n times become a
//!   `Sequential` (`model.i.j.*` names);
//! - Detect strides are the input/feature size ratios (8/16/32 for YOLOv8) and its biases are
//!   `Detect.bias_init`.
//!
//! Variable names are ultralytics' state-dict keys (`model.{i}.…`), so `.pt` and safetensors
//! weights load by name. The network is device-generic: every tensor lives on the device of the
//! `VarBuilder` it was built from.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use candle_core::{Result as CResult, Tensor};
use candle_nn::VarBuilder;
use serde_yaml::Value;

use super::blocks::{Bottleneck, C2f, Conv, Detect, HeadOutput, Hw, Spp, Sppf, C3};
use super::head;
use crate::config::model_yaml::{LayerSpec, ModelYaml};
use crate::error::{Error, Result};

/// Default number of DFL bins (ultralytics `reg_max`).
pub const REG_MAX: usize = 16;

/// One built module of the graph.
#[derive(Debug, Clone)]
pub enum Block {
    Conv(Conv),
    C2f(C2f),
    C3(C3),
    Bottleneck(Bottleneck),
    Sppf(Sppf),
    Spp(Spp),
    /// `Concat(1)`: channel concatenation of the `from` layers.
    Concat,
    /// `nn.Upsample(None, 2, "nearest")`.
    Upsample,
    /// A non-repeat module written with repeats > 1: `nn.Sequential` of copies.
    Seq(Vec<Block>),
    Detect(Detect),
}

impl Block {
    fn forward(&self, xs: &[Tensor], train: bool) -> CResult<Tensor> {
        match self {
            Block::Conv(m) => m.forward(&xs[0], train),
            Block::C2f(m) => m.forward(&xs[0], train),
            Block::C3(m) => m.forward(&xs[0], train),
            Block::Bottleneck(m) => m.forward(&xs[0], train),
            Block::Sppf(m) => m.forward(&xs[0], train),
            Block::Spp(m) => m.forward(&xs[0], train),
            Block::Concat => Tensor::cat(xs, 1),
            Block::Upsample => super::ops::upsample_nearest2x(&xs[0]),
            Block::Seq(v) => {
                let mut x = xs[0].clone();
                for b in v {
                    x = b.forward(&[x], train)?;
                }
                Ok(x)
            }
            Block::Detect(_) => candle_core::bail!("Detect is run by YoloModel::forward"),
        }
    }

    /// (MACs, output size) for inputs of sizes `hws`.
    fn macs(&self, hws: &[Hw]) -> (f64, Hw) {
        match self {
            Block::Conv(m) => m.macs(hws[0]),
            Block::C2f(m) => m.macs(hws[0]),
            Block::C3(m) => m.macs(hws[0]),
            Block::Bottleneck(m) => m.macs(hws[0]),
            Block::Sppf(m) => m.macs(hws[0]),
            Block::Spp(m) => m.macs(hws[0]),
            Block::Concat => (0.0, hws[0]),
            Block::Upsample => (0.0, (hws[0].0 * 2, hws[0].1 * 2)),
            Block::Seq(v) => {
                let mut t = 0.0;
                let mut hw = hws[0];
                for b in v {
                    let (m, o) = b.macs(&[hw]);
                    t += m;
                    hw = o;
                }
                (t, hw)
            }
            Block::Detect(d) => (d.macs(hws), hws[0]),
        }
    }

    fn params(&self) -> usize {
        match self {
            Block::Conv(m) => m.params(),
            Block::C2f(m) => m.params(),
            Block::C3(m) => m.params(),
            Block::Bottleneck(m) => m.params(),
            Block::Sppf(m) => m.params(),
            Block::Spp(m) => m.params(),
            Block::Concat | Block::Upsample => 0,
            Block::Seq(v) => v.iter().map(Block::params).sum(),
            Block::Detect(d) => d.params(),
        }
    }

    /// Leaf modules as `named_modules()` counts them (Conv2d, BatchNorm2d, MaxPool2d, Identity…;
    /// the shared SiLU instance is counted once by the model) and whether any uses SiLU.
    fn leaves(&self) -> (usize, bool) {
        fn conv(c: &Conv) -> (usize, bool) {
            // conv + bn, plus its own nn.Identity when act is off (SiLU is one shared module).
            (if c.act { 2 } else { 3 }, c.act)
        }
        fn sum(it: impl IntoIterator<Item = (usize, bool)>) -> (usize, bool) {
            it.into_iter().fold((0, false), |(n, a), (m, b)| (n + m, a || b))
        }
        match self {
            Block::Conv(c) => conv(c),
            Block::Bottleneck(b) => sum([conv(&b.cv1), conv(&b.cv2)]),
            Block::C2f(m) => sum([conv(&m.cv1), conv(&m.cv2)]
                .into_iter()
                .chain(m.m.iter().map(|b| Block::Bottleneck(b.clone()).leaves()))),
            Block::C3(m) => sum([conv(&m.cv1), conv(&m.cv2), conv(&m.cv3)]
                .into_iter()
                .chain(m.m.iter().map(|b| Block::Bottleneck(b.clone()).leaves()))),
            Block::Sppf(m) => sum([conv(&m.cv1), conv(&m.cv2), (1, false)]),
            Block::Spp(m) => sum([conv(&m.cv1), conv(&m.cv2), (m.ks.len(), false)]),
            Block::Concat | Block::Upsample => (1, false),
            Block::Seq(v) => sum(v.iter().map(Block::leaves)),
            Block::Detect(d) => {
                let branches = d.cv2.iter().chain(&d.cv3).map(|b| sum([conv(&b.c0), conv(&b.c1), (1, false)]));
                let (n, a) = sum(branches);
                (n + 1, a) // + dfl.conv
            }
        }
    }
}

/// One row of the graph.
#[derive(Debug, Clone)]
pub struct Layer {
    pub index: usize,
    /// Absolute input layer indices (−1 = the network input, only for layer 0).
    pub from: Vec<i64>,
    /// `from` as ultralytics prints it (`-1`, `[-1, 6]`).
    pub from_text: String,
    /// Repeats after depth scaling.
    pub n: usize,
    /// ultralytics' module type path (`ultralytics.nn.modules.conv.Conv`).
    pub type_name: String,
    /// The arguments the module was built with, printed as ultralytics prints them.
    pub args_text: String,
    pub c_out: usize,
    pub block: Block,
}

/// A YOLOv8 detection network.
#[derive(Debug, Clone)]
pub struct YoloModel {
    pub layers: Vec<Layer>,
    /// Which layers' outputs later layers read (ultralytics `save`).
    save: Vec<bool>,
    pub nc: usize,
    pub reg_max: usize,
    /// Detect strides (8, 16, 32 for YOLOv8).
    pub strides: Vec<f64>,
    /// The yaml the network was built from (with `nc` as built).
    pub yaml: ModelYaml,
}

/// What [`YoloModel::forward_eval`] returns: the decoded predictions and the raw head outputs.
#[derive(Debug, Clone)]
pub struct EvalOutput {
    /// (B, 4 + nc, A): xywh in input pixels + class probabilities (ultralytics' `preds[0]`).
    pub decoded: Tensor,
    pub raw: HeadOutput,
}

/// Model summary numbers, as ultralytics' `model.info()` reports them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    pub name: String,
    pub layers: usize,
    pub parameters: usize,
    pub gradients: usize,
    /// GFLOPs at the requested image size (2 × MACs / 1e9, thop's counting).
    pub gflops: f64,
    pub imgsz: usize,
}

impl Summary {
    /// `YOLOv8n summary: 129 layers, 3,157,200 parameters, 3,157,184 gradients, 8.9 GFLOPs`
    pub fn line(&self) -> String {
        format!(
            "{} summary: {} layers, {} parameters, {} gradients, {:.1} GFLOPs",
            self.name,
            thousands(self.layers),
            thousands(self.parameters),
            thousands(self.gradients),
            self.gflops
        )
    }
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// ultralytics `make_divisible(x, divisor)`: `ceil(x / divisor) * divisor`.
pub fn make_divisible(x: f64, divisor: usize) -> usize {
    ((x / divisor as f64).ceil() as usize) * divisor
}

/// Python 3 `round()` (half to even), which ultralytics' repeat scaling uses.
pub(crate) fn py_round(x: f64) -> i64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        let f = x.floor();
        if (f as i64) % 2 == 0 {
            f as i64
        } else {
            f as i64 + 1
        }
    } else {
        r as i64
    }
}

/// ultralytics' module type path for printing.
fn type_path(module: &str) -> String {
    match module {
        "Conv" => "ultralytics.nn.modules.conv.Conv".into(),
        "Concat" => "ultralytics.nn.modules.conv.Concat".into(),
        "nn.Upsample" => "torch.nn.modules.upsampling.Upsample".into(),
        "Detect" => "ultralytics.nn.modules.head.Detect".into(),
        other => format!("ultralytics.nn.modules.block.{other}"),
    }
}

/// Python repr of a yaml value (for the layer table).
fn py_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{s}'"),
        Value::Sequence(s) => format!("[{}]", s.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        other => format!("{other:?}"),
    }
}

fn list_repr(v: &[Value]) -> String {
    py_repr(&Value::Sequence(v.to_vec()))
}

/// Helpers to read a row's positional arguments with defaults and row-aware errors.
struct Args<'a> {
    spec: &'a LayerSpec,
    yaml: &'a ModelYaml,
    index: usize,
    v: Vec<Value>,
}

impl Args<'_> {
    fn err(&self, msg: String) -> Error {
        let mut e = Error::model(format!("layer {} ({}): {msg}", self.index, self.spec.module))
            .with_file(&self.yaml.origin)
            .with_hint("check the row's arguments against ultralytics' module signature");
        if let Some(l) = self.spec.line {
            e = e.with_line(l);
        }
        e
    }
    fn get(&self, i: usize) -> Option<&Value> {
        self.v.get(i).filter(|v| !v.is_null())
    }
    fn num(&self, i: usize, default: f64) -> Result<f64> {
        match self.get(i) {
            None => Ok(default),
            Some(v) => {
                v.as_f64().ok_or_else(|| self.err(format!("argument {i} must be a number, found {}", py_repr(v))))
            }
        }
    }
    fn usize(&self, i: usize, default: usize) -> Result<usize> {
        let x = self.num(i, default as f64)?;
        if x < 0.0 || x.fract() != 0.0 {
            return Err(self.err(format!("argument {i} must be a whole number >= 0, found {x}")));
        }
        Ok(x as usize)
    }
    fn bool(&self, i: usize, default: bool) -> Result<bool> {
        match self.get(i) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::Number(n)) => Ok(n.as_f64() != Some(0.0)),
            Some(v) => Err(self.err(format!("argument {i} must be True/False, found {}", py_repr(v)))),
        }
    }
    fn kernel_list(&self, i: usize, default: &[usize]) -> Result<Vec<usize>> {
        match self.get(i) {
            None => Ok(default.to_vec()),
            Some(Value::Sequence(s)) => s
                .iter()
                .map(|v| {
                    v.as_u64()
                        .map(|x| x as usize)
                        .ok_or_else(|| self.err(format!("argument {i} must be a list of kernel sizes")))
                })
                .collect(),
            Some(v) => v
                .as_u64()
                .map(|x| vec![x as usize])
                .ok_or_else(|| self.err(format!("argument {i} must be a kernel size or list"))),
        }
    }
}

impl YoloModel {
    /// Build the network of `yaml` with `nc` classes (the dataset's count; overrides the yaml's)
    /// under `vb` (variables `model.{i}.…`). With a `VarBuilder` over a fresh `VarMap` the
    /// variables are created with PyTorch's default init; over loaded weights they are read.
    ///
    /// Use [`YoloModel::seed_init`] afterwards for a reproducible initialisation.
    pub fn new(yaml: &ModelYaml, nc: usize, vb: VarBuilder) -> Result<Self> {
        if nc == 0 {
            return Err(Error::model("nc must be at least 1"));
        }
        if let Some(act) = &yaml.activation {
            let a = act.replace(' ', "");
            if a != "nn.SiLU()" && a != "torch.nn.SiLU()" {
                return Err(Error::model(format!(
                    "activation '{act}' is not supported (kubeyolo builds SiLU networks)"
                ))
                .with_file(&yaml.origin)
                .with_key("activation")
                .with_hint("remove the `activation:` line to use SiLU"));
            }
        }
        let extra: Value = serde_yaml::from_str(&yaml.text).unwrap_or(Value::Null);
        let reg_max = extra.get("reg_max").and_then(Value::as_u64).map(|x| x as usize).unwrap_or(REG_MAX);
        if extra.get("end2end").and_then(Value::as_bool) == Some(true) {
            return Err(Error::model("end2end (NMS-free) heads are not supported")
                .with_file(&yaml.origin)
                .with_key("end2end"));
        }
        let scale = yaml.selected_scale();
        let (depth, width, max_ch) = (scale.depth, scale.width, scale.max_channels as f64);
        let model_vb = vb.pp("model");

        let specs: Vec<&LayerSpec> = yaml.layers().collect();
        let mut ch: Vec<usize> = Vec::new(); // output channels per layer
        let mut stride: Vec<f64> = Vec::new(); // output stride per layer
        let mut layers = Vec::new();
        let mut save = vec![false; specs.len()];
        let mut strides_out = Vec::new();

        for (i, spec) in specs.iter().enumerate() {
            let args = Args { spec, yaml, index: i, v: spec.resolved_args(nc) };
            // Absolute input indices; −1 at layer 0 is the image (3 channels, stride 1).
            let from: Vec<i64> = spec.from.iter().map(|&f| if f < 0 { i as i64 + f } else { f }).collect();
            for &f in &from {
                if f >= i as i64 || (f < 0 && i > 0) || f < -1 {
                    return Err(args.err(format!(
                        "`from` {} does not point at an earlier layer",
                        spec.from.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            for (&rel, &abs) in spec.from.iter().zip(&from) {
                if rel != -1 && abs >= 0 {
                    save[abs as usize] = true;
                }
            }
            let ch_of = |f: i64| if f < 0 { 3 } else { ch[f as usize] };
            let stride_of = |f: i64| if f < 0 { 1.0 } else { stride[f as usize] };
            let c1 = ch_of(from[0]);
            let n0 = spec.repeats.max(1) as f64;
            let n = if spec.repeats > 1 { py_round(n0 * depth).max(1) as usize } else { spec.repeats.max(1) as usize };
            let scaled_c2 = || -> Result<usize> {
                let c2 = args.num(0, f64::NAN)?;
                if !c2.is_finite() || c2 <= 0.0 {
                    return Err(args.err("first argument must be the output channel count".into()));
                }
                Ok(make_divisible(c2.min(max_ch) * width, 8))
            };
            let lvb = model_vb.pp(i);
            let module = spec.module.as_str();
            let mut out_stride = stride_of(from[0]);
            let (block, c2, shown_args): (Block, usize, Vec<Value>) = match module {
                "Conv" | "Bottleneck" | "SPPF" | "SPP" => {
                    let c2 = scaled_c2()?;
                    let rest: Vec<Value> = args.v.iter().skip(1).cloned().collect();
                    let mut shown = vec![Value::from(c1 as u64), Value::from(c2 as u64)];
                    shown.extend(rest);
                    let make = |vb: VarBuilder| -> Result<Block> {
                        Ok(match module {
                            "Conv" => {
                                let k = args.usize(1, 1)?;
                                let s = args.usize(2, 1)?;
                                let p = match args.get(3) {
                                    None => None,
                                    Some(_) => Some(args.usize(3, 0)?),
                                };
                                if args.usize(4, 1)? != 1 || args.usize(5, 1)? != 1 {
                                    return Err(args.err("grouped or dilated Conv is not supported".into()));
                                }
                                let act = args.bool(6, true)?;
                                Block::Conv(Conv::new(vb, c1, c2, k, s, p, act)?)
                            }
                            "Bottleneck" => {
                                let shortcut = args.bool(1, true)?;
                                if args.usize(2, 1)? != 1 {
                                    return Err(args.err("grouped Bottleneck is not supported".into()));
                                }
                                let k = args.kernel_list(3, &[3, 3])?;
                                let k = (k[0], *k.get(1).unwrap_or(&k[0]));
                                let e = args.num(4, 0.5)?;
                                Block::Bottleneck(Bottleneck::new(vb, c1, c2, shortcut, k, e)?)
                            }
                            "SPPF" => {
                                let k = args.usize(1, 5)?;
                                let nn = args.usize(2, 3)?;
                                let shortcut = args.bool(3, false)?;
                                // parse_model: rows with ≤ 3 built args are legacy (SiLU on cv1).
                                let legacy = args.v.len() <= 2;
                                Block::Sppf(Sppf::new(vb, c1, c2, k, nn, shortcut, legacy)?)
                            }
                            _ => Block::Spp(Spp::new(vb, c1, c2, args.kernel_list(1, &[5, 9, 13])?)?),
                        })
                    };
                    if module == "Conv" {
                        out_stride *= (args.usize(2, 1)? as f64).powi(n as i32);
                    }
                    let block = if n > 1 {
                        Block::Seq((0..n).map(|j| make(lvb.pp(j))).collect::<Result<Vec<_>>>()?)
                    } else {
                        make(lvb.clone())?
                    };
                    (block, c2, shown)
                }
                "C2f" | "C3" => {
                    let c2 = scaled_c2()?;
                    let mut shown = vec![Value::from(c1 as u64), Value::from(c2 as u64), Value::from(n as u64)];
                    shown.extend(args.v.iter().skip(1).cloned());
                    if args.usize(2, 1)? != 1 {
                        return Err(args.err("grouped convolutions are not supported".into()));
                    }
                    let block = if module == "C2f" {
                        Block::C2f(C2f::new(lvb.clone(), c1, c2, n, args.bool(1, false)?, args.num(3, 0.5)?)?)
                    } else {
                        Block::C3(C3::new(lvb.clone(), c1, c2, n, args.bool(1, true)?, args.num(3, 0.5)?)?)
                    };
                    (block, c2, shown)
                }
                "Concat" => {
                    if args.usize(0, 1)? != 1 {
                        return Err(args.err("only Concat along channels (dimension 1) is supported".into()));
                    }
                    let c2 = from.iter().map(|&f| ch_of(f)).sum();
                    (Block::Concat, c2, args.v.clone())
                }
                "nn.Upsample" => {
                    let sf = args.num(1, f64::NAN)?;
                    let mode = args.v.get(2).and_then(Value::as_str).unwrap_or("nearest");
                    if args.get(0).is_some() || sf != 2.0 || mode != "nearest" {
                        return Err(args.err("only nn.Upsample(None, 2, 'nearest') is supported".into()));
                    }
                    out_stride /= 2.0;
                    (Block::Upsample, c1, args.v.clone())
                }
                "Detect" => {
                    let dnc = args.usize(0, nc as u64 as usize)?;
                    let dch: Vec<usize> = from.iter().map(|&f| ch_of(f)).collect();
                    let ds: Vec<f64> = from.iter().map(|&f| stride_of(f)).collect();
                    let det = Detect::new(lvb.clone(), dnc, reg_max, &dch, &ds)?;
                    strides_out = ds;
                    let mut shown = args.v.clone();
                    shown.push(Value::from(reg_max as u64));
                    shown.push(Value::Null);
                    shown.push(Value::Sequence(dch.iter().map(|&c| Value::from(c as u64)).collect()));
                    (Block::Detect(det), c1, shown)
                }
                other => {
                    return Err(args.err(format!(
                        "module '{other}' is not supported (kubeyolo builds Conv, C2f, C3, Bottleneck, SPPF, SPP, Concat, nn.Upsample, Detect)"
                    )))
                }
            };
            let from_text = if spec.from_is_list {
                format!("[{}]", spec.from.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
            } else {
                spec.from[0].to_string()
            };
            ch.push(c2);
            stride.push(out_stride);
            layers.push(Layer {
                index: i,
                from,
                from_text,
                n,
                type_name: type_path(module),
                args_text: list_repr(&shown_args),
                c_out: c2,
                block,
            });
        }
        let Some(last) = layers.last() else {
            return Err(Error::model("model yaml has no layers").with_file(&yaml.origin));
        };
        let det_nc = match &last.block {
            Block::Detect(d) => d.nc,
            _ => {
                return Err(Error::model("the last layer of a detection model must be Detect")
                    .with_file(&yaml.origin)
                    .with_hint("end the head with `- [[15, 18, 21], 1, Detect, [nc]]` as in yolov8.yaml"))
            }
        };
        let mut yaml = yaml.clone();
        yaml.nc = det_nc;
        Ok(YoloModel { layers, save, nc: det_nc, reg_max, strides: strides_out, yaml })
    }

    /// The Detect head (the last layer).
    pub fn detect(&self) -> &Detect {
        match &self.layers.last().map(|l| &l.block) {
            Some(Block::Detect(d)) => d,
            _ => unreachable!("YoloModel::new guarantees a Detect last layer"),
        }
    }

    /// Run the backbone and neck, then the head; raw head outputs per level.
    fn run(&self, x: &Tensor, train: bool) -> CResult<HeadOutput> {
        self.run_layers(x, train, &[])
    }

    /// The forward pass; with `train`, the layers flagged in `frozen` run in eval mode (running
    /// statistics, no update), and the output of a frozen layer whose inputs carry no gradient is
    /// detached, so backward stops where torch's would (nothing before it can be trained).
    fn run_layers(&self, x: &Tensor, train: bool, frozen: &[bool]) -> CResult<HeadOutput> {
        let n = self.layers.len();
        let mut outs: Vec<Option<Tensor>> = vec![None; n];
        // whether each layer's output depends on a trainable parameter
        let mut grad = vec![false; n];
        let mut prev = x.clone();
        let last = n - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let inputs: Vec<Tensor> = layer
                .from
                .iter()
                .map(|&f| {
                    if f == i as i64 - 1 || f < 0 {
                        Ok(prev.clone())
                    } else {
                        outs[f as usize]
                            .clone()
                            .ok_or_else(|| candle_core::Error::Msg(format!("layer {f} output not kept")))
                    }
                })
                .collect::<CResult<_>>()?;
            let is_frozen = frozen.get(i).copied().unwrap_or(false);
            // `from` is absolute here; a negative index is the image
            let inputs_grad = layer.from.iter().any(|&f| f >= 0 && grad[f as usize]);
            grad[i] = !is_frozen || inputs_grad;
            let layer_train = train && !is_frozen;
            if i == last {
                if let Block::Detect(d) = &layer.block {
                    return d.forward(&inputs, layer_train);
                }
            }
            let mut y = layer.block.forward(&inputs, layer_train)?;
            if train && !grad[i] {
                y = y.detach();
            }
            if self.save[i] {
                outs[i] = Some(y.clone());
            }
            prev = y;
        }
        candle_core::bail!("network has no Detect layer")
    }

    /// Eval forward timed layer by layer (ultralytics' `profile=True`): (layer index, module
    /// type, milliseconds) per layer, the Detect layer including box decoding.
    pub fn profile_eval(&self, x: &Tensor) -> Result<Vec<(usize, String, f64)>> {
        let mut outs: Vec<Option<Tensor>> = vec![None; self.layers.len()];
        let mut prev = x.clone();
        let mut times = Vec::new();
        for (i, layer) in self.layers.iter().enumerate() {
            let inputs: Vec<Tensor> = layer
                .from
                .iter()
                .map(|&f| {
                    if f == i as i64 - 1 || f < 0 {
                        prev.clone()
                    } else {
                        outs[f as usize].clone().unwrap_or_else(|| prev.clone())
                    }
                })
                .collect();
            let t = std::time::Instant::now();
            if let Block::Detect(d) = &layer.block {
                let raw = d.forward(&inputs, false)?;
                times.push((i, layer.type_name.clone(), t.elapsed().as_secs_f64() * 1e3));
                let t = std::time::Instant::now();
                head::decode(&raw, &d.dfl)?;
                times.push((i, "decode (DFL, anchors, sigmoid)".into(), t.elapsed().as_secs_f64() * 1e3));
                break;
            }
            let y = layer.block.forward(&inputs, false)?;
            times.push((i, layer.type_name.clone(), t.elapsed().as_secs_f64() * 1e3));
            outs[i] = Some(y.clone());
            prev = y;
        }
        Ok(times)
    }

    /// Training forward: BatchNorm uses batch statistics and updates its running statistics.
    /// `x` is (B, 3, H, W) in [0, 1], H and W multiples of the largest stride.
    pub fn forward_train(&self, x: &Tensor) -> Result<HeadOutput> {
        Ok(self.run(x, true)?)
    }

    /// Training forward with the BatchNorm of frozen layers in eval mode, as ultralytics'
    /// `_model_train` sets it (`frozen[i]`: layer `i` is frozen as a whole; see
    /// [`Self::forward_train`] for the rest).
    pub fn forward_train_frozen(&self, x: &Tensor, frozen: &[bool]) -> Result<HeadOutput> {
        Ok(self.run_layers(x, true, frozen)?)
    }

    /// Eval forward (BatchNorm folded, running statistics): decoded (B, 4 + nc, A) predictions
    /// like ultralytics' `model(x)[0]` in eval mode, plus the raw head outputs.
    pub fn forward_eval(&self, x: &Tensor) -> Result<EvalOutput> {
        let raw = self.run(x, false)?;
        let decoded = head::decode(&raw, &self.detect().dfl)?;
        Ok(EvalOutput { decoded, raw })
    }

    /// ultralytics `model.info()` numbers at `imgsz` (GFLOPs extrapolated exactly like thop:
    /// conv MACs + 4 per BatchNorm element, ×2).
    pub fn summary(&self, imgsz: usize) -> Summary {
        let mut hw_out: Vec<Hw> = Vec::new();
        let mut macs = 0.0;
        let mut leaves = 0;
        let mut any_act = false;
        let mut params = 0;
        for (i, l) in self.layers.iter().enumerate() {
            let hws: Vec<Hw> =
                l.from.iter().map(|&f| if f < 0 { (imgsz, imgsz) } else { hw_out[f as usize] }).collect();
            let (m, o) = l.block.macs(&hws);
            macs += m;
            hw_out.push(o);
            let (n, a) = l.block.leaves();
            leaves += n;
            any_act |= a;
            params += l.block.params();
            let _ = i;
        }
        let name = self.yaml.display_name().replace("yolo", "YOLO");
        Summary {
            name: if name.is_empty() { "Model".into() } else { name },
            layers: leaves + usize::from(any_act),
            parameters: params,
            gradients: params - self.reg_max,
            gflops: 2.0 * macs / 1e9,
            imgsz,
        }
    }

    /// The layer table ultralytics prints while building (`from  n  params  module  arguments`)
    /// followed by the summary line.
    pub fn summary_table(&self, imgsz: usize) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{:>3}{:>20}{:>3}{:>10}  {:<45}{:<30}", "", "from", "n", "params", "module", "arguments");
        for l in &self.layers {
            let _ = writeln!(
                s,
                "{:>3}{:>20}{:>3}{:>10}  {:<45}{:<30}",
                l.index,
                l.from_text,
                l.n,
                l.block.params(),
                l.type_name,
                l.args_text
            );
        }
        let _ = write!(s, "{}", self.summary(imgsz).line());
        s
    }

    /// Per layer, whether a later layer (other than the next) reads its output.
    pub(crate) fn save_flags(&self) -> &[bool] {
        &self.save
    }

    /// Largest stride (32 for YOLOv8): input sizes must be multiples of it.
    pub fn max_stride(&self) -> usize {
        self.strides.iter().cloned().fold(32.0, f64::max) as usize
    }

    /// ultralytics' `check_imgsz`: `imgsz` rounded up to a multiple of the max stride (at least
    /// one stride), with a warning naming the setting (`what`: `imgsz`, `--imgsz`) when it changes.
    pub fn check_imgsz(&self, imgsz: usize, what: &str) -> usize {
        let stride = self.max_stride();
        let r = imgsz.max(stride).div_ceil(stride) * stride;
        if r != imgsz {
            eprintln!("warning: {what} {imgsz} must be a multiple of max stride {stride}, updating to {r}");
        }
        r
    }

    /// Re-draw every convolution weight from a seeded generator (PyTorch's default
    /// U(±1/√fan_in)), so two runs with the same seed start from identical weights — candle's
    /// own initialisers use an unseedable thread RNG on CPU. BatchNorm, biases and the DFL keep
    /// their fixed initial values.
    pub fn seed_init(&self, varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
        use rand::{Rng, SeedableRng};
        let data = varmap.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for name in names {
            let var = &data[name];
            let dims = var.dims();
            if dims.len() != 4 || name.ends_with("dfl.conv.weight") {
                continue;
            }
            let fan_in: usize = dims[1..].iter().product();
            let b = 1.0 / (fan_in.max(1) as f64).sqrt();
            let vals: Vec<f32> = (0..var.elem_count()).map(|_| rng.gen_range(-b..b) as f32).collect();
            let t = Tensor::from_vec(vals, dims, var.device())?.to_dtype(var.dtype())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// Names of every variable the network has, in a stable order (ultralytics' state-dict keys
    /// minus `num_batches_tracked`).
    pub fn variable_names(varmap: &candle_nn::VarMap) -> BTreeSet<String> {
        varmap.data().lock().map(|d| d.keys().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_and_divisible() {
        assert_eq!(py_round(0.99), 1);
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
        assert_eq!(py_round(1.98), 2);
        assert_eq!(make_divisible(16.0, 8), 16);
        assert_eq!(make_divisible(64.0 * 0.25, 8), 16);
        assert_eq!(make_divisible(1024.0 * 0.25, 8), 256);
        assert_eq!(make_divisible(768.0 * 0.75, 8), 576);
        assert_eq!(thousands(3157200), "3,157,200");
    }

    /// Frozen layers keep their BatchNorm statistics and get no gradient; the rest train.
    #[test]
    fn frozen_layers_run_in_eval_mode_and_stop_the_gradient() {
        use candle_nn::VarMap;
        let yaml = ModelYaml::builtin("yolov8n.yaml").unwrap();
        let vm = VarMap::new();
        let m =
            YoloModel::new(&yaml, 2, VarBuilder::from_varmap(&vm, candle_core::DType::F32, &candle_core::Device::Cpu))
                .unwrap();
        m.seed_init(&vm, 0).unwrap();
        let get = |name: &str| {
            vm.data().lock().unwrap().get(name).unwrap().as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (mean0, mean1) = (get("model.0.bn.running_mean"), get("model.1.bn.running_mean"));
        let x = Tensor::rand(0f32, 1f32, (2, 3, 64, 64), &candle_core::Device::Cpu).unwrap();
        let mut frozen = vec![false; m.layers.len()];
        frozen[0] = true;
        let out = m.forward_train_frozen(&x, &frozen).unwrap();
        assert_eq!(get("model.0.bn.running_mean"), mean0, "a frozen layer's statistics must not move");
        assert_ne!(get("model.1.bn.running_mean"), mean1, "a trained layer's statistics move");
        let loss = out
            .box_levels
            .iter()
            .chain(&out.cls_levels)
            .map(|t| t.sqr().unwrap().sum_all().unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        let g = loss.backward().unwrap();
        let var = |name: &str| vm.data().lock().unwrap().get(name).unwrap().as_tensor().clone();
        assert!(g.get(&var("model.0.conv.weight")).is_none(), "backward must stop at the frozen prefix");
        assert!(g.get(&var("model.1.conv.weight")).is_some());
    }

    /// Numbers printed by ultralytics 8.4 `DetectionModel("yolov8{s}.yaml").info()` (GFLOPs
    /// unrounded from `get_flops`), nc = 80.
    #[test]
    fn summary_matches_ultralytics_for_every_scale() {
        let expected = [
            ("n", 129, 3_157_200, 3_157_184, 8.8550912),
            ("s", 129, 11_166_560, 11_166_544, 28.8119296),
            ("m", 169, 25_902_640, 25_902_624, 79.313664),
            ("l", 209, 43_691_520, 43_691_504, 165.734656),
            ("x", 209, 68_229_648, 68_229_632, 258.5370112),
        ];
        for (s, layers, params, grads, gflops) in expected {
            let yaml = ModelYaml::builtin(&format!("yolov8{s}.yaml")).unwrap();
            let vb = VarBuilder::zeros(candle_core::DType::F32, &candle_core::Device::Cpu);
            let m = YoloModel::new(&yaml, 80, vb).unwrap();
            let sm = m.summary(640);
            assert_eq!((sm.layers, sm.parameters, sm.gradients), (layers, params, grads), "yolov8{s}");
            assert!((sm.gflops - gflops).abs() < 1e-6, "yolov8{s}: {} vs {gflops}", sm.gflops);
            assert_eq!(m.strides, vec![8.0, 16.0, 32.0]);
        }
        let yaml = ModelYaml::builtin("yolov8n.yaml").unwrap();
        let m =
            YoloModel::new(&yaml, 80, VarBuilder::zeros(candle_core::DType::F32, &candle_core::Device::Cpu)).unwrap();
        assert_eq!(
            m.summary(640).line(),
            "YOLOv8n summary: 129 layers, 3,157,200 parameters, 3,157,184 gradients, 8.9 GFLOPs"
        );
        let t = m.summary_table(640);
        assert!(
            t.contains(
                "  2                  -1  1      7360  ultralytics.nn.modules.block.C2f             [32, 32, 1, True]"
            ),
            "{t}"
        );
        assert!(t.contains("[80, 16, None, [64, 128, 256]]"), "{t}");
    }
}
