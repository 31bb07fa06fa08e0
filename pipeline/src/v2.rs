//! KFP v2 emitter: the pipeline IR (`PipelineSpec`) plus the Kubernetes `PlatformSpec`, as two
//! YAML documents — the file `kfp.compiler.Compiler().compile()` writes for the equivalent
//! Python pipeline (`reference_v2.py`), so it can be uploaded in the Kubeflow UI unchanged.
//!
//! The layout rules below are the KFP compiler's (checked against real compilations, see
//! `pipeline/tests/fixtures/`):
//! - each leaf step is a container component `comp-<step>` run by executor `exec-<step>`;
//! - each condition group is a DAG component `comp-condition-N` (N in definition order) whose
//!   task in the parent DAG carries the `triggerPolicy` and the dependencies of its inner tasks
//!   on outer tasks (hoisted, e.g. `train.after(plot)` shows up on `condition-1`);
//! - every value used inside a group (inputs from outside it, and the condition parameters of
//!   every task within) enters it as a `pipelinechannel--…` input;
//! - caching off is `cachingOptions: {}`; the display name is `taskInfo.name`;
//! - the run id ([`Source::RunId`], train's `--run-dir runs/detect/<run id>`) is a component
//!   input bound to the runtime constant `{{$.pipeline_job_uuid}}` (what
//!   `train(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)` compiles to), the argument is
//!   `runs/detect/{{$.inputs.parameters['run_id']}}` (an f-string in the SDK's container
//!   component): the driver resolves only whole-constant placeholders, the launcher replaces
//!   input placeholders inside arguments;
//! - retries (`Step::retry`) are the task's `retryPolicy` (`set_retry`); backends older than
//!   the v2 retry support ignore it (kubeflow/pipelines#9950), the run still works;
//! - a step with N workers (`Step::workers`, tune) sits in a DAG component `comp-for-loop-K`
//!   whose task carries `parameterIterator` (`items.raw: '[0, 1, ...]'`, the item entering as
//!   `pipelinechannel--loop-item-param-(K-1)`, an integer) and `iteratorPolicy.parallelismLimit`
//!   — `dsl.ParallelFor(items=[0..N-1], parallelism=N)`; the step's `worker` input (an
//!   integer) reads the item; literal arguments (`Step::literal_args`) are plain strings in
//!   `args`, as in an SDK container component;
//! - volumes, shared memory, secrets, the security context (`--run-as-root`) and the GPU
//!   steps' node selector and tolerations live in the platform spec, keyed by executor label.

use serde_json::{json, Map, Value};

use crate::graph::{group_number, Group, OutputKind, ParamType, Pipeline, Source, Step};
use crate::settings::{self, CompileSettings, MLFLOW_CONFIGMAP_KEYS};
use kubeyolo::Result;

/// `dsl.PIPELINE_JOB_ID_PLACEHOLDER`: the run's UUID. The KFP driver substitutes it only when it
/// is a task input's whole runtime constant (an exact match, not inside a longer string), so
/// [`Source::RunId`] passes it as its own input and puts the prefix in the container argument.
pub const PIPELINE_JOB_UUID: &str = "{{$.pipeline_job_uuid}}";

/// Task name of the CreatePVC task (as `kfp.kubernetes.CreatePVC` names it).
const CREATEPVC: &str = "createpvc";
/// The CreatePVC component definition exactly as kfp-kubernetes 2.17 declares it.
const CREATEPVC_COMPONENT: &str = include_str!("createpvc_component.json");

/// Compile the pipeline to the two-document v2 YAML.
pub fn emit(p: &Pipeline, s: &CompileSettings) -> Result<String> {
    p.validate().map_err(kubeyolo::Error::internal)?;
    s.validate()?;
    let (spec, platform) = build(p, s)?;
    let mut out = header(p);
    out.push_str(&crate::yaml::to_yaml(&spec)?);
    out.push_str("---\n");
    out.push_str(&crate::yaml::to_yaml(&platform)?);
    Ok(out)
}

