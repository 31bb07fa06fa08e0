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
//!                                     └──▶ [if bool_tune] tune × N workers
//! ```
//!
//! Names are KFP names: the task key, the component input/output names (valid Python
//! identifiers, inputs and outputs never share a name) and the flags the step binaries accept.
//!
//! Train's run folder is `runs/detect/<run id>` ([`Source::RunId`], [`TRAIN_RUNS`]): the id of
//! the pipeline run, filled in by the orchestrator, so a retried train pod resumes its own
//! checkpoint and a new run starts fresh. Tune's results folder is keyed the same way
//! (`runs/detect/tune-<run id>`, [`TUNE_RUNS`]). Train and tune, the two steps that resume, are
//! the steps with retries ([`TRAIN_RETRY`]).
//!
//! The graph takes compile options ([`TuneOptions`]): tune's iteration budget and epochs become
//! literal arguments ([`Step::literal_args`]), and `--tune-workers N` makes tune a step of N
//! parallel copies ([`Step::workers`]) that share one results folder, each told its index
//! ([`Source::Worker`]): a KFP `ParallelFor` in v2, Argo `withItems` in v1, N concurrent
//! processes in the local runner.

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
    /// The index (0..N-1) of this copy of a step that runs as N parallel copies
    /// ([`Step::workers`]): the KFP v2 `ParallelFor` item, Argo's `{{item}}` of `withItems`,
    /// the local runner's worker number.
    Worker,
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
    /// Compile-time arguments (flag, value), written verbatim after the inputs' flags (tune's
    /// `--iterations 10`): values fixed by compile options, not run parameters.
    pub literal_args: Vec<(&'static str, String)>,
    /// How many copies of the step run at once (1: a plain task). With N > 1 the step sits in
    /// a loop of its own over 0..N-1 (KFP `dsl.ParallelFor(items, parallelism=N)`, Argo
    /// `withItems` + `parallelism`) and has one [`Source::Worker`] input.
    pub workers: u32,
}

/// A group of tasks in the compiled DAG: a condition (`dsl.If`), or the loop of a step that
/// runs as several workers (`dsl.ParallelFor`, innermost, holding that step alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    If(Condition),
    Loop { step: &'static str, workers: u32 },
}

impl Group {
    /// How many numbers the KFP compilers give the group: a condition one (`condition-N`), a
    /// loop two (its item `loop-item-param-N`, then itself `for-loop-N+1`), from one counter
    /// shared by all groups in definition order (checked against kfp 2.17 and 1.8.22).
    fn width(self) -> u32 {
        match self {
            Group::If(_) => 1,
            Group::Loop { .. } => 2,
        }
    }
}

/// The number the KFP compilers give the innermost group of `chain` (see [`Group::width`]):
/// `condition-<n>` / `for-loop-<n>`; a loop's item parameter is `loop-item-param-<n - 1>`.
pub fn group_number(groups: &[Vec<Group>], chain: &[Group]) -> u32 {
    let mut n = 0;
    for g in groups {
        n += g[g.len() - 1].width();
        if g.as_slice() == chain {
            return n;
        }
    }
    0
}

impl Step {
    /// The groups the step's task sits in, outermost first: its conditions, then its loop.
    pub fn scope(&self) -> Vec<Group> {
        let mut scope: Vec<Group> = self.conditions.iter().copied().map(Group::If).collect();
        if self.workers > 1 {
            scope.push(Group::Loop { step: self.name, workers: self.workers });
        }
        scope
    }
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
    /// All groups (conditions and loops) in definition order (depth-first), each as its chain
    /// from the outermost group; [`group_number`] gives their KFP numbers.
    pub fn groups(&self) -> Vec<Vec<Group>> {
        let mut groups: Vec<Vec<Group>> = Vec::new();
        for s in &self.steps {
            let scope = s.scope();
            for depth in 1..=scope.len() {
                let chain = scope[..depth].to_vec();
                if !groups.contains(&chain) {
                    groups.push(chain);
                }
            }
        }
        groups
    }

