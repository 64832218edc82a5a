//! Warm starts: launcher processes started ahead of need, with marimo and uvicorn already
//! imported, waiting for the notebook they will serve.
//!
//! Every backend process starts the same way: the launcher is spawned knowing only the
//! gateway's pid ([`Launcher::spawn`]), imports what any notebook needs (most of a start's
//! time: ~1–2 s), then waits for its notebook's configuration on standard input
//! ([`Launcher::configure`]). A fresh start writes the configuration at once; the [`Pool`]
//! keeps up to `size` such processes waiting, so that a notebook's start takes only the part
//! that depends on the notebook (tens of milliseconds).
//!
//! A pool process that dies while it waits is replaced (after a backoff if that keeps
//! happening); one that is taken is replaced once the backend it became has started, so that
//! the refill does not compete with that start for the CPU. Pool processes are stopped with
//! the service ([`Pool::shutdown`], or when the last handle is dropped), and like every backend
//! they ask the kernel to end them if the gateway dies (`PR_SET_PDEATHSIG`), and end at the
//! end of their standard input.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::python;
use crate::sync::lock;

/// Waiting processes that die in a row before the pool stops replacing them (a broken Python
/// would otherwise be started again every minute for ever).
const MAX_DEATHS: u32 = 5;

/// A launcher process waiting for its configuration (or, once configured, starting).
#[derive(Debug)]
pub(super) struct Launcher {
    pub(super) child: Child,
    stdin: Option<ChildStdin>,
    pub(super) stdout: ChildStdout,
    pub(super) stderr: ChildStderr,
}

