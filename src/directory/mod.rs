//! Dynamic directories: every marimo notebook in a folder, served without a restart, like
//! marimo's `create_asgi_app().with_dynamic_directory(...)`.
//!
//! A request for `{mount}/team/q3/…` is resolved at request time (see [`resolve`]) to
//! `directory/team/q3.py`; its backend (the same supervised process as a `with_app` mount) is
//! created on the first request and cached, one per file, at most
//! [`DirectoryMount::max_backends`] at once (least recently used, WebSocket-free backends are
//! stopped first). A background sweep stops the backends of files that were deleted or now
//! resolve elsewhere (a re-pointed directory symlink).

mod resolve;

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tower::util::ServiceExt;
use tower_service::Service;

use crate::mount::{Layers, MountLayer, MountService};
use crate::notebook::process::Backend;
use crate::notebook::{Backends, Mode, NotebookService};
use crate::request::enter_mount;
use crate::response::{
    bad_request, html, method_not_allowed, no_store, not_found, plain, unavailable,
};
use crate::router::add_slash;
use crate::sync::lock;
use crate::Body;

/// How many notebook backends a directory mount runs at once unless told otherwise.
pub(crate) const DEFAULT_MAX_BACKENDS: usize = 16;
/// How often cached notebooks are checked for deletion or a re-pointed symlink.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The notebook file a request is for, in the request extensions of every request that
/// reaches a notebook (marimo's `scope["marimo_app_file"]`).
///
/// Per-notebook layers ([`Mount::layer`](crate::Mount::layer) on an app or directory mount)
/// can read it to log or authorize by file. The path is absolute: for
/// [`Mount::app`](crate::Mount::app) the canonical notebook file, for a directory mount the
/// directory as configured (made absolute, symlinks kept) joined with the notebook's relative
/// path, e.g. `/srv/notebooks/team/q3.py`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotebookFile(pub(crate) PathBuf);

impl NotebookFile {
    /// The notebook's path.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

/// What a directory mount's validate callback decided about a request
/// (see [`DirectoryMount::validate`]).
#[derive(Debug)]
pub enum Validation {
    /// Serve the notebook.
    Allow,
    /// Answer `404 Not Found`, as if the notebook did not exist (marimo's `False`), and leave
    /// it out of the directory's index page.
    Deny,
    /// Answer with this response instead (e.g. `403` with an explanation, or a redirect to a
    /// login page). The notebook is left out of the index page.
    Respond(Response<Body>),
}

impl From<bool> for Validation {
    /// `true` is [`Validation::Allow`], `false` is [`Validation::Deny`].
    fn from(allow: bool) -> Self {
        if allow {
            Validation::Allow
        } else {
            Validation::Deny
        }
    }
}

/// The validate callback, type-erased.
pub(crate) type ValidateFn =
    Arc<dyn Fn(&Path, &Parts) -> BoxFuture<'static, Validation> + Send + Sync>;

/// A directory of notebooks to mount: created by [`Mount::directory`](crate::Mount::directory)
/// (or [`AppBuilder::with_dynamic_directory`](crate::AppBuilder::with_dynamic_directory)),
/// given to [`AppBuilder::mount`](crate::AppBuilder::mount).
///
/// Mounted at `/apps`, `/apps/sales/` serves `sales.py`, `/apps/team/q3/` serves
/// `team/q3.py`, and `/apps/` lists the notebooks the requester may open. Files added later
/// are served without a restart; deleted ones stop being served and their backend stops.
/// Only `.py` files that are marimo notebooks, inside the directory, whose path has no name
/// starting with `_` or `.`, are ever served; anything else is `404 Not Found`.
///
/// ```
/// # fn main() -> Result<(), marimo_rs::BuildError> {
/// use marimo_rs::{create_app, Mount, User, Validation};
///
/// let app = create_app()
///     .mount(
///         "/apps",
///         Mount::directory("examples/notebooks")
///             // Only signed-in users (a `User` set by your auth middleware) see notebooks.
///             .validate_sync(|_notebook, request| {
///                 request.extensions.get::<User>().is_some().into()
///             })
///             .max_backends(8),
///     )
///     .build()?;
/// # let _ = app;
/// # Ok(()) }
/// ```
#[must_use = "a DirectoryMount does nothing until given to AppBuilder::mount"]
pub struct DirectoryMount {
    pub(crate) directory: PathBuf,
    pub(crate) validate: Option<ValidateFn>,
    pub(crate) layers: Layers,
    pub(crate) max_backends: usize,
}

impl fmt::Debug for DirectoryMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryMount")
            .field("directory", &self.directory)
            .field("validate", &self.validate.is_some())
            .field("layers", &self.layers.len())
            .field("max_backends", &self.max_backends)
            .finish()
    }
}

