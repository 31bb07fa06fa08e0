//! The tuner's two plots, `tune_scatter_plots.png` and `tune_fitness.png`, laid out as
//! ultralytics 8.4's `plot_tune_results` lays them out (same panels, colours, markers, titles,
//! sizes) so that people who know `model.tune()`'s output recognise them at a glance.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{ellipsize, text_width, write_png, Chart, DrawResult, FONT};
use crate::error::Result;

/// One finished tuning iteration, as read from tune_results.ndjson.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneRow {
    pub iteration: u64,
    pub fitness: f64,
    /// one value per key, in `keys` order
    pub values: Vec<f64>,
    /// (dataset name, that dataset's fitness)
    pub datasets: Vec<(String, f64)>,
}

/// Writes `dir/tune_scatter_plots.png` and `dir/tune_fitness.png` (atomically). With no row of
/// positive fitness it writes nothing and returns `Ok(false)`; `Ok(true)` when written.
///
/// Rows whose fitness is not positive are left out (ultralytics' `exclude_zero_fitness_points`);
/// so are rows whose fitness is not finite (ultralytics would fail on them). The scatter plots
/// also leave out low outliers (iterative 3σ rejection of the lower bound, at most 3 rounds);
/// the fitness plot shows every kept row.
pub fn plot_tune_results(dir: &Path, keys: &[String], rows: &[TuneRow]) -> Result<bool> {
    let kept: Vec<&TuneRow> = rows.iter().filter(|r| r.fitness.is_finite() && r.fitness > 0.0).collect();
    if kept.is_empty() {
        return Ok(false);
    }
    let fitness: Vec<f64> = kept.iter().map(|r| r.fitness).collect();
    let inliers: Vec<&TuneRow> = sigma_clip_lower(&fitness).into_iter().map(|i| kept[i]).collect();
    write_png(&dir.join("tune_scatter_plots.png"), &ScatterGrid { keys, rows: &inliers })?;
    write_png(&dir.join("tune_fitness.png"), &FitnessChart::new(&kept))?;
    Ok(true)
}

/// Indices of `f` kept by ultralytics' iterative sigma rejection on the lower bound only:
/// drop values below mean − 3·std (population std), repeat until nothing is dropped, at most
/// 3 rounds.
pub fn sigma_clip_lower(f: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..f.len()).collect();
    for _ in 0..3 {
        if idx.is_empty() {
            break;
        }
        let n = idx.len() as f64;
        let mean = idx.iter().map(|&i| f[i]).sum::<f64>() / n;
        let std = (idx.iter().map(|&i| (f[i] - mean).powi(2)).sum::<f64>() / n).sqrt();
        let lower = mean - 3.0 * std;
        let keep: Vec<usize> = idx.iter().copied().filter(|&i| f[i] >= lower).collect();
        if keep.len() == idx.len() || keep.is_empty() {
            break;
        }
        idx = keep;
    }
    idx
}

/// ultralytics' `plt_color_scatter` colour values: for each point, the number of points in its
/// cell of a `bins`×`bins` `np.histogram2d` over (v, f). Inputs must be finite.
pub fn density(v: &[f64], f: &[f64], bins: usize) -> Vec<f64> {
    let bins = bins.max(1);
    // np.histogram's edges: linspace(min, max, bins + 1), ±0.5 when min == max.
    let edges = |x: &[f64]| -> Vec<f64> {
        let lo = x.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo == hi { (lo - 0.5, hi + 0.5) } else { (lo, hi) };
        (0..=bins).map(|k| lo + (hi - lo) * k as f64 / bins as f64).collect()
    };
    // np.clip(np.digitize(x, edges) - 1, 0, bins - 1)
    let bin = |e: &[f64], x: f64| e.partition_point(|&b| b <= x).saturating_sub(1).min(bins - 1);
    let (ex, ey) = (edges(v), edges(f));
    let cells: Vec<(usize, usize)> = v.iter().zip(f).map(|(&a, &b)| (bin(&ex, a), bin(&ey, b))).collect();
    let mut hist = vec![0u32; bins * bins];
    for &(a, b) in &cells {
        hist[a * bins + b] += 1;
    }
    cells.iter().map(|&(a, b)| hist[a * bins + b] as f64).collect()
}

