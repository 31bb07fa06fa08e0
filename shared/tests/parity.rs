//! Parity with ultralytics (the network's acceptance test).
//!
//! Fixtures in `tests/fixtures/parity/` come from `scripts/fixtures/make_parity.py`, run with
//! ultralytics 8.4 + PyTorch: a yolov8n (nc=4, seeded random weights, fp16 `model` entry as in
//! a finished `best.pt`) and a small custom-yaml model (C3/SPP/Bottleneck rows, two levels, fp32
//! `ema` entry as in a mid-training `last.pt`), four PNG images that exercise every letterbox
//! path, ultralytics' raw head outputs on its own letterboxed input, and `predict()`'s final
//! detections.
//!
//! Checked here:
//! - both `.pt` files load (names, nc, architecture from the pickled yaml, parameter count);
//! - our letterbox reproduces ultralytics' network input (cv2 resize arithmetic);
//! - raw outputs (box distributions, class logits) and decoded predictions on ultralytics'
//!   input match with relative error ≤ 1e-4 (max |ours − theirs| / max |theirs| per tensor);
//! - end-to-end `predict` detections match: same count and classes, boxes ±0.5 px, scores ±1e-3.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use kubeyolo::data::image::{letterbox, load_rgb, Letterbox};
use kubeyolo::nn::predict::{predict_path, PredictConfig};
use kubeyolo::nn::weights::{load_model, LoadedModel};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/parity")
}

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("expected.json")).unwrap()).unwrap()
}

fn rel_err(ours: &Tensor, theirs: &Tensor) -> f32 {
    assert_eq!(ours.dims(), theirs.dims());
    let diff = (ours - theirs).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
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
    for img in ["img_pad", "img_down", "img_up", "img_half"] {
        let npz = fixtures().join(format!("{stem}__{img}.npz"));
        if !npz.exists() {
            continue;
        }
        let arrays: std::collections::HashMap<String, Tensor> = Tensor::read_npz(&npz).unwrap().into_iter().collect();
        let input = &arrays["input"]; // (H, W, 3) u8 RGB
        let x = (input.permute((2, 0, 1)).unwrap().unsqueeze(0).unwrap().to_dtype(DType::F32).unwrap() / 255.0).unwrap();
        let out = lm.model.forward_eval(&x).unwrap();
        for (what, ours, theirs) in [
            ("boxes", out.raw.boxes().unwrap(), &arrays["boxes"]),
            ("scores", out.raw.scores().unwrap(), &arrays["scores"]),
            ("decoded", out.decoded.clone(), &arrays["decoded"]),
        ] {
            let e = rel_err(&ours, theirs);
            eprintln!("{name} {img} {what}: relative error {e:.2e}");
            assert!(e <= 1e-4, "{name} {img} {what}: relative error {e:e} > 1e-4");
        }
        // Our letterbox of the PNG vs the input ultralytics fed the network.
        let rgb = load_rgb(&fixtures().join(format!("{img}.png"))).unwrap();
        let (boxed, _) = letterbox(&rgb, &Letterbox::predict(320, 32));
        let theirs: Vec<u8> = input.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(boxed.as_raw().len(), theirs.len(), "{img}: letterbox shape");
        let diffs: Vec<i32> = boxed.as_raw().iter().zip(&theirs).map(|(&a, &b)| (a as i32 - b as i32).abs()).collect();
        let max = diffs.iter().max().copied().unwrap_or(0);
        let n = diffs.iter().filter(|&&d| d > 0).count();
        eprintln!("{img}: letterbox max diff {max}, {n} of {} values differ", diffs.len());
        assert!(max <= 1 && n * 1000 <= diffs.len(), "{img}: letterbox differs from cv2 (max {max}, {n} of {} values)", diffs.len());
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
        let r = predict_path(&lm.model, &lm.names, &fixtures().join(file), &cfg, &Device::Cpu).unwrap();
        let want_xyxy = want["xyxy"].as_array().unwrap();
        let want_conf = want["conf"].as_array().unwrap();
        let want_cls = want["cls"].as_array().unwrap();
        assert_eq!(r.detections.len(), want_xyxy.len(), "{name} {file}: detection count");
        eprintln!("{name} {file}: {} detections", r.detections.len());
        assert_eq!([r.orig_shape.0, r.orig_shape.1], [want["orig_shape"][0].as_u64().unwrap() as usize, want["orig_shape"][1].as_u64().unwrap() as usize]);
        assert_eq!([r.input_shape.0, r.input_shape.1], [want["input_shape"][0].as_u64().unwrap() as usize, want["input_shape"][1].as_u64().unwrap() as usize]);
        // Both lists are sorted by confidence; near-equal scores may swap, so match greedily.
        let mut used = vec![false; want_xyxy.len()];
        for d in &r.detections {
            let hit = (0..want_xyxy.len()).find(|&j| {
                !used[j]
                    && want_cls[j].as_u64().unwrap() as usize == d.cls
                    && (want_conf[j].as_f64().unwrap() as f32 - d.conf).abs() <= 1e-3
                    && (0..4).all(|k| (want_xyxy[j][k].as_f64().unwrap() as f32 - d.xyxy[k]).abs() <= 0.5)
            });
            match hit {
                Some(j) => used[j] = true,
                None => panic!("{name} {file}: no ultralytics detection matches {d:?}"),
            }
        }
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
    assert_eq!(check_raw(name, &lm), 4);
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
    for k in ["model.0.bn.running_mean", "model.0.bn.running_var", "model.22.cv3.2.1.bn.running_mean", "model.22.cv3.2.1.bn.running_var"] {
        let e = rel_err(data[k].as_tensor(), &arrays[k]);
        assert!(e <= 1e-4, "{k}: relative error {e:e} > 1e-4");
    }
}
