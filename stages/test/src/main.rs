//! `yolo-test`: the pipeline's last step — measure trained weights on a dataset split.
//!
//! Loads `best.pt` (or `last.pt`, or any ultralytics `.pt` / kubeyolo `.safetensors`), runs the
//! validator ([`kubeyolo::eval::validator`], ultralytics `val` semantics) on the `test` split —
//! `val` when the dataset has no test split — and writes what people and KFP look at:
//!
//! | output | where |
//! |---|---|
//! | ultralytics-style table, speed, COCO mAP | stdout |
//! | every number (`metrics.json`), per-class table (`per_class.csv`) | `--out-dir` |
//! | PR curve, F1 curve, confusion matrices (PNG) | `--out-dir` |
//! | KFP v2 `system.Metrics` artifact + executor-output metadata | `--out-metrics` |
//! | KFP v1 `mlpipeline-metrics.json` | `--out-dir`, and `--out-v1-metrics` when given |
//! | MLflow params, metrics, plots | when `MLFLOW_TRACKING_URI` is set |

mod model;

use std::path::{Path, PathBuf};

use clap::Parser;
use kubeyolo::config::dataset::Dataset;
use kubeyolo::error::{run_main, Error, Result};
use kubeyolo::eval::metrics::Matching;
use kubeyolo::eval::validator::{ValConfig, ValResult, ValSet};
use kubeyolo::files;
use kubeyolo::kfp;
use kubeyolo::root::DataRoot;
use kubeyolo::track::step::run_tracked;
use kubeyolo::track::{Tracker, TrackingArgs};

const ABOUT: &str = "Measure trained YOLOv8 weights on a dataset split (ultralytics `val` metrics).";

const LONG_ABOUT: &str = "\
Measure trained YOLOv8 weights on a dataset split, with the same numbers ultralytics' `model.val()` \
prints: precision, recall, mAP50, mAP50-95 per class and overall, plus COCO-style mAP \
(pycocotools semantics), a confusion matrix, PR and F1 curves.

Weights: --weights wins; otherwise --best-pt, and --last-pt when best is missing. Both ultralytics \
.pt checkpoints and kubeyolo .safetensors are read. Relative paths resolve under the data root \
(--data-root, else $KUBEYOLO_DATA_ROOT, else /data).

The split defaults to `test`; a dataset without a test split is evaluated on `val` with a warning.
Validation settings default to ultralytics': conf 0.001, IoU 0.7, max_det 300, letterbox to --imgsz.";

const AFTER_HELP: &str = "\
Examples:
  # in the pipeline (KFP passes these)
  yolo-test --last-pt /data/runs/train/weights/last.pt --best-pt /data/runs/train/weights/best.pt \\
            --data-yaml /data/data-custom.yaml --out-metrics /tmp/outputs/test_metrics/data

  # locally, on the val split, with a larger batch and plots in ./test-out
  yolo-test --weights runs/train/weights/best.pt --data-yaml data-custom --split val \\
            --batch 32 --out-dir ./test-out --data-root .

Exit codes: 0 ok, 2 usage, 3 config (missing yaml/weights), 4 data, 5 model, 6 io.";

#[derive(Debug, Parser)]
#[command(name = "yolo-test", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
struct Args {
    /// Weights to test (overrides --best-pt/--last-pt), e.g. `weights/best.pt` or `/data/run/best.safetensors`.
    #[arg(long, value_name = "PATH")]
    weights: Option<String>,

    /// The train step's best weights (KFP input), e.g. `/data/runs/train/weights/best.pt`.
    #[arg(long = "best-pt", value_name = "PATH")]
    best_pt: Option<String>,

    /// The train step's last weights (KFP input): used when best is missing, e.g. `/data/runs/train/weights/last.pt`.
    #[arg(long = "last-pt", value_name = "PATH")]
    last_pt: Option<String>,

    /// Dataset yaml (ultralytics format), a path or a name under the data root, e.g. `data-custom`.
    #[arg(long = "data-yaml", visible_alias = "data", value_name = "YAML")]
    data_yaml: String,

    /// Split to evaluate, e.g. `test` or `val`. Default `test` (falls back to `val` if absent).
    #[arg(long, value_name = "NAME")]
    split: Option<String>,

