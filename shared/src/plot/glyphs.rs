//! Correct glyph placement for bitmap charts.
//!
//! plotters 0.3.7's `ab_glyph` text renderer drops each glyph's left side bearing (it draws the
//! glyph's pixel box at the pen position instead of offsetting it by `px_bounds().min.x`), so
//! digits drift apart: "1132" renders as "11 32" — unacceptable on a chart of counts.
//! [`TextFix`] wraps any backend, forwards everything, and rasterises text itself with the same
//! embedded font, the same layout box (so plotters' anchors and margins still agree) and proper
//! glyph positioning. Only the PNG path needs it: SVG text is drawn by the viewer.
//!
//! It also adds a fallback font for characters DejaVu Sans lacks (Hangul, CJK class names):
//! a `.ttf`/`.otf` named by the environment variable [`FALLBACK_FONT_ENV`] (e.g. NanumGothic on
//! the volume). Bundling CJK fonts would add megabytes to every image for a rare need.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, FontVec, GlyphId, PxScale, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind};

/// The embedded font, parsed once.
fn font() -> Option<&'static FontRef<'static>> {
    static FONT_REF: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT_REF.get_or_init(|| FontRef::try_from_slice(super::DEJAVU_SANS).ok()).as_ref()
}

/// Environment variable naming a font file used for characters the embedded font lacks.
pub const FALLBACK_FONT_ENV: &str = "KUBEYOLO_PLOT_FONT";

/// The fallback font from [`FALLBACK_FONT_ENV`], loaded once; a bad file is a warning, not an error.
fn fallback() -> Option<&'static FontVec> {
    static FALLBACK: OnceLock<Option<FontVec>> = OnceLock::new();
    FALLBACK
        .get_or_init(|| {
            let path = std::env::var_os(FALLBACK_FONT_ENV).filter(|p| !p.is_empty())?;
            let loaded = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|bytes| FontVec::try_from_vec(bytes).map_err(|_| "not a TrueType/OpenType font".to_string()));
            match loaded {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!("warning: {FALLBACK_FONT_ENV}={}: {e}; ignored", std::path::Path::new(&path).display());
                    None
                }
            }
        })
        .as_ref()
}

/// One laid-out glyph: which font, which glyph, where its pen position is.
struct Placed {
    fallback: bool,
    id: GlyphId,
    x: f32,
}

/// Lay `text` out at font size `size`: the embedded font, the fallback font for characters the
/// embedded one lacks (when configured). Returns the glyphs and the total advance width.
fn layout(text: &str, size: f32) -> Option<(Vec<Placed>, f32)> {
    let main = font()?.as_scaled(PxScale::from(size));
    let fb = fallback().map(|f| f.as_scaled(PxScale::from(size)));
    let mut caret = 0f32;
    let mut prev: Option<(bool, GlyphId)> = None;
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        let mut use_fb = false;
        let mut id = main.glyph_id(c);
        if id.0 == 0 {
            if let Some(fb) = &fb {
                let fid = fb.glyph_id(c);
                if fid.0 != 0 {
                    use_fb = true;
                    id = fid;
                }
            }
        }
        if let Some((pfb, pid)) = prev {
            if pfb == use_fb {
                caret += if use_fb { fb.as_ref().map_or(0.0, |f| f.kern(pid, id)) } else { main.kern(pid, id) };
            }
        }
        out.push(Placed { fallback: use_fb, id, x: caret });
        caret += if use_fb { fb.as_ref().map_or(0.0, |f| f.h_advance(id)) } else { main.h_advance(id) };
        prev = Some((use_fb, id));
    }
    Some((out, caret))
}

/// Width in pixels of `text` at font size `size`, as [`TextFix`] draws it.
pub fn text_width(text: &str, size: f32) -> Option<f32> {
    layout(text, size).map(|(_, w)| w)
}

/// A backend wrapper that draws text with correct glyph positions (see the module docs).
pub struct TextFix<DB>(pub DB);

impl<DB: DrawingBackend> DrawingBackend for TextFix<DB> {
    type ErrorType = DB::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }
    fn estimate_text_size<TStyle: BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        self.0.estimate_text_size(text, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<TStyle: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let Some(font) = font() else {
            return self.0.draw_text(text, style, pos);
        };
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size() as f32;
        let Some((glyphs, advance)) = layout(text, size) else {
            return self.0.draw_text(text, style, pos);
        };
        // Plotters' box height (size / 1.24) so anchors agree with its margins; our own width,
        // which counts fallback glyphs correctly.
        let ((_, min_y), (_, max_y)) = style.layout_box(text).map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (advance.round() as i32, max_y - min_y);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let scaled = font.as_scaled(PxScale::from(size));
        // Centre the embedded font's ascent..descent span in the box.
        let baseline = height as f32 / 2.0 + (scaled.ascent() + scaled.descent()) / 2.0;
        let trans = style.transform();
        let (w, h) = self.0.get_size();
        for g in glyphs {
            let glyph = g.id.with_scale_and_position(PxScale::from(size), point(g.x, baseline));
            let outline =
                if g.fallback { fallback().and_then(|f| f.outline_glyph(glyph)) } else { font.outline_glyph(glyph) };
            let Some(outline) = outline else { continue };
            let b = outline.px_bounds();
            let mut result = Ok(());
            outline.draw(|gx, gy, coverage| {
                if result.is_err() || coverage <= 0.0 {
                    return;
                }
                let (x, y) = trans.transform(b.min.x as i32 + gx as i32 + dx, b.min.y as i32 + gy as i32 + dy);
                let (x, y) = (pos.0 + x, pos.1 + y);
                if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
                    let c = BackendColor { alpha: color.alpha * coverage.min(1.0) as f64, rgb: color.rgb };
                    result = self.0.draw_pixel((x, y), c);
                }
            });
            result?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::{render_png, Chart, DrawResult, FONT};
    use plotters::coord::Shift;
    use plotters::prelude::*;

    struct One(&'static str);
    impl Chart for One {
        fn size(&self) -> (u32, u32) {
            (100, 60)
        }
        fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult
        where
            DB::ErrorType: 'static,
        {
            root.fill(&WHITE)?;
            root.draw_text(self.0, &(FONT, 40).into_font().color(&BLACK), (10, 5))?;
            Ok(())
        }
    }

    fn ink_left(text: &'static str) -> i32 {
        let png = render_png(&One(text)).unwrap();
        let img = image::load_from_memory(&png).unwrap().to_luma8();
        (0..img.width()).find(|&x| (0..img.height()).any(|y| img.get_pixel(x, y).0[0] < 128)).unwrap() as i32
    }

    /// Each glyph starts at pen + its left side bearing (plotters' renderer drops the bearing,
    /// which drew "1132" as "11 32").
    #[test]
    fn glyphs_keep_their_side_bearing() {
        let f = font().unwrap().as_scaled(PxScale::from(40.0));
        let lsb = f.h_side_bearing(f.glyph_id('1'));
        assert!(lsb > 3.0, "test premise: '1' has a visible bearing ({lsb})");
        // Text drawn at x = 10: the ink starts one bearing to the right of it.
        let got = (ink_left("1") - 10) as f32;
        assert!((got - lsb).abs() <= 1.5, "ink starts {got} px after the pen, bearing is {lsb}");
    }
}
