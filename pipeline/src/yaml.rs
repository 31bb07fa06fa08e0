//! Deterministic YAML output.
//!
//! The emitters build `serde_json::Value` trees; this module turns them into YAML with every
//! mapping's keys sorted, which is what the KFP SDK writes (`yaml.dump(sort_keys=True)`). Sorting
//! here (instead of relying on serde_json's map type) keeps the output byte-stable even if some
//! other crate in the workspace turns on serde_json's `preserve_order` feature.

use kubeyolo::{Error, Result};
use serde_json::Value;

/// Convert to a `serde_yaml::Value` whose mappings are in sorted key order.
pub fn sorted(value: &Value) -> serde_yaml::Value {
    match value {
        Value::Null => serde_yaml::Value::Null,
        Value::Bool(b) => serde_yaml::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                serde_yaml::Value::Number(i.into())
            } else if let Some(u) = n.as_u64() {
                serde_yaml::Value::Number(u.into())
            } else {
                serde_yaml::Value::Number(n.as_f64().unwrap_or(0.0).into())
            }
        }
        Value::String(s) => serde_yaml::Value::String(s.clone()),
        Value::Array(items) => serde_yaml::Value::Sequence(items.iter().map(sorted).collect()),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_yaml::Mapping::new();
            for k in keys {
                out.insert(serde_yaml::Value::String(k.clone()), sorted(&map[k]));
            }
            serde_yaml::Value::Mapping(out)
        }
    }
}

/// One YAML document (no leading `---`), keys sorted.
pub fn to_yaml(value: &Value) -> Result<String> {
    serde_yaml::to_string(&sorted(value)).map_err(|e| Error::internal(format!("cannot write YAML: {e}")))
}