impl DirectoryMount {
    pub(crate) fn new(directory: PathBuf) -> Self {
        Self {
            directory,
            validate: None,
            layers: Layers::default(),
            max_backends: DEFAULT_MAX_BACKENDS,
        }
    }

    /// Decides, for every request to a notebook of this directory, whether it is served
    /// (marimo's `validate_callback`), and which notebooks the index page lists.
    ///
    /// `callback` receives the notebook's path relative to the directory (`team/q3.py`) and
    /// the request's head (headers, URI, extensions such as [`User`](crate::User)); the future
    /// it returns must own what it needs (clone it out of the request first). It runs after
    /// the file was found, so it never sees paths that do not name a notebook. The last call
    /// of `validate` or [`validate_sync`](DirectoryMount::validate_sync) wins.
    ///
    /// ```
    /// use marimo_rs::{Mount, User, Validation};
    ///
    /// let mount = Mount::directory("examples/notebooks").validate(|notebook, request| {
    ///     let user = request.extensions.get::<User>().cloned();
    ///     let admin_only = notebook.starts_with("admin");
    ///     async move {
    ///         // e.g. ask a permission service here
    ///         match user {
    ///             Some(user) if !admin_only || user.name() == "root" => Validation::Allow,
    ///             Some(_) => Validation::Respond(
    ///                 http::Response::builder()
    ///                     .status(403)
    ///                     .body(marimo_rs::Body::from("admins only"))
    ///                     .unwrap(),
    ///             ),
    ///             None => Validation::Deny,
    ///         }
    ///     }
    /// });
    /// # let _ = mount;
    /// ```
    pub fn validate<F, Fut>(mut self, callback: F) -> Self
    where
        F: Fn(&Path, &Parts) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Validation> + Send + 'static,
    {
        self.validate = Some(Arc::new(
            move |notebook: &Path, request: &Parts| -> BoxFuture<'static, Validation> {
                Box::pin(callback(notebook, request))
            },
        ));
        self
    }

    /// [`validate`](DirectoryMount::validate) with a callback that answers at once.
    pub fn validate_sync<F>(mut self, callback: F) -> Self
    where
        F: Fn(&Path, &Parts) -> Validation + Send + Sync + 'static,
    {
        self.validate = Some(Arc::new(
            move |notebook: &Path, request: &Parts| -> BoxFuture<'static, Validation> {
                Box::pin(std::future::ready(callback(notebook, request)))
            },
        ));
        self
    }

    /// Wraps each notebook of the directory in `layer` (marimo's per-directory
    /// `middleware=[...]`): every notebook gets its own instance, and sees the
    /// [`NotebookFile`] extension. The index page and `404`s do not pass through it.
    ///
    /// Layers apply in the order given, the first one outermost, as for
    /// [`Mount::layer`](crate::Mount::layer).
    pub fn layer<L: MountLayer>(mut self, layer: L) -> Self {
        self.layers.push(layer);
        self
    }

    /// How many notebook backends of this directory may run at once (default 16, at least
    /// 1). Opening one more stops the least recently used backend that has no open WebSocket;
    /// when every backend has one, the request gets `503` with `Retry-After`.
    pub fn max_backends(mut self, max: usize) -> Self {
        self.max_backends = max.max(1);
        self
    }
}

/// One cached notebook: its backend and its (layered) service.
struct Entry {
    canonical: PathBuf,
    backend: Backend,
    service: MountService,
}

