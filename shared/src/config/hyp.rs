//! The cfg yaml (`cfg-custom.yaml`): training settings and hyper-parameters, ultralytics'
//! `cfg/default.yaml` keys.
//!
//! Users copy ultralytics' `default.yaml` (of whatever version they run) and edit it, so:
//! * **every key of it is accepted** — the current one (ultralytics 8.4, shipped as
//!   `assets/default.yaml`, see [`DEFAULT_YAML`]) and the keys older versions had and later
//!   renamed or removed (`half`, `int8`, `save_hybrid`, `label_smoothing`, `boxes`, ...);
//! * the keys that matter for detection train / val / tune are typed fields of [`Hyp`], with
//!   ultralytics' defaults when absent;
//! * the other keys (export, tracking, prediction display, segmentation, pose, ...) are accepted,
//!   reported once as *ignored*, and warned about only when set to a non-default value;
//! * a key that is neither is an error naming it, the file and line, with a did-you-mean;
//! * values are checked like ultralytics' `check_cfg` (its `CFG_FLOAT_KEYS`,
//!   `CFG_FRACTION_KEYS`, `CFG_INT_KEYS`, `CFG_BOOL_KEYS`, `CFG_STR_KEYS`, `CFG_INT_MIN` lists are
//!   mirrored in [`KEYS`]); a wrong type or range is an error naming key, value and expectation.
//!
//! All keys live in one table, [`KEYS`]: name, type, whether kubeyolo acts on it, default.
//! Values are held as validated yaml values (one source of truth, which is what [`Hyp::params`]
//! reports and [`Hyp::set`] edits) and mirrored into typed fields after every change.
//!
//! Checked against ultralytics 8.4's `check_cfg` on 65 key/value cases: the same accept/reject
//! decision on all but the deliberate differences below.
//!
//! Deliberate differences from ultralytics, each because the alternative is worse in a pod:
//! * bool keys also accept PyYAML's `yes/no/on/off` (ultralytics reads yaml with PyYAML, which
//!   turns them into bools; serde_yaml keeps them as strings);
//! * `True`/`False` are not numbers (Python lets `epochs: True` through as 1);
//! * a float with an exponent but no sign (`1.0e2`) is a number (PyYAML reads it as a string);
//! * the string `None` (e.g. `freeze: None` in ultralytics 8.0's default.yaml) counts as empty;
//! * `imgsz` is rounded up to a multiple of 32 (ultralytics' `check_imgsz` with the YOLOv8
//!   stride) here, with a warning, so every step sees the same size;
//! * `fraction` as a [train, val, test] list and `scale` as a (min, max) pair (ultralytics 8.4
//!   additions) are rejected with a clear message instead of being half-supported.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_yaml::Value;

use super::yaml_pos::{key_line, yaml_error};
use crate::error::{Error, Result};

/// Ultralytics' `cfg/default.yaml` (8.4), the file users copy. Its keys and defaults are the
/// [`KEYS`] table (a test keeps the two in step).
pub const DEFAULT_YAML: &str = include_str!("../../assets/default.yaml");

/// How a key's value is checked (ultralytics' `check_cfg` classes plus the special cases).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    /// `CFG_FLOAT_KEYS`: an int or a float.
    Float,
    /// `CFG_FRACTION_KEYS`: a number in [0, 1].
    Frac,
    /// `CFG_INT_KEYS` with its `CFG_INT_MIN` (integral floats like `1e2` accepted).
    Int(i64),
    /// `CFG_BOOL_KEYS`.
    Bool,
    /// `CFG_STR_KEYS`: a string, one of the listed choices when the list is not empty
    /// (compared case-insensitively, stored in the listed spelling).
    Str(&'static [&'static str]),
    /// `project` / `name`: a string; numbers are turned into strings (ultralytics does).
    Name,
    /// `batch`: int >= 1, -1 (auto), or a float in (0, 1) (fraction of GPU memory).
    Batch,
    /// `imgsz`: an int, or a list of one or two ints (train uses the largest).
    Imgsz,
    /// `cache`: True/'ram', 'disk', or False.
    Cache,
    /// `device`: '', 'cpu', 0, '0,1', [0, 1], 'cuda:0', -1.
    Device,
    /// `amp`: a bool or 'fp16' / 'bf16' / 'fp32'.
    Amp,
    /// `fraction`: a ratio in (0, 1] or an image count > 1.
    Fraction,
    /// `freeze`: empty, N (first N layers), or a list of layer indices / names.
    Freeze,
    /// `scale`: a number in [0, 1].
    Scale,
    /// `pretrained`: a bool or a weights path.
    Pretrained,
    /// `compile`: a bool or a mode string.
    Compile,
    /// `classes` / `embed`: an int or a list of ints.
    IntList,
    /// No check (keys kubeyolo ignores and ultralytics does not type either).
    Any,
}

/// Whether kubeyolo acts on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Used by train / val / test / tune.
    Used,
    /// Accepted (ultralytics knows it) but kubeyolo does nothing with it.
    Ignored,
    /// Set by the pipeline, not the cfg (`model`, `data`, `mode`): ignored with a warning that
    /// says which flag to use.
    Flag(&'static str),
}

/// One row of the key table.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    pub key: &'static str,
    pub ty: Ty,
    pub used: Use,
    /// Default as yaml text (`""` = empty/None), ultralytics 8.4's value.
    pub default: &'static str,
    /// Only in older ultralytics default.yaml (renamed or removed since); not in [`DEFAULT_YAML`].
    pub legacy: bool,
}

const fn k(key: &'static str, ty: Ty, used: Use, default: &'static str) -> KeySpec {
    KeySpec { key, ty, used, default, legacy: false }
}
const fn legacy(key: &'static str, ty: Ty, default: &'static str) -> KeySpec {
    KeySpec { key, ty, used: Use::Ignored, default, legacy: true }
}

use Ty::*;
use Use::{Ignored as I, Used as U};

const OPTIMIZERS: &[&str] = &["SGD", "MuSGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSProp", "auto"];

