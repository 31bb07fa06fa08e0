//! The Kubeflow Pipelines runtime contract: what a step writes so that KFP (v1 and v2) sees it.
//!
//! A step never talks to KFP; it writes files whose paths it receives as arguments, and the KFP
//! launcher (v2) or Argo (v1) collects them after the process exits. The rules that matter, from
//! the KFP sources (see `shared/reference/kfp/NOTES.md` §2):
//!
//! - **String output parameters** ([`write_output_param`]) are read *verbatim* by the v2 launcher:
//!   a trailing newline would travel to the next step as part of a path. A missing file fails the
//!   task, so a step writes every declared output or exits non-zero.
//! - **v2 artifacts**: Markdown and HTML ([`write_markdown_artifact`], [`write_html_artifact`]) are
//!   files at the artifact path, shown by the UI as-is. A `system.Metrics` artifact is shown from
//!   its *metadata*, which only reaches KFP through the executor output file
//!   (`/tmp/kfp_outputs/output_metadata.json`, parsed strictly as protojson) — so
//!   [`write_metrics_artifact`] writes both the file and that metadata.
//! - **v1 files**: `mlpipeline-ui-metadata.json` ([`UiMetadata`]) and `mlpipeline-metrics.json`
//!   ([`write_v1_metrics`], names sanitised by [`v1_metric_name`]).
//!
//! Every file goes through [`crate::files`]: parent folders are created and the write is atomic,
//! so a failing step never leaves a half-written output for the next one.
//!
//! [`Table`] renders one table as Markdown (v2 UI, stdout) and CSV (v1 `table` viewer).

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::files;

/// Where the v2 launcher looks for the executor output (`ExecutorInput.outputs.outputFile`).
/// There is no placeholder for it, so the path is fixed.
pub const DEFAULT_EXECUTOR_OUTPUT: &str = "/tmp/kfp_outputs/output_metadata.json";

/// Environment variable that overrides [`DEFAULT_EXECUTOR_OUTPUT`] (tests, local runs).
/// Set it to an empty string or `none` to not write the executor output at all.
pub const EXECUTOR_OUTPUT_ENV: &str = "KUBEYOLO_KFP_EXECUTOR_OUTPUT";

// ------------------------------------------------------------------ output parameters

/// Write a string output parameter (`{{$.outputs.parameters['x'].output_file}}` in v2,
/// a `file_outputs` path in v1).
///
/// The value is written exactly as given — **no trailing newline** — because the v2 launcher
/// does not trim STRING parameters. Parent folders are created; the write is atomic.
pub fn write_output_param(path: &Path, value: &str) -> Result<()> {
    files::write_atomic(path, value.as_bytes())
}

/// Write a LIST/STRUCT (JSON) output parameter: compact JSON, no trailing newline.
pub fn write_json_param<T: Serialize + ?Sized>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string(value)
        .map_err(|e| Error::internal(format!("cannot serialize JSON: {e}")).with_file(path))?;
    write_output_param(path, &text)
}

// ------------------------------------------------------------------ v2 artifacts

/// Write a `system.Markdown` artifact: the UI downloads the file and renders it.
pub fn write_markdown_artifact(path: &Path, markdown: &str) -> Result<()> {
    files::write_atomic(path, markdown.as_bytes())
}

/// Write a `system.HTML` artifact: the UI downloads the file and shows it in a sandboxed frame,
/// so it must be self-contained (images as `data:` URIs, no external scripts).
pub fn write_html_artifact(path: &Path, html: &str) -> Result<()> {
    files::write_atomic(path, html.as_bytes())
}

