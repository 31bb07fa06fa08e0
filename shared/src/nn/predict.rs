//! Prediction: image → letterbox → network (eval) → NMS → boxes in original-image pixels, as
//! ultralytics' `model.predict()` does it, and the output formats it writes:
//! YOLO txt (`class xc yc w h [conf]`, normalised, `%g`), JSON (`Results.summary()` rows) and,
//! optionally, annotated images.
//!
//! Preprocessing follows the predictor: `LetterBox(imgsz, auto=rect)` (minimum stride-multiple
//! rectangle by default, like `predict(rect=True)`), RGB, /255; one image per forward pass
//! by default (ultralytics' predict batch 1), or `batch` images per pass
//! ([`predict_images`]), padded to `imgsz` squares unless they all share a shape, as ultralytics
//! does. Sources (files, folders, globs, lists) are resolved by `data::source`.

use std::path::{Path, PathBuf};

use candle_core::Device;
use image::RgbImage;

use super::fused::EvalNet;
use crate::data::image::{letterbox, load_rgb, scale_boxes, to_tensor, Letterbox};
use crate::error::Result;
use crate::eval::nms::{non_max_suppression, NmsConfig};

/// Prediction settings (ultralytics predict argument names and defaults).
#[derive(Debug, Clone)]
pub struct PredictConfig {
    pub imgsz: usize,
    /// Confidence threshold (predict default 0.25).
    pub conf: f32,
    /// NMS IoU threshold (0.7).
    pub iou: f32,
    pub max_det: usize,
    pub classes: Option<Vec<usize>>,
    pub agnostic_nms: bool,
    /// Minimum-rectangle letterbox (ultralytics predict's `rect=True`); false pads to a square.
    pub rect: bool,
}

impl Default for PredictConfig {
    fn default() -> Self {
        PredictConfig { imgsz: 640, conf: 0.25, iou: 0.7, max_det: 300, classes: None, agnostic_nms: false, rect: true }
    }
}

/// One detected object in original-image pixels.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BoxDetection {
    /// x1, y1, x2, y2 in original-image pixels.
    pub xyxy: [f32; 4],
    pub conf: f32,
    pub cls: usize,
    pub name: String,
}

/// All detections of one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageResult {
    pub path: Option<PathBuf>,
    /// (height, width) of the original image.
    pub orig_shape: (usize, usize),
    /// (height, width) the network saw.
    pub input_shape: (usize, usize),
    pub detections: Vec<BoxDetection>,
    /// Milliseconds spent in preprocess / inference / postprocess (ultralytics' `speed`).
    pub speed_ms: [f64; 3],
}

/// Run the model (eval mode) on one decoded RGB image.
pub fn predict_image(
    net: &EvalNet,
    names: &[String],
    img: &RgbImage,
    cfg: &PredictConfig,
    device: &Device,
) -> Result<ImageResult> {
    Ok(predict_images(net, names, &[img], cfg, device)?.pop().unwrap_or_else(|| unreachable!("one result per image")))
}

/// Run the model on a batch of decoded images in one forward pass (ultralytics' predict with
/// `batch > 1`): the minimum-rectangle letterbox when every image has the same shape and
/// `cfg.rect`, otherwise `imgsz` squares (as ultralytics' `pre_transform` decides). The
/// per-image `speed_ms` is the batch's time divided by its size.
pub fn predict_images(
    net: &EvalNet,
    names: &[String],
    imgs: &[&RgbImage],
    cfg: &PredictConfig,
    device: &Device,
) -> Result<Vec<ImageResult>> {
    if imgs.is_empty() {
        return Ok(Vec::new());
    }
    let t0 = std::time::Instant::now();
    let same_shape = imgs.iter().all(|im| im.dimensions() == imgs[0].dimensions());
    let lb = Letterbox {
        new_shape: (cfg.imgsz, cfg.imgsz),
        auto: cfg.rect && same_shape,
        scaleup: true,
        center: true,
        stride: net.model.max_stride(),
    };
    let boxed: Vec<_> = imgs.iter().map(|im| letterbox(im, &lb)).collect();
    let x = to_tensor(&boxed.iter().map(|b| &b.0).collect::<Vec<_>>(), device)?;
    let t1 = std::time::Instant::now();
    let (decoded, _) = net.forward(&x, false)?;
    let decoded = decoded.to_device(&Device::Cpu)?;
    let t2 = std::time::Instant::now();
    let nms = NmsConfig {
        conf: cfg.conf,
        iou: cfg.iou,
        classes: cfg.classes.clone(),
        agnostic: cfg.agnostic_nms,
        max_det: cfg.max_det,
        ..Default::default()
    };
    let all = non_max_suppression(&decoded, &nms)?;
    let mut results = Vec::with_capacity(imgs.len());
    for (dets, (_, info)) in all.into_iter().zip(&boxed) {
        let mut boxes: Vec<[f32; 4]> = dets.iter().map(|d| d.xyxy).collect();
        scale_boxes(info.shape, &mut boxes, info.orig_shape, None);
        let detections = dets
            .iter()
            .zip(boxes)
            .map(|(d, b)| BoxDetection {
                xyxy: b,
                conf: d.conf,
                cls: d.cls,
                name: names.get(d.cls).cloned().unwrap_or_else(|| d.cls.to_string()),
            })
            .collect();
        results.push(ImageResult {
            path: None,
            orig_shape: info.orig_shape,
            input_shape: info.shape,
            detections,
            speed_ms: [0.0; 3],
        });
    }
    let t3 = std::time::Instant::now();
    let per = |a: std::time::Instant, b: std::time::Instant| (b - a).as_secs_f64() * 1e3 / imgs.len() as f64;
    for r in &mut results {
        r.speed_ms = [per(t0, t1), per(t1, t2), per(t2, t3)];
    }
    Ok(results)
}

