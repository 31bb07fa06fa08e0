//! Weights: kubeyolo's safetensors checkpoints (with metadata), loading ultralytics `.pt`
//! files (through [`super::pt`]), building a ready model from either, and downloading the
//! official `yolov8{n,s,m,l,x}.pt` on demand.
//!
//! A kubeyolo checkpoint is one `.safetensors` file: every network variable under its
//! ultralytics state-dict name (f32), plus string metadata — the model yaml text, the name it
//! was requested by, the scale, `nc`, class names (JSON), train args (JSON), epoch, best fitness,
//! and the kubeyolo version — so a checkpoint alone rebuilds the network, as an ultralytics
//! `.pt` does. It is written atomically (temp file + rename): a crash never leaves a torn
//! `best.safetensors` for the next step.
//!
//! Official weights: `KUBEYOLO_WEIGHTS_URL` (a base URL; the file name is appended) overrides
//! ultralytics' release-asset URL for mirrors and air-gapped clusters. Downloads are checked
//! (HTTP status, Content-Length, a zip with a `data.pkl`) before they are cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::model::YoloModel;
use super::pt;
use crate::config::model_yaml::ModelYaml;
use crate::error::{Error, Result};

/// Environment variable: base URL the official weights are downloaded from.
pub const ENV_WEIGHTS_URL: &str = "KUBEYOLO_WEIGHTS_URL";
/// ultralytics' release assets (as `attempt_download_asset` uses).
pub const DEFAULT_WEIGHTS_URL: &str = "https://github.com/ultralytics/assets/releases/download/v8.4.0";
/// The smallest believable weights file (ultralytics' `min_bytes=1e5`).
const MIN_WEIGHTS_BYTES: usize = 100_000;

/// What a checkpoint says about itself.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct CheckpointMeta {
    /// The model yaml text the network was built from.
    pub model_yaml: String,
    /// The name it was requested by (`yolov8n.yaml`), whose letter picks the scale.
    pub model_name: String,
    /// Scale letter (`n`), when the yaml has `scales`.
    pub scale: Option<String>,
    pub nc: usize,
    /// Class names by index.
    pub names: Vec<String>,
    /// The training cfg (JSON object) or null.
    pub train_args: serde_json::Value,
    pub epoch: Option<i64>,
    pub best_fitness: Option<f64>,
    /// kubeyolo version that wrote it (or `ultralytics <v>` for a `.pt`).
    pub writer: String,
}

const META_KEYS: &[&str] =
    &["model_yaml", "model_name", "scale", "nc", "names", "train_args", "epoch", "best_fitness", "writer"];

impl CheckpointMeta {
    fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        m.insert("format".into(), "kubeyolo".into());
        m.insert("model_yaml".into(), self.model_yaml.clone());
        m.insert("model_name".into(), self.model_name.clone());
        if let Some(s) = &self.scale {
            m.insert("scale".into(), s.clone());
        }
        m.insert("nc".into(), self.nc.to_string());
        m.insert("names".into(), serde_json::to_string(&self.names).unwrap_or_else(|_| "[]".into()));
        m.insert("train_args".into(), self.train_args.to_string());
        if let Some(e) = self.epoch {
            m.insert("epoch".into(), e.to_string());
        }
        if let Some(f) = self.best_fitness {
            m.insert("best_fitness".into(), f.to_string());
        }
        m.insert("writer".into(), self.writer.clone());
        m.insert("kubeyolo_version".into(), crate::VERSION.into());
        m
    }

    fn from_map(m: &HashMap<String, String>, path: &Path) -> Result<Self> {
        let bad = |k: &str| Error::model(format!("checkpoint metadata `{k}` is invalid")).with_file(path).with_key(k);
        let model_yaml = m.get("model_yaml").cloned().ok_or_else(|| {
            Error::model("safetensors file has no kubeyolo metadata (model_yaml)")
                .with_file(path)
                .with_hint("only checkpoints written by kubeyolo (or ultralytics .pt files) carry the architecture")
        })?;
        let _ = META_KEYS;
        Ok(CheckpointMeta {
            model_yaml,
            model_name: m.get("model_name").cloned().unwrap_or_default(),
            scale: m.get("scale").cloned(),
            nc: m.get("nc").map(|s| s.parse().map_err(|_| bad("nc"))).transpose()?.unwrap_or(0),
            names: m
                .get("names")
                .map(|s| serde_json::from_str(s).map_err(|_| bad("names")))
                .transpose()?
                .unwrap_or_default(),
            train_args: m
                .get("train_args")
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(serde_json::Value::Null),
            epoch: m.get("epoch").and_then(|s| s.parse().ok()),
            best_fitness: m.get("best_fitness").and_then(|s| s.parse().ok()),
            writer: m.get("writer").or(m.get("kubeyolo_version")).cloned().unwrap_or_default(),
        })
    }

    /// The model yaml, parsed, with the scale the checkpoint was built with.
    pub fn model_yaml(&self, origin: &Path) -> Result<ModelYaml> {
        let name = if self.model_name.is_empty() { "model.yaml" } else { &self.model_name };
        let mut y = ModelYaml::parse(&self.model_yaml, &format!("{}#model_yaml", origin.display()), name)?;
        if self.scale.is_some() {
            y.scale = self.scale.clone();
        }
        Ok(y)
    }
}

