//! Run the pipeline graph locally, without Kubernetes.
//!
//! The same [`Pipeline`] that the emitters compile is walked in order here: run parameters
//! (`--set key=value`) replace the defaults, condition groups are evaluated (`bool_train`,
//! nested `bool_tune`), and data passes between steps exactly as on KFP — each string output is
//! a file the step writes (per run folder `<run>/<step>/outputs/<name>`) and the consumer gets
//! its content verbatim as the flag value. How a step is executed is the [`Executor`]'s job:
//! [`process`] (step binaries as subprocesses, a folder standing in for `/data`) or [`docker`]
//! (`docker run -v DIR:/data IMAGE`).
//!
//! The run id ([`Source::RunId`]) is the run folder's name ([`RunContext::run_id`]), so train
//! trains in `<data>/runs/detect/<run id>`; every step gets its own KFP executor output file
//! (`<run>/<step>/executor_output.json`). After the table, the numbers of every metrics artifact
//! (train's final validation, test's scores) are printed.
//!
//! Outcomes are honest: a step whose binary/image does not exist is **missing** (never faked)
//! and its dependants are **blocked**; a failing step shows its own error (log tail) and blocks
//! its dependants; a step whose condition is false is **skipped**. Every step's output goes to
//! `<run>/<step>/log.txt`, and `<run>/summary.json` records the table printed at the end.

pub mod docker;
pub mod process;
pub mod task;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kubeyolo::{Error, Result};
use serde::Serialize;

use crate::graph::{ParamType, Pipeline, Source, Step};
use task::Prepared;

/// How one step is executed.
pub trait Executor {
    /// Short name for messages ("process", "docker").
    fn name(&self) -> &'static str;
    /// `Err(reason)` when the step cannot run here because its binary/image does not exist.
    fn available(&self, step: &Step) -> std::result::Result<(), String>;
    /// The command that runs `step` with `args` (host paths; the executor maps them), writing
    /// its KFP executor output to `executor_output`.
    fn command(&self, step: &Step, args: &[String], ctx: &RunContext, executor_output: &Path) -> Command;
}

/// Folders of one run.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The folder standing in for `/data`.
    pub data_dir: PathBuf,
    /// `<data_dir>/pipeline-runs/<id>` unless chosen: outputs, artifacts, logs, summary.
    pub run_dir: PathBuf,
    /// This run's id, what KFP's run UUID is on the cluster ([`Source::RunId`]): the run
    /// folder's name. Train's run folder is `runs/detect/<run id>` under the data folder, so
    /// running again with the same `--run-dir` resumes an unfinished training, like a KFP retry.
    pub run_id: String,
}

impl RunContext {
    /// A context whose run id is the run folder's name ([`RunContext::run_id`]).
    pub fn new(data_dir: PathBuf, run_dir: PathBuf) -> RunContext {
        let run_id = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(run_id);
        RunContext { data_dir, run_dir, run_id }
    }
}

/// What happened to a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Exit code (or signal) and the step's own error lines.
    Failed(String),
    /// Binary/image does not exist: not run, not faked.
    Missing(String),
    /// An upstream step failed or is missing.
    Blocked(String),
    /// Its condition is false.
    Skipped(String),
}