/// Read and predict one image file.
pub fn predict_path(
    net: &EvalNet,
    names: &[String],
    path: &Path,
    cfg: &PredictConfig,
    device: &Device,
) -> Result<ImageResult> {
    let img = load_rgb(path)?;
    let mut r = predict_image(net, names, &img, cfg, device)?;
    r.path = Some(path.to_path_buf());
    Ok(r)
}

/// Python's `%g` (6 significant digits, no trailing zeros), as ultralytics' txt files use.
pub fn fmt_g(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    // The exponent after rounding to 6 significant digits decides the form, as in C's %g.
    let sci = format!("{:.5e}", x);
    let (m, e) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = e.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
        return format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let decimals = (5 - exp).max(0) as usize;
    let s = format!("{:.*}", decimals, x);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

impl ImageResult {
    /// YOLO txt lines (ultralytics `save_txt`): `class xc yc w h` normalised, `conf` appended
    /// when `save_conf`.
    pub fn yolo_txt(&self, save_conf: bool) -> String {
        let (h, w) = (self.orig_shape.0 as f64, self.orig_shape.1 as f64);
        let mut s = String::new();
        for d in &self.detections {
            let b = d.xyxy.map(|v| v as f64);
            let vals = [(b[0] + b[2]) / 2.0 / w, (b[1] + b[3]) / 2.0 / h, (b[2] - b[0]) / w, (b[3] - b[1]) / h];
            s.push_str(&d.cls.to_string());
            for v in vals {
                s.push(' ');
                s.push_str(&fmt_g(v));
            }
            if save_conf {
                s.push(' ');
                s.push_str(&fmt_g(d.conf as f64));
            }
            s.push('\n');
        }
        s
    }

    /// ultralytics `Results.summary()` rows: name, class, confidence, box {x1, y1, x2, y2}
    /// (pixels, 5 decimals).
    pub fn summary_json(&self) -> serde_json::Value {
        let r5 = |v: f64| (v * 1e5).round() / 1e5;
        serde_json::Value::Array(
            self.detections
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "name": d.name,
                        "class": d.cls,
                        "confidence": r5(d.conf as f64),
                        "box": {"x1": r5(d.xyxy[0] as f64), "y1": r5(d.xyxy[1] as f64), "x2": r5(d.xyxy[2] as f64), "y2": r5(d.xyxy[3] as f64)},
                    })
                })
                .collect(),
        )
    }
}

/// ultralytics' `Colors` palette (hex), indexed by class.
const PALETTE: [u32; 20] = [
    0x042AFF, 0x0BDBEB, 0xF3F3F3, 0x00DFB7, 0x111F68, 0xFF6FDD, 0xFF444F, 0xCCED00, 0x00F344, 0xBD00FF, 0x00B4FF,
    0xDD00BA, 0x00FFFF, 0x26C000, 0x01FFB3, 0x7D24FF, 0x7B0068, 0xFF1B6C, 0xFC6D2F, 0xA2FF0B,
];

/// Class colour (RGB) as ultralytics' annotator picks it.
pub fn class_color(cls: usize) -> [u8; 3] {
    let c = PALETTE[cls % PALETTE.len()];
    [(c >> 16) as u8, (c >> 8) as u8, c as u8]
}

/// Draw the detections onto a copy of `img`: a box per detection (line width ∝ image size, as
/// ultralytics) and a filled class-coloured tab above it whose length shows the confidence
/// (no text: kubeyolo ships no font for this path; the JSON has names and scores).
pub fn annotate(img: &RgbImage, result: &ImageResult) -> RgbImage {
    let mut out = img.clone();
    let (w, h) = (out.width() as i64, out.height() as i64);
    let lw = (((w + h) as f64 / 2.0 * 0.003).round() as i64).max(2);
    let mut put = |x: i64, y: i64, c: [u8; 3]| {
        if x >= 0 && y >= 0 && x < w && y < h {
            out.put_pixel(x as u32, y as u32, image::Rgb(c));
        }
    };
    for d in &result.detections {
        let c = class_color(d.cls);
        let [x1, y1, x2, y2] = d.xyxy.map(|v| v.round() as i64);
        for t in 0..lw {
            for x in x1..=x2 {
                put(x, y1 + t, c);
                put(x, y2 - t, c);
            }
            for y in y1..=y2 {
                put(x1 + t, y, c);
                put(x2 - t, y, c);
            }
        }
        let tab_h = 3 * lw;
        let tab_w = (((x2 - x1) as f32 * d.conf.clamp(0.0, 1.0)) as i64).max(lw);
        let ty = if y1 - tab_h >= 0 { y1 - tab_h } else { y1 };
        for y in ty..ty + tab_h {
            for x in x1..x1 + tab_w {
                put(x, y, c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_g_matches_python() {
        assert_eq!(fmt_g(0.5), "0.5");
        assert_eq!(fmt_g(0.123456789), "0.123457");
        assert_eq!(fmt_g(1.0), "1");
        assert_eq!(fmt_g(0.000012345678), "1.23457e-05");
        assert_eq!(fmt_g(123.0), "123");
        assert_eq!(fmt_g(0.1), "0.1");
        assert_eq!(fmt_g(0.00012345678), "0.000123457");
        assert_eq!(fmt_g(0.9999996), "1");
        assert_eq!(fmt_g(1234567.0), "1.23457e+06");
    }
}
