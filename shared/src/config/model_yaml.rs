//! Ultralytics model yamls (`yolov8.yaml`, a user's `yolov8-scratch.yaml`): parsed here, built
//! into a network in `nn::model`.
//!
//! A model yaml holds `nc`, either `scales: {n: [depth, width, max_channels], ...}` or the older
//! `depth_multiple` / `width_multiple`, and the layer rows of `backbone` and `head`, each
//! `[from, repeats, module, args]`. Users request a *scaled* name such as `yolov8n.yaml` or
//! `yolov8s-scratch.yaml`: the scale letter picks a row of `scales` and is removed to find the
//! file (`yolov8.yaml`, `yolov8-scratch.yaml`), exactly as ultralytics' `yaml_model_load` /
//! `guess_model_scale` do (see [`split_scale`]).
//!
//! What is checked here: the shape of the file (types of every field, rows of four, `from`
//! indices that point at earlier layers, scale rows of three numbers, the requested scale
//! exists). What is *not* checked here: whether a module name is one kubeyolo can build, and
//! channel arithmetic — `nn::model` does that and can name the row's line through
//! [`LayerSpec::line`].
//!
//! The original text is kept ([`ModelYaml::text`]) so checkpoints can store the exact yaml the
//! network was built from, as ultralytics checkpoints do.

use std::path::Path;

use serde_yaml::Value;

use super::yaml_pos::{key_line, seq_item_line, show_value as show, value_kind as kind, yaml_error};
use crate::error::{Error, Result};

/// The built-in architecture yaml (ultralytics `cfg/models/v8/yolov8.yaml`, unchanged).
pub const YOLOV8_YAML: &str = include_str!("../../assets/models/yolov8.yaml");

/// Built-in model yamls by file name: requesting `yolov8{n,s,m,l,x}.yaml` needs no file.
pub const BUILTIN_FILES: &[(&str, &str)] = &[("yolov8.yaml", YOLOV8_YAML)];

/// One row of `scales`: compound scaling of depth (repeats), width (channels) and a channel cap.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Scale {
    pub depth: f64,
    pub width: f64,
    /// Channel cap before width scaling (`usize::MAX` when the yaml gives none, as ultralytics'
    /// `float("inf")`).
    pub max_channels: usize,
}

/// One `[from, repeats, module, args]` row of `backbone` or `head`.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSpec {
    /// Input layer indices: negative are relative (-1 = previous layer), others absolute.
    pub from: Vec<i64>,
    /// Whether `from` was written as a list (`[-1, 6]`) rather than a single int (`-1`).
    /// Ultralytics indexes channels differently for the two forms, so it is kept.
    pub from_is_list: bool,
    /// Repeats before depth scaling (see [`ModelYaml::scaled_repeats`]).
    pub repeats: i64,
    /// Module name as written: `Conv`, `C2f`, `SPPF`, `nn.Upsample`, `Concat`, `Detect`, ...
    pub module: String,
    /// Arguments as written. Bare `None`/`True`/`nc` arrive as yaml strings; use
    /// [`LayerSpec::resolved_args`] for ultralytics' interpretation.
    pub args: Vec<Value>,
    /// 1-based line of the row in the yaml, for error messages (None when it could not be placed).
    pub line: Option<usize>,
}

/// A parsed model yaml with the scale requested through its name.
#[derive(Debug, Clone)]
pub struct ModelYaml {
    /// Number of classes as written in the yaml (the dataset's count overrides it for training).
    pub nc: usize,
    /// `scales` rows in file order (the first one is the default, so order matters).
    pub scales: Vec<(String, Scale)>,
    /// Older yamls without `scales`: `depth_multiple` / `width_multiple` (default 1.0).
    pub depth_multiple: Option<f64>,
    pub width_multiple: Option<f64>,
    /// Scale letter requested through the name (`yolov8n.yaml` → `n`), None when the name has none.
    pub scale: Option<String>,
    /// `activation:` override (e.g. `nn.ReLU()`), when the yaml sets one.
    pub activation: Option<String>,
    pub backbone: Vec<LayerSpec>,
    pub head: Vec<LayerSpec>,
    /// The name the model was requested by (`yolov8n-scratch.yaml`), ultralytics' `yaml_file`.
    pub requested: String,
    /// Where the text came from (a path, or `<builtin>/yolov8.yaml`), for error messages.
    pub origin: String,
    /// The original yaml text, stored in checkpoints.
    pub text: String,
    /// Non-fatal notes (e.g. "no scale in the name, assuming n"), for the step's report.
    pub warnings: Vec<String>,
}