/// matplotlib's viridis at t ∈ [0, 1] (its 256-entry table sampled at 9 points, linearly
/// interpolated).
fn viridis(t: f64) -> RGBColor {
    const V: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 45, 123),
        (59, 82, 139),
        (44, 114, 142),
        (33, 145, 140),
        (40, 174, 128),
        (94, 201, 98),
        (173, 220, 48),
        (253, 231, 37),
    ];
    let t = if t.is_finite() { t.clamp(0.0, 1.0) } else { 0.0 } * 8.0;
    let i = (t.floor() as usize).min(7);
    let w = t - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * w).round() as u8;
    let (a, b) = (V[i], V[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Python's `f"{v:.{p}g}"`: `0.01`, `1e-05`, `1.23e+04`, `nan`.
pub fn fmt_g(v: f64, p: usize) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let p = p.max(1);
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    // The exponent after rounding to p significant digits decides the notation.
    let e = format!("{:.*e}", p - 1, v);
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let x: i32 = exp.parse().unwrap_or(0);
    if -4 <= x && x < p as i32 {
        trim(&format!("{:.*}", (p as i32 - 1 - x) as usize, v))
    } else {
        format!("{}e{}{:02}", trim(mant), if x < 0 { '-' } else { '+' }, x.abs())
    }
}

/// Matplotlib points to pixels at ultralytics' dpi 200.
fn pt(points: f64) -> i32 {
    (points * 200.0 / 72.0).round() as i32
}

/// Pixel size for plotters (ab_glyph scales to ascent − descent, 1.164 em in DejaVu Sans) of a
/// matplotlib font size in points (the em) at dpi 200.
fn font_pt(points: f64) -> u32 {
    (points * 200.0 / 72.0 * 1.164).round() as u32
}

/// Radius in pixels of a matplotlib scatter marker of area `s` (points²).
fn scatter_radius(s: f64) -> i32 {
    (pt(s.sqrt()) / 2).max(1)
}

/// Axis range of `values` (finite ones) with matplotlib's 5% margins; a single value is widened
/// as `nonsingular` does (±5% of it, ±0.05 at zero).
fn axis_range(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo <= 1e-12 * lo.abs().max(hi.abs()) {
        let d = if lo == 0.0 { 0.05 } else { 0.05 * lo.abs() };
        return (lo - d, hi + d);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A tick label: up to 6 significant digits (float noise dropped), `0` for values that are
/// zero at the axis' scale.
fn tick_label(v: f64, span: f64) -> String {
    if v.abs() <= span.abs() * 1e-9 {
        return "0".into();
    }
    fmt_g(v, 6)
}

/// About the widest tick label of an axis from `lo` to `hi` (ticks are round numbers, so three
/// significant digits of the ends).
fn label_width(lo: f64, hi: f64, px: u32) -> u32 {
    text_width(&fmt_g(lo, 3), px).max(text_width(&fmt_g(hi, 3), px))
}

/// Matplotlib's default grid line (`#b0b0b0`) at `alpha` 0.2, on white.
fn grid_color() -> RGBColor {
    RGBColor(239, 239, 239)
}

/// A frame around the plotting area (matplotlib's four spines).
fn frame<DB: DrawingBackend>(chart: &mut ChartContext<DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (x, y) = (chart.x_range(), chart.y_range());
    chart.draw_series(std::iter::once(Rectangle::new([(x.start, y.start), (x.end, y.end)], BLACK.stroke_width(2))))?;
    Ok(())
}

/// The legend position matplotlib's `loc="best"` would likely pick: the first of its candidate
/// places (in its order) whose box covers the fewest of `points` (pixel coordinates).
fn best_legend(
    plot: (std::ops::Range<i32>, std::ops::Range<i32>),
    size: (i32, i32),
    points: &[(i32, i32)],
) -> SeriesLabelPosition {
    use SeriesLabelPosition::*;
    let (xr, yr) = plot;
    let (w, h) = size;
    let (aw, ah) = (xr.end - xr.start, yr.end - yr.start);
    let candidates =
        [UpperRight, UpperLeft, LowerLeft, LowerRight, MiddleRight, MiddleLeft, LowerMiddle, UpperMiddle, MiddleMiddle];
    let place = |p: &SeriesLabelPosition| -> (i32, i32) {
        // plotters' layout_label_area
        let x = match p {
            UpperLeft | MiddleLeft | LowerLeft => 5,
            UpperMiddle | MiddleMiddle | LowerMiddle => (aw - w) / 2,
            _ => aw - w - 5,
        };
        let y = match p {
            UpperLeft | UpperMiddle | UpperRight => 5,
            MiddleLeft | MiddleMiddle | MiddleRight => (ah - h) / 2,
            _ => ah - h - 5,
        };
        (xr.start + x, yr.start + y)
    };
    let mut best = (usize::MAX, UpperRight);
    for c in candidates {
        let (x0, y0) = place(&c);
        const PAD: i32 = 30; // markers have a size
        let n = points
            .iter()
            .filter(|&&(x, y)| x >= x0 - PAD && x <= x0 + w + PAD && y >= y0 - PAD && y <= y0 + h + PAD)
            .count();
        if n < best.0 {
            best = (n, c);
        }
    }
    best.1
}

/// Points every 10 px along a polyline (pixel coordinates), for [`best_legend`].
fn along(line: &[(i32, i32)]) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = line.first().copied().into_iter().collect();
    for w in line.windows(2) {
        let ((ax, ay), (bx, by)) = (w[0], w[1]);
        let steps = ((bx - ax).abs().max((by - ay).abs()) / 10).clamp(1, 1000);
        out.extend((1..=steps).map(|k| (ax + (bx - ax) * k / steps, ay + (by - ay) * k / steps)));
    }
    out
}

/// Pixel size plotters will give a legend of `labels` at font size `font` (legend area 30 px
/// wide, margin 10, lines ~1.2 em apart).
fn legend_size(labels: &[&str], font: u32) -> (i32, i32) {
    let w = labels.iter().map(|l| text_width(l, font)).max().unwrap_or(0) as i32 + 30 + 20;
    let h = (labels.len() as f64 * font as f64 * 1.25) as i32 + 20;
    (w, h)
}

/// `tune_scatter_plots.png`: one panel per hyper-parameter, value vs fitness.
struct ScatterGrid<'a> {
    keys: &'a [String],
    rows: &'a [&'a TuneRow],
}

