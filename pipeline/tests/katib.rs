//! `kubeyolo compile --format katib` checked with the Katib Python SDK's models and Katib's
//! admission rules (`scripts/check_katib.py`), and the metrics contract with the train step:
//! what `yolo-train --out-metrics-text` writes is parsed as Katib's File collector parses it.
//!
//! The katib venv comes from `scripts/venv.sh katib`; its python is `KUBEYOLO_KATIB_PYTHON` or
//! `<repo>/.venvs/katib/bin/python`. Without it the SDK checks print "skipped: ..." — or fail
//! when `KUBEYOLO_REQUIRE_SERVICES=1` (CI).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value;

mod common;
use common::{repo, text};

fn katib_python(test: &str) -> Option<PathBuf> {
    common::venv_python("KUBEYOLO_KATIB_PYTHON", "katib", test)
}

fn compile(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubeyolo")).arg("compile").args(args).arg("-o").arg(out).output().unwrap()
}

fn katib(args: &[&str], out: &Path) -> Value {
    let mut all = vec!["--format", "katib"];
    all.extend_from_slice(args);
    let o = compile(&all, out);
    assert!(o.status.success(), "{args:?}: {}", text(&o));
    serde_yaml::from_str(&std::fs::read_to_string(out).unwrap()).unwrap()
}

fn check(py: &Path, file: &Path, extra: &[&str]) -> Output {
    Command::new(py).arg(repo().join("scripts/check_katib.py")).arg(file).args(extra).output().unwrap()
}

fn container(exp: &Value) -> &Value {
    &exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]
}

