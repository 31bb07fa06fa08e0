//! Key and value rules of the MLflow server, applied before anything is sent.
//!
//! The server rejects a whole `log-batch` when one key is invalid, so a single YOLO column such as
//! `metrics/mAP50(B)` would silently cost every metric of that epoch. Keys are therefore
//! sanitised here, the same way for every step, so the names in MLflow are predictable:
//! parentheses and brackets are dropped (`metrics/mAP50(B)` → `metrics/mAP50B`, the usual
//! convention), any other character outside `[A-Za-z0-9_\-. :/]` becomes `_`, and path-like
//! forms the server refuses (`/abs`, `a//b`, `a/../b`, trailing `/`) are normalised.
//! Values: params are limited to 6000 characters and tags to 8000 (the server's limits); longer
//! values are truncated here, with a warning, instead of relying on the server's silent cut.

/// Longest key (metric, param or tag) the server accepts.
pub const MAX_KEY_CHARS: usize = 250;
/// Longest param value the server stores.
pub const MAX_PARAM_CHARS: usize = 6000;
/// Longest tag value the server stores.
pub const MAX_TAG_CHARS: usize = 8000;

/// Make `key` acceptable to the MLflow server (see the module docs for the rules).
pub fn sanitize_key(key: &str) -> String {
    let mut cleaned = String::with_capacity(key.len());
    for c in key.chars() {
        match c {
            '(' | ')' | '[' | ']' | '{' | '}' => {}
            c if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | ':' | '/') => cleaned.push(c),
            _ => cleaned.push('_'),
        }
    }
    // Path normalisation: the server rejects any name that `posixpath.normpath` would change.
    let segments: Vec<String> = cleaned
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .map(|s| if s == ".." { "__".to_string() } else { s.to_string() })
        .collect();
    let mut out = segments.join("/");
    if out.is_empty() {
        out.push('_');
    }
    if out.chars().count() > MAX_KEY_CHARS {
        out = out.chars().take(MAX_KEY_CHARS).collect();
        while out.ends_with('/') {
            out.pop();
        }
    }
    out
}

/// Cut `value` to at most `max` characters (the server counts Unicode code points).
/// Returns the value and whether it was cut.
pub fn truncate_value(value: &str, max: usize) -> (String, bool) {
    match value.char_indices().nth(max) {
        None => (value.to_string(), false),
        Some((byte, _)) => (value[..byte].to_string(), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolo_columns_become_valid_keys() {
        assert_eq!(sanitize_key("metrics/mAP50(B)"), "metrics/mAP50B");
        assert_eq!(sanitize_key("metrics/mAP50-95(B)"), "metrics/mAP50-95B");
        assert_eq!(sanitize_key("train/box_loss"), "train/box_loss");
        assert_eq!(sanitize_key("lr/pg0"), "lr/pg0");
        assert_eq!(sanitize_key("per class: AP@0.5"), "per class: AP_0.5");
    }

    #[test]
    fn path_like_keys_are_normalised() {
        assert_eq!(sanitize_key("/abs"), "abs");
        assert_eq!(sanitize_key("a//b/"), "a/b");
        assert_eq!(sanitize_key("a/../b"), "a/__/b");
        assert_eq!(sanitize_key("./x"), "x");
        assert_eq!(sanitize_key("()"), "_");
        assert_eq!(sanitize_key(""), "_");
    }

    #[test]
    fn long_keys_and_values_are_cut() {
        let long = "k".repeat(300);
        assert_eq!(sanitize_key(&long).len(), MAX_KEY_CHARS);
        let (v, cut) = truncate_value(&"é".repeat(7000), MAX_PARAM_CHARS);
        assert!(cut);
        assert_eq!(v.chars().count(), MAX_PARAM_CHARS);
        assert_eq!(truncate_value("short", 10), ("short".to_string(), false));
    }
}
