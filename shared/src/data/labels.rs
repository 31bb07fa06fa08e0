//! YOLO label files: the ONE place kubeyolo reads them (the dataset scan and the training loader
//! both come here, so they can never disagree about what a label file means).
//!
//! A label file holds one object per line, `cls cx cy w h`, all coordinates normalised to the
//! image size (ultralytics' detect format). Lines with more than 6 columns are ultralytics segment
//! lines, `cls x1 y1 x2 y2 ...`; they become the polygon's bounding box, as ultralytics'
//! `segments2boxes` does.
//!
//! Ultralytics' `verify_image_label` rejects a whole image when any line is bad. kubeyolo instead
//! checks each line, keeps the good ones and reports every bad one as an [`LabelIssue`]
//! (`file:line: reason`); bad input is never fatal here. [`LabelFile::ultralytics_would_drop`] tells
//! the caller when ultralytics would have dropped the image, for callers that want its behaviour.
//!
//! Checks, with ultralytics' tolerances (so that datasets ultralytics accepts stay accepted):
//! - 5 columns (box) or an odd count > 6 (polygon); anything else is a wrong column count;
//! - every column a finite number;
//! - class id an integer (`1` or `1.0`), 0 ≤ id < nc;
//! - coordinates ≤ 1.01; `cx`,`cy` ≥ -0.01; `w`,`h` ≥ 0 (ultralytics' 1% tolerance);
//! - `w` and `h` > 0 (a zero-size box teaches nothing; ultralytics keeps it until augmentation
//!   filters it, kubeyolo reports and drops it);
//! - a row identical to an earlier one is a duplicate (ultralytics removes duplicates too).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One labelled object, normalised `xywh` (centre, size) in [0, 1] (up to ultralytics' 1%).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LabelBox {
    pub cls: usize,
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

/// Why a line was rejected. Coarse, so counts per kind can be reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    /// Not 5 columns, and not a polygon (odd count > 6).
    Columns,
    /// A column is not a finite number.
    NotNumber,
    /// Class id negative, not an integer, or ≥ nc.
    Class,
    /// A coordinate outside [0, 1] (beyond ultralytics' 1% tolerance).
    OutOfRange,
    /// Width or height is zero.
    ZeroSize,
    /// Same row as an earlier line.
    Duplicate,
    /// The file is not UTF-8 text.
    Encoding,
}

impl IssueKind {
    /// Every kind, in report order.
    pub const ALL: [IssueKind; 7] = [
        IssueKind::Columns,
        IssueKind::NotNumber,
        IssueKind::Class,
        IssueKind::OutOfRange,
        IssueKind::ZeroSize,
        IssueKind::Duplicate,
        IssueKind::Encoding,
    ];

    /// The name used in JSON and tables (`columns`, `not_number`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::Columns => "columns",
            IssueKind::NotNumber => "not_number",
            IssueKind::Class => "class",
            IssueKind::OutOfRange => "out_of_range",
            IssueKind::ZeroSize => "zero_size",
            IssueKind::Duplicate => "duplicate",
            IssueKind::Encoding => "encoding",
        }
    }
}

/// One rejected line: 1-based line number (0 = the whole file) and a readable reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelIssue {
    pub line: usize,
    pub kind: IssueKind,
    pub reason: String,
}

/// A parsed label file: the valid boxes (in file order) and every rejected line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelFile {
    pub boxes: Vec<LabelBox>,
    pub issues: Vec<LabelIssue>,
    /// How many boxes came from polygon (segment) lines.
    pub segments: usize,
    /// Whether the file had no content at all (an ultralytics background image).
    pub empty: bool,
}

impl LabelFile {
    /// Whether ultralytics' `verify_image_label` would mark the image corrupt and drop it: any
    /// rejected line other than a duplicate or a zero-size box, or polygon and box lines mixed.
    pub fn ultralytics_would_drop(&self) -> bool {
        let mixed = self.segments > 0 && self.segments < self.boxes.len();
        mixed || self.issues.iter().any(|i| !matches!(i.kind, IssueKind::Duplicate | IssueKind::ZeroSize))
    }
}

/// Read and check the label file at `path` for a dataset of `nc` classes.
/// `Err` only when the file cannot be read; bad content becomes issues.
pub fn parse_label_file(path: &Path, nc: usize) -> Result<LabelFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io_at(path, "read the label file", e))?;
    Ok(parse_label_bytes(&bytes, nc))
}

/// [`parse_label_text`] on raw bytes (a non-UTF-8 file is one `Encoding` issue at line 0).
pub fn parse_label_bytes(bytes: &[u8], nc: usize) -> LabelFile {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_label_text(text, nc),
        Err(e) => LabelFile {
            issues: vec![LabelIssue {
                line: 0,
                kind: IssueKind::Encoding,
                reason: format!("not UTF-8 text ({e}); label files are plain text 'cls cx cy w h'"),
            }],
            ..LabelFile::default()
        },
    }
}

