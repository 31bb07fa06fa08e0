//! KFP v1 emitter: the Argo Workflow that kfp 1.8 compiles for the seed's pipeline
//! (`reference_v1.py` → `reference_v1.yaml`), for clusters still on Kubeflow Pipelines 1.x.
//!
//! What the seed relied on, and where it lands here:
//! - `VolumeOp(action='apply')` (with `--create-pvc`) → a `resource:` template whose
//!   `<name>-name` output feeds every step's `persistentVolumeClaim.claimName`; without
//!   `--create-pvc` the existing claim is mounted by name directly;
//! - the shm volume → `volumes: [{name: dshm, emptyDir: {medium: Memory, sizeLimit}}]`;
//! - caching off → annotation `pipelines.kubeflow.org/max_cache_staleness: P0D`;
//! - `dsl.Condition(x == True)` → a DAG template `condition-<name>-N` with
//!   `when: '"{{inputs.parameters.x}}" == "True"'` (v1 booleans are Python strings);
//! - display names → annotation `pipelines.kubeflow.org/task_display_name`;
//! - the run id ([`Source::RunId`]: train's `--run-dir runs/detect/<run id>`) →
//!   `runs/detect/{{workflow.uid}}` written into the container args, as kfp 1.8 compiles
//!   `"runs/detect/" + dsl.RUN_ID_PLACEHOLDER`;
//! - `set_retry(..., policy="Always", backoff...)` → the template's `retryStrategy`;
//! - `file_outputs` → `outputs.parameters[].valueFrom.path` + `outputs.artifacts` at
//!   `/tmp/outputs/<name>`; the step binaries get `--out-<name> /tmp/outputs/<name>` so they
//!   write there (the seed's Python components wrote those files themselves).
//!
//! Parameters are named as kfp 1.8 names them: pipeline parameters by their own name, step
//! outputs `<step>-<output>`, the claim name `<pvc>-name`.

use serde_json::{json, Map, Value};

use crate::graph::{ArtifactType, Condition, OutputKind, ParamType, Pipeline, Source, Step, V1_METRICS, V1_UI_METADATA};
use crate::settings::{CompileSettings, MLFLOW_CONFIGMAP_KEYS};
use kubeyolo::{Error, Result};

/// The kfp release whose output format this emulates (labels read by the v1 backend).
pub const KFP_V1_FORMAT: &str = "1.8.22";
/// `dsl.RUN_ID_PLACEHOLDER` of kfp 1.8: Argo's workflow UID, the same for every retry of a pod
/// of the run (and for a resubmitted failed run's retried nodes), new for every new run.
pub const WORKFLOW_UID: &str = "{{workflow.uid}}";
/// Where v1 steps write their output files.
pub const OUTPUT_DIR: &str = "/tmp/outputs";

/// Compile the pipeline to an Argo Workflow YAML.
pub fn emit(p: &Pipeline, s: &CompileSettings) -> Result<String> {
    p.validate().map_err(Error::internal)?;
    s.validate()?;
    let wf = build(p, s)?;
    crate::yaml::to_yaml(&wf)
}

/// Names derived from the claim (the VolumeOp's name in the seed).
struct Pvc {
    /// Template/task name of the VolumeOp and the volume name in pods (DNS-1123 label).
    op: String,
    /// `true`: a resource template applies the claim and hands its name on as a parameter.
    create: bool,
}

impl Pvc {
    fn param(&self) -> String {
        format!("{}-name", self.op)
    }
}

