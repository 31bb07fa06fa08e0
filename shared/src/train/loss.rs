//! The YOLOv8 detection loss: ultralytics 8.4.190's `v8DetectionLoss` (`utils/loss.py`:
//! `BboxLoss`, `DFLoss`, BCE) with its `TaskAlignedAssigner` ([`super::assigner`]).
//!
//! What 8.4 computes, for head outputs `boxes` (B, 4·reg_max, A) (DFL logits) and `scores`
//! (B, nc, A) (class logits) and collated targets:
//! - targets → per image x1y1x2y2 boxes in input pixels (`preprocess`: xywh × (W, H, W, H));
//! - predicted boxes: DFL expectation (softmax over `reg_max` bins · 0..reg_max) → left, top,
//!   right, bottom distances from the anchor centre (grid units);
//! - the assignment (on detached predictions) gives foreground anchors, their boxes, and target
//!   scores `t` (the normalised alignment metric at the box's class, 0 elsewhere);
//!   `tss = max(Σ t, 1)`;
//! - `cls = Σ_{anchors, classes} w_c · BCEWithLogits(x, t) / tss` (`w_c`: class weights from
//!   `cls_pw`, 1 without);
//! - `box = Σ_fg (1 − CIoU(pred, target)) · t_a / tss` (grid units, CIoU's α detached);
//! - `dfl = Σ_fg mean_sides(DFL) · t_a / tss`, DFL = the two-bin cross-entropy of each side's
//!   target distance clamped to [0, reg_max − 1.01];
//! - items = `[box·hyp.box, cls·hyp.cls, dfl·hyp.dfl]` (`loss_items`); the trainer
//!   backpropagates `(items × batch_size).sum()` (8.4's `loss.sum()` of `loss * batch_size`).
//!
//! How: everything runs on the CPU in plain Rust. The head outputs are read once (no copy when
//! they already are contiguous f32 on the CPU); the assignment runs per image in parallel; the
//! gradient is analytic: d/dx BCE = (σ(x) − t)·w_c, DFL and CIoU gradients by hand on the
//! foreground anchors only. The scalar loss returned is a custom op over each level tensor whose
//! backward hands back the precomputed gradient, so autograd continues into the Detect head.
//! On other devices the level tensors are moved to the CPU first (`to_device`, differentiable),
//! so the gradients come back on the original device. Why not candle ops: composing the BCE,
//! softmax and CIoU as tensor ops means ~30 passes over B·A·nc elements forward and more
//! backward; here it is one pass over the class logits plus sparse work.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

use super::assigner::{AnchorGrid, GtBox, Positive, TaskAlignedAssigner};
use crate::data::Targets;
use crate::nn::blocks::HeadOutput;
use crate::nn::cpu::fastmath::{dfl_side, exp as fexp, multiversioned};
use crate::{Error, Result};

/// Loss gains (ultralytics' `box`, `cls`, `dfl` hyper-parameters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossGains {
    pub r#box: f64,
    pub cls: f64,
    pub dfl: f64,
}

impl LossGains {
    pub fn from_hyp(h: &crate::config::hyp::Hyp) -> Self {
        LossGains { r#box: h.r#box, cls: h.cls, dfl: h.dfl }
    }
}

impl Default for LossGains {
    /// ultralytics' defaults (`default.yaml`): box 7.5, cls 0.5, dfl 1.5.
    fn default() -> Self {
        LossGains { r#box: 7.5, cls: 0.5, dfl: 1.5 }
    }
}

/// ultralytics 8.4's class weights for `cls_pw` > 0 (`DetectionTrainer.set_class_weights`):
/// `(1 / count)^cls_pw` for classes with train instances, the mean of those for classes
/// without, then divided by their mean (mean 1). `None` when `cls_pw` is 0 (or not positive)
/// or no class has an instance (ultralytics then keeps unweighted BCE). 8.4 asserts
/// `0 ≤ cls_pw ≤ 1`; that range is the cfg validator's to enforce.
pub fn class_weights(instances_per_class: &[usize], cls_pw: f64) -> Option<Vec<f32>> {
    if !(cls_pw > 0.0) || instances_per_class.iter().all(|&n| n == 0) {
        return None;
    }
    let w: Vec<f64> =
        instances_per_class.iter().map(|&n| if n > 0 { (1.0 / n as f64).powf(cls_pw) } else { 0.0 }).collect();
    let present: Vec<f64> = instances_per_class.iter().zip(&w).filter(|(&n, _)| n > 0).map(|(_, &v)| v).collect();
    let fill = present.iter().sum::<f64>() / present.len() as f64;
    let w: Vec<f64> = instances_per_class.iter().zip(&w).map(|(&n, &v)| if n > 0 { v } else { fill }).collect();
    let mean = w.iter().sum::<f64>() / w.len() as f64;
    Some(w.iter().map(|&v| (v / mean) as f32).collect())
}

/// ultralytics' `v8DetectionLoss` for one model.
#[derive(Debug, Clone)]
pub struct DetectionLoss {
    pub nc: usize,
    pub reg_max: usize,
    pub strides: Vec<f64>,
    pub gains: LossGains,
    /// Per-class BCE weights (length nc), from [`class_weights`].
    pub class_weights: Option<Vec<f32>>,
    pub assigner: TaskAlignedAssigner,
}

/// What [`DetectionLoss::compute`] returns.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// The scalar to backpropagate: `(box + cls + dfl) × batch size` with the gains applied —
    /// exactly 8.4's `self.loss = (loss * batch_size).sum()`.
    pub loss: Tensor,
    /// Detached `[box, cls, dfl]` (gains applied, not × batch size): 8.4's `loss_items`.
    pub items: [f32; 3],
}

impl DetectionLoss {
    pub fn new(model: &crate::nn::model::YoloModel, gains: LossGains, class_weights: Option<Vec<f32>>) -> Self {
        Self::from_parts(model.nc, model.reg_max, &model.strides, gains, class_weights)
    }

