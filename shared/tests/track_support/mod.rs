//! Helpers for the tracking integration tests (`track_*.rs`): service discovery through the
//! variables `scripts/services.sh` prints, a blocking REST reader, and private MLflow servers
//! for the fault tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kubeyolo::track::client::{ApiError, Client, RunInfo};
use kubeyolo::track::config::S3Config;
use kubeyolo::track::TrackingConfig;
use serde_json::{json, Value as Json};

/// A service variable, or `None` after printing "skipped: ..." (a panic under
/// `KUBEYOLO_REQUIRE_SERVICES=1`, where a missing service must fail the run).
pub fn service_var(var: &str, test: &str) -> Option<String> {
    match std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
        Some(v) => Some(v),
        None => {
            if std::env::var("KUBEYOLO_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{test}: {var} is not set but KUBEYOLO_REQUIRE_SERVICES=1 (start services with `eval \"$(scripts/services.sh start)\"`)");
            }
            println!("skipped: {test}: {var} is not set (run `eval \"$(scripts/services.sh start)\"` first)");
            None
        }
    }
}

/// The shared MLflow server of the test run.
pub fn mlflow_uri(test: &str) -> Option<String> {
    service_var("KUBEYOLO_TEST_MLFLOW_URI", test)
}

/// S3 settings of the moto server.
pub fn s3_config(test: &str) -> Option<(S3Config, String)> {
    let endpoint = service_var("KUBEYOLO_TEST_S3_ENDPOINT", test)?;
    let bucket = service_var("KUBEYOLO_TEST_S3_BUCKET", test)?;
    Some((
        S3Config {
            endpoint: Some(endpoint),
            access_key: std::env::var("KUBEYOLO_TEST_S3_ACCESS_KEY").ok(),
            secret_key: std::env::var("KUBEYOLO_TEST_S3_SECRET_KEY").ok(),
            session_token: None,
            region: "us-east-1".into(),
        },
        bucket,
    ))
}

/// A unique name for this test's experiment (tests share one server).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:x}", std::process::id(), rand::random::<u32>())
}

/// A test config: short retry budget, no signal handler (tests share a process).
pub fn config(uri: &str, experiment: &str, spool: &Path) -> TrackingConfig {
    let mut cfg = TrackingConfig::new(uri);
    cfg.experiment_name = experiment.to_string();
    cfg.spool_dir = Some(spool.to_path_buf());
    cfg.retry_budget = Duration::from_secs(2);
    cfg.flush_timeout = Duration::from_secs(60);
    cfg.handle_signals = false;
    cfg
}

/// Blocking access to the REST API, to read back what kubeyolo logged.
pub struct Rest {
    pub client: Client,
    rt: tokio::runtime::Runtime,
}

impl Rest {
    pub fn new(uri: &str) -> Rest {
        Rest::with_s3(uri, S3Config::default())
    }

    pub fn with_s3(uri: &str, s3: S3Config) -> Rest {
        let mut cfg = TrackingConfig::new(uri);
        cfg.s3 = s3;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Rest { client: Client::new(&cfg).unwrap(), rt }
    }

