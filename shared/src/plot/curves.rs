//! Validation charts: precision-recall curve, F1-confidence curve, confusion matrix.
//!
//! The same three charts ultralytics saves after `val` (`BoxPR_curve.png`, `BoxF1_curve.png`,
//! `confusion_matrix_normalized.png`), drawn from [`DetMetrics`] / [`ConfusionMatrix`] so users
//! can put kubeyolo's and ultralytics' side by side. Per-class lines get a legend when there are
//! fewer than 21 classes (ultralytics' rule); the thick blue line is the mean over classes.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{write_png, Chart, DrawResult, FONT};
use crate::error::Result;
use crate::eval::metrics::{smooth, ConfusionMatrix, DetMetrics};

const W: u32 = 1350;
const H: u32 = 900;

/// A distinct colour per class line (matplotlib's tab10 cycle, as ultralytics' plots use).
fn class_color(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TAB10[i % 10];
    RGBColor(r, g, b)
}

/// One chart with per-class curves (thin) and a mean curve (thick blue), x and y in [0, 1].
fn line_chart<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    px: &[f64],
    rows: &[(String, &[f64])],
    mean: (String, Vec<f64>),
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let legend = !rows.is_empty() && rows.len() < 21;
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FONT, 30))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc(ylabel)
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 22))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    for (i, (name, ys)) in rows.iter().enumerate() {
        let color = if legend { class_color(i) } else { RGBColor(128, 128, 128) };
        let series =
            chart.draw_series(LineSeries::new(px.iter().copied().zip(ys.iter().copied()), color.stroke_width(2)))?;
        if legend {
            series
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3)));
        }
    }
    let blue = RGBColor(0, 0, 255);
    chart
        .draw_series(LineSeries::new(px.iter().copied().zip(mean.1.iter().copied()), blue.stroke_width(5)))?
        .label(mean.0)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], blue.stroke_width(5)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 18))
        .draw()?;
    Ok(())
}

fn mean_rows(rows: &[Vec<f64>], len: usize) -> Vec<f64> {
    let mut m = vec![0.0; len];
    for r in rows {
        for (a, b) in m.iter_mut().zip(r) {
            *a += b;
        }
    }
    let n = rows.len().max(1) as f64;
    m.iter().map(|v| v / n).collect()
}

/// Precision-recall curve at IoU 0.5, per class with its AP50, and the mean (`BoxPR_curve.png`).
pub struct PrCurve<'a>(pub &'a DetMetrics);

impl Chart for PrCurve<'_> {
    fn size(&self) -> (u32, u32) {
        (W, H)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let m = self.0;
        let c = &m.curves;
        let rows: Vec<(String, &[f64])> = m
            .classes
            .iter()
            .zip(&c.prec_values)
            .map(|(row, ys)| (format!("{} {:.3}", row.name, row.map50), ys.as_slice()))
            .collect();
        let mean = mean_rows(&c.prec_values, c.px.len());
        let label = format!("all classes {:.3} mAP@0.5", m.map50);
        line_chart(root, "Precision-Recall Curve", "Recall", "Precision", &c.px, &rows, (label, mean))
    }
}

/// F1-confidence curve per class and the smoothed mean, labelled with its peak (`BoxF1_curve.png`).
pub struct F1Curve<'a>(pub &'a DetMetrics);

impl Chart for F1Curve<'_> {
    fn size(&self) -> (u32, u32) {
        (W, H)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let m = self.0;
        let c = &m.curves;
        let rows: Vec<(String, &[f64])> =
            m.classes.iter().zip(&c.f1_curve).map(|(row, ys)| (row.name.clone(), ys.as_slice())).collect();
        let mean = smooth(&mean_rows(&c.f1_curve, c.px.len()), 0.1);
        let best = crate::eval::metrics::argmax(&mean);
        let label = format!(
            "all classes {:.2} at {:.3}",
            mean.get(best).copied().unwrap_or(0.0),
            c.px.get(best).copied().unwrap_or(0.0)
        );
        line_chart(root, "F1-Confidence Curve", "Confidence", "F1", &c.px, &rows, (label, mean))
    }
}

