//! `kubeyolo`: compile the kubeyolo pipeline for Kubeflow, or run it locally.
//!
//! Subcommands: `compile` (v2 IR or v1 Argo YAML), `run` (local runner: processes or docker),
//! `demo` (synthetic dataset + configs + a full local run). See `kubeyolo <cmd> --help`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use kubeyolo::{Error, Result};
use kubeyolo_pipeline::settings::{CompileSettings, CreatePvc, MlflowSettings, PvcSettings, Requests};
use kubeyolo_pipeline::{graph, v1, v2};

#[derive(Parser)]
#[command(name = "kubeyolo", version, about = "Compile the kubeyolo YOLOv8 pipeline for Kubeflow, or run it locally")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Compile(CompileArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// KFP v2 IR (PipelineSpec + Kubernetes PlatformSpec), for Kubeflow Pipelines 2.x.
    V2,
    /// Argo Workflow as kfp 1.8 compiles it, for Kubeflow Pipelines 1.x.
    V1,
}

/// Compile the pipeline to a YAML file to upload in the Kubeflow Pipelines UI.
#[derive(clap::Args)]
#[command(
    long_about = "Compile the pipeline (verify -> distribution -> plot -> [bool_train] train -> test, \
[bool_tune] tune) to a YAML file that you upload in the Kubeflow Pipelines UI (Pipelines > Upload pipeline).\n\n\
Every step mounts the claim --pvc at /data (where models, cfg and dataset yamls live), a memory-backed \
emptyDir at /dev/shm, runs with caching off and gets a display name. train/tune/test get --gpus \
nvidia.com/gpu and the --heavy-* requests; verify/distribution/plot the --light-* requests. MLflow \
settings come from a Secret/ConfigMap as environment variables, never as literal credentials.",
    after_help = "Examples:\n  \
kubeyolo compile --format v2 --image-prefix registry.example.com/kubeyolo --tag 0.1.0 --pvc pvc-local-cocodata -o pipeline.yaml\n  \
kubeyolo compile --format v2 --pvc yolo-data --create-pvc --storage-class local-path --pvc-size 5Gi --gpus 0 -o cpu.yaml\n  \
kubeyolo compile --format v2 --mlflow-secret mlflow-s3 --mlflow-configmap mlflow-settings -o pipeline.yaml\n  \
kubeyolo compile --format v1 --pvc pvc-local-cocodata -o pipeline-v1.yaml"
)]
struct CompileArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "v2")]
    format: Format,
    /// Image name prefix: images are PREFIX/yolo-<step>:TAG (e.g. registry.example.com/kubeyolo).
    #[arg(long, default_value = "kubeyolo")]
    image_prefix: String,
    /// Image tag.
    #[arg(long, default_value = "latest")]
    tag: String,
    /// PersistentVolumeClaim mounted at /data in every step (existing claim, or the one to create).
    #[arg(long, default_value = "pvc-local-cocodata")]
    pvc: String,
    /// Create the claim first (v2: kfp-kubernetes CreatePVC; v1: VolumeOp action=apply).
    #[arg(long)]
    create_pvc: bool,
    /// Storage class of the created claim (with --create-pvc; empty = cluster default).
    #[arg(long, default_value = "")]
    storage_class: String,
    /// Size of the created claim (with --create-pvc), e.g. 5Gi.
    #[arg(long, default_value = "5Gi")]
    pvc_size: String,
    /// Access mode of the created claim (with --create-pvc).
    #[arg(long, default_value = "ReadWriteOnce")]
    pvc_access_mode: String,
    /// Size of the memory-backed emptyDir at /dev/shm (pods get 64 MB of shm otherwise); 0 = no mount.
    #[arg(long, default_value = "1Gi")]
    shm_size: String,
    /// nvidia.com/gpu count for train, tune and test; 0 for a CPU-only cluster.
    #[arg(long, default_value_t = 1)]
    gpus: u32,
    /// CPU request of train/tune/test.
    #[arg(long, default_value = "2")]
    heavy_cpu: String,
    /// Memory request of train/tune/test.
    #[arg(long, default_value = "8Gi")]
    heavy_memory: String,
    /// CPU request of verify/distribution/plot.
    #[arg(long, default_value = "500m")]
    light_cpu: String,
    /// Memory request of verify/distribution/plot.
    #[arg(long, default_value = "1Gi")]
    light_memory: String,
    /// Emit no CPU/memory requests at all.
    #[arg(long)]
    no_requests: bool,
    /// Secret with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (MLflow artifact store), set as env on train/tune/test.
    #[arg(long)]
    mlflow_secret: Option<String>,
    /// ConfigMap with keys MLFLOW_TRACKING_URI and MLFLOW_S3_ENDPOINT_URL, set as env on train/tune/test.
    #[arg(long)]
    mlflow_configmap: Option<String>,
    /// MLFLOW_TRACKING_URI as a plain env var (no credentials in it), e.g. http://mlflow-server-service.mlflow-system.svc:5000.
    #[arg(long)]
    mlflow_tracking_uri: Option<String>,
    /// MLFLOW_EXPERIMENT_NAME as a plain env var.
    #[arg(long)]
    mlflow_experiment: Option<String>,
    /// Output file ("-" = stdout).
    #[arg(short, long, default_value = "pipeline.yaml")]
    output: PathBuf,
}

impl CompileArgs {
    fn settings(&self) -> CompileSettings {
        CompileSettings {
            image_prefix: self.image_prefix.clone(),
            tag: self.tag.clone(),
            pvc: PvcSettings {
                name: self.pvc.clone(),
                create: self.create_pvc.then(|| CreatePvc {
                    storage_class: self.storage_class.clone(),
                    size: self.pvc_size.clone(),
                    access_mode: self.pvc_access_mode.clone(),
                }),
            },
            shm_size: (self.shm_size != "0").then(|| self.shm_size.clone()),
            gpus: self.gpus,
            light: (!self.no_requests).then(|| Requests { cpu: self.light_cpu.clone(), memory: self.light_memory.clone() }),
            heavy: (!self.no_requests).then(|| Requests { cpu: self.heavy_cpu.clone(), memory: self.heavy_memory.clone() }),
            mlflow: MlflowSettings {
                secret: self.mlflow_secret.clone(),
                configmap: self.mlflow_configmap.clone(),
                tracking_uri: self.mlflow_tracking_uri.clone(),
                experiment: self.mlflow_experiment.clone(),
            },
        }
    }
}

fn compile(args: CompileArgs) -> Result<()> {
    let settings = args.settings();
    let p = graph::pipeline();
    let text = match args.format {
        Format::V2 => v2::emit(&p, &settings)?,
        Format::V1 => v1::emit(&p, &settings)?,
    };
    if args.output.as_os_str() == "-" {
        print!("{text}");
    } else {
        kubeyolo::files::write_atomic(&args.output, text.as_bytes())?;
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    kubeyolo::error::run_main(|| match cli.cmd {
        Cmd::Compile(a) => compile(a),
    })
}
