//! The tuning loop: ultralytics 8.4's `Tuner.__call__` on kubeyolo's trainer.
//!
//! Each iteration: claim the next iteration in the shared store (its values chosen by
//! [`super::mutate`] from every result finished so far), train `epochs` epochs from the given
//! weights with the base cfg plus those values in `<tune dir>/iter<N>`, record the fitness and
//! metrics, and refresh the outputs from all results: `weights/` (the best iteration's
//! `best`/`last` weights), `best_hyperparameters.yaml`, `tune_results.csv`, the two plots. Other
//! iterations' run folders are removed (ultralytics' `cleanup`).
//!
//! As `model.tune()` does, `optimizer: auto` becomes AdamW: auto picks its own lr and momentum
//! and would make `lr0` and `momentum` meaningless to tune.
//!
//! A SIGTERM stops the iteration's trainer at a checkpoint and returns `Interrupted`: the claim
//! stays, and the restarted worker re-runs the same iteration with the same values, the trainer
//! resuming from its checkpoint.
//!
//! While it trains, a worker refreshes its claim's heartbeat every fifth of the lease. When every
//! iteration is claimed, a worker with nothing to do waits for the others rather than exiting:
//! a worker that is gone for good (no heartbeat for a lease) has its iteration taken over,
//! checkpoint included, so the run ends with all its iterations. A worker that finds its claim
//! taken over (it was paused longer than the lease) stops that iteration and leaves it to the
//! new owner.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mutate::{iteration_rng, mutate, History, Trial};
use super::space::Space;
use super::store::{py_float, Claim, Next, Record, Store};
use crate::config::hyp::Hyp;
use crate::error::{Error, ErrorKind, Result};
use crate::files::{copy_atomic, write_atomic};
use crate::plot::tune::{plot_tune_results, TuneRow};
use crate::root::under;
use crate::root::ModelSource;
use crate::track::records::Status;
use crate::track::Tracker;
use crate::train::trainer::{increment_dir, train, TrainOutcome, TrainRequest};

/// What to tune.
#[derive(Debug, Clone)]
pub struct TuneRequest {
    /// The weights (or model yaml) every iteration starts from: the train step's best.
    pub model: ModelSource,
    pub data_yaml: PathBuf,
    /// The base cfg; the space's keys are replaced by each iteration's values.
    pub hyp: Hyp,
    pub data_root: PathBuf,
    pub space: Space,
    /// Iterations in total, over all workers (ultralytics' `iterations`).
    pub iterations: u64,
    /// A fixed tune folder (resumed); None: `{project}/{name or tune}` incremented.
    pub tune_dir: Option<PathBuf>,
    /// This worker's index; workers share one tune folder.
    pub worker: u32,
    /// Remove the run folders of iterations that are not the best (ultralytics' `cleanup`).
    pub cleanup: bool,
    pub checkpoint_every: Option<Duration>,
    pub log_interval: Duration,
    pub stop: Arc<AtomicBool>,
    /// How long a claim lives without a heartbeat before another worker may take it over.
    pub lease: Duration,
}

impl TuneRequest {
    pub fn new(model: ModelSource, data_yaml: PathBuf, hyp: Hyp, data_root: PathBuf) -> Self {
        TuneRequest {
            model,
            data_yaml,
            hyp,
            data_root,
            space: Space::default(),
            iterations: 300,
            tune_dir: None,
            worker: 0,
            cleanup: true,
            checkpoint_every: Some(Duration::from_secs(600)),
            log_interval: Duration::from_secs(30),
            stop: Arc::new(AtomicBool::new(false)),
            lease: DEFAULT_LEASE,
        }
    }
}

/// Ten minutes: far longer than a worker's pauses (a checkpoint write, a slow volume), short
/// enough that a lost worker's iteration is picked up within one iteration's time or so.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(600);