    /// The groups of the task of `step` (empty for an unknown name, e.g. a platform task).
    pub fn scope_of(&self, step: &str) -> Vec<Group> {
        self.step(step).map(Step::scope).unwrap_or_default()
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
                    Source::Worker => {}
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
                        // Outputs of a loop are lists in KFP (one value per worker): not passed on.
                        if prod.workers > 1 {
                            return Err(format!(
                                "step '{}' reads '{step}', which runs as {} workers",
                                s.name, prod.workers
                            ));
                        }
                    }
                }
            }
            for a in &s.after {
                if !seen.contains(a) {
                    return Err(format!("step '{}': after '{a}' which is not an earlier step", s.name));
                }
            }
            let worker_inputs = s.inputs.iter().filter(|i| i.source == Source::Worker).count();
            if s.workers == 0 || (s.workers > 1) != (worker_inputs == 1) || worker_inputs > 1 {
                return Err(format!(
                    "step '{}': {} workers need exactly one worker input when > 1 (has {worker_inputs})",
                    s.name, s.workers
                ));
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

/// Where the tune step's results folders live, relative to the data root:
/// `runs/detect/tune-<run id>`, one per pipeline run and shared by all its workers, so a
/// retried tune pod (or worker) continues the run's own results file.
pub const TUNE_RUNS: &str = "runs/detect/tune-";

/// Train's retries: pod loss (eviction, preemption, a node going away) is the failure train is
/// built to survive — it checkpoints every epoch, every 10 minutes and on SIGTERM, and a retry
/// resumes in the same run folder. Two retries, a minute apart and then two, cover a node
/// drain without retrying a real error (bad cfg, bad data) for long. Tune resumes from its
/// results file and gets the same policy.
pub const TRAIN_RETRY: Retry = Retry { max_retries: 2, backoff: "60s", factor: 2, max_backoff: "3600s" };

/// Tune's iterations by default: each iteration is a whole training of `epochs` epochs, so
/// ultralytics' 300 are days of GPU time; 10 give the evolution a first look at the space
/// within one pipeline run (about ten trainings' time), and `--tune-iterations` raises it (a
/// later run with more iterations does not continue this run's results: it has its own run id).
pub const DEFAULT_TUNE_ITERATIONS: u32 = 10;

/// Compile options that shape the tune step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TuneOptions {
    /// Total iterations over all workers (`yolo-tune --iterations`).
    pub iterations: u32,
    /// Epochs per iteration (`--set epochs=N`); `None`: the cfg's `epochs`.
    pub epochs: Option<u32>,
    /// Tune pods (workers) at once, sharing one results folder.
    pub workers: u32,
}

impl Default for TuneOptions {
    fn default() -> Self {
        TuneOptions { iterations: DEFAULT_TUNE_ITERATIONS, epochs: None, workers: 1 }
    }
}

impl TuneOptions {
    /// Usage errors for values no tuner run can use.
    pub fn validate(&self) -> kubeyolo::Result<()> {
        use kubeyolo::Error;
        if self.iterations == 0 {
            return Err(Error::usage("--tune-iterations must be at least 1"));
        }
        if self.epochs == Some(0) {
            return Err(
                Error::usage("--tune-epochs must be at least 1").with_hint("leave it out to train the cfg's epochs")
            );
        }
        if self.workers == 0 {
            return Err(Error::usage("--tune-workers must be at least 1"));
        }
        if self.workers > self.iterations {
            return Err(Error::usage(format!(
                "--tune-workers {} exceeds --tune-iterations {}: the extra workers would find no iteration to claim",
                self.workers, self.iterations
            ))
            .with_hint("use at most as many workers as iterations"));
        }
        Ok(())
    }

    /// Tune's literal arguments: the iteration budget and the epochs override.
    fn literal_args(&self) -> Vec<(&'static str, String)> {
        let mut args = vec![("--iterations", self.iterations.to_string())];
        if let Some(e) = self.epochs {
            args.push(("--set", format!("epochs={e}")));
        }
        args
    }
}

/// The kubeyolo pipeline (the seed's graph) with the default [`TuneOptions`].
pub fn pipeline() -> Pipeline {
    pipeline_with(&TuneOptions::default())
}

