//! Helpers for kubeyolo's end-to-end tests (`tests/tests/*.rs`, one file per area).
//!
//! The tests drive the real step binaries (`yolo-verify`, `yolo-distribution`, …) as a user or a
//! Kubeflow pod would. `cargo test --workspace` builds every workspace binary before it runs any
//! test, so they sit next to this crate's test executables in `target/<profile>/`.

pub mod mlflow;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of a workspace binary built by the same `cargo test` invocation.
///
/// Fails with instructions when it is missing (e.g. `cargo test -p kubeyolo-e2e` alone does not
/// build the other packages' binaries).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-exe> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile> folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "binary {} not built; run `cargo build --workspace` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// Run a workspace binary with `args`, with the data root set to `data_root`.
pub fn run(name: &str, data_root: &Path, args: &[&str]) -> Output {
    Command::new(bin(name))
        .args(args)
        .env("KUBEYOLO_DATA_ROOT", data_root)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// stdout + stderr of a finished command, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
