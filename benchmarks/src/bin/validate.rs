//! Benchmark: validation throughput (images/s) of kubeyolo's validator against ultralytics'
//! `model.val()` on the same weights, data and CPU, in the same run.
//!
//! Why: train validates every epoch and `test` once; both must not be slower than the
//! ultralytics pods they replace. The Rust side times [`ValSet::evaluate`] (preprocessing,
//! forward, NMS, matching, AP — with decoded images cached, as train uses it, and uncached, as
//! the test step does); the Python side (`benchmarks/validate_torch.py`) times
//! `DetectionValidator` over the same split with the same settings. Each side runs `--repeats`
//! times, alternating; medians are reported with the ratio.
//!
//! `validate synth` also writes the synthetic dataset (kubeyolo's generator) for the
//! ultralytics fixture script (`scripts/fixtures/make_val_parity.py`) and this benchmark.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::{Parser, Subcommand};
use kubeyolo::config::dataset::Dataset;
use kubeyolo::data::synth::{self, SynthSpec};
use kubeyolo::eval::validator::{ValConfig, ValSet};
use kubeyolo_bench::median;

#[derive(Parser, Debug)]
#[command(
    about = "Validation images/s: kubeyolo's validator vs ultralytics model.val() (same run); or write a synthetic dataset",
    after_help = "Examples:\n  \
cargo run --release -p kubeyolo-bench --bin validate -- synth --dir /tmp/vsynth --seed 7 --imgsz 128 --rect\n  \
cargo run --release -p kubeyolo-bench --bin validate -- bench --weights tests/fixtures/val_parity/best.pt \\\n    \
--data-yaml /tmp/vsynth/data-synth.yaml --split test --imgsz 128 --python .venvs/ultralytics/bin/python"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a synthetic dataset (kubeyolo::data::synth) into --dir.
    Synth {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 128)]
        imgsz: u32,
        #[arg(long, default_value_t = 4)]
        nc: usize,
        /// Images in train, val, test.
        #[arg(long, num_args = 3, default_values_t = [160, 32, 48])]
        images: Vec<usize>,
        /// Non-square images (exercise letterboxing).
        #[arg(long)]
        rect: bool,
        /// JPEG images (the image crate's encoder, quality 90) instead of PNG.
        #[arg(long)]
        jpeg: bool,
    },
    /// Time the validator (and ultralytics with --python).
    Bench {
        #[arg(long)]
        weights: PathBuf,
        #[arg(long = "data-yaml")]
        data_yaml: PathBuf,
        #[arg(long, default_value = "test")]
        split: String,
        #[arg(long, default_value_t = 128)]
        imgsz: usize,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Python with ultralytics (e.g. .venvs/ultralytics/bin/python); omit for Rust only.
        #[arg(long)]
        python: Option<PathBuf>,
    },
}

/// The spec the fixture script and the e2e test share (change both together).
pub fn spec(seed: u64, imgsz: u32, nc: usize, images: [usize; 3], rect: bool) -> SynthSpec {
    SynthSpec {
        images_per_split: images,
        imgsz,
        nc,
        max_objects: 4,
        background_fraction: 0.1,
        rect,
        seed,
        jpeg: false,
        yaml_name: "data-synth.yaml".into(),
    }
}