/// Confusion matrix heat map (rows predicted, columns true, last = background).
/// `normalize` divides each column by its total, as `confusion_matrix_normalized.png`.
pub struct ConfusionPlot<'a> {
    pub cm: &'a ConfusionMatrix,
    pub names: &'a [String],
    pub normalize: bool,
}

impl Chart for ConfusionPlot<'_> {
    fn size(&self) -> (u32, u32) {
        let side = (900 + 20 * (self.cm.nc as u32 + 1)).min(2400);
        (side + 150, side)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (cm, normalize) = (self.cm, self.normalize);
        let n = cm.nc + 1;
        let values = if normalize { cm.normalized() } else { cm.matrix.clone() };
        let mut labels: Vec<String> =
            (0..cm.nc).map(|i| self.names.get(i).cloned().unwrap_or_else(|| i.to_string())).collect();
        labels.push("background".into());
        let labels = &labels;
        let vmax = values.iter().flatten().copied().fold(0.0f64, f64::max).max(1e-9);
        let title = if normalize { "Confusion Matrix Normalized" } else { "Confusion Matrix" };
        let annotate = n < 30;
        let nf = n as f64;
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 30))
            .margin(20)
            .x_label_area_size(70)
            .y_label_area_size(150)
            .build_cartesian_2d(0f64..nf, 0f64..nf)?;
        let label_px = if n > 15 { 12 } else { 18 };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc("True")
            .y_desc("Predicted")
            .axis_desc_style((FONT, 22))
            .draw()?;
        let cells = (0..n).flat_map(|r| (0..n).map(move |c| (r, c)));
        chart.draw_series(cells.map(|(r, c)| {
            let v = values[r][c];
            let t = (v / vmax).clamp(0.0, 1.0);
            // white -> dark blue (matplotlib "Blues")
            let color = RGBColor((247.0 - t * 239.0) as u8, (251.0 - t * 203.0) as u8, (255.0 - t * 148.0) as u8);
            // y grows upwards: predicted row r is drawn at y = n-1-r
            let y = (n - 1 - r) as f64;
            Rectangle::new([(c as f64, y), (c as f64 + 1.0, y + 1.0)], color.filled())
        }))?;
        for (i, name) in labels.iter().enumerate() {
            let (x, y0) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            let style = (FONT, label_px).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(name.clone(), (x, y0 + 8), style))?;
            let (x0, y) = chart.backend_coord(&(0.0, (n - 1 - i) as f64 + 0.5));
            let style = (FONT, label_px).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
            root.draw(&Text::new(name.clone(), (x0 - 8, y), style))?;
        }
        if annotate {
            let font_px = if n > 12 { 12 } else { 20 };
            for r in 0..n {
                for c in 0..n {
                    let v = values[r][c];
                    if v == 0.0 {
                        continue;
                    }
                    let text = if normalize { format!("{v:.2}") } else { format!("{}", v as i64) };
                    let color = if v / vmax > 0.5 { WHITE } else { BLACK };
                    let centre = chart.backend_coord(&(c as f64 + 0.5, (n - 1 - r) as f64 + 0.5));
                    let style = (FONT, font_px).into_font().color(&color).pos(Pos::new(HPos::Center, VPos::Center));
                    root.draw(&Text::new(text, centre, style))?;
                }
            }
        }
        Ok(())
    }
}

/// Write the PR curve PNG.
pub fn pr_curve(path: &Path, m: &DetMetrics) -> Result<()> {
    write_png(path, &PrCurve(m)).map(|_| ())
}

/// Write the F1 curve PNG.
pub fn f1_curve(path: &Path, m: &DetMetrics) -> Result<()> {
    write_png(path, &F1Curve(m)).map(|_| ())
}

/// Write the confusion matrix PNG (normalised per true class when `normalize`).
pub fn confusion_matrix(path: &Path, cm: &ConfusionMatrix, names: &[String], normalize: bool) -> Result<()> {
    write_png(path, &ConfusionPlot { cm, names, normalize }).map(|_| ())
}
