//! The background logger: a tokio task on its own thread that the step feeds through an inbox.
//!
//! The step (synchronous code) pushes records into the [`Inbox`], a bounded queue: pushing only
//! waits when `INBOX_CAPACITY` records are pending *and* the logger has `QUEUE_LIMIT` more in
//! hand, i.e. when the server has been too slow for tens of thousands of records. Otherwise a
//! push is a mutex and a wake-up, so a slow or dead server never slows training.
//!
//! States of the loop:
//! - **live**: the [`Engine`] sends queued records; transient failures are retried with
//!   exponential backoff (0.2 s doubling to 5 s);
//! - **spooling**: after `retry_budget` of uninterrupted failure, everything pending (and every
//!   new record) is appended to a spool file; the server is probed (1 s doubling to 10 s) and,
//!   once it answers, the spool is read back and sent — so a server restart mid-run loses nothing;
//! - **closing**: at `finish` (or SIGTERM) pending records get until the deadline; whatever is
//!   still pending then is spooled, and the spool file is handed over to later replays.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::client::Client;
use super::config::TrackingConfig;
use super::engine::{replay_dir, Engine, Step};
use super::records::{new_local_id, now_ms, Op, Status};
use super::spool::{self, Meta, SpoolWriter};

/// Records the step may have pending in the inbox before a push waits.
pub const INBOX_CAPACITY: usize = 10_000;
/// Records the logger holds in memory while the server is slow (beyond: the inbox fills).
pub const QUEUE_LIMIT: usize = 20_000;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_PROBE: Duration = Duration::from_secs(1);
const MAX_PROBE: Duration = Duration::from_secs(10);

/// What the logger did, returned by `Tracker::finish`.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Records the server accepted (metrics, params, tags, artifacts, run changes).
    pub delivered: u64,
    /// Records the server refused or that could not be kept (reported on stderr).
    pub dropped: u64,
    /// Records waiting in a spool file, and that file.
    pub spooled: u64,
    pub spool_file: Option<PathBuf>,
}

/// A message from the step to the logger.
pub enum Msg {
    Op(Op),
    /// Answer `true` once everything sent so far reached the server (`false`: it is spooled).
    Flush(mpsc::Sender<bool>),
    /// End every open run with `status`, deliver until `deadline`, then stop.
    Close {
        deadline: Instant,
        status: Status,
        done: mpsc::Sender<Summary>,
    },
    /// SIGTERM/SIGINT: end open runs KILLED, deliver until `deadline`, then stop.
    Signal {
        deadline: Instant,
        done: mpsc::Sender<()>,
    },
    /// Answer the server id of local run `run` once known (`None`: not available: spooled,
    /// refused, or the logger stopped).
    RunId {
        run: String,
        reply: mpsc::Sender<Option<String>>,
    },
}

/// The bounded queue between the step and the logger.
pub struct Inbox {
    state: Mutex<InboxState>,
    space: Condvar,
    notify: tokio::sync::Notify,
}

struct InboxState {
    msgs: VecDeque<Msg>,
    /// The logger has stopped: pushes are refused.
    closed: bool,
}

