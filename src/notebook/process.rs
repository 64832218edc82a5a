//! Supervision of one notebook backend process.
//!
//! A [`Backend`] is a handle shared by every clone of the notebook's service. The first request
//! (or an eager start) spawns one supervisor task that owns the Python child and moves the
//! [`Status`] through a `watch` channel:
//!
//! ```text
//!  Idle ──demand──▶ Starting ──"ready" line──▶ Ready ──exit──▶ Failed{reason, retry_at}
//!   ▲                  │ exit / timeout                          │ demand (after backoff)
//!   │                  └────────────▶ Failed ◀───────────────────┘
//!   └──── idle timeout (no request, no WebSocket) ◀── Ready
//! ```
//!
//! A start takes a warm process from the [pool](super::pool) if one waits, else spawns one, and
//! hands it the notebook; the launcher says when uvicorn listens (no polling). Requests never
//! block the supervisor: they read the status, ask for a start, and wait on the channel with
//! their own deadline. When the last handle is dropped (or on
//! [`Backend::shutdown`]) the supervisor terminates the process group (SIGTERM, then SIGKILL
//! after a grace period) and removes the socket.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use http::{Request, Response};

use super::assets::StaticAssets;
use super::pool::{kill_group, Launcher};
use super::watch as file_watch;
use super::{memory, python, Mode, NotebookOptions, Shared};
use crate::metrics::{BackendState, BackendStats};
use crate::proxy::{ProxyError, Upstream, BACKEND_KEEP_ALIVE_SECS};
use crate::sync::lock;
use crate::Body;

/// The launcher, shipped inside the crate and written next to the sockets.
pub(crate) const LAUNCHER: &str = include_str!("launcher.py");
/// What the launcher writes on its standard output once uvicorn listens on the socket.
const READY: &str = "marimo-rs:ready";

/// How many stderr lines of a backend are kept for error reports.
const STDERR_TAIL: usize = 30;
/// Grace period between SIGTERM and SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How often a ready backend's `/health` is checked, and how long one check may take.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(2);
const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(3);
/// Missed checks in a row after which a backend counts as hung and is killed.
const WATCHDOG_MISSES: u32 = 3;
/// Failed starts (or crashes) in a row after which a notebook is marked failed for good,
/// instead of being restarted forever.
const MAX_FAILURES: u32 = 5;
/// A backend that ran this long before it crashed is not part of a crash streak.
const STABLE: Duration = Duration::from_secs(60);
/// What "for good" means: no restart before this (in practice, until the service restarts).
const GIVE_UP: Duration = Duration::from_secs(24 * 60 * 60);
/// How long a backend asked to reload its pages (its file changed) may take to exit.
const RELOAD_GRACE: Duration = Duration::from_secs(5);

/// Where a backend is in its life.
#[derive(Clone, Debug)]
pub(crate) enum Status {
    /// Not running; starts on demand.
    Idle,
    /// Spawned (or taken from the pool), waiting for the launcher's ready line.
    Starting,
    /// Answering requests.
    Ready,
    /// Exited or never became ready; restarts on demand once `retry_at` has passed. `reason`
    /// is the gateway's account, `stderr` the backend's last lines (either may name files and
    /// settings of the server: see `service::failed`).
    Failed {
        reason: Arc<str>,
        stderr: Arc<str>,
        retry_at: Instant,
    },
    /// Ended because it ran out of memory (see `memory`); restarts once `retry_at` has passed.
    /// Unlike `Failed`, what happened is no secret: everyone is told.
    OutOfMemory {
        /// What users are told.
        message: Arc<str>,
        retry_at: Instant,
    },
    /// Shut down for good (the service is being dropped).
    Stopped,
}

/// Counts an open WebSocket tunnel while alive (a backend with tunnels is never idle).
#[derive(Debug)]
struct TunnelGuard(Arc<Core>);

impl TunnelGuard {
    fn open(core: &Arc<Core>) -> Self {
        core.tunnels.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(core))
    }
}

