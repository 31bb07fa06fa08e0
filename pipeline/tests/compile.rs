//! `kubeyolo compile --format v2` checked with the real kfp SDK (`scripts/check_kfp.py`).
//!
//! The kfp venv comes from `scripts/venv.sh kfp`; its python is `KUBEYOLO_KFP_PYTHON` or
//! `<repo>/.venvs/kfp/bin/python`. Without it these tests print "skipped: ..." — or fail when
//! `KUBEYOLO_REQUIRE_SERVICES=1` (CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{repo, text};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn kfp_python(test: &str) -> Option<PathBuf> {
    common::venv_python("KUBEYOLO_KFP_PYTHON", "kfp", test)
}

fn compile(args: &[&str], out: &Path) -> Output {
    let o = Command::new(env!("CARGO_BIN_EXE_kubeyolo")).arg("compile").args(args).arg("-o").arg(out).output().unwrap();
    o
}

fn check(py: &Path, file: &Path, extra: &[&str]) -> Output {
    Command::new(py).arg(repo().join("scripts/check_kfp.py")).arg(file).args(extra).output().unwrap()
}

const REFERENCE: &[&str] = &[
    "--format",
    "v2",
    "--image-prefix",
    "REGISTRY",
    "--tag",
    "TAG",
    "--pvc",
    "pvc-local-cocodata",
    "--gpus",
    "0",
    "--no-requests",
];

#[test]
fn v2_reference_settings_reproduce_the_sdk_compilation() {
    let Some(py) = kfp_python("v2_reference") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    let o = compile(REFERENCE, &out);
    assert!(o.status.success(), "{}", text(&o));
    let expect = fixture("reference_v2.yaml");
    let c = check(&py, &out, &["--expect", expect.to_str().unwrap()]);
    assert!(c.status.success(), "check_kfp failed:\n{}", text(&c));

    // The CreatePVC variant.
    let mut args = REFERENCE.to_vec();
    args.extend(["--create-pvc", "--storage-class", "local-path", "--pvc-size", "10Gi"]);
    let o = compile(&args, &out);
    assert!(o.status.success(), "{}", text(&o));
    let expect = fixture("reference_v2_createpvc.yaml");
    let c = check(&py, &out, &["--expect", expect.to_str().unwrap()]);
    assert!(c.status.success(), "check_kfp failed (create-pvc):\n{}", text(&c));
}

