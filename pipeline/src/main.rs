//! `kubeyolo`: compile the kubeyolo pipeline for Kubeflow, or run it locally.
//!
//! Subcommands: `compile` (v2 IR or v1 Argo YAML), `run` (local runner: processes or docker),
//! `demo` (synthetic dataset + configs + a full local run). See `kubeyolo <cmd> --help`.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use kubeyolo::{Error, Result};
use kubeyolo_pipeline::graph::TuneOptions;
use kubeyolo_pipeline::katib::{self, KatibOptions};
use kubeyolo_pipeline::runner::docker::DockerExecutor;
use kubeyolo_pipeline::runner::process::ProcessExecutor;
use kubeyolo_pipeline::runner::{self, Executor};
use kubeyolo_pipeline::settings::{CompileSettings, CreatePvc, MlflowSettings, PvcSettings, Requests, Toleration};
use kubeyolo_pipeline::{demo, graph, v1, v2};

#[derive(Parser)]
#[command(name = "kubeyolo", version, about = "Compile the kubeyolo YOLOv8 pipeline for Kubeflow, or run it locally")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Compile(CompileArgs),
    Run(RunArgs),
    Demo(DemoArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum RunnerKind {
    /// Step binaries (yolo-<step>, beside kubeyolo) as subprocesses.
    Process,
    /// One `docker run` per step with the local images (docker/build.sh).
    Docker,
}

/// The tune step's options, shared by `compile` and `run`.
#[derive(clap::Args)]
struct TuneArgs {
    /// Tune iterations in total, over all workers: each is a whole training of --tune-epochs
    /// epochs. 10 by default, not ultralytics' 300: 300 trainings are days of GPU time for one
    /// pipeline run; 10 give the evolution a first look (Katib: maxTrialCount).
    #[arg(long, default_value_t = graph::DEFAULT_TUNE_ITERATIONS, value_name = "N")]
    tune_iterations: u32,
    /// Epochs per tune iteration (tune's --set epochs=N) [default: the cfg's epochs].
    #[arg(long, value_name = "N")]
    tune_epochs: Option<u32>,
    /// Tune workers at once, sharing one results folder on the volume: KFP ParallelFor (v2) /
    /// withItems (v1) pods, concurrent processes locally (Katib: parallelTrialCount). Pods on
    /// different nodes need a volume whose filesystem honours POSIX locks (flock).
    #[arg(long, default_value_t = 1, value_name = "N")]
    tune_workers: u32,
}

impl TuneArgs {
    fn options(&self) -> Result<TuneOptions> {
        let o = TuneOptions { iterations: self.tune_iterations, epochs: self.tune_epochs, workers: self.tune_workers };
        o.validate()?;
        Ok(o)
    }
}

/// Options shared by `run` and `demo`.
#[derive(clap::Args)]
struct RunCommon {
    /// Run parameter (repeatable): model_name, cfg, data, bool_train, bool_tune, tune_space.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run folder for outputs, artifacts, logs and summary.json [default: <data-dir>/pipeline-runs/<timestamp>].
    /// Its name is the run id: train trains in <data-dir>/runs/detect/<name>, so the same
    /// --run-dir again resumes an unfinished training (as a KFP retry does).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Do not echo step output live (it is in <run-dir>/<step>/log.txt either way).
    #[arg(long, short)]
    quiet: bool,
    /// Exit non-zero when a step is missing (not built / not implemented), not only when one fails.
    #[arg(long)]
    require_all: bool,
    /// Folder of the step binaries (process runner) [default: the folder of this kubeyolo].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    #[command(flatten)]
    tune: TuneArgs,
}

/// Run the pipeline locally on a folder standing in for the /data volume.
#[derive(clap::Args)]
#[command(
    long_about = "Run the pipeline locally, without Kubernetes: the same graph, parameters, conditions and \
data passing as on Kubeflow. --data-dir stands in for the /data volume (models, cfg and dataset yamls, datasets). \
Each step's outputs go to files in the run folder and are passed verbatim to the next steps; each step's \
output goes to <run-dir>/<step>/log.txt; a summary table is printed at the end and written to \
<run-dir>/summary.json.\n\n\
A step whose binary (process) or image (docker) does not exist is reported MISSING, not faked, and the steps \
needing it are blocked; a failing step shows its own error and blocks its dependants. With --tune-workers N, \
tune runs as N concurrent yolo-tune --worker i processes on one results folder \
(<data-dir>/runs/detect/tune-<run id>), each with its own log in <run-dir>/tune/worker-<i>/; the step is ok \
when all are. Exit code: 0 when no step failed, 4 when one failed, 2 when one is missing and --require-all is given.",
    after_help = "Examples:\n  \
kubeyolo run --data-dir ./demo --set model_name=yolov8n.yaml\n  \
kubeyolo run --data-dir /mnt/data --set cfg=cfg-insight3 --set data=data-insight3 --set bool_tune=true\n  \
kubeyolo run --data-dir ./demo --set bool_tune=true --tune-workers 2 --tune-iterations 6 --tune-epochs 3\n  \
kubeyolo run --runner docker --image-prefix kubeyolo --tag dev --data-dir ./demo --set bool_train=false"
)]
struct RunArgs {
    /// Folder standing in for /data.
    #[arg(long)]
    data_dir: PathBuf,
    /// How steps run.
    #[arg(long, value_enum, default_value = "process")]
    runner: RunnerKind,
    /// Docker runner: images are PREFIX/yolo-<step>:TAG.
    #[arg(long, default_value = "kubeyolo")]
    image_prefix: String,
    /// Docker runner: image tag.
    #[arg(long, default_value = "dev")]
    tag: String,
    /// Docker runner: size of /dev/shm in the containers.
    #[arg(long, default_value = "1g")]
    shm_size: String,
    /// Docker runner: extra `docker run` argument (repeatable), e.g. --docker-arg=--gpus --docker-arg=all.
    #[arg(long = "docker-arg", allow_hyphen_values = true)]
    docker_args: Vec<String>,
    #[command(flatten)]
    common: RunCommon,
}

