//! The dataset yaml (ultralytics `data-custom.yaml`): where the images are, and the class names.
//!
//! Users bring the dataset yamls they use with ultralytics unchanged, so this module follows
//! ultralytics' `check_det_dataset` and `BaseDataset.get_img_files` (ultralytics 8.3):
//!
//! ```yaml
//! path: ../datasets/coco8   # dataset root (optional)
//! train: images/train       # a folder (searched recursively), a .txt list of images,
//! val: [images/val, extra/] # ... or a list of folders / .txt lists / image files
//! test:                     # optional; empty or absent = no test split
//! names:                    # a list, or an {id: name} map with ids 0..n-1
//!   0: person
//!   1: bicycle
//! nc: 2                     # optional; must agree with names (names alone is enough;
//!                           # nc alone gives class_0, class_1, ... as ultralytics does)
//! ```
//!
//! ## How paths resolve (and where kubeyolo differs from ultralytics, and why)
//! - `path` absent or empty: the yaml's own folder (as ultralytics).
//! - `path` absolute: used as is.
//! - `path` relative: ultralytics tries the current directory, then its `DATASETS_DIR`. A pod has
//!   no meaningful current directory, so kubeyolo tries **the yaml's folder, then the data root**
//!   (`/data`), and uses the first that exists (the yaml-relative one if neither does, so the error
//!   names it).
//! - each split entry is joined to `path`; a missing entry that starts with `../` is retried
//!   without it (as ultralytics).
//! - a `.txt` list holds one image path per line. `./x` entries resolve against the txt's folder
//!   (as ultralytics). Other relative entries resolve against `path` (ultralytics would use the
//!   current directory, which again means nothing in a pod). Absolute entries are used as is.
//! - a folder is walked recursively (following symlinks, skipping hidden entries as Python's glob
//!   does); only files whose suffix is in [`IMG_FORMATS`] (case-insensitive) count.
//! - image lists are sorted as Python sorts strings (byte order of the UTF-8 path), so every step
//!   sees the same order as ultralytics would.
//! - `validation:` is accepted for `val:` (as ultralytics).
//!
//! Label files are found with [`label_path`]: the image path with its LAST `/images/` replaced by
//! `/labels/` and its suffix by `.txt` (ultralytics `img2label_paths`).
//!
//! Errors name the yaml file and the line of the offending key, and say what to do.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde_yaml::Value;

use crate::error::{Error, Result};
use crate::files::read_text;

/// Image suffixes ultralytics accepts (`ultralytics.data.utils.IMG_FORMATS`), lower case, no dot.
pub const IMG_FORMATS: &[&str] =
    &["avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp"];

/// The split keys kubeyolo knows, in pipeline order.
pub const SPLITS: &[&str] = &["train", "val", "test"];

/// Where one split's images come from: the yaml's entries, already resolved against `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSource {
    /// Folders, `.txt` lists or image files (kind decided when listing, from what is on disk).
    pub paths: Vec<PathBuf>,
    /// Line of the split's key in the yaml (1-based), for error messages.
    pub line: Option<usize>,
}

/// A parsed, path-resolved dataset yaml.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// The yaml file it came from.
    pub yaml: PathBuf,
    /// The dataset root (`path:` resolved as described in the module docs).
    pub root: PathBuf,
    /// Class names, index = class id.
    pub names: Vec<String>,
    /// `train`, `val` and (when set) `test`. A split with an empty value is absent.
    pub splits: BTreeMap<String, SplitSource>,
}

impl Dataset {
    /// Read and check the dataset yaml at `yaml`; relative `path:` values may resolve against
    /// `data_root` (see the module docs). Does not list images: see [`Dataset::split_images`].
    pub fn load(yaml: &Path, data_root: &Path) -> Result<Dataset> {
        let text = read_text(yaml)?;
        Self::from_text(&text, yaml, data_root)
    }

