//! Tracking when things go wrong: the server is absent when the step starts, dies mid-run and
//! comes back, answers slowly, or the pod gets SIGTERM. Nothing logged may be lost, and the
//! step must neither fail nor be slowed.
//!
//! The kill/restart test runs its own MLflow server (own port, own sqlite file) so the shared
//! one stays undisturbed; it needs `KUBEYOLO_TEST_MLFLOW_BIN` (printed by scripts/services.sh).

mod track_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubeyolo::track::engine::replay_dir;
use kubeyolo::track::{spool, Status, Tracker};
use track_support::{config, free_port, mlflow_uri, unique, PrivateServer, Rest};

fn spool_files(dir: &Path) -> Vec<std::path::PathBuf> {
    spool::list(dir, true)
}

#[test]
fn server_absent_at_start_spools_then_replay_loses_nothing() {
    let Some(shared) = mlflow_uri("server_absent_at_start_spools_then_replay_loses_nothing") else { return };
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let exp = unique("absent");
    let dead = format!("http://127.0.0.1:{}", free_port());

    let weights = dir.path().join("best.pt");
    std::fs::write(&weights, track_support::bytes(50_000, 7)).unwrap();
    let mut cfg = config(&dead, &exp, &spool_dir);
    cfg.retry_budget = Duration::from_secs(1);
    let t0 = Instant::now();
    let tracker = Tracker::start_with(cfg, "train", dir.path());
    tracker.log_params(&[("epochs", "20"), ("batch", "16")]);
    for e in 0..20i64 {
        tracker.log_metrics(&[("train/box_loss", 2.0 / (e + 1) as f64), ("metrics/mAP50(B)", e as f64 / 20.0)], e);
    }
    tracker.set_tag("note", "offline");
    tracker.log_artifact(&weights, "weights");
    let child = tracker.child("iteration-0");
    child.log_metric("fitness", 0.5, 0);
    child.finish(Status::Finished);
    let logging = t0.elapsed();
    let logged_by = kubeyolo::track::records::now_ms();
    let summary = tracker.finish(Status::Finished);
    let total = t0.elapsed();
    println!("server absent: logging took {logging:?}, finish returned after {total:?}: {summary:?}");
    assert!(logging < Duration::from_millis(500), "logging must not wait for the server: {logging:?}");
    assert!(total < Duration::from_secs(15), "finish waits a bounded time: {total:?}");
    assert_eq!(summary.delivered, 0);
    assert_eq!(summary.dropped, 0);
    assert!(summary.spooled >= 8, "{summary:?}");
    let file = summary.spool_file.clone().expect("spool file");
    assert!(file.extension().is_some_and(|e| e == "jsonl"), "{}", file.display());
    // The step replaces its output after logging: the spool kept the logged bytes.
    std::fs::remove_file(&weights).unwrap();
    std::fs::write(&weights, b"overwritten").unwrap();

    // Replay into the shared server (the file names another URI: replay "any server").
    let rest = Rest::new(&shared);
    let never = || false;
    let s = rest.block(replay_dir(&rest.client, &spool_dir, false, true, Duration::from_secs(10), &never, false));
    assert_eq!((s.files_done, s.files_left.len(), s.dropped), (1, 0, 0), "{s:?}");
    assert!(spool_files(&spool_dir).is_empty(), "delivered spool files are deleted");
    let leftovers: Vec<_> = std::fs::read_dir(spool_dir.join("files")).map(|r| r.collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "artifact copies are deleted once uploaded");

    let run = rest.run_named(&exp, "train");
    let id = run["info"]["run_id"].as_str().unwrap().to_string();
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(rest.history(&id, "train/box_loss").len(), 20);
    let map = rest.history(&id, "metrics/mAP50B");
    assert_eq!(map.iter().map(|x| x.0).collect::<Vec<_>>(), (0..20).collect::<Vec<_>>());
    assert_eq!(Rest::value_of(&run, "params", "epochs").as_deref(), Some("20"));
    assert_eq!(Rest::value_of(&run, "tags", "note").as_deref(), Some("offline"));
    let art = run["info"]["artifact_uri"].as_str().unwrap();
    assert_eq!(rest.download(art, "weights/best.pt"), track_support::bytes(50_000, 7));
    let child = rest.run_named(&exp, "iteration-0");
    assert_eq!(Rest::value_of(&child, "tags", "mlflow.parentRunId").as_deref(), Some(id.as_str()));
    assert_eq!(child["info"]["status"], "FINISHED");
    // Metric timestamps are those of the moment of logging, not of the replay.
    let hist = rest.get("api/2.0/mlflow/metrics/get-history", &[("run_id", &id), ("metric_key", "train/box_loss")]);
    let ts = hist["metrics"][0]["timestamp"].as_i64().unwrap();
    assert!(ts <= logged_by, "timestamp {ts} is from the replay, not from logging ({logged_by})");
}