impl Drop for TunnelGuard {
    fn drop(&mut self) {
        self.0.tunnels.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// What the supervisor and the request path share.
#[derive(Debug)]
struct Core {
    /// Names this backend on the admin page: unique in its service, never reused.
    id: usize,
    /// What it went through (starts, failures, uptime), for the admin page and the metrics.
    stats: BackendStats,
    /// The pid of a ready process the admin page asked to stop (see [`Backend::recycle`]).
    recycle: watch::Sender<u32>,
    /// For log lines: `/dashboard (dashboard.py)`.
    label: String,
    /// The notebook file, canonical.
    notebook: PathBuf,
    mode: Mode,
    socket: PathBuf,
    /// What every backend of the service reads (options, launcher, frontend files).
    shared: Arc<Shared>,
    upstream: Upstream,
    status: watch::Sender<Status>,
    demand: Notify,
    stop: watch::Sender<bool>,
    epoch: Instant,
    last_activity_ms: AtomicU64,
    tunnels: AtomicUsize,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// The running process's id; 0 when none runs.
    pid: AtomicU32,
    /// The running process's cgroup, if the memory cap uses them (removed once it is gone).
    cgroup: Mutex<Option<memory::Cgroup>>,
    /// How many times this backend ran out of memory (logged with each time).
    out_of_memory: AtomicU64,
    /// How many times a process became ready: what was learnt from one process (its page)
    /// is stale once this changes.
    generation: AtomicU64,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Core {
    fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_activity_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_activity_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }

    fn stderr_tail(&self) -> String {
        let lines = lock(&self.stderr);
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    fn options(&self) -> &NotebookOptions {
        &self.shared.options
    }

    /// What users are told when the backend runs out of memory, if it has a cap.
    fn out_of_memory_message(&self) -> Option<String> {
        self.shared
            .memory
            .as_ref()
            .map(memory::Enforcement::message)
    }

    /// The process is gone (reaped): its pid may be reused from now on, so it is no longer
    /// reported, and its socket is removed.
    fn gone(&self) {
        self.pid.store(0, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.socket);
        lock(&self.cgroup).take();
    }
}

/// A handle to one notebook's backend. Cheap to clone; the process stops when the last handle
/// is dropped.
#[derive(Clone, Debug)]
pub(crate) struct Backend {
    core: Arc<Core>,
    _owner: Arc<StopOnDrop>,
}

#[derive(Debug)]
struct StopOnDrop(Arc<Core>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.send_replace(true);
    }
}

/// Two handles are equal when they are handles to the same backend.
impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.core, &other.core)
    }
}

impl Backend {
    /// A backend for `notebook` (canonical), reached at `socket`; `label` names it in logs,
    /// `id` on the admin page, and `stats` records what it goes through.
    pub(super) fn new(
        (id, label, stats): (usize, String, BackendStats),
        notebook: PathBuf,
        mode: Mode,
        socket: PathBuf,
        shared: Arc<Shared>,
    ) -> Self {
        let upstream = Upstream::new(socket.clone(), shared.options.response_timeout);
        let core = Arc::new(Core {
            id,
            stats,
            recycle: watch::Sender::new(0),
            label,
            notebook,
            mode,
            socket,
            shared,
            upstream,
            status: watch::Sender::new(Status::Idle),
            demand: Notify::new(),
            stop: watch::Sender::new(false),
            epoch: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            tunnels: AtomicUsize::new(0),
            stderr: Arc::default(),
            pid: AtomicU32::new(0),
            cgroup: Mutex::new(None),
            out_of_memory: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            task: Mutex::new(None),
        });
        Self {
            _owner: Arc::new(StopOnDrop(core.clone())),
            core,
        }
    }

    /// The options this backend runs with.
    pub(crate) fn options(&self) -> &NotebookOptions {
        self.core.options()
    }

    /// marimo's frontend files of this backend's Python environment.
    pub(crate) fn assets(&self) -> &StaticAssets {
        &self.core.shared.assets
    }