/// The best iteration so far.
#[derive(Debug, Clone)]
pub struct Best {
    pub iteration: u64,
    pub fitness: f64,
    pub record: Record,
    /// `<tune dir>/best_hyperparameters.yaml`.
    pub hyperparameters_yaml: PathBuf,
    /// `<tune dir>/weights/best.safetensors` (None if that iteration left no weights).
    pub weights: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct TuneOutcome {
    pub tune_dir: PathBuf,
    /// Iterations this worker trained in this call.
    pub trained: u64,
    /// Iterations finished in the tune folder, by all workers.
    pub finished: u64,
    pub best: Option<Best>,
}

/// ultralytics' `TASK2METRIC["detect"]` and `DetMetrics.results_dict` keys.
const PRECISION: &str = "metrics/precision(B)";
const RECALL: &str = "metrics/recall(B)";
const MAP50: &str = "metrics/mAP50(B)";
const MAP: &str = "metrics/mAP50-95(B)";

/// Run the evolution until every iteration up to `iterations` is claimed.
pub fn tune(req: &TuneRequest, tracker: &Tracker) -> Result<TuneOutcome> {
    let dir = resolve_tune_dir(req)?;
    let int_keys: Vec<String> = req.space.dims.iter().filter(|d| d.int).map(|d| d.key.clone()).collect();
    let store = Store::open(&dir, &int_keys)?;
    let defaults = base_values(&req.hyp, &req.space)?;
    let base = tuning_cfg(&req.hyp)?;
    let dataset = dataset_name(&req.data_yaml);
    let t0 = Instant::now();
    let already = store.results()?.len();
    if already > 0 {
        println!("Tuner: Resuming tuning run {} ({already} iterations finished)", dir.display());
    } else {
        println!("Tuner: Initialized Tuner instance with 'tune_dir={}'", dir.display());
    }
    tracker.log_params(&[
        ("tune_iterations", req.iterations.to_string()),
        ("tune_worker", req.worker.to_string()),
        ("tune_space", space_text(&req.space)),
    ]);
    let mut trained = 0;
    let mut best = None;
    let mut waiting = false;
    loop {
        if req.stop.load(Ordering::SeqCst) {
            return Err(Error::interrupted("tuning stopped by a signal; a restart continues in the same tune folder"));
        }
        let seed = req.hyp.seed as u64;
        let next = store.claim(req.worker, req.iterations, req.lease, |iteration, snap| {
            let finished: Vec<Trial> = snap
                .results
                .iter()
                .map(|r| Trial { fitness: r.fitness, values: values_of(&r.hyperparameters, &req.space, &defaults) })
                .collect();
            let pending: Vec<Vec<f64>> =
                snap.pending.iter().map(|c| values_of(&c.hyperparameters, &req.space, &defaults)).collect();
            let h = History { finished: &finished, pending: &pending, defaults: &defaults };
            let values = mutate(&req.space, &h, &mut iteration_rng(seed, iteration))?;
            Ok(req.space.keys().into_iter().zip(values).collect())
        })?;
        let claim = match next {
            Next::Done => break,
            Next::Wait { stale_in } => {
                if !waiting {
                    println!("Tuner: every iteration is claimed; worker {} waits for the others to finish (or to go quiet for {} s)", req.worker, req.lease.as_secs());
                    waiting = true;
                }
                sleep_unless_stopped(stale_in.clamp(Duration::from_millis(200), POLL), &req.stop);
                continue;
            }
            Next::Run { claim, taken_from } => {
                if let Some(w) = taken_from {
                    println!(
                        "Tuner: taking over iteration {} from worker {w}, silent for over {} s",
                        claim.iteration,
                        req.lease.as_secs()
                    );
                }
                waiting = false;
                claim
            }
        };
        let beat = Heartbeat::start(&store, req, claim.iteration);
        let rec = run_iteration(req, &base, &dir, &dataset, &claim, &beat.stop, tracker);
        let lost = beat.finish();
        let rec = match rec {
            Err(e) if e.kind == ErrorKind::Interrupted && lost && !req.stop.load(Ordering::SeqCst) => {
                println!(
                    "Tuner: iteration {} was taken over by another worker; leaving it to that worker",
                    claim.iteration
                );
                continue;
            }
            other => other?,
        };
        tracker.log_metric("tune/fitness", rec.fitness, claim.iteration as i64);
        match store.record(req.worker, rec, |all| refresh_outputs(req, &dir, all, t0))? {
            Some(b) => {
                trained += 1;
                best = b;
            }
            None => println!("Tuner: iteration {} was taken over by another worker, which records it", claim.iteration),
        }
    }
    let results = store.results()?;
    if best.is_none() && !results.is_empty() {
        best = store.inspect(|all| refresh_outputs(req, &dir, all, t0))?;
    }
    if let Some(b) = &best {
        tracker.log_metrics(
            &[("tune/best_fitness", b.fitness), ("tune/best_iteration", b.iteration as f64)],
            results.len() as i64,
        );
        tracker.log_artifact(&b.hyperparameters_yaml, "tune");
    }
    println!(
        "Tuner: worker {} done: trained {trained} iteration(s); {} of {} finished in {}",
        req.worker,
        results.len(),
        req.iterations,
        dir.display()
    );
    Ok(TuneOutcome { tune_dir: dir, trained, finished: results.len() as u64, best })
}

/// How often a waiting worker looks at the claims again.
const POLL: Duration = Duration::from_secs(10);

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let t = Instant::now();
    while t.elapsed() < d && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100).min(d));
    }
}