/// Ignored keys that would change a detection training run in ultralytics: only these (and
/// older versions' keys) are warned about when set. The other ignored keys belong to other
/// modes (predict, export, track) or tasks (segment, pose, classify) and change nothing here.
const CHANGE_DETECTION_TRAINING: &[&str] = &[
    "cls_remap",
    "profile",
    "compile",
    "channels_last",
    "quantize",
    "distill_model",
    "dis",
    "copy_paste",
    "copy_paste_mode",
];

/// Every key kubeyolo accepts in a cfg yaml, in `default.yaml` order, then older versions' keys.
pub const KEYS: &[KeySpec] = &[
    k("task", Str(&["detect", "segment", "semantic", "depth", "classify", "pose", "obb"]), U, "detect"),
    k(
        "mode",
        Str(&["train", "val", "predict", "export", "track", "benchmark"]),
        Use::Flag("the pipeline step (train, test, tune) sets the mode"),
        "train",
    ),
    // Train settings
    k("model", Any, Use::Flag("--model-name"), ""),
    k("data", Any, Use::Flag("--data"), ""),
    k("epochs", Int(1), U, "100"),
    k("time", Float, U, ""),
    k("patience", Int(0), U, "100"),
    k("batch", Ty::Batch, U, "16"),
    k("imgsz", Imgsz, U, "640"),
    k("save", Bool, U, "True"),
    k("save_period", Int(i64::MIN), U, "-1"),
    k("cache", Ty::Cache, U, "False"),
    k("device", Device, U, ""),
    k("workers", Int(0), U, "8"),
    k("project", Name, U, ""),
    k("name", Name, U, ""),
    k("exist_ok", Bool, U, "False"),
    k("pretrained", Ty::Pretrained, U, "True"),
    k("cls_remap", Bool, I, "True"),
    k("optimizer", Str(OPTIMIZERS), U, "auto"),
    k("verbose", Bool, U, "True"),
    k("seed", Int(0), U, "0"),
    k("deterministic", Bool, U, "True"),
    k("single_cls", Bool, U, "False"),
    k("rect", Bool, U, "False"),
    k("cos_lr", Bool, U, "False"),
    k("close_mosaic", Int(0), U, "10"),
    k("resume", Bool, U, "False"),
    k("amp", Amp, U, "True"),
    k("fraction", Ty::Fraction, U, "1.0"),
    k("profile", Bool, I, "False"),
    k("freeze", Ty::Freeze, U, ""),
    k("multi_scale", Frac, U, "0.0"),
    k("compile", Compile, I, "False"),
    k("channels_last", Bool, I, ""),
    // Segmentation / classification
    k("overlap_mask", Bool, I, "True"),
    k("mask_ratio", Int(1), I, "4"),
    k("dropout", Frac, I, "0.0"),
    // Val/Test settings
    k("val", Bool, U, "True"),
    k("split", Str(&["val", "test", "train"]), U, "val"),
    k("save_json", Bool, U, "False"),
    k("conf", Frac, U, ""),
    k("iou", Frac, U, "0.7"),
    k("max_det", Int(1), U, "300"),
    k("quantize", Any, I, ""),
    k("dnn", Bool, I, "False"),
    k("plots", Bool, U, "True"),
    k("nms", Bool, I, ""),
    // Predict settings
    k("source", Any, I, ""),
    k("vid_stride", Int(1), I, "1"),
    k("stream_buffer", Bool, I, "False"),
    k("visualize", Bool, I, "False"),
    k("augment", Bool, I, "False"),
    k("agnostic_nms", Bool, U, "False"),
    k("classes", IntList, I, ""),
    k("retina_masks", Bool, I, "False"),
    k("embed", IntList, I, ""),
    // Visualize settings
    k("show", Bool, I, "False"),
    k("save_frames", Bool, I, "False"),
    k("save_txt", Bool, I, "False"),
    k("save_conf", Bool, I, "False"),
    k("save_crop", Bool, I, "False"),
    k("show_labels", Bool, I, "True"),
    k("show_conf", Bool, I, "True"),
    k("show_boxes", Bool, I, "True"),
    k("line_width", Int(i64::MIN), I, ""),
    // Export settings
    k("format", Any, I, "torchscript"),
    k("optimize", Bool, I, "False"),
    k("dynamic", Bool, I, "False"),
    k("simplify", Bool, I, "True"),
    k("opset", Int(i64::MIN), I, ""),
    k("workspace", Float, I, ""),
    // Hyperparameters
    k("lr0", Frac, U, "0.01"),
    k("lrf", Frac, U, "0.01"),
    k("momentum", Frac, U, "0.937"),
    k("weight_decay", Frac, U, "0.0005"),
    k("warmup_epochs", Float, U, "3.0"),
    k("warmup_momentum", Frac, U, "0.8"),
    k("warmup_bias_lr", Frac, U, "0.1"),
    k("distill_model", Any, I, ""),
    k("dis", Float, I, "6.0"),
    k("box", Float, U, "7.5"),
    k("cls", Float, U, "0.5"),
    k("cls_pw", Frac, U, "0.0"),
    k("dfl", Float, U, "1.5"),
    k("pose", Float, I, "12.0"),
    k("kobj", Float, I, "1.0"),
    k("rle", Float, I, "1.0"),
    k("angle", Float, I, "1.0"),
    k("dlog", Float, I, "1.0"),
    k("dgrad", Float, I, "0.5"),
    k("dlam", Frac, I, "1.0"),
    k("nbs", Int(1), U, "64"),
    k("hsv_h", Frac, U, "0.015"),
    k("hsv_s", Frac, U, "0.7"),
    k("hsv_v", Frac, U, "0.4"),
    k("degrees", Float, U, "0.0"),
    k("translate", Frac, U, "0.1"),
    k("scale", Scale, U, "0.5"),
    k("shear", Float, U, "0.0"),
    k("perspective", Frac, U, "0.0"),
    k("flipud", Frac, U, "0.0"),
    k("fliplr", Frac, U, "0.5"),
    k("bgr", Frac, U, "0.0"),
    k("mosaic", Frac, U, "1.0"),
    k("mixup", Frac, U, "0.0"),
    k("cutmix", Frac, U, "0.0"),
    k("copy_paste", Frac, I, "0.0"),
    k("copy_paste_mode", Str(&["flip", "mixup"]), I, "flip"),
    k("auto_augment", Str(&["randaugment", "autoaugment", "augmix"]), I, "randaugment"),
    k("erasing", Frac, I, "0.4"),
    k("cfg", Any, I, ""),
    k("tracker", Any, I, "tracktrack.yaml"),
    // Keys of older ultralytics versions (8.0–8.3), renamed or removed since.
    legacy("half", Any, "False"),
    legacy("int8", Any, "False"),
    legacy("keras", Bool, "False"),
    legacy("save_hybrid", Bool, "False"),
    legacy("label_smoothing", Frac, "0.0"),
    legacy("crop_fraction", Frac, "1.0"),
    legacy("boxes", Bool, "True"),
    legacy("hide_labels", Bool, "False"),
    legacy("hide_conf", Bool, "False"),
    legacy("line_thickness", Int(i64::MIN), "3"),
    legacy("end2end", Bool, ""),
    legacy("v5loader", Bool, "False"),
    legacy("fl_gamma", Float, "0.0"),
    // Allowed custom keys (ultralytics' check_dict_alignment).
    legacy("save_dir", Any, ""),
    legacy("augmentations", Any, ""),
];