/// Tensors whose names start with this belong to a training checkpoint's resume state (raw
/// model, optimizer, accumulated gradients; see `train::checkpoint`): readers of the network's
/// weights never see them.
pub const TRAIN_STATE_PREFIX: &str = "train_state/";

/// Write `varmap`'s variables and `meta` as a safetensors checkpoint, atomically.
pub fn save_checkpoint(path: &Path, varmap: &VarMap, meta: &CheckpointMeta) -> Result<()> {
    save_checkpoint_with(path, varmap_tensors(varmap)?, meta, HashMap::new())
}

/// Every variable of `varmap` as (name, f32 CPU tensor), sorted by name.
pub fn varmap_tensors(varmap: &VarMap) -> Result<Vec<(String, Tensor)>> {
    let data = varmap.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::with_capacity(data.len());
    for (k, v) in data.iter() {
        tensors.push((k.clone(), v.as_tensor().detach().to_dtype(DType::F32)?.to_device(&Device::Cpu)?));
    }
    drop(data);
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// Write `tensors` (the network's, plus any `TRAIN_STATE_PREFIX` ones) with `meta` and `extra`
/// metadata entries as one safetensors file, atomically (temp + rename: a failed write leaves
/// the previous file intact).
pub fn save_checkpoint_with(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
    meta: &CheckpointMeta,
    extra: HashMap<String, String>,
) -> Result<()> {
    let mut map = meta.to_map();
    map.extend(extra);
    let bytes = safetensors::serialize(tensors.iter().map(|(k, t)| (k.as_str(), t)), Some(map))
        .map_err(|e| Error::internal(format!("cannot serialize checkpoint: {e}")).with_file(path))?;
    crate::files::write_atomic(path, &bytes)
}

/// Read a safetensors checkpoint whole: metadata (raw entries too) and every tensor, the
/// `TRAIN_STATE_PREFIX` ones included (CPU, f32).
pub fn read_checkpoint_full(path: &Path) -> Result<(CheckpointMeta, HashMap<String, String>, Vec<(String, Tensor)>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io_at(path, "read checkpoint", e))?;
    let (_, md) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::model(format!("not a safetensors file: {e}")).with_file(path))?;
    let raw = md.metadata().clone().unwrap_or_default();
    let meta = CheckpointMeta::from_map(&raw, path)?;
    let map = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    // network tensors as f32 (ultralytics' .pt may hold fp16); resume state keeps its own dtype
    // (the optimizer's f64 hyper-parameters must round-trip exactly)
    let mut tensors: Vec<(String, Tensor)> = map
        .into_iter()
        .map(|(k, t)| Ok(if k.starts_with(TRAIN_STATE_PREFIX) { (k, t) } else { (k, t.to_dtype(DType::F32)?) }))
        .collect::<Result<_>>()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((meta, raw, tensors))
}

/// Read a kubeyolo safetensors checkpoint: metadata and the network's tensors (CPU, f32). A
/// training checkpoint's network tensors are its EMA weights (as ultralytics' `ema`); its resume
/// state is left out.
pub fn read_checkpoint(path: &Path) -> Result<(CheckpointMeta, Vec<(String, Tensor)>)> {
    let (meta, _, mut tensors) = read_checkpoint_full(path)?;
    tensors.retain(|(k, _)| !k.starts_with(TRAIN_STATE_PREFIX));
    Ok((meta, tensors))
}

