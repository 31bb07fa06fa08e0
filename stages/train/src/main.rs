//! `yolo-train`: the pipeline's train step — thin glue around [`kubeyolo::train::trainer`].
//!
//! Reads verify's outputs (model, cfg yaml, dataset yaml), trains, and writes the run folder
//! (`args.yaml`, `weights/{best,last}.safetensors`, `results.csv`, `results.png`, plots) plus the
//! KFP outputs the test and tune steps read (`best_pt`, `last_pt`, `data_yaml`) and a metrics
//! artifact. SIGTERM (pod eviction) checkpoints and exits 143, so Kubeflow retries the step and
//! the retry resumes in the same run folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use kubeyolo::error::{run_main, Result};
use kubeyolo::kfp;
use kubeyolo::root::DataRoot;
use kubeyolo::track::step::run_tracked;
use kubeyolo::track::TrackingArgs;
use kubeyolo::train::trainer::{resumable_mlflow_run, train, TrainRequest};

const ABOUT: &str = "Train a YOLOv8 detector (ultralytics' training loop), resumable after pod loss.";

const LONG_ABOUT: &str = "\
Train a YOLOv8 detector on an ultralytics dataset with an ultralytics cfg yaml: the same loss, \
augmentations, optimizer rules, warm-up, EMA, validation, fitness and results.csv as `yolo train`.

The model is a model yaml (`yolov8n.yaml`, a custom yaml: trained from scratch) or weights \
(ultralytics .pt or kubeyolo .safetensors: fine-tuned, matching tensors transferred). \
Relative paths resolve under the data root (--data-root, else $KUBEYOLO_DATA_ROOT, else /data).

The run folder is {project}/{name} from the cfg (default runs/detect/train, incremented to train2, \
train3, ... unless exist_ok), or --run-dir. A run folder that holds an unfinished \
weights/last.safetensors is resumed automatically (--no-auto-resume turns this off): a retried pod \
continues where the killed one stopped, with identical results. Checkpoints are written at every \
epoch end, every --checkpoint-minutes, and on SIGTERM.";

const AFTER_HELP: &str = "\
Examples:
  # in the pipeline (KFP passes these)
  yolo-train --model-path /data/weights/yolov8n.pt --cfg-yaml /data/cfg-custom.yaml \\
             --data-yaml /data/data-custom.yaml --run-dir runs/detect/run-1234 \\
             --out-best-pt /tmp/outputs/best_pt/data --out-last-pt /tmp/outputs/last_pt/data

  # locally, 3 epochs at 128 px on the demo dataset
  yolo-train --model-path yolov8n.yaml --cfg-yaml cfg-custom --data-yaml data-custom \\
             --set epochs=3 --set imgsz=128 --data-root ./demo

Exit codes: 0 ok, 2 usage, 3 config, 4 data, 5 model, 6 io, 143 stopped by SIGTERM (checkpoint saved).";

#[derive(Debug, Parser)]
#[command(name = "yolo-train", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
struct Args {
    /// Model to start from: a model yaml or weights (verify's `model_path`), e.g. `yolov8n.pt`.
    #[arg(long = "model-path", visible_alias = "model", value_name = "MODEL")]
    model_path: String,

    /// Training cfg yaml (ultralytics default.yaml keys), e.g. `cfg-custom` or `/data/cfg-custom.yaml`.
    /// `default` means ultralytics' built-in defaults.
    #[arg(long = "cfg-yaml", visible_alias = "cfg", value_name = "YAML", default_value = "default")]
    cfg_yaml: String,

    /// Dataset yaml (ultralytics format), e.g. `data-custom`.
    #[arg(long = "data-yaml", visible_alias = "data", value_name = "YAML")]
    data_yaml: String,

    /// Override one cfg key, e.g. `--set epochs=3 --set imgsz=128` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,

    /// Fixed run folder (relative to the data root), e.g. `runs/detect/run-1234`; the compiled
    /// pipelines key it by the pipeline run so a retried pod resumes its own run.
    #[arg(long = "run-dir", value_name = "DIR")]
    run_dir: Option<PathBuf>,

    /// Resume from this checkpoint, e.g. `runs/detect/train/weights/last.safetensors`.
    #[arg(long, value_name = "PATH")]
    resume: Option<PathBuf>,

    /// Do not resume automatically from the run folder's unfinished checkpoint.
    #[arg(long = "no-auto-resume")]
    no_auto_resume: bool,

    /// Minutes between mid-epoch checkpoints, e.g. `10` (0: only at epoch ends).
    #[arg(long = "checkpoint-minutes", default_value_t = 10.0, value_name = "MIN")]
    checkpoint_minutes: f64,

    /// Seconds between progress lines when stderr is not a terminal (pods), e.g. `30`.
    #[arg(long = "log-seconds", default_value_t = 30.0, value_name = "S")]
    log_seconds: f64,

    /// Data root every relative path resolves under, e.g. `/data` (default: $KUBEYOLO_DATA_ROOT, else /data).
    #[arg(long = "data-root", value_name = "DIR")]
    data_root: Option<PathBuf>,

    /// KFP output: path of the best weights (`best_pt`).
    #[arg(long = "out-best-pt", value_name = "PATH")]
    out_best_pt: Option<PathBuf>,

    /// KFP output: path of the last weights (`last_pt`).
    #[arg(long = "out-last-pt", value_name = "PATH")]
    out_last_pt: Option<PathBuf>,

    /// KFP output: the dataset yaml, passed on to test and tune (`data_yaml`).
    #[arg(long = "out-data-yaml", value_name = "PATH")]
    out_data_yaml: Option<PathBuf>,

