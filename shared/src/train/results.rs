//! `results.csv`, one row per epoch, with ultralytics 8.4's columns and formatting
//! (`BaseTrainer.save_metrics`: `epoch,time,<keys>` then `%.6g` values; loss items rounded to 5
//! decimals first, as `label_loss_items` does).

use std::path::Path;

use crate::nn::predict::fmt_g;
use crate::Result;

/// The metric columns after `epoch,time`, in ultralytics' order for detection.
pub const COLUMNS: [&str; 13] = [
    "train/box_loss",
    "train/cls_loss",
    "train/dfl_loss",
    "metrics/precision(B)",
    "metrics/recall(B)",
    "metrics/mAP50(B)",
    "metrics/mAP50-95(B)",
    "val/box_loss",
    "val/cls_loss",
    "val/dfl_loss",
    "lr/pg0",
    "lr/pg1",
    "lr/pg2",
];

/// One epoch's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EpochRow {
    /// 1-based epoch, as the file shows it.
    pub epoch: usize,
    /// Seconds since training started.
    pub time: f64,
    pub train_loss: [f64; 3],
    /// Precision, recall, mAP50, mAP50-95.
    pub metrics: [f64; 4],
    pub val_loss: [f64; 3],
    pub lr: [f64; 3],
}

/// Python's `round(x, 5)`.
fn round5(x: f64) -> f64 {
    (x * 1e5).round() / 1e5
}

impl EpochRow {
    /// The values in [`COLUMNS`] order, as ultralytics stores them before formatting.
    pub fn values(&self) -> [f64; 13] {
        let l = self.train_loss.map(round5);
        let v = self.val_loss.map(round5);
        let m = self.metrics;
        [l[0], l[1], l[2], m[0], m[1], m[2], m[3], v[0], v[1], v[2], self.lr[0], self.lr[1], self.lr[2]]
    }

    /// The CSV line (no newline).
    pub fn line(&self) -> String {
        let mut s = format!("{},{}", fmt_g(self.epoch as f64), fmt_g(self.time));
        for v in self.values() {
            s.push(',');
            s.push_str(&fmt_g(v));
        }
        s
    }
}

/// The header line.
pub fn header() -> String {
    format!("epoch,time,{}", COLUMNS.join(","))
}

/// Write the whole file (header + `rows`) atomically.
pub fn write(path: &Path, rows: &[String]) -> Result<()> {
    let mut text = header();
    text.push('\n');
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    crate::files::write_atomic(path, text.as_bytes())
}

/// Parse a results.csv written by [`write`] (or ultralytics) into columns: (header, rows of numbers).
pub fn read(path: &Path) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let text = crate::files::read_text(path)?;
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap_or_default().split(',').map(|s| s.trim().to_string()).collect();
    let rows = lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').map(|v| v.trim().parse::<f64>().unwrap_or(f64::NAN)).collect())
        .collect();
    Ok((header, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_formats_like_ultralytics() {
        let r = EpochRow {
            epoch: 1,
            time: 12.3456789,
            train_loss: [1.234567, 2.0, 0.9999999],
            metrics: [0.5, 0.25, 0.0123456789, 0.00001234],
            val_loss: [1.0, 2.0, 3.0],
            lr: [0.000333, 0.000333, 0.0997],
        };
        assert_eq!(r.line(), "1,12.3457,1.23457,2,1,0.5,0.25,0.0123457,1.234e-05,1,2,3,0.000333,0.000333,0.0997");
        assert!(header().starts_with("epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B)"));
    }
}