/// The two documents as JSON values (PipelineSpec, PlatformSpec).
pub fn build(p: &Pipeline, s: &CompileSettings) -> Result<(Value, Value)> {
    let groups = p.groups();
    let create = s.pvc.create.is_some();
    let mut components = Map::new();
    let mut executors = Map::new();
    let mut platform_execs = Map::new();

    for step in &p.steps {
        components.insert(format!("comp-{}", step.name), leaf_component(p, step));
        executors.insert(format!("exec-{}", step.name), json!({ "container": container(step, s) }));
        platform_execs.insert(format!("exec-{}", step.name), platform_config(step, s));
    }
    for chain in &groups {
        let mut params = Map::new();
        for ch in group_channels(p, chain, create) {
            params.insert(ch.name(), json!({ "parameterType": ch.ty(p) }));
        }
        let n = group_number(&groups, chain);
        if let Some(Group::Loop { .. }) = chain.last() {
            params.insert(Channel::LoopItem(n - 1).name(), json!({ "parameterType": "NUMBER_INTEGER" }));
        }
        components.insert(
            group_component(chain, n),
            json!({ "dag": { "tasks": dag_tasks(p, s, chain, &groups) }, "inputDefinitions": { "parameters": params } }),
        );
    }
    if create {
        let comp: Value = serde_json::from_str(CREATEPVC_COMPONENT)
            .map_err(|e| kubeyolo::Error::internal(format!("embedded CreatePVC component: {e}")))?;
        components.insert(format!("comp-{CREATEPVC}"), comp);
        executors.insert(format!("exec-{CREATEPVC}"), json!({ "container": { "image": "argostub/createpvc" } }));
    }

    let mut root_params = Map::new();
    for prm in &p.params {
        let default = match prm.ty {
            ParamType::Bool => Value::Bool(prm.default == "true"),
            ParamType::String => Value::String(prm.default.to_string()),
        };
        root_params.insert(
            prm.name.to_string(),
            json!({ "defaultValue": default, "isOptional": true, "parameterType": param_type(prm.ty) }),
        );
    }

    let spec = json!({
        "components": components,
        "deploymentSpec": { "executors": executors },
        "pipelineInfo": { "description": p.description, "name": p.name },
        "root": {
            "dag": { "tasks": dag_tasks(p, s, &[], &groups) },
            "inputDefinitions": { "parameters": root_params },
        },
        "schemaVersion": "2.1.0",
        "sdkVersion": format!("kubeyolo-{}", kubeyolo::VERSION),
    });
    let platform = json!({ "platforms": { "kubernetes": { "deploymentSpec": { "executors": platform_execs } } } });
    Ok((spec, platform))
}

/// The comment block the KFP compiler puts on top (name, description, inputs with defaults).
fn header(p: &Pipeline) -> String {
    let mut h = format!("# PIPELINE DEFINITION\n# Name: {}\n# Description: {}\n# Inputs:\n", p.name, p.description);
    let mut params: Vec<_> = p.params.iter().collect();
    params.sort_by_key(|x| x.name);
    for prm in params {
        let (ty, default) = match prm.ty {
            ParamType::Bool => ("bool", if prm.default == "true" { "True".to_string() } else { "False".to_string() }),
            ParamType::String => ("str", format!("'{}'", prm.default)),
        };
        h.push_str(&format!("#    {}: {ty} [Default: {default}]\n", prm.name));
    }
    h
}

fn param_type(t: ParamType) -> &'static str {
    match t {
        ParamType::String => "STRING",
        ParamType::Bool => "BOOLEAN",
    }
}

fn leaf_component(p: &Pipeline, step: &Step) -> Value {
    let mut inputs = Map::new();
    for i in &step.inputs {
        let ty = match i.source {
            Source::Param(name) => p.param(name).map(|x| x.ty).unwrap_or(ParamType::String),
            Source::Output { .. } | Source::RunId { .. } => ParamType::String,
            Source::Worker => {
                inputs.insert(i.name.to_string(), json!({ "parameterType": "NUMBER_INTEGER" }));
                continue;
            }
        };
        inputs.insert(i.name.to_string(), json!({ "parameterType": param_type(ty) }));
    }
    let mut out_params = Map::new();
    let mut out_artifacts = Map::new();
    for o in &step.outputs {
        match o.kind {
            OutputKind::Parameter => {
                out_params.insert(o.name.to_string(), json!({ "parameterType": "STRING" }));
            }
            OutputKind::Artifact(t) => {
                out_artifacts.insert(
                    o.name.to_string(),
                    json!({ "artifactType": { "schemaTitle": t.schema_title(), "schemaVersion": "0.0.1" } }),
                );
            }
        }
    }
    let mut comp = Map::new();
    comp.insert("executorLabel".into(), json!(format!("exec-{}", step.name)));
    if !inputs.is_empty() {
        comp.insert("inputDefinitions".into(), json!({ "parameters": inputs }));
    }
    let mut outs = Map::new();
    if !out_params.is_empty() {
        outs.insert("parameters".into(), Value::Object(out_params));
    }
    if !out_artifacts.is_empty() {
        outs.insert("artifacts".into(), Value::Object(out_artifacts));
    }
    if !outs.is_empty() {
        comp.insert("outputDefinitions".into(), Value::Object(outs));
    }
    Value::Object(comp)
}

