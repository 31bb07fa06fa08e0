//! What verify, distribution and plot log to MLflow (issue 5): each step is one run that ends
//! FINISHED with its params, metrics and artifacts — FAILED with the problems when verify rejects
//! its inputs — and without a tracking URI the steps log nothing and leave no trace.
//!
//! The MLflow test needs the server of `scripts/services.sh` (`KUBEYOLO_TEST_MLFLOW_URI`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kubeyolo::data::synth::{class_names, generate, SynthSpec};
use kubeyolo_e2e::mlflow::{self, artifact_bytes, artifacts, data};
use kubeyolo_e2e::{bin, text};
use serde_json::Value;

const SPEC_IMAGES: [usize; 3] = [12, 6, 4];
const NC: usize = 3;

/// A data root with a synthetic dataset (datasets/synth) and cfg-yaml/cfg-custom.yaml.
fn volume() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let spec = SynthSpec { images_per_split: SPEC_IMAGES, imgsz: 64, nc: NC, seed: 11, ..SynthSpec::default() };
    generate(&d.path().join("datasets/synth"), &spec).unwrap();
    std::fs::create_dir_all(d.path().join("cfg-yaml")).unwrap();
    std::fs::write(d.path().join("cfg-yaml/cfg-custom.yaml"), "epochs: 1\nimgsz: 64\nbatch: 4\n").unwrap();
    std::fs::write(d.path().join("tune-space.yaml"), "lr0: [0.001, 0.01]\n").unwrap();
    d
}

/// Run a step with the data root `root`, tracking into `tracking` = (uri, experiment) or off.
fn step(name: &str, root: &Path, args: &[&str], tracking: Option<(&str, &str)>) -> Output {
    let mut cmd = Command::new(bin(name));
    cmd.args(args).env("KUBEYOLO_DATA_ROOT", root);
    for var in ["MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "MLFLOW_RUN_ID"] {
        cmd.env_remove(var);
    }
    if let Some((uri, experiment)) = tracking {
        mlflow::track_into(&mut cmd, uri, experiment);
    }
    cmd.output().unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// verify → distribution → plot as the pipeline chains them; returns the output folder.
fn pipeline(root: &Path, tracking: Option<(&str, &str)>) -> PathBuf {
    let out = root.join("out");
    let p = |name: &str| out.join(name).display().to_string();
    let o = step(
        "yolo-verify",
        root,
        &[
            "--model-name",
            "yolov8n.yaml",
            "--cfg",
            "cfg-custom",
            "--data",
            "datasets/synth/data-synth",
            "--tune-space",
            "tune-space.yaml",
            "--out-data-yaml",
            &p("data_yaml"),
        ],
        tracking,
    );
    assert!(o.status.success(), "verify\n{}", text(&o));
    let data_yaml = read(&out.join("data_yaml")).trim().to_string();
    let o = step(
        "yolo-distribution",
        root,
        &[
            "--data-yaml",
            &data_yaml,
            "--out-result-json",
            &p("result_json"),
            "--out-cls-names-json",
            &p("cls_names_json"),
        ],
        tracking,
    );
    assert!(o.status.success(), "distribution\n{}", text(&o));
    let o = step(
        "yolo-plot",
        root,
        &[
            "--result-json",
            &p("result_json"),
            "--cls-names-json",
            &p("cls_names_json"),
            "--out-dir",
            &p("plots"),
            "--out-html",
            &p("html"),
        ],
        tracking,
    );
    assert!(o.status.success(), "plot\n{}", text(&o));
    out
}

/// The one run whose `kubeyolo.step` tag is `name` and that `pick` accepts.
fn run_of<'a>(runs: &'a [Value], name: &str, pick: impl Fn(&Value) -> bool) -> &'a Value {
    let mine: Vec<&Value> = runs
        .iter()
        .filter(|r| data(r, "tags").get("kubeyolo.step").and_then(Value::as_str) == Some(name) && pick(r))
        .collect();
    assert_eq!(mine.len(), 1, "expected one '{name}' run, got {}: {runs:?}", mine.len());
    mine[0]
}

fn num(v: Option<&Value>, what: &str) -> f64 {
    let v = v.unwrap_or_else(|| panic!("{what} was not logged"));
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("{what}: not a number: {v}"))
}

