//! `yolo-predict` end to end: an ultralytics `.pt` from the parity fixtures on a folder of
//! images (a PNG at the input size, an upscaled PNG, a downscaled JPEG) → YOLO txt, JSON,
//! annotated images, with the detections of ultralytics' predict() (`expected.json`: count, and
//! each detection's class, confidence and box), the model summary, and usage/weights errors with
//! their exit codes.
//!
//! Tolerances: those of shared/tests/parity.rs for the same pipeline (measured ≤ 4.2e-5 in
//! confidence, ≤ 8.3e-4 px in box), plus the 5-decimal rounding of predictions.json.

use std::path::{Path, PathBuf};

use kubeyolo_e2e::{run, text};

/// Detection confidence tolerance (parity.rs's TOL_DET_CONF + JSON rounding).
const TOL_CONF: f64 = 2e-4 + 1e-5;
/// Detection box tolerance in pixels (parity.rs's TOL_DET_PX + JSON rounding).
const TOL_PX: f64 = 4e-3 + 1e-5;

fn parity() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/parity")
}

#[test]
fn predicts_a_folder_like_ultralytics() {
    let out = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    for f in ["img_pad.png", "img_up.png", "img_jpeg.jpg"] {
        std::fs::copy(parity().join(f), src.path().join(f)).unwrap();
    }
    let pt = parity().join("parity_n4_fp16.pt");
    let o = run(
        "yolo-predict",
        out.path(),
        &[
            "--model",
            pt.to_str().unwrap(),
            "--source",
            src.path().to_str().unwrap(),
            "--imgsz",
            "320",
            "--out",
            out.path().to_str().unwrap(),
            "--save-img",
            "--save-conf",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(parity().join("expected.json")).unwrap()).unwrap();
    let preds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("predictions.json")).unwrap()).unwrap();
    assert_eq!(preds.as_array().unwrap().len(), 3);
    for p in preds.as_array().unwrap() {
        let name = Path::new(p["image"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
        let exp = &expected["models"]["parity_n4_fp16.pt"]["images"][&name];
        let want = exp["cls"].as_array().unwrap().len();
        let dets = p["detections"].as_array().unwrap();
        assert_eq!(dets.len(), want, "{name}");
        assert_eq!(p["orig_shape"], exp["orig_shape"], "{name}");
        assert_eq!(p["input_shape"], exp["input_shape"], "{name}");
        // Each detection matches one of ultralytics' (same class, confidence and box within
        // tolerance); scores equal to ~1e-5 may swap places in the sorted lists.
        let mut used = vec![false; want];
        for d in dets {
            let b = &d["box"];
            let xyxy = [
                b["x1"].as_f64().unwrap(),
                b["y1"].as_f64().unwrap(),
                b["x2"].as_f64().unwrap(),
                b["y2"].as_f64().unwrap(),
            ];
            let conf = d["confidence"].as_f64().unwrap();
            let hit = (0..want).find(|&j| {
                !used[j]
                    && exp["cls"][j] == d["class"]
                    && (exp["conf"][j].as_f64().unwrap() - conf).abs() <= TOL_CONF
                    && (0..4).all(|k| (exp["xyxy"][j][k].as_f64().unwrap() - xyxy[k]).abs() <= TOL_PX)
            });
            let Some(j) = hit else { panic!("{name}: no ultralytics detection within tolerance of {d}") };
            used[j] = true;
            assert_eq!(d["name"], ["circle", "square", "triangle", "star"][exp["cls"][j].as_u64().unwrap() as usize]);
        }
        let stem = name.rsplit_once('.').unwrap().0;
        let txt = std::fs::read_to_string(out.path().join(format!("labels/{stem}.txt"))).unwrap();
        assert_eq!(txt.lines().count(), want);
        let first: Vec<f64> = txt.lines().next().unwrap().split(' ').map(|v| v.parse().unwrap()).collect();
        assert_eq!(first.len(), 6, "class, xywhn, conf");
        assert!(first[1..5].iter().all(|v| (0.0..=1.0).contains(v)));
        assert!(out.path().join(&name).is_file(), "annotated image");
    }
}

#[test]
fn summary_and_errors() {
    let root = tempfile::tempdir().unwrap();
    let o = run("yolo-predict", root.path(), &["--model", "yolov8s.yaml", "--summary"]);
    assert!(o.status.success(), "{}", text(&o));
    let s = String::from_utf8_lossy(&o.stdout);
    assert!(s.contains("YOLOv8s summary: 129 layers, 11,166,560 parameters, 11,166,544 gradients, 28.8 GFLOPs"), "{s}");

    let o = run("yolo-predict", root.path(), &["--model", "yolov8n.yaml"]);
    assert_eq!(o.status.code(), Some(2), "missing --source: {}", text(&o));

    let bad = root.path().join("bad.pt");
    std::fs::write(&bad, "not a checkpoint").unwrap();
    let o = run("yolo-predict", root.path(), &["--model", bad.to_str().unwrap(), "--summary"]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an ultralytics detection checkpoint"));

    let o = run("yolo-predict", root.path(), &["--model", "nothere.pt", "--summary"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

/// The detections (class, confidence, box) of predictions.json, per image file name.
fn detections(out: &Path) -> std::collections::BTreeMap<String, Vec<(u64, f64, [f64; 4])>> {
    let preds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("predictions.json")).unwrap()).unwrap();
    preds
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let name = Path::new(p["image"].as_str().unwrap()).file_name().unwrap().to_string_lossy().to_string();
            let d = p["detections"].as_array().unwrap().iter().map(|d| {
                let b = &d["box"];
                let f = |k: &str| b[k].as_f64().unwrap();
                (d["class"].as_u64().unwrap(), d["confidence"].as_f64().unwrap(), [f("x1"), f("y1"), f("x2"), f("y2")])
            });
            (name, d.collect())
        })
        .collect()
}

/// A `.txt` list predicted in batches of 2 (images of one shape keep the rectangle letterbox)
/// gives the detections of a glob predicted one by one; a video is refused with a usage error.
#[test]
fn batches_lists_and_globs() {
    let src = tempfile::tempdir().unwrap();
    for f in ["a.png", "b.png", "c.png"] {
        std::fs::copy(parity().join("img_pad.png"), src.path().join(f)).unwrap();
    }
    std::fs::write(src.path().join("list.txt"), "a.png\nb.png\nc.png\n").unwrap();
    let pt = parity().join("parity_n4_fp16.pt");
    let predict = |source: &str, batch: &str, out: &Path| {
        let o = run(
            "yolo-predict",
            out,
            &[
                "--model",
                pt.to_str().unwrap(),
                "--source",
                source,
                "--imgsz",
                "320",
                "--batch",
                batch,
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        detections(out)
    };
    let (o1, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let one = predict(&format!("{}/*.png", src.path().display()), "1", o1.path());
    let two = predict(src.path().join("list.txt").to_str().unwrap(), "2", o2.path());
    assert_eq!(one.keys().collect::<Vec<_>>(), ["a.png", "b.png", "c.png"]);
    assert_eq!(one.keys().collect::<Vec<_>>(), two.keys().collect::<Vec<_>>());
    for (name, d1) in &one {
        let d2 = &two[name];
        assert!(!d1.is_empty() && d1.len() == d2.len(), "{name}: {} vs {} detections", d1.len(), d2.len());
        for (a, b) in d1.iter().zip(d2) {
            // Same input to the network: the batch-parallel path differs only in summation order.
            assert!(
                a.0 == b.0 && (a.1 - b.1).abs() < 1e-4 && (0..4).all(|k| (a.2[k] - b.2[k]).abs() < 1e-3),
                "{name}: {a:?} vs {b:?}"
            );
        }
    }
    let video = src.path().join("clip.mp4");
    std::fs::write(&video, b"not decoded").unwrap();
    let o = run("yolo-predict", src.path(), &["--model", pt.to_str().unwrap(), "--source", video.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("ffmpeg"), "{}", text(&o));
}
