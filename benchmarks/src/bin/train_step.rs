//! Benchmark: one full yolov8n training step (forward, loss, backward, optimizer) in kubeyolo
//! against the same step in PyTorch + ultralytics on the same machine, in the same run.
//!
//! Why: issue 7 — training on CPU must be at least as fast per image as PyTorch. Both sides run
//! the same network (ultralytics `DetectionModel('yolov8n.yaml')` vs kubeyolo's `YoloModel` from
//! the same yaml), batch, image size, one real batch (kubeyolo's loader with ultralytics' default
//! augmentation, mosaic included, over a generated synthetic dataset; images and targets written
//! to an npz that the PyTorch side loads), the real YOLOv8 loss (kubeyolo's `DetectionLoss` vs ultralytics
//! 8.4's `v8DetectionLoss`, task-aligned assignment included) and ultralytics' `optimizer_step`:
//! gradient-norm clip to 10, SGD (Nesterov, momentum 0.937, weight decay 5e-4 on conv weights
//! only, ultralytics' three parameter groups) and the EMA update. Rust and PyTorch
//! runs alternate `--repeats` times and medians are reported, because the machine is shared and
//! noisy. Also prints the step's FLOPs, the achieved GFLOP/s and the machine's measured
//! single-precision GEMM peak (gemm crate, all threads), so the ratio has a ceiling to compare to.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clap::Parser;
use std::sync::Arc;

use candle_core::Var;
use kubeyolo::config::dataset::Dataset;
use kubeyolo::config::hyp::Hyp;
use kubeyolo::config::model_yaml::ModelYaml;
use kubeyolo::data::augment::AugmentConfig;
use kubeyolo::data::dataset::{DatasetOptions, TrainDataset};
use kubeyolo::data::loader::{Batch, Loader, LoaderOptions};
use kubeyolo::data::synth::{self, SynthSpec};
use kubeyolo::data::Targets;
use kubeyolo::nn::model::YoloModel;
use kubeyolo::train::ema::ModelEma;
use kubeyolo::train::loss::{DetectionLoss, LossGains};
use kubeyolo::train::optim::{clip_grad_norm, Optimizer, OptimizerKind};
use kubeyolo_bench::{gemm_peak, median, write_targets_npz};

#[derive(Parser, Debug)]
#[command(
    about = "Time a yolov8n training step in kubeyolo and in PyTorch (same run), print the ratio",
    long_about = "Times a full yolov8n training step (forward, YOLOv8 loss, backward, gradient clip, SGD \
step, EMA update) on one real augmented batch of a generated synthetic dataset after warm-up, in kubeyolo and — unless --no-torch — \
in PyTorch with ultralytics' DetectionModel and v8DetectionLoss (benchmarks/train_step_torch.py, run with \
--python). The two sides \
alternate --repeats times; medians are reported with the ratio kubeyolo/PyTorch (< 1 = kubeyolo faster).",
    after_help = "Example (release build, both sides, 2 threads):\n  \
cargo run --release -p kubeyolo-bench --bin train_step -- --batch 16 --imgsz 320 --threads 2 \\\n    \
--python .venvs/ultralytics/bin/python --repeats 3"
)]
struct Args {
    /// Images per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Square input size (multiple of 32).
    #[arg(long, default_value_t = 320)]
    imgsz: usize,
    /// Model yaml name (a builtin such as yolov8n.yaml).
    #[arg(long, default_value = "yolov8n.yaml")]
    model: String,
    /// Number of classes.
    #[arg(long, default_value_t = 80)]
    nc: usize,
    /// Objects per synthetic source image, 1..=N (mosaic puts about 2.5× that many in a
    /// training image).
    #[arg(long, default_value_t = 6)]
    objects: usize,
    /// Untimed steps before timing (each side, each repeat).
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed steps per repeat (the median step is reported).
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// How many times to alternate kubeyolo and PyTorch runs.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    /// CPU threads for both sides (rayon pool / torch.set_num_threads).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Python interpreter with ultralytics + torch installed.
    #[arg(long, default_value = ".venvs/ultralytics/bin/python")]
    python: PathBuf,
    /// The PyTorch side's script.
    #[arg(long, default_value = "benchmarks/train_step_torch.py")]
    torch_script: PathBuf,
    /// Skip the PyTorch side.
    #[arg(long)]
    no_torch: bool,
    /// Print forward / loss / backward / optimizer (clip + step + EMA) times of every timed step.
    #[arg(long)]
    phases: bool,
    /// Alternate kubeyolo's timed steps with the direct AVX-512 conv kernels on and off (every
    /// conv on the gemm crate) and report both medians; the on-steps are the headline.
    #[arg(long)]
    ab_direct: bool,
}

struct Step {
    total: f64,
    phases: [f64; 4],
}

