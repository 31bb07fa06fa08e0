//! MLflow tracking: every step logs params, metrics, tags and artifacts to an MLflow tracking
//! server — without ever slowing, stalling or failing the step.
//!
//! # Use from a step
//! ```no_run
//! use kubeyolo::track::{Status, Tracker, TrackingArgs};
//! # let args = TrackingArgs::default();          // `#[command(flatten)] tracking: TrackingArgs`
//! # let data_root = std::path::Path::new("/data");
//! let tracker = Tracker::start(&args, "train", data_root); // never fails; off without a URI
//! tracker.log_params(&[("epochs", "3"), ("imgsz", "640")]);
//! for epoch in 0..3 {
//!     tracker.log_metrics(&[("train/box_loss", 1.5), ("metrics/mAP50(B)", 0.4)], epoch);
//! }
//! tracker.set_tag("dataset", "coco8");
//! tracker.log_artifact(std::path::Path::new("/data/runs/train/results.csv"), "");
//! tracker.log_artifacts(std::path::Path::new("/data/runs/train/plots"), "plots");
//! // Nested runs (the tuner): one child per iteration, `mlflow.parentRunId` set for you.
//! let child = tracker.child("iteration-1");
//! child.log_metric("fitness", 0.31, 0);
//! child.finish(Status::Finished);
//! let result: kubeyolo::Result<()> = Ok(());
//! tracker.finish_with(&result); // FINISHED on Ok, FAILED on Err; waits (bounded) for delivery
//! ```
//!
//! # Behaviour
//! - **Configuration** ([`config`]): MLflow's own variables (`MLFLOW_TRACKING_URI`,
//!   `MLFLOW_EXPERIMENT_NAME`, `MLFLOW_RUN_ID`, `MLFLOW_TRACKING_USERNAME`/`PASSWORD`,
//!   `MLFLOW_TRACKING_TOKEN`, `MLFLOW_TRACKING_INSECURE_TLS`, `MLFLOW_S3_ENDPOINT_URL` + AWS keys)
//!   and the `--mlflow-*` flags of [`TrackingArgs`]. No tracking URI: every call is a no-op.
//! - **Non-blocking** ([`logger`]): calls queue records for a background thread and return at
//!   once; only tens of thousands of records pending on a slow server make a call wait.
//! - **Batching and server rules** ([`engine`], [`names`]): records are merged into `log-batch`
//!   calls within the server's limits; keys are sanitised (`metrics/mAP50(B)` → `metrics/mAP50B`),
//!   params over 6000 characters are truncated with a warning, NaN/±inf are sent the way MLflow
//!   stores them; one invalid entry never costs the rest of its batch.
//! - **Never lose a record** ([`spool`]): connection errors, 5xx and 429 are retried with
//!   exponential backoff; when the server stays unreachable (`--mlflow-retry-secs`, 30 s)
//!   records go to `<data root>/.kubeyolo/mlflow-spool/*.jsonl` and are sent when the server
//!   answers again — later in the same step, by the next step that starts with tracking, or by
//!   `yolo-track replay`.
//! - **Failures are reported once** on stderr, prefixed `mlflow:`; they never fail the step.
//! - **Lifecycle** ([`lifecycle`]): FINISHED / FAILED from [`Tracker::finish`] (dropping an
//!   unfinished tracker means FAILED: an early `?` return), KILLED on SIGTERM/SIGINT.
//! - **Tags** set on every run: `mlflow.runName`, `mlflow.source.name` (`kubeyolo/yolo-<step>`),
//!   `mlflow.source.type` (`JOB`), `mlflow.user`, `kubeyolo.step`, `kubeyolo.version`, and when
//!   present `kfp.run_id`, `kfp.run_name`, `kfp.pod_name`, `kfp.pod_uid`, `kfp.namespace`,
//!   `argo.node_id`, `host` (from `KFP_RUN_ID`, `KFP_RUN_NAME`, `KFP_POD_NAME`, `KFP_POD_UID`,
//!   `KFP_NAMESPACE`, `ARGO_NODE_ID`, `HOSTNAME`).
//! - **Artifacts** go where the run's `artifact_uri` points: the server's proxy
//!   (`mlflow-artifacts:`), S3/MinIO (`s3://`, [`s3`]), or a shared folder (`file://`). A file
//!   is read when it is uploaded, normally within milliseconds; log it after its last write.

pub mod client;
pub mod config;
pub mod engine;
pub mod lifecycle;
pub mod logger;
pub mod names;
pub mod records;
pub mod s3;
pub mod spool;
pub mod step;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub use config::{TrackingArgs, TrackingConfig};
pub use logger::Summary;
pub use records::Status;

