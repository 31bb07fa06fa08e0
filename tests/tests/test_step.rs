//! `yolo-test` end to end: a briefly trained yolov8n (`tests/fixtures/val_parity/best.pt`, made
//! by `scripts/fixtures/make_val_parity.py`) on kubeyolo's synthetic dataset, regenerated here
//! from the same seed, must report what ultralytics' `model.val()` reported — P, R, mAP50, mAP75,
//! mAP50-95 and per class P, R, mAP50, mAP50-95 — to [`TOL_MAP`] / [`TOL_PR`], and write every
//! output the pipeline and users read.
//!
//! Tolerances from the measured differences (2026-12-01, all four parity tests): the mAPs differ
//! by ≤ 1e-15 (same detections in the same confidence order, the same f64 arithmetic), so
//! `TOL_MAP` = 1e-12. P and R are read off the F1-optimal point of curves interpolated at the
//! detections' confidences, which carry the forward pass's float differences (~1e-7 relative):
//! measured ≤ 2.5e-6, so `TOL_PR` = 1e-5. One validation setting off (`--iou 0.72`,
//! `--conf 0.005`, `--max-det 50`) moves some metric by 5e-4 to 6e-3, ≥ 10⁵ × its tolerance
//! ([`a_wrong_setting_is_caught`] checks that stays true).

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

/// The JPEG dataset (`SYNTH_JPEG` in make_val_parity.py): long side 160, tested at imgsz 128, so
/// decoding (libjpeg-turbo, as cv2) and the letterbox downscale are compared too.
fn jpeg_spec() -> SynthSpec {
    SynthSpec { images_per_split: [1, 1, 24], imgsz: 160, seed: 11, jpeg: true, ..synth_spec([0; 3]) }
}

/// Parity tolerance for the mAPs (see the module doc).
const TOL_MAP: f64 = 1e-12;
/// Parity tolerance for P and R (see the module doc).
const TOL_PR: f64 = 1e-5;

/// The tolerance of one metric name from [`metric_errors`].
fn tol(metric: &str) -> f64 {
    if metric.ends_with("precision") || metric.ends_with("recall") {
        TOL_PR
    } else {
        TOL_MAP
    }
}

