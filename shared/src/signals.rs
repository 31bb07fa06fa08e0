//! Stop requests from SIGTERM / SIGINT for steps that can stop cleanly (the trainer).
//!
//! Kubernetes evicts a pod with SIGTERM and kills it 30 s later. A step that calls
//! [`handle_stop_requests`] gets a flag that the first signal sets; it then checkpoints at its
//! next safe point and exits non-zero, so Kubeflow retries it and the retry resumes. Without
//! this, the tracking signal watcher ([`crate::track`]) ends the process at once. As a safety
//! net the process still exits `128 + signal` [`SAFETY_EXIT`] after the signal if the step has
//! not finished by then (before the 30 s SIGKILL, so MLflow runs can still be closed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::time::Duration;

/// How long a step that handles stop requests gets before the process exits anyway.
pub const SAFETY_EXIT: Duration = Duration::from_secs(25);

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static INSTALL: Once = Once::new();

/// The stop flag, with the signal watcher installed (once per process).
pub fn handle_stop_requests() -> Arc<AtomicBool> {
    let flag = FLAG.get_or_init(|| Arc::new(AtomicBool::new(false))).clone();
    INSTALL.call_once(install);
    flag
}

/// Whether some step handles stop requests itself (the tracking watcher then leaves the
/// process alone).
pub fn handled_by_step() -> bool {
    FLAG.get().is_some()
}

fn install() {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new().name("kubeyolo-stop".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            let _ = ready_tx.send(());
            let sig = tokio::select! {
                _ = term.recv() => 15,
                _ = int.recv() => 2,
            };
            if let Some(f) = FLAG.get() {
                f.store(true, Ordering::SeqCst);
            }
            eprintln!("received signal {sig}: checkpointing and stopping at the next batch");
            tokio::time::sleep(SAFETY_EXIT).await;
            eprintln!("still running {}s after the signal: exiting", SAFETY_EXIT.as_secs());
            std::process::exit(128 + sig);
        });
    });
    if spawned.is_ok() {
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    }
}
