//! [`create_app`], [`AppBuilder`] and [`Mount`]: composing notebooks and services into one
//! [`MarimoService`].

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower::util::ServiceExt;
use tower_layer::Layer;
use tower_service::Service;

use crate::access::{self, Access};
use crate::access_log::AccessLog;
use crate::admin::{self, Admin, Gate, MountInfo, Ops, UserGate};
use crate::auth::{AuthLayer, OidcConfig, Token};
use crate::body::{Body, BoxError};
use crate::directory::{DirectoryMount, DirectoryService, Gallery, Listed, NotebookFile};
use crate::error::BuildError;
use crate::health::Health;
use crate::host::{self, HostPolicy};
use crate::metrics::observe::{note_user, MountLookup, Observer};
use crate::metrics::Metrics;
use crate::mount::{IntoMountService, Layers, MountFuture, MountLayer, MountPath, MountService};
use crate::notebook::{Backends, Mode, NotebookError, NotebookOptions, NotebookService};
use crate::origin::{self, Origin};
use crate::replica::{ReplicaId, REPLICA_HEADER};
use crate::router::Router;

/// Starts composing a service, like marimo's `create_asgi_app()`.
///
/// ```
/// # fn main() -> Result<(), marimo_rs::BuildError> {
/// use marimo_rs::create_app;
/// use tower::service_fn;
///
/// let hello = service_fn(|_req| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(marimo_rs::Body::from("hello")))
/// });
/// let app = create_app().with_service("/hello", hello).build()?;
/// # let _ = app;
/// # Ok(()) }
/// ```
pub fn create_app() -> AppBuilder {
    AppBuilder::default()
}

/// One entry of the mount table: what is served under a path, and the layers around it.
///
/// [`AppBuilder::with_service`] and [`AppBuilder::with_app`] are shorthands for
/// [`AppBuilder::mount`] with [`Mount::service`] and [`Mount::app`]; use `Mount` directly to
/// wrap one mount in its own layers (marimo's `middleware=[...]`).
///
/// ```
/// # fn main() -> Result<(), marimo_rs::BuildError> {
/// use marimo_rs::{create_app, Mount};
/// use tower_http::set_header::SetResponseHeaderLayer;
/// use http::{header::HeaderName, HeaderValue};
/// # let admin = tower::service_fn(|_req| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(marimo_rs::Body::empty()))
/// # });
///
/// let app = create_app()
///     .mount(
///         "/admin",
///         Mount::service(admin)
///             // The first layer given is the outermost: it sees the request first.
///             .layer(SetResponseHeaderLayer::overriding(
///                 HeaderName::from_static("x-frame-options"),
///                 HeaderValue::from_static("DENY"),
///             )),
///     )
///     .build()?;
/// # let _ = app;
/// # Ok(()) }
/// ```
pub struct Mount {
    kind: MountKind,
    layers: Layers,
    /// Who may open it (`None`: whoever the app's auth lets in).
    access: Option<Access>,
}

enum MountKind {
    Service(MountService),
    Notebook(PathBuf),
    Edit(PathBuf),
    /// Its layers are in `Mount::layers`, applied around each notebook.
    Directory(DirectoryMount),
    /// The page listing the other mounts' notebooks (`AppBuilder::with_gallery`).
    Gallery,
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            MountKind::Service(_) => "service",
            MountKind::Notebook(_) => "notebook",
            MountKind::Edit(_) => "notebook editor",
            MountKind::Directory(_) => "notebook directory",
            MountKind::Gallery => "gallery",
        };
        f.debug_struct("Mount")
            .field("kind", &kind)
            .field("layers", &self.layers.len())
            .field("access", &self.access)
            .finish()
    }
}

impl Mount {
    /// Mounts any tower service (the Rust analogue of mounting an ASGI app): see
    /// [`IntoMountService`] for what it must be.
    ///
    /// The service receives requests with the mount prefix stripped; the original URI and the
    /// prefix are in the request extensions as [`OriginalUri`](crate::OriginalUri) and
    /// [`MountPrefix`](crate::MountPrefix). Its error type must be [`Infallible`], as for
    /// axum's `nest_service`: turn errors into responses first (e.g. with
    /// `axum::error_handling::HandleErrorLayer`).
    pub fn service(service: impl IntoMountService) -> Self {
        Self {
            kind: MountKind::Service(service.into_mount_service()),
            layers: Layers::default(),
            access: None,
        }
    }

    /// Serves the marimo notebook at `root` (a `.py` file), as `marimo run root` would.
    ///
    /// The notebook runs in its own Python backend, started on the first request (or at once
    /// with [`AppBuilder::eager_start`]) and shared by every user of the mount.
    pub fn app(root: impl Into<PathBuf>) -> Self {
        Self {
            kind: MountKind::Notebook(root.into()),
            layers: Layers::default(),
            access: None,
        }
    }

    /// Serves marimo's editor for the notebook at `root`, as `marimo edit root` would (without
    /// marimo's own token: put [`AppBuilder::token`] or your own auth in front of it).
    ///
    /// Whoever reaches this mount can change the notebook, save it and run any code as the
    /// user of this process. The backend is private like a [`Mount::app`] one (a Unix socket
    /// in a 0700 directory); the code runs in kernel subprocesses that stop with it. `root`
    /// must exist (an empty file is a new notebook, as with `marimo edit new.py`). Editor
    /// mounts always show the code, send `print` output to the browser and have marimo's skew
    /// protection on (a `POST` needs the page's `Marimo-Server-Token`, as with `marimo
    /// edit`); marimo's language servers (pylsp, Copilot) are off. Cross-site requests are
    /// refused whether or not auth is on (see [`AppBuilder::allowed_origins`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use marimo_rs::{create_app, Mount, Token};
    ///
    /// let token = Token::random();
    /// let app = create_app()
    ///     .mount("/", Mount::edit("notebook.py"))
    ///     .token(token.clone())
    ///     .build()?;
    /// println!("http://127.0.0.1:2718/?access_token={}", token.expose_secret());
    /// # Ok(()) }
    /// ```
    pub fn edit(root: impl Into<PathBuf>) -> Self {
        Self {
            kind: MountKind::Edit(root.into()),
            layers: Layers::default(),
            access: None,
        }
    }

