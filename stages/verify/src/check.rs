//! The checks of the verify step, collected into one [`Report`] so every problem is shown at once.
//!
//! Each input is resolved under the data root ([`kubeyolo::root`]) and then opened the way the
//! later steps will open it: the cfg through [`Hyp`], a model yaml through [`ModelYaml`], weights
//! through `nn::weights` (the real reader), the dataset through [`Dataset`] (every split listed, images
//! counted, label files counted, every image's header read by [`crate::images`]). A problem in
//! one input never stops the checks of the others.

use std::path::PathBuf;

use kubeyolo::config::dataset::{label_path, Dataset};
use kubeyolo::config::hyp::{Hyp, LoadedHyp};
use kubeyolo::config::model_yaml::ModelYaml;
use kubeyolo::device::{parse_device, DeviceReport, DeviceRequest};
use kubeyolo::root::{DataRoot, ModelSource};
use kubeyolo::Error;
use serde_json::{json, Value};

use crate::images::{self, Finding};

/// Image warnings listed one by one (all splits together); the rest are counted in one line.
pub const MAX_IMAGE_WARNINGS: usize = 20;

/// Everything verify found: the resolved outputs (when all inputs resolved), the summary, and the
/// problems (non-empty = the step fails and writes no output).
pub struct Report {
    pub model_path: Option<String>,
    pub cfg_yaml: Option<PathBuf>,
    pub data_yaml: Option<PathBuf>,
    pub problems: Vec<Error>,
    pub warnings: Vec<String>,
    pub summary: serde_json::Map<String, Value>,
}

impl Report {
    /// Process exit code: 0 when fine, the problem's code for one problem, 1 for several.
    pub fn exit_code(&self) -> i32 {
        match self.problems.len() {
            0 => 0,
            1 => self.problems[0].exit_code(),
            _ => 1,
        }
    }

    /// The JSON printed on stdout.
    pub fn to_json(&self) -> Value {
        let mut m = self.summary.clone();
        m.insert("ok".into(), json!(self.problems.is_empty()));
        m.insert(
            "outputs".into(),
            json!({
                "model_path": self.model_path,
                "cfg_yaml": self.cfg_yaml.as_ref().map(|p| p.display().to_string()),
                "data_yaml": self.data_yaml.as_ref().map(|p| p.display().to_string()),
            }),
        );
        m.insert("warnings".into(), json!(self.warnings));
        m.insert("problems".into(), json!(self.problems.iter().map(|e| e.to_string()).collect::<Vec<_>>()));
        Value::Object(m)
    }
}

/// Run every check.
/// `check_images: false` (`--skip-image-check`) skips reading every image's header.
pub fn verify(root: &DataRoot, model_name: &str, cfg: &str, data: &str, check_images: bool) -> Report {
    let mut r = Report {
        model_path: None,
        cfg_yaml: None,
        data_yaml: None,
        problems: Vec::new(),
        warnings: Vec::new(),
        summary: serde_json::Map::new(),
    };
    r.summary.insert("data_root".into(), json!(root.path.display().to_string()));
    if !root.path.is_dir() {
        r.warnings.push(format!(
            "the data root {} is not a folder: mount the volume there, or set --data-root / KUBEYOLO_DATA_ROOT",
            root.path.display()
        ));
    }
    let model_nc = check_model(root, model_name, &mut r);
    check_cfg(root, cfg, &mut r);
    check_data(root, data, model_nc, check_images, &mut r);
    let device = DeviceReport::probe();
    r.summary.insert("device".into(), device.to_json());
    r.summary.insert("device_text".into(), json!(device.to_text()));
    r
}

/// The tune step's search space yaml (the pipeline's `tune_space`), checked as yolo-tune will
/// read it, so a mistake is reported before training rather than after it. Empty: 8.4's space.
pub fn check_tune_space(root: &DataRoot, space: &str, r: &mut Report) {
    match root.load_space(space) {
        Ok(Some((path, s))) => {
            r.summary.insert("tune_space".into(), json!({ "path": path.display().to_string(), "keys": s.dims.len() }));
        }
        Ok(None) => {}
        Err(e) => r.problems.push(e),
    }
}