/// `image`, `command` (the step binary, so the image's ENTRYPOINT does not matter), `args` with
/// KFP placeholders, plain `env` and `resources`.
fn container(step: &Step, s: &CompileSettings) -> Value {
    let mut args = Vec::new();
    for i in &step.inputs {
        args.push(json!(i.flag));
        let value = format!("{{{{$.inputs.parameters['{}']}}}}", i.name);
        args.push(json!(match i.source {
            // The launcher replaces input placeholders anywhere inside an argument.
            Source::RunId { prefix } => format!("{prefix}{value}"),
            _ => value,
        }));
    }
    for (flag, value) in &step.literal_args {
        args.push(json!(flag));
        args.push(json!(value));
    }
    for o in &step.outputs {
        args.push(json!(o.flag));
        args.push(json!(match o.kind {
            OutputKind::Parameter => format!("{{{{$.outputs.parameters['{}'].output_file}}}}", o.name),
            OutputKind::Artifact(_) => format!("{{{{$.outputs.artifacts['{}'].path}}}}", o.name),
        }));
    }
    let mut c = Map::new();
    c.insert("image".into(), json!(s.image(step)));
    c.insert("command".into(), json!([step.binary()]));
    c.insert("args".into(), Value::Array(args));
    let env = s.plain_env(step);
    if !env.is_empty() {
        c.insert("env".into(), env.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect());
    }
    let mut res = Map::new();
    if let Some(r) = s.requests(step) {
        // New string fields plus the legacy float ones, as the SDK writes both.
        res.insert("resourceCpuRequest".into(), json!(r.cpu));
        res.insert("cpuRequest".into(), json!(settings::cpu_to_float(&r.cpu)));
        res.insert("resourceMemoryRequest".into(), json!(r.memory));
        res.insert("memoryRequest".into(), json!(settings::memory_to_float(&r.memory)));
    }
    let gpus = s.gpus_for(step);
    if gpus > 0 {
        res.insert(
            "accelerator".into(),
            json!({
                "count": gpus.to_string(),
                "resourceCount": gpus.to_string(),
                "resourceType": "nvidia.com/gpu",
                "type": "nvidia.com/gpu",
            }),
        );
    }
    if !res.is_empty() {
        c.insert("resources".into(), Value::Object(res));
    }
    Value::Object(c)
}

/// Kubernetes executor config: PVC at /data, emptyDir at /dev/shm, MLflow Secret/ConfigMap env.
fn platform_config(step: &Step, s: &CompileSettings) -> Value {
    let mut cfg = Map::new();
    if let Some(size) = &s.shm_size {
        cfg.insert(
            "emptyDirMounts".into(),
            json!([{ "medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": size, "volumeName": "shm" }]),
        );
    }
    let mount = if s.pvc.create.is_none() {
        json!({
            "constant": s.pvc.name,
            "mountPath": "/data",
            "pvcNameParameter": { "runtimeValue": { "constant": s.pvc.name } },
        })
    } else if step.scope().is_empty() {
        let out = json!({ "outputParameterKey": "name", "producerTask": CREATEPVC });
        json!({ "mountPath": "/data", "pvcNameParameter": { "taskOutputParameter": out }, "taskOutputParameter": out })
    } else {
        let ch = Channel::Output(CREATEPVC, "name").name();
        json!({ "componentInputParameter": ch, "mountPath": "/data", "pvcNameParameter": { "componentInputParameter": ch } })
    };
    cfg.insert("pvcMount".into(), json!([mount]));
    // kfp-kubernetes set_security_context / add_node_selector / add_toleration; the int64
    // runAsUser is a string in protojson.
    if s.run_as_root {
        cfg.insert("securityContext".into(), json!({ "runAsUser": "0" }));
    }
    let (selector, tolerations) = crate::k8s::scheduling(s, step);
    if let Some(labels) = selector {
        cfg.insert("nodeSelector".into(), json!({ "labels": labels }));
    }
    if let Some(t) = tolerations {
        cfg.insert("tolerations".into(), t);
    }
    if step.tracks {
        let secrets: Vec<Value> = s
            .mlflow
            .secrets()
            .into_iter()
            .map(|(secret, keys)| {
                let keys: Vec<Value> = keys.iter().map(|k| json!({ "envVar": k, "secretKey": k })).collect();
                json!({
                    "keyToEnv": keys,
                    "optional": false,
                    "secretName": secret,
                    "secretNameParameter": { "runtimeValue": { "constant": secret } },
                })
            })
            .collect();
        if !secrets.is_empty() {
            cfg.insert("secretAsEnv".into(), Value::Array(secrets));
        }
        if let Some(cm) = &s.mlflow.configmap {
            let keys: Vec<Value> =
                MLFLOW_CONFIGMAP_KEYS.iter().map(|k| json!({ "configMapKey": k, "envVar": k })).collect();
            cfg.insert(
                "configMapAsEnv".into(),
                json!([{
                    "configMapName": cm,
                    "configMapNameParameter": { "runtimeValue": { "constant": cm } },
                    "keyToEnv": keys,
                    "optional": false,
                }]),
            );
        }
    }
    Value::Object(cfg)
}

