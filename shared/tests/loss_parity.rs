//! Parity of the YOLOv8 detection loss with ultralytics 8.4's `v8DetectionLoss`.
//!
//! Fixtures in `tests/fixtures/loss/` come from `scripts/fixtures/make_loss.py` (ultralytics
//! 8.4.190 + PyTorch, float32): fixed random head outputs and targets, the loss items, the
//! backpropagated scalar, autograd's gradients w.r.t. the head outputs and the assignment. Cases:
//! an ordinary batch, one image without targets, a batch without targets, dense overlapping boxes
//! (anchors claimed by several boxes), boxes smaller than the stride, boxes touching the border,
//! 200 boxes in one image, nc 1, nc 80, `cls_pw` class weights with other gains, and 1029 anchors
//! (torch.topk's heap path, as at 640).
//!
//! Checked per case (tolerances a few times the largest measured error, which each test prints;
//! measured 2026-12: items ≤ 3.1e-7, gradients ≤ 2.4e-6, target scores ≤ 1.2e-5):
//! - items and loss: relative error ≤ 2e-6;
//! - gradients: max |ours − theirs| ≤ 1e-5 · max |theirs| per tensor, and per element
//!   |ours − theirs| ≤ 1e-4 · |theirs| + 1e-6 · max |theirs|;
//! - the assignment: the same foreground anchors and assigned boxes, target scores ≤ 5e-5
//!   relative (the metric is CIoU⁶, so it amplifies float32 rounding six-fold);
//! - a wrong setting (topk 9, beta 5) breaks the parity (the test can fail).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use kubeyolo::data::Targets;
use kubeyolo::nn::blocks::HeadOutput;
use kubeyolo::train::loss::{class_weights, DetectionLoss, LossGains};

const STRIDES: [f64; 3] = [8.0, 16.0, 32.0];
const CASES: [&str; 11] =
    ["ordinary", "one_empty", "no_targets", "dense", "small", "border", "many", "nc1", "nc80", "cls_pw", "heap_path"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/loss")
}

struct Case {
    arrays: HashMap<String, Tensor>,
    nc: usize,
    bs: usize,
    shapes: Vec<(usize, usize)>,
}

impl Case {
    fn load(name: &str) -> Case {
        let arrays: HashMap<String, Tensor> =
            Tensor::read_npz(fixtures().join(format!("{name}.npz"))).unwrap().into_iter().collect();
        let (bs, nc, _) = arrays["scores"].dims3().unwrap();
        let imgsz: Vec<i64> = arrays["imgsz"].to_vec1().unwrap();
        let shapes =
            STRIDES.iter().map(|&s| (imgsz[0] as usize / s as usize, imgsz[1] as usize / s as usize)).collect();
        Case { arrays, nc, bs, shapes }
    }

    fn vec_f32(&self, k: &str) -> Vec<f32> {
        self.arrays[k].flatten_all().unwrap().to_vec1().unwrap()
    }

    fn targets(&self) -> Targets {
        let bi: Vec<i64> = self.arrays["batch_idx"].to_vec1().unwrap();
        let cls: Vec<i64> = self.arrays["cls"].to_vec1().unwrap();
        let bb = self.vec_f32("bboxes");
        let mut t = Targets::default();
        for i in 0..bi.len() {
            t.push(bi[i] as usize, cls[i] as usize, [bb[4 * i], bb[4 * i + 1], bb[4 * i + 2], bb[4 * i + 3]]);
        }
        t
    }

