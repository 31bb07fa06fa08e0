//! One process of a step: its folder, command line, log and outputs.
//!
//! A plain step is one task in `<run>/<step>/`. A step with N workers ([`Step::workers`], tune)
//! is N tasks in `<run>/<step>/worker-<i>/`, started together and run concurrently, each with
//! its index as the [`Source::Worker`] input (`--worker i`), its own outputs, log and KFP
//! executor output — as the N pods of a KFP `ParallelFor` each have their own. The step is ok
//! when every worker is; its outputs are those of the worker that finished last, the one whose
//! view of the shared results includes every other worker's iterations.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use kubeyolo::{Error, Result};
use serde::Serialize;

use super::{read_metrics, Status};
use crate::graph::{ArtifactType, OutputKind, Source, Step};

/// One process of `step`: the whole step, or worker `worker` of it.
pub struct Task<'a> {
    pub step: &'a Step,
    pub worker: Option<u32>,
    /// `<run>/<step>` or `<run>/<step>/worker-<i>`.
    pub dir: PathBuf,
}

/// What one task left behind.
#[derive(Debug, Clone, Default)]
pub struct TaskOutputs {
    pub outputs: BTreeMap<String, String>,
    pub artifacts: BTreeMap<String, PathBuf>,
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
}

/// One worker's run, as `summary.json` records it (start and end as Unix seconds, so the
/// overlap of the workers can be read off).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerResult {
    pub worker: u32,
    #[serde(flatten)]
    pub status: Status,
    pub started: f64,
    pub ended: f64,
    pub log: PathBuf,
}

/// The tasks of `step` in `run_dir`: one, or one per worker.
pub fn tasks<'a>(step: &'a Step, run_dir: &std::path::Path) -> Vec<Task<'a>> {
    let step_dir = run_dir.join(step.name);
    if step.workers <= 1 {
        return vec![Task { step, worker: None, dir: step_dir }];
    }
    (0..step.workers).map(|w| Task { step, worker: Some(w), dir: step_dir.join(format!("worker-{w}")) }).collect()
}

impl Task<'_> {
    /// Where the task writes output `name`: parameters under `outputs/`, artifacts under
    /// `artifacts/` (`<name>.<ext>`).
    pub fn output_path(&self, name: &str) -> PathBuf {
        match self.step.output(name).map(|o| o.kind) {
            Some(OutputKind::Artifact(t)) => self.dir.join("artifacts").join(format!("{name}.{}", t.file_ext())),
            _ => self.dir.join("outputs").join(name),
        }
    }

    /// The task's KFP executor output (`output_metadata.json` on the cluster): its own file,
    /// never the shared `/tmp/kfp_outputs` of the host, and one per worker.
    pub fn executor_output(&self) -> PathBuf {
        self.dir.join("executor_output.json")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.txt")
    }

    /// `tune` or `tune 1`: the prefix of echoed lines.
    pub fn label(&self) -> String {
        match self.worker {
            Some(w) => format!("{} {w}", self.step.name),
            None => self.step.name.to_string(),
        }
    }

    /// The command-line arguments: each input's flag and value (`value_of` resolves parameters,
    /// upstream outputs and the run id; the worker input is this task's index), the literal
    /// arguments, then each output's flag and path. Creates the folders and removes outputs
    /// left by an earlier attempt, so a stale file never passes for this run's output.
    pub fn args(&self, value_of: impl Fn(Source) -> Result<String>) -> Result<Vec<String>> {
        let mut args = Vec::new();
        for i in &self.step.inputs {
            let value = match (i.source, self.worker) {
                (Source::Worker, Some(w)) => w.to_string(),
                (Source::Worker, None) => {
                    return Err(Error::internal(format!("{}: worker input without workers", self.step.name)))
                }
                (src, _) => value_of(src)?,
            };
            args.push(i.flag.to_string());
            args.push(value);
        }
        for (flag, value) in &self.step.literal_args {
            args.push(flag.to_string());
            args.push(value.clone());
        }
        for o in &self.step.outputs {
            let path = self.output_path(o.name);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, "create output folder", e))?;
            }
            let _ = std::fs::remove_file(&path);
            args.push(o.flag.to_string());
            args.push(path.to_string_lossy().into_owned());
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::io_at(&self.dir, "create step folder", e))?;
        let _ = std::fs::remove_file(self.executor_output());
        Ok(args)
    }

    /// Like the KFP launcher: a declared string output that was not written fails the task;
    /// artifacts are taken when present (metrics read into numbers).
    pub fn collect(&self) -> std::result::Result<TaskOutputs, String> {
        let mut got = TaskOutputs::default();
        let mut missing = Vec::new();
        for o in &self.step.outputs {
            let path = self.output_path(o.name);
            match o.kind {
                OutputKind::Parameter => match std::fs::read_to_string(&path) {
                    Ok(v) => {
                        got.outputs.insert(o.name.to_string(), v);
                    }
                    Err(_) => missing.push(o.name),
                },
                OutputKind::Artifact(t) => {
                    if path.exists() {
                        if t == ArtifactType::Metrics {
                            if let Some(m) = read_metrics(&path) {
                                got.metrics.insert(o.name.to_string(), m);
                            }
                        }
                        got.artifacts.insert(o.name.to_string(), path);
                    }
                }
            }
        }
        if missing.is_empty() {
            Ok(got)
        } else {
            Err(format!("exited 0 but did not write output(s) {}", missing.join(", ")))
        }
    }
}

/// A task's command, ready to start: what [`super::Executor::command`] built.
pub struct Prepared<'a> {
    pub task: Task<'a>,
    pub cmd: Command,
}

/// Seconds since the Unix epoch, for the workers' start and end times.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
