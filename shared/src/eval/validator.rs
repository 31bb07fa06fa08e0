//! The validator: run a model over a dataset split and compute ultralytics' metrics.
//!
//! Train calls it after every epoch and the `test` step once at the end, so it is a library API:
//! [`ValSet::load`] reads a split once (image paths, labels, sizes; decoded pixels too when they
//! fit in [`ValConfig::cache_bytes`]) and [`ValSet::evaluate`] runs a model over it. Both follow
//! ultralytics' `DetectionValidator` (8.4) so the numbers agree:
//!
//! - preprocessing: the long side is resized to `imgsz` (`ceil`, cv2 INTER_LINEAR arithmetic),
//!   then letterboxed without upscaling, grey 114 padding, /255. Like ultralytics' `model.val()`
//!   and its per-epoch validation (both `rect=True`), images are sorted by aspect ratio and each
//!   batch is padded to its own stride-multiple shape; `rect: false` pads to `imgsz × imgsz`;
//! - NMS: conf 0.001, IoU 0.7, multi-label, max_det 300 (raised to the most objects in one image
//!   when that is larger, like `_check_max_det`);
//! - matching and AP in letterboxed pixels ([`crate::eval::metrics`]); COCO mAP in original
//!   pixels ([`crate::eval::coco`]);
//! - images ultralytics would drop as corrupt (bad label lines) are skipped and reported;
//!   labels of classes the model cannot predict are ignored.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;

use crate::config::dataset::{label_path, Dataset};
use crate::data::image::{letterbox, load_rgb, resize_linear, scale_boxes, to_tensor, Letterbox};
use crate::data::labels::parse_label_file;
use crate::data::Targets;
use crate::error::{Error, Result};
use crate::eval::coco::{CocoDt, CocoEval, CocoGt, CocoStats};
use crate::eval::metrics::{ConfusionMatrix, DetMetrics, DetStats, Detection, GroundTruth, Matching};
use crate::eval::nms::{non_max_suppression, NmsConfig};
use crate::nn::blocks::HeadOutput;
use crate::nn::model::YoloModel;

/// Validation settings (ultralytics `val` defaults).
#[derive(Debug, Clone, Serialize)]
pub struct ValConfig {
    pub imgsz: usize,
    pub batch: usize,
    /// NMS confidence threshold (0.001).
    pub conf: f32,
    /// NMS IoU threshold (0.7).
    pub iou: f32,
    pub max_det: usize,
    /// The model's largest stride (32 for YOLOv8, 64 for P6): rectangular batch shapes are
    /// multiples of it (`YoloModel::max_stride`).
    pub stride: usize,
    /// Rectangular batches (shapes from the images' aspect ratios, ultralytics' val default)
    /// instead of square `imgsz` inputs.
    pub rect: bool,
    /// Treat every class as one (labels and predictions become class 0).
    pub single_cls: bool,
    #[serde(skip)]
    pub matching: Matching,
    /// Confusion matrix thresholds (ultralytics' classic 0.25 / 0.45).
    pub confusion_conf: f32,
    pub confusion_iou: f32,
    /// Also compute COCO mAP (pycocotools semantics).
    pub coco: bool,
    /// Keep decoded, letterboxed images in memory up to this many bytes (train re-validates
    /// every epoch; decoding dominates on small models).
    pub cache_bytes: usize,
}

impl Default for ValConfig {
    fn default() -> Self {
        ValConfig {
            imgsz: 640,
            batch: 16,
            conf: 0.001,
            iou: 0.7,
            max_det: 300,
            stride: 32,
            rect: true,
            single_cls: false,
            matching: Matching::Greedy,
            confusion_conf: 0.25,
            confusion_iou: 0.45,
            coco: true,
            cache_bytes: 1 << 30,
        }
    }
}

/// One image of the split: where it is, its size and its labels.
#[derive(Debug, Clone)]
pub struct ValImage {
    pub path: PathBuf,
    /// Original (height, width).
    pub shape: (usize, usize),
    /// Labels: class and normalised `cx, cy, w, h`.
    pub labels: Vec<(usize, [f32; 4])>,
}

/// A split ready to validate on.
#[derive(Debug, Clone)]
pub struct ValSet {
    pub split: String,
    pub names: Vec<String>,
    pub images: Vec<ValImage>,
    /// Images left out (ultralytics would drop them) and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// Letterboxed pixels per image when cached (same order as `images`).
    cache: Option<Vec<Prepared>>,
    /// The batches (indices into `images`) and the network input shape (h, w) of each.
    batches: Vec<(Vec<usize>, (usize, usize))>,
    cfg: ValConfig,
}