    /// Without a model: the head's class count, DFL bins and strides.
    pub fn from_parts(
        nc: usize,
        reg_max: usize,
        strides: &[f64],
        gains: LossGains,
        class_weights: Option<Vec<f32>>,
    ) -> Self {
        DetectionLoss {
            nc,
            reg_max,
            strides: strides.to_vec(),
            gains,
            class_weights,
            assigner: TaskAlignedAssigner::new(strides),
        }
    }

    /// The training loss and its items for head outputs `out` (train- or eval-mode) and the
    /// batch's `targets`. `loss` is differentiable w.r.t. the head's level tensors (see
    /// [`LossOutput`]). Errors: shapes that do not match this loss's model, targets naming a
    /// missing image or a class ≥ nc (the message names the image), NaN/Inf in targets or
    /// predictions (the message starts with "non-finite").
    pub fn compute(&self, out: &HeadOutput, targets: &Targets) -> Result<LossOutput> {
        let prep = Prepared::new(self, out)?;
        let v = prep.views()?;
        let gts = self.gt_boxes(targets, v.bs, &v.grid)?;
        let track = out.box_levels.iter().chain(&out.cls_levels).any(|t| t.track_op());
        let r = self.run(&v, &gts, track)?;
        let items = r.items;
        let total = v.bs as f64 * items.iter().sum::<f64>();
        let items32 = items.map(|x| x as f32);
        drop(v);
        let loss = if track {
            let mut acc: Option<Tensor> = None;
            let grads = r.grads.expect("grads are computed when tracking");
            for (i, (t, g)) in prep.tensors.iter().zip(grads).enumerate() {
                let value = if i == 0 { total as f32 } else { 0.0 };
                let grad = Tensor::from_vec(g, t.shape(), &Device::Cpu)?;
                let part = t.apply_op1(InjectGrad { value, grad })?;
                acc = Some(match acc {
                    None => part,
                    Some(a) => (a + part)?,
                });
            }
            let loss = acc.expect("at least one level");
            loss.to_device(&prep.device)?
        } else {
            Tensor::new(total as f32, &prep.device)?
        };
        Ok(LossOutput { loss, items: items32 })
    }

    /// The assignment alone, per image (for tests and diagnostics).
    pub fn assignments(&self, out: &HeadOutput, targets: &Targets) -> Result<Vec<Vec<Positive>>> {
        let prep = Prepared::new(self, out)?;
        let v = prep.views()?;
        let gts = self.gt_boxes(targets, v.bs, &v.grid)?;
        Ok((0..v.bs).into_par_iter().map(|b| self.assign_image(&v, b, &gts[b]).1).collect())
    }

    /// 8.4's `preprocess`: targets grouped by image (in their order), scaled to pixels, xyxy.
    fn gt_boxes(&self, t: &Targets, bs: usize, grid: &AnchorGrid) -> Result<Vec<Vec<GtBox>>> {
        if t.batch_idx.len() != t.cls.len() || t.bboxes.len() != t.cls.len() {
            return Err(Error::internal(format!(
                "targets have {} batch indices, {} classes and {} boxes; they must be equal",
                t.batch_idx.len(),
                t.cls.len(),
                t.bboxes.len()
            )));
        }
        let l0 = grid.levels[0];
        let (imh, imw) = (l0.h as f32 * l0.stride, l0.w as f32 * l0.stride);
        let mut gts = vec![Vec::new(); bs];
        for i in 0..t.len() {
            let (b, c, xywh) = (t.batch_idx[i], t.cls[i], t.bboxes[i]);
            if b >= bs {
                return Err(Error::data(format!("target {i} belongs to image {b}, but the batch has {bs} images"))
                    .with_hint("batch_idx must index the images of this batch"));
            }
            if c >= self.nc {
                return Err(Error::data(format!(
                    "image {b} of the batch has a box of class {c}, but the model has {} classes",
                    self.nc
                ))
                .with_hint("check the dataset's labels against `nc`/`names` in the data yaml"));
            }
            if xywh.iter().any(|v| !v.is_finite()) {
                return Err(Error::data(format!("non-finite target box {xywh:?} in image {b} of the batch")));
            }
            let (x, y, w, h) = (xywh[0] * imw, xywh[1] * imh, xywh[2] * imw, xywh[3] * imh);
            let (hw, hh) = (w / 2.0, h / 2.0);
            let xyxy = [x - hw, y - hh, x + hw, y + hh];
            let valid = xyxy[0] + xyxy[1] + xyxy[2] + xyxy[3] > 0.0;
            gts[b].push(GtBox { xyxy, label: c, valid });
        }
        Ok(gts)
    }

