//! ultralytics 8.4's `multi_scale` (`DetectionTrainer.preprocess_batch`): each training batch is
//! resized, after the loader built it, to a random size between `imgsz·(1 − f)` and
//! `imgsz·(1 + f)` in steps of the stride, with `torch.nn.functional.interpolate(mode="bilinear",
//! align_corners=False)`. Targets are normalised, so they are unchanged.
//!
//! The size is drawn from a ChaCha8 stream keyed by (seed, epoch, batch), not Python's `random`,
//! so a resumed run draws the same sizes as an uninterrupted one.

use rand::Rng;
use rayon::prelude::*;

use super::loader::keyed_rng;

/// Keeps the multi-scale draws apart from the loader's per-sample streams (same keys otherwise).
const STREAM: u64 = 0x6d75_6c74_6973_6361; // "multisca"

/// The multi-scale setting of one training run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MultiScale {
    pub imgsz: usize,
    /// The `multi_scale` fraction (0 = off).
    pub fraction: f64,
    pub stride: usize,
    pub seed: u64,
}

impl MultiScale {
    /// The smallest size a batch can get (`_build_train_pipeline`'s `min_imgsz`).
    pub fn min_size(&self) -> usize {
        self.low() / self.stride * self.stride
    }

    /// The largest size AutoBatch plans for (8.4's `BaseTrainer.auto_batch` `max_imgsz`):
    /// `imgsz · (1 + f)` rounded up to the stride.
    pub fn max_size(&self) -> usize {
        ((self.imgsz as f64 * (1.0 + self.fraction)) / self.stride as f64).ceil() as usize * self.stride
    }

    /// `randrange`'s lower bound, `max(stride, int(imgsz · (1 − f)))`.
    fn low(&self) -> usize {
        self.stride.max((self.imgsz as f64 * (1.0 - self.fraction)) as usize)
    }

    /// `random.randrange(lo, hi) // stride * stride` for batch `batch` of `epoch`, or None when
    /// multi-scale is off.
    pub fn size(&self, epoch: usize, batch: usize) -> Option<usize> {
        if self.fraction <= 0.0 {
            return None;
        }
        let lo = self.low();
        let hi = (self.imgsz as f64 * (1.0 + self.fraction) + self.stride as f64) as usize;
        let mut rng = keyed_rng(self.seed ^ STREAM, epoch as u64, batch as u64);
        let sz = if hi > lo { rng.gen_range(lo..hi) } else { lo };
        Some(sz / self.stride * self.stride)
    }

    /// The (height, width) a batch of shape `hw` is resized to at size `sz`: the longer side
    /// scaled to `sz`, each side rounded up to the stride (ultralytics stretches to stride
    /// multiples); None when the scale factor is exactly 1.
    pub fn shape_for(&self, sz: usize, hw: (usize, usize)) -> Option<(usize, usize)> {
        let sf = sz as f64 / hw.0.max(hw.1) as f64;
        if sf == 1.0 {
            return None;
        }
        let s = self.stride as f64;
        let side = |x: usize| ((x as f64 * sf / s).ceil() * s) as usize;
        Some((side(hw.0), side(hw.1)))
    }
}

/// torch's CPU `upsample_bilinear2d` with `align_corners=False` and no scale factors: `planes`
/// contiguous planes of `from` (h, w) resized to `to` (h, w). The source coordinate is
/// `(dst + 0.5)·(in/out) − 0.5`, clamped at 0, with f32 arithmetic as torch's float kernel.
pub fn resize_bilinear(src: &[f32], planes: usize, from: (usize, usize), to: (usize, usize)) -> Vec<f32> {
    let (ih, iw) = from;
    let (oh, ow) = to;
    assert_eq!(src.len(), planes * ih * iw, "resize_bilinear: source length");
    let ys = axis(ih, oh);
    let xs = axis(iw, ow);
    let mut out = vec![0f32; planes * oh * ow];
    out.par_chunks_exact_mut(oh * ow).enumerate().for_each(|(p, dst)| {
        let plane = &src[p * ih * iw..(p + 1) * ih * iw];
        for (y, row) in dst.chunks_exact_mut(ow).enumerate() {
            let a = &ys[y];
            let (r0, r1) = (&plane[a.i0 * iw..(a.i0 + 1) * iw], &plane[a.i1 * iw..(a.i1 + 1) * iw]);
            for (x, o) in row.iter_mut().enumerate() {
                let b = &xs[x];
                let t0 = r0[b.i0] * b.w0 + r0[b.i1] * b.w1;
                let t1 = r1[b.i0] * b.w0 + r1[b.i1] * b.w1;
                *o = t0 * a.w0 + t1 * a.w1;
            }
        }
    });
    out
}

/// One output index's two source indices and weights along an axis.
struct Tap {
    i0: usize,
    i1: usize,
    w0: f32,
    w1: f32,
}

/// torch's `compute_indices_weights_linear` for one axis (`area_pixel_compute_scale`,
/// `area_pixel_compute_source_index`, `guard_index_and_lambda`).
fn axis(input: usize, output: usize) -> Vec<Tap> {
    let scale = input as f32 / output as f32;
    (0..output)
        .map(|d| {
            let real = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (real.floor() as usize).min(input - 1);
            let w1 = (real - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            Tap { i0, i1, w0: 1.0 - w1, w1 }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(f: f64) -> MultiScale {
        MultiScale { imgsz: 640, fraction: f, stride: 32, seed: 0 }
    }

    #[test]
    fn sizes_cover_ultralytics_range_in_stride_steps() {
        // randrange(320, 992) // 32 * 32 → 320..=960
        let m = ms(0.5);
        let sizes: std::collections::BTreeSet<usize> = (0..2000).map(|i| m.size(0, i).unwrap()).collect();
        assert_eq!(sizes.first(), Some(&320));
        assert_eq!(sizes.last(), Some(&960));
        assert!(sizes.iter().all(|s| s % 32 == 0));
        assert_eq!(sizes.len(), (960 - 320) / 32 + 1);
        assert_eq!(m.min_size(), 320);
        assert_eq!(ms(0.0).size(0, 0), None);
        // the same key gives the same size (a resumed run replays its sizes)
        assert_eq!(m.size(3, 17), m.size(3, 17));
    }

    #[test]
    fn shapes_scale_the_long_side_and_round_up_to_the_stride() {
        let m = ms(0.5);
        assert_eq!(m.shape_for(640, (640, 640)), None);
        assert_eq!(m.shape_for(320, (640, 640)), Some((320, 320)));
        // rect batch 384×640 at 480: sf 0.75 → 288×480
        assert_eq!(m.shape_for(480, (384, 640)), Some((288, 480)));
        // 352×640 at 416: sf 0.65 → 228.8 → 256
        assert_eq!(m.shape_for(416, (352, 640)), Some((256, 416)));
    }

    #[test]
    fn bilinear_matches_hand_values() {
        // 1×2 → 1×4 (align_corners=False): x = 0, 0.25, 0.75, 1 of the way
        let out = resize_bilinear(&[0.0, 1.0], 1, (1, 2), (1, 4));
        assert_eq!(out, vec![0.0, 0.25, 0.75, 1.0]);
        // downscale 4 → 2 averages neighbours
        let out = resize_bilinear(&[0.0, 1.0, 2.0, 3.0], 1, (1, 4), (1, 2));
        assert_eq!(out, vec![0.5, 2.5]);
        // identity size is the identity
        let src: Vec<f32> = (0..2 * 3 * 5).map(|v| v as f32 * 0.1).collect();
        assert_eq!(resize_bilinear(&src, 2, (3, 5), (3, 5)), src);
    }
}
