#!/usr/bin/env python3
"""Validate a kubeyolo-compiled KFP v2 pipeline YAML with the real kfp SDK.

Run with the kfp venv (scripts/venv.sh kfp):
    .venvs/kfp/bin/python scripts/check_kfp.py pipeline.yaml [--expect REF.yaml] [--sdk-equivalent JSON]

Checks (NOTES.md section 3 of the KFP reference, plus the project's own):
  1. strict protobuf parse: doc 0 as PipelineSpec, doc 1 as PlatformSpec, every Kubernetes
     executor config as KubernetesExecutorConfig (catches misspelled fields and bad enums);
  2. kfp.components.load_component_from_file gives a YamlComponent with the pipeline inputs;
  3. round trip: compiling the loaded component again gives the identical IR (sdkVersion aside);
  4. referential checks the SDK does not do: componentRef / executorLabel / producerTask /
     outputParameterKey / componentInputParameter / dependentTasks / triggerPolicy / placeholders
     / platform-spec executors all point at things that exist, required inputs are bound, the
     DAGs have no cycles; run-time placeholders sit where the backend substitutes them (the
     driver: a whole runtime constant such as `{{$.pipeline_job_uuid}}`; the launcher: input
     and output placeholders inside container arguments);
  5. --expect FILE: the IR equals FILE (a reference compiled by the SDK), sdkVersion aside;
  6. --sdk-equivalent JSON: builds the same pipeline with the kfp SDK + kfp-kubernetes from the
     given settings (the JSON `kubeyolo compile` settings), compiles it and requires equality.
     This is the independent oracle for GPU (CUDA images, node selector, tolerations), requests,
     Secret/ConfigMap env, CreatePVC, --run-as-root and the tune workers' ParallelFor
     (settings "tune": {"iterations", "epochs", "workers"}).

Exit status 0 when everything passes; 1 with one line per problem otherwise.
"""
import argparse
import copy
import json
import re
import sys
import tempfile

import yaml
from docdiff import first_diff
from google.protobuf import json_format
from kfp import compiler, components
from kfp.pipeline_spec import pipeline_spec_pb2

try:
    from kfp.kubernetes import kubernetes_executor_config_pb2
except ImportError:  # older layouts of kfp-kubernetes
    from kfp.kubernetes.proto import kubernetes_executor_config_pb2  # type: ignore

PROBLEMS = []


def problem(msg):
    PROBLEMS.append(msg)


def load_docs(path):
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if not docs or len(docs) > 2:
        problem(f"{path}: expected 1 or 2 YAML documents, got {len(docs)}")
    return docs


def strip_version(doc):
    doc = copy.deepcopy(doc)
    doc.pop("sdkVersion", None)
    return doc


# ------------------------------------------------------------------ 1. strict parse
def check_parse(docs):
    try:
        json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    except Exception as e:  # noqa: BLE001 - report every parse failure
        problem(f"PipelineSpec does not parse strictly: {e}")
    if len(docs) > 1:
        try:
            json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
        except Exception as e:  # noqa: BLE001
            problem(f"PlatformSpec does not parse strictly: {e}")
        execs = docs[1].get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
        for label, cfg in execs.items():
            try:
                json_format.ParseDict(cfg, kubernetes_executor_config_pb2.KubernetesExecutorConfig())
            except Exception as e:  # noqa: BLE001
                problem(f"platform executor {label}: KubernetesExecutorConfig does not parse: {e}")


# ------------------------------------------------------- 2+3. load and round trip
def check_load_and_round_trip(path, docs):
    try:
        comp = components.load_component_from_file(path)
    except Exception as e:  # noqa: BLE001
        problem(f"load_component_from_file failed: {e}")
        return
    if type(comp).__name__ != "YamlComponent":
        problem(f"load_component_from_file gave {type(comp).__name__}, not YamlComponent")
    want = set(docs[0].get("root", {}).get("inputDefinitions", {}).get("parameters", {}))
    got = set(comp.component_spec.inputs or {})
    if want != got:
        problem(f"loaded component inputs {sorted(got)} != pipeline inputs {sorted(want)}")
    with tempfile.NamedTemporaryFile(suffix=".yaml") as tmp:
        try:
            compiler.Compiler().compile(comp, tmp.name)
        except Exception as e:  # noqa: BLE001
            problem(f"re-compiling the loaded pipeline failed: {e}")
            return
        again = load_docs(tmp.name)
    if strip_version(again[0]) != strip_version(docs[0]):
        problem("round trip changed the PipelineSpec: " + first_diff(docs[0], again[0]))
    if len(docs) > 1 and (len(again) < 2 or again[1] != docs[1]):
        problem("round trip changed the PlatformSpec")