    /// Serves every marimo notebook in `directory` (and its subdirectories), found at request
    /// time, like marimo's `with_dynamic_directory`: mounted at `/apps`, `/apps/team/q3/` is
    /// `directory/team/q3.py`. See [`DirectoryMount`] for the options (validate callback,
    /// per-notebook layers, how many backends run at once) and what is served.
    pub fn directory(directory: impl Into<PathBuf>) -> DirectoryMount {
        DirectoryMount::new(directory.into())
    }

    /// Wraps this mount, and only this mount, in `layer`.
    ///
    /// Layers apply in the order given: the first one is the outermost (it sees the request
    /// first and the response last), as with `tower::ServiceBuilder` and marimo's
    /// `middleware=[...]` list. On a notebook directory ([`Mount::directory`]) the layers wrap
    /// each notebook, as [`DirectoryMount::layer`] does. Layers of notebook mounts see the
    /// [`NotebookFile`] request extension.
    ///
    /// Any tower layer whose service is [`IntoMountService`] fits, axum middleware included:
    /// a mount's requests and responses carry axum's own [`Body`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), marimo_rs::BuildError> {
    /// use axum::extract::Request;
    /// use axum::middleware::{from_fn, Next};
    /// use axum::response::{IntoResponse, Response};
    /// use http::StatusCode;
    /// use marimo_rs::{create_app, Body, Mount, User};
    /// use tower::ServiceExt;
    ///
    /// /// This notebook is for users the host's own auth signed in (it inserts `User`).
    /// async fn signed_in_only(req: Request, next: Next) -> Response {
    ///     if req.extensions().get::<User>().is_none() {
    ///         return StatusCode::FORBIDDEN.into_response();
    ///     }
    ///     next.run(req).await
    /// }
    ///
    /// let app = create_app()
    ///     .mount(
    ///         "/intro",
    ///         Mount::app("examples/notebooks/intro.py").layer(from_fn(signed_in_only)),
    ///     )
    ///     .build()?;
    /// let anonymous = http::Request::get("/intro/").body(Body::empty()).unwrap();
    /// let response = app.oneshot(anonymous).await.unwrap();
    /// assert_eq!(response.status(), StatusCode::FORBIDDEN);
    /// # Ok(()) }
    /// ```
    pub fn layer<L: MountLayer>(mut self, layer: L) -> Self {
        self.layers.push(layer);
        self
    }

    /// What the admin page calls this kind of mount.
    fn kind_name(&self) -> &'static str {
        match &self.kind {
            MountKind::Service(_) => "service",
            MountKind::Notebook(_) => "app",
            MountKind::Edit(_) => "edit",
            MountKind::Directory(_) => "directory",
            MountKind::Gallery => "gallery",
        }
    }

    /// Who may open this mount (see [`Access`]): a signed-in user the rules refuse gets
    /// `403` and a page naming them with a sign-out button, before the mount's layers run
    /// and without its notebook backend being started or touched. On a notebook directory,
    /// the same as [`DirectoryMount::access`]. Any signed-in user by default.
    ///
    /// The rules need a [`User`](crate::User): the app's auth ([`AppBuilder::auth`],
    /// [`AppBuilder::oidc`]) or a host's middleware in [`AppBuilder::layer`] provides it;
    /// without one, every request but health probes is refused.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// use marimo_rs::{create_app, Access, Mount, OidcConfig};
    ///
    /// let app = create_app()
    ///     .mount(
    ///         "/finance",
    ///         Mount::app("examples/notebooks/intro.py")
    ///             .access(Access::signed_in().groups(["finance", "admins"])),
    ///     )
    ///     .oidc(OidcConfig::new(
    ///         "https://id.example.com/realms/acme",
    ///         "marimo",
    ///         "client secret",
    ///         "https://marimo.example.com",
    ///     ))
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn access(mut self, access: Access) -> Self {
        match &mut self.kind {
            MountKind::Directory(directory) => {
                let taken = std::mem::replace(directory, DirectoryMount::new(PathBuf::new()));
                *directory = taken.access(access);
            }
            _ => self.access = Some(access),
        }
        self
    }

    /// The groups this mount's rules name.
    fn named_groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self
            .access
            .iter()
            .flat_map(|access| access.named_groups().iter().cloned())
            .collect();
        if let MountKind::Directory(directory) = &self.kind {
            groups.extend(directory.access.named_groups());
        }
        groups
    }

    /// Whether this mount has access rules.
    fn has_rules(&self) -> bool {
        let directory = matches!(&self.kind, MountKind::Directory(d) if d.access.is_set());
        directory || self.access.as_ref().is_some_and(|access| !access.is_open())
    }

    fn into_service(
        self,
        path: &MountPath,
        ctx: &mut BuildContext,
    ) -> Result<MountService, BuildError> {
        let service = match self.kind {
            MountKind::Gallery => {
                // Every gallery of the app lists all of it.
                let listed = ctx.listed.clone();
                let gallery = Gallery::new(path.as_str(), listed).into_mount_service();
                Ok(self.layers.apply(gallery))
            }
            MountKind::Service(service) => Ok(self.layers.apply(service)),
            MountKind::Directory(directory) => ctx.directory(path, directory, self.layers),
            MountKind::Notebook(root) => ctx.notebook(path, root, Mode::Run, &self.layers),
            MountKind::Edit(root) => ctx.notebook(path, root, Mode::Edit, &self.layers),
        }?;
        // The rules come first: a refused user reaches neither the layers nor the backend.
        Ok(match self.access.filter(|access| !access.is_open()) {
            Some(access) => access::guard(Arc::new(access), path.to_string(), service),
            None => service,
        })
    }
}