/// A value that enters a condition group from outside.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Channel {
    Param(&'static str),
    Output(&'static str, &'static str),
    /// The item of loop group number `n + 1` (`loop-item-param-<n>`).
    LoopItem(u32),
}

impl Channel {
    fn name(&self) -> String {
        match self {
            Channel::Param(p) => format!("pipelinechannel--{p}"),
            Channel::Output(step, out) => format!("pipelinechannel--{step}-{out}"),
            Channel::LoopItem(n) => format!("pipelinechannel--loop-item-param-{n}"),
        }
    }
    fn ty(&self, p: &Pipeline) -> &'static str {
        match self {
            Channel::Param(name) => param_type(p.param(name).map(|x| x.ty).unwrap_or(ParamType::String)),
            Channel::Output(..) => "STRING",
            Channel::LoopItem(_) => "NUMBER_INTEGER",
        }
    }
}

/// `comp-condition-<n>` / `comp-for-loop-<n>`; the task that runs it drops the `comp-`.
fn group_component(chain: &[Group], n: u32) -> String {
    match chain.last() {
        Some(Group::Loop { .. }) => format!("comp-for-loop-{n}"),
        _ => format!("comp-condition-{n}"),
    }
}

/// Channels group `chain` needs: inputs of inner tasks that come from outside the group, and
/// the condition parameters of every inner task (sorted and unique).
fn group_channels(p: &Pipeline, chain: &[Group], create: bool) -> Vec<Channel> {
    let mut chans = Vec::new();
    for step in p.steps.iter().filter(|st| st.scope().starts_with(chain)) {
        for i in &step.inputs {
            match i.source {
                Source::Param(name) => chans.push(Channel::Param(name)),
                // Resolved by the driver of the task itself: no value enters the group. The
                // loop item enters the loop through its iterator, not as a task input.
                Source::RunId { .. } | Source::Worker => {}
                Source::Output { step: prod, output } => {
                    if !p.scope_of(prod).starts_with(chain) {
                        chans.push(Channel::Output(prod, output));
                    }
                }
            }
        }
        for c in &step.conditions {
            chans.push(Channel::Param(c.param));
        }
        if create {
            chans.push(Channel::Output(CREATEPVC, "name"));
        }
    }
    chans.sort_by_key(|c| c.name());
    chans.dedup();
    chans
}

/// How a task in the DAG of group `chain` reads `chan`: from a sibling task's output, from a
/// pipeline parameter (root) or from the enclosing group's inputs.
fn channel_ref(p: &Pipeline, chain: &[Group], chan: &Channel) -> Value {
    match chan {
        Channel::Param(name) if chain.is_empty() => json!({ "componentInputParameter": name }),
        Channel::Output(prod, out) if p.scope_of(prod) == chain => {
            json!({ "taskOutputParameter": { "outputParameterKey": out, "producerTask": prod } })
        }
        _ => json!({ "componentInputParameter": chan.name() }),
    }
}