fn args(exp: &Value) -> Vec<String> {
    container(exp)["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

/// The defaults and the options that change the Experiment: budget, parallelism, epochs,
/// algorithm, model/cfg/data, a user space, namespace, MLflow env, GPUs and requests.
#[test]
fn katib_experiment_passes_the_sdk_models_and_katibs_rules() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp.yaml");
    let space = dir.path().join("space.yaml");
    std::fs::write(
        &space,
        "lr0: [1.0e-4, 1.0e-2]\nmomentum: [0.6, 0.98, 0.3]\nclose_mosaic: [0, 5]\nmosaic: [1.0, 1.0]\n",
    )
    .unwrap();

    let exp = katib(&[], &out);
    assert_eq!(exp["kind"].as_str(), Some("Experiment"));
    assert_eq!(exp["spec"]["maxTrialCount"].as_u64(), Some(10), "--tune-iterations default");
    assert_eq!(exp["spec"]["parallelTrialCount"].as_u64(), Some(1));
    assert_eq!(exp["spec"]["algorithm"]["algorithmName"].as_str(), Some("tpe"));
    assert_eq!(exp["spec"]["objective"]["objectiveMetricName"].as_str(), Some("fitness"));
    assert_eq!(exp["spec"]["objective"]["type"].as_str(), Some("maximize"));
    let extra: Vec<&str> = exp["spec"]["objective"]["additionalMetricNames"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(extra, ["mAP50-95", "mAP50", "precision", "recall"]);
    assert_eq!(exp["spec"]["metricsCollectorSpec"]["collector"]["kind"].as_str(), Some("File"));
    let c = container(&exp);
    assert_eq!(c["image"].as_str(), Some("kubeyolo/yolo-train:latest-cuda"), "one GPU by default: the CUDA flavour");
    assert_eq!(c["command"][0].as_str(), Some("yolo-train"));
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"].as_str(), Some("1"));
    let a = args(&exp);
    for (flag, value) in [("--model-path", "yolov8n.pt"), ("--cfg-yaml", "cfg-custom"), ("--data-yaml", "data-custom")]
    {
        let i = a.iter().position(|x| x == flag).unwrap();
        assert_eq!(a[i + 1], value, "the pipeline's run-parameter defaults");
    }
    // 8.4's default space without copy_paste: every key searched, each passed as --set.
    let params: Vec<&str> =
        exp["spec"]["parameters"].as_sequence().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(params.contains(&"lr0") && params.contains(&"cutmix") && !params.contains(&"copy_paste"), "{params:?}");
    for p in &params {
        assert!(a.contains(&format!("{p}=${{trialParameters.{p}}}")), "{p} not set in {a:?}");
    }
    let vols = serde_yaml::to_string(&exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["volumes"])
        .unwrap();
    assert!(vols.contains("claimName: pvc-local-cocodata"), "{vols}");

    let custom = katib(
        &[
            "--tune-iterations",
            "30",
            "--tune-workers",
            "3",
            "--tune-epochs",
            "10",
            "--katib-algorithm",
            "random",
            "--set",
            "cfg=cfg-insight3",
            "--set",
            "data=data-insight3",
            "--set",
            "model_name=yolov8s.pt",
            "--tune-space",
            space.to_str().unwrap(),
            "--katib-name",
            "insight3",
            "--katib-namespace",
            "kubeflow-user",
            "--pvc",
            "yolo-data",
            "--gpus",
            "0",
            "--no-requests",
            "--mlflow-secret",
            "mlflow-s3",
            "--mlflow-configmap",
            "mlflow-settings",
            "--image-prefix",
            "reg.example.com/kubeyolo",
            "--tag",
            "0.1.0",
        ],
        &dir.path().join("custom.yaml"),
    );
    assert_eq!(custom["metadata"]["namespace"].as_str(), Some("kubeflow-user"));
    assert_eq!(custom["spec"]["maxTrialCount"].as_u64(), Some(30));
    assert_eq!(custom["spec"]["parallelTrialCount"].as_u64(), Some(3));
    let params: Vec<&str> =
        custom["spec"]["parameters"].as_sequence().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(params, ["lr0", "momentum", "close_mosaic"], "the user's space, in file order; mosaic is fixed");
    let a = args(&custom);
    for needed in ["epochs=10", "mosaic=1.0", "cfg-insight3", "data-insight3", "yolov8s.pt"] {
        assert!(a.iter().any(|x| x == needed), "{needed} not in {a:?}");
    }
    let c = container(&custom);
    assert!(c["resources"].is_null(), "--gpus 0 --no-requests: {:?}", c["resources"]);
    let env = serde_yaml::to_string(&c["env"]).unwrap();
    assert!(env.contains("secretKeyRef") && env.contains("mlflow-s3") && env.contains("configMapKeyRef"), "{env}");
    assert!(!env.contains("value: AWS"), "no credential as a literal: {env}");

    let gpu = katib(
        &[
            "--run-as-root",
            "--gpu-node-selector",
            "nvidia.com/gpu.present=true",
            "--gpu-toleration",
            "nvidia.com/gpu:NoSchedule",
        ],
        &dir.path().join("gpu.yaml"),
    );
    let pod = &gpu["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.present"].as_str(), Some("true"));
    assert_eq!(pod["tolerations"][0]["operator"].as_str(), Some("Exists"));
    assert_eq!(container(&gpu)["securityContext"]["runAsUser"].as_u64(), Some(0));

    let Some(py) = katib_python("katib_sdk") else { return };
    for f in [out, dir.path().join("custom.yaml"), dir.path().join("gpu.yaml")] {
        let c = check(&py, &f, &[]);
        assert!(c.status.success(), "check_katib failed for {}:\n{}", f.display(), text(&c));
    }
}

/// The checker must be able to fail: hand-broken variants of a good file are rejected.
#[test]
fn katib_checker_rejects_broken_variants() {
    let Some(py) = katib_python("katib_broken") else { return };
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    katib(&["--tune-workers", "2"], &good);
    let src = std::fs::read_to_string(&good).unwrap();
    let breaks: &[(&str, &str, &str)] = &[
        ("misspelled field", "objectiveMetricName:", "objectiveMetric:"),
        ("wrong type", "maxTrialCount: 10", "maxTrialCount: '10'"),
        ("unknown algorithm", "algorithmName: tpe", "algorithmName: tpee"),
        ("parallel above max", "parallelTrialCount: 2", "parallelTrialCount: 11"),
        ("undefined trial parameter", "lr0=${trialParameters.lr0}", "lr0=${trialParameters.lr00}"),
        ("reference to no parameter", "reference: lr0", "reference: lr00"),
        ("empty range", "max: '0.01'", "max: '1e-5'"),
        ("restart policy", "restartPolicy: Never", "restartPolicy: Always"),
        ("primary container", "primaryContainerName: training-container", "primaryContainerName: trainer"),
        ("metrics file on the volume", "path: /var/log/katib/metrics.txt", "path: /data/metrics.txt"),
        ("relative metrics path", "path: /var/log/katib/metrics.txt", "path: metrics.txt"),
        ("argument split by sh -c", "- cfg-custom", "- cfg custom"),
        ("k8s field typo", "restartPolicy: Never", "restartPolicyy: Never"),
    ];
    for (what, from, to) in breaks {
        assert!(src.contains(from), "{what}: pattern {from:?} not in the compiled file");
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, src.replacen(from, to, 1)).unwrap();
        let c = check(&py, &bad, &[]);
        assert!(!c.status.success(), "{what}: check_katib accepted a broken file");
        assert!(text(&c).contains("FAIL"), "{what}: {}", text(&c));
    }
}

