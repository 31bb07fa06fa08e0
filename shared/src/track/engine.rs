//! Turns queued [`Op`]s into API calls: one HTTP request per [`Engine::step`].
//!
//! Consecutive `Log` records of a run are merged into one `log-batch` within the server's limits
//! (1000 metrics, 100 params, 100 tags, 1000 entities, < 1 MB). Because the server rejects a
//! whole batch when one entry is invalid, a batch refused with `INVALID_PARAMETER_VALUE` is split
//! in halves until the offending entries are isolated; only those are dropped (and reported).
//! Params are immutable in MLflow: a re-logged param with the same value is skipped, one with a
//! different value is dropped with a warning instead of costing the whole batch.
//! A transient failure puts the work back at the front of the queue, untouched, for the caller
//! (the live logger or a replay) to retry or spool.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant};

use super::client::{ApiError, Client};
use super::records::{now_ms, Experiment, KeyValue, Metric, Op};
use super::spool::{self, Meta};

pub const MAX_METRICS: usize = 1000;
pub const MAX_PARAMS: usize = 100;
pub const MAX_TAGS: usize = 100;
pub const MAX_ENTITIES: usize = 1000;
/// Request-size budget for one batch (the server's cap is 1 MB).
const MAX_BATCH_BYTES: usize = 800_000;

/// Prints tracking problems to stderr, each kind once, and counts what was dropped.
#[derive(Default)]
pub struct Reporter {
    seen: HashSet<String>,
    pub dropped: u64,
    pub quiet: bool,
}

impl Reporter {
    /// Print `msg` the first time `class` is seen.
    pub fn once(&mut self, class: &str, msg: impl FnOnce() -> String) {
        if self.seen.insert(class.to_string()) && !self.quiet {
            eprintln!("mlflow: {}", msg());
        }
    }

    /// Always print (state changes: spooling, recovered, summary).
    pub fn say(&self, msg: &str) {
        if !self.quiet {
            eprintln!("mlflow: {msg}");
        }
    }

    /// Count `n` dropped records and report the first drop of this class.
    pub fn drop_records(&mut self, n: u64, class: &str, msg: impl FnOnce() -> String) {
        self.dropped += n;
        self.once(class, msg);
    }
}

/// What the engine knows about one local run.
#[derive(Default, Debug)]
struct RunState {
    remote: Option<String>,
    artifact_uri: Option<String>,
    params: HashMap<String, String>,
    /// Set when the run could not be created or was deleted: its records are dropped.
    dead: bool,
}

/// Result of one step.
#[derive(Debug)]
pub enum Step {
    /// Nothing queued.
    Idle,
    /// One unit of work done (sent, or dropped as undeliverable).
    Done,
    /// The server is unreachable or overloaded; the work is back at the front of the queue.
    Transient(ApiError),
}

pub struct Engine {
    pub client: Client,
    pub queue: VecDeque<Op>,
    pub report: Reporter,
    runs: HashMap<String, RunState>,
    experiments: HashMap<String, String>,
    /// Records delivered (metrics + params + tags + artifacts + run changes).
    pub delivered: u64,
    /// The next this-many `Log` records are halves of a refused batch: send them unmerged.
    isolate: usize,
}

impl Engine {
    pub fn new(client: Client) -> Engine {
        Engine {
            client,
            queue: VecDeque::new(),
            report: Reporter::default(),
            runs: HashMap::new(),
            experiments: HashMap::new(),
            delivered: 0,
            isolate: 0,
        }
    }

    /// Server run id of a local run, once created.
    pub fn remote_of(&self, run: &str) -> Option<&str> {
        self.runs.get(run).and_then(|r| r.remote.as_deref())
    }

    /// The run could not be created (or was deleted): its records are dropped.
    pub fn is_dead(&self, run: &str) -> bool {
        self.runs.get(run).is_some_and(|r| r.dead)
    }

    /// `attach` records for every run that exists on the server (the head of a spool file).
    pub fn attach_ops(&self) -> Vec<Op> {
        let mut v: Vec<Op> = self
            .runs
            .iter()
            .filter_map(|(local, st)| {
                st.remote.as_ref().map(|r| Op::Attach {
                    run: local.clone(),
                    remote: r.clone(),
                    artifact_uri: st.artifact_uri.clone(),
                })
            })
            .collect();
        v.sort_by(|a, b| a.run().cmp(b.run()));
        v
    }