/// Defaults of older ultralytics default.yaml files (8.0–8.3) that differ from 8.4's, for keys
/// kubeyolo ignores: a copy of an old default.yaml should not warn about values its user never
/// changed.
const OLDER_DEFAULTS: &[(&str, &str)] = &[
    ("simplify", "False"),
    ("workspace", "4"),
    ("nms", "False"),
    ("tracker", "botsort.yaml"),
    ("copy_paste_mode", "flip"),
    ("format", "torchscript"),
];

/// Whether `v` is the default of ignored key `s` in the current or an older ultralytics.
fn is_a_default(s: &KeySpec, v: &Value) -> bool {
    same(v, &default_value(s))
        || OLDER_DEFAULTS
            .iter()
            .any(|(k, d)| *k == s.key && serde_yaml::from_str::<Value>(d).is_ok_and(|d| same(v, &d)))
}

/// The spec of `key`, if kubeyolo knows it.
pub fn spec(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|s| s.key == key)
}

/// `batch`: ultralytics' three forms.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Batch {
    /// A fixed batch size.
    Fixed(usize),
    /// `-1` (any value <= 0, as ultralytics): pick automatically (AutoBatch at 60% GPU memory).
    Auto,
    /// A float in (0, 1): pick automatically to use this fraction of GPU memory.
    MemoryFraction(f64),
}

/// `cache`: where decoded images are kept between epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Cache {
    Off,
    Ram,
    Disk,
}

/// `fraction`: how much of the train split to use.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub enum Fraction {
    /// A ratio in (0, 1].
    Ratio(f64),
    /// A number of images (> 1).
    Count(usize),
}

/// `freeze`: which layers keep their weights.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Freeze {
    None,
    /// The first N layers (`freeze: 10` freezes the backbone of YOLOv8).
    First(usize),
    /// Layer indices (`"3"`) or module name prefixes (`"23.cv2"`), as written.
    Layers(Vec<String>),
}

/// `pretrained`: start from the model's weights (true), from none (false), or from a file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum Pretrained {
    Yes,
    No,
    Path(String),
}

/// The validated cfg: typed fields for every key kubeyolo acts on (ultralytics' defaults when
/// absent). Change values with [`Hyp::set`] so [`Hyp::params`] stays in step.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyp {
    pub task: String,
    pub epochs: usize,
    /// Max hours to train; overrides `epochs` when set.
    pub time: Option<f64>,
    pub patience: usize,
    pub batch: Batch,
    /// Square train/val image size, already a multiple of 32.
    pub imgsz: usize,
    pub save: bool,
    /// Save a checkpoint every N epochs; disabled when < 1.
    pub save_period: i64,
    pub cache: Cache,
    /// Raw device request (`""`, `cpu`, `0`, `0,1`, `cuda:0`); see `device::select`.
    pub device: String,
    pub workers: usize,
    pub project: Option<String>,
    pub name: Option<String>,
    pub exist_ok: bool,
    pub pretrained: Pretrained,
    /// Canonical spelling: SGD, MuSGD, Adam, Adamax, AdamW, NAdam, RAdam, RMSProp or auto.
    pub optimizer: String,
    pub verbose: bool,
    pub seed: u64,
    pub deterministic: bool,
    pub single_cls: bool,
    pub rect: bool,
    pub cos_lr: bool,
    pub close_mosaic: usize,
    pub resume: bool,
    /// Mixed precision on; `amp: bf16` also sets `amp_bf16`.
    pub amp: bool,
    pub amp_bf16: bool,
    pub fraction: Fraction,
    pub freeze: Freeze,
    pub multi_scale: f64,
    pub val: bool,
    pub split: String,
    pub save_json: bool,
    /// Confidence threshold; None = the mode's default (val 0.001).
    pub conf: Option<f64>,
    pub iou: f64,
    pub max_det: usize,
    pub plots: bool,
    pub agnostic_nms: bool,
    pub lr0: f64,
    pub lrf: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    pub warmup_momentum: f64,
    pub warmup_bias_lr: f64,
    pub r#box: f64,
    pub cls: f64,
    pub cls_pw: f64,
    pub dfl: f64,
    pub nbs: usize,
    pub hsv_h: f64,
    pub hsv_s: f64,
    pub hsv_v: f64,
    pub degrees: f64,
    pub translate: f64,
    pub scale: f64,
    pub shear: f64,
    pub perspective: f64,
    pub flipud: f64,
    pub fliplr: f64,
    pub bgr: f64,
    pub mosaic: f64,
    pub mixup: f64,
    pub cutmix: f64,
    /// Every key's validated value (defaults filled in), the source of the fields above.
    values: BTreeMap<String, Value>,
}

/// [`Hyp::load`]'s result: the cfg plus what the step should tell the user.
#[derive(Debug, Clone)]
pub struct LoadedHyp {
    pub hyp: Hyp,
    /// Keys present in the file that kubeyolo does not act on (listed once).
    pub ignored: Vec<String>,
    /// Ignored keys set to non-default values, values adjusted, and other notes.
    pub warnings: Vec<String>,
}