/// The train step writes the metrics file the Experiment's collector reads: a real `yolo-train`
/// (built beside kubeyolo) trains one epoch on a tiny dataset with `--out-metrics-text`, and the
/// file, parsed as Katib's File collector parses TEXT files with the compiled filter, reports
/// fitness and every additional metric as a number.
#[test]
fn train_metrics_text_is_what_the_katib_collector_reads() {
    let bin = Path::new(env!("CARGO_BIN_EXE_kubeyolo")).parent().unwrap().join("yolo-train");
    assert!(
        bin.is_file(),
        "yolo-train is not built beside kubeyolo: run `cargo build -p yolo-train` (cargo test --workspace builds it)"
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let spec =
        kubeyolo_pipeline::demo::DemoSpec { images_per_split: [8, 2, 2], imgsz: 64, epochs: 1, ..Default::default() };
    kubeyolo_pipeline::demo::prepare(&data, &spec).unwrap();
    let metrics = dir.path().join("katib/metrics.txt");
    let o = Command::new(&bin)
        .args([
            "--model-path",
            "yolov8n.yaml",
            "--cfg-yaml",
            "cfg-custom",
            "--data-yaml",
            "data-custom",
            "--run-dir",
            "runs/detect/trial-1",
        ])
        .arg("--data-root")
        .arg(&data)
        .arg("--out-metrics-text")
        .arg(&metrics)
        .env("KUBEYOLO_KFP_EXECUTOR_OUTPUT", "none")
        .output()
        .unwrap();
    assert!(o.status.success(), "yolo-train failed:\n{}", text(&o));
    let written = std::fs::read_to_string(&metrics).unwrap();
    let names: Vec<&str> = written.lines().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(names, ["fitness", "mAP50-95", "mAP50", "precision", "recall"], "{written}");
    for l in written.lines() {
        let v: f64 = l.split_once('=').unwrap().1.parse().unwrap_or_else(|e| panic!("{l}: {e}"));
        assert!((0.0..=1.0).contains(&v), "{l}");
    }

    let Some(py) = katib_python("katib_metrics") else { return };
    let exp = dir.path().join("exp.yaml");
    katib(&[], &exp);
    let c = check(&py, &exp, &["--metrics-file", metrics.to_str().unwrap()]);
    assert!(c.status.success(), "check_katib failed on yolo-train's metrics:\n{}\n{written}", text(&c));
    // And it can fail: a file without the objective is reported.
    let partial = dir.path().join("partial.txt");
    std::fs::write(&partial, written.lines().filter(|l| !l.starts_with("fitness")).collect::<Vec<_>>().join("\n"))
        .unwrap();
    let c = check(&py, &exp, &["--metrics-file", partial.to_str().unwrap()]);
    assert!(!c.status.success() && text(&c).contains("fitness"), "{}", text(&c));
}

/// A bad `--tune-space` fails at compile time with the space loader's error: the file, the
/// line, what is wrong (config exit code 3), and nothing is written.
#[test]
fn a_bad_tune_space_fails_compile_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exp.yaml");
    for (body, line, needle) in [
        ("lr0: [1.0e-5, 0.1]\nmomentum: [0.98, 0.6]\n", 2, "greater than max"),
        ("lr0: [1.0e-5, 0.1]\nlr00: [0.1, 0.2]\n", 2, "lr00"),
        ("lr0: [1.0e-5, 0.1]\nmosaic: [zero, 1]\n", 2, "not a number"),
    ] {
        let space = dir.path().join("space.yaml");
        std::fs::write(&space, body).unwrap();
        let o = compile(&["--format", "katib", "--tune-space", space.to_str().unwrap()], &out);
        assert_eq!(o.status.code(), Some(3), "{body}: {}", text(&o));
        let t = text(&o);
        assert!(t.contains(&format!("{}:{line}", space.display())), "{body}: file:line missing in {t}");
        assert!(t.contains(needle), "{body}: {t}");
        assert!(!out.exists(), "output written despite the error");
    }
    let o = compile(&["--format", "katib", "--tune-space", "/nonexistent/space.yaml"], &out);
    assert!(!o.status.success() && text(&o).contains("/nonexistent/space.yaml"), "{}", text(&o));
}

#[test]
fn katib_only_options_and_bad_values_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.yaml");
    for args in [
        &["--format", "v2", "--set", "cfg=cfg-x"][..],
        &["--format", "v1", "--tune-space", "space.yaml"][..],
        &["--format", "katib", "--create-pvc"][..],
        &["--format", "katib", "--set", "bool_tune=true"][..],
        &["--format", "katib", "--set", "cfg=my cfg"][..],
        &["--format", "katib", "--katib-name", "Yolo_Tune"][..],
        &["--format", "katib", "--katib-algorithm", "grid"][..],
        &["--format", "katib", "--tune-workers", "11"][..],
    ] {
        let o = compile(args, &out);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(!out.exists(), "{args:?}: output written");
    }
}
