//! `kubeyolo run` / `kubeyolo demo` with the process runner.
//!
//! The runner mechanics (parameters, conditions, verbatim data passing, missing binaries,
//! failures blocking dependants) are tested with small shell-script steps in a temporary
//! `--bin-dir`, so they do not depend on which real steps exist yet. The demo test then runs the
//! real step binaries that are built beside `kubeyolo`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const STEPS: [&str; 6] = ["verify", "distribution", "plot", "train", "test", "tune"];

/// A stand-in step: records its arguments, writes `<step>:<flag>` (with a space and no newline,
/// to check verbatim passing) to every `--out-*` path, and exits with `$FAIL_<STEP>` if set.
fn stub(dir: &Path, step: &str) {
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "$@" > "$(dirname "$0")/{step}.args"
fail=$(printenv FAIL_{up})
if [ -n "$fail" ]; then echo "working..."; echo "error: {step} broke on purpose" >&2; exit "$fail"; fi
while [ $# -gt 0 ]; do
  case "$1" in
    --out-*) mkdir -p "$(dirname "$2")"; printf '%s' "/data/{step} out:$1" > "$2"; shift 2;;
    *) shift;;
  esac
done
"#,
        up = step.to_uppercase()
    );
    let p = dir.join(format!("yolo-{step}"));
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn stubs(steps: &[&str]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for s in steps {
        stub(d.path(), s);
    }
    d
}