impl From<DirectoryMount> for Mount {
    fn from(mut directory: DirectoryMount) -> Self {
        let layers = std::mem::take(&mut directory.layers);
        Self {
            kind: MountKind::Directory(directory),
            layers,
            access: None,
        }
    }
}

/// Inserts the [`NotebookFile`] extension before `service` (a notebook in its layers) runs.
fn with_notebook_file(file: NotebookFile, service: MountService) -> MountService {
    MountService::from_body_service(service.map_request(move |mut req: Request<Body>| {
        req.extensions_mut().insert(file.clone());
        req
    }))
}

/// State that exists while `build()` runs.
struct BuildContext {
    options: Option<NotebookOptions>,
    backends: Option<Arc<Backends>>,
    /// What a gallery lists: the app's notebooks and directories.
    listed: Vec<Listed>,
}

/// What a gallery of `mounts` lists: each notebook app, and each directory's notebooks.
fn gallery_listing(mounts: &[(String, Mount)]) -> Vec<Listed> {
    mounts
        .iter()
        .filter_map(|(raw, mount)| {
            // An invalid path fails the build in its own turn.
            let path = MountPath::parse(raw).ok()?.as_str().to_owned();
            match &mount.kind {
                MountKind::Notebook(root) => Some(Listed::App {
                    path,
                    name: root.file_stem()?.to_string_lossy().into_owned(),
                    access: mount.access.clone().map(Arc::new),
                }),
                MountKind::Directory(directory) => Some(Listed::Directory {
                    path,
                    directory: std::path::absolute(&directory.directory).ok()?,
                    rules: directory.access.clone(),
                    validate: directory.validate.clone(),
                }),
                MountKind::Service(_) | MountKind::Edit(_) | MountKind::Gallery => None,
            }
        })
        .collect()
}

impl BuildContext {
    /// A service for the notebook file `root`, with its backend registered, wrapped in
    /// `layers`, which see the [`NotebookFile`] extension.
    fn notebook(
        &mut self,
        path: &MountPath,
        root: PathBuf,
        mode: Mode,
        layers: &Layers,
    ) -> Result<MountService, BuildError> {
        let notebook = std::fs::canonicalize(&root)
            .ok()
            .filter(|p| p.is_file())
            .ok_or(BuildError::NotebookNotFound { path: root })?;
        let backend = self.backends()?.add(
            (&path.to_string(), &path.to_string()),
            notebook.clone(),
            mode,
        );
        let service = NotebookService::new(backend).into_mount_service();
        Ok(with_notebook_file(
            NotebookFile(notebook),
            layers.apply(service),
        ))
    }

    /// The backends registry, created with the first notebook mount.
    fn backends(&mut self) -> Result<Arc<Backends>, BuildError> {
        if let Some(backends) = &self.backends {
            return Ok(backends.clone());
        }
        let backends = Backends::new(self.options.take().unwrap_or_default())?;
        self.backends = Some(backends.clone());
        Ok(backends)
    }

    /// A service for the notebook directory `mount`, whose notebooks are wrapped in `layers`.
    fn directory(
        &mut self,
        path: &MountPath,
        mount: DirectoryMount,
        layers: Layers,
    ) -> Result<MountService, BuildError> {
        if path.is_root() {
            return Err(BuildError::InvalidMountPath {
                path: path.to_string(),
                reason: "a notebook directory needs its own path, such as \"/apps\"",
            });
        }
        let is_dir = std::fs::metadata(&mount.directory).is_ok_and(|m| m.is_dir());
        let directory = std::path::absolute(&mount.directory)
            .ok()
            .filter(|_| is_dir)
            .ok_or_else(|| BuildError::DirectoryNotFound {
                path: mount.directory.clone(),
            })?;
        let backends = self.backends()?;
        let service = DirectoryService::new(path.to_string(), directory, mount, layers, backends);
        Ok(service.into_mount_service())
    }
}

/// Collects mounts and options; [`build`](AppBuilder::build) turns them into a
/// [`MarimoService`]. Created by [`create_app`].
#[derive(Default)]
#[must_use = "an AppBuilder does nothing until `.build()` is called"]
pub struct AppBuilder {
    mounts: Vec<(String, Mount)>,
    layers: Layers,
    notebook: NotebookOptions,
    auth: Option<AuthLayer>,
    /// The `x-marimo-rs-replica` response header, as given (checked by `build`).
    replica_id: Option<String>,
    /// Origins allowed besides the request's own, as given (checked by `build`).
    allowed_origins: Vec<String>,
    /// Host names answered besides the loopback ones, as given (checked by `build`).
    allowed_hosts: Vec<String>,
    trust_forwarded: bool,
    metrics: Option<Metrics>,
    metrics_token: Option<Token>,
    admin: Option<Admin>,
    access_log: Option<AccessLog>,
}

impl std::fmt::Debug for AppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&str> = self.mounts.iter().map(|(path, _)| path.as_str()).collect();
        f.debug_struct("AppBuilder")
            .field("mounts", &paths)
            .finish_non_exhaustive()
    }
}