    /// Input size in pixels (rounded up to a multiple of 32), e.g. `640`. Default: the
    /// checkpoint's training size, else 640.
    #[arg(long, value_name = "PIXELS")]
    imgsz: Option<usize>,

    /// Images per forward pass, e.g. `16`.
    #[arg(long, default_value_t = 16, value_name = "N")]
    batch: usize,

    /// NMS confidence threshold, e.g. `0.001` (ultralytics val default).
    #[arg(long, default_value_t = 0.001, value_name = "P")]
    conf: f32,

    /// NMS IoU threshold, e.g. `0.7` (ultralytics val default).
    #[arg(long, default_value_t = 0.7, value_name = "IOU")]
    iou: f32,

    /// Maximum detections per image, e.g. `300`.
    #[arg(long = "max-det", default_value_t = 300, value_name = "N")]
    max_det: usize,

    /// Square `imgsz` inputs for every image, instead of ultralytics' default rectangular
    /// batches (images sorted by aspect ratio, each batch padded to its own shape).
    #[arg(long)]
    square: bool,

    /// Treat all classes as one (single-class metrics).
    #[arg(long = "single-cls")]
    single_cls: bool,

    /// Match predictions to labels with a maximum-IoU assignment (ultralytics `use_scipy=True`)
    /// instead of ultralytics' default greedy matching.
    #[arg(long)]
    hungarian: bool,

    /// Compute device: `cpu`, `0` or `cuda:0` (a GPU); omit for automatic (GPU when the build
    /// has CUDA and one is visible, else CPU).
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,

    /// Data root every relative path resolves under, e.g. `/data` (default: $KUBEYOLO_DATA_ROOT, else /data).
    #[arg(long = "data-root", value_name = "DIR")]
    data_root: Option<PathBuf>,

    /// Folder for metrics.json, per_class.csv, plots and mlpipeline-metrics.json,
    /// e.g. `/data/runs/test`. Relative paths resolve under the data root.
    #[arg(long = "out-dir", default_value = "runs/test", value_name = "DIR")]
    out_dir: PathBuf,

    /// KFP v2 `system.Metrics` artifact path (KFP output `test_metrics`); its values also go
    /// to the executor output metadata, which is what the KFP UI shows.
    #[arg(long = "out-metrics", value_name = "PATH")]
    out_metrics: Option<PathBuf>,

    /// Name of the metrics output in the KFP component (the executor-output key).
    #[arg(long = "metrics-name", default_value = "test_metrics", value_name = "NAME")]
    metrics_name: String,

    /// Also write the KFP v1 `mlpipeline-metrics.json` here, e.g. `/mlpipeline-metrics.json`.
    #[arg(long = "out-v1-metrics", value_name = "PATH")]
    out_v1_metrics: Option<PathBuf>,

    /// Skip the PNG charts.
    #[arg(long = "no-plots")]
    no_plots: bool,

    #[command(flatten)]
    tracking: TrackingArgs,
}

fn main() {
    let args = Args::parse();
    // CPU inference: no mmap churn for big buffers, one thread pool (see nn::cpu).
    kubeyolo::nn::cpu::tune_cpu_runtime(None);
    run_main(|| real_main(args))
}

fn real_main(args: Args) -> Result<()> {
    let root = DataRoot::from_flag(args.data_root.as_deref());
    let under_root = |p: &str| root.under(p);
    let weights = pick_weights(&args, &under_root)?;
    let device = kubeyolo::device::select(args.device.as_deref().unwrap_or(""))?;
    for w in &device.warnings {
        eprintln!("warning: {w}");
    }
    let loaded = model::load(&weights, &device.device)?;
    let data_yaml = root.resolve_data(&args.data_yaml)?;
    let dataset = Dataset::load(&data_yaml, &root.path)?;
    let split = pick_split(&dataset, args.split.as_deref())?;
    if dataset.nc() != loaded.names.len() {
        eprintln!(
            "warning: the dataset has {} classes, the model {}; labels of classes the model cannot predict are ignored",
            dataset.nc(),
            loaded.names.len()
        );
    }
    let stride = loaded.model.max_stride();
    let imgsz = loaded.model.check_imgsz(args.imgsz.or(loaded.train_imgsz).unwrap_or(640), "--imgsz");
    let cfg = ValConfig {
        imgsz,
        batch: args.batch,
        conf: args.conf,
        iou: args.iou,
        max_det: args.max_det,
        stride,
        rect: !args.square,
        single_cls: args.single_cls,
        matching: if args.hungarian { Matching::Hungarian } else { Matching::Greedy },
        ..ValConfig::default()
    };
    let names = if args.single_cls { vec!["item".to_string()] } else { loaded.names.clone() };
    println!(
        "yolo-test: {} on split '{split}' of {} ({} on {})",
        weights.display(),
        data_yaml.display(),
        loaded.summary,
        device.name
    );

    run_tracked(&args.tracking, "test", &root.path, |tracker| -> Result<()> {
        let set = ValSet::load(&dataset, &split, &names, &cfg)?;
        for (p, why) in &set.skipped {
            eprintln!("warning: skipped {} ({why})", p.display());
        }
        let res = set.evaluate(&loaded.model, &device.device)?;
        print_report(&res);
        let out_dir = under_root(&args.out_dir.to_string_lossy());
        let written = write_outputs(&res, &args, &out_dir, &weights)?;
        log_to(tracker, &res, &weights, &split, &written);
        Ok(())
    })
}

