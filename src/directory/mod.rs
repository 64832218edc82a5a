//! Dynamic directories: every marimo notebook in a folder, served without a restart, like
//! marimo's `create_asgi_app().with_dynamic_directory(...)`.
//!
//! A request for `{mount}/team/q3/…` is resolved at request time (see [`resolve`]) to
//! `directory/team/q3.py`, checked by the validate callback, then served by that file's
//! backend (the same supervised process as a `with_app` mount), started on its first request
//! and kept in the mount's [`cache`]: one per file, at most [`DirectoryMount::max_backends`]
//! at once (least recently used, WebSocket-free backends are stopped first), swept when the
//! file is deleted or now resolves elsewhere (a re-pointed directory symlink). `{mount}/` is
//! the [`index`] page.
//!
//! This file holds the configuration ([`DirectoryMount`], [`Validation`], [`NotebookFile`])
//! and the service that ties the pieces together.

mod cache;
mod gallery;
mod index;
mod resolve;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use tower::util::ServiceExt;

use self::cache::Cache;
pub(crate) use self::gallery::{Gallery, Listed};
use crate::access::{self, Access};
use crate::mount::{Layers, MountLayer, MountService};
use crate::notebook::Backends;
use crate::request::enter_mount;
use crate::response::{bad_request, not_found, plain, unavailable};
use crate::router::add_slash;
use crate::Body;

/// How many notebook backends a directory mount runs at once unless told otherwise.
pub(crate) const DEFAULT_MAX_BACKENDS: usize = 16;

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
    pub(crate) access: Rules,
}

/// A directory's access rules: for every notebook, and for some of them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Rules {
    /// For every notebook without rules of its own.
    all: Option<Arc<Access>>,
    /// `(path, rules)`: for the notebook file `path` (`sales.py`), or every notebook in the
    /// folder `path` (`team/`). The longest path that matches wins.
    notebooks: Vec<(String, Arc<Access>)>,
}

impl Rules {
    /// The rules for the notebook `relative` (e.g. `team/q3.py`).
    pub(crate) fn for_notebook(&self, relative: &Path) -> Option<&Access> {
        let relative = relative.to_str().unwrap_or_default();
        self.notebooks
            .iter()
            .filter(|(path, _)| match path.strip_suffix('/') {
                Some(folder) => relative
                    .strip_prefix(folder)
                    .is_some_and(|rest| rest.starts_with('/')),
                None => relative == path,
            })
            .max_by_key(|(path, _)| path.len())
            .map(|(_, access)| &**access)
            .or(self.all.as_deref())
    }

    /// Every group the rules name.
    pub(crate) fn named_groups(&self) -> Vec<String> {
        self.all
            .iter()
            .chain(self.notebooks.iter().map(|(_, access)| access))
            .flat_map(|access| access.named_groups().iter().cloned())
            .collect()
    }

    /// Whether there are any rules.
    pub(crate) fn is_set(&self) -> bool {
        self.all.is_some() || !self.notebooks.is_empty()
    }
}