use logger::{Inbox, Msg};
use records::{new_local_id, now_ms, Experiment, KeyValue, Metric, Op, Value};

/// The spool folder under a data root.
pub fn default_spool_dir(data_root: &Path) -> PathBuf {
    data_root.join(".kubeyolo").join("mlflow-spool")
}

/// A handle on one MLflow run (or a no-op handle when tracking is off). Cheap calls, never
/// blocking on the network, never failing; see the module docs.
pub struct Tracker {
    inner: Option<Arc<Inner>>,
    /// Local id of this tracker's run.
    run: String,
    root: bool,
    finished: bool,
}

struct Inner {
    inbox: Arc<Inbox>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    cfg: TrackingConfig,
    step: String,
    warned: Mutex<std::collections::HashSet<String>>,
}

impl Tracker {
    /// Start tracking for `step` from flags/environment. Tracking off (no URI, `--no-mlflow`) or
    /// misconfigured (reported once) gives a no-op tracker.
    pub fn start(args: &TrackingArgs, step: &str, data_root: &Path) -> Tracker {
        match TrackingConfig::resolve(args) {
            Ok(Some(cfg)) => Tracker::start_with(cfg, step, data_root),
            Ok(None) => Tracker::disabled(),
            Err(msg) => {
                eprintln!("mlflow: {msg}; tracking is off for this step");
                Tracker::disabled()
            }
        }
    }

