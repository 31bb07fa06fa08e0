//! The tuning record on the volume, shared by every worker of one tuning run.
//!
//! * `tune_results.ndjson`: one line per finished iteration, ultralytics 8.4's layout
//!   (`iteration`, `fitness`, `hyperparameters`, `datasets` → metrics, `save_dirs`,
//!   `failed_datasets`), so ultralytics' own `plot_tune_results` and users' scripts read it.
//! * `tune_claims.ndjson`: one line per started iteration (iteration, worker, the values it
//!   trains). This is what makes workers safe: an iteration is claimed before it trains, so no two
//!   workers train the same iteration number or the same values, and a restarted worker finds its
//!   own unfinished claim and re-runs it (its trainer resumes from its checkpoint) instead of
//!   counting it twice.
//! * `tune.lock`: an exclusive `flock` held for each read-modify-write (never while training).
//!   flock works between processes on one node and on network filesystems that implement POSIX
//!   locks (NFSv4, CephFS); RWX storage without working locks must run one worker.
//!
//! Both files are rewritten whole (temp + rename) under the lock, so a reader never sees half a
//! line and a kill at any moment leaves the previous complete file.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::files::write_atomic;

pub const RESULTS_FILE: &str = "tune_results.ndjson";
pub const CLAIMS_FILE: &str = "tune_claims.ndjson";
const LOCK_FILE: &str = "tune.lock";

/// One finished iteration (a line of `tune_results.ndjson`).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub iteration: u64,
    pub fitness: f64,
    /// (key, value) in the order written; integer keys hold integral values.
    pub hyperparameters: Vec<(String, f64)>,
    /// dataset name → (metric, value), ultralytics' `results_dict` keys.
    pub datasets: Vec<(String, Vec<(String, f64)>)>,
    /// dataset name → the iteration's run folder.
    pub save_dirs: Vec<(String, String)>,
    /// Datasets whose training failed (fitness 0).
    pub failed_datasets: Vec<String>,
}

impl Record {
    pub fn value(&self, key: &str) -> Option<f64> {
        self.hyperparameters.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
    /// Whether training produced metrics (ultralytics' `_has_training_metrics`).
    pub fn trained(&self) -> bool {
        self.datasets.iter().any(|(name, m)| !m.is_empty() && !self.failed_datasets.contains(name))
    }
    /// The first dataset's value of `metric`.
    pub fn metric(&self, metric: &str) -> Option<f64> {
        self.datasets.first().and_then(|(_, m)| m.iter().find(|(k, _)| k == metric).map(|(_, v)| *v))
    }
}

/// A started iteration (a line of `tune_claims.ndjson`).
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub iteration: u64,
    pub worker: u32,
    pub hyperparameters: Vec<(String, f64)>,
}

/// What the lock protects, as read at the moment of a claim.
pub struct Snapshot<'a> {
    pub results: &'a [Record],
    /// Claims not finished yet, by any worker.
    pub pending: &'a [Claim],
}

pub struct Store {
    pub dir: PathBuf,
    /// Keys written as integers (ultralytics' `CFG_INT_KEYS`).
    int_keys: Vec<String>,
}

