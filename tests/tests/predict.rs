//! `yolo-predict` end to end: an ultralytics `.pt` from the parity fixtures on a folder of
//! images → YOLO txt, JSON, annotated images (detection counts equal ultralytics' predict()),
//! the model summary, and usage/weights errors with their exit codes.

use std::path::{Path, PathBuf};

use kubeyolo_e2e::{run, text};

fn parity() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/parity")
}

#[test]
fn predicts_a_folder_like_ultralytics() {
    let out = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    for f in ["img_pad.png", "img_up.png"] {
        std::fs::copy(parity().join(f), src.path().join(f)).unwrap();
    }
    let pt = parity().join("parity_n4_fp16.pt");
    let o = run(
        "yolo-predict",
        out.path(),
        &["--model", pt.to_str().unwrap(), "--source", src.path().to_str().unwrap(), "--imgsz", "320", "--out", out.path().to_str().unwrap(), "--save-img", "--save-conf"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let expected: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(parity().join("expected.json")).unwrap()).unwrap();
    let preds: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.path().join("predictions.json")).unwrap()).unwrap();
    assert_eq!(preds.as_array().unwrap().len(), 2);
    for p in preds.as_array().unwrap() {
        let name = Path::new(p["image"].as_str().unwrap()).file_name().unwrap().to_str().unwrap().to_string();
        let want = expected["models"]["parity_n4_fp16.pt"]["images"][&name]["cls"].as_array().unwrap().len();
        let dets = p["detections"].as_array().unwrap();
        assert_eq!(dets.len(), want, "{name}");
        assert!(["circle", "square", "triangle", "star"].contains(&dets[0]["name"].as_str().unwrap()));
        let stem = name.trim_end_matches(".png");
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
