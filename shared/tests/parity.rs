//! Parity with ultralytics (the network's acceptance test).
//!
//! Fixtures in `tests/fixtures/parity/` come from `scripts/fixtures/make_parity.py`, run with
//! ultralytics 8.4 + PyTorch: a yolov8n (nc=4, seeded random weights, fp16 `model` entry as in
//! a finished `best.pt`) and a small custom-yaml model (C3/SPP/Bottleneck rows, two levels, fp32
//! `ema` entry as in a mid-training `last.pt`), four PNG images that exercise every letterbox
//! path and a JPEG (640×427, downscaled to 320×224), ultralytics' raw head outputs on its own
//! letterboxed input, and `predict()`'s final detections.
//!
//! Checked here, each tolerance a few times the difference measured (2026-12-01, in brackets):
//! - both `.pt` files load (names, nc, architecture from the pickled yaml, parameter count);
//! - our decoding + letterbox reproduces ultralytics' network input (decoding exactly; the
//!   cv2-arithmetic resize within 1 grey level on ≤ [`MAX_LETTERBOX_DIFF_FRACTION`] of the values);
//! - on ultralytics' input, each output part separately, as max |ours − theirs|: raw box
//!   distribution logits ≤ [`TOL_BOX_LOGIT`], raw class logits ≤ [`TOL_CLS_LOGIT`], decoded boxes
//!   ≤ [`TOL_BOX_PX`] px, decoded class probabilities ≤ [`TOL_PROB`] (a relative error scaled by
//!   the largest value, as before, let probabilities drift by 0.03);
//! - end-to-end `predict` detections: same count, and detection by detection (ultralytics'
//!   order) the same class, boxes ≤ [`TOL_DET_PX`] px and confidences ≤ [`TOL_PROB`].

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use kubeyolo::data::image::{letterbox, load_rgb, Letterbox};
use kubeyolo::nn::fused::EvalNet;
use kubeyolo::nn::predict::{predict_path, PredictConfig};
use kubeyolo::nn::weights::{load_model, LoadedModel};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/parity")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

/// Raw DFL box-distribution logits [measured ≤ 9.6e-7].
const TOL_BOX_LOGIT: f32 = 4e-6;
/// Raw class logits [≤ 4.8e-6].
const TOL_CLS_LOGIT: f32 = 2e-5;
/// Decoded boxes on the network input, pixels [≤ 1.2e-4].
const TOL_BOX_PX: f32 = 5e-4;
/// Class probabilities on ultralytics' input [≤ 6e-7].
const TOL_PROB: f32 = 2e-6;
/// End-to-end detection confidences (our own decode + letterbox, whose resize differs from cv2
/// by 1 grey level on ≤ 0.15 % of the values) [≤ 4.2e-5].
const TOL_DET_CONF: f32 = 2e-4;
/// End-to-end detection boxes in original-image pixels [≤ 8.3e-4].
const TOL_DET_PX: f32 = 4e-3;
/// Letterboxed input values allowed to differ from cv2's (by 1) [≤ 0.145 %, the JPEG's noise].
const MAX_LETTERBOX_DIFF_FRACTION: f64 = 0.003;