    /// Start tracking with an explicit configuration (tests, tools).
    pub fn start_with(cfg: TrackingConfig, step: &str, data_root: &Path) -> Tracker {
        let spool_dir = cfg.spool_dir.clone().unwrap_or_else(|| default_spool_dir(data_root));
        let inbox = Inbox::new();
        let thread = {
            let (inbox, cfg, step, spool_dir) = (inbox.clone(), cfg.clone(), step.to_string(), spool_dir);
            std::thread::Builder::new().name("kubeyolo-mlflow".into()).spawn(move || {
                // Whatever happens to the logger (even a panic), the step must never wait on it.
                struct CloseOnExit(Arc<Inbox>);
                impl Drop for CloseOnExit {
                    fn drop(&mut self) {
                        self.0.close();
                    }
                }
                let _guard = CloseOnExit(inbox.clone());
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(logger::run(inbox, cfg, step, spool_dir)),
                    Err(e) => eprintln!("mlflow: cannot start the background logger: {e}; tracking is off"),
                }
            })
        };
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                eprintln!("mlflow: cannot start the background logger: {e}; tracking is off");
                return Tracker::disabled();
            }
        };
        if cfg.handle_signals {
            lifecycle::register(&inbox);
        }
        let experiment = match &cfg.experiment_id {
            Some(id) => Experiment::Id(id.clone()),
            None => Experiment::Name(cfg.experiment_name.clone()),
        };
        let run_name = cfg.run_name.clone().unwrap_or_else(|| step.to_string());
        let mut tags = standard_tags(step, &run_name);
        tags.extend(cfg.tags.iter().map(|(k, v)| KeyValue { key: names::sanitize_key(k), value: v.clone() }));
        let run = new_local_id();
        let start = Op::Start {
            run: run.clone(),
            experiment,
            run_name: Some(run_name),
            parent: None,
            parent_remote: cfg.parent_run_id.clone(),
            existing: cfg.run_id.clone(),
            tags,
            start_time: now_ms(),
        };
        let inner = Arc::new(Inner {
            inbox,
            thread: Mutex::new(Some(thread)),
            cfg,
            step: step.to_string(),
            warned: Mutex::default(),
        });
        let tracker = Tracker { inner: Some(inner), run, root: true, finished: false };
        tracker.send(start);
        tracker
    }

    /// A tracker that does nothing.
    pub fn disabled() -> Tracker {
        Tracker { inner: None, run: String::new(), root: true, finished: true }
    }

    /// Whether anything is sent.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    fn send(&self, op: Op) {
        if let Some(inner) = &self.inner {
            // `false`: the logger already stopped (after finish or a signal); nothing to do.
            let _ = inner.inbox.push(Msg::Op(op));
        }
    }

    fn warn_once(&self, class: String, msg: impl FnOnce() -> String) {
        if let Some(inner) = &self.inner {
            if inner.warned.lock().unwrap_or_else(|e| e.into_inner()).insert(class) {
                eprintln!("mlflow: {}", msg());
            }
        }
    }

    /// Log params (values are text; over 6000 characters they are truncated, with a warning).
    /// A param cannot change once logged: a different value later is dropped with a warning.
    pub fn log_params<K: AsRef<str>, V: AsRef<str>>(&self, params: &[(K, V)]) {
        if self.inner.is_none() || params.is_empty() {
            return;
        }
        let mut kvs = Vec::with_capacity(params.len());
        for (k, v) in params {
            let key = names::sanitize_key(k.as_ref());
            let (value, cut) = names::truncate_value(v.as_ref(), names::MAX_PARAM_CHARS);
            if cut {
                self.warn_once(format!("trunc:{key}"), || {
                    format!(
                        "param '{key}' is {} characters; MLflow keeps {}: truncated",
                        v.as_ref().chars().count(),
                        names::MAX_PARAM_CHARS
                    )
                });
            }
            kvs.push(KeyValue { key, value });
        }
        for chunk in kvs.chunks(engine::MAX_PARAMS) {
            self.send(Op::Log { run: self.run.clone(), metrics: vec![], params: chunk.to_vec(), tags: vec![] });
        }
    }

    /// Log one param.
    pub fn log_param(&self, key: &str, value: impl std::fmt::Display) {
        self.log_params(&[(key, value.to_string())]);
    }

    /// Log one metric point at `step` (MLflow keeps the full history per key).
    pub fn log_metric(&self, key: &str, value: f64, step: i64) {
        self.log_metrics(&[(key, value)], step);
    }

    /// Log several metrics at the same `step` (one epoch's columns, for example).
    pub fn log_metrics<K: AsRef<str>>(&self, metrics: &[(K, f64)], step: i64) {
        if self.inner.is_none() || metrics.is_empty() {
            return;
        }
        let timestamp = now_ms();
        let ms: Vec<Metric> = metrics
            .iter()
            .map(|(k, v)| Metric { key: names::sanitize_key(k.as_ref()), value: Value(*v), timestamp, step })
            .collect();
        for chunk in ms.chunks(engine::MAX_METRICS) {
            self.send(Op::Log { run: self.run.clone(), metrics: chunk.to_vec(), params: vec![], tags: vec![] });
        }
    }

    /// Set (or overwrite) a tag.
    pub fn set_tag(&self, key: &str, value: impl std::fmt::Display) {
        self.set_tags(&[(key, value.to_string())]);
    }

    /// Set several tags.
    pub fn set_tags<K: AsRef<str>, V: AsRef<str>>(&self, tags: &[(K, V)]) {
        if self.inner.is_none() || tags.is_empty() {
            return;
        }
        let kvs: Vec<KeyValue> = tags
            .iter()
            .map(|(k, v)| KeyValue {
                key: names::sanitize_key(k.as_ref()),
                value: names::truncate_value(v.as_ref(), names::MAX_TAG_CHARS).0,
            })
            .collect();
        for chunk in kvs.chunks(engine::MAX_TAGS) {
            self.send(Op::Log { run: self.run.clone(), metrics: vec![], params: vec![], tags: chunk.to_vec() });
        }
    }

    /// Upload `file` into the run's artifacts, in folder `artifact_dir` ("" = the root), keeping
    /// its file name — like `mlflow.log_artifact(local_path, artifact_path)`.
    pub fn log_artifact(&self, file: &Path, artifact_dir: &str) {
        if self.inner.is_none() {
            return;
        }
        let name = match file.file_name() {
            Some(n) => n.to_string_lossy().into_owned(),
            None => {
                self.warn_once(format!("artifact:{}", file.display()), || {
                    format!("artifact {} is not a file; skipped", file.display())
                });
                return;
            }
        };
        let dir = artifact_dir.trim_matches('/');
        let dest = if dir.is_empty() { name } else { format!("{dir}/{name}") };
        self.send(Op::Artifact { run: self.run.clone(), file: file.to_path_buf(), dest, owned: false });
    }

    /// Upload every file below `dir` into `artifact_dir`, keeping the relative layout
    /// (like `mlflow.log_artifacts`).
    pub fn log_artifacts(&self, dir: &Path, artifact_dir: &str) {
        if self.inner.is_none() {
            return;
        }
        let base = artifact_dir.trim_matches('/');
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .map(|e| e.into_path())
            .collect();
        files.sort();
        for f in files {
            let rel = f.strip_prefix(dir).unwrap_or(&f);
            let rel_dir = rel.parent().map(|p| p.to_string_lossy().replace('\\', "/")).unwrap_or_default();
            let target =
                [base, rel_dir.as_str()].iter().filter(|s| !s.is_empty()).cloned().collect::<Vec<_>>().join("/");
            self.log_artifact(&f, &target);
        }
    }

    /// A nested run (its `mlflow.parentRunId` tag points at this run), e.g. one per tuning
    /// iteration. Finish it with [`Tracker::finish`]; runs still open when the parent finishes
    /// are ended with the parent's status.
    pub fn child(&self, run_name: &str) -> Tracker {
        let Some(inner) = &self.inner else { return Tracker::disabled() };
        let run = new_local_id();
        let experiment = match &inner.cfg.experiment_id {
            Some(id) => Experiment::Id(id.clone()),
            None => Experiment::Name(inner.cfg.experiment_name.clone()),
        };
        let child = Tracker { inner: Some(inner.clone()), run: run.clone(), root: false, finished: false };
        child.send(Op::Start {
            run,
            experiment,
            run_name: Some(run_name.to_string()),
            parent: Some(self.run.clone()),
            parent_remote: None,
            existing: None,
            tags: standard_tags(&inner.step, run_name),
            start_time: now_ms(),
        });
        child
    }

    /// Wait until everything logged so far reached the server. `false`: not within `timeout`, or
    /// records are being spooled (the server is unreachable), or tracking is off.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(inner) = &self.inner else { return false };
        let (tx, rx) = mpsc::channel();
        inner.inbox.push_control(Msg::Flush(tx)) && rx.recv_timeout(timeout).unwrap_or(false)
    }

    /// The server's id of this run, waiting up to `timeout` for the run to be created.
    /// `None` when tracking is off or the server cannot be reached in time.
    pub fn run_id(&self, timeout: Duration) -> Option<String> {
        let inner = self.inner.as_ref()?;
        let (tx, rx) = mpsc::channel();
        if !inner.inbox.push_control(Msg::RunId { run: self.run.clone(), reply: tx }) {
            return None;
        }
        rx.recv_timeout(timeout).ok().flatten()
    }

    /// End the run with `status`. For the step's own tracker this also waits for delivery (up to
    /// `--mlflow-flush-secs`; what is left is spooled) and returns what happened.
    pub fn finish(mut self, status: Status) -> Summary {
        self.end(status)
    }

    /// FINISHED when `result` is `Ok`, FAILED (with the error as the `kubeyolo.error` tag) when not.
    pub fn finish_with<T, E: std::fmt::Display>(self, result: &Result<T, E>) -> Summary {
        match result {
            Ok(_) => self.finish(Status::Finished),
            Err(e) => {
                self.set_tag("kubeyolo.error", e);
                self.finish(Status::Failed)
            }
        }
    }

    fn end(&mut self, status: Status) -> Summary {
        if self.finished {
            return Summary::default();
        }
        self.finished = true;
        let Some(inner) = &self.inner else { return Summary::default() };
        self.send(Op::End { run: self.run.clone(), status, end_time: now_ms() });
        if !self.root {
            return Summary::default();
        }
        let flush = inner.cfg.flush_timeout;
        let (tx, rx) = mpsc::channel();
        let mut summary = Summary::default();
        if inner.inbox.push_control(Msg::Close { deadline: Instant::now() + flush, status, done: tx }) {
            summary = rx.recv_timeout(flush + Duration::from_secs(10)).unwrap_or_default();
        }
        if let Some(t) = inner.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        summary
    }
}