/// A preprocessed image.
#[derive(Debug, Clone)]
struct Prepared {
    img: RgbImage,
    /// ((gain_h, gain_w), (pad_left, pad_top)), ultralytics' `ratio_pad`.
    ratio_pad: ((f64, f64), (f64, f64)),
}

/// Time spent per image, milliseconds (ultralytics' `Speed:` line).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Speed {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    /// Wall-clock images per second over the whole run (including metrics).
    pub images_per_s: f64,
}

/// Everything one validation run produces.
#[derive(Debug, Clone, Serialize)]
pub struct ValResult {
    pub split: String,
    pub metrics: DetMetrics,
    pub coco: Option<CocoStats>,
    pub confusion: ConfusionMatrix,
    pub speed: Speed,
    pub skipped: usize,
    pub settings: ValConfig,
}

impl ValSet {
    /// Read `split` of `dataset`: image list, sizes and labels (and pixels, if they fit in the
    /// cache). `names` is the model's class list (labels of other classes are ignored).
    pub fn load(dataset: &Dataset, split: &str, names: &[String], cfg: &ValConfig) -> Result<ValSet> {
        let paths = dataset.split_images(split)?;
        if paths.is_empty() {
            return Err(Error::data(format!("split '{split}' of {} has no images", dataset.yaml.display()))
                .with_file(&dataset.yaml)
                .with_key(split));
        }
        Self::from_images(split, &paths, dataset.nc(), names, cfg)
    }

    /// [`ValSet::load`] from an explicit image list; labels are found ultralytics' way
    /// (`images/` → `labels/`, `.txt`). `data_nc` is the dataset's class count.
    pub fn from_images(
        split: &str,
        paths: &[PathBuf],
        data_nc: usize,
        names: &[String],
        cfg: &ValConfig,
    ) -> Result<ValSet> {
        if cfg.imgsz == 0 || cfg.batch == 0 {
            return Err(Error::usage("imgsz and batch must be at least 1"));
        }
        let model_nc = names.len();
        let read: Vec<Result<std::result::Result<ValImage, String>>> = paths
            .par_iter()
            .map(|p| {
                let shape = match image_shape(p) {
                    Ok(s) => s,
                    Err(e) => return Ok(Err(e.to_string())), // ultralytics drops unreadable images
                };
                let lp = label_path(p);
                let mut labels = Vec::new();
                if lp.exists() {
                    let lf = parse_label_file(&lp, data_nc)?;
                    if lf.ultralytics_would_drop() {
                        let why =
                            lf.issues.first().map(|i| format!("line {}: {}", i.line, i.reason)).unwrap_or_default();
                        return Ok(Err(format!("{}: {why}", lp.display())));
                    }
                    for b in &lf.boxes {
                        if b.cls >= model_nc && !cfg.single_cls {
                            continue; // a class the model cannot predict
                        }
                        let cls = if cfg.single_cls { 0 } else { b.cls };
                        labels.push((cls, [b.cx, b.cy, b.w, b.h]));
                    }
                }
                Ok(Ok(ValImage { path: p.clone(), shape, labels }))
            })
            .collect();
        let mut images = Vec::new();
        let mut skipped = Vec::new();
        for (r, p) in read.into_iter().zip(paths) {
            match r? {
                Ok(im) => images.push(im),
                Err(why) => skipped.push((p.clone(), why)),
            }
        }
        let mut cfg = cfg.clone();
        let most = images.iter().map(|i| i.labels.len()).max().unwrap_or(0);
        if most > cfg.max_det && cfg.max_det == ValConfig::default().max_det {
            cfg.max_det = most;
        }
        let batches = plan_batches(&images, &cfg, cfg.stride.max(1));
        let mut set =
            ValSet { split: split.to_string(), names: names.to_vec(), images, skipped, cache: None, batches, cfg };
        let bytes: usize = set.batches.iter().map(|(ix, (h, w))| ix.len() * h * w * 3).sum();
        if bytes <= set.cfg.cache_bytes {
            let all: Vec<usize> = (0..set.images.len()).collect();
            let shapes = set.shape_of_each();
            set.cache = Some(all.par_iter().map(|&i| set.prepare(i, shapes[i])).collect::<Result<Vec<_>>>()?);
        }
        Ok(set)
    }

    /// Network input shape of every image (its batch's shape).
    fn shape_of_each(&self) -> Vec<(usize, usize)> {
        let mut s = vec![(0, 0); self.images.len()];
        for (ix, shape) in &self.batches {
            for &i in ix {
                s[i] = *shape;
            }
        }
        s
    }

