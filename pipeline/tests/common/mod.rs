//! Helpers shared by the test files that check compiled YAML with a Python SDK.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The python of venv `venv` (`scripts/venv.sh <venv>`), or `$<env_var>`; `None` (after
/// printing "skipped: ...") when it is absent — a panic when `KUBEYOLO_REQUIRE_SERVICES=1` (CI).
pub fn venv_python(env_var: &str, venv: &str, test: &str) -> Option<PathBuf> {
    let py = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(format!(".venvs/{venv}/bin/python")));
    if py.exists() {
        return Some(py);
    }
    let msg = format!("{test}: no {venv} python at {} (run scripts/venv.sh {venv} or set {env_var})", py.display());
    if std::env::var("KUBEYOLO_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("{msg}");
    }
    println!("skipped: {msg}");
    None
}

/// stdout + stderr of a finished command.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}
