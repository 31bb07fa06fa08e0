//! The train step end to end, through the `yolo-train` binary, on tiny synthetic data (imgsz 64,
//! a few epochs: CI has 2 cores): the loss falls, the run folder holds what ultralytics writes,
//! fine-tuning from a local checkpoint transfers weights, a run killed with SIGKILL and resumed
//! ends bit-identical to an uninterrupted one, SIGTERM checkpoints and exits 143, and bad input
//! gets a clear error before any output.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kubeyolo::data::synth::{self, SynthSpec};
use kubeyolo_e2e::{bin, text};

fn spec(train: usize, seed: u64) -> SynthSpec {
    SynthSpec { images_per_split: [train, 8, 0], imgsz: 64, nc: 2, max_objects: 3, seed, ..SynthSpec::default() }
}

/// A data root with the synthetic dataset in `synth/` and `cfg.yaml` holding `cfg`.
fn root_with(train: usize, cfg: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    synth::generate(&tmp.path().join("synth"), &spec(train, 3)).unwrap();
    std::fs::write(tmp.path().join("cfg.yaml"), cfg).unwrap();
    tmp
}

const CFG: &str =
    "epochs: 3\nimgsz: 64\nbatch: 8\nworkers: 2\nseed: 1\ndeterministic: true\nplots: true\nwarmup_epochs: 1\n";