/// Generate a synthetic dataset and configs into a folder, then run the whole pipeline on it.
#[derive(clap::Args)]
#[command(
    long_about = "The first thing to try: writes a synthetic detection dataset (ultralytics layout, \
data-custom.yaml) and a small cfg-custom.yaml (CPU-sized: imgsz 128, 20 epochs, batch 8) into --dir, then \
runs the pipeline on it with the process runner (verify -> distribution -> plot -> train -> test; tune with \
--set bool_tune=true) and prints test's metrics at the end. Train runs in <dir>/runs/detect/<run id>; \
about 3 minutes on 2 cores. The model defaults to the built-in yolov8n.yaml (from scratch, nothing downloaded). \
Step binaries missing beside kubeyolo are built first with cargo when run from a checkout (--no-build to skip).",
    after_help = "Examples:\n  \
cargo run -p kubeyolo-pipeline -- demo\n  \
kubeyolo demo --dir /tmp/demo --set bool_tune=true\n  \
kubeyolo demo --epochs 1 --imgsz 64 --images 32"
)]
struct DemoArgs {
    /// Folder for the dataset, configs and runs.
    #[arg(long, default_value = "demo")]
    dir: PathBuf,
    /// Training images (val and test get a quarter each).
    #[arg(long, default_value_t = 64)]
    images: usize,
    /// Image size of the dataset and of training.
    #[arg(long, default_value_t = 128)]
    imgsz: u32,
    /// Training epochs (20: mAP visibly above 0 on the demo data; fewer for a quick smoke test).
    #[arg(long, default_value_t = 20)]
    epochs: u32,
    /// Do not build missing step binaries with cargo.
    #[arg(long)]
    no_build: bool,
    /// Only write the dataset and configs; do not run the pipeline.
    #[arg(long)]
    prepare_only: bool,
    #[command(flatten)]
    common: RunCommon,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// KFP v2 IR (PipelineSpec + Kubernetes PlatformSpec), for Kubeflow Pipelines 2.x.
    V2,
    /// Argo Workflow as kfp 1.8 compiles it, for Kubeflow Pipelines 1.x.
    V1,
    /// Katib Experiment (v1beta1) whose trials run yolo-train; submit with kubectl apply -f.
    Katib,
}

