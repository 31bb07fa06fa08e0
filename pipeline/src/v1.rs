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
//! - a step with N workers (`Step::workers`, tune) → `dsl.ParallelFor([0..N-1], parallelism=N)`:
//!   a DAG template `for-loop-K` with `parallelism: N`, called by a task with
//!   `withItems: [0, ..., N-1]` that passes `{{item}}` as `loop-item-param-(K-1)`, which the
//!   step reads as its `--worker`; literal arguments (`Step::literal_args`) go into the args;
//! - `file_outputs` → `outputs.parameters[].valueFrom.path` + `outputs.artifacts` at
//!   `/tmp/outputs/<name>`; the step binaries get `--out-<name> /tmp/outputs/<name>` so they
//!   write there (the seed's Python components wrote those files themselves).
//!
//! Parameters are named as kfp 1.8 names them: pipeline parameters by their own name, step
//! outputs `<step>-<output>`, the claim name `<pvc>-name`.

use serde_json::{json, Map, Value};

use crate::graph::{
    group_number, ArtifactType, Group, OutputKind, ParamType, Pipeline, Source, Step, V1_METRICS, V1_UI_METADATA,
};
use crate::k8s;
use crate::settings::CompileSettings;
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
    let groups = p.groups();
    let mut reserved: Vec<String> = p.steps.iter().map(|st| st.name.to_string()).collect();
    reserved.push(p.name.to_string());
    if pvc.create && reserved.contains(&pvc.op) {
        return Err(Error::usage(format!("--pvc '{}' collides with a step name in the v1 workflow", s.pvc.name))
            .with_hint("choose another claim name"));
    }
    let g = Groups { p, groups: &groups, pvc: &pvc };

    let mut templates: Vec<(String, Value)> = Vec::new();
    for chain in &groups {
        let name = g.name(chain);
        let inputs: Vec<Value> = g.channels(chain).into_iter().map(|c| json!({ "name": c })).collect();
        let mut t = json!({ "name": name, "inputs": { "parameters": inputs }, "dag": { "tasks": g.dag_tasks(chain) } });
        if let Some(Group::Loop { workers, .. }) = chain.last() {
            t["parallelism"] = json!(workers);
        }
        templates.push((name, t));
    }
    for step in &p.steps {
        templates.push((step.name.to_string(), step_template(&g, step, s)));
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
            "dag": { "tasks": g.dag_tasks(&[]) },
        }),
    ));
    templates.sort_by(|a, b| a.0.cmp(&b.0));

    let spec_inputs: Vec<Value> = p
        .params
        .iter()
        .map(|x| json!({ "default": v1_default(x.ty, x.default), "name": x.name, "optional": true, "type": v1_type(x.ty) }))
        .collect();
    let pipeline_spec = json!({ "description": p.description, "inputs": spec_inputs, "name": p.name });
    let arguments: Vec<Value> =
        p.params.iter().map(|x| json!({ "name": x.name, "value": v1_default(x.ty, x.default) })).collect();

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

/// The pipeline's groups (conditions, loops) and the claim: what naming a parameter, a group
/// template or a task needs.
struct Groups<'a> {
    p: &'a Pipeline,
    groups: &'a [Vec<Group>],
    pvc: &'a Pvc,
}