impl Chart for ScatterGrid<'_> {
    fn size(&self) -> (u32, u32) {
        (2000, 2000) // figsize 10x10 at dpi 200
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (keys, rows) = (self.keys, self.rows);
        if keys.is_empty() || rows.is_empty() {
            return Ok(());
        }
        let n = (keys.len() as f64).sqrt().ceil() as usize;
        let fitness: Vec<f64> = rows.iter().map(|r| r.fitness).collect();
        let j = crate::eval::metrics::argmax(&fitness);
        let fmax = fitness[j];
        let (y0, y1) = axis_range(fitness.iter().copied());
        let (title_px, tick_px) = (font_pt(9.0), font_pt(8.0));
        // Column 0 carries the y tick labels; every panel has the same plotting size.
        let ylab = label_width(y0, y1, tick_px) as i32 + 24;
        let (w, h) = (2000i32, 2000i32);
        let gap = 24;
        let cell = (w - 8 - ylab) / n as i32;
        let xs: Vec<i32> = (1..n as i32).map(|c| ylab + c * cell).collect();
        let ys: Vec<i32> = (1..n as i32).map(|r| r * (h / n as i32)).collect();
        let areas = root.split_by_breakpoints(xs, ys);
        let x_ticks = if n <= 3 { 5 } else { 3 };
        for (i, key) in keys.iter().enumerate() {
            let area = &areas[i];
            let first = i % n == 0;
            let v: Vec<f64> = rows.iter().map(|r| r.values.get(i).copied().unwrap_or(f64::NAN)).collect();
            let mu = v[j];
            let (x0, x1) = axis_range(v.iter().copied());
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{key} = {}", fmt_g(mu, 3)), (FONT, title_px))
                .margin_top(10)
                .margin_right(gap)
                .margin_left(if first { 0 } else { gap })
                .margin_bottom(8)
                .x_label_area_size(tick_px + 16)
                .y_label_area_size(if first { ylab } else { 0 })
                .build_cartesian_2d(x0..x1, y0..y1)?;
            let (xspan, yspan) = (x1 - x0, y1 - y0);
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(x_ticks)
                .y_labels(if first { 5 } else { 0 })
                .x_label_formatter(&|x| tick_label(*x, xspan))
                .y_label_formatter(&|y| tick_label(*y, yspan))
                .label_style((FONT, tick_px))
                .draw()?;
            // plt_color_scatter: colour = points in the same histogram2d cell, viridis, alpha 0.8.
            let pts: Vec<(f64, f64)> =
                v.iter().zip(&fitness).filter(|(a, _)| a.is_finite()).map(|(&a, &b)| (a, b)).collect();
            let (pv, pf): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
            let c = density(&pv, &pf, 20);
            let cmin = c.iter().copied().fold(f64::INFINITY, f64::min);
            let cmax = c.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let r = scatter_radius(36.0); // default s = markersize² = 36
            chart.draw_series(pts.iter().zip(&c).map(|(&p, &k)| {
                let t = if cmax > cmin { (k - cmin) / (cmax - cmin) } else { 0.0 };
                Circle::new(p, r, viridis(t).mix(0.8).filled())
            }))?;
            if mu.is_finite() {
                // "k+", markersize 15
                let half = pt(15.0) / 2;
                let s = BLACK.stroke_width(pt(1.0) as u32);
                chart.draw_series(std::iter::once(
                    EmptyElement::at((mu, fmax))
                        + PathElement::new(vec![(-half, 0), (half, 0)], s)
                        + PathElement::new(vec![(0, -half), (0, half)], s),
                ))?;
            }
            frame(&mut chart)?;
        }
        Ok(())
    }
}