impl Default for Hyp {
    fn default() -> Self {
        let mut values = BTreeMap::new();
        for s in KEYS {
            values.insert(s.key.to_string(), default_value(s));
        }
        let mut notes = Vec::new();
        // The defaults are validated in tests; a failure here would be a table bug.
        Hyp::from_values(values, &mut notes).expect("default cfg table is valid")
    }
}

fn default_value(s: &KeySpec) -> Value {
    if s.default.is_empty() {
        Value::Null
    } else {
        serde_yaml::from_str(s.default).unwrap_or(Value::Null)
    }
}

impl Hyp {
    /// Read and check a cfg yaml. Returns the first problem; see [`Hyp::load_all`] for all.
    pub fn load(path: &Path) -> Result<LoadedHyp> {
        Self::load_all(path).map_err(|mut errs| errs.remove(0))
    }

    /// Read and check a cfg yaml, collecting every problem (unknown keys, bad values) at once.
    /// The returned error list is never empty.
    pub fn load_all(path: &Path) -> std::result::Result<LoadedHyp, Vec<Error>> {
        let text = crate::files::read_text(path).map_err(|e| vec![e])?;
        Self::parse_all(&text, path)
    }

    /// Check cfg yaml `text` (`file` names it in errors), collecting every problem.
    pub fn parse_all(text: &str, file: &Path) -> std::result::Result<LoadedHyp, Vec<Error>> {
        // serde_yaml rejects a byte-order mark (PyYAML, hence ultralytics, accepts it)
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let root: Value = serde_yaml::from_str(text).map_err(|e| vec![yaml_error(&e, file, "cfg yaml")])?;
        let map = match root {
            Value::Mapping(m) => m,
            Value::Null => Default::default(),
            other => {
                return Err(vec![Error::config(format!("cfg yaml must be a mapping of `key: value` lines, found {}", short(&other)))
                    .with_file(file)
                    .with_hint("start from ultralytics' default.yaml (kubeyolo ships it: `yolo-verify --print-default-cfg`) and edit values")])
            }
        };
        let mut errors = Vec::new();
        let mut ignored = Vec::new();
        let mut warnings = Vec::new();
        let mut values: BTreeMap<String, Value> = KEYS.iter().map(|s| (s.key.to_string(), default_value(s))).collect();
        let at = |e: Error, key: &str| match key_line(text, key) {
            Some(l) => e.with_file(file).with_line(l),
            None => e.with_file(file),
        };
        for (k, v) in &map {
            let key = match k {
                Value::String(s) => s.clone(),
                other => short(other),
            };
            let Some(s) = spec(&key) else {
                errors.push(at(unknown_key(&key), &key));
                continue;
            };
            match check(s, v) {
                Ok(v) => {
                    match s.used {
                        Use::Used => {}
                        Use::Ignored => {
                            ignored.push(key.clone());
                            if !is_a_default(s, &v) && (s.legacy || CHANGE_DETECTION_TRAINING.contains(&s.key)) {
                                warnings.push(format!(
                                    "cfg '{key}: {}' has no effect in kubeyolo (ignored){}",
                                    short(&v),
                                    if s.legacy { "; it is from an older ultralytics default.yaml" } else { "" }
                                ));
                            }
                        }
                        Use::Flag(flag) => {
                            ignored.push(key.clone());
                            if !same(&v, &default_value(s)) {
                                warnings.push(format!("cfg '{key}: {}' is ignored: {flag}", short(&v)));
                            }
                        }
                    }
                    values.insert(key, v);
                }
                Err(msg) => errors.push(at(Error::config(msg).with_key(&key).with_hint(expectation(s)), &key)),
            }
        }
        if map.is_empty() {
            warnings.push(format!("cfg yaml {} is empty: every setting takes ultralytics' default", file.display()));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        match Hyp::from_values(values, &mut warnings) {
            Ok(hyp) => Ok(LoadedHyp { hyp, ignored, warnings }),
            Err(e) => {
                let key = e.key.clone().unwrap_or_default();
                Err(vec![at(e, &key)])
            }
        }
    }

    /// Set one key from text, as a CLI override or the tuner does: `set("lr0", "0.02")`.
    /// The text is read as a yaml scalar (`true`, `0.5`, `[0, 1]`, empty = None) and checked like
    /// a cfg file value. Ignored keys can be set too (they stay ignored).
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let s = spec(key).ok_or_else(|| unknown_key(key))?;
        let v: Value = serde_yaml::from_str(value).map_err(|e| {
            Error::config(format!("value '{value}' for '{key}' is not valid yaml: {e}"))
                .with_key(key)
                .with_hint(expectation(s))
        })?;
        let v = check(s, &v).map_err(|msg| Error::config(msg).with_key(key).with_hint(expectation(s)))?;
        let mut values = self.values.clone();
        values.insert(key.to_string(), v);
        let mut notes = Vec::new();
        *self = Hyp::from_values(values, &mut notes)?;
        Ok(())
    }

