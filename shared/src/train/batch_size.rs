//! What depends on the training batch size, built in one place — at setup, and again when the
//! first epoch runs out of GPU memory and the batch is halved (ultralytics 8.4's
//! `_build_train_pipeline` and its out-of-memory retry in `_do_train`).
//!
//! The retry, as 8.4 does it: an out-of-memory error in a batch's forward or backward during the
//! first epoch of this process halves the batch (at least 1), rebuilds the loaders, the nominal
//! accumulation and the scaled weight decay, keeps the weights and optimizer state, and restarts
//! the epoch; at most [`MAX_OOM_RETRIES`] times. Later epochs, and a fourth failure, stop with
//! the error.

use std::sync::Arc;

use crate::config::dataset::Dataset;
use crate::config::hyp::Hyp;
use crate::data::augment::AugmentConfig;
use crate::data::dataset::TrainDataset;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::multi_scale::MultiScale;
use crate::eval::validator::{ValConfig, ValSet};
use crate::train::schedule;
use crate::{Error, Result};

/// Halvings of the batch before an out-of-memory error is final (ultralytics: 3).
pub const MAX_OOM_RETRIES: usize = 3;

/// The loaders and optimizer settings of one batch size.
pub struct BatchPipeline {
    pub loader: Loader,
    /// The validation split at batch × 2 (None without one).
    pub val: Option<ValSet>,
    /// `max(round(nbs / batch), 1)`, capped at the run's iterations unless `time` is set.
    pub accumulate: usize,
    /// `weight_decay · batch · accumulate / nbs`.
    pub weight_decay: f64,
}

impl BatchPipeline {
    /// Builds everything that depends on `batch` for `train_set` (already sized for `batch`,
    /// see [`TrainDataset::with_batch`]).
    pub fn build(
        train_set: Arc<TrainDataset>,
        dataset: &Dataset,
        names: &[String],
        hyp: &Hyp,
        multi_scale: &MultiScale,
        batch: usize,
    ) -> Result<BatchPipeline> {
        let (imgsz, stride) = (multi_scale.imgsz, multi_scale.stride);
        let workers = hyp.workers.min(num_cpus::get().max(1));
        let loader = Loader::new(
            train_set.clone(),
            LoaderOptions {
                batch,
                workers,
                seed: hyp.seed,
                shuffle: !hyp.rect,
                augment: AugmentConfig::from_hyp(hyp, imgsz),
            },
        );
        let nb = loader.batches_per_epoch();
        // a last batch of one image at under 2 strides gives BatchNorm a single value per channel
        let final_batch = match train_set.len() % batch {
            0 => batch,
            r => r,
        };
        if multi_scale.min_size() < 2 * stride && final_batch == 1 {
            return Err(Error::config(format!(
                "final batch=1 training at imgsz={} gives BatchNorm a single value per channel",
                multi_scale.min_size()
            ))
            .with_key("multi_scale")
            .with_hint(format!("change batch, or use imgsz and multi_scale that keep every size >= {}", 2 * stride)));
        }
        let val = if dataset.has_split(&hyp.split) {
            let vc = ValConfig {
                imgsz,
                batch: batch * 2,
                iou: hyp.iou as f32,
                max_det: hyp.max_det,
                stride,
                rect: true,
                single_cls: hyp.single_cls,
                coco: false,
                ..ValConfig::default()
            };
            let set = ValSet::load(dataset, &hyp.split, names, &vc)?;
            println!("val: {} images ({} skipped)", set.len(), set.skipped.len());
            Some(set)
        } else {
            None
        };
        let epochs = hyp.epochs.max(1);
        let accumulate =
            schedule::nominal_accumulate(hyp.nbs, batch, if hyp.time.is_some() { None } else { Some(nb * epochs) });
        let weight_decay = schedule::scaled_weight_decay(hyp.weight_decay, batch, accumulate, hyp.nbs);
        Ok(BatchPipeline { loader, val, accumulate, weight_decay })
    }
}

/// Whether an error is the device running out of memory, as ultralytics tells it from the
/// message: the CUDA driver's `CUDA_ERROR_OUT_OF_MEMORY` ("out of memory") and cuBLAS's
/// `CUBLAS_STATUS_ALLOC_FAILED`, which candle passes through in its error text.
pub fn is_out_of_memory(e: &Error) -> bool {
    let m = e.message.to_ascii_lowercase();
    m.contains("out of memory") || m.contains("cuda_error_out_of_memory") || m.contains("cublas_status_alloc_failed")
}

/// The batch after a halving (ultralytics `max(batch // 2, 1)`).
pub fn halved(batch: usize) -> usize {
    (batch / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_memory_is_told_from_candles_cuda_errors() {
        // the Display texts of cudarc 0.19's errors as candle wraps them (`tensor operation failed: …`)
        let driver = Error::model("tensor operation failed: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")");
        let cublas = Error::model("tensor operation failed: CublasError(CUBLAS_STATUS_ALLOC_FAILED)");
        assert!(is_out_of_memory(&driver) && is_out_of_memory(&cublas));
        let other = Error::model("tensor operation failed: DriverError(CUDA_ERROR_ILLEGAL_ADDRESS, \"an illegal memory access was encountered\")");
        assert!(!is_out_of_memory(&other));
        assert!(!is_out_of_memory(&Error::model("shape mismatch in conv2d")));
        assert_eq!([halved(16), halved(3), halved(1)], [8, 1, 1]);
    }
}
