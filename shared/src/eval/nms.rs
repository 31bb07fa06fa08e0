//! Non-maximum suppression exactly as ultralytics' `utils/nms.py::non_max_suppression` does it
//! for detection (the prediction and validation paths both use it):
//!
//! 1. candidates: anchors whose best class probability exceeds `conf`;
//! 2. xywh → xyxy;
//! 3. `multi_label` (validation): one row per (anchor, class) with probability > `conf`;
//!    otherwise (prediction) the best class only;
//! 4. optional class filter, then at most `max_nms` rows by confidence;
//! 5. class-aware NMS by offsetting boxes by `class × max_wh` (7680 px; 0 when `agnostic`),
//!    greedy like `torchvision.ops.nms` (IoU strictly greater than `iou` suppresses);
//! 6. at most `max_det` detections, highest confidence first.
//!
//! Works on the decoded (B, 4 + nc, A) tensor from `YoloModel::forward_eval`; the arithmetic is
//! f32 like PyTorch's so ties and thresholds fall the same way.

use candle_core::Tensor;

use crate::error::Result;

/// NMS settings (ultralytics argument names; defaults are predict's).
#[derive(Debug, Clone)]
pub struct NmsConfig {
    /// Confidence threshold (predict 0.25, val 0.001).
    pub conf: f32,
    /// IoU threshold (cfg `iou`, 0.7).
    pub iou: f32,
    /// Keep only these classes (cfg `classes`).
    pub classes: Option<Vec<usize>>,
    /// Class-agnostic NMS (cfg `agnostic_nms`, or `single_cls` in validation).
    pub agnostic: bool,
    /// One detection per (box, class) above `conf` (validation) instead of the best class only.
    pub multi_label: bool,
    /// Maximum detections per image (cfg `max_det`, 300).
    pub max_det: usize,
    /// Maximum boxes entering NMS (30000).
    pub max_nms: usize,
    /// Per-class box offset in pixels for class-aware NMS (7680).
    pub max_wh: f32,
}

impl Default for NmsConfig {
    fn default() -> Self {
        NmsConfig {
            conf: 0.25,
            iou: 0.7,
            classes: None,
            agnostic: false,
            multi_label: false,
            max_det: 300,
            max_nms: 30000,
            max_wh: 7680.0,
        }
    }
}

impl NmsConfig {
    /// ultralytics' validation settings: conf 0.001, iou 0.7, multi_label, max_det 300.
    pub fn validation() -> Self {
        NmsConfig { conf: 0.001, multi_label: true, ..Default::default() }
    }
}

/// One detection in input-image pixels (before `scale_boxes`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// x1, y1, x2, y2.
    pub xyxy: [f32; 4],
    pub conf: f32,
    pub cls: usize,
    /// Index of the anchor the box came from (ultralytics `return_idxs`).
    pub anchor: usize,
}

/// NMS over a decoded prediction tensor (B, 4 + nc, A); one list per image, best first.
pub fn non_max_suppression(pred: &Tensor, cfg: &NmsConfig) -> Result<Vec<Vec<Detection>>> {
    let (b, rows, a) = pred.dims3()?;
    let data: Vec<f32> = pred.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1()?;
    let per = rows * a;
    Ok((0..b).map(|i| nms_image(&data[i * per..(i + 1) * per], rows - 4, a, cfg)).collect())
}

/// NMS for one image whose predictions are `data` laid out (4 + nc, A) row-major.
pub fn nms_image(data: &[f32], nc: usize, a: usize, cfg: &NmsConfig) -> Vec<Detection> {
    let multi_label = cfg.multi_label && nc > 1;
    let score = |c: usize, j: usize| data[(4 + c) * a + j];
    let mut cand: Vec<Detection> = Vec::new();
    for j in 0..a {
        // amax over classes > conf (ultralytics' `xc`).
        let (mut best, mut best_c) = (f32::NEG_INFINITY, 0);
        for c in 0..nc {
            let s = score(c, j);
            if s > best {
                best = s;
                best_c = c;
            }
        }
        if best <= cfg.conf {
            continue;
        }
        let (x, y, w, h) = (data[j], data[a + j], data[2 * a + j], data[3 * a + j]);
        let (dw, dh) = (w / 2.0, h / 2.0);
        let xyxy = [x - dw, y - dh, x + dw, y + dh];
        if multi_label {
            for c in 0..nc {
                let s = score(c, j);
                if s > cfg.conf {
                    cand.push(Detection { xyxy, conf: s, cls: c, anchor: j });
                }
            }
        } else {
            cand.push(Detection { xyxy, conf: best, cls: best_c, anchor: j });
        }
    }
    if let Some(keep) = &cfg.classes {
        cand.retain(|d| keep.contains(&d.cls));
    }
    if cand.is_empty() {
        return cand;
    }
    if cand.len() > cfg.max_nms {
        sort_desc(&mut cand);
        cand.truncate(cfg.max_nms);
    }
    let off = if cfg.agnostic { 0.0 } else { cfg.max_wh };
    let boxes: Vec<[f32; 4]> = cand
        .iter()
        .map(|d| {
            let o = d.cls as f32 * off;
            [d.xyxy[0] + o, d.xyxy[1] + o, d.xyxy[2] + o, d.xyxy[3] + o]
        })
        .collect();
    let scores: Vec<f32> = cand.iter().map(|d| d.conf).collect();
    let mut keep = nms(&boxes, &scores, cfg.iou);
    keep.truncate(cfg.max_det);
    keep.into_iter().map(|i| cand[i]).collect()
}

