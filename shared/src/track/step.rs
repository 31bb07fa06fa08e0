//! A step's whole body as one MLflow run: the glue every step binary shares.
//!
//! Why a helper: the run must end FINISHED or FAILED *before* the binary exits, and
//! [`crate::error::run_main`] (like any `std::process::exit`) skips destructors, so a tracker
//! left to its `Drop` never reports. [`run_tracked`] starts the run, runs the body and ends the
//! run with the body's outcome, in that order, in one place:
//!
//! ```no_run
//! # use kubeyolo::track::{step::run_tracked, TrackingArgs};
//! # let args = TrackingArgs::default();
//! let root = std::path::Path::new("/data");
//! let result: kubeyolo::Result<()> = run_tracked(&args, "plot", root, |tracker| {
//!     tracker.log_param("dpi", 100);
//!     Ok(())
//! });
//! ```
//!
//! Without a tracking URI the tracker is a no-op and the body runs exactly as it would alone.

use std::fmt::Display;
use std::path::Path;

use super::records::Op;
use super::{Tracker, TrackingArgs};

/// Run `body` inside the MLflow run of `step`: FINISHED when it returns `Ok`, FAILED (with the
/// error as the `kubeyolo.error` tag) when it returns `Err`. Returns the body's result unchanged.
pub fn run_tracked<T, E: Display>(
    args: &TrackingArgs,
    step: &str,
    data_root: &Path,
    body: impl FnOnce(&Tracker) -> Result<T, E>,
) -> Result<T, E> {
    let tracker = Tracker::start(args, step, data_root);
    let result = body(&tracker);
    tracker.finish_with(&result);
    result
}

impl Tracker {
    /// Store `text` as the artifact `dest` (`"distribution/result.json"`), like
    /// `mlflow.log_text`: for values that exist only in memory or in files whose names say
    /// nothing (KFP output files are all called `data`). The text goes to a private temporary
    /// file that the logger deletes once it is uploaded.
    pub fn log_text(&self, text: &str, dest: &str) {
        if !self.is_enabled() {
            return;
        }
        let written = tempfile::Builder::new().prefix("kubeyolo-mlflow-").tempfile().and_then(|mut f| {
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.into_temp_path().keep().map_err(|e| e.error)
        });
        match written {
            Ok(file) => self.send(Op::Artifact {
                run: self.run.clone(),
                file,
                dest: dest.trim_matches('/').to_string(),
                owned: true,
            }),
            Err(e) => {
                self.warn_once(format!("text:{dest}"), || format!("cannot stage artifact '{dest}': {e}; skipped"))
            }
        }
    }
}
