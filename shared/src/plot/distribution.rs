//! The class-distribution chart: images per class and instances per class, one row per split.
//!
//! Layout (chosen to stay legible with COCO's 80 classes): horizontal bars, class names on the
//! left of each panel in the dataset's class order (class 0 on top), the count printed at the end
//! of each bar, and the canvas height grown with the class count instead of squeezing names.
//! Each split (train, val, test) is one row with two panels side by side — images per class |
//! instances per class — in the split's own colour, with a one-line summary above it. A class
//! with no image in a split is flagged with a red `0`, because a class missing from val/test
//! makes its metrics meaningless.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{axis_count, compact_count, ellipsize, palette, text_width, Chart, DrawResult, FONT};
use crate::data::scan::{Distribution, SplitStats};
use crate::error::{Error, Result};

/// Longest class-name label, in pixels, before it is cut with `…`.
const MAX_LABEL_PX: u32 = 260;
/// Width of the bar area of one panel.
const BAR_AREA_PX: u32 = 460;
const TITLE_H: u32 = 48;
const SPLIT_HEAD_H: u32 = 30;
const CAPTION_H: u32 = 26;
const X_AXIS_H: u32 = 36;
const PANEL_PAD: u32 = 18;

/// The chart for one [`Distribution`]. Build with [`DistributionChart::new`], draw with
/// [`super::write_png`] / [`super::write_svg`].
#[derive(Debug, Clone)]
pub struct DistributionChart {
    title: String,
    names: Vec<String>,
    splits: Vec<SplitStats>,
    /// Class-name labels, cut to [`MAX_LABEL_PX`].
    labels: Vec<String>,
    font_px: u32,
    row_px: u32,
    label_px: u32,
}

impl DistributionChart {
    /// Check the distribution's shape (per-class vectors as long as the class list, at least one
    /// class and one split) and lay the chart out for its class count.
    pub fn new(dist: &Distribution, title: impl Into<String>) -> Result<Self> {
        let nc = dist.names.len();
        if nc == 0 {
            return Err(Error::data("the distribution has no class names; nothing to plot"));
        }
        if dist.splits.is_empty() {
            return Err(Error::data("the distribution has no splits; nothing to plot"));
        }
        for s in &dist.splits {
            if s.images_per_class.len() != nc || s.instances_per_class.len() != nc {
                return Err(Error::data(format!(
                    "split '{}' has {} images_per_class and {} instances_per_class entries, but there are {nc} classes",
                    s.split,
                    s.images_per_class.len(),
                    s.instances_per_class.len()
                ))
                .with_hint("the result json is inconsistent; regenerate it with yolo-distribution"));
            }
        }
        // Fewer classes: bigger text and rows. Many classes: compact rows, still >= 12 px text.
        let (font_px, row_px) = match nc {
            0..=12 => (15, 28),
            13..=40 => (13, 20),
            _ => (12, 16),
        };
        let labels: Vec<String> =
            dist.names.iter().enumerate().map(|(i, n)| ellipsize(&format!("{i} {n}"), MAX_LABEL_PX, font_px)).collect();
        let label_px = labels.iter().map(|l| text_width(l, font_px)).max().unwrap_or(0) + 12;
        Ok(DistributionChart {
            title: title.into(),
            names: dist.names.clone(),
            splits: dist.splits.clone(),
            labels,
            font_px,
            row_px,
            label_px,
        })
    }

    fn panel_w(&self) -> u32 {
        self.label_px + BAR_AREA_PX + 2 * PANEL_PAD
    }

    fn split_h(&self) -> u32 {
        SPLIT_HEAD_H + CAPTION_H + self.names.len() as u32 * self.row_px + X_AXIS_H + PANEL_PAD
    }

    /// One line of counts for a split's heading.
    fn summary(s: &SplitStats) -> String {
        let mut parts = vec![format!("{} images", s.images), format!("{} instances", s.instances)];
        let bg = s.backgrounds + s.missing_labels;
        if bg > 0 {
            parts.push(format!("{bg} backgrounds ({} without label file)", s.missing_labels));
        }
        if s.invalid_lines > 0 {
            parts.push(format!("{} invalid label lines", s.invalid_lines));
        }
        format!("{} — {}", s.split, parts.join(" · "))
    }