fn main() -> kubeyolo::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Synth { dir, seed, imgsz, nc, images, rect, jpeg } => {
            let spec = SynthSpec { jpeg, ..spec(seed, imgsz, nc, [images[0], images[1], images[2]], rect) };
            let yaml = synth::generate(&dir, &spec)?;
            println!("{}", yaml.display());
        }
        Cmd::Bench { weights, data_yaml, split, imgsz, batch, repeats, python } => {
            let device = candle_core::Device::Cpu;
            kubeyolo::nn::cpu::tune_cpu_runtime(None);
            let lm = kubeyolo::nn::weights::load_model(&weights, &device)?;
            let root = data_yaml.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
            let ds = Dataset::load(&data_yaml, &root)?;
            let threads = rayon::current_num_threads();
            println!(
                "validation benchmark: {} on '{split}' of {}, imgsz {imgsz}, batch {batch}, {threads} threads",
                weights.display(),
                data_yaml.display()
            );
            let (mut cached, mut uncached, mut torch) = (Vec::new(), Vec::new(), Vec::new());
            let mut n = 0;
            let mut map = (0.0, 0.0);
            let mut torch_pass = Vec::new();
            // Warm-up (the Python side warms up too): first-touch of buffers, thread pool start.
            ValSet::load(&ds, &split, &lm.names, &ValConfig { imgsz, batch, ..ValConfig::default() })?
                .evaluate(&lm.model, &device)?;
            for r in 0..repeats {
                for cache in [true, false] {
                    let cfg = ValConfig {
                        imgsz,
                        batch,
                        cache_bytes: if cache { 1 << 30 } else { 0 },
                        ..ValConfig::default()
                    };
                    let t = Instant::now();
                    let set = ValSet::load(&ds, &split, &lm.names, &cfg)?;
                    let t_load = t.elapsed().as_secs_f64();
                    let t = Instant::now();
                    let res = set.evaluate(&lm.model, &device)?;
                    let t_eval = t.elapsed().as_secs_f64();
                    n = set.len();
                    map = (res.metrics.map50, res.metrics.map50_95);
                    if cache {
                        cached.push(n as f64 / t_eval); // train's per-epoch cost: images already decoded
                    } else {
                        uncached.push(n as f64 / (t_load + t_eval));
                    }
                }
                if let Some(py) = &python {
                    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("validate_torch.py");
                    let out = Command::new(py)
                        .arg(&script)
                        .args([
                            "--weights",
                            &weights.to_string_lossy(),
                            "--data",
                            &data_yaml.to_string_lossy(),
                            "--split",
                            &split,
                        ])
                        .args([
                            "--imgsz",
                            &imgsz.to_string(),
                            "--batch",
                            &batch.to_string(),
                            "--threads",
                            &threads.to_string(),
                        ])
                        .output()
                        .map_err(|e| kubeyolo::Error::io(format!("cannot run {}: {e}", py.display())))?;
                    let text = String::from_utf8_lossy(&out.stdout);
                    let line = text.lines().find(|l| l.starts_with("RESULT ")).ok_or_else(|| {
                        kubeyolo::Error::internal(format!(
                            "validate_torch.py gave no RESULT line:\n{text}\n{}",
                            String::from_utf8_lossy(&out.stderr)
                        ))
                    })?;
                    let v: serde_json::Value =
                        serde_json::from_str(&line[7..]).map_err(|e| kubeyolo::Error::internal(e.to_string()))?;
                    torch.push(v["images_per_s"].as_f64().unwrap_or(0.0));
                    torch_pass.push(v["pass_images_per_s"].as_f64().unwrap_or(0.0));
                    if r == 0 {
                        println!(
                            "ultralytics: mAP50 {:.5} mAP50-95 {:.5}",
                            v["map50"].as_f64().unwrap_or(-1.0),
                            v["map"].as_f64().unwrap_or(-1.0)
                        );
                    }
                }
            }
            println!("kubeyolo:    mAP50 {:.5} mAP50-95 {:.5}  ({n} images)", map.0, map.1);
            let c = median(&cached);
            let u = median(&uncached);
            println!("kubeyolo validator, images decoded once (train, per epoch): {c:.1} images/s");
            println!("kubeyolo validator, from files (test step):                {u:.1} images/s");
            if !torch.is_empty() {
                let t = median(&torch);
                let tp = median(&torch_pass);
                println!("ultralytics model.val(), whole call:                       {t:.1} images/s");
                println!("ultralytics model.val(), the pass (its per-image speed):   {tp:.1} images/s");
                println!("ratio kubeyolo/ultralytics: {:.2} (pass: decoded once vs per-image speed), {:.2} (whole: from files vs whole call); > 1 = kubeyolo faster", c / tp, u / t);
                // The repeats alternate the two sides: each repeat's own ratio shows the VM's drift.
                let paired = |k: &[f64], p: &[f64]| {
                    k.iter().zip(p).map(|(k, p)| format!("{:.2}", k / p)).collect::<Vec<_>>().join(", ")
                };
                println!(
                    "per-repeat ratios: pass {}; whole {}",
                    paired(&cached, &torch_pass),
                    paired(&uncached, &torch)
                );
            }
        }
    }
    Ok(())
}