    /// How logs name this backend: `/dashboard (dashboard.py)`.
    pub(crate) fn label(&self) -> &str {
        &self.core.label
    }

    /// The notebook file (canonical).
    pub(crate) fn notebook(&self) -> &Path {
        &self.core.notebook
    }

    /// Whether it runs the app or the editor.
    pub(crate) fn mode(&self) -> Mode {
        self.core.mode
    }

    /// The backend's process id while it runs: which process accepted a marimo session, and
    /// [`MarimoService::backend_pids`](crate::MarimoService::backend_pids).
    pub(crate) fn pid(&self) -> Option<u32> {
        match self.core.pid.load(Ordering::Relaxed) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// Which process instance is (or was last) ready: changes with every start.
    pub(crate) fn generation(&self) -> u64 {
        self.core.generation.load(Ordering::Acquire)
    }

    /// Marks activity and asks for a start if the backend is not running.
    pub(crate) fn demand(&self) {
        self.core.touch();
        if matches!(*self.core.status.borrow(), Status::Ready | Status::Starting) {
            return;
        }
        let mut task = lock(&self.core.task);
        if task.is_none() {
            let core = self.core.clone();
            *task = Some(tokio::spawn(supervise(core)));
        }
        drop(task);
        self.core.demand.notify_one();
    }

    /// Waits until the backend is ready, for at most `wait`. Returns the status it ended on.
    pub(crate) async fn ready_within(&self, wait: Duration) -> Status {
        self.demand();
        // What nearly every request finds: no subscription, no clock, no timer.
        if matches!(*self.core.status.borrow(), Status::Ready) {
            return Status::Ready;
        }
        let mut status = self.core.status.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let current = status.borrow_and_update().clone();
            match &current {
                Status::Ready | Status::Stopped => return current,
                Status::Failed { retry_at, .. } | Status::OutOfMemory { retry_at, .. }
                    if tokio::time::Instant::from_std(*retry_at) > deadline =>
                {
                    return current
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => {}
                _ => return status.borrow().clone(),
            }
        }
    }

    /// Forwards `req` (stripped of the mount prefix) to the backend over its connection pool.
    pub(crate) async fn forward(&self, req: Request<Body>) -> Result<Response<Body>, ProxyError> {
        let started = Instant::now();
        let response = self.core.upstream.forward(req).await;
        self.core.stats.upstream(started.elapsed());
        response
    }

    /// Its number on the admin page.
    pub(crate) fn id(&self) -> usize {
        self.core.id
    }

    /// What it went through.
    pub(crate) fn stats(&self) -> &BackendStats {
        &self.core.stats
    }

    /// Where it is in its life now.
    pub(crate) fn state(&self) -> BackendState {
        match *self.core.status.borrow() {
            Status::Idle => BackendState::Idle,
            Status::Starting => BackendState::Starting,
            Status::Ready => BackendState::Ready,
            Status::Failed { .. } => BackendState::Failed,
            Status::OutOfMemory { .. } => BackendState::OutOfMemory,
            Status::Stopped => BackendState::Stopped,
        }
    }

    /// Stops the ready process (the admin page's "stop"), as an idle timeout would: the
    /// backend starts again on the next request. Returns once the process is gone; `false`
    /// when no process was ready.
    pub(crate) async fn recycle(&self) -> bool {
        let mut status = self.core.status.subscribe();
        let Some(pid) = self
            .pid()
            .filter(|_| matches!(*status.borrow(), Status::Ready))
        else {
            return false;
        };
        self.core.recycle.send_replace(pid);
        let _ = status
            .wait_for(|status| !matches!(status, Status::Ready) || self.pid() != Some(pid))
            .await;
        true
    }

    /// Tunnels a WebSocket handshake to the backend. The tunnel counts as activity (the
    /// backend is never idle while one is open) and holds `guard` for as long as it is open.
    pub(crate) async fn tunnel<G: Send + 'static>(
        &self,
        req: Request<Body>,
        guard: G,
    ) -> Result<Response<Body>, ProxyError> {
        let open = TunnelGuard::open(&self.core);
        self.core.upstream.tunnel(req, (open, guard)).await
    }

