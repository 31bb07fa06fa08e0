//! The tuner's two plots, laid out as ultralytics 8.4's `plot_tune_results` lays them out so
//! users recognise them: `tune_scatter_plots.png` (one panel per hyper-parameter: value vs
//! fitness, coloured by point density, the best as a black `+`) and `tune_fitness.png` (fitness
//! per iteration, best so far, the initial fitness; per-dataset initial vs best on the right).

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{write_png, Chart, DrawResult, FONT};
use crate::error::Result;

/// One finished tuning iteration, as read from tune_results.ndjson.
#[derive(Debug, Clone)]
pub struct TuneRow {
    pub iteration: u64,
    pub fitness: f64,
    /// One value per key, in `keys` order.
    pub values: Vec<f64>,
    /// (dataset name, that dataset's fitness).
    pub datasets: Vec<(String, f64)>,
}

/// Writes `dir/tune_scatter_plots.png` and `dir/tune_fitness.png` (atomically). With no row of
/// positive fitness nothing is written: `Ok(false)`.
pub fn plot_tune_results(dir: &Path, keys: &[String], rows: &[TuneRow]) -> Result<bool> {
    let kept: Vec<&TuneRow> = rows.iter().filter(|r| r.fitness > 0.0 && r.fitness.is_finite()).collect();
    if kept.is_empty() {
        return Ok(false);
    }
    let scatter_rows = reject_low_outliers(&kept);
    write_png(&dir.join("tune_scatter_plots.png"), &Scatter { keys, rows: &scatter_rows })?;
    write_png(&dir.join("tune_fitness.png"), &Progress { rows: &kept })?;
    Ok(true)
}

/// ultralytics' iterative 3-sigma rejection on the lower bound only (at most 3 rounds).
pub fn reject_low_outliers<'a>(rows: &[&'a TuneRow]) -> Vec<&'a TuneRow> {
    let mut kept: Vec<&TuneRow> = rows.to_vec();
    for _ in 0..3 {
        let n = kept.len() as f64;
        let mean = kept.iter().map(|r| r.fitness).sum::<f64>() / n;
        let std = (kept.iter().map(|r| (r.fitness - mean).powi(2)).sum::<f64>() / n).sqrt();
        let lower = mean - 3.0 * std;
        let next: Vec<&TuneRow> = kept.iter().copied().filter(|r| r.fitness >= lower).collect();
        if next.len() == kept.len() {
            break;
        }
        kept = next;
    }
    kept
}

/// matplotlib's viridis at t in [0, 1] (5 stops, linear between).
fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [(68.0, 1.0, 84.0), (59.0, 82.0, 139.0), (33.0, 145.0, 140.0), (94.0, 201.0, 98.0), (253.0, 231.0, 37.0)];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * 4.0;
    let i = (t.floor() as usize).min(3);
    let f = t - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let mix = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// `plt_color_scatter`'s colours: each point's count in a 20×20 histogram of (x, y).
fn densities(x: &[f64], y: &[f64]) -> Vec<f64> {
    const BINS: usize = 20;
    let range = |v: &[f64]| {
        let lo = v.iter().copied().filter(|a| a.is_finite()).fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().filter(|a| a.is_finite()).fold(f64::NEG_INFINITY, f64::max);
        if lo.is_finite() { (lo, if hi > lo { hi } else { lo + 1.0 }) } else { (0.0, 1.0) }
    };
    let ((x0, x1), (y0, y1)) = (range(x), range(y));
    let bin = |v: f64, lo: f64, hi: f64| if v.is_finite() { (((v - lo) / (hi - lo) * BINS as f64) as usize).min(BINS - 1) } else { 0 };
    let mut hist = vec![0.0; BINS * BINS];
    let cells: Vec<usize> = x.iter().zip(y).map(|(&a, &b)| bin(a, x0, x1) * BINS + bin(b, y0, y1)).collect();
    cells.iter().for_each(|&c| hist[c] += 1.0);
    let max = hist.iter().copied().fold(1.0, f64::max);
    cells.iter().map(|&c| hist[c] / max).collect()
}

fn bounds(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v.filter(|a| a.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), a| (l.min(a), h.max(a)));
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1e-3) * 0.05 };
    (lo - pad, hi + pad)
}

/// Python's `f"{v:.3g}"` (enough for titles).
fn g3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let e = v.abs().log10().floor() as i32;
    if !(-4..3).contains(&e) {
        let t = format!("{v:.2e}");
        let (m, ex) = t.split_once('e').unwrap_or((&t, "0"));
        let m = m.trim_end_matches('0').trim_end_matches('.');
        let ex: i32 = ex.parse().unwrap_or(0);
        return format!("{m}e{}{:02}", if ex < 0 { '-' } else { '+' }, ex.abs());
    }
    let decimals = (2 - e).max(0) as usize;
    let t = format!("{v:.decimals$}");
    if t.contains('.') { t.trim_end_matches('0').trim_end_matches('.').to_string() } else { t }
}