/// Check the text of one label file (UTF-8, an optional byte-order mark is skipped).
pub fn parse_label_text(text: &str, nc: usize) -> LabelFile {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = LabelFile::default();
    // (row bits, line) of accepted rows, for duplicate detection.
    let mut seen: Vec<([u32; 5], usize)> = Vec::new();
    let mut any = false;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        any = true;
        match parse_line(line, nc) {
            Ok((b, is_segment)) => {
                let key = [b.cls as u32, b.cx.to_bits(), b.cy.to_bits(), b.w.to_bits(), b.h.to_bits()];
                if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
                    out.issues.push(LabelIssue {
                        line: lineno,
                        kind: IssueKind::Duplicate,
                        reason: format!("duplicate of line {first}"),
                    });
                    continue;
                }
                seen.push((key, lineno));
                out.segments += is_segment as usize;
                out.boxes.push(b);
            }
            Err((kind, reason)) => out.issues.push(LabelIssue { line: lineno, kind, reason }),
        }
    }
    out.empty = !any;
    out
}

type LineError = (IssueKind, String);

/// One non-blank line → a box (and whether it was a polygon).
fn parse_line(line: &str, nc: usize) -> std::result::Result<(LabelBox, bool), LineError> {
    // Boxes (5 columns) are parsed without allocating: this runs once per line of every label
    // file of a dataset. Only polygon lines (> 6 columns) use a Vec.
    let mut head: [&str; 6] = [""; 6];
    let mut long: Vec<&str> = Vec::new();
    let mut n = 0;
    for c in line.split_whitespace() {
        if n < 6 {
            head[n] = c;
        } else {
            if long.is_empty() {
                long.extend_from_slice(&head);
            }
            long.push(c);
        }
        n += 1;
    }
    let cols: &[&str] = if n <= 6 { &head[..n] } else { &long };
    let is_segment = n > 6;
    if n != 5 && !(is_segment && (n - 1) % 2 == 0) {
        let what = if is_segment { "a polygon needs an even number of coordinates" } else { "expected 5" };
        return Err((
            IssueKind::Columns,
            format!("{n} columns ({what}: 'cls cx cy w h', or 'cls x1 y1 x2 y2 x3 y3 ...' for a polygon)"),
        ));
    }
    let mut small = [0f32; 6];
    let mut big: Vec<f32> = Vec::new();
    let vals: &mut [f32] = if n <= 6 {
        &mut small[..n]
    } else {
        big.resize(n, 0.0);
        &mut big
    };
    for (j, c) in cols.iter().enumerate() {
        match c.parse::<f32>() {
            Ok(v) if v.is_finite() => vals[j] = v,
            _ => return Err((IssueKind::NotNumber, format!("column {} '{c}' is not a number", j + 1))),
        }
    }
    let c = vals[0];
    if c < 0.0 || c.fract() != 0.0 {
        return Err((IssueKind::Class, format!("class id {} is not a non-negative integer", cols[0])));
    }
    if c as usize >= nc {
        return Err((
            IssueKind::Class,
            format!(
                "class id {} is not below the dataset's class count {nc} (valid ids 0-{})",
                cols[0],
                nc.saturating_sub(1)
            ),
        ));
    }
    let (cx, cy, w, h) = if is_segment {
        for (j, &v) in vals[1..].iter().enumerate() {
            if !(-0.01..=1.01).contains(&v) {
                return Err((
                    IssueKind::OutOfRange,
                    format!("polygon coordinate {} = {} is outside [0, 1]", j + 1, cols[j + 1]),
                ));
            }
        }
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in vals[1..].chunks_exact(2) {
            x0 = x0.min(p[0]);
            x1 = x1.max(p[0]);
            y0 = y0.min(p[1]);
            y1 = y1.max(p[1]);
        }
        ((x0 + x1) / 2.0, (y0 + y1) / 2.0, x1 - x0, y1 - y0)
    } else {
        (vals[1], vals[2], vals[3], vals[4])
    };
    for (name, v, lo) in [("cx", cx, -0.01), ("cy", cy, -0.01), ("w", w, 0.0), ("h", h, 0.0)] {
        if v > 1.01 || v < lo {
            return Err((
                IssueKind::OutOfRange,
                format!("{name} = {v} is outside [0, 1]: coordinates must be normalised by the image size"),
            ));
        }
    }
    if w == 0.0 || h == 0.0 {
        return Err((IssueKind::ZeroSize, format!("zero-size box (w = {w}, h = {h})")));
    }
    Ok((LabelBox { cls: c as usize, cx, cy, w, h }, is_segment))
}

