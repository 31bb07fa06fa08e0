//! The training dataset: ultralytics' `YOLODataset` + `BaseDataset` (8.4.190) without the
//! transforms — which images are usable, their labels, image loading (long side resized to
//! `imgsz` with cv2's INTER_LINEAR arithmetic), the optional RAM cache, `fraction`,
//! `single_cls` and the `rect` batch shapes.
//!
//! Usability follows ultralytics' `verify_image_label`: an image whose label file has an invalid
//! line is dropped with a warning naming `file:line` (kubeyolo's label reader reports every bad
//! line; ultralytics reports the first); duplicate rows are removed with a warning; an image
//! that cannot be read, or is smaller than 10 px, is dropped; an image without a label file, or
//! with an empty one, is kept as a background. Nothing usable left is an error.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::config::dataset::{label_path, Dataset};
use crate::config::hyp::{Cache, Fraction};
use crate::data::augment::Sample;
use crate::data::image::{image_size, load_rgb, resize_linear};
use crate::data::labels::{parse_label_file, IssueKind, LabelBox};
use crate::error::{Error, Result};

/// How the dataset is read (the trainer fills this from the cfg).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DatasetOptions {
    pub imgsz: usize,
    pub augment: bool,
    pub rect: bool,
    pub cache: Cache,
    pub fraction: Fraction,
    pub single_cls: bool,
    pub stride: usize,
    pub batch: usize,
}

/// What was dropped and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DropReport {
    /// Readable messages (`file:line: reason`), at most [`MAX_WARNINGS`]; counts are exact.
    pub warnings: Vec<String>,
    /// Images dropped (bad label line, unreadable or too small image).
    pub dropped: usize,
    /// Images kept without any box (no label file or an empty one).
    pub backgrounds: usize,
    /// Duplicate label rows removed.
    pub duplicates_removed: usize,
}

/// At most this many warnings are kept in [`DropReport::warnings`].
pub const MAX_WARNINGS: usize = 50;

impl DropReport {
    fn warn(&mut self, msg: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(msg);
        }
    }
}

/// `rect` training: images sorted by aspect ratio, one letterbox shape per batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RectShapes {
    /// Batch shape (h, w) of each batch.
    pub batch_shapes: Vec<(usize, usize)>,
    /// Batch index of each (sorted) image.
    pub batch_of: Vec<usize>,
}

/// The usable images of one split and their labels.
pub struct TrainDataset {
    images: Vec<PathBuf>,
    labels: Vec<Vec<LabelBox>>,
    /// Original (h, w) of each image.
    shapes: Vec<(usize, usize)>,
    names: Vec<String>,
    report: DropReport,
    opts: DatasetOptions,
    rect: Option<RectShapes>,
    /// `cache: ram`: each image decoded and resized once.
    cache: Option<Vec<OnceLock<Arc<Sample>>>>,
    /// Otherwise, when augmenting: ultralytics' image buffer (the last `min(n, 8·batch, 1000)`
    /// images loaded stay decoded; mosaic partners are mostly found there).
    buffer: Option<Mutex<Buffer>>,
}

/// A bounded first-in-first-out store of decoded images. What it holds changes speed only,
/// never a sample (the image is the same whether decoded now or earlier).
struct Buffer {
    cap: usize,
    map: HashMap<usize, Arc<Sample>>,
    order: VecDeque<usize>,
}

impl Buffer {
    fn get(&self, i: usize) -> Option<Arc<Sample>> {
        self.map.get(&i).cloned()
    }
    fn put(&mut self, i: usize, s: Arc<Sample>) {
        if self.cap == 0 || self.map.contains_key(&i) {
            return;
        }
        if self.order.len() >= self.cap {
            if let Some(j) = self.order.pop_front() {
                self.map.remove(&j);
            }
        }
        self.order.push_back(i);
        self.map.insert(i, s);
    }
}

enum Checked {
    Keep { labels: Vec<LabelBox>, shape: (usize, usize), background: bool, duplicates: Vec<String> },
    Drop(Vec<String>),
}