    /// Do the next unit of work.
    pub async fn step(&mut self) -> Step {
        let Some(op) = self.queue.pop_front() else { return Step::Idle };
        let run = op.run().to_string();
        if !matches!(op, Op::Start { .. } | Op::Attach { .. }) {
            let state = self.runs.get(&run);
            if state.is_none_or(|s| s.dead || s.remote.is_none()) {
                // Undeliverable: the run was never created (reported when that failed).
                let n = count(&op);
                if state.is_none() {
                    self.report.drop_records(n, "unknown-run", || {
                        format!("internal: record for a run that was never started ({run}); dropped")
                    });
                } else {
                    self.report.dropped += n;
                }
                return Step::Done;
            }
        }
        match op {
            Op::Start { .. } => self.start(op).await,
            Op::Attach { run, remote, artifact_uri } => {
                let st = self.runs.entry(run).or_default();
                st.remote = Some(remote);
                st.artifact_uri = artifact_uri;
                Step::Done
            }
            Op::Log { run, metrics, params, tags } => self.log(run, metrics, params, tags).await,
            Op::Artifact { .. } => self.artifact(op).await,
            Op::End { ref run, status, end_time } => {
                let remote = self.remote_of(run).unwrap_or_default().to_string();
                match self.client.update_run(&remote, status, Some(end_time)).await {
                    Ok(()) => {
                        self.delivered += 1;
                        Step::Done
                    }
                    Err(e) if e.is_transient() => {
                        self.queue.push_front(op);
                        Step::Transient(e)
                    }
                    Err(e) => {
                        self.report.drop_records(1, "end", || format!("could not set the run status: {e}"));
                        Step::Done
                    }
                }
            }
        }
    }

    async fn start(&mut self, op: Op) -> Step {
        let Op::Start {
            ref run,
            ref experiment,
            ref run_name,
            ref parent,
            ref parent_remote,
            ref existing,
            ref tags,
            start_time,
        } = op
        else {
            return Step::Done;
        };
        let result = async {
            if let Some(id) = existing {
                let info = self.client.get_run(id).await?;
                self.client.update_run(id, super::records::Status::Running, None).await?;
                let tags: Vec<KeyValue> = tags.iter().filter(|t| t.key != "mlflow.runName").cloned().collect();
                for chunk in tags.chunks(MAX_TAGS) {
                    self.client.log_batch(id, &[], &[], chunk).await?;
                }
                return Ok(info);
            }
            let exp_id = match experiment {
                Experiment::Id(id) => id.clone(),
                Experiment::Name(name) => match self.experiments.get(name) {
                    Some(id) => id.clone(),
                    None => {
                        let id = self.client.experiment_id(name).await?;
                        self.experiments.insert(name.clone(), id.clone());
                        id
                    }
                },
            };
            let mut tags = tags.clone();
            let parent_id =
                parent.as_ref().and_then(|p| self.remote_of(p).map(str::to_string)).or_else(|| parent_remote.clone());
            if let Some(p) = parent_id {
                tags.push(KeyValue { key: "mlflow.parentRunId".into(), value: p });
            }
            self.client.create_run(&exp_id, run_name.as_deref(), start_time, &tags).await
        }
        .await;
        match result {
            Ok(info) => {
                let st = self.runs.entry(run.clone()).or_default();
                st.remote = Some(info.run_id);
                st.artifact_uri = Some(info.artifact_uri).filter(|u| !u.is_empty());
                self.delivered += 1;
                Step::Done
            }
            Err(e) if e.is_transient() => {
                self.queue.push_front(op);
                Step::Transient(e)
            }
            Err(e) => {
                self.runs.entry(run.clone()).or_default().dead = true;
                self.report.drop_records(1, "start", || {
                    format!("could not create the MLflow run, nothing will be logged for it: {e}")
                });
                Step::Done
            }
        }
    }

    async fn log(&mut self, run: String, metrics: Vec<Metric>, params: Vec<KeyValue>, tags: Vec<KeyValue>) -> Step {
        let mut batch = Batch::default();
        batch.add(self, &run, metrics, params, tags);
        let isolated = self.isolate > 0;
        self.isolate = self.isolate.saturating_sub(1);
        // Merge the following records of the same run while they fit.
        while let Some(Op::Log { run: next_run, metrics, params, tags }) = self.queue.front().filter(|_| !isolated) {
            if *next_run != run || !batch.fits(metrics, params, tags) {
                break;
            }
            let Some(Op::Log { metrics, params, tags, .. }) = self.queue.pop_front() else { break };
            batch.add(self, &run, metrics, params, tags);
        }
        if batch.is_empty() {
            return Step::Done;
        }
        let remote = self.remote_of(&run).unwrap_or_default().to_string();
        match self.client.log_batch(&remote, &batch.metrics, &batch.params, &batch.tags).await {
            Ok(()) => {
                let st = self.runs.entry(run).or_default();
                for p in &batch.params {
                    st.params.insert(p.key.clone(), p.value.clone());
                }
                self.delivered += batch.len() as u64;
                Step::Done
            }
            Err(e) if e.is_transient() => {
                self.queue.push_front(Op::Log { run, metrics: batch.metrics, params: batch.params, tags: batch.tags });
                if isolated {
                    self.isolate += 1;
                }
                Step::Transient(e)
            }
            Err(ApiError::Rejected { status: 400, code, message })
                if code == "INVALID_PARAMETER_VALUE" && batch.len() > 1 =>
            {
                // One bad entry rejects the whole batch: split to find it.
                let _ = message;
                let (a, b) = batch.split();
                self.queue.push_front(b.into_op(&run));
                self.queue.push_front(a.into_op(&run));
                self.isolate += 2;
                Step::Done
            }
            Err(e) => {
                let n = batch.len() as u64;
                if let ApiError::Rejected { status: 404, .. } = e {
                    self.runs.entry(run.clone()).or_default().dead = true;
                }
                let what = batch.describe();
                self.report.drop_records(n, &format!("log:{e}"), || format!("the server rejected {what}: {e}"));
                Step::Done
            }
        }
    }

