//! `yolo-tune`: the pipeline's tune step — thin glue around [`kubeyolo::tune::tuner`].
//!
//! Evolves the cfg's hyper-parameters as ultralytics 8.4's `model.tune()` does, starting every
//! iteration from the train step's best weights, and writes ultralytics' tune folder
//! (`tune_results.ndjson`, `best_hyperparameters.yaml`, `tune_fitness.png`,
//! `tune_scatter_plots.png`, `weights/`) plus the KFP outputs. Several workers (pods) can share
//! one tune folder; a restarted worker continues where it stopped.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use kubeyolo::error::{run_main, Result};
use kubeyolo::kfp;
use kubeyolo::root::DataRoot;
use kubeyolo::track::step::run_tracked;
use kubeyolo::track::TrackingArgs;
use kubeyolo::tune::tuner::{tune, TuneRequest};

const ABOUT: &str = "Tune YOLOv8 hyper-parameters (ultralytics' genetic evolution), resumable, with parallel workers.";

const LONG_ABOUT: &str = "\
Evolve the hyper-parameters of an ultralytics cfg yaml as `model.tune()` does (ultralytics 8.4): each \
iteration mutates the best results so far, trains `epochs` epochs from --model-path, and records the \
fitness (mAP50-95, as ultralytics 8.4) of the iteration's final validation.

The search space is ultralytics 8.4's (lr0 ... close_mosaic; keys kubeyolo does not act on left out), or \
--space FILE with `key: [min, max]` or `key: [min, max, gain]` lines. `optimizer: auto` becomes AdamW, as in \
`model.tune()`.

Outputs in the tune folder (default runs/detect/tune, incremented to tune2, ... ; --tune-dir fixes it): \
tune_results.ndjson (one line per iteration), tune_results.csv, best_hyperparameters.yaml (usable as a \
train cfg), tune_fitness.png, tune_scatter_plots.png, weights/{best,last}.safetensors of the best \
iteration. Other iterations' run folders are removed (--keep-iterations keeps them).

Workers: run several `yolo-tune --worker I` with the same --tune-dir; they share the results through \
a locked file (flock: one node, or a network filesystem with POSIX locks), never train the same \
iteration twice, and stop when --iterations are finished. A restarted worker re-runs its unfinished \
iteration, resuming its checkpoint. A worker with nothing left to claim waits for the others; an \
iteration whose worker has been silent for --claim-lease-minutes (a pod lost for good) is taken over \
by another worker, checkpoint included.";

const AFTER_HELP: &str = "\
Examples:
  # in the pipeline (KFP passes these)
  yolo-tune --model-path /data/runs/detect/run-1234/weights/best.safetensors --cfg-yaml /data/cfg-custom.yaml \\
            --data-yaml /data/data-custom.yaml --tune-dir runs/detect/tune-1234 --iterations 10 --worker 0

  # locally, 3 iterations of 1 epoch at 128 px on the demo dataset
  yolo-tune --model-path yolov8n.yaml --cfg-yaml cfg-custom --data-yaml data-custom \\
            --iterations 3 --set epochs=1 --set imgsz=128 --data-root ./demo

Exit codes: 0 ok, 2 usage, 3 config, 4 data, 5 model, 6 io, 143 stopped by SIGTERM (a restart resumes).";

#[derive(Debug, Parser)]
#[command(name = "yolo-tune", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
struct Args {
    /// Weights (or a model yaml) every iteration starts from: the train step's `best_pt`.
    #[arg(long = "model-path", visible_alias = "model", value_name = "MODEL")]
    model_path: String,

    /// Base cfg yaml (ultralytics default.yaml keys); `default` means ultralytics' defaults.
    #[arg(long = "cfg-yaml", visible_alias = "cfg", value_name = "YAML", default_value = "default")]
    cfg_yaml: String,

    /// Dataset yaml (ultralytics format), e.g. `data-custom`.
    #[arg(long = "data-yaml", visible_alias = "data", value_name = "YAML")]
    data_yaml: String,

    /// Search space yaml (`lr0: [1.0e-5, 1.0e-2]`, `momentum: [0.6, 0.98, 0.3]`); default (or
    /// empty, the pipeline's `tune_space` left blank) ultralytics 8.4's.
    #[arg(long, value_name = "YAML")]
    space: Option<String>,

    /// Iterations in total, over all workers (ultralytics' default 300).
    #[arg(long, default_value_t = 300, value_name = "N")]
    iterations: u64,

    /// Override one cfg key of the base cfg, e.g. `--set epochs=10` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,

    /// Fixed tune folder (relative to the data root), shared by all workers and resumed.
    #[arg(long = "tune-dir", value_name = "DIR")]
    tune_dir: Option<PathBuf>,