    /// What users are told when this backend runs out of memory, if it has a cap.
    pub(crate) fn out_of_memory_message(&self) -> Option<String> {
        self.core.out_of_memory_message()
    }

    /// How many WebSocket tunnels to this backend are open now.
    pub(crate) fn open_tunnels(&self) -> usize {
        self.core.tunnels.load(Ordering::Relaxed)
    }

    /// Time since the last request or WebSocket close (for least-recently-used eviction).
    pub(crate) fn idle_for(&self) -> Duration {
        self.core.idle_for()
    }

    /// Stops the process and waits until it is gone. The backend stays stopped.
    ///
    /// Concurrent calls all wait: the first one joins the supervisor, the others wait for it
    /// to report that no process is running.
    pub(crate) async fn shutdown(&self) {
        self.core.stop.send_replace(true);
        let task = lock(&self.core.task).take();
        if let Some(task) = task {
            let _ = task.await;
        } else {
            let mut status = self.core.status.subscribe();
            let _ = status
                .wait_for(|status| !matches!(status, Status::Starting | Status::Ready))
                .await;
        }
    }
}

/// How long to wait before the next try after `failures` failures in a row: 0.5 s, doubling,
/// at most 60 s.
pub(super) fn backoff(failures: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << failures.min(7)).min(60_000))
}

