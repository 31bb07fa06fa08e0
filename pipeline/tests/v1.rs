//! `kubeyolo compile --format v1`: structure equal to the kfp 1.8.22 reference compilation, and
//! Argo's rules (no argo CLI here: the checks are written out below).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_yaml::Value;

fn compile(args: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("wf.yaml");
    let o = Command::new(env!("CARGO_BIN_EXE_kubeyolo"))
        .args(["compile", "--format", "v1"])
        .args(args)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_yaml::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap()
}

fn reference() -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference_v1.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn seq(v: &Value) -> Vec<Value> {
    v.as_sequence().cloned().unwrap_or_default()
}

fn names(v: &Value) -> Vec<String> {
    seq(v).iter().map(|x| s(&x["name"])).collect()
}

/// A template reduced to what the structure comparison looks at.
#[derive(Debug, PartialEq)]
struct Shape {
    inputs: Vec<String>,
    /// DAG tasks: name → (template, sorted dependencies, when, argument name → value).
    tasks: BTreeMap<String, (String, Vec<String>, String, BTreeMap<String, String>)>,
    image: String,
    /// Container args with the `--out-* <path>` pairs removed (kubeyolo adds those so its
    /// binaries write the file outputs; the seed's Python components wrote them themselves).
    in_args: Vec<String>,
    out_params: BTreeMap<String, String>,
    /// Artifact name → path.
    artifacts: BTreeMap<String, String>,
    mounts: Vec<(String, String)>,
    volumes: Vec<String>,
    annotations: BTreeMap<String, String>,
    resource: String,
    /// `retryStrategy` (set_retry); mappings compare regardless of key order.
    retry: Value,
}

fn shape(t: &Value) -> Shape {
    let mut tasks = BTreeMap::new();
    for task in seq(&t["dag"]["tasks"]) {
        let mut deps: Vec<String> = seq(&task["dependencies"]).iter().map(s).collect();
        deps.sort();
        let args = seq(&task["arguments"]["parameters"]).iter().map(|a| (s(&a["name"]), s(&a["value"]))).collect();
        tasks.insert(s(&task["name"]), (s(&task["template"]), deps, s(&task["when"]), args));
    }
    let mut in_args = Vec::new();
    let args: Vec<String> = seq(&t["container"]["args"]).iter().map(s).collect();
    let mut i = 0;
    while i < args.len() {
        if args[i].starts_with("--out-") {
            i += 2;
        } else {
            in_args.push(args[i].clone());
            i += 1;
        }
    }
    let out_params =
        seq(&t["outputs"]["parameters"]).iter().map(|p| (s(&p["name"]), s(&p["valueFrom"]["path"]))).collect();
    let artifacts = seq(&t["outputs"]["artifacts"]).iter().map(|p| (s(&p["name"]), s(&p["path"]))).collect();
    let mounts = seq(&t["container"]["volumeMounts"]).iter().map(|m| (s(&m["mountPath"]), s(&m["name"]))).collect();
    let volumes = seq(&t["volumes"])
        .iter()
        .map(|v| {
            format!(
                "{}:{}:{}",
                s(&v["name"]),
                s(&v["emptyDir"]["sizeLimit"]),
                s(&v["persistentVolumeClaim"]["claimName"])
            )
        })
        .collect();
    let annotations = t["metadata"]["annotations"]
        .as_mapping()
        .map(|m| m.iter().map(|(k, v)| (s(k), s(v))).collect())
        .unwrap_or_default();
    Shape {
        inputs: names(&t["inputs"]["parameters"]),
        tasks,
        image: s(&t["container"]["image"]),
        in_args,
        out_params,
        artifacts,
        mounts,
        volumes,
        annotations,
        resource: s(&t["resource"]["manifest"]),
        retry: t["retryStrategy"].clone(),
    }
}

fn templates(wf: &Value) -> BTreeMap<String, Value> {
    seq(&wf["spec"]["templates"]).into_iter().map(|t| (s(&t["name"]), t)).collect()
}

const REFERENCE: &[&str] = &[
    "--image-prefix",
    "REGISTRY",
    "--tag",
    "TAG",
    "--pvc",
    "pvc-local-cocodata",
    "--create-pvc",
    "--storage-class",
    "local-path",
    "--pvc-size",
    "10Gi",
    "--gpus",
    "0",
    "--no-requests",
];