    /// Apply `--set KEY=VALUE` overrides, in order.
    pub fn apply_overrides(&mut self, sets: &[String]) -> Result<()> {
        for kv in sets {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Error::usage(format!("--set {kv}: expected KEY=VALUE")).with_hint("e.g. --set epochs=3")
            })?;
            self.set(k.trim(), v.trim())?;
        }
        Ok(())
    }

    /// The validated value of any key (defaults filled in), None for unknown keys.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Every key (current default.yaml keys, in its order; older versions' keys only when set to
    /// something other than their default) as `(key, text)`, texts as Python prints them
    /// (`True`, `None`, `0.01`), for MLflow params and reports.
    pub fn params(&self) -> Vec<(String, String)> {
        KEYS.iter()
            .filter(|s| !s.legacy || !same(&self.values[s.key], &default_value(s)))
            .map(|s| (s.key.to_string(), py_text(&self.values[s.key])))
            .collect()
    }

    /// The cfg as a yaml text with every key (as ultralytics' `args.yaml` in a run folder).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for s in KEYS.iter().filter(|s| !s.legacy || !same(&self.values[s.key], &default_value(s))) {
            let v = &self.values[s.key];
            let text = match v {
                Value::Null => String::new(),
                _ => serde_yaml::to_string(v).map(|t| t.trim_end().to_string()).unwrap_or_default(),
            };
            let _ = writeln!(out, "{}: {}", s.key, text);
        }
        out
    }

    /// Build the typed view from validated values. Cross-key checks and adjustments happen here.
    fn from_values(values: BTreeMap<String, Value>, notes: &mut Vec<String>) -> Result<Hyp> {
        let v = |k: &str| values.get(k).cloned().unwrap_or(Value::Null);
        let f = |k: &str| v(k).as_f64().unwrap_or(0.0);
        let u = |k: &str| v(k).as_i64().unwrap_or(0).max(0) as usize;
        let b = |k: &str| v(k).as_bool().unwrap_or(false);
        let s = |k: &str| match v(k) {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => py_text(&other),
        };
        let opt_s = |k: &str| match v(k) {
            Value::Null => None,
            _ => Some(s(k)),
        };

        let task = if v("task").is_null() { "detect".to_string() } else { s("task") };
        if task != "detect" {
            return Err(Error::config(format!(
                "task '{task}' is not supported: kubeyolo trains detection models only"
            ))
            .with_key("task")
            .with_hint("set `task: detect` (or remove the line)"));
        }
        let batch = match v("batch").as_f64() {
            Some(x) if x <= 0.0 => Batch::Auto,
            Some(x) if x > 0.0 && x < 1.0 => Batch::MemoryFraction(x),
            Some(x) => Batch::Fixed(x as usize),
            None => Batch::Fixed(16),
        };
        let imgsz_raw = match v("imgsz") {
            Value::Sequence(s) => s.iter().filter_map(Value::as_u64).max().unwrap_or(640),
            other => other.as_u64().unwrap_or(640),
        } as usize;
        let imgsz = imgsz_raw.div_ceil(32).max(1) * 32;
        if imgsz != imgsz_raw {
            notes.push(format!(
                "imgsz {imgsz_raw} is not a multiple of the max stride 32; using {imgsz} (as ultralytics does)"
            ));
        }
        if matches!(v("imgsz"), Value::Sequence(ref s) if s.len() > 1) {
            notes.push(format!(
                "imgsz is a list; training uses the square size {imgsz} (its largest value, as ultralytics does)"
            ));
        }
        let cache = match v("cache") {
            Value::Bool(true) => Cache::Ram,
            Value::String(s) if s == "ram" => Cache::Ram,
            Value::String(s) if s == "disk" => Cache::Disk,
            _ => Cache::Off,
        };
        let (amp, amp_bf16) = match v("amp") {
            Value::Bool(x) => (x, false),
            Value::String(s) => (s != "fp32", s == "bf16"),
            _ => (true, false),
        };
        let fraction = match v("fraction") {
            Value::Number(n) if n.is_i64() && n.as_i64().unwrap_or(0) > 1 => {
                Fraction::Count(n.as_i64().unwrap_or(0) as usize)
            }
            other => Fraction::Ratio(other.as_f64().unwrap_or(1.0)),
        };
        let freeze = match v("freeze") {
            Value::Number(n) => Freeze::First(n.as_u64().unwrap_or(0) as usize),
            Value::Sequence(items) => Freeze::Layers(items.iter().map(py_text).collect()),
            _ => Freeze::None,
        };
        let pretrained = match v("pretrained") {
            Value::Bool(true) => Pretrained::Yes,
            Value::String(p) if !p.is_empty() => Pretrained::Path(p),
            Value::Null => Pretrained::Yes,
            _ => Pretrained::No,
        };
        Ok(Hyp {
            task,
            epochs: u("epochs"),
            time: v("time").as_f64(),
            patience: u("patience"),
            batch,
            imgsz,
            save: b("save"),
            save_period: v("save_period").as_i64().unwrap_or(-1),
            cache,
            device: s("device"),
            workers: u("workers"),
            project: opt_s("project"),
            name: opt_s("name"),
            exist_ok: b("exist_ok"),
            pretrained,
            optimizer: s("optimizer"),
            verbose: b("verbose"),
            seed: u("seed") as u64,
            deterministic: b("deterministic"),
            single_cls: b("single_cls"),
            rect: b("rect"),
            cos_lr: b("cos_lr"),
            close_mosaic: u("close_mosaic"),
            resume: b("resume"),
            amp,
            amp_bf16,
            fraction,
            freeze,
            multi_scale: f("multi_scale"),
            val: b("val"),
            split: s("split"),
            save_json: b("save_json"),
            conf: v("conf").as_f64(),
            iou: f("iou"),
            max_det: u("max_det"),
            plots: b("plots"),
            agnostic_nms: b("agnostic_nms"),
            lr0: f("lr0"),
            lrf: f("lrf"),
            momentum: f("momentum"),
            weight_decay: f("weight_decay"),
            warmup_epochs: f("warmup_epochs"),
            warmup_momentum: f("warmup_momentum"),
            warmup_bias_lr: f("warmup_bias_lr"),
            r#box: f("box"),
            cls: f("cls"),
            cls_pw: f("cls_pw"),
            dfl: f("dfl"),
            nbs: u("nbs"),
            hsv_h: f("hsv_h"),
            hsv_s: f("hsv_s"),
            hsv_v: f("hsv_v"),
            degrees: f("degrees"),
            translate: f("translate"),
            scale: f("scale"),
            shear: f("shear"),
            perspective: f("perspective"),
            flipud: f("flipud"),
            fliplr: f("fliplr"),
            bgr: f("bgr"),
            mosaic: f("mosaic"),
            mixup: f("mixup"),
            cutmix: f("cutmix"),
            values,
        })
    }
}