fn train_cmd(root: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bin("yolo-train"));
    c.args([
        "--model-path",
        "yolov8n.yaml",
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

fn train(root: &Path, extra: &[&str]) -> Output {
    train_cmd(root, extra).output().expect("start yolo-train")
}

fn csv(path: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    kubeyolo::train::results::read(path).unwrap()
}

#[test]
fn trains_writes_ultralytics_run_folder_and_kfp_outputs() {
    let tmp = root_with(24, CFG);
    let root = tmp.path();
    let kfp = root.join("kfp");
    let out = train(
        root,
        &[
            "--out-best-pt",
            kfp.join("best_pt").to_str().unwrap(),
            "--out-last-pt",
            kfp.join("last_pt").to_str().unwrap(),
            "--out-data-yaml",
            kfp.join("data_yaml").to_str().unwrap(),
            "--out-metrics",
            kfp.join("metrics").to_str().unwrap(),
            "--out-mlflow-run-id",
            kfp.join("mlflow_run_id").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let run = root.join("runs/detect/train");
    for f in [
        "args.yaml",
        "results.csv",
        "results.png",
        "weights/best.safetensors",
        "weights/last.safetensors",
        "train_batch0.jpg",
        "confusion_matrix.png",
        "BoxPR_curve.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}\n{}", text(&out));
    }
    let (header, rows) = csv(&run.join("results.csv"));
    assert_eq!(header.join(","), kubeyolo::train::results::header());
    assert_eq!(rows.len(), 3);
    // the training loss falls (sum of box, cls, dfl)
    let loss = |r: &Vec<f64>| r[2] + r[3] + r[4];
    assert!(loss(&rows[2]) < loss(&rows[0]), "loss did not fall: {rows:?}");
    // warm-up: the bias lr (pg2) falls towards lr0 while weights rise from 0 — with auto (AdamW)
    // both start at 0, so pg0 rises over the warm-up epoch
    assert!(rows[0][12] > 0.0);
    // KFP outputs: verbatim paths
    assert_eq!(
        std::fs::read_to_string(kfp.join("best_pt")).unwrap(),
        run.join("weights/best.safetensors").display().to_string()
    );
    assert!(std::fs::read_to_string(kfp.join("data_yaml")).unwrap().ends_with("data-synth.yaml"));
    assert!(std::fs::read_to_string(kfp.join("metrics")).unwrap().contains("mAP50-95"));
    assert_eq!(std::fs::read_to_string(kfp.join("mlflow_run_id")).unwrap(), "", "no tracking: no run id");
    // the weights are readable by the test step
    let t = Command::new(bin("yolo-test"))
        .args([
            "--weights",
            run.join("weights/best.safetensors").to_str().unwrap(),
            "--data-yaml",
            "synth/data-synth",
            "--split",
            "val",
            "--no-plots",
        ])
        .env("KUBEYOLO_DATA_ROOT", root)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap();
    assert!(t.status.success(), "{}", text(&t));
    // a second run increments the folder name, as ultralytics does
    let out2 = train(root, &["--set", "epochs=1"]);
    assert!(out2.status.success(), "{}", text(&out2));
    assert!(root.join("runs/detect/train2/weights/last.safetensors").is_file());
}

#[test]
fn fine_tunes_from_a_local_checkpoint() {
    let tmp = root_with(16, &CFG.replace("epochs: 3", "epochs: 1"));
    let root = tmp.path();
    let out = train(root, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let best = root.join("runs/detect/train/weights/best.safetensors");
    // same dataset: every tensor transfers
    let (a, b) = fine_tune(root, &best, "synth/data-synth", "ft");
    assert_eq!(a, b, "transferred {a}/{b}");
    // another class count: the class head keeps its fresh init
    synth::generate(&root.join("synth3"), &SynthSpec { nc: 3, ..spec(16, 4) }).unwrap();
    let (a, b) = fine_tune(root, &best, "synth3/data-synth", "ft3");
    assert!(a < b, "transferred {a}/{b}");
}

/// Train run `name` on `data` from `weights`; the (transferred, total) of its "Transferred N/M
/// items" line.
fn fine_tune(root: &Path, weights: &Path, data: &str, name: &str) -> (usize, usize) {
    let out = Command::new(bin("yolo-train"))
        .args([
            "--model-path",
            weights.to_str().unwrap(),
            "--cfg-yaml",
            "cfg",
            "--data-yaml",
            data,
            "--set",
            &format!("name={name}"),
        ])
        .env("KUBEYOLO_DATA_ROOT", root)
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let s = String::from_utf8_lossy(&out.stdout);
    let line = s.lines().find(|l| l.starts_with("Transferred ")).unwrap_or_else(|| panic!("no transfer line\n{s}"));
    let (a, b) = line["Transferred ".len()..].split_once(' ').unwrap().0.split_once('/').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// The EMA weights and results.csv (without the time column) of a finished run.
fn outcome(run: &Path) -> (Vec<(String, Vec<f32>)>, Vec<Vec<f64>>) {
    let (_, tensors) = kubeyolo::nn::weights::read_checkpoint(&run.join("weights/last.safetensors")).unwrap();
    let t = tensors.into_iter().map(|(k, t)| (k, t.flatten_all().unwrap().to_vec1::<f32>().unwrap())).collect();
    let (_, rows) = csv(&run.join("results.csv"));
    let rows = rows.into_iter().map(|mut r| {
        r.remove(1);
        r
    });
    (t, rows.collect())
}

fn wait_for(child: &mut Child, cond: impl Fn() -> bool, limit: Duration) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < limit, "condition not reached in {limit:?}");
        assert!(child.try_wait().unwrap().is_none(), "yolo-train exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killed_and_resumed_run_equals_uninterrupted_run() {
    // batch 4 with nbs 16: 10 batches an epoch, an optimizer step every 4 (after warm-up), so
    // kills land between optimizer steps with gradients accumulated
    let cfg = CFG.replace("epochs: 3", "epochs: 2").replace("batch: 8", "batch: 4") + "nbs: 16\n";
    let tmp = root_with(40, &cfg);
    let root = tmp.path();
    let a = train(root, &["--run-dir", "runs/a", "--checkpoint-minutes", "0.0002"]);
    assert!(a.status.success(), "{}", text(&a));
    let want = outcome(&root.join("runs/a"));

    // SIGKILL at varying times after a checkpoint was written, four times in a row, then resume
    let last = root.join("runs/b/weights/last.safetensors");
    for k in 0..4u64 {
        let mut child = train_cmd(root, &["--run-dir", "runs/b", "--checkpoint-minutes", "0.0002"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let before = std::fs::metadata(&last).and_then(|m| m.modified()).ok();
        wait_for(
            &mut child,
            || std::fs::metadata(&last).and_then(|m| m.modified()).ok() != before,
            Duration::from_secs(300),
        );
        std::thread::sleep(Duration::from_millis(40 + 70 * k));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let b = train(root, &["--run-dir", "runs/b", "--checkpoint-minutes", "0.0002"]);
    assert!(b.status.success(), "{}", text(&b));
    assert!(String::from_utf8_lossy(&b.stdout).contains("Resuming training"), "{}", text(&b));
    let got = outcome(&root.join("runs/b"));
    assert_eq!(got.1, want.1, "results.csv differs after resume");
    assert_eq!(got.0.len(), want.0.len());
    for ((n, g), (_, w)) in got.0.iter().zip(&want.0) {
        assert!(g == w, "tensor {n} differs after resume");
    }
}

#[test]
fn sigterm_checkpoints_and_exits_143_then_resumes() {
    let tmp = root_with(24, &CFG.replace("epochs: 3", "epochs: 1"));
    let root = tmp.path();
    let mut child = train_cmd(root, &["--run-dir", "runs/t", "--checkpoint-minutes", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait until training has started (results folder exists), then SIGTERM
    let args = root.join("runs/t/args.yaml");
    wait_for(&mut child, || args.is_file(), Duration::from_secs(300));
    std::thread::sleep(Duration::from_millis(1500));
    let t = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?} to stop", t.elapsed());
    let last = root.join("runs/t/weights/last.safetensors");
    if out.status.code() == Some(0) {
        // the tiny run may finish before the signal lands; then there is nothing to check
        return;
    }
    assert_eq!(out.status.code(), Some(143), "{}", text(&out));
    assert!(last.is_file(), "no checkpoint after SIGTERM\n{}", text(&out));
    let l = kubeyolo::train::checkpoint::load(&last).unwrap();
    assert!(!l.state.unwrap().finished);
    let again = train(root, &["--run-dir", "runs/t"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("Resuming training"));
}

#[test]
fn bad_inputs_get_clear_errors_before_any_output() {
    // every training label file broken: no usable image
    let tmp = root_with(8, CFG);
    let root = tmp.path();
    for e in std::fs::read_dir(root.join("synth/labels/train")).unwrap() {
        std::fs::write(e.unwrap().path(), "0 0.5 0.5 0.2\n").unwrap();
    }
    let out = train(root, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("train"), "{err}");
    assert!(!root.join("runs/detect/train/weights").exists(), "outputs written despite the error");

    // a checkpoint from another dataset cannot be resumed
    let tmp = root_with(8, &CFG.replace("epochs: 3", "epochs: 2"));
    let root = tmp.path();
    let mut child = train_cmd(root, &["--run-dir", "runs/x", "--checkpoint-minutes", "0.0002"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let last = root.join("runs/x/weights/last.safetensors");
    wait_for(&mut child, || last.is_file(), Duration::from_secs(300));
    child.kill().unwrap();
    child.wait().unwrap();
    synth::generate(&root.join("other"), &SynthSpec { nc: 3, ..spec(8, 5) }).unwrap();
    let out = Command::new(bin("yolo-train"))
        .args([
            "--model-path",
            "yolov8n.yaml",
            "--cfg-yaml",
            "cfg",
            "--data-yaml",
            "other/data-synth",
            "--run-dir",
            "runs/x",
        ])
        .env("KUBEYOLO_DATA_ROOT", root)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another dataset") && err.contains("last.safetensors"), "{err}");

    // imgsz not a multiple of the stride: rounded up with a warning, as ultralytics
    std::fs::write(root.join("cfg.yaml"), CFG.replace("imgsz: 64", "imgsz: 70").replace("epochs: 3", "epochs: 1"))
        .unwrap();
    let out = train(root, &["--set", "name=odd"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("imgsz") && err.contains("96"), "{err}");

    // batch -1 (AutoBatch) on the CPU: ultralytics' default 16 with a warning, recorded in args.yaml
    let out = train(root, &["--set", "name=auto", "--set", "batch=-1", "--set", "epochs=1"]);
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AutoBatch: intended for GPU devices, using default batch-size 16"), "{err}");
    let args = std::fs::read_to_string(root.join("runs/detect/auto/args.yaml")).unwrap();
    assert!(args.lines().any(|l| l == "batch: 16"), "{args}");
}

/// A training step killed (SIGKILL, a lost pod) after its first epoch and run again continues
/// the same MLflow run: one run, FINISHED, with every epoch's metrics once.
#[test]
fn resumed_training_continues_its_mlflow_run() {
    use kubeyolo_e2e::mlflow;
    let Some(uri) = mlflow::server("resumed_training_continues_its_mlflow_run") else { return };
    let experiment = format!("e2e-train-resume-{}", std::process::id());
    let tmp = root_with(48, CFG);
    let root = tmp.path();
    let cmd = || {
        let mut c = train_cmd(root, &["--run-dir", "runs/m"]);
        mlflow::track_into(&mut c, &uri, &experiment);
        c
    };
    let last = root.join("runs/m/weights/last.safetensors");
    let history = |id: &str| -> Vec<i64> {
        let h = mlflow::http(
            &uri,
            "GET",
            &format!("/api/2.0/mlflow/metrics/get-history?run_id={id}&metric_key=train/box_loss"),
            None,
        );
        let mut steps: Vec<i64> = h["metrics"]
            .as_array()
            .map(|a| a.iter().map(|m| m["step"].as_i64().unwrap_or(0)).collect())
            .unwrap_or_default();
        steps.sort();
        steps
    };
    let mut child = cmd().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(&mut child, || last.is_file(), Duration::from_secs(300));
    let state = kubeyolo::train::checkpoint::load(&last).unwrap().state.unwrap();
    assert!(!state.finished, "killed too late: the run had finished");
    let id = state.mlflow_run_id.clone().expect("the checkpoint must name the MLflow run");
    // the first epoch's metrics reach the server (a kill loses only records still in flight)
    wait_for(&mut child, || !history(&id).is_empty(), Duration::from_secs(60));
    child.kill().unwrap(); // SIGKILL: no chance to end the MLflow run
    child.wait().unwrap();

    let id_out = root.join("kfp/mlflow_run_id");
    let again = cmd().args(["--out-mlflow-run-id", id_out.to_str().unwrap()]).output().unwrap();
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(std::fs::read_to_string(&id_out).unwrap(), id, "the KFP output names the one run");
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(out.contains("Resuming training") && out.contains("mlflow: continuing run"), "{}", text(&again));

    let runs = mlflow::runs(&uri, &experiment);
    assert_eq!(runs.len(), 1, "a resumed step must not start a second run: {runs:?}");
    let run = &runs[0];
    assert_eq!(run["info"]["run_id"].as_str(), Some(id.as_str()));
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(history(&id), vec![1, 2, 3], "each epoch logged once, in the one run");
}

/// The library's run of `cfg` on a fresh root, with the test fault point that fails every batch
/// of more than `oom_above` images with the CUDA driver's out-of-memory error.
fn train_with_oom_above(
    oom_above: usize,
    cfg: &str,
) -> (tempfile::TempDir, kubeyolo::Result<kubeyolo::train::trainer::TrainOutcome>) {
    let tmp = root_with(16, cfg);
    let root = kubeyolo::root::DataRoot::new(tmp.path());
    let hyp = root.load_cfg("cfg").unwrap();
    let model = root.resolve_model("yolov8n.yaml").unwrap();
    let data = root.resolve_data("synth/data-synth").unwrap();
    let mut req = kubeyolo::train::trainer::TrainRequest::new(model, data, hyp, tmp.path().to_path_buf());
    req.simulate_out_of_memory_above = Some(oom_above);
    req.log_interval = Duration::ZERO;
    let out = kubeyolo::train::trainer::train(&req, &kubeyolo::track::Tracker::disabled());
    (tmp, out)
}

#[test]
fn out_of_memory_in_the_first_epoch_halves_the_batch_and_retries() {
    // as ultralytics 8.4: batch 8 → 4 → 2, the epoch restarted each time, and the run finishes
    // with the batch that fitted, recorded where a resume reads it
    let cfg = CFG.replace("epochs: 3", "epochs: 2");
    let (tmp, out) = train_with_oom_above(2, &cfg);
    let out = out.expect("two halvings are within the three retries");
    assert_eq!(out.epochs_completed, 2);
    let args = std::fs::read_to_string(out.save_dir.join("args.yaml")).unwrap();
    assert!(args.lines().any(|l| l == "batch: 2"), "{args}");
    let (_, rows) = csv(&out.save_dir.join("results.csv"));
    assert_eq!(rows.len(), 2, "one row per epoch: the restarted epoch is not counted twice");
    assert!(rows.iter().flatten().all(|v| v.is_finite()));
    let ck = kubeyolo::train::checkpoint::load(&out.last).unwrap();
    let stored = ck.meta.train_args["yaml"].as_str().unwrap().to_string();
    assert!(stored.lines().any(|l| l == "batch: 2"), "the checkpoint's args: {stored}");
    drop(tmp);

    // a fourth failure (8 → 4 → 2 → 1, still too big) is final, and says what to do
    let (_tmp, out) = train_with_oom_above(0, &cfg);
    let e = out.err().expect("out of memory even at batch 1");
    let msg = e.to_string();
    assert!(msg.contains("out of memory") && msg.contains("batch=1") && msg.contains("lower batch"), "{msg}");
}
