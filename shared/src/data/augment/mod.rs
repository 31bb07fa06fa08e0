//! ultralytics' training augmentations (`data/augment.py` of 8.4.190), each transform family in
//! its own module and each written as a pure function of (inputs, explicit random draws), so
//! that the parity test can replay the draws ultralytics made:
//!
//! | module | ultralytics | what |
//! |---|---|---|
//! | [`mosaic`] | `Mosaic` (n=4) | 2×2 mosaic on a 2·imgsz canvas of grey 114 |
//! | [`perspective`] | `RandomPerspective` | the affine/perspective matrix, OpenCV 5's float `warpAffine`/`warpPerspective` (INTER_LINEAR, border 114), box transform and `box_candidates` |
//! | [`hsv`] | `RandomHSV` | OpenCV's 8-bit BGR↔HSV conversions and ultralytics' LUTs |
//! | [`flip`] | `RandomFlip` | horizontal / vertical flips |
//! | [`mixup`] | `MixUp`, `CutMix` | blending and cut-and-paste of a second augmented image |
//!
//! Letterboxing (validation-style samples) is [`crate::data::image::letterbox`].
//!
//! `CopyPaste` needs polygon segments; kubeyolo's label reader turns polygons into boxes, so
//! (as in ultralytics for box-only datasets, where it returns early) copy-paste changes nothing.
//!
//! [`train_sample`] chains them in `v8_transforms` order, drawing every random number from the
//! one RNG it is given (the loader keys it by seed, epoch and dataset index).

pub mod flip;
pub mod hsv;
pub mod mixup;
pub mod mosaic;
pub mod perspective;

use image::RgbImage;
use rand::Rng;

use crate::data::dataset::TrainDataset;
use crate::data::image::{letterbox_params, Letterbox};

/// The augmentation hyper-parameters (from the cfg yaml keys of the same names).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentConfig {
    pub imgsz: usize,
    pub mosaic: f64,
    pub mixup: f64,
    pub cutmix: f64,
    pub copy_paste: f64,
    pub degrees: f64,
    pub translate: f64,
    pub scale: f64,
    pub shear: f64,
    pub perspective: f64,
    pub hsv_h: f64,
    pub hsv_s: f64,
    pub hsv_v: f64,
    pub fliplr: f64,
    pub flipud: f64,
    pub bgr: f64,
}

impl AugmentConfig {
    /// The cfg's values at the training size `imgsz` (the cfg's `imgsz` after rounding up to the
    /// stride, as ultralytics' `check_imgsz` rewrites `args.imgsz` before building the dataset).
    /// `copy_paste` is read from the raw key: kubeyolo keeps no typed field for it.
    pub fn from_hyp(h: &crate::config::hyp::Hyp, imgsz: usize) -> Self {
        let copy_paste = h.value("copy_paste").and_then(|v| v.as_f64()).unwrap_or(0.0);
        AugmentConfig {
            imgsz,
            mosaic: h.mosaic,
            mixup: h.mixup,
            cutmix: h.cutmix,
            copy_paste,
            degrees: h.degrees,
            translate: h.translate,
            scale: h.scale,
            shear: h.shear,
            perspective: h.perspective,
            hsv_h: h.hsv_h,
            hsv_s: h.hsv_s,
            hsv_v: h.hsv_v,
            fliplr: h.fliplr,
            flipud: h.flipud,
            bgr: h.bgr,
        }
    }

    /// ultralytics' `close_dataloader_mosaic`: mosaic, mixup, cutmix and copy_paste off.
    pub fn closed_mosaic(mut self) -> Self {
        self.mosaic = 0.0;
        self.mixup = 0.0;
        self.cutmix = 0.0;
        self.copy_paste = 0.0;
        self
    }
}