/// Check one value against its key's type; Ok(normalised value) or Err(message naming the value).
fn check(s: &KeySpec, v: &Value) -> std::result::Result<Value, String> {
    let key = s.key;
    // `None` written as text (PyYAML reads it as the string 'None') counts as empty.
    let v = match v {
        Value::String(t) if t == "None" => &Value::Null,
        Value::Tagged(t) => &t.value,
        other => other,
    };
    if v.is_null() {
        let nullable = s.default.is_empty() || s.ty == Any || ["task", "mode", "auto_augment"].contains(&key);
        return if nullable {
            Ok(Value::Null)
        } else {
            Err("is empty, but it must have a value (ultralytics: None is invalid here)".to_string())
        };
    }
    let shown = short(v);
    let num = |v: &Value| -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
    };
    match s.ty {
        Any => Ok(v.clone()),
        Float => num(v).map(|_| v.clone()).ok_or_else(|| format!("value {shown} must be a number")),
        Frac => match num(v) {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(v.clone()),
            Some(_) => Err(format!("value {shown} is out of range: it must be between 0.0 and 1.0")),
            None => Err(format!("value {shown} must be a number between 0.0 and 1.0")),
        },
        Scale => match num(v) {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(v.clone()),
            Some(_) => Err(format!("value {shown} is out of range: it must be between 0.0 and 1.0")),
            None if v.is_sequence() => Err(format!("value {shown}: a (min, max) scale pair is not supported by kubeyolo; use one number in [0, 1] (the gain ±)")),
            None => Err(format!("value {shown} must be a number between 0.0 and 1.0")),
        },
        Int(min) => {
            let i = match v {
                Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64)),
                _ => None,
            };
            match i {
                Some(i) if i >= min => Ok(Value::Number(i.into())),
                Some(_) => Err(format!("value {shown} is out of range: it must be >= {min}")),
                None => Err(format!("value {shown} must be a whole number")),
            }
        }
        Bool => as_bool(v).map(Value::Bool).ok_or_else(|| format!("value {shown} must be True or False")),
        Str(choices) => {
            let Value::String(t) = v else { return Err(format!("value {shown} must be a string")) };
            if choices.is_empty() {
                return Ok(v.clone());
            }
            match choices.iter().find(|c| c.eq_ignore_ascii_case(t)) {
                Some(c) => Ok(Value::String(c.to_string())),
                None => Err(format!("value {shown} is not one of: {}", choices.join(", "))),
            }
        }
        Name => match v {
            Value::String(_) => Ok(v.clone()),
            Value::Number(_) | Value::Bool(_) => Ok(Value::String(py_text(v))),
            _ => Err(format!("value {shown} must be a name (text)")),
        },
        Ty::Batch => match num(v) {
            Some(x) if x <= 0.0 => Ok(v.clone()),
            Some(x) if x > 0.0 && x < 1.0 => Ok(v.clone()),
            Some(x) if x >= 1.0 && x.fract() == 0.0 => Ok(Value::Number((x as i64).into())),
            _ => Err(format!("value {shown} must be a whole batch size >= 1, -1 (automatic), or a fraction of GPU memory in (0, 1)")),
        },
        Imgsz => {
            let ok = |x: &Value| x.as_u64().is_some_and(|i| i >= 1);
            match v {
                Value::Number(_) if ok(v) => Ok(v.clone()),
                Value::Sequence(items) if (1..=2).contains(&items.len()) && items.iter().all(ok) => Ok(v.clone()),
                _ => Err(format!("value {shown} must be an image size in pixels (e.g. 640), or a list [h, w]")),
            }
        }
        Ty::Cache => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(t) if t.eq_ignore_ascii_case("ram") || t.eq_ignore_ascii_case("disk") => Ok(Value::String(t.to_ascii_lowercase())),
            Value::String(t) => as_bool(v).map(Value::Bool).ok_or_else(|| format!("value {t} must be True/ram, disk, or False")),
            _ => Err(format!("value {shown} must be True/ram, disk, or False")),
        },
        Device => match v {
            Value::String(t) => Ok(Value::String(t.trim().to_string())),
            Value::Number(n) if n.as_i64().is_some() => Ok(Value::String(n.to_string())),
            Value::Sequence(items) if items.iter().all(|x| x.as_i64().is_some()) => {
                Ok(Value::String(items.iter().map(py_text).collect::<Vec<_>>().join(",")))
            }
            _ => Err(format!("value {shown} must be cpu, a GPU index (0), a list of them (0,1), or empty for automatic")),
        },
        Amp => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(t) if ["fp16", "bf16", "fp32"].contains(&t.to_ascii_lowercase().as_str()) => Ok(Value::String(t.to_ascii_lowercase())),
            _ => as_bool(v).map(Value::Bool).ok_or_else(|| format!("value {shown} must be True, False, fp16, bf16 or fp32")),
        },
        Ty::Fraction => match v {
            Value::Number(n) if n.as_i64().is_some_and(|i| i > 1) => Ok(v.clone()),
            Value::Number(n) if n.as_f64().is_some_and(|x| x > 0.0 && x <= 1.0) => Ok(v.clone()),
            Value::Sequence(_) => Err(format!("value {shown}: per-split fractions are not supported by kubeyolo; use one ratio in (0, 1] or an image count > 1")),
            _ => Err(format!("value {shown} must be a ratio in (0, 1] or an image count > 1")),
        },
        Ty::Freeze => match v {
            Value::Number(n) if n.as_u64().is_some() => Ok(v.clone()),
            Value::Sequence(items) if items.iter().all(|x| x.as_u64().is_some() || x.is_string()) => Ok(v.clone()),
            _ => Err(format!("value {shown} must be a number of layers (e.g. 10) or a list of layer indices / names")),
        },
        Ty::Pretrained => match v {
            Value::Bool(_) => Ok(v.clone()),
            Value::String(_) => Ok(as_bool(v).map(Value::Bool).unwrap_or_else(|| v.clone())),
            _ => Err(format!("value {shown} must be True, False, or a weights path")),
        },
        Compile => match v {
            Value::Bool(_) | Value::String(_) => Ok(v.clone()),
            _ => Err(format!("value {shown} must be True, False, or a mode string")),
        },
        IntList => match v {
            Value::Number(n) if n.as_i64().is_some() => Ok(v.clone()),
            Value::Sequence(items) if items.iter().all(|x| x.as_i64().is_some()) => Ok(v.clone()),
            _ => Err(format!("value {shown} must be an int or a list of ints")),
        },
    }
}

/// A bool as PyYAML reads one (`true`/`True`/`yes`/`on`/...).
fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(t) => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "y" => Some(true),
            "false" | "no" | "off" | "n" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// What a key expects, as a hint.