#[test]
fn v2_full_settings_equal_the_sdk_build() {
    let Some(py) = kfp_python("v2_full") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    let o = compile(
        &[
            "--image-prefix",
            "reg.example.com/kubeyolo",
            "--tag",
            "0.1.0",
            "--pvc",
            "yolo-data",
            "--create-pvc",
            "--pvc-size",
            "5Gi",
            "--shm-size",
            "2Gi",
            "--gpus",
            "2",
            "--heavy-cpu",
            "4",
            "--heavy-memory",
            "16G",
            "--mlflow-secret",
            "mlflow-s3",
            "--mlflow-auth-secret",
            "mlflow-auth",
            "--mlflow-configmap",
            "mlflow-settings",
            "--mlflow-tracking-uri",
            "http://mlflow-server-service.mlflow-system.svc:5000",
            "--mlflow-experiment",
            "yolo",
        ],
        &out,
    );
    assert!(o.status.success(), "{}", text(&o));
    let yaml = std::fs::read_to_string(&out).unwrap();
    // Credentials only by reference: the Secret's name, never a value.
    assert!(yaml.contains("secretAsEnv") && yaml.contains("secretName: mlflow-s3"), "{yaml}");
    assert!(!yaml.contains("name: AWS_SECRET_ACCESS_KEY"), "secret key as a literal env var:\n{yaml}");
    let settings = r#"{"image_prefix":"reg.example.com/kubeyolo","tag":"0.1.0",
        "pvc":{"name":"yolo-data","create":{"storage_class":"","size":"5Gi","access_mode":"ReadWriteOnce"}},
        "shm_size":"2Gi","gpus":2,"light":{"cpu":"500m","memory":"1Gi"},"heavy":{"cpu":"4","memory":"16G"},
        "mlflow":{"secret":"mlflow-s3","auth_secret":"mlflow-auth","configmap":"mlflow-settings",
                  "tracking_uri":"http://mlflow-server-service.mlflow-system.svc:5000","experiment":"yolo"}}"#;
    let c = check(&py, &out, &["--sdk-equivalent", settings]);
    assert!(c.status.success(), "check_kfp failed:\n{}", text(&c));

    // Defaults (existing claim, 1 GPU, default requests, no MLflow).
    let o = compile(&[], &out);
    assert!(o.status.success(), "{}", text(&o));
    let settings = r#"{"image_prefix":"kubeyolo","tag":"latest","pvc":{"name":"pvc-local-cocodata"},"shm_size":"1Gi",
        "gpus":1,"light":{"cpu":"500m","memory":"1Gi"},"heavy":{"cpu":"2","memory":"8Gi"}}"#;
    let c = check(&py, &out, &["--sdk-equivalent", settings]);
    assert!(c.status.success(), "check_kfp failed (defaults):\n{}", text(&c));

    // Everything omittable omitted (CPU cluster, no shm mount, no requests), plain tracking URI.
    let o = compile(
        &["--gpus", "0", "--shm-size", "0", "--no-requests", "--mlflow-tracking-uri", "http://mlflow:5000"],
        &out,
    );
    assert!(o.status.success(), "{}", text(&o));
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(
        !yaml.contains("nvidia.com/gpu") && !yaml.contains("emptyDirMounts") && !yaml.contains("resources:"),
        "{yaml}"
    );
    let settings = r#"{"image_prefix":"kubeyolo","tag":"latest","pvc":{"name":"pvc-local-cocodata"},"gpus":0,
        "mlflow":{"tracking_uri":"http://mlflow:5000"}}"#;
    let c = check(&py, &out, &["--sdk-equivalent", settings]);
    assert!(c.status.success(), "check_kfp failed (minimal):\n{}", text(&c));
}

/// Train's run folder is keyed by the pipeline run, in the one form the KFP backend resolves:
/// an input bound to the whole runtime constant `{{$.pipeline_job_uuid}}` (the driver
/// substitutes it) and the prefix in the container argument (the launcher substitutes input
/// placeholders inside arguments). Train also carries its retry policy. Checked structurally
/// here (no Python needed), then by the kfp SDK and the checker's placement rules.
#[test]
fn v2_train_run_dir_is_keyed_by_the_run_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    for args in [&[][..], &["--create-pvc"][..]] {
        let o = compile(args, &out);
        assert!(o.status.success(), "{}", text(&o));
        let yaml = std::fs::read_to_string(&out).unwrap();
        let spec: serde_yaml::Value =
            serde::Deserialize::deserialize(serde_yaml::Deserializer::from_str(&yaml).next().unwrap()).unwrap();
        let container = &spec["deploymentSpec"]["executors"]["exec-train"]["container"];
        let a: Vec<&str> = container["args"].as_sequence().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        let i = a.iter().position(|x| *x == "--run-dir").expect("train gets --run-dir");
        assert_eq!(a[i + 1], "runs/detect/{{$.inputs.parameters['run_id']}}");
        let comp = &spec["components"]["comp-train"]["inputDefinitions"]["parameters"]["run_id"];
        assert_eq!(comp["parameterType"].as_str(), Some("STRING"));
        let task = &spec["components"]["comp-condition-1"]["dag"]["tasks"]["train"];
        assert_eq!(
            task["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"].as_str(),
            Some("{{$.pipeline_job_uuid}}")
        );
        let retry = &task["retryPolicy"];
        assert_eq!(retry["maxRetryCount"].as_u64(), Some(2), "{retry:?}");
        assert_eq!(retry["backoffDuration"].as_str(), Some("60s"));
        assert_eq!(retry["backoffFactor"].as_f64(), Some(2.0));
        assert_eq!(retry["backoffMaxDuration"].as_str(), Some("3600s"));
        // Only train and tune (the steps that resume) are keyed and retried.
        assert_eq!(yaml.matches("pipeline_job_uuid").count(), 2, "{yaml}");
        assert_eq!(yaml.matches("retryPolicy").count(), 2, "{yaml}");
        let tune = &spec["components"]["comp-condition-2"]["dag"]["tasks"]["tune"];
        assert_eq!(
            tune["inputs"]["parameters"]["run_id"]["runtimeValue"]["constant"].as_str(),
            Some("{{$.pipeline_job_uuid}}")
        );
        assert_eq!(tune["retryPolicy"], task["retryPolicy"], "tune retries like train");
    }
    let Some(py) = kfp_python("v2_run_id") else { return };
    for args in [&[][..], &["--create-pvc"][..]] {
        let o = compile(args, &out);
        assert!(o.status.success(), "{}", text(&o));
        let c = check(&py, &out, &[]);
        assert!(c.status.success(), "check_kfp failed ({args:?}):\n{}", text(&c));
    }
}