struct Rust {
    model: YoloModel,
    opt: Optimizer,
    ema: ModelEma,
    loss: DetectionLoss,
    trainable: Vec<Var>,
    x: Tensor,
    targets: Targets,
}

/// ultralytics' gradient-norm clip (`optimizer_step`).
const MAX_GRAD_NORM: f64 = 10.0;

impl Rust {
    fn new(a: &Args, batch: &Batch) -> kubeyolo::Result<Self> {
        let yaml =
            ModelYaml::builtin(&a.model).ok_or_else(|| kubeyolo::Error::usage(format!("unknown model {}", a.model)))?;
        let cpu = &Device::Cpu;
        let varmap = VarMap::new();
        let model = YoloModel::new(&yaml, a.nc, VarBuilder::from_varmap(&varmap, DType::F32, cpu))?;
        model.seed_init(&varmap, 0)?;
        let ema_vm = VarMap::new();
        YoloModel::new(&yaml, a.nc, VarBuilder::from_varmap(&ema_vm, DType::F32, cpu))?;
        let ema = ModelEma::new(&varmap, ema_vm, 0)?;
        // ultralytics defaults: SGD lr0 0.01, momentum 0.937, weight_decay 5e-4.
        let opt = Optimizer::from_varmap(OptimizerKind::Sgd, &varmap, 0.01, 0.937, 5e-4)?;
        let trainable = opt.trainable_vars();
        let loss = DetectionLoss::new(&model, LossGains::default(), None);
        let x = batch.to_tensor(cpu)?;
        Ok(Rust { model, opt, ema, loss, trainable, x, targets: batch.targets.clone() })
    }

    fn step(&mut self) -> kubeyolo::Result<Step> {
        let t0 = Instant::now();
        let out = self.model.forward_train(&self.x)?;
        let t1 = Instant::now();
        let loss = self.loss.compute(&out, &self.targets)?.loss;
        let t2 = Instant::now();
        let mut grads = loss.backward()?;
        let t3 = Instant::now();
        clip_grad_norm(&mut grads, &self.trainable, MAX_GRAD_NORM)?;
        self.opt.step(&grads)?;
        self.ema.update()?;
        let t4 = Instant::now();
        let d = |a: Instant, b: Instant| (b - a).as_secs_f64();
        Ok(Step { total: d(t0, t4), phases: [d(t0, t1), d(t1, t2), d(t2, t3), d(t3, t4)] })
    }
}

/// The first training batch of a synthetic dataset generated in `dir` (mosaic epoch, seed 0).
fn real_batch(a: &Args, dir: &std::path::Path) -> kubeyolo::Result<Batch> {
    let spec = SynthSpec {
        images_per_split: [a.batch * 4, 4, 0],
        imgsz: a.imgsz as u32,
        nc: a.nc,
        max_objects: a.objects,
        background_fraction: 0.05,
        ..SynthSpec::default()
    };
    let yaml = synth::generate(dir, &spec)?;
    let ds = Dataset::load(&yaml, dir)?;
    let hyp = Hyp::default();
    let opts = DatasetOptions {
        imgsz: a.imgsz,
        augment: true,
        rect: false,
        cache: hyp.cache,
        fraction: hyp.fraction,
        single_cls: false,
        stride: 32,
        batch: a.batch,
    };
    let set = Arc::new(TrainDataset::load(&ds, "train", &opts)?);
    let loader = Loader::new(
        set,
        LoaderOptions {
            batch: a.batch,
            workers: a.threads,
            seed: 0,
            shuffle: true,
            augment: AugmentConfig::from_hyp(&hyp, a.imgsz),
        },
    );
    let batch =
        loader.epoch(0, 0, true).next().ok_or_else(|| kubeyolo::Error::internal("the loader gave no batch"))??;
    assert_eq!((batch.shape.1, batch.shape.2), (a.imgsz, a.imgsz), "the loader's batch must be imgsz square");
    Ok(batch)
}

/// Runs the PyTorch script once on the batch in `npz`; returns its median seconds per step.
fn torch_run(a: &Args, npz: &std::path::Path) -> Result<f64, String> {
    let out = Command::new(&a.python)
        .arg(&a.torch_script)
        .arg("--batch-npz")
        .arg(npz)
        .args(["--batch", &a.batch.to_string(), "--imgsz", &a.imgsz.to_string(), "--threads", &a.threads.to_string()])
        .args(["--warmup", &a.warmup.to_string(), "--iters", &a.iters.to_string(), "--model", &a.model])
        .args(["--nc", &a.nc.to_string()])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", a.python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("TORCH_STEP_SECONDS ") {
            return rest.trim().parse::<f64>().map_err(|e| format!("bad torch output {rest}: {e}"));
        }
    }
    Err(format!("torch script failed ({}): {}\n{}", out.status, stdout, String::from_utf8_lossy(&out.stderr)))
}