/// Tasks of the DAG of group `chain` (root = empty chain): its own steps, its direct sub-groups.
fn dag_tasks(p: &Pipeline, s: &CompileSettings, chain: &[Group], groups: &[Vec<Group>]) -> Value {
    let create = s.pvc.create.is_some();
    let mut tasks = Map::new();
    // A dependency on `dep` from inside this DAG: kept if `dep` is a task of this DAG.
    let local_deps = |deps: &mut Vec<String>, upstream: Vec<&'static str>| {
        for d in upstream {
            if p.scope_of(d) == chain && !deps.contains(&d.to_string()) {
                deps.push(d.to_string());
            }
        }
    };

    for step in p.steps.iter().filter(|st| st.scope() == chain) {
        let mut params = Map::new();
        for i in &step.inputs {
            let chan = match i.source {
                Source::Param(name) => Channel::Param(name),
                Source::Output { step, output } => Channel::Output(step, output),
                Source::RunId { .. } => {
                    params.insert(i.name.to_string(), json!({ "runtimeValue": { "constant": PIPELINE_JOB_UUID } }));
                    continue;
                }
                // The step's own loop is the innermost group: this DAG's item input.
                Source::Worker => Channel::LoopItem(group_number(groups, chain) - 1),
            };
            params.insert(i.name.to_string(), channel_ref(p, chain, &chan));
        }
        let mut deps = Vec::new();
        local_deps(&mut deps, step.upstream());
        if create && chain.is_empty() {
            deps.push(CREATEPVC.to_string());
        }
        deps.sort();
        let mut t = Map::new();
        t.insert("cachingOptions".into(), json!({}));
        t.insert("componentRef".into(), json!({ "name": format!("comp-{}", step.name) }));
        if !deps.is_empty() {
            t.insert("dependentTasks".into(), json!(deps));
        }
        if !params.is_empty() {
            t.insert("inputs".into(), json!({ "parameters": params }));
        }
        if let Some(r) = step.retry {
            // `set_retry(num_retries, backoff_duration, backoff_factor, backoff_max_duration)`.
            t.insert(
                "retryPolicy".into(),
                json!({
                    "backoffDuration": r.backoff,
                    "backoffFactor": f64::from(r.factor),
                    "backoffMaxDuration": r.max_backoff,
                    "maxRetryCount": r.max_retries,
                }),
            );
        }
        t.insert("taskInfo".into(), json!({ "name": step.display }));
        tasks.insert(step.name.to_string(), Value::Object(t));
    }

    for g in groups.iter().filter(|g| g.len() == chain.len() + 1 && g.starts_with(chain)) {
        let n = group_number(groups, g);
        let mut params = Map::new();
        for chan in group_channels(p, g, create) {
            params.insert(chan.name(), channel_ref(p, chain, &chan));
        }
        let mut deps = Vec::new();
        for step in p.steps.iter().filter(|st| st.scope().starts_with(g)) {
            local_deps(&mut deps, step.upstream());
        }
        if create && chain.is_empty() {
            deps.push(CREATEPVC.to_string());
        }
        deps.sort();
        deps.dedup();
        let component = group_component(g, n);
        let mut t = Map::new();
        t.insert("componentRef".into(), json!({ "name": component }));
        if !deps.is_empty() {
            t.insert("dependentTasks".into(), json!(deps));
        }
        t.insert("inputs".into(), json!({ "parameters": params }));
        let task = component.trim_start_matches("comp-").to_string();
        match g[g.len() - 1] {
            Group::If(cond) => {
                t.insert("taskInfo".into(), json!({ "name": cond.name }));
                t.insert(
                    "triggerPolicy".into(),
                    json!({ "condition": format!("inputs.parameter_values['{}'] == true", Channel::Param(cond.param).name()) }),
                );
            }
            Group::Loop { workers, .. } => {
                // `dsl.ParallelFor(items=[0, ..., N-1], parallelism=N)`: raw is the items' JSON.
                let items: Vec<String> = (0..workers).map(|w| w.to_string()).collect();
                t.insert("iteratorPolicy".into(), json!({ "parallelismLimit": workers }));
                t.insert(
                    "parameterIterator".into(),
                    json!({ "itemInput": Channel::LoopItem(n - 1).name(), "items": { "raw": format!("[{}]", items.join(", ")) } }),
                );
                t.insert("taskInfo".into(), json!({ "name": task }));
            }
        }
        tasks.insert(task, Value::Object(t));
    }

    if create && chain.is_empty() {
        let c = s.pvc.create.as_ref().expect("create checked above");
        let mut inputs = Map::new();
        inputs.insert("access_modes".into(), json!({ "runtimeValue": { "constant": [c.access_mode] } }));
        inputs.insert("pvc_name".into(), json!({ "runtimeValue": { "constant": s.pvc.name } }));
        inputs.insert("size".into(), json!({ "runtimeValue": { "constant": c.size } }));
        if !c.storage_class.is_empty() {
            inputs.insert("storage_class_name".into(), json!({ "runtimeValue": { "constant": c.storage_class } }));
        }
        tasks.insert(
            CREATEPVC.into(),
            json!({
                "cachingOptions": {},
                "componentRef": { "name": format!("comp-{CREATEPVC}") },
                "inputs": { "parameters": inputs },
                "taskInfo": { "name": "create pvc" },
            }),
        );
    }
    Value::Object(tasks)
}
