//! The tuning record on the volume, shared by every worker of one tuning run.
//!
//! * `tune_results.ndjson`: one line per finished iteration, ultralytics 8.4's layout
//!   (`iteration`, `fitness`, `hyperparameters`, `datasets` → metrics, `save_dirs`,
//!   `failed_datasets`), so ultralytics' own `plot_tune_results` and users' scripts read it.
//! * `tune_claims.ndjson`: one line per started iteration (iteration, worker, the values it
//!   trains). This is what makes workers safe: an iteration is claimed before it trains, so no two
//!   workers train the same iteration number or the same values, and a restarted worker finds its
//!   own unfinished claim and re-runs it (its trainer resumes from its checkpoint) instead of
//!   counting it twice. A claim carries a heartbeat that its worker refreshes while training;
//!   when a worker is lost for good (its pod deleted, its retries used up) and its heartbeat is
//!   older than the lease, another worker takes the iteration over, values and checkpoint
//!   included, so the run still ends with every iteration. Only a claim's current owner records
//!   it.
//! * `tune.lock`: an exclusive `flock` held for each read-modify-write (never while training).
//!   flock works between processes on one node and on network filesystems that implement POSIX
//!   locks (NFSv4, CephFS); RWX storage without working locks must run one worker.
//!
//! Both files are rewritten whole (temp + rename) under the lock, so a reader never sees half a
//! line and a kill at any moment leaves the previous complete file.

use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// When its worker last said it is alive (unix seconds; 0 in files from before leases).
    pub heartbeat: u64,
}

/// What a worker does next ([`Store::claim`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Train this iteration: a new claim, the worker's own unfinished one, or one taken over from
    /// a worker whose lease ran out (`taken_from`).
    Run { claim: Claim, taken_from: Option<u32> },
    /// Every iteration is claimed, but others' are unfinished: wait, as a lost worker's claim
    /// can be taken over once `stale_in` has passed.
    Wait { stale_in: Duration },
    /// Every iteration is finished.
    Done,
}

/// Seconds since the epoch, the heartbeat's clock.
fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// What the lock protects, as read at the moment of a claim.
pub struct Snapshot<'a> {
    pub results: &'a [Record],
    /// Claims not finished yet, by any worker.
    pub pending: &'a [Claim],
}

