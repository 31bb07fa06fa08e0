//! Docker runner and the step images (`docker/build.sh`).
//!
//! Building images needs a Docker engine and the base image (docker/base.sh: debootstrap, a few
//! minutes the first time, cached afterwards), so the image test — verify to test, train for one
//! epoch on 8 images of 64 px — runs only with
//! `KUBEYOLO_DOCKER_TESTS=1` and otherwise prints "skipped: ...". The missing-image test needs
//! no engine at all: with no image (or no docker) every step must come out as missing.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

fn kubeyolo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubeyolo"))
}

fn summary(run_dir: &Path) -> Vec<(String, String, Value)> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["status"].as_str().unwrap().to_string(), s.clone()))
        .collect()
}

#[test]
fn docker_runner_reports_missing_images_and_pulls_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let o = kubeyolo()
        .args([
            "run",
            "-q",
            "--runner",
            "docker",
            "--image-prefix",
            "kubeyolo-no-such-registry.invalid/x",
            "--data-dir",
        ])
        .arg(dir.path())
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let steps = summary(&run_dir);
    assert_eq!(steps[0].1, "missing", "{:?}", steps[0]);
    assert!(steps[0].2["detail"].as_str().unwrap().contains("kubeyolo-no-such-registry.invalid/x/yolo-verify:dev"));
    for (name, st, _) in &steps {
        assert!(st == "missing" || st == "skipped", "{name}: {st}");
    }
}

#[test]
fn step_images_run_the_pipeline_with_data_at_slash_data() {
    if std::env::var("KUBEYOLO_DOCKER_TESTS").as_deref() != Ok("1") {
        println!("skipped: set KUBEYOLO_DOCKER_TESTS=1 to build the step images and run the docker runner");
        return;
    }
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubeyolo")).parent().unwrap();
    let profile = bin_dir.file_name().unwrap().to_str().unwrap();
    let tag = "kubeyolo-test";
    let st = Command::new(repo().join("docker/build.sh"))
        .args(["--profile", profile, "--no-cargo", "--tag", tag, "verify", "distribution", "plot", "train", "test"])
        .status()
        .expect("run docker/build.sh");
    assert!(st.success(), "docker/build.sh failed");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = kubeyolo()
        .args(["demo", "--prepare-only", "--images", "8", "--imgsz", "64", "--epochs", "1", "--dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let run_dir = data.join("pipeline-runs/docker-test");
    let o = kubeyolo()
        .args(["run", "-q", "--runner", "docker", "--tag", tag, "--set", "model_name=yolov8n.yaml", "--data-dir"])
        .arg(&data)
        .arg("--run-dir")
        .arg(&run_dir)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{text}");
    let steps = summary(&run_dir);
    for (i, name) in ["verify", "distribution", "plot", "train", "test"].iter().enumerate() {
        assert_eq!((steps[i].0.as_str(), steps[i].1.as_str()), (*name, "ok"), "{name} in docker:\n{text}");
    }
    // Train's run folder is keyed by the run id (the run folder's name), inside the volume.
    assert_eq!(steps[3].2["outputs"]["best_pt"], "/data/runs/detect/docker-test/weights/best.safetensors");
    assert!(data.join("runs/detect/docker-test/weights/best.safetensors").is_file());
    assert!(steps[4].2["metrics"]["test_metrics"]["mAP50-95"].is_number(), "{}", steps[4].2);
    // Values passed between containers are container paths, as on the cluster.
    assert_eq!(steps[0].2["outputs"]["data_yaml"], "/data/data-custom.yaml");
    let names = steps[1].2["outputs"]["cls_names_json"].as_str().unwrap();
    assert!(names.contains("circle"), "{names}");
    // The entrypoint tolerates a repeated command (kfp.local DockerRunner puts it into CMD).
    let o = Command::new("docker")
        .args(["run", "--rm", &format!("kubeyolo/yolo-verify:{tag}"), "yolo-verify", "--version"])
        .output()
        .unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("yolo-verify"));
}