/// Resolve and open the model (a yaml is parsed; weights are read in full through
/// `nn::weights`, as the train step will); returns the model's `nc`.
fn check_model(root: &DataRoot, name: &str, r: &mut Report) -> Option<usize> {
    let source = match root.resolve_model(name) {
        Ok(s) => s,
        Err(e) => {
            r.problems.push(e);
            return None;
        }
    };
    let mut info = json!({ "name": name, "source": source.kind(), "value": source.output_value() });
    let mut nc = None;
    match &source {
        ModelSource::BuiltinArch { name } => match ModelYaml::builtin(name) {
            Some(m) => nc = Some(describe_yaml(&m, &mut info, r)),
            None => r.problems.push(Error::internal(format!("built-in model yaml '{name}' failed to load"))),
        },
        ModelSource::File { path, requested } if source.is_yaml() => match ModelYaml::load(path, requested) {
            Ok(m) => {
                info["path"] = json!(path.display().to_string());
                nc = Some(describe_yaml(&m, &mut info, r));
            }
            Err(e) => r.problems.push(e),
        },
        ModelSource::File { path, .. } => {
            info["path"] = json!(path.display().to_string());
            match kubeyolo::nn::weights::read_weights(path) {
                Ok(w) => {
                    info["format"] = json!(path.extension().map(|e| e.to_string_lossy().to_string()));
                    info["writer"] = json!(w.meta.writer);
                    info["tensors"] = json!(w.tensors.len());
                    info["class_names"] = json!(w.meta.names);
                    match w.meta.model_yaml(path) {
                        Ok(m) => nc = Some(describe_yaml(&m, &mut info, r)),
                        Err(e) => r.problems.push(e),
                    }
                }
                Err(e) => r.problems.push(e),
            }
        }
        ModelSource::OfficialWeights { name, cache_path } => {
            r.warnings.push(format!(
                "{name} is not on the volume: the train step downloads it to {} on first use (that pod needs internet access; \
                 or copy the file there beforehand)",
                cache_path.display()
            ));
        }
    }
    r.model_path = Some(source.output_value());
    r.summary.insert("model".into(), info);
    nc
}

fn describe_yaml(m: &ModelYaml, info: &mut Value, r: &mut Report) -> usize {
    let scale = m.selected_scale();
    info["architecture"] = json!(m.display_name());
    info["scale"] = json!(m.selected_scale_name());
    info["depth_width_max_channels"] = json!([scale.depth, scale.width, scale.max_channels]);
    info["nc"] = json!(m.nc);
    info["layers"] = json!(m.layers().count());
    r.warnings.extend(m.warnings.iter().cloned());
    m.nc
}

fn check_cfg(root: &DataRoot, name: &str, r: &mut Report) {
    let builtin = matches!(name, "default" | "default.yaml");
    let (path, loaded) = match root.resolve_cfg(name) {
        Ok(p) => {
            let l = Hyp::load_all(&p);
            (p, l)
        }
        // `default`: ultralytics' built-in cfg, unless the volume has its own default.yaml
        Err(_) if builtin => {
            (PathBuf::from("default"), Ok(LoadedHyp { hyp: Hyp::default(), ignored: Vec::new(), warnings: Vec::new() }))
        }
        Err(e) => return r.problems.push(e),
    };
    match loaded {
        Ok(LoadedHyp { hyp, ignored, warnings }) => {
            // Keys of other modes and tasks (predict, export, pose, …) are listed in the summary
            // only; `warnings` names those set to values that would have changed training.
            r.warnings.extend(warnings);
            match parse_device(&hyp.device) {
                Ok(DeviceRequest::Cuda(ids)) if !kubeyolo::device::CUDA_BUILT => r.warnings.push(format!(
                    "cfg asks for GPU {ids:?} (device: {}); this verify binary has no CUDA support, so make sure the train step runs the CUDA image",
                    hyp.device
                )),
                Ok(_) => {}
                Err(e) => r.problems.push(e.with_file(&path)),
            }
            r.summary.insert(
                "cfg".into(),
                json!({
                    "path": path.display().to_string(),
                    "epochs": hyp.epochs, "imgsz": hyp.imgsz, "batch": batch_value(&hyp.batch),
                    "device": hyp.device, "optimizer": hyp.optimizer, "lr0": hyp.lr0,
                    "ignored_keys": ignored,
                }),
            );
            r.cfg_yaml = Some(path);
        }
        Err(errs) => r.problems.extend(errs),
    }
}