    /// [`Dataset::load`] on yaml text already read; `yaml` is the file it came from (paths
    /// resolve against its folder, errors name it).
    pub fn from_text(text: &str, yaml: &Path, data_root: &Path) -> Result<Dataset> {
        let err = |msg: String, key: &str| -> Error {
            let mut e = Error::config(msg).with_file(yaml).with_key(key);
            if let Some(l) = key_line(text, key) {
                e = e.with_line(l);
            }
            e
        };
        let doc: Value = serde_yaml::from_str(text).map_err(|e| {
            let mut err = Error::config(format!("not valid YAML: {e}"))
                .with_file(yaml)
                .with_hint("fix the YAML syntax at that line (indentation, a missing ':' or quote)");
            if let Some(loc) = e.location() {
                err = err.with_line(loc.line());
            }
            err
        })?;
        let map = match doc {
            Value::Mapping(m) => m,
            Value::Null => {
                return Err(Error::config("the dataset yaml is empty").with_file(yaml).with_hint(
                    "a dataset yaml needs at least 'train', 'val' and 'names' (see ultralytics' coco8.yaml)",
                ))
            }
            other => {
                return Err(Error::config(format!(
                    "the dataset yaml must be a mapping of keys (path, train, val, test, names), found {}",
                    type_name(&other)
                ))
                .with_file(yaml)
                .with_line(1))
            }
        };
        let get = |k: &str| map.get(Value::String(k.to_string())).filter(|v| !v.is_null());

        // names / nc
        let nc = match get("nc") {
            None => None,
            Some(v) => Some(as_integer(v).ok_or_else(|| {
                err(format!("'nc' must be an integer, found {}", show(v)), "nc")
                    .with_hint("set 'nc' to the number of classes, or delete it (names alone is enough)")
            })?),
        };
        let names = match get("names") {
            Some(v) => parse_names(v).map_err(|m| {
                err(m, "names")
                    .with_hint("write names as a list ([cat, dog]) or as a map with ids 0..n-1 ({0: cat, 1: dog})")
            })?,
            None => match nc {
                Some(n) if n > 0 => (0..n).map(|i| format!("class_{i}")).collect(),
                _ => {
                    return Err(Error::config("'names' is missing")
                        .with_file(yaml)
                        .with_key("names")
                        .with_hint("add 'names:' with the class names, e.g. names: [cat, dog]"))
                }
            },
        };
        if names.is_empty() {
            return Err(err("'names' is empty: a dataset needs at least one class".into(), "names")
                .with_hint("list the class names, e.g. names: [cat, dog]"));
        }
        if let Some(n) = nc {
            if n as usize != names.len() {
                return Err(err(format!("'nc: {n}' does not match the {} class names in 'names'", names.len()), "nc")
                    .with_hint("make 'nc' equal to the number of names, or delete 'nc'"));
            }
        }

        // path
        let yaml_dir = parent_dir(yaml);
        let root = match get("path") {
            None => yaml_dir.clone(),
            Some(Value::String(s)) if s.trim().is_empty() => yaml_dir.clone(),
            Some(Value::String(s)) => {
                let p = Path::new(s.trim());
                if p.is_absolute() {
                    normalize(p)
                } else {
                    let by_yaml = normalize(&yaml_dir.join(p));
                    let by_root = normalize(&data_root.join(p));
                    if by_yaml.exists() || !by_root.exists() {
                        by_yaml
                    } else {
                        by_root
                    }
                }
            }
            Some(v) => {
                return Err(err(format!("'path' must be a string, found {}", show(v)), "path")
                    .with_hint("set 'path' to the dataset folder, absolute or relative to the yaml"))
            }
        };

        // splits
        let mut splits = BTreeMap::new();
        for &split in SPLITS {
            let (key, value) = match (split, get(split)) {
                ("val", None) => ("validation", get("validation")),
                (_, v) => (split, v),
            };
            let entries: Vec<String> = match value {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.trim().to_string()],
                Some(Value::Sequence(seq)) => {
                    let mut out = Vec::new();
                    for v in seq {
                        match v {
                            Value::String(s) => out.push(s.trim().to_string()),
                            other => {
                                return Err(err(
                                    format!("'{key}' entries must be strings (paths), found {}", show(other)),
                                    key,
                                )
                                .with_hint("quote the entry or remove it"))
                            }
                        }
                    }
                    out
                }
                Some(v) => {
                    return Err(err(format!("'{key}' must be a path or a list of paths, found {}", show(v)), key)
                        .with_hint("write e.g. 'train: images/train' or 'train: [images/a, images/b]'"))
                }
            };
            let entries: Vec<String> = entries.into_iter().filter(|s| !s.is_empty()).collect();
            if entries.is_empty() {
                if split != "test" {
                    return Err(Error::config(format!("'{split}' is missing or empty"))
                        .with_file(yaml)
                        .with_key(split)
                        .with_hint(format!(
                            "'train' and 'val' are required: add e.g. '{split}: images/{split}' (a folder, a .txt list, or a list of them)"
                        )));
                }
                continue;
            }
            let single = entries.len() == 1 && matches!(value, Some(Value::String(_)));
            let paths = entries
                .iter()
                .map(|e| {
                    let p = normalize(&root.join(e));
                    // ultralytics: a missing single-string entry starting with ../ is retried without it.
                    if single && !p.exists() {
                        if let Some(rest) = e.strip_prefix("../") {
                            let alt = normalize(&root.join(rest));
                            if alt.exists() {
                                return alt;
                            }
                        }
                    }
                    p
                })
                .collect();
            splits.insert(split.to_string(), SplitSource { paths, line: key_line(text, key) });
        }