/// `tune_fitness.png`: fitness per iteration (left), per-dataset initial vs best (right).
struct FitnessChart {
    iterations: Vec<f64>,
    fitness: Vec<f64>,
    /// first maximum of `fitness`
    best: usize,
    /// (name, initial fitness, best iteration's fitness), sorted by improvement ascending
    datasets: Vec<(String, f64, f64)>,
}

impl FitnessChart {
    fn new(rows: &[&TuneRow]) -> Self {
        let fitness: Vec<f64> = rows.iter().map(|r| r.fitness).collect();
        let best = crate::eval::metrics::argmax(&fitness);
        let mut names: Vec<&str> = rows.iter().flat_map(|r| r.datasets.iter().map(|d| d.0.as_str())).collect();
        names.sort_unstable();
        names.dedup();
        let of = |r: &TuneRow, name: &str| r.datasets.iter().find(|d| d.0 == name).map_or(0.0, |d| d.1);
        let mut datasets: Vec<(String, f64, f64)> =
            names.iter().map(|&n| (n.to_string(), of(rows[0], n), of(rows[best], n))).collect();
        // np.argsort(best - initial); NaN last, as numpy sorts it.
        datasets.sort_by(|a, b| {
            let (da, db) = (a.2 - a.1, b.2 - b.1);
            da.partial_cmp(&db).unwrap_or_else(|| da.is_nan().cmp(&db.is_nan()))
        });
        FitnessChart { iterations: rows.iter().map(|r| r.iteration as f64).collect(), fitness, best, datasets }
    }

