//! `kubeyolo demo`: a complete local run on a fresh machine, no downloads.
//!
//! It fills a folder the way users fill their `/data` volume — a dataset in ultralytics' layout
//! with its `data-custom.yaml`, and a `cfg-custom.yaml` (ultralytics `default.yaml` keys) small
//! enough to train on a CPU in minutes — and then runs the whole pipeline on it with the process
//! runner. The model defaults to the built-in architecture `yolov8n.yaml` (training from
//! scratch), because the official `yolov8n.pt` weights would need a download.
//!
//! The dataset comes from [`kubeyolo::data::synth`] (deterministic shapes on textured
//! backgrounds, exact labels), so every run of the demo sees the same data.
//!
//! Sizing (measured on the shared 2-core dev VM, dev build, 64 train images of 128 px, batch 8):
//! an epoch (train + validation) takes about 6 s on idle cores. Trained from scratch with
//! ultralytics' `nbs: 64`, gradients accumulate over the whole epoch (one optimizer step per
//! epoch): mAP50 stays below 0.02 up to epoch 16 and is 0.12 at epoch 20. With
//! `nbs: 8` (a step per batch) mAP50 is 0 at epoch 10, 0.40 at 14 and 0.64 / mAP50-95 0.41 at
//! epoch 19-20 (warm-up as ultralytics: 3 epochs, at least 100 iterations). So the demo trains
//! 20 epochs with `nbs` = batch: about 2 minutes of training, the whole demo 3 minutes.

use std::path::Path;

use kubeyolo::data::synth::{self, SynthSpec};
use kubeyolo::{Error, Result};

/// Sizes of the demo dataset and training.
#[derive(Debug, Clone)]
pub struct DemoSpec {
    pub images_per_split: [usize; 3],
    pub imgsz: u32,
    pub epochs: u32,
    pub batch: u32,
    pub nc: usize,
}

impl Default for DemoSpec {
    /// 64/16/16 images of 128 px, 4 classes, 20 epochs of batch 8 from scratch: train takes
    /// about 2 minutes on 2 cores (dev build) and ends near mAP50 0.6 / mAP50-95 0.4 on the
    /// validation split; with 10 epochs mAP is still 0 (measured: `pipeline/src/demo.rs` docs).
    fn default() -> Self {
        DemoSpec { images_per_split: [64, 16, 16], imgsz: 128, epochs: 20, batch: 8, nc: 4 }
    }
}

/// The demo's training cfg (ultralytics `default.yaml` keys; anything absent keeps its default).
pub fn cfg_yaml(spec: &DemoSpec) -> String {
    format!(
        "# kubeyolo demo training settings: ultralytics cfg/default.yaml keys, sized for a CPU.\n\
         # Copy ultralytics' default.yaml and edit it for real runs; every key of it is accepted.\n\
         task: detect\n\
         mode: train\n\
         epochs: {}\n\
         imgsz: {}\n\
         batch: {}\n\
         # Nominal batch size = the batch: one optimizer step per batch. With ultralytics' 64,\n\
         # gradients accumulate over 64 images, one step per epoch on this small dataset.\n\
         nbs: {}\n\
         workers: 2\n\
         patience: 50\n\
         project: runs/detect\n\
         name: demo\n\
         exist_ok: true\n\
         seed: 0\n\
         deterministic: true\n\
         plots: true\n\
         # In the pipeline, train's run folder is runs/detect/<run id> (--run-dir), not project/name.\n",
        spec.epochs, spec.imgsz, spec.batch, spec.batch
    )
}

/// Write the dataset (`images/`, `labels/`, `data-custom.yaml`) and `cfg-custom.yaml` into `dir`.
/// An existing demo folder is refreshed in place; a folder with foreign `images/` is refused.
pub fn prepare(dir: &Path, spec: &DemoSpec) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, "create the demo folder", e))?;
    let synth = SynthSpec {
        images_per_split: spec.images_per_split,
        imgsz: spec.imgsz,
        nc: spec.nc,
        yaml_name: "data-custom.yaml".into(),
        ..SynthSpec::default()
    };
    let yaml = synth::generate(dir, &synth)?;
    let cfg = dir.join("cfg-custom.yaml");
    kubeyolo::files::write_atomic(&cfg, cfg_yaml(spec).as_bytes())?;
    eprintln!(
        "demo data in {}: {} train / {} val / {} test images of {} px, {} classes ({}), {}",
        dir.display(),
        spec.images_per_split[0],
        spec.images_per_split[1],
        spec.images_per_split[2],
        spec.imgsz,
        spec.nc,
        yaml.display(),
        cfg.display()
    );
    Ok(())
}

/// When run from a cargo checkout, build the missing step binaries (`cargo build -p yolo-<step>`
/// for each step whose crate `stages/<step>` exists) into the target folder `kubeyolo` lives in,
/// with the same profile. Steps without a crate stay missing and are reported so by the run.
/// Returns false when it could not try (not a checkout, no cargo).
pub fn build_step_binaries(bin_dir: &Path, missing_steps: &[&str]) -> bool {
    if missing_steps.is_empty() {
        return true;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf);
    let Some(ws) = workspace.filter(|w| w.join("Cargo.toml").is_file()) else { return false };
    let crates: Vec<&str> =
        missing_steps.iter().copied().filter(|s| ws.join("stages").join(s).join("Cargo.toml").is_file()).collect();
    if crates.is_empty() {
        return true;
    }
    // Only build into the target folder this kubeyolo lives in (`target/<profile>/`).
    let profile = bin_dir.file_name().and_then(|s| s.to_str()).unwrap_or("debug").to_string();
    let Some(target) = bin_dir.parent().filter(|t| t.join("CACHEDIR.TAG").exists() || t.ends_with("target")) else {
        return false;
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(&ws).arg("build").arg("--target-dir").arg(target);
    for c in &crates {
        cmd.args(["-p", &format!("yolo-{c}")]);
    }
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    eprintln!(
        "building the missing step binaries: cargo build {}",
        crates.iter().map(|c| format!("-p yolo-{c}")).collect::<Vec<_>>().join(" ")
    );
    match cmd.status() {
        Ok(s) if s.success() => true,
        Ok(_) => {
            eprintln!("warning: cargo build failed; steps without a binary are reported as missing");
            true
        }
        Err(e) => {
            eprintln!("warning: cannot run cargo ({e}); steps without a binary are reported as missing");
            false
        }
    }
}
