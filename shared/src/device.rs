//! Which compute device a step uses, and the device report every step can print.
//!
//! The cfg's `device` value follows ultralytics' `select_device`: empty = the first GPU when
//! there is one, else the CPU; `cpu`; `0` / `cuda:0` / `[0]`; `0,1` (kubeyolo trains on one
//! device: the first is used, with a warning); `-1` (ultralytics: the most idle GPU; here GPU 0).
//! GPUs need a binary built with the `cuda` feature (the CUDA image); asking a CPU-only build for
//! a GPU is an error that says so, rather than a silent fall-back that makes a run 50× slower.
//! `mps`, `npu`, `xpu` are not candle backends kubeyolo ships.
//!
//! The report (CPU threads, CUDA devices) answers the seed's "is CUDA available, which GPU, how
//! many" check; it also lists NVIDIA GPUs the kernel driver exposes (`/proc/driver/nvidia`), so a
//! CPU-only build on a GPU node is visible at a glance.

use candle_core::Device;
use serde::Serialize;

use crate::error::{Error, Result};

/// Whether this build has CUDA support (the `cuda` feature of this crate).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// A parsed `device` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRequest {
    /// Empty: GPU 0 when available, else CPU.
    Auto,
    Cpu,
    /// CUDA ordinals, in the order written (the first is used).
    Cuda(Vec<usize>),
}

/// Parse a `device` value as ultralytics writes it (`''`, `cpu`, `0`, `cuda:0`, `0,1`, `[0, 1]`, `-1`).
pub fn parse_device(value: &str) -> Result<DeviceRequest> {
    let cleaned: String = value
        .to_ascii_lowercase()
        .replace("cuda:", "")
        .replace("none", "")
        .chars()
        .filter(|c| !"()[]' \"".contains(*c))
        .collect();
    if cleaned.is_empty() {
        return Ok(DeviceRequest::Auto);
    }
    if cleaned == "cpu" {
        return Ok(DeviceRequest::Cpu);
    }
    if cleaned == "cuda" {
        return Ok(DeviceRequest::Cuda(vec![0]));
    }
    let mut ids = Vec::new();
    for part in cleaned.split(',').filter(|p| !p.is_empty()) {
        match part.parse::<i64>() {
            Ok(-1) => ids.push(0),
            Ok(i) if i >= 0 => ids.push(i as usize),
            _ => {
                let hint = if ["mps", "npu", "xpu"].iter().any(|b| part.starts_with(b)) {
                    "kubeyolo runs on CPU or NVIDIA CUDA only: use `device: cpu` or `device: 0`"
                } else {
                    "use `device: cpu`, a GPU index like `0`, or leave it empty for automatic"
                };
                return Err(Error::config(format!("invalid device '{value}'")).with_key("device").with_hint(hint));
            }
        }
    }
    Ok(DeviceRequest::Cuda(ids))
}

/// Resident set size of this process in GB (0 where /proc is absent).
pub fn rss_gb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map(|pages| pages * 4096.0 / 1e9)
        .unwrap_or(0.0)
}

/// The memory figure of the training progress line (ultralytics' `GPU_mem` column): on a GPU the
/// device memory in use, in GiB as ultralytics prints it — total minus free, as `nvidia-smi`
/// counts it, since candle has no caching allocator whose reserve could be read as ultralytics
/// reads `memory_reserved()`; on the CPU (where ultralytics prints 0) this process's resident
/// memory in GB, the figure a pod's memory limit is held against.
pub fn memory_gb(device: &Device) -> f64 {
    #[cfg(feature = "cuda")]
    if let Ok(cuda) = device.as_cuda_device() {
        if let Ok((free, total)) = cuda.cuda_stream().context().mem_get_info() {
            return total.saturating_sub(free) as f64 / (1u64 << 30) as f64;
        }
    }
    let _ = device;
    rss_gb()
}

/// The device chosen for a run.
#[derive(Debug, Clone)]
pub struct Selected {
    pub device: Device,
    /// `cpu` or `cuda:N`.
    pub name: String,
    /// Notes for the user (multi-GPU request reduced to one, automatic fall-back to CPU).
    pub warnings: Vec<String>,
}

/// Turn a `device` value into a candle device.
pub fn select(value: &str) -> Result<Selected> {
    let req = parse_device(value)?;
    let mut warnings = Vec::new();
    match req {
        DeviceRequest::Cpu => Ok(Selected { device: Device::Cpu, name: "cpu".into(), warnings }),
        DeviceRequest::Auto => {
            if cfg!(feature = "cuda") {
                match Device::new_cuda(0) {
                    Ok(device) => return Ok(Selected { device, name: "cuda:0".into(), warnings }),
                    Err(e) => warnings.push(format!("no usable CUDA GPU ({e}); running on the CPU")),
                }
            }
            Ok(Selected { device: Device::Cpu, name: "cpu".into(), warnings })
        }
        DeviceRequest::Cuda(ids) => {
            if !cfg!(feature = "cuda") {
                return Err(Error::config(format!("device '{value}' asks for a GPU, but this kubeyolo build has no CUDA support"))
                    .with_key("device")
                    .with_hint("use the CUDA image (built with `cargo build --features cuda`), or set `device: cpu` in the cfg yaml"));
            }
            if ids.len() > 1 {
                warnings.push(format!(
                    "device '{value}' lists {} GPUs; kubeyolo trains on one, using cuda:{}",
                    ids.len(),
                    ids[0]
                ));
            }
            let ordinal = ids[0];
            let device = Device::new_cuda(ordinal).map_err(|e| {
                Error::config(format!("cannot open GPU cuda:{ordinal}: {e}")).with_key("device").with_hint(
                    "check that the pod requests a GPU (nvidia.com/gpu) and the index exists; or set `device: cpu`",
                )
            })?;
            Ok(Selected { device, name: format!("cuda:{ordinal}"), warnings })
        }
    }
}

