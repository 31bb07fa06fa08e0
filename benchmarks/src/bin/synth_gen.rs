//! Writes kubeyolo's synthetic detection dataset (shapes on textured backgrounds, ultralytics
//! layout + data yaml) for the training benchmarks, so kubeyolo and ultralytics train on the
//! same files (`benchmarks/train_compare.sh`).

use std::path::PathBuf;

use clap::Parser;
use kubeyolo::data::synth::{self, SynthSpec};

#[derive(Parser)]
#[command(
    about = "Generate the synthetic training dataset of the training benchmarks",
    after_help = "\
Example:
  synth_gen --dir /tmp/bench-train --train 320 --val 80 --imgsz 160 --seed 0"
)]
struct Args {
    /// Output folder (images/, labels/, data-synth.yaml). Example: --dir /tmp/bench-train
    #[arg(long)]
    dir: PathBuf,
    /// Training images. Example: --train 320
    #[arg(long, default_value_t = 320)]
    train: usize,
    /// Validation images. Example: --val 80
    #[arg(long, default_value_t = 80)]
    val: usize,
    /// Image size (pixels). Example: --imgsz 160
    #[arg(long, default_value_t = 160)]
    imgsz: u32,
    /// Classes. Example: --nc 4
    #[arg(long, default_value_t = 4)]
    nc: usize,
    /// Seed. Example: --seed 0
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// JPEG instead of PNG.
    #[arg(long)]
    jpeg: bool,
}

fn main() {
    let a = Args::parse();
    let spec = SynthSpec {
        images_per_split: [a.train, a.val, 0],
        imgsz: a.imgsz,
        nc: a.nc,
        max_objects: 6,
        background_fraction: 0.05,
        rect: false,
        seed: a.seed,
        jpeg: a.jpeg,
        yaml_name: "data-synth.yaml".into(),
    };
    match synth::generate(&a.dir, &spec) {
        Ok(p) => println!("{}", p.display()),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