/// The thread that keeps a claim alive while its iteration trains. Its `stop` is the
/// iteration's trainer stop flag: set on a signal (the worker's own flag) or when the claim was
/// taken over.
struct Heartbeat {
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Heartbeat {
    fn start(store: &Store, req: &TuneRequest, iteration: u64) -> Heartbeat {
        let (stop, lost, done) =
            (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let every = (req.lease / 5).max(Duration::from_millis(200));
        let (store, worker, signal) = (store.clone(), req.worker, req.stop.clone());
        let (s, l, d) = (stop.clone(), lost.clone(), done.clone());
        let thread = std::thread::Builder::new()
            .name("kubeyolo-tune-heartbeat".into())
            .spawn(move || {
                let mut last = Instant::now();
                while !d.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                    if signal.load(Ordering::SeqCst) {
                        s.store(true, Ordering::SeqCst);
                    }
                    if last.elapsed() >= every {
                        last = Instant::now();
                        match store.heartbeat(worker, iteration) {
                            Ok(true) => {}
                            Ok(false) => {
                                l.store(true, Ordering::SeqCst);
                                s.store(true, Ordering::SeqCst);
                            }
                            Err(e) => eprintln!("warning: tune heartbeat for iteration {iteration}: {e}"),
                        }
                    }
                }
            })
            .ok();
        Heartbeat { stop, lost, done, thread }
    }

    /// Stops the thread; true when the claim was taken over meanwhile.
    fn finish(mut self) -> bool {
        self.done.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.lost.load(Ordering::SeqCst)
    }
}

/// Train one claimed iteration and turn its outcome into a record (fitness 0 when it failed).
/// `stop` stops its trainer (a signal, or the claim taken over).
fn run_iteration(
    req: &TuneRequest,
    base: &Hyp,
    dir: &Path,
    dataset: &str,
    claim: &Claim,
    stop: &Arc<AtomicBool>,
    tracker: &Tracker,
) -> Result<Record> {
    let i = claim.iteration;
    let shown: Vec<String> = claim.hyperparameters.iter().map(|(k, v)| format!("'{k}': {}", py_float(*v))).collect();
    println!("Tuner: Starting iteration {i}/{} with hyperparameters: {{{}}}", req.iterations, shown.join(", "));
    let mut hyp = base.clone();
    for (k, v) in &claim.hyperparameters {
        let text = if req.space.dims.iter().any(|d| d.key == *k && d.int) {
            format!("{}", *v as i64)
        } else {
            format!("{v:?}")
        };
        hyp.set(k, &text)?;
    }
    let run_dir = dir.join(format!("iter{i}"));
    discard_finished_unrecorded(&run_dir)?;
    let mut t = TrainRequest::new(req.model.clone(), req.data_yaml.clone(), hyp, req.data_root.clone());
    t.save_dir = Some(run_dir.clone());
    t.auto_resume = true;
    t.checkpoint_every = req.checkpoint_every;
    t.log_interval = req.log_interval;
    t.stop = stop.clone();
    let child = tracker.child(&format!("iteration-{i}"));
    child.set_tag("kubeyolo.tune_iteration", i);
    let outcome = train(&t, &child);
    let shown_dir = run_dir.strip_prefix(&req.data_root).unwrap_or(&run_dir).display().to_string();
    let mut record = Record {
        iteration: i,
        fitness: 0.0,
        hyperparameters: claim.hyperparameters.clone(),
        datasets: vec![(dataset.to_string(), Vec::new())],
        save_dirs: vec![(dataset.to_string(), shown_dir)],
        failed_datasets: Vec::new(),
    };
    match outcome {
        Ok(out) => {
            let metrics = iteration_metrics(&out);
            record.fitness = super::mutate::round_to(
                metrics.iter().find(|(k, _)| k == "fitness").map(|(_, v)| *v).unwrap_or(0.0),
                5,
            );
            child.log_metrics(&metrics.iter().map(|(k, v)| (k.replace(['(', ')'], ""), *v)).collect::<Vec<_>>(), 0);
            child.finish(Status::Finished);
            record.datasets[0].1 = metrics;
        }
        Err(e) if e.kind == ErrorKind::Interrupted => {
            child.finish(Status::Killed);
            return Err(e);
        }
        Err(e) => {
            // One failed iteration (diverged, out of memory) does not end the evolution.
            eprintln!("Tuner: iteration {i} failed, recorded with fitness 0: {e}");
            child.set_tag("kubeyolo.error", &e);
            child.finish(Status::Failed);
            record.datasets[0].1 = vec![(MAP.to_string(), 0.0), ("fitness".to_string(), 0.0)];
            record.failed_datasets.push(dataset.to_string());
        }
    }
    Ok(record)
}

/// The final validation of the iteration's best weights, as ultralytics' `results_dict`.
fn iteration_metrics(out: &TrainOutcome) -> Vec<(String, f64)> {
    match &out.final_val {
        Some(v) => {
            let m = &v.metrics;
            vec![
                (PRECISION.to_string(), m.precision),
                (RECALL.to_string(), m.recall),
                (MAP50.to_string(), m.map50),
                (MAP.to_string(), m.map50_95),
                ("fitness".to_string(), m.fitness),
            ]
        }
        None => vec![("fitness".to_string(), out.best_fitness.unwrap_or(0.0))],
    }
}

/// A run folder whose training finished but whose result never reached the results file (the
/// worker died in between) is trained again from the start, so the record and the weights agree.
fn discard_finished_unrecorded(run_dir: &Path) -> Result<()> {
    let last = run_dir.join("weights").join("last.safetensors");
    if !last.is_file() {
        return Ok(());
    }
    let finished = crate::train::checkpoint::load(&last).map(|l| l.state.is_none_or(|s| s.finished)).unwrap_or(true);
    if finished {
        std::fs::remove_dir_all(run_dir)
            .map_err(|e| Error::io_at(run_dir, "remove an unrecorded iteration's folder", e))?;
    }
    Ok(())
}

/// Refresh every output from all results (called under the store's lock).
fn refresh_outputs(req: &TuneRequest, dir: &Path, all: &[Record], t0: Instant) -> Result<Option<Best>> {
    let best_idx = best_index(all);
    let keys = req.space.keys();
    let defaults = base_values(&req.hyp, &req.space)?;
    let mut best = None;
    if let Some(bi) = best_idx {
        let b = &all[bi];
        // The best iteration's weights under <tune dir>/weights, then the others' folders go.
        let weights_dir = dir.join("weights");
        let mut weights = None;
        if let Some((_, run)) = b.save_dirs.first() {
            let run = under(&req.data_root, run);
            for name in ["best.safetensors", "last.safetensors"] {
                let from = run.join("weights").join(name);
                if from.is_file() {
                    copy_atomic(&from, &weights_dir.join(name))?;
                }
            }
            let w = weights_dir.join("best.safetensors");
            weights = w.is_file().then_some(w);
        }
        if req.cleanup {
            for r in all.iter().filter(|r| r.iteration != b.iteration) {
                for (_, run) in &r.save_dirs {
                    let run = under(&req.data_root, run);
                    if run.starts_with(dir) && run.is_dir() {
                        let _ = std::fs::remove_dir_all(&run);
                    }
                }
            }
        }
        let header = header_lines(req, dir, all, b, t0);
        let yaml_path = dir.join("best_hyperparameters.yaml");
        let mut text: String = header.iter().map(|l| format!("# {l}\n")).collect();
        text.push('\n');
        let values = values_of(&b.hyperparameters, &req.space, &defaults);
        for (d, v) in req.space.dims.iter().zip(&values) {
            let _ = writeln!(text, "{}: {}", d.key, if d.int { format!("{}", *v as i64) } else { yaml_float(*v) });
        }
        write_atomic(&yaml_path, text.as_bytes())?;
        println!("\n{}", header.iter().map(|l| format!("Tuner: {l}")).collect::<Vec<_>>().join("\n"));
        best = Some(Best {
            iteration: b.iteration,
            fitness: b.fitness,
            record: b.clone(),
            hyperparameters_yaml: yaml_path,
            weights,
        });
    } else {
        eprintln!("Tuner: no iteration produced training metrics yet; best_hyperparameters.yaml not written");
    }
    write_atomic(&dir.join("tune_results.csv"), results_csv(all, &req.space, &defaults).as_bytes())?;
    let rows: Vec<TuneRow> = all
        .iter()
        .map(|r| TuneRow {
            iteration: r.iteration,
            fitness: r.fitness,
            values: values_of(&r.hyperparameters, &req.space, &defaults),
            datasets: r
                .datasets
                .iter()
                .map(|(n, m)| (n.clone(), m.iter().find(|(k, _)| k == "fitness").map(|(_, v)| *v).unwrap_or(0.0)))
                .collect(),
        })
        .collect();
    plot_tune_results(dir, &keys, &rows)?;
    print_table(all, best_idx);
    Ok(best)
}

/// ultralytics' `_best_result_index`: the highest fitness among iterations that trained (the
/// first one on ties), else the highest overall.
pub fn best_index(all: &[Record]) -> Option<usize> {
    let pick = |ok: &dyn Fn(&Record) -> bool| -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, r) in all.iter().enumerate().filter(|(_, r)| ok(r)) {
            if best.is_none_or(|b| r.fitness > all[b].fitness) {
                best = Some(i);
            }
        }
        best
    };
    pick(&|r| r.trained()).or_else(|| pick(&|_| true)).filter(|&i| all[i].trained())
}