#[derive(Debug, Clone)]
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
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io_at(&path, "open the tune lock", e))?;
        file.lock().map_err(|e| {
            Error::io_at(&path, "lock", e)
                .with_hint("the tune folder's filesystem must support file locks (flock) for several workers")
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

    /// What this worker runs next: its own unfinished claim if it has one (a restart), else the
    /// lowest free iteration number up to `iterations` with values from `choose` (called under
    /// the lock with everything finished and pending), else another worker's unfinished claim
    /// whose heartbeat is older than `lease`.
    pub fn claim(
        &self,
        worker: u32,
        iterations: u64,
        lease: Duration,
        choose: impl FnOnce(u64, &Snapshot) -> Result<Vec<(String, f64)>>,
    ) -> Result<Next> {
        self.claim_at(now_secs(), worker, iterations, lease, choose)
    }

    fn claim_at(
        &self,
        now: u64,
        worker: u32,
        iterations: u64,
        lease: Duration,
        choose: impl FnOnce(u64, &Snapshot) -> Result<Vec<(String, f64)>>,
    ) -> Result<Next> {
        self.locked(|| {
            let results = self.results()?;
            let mut claims = self.claims()?;
            let done = |i: u64| results.iter().any(|r| r.iteration == i);
            let pending: Vec<Claim> = claims.iter().filter(|c| !done(c.iteration)).cloned().collect();
            let (next, taken_from) = if let Some(own) = pending.iter().find(|c| c.worker == worker) {
                (own.iteration, None)
            } else if let Some(iteration) =
                (1..=iterations).find(|&i| !done(i) && !claims.iter().any(|c| c.iteration == i))
            {
                let hyperparameters = choose(iteration, &Snapshot { results: &results, pending: &pending })?;
                claims.push(Claim { iteration, worker, hyperparameters, heartbeat: now });
                (iteration, None)
            } else {
                let lease = lease.as_secs();
                let age = |c: &Claim| now.saturating_sub(c.heartbeat);
                match pending.iter().filter(|c| age(c) > lease).min_by_key(|c| c.iteration) {
                    Some(stale) => (stale.iteration, Some(stale.worker)),
                    None => {
                        return Ok(match pending.iter().map(|c| lease + 1 - age(c).min(lease + 1)).min() {
                            Some(secs) => Next::Wait { stale_in: Duration::from_secs(secs) },
                            None => Next::Done,
                        });
                    }
                }
            };
            let claim = claims.iter_mut().find(|c| c.iteration == next).expect("the claim was found or pushed above");
            claim.worker = worker;
            claim.heartbeat = now;
            let claim = claim.clone();
            self.write_claims(&claims)?;
            Ok(Next::Run { claim, taken_from })
        })
    }

    /// Refreshes `worker`'s heartbeat on `iteration`. False: the claim is no longer this
    /// worker's (another took it over) or the iteration is finished.
    pub fn heartbeat(&self, worker: u32, iteration: u64) -> Result<bool> {
        self.locked(|| {
            let mut claims = self.claims()?;
            let Some(c) = claims.iter_mut().find(|c| c.iteration == iteration && c.worker == worker) else {
                return Ok(false);
            };
            c.heartbeat = now_secs();
            self.write_claims(&claims)?;
            Ok(true)
        })
    }

    fn write_claims(&self, claims: &[Claim]) -> Result<()> {
        let text: String = claims.iter().map(|c| self.claim_line(c) + "\n").collect();
        write_atomic(&self.dir.join(CLAIMS_FILE), text.as_bytes())
    }

    /// Appends a finished iteration, then runs `after` (best weights, plots, yaml) under the same
    /// lock with every result, so the outputs always describe one consistent set of results.
    /// None (nothing written): the iteration's claim belongs to another worker now, which took
    /// it over from this one and records it itself.
    pub fn record<T>(
        &self,
        worker: u32,
        record: Record,
        after: impl FnOnce(&[Record]) -> Result<T>,
    ) -> Result<Option<T>> {
        self.locked(|| {
            let owner = self.claims()?.iter().find(|c| c.iteration == record.iteration).map(|c| c.worker);
            if owner.is_some_and(|w| w != worker) {
                return Ok(None);
            }
            let mut results = self.results()?;
            if results.iter().any(|r| r.iteration == record.iteration) {
                return Err(Error::internal(format!(
                    "iteration {} is already recorded in {}",
                    record.iteration,
                    self.results_path().display()
                )));
            }
            results.push(record);
            let text: String = results.iter().map(|r| self.record_line(r) + "\n").collect();
            write_atomic(&self.results_path(), text.as_bytes())?;
            after(&results).map(Some)
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
        let items: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{}: {}", json_str(k), self.number(k, *v))).collect();
        format!("{{{}}}", items.join(", "))
    }

    /// One results line as Python's `json.dumps` writes it (`", "` and `": "` separators).
    fn record_line(&self, r: &Record) -> String {
        let mut s = format!(
            "{{\"iteration\": {}, \"fitness\": {}, \"hyperparameters\": {}",
            r.iteration,
            py_float(r.fitness),
            self.pairs(&r.hyperparameters)
        );
        let datasets: Vec<String> =
            r.datasets.iter().map(|(name, m)| format!("{}: {}", json_str(name), self.pairs(m))).collect();
        let _ = write!(s, ", \"datasets\": {{{}}}", datasets.join(", "));
        if !r.save_dirs.is_empty() {
            let dirs: Vec<String> =
                r.save_dirs.iter().map(|(k, v)| format!("{}: {}", json_str(k), json_str(v))).collect();
            let _ = write!(s, ", \"save_dirs\": {{{}}}", dirs.join(", "));
        }
        if !r.failed_datasets.is_empty() {
            let failed: Vec<String> = r.failed_datasets.iter().map(|d| json_str(d)).collect();
            let _ = write!(s, ", \"failed_datasets\": [{}]", failed.join(", "));
        }
        s + "}"
    }

    fn claim_line(&self, c: &Claim) -> String {
        format!(
            "{{\"iteration\": {}, \"worker\": {}, \"hyperparameters\": {}, \"heartbeat\": {}}}",
            c.iteration,
            c.worker,
            self.pairs(&c.hyperparameters),
            c.heartbeat
        )
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
    #[serde(default)]
    heartbeat: u64,
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
    Ok(Claim { iteration: c.iteration, worker: c.worker, hyperparameters: c.hyperparameters.0, heartbeat: c.heartbeat })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(iteration: u64, fitness: f64) -> Record {
        Record {
            iteration,
            fitness,
            hyperparameters: vec![("lr0".into(), 0.01), ("close_mosaic".into(), 10.0)],
            datasets: vec![(
                "data-custom".into(),
                vec![("metrics/mAP50-95(B)".into(), fitness), ("fitness".into(), fitness)],
            )],
            save_dirs: vec![("data-custom".into(), format!("runs/detect/tune/iter{iteration}"))],
            failed_datasets: vec![],
        }
    }

    fn store(dir: &Path) -> Store {
        Store::open(dir, &["close_mosaic".to_string()]).unwrap()
    }

    #[test]
    fn python_float_repr() {
        for (v, s) in [
            (0.01, "0.01"),
            (1e-5, "1e-05"),
            (10.0, "10.0"),
            (0.0, "0.0"),
            (0.12345, "0.12345"),
            (2.5e-7, "2.5e-07"),
            (1e16, "1e+16"),
            (0.0001, "0.0001"),
        ] {
            assert_eq!(py_float(v), s);
        }
    }

    #[test]
    fn records_round_trip_in_ultralytics_layout() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let mut r = rec(1, 0.5);
        r.failed_datasets = vec!["other".into()];
        s.record(0, r.clone(), |_| Ok(())).unwrap().unwrap();
        let text = std::fs::read_to_string(s.results_path()).unwrap();
        assert!(text.starts_with("{\"iteration\": 1, \"fitness\": 0.5, \"hyperparameters\": {\"lr0\": 0.01, \"close_mosaic\": 10}, \"datasets\": {\"data-custom\": {"), "{text}");
        assert_eq!(s.results().unwrap(), vec![r.clone()]);
        assert!(s.record(0, r, |_| Ok(())).is_err(), "an iteration is never recorded twice");
    }

    #[test]
    fn a_bad_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        std::fs::write(
            s.results_path(),
            "{\"iteration\": 1, \"fitness\": 0.1, \"hyperparameters\": {}}\n{\"iteration\": \"x\"}\n",
        )
        .unwrap();
        let e = s.results().unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(format!("{e}").contains(RESULTS_FILE));
    }

    const LEASE: Duration = Duration::from_secs(600);

    fn run(n: Next) -> Claim {
        match n {
            Next::Run { claim, .. } => claim,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[test]
    fn claims_skip_taken_iterations_and_resume_own() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let hyp = |_: u64, _: &Snapshot| Ok(vec![("lr0".to_string(), 0.01)]);
        let a = run(s.claim(0, 3, LEASE, hyp).unwrap());
        let b = run(s.claim(1, 3, LEASE, hyp).unwrap());
        assert_eq!((a.iteration, b.iteration), (1, 2));
        // Worker 0 restarts before finishing: it gets iteration 1 back, with the same values.
        let again = run(s.claim(0, 3, LEASE, hyp).unwrap());
        assert_eq!((again.iteration, &again.hyperparameters), (1, &a.hyperparameters));
        s.record(0, rec(1, 0.2), |_| Ok(())).unwrap().unwrap();
        let c = s.claim(0, 3, LEASE, |i, snap| {
            assert_eq!(i, 3);
            assert_eq!(snap.results.len(), 1);
            assert_eq!(snap.pending.len(), 1, "worker 1's iteration 2 is pending");
            Ok(vec![("lr0".to_string(), 0.02)])
        });
        assert_eq!(run(c.unwrap()).iteration, 3);
        // all 3 claimed, 2 and 3 unfinished with fresh heartbeats: wait
        assert!(matches!(s.claim(2, 3, LEASE, hyp).unwrap(), Next::Wait { .. }));
        s.record(1, rec(2, 0.3), |_| Ok(())).unwrap().unwrap();
        s.record(0, rec(3, 0.3), |_| Ok(())).unwrap().unwrap();
        assert_eq!(s.claim(2, 3, LEASE, hyp).unwrap(), Next::Done);
    }

    #[test]
    fn a_lost_workers_claim_is_taken_over_after_its_lease() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let hyp = |i: u64, _: &Snapshot| Ok(vec![("lr0".to_string(), i as f64 / 100.0)]);
        let t0 = 1_000_000;
        let lost = run(s.claim_at(t0, 0, 2, LEASE, hyp).unwrap());
        let other = run(s.claim_at(t0, 1, 2, LEASE, hyp).unwrap());
        s.record(1, rec(other.iteration, 0.1), |_| Ok(())).unwrap().unwrap();
        // within the lease: wait, and say how long until it can be taken
        match s.claim_at(t0 + 100, 1, 2, LEASE, hyp).unwrap() {
            Next::Wait { stale_in } => assert_eq!(stale_in, Duration::from_secs(501)),
            n => panic!("{n:?}"),
        }
        // past the lease: worker 1 takes iteration 1 over with its values
        match s.claim_at(t0 + 601, 1, 2, LEASE, hyp).unwrap() {
            Next::Run { claim, taken_from } => {
                assert_eq!((claim.iteration, claim.worker, taken_from), (1, 1, Some(0)));
                assert_eq!(claim.hyperparameters, lost.hyperparameters);
            }
            n => panic!("{n:?}"),
        }
        // the old owner comes back: its heartbeat and its record are refused
        assert!(!s.heartbeat(0, 1).unwrap());
        assert!(s.record(0, rec(1, 0.9), |_| Ok(())).unwrap().is_none());
        assert!(s.heartbeat(1, 1).unwrap());
        s.record(1, rec(1, 0.2), |_| Ok(())).unwrap().unwrap();
        assert_eq!(
            s.results().unwrap().iter().map(|r| (r.iteration, r.fitness)).collect::<Vec<_>>(),
            vec![(2, 0.1), (1, 0.2)]
        );
        // a heartbeat refresh keeps a claim from going stale
        let d2 = tempfile::tempdir().unwrap();
        let s2 = store(d2.path());
        run(s2.claim_at(t0, 0, 1, LEASE, hyp).unwrap());
        assert!(s2.heartbeat(0, 1).unwrap());
        assert!(matches!(s2.claim(1, 1, LEASE, hyp).unwrap(), Next::Wait { .. }));
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
                    while let Next::Run { claim: c, .. } =
                        s.claim(w, 40, LEASE, |i, _| Ok(vec![("lr0".to_string(), i as f64)])).unwrap()
                    {
                        s.record(w, rec(c.iteration, 0.1), |_| Ok(())).unwrap().unwrap();
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