impl AppBuilder {
    /// Mounts `mount` at `path`: `""` or `"/"` for the root, otherwise `/a` or `/a/b`.
    ///
    /// Paths are checked by [`build`](AppBuilder::build). A request for `/a` is redirected
    /// (`307`) to `/a/`, keeping the query string; `/a/` and `/a/rest…` reach the mount as `/`
    /// and `/rest…`. The longest matching prefix wins, and the root mount only gets what no
    /// other mount matches, whatever the order of the calls.
    ///
    /// `mount` is a [`Mount`] or a [`DirectoryMount`].
    pub fn mount(mut self, path: &str, mount: impl Into<Mount>) -> Self {
        self.mounts.push((path.to_owned(), mount.into()));
        self
    }

    /// Serves every marimo notebook in `directory` under `path`, found at request time, like
    /// marimo's `create_asgi_app().with_dynamic_directory(path=…, directory=…)`: shorthand for
    /// `mount(path, Mount::directory(directory))`; use that form for a validate callback,
    /// per-notebook layers or the backend limit (see [`DirectoryMount`]).
    ///
    /// With `path` `/apps`, `/apps/sales/` serves `directory/sales.py`, `/apps/team/q3/`
    /// serves `directory/team/q3.py` (the longest match wins), `/apps/sales` redirects to
    /// `sales/` and `/apps/` lists the notebooks. Files added later are served without a
    /// restart; a deleted file answers `404` and its backend stops. Each notebook gets its own
    /// backend on its first request; at most 16 run at once (the least recently used one
    /// without an open WebSocket is stopped to make room).
    ///
    /// Never served: anything outside `directory` (`..` in any spelling, absolute paths,
    /// symlinks leading out), names starting with `_` or `.` anywhere in the path, files that
    /// are not marimo notebooks (`.py` with `import marimo` and `marimo.App`).
    ///
    /// [`build`](AppBuilder::build) fails if `path` is the root (`""` or `"/"`) or
    /// `directory` is not an existing directory.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_dynamic_directory("/apps", "examples/notebooks")
    ///     .build()?;
    /// // GET /apps/intro/ serves examples/notebooks/intro.py; GET /apps/ lists it.
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn with_dynamic_directory(self, path: &str, directory: impl Into<PathBuf>) -> Self {
        self.mount(path, Mount::directory(directory))
    }

    /// Mounts any tower service at `path`: shorthand for `mount(path, Mount::service(service))`.
    pub fn with_service(self, path: &str, service: impl IntoMountService) -> Self {
        self.mount(path, Mount::service(service))
    }

    /// Serves the marimo notebook file `root` at `path`: shorthand for
    /// `mount(path, Mount::app(root))`. Like marimo's `create_asgi_app().with_app(path=…,
    /// root=…)`; the page is at `path/` (with the trailing slash).
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_app("/intro", "examples/notebooks/intro.py")
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn with_app(self, path: &str, root: impl Into<PathBuf>) -> Self {
        self.mount(path, Mount::app(root))
    }

    /// Serves a page at `path` that lists every notebook this app serves: each notebook mount
    /// ([`Mount::app`], by file name) and each notebook of its directories
    /// ([`Mount::directory`], found when the page is asked for, as the directory's validate
    /// callback allows), like the gallery of `marimo run folder another.py`. Links are
    /// relative, so the page works under any prefix. Only `path/` itself is served: the rest
    /// of `path/…` is `404` (mount the gallery at the root to list the notebooks at `/`).
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_app("/intro", "examples/notebooks/intro.py")
    ///     .with_dynamic_directory("/more", "examples/notebooks")
    ///     .with_gallery("/")
    ///     .build()?;
    /// // GET / links to intro/ and more/intro/.
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn with_gallery(self, path: &str) -> Self {
        self.mount(
            path,
            Mount {
                kind: MountKind::Gallery,
                layers: Layers::default(),
                access: None,
            },
        )
    }

    /// The Python interpreter for notebook backends (it must have marimo). Without it:
    /// `MARIMO_RS_PYTHON`, then a managed virtualenv, then `python3` on `PATH`.
    pub fn python(mut self, python: impl Into<PathBuf>) -> Self {
        self.notebook.python = Some(python.into());
        self
    }

    /// marimo's `quiet`: suppress the backends' standard output (default `true`).
    pub fn quiet(mut self, quiet: bool) -> Self {
        self.notebook.marimo.quiet = quiet;
        self
    }

    /// marimo's `include_code`: let viewers see the notebook's code (default `false`).
    pub fn include_code(mut self, include: bool) -> Self {
        self.notebook.marimo.include_code = include;
        self
    }