/// Write a `system.Metrics` artifact named `name` (the output's name in the component, e.g.
/// `test_metrics`).
///
/// The file at `path` gets `{"metric": value, ...}`; the v2 UI does not read it (it is kept for
/// people and for downstream steps). What the UI shows is the artifact's metadata, which is
/// merged into the executor output file ([`executor_output_path`]). Non-finite values are
/// skipped (protojson cannot carry NaN as a number) with a warning on stderr.
pub fn write_metrics_artifact(path: &Path, name: &str, metrics: &[(&str, f64)]) -> Result<()> {
    let mut obj = Map::new();
    for (key, value) in metrics {
        match serde_json::Number::from_f64(*value) {
            Some(n) => {
                obj.insert((*key).to_string(), Value::Number(n));
            }
            None => eprintln!("warning: metric '{key}' is {value}; not recorded"),
        }
    }
    files::write_json_atomic(path, &Value::Object(obj.clone()))?;
    if let Some(exec) = executor_output_path() {
        merge_artifact_metadata(&exec, name, &obj)?;
    }
    Ok(())
}

/// The executor output file to write, or `None` when disabled through [`EXECUTOR_OUTPUT_ENV`].
pub fn executor_output_path() -> Option<PathBuf> {
    match std::env::var_os(EXECUTOR_OUTPUT_ENV) {
        None => Some(PathBuf::from(DEFAULT_EXECUTOR_OUTPUT)),
        Some(v) if v.is_empty() || v == "none" => None,
        Some(v) => Some(PathBuf::from(v)),
    }
}

/// Merge `metadata` into artifact `name` of the executor output file at `exec_path`:
/// `{"artifacts": {name: {"artifacts": [{"metadata": {...}}]}}}`.
///
/// Existing content (other artifacts, `parameterValues`, earlier metadata of the same artifact)
/// is kept, because one step may write several outputs. Only protojson fields of
/// `ExecutorOutput` are written; no `uri` (a non-empty one would override the launcher's).
pub fn merge_artifact_metadata(exec_path: &Path, name: &str, metadata: &Map<String, Value>) -> Result<()> {
    update_executor_output(exec_path, |root| {
        let artifacts = object_entry(root, "artifacts");
        let list = object_entry(artifacts, name);
        let arr = list.entry("artifacts").or_insert_with(|| Value::Array(Vec::new()));
        if !arr.is_array() {
            *arr = Value::Array(Vec::new());
        }
        let arr = arr.as_array_mut().expect("checked above");
        if arr.is_empty() || !arr[0].is_object() {
            arr.clear();
            arr.push(Value::Object(Map::new()));
        }
        let first = arr[0].as_object_mut().expect("checked above");
        let meta = object_entry(first, "metadata");
        for (k, v) in metadata {
            meta.insert(k.clone(), v.clone());
        }
    })
}

/// Record an output parameter in the executor output file as well (`parameterValues`).
/// Values there take priority over the output files; useful when a step has no file path.
pub fn merge_parameter_value(exec_path: &Path, name: &str, value: Value) -> Result<()> {
    update_executor_output(exec_path, |root| {
        object_entry(root, "parameterValues").insert(name.to_string(), value);
    })
}

/// Read-modify-write of the executor output JSON, atomically.
fn update_executor_output(exec_path: &Path, edit: impl FnOnce(&mut Map<String, Value>)) -> Result<()> {
    let mut root = match std::fs::read_to_string(exec_path) {
        Ok(text) if text.trim().is_empty() => Map::new(),
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                return Err(Error::io("the KFP executor output file is not a JSON object; refusing to overwrite it")
                    .with_file(exec_path)
                    .with_hint(format!("delete it, or point {EXECUTOR_OUTPUT_ENV} elsewhere")))
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(Error::io_at(exec_path, "read the KFP executor output", e)),
    };
    edit(&mut root);
    let bytes = serde_json::to_vec(&Value::Object(root))
        .map_err(|e| Error::internal(format!("cannot serialize JSON: {e}")).with_file(exec_path))?;
    files::write_atomic(exec_path, &bytes)
}

/// `map[key]` as an object, created (or replaced, if it held something else) when needed.
fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let v = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    v.as_object_mut().expect("made an object above")
}

// ------------------------------------------------------------------ v1 UI metadata

/// One viewer of the v1 UI (`mlpipeline-ui-metadata.json` → `outputs[]`).
/// Only inline storage is used: pods have no object-store credentials of their own.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UiOutput {
    /// `table`, `markdown`, `web-app`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub storage: String,
    /// The content itself (inline storage).
    pub source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<Vec<String>>,
}