fn header_lines(req: &TuneRequest, dir: &Path, all: &[Record], b: &Record, t0: Instant) -> Vec<String> {
    let failed = all.iter().filter(|r| !r.trained()).count();
    let status = if failed == 0 {
        "complete".to_string()
    } else {
        format!("complete ({}/{} succeeded)", all.len() - failed, all.len())
    };
    let metrics: Vec<String> = b
        .datasets
        .first()
        .map(|(_, m)| m.iter().map(|(k, v)| format!("'{k}': {}", py_float(*v))).collect())
        .unwrap_or_default();
    vec![
        format!("{}/{} iterations {status} ({:.2}s)", all.len(), req.iterations, t0.elapsed().as_secs_f64()),
        format!("Results saved to {}", dir.display()),
        format!("Best fitness={} observed at iteration {}", py_float(b.fitness), b.iteration),
        format!("Best fitness metrics are {{{}}}", metrics.join(", ")),
        format!("Best fitness model is {}", dir.join("weights").display()),
    ]
}

/// The iteration table printed after every result.
fn print_table(all: &[Record], best: Option<usize>) {
    let mut sorted: Vec<(usize, &Record)> = all.iter().enumerate().collect();
    sorted.sort_by_key(|(_, r)| r.iteration);
    let mut out =
        format!("{:>9} {:>9} {:>9} {:>9} {:>9} {:>9}\n", "iteration", "fitness", "P", "R", "mAP50", "mAP50-95");
    let f = |r: &Record, k: &str| r.metric(k).map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    for (i, r) in sorted {
        let mark = if Some(i) == best {
            " *"
        } else if r.trained() {
            ""
        } else {
            " failed"
        };
        let _ = writeln!(
            out,
            "{:>9} {:>9.5} {:>9} {:>9} {:>9} {:>9}{mark}",
            r.iteration,
            r.fitness,
            f(r, PRECISION),
            f(r, RECALL),
            f(r, MAP50),
            f(r, MAP)
        );
    }
    print!("{out}");
}

