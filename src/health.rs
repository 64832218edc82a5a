//! Gateway-level `GET /health` and `/healthz`: answered by the gateway itself, even when no
//! notebook backend is running (load balancer and Kubernetes probes). `{mount}/health` is not
//! intercepted and reaches the notebook's backend; like the root's, it needs no credentials
//! for a notebook mount (marimo's health endpoint has none), see [`is_mount_health_path`].

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::future::Either;
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use crate::response::{json, no_store};
use crate::Body;

/// Answers `/health` and `/healthz` at the service root; passes everything else to `S`.
#[derive(Clone, Debug)]
pub(crate) struct Health<S> {
    inner: S,
}

impl<S> Health<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

/// Whether `path` is one of the gateway's own health endpoints.
pub(crate) fn is_health_path(path: &str) -> bool {
    path == "/health" || path == "/healthz"
}

/// Whether `path` is exactly `{mount}/health` or `{mount}/healthz` for one of `mounts`
/// (normalised mount paths: `/a/b`, no trailing slash).
///
/// The raw path is compared byte for byte, as the router matches it: `/a/x/../health`,
/// `/a//health`, `/a/%68ealth` or `/a/health/` are not a health endpoint, and `/a/health`
/// always reaches the mount `/a` (a mount path never contains `%`, `.` or `..` segments).
pub(crate) fn is_mount_health_path(path: &str, mounts: &[String]) -> bool {
    let mount = path
        .strip_suffix("/health")
        .or_else(|| path.strip_suffix("/healthz"));
    mount.is_some_and(|mount| !mount.is_empty() && mounts.iter().any(|m| m == mount))
}

impl<S> Service<Request<Body>> for Health<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<std::future::Ready<Result<Response<Body>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let is_probe = matches!(*req.method(), Method::GET | Method::HEAD);
        if is_probe && is_health_path(req.uri().path()) {
            let response = no_store(json(StatusCode::OK, r#"{"status":"healthy"}"#));
            return Either::Left(std::future::ready(Ok(response)));
        }
        Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_health_paths_of_listed_mounts() {
        let mounts = ["/a".to_owned(), "/b/c".to_owned()];
        for open in ["/a/health", "/a/healthz", "/b/c/health", "/b/c/healthz"] {
            assert!(is_mount_health_path(open, &mounts), "{open}");
        }
        for closed in [
            "/health",
            "/a",
            "/a/",
            "/a/health/",
            "/a/healthzz",
            "/a/x/health",
            "/a/x/../health",
            "/a/./health",
            "/a//health",
            "/a/%68ealth",
            "/a/HEALTH",
            "/b/health",
            "/c/health",
            "/ab/health",
            "/health/../a/health/x",
        ] {
            assert!(!is_mount_health_path(closed, &mounts), "{closed}");
        }
        assert!(!is_mount_health_path("/health", &[String::new()]));
    }
}
