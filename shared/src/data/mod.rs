//! Datasets on disk: label files, scans, images, and the synthetic dataset generator.
pub mod augment;
pub mod dataset;
pub mod decode;
pub mod image;
pub mod labels;
pub mod loader;
pub mod multi_scale;
pub mod npy_cache;
pub mod scan;
pub mod source;
pub mod synth;
pub mod targets;

pub use targets::Targets;
