//! Charts, drawn with plotters and an embedded font (pods have no system fonts).
//!
//! Every chart is a type implementing [`Chart`]: it knows its canvas size and draws itself on any
//! plotters backend, so the same code produces the PNG (bitmap backend, for the KFP UI and
//! HTML reports) and the SVG (vector, for people zooming into 80 class names). This module holds
//! what all charts share:
//!
//! - the font: DejaVu Sans is compiled into the binary (`assets/fonts/DejaVuSans.ttf`, Bitstream
//!   Vera licence beside it) and registered with plotters' `ab_glyph` backend as [`FONT`]. The
//!   workspace enables plotters' `ab_glyph` feature and *not* `ttf`, so no system-font lookup
//!   (fontconfig, font-kit) is compiled in: rendering cannot fail for want of fonts in a slim
//!   container image;
//! - [`write_png`] / [`write_svg`] (atomic, via [`crate::files`]) and the in-memory
//!   [`render_png`] / [`render_svg`];
//! - [`png_data_uri`] to embed a PNG in a self-contained HTML page (KFP's HTML viewers show the
//!   page in a sandbox with no access to other files), [`html_escape`], [`html_page`];
//! - layout helpers: [`text_width`] (to size margins to the longest label), [`ellipsize`],
//!   [`palette`], [`axis_count`], [`compact_count`].
//!
//! Class names in scripts DejaVu Sans lacks (Hangul, CJK) need a fallback font file named by
//! `KUBEYOLO_PLOT_FONT` (PNG only; SVG text is drawn by the viewer's fonts).
//!
//! Chart kinds live in sub-modules: [`distribution`] (images/instances per class).

pub mod batch;
pub mod curves;
pub mod distribution;
mod glyphs;
pub mod results;
pub mod tune;

use std::path::Path;
use std::sync::OnceLock;

use base64::Engine as _;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, RGBColor};

use crate::error::{Error, Result};
use crate::files;

/// The font family every chart uses. It is the embedded DejaVu Sans; the name is the generic
/// `sans-serif` so that the SVG files (whose text is drawn by the viewer) look alike.
pub const FONT: &str = "sans-serif";

/// DejaVu Sans (Bitstream Vera licence, see `assets/fonts/DejaVuSans-LICENSE.txt`).
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// What a chart's `draw` returns: any plotters error, boxed (backends differ in error type).
pub type DrawResult = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A chart that can be drawn on any plotters backend.
///
/// ```
/// use kubeyolo::plot::{Chart, DrawResult, FONT};
/// use plotters::prelude::*;
/// use plotters::coord::Shift;
/// struct Hello;
/// impl Chart for Hello {
///     fn size(&self) -> (u32, u32) { (200, 100) }
///     fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
///     where DB::ErrorType: 'static {
///         root.fill(&WHITE)?;
///         root.draw_text("hello", &(FONT, 20).into_font().color(&BLACK), (10, 10))?;
///         Ok(())
///     }
/// }
/// let png = kubeyolo::plot::render_png(&Hello).unwrap();
/// assert!(png.starts_with(b"\x89PNG"));
/// ```
pub trait Chart {
    /// Canvas size: pixels for PNG, user units for SVG.
    fn size(&self) -> (u32, u32);
    /// Draw the whole chart on `root` (already sized to [`Chart::size`]). Implementations fill
    /// the background themselves.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// Register the embedded font with plotters (once per process). Every render function calls
/// it; call it yourself only when using plotters directly.
pub fn register_fonts() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // Bold falls back to the regular face (plotters' ab_glyph backend does that too);
            // registering it explicitly keeps `.style(FontStyle::Bold)` from failing.
            plotters::style::register_font(FONT, style, DEJAVU_SANS)
                .map_err(|_| "the embedded DejaVu Sans font could not be parsed".to_string())?;
        }
        Ok(())
    })
    .clone()
    .map_err(Error::internal)
}

fn draw_error(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("cannot draw chart: {e}"))
}

/// Check a chart's size before allocating: plotters would panic or allocate gigabytes otherwise.
fn checked_size(chart: &impl Chart) -> Result<(u32, u32)> {
    let (w, h) = chart.size();
    if w == 0 || h == 0 || (w as u64) * (h as u64) > 200_000_000 {
        return Err(Error::internal(format!("chart size {w}x{h} is out of range")));
    }
    Ok((w, h))
}

/// Draw `chart` to an in-memory PNG (RGB).
pub fn render_png(chart: &impl Chart) -> Result<Vec<u8>> {
    register_fonts()?;
    let (w, h) = checked_size(chart)?;
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        // TextFix: plotters' own ab_glyph text placement misplaces glyphs (see glyphs.rs).
        let root = glyphs::TextFix(BitMapBackend::with_buffer(&mut rgb, (w, h))).into_drawing_area();
        chart.draw(&root).map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    // Best compression: charts are flat colours and come out about half the size of the `Fast`
    // default, which matters because the PNG travels base64-encoded inside HTML/UI metadata.
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder as _;
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Adaptive)
        .write_image(&rgb, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| Error::internal(format!("cannot encode PNG: {e}")))?;
    Ok(png)
}

