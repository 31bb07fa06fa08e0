//! Katib emitter: `kubeyolo compile --format katib` writes a Katib `Experiment`
//! (`kubeflow.org/v1beta1`), Kubeflow's own hyper-parameter search, as the alternative to the
//! pipeline's tune step. Submit it with `kubectl apply -f experiment.yaml`.
//!
//! - **Search space**: ultralytics 8.4's tuner space restricted to the keys kubeyolo's trainer
//!   acts on ([`Space::default`]) or the user's space yaml (`--tune-space`), one `double`
//!   (`int` for integer keys) parameter per key with its bounds; the mutation gains have no
//!   Katib counterpart. A key whose min equals max is no search dimension: it is passed as a
//!   fixed `--set`.
//! - **Trials**: a `batch/v1` Job whose one container (`training-container`) runs the train
//!   image's `yolo-train` with `--set key=${trialParameters.key}` for every parameter, on the
//!   same claim at `/data` (plus `/dev/shm`, requests, GPUs and MLflow env as the pipeline's
//!   train step), in its own run folder `runs/detect/<trial name>` (a retried pod of the Job
//!   resumes it). Model, cfg and dataset are names under `/data`, resolved by `yolo-train` as
//!   verify resolves them.
//! - **Metrics**: Katib's File collector reads `yolo-train --out-metrics-text` ([`METRICS_FILE`]),
//!   one `name=value` line per metric, with Katib's default text filter written out
//!   ([`TEXT_FILTER`]). Objective: maximize `fitness`; also recorded: mAP50-95, mAP50,
//!   precision, recall.
//! - **Budget**: `maxTrialCount` = `--tune-iterations`, `parallelTrialCount` = `--tune-workers`,
//!   `maxFailedTrialCount` = min(3, maxTrialCount): a broken cfg or image stops the
//!   experiment after three failed trials instead of burning the whole budget.
//!
//! Katib's metrics collector runs the trial command through `sh -c` with the arguments joined
//! by spaces, unquoted (its pod webhook's `wrapWorkerContainer`): every argument here must be
//! free of spaces and shell characters ([`check_shell_safe`]), and the train image needs
//! `/bin/sh`. The metrics file's folder gets an emptyDir from Katib, so it is not under `/data`.
//! The File collector needs the namespace label `katib.kubeflow.org/metrics-collector-injection:
//! enabled` (Kubeflow profiles have it).

use serde_json::{json, Map, Value};

use crate::graph::{Step, TuneOptions};
use crate::k8s;
use crate::settings::{check_dns1123, CompileSettings};
use kubeyolo::tune::space::{Dim, Space};
use kubeyolo::{Error, Result};

/// Where the trial's `yolo-train` writes its `name=value` metrics for Katib's File collector
/// (a folder Katib mounts an emptyDir on, shared with its sidecar).
pub const METRICS_FILE: &str = "/var/log/katib/metrics.txt";
/// The objective (maximized) and the metrics recorded with it.
pub const OBJECTIVE: &str = "fitness";
pub const ADDITIONAL_METRICS: [&str; 4] = ["mAP50-95", "mAP50", "precision", "recall"];
/// Katib's default filter for TEXT metrics files (`common.DefaultFilter`): `name=value`.
pub const TEXT_FILTER: &str = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)";
/// The trial container's name (the Katib SDK's default primary container).
pub const PRIMARY_CONTAINER: &str = "training-container";
/// The trial parameter carrying the trial's name (`${trialSpec.Name}`): its run folder.
const TRIAL_NAME: &str = "trialName";

/// Katib's built-in suggestion algorithms that need nothing beyond the space: `tpe` (the
/// default), `multivariate-tpe`, `random`, `bayesianoptimization`, `cmaes`, `sobol`. Grid needs a
/// step per double; hyperband, PBT and the NAS algorithms need settings of their own.
pub const ALGORITHMS: [&str; 6] = ["tpe", "multivariate-tpe", "random", "bayesianoptimization", "cmaes", "sobol"];
/// Why `tpe`: it models good and bad trials separately and copes with ~25 mixed dimensions and
/// with trials finishing out of order under parallelism; a Gaussian process
/// (`bayesianoptimization`) scales poorly to that many dimensions, CMA-ES wants many trials per
/// generation, random search wastes a small budget.
pub const DEFAULT_ALGORITHM: &str = "tpe";

