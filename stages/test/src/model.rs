//! Loading the weights to test (ultralytics `.pt` or kubeyolo `.safetensors`, through
//! `kubeyolo::nn::weights`), plus what the report needs about them.

use std::path::Path;

use candle_core::Device;
use kubeyolo::error::Result;
use kubeyolo::nn::model::YoloModel;

pub struct Loaded {
    pub model: YoloModel,
    pub names: Vec<String>,
    /// The image size the weights were trained at (`train_args.imgsz`), if known.
    pub train_imgsz: Option<usize>,
    /// One line describing the model, for the log.
    pub summary: String,
}

pub fn load(path: &Path, device: &Device) -> Result<Loaded> {
    let lm = kubeyolo::nn::weights::load_model(path, device)?;
    let train_imgsz = lm.meta.train_args.get("imgsz").and_then(|v| v.as_u64()).map(|v| v as usize);
    let summary = format!("{} nc={}", lm.meta.model_name, lm.names.len());
    Ok(Loaded { model: lm.model, names: lm.names, train_imgsz, summary })
}