/// Format boxes as label file text (`cls cx cy w h`, 6 decimals, as ultralytics writes them).
pub fn format_label_text(boxes: &[LabelBox]) -> String {
    let mut s = String::with_capacity(boxes.len() * 40);
    for b in boxes {
        s.push_str(&format!("{} {:.6} {:.6} {:.6} {:.6}\n", b.cls, b.cx, b.cy, b.w, b.h));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(f: &LabelFile) -> Vec<(usize, IssueKind)> {
        f.issues.iter().map(|i| (i.line, i.kind)).collect()
    }

    #[test]
    fn good_lines_and_blank_lines() {
        let f = parse_label_text("\u{feff}0 0.5 0.5 0.2 0.3\n\n  \n2 0.1 0.9 0.05 0.05\r\n", 3);
        assert!(f.issues.is_empty() && !f.empty);
        assert_eq!(f.boxes.len(), 2);
        assert_eq!(f.boxes[1], LabelBox { cls: 2, cx: 0.1, cy: 0.9, w: 0.05, h: 0.05 });
        assert!(!f.ultralytics_would_drop());
    }

    #[test]
    fn empty_file_is_background() {
        let f = parse_label_text(" \n\n", 3);
        assert!(f.empty && f.boxes.is_empty() && f.issues.is_empty());
    }

    #[test]
    fn each_bad_line_kind() {
        let text = "0 0.5 0.5 0.2\n\
                    0 0.5 0.5 0.2 0.2 0.9\n\
                    0 0.5 abc 0.2 0.2\n\
                    0 0.5 nan 0.2 0.2\n\
                    3 0.5 0.5 0.2 0.2\n\
                    -1 0.5 0.5 0.2 0.2\n\
                    1.5 0.5 0.5 0.2 0.2\n\
                    0 1.2 0.5 0.2 0.2\n\
                    0 0.5 0.5 -0.1 0.2\n\
                    0 0.5 0.5 0 0.2\n\
                    1.0 0.5 0.5 0.2 0.2\n\
                    1 0.5 0.5 0.2 0.2\n\
                    0 0.1 0.1 0.5 0.1 0.5 0.5 0.1\n";
        let f = parse_label_text(text, 3);
        assert_eq!(
            kinds(&f),
            vec![
                (1, IssueKind::Columns),
                (2, IssueKind::Columns),
                (3, IssueKind::NotNumber),
                (4, IssueKind::NotNumber),
                (5, IssueKind::Class),
                (6, IssueKind::Class),
                (7, IssueKind::Class),
                (8, IssueKind::OutOfRange),
                (9, IssueKind::OutOfRange),
                (10, IssueKind::ZeroSize),
                (12, IssueKind::Duplicate),
                (13, IssueKind::Columns),
            ]
        );
        assert_eq!(f.boxes, vec![LabelBox { cls: 1, cx: 0.5, cy: 0.5, w: 0.2, h: 0.2 }]);
        assert!(f.issues[10].reason.contains("duplicate of line 11"));
        assert!(f.issues[4].reason.contains("class count 3"));
        assert!(f.ultralytics_would_drop());
    }

    #[test]
    fn tolerance_like_ultralytics() {
        let f = parse_label_text("0 1.005 -0.005 0.01 1.01\n", 1);
        assert!(f.issues.is_empty(), "{:?}", f.issues);
    }

    #[test]
    fn polygon_becomes_box() {
        let f = parse_label_text("1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n", 2);
        assert!(f.issues.is_empty());
        assert_eq!(f.segments, 1);
        let b = f.boxes[0];
        assert_eq!(b.cls, 1);
        assert!((b.cx - 0.3).abs() < 1e-6 && (b.cy - 0.4).abs() < 1e-6);
        assert!((b.w - 0.4).abs() < 1e-6 && (b.h - 0.4).abs() < 1e-6);
        let f = parse_label_text("1 0.1 0.2 1.5 0.2 0.5 0.6\n", 2);
        assert_eq!(kinds(&f), vec![(1, IssueKind::OutOfRange)]);
    }

    #[test]
    fn non_utf8_is_an_issue_not_an_error() {
        let f = parse_label_bytes(&[0xff, 0xfe, 0x30], 1);
        assert_eq!(kinds(&f), vec![(0, IssueKind::Encoding)]);
    }

    #[test]
    fn format_round_trips() {
        let b = vec![LabelBox { cls: 2, cx: 0.25, cy: 0.5, w: 0.125, h: 0.75 }];
        assert_eq!(parse_label_text(&format_label_text(&b), 3).boxes, b);
    }
}
