//! The training data loader: ultralytics' `InfiniteDataLoader` + `YOLODataset.collate_fn`, with
//! determinism by construction.
//!
//! - The epoch's order is a permutation drawn from a ChaCha8 RNG seeded by (seed, epoch) (no
//!   shuffle in rect mode, as ultralytics turns it off there).
//! - Every sample's random draws come from a ChaCha8 RNG keyed by (seed, epoch, dataset index).
//!
//! So batch k of epoch e is bit-identical whatever `workers` is and whether the epoch started at
//! batch 0 or at k: the trainer's exact resume relies on that. Workers are threads; worker w
//! prepares batches start+w, start+w+workers, ... into its own bounded queue (2 batches deep),
//! and the iterator takes them round-robin, so batches come out in order and at most
//! ~2 × workers batches are in memory. `workers == 0` prepares on the calling thread.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use candle_core::{DType, Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::augment::{letterbox_sample, train_sample, AugmentConfig};
use crate::data::dataset::TrainDataset;
use crate::data::multi_scale::resize_bilinear;
use crate::data::Targets;
use crate::error::{Error, Result};

/// One collated batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// (B, 3, H, W) RGB u8 in CHW order, image after image.
    pub images: Vec<u8>,
    /// (b, h, w).
    pub shape: (usize, usize, usize),
    pub targets: Targets,
    pub paths: Vec<PathBuf>,
    /// Dataset indices of the batch's images.
    pub indices: Vec<usize>,
}

impl Batch {
    /// f32 in [0,1], (B,3,H,W).
    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        self.to_tensor_at(device, None)
    }

    /// f32 in [0,1], resized to `shape` (h, w) by [`resize_bilinear`] when given (multi-scale).
    pub fn to_tensor_at(&self, device: &Device, shape: Option<(usize, usize)>) -> Result<Tensor> {
        let (b, h, w) = self.shape;
        Ok(match shape {
            Some((oh, ow)) if (oh, ow) != (h, w) => {
                Tensor::from_vec(self.resized_floats((oh, ow)), (b, 3, oh, ow), device)?
            }
            // On a GPU: copy the bytes (a quarter of the floats) and divide there — the same
            // IEEE division as on the host, so the values are the same.
            _ if !device.is_cpu() => {
                let bytes = Tensor::from_slice(&self.images, (b, 3, h, w), device)?.to_dtype(DType::F32)?;
                bytes.broadcast_div(&Tensor::new(255f32, device)?)?
            }
            _ => Tensor::from_vec(self.unit_floats(), (b, 3, h, w), device)?,
        })
    }

    /// The batch as the model sees it after the multi-scale resize to `shape` (h, w), back in u8
    /// as ultralytics' `plot_images` makes it (×255, truncated), for `train_batch*.jpg`. Labels
    /// are normalised, so they stay as they are.
    pub fn resized(&self, shape: (usize, usize)) -> Batch {
        let images = self.resized_floats(shape).into_iter().map(|v| (v * 255.0) as u8).collect();
        Batch {
            images,
            shape: (self.shape.0, shape.0, shape.1),
            targets: self.targets.clone(),
            paths: self.paths.clone(),
            indices: self.indices.clone(),
        }
    }

    fn unit_floats(&self) -> Vec<f32> {
        self.images.iter().map(|&v| v as f32 / 255.0).collect()
    }

    fn resized_floats(&self, shape: (usize, usize)) -> Vec<f32> {
        let (b, h, w) = self.shape;
        resize_bilinear(&self.unit_floats(), b * 3, (h, w), shape)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoaderOptions {
    pub batch: usize,
    pub workers: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub augment: AugmentConfig,
}

pub struct Loader {
    dataset: Arc<TrainDataset>,
    opts: LoaderOptions,
}

/// SplitMix64 finaliser: mixes the keys into independent-looking 64-bit seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG of one (seed, epoch, index) triple; `index = u64::MAX` is the epoch's shuffle RNG.
pub fn keyed_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(mix(mix(seed) ^ epoch) ^ index))
}

impl Loader {
    pub fn new(dataset: Arc<TrainDataset>, opts: LoaderOptions) -> Loader {
        Loader { dataset, opts: LoaderOptions { batch: opts.batch.max(1), ..opts } }
    }

    /// Number of batches per epoch (ceil(len / batch), as torch's DataLoader with drop_last=False).
    pub fn batches_per_epoch(&self) -> usize {
        self.dataset.len().div_ceil(self.opts.batch)
    }

    pub fn dataset(&self) -> &Arc<TrainDataset> {
        &self.dataset
    }