        Ok(Dataset { yaml: yaml.to_path_buf(), root, names, splits })
    }

    /// Number of classes.
    pub fn nc(&self) -> usize {
        self.names.len()
    }

    /// Whether the yaml defines `split` (`train`, `val`, `test`) with a non-empty value.
    pub fn has_split(&self, split: &str) -> bool {
        self.splits.contains_key(split)
    }

    /// The split names this dataset defines, in pipeline order (train, val, test).
    pub fn split_names(&self) -> Vec<&str> {
        SPLITS.iter().copied().filter(|s| self.has_split(s)).collect()
    }

    /// Every image of `split`, sorted as ultralytics sorts them, without duplicates.
    ///
    /// Errors (kind Data, naming the yaml line of the split) when the split is not defined, an
    /// entry does not exist, a `.txt` list cannot be read, or the split holds no image at all.
    pub fn split_images(&self, split: &str) -> Result<Vec<PathBuf>> {
        self.split_images_verified(split).map(|(images, _)| images)
    }

    /// [`Dataset::split_images`], plus whether every image was seen on disk while listing
    /// (true when the split is only folders; images named in a `.txt` list or the yaml are not
    /// checked here). Lets the scan skip a `stat` per image when the listing already did it.
    pub fn split_images_verified(&self, split: &str) -> Result<(Vec<PathBuf>, bool)> {
        let src = self.splits.get(split).ok_or_else(|| {
            Error::data(format!("the dataset has no '{split}' split"))
                .with_file(&self.yaml)
                .with_key(split)
                .with_hint(format!("add '{split}:' to the dataset yaml"))
        })?;
        let at = |e: Error| -> Error {
            let e = e.with_file(&self.yaml).with_key(split);
            match src.line {
                Some(l) => e.with_line(l),
                None => e,
            }
        };
        let mut images: Vec<PathBuf> = Vec::new();
        let mut verified = true;
        for p in &src.paths {
            let meta = std::fs::metadata(p).map_err(|e| {
                at(Error::data(format!("{} does not exist ({e})", p.display())).with_hint(format!(
                    "'path' resolved to {}; fix '{split}:' or 'path:' so that it points at the images",
                    self.root.display()
                )))
            })?;
            if meta.is_dir() {
                images.extend(list_images_in_dir(p).map_err(at)?);
            } else if is_image(p) {
                images.push(p.clone());
            } else {
                verified = false;
                images.extend(read_image_list(p, &self.root).map_err(at)?);
            }
        }
        images.sort_by(|a, b| a.as_os_str().as_encoded_bytes().cmp(b.as_os_str().as_encoded_bytes()));
        images.dedup();
        if images.is_empty() {
            let shown: Vec<String> = src.paths.iter().map(|p| p.display().to_string()).collect();
            return Err(at(Error::data(format!("split '{split}' holds no images (looked in {})", shown.join(", ")))
                .with_hint(format!(
                    "put images ({}) there, or point '{split}:' at the folder that has them",
                    IMG_FORMATS.join(", ")
                ))));
        }
        Ok((images, verified))
    }
}

