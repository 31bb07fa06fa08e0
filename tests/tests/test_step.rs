//! `yolo-test` end to end: a briefly trained yolov8n (`tests/fixtures/val_parity/best.pt`, made
//! by `scripts/fixtures/make_val_parity.py`) on kubeyolo's synthetic dataset, regenerated here
//! from the same seed, must report the mAP ultralytics' `model.val()` reported (±0.002), and write
//! every output the pipeline and users read.

use std::path::{Path, PathBuf};

use kubeyolo::data::synth::{self, SynthSpec};
use kubeyolo_e2e::{mlflow, run, text};
use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/val_parity")
}

fn expected() -> Value {
    let p = fixture_dir().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

/// Must match `SYNTH` in scripts/fixtures/make_val_parity.py.
fn synth_spec(images: [usize; 3]) -> SynthSpec {
    SynthSpec {
        images_per_split: images,
        imgsz: 128,
        nc: 4,
        max_objects: 4,
        background_fraction: 0.1,
        rect: true,
        seed: 7,
        jpeg: false,
        yaml_name: "data-synth.yaml".into(),
    }
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no number '{key}' in {v}"))
}

struct Run {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    out: std::process::Output,
}

fn run_test_step(images: [usize; 3], extra: &[&str]) -> Run {
    run_test_step_with(images, extra, |_| {})
}

fn run_test_step_with(images: [usize; 3], extra: &[&str], edit: impl FnOnce(&Path)) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    synth::generate(&root.join("synth"), &synth_spec(images)).unwrap();
    edit(&root.join("synth"));
    let weights = fixture_dir().join("best.pt");
    let exec = root.join("kfp/output_metadata.json");
    let mut args: Vec<String> = vec![
        "--best-pt".into(),
        root.join("runs/train/weights/best.pt").display().to_string(), // absent: falls back to last
        "--last-pt".into(),
        weights.display().to_string(),
        "--data-yaml".into(),
        "synth/data-synth".into(),
        "--imgsz".into(),
        "128".into(),
        "--device".into(),
        "cpu".into(),
        "--out-metrics".into(),
        root.join("kfp/test_metrics").display().to_string(),
        "--out-v1-metrics".into(),
        root.join("kfp/mlpipeline-metrics.json").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = std::process::Command::new(kubeyolo_e2e::bin("yolo-test"))
        .args(&argv)
        .env("KUBEYOLO_DATA_ROOT", &root)
        .env("KUBEYOLO_KFP_EXECUTOR_OUTPUT", &exec)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .expect("start yolo-test");
    Run { _tmp: tmp, root, out }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))).unwrap()
}

#[test]
fn test_step_matches_ultralytics_val_and_writes_outputs() {
    let exp = expected();
    let r = run_test_step([1, 32, 48], &[]);
    let log = text(&r.out);
    assert!(r.out.status.success(), "{log}");
    assert!(log.contains("testing last weights"), "best.pt is absent, last.pt must be used with a warning\n{log}");
    assert!(log.contains("Class") && log.contains("mAP50-95)") && log.contains("all"), "ultralytics-style table\n{log}");

    let out_dir = r.root.join("runs/test");
    let m = read_json(&out_dir.join("metrics.json"));
    let got = &m["result"]["metrics"];
    let want = &exp["splits"]["test"];
    assert_eq!(m["split"], "test");
    for (g, w) in [("map50", "map50"), ("map50_95", "map"), ("map75", "map75")] {
        let (gv, wv) = (num(got, g), num(want, w));
        assert!((gv - wv).abs() <= 0.002, "{g}: kubeyolo {gv} vs ultralytics {wv}\n{log}");
    }
    assert!(num(want, "map50") > 0.05, "the fixture model must detect something for the comparison to mean anything");
    assert_eq!(num(got, "instances"), num(want, "instances"), "ground-truth count");
    for (name, wv) in want["per_class_map"].as_object().unwrap() {
        let row = got["classes"].as_array().unwrap().iter().find(|c| c["name"] == *name).unwrap_or_else(|| panic!("class {name}"));
        let gv = num(row, "map50_95");
        assert!((gv - wv.as_f64().unwrap()).abs() <= 0.005, "class {name}: {gv} vs {wv}");
    }

    // per-class CSV: header + all + one row per class with labels
    let csv = std::fs::read_to_string(out_dir.join("per_class.csv")).unwrap();
    assert!(csv.starts_with("class,images,instances,precision,recall"), "{csv}");
    assert_eq!(csv.lines().count(), 2 + want["per_class_map"].as_object().unwrap().len(), "{csv}");

    // KFP: v1 metrics (sanitised names), v2 artifact file and executor-output metadata
    let v1 = read_json(&r.root.join("kfp/mlpipeline-metrics.json"));
    let names: Vec<&str> = v1["metrics"].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"map50-95") && names.contains(&"map50"), "{names:?}");
    let art = read_json(&r.root.join("kfp/test_metrics"));
    assert!((num(&art, "mAP50-95") - num(got, "map50_95")).abs() < 1e-12);
    let exec = read_json(&r.root.join("kfp/output_metadata.json"));
    let meta = &exec["artifacts"]["test_metrics"]["artifacts"][0]["metadata"];
    assert!(meta["mAP50"].is_number(), "{exec}");

    // charts
    for f in ["PR_curve.png", "F1_curve.png", "confusion_matrix.png", "confusion_matrix_normalized.png"] {
        let bytes = std::fs::read(out_dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(bytes.starts_with(b"\x89PNG"), "{f}");
    }
}