fn main() {
    let a = Args::parse();
    if let Err(e) = run(&a) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(a: &Args) -> kubeyolo::Result<()> {
    kubeyolo::nn::cpu::tune_cpu_runtime(Some(a.threads));
    let peak = gemm_peak(a.threads);
    println!("machine: {} threads, sgemm 2048³ peak {:.1} GFLOP/s (gemm crate)", a.threads, peak);

    let dir = tempfile::tempdir().map_err(|e| kubeyolo::Error::io(format!("temp dir: {e}")))?;
    let batch = real_batch(a, &dir.path().join("data"))?;
    let npz = dir.path().join("batch.npz");
    write_targets_npz(&npz, &batch.targets, (a.imgsz, a.imgsz), &[("img", &batch.to_tensor(&Device::Cpu)?)])?;
    let mut rust = Rust::new(a, &batch)?;
    let fwd_gflop_img = rust.model.summary(a.imgsz).gflops;
    // Training ≈ 3 × forward: conv forward, input gradient and weight gradient have equal FLOPs
    // (thop counting: conv MACs + 4 per BatchNorm element, × 2).
    let step_gflop = 3.0 * fwd_gflop_img * a.batch as f64;
    println!(
        "{} imgsz {} batch {} ({:.1} targets/image): forward {:.2} GFLOP/image, step ≈ 3× forward = {:.1} GFLOP",
        a.model,
        a.imgsz,
        a.batch,
        rust.targets.len() as f64 / a.batch as f64,
        fwd_gflop_img,
        step_gflop
    );

    let (mut rust_steps, mut torch_steps, mut pair_ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut all_steps, mut gemm_only) = (Vec::new(), Vec::new());
    for r in 0..a.repeats {
        for _ in 0..a.warmup {
            rust.step()?;
        }
        let mut times = Vec::new();
        for i in 0..a.iters {
            if a.ab_direct {
                kubeyolo::nn::cpu::direct::set_enabled(false);
                let s = rust.step()?;
                gemm_only.push(s.total);
                println!(
                    "  kubeyolo repeat {r} step {i}, direct kernels off: {:.3} s (forward {:.3}, backward {:.3})",
                    s.total, s.phases[0], s.phases[2]
                );
                kubeyolo::nn::cpu::direct::set_enabled(true);
            }
            let s = rust.step()?;
            if a.phases {
                println!(
                    "  kubeyolo repeat {r} step {i}: {:.3} s (forward {:.3}, loss {:.3}, backward {:.3}, clip+optimizer+EMA {:.3})",
                    s.total, s.phases[0], s.phases[1], s.phases[2], s.phases[3]
                );
            }
            times.push(s.total);
            all_steps.push(s.total);
        }
        let m = median(&mut times);
        println!("kubeyolo repeat {r}: {:.3} s/step, {:.4} s/image", m, m / a.batch as f64);
        rust_steps.push(m);
        if !a.no_torch {
            match torch_run(a, &npz) {
                Ok(t) => {
                    println!(
                        "pytorch  repeat {r}: {:.3} s/step, {:.4} s/image (ratio this repeat {:.2})",
                        t,
                        t / a.batch as f64,
                        m / t
                    );
                    torch_steps.push(t);
                    pair_ratios.push(m / t);
                }
                Err(e) => {
                    println!("pytorch  repeat {r}: FAILED: {e}");
                }
            }
        }
    }
    let rs = median(&mut rust_steps);
    println!(
        "kubeyolo: {:.4} s/image (median of {} repeats), {:.1} GFLOP/s achieved = {:.0}% of sgemm peak",
        rs / a.batch as f64,
        a.repeats,
        step_gflop / rs,
        100.0 * step_gflop / rs / peak
    );
    if a.ab_direct {
        let (on, off) = (median(&mut all_steps), median(&mut gemm_only));
        println!("kubeyolo step with direct kernels {on:.3} s, gemm only {off:.3} s (medians of {} alternating steps): {:.3}x", all_steps.len(), on / off);
    }
    if !torch_steps.is_empty() {
        let ts = median(&mut torch_steps);
        println!("pytorch : {:.4} s/image (median), {:.1} GFLOP/s achieved", ts / a.batch as f64, step_gflop / ts);
        println!("ratio kubeyolo/pytorch time per image: {:.2} (≤ 1.0 = kubeyolo at least as fast)", rs / ts);
        // Each repeat's two runs are back to back, so they saw similar machine load.
        let best = pair_ratios.iter().cloned().fold(f64::INFINITY, f64::min);
        let worst = pair_ratios.iter().cloned().fold(0.0, f64::max);
        println!("per-repeat ratios: median {:.2}, range {:.2}–{:.2}", median(&mut pair_ratios), best, worst);
    }
    Ok(())
}
