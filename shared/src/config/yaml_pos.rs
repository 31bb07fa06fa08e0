//! Where things are in a yaml text: line numbers for error messages.
//!
//! `serde_yaml` reports a location for *syntax* errors only; once a file parsed into a
//! `serde_yaml::Value`, positions are gone. Semantic errors ("`epochs: -3` is out of range",
//! "layer 4 reads from layer 9") must still point at a line, so these helpers find the line of a
//! top-level key, or of the n-th item of a top-level block sequence, by scanning the text. They
//! understand the block style every ultralytics yaml uses; for anything they cannot place
//! (flow style, anchors) they return `None` and the error names the file without a line.

use std::path::Path;

use crate::error::Error;

/// 1-based line of top-level `key:` (a mapping key at column 0), if present.
pub fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines().enumerate().find_map(|(i, line)| {
        // a byte-order mark (editors on Windows write one) is not part of the first key
        let line = if i == 0 { line.trim_start_matches('\u{feff}') } else { line };
        let rest = strip_key(line, key)?;
        // `key:` must be followed by whitespace, a comment or the end of the line.
        (rest.is_empty() || rest.starts_with([' ', '\t', '#'])).then_some(i + 1)
    })
}

/// `line` without a leading `key:` / `"key":` / `'key':` at column 0.
fn strip_key<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    for quote in ["", "\"", "'"] {
        if let Some(rest) =
            line.strip_prefix(quote).and_then(|r| r.strip_prefix(key)).and_then(|r| r.strip_prefix(quote))
        {
            if let Some(rest) = rest.trim_start_matches([' ', '\t']).strip_prefix(':') {
                return Some(rest);
            }
        }
    }
    None
}

/// 1-based line of item `index` (0-based) of the block sequence under top-level `key:`.
///
/// Items are the lines starting with `- ` at the indentation of the first item; comments, blank
/// lines and deeper lines (continuations of a multi-line item) are skipped. The scan stops at the
/// next top-level key.
pub fn seq_item_line(text: &str, key: &str, index: usize) -> Option<usize> {
    let start = key_line(text, key)?;
    let mut indent: Option<usize> = None;
    let mut seen = 0usize;
    for (i, line) in text.lines().enumerate().skip(start) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let ind = line.len() - trimmed.len();
        let is_item = trimmed == "-" || trimmed.starts_with("- ") || trimmed.starts_with("-\t");
        if ind == 0 && !is_item {
            return None; // next top-level key: the sequence has fewer items
        }
        if !is_item {
            continue;
        }
        match indent {
            None => indent = Some(ind),
            Some(first) if ind != first => continue,
            _ => {}
        }
        if seen == index {
            return Some(i + 1);
        }
        seen += 1;
    }
    None
}

/// A `serde_yaml` syntax/shape error as a kubeyolo config error naming `file` and the line.
pub fn yaml_error(err: &serde_yaml::Error, file: &Path, what: &str) -> Error {
    let mut e = Error::config(format!("{what} is not valid yaml: {err}")).with_file(file).with_hint(
        "fix the yaml syntax at that line (indentation, a missing ':' or a stray quote are the usual causes); \
         an online yaml checker shows the exact spot",
    );
    if let Some(loc) = err.location() {
        e = e.with_line(loc.line());
    }
    e
}

/// What kind of yaml value `v` is, for "expected X, found Y" messages.
pub fn value_kind(v: &serde_yaml::Value) -> &'static str {
    use serde_yaml::Value;
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A yaml value as short one-line text for messages: scalars as written (strings quoted),
/// small lists/mappings in flow form, anything longer by its kind.
pub fn show_value(v: &serde_yaml::Value) -> String {
    use serde_yaml::Value;
    match v {
        Value::String(s) => format!("'{s}'"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "nothing (empty)".into(),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim().replace('\n', " "))
            .ok()
            .filter(|s| s.len() <= 60)
            .unwrap_or_else(|| value_kind(other).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# top\nnc: 80 # classes\nscales:\n  n: [1, 2, 3]\nbackbone:\n  # [from, repeats, module, args]\n  - [-1, 1, Conv, [64, 3, 2]]\n\n  - [-1, 1, Conv,\n     [128, 3, 2]]\n  - - -1\n    - 1\n    - SPPF\n    - [5]\nhead:\n- [-1, 1, Detect, [nc]]\n";

    #[test]
    fn finds_keys_and_items() {
        assert_eq!(key_line(TEXT, "nc"), Some(2));
        assert_eq!(key_line(TEXT, "n"), None, "nested keys are not top-level");
        assert_eq!(key_line(TEXT, "head"), Some(15));
        assert_eq!(seq_item_line(TEXT, "backbone", 0), Some(7));
        assert_eq!(seq_item_line(TEXT, "backbone", 1), Some(9));
        assert_eq!(seq_item_line(TEXT, "backbone", 2), Some(11));
        assert_eq!(seq_item_line(TEXT, "backbone", 3), None);
        assert_eq!(seq_item_line(TEXT, "head", 0), Some(16));
    }

    #[test]
    fn quoted_keys() {
        assert_eq!(key_line("\"lr0\": 0.1\n'lrf' : 2\n", "lrf"), Some(2));
        assert_eq!(key_line("lr0x: 1\n", "lr0"), None);
        assert_eq!(key_line("\u{feff}lr0: 1\r\nlrf: 2\r\n", "lr0"), Some(1));
        assert_eq!(key_line("\u{feff}lr0: 1\r\nlrf: 2\r\n", "lrf"), Some(2));
    }
}