/// Split a requested model name into the file to read and the scale letter, like ultralytics:
///
/// * `yolov8n.yaml` → (`yolov8.yaml`, `Some('n')`)
/// * `yolov8s-scratch.yaml` → (`yolov8-scratch.yaml`, `Some('s')`)
/// * `yolov8.yaml` / `my-net.yaml` → (unchanged, `None`)
/// * `yolov8n6.yaml` → (`yolov8-p6.yaml`, `Some('n')`) (ultralytics' P6 rename)
/// * `custom8n.yaml` → (`custom8.yaml`, `None`): ultralytics removes the letter after the first
///   digit run from the file name, but only recognises a *scale* in names of the form
///   `yolo[e-][v]<digits><letter>`; without one the first row of `scales` is used.
///
/// Only the file name is rewritten; folders in `name` are kept. Callers should first try the
/// name as given (a file literally called `yolov8n-scratch.yaml` wins), as ultralytics does.
pub fn split_scale(name: &str) -> (String, Option<char>) {
    let (dir, file) = match name.rfind('/') {
        Some(i) => name.split_at(i + 1),
        None => ("", name),
    };
    let (stem, ext) = match file.rfind('.') {
        Some(i) if i > 0 => file.split_at(i),
        _ => (file, ""),
    };
    let scale = guess_scale(stem);
    let mut stem = stem.to_string();
    // P6 rename: yolov8n6 -> yolov8n-p6 (only for the exact yolov{5,8}{scale}6 stems).
    if let Some(s) = scale {
        for d in ['5', '8'] {
            if stem == format!("yolov{d}{s}6") {
                stem = format!("yolov{d}{s}-p6");
            }
        }
    }
    // Ultralytics: re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", path) — drop the letter after the
    // first digit run that is directly followed by a scale letter.
    let b = stem.as_bytes();
    let mut i = 0;
    let mut unified = stem.clone();
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let mut j = i;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j < b.len() && b"nslmx".contains(&b[j]) {
                unified = format!("{}{}", &stem[..j], &stem[j + 1..]);
                break;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    (format!("{dir}{unified}{ext}"), scale)
}

/// Ultralytics' `guess_model_scale`: `re.search(r"yolo(e-)?[v]?\d+([nslmx])", stem)`.
fn guess_scale(stem: &str) -> Option<char> {
    let b = stem.as_bytes();
    let mut from = 0;
    while let Some(pos) = stem[from..].find("yolo") {
        let mut i = from + pos + 4;
        if stem[i..].starts_with("e-") {
            i += 2;
        }
        if i < b.len() && b[i] == b'v' {
            i += 1;
        }
        let digits = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i > digits && i < b.len() && b"nslmx".contains(&b[i]) {
            return Some(b[i] as char);
        }
        from += pos + 1;
    }
    None
}

impl ModelYaml {
    /// Parse model yaml `text`. `origin` names the source in errors (a path or `<builtin>/...`);
    /// `requested_name` is the name the user asked for, whose scale letter selects the scale.
    pub fn parse(text: &str, origin: &str, requested_name: &str) -> Result<ModelYaml> {
        // serde_yaml rejects a byte-order mark (PyYAML, hence ultralytics, accepts it)
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let file = Path::new(origin);
        let root: Value = serde_yaml::from_str(text).map_err(|e| yaml_error(&e, file, "model yaml"))?;
        let err = |key: &str, msg: String, hint: &str| {
            let mut e = Error::config(msg).with_file(file).with_key(key).with_hint(hint);
            if let Some(l) = key_line(text, key) {
                e = e.with_line(l);
            }
            e
        };
        let map = match root {
            Value::Mapping(m) => m,
            other => {
                return Err(Error::config(format!(
                    "model yaml must be a mapping of keys (nc, scales, backbone, head), found {}",
                    kind(&other)
                ))
                .with_file(file)
                .with_hint("start from ultralytics' yolov8.yaml and edit its backbone/head"))
            }
        };
        let get = |k: &str| map.get(Value::String(k.to_string()));

        let nc = match get("nc") {
            Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v >= 1) => n.as_u64().unwrap_or(1) as usize,
            Some(v) => {
                return Err(err(
                    "nc",
                    format!("nc must be a whole number >= 1, found {}", show(v)),
                    "write e.g. `nc: 80` (the dataset's class count overrides it when training)",
                ))
            }
            None => {
                return Err(Error::config("model yaml has no `nc`")
                    .with_file(file)
                    .with_key("nc")
                    .with_hint("add a line `nc: 80` (the dataset's class count overrides it when training)"))
            }
        };

        let mut scales = Vec::new();
        match get("scales") {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    let name = match k {
                        Value::String(s) => s.clone(),
                        other => show(other),
                    };
                    let nums: Option<Vec<f64>> = match v {
                        Value::Sequence(s) if s.len() == 3 => s.iter().map(Value::as_f64).collect(),
                        _ => None,
                    };
                    let Some(nums) = nums.filter(|n| n[0] > 0.0 && n[1] > 0.0 && n[2] >= 1.0) else {
                        return Err(err("scales", format!("scale '{name}' must be [depth, width, max_channels] (three positive numbers), found {}", show(v)), "write e.g. `n: [0.33, 0.25, 1024]`"));
                    };
                    scales.push((name, Scale { depth: nums[0], width: nums[1], max_channels: nums[2] as usize }));
                }
            }
            Some(v) => {
                return Err(err(
                    "scales",
                    format!("scales must be a mapping like `n: [0.33, 0.25, 1024]`, found {}", show(v)),
                    "see ultralytics' yolov8.yaml for the format",
                ))
            }
        }
        let multiple = |k: &str| -> Result<Option<f64>> {
            match get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(x) if x > 0.0 => Ok(Some(x)),
                    _ => Err(err(
                        k,
                        format!("{k} must be a positive number, found {}", show(v)),
                        "write e.g. `depth_multiple: 0.33`",
                    )),
                },
            }
        };
        let depth_multiple = multiple("depth_multiple")?;
        let width_multiple = multiple("width_multiple")?;
        let activation = match get("activation") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(err(
                    "activation",
                    format!("activation must be a string like `nn.SiLU()`, found {}", show(v)),
                    "remove the line to keep the default SiLU",
                ))
            }
        };

        let backbone = parse_rows(text, file, get("backbone"), "backbone", 0)?;
        let head = parse_rows(text, file, get("head"), "head", backbone.len())?;
        if backbone.is_empty() {
            return Err(err(
                "backbone",
                "model yaml has no backbone layers".into(),
                "add `backbone:` with `[from, repeats, module, args]` rows (see yolov8.yaml)",
            ));
        }

        let (_, letter) = split_scale(requested_name);
        let mut warnings = Vec::new();
        let scale = letter.map(|c| c.to_string());
        if !scales.is_empty() {
            match &scale {
                Some(s) if !scales.iter().any(|(k, _)| k == s) => {
                    let known: Vec<&str> = scales.iter().map(|(k, _)| k.as_str()).collect();
                    return Err(err("scales", format!("model '{requested_name}' asks for scale '{s}', but the yaml's scales are: {}", known.join(", ")), "add that row to `scales`, or request a name with one of the listed scale letters"));
                }
                Some(_) => {}
                None => warnings.push(format!("no model scale in the name '{requested_name}'; assuming scale '{}' (the first row of scales), as ultralytics does", scales[0].0)),
            }
        }
        Ok(ModelYaml {
            nc,
            scales,
            depth_multiple,
            width_multiple,
            scale,
            activation,
            backbone,
            head,
            requested: requested_name.to_string(),
            origin: origin.to_string(),
            text: text.to_string(),
            warnings,
        })
    }

    /// Read and parse the model yaml at `path`, requested as `requested_name` (often the path
    /// itself, or the scaled name that was mapped to this file).
    pub fn load(path: &Path, requested_name: &str) -> Result<ModelYaml> {
        let text = crate::files::read_text(path)?;
        Self::parse(&text, &path.display().to_string(), requested_name)
    }

    /// The built-in architecture for `requested_name` (`yolov8n.yaml`, ..., `yolov8.yaml`, with or
    /// without folders), or None when the name is not a built-in.
    pub fn builtin(requested_name: &str) -> Option<ModelYaml> {
        let text = builtin_text(requested_name)?;
        let base = base_name(requested_name);
        let (file, _) = split_scale(base);
        // The shipped yamls are tested to parse; an error here would be a packaging bug.
        Self::parse(text, &format!("<builtin>/{file}"), base).ok()
    }

    /// The scale the network is built with: the requested row of `scales`, else its first row,
    /// else `depth_multiple`/`width_multiple` (1.0 when absent) with no channel cap.
    pub fn selected_scale(&self) -> Scale {
        if let Some((_, s)) = self.scale.as_ref().and_then(|want| self.scales.iter().find(|(k, _)| k == want)) {
            return *s;
        }
        if let Some((_, s)) = self.scales.first() {
            return *s;
        }
        Scale {
            depth: self.depth_multiple.unwrap_or(1.0),
            width: self.width_multiple.unwrap_or(1.0),
            max_channels: usize::MAX,
        }
    }

    /// The scale letter in effect (requested, else the first of `scales`), None for unscaled yamls.
    pub fn selected_scale_name(&self) -> Option<&str> {
        self.scale.as_deref().or_else(|| self.scales.first().map(|(k, _)| k.as_str()))
    }

    /// Every layer in build order: backbone rows, then head rows (indices as in `from`).
    pub fn layers(&self) -> impl Iterator<Item = &LayerSpec> {
        self.backbone.iter().chain(self.head.iter())
    }

    /// Repeats after depth scaling, as ultralytics: `max(round(n * depth), 1) if n > 1 else n`.
    pub fn scaled_repeats(&self, layer: &LayerSpec) -> i64 {
        let n = layer.repeats;
        if n > 1 {
            ((n as f64 * self.selected_scale().depth).round() as i64).max(1)
        } else {
            n
        }
    }

    /// Human name of the architecture: `yolov8n` for `yolov8n.yaml`.
    pub fn display_name(&self) -> String {
        let base = base_name(&self.requested);
        base.strip_suffix(".yaml").or_else(|| base.strip_suffix(".yml")).unwrap_or(base).to_string()
    }
}

