//! Benchmark: CPU inference ms/image of kubeyolo's `predict` against ultralytics'
//! `YOLO.predict()` — same weights (a yolov8n .pt the Python side writes), same image, same
//! machine, same run.
//!
//! Why: the test step and users' prediction run on CPU pods; kubeyolo must not be slower than the
//! ultralytics pod it replaces. Both sides report preprocess (letterbox, tensor), inference
//! (forward + box decoding) and postprocess (NMS, mapping boxes back), as ultralytics'
//! `Results.speed` splits them.
//!
//! The two sides alternate in blocks of `--runs` predictions, `--repeats` times, the Python side
//! kept alive between its blocks (it answers requests on stdin): the shared VM's speed drifts by
//! up to 1.5× over seconds, so the headline is the median of the per-block paired ratios, and their
//! range shows the noise. The block order flips every repeat so a trend favours neither side.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use candle_core::Device;
use clap::Parser;
use kubeyolo::nn::fused::EvalNet;
use kubeyolo::nn::predict::{predict_image, PredictConfig};
use kubeyolo_bench::{gemm_gflops, gemm_peak, median};

#[derive(Parser, Debug)]
#[command(
    about = "CPU inference ms/image: kubeyolo predict vs ultralytics YOLO.predict (same weights, image, run)",
    after_help = "Example:\n  cargo run --release -p kubeyolo-bench --bin inference -- --python .venvs/ultralytics/bin/python --imgsz 320,640"
)]
struct Args {
    /// Python with ultralytics (writes the yolov8n weights and times the ultralytics side).
    #[arg(long, default_value = ".venvs/ultralytics/bin/python")]
    python: PathBuf,
    /// Existing .pt to time instead of a fresh yolov8n (nc=80).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Inference sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [320, 640])]
    imgsz: Vec<usize>,
    /// Predictions per block (each side), and the profile's pass count.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Blocks per side, alternating kubeyolo and ultralytics.
    #[arg(long, default_value_t = 6)]
    repeats: usize,
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// torch threads on the ultralytics side (candle uses every core).
    #[arg(long, default_value_t = num_threads())]
    threads: usize,
    /// Also print kubeyolo's per-layer eval times at each size.
    #[arg(long)]
    profile: bool,
    /// Time candle's unfolded eval forward instead of the folded CPU network (`nn::fused`).
    #[arg(long)]
    unfused: bool,
    /// With --profile: alternate each profiled pass with one where the direct AVX-512 conv
    /// kernels are off (every conv on the gemm crate), and print both per-layer medians.
    #[arg(long)]
    ab_direct: bool,
    /// With --profile: alternate passes with the Winograd 3×3 convs forced on and off (off: the
    /// shifted or direct convs), on any CPU.
    #[arg(long, conflicts_with = "ab_direct")]
    ab_winograd: bool,
    /// Winograd 3×3 convs forced on or off for the whole run (default: where the CPU lacks
    /// AVX-512), to compare whole predictions against ultralytics both ways.
    #[arg(long)]
    winograd: Option<bool>,
}