    /// One bar panel (`what` per class of one split) in `area`.
    fn draw_panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption: &str,
        counts: &[usize],
        color: RGBColor,
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let nc = counts.len();
        let max = counts.iter().copied().max().unwrap_or(0) as u64;
        // Head-room for the count printed after the longest bar.
        let xmax = ((max as f64 * 1.18).ceil() as u64).max(max + 1).max(5);
        let font = (FONT, self.font_px as f64).into_font();
        let mut chart = ChartBuilder::on(area)
            .margin_left(PANEL_PAD)
            .margin_right(PANEL_PAD)
            .caption(caption, (FONT, self.font_px as f64 + 3.0).into_font())
            .x_label_area_size(X_AXIS_H)
            .y_label_area_size(self.label_px)
            .build_cartesian_2d(0u64..xmax, -0.5f64..(nc as f64 - 0.5))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_labels(6)
            .x_label_formatter(&|v| axis_count(*v, xmax))
            .x_label_style(font.clone())
            .bold_line_style(BLACK.mix(0.12))
            .light_line_style(TRANSPARENT)
            .draw()?;
        // Class 0 on top: row r of the plot holds class nc-1-r.
        let y_of = |c: usize| (nc - 1 - c) as f64;
        chart.draw_series(
            counts
                .iter()
                .enumerate()
                .map(|(c, &n)| Rectangle::new([(0u64, y_of(c) - 0.38), (n as u64, y_of(c) + 0.38)], color.filled())),
        )?;
        let value_style = font.clone().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        let zero_style = value_style.clone().color(&RED);
        chart.draw_series(counts.iter().enumerate().map(|(c, &n)| {
            let style = if n == 0 { zero_style.clone() } else { value_style.clone() };
            EmptyElement::at((n as u64, y_of(c))) + Text::new(compact_count(n as u64), (4, 0), style)
        }))?;
        // Class labels, right-aligned against the plot's left edge, in pixels (the y axis is
        // numeric, so plotters' own labels would not sit on the rows).
        let (xr, _) = chart.plotting_area().get_pixel_range();
        let base = area.get_base_pixel();
        let label_style = font.color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        for (c, label) in self.labels.iter().enumerate() {
            let (_, y) = chart.backend_coord(&(0u64, y_of(c)));
            area.draw_text(label, &label_style, (xr.start - base.0 - 6, y - base.1))?;
        }
        Ok(())
    }
}

impl Chart for DistributionChart {
    fn size(&self) -> (u32, u32) {
        (2 * self.panel_w(), TITLE_H + self.splits.len() as u32 * self.split_h())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (w, _) = self.size();
        root.draw_text(
            &self.title,
            &(FONT, 22.0).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center)),
            (w as i32 / 2, TITLE_H as i32 / 2),
        )?;
        let (_, body) = root.split_vertically(TITLE_H);
        let heights: Vec<u32> = vec![self.split_h(); self.splits.len()];
        let mut rest = body;
        for (i, s) in self.splits.iter().enumerate() {
            let (row, next) = rest.split_vertically(heights[i]);
            rest = next;
            let color = palette(i);
            row.draw_text(
                &Self::summary(s),
                &(FONT, self.font_px as f64 + 4.0).into_font().color(&color).pos(Pos::new(HPos::Left, VPos::Center)),
                (PANEL_PAD as i32, SPLIT_HEAD_H as i32 / 2),
            )?;
            let (_, panels) = row.split_vertically(SPLIT_HEAD_H);
            let (left, right) = panels.split_horizontally(self.panel_w());
            self.draw_panel(&left, &format!("{}: images per class", s.split), &s.images_per_class, color)?;
            self.draw_panel(&right, &format!("{}: instances per class", s.split), &s.instances_per_class, color)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::scan::SCHEMA;

    pub(crate) fn dist(nc: usize, splits: &[&str]) -> Distribution {
        Distribution {
            schema: SCHEMA.into(),
            data_yaml: "/data/data-custom.yaml".into(),
            dataset_root: "/data/datasets/custom".into(),
            names: (0..nc).map(|i| format!("class-{i}")).collect(),
            splits: splits
                .iter()
                .enumerate()
                .map(|(k, s)| SplitStats {
                    split: s.to_string(),
                    images: 100 / (k + 1),
                    instances: 300 / (k + 1),
                    images_per_class: (0..nc).map(|c| (c * 7 + 3) % 50 / (k + 1)).collect(),
                    instances_per_class: (0..nc).map(|c| (c * 13 + 5) % 120 / (k + 1)).collect(),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn size_grows_with_classes_and_splits() {
        let a = DistributionChart::new(&dist(4, &["train"]), "t").unwrap().size();
        let b = DistributionChart::new(&dist(80, &["train"]), "t").unwrap().size();
        let c = DistributionChart::new(&dist(80, &["train", "val", "test"]), "t").unwrap().size();
        assert!(b.1 > a.1 + 80 * 10, "{a:?} {b:?}");
        assert!(c.1 > 2 * b.1, "{b:?} {c:?}");
    }

    #[test]
    fn renders_png_and_svg() {
        let chart = DistributionChart::new(&dist(5, &["train", "val"]), "Class distribution").unwrap();
        let png = crate::plot::render_png(&chart).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), chart.size());
        // The train colour (palette 0) and the val colour (palette 1) both appear as bars.
        for i in 0..2 {
            let RGBColor(r, g, b) = palette(i);
            assert!(img.pixels().filter(|p| p.0 == [r, g, b]).count() > 500, "palette {i} missing");
        }
        let svg = crate::plot::render_svg(&chart).unwrap();
        assert!(svg.contains("class-4") && svg.contains("val: instances per class"));
    }

    #[test]
    fn rejects_inconsistent_distribution() {
        let mut d = dist(3, &["train"]);
        d.splits[0].images_per_class.pop();
        let err = DistributionChart::new(&d, "t").unwrap_err();
        assert!(err.to_string().contains("split 'train'"), "{err}");
        let mut d = dist(3, &["train"]);
        d.names.clear();
        assert!(DistributionChart::new(&d, "t").is_err());
        let mut d = dist(3, &["train"]);
        d.splits.clear();
        assert!(DistributionChart::new(&d, "t").is_err());
    }
}