/// The Workflow as a JSON value.
pub fn build(p: &Pipeline, s: &CompileSettings) -> Result<Value> {
    let mut op: String = s.pvc.name.replace('.', "-").chars().take(63).collect();
    op = op.trim_end_matches('-').to_string();
    let pvc = Pvc { op, create: s.pvc.create.is_some() };
    let groups = p.condition_groups();
    let mut reserved: Vec<String> = p.steps.iter().map(|st| st.name.to_string()).collect();
    reserved.push(p.name.to_string());
    if pvc.create && reserved.contains(&pvc.op) {
        return Err(Error::usage(format!("--pvc '{}' collides with a step name in the v1 workflow", s.pvc.name))
            .with_hint("choose another claim name"));
    }

    let mut templates: Vec<(String, Value)> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let name = group_name(&groups, g, i);
        let inputs: Vec<Value> = group_channels(p, g, &pvc).into_iter().map(|c| json!({ "name": c })).collect();
        templates.push((
            name.clone(),
            json!({ "name": name, "inputs": { "parameters": inputs }, "dag": { "tasks": dag_tasks(p, g, &groups, &pvc) } }),
        ));
    }
    for step in &p.steps {
        templates.push((step.name.to_string(), step_template(p, step, s, &pvc)));
    }
    if let Some(c) = &s.pvc.create {
        let mut manifest = format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {}\nspec:\n  accessModes:\n  - {}\n  resources:\n    requests:\n      storage: {}\n",
            s.pvc.name, c.access_mode, c.size
        );
        if !c.storage_class.is_empty() {
            manifest.push_str(&format!("  storageClassName: {}\n", c.storage_class));
        }
        let out = |suffix: &str, path: &str| json!({ "name": format!("{}-{suffix}", pvc.op), "valueFrom": { "jsonPath": path } });
        templates.push((
            pvc.op.clone(),
            json!({
                "name": pvc.op,
                "resource": { "action": "apply", "manifest": manifest },
                "outputs": { "parameters": [out("manifest", "{}"), out("name", "{.metadata.name}"), out("size", "{.status.capacity.storage}")] },
                "metadata": { "annotations": { "pipelines.kubeflow.org/task_display_name": "pvc" }, "labels": labels() },
            }),
        ));
    }
    let mut root_inputs: Vec<&str> = p.params.iter().map(|x| x.name).collect();
    root_inputs.sort();
    templates.push((
        p.name.to_string(),
        json!({
            "name": p.name,
            "inputs": { "parameters": root_inputs.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>() },
            "dag": { "tasks": dag_tasks(p, &[], &groups, &pvc) },
        }),
    ));
    templates.sort_by(|a, b| a.0.cmp(&b.0));

    let spec_inputs: Vec<Value> = p
        .params
        .iter()
        .map(|x| json!({ "default": v1_default(x.ty, x.default), "name": x.name, "optional": true, "type": v1_type(x.ty) }))
        .collect();
    let pipeline_spec = json!({ "description": p.description, "inputs": spec_inputs, "name": p.name });
    let arguments: Vec<Value> = p.params.iter().map(|x| json!({ "name": x.name, "value": v1_default(x.ty, x.default) })).collect();

    Ok(json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": format!("{}-", p.name),
            "annotations": {
                "pipelines.kubeflow.org/kfp_sdk_version": KFP_V1_FORMAT,
                "pipelines.kubeflow.org/pipeline_spec": serde_json::to_string(&pipeline_spec).unwrap_or_default(),
                "kubeyolo/version": kubeyolo::VERSION,
            },
            "labels": { "pipelines.kubeflow.org/kfp_sdk_version": KFP_V1_FORMAT },
        },
        "spec": {
            "entrypoint": p.name,
            "templates": templates.into_iter().map(|(_, t)| t).collect::<Vec<_>>(),
            "arguments": { "parameters": arguments },
            "serviceAccountName": "pipeline-runner",
        },
    }))
}

fn v1_type(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "String",
        ParamType::Bool => "Boolean",
    }
}

/// v1 passes booleans as the Python strings "True"/"False".
fn v1_default(t: ParamType, d: &str) -> String {
    match (t, d) {
        (ParamType::Bool, "true") => "True".into(),
        (ParamType::Bool, _) => "False".into(),
        _ => d.to_string(),
    }
}

fn labels() -> Value {
    json!({
        "pipelines.kubeflow.org/kfp_sdk_version": KFP_V1_FORMAT,
        "pipelines.kubeflow.org/pipeline-sdk-type": "kfp",
        "pipelines.kubeflow.org/enable_caching": "true",
    })
}

