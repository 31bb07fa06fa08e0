//! The one definition of the kubeyolo pipeline graph.
//!
//! Every emitter (KFP v2 IR in [`crate::v2`], Argo/KFP v1 in [`crate::v1`]) and every local
//! runner ([`crate::runner`]) walks this same structure, so the step names, the CLI flags, the
//! data passing and the conditions cannot drift apart between "what we compile for Kubeflow"
//! and "what `kubeyolo run` executes". It mirrors the seed's pipeline (and the reference
//! compilation `reference_v2.py` made with the real KFP SDK):
//!
//! ```text
//! verify ─▶ distribution ─▶ plot ─┐
//!    │                            ▼ (after)
//!    └──────────────▶ [if bool_train] train ─▶ test
//!                                     └──▶ [if bool_tune] tune
//! ```
//!
//! Names are KFP names: the task key, the component input/output names (valid Python
//! identifiers, inputs and outputs never share a name) and the flags the step binaries accept.
//!
//! Train's run folder is `runs/detect/<run id>` ([`Source::RunId`], [`TRAIN_RUNS`]): the id of
//! the pipeline run, filled in by the orchestrator, so a retried train pod resumes its own
//! checkpoint and a new run starts fresh. Train is the one step with retries ([`TRAIN_RETRY`]).

/// Type of a pipeline run parameter (KFP `parameterType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    String,
    Bool,
}

/// A run parameter of the pipeline (shown in the Kubeflow "Create run" form).
#[derive(Debug, Clone)]
pub struct Param {
    pub name: &'static str,
    pub ty: ParamType,
    /// Default value as text: `"true"`/`"false"` for booleans.
    pub default: &'static str,
    pub help: &'static str,
}

/// Where a step input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A pipeline run parameter.
    Param(&'static str),
    /// A string output parameter of an earlier step.
    Output { step: &'static str, output: &'static str },
    /// `prefix` followed by the id of the pipeline run, resolved by the orchestrator at run time:
    /// KFP v2 `{{$.pipeline_job_uuid}}` (`dsl.PIPELINE_JOB_ID_PLACEHOLDER`), Argo/KFP v1
    /// `{{workflow.uid}}` (`dsl.RUN_ID_PLACEHOLDER`), the local runner its own run id.
    ///
    /// Why: the train step keys its run folder by it. A retried pod (eviction, preemption, a
    /// KFP retry of the run) sees the same id, finds its own unfinished
    /// `weights/last.safetensors` and resumes; a new run gets a new id and never resumes an
    /// old run's checkpoint.
    RunId { prefix: &'static str },
}

/// Retries of a step whose pod failed, with exponential backoff (KFP v2 `set_retry`, Argo
/// `retryStrategy`). Given to steps that resume from their own checkpoints (train), so a lost
/// pod costs the time since the last checkpoint, not the whole step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Wait before the first retry, as a duration (`60s`).
    pub backoff: &'static str,
    /// Factor applied to the wait after each retry: an integer, because Argo's
    /// `backoff.factor` is an IntOrString (kfp 1.8 writes `factor: 2`); v2 writes it as a double.
    pub factor: u32,
    /// Cap on the wait (KFP's maximum is one hour).
    pub max_backoff: &'static str,
}

/// KFP artifact types the steps produce (schema titles of the `system` namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactType {
    Html,
    Markdown,
    Metrics,
}

impl ArtifactType {
    pub fn schema_title(self) -> &'static str {
        match self {
            ArtifactType::Html => "system.HTML",
            ArtifactType::Markdown => "system.Markdown",
            ArtifactType::Metrics => "system.Metrics",
        }
    }
    /// File name used for the artifact by the local runner (and as the v1 output path).
    pub fn file_ext(self) -> &'static str {
        match self {
            ArtifactType::Html => "html",
            ArtifactType::Markdown => "md",
            ArtifactType::Metrics => "json",
        }
    }
}

/// A string input of a step: `flag <value>`.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: &'static str,
    pub flag: &'static str,
    pub source: Source,
}

/// What kind of output a step writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// A string parameter: the step writes the value (verbatim, no trailing newline) to the
    /// file path given after `flag`.
    Parameter,
    /// A file artifact written at the path given after `flag`.
    Artifact(ArtifactType),
}

#[derive(Debug, Clone)]
pub struct Output {
    pub name: &'static str,
    pub flag: &'static str,
    pub kind: OutputKind,
}

impl Output {
    /// The seed's v1 `file_outputs` name. v1 let an output share an input's name (train's
    /// `data_yaml`); v2 forbids that, so the v2 name carries an `out_` prefix.
    pub fn v1_name(&self) -> &'static str {
        self.name.strip_prefix("out_").unwrap_or(self.name)
    }
}

