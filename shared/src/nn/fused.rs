//! The network in eval mode, folded once: every Conv's BatchNorm folded into its weights and
//! bias (ultralytics' `fuse()`), each Conv one kernel ([`FoldedConv`]: GEMM + bias + SiLU +
//! shortcut in one pass), C2f / SPPF / Detect writing straight into their concatenation
//! buffers, and the box decoding (DFL, anchors, sigmoid) on plain slices.
//!
//! Why: `YoloModel::forward_eval` re-folds BatchNorm on every call and runs each layer as
//! several candle ops with a full pass over the activation each; prediction took 1.8–2.4×
//! ultralytics' time (issue 15). [`EvalNet`] is what prediction, `yolo-test` and the trainer's
//! per-epoch validation run: this folded network on CPU (f32), candle's eval forward elsewhere.
//!
//! Parallelism: one image at a time, each conv's tiles spread over the threads (batch 1,
//! prediction); or, when the batch has at least as many images as threads, one image per
//! thread with serial convs (validation batches).

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use super::blocks::{Bottleneck, Conv, Detect, DetectBranch, HeadOutput, Hw};
use super::cpu::channel_ops::{max_pool_plane_fast, upsample2x_plane};
use super::cpu::conv::threads;
use super::cpu::fastmath::{dfl_side, multiversioned, sigmoid, uninit_f32};
use super::cpu::infer::{FoldedConv, Par, Rows};
use super::model::{Block, YoloModel};

/// One image's activation: (C, H, W).
struct Act {
    c: usize,
    hw: Hw,
    data: Vec<f32>,
}

impl Act {
    fn new(c: usize, hw: Hw) -> Self {
        // Fully written by the op that creates it.
        Act { c, hw, data: uninit_f32(c * hw.0 * hw.1) }
    }
    fn plane(&self) -> usize {
        self.hw.0 * self.hw.1
    }
}

/// A tensor's values as host f32, flattened (weights to fold, input batches).
fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

fn fold(cv: &Conv) -> Result<FoldedConv> {
    let (w, b) = cv.fused()?;
    Ok(FoldedConv::new((cv.c1, cv.c2, cv.k), (cv.s, cv.p), cv.act, host(&w)?, host(&b)?))
}

/// `Bottleneck`: cv2(cv1(x)) (+ x).
struct FBottleneck {
    cv1: FoldedConv,
    cv2: FoldedConv,
    add: bool,
}

impl FBottleneck {
    fn new(b: &Bottleneck) -> Result<Self> {
        Ok(FBottleneck { cv1: fold(&b.cv1)?, cv2: fold(&b.cv2)?, add: b.add })
    }
    /// `x` (C, H, W) → `y` (cv2.o, H, W); both convs keep the size (stride 1, "same" padding).
    fn run(&self, x: &[f32], hw: Hw, y: &mut [f32], par: Par) {
        let mut t = uninit_f32(self.cv1.o * hw.0 * hw.1);
        self.cv1.run(x, hw, &mut t, None, par);
        self.cv2.run(&t, hw, y, self.add.then_some(x), par);
    }
}

/// Runs `f(plane index, output plane, input plane)` over channel planes, in parallel for
/// `Par::Tiles`.
fn per_plane(
    ys: &mut [f32],
    xs: &[f32],
    (ylen, xlen): (usize, usize),
    par: Par,
    f: impl Fn(&mut [f32], &[f32]) + Sync,
) {
    if par == Par::Tiles {
        ys.par_chunks_mut(ylen).zip(xs.par_chunks(xlen)).for_each(|(y, x)| f(y, x));
    } else {
        ys.chunks_mut(ylen).zip(xs.chunks(xlen)).for_each(|(y, x)| f(y, x));
    }
}