struct Scatter<'a> {
    keys: &'a [String],
    rows: &'a [&'a TuneRow],
}

impl Chart for Scatter<'_> {
    fn size(&self) -> (u32, u32) {
        (2000, 2000)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let n = (self.keys.len() as f64).sqrt().ceil().max(1.0) as usize;
        let areas = root.split_evenly((n, n));
        let fitness: Vec<f64> = self.rows.iter().map(|r| r.fitness).collect();
        let best = fitness.iter().enumerate().fold(0, |b, (i, &f)| if f > fitness[b] { i } else { b });
        let (y0, y1) = bounds(fitness.iter().copied());
        for (k, (key, area)) in self.keys.iter().zip(areas.iter()).enumerate() {
            let v: Vec<f64> = self.rows.iter().map(|r| r.values.get(k).copied().unwrap_or(f64::NAN)).collect();
            let (x0, x1) = bounds(v.iter().copied());
            let dens = densities(&v, &fitness);
            let title = format!("{key} = {}", g3(v[best]));
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT, 26))
                .margin(12)
                .x_label_area_size(30)
                .y_label_area_size(if k % n == 0 { 60 } else { 10 })
                .build_cartesian_2d(x0..x1, y0..y1)?;
            let mut mesh = chart.configure_mesh();
            mesh.disable_mesh().x_labels(4).label_style((FONT, 18));
            if k % n != 0 {
                mesh.y_labels(0);
            }
            mesh.draw()?;
            chart.draw_series(v.iter().zip(&fitness).zip(&dens).filter(|((x, _), _)| x.is_finite()).map(|((&x, &f), &d)| Circle::new((x, f), 6, viridis(d).mix(0.8).filled())))?;
            if v[best].is_finite() {
                let (bx, by) = (v[best], fitness[best]);
                chart.draw_series(std::iter::once(Cross::new((bx, by), 12, BLACK.stroke_width(3))))?;
            }
        }
        Ok(())
    }
}

struct Progress<'a> {
    rows: &'a [&'a TuneRow],
}