#[test]
fn v1_structure_equals_the_kfp_1_8_reference() {
    let ours = compile(REFERENCE);
    let theirs = reference();
    assert_eq!(s(&ours["kind"]), "Workflow");
    assert_eq!(s(&ours["spec"]["entrypoint"]), s(&theirs["spec"]["entrypoint"]));
    assert_eq!(s(&ours["spec"]["serviceAccountName"]), "pipeline-runner");
    assert_eq!(ours["spec"]["arguments"], theirs["spec"]["arguments"]);
    let (a, b) = (templates(&ours), templates(&theirs));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &b {
        let (mine, reference) = (shape(&a[name]), shape(t));
        let mut mine_cmp = mine;
        // kubeyolo declares its own artifact outputs too (html/md/metrics files, /tmp/outputs);
        // every artifact of the reference must be there with the same path.
        for (k, v) in &reference.artifacts {
            assert_eq!(mine_cmp.artifacts.get(k), Some(v), "template {name}: artifact {k}");
        }
        mine_cmp.artifacts = reference.artifacts.clone();
        assert_eq!(mine_cmp, reference, "template {name}");
    }
    // Same pipeline_spec annotation (inputs, defaults, types) as kfp 1.8 writes.
    let spec = |wf: &Value| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&s(&wf["metadata"]["annotations"]["pipelines.kubeflow.org/pipeline_spec"])).unwrap();
        v.as_object_mut().unwrap().remove("description");
        v
    };
    assert_eq!(spec(&ours), spec(&theirs));
}

/// Argo's validation rules that `argo lint` would apply to what we emit.
fn argo_rules(wf: &Value) {
    let ts = templates(wf);
    let dns = |n: &str| {
        !n.is_empty()
            && n.len() <= 63
            && n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !n.starts_with('-')
            && !n.ends_with('-')
    };
    assert!(ts.contains_key(&s(&wf["spec"]["entrypoint"])), "entrypoint template missing");
    let placeholder = |text: &str| -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find("{{") {
            let j = rest[i..].find("}}").expect("unclosed {{") + i;
            out.push(rest[i + 2..j].to_string());
            rest = &rest[j + 2..];
        }
        out
    };
    for (name, t) in &ts {
        assert!(dns(name), "template name '{name}' is not DNS-1123");
        let inputs: BTreeSet<String> = names(&t["inputs"]["parameters"]).into_iter().collect();
        // Every {{inputs.parameters.X}} used in the template is declared.
        let body = serde_yaml::to_string(&{
            let mut c = t.clone();
            c.as_mapping_mut().unwrap().remove("dag");
            c
        })
        .unwrap();
        for ph in placeholder(&body) {
            if let Some(p) = ph.strip_prefix("inputs.parameters.") {
                assert!(inputs.contains(p), "template {name}: {{{{{ph}}}}} is not an input");
            } else if ph == "workflow.uid" {
                // Argo's global variable (kfp 1.8 dsl.RUN_ID_PLACEHOLDER), valid in any template.
            } else {
                panic!("template {name}: unexpected placeholder {{{{{ph}}}}}");
            }
        }
        for v in seq(&t["volumes"]) {
            assert!(dns(&s(&v["name"])), "template {name}: volume name");
        }
        let tasks = seq(&t["dag"]["tasks"]);
        let task_names: BTreeMap<String, Value> = tasks.iter().map(|x| (s(&x["name"]), x.clone())).collect();
        for task in &tasks {
            let tn = s(&task["name"]);
            assert!(dns(&tn), "task name '{tn}'");
            let callee = ts.get(&s(&task["template"])).unwrap_or_else(|| panic!("{name}/{tn}: template missing"));
            let deps: BTreeSet<String> = seq(&task["dependencies"]).iter().map(s).collect();
            for d in &deps {
                assert!(task_names.contains_key(d), "{name}/{tn}: dependency {d} not in the DAG");
            }
            // Arguments bind exactly the callee's inputs.
            let given: BTreeSet<String> = names(&task["arguments"]["parameters"]).into_iter().collect();
            let wanted: BTreeSet<String> = names(&callee["inputs"]["parameters"]).into_iter().collect();
            assert_eq!(given, wanted, "{name}/{tn}: arguments vs inputs of {}", s(&task["template"]));
            for a in seq(&task["arguments"]["parameters"]) {
                for ph in placeholder(&s(&a["value"])) {
                    if let Some(p) = ph.strip_prefix("inputs.parameters.") {
                        assert!(inputs.contains(p), "{name}/{tn}: {p} is not an input of {name}");
                    } else if let Some(rest) = ph.strip_prefix("tasks.") {
                        let (producer, out) = rest.split_once(".outputs.parameters.").expect("task output ref");
                        assert!(deps.contains(producer), "{name}/{tn}: reads {producer} without depending on it");
                        let prod_t = &ts[&s(&task_names[producer]["template"])];
                        assert!(
                            names(&prod_t["outputs"]["parameters"]).contains(&out.to_string()),
                            "{name}/{tn}: {producer} has no output {out}"
                        );
                    } else if ph == "item" {
                        assert!(
                            !seq(&task["withItems"]).is_empty(),
                            "{name}/{tn}: {{{{item}}}} outside a withItems loop"
                        );
                    } else {
                        panic!("{name}/{tn}: unexpected placeholder {ph}");
                    }
                }
            }
            let when = s(&task["when"]);
            if !when.is_empty() {
                let inner = when
                    .strip_prefix("\"{{inputs.parameters.")
                    .and_then(|w| w.strip_suffix("}}\" == \"True\""))
                    .unwrap_or_else(|| panic!("{name}/{tn}: when '{when}'"));
                assert!(inputs.contains(inner), "{name}/{tn}: when uses {inner}, not an input");
            }
        }
    }
}

