//! Benchmark: JPEG decode ms/image of kubeyolo's `load_rgb` (libjpeg-turbo's decoder, portable C)
//! against ultralytics' `imread` (cv2, libjpeg-turbo with SIMD) on the same files, and the `image`
//! crate's decoder (what kubeyolo used before) for reference; also checks that kubeyolo's pixels
//! equal cv2's on these larger images (the parity fixtures are small).
//!
//! Why: every training epoch decodes every image; the decoder must be exact (parity) and not
//! slow the data loader down. Single-threaded medians over `--runs` after one warm-up.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use kubeyolo::data::image::load_rgb;
use kubeyolo_bench::median;

#[derive(Parser, Debug)]
#[command(
    about = "JPEG decode ms/image: kubeyolo load_rgb vs cv2 (ultralytics imread) vs the image crate",
    after_help = "Example:\n  cargo run --release -p kubeyolo-bench --bin decode -- --python .venvs/ultralytics/bin/python"
)]
struct Args {
    /// Python with ultralytics + opencv (writes the JPEGs and times cv2).
    #[arg(long, default_value = ".venvs/ultralytics/bin/python")]
    python: PathBuf,
    #[arg(long, default_value_t = 30)]
    runs: usize,
}

fn time_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median((0..runs).map(|_| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1000.0
    }))
}

fn main() {
    let a = Args::parse();
    let dir = tempfile::tempdir().expect("temp dir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("decode_cv2.py");
    let out = Command::new(&a.python)
        .arg(&script)
        .args(["--dir", dir.path().to_str().unwrap(), "--runs", &a.runs.to_string()])
        .output()
        .expect("run the python side");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("RESULT ")) else {
        panic!("python side failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    };
    let res: serde_json::Value = serde_json::from_str(line).unwrap();
    println!("cv2 {}; medians of {} runs, 1 thread each", res["cv2"], a.runs);
    println!("| image | size | kubeyolo ms | cv2 ms | image crate ms | kubeyolo / cv2 | kubeyolo = cv2 pixels | image crate samples differing (max) |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut names: Vec<_> = res["images"].as_object().unwrap().keys().cloned().collect();
    names.sort();
    for name in names {
        let r = &res["images"][&name];
        let path = dir.path().join(&name);
        let want = std::fs::read(path.with_extension("rgb")).unwrap();
        let ours = load_rgb(&path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let other = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let exact = ours.as_raw() == &want;
        let diff = other.as_raw().iter().zip(&want).filter(|(a, b)| a != b).count();
        let maxd = other.as_raw().iter().zip(&want).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap_or(0);
        let k = time_ms(a.runs, || {
            std::hint::black_box(load_rgb(&path).unwrap());
        });
        let i = time_ms(a.runs, || {
            let b = std::fs::read(&path).unwrap();
            std::hint::black_box(image::load_from_memory(&b).unwrap().to_rgb8());
        });
        let c = r["ms"].as_f64().unwrap();
        println!(
            "| {name} | {}x{} | {k:.2} | {c:.2} | {i:.2} | {:.2}x | {} | {:.1}% ({maxd}) |",
            r["w"],
            r["h"],
            k / c,
            if exact { "yes" } else { "NO" },
            100.0 * diff as f64 / want.len() as f64
        );
    }
}