impl LayerSpec {
    /// Arguments as ultralytics' `parse_model` reads them: a string equal to `nc` becomes `nc`,
    /// Python literals written as strings (`None`, `True`, `False`, numbers) become values, and
    /// other strings (`nearest`) stay strings.
    pub fn resolved_args(&self, nc: usize) -> Vec<Value> {
        self.args
            .iter()
            .map(|a| match a {
                Value::String(s) => match s.as_str() {
                    "nc" => Value::Number((nc as u64).into()),
                    "None" => Value::Null,
                    "True" => Value::Bool(true),
                    "False" => Value::Bool(false),
                    other => other
                        .parse::<i64>()
                        .map(|i| Value::Number(i.into()))
                        .or_else(|_| other.parse::<f64>().map(|f| Value::Number(f.into())))
                        .unwrap_or_else(|_| a.clone()),
                },
                _ => a.clone(),
            })
            .collect()
    }
}

/// The built-in yaml text for a requested name, if it is one.
fn builtin_text(requested_name: &str) -> Option<&'static str> {
    let (file, _) = split_scale(base_name(requested_name));
    BUILTIN_FILES.iter().find(|(name, _)| *name == file).map(|(_, text)| *text)
}

/// Whether `name` (e.g. `yolov8n.yaml`) is a built-in architecture that needs no file.
pub fn is_builtin(name: &str) -> bool {
    builtin_text(name).is_some()
}