/// Compile the pipeline to a YAML file to upload in the Kubeflow Pipelines UI.
#[derive(clap::Args)]
#[command(
    long_about = "Compile the pipeline (verify -> distribution -> plot -> [bool_train] train -> test, \
[bool_tune] tune) to a YAML file that you upload in the Kubeflow Pipelines UI (Pipelines > Upload pipeline).\n\n\
Every step mounts the claim --pvc at /data (where models, cfg and dataset yamls live), a memory-backed \
emptyDir at /dev/shm, runs with caching off and gets a display name. train trains in \
/data/runs/detect/<run id> (the KFP run's UUID; v1: the workflow UID) and is retried twice (60 s, then \
120 s later): a retried pod resumes from its own last checkpoint, a new run starts fresh. tune evolves \
train's best weights for --tune-iterations iterations in /data/runs/detect/tune-<run id>, with \
--tune-workers pods at once sharing that folder (one lock file; pods on different nodes need a \
volume whose filesystem honours POSIX locks), retried and resumed like train. train/tune/test get --gpus \
nvidia.com/gpu, the CUDA images (<tag>-cuda) when --gpus > 0, the --gpu-node-selector / --gpu-toleration \
scheduling and the --heavy-* requests; verify/distribution/plot the --light-* requests. The images run as \
user 65532; --run-as-root sets runAsUser 0 for a volume only root may write. MLflow \
settings come from a Secret/ConfigMap as environment variables, never as literal credentials.\n\n\
--format katib writes a Katib Experiment instead: Katib's own search (--katib-algorithm) over ultralytics' \
tune space (or --tune-space FILE), each trial a Job running yolo-train on the same claim with the values \
Katib picks (--set lr0=...), --tune-iterations trials, --tune-workers at once, objective: maximize \
fitness (also recorded: mAP50-95, mAP50, precision, recall; Katib's File collector reads \
yolo-train --out-metrics-text). Model, cfg and dataset are names under /data: --set model_name=, cfg=, \
data= (defaults: the pipeline's run parameters). Submit it with `kubectl apply -n <namespace> -f FILE` \
in a namespace with Katib's metrics-collector injection (Kubeflow profile namespaces have it).",
    after_help = "Examples:\n  \
kubeyolo compile --format v2 --image-prefix registry.example.com/kubeyolo --tag 0.1.0 --pvc pvc-local-cocodata -o pipeline.yaml\n  \
kubeyolo compile --format v2 --pvc yolo-data --create-pvc --storage-class local-path --pvc-size 5Gi --gpus 0 -o cpu.yaml\n  \
kubeyolo compile --format v2 --mlflow-secret mlflow-s3 --mlflow-configmap mlflow-settings -o pipeline.yaml\n  \
kubeyolo compile --format v2 --tune-workers 4 --tune-iterations 40 --tune-epochs 10 -o pipeline.yaml\n  \
kubeyolo compile --format v1 --pvc pvc-local-cocodata -o pipeline-v1.yaml\n  \
kubeyolo compile --format katib --set cfg=cfg-insight3 --set data=data-insight3 --tune-iterations 30 \\\n      \
--tune-workers 3 --tune-epochs 10 -o experiment.yaml && kubectl apply -n kubeflow-user -f experiment.yaml"
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
    /// Secret with keys MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (tracking server auth), set as env on train/tune/test.
    #[arg(long)]
    mlflow_auth_secret: Option<String>,
    /// ConfigMap with keys MLFLOW_TRACKING_URI and MLFLOW_S3_ENDPOINT_URL, set as env on train/tune/test.
    #[arg(long)]
    mlflow_configmap: Option<String>,
    /// MLFLOW_TRACKING_URI as a plain env var (no credentials in it), e.g. http://mlflow-server-service.mlflow-system.svc:5000.
    #[arg(long)]
    mlflow_tracking_uri: Option<String>,
    /// MLFLOW_EXPERIMENT_NAME as a plain env var.
    #[arg(long)]
    mlflow_experiment: Option<String>,
    /// Run every container as root (securityContext runAsUser 0) instead of the images' user
    /// 65532: for a volume only root may write (e.g. a hostPath PV that is not chowned).
    #[arg(long)]
    run_as_root: bool,
    /// Node label the GPU steps (train/tune/test with --gpus > 0) require, KEY=VALUE (repeatable),
    /// e.g. nvidia.com/gpu.present=true.
    #[arg(long = "gpu-node-selector", value_name = "KEY=VALUE")]
    gpu_node_selector: Vec<String>,
    /// Taint of GPU nodes the GPU steps tolerate, KEY[=VALUE][:EFFECT] (repeatable),
    /// e.g. nvidia.com/gpu:NoSchedule.
    #[arg(long = "gpu-toleration", value_name = "KEY[=VALUE][:EFFECT]")]
    gpu_toleration: Vec<String>,
    #[command(flatten)]
    tune: TuneArgs,
    /// Katib: the search space, a yaml of `key: [min, max]` or `key: [min, max, gain]` (gains are
    /// ignored) [default: ultralytics 8.4's tune space, restricted to the keys kubeyolo trains with].
    #[arg(long, value_name = "FILE")]
    tune_space: Option<PathBuf>,
    /// Katib: suggestion algorithm (tpe: copes with ~25 mixed dimensions and parallel trials;
    /// a Gaussian process scales poorly there, random search wastes a small budget).
    #[arg(long, default_value = katib::DEFAULT_ALGORITHM, value_parser = katib::ALGORITHMS)]
    katib_algorithm: String,
    /// Katib: the Experiment's name.
    #[arg(long, default_value = "yolov8-tune")]
    katib_name: String,
    /// Katib: the Experiment's namespace [default: none written; kubectl apply -n decides].
    #[arg(long)]
    katib_namespace: Option<String>,
    /// Katib: run parameter for the trials (repeatable): model_name, cfg, data.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Output file ("-" = stdout).
    #[arg(short, long, default_value = "pipeline.yaml")]
    output: PathBuf,
}