impl Launcher {
    /// Starts `launcher` with `python`, in `dir`, in a process group of its own, with the
    /// gateway's environment minus every `MARIMO_RS_*` variable.
    pub(super) fn spawn(python: &Path, launcher: &Path, dir: &Path) -> std::io::Result<Self> {
        let boot = serde_json::json!({ "parent_pid": std::process::id() });
        let mut command = Command::new(python);
        command
            .arg(launcher)
            .arg(boot.to_string())
            // Only until the configuration comes: the launcher then moves to the notebook's
            // folder, as a process started there would be.
            .current_dir(dir)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a Ctrl-C in the terminal reaches the gateway only, which
            // then stops the backends in order.
            .process_group(0)
            .kill_on_drop(true);
        // Notebook code reads its environment (`os.environ`), and in edit mode runs anything:
        // the gateway's own settings stay with the gateway. Every `MARIMO_RS_*` variable goes,
        // not a list: MARIMO_RS_SECRET and MARIMO_RS_OLD_SECRETS are secrets, a backend needs
        // none of them (its configuration comes on standard input), and a variable added later
        // is covered unseen.
        for (name, _) in std::env::vars_os() {
            if name.as_encoded_bytes().starts_with(b"MARIMO_RS_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn()?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("the launcher's pipes are missing"));
        };
        Ok(Self {
            child,
            stdin: Some(stdin),
            stdout,
            stderr,
        })
    }

    /// The process id (0 once reaped).
    pub(super) fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Hands the process its notebook: one JSON line on standard input, which is then closed.
    pub(super) async fn configure(&mut self, config: &serde_json::Value) -> std::io::Result<()> {
        let mut line = config.to_string();
        line.push('\n');
        let mut stdin = self
            .stdin
            .take()
            .ok_or_else(|| std::io::Error::other("the launcher was configured already"))?;
        stdin.write_all(line.as_bytes()).await?;
        stdin.shutdown().await
    }

    /// Kills the process group and reaps the process.
    async fn kill(mut self) {
        kill_group(&self.child, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait().await;
    }
}

/// Sends `signal` to the process group of `child` (still running: a reaped child has no pid).
pub(super) fn kill_group(child: &Child, signal: nix::sys::signal::Signal) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

/// Up to `size` launchers waiting for a notebook (see the module documentation).
#[derive(Debug)]
pub(super) struct Pool {
    size: usize,
    python: Option<PathBuf>,
    launcher: PathBuf,
    /// The working directory of waiting processes: the private directory.
    dir: PathBuf,
    state: Mutex<State>,
    /// Lets the tasks that watch waiting processes reach the pool without keeping it alive.
    this: Weak<Pool>,
}

#[derive(Debug, Default)]
struct State {
    /// Waiting processes, oldest first: each is owned by a watcher task, which hands it over
    /// through the channel.
    idle: VecDeque<Waiting>,
    /// Spawns decided but not yet in `idle`.
    spawning: usize,
    /// Waiting processes that died in a row (reset when one is taken, or a backend started):
    /// how long to wait before the next replacement, and whether to give up.
    deaths: u32,
    stopped: bool,
    watchers: Vec<JoinHandle<()>>,
}

/// The handle of one waiting process: send it a reply channel to take the process.
#[derive(Debug)]
struct Waiting {
    pid: u32,
    take: oneshot::Sender<oneshot::Sender<Launcher>>,
}

impl Pool {
    pub(super) fn new(
        size: usize,
        python: Option<PathBuf>,
        launcher: PathBuf,
        dir: PathBuf,
    ) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            size,
            python,
            launcher,
            dir,
            state: Mutex::default(),
            this: this.clone(),
        })
    }

    /// A fresh process, for a start that found the pool empty.
    pub(super) fn spawn(&self, python: &Path) -> std::io::Result<Launcher> {
        Launcher::spawn(python, &self.launcher, &self.dir)
    }

    /// A waiting process, if one is ready to be taken (it may still be importing).
    pub(super) async fn take(&self) -> Option<Launcher> {
        loop {
            let waiting = lock(&self.state).idle.pop_front()?;
            let (reply, taken) = oneshot::channel();
            if waiting.take.send(reply).is_err() {
                continue; // It died a moment ago.
            }
            let Ok(mut launcher) = taken.await else {
                continue;
            };
            if matches!(launcher.child.try_wait(), Ok(Some(_))) {
                continue;
            }
            lock(&self.state).deaths = 0;
            tracing::debug!(
                pid = launcher.pid(),
                "a notebook backend starts from the warm pool"
            );
            return Some(launcher);
        }
    }

    /// Starts processes in the background until `size` wait (or are being started), after
    /// `delay`. Needs a Tokio runtime; without one it does nothing.
    pub(super) fn refill(&self, delay: Duration) {
        if self.size == 0 || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let wanted = {
            let mut state = lock(&self.state);
            if state.stopped || state.deaths >= MAX_DEATHS {
                return;
            }
            let wanted = self.size.saturating_sub(state.idle.len() + state.spawning);
            state.spawning += wanted;
            wanted
        };
        if wanted == 0 {
            return;
        }
        let pool = self.this.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(python) = Self::python(&pool).await else {
                return;
            };
            for _ in 0..wanted {
                let Some(pool) = pool.upgrade() else { return };
                pool.add(&python);
            }
        });
    }

    /// The interpreter, or `None` (the spawns are given up) when there is none or the pool is
    /// gone.
    async fn python(pool: &Weak<Pool>) -> Option<PathBuf> {
        let explicit = pool.upgrade()?.python.clone();
        match python::resolve(explicit.as_deref()).await {
            Ok(env) => Some(env.python.clone()),
            Err(error) => {
                if let Some(pool) = pool.upgrade() {
                    lock(&pool.state).spawning = 0;
                }
                tracing::debug!(%error, "no warm pool without a Python for the backends");
                None
            }
        }
    }

    /// Spawns one waiting process and its watcher (one of the `spawning` slots).
    fn add(&self, python: &Path) {
        let spawned = if lock(&self.state).stopped {
            None
        } else {
            self.spawn(python)
                .inspect_err(|error| {
                    tracing::warn!(%error, python = %python.display(), "cannot start a warm pool process");
                })
                .ok()
        };
        let mut state = lock(&self.state);
        state.spawning = state.spawning.saturating_sub(1);
        // Stopped while it was being spawned: dropping it kills it.
        let Some(launcher) = spawned.filter(|_| !state.stopped) else {
            return;
        };
        let pid = launcher.pid();
        tracing::debug!(pid, "warm pool process started");
        let (take, taken) = oneshot::channel();
        state.idle.push_back(Waiting { pid, take });
        state.watchers.retain(|watcher| !watcher.is_finished());
        state
            .watchers
            .push(tokio::spawn(watch(self.this.clone(), launcher, taken)));
    }

    /// The waiting process `pid` died: it is replaced, after a backoff when that keeps
    /// happening, and not after [`MAX_DEATHS`] in a row (until a backend starts: see
    /// [`Pool::works`]).
    fn died(&self, pid: u32) {
        let deaths = {
            let mut state = lock(&self.state);
            state.idle.retain(|waiting| waiting.pid != pid);
            state.deaths += 1;
            state.deaths
        };
        if deaths >= MAX_DEATHS {
            tracing::error!(
                deaths,
                "warm pool processes keep dying; no more until a notebook backend starts"
            );
        }
        self.refill(super::process::backoff(deaths));
    }

    /// A backend started: Python works, whatever became of earlier waiting processes.
    pub(super) fn works(&self) {
        lock(&self.state).deaths = 0;
    }

    /// Stops every waiting process and waits until they are gone. The pool stays empty.
    pub(super) async fn shutdown(&self) {
        let watchers = {
            let mut state = lock(&self.state);
            state.stopped = true;
            // Dropping the handles tells each watcher to kill its process.
            state.idle.clear();
            std::mem::take(&mut state.watchers)
        };
        for watcher in watchers {
            let _ = watcher.await;
        }
    }
}

/// Owns one waiting process until it is taken (handed over), dies (the pool replaces it) or
/// the pool lets go of it (killed).
async fn watch(
    pool: Weak<Pool>,
    mut launcher: Launcher,
    taken: oneshot::Receiver<oneshot::Sender<Launcher>>,
) {
    let pid = launcher.pid();
    tokio::select! {
        status = launcher.child.wait() => {
            let mut stderr = String::new();
            let read = launcher.stderr.read_to_string(&mut stderr);
            let _ = tokio::time::timeout(Duration::from_millis(200), read).await;
            tracing::warn!(
                pid,
                status = ?status.map(|status| status.to_string()),
                stderr = %tail(&stderr),
                "a warm pool process exited; replacing it"
            );
            if let Some(pool) = pool.upgrade() {
                pool.died(pid);
            }
        }
        request = taken => match request {
            Ok(reply) => {
                if let Err(launcher) = reply.send(launcher) {
                    launcher.kill().await;
                }
            }
            Err(_) => launcher.kill().await,
        }
    }
}

/// The last lines of `text`, for a log line.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}