fn run(bin: &Path, data: &Path, sets: &[&str], env: &[(&str, &str)]) -> (Output, BTreeMap<String, Value>, Value) {
    let run_dir = data.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeyolo"));
    cmd.args(["run", "-q", "--data-dir"]).arg(data).arg("--bin-dir").arg(bin).arg("--run-dir").arg(&run_dir);
    for s in sets {
        cmd.args(["--set", s]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    let statuses = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    (out, statuses, summary)
}

fn status(m: &BTreeMap<String, Value>, step: &str) -> String {
    m[step]["status"].as_str().unwrap().to_string()
}

fn args_of(bin: &Path, step: &str) -> Vec<String> {
    std::fs::read_to_string(bin.join(format!("{step}.args"))).unwrap().lines().map(String::from).collect()
}

fn flag(args: &[String], f: &str) -> String {
    let i = args.iter().position(|a| a == f).unwrap_or_else(|| panic!("{f} not in {args:?}"));
    args[i + 1].clone()
}

#[test]
fn runs_the_graph_with_parameters_conditions_and_verbatim_outputs() {
    let bin = stubs(&STEPS);
    let data = tempfile::tempdir().unwrap();
    let (out, st, _) = run(bin.path(), data.path(), &["model_name=my model.pt"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for s in ["verify", "distribution", "plot", "train", "test"] {
        assert_eq!(status(&st, s), "ok", "{s}: {:?}", st[s]);
    }
    assert_eq!(status(&st, "tune"), "skipped");
    let v = args_of(bin.path(), "verify");
    assert_eq!(flag(&v, "--model-name"), "my model.pt");
    assert_eq!(flag(&v, "--cfg"), "cfg-custom");
    assert_eq!(flag(&v, "--data-root"), std::fs::canonicalize(data.path()).unwrap().to_string_lossy());
    // Outputs reach consumers verbatim (spaces kept, no newline added or trimmed).
    let t = args_of(bin.path(), "train");
    assert_eq!(flag(&t, "--model-path"), "/data/verify out:--out-model-path");
    assert_eq!(flag(&t, "--data-yaml"), "/data/verify out:--out-data-yaml");
    // The run id is the run folder's name (`<data>/run` here): train's folder is keyed by it.
    assert_eq!(flag(&t, "--run-dir"), "runs/detect/run");
    let test = args_of(bin.path(), "test");
    assert_eq!(flag(&test, "--data-yaml"), "/data/train out:--out-data-yaml");
    assert_eq!(flag(&test, "--best-pt"), "/data/train out:--out-best-pt");
    assert!(!bin.path().join("tune.args").exists(), "tune ran although bool_tune=false");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("step") && stdout.contains("tune") && stdout.contains("skipped"),
        "summary table: {stdout}"
    );

    let (out, st, _) = run(bin.path(), data.path(), &["bool_tune=true"], &[]);
    assert!(out.status.success());
    assert_eq!(status(&st, "tune"), "ok");
    let tune = args_of(bin.path(), "tune");
    assert_eq!(flag(&tune, "--model-path"), "/data/train out:--out-best-pt", "tune starts from train's best");
    assert_eq!(flag(&tune, "--cfg-yaml"), "/data/verify out:--out-cfg-yaml");
    assert_eq!(flag(&tune, "--tune-dir"), "runs/detect/tune-run");
    assert_eq!(flag(&tune, "--iterations"), "10");
    assert!(!tune.contains(&"--worker".to_string()), "one worker: no --worker");
    assert_eq!(flag(&tune, "--space"), "", "tune_space left empty: ultralytics' search space");
    let (out, _, _) = run(bin.path(), data.path(), &["bool_tune=true", "tune_space=spaces/lr.yaml"], &[]);
    assert!(out.status.success());
    assert_eq!(flag(&args_of(bin.path(), "tune"), "--space"), "spaces/lr.yaml");

    // bool_train=false skips the whole group, including the nested tune.
    let (out, st, _) = run(bin.path(), data.path(), &["bool_train=false", "bool_tune=true"], &[]);
    assert!(out.status.success());
    for s in ["train", "test", "tune"] {
        assert_eq!(status(&st, s), "skipped", "{s}");
    }
    assert_eq!(status(&st, "plot"), "ok");
}

/// Runs without `--run-dir` get distinct run ids, so train never shares (and resumes) another
/// run's folder — also when two runs start within the same second.
#[test]
fn each_run_gets_its_own_run_id_and_train_folder() {
    let bin = stubs(&STEPS);
    let data = tempfile::tempdir().unwrap();
    let mut run_dirs = Vec::new();
    for _ in 0..3 {
        let o = Command::new(env!("CARGO_BIN_EXE_kubeyolo"))
            .args(["run", "-q", "--set", "bool_train=true", "--data-dir"])
            .arg(data.path())
            .arg("--bin-dir")
            .arg(bin.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        run_dirs.push(flag(&args_of(bin.path(), "train"), "--run-dir"));
    }
    let runs: Vec<String> = std::fs::read_dir(data.path().join("pipeline-runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 3, "{runs:?}");
    for (i, d) in run_dirs.iter().enumerate() {
        let id = d.strip_prefix("runs/detect/").unwrap_or_else(|| panic!("{d}"));
        assert!(runs.contains(&id.to_string()), "train's folder {d} is named after a run folder: {runs:?}");
        assert!(!run_dirs[..i].contains(d), "two runs share train's folder {d}");
    }
}

#[test]
fn missing_steps_are_reported_not_faked() {
    let bin = stubs(&["verify", "distribution", "plot", "test", "tune"]); // no yolo-train
    let data = tempfile::tempdir().unwrap();
    let (out, st, _) = run(bin.path(), data.path(), &["bool_tune=true"], &[]);
    assert!(out.status.success(), "missing steps alone do not fail a run");
    assert_eq!(status(&st, "train"), "missing");
    assert!(st["train"]["detail"].as_str().unwrap().contains("yolo-train"));
    assert_eq!(status(&st, "test"), "blocked");
    assert_eq!(status(&st, "tune"), "blocked");
    assert!(!bin.path().join("test.args").exists());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("MISSING"), "{stdout}");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeyolo"));
    let o = cmd
        .args(["run", "-q", "--require-all", "--data-dir"])
        .arg(data.path())
        .arg("--bin-dir")
        .arg(bin.path())
        .output()
        .unwrap();
    assert!(!o.status.success(), "--require-all must fail on a missing step");
}

#[test]
fn a_failing_step_blocks_its_dependants_and_shows_its_error() {
    let bin = stubs(&STEPS);
    let data = tempfile::tempdir().unwrap();
    let (out, st, summary) = run(bin.path(), data.path(), &[], &[("FAIL_DISTRIBUTION", "4")]);
    assert_eq!(out.status.code(), Some(4), "a failed run exits with the data error code");
    assert_eq!(status(&st, "verify"), "ok");
    assert_eq!(status(&st, "distribution"), "failed");
    let detail = st["distribution"]["detail"].as_str().unwrap();
    assert!(detail.contains("exit code 4") && detail.contains("distribution broke on purpose"), "{detail}");
    assert_eq!(status(&st, "plot"), "blocked");
    assert_eq!(status(&st, "train"), "blocked", "train runs after plot");
    assert!(!bin.path().join("plot.args").exists() && !bin.path().join("train.args").exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: distribution broke on purpose"), "log tail shown: {stderr}");
    let log = PathBuf::from(st["distribution"]["log"].as_str().unwrap());
    assert!(std::fs::read_to_string(log).unwrap().contains("working..."));
    assert_eq!(summary["params"]["bool_train"], "true");
}

#[test]
fn a_step_that_does_not_write_its_outputs_fails() {
    let bin = stubs(&STEPS);
    // verify exits 0 without writing anything.
    std::fs::write(bin.path().join("yolo-verify"), "#!/bin/sh\nexit 0\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let (out, st, _) = run(bin.path(), data.path(), &[], &[]);
    assert!(!out.status.success());
    assert_eq!(status(&st, "verify"), "failed");
    assert!(st["verify"]["detail"].as_str().unwrap().contains("model_path"));
}

#[test]
fn bad_parameters_are_usage_errors() {
    let data = tempfile::tempdir().unwrap();
    for set in ["nope=1", "bool_train=maybe", "cfg"] {
        let o = Command::new(env!("CARGO_BIN_EXE_kubeyolo"))
            .args(["run", "--data-dir"])
            .arg(data.path())
            .args(["--set", set])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{set}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

/// The README's first command on a tiny dataset, with the real step binaries built beside
/// `kubeyolo` (`cargo test --workspace` builds them): verify → distribution → plot → train → test
/// all run for real, train in `runs/detect/<run id>`, test reads train's weights, and the final
/// test metrics are printed and recorded.
#[test]
fn demo_trains_and_tests_for_real() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubeyolo")).parent().unwrap();
    for s in ["verify", "distribution", "plot", "train", "test"] {
        assert!(
            bin_dir.join(format!("yolo-{s}")).is_file(),
            "yolo-{s} is not built beside kubeyolo: run `cargo build -p yolo-{s}` (cargo test --workspace builds it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let o = Command::new(env!("CARGO_BIN_EXE_kubeyolo"))
        .args(["demo", "-q", "--no-build", "--images", "8", "--imgsz", "64", "--epochs", "1", "--dir"])
        .arg(&demo)
        .arg("--run-dir")
        .arg(dir.path().join("run-42"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let text = format!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(demo.join("data-custom.yaml").is_file() && demo.join("cfg-custom.yaml").is_file(), "{text}");
    assert!(o.status.success(), "demo failed:\n{text}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("run-42/summary.json")).unwrap()).unwrap();
    let st: BTreeMap<String, Value> = summary["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s.clone()))
        .collect();
    for s in ["verify", "distribution", "plot", "train", "test"] {
        assert_eq!(status(&st, s), "ok", "{s}: {}\n{text}", st[s]);
    }
    assert_eq!(status(&st, "tune"), "skipped");
    assert_eq!(st["verify"]["outputs"]["model_path"], "yolov8n.yaml", "demo trains the built-in architecture");

    // Train ran in the folder keyed by the run id (the run folder's name) and handed its
    // weights to test.
    let train_dir = std::fs::canonicalize(&demo).unwrap().join("runs/detect/run-42");
    let best = st["train"]["outputs"]["best_pt"].as_str().unwrap();
    assert_eq!(Path::new(best), train_dir.join("weights/best.safetensors"), "{text}");
    assert!(Path::new(best).is_file() && train_dir.join("results.csv").is_file());
    let test_log = std::fs::read_to_string(st["test"]["log"].as_str().unwrap()).unwrap();
    assert!(test_log.contains(best), "test evaluated train's best weights:\n{test_log}");

    // Test's metrics: recorded in summary.json and printed after the table.
    let m = &st["test"]["metrics"]["test_metrics"];
    for k in ["precision", "recall", "mAP50", "mAP50-95"] {
        let v = m[k].as_f64().unwrap_or_else(|| panic!("test metric {k} missing: {m}"));
        assert!((0.0..=1.0).contains(&v), "{k} = {v}");
    }
    assert_eq!(m["images"].as_f64(), Some(2.0), "the demo's test split has 8/4 images: {m}");
    let tail = &stdout
        [stdout.find("test metrics (test_metrics):").unwrap_or_else(|| panic!("no test metrics printed:\n{stdout}"))..];
    assert!(tail.contains("mAP50-95") && tail.contains("precision"), "{tail}");
    assert!(st["train"]["metrics"]["train_metrics"]["epochs"].as_f64() == Some(1.0), "{}", st["train"]);
}

/// A stand-in yolo-tune for the runner's worker mechanics: records its arguments per worker,
/// marks itself started, and waits (up to 10 s) until all `$TUNE_WORKERS` workers have
/// started — it can only succeed when the runner runs them at the same time. `$FAIL_WORKER`
/// makes that worker fail after the barrier. Each worker writes its outputs with its index.
fn tune_stub(dir: &Path) {
    let script = r#"#!/bin/sh
d=$(dirname "$0"); w=""; prev=""
for a in "$@"; do [ "$prev" = "--worker" ] && w=$a; prev=$a; done
printf '%s\n' "$@" > "$d/tune-$w.args"
touch "$d/started-$w"
i=0
while [ "$(ls "$d" | grep -c '^started-')" -lt "$TUNE_WORKERS" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ "$(ls "$d" | grep -c '^started-')" -ge "$TUNE_WORKERS" ] || { echo "error: worker $w ran alone" >&2; exit 7; }
[ "$FAIL_WORKER" = "$w" ] && { echo "error: worker $w broke on purpose" >&2; exit 5; }
[ "$w" = 0 ] && sleep 0.5
while [ $# -gt 0 ]; do
  case "$1" in
    --out-metrics) mkdir -p "$(dirname "$2")"; printf '{"fitness": 0.%s}' "$w" > "$2"; shift 2;;
    --out-*) mkdir -p "$(dirname "$2")"; printf '%s' "worker $w $1" > "$2"; shift 2;;
    *) shift;;
  esac
done
"#;
    let p = dir.join("yolo-tune");
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `kubeyolo run --tune-workers 3`: three tune processes at once (the stub's barrier fails
/// any worker that runs alone), each with its own `--worker i`, outputs, log and executor
/// output; the step is ok when all are, its outputs are the last finisher's, and the summary
/// records each worker's interval (they overlap). One failing worker fails the step.
#[test]
fn tune_workers_run_concurrently_and_all_must_succeed() {
    let bin = stubs(&["verify", "distribution", "plot", "train", "test"]);
    tune_stub(bin.path());
    let data = tempfile::tempdir().unwrap();
    let run_dir = data.path().join("run");
    let go = |env: &[(&str, &str)]| {
        for e in std::fs::read_dir(bin.path()).unwrap() {
            let e = e.unwrap();
            if e.file_name().to_string_lossy().starts_with("started-") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        let _ = std::fs::remove_dir_all(&run_dir);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kubeyolo"));
        cmd.args([
            "run",
            "-q",
            "--set",
            "bool_tune=true",
            "--tune-workers",
            "3",
            "--tune-iterations",
            "6",
            "--tune-epochs",
            "2",
        ]);
        cmd.arg("--data-dir").arg(data.path()).arg("--bin-dir").arg(bin.path()).arg("--run-dir").arg(&run_dir);
        cmd.env("TUNE_WORKERS", "3");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
        let tune = summary["steps"].as_array().unwrap().iter().find(|s| s["step"] == "tune").unwrap().clone();
        (out, tune)
    };

    let (out, tune) = go(&[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tune["status"], "ok", "{tune}");
    let workers = tune["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 3, "{tune}");
    for (i, w) in workers.iter().enumerate() {
        assert_eq!(w["worker"].as_u64(), Some(i as u64));
        assert_eq!(w["status"], "ok");
        let args: Vec<String> = std::fs::read_to_string(bin.path().join(format!("tune-{i}.args")))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(flag(&args, "--worker"), i.to_string());
        assert_eq!(flag(&args, "--tune-dir"), "runs/detect/tune-run", "all workers share the results folder");
        assert_eq!(flag(&args, "--iterations"), "6", "the total budget, not a share");
        assert_eq!(flag(&args, "--set"), "epochs=2");
        assert!(flag(&args, "--out-best-hyp").contains(&format!("worker-{i}")), "own outputs: {args:?}");
        assert!(Path::new(w["log"].as_str().unwrap()).is_file());
    }
    // Overlap: every worker started before any ended.
    let latest_start = workers.iter().map(|w| w["started"].as_f64().unwrap()).fold(f64::MIN, f64::max);
    let earliest_end = workers.iter().map(|w| w["ended"].as_f64().unwrap()).fold(f64::MAX, f64::min);
    assert!(latest_start < earliest_end, "workers did not overlap: {workers:?}");
    // Worker 0 sleeps longest: the step's outputs and metrics are its.
    assert_eq!(tune["outputs"]["best_hyp"], "worker 0 --out-best-hyp", "{tune}");
    assert_eq!(tune["metrics"]["tune_metrics"]["fitness"].as_f64(), Some(0.0), "{tune}");

    let (out, tune) = go(&[("FAIL_WORKER", "1")]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(tune["status"], "failed");
    let detail = tune["detail"].as_str().unwrap();
    assert!(detail.contains("worker 1") && detail.contains("exit code 5") && !detail.contains("worker 0"), "{detail}");
    assert_eq!(tune["workers"][0]["status"], "ok");
}
