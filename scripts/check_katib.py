#!/usr/bin/env python3
"""Validate a kubeyolo-compiled Katib Experiment (`kubeyolo compile --format katib`) with the
Katib Python SDK's models and Katib's own admission rules.

Run with the katib venv (scripts/venv.sh katib):
    .venvs/katib/bin/python scripts/check_katib.py experiment.yaml [--metrics-file FILE]

Checks:
  1. strict model round trip: the document deserialized into the SDK's V1beta1Experiment and
     serialized again is the same document (a misspelled or unknown field is dropped by the
     models, a wrong type changes: both show up), and the trial spec likewise as the kubernetes
     client's V1Job (the Experiment model types it as a bare object);
  2. what Katib's experiment webhook does before it admits an Experiment (defaulter + validator,
     pkg/webhook/v1beta1/experiment): name, budget counts, objective, algorithm, parameters and
     feasible spaces, trial template (primary container, trialParameters names / references /
     every `${trialParameters.x}` defined and used, no metadata.name, a batch/v1 Job with
     restartPolicy Never or OnFailure), File metrics collector (absolute path, kind File,
     TEXT/JSON format, filters with two groups);
  3. what Katib's pod webhook does to a trial (wrapWorkerContainer): the primary container's
     command and args are joined with spaces into `sh -c`, unquoted, so each argument must stay
     one shell word after substitution; the metrics file's folder gets an emptyDir, so it must
     not be a folder the container already mounts or lies under;
  4. --metrics-file FILE: FILE (what `yolo-train --out-metrics-text` wrote) parsed the way
     Katib's File collector parses TEXT files (parseLogsInTextFormat) must report the
     objective and every additional metric as a number.

Exit status 0 when everything passes; 1 with one line per problem otherwise.
"""
import argparse
import copy
import json
import os
import re
import sys

import yaml
from docdiff import first_diff
from kubeflow.katib import ApiClient as KatibApiClient
from kubernetes.client import ApiClient as K8sApiClient

PROBLEMS = []

# katib-config's default suggestion algorithms (manifests/v1beta1/installs/katib-standalone).
KATIB_ALGORITHMS = {"random", "tpe", "multivariate-tpe", "grid", "hyperband", "bayesianoptimization", "cmaes",
                    "sobol", "enas", "darts", "pbt"}
META_KEYS = {"Name", "Namespace", "Kind", "APIVersion", "Annotations", "Labels"}
DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
SHELL_WORD = re.compile(r"^[A-Za-z0-9_./:=@%+,-]+$")


def problem(msg):
    PROBLEMS.append(msg)


def round_trip(client, data, klass, label):
    try:
        obj = client._ApiClient__deserialize(copy.deepcopy(data), klass)  # the SDK's own deserializer
    except Exception as e:  # noqa: BLE001 - a model's validation error is a finding
        problem(f"{label}: the SDK cannot build {klass}: {e}")
        return None
    again = client.sanitize_for_serialization(obj)
    if again != data:
        problem(f"{label}: {klass} round trip changed the document (first: the file, second: the round trip) at " + first_diff(data, again))
    return obj


# ----------------------------------------------------------------- 1. SDK models
def check_models(doc):
    round_trip(KatibApiClient(), doc, "V1beta1Experiment", "Experiment")
    job = (((doc.get("spec") or {}).get("trialTemplate") or {}).get("trialSpec"))
    if isinstance(job, dict):
        round_trip(K8sApiClient(), job, "V1Job", "trialSpec")


# ------------------------------------------------------ 2. experiment webhook rules
def number(text, where):
    try:
        return float(text)
    except (TypeError, ValueError):
        problem(f"{where}: {text!r} is not a number")
        return None


