//! kubeyolo's metrics against the numbers ultralytics and pycocotools computed for the same
//! detections (`tests/fixtures/metrics/*.json`, made by `scripts/fixtures/make_metrics.py`).
//! Agreement must be within 1e-6 on every number, and exact on the matching and counts.

use std::path::PathBuf;

use kubeyolo::eval::coco::{CocoDt, CocoEval, CocoGt};
use kubeyolo::eval::metrics::{ConfusionMatrix, DetStats, Detection, GroundTruth, Matching};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/metrics");
    let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p.file_stem().unwrap().to_string_lossy().into_owned(), v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 10, "expected the committed fixtures, found {}", out.len());
    out
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn vec_f(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}

fn close(case: &str, what: &str, got: f64, want: f64) {
    assert!((got - want).abs() <= TOL, "{case}: {what}: kubeyolo {got} vs reference {want}");
}

fn close_vec(case: &str, what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{case}: {what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        close(case, &format!("{what}[{i}]"), *g, *w);
    }
}

struct Image {
    gts: Vec<GroundTruth>,
    crowd: Vec<bool>,
    dets: Vec<Detection>,
}

fn images(case: &Value) -> Vec<Image> {
    case["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|im| {
            let gts: Vec<GroundTruth> = im["gt"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| {
                    let g = vec_f(g);
                    GroundTruth { cls: g[0] as usize, bbox: [g[1] as f32, g[2] as f32, g[3] as f32, g[4] as f32] }
                })
                .collect();
            let crowd = match im.get("crowd") {
                Some(c) => c.as_array().unwrap().iter().map(|x| x.as_i64() == Some(1)).collect(),
                None => vec![false; gts.len()],
            };
            let dets = im["det"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| {
                    let d = vec_f(d);
                    Detection {
                        bbox: [d[0] as f32, d[1] as f32, d[2] as f32, d[3] as f32],
                        conf: d[4] as f32,
                        cls: d[5] as usize,
                    }
                })
                .collect();
            Image { gts, crowd, dets }
        })
        .collect()
}

fn names(case: &Value) -> Vec<String> {
    case["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
}

fn tp_rows(v: &Value) -> Vec<Vec<[bool; 10]>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|im| {
            im.as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    let mut r = [false; 10];
                    for (t, x) in row.as_array().unwrap().iter().enumerate() {
                        r[t] = x.as_i64() == Some(1);
                    }
                    r
                })
                .collect()
        })
        .collect()
}

