//! Notebook mounts: a [`NotebookService`] per `with_app`, each backed by one supervised
//! Python process ([`process::Backend`]) that runs marimo's own ASGI app, started from a warm
//! [`pool`] of processes when one waits.

mod assets;
mod memory;
mod page;
mod pool;
mod process;
pub(crate) mod python;
mod service;
mod sessions;
mod stored;
mod watch;

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use self::process::Backend;
pub(crate) use self::service::NotebookService;

use self::assets::StaticAssets;
use self::pool::Pool;
use crate::error::BuildError;
use crate::metrics::BackendStats;
use crate::sync::lock;

/// Why a notebook backend cannot run. Each message says what to do about it.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotebookError {
    /// The configured interpreter could not be run at all.
    #[error("cannot run Python {python} (from {source_name}): {detail}")]
    PythonNotRunnable {
        /// The interpreter.
        python: String,
        /// Where the choice came from (builder option, `MARIMO_RS_PYTHON`, …).
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// The interpreter runs but cannot import (a recent enough) marimo.
    #[error("marimo is not installed for {python} ({detail}): {fix}")]
    MarimoMissing {
        /// The interpreter.
        python: String,
        /// What the check found.
        detail: String,
        /// The command that fixes it.
        fix: String,
    },
    /// The managed virtualenv could not be created.
    #[error("cannot set up the managed marimo virtualenv: {detail}")]
    Provision {
        /// What failed.
        detail: String,
    },
    /// No interpreter worked.
    #[error(
        "no Python with marimo found ({tried}); install Python 3 with `python3 -m pip install \
         marimo=={version}`, or set MARIMO_RS_PYTHON",
        version = python::MARIMO_VERSION
    )]
    NoPython {
        /// Everything that was tried, and why it failed.
        tried: String,
    },
}

/// How a notebook backend serves its notebook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Mode {
    /// `marimo run`: marimo's `create_asgi_app`, read-only app view.
    Run,
    /// `marimo edit`: marimo's editor (code, kernel subprocess, saving to the file).
    Edit,
}

impl Mode {
    /// `run` or `edit`, as the admin page shows it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Edit => "edit",
        }
    }
}

/// The options marimo's `create_asgi_app(...)` takes, passed through to every backend.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct MarimoOptions {
    pub(crate) quiet: bool,
    pub(crate) include_code: bool,
    /// `None`: marimo's default (120 s in run mode, never in edit mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) session_ttl: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) asset_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) html_head: Option<String>,
    pub(crate) show_tracebacks: bool,
    pub(crate) redirect_console_to_browser: bool,
    pub(crate) skew_protection: bool,
}

impl Default for MarimoOptions {
    fn default() -> Self {
        Self {
            quiet: true,
            include_code: false,
            session_ttl: None,
            asset_url: None,
            html_head: None,
            show_tracebacks: false,
            redirect_console_to_browser: false,
            skew_protection: false,
        }
    }
}

/// Everything that shapes how notebook backends run (set through `AppBuilder`).
#[derive(Clone, Debug)]
pub(crate) struct NotebookOptions {
    pub(crate) python: Option<PathBuf>,
    pub(crate) marimo: MarimoOptions,
    pub(crate) eager: bool,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) startup_timeout: Duration,
    pub(crate) startup_wait: Duration,
    pub(crate) response_timeout: Duration,
    /// How many launcher processes wait, marimo imported, to become a notebook's backend.
    pub(crate) warm_pool: usize,
    /// The origin guard's policy (the built app's allowed origins), applied by every notebook
    /// service so that mounts without the gateway's auth are guarded too.
    pub(crate) origin: crate::origin::Policy,
    /// Limits and marimo's command-line behaviour (`--memory-limit`, `--watch`, `-- ARGS`…).
    pub(crate) run: RunOptions,
    /// Where backends record their lifecycle and upstream latency, if metrics are on.
    pub(crate) metrics: Option<crate::metrics::Metrics>,
}

/// The limits a backend runs under and what marimo's command line adds to
/// `create_asgi_app`: kept apart from [`MarimoOptions`], which is passed to it as is.
#[derive(Clone, Debug, Default)]
pub(crate) struct RunOptions {
    /// Bytes a backend may use (see `memory`); `None`: no cap.
    pub(crate) memory_limit: Option<u64>,
    /// Concurrent marimo sessions (kernel WebSockets) per notebook; `None`: no cap.
    pub(crate) max_sessions: Option<usize>,
    /// Restart an app's backend when its file changes; the editor reloads it in place.
    pub(crate) watch: bool,
    /// What notebooks read with `mo.cli_args()` and `sys.argv` (marimo's `-- ARGS`).
    pub(crate) argv: Vec<String>,
}

impl Default for NotebookOptions {
    fn default() -> Self {
        Self {
            python: None,
            marimo: MarimoOptions::default(),
            eager: false,
            idle_timeout: None,
            startup_timeout: Duration::from_secs(60),
            startup_wait: Duration::from_secs(30),
            response_timeout: Duration::from_secs(30),
            warm_pool: 1,
            origin: crate::origin::Policy::default(),
            run: RunOptions::default(),
            metrics: None,
        }
    }
}

