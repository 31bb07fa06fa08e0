//! Run lifecycle on termination: Kubernetes stops a pod with SIGTERM (then SIGKILL after the
//! grace period, 30 s by default), so a run must be marked KILLED *during* that grace period.
//!
//! The first tracker that starts installs one process-wide watcher thread for SIGTERM and
//! SIGINT. On a signal it tells every live logger to end its open runs as KILLED and deliver
//! (or spool) what is pending within [`KILL_FLUSH`], then exits the process with the usual
//! `128 + signal` code. The watcher stays for the life of the process (a tokio signal handler
//! cannot be uninstalled), which is also what keeps SIGTERM terminating the process after the
//! tracker has finished. Processes without tracking never install it.

use std::sync::{mpsc, Arc, Mutex, Once, Weak};
use std::time::{Duration, Instant};

use super::logger::{Inbox, Msg};

/// Time the loggers get to deliver after a signal (well inside Kubernetes' 30 s grace period).
pub const KILL_FLUSH: Duration = Duration::from_secs(10);

static LIVE: Mutex<Vec<Weak<Inbox>>> = Mutex::new(Vec::new());
static INSTALL: Once = Once::new();

/// Register a logger's inbox with the signal watcher (installing it on first use).
pub fn register(inbox: &Arc<Inbox>) {
    let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    live.retain(|w| w.upgrade().is_some_and(|i| !i.is_closed()));
    live.push(Arc::downgrade(inbox));
    drop(live);
    INSTALL.call_once(install);
}

fn install() {
    let (ready_tx, ready_rx) = mpsc::channel::<bool>();
    let spawned = std::thread::Builder::new().name("kubeyolo-signals".into()).spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            let _ = ready_tx.send(false);
            return;
        };
        rt.block_on(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(true);
            let sig = tokio::select! {
                _ = term.recv() => 15,
                _ = int.recv() => 2,
            };
            if crate::signals::handled_by_step() {
                // the step checkpoints and ends its runs itself (crate::signals has the safety net)
                return;
            }
            stop_all_loggers();
            std::process::exit(128 + sig);
        });
    });
    if spawned.is_ok() {
        // Wait until the handlers are in place, so a signal right after `Tracker::start` is seen.
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    }
}

/// Ask every live logger to end its runs KILLED and wait (bounded) until they are done.
fn stop_all_loggers() {
    let deadline = Instant::now() + KILL_FLUSH;
    let inboxes: Vec<Arc<Inbox>> =
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade).collect();
    let (tx, rx) = mpsc::channel();
    let mut waiting = 0;
    for inbox in inboxes {
        if inbox.push_control(Msg::Signal { deadline, done: tx.clone() }) {
            waiting += 1;
        }
    }
    drop(tx);
    let hard_stop = deadline + Duration::from_secs(2);
    while waiting > 0 {
        let left = hard_stop.saturating_duration_since(Instant::now());
        if left.is_zero() || rx.recv_timeout(left).is_err() {
            break;
        }
        waiting -= 1;
    }
}
