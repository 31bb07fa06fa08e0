//! The YOLOv8 network in candle.
pub mod ops;
pub mod conv;
pub mod batchnorm;
pub(crate) mod conv_bn;
pub(crate) mod fused_op;
pub(crate) mod c2f;
pub(crate) mod detect_branch;
pub(crate) mod shifted;
pub(crate) mod channel_ops;
pub mod cpu;
pub mod fastmath;
pub mod blocks;
pub mod head;
pub mod model;
pub mod pt;
pub mod weights;
pub mod predict;
