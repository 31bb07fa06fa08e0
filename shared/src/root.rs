//! The data root (`/data`) and how the names users type resolve under it.
//!
//! In the pipeline every step mounts the same volume at `/data`; users pass short names
//! (`yolov8n.pt`, `cfg-custom`, `data-custom`) and keep their files in that volume, either at its
//! top or in the conventional folders `weights/`, `cfg-yaml/`, `data-yaml/` (the seed's layout).
//! Outside a cluster the root is any folder: `--data-root` (each binary) wins over the
//! environment variable `KUBEYOLO_DATA_ROOT`, which wins over `/data`.
//!
//! Lookup rules (as the seed's verify step, plus ultralytics' model-name rules):
//! 1. add a missing extension: `.pt` for models (unless the name ends in `.yaml`, `.yml`, `.pt`
//!    or `.safetensors`), `.yaml` for cfg and data (unless `.yaml`/`.yml`);
//! 2. an absolute path is used as is;
//! 3. a relative name is tried under the root, then under the kind's conventional folder
//!    (`weights/` for models — also `cfg-yaml/` for model yamls, which users keep beside their
//!    cfgs — `cfg-yaml/` for cfg, `data-yaml/` for data);
//! 4. a model yaml named with a scale letter (`yolov8n-scratch.yaml`) is tried as written, then as
//!    its unscaled file (`yolov8-scratch.yaml`) in each place, as ultralytics' `yaml_model_load`;
//! 5. the built-in architectures `yolov8{n,s,m,l,x}.yaml` need no file (a file of that name on the
//!    volume still wins, so users can override them);
//! 6. the official weights `yolov8{n,s,m,l,x}.pt` that are not on the volume resolve to "download
//!    on demand" into `<root>/weights/` (the download itself lives in `nn::weights`).
//!
//! A failed lookup is an error listing every place searched and what to do.

use std::path::{Path, PathBuf};

use crate::config::model_yaml::{is_builtin, split_scale};
use crate::error::{Error, Result};

/// Environment variable that overrides the default root (`--data-root` overrides it in turn).
pub const ENV_DATA_ROOT: &str = "KUBEYOLO_DATA_ROOT";
/// Where the pipeline mounts the volume.
pub const DEFAULT_DATA_ROOT: &str = "/data";
/// Official ultralytics detection weights that can be downloaded on demand.
pub const OFFICIAL_WEIGHTS: &[&str] = &["yolov8n.pt", "yolov8s.pt", "yolov8m.pt", "yolov8l.pt", "yolov8x.pt"];

/// The folder every step resolves names against (`/data` in a pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoot {
    pub path: PathBuf,
}

/// What kind of file a name refers to: picks the default extension and the conventional folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// `--model-name`: weights (`.pt`, `.safetensors`) or a model yaml.
    Model,
    /// `--cfg`: the training cfg yaml (ultralytics `default.yaml` keys).
    Cfg,
    /// `--data`: the dataset yaml.
    Data,
}

impl NameKind {
    /// The conventional sub-folders for this kind, in search order (after the root itself).
    pub fn folders(self, name: &str) -> &'static [&'static str] {
        match self {
            NameKind::Model if is_yaml(name) => &["weights", "cfg-yaml"],
            NameKind::Model => &["weights"],
            NameKind::Cfg => &["cfg-yaml"],
            NameKind::Data => &["data-yaml"],
        }
    }
    fn label(self) -> &'static str {
        match self {
            NameKind::Model => "model",
            NameKind::Cfg => "cfg yaml",
            NameKind::Data => "data yaml",
        }
    }
}

