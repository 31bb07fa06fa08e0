//! `yolo-plot`: the third pipeline step. Draws the distribution step's result as bar charts —
//! images per class and instances per class, one row per split — to PNG and SVG on the volume,
//! and shows them in the Pipelines UI: a v2 HTML artifact (PNG embedded as base64, since the UI
//! shows HTML sandboxed), a v2 Markdown artifact, and the v1 `mlpipeline-ui-metadata.json`
//! (`web-app` + `markdown`). Drawing lives in `kubeyolo::plot::distribution`; this file is glue.
//! With `MLFLOW_TRACKING_URI` set, the PNG, SVG and HTML page also go to MLflow as artifacts.
//!
//! Everything is rendered in memory first and written only when all of it succeeded, each file
//! atomically: a bad input leaves no partial outputs behind.

use std::path::{Path, PathBuf};

use clap::Parser;
use kubeyolo::data::scan::{parse_cls_names, Distribution};
use kubeyolo::error::{Error, Result};
use kubeyolo::kfp::{self, Table, UiMetadata};
use kubeyolo::plot::{self, distribution::DistributionChart, html_escape, png_data_uri, Chart};
use kubeyolo::root::DataRoot;
use kubeyolo::track::{step::run_tracked, Tracker, TrackingArgs};

const AFTER_HELP: &str = "\
Examples:
  # in the pipeline (KFP passes distribution's outputs by value, and artifact paths):
  yolo-plot --result-json \"$RESULT_JSON\" --cls-names-json \"$CLS_NAMES_JSON\" \\
      --out-html \"$HTML_ARTIFACT_PATH\" --out-md \"$MD_ARTIFACT_PATH\"

  # KFP v1: the UI reads the metadata file written at the container root
  yolo-plot --result-json \"$RESULT_JSON\" --out-ui-metadata /mlpipeline-ui-metadata.json

  # locally, from files written by yolo-distribution:
  yolo-distribution --data-root ./demo --data-yaml data-synth --out-result-json ./demo/result.json
  yolo-plot --result-json ./demo/result.json --out-html ./demo/distribution.html

Files written (each atomically, and only when everything rendered):
  <out-dir>/distribution.png   bar charts, one row per split (train, val, test)
  <out-dir>/distribution.svg   the same as vector graphics (zoom into long class lists)
  --out-html / --out-md / --out-ui-metadata when given

The font (DejaVu Sans) is compiled in: no system fonts are needed. Class names in scripts it
lacks (Hangul, CJK) need a fallback font file for the PNG, e.g.
  KUBEYOLO_PLOT_FONT=/data/fonts/NanumGothic.ttf yolo-plot ...

Exit codes: 0 ok; 3 an input file is missing; 4 the result/class names are not valid JSON of
the expected shape, or disagree; 6 I/O error.";

/// Draw the class distribution (images and instances per class, per split) as PNG/SVG and
/// show it in the Kubeflow Pipelines UI.
#[derive(Parser, Debug)]
#[command(name = "yolo-plot", version = kubeyolo::VERSION, after_help = AFTER_HELP, long_about = "\
Draw the distribution step's result as horizontal bar charts: for every split, the number of \
images containing each class and the number of instances of each class (the count printed at each \
bar; a class with no images in a split is marked with a red 0). The canvas grows with the class \
count, so 80 class names stay legible. Writes PNG and SVG to --out-dir, and the chart (embedded as \
base64 PNG) plus the per-class table as a self-contained HTML page, Markdown, and KFP v1 UI metadata.")]
struct Args {
    /// The distribution result (`result_json` of yolo-distribution): the JSON itself (as KFP
    /// passes it) or a path to a file holding it. Example: --result-json /data/distribution/result.json
    #[arg(long, value_name = "JSON|PATH")]
    result_json: String,

    /// Class names (`cls_names_json` of yolo-distribution), `{"0": "name", ...}` or a list, the
    /// JSON itself or a path. Optional: the result already holds the names; when given, they
    /// are checked against it and used for the labels. Example: --cls-names-json '{"0": "circle", "1": "square"}'
    #[arg(long, value_name = "JSON|PATH")]
    cls_names_json: Option<String>,

    /// Folder for distribution.png and distribution.svg (created when missing). Default: the
    /// folder of --result-json when that is a file, else <data-root>/distribution.
    /// Example: --out-dir /data/runs/exp1/plots
    #[arg(long)]
    out_dir: Option<PathBuf>,

    /// Write a self-contained HTML page (chart as base64 PNG + tables) here: the KFP v2
    /// `system.HTML` artifact. Example: --out-html /tmp/outputs/distribution_html
    #[arg(long)]
    out_html: Option<PathBuf>,

    /// Write Markdown (chart as base64 PNG + tables) here: the KFP v2 `system.Markdown` artifact.
    /// Example: --out-md /tmp/outputs/distribution_md
    #[arg(long)]
    out_md: Option<PathBuf>,

