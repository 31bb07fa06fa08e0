//! The dataset scan: per split and class, how many images contain the class and how many
//! instances there are, plus everything wrong with the labels. The distribution step's result.
//!
//! Every label file of every split is read once, in parallel (rayon), through
//! [`crate::data::labels`]; images are never decoded (only their label files matter), so a scan of
//! 100,000 images takes about a second. The result is deterministic: counts do not depend on
//! thread scheduling and the listed issues are the first ones in image order.
//!
//! ## `result_json` (the [`Distribution`] type, written by `yolo-distribution`, read by `yolo-plot`)
//! ```json
//! {
//!   "schema": "kubeyolo.distribution/1",
//!   "data_yaml": "/data/data-custom.yaml",
//!   "dataset_root": "/data/datasets/custom",
//!   "names": ["circle", "square"],
//!   "splits": [
//!     { "split": "train",
//!       "images": 64,              // images found for the split
//!       "labelled_images": 55,     // images with at least one valid box
//!       "backgrounds": 6,          // label file present but empty (ultralytics "background")
//!       "missing_labels": 2,       // no label file at all (also trained as background)
//!       "missing_images": 0,       // listed (e.g. in a .txt split) but not on disk: not counted
//!       "unreadable_labels": 0,    // label file present but unreadable (permissions, a folder…)
//!       "instances": 150,          // valid boxes
//!       "images_per_class": [40, 31],     // index = class id
//!       "instances_per_class": [80, 70],
//!       "segment_lines": 0,        // polygon lines converted to boxes
//!       "invalid_lines": 3,        // rejected lines (not counted in instances)
//!       "invalid_by_kind": {"class": 1, "out_of_range": 2},   // keys: labels::IssueKind names
//!       "files_with_issues": 2,
//!       "issues": ["/data/.../labels/train/x.txt:3: class id 7 is not below ..."],
//!       "issues_truncated": 0      // how many more issues exist than are listed
//!     }
//!   ]
//! }
//! ```
//! Splits appear in pipeline order (train, val, test), only those the yaml defines. The JSON is
//! compact on purpose: KFP passes output parameters by value, so issue lists are capped
//! ([`MAX_LISTED_ISSUES`] per split); the full list is on the step's stdout.
//!
//! ## `cls_names_json`
//! `{"0": "circle", "1": "square"}` — the JSON form of ultralytics' `model.names` dict
//! ([`cls_names_json`]); [`parse_cls_names`] also accepts a plain list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::dataset::{label_path, Dataset};
use crate::data::labels::{parse_label_bytes, LabelIssue};
use crate::error::{Error, Result};

/// The schema tag of `result_json`; bumped when the shape changes incompatibly.
pub const SCHEMA: &str = "kubeyolo.distribution/1";

/// How many `file:line: reason` strings each split keeps in the JSON.
pub const MAX_LISTED_ISSUES: usize = 20;

/// The whole scan result (= `result_json`). See the module docs for the JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub schema: String,
    pub data_yaml: PathBuf,
    pub dataset_root: PathBuf,
    pub names: Vec<String>,
    pub splits: Vec<SplitStats>,
}

/// Counts for one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitStats {
    pub split: String,
    pub images: usize,
    pub labelled_images: usize,
    pub backgrounds: usize,
    pub missing_labels: usize,
    #[serde(default)]
    pub missing_images: usize,
    pub unreadable_labels: usize,
    pub instances: usize,
    pub images_per_class: Vec<usize>,
    pub instances_per_class: Vec<usize>,
    pub segment_lines: usize,
    pub invalid_lines: usize,
    pub invalid_by_kind: BTreeMap<String, usize>,
    pub files_with_issues: usize,
    pub issues: Vec<String>,
    pub issues_truncated: usize,
}

/// Scan every split the dataset defines. `on_issue` sees every issue (`file:line: reason`) in
/// image order, e.g. to print them all; the result keeps the first [`MAX_LISTED_ISSUES`] per split.
///
/// Errors only when a split cannot be listed (missing folder, no images; see
/// [`Dataset::split_images`]); label problems are counted, never fatal.
pub fn scan(ds: &Dataset, mut on_issue: impl FnMut(&str, &str)) -> Result<Distribution> {
    let mut splits = Vec::new();
    for split in ds.split_names() {
        let (images, verified) = ds.split_images_verified(split)?;
        splits.push(scan_images_with(split, &images, ds.nc(), !verified, &mut on_issue));
    }
    Ok(Distribution {
        schema: SCHEMA.into(),
        data_yaml: ds.yaml.clone(),
        dataset_root: ds.root.clone(),
        names: ds.names.clone(),
        splits,
    })
}

