//! The search space: which cfg keys the tuner mutates, their bounds and mutation gains.
//!
//! The default is ultralytics 8.4's `Tuner.space` (`engine/tuner.py`), restricted to the keys
//! kubeyolo's trainer acts on (8.4 lists `copy_paste`, which only acts on segment labels). A user
//! space is a yaml file `key: [min, max]` or `key: [min, max, gain]` that replaces the default, as
//! `model.tune(space=...)` does. Every bound is checked against the key's own rules (a fraction
//! stays in [0, 1], an integer key gets integer bounds) when the file is read, so a bad space
//! fails before the first iteration trains.

use std::path::Path;

use serde_yaml::Value;

use crate::config::hyp::{self, Hyp, Ty, Use};
use crate::config::yaml_pos::{key_line, show_value, yaml_error};
use crate::error::{Error, Result};

/// One mutable hyper-parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Dim {
    pub key: String,
    pub min: f64,
    pub max: f64,
    /// Scales the mutation sigma of this key (8.4: 0.3 for `momentum`, else 1).
    pub gain: f64,
    /// Ultralytics' `CFG_INT_KEYS` (here `close_mosaic`): rounded, bounds rounded inwards.
    pub int: bool,
}

impl Dim {
    pub fn span(&self) -> f64 {
        self.max - self.min
    }
}

/// The ordered search space (order = the column order of results, plots and the yaml).
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub dims: Vec<Dim>,
}

/// Ultralytics 8.4.190 `Tuner.space`: (key, min, max, gain).
const ULTRALYTICS_SPACE: &[(&str, f64, f64, f64)] = &[
    ("lr0", 1e-5, 1e-2, 1.0),
    ("lrf", 0.01, 1.0, 1.0),
    ("momentum", 0.7, 0.98, 0.3),
    ("weight_decay", 0.0, 0.001, 1.0),
    ("warmup_epochs", 0.0, 5.0, 1.0),
    ("warmup_momentum", 0.0, 0.95, 1.0),
    ("box", 1.0, 20.0, 1.0),
    ("cls", 0.1, 4.0, 1.0),
    ("cls_pw", 0.0, 1.0, 1.0),
    ("dfl", 0.4, 12.0, 1.0),
    ("hsv_h", 0.0, 0.1, 1.0),
    ("hsv_s", 0.0, 0.9, 1.0),
    ("hsv_v", 0.0, 0.9, 1.0),
    ("degrees", 0.0, 45.0, 1.0),
    ("translate", 0.0, 0.9, 1.0),
    ("scale", 0.0, 0.95, 1.0),
    ("shear", 0.0, 10.0, 1.0),
    ("perspective", 0.0, 0.001, 1.0),
    ("flipud", 0.0, 1.0, 1.0),
    ("fliplr", 0.0, 1.0, 1.0),
    ("bgr", 0.0, 1.0, 1.0),
    ("mosaic", 0.0, 1.0, 1.0),
    ("mixup", 0.0, 1.0, 1.0),
    ("cutmix", 0.0, 1.0, 1.0),
    ("copy_paste", 0.0, 1.0, 1.0),
    ("close_mosaic", 0.0, 10.0, 1.0),
];

impl Default for Space {
    /// 8.4's space without the keys kubeyolo does not act on.
    fn default() -> Self {
        let dims = ULTRALYTICS_SPACE
            .iter()
            .filter(|(k, ..)| hyp::spec(k).is_some_and(|s| s.used == Use::Used))
            .map(|&(k, min, max, gain)| Dim { key: k.to_string(), min, max, gain, int: is_int_key(k) })
            .collect();
        Space { dims }
    }
}

/// Whether ultralytics treats the key as an integer (`CFG_INT_KEYS`).
fn is_int_key(key: &str) -> bool {
    hyp::spec(key).is_some_and(|s| matches!(s.ty, Ty::Int(_)))
}