/// Label file of `image`: the LAST `/images/` of the path becomes `/labels/`, the suffix `.txt`
/// (ultralytics `img2label_paths`; a path without `/images/` keeps its folder).
pub fn label_path(image: &Path) -> PathBuf {
    // Byte-level on the OS string (no lossy UTF-8 copy): the scan calls this for every image.
    let s = image.as_os_str().as_encoded_bytes();
    let sep = std::path::MAIN_SEPARATOR as u8;
    let sa = [sep, b'i', b'm', b'a', b'g', b'e', b's', sep];
    let mut out: Vec<u8> = Vec::with_capacity(s.len() + 4);
    match s.windows(sa.len()).rposition(|w| w == sa) {
        Some(i) => {
            out.extend_from_slice(&s[..i]);
            out.extend_from_slice(&[sep, b'l', b'a', b'b', b'e', b'l', b's', sep]);
            out.extend_from_slice(&s[i + sa.len()..]);
        }
        None => out.extend_from_slice(s),
    }
    // rsplit('.', 1)[0]: strip from the last dot of the whole string (as ultralytics does).
    if let Some(i) = out.iter().rposition(|&b| b == b'.') {
        out.truncate(i);
    }
    out.extend_from_slice(b".txt");
    // SAFETY: `out` is the input's encoded bytes with ASCII-only replacements made at ASCII
    // boundaries ('/', '.'), which keeps it a valid OS-string encoding.
    PathBuf::from(unsafe { std::ffi::OsString::from_encoded_bytes_unchecked(out) })
}

/// Whether `path`'s suffix is an ultralytics image format (case-insensitive).
pub fn is_image(path: &Path) -> bool {
    // ultralytics: x.rpartition(".")[-1].lower() in IMG_FORMATS
    let s = path.as_os_str().to_string_lossy();
    match s.rfind('.') {
        Some(i) => {
            let ext = s[i + 1..].to_ascii_lowercase();
            IMG_FORMATS.contains(&ext.as_str())
        }
        None => false,
    }
}

/// Images under `dir`, recursively (hidden files and folders skipped, as Python's glob does;
/// symlinks followed, as glob does, with each linked folder walked once so loops end).
///
/// Entries are classified from the directory listing itself (`d_type`); only symlinks cost a
/// `stat`. (walkdir's `follow_links(true)` would `stat` every entry: 100,000 extra syscalls on a
/// COCO-sized split.)
fn list_images_in_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if let Ok(c) = std::fs::canonicalize(dir) {
        seen.insert(c);
    }
    walk_images(dir, &mut out, &mut seen)?;
    Ok(out)
}

fn walk_images(dir: &Path, out: &mut Vec<PathBuf>, seen: &mut std::collections::HashSet<PathBuf>) -> Result<()> {
    let walker = walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|e| {
            let p = e.path().map(Path::to_path_buf).unwrap_or_else(|| dir.to_path_buf());
            Error::data(format!("cannot list {}: {e}", p.display()))
        })?;
        let ft = entry.file_type();
        if ft.is_file() {
            if is_image(entry.path()) {
                out.push(entry.into_path());
            }
        } else if ft.is_symlink() && entry.depth() > 0 {
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => {
                    if is_image(entry.path()) {
                        out.push(entry.into_path());
                    }
                }
                Ok(m) if m.is_dir() => {
                    let canon = std::fs::canonicalize(entry.path()).unwrap_or_else(|_| entry.path().to_path_buf());
                    if seen.insert(canon) {
                        walk_images(entry.path(), out, seen)?;
                    }
                }
                _ => {} // dangling link: nothing to read
            }
        }
    }
    Ok(())
}

/// Images named in a `.txt` list (one per line; UTF-8, BOM allowed). `./x` resolves against the
/// list's folder, other relative entries against the dataset root.
fn read_image_list(list: &Path, root: &Path) -> Result<Vec<PathBuf>> {
    let bytes = std::fs::read(list).map_err(|e| Error::io_at(list, "read the image list", e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::data(format!("{} is neither a folder, an image, nor a UTF-8 .txt list of images", list.display()))
            .with_hint("point the split at a folder of images or at a text file with one image path per line")
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let parent = parent_dir(list);
    Ok(text
        .trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            if let Some(rest) = l.strip_prefix("./") {
                normalize(&parent.join(rest))
            } else {
                let p = Path::new(l);
                if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    normalize(&root.join(p))
                }
            }
        })
        .filter(|p| is_image(p))
        .collect())
}