fn check_data(root: &DataRoot, name: &str, model_nc: Option<usize>, check_images: bool, r: &mut Report) {
    let path = match root.resolve_data(name) {
        Ok(p) => p,
        Err(e) => return r.problems.push(e),
    };
    let ds = match Dataset::load(&path, &root.path) {
        Ok(d) => d,
        Err(e) => return r.problems.push(e),
    };
    let mut splits = serde_json::Map::new();
    let mut ok = true;
    let mut image_warnings: Vec<String> = Vec::new();
    for split in ["train", "val", "test"] {
        if !ds.has_split(split) {
            if split == "test" {
                r.warnings.push(format!(
                    "{}: the dataset has no 'test' split, which the test step evaluates",
                    path.display()
                ));
            }
            continue;
        }
        match ds.split_images(split) {
            Ok(images) => {
                let labels = images.iter().filter(|i| label_path(i).is_file()).count();
                if labels == 0 {
                    r.warnings.push(format!(
                        "split '{split}': none of its {} images has a label file (looked for e.g. {}); they all count as backgrounds",
                        images.len(),
                        label_path(&images[0]).display()
                    ));
                }
                let mut info = json!({ "images": images.len(), "label_files": labels });
                if check_images {
                    let scan = images::scan(&images);
                    info["corrupt_images"] = json!(scan.corrupt());
                    info["usable_images"] = json!(scan.usable());
                    image_warnings.extend(scan.findings.iter().map(|(p, f)| images::describe(p, f)));
                    if scan.usable() == 0 {
                        ok = false;
                        let (first, why) = match scan.findings.first() {
                            Some((p, Finding::Corrupt(why))) => (p.display().to_string(), why.as_str()),
                            _ => (String::new(), ""),
                        };
                        r.problems.push(
                            Error::data(format!(
                                "split '{split}' has no usable image: all {} of its images are corrupt or unreadable (e.g. {first}: {why})",
                                images.len()
                            ))
                            .with_file(&path)
                            .with_key(split)
                            .with_hint(format!(
                                "remove or re-export the corrupt files (jpg, png, bmp, webp, tiff; at least {} px a side), \
                                 or point '{split}:' at a folder of valid images",
                                images::MIN_SIDE
                            )),
                        );
                    }
                }
                splits.insert(split.into(), info);
            }
            Err(e) => {
                ok = false;
                r.problems.push(e);
            }
        }
    }
    let unlisted = image_warnings.len().saturating_sub(MAX_IMAGE_WARNINGS);
    image_warnings.truncate(MAX_IMAGE_WARNINGS);
    r.warnings.extend(image_warnings);
    if unlisted > 0 {
        r.warnings.push(format!(
            "... and {unlisted} more image warnings not listed (counts per split: data.splits.*.corrupt_images in the JSON summary)"
        ));
    }
    if let Some(mnc) = model_nc {
        if mnc != ds.nc() {
            r.warnings.push(format!(
                "the model has nc={mnc}, the dataset {} classes: the dataset's count is used and the detection head is sized for it (as ultralytics does)",
                ds.nc()
            ));
        }
    }
    r.summary.insert(
        "data".into(),
        json!({
            "path": path.display().to_string(),
            "root": ds.root.display().to_string(),
            "nc": ds.nc(),
            "names": ds.names,
            "splits": splits,
            "image_check": if check_images { "headers" } else { "skipped" },
        }),
    );
    if ok {
        r.data_yaml = Some(path);
    }
}

/// `batch` as the cfg writes it: `16`, `-1` (AutoBatch) or a memory fraction `0.7`.
fn batch_value(b: &kubeyolo::config::hyp::Batch) -> Value {
    use kubeyolo::config::hyp::Batch;
    match b {
        Batch::Fixed(n) => json!(n),
        Batch::Auto => json!(-1),
        Batch::MemoryFraction(f) => json!(f),
    }
}