impl Space {
    pub fn keys(&self) -> Vec<String> {
        self.dims.iter().map(|d| d.key.clone()).collect()
    }

    /// Reads a space yaml (`lr0: [1e-5, 1e-1]`, `momentum: [0.6, 0.98, 0.3]`).
    pub fn load(path: &Path) -> Result<Space> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io_at(path, "read the tune space", e))?;
        Space::parse(&text, path)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Space> {
        let hint_form = "write each key as `key: [min, max]` or `key: [min, max, gain]`, e.g. `lr0: [1.0e-5, 1.0e-2]`";
        let doc: Value = serde_yaml::from_str(text).map_err(|e| yaml_error(&e, file, "tune space"))?;
        let map = match doc {
            Value::Mapping(m) if !m.is_empty() => m,
            Value::Null => return Err(Error::config("the tune space is empty").with_file(file).with_hint(hint_form)),
            _ => {
                return Err(Error::config(
                    "the tune space must be a mapping of cfg keys to [min, max] or [min, max, gain]",
                )
                .with_file(file)
                .with_hint(hint_form))
            }
        };
        let mut dims = Vec::new();
        for (k, v) in map {
            let key = match &k {
                Value::String(s) => s.clone(),
                other => {
                    return Err(Error::config(format!("key {} is not a cfg key name", show_value(other)))
                        .with_file(file)
                        .with_hint(hint_form))
                }
            };
            let at = |e: Error| {
                let e = e.with_file(file).with_key(key.clone());
                match key_line(text, &key) {
                    Some(line) => e.with_line(line),
                    None => e,
                }
            };
            dims.push(parse_dim(&key, &v).map_err(at)?);
        }
        Ok(Space { dims })
    }
}