/// `tune_results.csv`: the ndjson as a table for people (one row per iteration, in order).
fn results_csv(all: &[Record], space: &Space, defaults: &[f64]) -> String {
    let mut out = String::from("iteration,fitness,precision,recall,mAP50,mAP50-95");
    for d in &space.dims {
        let _ = write!(out, ",{}", d.key);
    }
    out.push('\n');
    let mut sorted: Vec<&Record> = all.iter().collect();
    sorted.sort_by_key(|r| r.iteration);
    for r in sorted {
        let m = |k: &str| r.metric(k).map(py_float).unwrap_or_default();
        let _ = write!(
            out,
            "{},{},{},{},{},{}",
            r.iteration,
            py_float(r.fitness),
            m(PRECISION),
            m(RECALL),
            m(MAP50),
            m(MAP)
        );
        for (d, v) in space.dims.iter().zip(values_of(&r.hyperparameters, space, defaults)) {
            let _ = write!(out, ",{}", if d.int { format!("{}", v as i64) } else { py_float(v) });
        }
        out.push('\n');
    }
    out
}

/// A float as PyYAML writes it (`1.0e-05`: PyYAML reads `1e-05` as a string).
fn yaml_float(v: f64) -> String {
    let s = py_float(v);
    match s.split_once('e') {
        Some((m, e)) if !m.contains('.') => format!("{m}.0e{e}"),
        _ => s,
    }
}