/// The supervisor: one per backend, alive until the backend is stopped.
async fn supervise(core: Arc<Core>) {
    let mut stop = core.stop.subscribe();
    let mut failures: u32 = 0;
    // Out-of-memory ends in a row: they delay the restart, but never stop it for good (a user
    // ran a cell too big for the cap; the notebook is fine).
    let mut out_of_memory: u32 = 0;
    let watching = core.options().run.watch && core.mode == Mode::Run;
    let mut file = file_watch::stamp(&core.notebook);
    loop {
        // Wait for a request to want the backend (a permit may already be stored).
        tokio::select! {
            () = core.demand.notified() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let retry_at = match &*core.status.borrow() {
            Status::Failed { retry_at, .. } | Status::OutOfMemory { retry_at, .. } => {
                Some(tokio::time::Instant::from_std(*retry_at))
            }
            _ => None,
        };
        if let Some(retry_at) = retry_at {
            tokio::select! {
                () = tokio::time::sleep_until(retry_at) => {}
                _ = stop.wait_for(|stop| *stop) => break,
                // A fix of a notebook that failed is tried at once, even after giving up.
                () = watch_file(watching, &core.notebook, file) => failures = 0,
            }
        }
        file = file_watch::stamp(&core.notebook);
        core.stats.started(retry_at.is_some());
        core.status.send_replace(Status::Starting);
        let started = start(&core, &mut stop).await;
        // The pool gave its process, or had none: it fills again now that this start no
        // longer needs the CPU.
        if started.is_ok() {
            core.shared.pool.works();
        }
        core.shared.pool.refill(Duration::ZERO);
        let mut child = match started {
            Ok(child) => child,
            Err(StartError::Stopped) => break,
            Err(StartError::Failed(reason)) => {
                failures += 1;
                fail(&core, failures, reason, false);
                continue;
            }
        };
        let ready_at = Instant::now();
        core.touch();
        core.stats.ready();
        core.generation.fetch_add(1, Ordering::AcqRel);
        core.status.send_replace(Status::Ready);
        tracing::info!(backend = %core.label, pid = ?child.id(), "notebook backend ready");

        let pid = child.id();
        let outcome = tokio::select! {
            status = child.wait() => Outcome::Exited(status),
            _ = stop.wait_for(|stop| *stop) => Outcome::Stop,
            () = idle(&core) => Outcome::Idle,
            () = hung(&core) => Outcome::Hung,
            () = watch_file(watching, &core.notebook, file) => Outcome::Changed,
            () = recycled(&core, pid) => Outcome::Recycled,
        };
        if ready_at.elapsed() >= STABLE {
            // It ran fine for a while: a crash now starts a new streak.
            failures = 0;
            out_of_memory = 0;
        }
        match outcome {
            Outcome::Stop => {
                terminate(&core, &mut child).await;
                core.stats.stopped();
                break;
            }
            Outcome::Idle | Outcome::Recycled => {
                let why = if matches!(outcome, Outcome::Idle) {
                    "stopping idle notebook backend"
                } else {
                    "stopping notebook backend, as asked on the admin page"
                };
                tracing::info!(backend = %core.label, "{why}");
                terminate(&core, &mut child).await;
                core.stats.stopped();
                core.status.send_replace(Status::Idle);
            }
            Outcome::Hung => {
                // A stopped or deadlocked process won't act on SIGTERM: kill it outright.
                kill_group(&child, nix::sys::signal::Signal::SIGKILL);
                terminate(&core, &mut child).await;
                failures += 1;
                let reason = format!(
                    "the backend stopped answering /health ({WATCHDOG_MISSES} checks in a row) and was killed"
                );
                fail(&core, failures, reason, true);
            }
            Outcome::Exited(status) if ran_out_of_memory(&core, &status) => {
                core.gone();
                out_of_memory += 1;
                out_of_memory_exit(&core, out_of_memory);
            }
            Outcome::Changed => {
                tracing::info!(backend = %core.label, "notebook file changed; restarting its backend");
                core.status.send_replace(Status::Starting);
                reload(&core, &mut child).await;
                // Restarted at once: the pages that were told to reload are waiting for it.
                core.demand.notify_one();
            }
            Outcome::Exited(status) => {
                core.gone();
                let code = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                failures += 1;
                fail(
                    &core,
                    failures,
                    format!("the backend exited ({code})"),
                    true,
                );
            }
        }
    }
    core.status.send_replace(Status::Stopped);
}

/// Marks the backend failed; `crashed` when it had been ready.
fn fail(core: &Core, failures: u32, mut reason: String, crashed: bool) {
    let tail = core.stderr_tail();
    let mut delay = backoff(failures);
    let given_up = failures >= MAX_FAILURES;
    core.stats.failed(&reason, crashed, given_up);
    if given_up {
        delay = GIVE_UP;
        reason = format!(
            "gave up after {failures} failures in a row; fix the notebook and restart the server. Last: {reason}"
        );
    }
    tracing::error!(
        backend = %core.label,
        %reason,
        stderr = %tail,
        retry_in = ?delay,
        failures,
        "notebook backend failed"
    );
    core.status.send_replace(Status::Failed {
        reason: reason.into(),
        stderr: tail.into(),
        retry_at: Instant::now() + delay,
    });
}

/// Whether the backend that ended with `status` ran out of memory (only with a memory cap).
fn ran_out_of_memory(core: &Core, status: &std::io::Result<std::process::ExitStatus>) -> bool {
    core.shared.memory.is_some() && memory::ran_out(status, lock(&core.cgroup).as_ref())
}

/// Counts and logs the end of a backend that ran out of memory (the `streak`-th in a row) and
/// has it restarted after a delay that grows while it keeps happening.
fn out_of_memory_exit(core: &Core, streak: u32) {
    let total = core.out_of_memory.fetch_add(1, Ordering::Relaxed) + 1;
    core.shared.out_of_memory.fetch_add(1, Ordering::Relaxed);
    let message = core.out_of_memory_message().unwrap_or_default();
    let delay = backoff(streak.saturating_sub(1));
    core.stats.out_of_memory(&message);
    tracing::warn!(
        backend = %core.label,
        %message,
        total,
        restart_in = ?delay,
        "notebook backend ran out of memory; restarting it"
    );
    core.status.send_replace(Status::OutOfMemory {
        message: message.into(),
        retry_at: Instant::now() + delay,
    });
    // Its users are waiting for it: restart without waiting for the next request.
    core.demand.notify_one();
}

/// Resolves when `notebook` changed since `since`, if `watching`; never otherwise.
async fn watch_file(watching: bool, notebook: &Path, since: Option<file_watch::Stamp>) {
    if !watching {
        return std::future::pending().await;
    }
    file_watch::changed(notebook, since).await
}

/// Asks the backend to tell its open pages to reload and to exit (SIGUSR1: see the launcher's
/// `reload_on_signal`), then makes sure it is gone.
async fn reload(core: &Core, child: &mut Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1);
        let _ = tokio::time::timeout(RELOAD_GRACE, child.wait()).await;
    }
    terminate(core, child).await;
}