    /// Decode image `b`'s boxes (px) and assign.
    fn assign_image(&self, v: &Views, b: usize, gts: &[GtBox]) -> (Vec<[f32; 4]>, Vec<Positive>) {
        if gts.is_empty() {
            return (Vec::new(), Vec::new());
        }
        let r = self.reg_max;
        let mut pd = vec![[0f32; 4]; v.grid.len()];
        let mut dist = Vec::new();
        for (l, lv) in v.grid.levels.iter().enumerate() {
            let hw = lv.h * lv.w;
            dist.resize(4 * hw, 0.0);
            let x = &v.boxes[l][b * 4 * r * hw..(b + 1) * 4 * r * hw];
            decode_level(x, &mut dist, hw, r);
            for p in 0..hw {
                let a = lv.offset + p;
                let [ax, ay] = v.grid.points[a];
                let s = lv.stride;
                pd[a] = [
                    (ax - dist[p]) * s,
                    (ay - dist[hw + p]) * s,
                    (ax + dist[2 * hw + p]) * s,
                    (ay + dist[3 * hw + p]) * s,
                ];
            }
        }
        let logit = |a: usize, c: usize| {
            let (l, p) = v.locate(a);
            let hw = v.grid.levels[l].h * v.grid.levels[l].w;
            v.scores[l][(b * self.nc + c) * hw + p]
        };
        let pos = self.assigner.assign(&v.grid, &pd, &logit, gts);
        (pd, pos)
    }

    fn run(&self, v: &Views, gts: &[Vec<GtBox>], grads: bool) -> Result<RunOut> {
        for (l, x) in v.boxes.iter().enumerate() {
            if !x.par_chunks(1 << 16).all(all_finite) {
                return Err(Error::model(format!(
                    "non-finite box predictions (NaN/Inf) at level {l} of the head output"
                )));
            }
        }
        let pos: Vec<Vec<Positive>> = (0..v.bs).into_par_iter().map(|b| self.assign_image(v, b, &gts[b]).1).collect();
        self.evaluate(v, pos, grads)
    }

    /// The loss items (and gradients) for a given assignment.
    fn evaluate(&self, v: &Views, pos: Vec<Vec<Positive>>, grads: bool) -> Result<RunOut> {
        let (bs, nc, r) = (v.bs, self.nc, self.reg_max);
        let cw: Vec<f32> = match &self.class_weights {
            Some(w) if w.len() == nc => w.clone(),
            Some(w) => {
                return Err(Error::internal(format!("{} class weights for a {nc}-class model", w.len()))
                    .with_hint("compute class_weights from the train split's per-class counts (nc entries)"))
            }
            None => vec![1.0; nc],
        };
        // The foreground terms, per image in parallel.
        let g = self.gains;
        let per_image: Vec<ImageFg> = pos
            .into_par_iter()
            .enumerate()
            .map(|(b, pos)| {
                let mut fg =
                    ImageFg { box_sum: 0.0, dfl_sum: 0.0, score_sum: 0.0, rows: Vec::with_capacity(pos.len()), pos };
                for q in &fg.pos {
                    fg.score_sum += q.score as f64;
                    let (bl, dl, grad) = fg_terms(v, b, q, r);
                    fg.box_sum += bl;
                    fg.dfl_sum += dl;
                    let row: Vec<f64> = grad.0.iter().zip(&grad.1).map(|(gb, gd)| g.r#box * gb + g.dfl * gd).collect();
                    fg.rows.push(row);
                }
                fg
            })
            .collect();
        let tss = per_image.iter().map(|f| f.score_sum).sum::<f64>().max(1.0);
        let scale = bs as f64 / tss; // d(total)/d(item sums)

        // Classification: one pass over every logit, then the foreground corrections.
        let mut cls_grads: Vec<Vec<f32>> = Vec::new();
        let mut cls_sum = 0.0f64;
        for (l, lv) in v.grid.levels.iter().enumerate() {
            let hw = lv.h * lv.w;
            let x = v.scores[l];
            let mut gbuf = if grads { crate::nn::cpu::fastmath::uninit_f32(x.len()) } else { Vec::new() };
            let rows: Vec<(f64, bool)> = if grads {
                x.par_chunks(hw)
                    .zip(gbuf.par_chunks_mut(hw))
                    .enumerate()
                    .map(|(i, (xr, gr))| {
                        let c = i % nc;
                        let k = (scale * g.cls) as f32 * cw[c];
                        let (s, ok) = bce_grad_row(xr, gr, k);
                        (s * cw[c] as f64, ok)
                    })
                    .collect()
            } else {
                x.par_chunks(hw)
                    .enumerate()
                    .map(|(i, xr)| {
                        let (s, ok) = bce_sum_row(xr);
                        (s * cw[i % nc] as f64, ok)
                    })
                    .collect()
            };
            if rows.iter().any(|r| !r.1) {
                return Err(Error::model(format!(
                    "non-finite class predictions (NaN/Inf) at level {l} of the head output"
                )));
            }
            cls_sum += rows.iter().map(|r| r.0).sum::<f64>();
            for (b, f) in per_image.iter().enumerate() {
                for q in &f.pos {
                    let (ql, p) = v.locate(q.anchor);
                    if ql != l {
                        continue;
                    }
                    let i = (b * nc + q.label) * hw + p;
                    let t = q.score as f64;
                    cls_sum -= cw[q.label] as f64 * x[i] as f64 * t;
                    if grads {
                        gbuf[i] -= (scale * g.cls * cw[q.label] as f64 * t) as f32;
                    }
                }
            }
            cls_grads.push(gbuf);
        }
        let box_sum: f64 = per_image.iter().map(|f| f.box_sum).sum();
        let dfl_sum: f64 = per_image.iter().map(|f| f.dfl_sum).sum();
        let items = [g.r#box * box_sum / tss, g.cls * cls_sum / tss, g.dfl * dfl_sum / tss];
        let grads = grads.then(|| {
            let mut out: Vec<Vec<f32>> = v.grid.levels.iter().map(|lv| vec![0f32; bs * 4 * r * lv.h * lv.w]).collect();
            for (b, f) in per_image.iter().enumerate() {
                for (q, row) in f.pos.iter().zip(&f.rows) {
                    let (l, p) = v.locate(q.anchor);
                    let hw = v.grid.levels[l].h * v.grid.levels[l].w;
                    for (ch, &gv) in row.iter().enumerate() {
                        out[l][(b * 4 * r + ch) * hw + p] = (gv * scale) as f32;
                    }
                }
            }
            out.extend(cls_grads);
            out
        });
        Ok(RunOut { items, grads })
    }
}

/// The level tensors on the CPU as contiguous f32 (boxes of every level, then scores).
struct Prepared {
    tensors: Vec<Tensor>,
    shapes: Vec<(usize, usize)>,
    device: Device,
    bs: usize,
    strides: Vec<f64>,
}

impl Prepared {
    fn new(loss: &DetectionLoss, out: &HeadOutput) -> Result<Self> {
        let nl = out.box_levels.len();
        if nl == 0 || out.cls_levels.len() != nl || loss.strides.len() != nl {
            return Err(Error::model(format!(
                "head output has {} box and {} class levels; the loss expects {}",
                nl,
                out.cls_levels.len(),
                loss.strides.len()
            )));
        }
        if out.nc != loss.nc || out.reg_max != loss.reg_max {
            return Err(Error::model(format!(
                "head output has nc {} / reg_max {}, the loss was built for nc {} / reg_max {}",
                out.nc, out.reg_max, loss.nc, loss.reg_max
            )));
        }
        if loss.reg_max < 2 {
            return Err(Error::model(
                "reg_max 1 (ultralytics' L1 box branch without DFL) is not supported by the kubeyolo loss",
            )
            .with_hint("YOLOv8 heads use reg_max 16"));
        }
        let device = out.box_levels[0].device().clone();
        let bs = out.box_levels[0].dim(0)?;
        let mut shapes = Vec::with_capacity(nl);
        for (l, (b, c)) in out.box_levels.iter().zip(&out.cls_levels).enumerate() {
            let (b0, bc, bh, bw) = b.dims4()?;
            let (c0, cc, ch, cw) = c.dims4()?;
            if b0 != bs || c0 != bs || bc != 4 * loss.reg_max || cc != loss.nc || (bh, bw) != (ch, cw) {
                return Err(Error::model(format!(
                    "head level {l}: boxes {:?} and scores {:?} do not fit batch {bs}, 4·reg_max {}, nc {}",
                    b.dims(),
                    c.dims(),
                    4 * loss.reg_max,
                    loss.nc
                )));
            }
            shapes.push((bh, bw));
        }
        let cpu = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.contiguous()?) };
        let tensors = out.box_levels.iter().chain(&out.cls_levels).map(cpu).collect::<Result<Vec<_>>>()?;
        Ok(Prepared { tensors, shapes, device, bs, strides: loss.strides.clone() })
    }

