//! Decoding the Detect head's raw outputs into boxes, exactly as ultralytics'
//! `Detect._inference`: anchor points at cell centres ([`make_anchors`]), the DFL expectation
//! over `reg_max` bins, [`dist2bbox`] (left/top/right/bottom distances → xywh), scaling by the
//! level's stride, and sigmoid class scores.
//!
//! The result has ultralytics' inference layout, (B, 4 + nc, A): rows 0..4 are box centre x,
//! centre y, width, height in input-image pixels, rows 4.. are class probabilities; anchors are
//! ordered level by level (stride 8 first), row-major within a level. NMS ([`crate::eval::nms`])
//! and the loss's anchor assignment both use this order.

use candle_core::{Device, Result, Tensor, D};

use super::blocks::{Dfl, HeadOutput, Hw};

/// Anchor points and their strides for feature maps of sizes `shapes` with `strides`:
/// ultralytics `make_anchors(feats, strides, grid_cell_offset=0.5)`.
///
/// Returns (anchor points (A, 2) as (x, y) in grid units, stride per anchor (A, 1)), f32.
pub fn make_anchors(shapes: &[Hw], strides: &[f64], offset: f64, device: &Device) -> Result<(Tensor, Tensor)> {
    let total: usize = shapes.iter().map(|(h, w)| h * w).sum();
    let mut pts = Vec::with_capacity(total * 2);
    let mut st = Vec::with_capacity(total);
    for (&(h, w), &s) in shapes.iter().zip(strides) {
        for y in 0..h {
            for x in 0..w {
                pts.push((x as f64 + offset) as f32);
                pts.push((y as f64 + offset) as f32);
                st.push(s as f32);
            }
        }
    }
    Ok((Tensor::from_vec(pts, (total, 2), device)?, Tensor::from_vec(st, (total, 1), device)?))
}

/// ultralytics `dist2bbox(distance, anchor_points, xywh, dim)` along dimension 1 of a
/// (B, 4, A) `distance` with (1, 2, A) `anchors`: returns (B, 4, A) as xywh (centre, size) when
/// `xywh`, else x1y1x2y2.
pub fn dist2bbox(distance: &Tensor, anchors: &Tensor, xywh: bool) -> Result<Tensor> {
    let lt = distance.narrow(1, 0, 2)?;
    let rb = distance.narrow(1, 2, 2)?;
    let x1y1 = anchors.broadcast_sub(&lt)?;
    let x2y2 = anchors.broadcast_add(&rb)?;
    if xywh {
        let c = ((&x1y1 + &x2y2)? / 2.0)?;
        let wh = (x2y2 - x1y1)?;
        Tensor::cat(&[c, wh], 1)
    } else {
        Tensor::cat(&[x1y1, x2y2], 1)
    }
}

/// Decode raw head outputs into ultralytics' inference tensor (B, 4 + nc, A) (xywh pixels +
/// sigmoid class scores).
pub fn decode(out: &HeadOutput, dfl: &Dfl) -> Result<Tensor> {
    let boxes = out.boxes()?; // (B, 4·reg_max, A)
    let scores = out.scores()?; // (B, nc, A)
    let dev = boxes.device().clone();
    let (anchors, strides) = make_anchors(&out.level_shapes()?, &out.strides, 0.5, &dev)?;
    let dtype = boxes.dtype();
    let anchors = anchors.t()?.unsqueeze(0)?.to_dtype(dtype)?; // (1, 2, A)
    let strides = strides.t()?.unsqueeze(0)?.to_dtype(dtype)?; // (1, 1, A)
    let dist = if out.reg_max > 1 { dfl.forward(&boxes)? } else { boxes };
    let dbox = dist2bbox(&dist, &anchors, true)?.broadcast_mul(&strides)?;
    let probs = candle_nn::ops::sigmoid(&scores)?;
    Tensor::cat(&[dbox, probs], 1)
}

/// xywh (centre, size) → x1y1x2y2 on the last dimension of (…, 4).
pub fn xywh2xyxy(b: &Tensor) -> Result<Tensor> {
    let c = b.narrow(D::Minus1, 0, 2)?;
    let half = (b.narrow(D::Minus1, 2, 2)? / 2.0)?;
    Tensor::cat(&[(&c - &half)?, (&c + &half)?], D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_are_cell_centres_level_by_level() {
        let (a, s) = make_anchors(&[(2, 3), (1, 1)], &[8.0, 16.0], 0.5, &Device::Cpu).unwrap();
        let a: Vec<Vec<f32>> = a.to_vec2().unwrap();
        assert_eq!(a.len(), 7);
        assert_eq!(a[0], vec![0.5, 0.5]);
        assert_eq!(a[1], vec![1.5, 0.5]);
        assert_eq!(a[3], vec![0.5, 1.5]);
        assert_eq!(a[6], vec![0.5, 0.5]);
        let s: Vec<Vec<f32>> = s.to_vec2().unwrap();
        assert_eq!(s[5][0], 8.0);
        assert_eq!(s[6][0], 16.0);
    }

    #[test]
    fn dist2bbox_xywh_and_xyxy() {
        let d = Tensor::from_vec(vec![1f32, 2., 3., 4.], (1, 4, 1), &Device::Cpu).unwrap();
        let a = Tensor::from_vec(vec![10f32, 20.], (1, 2, 1), &Device::Cpu).unwrap();
        let xyxy: Vec<f32> = dist2bbox(&d, &a, false).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(xyxy, vec![9., 18., 13., 24.]);
        let xywh: Vec<f32> = dist2bbox(&d, &a, true).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(xywh, vec![11., 21., 4., 6.]);
    }
}