impl Store {
    pub fn open(dir: &Path, int_keys: &[String]) -> Result<Store> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, "create the tune folder", e))?;
        Ok(Store { dir: dir.to_path_buf(), int_keys: int_keys.to_vec() })
    }

    pub fn results_path(&self) -> PathBuf {
        self.dir.join(RESULTS_FILE)
    }

    /// Runs `f` holding the tuning run's exclusive lock.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let path = self.dir.join(LOCK_FILE);
        let file = File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::io_at(&path, "open the tune lock", e))?;
        file.lock().map_err(|e| {
            Error::io_at(&path, "lock", e).with_hint("the tune folder's filesystem must support file locks (flock) for several workers")
        })?;
        let out = f();
        let _ = file.unlock();
        out
    }

    /// The finished iterations, in file order.
    pub fn results(&self) -> Result<Vec<Record>> {
        read_lines(&self.results_path(), parse_record)
    }

    fn claims(&self) -> Result<Vec<Claim>> {
        read_lines(&self.dir.join(CLAIMS_FILE), parse_claim)
    }

    /// The iteration this worker runs next: its own unfinished claim if it has one (a restart),
    /// else the lowest free iteration number up to `iterations`, with values from `choose`
    /// (called under the lock with everything finished and pending). None: nothing left.
    pub fn claim(
        &self,
        worker: u32,
        iterations: u64,
        choose: impl FnOnce(u64, &Snapshot) -> Result<Vec<(String, f64)>>,
    ) -> Result<Option<Claim>> {
        self.locked(|| {
            let results = self.results()?;
            let mut claims = self.claims()?;
            let done = |i: u64| results.iter().any(|r| r.iteration == i);
            let pending: Vec<Claim> = claims.iter().filter(|c| !done(c.iteration)).cloned().collect();
            if let Some(own) = pending.iter().find(|c| c.worker == worker) {
                return Ok(Some(own.clone()));
            }
            let taken = |i: u64| done(i) || claims.iter().any(|c| c.iteration == i);
            let Some(iteration) = (1..=iterations).find(|&i| !taken(i)) else { return Ok(None) };
            let hyperparameters = choose(iteration, &Snapshot { results: &results, pending: &pending })?;
            let claim = Claim { iteration, worker, hyperparameters };
            claims.push(claim.clone());
            let text: String = claims.iter().map(|c| self.claim_line(c) + "\n").collect();
            write_atomic(&self.dir.join(CLAIMS_FILE), text.as_bytes())?;
            Ok(Some(claim))
        })
    }

    /// Appends a finished iteration, then runs `after` (best weights, plots, yaml) under the same
    /// lock with every result, so the outputs always describe one consistent set of results.
    pub fn record<T>(&self, record: Record, after: impl FnOnce(&[Record]) -> Result<T>) -> Result<T> {
        self.locked(|| {
            let mut results = self.results()?;
            if results.iter().any(|r| r.iteration == record.iteration) {
                return Err(Error::internal(format!("iteration {} is already recorded in {}", record.iteration, self.results_path().display())));
            }
            results.push(record);
            let text: String = results.iter().map(|r| self.record_line(r) + "\n").collect();
            write_atomic(&self.results_path(), text.as_bytes())?;
            after(&results)
        })
    }

    /// Runs `f` with every result under the lock (refreshing outputs without a new result).
    pub fn inspect<T>(&self, f: impl FnOnce(&[Record]) -> Result<T>) -> Result<T> {
        self.locked(|| f(&self.results()?))
    }

    fn number(&self, key: &str, v: f64) -> String {
        if self.int_keys.iter().any(|k| k == key) && v.fract() == 0.0 {
            format!("{}", v as i64)
        } else {
            py_float(v)
        }
    }

    fn pairs(&self, pairs: &[(String, f64)]) -> String {
        let items: Vec<String> = pairs.iter().map(|(k, v)| format!("{}: {}", json_str(k), self.number(k, *v))).collect();
        format!("{{{}}}", items.join(", "))
    }

    /// One results line as Python's `json.dumps` writes it (`", "` and `": "` separators).
    fn record_line(&self, r: &Record) -> String {
        let mut s = format!("{{\"iteration\": {}, \"fitness\": {}, \"hyperparameters\": {}", r.iteration, py_float(r.fitness), self.pairs(&r.hyperparameters));
        let datasets: Vec<String> = r.datasets.iter().map(|(name, m)| format!("{}: {}", json_str(name), self.pairs(m))).collect();
        let _ = write!(s, ", \"datasets\": {{{}}}", datasets.join(", "));
        if !r.save_dirs.is_empty() {
            let dirs: Vec<String> = r.save_dirs.iter().map(|(k, v)| format!("{}: {}", json_str(k), json_str(v))).collect();
            let _ = write!(s, ", \"save_dirs\": {{{}}}", dirs.join(", "));
        }
        if !r.failed_datasets.is_empty() {
            let failed: Vec<String> = r.failed_datasets.iter().map(|d| json_str(d)).collect();
            let _ = write!(s, ", \"failed_datasets\": [{}]", failed.join(", "));
        }
        s + "}"
    }

    fn claim_line(&self, c: &Claim) -> String {
        format!("{{\"iteration\": {}, \"worker\": {}, \"hyperparameters\": {}}}", c.iteration, c.worker, self.pairs(&c.hyperparameters))
    }
}

/// Python's `repr(float)`: shortest round-trip digits, `1e-05` exponents, `10.0` for integers.
pub fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let t = format!("{v:e}");
        let (m, e) = t.split_once('e').expect("exponent form");
        let e: i32 = e.parse().expect("exponent");
        return format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs());
    }
    let t = format!("{v}");
    if t.contains('.') {
        t
    } else {
        t + ".0"
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

fn read_lines<T>(path: &Path, parse: fn(&str) -> serde_json::Result<T>) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io_at(path, "read", e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: String| {
            Error::data(format!("line {} is not a tuning record: {why}", i + 1))
                .with_file(path)
                .with_line(i + 1)
                .with_hint("fix or delete that line; each line is one JSON object as the tuner writes it")
        };
        out.push(parse(line).map_err(|e| bad(e.to_string()))?);
    }
    Ok(out)
}