/// `--weights`, else `--best-pt` (when the file exists), else `--last-pt`.
fn pick_weights(args: &Args, under_root: &dyn Fn(&str) -> PathBuf) -> Result<PathBuf> {
    if let Some(w) = &args.weights {
        return existing(under_root(w), "--weights");
    }
    match (&args.best_pt, &args.last_pt) {
        (Some(b), last) => {
            let best = under_root(b);
            if best.is_file() {
                return Ok(best);
            }
            match last {
                Some(l) if under_root(l).is_file() => {
                    eprintln!("warning: best weights {} not found; testing last weights {}", best.display(), l);
                    Ok(under_root(l))
                }
                _ => existing(best, "--best-pt"),
            }
        }
        (None, Some(l)) => existing(under_root(l), "--last-pt"),
        (None, None) => Err(Error::usage("no weights given")
            .with_hint("pass --weights PATH, or --best-pt / --last-pt as the pipeline does")),
    }
}

fn existing(p: PathBuf, flag: &str) -> Result<PathBuf> {
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::config(format!("weights file not found ({flag})"))
            .with_file(&p)
            .with_hint("check the path; relative paths resolve under the data root (--data-root)"))
    }
}

/// The requested split, or `val` (with a warning) when the default `test` is absent.
fn pick_split(dataset: &Dataset, requested: Option<&str>) -> Result<String> {
    let wanted = requested.unwrap_or("test");
    if dataset.has_split(wanted) {
        return Ok(wanted.to_string());
    }
    if requested.is_none() && dataset.has_split("val") {
        eprintln!("warning: {} has no 'test' split; testing on 'val' instead", dataset.yaml.display());
        return Ok("val".into());
    }
    Err(Error::config(format!("the dataset has no '{wanted}' split (it has: {})", dataset.split_names().join(", ")))
        .with_file(&dataset.yaml)
        .with_key(wanted)
        .with_hint("pass --split with one of the dataset's splits"))
}

fn print_report(res: &ValResult) {
    print!("{}", res.metrics.table());
    let s = &res.speed;
    println!(
        "Speed: {:.1}ms preprocess, {:.1}ms inference, {:.1}ms postprocess per image ({:.1} images/s)",
        s.preprocess_ms, s.inference_ms, s.postprocess_ms, s.images_per_s
    );
    if let Some(c) = &res.coco {
        println!(
            "COCO (pycocotools): AP50-95 {:.4}  AP50 {:.4}  AP75 {:.4}  AP small/medium/large {:.4}/{:.4}/{:.4}  AR100 {:.4}",
            c.ap, c.ap50, c.ap75, c.ap_small, c.ap_medium, c.ap_large, c.ar100
        );
    }
    println!("fitness (mAP50-95, as ultralytics 8.4): {:.5}", res.metrics.fitness);
}

/// The headline numbers for KFP and MLflow.
fn headline(res: &ValResult) -> Vec<(&'static str, f64)> {
    let m = &res.metrics;
    let mut v = vec![
        ("precision", m.precision),
        ("recall", m.recall),
        ("mAP50", m.map50),
        ("mAP50-95", m.map50_95),
        ("mAP75", m.map75),
        ("fitness", m.fitness),
        ("images", m.images as f64),
        ("instances", m.instances as f64),
    ];
    if let Some(c) = &res.coco {
        v.push(("coco_mAP50-95", c.ap));
        v.push(("coco_mAP50", c.ap50));
    }
    v
}