/// Resolves when the backend has had no request and no WebSocket for `idle_timeout`.
async fn idle(core: &Core) {
    let Some(limit) = core.options().idle_timeout else {
        return std::future::pending().await;
    };
    loop {
        let idle_for = core.idle_for();
        if core.tunnels.load(Ordering::Relaxed) == 0 && idle_for >= limit {
            return;
        }
        let wait = limit
            .saturating_sub(idle_for)
            .max(Duration::from_millis(200));
        tokio::time::sleep(wait).await;
    }
}

enum Outcome {
    Exited(std::io::Result<std::process::ExitStatus>),
    Stop,
    Idle,
    Hung,
    /// The notebook file changed (`watch`).
    Changed,
    /// Stopped from the admin page ([`Backend::recycle`]).
    Recycled,
}

/// Resolves when the admin page asks to stop the process `pid` (never for a process without
/// an id). Asking for a pid, rather than signalling, means a request made while this process
/// was starting, or meant for its predecessor, cannot stop it.
async fn recycled(core: &Core, pid: Option<u32>) {
    let mut asked = core.recycle.subscribe();
    match pid {
        Some(pid) => {
            let _ = asked.wait_for(|asked| *asked == pid).await;
        }
        None => std::future::pending().await,
    }
}

/// Resolves when a ready backend has missed [`WATCHDOG_MISSES`] health checks in a row (a
/// stopped or deadlocked process: it still holds its socket, so nothing else would notice).
/// A check that times out while other requests are still being answered is not a miss: the
/// backend is busy, not hung, and killing it would end every session.
async fn hung(core: &Core) {
    let mut misses = 0;
    loop {
        tokio::time::sleep(WATCHDOG_INTERVAL).await;
        let answered = core.upstream.answered();
        if core.upstream.is_healthy(WATCHDOG_TIMEOUT).await || core.upstream.answered() > answered {
            misses = 0;
            continue;
        }
        misses += 1;
        tracing::warn!(backend = %core.label, misses, "backend missed a health check");
        if misses >= WATCHDOG_MISSES {
            return;
        }
    }
}

enum StartError {
    Stopped,
    Failed(String),
}

