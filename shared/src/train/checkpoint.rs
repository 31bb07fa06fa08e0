//! Training checkpoints: `weights/last.safetensors` and `best.safetensors` as the train step
//! writes them, and everything a resumed run needs to continue *exactly* where it stopped.
//!
//! One safetensors file holds:
//! - the **EMA** weights under the network's own names: that is what `yolo-test`,
//!   `yolo-predict` and fine-tuning read (ultralytics saves its `ema` the same way);
//! - under [`TRAIN_STATE_PREFIX`]: the raw model (`train_state/model/…`), the optimizer state
//!   (`train_state/optim/…`) and gradients accumulated since the last optimizer step
//!   (`train_state/grad/…`), so a checkpoint can be taken after any batch, not only after an
//!   optimizer step;
//! - metadata: [`CheckpointMeta`] (architecture, names, train args, epoch, best fitness) and
//!   [`ResumeState`] as JSON (loader position, counters, early-stopping state, the
//!   `results.csv` rows so far, the MLflow run id).
//!
//! Files are written atomically (temp + rename), so a pod killed mid-write leaves the previous
//! checkpoint intact. [`strip`] turns a finished run's checkpoints into plain weights
//! (ultralytics' `strip_optimizer`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::nn::weights::{read_checkpoint_full, save_checkpoint_with, CheckpointMeta, TRAIN_STATE_PREFIX};
use crate::{Error, Result};

const MODEL: &str = "model/";
const OPTIM: &str = "optim/";
const GRAD: &str = "grad/";
/// Metadata key of the [`ResumeState`] JSON.
const STATE_KEY: &str = "train_state";

/// Where a run stands, and the counters that make its continuation identical to an
/// uninterrupted run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResumeState {
    /// The epoch to continue (0-based) and the next batch of it to run.
    pub epoch: usize,
    pub batch: usize,
    /// Planned epochs (a `time` budget re-plans them after each epoch).
    pub epochs: usize,
    pub ema_updates: u64,
    /// Iteration of the last optimizer step (-1 before the first).
    pub last_opt_step: i64,
    pub accumulate: usize,
    /// Running mean of this epoch's loss items so far.
    pub tloss: Option<[f64; 3]>,
    pub best_fitness: Option<f64>,
    pub fitness: Option<f64>,
    pub stopper_best_fitness: f64,
    pub stopper_best_epoch: usize,
    pub nan_recovery_attempts: usize,
    /// Training seconds so far (the `time` column of results.csv continues from it).
    pub train_seconds: f64,
    /// The results.csv rows written so far (header excluded).
    pub results_rows: Vec<String>,
    pub mlflow_run_id: Option<String>,
    /// What the run trains on, to refuse resuming with another dataset.
    pub data_yaml: String,
    /// Set by [`strip`]: nothing left to resume.
    pub finished: bool,
}

/// Everything read back from a training checkpoint.
pub struct Loaded {
    pub meta: CheckpointMeta,
    pub state: Option<ResumeState>,
    pub ema: Vec<(String, Tensor)>,
    pub model: Vec<(String, Tensor)>,
    pub optim: HashMap<String, Tensor>,
    pub grads: Vec<(String, Tensor)>,
}

/// What one checkpoint holds; tensors are copied to the CPU as f32.
pub struct Snapshot<'a> {
    pub ema: &'a candle_nn::VarMap,
    pub model: &'a candle_nn::VarMap,
    pub optim: HashMap<String, Tensor>,
    pub grads: Vec<(String, Tensor)>,
    pub meta: &'a CheckpointMeta,
    pub state: &'a ResumeState,
}

/// Write a full training checkpoint to `path` atomically.
pub fn save(path: &Path, snap: &Snapshot) -> Result<()> {
    // same dtype (f64 optimizer hyper-parameters stay exact), on the CPU
    let cpu = |t: &Tensor| -> Result<Tensor> { Ok(t.detach().to_device(&candle_core::Device::Cpu)?) };
    let mut tensors = crate::nn::weights::varmap_tensors(snap.ema)?;
    for (k, t) in crate::nn::weights::varmap_tensors(snap.model)? {
        tensors.push((format!("{TRAIN_STATE_PREFIX}{MODEL}{k}"), t));
    }
    let mut optim: Vec<_> = snap.optim.iter().collect();
    optim.sort_by(|a, b| a.0.cmp(b.0));
    for (k, t) in optim {
        tensors.push((format!("{TRAIN_STATE_PREFIX}{OPTIM}{k}"), cpu(t)?));
    }
    for (k, t) in &snap.grads {
        tensors.push((format!("{TRAIN_STATE_PREFIX}{GRAD}{k}"), cpu(t)?));
    }
    let state =
        serde_json::to_string(snap.state).map_err(|e| Error::internal(format!("cannot encode train state: {e}")))?;
    save_checkpoint_with(path, tensors, snap.meta, HashMap::from([(STATE_KEY.to_string(), state)]))
}