enum Op {
    Conv(FoldedConv),
    Bottleneck(FBottleneck),
    /// C2f: split width `c`, cv1, Bottlenecks, cv2.
    C2f {
        c: usize,
        cv1: FoldedConv,
        m: Vec<FBottleneck>,
        cv2: FoldedConv,
    },
    C3 {
        cv1: FoldedConv,
        cv2: FoldedConv,
        cv3: FoldedConv,
        m: Vec<FBottleneck>,
    },
    /// SPPF: cv1, `n` chained k×k max pools, cv2 (+ x).
    Sppf {
        cv1: FoldedConv,
        cv2: FoldedConv,
        k: usize,
        n: usize,
        add: bool,
    },
    Spp {
        cv1: FoldedConv,
        cv2: FoldedConv,
        ks: Vec<usize>,
    },
    Concat,
    Upsample,
    Seq(Vec<Op>),
}

impl Op {
    fn new(b: &Block) -> Result<Option<Self>> {
        let bottlenecks = |m: &[Bottleneck]| m.iter().map(FBottleneck::new).collect::<Result<Vec<_>>>();
        Ok(Some(match b {
            Block::Conv(c) => Op::Conv(fold(c)?),
            Block::Bottleneck(b) => Op::Bottleneck(FBottleneck::new(b)?),
            Block::C2f(m) => Op::C2f { c: m.c, cv1: fold(&m.cv1)?, m: bottlenecks(&m.m)?, cv2: fold(&m.cv2)? },
            Block::C3(m) => {
                Op::C3 { cv1: fold(&m.cv1)?, cv2: fold(&m.cv2)?, cv3: fold(&m.cv3)?, m: bottlenecks(&m.m)? }
            }
            Block::Sppf(m) => Op::Sppf { cv1: fold(&m.cv1)?, cv2: fold(&m.cv2)?, k: m.k, n: m.n, add: m.add },
            Block::Spp(m) => Op::Spp { cv1: fold(&m.cv1)?, cv2: fold(&m.cv2)?, ks: m.ks.clone() },
            Block::Concat => Op::Concat,
            Block::Upsample => Op::Upsample,
            Block::Seq(v) => Op::Seq(v.iter().map(Op::new).collect::<Result<Option<Vec<_>>>>()?.unwrap_or_default()),
            Block::Detect(_) => return Ok(None),
        }))
    }

    fn conv(cv: &FoldedConv, x: &Act, par: Par) -> Act {
        let mut y = Act::new(cv.o, cv.out_hw(x.hw));
        cv.run(&x.data, x.hw, &mut y.data, None, par);
        y
    }