impl Chart for Progress<'_> {
    fn size(&self) -> (u32, u32) {
        (3200, 1200)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(3200 * 100 / 235);
        let it: Vec<f64> = self.rows.iter().map(|r| r.iteration as f64).collect();
        let f: Vec<f64> = self.rows.iter().map(|r| r.fitness).collect();
        let best = f.iter().enumerate().fold(0, |b, (i, &v)| if v > f[b] { i } else { b });
        let (x0, x1) = bounds(it.iter().copied());
        let (y0, y1) = bounds(f.iter().copied());
        let mut chart = ChartBuilder::on(&left)
            .caption("Fitness Progress", (FONT, 34))
            .margin(24)
            .x_label_area_size(60)
            .y_label_area_size(90)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().light_line_style(RGBColor(235, 235, 235)).bold_line_style(RGBColor(225, 225, 225)).x_desc("Iteration").y_desc("Fitness").label_style((FONT, 24)).draw()?;
        let grey = RGBColor(115, 115, 115);
        chart.draw_series(it.iter().zip(&f).map(|(&x, &y)| Circle::new((x, y), 7, grey.mix(0.75).filled())))?.label("Iteration").legend(move |(x, y)| Circle::new((x + 10, y), 7, grey.filled()));
        let mut run = f64::NEG_INFINITY;
        let acc: Vec<(f64, f64)> = it.iter().zip(&f).map(|(&x, &y)| {
            run = run.max(y);
            (x, run)
        }).collect();
        let blue = RGBColor(0x25, 0x63, 0xeb);
        chart.draw_series(LineSeries::new(acc, blue.stroke_width(5)))?.label("Best so far").legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(5)));
        let red = RGBColor(0xdc, 0x26, 0x26);
        let initial = f[0];
        let dashes: Vec<f64> = (0..40).map(|i| x0 + (x1 - x0) * i as f64 / 40.0).collect();
        chart.draw_series(dashes.iter().step_by(2).zip(dashes.iter().skip(1).step_by(2)).map(|(&a, &b)| PathElement::new(vec![(a, initial), (b, initial)], red.stroke_width(3))))?
            .label(format!("Initial {initial:.4}"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], red.stroke_width(3)));
        let green = RGBColor(0x16, 0xa3, 0x4a);
        chart.draw_series(std::iter::once(Circle::new((it[best], f[best]), 14, green.filled())))?.label("Best").legend(move |(x, y)| Circle::new((x + 10, y), 10, green.filled()));
        chart.configure_series_labels().background_style(WHITE.mix(0.9)).border_style(RGBColor(200, 200, 200)).label_font((FONT, 24)).position(SeriesLabelPosition::LowerRight).draw()?;

        // Right: per-dataset initial vs best aggregate iteration.
        let mut names: Vec<String> = self.rows.iter().flat_map(|r| r.datasets.iter().map(|(n, _)| n.clone())).collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            return Ok(());
        }
        let of = |r: &TuneRow, n: &str| r.datasets.iter().find(|(d, _)| d == n).map(|(_, v)| *v).unwrap_or(0.0);
        let pairs: Vec<(String, f64, f64)> = names.iter().map(|n| (n.clone(), of(self.rows[0], n), of(self.rows[best], n))).collect();
        let (vx0, vx1) = bounds(pairs.iter().flat_map(|p| [p.1, p.2]));
        let ny = pairs.len() as f64;
        let mut chart = ChartBuilder::on(&right)
            .caption(format!("Per-Dataset Fitness: Initial vs Best Aggregate Iteration {}", self.rows[best].iteration), (FONT, 30))
            .margin(24)
            .x_label_area_size(60)
            .y_label_area_size(220)
            .build_cartesian_2d(vx0..vx1, -0.5..(ny - 0.5))?;
        let labels = pairs.iter().map(|p| p.0.clone()).collect::<Vec<_>>();
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_desc("Fitness")
            .y_labels(pairs.len())
            .y_label_formatter(&|y| labels.get(y.round().max(0.0) as usize).cloned().unwrap_or_default())
            .label_style((FONT, 22))
            .draw()?;
        for (i, (_, a, b)) in pairs.iter().enumerate() {
            let y = i as f64;
            chart.draw_series(std::iter::once(PathElement::new(vec![(*a, y), (*b, y)], RGBColor(204, 204, 204).stroke_width(3))))?;
            chart.draw_series([Circle::new((*a, y), 9, red.filled()), Circle::new((*b, y), 9, green.filled())])?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<TuneRow> {
        (0..n)
            .map(|i| TuneRow {
                iteration: i as u64 + 1,
                fitness: 0.1 + 0.03 * ((i * 7) % 5) as f64,
                values: (0..5).map(|k| (i * (k + 1)) as f64 * 0.01).collect(),
                datasets: vec![("data-custom".into(), 0.1 + 0.03 * ((i * 7) % 5) as f64)],
            })
            .collect()
    }

    #[test]
    fn writes_both_plots() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<String> = ["lr0", "lrf", "momentum", "box", "cls"].iter().map(|s| s.to_string()).collect();
        assert!(plot_tune_results(dir.path(), &keys, &rows(10)).unwrap());
        for (name, w, h) in [("tune_scatter_plots.png", 2000, 2000), ("tune_fitness.png", 3200, 1200)] {
            let img = image::open(dir.path().join(name)).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (w, h), "{name}");
            let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
            assert!(non_white > 5000, "{name} is nearly blank ({non_white} pixels drawn)");
        }
    }

    #[test]
    fn zero_fitness_writes_nothing_and_nan_does_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec!["lr0".to_string()];
        let mut r = rows(3);
        r.iter_mut().for_each(|x| x.fitness = 0.0);
        assert!(!plot_tune_results(dir.path(), &keys, &r).unwrap());
        assert!(!dir.path().join("tune_fitness.png").exists());
        let mut r = rows(4);
        r[1].values[0] = f64::NAN;
        r[2].values[0] = f64::INFINITY;
        r[3].fitness = f64::NAN;
        assert!(plot_tune_results(dir.path(), &keys, &r).unwrap());
    }

    #[test]
    fn low_outlier_is_rejected() {
        let mut r = rows(0);
        for i in 0..20 {
            r.push(TuneRow { iteration: i + 1, fitness: 0.5 + 0.001 * i as f64, values: vec![], datasets: vec![] });
        }
        r.push(TuneRow { iteration: 21, fitness: 0.01, values: vec![], datasets: vec![] });
        let refs: Vec<&TuneRow> = r.iter().collect();
        let kept = reject_low_outliers(&refs);
        assert_eq!(kept.len(), 20);
        assert!(kept.iter().all(|x| x.iteration != 21));
        assert_eq!(g3(0.012345), "0.0123");
        assert_eq!(g3(12.0), "12");
        assert_eq!(g3(1e-5), "1e-05");
    }
}
