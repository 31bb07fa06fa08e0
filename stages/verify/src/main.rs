//! `yolo-verify`: the first pipeline step. Resolves the run's three inputs (model, cfg yaml,
//! dataset yaml) under the data root, opens each the way later steps will, reports every problem
//! at once, and — only when there is none — writes the resolved paths as KFP output parameters.
//! With `MLFLOW_TRACKING_URI` set, the inputs and resolved paths are logged as MLflow params; a run
//! with problems ends FAILED, the problems in its `kubeyolo.error` tag.

mod check;
mod images;

use std::path::PathBuf;

use clap::Parser;
use kubeyolo::root::DataRoot;
use kubeyolo::track::{step::run_tracked, Tracker, TrackingArgs};

const AFTER_HELP: &str = "\
Examples:
  # in the pipeline (the volume is mounted at /data):
  yolo-verify --model-name yolov8n.pt --cfg cfg-custom --data data-custom \\
      --out-model-path /tmp/outputs/model_path --out-cfg-yaml /tmp/outputs/cfg_yaml \\
      --out-data-yaml /tmp/outputs/data_yaml

  # locally, against a folder laid out like the volume:
  yolo-verify --data-root ./demo --model-name yolov8s-scratch.yaml --cfg cfg-custom --data data-synth

  # a huge dataset whose images were checked before: do not open every image
  yolo-verify --model-name yolov8n.pt --cfg cfg-custom --data data-big --skip-image-check

Name lookup: a missing extension is added (.pt for models, .yaml for cfg/data); a name is tried in
the data root, then in weights/ (models; model yamls also in cfg-yaml/), cfg-yaml/ (cfg) and
data-yaml/ (data). yolov8n/s/m/l/x.yaml are built in; yolov8n-scratch.yaml means the file
yolov8-scratch.yaml at scale n; official yolov8n/s/m/l/x.pt not on the volume are downloaded by the
train step into <root>/weights/.

Images: every image's header is read (in parallel, no pixels decoded). A corrupt or unreadable
file, a format other than jpg/png/bmp/webp/tiff, or a side under 10 px is a warning naming the file
(the first 20 are listed, the rest counted), as ultralytics skips such images when training; a JPEG
without its end marker is a warning too. A split with no usable image left is a problem.

Exit codes: 0 ok; 3 config problem; 4 dataset problem; 5 model file problem; 1 several problems
(all are listed on stderr, and in the JSON on stdout). No output file is written unless all checks pass.";

/// Check a run's model, cfg yaml and dataset yaml, and pass their resolved paths on.
#[derive(Parser, Debug)]
#[command(name = "yolo-verify", version = kubeyolo::VERSION, after_help = AFTER_HELP, long_about = "\
Check a run's inputs before anything expensive starts: resolve the model, the training cfg yaml and \
the dataset yaml under the data root, parse each (cfg keys and values as ultralytics' default.yaml; \
the model yaml's layers; the dataset's splits, which must exist and hold images, each image's header \
read to find corrupt files), and report every \
problem at once with what to do. On success the resolved paths are written to the --out-* files \
(KFP output parameters) and a JSON summary (paths, dataset, device report, ignored cfg keys, \
warnings) is printed on stdout.")]
struct Args {
    /// Model: weights (`yolov8n.pt`, `weights/best.pt`, `best.safetensors`) or an architecture
    /// yaml (`yolov8n.yaml`, `yolov8s-scratch.yaml`), or an absolute path. Example: --model-name yolov8n.pt
    #[arg(long, default_value = "yolov8n.pt")]
    model_name: String,

    /// Training cfg yaml (ultralytics default.yaml keys), with or without `.yaml`. Example: --cfg cfg-custom
    #[arg(long, default_value = "cfg-custom")]
    cfg: String,

    /// Dataset yaml (ultralytics format: path, train, val, test, names). Example: --data data-custom
    #[arg(long, default_value = "data-custom")]
    data: String,

    /// Search space yaml for the tune step (the pipeline's `tune_space`; `key: [min, max]` lines),
    /// checked here so a mistake shows before training; empty: ultralytics 8.4's space, nothing to
    /// check. Example: --tune-space spaces/lr.yaml
    #[arg(long = "tune-space", default_value = "", value_name = "YAML")]
    tune_space: String,

    /// File to write the resolved model path to (KFP output `model_path`). For a built-in
    /// architecture it is its name (`yolov8n.yaml`); for official weights not on the volume, the
    /// path they will be downloaded to. Example: --out-model-path /tmp/outputs/model_path
    #[arg(long)]
    out_model_path: Option<PathBuf>,

    /// File to write the resolved cfg yaml path to (KFP output `cfg_yaml`). Example: --out-cfg-yaml /tmp/outputs/cfg_yaml
    #[arg(long)]
    out_cfg_yaml: Option<PathBuf>,