    /// Write the KFP v1 UI metadata here (a `web-app` viewer with the HTML page and a `markdown`
    /// viewer with the tables). Example: --out-ui-metadata /mlpipeline-ui-metadata.json
    #[arg(long)]
    out_ui_metadata: Option<PathBuf>,

    /// The mounted volume (only used for the default --out-dir). Overrides KUBEYOLO_DATA_ROOT;
    /// default /data. Example: --data-root ./demo
    #[arg(long)]
    data_root: Option<PathBuf>,

    #[command(flatten)]
    tracking: TrackingArgs,
}

/// `println!` that ignores a closed stdout (`yolo-plot ... | head -1` must not panic).
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

fn main() {
    let args = Args::parse();
    let root = DataRoot::from_flag(args.data_root.as_deref());
    kubeyolo::error::run_main(|| run_tracked(&args.tracking, "plot", &root.path, |tracker| run(&args, &root, tracker)))
}

fn run(args: &Args, root: &DataRoot, tracker: &Tracker) -> Result<()> {
    let mut dist = Distribution::from_arg(&args.result_json).map_err(|e| {
        if e.file.is_none() {
            e.with_key("--result-json")
        } else {
            e
        }
    })?;
    if let Some(arg) = &args.cls_names_json {
        let names =
            parse_cls_names(arg).map_err(|e| if e.file.is_none() { e.with_key("--cls-names-json") } else { e })?;
        if names.len() != dist.names.len() {
            return Err(Error::data(format!(
                "--cls-names-json has {} classes but the distribution result has {}",
                names.len(),
                dist.names.len()
            ))
            .with_hint("pass both outputs of the same yolo-distribution run"));
        }
        dist.names = names;
    }
    let out_dir = match &args.out_dir {
        Some(d) => d.clone(),
        None => default_out_dir(&args.result_json, root),
    };

    // Render everything in memory first: nothing is written unless all of it succeeds.
    let title = format!("Class distribution — {}", file_name(&dist.data_yaml));
    let chart = DistributionChart::new(&dist, &title)?;
    let png = plot::render_png(&chart)?;
    let svg = plot::render_svg(&chart)?;
    let png_path = out_dir.join("distribution.png");
    let svg_path = out_dir.join("distribution.svg");
    let split_table = to_table(dist.split_table());
    let class_table = to_table(dist.class_table());
    let uri = png_data_uri(&png);
    let html = plot::html_page(
        &title,
        &format!(
            "<p>Dataset yaml: <code>{}</code> — {} classes. Files on the volume: <code>{}</code>, <code>{}</code>.</p>\n\
             <img alt=\"class distribution\" src=\"{uri}\">\n<h2>Splits</h2>\n{}<h2>Images and instances per class</h2>\n{}",
            html_escape(&dist.data_yaml.display().to_string()),
            dist.nc(),
            html_escape(&png_path.display().to_string()),
            html_escape(&svg_path.display().to_string()),
            split_table.to_html(),
            class_table.to_html(),
        ),
    );
    let tables_md = format!(
        "## Splits\n\n{}\n## Images and instances per class\n\n{}",
        split_table.to_markdown(),
        class_table.to_markdown()
    );
    let files_md = format!("Files on the volume: `{}`, `{}`\n\n", png_path.display(), svg_path.display());
    let markdown = format!("# {title}\n\n![class distribution]({uri})\n\n{files_md}{tables_md}");

    kubeyolo::files::write_atomic(&png_path, &png)?;
    kubeyolo::files::write_atomic(&svg_path, svg.as_bytes())?;
    let (w, h) = chart.size();
    say!("wrote {} ({w}x{h} px, {} KiB)", png_path.display(), png.len() / 1024);
    say!("wrote {}", svg_path.display());
    if let Some(p) = &args.out_html {
        kfp::write_html_artifact(p, &html)?;
        say!("wrote {}", p.display());
    }
    if let Some(p) = &args.out_md {
        kfp::write_markdown_artifact(p, &markdown)?;
        say!("wrote {}", p.display());
    }
    if let Some(p) = &args.out_ui_metadata {
        UiMetadata::new().web_app(&html).markdown(&format!("# {title}\n\n{files_md}{tables_md}")).write(p)?;
        say!("wrote {}", p.display());
    }
    // MLflow (a no-op without a tracking URI); the HTML is logged from memory, its KFP file
    // may be called `data`.
    tracker.log_artifact(&png_path, "plot");
    tracker.log_artifact(&svg_path, "plot");
    tracker.log_text(&html, "plot/distribution.html");
    Ok(())
}

/// Beside the result file when it is one; else `<data root>/distribution`.
fn default_out_dir(result_arg: &str, root: &DataRoot) -> PathBuf {
    if !result_arg.trim_start().starts_with('{') {
        if let Some(parent) = Path::new(result_arg).parent() {
            return if parent.as_os_str().is_empty() { PathBuf::from(".") } else { parent.to_path_buf() };
        }
    }
    root.path.join("distribution")
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}

fn to_table((header, rows): (Vec<String>, Vec<Vec<String>>)) -> Table {
    rows.into_iter().fold(Table::new(header), |t, r| t.row(r))
}
