//! The YOLOv8 network in candle: the blocks and graph (`blocks`, `model`, `head`), checkpoints
//! (`pt`, `weights`), the eval-mode folded network (`fused`) and prediction (`predict`). The
//! CPU kernels they run on live in [`cpu`].
pub mod blocks;
pub mod cpu;
pub mod fused;
pub mod head;
pub mod model;
pub mod ops;
pub mod predict;
pub mod pt;
pub mod weights;
