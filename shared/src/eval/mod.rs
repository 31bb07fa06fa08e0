//! Evaluation: non-maximum suppression, metrics, COCO mAP, the validator.
pub mod coco;
pub mod metrics;
pub mod nms;
pub mod validator;