impl Status {
    pub fn label(&self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed(_) => "FAILED",
            Status::Missing(_) => "MISSING",
            Status::Blocked(_) => "blocked",
            Status::Skipped(_) => "skipped",
        }
    }
    pub fn detail(&self) -> &str {
        match self {
            Status::Ok => "",
            Status::Failed(d) | Status::Missing(d) | Status::Blocked(d) | Status::Skipped(d) => d,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    pub step: String,
    pub display: String,
    #[serde(flatten)]
    pub status: Status,
    pub seconds: f64,
    /// Output parameter values (as read from the output files).
    pub outputs: BTreeMap<String, String>,
    /// Artifact files written.
    pub artifacts: BTreeMap<String, PathBuf>,
    /// The numbers of the step's `system.Metrics` artifacts (artifact name → metric → value),
    /// as the Kubeflow UI's "Scalar Metrics" table would show them.
    pub metrics: BTreeMap<String, BTreeMap<String, f64>>,
    /// The step's log; for a step with workers, its folder (each worker has its own log).
    pub log: Option<PathBuf>,
    /// Per worker (steps with [`Step::workers`] > 1): status, start and end, log.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<task::WorkerResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub runner: String,
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub params: BTreeMap<String, String>,
    pub steps: Vec<StepResult>,
}

impl RunSummary {
    pub fn failed(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s.status, Status::Failed(_))).count()
    }
    pub fn missing(&self) -> usize {
        self.steps.iter().filter(|s| matches!(s.status, Status::Missing(_))).count()
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let w = self.steps.iter().map(|s| s.step.len()).max().unwrap_or(4).max(4);
        let mut t = format!("{:<w$}  {:<8}  {:>8}  detail\n", "step", "status", "time");
        for s in &self.steps {
            let time = if matches!(s.status, Status::Ok | Status::Failed(_)) {
                format!("{:.1}s", s.seconds)
            } else {
                "-".into()
            };
            let detail = s.status.detail().lines().next().unwrap_or("");
            t.push_str(&format!("{:<w$}  {:<8}  {:>8}  {}\n", s.step, s.status.label(), time, detail));
        }
        let ok = self.steps.iter().filter(|s| s.status == Status::Ok).count();
        t.push_str(&format!(
            "{} ok, {} failed, {} missing, {} blocked, {} skipped — logs and outputs in {}\n",
            ok,
            self.failed(),
            self.missing(),
            self.steps.iter().filter(|s| matches!(s.status, Status::Blocked(_))).count(),
            self.steps.iter().filter(|s| matches!(s.status, Status::Skipped(_))).count(),
            self.run_dir.display()
        ));
        if self.missing() > 0 {
            t.push_str(
                "MISSING steps were not run: their binary/image does not exist (not built, or not implemented yet).\n",
            );
        }
        t.push_str(&self.metrics_table());
        t
    }

    /// The metrics of every step that wrote some (train's final validation, test's scores), in
    /// step order: the numbers a run is for, printed after the table.
    pub fn metrics_table(&self) -> String {
        let mut t = String::new();
        for s in &self.steps {
            for (artifact, m) in &s.metrics {
                if m.is_empty() {
                    continue;
                }
                t.push_str(&format!("\n{} metrics ({artifact}):\n", s.step));
                // The detection scores first, in ultralytics' column order, then the rest.
                let first = ["precision", "recall", "mAP50", "mAP50-95", "fitness"];
                let mut keys: Vec<&String> = first.iter().filter_map(|k| m.get_key_value(*k).map(|(k, _)| k)).collect();
                keys.extend(m.keys().filter(|k| !first.contains(&k.as_str())));
                let w = keys.iter().map(|k| k.len()).max().unwrap_or(0);
                for k in keys {
                    let v = m[k];
                    let shown = if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.4}") };
                    t.push_str(&format!("  {k:<w$}  {shown}\n"));
                }
            }
        }
        t
    }
}

/// The numeric entries of a metrics artifact file (a flat JSON object, as the steps write it);
/// `None` when it is missing or not such an object.
pub fn read_metrics(path: &Path) -> Option<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v.as_object()?.iter().filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x))).collect())
}

/// Parse `--set key=value` pairs against the pipeline parameters (booleans: true/false/1/0).
pub fn parse_params(p: &Pipeline, sets: &[String]) -> Result<BTreeMap<String, String>> {
    let mut values: BTreeMap<String, String> =
        p.params.iter().map(|x| (x.name.to_string(), x.default.to_string())).collect();
    for kv in sets {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Error::usage(format!("--set '{kv}' is not key=value")).with_hint("e.g. --set bool_tune=true")
        })?;
        let param = p.param(k).ok_or_else(|| {
            let known: Vec<&str> = p.params.iter().map(|x| x.name).collect();
            Error::usage(format!("--set: unknown parameter '{k}'"))
                .with_hint(format!("parameters: {}", known.join(", ")))
        })?;
        let v = match param.ty {
            ParamType::Bool => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => "true".to_string(),
                "false" | "0" | "no" => "false".to_string(),
                _ => return Err(Error::usage(format!("--set {k}={v}: not a boolean")).with_hint("use true or false")),
            },
            ParamType::String => v.to_string(),
        };
        values.insert(k.to_string(), v);
    }
    Ok(values)
}