    fn run(&self, xs: &[&Act], par: Par) -> Act {
        let x = xs[0];
        match self {
            Op::Conv(cv) => Self::conv(cv, x, par),
            Op::Bottleneck(b) => {
                let mut y = Act::new(b.cv2.o, x.hw);
                b.run(&x.data, x.hw, &mut y.data, par);
                y
            }
            Op::C2f { c, cv1, m, cv2 } => {
                // cv1 and every Bottleneck write into one (2 + n)·c-channel buffer; the halves
                // of cv1's output are its first two c-channel slices.
                let cp = c * x.plane();
                let mut buf = Act::new((2 + m.len()) * c, x.hw);
                cv1.run(&x.data, x.hw, &mut buf.data[..2 * cp], None, par);
                for (i, b) in m.iter().enumerate() {
                    let (done, rest) = buf.data.split_at_mut((2 + i) * cp);
                    b.run(&done[(1 + i) * cp..], x.hw, &mut rest[..cp], par);
                }
                Self::conv(cv2, &buf, par)
            }
            Op::C3 { cv1, cv2, cv3, m } => {
                let half = cv1.o * x.plane();
                let mut buf = Act::new(cv1.o + cv2.o, x.hw);
                let mut a = Self::conv(cv1, x, par);
                for b in m {
                    let mut y = Act::new(b.cv2.o, x.hw);
                    b.run(&a.data, x.hw, &mut y.data, par);
                    a = y;
                }
                buf.data[..half].copy_from_slice(&a.data);
                cv2.run(&x.data, x.hw, &mut buf.data[half..], None, par);
                Self::conv(cv3, &buf, par)
            }
            Op::Sppf { cv1, cv2, k, n, add } => {
                let cp = cv1.o * x.plane();
                let mut buf = Act::new((n + 1) * cv1.o, x.hw);
                cv1.run(&x.data, x.hw, &mut buf.data[..cp], None, par);
                for i in 0..*n {
                    let (done, rest) = buf.data.split_at_mut((i + 1) * cp);
                    per_plane(&mut rest[..cp], &done[i * cp..], (x.plane(), x.plane()), par, |y, xp| {
                        max_pool_plane_fast(xp, y, &mut uninit_f32(xp.len()), x.hw, *k)
                    });
                }
                let mut y = Act::new(cv2.o, x.hw);
                cv2.run(&buf.data, x.hw, &mut y.data, add.then_some(&x.data[..]), par);
                y
            }
            Op::Spp { cv1, cv2, ks } => {
                let cp = cv1.o * x.plane();
                let mut buf = Act::new((ks.len() + 1) * cv1.o, x.hw);
                cv1.run(&x.data, x.hw, &mut buf.data[..cp], None, par);
                for (i, &k) in ks.iter().enumerate() {
                    let (first, rest) = buf.data.split_at_mut(cp);
                    per_plane(&mut rest[i * cp..(i + 1) * cp], first, (x.plane(), x.plane()), par, |y, xp| {
                        max_pool_plane_fast(xp, y, &mut uninit_f32(xp.len()), x.hw, k)
                    });
                }
                Self::conv(cv2, &buf, par)
            }
            Op::Concat => {
                let mut y = Act::new(xs.iter().map(|a| a.c).sum(), x.hw);
                let mut at = 0;
                for a in xs {
                    y.data[at..at + a.data.len()].copy_from_slice(&a.data);
                    at += a.data.len();
                }
                y
            }
            Op::Upsample => {
                let mut y = Act::new(x.c, (2 * x.hw.0, 2 * x.hw.1));
                per_plane(&mut y.data, &x.data, (4 * x.plane(), x.plane()), par, |yp, xp| {
                    upsample2x_plane(xp, yp, x.hw.1)
                });
                y
            }
            Op::Seq(v) => {
                let mut a = v[0].run(&[x], par);
                for op in &v[1..] {
                    a = op.run(&[&a], par);
                }
                a
            }
        }
    }
}

/// The Detect head: per level a box branch (4·reg_max outputs) and a class branch (nc).
/// Both branches' first 3×3 convs read the same input, so they run as one conv with the two
/// weight sets stacked (`first`: box channels, then class channels): one GEMM with more rows
/// instead of two, and its output's two channel slices feed the branches' second convs.
struct FDetect {
    first: Vec<FoldedConv>,
    /// Per level: box branch (second conv, 1×1 conv), class branch (same).
    rest: Vec<[[FoldedConv; 2]; 2]>,
    nc: usize,
    reg_max: usize,
    strides: Vec<f64>,
}

fn last_conv(b: &DetectBranch) -> Result<FoldedConv> {
    Ok(FoldedConv::new((b.c2.c1, b.c2.c2, 1), (1, 0), false, host(&b.c2.weight)?, host(&b.c2.bias)?))
}

impl FDetect {
    fn new(d: &Detect) -> Result<Self> {
        let mut first = Vec::new();
        let mut rest = Vec::new();
        for (bx, cl) in d.cv2.iter().zip(&d.cv3) {
            let (wa, ba) = bx.c0.fused()?;
            let (wb, bb) = cl.c0.fused()?;
            let (w, bias) = ([host(&wa)?, host(&wb)?].concat(), [host(&ba)?, host(&bb)?].concat());
            first.push(FoldedConv::new((bx.c0.c1, bx.c0.c2 + cl.c0.c2, bx.c0.k), (bx.c0.s, bx.c0.p), true, w, bias));
            rest.push([[fold(&bx.c1)?, last_conv(bx)?], [fold(&cl.c1)?, last_conv(cl)?]]);
        }
        Ok(FDetect { first, rest, nc: d.nc, reg_max: d.reg_max, strides: d.strides.clone() })
    }

    fn outputs(&self) -> usize {
        4 * self.reg_max + self.nc
    }