/// `condition-<name>-<N>`, N counting groups in definition order from 1.
fn group_name(groups: &[Vec<Condition>], g: &[Condition], _i: usize) -> String {
    let i = groups.iter().position(|x| x == g).unwrap_or(0);
    format!("condition-{}-{}", g[g.len() - 1].name, i + 1)
}

fn conditions_of(p: &Pipeline, step: &str) -> Vec<Condition> {
    p.step(step).map(|s| s.conditions.clone()).unwrap_or_default()
}

/// v1 parameter name of a step input: the pipeline parameter, or `<producer>-<output>`; `None`
/// for the run id, which is no parameter (Argo fills `{{workflow.uid}}` in the template).
fn channel(p: &Pipeline, src: Source) -> Option<String> {
    match src {
        Source::Param(name) => Some(name.to_string()),
        Source::Output { step, output } => {
            let o = p.step(step).and_then(|s| s.output(output)).map(|o| o.v1_name()).unwrap_or(output);
            Some(format!("{step}-{o}"))
        }
        Source::RunId { .. } => None,
    }
}

/// Inputs of a condition template: values its inner tasks take from outside it, the parameters
/// of nested conditions (evaluated inside), and the claim name. Sorted, unique.
fn group_channels(p: &Pipeline, g: &[Condition], pvc: &Pvc) -> Vec<String> {
    let mut out = Vec::new();
    for step in p.steps.iter().filter(|st| st.conditions.starts_with(g)) {
        for i in &step.inputs {
            let outside = match i.source {
                Source::Param(_) => true,
                Source::Output { step: prod, .. } => !conditions_of(p, prod).starts_with(g),
                Source::RunId { .. } => false,
            };
            if let (true, Some(chan)) = (outside, channel(p, i.source)) {
                out.push(chan);
            }
        }
        for c in &step.conditions[g.len()..] {
            out.push(c.param.to_string());
        }
    }
    if pvc.create {
        out.push(pvc.param());
    }
    out.sort();
    out.dedup();
    out
}

/// Value of parameter `chan` for a task in the DAG of group `chain`.
fn channel_value(p: &Pipeline, chain: &[Condition], src: Option<Source>, chan: &str, pvc: &Pvc) -> String {
    if let Some(Source::Output { step, .. }) = src {
        if conditions_of(p, step) == chain {
            return format!("{{{{tasks.{step}.outputs.parameters.{chan}}}}}");
        }
    }
    if chan == pvc.param() && pvc.create && chain.is_empty() {
        return format!("{{{{tasks.{}.outputs.parameters.{chan}}}}}", pvc.op);
    }
    format!("{{{{inputs.parameters.{chan}}}}}")
}

