//! Reading ultralytics `.pt` checkpoints (`yolov8n.pt`, a user's `best.pt`) without Python.
//!
//! A `.pt` is a zip holding `<name>/data.pkl` (a pickle) and `<name>/data/<key>` (raw tensor
//! storages). An ultralytics checkpoint pickles a dict whose `model` (or, mid-training, `ema`)
//! entry is a whole `ultralytics.nn.tasks.DetectionModel` object, not a state dict, so
//! `candle_core::pickle::read_all` finds nothing in it. This module parses the pickle with
//! candle's public `pickle::Stack`, then walks the module tree through each object's
//! `_modules` / `_parameters` / `_buffers` dicts, which yields the tensors under their
//! state-dict names (`model.0.conv.weight`, …). Half-precision tensors (ultralytics saves fp16)
//! become f32. The model object also carries `names` (class names) and `yaml` (the architecture
//! dict, with `scale` and `nc`), which are returned so the network can be rebuilt.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};
use serde_yaml::Value;

use crate::error::{Error, Result};

/// What an ultralytics checkpoint holds that kubeyolo uses.
#[derive(Debug)]
pub struct PtCheckpoint {
    /// Parameters and float buffers by state-dict name, f32 on the CPU (`num_batches_tracked`
    /// and other integer buffers are left out).
    pub tensors: Vec<(String, Tensor)>,
    /// Class names by index (`model.names`).
    pub names: Vec<String>,
    /// The architecture dict (`model.yaml`: nc, scales, backbone, head, scale, yaml_file…).
    pub yaml: Value,
    /// Which entry the weights came from: `ema` (mid-training checkpoints) or `model`.
    pub source: String,
    /// Python class of the model object (`DetectionModel`).
    pub model_class: String,
    pub epoch: Option<i64>,
    pub best_fitness: Option<f64>,
    /// `train_args` as JSON (ultralytics' cfg of the run), when present.
    pub train_args: Option<serde_json::Value>,
    /// ultralytics version that wrote it.
    pub version: Option<String>,
}

fn not_ultralytics(path: &Path, why: impl Into<String>) -> Error {
    Error::model(format!("not an ultralytics detection checkpoint: {}", why.into()))
        .with_file(path)
        .with_hint("pass a .pt written by ultralytics (yolov8n.pt, runs/detect/train/weights/best.pt) or a kubeyolo .safetensors checkpoint")
}

/// Read an ultralytics detection checkpoint.
pub fn read_pt(path: &Path) -> Result<PtCheckpoint> {
    let file = std::fs::File::open(path).map_err(|e| Error::io_at(path, "open checkpoint", e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        not_ultralytics(path, format!("not a PyTorch zip archive ({e}); legacy (pre-1.6) .pt files are not supported"))
    })?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("data.pkl"))
        .map(str::to_string)
        .ok_or_else(|| not_ultralytics(path, "the archive has no data.pkl"))?;
    let dir = pkl_name.strip_suffix(".pkl").unwrap_or("data").to_string();
    let obj = {
        let entry = zip.by_name(&pkl_name).map_err(|e| not_ultralytics(path, e.to_string()))?;
        let mut reader = std::io::BufReader::new(entry);
        let mut stack = Stack::empty();
        stack.read_loop(&mut reader).map_err(|e| {
            Error::model(format!("cannot parse the checkpoint's pickle: {e}"))
                .with_file(path)
                .with_hint("the file may be truncated or written by an unsupported pickler")
        })?;
        stack.finalize().map_err(|e| not_ultralytics(path, e.to_string()))?
    };
    let Object::Dict(top) = obj else {
        return Err(not_ultralytics(path, "the pickle is not a dict"));
    };
    let get = |k: &str| top.iter().find(|(key, _)| matches!(key, Object::Unicode(s) if s == k)).map(|(_, v)| v);
    let (source, model) = match (get("ema"), get("model")) {
        (Some(e), _) if *e != Object::None => ("ema", e),
        (_, Some(m)) if *m != Object::None => ("model", m),
        _ => {
            let keys: Vec<String> = top
                .iter()
                .filter_map(|(k, _)| if let Object::Unicode(s) = k { Some(s.clone()) } else { None })
                .take(8)
                .collect();
            return Err(not_ultralytics(path, format!("no `model` or `ema` entry (keys: {})", keys.join(", "))));
        }
    };
    let (class, state) = module_parts(model)
        .ok_or_else(|| not_ultralytics(path, format!("`{source}` is not a pickled model object")))?;
    if !class.ends_with("DetectionModel")
        || class.contains("Segmentation")
        || class.contains("Pose")
        || class.contains("OBB")
    {
        return Err(Error::model(format!(
            "{} holds a `{class}`; kubeyolo loads detection models (DetectionModel) only",
            path.display()
        ))
        .with_hint("use a detection checkpoint such as yolov8n.pt"));
    }

    // Walk the module tree.
    let mut infos = Vec::new();
    walk(state, "", Path::new(&dir), &mut infos);
    if infos.is_empty() {
        return Err(not_ultralytics(path, "the model object holds no tensors"));
    }
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, info) in infos {
        if !matches!(info.dtype, DType::F16 | DType::F32 | DType::BF16 | DType::F64) {
            continue; // num_batches_tracked (int64)
        }
        let t = read_tensor(&mut zip, &info).map_err(|e| e.with_file(path).with_key(name.clone()))?;
        tensors.push((name, t));
    }

    let attr = |k: &str| dict_get(state, k);
    let names = match attr("names") {
        Some(Object::Dict(d)) => {
            let mut m: BTreeMap<i64, String> = BTreeMap::new();
            for (k, v) in d {
                if let (Some(i), Object::Unicode(s)) = (as_int(k), v) {
                    m.insert(i, s.clone());
                }
            }
            m.into_values().collect()
        }
        Some(Object::List(l)) => {
            l.iter().filter_map(|v| if let Object::Unicode(s) = v { Some(s.clone()) } else { None }).collect()
        }
        _ => Vec::new(),
    };
    let yaml = attr("yaml").map(to_yaml).unwrap_or(Value::Null);
    if !yaml.is_mapping() {
        return Err(not_ultralytics(path, "the model object has no `yaml` architecture dict"));
    }
    Ok(PtCheckpoint {
        tensors,
        names,
        yaml,
        source: source.to_string(),
        model_class: class,
        epoch: get("epoch").and_then(as_int),
        best_fitness: get("best_fitness").and_then(|o| match o {
            Object::Float(f) => Some(*f),
            o => as_int(o).map(|i| i as f64),
        }),
        train_args: get("train_args").map(|o| serde_json::to_value(to_yaml(o)).unwrap_or(serde_json::Value::Null)),
        version: get("version").and_then(|o| if let Object::Unicode(s) = o { Some(s.clone()) } else { None }),
    })
}