/// A condition group (`dsl.If(param == True, name=...)`); groups nest in list order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    /// Group name shown in the UI (`taskInfo.name` of the condition task).
    pub name: &'static str,
    /// The boolean run parameter that must be true.
    pub param: &'static str,
}

/// A file only the KFP v1 UI reads (`/mlpipeline-ui-metadata.json`, `/mlpipeline-metrics.json`),
/// written when the step gets `flag <path>`; the v1 emitter passes it and declares the artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1File {
    pub flag: &'static str,
    /// Artifact name the v1 UI looks for.
    pub artifact: &'static str,
    pub path: &'static str,
}

pub const V1_UI_METADATA: (&str, &str) = ("mlpipeline-ui-metadata", "/mlpipeline-ui-metadata.json");
pub const V1_METRICS: (&str, &str) = ("mlpipeline-metrics", "/mlpipeline-metrics.json");

/// How heavy a step is: heavy steps (train, tune, test) get the GPU and the large requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    Light,
    Heavy,
}

/// One step = one container image = one binary `yolo-<name>`.
#[derive(Debug, Clone)]
pub struct Step {
    /// Task key and component suffix (`verify` → `comp-verify`, `exec-verify`).
    pub name: &'static str,
    /// Display name in the Kubeflow UI.
    pub display: &'static str,
    /// v1 display name (the seed's v1 pipeline used the bare step names).
    pub display_v1: &'static str,
    pub inputs: Vec<Input>,
    pub outputs: Vec<Output>,
    /// Explicit ordering without data passing (`.after()`).
    pub after: Vec<&'static str>,
    /// Enclosing condition groups, outermost first.
    pub conditions: Vec<Condition>,
    pub weight: Weight,
    /// Whether the step logs to MLflow (gets the MLflow environment).
    pub tracks: bool,
    /// v1-only UI files the step can write (see [`V1File`]).
    pub v1_files: Vec<V1File>,
    /// Retries on the cluster (the local runner runs every step once).
    pub retry: Option<Retry>,
}

impl Step {
    /// Binary (and container command) name.
    pub fn binary(&self) -> String {
        format!("yolo-{}", self.name)
    }
    pub fn output(&self, name: &str) -> Option<&Output> {
        self.outputs.iter().find(|o| o.name == name)
    }
    /// Steps this one depends on through data or explicit ordering, in first-use order.
    pub fn upstream(&self) -> Vec<&'static str> {
        let mut deps: Vec<&'static str> = Vec::new();
        for i in &self.inputs {
            if let Source::Output { step, .. } = i.source {
                if !deps.contains(&step) {
                    deps.push(step);
                }
            }
        }
        for a in &self.after {
            if !deps.contains(a) {
                deps.push(a);
            }
        }
        deps
    }
}

/// The whole pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: &'static str,
    pub description: &'static str,
    pub params: Vec<Param>,
    /// Steps in definition (topological) order.
    pub steps: Vec<Step>,
}

impl Pipeline {
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }
    /// All condition groups in definition order (depth-first), each with its parent chain.
    /// The index + 1 is the KFP group number (`condition-1`, `condition-2`, ...).
    pub fn condition_groups(&self) -> Vec<Vec<Condition>> {
        let mut groups: Vec<Vec<Condition>> = Vec::new();
        for s in &self.steps {
            for depth in 1..=s.conditions.len() {
                let chain = s.conditions[..depth].to_vec();
                if !groups.contains(&chain) {
                    groups.push(chain);
                }
            }
        }
        groups
    }

    /// Check the graph's own consistency (used by tests and before every emit): sources exist,
    /// producers come earlier, names are unique, conditions use boolean parameters.
    pub fn validate(&self) -> Result<(), String> {
        let mut seen: Vec<&str> = Vec::new();
        for s in &self.steps {
            if seen.contains(&s.name) {
                return Err(format!("duplicate step '{}'", s.name));
            }
            for i in &s.inputs {
                if s.outputs.iter().any(|o| o.name == i.name) {
                    return Err(format!("step '{}': input and output share the name '{}'", s.name, i.name));
                }
                match i.source {
                    Source::Param(p) => {
                        if self.param(p).is_none() {
                            return Err(format!("step '{}': unknown parameter '{p}'", s.name));
                        }
                    }
                    Source::RunId { prefix } => {
                        if prefix.starts_with('/') || prefix.contains("{{") {
                            return Err(format!("step '{}': run-id prefix '{prefix}' must be a relative path", s.name));
                        }
                    }
                    Source::Output { step, output } => {
                        if !seen.contains(&step) {
                            return Err(format!("step '{}': producer '{step}' is not an earlier step", s.name));
                        }
                        let prod = self.step(step).ok_or("unreachable")?;
                        match prod.output(output) {
                            Some(o) if o.kind == OutputKind::Parameter => {}
                            _ => return Err(format!("step '{}': '{step}' has no string output '{output}'", s.name)),
                        }
                        // A consumer must sit inside every condition of its producer.
                        if !s.conditions.starts_with(&prod.conditions) {
                            return Err(format!("step '{}' reads '{step}' from outside its condition", s.name));
                        }
                    }
                }
            }
            for a in &s.after {
                if !seen.contains(a) {
                    return Err(format!("step '{}': after '{a}' which is not an earlier step", s.name));
                }
            }
            for c in &s.conditions {
                match self.param(c.param) {
                    Some(p) if p.ty == ParamType::Bool => {}
                    _ => return Err(format!("condition '{}' needs a boolean parameter '{}'", c.name, c.param)),
                }
            }
            seen.push(s.name);
        }
        Ok(())
    }
}