/// A run id from the wall clock: `YYYYmmdd-HHMMSS` (UTC).
pub fn run_id() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Host path of an output of a plain (one-task) `step`: parameters under `outputs/`,
/// artifacts under `artifacts/` ([`task::Task::output_path`] for a worker's).
pub fn output_path(run_dir: &Path, step: &Step, name: &str) -> PathBuf {
    task::tasks(step, run_dir)[0].output_path(name)
}

/// Options of one local run.
pub struct RunOptions {
    pub params: BTreeMap<String, String>,
    /// Echo step output live (prefixed with the step name); the log files get it either way.
    pub echo: bool,
    /// Lines of a failing step's log shown in the terminal.
    pub tail_lines: usize,
}

/// Run the whole graph. Returns the summary (also written to `<run_dir>/summary.json`).
pub fn run(p: &Pipeline, exec: &dyn Executor, ctx: &RunContext, opts: &RunOptions) -> Result<RunSummary> {
    p.validate().map_err(Error::internal)?;
    std::fs::create_dir_all(&ctx.run_dir).map_err(|e| Error::io_at(&ctx.run_dir, "create the run folder", e))?;
    let mut results: Vec<StepResult> = Vec::new();
    eprintln!(
        "kubeyolo run: runner {}, data {}, run folder {}",
        exec.name(),
        ctx.data_dir.display(),
        ctx.run_dir.display()
    );

    for step in &p.steps {
        let mut res = StepResult {
            step: step.name.to_string(),
            display: step.display.to_string(),
            status: Status::Ok,
            seconds: 0.0,
            outputs: BTreeMap::new(),
            artifacts: BTreeMap::new(),
            metrics: BTreeMap::new(),
            log: None,
            workers: Vec::new(),
        };
        res.status = 'decide: {
            // Condition groups, outermost first: the first false one decides.
            for c in &step.conditions {
                if opts.params.get(c.param).map(String::as_str) != Some("true") {
                    break 'decide Status::Skipped(format!("{}={} ({})", c.param, opts.params[c.param], c.name));
                }
            }
            // Missing before blocked: "not built / not implemented" is the more useful news.
            if let Err(reason) = exec.available(step) {
                break 'decide Status::Missing(reason);
            }
            for up in step.upstream() {
                if let Some(r) = results.iter().find(|r| r.step == up) {
                    if r.status != Status::Ok {
                        break 'decide match &r.status {
                            Status::Skipped(d) => Status::Skipped(format!("upstream {up} skipped: {d}")),
                            other => Status::Blocked(format!("needs {up} ({})", other.label().to_lowercase())),
                        };
                    }
                }
            }
            Status::Ok
        };
        if res.status == Status::Ok {
            run_step(step, exec, ctx, opts, &results, &mut res)?;
        } else {
            eprintln!("── {} ({}): {} {}", step.name, step.display, res.status.label(), res.status.detail());
        }
        results.push(res);
    }
    let summary = RunSummary {
        runner: exec.name().to_string(),
        data_dir: ctx.data_dir.clone(),
        run_dir: ctx.run_dir.clone(),
        params: opts.params.clone(),
        steps: results,
    };
    kubeyolo::files::write_json_atomic(&ctx.run_dir.join("summary.json"), &summary)?;
    Ok(summary)
}