/// Weights from either format.
#[derive(Debug)]
pub struct Weights {
    pub meta: CheckpointMeta,
    /// State-dict name → tensor (CPU, f32).
    pub tensors: Vec<(String, Tensor)>,
    pub path: PathBuf,
}

/// Read a `.pt` (ultralytics) or `.safetensors` (kubeyolo) checkpoint by its extension.
pub fn read_weights(path: &Path) -> Result<Weights> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "safetensors" => {
            let (meta, tensors) = read_checkpoint(path)?;
            Ok(Weights { meta, tensors, path: path.to_path_buf() })
        }
        "pt" | "pth" => {
            let ck = pt::read_pt(path)?;
            let get = |k: &str| ck.yaml.get(k);
            let model_yaml = serde_yaml::to_string(&ck.yaml)
                .map_err(|e| Error::internal(format!("cannot re-serialize the model yaml: {e}")))?;
            let nc = get("nc").and_then(serde_yaml::Value::as_u64).unwrap_or(ck.names.len() as u64) as usize;
            let scale = get("scale").and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
            let model_name = get("yaml_file")
                .and_then(|v| v.as_str())
                .map(|s| Path::new(s).file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default())
                .unwrap_or_else(|| "model.yaml".into());
            let mut names = ck.names.clone();
            if names.len() != nc {
                names = (0..nc).map(|i| i.to_string()).collect();
            }
            let meta = CheckpointMeta {
                model_yaml,
                model_name,
                scale,
                nc,
                names,
                train_args: ck.train_args.clone().unwrap_or(serde_json::Value::Null),
                epoch: ck.epoch,
                best_fitness: ck.best_fitness,
                writer: format!("ultralytics {}", ck.version.clone().unwrap_or_default()),
            };
            Ok(Weights { meta, tensors: ck.tensors, path: path.to_path_buf() })
        }
        _ => Err(Error::model(format!("unknown weights format '.{ext}'"))
            .with_file(path)
            .with_hint("use an ultralytics .pt or a kubeyolo .safetensors checkpoint")),
    }
}

/// How loading named tensors into a network went.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct LoadReport {
    pub loaded: usize,
    pub total: usize,
    /// Network variables the weights did not provide.
    pub missing: Vec<String>,
    /// Weights the network has no variable for.
    pub unexpected: Vec<String>,
    /// Same name, different shape (e.g. the class head for another `nc`).
    pub mismatched: Vec<String>,
}

impl LoadReport {
    /// ultralytics' line: `Transferred 355/355 items from pretrained weights`.
    pub fn line(&self) -> String {
        format!("Transferred {}/{} items from pretrained weights", self.loaded, self.total)
    }
}

/// Copy `tensors` into the variables of `varmap` with the same name and shape (ultralytics'
/// `intersect_dicts` transfer). `strict`: every variable must be filled exactly, else an error
/// naming the first differences.
pub fn load_into(varmap: &VarMap, tensors: &[(String, Tensor)], strict: bool) -> Result<LoadReport> {
    let data = varmap.data().lock().map_err(|_| Error::internal("VarMap lock poisoned"))?;
    let mut rep = LoadReport { total: data.len(), ..Default::default() };
    let mut seen = std::collections::HashSet::new();
    for (name, t) in tensors {
        match data.get(name) {
            None => {
                if !name.ends_with("num_batches_tracked") {
                    rep.unexpected.push(name.clone())
                }
            }
            Some(var) if var.dims() != t.dims() => {
                rep.mismatched.push(format!("{name}: checkpoint {:?}, network {:?}", t.dims(), var.dims()))
            }
            Some(var) => {
                var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
                rep.loaded += 1;
                seen.insert(name.as_str());
            }
        }
    }
    let mut missing: Vec<String> = data.keys().filter(|k| !seen.contains(k.as_str())).cloned().collect();
    missing.sort();
    rep.missing = missing;
    if strict && (!rep.missing.is_empty() || !rep.unexpected.is_empty() || !rep.mismatched.is_empty()) {
        let first = |v: &Vec<String>| v.iter().take(3).cloned().collect::<Vec<_>>().join("; ");
        return Err(Error::model(format!(
            "weights do not fit the network: {} missing ({}), {} unexpected ({}), {} of another shape ({})",
            rep.missing.len(),
            first(&rep.missing),
            rep.unexpected.len(),
            first(&rep.unexpected),
            rep.mismatched.len(),
            first(&rep.mismatched)
        ))
        .with_hint("the checkpoint was written for a different architecture"));
    }
    Ok(rep)
}