/// Everything `--format katib` is compiled from (plus the [`CompileSettings`]).
#[derive(Debug, Clone)]
pub struct KatibOptions {
    /// `metadata.name` of the Experiment.
    pub name: String,
    /// `metadata.namespace`; `None`: the one `kubectl apply -n` (or the context) gives.
    pub namespace: Option<String>,
    pub algorithm: String,
    pub space: Space,
    /// Model, cfg and dataset names under /data (the pipeline's run parameters).
    pub model: String,
    pub cfg: String,
    pub data: String,
    /// Iterations = trials, workers = parallel trials, epochs per trial.
    pub tune: TuneOptions,
}

/// Compile to the Experiment YAML (a comment header saying how to submit it, then the object).
pub fn emit(train: &Step, o: &KatibOptions, s: &CompileSettings) -> Result<String> {
    let exp = build(train, o, s)?;
    let mut out = format!(
        "# Katib Experiment: {} trials of yolo-train ({} at once), {} search, maximize {OBJECTIVE}.\n\
         # Submit: kubectl apply -n <profile namespace> -f <this file>\n\
         # Watch:  kubectl get experiment {} -w; kubectl get trials -l katib.kubeflow.org/experiment={}\n",
        o.tune.iterations, o.tune.workers, o.algorithm, o.name, o.name
    );
    out.push_str(&crate::yaml::to_yaml(&exp)?);
    Ok(out)
}

/// The Experiment as a JSON value; `train` is the pipeline's train step (image, requests, env).
pub fn build(train: &Step, o: &KatibOptions, s: &CompileSettings) -> Result<Value> {
    validate(o, s)?;
    let (searched, fixed): (Vec<&Dim>, Vec<&Dim>) = o.space.dims.iter().partition(|d| d.min < d.max);
    if searched.is_empty() {
        return Err(Error::usage("the tune space has no dimension with min < max: nothing for Katib to search")
            .with_hint("give at least one key a range, e.g. `lr0: [1.0e-5, 1.0e-2]`"));
    }

    let parameters: Vec<Value> = searched
        .iter()
        .map(|d| {
            let (ty, min, max) = if d.int {
                ("int", (d.min.ceil() as i64).to_string(), (d.max.floor() as i64).to_string())
            } else {
                ("double", number(d.min), number(d.max))
            };
            json!({ "name": d.key, "parameterType": ty, "feasibleSpace": { "min": min, "max": max } })
        })
        .collect();
    let mut trial_params = vec![json!({
        "name": TRIAL_NAME,
        "description": "the trial's name: its run folder runs/detect/<trial name>",
        "reference": "${trialSpec.Name}",
    })];
    trial_params.extend(searched.iter().map(|d| {
        json!({ "name": d.key, "description": format!("cfg key {} (yolo-train --set)", d.key), "reference": d.key })
    }));

    let mut args: Vec<String> = vec![
        "--model-path".into(),
        o.model.clone(),
        "--cfg-yaml".into(),
        o.cfg.clone(),
        "--data-yaml".into(),
        o.data.clone(),
        "--run-dir".into(),
        format!("runs/detect/${{trialParameters.{TRIAL_NAME}}}"),
    ];
    if let Some(e) = o.tune.epochs {
        args.extend(["--set".into(), format!("epochs={e}")]);
    }
    for d in &fixed {
        let v = if d.int { (d.min.ceil() as i64).to_string() } else { number(d.min) };
        args.extend(["--set".into(), format!("{}={v}", d.key)]);
    }
    for d in &searched {
        args.extend(["--set".into(), format!("{}=${{trialParameters.{}}}", d.key, d.key)]);
    }
    args.extend(["--out-metrics-text".into(), METRICS_FILE.into()]);

    let (mounts, volumes) = k8s::data_volumes(s, "data", &s.pvc.name);
    let mut container = Map::new();
    container.insert("name".into(), json!(PRIMARY_CONTAINER));
    container.insert("image".into(), json!(s.image(train)));
    container.insert("command".into(), json!([train.binary()]));
    container.insert("args".into(), json!(args));
    container.insert("volumeMounts".into(), json!(mounts));
    let env = k8s::env(s, train);
    if !env.is_empty() {
        container.insert("env".into(), Value::Array(env));
    }
    if let Some(r) = k8s::resources(s, train) {
        container.insert("resources".into(), r);
    }
    if let Some(sc) = k8s::security_context(s) {
        container.insert("securityContext".into(), sc);
    }
    let mut pod = Map::new();
    pod.insert("restartPolicy".into(), json!("Never"));
    pod.insert("containers".into(), json!([Value::Object(container)]));
    pod.insert("volumes".into(), json!(volumes));
    let (selector, tolerations) = k8s::scheduling(s, train);
    if let Some(sel) = selector {
        pod.insert("nodeSelector".into(), sel);
    }
    if let Some(tol) = tolerations {
        pod.insert("tolerations".into(), tol);
    }
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {
            // A lost pod is retried and resumes the trial's run folder (as train's retries).
            "backoffLimit": train.retry.map_or(0, |r| r.max_retries),
            "template": {
                // Istio's sidecar would keep the Job's pod from completing.
                "metadata": { "annotations": { "sidecar.istio.io/inject": "false" } },
                "spec": pod,
            },
        },
    });

    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(o.name));
    if let Some(ns) = &o.namespace {
        metadata.insert("namespace".into(), json!(ns));
    }
    Ok(json!({
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": metadata,
        "spec": {
            "objective": { "type": "maximize", "objectiveMetricName": OBJECTIVE, "additionalMetricNames": ADDITIONAL_METRICS },
            "algorithm": { "algorithmName": o.algorithm },
            "maxTrialCount": o.tune.iterations,
            "parallelTrialCount": o.tune.workers,
            "maxFailedTrialCount": o.tune.iterations.min(3),
            "metricsCollectorSpec": {
                "collector": { "kind": "File" },
                "source": {
                    "fileSystemPath": { "path": METRICS_FILE, "kind": "File", "format": "TEXT" },
                    "filter": { "metricsFormat": [TEXT_FILTER] },
                },
            },
            "parameters": parameters,
            "trialTemplate": { "primaryContainerName": PRIMARY_CONTAINER, "trialParameters": trial_params, "trialSpec": job },
        },
    }))
}