/// Draw `chart` to an SVG document.
pub fn render_svg(chart: &impl Chart) -> Result<String> {
    register_fonts()?;
    let size = checked_size(chart)?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        chart.draw(&root).map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// Draw `chart` as PNG into `path` (atomic, parent folders created). Returns the PNG bytes
/// (for [`png_data_uri`]).
pub fn write_png(path: &Path, chart: &impl Chart) -> Result<Vec<u8>> {
    let png = render_png(chart)?;
    files::write_atomic(path, &png)?;
    Ok(png)
}

/// Draw `chart` as SVG into `path` (atomic, parent folders created).
pub fn write_svg(path: &Path, chart: &impl Chart) -> Result<()> {
    let svg = render_svg(chart)?;
    files::write_atomic(path, svg.as_bytes())
}

/// `data:image/png;base64,...`, for `<img src=...>` in self-contained HTML.
pub fn png_data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png))
}

/// Escape text for HTML element content and attribute values.
pub fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A minimal self-contained HTML page (no external resources: KFP shows it sandboxed).
/// `title` is escaped; `body` is inserted as is.
pub fn html_page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 16px; color: #222; }}\n\
         img {{ max-width: 100%; height: auto; }}\n\
         table {{ border-collapse: collapse; font-size: 13px; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 2px 8px; }} td.n {{ text-align: right; }}\n\
         </style>\n</head>\n<body>\n<h1>{t}</h1>\n{body}\n</body>\n</html>\n",
        t = html_escape(title)
    )
}

/// Width in pixels of `text` at font size `size` in [`FONT`] (to size margins to labels).
pub fn text_width(text: &str, size: u32) -> u32 {
    match glyphs::text_width(text, size as f32) {
        Some(w) => w.ceil() as u32,
        None => (text.chars().count() as u32 * size * 3) / 5,
    }
}

/// `text` cut with `…` so that it is at most `max_px` wide at font size `size`.
pub fn ellipsize(text: &str, max_px: u32, size: u32) -> String {
    if text_width(text, size) <= max_px {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut n = chars.len();
    while n > 0 {
        n -= 1;
        let cand: String = chars[..n].iter().collect::<String>() + "…";
        if text_width(&cand, size) <= max_px {
            return cand;
        }
    }
    "…".to_string()
}

/// A colour-blind-friendly categorical palette (Okabe–Ito, then Tableau), cycling.
pub fn palette(i: usize) -> RGBColor {
    const COLORS: [(u8, u8, u8); 10] = [
        (0, 114, 178),   // blue
        (230, 159, 0),   // orange
        (0, 158, 115),   // green
        (204, 121, 167), // purple
        (86, 180, 233),  // sky
        (213, 94, 0),    // vermillion
        (240, 228, 66),  // yellow
        (89, 89, 89),    // grey
        (148, 103, 189), // violet
        (140, 86, 75),   // brown
    ];
    let (r, g, b) = COLORS[i % COLORS.len()];
    RGBColor(r, g, b)
}

/// Format an axis tick for counts up to `max`: plain below 10,000, else `5k`, `12.5k`, `1.2M`
/// (the same unit along one axis, trailing zeros dropped).
pub fn axis_count(v: u64, max: u64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.1}");
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    };
    match max {
        _ if v == 0 => "0".to_string(),
        0..=9_999 => v.to_string(),
        10_000..=999_999 => format!("{}k", trim(v as f64 / 1e3)),
        _ => format!("{}M", trim(v as f64 / 1e6)),
    }
}

/// Format a count compactly for bar labels: `987`, `12.3k`, `4.56M`.
pub fn compact_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", trim_zeros(format!("{:.1}", n as f64 / 1e3))),
        _ => format!("{}M", trim_zeros(format!("{:.2}", n as f64 / 1e6))),
    }
}

/// `100.0` → `100`, `1.50` → `1.5`.
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Box3;
    impl Chart for Box3 {
        fn size(&self) -> (u32, u32) {
            (120, 60)
        }
        fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
        where
            DB::ErrorType: 'static,
        {
            root.fill(&WHITE)?;
            root.draw_text("Ag", &(FONT, 40).into_font().color(&BLACK), (5, 5))?;
            Ok(())
        }
    }

    #[test]
    fn embedded_font_draws_glyphs() {
        let png = render_png(&Box3).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (120, 60));
        let dark = img.pixels().filter(|p| p.0[0] < 100).count();
        assert!(dark > 100, "text should paint dark pixels, got {dark}");
    }

    #[test]
    fn svg_and_files() {
        let d = tempfile::tempdir().unwrap();
        let svg = d.path().join("a/b.svg");
        write_svg(&svg, &Box3).unwrap();
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.starts_with("<svg") && text.contains("Ag") && text.contains("font-family=\"sans-serif\""),
            "{text}"
        );
        let png = write_png(&d.path().join("a/b.png"), &Box3).unwrap();
        assert!(png_data_uri(&png).starts_with("data:image/png;base64,iVBORw0KGgo"));
    }

    #[test]
    fn text_helpers() {
        assert!(text_width("WWWW", 20) > text_width("iiii", 20));
        let e = ellipsize("a very long class name indeed", 80, 12);
        assert!(e.ends_with('…') && text_width(&e, 12) <= 80, "{e}");
        assert_eq!(ellipsize("cat", 80, 12), "cat");
        assert_eq!(html_escape("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(compact_count(12345), "12.3k");
        assert_eq!(compact_count(100_000), "100k");
        assert_eq!(compact_count(1_500_000), "1.5M");
        assert_eq!(compact_count(999), "999");
        assert_eq!(axis_count(5000, 12000), "5k");
        assert_eq!(axis_count(12500, 12000), "12.5k");
        assert_eq!(axis_count(5000, 9000), "5000");
    }
}