fn expectation(s: &KeySpec) -> String {
    let default = if s.default.is_empty() { "empty".to_string() } else { s.default.to_string() };
    format!("see ultralytics' default.yaml for '{}' (default: {default}); remove the line to use the default", s.key)
}

/// An unknown key, with did-you-mean.
fn unknown_key(key: &str) -> Error {
    let mut scored: Vec<(f64, &str)> = KEYS
        .iter()
        .map(|s| (strsim::jaro_winkler(key, s.key).max(strsim::normalized_levenshtein(key, s.key)), s.key))
        .filter(|(score, _)| *score >= 0.8)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let hint = match scored.first() {
        Some((_, best)) => {
            let others: Vec<&str> = scored.iter().skip(1).take(2).map(|(_, k)| *k).collect();
            if others.is_empty() {
                format!("did you mean '{best}'? Valid keys are those of ultralytics' default.yaml")
            } else {
                format!(
                    "did you mean '{best}' (or {})? Valid keys are those of ultralytics' default.yaml",
                    others.join(", ")
                )
            }
        }
        None => {
            "remove it; valid keys are those of ultralytics' default.yaml (`yolo-verify --print-default-cfg` prints it)"
                .to_string()
        }
    };
    Error::config("unknown cfg key (not in ultralytics' default.yaml)").with_key(key).with_hint(hint)
}

/// Compare values for "set to a non-default value", treating 0 and 0.0 as equal.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A value as Python's `str()` prints it: `True`, `None`, `0.01`, `[0, 1]`, strings bare.
pub fn py_text(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => {
            let inner: Vec<String> = items
                .iter()
                .map(|x| match x {
                    Value::String(s) => format!("'{s}'"),
                    other => py_text(other),
                })
                .collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Mapping(_) | Value::Tagged(_) => short(v),
    }
}