    /// The raw head output (4·reg_max + nc, A): each branch's last conv writes its rows'
    /// columns of its level directly (anchors level by level, row-major within a level).
    fn run(&self, xs: &[&Act], par: Par) -> Vec<f32> {
        let a: usize = xs.iter().map(|x| x.plane()).sum();
        let mut raw = uninit_f32(self.outputs() * a);
        let mut off = 0;
        for (i, x) in xs.iter().enumerate() {
            let both = Op::conv(&self.first[i], x, par);
            let split = self.rest[i][0][0].c * x.plane();
            for (k, (input, row0)) in
                [(&both.data[..split], 0), (&both.data[split..], 4 * self.reg_max)].into_iter().enumerate()
            {
                let [second, last] = &self.rest[i][k];
                let mut t = Act::new(second.o, x.hw);
                second.run(input, x.hw, &mut t.data, None, par);
                last.run_rows(&t.data, t.hw, Rows::of(&mut raw[row0 * a + off..], a), None, par);
            }
            off += x.plane();
        }
        raw
    }

    /// ultralytics' eval decoding of one image's raw output: DFL expectation, `dist2bbox`
    /// (xywh) × stride, sigmoid class scores → (4 + nc, A).
    fn decode(&self, raw: &[f32], shapes: &[Hw], par: Par) -> Vec<f32> {
        let a: usize = shapes.iter().map(|s| s.0 * s.1).sum();
        let r = self.reg_max;
        // Distances per side (l, t, r, b), in grid cells.
        let mut dist = vec![0f32; 4 * a];
        let side_dist = |side: usize, d: &mut [f32]| {
            if r == 1 {
                d.copy_from_slice(&raw[side * a..(side + 1) * a]);
                return;
            }
            dfl_side(&raw[side * r * a..(side + 1) * r * a], d);
        };
        if par == Par::Tiles {
            dist.par_chunks_exact_mut(a).enumerate().for_each(|(side, d)| side_dist(side, d));
        } else {
            dist.chunks_exact_mut(a).enumerate().for_each(|(side, d)| side_dist(side, d));
        }
        let mut out = uninit_f32((4 + self.nc) * a);
        let (boxes, probs) = out.split_at_mut(4 * a);
        let mut i = 0;
        for (&(h, w), &s) in shapes.iter().zip(&self.strides) {
            let s = s as f32;
            for y in 0..h {
                for x in 0..w {
                    let (ax, ay) = (x as f32 + 0.5, y as f32 + 0.5);
                    let (x1, y1) = (ax - dist[i], ay - dist[a + i]);
                    let (x2, y2) = (ax + dist[2 * a + i], ay + dist[3 * a + i]);
                    boxes[i] = (x1 + x2) / 2.0 * s;
                    boxes[a + i] = (y1 + y2) / 2.0 * s;
                    boxes[2 * a + i] = (x2 - x1) * s;
                    boxes[3 * a + i] = (y2 - y1) * s;
                    i += 1;
                }
            }
        }
        per_plane(probs, &raw[4 * r * a..], (a, a), par, sigmoid_row);
        out
    }
}

/// `p = sigmoid(z)` element-wise (multiversioned, so `exp`'s fused multiply-adds are
/// instructions).
#[inline(always)]
fn sigmoid_row_gen(p: &mut [f32], z: &[f32]) {
    p.iter_mut().zip(z).for_each(|(p, &z)| *p = sigmoid(z));
}
multiversioned!(fn sigmoid_row = sigmoid_row_gen / sigmoid_row_avx2(p: &mut [f32], z: &[f32]) -> ());

/// A [`YoloModel`] folded for CPU inference.
pub struct FusedModel {
    /// Per layer: absolute `from` indices (−1 = input) and the op; Detect is last.
    layers: Vec<(Vec<i64>, Op, String)>,
    save: Vec<bool>,
    detect: FDetect,
    detect_from: Vec<i64>,
}