fn v1_file(flag: &'static str, (artifact, path): (&'static str, &'static str)) -> V1File {
    V1File { flag, artifact, path }
}
fn input(name: &'static str, flag: &'static str, source: Source) -> Input {
    Input { name, flag, source }
}
fn param(name: &'static str) -> Source {
    Source::Param(name)
}
fn out_of(step: &'static str, output: &'static str) -> Source {
    Source::Output { step, output }
}
fn string_out(name: &'static str, flag: &'static str) -> Output {
    Output { name, flag, kind: OutputKind::Parameter }
}
fn artifact_out(name: &'static str, flag: &'static str, ty: ArtifactType) -> Output {
    Output { name, flag, kind: OutputKind::Artifact(ty) }
}

/// Where the train step's run folders live, relative to the data root: one folder per pipeline
/// run, `runs/detect/<run id>` (ultralytics' `{project}` for detection, with the run id as name).
pub const TRAIN_RUNS: &str = "runs/detect/";

/// Train's retries: pod loss (eviction, preemption, a node going away) is the failure train is
/// built to survive — it checkpoints every epoch, every 10 minutes and on SIGTERM, and a retry
/// resumes in the same run folder. Two retries, a minute apart and then two, cover a node
/// drain without retrying a real error (bad cfg, bad data) for long.
pub const TRAIN_RETRY: Retry = Retry { max_retries: 2, backoff: "60s", factor: 2, max_backoff: "3600s" };

