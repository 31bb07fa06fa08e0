//! Checks of the CUDA-only code paths against the CPU's, for a GPU machine: built with
//! `--features cuda` (`cargo test -p kubeyolo --features cuda --test cuda`, or carried as a test
//! binary by `scripts/gpu_check.sh`); each test says "skipped" and passes where no GPU opens.
#![cfg(feature = "cuda")]

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};
use kubeyolo::data::loader::Batch;
use kubeyolo::data::Targets;
use kubeyolo::train::optim::clip_grad_norm;

fn gpu() -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// The batch uploaded as bytes and divided on the GPU equals the host's floats bit for bit.
#[test]
fn batch_upload_equals_the_cpu_floats() {
    let Some(gpu) = gpu() else { return };
    let (b, h, w) = (2, 5, 7);
    let images: Vec<u8> = (0..b * 3 * h * w).map(|i| (i * 37 % 256) as u8).collect();
    let batch = Batch { images, shape: (b, h, w), targets: Targets::default(), paths: Vec::new(), indices: Vec::new() };
    let cpu = batch.to_tensor(&Device::Cpu).unwrap();
    let cuda = batch.to_tensor(&gpu).unwrap();
    assert!(cuda.device().is_cuda());
    assert_eq!(cpu.dims(), cuda.dims());
    assert_eq!(bits(&cpu), bits(&cuda));
    // every byte value, so no value rounds differently
    let all = Batch {
        images: (0..=255u8).cycle().take(3 * 16 * 16).collect(),
        shape: (1, 16, 16),
        targets: Targets::default(),
        paths: Vec::new(),
        indices: Vec::new(),
    };
    assert_eq!(bits(&all.to_tensor(&Device::Cpu).unwrap()), bits(&all.to_tensor(&gpu).unwrap()));
}

/// Gradient clipping on the GPU (one read of all norms) returns the CPU's norm and scales alike.
#[test]
fn clip_grad_norm_equals_the_cpu() {
    let Some(gpu) = gpu() else { return };
    let run = |device: &Device, scale: f32| {
        let vars: Vec<Var> = (0..5)
            .map(|k| {
                let v: Vec<f32> = (0..(k + 1) * 13).map(|i| ((i * 7 + k) % 11) as f32 - 5.0).collect();
                Var::from_slice(&v, v.len(), device).unwrap()
            })
            .collect();
        let mut grads = GradStore::default();
        for v in &vars {
            let g = (v.as_tensor() * scale as f64).unwrap();
            grads.insert(v.as_tensor(), g);
        }
        let norm = clip_grad_norm(&mut grads, &vars, 10.0).unwrap();
        let clipped: Vec<f32> =
            vars.iter().flat_map(|v| bits(grads.get(v.as_tensor()).unwrap())).map(f32::from_bits).collect();
        (norm, clipped)
    };
    for scale in [0.01f32, 3.0] {
        let (nc, gc) = run(&Device::Cpu, scale);
        let (ng, gg) = run(&gpu, scale);
        assert!((nc - ng).abs() <= 1e-6 * nc.max(1.0), "scale {scale}: norm cpu {nc} vs gpu {ng}");
        // the GPU sums in another order: equal within float rounding
        for (a, b) in gc.iter().zip(&gg) {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1e-3), "scale {scale}: clipped gradient cpu {a} vs gpu {b}");
        }
        if scale == 3.0 {
            assert!(nc > 10.0, "the large case must clip ({nc})");
        }
    }
}