    fn views(&self) -> Result<Views<'_>> {
        let grid = AnchorGrid::new(&self.shapes, &self.strides)?;
        let nl = self.shapes.len();
        let mut slices = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let (s, l) = t.storage_and_layout();
            let data: &[f32] = match &*s {
                Storage::Cpu(CpuStorage::F32(v)) => match l.contiguous_offsets() {
                    Some((a, b)) => {
                        // SAFETY: the storage lives as long as `self.tensors` (the borrow of
                        // `self`), and nothing writes to these fresh/owned tensors meanwhile.
                        unsafe { std::slice::from_raw_parts(v.as_ptr().add(a), b - a) }
                    }
                    None => return Err(Error::internal("head output not contiguous after contiguous()")),
                },
                _ => return Err(Error::internal("head output not f32 on the CPU after conversion")),
            };
            slices.push(data);
        }
        let scores = slices.split_off(nl);
        Ok(Views { bs: self.bs, grid, boxes: slices, scores })
    }
}

/// Borrowed per-level data: `boxes[l]` (B, 4·reg_max, H·W), `scores[l]` (B, nc, H·W).
struct Views<'a> {
    bs: usize,
    grid: AnchorGrid,
    boxes: Vec<&'a [f32]>,
    scores: Vec<&'a [f32]>,
}

impl Views<'_> {
    /// (level, position within the level) of anchor `a`.
    #[inline]
    fn locate(&self, a: usize) -> (usize, usize) {
        let l = self.grid.levels.iter().rposition(|lv| lv.offset <= a).unwrap_or(0);
        (l, a - self.grid.levels[l].offset)
    }
}

struct ImageFg {
    pos: Vec<Positive>,
    /// Σ (1 − CIoU)·t, Σ mean DFL·t, Σ t.
    box_sum: f64,
    dfl_sum: f64,
    score_sum: f64,
    /// Per positive: gain-weighted d(box, dfl sums)/d(its 4·reg_max logits).
    rows: Vec<Vec<f64>>,
}