    /// File to write the resolved dataset yaml path to (KFP output `data_yaml`). Example: --out-data-yaml /tmp/outputs/data_yaml
    #[arg(long)]
    out_data_yaml: Option<PathBuf>,

    /// Folder names resolve against (the mounted volume). Overrides the KUBEYOLO_DATA_ROOT
    /// environment variable; default /data. Example: --data-root ./demo
    #[arg(long)]
    data_root: Option<PathBuf>,

    /// Print ultralytics' default.yaml (every cfg key with its default) and exit: a starting point
    /// for a cfg yaml. Example: yolo-verify --print-default-cfg > cfg-custom.yaml
    #[arg(long)]
    print_default_cfg: bool,

    /// Do not open every image of every split. By default each image's header is read (no
    /// pixels decoded) to find corrupt files, unsupported formats, images under 10 px and
    /// truncated JPEGs, as ultralytics' dataset scan does; a corrupt image is a warning (training
    /// skips it), a split with no usable image a problem. Skip it for huge datasets already
    /// checked. Example: --skip-image-check
    #[arg(long)]
    skip_image_check: bool,

    #[command(flatten)]
    tracking: TrackingArgs,
}

fn main() {
    let args = Args::parse();
    if args.print_default_cfg {
        print!("{}", kubeyolo::config::hyp::DEFAULT_YAML);
        return;
    }
    let root = DataRoot::from_flag(args.data_root.as_deref());
    let outcome = run_tracked(&args.tracking, "verify", &root.path, |tracker| verify(&args, &root, tracker));
    std::process::exit(outcome.err().map_or(0, |f| f.exit_code));
}

/// Why verify failed: the exit code, and every problem for the MLflow run's `kubeyolo.error` tag.
struct Failed {
    exit_code: i32,
    problems: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.problems)
    }
}

fn verify(args: &Args, root: &DataRoot, tracker: &Tracker) -> Result<(), Failed> {
    let mut report = check::verify(root, &args.model_name, &args.cfg, &args.data, !args.skip_image_check);
    check::check_tune_space(root, &args.tune_space, &mut report);
    log_to(tracker, args, root, &report);

    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if report.problems.is_empty() {
        let outputs = [
            (&args.out_model_path, report.model_path.clone()),
            (&args.out_cfg_yaml, report.cfg_yaml.as_ref().map(|p| p.display().to_string())),
            (&args.out_data_yaml, report.data_yaml.as_ref().map(|p| p.display().to_string())),
        ];
        for (path, value) in outputs {
            if let (Some(path), Some(value)) = (path, value) {
                if let Err(e) = kubeyolo::kfp::write_output_param(path, &value) {
                    eprintln!("error: {e}");
                    return Err(Failed { exit_code: e.exit_code(), problems: e.to_string() });
                }
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&report.to_json()).unwrap_or_default());
    if !report.problems.is_empty() {
        let n = report.problems.len();
        eprintln!("verify found {n} problem{}; no output was written:", if n == 1 { "" } else { "s" });
        let mut listed = String::new();
        for (i, e) in report.problems.iter().enumerate() {
            let text = e.to_string().replace('\n', "\n     ");
            listed.push_str(&format!("  {}. {text}\n", i + 1));
        }
        eprint!("{listed}");
        return Err(Failed { exit_code: report.exit_code(), problems: listed });
    }
    eprintln!(
        "verify ok: model {} · cfg {} · data {}",
        report.model_path.as_deref().unwrap_or("?"),
        report.cfg_yaml.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        report.data_yaml.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
    );
    Ok(())
}

/// MLflow (a no-op without a tracking URI): the inputs as given and as resolved, and whether
/// they passed. Logged before any output so a failed run still shows what was checked.
fn log_to(tracker: &Tracker, args: &Args, root: &DataRoot, report: &check::Report) {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    tracker.log_params(&[
        ("verify/model_name", args.model_name.clone()),
        ("verify/cfg", args.cfg.clone()),
        ("verify/data", args.data.clone()),
        ("verify/data_root", root.path.display().to_string()),
        ("verify/model_path", report.model_path.clone().unwrap_or_default()),
        ("verify/cfg_yaml", path(&report.cfg_yaml)),
        ("verify/data_yaml", path(&report.data_yaml)),
        ("verify/tune_space", args.tune_space.clone()),
        (
            "verify/tune_space_yaml",
            report.summary.get("tune_space").and_then(|t| t["path"].as_str()).unwrap_or_default().to_string(),
        ),
    ]);
    tracker.set_tags(&[
        ("kubeyolo.verify.ok", report.problems.is_empty().to_string()),
        ("kubeyolo.verify.problems", report.problems.len().to_string()),
        ("kubeyolo.verify.warnings", report.warnings.len().to_string()),
    ]);
}