#[test]
fn falls_back_to_val_without_test_split() {
    let exp = expected();
    // a corrupt image is skipped (ultralytics drops it too), so the numbers do not change
    let r = run_test_step_with([1, 32, 0], &["--no-plots"], |d| {
        std::fs::write(d.join("images/val/zz_corrupt.png"), b"not a png").unwrap();
    });
    let log = text(&r.out);
    assert!(r.out.status.success(), "{log}");
    assert!(log.contains("no 'test' split; testing on 'val'"), "{log}");
    assert!(log.contains("skipped") && log.contains("zz_corrupt.png"), "{log}");
    let m = read_json(&r.root.join("runs/test/metrics.json"));
    assert_eq!(m["split"], "val");
    let (gv, wv) = (num(&m["result"]["metrics"], "map50_95"), num(&exp["splits"]["val"], "map"));
    assert!((gv - wv).abs() <= 0.002, "val mAP50-95: kubeyolo {gv} vs ultralytics {wv}\n{log}");
}

/// `--square` (ultralytics `rect=False`): every image letterboxed to imgsz × imgsz.
#[test]
fn square_inputs_match_ultralytics_rect_false() {
    let exp = expected();
    let r = run_test_step([1, 32, 48], &["--square", "--no-plots", "--split", "test"]);
    let log = text(&r.out);
    assert!(r.out.status.success(), "{log}");
    let got = &read_json(&r.root.join("runs/test/metrics.json"))["result"]["metrics"];
    let want = &exp["splits"]["test_square"];
    for (g, w) in [("map50", "map50"), ("map50_95", "map")] {
        let (gv, wv) = (num(got, g), num(want, w));
        assert!((gv - wv).abs() <= 0.002, "{g}: kubeyolo {gv} vs ultralytics {wv}\n{log}");
    }
}

#[test]
fn clear_errors_for_missing_weights_and_split() {
    let tmp = tempfile::tempdir().unwrap();
    synth::generate(&tmp.path().join("synth"), &synth_spec([1, 4, 0])).unwrap();
    let out = run("yolo-test", tmp.path(), &["--best-pt", "nope/best.pt", "--data-yaml", "synth/data-synth"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("weights file not found"), "{}", text(&out));

    let w = fixture_dir().join("best.pt");
    let out = run("yolo-test", tmp.path(), &["--weights", w.to_str().unwrap(), "--data-yaml", "synth/data-synth", "--split", "train2"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no 'train2' split"), "{}", text(&out));

    let out = run("yolo-test", tmp.path(), &["--help"]);
    assert!(out.status.success() && text(&out).contains("--out-metrics") && text(&out).contains("Examples"), "{}", text(&out));
}

/// With an MLflow server (scripts/services.sh), the step logs its metrics and parameters.
#[test]
fn logs_metrics_to_mlflow_when_configured() {
    let Some(uri) = mlflow::server("logs_metrics_to_mlflow_when_configured") else { return };
    let experiment = format!("yolo-test-e2e-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    synth::generate(&tmp.path().join("synth"), &synth_spec([1, 8, 0])).unwrap();
    let w = fixture_dir().join("best.pt");
    let mut cmd = std::process::Command::new(kubeyolo_e2e::bin("yolo-test"));
    cmd.args(["--weights", w.to_str().unwrap(), "--data-yaml", "synth/data-synth", "--split", "val", "--imgsz", "128", "--no-plots"])
        .env("KUBEYOLO_DATA_ROOT", tmp.path())
        .env("KUBEYOLO_KFP_EXECUTOR_OUTPUT", "none");
    mlflow::track_into(&mut cmd, &uri, &experiment);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let m = read_json(&tmp.path().join("runs/test/metrics.json"));
    let want = num(&m["result"]["metrics"], "map50_95");

    let runs = mlflow::runs(&uri, &experiment);
    let run = &runs[0];
    assert_eq!(run["info"]["status"], "FINISHED", "{run}");
    let metrics = run["data"]["metrics"].as_array().unwrap();
    let got = metrics.iter().find(|x| x["key"] == "test/mAP50-95").unwrap_or_else(|| panic!("no test/mAP50-95 in {metrics:?}"));
    assert!((num(got, "value") - want).abs() < 1e-9);
    let params = run["data"]["params"].as_array().unwrap();
    assert!(params.iter().any(|p| p["key"] == "test/split" && p["value"] == "val"), "{params:?}");
}