#[test]
fn v1_follows_argo_rules_in_every_variant() {
    argo_rules(&compile(REFERENCE));
    argo_rules(&compile(&[]));
    let full = compile(&[
        "--pvc",
        "yolo.data",
        "--create-pvc",
        "--gpus",
        "2",
        "--mlflow-secret",
        "mlflow-s3",
        "--mlflow-configmap",
        "mlflow-cfg",
        "--mlflow-tracking-uri",
        "http://mlflow:5000",
    ]);
    argo_rules(&full);
    let ts = templates(&full);
    let train = &ts["train"]["container"];
    assert_eq!(s(&train["resources"]["limits"]["nvidia.com/gpu"]), "2");
    assert_eq!(s(&train["resources"]["requests"]["memory"]), "8Gi");
    let env = serde_yaml::to_string(&train["env"]).unwrap();
    assert!(env.contains("secretKeyRef") && env.contains("mlflow-s3") && env.contains("configMapKeyRef"), "{env}");
    for step in ["verify", "distribution", "plot", "test", "tune"] {
        let env = serde_yaml::to_string(&ts[step]["container"]["env"]).unwrap();
        assert!(env.contains("mlflow-s3") && env.contains("configMapKeyRef"), "{step} logs to MLflow: {env}");
    }
    assert!(ts["verify"]["container"]["resources"]["limits"].is_null(), "no GPU on verify");
}

/// Train's run folder is keyed by the Argo workflow UID (what kfp 1.8 compiles
/// `"runs/detect/" + dsl.RUN_ID_PLACEHOLDER` to), and train alone retries, Always (a deleted or
/// evicted pod is an Argo Error, not a Failure).
#[test]
fn v1_train_run_dir_is_keyed_by_the_workflow_uid_and_retried() {
    for wf in [compile(REFERENCE), compile(&[])] {
        let ts = templates(&wf);
        let args: Vec<String> = seq(&ts["train"]["container"]["args"]).iter().map(s).collect();
        let i = args.iter().position(|a| a == "--run-dir").expect("train gets --run-dir");
        assert_eq!(args[i + 1], "runs/detect/{{workflow.uid}}");
        assert!(!names(&ts["train"]["inputs"]["parameters"]).iter().any(|n| n.contains("run")), "the uid is no input");
        let r = &ts["train"]["retryStrategy"];
        assert_eq!(s(&r["limit"]), "2");
        assert_eq!(s(&r["retryPolicy"]), "Always");
        assert_eq!(s(&r["backoff"]["duration"]), "60s");
        assert!(r["backoff"]["factor"].is_u64(), "Argo's factor is an IntOrString: {:?}", r["backoff"]["factor"]);
        assert_eq!(s(&r["backoff"]["maxDuration"]), "3600s");
        // Tune resumes too: its results folder is keyed by the run, and it retries like train.
        let tune: Vec<String> = seq(&ts["tune"]["container"]["args"]).iter().map(s).collect();
        let i = tune.iter().position(|a| a == "--tune-dir").expect("tune gets --tune-dir");
        assert_eq!(tune[i + 1], "runs/detect/tune-{{workflow.uid}}");
        assert_eq!(ts["tune"]["retryStrategy"], ts["train"]["retryStrategy"]);
        for (name, t) in &ts {
            if name != "train" && name != "tune" {
                assert!(t["retryStrategy"].is_null(), "{name} retries");
                assert!(!serde_yaml::to_string(t).unwrap().contains("workflow.uid"), "{name} uses the run id");
            }
        }
    }
}