    fn progress<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let (font, title) = (font_pt(11.0), font_pt(13.2));
        let (it, f, b) = (&self.iterations, &self.fitness, self.best);
        let (x0, x1) = axis_range(it.iter().copied());
        let (y0, y1) = axis_range(f.iter().copied());
        let (xspan, yspan) = (x1 - x0, y1 - y0);
        let ylab = label_width(y0, y1, font);
        let mut chart = ChartBuilder::on(area)
            .caption("Fitness Progress", (FONT, title))
            .margin(20)
            .x_label_area_size(font * 2 + 30)
            .y_label_area_size(ylab + font + 24)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .bold_line_style(grid_color())
            .light_line_style(TRANSPARENT)
            .x_labels(8)
            .y_labels(8)
            .x_label_formatter(&|x| tick_label(*x, xspan))
            .y_label_formatter(&|y| tick_label(*y, yspan))
            .x_desc("Iteration")
            .y_desc("Fitness")
            .label_style((FONT, font))
            .axis_desc_style((FONT, font))
            .draw()?;
        let grey = RGBColor(115, 115, 115); // "0.45"
        let (blue, red, green) = (RGBColor(0x25, 0x63, 0xeb), RGBColor(0xdc, 0x26, 0x26), RGBColor(0x16, 0xa3, 0x4a));
        let pts: Vec<(f64, f64)> = it.iter().copied().zip(f.iter().copied()).collect();
        let (rs, rb) = (scatter_radius(28.0), scatter_radius(90.0));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, rs, grey.mix(0.75).filled())))?
            .label("Iteration")
            .legend(move |(x, y)| Circle::new((x + 10, y), rs, grey.mix(0.75).filled()));
        let mut running = f64::NEG_INFINITY;
        let best_so_far: Vec<(f64, f64)> = pts
            .iter()
            .map(|&(x, y)| {
                running = running.max(y);
                (x, running)
            })
            .collect();
        let lw = pt(2.5) as u32;
        chart
            .draw_series(LineSeries::new(best_so_far.iter().copied(), blue.stroke_width(lw)))?
            .label("Best so far")
            .legend(move |(x, y)| PathElement::new(vec![(x - 10, y), (x + 25, y)], blue.stroke_width(lw)));
        let dw = pt(1.5) as u32;
        let (dash, space) = (pt(5.55), pt(2.4));
        chart
            .draw_series(DashedLineSeries::new(vec![(x0, f[0]), (x1, f[0])], dash, space, red.stroke_width(dw)))?
            .label(format!("Initial {:.4}", f[0]))
            .legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(-10, 0), (3, 0)], red.stroke_width(dw))
                    + PathElement::new(vec![(10, 0), (25, 0)], red.stroke_width(dw))
            });
        chart
            .draw_series(std::iter::once(Circle::new(pts[b], rb, green.filled())))?
            .label("Best")
            .legend(move |(x, y)| Circle::new((x + 10, y), rb, green.filled()));
        frame(&mut chart)?;
        let initial = format!("Initial {:.4}", f[0]);
        let size = legend_size(&["Iteration", "Best so far", &initial, "Best"], font);
        let mut occupied: Vec<(i32, i32)> = pts.iter().map(|p| chart.backend_coord(p)).collect();
        let line: Vec<(i32, i32)> = best_so_far.iter().map(|p| chart.backend_coord(p)).collect();
        occupied.extend(along(&line));
        occupied.extend(along(&[chart.backend_coord(&(x0, f[0])), chart.backend_coord(&(x1, f[0]))]));
        let pos = best_legend(chart.plotting_area().get_pixel_range(), size, &occupied);
        chart
            .configure_series_labels()
            .position(pos)
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(204, 204, 204))
            .label_font((FONT, font))
            .draw()?;
        Ok(())
    }

    fn per_dataset<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let (font, title, name_px) = (font_pt(11.0), font_pt(13.2), font_pt(8.0));
        let d = &self.datasets;
        let nd = d.len();
        let names: Vec<String> = d.iter().map(|(n, _, _)| ellipsize(n, 600, name_px)).collect();
        let ylab = names.iter().map(|n| text_width(n, name_px)).max().unwrap_or(0) + 30;
        let (x0, x1) = axis_range(d.iter().flat_map(|(_, a, b)| [*a, *b]));
        let xspan = x1 - x0;
        let (y0, y1) = axis_range([0.0, nd as f64 - 1.0]);
        let mut chart = ChartBuilder::on(area)
            .caption("Per-Dataset Fitness: Initial vs Best Aggregate Iteration", (FONT, title))
            .margin(20)
            .x_label_area_size(font * 2 + 30)
            .y_label_area_size(ylab)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .bold_line_style(grid_color())
            .light_line_style(TRANSPARENT)
            .disable_y_mesh()
            .x_labels(8)
            .y_labels(0)
            .x_label_formatter(&|x| tick_label(*x, xspan))
            .x_desc("Fitness")
            .label_style((FONT, font))
            .axis_desc_style((FONT, font))
            .draw()?;
        let (red, green, line) = (RGBColor(0xdc, 0x26, 0x26), RGBColor(0x16, 0xa3, 0x4a), RGBColor(204, 204, 204));
        let r = scatter_radius(24.0);
        let lw = pt(1.5) as u32;
        let finite = |x: f64| x.is_finite();
        chart.draw_series(
            d.iter()
                .enumerate()
                .filter(|(_, (_, a, b))| finite(*a) && finite(*b))
                .map(|(y, (_, a, b))| PathElement::new(vec![(*a, y as f64), (*b, y as f64)], line.stroke_width(lw))),
        )?;
        chart
            .draw_series(
                d.iter()
                    .enumerate()
                    .filter(|(_, e)| finite(e.1))
                    .map(|(y, e)| Circle::new((e.1, y as f64), r, red.filled())),
            )?
            .label("Initial")
            .legend(move |(x, y)| Circle::new((x + 10, y), r, red.filled()));
        let best_label = format!("Best aggregate iteration {}", self.iterations[self.best]);
        chart
            .draw_series(
                d.iter()
                    .enumerate()
                    .filter(|(_, e)| finite(e.2))
                    .map(|(y, e)| Circle::new((e.2, y as f64), r, green.filled())),
            )?
            .label(best_label.clone())
            .legend(move |(x, y)| Circle::new((x + 10, y), r, green.filled()));
        frame(&mut chart)?;
        let (ox, oy) = area.get_base_pixel(); // backend_coord is absolute, `area` draws relative
        for (y, name) in names.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(x0, y as f64));
            let (px, py) = (px - ox, py - oy);
            area.draw(&PathElement::new(vec![(px - 8, py), (px, py)], BLACK.stroke_width(2)))?;
            let style = (FONT, name_px).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
            area.draw(&Text::new(name.clone(), (px - 12, py), style))?;
        }
        let size = legend_size(&["Initial", &best_label], font);
        let occupied: Vec<(i32, i32)> = d
            .iter()
            .enumerate()
            .filter(|(_, e)| e.1.is_finite() && e.2.is_finite())
            .flat_map(|(y, e)| along(&[chart.backend_coord(&(e.1, y as f64)), chart.backend_coord(&(e.2, y as f64))]))
            .collect();
        let pos = best_legend(chart.plotting_area().get_pixel_range(), size, &occupied);
        chart
            .configure_series_labels()
            .position(pos)
            .background_style(WHITE.mix(0.8))
            .border_style(RGBColor(204, 204, 204))
            .label_font((FONT, font))
            .draw()?;
        Ok(())
    }
}

