//! AutoBatch: `batch: -1` (or a memory fraction such as `0.7`) picks the training batch that
//! fills that fraction of the GPU's memory, as ultralytics 8.4's `utils/autobatch.py` does:
//! probe one forward + backward at batch 1, 2, 4, 8, 16 (to 64 on GPUs of 16 GiB or more), fit
//! memory = a·batch + c through the usable probes, solve for the fraction of the memory
//! available to the process, keep below the first batch that failed, clamp to [first usable
//! probe, 1024] and to the dataset's size. On the CPU, as ultralytics, it is the default 16
//! with a warning.
//!
//! Why a module of its own: the choice ([`choose`], [`probe_batches`], [`loss_envelope_gib`])
//! is plain arithmetic, tested against ultralytics' own `autobatch()` on this CPU-only machine
//! (`tests/fixtures/autobatch/cases.json`); only the measurement ([`probe_cuda`]) needs a GPU.
//!
//! What differs from PyTorch: candle has no caching allocator whose `memory_reserved` could be
//! read after the step, so a probe's memory is the device's free memory before the probes minus
//! its free memory right after `backward()` returns (the graph's activations and every gradient
//! still alive, the step's peak up to the backward's temporaries), plus the model's weights,
//! which torch's reserved memory also holds.

use crate::error::{Error, Result};

/// ultralytics' default fraction of GPU memory (`batch: -1`).
pub const DEFAULT_FRACTION: f64 = 0.6;
/// The largest batch AutoBatch returns (ultralytics' "safe maximum").
pub const MAX_BATCH: usize = 1024;
/// The batch used where AutoBatch cannot run (the CPU) — ultralytics' `DEFAULT_CFG.batch`.
pub const CPU_BATCH: usize = 16;

/// Device memory in GiB: the device's total and what this process may use (its own memory plus
/// the free memory, ultralytics' `reserved + mem_get_info()[0]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub total_gib: f64,
    pub available_gib: f64,
}

/// The batch sizes probed: 1…16, or 1…64 on a device of 16 GiB or more, none above the
/// dataset's size (when known, > 0).
pub fn probe_batches(total_gib: f64, dataset_size: usize) -> Vec<usize> {
    let all: &[usize] = if total_gib < 16.0 { &[1, 2, 4, 8, 16] } else { &[1, 2, 4, 8, 16, 32, 64] };
    all.iter().copied().filter(|&b| dataset_size == 0 || b <= dataset_size).collect()
}

/// The memory `profile_ops` adds to each probe for the training loss, which a bare forward +
/// backward does not allocate: about 6 floats per anchor for the task-aligned assigner's state
/// and the class path, per object slot (`max_num_obj`, the most labels of any image × 4 for
/// mosaic) plus twice the classes (training-time validation runs the loss at up to 2× batch).
pub fn loss_envelope_gib(batch: usize, imgsz: usize, strides: &[f64], max_num_obj: usize, nc: usize) -> f64 {
    let anchors = strides.iter().map(|s| (imgsz as f64 / s) * (imgsz as f64 / s)).sum::<f64>().trunc();
    batch as f64 * anchors * 6.0 * (max_num_obj + 2 * nc) as f64 * 4.0 / (1u64 << 30) as f64
}

/// The chosen batch and the fraction of the device's total memory it is predicted to use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    pub batch: usize,
    pub predicted_fraction: f64,
}

/// ultralytics' fit: `probes` pairs each probed batch with its memory in GiB (`None`: the probe
/// failed, e.g. out of memory). Usable probes are those between 0 and the total whose memory
/// grows over the previous probe (or that come first / follow a failed one).
pub fn choose(probes: &[(usize, Option<f64>)], mem: Memory, fraction: f64, dataset_size: usize) -> Result<Choice> {
    let usable: Vec<(f64, f64)> = probes
        .iter()
        .enumerate()
        .filter_map(|(i, &(b, m))| {
            let m = m?;
            let grows = i == 0 || probes[i - 1].1.is_none_or(|prev| m > prev);
            (m > 0.0 && m < mem.total_gib && grows).then_some((b as f64, m))
        })
        .collect();
    let Some(&(first, _)) = usable.first() else {
        let tried: Vec<String> = probes.iter().map(|(b, _)| b.to_string()).collect();
        return Err(Error::config(format!(
            "AutoBatch: no usable batch size found while profiling batch=[{}]",
            tried.join(", ")
        ))
        .with_hint("free GPU memory, reduce imgsz, or set `batch` to a number in the cfg yaml"));
    };
    let (slope, intercept) = least_squares_line(&usable);
    let mut b = (mem.available_gib * fraction - intercept) / slope;
    // equal readings (usable only with a failed probe between them): slope exactly 0 here, ±1e-17
    // in numpy; either sign ends at the first probe, through the clamp or the ceiling below
    if !b.is_finite() {
        b = first;
    }
    // float → int truncates toward zero as Python's int() (and saturates)
    let mut b = b as i64;
    // the first failure above a usable probe is the memory ceiling: stay at the probe below it
    if let Some(oom) = probes.iter().position(|&(pb, m)| m.is_none() && pb as f64 > first) {
        if b >= probes[oom].0 as i64 {
            b = probes[oom - 1].0 as i64;
        }
    }
    let mut b = b.clamp(first as i64, MAX_BATCH as i64) as usize;
    if dataset_size > 0 {
        b = b.min(dataset_size);
    }
    Ok(Choice { batch: b, predicted_fraction: (slope * b as f64 + intercept) / mem.total_gib })
}

