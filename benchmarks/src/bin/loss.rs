//! Benchmark: the YOLOv8 detection loss (assignment, forward and backward down to the head
//! outputs) in kubeyolo against ultralytics 8.4's `v8DetectionLoss` on the same inputs.
//!
//! Why: issue 12 — the loss must cost ≤ 5% of a yolov8n training step at batch 16, imgsz 640.
//! Both sides get the same random head outputs (B, 64, 8400) / (B, nc, 8400) and the same random
//! targets (written to an npz that benchmarks/loss_torch.py loads), time `compute` +
//! `backward` (PyTorch: `criterion(preds, batch)` + `loss.sum().backward()`), alternate
//! `--repeats` times and report medians; the loss items of both sides are printed and compared.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use clap::Parser;
use kubeyolo::nn::blocks::HeadOutput;
use kubeyolo::train::loss::{DetectionLoss, LossGains};
use kubeyolo_bench::{median, random_targets, write_targets_npz, Lcg};

#[derive(Parser, Debug)]
#[command(
    about = "Time the YOLOv8 detection loss (forward + backward) in kubeyolo and in ultralytics, same inputs",
    after_help = "Example (release build, both sides, 2 threads):\n  \
cargo run --release -p kubeyolo-bench --bin loss -- --batch 16 --imgsz 640 --nc 80 --targets 10 --threads 2"
)]
struct Args {
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Square input size (multiple of 32).
    #[arg(long, default_value_t = 640)]
    imgsz: usize,
    #[arg(long, default_value_t = 80)]
    nc: usize,
    /// Boxes per image.
    #[arg(long, default_value_t = 10)]
    targets: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Timed iterations per repeat (median reported).
    #[arg(long, default_value_t = 5)]
    iters: usize,
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value = ".venvs/ultralytics/bin/python")]
    python: PathBuf,
    #[arg(long, default_value = "benchmarks/loss_torch.py")]
    torch_script: PathBuf,
    #[arg(long)]
    no_torch: bool,
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
    let strides = [8.0, 16.0, 32.0];
    let shapes: Vec<(usize, usize)> = strides.iter().map(|&s| (a.imgsz / s as usize, a.imgsz / s as usize)).collect();
    let na: usize = shapes.iter().map(|(h, w)| h * w).sum();
    let mut rng = Lcg(12);
    // Flat (B, C, A) inputs, like ultralytics' preds["boxes"] / preds["scores"].
    let boxes: Vec<f32> = (0..a.batch * 64 * na).map(|_| rng.normal() * 2.5).collect();
    let scores: Vec<f32> = (0..a.batch * a.nc * na).map(|_| rng.normal() * 2.0 - 3.0).collect();
    let t = random_targets(&mut rng, a.batch, a.nc, a.targets);
    let bt = Tensor::from_vec(boxes, (a.batch, 64, na), &Device::Cpu)?;
    let st = Tensor::from_vec(scores, (a.batch, a.nc, na), &Device::Cpu)?;
    let dir = tempfile::tempdir().map_err(|e| kubeyolo::Error::io(format!("temp dir: {e}")))?;
    let npz = dir.path().join("loss_inputs.npz");
    if !a.no_torch {
        write_targets_npz(&npz, &t, (a.imgsz, a.imgsz), &[("boxes", &bt), ("scores", &st)])?;
    }
    // Per-level leaf tensors, as the Detect head hands them to the loss.
    let split = |flat: &Tensor| -> kubeyolo::Result<Vec<Var>> {
        let c = flat.dim(1)?;
        let mut off = 0;
        let mut out = Vec::new();
        for &(h, w) in &shapes {
            out.push(Var::from_tensor(&flat.narrow(2, off, h * w)?.reshape((a.batch, c, h, w))?.contiguous()?)?);
            off += h * w;
        }
        Ok(out)
    };
    let (bv, sv) = (split(&bt)?, split(&st)?);
    let out = HeadOutput {
        box_levels: bv.iter().map(|v| v.as_tensor().clone()).collect(),
        cls_levels: sv.iter().map(|v| v.as_tensor().clone()).collect(),
        strides: strides.to_vec(),
        reg_max: 16,
        nc: a.nc,
    };
    let loss = DetectionLoss::from_parts(a.nc, 16, &strides, LossGains::default(), None);
    println!(
        "batch {} imgsz {} nc {} targets/image {} ({} anchors), {} threads",
        a.batch, a.imgsz, a.nc, a.targets, na, a.threads
    );

    let (mut rs, mut ts, mut fwd) = (Vec::new(), Vec::new(), Vec::new());
    let mut items = [0f32; 3];
    for r in 0..a.repeats {
        let mut times = Vec::new();
        for i in 0..a.warmup + a.iters {
            let t0 = Instant::now();
            let lo = loss.compute(&out, &t)?;
            let t1 = Instant::now();
            let g = lo.loss.backward()?;
            let dt = t0.elapsed().as_secs_f64();
            assert!(g.get(bv[0].as_tensor()).is_some());
            drop(g);
            if i >= a.warmup {
                times.push(dt);
                fwd.push((t1 - t0).as_secs_f64());
            }
            items = lo.items;
        }
        let m = median(&mut times);
        rs.push(m);
        print!("repeat {r}: kubeyolo {:.1} ms", m * 1e3);
        if !a.no_torch {
            let o = Command::new(&a.python)
                .arg(&a.torch_script)
                .arg("--inputs")
                .arg(&npz)
                .args([
                    "--threads",
                    &a.threads.to_string(),
                    "--warmup",
                    &a.warmup.to_string(),
                    "--iters",
                    &a.iters.to_string(),
                ])
                .output()
                .map_err(|e| kubeyolo::Error::io(format!("cannot run {}: {e}", a.python.display())))?;
            let so = String::from_utf8_lossy(&o.stdout);
            let sec = so
                .lines()
                .find_map(|l| l.strip_prefix("TORCH_LOSS_SECONDS "))
                .and_then(|v| v.trim().parse::<f64>().ok());
            let Some(sec) = sec else {
                return Err(kubeyolo::Error::internal(format!(
                    "torch side failed: {so}\n{}",
                    String::from_utf8_lossy(&o.stderr)
                )));
            };
            ts.push(sec);
            print!(", ultralytics {:.1} ms", sec * 1e3);
            if let Some(line) = so.lines().find_map(|l| l.strip_prefix("TORCH_ITEMS ")) {
                if r == 0 {
                    print!(" (items ours {:?}, theirs [{}])", items, line.trim());
                }
            }
        }
        println!();
    }
    let (mr, mf) = (median(&mut rs), median(&mut fwd));
    println!("kubeyolo median {:.1} ms (compute {:.1} ms, backward {:.1} ms)", mr * 1e3, mf * 1e3, (mr - mf) * 1e3);
    if !ts.is_empty() {
        let mt = median(&mut ts);
        println!("ultralytics median {:.1} ms; ratio kubeyolo/ultralytics {:.2}", mt * 1e3, mr / mt);
    }
    Ok(())
}