/// A record's values in the space's order; keys it lacks take the base cfg's value (a space
/// widened on resume), as ultralytics does.
fn values_of(pairs: &[(String, f64)], space: &Space, defaults: &[f64]) -> Vec<f64> {
    space
        .dims
        .iter()
        .zip(defaults)
        .map(|(d, &dv)| pairs.iter().find(|(k, _)| *k == d.key).map(|(_, v)| *v).unwrap_or(dv))
        .collect()
}

/// The base cfg's values of the space's keys.
fn base_values(hyp: &Hyp, space: &Space) -> Result<Vec<f64>> {
    space
        .dims
        .iter()
        .map(|d| {
            hyp.value(&d.key).and_then(|v| v.as_f64()).ok_or_else(|| {
                Error::config(format!("the cfg's '{}' is not a number, so it cannot be tuned", d.key))
                    .with_key(d.key.clone())
            })
        })
        .collect()
}

/// The base cfg for iterations: AdamW for `optimizer: auto` (as `model.tune()`), no resume.
fn tuning_cfg(hyp: &Hyp) -> Result<Hyp> {
    let mut h = hyp.clone();
    if h.value("optimizer").and_then(|v| v.as_str()) == Some("auto") {
        println!("Tuner: optimizer 'auto' -> 'AdamW' (as ultralytics' model.tune(): 'auto' would override the tuned lr0 and momentum)");
        h.set("optimizer", "AdamW")?;
    }
    if let Some(w) = adaptive_lr_warning(&h) {
        eprintln!("WARNING: {w}");
    }
    h.set("resume", "False")?;
    Ok(h)
}

/// The base lr0 is an SGD-sized one under an Adam-family optimizer: 8.4's default `lr0: 0.01`
/// with `model.tune()`'s AdamW. Measured (benchmarks/RESULTS.md, "Tuning"): from a trained
/// yolov8n it wiped the model out in every iteration on both tuners (fitness under 0.021 from
/// 0.66). The threshold is the largest lr0 ultralytics' own `auto` gives AdamW
/// (`0.002 · 5 / (4 + nc)` ≤ 0.002).
fn adaptive_lr_warning(h: &Hyp) -> Option<String> {
    let opt = h.value("optimizer").and_then(|v| v.as_str())?.to_string();
    let lr0 = h.value("lr0").and_then(|v| v.as_f64())?;
    let adaptive = ["Adam", "Adamax", "AdamW", "NAdam", "RAdam"].iter().any(|o| o.eq_ignore_ascii_case(&opt));
    (adaptive && lr0 > 0.002).then(|| {
        format!(
            "the tuner starts from optimizer {opt} with lr0 {lr0}, an SGD-sized rate: with {opt} it usually destroys a \
             pretrained model in the first epoch. Set lr0 to 0.001 or less in the cfg yaml (ultralytics' `auto` gives \
             AdamW at most 0.002), or set optimizer: SGD"
        )
    })
}