    pub fn block<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        self.rt.block_on(f)
    }

    /// Retry transient errors a few times (a pooled connection to a restarted server fails once).
    fn retry<T>(&self, mut f: impl FnMut() -> Result<T, ApiError>) -> Result<T, ApiError> {
        let mut tries = 0;
        loop {
            match f() {
                Err(e) if e.is_transient() && tries < 5 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(300));
                }
                other => return other,
            }
        }
    }

    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Json {
        self.retry(|| self.block(self.client.get_json(path, query))).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn post(&self, path: &str, body: Json) -> Result<Json, ApiError> {
        self.retry(|| self.block(self.client.post_json(path, &body)))
    }

    pub fn experiment_id(&self, name: &str) -> String {
        self.retry(|| self.block(self.client.experiment_id(name))).unwrap()
    }

    /// Runs of an experiment, by run name.
    pub fn runs_named(&self, experiment: &str, run_name: &str) -> Vec<Json> {
        let id = self.experiment_id(experiment);
        let j = self
            .post(
                "api/2.0/mlflow/runs/search",
                json!({"experiment_ids": [id], "filter": format!("tags.mlflow.runName = '{run_name}'"), "max_results": 100}),
            )
            .unwrap();
        j["runs"].as_array().cloned().unwrap_or_default()
    }

    /// The single run with this name (panics when there is none or more than one).
    pub fn run_named(&self, experiment: &str, run_name: &str) -> Json {
        let runs = self.runs_named(experiment, run_name);
        assert_eq!(runs.len(), 1, "expected one run named {run_name} in {experiment}, got {}", runs.len());
        runs[0].clone()
    }

    pub fn run(&self, run_id: &str) -> Json {
        self.get("api/2.0/mlflow/runs/get", &[("run_id", run_id)])["run"].clone()
    }

    pub fn info(&self, run_id: &str) -> RunInfo {
        self.retry(|| self.block(self.client.get_run(run_id))).unwrap()
    }

    /// Full history of a metric as (step, value) sorted by step (NaN as f64::NAN).
    pub fn history(&self, run_id: &str, key: &str) -> Vec<(i64, f64)> {
        let j = self.get(
            "api/2.0/mlflow/metrics/get-history",
            &[("run_id", run_id), ("metric_key", key), ("max_results", "25000")],
        );
        let mut v: Vec<(i64, f64)> = j["metrics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| {
                let step = m["step"].as_i64().or_else(|| m["step"].as_str().and_then(|s| s.parse().ok())).unwrap_or(0);
                let value = match &m["value"] {
                    Json::String(s) if s == "NaN" => f64::NAN,
                    Json::String(s) => s.parse().unwrap(),
                    v => v.as_f64().unwrap(),
                };
                (step, value)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        v
    }

    /// `data.params` (or tags) of a run JSON as (key, value) pairs.
    pub fn pairs(run: &Json, what: &str) -> Vec<(String, String)> {
        run["data"][what]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|p| (p["key"].as_str().unwrap().to_string(), p["value"].as_str().unwrap_or("").to_string()))
            .collect()
    }

    pub fn value_of(run: &Json, what: &str, key: &str) -> Option<String> {
        Rest::pairs(run, what).into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn download(&self, artifact_uri: &str, dest: &str) -> Vec<u8> {
        self.retry(|| self.block(self.client.download_artifact(artifact_uri, dest)))
            .unwrap_or_else(|e| panic!("download {dest}: {e}"))
    }
}

/// A free TCP port on 127.0.0.1 (nothing listens on it when this returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A private MLflow server (own port and sqlite file) that a fault test may kill and restart.
pub struct PrivateServer {
    pub bin: String,
    pub dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
    starts: u32,
}

impl PrivateServer {
    /// `None` (after "skipped: ...") when no mlflow executable is known.
    pub fn new(test: &str, dir: &Path) -> Option<PrivateServer> {
        let bin = service_var("KUBEYOLO_TEST_MLFLOW_BIN", test)?;
        Some(PrivateServer { bin, dir: dir.to_path_buf(), port: free_port(), child: None, starts: 0 })
    }

    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Start (or restart) the server and wait until its API answers.
    pub fn start(&mut self) {
        use std::os::unix::process::CommandExt;
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("mlflow-{}.log", self.starts))).unwrap();
        let child = Command::new(&self.bin)
            .args(["server", "--host", "127.0.0.1", "--port", &self.port.to_string(), "--workers", "1"])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", self.dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(self.dir.join("mlartifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start mlflow server");
        self.child = Some(child);
        let rest = Rest::new(&self.uri());
        let t0 = Instant::now();
        loop {
            let ok = rest
                .block(
                    rest.client.get_json("api/2.0/mlflow/experiments/get-by-name", &[("experiment_name", "Default")]),
                )
                .is_ok();
            if ok {
                eprintln!("private mlflow server on port {} up after {:.1} s", self.port, t0.elapsed().as_secs_f64());
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "private mlflow server did not start in 180 s (logs in {})",
                self.dir.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Kill the whole server process group at once (no clean shutdown, like a crashed pod).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // The server and its worker processes, each by its own (positive) pid.
            for pid in descendants(c.id()) {
                if pid > 1 {
                    let _ = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status();
                }
            }
            let _ = c.kill();
            let _ = c.wait();
            // Until the port is free again, a restart would fail.
            let t0 = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && t0.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every process below `root` (children first found through /proc/<pid>/stat), not `root` itself.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid ...`: comm may contain spaces, so split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else { continue };
        if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(pid, ppid) in &parent_of {
            if ppid == p && pid != root && !found.contains(&pid) {
                found.push(pid);
                frontier.push(pid);
            }
        }
    }
    found
}

/// Deterministic pseudo-random bytes (binary artifact content).
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
