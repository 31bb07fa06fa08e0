//! `results.png`: the training curves of a run folder's `results.csv`, laid out as ultralytics'
//! `plot_results` lays them out — loss columns split in two rows with the metric columns between
//! (train losses, P, R on top; val losses, mAP50, mAP50-95 below), each panel with the values
//! (dots) and a Gaussian-smoothed line (σ = 3 epochs, dotted).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{write_png, Chart, DrawResult, FONT};
use crate::error::Result;

/// One panel per column.
pub struct ResultsChart {
    /// (title, x, y) per panel, in drawing order.
    panels: Vec<(String, Vec<f64>, Vec<f64>)>,
}

impl ResultsChart {
    /// From a results.csv's header and numeric rows (first column = epoch).
    pub fn new(header: &[String], rows: &[Vec<f64>]) -> Self {
        let (mut losses, mut metrics) = (Vec::new(), Vec::new());
        for (i, c) in header.iter().enumerate() {
            if c.contains("loss") {
                losses.push(i);
            } else if c.contains("metric") {
                metrics.push(i);
            }
        }
        let (lm, mm) = (losses.len() / 2, metrics.len().div_ceil(2));
        let order: Vec<usize> =
            losses[..lm].iter().chain(&metrics[..mm]).chain(&losses[lm..]).chain(&metrics[mm..]).copied().collect();
        let x: Vec<f64> = rows.iter().map(|r| r.first().copied().unwrap_or(0.0)).collect();
        let panels = order
            .into_iter()
            .map(|j| {
                (header[j].clone(), x.clone(), rows.iter().map(|r| r.get(j).copied().unwrap_or(f64::NAN)).collect())
            })
            .collect();
        ResultsChart { panels }
    }
}

/// ultralytics' `_gaussian_filter1d(y, sigma)` (scipy's with the `reflect` boundary), truncated at 4σ.
pub fn gaussian_filter1d(y: &[f64], sigma: f64) -> Vec<f64> {
    let n = y.len() as i64;
    if n == 0 {
        return Vec::new();
    }
    let radius = (4.0 * sigma + 0.5) as i64;
    let w: Vec<f64> = (-radius..=radius).map(|k| (-0.5 * (k as f64 / sigma).powi(2)).exp()).collect();
    let sum: f64 = w.iter().sum();
    let at = |i: i64| -> f64 {
        // reflect: (d c b a | a b c d | d c b a)
        let mut i = i;
        let period = 2 * n;
        i = i.rem_euclid(period);
        if i >= n {
            i = period - 1 - i;
        }
        y[i as usize]
    };
    (0..n).map(|i| (-radius..=radius).zip(&w).map(|(k, wk)| wk * at(i + k)).sum::<f64>() / sum).collect()
}

impl Chart for ResultsChart {
    fn size(&self) -> (u32, u32) {
        let cols = self.panels.len().div_ceil(2).max(1) as u32;
        (300 * cols, 600)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let cols = self.panels.len().div_ceil(2).max(1);
        let areas = root.split_evenly((2, cols));
        for ((title, x, y), area) in self.panels.iter().zip(areas.iter()) {
            let pts: Vec<(f64, f64)> = x.iter().zip(y).filter(|(_, v)| v.is_finite()).map(|(a, b)| (*a, *b)).collect();
            let (x0, x1) = (
                x.first().copied().unwrap_or(0.0),
                x.last().copied().unwrap_or(1.0).max(x.first().copied().unwrap_or(0.0) + 1.0),
            );
            let lo = pts.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = pts.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let (lo, hi) = if lo.is_finite() { (lo, if hi > lo { hi } else { lo + 1e-6 }) } else { (0.0, 1.0) };
            let pad = (hi - lo) * 0.05;
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 16))
                .margin(8)
                .x_label_area_size(22)
                .y_label_area_size(48)
                .build_cartesian_2d(x0..x1, (lo - pad)..(hi + pad))?;
            chart.configure_mesh().disable_mesh().x_labels(5).y_labels(5).label_style((FONT, 11)).draw()?;
            let blue = RGBColor(31, 119, 180);
            chart.draw_series(LineSeries::new(pts.iter().copied(), blue.stroke_width(2)))?;
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, blue.filled())))?;
            let ys: Vec<f64> = pts.iter().map(|p| p.1).collect();
            let smooth = gaussian_filter1d(&ys, 3.0);
            let orange = RGBColor(255, 127, 14);
            let sm: Vec<(f64, f64)> = pts.iter().zip(smooth).map(|(p, s)| (p.0, s)).collect();
            chart.draw_series(
                sm.windows(2)
                    .enumerate()
                    .filter(|(i, _)| i % 2 == 0)
                    .map(|(_, w)| PathElement::new(vec![w[0], w[1]], orange.stroke_width(2))),
            )?;
        }
        Ok(())
    }
}

/// Draw `results.png` from a results.csv.
pub fn plot_results(csv: &Path, png: &Path) -> Result<()> {
    let (header, rows) = crate::train::results::read(csv)?;
    write_png(png, &ResultsChart::new(&header, &rows)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ultralytics 8.4 `_gaussian_filter1d([1, 2, 3, 10, 4], σ)` for σ 1 and 3 (the radius
    /// exceeds the length at σ 3, so the reflection wraps more than once).
    #[test]
    fn gaussian_matches_ultralytics() {
        let y = [1.0, 2.0, 3.0, 10.0, 4.0];
        let cases: [(f64, [f64; 5]); 2] = [
            (1.0, [1.454301273234435, 2.3872031070588378, 4.394208668646557, 6.056467378000211, 5.707819573059958]),
            (3.0, [3.5128123581102124, 3.699670733108639, 4.000897735389905, 4.300866935359222, 4.48575223803202]),
        ];
        for (sigma, want) in cases {
            let got = gaussian_filter1d(&y, sigma);
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-12, "sigma {sigma}: {got:?}");
            }
        }
    }
}