fn dag_tasks(p: &Pipeline, chain: &[Condition], groups: &[Vec<Condition>], pvc: &Pvc) -> Value {
    let mut tasks: Vec<(String, Value)> = Vec::new();
    let local_deps = |deps: &mut Vec<String>, upstream: Vec<&'static str>| {
        for d in upstream {
            if conditions_of(p, d) == chain && !deps.contains(&d.to_string()) {
                deps.push(d.to_string());
            }
        }
    };
    let finish = |mut t: Map<String, Value>, mut deps: Vec<String>, mut args: Vec<(String, String)>| {
        if pvc.create && chain.is_empty() {
            deps.push(pvc.op.clone());
        }
        deps.sort();
        deps.dedup();
        if !deps.is_empty() {
            t.insert("dependencies".into(), json!(deps));
        }
        args.sort();
        args.dedup();
        if !args.is_empty() {
            let params: Vec<Value> = args.into_iter().map(|(n, v)| json!({ "name": n, "value": v })).collect();
            t.insert("arguments".into(), json!({ "parameters": params }));
        }
        Value::Object(t)
    };

    for step in p.steps.iter().filter(|st| st.conditions == chain) {
        let mut args = Vec::new();
        for i in &step.inputs {
            let Some(chan) = channel(p, i.source) else { continue };
            let v = channel_value(p, chain, Some(i.source), &chan, pvc);
            args.push((chan, v));
        }
        if pvc.create {
            args.push((pvc.param(), channel_value(p, chain, None, &pvc.param(), pvc)));
        }
        let mut deps = Vec::new();
        local_deps(&mut deps, step.upstream());
        let mut t = Map::new();
        t.insert("name".into(), json!(step.name));
        t.insert("template".into(), json!(step.name));
        tasks.push((step.name.to_string(), finish(t, deps, args)));
    }
    for g in groups.iter().filter(|g| g.len() == chain.len() + 1 && g.starts_with(chain)) {
        let name = group_name(groups, g, 0);
        let cond = g[g.len() - 1];
        let mut args = Vec::new();
        for chan in group_channels(p, g, pvc) {
            // Find the source of this channel to know whether a sibling task produces it.
            let src = p
                .steps
                .iter()
                .flat_map(|st| st.inputs.iter())
                .map(|i| i.source)
                .find(|src| channel(p, *src).as_deref() == Some(chan.as_str()));
            let v = channel_value(p, chain, src, &chan, pvc);
            args.push((chan, v));
        }
        let mut deps = Vec::new();
        for step in p.steps.iter().filter(|st| st.conditions.starts_with(g)) {
            local_deps(&mut deps, step.upstream());
        }
        let mut t = Map::new();
        t.insert("name".into(), json!(name));
        t.insert("template".into(), json!(name));
        t.insert("when".into(), json!(format!("\"{{{{inputs.parameters.{}}}}}\" == \"True\"", cond.param)));
        tasks.push((name.clone(), finish(t, deps, args)));
    }
    if pvc.create && chain.is_empty() {
        tasks.push((pvc.op.clone(), json!({ "name": pvc.op, "template": pvc.op })));
    }
    tasks.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Array(tasks.into_iter().map(|(_, t)| t).collect())
}