/// What one image's label file held, reduced to what the counts need.
#[derive(Default)]
struct ImageResult {
    state: LabelState,
    /// (class, instances) for each class present, ascending class.
    counts: Vec<(usize, usize)>,
    segments: usize,
    label: PathBuf,
    issues: Vec<LabelIssue>,
}

#[derive(Default, PartialEq)]
enum LabelState {
    #[default]
    Found,
    Missing,
    NoImage,
    Empty,
    Unreadable(String),
}

thread_local! {
    /// Each scan thread reads label files into one reused buffer.
    static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Read the whole file into the start of `buf` and return its length: open, read until 0, close —
/// no size-hint `stat`, no allocation or zeroing per file (this runs 100,000s of times; syscalls
/// are most of the scan's cost). `buf` only grows, and stays zero-initialised beyond what was read.
fn read_into(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    if buf.len() < 8192 {
        buf.resize(8192, 0);
    }
    let mut n = 0;
    loop {
        if n == buf.len() {
            let grow = buf.len();
            buf.resize(grow * 2, 0);
        }
        match f.read(&mut buf[n..]) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn scan_one(image: &Path, nc: usize, check_image: bool) -> ImageResult {
    if check_image && std::fs::metadata(image).is_err() {
        // `label` carries the image path here: that is the file the message is about.
        return ImageResult { state: LabelState::NoImage, label: image.to_path_buf(), ..Default::default() };
    }
    let label = label_path(image);
    let read = BUF.with(|b| {
        let mut buf = b.borrow_mut();
        read_into(&label, &mut buf).map(|n| parse_label_bytes(&buf[..n], nc))
    });
    let lf = match read {
        Ok(lf) => lf,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return ImageResult { state: LabelState::Missing, label, ..Default::default() }
        }
        Err(e) => return ImageResult { state: LabelState::Unreadable(e.to_string()), label, ..Default::default() },
    };
    let mut per = vec![0usize; nc];
    for b in &lf.boxes {
        per[b.cls] += 1;
    }
    ImageResult {
        state: if lf.empty { LabelState::Empty } else { LabelState::Found },
        counts: per.into_iter().enumerate().filter(|(_, n)| *n > 0).collect(),
        segments: lf.segments,
        label,
        issues: lf.issues,
    }
}

/// Scan one split's images (already listed). Public for callers that list images themselves;
/// every image is checked to exist (see [`scan_images_with`]).
pub fn scan_images(split: &str, images: &[PathBuf], nc: usize, on_issue: &mut impl FnMut(&str, &str)) -> SplitStats {
    scan_images_with(split, images, nc, true, on_issue)
}

/// [`scan_images`]; `check_images: false` skips the per-image existence check (for images just
/// found by walking a folder).
pub fn scan_images_with(
    split: &str,
    images: &[PathBuf],
    nc: usize,
    check_images: bool,
    on_issue: &mut impl FnMut(&str, &str),
) -> SplitStats {
    let results: Vec<ImageResult> = images.par_iter().map(|im| scan_one(im, nc, check_images)).collect();
    let mut s = SplitStats {
        split: split.to_string(),
        images: images.len(),
        images_per_class: vec![0; nc],
        instances_per_class: vec![0; nc],
        ..Default::default()
    };
    let mut note = |s: &mut SplitStats, text: String| {
        on_issue(split, &text);
        if s.issues.len() < MAX_LISTED_ISSUES {
            s.issues.push(text);
        } else {
            s.issues_truncated += 1;
        }
    };
    for r in results {
        match &r.state {
            LabelState::Missing => s.missing_labels += 1,
            LabelState::NoImage => {
                s.missing_images += 1;
                s.files_with_issues += 1;
                note(
                    &mut s,
                    format!("{}: image not found (listed in the split, labels not counted)", r.label.display()),
                );
            }
            LabelState::Empty => s.backgrounds += 1,
            LabelState::Unreadable(why) => {
                s.unreadable_labels += 1;
                s.files_with_issues += 1;
                note(&mut s, format!("{}: cannot read the label file: {why}", r.label.display()));
            }
            LabelState::Found => {}
        }
        if !r.counts.is_empty() {
            s.labelled_images += 1;
        }
        for &(c, n) in &r.counts {
            s.images_per_class[c] += 1;
            s.instances_per_class[c] += n;
            s.instances += n;
        }
        s.segment_lines += r.segments;
        if !r.issues.is_empty() {
            s.files_with_issues += 1;
        }
        for i in &r.issues {
            s.invalid_lines += 1;
            *s.invalid_by_kind.entry(i.kind.as_str().to_string()).or_insert(0) += 1;
            let text = if i.line == 0 {
                format!("{}: {}", r.label.display(), i.reason)
            } else {
                format!("{}:{}: {}", r.label.display(), i.line, i.reason)
            };
            note(&mut s, text);
        }
    }
    s
}

impl Distribution {
    /// Parse `result_json` text, with an error that says what was expected.
    pub fn from_json(text: &str) -> Result<Distribution> {
        let d: Distribution = serde_json::from_str(text).map_err(|e| {
            Error::data(format!("not a distribution result ({SCHEMA}): {e}"))
                .with_hint("pass the result_json written by yolo-distribution")
        })?;
        if d.schema != SCHEMA {
            return Err(Error::data(format!("distribution result has schema '{}', expected '{SCHEMA}'", d.schema))
                .with_hint("regenerate it with the yolo-distribution of the same kubeyolo version"));
        }
        Ok(d)
    }

    /// A `--result-json` argument: KFP v1/v2 pass the JSON itself (string parameters are passed
    /// by value), a person passes a file path. Text starting with `{` is JSON, anything else a path.
    pub fn from_arg(arg: &str) -> Result<Distribution> {
        if arg.trim_start().starts_with('{') {
            Self::from_json(arg)
        } else {
            let p = Path::new(arg);
            Self::from_json(&crate::files::read_text(p)?).map_err(|e| e.with_file(p))
        }
    }

    /// Number of classes.
    pub fn nc(&self) -> usize {
        self.names.len()
    }

    /// All splits added up (split name `"all"`); issue lists are concatenated, still capped.
    pub fn total(&self) -> SplitStats {
        let nc = self.nc();
        let mut t = SplitStats {
            split: "all".into(),
            images_per_class: vec![0; nc],
            instances_per_class: vec![0; nc],
            ..Default::default()
        };
        for s in &self.splits {
            t.images += s.images;
            t.labelled_images += s.labelled_images;
            t.backgrounds += s.backgrounds;
            t.missing_labels += s.missing_labels;
            t.missing_images += s.missing_images;
            t.unreadable_labels += s.unreadable_labels;
            t.instances += s.instances;
            for c in 0..nc.min(s.images_per_class.len()).min(s.instances_per_class.len()) {
                t.images_per_class[c] += s.images_per_class[c];
                t.instances_per_class[c] += s.instances_per_class[c];
            }
            t.segment_lines += s.segment_lines;
            t.invalid_lines += s.invalid_lines;
            for (k, v) in &s.invalid_by_kind {
                *t.invalid_by_kind.entry(k.clone()).or_insert(0) += v;
            }
            t.files_with_issues += s.files_with_issues;
            for i in &s.issues {
                if t.issues.len() < MAX_LISTED_ISSUES {
                    t.issues.push(i.clone());
                } else {
                    t.issues_truncated += 1;
                }
            }
            t.issues_truncated += s.issues_truncated;
        }
        t
    }

    /// Rows of the per-class table: `class id, name, then images/instances per split`.
    /// Header: `id, class, <split> images, <split> instances, ...`.
    pub fn class_table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header = vec!["id".to_string(), "class".to_string()];
        for s in &self.splits {
            header.push(format!("{} images", s.split));
            header.push(format!("{} instances", s.split));
        }
        let rows = self
            .names
            .iter()
            .enumerate()
            .map(|(c, n)| {
                let mut r = vec![c.to_string(), n.clone()];
                for s in &self.splits {
                    r.push(s.images_per_class.get(c).copied().unwrap_or(0).to_string());
                    r.push(s.instances_per_class.get(c).copied().unwrap_or(0).to_string());
                }
                r
            })
            .collect();
        (header, rows)
    }

    /// Rows of the per-split summary: images, labelled, backgrounds, missing labels, instances,
    /// invalid lines, files with issues.
    pub fn split_table(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let header = [
            "split",
            "images",
            "labelled",
            "backgrounds",
            "missing labels",
            "instances",
            "invalid lines",
            "files with issues",
        ]
        .map(String::from)
        .to_vec();
        let rows = self
            .splits
            .iter()
            .map(|s| {
                vec![
                    s.split.clone(),
                    s.images.to_string(),
                    s.labelled_images.to_string(),
                    s.backgrounds.to_string(),
                    s.missing_labels.to_string(),
                    s.instances.to_string(),
                    s.invalid_lines.to_string(),
                    (s.files_with_issues).to_string(),
                ]
            })
            .collect();
        (header, rows)
    }
}

/// `cls_names_json`: `{"0": "name", ...}` (ultralytics' `model.names` as JSON), keys in id order.
pub fn cls_names_json(names: &[String]) -> String {
    let body: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{}:{}", serde_json::Value::String(i.to_string()), serde_json::Value::String(n.clone())))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// Class names from `cls_names_json` text: the `{"0": "a", ...}` map or a `["a", ...]` list.
/// Accepts the JSON itself or (when it does not start with `{` or `[`) a path to a file holding it.
pub fn parse_cls_names(arg: &str) -> Result<Vec<String>> {
    let t = arg.trim_start();
    let (text, file) = if t.starts_with('{') || t.starts_with('[') {
        (arg.to_string(), None)
    } else {
        (crate::files::read_text(Path::new(arg))?, Some(PathBuf::from(arg)))
    };
    let bad = |m: String| {
        let e =
            Error::data(m).with_hint("pass the cls_names_json written by yolo-distribution: {\"0\": \"name\", ...}");
        match &file {
            Some(f) => e.with_file(f),
            None => e,
        }
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("class names are not JSON: {e}")))?;
    match v {
        serde_json::Value::Array(a) => a
            .into_iter()
            .map(|x| x.as_str().map(String::from).ok_or_else(|| bad(format!("class name {x} is not a string"))))
            .collect(),
        serde_json::Value::Object(m) => {
            let mut by_id = BTreeMap::new();
            for (k, x) in m {
                let id: usize = k.trim().parse().map_err(|_| bad(format!("class id '{k}' is not a number")))?;
                let name =
                    x.as_str().map(String::from).ok_or_else(|| bad(format!("class name {x} is not a string")))?;
                by_id.insert(id, name);
            }
            if by_id.keys().enumerate().any(|(i, &k)| i != k) {
                return Err(bad("class ids must be 0..n-1 without gaps".into()));
            }
            Ok(by_id.into_values().collect())
        }
        other => Err(bad(format!("class names must be a map or a list, found {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn put(p: &Path, text: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    /// A hand-made dataset whose counts are worked out below.
    fn dataset(dir: &Path) -> Dataset {
        let d = dir.join("ds");
        // train: a (2 cls0 + 1 cls2), b (1 cls0, 1 bad class), c (empty), d (no label), e (dup + oob)
        put(&d.join("images/train/a.jpg"), "");
        put(&d.join("labels/train/a.txt"), "0 0.5 0.5 0.1 0.1\n0 0.2 0.2 0.1 0.1\n2 0.5 0.5 0.3 0.3\n");
        put(&d.join("images/train/b.png"), "");
        put(&d.join("labels/train/b.txt"), "0 0.5 0.5 0.1 0.1\n5 0.5 0.5 0.1 0.1\n");
        put(&d.join("images/train/c.jpg"), "");
        put(&d.join("labels/train/c.txt"), "\n");
        put(&d.join("images/train/d.jpg"), "");
        put(&d.join("images/train/e.jpg"), "");
        put(
            &d.join("labels/train/e.txt"),
            "1 0.5 0.5 0.1 0.1\n1 0.5 0.5 0.1 0.1\n1 0.5 1.5 0.1 0.1\n1 0.1 0.2 0.3 0.2 0.3 0.4\n",
        );
        // val: one image with cls1
        put(&d.join("images/val/v.jpg"), "");
        put(&d.join("labels/val/v.txt"), "1 0.5 0.5 0.2 0.2\n");
        put(&d.join("data.yaml"), "train: images/train\nval: images/val\nnames: [a, b, c]\n");
        Dataset::load(&d.join("data.yaml"), dir).unwrap()
    }

    #[test]
    fn counts_match_hand_computed() {
        let t = tempfile::tempdir().unwrap();
        let ds = dataset(t.path());
        let mut seen = Vec::new();
        let r = scan(&ds, |split, s| seen.push(format!("{split} {s}"))).unwrap();
        assert_eq!(r.splits.len(), 2);
        let tr = &r.splits[0];
        assert_eq!(tr.split, "train");
        assert_eq!(tr.images, 5);
        assert_eq!(tr.labelled_images, 3); // a, b, e
        assert_eq!(tr.backgrounds, 1); // c
        assert_eq!(tr.missing_labels, 1); // d
        assert_eq!(tr.images_per_class, vec![2, 1, 1]);
        assert_eq!(tr.instances_per_class, vec![3, 2, 1]); // e: line 1 + polygon line 4
        assert_eq!(tr.instances, 6);
        assert_eq!(tr.segment_lines, 1);
        assert_eq!(tr.invalid_lines, 3);
        assert_eq!(tr.files_with_issues, 2);
        let kinds: Vec<(&str, usize)> = tr.invalid_by_kind.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(kinds, vec![("class", 1), ("duplicate", 1), ("out_of_range", 1)]);
        assert!(
            tr.issues[0]
                .ends_with("labels/train/b.txt:2: class id 5 is not below the dataset's class count 3 (valid ids 0-2)"),
            "{}",
            tr.issues[0]
        );
        assert!(tr.issues[1].ends_with("labels/train/e.txt:2: duplicate of line 1"));
        assert_eq!(seen.len(), 3);
        let v = &r.splits[1];
        assert_eq!((v.images, v.instances, v.images_per_class.clone()), (1, 1, vec![0, 1, 0]));
        let tot = r.total();
        assert_eq!((tot.images, tot.instances, tot.instances_per_class.clone()), (6, 7, vec![3, 3, 1]));
        // JSON round trip through the public parser
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(Distribution::from_arg(&json).unwrap(), r);
        let (h, rows) = r.class_table();
        assert_eq!(h.len(), 6);
        assert_eq!(rows[0], vec!["0", "a", "2", "3", "0", "0"]);
    }

    #[test]
    fn issue_list_is_capped_but_counted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        put(&d.join("images/train/x.jpg"), "");
        put(&d.join("labels/train/x.txt"), &"9 0.5 0.5 0.1 0.1\n".repeat(30));
        let imgs = vec![d.join("images/train/x.jpg")];
        let s = scan_images("train", &imgs, 1, &mut |_, _| {});
        assert_eq!((s.invalid_lines, s.issues.len(), s.issues_truncated), (30, MAX_LISTED_ISSUES, 10));
    }

    #[test]
    fn unreadable_label_is_counted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        put(&d.join("images/train/x.jpg"), "");
        fs::create_dir_all(d.join("labels/train/x.txt")).unwrap(); // a folder where the file should be
        let s = scan_images("train", &[d.join("images/train/x.jpg")], 1, &mut |_, _| {});
        assert_eq!((s.unreadable_labels, s.files_with_issues, s.issues.len()), (1, 1, 1));
    }

    #[test]
    fn image_listed_but_missing_is_not_counted() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        put(&d.join("labels/train/x.txt"), "0 0.5 0.5 0.1 0.1\n");
        let s = scan_images("train", &[d.join("images/train/x.jpg")], 1, &mut |_, _| {});
        assert_eq!((s.images, s.missing_images, s.instances, s.files_with_issues), (1, 1, 0, 1));
        assert!(s.issues[0].ends_with("images/train/x.jpg: image not found (listed in the split, labels not counted)"));
    }

    #[test]
    fn cls_names_round_trip() {
        let names = vec!["a".to_string(), "b \"q\"".to_string()];
        let j = cls_names_json(&names);
        assert_eq!(j, r#"{"0":"a","1":"b \"q\""}"#);
        assert_eq!(parse_cls_names(&j).unwrap(), names);
        assert_eq!(parse_cls_names(r#"["a","b \"q\""]"#).unwrap(), names);
        assert!(parse_cls_names(r#"{"0":"a","2":"b"}"#).is_err());
        assert!(Distribution::from_json("{}").is_err());
    }
}