fn sort_desc(d: &mut [Detection]) {
    d.sort_by(|x, y| y.conf.partial_cmp(&x.conf).unwrap_or(std::cmp::Ordering::Equal));
}

/// Greedy NMS like `torchvision.ops.nms`: indices of kept boxes, by decreasing score. A box is
/// dropped when its IoU with a kept, higher-scoring box is greater than `iou`.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&i, &j| scores[j].partial_cmp(&scores[i]).unwrap_or(std::cmp::Ordering::Equal));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &boxes[i];
        let ai = area(bi);
        for &j in &order[oi + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            if inter / (ai + area(bj) - inter) > iou {
                suppressed[j] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Build a (1, 4 + nc, A) prediction from (xywh, class scores) rows.
    fn pred(rows: &[([f32; 4], Vec<f32>)]) -> Tensor {
        let a = rows.len();
        let nc = rows[0].1.len();
        let mut d = vec![0f32; (4 + nc) * a];
        for (j, (b, s)) in rows.iter().enumerate() {
            for k in 0..4 {
                d[k * a + j] = b[k];
            }
            for (c, &v) in s.iter().enumerate() {
                d[(4 + c) * a + j] = v;
            }
        }
        Tensor::from_vec(d, (1, 4 + nc, a), &Device::Cpu).unwrap()
    }

    #[test]
    fn suppresses_same_class_overlaps_only() {
        let p = pred(&[
            ([50., 50., 20., 20.], vec![0.9, 0.0]),
            ([51., 50., 20., 20.], vec![0.8, 0.0]), // same class, IoU ~0.9 → suppressed
            ([51., 51., 20., 20.], vec![0.0, 0.7]), // other class → kept
            ([150., 150., 10., 10.], vec![0.2, 0.0]), // below conf
        ]);
        let d = &non_max_suppression(&p, &NmsConfig::default()).unwrap()[0];
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].cls, d[0].anchor), (0, 0));
        assert_eq!((d[1].cls, d[1].anchor), (1, 2));
        assert_eq!(d[0].xyxy, [40., 40., 60., 60.]);
        // agnostic: the class-1 box is suppressed by the class-0 box too.
        let d = &non_max_suppression(&p, &NmsConfig { agnostic: true, ..Default::default() }).unwrap()[0];
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn multi_label_and_limits() {
        let p = pred(&[([50., 50., 20., 20.], vec![0.6, 0.5]), ([90., 90., 20., 20.], vec![0.4, 0.0])]);
        let d = &non_max_suppression(&p, &NmsConfig { multi_label: true, conf: 0.3, ..Default::default() }).unwrap()[0];
        assert_eq!(d.iter().map(|x| (x.anchor, x.cls)).collect::<Vec<_>>(), vec![(0, 0), (0, 1), (1, 0)]);
        let d = &non_max_suppression(&p, &NmsConfig { multi_label: true, conf: 0.3, max_det: 2, ..Default::default() })
            .unwrap()[0];
        assert_eq!(d.len(), 2);
        let d = &non_max_suppression(&p, &NmsConfig { conf: 0.3, classes: Some(vec![1]), ..Default::default() })
            .unwrap()[0];
        assert!(d.is_empty(), "best class of each box is 0");
    }

    #[test]
    fn iou_threshold_is_strict() {
        // Two boxes with IoU exactly 0.5.
        let b = [[0., 0., 2., 1.], [1., 0., 3., 1.]];
        assert_eq!(nms(&b, &[0.9, 0.8], 1.0 / 3.0), vec![0, 1]);
        assert_eq!(nms(&b, &[0.9, 0.8], 0.3), vec![0]);
    }
}
