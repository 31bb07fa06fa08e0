//! Where a training epoch's time goes, for profiling on any device: with `KUBEYOLO_PHASES=1` the
//! trainer synchronises the device after each phase of a batch (data, upload, forward, loss,
//! backward, optimizer step, the rest) and prints the seconds each took once per epoch, with the
//! validation's. Synchronising costs a little on a GPU (the CPU no longer queues the next phase's
//! kernels while the GPU runs), so it is off by default; the epoch's total is printed beside the
//! phases so that cost is visible.

use std::time::Instant;

use candle_core::Device;

use crate::error::{Error, Result};

/// The phases of a batch, in the order the trainer marks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Data,
    Upload,
    Forward,
    Loss,
    Backward,
    Optimizer,
    Other,
}

/// The phases' names, indexed by `Phase as usize`.
const NAMES: [&str; 7] = ["data", "upload", "forward", "loss", "backward", "optimizer", "other"];

/// Per-phase seconds of one epoch (a no-op unless `KUBEYOLO_PHASES=1`).
pub struct Phases {
    device: Option<Device>,
    last: Instant,
    epoch_start: Instant,
    seconds: [f64; NAMES.len()],
    batches: usize,
}

impl Phases {
    /// On when the environment says `KUBEYOLO_PHASES=1`.
    pub fn from_env(device: &Device) -> Self {
        let on = std::env::var("KUBEYOLO_PHASES").is_ok_and(|v| v == "1");
        Self::new(on.then(|| device.clone()))
    }

    fn new(device: Option<Device>) -> Self {
        let now = Instant::now();
        Phases { device, last: now, epoch_start: now, seconds: [0.0; NAMES.len()], batches: 0 }
    }

    /// Start an epoch's count.
    pub fn start_epoch(&mut self) {
        self.seconds = [0.0; NAMES.len()];
        self.batches = 0;
        self.epoch_start = Instant::now();
        self.last = self.epoch_start;
    }

    /// `phase` ends now: wait for the device, add the time since the previous mark.
    pub fn mark(&mut self, phase: Phase) -> Result<()> {
        let Some(device) = &self.device else { return Ok(()) };
        device.synchronize().map_err(|e| Error::internal(format!("phase timing: synchronize: {e}")))?;
        let now = Instant::now();
        self.seconds[phase as usize] += now.duration_since(self.last).as_secs_f64();
        if phase == Phase::Data {
            self.batches += 1;
        }
        self.last = now;
        Ok(())
    }

    /// The epoch's line (None when off), e.g. `phases, epoch 2 (16 batches, 3.10 s): data 0.02 s
    /// (1%), upload …; validation 0.40 s`.
    pub fn report(&self, epoch: usize, validation_s: Option<f64>) -> Option<String> {
        self.device.as_ref()?;
        let total: f64 = self.seconds.iter().sum();
        let parts: Vec<String> = NAMES
            .iter()
            .zip(self.seconds)
            .map(|(p, s)| format!("{p} {s:.3} s ({:.0}%)", 100.0 * s / total.max(1e-12)))
            .collect();
        let val = validation_s.map(|v| format!("; validation {v:.3} s")).unwrap_or_default();
        Some(format!(
            "phases, epoch {} ({} batches, {:.3} s): {}{val}",
            epoch + 1,
            self.batches,
            self.epoch_start.elapsed().as_secs_f64().max(total),
            parts.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_counts_each_phase_when_on() {
        assert!(Phases::new(None).report(0, None).is_none());
        let mut p = Phases::new(Some(Device::Cpu));
        p.start_epoch();
        use Phase::*;
        for _ in 0..2 {
            for phase in [Data, Upload, Forward, Loss, Backward, Optimizer, Other] {
                std::thread::sleep(std::time::Duration::from_millis(if phase == Forward { 6 } else { 1 }));
                p.mark(phase).unwrap();
            }
        }
        assert_eq!(p.batches, 2);
        assert!(p.seconds[Forward as usize] >= 0.012 && p.seconds.iter().all(|s| *s >= 0.002), "{:?}", p.seconds);
        let line = p.report(1, Some(0.5)).unwrap();
        assert!(line.starts_with("phases, epoch 2 (2 batches,") && line.ends_with("; validation 0.500 s"), "{line}");
    }
}