/// Starts the notebook's process: a warm one from the pool if one waits, else a fresh one;
/// hands it the notebook's configuration and waits until it says it listens.
async fn start(core: &Core, stop: &mut watch::Receiver<bool>) -> Result<Child, StartError> {
    let options = core.options();
    let env = python::resolve(options.python.as_deref())
        .await
        .map_err(|e| StartError::Failed(e.to_string()))?;
    let _ = std::fs::remove_file(&core.socket);
    lock(&core.stderr).clear();

    let memory = core.shared.memory.as_ref().map(|enforcement| {
        let name = core
            .socket
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy();
        let group = enforcement.group(&format!("marimo-rs-{}-{name}", std::process::id()));
        let config = enforcement.config(group.as_ref());
        *lock(&core.cgroup) = group;
        config
    });
    let pool = &core.shared.pool;
    let mut launcher = match pool.take().await {
        Some(launcher) => launcher,
        None => pool.spawn(&env.python).map_err(|e| {
            StartError::Failed(format!("cannot start {}: {e}", env.python.display()))
        })?,
    };
    let pid = launcher.pid();
    core.pid.store(pid, Ordering::Relaxed);
    tracing::debug!(backend = %core.label, pid, "notebook backend spawned");
    let started = Instant::now();
    let config = serde_json::json!({
        "notebook": core.notebook,
        "mode": core.mode,
        "socket": core.socket,
        "keep_alive_secs": BACKEND_KEEP_ALIVE_SECS,
        "marimo": options.marimo,
        "argv": options.run.argv,
        "watch": options.run.watch,
        "memory": memory,
    });
    // A process that died before it read its configuration fails below, as an exit.
    let configured = launcher.configure(&config).await;
    let Launcher {
        mut child,
        stdout,
        stderr,
        ..
    } = launcher;
    collect_stderr(core, stderr);

    let deadline = tokio::time::Instant::now() + options.startup_timeout;
    let outcome = if configured.is_err() {
        Started::Exited
    } else {
        let mut lines = BufReader::new(stdout).lines();
        let ready = async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line == READY => return Started::Ready,
                    Ok(Some(_)) => {}
                    // The process closed its standard output: it is exiting.
                    _ => return Started::Exited,
                }
            }
        };
        tokio::select! {
            started = ready => started,
            _ = child.wait() => Started::Exited,
            _ = stop.wait_for(|stop| *stop) => Started::Stopped,
            () = tokio::time::sleep_until(deadline) => Started::TimedOut,
        }
    };
    match outcome {
        Started::Ready => {
            tracing::debug!(backend = %core.label, elapsed = ?started.elapsed(), "backend listening");
            Ok(child)
        }
        Started::Exited => {
            let status = tokio::time::timeout(TERM_GRACE, child.wait()).await;
            // Asked before `gone` removes the cgroup that tells.
            let memory = match &status {
                Ok(status) => ran_out_of_memory(core, status)
                    .then(|| core.out_of_memory_message())
                    .flatten(),
                Err(_) => None,
            };
            core.gone();
            // Give the stderr reader a moment to take the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let status = match status {
                Ok(Ok(status)) => status.to_string(),
                _ => "no exit status".to_owned(),
            };
            Err(StartError::Failed(match memory {
                Some(message) => format!(
                    "the backend ran out of memory during start-up: raise the memory limit. {message}"
                ),
                None => format!("the backend exited during start-up ({status})"),
            }))
        }
        Started::Stopped => {
            terminate(core, &mut child).await;
            Err(StartError::Stopped)
        }
        Started::TimedOut => {
            terminate(core, &mut child).await;
            Err(StartError::Failed(format!(
                "the backend did not start listening within {:?}",
                options.startup_timeout
            )))
        }
    }
}

/// How a start ended.
enum Started {
    Ready,
    Exited,
    Stopped,
    TimedOut,
}

/// Keeps the last [`STDERR_TAIL`] lines for error reports and logs each at debug level.
fn collect_stderr(core: &Core, stderr: tokio::process::ChildStderr) {
    let label = core.label.clone();
    let shared = core.stderr.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::debug!(target: "marimo_rs::backend", backend = %label, "{line}");
            let mut tail = lock(&shared);
            if tail.len() == STDERR_TAIL {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    });
}

/// SIGTERM to the process group, SIGKILL after [`TERM_GRACE`], then reap and remove the socket.
async fn terminate(core: &Core, child: &mut Child) {
    use nix::sys::signal::{killpg, Signal};
    use nix::unistd::Pid;

    if let Some(pid) = child.id() {
        let group = Pid::from_raw(pid as i32);
        let _ = killpg(group, Signal::SIGTERM);
        if tokio::time::timeout(TERM_GRACE, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(backend = %core.label, pid, "backend ignored SIGTERM; killing it");
            let _ = killpg(group, Signal::SIGKILL);
            let _ = child.wait().await;
        }
        // Anything the backend started in its group (kernels in edit mode) goes too.
        let _ = killpg(group, Signal::SIGKILL);
    }
    core.gone();
}
