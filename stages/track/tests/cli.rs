//! `yolo-track` against the real MLflow server of the test run (`scripts/services.sh start`):
//! `check` tells reachable from unreachable, `replay` delivers a spool a step left behind.

use std::process::Command;
use std::time::Duration;

use kubeyolo::track::client::Client;
use kubeyolo::track::{Status, Tracker, TrackingConfig};

const BIN: &str = env!("CARGO_BIN_EXE_yolo-track");

fn shared_uri(test: &str) -> Option<String> {
    match std::env::var("KUBEYOLO_TEST_MLFLOW_URI").ok().filter(|v| !v.is_empty()) {
        Some(v) => Some(v),
        None if std::env::var("KUBEYOLO_REQUIRE_SERVICES").as_deref() == Ok("1") => {
            panic!("{test}: KUBEYOLO_TEST_MLFLOW_URI is not set but KUBEYOLO_REQUIRE_SERVICES=1")
        }
        None => {
            println!(
                "skipped: {test}: KUBEYOLO_TEST_MLFLOW_URI is not set (run `eval \"$(scripts/services.sh start)\"`)"
            );
            None
        }
    }
}

fn dead_uri() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}

#[test]
fn check_tells_reachable_from_unreachable() {
    let out = Command::new(BIN)
        .args(["check", "--mlflow-uri", &dead_uri()])
        .env_remove("MLFLOW_TRACKING_URI")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7), "unreachable → network exit code");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    let out = Command::new(BIN).arg("check").env_remove("MLFLOW_TRACKING_URI").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "no server configured → usage exit code");
    let Some(uri) = shared_uri("check_tells_reachable_from_unreachable") else { return };
    let out = Command::new(BIN).arg("check").env("MLFLOW_TRACKING_URI", &uri).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("reachable"));
}

#[test]
fn replay_delivers_a_spool_left_by_a_step() {
    let Some(uri) = shared_uri("replay_delivers_a_spool_left_by_a_step") else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join(".kubeyolo/mlflow-spool");
    let exp = format!("cli-replay-{}-{:x}", std::process::id(), rand_u32());
    let mut cfg = TrackingConfig::new(&dead_uri());
    cfg.experiment_name = exp.clone();
    cfg.retry_budget = Duration::from_millis(500);
    cfg.handle_signals = false;
    let t = Tracker::start_with(cfg, "distribution", dir.path());
    t.log_params(&[("classes", "80")]);
    for i in 0..5 {
        t.log_metric("instances", i as f64, i);
    }
    let s = t.finish(Status::Finished);
    assert!(s.spooled > 0 && s.spool_file.is_some(), "{s:?}");

    // Written for another URI: left alone without --any-server.
    let out =
        Command::new(BIN).args(["replay", "--root"]).arg(dir.path()).env("MLFLOW_TRACKING_URI", &uri).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("another server"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = Command::new(BIN)
        .args(["replay", "--any-server", "--root"])
        .arg(dir.path())
        .env("MLFLOW_TRACKING_URI", &uri)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed 1 file(s)"));
    assert!(kubeyolo::track::spool::list(&spool, true).is_empty());

    let client = Client::new(&TrackingConfig::new(&uri)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let exp_id = rt.block_on(client.experiment_id(&exp)).unwrap();
    let j = rt
        .block_on(client.post_json("api/2.0/mlflow/runs/search", &serde_json::json!({"experiment_ids": [exp_id]})))
        .unwrap();
    let run = &j["runs"][0];
    assert_eq!(run["info"]["status"], "FINISHED");
    let id = run["info"]["run_id"].as_str().unwrap();
    let h = rt
        .block_on(client.get_json("api/2.0/mlflow/metrics/get-history", &[("run_id", id), ("metric_key", "instances")]))
        .unwrap();
    assert_eq!(h["metrics"].as_array().unwrap().len(), 5);
}

fn rand_u32() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
}