    /// marimo's `session_ttl`: how long a browser session's kernel survives after its
    /// WebSocket closes (whole seconds). By default 120 s for apps and forever for
    /// [editors](Mount::edit), as in marimo.
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.notebook.marimo.session_ttl = Some(ttl.as_secs());
        self
    }

    /// marimo's `asset_url`: load the frontend from this URL (may contain `{version}`).
    pub fn asset_url(mut self, url: impl Into<String>) -> Self {
        self.notebook.marimo.asset_url = Some(url.into());
        self
    }

    /// marimo's `html_head`: HTML injected into the `<head>` of every notebook page.
    pub fn html_head(mut self, html: impl Into<String>) -> Self {
        self.notebook.marimo.html_head = Some(html.into());
        self
    }

    /// marimo's `show_tracebacks` (default `false`). When on, the `503` page of a notebook
    /// that could not start also shows every client why (the reason and the backend's stderr
    /// tail); when off, only a client on this machine sees it. The log always has it.
    pub fn show_tracebacks(mut self, show: bool) -> Self {
        self.notebook.marimo.show_tracebacks = show;
        self
    }

    /// marimo's `redirect_console_to_browser` (default `false`).
    pub fn redirect_console_to_browser(mut self, redirect: bool) -> Self {
        self.notebook.marimo.redirect_console_to_browser = redirect;
        self
    }

    /// marimo's `skew_protection` for [apps](Mount::app) (default `false`): POSTs need the
    /// page's `Marimo-Server-Token` header. [Editors](Mount::edit) always have it on, as
    /// `marimo edit` does.
    pub fn skew_protection(mut self, protect: bool) -> Self {
        self.notebook.marimo.skew_protection = protect;
        self
    }

    /// Caps the memory of each notebook backend at `bytes` (off by default). A notebook that
    /// allocates past it does not take the machine's memory: its backend ends, its users are
    /// told "This notebook ran out of memory (limit 2 GiB)" (the page, API calls and open
    /// pages, which reload into that page), every other notebook and the gateway keep
    /// serving, and the backend restarts (after 0.5 s, longer while it keeps happening). The
    /// event is logged and counted ([`MarimoService::out_of_memory_count`]).
    ///
    /// Each backend process gets the limit as `RLIMIT_DATA`, inherited by the processes it
    /// starts (each editor kernel has its own). In run mode a `MemoryError` in any session
    /// ends the backend, as the sessions share its memory; in the editor it is the cell's
    /// error, as in marimo. `RLIMIT_DATA` counts memory reserved, not only used: an idle
    /// backend takes about 64 MiB of it (less fails the start, with a message that says to
    /// raise the limit), and each open run-mode session about 25 MiB more (three threads with
    /// 8 MiB stacks); past that, a new session's kernel cannot start (marimo shows that
    /// browser its "kernel stopped" banner) while the others go on, so pair it with
    /// [`max_sessions`](Self::max_sessions). Where this process may create cgroup v2 groups
    /// with the memory controller, each backend also runs in its own group with `memory.max`
    /// set to `bytes`, which counts its resident memory, kernels included, and whose OOM
    /// killer ends it past the limit.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_app("/", "examples/notebooks/intro.py")
    ///     .memory_limit(2 << 30) // 2 GiB
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.notebook.run.memory_limit = Some(bytes);
        self
    }

    /// At most `max` concurrent marimo sessions (browser tabs with a kernel) per notebook (no
    /// cap by default). Over it, the notebook's page and its kernel WebSocket handshake get
    /// `503` with `Retry-After` and a page that says so and reloads by itself. A session
    /// counts while its WebSocket is open; a browser reconnecting to a session the backend
    /// still holds is never refused. `0` refuses every new session.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_app("/", "examples/notebooks/intro.py")
    ///     .max_sessions(20)
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.notebook.run.max_sessions = Some(max);
        self
    }

    /// marimo's `--watch` (off by default): when an app's notebook file changes (checked every
    /// second), its open pages are told to reload and its backend restarts with the new code;
    /// a backend that failed is tried again at once. The editor ([`Mount::edit`]) reloads the
    /// file in place, as `marimo edit --watch` does.
    pub fn watch(mut self, watch: bool) -> Self {
        self.notebook.run.watch = watch;
        self
    }

    /// The arguments notebooks see, as after `--` on marimo's command line (`marimo run
    /// notebook.py -- --size 10`): `mo.cli_args()` parses them as marimo does (`{"size":
    /// 10}`), `sys.argv` is the notebook's path followed by them.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_app("/", "examples/notebooks/intro.py")
    ///     .cli_args(["--size", "10"])
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn cli_args<I, T>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.notebook.run.argv = args.into_iter().map(Into::into).collect();
        self
    }

    /// Start every notebook backend when the service is built (inside a Tokio runtime) instead
    /// of on its first request. See also [`MarimoService::start`].
    pub fn eager_start(mut self, eager: bool) -> Self {
        self.notebook.eager = eager;
        self
    }

    /// Stop a backend after this long with no request and no open WebSocket; the next
    /// request starts it again. Off by default.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.notebook.idle_timeout = Some(timeout);
        self
    }

    /// How many Python processes wait, with marimo and uvicorn already imported, to become a
    /// notebook's backend (default 1; 0 turns warm starts off). Each takes about 65 MB
    /// of memory (resident, measured with marimo 0.25.2).
    ///
    /// A notebook started from a waiting process (a directory notebook opened for the first
    /// time, a lazily started or restarted [app](Mount::app)) is ready in tens of milliseconds
    /// instead of the 1–2 s a fresh Python takes to import marimo. The pool fills after
    /// [`MarimoService::start`] and after each backend start, in the background; a waiting
    /// process that dies is replaced. Its processes stop with the service, like backends.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_dynamic_directory("/apps", "examples/notebooks")
    ///     // Up to three notebooks opened at once start warm.
    ///     .warm_pool(3)
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn warm_pool(mut self, size: usize) -> Self {
        self.notebook.warm_pool = size;
        self
    }

    /// How long a backend may take to listen on its socket after it is started (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.notebook.startup_timeout = timeout;
        self
    }

    /// How long an API or WebSocket request waits for a starting backend before `503`
    /// (default 30 s). Page loads never wait: they get a self-refreshing "starting" page.
    pub fn startup_wait(mut self, wait: Duration) -> Self {
        self.notebook.startup_wait = wait;
        self
    }

    /// How long the gateway waits for a notebook backend's response headers before answering
    /// `504` (default 30 s). Bodies (event streams, downloads) are not limited; a backend that
    /// stops answering altogether is also detected by a health watchdog and restarted.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.notebook.response_timeout = timeout;
        self
    }

    /// Wraps the whole built service in `layer`. Several calls apply in the order given, the
    /// first one outermost.
    pub fn layer<L: MountLayer>(mut self, layer: L) -> Self {
        self.layers.push(layer);
        self
    }

    /// Turns on token authentication with `token` and the default options, like
    /// `marimo run --token`: shorthand for `.auth(AuthLayer::new(token))`.
    ///
    /// Without `token` or [`auth`](AppBuilder::auth), the service is open.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// use marimo_rs::{create_app, Token};
    /// # let dashboard = tower::service_fn(|_req| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(marimo_rs::Body::empty()))
    /// # });
    ///
    /// let token = Token::random();
    /// let app = create_app()
    ///     .with_service("/dashboard", dashboard)
    ///     .token(token.clone())
    ///     .build()?;
    /// // Hand `token.expose_secret()` to the user, e.g. as `/dashboard/?access_token=…`.
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn token(self, token: Token) -> Self {
        self.auth(AuthLayer::new(token))
    }

    /// Turns on token authentication configured by `layer` (base path, cookie key, allowed
    /// origins…).
    ///
    /// It sits inside the layers given to [`layer`](AppBuilder::layer) and outside the mount
    /// table, so it sees every request, including those no mount matches, and its login form
    /// and [sign-in links](AuthLayer::sign_in_link) are at `/auth/login` and `/auth/sign-in`
    /// (which shadow a mount at `/auth`). `GET`/`HEAD` `{mount}/health` and `{mount}/healthz`
    /// of notebook mounts ([`Mount::app`], [`Mount::edit`]) need no credentials, as in marimo;
    /// those of notebook directories do (a probe would start a backend).
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// use marimo_rs::{create_app, AuthLayer, Token};
    /// # let dashboard = tower::service_fn(|_req| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(marimo_rs::Body::empty()))
    /// # });
    ///
    /// let auth = AuthLayer::new(Token::new("sup3rs3cr3t"))
    ///     .base_path("/marimo")
    ///     .cookie_key(&[42; 32]);
    /// let app = create_app().with_service("/dashboard", dashboard).auth(auth).build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn auth(mut self, layer: AuthLayer) -> Self {
        self.auth = Some(layer);
        self
    }

    /// Turns on sign-in with an OpenID Connect identity provider, with the default options:
    /// shorthand for `.auth(AuthLayer::oidc(config))` (see [`AuthLayer::oidc`]; use that form
    /// to keep the token methods on for scripts, or for whole-server access rules).
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// use marimo_rs::{create_app, OidcConfig};
    ///
    /// let app = create_app()
    ///     .with_app("/", "examples/notebooks/intro.py")
    ///     .oidc(
    ///         OidcConfig::new(
    ///             "https://login.microsoftonline.com/TENANT-ID/v2.0",
    ///             "CLIENT-ID",
    ///             "client secret",
    ///             "https://marimo.example.com",
    ///         )
    ///         .group_claims(["groups", "roles"]),
    ///     )
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn oidc(self, config: OidcConfig) -> Self {
        self.auth(AuthLayer::oidc(config))
    }

    /// Origins (`https://app.example.com`, `http://localhost:3000`) whose pages may use the
    /// notebooks besides pages of the service's own origin, like marimo's `allow_origins`:
    /// they may send state-changing requests, open WebSockets and read event streams, and
    /// read the answers (the gateway answers CORS for them, with credentials: preflights get
    /// `204`, responses `Access-Control-Allow-Origin: <that origin>`). Adds to the list given
    /// before, and to an [`AuthLayer::allowed_origins`] list: the auth layer and every
    /// notebook service use the union.
    ///
    /// Every other origin is refused such requests (`403`), in the auth layer and in each
    /// notebook service, so mounts without the gateway's auth are guarded too; no other
    /// response carries CORS headers (marimo's `Access-Control-Allow-Origin: *` is removed).
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_app("/", "examples/notebooks/intro.py")
    ///     .allowed_origins(["https://dashboard.example.com"])
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    ///
    /// [`build`](AppBuilder::build) fails with [`BuildError::InvalidOrigin`] if an entry is
    /// not `scheme://host[:port]`.
    pub fn allowed_origins<I, T>(mut self, origins: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.allowed_origins
            .extend(origins.into_iter().map(Into::into));
        self
    }

    /// Host names the service answers besides `localhost` and IP addresses, against DNS
    /// rebinding: `marimo.example.com`, or `gw` for a name in `/etc/hosts`. Adds to the list
    /// given before.
    ///
    /// A page on a name the attacker controls, re-pointed at this machine's address, is
    /// same-origin with itself; only its `Host` header tells. So when the service is reached
    /// through a listener bound to a loopback address ([`serve`](crate::serve()) marks each
    /// request with its [`LocalAddr`](crate::LocalAddr)), a request whose `Host` is not
    /// `localhost`, an IP address or an allowed name gets `403`, any port. On other addresses
    /// the check is on once names are allowed. Behind a reverse proxy whose forwarded
    /// headers are trusted ([`trust_forwarded_headers`](Self::trust_forwarded_headers)),
    /// `X-Forwarded-Host` is the name checked.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_app("/", "examples/notebooks/intro.py")
    ///     .allowed_hosts(["marimo.example.com"])
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    ///
    /// [`build`](AppBuilder::build) fails with [`BuildError::InvalidHost`] if an entry is not
    /// a DNS name (no scheme, no port; IP addresses are always answered).
    pub fn allowed_hosts<I, T>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.allowed_hosts.extend(names.into_iter().map(Into::into));
        self
    }

    /// Believes `X-Forwarded-Proto` and `X-Forwarded-Host` for the origin and `Host` checks
    /// (and the auth layer's `Secure` cookies: [`AuthLayer::trust_forwarded_headers`], which
    /// turns this on too). Only behind a reverse proxy that sets these headers itself, with
    /// clients unable to reach the service except through it. Off by default.
    pub fn trust_forwarded_headers(mut self, trust: bool) -> Self {
        self.trust_forwarded = trust;
        self
    }

    /// Adds `x-marimo-rs-replica: id` to every response, so that behind a load balancer one
    /// can tell which replica answered (`curl -sI …`, the browser's network tab). Pick a value
    /// that does not reveal more than you want, e.g. a hash of the host name. Off by default.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// let app = marimo_rs::create_app()
    ///     .with_app("/", "examples/notebooks/intro.py")
    ///     .replica_id("replica-1")
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    ///
    /// [`build`](AppBuilder::build) fails with [`BuildError::InvalidReplicaId`] if `id` is not
    /// a [`ReplicaId`] (1 to 64 visible ASCII characters).
    pub fn replica_id(mut self, id: impl Into<String>) -> Self {
        self.replica_id = Some(id.into());
        self
    }

    /// Records Prometheus metrics into `metrics` (see [`Metrics`] for the series) and answers
    /// `GET /metrics` at the service root with them, before the auth layer and without its
    /// credentials, to clients on this machine: a loopback peer whose request no proxy
    /// forwarded (no `Forwarded`, `X-Forwarded-For` or `X-Real-IP`). Others get `403`, or
    /// with a [`metrics_token`](Self::metrics_token) may present it. A mount at `/metrics`
    /// is shadowed.
    ///
    /// ```
    /// # fn main() -> Result<(), marimo_rs::BuildError> {
    /// use marimo_rs::{create_app, Metrics};
    ///
    /// let app = create_app()
    ///     .with_app("/intro", "examples/notebooks/intro.py")
    ///     .metrics(Metrics::new())
    ///     .build()?;
    /// # let _ = app;
    /// # Ok(()) }
    /// ```
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Lets clients that are not on this machine (a Prometheus server elsewhere) read
    /// `/metrics` with `Authorization: Bearer TOKEN`. A wrong token counts against the
    /// [login limit](AuthLayer::login_limit) like any wrong credential. Needs
    /// [`metrics`](Self::metrics).
    pub fn metrics_token(mut self, token: Token) -> Self {
        self.metrics_token = Some(token);
        self
    }

    /// Serves the admin page at `{root}/_admin/` (see [`Admin`]: who may open it, what it
    /// shows). Off by default. A mount at `/_admin` is shadowed.
    pub fn admin(mut self, admin: Admin) -> Self {
        self.admin = Some(admin);
        self
    }

    /// Writes one JSON line per request to `log` (see [`AccessLog`] for the fields, and for
    /// what is kept out of them), every request included: those the `Host` check, the auth
    /// layer or no mount answered too.
    pub fn access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// Checks every mount path and builds the service.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for an invalid or duplicate mount path, or a notebook file that does
    /// not exist. Problems with Python or the notebook's code show when its backend starts
    /// (see [`MarimoService::start`]).
    pub fn build(mut self) -> Result<MarimoService, BuildError> {
        let (policy, hosts) = self.guards()?;
        let replica = self.replica_id.take().map(ReplicaId::new).transpose()?;
        self.notebook.origin = policy.clone();
        self.notebook.metrics = self.metrics.clone();
        // Only a gallery reads the listing (its notebooks' paths are resolved now).
        let gallery = self
            .mounts
            .iter()
            .any(|(_, m)| matches!(m.kind, MountKind::Gallery));
        let mut ctx = BuildContext {
            options: Some(self.notebook),
            backends: None,
            listed: if gallery {
                gallery_listing(&self.mounts)
            } else {
                Vec::new()
            },
        };
        let mut table = Vec::with_capacity(self.mounts.len());
        let mut notebooks = Vec::new();
        let mut mounts = Vec::with_capacity(self.mounts.len());
        // The `mount` label of each mount in table order (the router's indexes).
        let mut labels: Vec<Arc<str>> = Vec::with_capacity(self.mounts.len());
        let mut rule_groups = Vec::new();
        let mut rules = false;
        for (raw, mount) in self.mounts {
            let path = MountPath::parse(&raw)?;
            let shown = path.to_string();
            labels.push(Arc::from(shown.as_str()));
            mounts.push(MountInfo {
                path: shown,
                kind: mount.kind_name(),
            });
            if matches!(mount.kind, MountKind::Notebook(_) | MountKind::Edit(_)) {
                notebooks.push(path.as_str().to_owned());
            }
            rule_groups.extend(mount.named_groups());
            rules |= mount.has_rules();
            let service = mount.into_service(&path, &mut ctx)?;
            table.push((path, service));
        }
        let router = Router::new(table)?;
        let lookup: MountLookup = {
            let router = router.clone();
            Box::new(move |path| router.mount_index(path))
        };
        let mut routed = MountService::from_body_service(Health::new(router));
        if rules && self.auth.is_none() && self.layers.len() == 0 {
            tracing::warn!(
                "access rules are set but nothing signs users in (no AppBuilder::auth, \
                 ::oidc, ::token or ::layer): every request to those mounts will be refused"
            );
        }
        // Load balancers probe each notebook without credentials, as marimo allows.
        let auth = self.auth.map(|auth| {
            let auth = auth
                .with_origin_policy(policy.clone())
                .health_mounts(notebooks)
                .rule_groups(rules, rule_groups);
            match &self.metrics {
                Some(metrics) => auth.with_metrics(metrics.auth()),
                None => auth,
            }
        });
        let ops = (self.admin.is_some() || self.metrics.is_some()).then(|| {
            Arc::new(Ops {
                admin: self.admin.clone(),
                metrics: self.metrics.clone(),
                metrics_token: self.metrics_token.clone(),
                backends: ctx.backends.clone(),
                mounts,
                auth: auth.clone(),
                limit: auth
                    .clone()
                    .unwrap_or_else(|| AuthLayer::new(Token::random())),
                origin: policy.clone(),
            })
        });
        if let Some(ops) = ops
            .as_ref()
            .filter(|_| self.admin.as_ref().is_some_and(Admin::has_users))
        {
            routed = MountService::from_body_service(UserGate::new(Arc::clone(ops), routed));
        }
        if self.access_log.is_some() {
            // Past the auth layer: the user it attached goes into the access log.
            routed = MountService::from_body_service(ServiceExt::<Request<Body>>::map_request(
                routed,
                |req: Request<Body>| {
                    note_user(&req);
                    req
                },
            ));
        }
        let mut guarded = match &auth {
            Some(auth) => MountService::from_body_service(auth.layer(routed)),
            None => routed,
        };
        if let Some(ops) = ops {
            guarded = MountService::from_body_service(Gate::new(ops, guarded));
        }
        if let (Some(metrics), Some(backends)) = (&self.metrics, &ctx.backends) {
            admin::watch_backends(metrics, backends);
        }
        let observer = (self.metrics.is_some() || self.access_log.is_some()).then(|| {
            Arc::new(Observer::new(
                self.metrics.clone(),
                self.access_log.clone(),
                labels,
                lookup,
                self.admin.is_some(),
            ))
        });
        let mut service = self.layers.apply(guarded);
        if let Some(replica) = replica {
            let value = replica.header_value();
            let named = ServiceExt::<Request<Body>>::map_response(service, move |mut response| {
                response.headers_mut().insert(REPLICA_HEADER, value.clone());
                response
            });
            service = MountService::from_body_service(named);
        }
        if let Some(backends) = &ctx.backends {
            backends.start_eager();
        }
        Ok(MarimoService {
            inner: service,
            backends: ctx.backends,
            hosts: Arc::new(hosts),
            observer,
        })
    }

    /// The origin policy shared by the auth layer and the notebook services (this builder's
    /// allowed origins and the auth layer's), and the `Host` check.
    fn guards(&self) -> Result<(origin::Policy, HostPolicy), BuildError> {
        let mut policy = self
            .auth
            .as_ref()
            .map(|auth| auth.origin_policy().clone())
            .unwrap_or_default();
        let origins = self
            .allowed_origins
            .iter()
            .map(|origin| {
                Origin::parse(origin).ok_or_else(|| BuildError::InvalidOrigin {
                    origin: origin.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        policy.allow(origins);
        if self.trust_forwarded {
            policy.set_trust_forwarded(true);
        }
        let names = self
            .allowed_hosts
            .iter()
            .map(|name| {
                host::check_name(name).map_err(|reason| BuildError::InvalidHost {
                    host: name.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hosts = HostPolicy::new(names, policy.clone());
        Ok((policy, hosts))
    }
}

/// The service built by [`AppBuilder::build`].
///
/// `Clone + Send + Sync + 'static`, with `Error = Infallible`: give it to hyper (see
/// [`serve`](crate::serve())), to `axum::Router::nest_service` or `fallback_service`, or wrap
/// it in your own tower layers. It accepts any request body of [`Bytes`] chunks.
///
/// Before anything else it checks the `Host` against DNS rebinding (see
/// [`AppBuilder::allowed_hosts`]): served by [`serve`](crate::serve()) on a loopback address,
/// or with allowed host names, a request for another name gets `403`.
#[derive(Clone)]
pub struct MarimoService {
    inner: MountService,
    backends: Option<Arc<Backends>>,
    /// Checked before anything else (DNS rebinding).
    hosts: Arc<HostPolicy>,
    /// The request metrics and the access log, if on: around everything else.
    observer: Option<Arc<Observer>>,
}

impl MarimoService {
    /// Finds (or installs) Python with marimo and starts every notebook backend now, waiting
    /// until each is ready or has failed; then fills the [warm pool](AppBuilder::warm_pool) in
    /// the background. Without it, backends start on their first request.
    ///
    /// # Errors
    ///
    /// [`NotebookError`] when no Python with marimo can be found or installed. A notebook
    /// that fails to start is not an error here: its mount answers `503` with the reason.
    pub async fn start(&self) -> Result<(), NotebookError> {
        match &self.backends {
            Some(backends) => backends.start_all().await,
            None => Ok(()),
        }
    }

    /// Stops every notebook backend (SIGTERM, then SIGKILL after a grace period) and the warm
    /// pool's processes, and waits until the processes are gone and their sockets removed. Backends do not restart
    /// afterwards. Dropping the last clone of the service also stops them, without waiting.
    pub async fn shutdown(&self) {
        if let Some(backends) = &self.backends {
            backends.shutdown().await;
        }
    }

    /// Process ids of the notebook backends running now.
    pub fn backend_pids(&self) -> Vec<u32> {
        self.backends
            .as_ref()
            .map(|backends| backends.pids())
            .unwrap_or_default()
    }

    /// How many times a notebook backend ran out of memory (see
    /// [`AppBuilder::memory_limit`]) and was restarted, since the service was built.
    pub fn out_of_memory_count(&self) -> u64 {
        self.backends
            .as_ref()
            .map(|backends| backends.out_of_memory_count())
            .unwrap_or_default()
    }

    /// How long no notebook has had a request or an open WebSocket: zero while one is open,
    /// the time since the service was built if nothing happened since. What `marimo edit
    /// --timeout` measures to stop a server nobody uses; `None` without notebooks.
    pub fn idle_for(&self) -> Option<Duration> {
        self.backends
            .as_ref()
            .and_then(|backends| backends.idle_for())
    }

    /// The private directory (mode 0700) that holds the backends' Unix sockets, if this
    /// service has notebooks.
    pub fn socket_dir(&self) -> Option<&std::path::Path> {
        self.backends.as_ref().map(|backends| backends.dir())
    }
}

impl std::fmt::Debug for MarimoService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MarimoService").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for MarimoService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = MountFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<B>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let observation = self
            .observer
            .as_ref()
            .map(|observer| observer.begin(&mut req));
        let future = match self.hosts.refuse(&req) {
            Some(refused) => MountFuture::ready(refused),
            None => self.inner.call(req),
        };
        match observation {
            Some(observation) => future.observed(observation),
            None => future,
        }
    }
}