#[test]
fn matching_and_ultralytics_metrics_agree() {
    for (name, case) in fixtures() {
        let exp = &case["expected"];
        let ims = images(&case);
        let mut stats = DetStats::new(Matching::Greedy);
        let want_tp = tp_rows(&exp["tp"]);
        for (k, im) in ims.iter().enumerate() {
            let tp = stats.add_image(&im.dets, &im.gts);
            assert_eq!(tp, want_tp[k], "{name}: image {k}: matching (tp) differs");
        }
        let m = stats.finish(&names(&case));
        let idx: Vec<usize> = m.classes.iter().map(|c| c.class).collect();
        let want_idx: Vec<usize> =
            exp["ap_class_index"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(idx, want_idx, "{name}: ap_class_index");
        let all_ap: Vec<f64> = m.all_ap.iter().flatten().copied().collect();
        let want_ap: Vec<f64> = exp["all_ap"].as_array().unwrap().iter().flat_map(vec_f).collect();
        close_vec(&name, "all_ap", &all_ap, &want_ap);
        close_vec(&name, "p", &m.classes.iter().map(|c| c.precision).collect::<Vec<_>>(), &vec_f(&exp["p"]));
        close_vec(&name, "r", &m.classes.iter().map(|c| c.recall).collect::<Vec<_>>(), &vec_f(&exp["r"]));
        close_vec(&name, "f1", &m.classes.iter().map(|c| c.f1).collect::<Vec<_>>(), &vec_f(&exp["f1"]));
        close(&name, "mp", m.precision, f(&exp["mp"]));
        close(&name, "mr", m.recall, f(&exp["mr"]));
        close(&name, "map50", m.map50, f(&exp["map50"]));
        close(&name, "map75", m.map75, f(&exp["map75"]));
        close(&name, "map", m.map50_95, f(&exp["map"]));
        // ultralytics 8.4's DetMetrics.fitness is mAP50-95, and so is ours
        close(&name, "fitness", m.fitness, f(&exp["fitness_ultralytics"]));
        close_vec(&name, "maps", &m.maps, &vec_f(&exp["maps"]));
        let nt: Vec<f64> = m.nt_per_class.iter().map(|&x| x as f64).collect();
        assert_eq!(nt, vec_f(&exp["nt_per_class"]), "{name}: nt_per_class");
        let ni: Vec<f64> = m.nt_per_image.iter().map(|&x| x as f64).collect();
        assert_eq!(ni, vec_f(&exp["nt_per_image"]), "{name}: nt_per_image");
        if let Some(s) = exp.get("prec_values_sum") {
            let got: f64 = m.curves.prec_values.iter().flatten().sum();
            assert!((got - f(s)).abs() < 1e-6 * f(s).abs().max(1.0), "{name}: prec_values sum {got} vs {}", f(s));
            let got: f64 = m.curves.f1_curve.iter().flatten().sum();
            let want = f(&exp["f1_curve_sum"]);
            assert!((got - want).abs() < 1e-6 * want.abs().max(1.0), "{name}: f1_curve sum {got} vs {want}");
        }
    }
}

#[test]
fn hungarian_matching_agrees_with_scipy() {
    for (name, case) in fixtures() {
        let Some(want) = case["expected"].get("tp_hungarian") else { continue };
        let want = tp_rows(want);
        let mut stats = DetStats::new(Matching::Hungarian);
        for (k, im) in images(&case).iter().enumerate() {
            assert_eq!(stats.add_image(&im.dets, &im.gts), want[k], "{name}: image {k}: Hungarian matching differs");
        }
    }
}

#[test]
fn confusion_matrix_agrees() {
    for (name, case) in fixtures() {
        let nc = names(&case).len();
        for (conf, key) in [(0.25f32, "0.25"), (0.001, "0.001")] {
            let mut cm = ConfusionMatrix::with_thresholds(nc, conf, 0.45);
            for im in images(&case) {
                cm.process(&im.dets, &im.gts);
            }
            let want: Vec<Vec<f64>> =
                case["expected"]["confusion"][key].as_array().unwrap().iter().map(vec_f).collect();
            assert_eq!(cm.matrix, want, "{name}: confusion matrix at conf {key}");
        }
    }
}

#[test]
fn coco_map_agrees_with_pycocotools() {
    for (name, case) in fixtures() {
        let mut ev = CocoEval::new(names(&case).len());
        for im in images(&case) {
            let gts = im
                .gts
                .iter()
                .zip(&im.crowd)
                .map(|(g, &crowd)| {
                    let [x1, y1, x2, y2] = g.bbox.map(|v| v as f64);
                    CocoGt { bbox: [x1, y1, x2 - x1, y2 - y1], cat: g.cls, iscrowd: crowd, area: None }
                })
                .collect();
            let dts = im
                .dets
                .iter()
                .map(|d| {
                    let [x1, y1, x2, y2] = d.bbox.map(|v| v as f64);
                    CocoDt { bbox: [x1, y1, x2 - x1, y2 - y1], cat: d.cls, score: d.conf as f64 }
                })
                .collect();
            ev.add_image(gts, dts);
        }
        let got = ev.summarize().as_array();
        close_vec(&name, "coco stats", &got, &vec_f(&case["expected"]["coco"]));
    }
}

/// The three validation charts render from real metrics and decode as PNGs of the expected size.
/// Set KUBEYOLO_KEEP_PLOTS=<dir> to keep them for a look.
#[test]
fn validation_plots_render() {
    let case = fixtures().into_iter().find(|(n, _)| n == "random_medium").unwrap().1;
    let mut stats = DetStats::new(Matching::Greedy);
    let nm = names(&case);
    let mut cm = ConfusionMatrix::new(nm.len());
    for im in images(&case) {
        stats.add_image(&im.dets, &im.gts);
        cm.process(&im.dets, &im.gts);
    }
    let m = stats.finish(&nm);
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var_os("KUBEYOLO_KEEP_PLOTS").map(PathBuf::from).unwrap_or_else(|| tmp.path().to_path_buf());
    kubeyolo::plot::curves::pr_curve(&dir.join("PR_curve.png"), &m).unwrap();
    kubeyolo::plot::curves::f1_curve(&dir.join("F1_curve.png"), &m).unwrap();
    kubeyolo::plot::curves::confusion_matrix(&dir.join("confusion_matrix_normalized.png"), &cm, &nm, true).unwrap();
    kubeyolo::plot::curves::confusion_matrix(&dir.join("confusion_matrix.png"), &cm, &nm, false).unwrap();
    for f in ["PR_curve.png", "F1_curve.png", "confusion_matrix_normalized.png", "confusion_matrix.png"] {
        let img = image::open(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(img.width() >= 900 && img.height() >= 900, "{f}: {}x{}", img.width(), img.height());
        // not blank: some dark pixels (lines, text)
        let dark = img.to_rgb8().pixels().filter(|p| p.0.iter().all(|&c| c < 80)).count();
        assert!(dark > 1000, "{f}: looks blank ({dark} dark pixels)");
    }
}