/// A value as short one-line text for messages.
fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(empty)".into(),
        _ => serde_yaml::to_string(v).map(|s| s.trim().replace('\n', " ")).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> std::result::Result<LoadedHyp, Vec<Error>> {
        Hyp::parse_all(text, Path::new("cfg.yaml"))
    }

    #[test]
    fn table_matches_shipped_default_yaml() {
        let root: Value = serde_yaml::from_str(DEFAULT_YAML).unwrap();
        let map = root.as_mapping().unwrap();
        let file_keys: Vec<&str> = map.keys().map(|k| k.as_str().unwrap()).collect();
        let table_keys: Vec<&str> = KEYS.iter().filter(|s| !s.legacy).map(|s| s.key).collect();
        assert_eq!(file_keys, table_keys, "KEYS must list default.yaml's keys in its order");
        for s in KEYS.iter().filter(|s| !s.legacy) {
            let v = &map[s.key];
            assert!(same(v, &default_value(s)), "default of {}: file {:?} table {:?}", s.key, v, s.default);
            assert_eq!(check(s, v).map(|_| ()), Ok(()), "{}", s.key);
        }
        // the shipped file loads with no warnings and equals the defaults
        let loaded = parse(DEFAULT_YAML).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(loaded.hyp, Hyp::default());
        assert!(loaded.ignored.contains(&"tracker".to_string()));
    }

    #[test]
    fn defaults_like_ultralytics() {
        let h = Hyp::default();
        assert_eq!((h.epochs, h.patience, h.imgsz, h.batch), (100, 100, 640, Batch::Fixed(16)));
        assert_eq!((h.lr0, h.lrf, h.momentum, h.weight_decay), (0.01, 0.01, 0.937, 0.0005));
        assert_eq!((h.r#box, h.cls, h.dfl, h.nbs), (7.5, 0.5, 1.5, 64));
        assert_eq!((h.mosaic, h.fliplr, h.scale, h.translate), (1.0, 0.5, 0.5, 0.1));
        assert_eq!((h.optimizer.as_str(), h.close_mosaic, h.seed), ("auto", 10, 0));
        assert_eq!((h.conf, h.iou, h.max_det), (None, 0.7, 300));
        assert!(h.amp && h.val && h.plots && h.deterministic && !h.cos_lr);
        assert_eq!(h.device, "");
        assert_eq!(h.freeze, Freeze::None);
        assert_eq!(h.pretrained, Pretrained::Yes);
    }

    #[test]
    fn typed_values_and_ignored_keys() {
        let l = parse("epochs: 3\nbatch: -1\nimgsz: 100\nlr0: 0.02\ndevice: 0\noptimizer: adamw\nfreeze: None\ncache: disk\nformat: onnx\nshow: False\namp: bf16\nrect: yes\nproject: 2024\nfraction: 50\n").unwrap();
        let h = &l.hyp;
        assert_eq!(h.epochs, 3);
        assert_eq!(h.batch, Batch::Auto);
        assert_eq!(h.imgsz, 128);
        assert_eq!(h.lr0, 0.02);
        assert_eq!(h.device, "0");
        assert_eq!(h.optimizer, "AdamW");
        assert_eq!(h.freeze, Freeze::None);
        assert_eq!(h.cache, Cache::Disk);
        assert!(h.amp && h.amp_bf16 && h.rect);
        assert_eq!(h.project.as_deref(), Some("2024"));
        assert_eq!(h.fraction, Fraction::Count(50));
        assert_eq!(l.ignored, vec!["format".to_string(), "show".to_string()]);
        // export's `format` changes nothing in training: listed as ignored, not warned about
        assert_eq!(l.warnings.iter().filter(|w| w.contains("no effect")).count(), 0, "{:?}", l.warnings);
        let l2 = parse("copy_paste: 0.5\nformat: onnx\n").unwrap();
        assert_eq!(l2.warnings.iter().filter(|w| w.contains("no effect")).count(), 1, "{:?}", l2.warnings);
        assert!(l2.warnings.iter().any(|w| w.contains("copy_paste: 0.5")));
        assert!(l.warnings.iter().any(|w| w.contains("using 128")));
        let l = parse("batch: 0.7\nfreeze: 10\ndevice: [0, 1]\nimgsz: [480, 640]\nmodel: yolov8s.pt\n").unwrap();
        assert_eq!(l.hyp.batch, Batch::MemoryFraction(0.7));
        assert_eq!(l.hyp.freeze, Freeze::First(10));
        assert_eq!(l.hyp.device, "0,1");
        assert_eq!(l.hyp.imgsz, 640);
        assert!(l.warnings.iter().any(|w| w.contains("--model-name")), "{:?}", l.warnings);
    }

    #[test]
    fn older_ultralytics_default_yaml_is_accepted() {
        // keys only older versions had
        let l = parse("half: False\nint8: False\nkeras: False\nsave_hybrid: False\nlabel_smoothing: 0.0\nfreeze: None\nworkspace: 4\nnms: False\nsimplify: False\ntracker: botsort.yaml\n").unwrap();
        assert_eq!(l.hyp.freeze, Freeze::None);
        assert!(l.ignored.contains(&"half".into()) && l.ignored.contains(&"label_smoothing".into()));
        assert!(l.warnings.is_empty(), "old defaults are not warned about: {:?}", l.warnings);
        let l = parse("label_smoothing: 0.1\n").unwrap();
        assert!(l.warnings[0].contains("older ultralytics"), "{:?}", l.warnings);
    }

    #[test]
    fn unknown_keys_all_reported_with_did_you_mean_and_line() {
        let errs = parse("epochs: 3\nlr: 0.1\nmomentun: 0.9\nzzz_top: 1\n").unwrap_err();
        assert_eq!(errs.len(), 3);
        assert_eq!(errs[0].line, Some(2));
        assert_eq!(errs[0].key.as_deref(), Some("lr"));
        assert!(errs[1].to_string().contains("did you mean 'momentum'"), "{}", errs[1]);
        assert_eq!(errs[1].line, Some(3));
        assert!(!errs[2].to_string().contains("did you mean"));
        assert!(errs.iter().all(|e| e.file.as_deref() == Some(Path::new("cfg.yaml")) && e.exit_code() == 3));
        let e = parse("epoch: 3\n").unwrap_err();
        assert!(e[0].to_string().contains("did you mean 'epochs'"), "{}", e[0]);
    }

    #[test]
    fn wrong_types_and_ranges() {
        let cases = [
            ("epochs: ten\n", "must be a whole number"),
            ("epochs: 0\n", ">= 1"),
            ("epochs: 1.5\n", "whole number"),
            ("lr0: 2\n", "between 0.0 and 1.0"),
            ("mosaic: high\n", "between 0.0 and 1.0"),
            ("box: [1]\n", "must be a number"),
            ("rect: maybe\n", "True or False"),
            ("optimizer: Adagrad\n", "not one of"),
            ("batch: 1.5\n", "batch size"),
            ("batch: 2.5\n", "batch size"),
            ("imgsz: -5\n", "image size"),
            ("cache: gpu\n", "ram"),
            ("amp: fp8\n", "fp16"),
            ("fraction: 0\n", "ratio"),
            ("fraction: [0.5, 0.5]\n", "not supported"),
            ("scale: [0.5, 1.5]\n", "not supported"),
            ("epochs:\n", "must have a value"),
            ("task: segment\n", "detection models only"),
            ("split: holdout\n", "not one of"),
        ];
        for (text, want) in cases {
            let errs = parse(text).unwrap_err();
            let s = errs[0].to_string();
            assert!(s.contains(want), "{text}: {s}");
            assert_eq!(errs[0].line, Some(1), "{text}");
            assert!(errs[0].key.is_some() && errs[0].hint.is_some(), "{text}");
        }
        // all bad values reported at once
        assert_eq!(parse("epochs: x\nlr0: 5\nrect: 3\n").unwrap_err().len(), 3);
        // integral floats are ints (ultralytics: 'epochs=1e2')
        assert_eq!(parse("epochs: 1.0e2\n").unwrap().hyp.epochs, 100);
        // batch below 1 means AutoBatch in ultralytics' trainer
        assert_eq!(parse("batch: 0\n").unwrap().hyp.batch, Batch::Auto);
    }

    #[test]
    fn malformed_yaml_shows_line() {
        let errs = parse("epochs: 3\nlr0: [0.1\nbatch: 4\n").unwrap_err();
        assert!(errs[0].line.is_some(), "{}", errs[0]);
        assert!(errs[0].to_string().contains("not valid yaml"));
        let errs = parse("epochs: 3\nepochs: 4\n").unwrap_err();
        assert!(errs[0].to_string().contains("duplicate"), "{}", errs[0]);
        assert!(parse("- a\n- b\n").is_err());
        // Windows editors: byte-order mark and CRLF line ends
        let errs = parse("\u{feff}epochs: 3\r\nlr0: 5\r\n").unwrap_err();
        assert_eq!((errs.len(), errs[0].line), (1, Some(2)), "{}", errs[0]);
        assert_eq!(parse("\u{feff}epochs: 3\r\n").unwrap().hyp.epochs, 3);
        let l = parse("# nothing\n").unwrap();
        assert!(l.warnings[0].contains("empty"));
    }

    #[test]
    fn set_and_params() {
        let mut h = Hyp::default();
        h.set("lr0", "0.02").unwrap();
        h.set("epochs", "5").unwrap();
        h.set("cos_lr", "true").unwrap();
        h.set("device", "cpu").unwrap();
        assert_eq!((h.lr0, h.epochs, h.cos_lr, h.device.as_str()), (0.02, 5, true, "cpu"));
        assert!(h.set("lr0", "3").is_err());
        assert!(h.set("lr00", "0.1").unwrap_err().to_string().contains("did you mean 'lr0'"));
        assert_eq!(h.lr0, 0.02, "a failed set leaves the value");
        let params: BTreeMap<String, String> = h.params().into_iter().collect();
        assert_eq!(params["lr0"], "0.02");
        assert_eq!(params["cos_lr"], "True");
        assert_eq!(params["conf"], "None");
        assert_eq!(params["warmup_epochs"], "3.0");
        assert!(!params.contains_key("half"), "legacy keys at default are not reported");
        assert_eq!(h.params().len(), KEYS.iter().filter(|s| !s.legacy).count());
        // to_yaml round-trips
        let again = parse(&h.to_yaml()).unwrap().hyp;
        assert_eq!(again, h);
    }
}