impl Drop for Tracker {
    /// An unfinished run ends FAILED: reaching here without `finish` means an early return.
    fn drop(&mut self) {
        if !self.finished {
            self.end(Status::Failed);
        }
    }
}

/// Tags every kubeyolo run carries (see the module docs).
fn standard_tags(step: &str, run_name: &str) -> Vec<KeyValue> {
    let kv =
        |k: &str, v: String| KeyValue { key: k.to_string(), value: names::truncate_value(&v, names::MAX_TAG_CHARS).0 };
    let mut tags = vec![
        kv("mlflow.runName", run_name.to_string()),
        kv("mlflow.source.name", format!("kubeyolo/yolo-{step}")),
        kv("mlflow.source.type", "JOB".into()),
        kv("mlflow.user", config::env("USER").unwrap_or_else(|| "kubeyolo".into())),
        kv("kubeyolo.step", step.to_string()),
        kv("kubeyolo.version", crate::VERSION.to_string()),
    ];
    for (var, key) in [
        ("KFP_RUN_ID", "kfp.run_id"),
        ("KFP_RUN_NAME", "kfp.run_name"),
        ("KFP_POD_NAME", "kfp.pod_name"),
        ("KFP_POD_UID", "kfp.pod_uid"),
        ("KFP_NAMESPACE", "kfp.namespace"),
        ("ARGO_NODE_ID", "argo.node_id"),
        ("HOSTNAME", "host"),
    ] {
        if let Some(v) = config::env(var) {
            tags.push(kv(key, v));
        }
    }
    tags
}