/// Python's `round()` for the fraction count.
fn py_round(x: f64) -> usize {
    let r = x.round();
    (if (x - x.trunc()).abs() == 0.5 { 2.0 * (x / 2.0).round() } else { r }) as usize
}

fn check_one(image: &Path, nc: usize) -> Checked {
    // ultralytics' `exif_size`: the size of the image as decoded (EXIF rotation applied).
    let shape = match image_size(image) {
        Ok((w, h)) => (h as usize, w as usize),
        Err(e) => return Checked::Drop(vec![format!("{e}; image dropped")]),
    };
    if shape.0 < 10 || shape.1 < 10 {
        return Checked::Drop(vec![format!(
            "{}: image size {}x{} is below 10 pixels; image dropped",
            image.display(),
            shape.1,
            shape.0
        )]);
    }
    let lp = label_path(image);
    if !lp.exists() {
        return Checked::Keep { labels: Vec::new(), shape, background: true, duplicates: Vec::new() };
    }
    let lf = match parse_label_file(&lp, nc) {
        Ok(f) => f,
        Err(e) => return Checked::Drop(vec![format!("{}: {e}; image dropped", lp.display())]),
    };
    let at = |line: usize| if line == 0 { lp.display().to_string() } else { format!("{}:{line}", lp.display()) };
    if lf.ultralytics_would_drop() {
        let mut msgs: Vec<String> = lf
            .issues
            .iter()
            .filter(|i| !matches!(i.kind, IssueKind::Duplicate | IssueKind::ZeroSize))
            .map(|i| format!("{}: {}; image {} dropped", at(i.line), i.reason, image.display()))
            .collect();
        if msgs.is_empty() {
            msgs.push(format!("{}: polygon and box lines mixed; image {} dropped", lp.display(), image.display()));
        }
        return Checked::Drop(msgs);
    }
    let duplicates = lf
        .issues
        .iter()
        .map(|i| match i.kind {
            IssueKind::Duplicate => format!("{}: {}, removed", at(i.line), i.reason),
            _ => format!("{}: {}, box ignored", at(i.line), i.reason),
        })
        .collect();
    let background = lf.boxes.is_empty();
    Checked::Keep { labels: lf.boxes, shape, background, duplicates }
}

impl TrainDataset {
    /// Reads the split's images and labels (ultralytics' usability rules: invalid label line →
    /// image dropped with a warning naming file:line; duplicates removed with a warning; corrupt
    /// image dropped; backgrounds kept). Error (before anything is written) when no usable image
    /// remains.
    pub fn load(ds: &Dataset, split: &str, opts: &DatasetOptions) -> Result<TrainDataset> {
        let mut images = ds.split_images(split)?;
        if split == "train" {
            let count = match opts.fraction {
                Fraction::Count(n) => n,
                Fraction::Ratio(f) => py_round(images.len() as f64 * f).max(1),
            };
            images.truncate(count.max(1));
        }
        let nc = ds.nc();
        let checked: Vec<Checked> = images.par_iter().map(|im| check_one(im, nc)).collect();
        let mut report = DropReport::default();
        let (mut kept, mut labels, mut shapes) = (Vec::new(), Vec::new(), Vec::new());
        for (im, c) in images.into_iter().zip(checked) {
            match c {
                Checked::Keep { labels: mut l, shape, background, duplicates } => {
                    for d in duplicates {
                        if d.ends_with("removed") {
                            report.duplicates_removed += 1;
                        }
                        report.warn(d);
                    }
                    report.backgrounds += background as usize;
                    if opts.single_cls {
                        l.iter_mut().for_each(|b| b.cls = 0);
                    }
                    kept.push(im);
                    labels.push(l);
                    shapes.push(shape);
                }
                Checked::Drop(msgs) => {
                    report.dropped += 1;
                    msgs.into_iter().for_each(|m| report.warn(m));
                }
            }
        }
        if kept.is_empty() {
            let first = report.warnings.first().cloned().unwrap_or_default();
            return Err(Error::data(format!(
                "split '{split}' has no usable image: {} dropped (first: {first})",
                report.dropped
            ))
            .with_file(&ds.yaml)
            .with_key(split)
            .with_hint("fix the label lines named above (cls cx cy w h, normalised) or the unreadable images"));
        }
        let names = if opts.single_cls { vec!["item".to_string()] } else { ds.names.clone() };
        let mut out = TrainDataset {
            images: kept,
            labels,
            shapes,
            names,
            report,
            opts: *opts,
            rect: None,
            cache: None,
            buffer: None,
        };
        if opts.rect {
            out.sort_by_aspect_ratio();
        }
        if opts.cache == Cache::Ram {
            out.cache = Some((0..out.images.len()).map(|_| OnceLock::new()).collect());
        }
        out.set_batch(opts.batch);
        Ok(out)
    }

