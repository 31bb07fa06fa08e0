//! Correct glyph placement for bitmap charts.
//!
//! plotters 0.3.7's `ab_glyph` text renderer drops each glyph's left side bearing (it draws the
//! glyph's pixel box at the pen position instead of offsetting it by `px_bounds().min.x`), so
//! digits drift apart: "1132" renders as "11 32" — unacceptable on a chart of counts.
//! [`TextFix`] wraps any backend, forwards everything, and rasterises text itself with the same
//! embedded font, the same layout box (so plotters' anchors and margins still agree) and proper
//! glyph positioning. Only the PNG path needs it: SVG text is drawn by the viewer.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// The embedded font, parsed once.
fn font() -> Option<&'static FontRef<'static>> {
    static FONT_REF: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT_REF.get_or_init(|| FontRef::try_from_slice(super::DEJAVU_SANS).ok()).as_ref()
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
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
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
    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
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
        // The same box plotters computes (and uses for margins), anchored the same way.
        let ((min_x, min_y), (max_x, max_y)) =
            style.layout_box(text).map_err(|e| DrawingErrorKind::FontError(Box::new(e)))?;
        let (width, height) = (max_x - min_x, max_y - min_y);
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
        let scaled = font.as_scaled(PxScale::from(style.size() as f32));
        // Centre the font's ascent..descent span in the box.
        let baseline = height as f32 / 2.0 + (scaled.ascent() + scaled.descent()) / 2.0;
        let trans = style.transform();
        let (w, h) = self.0.get_size();
        let mut caret = 0f32;
        let mut prev = None;
        for c in text.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scaled.scale(), point(caret, baseline));
            caret += scaled.h_advance(id);
            let Some(outline) = font.outline_glyph(glyph) else { continue };
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