/// Read a checkpoint written by [`save`] (or plain weights: then `state` is None and only
/// `ema` is filled).
pub fn load(path: &Path) -> Result<Loaded> {
    let (meta, raw, tensors) = read_checkpoint_full(path)?;
    let state = parse_state(&raw, path)?;
    let mut out = Loaded { meta, state, ema: Vec::new(), model: Vec::new(), optim: HashMap::new(), grads: Vec::new() };
    for (k, t) in tensors {
        match k.strip_prefix(TRAIN_STATE_PREFIX) {
            None => out.ema.push((k, t)),
            Some(rest) => {
                if let Some(n) = rest.strip_prefix(MODEL) {
                    out.model.push((n.to_string(), t));
                } else if let Some(n) = rest.strip_prefix(OPTIM) {
                    out.optim.insert(n.to_string(), t);
                } else if let Some(n) = rest.strip_prefix(GRAD) {
                    out.grads.push((n.to_string(), t));
                }
            }
        }
    }
    Ok(out)
}

/// Only the resume state of a checkpoint (None for plain weights), read from the safetensors
/// header without loading the tensors: for a look at a checkpoint before the run loads it.
pub fn read_state(path: &Path) -> Result<Option<ResumeState>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io_at(path, "read checkpoint", e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| Error::io_at(path, "read checkpoint header", e))?;
    let n = u64::from_le_bytes(len);
    // safetensors caps its header at 100 MB
    if n > 100_000_000 {
        return Err(Error::model("not a safetensors file: header too long").with_file(path));
    }
    let mut head = vec![0u8; n as usize];
    f.read_exact(&mut head).map_err(|e| Error::io_at(path, "read checkpoint header", e))?;
    // the header is JSON: tensor entries plus the string map `__metadata__`
    #[derive(Deserialize)]
    struct Header {
        #[serde(rename = "__metadata__", default)]
        metadata: HashMap<String, String>,
    }
    let h: Header = serde_json::from_slice(&head)
        .map_err(|e| Error::model(format!("not a safetensors file: {e}")).with_file(path))?;
    parse_state(&h.metadata, path)
}

fn parse_state(raw: &HashMap<String, String>, path: &Path) -> Result<Option<ResumeState>> {
    raw.get(STATE_KEY)
        .map(|s| {
            serde_json::from_str::<ResumeState>(s).map_err(|e| {
                Error::model(format!("the checkpoint's training state is unreadable: {e}"))
                    .with_file(path)
                    .with_hint("start a new run (resume=False) or point resume at another last.safetensors")
            })
        })
        .transpose()
}

/// Drop the resume state from a finished run's checkpoint, keeping the EMA weights and the
/// metadata (ultralytics' `strip_optimizer`); the state is kept as `finished` so a later
/// `resume` says there is nothing to resume.
pub fn strip(path: &Path) -> Result<()> {
    let l = load(path)?;
    let mut extra = HashMap::new();
    if let Some(mut st) = l.state {
        st.finished = true;
        extra.insert(STATE_KEY.to_string(), serde_json::to_string(&st).map_err(|e| Error::internal(e.to_string()))?);
    }
    save_checkpoint_with(path, l.ema, &l.meta, extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn round_trip_keeps_every_part_apart() {
        let dev = Device::Cpu;
        let (ema, model) = (candle_nn::VarMap::new(), candle_nn::VarMap::new());
        ema.get((2,), "model.0.bn.weight", candle_nn::Init::Const(1.0), DType::F32, &dev).unwrap();
        model.get((2,), "model.0.bn.weight", candle_nn::Init::Const(2.0), DType::F32, &dev).unwrap();
        let meta = CheckpointMeta { model_yaml: "nc: 1".into(), nc: 1, ..Default::default() };
        let state = ResumeState { epoch: 3, batch: 5, results_rows: vec!["1,2".into()], ..Default::default() };
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("last.safetensors");
        let optim = HashMap::from([("model.0.bn.weight.m".to_string(), Tensor::new(&[3f32, 3.], &dev).unwrap())]);
        let grads = vec![("model.0.bn.weight".to_string(), Tensor::new(&[4f32, 4.], &dev).unwrap())];
        save(&p, &Snapshot { ema: &ema, model: &model, optim, grads, meta: &meta, state: &state }).unwrap();
        let l = load(&p).unwrap();
        assert_eq!(l.state.as_ref(), Some(&state));
        // the header alone gives the same state
        assert_eq!(read_state(&p).unwrap().as_ref(), Some(&state));
        assert_eq!(l.ema[0].1.to_vec1::<f32>().unwrap(), vec![1., 1.]);
        assert_eq!(l.model[0].1.to_vec1::<f32>().unwrap(), vec![2., 2.]);
        assert_eq!(l.optim["model.0.bn.weight.m"].to_vec1::<f32>().unwrap(), vec![3., 3.]);
        assert_eq!(l.grads[0].1.to_vec1::<f32>().unwrap(), vec![4., 4.]);
        // readers of the weights see only the EMA
        let (_, plain) = crate::nn::weights::read_checkpoint(&p).unwrap();
        assert_eq!(plain.len(), 1);
        strip(&p).unwrap();
        let l = load(&p).unwrap();
        assert!(l.state.unwrap().finished);
        assert!(read_state(&p).unwrap().unwrap().finished);
        assert!(l.model.is_empty() && l.optim.is_empty());
    }
}