#[test]
fn server_killed_mid_run_and_restarted_loses_nothing() {
    let test = "server_killed_mid_run_and_restarted_loses_nothing";
    if mlflow_uri(test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(mut server) = PrivateServer::new(test, dir.path()) else { return };
    server.start();
    let uri = server.uri();
    let rest = Rest::new(&uri);
    let spool_dir = dir.path().join("spool");
    let exp = unique("restart");
    let mut cfg = config(&uri, &exp, &spool_dir);
    cfg.retry_budget = Duration::from_secs(1);

    // Phase A: the server dies mid-run and is back before the step ends.
    let tracker = Tracker::start_with(cfg.clone(), "train", dir.path());
    for e in 0..10i64 {
        tracker.log_metric("loss", e as f64, e);
    }
    assert!(tracker.flush(Duration::from_secs(30)), "first epochs delivered");
    server.kill();
    let t0 = Instant::now();
    for e in 10..20i64 {
        tracker.log_metric("loss", e as f64, e);
        std::thread::sleep(Duration::from_millis(150)); // an epoch of "training"
    }
    let logging = t0.elapsed();
    assert!(logging < Duration::from_millis(1500 + 500), "logging stalled while the server was down: {logging:?}");
    server.start();
    for e in 20..30i64 {
        tracker.log_metric("loss", e as f64, e);
    }
    let summary = tracker.finish(Status::Finished);
    println!("phase A: {summary:?}");
    assert_eq!((summary.dropped, summary.spooled), (0, 0), "{summary:?}");
    let run = rest.run_named(&exp, "train");
    let id = run["info"]["run_id"].as_str().unwrap();
    assert_eq!(run["info"]["status"], "FINISHED");
    let h = rest.history(id, "loss");
    assert_eq!(h.iter().map(|x| x.0).collect::<Vec<_>>(), (0..30).collect::<Vec<_>>(), "no metric lost");
    assert!(spool_files(&spool_dir).is_empty(), "spooled records were taken back: {:?}", spool_files(&spool_dir));

    // Phase B: the server is down when the step ends; the next step's tracker replays.
    let mut cfg_b = cfg.clone();
    cfg_b.run_name = Some("second".into());
    let tracker = Tracker::start_with(cfg_b, "train", dir.path());
    for e in 0..5i64 {
        tracker.log_metric("loss", e as f64, e);
    }
    assert!(tracker.flush(Duration::from_secs(30)));
    server.kill();
    for e in 5..10i64 {
        tracker.log_metric("loss", e as f64, e);
    }
    let summary = tracker.finish(Status::Finished);
    assert!(summary.spooled > 0 && summary.dropped == 0, "{summary:?}");
    assert_eq!(spool_files(&spool_dir).len(), 1);
    server.start();
    let mut cfg_c = cfg.clone();
    cfg_c.run_name = Some("third".into());
    let next = Tracker::start_with(cfg_c, "test", dir.path());
    next.log_metric("x", 1.0, 0);
    let s = next.finish(Status::Finished);
    assert_eq!(s.dropped, 0);
    let second = rest.run_named(&exp, "second");
    let id = second["info"]["run_id"].as_str().unwrap();
    assert_eq!(rest.history(id, "loss").iter().map(|x| x.0).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    assert_eq!(second["info"]["status"], "FINISHED");
    assert!(spool_files(&spool_dir).is_empty(), "replayed on the next start: {:?}", spool_files(&spool_dir));
    assert_eq!(rest.run_named(&exp, "third")["info"]["status"], "FINISHED");
}

/// A fake tracking server that answers every request after `delay`, counting metrics.
struct SlowServer {
    port: u16,
    metrics: Arc<AtomicUsize>,
    statuses: Arc<Mutex<Vec<String>>>,
}

impl SlowServer {
    fn start(delay: Duration) -> SlowServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let metrics = Arc::new(AtomicUsize::new(0));
        let statuses = Arc::new(Mutex::new(Vec::new()));
        let (m, st) = (metrics.clone(), statuses.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (m, st) = (m.clone(), st.clone());
                std::thread::spawn(move || serve(conn, delay, &m, &st));
            }
        });
        SlowServer { port, metrics, statuses }
    }
}