fn step_template(p: &Pipeline, step: &Step, s: &CompileSettings, pvc: &Pvc) -> Value {
    let mut inputs: Vec<String> = step.inputs.iter().filter_map(|i| channel(p, i.source)).collect();
    if pvc.create {
        inputs.push(pvc.param());
    }
    inputs.sort();
    inputs.dedup();

    let mut args = Vec::new();
    for i in &step.inputs {
        args.push(i.flag.to_string());
        args.push(match (i.source, channel(p, i.source)) {
            (Source::RunId { prefix }, _) => format!("{prefix}{WORKFLOW_UID}"),
            (_, chan) => format!("{{{{inputs.parameters.{}}}}}", chan.unwrap_or_default()),
        });
    }
    let mut out_params = Vec::new();
    let mut out_artifacts = Vec::new();
    for o in &step.outputs {
        let path = format!("{OUTPUT_DIR}/{}", o.v1_name());
        args.push(o.flag.to_string());
        args.push(path.clone());
        let name = format!("{}-{}", step.name, o.v1_name());
        if o.kind == OutputKind::Parameter {
            out_params.push(json!({ "name": name, "valueFrom": { "path": path } }));
        }
        out_artifacts.push(json!({ "name": name, "path": path }));
    }
    // The v1 UI files (`/mlpipeline-ui-metadata.json`, `/mlpipeline-metrics.json`): passed to
    // the steps that can write them; steps with charts or metrics whose binary has no such flag
    // (yet) still declare them, optional, as the seed's components did.
    for f in &step.v1_files {
        args.push(f.flag.to_string());
        args.push(f.path.to_string());
        out_artifacts.push(json!({ "name": f.artifact, "path": f.path }));
    }
    let has = |t: ArtifactType| step.outputs.iter().any(|o| o.kind == OutputKind::Artifact(t));
    let declared = |arts: &Vec<Value>, name: &str| arts.iter().any(|a| a["name"] == name);
    let mut optional = Vec::new();
    if has(ArtifactType::Metrics) {
        optional.push(V1_METRICS);
    }
    if has(ArtifactType::Html) || has(ArtifactType::Markdown) || has(ArtifactType::Metrics) {
        optional.push(V1_UI_METADATA);
    }
    for (name, path) in optional {
        if !declared(&out_artifacts, name) {
            out_artifacts.push(json!({ "name": name, "optional": true, "path": path }));
        }
    }
    out_params.sort_by_key(|v| v["name"].as_str().unwrap_or("").to_string());
    out_artifacts.sort_by_key(|v| v["name"].as_str().unwrap_or("").to_string());

    let vol = pvc.op.clone();
    let mut mounts = vec![json!({ "mountPath": "/data", "name": vol })];
    let claim = if pvc.create { format!("{{{{inputs.parameters.{}}}}}", pvc.param()) } else { s.pvc.name.clone() };
    let mut volumes = vec![json!({ "name": vol, "persistentVolumeClaim": { "claimName": claim } })];
    if let Some(size) = &s.shm_size {
        mounts.push(json!({ "mountPath": "/dev/shm", "name": "dshm" }));
        volumes.insert(0, json!({ "emptyDir": { "medium": "Memory", "sizeLimit": size }, "name": "dshm" }));
    }

    let mut container = Map::new();
    container.insert("args".into(), json!(args));
    container.insert("command".into(), json!([step.binary()]));
    container.insert("image".into(), json!(s.image(step)));
    container.insert("volumeMounts".into(), json!(mounts));
    let mut env: Vec<Value> = s.plain_env(step).into_iter().map(|(k, v)| json!({ "name": k, "value": v })).collect();
    if step.tracks {
        for (secret, keys) in s.mlflow.secrets() {
            for k in keys {
                env.push(json!({ "name": k, "valueFrom": { "secretKeyRef": { "key": k, "name": secret } } }));
            }
        }
        if let Some(cm) = &s.mlflow.configmap {
            for k in MLFLOW_CONFIGMAP_KEYS {
                env.push(json!({ "name": k, "valueFrom": { "configMapKeyRef": { "key": k, "name": cm } } }));
            }
        }
    }
    if !env.is_empty() {
        container.insert("env".into(), Value::Array(env));
    }
    let mut resources = Map::new();
    if let Some(r) = s.requests(step) {
        resources.insert("requests".into(), json!({ "cpu": r.cpu, "memory": r.memory }));
    }
    let gpus = s.gpus_for(step);
    if gpus > 0 {
        resources.insert("limits".into(), json!({ "nvidia.com/gpu": gpus.to_string() }));
    }
    if !resources.is_empty() {
        container.insert("resources".into(), Value::Object(resources));
    }

    let mut outputs = Map::new();
    if !out_params.is_empty() {
        outputs.insert("parameters".into(), json!(out_params));
    }
    if !out_artifacts.is_empty() {
        outputs.insert("artifacts".into(), json!(out_artifacts));
    }
    let mut t = Map::new();
    t.insert("name".into(), json!(step.name));
    t.insert("container".into(), Value::Object(container));
    t.insert("inputs".into(), json!({ "parameters": inputs.iter().map(|n| json!({ "name": n })).collect::<Vec<_>>() }));
    if !outputs.is_empty() {
        t.insert("outputs".into(), Value::Object(outputs));
    }
    t.insert(
        "metadata".into(),
        json!({
            "annotations": {
                "pipelines.kubeflow.org/task_display_name": step.display_v1,
                "pipelines.kubeflow.org/max_cache_staleness": "P0D",
            },
            "labels": labels(),
        }),
    );
    t.insert("volumes".into(), json!(volumes));
    if let Some(r) = step.retry {
        // kfp 1.8 `set_retry(n, policy="Always", backoff_duration, backoff_factor,
        // backoff_max_duration)`. Always: a pod that is deleted or evicted ends as an Argo
        // *Error*, not a *Failure*, and that is exactly the loss a retry is for.
        t.insert(
            "retryStrategy".into(),
            json!({
                "limit": r.max_retries,
                "retryPolicy": "Always",
                "backoff": { "duration": r.backoff, "factor": r.factor, "maxDuration": r.max_backoff },
            }),
        );
    }
    Value::Object(t)
}