/// Where a model name resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A file on the volume. `requested` is the name as asked (after adding an extension), whose
    /// scale letter selects the scale of a model yaml (`yolov8n-scratch.yaml` → file
    /// `yolov8-scratch.yaml`, requested `yolov8n-scratch.yaml`).
    File { path: PathBuf, requested: String },
    /// A built-in architecture yaml (`yolov8n.yaml`): no file needed.
    BuiltinArch { name: String },
    /// Official weights not on the volume: downloaded on demand to `cache_path`
    /// (`<root>/weights/yolov8n.pt`).
    OfficialWeights { name: String, cache_path: PathBuf },
}

impl ModelSource {
    /// The value a step passes on as `model_path`: the file path, the built-in name, or the path
    /// the official weights will be cached at. For a model yaml requested with a scale letter the
    /// value keeps the letter (`/data/yolov8s-scratch.yaml`, although the file is
    /// `/data/yolov8-scratch.yaml`): the next step resolves it again with
    /// [`DataRoot::resolve_model`] and gets the same file *and* the same scale.
    pub fn output_value(&self) -> String {
        match self {
            ModelSource::File { path, requested } => {
                let base = requested.rsplit('/').next().unwrap_or(requested);
                path.with_file_name(base).display().to_string()
            }
            ModelSource::BuiltinArch { name } => name.clone(),
            ModelSource::OfficialWeights { cache_path, .. } => cache_path.display().to_string(),
        }
    }
    /// True for a model yaml (file or built-in): the network is built from scratch.
    pub fn is_yaml(&self) -> bool {
        match self {
            ModelSource::File { path, .. } => is_yaml(&path.to_string_lossy()),
            ModelSource::BuiltinArch { .. } => true,
            ModelSource::OfficialWeights { .. } => false,
        }
    }
    /// Short word for reports: `file`, `builtin`, `official-weights`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSource::File { .. } => "file",
            ModelSource::BuiltinArch { .. } => "builtin",
            ModelSource::OfficialWeights { .. } => "official-weights",
        }
    }
}

/// `p` as the steps read a path argument: absolute as given, otherwise under `root` (the data
/// root), so `runs/detect/train` means the same folder in every step's pod.
pub fn under(root: &Path, p: impl AsRef<Path>) -> PathBuf {
    let p = p.as_ref();
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    }
}

impl DataRoot {
    /// [`under`] this root.
    pub fn under(&self, p: impl AsRef<Path>) -> PathBuf {
        under(&self.path, p)
    }

