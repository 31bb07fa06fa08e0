//! Training progress on the console: on a terminal, one live line per epoch redrawn in place
//! (ultralytics' tqdm bar: epoch, memory, box/cls/dfl loss, instances, size, it/s, ETA); in a
//! pod (no terminal), one plain line every `interval`, so logs stay readable in the Kubeflow UI.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use candle_core::Device;

/// ultralytics' column header (`progress_string`), `GPU_mem` reads `Mem` here: resident memory
/// on the CPU, device memory on a GPU.
pub fn header() -> String {
    format!(
        "{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}",
        "Epoch", "Mem", "box_loss", "cls_loss", "dfl_loss", "Instances", "Size"
    )
}

/// One epoch's progress line.
pub struct Progress {
    /// The device trained on: its memory fills the `Mem` column.
    device: Device,
    tty: bool,
    total: usize,
    start: Instant,
    last_print: Option<Instant>,
    interval: Duration,
    line: String,
}

impl Progress {
    /// A line for an epoch of `total` batches on `device`.
    pub fn new(total: usize, interval: Duration, device: &Device) -> Self {
        Progress {
            device: device.clone(),
            tty: std::io::stderr().is_terminal(),
            total,
            start: Instant::now(),
            last_print: None,
            interval,
            line: String::new(),
        }
    }

    /// After batch `i` (0-based; `run` batches timed in this process so far).
    pub fn update(
        &mut self,
        epoch: usize,
        epochs: usize,
        tloss: [f64; 3],
        instances: usize,
        size: usize,
        i: usize,
        run: usize,
    ) {
        let el = self.start.elapsed().as_secs_f64();
        let rate = run as f64 / el.max(1e-9);
        let left = (self.total - (i + 1).min(self.total)) as f64 / rate.max(1e-9);
        self.line = format!(
            "{:>11}{:>11}{:>11.4}{:>11.4}{:>11.4}{:>11}{:>11}  {}/{} {:.2}it/s {}<{}",
            format!("{}/{}", epoch + 1, epochs),
            format!("{:.3}G", crate::device::memory_gb(&self.device)),
            tloss[0],
            tloss[1],
            tloss[2],
            instances,
            size,
            i + 1,
            self.total,
            rate,
            clock(el),
            clock(left)
        );
        let due = self.last_print.is_none_or(|t| t.elapsed() >= self.interval) || i + 1 == self.total;
        if self.tty {
            eprint!("\r{}", self.line);
            let _ = std::io::stderr().flush();
        } else if due {
            eprintln!("{}", self.line);
            self.last_print = Some(Instant::now());
        }
    }

    /// End the epoch's line.
    pub fn finish(&mut self) {
        if self.tty && !self.line.is_empty() {
            eprintln!();
        }
    }
}

/// `mm:ss` or `h:mm:ss`, as tqdm prints times.
fn clock(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 60, s % 60)
    }
}
