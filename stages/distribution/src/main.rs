//! `yolo-distribution`: the second pipeline step. Reads the dataset yaml and every label file of
//! every split (in parallel, images are not decoded), counts per split and class the images that
//! contain the class and its instances, finds backgrounds, missing labels and invalid label lines,
//! and writes the result for the plot step (`result_json`, `cls_names_json`) plus a table for the
//! Pipelines UI (v1 `mlpipeline-ui-metadata.json`, v2 Markdown). All the work is in
//! `kubeyolo::data::scan`; this file is argument glue and presentation. With `MLFLOW_TRACKING_URI`
//! set, the counts are logged as MLflow metrics and both outputs as artifacts ([`log_to`]).

use std::path::PathBuf;

use clap::Parser;
use kubeyolo::config::dataset::Dataset;
use kubeyolo::data::scan::{cls_names_json, scan, Distribution};
use kubeyolo::error::{Error, Result};
use kubeyolo::kfp::{self, Table, UiMetadata};
use kubeyolo::root::DataRoot;
use kubeyolo::track::{step::run_tracked, Tracker, TrackingArgs};

const AFTER_HELP: &str = "\
Examples:
  # in the pipeline (the volume is mounted at /data; verify passes the resolved yaml path):
  yolo-distribution --data-yaml /data/data-custom.yaml \\
      --out-result-json /tmp/outputs/result_json --out-cls-names-json /tmp/outputs/cls_names_json \\
      --out-ui-metadata /mlpipeline-ui-metadata.json

  # locally, on a folder laid out like the volume (a short name is looked up as verify does):
  yolo-distribution --data-root ./demo --data-yaml data-synth --out-md ./demo/distribution.md

