//! The tune step end to end, through the `yolo-tune` binary, on tiny synthetic data (imgsz 64,
//! 1 epoch per iteration: CI has 2 cores): the tune folder holds ultralytics 8.4's files, the best
//! yaml trains with `yolo-train`, two concurrent workers split the iterations without a duplicate,
//! a worker killed mid-iteration resumes that iteration and counts it once, a worker lost for good
//! has its iteration taken over after the claim lease, and a bad space fails before anything
//! trains.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kubeyolo::data::synth::{self, SynthSpec};
use kubeyolo::tune::store::{Store, RESULTS_FILE};
use kubeyolo_e2e::{bin, text};

const CFG: &str = "epochs: 1\nimgsz: 64\nbatch: 8\nworkers: 1\nseed: 1\ndeterministic: true\nplots: false\nwarmup_epochs: 0\nlr0: 0.002\n";

/// A data root with the synthetic dataset, `cfg.yaml`, and `start.safetensors`: weights trained
/// 3 epochs on it, as the pipeline tunes from the train step's best. Trained once per test binary.
fn root() -> tempfile::TempDir {
    static START: OnceLock<(tempfile::TempDir, Vec<u8>)> = OnceLock::new();
    let write_data = |dir: &Path| {
        let spec = SynthSpec {
            images_per_split: [16, 8, 0],
            imgsz: 64,
            nc: 2,
            max_objects: 3,
            seed: 5,
            ..SynthSpec::default()
        };
        synth::generate(&dir.join("synth"), &spec).unwrap();
        std::fs::write(dir.join("cfg.yaml"), CFG).unwrap();
    };
    let (_, weights) = START.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        write_data(tmp.path());
        let out = Command::new(bin("yolo-train"))
            .args([
                "--model-path",
                "yolov8n.yaml",
                "--cfg-yaml",
                "cfg",
                "--data-yaml",
                "synth/data-synth",
                "--log-seconds",
                "0",
            ])
            .args(["--set", "epochs=3", "--set", "lr0=0.01", "--set", "warmup_epochs=1", "--run-dir", "start"])
            .env("KUBEYOLO_DATA_ROOT", tmp.path())
            .env_remove("MLFLOW_TRACKING_URI")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let w = std::fs::read(tmp.path().join("start/weights/best.safetensors")).unwrap();
        (tmp, w)
    });
    let tmp = tempfile::tempdir().unwrap();
    write_data(tmp.path());
    std::fs::write(tmp.path().join("start.safetensors"), weights).unwrap();
    tmp
}

fn tune_cmd(root: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("yolo-tune"));
    c.args([
        "--model-path",
        "start.safetensors",
        "--cfg-yaml",
        "cfg",
        "--data-yaml",
        "synth/data-synth",
        "--log-seconds",
        "0",
    ])
    .args(extra)
    .env("KUBEYOLO_DATA_ROOT", root)
    .env_remove("MLFLOW_TRACKING_URI");
    c
}

fn tune(root: &Path, extra: &[&str]) -> Output {
    tune_cmd(root, extra).output().expect("start yolo-tune")
}

fn results(dir: &Path) -> Vec<kubeyolo::tune::store::Record> {
    Store::open(dir, &["close_mosaic".to_string()]).unwrap().results().unwrap()
}

