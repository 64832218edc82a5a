//! The mount table: routes a request to the mount with the longest matching prefix.
//!
//! Semantics follow marimo's `create_asgi_app` (Starlette `Mount`), with two fixes:
//!
//! - `/a` answers `307` to `a/` *keeping the query string* (marimo drops it). The `Location` is
//!   relative, so the redirect stays right when the whole service is nested under a host router.
//! - `/a/` and `/a/rest…` reach the mount with the prefix stripped (it sees `/` and `/rest…`);
//!   the root mount only receives what no other mount matched, whatever the order of `with_*`
//!   calls, and nested prefixes (`/a`, `/a/b`) go to the longest one.
//!
//! Matching is on the raw (still percent-encoded) path: `/app%31/` is *not* `/app1/`, so a
//! mount can't be reached under a second spelling. What follows the prefix is passed on
//! byte for byte.

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod fuzz;
mod path;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use tower::util::{BoxCloneSyncService, Oneshot, ServiceExt};
use tower_service::Service;

pub(crate) use self::path::MountPath;
use crate::error::BuildError;
use crate::Body;

/// What every mount is once built: a cloneable, type-erased service over [`Body`].
///
/// This is the service type a layer given to [`Mount::layer`](crate::Mount::layer) or
/// [`AppBuilder::layer`](crate::AppBuilder::layer) wraps, handy when writing such a layer with
/// `tower::layer::layer_fn`.
pub type MountService = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// The request URI as the client sent it to this service, before any mount prefix was stripped.
///
/// Inserted by the first (outermost) marimo_rs router a request passes through; inner routers
/// keep it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginalUri(pub Uri);

/// The path prefix stripped from a request before it reached the current mount.
///
/// `""` for the root mount, `/dashboard` for a mount at `/dashboard`. When marimo_rs services
/// are nested, prefixes add up (`/outer/inner`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MountPrefix(pub String);

impl MountPrefix {
    /// The prefix, `""` for the root.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Clone, Copy)]
enum Target {
    /// The bare prefix (`/a`): redirect to `/a/`.
    AddSlash(usize),
    /// `/a/` or `/a/rest`: forward with the prefix stripped.
    Forward(usize),
}

struct Table {
    matcher: matchit::Router<Target>,
    mounts: Vec<(MountPath, MountService)>,
    root: Option<usize>,
}

/// The service that dispatches to mounts. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub(crate) struct Router {
    table: Arc<Table>,
}

impl Router {
    /// Builds the routing table. Mount paths must be unique.
    pub(crate) fn new(mounts: Vec<(MountPath, MountService)>) -> Result<Self, BuildError> {
        let mut matcher = matchit::Router::new();
        let mut root = None;
        for (index, (path, _)) in mounts.iter().enumerate() {
            let duplicate = || BuildError::DuplicateMount {
                path: path.to_string(),
            };
            if path.is_root() {
                if root.replace(index).is_some() {
                    return Err(duplicate());
                }
                continue;
            }
            let prefix = path.as_str();
            // Mount paths contain no `{`, `}` or `*` (see `MountPath::parse`), so the only
            // matchit syntax here is the catch-all we add; an insert error is a duplicate.
            matcher
                .insert(prefix, Target::AddSlash(index))
                .map_err(|_| duplicate())?;
            matcher
                .insert(format!("{prefix}/"), Target::Forward(index))
                .map_err(|_| duplicate())?;
            matcher
                .insert(format!("{prefix}/{{*rest}}"), Target::Forward(index))
                .map_err(|_| duplicate())?;
        }
        Ok(Self {
            table: Arc::new(Table {
                matcher,
                mounts,
                root,
            }),
        })
    }

    /// Where a request for `path` goes: the mount with the longest prefix, else the root mount.
    fn target(&self, path: &str) -> Option<Target> {
        match self.table.matcher.at(path) {
            Ok(found) => Some(*found.value),
            Err(_) => self.table.root.map(Target::Forward),
        }
    }

    fn route(&self, mut req: Request<Body>) -> RouteFuture {
        let table = &self.table;
        let index = match self.target(req.uri().path()) {
            None => return RouteFuture::ready(not_found()),
            Some(Target::AddSlash(index)) => {
                return RouteFuture::ready(add_slash(
                    table.mounts[index].0.as_str(),
                    req.uri().query(),
                ))
            }
            Some(Target::Forward(index)) => index,
        };
        let (prefix, service) = &table.mounts[index];
        if strip_prefix(&mut req, prefix).is_err() {
            return RouteFuture::ready(bad_request());
        }
        RouteFuture::Mount {
            inner: service.clone().oneshot(req),
        }
    }
}

impl Service<Request<Body>> for Router {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = RouteFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Mount services are cloned per request and driven with `oneshot`, which waits for
        // their readiness; the router itself is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        self.route(req)
    }
}

pin_project_lite::pin_project! {
    /// Response future of the router.
    #[project = RouteFutureProj]
    pub(crate) enum RouteFuture {
        Ready { response: Option<Response<Body>> },
        Mount { #[pin] inner: Oneshot<MountService, Request<Body>> },
    }
}

impl RouteFuture {
    fn ready(response: Response<Body>) -> Self {
        Self::Ready {
            response: Some(response),
        }
    }
}

impl Future for RouteFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RouteFutureProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("RouteFuture polled after completion"))),
            RouteFutureProj::Mount { inner } => inner.poll(cx),
        }
    }
}

/// Rewrites the request for the mount: the path loses `prefix`, the original URI and the
/// accumulated prefix are recorded as extensions.
fn strip_prefix(req: &mut Request<Body>, prefix: &MountPath) -> Result<(), http::Error> {
    let original = req.uri().clone();
    let prefix = prefix.as_str();
    if !prefix.is_empty() {
        let rest = &original.path()[prefix.len()..];
        let path_and_query = match original.query() {
            Some(query) => PathAndQuery::try_from(format!("{rest}?{query}")),
            None => PathAndQuery::try_from(rest),
        };
        let mut parts = original.clone().into_parts();
        parts.path_and_query = Some(path_and_query?);
        *req.uri_mut() = Uri::from_parts(parts).map_err(http::Error::from)?;
    }
    let extensions = req.extensions_mut();
    let outer = extensions
        .get::<MountPrefix>()
        .map(|p| p.0.as_str())
        .unwrap_or("");
    let combined = MountPrefix(format!("{outer}{prefix}"));
    extensions.insert(combined);
    if extensions.get::<OriginalUri>().is_none() {
        extensions.insert(OriginalUri(original));
    }
    Ok(())
}

/// `307` from `/a/b?q` to `b/?q` (`prefix` is `/a/b`): relative, so it is right under any
/// outer prefix. Used by the router for mounts and by directory mounts for each notebook.
pub(crate) fn add_slash(prefix: &str, query: Option<&str>) -> Response<Body> {
    let last_segment = prefix.rsplit('/').next().unwrap_or_default();
    let location = match query {
        Some(query) => format!("{last_segment}/?{query}"),
        None => format!("{last_segment}/"),
    };
    match HeaderValue::try_from(location) {
        Ok(location) => Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .expect("valid redirect response"),
        Err(_) => bad_request(),
    }
}

pub(crate) fn plain_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub(crate) fn not_found() -> Response<Body> {
    plain_response(StatusCode::NOT_FOUND, "Not Found")
}

fn bad_request() -> Response<Body> {
    plain_response(StatusCode::BAD_REQUEST, "Bad Request")
}
