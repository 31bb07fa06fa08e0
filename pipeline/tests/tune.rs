//! `kubeyolo run` with tune workers, end to end with the real step binaries built beside
//! `kubeyolo` (`cargo test --workspace` builds them) on tiny data (8 images of 64 px, 1 epoch):
//! verify → … → train → tune with 2 workers and 3 iterations. The two `yolo-tune --worker i`
//! processes run at the same time (their intervals in summary.json overlap), share one results
//! folder keyed by the run, and together finish exactly the 3 iterations, none twice.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn two_tune_workers_share_one_results_folder_for_real() {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubeyolo")).parent().unwrap();
    for s in ["verify", "distribution", "plot", "train", "test", "tune"] {
        assert!(
            bin_dir.join(format!("yolo-{s}")).is_file(),
            "yolo-{s} is not built beside kubeyolo: run `cargo build -p yolo-{s}` (cargo test --workspace builds it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let run_dir = dir.path().join("run-7");
    let o = Command::new(env!("CARGO_BIN_EXE_kubeyolo"))
        .args(["demo", "-q", "--no-build", "--images", "8", "--imgsz", "64", "--epochs", "1", "--dir"])
        .arg(&demo)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--set", "bool_tune=true", "--tune-workers", "2", "--tune-iterations", "3", "--tune-epochs", "1"])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "run failed:\n{text}");
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    let tune = summary["steps"].as_array().unwrap().iter().find(|s| s["step"] == "tune").unwrap();
    assert_eq!(tune["status"], "ok", "{tune}\n{text}");

    // Both workers ran, at the same time, each told its index.
    let workers = tune["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2, "{tune}");
    let (s0, e0) = (workers[0]["started"].as_f64().unwrap(), workers[0]["ended"].as_f64().unwrap());
    let (s1, e1) = (workers[1]["started"].as_f64().unwrap(), workers[1]["ended"].as_f64().unwrap());
    assert!(s0 < e1 && s1 < e0, "the workers did not overlap: {workers:?}");
    for (i, w) in workers.iter().enumerate() {
        let log = std::fs::read_to_string(w["log"].as_str().unwrap()).unwrap();
        assert!(!log.is_empty(), "worker {i} logged nothing");
    }

    // One results folder, keyed by the run: exactly iterations 1..=3, none twice.
    let tune_dir = std::fs::canonicalize(&demo).unwrap().join("runs/detect/tune-run-7");
    let results = std::fs::read_to_string(tune_dir.join("tune_results.ndjson"))
        .unwrap_or_else(|e| panic!("{}: {e}\n{text}", tune_dir.display()));
    let iterations: Vec<u64> =
        results.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["iteration"].as_u64().unwrap()).collect();
    assert_eq!(iterations.len(), 3, "{results}");
    assert_eq!(iterations.iter().copied().collect::<BTreeSet<_>>(), BTreeSet::from([1, 2, 3]), "{results}");
    let claims = std::fs::read_to_string(tune_dir.join("tune_claims.ndjson")).unwrap();
    let by: BTreeSet<u64> =
        claims.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["worker"].as_u64().unwrap()).collect();
    assert_eq!(by, BTreeSet::from([0, 1]), "both workers claimed iterations:\n{claims}");

    // The step's outputs (the last finisher's): the best hyper-parameters and weights exist.
    for out in ["best_hyp", "best_pt"] {
        let p = tune["outputs"][out].as_str().unwrap_or_else(|| panic!("no {out}: {tune}"));
        assert!(Path::new(p).is_file(), "{out} = {p}");
        assert!(Path::new(p).starts_with(&tune_dir), "{out} = {p} is outside {}", tune_dir.display());
    }
}