struct Inner {
    /// The mount path, for log labels.
    mount: String,
    /// Absolute, symlinks kept (resolved again on every request).
    directory: PathBuf,
    validate: Option<ValidateFn>,
    layers: Layers,
    max_backends: usize,
    backends: Arc<Backends>,
    /// Keyed by the notebook's relative path (`team/q3.py`).
    entries: Mutex<HashMap<PathBuf, Entry>>,
    sweeping: AtomicBool,
}

/// The service a directory mount becomes. Cheap to clone.
#[derive(Clone)]
pub(crate) struct DirectoryService {
    inner: Arc<Inner>,
}

impl DirectoryService {
    /// `directory` must be absolute (see `BuildContext::directory`).
    pub(crate) fn new(
        mount: String,
        directory: PathBuf,
        config: DirectoryMount,
        layers: Layers,
        backends: Arc<Backends>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                mount,
                directory,
                validate: config.validate,
                layers,
                max_backends: config.max_backends,
                backends,
                entries: Mutex::new(HashMap::new()),
                sweeping: AtomicBool::new(false),
            }),
        }
    }
}

impl Service<Request<Body>> for DirectoryService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move { Ok(inner.handle(req).await) })
    }
}

impl Inner {
    async fn handle(self: Arc<Self>, req: Request<Body>) -> Response<Body> {
        self.start_sweeping();
        if req.uri().path() == "/" {
            return self.index(req).await;
        }
        let Some(found) = resolve::resolve(&self.directory, req.uri().path()) else {
            return not_found();
        };
        // Only marimo notebooks exist here: a helper module is as absent as a missing file.
        if self.cached(&found).is_none() && !resolve::is_marimo_notebook(&found.canonical) {
            return not_found();
        }
        let (parts, body) = req.into_parts();
        if let Some(validate) = &self.validate {
            match validate(&found.relative, &parts).await {
                Validation::Allow => {}
                Validation::Deny => return not_found(),
                Validation::Respond(response) => return response,
            }
        }
        if found.rest.is_empty() {
            return add_slash(&found.prefix, parts.uri.query());
        }
        let Some(service) = self.service_for(&found) else {
            return too_busy();
        };
        let mut req = Request::from_parts(parts, body);
        if enter_mount(&mut req, &found.prefix).is_err() {
            return bad_request();
        }
        req.extensions_mut()
            .insert(NotebookFile(self.directory.join(&found.relative)));
        match service.oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// The cached service for `found`, or a new backend for it (making room if needed).
    /// `None` when the limit is reached and every backend has an open WebSocket.
    fn service_for(&self, found: &resolve::Resolved) -> Option<MountService> {
        if let Some(service) = self.cached(found) {
            return Some(service);
        }
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get(&found.relative) {
            if entry.canonical == found.canonical {
                return Some(entry.service.clone());
            }
        }
        if let Some(stale) = entries.remove(&found.relative) {
            self.retire(stale);
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
            if let Some(entry) = entries.remove(&victim) {
                tracing::info!(
                    mount = %self.mount,
                    notebook = %victim.display(),
                    "stopping the least recently used notebook backend to make room"
                );
                self.retire(entry);
            }
        }
        let label = format!("{}{}", self.mount, found.prefix);
        let backend = self
            .backends
            .add(&label, found.canonical.clone(), Mode::Run);
        let startup_wait = self.backends.options().startup_wait;
        let notebook = NotebookService::new(backend.clone(), found.canonical.clone(), startup_wait);
        let service = self.layers.apply(notebook.into_mount_service());
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

    /// The cached service, if the cached file is still the one `found` resolved to. A name
    /// that resolves to another file now (re-pointed symlink) retires its old backend.
    fn cached(&self, found: &resolve::Resolved) -> Option<MountService> {
        let mut entries = lock(&self.entries);
        let entry = entries.get(&found.relative)?;
        if entry.canonical == found.canonical {
            return Some(entry.service.clone());
        }
        if let Some(stale) = entries.remove(&found.relative) {
            self.retire(stale);
        }
        None
    }

    /// Stops a backend that left the cache, then forgets it.
    fn retire(&self, entry: Entry) {
        let backends = self.backends.clone();
        tokio::spawn(async move {
            entry.backend.shutdown().await;
            backends.remove(&entry.backend);
        });
    }

    /// Starts the background sweep once (it ends when the service is dropped).
    fn start_sweeping(self: &Arc<Self>) {
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
                    Some(inner) => inner.sweep(),
                    None => break,
                }
            }
        });
    }

    /// Retires the backends of notebooks that were deleted, became unsafe, or resolve to
    /// another file now.
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
            if entries
                .get(&relative)
                .is_some_and(|e| e.canonical == canonical)
            {
                if let Some(entry) = entries.remove(&relative) {
                    tracing::info!(
                        mount = %self.mount,
                        notebook = %relative.display(),
                        "notebook file is gone or moved; stopping its backend"
                    );
                    self.retire(entry);
                }
            }
        }
    }

    /// The index page: the notebooks the requester may open.
    async fn index(&self, req: Request<Body>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return method_not_allowed("GET, HEAD");
        }
        let directory = self.directory.clone();
        let listed = tokio::task::spawn_blocking(move || resolve::list_notebooks(&directory))
            .await
            .unwrap_or_default();
        let (parts, _) = req.into_parts();
        let shown = match &self.validate {
            None => listed,
            Some(validate) => {
                let verdicts =
                    futures_util::future::join_all(listed.iter().map(|nb| validate(nb, &parts)))
                        .await;
                listed
                    .into_iter()
                    .zip(verdicts)
                    .filter(|(_, verdict)| matches!(verdict, Validation::Allow))
                    .map(|(notebook, _)| notebook)
                    .collect()
            }
        };
        let mut response = no_store(html(StatusCode::OK, index_page(&shown)));
        response.headers_mut().insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        response
    }
}