    /// Sizes what depends on the batch: the `rect` batch shapes and the mosaic image buffer.
    /// `load` calls it; the trainer calls it again once AutoBatch has chosen the batch from this
    /// same scan, so the split's labels are read once.
    pub fn set_batch(&mut self, batch: usize) {
        self.opts.batch = batch;
        if self.opts.rect {
            self.set_rect_shapes();
        }
        if self.cache.is_none() && self.opts.augment {
            let cap = self.images.len().min(8 * batch.max(1)).min(1000);
            self.buffer = Some(Mutex::new(Buffer { cap, map: HashMap::new(), order: VecDeque::new() }));
        }
    }

    /// The same images and labels for another batch size (the trainer's out-of-memory retry at
    /// half the batch; ultralytics rebuilds its dataset there): decoded images are not carried
    /// over, so what memory they held is released with the old set.
    pub fn with_batch(&self, batch: usize) -> TrainDataset {
        let mut out = TrainDataset {
            images: self.images.clone(),
            labels: self.labels.clone(),
            shapes: self.shapes.clone(),
            names: self.names.clone(),
            report: self.report.clone(),
            opts: self.opts,
            rect: None,
            cache: self.cache.as_ref().map(|c| (0..c.len()).map(|_| OnceLock::new()).collect()),
            buffer: None,
        };
        out.set_batch(batch);
        out
    }

    /// ultralytics' `set_rectangle`, first half: images (with their labels and shapes) sorted by
    /// aspect ratio h/w.
    fn sort_by_aspect_ratio(&mut self) {
        let ar: Vec<f64> = self.shapes.iter().map(|&(h, w)| h as f64 / w as f64).collect();
        let mut order: Vec<usize> = (0..ar.len()).collect();
        order.sort_by(|&a, &b| ar[a].total_cmp(&ar[b]));
        fn perm<T>(v: &mut Vec<T>, order: &[usize]) {
            let mut old: Vec<Option<T>> = std::mem::take(v).into_iter().map(Some).collect();
            *v = order.iter().map(|&i| old[i].take().expect("permutation")).collect();
        }
        perm(&mut self.images, &order);
        perm(&mut self.labels, &order);
        perm(&mut self.shapes, &order);
    }

