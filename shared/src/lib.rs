//! # kubeyolo — the common crate of every kubeyolo step
//!
//! kubeyolo trains YOLOv8 detectors as a Kubeflow pipeline of small Rust binaries (one per
//! step: verify, distribution, plot, train, test, tune) that read and write a volume mounted at
//! `/data`. This crate holds everything those binaries share; each binary is thin glue
//! (`clap` arguments → functions here → KFP output files).
//!
//! Data flows one way: **config → data → network → train/eval → outputs**.
//!
//! | module | what lives there |
//! |---|---|
//! | [`error`] | the one error type (file/line/key context, hint) and exit codes |
//! | [`files`] | atomic output files (temp + rename) |
//! | [`root`] | the data root (`/data`) and how names resolve under it |
//! | [`config`] | ultralytics-compatible yamls: dataset, cfg (hyper-parameters), model |
//! | [`data`] | label files, dataset scans, OpenCV-exact decoding, letterbox, the training dataset, augmentations, the loader, multi-scale, the disk cache, the synthetic dataset |
//! | [`nn`] | the YOLOv8 network in candle: blocks, model graph, head decoding, the eval network folded once (`nn::fused`), weights (`.pt`, safetensors), predict; the CPU kernels in `nn::cpu` (conv, fused training ops, the inference conv) |
//! | [`train`] | the training loop (ultralytics 8.4's), loss + assigner, optimizers, schedule, EMA, resumable checkpoints, results.csv |
//! | [`tune`] | hyper-parameter evolution (ultralytics 8.4's tuner): space, mutation, the shared results file, the loop |
//! | [`eval`] | NMS, ultralytics-exact metrics, COCO mAP, the validator |
//! | [`track`] | MLflow: REST client, background logger, spool, S3 artifacts, run lifecycle |
//! | [`kfp`] | the Kubeflow Pipelines runtime contract: output files, UI metadata |
//! | [`plot`] | every chart (plotters, with an embedded font) |
//! | [`device`] | which compute device to use, and the device report |
//! | [`signals`] | SIGTERM/SIGINT as a stop request for steps that checkpoint (train) |

pub mod config;
pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod files;
pub mod kfp;
pub mod nn;
pub mod plot;
pub mod root;
pub mod signals;
pub mod track;
pub mod train;
pub mod tune;

pub use error::{Error, ErrorKind, Result};

/// kubeyolo's version, written into checkpoints, tracking tags and reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