/// `np.polyfit(x, y, 1)`: slope and intercept of the least-squares line. With one point the
/// system is underdetermined and numpy returns the minimum-norm solution of its column-scaled
/// Vandermonde system: slope y / 2x, intercept y / 2 (x > 0).
fn least_squares_line(pts: &[(f64, f64)]) -> (f64, f64) {
    let n = pts.len() as f64;
    if let [(x, y)] = pts {
        return (y / (2.0 * x), y / 2.0);
    }
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = pts.iter().map(|&(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = pts.iter().map(|&(x, _)| (x - mx) * (x - mx)).sum();
    let slope = sxy / sxx;
    (slope, my - slope * mx)
}

/// The fraction of GPU memory a cfg's `batch` asks for: itself when in (0, 1), else the default.
pub fn fraction_of(batch: &crate::config::hyp::Batch) -> f64 {
    match *batch {
        crate::config::hyp::Batch::MemoryFraction(f) if f > 0.0 && f < 1.0 => f,
        _ => DEFAULT_FRACTION,
    }
}

/// What the probes need to know of the run: the (largest multi-scale) image size, the head's
/// strides and classes, the most object slots of a training image and the dataset's size.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub imgsz: usize,
    pub strides: Vec<f64>,
    pub nc: usize,
    pub max_num_obj: usize,
    pub dataset_size: usize,
}

/// Measures each probe batch on the CUDA device (see the module doc for how) and returns the
/// device's memory and the probes, each with the loss envelope added. BatchNorm's running
/// statistics, which a training forward updates, are restored afterwards.
#[cfg(feature = "cuda")]
pub fn probe_cuda(
    model: &crate::nn::model::YoloModel,
    varmap: &candle_nn::VarMap,
    device: &candle_core::Device,
    spec: &ProbeSpec,
) -> Result<(Memory, Vec<(usize, Option<f64>)>)> {
    use candle_core::{DType, Tensor};
    const GIB: f64 = (1u64 << 30) as f64;
    let ctx = device.as_cuda_device()?.cuda_stream().context().clone();
    let free = || -> Result<(f64, f64)> {
        device.synchronize()?;
        let (f, t) = ctx.mem_get_info().map_err(|e| Error::internal(format!("AutoBatch: cuMemGetInfo: {e}")))?;
        Ok((f as f64 / GIB, t as f64 / GIB))
    };
    let vars: Vec<(String, candle_core::Var)> =
        varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let weights_gib = vars.iter().map(|(_, v)| v.elem_count() * v.dtype().size_in_bytes()).sum::<usize>() as f64 / GIB;
    let stats: Vec<(candle_core::Var, Tensor)> = vars
        .iter()
        .filter(|(k, _)| k.ends_with("running_mean") || k.ends_with("running_var"))
        .map(|(_, v)| Ok((v.clone(), v.as_tensor().copy()?)))
        .collect::<Result<_>>()?;
    let (free0, total) = free()?;
    let mem = Memory { total_gib: total, available_gib: free0 + weights_gib };
    let mut probes = Vec::new();
    for b in probe_batches(total, spec.dataset_size) {
        let run = || -> Result<f64> {
            let x = Tensor::zeros((b, 3, spec.imgsz, spec.imgsz), DType::F32, device)?;
            let out = model.forward_train(&x)?;
            let mut sum = Tensor::zeros((), DType::F32, device)?;
            for t in out.box_levels.iter().chain(&out.cls_levels) {
                sum = (sum + t.sum_all()?)?;
            }
            let grads = sum.backward()?;
            let (free_b, _) = free()?;
            drop(grads);
            Ok(free0 - free_b + weights_gib)
        };
        let m = match run() {
            Ok(m) => Some(m + loss_envelope_gib(b, spec.imgsz, &spec.strides, spec.max_num_obj, spec.nc)),
            Err(e) => {
                eprintln!("AutoBatch: batch {b}: {e}");
                None
            }
        };
        println!("AutoBatch: batch {b:>4}  {}", m.map_or("failed".to_string(), |m| format!("{m:.3} GiB")));
        probes.push((b, m));
    }
    for (v, t) in &stats {
        v.set(t)?;
    }
    Ok((mem, probes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_probe_fits_like_numpy_polyfit() {
        // np.polyfit([4], [2.0], 1) -> [0.25, 1.0]; np.polyfit([1], [3.0], 1) -> [1.5, 1.5]
        assert_eq!(least_squares_line(&[(4.0, 2.0)]), (0.25, 1.0));
        assert_eq!(least_squares_line(&[(1.0, 3.0)]), (1.5, 1.5));
    }

    #[test]
    fn the_cfg_fraction_is_used_only_inside_0_1() {
        use crate::config::hyp::Batch;
        assert_eq!(fraction_of(&Batch::Auto), DEFAULT_FRACTION);
        assert_eq!(fraction_of(&Batch::MemoryFraction(0.7)), 0.7);
        assert_eq!(fraction_of(&Batch::Fixed(8)), DEFAULT_FRACTION);
    }

    #[test]
    fn no_usable_probe_is_an_error_naming_the_cfg_key() {
        let mem = Memory { total_gib: 24.0, available_gib: 23.0 };
        let e = choose(&[(1, None), (2, Some(30.0))], mem, 0.6, 0).unwrap_err().to_string();
        assert!(e.contains("no usable batch size") && e.contains("batch"), "{e}");
    }
}
