//! Evaluation: non-maximum suppression, metrics, COCO mAP, the validator.