    fn loss(&self) -> DetectionLoss {
        let g: Vec<f64> = self.arrays["gains"].to_vec1().unwrap();
        let cw = self.arrays.get("class_weights").map(|w| w.to_vec1::<f32>().unwrap());
        DetectionLoss::from_parts(self.nc, 16, &STRIDES, LossGains { r#box: g[0], cls: g[1], dfl: g[2] }, cw)
    }

    /// Per-level Vars cut from a flat (B, C, A) array.
    fn levels(&self, flat: &Tensor) -> Vec<Var> {
        let (b, c, _) = flat.dims3().unwrap();
        let mut off = 0;
        self.shapes
            .iter()
            .map(|&(h, w)| {
                let t = flat.narrow(2, off, h * w).unwrap().reshape((b, c, h, w)).unwrap().contiguous().unwrap();
                off += h * w;
                Var::from_tensor(&t).unwrap()
            })
            .collect()
    }
}

fn flat(levels: &[Tensor]) -> Tensor {
    let f: Vec<Tensor> = levels.iter().map(|t| t.flatten_from(2).unwrap()).collect();
    Tensor::cat(&f, 2).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// (max |a − b| / max |b|, worst per-element excess over the element bound).
fn grad_err(ours: &[f32], theirs: &[f32]) -> (f64, f64) {
    assert_eq!(ours.len(), theirs.len());
    let scale = theirs.iter().fold(0f64, |m, &v| m.max(v.abs() as f64)).max(1e-30);
    let mut max_d = 0f64;
    let mut worst = 0f64;
    for (&o, &t) in ours.iter().zip(theirs) {
        let d = (o as f64 - t as f64).abs();
        max_d = max_d.max(d);
        worst = worst.max(d / (1e-4 * (t as f64).abs() + 1e-6 * scale));
    }
    (max_d / scale, worst)
}

struct Errors {
    items: f64,
    loss: f64,
    grad_boxes: (f64, f64),
    grad_scores: (f64, f64),
}

fn run(case: &Case, loss: &DetectionLoss) -> Errors {
    let bv = case.levels(&case.arrays["boxes"]);
    let sv = case.levels(&case.arrays["scores"]);
    let out = HeadOutput {
        box_levels: bv.iter().map(|v| v.as_tensor().clone()).collect(),
        cls_levels: sv.iter().map(|v| v.as_tensor().clone()).collect(),
        strides: STRIDES.to_vec(),
        reg_max: 16,
        nc: case.nc,
    };
    let lo = loss.compute(&out, &case.targets()).unwrap();
    let want = case.vec_f32("items");
    let items = (0..3)
        .map(|i| {
            rel(lo.items[i] as f64, want[i] as f64)
                .min((lo.items[i] - want[i]).abs() as f64 / want.iter().fold(0f32, |m, v| m.max(v.abs())) as f64)
        })
        .fold(0f64, f64::max);
    let total = lo.loss.to_scalar::<f32>().unwrap() as f64;
    let lerr = rel(total, case.vec_f32("loss")[0] as f64);
    let grads = lo.loss.backward().unwrap();
    let g = |vs: &[Var]| -> Vec<f32> {
        let ts: Vec<Tensor> = vs.iter().map(|v| grads.get(v.as_tensor()).expect("gradient").clone()).collect();
        flat(&ts).flatten_all().unwrap().to_vec1().unwrap()
    };
    Errors {
        items,
        loss: lerr,
        grad_boxes: grad_err(&g(&bv), &case.vec_f32("grad_boxes")),
        grad_scores: grad_err(&g(&sv), &case.vec_f32("grad_scores")),
    }
}

#[test]
fn items_loss_and_gradients_match_ultralytics() {
    for name in CASES {
        let case = Case::load(name);
        let e = run(&case, &case.loss());
        eprintln!(
            "{name}: items {:.1e}, loss {:.1e}, grad boxes {:.1e} (element {:.2}), grad scores {:.1e} (element {:.2})",
            e.items, e.loss, e.grad_boxes.0, e.grad_boxes.1, e.grad_scores.0, e.grad_scores.1
        );
        assert!(e.items <= 2e-6, "{name}: items relative error {:e}", e.items);
        assert!(e.loss <= 2e-6, "{name}: loss relative error {:e}", e.loss);
        for (what, (m, el)) in [("boxes", e.grad_boxes), ("scores", e.grad_scores)] {
            assert!(m <= 1e-5, "{name}: grad {what} relative error {m:e}");
            assert!(el <= 1.0, "{name}: grad {what}: an element is {el:.2}x over its bound");
        }
    }
}

#[test]
fn assignment_matches_ultralytics() {
    for name in CASES {
        let case = Case::load(name);
        let loss = case.loss();
        let bv = case.levels(&case.arrays["boxes"]);
        let sv = case.levels(&case.arrays["scores"]);
        let out = HeadOutput {
            box_levels: bv.iter().map(|v| v.as_tensor().detach()).collect(),
            cls_levels: sv.iter().map(|v| v.as_tensor().detach()).collect(),
            strides: STRIDES.to_vec(),
            reg_max: 16,
            nc: case.nc,
        };
        let pos = loss.assignments(&out, &case.targets()).unwrap();
        let fg: Vec<Vec<u8>> = case.arrays["fg"].to_vec2().unwrap();
        let gt: Vec<Vec<i64>> = case.arrays["gt_idx"].to_vec2().unwrap();
        let ts: Vec<Vec<f32>> = case.arrays["tscore"].to_vec2().unwrap();
        let mut worst = 0f64;
        for b in 0..case.bs {
            let want: Vec<usize> = (0..fg[b].len()).filter(|&a| fg[b][a] != 0).collect();
            let got: Vec<usize> = pos[b].iter().map(|p| p.anchor).collect();
            assert_eq!(got, want, "{name} image {b}: foreground anchors");
            for p in &pos[b] {
                assert_eq!(p.gt as i64, gt[b][p.anchor], "{name} image {b} anchor {}: assigned box", p.anchor);
                let t = ts[b][p.anchor] as f64;
                worst = worst.max((p.score as f64 - t).abs() / t.abs().max(1e-6));
            }
        }
        eprintln!(
            "{name}: {} foreground anchors, target score error {worst:.1e}",
            pos.iter().map(Vec::len).sum::<usize>()
        );
        assert!(worst <= 5e-5, "{name}: target scores differ by {worst:e}");
    }
    let dense = Case::load("dense");
    assert!(dense.arrays["multi"].to_vec1::<i64>().unwrap()[0] > 10, "the dense case must exercise multi-box anchors");
}

#[test]
fn a_wrong_assigner_setting_breaks_parity() {
    let case = Case::load("ordinary");
    for (what, set) in [("topk 9", (9usize, 6.0f32)), ("beta 5", (10, 5.0))] {
        let mut loss = case.loss();
        loss.assigner.topk = set.0;
        loss.assigner.beta = set.1;
        let e = run(&case, &loss);
        eprintln!("{what}: items {:.1e}, grad boxes {:.1e}", e.items, e.grad_boxes.0);
        assert!(e.items > 1e-3 && e.grad_boxes.0 > 1e-3, "{what} should not match ultralytics");
    }
}

#[test]
fn class_weights_match_ultralytics() {
    let case = Case::load("cls_pw");
    let counts: Vec<usize> =
        case.arrays["class_counts"].to_vec1::<i64>().unwrap().into_iter().map(|c| c as usize).collect();
    let pw = case.arrays["cls_pw"].to_vec1::<f64>().unwrap()[0];
    let ours = class_weights(&counts, pw).unwrap();
    let theirs = case.vec_f32("class_weights");
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(rel(*a as f64, *b as f64) < 1e-6, "{ours:?} vs {theirs:?}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let case = Case::load("ordinary");
    let loss = case.loss();
    let head = |boxes: &Tensor| HeadOutput {
        box_levels: case.levels(boxes).iter().map(|v| v.as_tensor().detach()).collect(),
        cls_levels: case.levels(&case.arrays["scores"]).iter().map(|v| v.as_tensor().detach()).collect(),
        strides: STRIDES.to_vec(),
        reg_max: 16,
        nc: case.nc,
    };
    let out = head(&case.arrays["boxes"]);
    // A class id ≥ nc names the image.
    let mut t = case.targets();
    t.cls[5] = case.nc;
    let img = t.batch_idx[5];
    let e = loss.compute(&out, &t).unwrap_err().to_string();
    assert!(e.contains(&format!("image {img}")) && e.contains("class"), "{e}");
    // NaN in a target box.
    let mut t = case.targets();
    t.bboxes[0][2] = f32::NAN;
    assert!(loss.compute(&out, &t).unwrap_err().to_string().contains("non-finite"));
    // Inf in a prediction.
    let mut b = case.vec_f32("boxes");
    b[1234] = f32::INFINITY;
    let bt = Tensor::from_vec(b, case.arrays["boxes"].dims(), &candle_core::Device::Cpu).unwrap();
    let e = loss.compute(&head(&bt), &case.targets()).unwrap_err().to_string();
    assert!(e.contains("non-finite"), "{e}");
    // An image index outside the batch.
    let mut t = case.targets();
    t.batch_idx[0] = case.bs;
    assert!(loss.compute(&out, &t).is_err());
}

/// Eval-mode outputs (no autograd graph, as in validation) give the same items and a plain loss.
#[test]
fn untracked_outputs_give_the_same_items() {
    let case = Case::load("dense");
    let loss = case.loss();
    let out = HeadOutput {
        box_levels: case.levels(&case.arrays["boxes"]).iter().map(|v| v.as_tensor().detach()).collect(),
        cls_levels: case.levels(&case.arrays["scores"]).iter().map(|v| v.as_tensor().detach()).collect(),
        strides: STRIDES.to_vec(),
        reg_max: 16,
        nc: case.nc,
    };
    let lo = loss.compute(&out, &case.targets()).unwrap();
    let want = case.vec_f32("items");
    for i in 0..3 {
        assert!(rel(lo.items[i] as f64, want[i] as f64) <= 2e-6, "item {i}: {} vs {}", lo.items[i], want[i]);
    }
    assert!(!lo.loss.track_op());
    assert!(rel(lo.loss.to_scalar::<f32>().unwrap() as f64, case.vec_f32("loss")[0] as f64) <= 2e-6);
}