/// What compute this process has: printed by verify, logged by train.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// Threads candle/rayon use for CPU work (`RAYON_NUM_THREADS` changes it).
    pub cpu_threads: usize,
    /// Logical CPUs the process may run on.
    pub cpu_logical: usize,
    /// Whether the binary was built with the `cuda` feature.
    pub cuda_built: bool,
    /// CUDA ordinals that opened (only probed in CUDA builds).
    pub cuda_devices: Vec<usize>,
    /// NVIDIA GPUs the kernel driver exposes (model names), whatever the build.
    pub nvidia_gpus: Vec<String>,
    pub avx2: bool,
}

impl DeviceReport {
    /// Probe the machine (cheap: no GPU work beyond opening each CUDA device once).
    pub fn probe() -> Self {
        let mut cuda_devices = Vec::new();
        if cfg!(feature = "cuda") {
            for i in 0..16 {
                match Device::new_cuda(i) {
                    Ok(_) => cuda_devices.push(i),
                    Err(_) => break,
                }
            }
        }
        DeviceReport {
            cpu_threads: candle_core::utils::get_num_threads(),
            cpu_logical: num_cpus::get(),
            cuda_built: cfg!(feature = "cuda"),
            cuda_devices,
            nvidia_gpus: nvidia_gpus(),
            avx2: candle_core::utils::with_avx(),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// One line for logs, e.g. `cpu: 2 threads (2 logical, avx2) · cuda: not built (1 NVIDIA GPU visible: ...)`.
    pub fn to_text(&self) -> String {
        let cpu = format!(
            "cpu: {} threads ({} logical{})",
            self.cpu_threads,
            self.cpu_logical,
            if self.avx2 { ", avx2" } else { "" }
        );
        let visible = if self.nvidia_gpus.is_empty() {
            String::new()
        } else {
            format!("; {} NVIDIA GPU(s) visible: {}", self.nvidia_gpus.len(), self.nvidia_gpus.join(", "))
        };
        let cuda = if !self.cuda_built {
            format!("cuda: not built{visible}")
        } else if self.cuda_devices.is_empty() {
            format!("cuda: built, no device opened{visible}")
        } else {
            let ids: Vec<String> = self.cuda_devices.iter().map(|i| format!("cuda:{i}")).collect();
            format!("cuda: {} device(s) {}{visible}", ids.len(), ids.join(" "))
        };
        format!("{cpu} · {cuda}")
    }
}

/// Model names from `/proc/driver/nvidia/gpus/*/information` (empty when no driver).
fn nvidia_gpus() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/driver/nvidia/gpus") else { return Vec::new() };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("information")).ok())
        .map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
                .unwrap_or_else(|| "NVIDIA GPU".to_string())
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ultralytics_forms() {
        assert_eq!(parse_device("").unwrap(), DeviceRequest::Auto);
        assert_eq!(parse_device("None").unwrap(), DeviceRequest::Auto);
        assert_eq!(parse_device("CPU").unwrap(), DeviceRequest::Cpu);
        assert_eq!(parse_device("0").unwrap(), DeviceRequest::Cuda(vec![0]));
        assert_eq!(parse_device("cuda:1").unwrap(), DeviceRequest::Cuda(vec![1]));
        assert_eq!(parse_device("0,1").unwrap(), DeviceRequest::Cuda(vec![0, 1]));
        assert_eq!(parse_device("[0, 1]").unwrap(), DeviceRequest::Cuda(vec![0, 1]));
        assert_eq!(parse_device("-1").unwrap(), DeviceRequest::Cuda(vec![0]));
        assert!(parse_device("mps").unwrap_err().hint.unwrap().contains("CUDA only"));
        assert!(parse_device("gpu").is_err());
    }

    #[test]
    fn cpu_always_selectable() {
        let s = select("cpu").unwrap();
        assert!(matches!(s.device, Device::Cpu));
        assert_eq!(s.name, "cpu");
        let s = select("").unwrap();
        assert!(cfg!(feature = "cuda") || s.name == "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn gpu_request_without_cuda_build_is_a_clear_error() {
        let e = select("0").unwrap_err();
        assert!(e.to_string().contains("no CUDA support"), "{e}");
        assert!(e.hint.unwrap().contains("--features cuda"));
    }

    #[test]
    fn report() {
        let r = DeviceReport::probe();
        assert!(r.cpu_threads >= 1 && r.cpu_logical >= 1);
        assert_eq!(r.cuda_built, cfg!(feature = "cuda"));
        let j = r.to_json();
        assert!(j["cpu_threads"].as_u64().unwrap() >= 1);
        assert!(r.to_text().starts_with("cpu: "));
    }
}