/// The kubeyolo pipeline (the seed's graph).
pub fn pipeline() -> Pipeline {
    const TRAIN: Condition = Condition { name: "train-enabled", param: "bool_train" };
    const TUNE: Condition = Condition { name: "tune-enabled", param: "bool_tune" };
    let trained = |flag_last, flag_best, flag_data| {
        vec![
            input("last_pt", flag_last, out_of("train", "last_pt")),
            input("best_pt", flag_best, out_of("train", "best_pt")),
            input("data_yaml", flag_data, out_of("train", "out_data_yaml")),
        ]
    };
    Pipeline {
        name: "yolov8-pipeline",
        description: "YOLOv8 verify/distribution/plot/train/test/tune on a PVC mounted at /data",
        // Signature order of the seed's pipeline function (v1 keeps it; v2 sorts).
        params: vec![
            Param {
                name: "model_name",
                ty: ParamType::String,
                default: "yolov8n.pt",
                help: "weights (.pt) or model yaml (.yaml) under /data",
            },
            Param { name: "cfg", ty: ParamType::String, default: "cfg-custom", help: "training cfg yaml under /data (.yaml optional)" },
            Param { name: "data", ty: ParamType::String, default: "data-custom", help: "dataset yaml under /data (.yaml optional)" },
            Param {
                name: "bool_train",
                ty: ParamType::Bool,
                default: "true",
                help: "run train and test (false: only verify, distribution and plot)",
            },
            Param { name: "bool_tune", ty: ParamType::Bool, default: "false", help: "also tune after train (needs bool_train)" },
        ],
        steps: vec![
            Step {
                name: "verify",
                display: "Verify inputs",
                display_v1: "verify",
                inputs: vec![
                    input("model_name", "--model-name", param("model_name")),
                    input("cfg", "--cfg", param("cfg")),
                    input("data", "--data", param("data")),
                ],
                outputs: vec![
                    string_out("model_path", "--out-model-path"),
                    string_out("cfg_yaml", "--out-cfg-yaml"),
                    string_out("data_yaml", "--out-data-yaml"),
                ],
                after: vec![],
                conditions: vec![],
                weight: Weight::Light,
                tracks: true,
                v1_files: vec![],
                retry: None,
            },
            Step {
                name: "distribution",
                display: "Class distribution",
                display_v1: "distribution",
                inputs: vec![input("data_yaml", "--data-yaml", out_of("verify", "data_yaml"))],
                outputs: vec![
                    string_out("result_json", "--out-result-json"),
                    string_out("cls_names_json", "--out-cls-names-json"),
                ],
                after: vec![],
                conditions: vec![],
                weight: Weight::Light,
                tracks: true,
                v1_files: vec![v1_file("--out-ui-metadata", V1_UI_METADATA)],
                retry: None,
            },
            Step {
                name: "plot",
                display: "Plot distribution",
                display_v1: "plot",
                inputs: vec![
                    input("result_json", "--result-json", out_of("distribution", "result_json")),
                    input("cls_names_json", "--cls-names-json", out_of("distribution", "cls_names_json")),
                ],
                outputs: vec![
                    artifact_out("distribution_html", "--out-html", ArtifactType::Html),
                    artifact_out("distribution_md", "--out-md", ArtifactType::Markdown),
                ],
                after: vec![],
                conditions: vec![],
                weight: Weight::Light,
                tracks: true,
                v1_files: vec![v1_file("--out-ui-metadata", V1_UI_METADATA)],
                retry: None,
            },
            Step {
                name: "train",
                display: "Train",
                display_v1: "train",
                inputs: vec![
                    input("model_path", "--model-path", out_of("verify", "model_path")),
                    input("cfg_yaml", "--cfg-yaml", out_of("verify", "cfg_yaml")),
                    input("data_yaml", "--data-yaml", out_of("verify", "data_yaml")),
                    input("run_id", "--run-dir", Source::RunId { prefix: TRAIN_RUNS }),
                ],
                outputs: vec![
                    string_out("last_pt", "--out-last-pt"),
                    string_out("best_pt", "--out-best-pt"),
                    string_out("out_data_yaml", "--out-data-yaml"),
                    artifact_out("train_metrics", "--out-metrics", ArtifactType::Metrics),
                ],
                after: vec!["plot"],
                conditions: vec![TRAIN],
                weight: Weight::Heavy,
                tracks: true,
                v1_files: vec![],
                retry: Some(TRAIN_RETRY),
            },
            Step {
                name: "test",
                display: "Test",
                display_v1: "test",
                inputs: trained("--last-pt", "--best-pt", "--data-yaml"),
                outputs: vec![artifact_out("test_metrics", "--out-metrics", ArtifactType::Metrics)],
                after: vec![],
                conditions: vec![TRAIN],
                weight: Weight::Heavy,
                tracks: true,
                v1_files: vec![v1_file("--out-v1-metrics", V1_METRICS)],
                retry: None,
            },
            Step {
                name: "tune",
                display: "Tune",
                display_v1: "tune",
                inputs: trained("--last-pt", "--best-pt", "--data-yaml"),
                outputs: vec![],
                after: vec![],
                conditions: vec![TRAIN, TUNE],
                weight: Weight::Heavy,
                tracks: true,
                v1_files: vec![],
                retry: None,
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_is_consistent() {
        let p = pipeline();
        p.validate().unwrap();
        assert_eq!(p.condition_groups().len(), 2);
        assert_eq!(p.step("train").unwrap().upstream(), vec!["verify", "plot"], "the run id is no dependency");
        let train = p.step("train").unwrap();
        let run_dir = train.inputs.iter().find(|i| i.flag == "--run-dir").unwrap();
        assert_eq!(run_dir.source, Source::RunId { prefix: TRAIN_RUNS });
        assert_eq!(train.retry, Some(TRAIN_RETRY));
        assert!(p.steps.iter().filter(|s| s.name != "train").all(|s| s.retry.is_none()));
    }

    #[test]
    fn validate_catches_a_bad_run_id_prefix() {
        for bad in ["/abs/", "runs/{{x}}/"] {
            let mut p = pipeline();
            let train = p.steps.iter_mut().find(|s| s.name == "train").unwrap();
            train.inputs.iter_mut().find(|i| i.flag == "--run-dir").unwrap().source = Source::RunId { prefix: bad };
            assert!(p.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_catches_dangling_producer() {
        let mut p = pipeline();
        p.steps[1].inputs[0].source = Source::Output { step: "verify", output: "nope" };
        assert!(p.validate().is_err());
        let mut p = pipeline();
        p.steps.swap(0, 1);
        assert!(p.validate().is_err());
    }
}