fn run_step(
    step: &Step,
    exec: &dyn Executor,
    ctx: &RunContext,
    opts: &RunOptions,
    done: &[StepResult],
    res: &mut StepResult,
) -> Result<()> {
    let value_of = |src: Source| -> Result<String> {
        Ok(match src {
            Source::Param(name) => opts.params.get(name).cloned().unwrap_or_default(),
            Source::Output { step: prod, output } => done
                .iter()
                .find(|r| r.step == prod)
                .and_then(|r| r.outputs.get(output).cloned())
                .ok_or_else(|| Error::internal(format!("{}: output {prod}.{output} not available", step.name)))?,
            Source::RunId { prefix } => format!("{prefix}{}", ctx.run_id),
            Source::Worker => unreachable!("the task fills in its worker index"),
        })
    };
    let mut prepared = Vec::new();
    for t in task::tasks(step, &ctx.run_dir) {
        let args = t.args(value_of)?;
        let cmd = exec.command(step, &args, ctx, &t.executor_output());
        eprintln!("── {} ({}): {}", t.label(), step.display, render_command(&cmd));
        prepared.push(Prepared { task: t, cmd });
    }
    if step.workers > 1 {
        eprintln!("   {} workers run at once", step.workers);
    }

    let started = Instant::now();
    let finished = run_concurrently(prepared, opts.echo);
    res.seconds = started.elapsed().as_secs_f64();

    let mut failures = Vec::new();
    let mut last: Option<(f64, task::TaskOutputs)> = None;
    for (t, outcome, (t0, t1)) in &finished {
        let log_text = std::fs::read_to_string(t.log_path()).unwrap_or_default();
        let status = match outcome {
            Err(e) => Status::Failed(format!("could not start: {e}")),
            Ok(st) if !st.success() => {
                let code = st.code().map(|c| format!("exit code {c}")).unwrap_or_else(|| killed_by(st));
                Status::Failed(format!("{code}: {}", own_error(&log_text)))
            }
            Ok(_) => match t.collect() {
                Ok(got) => {
                    if last.as_ref().map_or(true, |(end, _)| *t1 >= *end) {
                        last = Some((*t1, got));
                    }
                    Status::Ok
                }
                Err(why) => Status::Failed(why),
            },
        };
        if let Status::Failed(why) = &status {
            failures.push(match t.worker {
                Some(w) => format!("worker {w}: {why}"),
                None => why.clone(),
            });
            if !opts.echo {
                let lines: Vec<&str> = log_text.lines().collect();
                let from = lines.len().saturating_sub(opts.tail_lines);
                eprintln!("   last {} lines of {}:", lines.len() - from, t.log_path().display());
                for l in &lines[from..] {
                    eprintln!("   | {l}");
                }
            }
        }
        if let Some(w) = t.worker {
            res.workers.push(task::WorkerResult { worker: w, status, started: *t0, ended: *t1, log: t.log_path() });
        }
    }
    res.log = Some(match step.workers {
        n if n > 1 => ctx.run_dir.join(step.name),
        _ => ctx.run_dir.join(step.name).join("log.txt"),
    });
    res.status = if failures.is_empty() { Status::Ok } else { Status::Failed(failures.join("; ")) };
    if let (Status::Ok, Some((_, got))) = (&res.status, last) {
        res.outputs = got.outputs;
        res.artifacts = got.artifacts;
        res.metrics = got.metrics;
    }
    match &res.status {
        Status::Ok => eprintln!("   {} ok in {:.1}s", step.name, res.seconds),
        Status::Failed(why) => {
            eprintln!("   {} FAILED after {:.1}s: {}", step.name, res.seconds, why.lines().next().unwrap_or(""))
        }
        _ => {}
    }
    Ok(())
}