/// `--tune-workers N` (N > 1) puts tune in a `ParallelFor` over 0..N-1 with parallelism N, as
/// the kfp SDK compiles it (the `--sdk-equivalent` build is the oracle, with and without
/// CreatePVC); the iteration budget and epochs are literal arguments; one worker keeps the
/// YAML free of any loop.
#[test]
fn v2_tune_workers_compile_to_a_parallel_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    let o = compile(&["--tune-workers", "3", "--tune-iterations", "12", "--tune-epochs", "2"], &out);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = std::fs::read_to_string(&out).unwrap();
    let spec: serde_yaml::Value =
        serde::Deserialize::deserialize(serde_yaml::Deserializer::from_str(&yaml).next().unwrap()).unwrap();
    let looped = &spec["components"]["comp-condition-2"]["dag"]["tasks"]["for-loop-4"];
    assert_eq!(looped["parameterIterator"]["items"]["raw"].as_str(), Some("[0, 1, 2]"), "{looped:?}");
    assert_eq!(looped["iteratorPolicy"]["parallelismLimit"].as_u64(), Some(3));
    let worker = &spec["components"]["comp-for-loop-4"]["dag"]["tasks"]["tune"]["inputs"]["parameters"]["worker"];
    assert_eq!(worker["componentInputParameter"].as_str(), Some("pipelinechannel--loop-item-param-3"));
    let args: Vec<&str> = spec["deploymentSpec"]["executors"]["exec-tune"]["container"]["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let after = |f: &str| args[args.iter().position(|a| *a == f).unwrap_or_else(|| panic!("{f} in {args:?}")) + 1];
    assert_eq!(after("--worker"), "{{$.inputs.parameters['worker']}}");
    assert_eq!(after("--iterations"), "12");
    assert_eq!(after("--set"), "epochs=2");
    assert_eq!(after("--tune-dir"), "runs/detect/tune-{{$.inputs.parameters['run_id']}}");

    let o = compile(&["--tune-workers", "1"], &out);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = std::fs::read_to_string(&out).unwrap();
    assert!(!yaml.contains("for-loop") && !yaml.contains("--worker"), "one worker, no loop:\n{yaml}");

    let Some(py) = kfp_python("v2_tune_workers") else { return };
    for (args, settings) in [
        (
            &["--tune-workers", "3", "--tune-iterations", "12", "--tune-epochs", "2"][..],
            r#"{"image_prefix":"kubeyolo","tag":"latest","pvc":{"name":"pvc-local-cocodata"},"shm_size":"1Gi",
               "gpus":1,"light":{"cpu":"500m","memory":"1Gi"},"heavy":{"cpu":"2","memory":"8Gi"},
               "tune":{"iterations":12,"epochs":2,"workers":3}}"#,
        ),
        (
            &["--tune-workers", "2", "--create-pvc", "--gpus", "0", "--no-requests", "--mlflow-secret", "mlflow-s3"][..],
            r#"{"image_prefix":"kubeyolo","tag":"latest",
               "pvc":{"name":"pvc-local-cocodata","create":{"storage_class":"","size":"5Gi","access_mode":"ReadWriteOnce"}},
               "shm_size":"1Gi","gpus":0,"mlflow":{"secret":"mlflow-s3"},"tune":{"workers":2}}"#,
        ),
    ] {
        let o = compile(args, &out);
        assert!(o.status.success(), "{}", text(&o));
        let c = check(&py, &out, &["--sdk-equivalent", settings]);
        assert!(c.status.success(), "check_kfp failed ({args:?}):\n{}", text(&c));
        // The SDK's equivalent must itself differ from the one-worker build (the oracle can fail).
        let one = r#"{"image_prefix":"kubeyolo","tag":"latest","pvc":{"name":"pvc-local-cocodata"},"shm_size":"1Gi",
               "gpus":1,"light":{"cpu":"500m","memory":"1Gi"},"heavy":{"cpu":"2","memory":"8Gi"}}"#;
        let c = check(&py, &out, &["--sdk-equivalent", one]);
        assert!(!c.status.success(), "a looped pipeline passed as the one-worker build ({args:?})");
    }
}