#[test]
fn v1_existing_claim_is_mounted_by_name() {
    let wf = compile(&["--pvc", "my-claim", "--shm-size", "0"]);
    let ts = templates(&wf);
    assert!(!ts.contains_key("my-claim"), "no VolumeOp without --create-pvc");
    let vols = serde_yaml::to_string(&ts["train"]["volumes"]).unwrap();
    assert!(vols.contains("claimName: my-claim") && !vols.contains("dshm"), "{vols}");
}

/// `--tune-workers 3` is what kfp 1.8 compiles `dsl.ParallelFor([0, 1, 2], parallelism=3)` to
/// (checked in a scratch kfp 1.8.22 compile): a `for-loop-4` DAG template with `parallelism: 3`
/// called with `withItems: [0, 1, 2]`, the item passed as `loop-item-param-3` down to tune's
/// `--worker`; the iteration budget and epochs are literal arguments.
#[test]
fn v1_tune_workers_are_a_with_items_loop() {
    let wf = compile(&["--tune-workers", "3", "--tune-iterations", "9", "--tune-epochs", "4", "--create-pvc"]);
    argo_rules(&wf);
    let ts = templates(&wf);
    let looped = &ts["for-loop-4"];
    assert_eq!(looped["parallelism"].as_u64(), Some(3));
    let inputs = names(&looped["inputs"]["parameters"]);
    assert!(inputs.contains(&"loop-item-param-3".to_string()), "{inputs:?}");
    let caller = seq(&ts["condition-tune-enabled-2"]["dag"]["tasks"])
        .into_iter()
        .find(|t| s(&t["name"]) == "for-loop-4")
        .unwrap();
    let items: Vec<u64> = seq(&caller["withItems"]).iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(items, [0, 1, 2]);
    let item =
        seq(&caller["arguments"]["parameters"]).into_iter().find(|a| s(&a["name"]) == "loop-item-param-3").unwrap();
    assert_eq!(s(&item["value"]), "{{item}}");
    let args: Vec<String> = seq(&ts["tune"]["container"]["args"]).iter().map(s).collect();
    let after =
        |f: &str| args[args.iter().position(|a| a == f).unwrap_or_else(|| panic!("{f} in {args:?}")) + 1].clone();
    assert_eq!(after("--worker"), "{{inputs.parameters.loop-item-param-3}}");
    assert_eq!(after("--iterations"), "9");
    assert_eq!(after("--set"), "epochs=4");
    // One worker: no loop at all.
    let ts = templates(&compile(&[]));
    assert!(!ts.keys().any(|k| k.starts_with("for-loop")), "{:?}", ts.keys().collect::<Vec<_>>());
}

/// Issue 16 in the Argo workflow: CUDA images, GPU node selector and tolerations on the GPU
/// steps' templates, `securityContext.runAsUser: 0` with `--run-as-root`.
#[test]
fn v1_gpu_steps_use_cuda_images_and_gpu_scheduling() {
    let wf = compile(&[
        "--gpus",
        "1",
        "--run-as-root",
        "--gpu-node-selector",
        "gpu=yes",
        "--gpu-toleration",
        "nvidia.com/gpu:NoSchedule",
    ]);
    argo_rules(&wf);
    let ts = templates(&wf);
    assert_eq!(s(&ts["train"]["container"]["image"]), "kubeyolo/yolo-train:latest-cuda");
    assert_eq!(s(&ts["verify"]["container"]["image"]), "kubeyolo/yolo-verify:latest");
    assert_eq!(s(&ts["test"]["nodeSelector"]["gpu"]), "yes");
    let tol = &seq(&ts["tune"]["tolerations"])[0];
    assert_eq!(
        (s(&tol["key"]), s(&tol["operator"]), s(&tol["effect"])),
        ("nvidia.com/gpu".into(), "Exists".into(), "NoSchedule".into())
    );
    assert!(ts["plot"]["nodeSelector"].is_null() && ts["plot"]["tolerations"].is_null());
    for step in ["verify", "train"] {
        assert_eq!(ts[step]["container"]["securityContext"]["runAsUser"].as_u64(), Some(0), "{step}");
    }
    assert!(templates(&compile(&[]))["train"]["container"]["securityContext"].is_null(), "non-root by default");
}