    /// A root at `path`, made absolute (against the current folder) so that every path a step
    /// outputs still means the same file in the next step's process.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        DataRoot { path: std::path::absolute(&path).unwrap_or(path) }
    }

    /// The root from a `--data-root` flag value (wins), else `KUBEYOLO_DATA_ROOT`, else `/data`.
    pub fn from_flag(flag: Option<&Path>) -> Self {
        if let Some(p) = flag.filter(|p| !p.as_os_str().is_empty()) {
            return Self::new(p);
        }
        match std::env::var_os(ENV_DATA_ROOT) {
            Some(v) if !v.is_empty() => Self::new(PathBuf::from(v)),
            _ => Self::new(DEFAULT_DATA_ROOT),
        }
    }

    /// `<root>/weights`, where downloaded official weights are cached.
    pub fn weights_dir(&self) -> PathBuf {
        self.path.join("weights")
    }

    /// Resolve a `--cfg` name (`cfg-custom`, `cfg-custom.yaml`, `cfg-yaml/x.yaml`, `/abs/x.yaml`).
    pub fn resolve_cfg(&self, name: &str) -> Result<PathBuf> {
        self.resolve_file(name, NameKind::Cfg)
    }

    /// Load a tune search space (`yolo-tune --space`, `yolo-verify --tune-space`, the pipeline's
    /// `tune_space`): the yaml at `name` under the root, with its path; `None` for an empty name,
    /// which means ultralytics 8.4's space (the run parameter left blank).
    pub fn load_space(&self, name: &str) -> Result<Option<(PathBuf, crate::tune::space::Space)>> {
        if name.is_empty() {
            return Ok(None);
        }
        let path = self.under(name);
        let space = crate::tune::space::Space::load(&path)?;
        Ok(Some((path, space)))
    }

    /// Load a step's `--cfg-yaml`: a file under the root, or ultralytics' built-in defaults for
    /// `default` (when no such file exists). Every problem of the file is printed, the first is
    /// returned; warnings (ignored keys) are printed.
    pub fn load_cfg(&self, name: &str) -> Result<crate::config::hyp::Hyp> {
        use crate::config::hyp::Hyp;
        if matches!(name, "default" | "default.yaml") && self.resolve_cfg(name).is_err() {
            return Ok(Hyp::default());
        }
        let path = self.resolve_cfg(name)?;
        let loaded = Hyp::load_all(&path).map_err(|errs| {
            for e in &errs[1..] {
                eprintln!("error: {e}");
            }
            errs.into_iter().next().expect("load_all returns at least one error")
        })?;
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        Ok(loaded.hyp)
    }

    /// Resolve a `--data` name (`data-custom`, `data-custom.yaml`, `/abs/data.yaml`).
    pub fn resolve_data(&self, name: &str) -> Result<PathBuf> {
        self.resolve_file(name, NameKind::Data)
    }

    /// Resolve a `--model-name` (`yolov8n.pt`, `yolov8n`, `yolov8n.yaml`, `yolov8s-scratch.yaml`,
    /// `weights/best.pt`, an absolute path).
    pub fn resolve_model(&self, name: &str) -> Result<ModelSource> {
        let name = check_name(name, NameKind::Model)?;
        let requested = with_extension(name, NameKind::Model);
        let candidates = self.candidates(&requested, NameKind::Model);
        if let Some(path) = candidates.iter().find(|p| p.is_file()) {
            return Ok(ModelSource::File { path: path.clone(), requested });
        }
        let base = requested.rsplit('/').next().unwrap_or(&requested).to_string();
        if base == requested && is_builtin(&requested) {
            return Ok(ModelSource::BuiltinArch { name: requested });
        }
        if OFFICIAL_WEIGHTS.contains(&base.as_str()) {
            // A bare name is cached in <root>/weights/; a path (e.g. verify's own output
            // `/data/weights/yolov8n.pt`, passed on to train) is downloaded to that path.
            let cache_path = if base == requested { self.weights_dir().join(&base) } else { candidates[0].clone() };
            return Ok(ModelSource::OfficialWeights { name: base, cache_path });
        }
        Err(self.not_found(name, &requested, NameKind::Model, &candidates))
    }

    /// Resolve a cfg or data name to an existing file.
    pub fn resolve_file(&self, name: &str, kind: NameKind) -> Result<PathBuf> {
        let name = check_name(name, kind)?;
        let requested = with_extension(name, kind);
        let candidates = self.candidates(&requested, kind);
        match candidates.iter().find(|p| p.is_file()) {
            Some(p) => Ok(p.clone()),
            None => Err(self.not_found(name, &requested, kind, &candidates)),
        }
    }

    /// Every path tried for `requested` (extension already added), in order.
    pub fn candidates(&self, requested: &str, kind: NameKind) -> Vec<PathBuf> {
        let mut names = vec![requested.to_string()];
        if kind == NameKind::Model && is_yaml(requested) {
            let (unified, _) = split_scale(requested);
            if unified != requested {
                names.push(unified);
            }
        }
        let mut out: Vec<PathBuf> = Vec::new();
        let mut push = |p: PathBuf| {
            if !out.contains(&p) {
                out.push(p);
            }
        };
        if Path::new(requested).is_absolute() {
            for n in &names {
                push(PathBuf::from(n));
            }
            return out;
        }
        let mut dirs = vec![self.path.clone()];
        dirs.extend(kind.folders(requested).iter().map(|f| self.path.join(f)));
        for dir in &dirs {
            for n in &names {
                push(dir.join(n));
            }
        }
        out
    }

    fn not_found(&self, name: &str, requested: &str, kind: NameKind, searched: &[PathBuf]) -> Error {
        let list: Vec<String> = searched.iter().map(|p| format!("    {}", p.display())).collect();
        let mut hint = format!(
            "put the file in the data root {} (or in {}), or pass an absolute path",
            self.path.display(),
            kind.folders(requested).iter().map(|f| format!("{f}/")).collect::<Vec<_>>().join(" or ")
        );
        if kind == NameKind::Model {
            hint.push_str("; built-in architectures are yolov8n/s/m/l/x.yaml and official weights yolov8n/s/m/l/x.pt");
        }
        if !self.path.is_dir() {
            hint.push_str(&format!(
                "; the data root {} does not exist: mount the volume there, or set --data-root / {ENV_DATA_ROOT}",
                self.path.display()
            ));
        }
        Error::config(format!("{} '{name}' not found; searched:\n{}", kind.label(), list.join("\n"))).with_hint(hint)
    }
}