/// Issue 16: with GPUs, train/test/tune run the CUDA image flavour (`<tag>-cuda`) and get the
/// GPU node selector and tolerations; `--run-as-root` gives every step `runAsUser: 0` (the
/// images run as 65532 otherwise). The kfp SDK's equivalent build (set_security_context,
/// add_node_selector, add_toleration) is the oracle.
#[test]
fn v2_gpu_steps_use_cuda_images_and_gpu_scheduling() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    let args = [
        "--gpus",
        "1",
        "--run-as-root",
        "--gpu-node-selector",
        "nvidia.com/gpu.present=true",
        "--gpu-toleration",
        "nvidia.com/gpu:NoSchedule",
        "--gpu-toleration",
        "dedicated=gpu:NoExecute",
    ];
    let o = compile(&args, &out);
    assert!(o.status.success(), "{}", text(&o));
    let yaml = std::fs::read_to_string(&out).unwrap();
    let mut docs = serde_yaml::Deserializer::from_str(&yaml);
    let spec: serde_yaml::Value = serde::Deserialize::deserialize(docs.next().unwrap()).unwrap();
    let platform: serde_yaml::Value = serde::Deserialize::deserialize(docs.next().unwrap()).unwrap();
    let image = |step: &str| {
        spec["deploymentSpec"]["executors"][format!("exec-{step}")]["container"]["image"].as_str().unwrap().to_string()
    };
    for step in ["train", "test", "tune"] {
        assert_eq!(image(step), format!("kubeyolo/yolo-{step}:latest-cuda"));
    }
    assert_eq!(image("verify"), "kubeyolo/yolo-verify:latest", "light steps stay on the CPU images");
    let execs = &platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"];
    assert_eq!(execs["exec-train"]["nodeSelector"]["labels"]["nvidia.com/gpu.present"].as_str(), Some("true"));
    assert_eq!(execs["exec-train"]["tolerations"].as_sequence().map(Vec::len), Some(2));
    assert!(execs["exec-plot"]["nodeSelector"].is_null() && execs["exec-plot"]["tolerations"].is_null());
    for step in ["verify", "train"] {
        assert_eq!(execs[format!("exec-{step}")]["securityContext"]["runAsUser"].as_str(), Some("0"), "{step}");
    }
    let o = compile(&["--gpus", "0"], &out);
    assert!(o.status.success());
    assert!(!std::fs::read_to_string(&out).unwrap().contains("-cuda"), "no GPU, no CUDA image");

    let Some(py) = kfp_python("v2_gpu") else { return };
    let o = compile(&args, &out);
    assert!(o.status.success());
    let settings = r#"{"image_prefix":"kubeyolo","tag":"latest","pvc":{"name":"pvc-local-cocodata"},"shm_size":"1Gi",
        "gpus":1,"light":{"cpu":"500m","memory":"1Gi"},"heavy":{"cpu":"2","memory":"8Gi"},"run_as_root":true,
        "gpu_node_selector":[["nvidia.com/gpu.present","true"]],
        "gpu_tolerations":[{"key":"nvidia.com/gpu","effect":"NoSchedule"},{"key":"dedicated","value":"gpu","effect":"NoExecute"}]}"#;
    let c = check(&py, &out, &["--sdk-equivalent", settings]);
    assert!(c.status.success(), "check_kfp failed:\n{}", text(&c));
}

