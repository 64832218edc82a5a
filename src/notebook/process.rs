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
use super::pool::Launcher;
use super::{python, Mode, NotebookOptions, Shared};
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

    /// The process is gone (reaped): its pid may be reused from now on, so it is no longer
    /// reported, and its socket is removed.
    fn gone(&self) {
        self.pid.store(0, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.socket);
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
    /// A backend for `notebook` (canonical), reached at `socket`; `label` names it in logs.
    pub(super) fn new(
        label: String,
        notebook: PathBuf,
        mode: Mode,
        socket: PathBuf,
        shared: Arc<Shared>,
    ) -> Self {
        let upstream = Upstream::new(socket.clone(), shared.options.response_timeout);
        let core = Arc::new(Core {
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
                Status::Failed { retry_at, .. }
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
        self.core.upstream.forward(req).await
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
    loop {
        // Wait for a request to want the backend (a permit may already be stored).
        tokio::select! {
            () = core.demand.notified() => {}
            _ = stop.wait_for(|stop| *stop) => break,
        }
        let retry_at = match &*core.status.borrow() {
            Status::Failed { retry_at, .. } => Some(tokio::time::Instant::from_std(*retry_at)),
            _ => None,
        };
        if let Some(retry_at) = retry_at {
            tokio::select! {
                () = tokio::time::sleep_until(retry_at) => {}
                _ = stop.wait_for(|stop| *stop) => break,
            }
        }
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
                fail(&core, failures, reason);
                continue;
            }
        };
        let ready_at = Instant::now();
        core.touch();
        core.generation.fetch_add(1, Ordering::AcqRel);
        core.status.send_replace(Status::Ready);
        tracing::info!(backend = %core.label, pid = ?child.id(), "notebook backend ready");

        let outcome = tokio::select! {
            status = child.wait() => Outcome::Exited(status),
            _ = stop.wait_for(|stop| *stop) => Outcome::Stop,
            () = idle(&core) => Outcome::Idle,
            () = hung(&core) => Outcome::Hung,
        };
        if ready_at.elapsed() >= STABLE {
            // It ran fine for a while: a crash now starts a new streak.
            failures = 0;
        }
        match outcome {
            Outcome::Stop => {
                terminate(&core, &mut child).await;
                break;
            }
            Outcome::Idle => {
                tracing::info!(backend = %core.label, "stopping idle notebook backend");
                terminate(&core, &mut child).await;
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
                fail(&core, failures, reason);
            }
            Outcome::Exited(status) => {
                core.gone();
                let code = status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string());
                failures += 1;
                fail(&core, failures, format!("the backend exited ({code})"));
            }
        }
    }
    core.status.send_replace(Status::Stopped);
}

fn fail(core: &Core, failures: u32, mut reason: String) {
    let tail = core.stderr_tail();
    let mut delay = backoff(failures);
    if failures >= MAX_FAILURES {
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
            core.gone();
            // Give the stderr reader a moment to take the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let status = match status {
                Ok(Ok(status)) => status.to_string(),
                _ => "no exit status".to_owned(),
            };
            Err(StartError::Failed(format!(
                "the backend exited during start-up ({status})"
            )))
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

/// Sends `signal` to the child's process group.
fn kill_group(child: &Child, signal: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
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