def check_experiment(doc):
    if doc.get("apiVersion") != "kubeflow.org/v1beta1" or doc.get("kind") != "Experiment":
        problem(f"apiVersion/kind {doc.get('apiVersion')}/{doc.get('kind')} is not kubeflow.org/v1beta1 Experiment")
    name = (doc.get("metadata") or {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name or "") or len(name) > 63:
        problem(f"metadata.name {name!r} is not a Katib experiment name")
    spec = doc.get("spec") or {}
    counts = {}
    for key in ("maxTrialCount", "parallelTrialCount", "maxFailedTrialCount"):
        v = spec.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
            problem(f"spec.{key} {v!r} is not an integer")
            v = None
        counts[key] = v
    mx, par, failed = counts["maxTrialCount"], counts["parallelTrialCount"], counts["maxFailedTrialCount"]
    if mx is not None and mx <= 0:
        problem("spec.maxTrialCount must be greater than 0")
    if par is not None and par <= 0:
        problem("spec.parallelTrialCount must be greater than 0")
    if failed is not None and failed < 0:
        problem("spec.maxFailedTrialCount should not be less than 0")
    if None not in (failed, mx) and failed > mx:
        problem("spec.maxFailedTrialCount should be less than or equal to spec.maxTrialCount")
    if None not in (par, mx) and par > mx:
        problem("spec.parallelTrialCount should be less than or equal to spec.maxTrialCount")

    obj = spec.get("objective") or {}
    if obj.get("type") not in ("minimize", "maximize"):
        problem(f"spec.objective.type {obj.get('type')!r} must be minimize or maximize")
    if not obj.get("objectiveMetricName"):
        problem("spec.objective.objectiveMetricName must be specified")
    if obj.get("objectiveMetricName") in (obj.get("additionalMetricNames") or []):
        problem("spec.objective.additionalMetricNames should not contain the objective metric")
    algo = (spec.get("algorithm") or {}).get("algorithmName")
    if algo not in KATIB_ALGORITHMS:
        problem(f"spec.algorithm.algorithmName {algo!r} is not a Katib suggestion algorithm")
    if resume := spec.get("resumePolicy"):
        if resume not in ("Never", "LongRunning", "FromVolume"):
            problem(f"spec.resumePolicy {resume!r} is invalid")

    params = spec.get("parameters") or []
    if not params:
        problem("spec.parameters must be specified")
    names = [p.get("name") for p in params]
    if len(set(names)) != len(names):
        problem(f"spec.parameters names are not unique: {names}")
    for i, p in enumerate(params):
        where = f"spec.parameters[{i}] ({p.get('name')})"
        ty, fs = p.get("parameterType"), p.get("feasibleSpace") or {}
        if ty not in ("int", "double", "categorical", "discrete"):
            problem(f"{where}: parameterType {ty!r} is not supported")
        if not fs:
            problem(f"{where}: feasibleSpace must be specified")
        if fs.get("distribution") not in (None, "uniform", "logUniform", "normal", "logNormal"):
            problem(f"{where}: distribution {fs.get('distribution')!r} is not supported")
        if ty in ("int", "double"):
            if fs.get("list"):
                problem(f"{where}: feasibleSpace.list is not supported for {ty}")
            if not fs.get("min") or not fs.get("max"):
                problem(f"{where}: feasibleSpace.min and .max must be specified")
                continue
            lo, hi = number(fs["min"], where + ".min"), number(fs["max"], where + ".max")
            if None not in (lo, hi) and not lo < hi:
                problem(f"{where}: min {fs['min']} is not below max {fs['max']} (nothing to search)")
            if ty == "int" and not (re.fullmatch(r"-?\d+", fs["min"]) and re.fullmatch(r"-?\d+", fs["max"])):
                problem(f"{where}: int bounds must be integers, got [{fs['min']}, {fs['max']}]")
    check_trial_template(spec, set(names))
    check_metrics_collector(spec)


def is_meta_key(ref):
    m = re.fullmatch(r"\$\{trialSpec\.(.+?)\}", ref or "")
    if not m:
        return False
    key = m.group(1)
    sub = re.fullmatch(r"(.+)\[(.+)]", key)
    return key in META_KEYS or bool(sub and sub.group(1) in META_KEYS)


def check_trial_template(spec, parameter_names):
    tt = spec.get("trialTemplate") or {}
    if not tt:
        problem("spec.trialTemplate must be specified")
        return
    if not tt.get("primaryContainerName"):
        problem("spec.trialTemplate.primaryContainerName must be specified")
    job = tt.get("trialSpec")
    if not isinstance(job, dict):
        problem("spec.trialTemplate.trialSpec must be specified")
        return
    # The defaulter gives a batch/v1 Job its success and failure conditions.
    is_job = job.get("apiVersion") == "batch/v1" and job.get("kind") == "Job"
    if not is_job and not (tt.get("successCondition") and tt.get("failureCondition")):
        problem("spec.trialTemplate: successCondition and failureCondition must be specified")
    text = json.dumps(job)
    seen_names, seen_refs = set(), set()
    for i, tp in enumerate(tt.get("trialParameters") or []):
        where = f"spec.trialTemplate.trialParameters[{i}]"
        n, ref = tp.get("name"), tp.get("reference")
        if not n or not ref or "{" in n or "}" in n:
            problem(f"{where}: name and reference must be specified and name must not contain braces")
            continue
        if n in seen_names:
            problem(f"{where}: name {n} is duplicated")
        if ref in seen_refs:
            problem(f"{where}: reference {ref} is duplicated")
        seen_names.add(n)
        seen_refs.add(ref)
        if parameter_names and not is_meta_key(ref) and ref not in parameter_names:
            problem(f"{where}: reference {ref} is not in spec.parameters")
        token = "${trialParameters.%s}" % n
        if token not in text:
            problem(f"{where}: {token} is not used in the trial spec")
        text = text.replace(token, "test-value")
    left = re.findall(r"\$\{trialParameters\..+?\}", text)
    if left:
        problem(f"trial spec uses {sorted(set(left))}, not in spec.trialTemplate.trialParameters")
    meta = job.get("metadata") or {}
    if meta.get("name") or meta.get("namespace"):
        problem("trial spec: metadata.name and metadata.namespace must be omitted")
    if not is_job:
        problem(f"trial spec is {job.get('apiVersion')}/{job.get('kind')}, expected batch/v1 Job")
        return
    pod = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        problem(f"trial Job: restartPolicy {pod.get('restartPolicy')!r} must be Never or OnFailure")
    containers = {c.get("name"): c for c in pod.get("containers") or []}
    primary = containers.get(tt.get("primaryContainerName"))
    if primary is None:
        problem(f"trial Job has no container named {tt.get('primaryContainerName')!r} (primaryContainerName)")
        return
    check_wrapped_command(spec, primary, pod, tt.get("trialParameters") or [])


def check_wrapped_command(spec, primary, pod, trial_params):
    if not primary.get("command"):
        problem("primary container: no command (Katib would have to read the image's entrypoint from its registry)")
    for arg in (primary.get("command") or []) + (primary.get("args") or []):
        substituted = re.sub(r"\$\{trialParameters\..+?\}", "0.5", arg)
        if not SHELL_WORD.match(substituted):
            problem(f"primary container argument {arg!r} is not one shell word: Katib joins the command into sh -c unquoted")
    path = ((((spec.get("metricsCollectorSpec") or {}).get("source") or {}).get("fileSystemPath")) or {}).get("path")
    if path:
        folder = os.path.dirname(path)
        for m in primary.get("volumeMounts") or []:
            mp = m.get("mountPath", "").rstrip("/")
            if folder == mp or folder.startswith(mp + "/"):
                problem(f"metrics file {path} lies in the mounted {mp}: Katib mounts an emptyDir on {folder}")


def check_metrics_collector(spec):
    mc = spec.get("metricsCollectorSpec") or {}
    kind = (mc.get("collector") or {}).get("kind", "StdOut")
    if kind not in ("StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None", "Push"):
        problem(f"metrics collector kind {kind!r} is invalid")
    if kind == "File":
        fsp = (mc.get("source") or {}).get("fileSystemPath") or {}
        if fsp.get("kind") != "File" or not os.path.isabs(fsp.get("path", "")):
            problem("File collector: source.fileSystemPath needs kind File and an absolute path")
        if fsp.get("format") not in ("TEXT", "JSON"):
            problem(f"File collector: format {fsp.get('format')!r} must be TEXT or JSON")
        if fsp.get("format") == "JSON" and (mc.get("source") or {}).get("filter"):
            problem("File collector: a filter is not allowed with format JSON")
    for f in (((mc.get("source") or {}).get("filter")) or {}).get("metricsFormat") or []:
        try:
            rx = re.compile(f)
        except re.error as e:
            problem(f"metrics filter {f!r} does not compile: {e}")
            continue
        if rx.groups < 2 or not re.fullmatch(r".*\(.*\).*\(.*\).*", f):
            problem(f"metrics filter {f!r} needs two top subexpressions (name, value)")


# ------------------------------------------------------------- 4. a metrics file
def check_metrics_file(doc, path):
    """Katib's parseLogsInTextFormat on `path`, with the experiment's filters and metrics."""
    spec = doc.get("spec") or {}
    obj = spec.get("objective") or {}
    metrics = [obj.get("objectiveMetricName")] + list(obj.get("additionalMetricNames") or [])
    filters = ((((spec.get("metricsCollectorSpec") or {}).get("source") or {}).get("filter")) or {}).get("metricsFormat")
    regs = [re.compile(f) for f in (filters or [DEFAULT_FILTER])]
    found = {}
    with open(path) as f:
        for line in f.read().split("\n"):
            if not any(m in line for m in metrics):
                continue
            for rx in regs:
                for match in rx.finditer(line):
                    name, value = match.group(1).strip(), match.group(2).strip()
                    if name in metrics:
                        found.setdefault(name, []).append(value)
    for m in metrics:
        values = found.get(m)
        if not values:
            problem(f"{path}: metric {m} is not reported (Katib would record it as unavailable)")
            continue
        for v in values:
            try:
                float(v)
            except ValueError:
                problem(f"{path}: metric {m} value {v!r} is not a number")
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="compiled Katib Experiment YAML")
    ap.add_argument("--metrics-file", help="a yolo-train --out-metrics-text file to parse as Katib's File collector")
    a = ap.parse_args()
    with open(a.file) as f:
        docs = [d for d in yaml.safe_load_all(f) if d is not None]
    if len(docs) != 1 or not isinstance(docs[0], dict):
        problem(f"{a.file}: expected one YAML document (an Experiment), got {len(docs)}")
    else:
        check_models(docs[0])
        check_experiment(docs[0])
        if a.metrics_file:
            found = check_metrics_file(docs[0], a.metrics_file)
            print("metrics:", json.dumps(found, sort_keys=True))
    for p in PROBLEMS:
        print("FAIL:", p)
    if PROBLEMS:
        sys.exit(1)
    print(f"ok: {a.file} round-trips through the Katib SDK models and passes Katib's admission rules"
          + (", metrics file parsed" if a.metrics_file else ""))


if __name__ == "__main__":
    main()