/// A batch's eval outputs, as [`YoloModel::forward_eval`] gives them.
pub struct FusedOutput {
    /// (B, 4 + nc, A): xywh in input pixels + class probabilities.
    pub decoded: Tensor,
    /// (B, 4·reg_max + nc, A): the raw head output, all levels.
    pub head: Tensor,
    pub level_shapes: Vec<Hw>,
}

impl FusedModel {
    /// Folds `model` (any device; the folded copy lives on the CPU).
    pub fn new(model: &YoloModel) -> Result<Self> {
        let mut layers = Vec::new();
        let mut detect = None;
        let mut detect_from = Vec::new();
        for l in &model.layers {
            match Op::new(&l.block)? {
                Some(op) => layers.push((l.from.clone(), op, l.type_name.clone())),
                None => {
                    if let Block::Detect(d) = &l.block {
                        detect = Some(FDetect::new(d)?);
                        detect_from = l.from.clone();
                    }
                }
            }
        }
        let Some(detect) = detect else { candle_core::bail!("network has no Detect layer") };
        Ok(FusedModel { layers, save: model.save_flags().to_vec(), detect, detect_from })
    }

    /// One image (3, H, W) → its raw head output (4·reg_max + nc, A) and level shapes; with
    /// `timer`, the milliseconds of every layer (ultralytics' `profile=True`).
    fn run_image(
        &self,
        x: &[f32],
        hw: Hw,
        par: Par,
        mut timer: Option<&mut Vec<(usize, String, f64)>>,
    ) -> (Vec<f32>, Vec<Hw>) {
        // acts[0] is the input, acts[i + 1] layer i's output; an output is dropped once the
        // next layer has run unless a later layer reads it (`save`).
        let n = self.layers.len();
        let mut acts: Vec<Option<Act>> = (0..=n).map(|_| None).collect();
        acts[0] = Some(Act { c: 3, hw, data: x.to_vec() });
        let slot = |f: i64| if f < 0 { 0 } else { f as usize + 1 };
        for (i, (from, op, name)) in self.layers.iter().enumerate() {
            let t = std::time::Instant::now();
            let xs: Vec<&Act> = from
                .iter()
                .map(|&f| acts[slot(f)].as_ref().expect("YoloModel::new keeps every layer output a later layer reads"))
                .collect();
            let y = op.run(&xs, par);
            if let Some(times) = timer.as_deref_mut() {
                times.push((i, name.clone(), t.elapsed().as_secs_f64() * 1e3));
            }
            if i == 0 || !self.save[i - 1] {
                acts[i] = None;
            }
            acts[i + 1] = Some(y);
        }
        let t = std::time::Instant::now();
        let xs: Vec<&Act> =
            self.detect_from.iter().map(|&f| acts[slot(f)].as_ref().expect("Detect inputs are kept")).collect();
        let shapes = xs.iter().map(|a| a.hw).collect();
        let raw = self.detect.run(&xs, par);
        if let Some(times) = timer {
            times.push((n, "ultralytics.nn.modules.head.Detect".into(), t.elapsed().as_secs_f64() * 1e3));
        }
        (raw, shapes)
    }

    /// Eval forward of a batch `x` (B, 3, H, W) in [0, 1].
    pub fn forward(&self, x: &Tensor) -> Result<FusedOutput> {
        let (b, c, h, w) = x.dims4()?;
        if c != 3 {
            candle_core::bail!("fused model: input has {c} channels, expected 3");
        }
        let xv = host(x)?;
        let len = 3 * h * w;
        let one = |i: usize, par: Par| {
            let (raw, shapes) = self.run_image(&xv[i * len..(i + 1) * len], (h, w), par, None);
            let dec = self.detect.decode(&raw, &shapes, par);
            (raw, dec, shapes)
        };
        let per: Vec<(Vec<f32>, Vec<f32>, Vec<Hw>)> = if b >= threads() && threads() > 1 {
            (0..b).into_par_iter().map(|i| one(i, Par::Serial)).collect()
        } else {
            (0..b).map(|i| one(i, Par::Tiles)).collect()
        };
        let level_shapes = per.first().map(|p| p.2.clone()).unwrap_or_default();
        let a: usize = level_shapes.iter().map(|s| s.0 * s.1).sum();
        let (no, nd) = (self.detect.outputs(), 4 + self.detect.nc);
        let head: Vec<f32> = per.iter().flat_map(|p| p.0.iter().copied()).collect();
        let decoded: Vec<f32> = per.iter().flat_map(|p| p.1.iter().copied()).collect();
        Ok(FusedOutput {
            decoded: Tensor::from_vec(decoded, (b, nd, a), x.device())?,
            head: Tensor::from_vec(head, (b, no, a), x.device())?,
            level_shapes,
        })
    }