impl fmt::Debug for DirectoryMount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectoryMount")
            .field("directory", &self.directory)
            .field("validate", &self.validate.is_some())
            .field("layers", &self.layers.len())
            .field("max_backends", &self.max_backends)
            .field("access", &self.access)
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
            access: Rules::default(),
        }
    }

    /// Who may open the notebooks of this directory (see [`Access`]): checked for every
    /// notebook request before the validate callback, and before a backend is started or
    /// touched; the index page lists only the notebooks the user may open. Notebooks with
    /// rules of their own ([`notebook_access`](Self::notebook_access)) follow those instead.
    /// Any signed-in user by default.
    ///
    /// ```
    /// use marimo_rs::{Access, Mount};
    ///
    /// let mount = Mount::directory("examples/apps")
    ///     .access(Access::signed_in().email_domains(["example.com"]))
    ///     .notebook_access("sales.py", Access::signed_in().groups(["sales"]))
    ///     .notebook_access("team/", Access::signed_in().groups(["team", "admins"]));
    /// # let _ = mount;
    /// ```
    pub fn access(mut self, access: Access) -> Self {
        self.access.all = Some(Arc::new(access));
        self
    }

    /// Who may open the notebook file `path` (relative to the directory: `sales.py`), or
    /// every notebook in the folder `path` (ending in `/`: `team/`), instead of the
    /// directory's [`access`](Self::access) rules. The longest matching path wins. Adds to
    /// the paths given before.
    pub fn notebook_access(mut self, path: impl Into<String>, access: Access) -> Self {
        let path = path.into().trim_start_matches('/').to_owned();
        self.access.notebooks.push((path, Arc::new(access)));
        self
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

/// What a directory mount becomes ([`into_mount_service`](Self::into_mount_service)).
pub(crate) struct DirectoryService {
    /// Absolute, symlinks kept (resolved again on every request).
    directory: PathBuf,
    /// Where it is mounted (for the audit log).
    mount: String,
    validate: Option<ValidateFn>,
    access: Rules,
    /// The running notebooks.
    cache: Arc<Cache>,
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
        let cache = Cache::new(
            mount.clone(),
            directory.clone(),
            layers,
            config.max_backends,
            backends,
        );
        Self {
            directory,
            mount,
            validate: config.validate,
            access: config.access,
            cache: Arc::new(cache),
        }
    }

    /// The mount service: every clone shares this directory's cache.
    pub(crate) fn into_mount_service(self) -> MountService {
        MountService::from_handler(self, |this, req| async move { this.handle(req).await })
    }

    /// Resolves the request to a notebook, validates it, then hands it to the notebook's
    /// service (started on first use).
    async fn handle(&self, req: Request<Body>) -> Response<Body> {
        self.cache.start_sweeping();
        if req.uri().path() == "/" {
            if let Some(all) = &self.access.all {
                if let Some(refused) = access::refuse(all, (&self.mount, ""), &req) {
                    return refused;
                }
            }
            return index::respond(&self.directory, &self.access, self.validate.as_ref(), req)
                .await;
        }
        let Some(found) = resolve::resolve(&self.directory, req.uri().path()) else {
            return not_found();
        };
        // The cache is looked at once: a running notebook was found to be one when it started.
        let running = self.cache.get(&found);
        // Only marimo notebooks exist here: a helper module is as absent as a missing file.
        if running.is_none() && !resolve::is_marimo_notebook(&found.canonical) {
            return not_found();
        }
        // A notebook starts only for a request the rules and the callback allowed.
        if let Some(rules) = self.access.for_notebook(&found.relative) {
            if let Some(refused) = access::refuse(rules, (&self.mount, &found.prefix), &req) {
                return refused;
            }
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
        let Some(service) = running.or_else(|| self.cache.start(&found)) else {
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
    use http::header;

    #[test]
    fn the_longest_notebook_path_picks_the_rules() {
        let mount = DirectoryMount::new("d".into())
            .access(Access::signed_in().users(["all"]))
            .notebook_access("team/", Access::signed_in().users(["team"]))
            .notebook_access("/team/q3.py", Access::signed_in().users(["q3"]))
            .notebook_access("sales.py", Access::signed_in().users(["sales"]));
        let who = |relative: &str| {
            let rules = mount.access.for_notebook(Path::new(relative)).unwrap();
            ["all", "team", "q3", "sales"]
                .into_iter()
                .find(|name| rules.allows(&crate::User::new(*name)))
        };
        assert_eq!(who("team/q3.py"), Some("q3"));
        assert_eq!(who("team/q4.py"), Some("team"));
        assert_eq!(who("team/deep/x.py"), Some("team"));
        assert_eq!(who("teams.py"), Some("all"));
        assert_eq!(who("sales.py"), Some("sales"));
        assert_eq!(who("other/sales.py"), Some("all"));
        assert_eq!(
            mount.access.named_groups(),
            Vec::<String>::new(),
            "no group named"
        );
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