impl Groups<'_> {
    /// `condition-<name>-<N>` or `for-loop-<N>`, N from the KFP group counter.
    fn name(&self, chain: &[Group]) -> String {
        let n = group_number(self.groups, chain);
        match chain[chain.len() - 1] {
            Group::If(c) => format!("condition-{}-{n}", c.name),
            Group::Loop { .. } => format!("for-loop-{n}"),
        }
    }

    /// `loop-item-param-<N-1>` of the loop group `chain`.
    fn loop_item(&self, chain: &[Group]) -> String {
        format!("loop-item-param-{}", group_number(self.groups, chain) - 1)
    }

    /// v1 parameter name of an input of `step`: the pipeline parameter, `<producer>-<output>`,
    /// or the item of the step's loop; `None` for the run id, which is no parameter (Argo
    /// fills `{{workflow.uid}}` in the template).
    fn channel(&self, step: &Step, src: Source) -> Option<String> {
        match src {
            Source::Param(name) => Some(name.to_string()),
            Source::Output { step, output } => {
                let o = self.p.step(step).and_then(|s| s.output(output)).map(|o| o.v1_name()).unwrap_or(output);
                Some(format!("{step}-{o}"))
            }
            Source::RunId { .. } => None,
            Source::Worker => Some(self.loop_item(&step.scope())),
        }
    }

    /// Inputs of a group template: values its inner tasks take from outside it, the
    /// parameters of nested conditions (evaluated inside), a loop's item, and the claim name.
    /// Sorted, unique.
    fn channels(&self, g: &[Group]) -> Vec<String> {
        let mut out = Vec::new();
        for step in self.p.steps.iter().filter(|st| st.scope().starts_with(g)) {
            for i in &step.inputs {
                let outside = match i.source {
                    Source::Param(_) => true,
                    Source::Output { step: prod, .. } => !self.p.scope_of(prod).starts_with(g),
                    Source::RunId { .. } => false,
                    // The loop's item is an input of the loop template (set from `{{item}}`
                    // by its caller), not of the groups around it.
                    Source::Worker => matches!(g.last(), Some(Group::Loop { .. })),
                };
                if let (true, Some(chan)) = (outside, self.channel(step, i.source)) {
                    out.push(chan);
                }
            }
            for group in &step.scope()[g.len()..] {
                if let Group::If(c) = group {
                    out.push(c.param.to_string());
                }
            }
        }
        if self.pvc.create {
            out.push(self.pvc.param());
        }
        out.sort();
        out.dedup();
        out
    }

    /// Value of parameter `chan` for a task in the DAG of group `chain`: a sibling's output, the
    /// claim from the VolumeOp (root), or the enclosing template's input.
    fn value(&self, chain: &[Group], src: Option<Source>, chan: &str) -> String {
        if let Some(Source::Output { step, .. }) = src {
            if self.p.scope_of(step) == chain {
                return format!("{{{{tasks.{step}.outputs.parameters.{chan}}}}}");
            }
        }
        if chan == self.pvc.param() && self.pvc.create && chain.is_empty() {
            return format!("{{{{tasks.{}.outputs.parameters.{chan}}}}}", self.pvc.op);
        }
        format!("{{{{inputs.parameters.{chan}}}}}")
    }

    fn dag_tasks(&self, chain: &[Group]) -> Value {
        let (p, pvc) = (self.p, self.pvc);
        let mut tasks: Vec<(String, Value)> = Vec::new();
        let local_deps = |deps: &mut Vec<String>, upstream: Vec<&'static str>| {
            for d in upstream {
                if p.scope_of(d) == chain && !deps.contains(&d.to_string()) {
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

        for step in p.steps.iter().filter(|st| st.scope() == chain) {
            let mut args = Vec::new();
            for i in &step.inputs {
                let Some(chan) = self.channel(step, i.source) else { continue };
                let v = self.value(chain, Some(i.source), &chan);
                args.push((chan, v));
            }
            if pvc.create {
                args.push((pvc.param(), self.value(chain, None, &pvc.param())));
            }
            let mut deps = Vec::new();
            local_deps(&mut deps, step.upstream());
            let mut t = Map::new();
            t.insert("name".into(), json!(step.name));
            t.insert("template".into(), json!(step.name));
            tasks.push((step.name.to_string(), finish(t, deps, args)));
        }
        for g in self.groups.iter().filter(|g| g.len() == chain.len() + 1 && g.starts_with(chain)) {
            let name = self.name(g);
            let mut args = Vec::new();
            for chan in self.channels(g) {
                if let Group::Loop { .. } = g[g.len() - 1] {
                    if chan == self.loop_item(g) {
                        args.push((chan, "{{item}}".to_string()));
                        continue;
                    }
                }
                // Find the source of this channel to know whether a sibling task produces it.
                let src = p
                    .steps
                    .iter()
                    .flat_map(|st| st.inputs.iter().map(move |i| (st, i.source)))
                    .find(|(st, src)| self.channel(st, *src).as_deref() == Some(chan.as_str()))
                    .map(|(_, src)| src);
                let v = self.value(chain, src, &chan);
                args.push((chan, v));
            }
            let mut deps = Vec::new();
            for step in p.steps.iter().filter(|st| st.scope().starts_with(g)) {
                local_deps(&mut deps, step.upstream());
            }
            let mut t = Map::new();
            t.insert("name".into(), json!(name));
            t.insert("template".into(), json!(name));
            match g[g.len() - 1] {
                Group::If(cond) => {
                    t.insert("when".into(), json!(format!("\"{{{{inputs.parameters.{}}}}}\" == \"True\"", cond.param)));
                }
                Group::Loop { workers, .. } => {
                    t.insert("withItems".into(), json!((0..workers).collect::<Vec<u32>>()));
                }
            }
            tasks.push((name.clone(), finish(t, deps, args)));
        }
        if pvc.create && chain.is_empty() {
            tasks.push((pvc.op.clone(), json!({ "name": pvc.op, "template": pvc.op })));
        }
        tasks.sort_by(|a, b| a.0.cmp(&b.0));
        Value::Array(tasks.into_iter().map(|(_, t)| t).collect())
    }
}

fn step_template(g: &Groups, step: &Step, s: &CompileSettings) -> Value {
    let pvc = g.pvc;
    let mut inputs: Vec<String> = step.inputs.iter().filter_map(|i| g.channel(step, i.source)).collect();
    if pvc.create {
        inputs.push(pvc.param());
    }
    inputs.sort();
    inputs.dedup();

    let mut args = Vec::new();
    for i in &step.inputs {
        args.push(i.flag.to_string());
        args.push(match (i.source, g.channel(step, i.source)) {
            (Source::RunId { prefix }, _) => format!("{prefix}{WORKFLOW_UID}"),
            (_, chan) => format!("{{{{inputs.parameters.{}}}}}", chan.unwrap_or_default()),
        });
    }
    for (flag, value) in &step.literal_args {
        args.push(flag.to_string());
        args.push(value.clone());
    }
    let mut out_params = Vec::new();
    let mut out_artifacts = Vec::new();
    for o in &step.outputs {
        let path = format!("{OUTPUT_DIR}/{}", o.v1_name());
        args.push(o.flag.to_string());
        args.push(path.clone());
        let name = format!("{}-{}", step.name, o.v1_name());
        // kfp 1.8 declares an output parameter only when a task consumes it (the file is an
        // artifact either way): tune's outputs, read by no step, are artifacts only.
        let consumed =
            g.p.steps
                .iter()
                .flat_map(|st| &st.inputs)
                .any(|i| i.source == Source::Output { step: step.name, output: o.name });
        if o.kind == OutputKind::Parameter && consumed {
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

    let claim = if pvc.create { format!("{{{{inputs.parameters.{}}}}}", pvc.param()) } else { s.pvc.name.clone() };
    let (mounts, volumes) = k8s::data_volumes(s, &pvc.op, &claim);

    let mut container = Map::new();
    container.insert("args".into(), json!(args));
    container.insert("command".into(), json!([step.binary()]));
    container.insert("image".into(), json!(s.image(step)));
    container.insert("volumeMounts".into(), json!(mounts));
    let env = k8s::env(s, step);
    if !env.is_empty() {
        container.insert("env".into(), Value::Array(env));
    }
    if let Some(r) = k8s::resources(s, step) {
        container.insert("resources".into(), r);
    }
    if let Some(sc) = k8s::security_context(s) {
        container.insert("securityContext".into(), sc);
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
    let (selector, tolerations) = k8s::scheduling(s, step);
    if let Some(sel) = selector {
        t.insert("nodeSelector".into(), sel);
    }
    if let Some(tol) = tolerations {
        t.insert("tolerations".into(), tol);
    }
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