/// The folder holding `file` (`.` for a bare file name).
fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Lexical normalisation (`a/./b/../c` → `a/c`), like Python's `resolve()` minus symlinks: paths
/// in messages and outputs stay readable and comparable without touching the disk.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Class names from a list or an `{id: name}` map (ids 0..n-1, int or integer strings).
fn parse_names(v: &Value) -> std::result::Result<Vec<String>, String> {
    match v {
        Value::Sequence(seq) => seq
            .iter()
            .enumerate()
            .map(|(i, n)| scalar_string(n).ok_or_else(|| format!("class name {i} must be a string, found {}", show(n))))
            .collect(),
        Value::Mapping(m) => {
            let mut by_id = BTreeMap::new();
            for (k, n) in m {
                let id = as_integer(k)
                    .filter(|i| *i >= 0)
                    .ok_or_else(|| format!("class id {} is not a non-negative integer", show(k)))?;
                let name =
                    scalar_string(n).ok_or_else(|| format!("class {id} name must be a string, found {}", show(n)))?;
                if by_id.insert(id as usize, name).is_some() {
                    return Err(format!("class id {id} appears twice"));
                }
            }
            let n = by_id.len();
            if let Some((&max, _)) = by_id.iter().next_back() {
                if max >= n {
                    let missing: Vec<String> =
                        (0..n).filter(|i| !by_id.contains_key(i)).map(|i| i.to_string()).take(5).collect();
                    return Err(format!(
                        "{n} class names need ids 0..{}, but id {max} is used and id {} is missing",
                        n - 1,
                        missing.join(", ")
                    ));
                }
            }
            Ok(by_id.into_values().collect())
        }
        other => Err(format!("'names' must be a list or an {{id: name}} map, found {}", show(other))),
    }
}

/// A yaml scalar as ultralytics' `str(v)` would give it (names like `1` or `true` are allowed).
fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
        _ => None,
    }
}

/// An integer, or an integer-valued float / string (`10`, `10.0`, `"10"`), as ultralytics accepts.
fn as_integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.is_finite()).map(|f| f as i64))
        }
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().filter(|f| f.fract() == 0.0 && f.is_finite()).map(|f| f as i64))
        }
        _ => None,
    }
}

