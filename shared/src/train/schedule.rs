//! Learning-rate schedule and warm-up, as ultralytics 8.4's `BaseTrainer` drives them.
//!
//! - The epoch factor `lf(epoch)` multiplies each group's initial learning rate (`LambdaLR`,
//!   stepped once at the start of every epoch): linear `(1 - e/epochs)·(1 - lrf) + lrf`, or with
//!   `cos_lr` the `one_cycle(1, lrf, epochs)` half-cosine.
//! - Warm-up over the first `nw = round(min(warmup_epochs, epochs - 1) · batches)` iterations
//!   interpolates (numpy `interp`, clamped) every group's lr from 0 (biases: from
//!   `warmup_bias_lr`) to `lr0 · lf(epoch)`, SGD momentum from `warmup_momentum` to `momentum`,
//!   and the accumulation count from 1 to its nominal value.

/// numpy's `np.interp(x, [x0, x1], [y0, y1])` for two points: linear between, clamped outside.
pub fn interp(x: f64, xp: [f64; 2], fp: [f64; 2]) -> f64 {
    if x <= xp[0] {
        fp[0]
    } else if x >= xp[1] {
        fp[1]
    } else {
        fp[0] + (x - xp[0]) * (fp[1] - fp[0]) / (xp[1] - xp[0])
    }
}

/// The per-epoch learning-rate factor (ultralytics `self.lf`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub epochs: usize,
    pub lrf: f64,
    pub cos_lr: bool,
}

impl LrSchedule {
    /// `lf(epoch)`: the factor applied to `lr0` during epoch `epoch` (0-based).
    pub fn factor(&self, epoch: usize) -> f64 {
        let (x, n) = (epoch as f64, self.epochs as f64);
        if self.cos_lr {
            // one_cycle(1, lrf, epochs): max((1 - cos(x·π/steps)) / 2, 0)·(y2 - y1) + y1
            ((1.0 - (x * std::f64::consts::PI / n).cos()) / 2.0).max(0.0) * (self.lrf - 1.0) + 1.0
        } else {
            (1.0 - x / n).max(0.0) * (1.0 - self.lrf) + self.lrf
        }
    }
}

/// ultralytics `_get_warmup_iterations`: warm-up leaves at least the final epoch for regular
/// training.
pub fn warmup_iterations(warmup_epochs: f64, epochs: usize, batches_per_epoch: usize) -> usize {
    let we = warmup_epochs.min(epochs.saturating_sub(1) as f64);
    if we > 0.0 {
        py_round(we * batches_per_epoch as f64) as usize
    } else {
        0
    }
}

/// Gradient-accumulation count: `max(round(nbs / batch), 1)`, capped at the total number of
/// iterations (unless a `time` budget re-plans the epochs), as `_build_train_pipeline` does.
pub fn nominal_accumulate(nbs: usize, batch: usize, total_iterations: Option<usize>) -> usize {
    let acc = (py_round(nbs as f64 / batch.max(1) as f64) as usize).max(1);
    match total_iterations {
        Some(t) => acc.min(t.max(1)),
        None => acc,
    }
}

/// `weight_decay · batch · accumulate / nbs` (ultralytics scales decay to the nominal batch).
pub fn scaled_weight_decay(weight_decay: f64, batch: usize, accumulate: usize, nbs: usize) -> f64 {
    weight_decay * batch as f64 * accumulate as f64 / nbs as f64
}

/// What warm-up sets at iteration `ni` (ultralytics' per-batch warm-up block).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupState {
    pub accumulate: usize,
    /// Learning rates of groups weight, bn, bias.
    pub lr: [f64; 3],
    pub momentum: f64,
}

/// Hyper-parameters of warm-up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup {
    pub iterations: usize,
    pub accumulate: usize,
    pub lr0: f64,
    pub warmup_bias_lr: f64,
    pub warmup_momentum: f64,
    pub momentum: f64,
}

impl Warmup {
    /// The state at global iteration `ni` in epoch `epoch`, or None after warm-up (`ni > nw`),
    /// where the epoch's scheduled values hold.
    pub fn at(&self, ni: usize, epoch: usize, sched: &LrSchedule) -> Option<WarmupState> {
        let nw = self.iterations;
        if nw == 0 || ni > nw {
            return None;
        }
        let xi = [0.0, nw as f64];
        let x = ni as f64;
        let target = self.lr0 * sched.factor(epoch);
        let accumulate = (py_round(interp(x, xi, [1.0, self.accumulate as f64])) as usize).max(1);
        let lr_w = self.lr(ni, false, target);
        let lr_b = self.lr(ni, true, target);
        let momentum = interp(x, xi, [self.warmup_momentum, self.momentum]);
        Some(WarmupState { accumulate, lr: [lr_w, lr_w, lr_b], momentum })
    }

    /// One parameter group's warm-up lr at iteration `ni` towards `target` (its `initial_lr ·
    /// lf(epoch)`): biases start from `warmup_bias_lr`, every other group from 0.
    pub fn lr(&self, ni: usize, bias: bool, target: f64) -> f64 {
        let from = if bias { self.warmup_bias_lr } else { 0.0 };
        interp(ni as f64, [0.0, self.iterations as f64], [from, target])
    }
}

/// Python's `round` (half to even), which ultralytics uses for counts (the one implementation
/// lives beside the model yaml's depth rounding).
pub fn py_round(x: f64) -> f64 {
    crate::nn::model::py_round(x) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_clamps_like_numpy() {
        assert_eq!(interp(-1.0, [0.0, 10.0], [1.0, 3.0]), 1.0);
        assert_eq!(interp(5.0, [0.0, 10.0], [1.0, 3.0]), 2.0);
        assert_eq!(interp(11.0, [0.0, 10.0], [1.0, 3.0]), 3.0);
    }

    #[test]
    fn python_round_is_half_even() {
        assert_eq!(py_round(2.5), 2.0);
        assert_eq!(py_round(3.5), 4.0);
        assert_eq!(py_round(4.0), 4.0);
        assert_eq!(py_round(1.2), 1.0);
    }

    #[test]
    fn accumulate_and_decay() {
        assert_eq!(nominal_accumulate(64, 16, None), 4);
        assert_eq!(nominal_accumulate(64, 16, Some(3)), 3);
        assert_eq!(nominal_accumulate(64, 128, None), 1);
        assert!((scaled_weight_decay(5e-4, 16, 4, 64) - 5e-4).abs() < 1e-15);
        assert_eq!(warmup_iterations(3.0, 1, 10), 0);
        assert_eq!(warmup_iterations(3.0, 2, 10), 10);
        assert_eq!(warmup_iterations(3.0, 100, 7), 21);
    }
}