/// A network with its weights loaded, ready for eval or further training.
pub struct LoadedModel {
    pub model: YoloModel,
    pub varmap: VarMap,
    pub names: Vec<String>,
    pub meta: CheckpointMeta,
}

/// Build the network a checkpoint describes and load its weights exactly (strict).
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    let w = read_weights(path)?;
    let yaml = w.meta.model_yaml(path)?;
    let nc = if w.meta.nc > 0 { w.meta.nc } else { yaml.nc };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = YoloModel::new(&yaml, nc, vb).map_err(|e| e.with_file(path))?;
    load_into(&varmap, &w.tensors, true).map_err(|e| e.with_file(path))?;
    let names = if w.meta.names.len() == model.nc {
        w.meta.names.clone()
    } else {
        (0..model.nc).map(|i| i.to_string()).collect()
    };
    Ok(LoadedModel { model, varmap, names, meta: w.meta })
}

/// The URL an official weights file is downloaded from (`KUBEYOLO_WEIGHTS_URL` or ultralytics').
pub fn official_url(name: &str) -> String {
    let base = std::env::var(ENV_WEIGHTS_URL)
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_WEIGHTS_URL.to_string());
    format!("{}/{}", base.trim_end_matches('/'), name)
}

/// Make sure the official weights `name` (`yolov8n.pt`) are at `cache_path`, downloading them if
/// absent or invalid. Returns `cache_path`.
pub fn ensure_official(name: &str, cache_path: &Path) -> Result<PathBuf> {
    if cache_path.is_file() && check_pt_bytes(&std::fs::read(cache_path).unwrap_or_default()).is_ok() {
        return Ok(cache_path.to_path_buf());
    }
    let url = official_url(name);
    let bytes = download(&url).map_err(|e| {
        e.with_hint(format!(
            "no network? copy {name} to {} yourself, or set {ENV_WEIGHTS_URL} to a reachable mirror (base URL; the file name is appended)",
            cache_path.display()
        ))
    })?;
    check_pt_bytes(&bytes)
        .map_err(|why| Error::network(format!("downloaded {url} is not a valid weights file: {why}")))?;
    crate::files::write_atomic(cache_path, &bytes)?;
    Ok(cache_path.to_path_buf())
}

/// A plausible PyTorch checkpoint: big enough, a zip archive with a `data.pkl`.
fn check_pt_bytes(bytes: &[u8]) -> std::result::Result<(), String> {
    if bytes.len() < MIN_WEIGHTS_BYTES {
        return Err(format!("only {} bytes", bytes.len()));
    }
    let zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| format!("not a zip archive ({e})"))?;
    if !zip.file_names().any(|n| n.ends_with("data.pkl")) {
        return Err("no data.pkl in the archive".into());
    }
    Ok(())
}

/// GET `url` fully into memory, checking status and Content-Length.
fn download(url: &str) -> Result<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the download runtime: {e}")))?;
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(20))
            .timeout(std::time::Duration::from_secs(1800))
            .build()
            .map_err(|e| Error::network(format!("cannot create an HTTP client: {e}")))?;
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| Error::network(format!("cannot download {url}: {e}")).with_source(e))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::network(format!("cannot download {url}: HTTP {status}")));
        }
        let expected = resp.content_length();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::network(format!("download of {url} failed midway: {e}")).with_source(e))?;
        if let Some(n) = expected {
            if n as usize != bytes.len() {
                return Err(Error::network(format!("download of {url} is incomplete: {} of {n} bytes", bytes.len())));
            }
        }
        Ok(bytes.to_vec())
    })
}

/// Resolve a model source to a file: official weights are downloaded (and cached) when absent.
/// Yaml sources have no weights file and return None.
pub fn weights_file(src: &crate::root::ModelSource) -> Result<Option<PathBuf>> {
    use crate::root::ModelSource;
    match src {
        ModelSource::File { path, .. } if !src.is_yaml() => Ok(Some(path.clone())),
        ModelSource::OfficialWeights { name, cache_path } => Ok(Some(ensure_official(name, cache_path)?)),
        _ => Ok(None),
    }
}