impl Chart for FitnessChart {
    fn size(&self) -> (u32, u32) {
        // figsize (16, max(6, 0.28 per dataset)) at dpi 200
        (3200, 1200u32.max((self.datasets.len() as f64 * 0.28 * 200.0).round() as u32))
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        // width_ratios (1, 1.35)
        let (left, right) = root.split_horizontally((3200.0f64 / 2.35).round() as i32);
        self.progress(&left)?;
        if !self.datasets.is_empty() {
            self.per_dataset(&right)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<String> {
        ["lr0", "momentum", "weight_decay", "hsv_h", "mosaic"].iter().map(|s| s.to_string()).collect()
    }

    fn rows(n: usize, datasets: usize) -> Vec<TuneRow> {
        (0..n)
            .map(|i| {
                let t = i as f64;
                TuneRow {
                    iteration: i as u64 + 1,
                    fitness: 0.3 + 0.02 * t + 0.03 * (t * 1.7).sin(),
                    values: vec![0.01 * (1.0 + 0.1 * t), 0.9 - 0.01 * t, 5e-4 * (1.0 + t), 0.015, (t * 0.37).fract()],
                    datasets: (0..datasets).map(|k| (format!("set{k}"), 0.2 + 0.01 * (k as f64) * t)).collect(),
                }
            })
            .collect()
    }

    fn load(path: &Path) -> image::RgbImage {
        image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
    }

    /// Pixels within `tol` of `c` in every channel.
    fn count_near(img: &image::RgbImage, c: (u8, u8, u8), tol: i32) -> usize {
        img.pixels()
            .filter(|p| {
                let d = |a: u8, b: u8| (a as i32 - b as i32).abs() <= tol;
                d(p.0[0], c.0) && d(p.0[1], c.1) && d(p.0[2], c.2)
            })
            .count()
    }

    fn non_white(img: &image::RgbImage) -> usize {
        img.pixels().filter(|p| p.0 != [255, 255, 255]).count()
    }

    #[test]
    fn writes_both_pngs() {
        let d = tempfile::tempdir().unwrap();
        assert!(plot_tune_results(d.path(), &keys(), &rows(10, 3)).unwrap());

        let scatter = load(&d.path().join("tune_scatter_plots.png"));
        assert_eq!(scatter.dimensions(), (2000, 2000));
        assert!(non_white(&scatter) > 20_000, "scatter plots look blank: {}", non_white(&scatter));
        // viridis points (alpha 0.8 on white): colourful pixels, not just black text and frames
        let colourful = scatter
            .pixels()
            .filter(|p| {
                let (mx, mn) = (p.0.iter().max().unwrap(), p.0.iter().min().unwrap());
                mx - mn > 60
            })
            .count();
        assert!(colourful > 2_000, "no coloured scatter points: {colourful}");
        // 5 keys → 3×3 grid: the bottom-right cells are empty
        let empty = (1400..2000)
            .flat_map(|x| (1400..2000).map(move |y| (x, y)))
            .all(|(x, y)| scatter.get_pixel(x, y).0 == [255; 3]);
        assert!(empty, "cell 9 of the 3x3 grid should be empty");

        let fit = load(&d.path().join("tune_fitness.png"));
        assert_eq!(fit.dimensions(), (3200, 1200));
        assert!(count_near(&fit, (0x25, 0x63, 0xeb), 8) > 1_000, "no 'Best so far' line");
        assert!(count_near(&fit, (0x16, 0xa3, 0x4a), 8) > 300, "no green best points");
        assert!(count_near(&fit, (0xdc, 0x26, 0x26), 8) > 300, "no red initial line/points");
        // the per-dataset panel is drawn
        let right = (1500..3200)
            .flat_map(|x| (0..1200).map(move |y| (x, y)))
            .filter(|&(x, y)| fit.get_pixel(x, y).0 != [255; 3])
            .count();
        assert!(right > 5_000, "right panel looks blank: {right}");
    }

    #[test]
    fn no_datasets_leaves_the_right_panel_empty_and_many_grow_the_figure() {
        let d = tempfile::tempdir().unwrap();
        assert!(plot_tune_results(d.path(), &keys(), &rows(6, 0)).unwrap());
        let fit = load(&d.path().join("tune_fitness.png"));
        assert_eq!(fit.dimensions(), (3200, 1200));
        let right = (1400..3200)
            .flat_map(|x| (0..1200).map(move |y| (x, y)))
            .filter(|&(x, y)| fit.get_pixel(x, y).0 != [255; 3])
            .count();
        assert_eq!(right, 0, "axis off: the right panel should be blank");
        assert!(non_white(&fit) > 10_000);

        assert!(plot_tune_results(d.path(), &keys(), &rows(6, 30)).unwrap());
        assert_eq!(load(&d.path().join("tune_fitness.png")).dimensions(), (3200, 30 * 56));
    }

    #[test]
    fn zero_fitness_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let mut r = rows(5, 2);
        for row in &mut r {
            row.fitness = 0.0;
        }
        r[1].fitness = f64::NAN;
        r[2].fitness = -0.5;
        assert!(!plot_tune_results(d.path(), &keys(), &r).unwrap());
        assert!(!plot_tune_results(d.path(), &keys(), &[]).unwrap());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0, "nothing should be written");
    }