struct RunOut {
    items: [f64; 3],
    grads: Option<Vec<Vec<f32>>>,
}

/// One foreground anchor: ((1 − CIoU)·t, mean DFL·t, (d box term, d dfl term) / d logits).
fn fg_terms(v: &Views, b: usize, q: &Positive, r: usize) -> (f64, f64, (Vec<f64>, Vec<f64>)) {
    let (l, p) = v.locate(q.anchor);
    let lv = v.grid.levels[l];
    let hw = lv.h * lv.w;
    let x = &v.boxes[l][b * 4 * r * hw..];
    let w = q.score as f64;
    let [ax, ay] = v.grid.points[q.anchor];
    // Softmax per side (f64) and the expected distance.
    let mut prob = vec![0f64; 4 * r];
    let mut logp = vec![0f64; 4 * r];
    let mut d = [0f64; 4];
    for s in 0..4 {
        let z: Vec<f64> = (0..r).map(|j| x[(s * r + j) * hw + p] as f64).collect();
        let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let se: f64 = z.iter().map(|&zj| (zj - m).exp()).sum();
        let lse = m + se.ln();
        for j in 0..r {
            logp[s * r + j] = z[j] - lse;
            prob[s * r + j] = logp[s * r + j].exp();
            d[s] += prob[s * r + j] * j as f64;
        }
    }
    let (ax64, ay64) = (ax as f64, ay as f64);
    let pred = [ax64 - d[0], ay64 - d[1], ax64 + d[2], ay64 + d[3]];
    // Targets in grid units (f32, as ultralytics: target_bboxes / stride).
    let t32 = q.target.map(|c| c / lv.stride);
    let (ciou, dc) = ciou_grad(&pred, &t32.map(|c| c as f64));
    let box_term = (1.0 - ciou) * w;
    // d box_term / d pred = −w · dCIoU; pred x1 = ax − l, y1 = ay − t, x2 = ax + r, y2 = ay + b.
    let dd = [w * dc[0], w * dc[1], -w * dc[2], -w * dc[3]];
    let mut gbox = vec![0f64; 4 * r];
    let mut gdfl = vec![0f64; 4 * r];
    // DFL: target distances (bbox2dist, clamped to [0, reg_max − 1 − 0.01] in f32).
    let hi = (r - 1) as f32 - 0.01;
    let ltrb = [ax - t32[0], ay - t32[1], t32[2] - ax, t32[3] - ay].map(|t| t.clamp(0.0, hi));
    let mut dfl = 0.0;
    for s in 0..4 {
        let t = ltrb[s];
        let tl = t as usize; // t ≥ 0: truncation = floor, like `.long()`
        let tr = tl + 1;
        let wl = tr as f32 - t;
        let wr = 1.0 - wl;
        let (wl, wr) = (wl as f64, wr as f64);
        dfl += -(logp[s * r + tl] * wl + logp[s * r + tr] * wr);
        for j in 0..r {
            let pj = prob[s * r + j];
            gbox[s * r + j] = pj * (j as f64 - d[s]) * dd[s];
            let mut gj = pj;
            if j == tl {
                gj -= wl;
            }
            if j == tr {
                gj -= wr;
            }
            gdfl[s * r + j] = gj * w / 4.0;
        }
    }
    (box_term, dfl / 4.0 * w, (gbox, gdfl))
}

/// CIoU(box1 = prediction, box2 = target) as ultralytics' `bbox_iou(..., CIoU=True)` (eps 1e-7,
/// α detached) and its gradient w.r.t. box1's x1, y1, x2, y2. min/max split the gradient in
/// half on ties and `clamp(0)` passes it at 0, as PyTorch's backward does.
pub(crate) fn ciou_grad(b1: &[f64; 4], b2: &[f64; 4]) -> (f64, [f64; 4]) {
    const EPS: f64 = 1e-7;
    let [x1, y1, x2, y2] = *b1;
    let [u1, v1, u2, v2] = *b2;
    let (w1, h1) = (x2 - x1, y2 - y1 + EPS);
    let (w2, h2) = (u2 - u1, v2 - v1 + EPS);
    // d min(a, b)/da and d max(a, b)/da with PyTorch's tie rule.
    let dmin = |a: f64, b: f64| {
        if a < b {
            1.0
        } else if a == b {
            0.5
        } else {
            0.0
        }
    };
    let dmax = |a: f64, b: f64| {
        if a > b {
            1.0
        } else if a == b {
            0.5
        } else {
            0.0
        }
    };
    let iw = x2.min(u2) - x1.max(u1);
    let ih = y2.min(v2) - y1.max(v1);
    let (iwc, ihc) = (iw.max(0.0), ih.max(0.0));
    let inter = iwc * ihc;
    // d iw / d (x1, x2), d ih / d (y1, y2); zero where clamped.
    let (diw_x1, diw_x2) = if iw >= 0.0 { (-dmax(x1, u1), dmin(x2, u2)) } else { (0.0, 0.0) };
    let (dih_y1, dih_y2) = if ih >= 0.0 { (-dmax(y1, v1), dmin(y2, v2)) } else { (0.0, 0.0) };
    let dinter = [ihc * diw_x1, iwc * dih_y1, ihc * diw_x2, iwc * dih_y2];
    let union = w1 * h1 + w2 * h2 - inter + EPS;
    let darea = [-h1, -w1, h1, w1];
    let iou = inter / union;
    let mut diou = [0.0; 4];
    for k in 0..4 {
        let du = darea[k] - dinter[k];
        diou[k] = (dinter[k] * union - inter * du) / (union * union);
    }
    let cw = x2.max(u2) - x1.min(u1);
    let ch = y2.max(v2) - y1.min(v1);
    let dcw = [-dmin(x1, u1), 0.0, dmax(x2, u2), 0.0];
    let dch = [0.0, -dmin(y1, v1), 0.0, dmax(y2, v2)];
    let c2 = cw * cw + ch * ch + EPS;
    let ex = u1 + u2 - x1 - x2;
    let ey = v1 + v2 - y1 - y2;
    let rho2 = (ex * ex + ey * ey) / 4.0;
    let drho2 = [-ex / 2.0, -ey / 2.0, -ex / 2.0, -ey / 2.0];
    let k4 = 4.0 / (std::f64::consts::PI * std::f64::consts::PI);
    let a1 = (w1 / h1).atan();
    let dv_term = (w2 / h2).atan() - a1;
    let v = k4 * dv_term * dv_term;
    let alpha = v / (1.0 - iou + v + EPS);
    let ciou = iou - (rho2 / c2 + v * alpha);
    // d atan(w1/h1): w1 = x2 − x1, h1 = y2 − y1 + eps.
    let q = w1 / h1;
    let datan = 1.0 / (1.0 + q * q);
    let dq = [-1.0 / h1, w1 / (h1 * h1), 1.0 / h1, -w1 / (h1 * h1)];
    let mut g = [0.0; 4];
    for k in 0..4 {
        let dc2 = 2.0 * cw * dcw[k] + 2.0 * ch * dch[k];
        let dterm = (drho2[k] * c2 - rho2 * dc2) / (c2 * c2);
        let dv = k4 * 2.0 * dv_term * (-datan * dq[k]);
        g[k] = diou[k] - dterm - alpha * dv;
    }
    (ciou, g)
}