    /// KFP output: the MLflow run id of this training (`mlflow_run_id`; empty without tracking, or
    /// when the server could not be reached and the records were spooled).
    #[arg(long = "out-mlflow-run-id", value_name = "PATH")]
    out_mlflow_run_id: Option<PathBuf>,

    /// KFP v2 `system.Metrics` artifact with the final validation of best.
    #[arg(long = "out-metrics", value_name = "PATH")]
    out_metrics: Option<PathBuf>,

    /// Text file of `name=value` lines (fitness, mAP50-95, mAP50, precision, recall of the final
    /// validation of best), for Katib's File metrics collector, e.g. `/var/log/katib/metrics.txt`.
    #[arg(long = "out-metrics-text", value_name = "PATH")]
    out_metrics_text: Option<PathBuf>,

    /// Name of the metrics output in the KFP component (the executor-output key).
    #[arg(long = "metrics-name", default_value = "train_metrics", value_name = "NAME")]
    metrics_name: String,

    #[command(flatten)]
    tracking: TrackingArgs,
}

/// How long the run-id output waits for the tracking server to have created the run.
const RUN_ID_WAIT: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse();
    kubeyolo::nn::cpu::tune_cpu_runtime(None);
    run_main(|| real_main(args))
}

fn real_main(args: Args) -> Result<()> {
    let root = DataRoot::from_flag(args.data_root.as_deref());
    let mut hyp = root.load_cfg(&args.cfg_yaml)?;
    hyp.apply_overrides(&args.set)?;
    let model = root.resolve_model(&args.model_path)?;
    let data_yaml = root.resolve_data(&args.data_yaml)?;
    let under_root = |p: &Path| root.under(p);
    let mut req = TrainRequest::new(model, data_yaml.clone(), hyp, root.path.clone());
    req.save_dir = args.run_dir.as_deref().map(under_root);
    req.resume_from = args.resume.as_deref().map(under_root);
    req.auto_resume = !args.no_auto_resume;
    req.checkpoint_every =
        (args.checkpoint_minutes > 0.0).then(|| Duration::from_secs_f64(args.checkpoint_minutes * 60.0));
    req.log_interval = Duration::from_secs_f64(args.log_seconds.max(0.0));
    req.stop = kubeyolo::signals::handle_stop_requests();

    // A resumed training continues its MLflow run (unless a run id is given explicitly).
    let mut tracking = args.tracking.clone();
    if tracking.tracking_uri.is_some() && !tracking.disabled && tracking.run_id.is_none() {
        if let Some(id) = resumable_mlflow_run(&req) {
            println!("mlflow: continuing run {id} of the interrupted training");
            tracking.run_id = Some(id);
        }
    }
    run_tracked(&tracking, "train", &root.path, |tracker| -> Result<()> {
        let out = train(&req, tracker)?;
        let best = out.best.display().to_string();
        let last = out.last.display().to_string();
        if let Some(p) = &args.out_best_pt {
            kfp::write_output_param(p, &best)?;
        }
        if let Some(p) = &args.out_last_pt {
            kfp::write_output_param(p, &last)?;
        }
        if let Some(p) = &args.out_data_yaml {
            kfp::write_output_param(p, &data_yaml.display().to_string())?;
        }
        let mut pairs: Vec<(&str, f64)> =
            vec![("epochs", out.epochs_completed as f64), ("train_images_per_second", out.images_per_second)];
        if let Some(v) = &out.final_val {
            let m = &v.metrics;
            pairs.extend([
                ("precision", m.precision),
                ("recall", m.recall),
                ("mAP50", m.map50),
                ("mAP50-95", m.map50_95),
                ("fitness", m.fitness),
            ]);
            println!(
                "final (best): P {:.4}  R {:.4}  mAP50 {:.4}  mAP50-95 {:.4}  ({:.1} train images/s, {:.1} s waiting for data)",
                m.precision, m.recall, m.map50, m.map50_95, out.images_per_second, out.data_wait_seconds
            );
        }
        if let Some(p) = &args.out_metrics {
            kfp::write_metrics_artifact(p, &args.metrics_name, &pairs)?;
        }
        if let Some(p) = &args.out_metrics_text {
            write_metrics_text(p, out.final_val.as_ref().map(|v| &v.metrics))?;
        }
        kfp::write_v1_metrics(&out.save_dir.join("mlpipeline-metrics.json"), &pairs)?;
        if let Some(p) = &args.out_mlflow_run_id {
            let id = tracker.run_id(RUN_ID_WAIT).unwrap_or_default();
            if id.is_empty() && tracker.is_enabled() {
                eprintln!("warning: the MLflow run id is not known (server unreachable), so {} is empty", p.display());
            }
            kfp::write_output_param(p, &id)?;
        }
        println!("best: {best}\nlast: {last}");
        Ok(())
    })
}

/// `--out-metrics-text`: the final validation as `name=value` lines, fitness first (Katib's
/// objective), written atomically. Without a final validation nothing is written: Katib then
/// records the objective as unavailable and the trial fails, rather than scoring a guess.
fn write_metrics_text(path: &Path, metrics: Option<&kubeyolo::eval::metrics::DetMetrics>) -> Result<()> {
    let Some(m) = metrics else {
        eprintln!("warning: no final validation, so {} is not written", path.display());
        return Ok(());
    };
    let lines = [
        ("fitness", m.fitness),
        ("mAP50-95", m.map50_95),
        ("mAP50", m.map50),
        ("precision", m.precision),
        ("recall", m.recall),
    ];
    let text: String = lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    kubeyolo::files::write_atomic(path, text.as_bytes())
}