    async fn artifact(&mut self, op: Op) -> Step {
        let Op::Artifact { ref run, ref file, ref dest, owned } = op else { return Step::Done };
        let uri = match self.runs.get(run).and_then(|s| s.artifact_uri.clone()) {
            Some(u) => u,
            None => {
                let remote = self.remote_of(run).unwrap_or_default().to_string();
                match self.client.get_run(&remote).await {
                    Ok(info) => {
                        self.runs.entry(run.clone()).or_default().artifact_uri = Some(info.artifact_uri.clone());
                        info.artifact_uri
                    }
                    Err(e) if e.is_transient() => {
                        self.queue.push_front(op);
                        return Step::Transient(e);
                    }
                    Err(e) => {
                        self.report.drop_records(1, "artifact-uri", || {
                            format!("cannot find where the run keeps artifacts: {e}")
                        });
                        return Step::Done;
                    }
                }
            }
        };
        match self.client.upload_artifact(&uri, file, dest).await {
            Ok(()) => {
                self.delivered += 1;
                if owned {
                    let _ = std::fs::remove_file(file);
                }
                Step::Done
            }
            Err(e) if e.is_transient() => {
                self.queue.push_front(op);
                Step::Transient(e)
            }
            Err(e) => {
                self.report.drop_records(1, "artifact", || format!("artifact '{dest}' was not stored: {e}"));
                if owned {
                    let _ = std::fs::remove_file(file);
                }
                Step::Done
            }
        }
    }
}

/// Records in an op (for counting drops).
fn count(op: &Op) -> u64 {
    match op {
        Op::Log { metrics, params, tags, .. } => (metrics.len() + params.len() + tags.len()) as u64,
        _ => 1,
    }
}

/// One `log-batch` being assembled.
#[derive(Default)]
struct Batch {
    metrics: Vec<Metric>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
    bytes: usize,
}

fn size_of(metrics: &[Metric], params: &[KeyValue], tags: &[KeyValue]) -> usize {
    metrics.iter().map(|m| m.key.len() + 80).sum::<usize>()
        + params.iter().chain(tags).map(|p| p.key.len() + p.value.len() + 40).sum::<usize>()
}

