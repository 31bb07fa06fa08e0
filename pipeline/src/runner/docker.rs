//! Docker runner: each step is `docker run --rm -v <data>:/data <prefix>/yolo-<step>:<tag> …`,
//! the local equivalent of a pod with the PVC at `/data` and a memory-backed `/dev/shm`.
//!
//! Paths in arguments are mapped from the host to the container (`<data>` → `/data`, a run
//! folder outside `<data>` → `/kfp-run`), so values passed between steps are container paths
//! (`/data/...`) exactly as on the cluster. The image must exist locally (`docker/build.sh`);
//! otherwise the step is **missing** — nothing is pulled. Containers run as the invoking user
//! (`--user $(id -u):$(id -g)`), not as the images' default user. MLflow/AWS variables of the calling
//! environment are passed through by name (`-e NAME`), so no credential lands on a command line.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{Executor, RunContext};
use crate::graph::Step;

pub struct DockerExecutor {
    pub image_prefix: String,
    pub tag: String,
    /// `--shm-size` of the containers (the pipeline's emptyDir at /dev/shm).
    pub shm_size: String,
    /// Extra `docker run` arguments (e.g. `--gpus all`).
    pub extra: Vec<String>,
}

/// Where the run folder is mounted when it is not inside the data folder.
const RUN_MOUNT: &str = "/kfp-run";
/// Environment variables passed through to the containers when set.
const PASS_ENV_PREFIXES: &[&str] = &["MLFLOW_", "AWS_", "KUBEYOLO_"];

impl DockerExecutor {
    pub fn image(&self, step: &Step) -> String {
        format!("{}/{}:{}", self.image_prefix.trim_end_matches('/'), step.binary(), self.tag)
    }

    fn map(&self, arg: &str, ctx: &RunContext) -> String {
        let p = Path::new(arg);
        if !ctx.run_dir.starts_with(&ctx.data_dir) {
            if let Ok(rest) = p.strip_prefix(&ctx.run_dir) {
                return join(RUN_MOUNT, rest);
            }
        }
        if let Ok(rest) = p.strip_prefix(&ctx.data_dir) {
            return join("/data", rest);
        }
        arg.to_string()
    }
}

fn join(base: &str, rest: &Path) -> String {
    if rest.as_os_str().is_empty() {
        base.to_string()
    } else {
        PathBuf::from(base).join(rest).to_string_lossy().into_owned()
    }
}

/// `uid:gid` of the invoking user (`id -u`:`id -g`: the owner of `/proc/self`), else of the
/// owner of `dir`: the containers (non-root images, user 65532 by default) run as the user, so
/// they can write the data folder and what they write stays the user's.
fn invoking_user(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").or_else(|_| std::fs::metadata(dir)).ok().map(|m| format!("{}:{}", m.uid(), m.gid()))
}

impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn available(&self, step: &Step) -> Result<(), String> {
        let image = self.image(step);
        let st = Command::new("docker")
            .args(["image", "inspect", "--format", "{{.Id}}", &image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match st {
            Ok(s) if s.success() => Ok(()),
            Ok(_) => Err(format!("no local image {image} (build it with docker/build.sh; nothing is pulled)")),
            Err(e) => Err(format!("cannot run docker: {e}")),
        }
    }

    fn command(&self, step: &Step, args: &[String], ctx: &RunContext, executor_output: &Path) -> Command {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "--shm-size", &self.shm_size]);
        cmd.arg("-v").arg(format!("{}:/data", ctx.data_dir.display()));
        if !ctx.run_dir.starts_with(&ctx.data_dir) {
            cmd.arg("-v").arg(format!("{}:{RUN_MOUNT}", ctx.run_dir.display()));
        }
        if let Some(u) = invoking_user(&ctx.data_dir) {
            cmd.args(["--user", &u]);
        }
        for (k, _) in std::env::vars() {
            if PASS_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
                && k != kubeyolo::root::ENV_DATA_ROOT
                && k != kubeyolo::kfp::EXECUTOR_OUTPUT_ENV
            {
                cmd.args(["-e", &k]);
            }
        }
        cmd.args(["-e", &format!("{}=/data", kubeyolo::root::ENV_DATA_ROOT)]);
        // The step's executor output lands in its run folder, as with the process runner.
        let exec_out = self.map(&executor_output.to_string_lossy(), ctx);
        cmd.args(["-e", &format!("{}={exec_out}", kubeyolo::kfp::EXECUTOR_OUTPUT_ENV)]);
        cmd.args(&self.extra);
        cmd.args(["--entrypoint", &step.binary(), &self.image(step)]);
        cmd.args(args.iter().map(|a| self.map(a, ctx)));
        cmd.args(["--data-root", "/data"]);
        cmd
    }
}