/// Builder for the v1 `mlpipeline-ui-metadata.json`: `{"outputs": [...]}`.
///
/// ```
/// # use kubeyolo::kfp::{Table, UiMetadata};
/// let table = Table::new(["class", "images"]).row(["person", "12"]);
/// let ui = UiMetadata::new().table(&table).markdown("# Distribution");
/// assert_eq!(ui.outputs.len(), 2);
/// ```
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct UiMetadata {
    pub outputs: Vec<UiOutput>,
}

impl UiMetadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// A `table` viewer: CSV rows inline, header separately (as the v1 viewer wants).
    pub fn table(mut self, table: &Table) -> Self {
        self.outputs.push(UiOutput {
            kind: "table".into(),
            storage: "inline".into(),
            source: table.to_csv_rows(),
            format: Some("csv".into()),
            header: Some(table.header.clone()),
        });
        self
    }

    /// A `markdown` viewer.
    pub fn markdown(mut self, markdown: &str) -> Self {
        self.outputs.push(UiOutput {
            kind: "markdown".into(),
            storage: "inline".into(),
            source: markdown.into(),
            format: None,
            header: None,
        });
        self
    }

    /// A `web-app` viewer: a self-contained HTML page shown in a frame.
    pub fn web_app(mut self, html: &str) -> Self {
        self.outputs.push(UiOutput {
            kind: "web-app".into(),
            storage: "inline".into(),
            source: html.into(),
            format: None,
            header: None,
        });
        self
    }

    /// Write `{"outputs": [...]}` to `path` atomically (parents created).
    pub fn write(&self, path: &Path) -> Result<()> {
        files::write_json_atomic(path, self)
    }
}

// ------------------------------------------------------------------ v1 metrics

/// One entry of the v1 `mlpipeline-metrics.json`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct V1Metric {
    pub name: String,
    #[serde(rename = "numberValue")]
    pub number_value: f64,
    /// `RAW` or `PERCENTAGE`.
    pub format: String,
}

/// Turn any metric name into one KFP v1 accepts: `^[a-z]([-a-z0-9]{0,62}[a-z0-9])?$`.
///
/// Lowercased; every run of other characters becomes one `-`; a name that does not start with a
/// letter gets an `m-` prefix; cut to 64 characters; no trailing `-`.
/// `mAP50-95` → `map50-95`, `metrics/mAP50(B)` → `metrics-map50-b`, `50x` → `m-50x`.
pub fn v1_metric_name(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        out = "metric".into();
    } else if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "m-");
    }
    out.truncate(64);
    out.trim_end_matches('-').to_string()
}

/// Build the v1 metrics list: names sanitised (and made unique with `-2`, `-3`... when two
/// sanitise to the same), non-finite values skipped with a warning, format `RAW`.
pub fn v1_metrics(metrics: &[(&str, f64)]) -> Vec<V1Metric> {
    let mut out: Vec<V1Metric> = Vec::new();
    for (raw, value) in metrics {
        if !value.is_finite() {
            eprintln!("warning: metric '{raw}' is {value}; not recorded");
            continue;
        }
        let base = v1_metric_name(raw);
        let mut name = base.clone();
        let mut n = 2;
        while out.iter().any(|m| m.name == name) {
            let suffix = format!("-{n}");
            let mut b = base.clone();
            b.truncate(64 - suffix.len());
            name = format!("{}{suffix}", b.trim_end_matches('-'));
            n += 1;
        }
        out.push(V1Metric { name, number_value: *value, format: "RAW".into() });
    }
    out
}

/// Write the v1 `mlpipeline-metrics.json`: `{"metrics": [{"name", "numberValue", "format"}]}`.
pub fn write_v1_metrics(path: &Path, metrics: &[(&str, f64)]) -> Result<()> {
    files::write_json_atomic(path, &serde_json::json!({ "metrics": v1_metrics(metrics) }))
}

// ------------------------------------------------------------------ tables