fn serve(conn: TcpStream, delay: Duration, metrics: &AtomicUsize, statuses: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
        let answer = if path.contains("experiments/get-by-name") {
            r#"{"experiment":{"experiment_id":"1","lifecycle_stage":"active"}}"#.to_string()
        } else if path.contains("runs/create") {
            r#"{"run":{"info":{"run_id":"f00d","experiment_id":"1","artifact_uri":"mlflow-artifacts:/1/f00d/artifacts","status":"RUNNING"}}}"#.to_string()
        } else if path.contains("runs/log-batch") {
            metrics.fetch_add(json["metrics"].as_array().map_or(0, |a| a.len()), Ordering::SeqCst);
            "{}".to_string()
        } else if path.contains("runs/update") {
            statuses.lock().unwrap().push(json["status"].as_str().unwrap_or("").to_string());
            "{}".to_string()
        } else {
            "{}".to_string()
        };
        std::thread::sleep(delay);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

#[test]
fn slow_server_does_not_slow_training() {
    // No real server needed: a local one that takes 400 ms per answer.
    let delay = Duration::from_millis(400);
    let server = SlowServer::start(delay);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&format!("http://127.0.0.1:{}", server.port), "slow", &dir.path().join("spool"));
    let tracker = Tracker::start_with(cfg, "train", dir.path());

    // A "training loop": 100 epochs x 50 metrics, 2 ms of compute per epoch. Only the time
    // spent inside the tracking calls counts (sleeps overshoot on a loaded CI machine).
    let compute = Duration::from_millis(2);
    let t0 = Instant::now();
    let mut in_tracking = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    for epoch in 0..100i64 {
        std::thread::sleep(compute);
        let row: Vec<(String, f64)> = (0..50).map(|k| (format!("m{k}"), epoch as f64 + k as f64)).collect();
        let t = Instant::now();
        tracker.log_metrics(&row, epoch);
        let d = t.elapsed();
        in_tracking += d;
        slowest = slowest.max(d);
    }
    let looped = t0.elapsed();
    let summary = tracker.finish(Status::Finished);
    let total = t0.elapsed();
    println!(
        "slow server ({delay:?}/answer): loop {looped:?}, {in_tracking:?} inside 100 log_metrics calls (slowest {slowest:?}) for 5000 points; finish after {total:?}: {summary:?}"
    );
    // Synchronous logging would spend >= 100 x 400 ms here; the whole loop gets one answer's time.
    assert!(in_tracking < delay, "tracking calls took {in_tracking:?} in total (one server answer takes {delay:?})");
    assert_eq!(server.metrics.load(Ordering::SeqCst), 5000, "every point arrives, in batches");
    assert_eq!(*server.statuses.lock().unwrap(), vec!["FINISHED".to_string()]);
}

/// Child side of `sigterm_marks_the_run_killed` (runs only when that test starts it).
#[test]
#[ignore = "started by sigterm_marks_the_run_killed"]
fn sigterm_child() {
    let Ok(spec) = std::env::var("KUBEYOLO_SIGTERM_CHILD") else { return };
    let mut parts = spec.splitn(3, '|');
    let (uri, exp, spool) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let mut cfg = config(uri, exp, Path::new(spool));
    cfg.handle_signals = true;
    let tracker = Tracker::start_with(cfg, "train", Path::new(spool));
    tracker.log_metric("loss", 1.0, 0);
    assert!(tracker.flush(Duration::from_secs(30)));
    tracker.log_metric("loss", 0.5, 1); // pending when the signal arrives, must still arrive
    println!("READY");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    panic!("SIGTERM did not end the process");
}

#[test]
fn sigterm_marks_the_run_killed() {
    let Some(uri) = mlflow_uri("sigterm_marks_the_run_killed") else { return };
    let dir = tempfile::tempdir().unwrap();
    let exp = unique("sigterm");
    let spec = format!("{uri}|{exp}|{}", dir.path().display());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigterm_child", "--include-ignored", "--nocapture", "--test-threads", "1"])
        .env("KUBEYOLO_SIGTERM_CHILD", spec)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.by_ref().map_while(Result::ok).any(|l| l.contains("READY"));
    assert!(ready, "child did not get ready");
    let t0 = Instant::now();
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let status = child.wait().unwrap();
    println!("SIGTERM → exit {status:?} after {:?}", t0.elapsed());
    assert_eq!(status.code(), Some(143), "exit code 128+15");
    assert!(t0.elapsed() < Duration::from_secs(15));
    let rest = Rest::new(&uri);
    let run = rest.run_named(&exp, "train");
    assert_eq!(run["info"]["status"], "KILLED");
    let id = run["info"]["run_id"].as_str().unwrap();
    assert_eq!(rest.history(id, "loss"), vec![(0, 1.0), (1, 0.5)]);
}