impl Batch {
    fn len(&self) -> usize {
        self.metrics.len() + self.params.len() + self.tags.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fits(&self, metrics: &[Metric], params: &[KeyValue], tags: &[KeyValue]) -> bool {
        self.metrics.len() + metrics.len() <= MAX_METRICS
            && self.params.len() + params.len() <= MAX_PARAMS
            && self.tags.len() + tags.len() <= MAX_TAGS
            && self.len() + metrics.len() + params.len() + tags.len() <= MAX_ENTITIES
            && self.bytes + size_of(metrics, params, tags) <= MAX_BATCH_BYTES
    }

    /// Add records, applying the param rules (see the module docs) and last-wins for tags.
    fn add(
        &mut self,
        engine: &mut Engine,
        run: &str,
        metrics: Vec<Metric>,
        params: Vec<KeyValue>,
        tags: Vec<KeyValue>,
    ) {
        self.bytes += size_of(&metrics, &params, &tags);
        self.metrics.extend(metrics);
        for p in params {
            let logged = engine.runs.get(run).and_then(|s| s.params.get(&p.key)).cloned();
            let pending = self.params.iter().find(|q| q.key == p.key).map(|q| q.value.clone());
            match logged.or(pending) {
                Some(v) if v == p.value => {}
                Some(v) => engine.report.drop_records(1, &format!("param-change:{}", p.key), || {
                    format!("param '{}' was already logged as '{}'; the new value '{}' is dropped (MLflow params cannot change)", p.key, v, p.value)
                }),
                None => self.params.push(p),
            }
        }
        for t in tags {
            self.tags.retain(|x| x.key != t.key);
            self.tags.push(t);
        }
    }

    /// Two halves of the entries (for isolating a rejected entry).
    fn split(self) -> (Batch, Batch) {
        let mut a = Batch::default();
        let mut b = Batch::default();
        let half = self.len() / 2;
        let mut i = 0;
        for m in self.metrics {
            if i < half {
                a.metrics.push(m)
            } else {
                b.metrics.push(m)
            }
            i += 1;
        }
        for p in self.params {
            if i < half {
                a.params.push(p)
            } else {
                b.params.push(p)
            }
            i += 1;
        }
        for t in self.tags {
            if i < half {
                a.tags.push(t)
            } else {
                b.tags.push(t)
            }
            i += 1;
        }
        (a, b)
    }

    fn into_op(self, run: &str) -> Op {
        Op::Log { run: run.to_string(), metrics: self.metrics, params: self.params, tags: self.tags }
    }

    fn describe(&self) -> String {
        if self.len() == 1 {
            if let Some(m) = self.metrics.first() {
                return format!("metric '{}'", m.key);
            }
            if let Some(p) = self.params.first() {
                return format!("param '{}'", p.key);
            }
            if let Some(t) = self.tags.first() {
                return format!("tag '{}'", t.key);
            }
        }
        format!("{} records", self.len())
    }
}

/// What a replay did.
#[derive(Debug, Default, Clone)]
pub struct ReplaySummary {
    /// Spool files fully delivered (and deleted).
    pub files_done: usize,
    /// Files still (partly) undelivered, left as spool files.
    pub files_left: Vec<std::path::PathBuf>,
    /// Files for another tracking server, left alone.
    pub files_skipped: Vec<std::path::PathBuf>,
    pub delivered: u64,
    pub dropped: u64,
}

/// Replay every finished spool file in `dir` (and, with `stale`, files left by crashed
/// processes). A file that cannot be delivered within `retry_budget` of failures, or before
/// `stop()` turns true, is rewritten with what is left. Files written for another tracking server are
/// skipped unless `any_server`.
pub async fn replay_dir(
    client: &Client,
    dir: &Path,
    stale: bool,
    any_server: bool,
    retry_budget: Duration,
    stop: &(dyn Fn() -> bool + Send + Sync),
    quiet: bool,
) -> ReplaySummary {
    let mut summary = ReplaySummary::default();
    for path in spool::list(dir, stale) {
        if stop() {
            summary.files_left.push(path);
            continue;
        }
        let Some(claimed) = spool::claim(&path) else { continue };
        let (meta, ops, bad) = match spool::read(&claimed) {
            Ok(x) => x,
            Err(e) => {
                if !quiet {
                    eprintln!("mlflow: cannot read spool file {}: {e}", claimed.display());
                }
                let _ = std::fs::rename(&claimed, &path);
                summary.files_left.push(path);
                continue;
            }
        };
        let meta = meta.unwrap_or(Meta {
            spool: 1,
            tracking_uri: client.base().to_string(),
            step: "unknown".into(),
            created: now_ms(),
        });
        if !any_server && meta.tracking_uri.trim_end_matches('/') != client.base() {
            let _ = std::fs::rename(&claimed, &path);
            if !quiet {
                eprintln!(
                    "mlflow: spool file {} was written for {}, not {}; left alone",
                    path.display(),
                    meta.tracking_uri,
                    client.base()
                );
            }
            summary.files_skipped.push(path);
            continue;
        }
        let mut engine = Engine::new(client.clone());
        engine.report.quiet = quiet;
        engine.queue = ops.into();
        if bad > 0 && !quiet {
            eprintln!("mlflow: {} unreadable line(s) in {} skipped", bad, claimed.display());
        }
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(200);
        let finished = loop {
            if stop() {
                break false;
            }
            match engine.step().await {
                Step::Idle => break true,
                Step::Done => {
                    failing_since = None;
                    backoff = Duration::from_millis(200);
                }
                Step::Transient(_) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= retry_budget {
                        break false;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        };
        summary.delivered += engine.delivered;
        summary.dropped += engine.report.dropped;
        if finished {
            let _ = std::fs::remove_file(&claimed);
            summary.files_done += 1;
        } else {
            let mut rest = engine.attach_ops();
            rest.extend(engine.queue.drain(..));
            let stem = format!("{}-r{}", spool::stem_of(&claimed), now_ms());
            match spool::write_complete(dir, &stem, &meta, rest) {
                Ok(p) => {
                    let _ = std::fs::remove_file(&claimed);
                    summary.files_left.push(p);
                }
                Err(e) => {
                    // Keep the original: resending what was delivered is harmless, losing the rest is not.
                    let _ = std::fs::rename(&claimed, &path);
                    if !quiet {
                        eprintln!("mlflow: cannot rewrite spool file {}: {e}", path.display());
                    }
                    summary.files_left.push(path);
                }
            }
        }
    }
    summary
}