    #[test]
    fn non_finite_values_do_not_panic() {
        let d = tempfile::tempdir().unwrap();
        let mut r = rows(8, 2);
        r[0].values[0] = f64::NAN;
        r[1].values = vec![f64::INFINITY, f64::NEG_INFINITY, f64::NAN]; // short, non-finite
        r[2].fitness = f64::INFINITY;
        r[3].fitness = f64::NAN;
        r[4].datasets[0].1 = f64::NAN;
        r[5].values = vec![f64::NAN; 5];
        for row in &mut r[6..] {
            row.values[4] = f64::NAN; // a key with no finite value at all
        }
        r[7].fitness = 10.0; // the best, with NaN values
        r[7].values = vec![f64::NAN; 5];
        assert!(plot_tune_results(d.path(), &keys(), &r).unwrap());
        assert_eq!(load(&d.path().join("tune_scatter_plots.png")).dimensions(), (2000, 2000));
        // a single usable row, and no keys at all
        let one =
            vec![TuneRow { iteration: 3, fitness: 0.5, values: vec![], datasets: vec![("a".into(), f64::INFINITY)] }];
        assert!(plot_tune_results(d.path(), &keys(), &one).unwrap());
        assert!(plot_tune_results(d.path(), &[], &one).unwrap());
        assert_eq!(load(&d.path().join("tune_fitness.png")).dimensions(), (3200, 1200));
    }