# --------------------------------------------------------------- 4. references
PLACEHOLDER = re.compile(r"\{\{\$\.(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\]")
# Any `{{$...}}` placeholder in a container argument.
ANY_PLACEHOLDER = re.compile(r"\{\{\$[^}]*\}\}")
# What the launcher substitutes inside container arguments (besides `{{$}}`).
LAUNCHER_PLACEHOLDER = re.compile(r"\{\{\$\.(inputs|outputs)\.(parameters|artifacts)\['[^']+'\]\.?[a-z_]*\}\}")
# The run-time constants the KFP driver substitutes (backend/src/v2/driver resolve: a switch on
# the *whole* constant, so `runs/{{$.pipeline_job_uuid}}` would reach the step verbatim).
DRIVER_CONSTANTS = {
    "{{$.pipeline_job_name}}", "{{$.pipeline_job_resource_name}}", "{{$.pipeline_job_uuid}}",
    "{{$.pipeline_task_name}}", "{{$.pipeline_task_uuid}}",
}


def check_references(docs):
    spec = docs[0]
    comps = spec.get("components", {})
    execs = spec.get("deploymentSpec", {}).get("executors", {})

    def outputs_of(comp_name):
        c = comps.get(comp_name, {})
        od = c.get("outputDefinitions", {})
        return set(od.get("parameters", {})), set(od.get("artifacts", {}))

    def check_dag(where, dag, own_inputs):
        tasks = dag.get("tasks", {})
        for tname, task in tasks.items():
            ref = task.get("componentRef", {}).get("name")
            if ref not in comps:
                problem(f"{where}/{tname}: componentRef '{ref}' does not exist")
                continue
            callee = comps[ref]
            callee_inputs = callee.get("inputDefinitions", {}).get("parameters", {})
            bound = dict(task.get("inputs", {}).get("parameters", {}))
            for name, src in bound.items():
                if name not in callee_inputs:
                    problem(f"{where}/{tname}: binds unknown input '{name}' of {ref}")
                check_source(f"{where}/{tname}.{name}", src, tasks, own_inputs)
            # A ParallelFor's item enters its loop component through the iterator.
            item = task.get("parameterIterator", {}).get("itemInput")
            if item is not None:
                if item not in callee_inputs:
                    problem(f"{where}/{tname}: parameterIterator.itemInput '{item}' is not an input of {ref}")
                bound[item] = {"iterator": True}
            for name, d in callee_inputs.items():
                if not d.get("isOptional") and name not in bound:
                    problem(f"{where}/{tname}: required input '{name}' of {ref} is not bound")
            for dep in task.get("dependentTasks", []):
                if dep not in tasks:
                    problem(f"{where}/{tname}: dependentTask '{dep}' is not in the same DAG")
            cond = task.get("triggerPolicy", {}).get("condition")
            if cond:
                for name in re.findall(r"parameter_values\['([^']+)'\]", cond):
                    if name not in bound:
                        problem(f"{where}/{tname}: triggerPolicy uses '{name}' which is not an input of the task")
        check_acyclic(where, tasks)

    def check_source(where, src, tasks, own_inputs):
        if "componentInputParameter" in src:
            if src["componentInputParameter"] not in own_inputs:
                problem(f"{where}: componentInputParameter '{src['componentInputParameter']}' is not an input here")
        elif "taskOutputParameter" in src:
            top = src["taskOutputParameter"]
            prod = top.get("producerTask")
            if prod not in tasks:
                problem(f"{where}: producerTask '{prod}' is not in the same DAG")
                return
            params, _ = outputs_of(tasks[prod].get("componentRef", {}).get("name"))
            if top.get("outputParameterKey") not in params:
                problem(f"{where}: '{prod}' has no output parameter '{top.get('outputParameterKey')}'")
        elif "runtimeValue" in src:
            const = src["runtimeValue"].get("constant")
            # `{{$.workspace_path}}` is the one placeholder newer drivers replace inside a constant.
            rest = const.replace("{{$.workspace_path}}", "") if isinstance(const, str) else ""
            if "{{$" in rest and const not in DRIVER_CONSTANTS:
                problem(f"{where}: runtime constant {const!r} embeds a placeholder the KFP driver does not "
                        f"substitute (only a whole constant equal to one of {sorted(DRIVER_CONSTANTS)})")
        else:
            problem(f"{where}: unknown input source {sorted(src)}")

    for cname, comp in comps.items():
        inputs = set(comp.get("inputDefinitions", {}).get("parameters", {}))
        if "dag" in comp:
            check_dag(cname, comp["dag"], inputs)
        else:
            label = comp.get("executorLabel")
            if label not in execs:
                problem(f"{cname}: executor '{label}' does not exist")
                continue
            container = execs[label].get("container", {})
            out_params, out_arts = outputs_of(cname)
            for arg in container.get("args", []) + container.get("command", []):
                for io, kind, name in PLACEHOLDER.findall(str(arg)):
                    ok = (
                        name in inputs
                        if io == "inputs"
                        else (name in out_params if kind == "parameters" else name in out_arts)
                    )
                    if not ok:
                        problem(f"{cname}: placeholder {io}.{kind}['{name}'] has no definition")
                for ph in ANY_PLACEHOLDER.findall(str(arg)):
                    if ph != "{{$}}" and not LAUNCHER_PLACEHOLDER.fullmatch(ph):
                        problem(f"{cname}: argument placeholder {ph} is not substituted by the KFP launcher "
                                "(pass it as an input bound to a runtime constant instead)")
    root = spec.get("root", {})
    check_dag("root", root.get("dag", {}), set(root.get("inputDefinitions", {}).get("parameters", {})))
    if len(docs) > 1:
        pexecs = docs[1].get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})
        for label in pexecs:
            if label not in execs:
                problem(f"platform spec: executor '{label}' is not in deploymentSpec")