#[test]
fn verify_distribution_plot_log_runs_to_mlflow() {
    let Some(uri) = mlflow::server("verify_distribution_plot_log_runs_to_mlflow") else { return };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let experiment = format!("tracking-steps-e2e-{}-{nanos}", std::process::id());
    let vol = volume();
    let root = vol.path();
    let out = pipeline(root, Some((&uri, &experiment)));
    // verify rejecting its inputs: the run must end FAILED, carrying the problem
    let bad = step(
        "yolo-verify",
        root,
        &["--model-name", "yolov8n.yaml", "--cfg", "cfg-custom", "--data", "no-such-data"],
        Some((&uri, &experiment)),
    );
    assert!(!bad.status.success(), "{}", text(&bad));

    let runs = mlflow::runs(&uri, &experiment);
    assert_eq!(runs.len(), 4, "{runs:?}");

    // verify: inputs as given and as resolved
    let data_param = |want: &'static str| {
        move |r: &Value| data(r, "params").get("verify/data").and_then(Value::as_str) == Some(want)
    };
    let ok = run_of(&runs, "verify", data_param("datasets/synth/data-synth"));
    assert_eq!(ok["info"]["status"], "FINISHED", "{ok}");
    let params = data(ok, "params");
    assert_eq!(params["verify/model_name"], "yolov8n.yaml");
    assert_eq!(params["verify/cfg"], "cfg-custom");
    assert_eq!(params["verify/data_yaml"].as_str(), Some(read(&out.join("data_yaml")).trim()));
    assert_eq!(
        params["verify/cfg_yaml"].as_str(),
        Some(root.join("cfg-yaml/cfg-custom.yaml").display().to_string().as_str())
    );
    assert_eq!(params["verify/tune_space"], "tune-space.yaml");
    assert_eq!(
        params["verify/tune_space_yaml"].as_str(),
        Some(root.join("tune-space.yaml").display().to_string().as_str())
    );
    assert_eq!(data(ok, "tags")["kubeyolo.verify.ok"], "true");
    let failed = run_of(&runs, "verify", data_param("no-such-data"));
    assert_eq!(failed["info"]["status"], "FAILED", "{failed}");
    let tags = data(failed, "tags");
    let error =
        tags.get("kubeyolo.error").and_then(Value::as_str).unwrap_or_else(|| panic!("no kubeyolo.error tag: {tags:?}"));
    assert!(error.contains("no-such-data"), "the problem must name the missing dataset: {error}");
    assert_eq!(tags["kubeyolo.verify.ok"], "false");

    // distribution: every count of result_json as a metric, both outputs as artifacts
    let dist = run_of(&runs, "distribution", |_| true);
    assert_eq!(dist["info"]["status"], "FINISHED", "{dist}");
    let result: Value = serde_json::from_str(&read(&out.join("result_json"))).unwrap();
    let metrics = data(dist, "metrics");
    let names = class_names(NC);
    for (i, split) in ["train", "val", "test"].iter().enumerate() {
        let s = result["splits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["split"] == *split)
            .unwrap_or_else(|| panic!("{split} in {result}"));
        assert_eq!(num(metrics.get(&format!("dataset/{split}/images")), split), SPEC_IMAGES[i] as f64);
        for key in
            ["labelled_images", "backgrounds", "missing_labels", "instances", "invalid_lines", "unreadable_labels"]
        {
            let k = format!("dataset/{split}/{key}");
            assert_eq!(num(metrics.get(&k), &k), s[key].as_f64().unwrap(), "{k}");
        }
        for (c, name) in names.iter().enumerate() {
            for key in ["images", "instances"] {
                let k = format!("dataset/{split}/class/{name}/{key}");
                assert_eq!(num(metrics.get(&k), &k), s[format!("{key}_per_class")][c].as_f64().unwrap(), "{k}");
            }
        }
    }
    assert!(
        num(metrics.get("dataset/train/instances"), "train instances") > 0.0,
        "the dataset must have objects for the test to mean anything"
    );
    let listed = artifacts(&uri, dist, "distribution");
    for f in ["distribution/result_json.json", "distribution/cls_names_json.json"] {
        assert!(listed.iter().any(|p| p == f), "{f} not in {listed:?}");
    }
    if let Some(bytes) = artifact_bytes(&uri, dist, "distribution/result_json.json") {
        assert_eq!(
            serde_json::from_slice::<Value>(&bytes).unwrap(),
            result,
            "the logged result_json is the step's output"
        );
        let names_json = artifact_bytes(&uri, dist, "distribution/cls_names_json.json").unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&names_json).unwrap(),
            serde_json::from_str::<Value>(&read(&out.join("cls_names_json"))).unwrap()
        );
    }

    // plot: the charts and the page
    let plot = run_of(&runs, "plot", |_| true);
    assert_eq!(plot["info"]["status"], "FINISHED", "{plot}");
    let listed = artifacts(&uri, plot, "plot");
    for f in ["plot/distribution.png", "plot/distribution.svg", "plot/distribution.html"] {
        assert!(listed.iter().any(|p| p == f), "{f} not in {listed:?}");
    }
    if let Some(png) = artifact_bytes(&uri, plot, "plot/distribution.png") {
        assert_eq!(
            png,
            std::fs::read(out.join("plots/distribution.png")).unwrap(),
            "the logged PNG is the step's chart"
        );
        assert_eq!(
            artifact_bytes(&uri, plot, "plot/distribution.html").unwrap(),
            std::fs::read(out.join("html")).unwrap()
        );
    }
}

/// No tracking URI: the same outputs as ever, nothing said about MLflow, no spool folder.
#[test]
fn without_a_tracking_uri_steps_log_nothing() {
    let vol = volume();
    let out = pipeline(vol.path(), None);
    for f in ["result_json", "cls_names_json", "html", "plots/distribution.png", "plots/distribution.svg"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    assert!(!vol.path().join(".kubeyolo").exists(), "no spool folder without tracking");
    let o = step("yolo-distribution", vol.path(), &["--data-yaml", "datasets/synth/data-synth"], None);
    assert!(o.status.success() && !text(&o).contains("mlflow"), "{}", text(&o));
}
