//! Tracking against a real MLflow server (`scripts/services.sh start`): everything logged
//! through kubeyolo is read back through the REST API — params, full metric histories, tags,
//! artifacts byte for byte (proxy and S3), nested runs, attaching to an existing run, and a
//! rejected entry that must not cost the rest of its batch.

mod track_support;

use std::time::Duration;

use kubeyolo::track::{Status, Tracker};
use serde_json::json;
use track_support::{config, mlflow_uri, s3_config, unique, Rest};

#[test]
fn params_metrics_tags_and_artifacts_read_back_exactly() {
    let Some(uri) = mlflow_uri("params_metrics_tags_and_artifacts_read_back_exactly") else { return };
    let dir = tempfile::tempdir().unwrap();
    let exp = unique("roundtrip");
    let rest = Rest::new(&uri);

    // Artifacts: a binary file, a name with a space and parentheses, a folder tree.
    let weights = dir.path().join("best.pt");
    let weights_bytes = track_support::bytes(300_000, 1);
    std::fs::write(&weights, &weights_bytes).unwrap();
    let odd = dir.path().join("results (1).csv");
    std::fs::write(&odd, b"epoch,loss\n0,1.5\n").unwrap();
    let plots = dir.path().join("plots");
    std::fs::create_dir_all(plots.join("val")).unwrap();
    std::fs::write(plots.join("PR_curve.png"), track_support::bytes(5000, 2)).unwrap();
    std::fs::write(plots.join("val/batch0.jpg"), track_support::bytes(7000, 3)).unwrap();

    let tracker = Tracker::start_with(config(&uri, &exp, &dir.path().join("spool")), "train", dir.path());
    assert!(tracker.is_enabled());
    let long = "x".repeat(7000);
    tracker.log_params(&[("epochs", "3"), ("imgsz", "640"), ("model", "yolov8n.yaml"), ("names", long.as_str())]);
    tracker.log_param("lr0", 0.01);
    for epoch in 0..3i64 {
        let e = epoch as f64;
        tracker.log_metrics(
            &[
                ("train/box_loss", 1.5 - 0.1 * e),
                ("metrics/mAP50(B)", 0.2 + 0.1 * e),
                ("metrics/mAP50-95(B)", 0.1 + 0.05 * e),
            ],
            epoch,
        );
    }
    tracker.log_metric("odd", f64::NAN, 0);
    tracker.log_metric("odd", 2.0, 1);
    // More points than one log-batch may carry: the history must still be complete.
    for step in 0..2500i64 {
        tracker.log_metric("lr/pg0", step as f64 * 1e-4, step);
    }
    tracker.set_tag("dataset", "coco8");
    tracker.log_artifact(&weights, "weights");
    tracker.log_artifact(&odd, "");
    tracker.log_artifacts(&plots, "plots");
    let summary = tracker.finish(Status::Finished);
    assert_eq!(summary.dropped, 0, "{summary:?}");
    assert_eq!(summary.spooled, 0, "{summary:?}");

    let run = rest.run_named(&exp, "train");
    let run_id = run["info"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(run["info"]["status"], "FINISHED");
    assert!(run["info"]["end_time"].as_i64().unwrap_or(0) > 0);

    let params = Rest::pairs(&run, "params");
    let p = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(p("epochs").as_deref(), Some("3"));
    assert_eq!(p("imgsz").as_deref(), Some("640"));
    assert_eq!(p("model").as_deref(), Some("yolov8n.yaml"));
    assert_eq!(p("lr0").as_deref(), Some("0.01"));
    assert_eq!(p("names").map(|v| v.len()), Some(6000), "long params are truncated to 6000 characters");

    assert_eq!(rest.history(&run_id, "train/box_loss"), vec![(0, 1.5), (1, 1.4), (2, 1.3)]);
    assert_eq!(rest.history(&run_id, "metrics/mAP50B").iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(rest.history(&run_id, "metrics/mAP50-95B").len(), 3);
    let odd_h = rest.history(&run_id, "odd");
    assert_eq!(odd_h.len(), 2);
    assert!(odd_h[0].1.is_nan(), "NaN must be stored as NaN, got {:?}", odd_h[0]);
    let lr = rest.history(&run_id, "lr/pg0");
    assert_eq!(lr.len(), 2500, "every point of a long history arrives");
    assert!(lr.iter().enumerate().all(|(i, (s, v))| *s == i as i64 && (*v - i as f64 * 1e-4).abs() < 1e-12));

    let tags = Rest::pairs(&run, "tags");
    let t = |k: &str| tags.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(t("dataset").as_deref(), Some("coco8"));
    assert_eq!(t("kubeyolo.step").as_deref(), Some("train"));
    assert_eq!(t("kubeyolo.version").as_deref(), Some(kubeyolo::VERSION));
    assert_eq!(t("mlflow.source.name").as_deref(), Some("kubeyolo/yolo-train"));
    assert_eq!(t("mlflow.source.type").as_deref(), Some("JOB"));
    assert_eq!(t("mlflow.runName").as_deref(), Some("train"));

    let uri_a = run["info"]["artifact_uri"].as_str().unwrap().to_string();
    assert!(uri_a.starts_with("mlflow-artifacts:"), "{uri_a}");
    assert_eq!(rest.download(&uri_a, "weights/best.pt"), weights_bytes);
    assert_eq!(rest.download(&uri_a, "results (1).csv"), b"epoch,loss\n0,1.5\n");
    assert_eq!(rest.download(&uri_a, "plots/PR_curve.png"), track_support::bytes(5000, 2));
    assert_eq!(rest.download(&uri_a, "plots/val/batch0.jpg"), track_support::bytes(7000, 3));
    // The tracking API lists them where the MLflow UI looks.
    let listed = rest.get("api/2.0/mlflow/artifacts/list", &[("run_id", &run_id), ("path", "plots")]);
    let mut names: Vec<String> =
        listed["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["plots/PR_curve.png", "plots/val"]);
}

#[test]
fn nested_runs_point_at_their_parent() {
    let Some(uri) = mlflow_uri("nested_runs_point_at_their_parent") else { return };
    let dir = tempfile::tempdir().unwrap();
    let exp = unique("nested");
    let rest = Rest::new(&uri);
    let tracker = Tracker::start_with(config(&uri, &exp, &dir.path().join("spool")), "tune", dir.path());
    for i in 0..3i64 {
        let child = tracker.child(&format!("iteration-{i}"));
        child.log_params(&[("lr0", format!("0.0{}", i + 1))]);
        child.log_metric("fitness", 0.1 * i as f64, 0);
        if i < 2 {
            child.finish(Status::Finished);
        } else {
            // Dropped unfinished: an early return → FAILED.
            drop(child);
        }
    }
    let open_child = tracker.child("left-open");
    let parent_id = tracker.run_id(Duration::from_secs(30)).expect("parent run id");
    tracker.log_metric("best_fitness", 0.2, 0);
    let summary = tracker.finish(Status::Finished);
    assert_eq!(summary.dropped, 0);
    drop(open_child); // after the parent: ended with the parent's status already

    for i in 0..3 {
        let run = rest.run_named(&exp, &format!("iteration-{i}"));
        assert_eq!(Rest::value_of(&run, "tags", "mlflow.parentRunId").as_deref(), Some(parent_id.as_str()));
        assert_eq!(run["info"]["status"], if i < 2 { "FINISHED" } else { "FAILED" });
        let id = run["info"]["run_id"].as_str().unwrap();
        assert_eq!(rest.history(id, "fitness"), vec![(0, 0.1 * i as f64)]);
    }
    let left = rest.run_named(&exp, "left-open");
    assert_eq!(left["info"]["status"], "FINISHED", "open children end with the parent's status");
    let parent = rest.run(&parent_id);
    assert_eq!(parent["info"]["status"], "FINISHED");
    assert!(Rest::value_of(&parent, "tags", "mlflow.parentRunId").is_none());
}

#[test]
fn attaching_to_an_existing_run_and_isolating_a_rejected_param() {
    let Some(uri) = mlflow_uri("attaching_to_an_existing_run_and_isolating_a_rejected_param") else { return };
    let dir = tempfile::tempdir().unwrap();
    let exp = unique("attach");
    let rest = Rest::new(&uri);
    let exp_id = rest.experiment_id(&exp);
    let created = rest
        .post(
            "api/2.0/mlflow/runs/create",
            json!({"experiment_id": exp_id, "start_time": 1_700_000_000_000i64, "run_name": "outer"}),
        )
        .unwrap();
    let run_id = created["run"]["info"]["run_id"].as_str().unwrap().to_string();
    rest.post("api/2.0/mlflow/runs/log-batch", json!({"run_id": run_id, "params": [{"key": "epochs", "value": "3"}]}))
        .unwrap();

    let mut cfg = config(&uri, &exp, &dir.path().join("spool"));
    cfg.run_id = Some(run_id.clone());
    let tracker = Tracker::start_with(cfg, "test", dir.path());
    // One batch: the server refuses it whole because `epochs` changes; the metrics and the
    // other param must still arrive, only `epochs=5` is dropped.
    tracker.log_params(&[("epochs", "5"), ("conf", "0.25")]);
    tracker.log_metrics(&[("metrics/precision(B)", 0.5), ("metrics/recall(B)", 0.25)], 0);
    assert_eq!(tracker.run_id(Duration::from_secs(30)).as_deref(), Some(run_id.as_str()));
    let summary = tracker.finish(Status::Finished);
    assert_eq!(summary.dropped, 1, "only the changed param is dropped: {summary:?}");

    assert_eq!(rest.runs_named(&exp, "test").len(), 0, "no new run when attaching");
    let run = rest.run(&run_id);
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(Rest::value_of(&run, "params", "epochs").as_deref(), Some("3"));
    assert_eq!(Rest::value_of(&run, "params", "conf").as_deref(), Some("0.25"));
    assert_eq!(rest.history(&run_id, "metrics/precisionB"), vec![(0, 0.5)]);
    assert_eq!(rest.history(&run_id, "metrics/recallB"), vec![(0, 0.25)]);
    assert_eq!(Rest::value_of(&run, "tags", "kubeyolo.step").as_deref(), Some("test"));
}

#[test]
fn s3_artifact_root_goes_to_the_s3_store() {
    let Some(uri) = mlflow_uri("s3_artifact_root_goes_to_the_s3_store") else { return };
    let Some((s3, bucket)) = s3_config("s3_artifact_root_goes_to_the_s3_store") else { return };
    let dir = tempfile::tempdir().unwrap();
    let exp = unique("s3");
    let rest = Rest::with_s3(&uri, s3.clone());
    let root = format!("s3://{bucket}/{exp}");
    rest.post("api/2.0/mlflow/experiments/create", json!({"name": exp, "artifact_location": root})).unwrap();

    let file = dir.path().join("last.pt");
    let content = track_support::bytes(200_000, 9);
    std::fs::write(&file, &content).unwrap();
    let mut cfg = config(&uri, &exp, &dir.path().join("spool"));
    cfg.s3 = s3;
    let tracker = Tracker::start_with(cfg, "train", dir.path());
    tracker.log_artifact(&file, "weights");
    tracker.log_metric("loss", 0.5, 0);
    let summary = tracker.finish(Status::Finished);
    assert_eq!(summary.dropped, 0, "{summary:?}");

    let run = rest.run_named(&exp, "train");
    let art = run["info"]["artifact_uri"].as_str().unwrap().to_string();
    assert!(art.starts_with(&format!("s3://{bucket}/{exp}/")), "{art}");
    // Straight from the S3 store …
    assert_eq!(rest.download(&art, "weights/last.pt"), content);
    // … and as the MLflow server (which reads the same store) lists it.
    let run_id = run["info"]["run_id"].as_str().unwrap();
    let listed = rest.get("api/2.0/mlflow/artifacts/list", &[("run_id", run_id), ("path", "weights")]);
    let files = listed["files"].as_array().cloned().unwrap_or_default();
    assert_eq!(files.len(), 1, "{listed}");
    assert_eq!(files[0]["path"], "weights/last.pt");
    assert_eq!(files[0]["file_size"].as_i64(), Some(200_000));
}

#[test]
fn without_a_tracking_uri_nothing_is_sent_and_nothing_breaks() {
    let dir = tempfile::tempdir().unwrap();
    let args = kubeyolo::track::TrackingArgs::default();
    let tracker = Tracker::start(&args, "plot", dir.path());
    assert!(!tracker.is_enabled());
    tracker.log_params(&[("a", "b")]);
    tracker.log_metric("m", 1.0, 0);
    tracker.log_artifact(dir.path(), "x");
    let child = tracker.child("c");
    assert!(!child.is_enabled());
    assert!(tracker.run_id(Duration::from_millis(10)).is_none());
    let s = tracker.finish(Status::Finished);
    assert_eq!((s.delivered, s.dropped, s.spooled), (0, 0, 0));
    assert!(!dir.path().join(".kubeyolo").exists(), "nothing written when tracking is off");
}