fn check_name(name: &str, kind: NameKind) -> Result<&str> {
    let t = name.trim();
    if t.is_empty() {
        return Err(Error::usage(format!("empty {} name", kind.label())).with_hint(match kind {
            NameKind::Model => "pass e.g. --model-name yolov8n.pt",
            NameKind::Cfg => "pass e.g. --cfg cfg-custom",
            NameKind::Data => "pass e.g. --data data-custom",
        }));
    }
    Ok(t)
}

fn is_yaml(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l.ends_with(".yaml") || l.ends_with(".yml")
}

/// Add the kind's default extension when the name has none of the accepted ones.
pub fn with_extension(name: &str, kind: NameKind) -> String {
    let l = name.to_ascii_lowercase();
    let known: &[&str] = match kind {
        NameKind::Model => &[".pt", ".yaml", ".yml", ".safetensors"],
        NameKind::Cfg | NameKind::Data => &[".yaml", ".yml"],
    };
    if known.iter().any(|e| l.ends_with(e)) {
        name.to_string()
    } else {
        let ext = if kind == NameKind::Model { ".pt" } else { ".yaml" };
        format!("{name}{ext}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"x").unwrap();
    }

    #[test]
    fn extensions() {
        assert_eq!(with_extension("yolov8n", NameKind::Model), "yolov8n.pt");
        assert_eq!(with_extension("best.safetensors", NameKind::Model), "best.safetensors");
        assert_eq!(with_extension("net.yml", NameKind::Model), "net.yml");
        assert_eq!(with_extension("cfg-custom", NameKind::Cfg), "cfg-custom.yaml");
        assert_eq!(with_extension("data.v2", NameKind::Data), "data.v2.yaml");
        assert_eq!(with_extension("data.YAML", NameKind::Data), "data.YAML");
    }

    #[test]
    fn root_then_conventional_folder() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::new(d.path());
        touch(&d.path().join("cfg-yaml/cfg-custom.yaml"));
        assert_eq!(root.resolve_cfg("cfg-custom").unwrap(), d.path().join("cfg-yaml/cfg-custom.yaml"));
        touch(&d.path().join("cfg-custom.yaml"));
        assert_eq!(root.resolve_cfg("cfg-custom.yaml").unwrap(), d.path().join("cfg-custom.yaml"));
        touch(&d.path().join("data-yaml/data-custom.yaml"));
        assert_eq!(root.resolve_data("data-custom").unwrap(), d.path().join("data-yaml/data-custom.yaml"));
        let abs = d.path().join("elsewhere/d.yaml");
        touch(&abs);
        assert_eq!(root.resolve_data(abs.to_str().unwrap()).unwrap(), abs);
        touch(&d.path().join("weights/best.pt"));
        assert_eq!(
            root.resolve_model("best").unwrap(),
            ModelSource::File { path: d.path().join("weights/best.pt"), requested: "best.pt".into() }
        );
    }

    #[test]
    fn models_builtin_official_and_scaled() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::new(d.path());
        assert_eq!(
            root.resolve_model("yolov8n.yaml").unwrap(),
            ModelSource::BuiltinArch { name: "yolov8n.yaml".into() }
        );
        let off = root.resolve_model("yolov8s").unwrap();
        assert_eq!(
            off,
            ModelSource::OfficialWeights { name: "yolov8s.pt".into(), cache_path: d.path().join("weights/yolov8s.pt") }
        );
        assert_eq!(off.output_value(), d.path().join("weights/yolov8s.pt").display().to_string());
        // ... and that output resolves to the same thing in the next step
        assert_eq!(root.resolve_model(&off.output_value()).unwrap(), off);
        // present locally: the file wins over download and over the built-in
        touch(&d.path().join("weights/yolov8s.pt"));
        assert!(matches!(root.resolve_model("yolov8s.pt").unwrap(), ModelSource::File { .. }));
        touch(&d.path().join("yolov8.yaml"));
        assert!(
            matches!(root.resolve_model("yolov8l.yaml").unwrap(), ModelSource::File { path, requested } if path == d.path().join("yolov8.yaml") && requested == "yolov8l.yaml")
        );
        // scale letter maps to the unscaled file, in root or cfg-yaml/
        touch(&d.path().join("cfg-yaml/yolov8-scratch.yaml"));
        let m = root.resolve_model("yolov8n-scratch.yaml").unwrap();
        assert_eq!(
            m,
            ModelSource::File {
                path: d.path().join("cfg-yaml/yolov8-scratch.yaml"),
                requested: "yolov8n-scratch.yaml".into()
            }
        );
        assert!(m.is_yaml());
        // the output keeps the scale letter, and resolves back to the same file and scale
        let out = m.output_value();
        assert_eq!(out, d.path().join("cfg-yaml/yolov8n-scratch.yaml").display().to_string());
        assert!(
            matches!(root.resolve_model(&out).unwrap(), ModelSource::File { path, requested } if path == d.path().join("cfg-yaml/yolov8-scratch.yaml") && requested == out)
        );
        // a file literally named with the scale letter wins
        touch(&d.path().join("yolov8n-scratch.yaml"));
        assert!(
            matches!(root.resolve_model("yolov8n-scratch.yaml").unwrap(), ModelSource::File { path, .. } if path == d.path().join("yolov8n-scratch.yaml"))
        );
    }

    #[test]
    fn not_found_lists_every_place() {
        let d = tempfile::tempdir().unwrap();
        let root = DataRoot::new(d.path());
        let e = root.resolve_model("yolov8s-custom.yaml").unwrap_err();
        let s = e.to_string();
        for p in
            ["yolov8s-custom.yaml", "yolov8-custom.yaml", "weights/yolov8s-custom.yaml", "cfg-yaml/yolov8-custom.yaml"]
        {
            assert!(s.contains(&d.path().join(p).display().to_string()), "{p} missing in {s}");
        }
        assert_eq!(e.exit_code(), 3);
        let e = root.resolve_data("data-custom").unwrap_err().to_string();
        assert!(e.contains("data-yaml/data-custom.yaml") && e.contains("hint:"), "{e}");
        let e = root.resolve_model("mynet.pt").unwrap_err().to_string();
        assert!(e.contains("weights/mynet.pt") && e.contains("official weights"), "{e}");
        let e = DataRoot::new("/nonexistent-root").resolve_cfg("c").unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
        assert!(root.resolve_cfg("  ").is_err());
    }

    #[test]
    fn flag_wins_over_env() {
        // Only the flag path is tested here: the environment is process-wide and tests run in
        // parallel (the env route is covered end-to-end through the binaries).
        assert_eq!(DataRoot::from_flag(Some(Path::new("/x"))).path, PathBuf::from("/x"));
    }
}