/// One `key: [min, max(, gain)]` entry, checked against the key's cfg rules.
fn parse_dim(key: &str, v: &Value) -> Result<Dim> {
    let spec = hyp::spec(key).ok_or_else(|| {
        let near = hyp::KEYS
            .iter()
            .map(|s| s.key)
            .max_by(|a, b| strsim::jaro_winkler(key, a).total_cmp(&strsim::jaro_winkler(key, b)));
        let e = Error::config(format!("'{key}' is not an ultralytics cfg key"));
        match near {
            Some(n) if strsim::jaro_winkler(key, n) > 0.8 => e.with_hint(format!("did you mean '{n}'?")),
            _ => e.with_hint("use keys of ultralytics' default.yaml, e.g. lr0, momentum, mosaic"),
        }
    })?;
    if spec.used != Use::Used {
        return Err(Error::config(format!("'{key}' cannot be tuned: kubeyolo's trainer does not act on it"))
            .with_hint("remove it from the space"));
    }
    if !matches!(spec.ty, Ty::Float | Ty::Frac | Ty::Int(_) | Ty::Scale) {
        return Err(Error::config(format!("'{key}' is not a numeric hyper-parameter, so it cannot be mutated"))
            .with_hint("tune numeric keys such as lr0, box, mosaic"));
    }
    let items = match v {
        Value::Sequence(s) if (2..=3).contains(&s.len()) => s,
        other => {
            return Err(Error::config(format!("'{key}: {}' is not [min, max] or [min, max, gain]", show_value(other)))
                .with_hint("e.g. `lr0: [1.0e-5, 1.0e-2]` or `momentum: [0.6, 0.98, 0.3]`"))
        }
    };
    let mut nums = Vec::with_capacity(3);
    for (i, item) in items.iter().enumerate() {
        let what = ["min", "max", "gain"][i];
        let x = match item {
            Value::Number(n) => n.as_f64(),
            _ => None,
        }
        .filter(|x| x.is_finite())
        .ok_or_else(|| {
            Error::config(format!("'{key}': {what} {} is not a number", show_value(item)))
                .with_hint("bounds and gain are numbers, e.g. [0.0, 0.9]")
        })?;
        nums.push(x);
    }
    let (min, max, gain) = (nums[0], nums[1], nums.get(2).copied().unwrap_or(1.0));
    if min > max {
        return Err(Error::config(format!("'{key}': min {min} is greater than max {max}"))
            .with_hint("write [min, max] with min <= max"));
    }
    if !(0.0..=1.0).contains(&gain) {
        return Err(Error::config(format!("'{key}': gain {gain} is outside [0, 1]"))
            .with_hint("the gain scales the mutation sigma; ultralytics uses 0.3 for momentum, 1 otherwise"));
    }
    let int = matches!(spec.ty, Ty::Int(_));
    if int && min.ceil() > max.floor() {
        return Err(Error::config(format!("'{key}' is an integer key and [{min}, {max}] holds no integer"))
            .with_hint("widen the bounds to include an integer"));
    }
    // Both bounds must be values the key accepts (a fraction in [0, 1], an int >= its minimum).
    for bound in [min, max] {
        let text = if int {
            format!("{}", if bound == min { min.ceil() } else { max.floor() } as i64)
        } else {
            format!("{bound:?}")
        };
        Hyp::default().set(key, &text)?;
    }
    Ok(Dim { key: key.to_string(), min, max, gain, int })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn parse(text: &str) -> Result<Space> {
        Space::parse(text, Path::new("space.yaml"))
    }

    #[test]
    fn default_is_84_without_ignored_keys() {
        let s = Space::default();
        let keys = s.keys();
        assert_eq!(keys.len(), ULTRALYTICS_SPACE.len() - 1);
        assert!(!keys.contains(&"copy_paste".to_string()));
        assert_eq!(keys[0], "lr0");
        let m = &s.dims[2];
        assert_eq!((m.key.as_str(), m.min, m.max, m.gain), ("momentum", 0.7, 0.98, 0.3));
        assert!(s.dims.iter().find(|d| d.key == "close_mosaic").unwrap().int);
        assert_eq!(s.dims.iter().filter(|d| d.int).count(), 1);
    }

    #[test]
    fn parses_user_space_in_file_order() {
        let s = parse("momentum: [0.6, 0.98, 0.3]\nlr0: [1.0e-5, 0.1]\nclose_mosaic: [0, 5]\n").unwrap();
        assert_eq!(s.keys(), ["momentum", "lr0", "close_mosaic"]);
        assert_eq!(s.dims[1].gain, 1.0);
        assert!(s.dims[2].int);
    }

    #[test]
    fn bad_spaces_name_file_line_and_key() {
        let cases = [
            ("lr0: [1.0e-5, 0.1]\nmomentum: [0.98, 0.6]\n", 2, "greater than max"),
            ("lr0: [1.0e-5, 0.1]\nlr00: [0.1, 0.2]\n", 2, "did you mean 'lr0'"),
            ("lr0: [a, 0.1]\n", 1, "not a number"),
            ("lr0: 0.1\n", 1, "not [min, max]"),
            ("mosaic: [0.0, 1.5]\n", 1, "mosaic"),
            ("close_mosaic: [0.2, 0.8]\n", 1, "no integer"),
            ("optimizer: [0, 1]\n", 1, "not a numeric"),
            ("copy_paste: [0, 1]\n", 1, "does not act"),
            ("lr0: [0.001, 0.01, 2]\n", 1, "gain"),
        ];
        for (text, line, needle) in cases {
            let e = parse(text).unwrap_err();
            let shown = format!("{e}");
            assert_eq!(e.kind, ErrorKind::Config, "{text}");
            assert!(shown.contains("space.yaml"), "{shown}");
            assert!(shown.contains(needle) || format!("{e:?}").contains(needle), "{text}: {shown}");
            assert_eq!(e.line, Some(line), "{text}: {shown}");
        }
        assert!(parse("").is_err());
        assert!(parse("[1, 2]").is_err());
    }
}
