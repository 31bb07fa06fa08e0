//! Ultralytics-compatible configuration files: users bring theirs unchanged.
pub mod dataset;
pub mod hyp;
pub mod model_yaml;
pub mod yaml_pos;