def check_acyclic(where, tasks):
    state = {}

    def visit(t):
        if state.get(t) == 1:
            problem(f"{where}: dependency cycle through '{t}'")
            return
        if state.get(t) == 2:
            return
        state[t] = 1
        for d in tasks.get(t, {}).get("dependentTasks", []):
            if d in tasks:
                visit(d)
        state[t] = 2

    for t in tasks:
        visit(t)


def compare(label, docs, other):
    if strip_version(docs[0]) != strip_version(other[0]):
        problem(f"{label}: PipelineSpec differs at " + first_diff(strip_version(other[0]), strip_version(docs[0])))
    if (docs[1] if len(docs) > 1 else None) != (other[1] if len(other) > 1 else None):
        problem(f"{label}: PlatformSpec differs at " + first_diff(other[1] if len(other) > 1 else {}, docs[1] if len(docs) > 1 else {}))


# ------------------------------------------------------ 6. SDK-built equivalent
def sdk_equivalent(settings):
    """The kubeyolo pipeline written with the kfp SDK (as reference_v2.py), from settings."""
    from kfp import dsl, kubernetes
    from kfp.dsl import HTML, Markdown, Metrics, Output, OutputPath

    s = settings

    def img(step):
        # Steps with GPUs (train, test, tune with gpus > 0) run the CUDA image flavour.
        cuda = "-cuda" if step in ("train", "test", "tune") and s.get("gpus", 0) > 0 else ""
        return f"{s['image_prefix'].rstrip('/')}/yolo-{step}:{s['tag']}{cuda}"

    @dsl.container_component
    def verify(model_name: str, cfg: str, data: str, tune_space: str, model_path: OutputPath(str),
               cfg_yaml: OutputPath(str), data_yaml: OutputPath(str)):
        return dsl.ContainerSpec(image=img("verify"), command=["yolo-verify"], args=[
            "--model-name", model_name, "--cfg", cfg, "--data", data, "--tune-space", tune_space, "--out-model-path", model_path,
            "--out-cfg-yaml", cfg_yaml, "--out-data-yaml", data_yaml])

    @dsl.container_component
    def distribution(data_yaml: str, result_json: OutputPath(str), cls_names_json: OutputPath(str)):
        return dsl.ContainerSpec(image=img("distribution"), command=["yolo-distribution"], args=[
            "--data-yaml", data_yaml, "--out-result-json", result_json, "--out-cls-names-json", cls_names_json])

    @dsl.container_component
    def plot(result_json: str, cls_names_json: str, distribution_html: Output[HTML], distribution_md: Output[Markdown]):
        return dsl.ContainerSpec(image=img("plot"), command=["yolo-plot"], args=[
            "--result-json", result_json, "--cls-names-json", cls_names_json,
            "--out-html", distribution_html.path, "--out-md", distribution_md.path])

    @dsl.container_component
    def train(model_path: str, cfg_yaml: str, data_yaml: str, run_id: str, last_pt: OutputPath(str),
              best_pt: OutputPath(str), out_data_yaml: OutputPath(str), mlflow_run_id: OutputPath(str),
              train_metrics: Output[Metrics]):
        return dsl.ContainerSpec(image=img("train"), command=["yolo-train"], args=[
            "--model-path", model_path, "--cfg-yaml", cfg_yaml, "--data-yaml", data_yaml,
            "--run-dir", f"runs/detect/{run_id}", "--out-last-pt", last_pt, "--out-best-pt", best_pt, "--out-data-yaml", out_data_yaml,
            "--out-mlflow-run-id", mlflow_run_id, "--out-metrics", train_metrics.path])

    @dsl.container_component
    def test(last_pt: str, best_pt: str, data_yaml: str, test_metrics: Output[Metrics]):
        return dsl.ContainerSpec(image=img("test"), command=["yolo-test"], args=[
            "--last-pt", last_pt, "--best-pt", best_pt, "--data-yaml", data_yaml, "--out-metrics", test_metrics.path])

    # Tune: train's best weights, verify's cfg, a results folder keyed by the run, the
    # compile-time budget; with workers > 1 one task per worker in a ParallelFor.
    t_opts = s.get("tune") or {}
    iterations, epochs, workers = t_opts.get("iterations", 10), t_opts.get("epochs"), t_opts.get("workers", 1)
    literal = ["--iterations", str(iterations)] + (["--set", f"epochs={epochs}"] if epochs else [])

    def tune_args(model_path, cfg_yaml, data_yaml, run_id, tune_space, worker, best_hyp, best_pt, tune_metrics):
        head = ["--model-path", model_path, "--cfg-yaml", cfg_yaml, "--data-yaml", data_yaml,
                "--tune-dir", f"runs/detect/tune-{run_id}", "--space", tune_space]
        if worker is not None:
            head += ["--worker", worker]
        return head + literal + ["--out-best-hyp", best_hyp, "--out-best-pt", best_pt, "--out-metrics", tune_metrics.path]

    if workers > 1:
        @dsl.container_component
        def tune(model_path: str, cfg_yaml: str, data_yaml: str, run_id: str, tune_space: str, worker: int,
                 best_hyp: OutputPath(str), best_pt: OutputPath(str), tune_metrics: Output[Metrics]):
            return dsl.ContainerSpec(image=img("tune"), command=["yolo-tune"], args=tune_args(
                model_path, cfg_yaml, data_yaml, run_id, tune_space, worker, best_hyp, best_pt, tune_metrics))
    else:
        @dsl.container_component
        def tune(model_path: str, cfg_yaml: str, data_yaml: str, run_id: str, tune_space: str,
                 best_hyp: OutputPath(str), best_pt: OutputPath(str), tune_metrics: Output[Metrics]):
            return dsl.ContainerSpec(image=img("tune"), command=["yolo-tune"], args=tune_args(
                model_path, cfg_yaml, data_yaml, run_id, tune_space, None, best_hyp, best_pt, tune_metrics))

    def k8s(task, name, pvc, heavy, tracks):
        task.set_display_name(name)
        task.set_caching_options(False)
        kubernetes.mount_pvc(task, pvc_name=pvc, mount_path="/data")
        if s.get("shm_size"):
            kubernetes.empty_dir_mount(task, volume_name="shm", mount_path="/dev/shm", medium="Memory",
                                       size_limit=s["shm_size"])
        req = s.get("heavy" if heavy else "light")
        if req:
            task.set_cpu_request(req["cpu"])
            task.set_memory_request(req["memory"])
        if heavy and s.get("gpus", 0) > 0:
            task.set_accelerator_type("nvidia.com/gpu")
            task.set_accelerator_limit(s["gpus"])
            for key, value in s.get("gpu_node_selector") or []:
                kubernetes.add_node_selector(task, label_key=key, label_value=value)
            for t in s.get("gpu_tolerations") or []:
                kw = {"key": t["key"], "operator": "Equal" if t.get("value") is not None else "Exists"}
                if t.get("value") is not None:
                    kw["value"] = t["value"]
                if t.get("effect"):
                    kw["effect"] = t["effect"]
                kubernetes.add_toleration(task, **kw)
        if s.get("run_as_root"):
            kubernetes.set_security_context(task, run_as_user=0)
        m = s.get("mlflow") or {}
        if tracks:
            env = {}
            if m.get("tracking_uri"):
                env["MLFLOW_TRACKING_URI"] = m["tracking_uri"]
            if m.get("experiment"):
                env["MLFLOW_EXPERIMENT_NAME"] = m["experiment"]
            for k in sorted(env):
                task.set_env_variable(k, env[k])
            if m.get("secret"):
                kubernetes.use_secret_as_env(task, secret_name=m["secret"], secret_key_to_env={
                    "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY"})
            if m.get("auth_secret"):
                kubernetes.use_secret_as_env(task, secret_name=m["auth_secret"], secret_key_to_env={
                    "MLFLOW_TRACKING_USERNAME": "MLFLOW_TRACKING_USERNAME",
                    "MLFLOW_TRACKING_PASSWORD": "MLFLOW_TRACKING_PASSWORD"})
            if m.get("configmap"):
                kubernetes.use_config_map_as_env(task, config_map_name=m["configmap"], config_map_key_to_env={
                    "MLFLOW_TRACKING_URI": "MLFLOW_TRACKING_URI", "MLFLOW_S3_ENDPOINT_URL": "MLFLOW_S3_ENDPOINT_URL"})
        return task

    @dsl.pipeline(name="yolov8-pipeline",
                  description="YOLOv8 verify/distribution/plot/train/test/tune on a PVC mounted at /data")
    def yolov8_pipeline(model_name: str = "yolov8n.pt", cfg: str = "cfg-custom", data: str = "data-custom",
                        bool_train: bool = True, bool_tune: bool = False, tune_space: str = ""):
        create = s["pvc"].get("create")
        if create:
            kw = dict(pvc_name=s["pvc"]["name"], access_modes=[create["access_mode"]], size=create["size"])
            if create.get("storage_class"):
                kw["storage_class_name"] = create["storage_class"]
            pvc_task = kubernetes.CreatePVC(**kw)
            pvc_task.set_display_name("create pvc")
            pvc_task.set_caching_options(False)
            pvc = pvc_task.outputs["name"]
        else:
            pvc = s["pvc"]["name"]
        v = k8s(verify(model_name=model_name, cfg=cfg, data=data, tune_space=tune_space), "Verify inputs", pvc, False, True)
        d = k8s(distribution(data_yaml=v.outputs["data_yaml"]), "Class distribution", pvc, False, True)
        p = k8s(plot(result_json=d.outputs["result_json"], cls_names_json=d.outputs["cls_names_json"]),
                "Plot distribution", pvc, False, True)
        with dsl.If(bool_train == True, name="train-enabled"):  # noqa: E712
            # The run folder is keyed by the run: a retried pod resumes its own checkpoint.
            t = k8s(train(model_path=v.outputs["model_path"], cfg_yaml=v.outputs["cfg_yaml"],
                          data_yaml=v.outputs["data_yaml"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
                    "Train", pvc, True, True)
            t.after(p)
            t.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="3600s")
            k8s(test(last_pt=t.outputs["last_pt"], best_pt=t.outputs["best_pt"],
                     data_yaml=t.outputs["out_data_yaml"]), "Test", pvc, True, True)
            with dsl.If(bool_tune == True, name="tune-enabled"):  # noqa: E712
                inputs = dict(model_path=t.outputs["best_pt"], cfg_yaml=v.outputs["cfg_yaml"],
                              data_yaml=t.outputs["out_data_yaml"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                              tune_space=tune_space)

                def tune_task(**extra):
                    task = k8s(tune(**inputs, **extra), "Tune", pvc, True, True)
                    # The tuner resumes from its results file: retried like train.
                    task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2.0, backoff_max_duration="3600s")

                if workers > 1:
                    with dsl.ParallelFor(items=list(range(workers)), parallelism=workers) as worker:
                        tune_task(worker=worker)
                else:
                    tune_task()

    with tempfile.NamedTemporaryFile(suffix=".yaml") as tmp:
        compiler.Compiler().compile(yolov8_pipeline, tmp.name)
        return load_docs(tmp.name)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="compiled v2 pipeline YAML")
    ap.add_argument("--expect", help="reference YAML compiled by the SDK; IR must be equal (sdkVersion aside)")
    ap.add_argument("--sdk-equivalent", help="JSON settings: build the pipeline with the SDK and require equality")
    a = ap.parse_args()

    docs = load_docs(a.file)
    if docs:
        check_parse(docs)
        check_load_and_round_trip(a.file, docs)
        check_references(docs)
        if a.expect:
            compare(f"--expect {a.expect}", docs, load_docs(a.expect))
        if a.sdk_equivalent:
            settings = json.loads(a.sdk_equivalent)
            compare("SDK-built equivalent", docs, sdk_equivalent(settings))
    for p in PROBLEMS:
        print("FAIL:", p)
    if PROBLEMS:
        sys.exit(1)
    print(f"ok: {a.file} passes strict parse, load, round trip, references"
          + (", equals --expect" if a.expect else "") + (", equals the SDK build" if a.sdk_equivalent else ""))


if __name__ == "__main__":
    main()