/// A bound as Katib reads it (`strconv.ParseFloat`): Rust's shortest round-trip form.
fn number(x: f64) -> String {
    format!("{x:?}")
}

fn validate(o: &KatibOptions, s: &CompileSettings) -> Result<()> {
    s.validate()?;
    o.tune.validate()?;
    if s.pvc.create.is_some() {
        return Err(Error::usage(
            "--create-pvc does not apply to --format katib: a Katib trial mounts an existing claim",
        )
        .with_hint(
            "create the claim first (kubectl apply, or one pipeline run with --create-pvc), then pass --pvc NAME",
        ));
    }
    // Katib's own rule for Experiment names (validator.go) is stricter than DNS-1123.
    let name_ok = o.name.len() <= 63
        && o.name.starts_with(|c: char| c.is_ascii_lowercase())
        && o.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !o.name.ends_with('-');
    if !name_ok {
        return Err(Error::usage(format!("--katib-name '{}' is not a valid Experiment name", o.name))
            .with_hint("lower-case letters, digits and '-', starting with a letter, e.g. yolov8-tune"));
    }
    if let Some(ns) = &o.namespace {
        check_dns1123("--katib-namespace", ns)?;
    }
    if !ALGORITHMS.contains(&o.algorithm.as_str()) {
        return Err(Error::usage(format!("--katib-algorithm '{}' is not supported", o.algorithm))
            .with_hint(format!("one of {}", ALGORITHMS.join(", "))));
    }
    if o.tune.epochs.is_some() && o.space.dims.iter().any(|d| d.key == "epochs") {
        return Err(Error::usage("--tune-epochs fixes epochs, but the tune space searches 'epochs'")
            .with_hint("drop one of the two"));
    }
    for (what, v) in [("model_name", &o.model), ("cfg", &o.cfg), ("data", &o.data)] {
        check_shell_safe(&format!("--set {what}"), v)?;
    }
    Ok(())
}