/// A pickled `nn.Module`: `Build { Reduce { Class, .. }, Dict(state) }` → (class name, state).
fn module_parts(obj: &Object) -> Option<(String, &Object)> {
    let Object::Build { callable, args } = obj else { return None };
    let class = match callable.as_ref() {
        Object::Reduce { callable, .. } => match callable.as_ref() {
            Object::Class { class_name, .. } => class_name.clone(),
            _ => return None,
        },
        Object::Class { class_name, .. } => class_name.clone(),
        _ => return None,
    };
    matches!(args.as_ref(), Object::Dict(_)).then_some((class, args.as_ref()))
}

fn dict_get<'a>(dict: &'a Object, key: &str) -> Option<&'a Object> {
    let Object::Dict(d) = dict else { return None };
    d.iter().find(|(k, _)| matches!(k, Object::Unicode(s) if s == key)).map(|(_, v)| v)
}

fn as_int(o: &Object) -> Option<i64> {
    match o {
        Object::Int(i) => Some(*i as i64),
        Object::Long(i) => Some(*i),
        _ => None,
    }
}

/// Collect (state-dict name, tensor info) from a module's state and its children, in order.
fn walk(state: &Object, prefix: &str, dir: &Path, out: &mut Vec<(String, candle_core::pickle::TensorInfo)>) {
    for key in ["_parameters", "_buffers"] {
        if let Some(Object::Dict(entries)) = dict_get(state, key) {
            for (k, v) in entries {
                let Object::Unicode(name) = k else { continue };
                let full = format!("{prefix}{name}");
                if let Ok(Some(info)) = v.clone().into_tensor_info(Object::Unicode(full.clone()), dir) {
                    out.push((full, info));
                }
            }
        }
    }
    if let Some(Object::Dict(children)) = dict_get(state, "_modules") {
        for (k, v) in children {
            let Object::Unicode(name) = k else { continue };
            if let Some((_, child)) = module_parts(v) {
                walk(child, &format!("{prefix}{name}."), dir, out);
            }
        }
    }
}

/// Read one tensor's bytes from the archive as f32 on the CPU.
fn read_tensor<R: std::io::Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    info: &candle_core::pickle::TensorInfo,
) -> Result<Tensor> {
    let layout = &info.layout;
    if !layout.is_contiguous() {
        return Err(Error::model("non-contiguous tensor in checkpoint (channels-last weights are not supported)"));
    }
    let mut entry = zip
        .by_name(&info.path)
        .map_err(|e| Error::model(format!("tensor data {} missing from the archive: {e}", info.path)))?;
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).map_err(|e| Error::model(format!("cannot read tensor data {}: {e}", info.path)))?;
    let size = info.dtype.size_in_bytes();
    let start = layout.start_offset();
    let len = layout.shape().elem_count() * size;
    if start + len > bytes.len() {
        return Err(Error::model(format!(
            "tensor data {} is shorter than its shape {:?}",
            info.path,
            layout.shape().dims()
        )));
    }
    let t = Tensor::from_raw_buffer(&bytes[start..start + len], info.dtype, layout.shape().dims(), &Device::Cpu)?;
    Ok(t.to_dtype(DType::F32)?)
}

/// A pickled plain value (dict, list, str, number) as a yaml value; other objects become null.
fn to_yaml(o: &Object) -> Value {
    match o {
        Object::None => Value::Null,
        Object::Bool(b) => Value::Bool(*b),
        Object::Int(i) => Value::Number((*i as i64).into()),
        Object::Long(i) => Value::Number((*i).into()),
        Object::Float(f) => Value::Number((*f).into()),
        Object::Unicode(s) => Value::String(s.clone()),
        Object::List(l) | Object::Tuple(l) => Value::Sequence(l.iter().map(to_yaml).collect()),
        Object::Dict(d) => {
            let mut m = serde_yaml::Mapping::new();
            for (k, v) in d {
                let key = match k {
                    Object::Unicode(s) => Value::String(s.clone()),
                    other => to_yaml(other),
                };
                m.insert(key, to_yaml(v));
            }
            Value::Mapping(m)
        }
        _ => Value::Null,
    }
}
