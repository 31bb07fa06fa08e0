//! Benchmark: training-sample preparation (load + mosaic + affine + HSV + flip + collate),
//! images/s at imgsz 640, kubeyolo's loader on 1 and 2 threads vs ultralytics'
//! `YOLODataset.__getitem__` + `collate_fn` (`benchmarks/loader_torch.py`, same images, same
//! default hyper-parameters, same CPU, same run).
//!
//! Why: the trainer must not wait for data. On a 2-core pod the loader shares the cores with
//! the training step, so per-thread throughput is what counts.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use kubeyolo::config::dataset::Dataset;
use kubeyolo::config::hyp::{Cache, Fraction};
use kubeyolo::data::augment::AugmentConfig;
use kubeyolo::data::dataset::{DatasetOptions, TrainDataset};
use kubeyolo::data::loader::{Loader, LoaderOptions};
use kubeyolo::data::synth::{self, SynthSpec};

#[derive(Parser, Debug)]
#[command(
    about = "Training-sample preparation images/s: kubeyolo's loader vs ultralytics YOLODataset (same run)",
    after_help = "Example:\n  cargo run --release -p kubeyolo-bench --bin loader -- --python .venvs/ultralytics/bin/python"
)]
struct Args {
    /// Dataset folder (64 synthetic 640 px JPEGs are written there when it is empty).
    #[arg(long, default_value = "/tmp/kubeyolo-loader-bench")]
    dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    images: usize,
    #[arg(long, default_value_t = 640)]
    imgsz: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Epochs over the images per measurement.
    #[arg(long, default_value_t = 3)]
    epochs: usize,
    /// Python with ultralytics, to run benchmarks/loader_torch.py on the same images.
    #[arg(long)]
    python: Option<PathBuf>,
}

fn cfg(imgsz: usize) -> AugmentConfig {
    // ultralytics' default.yaml values.
    AugmentConfig {
        imgsz,
        mosaic: 1.0,
        mixup: 0.0,
        cutmix: 0.0,
        copy_paste: 0.0,
        degrees: 0.0,
        translate: 0.1,
        scale: 0.5,
        shear: 0.0,
        perspective: 0.0,
        hsv_h: 0.015,
        hsv_s: 0.7,
        hsv_v: 0.4,
        fliplr: 0.5,
        flipud: 0.0,
        bgr: 0.0,
    }
}

fn main() -> kubeyolo::Result<()> {
    let a = Args::parse();
    // The allocator settings the train step runs with (freed buffers kept for reuse, so the
    // per-sample canvases are not page-faulted and zeroed by the kernel each time).
    kubeyolo::nn::cpu::tune_cpu_runtime(Some(2));
    let yaml = a.dir.join("data-synth.yaml");
    if !yaml.exists() {
        let spec = SynthSpec {
            images_per_split: [a.images, 2, 0],
            imgsz: a.imgsz as u32,
            jpeg: true,
            seed: 3,
            ..SynthSpec::default()
        };
        synth::generate(&a.dir, &spec)?;
    }
    let ds = Dataset::load(&yaml, &a.dir)?;
    let opts = DatasetOptions {
        imgsz: a.imgsz,
        augment: true,
        rect: false,
        cache: Cache::Off,
        fraction: Fraction::Ratio(1.0),
        single_cls: false,
        stride: 32,
        batch: a.batch,
    };
    let t = Arc::new(TrainDataset::load(&ds, "train", &opts)?);
    println!(
        "dataset: {} images of {} px (JPEG), batch {}, {} epochs per measurement",
        t.len(),
        a.imgsz,
        a.batch,
        a.epochs
    );
    for threads in [1usize, 2] {
        // workers = prep threads; the consuming thread only receives batches.
        let l = Loader::new(
            t.clone(),
            LoaderOptions { batch: a.batch, workers: threads, seed: 0, shuffle: true, augment: cfg(a.imgsz) },
        );
        let start = Instant::now();
        let mut n = 0;
        for e in 0..a.epochs {
            for b in l.epoch(e, 0, true) {
                n += b?.shape.0;
            }
        }
        let s = start.elapsed().as_secs_f64();
        println!("kubeyolo {threads} thread(s): {:.1} img/s ({n} images in {s:.2} s)", n as f64 / s);
    }
    if let Some(py) = a.python {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("loader_torch.py");
        let st = Command::new(py)
            .arg(script)
            .args(["--images", &a.dir.join("images/train").to_string_lossy(), "--imgsz", &a.imgsz.to_string()])
            .args(["--batch", &a.batch.to_string(), "--epochs", &a.epochs.to_string()])
            .status()
            .map_err(|e| kubeyolo::Error::io(format!("cannot run python: {e}")))?;
        if !st.success() {
            return Err(kubeyolo::Error::internal("loader_torch.py failed"));
        }
    }
    Ok(())
}