    /// This worker's index (0-based) when several workers share --tune-dir.
    #[arg(long, default_value_t = 0, value_name = "I")]
    worker: u32,

    /// Minutes a claimed iteration may go without its worker's heartbeat (refreshed every fifth
    /// of this while it trains) before another worker takes it over.
    #[arg(long = "claim-lease-minutes", default_value_t = 10.0, value_name = "MIN")]
    claim_lease_minutes: f64,

    /// Keep every iteration's run folder (ultralytics removes all but the best's).
    #[arg(long = "keep-iterations")]
    keep_iterations: bool,

    /// Minutes between mid-epoch checkpoints of an iteration (0: only at epoch ends).
    #[arg(long = "checkpoint-minutes", default_value_t = 10.0, value_name = "MIN")]
    checkpoint_minutes: f64,

    /// Seconds between progress lines when stderr is not a terminal (pods).
    #[arg(long = "log-seconds", default_value_t = 30.0, value_name = "S")]
    log_seconds: f64,

    /// Data root every relative path resolves under (default: $KUBEYOLO_DATA_ROOT, else /data).
    #[arg(long = "data-root", value_name = "DIR")]
    data_root: Option<PathBuf>,

    /// KFP output: path of best_hyperparameters.yaml (`best_hyp`).
    #[arg(long = "out-best-hyp", value_name = "PATH")]
    out_best_hyp: Option<PathBuf>,

    /// KFP output: path of the best iteration's best weights (`best_pt`).
    #[arg(long = "out-best-pt", value_name = "PATH")]
    out_best_pt: Option<PathBuf>,

    /// KFP v2 `system.Metrics` artifact with the best iteration's metrics.
    #[arg(long = "out-metrics", value_name = "PATH")]
    out_metrics: Option<PathBuf>,

    /// Name of the metrics output in the KFP component (the executor-output key).
    #[arg(long = "metrics-name", default_value = "tune_metrics", value_name = "NAME")]
    metrics_name: String,

    #[command(flatten)]
    tracking: TrackingArgs,
}

fn main() {
    let args = Args::parse();
    kubeyolo::nn::cpu::tune_cpu_runtime(None);
    run_main(|| real_main(args))
}

fn real_main(args: Args) -> Result<()> {
    let root = DataRoot::from_flag(args.data_root.as_deref());
    // Everything a user can get wrong is checked before the first iteration trains.
    let space = root.load_space(args.space.as_deref().unwrap_or_default())?.map(|(_, s)| s).unwrap_or_default();
    let mut hyp = root.load_cfg(&args.cfg_yaml)?;
    hyp.apply_overrides(&args.set)?;
    let model = root.resolve_model(&args.model_path)?;
    let data_yaml = root.resolve_data(&args.data_yaml)?;
    let mut req = TuneRequest::new(model, data_yaml, hyp, root.path.clone());
    req.space = space;
    req.iterations = args.iterations;
    req.tune_dir = args.tune_dir.clone();
    req.worker = args.worker;
    req.cleanup = !args.keep_iterations;
    req.lease = Duration::from_secs_f64(args.claim_lease_minutes.max(0.0) * 60.0);
    req.checkpoint_every =
        (args.checkpoint_minutes > 0.0).then(|| Duration::from_secs_f64(args.checkpoint_minutes * 60.0));
    req.log_interval = Duration::from_secs_f64(args.log_seconds.max(0.0));
    req.stop = kubeyolo::signals::handle_stop_requests();

    run_tracked(&args.tracking, "tune", &root.path, |tracker| -> Result<()> {
        let out = tune(&req, tracker)?;
        let Some(best) = &out.best else {
            println!("no iteration produced metrics; nothing to report");
            return Ok(());
        };
        let yaml = best.hyperparameters_yaml.display().to_string();
        if let Some(p) = &args.out_best_hyp {
            kfp::write_output_param(p, &yaml)?;
        }
        if let Some(p) = &args.out_best_pt {
            let w = best.weights.as_ref().map(|w| w.display().to_string()).unwrap_or_default();
            kfp::write_output_param(p, &w)?;
        }
        let m = |k: &str| best.record.metric(k).unwrap_or(0.0);
        let pairs: Vec<(&str, f64)> = vec![
            ("fitness", best.fitness),
            ("best_iteration", best.iteration as f64),
            ("precision", m("metrics/precision(B)")),
            ("recall", m("metrics/recall(B)")),
            ("mAP50", m("metrics/mAP50(B)")),
            ("mAP50-95", m("metrics/mAP50-95(B)")),
            ("iterations_finished", out.finished as f64),
        ];
        if let Some(p) = &args.out_metrics {
            kfp::write_metrics_artifact(p, &args.metrics_name, &pairs)?;
        }
        println!("best hyper-parameters: {yaml}");
        Ok(())
    })
}