    /// Load and letterbox image `i` to `shape` (h, w) as ultralytics' val loader does.
    fn prepare(&self, i: usize, shape: (usize, usize)) -> Result<Prepared> {
        let im = &self.images[i];
        let img = load_rgb(&im.path)?;
        let (h0, w0) = (img.height() as usize, img.width() as usize);
        let imgsz = self.cfg.imgsz;
        let r = imgsz as f64 / h0.max(w0) as f64;
        let resized = if r != 1.0 {
            let w = ((w0 as f64 * r).ceil() as usize).min(imgsz).max(1);
            let h = ((h0 as f64 * r).ceil() as usize).min(imgsz).max(1);
            resize_linear(&img, w, h)
        } else {
            img
        };
        let (h1, w1) = (resized.height() as usize, resized.width() as usize);
        let lb = Letterbox { new_shape: shape, auto: false, scaleup: false, center: true, stride: self.cfg.stride };
        let (out, info) = letterbox(&resized, &lb);
        // a long side exactly at imgsz is never rescaled again (scaleup=False), so the gain is
        // the first resize's, per axis, as ultralytics' ratio_pad records it
        let gain = (h1 as f64 / h0 as f64 * info.ratio.1, w1 as f64 / w0 as f64 * info.ratio.0);
        Ok(Prepared { img: out, ratio_pad: (gain, (info.pad.0 as f64, info.pad.1 as f64)) })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    pub fn config(&self) -> &ValConfig {
        &self.cfg
    }

    /// Run `model` on every image and compute the metrics.
    pub fn evaluate(&self, model: &YoloModel, device: &Device) -> Result<ValResult> {
        self.evaluate_with(model, device, None)
    }

    /// [`Self::evaluate`], also handing every batch's raw head outputs and its labels (in the
    /// letterboxed input frame, as the training loss takes them) to `on_batch`: the trainer
    /// computes ultralytics' `val/box_loss`, `val/cls_loss`, `val/dfl_loss` there.
    pub fn evaluate_with(
        &self,
        model: &YoloModel,
        device: &Device,
        mut on_batch: Option<BatchHook<'_>>,
    ) -> Result<ValResult> {
        let cfg = &self.cfg;
        let t_all = Instant::now();
        let nms_cfg = NmsConfig {
            conf: cfg.conf,
            iou: cfg.iou,
            multi_label: true,
            agnostic: cfg.single_cls,
            max_det: cfg.max_det,
            ..NmsConfig::validation()
        };
        let mut stats = DetStats::new(cfg.matching);
        let nc = self.names.len();
        let mut confusion = ConfusionMatrix::with_thresholds(nc, cfg.confusion_conf, cfg.confusion_iou);
        let mut coco = CocoEval::new(nc);
        // Folded once for the whole pass (the trainer validates a fresh EMA each epoch).
        let net = crate::nn::fused::EvalNet::new(model, device)?;
        let (mut t_pre, mut t_inf, mut t_post) = (0.0f64, 0.0f64, 0.0f64);
        for (ix, shape) in &self.batches {
            let t0 = Instant::now();
            let owned: Vec<Prepared>;
            let prepared: Vec<&Prepared> = match &self.cache {
                Some(c) => ix.iter().map(|&i| &c[i]).collect(),
                None => {
                    owned = ix.par_iter().map(|&i| self.prepare(i, *shape)).collect::<Result<Vec<_>>>()?;
                    owned.iter().collect()
                }
            };
            let imgs: Vec<&RgbImage> = prepared.iter().map(|p| &p.img).collect();
            let x = to_tensor(&imgs, device)?;
            let t1 = Instant::now();
            let (decoded, raw) = net.forward(&x, on_batch.is_some())?;
            let dets = non_max_suppression(&decoded, &nms_cfg)?; // includes the device → host copy
            let mut targets = on_batch.as_ref().map(|_| Targets::default());
            let t2 = Instant::now();
            for (k, &i) in ix.iter().enumerate() {
                let im = &self.images[i];
                let p = prepared[k];
                let (gh, gw) = p.ratio_pad.0;
                let (pl, pt) = p.ratio_pad.1;
                let (h0, w0) = im.shape;
                // labels → letterboxed pixels (normalised × resized size + padding)
                let gts: Vec<GroundTruth> = im
                    .labels
                    .iter()
                    .map(|&(cls, [cx, cy, w, h])| {
                        let (sx, sy) = ((w0 as f64 * gw) as f32, (h0 as f64 * gh) as f32);
                        GroundTruth {
                            cls,
                            bbox: [
                                (cx - w / 2.0) * sx + pl as f32,
                                (cy - h / 2.0) * sy + pt as f32,
                                (cx + w / 2.0) * sx + pl as f32,
                                (cy + h / 2.0) * sy + pt as f32,
                            ],
                        }
                    })
                    .collect();
                if let Some(t) = targets.as_mut() {
                    let (h, w) = (shape.0 as f32, shape.1 as f32);
                    for g in &gts {
                        let [x1, y1, x2, y2] = g.bbox;
                        t.push(k, g.cls, [(x1 + x2) / 2.0 / w, (y1 + y2) / 2.0 / h, (x2 - x1) / w, (y2 - y1) / h]);
                    }
                }
                let d: Vec<Detection> = dets[k]
                    .iter()
                    .map(|d| Detection { bbox: d.xyxy, conf: d.conf, cls: if cfg.single_cls { 0 } else { d.cls } })
                    .collect();
                stats.add_image(&d, &gts);
                confusion.process(&d, &gts);
                if cfg.coco {
                    let mut boxes: Vec<[f32; 4]> = d.iter().map(|x| x.bbox).collect();
                    scale_boxes(*shape, &mut boxes, (h0, w0), Some(p.ratio_pad));
                    let dts = boxes
                        .iter()
                        .zip(&d)
                        .map(|(b, x)| CocoDt { bbox: xyxy_to_xywh(b), cat: x.cls, score: x.conf as f64 })
                        .collect();
                    let gts = im
                        .labels
                        .iter()
                        .map(|&(cls, [cx, cy, w, h])| {
                            let (w0, h0) = (w0 as f64, h0 as f64);
                            let b =
                                [(cx - w / 2.0) as f64 * w0, (cy - h / 2.0) as f64 * h0, w as f64 * w0, h as f64 * h0];
                            CocoGt { bbox: b, cat: cls, iscrowd: false, area: None }
                        })
                        .collect();
                    coco.add_image(gts, dts);
                }
            }
            if let (Some(hook), Some(t)) = (on_batch.as_mut(), targets.as_ref()) {
                if let Some(raw) = raw.as_ref() {
                    hook(raw, t)?;
                }
            }
            let t3 = Instant::now();
            t_pre += (t1 - t0).as_secs_f64();
            t_inf += (t2 - t1).as_secs_f64();
            t_post += (t3 - t2).as_secs_f64();
        }
        let metrics = stats.finish(&self.names);
        let coco = cfg.coco.then(|| coco.summarize());
        let n = self.images.len().max(1) as f64;
        let elapsed = t_all.elapsed().as_secs_f64();
        Ok(ValResult {
            split: self.split.clone(),
            metrics,
            coco,
            confusion,
            speed: Speed {
                preprocess_ms: t_pre * 1e3 / n,
                inference_ms: t_inf * 1e3 / n,
                postprocess_ms: t_post * 1e3 / n,
                images_per_s: n / elapsed.max(1e-9),
            },
            skipped: self.skipped.len(),
            settings: cfg.clone(),
        })
    }
}

/// A per-batch callback of [`ValSet::evaluate_with`]: raw head outputs and the batch's labels.
pub type BatchHook<'a> = &'a mut dyn FnMut(&HeadOutput, &Targets) -> Result<()>;

/// `validate(model, dataset, split)` in one call (the test step's path).
pub fn validate(
    model: &YoloModel,
    dataset: &Dataset,
    split: &str,
    names: &[String],
    cfg: &ValConfig,
    device: &Device,
) -> Result<ValResult> {
    ValSet::load(dataset, split, names, cfg)?.evaluate(model, device)
}

fn xyxy_to_xywh(b: &[f32; 4]) -> [f64; 4] {
    let [x1, y1, x2, y2] = b.map(|v| v as f64);
    [x1, y1, x2 - x1, y2 - y1]
}

/// Image (height, width) as decoded (EXIF-rotated, ultralytics' `exif_size`), from its headers.
fn image_shape(path: &Path) -> Result<(usize, usize)> {
    let (w, h) = crate::data::image::image_size(path)?;
    Ok((h as usize, w as usize))
}

/// Batches in file order with square `imgsz` inputs, or (rect) ultralytics' `set_rectangle`:
/// images sorted by aspect ratio, each batch padded to a stride multiple of its own shape.
fn plan_batches(images: &[ValImage], cfg: &ValConfig, stride: usize) -> Vec<(Vec<usize>, (usize, usize))> {
    let n = images.len();
    if !cfg.rect {
        return (0..n).collect::<Vec<_>>().chunks(cfg.batch).map(|c| (c.to_vec(), (cfg.imgsz, cfg.imgsz))).collect();
    }
    let ar: Vec<f64> = images.iter().map(|i| i.shape.0 as f64 / i.shape.1 as f64).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| ar[a].total_cmp(&ar[b]));
    let pad = 0.5;
    order
        .chunks(cfg.batch)
        .map(|c| {
            let mini = c.iter().map(|&i| ar[i]).fold(f64::INFINITY, f64::min);
            let maxi = c.iter().map(|&i| ar[i]).fold(0.0, f64::max);
            (c.to_vec(), crate::data::dataset::rect_batch_shape(mini, maxi, cfg.imgsz, stride, pad))
        })
        .collect()
}