/// Katib joins the trial's arguments with spaces into `sh -c` (unquoted): a value with a space
/// or a shell character would be split or interpreted.
pub fn check_shell_safe(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "._-/=:,+@%".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::usage(format!("{what} '{value}': Katib runs the trial command through `sh -c` unquoted"))
            .with_hint("use a name of letters, digits and . _ - / only (rename the file on the volume)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> KatibOptions {
        KatibOptions {
            name: "yolov8-tune".into(),
            namespace: None,
            algorithm: DEFAULT_ALGORITHM.into(),
            space: Space::default(),
            model: "yolov8n.pt".into(),
            cfg: "cfg-custom".into(),
            data: "data-custom".into(),
            tune: TuneOptions { iterations: 12, epochs: Some(5), workers: 3 },
        }
    }

    fn train() -> Step {
        crate::graph::pipeline().step("train").unwrap().clone()
    }

    fn args(exp: &Value) -> Vec<String> {
        exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn default_space_becomes_parameters_and_set_flags() {
        let exp = build(&train(), &options(), &CompileSettings::default()).unwrap();
        let params = exp["spec"]["parameters"].as_array().unwrap();
        assert_eq!(params.len(), Space::default().dims.len());
        assert_eq!(
            params[0],
            json!({ "name": "lr0", "parameterType": "double", "feasibleSpace": { "min": "1e-5", "max": "0.01" } })
        );
        let cm = params.iter().find(|p| p["name"] == "close_mosaic").unwrap();
        assert_eq!(cm["parameterType"], "int");
        assert_eq!(cm["feasibleSpace"], json!({ "min": "0", "max": "10" }));
        let a = args(&exp);
        assert!(a.windows(2).any(|w| w[0] == "--set" && w[1] == "lr0=${trialParameters.lr0}"), "{a:?}");
        assert!(a.windows(2).any(|w| w[0] == "--set" && w[1] == "epochs=5"), "{a:?}");
        assert!(a.windows(2).any(|w| w[0] == "--run-dir" && w[1] == "runs/detect/${trialParameters.trialName}"));
        assert_eq!(a.last().map(String::as_str), Some(METRICS_FILE));
        assert_eq!(exp["spec"]["maxTrialCount"], 12);
        assert_eq!(exp["spec"]["parallelTrialCount"], 3);
        assert_eq!(exp["spec"]["maxFailedTrialCount"], 3);
        assert!(
            a.iter().all(|x| check_shell_safe("arg", &x.replace("${trialParameters.", "").replace('}', "")).is_ok()),
            "{a:?}"
        );
    }

    #[test]
    fn a_fixed_key_is_set_not_searched() {
        let mut o = options();
        o.space = Space::parse("lr0: [0.001, 0.01]\nmosaic: [0.5, 0.5]\n", std::path::Path::new("s.yaml")).unwrap();
        let exp = build(&train(), &o, &CompileSettings::default()).unwrap();
        assert_eq!(exp["spec"]["parameters"].as_array().unwrap().len(), 1);
        let a = args(&exp);
        assert!(a.windows(2).any(|w| w[0] == "--set" && w[1] == "mosaic=0.5"), "{a:?}");
        let names: Vec<&str> = exp["spec"]["trialTemplate"]["trialParameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["trialName", "lr0"]);
    }

    #[test]
    fn bad_options_are_usage_errors() {
        let s = CompileSettings::default();
        let mut cases: Vec<KatibOptions> = Vec::new();
        for f in [
            |o: &mut KatibOptions| o.name = "Yolo_Tune".into(),
            |o: &mut KatibOptions| o.algorithm = "grid".into(),
            |o: &mut KatibOptions| o.cfg = "cfg custom".into(),
            |o: &mut KatibOptions| o.data = "data;rm".into(),
            |o: &mut KatibOptions| o.tune.workers = 20,
            |o: &mut KatibOptions| o.space = Space { dims: vec![] },
        ] {
            let mut o = options();
            f(&mut o);
            cases.push(o);
        }
        for o in cases {
            let e = build(&train(), &o, &s).unwrap_err();
            assert_eq!(e.kind, kubeyolo::ErrorKind::Usage, "{o:?}: {e}");
        }
        let mut created = s.clone();
        created.pvc.create = Some(crate::settings::CreatePvc {
            storage_class: String::new(),
            size: "5Gi".into(),
            access_mode: "ReadWriteOnce".into(),
        });
        assert!(build(&train(), &options(), &created).is_err());
    }
}