    /// ultralytics' `set_rectangle` (pad 0 for training), second half: each batch of the sorted
    /// images gets the shape that fits its most extreme ratio, in multiples of `stride`.
    fn set_rect_shapes(&mut self) {
        let bs = self.opts.batch.max(1);
        let ar: Vec<f64> = self.shapes.iter().map(|&(h, w)| h as f64 / w as f64).collect();
        let n = ar.len();
        let nb = n.div_ceil(bs);
        let (imgsz, stride) = (self.opts.imgsz, self.opts.stride.max(1));
        let batch_shapes = (0..nb)
            .map(|b| {
                let chunk = &ar[b * bs..((b + 1) * bs).min(n)];
                rect_batch_shape(chunk[0], chunk[chunk.len() - 1], imgsz, stride, 0.0)
            })
            .collect();
        self.rect = Some(RectShapes { batch_shapes, batch_of: (0..n).map(|i| i / bs).collect() });
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn options(&self) -> &DatasetOptions {
        &self.opts
    }

    /// Image paths in dataset order (sorted by aspect ratio in rect mode).
    pub fn images(&self) -> &[PathBuf] {
        &self.images
    }

    /// Labels of image `i` (normalised, classes already 0 under `single_cls`).
    pub fn labels(&self, i: usize) -> &[LabelBox] {
        &self.labels[i]
    }

    /// The rect batch shapes, when `rect` is set.
    pub fn rect(&self) -> Option<&RectShapes> {
        self.rect.as_ref()
    }

    /// Instances per class over the usable images (for the loss's cls_pw class weights).
    pub fn instances_per_class(&self) -> Vec<usize> {
        let mut n = vec![0; self.names.len()];
        for l in &self.labels {
            for b in l {
                if b.cls < n.len() {
                    n[b.cls] += 1;
                }
            }
        }
        n
    }

    /// What was dropped and why (printed by the trainer; counts + first messages).
    pub fn report(&self) -> &DropReport {
        &self.report
    }

    /// ultralytics' `load_image` + labels: the image with its long side resized to `imgsz`
    /// (`min(ceil(w0·r), imgsz)`, cv2 INTER_LINEAR) and its boxes as pixel xyxy of that image.
    pub fn load_sample(&self, i: usize) -> Result<Arc<Sample>> {
        if let Some(cache) = &self.cache {
            if let Some(s) = cache[i].get() {
                return Ok(s.clone());
            }
            let s = Arc::new(self.read_sample(i)?);
            return Ok(cache[i].get_or_init(|| s).clone());
        }
        if let Some(buf) = &self.buffer {
            if let Some(s) = buf.lock().unwrap_or_else(|e| e.into_inner()).get(i) {
                return Ok(s);
            }
            let s = Arc::new(self.read_sample(i)?);
            buf.lock().unwrap_or_else(|e| e.into_inner()).put(i, s.clone());
            return Ok(s);
        }
        Ok(Arc::new(self.read_sample(i)?))
    }

    fn read_sample(&self, i: usize) -> Result<Sample> {
        let img = match self.opts.cache {
            Cache::Disk => super::npy_cache::load_cached(&self.images[i])?,
            _ => load_rgb(&self.images[i])?,
        };
        let img = resize_long_side(img, self.opts.imgsz);
        Ok(sample_from_labels(img, &self.labels[i]))
    }
}

/// The network input (h, w) of one rectangular batch (ultralytics `set_rectangle`) from the
/// smallest and largest aspect ratio h/w in it: the side that fits the most extreme ratio, in
/// multiples of `stride`, `pad` strides added before rounding up (0 for training, 0.5 for
/// validation).
pub fn rect_batch_shape(min_ar: f64, max_ar: f64, imgsz: usize, stride: usize, pad: f64) -> (usize, usize) {
    let s = if max_ar < 1.0 {
        [max_ar, 1.0]
    } else if min_ar > 1.0 {
        [1.0, 1.0 / min_ar]
    } else {
        [1.0, 1.0]
    };
    let side = |v: f64| ((v * imgsz as f64 / stride as f64 + pad).ceil() as usize) * stride;
    (side(s[0]), side(s[1]))
}

/// Resize so that the long side is `imgsz` (ultralytics' `load_image` with `rect_mode`).
pub fn resize_long_side(img: image::RgbImage, imgsz: usize) -> image::RgbImage {
    let (w0, h0) = (img.width() as usize, img.height() as usize);
    let r = imgsz as f64 / w0.max(h0) as f64;
    if r == 1.0 {
        return img;
    }
    let w = ((w0 as f64 * r).ceil() as usize).min(imgsz).max(1);
    let h = ((h0 as f64 * r).ceil() as usize).min(imgsz).max(1);
    resize_linear(&img, w, h)
}

/// Normalised xywh labels → pixel xyxy of `img` (ultralytics: `convert_bbox("xyxy")` in the
/// normalised float32 values, then `denormalize(w, h)`).
pub fn sample_from_labels(img: image::RgbImage, labels: &[LabelBox]) -> Sample {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let boxes = labels
        .iter()
        .map(|b| {
            let (hw, hh) = (b.w / 2.0, b.h / 2.0);
            [(b.cx - hw) * w, (b.cy - hh) * h, (b.cx + hw) * w, (b.cy + hh) * h]
        })
        .collect();
    Sample { img, boxes, cls: labels.iter().map(|b| b.cls).collect() }
}