/// The kubeyolo pipeline with the given tune options.
pub fn pipeline_with(tune: &TuneOptions) -> Pipeline {
    const TRAIN: Condition = Condition { name: "train-enabled", param: "bool_train" };
    const TUNE: Condition = Condition { name: "tune-enabled", param: "bool_tune" };
    let mut tune_inputs = vec![
        // The tuner starts every iteration from train's best weights, as the seed's pipeline did.
        input("model_path", "--model-path", out_of("train", "best_pt")),
        input("cfg_yaml", "--cfg-yaml", out_of("verify", "cfg_yaml")),
        input("data_yaml", "--data-yaml", out_of("train", "out_data_yaml")),
        input("run_id", "--tune-dir", Source::RunId { prefix: TUNE_RUNS }),
        input("tune_space", "--space", param("tune_space")),
    ];
    if tune.workers > 1 {
        tune_inputs.push(input("worker", "--worker", Source::Worker));
    }
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
            Param {
                name: "cfg",
                ty: ParamType::String,
                default: "cfg-custom",
                help: "training cfg yaml under /data (.yaml optional)",
            },
            Param {
                name: "data",
                ty: ParamType::String,
                default: "data-custom",
                help: "dataset yaml under /data (.yaml optional)",
            },
            Param {
                name: "bool_train",
                ty: ParamType::Bool,
                default: "true",
                help: "run train and test (false: only verify, distribution and plot)",
            },
            Param {
                name: "bool_tune",
                ty: ParamType::Bool,
                default: "false",
                help: "also tune after train (needs bool_train)",
            },
            Param {
                name: "tune_space",
                ty: ParamType::String,
                default: "",
                help: "tune's search space yaml under /data (`lr0: [1.0e-5, 1.0e-2]` lines); empty: ultralytics 8.4's",
            },
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
                    // checked before training, though only tune reads it
                    input("tune_space", "--tune-space", param("tune_space")),
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
                literal_args: vec![],
                workers: 1,
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
                literal_args: vec![],
                workers: 1,
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
                literal_args: vec![],
                workers: 1,
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
                    string_out("mlflow_run_id", "--out-mlflow-run-id"),
                    artifact_out("train_metrics", "--out-metrics", ArtifactType::Metrics),
                ],
                after: vec!["plot"],
                conditions: vec![TRAIN],
                weight: Weight::Heavy,
                tracks: true,
                v1_files: vec![],
                retry: Some(TRAIN_RETRY),
                literal_args: vec![],
                workers: 1,
            },
            Step {
                name: "test",
                display: "Test",
                display_v1: "test",
                inputs: vec![
                    input("last_pt", "--last-pt", out_of("train", "last_pt")),
                    input("best_pt", "--best-pt", out_of("train", "best_pt")),
                    input("data_yaml", "--data-yaml", out_of("train", "out_data_yaml")),
                ],
                outputs: vec![artifact_out("test_metrics", "--out-metrics", ArtifactType::Metrics)],
                after: vec![],
                conditions: vec![TRAIN],
                weight: Weight::Heavy,
                tracks: true,
                v1_files: vec![v1_file("--out-v1-metrics", V1_METRICS)],
                retry: None,
                literal_args: vec![],
                workers: 1,
            },
            Step {
                name: "tune",
                display: "Tune",
                display_v1: "tune",
                inputs: tune_inputs,
                outputs: vec![
                    string_out("best_hyp", "--out-best-hyp"),
                    string_out("best_pt", "--out-best-pt"),
                    artifact_out("tune_metrics", "--out-metrics", ArtifactType::Metrics),
                ],
                after: vec![],
                conditions: vec![TRAIN, TUNE],
                weight: Weight::Heavy,
                tracks: true,
                v1_files: vec![],
                retry: Some(TRAIN_RETRY),
                literal_args: tune.literal_args(),
                workers: tune.workers,
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
        assert_eq!(p.groups().len(), 2, "two conditions, no loop with one tune worker");
        assert_eq!(p.step("train").unwrap().upstream(), vec!["verify", "plot"], "the run id is no dependency");
        let train = p.step("train").unwrap();
        let run_dir = train.inputs.iter().find(|i| i.flag == "--run-dir").unwrap();
        assert_eq!(run_dir.source, Source::RunId { prefix: TRAIN_RUNS });
        assert_eq!(train.retry, Some(TRAIN_RETRY));
        let retried: Vec<&str> = p.steps.iter().filter(|s| s.retry.is_some()).map(|s| s.name).collect();
        assert_eq!(retried, ["train", "tune"], "the two steps that resume");
    }

    #[test]
    fn tune_reads_train_best_and_verify_cfg_with_its_options() {
        let opts = TuneOptions { iterations: 7, epochs: Some(3), workers: 1 };
        let p = pipeline_with(&opts);
        let tune = p.step("tune").unwrap();
        let src = |flag: &str| tune.inputs.iter().find(|i| i.flag == flag).map(|i| i.source);
        assert_eq!(src("--model-path"), Some(Source::Output { step: "train", output: "best_pt" }));
        assert_eq!(src("--cfg-yaml"), Some(Source::Output { step: "verify", output: "cfg_yaml" }));
        assert_eq!(src("--data-yaml"), Some(Source::Output { step: "train", output: "out_data_yaml" }));
        assert_eq!(src("--tune-dir"), Some(Source::RunId { prefix: TUNE_RUNS }));
        assert_eq!(src("--space"), Some(Source::Param("tune_space")), "the search space is a run parameter");
        assert_eq!(src("--worker"), None, "one worker: no worker index");
        assert_eq!(tune.literal_args, [("--iterations", "7".to_string()), ("--set", "epochs=3".to_string())]);
        let outs: Vec<&str> = tune.outputs.iter().map(|o| o.name).collect();
        assert_eq!(outs, ["best_hyp", "best_pt", "tune_metrics"]);
        assert_eq!(pipeline().step("tune").unwrap().literal_args, [("--iterations", "10".to_string())]);
    }

    #[test]
    fn workers_put_tune_in_a_loop_numbered_as_kfp_does() {
        let p = pipeline_with(&TuneOptions { workers: 3, ..TuneOptions::default() });
        p.validate().unwrap();
        let tune = p.step("tune").unwrap();
        assert_eq!(tune.workers, 3);
        assert!(tune.inputs.iter().any(|i| i.source == Source::Worker && i.flag == "--worker"));
        let groups = p.groups();
        assert_eq!(groups.len(), 3);
        let numbers: Vec<u32> = groups.iter().map(|g| group_number(&groups, g)).collect();
        // condition-1, condition-2, loop-item-param-3 + for-loop-4 (kfp 2.17 and 1.8.22).
        assert_eq!(numbers, [1, 2, 4]);
        assert_eq!(groups[2].last(), Some(&Group::Loop { step: "tune", workers: 3 }));
        assert!(p.steps.iter().filter(|s| s.name != "tune").all(|s| s.scope().len() == s.conditions.len()));
    }

    #[test]
    fn tune_options_are_checked() {
        let ok = TuneOptions::default();
        assert!(ok.validate().is_ok());
        for bad in [
            TuneOptions { iterations: 0, ..ok },
            TuneOptions { workers: 0, ..ok },
            TuneOptions { epochs: Some(0), ..ok },
            TuneOptions { iterations: 2, workers: 3, ..ok },
        ] {
            assert_eq!(bad.validate().unwrap_err().kind, kubeyolo::ErrorKind::Usage, "{bad:?}");
        }
    }

    #[test]
    fn validate_catches_a_worker_input_without_workers() {
        let mut p = pipeline_with(&TuneOptions { workers: 2, ..TuneOptions::default() });
        p.steps.iter_mut().find(|s| s.name == "tune").unwrap().workers = 1;
        assert!(p.validate().is_err());
        let mut p = pipeline();
        p.steps.iter_mut().find(|s| s.name == "tune").unwrap().workers = 2;
        assert!(p.validate().is_err(), "two workers without a worker input");
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