/// Every (metric, |kubeyolo − ultralytics|): overall P, R, mAP50, mAP75, mAP50-95, then per class
/// P, R, mAP50, mAP50-95.
fn metric_errors(got: &Value, want: &Value) -> Vec<(String, f64)> {
    let mut e = Vec::new();
    for (g, w) in
        [("precision", "precision"), ("recall", "recall"), ("map50", "map50"), ("map75", "map75"), ("map50_95", "map")]
    {
        e.push((g.to_string(), (num(got, g) - num(want, w)).abs()));
    }
    for (name, wv) in want["per_class_map"].as_object().unwrap() {
        let row = got["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == *name)
            .unwrap_or_else(|| panic!("class {name}"));
        e.push((format!("{name}/map50_95"), (num(row, "map50_95") - wv.as_f64().unwrap()).abs()));
        for (g, w) in [("precision", "per_class_p"), ("recall", "per_class_r"), ("map50", "per_class_map50")] {
            e.push((format!("{name}/{g}"), (num(row, g) - num(&want[w], name)).abs()));
        }
    }
    e
}

fn assert_parity(got: &Value, want: &Value, log: &str) {
    assert_eq!(num(got, "instances"), num(want, "instances"), "ground-truth count");
    assert_eq!(num(got, "images"), num(want, "images"), "image count");
    let errors = metric_errors(got, want);
    let bad: Vec<String> =
        errors.iter().filter(|(k, d)| *d > tol(k)).map(|(k, d)| format!("{k}: off by {d:.3e}")).collect();
    assert!(bad.is_empty(), "kubeyolo vs ultralytics beyond {TOL_MAP} (mAP) / {TOL_PR} (P, R): {bad:?}\n{log}");
    let worst = |pr: bool| errors.iter().filter(|(k, _)| (tol(k) == TOL_PR) == pr).map(|(_, d)| *d).fold(0.0, f64::max);
    eprintln!("parity: largest difference mAP {:.3e}, P/R {:.3e}", worst(false), worst(true));
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
    assert!(
        log.contains("Class") && log.contains("mAP50-95)") && log.contains("all"),
        "ultralytics-style table\n{log}"
    );

    let out_dir = r.root.join("runs/test");
    let m = read_json(&out_dir.join("metrics.json"));
    let got = &m["result"]["metrics"];
    let want = &exp["splits"]["test"];
    assert_eq!(m["split"], "test");
    assert_parity(got, want, &log);
    assert!(num(want, "map50") > 0.05, "the fixture model must detect something for the comparison to mean anything");

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
    assert_parity(&m["result"]["metrics"], &exp["splits"]["val"], &log);
}

/// `--square` (ultralytics `rect=False`): every image letterboxed to imgsz × imgsz.
#[test]
fn square_inputs_match_ultralytics_rect_false() {
    let exp = expected();
    let r = run_test_step([1, 32, 48], &["--square", "--no-plots", "--split", "test"]);
    let log = text(&r.out);
    assert!(r.out.status.success(), "{log}");
    let got = &read_json(&r.root.join("runs/test/metrics.json"))["result"]["metrics"];
    assert_parity(got, &exp["splits"]["test_square"], &log);
}

/// JPEG images whose long side (160) is not imgsz (128): libjpeg-turbo decoding as cv2 and the
/// cv2-exact letterbox downscale.
#[test]
fn jpeg_images_resized_match_ultralytics() {
    let exp = expected();
    let tmp = tempfile::tempdir().unwrap();
    synth::generate(&tmp.path().join("synth"), &jpeg_spec()).unwrap();
    let w = fixture_dir().join("best.pt");
    let out = run(
        "yolo-test",
        tmp.path(),
        &[
            "--weights",
            w.to_str().unwrap(),
            "--data-yaml",
            "synth/data-synth",
            "--split",
            "test",
            "--imgsz",
            "128",
            "--no-plots",
        ],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    let m = read_json(&tmp.path().join("runs/test/metrics.json"));
    assert_parity(&m["result"]["metrics"], &exp["splits"]["test_jpeg160"], &log);
}

/// The tolerance catches one wrong validation setting: each moves some metric far past [`TOL`].
#[test]
fn a_wrong_setting_is_caught() {
    let exp = expected();
    for wrong in [["--iou", "0.72"], ["--conf", "0.005"], ["--max-det", "50"]] {
        let r = run_test_step([1, 1, 48], &["--no-plots", "--split", "test", wrong[0], wrong[1]]);
        let log = text(&r.out);
        assert!(r.out.status.success(), "{log}");
        let got = &read_json(&r.root.join("runs/test/metrics.json"))["result"]["metrics"];
        let errors = metric_errors(got, &exp["splits"]["test"]);
        let (k, d) = errors.iter().max_by(|a, b| (a.1 / tol(&a.0)).total_cmp(&(b.1 / tol(&b.0)))).unwrap();
        eprintln!("{wrong:?}: largest difference {d:.3e} ({k}), {:.0}x its tolerance", d / tol(k));
        assert!(
            *d > 10.0 * tol(k),
            "{wrong:?} moves no metric past 10x its tolerance (best: {k} by {d:.3e}): parity would not see it"
        );
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
    let out = run(
        "yolo-test",
        tmp.path(),
        &["--weights", w.to_str().unwrap(), "--data-yaml", "synth/data-synth", "--split", "train2"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("no 'train2' split"), "{}", text(&out));

    let out = run("yolo-test", tmp.path(), &["--help"]);
    assert!(
        out.status.success() && text(&out).contains("--out-metrics") && text(&out).contains("Examples"),
        "{}",
        text(&out)
    );
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
    cmd.args([
        "--weights",
        w.to_str().unwrap(),
        "--data-yaml",
        "synth/data-synth",
        "--split",
        "val",
        "--imgsz",
        "128",
        "--no-plots",
    ])
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
    let got = metrics
        .iter()
        .find(|x| x["key"] == "test/mAP50-95")
        .unwrap_or_else(|| panic!("no test/mAP50-95 in {metrics:?}"));
    assert!((num(got, "value") - want).abs() < 1e-9);
    let params = run["data"]["params"].as_array().unwrap();
    assert!(params.iter().any(|p| p["key"] == "test/split" && p["value"] == "val"), "{params:?}");
}