/// The model yaml of a yaml source (a file or a built-in).
fn source_yaml(src: &crate::root::ModelSource) -> Result<ModelYaml> {
    use crate::root::ModelSource;
    match src {
        ModelSource::File { path, requested } => ModelYaml::load(path, requested),
        ModelSource::BuiltinArch { name } => {
            ModelYaml::builtin(name).ok_or_else(|| Error::internal(format!("built-in model yaml {name} missing")))
        }
        ModelSource::OfficialWeights { name, .. } => Err(Error::internal(format!("{name} is weights, not a yaml"))),
    }
}

/// A model for evaluation or prediction: weights sources load exactly (strict); a yaml source
/// builds a freshly initialised network with the yaml's `nc` (seeded, so runs agree).
pub fn load_source(src: &crate::root::ModelSource, device: &Device) -> Result<LoadedModel> {
    if let Some(path) = weights_file(src)? {
        return load_model(&path, device);
    }
    let yaml = source_yaml(src)?;
    let names: Vec<String> = (0..yaml.nc).map(|i| i.to_string()).collect();
    build_for_training(src, yaml.nc, &names, device, 0).map(|(m, _)| m)
}

/// A model to train on a dataset with `nc` classes named `names`, as ultralytics'
/// `DetectionTrainer.get_model` does: a yaml source builds a fresh network (PyTorch default
/// init, drawn from `seed`); a weights source builds the checkpoint's architecture with the
/// dataset's `nc` and transfers every tensor whose name and shape match (`intersect_dicts`:
/// with another `nc` the class head keeps its fresh init). Returns the report of the transfer
/// (None for a yaml).
pub fn build_for_training(
    src: &crate::root::ModelSource,
    nc: usize,
    names: &[String],
    device: &Device,
    seed: u64,
) -> Result<(LoadedModel, Option<LoadReport>)> {
    build_for_training_with(src, nc, names, device, seed, &Transfer::FromSource)
}

/// Which weights [`build_for_training_with`] transfers into the new network (ultralytics'
/// `pretrained` cfg key).
#[derive(Debug, Clone, PartialEq)]
pub enum Transfer {
    /// The source's own weights, when it is a weights file (`pretrained: True`).
    FromSource,
    /// None: a fresh network of the source's architecture (`pretrained: False`).
    Nothing,
    /// Another weights file (`pretrained: path/to/weights.pt`).
    File(PathBuf),
}

/// [`build_for_training`] with an explicit choice of transferred weights.
pub fn build_for_training_with(
    src: &crate::root::ModelSource,
    nc: usize,
    names: &[String],
    device: &Device,
    seed: u64,
    transfer: &Transfer,
) -> Result<(LoadedModel, Option<LoadReport>)> {
    let (yaml, weights, meta) = match weights_file(src)? {
        Some(path) => {
            let w = read_weights(&path)?;
            let yaml = w.meta.model_yaml(&path)?;
            let meta = w.meta.clone();
            (yaml, Some(w), meta)
        }
        None => {
            let yaml = source_yaml(src)?;
            let meta = CheckpointMeta {
                model_yaml: yaml.text.clone(),
                model_name: yaml.requested.clone(),
                scale: yaml.selected_scale_name().map(str::to_string),
                nc,
                writer: format!("kubeyolo {}", crate::VERSION),
                ..Default::default()
            };
            (yaml, None, meta)
        }
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = YoloModel::new(&yaml, nc, vb)?;
    model.seed_init(&varmap, seed)?;
    let other;
    let transferred = match transfer {
        Transfer::FromSource => weights.as_ref(),
        Transfer::Nothing => None,
        Transfer::File(p) => {
            other = read_weights(p)?;
            Some(&other)
        }
    };
    let report = match transferred {
        Some(w) => Some(load_into(&varmap, &w.tensors, false)?),
        None => None,
    };
    let mut meta = meta;
    meta.nc = model.nc;
    meta.names = names.to_vec();
    Ok((LoadedModel { model, varmap, names: names.to_vec(), meta }, report))
}
