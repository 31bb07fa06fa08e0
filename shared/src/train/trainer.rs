//! The training loop: ultralytics 8.4's `BaseTrainer._do_train` for detection, readable top to
//! bottom, plus what a Kubernetes pod needs (exact resume from mid-epoch checkpoints, SIGTERM).
//!
//! [`train`] is the library API (the `yolo-train` binary and the tuner call it):
//!
//! 1. **setup** — run folder (`{project}/{name}`, incremented unless `exist_ok`; or a fixed
//!    folder the pipeline keys by its run id), network from a yaml or weights (`intersect_dicts`
//!    transfer), dataset + loader ([`crate::data`]), loss, optimizer by 8.4's `auto` rule,
//!    EMA, the validation split, and — when the folder holds an unfinished `last.safetensors`
//!    and resuming is allowed — everything restored from it;
//! 2. **epochs** — lr schedule step, close-mosaic, batches with warm-up (lr, momentum,
//!    accumulation), forward, loss, backward, gradient accumulation to `nbs`, gradient clipping
//!    at norm 10, optimizer step, EMA update; validation of the EMA; NaN recovery; results.csv;
//!    early stopping; checkpoints (epoch ends, every `checkpoint_every`, on stop requests); an
//!    out-of-memory error in the first epoch halves the batch and restarts the epoch
//!    ([`batch_size`]);
//! 3. **final** — checkpoints stripped of resume state, `best` validated with plots, results.png.
//!
//! Determinism: the network is initialised from `seed`, every sample's augmentation from
//! (seed, epoch, index) ([`crate::data::loader`]), and the CPU kernels reduce in a fixed order,
//! so the same seed gives the same run, and a resumed run continues it exactly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::config::dataset::Dataset;
use crate::config::hyp::{Batch as BatchCfg, Freeze, Hyp, Pretrained};
use crate::data::dataset::{DatasetOptions, TrainDataset};
use crate::data::loader::{Batch, Loader};
use crate::data::multi_scale::MultiScale;
use crate::eval::validator::{ValResult, ValSet};
use crate::nn::model::YoloModel;
use crate::nn::weights::{self, CheckpointMeta, Transfer};
use crate::root::ModelSource;
use crate::track::Tracker;
use crate::train::autobatch;
use crate::train::batch_size::{self, BatchPipeline, MAX_OOM_RETRIES};
use crate::train::checkpoint::{self, ResumeState, Snapshot};
use crate::train::ema::{all_finite, ModelEma};
use crate::train::loss::{class_weights, DetectionLoss, LossGains};
use crate::train::optim::{self, Optimizer, OptimizerKind, ParamGroup};
use crate::train::phases::{Phase, Phases};
use crate::train::progress::{self, Progress};
use crate::train::results::{self, EpochRow};
use crate::train::schedule::{self, LrSchedule, Warmup};
use crate::{Error, Result};

/// Gradient-norm clip (ultralytics `clip_grad_norm_(…, max_norm=10.0)`).
const MAX_GRAD_NORM: f64 = 10.0;
/// NaN/Inf recoveries before giving up (ultralytics: 3).
const MAX_NAN_RECOVERIES: usize = 3;

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// The model to start from (resolved by [`crate::root::DataRoot::resolve_model`]).
    pub model: ModelSource,
    /// The dataset yaml.
    pub data_yaml: PathBuf,
    /// The cfg (hyper-parameters; ultralytics `default.yaml` keys).
    pub hyp: Hyp,
    /// The data root: `project` and relative paths resolve under it.
    pub data_root: PathBuf,
    /// A fixed run folder (the compiled pipelines key it by the pipeline run, so a retried pod
    /// finds its own folder); None: `{project}/{name}` incremented as ultralytics does.
    pub save_dir: Option<PathBuf>,
    /// Resume from this checkpoint (ultralytics `resume=path/to/last`).
    pub resume_from: Option<PathBuf>,
    /// Resume automatically when the run folder holds an unfinished checkpoint.
    pub auto_resume: bool,
    /// Also checkpoint mid-epoch every this often (None: only at epoch ends).
    pub checkpoint_every: Option<Duration>,
    /// Set from a signal handler: checkpoint at the next batch boundary and stop.
    pub stop: Arc<AtomicBool>,
    /// Seconds between progress lines when stderr is not a terminal.
    pub log_interval: Duration,
    /// Test fault point, None in every real run: a batch of more images than this fails its
    /// forward with the CUDA driver's out-of-memory error, as a too-small GPU would, so the
    /// out-of-memory retry ([`batch_size`]) can be tested without one.
    pub simulate_out_of_memory_above: Option<usize>,
}