/// The file a gateway keeps locked (`flock`) in its private directory for as long as it runs:
/// the kernel drops the lock when the process ends, however it ends, so a directory whose lock
/// can be taken was left behind by a gateway that is gone — whatever became of its pid.
const LOCK_FILE: &str = "gateway.lock";

/// What every backend of one built service reads: handed to each [`Backend`] when it is
/// created, and alive as long as one is.
#[derive(Debug)]
struct Shared {
    options: NotebookOptions,
    /// marimo's frontend files, read once and served by the gateway: every backend runs the
    /// same Python environment, hence the same files. Runtime state, unlike `options`.
    assets: StaticAssets,
    /// How the memory cap is enforced, if there is one (found once per service).
    memory: Option<memory::Enforcement>,
    /// How many times a backend ran out of memory, including backends since removed.
    out_of_memory: AtomicU64,
    /// Processes started ahead, waiting to become a backend.
    pool: Arc<Pool>,
}

/// What all notebook mounts of one built service share: the private socket directory, what
/// every backend reads ([`Shared`]), and the list of backends (for start-up and shutdown).
#[derive(Debug)]
pub(crate) struct Backends {
    dir: tempfile::TempDir,
    /// Holds the lock on [`LOCK_FILE`] while this service lives.
    _lock: File,
    shared: Arc<Shared>,
    all: Mutex<Vec<Backend>>,
    /// Numbers socket names: never reused, even after a backend is removed.
    next_socket: AtomicUsize,
}

impl Backends {
    /// Creates the private directory (mode 0700, named `marimo-rs-<pid>-<random>`), locks it,
    /// writes the launcher into it, and removes the directories that killed gateways left
    /// beside it ([`remove_stale_dirs`]).
    pub(crate) fn new(options: NotebookOptions) -> Result<Arc<Self>, BuildError> {
        let io_error = |source: std::io::Error| BuildError::Io {
            action: "create the private socket directory",
            source,
        };
        // Unix socket paths are limited to ~100 bytes: prefer a short base directory.
        let base = std::env::temp_dir();
        let base = if base.as_os_str().len() > 60 {
            PathBuf::from("/tmp")
        } else {
            base
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("marimo-rs-{}-", std::process::id()))
            .tempdir_in(&base)
            .map_err(io_error)?;
        // tempfile creates it 0700 already; make that a guarantee rather than a default.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(io_error)?;
        let lock = lock_dir(dir.path()).map_err(io_error)?;
        let launcher = dir.path().join("launcher.py");
        std::fs::write(&launcher, process::LAUNCHER).map_err(io_error)?;
        remove_stale_dirs(&base, dir.path());
        let memory = options.run.memory_limit.map(memory::Enforcement::detect);
        let pool = Pool::new(
            options.warm_pool,
            options.python.clone(),
            launcher,
            dir.path().to_path_buf(),
        );
        Ok(Arc::new(Self {
            dir,
            _lock: lock,
            shared: Arc::new(Shared {
                options,
                assets: StaticAssets::default(),
                memory,
                out_of_memory: AtomicU64::new(0),
                pool,
            }),
            all: Mutex::new(Vec::new()),
            next_socket: AtomicUsize::new(0),
        }))
    }

    /// A backend for `notebook` in `mode`, served at `path` (for logs and the admin page),
    /// which is the configured mount `mount` or, for a directory's notebook, below it.
    pub(crate) fn add(
        &self,
        (mount, path): (&str, &str),
        notebook: PathBuf,
        mode: Mode,
    ) -> Backend {
        let number = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let socket = self.dir.path().join(format!("nb{number}.sock"));
        let file_name = notebook
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stats = BackendStats::new(mount, path, self.shared.options.metrics.as_ref());
        let backend = Backend::new(
            (number, format!("{path} ({file_name})"), stats),
            notebook,
            mode,
            socket,
            self.shared.clone(),
        );
        lock(&self.all).push(backend.clone());
        backend
    }

    /// Forgets `backend` (after it was stopped): it no longer counts for `pids`, `start_all`
    /// or `shutdown`.
    pub(crate) fn remove(&self, backend: &Backend) {
        lock(&self.all).retain(|kept| kept != backend);
    }

    /// Every backend now, in the order they were added.
    pub(crate) fn snapshot(&self) -> Vec<Backend> {
        lock(&self.all).clone()
    }

    /// Starts every backend now and waits until each is ready or failed; then fills the warm
    /// pool (in the background), for notebooks started later.
    pub(crate) async fn start_all(&self) -> Result<(), NotebookError> {
        let options = &self.shared.options;
        python::resolve(options.python.as_deref()).await?;
        let backends = self.snapshot();
        let waits = backends
            .iter()
            .map(|backend| backend.ready_within(options.startup_timeout));
        futures_util::future::join_all(waits).await;
        self.shared.pool.refill(Duration::ZERO);
        Ok(())
    }