    pub fn options(&self) -> &LoaderOptions {
        &self.opts
    }

    /// The dataset order of `epoch`.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.opts.shuffle && self.dataset.rect().is_none() {
            order.shuffle(&mut keyed_rng(self.opts.seed, epoch as u64, u64::MAX));
        }
        order
    }

    /// The batches of `epoch` starting at batch `start` (resume mid-epoch), prepared ahead by
    /// `workers` threads through a bounded queue. `mosaic` false = the close_mosaic transforms
    /// (ultralytics' `close_dataloader_mosaic`: mosaic, mixup, cutmix, copy_paste off).
    pub fn epoch(&self, epoch: usize, start: usize, mosaic: bool) -> EpochIter {
        let order = Arc::new(self.order(epoch));
        let nb = self.batches_per_epoch();
        let job = Arc::new(Job {
            dataset: self.dataset.clone(),
            order,
            batch: self.opts.batch,
            seed: self.opts.seed,
            epoch,
            augment: if mosaic { self.opts.augment } else { self.opts.augment.closed_mosaic() },
        });
        let workers = self.opts.workers.min(nb.saturating_sub(start));
        if workers == 0 {
            return EpochIter { job, start, next: start, end: nb, queues: Vec::new(), handles: Vec::new() };
        }
        let mut queues = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<Result<Batch>>(2);
            let job = job.clone();
            let h = std::thread::Builder::new()
                .name(format!("kubeyolo-loader-{w}"))
                .spawn(move || {
                    let mut k = start + w;
                    while k < nb {
                        if tx.send(job.make_batch(k)).is_err() {
                            return; // the iterator was dropped
                        }
                        k += workers;
                    }
                })
                .expect("spawn a loader thread");
            queues.push(rx);
            handles.push(h);
        }
        EpochIter { job, start, next: start, end: nb, queues, handles }
    }
}

struct Job {
    dataset: Arc<TrainDataset>,
    order: Arc<Vec<usize>>,
    batch: usize,
    seed: u64,
    epoch: usize,
    augment: AugmentConfig,
}

impl Job {
    fn make_batch(&self, k: usize) -> Result<Batch> {
        let ds = &*self.dataset;
        let idx: Vec<usize> = self.order[k * self.batch..((k + 1) * self.batch).min(self.order.len())].to_vec();
        let rect_shape = ds.rect().map(|r| r.batch_shapes[r.batch_of[idx[0]]]);
        let mut samples = Vec::with_capacity(idx.len());
        for &i in &idx {
            let mut rng = keyed_rng(self.seed, self.epoch as u64, i as u64);
            let s = if ds.options().augment {
                train_sample(ds, i, &self.augment, rect_shape, &mut rng)?
            } else {
                let base = ds.load_sample(i)?;
                let imgsz = ds.options().imgsz;
                letterbox_sample(&base, rect_shape.unwrap_or((imgsz, imgsz)))
            };
            samples.push(s);
        }
        let (h, w) = (samples[0].height(), samples[0].width());
        let mut images = Vec::with_capacity(samples.len() * 3 * h * w);
        let mut targets = Targets::default();
        for (bi, s) in samples.iter().enumerate() {
            if (s.height(), s.width()) != (h, w) {
                return Err(Error::internal(format!(
                    "loader: image {} of batch {k} is {}x{}, the batch is {w}x{h}",
                    ds.images()[idx[bi]].display(),
                    s.width(),
                    s.height()
                )));
            }
            // HWC → CHW straight into the reserved capacity (no zero-fill first)
            let at = images.len();
            images.reserve(3 * h * w);
            let (r, gb) = images.spare_capacity_mut()[..3 * h * w].split_at_mut(h * w);
            let (g, b) = gb.split_at_mut(h * w);
            crate::data::image::split_channels(s.img.as_raw(), [r, g, b]);
            // SAFETY: split_channels wrote all 3·h·w elements after `at` (the image is w×h,
            // checked above; split_channels asserts the sizes match).
            unsafe { images.set_len(at + 3 * h * w) };
            for (b, &c) in s.normalized_xywh().into_iter().zip(&s.cls) {
                targets.push(bi, c, b);
            }
        }
        Ok(Batch {
            images,
            shape: (samples.len(), h, w),
            targets,
            paths: idx.iter().map(|&i| ds.images()[i].clone()).collect(),
            indices: idx,
        })
    }
}

