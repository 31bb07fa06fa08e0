//! Generates the dataset for the distribution benchmark (`benchmarks/distribution/bench.py`):
//! N images as empty `.jpg` placeholders (the scan never decodes images) with COCO-like label
//! files — 80 classes, 0–12 objects per image (mean ≈ 5), about 3% backgrounds (empty file), 1%
//! images without a label file, 0.5% with a duplicated row, 0.1% with only an invalid line (class
//! id ≥ nc, so ultralytics and kubeyolo agree on the counts: neither keeps a box from it).
//! Deterministic (splitmix64 from --seed). 80% train, 20% val.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "Generate the label files of the distribution benchmark",
    after_help = "\
Example:
  distribution_gen --dir /tmp/bench-dist --images 100000"
)]
struct Args {
    /// Output folder (images/, labels/, data.yaml are created in it). Example: --dir /tmp/bench-dist
    #[arg(long)]
    dir: PathBuf,
    /// Number of images (label files) in all. Example: --images 100000
    #[arg(long, default_value_t = 100_000)]
    images: usize,
    /// Seed of the generator. Example: --seed 1
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const NC: u64 = 80;

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let mut rng = SplitMix(a.seed);
    let n_train = a.images * 4 / 5;
    for split in ["train", "val"] {
        std::fs::create_dir_all(a.dir.join("images").join(split))?;
        std::fs::create_dir_all(a.dir.join("labels").join(split))?;
    }
    for i in 0..a.images {
        let split = if i < n_train { "train" } else { "val" };
        let stem = format!("{i:012}");
        std::fs::write(a.dir.join("images").join(split).join(format!("{stem}.jpg")), b"")?;
        let r = rng.unit();
        let label = a.dir.join("labels").join(split).join(format!("{stem}.txt"));
        if r < 0.01 {
            continue; // no label file
        }
        let mut text = String::new();
        if r < 0.011 {
            text.push_str(&format!("{} 0.5 0.5 0.1 0.1\n", NC + rng.below(5)));
        } else if r >= 0.041 {
            let n = 1 + rng.below(9) + rng.below(4);
            for _ in 0..n {
                let (w, h) = (0.01 + rng.unit() * 0.5, 0.01 + rng.unit() * 0.5);
                let cx = w / 2.0 + rng.unit() * (1.0 - w);
                let cy = h / 2.0 + rng.unit() * (1.0 - h);
                text.push_str(&format!("{} {cx:.6} {cy:.6} {w:.6} {h:.6}\n", rng.below(NC)));
            }
            if r < 0.046 {
                let first = text.lines().next().unwrap_or_default().to_string();
                text.push_str(&first);
                text.push('\n');
            }
        } // else: empty file (background)
        std::fs::write(label, text)?;
    }
    let mut yaml = String::from("path: .\ntrain: images/train\nval: images/val\nnames:\n");
    for c in 0..NC {
        yaml.push_str(&format!("  {c}: class{c}\n"));
    }
    std::fs::write(a.dir.join("data.yaml"), yaml)?;
    println!("{} images in {}", a.images, a.dir.display());
    Ok(())
}