impl TrainRequest {
    /// A request with the defaults the `yolo-train` binary uses.
    pub fn new(model: ModelSource, data_yaml: PathBuf, hyp: Hyp, data_root: PathBuf) -> Self {
        TrainRequest {
            model,
            data_yaml,
            hyp,
            data_root,
            save_dir: None,
            resume_from: None,
            auto_resume: true,
            checkpoint_every: Some(Duration::from_secs(600)),
            stop: Arc::new(AtomicBool::new(false)),
            log_interval: Duration::from_secs(30),
            simulate_out_of_memory_above: None,
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    pub save_dir: PathBuf,
    pub best: PathBuf,
    pub last: PathBuf,
    pub best_fitness: Option<f64>,
    /// The final validation of `best` (None with `val: False` and no val split).
    pub final_val: Option<ValResult>,
    /// The last epoch's results row.
    pub last_row: Option<EpochRow>,
    pub epochs_completed: usize,
    /// Training images per second over the whole run (forward + backward + step + data wait).
    pub images_per_second: f64,
    /// Seconds the compute waited for the data loader.
    pub data_wait_seconds: f64,
}

/// Train a detector as `yolo train` does; see the module doc.
pub fn train(req: &TrainRequest, tracker: &Tracker) -> Result<TrainOutcome> {
    let mut t = Trainer::setup(req, tracker)?;
    t.run(tracker)
}

/// ultralytics' `EarlyStopping`.
#[derive(Debug, Clone, Copy)]
struct Stopper {
    best_fitness: f64,
    best_epoch: usize,
    patience: usize,
    possible_stop: bool,
}

impl Stopper {
    fn check(&mut self, epoch: usize, fitness: Option<f64>) -> bool {
        let Some(f) = fitness else { return false };
        if f > self.best_fitness || self.best_fitness == 0.0 {
            self.best_epoch = epoch;
            self.best_fitness = f;
        }
        let patience = if self.patience == 0 { usize::MAX } else { self.patience };
        let delta = epoch - self.best_epoch;
        self.possible_stop = delta >= patience.saturating_sub(1);
        let stop = delta >= patience;
        if stop {
            println!(
                "EarlyStopping: Training stopped early as no improvement observed in last {patience} epochs. \
                 Best results observed at epoch {}, best model saved as best.safetensors.",
                self.best_epoch
            );
        }
        stop
    }
}

struct Trainer {
    hyp: Hyp,
    /// The dataset yaml's content (the out-of-memory retry reloads the validation split).
    dataset: Dataset,
    save_dir: PathBuf,
    device: Device,
    model: YoloModel,
    varmap: VarMap,
    ema: ModelEma,
    ema_model: YoloModel,
    meta: CheckpointMeta,
    names: Vec<String>,
    loader: Loader,
    /// Per-batch input sizes (`multi_scale`; off at 0).
    multi_scale: MultiScale,
    val: Option<ValSet>,
    loss: DetectionLoss,
    opt: Optimizer,
    kind: OptimizerKind,
    /// Trainable variables (frozen ones excluded), sorted by name.
    trainable: Vec<(String, Var)>,
    /// Layers frozen as a whole: they run with BatchNorm in eval mode.
    frozen_layers: Vec<bool>,
    /// Gradients summed since the last optimizer step (by variable).
    acc: GradStore,
    acc_count: usize,
    sched: LrSchedule,
    warmup: Warmup,
    epochs: usize,
    state: ResumeState,
    stopper: Stopper,
    /// The last validation: precision, recall, mAP50, mAP50-95 and val losses.
    metrics: [f64; 4],
    val_loss: [f64; 3],
    req: TrainRequest,
    /// The last results.csv row.
    last_row: Option<EpochRow>,
    data_wait: f64,
    images_seen: usize,
    compute_start: Instant,
    seconds_before: f64,
    last_checkpoint: Instant,
}

impl Trainer {
    fn setup(req: &TrainRequest, tracker: &Tracker) -> Result<Trainer> {
        let mut hyp = req.hyp.clone();
        let dataset = Dataset::load(&req.data_yaml, &req.data_root)?;
        let save_dir = resolve_save_dir(req, &hyp)?;
        let resume_path = resume_path(req, &hyp, &save_dir)?;
        let last_path = save_dir.join("weights").join("last.safetensors");
        let resumed = match &resume_path {
            Some(p) => {
                let l = checkpoint::load(p)?;
                match &l.state {
                    Some(st) if !st.finished => Some(l),
                    Some(_) if req.resume_from.is_some() || hyp.resume => {
                        return Err(Error::config("this training run is finished: nothing to resume")
                            .with_file(p)
                            .with_hint("start a new run (resume: False) to train further from these weights"));
                    }
                    _ => None,
                }
            }
            None => None,
        };
        if let Some(l) = &resumed {
            // The checkpoint's cfg wins (ultralytics `check_resume`), except the keys ultralytics
            // lets a resume change.
            let st = l.state.as_ref().expect("resumed checkpoints have state");
            let yaml_text = l.meta.train_args.get("yaml").and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let stored =
                Hyp::parse_all(&yaml_text, Path::new("checkpoint train_args")).map_err(|mut e| e.remove(0))?.hyp;
            let mut h = stored;
            for key in ["device", "workers", "patience", "val", "plots", "save_period", "time"] {
                if let Some(v) = req.hyp.value(key) {
                    let text = serde_yaml::to_string(v).unwrap_or_default();
                    h.set(key, text.trim())?;
                }
            }
            hyp = h;
            let names = dataset.names.clone();
            if st.data_yaml != req.data_yaml.display().to_string() || l.meta.names != names {
                return Err(Error::config(format!(
                    "the checkpoint was trained on another dataset ({} with classes {:?}; now {} with {:?})",
                    st.data_yaml,
                    l.meta.names,
                    req.data_yaml.display(),
                    names
                ))
                .with_file(resume_path.as_deref().unwrap_or(&last_path))
                .with_hint("resume with the same dataset yaml, or start a new run in another folder"));
            }
            println!(
                "Resuming training from {} at epoch {} batch {}",
                resume_path.as_ref().unwrap().display(),
                st.epoch + 1,
                st.batch
            );
        }

        let sel = crate::device::select(&hyp.device)?;
        for w in &sel.warnings {
            eprintln!("warning: {w}");
        }
        let device = sel.device.clone();
        let single_cls = hyp.single_cls;
        let names: Vec<String> = if single_cls { vec!["item".to_string()] } else { dataset.names.clone() };
        let nc = names.len();

        // Network: from a yaml, weights, or (resume) the checkpoint's architecture.
        let (loaded, report) = match &resumed {
            Some(_) => {
                let src =
                    ModelSource::File { path: resume_path.clone().unwrap(), requested: "last.safetensors".into() };
                weights::build_for_training_with(&src, nc, &names, &device, hyp.seed, &Transfer::Nothing)?
            }
            None => {
                let transfer = match &hyp.pretrained {
                    Pretrained::Yes => Transfer::FromSource,
                    Pretrained::No => Transfer::Nothing,
                    Pretrained::Path(p) => {
                        let pb = PathBuf::from(p);
                        Transfer::File(if pb.is_absolute() { pb } else { req.data_root.join(pb) })
                    }
                };
                weights::build_for_training_with(&req.model, nc, &names, &device, hyp.seed, &transfer)?
            }
        };
        if let Some(r) = &report {
            println!("{}", r.line());
        }
        let model = loaded.model;
        let varmap = loaded.varmap;
        println!("{}", model.summary(640).line());

        let stride = model.max_stride();
        let imgsz = model.check_imgsz(hyp.imgsz, "imgsz");
        let multi_scale = MultiScale { imgsz, fraction: hyp.multi_scale, stride, seed: hyp.seed };
        let opts = DatasetOptions {
            imgsz,
            augment: true,
            rect: hyp.rect,
            cache: hyp.cache,
            fraction: hyp.fraction,
            single_cls,
            stride,
            // AutoBatch re-sizes the scan below once it has chosen
            batch: match hyp.batch {
                BatchCfg::Fixed(b) => b.max(1),
                _ => autobatch::CPU_BATCH,
            },
        };
        let mut train_set = TrainDataset::load(&dataset, "train", &opts)?;
        let batch = match hyp.batch {
            BatchCfg::Fixed(_) => opts.batch,
            ref auto => {
                let b = auto_batch(&model, &varmap, &device, &train_set, &multi_scale, auto)?;
                // as 8.4 (`self.args.batch = self.batch_size = self.auto_batch()`): args.yaml and
                // the checkpoints hold the chosen batch, so a resumed run keeps it
                hyp.set("batch", &b.to_string())?;
                train_set.set_batch(b);
                b
            }
        };
        let rep = train_set.report();
        for w in rep.warnings.iter().take(20) {
            eprintln!("warning: {w}");
        }
        println!(
            "train: {} images ({} backgrounds, {} dropped, {} duplicate labels removed)",
            train_set.len(),
            rep.backgrounds,
            rep.dropped,
            rep.duplicates_removed
        );
        let instances = train_set.instances_per_class();
        let cw = class_weights(&instances, hyp.cls_pw);
        if let Some(w) = &cw {
            println!("Class weights: {:?}", w.iter().map(|v| (v * 1000.0).round() / 1000.0).collect::<Vec<_>>());
        }
        let iterations = (train_set.len() as f64 / batch.max(hyp.nbs) as f64).ceil() as usize * hyp.epochs.max(1);
        let BatchPipeline { loader, val, accumulate: acc_nominal, weight_decay: wd } =
            BatchPipeline::build(Arc::new(train_set), &dataset, &names, &hyp, &multi_scale, batch)?;
        let nb = loader.batches_per_epoch();
        let workers = loader.options().workers;
        let epochs = hyp.epochs.max(1);
        let (kind, lr0, momentum, auto) = optim::resolve_auto(&hyp.optimizer, hyp.lr0, hyp.momentum, nc, iterations)?;
        if auto {
            println!(
                "optimizer: 'optimizer=auto' found, ignoring 'lr0={}' and 'momentum={}' and determining best 'optimizer', 'lr0' and 'momentum' automatically... ",
                hyp.lr0, hyp.momentum
            );
            hyp.set("optimizer", kind.name())?;
            hyp.set("lr0", &lr0.to_string())?;
            hyp.set("warmup_bias_lr", "0.0")?;
        }
        let frozen = frozen_prefixes(&hyp.freeze);
        let (frozen_layers, partial) = frozen_layers(&frozen, model.layers.len());
        for f in partial {
            eprintln!(
                "warning: freeze entry '{f}' is part of a layer: its parameters are frozen, but its BatchNorm keeps \
                 training statistics (kubeyolo puts BatchNorm in eval mode per whole layer, e.g. freeze: [{}])",
                f.trim_start_matches("model.").split('.').next().unwrap_or_default()
            );
        }
        let all: Vec<(String, Var)> = {
            let d = varmap.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
            let mut v: Vec<(String, Var)> = d.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let trainable: Vec<(String, Var)> = all
            .iter()
            .filter(|(n, _)| !optim::is_buffer(n))
            .filter(|(n, _)| {
                let f = frozen.iter().any(|p| n.contains(p.as_str()));
                if f && !n.contains(".dfl") {
                    println!("Freezing layer '{n}'");
                }
                !f
            })
            .cloned()
            .collect();
        let mut opt = Optimizer::new(kind, trainable.clone(), lr0, momentum, wd);
        let sizes = opt.group_sizes();
        println!(
            "optimizer: {}(lr={lr0}, momentum={momentum}) with parameter groups {} weight(decay=0.0), {} weight(decay={wd}), {} bias(decay=0.0)",
            kind.name(),
            sizes[1],
            sizes[0],
            sizes[2]
        );

        let sched = LrSchedule { epochs, lrf: hyp.lrf, cos_lr: hyp.cos_lr };
        let warmup = Warmup {
            iterations: schedule::warmup_iterations(hyp.warmup_epochs, epochs, nb),
            accumulate: acc_nominal,
            lr0,
            warmup_bias_lr: hyp.warmup_bias_lr,
            warmup_momentum: hyp.warmup_momentum,
            // ultralytics warms up to the cfg's momentum even when `auto` picked 0.9
            momentum: hyp.momentum,
        };

        // EMA: a second network on its own variables.
        let ema_vm = VarMap::new();
        let ema_model = YoloModel::new(&model.yaml, nc, VarBuilder::from_varmap(&ema_vm, DType::F32, &device))?;
        let mut ema = ModelEma::new(&varmap, ema_vm, 0)?;
        let loss = DetectionLoss::new(&model, LossGains::from_hyp(&hyp), cw);

        let mut meta = loaded.meta;
        meta.nc = nc;
        meta.names = names.clone();
        meta.writer = format!("kubeyolo {}", crate::VERSION);

        let mut state = ResumeState {
            epochs,
            last_opt_step: -1,
            accumulate: acc_nominal,
            data_yaml: req.data_yaml.display().to_string(),
            ..Default::default()
        };
        let mut stopper = Stopper { best_fitness: 0.0, best_epoch: 0, patience: hyp.patience, possible_stop: false };
        let mut acc = GradStore::default();
        let mut acc_count = 0;
        if let Some(l) = resumed {
            weights::load_into(&varmap, &l.model, true)?;
            weights::load_into(&ema.varmap, &l.ema, true)?;
            opt.load_state_tensors(&l.optim)?;
            let st = l.state.expect("checked above");
            ema.updates = st.ema_updates;
            stopper.best_fitness = st.stopper_best_fitness;
            stopper.best_epoch = st.stopper_best_epoch;
            for (name, g) in l.grads {
                if let Some((_, v)) = trainable.iter().find(|(n, _)| *n == name) {
                    acc.insert(v.as_tensor(), g.to_device(&device)?);
                    acc_count = 1;
                }
            }
            state = st;
        }

        std::fs::create_dir_all(save_dir.join("weights"))
            .map_err(|e| Error::io_at(&save_dir, "create run folder", e))?;
        record_args(&save_dir, req, &hyp, imgsz, &mut meta)?;
        if tracker.is_enabled() {
            let mut params: Vec<(String, String)> = hyp.params();
            params.push(("model".into(), req.model.output_value()));
            params.push(("data".into(), req.data_yaml.display().to_string()));
            tracker.log_params(&params);
        }
        println!(
            "Using {} train, {} val images at imgsz={imgsz}\nUsing {workers} dataloader workers\nLogging results to {}\nStarting training for {} epochs...",
            loader.dataset().len(),
            val.as_ref().map(|v| v.len()).unwrap_or(0),
            save_dir.display(),
            if let Some(t) = hyp.time { format!("{t} hours") } else { epochs.to_string() }
        );

        let seconds_before = state.train_seconds;
        Ok(Trainer {
            epochs: state.epochs.max(1),
            hyp,
            dataset,
            save_dir,
            device,
            model,
            varmap,
            ema,
            ema_model,
            meta,
            names,
            loader,
            multi_scale,
            val,
            loss,
            opt,
            kind,
            trainable,
            frozen_layers,
            acc,
            acc_count,
            sched,
            warmup,
            state,
            stopper,
            metrics: [0.0; 4],
            val_loss: [0.0; 3],
            req: req.clone(),
            last_row: None,
            data_wait: 0.0,
            images_seen: 0,
            compute_start: Instant::now(),
            seconds_before,
            last_checkpoint: Instant::now(),
        })
    }

    fn weights_dir(&self) -> PathBuf {
        self.save_dir.join("weights")
    }
    fn last_path(&self) -> PathBuf {
        self.weights_dir().join("last.safetensors")
    }
    fn best_path(&self) -> PathBuf {
        self.weights_dir().join("best.safetensors")
    }

    fn train_seconds(&self) -> f64 {
        self.seconds_before + self.compute_start.elapsed().as_secs_f64()
    }

    fn run(&mut self, tracker: &Tracker) -> Result<TrainOutcome> {
        if !self.state.finished {
            self.epochs_loop(tracker)?;
        }
        self.finish(tracker)
    }

    fn epochs_loop(&mut self, tracker: &Tracker) -> Result<()> {
        let mut epoch = self.state.epoch;
        let first_epoch = epoch;
        let mut oom_retries = 0;
        let mut stop = false;
        let mut phases = Phases::from_env(&self.device);
        while epoch < self.epochs {
            // per epoch: the out-of-memory retry changes the batch, and with it nb
            let nb = self.loader.batches_per_epoch();
            let plot_idx: Vec<usize> = {
                let mut v = vec![0, 1, 2];
                if self.hyp.close_mosaic > 0 && self.epochs > self.hyp.close_mosaic {
                    let base = (self.epochs - self.hyp.close_mosaic) * nb;
                    v.extend([base, base + 1, base + 2]);
                }
                v
            };
            // scheduler.step(): every group at initial_lr · lf(epoch)
            let f = self.sched.factor(epoch);
            self.opt.set_lrs_by(|g| g.initial_lr * f);
            let mosaic = !(self.hyp.close_mosaic > 0 && epoch + self.hyp.close_mosaic >= self.epochs);
            if !mosaic && epoch + self.hyp.close_mosaic == self.epochs && self.state.batch == 0 {
                println!("Closing dataloader mosaic");
            }
            println!("{}", progress::header());
            let start = self.state.batch;
            let mut bar = Progress::new(nb, self.req.log_interval, &self.device);
            let mut loss_nan = false;
            let mut it = self.loader.epoch(epoch, start, mosaic);
            let mut i = start;
            let mut run = 0;
            let mut interrupted = false;
            let mut out_of_memory = None;
            phases.start_epoch();
            loop {
                let t_wait = Instant::now();
                let Some(batch) = it.next() else { break };
                let batch = batch?;
                self.data_wait += t_wait.elapsed().as_secs_f64();
                phases.mark(Phase::Data)?;
                let ni = i + nb * epoch;
                if let Some(w) = self.warmup.at(ni, epoch, &self.sched) {
                    self.state.accumulate = w.accumulate;
                    // per torch group: biases from warmup_bias_lr, the rest from 0, each to its
                    // own initial_lr · lf(epoch) (MuSGD's boosted groups start 3× higher)
                    let warmup = &self.warmup;
                    self.opt.set_lrs_by(|g| warmup.lr(ni, g.group == ParamGroup::Bias, g.initial_lr * f));
                    if self.kind.has_momentum() {
                        for g in ParamGroup::ALL {
                            self.opt.set_momentum(g, w.momentum);
                        }
                    }
                }
                let (_, h, w) = batch.shape;
                let resized = self.multi_scale.size(epoch, i).and_then(|sz| self.multi_scale.shape_for(sz, (h, w)));
                let (width, items) = match self.forward_backward(&batch, resized, (epoch, i), &mut phases) {
                    Err(e) if batch_size::is_out_of_memory(&e) => {
                        if epoch == first_epoch && oom_retries < MAX_OOM_RETRIES {
                            out_of_memory = Some(e);
                            break;
                        }
                        return Err(e.with_hint(format!(
                            "the device ran out of memory at batch={}: lower batch or imgsz, or set batch: -1 \
                             (AutoBatch sizes it to the GPU)",
                            batch.shape.0
                        )));
                    }
                    r => r?,
                };
                if let Some(items) = items {
                    let t = self.state.tloss.unwrap_or(items);
                    let k = i as f64;
                    self.state.tloss = Some(if self.state.tloss.is_none() {
                        items
                    } else {
                        [0, 1, 2].map(|j| (t[j] * k + items[j]) / (k + 1.0))
                    });
                } else {
                    loss_nan = true;
                }
                if ni as i64 - self.state.last_opt_step >= self.state.accumulate as i64 {
                    self.optimizer_step()?;
                    phases.mark(Phase::Optimizer)?;
                    self.state.last_opt_step = ni as i64;
                    if let Some(h) = self.hyp.time {
                        if self.train_seconds() > h * 3600.0 {
                            stop = true;
                        }
                    }
                }
                self.images_seen += batch.shape.0;
                bar.update(
                    epoch,
                    self.epochs,
                    self.state.tloss.unwrap_or([0.0; 3]),
                    batch.targets.len(),
                    width,
                    i,
                    run + 1,
                );
                if self.hyp.plots && plot_idx.contains(&ni) {
                    let p = self.save_dir.join(format!("train_batch{ni}.jpg"));
                    // as ultralytics: the batch the model saw, after the multi-scale resize
                    let seen = resized.filter(|&s| s != (h, w)).map(|s| batch.resized(s));
                    if let Err(e) =
                        crate::plot::batch::plot_training_batch(seen.as_ref().unwrap_or(&batch), &self.names, &p)
                    {
                        eprintln!("warning: {e}");
                    }
                }
                phases.mark(Phase::Other)?;
                i += 1;
                run += 1;
                self.state.epoch = epoch;
                self.state.batch = i;
                let stop_requested = self.req.stop.load(Ordering::SeqCst);
                let due = self.req.checkpoint_every.is_some_and(|d| self.last_checkpoint.elapsed() >= d);
                if (stop_requested || due) && i < nb {
                    self.note_mlflow_run(tracker);
                    self.save_resume_point()?;
                    if stop_requested {
                        interrupted = true;
                        break;
                    }
                }
                if stop {
                    break;
                }
            }
            bar.finish();
            drop(it);
            if let Some(e) = out_of_memory {
                oom_retries += 1;
                self.halve_batch(&e, oom_retries)?;
                continue;
            }
            if interrupted {
                return Err(Error::interrupted(format!(
                    "stopped by a signal at epoch {} batch {}; checkpoint saved to {}",
                    epoch + 1,
                    self.state.batch,
                    self.last_path().display()
                ))
                .with_hint("run the step again (Kubeflow retries it): it resumes from the checkpoint"));
            }
            let lr = [
                self.opt.hyp(ParamGroup::Weight).lr,
                self.opt.hyp(ParamGroup::Bn).lr,
                self.opt.hyp(ParamGroup::Bias).lr,
            ];
            let final_epoch = epoch + 1 >= self.epochs;
            let mut fitness = None;
            let t_val = Instant::now();
            if self.val.is_some() && (self.hyp.val || final_epoch || self.stopper.possible_stop || stop) {
                let (m, vl, fit) = self.validate()?;
                self.metrics = m;
                self.val_loss = vl;
                fitness = Some(fit);
                if self.state.best_fitness.is_none_or(|b| b < fit) {
                    self.state.best_fitness = Some(fit);
                }
            }
            if let Some(line) = phases.report(epoch, fitness.map(|_| t_val.elapsed().as_secs_f64())) {
                println!("{line}");
            }
            self.state.fitness = fitness;
            // NaN recovery (ultralytics `_handle_nan_recovery`)
            let fitness_nan = fitness.is_some_and(|f| !f.is_finite());
            if (loss_nan || fitness_nan) && epoch > 0 && self.last_path().is_file() {
                self.state.nan_recovery_attempts += 1;
                if self.state.nan_recovery_attempts > MAX_NAN_RECOVERIES {
                    return Err(Error::model(format!(
                        "Training failed: NaN persisted for {} epochs",
                        self.state.nan_recovery_attempts
                    ))
                    .with_hint("lower lr0, check the labels for degenerate boxes, or train with another optimizer"));
                }
                eprintln!(
                    "warning: {} detected (attempt {}/{MAX_NAN_RECOVERIES}), recovering from last.safetensors...",
                    if loss_nan { "Loss NaN/Inf" } else { "Fitness NaN/Inf" },
                    self.state.nan_recovery_attempts
                );
                self.recover_from_last()?;
                continue;
            } else if loss_nan || fitness_nan {
                eprintln!("warning: Loss NaN/Inf detected but can not recover from last.safetensors...");
            }
            self.state.nan_recovery_attempts = 0;
            let row = EpochRow {
                epoch: epoch + 1,
                time: self.train_seconds(),
                train_loss: self.state.tloss.unwrap_or([0.0; 3]),
                metrics: self.metrics,
                val_loss: self.val_loss,
                lr,
            };
            self.state.results_rows.push(row.line());
            results::write(&self.save_dir.join("results.csv"), &self.state.results_rows)?;
            self.last_row = Some(row);
            log_epoch(tracker, &row, epoch);
            stop |= self.stopper.check(epoch + 1, fitness) || final_epoch;
            if let Some(h) = self.hyp.time {
                stop |= self.train_seconds() > h * 3600.0;
            }
            // epoch done: the resume point is the next epoch's start
            self.state.epoch = epoch + 1;
            self.state.batch = 0;
            self.state.tloss = None;
            self.state.stopper_best_fitness = self.stopper.best_fitness;
            self.state.stopper_best_epoch = self.stopper.best_epoch;
            if self.hyp.save || final_epoch {
                self.note_mlflow_run(tracker);
                self.save_epoch(epoch, fitness)?;
            }
            if let Some(h) = self.hyp.time {
                // re-plan the epochs from the mean epoch time (ultralytics' `time` mode)
                let done = (epoch + 1) as f64;
                let mean = self.train_seconds() / done;
                let planned = ((h * 3600.0) / mean.max(1e-9)).ceil() as usize;
                self.epochs = planned.max(epoch + 1);
                self.state.epochs = self.epochs;
                self.sched.epochs = self.epochs;
                self.warmup.iterations = schedule::warmup_iterations(self.hyp.warmup_epochs, self.epochs, nb);
                stop |= epoch + 1 >= self.epochs;
            }
            if stop {
                break;
            }
            if self.req.stop.load(Ordering::SeqCst) {
                return Err(Error::interrupted(format!(
                    "stopped by a signal after epoch {}; checkpoint saved to {}",
                    epoch + 1,
                    self.last_path().display()
                ))
                .with_hint("run the step again (Kubeflow retries it): it resumes from the checkpoint"));
            }
            epoch += 1;
        }
        println!("\n{} epochs completed in {:.3} hours.", self.state.epoch, self.train_seconds() / 3600.0);
        Ok(())
    }

    /// Keep the MLflow run's id in the checkpoint state, so a resumed step continues that run
    /// ([`resumable_mlflow_run`]). The id is there once the server created the run (normally
    /// long before the first checkpoint); the short wait only matters with a slow server.
    fn note_mlflow_run(&mut self, tracker: &Tracker) {
        if self.state.mlflow_run_id.is_none() && tracker.is_enabled() {
            self.state.mlflow_run_id = tracker.run_id(Duration::from_millis(500));
        }
    }

    /// Upload, forward, loss and backward of one batch, its gradients added to the accumulator.
    /// Returns the input width and the loss items, None when the loss was not finite (the step
    /// is skipped; the epoch end recovers as 8.4 does).
    fn forward_backward(
        &mut self,
        batch: &Batch,
        resized: Option<(usize, usize)>,
        (epoch, i): (usize, usize),
        phases: &mut Phases,
    ) -> Result<(usize, Option<[f64; 3]>)> {
        if self.req.simulate_out_of_memory_above.is_some_and(|n| batch.shape.0 > n) {
            return Err(Error::model(
                "tensor operation failed: DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\") (simulated)",
            ));
        }
        let x = batch.to_tensor_at(&self.device, resized)?;
        phases.mark(Phase::Upload)?;
        let out = self.model.forward_train_frozen(&x, &self.frozen_layers)?;
        phases.mark(Phase::Forward)?;
        let lo = match self.loss.compute(&out, &batch.targets) {
            Ok(lo) => lo,
            Err(e) if e.message.starts_with("non-finite") => {
                eprintln!("warning: batch {i} of epoch {}: {e}; step skipped", epoch + 1);
                return Ok((x.dim(3)?, None));
            }
            Err(e) => return Err(e),
        };
        let items = lo.items.map(|v| v as f64);
        phases.mark(Phase::Loss)?;
        if !items.iter().all(|v| v.is_finite()) {
            return Ok((x.dim(3)?, None));
        }
        let grads = lo.loss.backward()?;
        self.accumulate(grads)?;
        phases.mark(Phase::Backward)?;
        Ok((x.dim(3)?, Some(items)))
    }

    /// The out-of-memory retry ([`batch_size`]): the batch halved, everything that depends on it
    /// rebuilt, the gradients since the last step dropped; the weights, EMA and optimizer state
    /// stay. The caller restarts the epoch.
    fn halve_batch(&mut self, cause: &Error, retry: usize) -> Result<()> {
        let old = self.loader.options().batch;
        let new = batch_size::halved(old);
        // ultralytics' words; the error itself follows, as candle gave it
        eprintln!(
            "warning: {} out of memory with batch={old}. Reducing to batch={new} and retrying ({retry}/{MAX_OOM_RETRIES}).\n  ({})",
            if self.device.is_cuda() { "CUDA" } else { "CPU" },
            cause.message
        );
        self.hyp.set("batch", &new.to_string())?;
        record_args(&self.save_dir, &self.req, &self.hyp, self.multi_scale.imgsz, &mut self.meta)?;
        let train_set = Arc::new(self.loader.dataset().with_batch(new));
        self.val = None; // the old validation images go before the new ones are read
        let p = BatchPipeline::build(train_set, &self.dataset, &self.names, &self.hyp, &self.multi_scale, new)?;
        let nb = p.loader.batches_per_epoch();
        (self.loader, self.val) = (p.loader, p.val);
        self.opt.set_weight_decay(ParamGroup::Weight, p.weight_decay);
        self.warmup.accumulate = p.accumulate;
        self.warmup.iterations = schedule::warmup_iterations(self.hyp.warmup_epochs, self.epochs, nb);
        self.state.accumulate = p.accumulate;
        self.state.last_opt_step = -1;
        self.state.tloss = None;
        self.state.batch = 0;
        self.acc = GradStore::default();
        self.acc_count = 0;
        Ok(())
    }

    /// Add one backward's gradients of the trainable variables to the accumulated ones.
    fn accumulate(&mut self, mut grads: GradStore) -> Result<()> {
        for (_, v) in &self.trainable {
            if let Some(g) = grads.remove(v.as_tensor()) {
                let g = g.detach();
                let sum = match self.acc.remove(v.as_tensor()) {
                    Some(prev) => (prev + g)?,
                    None => g,
                };
                self.acc.insert(v.as_tensor(), sum);
            }
        }
        self.acc_count += 1;
        Ok(())
    }

    /// ultralytics `optimizer_step`: clip the gradient norm to 10, step, zero, update the EMA.
    fn optimizer_step(&mut self) -> Result<()> {
        if self.acc_count == 0 {
            return Ok(());
        }
        let vars: Vec<Var> = self.trainable.iter().map(|(_, v)| v.clone()).collect();
        optim::clip_grad_norm(&mut self.acc, &vars, MAX_GRAD_NORM)?;
        self.opt.step(&self.acc)?;
        self.acc = GradStore::default();
        self.acc_count = 0;
        self.ema.update()?;
        self.state.ema_updates = self.ema.updates;
        Ok(())
    }

    /// Validate the EMA on the val split: (P, R, mAP50, mAP50-95), val losses, fitness.
    fn validate(&mut self) -> Result<([f64; 4], [f64; 3], f64)> {
        let val = self.val.as_ref().expect("validate is called only with a val split");
        let mut sums = [0.0f64; 3];
        let mut n = 0usize;
        let loss = &self.loss;
        let mut hook = |out: &crate::nn::blocks::HeadOutput, t: &crate::data::Targets| -> Result<()> {
            let lo = loss.compute(out, t)?;
            for (s, v) in sums.iter_mut().zip(lo.items) {
                *s += v as f64;
            }
            n += 1;
            Ok(())
        };
        let res = val.evaluate_with(&self.ema_model, &self.device, Some(&mut hook))?;
        print!("{}", res.metrics.table());
        let m = &res.metrics;
        let vl = sums.map(|s| s / n.max(1) as f64);
        Ok(([m.precision, m.recall, m.map50, m.map50_95], vl, m.fitness))
    }

    fn snapshot_grads(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        if self.acc_count > 0 {
            for (n, v) in &self.trainable {
                if let Some(g) = self.acc.get(v.as_tensor()) {
                    out.push((n.clone(), g.clone()));
                }
            }
        }
        Ok(out)
    }

    fn write_checkpoint(&mut self, path: &Path) -> Result<()> {
        self.state.train_seconds = self.train_seconds();
        let mut meta = self.meta.clone();
        meta.epoch = Some(self.state.epoch as i64 - 1);
        meta.best_fitness = self.state.best_fitness;
        let snap = Snapshot {
            ema: &self.ema.varmap,
            model: &self.varmap,
            optim: self.opt.state_tensors()?,
            grads: self.snapshot_grads()?,
            meta: &meta,
            state: &self.state,
        };
        checkpoint::save(path, &snap)
    }

    /// A mid-epoch checkpoint (time-based or on a stop request) into last.safetensors.
    fn save_resume_point(&mut self) -> Result<()> {
        let p = self.last_path();
        match self.write_checkpoint(&p) {
            Ok(()) => {
                self.last_checkpoint = Instant::now();
                Ok(())
            }
            Err(e) => {
                eprintln!("warning: checkpoint not written ({e}); the previous {} is intact", p.display());
                if self.req.stop.load(Ordering::SeqCst) {
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// ultralytics `save_model` at an epoch end: last always, best when this epoch's fitness is
    /// the best, `epoch{N}` every `save_period`.
    fn save_epoch(&mut self, epoch: usize, fitness: Option<f64>) -> Result<()> {
        if !self.ema.is_finite()? {
            // a transient NaN poisons the EMA: resync from the live model where it is finite
            let md = self.varmap.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
            let ed = self.ema.varmap.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
            for (k, e) in ed.iter() {
                if !all_finite(e.as_tensor())? {
                    if let Some(m) = md.get(k) {
                        if all_finite(m.as_tensor())? {
                            e.set(&m.as_tensor().detach().copy()?)?;
                        }
                    }
                }
            }
        }
        let last = self.last_path();
        if let Err(e) = self.write_checkpoint(&last) {
            eprintln!("warning: {} not written ({e}); the previous checkpoint is intact", last.display());
            return Err(e);
        }
        self.last_checkpoint = Instant::now();
        let is_best = match (fitness, self.state.best_fitness) {
            (Some(f), Some(b)) => f == b,
            (None, _) => self.val.is_none(),
            _ => false,
        };
        if is_best {
            crate::files::snapshot_atomic(&last, &self.best_path())?;
        }
        if self.hyp.save_period > 0 && (epoch as i64) % self.hyp.save_period == 0 {
            crate::files::snapshot_atomic(&last, &self.weights_dir().join(format!("epoch{epoch}.safetensors")))?;
        }
        Ok(())
    }

    /// Reload the model, EMA and optimizer from last.safetensors (NaN recovery).
    fn recover_from_last(&mut self) -> Result<()> {
        let l = checkpoint::load(&self.last_path())?;
        let st = l
            .state
            .clone()
            .ok_or_else(|| Error::model("last.safetensors has no training state").with_file(self.last_path()))?;
        for (_, t) in &l.ema {
            if !all_finite(t)? {
                return Err(Error::model("checkpoint is corrupted with NaN/Inf weights").with_file(self.last_path()));
            }
        }
        weights::load_into(&self.varmap, &l.ema, true)?; // EMA weights into the model, as ultralytics
        weights::load_into(&self.ema.varmap, &l.ema, true)?;
        self.opt.load_state_tensors(&l.optim)?;
        self.ema.updates = st.ema_updates;
        let attempts = self.state.nan_recovery_attempts;
        let rows = self.state.results_rows.clone();
        self.state = st;
        self.state.nan_recovery_attempts = attempts;
        self.state.results_rows = rows;
        self.state.last_opt_step = -1;
        self.acc = GradStore::default();
        self.acc_count = 0;
        Ok(())
    }

    /// Strip the checkpoints, validate best with plots, draw results.png.
    fn finish(&mut self, tracker: &Tracker) -> Result<TrainOutcome> {
        let (last, best) = (self.last_path(), self.best_path());
        if last.is_file() {
            checkpoint::strip(&last)?;
        }
        if best.is_file() {
            checkpoint::strip(&best)?;
        }
        let mut final_val = None;
        if let (Some(val), true) = (&self.val, best.is_file()) {
            println!("\nValidating {}...", best.display());
            let lm = weights::load_model(&best, &self.device)?;
            let res = val.evaluate(&lm.model, &self.device)?;
            print!("{}", res.metrics.table());
            if self.hyp.plots {
                write_val_plots(&res, &self.save_dir)?;
            }
            final_val = Some(res);
        }
        if self.hyp.plots {
            let csv = self.save_dir.join("results.csv");
            if csv.is_file() {
                crate::plot::results::plot_results(&csv, &self.save_dir.join("results.png"))?;
            }
        }
        if let Some(res) = &final_val {
            let m = &res.metrics;
            let step = self.state.epoch as i64 + 1;
            tracker.log_metrics(
                &[
                    ("metrics/precisionB".to_string(), m.precision),
                    ("metrics/recallB".to_string(), m.recall),
                    ("metrics/mAP50B".to_string(), m.map50),
                    ("metrics/mAP50-95B".to_string(), m.map50_95),
                ],
                step,
            );
        }
        for f in ["results.csv", "results.png", "args.yaml", "confusion_matrix.png", "PR_curve.png"] {
            let p = self.save_dir.join(f);
            if p.is_file() {
                tracker.log_artifact(&p, "train");
            }
        }
        if best.is_file() {
            tracker.log_artifact(&best, "train/weights");
        }
        println!("Results saved to {}", self.save_dir.display());
        let secs = self.compute_start.elapsed().as_secs_f64();
        Ok(TrainOutcome {
            save_dir: self.save_dir.clone(),
            best: if best.is_file() { best } else { last.clone() },
            last,
            best_fitness: self.state.best_fitness,
            final_val,
            last_row: self.last_row,
            epochs_completed: self.state.epoch,
            images_per_second: self.images_seen as f64 / secs.max(1e-9),
            data_wait_seconds: self.data_wait,
        })
    }
}

/// Name fragments of frozen parameters (`model.{i}.` per frozen layer, and always `.dfl`).
fn frozen_prefixes(freeze: &Freeze) -> Vec<String> {
    match freeze {
        Freeze::None => optim::freeze_layer_names::<usize>(&[]),
        Freeze::First(n) => optim::freeze_layer_names(&(0..*n).collect::<Vec<_>>()),
        Freeze::Layers(l) => optim::freeze_layer_names(l),
    }
}

/// The checkpoint a run resumes from: an explicit one, or (resume=True or auto-resume) the run
/// folder's own `weights/last.safetensors`.
fn resume_path(req: &TrainRequest, hyp: &Hyp, save_dir: &Path) -> Result<Option<PathBuf>> {
    let last_path = save_dir.join("weights").join("last.safetensors");
    Ok(match &req.resume_from {
        Some(p) => Some(p.clone()),
        None if hyp.resume => Some(last_path.clone())
            .filter(|p| p.is_file())
            .ok_or_else(|| {
                Error::config("resume=True but the run folder has no weights/last.safetensors")
                    .with_file(&last_path)
                    .with_hint("pass the checkpoint explicitly (--resume PATH) or start a new run with resume: False")
            })
            .map(Some)?,
        None if req.auto_resume && last_path.is_file() => Some(last_path),
        None => None,
    })
}

/// The MLflow run of the unfinished training that `req` will resume, if its checkpoint names
/// one: the step attaches to it, so a killed-and-resumed step continues the same MLflow run.
/// Any problem with the checkpoint gives None here; [`train`] reports it.
pub fn resumable_mlflow_run(req: &TrainRequest) -> Option<String> {
    let save_dir = resolve_save_dir(req, &req.hyp).ok()?;
    let path = resume_path(req, &req.hyp, &save_dir).ok()??;
    let state = checkpoint::read_state(&path).ok()??;
    state.mlflow_run_id.filter(|_| !state.finished)
}

/// Which layers `prefixes` freeze as a whole (`model.{i}.`), whose BatchNorm ultralytics'
/// `_model_train` puts in eval mode; and the entries that name only part of a layer
/// (`model.23.cv2.`), whose BatchNorm kubeyolo leaves in train mode.
fn frozen_layers(prefixes: &[String], n_layers: usize) -> (Vec<bool>, Vec<String>) {
    let mut whole = vec![false; n_layers];
    let mut partial = Vec::new();
    for p in prefixes.iter().filter(|p| p.starts_with("model.")) {
        let rest = &p["model.".len()..];
        match rest.strip_suffix('.').and_then(|i| i.parse::<usize>().ok()) {
            Some(i) if i < n_layers => whole[i] = true,
            Some(_) => {}
            None => partial.push(p.trim_end_matches('.').to_string()),
        }
    }
    (whole, partial)
}

/// The run folder: explicit, or `{project}/{name}` under the data root, incremented unless
/// `exist_ok` (ultralytics `get_save_dir` + `increment_path`: train, train2, train3, …).
fn resolve_save_dir(req: &TrainRequest, hyp: &Hyp) -> Result<PathBuf> {
    let under = |p: &Path| crate::root::under(&req.data_root, p);
    if let Some(d) = &req.save_dir {
        return Ok(under(d));
    }
    if let Some(r) = &req.resume_from {
        // …/run/weights/last.safetensors → …/run
        if let Some(run) = r.parent().and_then(|w| w.parent()) {
            return Ok(run.to_path_buf());
        }
    }
    let project = under(Path::new(hyp.project.as_deref().unwrap_or("runs/detect")));
    let name = hyp.name.clone().unwrap_or_else(|| "train".into());
    Ok(increment_dir(&project, &name, hyp.exist_ok || hyp.resume))
}

/// ultralytics' `get_save_dir`: `project/name`, or the first free `project/name2`, `name3`, ...
/// unless `reuse` (exist_ok / resume).
pub fn increment_dir(project: &Path, name: &str, reuse: bool) -> PathBuf {
    let base = project.join(name);
    if reuse || !base.exists() {
        return base;
    }
    (2..)
        .map(|n| project.join(format!("{name}{n}")))
        .find(|p| !p.exists())
        .expect("an unused folder name always exists")
}

/// The final validation's plots, named as ultralytics names them in the run folder.
fn write_val_plots(res: &ValResult, dir: &Path) -> Result<()> {
    use crate::plot::curves;
    let m = &res.metrics;
    curves::pr_curve(&dir.join("BoxPR_curve.png"), m)?;
    curves::f1_curve(&dir.join("BoxF1_curve.png"), m)?;
    curves::confusion_matrix(&dir.join("confusion_matrix.png"), &res.confusion, &m.names, false)?;
    curves::confusion_matrix(&dir.join("confusion_matrix_normalized.png"), &res.confusion, &m.names, true)?;
    Ok(())
}

/// Per-epoch MLflow metrics, ultralytics' names with the parentheses MLflow rejects removed
/// (as its MLflow callback does).
fn log_epoch(tracker: &Tracker, row: &EpochRow, epoch: usize) {
    if !tracker.is_enabled() {
        return;
    }
    let vals = row.values();
    let mut m: Vec<(String, f64)> =
        results::COLUMNS.iter().zip(vals).map(|(k, v)| (k.replace(['(', ')'], ""), v)).collect();
    m.push(("system/rss_gb".into(), crate::device::rss_gb()));
    tracker.log_metrics(&m, epoch as i64 + 1);
}

/// The run's arguments: `args.yaml` in the run folder, and the checkpoints' `train_args` (what a
/// resume reads back). Written at setup and again when the out-of-memory retry changes `batch`.
fn record_args(save_dir: &Path, req: &TrainRequest, hyp: &Hyp, imgsz: usize, meta: &mut CheckpointMeta) -> Result<()> {
    let args_yaml =
        format!("model: {}\ndata: {}\n{}", req.model.output_value(), req.data_yaml.display(), hyp.to_yaml());
    crate::files::write_atomic(&save_dir.join("args.yaml"), args_yaml.as_bytes())?;
    meta.train_args = serde_json::json!({
        "yaml": hyp.to_yaml(),
        "model": req.model.output_value(),
        "data": req.data_yaml.display().to_string(),
        "imgsz": imgsz,
    });
    Ok(())
}

/// `batch: -1` or a memory fraction: ultralytics' AutoBatch on CUDA ([`autobatch`]), probing at
/// the largest multi-scale size with the most object slots of any training image (labels × 4
/// for mosaic, from the train split's scan, as ultralytics' `DetectionTrainer.auto_batch`);
/// the default 16 with a warning on the CPU.
fn auto_batch(
    model: &YoloModel,
    varmap: &VarMap,
    device: &Device,
    scan: &TrainDataset,
    multi_scale: &MultiScale,
    cfg: &BatchCfg,
) -> Result<usize> {
    let fraction = autobatch::fraction_of(cfg);
    let imgsz = multi_scale.imgsz;
    println!(
        "AutoBatch: Computing optimal batch size for imgsz={imgsz} at {:.1}% GPU memory utilization.",
        fraction * 100.0
    );
    if !device.is_cuda() {
        eprintln!("warning: AutoBatch: intended for GPU devices, using default batch-size {}", autobatch::CPU_BATCH);
        return Ok(autobatch::CPU_BATCH);
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (model, varmap, scan);
        Err(Error::internal("a CUDA device without the `cuda` feature"))
    }
    #[cfg(feature = "cuda")]
    {
        let max_num_obj = (0..scan.len()).map(|i| scan.labels(i).len()).max().unwrap_or(0) * 4;
        let spec = autobatch::ProbeSpec {
            imgsz: multi_scale.max_size(),
            strides: model.strides.clone(),
            nc: model.nc,
            max_num_obj,
            dataset_size: scan.len(),
        };
        let (mem, probes) = autobatch::probe_cuda(model, varmap, device, &spec)?;
        println!("AutoBatch: {:.2}G total, {:.2}G available to this process", mem.total_gib, mem.available_gib);
        let c = autobatch::choose(&probes, mem, fraction, scan.len())?;
        println!(
            "AutoBatch: Using batch-size {} for CUDA {:.2}G/{:.2}G ({:.0}%)",
            c.batch,
            c.predicted_fraction * mem.total_gib,
            mem.total_gib,
            c.predicted_fraction * 100.0
        );
        Ok(c.batch)
    }
}