/// DFL expectation for one level of one image: `x` (4·r, hw) logits → `out` (4, hw) distances.
fn decode_level(x: &[f32], out: &mut [f32], hw: usize, r: usize) {
    for (bins, side) in x.chunks_exact(r * hw).zip(out.chunks_exact_mut(hw)) {
        dfl_side(bins, side);
    }
}

/// ln(1 + u) for u ∈ [0, 1], branch-free: 2·atanh(u / (2 + u)) by its odd series (s ≤ 1/3,
/// 7 terms: ≤ 2e-8 relative truncation).
#[inline(always)]
fn ln1p_unit(u: f32) -> f32 {
    let s = u / (2.0 + u);
    let s2 = s * s;
    let p = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0))))));
    2.0 * s * p
}

/// softplus(x) = BCE(x, 0), σ(x) and whether x is finite (`x·0 == 0`), branch-free.
#[inline(always)]
fn bce_elem(v: f32) -> (f32, f32, f32) {
    let e = fexp(-v.abs());
    let pos = if v > 0.0 { v } else { 0.0 };
    let num = if v >= 0.0 { 1.0 } else { e };
    (pos + ln1p_unit(e), num / (1.0 + e), v * 0.0)
}

/// Σ softplus(x) over a row (BCE with target 0; the foreground's −x·t is subtracted later),
/// `g = k·σ(x)`, and whether every x is finite. f32 lanes, summed to f64 every 512 elements.
#[inline(always)]
fn bce_grad_gen(x: &[f32], g: &mut [f32], k: f32) -> (f64, bool) {
    let mut total = 0.0f64;
    let mut bad = 0.0f32;
    for (xc, gc) in x.chunks(512).zip(g.chunks_mut(512)) {
        let mut acc = [0f32; 8];
        let mut chk = [0f32; 8];
        let mut xi = xc.chunks_exact(8);
        let mut gi = gc.chunks_exact_mut(8);
        for (x8, g8) in (&mut xi).zip(&mut gi) {
            for j in 0..8 {
                let (sp, sig, c) = bce_elem(x8[j]);
                acc[j] += sp;
                chk[j] += c;
                g8[j] = k * sig;
            }
        }
        for (v, gv) in xi.remainder().iter().zip(gi.into_remainder()) {
            let (sp, sig, c) = bce_elem(*v);
            acc[0] += sp;
            chk[0] += c;
            *gv = k * sig;
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>();
        bad += chk.iter().sum::<f32>();
    }
    (total, bad == 0.0)
}
multiversioned!(fn bce_grad_row = bce_grad_gen / bce_grad_avx2(x: &[f32], g: &mut [f32], k: f32) -> (f64, bool));

/// [`bce_grad_row`] without the gradient (validation).
#[inline(always)]
fn bce_sum_gen(x: &[f32]) -> (f64, bool) {
    let mut total = 0.0f64;
    let mut bad = 0.0f32;
    for xc in x.chunks(512) {
        let mut acc = [0f32; 8];
        let mut chk = [0f32; 8];
        let mut xi = xc.chunks_exact(8);
        for x8 in &mut xi {
            for j in 0..8 {
                let (sp, _, c) = bce_elem(x8[j]);
                acc[j] += sp;
                chk[j] += c;
            }
        }
        for v in xi.remainder() {
            let (sp, _, c) = bce_elem(*v);
            acc[0] += sp;
            chk[0] += c;
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>();
        bad += chk.iter().sum::<f32>();
    }
    (total, bad == 0.0)
}
multiversioned!(fn bce_sum_row = bce_sum_gen / bce_sum_avx2(x: &[f32]) -> (f64, bool));

#[inline(always)]
fn finite_gen(x: &[f32]) -> bool {
    let mut chk = [0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for j in 0..8 {
            chk[j] += c[j] * 0.0;
        }
    }
    let tail: f32 = it.remainder().iter().map(|v| v * 0.0).sum();
    chk.iter().sum::<f32>() + tail == 0.0
}
multiversioned!(fn all_finite = finite_gen / finite_avx2(x: &[f32]) -> bool);

/// Forward: the scalar `value`; backward: the precomputed gradient (× the incoming one).
struct InjectGrad {
    value: f32,
    grad: Tensor,
}

impl CustomOp1 for InjectGrad {
    fn name(&self) -> &'static str {
        "kubeyolo-detection-loss"
    }

    fn cpu_fwd(&self, _s: &CpuStorage, _l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![self.value]), Shape::from(())))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let k = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        Ok(Some(if k == 1.0 { self.grad.clone() } else { (&self.grad * k as f64)? }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_weights_follow_ultralytics() {
        assert_eq!(class_weights(&[5, 5], 0.0), None);
        assert_eq!(class_weights(&[0, 0], 0.5), None);
        // counts 100, 10, 0, 1 at cls_pw 0.5: 0.1, 0.316, (mean of present), 1 → mean 1.
        let w = class_weights(&[100, 10, 0, 1], 0.5).unwrap();
        let raw = [0.1f64, 0.1f64.sqrt(), (0.1 + 0.1f64.sqrt() + 1.0) / 3.0, 1.0];
        let m = raw.iter().sum::<f64>() / 4.0;
        for (a, b) in w.iter().zip(raw) {
            assert!((*a as f64 - b / m).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn ln1p_and_bce_row_are_accurate() {
        for i in 0..=1000 {
            let u = i as f32 / 1000.0;
            assert!((ln1p_unit(u) as f64 - (u as f64).ln_1p()).abs() <= 2e-7 * (u as f64).ln_1p().max(1e-30), "u {u}");
        }
        let x: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.731).sin() * 20.0).collect();
        let mut g = vec![0f32; x.len()];
        let (s, ok) = bce_grad_row(&x, &mut g, 2.0);
        assert!(ok);
        assert_eq!(bce_sum_row(&x), (s, true));
        let want: f64 = x.iter().map(|&v| (v as f64).max(0.0) + (-(v as f64).abs()).exp().ln_1p()).sum();
        assert!((s - want).abs() < 1e-6 * want, "{s} vs {want}");
        for (&v, &gv) in x.iter().zip(&g) {
            let sig = 1.0 / (1.0 + (-(v as f64)).exp());
            assert!((gv as f64 - 2.0 * sig).abs() < 1e-6, "{v}: {gv}");
        }
        let mut y = x.clone();
        y[700] = f32::NEG_INFINITY;
        assert!(!bce_grad_row(&y, &mut g, 1.0).1);
        assert!(!bce_sum_row(&y).1);
        y[700] = f32::NAN;
        assert!(!all_finite(&y));
    }

    /// The hand-written CIoU gradient against central finite differences.
    #[test]
    fn ciou_gradient_matches_finite_differences() {
        let cases = [
            ([3.0, 4.0, 9.5, 12.0], [4.0, 2.5, 11.0, 10.0]), // overlapping
            ([0.0, 0.0, 2.0, 1.0], [5.0, 6.0, 9.0, 9.5]),    // disjoint (intersection clamped)
            ([1.0, 1.0, 8.0, 3.0], [2.0, 0.5, 4.0, 7.0]),    // crossing, different aspect
            ([2.0, 2.0, 6.0, 6.0], [1.0, 1.5, 7.0, 6.5]),    // pred inside target
        ];
        for (p, t) in cases {
            let (_, g) = ciou_grad(&p, &t);
            for k in 0..4 {
                // α is detached in ultralytics: differentiate with α frozen at its value at p.
                let h = 1e-6;
                let f = |pp: [f64; 4]| ciou_alpha_frozen(&pp, &t, &p);
                let (mut a, mut b) = (p, p);
                a[k] += h;
                b[k] -= h;
                let fd = (f(a) - f(b)) / (2.0 * h);
                assert!((fd - g[k]).abs() < 1e-6, "{p:?} {t:?} k {k}: fd {fd} vs {}", g[k]);
            }
        }
    }

    /// Random head outputs for a 2-image batch at imgsz 64 (84 anchors), nc 3.
    fn random_head(seed: u64) -> (Vec<Vec<f32>>, Vec<(usize, usize)>) {
        let mut s = seed;
        let mut rnd = move || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let shapes = vec![(8, 8), (4, 4), (2, 2)];
        let mut data = Vec::new();
        for &(h, w) in &shapes {
            data.push((0..2 * 64 * h * w).map(|_| rnd() * 4.0).collect());
        }
        for &(h, w) in &shapes {
            data.push((0..2 * 3 * h * w).map(|_| rnd() * 3.0 - 2.0).collect());
        }
        (data, shapes)
    }

    fn head(data: &[Vec<f32>], shapes: &[(usize, usize)], vars: bool) -> (HeadOutput, Vec<candle_core::Var>) {
        let mut ts = Vec::new();
        let mut vs = Vec::new();
        for (i, d) in data.iter().enumerate() {
            let (h, w) = shapes[i % 3];
            let c = if i < 3 { 64 } else { 3 };
            let t = Tensor::from_vec(d.clone(), (2, c, h, w), &Device::Cpu).unwrap();
            if vars {
                let v = candle_core::Var::from_tensor(&t).unwrap();
                ts.push(v.as_tensor().clone());
                vs.push(v);
            } else {
                ts.push(t);
            }
        }
        let cls_levels = ts.split_off(3);
        (HeadOutput { box_levels: ts, cls_levels, strides: vec![8.0, 16.0, 32.0], reg_max: 16, nc: 3 }, vs)
    }

    /// The whole loss's gradient (box, cls and DFL terms together) against central finite
    /// differences of the loss with the assignment held fixed (ultralytics assigns on detached
    /// predictions, so its gradient treats targets as constants).
    #[test]
    fn loss_gradient_matches_finite_differences() {
        let (data, shapes) = random_head(42);
        let mut t = Targets::default();
        t.push(0, 1, [0.4, 0.45, 0.5, 0.6]);
        t.push(0, 2, [0.55, 0.5, 0.4, 0.3]);
        t.push(1, 0, [0.2, 0.8, 0.3, 0.25]);
        let loss =
            DetectionLoss::from_parts(3, 16, &[8.0, 16.0, 32.0], LossGains::default(), Some(vec![0.5, 1.0, 1.5]));
        let (out, vars) = head(&data, &shapes, true);
        let lo = loss.compute(&out, &t).unwrap();
        let grads = lo.loss.backward().unwrap();
        let g: Vec<Vec<f32>> =
            vars.iter().map(|v| grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()).collect();
        let pos = loss.assignments(&out, &t).unwrap();
        assert!(pos.iter().all(|p| !p.is_empty()), "every image has positives");
        let total = |d: &[Vec<f32>]| -> f64 {
            let (o, _) = head(d, &shapes, false);
            let prep = Prepared::new(&loss, &o).unwrap();
            let v = prep.views().unwrap();
            let r = loss.evaluate(&v, pos.clone(), false).unwrap();
            2.0 * r.items.iter().sum::<f64>()
        };
        // Elements: all 64 box logits of image 0's first positive, and class logits at
        // positives (own class and another) and at background anchors.
        let mut picks: Vec<(usize, usize)> = Vec::new();
        let p0 = pos[0][0];
        let lv = |a: usize| {
            if a < 64 {
                (0, a, 64)
            } else if a < 80 {
                (1, a - 64, 16)
            } else {
                (2, a - 80, 4)
            }
        };
        let (l, p, hw) = lv(p0.anchor);
        for ch in 0..64 {
            picks.push((l, ch * hw + p));
        }
        for q in pos[1].iter().take(3) {
            let (l, p, hw) = lv(q.anchor);
            picks.push((l, (64 + q.label) * hw + p));
            picks.push((3 + l, (3 + q.label) * hw + p));
            picks.push((3 + l, (3 + (q.label + 1) % 3) * hw + p));
        }
        picks.extend([(3, 5), (4, 20), (5, 7)]);
        let mut worst = 0f64;
        for (ti, i) in picks {
            let h = 1e-2f32;
            let (mut a, mut b) = (data.clone(), data.clone());
            a[ti][i] += h;
            b[ti][i] -= h;
            let fd = (total(&a) - total(&b)) / (a[ti][i] - b[ti][i]) as f64;
            let an = g[ti][i] as f64;
            let err = (fd - an).abs() / (an.abs() + 1e-3);
            worst = worst.max(err);
            assert!(err < 5e-4, "tensor {ti} element {i}: finite difference {fd} vs analytic {an}");
        }
        eprintln!("loss gradient vs finite differences: worst relative error {worst:.1e}");
    }

    /// CIoU at `p` with α evaluated at `p0` (PyTorch treats α as a constant).
    fn ciou_alpha_frozen(p: &[f64; 4], t: &[f64; 4], p0: &[f64; 4]) -> f64 {
        let eps = 1e-7;
        let parts = |b: &[f64; 4]| {
            let (w1, h1) = (b[2] - b[0], b[3] - b[1] + eps);
            let (w2, h2) = (t[2] - t[0], t[3] - t[1] + eps);
            let inter = (b[2].min(t[2]) - b[0].max(t[0])).max(0.0) * (b[3].min(t[3]) - b[1].max(t[1])).max(0.0);
            let iou = inter / (w1 * h1 + w2 * h2 - inter + eps);
            let cw = b[2].max(t[2]) - b[0].min(t[0]);
            let ch = b[3].max(t[3]) - b[1].min(t[1]);
            let c2 = cw * cw + ch * ch + eps;
            let rho2 = ((t[0] + t[2] - b[0] - b[2]).powi(2) + (t[1] + t[3] - b[1] - b[3]).powi(2)) / 4.0;
            let v = 4.0 / std::f64::consts::PI.powi(2) * ((w2 / h2).atan() - (w1 / h1).atan()).powi(2);
            (iou, rho2 / c2, v)
        };
        let (iou0, _, v0) = parts(p0);
        let alpha = v0 / (1.0 - iou0 + v0 + eps);
        let (iou, r, v) = parts(p);
        iou - (r + v * alpha)
    }
}