    /// Starts backends in the background (eager mode), if a runtime is running.
    pub(crate) fn start_eager(&self) {
        if self.shared.options.eager && tokio::runtime::Handle::try_current().is_ok() {
            for backend in self.snapshot() {
                backend.demand();
            }
        }
    }

    /// Stops every backend and the warm pool, and waits until their processes are gone.
    pub(crate) async fn shutdown(&self) {
        let backends = self.snapshot();
        let stopped = futures_util::future::join_all(backends.iter().map(Backend::shutdown));
        futures_util::future::join(stopped, self.shared.pool.shutdown()).await;
    }

    /// How many times backends of this service ran out of memory.
    pub(crate) fn out_of_memory_count(&self) -> u64 {
        self.shared.out_of_memory.load(Ordering::Relaxed)
    }

    /// The shortest time any backend has been idle ([`Backend::idle_for`], zero with an open
    /// WebSocket); `None` without backends.
    pub(crate) fn idle_for(&self) -> Option<Duration> {
        self.snapshot()
            .iter()
            .map(|backend| {
                if backend.open_tunnels() > 0 {
                    Duration::ZERO
                } else {
                    backend.idle_for()
                }
            })
            .min()
    }

    /// Process ids of running backends.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.snapshot().iter().filter_map(Backend::pid).collect()
    }

    /// The private socket directory.
    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// Locks `dir`'s [`LOCK_FILE`]. The file appears under its name already locked (locked under
/// a temporary name, then renamed), so no other gateway can find it unlocked while this one
/// lives.
fn lock_dir(dir: &Path) -> std::io::Result<File> {
    let pending = dir.join(format!("{LOCK_FILE}.new"));
    let file = File::create_new(&pending)?;
    file.try_lock().map_err(std::io::Error::from)?;
    std::fs::rename(&pending, dir.join(LOCK_FILE))?;
    Ok(file)
}

/// Removes the private directories in `base` that gateways stopped without a chance to clean
/// up (`kill -9`, a crash) left behind, with their stale sockets: those named `marimo-rs-…`,
/// owned by the owner of `own` (this process's user), holding a [`LOCK_FILE`] that nobody
/// holds. A live gateway's directory (its lock is held), another user's, a symlink, and a
/// directory without a lock file (made by an older version, or being made right now) are never
/// touched. Failures are logged and otherwise ignored: this is housekeeping.
fn remove_stale_dirs(base: &Path, own: &Path) {
    let Ok(owner) = std::fs::symlink_metadata(own).map(|meta| meta.uid()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path == own
            || !entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(b"marimo-rs-")
        {
            continue;
        }
        let ours =
            std::fs::symlink_metadata(&path).is_ok_and(|meta| meta.is_dir() && meta.uid() == owner);
        let lock_path = path.join(LOCK_FILE);
        let lock_is_file = std::fs::symlink_metadata(&lock_path).is_ok_and(|meta| meta.is_file());
        if !ours || !lock_is_file {
            continue;
        }
        let Ok(lock) = File::open(&lock_path) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue; // A gateway holds it: alive.
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(
                dir = %path.display(),
                "removed the private directory of a gateway that did not stop cleanly"
            ),
            Err(error) => tracing::debug!(
                dir = %path.display(),
                %error,
                "could not remove a stopped gateway's private directory"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unlocked_gateway_dirs_of_this_user_are_removed() {
        let base = tempfile::tempdir().unwrap();
        let own = base.path().join("marimo-rs-1-own");
        std::fs::create_dir(&own).unwrap();
        let _own_lock = lock_dir(&own).unwrap();
        let live = base.path().join("marimo-rs-2-live");
        std::fs::create_dir(&live).unwrap();
        let _live_lock = lock_dir(&live).unwrap();
        let dead = base.path().join("marimo-rs-3-dead");
        std::fs::create_dir(&dead).unwrap();
        drop(lock_dir(&dead).unwrap());
        std::fs::write(dead.join("nb0.sock"), "").unwrap();
        let unlocked_elsewhere = base.path().join("other-3-dead");
        std::fs::create_dir(&unlocked_elsewhere).unwrap();
        drop(lock_dir(&unlocked_elsewhere).unwrap());
        let older = base.path().join("marimo-rs-abc123");
        std::fs::create_dir(&older).unwrap();
        let link = base.path().join("marimo-rs-4-link");
        std::os::unix::fs::symlink(&dead, &link).unwrap();

        remove_stale_dirs(base.path(), &own);
        assert!(!dead.exists(), "a dead gateway's directory goes");
        for kept in [&own, &live, &unlocked_elsewhere, &older] {
            assert!(kept.is_dir(), "{} is kept", kept.display());
        }
        assert!(link.symlink_metadata().is_ok(), "a symlink is not followed");
    }
}
