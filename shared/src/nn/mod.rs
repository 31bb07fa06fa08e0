//! The YOLOv8 network in candle.
pub mod ops;
pub mod conv;
pub mod batchnorm;