/// One image with its labels while it moves through the transforms: boxes as pixel `xyxy`
/// (ultralytics' `Instances` after `convert_bbox("xyxy")` + `denormalize`), one class per box.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub img: RgbImage,
    pub boxes: Vec<[f32; 4]>,
    pub cls: Vec<usize>,
}

impl Sample {
    pub fn width(&self) -> usize {
        self.img.width() as usize
    }
    pub fn height(&self) -> usize {
        self.img.height() as usize
    }

    /// Labels as ultralytics' `Format(normalize=True, bbox_format="xywh")` emits them.
    pub fn normalized_xywh(&self) -> Vec<[f32; 4]> {
        let (w, h) = (self.width() as f32, self.height() as f32);
        self.boxes
            .iter()
            .map(|b| [((b[0] + b[2]) / 2.0) / w, ((b[1] + b[3]) / 2.0) / h, (b[2] - b[0]) / w, (b[3] - b[1]) / h])
            .collect()
    }

    /// Clip boxes to `w`×`h` (ultralytics' `Instances.clip`).
    pub fn clip(&mut self, w: f32, h: f32) {
        for b in &mut self.boxes {
            b[0] = b[0].clamp(0.0, w);
            b[2] = b[2].clamp(0.0, w);
            b[1] = b[1].clamp(0.0, h);
            b[3] = b[3].clamp(0.0, h);
        }
    }

    /// Drop boxes with zero area (ultralytics' `remove_zero_area_boxes`).
    pub fn remove_zero_area(&mut self) {
        self.retain(|b| (b[2] - b[0]) * (b[3] - b[1]) > 0.0);
    }

    /// Keep the boxes (and their classes) for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&[f32; 4]) -> bool) {
        let mut k = 0;
        for i in 0..self.boxes.len() {
            if keep(&self.boxes[i]) {
                self.boxes[k] = self.boxes[i];
                self.cls[k] = self.cls[i];
                k += 1;
            }
        }
        self.boxes.truncate(k);
        self.cls.truncate(k);
    }
}

/// Python's `random.uniform(a, b)`: `a + (b - a) * random()`.
pub(crate) fn uniform(rng: &mut impl Rng, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.gen::<f64>()
}

/// The ultralytics `v8_transforms` pipeline for dataset image `index`, every random number drawn
/// from `rng`. `rect_shape` (h, w) is the batch shape in rect mode (mosaic, mixup and cutmix are
/// then off, as ultralytics' `build_transforms` sets them).
pub fn train_sample(
    ds: &TrainDataset,
    index: usize,
    cfg: &AugmentConfig,
    rect_shape: Option<(usize, usize)>,
    rng: &mut impl Rng,
) -> crate::Result<Sample> {
    let cfg = if rect_shape.is_some() { AugmentConfig { mosaic: 0.0, mixup: 0.0, cutmix: 0.0, ..*cfg } } else { *cfg };
    let mut s = pre_transform(ds, index, &cfg, rect_shape, rng)?;
    // MixUp and CutMix each mix in a second image that went through the same pre-transform.
    if uniform(rng, 0.0, 1.0) <= cfg.mixup && cfg.mixup > 0.0 {
        let j = rng.gen_range(0..ds.len());
        let other = pre_transform(ds, j, &cfg, rect_shape, rng)?;
        let r = mixup::beta(rng, 32.0, 32.0);
        s = mixup::mixup(s, &other, r);
    }
    if uniform(rng, 0.0, 1.0) <= cfg.cutmix && cfg.cutmix > 0.0 {
        let j = rng.gen_range(0..ds.len());
        let other = pre_transform(ds, j, &cfg, rect_shape, rng)?;
        let draws = mixup::CutMixDraws::draw(rng, s.width(), s.height());
        s = mixup::cutmix(s, &other, &draws);
    }
    if cfg.hsv_h != 0.0 || cfg.hsv_s != 0.0 || cfg.hsv_v != 0.0 {
        let r = [
            uniform(rng, -1.0, 1.0) * cfg.hsv_h,
            uniform(rng, -1.0, 1.0) * cfg.hsv_s,
            uniform(rng, -1.0, 1.0) * cfg.hsv_v,
        ];
        hsv::random_hsv(&mut s.img, r);
    }
    if rng.gen::<f64>() < cfg.flipud {
        flip::flip_vertical(&mut s);
    }
    if rng.gen::<f64>() < cfg.fliplr {
        flip::flip_horizontal(&mut s);
    }
    // Format(bgr=...): ultralytics' images are BGR and become RGB unless `random > bgr` fails;
    // kubeyolo's are RGB, so the channels are swapped with probability `bgr`.
    if !(uniform(rng, 0.0, 1.0) > cfg.bgr) {
        swap_rb(&mut s.img);
    }
    Ok(s)
}