fn max_abs(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    (ours - theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn rel_err(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    let diff =
        (ours - theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    let scale = theirs.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
    diff / scale.max(1e-12)
}

fn load(name: &str) -> LoadedModel {
    load_model(&fixtures().join(name), &Device::Cpu).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

/// Raw and decoded outputs on ultralytics' own letterboxed input, and our letterbox of the PNG.
fn check_raw(name: &str, lm: &LoadedModel) -> usize {
    let stem = name.trim_end_matches(".pt");
    let mut checked = 0;
    for img in ["img_pad.png", "img_down.png", "img_up.png", "img_half.png", "img_jpeg.jpg"] {
        let (img, ext) = img.split_once('.').unwrap();
        let npz = fixtures().join(format!("{stem}__{img}.npz"));
        if !npz.exists() {
            continue;
        }
        let arrays: std::collections::HashMap<String, Tensor> = Tensor::read_npz(&npz).unwrap().into_iter().collect();
        let input = &arrays["input"]; // (H, W, 3) u8 RGB
        let x =
            (input.permute((2, 0, 1)).unwrap().unsqueeze(0).unwrap().to_dtype(DType::F32).unwrap() / 255.0).unwrap();
        // Both eval paths: candle's unfolded forward and the folded CPU network (`nn::fused`).
        let out = lm.model.forward_eval(&x).unwrap();
        let (fused_dec, fused_raw) = EvalNet::new(&lm.model, &Device::Cpu).unwrap().forward(&x, true).unwrap();
        assert!(EvalNet::new(&lm.model, &Device::Cpu).unwrap().is_fused());
        let fused_raw = fused_raw.unwrap();
        for (path, dec, raw) in [("unfused", &out.decoded, &out.raw), ("fused", &fused_dec, &fused_raw)] {
            let theirs_dec = &arrays["decoded"];
            let nc = dec.dim(1).unwrap() - 4;
            for (what, ours, theirs, tol) in [
                ("raw box logits", raw.boxes().unwrap(), arrays["boxes"].clone(), TOL_BOX_LOGIT),
                ("raw class logits", raw.scores().unwrap(), arrays["scores"].clone(), TOL_CLS_LOGIT),
                ("decoded boxes", dec.narrow(1, 0, 4).unwrap(), theirs_dec.narrow(1, 0, 4).unwrap(), TOL_BOX_PX),
                ("class probabilities", dec.narrow(1, 4, nc).unwrap(), theirs_dec.narrow(1, 4, nc).unwrap(), TOL_PROB),
            ] {
                let e = max_abs(&ours, &theirs);
                eprintln!("{name} {img} {path} {what}: max abs difference {e:.2e}");
                assert!(e <= tol, "{name} {img} {path} {what}: max |ours - ultralytics| {e:e} > {tol:e}");
            }
        }
        // Our decoding + letterbox of the file vs the input ultralytics fed the network.
        let rgb = load_rgb(&fixtures().join(format!("{img}.{ext}"))).unwrap();
        let (boxed, _) = letterbox(&rgb, &Letterbox::predict(320, 32));
        let theirs: Vec<u8> = input.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(boxed.as_raw().len(), theirs.len(), "{img}: letterbox shape");
        let diffs: Vec<i32> = boxed.as_raw().iter().zip(&theirs).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let max = diffs.iter().max().copied().unwrap_or(0);
        let n = diffs.iter().filter(|&&d| d > 0).count();
        eprintln!("{img}: letterbox max diff {max}, {n} of {} values differ", diffs.len());
        let frac = n as f64 / diffs.len() as f64;
        assert!(
            max <= 1 && frac <= MAX_LETTERBOX_DIFF_FRACTION,
            "{img}: letterbox differs from cv2 (max {max}, {n} of {} values)",
            diffs.len()
        );
        checked += 1;
    }
    checked
}

/// End-to-end predict vs ultralytics `predict()` detections.
fn check_detections(name: &str, lm: &LoadedModel) {
    let exp = expected();
    let images = exp["models"][name]["images"].as_object().unwrap();
    let cfg = PredictConfig { imgsz: 320, conf: 0.25, iou: 0.7, ..Default::default() };
    for (file, want) in images {
        let r = predict_path(
            &EvalNet::new(&lm.model, &Device::Cpu).unwrap(),
            &lm.names,
            &fixtures().join(file),
            &cfg,
            &Device::Cpu,
        )
        .unwrap();
        let want_xyxy = want["xyxy"].as_array().unwrap();
        let want_conf = want["conf"].as_array().unwrap();
        let want_cls = want["cls"].as_array().unwrap();
        assert_eq!(r.detections.len(), want_xyxy.len(), "{name} {file}: detection count");
        eprintln!("{name} {file}: {} detections", r.detections.len());
        assert_eq!(
            [r.orig_shape.0, r.orig_shape.1],
            [want["orig_shape"][0].as_u64().unwrap() as usize, want["orig_shape"][1].as_u64().unwrap() as usize]
        );
        assert_eq!(
            [r.input_shape.0, r.input_shape.1],
            [want["input_shape"][0].as_u64().unwrap() as usize, want["input_shape"][1].as_u64().unwrap() as usize]
        );
        // Both lists are sorted by confidence; scores equal to ~1e-5 may swap places, so each of
        // ours is matched to an unused ultralytics detection of the same class within tolerance.
        let (mut worst_px, mut worst_conf) = (0f32, 0f32);
        let mut used = vec![false; want_xyxy.len()];
        for d in &r.detections {
            let diff = |j: usize| {
                let dc = (want_conf[j].as_f64().unwrap() as f32 - d.conf).abs();
                let dp =
                    (0..4).map(|k| (want_xyxy[j][k].as_f64().unwrap() as f32 - d.xyxy[k]).abs()).fold(0f32, f32::max);
                (dc, dp)
            };
            let hit = (0..want_xyxy.len()).find(|&j| {
                let (dc, dp) = diff(j);
                !used[j] && want_cls[j].as_u64().unwrap() as usize == d.cls && dc <= TOL_DET_CONF && dp <= TOL_DET_PX
            });
            let Some(j) = hit else { panic!("{name} {file}: no ultralytics detection within tolerance of {d:?}") };
            used[j] = true;
            let (dc, dp) = diff(j);
            worst_px = worst_px.max(dp);
            worst_conf = worst_conf.max(dc);
        }
        eprintln!("{name} {file}: detections max Δpx {worst_px:.2e}, max Δconf {worst_conf:.2e}");
    }
}

#[test]
fn yolov8n_fp16_pt_matches_ultralytics() {
    let name = "parity_n4_fp16.pt";
    let lm = load(name);
    assert_eq!(lm.names, vec!["circle", "square", "triangle", "star"]);
    assert_eq!(lm.model.nc, 4);
    assert_eq!(lm.model.strides, vec![8.0, 16.0, 32.0]);
    let params = expected()["models"][name]["params"].as_u64().unwrap() as usize;
    assert_eq!(lm.model.summary(640).parameters, params);
    assert_eq!(check_raw(name, &lm), 5);
    check_detections(name, &lm);
}

#[test]
fn custom_yaml_fp32_ema_pt_matches_ultralytics() {
    let name = "custom_fp32.pt";
    let lm = load(name);
    assert_eq!(lm.model.nc, 4);
    assert_eq!(lm.model.strides, vec![8.0, 16.0]);
    assert_eq!(lm.meta.epoch, Some(3));
    let params = expected()["models"][name]["params"].as_u64().unwrap() as usize;
    assert_eq!(lm.model.summary(640).parameters, params);
    assert_eq!(check_raw(name, &lm), 2);
    check_detections(name, &lm);
}

/// Training mode: BatchNorm on batch statistics, running statistics updated with momentum 0.03
/// and the unbiased variance, exactly as PyTorch.
#[test]
fn training_mode_forward_and_running_stats_match_pytorch() {
    let lm = load("parity_n4_fp16.pt");
    let arrays: std::collections::HashMap<String, Tensor> =
        Tensor::read_npz(fixtures().join("train_mode.npz")).unwrap().into_iter().collect();
    let mut v = Vec::with_capacity(2 * 3 * 128 * 128);
    for b in 0..2usize {
        for c in 0..3usize {
            for h in 0..128usize {
                for w in 0..128usize {
                    v.push(((7 * b + 13 * c + 31 * h + 17 * w) % 256) as f32 / 255.0);
                }
            }
        }
    }
    let x = Tensor::from_vec(v, (2, 3, 128, 128), &Device::Cpu).unwrap();
    let out = lm.model.forward_train(&x).unwrap();
    for (what, ours) in [("boxes", out.boxes().unwrap()), ("scores", out.scores().unwrap())] {
        let e = rel_err(&ours, &arrays[what]);
        eprintln!("train mode {what}: relative error {e:.2e}");
        assert!(e <= 1e-4, "train mode {what}: relative error {e:e} > 1e-4");
    }
    let data = lm.varmap.data().lock().unwrap();
    for k in [
        "model.0.bn.running_mean",
        "model.0.bn.running_var",
        "model.22.cv3.2.1.bn.running_mean",
        "model.22.cv3.2.1.bn.running_var",
    ] {
        let e = rel_err(data[k].as_tensor(), &arrays[k]);
        assert!(e <= 1e-4, "{k}: relative error {e:e} > 1e-4");
    }
}