fn base_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Parse the rows of `backbone` or `head`; `offset` is the index of the section's first layer.
fn parse_rows(text: &str, file: &Path, section: Option<&Value>, key: &str, offset: usize) -> Result<Vec<LayerSpec>> {
    let rows = match section {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Sequence(rows)) => rows,
        Some(v) => {
            let mut e = Error::config(format!(
                "`{key}` must be a list of [from, repeats, module, args] rows, found {}",
                show(v)
            ))
            .with_file(file)
            .with_key(key)
            .with_hint("write one `- [from, repeats, module, args]` line per layer, as in yolov8.yaml");
            if let Some(l) = key_line(text, key) {
                e = e.with_line(l);
            }
            return Err(e);
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let index = offset + i;
        let line = seq_item_line(text, key, i).or_else(|| key_line(text, key));
        let bad = |msg: String, hint: &str| {
            let mut e = Error::config(format!("{key} row {i} (layer {index}): {msg}"))
                .with_file(file)
                .with_key(key)
                .with_hint(hint);
            if let Some(l) = line {
                e = e.with_line(l);
            }
            e
        };
        let cells = match row {
            Value::Sequence(c) if c.len() == 4 => c,
            other => {
                return Err(bad(
                    format!("expected [from, repeats, module, args], found {}", show(other)),
                    "each row has exactly four fields, e.g. `- [-1, 1, Conv, [64, 3, 2]]`",
                ))
            }
        };
        let (from, from_is_list) = match &cells[0] {
            Value::Number(n) => (n.as_i64().map(|v| vec![v]), false),
            Value::Sequence(s) if !s.is_empty() => (s.iter().map(Value::as_i64).collect(), true),
            _ => (None, false),
        };
        let Some(from) = from else {
            return Err(bad(
                format!("`from` must be a layer index or a list of them, found {}", show(&cells[0])),
                "use -1 for the previous layer, or e.g. [-1, 6] to concatenate with layer 6",
            ));
        };
        for &f in &from {
            let target = if f < 0 { index as i64 + f } else { f };
            if target < 0 && !(index == 0 && f == -1) {
                return Err(bad(
                    format!("`from` {f} points before the first layer"),
                    "negative indices count back from this layer; -1 is the previous one",
                ));
            }
            if target >= index as i64 && !(index == 0 && f == -1) {
                return Err(bad(
                    format!("`from` {f} points at layer {target}, which is not before this layer {index}"),
                    "a layer can only read from earlier layers (indices count backbone rows first, then head rows)",
                ));
            }
        }
        let repeats = match cells[1].as_i64() {
            Some(n) if n >= 1 => n,
            _ => {
                return Err(bad(
                    format!("`repeats` must be a whole number >= 1, found {}", show(&cells[1])),
                    "write 1 for a single block",
                ))
            }
        };
        let module = match &cells[2] {
            Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
            other => {
                return Err(bad(
                    format!("`module` must be a module name like Conv or C2f, found {}", show(other)),
                    "see yolov8.yaml for the module names",
                ))
            }
        };
        let args = match &cells[3] {
            Value::Sequence(a) => a.clone(),
            Value::Null => Vec::new(),
            other => {
                return Err(bad(
                    format!("`args` must be a list, found {}", show(other)),
                    "write e.g. [64, 3, 2], or [] for none",
                ))
            }
        };
        out.push(LayerSpec { from, from_is_list, repeats, module, args, line });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_forms_like_ultralytics() {
        assert_eq!(split_scale("yolov8n.yaml"), ("yolov8.yaml".into(), Some('n')));
        assert_eq!(split_scale("yolov8x.yaml"), ("yolov8.yaml".into(), Some('x')));
        assert_eq!(split_scale("yolov8s-scratch.yaml"), ("yolov8-scratch.yaml".into(), Some('s')));
        assert_eq!(split_scale("cfg-yaml/yolov8m-scratch.yaml"), ("cfg-yaml/yolov8-scratch.yaml".into(), Some('m')));
        assert_eq!(split_scale("yolov8.yaml"), ("yolov8.yaml".into(), None));
        assert_eq!(split_scale("yolov8-scratch.yaml"), ("yolov8-scratch.yaml".into(), None));
        assert_eq!(split_scale("yolo11l.yaml"), ("yolo11.yaml".into(), Some('l')));
        assert_eq!(split_scale("yoloe-v8s.yaml"), ("yoloe-v8.yaml".into(), Some('s')));
        assert_eq!(split_scale("yolov8n6.yaml"), ("yolov8-p6.yaml".into(), Some('n')));
        assert_eq!(split_scale("my-net.yaml"), ("my-net.yaml".into(), None));
        // ultralytics strips the letter from the file but recognises no scale outside yolo names
        assert_eq!(split_scale("custom8n.yaml"), ("custom8.yaml".into(), None));
        // folders are never rewritten
        assert_eq!(split_scale("v2s/net.yaml"), ("v2s/net.yaml".into(), None));
        // (name, unified file, scale) as printed by ultralytics 8.4's yaml_model_load /
        // guess_model_scale (regexes run in Python on these names)
        let ultralytics = [
            ("yolov8n.yaml", "yolov8.yaml", Some('n')),
            ("yolov8x.yaml", "yolov8.yaml", Some('x')),
            ("yolov8s-scratch.yaml", "yolov8-scratch.yaml", Some('s')),
            ("yolov8.yaml", "yolov8.yaml", None),
            ("yolov8-scratch.yaml", "yolov8-scratch.yaml", None),
            ("yolo11l.yaml", "yolo11.yaml", Some('l')),
            ("yoloe-v8s.yaml", "yoloe-v8.yaml", Some('s')),
            ("yolov8n6.yaml", "yolov8-p6.yaml", Some('n')),
            ("my-net.yaml", "my-net.yaml", None),
            ("custom8n.yaml", "custom8.yaml", None),
            ("yolov8n-p2.yaml", "yolov8-p2.yaml", Some('n')),
            ("yolov5su.yaml", "yolov5u.yaml", Some('s')),
            ("yolov10n.yaml", "yolov10.yaml", Some('n')),
            ("yolov8m-seg.yaml", "yolov8-seg.yaml", Some('m')),
            ("net2s3m.yaml", "net23m.yaml", None),
            ("yolo26x.yaml", "yolo26.yaml", Some('x')),
            ("a1b2c.yaml", "a1b2c.yaml", None),
        ];
        for (name, file, scale) in ultralytics {
            assert_eq!(split_scale(name), (file.to_string(), scale), "{name}");
        }
    }

    #[test]
    fn builtin_yolov8_all_scales() {
        for (s, width) in [("n", 0.25), ("s", 0.5), ("m", 0.75), ("l", 1.0), ("x", 1.25)] {
            let m = ModelYaml::builtin(&format!("yolov8{s}.yaml")).expect("builtin");
            assert_eq!(m.nc, 80);
            assert_eq!(m.scale.as_deref(), Some(s));
            assert_eq!(m.selected_scale().width, width);
            assert_eq!(m.backbone.len(), 10);
            assert_eq!(m.head.len(), 13);
            assert!(m.warnings.is_empty());
        }
        let m = ModelYaml::builtin("yolov8m.yaml").unwrap();
        assert_eq!(m.selected_scale(), Scale { depth: 0.67, width: 0.75, max_channels: 768 });
        assert_eq!(m.display_name(), "yolov8m");
        let detect = m.layers().last().unwrap();
        assert_eq!(detect.module, "Detect");
        assert_eq!(detect.from, vec![15, 18, 21]);
        assert!(detect.from_is_list);
        assert_eq!(detect.line, Some(49));
        assert_eq!(detect.resolved_args(3), vec![Value::Number(3u64.into())]);
        let up = &m.head[0];
        assert_eq!(up.module, "nn.Upsample");
        assert_eq!(
            up.resolved_args(80),
            vec![Value::Null, Value::Number(2i64.into()), Value::String("nearest".into())]
        );
        // C2f with 6 repeats at depth 0.67 -> 4
        assert_eq!(m.scaled_repeats(&m.backbone[4]), 4);
        assert_eq!(m.scaled_repeats(&m.backbone[0]), 1);
        assert!(ModelYaml::builtin("yolov9n.yaml").is_none());
        assert!(ModelYaml::builtin("yolov8n-scratch.yaml").is_none());
        assert!(is_builtin("yolov8l.yaml") && is_builtin("yolov8.yaml") && !is_builtin("yolov8n.pt"));
    }

    #[test]
    fn unscaled_name_takes_first_scale_with_warning() {
        let m = ModelYaml::builtin("yolov8.yaml").unwrap();
        assert_eq!(m.scale, None);
        assert_eq!(m.selected_scale_name(), Some("n"));
        assert_eq!(m.selected_scale().width, 0.25);
        assert_eq!(m.warnings.len(), 1);
        assert!(m.warnings[0].contains("assuming scale 'n'"));
    }

    #[test]
    fn older_multiples_yaml() {
        let text = "nc: 3\ndepth_multiple: 0.33\nwidth_multiple: 0.5\nbackbone:\n  - [-1, 1, Conv, [16, 3, 2]]\nhead:\n  - [[-1], 1, Detect, [nc]]\n";
        let m = ModelYaml::parse(text, "old.yaml", "old.yaml").unwrap();
        assert_eq!(m.selected_scale(), Scale { depth: 0.33, width: 0.5, max_channels: usize::MAX });
        assert!(m.warnings.is_empty());
        assert_eq!(m.head[0].from, vec![-1]);
    }

    #[test]
    fn malformed_yaml_names_line() {
        let text = "nc: 80\nbackbone:\n  - [-1, 1, Conv, [64, 3, 2]]\n  - [-1, 1, Conv, [128, 3, 2]\nhead: []\n";
        let e = ModelYaml::parse(text, "bad.yaml", "bad.yaml").unwrap_err();
        assert_eq!(e.file.as_deref(), Some(Path::new("bad.yaml")));
        assert!(e.line.is_some(), "{e}");
        assert!(e.to_string().contains("not valid yaml"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_row_line() {
        let base = "nc: 80\nscales:\n  n: [0.33, 0.25, 1024]\nbackbone:\n  - [-1, 1, Conv, [64, 3, 2]]\n  # comment\n  - [-1, 1, Conv, [128, 3, 2]]\nhead:\n";
        let cases = [
            ("  - [5, 1, Conv, [8]]\n", "not before this layer", 9),
            ("  - [-1, 0, Conv, [8]]\n", "repeats", 9),
            ("  - [-1, 1, Conv]\n", "expected [from, repeats, module, args]", 9),
            ("  - [-1, 1, 7, [8]]\n", "module", 9),
            ("  - [-1, 1, Conv, 8]\n", "args", 9),
            ("  - [[-1, x], 1, Concat, [1]]\n", "from", 9),
        ];
        for (row, want, line) in cases {
            let text = format!("{base}{row}");
            let e = ModelYaml::parse(&text, "m.yaml", "m.yaml").unwrap_err();
            assert!(e.to_string().contains(want), "{row}: {e}");
            assert_eq!(e.line, Some(line), "{row}: {e}");
            assert!(e.hint.is_some());
        }
        let e = ModelYaml::parse(
            "nc: 80\nscales:\n  n: [0.33, 0.25, 1024]\nbackbone:\n  - [-1, 1, Conv, [8]]\n",
            "m.yaml",
            "yolov8x-m.yaml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("scale 'x'"), "{e}");
        assert_eq!(e.line, Some(2));
        let e = ModelYaml::parse("nc: zero\nbackbone: []\n", "m.yaml", "m.yaml").unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = ModelYaml::parse("backbone:\n  - [-1, 1, Conv, [8]]\n", "m.yaml", "m.yaml").unwrap_err();
        assert!(e.to_string().contains("no `nc`"));
        let e = ModelYaml::parse(
            "nc: 2\nscales:\n  n: [0.3, 0.2]\nbackbone:\n  - [-1, 1, Conv, [8]]\n",
            "m.yaml",
            "m.yaml",
        )
        .unwrap_err();
        assert!(e.to_string().contains("three positive numbers"), "{e}");
        let e = ModelYaml::parse("- 1\n", "m.yaml", "m.yaml").unwrap_err();
        assert!(e.to_string().contains("mapping"));
    }

    #[test]
    fn scratch_yaml_scale_from_name() {
        let text = YOLOV8_YAML.replace("nc: 80", "nc: 4");
        let m = ModelYaml::parse(&text, "/data/yolov8-scratch.yaml", "yolov8s-scratch.yaml").unwrap();
        assert_eq!(m.nc, 4);
        assert_eq!(m.scale.as_deref(), Some("s"));
        assert_eq!(m.selected_scale().width, 0.5);
        assert_eq!(m.text, text);
        let bom = format!("\u{feff}{}", text.replace('\n', "\r\n"));
        assert_eq!(ModelYaml::parse(&bom, "w.yaml", "yolov8s-w.yaml").unwrap().layers().count(), 23);
    }
}