#[test]
fn tunes_and_writes_ultralytics_tune_folder() {
    let tmp = root();
    let root = tmp.path();
    let kfp = root.join("kfp");
    let out = tune(
        root,
        &[
            "--iterations",
            "3",
            // the pipeline's tune_space left empty: ultralytics' space
            "--space",
            "",
            "--out-best-hyp",
            kfp.join("best_hyp").to_str().unwrap(),
            "--out-best-pt",
            kfp.join("best_pt").to_str().unwrap(),
            "--out-metrics",
            kfp.join("metrics").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let dir = root.join("runs/detect/tune");
    for f in [
        RESULTS_FILE,
        "tune_results.csv",
        "best_hyperparameters.yaml",
        "weights/best.safetensors",
        "weights/last.safetensors",
    ] {
        assert!(dir.join(f).is_file(), "missing {f}\n{}", text(&out));
    }
    let recs = results(&dir);
    assert_eq!(recs.iter().map(|r| r.iteration).collect::<Vec<_>>(), [1, 2, 3]);
    // Iteration 1 trains the base cfg (lr0 from cfg.yaml, close_mosaic default 10), the others
    // mutated values; no two the same.
    assert_eq!(recs[0].value("lr0"), Some(0.002));
    assert_eq!(recs[0].value("close_mosaic"), Some(10.0));
    let distinct: BTreeSet<String> = recs.iter().map(|r| format!("{:?}", r.hyperparameters)).collect();
    assert_eq!(distinct.len(), 3);
    assert!(recs.iter().all(|r| r.metric("metrics/mAP50-95(B)").is_some() && r.failed_datasets.is_empty()), "{recs:?}");
    // ultralytics plots only iterations with fitness > 0 (tiny 64 px runs may score 0).
    let scored = recs.iter().any(|r| r.fitness > 0.0);
    for f in ["tune_fitness.png", "tune_scatter_plots.png"] {
        assert_eq!(dir.join(f).is_file(), scored, "{f}");
    }
    // The best iteration's folder stays; the others are cleaned up.
    let best = kubeyolo::tune::tuner::best_index(&recs).unwrap();
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(dir.join(format!("iter{}", r.iteration)).is_dir(), i == best, "iteration {}", r.iteration);
    }
    // The console shows the iteration table; the KFP outputs point at the files.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("iteration   fitness") && stdout.contains("Best fitness="), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(kfp.join("best_hyp")).unwrap(),
        dir.join("best_hyperparameters.yaml").display().to_string()
    );
    assert_eq!(
        std::fs::read_to_string(kfp.join("best_pt")).unwrap(),
        dir.join("weights/best.safetensors").display().to_string()
    );
    assert!(std::fs::read_to_string(kfp.join("metrics")).unwrap().contains("fitness"));
    // best_hyperparameters.yaml holds the best record's values and is a train cfg as it is.
    let yaml = std::fs::read_to_string(dir.join("best_hyperparameters.yaml")).unwrap();
    assert!(yaml.starts_with("# 3/3 iterations complete"), "{yaml}");
    let loaded = kubeyolo::config::hyp::Hyp::load(&dir.join("best_hyperparameters.yaml")).unwrap().hyp;
    for (k, v) in &recs[best].hyperparameters {
        assert_eq!(loaded.value(k).and_then(|x| x.as_f64()), Some(*v), "{k}");
    }
    let train = Command::new(bin("yolo-train"))
        .args([
            "--model-path",
            "yolov8n.yaml",
            "--cfg-yaml",
            "runs/detect/tune/best_hyperparameters.yaml",
            "--data-yaml",
            "synth/data-synth",
        ])
        .args([
            "--set",
            "epochs=1",
            "--set",
            "imgsz=64",
            "--set",
            "batch=8",
            "--set",
            "plots=False",
            "--log-seconds",
            "0",
        ])
        .env("KUBEYOLO_DATA_ROOT", root)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap();
    assert!(train.status.success(), "{}", text(&train));
    // A second call finds nothing left and changes nothing.
    let again = tune(root, &["--iterations", "3", "--tune-dir", "runs/detect/tune"]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(results(&dir), recs);
}

#[test]
fn two_concurrent_workers_share_one_results_file() {
    let tmp = root();
    let root = tmp.path();
    let args = ["--iterations", "4", "--tune-dir", "runs/tune-shared"];
    let mut a = tune_cmd(root, &[&args[..], &["--worker", "0"]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut b = tune_cmd(root, &[&args[..], &["--worker", "1"]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (oa, ob) = (a.wait().unwrap(), b.wait().unwrap());
    assert!(oa.success() && ob.success());
    let dir = root.join("runs/tune-shared");
    let recs = results(&dir);
    let mut its: Vec<u64> = recs.iter().map(|r| r.iteration).collect();
    its.sort();
    assert_eq!(its, [1, 2, 3, 4]);
    let distinct: BTreeSet<String> = recs.iter().map(|r| format!("{:?}", r.hyperparameters)).collect();
    assert_eq!(distinct.len(), 4, "a duplicate iteration: {recs:?}");
    // Both workers trained (each claim names its worker).
    let claims = std::fs::read_to_string(dir.join("tune_claims.ndjson")).unwrap();
    assert!(claims.contains("\"worker\": 0") && claims.contains("\"worker\": 1"), "{claims}");
    assert!(dir.join("best_hyperparameters.yaml").is_file());
    // A worker index without a shared folder is a usage error.
    let out = tune(root, &["--iterations", "1", "--worker", "1"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// Starts `cmd`, waits for a stdout line containing `line`, SIGKILLs the worker 300 ms later
/// (mid-iteration) and returns that line.
fn kill_during(mut cmd: Command, line: &str) -> String {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let start = Instant::now();
    let mut seen = String::new();
    for l in BufReader::new(stdout).lines() {
        let l = l.unwrap();
        if l.contains(line) {
            seen = l;
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "'{line}' never printed");
    }
    assert!(!seen.is_empty(), "the worker ended without printing '{line}'");
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    seen
}

#[test]
fn killed_worker_resumes_its_iteration_and_counts_it_once() {
    let tmp = root();
    let root = tmp.path();
    let args = ["--iterations", "3", "--tune-dir", "runs/tune-kill", "--checkpoint-minutes", "0"];
    let seen = kill_during(tune_cmd(root, &args), "Starting iteration 2/3");
    let dir = root.join("runs/tune-kill");
    assert_eq!(results(&dir).len(), 1, "only iteration 1 had finished");
    let out = tune(root, &args);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The restart re-runs iteration 2 with the values it had claimed, then runs 3.
    assert!(stdout.contains(&seen), "iteration 2 restarted with other values:\n{seen}\n{stdout}");
    let its: Vec<u64> = results(&dir).iter().map(|r| r.iteration).collect();
    assert_eq!(its, [1, 2, 3]);
}

/// A worker lost for good (SIGKILLed mid-iteration, never restarted): the other worker trains the
/// free iterations, waits, then takes the lost one over with its claimed values once the lease
/// (3 s here) has passed, so the run still ends with every iteration, each once.
#[test]
fn a_lost_workers_iteration_is_taken_over_after_its_lease() {
    let tmp = root();
    let root = tmp.path();
    let args = [
        "--iterations",
        "3",
        "--tune-dir",
        "runs/tune-lease",
        "--claim-lease-minutes",
        "0.05",
        "--checkpoint-minutes",
        "0",
    ];
    // worker 0 never comes back
    let seen = kill_during(tune_cmd(root, &[&args[..], &["--worker", "0"]].concat()), "Starting iteration 1/3");

    let out = tune(root, &[&args[..], &["--worker", "1"]].concat());
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("taking over iteration 1 from worker 0"), "{stdout}");
    assert!(stdout.contains(&seen), "iteration 1 was re-run with other values:\n{seen}\n{stdout}");
    let dir = root.join("runs/tune-lease");
    let mut its: Vec<u64> = results(&dir).iter().map(|r| r.iteration).collect();
    its.sort();
    assert_eq!(its, [1, 2, 3]);
    let claims = std::fs::read_to_string(dir.join("tune_claims.ndjson")).unwrap();
    assert!(!claims.contains("\"worker\": 0"), "iteration 1 now belongs to worker 1: {claims}");
}

#[test]
fn bad_space_fails_before_training() {
    let tmp = root();
    let root = tmp.path();
    for (space, needle, line) in [
        ("lr0: [1.0e-5, 1.0e-2]\nmomentum: [0.98, 0.6]\n", "greater than max", ":2"),
        ("lr0: [1.0e-5, 1.0e-2]\nmosiac: [0, 1]\n", "did you mean 'mosaic'", ":2"),
        ("box: [1, high]\n", "not a number", ":1"),
    ] {
        std::fs::write(root.join("space.yaml"), space).unwrap();
        let out = tune(root, &["--iterations", "2", "--space", "space.yaml"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(err.contains("space.yaml") && err.contains(needle) && err.contains(line), "{err}");
        assert!(!root.join("runs").exists(), "something was written before the space was checked");
    }
}

/// With a tracking server, the tune step is one parent run (tune parameters, the fitness per
/// iteration, the best fitness, best_hyperparameters.yaml) and one FINISHED child run per
/// iteration (`mlflow.parentRunId` → the parent, its iteration tag, the iteration's training
/// metrics), as ultralytics' MLflow callback nests `model.tune()` trainings. Needs the server of
/// `scripts/services.sh`.
#[test]
fn logs_a_parent_run_and_one_child_per_iteration_to_mlflow() {
    use kubeyolo_e2e::mlflow;
    let Some(uri) = mlflow::server("logs_a_parent_run_and_one_child_per_iteration_to_mlflow") else { return };
    let root = root();
    let experiment = format!(
        "kubeyolo-tune-e2e-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
    );
    let mut cmd = tune_cmd(root.path(), &["--iterations", "2", "--tune-dir", "runs/detect/tune"]);
    mlflow::track_into(&mut cmd, &uri, &experiment);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let runs = mlflow::runs(&uri, &experiment);
    assert_eq!(runs.len(), 3, "one parent and two children: {runs:?}");
    let parent_of = |r: &serde_json::Value| {
        mlflow::data(r, "tags").get("mlflow.parentRunId").and_then(|v| v.as_str().map(str::to_string))
    };
    let parents: Vec<_> = runs.iter().filter(|r| parent_of(r).is_none()).collect();
    assert_eq!(parents.len(), 1, "{runs:?}");
    let parent = parents[0];
    let pid = parent["info"]["run_id"].as_str().unwrap();
    assert_eq!(parent["info"]["status"], "FINISHED");
    let metrics = mlflow::data(parent, "metrics");
    for k in ["tune/fitness", "tune/best_fitness", "tune/best_iteration"] {
        assert!(metrics.contains_key(k), "parent metric {k}: {metrics:?}");
    }
    let artifacts = mlflow::artifacts(&uri, parent, "tune");
    assert!(artifacts.iter().any(|a| a.ends_with("best_hyperparameters.yaml")), "{artifacts:?}");
    let recs = results(&root.path().join("runs/detect/tune"));
    let mut iterations = BTreeSet::new();
    for child in runs.iter().filter(|r| parent_of(r).is_some()) {
        assert_eq!(parent_of(child).as_deref(), Some(pid));
        assert_eq!(child["info"]["status"], "FINISHED", "{child}");
        let tags = mlflow::data(child, "tags");
        let i: u64 = tags["kubeyolo.tune_iteration"].as_str().unwrap().parse().unwrap();
        iterations.insert(i);
        assert_eq!(tags["mlflow.runName"], format!("iteration-{i}"));
        let m = mlflow::data(child, "metrics");
        let rec = recs.iter().find(|r| r.iteration == i).unwrap();
        let logged =
            m.get("fitness").and_then(|v| v.as_f64()).unwrap_or_else(|| panic!("child {i} has no fitness: {m:?}"));
        // tune_results.ndjson rounds to 5 decimals, as ultralytics does.
        assert!(
            (logged - rec.fitness).abs() <= 5e-6,
            "child {i} fitness {logged} vs tune_results.ndjson {}",
            rec.fitness
        );
    }
    assert_eq!(iterations, BTreeSet::from([1, 2]));
}