    /// Per-layer milliseconds of one image's forward (batch 1, tiles over every thread), the
    /// last entry the box decoding.
    pub fn profile(&self, x: &Tensor) -> Result<Vec<(usize, String, f64)>> {
        let (_, _, h, w) = x.dims4()?;
        let xv = host(x)?;
        let mut times = Vec::new();
        let (raw, shapes) = self.run_image(&xv[..3 * h * w], (h, w), Par::Tiles, Some(&mut times));
        let t = std::time::Instant::now();
        self.detect.decode(&raw, &shapes, Par::Tiles);
        times.push((self.layers.len(), "decode (DFL, anchors, sigmoid)".into(), t.elapsed().as_secs_f64() * 1e3));
        Ok(times)
    }

    /// The raw head output split back into per-level box and class tensors (what the training
    /// loss takes, for the validation loss).
    pub fn head_output(&self, out: &FusedOutput) -> Result<HeadOutput> {
        let r4 = 4 * self.detect.reg_max;
        let b = out.head.dim(0)?;
        let mut box_levels = Vec::new();
        let mut cls_levels = Vec::new();
        let mut off = 0;
        for &(h, w) in &out.level_shapes {
            let lvl = out.head.narrow(2, off, h * w)?;
            box_levels.push(lvl.narrow(1, 0, r4)?.contiguous()?.reshape((b, r4, h, w))?);
            cls_levels.push(lvl.narrow(1, r4, self.detect.nc)?.contiguous()?.reshape((b, self.detect.nc, h, w))?);
            off += h * w;
        }
        Ok(HeadOutput {
            box_levels,
            cls_levels,
            strides: self.detect.strides.clone(),
            reg_max: self.detect.reg_max,
            nc: self.detect.nc,
        })
    }
}

/// The network as inference runs it: folded once ([`FusedModel`]) on the CPU, the unfolded
/// candle forward on other devices (or when asked, for comparisons).
pub struct EvalNet<'a> {
    pub model: &'a YoloModel,
    fused: Option<FusedModel>,
}

impl<'a> EvalNet<'a> {
    /// Folds `model` when `device` is the CPU.
    pub fn new(model: &'a YoloModel, device: &Device) -> crate::error::Result<Self> {
        let fused = if matches!(device, Device::Cpu) { Some(FusedModel::new(model)?) } else { None };
        Ok(EvalNet { model, fused })
    }

    /// The candle eval forward without folding (the reference the fused path is checked against).
    pub fn unfused(model: &'a YoloModel) -> Self {
        EvalNet { model, fused: None }
    }

    pub fn is_fused(&self) -> bool {
        self.fused.is_some()
    }

    /// Decoded (B, 4 + nc, A) predictions, and the raw head outputs when `raw` is asked for.
    pub fn forward(&self, x: &Tensor, raw: bool) -> crate::error::Result<(Tensor, Option<HeadOutput>)> {
        match &self.fused {
            Some(f) => {
                let out = f.forward(x)?;
                let head = if raw { Some(f.head_output(&out)?) } else { None };
                Ok((out.decoded, head))
            }
            None => {
                let out = self.model.forward_eval(x)?;
                Ok((out.decoded, raw.then_some(out.raw)))
            }
        }
    }

    /// Per-layer eval milliseconds on `x` (the first image).
    pub fn profile(&self, x: &Tensor) -> crate::error::Result<Vec<(usize, String, f64)>> {
        match &self.fused {
            Some(f) => Ok(f.profile(x)?),
            None => self.model.profile_eval(x),
        }
    }
}