fn num_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn main() {
    let a = Args::parse();
    if let Some(on) = a.winograd {
        kubeyolo::nn::cpu::winograd::set_enabled(on);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // A 640×480 synthetic photo-like image (gradients and blocks), PNG so both decoders agree.
    let img = image::RgbImage::from_fn(640, 480, |x, y| {
        let b = ((x / 80 + y / 60) % 2) as u8 * 60;
        image::Rgb([(x * 255 / 639) as u8 / 2 + b, (y * 255 / 479) as u8 / 2 + b, ((x + y) % 256) as u8 / 2])
    });
    let img_path = dir.path().join("bench.png");
    img.save(&img_path).expect("write image");
    let (weights, make) = match &a.weights {
        Some(w) => (w.clone(), false),
        None => (dir.path().join("yolov8n.pt"), true),
    };

    // ultralytics first (it also writes the weights), kept running to answer block requests.
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("inference_torch.py");
    let mut cmd = Command::new(&a.python);
    cmd.arg(&script).arg("--weights").arg(&weights).arg("--image").arg(&img_path);
    cmd.arg("--warmup").arg(a.warmup.to_string()).arg("--threads").arg(a.threads.to_string());
    if make {
        cmd.arg("--make-weights");
    }
    let mut py = Ultralytics::start(cmd);
    let torch = py.read("READY");

    kubeyolo::nn::cpu::tune_cpu_runtime(Some(a.threads));
    let lm = kubeyolo::nn::weights::load_model(&weights, &Device::Cpu).expect("load weights");
    let net =
        if a.unfused { EvalNet::unfused(&lm.model) } else { EvalNet::new(&lm.model, &Device::Cpu).expect("fold") };
    println!(
        "model: {} ({}), image 640x480, CPU threads: candle {}, torch {}",
        lm.model.summary(640).line(),
        weights.display(),
        num_threads(),
        torch["threads"]
    );
    println!(
        "sgemm ceiling, {} threads (gemm crate): 2048³ {:.1} GFLOP/s; 64×6400×576 (a 3×3 conv at 80×80) {:.1}; 64×6400×64 (one shifted tap) {:.1}",
        a.threads,
        gemm_peak(a.threads),
        gemm_gflops(64, 6400, 576, a.threads),
        gemm_gflops(64, 6400, 64, a.threads)
    );
    println!(
        "ultralytics {} / torch {}",
        torch["ultralytics"].as_str().unwrap_or("?"),
        torch["torch"].as_str().unwrap_or("?")
    );
    println!(
        "| imgsz | kubeyolo pre / infer / post = total ms | ultralytics pre / infer / post = total ms | kubeyolo / ultralytics: median of {} paired blocks (range) |",
        a.repeats
    );
    println!("|---|---|---|---|");
    for &s in &a.imgsz {
        let cfg = PredictConfig { imgsz: s, ..Default::default() };
        for _ in 0..a.warmup {
            predict_image(&net, &lm.names, &img, &cfg, &Device::Cpu).expect("predict");
        }
        let mut parts = [Vec::new(), Vec::new(), Vec::new()];
        let mut tparts = [Vec::new(), Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        for rep in 0..a.repeats {
            let mut ours = || {
                let mut totals = Vec::new();
                for _ in 0..a.runs {
                    let r = predict_image(&net, &lm.names, &img, &cfg, &Device::Cpu).expect("predict");
                    for (p, v) in parts.iter_mut().zip(r.speed_ms) {
                        p.push(v);
                    }
                    totals.push(r.speed_ms.iter().sum::<f64>());
                }
                median(totals)
            };
            let mut theirs = || {
                let r = py.block(s, a.runs);
                let mut totals = vec![0.0; a.runs];
                for (tp, k) in tparts.iter_mut().zip(["preprocess", "inference", "postprocess"]) {
                    let v: Vec<f64> =
                        r[k].as_array().expect("list").iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect();
                    totals.iter_mut().zip(&v).for_each(|(t, x)| *t += x);
                    tp.extend(v);
                }
                median(totals)
            };
            // Idle between blocks so neither side's spinning worker threads eat into the other's.
            let settle = || std::thread::sleep(std::time::Duration::from_millis(50));
            let (k, t) = if rep % 2 == 0 {
                let k = ours();
                settle();
                (k, theirs())
            } else {
                let t = theirs();
                settle();
                (ours(), t)
            };
            settle();
            ratios.push(k / t);
        }
        let k: Vec<f64> = parts.into_iter().map(median).collect();
        let t: Vec<f64> = tparts.into_iter().map(median).collect();
        if a.profile {
            let x = candle_core::Tensor::zeros((1, 3, s, s), candle_core::DType::F32, &Device::Cpu).expect("input");
            // Medians over --runs passes, per layer.
            // With --ab-direct / --ab-winograd, passes alternate with that path off (same
            // process, so both sides see the same machine load).
            let ab: Option<(fn(bool), &str)> = if a.ab_direct {
                Some((kubeyolo::nn::cpu::direct::set_enabled, "gemm only"))
            } else if a.ab_winograd {
                Some((kubeyolo::nn::cpu::winograd::set_enabled, "no winograd"))
            } else {
                None
            };
            let (mut passes, mut without) = (Vec::new(), Vec::new());
            if let Some((set, _)) = ab {
                set(true);
            }
            for run in 0..a.runs {
                // The pair's order flips every run: the second pass of a pair runs on warmer
                // caches and measured 5–10% faster per layer whichever path it took.
                if run % 2 == 0 || ab.is_none() {
                    passes.push(net.profile(&x).expect("profile"));
                }
                if let Some((set, _)) = ab {
                    set(false);
                    without.push(net.profile(&x).expect("profile"));
                    set(true);
                }
                if run % 2 == 1 && ab.is_some() {
                    passes.push(net.profile(&x).expect("profile"));
                }
            }
            let (mut total, mut total_without) = (0.0, 0.0);
            for (k, (i, t, _)) in passes[0].iter().enumerate() {
                let ms = median(passes.iter().map(|p| p[k].2));
                total += ms;
                if let Some((_, off)) = ab {
                    let mw = median(without.iter().map(|p| p[k].2));
                    total_without += mw;
                    eprintln!("  {s}: layer {i:>2} {t:<45} {ms:8.2} ms ({off} {mw:8.2} ms)");
                } else {
                    eprintln!("  {s}: layer {i:>2} {t:<45} {ms:8.2} ms");
                }
            }
            if let Some((_, off)) = ab {
                eprintln!(
                    "  {s}: sum of layer medians {total:.2} ms, {off} {total_without:.2} ms: {:.3}x",
                    total / total_without
                );
            }
            let gflop = lm.model.summary(s).gflops;
            eprintln!(
                "  {s}: sum of layer medians {total:.2} ms for {gflop:.2} GFLOP ({s}x{s}): {:.1} GFLOP/s",
                gflop / total * 1e3
            );
        }
        let (kt, tt): (f64, f64) = (k.iter().sum(), t.iter().sum());
        let (lo, hi) = ratios.iter().fold((f64::INFINITY, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
        println!(
            "| {s} | {:.1} / {:.1} / {:.1} = {:.1} | {:.1} / {:.1} / {:.1} = {:.1} | {:.2}x ({lo:.2}–{hi:.2}) |",
            k[0],
            k[1],
            k[2],
            kt,
            t[0],
            t[1],
            t[2],
            tt,
            median(&ratios)
        );
    }
}

/// The ultralytics side: `inference_torch.py`, alive for the whole run, answering one block of
/// predictions per request line.
struct Ultralytics {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Ultralytics {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("run the ultralytics side");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Ultralytics { child, stdin, stdout }
    }

    /// The json after the next line starting with `tag` (other lines are ultralytics' chatter).
    fn read(&mut self, tag: &str) -> serde_json::Value {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line).expect("read the ultralytics side") == 0 {
                eprintln!("ultralytics side exited ({:?}); its stderr is above", self.child.wait());
                std::process::exit(1);
            }
            if let Some(j) = line.trim_end().strip_prefix(tag) {
                return serde_json::from_str(j.trim_start()).expect("json from the ultralytics side");
            }
        }
    }

    /// Times `runs` predictions at `imgsz`: per-stage lists of ms.
    fn block(&mut self, imgsz: usize, runs: usize) -> serde_json::Value {
        writeln!(self.stdin, "{imgsz} {runs}").and_then(|_| self.stdin.flush()).expect("ask the ultralytics side");
        self.read("RESULT")
    }
}