/// The batches of one epoch, in order (see [`Loader::epoch`]).
pub struct EpochIter {
    job: Arc<Job>,
    start: usize,
    next: usize,
    end: usize,
    queues: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.end {
            return None;
        }
        let k = self.next;
        self.next += 1;
        if self.queues.is_empty() {
            return Some(self.job.make_batch(k));
        }
        // Worker w prepares batches start + w, start + w + workers, ...
        let q = &self.queues[(k - self.start) % self.queues.len()];
        Some(q.recv().unwrap_or_else(|_| Err(Error::internal(format!("loader thread for batch {k} stopped")))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        // Close the queues first so blocked workers see the hang-up, then join them.
        self.queues.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dataset::Dataset;
    use crate::config::hyp::{Cache, Fraction};
    use crate::data::dataset::DatasetOptions;
    use crate::data::synth::{generate, SynthSpec};

    fn cfg(imgsz: usize) -> AugmentConfig {
        AugmentConfig {
            imgsz,
            mosaic: 1.0,
            mixup: 0.3,
            cutmix: 0.3,
            copy_paste: 0.0,
            degrees: 5.0,
            translate: 0.1,
            scale: 0.5,
            shear: 1.0,
            perspective: 0.0,
            hsv_h: 0.015,
            hsv_s: 0.7,
            hsv_v: 0.4,
            fliplr: 0.5,
            flipud: 0.1,
            bgr: 0.0,
        }
    }

    fn opts(imgsz: usize, rect: bool) -> DatasetOptions {
        DatasetOptions {
            imgsz,
            augment: true,
            rect,
            cache: Cache::Off,
            fraction: Fraction::Ratio(1.0),
            single_cls: false,
            stride: 32,
            batch: 4,
        }
    }

    fn synth(dir: &std::path::Path, n: usize, rect: bool) -> Dataset {
        let spec = SynthSpec { images_per_split: [n, 2, 0], imgsz: 64, rect, ..SynthSpec::default() };
        let yaml = generate(dir, &spec).unwrap();
        Dataset::load(&yaml, dir).unwrap()
    }

    fn loader(ds: &Dataset, workers: usize, rect: bool) -> Loader {
        let t = Arc::new(TrainDataset::load(ds, "train", &opts(64, rect)).unwrap());
        Loader::new(t, LoaderOptions { batch: 4, workers, seed: 7, shuffle: true, augment: cfg(64) })
    }

    #[test]
    fn batches_identical_across_workers_and_resume() {
        let d = tempfile::tempdir().unwrap();
        let ds = synth(d.path(), 10, false);
        let l0 = loader(&ds, 0, false);
        let l2 = loader(&ds, 2, false);
        let l3 = loader(&ds, 3, false);
        assert_eq!(l0.batches_per_epoch(), 3); // ceil(10 / 4)
        let a: Vec<Batch> = l0.epoch(1, 0, true).map(|b| b.unwrap()).collect();
        let b: Vec<Batch> = l2.epoch(1, 0, true).map(|b| b.unwrap()).collect();
        assert_eq!(a, b, "workers 0 vs 2");
        let c: Vec<Batch> = l3.epoch(1, 1, true).map(|b| b.unwrap()).collect();
        assert_eq!(&a[1..], &c[..], "resume at batch 1 with 3 workers");
        assert_eq!(a[2].shape, (2, 64, 64));
        // another epoch: another order and other draws; the close_mosaic transforms differ too.
        let e2: Vec<Batch> = l0.epoch(2, 0, true).map(|b| b.unwrap()).collect();
        assert_ne!(a[0].images, e2[0].images);
        let closed: Vec<Batch> = l0.epoch(1, 0, false).map(|b| b.unwrap()).collect();
        assert_eq!(closed[0].indices, a[0].indices);
        assert_ne!(closed[0].images, a[0].images);
        // every image of the epoch exactly once
        let mut seen: Vec<usize> = a.iter().flat_map(|b| b.indices.clone()).collect();
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        // targets are normalised and point at images of the batch
        for b in &a {
            assert!(b.targets.batch_idx.iter().all(|&i| i < b.shape.0));
            assert!(b.targets.bboxes.iter().flatten().all(|v| (0.0..=1.0).contains(v)));
        }
        let t = a[0].to_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[4, 3, 64, 64]);
    }

    #[test]
    fn resized_batch_is_the_model_input_in_bytes() {
        let images: Vec<u8> = (0..2 * 3 * 4 * 6).map(|v| (v * 37 % 256) as u8).collect();
        let targets = Targets { batch_idx: vec![1], cls: vec![0], bboxes: vec![[0.5, 0.5, 0.2, 0.4]] };
        let b = Batch {
            images,
            shape: (2, 4, 6),
            targets,
            paths: vec![PathBuf::from("a"), PathBuf::from("b")],
            indices: vec![3, 7],
        };
        let r = b.resized((6, 9));
        assert_eq!(r.shape, (2, 6, 9));
        assert_eq!((&r.targets, &r.paths, &r.indices), (&b.targets, &b.paths, &b.indices));
        let x: Vec<f32> = b.to_tensor_at(&Device::Cpu, Some((6, 9))).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(r.images, x.iter().map(|v| (v * 255.0) as u8).collect::<Vec<_>>());
        assert_ne!(r.images.len(), b.images.len());
    }

    #[test]
    fn dropping_the_iterator_early_stops_the_workers() {
        let d = tempfile::tempdir().unwrap();
        let ds = synth(d.path(), 12, false);
        let l = loader(&ds, 2, false);
        let mut it = l.epoch(0, 0, true);
        assert!(it.next().unwrap().is_ok());
        drop(it); // must not hang
    }

    #[test]
    fn rect_batches_share_an_aspect_ratio_shape() {
        let d = tempfile::tempdir().unwrap();
        let ds = synth(d.path(), 9, true);
        let l = loader(&ds, 1, true);
        let r = l.dataset().rect().unwrap().clone();
        assert_eq!(r.batch_shapes.len(), 3);
        for (k, b) in l.epoch(0, 0, true).enumerate() {
            let b = b.unwrap();
            assert_eq!((b.shape.1, b.shape.2), r.batch_shapes[k]);
            assert!(b.shape.1 % 32 == 0 && b.shape.2 % 32 == 0);
            assert_eq!(b.indices, (k * 4..(k * 4 + 4).min(9)).collect::<Vec<_>>(), "rect: no shuffle");
        }
    }

    #[test]
    fn rebatching_equals_loading_at_that_batch() {
        // AutoBatch (`set_batch`) and the out-of-memory retry (`with_batch`) re-size a loaded
        // split instead of reading it again: the same rect shapes and batches as a fresh load
        let d = tempfile::tempdir().unwrap();
        let ds = synth(d.path(), 9, true);
        let fresh = TrainDataset::load(&ds, "train", &DatasetOptions { batch: 2, ..opts(64, true) }).unwrap();
        let mut set = TrainDataset::load(&ds, "train", &opts(64, true)).unwrap();
        assert_eq!(set.rect().unwrap().batch_shapes.len(), 3);
        let halved = set.with_batch(2);
        set.set_batch(2);
        for t in [&set, &halved] {
            assert_eq!(t.rect(), fresh.rect());
            assert_eq!(t.images(), fresh.images());
            assert_eq!(t.options(), fresh.options());
        }
        assert_eq!(fresh.rect().unwrap().batch_shapes.len(), 5);
        let batches = |t: TrainDataset| -> Vec<Batch> {
            let l = Loader::new(
                Arc::new(t),
                LoaderOptions { batch: 2, workers: 1, seed: 7, shuffle: false, augment: cfg(64) },
            );
            l.epoch(0, 0, true).map(|b| b.unwrap()).collect()
        };
        assert_eq!(batches(halved), batches(fresh));
    }

    #[test]
    fn bad_label_line_drops_the_image_and_no_usable_image_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let ds = synth(d.path(), 4, false);
        let imgs = ds.split_images("train").unwrap();
        let bad = crate::config::dataset::label_path(&imgs[1]);
        std::fs::write(&bad, "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n").unwrap();
        let dup = crate::config::dataset::label_path(&imgs[2]);
        std::fs::write(&dup, "1 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n").unwrap();
        std::fs::remove_file(crate::config::dataset::label_path(&imgs[3])).unwrap();
        let t = TrainDataset::load(&ds, "train", &opts(64, false)).unwrap();
        assert_eq!(t.len(), 3);
        let r = t.report();
        assert_eq!((r.dropped, r.duplicates_removed), (1, 1));
        assert!(r.backgrounds >= 1, "a missing label file is a background");
        let want = format!("{}:2:", bad.display());
        assert!(r.warnings.iter().any(|w| w.starts_with(&want) && w.contains("dropped")), "{:?}", r.warnings);
        assert_eq!(t.labels(1).len(), 1, "duplicate removed");
        // an unreadable image is dropped too; nothing usable left is an error naming the split
        for (i, im) in imgs.iter().enumerate() {
            if i == 0 {
                std::fs::write(im, b"not a png").unwrap();
            } else {
                std::fs::write(crate::config::dataset::label_path(im), "7 0.5 0.5 0.1 0.1\n").unwrap();
            }
        }
        let e = TrainDataset::load(&ds, "train", &opts(64, false)).err().expect("no usable image").to_string();
        assert!(e.contains("no usable image") && e.contains("train"), "{e}");
    }
}