impl CompileArgs {
    /// A Katib-only option given with a pipeline format, if any.
    fn katib_only_flag(&self) -> Option<(&'static str, &'static str)> {
        if !self.set.is_empty() {
            Some(("--set", "the pipeline's run parameters are set in the Kubeflow 'Create run' form"))
        } else if self.tune_space.is_some() {
            Some((
                "--tune-space",
                "for the pipeline's tune step, set the `tune_space` run parameter (a yaml on the volume)",
            ))
        } else if self.katib_namespace.is_some() {
            Some(("--katib-namespace", "a pipeline runs in the namespace it is started in"))
        } else {
            None
        }
    }

    fn settings(&self) -> Result<CompileSettings> {
        let gpu_node_selector = self
            .gpu_node_selector
            .iter()
            .map(|kv| {
                kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| {
                    Error::usage(format!("--gpu-node-selector '{kv}' is not KEY=VALUE"))
                        .with_hint("e.g. nvidia.com/gpu.present=true")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let gpu_tolerations = self.gpu_toleration.iter().map(|t| Toleration::parse(t)).collect::<Result<Vec<_>>>()?;
        Ok(CompileSettings {
            run_as_root: self.run_as_root,
            gpu_node_selector,
            gpu_tolerations,
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
            light: (!self.no_requests)
                .then(|| Requests { cpu: self.light_cpu.clone(), memory: self.light_memory.clone() }),
            heavy: (!self.no_requests)
                .then(|| Requests { cpu: self.heavy_cpu.clone(), memory: self.heavy_memory.clone() }),
            mlflow: MlflowSettings {
                secret: self.mlflow_secret.clone(),
                auth_secret: self.mlflow_auth_secret.clone(),
                configmap: self.mlflow_configmap.clone(),
                tracking_uri: self.mlflow_tracking_uri.clone(),
                experiment: self.mlflow_experiment.clone(),
            },
        })
    }
}

fn compile(args: CompileArgs) -> Result<()> {
    let settings = args.settings()?;
    let tune = args.tune.options()?;
    let p = graph::pipeline_with(&tune);
    let text = match args.format {
        Format::V2 | Format::V1 => {
            if let Some((flag, hint)) = args.katib_only_flag() {
                return Err(Error::usage(format!("{flag} applies to --format katib only")).with_hint(hint));
            }
            match args.format {
                Format::V2 => v2::emit(&p, &settings)?,
                _ => v1::emit(&p, &settings)?,
            }
        }
        Format::Katib => {
            let params = runner::parse_params(&p, &args.set)?;
            if let Some(k) =
                args.set.iter().filter_map(|kv| kv.split_once('=')).map(|(k, _)| k).find(|k| k.starts_with("bool_"))
            {
                return Err(Error::usage(format!("--set {k}: a Katib experiment always trains"))
                    .with_hint("set model_name, cfg or data"));
            }
            let space = match &args.tune_space {
                Some(path) => kubeyolo::tune::space::Space::load(path)?,
                None => kubeyolo::tune::space::Space::default(),
            };
            let o = KatibOptions {
                name: args.katib_name.clone(),
                namespace: args.katib_namespace.clone(),
                algorithm: args.katib_algorithm.clone(),
                space,
                model: params["model_name"].clone(),
                cfg: params["cfg"].clone(),
                data: params["data"].clone(),
                tune,
            };
            let train = p.step("train").ok_or_else(|| Error::internal("no train step"))?;
            katib::emit(train, &o, &settings)?
        }
    };
    if args.output.as_os_str() == "-" {
        print!("{text}");
    } else {
        kubeyolo::files::write_atomic(&args.output, text.as_bytes())?;
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(p).map_err(|e| Error::io_at(p, "create folder", e))?;
    std::fs::canonicalize(p).map_err(|e| Error::io_at(p, "resolve", e))
}

fn run_pipeline(data_dir: &Path, exec: &dyn Executor, common: &RunCommon, extra_sets: &[String]) -> Result<()> {
    let p = graph::pipeline_with(&common.tune.options()?);
    let mut sets = extra_sets.to_vec();
    sets.extend(common.set.iter().cloned());
    let params = runner::parse_params(&p, &sets)?;
    let data_dir = absolute(data_dir)?;
    let run_dir = match &common.run_dir {
        Some(d) => absolute(d)?,
        None => absolute(&new_run_dir(&data_dir.join("pipeline-runs")))?,
    };
    let ctx = runner::RunContext::new(data_dir, run_dir);
    let opts = runner::RunOptions { params, echo: !common.quiet, tail_lines: 20 };
    let summary = runner::run(&p, exec, &ctx, &opts)?;
    println!("\n{}", summary.table());
    if summary.failed() > 0 {
        return Err(Error::data(format!("{} step(s) failed", summary.failed()))
            .with_hint(format!("see the logs in {}", ctx.run_dir.display())));
    }
    if common.require_all && summary.missing() > 0 {
        return Err(Error::usage(format!("{} step(s) missing (--require-all)", summary.missing())));
    }
    Ok(())
}

/// `<runs>/<timestamp>`, with `-2`, `-3`, … when runs start within the same second: a new
/// run must never share a run id (and so a train run folder) with an earlier one.
fn new_run_dir(runs: &Path) -> PathBuf {
    let id = runner::run_id();
    let mut dir = runs.join(&id);
    let mut n = 2;
    while dir.exists() {
        dir = runs.join(format!("{id}-{n}"));
        n += 1;
    }
    dir
}

fn process_executor(common: &RunCommon) -> ProcessExecutor {
    match &common.bin_dir {
        Some(d) => ProcessExecutor { bin_dir: d.clone() },
        None => ProcessExecutor::beside_current_exe(),
    }
}

fn run(args: RunArgs) -> Result<()> {
    if !args.data_dir.is_dir() {
        return Err(Error::usage(format!("--data-dir {} is not a folder", args.data_dir.display()))
            .with_hint("the folder standing in for /data: models, cfg and dataset yamls (try `kubeyolo demo`)"));
    }
    match args.runner {
        RunnerKind::Process => run_pipeline(&args.data_dir, &process_executor(&args.common), &args.common, &[]),
        RunnerKind::Docker => {
            let exec = DockerExecutor {
                image_prefix: args.image_prefix.clone(),
                tag: args.tag.clone(),
                shm_size: args.shm_size.clone(),
                extra: args.docker_args.clone(),
            };
            run_pipeline(&args.data_dir, &exec, &args.common, &[])
        }
    }
}

fn demo(args: DemoArgs) -> Result<()> {
    if args.images < 4 {
        return Err(Error::usage("--images must be at least 4"));
    }
    let spec = demo::DemoSpec {
        images_per_split: [args.images, (args.images / 4).max(1), (args.images / 4).max(1)],
        imgsz: args.imgsz,
        epochs: args.epochs,
        ..demo::DemoSpec::default()
    };
    demo::prepare(&args.dir, &spec)?;
    if args.prepare_only {
        return Ok(());
    }
    let exec = process_executor(&args.common);
    if !args.no_build {
        let p = graph::pipeline();
        let missing: Vec<&str> = p.steps.iter().filter(|s| exec.available(s).is_err()).map(|s| s.name).collect();
        demo::build_step_binaries(&exec.bin_dir, &missing);
    }
    run_pipeline(&args.dir, &exec, &args.common, &["model_name=yolov8n.yaml".to_string()])
}

fn main() {
    let cli = Cli::parse();
    kubeyolo::error::run_main(|| match cli.cmd {
        Cmd::Compile(a) => compile(a),
        Cmd::Run(a) => run(a),
        Cmd::Demo(a) => demo(a),
    })
}
