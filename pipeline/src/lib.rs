//! # kubeyolo-pipeline — the kubeyolo graph, compiled for Kubeflow and run locally
//!
//! One Rust definition of the pipeline ([`graph`]) feeds every back end:
//!
//! | module | what it does |
//! |---|---|
//! | [`graph`] | the steps, their flags, inputs/outputs, conditions and ordering |
//! | [`settings`] | deployment settings: images, PVC, shm, GPUs, requests, MLflow wiring |
//! | [`v2`] | KFP v2 IR + Kubernetes platform spec (what `kfp` 2.x compiles) |
//! | [`v1`] | Argo Workflow (what `kfp` 1.8 compiles, the seed's format) |
//! | [`katib`] | Katib `Experiment` (v1beta1) whose trials run the train step |
//! | [`k8s`] | pod-spec pieces shared by the Argo and Katib emitters (env, resources, volumes) |
//! | [`runner`] | run the graph locally: step binaries as processes, or docker containers |
//! | [`demo`] | synthetic dataset + configs, then a full local run |
//! | [`yaml`] | deterministic YAML output |
//!
//! What a run does, on every back end: verify → distribution → plot → train → test (tune with
//! `bool_tune`), data passed as string outputs. Train trains in `runs/detect/<run id>` on the
//! volume, the run id being the orchestrator's (KFP v2 `{{$.pipeline_job_uuid}}`, Argo
//! `{{workflow.uid}}`, the local run folder's name): a retried train pod (train retries twice
//! on the cluster) resumes its own checkpoint, a new run never resumes an old one. Test
//! evaluates train's `best_pt`; the local runner prints its metrics at the end.
//!
//! The binary `kubeyolo` (`src/main.rs`) is the CLI over these modules.

pub mod demo;
pub mod graph;
pub mod k8s;
pub mod katib;
pub mod runner;
pub mod settings;
pub mod v1;
pub mod v2;
pub mod yaml;