Label checks (each bad line is reported as file:line: reason, counted, and skipped; never fatal
unless --strict): wrong column count, non-numbers, class id not an integer in 0..nc-1,
coordinates outside [0, 1] (ultralytics' 1% tolerance), zero-size boxes, duplicate rows. Lines
with more than 6 columns are ultralytics polygons and count as their bounding box.

Outputs (all written atomically, and only when the scan succeeded):
  result_json     compact JSON, schema kubeyolo.distribution/1 (see kubeyolo::data::scan docs):
                  per split images, labelled_images, backgrounds, missing_labels, instances,
                  images_per_class[], instances_per_class[], invalid_lines, first 20 issues
  cls_names_json  {\"0\": \"name\", \"1\": \"name\", ...}

Exit codes: 0 ok; 3 dataset yaml problem; 4 dataset problem (a split missing or without images, or
invalid label lines with --strict); 6 I/O error.";

/// Count images and instances per class and split, and check every label line.
#[derive(Parser, Debug)]
#[command(name = "yolo-distribution", version = kubeyolo::VERSION, after_help = AFTER_HELP, long_about = "\
Scan a dataset's labels: for every split the dataset yaml defines (train, val, test), count per \
class the images that contain it and its instances, the background images (empty label file), \
images without a label file, and every invalid label line (reported as file:line: reason). Writes \
the result for the plot step and a table for the Kubeflow Pipelines UI, and prints a summary.")]
struct Args {
    /// Dataset yaml (ultralytics format: path, train, val, test, names): a path, or a name looked
    /// up under the data root and data-yaml/ (`.yaml` added when missing). Example: --data-yaml /data/data-custom.yaml
    #[arg(long)]
    data_yaml: String,

    /// File to write the scan result JSON to (KFP output `result_json`).
    /// Example: --out-result-json /tmp/outputs/result_json
    #[arg(long)]
    out_result_json: Option<PathBuf>,

    /// File to write the class names JSON to, `{"0": "name", ...}` (KFP output `cls_names_json`).
    /// Example: --out-cls-names-json /tmp/outputs/cls_names_json
    #[arg(long)]
    out_cls_names_json: Option<PathBuf>,

    /// File to write the KFP v1 UI metadata to (a per-class table and a Markdown summary).
    /// Example: --out-ui-metadata /mlpipeline-ui-metadata.json
    #[arg(long)]
    out_ui_metadata: Option<PathBuf>,

    /// File to write the same tables as Markdown to (a KFP v2 `system.Markdown` artifact).
    /// Example: --out-md /tmp/outputs/distribution_md
    #[arg(long)]
    out_md: Option<PathBuf>,

    /// Folder names resolve against (the mounted volume); relative `path:` values in the dataset
    /// yaml also fall back to it. Overrides KUBEYOLO_DATA_ROOT; default /data. Example: --data-root ./demo
    #[arg(long)]
    data_root: Option<PathBuf>,

    /// How many invalid label lines to print on stderr (all are counted). Example: --print-issues 1000
    #[arg(long, default_value_t = 100, value_name = "N")]
    print_issues: usize,

    /// Fail (exit 4, no outputs written) when any label line is invalid or unreadable. Example: --strict
    #[arg(long)]
    strict: bool,

    #[command(flatten)]
    tracking: TrackingArgs,
}

fn main() {
    let args = Args::parse();
    let root = DataRoot::from_flag(args.data_root.as_deref());
    kubeyolo::error::run_main(|| {
        run_tracked(&args.tracking, "distribution", &root.path, |tracker| run(&args, &root, tracker))
    })
}

fn run(args: &Args, root: &DataRoot, tracker: &Tracker) -> Result<()> {
    let yaml = root.resolve_data(&args.data_yaml)?;
    let ds = Dataset::load(&yaml, &root.path)?;

    let mut printed = 0usize;
    let mut total_issues = 0usize;
    let started = std::time::Instant::now();
    let dist = scan(&ds, |split, issue| {
        total_issues += 1;
        if printed < args.print_issues {
            eprintln!("warning: [{split}] {issue}");
            printed += 1;
        }
    })?;
    let elapsed = started.elapsed();
    if total_issues > printed {
        eprintln!(
            "warning: {} more label issues not printed (--print-issues {})",
            total_issues - printed,
            args.print_issues
        );
    }

    let bad: usize = dist.splits.iter().map(|s| s.invalid_lines + s.unreadable_labels).sum();
    if args.strict && bad > 0 {
        return Err(Error::data(format!("{bad} invalid or unreadable label lines/files (listed above)"))
            .with_file(&ds.yaml)
            .with_hint("fix the listed label lines, or run without --strict to skip them"));
    }

    let markdown = markdown(&dist);
    print!("{}", summary(&dist, elapsed));

    // Outputs only after everything succeeded; each is atomic.
    if let Some(p) = &args.out_result_json {
        kfp::write_json_param(p, &dist)?;
    }
    if let Some(p) = &args.out_cls_names_json {
        kfp::write_output_param(p, &cls_names_json(&dist.names))?;
    }
    if let Some(p) = &args.out_md {
        kfp::write_markdown_artifact(p, &markdown)?;
    }
    if let Some(p) = &args.out_ui_metadata {
        UiMetadata::new().table(&to_table(dist.class_table())).markdown(&markdown).write(p)?;
    }
    log_to(tracker, &dist);
    Ok(())
}

/// MLflow (a no-op without a tracking URI): per split `dataset/<split>/<count>` and per class
/// `dataset/<split>/class/<name>/{images,instances}` (a key is never also a folder of keys, which
/// MLflow's file store could not hold), plus both outputs as artifacts under `distribution/`.
fn log_to(tracker: &Tracker, d: &Distribution) {
    if !tracker.is_enabled() {
        return;
    }
    tracker.log_params(&[("dataset/data_yaml", d.data_yaml.display().to_string()), ("dataset/nc", d.nc().to_string())]);
    let mut metrics: Vec<(String, f64)> = Vec::new();
    for s in &d.splits {
        let counts = [
            ("images", s.images),
            ("labelled_images", s.labelled_images),
            ("backgrounds", s.backgrounds),
            ("missing_labels", s.missing_labels),
            ("instances", s.instances),
            ("invalid_lines", s.invalid_lines),
            ("unreadable_labels", s.unreadable_labels),
        ];
        metrics.extend(counts.iter().map(|(k, v)| (format!("dataset/{}/{k}", s.split), *v as f64)));
        for (c, name) in d.names.iter().enumerate() {
            let per_class = [("images", &s.images_per_class), ("instances", &s.instances_per_class)];
            for (k, v) in per_class {
                metrics.push((format!("dataset/{}/class/{name}/{k}", s.split), v.get(c).copied().unwrap_or(0) as f64));
            }
        }
    }
    tracker.log_metrics(&metrics, 0);
    if let Ok(result) = serde_json::to_string(d) {
        tracker.log_text(&result, "distribution/result_json.json");
    }
    tracker.log_text(&cls_names_json(&d.names), "distribution/cls_names_json.json");
}

fn to_table((header, rows): (Vec<String>, Vec<Vec<String>>)) -> Table {
    rows.into_iter().fold(Table::new(header), |t, r| t.row(r))
}

/// The human summary on stdout: dataset, per-split table, per-class table.
fn summary(d: &Distribution, elapsed: std::time::Duration) -> String {
    let mut s = format!(
        "dataset {} (root {}), {} classes, scanned {} label files in {:.2} s\n\n",
        d.data_yaml.display(),
        d.dataset_root.display(),
        d.nc(),
        d.splits.iter().map(|s| s.images).sum::<usize>(),
        elapsed.as_secs_f64()
    );
    s.push_str(&to_table(d.split_table()).to_markdown());
    s.push('\n');
    s.push_str(&to_table(d.class_table()).to_markdown());
    s
}

/// The Markdown shown in the UI: the same tables plus the first issues of each split.
fn markdown(d: &Distribution) -> String {
    let mut s = format!(
        "# Dataset distribution\n\nDataset yaml: `{}` — {} classes\n\n## Splits\n\n",
        d.data_yaml.display(),
        d.nc()
    );
    s.push_str(&to_table(d.split_table()).to_markdown());
    s.push_str("\n## Images and instances per class\n\n");
    s.push_str(&to_table(d.class_table()).to_markdown());
    for sp in d.splits.iter().filter(|s| !s.issues.is_empty()) {
        s.push_str(&format!("\n## Label issues in {} ({} lines", sp.split, sp.invalid_lines));
        if sp.unreadable_labels > 0 {
            s.push_str(&format!(", {} unreadable files", sp.unreadable_labels));
        }
        s.push_str(")\n\n```\n");
        for i in &sp.issues {
            s.push_str(i);
            s.push('\n');
        }
        if sp.issues_truncated > 0 {
            s.push_str(&format!("... and {} more\n", sp.issues_truncated));
        }
        s.push_str("```\n");
    }
    s
}