    /// numpy: one round removes the 0.05, the second keeps all 20 (lower bound 0.4567).
    #[test]
    fn sigma_clip_removes_one_outlier() {
        let f = [
            0.5, 0.52, 0.49, 0.51, 0.5, 0.48, 0.53, 0.5, 0.47, 0.51, 0.52, 0.49, 0.5, 0.51, 0.48, 0.5, 0.52, 0.49, 0.5,
            0.51, 0.05,
        ];
        assert_eq!(sigma_clip_lower(&f), (0..20).collect::<Vec<_>>());
        // no outlier: everything kept; high values are never rejected
        assert_eq!(sigma_clip_lower(&[0.1, 0.2, 0.3, 5.0]), vec![0, 1, 2, 3]);
        assert_eq!(sigma_clip_lower(&[0.4]), vec![0]);
    }

    /// `plt_color_scatter`'s colours, from numpy's histogram2d/digitize on the same input.
    #[test]
    fn density_matches_numpy() {
        let v = [0.1, 0.2, 0.2, 0.9, 0.5, 0.55];
        let f = [0.3, 0.31, 0.31, 0.9, 0.5, 0.5];
        assert_eq!(density(&v, &f, 20), vec![1.0, 2.0, 2.0, 1.0, 1.0, 1.0]);
        // a constant column: numpy widens its range by ±0.5
        assert_eq!(density(&[1.0, 1.0, 1.0], &[0.2, 0.2, 0.3], 20), vec![2.0, 2.0, 1.0]);
    }

    /// Python's `"%.3g" % v` for each.
    #[test]
    fn g_format_matches_python() {
        let cases: [(f64, &str); 16] = [
            (0.01, "0.01"),
            (1e-5, "1e-05"),
            (12345.0, "1.23e+04"),
            (0.000123456, "0.000123"),
            (100.0, "100"),
            (1000.0, "1e+03"),
            (0.5, "0.5"),
            (2.0, "2"),
            (9.9951, "10"),
            (-0.0, "-0"),
            (0.0001, "0.0001"),
            (0.00009999, "0.0001"),
            (123.456, "123"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (-2.5e-7, "-2.5e-07"),
        ];
        for (v, want) in cases {
            assert_eq!(fmt_g(v, 3), want, "{v}");
        }
    }

    #[test]
    fn viridis_ends() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(viridis(0.5), RGBColor(33, 145, 140));
        assert_eq!(viridis(f64::NAN), RGBColor(68, 1, 84));
    }
}