/// A small table of strings, rendered as Markdown or CSV (the same data in both UIs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Self {
        Table { header: header.into_iter().map(Into::into).collect(), rows: Vec::new() }
    }

    /// Append a row (builder style).
    pub fn row<S: Into<String>>(mut self, cells: impl IntoIterator<Item = S>) -> Self {
        self.push(cells);
        self
    }

    /// Append a row.
    pub fn push<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// GitHub-flavoured Markdown. Columns whose cells are all numbers are right-aligned;
    /// `|` is escaped and newlines become spaces so a cell cannot break the table.
    pub fn to_markdown(&self) -> String {
        let ncols = self.header.len().max(self.rows.iter().map(Vec::len).max().unwrap_or(0));
        let cell = |s: &str| s.replace('|', "\\|").replace(['\r', '\n'], " ");
        let get = |r: &Vec<String>, i: usize| r.get(i).map(String::as_str).unwrap_or("").to_string();
        let mut out = String::new();
        out.push('|');
        for i in 0..ncols {
            out.push_str(&format!(" {} |", cell(&get(&self.header, i))));
        }
        out.push_str("\n|");
        for i in 0..ncols {
            let numeric = !self.rows.is_empty()
                && self.rows.iter().all(|r| {
                    let c = get(r, i);
                    let c = c.trim().trim_end_matches('%');
                    !c.is_empty() && c.parse::<f64>().is_ok()
                });
            out.push_str(if numeric { " ---: |" } else { " --- |" });
        }
        out.push('\n');
        for r in &self.rows {
            out.push('|');
            for i in 0..ncols {
                out.push_str(&format!(" {} |", cell(&get(r, i))));
            }
            out.push('\n');
        }
        out
    }

    /// An HTML `<table>` (cells escaped; numeric columns get `class="n"` for right alignment),
    /// for self-contained HTML artifacts.
    pub fn to_html(&self) -> String {
        let esc = crate::plot::html_escape;
        let numeric = |s: &str| {
            let t = s.trim().trim_end_matches('%');
            !t.is_empty() && t.parse::<f64>().is_ok()
        };
        let mut out = String::from("<table>\n<thead><tr>");
        for h in &self.header {
            out.push_str(&format!("<th>{}</th>", esc(h)));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for r in &self.rows {
            out.push_str("<tr>");
            for c in r {
                let class = if numeric(c) { " class=\"n\"" } else { "" };
                out.push_str(&format!("<td{class}>{}</td>", esc(c)));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n");
        out
    }

    /// RFC 4180 CSV with the header line.
    pub fn to_csv(&self) -> String {
        let mut out = csv_line(&self.header);
        out.push_str(&self.to_csv_rows());
        out
    }

    /// RFC 4180 CSV of the rows only (the v1 table viewer takes the header separately).
    pub fn to_csv_rows(&self) -> String {
        self.rows.iter().map(|r| csv_line(r)).collect()
    }
}

fn csv_line(cells: &[String]) -> String {
    let mut line = cells
        .iter()
        .map(|c| if c.contains([',', '"', '\n', '\r']) { format!("\"{}\"", c.replace('"', "\"\"")) } else { c.clone() })
        .collect::<Vec<_>>()
        .join(",");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn no_temp_files(d: &Path) {
        for e in std::fs::read_dir(d).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().to_string();
            assert!(!name.ends_with(".tmp"), "temporary file left behind: {name}");
        }
    }

    #[test]
    fn output_param_verbatim_no_newline_parents_created() {
        let d = dir();
        let p = d.path().join("tmp/kfp/outputs/data_yaml");
        write_output_param(&p, "/data/data-custom.yaml").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"/data/data-custom.yaml");
        // Overwrite in place (atomic rename over an existing file).
        write_output_param(&p, " keep spaces ").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), " keep spaces ");
        no_temp_files(p.parent().unwrap());
    }

    #[test]
    fn json_param_compact_no_newline() {
        let d = dir();
        let p = d.path().join("names");
        write_json_param(&p, &vec!["a", "b"]).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), r#"["a","b"]"#);
    }

    #[test]
    fn output_param_atomic_on_unwritable_destination() {
        // A folder where the file should go: the rename fails, nothing half-written appears.
        let d = dir();
        let p = d.path().join("out");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("x"), b"").unwrap();
        assert!(write_output_param(&p, "v").is_err());
        no_temp_files(d.path());
    }

    #[test]
    fn metric_names_sanitised() {
        assert_eq!(v1_metric_name("mAP50-95"), "map50-95");
        assert_eq!(v1_metric_name("metrics/mAP50(B)"), "metrics-map50-b");
        assert_eq!(v1_metric_name("50x"), "m-50x");
        assert_eq!(v1_metric_name("__"), "metric");
        assert_eq!(v1_metric_name("Precision "), "precision");
        let long = v1_metric_name(&"a-".repeat(100));
        assert!(long.len() <= 64 && !long.ends_with('-'));
        let re_ok = |s: &str| {
            let b = s.as_bytes();
            !b.is_empty()
                && b.len() <= 64
                && b[0].is_ascii_lowercase()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        };
        for raw in ["mAP50-95", "x/y", "Ü-metric", "9", "F1 (all)", &"Z".repeat(80)] {
            assert!(re_ok(&v1_metric_name(raw)), "{raw} -> {}", v1_metric_name(raw));
        }
    }

    #[test]
    fn v1_metrics_unique_and_finite() {
        let m = v1_metrics(&[("mAP50", 0.5), ("map50", 0.6), ("bad", f64::NAN)]);
        let names: Vec<_> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["map50", "map50-2"]);
        let d = dir();
        let p = d.path().join("a/mlpipeline-metrics.json");
        write_v1_metrics(&p, &[("mAP50", 0.4)]).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(v, serde_json::json!({"metrics": [{"name": "map50", "numberValue": 0.4, "format": "RAW"}]}));
    }

    #[test]
    fn ui_metadata_schema() {
        let t = Table::new(["class", "images"]).row(["a,b", "3"]);
        let ui = UiMetadata::new().table(&t).markdown("# hi").web_app("<p>x</p>");
        let d = dir();
        let p = d.path().join("ui/mlpipeline-ui-metadata.json");
        ui.write(&p).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"outputs": [
                {"type": "table", "storage": "inline", "source": "\"a,b\",3\n", "format": "csv", "header": ["class", "images"]},
                {"type": "markdown", "storage": "inline", "source": "# hi"},
                {"type": "web-app", "storage": "inline", "source": "<p>x</p>"}
            ]})
        );
    }

    #[test]
    fn executor_output_merges() {
        let d = dir();
        let exec = d.path().join("kfp_outputs/output_metadata.json");
        let mut m1 = Map::new();
        m1.insert("mAP50".into(), serde_json::json!(0.42));
        merge_artifact_metadata(&exec, "test_metrics", &m1).unwrap();
        merge_parameter_value(&exec, "model_path", Value::String("/data/x.pt".into())).unwrap();
        let mut m2 = Map::new();
        m2.insert("mAP50-95".into(), serde_json::json!(0.3));
        merge_artifact_metadata(&exec, "test_metrics", &m2).unwrap();
        merge_artifact_metadata(&exec, "train_metrics", &m2).unwrap();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&exec).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "parameterValues": {"model_path": "/data/x.pt"},
                "artifacts": {
                    "test_metrics": {"artifacts": [{"metadata": {"mAP50": 0.42, "mAP50-95": 0.3}}]},
                    "train_metrics": {"artifacts": [{"metadata": {"mAP50-95": 0.3}}]}
                }
            })
        );
        no_temp_files(exec.parent().unwrap());
    }

    /// The merged executor output parses strictly as KFP's `ExecutorOutput` protojson (what the
    /// v2 launcher does). Needs the kfp venv (`scripts/venv.sh kfp`, or `KUBEYOLO_KFP_PYTHON`);
    /// skipped without it unless `KUBEYOLO_REQUIRE_SERVICES=1`.
    #[test]
    fn executor_output_parses_as_kfp_protojson() {
        let py = std::env::var_os("KUBEYOLO_KFP_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venvs/kfp/bin/python"));
        if !py.exists() {
            assert!(
                std::env::var("KUBEYOLO_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "kfp venv missing ({}) but KUBEYOLO_REQUIRE_SERVICES=1",
                py.display()
            );
            println!("skipped: kfp venv not found at {}", py.display());
            return;
        }
        let d = dir();
        let exec = d.path().join("output_metadata.json");
        let mut m = Map::new();
        m.insert("mAP50".into(), serde_json::json!(0.42));
        m.insert("mAP50-95".into(), serde_json::json!(0.3));
        merge_artifact_metadata(&exec, "test_metrics", &m).unwrap();
        merge_artifact_metadata(&exec, "train_metrics", &m).unwrap();
        merge_parameter_value(&exec, "model_path", Value::String("/data/x.pt".into())).unwrap();
        let script = "import json,sys\n\
            from google.protobuf import json_format\n\
            from kfp.pipeline_spec import pipeline_spec_pb2 as ps\n\
            m = json_format.Parse(open(sys.argv[1]).read(), ps.ExecutorOutput())\n\
            print(m.artifacts['test_metrics'].artifacts[0].metadata['mAP50'])\n";
        let out = std::process::Command::new(&py).arg("-c").arg(script).arg(&exec).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0.42");
    }

    #[test]
    fn executor_output_garbage_is_an_error_not_overwritten() {
        let d = dir();
        let exec = d.path().join("output_metadata.json");
        std::fs::write(&exec, "[1,2").unwrap();
        let err = merge_artifact_metadata(&exec, "m", &Map::new()).unwrap_err();
        assert!(err.to_string().contains("output_metadata.json"), "{err}");
        assert_eq!(std::fs::read_to_string(&exec).unwrap(), "[1,2");
    }

    #[test]
    fn metrics_artifact_file_and_metadata() {
        // Uses an explicit executor path through the env override; this is the only test that
        // touches the variable, so parallel tests do not race on it.
        let d = dir();
        let exec = d.path().join("exec/output_metadata.json");
        std::env::set_var(EXECUTOR_OUTPUT_ENV, &exec);
        let art = d.path().join("minio/mlpipeline/run/test/test_metrics");
        write_metrics_artifact(&art, "test_metrics", &[("mAP50", 0.5), ("nan", f64::NAN)]).unwrap();
        let file: Value = serde_json::from_str(&std::fs::read_to_string(&art).unwrap()).unwrap();
        assert_eq!(file, serde_json::json!({"mAP50": 0.5}));
        let ex: Value = serde_json::from_str(&std::fs::read_to_string(&exec).unwrap()).unwrap();
        assert_eq!(ex["artifacts"]["test_metrics"]["artifacts"][0]["metadata"]["mAP50"], 0.5);
        std::env::set_var(EXECUTOR_OUTPUT_ENV, "none");
        assert_eq!(executor_output_path(), None);
        std::env::remove_var(EXECUTOR_OUTPUT_ENV);
        assert_eq!(executor_output_path(), Some(PathBuf::from(DEFAULT_EXECUTOR_OUTPUT)));
    }

    #[test]
    fn table_markdown_and_csv() {
        let t = Table::new(["class", "images", "note"]).row(["a|b", "12", "x\ny"]).row(["c", "3", "say \"hi\""]);
        assert_eq!(
            t.to_markdown(),
            "| class | images | note |\n| --- | ---: | --- |\n| a\\|b | 12 | x y |\n| c | 3 | say \"hi\" |\n"
        );
        assert_eq!(t.to_csv(), "class,images,note\na|b,12,\"x\ny\"\nc,3,\"say \"\"hi\"\"\"\n");
        let html = t.to_html();
        assert!(html.contains("<th>class</th>") && html.contains("<td class=\"n\">12</td>"), "{html}");
        assert!(html.contains("<td>say &quot;hi&quot;</td>"), "{html}");
    }
}