impl Inbox {
    pub fn new() -> Arc<Inbox> {
        Arc::new(Inbox {
            state: Mutex::new(InboxState { msgs: VecDeque::new(), closed: false }),
            space: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue a record, waiting while the inbox is full. `false`: the logger is gone.
    pub fn push(&self, msg: Msg) -> bool {
        let mut s = self.lock();
        while !s.closed && s.msgs.len() >= INBOX_CAPACITY {
            s = self.space.wait_timeout(s, Duration::from_millis(200)).unwrap_or_else(|e| e.into_inner()).0;
        }
        if s.closed {
            return false;
        }
        s.msgs.push_back(msg);
        drop(s);
        self.notify.notify_one();
        true
    }

    /// Queue a control message without waiting for room.
    pub fn push_control(&self, msg: Msg) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        s.msgs.push_back(msg);
        drop(s);
        self.notify.notify_one();
        true
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Take up to `max_ops` records (control messages stop the take so they stay in order).
    fn take(&self, max_ops: usize) -> Vec<Msg> {
        let mut s = self.lock();
        let mut out = Vec::new();
        while let Some(front) = s.msgs.front() {
            let is_op = matches!(front, Msg::Op(_));
            if is_op && out.len() >= max_ops {
                break;
            }
            out.push(s.msgs.pop_front().expect("front exists"));
        }
        drop(s);
        self.space.notify_all();
        out
    }

    fn is_empty(&self) -> bool {
        self.lock().msgs.is_empty()
    }

    /// Refuse further pushes; return what was still queued.
    pub fn close(&self) -> Vec<Msg> {
        let mut s = self.lock();
        s.closed = true;
        let rest = s.msgs.drain(..).collect();
        drop(s);
        self.space.notify_all();
        rest
    }
}

/// The logger task. Returns when closed (finish or signal).
pub async fn run(inbox: Arc<Inbox>, cfg: TrackingConfig, step: String, spool_dir: PathBuf) {
    let client = match Client::new(&cfg) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mlflow: {e}; tracking is off for this step");
            answer_all(inbox.close(), &Summary::default());
            return;
        }
    };
    let mut l = Loop {
        engine: Engine::new(client.clone()),
        meta: Meta { spool: 1, tracking_uri: client.base().to_string(), step: step.clone(), created: now_ms() },
        stem: format!("{}-{}-{}-{}", now_ms(), file_safe(&step), std::process::id(), &new_local_id()[..6]),
        spool_dir: spool_dir.clone(),
        spool: None,
        spool_count: 0,
        spooled_file: None,
        open_runs: Vec::new(),
    };

    // Spool files left by earlier steps go out in the background, beside this step's records.
    let stop_replay = Arc::new(AtomicBool::new(false));
    let replay = (cfg.replay_on_start && !spool::list(&spool_dir, false).is_empty()).then(|| {
        let (client, dir, budget, stop) = (client.clone(), spool_dir.clone(), cfg.retry_budget, stop_replay.clone());
        tokio::spawn(async move {
            let s = replay_dir(&client, &dir, false, false, budget, &move || stop.load(Ordering::Relaxed), false).await;
            if s.files_done > 0 {
                eprintln!(
                    "mlflow: replayed {} spool file(s) from earlier steps ({} records)",
                    s.files_done, s.delivered
                );
            }
        })
    });

    let mut failing_since: Option<Instant> = None;
    let mut backoff = FIRST_BACKOFF;
    let mut next_attempt = Instant::now();
    let mut probe_every = FIRST_PROBE;
    let mut next_probe = Instant::now();
    let mut flush_waiters: Vec<mpsc::Sender<bool>> = Vec::new();
    let mut close_waiters: Vec<mpsc::Sender<Summary>> = Vec::new();
    let mut signal_waiters: Vec<mpsc::Sender<()>> = Vec::new();
    let mut id_waiters: Vec<(String, mpsc::Sender<Option<String>>)> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut last_chance_probed = false;

    loop {
        // 1. Take what the step sent.
        let room = if l.spool.is_some() { usize::MAX } else { QUEUE_LIMIT.saturating_sub(l.engine.queue.len()) };
        for msg in inbox.take(room) {
            match msg {
                Msg::Op(op) => l.accept(op),
                Msg::Flush(tx) => flush_waiters.push(tx),
                Msg::Close { deadline: d, status, done } => {
                    l.end_open_runs(status);
                    deadline = Some(deadline.map_or(d, |x| x.min(d)));
                    close_waiters.push(done);
                }
                Msg::Signal { deadline: d, done } => {
                    l.engine.report.say("terminated by a signal: marking open runs KILLED");
                    l.end_open_runs(Status::Killed);
                    deadline = Some(deadline.map_or(d, |x| x.min(d)));
                    signal_waiters.push(done);
                }
                Msg::RunId { run, reply } => id_waiters.push((run, reply)),
            }
        }
        if let Some(w) = l.spool.as_mut() {
            let _ = w.flush();
        }

        // 2. Flush requests.
        if !flush_waiters.is_empty() {
            if l.spool.is_some() {
                flush_waiters.drain(..).for_each(|tx| {
                    let _ = tx.send(false);
                });
            } else if l.engine.queue.is_empty() && inbox.is_empty() {
                flush_waiters.drain(..).for_each(|tx| {
                    let _ = tx.send(true);
                });
            }
        }

        // Run-id requests: answered once the run exists, or with None when it cannot soon.
        // `retain` keeps a waiter only while its answer is still pending; a waiter that went away
        // (send error) is dropped all the same.
        id_waiters.retain(|(run, reply)| {
            let answer = match l.engine.remote_of(run) {
                Some(id) => Some(id.to_string()),
                None if l.spool.is_some() || l.engine.is_dead(run) || deadline.is_some() => None,
                None => return true,
            };
            let _ = reply.send(answer);
            false
        });

        // 3. Closing.
        if let Some(d) = deadline {
            let all_taken = inbox.is_empty();
            if all_taken && l.spool.is_none() && l.engine.queue.is_empty() {
                break;
            }
            if all_taken && l.spool.is_some() && last_chance_probed {
                break;
            }
            if Instant::now() >= d {
                // Out of time: keep everything for a later replay.
                let rest: Vec<Op> = inbox
                    .close()
                    .into_iter()
                    .filter_map(|m| if let Msg::Op(op) = m { Some(op) } else { None })
                    .collect();
                l.start_spooling();
                rest.into_iter().for_each(|op| l.accept(op));
                break;
            }
            if l.spool.is_some() && !last_chance_probed {
                next_probe = Instant::now();
                last_chance_probed = true;
            }
        }

        let now = Instant::now();
        // 4. Spooling: is the server back?
        if l.spool.is_some() {
            if now >= next_probe {
                if l.engine.client.health().await.is_ok() {
                    l.take_back_spool();
                    l.engine
                        .report
                        .say(&format!("{} answers again: sending the spooled records", l.engine.client.base()));
                    failing_since = None;
                    backoff = FIRST_BACKOFF;
                    next_attempt = Instant::now();
                    probe_every = FIRST_PROBE;
                    last_chance_probed = false;
                } else {
                    next_probe = Instant::now() + probe_every;
                    probe_every = (probe_every * 2).min(MAX_PROBE);
                }
                continue;
            }
        } else if !l.engine.queue.is_empty() && now >= next_attempt {
            // 5. Live: send the next unit of work.
            match l.engine.step().await {
                Step::Idle | Step::Done => {
                    if failing_since.take().is_some() {
                        backoff = FIRST_BACKOFF;
                    }
                }
                Step::Transient(e) => {
                    let since = *failing_since.get_or_insert(now);
                    let budget = cfg.retry_budget;
                    l.engine.report.once("unreachable", || {
                        format!("{e}; retrying for up to {:.0} s, records are kept", budget.as_secs_f64())
                    });
                    if since.elapsed() >= budget {
                        l.start_spooling();
                        next_probe = Instant::now() + FIRST_PROBE;
                        probe_every = FIRST_PROBE;
                    } else {
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            continue;
        }

        // 6. Sleep until something arrives or a timer is due.
        let mut wake = Instant::now() + Duration::from_secs(3600);
        if l.spool.is_some() {
            wake = wake.min(next_probe);
        } else if !l.engine.queue.is_empty() {
            wake = wake.min(next_attempt);
        }
        if let Some(d) = deadline {
            wake = wake.min(d);
        }
        tokio::select! {
            _ = inbox.notify.notified() => {}
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }

    // Wrap up: stop the replay of older files (it rewrites what it did not send), hand the spool
    // file over, refuse further records, answer everyone waiting.
    if let Some(mut h) = replay {
        // Older files may use the rest of the close deadline; then they are cut and rewritten.
        let until = deadline.unwrap_or_else(Instant::now);
        if tokio::time::timeout_at(until.into(), &mut h).await.is_err() {
            stop_replay.store(true, Ordering::Relaxed);
            let _ = h.await;
        }
    }
    let mut summary = Summary { delivered: l.engine.delivered, dropped: l.engine.report.dropped, ..Default::default() };
    if let Some(w) = l.spool.take() {
        let n = w.records() as u64;
        match w.finish() {
            Ok(path) => {
                l.engine.report.say(&format!(
                    "{} could not be reached: {n} record(s) wait in {}; the next step with tracking or `yolo-track replay` sends them",
                    l.engine.client.base(),
                    path.display()
                ));
                summary.spooled = n;
                summary.spool_file = Some(path);
            }
            Err(e) => {
                l.engine.report.say(&format!("cannot finish the spool file: {e}; {n} record(s) lost"));
                summary.dropped += n;
            }
        }
    }
    if summary.dropped > 0 {
        l.engine
            .report
            .say(&format!("{} record(s) were not stored (the first reason is printed above)", summary.dropped));
    }
    let rest = inbox.close();
    answer_all(rest, &summary);
    for tx in flush_waiters {
        let _ = tx.send(false);
    }
    for tx in close_waiters {
        let _ = tx.send(summary.clone());
    }
    for tx in signal_waiters {
        let _ = tx.send(());
    }
    for (run, tx) in id_waiters {
        let _ = tx.send(l.engine.remote_of(&run).map(str::to_string));
    }
}

/// Answer control messages that arrived after the logger stopped.
fn answer_all(msgs: Vec<Msg>, summary: &Summary) {
    for m in msgs {
        match m {
            Msg::Flush(tx) => {
                let _ = tx.send(false);
            }
            Msg::Close { done, .. } => {
                let _ = done.send(summary.clone());
            }
            Msg::Signal { done, .. } => {
                let _ = done.send(());
            }
            Msg::RunId { reply, .. } => {
                let _ = reply.send(None);
            }
            Msg::Op(_) => {}
        }
    }
}

fn file_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The logger's state besides the timers.
struct Loop {
    engine: Engine,
    meta: Meta,
    stem: String,
    spool_dir: PathBuf,
    spool: Option<SpoolWriter>,
    spool_count: usize,
    spooled_file: Option<PathBuf>,
    /// Local runs started and not yet ended (ended KILLED on a signal).
    open_runs: Vec<String>,
}

impl Loop {
    /// A record from the step: to the send queue, or to the spool while spooling.
    fn accept(&mut self, op: Op) {
        match &op {
            Op::Start { run, .. } => self.open_runs.push(run.clone()),
            Op::End { run, .. } => self.open_runs.retain(|r| r != run),
            _ => {}
        }
        if let Some(w) = self.spool.as_mut() {
            if let Err(e) = w.append(op) {
                self.engine
                    .report
                    .drop_records(1, "spool-write", || format!("cannot write the spool file: {e}; records are lost"));
            }
        } else {
            self.engine.queue.push_back(op);
        }
    }

    fn end_open_runs(&mut self, status: Status) {
        let end_time = now_ms();
        for run in std::mem::take(&mut self.open_runs).into_iter().rev() {
            self.accept(Op::End { run, status, end_time });
        }
    }

    /// Move everything pending to a (new) spool file.
    fn start_spooling(&mut self) {
        if self.spool.is_some() {
            return;
        }
        let stem =
            if self.spool_count == 0 { self.stem.clone() } else { format!("{}-{}", self.stem, self.spool_count) };
        self.spool_count += 1;
        match SpoolWriter::create(&self.spool_dir, &stem, &self.meta) {
            Ok(mut w) => {
                let mut ok = true;
                for op in self.engine.attach_ops().into_iter().chain(self.engine.queue.drain(..)) {
                    if let Err(e) = w.append(op) {
                        ok = false;
                        self.engine.report.drop_records(1, "spool-write", || {
                            format!("cannot write the spool file: {e}; records are lost")
                        });
                    }
                }
                let _ = w.flush();
                if ok && self.spooled_file.is_none() {
                    self.engine.report.say(&format!(
                        "{} stays unreachable: records go to {} until it answers",
                        self.engine.client.base(),
                        w.path().display()
                    ));
                }
                self.spooled_file = Some(w.path().to_path_buf());
                self.spool = Some(w);
            }
            Err(e) => {
                let n = self.engine.queue.len() as u64;
                self.engine.queue.clear();
                self.engine.report.drop_records(n, "spool-create", || {
                    format!(
                        "server unreachable and the spool folder {} is not writable ({e}): records are lost",
                        self.spool_dir.display()
                    )
                });
            }
        }
    }

    /// The server answers again: bring the spooled records back in front of the queue.
    fn take_back_spool(&mut self) {
        if let Some(w) = self.spool.take() {
            let path = w.path().to_path_buf();
            match w.take_back() {
                Ok(ops) => {
                    let mut q: VecDeque<Op> = ops.into();
                    q.extend(self.engine.queue.drain(..));
                    self.engine.queue = q;
                }
                Err(e) => {
                    self.engine
                        .report
                        .say(&format!("cannot read back {}: {e}; it stays for `yolo-track replay`", path.display()));
                }
            }
        }
    }
}