/// 1-based line of top-level `key:` in the yaml text (serde_yaml values carry no positions).
pub use super::yaml_pos::key_line;
use super::yaml_pos::{show_value as show, value_kind as type_name};

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"").unwrap();
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    fn layout(dir: &Path) {
        for f in [
            "images/train/b.jpg",
            "images/train/a.PNG",
            "images/train/sub/c.jpeg",
            "images/train/notes.txt",
            "images/train/.hidden.jpg",
            "images/val/v.jpg",
        ] {
            touch(&dir.join("ds").join(f));
        }
    }

    #[test]
    fn folder_splits_list_names_sorted_recursive() {
        let t = tempfile::tempdir().unwrap();
        layout(t.path());
        let y = write(t.path(), "ds/data.yaml", "path: .\ntrain: images/train\nval: images/val\nnames: [cat, dog]\n");
        let d = Dataset::load(&y, Path::new("/nonexistent")).unwrap();
        assert_eq!(d.names, vec!["cat", "dog"]);
        assert_eq!(d.nc(), 2);
        assert!(!d.has_split("test"));
        assert_eq!(d.split_names(), vec!["train", "val"]);
        let imgs = d.split_images("train").unwrap();
        let rel: Vec<String> =
            imgs.iter().map(|p| p.strip_prefix(t.path().join("ds")).unwrap().display().to_string()).collect();
        assert_eq!(rel, vec!["images/train/a.PNG", "images/train/b.jpg", "images/train/sub/c.jpeg"]);
    }

    #[test]
    fn names_as_map_and_nc() {
        let t = tempfile::tempdir().unwrap();
        layout(t.path());
        let y = write(
            t.path(),
            "ds/data.yaml",
            "train: images/train\nval: images/val\nnc: 3\nnames:\n  2: c\n  0: a\n  '1': b\n",
        );
        let d = Dataset::load(&y, t.path()).unwrap();
        assert_eq!(d.names, vec!["a", "b", "c"]);
        assert_eq!(d.root, t.path().join("ds"));
    }

    #[test]
    fn names_map_with_gap_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let y = write(t.path(), "d.yaml", "train: a\nval: b\nnames:\n  0: a\n  2: c\n");
        let e = Dataset::load(&y, t.path()).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().contains("id 1 is missing"), "{e}");
    }

    #[test]
    fn nc_mismatch_names_line() {
        let t = tempfile::tempdir().unwrap();
        let y = write(t.path(), "d.yaml", "train: a\nval: b\nnames: [x, y]\nnc: 3\n");
        let e = Dataset::load(&y, t.path()).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert_eq!(e.exit_code(), 3);
        let s = e.to_string();
        assert!(s.contains("d.yaml:4") && s.contains("'nc: 3'") && s.contains("hint"), "{s}");
    }

    #[test]
    fn nc_alone_gives_class_names() {
        let t = tempfile::tempdir().unwrap();
        let y = write(t.path(), "d.yaml", "train: a\nval: b\nnc: 2.0\n");
        assert_eq!(Dataset::load(&y, t.path()).unwrap().names, vec!["class_0", "class_1"]);
    }

    #[test]
    fn malformed_yaml_shows_line() {
        let t = tempfile::tempdir().unwrap();
        let y = write(t.path(), "d.yaml", "train: a\nval: b\nnames: [x, y\nnc: 2\n");
        let e = Dataset::load(&y, t.path()).unwrap_err();
        assert!(e.line.is_some(), "{e}");
        assert!(e.to_string().starts_with(&format!("{}:", y.display())), "{e}");
        let y = write(t.path(), "e.yaml", "train: a\n  val: b\n");
        let e = Dataset::load(&y, t.path()).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn missing_train_or_names() {
        let t = tempfile::tempdir().unwrap();
        let y = write(t.path(), "d.yaml", "val: b\nnames: [x]\n");
        assert!(Dataset::load(&y, t.path()).unwrap_err().to_string().contains("'train' is missing"));
        let y = write(t.path(), "d.yaml", "train: a\nval: b\n");
        assert!(Dataset::load(&y, t.path()).unwrap_err().to_string().contains("'names' is missing"));
        let y = write(t.path(), "d.yaml", "train: a\nvalidation: b\nnames: [x]\n");
        assert!(Dataset::load(&y, t.path()).unwrap().has_split("val"));
    }

    #[test]
    fn txt_list_split_resolves_dot_slash_against_list() {
        let t = tempfile::tempdir().unwrap();
        layout(t.path());
        let ds = t.path().join("ds");
        write(&ds, "train.txt", "\u{feff}./images/train/b.jpg\nimages/val/v.jpg\n\n./images/train/notes.txt\n");
        let abs = ds.join("images/train/a.PNG");
        write(&ds, "lists/val.txt", &format!("{}\n", abs.display()));
        let y =
            write(&ds, "data.yaml", "train: train.txt\nval: [lists/val.txt, images/train/sub/c.jpeg]\nnames: [a]\n");
        let d = Dataset::load(&y, t.path()).unwrap();
        assert_eq!(d.split_images("train").unwrap(), vec![ds.join("images/train/b.jpg"), ds.join("images/val/v.jpg")]);
        assert_eq!(d.split_images("val").unwrap(), vec![abs, ds.join("images/train/sub/c.jpeg")]);
    }

    #[test]
    fn symlinked_folders_and_files_are_followed_once() {
        let t = tempfile::tempdir().unwrap();
        layout(t.path());
        let ds = t.path().join("ds");
        fs::create_dir_all(ds.join("images/all")).unwrap();
        std::os::unix::fs::symlink(ds.join("images/val"), ds.join("images/all/val")).unwrap();
        std::os::unix::fs::symlink(ds.join("images/train/b.jpg"), ds.join("images/all/b2.jpg")).unwrap();
        std::os::unix::fs::symlink(ds.join("images"), ds.join("images/all/loop")).unwrap(); // a loop
        let y = write(&ds, "d.yaml", "train: images/all\nval: images/val\nnames: [a]\n");
        let imgs = Dataset::load(&y, t.path()).unwrap().split_images("train").unwrap();
        let rel: Vec<String> = imgs.iter().map(|p| p.strip_prefix(&ds).unwrap().display().to_string()).collect();
        assert!(rel.contains(&"images/all/b2.jpg".to_string()), "{rel:?}");
        let mut real: Vec<PathBuf> = imgs.iter().map(|p| fs::canonicalize(p).unwrap()).collect();
        real.sort();
        real.dedup();
        assert_eq!(real.len(), 4, "every image reachable: {rel:?}");
        assert!(rel.len() < 12, "a symlink loop ends (each linked folder walked once): {rel:?}");
    }

    #[test]
    fn list_of_folders() {
        let t = tempfile::tempdir().unwrap();
        layout(t.path());
        let y = write(
            t.path(),
            "ds/data.yaml",
            "train: [images/train/sub, images/val]\nval: images/val\ntest: ''\nnames: [a]\n",
        );
        let d = Dataset::load(&y, t.path()).unwrap();
        assert_eq!(d.split_images("train").unwrap().len(), 2);
        assert!(!d.has_split("test"));
    }

    #[test]
    fn relative_path_yaml_dir_then_data_root() {
        let t = tempfile::tempdir().unwrap();
        layout(t.path());
        // yaml in data-yaml/, dataset under the data root: 'path: ds' is not next to the yaml.
        let y = write(t.path(), "data-yaml/d.yaml", "path: ds\ntrain: images/train\nval: images/val\nnames: [a]\n");
        let d = Dataset::load(&y, t.path()).unwrap();
        assert_eq!(d.root, t.path().join("ds"));
        assert_eq!(d.split_images("val").unwrap(), vec![t.path().join("ds/images/val/v.jpg")]);
        // ../ relative to the yaml also works
        let y = write(t.path(), "data-yaml/e.yaml", "path: ../ds\ntrain: images/train\nval: images/val\nnames: [a]\n");
        assert_eq!(Dataset::load(&y, Path::new("/x")).unwrap().root, t.path().join("ds"));
    }

    #[test]
    fn empty_and_missing_splits_are_data_errors_with_line() {
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("empty")).unwrap();
        let y = write(t.path(), "d.yaml", "names: [a]\ntrain: empty\nval: nowhere\n");
        let d = Dataset::load(&y, t.path()).unwrap();
        let e = d.split_images("train").unwrap_err();
        assert_eq!((e.line, e.exit_code()), (Some(2), 4));
        assert!(e.to_string().contains("holds no images"), "{e}");
        let e = d.split_images("val").unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(d.split_images("test").is_err());
    }

    #[test]
    fn label_paths_like_ultralytics() {
        assert_eq!(label_path(Path::new("/d/images/train/x.jpg")), PathBuf::from("/d/labels/train/x.txt"));
        assert_eq!(label_path(Path::new("/images/d/images/a.b.PNG")), PathBuf::from("/images/d/labels/a.b.txt"));
        assert_eq!(label_path(Path::new("/d/imgs/x.jpg")), PathBuf::from("/d/imgs/x.txt"));
        assert!(is_image(Path::new("a/B.JPG")) && !is_image(Path::new("a/b.txt")) && !is_image(Path::new("jpg")));
    }

    #[test]
    fn wrong_types_name_key() {
        let t = tempfile::tempdir().unwrap();
        let y = write(t.path(), "d.yaml", "train: a\nval: 3\nnames: [a]\n");
        let e = Dataset::load(&y, t.path()).unwrap_err();
        assert_eq!((e.key.as_deref(), e.line), (Some("val"), Some(2)));
        let y = write(t.path(), "d.yaml", "- a\n- b\n");
        assert!(Dataset::load(&y, t.path()).is_err());
        let y = write(t.path(), "d.yaml", "");
        assert!(Dataset::load(&y, t.path()).unwrap_err().to_string().contains("empty"));
        let e = Dataset::load(&t.path().join("nope.yaml"), t.path()).unwrap_err();
        assert_eq!(e.exit_code(), 3);
    }
}