/// Mosaic (with probability `mosaic`) then the random affine to `imgsz` (or the rect shape).
fn pre_transform(
    ds: &TrainDataset,
    index: usize,
    cfg: &AugmentConfig,
    rect_shape: Option<(usize, usize)>,
    rng: &mut impl Rng,
) -> crate::Result<Sample> {
    let s = cfg.imgsz;
    let base = ds.load_sample(index)?;
    let size = match rect_shape {
        Some((h, w)) => (w, h),
        None => (s, s),
    };
    let perspective = cfg.perspective != 0.0;
    if cfg.mosaic > 0.0 && uniform(rng, 0.0, 1.0) <= cfg.mosaic {
        let partners = [rng.gen_range(0..ds.len()), rng.gen_range(0..ds.len()), rng.gen_range(0..ds.len())];
        let centre = mosaic::MosaicDraws::draw(rng, s);
        let others = [ds.load_sample(partners[0])?, ds.load_sample(partners[1])?, ds.load_sample(partners[2])?];
        // the affine's draws come next in ultralytics' order; they depend only on the canvas
        // size, so the canvas can be built knowing which part of it the warp reads
        let draws = perspective::AffineDraws::draw(rng, cfg);
        let (m, scale) = perspective::affine_matrix(&draws, 2 * s, 2 * s, size);
        // (warpPerspective reads the whole canvas)
        let part = if perspective { None } else { perspective::source_region(&m, size, (2 * s, 2 * s)) };
        let region = part.unwrap_or(perspective::Region::whole(2 * s));
        let m4 = mosaic::mosaic4_region([&base, &others[0], &others[1], &others[2]], s, centre, region);
        return Ok(perspective::random_perspective_at(&m4, (region.x0, region.y0), &m, scale, size, perspective));
    }
    let draws = perspective::AffineDraws::draw(rng, cfg);
    let (m, scale) = perspective::affine_matrix(&draws, base.width(), base.height(), size);
    Ok(perspective::random_perspective(&base, &m, scale, size, perspective))
}

/// Validation-style sample (ultralytics' `LetterBox(new_shape=imgsz, scaleup=False)`), used
/// when `augment` is off.
pub fn letterbox_sample(sample: &Sample, new_shape: (usize, usize)) -> Sample {
    let lb = Letterbox { new_shape, auto: false, scaleup: false, center: true, stride: 32 };
    let (img, info) = crate::data::image::letterbox(&sample.img, &lb);
    debug_assert_eq!(letterbox_params((sample.height(), sample.width()), &lb), info);
    let (r, _) = info.ratio;
    let (px, py) = (info.pad.0 as f32, info.pad.1 as f32);
    let boxes = sample
        .boxes
        .iter()
        .map(|b| [b[0] * r as f32 + px, b[1] * r as f32 + py, b[2] * r as f32 + px, b[3] * r as f32 + py])
        .collect();
    Sample { img, boxes, cls: sample.cls.clone() }
}

/// RGB ↔ BGR in place.
pub fn swap_rb(img: &mut RgbImage) {
    for p in img.pixels_mut() {
        p.0.swap(0, 2);
    }
}