/// ultralytics' MultiTrainer run name: the yaml's stem, or its folder's name for `data.yaml`.
pub fn dataset_name(data_yaml: &Path) -> String {
    let stem = data_yaml.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
    if stem == "data" {
        if let Some(parent) = std::path::absolute(data_yaml)
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_string_lossy().into_owned()))
        {
            return parent;
        }
    }
    stem
}

fn space_text(space: &Space) -> String {
    space.dims.iter().map(|d| format!("{}=[{}, {}, {}]", d.key, d.min, d.max, d.gain)).collect::<Vec<_>>().join(" ")
}

/// `{project}/{name or tune}` as ultralytics' `get_save_dir` (incremented unless `resume`), or
/// the fixed folder.
fn resolve_tune_dir(req: &TuneRequest) -> Result<PathBuf> {
    if let Some(d) = &req.tune_dir {
        return Ok(under(&req.data_root, d));
    }
    if req.worker > 0 {
        return Err(Error::usage(
            "several tune workers need one shared folder: pass the same --tune-dir to every worker",
        )
        .with_hint("e.g. --tune-dir runs/detect/tune-1234 --worker 1"));
    }
    let project = under(&req.data_root, req.hyp.project.as_deref().unwrap_or("runs/detect"));
    let name = req.hyp.name.clone().unwrap_or_else(|| "tune".into());
    Ok(increment_dir(&project, &name, req.hyp.resume))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(iteration: u64, fitness: f64, trained: bool) -> Record {
        Record {
            iteration,
            fitness,
            hyperparameters: vec![],
            datasets: vec![("d".into(), if trained { vec![("fitness".into(), fitness)] } else { vec![] })],
            save_dirs: vec![],
            failed_datasets: if trained { vec![] } else { vec!["d".into()] },
        }
    }

    #[test]
    fn best_prefers_trained_and_first_on_ties() {
        assert_eq!(best_index(&[rec(1, 0.2, true), rec(2, 0.9, false), rec(3, 0.5, true), rec(4, 0.5, true)]), Some(2));
        assert_eq!(best_index(&[rec(1, 0.0, false)]), None);
        assert_eq!(best_index(&[]), None);
    }

    #[test]
    fn dataset_names_follow_multitrainer() {
        assert_eq!(dataset_name(Path::new("/data/data-custom.yaml")), "data-custom");
        assert_eq!(dataset_name(Path::new("/data/coco8/data.yaml")), "coco8");
    }

    #[test]
    fn yaml_floats_read_back_as_floats() {
        assert_eq!(yaml_float(1e-5), "1.0e-05");
        assert_eq!(yaml_float(0.01), "0.01");
        let v: serde_yaml::Value = serde_yaml::from_str(&yaml_float(2.5e-7)).unwrap();
        assert_eq!(v.as_f64(), Some(2.5e-7));
    }

    #[test]
    fn auto_optimizer_becomes_adamw() {
        let h = tuning_cfg(&Hyp::default()).unwrap();
        assert_eq!(h.value("optimizer").and_then(|v| v.as_str()), Some("AdamW"));
        let mut sgd = Hyp::default();
        sgd.set("optimizer", "SGD").unwrap();
        assert_eq!(tuning_cfg(&sgd).unwrap().value("optimizer").and_then(|v| v.as_str()), Some("SGD"));
    }

    #[test]
    fn sgd_sized_lr_under_adamw_is_warned_about() {
        let auto = tuning_cfg(&Hyp::default()).unwrap();
        assert!(
            adaptive_lr_warning(&auto).is_some_and(|w| w.contains("lr0 0.01")),
            "8.4's default lr0 with the tuner's AdamW"
        );
        let mut small = auto.clone();
        small.set("lr0", "0.001").unwrap();
        assert_eq!(adaptive_lr_warning(&small), None);
        let mut sgd = Hyp::default();
        sgd.set("optimizer", "SGD").unwrap();
        assert_eq!(adaptive_lr_warning(&tuning_cfg(&sgd).unwrap()), None);
    }
}