/// The checker must be able to fail: hand-broken variants of a good file are rejected.
#[test]
fn v2_checker_rejects_broken_variants() {
    let Some(py) = kfp_python("v2_broken") else { return };
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    let o = compile(REFERENCE, &good);
    assert!(o.status.success(), "{}", text(&o));
    let src = std::fs::read_to_string(&good).unwrap();
    let breaks: &[(&str, &str, &str)] = &[
        ("misspelled field", "sizeLimit:", "sizeLimt:"),
        ("bad enum", "parameterType: BOOLEAN", "parameterType: BOOL"),
        ("dangling producer", "producerTask: distribution", "producerTask: distrib"),
        ("unknown output key", "outputParameterKey: result_json", "outputParameterKey: results"),
        ("dangling componentRef", "name: comp-plot\n", "name: comp-plott\n"),
        ("trigger on unknown input", "['pipelinechannel--bool_tune'] == true", "['pipelinechannel--tune'] == true"),
        ("unbound input", "componentInputParameter: cfg\n", "componentInputParameter: cfgg\n"),
        // The run id where the backend would pass it on verbatim: embedded in a runtime constant
        // (the driver substitutes whole constants only), or directly in an argument (the
        // launcher substitutes input/output placeholders only).
        ("run id inside a constant", "constant: '{{$.pipeline_job_uuid}}'", "constant: 'runs/{{$.pipeline_job_uuid}}'"),
        (
            "run id in an argument",
            "runs/detect/{{$.inputs.parameters['run_id']}}",
            "runs/detect/{{$.pipeline_job_uuid}}",
        ),
        ("retry policy typo", "maxRetryCount: 2", "maxRetries: 2"),
    ];
    for (what, from, to) in breaks {
        assert!(src.contains(from), "{what}: pattern {from:?} not in the compiled file");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, src.replacen(from, to, 1)).unwrap();
        let c = check(&py, &bad, &[]);
        assert!(!c.status.success(), "{what}: check_kfp accepted a broken file");
        assert!(text(&c).contains("FAIL"), "{what}: {}", text(&c));
    }
}

#[test]
fn compile_rejects_bad_settings_with_usage_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.yaml");
    for args in [
        &["--pvc", "Bad_Name"][..],
        &["--shm-size", "1.5Gi"][..],
        &["--heavy-memory", "8GB"][..],
        &["--mlflow-tracking-uri", "http://user:pw@mlflow:5000"][..],
        &["--tune-workers", "0"][..],
        &["--tune-workers", "4", "--tune-iterations", "3"][..],
        &["--tune-epochs", "0"][..],
        &["--gpus", "0", "--gpu-toleration", "nvidia.com/gpu:NoSchedule"][..],
        &["--gpu-toleration", "nvidia.com/gpu:Sometimes"][..],
        &["--gpu-node-selector", "novalue"][..],
    ] {
        let o = compile(args, &out);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("error:"), "{args:?}: {}", text(&o));
        assert!(!out.exists(), "{args:?}: output written despite the error");
    }
}

#[test]
fn compile_is_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
    for f in [&a, &b] {
        let o = compile(&["--mlflow-secret", "s", "--create-pvc", "--tune-workers", "3"], f);
        assert!(o.status.success(), "{}", text(&o));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}
