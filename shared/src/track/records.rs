//! What a step hands to the background logger: one [`Op`] per call, in call order.
//!
//! The same records travel through the in-memory queue, the JSON of the MLflow API and the spool
//! file, so a record that waited on disk for an hour is sent exactly as it would have been live
//! (with the timestamp of the moment it was logged). Runs are named by a *local* id chosen by the
//! process, because the server's run id may not exist yet (server down at start); the logger maps
//! local ids to server run ids.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Terminal (or running) status of a run, as MLflow spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Running,
    Finished,
    Failed,
    Killed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "RUNNING",
            Status::Finished => "FINISHED",
            Status::Failed => "FAILED",
            Status::Killed => "KILLED",
        }
    }
}

/// A metric value. JSON has no NaN/Infinity and serde_json would write `null`, which the server
/// rejects; MLflow accepts (and stores) the strings `"NaN"`, `"Infinity"`, `"-Infinity"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value(pub f64);

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v = self.0;
        if v.is_nan() {
            s.serialize_str("NaN")
        } else if v.is_infinite() {
            s.serialize_str(if v > 0.0 { "Infinity" } else { "-Infinity" })
        } else {
            s.serialize_f64(v)
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Text(String),
        }
        Ok(Value(match Raw::deserialize(d)? {
            Raw::Num(v) => v,
            Raw::Text(t) => match t.as_str() {
                "NaN" => f64::NAN,
                "Infinity" => f64::INFINITY,
                "-Infinity" => f64::NEG_INFINITY,
                other => other.parse().map_err(serde::de::Error::custom)?,
            },
        }))
    }
}

/// One metric point, exactly as `log-batch` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub key: String,
    pub value: Value,
    /// Epoch milliseconds at the moment the step logged it.
    pub timestamp: i64,
    pub step: i64,
}

/// A param or a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// Which experiment a new run goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Experiment {
    Name(String),
    Id(String),
}

/// One unit of work for the logger. `run` is always the local run id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Create a run, or attach to `existing` (a server run id) and set it RUNNING.
    Start {
        run: String,
        experiment: Experiment,
        run_name: Option<String>,
        /// Local id of the parent run (nested runs of this process).
        parent: Option<String>,
        /// Server id of a parent run created elsewhere (`--mlflow-parent-run-id`).
        parent_remote: Option<String>,
        existing: Option<String>,
        tags: Vec<KeyValue>,
        start_time: i64,
    },
    /// The local run already exists on the server (written at the top of spool files).
    Attach { run: String, remote: String, artifact_uri: Option<String> },
    /// Metrics, params and tags (already sanitised and within the batch limits).
    Log {
        run: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        metrics: Vec<Metric>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        params: Vec<KeyValue>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tags: Vec<KeyValue>,
    },
    /// Upload `file` to `dest` (path inside the run's artifacts, with the file name).
    /// `owned`: the file is a spool copy, deleted once uploaded.
    Artifact { run: String, file: std::path::PathBuf, dest: String, owned: bool },
    /// Set the run's terminal status.
    End { run: String, status: Status, end_time: i64 },
}

impl Op {
    pub fn run(&self) -> &str {
        match self {
            Op::Start { run, .. }
            | Op::Attach { run, .. }
            | Op::Log { run, .. }
            | Op::Artifact { run, .. }
            | Op::End { run, .. } => run,
        }
    }
}

/// Milliseconds since the Unix epoch (MLflow's time unit).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A fresh local id: 16 hex characters.
pub fn new_local_id() -> String {
    use rand::Rng;
    format!("{:016x}", rand::thread_rng().gen::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_strings() {
        let m = Metric { key: "a".into(), value: Value(f64::NAN), timestamp: 1, step: 2 };
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.contains("\"value\":\"NaN\""), "{j}");
        let back: Metric = serde_json::from_str(&j).unwrap();
        assert!(back.value.0.is_nan());
        let j = serde_json::to_string(&Value(f64::NEG_INFINITY)).unwrap();
        assert_eq!(j, "\"-Infinity\"");
        let v: Value = serde_json::from_str("0.25").unwrap();
        assert_eq!(v.0, 0.25);
    }

    #[test]
    fn ops_round_trip_as_json_lines() {
        let op = Op::Log {
            run: "r".into(),
            metrics: vec![Metric { key: "k".into(), value: Value(1.5), timestamp: 3, step: 0 }],
            params: vec![],
            tags: vec![KeyValue { key: "t".into(), value: "v".into() }],
        };
        let line = serde_json::to_string(&op).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<Op>(&line).unwrap(), op);
    }
}