/// Write every file output; returns the files written (for MLflow).
fn write_outputs(res: &ValResult, args: &Args, out_dir: &Path, weights: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let json = serde_json::json!({
        "weights": weights,
        "split": res.split,
        "metrics": res.metrics.results_dict().into_iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(v))).collect::<serde_json::Map<_, _>>(),
        "result": res,
    });
    let p = out_dir.join("metrics.json");
    files::write_json_atomic(&p, &json)?;
    written.push(p);

    let mut table =
        kfp::Table::new(["class", "images", "instances", "precision", "recall", "f1", "mAP50", "mAP75", "mAP50-95"]);
    let m = &res.metrics;
    table.push([
        "all".to_string(),
        m.images.to_string(),
        m.instances.to_string(),
        format!("{:.6}", m.precision),
        format!("{:.6}", m.recall),
        String::new(),
        format!("{:.6}", m.map50),
        format!("{:.6}", m.map75),
        format!("{:.6}", m.map50_95),
    ]);
    for c in &m.classes {
        table.push([
            c.name.clone(),
            c.images.to_string(),
            c.instances.to_string(),
            format!("{:.6}", c.precision),
            format!("{:.6}", c.recall),
            format!("{:.6}", c.f1),
            format!("{:.6}", c.map50),
            format!("{:.6}", c.map75),
            format!("{:.6}", c.map50_95),
        ]);
    }
    let p = out_dir.join("per_class.csv");
    files::write_atomic(&p, table.to_csv().as_bytes())?;
    written.push(p);

    let pairs = headline(res);
    let p = out_dir.join("mlpipeline-metrics.json");
    kfp::write_v1_metrics(&p, &pairs)?;
    written.push(p);
    if let Some(v1) = &args.out_v1_metrics {
        kfp::write_v1_metrics(v1, &pairs)?;
    }
    if let Some(v2) = &args.out_metrics {
        kfp::write_metrics_artifact(v2, &args.metrics_name, &pairs)?;
    }

    if !args.no_plots {
        use kubeyolo::plot::curves;
        let names = &res.metrics.names;
        let plots = [
            ("PR_curve.png", curves::pr_curve(&out_dir.join("PR_curve.png"), m)),
            ("F1_curve.png", curves::f1_curve(&out_dir.join("F1_curve.png"), m)),
            (
                "confusion_matrix.png",
                curves::confusion_matrix(&out_dir.join("confusion_matrix.png"), &res.confusion, names, false),
            ),
            (
                "confusion_matrix_normalized.png",
                curves::confusion_matrix(&out_dir.join("confusion_matrix_normalized.png"), &res.confusion, names, true),
            ),
        ];
        for (name, r) in plots {
            r?;
            written.push(out_dir.join(name));
        }
    }
    println!("Results saved to {}", out_dir.display());
    Ok(written)
}

/// Log to MLflow (a no-op without a tracking URI). The seam: everything tracking needs goes
/// through this one function.
fn log_to(tracker: &Tracker, res: &ValResult, weights: &Path, split: &str, files: &[PathBuf]) {
    if !tracker.is_enabled() {
        return;
    }
    let s = &res.settings;
    tracker.log_params(&[
        ("test/weights", weights.display().to_string()),
        ("test/split", split.to_string()),
        ("test/imgsz", s.imgsz.to_string()),
        ("test/batch", s.batch.to_string()),
        ("test/conf", s.conf.to_string()),
        ("test/iou", s.iou.to_string()),
    ]);
    let mut metrics: Vec<(String, f64)> =
        res.metrics.results_dict().into_iter().map(|(k, v)| (format!("test/{k}"), v)).collect();
    metrics.extend(headline(res).into_iter().map(|(k, v)| (format!("test/{k}"), v)));
    for c in &res.metrics.classes {
        metrics.push((format!("test/mAP50-95/{}", c.name), c.map50_95));
    }
    tracker.log_metrics(&metrics, 0);
    for f in files {
        tracker.log_artifact(f, "test");
    }
}