/// Characters left as they are in a link segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn index_page(notebooks: &[PathBuf]) -> String {
    let mut items = String::new();
    for notebook in notebooks {
        let Some(name) = notebook.to_str().and_then(|n| n.strip_suffix(".py")) else {
            continue;
        };
        let href: Vec<String> = name
            .split('/')
            .map(|segment| utf8_percent_encode(segment, SEGMENT).to_string())
            .collect();
        // `./` keeps a name like `javascript:x` from being read as a URL scheme.
        items.push_str(&format!(
            "<li><a href=\"./{}/\">{}</a></li>",
            crate::html::escape(&href.join("/")),
            crate::html::escape(name)
        ));
    }
    let list = if items.is_empty() {
        "<p>No notebooks.</p>".to_owned()
    } else {
        format!("<ul>{items}</ul>")
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Notebooks</title><style>body{{font-family:system-ui,sans-serif;margin:3rem;\
         color:#333}}li{{margin:.4rem 0}}</style></head><body><h1>Notebooks</h1>{list}\
         </body></html>"
    )
}

fn too_busy() -> Response<Body> {
    let why = plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many notebooks are open right now; try again shortly.",
    );
    unavailable(why, 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_links_are_relative_encoded_and_escaped() {
        let page = index_page(&[
            PathBuf::from("sales.py"),
            PathBuf::from("team/q3.py"),
            PathBuf::from("a&b <c>.py"),
            PathBuf::from("javascript:alert(1).py"),
        ]);
        assert!(page.contains(r#"<a href="./sales/">sales</a>"#), "{page}");
        assert!(
            page.contains(r#"<a href="./team/q3/">team/q3</a>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"<a href="./a%26b%20%3Cc%3E/">a&amp;b &lt;c&gt;</a>"#),
            "{page}"
        );
        assert!(
            page.contains(r#"href="./javascript%3Aalert%281%29/""#),
            "{page}"
        );
        assert!(index_page(&[]).contains("No notebooks."));
    }

    #[test]
    fn the_redirect_is_relative_and_keeps_the_query() {
        let response = add_slash("/team/q3", Some("a=1&b=2"));
        assert_eq!(response.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(response.headers()[header::LOCATION], "q3/?a=1&b=2");
        assert_eq!(
            add_slash("/sales", None).headers()[header::LOCATION],
            "sales/"
        );
    }
}
