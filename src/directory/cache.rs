//! The running notebooks of one directory mount: one backend per notebook file, at most
//! `max_backends` at once (least recently used, WebSocket-free backends make room first), and
//! a background sweep that stops the backends of files that were deleted or now resolve
//! elsewhere (a re-pointed directory symlink).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::resolve::{self, Resolved};
use crate::mount::{Layers, MountService};
use crate::notebook::{Backend, Backends, Mode, NotebookService};
use crate::sync::lock;

/// How often cached notebooks are checked for deletion or a re-pointed symlink.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One running notebook: its backend and its (layered) service.
struct Entry {
    /// The file the backend runs; a request that resolves elsewhere now is not its.
    canonical: PathBuf,
    backend: Backend,
    service: MountService,
}

/// The backends of one directory mount, keyed by the notebook's relative path (`team/q3.py`).
pub(super) struct Cache {
    /// The mount path, for log labels.
    mount: String,
    /// The directory, as the mount resolves it (the sweep resolves cached files again).
    directory: PathBuf,
    /// Wrapped around each notebook, the first outermost.
    layers: Layers,
    max_backends: usize,
    backends: Arc<Backends>,
    entries: Mutex<HashMap<PathBuf, Entry>>,
    sweeping: AtomicBool,
}

impl Cache {
    pub(super) fn new(
        mount: String,
        directory: PathBuf,
        layers: Layers,
        max_backends: usize,
        backends: Arc<Backends>,
    ) -> Self {
        Self {
            mount,
            directory,
            layers,
            max_backends,
            backends,
            entries: Mutex::new(HashMap::new()),
            sweeping: AtomicBool::new(false),
        }
    }

    /// The running service for `found`, if the cached file is still the one `found` resolved
    /// to. A name that resolves to another file now (re-pointed symlink) retires its old
    /// backend.
    pub(super) fn get(&self, found: &Resolved) -> Option<MountService> {
        let mut entries = lock(&self.entries);
        self.lookup(&mut entries, found)
    }

    /// A new backend for `found`, making room if needed. `None` when the limit is reached and
    /// every backend has an open WebSocket.
    pub(super) fn start(&self, found: &Resolved) -> Option<MountService> {
        let mut entries = lock(&self.entries);
        // Another request for the same notebook may have started it since `get` missed.
        if let Some(service) = self.lookup(&mut entries, found) {
            return Some(service);
        }
        while entries.len() >= self.max_backends {
            let victim = entries
                .iter()
                .filter(|(_, entry)| entry.backend.open_tunnels() == 0)
                .max_by_key(|(_, entry)| entry.backend.idle_for())
                .map(|(relative, _)| relative.clone());
            let Some(victim) = victim else {
                tracing::warn!(
                    mount = %self.mount,
                    max = self.max_backends,
                    "every notebook backend of this directory has an open WebSocket; \
                     refusing to start another"
                );
                return None;
            };
            self.evict(
                &mut entries,
                &victim,
                "stopping the least recently used notebook backend to make room",
            );
        }
        let label = format!("{}{}", self.mount, found.prefix);
        let backend = self
            .backends
            .add((&self.mount, &label), found.canonical.clone(), Mode::Run);
        let notebook = NotebookService::new(backend.clone()).into_mount_service();
        let service = self.layers.apply(notebook);
        entries.insert(
            found.relative.clone(),
            Entry {
                canonical: found.canonical.clone(),
                backend,
                service: service.clone(),
            },
        );
        Some(service)
    }

    /// [`get`](Self::get) with the lock held.
    fn lookup(
        &self,
        entries: &mut HashMap<PathBuf, Entry>,
        found: &Resolved,
    ) -> Option<MountService> {
        let entry = entries.get(&found.relative)?;
        if entry.canonical == found.canonical {
            return Some(entry.service.clone());
        }
        if let Some(stale) = entries.remove(&found.relative) {
            self.retire(stale);
        }
        None
    }

    /// Takes `relative` out of the cache and retires its backend, saying `why` in the log.
    fn evict(&self, entries: &mut HashMap<PathBuf, Entry>, relative: &Path, why: &str) {
        if let Some(entry) = entries.remove(relative) {
            tracing::info!(mount = %self.mount, notebook = %relative.display(), "{why}");
            self.retire(entry);
        }
    }

    /// Stops a backend that left the cache, then forgets it.
    fn retire(&self, entry: Entry) {
        let backends = self.backends.clone();
        tokio::spawn(async move {
            entry.backend.shutdown().await;
            backends.remove(&entry.backend);
        });
    }

    /// Starts the background sweep once (it ends when the cache is dropped).
    pub(super) fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(cache) => cache.sweep(),
                    None => break,
                }
            }
        });
    }

    /// Retires the backends of notebooks that were deleted, became unsafe, or resolve to
    /// another file now. Files are looked up without the lock held.
    fn sweep(&self) {
        let cached: Vec<(PathBuf, PathBuf)> = {
            let entries = lock(&self.entries);
            entries
                .iter()
                .map(|(relative, entry)| (relative.clone(), entry.canonical.clone()))
                .collect()
        };
        let stale: Vec<(PathBuf, PathBuf)> = cached
            .into_iter()
            .filter(|(relative, canonical)| {
                resolve::locate(&self.directory, relative).as_ref() != Some(canonical)
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        let mut entries = lock(&self.entries);
        for (relative, canonical) in stale {
            // Unless a request replaced it meanwhile.
            if entries
                .get(&relative)
                .is_some_and(|e| e.canonical == canonical)
            {
                self.evict(
                    &mut entries,
                    &relative,
                    "notebook file is gone or moved; stopping its backend",
                );
            }
        }
    }
}