/// A JSON object read as (key, value) pairs in file order (serde_json's own map sorts keys, and
/// the key order is what the plots and the yaml follow).
struct Pairs<T>(Vec<(String, T)>);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Pairs<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Pairs<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E>(self) -> std::result::Result<Pairs<T>, E> {
                Ok(Pairs(Vec::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> std::result::Result<Pairs<T>, A::Error> {
                let mut out = Vec::new();
                while let Some(kv) = m.next_entry()? {
                    out.push(kv);
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

impl<T> Default for Pairs<T> {
    fn default() -> Self {
        Pairs(Vec::new())
    }
}

#[derive(serde::Deserialize)]
struct RawRecord {
    iteration: u64,
    #[serde(default)]
    fitness: Option<f64>,
    #[serde(default)]
    hyperparameters: Pairs<f64>,
    #[serde(default)]
    datasets: Pairs<Pairs<f64>>,
    #[serde(default)]
    save_dirs: Option<Pairs<String>>,
    #[serde(default)]
    failed_datasets: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
struct RawClaim {
    iteration: u64,
    worker: u32,
    #[serde(default)]
    hyperparameters: Pairs<f64>,
}

fn parse_record(line: &str) -> serde_json::Result<Record> {
    let r: RawRecord = serde_json::from_str(line)?;
    Ok(Record {
        iteration: r.iteration,
        fitness: r.fitness.unwrap_or(0.0),
        hyperparameters: r.hyperparameters.0,
        datasets: r.datasets.0.into_iter().map(|(k, v)| (k, v.0)).collect(),
        save_dirs: r.save_dirs.unwrap_or_default().0,
        failed_datasets: r.failed_datasets.unwrap_or_default(),
    })
}

fn parse_claim(line: &str) -> serde_json::Result<Claim> {
    let c: RawClaim = serde_json::from_str(line)?;
    Ok(Claim { iteration: c.iteration, worker: c.worker, hyperparameters: c.hyperparameters.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(iteration: u64, fitness: f64) -> Record {
        Record {
            iteration,
            fitness,
            hyperparameters: vec![("lr0".into(), 0.01), ("close_mosaic".into(), 10.0)],
            datasets: vec![("data-custom".into(), vec![("metrics/mAP50-95(B)".into(), fitness), ("fitness".into(), fitness)])],
            save_dirs: vec![("data-custom".into(), format!("runs/detect/tune/iter{iteration}"))],
            failed_datasets: vec![],
        }
    }

    fn store(dir: &Path) -> Store {
        Store::open(dir, &["close_mosaic".to_string()]).unwrap()
    }

    #[test]
    fn python_float_repr() {
        for (v, s) in [(0.01, "0.01"), (1e-5, "1e-05"), (10.0, "10.0"), (0.0, "0.0"), (0.12345, "0.12345"), (2.5e-7, "2.5e-07"), (1e16, "1e+16"), (0.0001, "0.0001")] {
            assert_eq!(py_float(v), s);
        }
    }

    #[test]
    fn records_round_trip_in_ultralytics_layout() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut r = rec(1, 0.5);
        r.failed_datasets = vec!["other".into()];
        s.record(r.clone(), |_| Ok(())).unwrap();
        let text = std::fs::read_to_string(s.results_path()).unwrap();
        assert!(text.starts_with("{\"iteration\": 1, \"fitness\": 0.5, \"hyperparameters\": {\"lr0\": 0.01, \"close_mosaic\": 10}, \"datasets\": {\"data-custom\": {"), "{text}");
        assert_eq!(s.results().unwrap(), vec![r.clone()]);
        assert!(s.record(r, |_| Ok(())).is_err(), "an iteration is never recorded twice");
    }

    #[test]
    fn a_bad_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        std::fs::write(s.results_path(), "{\"iteration\": 1, \"fitness\": 0.1, \"hyperparameters\": {}}\n{\"iteration\": \"x\"}\n").unwrap();
        let e = s.results().unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(format!("{e}").contains(RESULTS_FILE));
    }

    #[test]
    fn claims_skip_taken_iterations_and_resume_own() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let hyp = |_: u64, _: &Snapshot| Ok(vec![("lr0".to_string(), 0.01)]);
        let a = s.claim(0, 3, hyp).unwrap().unwrap();
        let b = s.claim(1, 3, hyp).unwrap().unwrap();
        assert_eq!((a.iteration, b.iteration), (1, 2));
        // Worker 0 restarts before finishing: it gets iteration 1 back.
        assert_eq!(s.claim(0, 3, hyp).unwrap().unwrap(), a);
        s.record(rec(1, 0.2), |_| Ok(())).unwrap();
        let c = s.claim(0, 3, |i, snap| {
            assert_eq!(i, 3);
            assert_eq!(snap.results.len(), 1);
            assert_eq!(snap.pending.len(), 1, "worker 1's iteration 2 is pending");
            Ok(vec![("lr0".to_string(), 0.02)])
        });
        assert_eq!(c.unwrap().unwrap().iteration, 3);
        assert!(s.claim(2, 3, hyp).unwrap().is_none(), "all 3 claimed");
    }

    #[test]
    fn concurrent_workers_claim_distinct_iterations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let handles: Vec<_> = (0..4u32)
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let s = store(&path);
                    let mut mine = Vec::new();
                    while let Some(c) = s.claim(w, 40, |i, _| Ok(vec![("lr0".to_string(), i as f64)])).unwrap() {
                        s.record(rec(c.iteration, 0.1), |_| Ok(())).unwrap();
                        mine.push(c.iteration);
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        assert_eq!(all, (1..=40).collect::<Vec<_>>());
        let s = store(&path);
        assert_eq!(s.results().unwrap().len(), 40);
    }
}