/// Start every prepared task at once and wait for all of them: (task, exit status, (start,
/// end) as Unix seconds), in task order.
fn run_concurrently(
    prepared: Vec<Prepared>,
    echo: bool,
) -> Vec<(task::Task, std::io::Result<std::process::ExitStatus>, (f64, f64))> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = prepared
            .into_iter()
            .map(|Prepared { task, mut cmd }| {
                scope.spawn(move || {
                    let label = task.label();
                    let t0 = task::unix_now();
                    let status = run_logged(&mut cmd, &task.log_path(), if echo { Some(label.as_str()) } else { None });
                    (task, status, (t0, task::unix_now()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a task thread panicked")).collect()
    })
}

/// "killed by signal 9 (SIGKILL)": which signal, because SIGKILL (the OOM killer, a timeout)
/// and SIGSEGV/SIGABRT (a crash) call for different fixes.
fn killed_by(st: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match st.signal() {
        Some(sig) => {
            let name = match sig {
                1 => " (SIGHUP)",
                2 => " (SIGINT)",
                4 => " (SIGILL)",
                6 => " (SIGABRT)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL: out of memory, or killed)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("killed by signal {sig}{name}")
        }
        None => "killed by a signal".into(),
    }
}

/// The step's own error: its `error:` line (kubeyolo binaries print one, plus a hint), else the
/// last line that mentions an error/problem/failure and the lines after it, else the last lines.
pub fn own_error(log: &str) -> String {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let pick = |from: usize, n: usize| lines[from..].iter().take(n).map(|l| l.trim()).collect::<Vec<_>>().join(" / ");
    if let Some(i) = lines.iter().rposition(|l| l.trim_start().starts_with("error:") || l.contains("] error:")) {
        return pick(i, 3);
    }
    let keywords = ["error", "problem", "failed", "panicked", "traceback"];
    if let Some(i) = lines.iter().rposition(|l| {
        let l = l.to_ascii_lowercase();
        keywords.iter().any(|k| l.contains(k))
    }) {
        return pick(i, 4);
    }
    pick(lines.len().saturating_sub(2), 2)
}

fn render_command(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        // Long values (JSON passed between steps) are shortened here; the step gets them whole.
        let a = if a.chars().count() > 100 {
            std::borrow::Cow::Owned(format!("{}…({} chars)", a.chars().take(60).collect::<String>(), a.chars().count()))
        } else {
            a
        };
        if a.is_empty() || a.contains(' ') {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Run `cmd`, copying stdout and stderr line by line into `log` (and to the terminal with a
/// `[step]` prefix when `echo` names the step).
fn run_logged(cmd: &mut Command, log: &Path, echo: Option<&str>) -> std::io::Result<std::process::ExitStatus> {
    let file = std::fs::File::create(log)?;
    let sink = Arc::new(Mutex::new(file));
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut pumps = Vec::new();
    let streams: Vec<Box<dyn std::io::Read + Send>> = vec![
        Box::new(child.stdout.take().expect("piped stdout")),
        Box::new(child.stderr.take().expect("piped stderr")),
    ];
    for stream in streams {
        let sink = Arc::clone(&sink);
        let prefix = echo.map(|s| format!("   [{s}] "));
        pumps.push(std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buf = Vec::new();
            while reader.read_until(b'\n', &mut buf).unwrap_or(0) > 0 {
                if let Ok(mut f) = sink.lock() {
                    let _ = f.write_all(&buf);
                }
                if let Some(p) = &prefix {
                    let line = String::from_utf8_lossy(&buf);
                    // Progress bars redraw with '\r': show the last state only.
                    let line = line.trim_end().rsplit('\r').next().unwrap_or("").to_string();
                    eprintln!("{p}{line}");
                }
                buf.clear();
            }
        }));
    }
    let status = child.wait()?;
    for p in pumps {
        let _ = p.join();
    }
    Ok(status)
}

/// Seconds as `1m02s` for messages.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked() {
        let p = crate::graph::pipeline();
        let v = parse_params(&p, &["bool_tune=True".into(), "model_name=yolov8n.yaml".into()]).unwrap();
        assert_eq!(v["bool_tune"], "true");
        assert_eq!(v["model_name"], "yolov8n.yaml");
        assert_eq!(v["bool_train"], "true");
        assert!(parse_params(&p, &["nope=1".into()]).is_err());
        assert!(parse_params(&p, &["bool_train=maybe".into()]).is_err());
        assert!(parse_params(&p, &["bool_train".into()]).is_err());
    }

    #[test]
    fn own_error_prefers_the_error_line() {
        let log = "loading\nerror: /data/x.yaml: not found\n  hint: put it there\n";
        assert_eq!(own_error(log), "error: /data/x.yaml: not found / hint: put it there");
        assert_eq!(own_error("a\nb\n\n"), "a / b");
        let verify = "{}\nverify found 1 problem; no output was written:\n  1. data yaml 'nope' not found\n";
        assert_eq!(own_error(verify), "verify found 1 problem; no output was written: / 1. data yaml 'nope' not found");
    }

    #[test]
    fn run_id_is_a_timestamp() {
        let id = run_id();
        assert_eq!(id.len(), 15, "{id}");
        assert!(id.starts_with("20"), "{id}");
    }
}
