//! Process runner: each step is its binary `yolo-<step>`, run as a subprocess with
//! `--data-root <folder>` (the folder standing in for `/data`) and its own KFP executor output
//! file ([`super::task::Task::executor_output`]) instead of the host's shared `/tmp/kfp_outputs`.
//!
//! The binaries are looked up in one folder, by default the one holding the running `kubeyolo`
//! executable (`target/<profile>/` in a cargo checkout, where `cargo build --workspace` puts
//! every step binary). A binary that is not there makes the step **missing**.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Executor, RunContext};
use crate::graph::Step;

pub struct ProcessExecutor {
    pub bin_dir: PathBuf,
}

impl ProcessExecutor {
    /// Binaries next to the current executable.
    pub fn beside_current_exe() -> Self {
        let bin_dir = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("."));
        ProcessExecutor { bin_dir }
    }

    pub fn binary(&self, step: &Step) -> PathBuf {
        self.bin_dir.join(format!("{}{}", step.binary(), std::env::consts::EXE_SUFFIX))
    }
}

impl Executor for ProcessExecutor {
    fn name(&self) -> &'static str {
        "process"
    }

    fn available(&self, step: &Step) -> Result<(), String> {
        let bin = self.binary(step);
        if bin.is_file() {
            Ok(())
        } else {
            Err(format!("no binary {} (not built, or step not implemented yet)", bin.display()))
        }
    }

    fn command(&self, step: &Step, args: &[String], ctx: &RunContext, executor_output: &Path) -> Command {
        let mut cmd = Command::new(self.binary(step));
        cmd.args(args).arg("--data-root").arg(&ctx.data_dir);
        cmd.env(kubeyolo::root::ENV_DATA_ROOT, &ctx.data_dir);
        cmd.env(kubeyolo::kfp::EXECUTOR_OUTPUT_ENV, executor_output);
        cmd
    }
}
