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

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower::util::{Oneshot, ServiceExt};
use tower_service::Service;

use crate::error::BuildError;
use crate::mount::{MountPath, MountService};
use crate::request::enter_mount;
use crate::response::{bad_request, not_found, redirect};
use crate::Body;

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

    /// The index (in the table given to [`new`](Self::new)) of the mount a request for `path`
    /// is for, the bare prefix's redirect included; `None` when no mount takes it.
    pub(crate) fn mount_index(&self, path: &str) -> Option<usize> {
        match self.target(path)? {
            Target::AddSlash(index) | Target::Forward(index) => Some(index),
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
        if enter_mount(&mut req, prefix.as_str()).is_err() {
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

/// `307` from `/a/b?q` to `b/?q` (`prefix` is `/a/b`): relative, so it is right under any
/// outer prefix. Used by the router for mounts and by directory mounts for each notebook.
pub(crate) fn add_slash(prefix: &str, query: Option<&str>) -> Response<Body> {
    let last_segment = prefix.rsplit('/').next().unwrap_or_default();
    let location = match query {
        Some(query) => format!("{last_segment}/?{query}"),
        None => format!("{last_segment}/"),
    };
    redirect(StatusCode::TEMPORARY_REDIRECT, location)
}
