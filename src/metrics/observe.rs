//! Watching each request from its arrival to its answer, for the request metrics and the
//! access log: an [`Observer`] per built app, an [`Observation`] per request.
//!
//! The built service begins an observation before anything else runs (the `Host` check
//! included) and ends it when the response head is ready: the metrics are recorded then. With
//! an access log, the response body is wrapped to count its bytes, and the line is written when
//! the body ends (or is dropped: the client went away).
//!
//! Which mount a request is for is looked up by the observer itself, with the app's router
//! ([`Observer::new`] takes the lookup): a request refused by the auth layer counts for the
//! mount it was meant for, and nothing needs to travel back from inside. Without an access
//! log, an observation allocates nothing.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::{Frame, SizeHint};

use super::{MethodLabel, Metrics, GATEWAY_LABEL};
use crate::access_log::{redacted_target, AccessLog, Entry};
use crate::health::is_health_path;
use crate::request::RemoteAddr;
use crate::{Body, BoxError, User};

/// Where the metrics are served, at the service root.
pub(crate) const METRICS_PATH: &str = "/metrics";
/// Where the admin page is served, at the service root (and everything below it).
pub(crate) const ADMIN_PATH: &str = "/_admin";

/// Finds the mount (by its index in the app's mount table) a request path is for.
pub(crate) type MountLookup = Box<dyn Fn(&str) -> Option<usize> + Send + Sync>;

/// The request metrics and the access log of one built app.
pub(crate) struct Observer {
    metrics: Option<Metrics>,
    log: Option<AccessLog>,
    /// The `mount` label of each mount of the table, then [`GATEWAY_LABEL`].
    labels: Box<[Arc<str>]>,
    lookup: MountLookup,
    /// Whether `/_admin` is the gateway's own (else it may be a mount's; `/metrics` is the
    /// gateway's when it has metrics).
    serves_admin: bool,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl Observer {
    /// An observer for an app whose mounts have the `mount` labels `labels` (their paths as
    /// shown, `/` for the root, in table order), found by `lookup`.
    pub(crate) fn new(
        metrics: Option<Metrics>,
        log: Option<AccessLog>,
        mut labels: Vec<Arc<str>>,
        lookup: MountLookup,
        serves_admin: bool,
    ) -> Self {
        labels.push(Arc::from(GATEWAY_LABEL));
        let labels = labels.into_boxed_slice();
        Self {
            metrics,
            log,
            labels,
            lookup,
            serves_admin,
        }
    }

    /// Starts watching `req`.
    pub(crate) fn begin<B>(self: &Arc<Self>, req: &mut Request<B>) -> Observation {
        let path = req.uri().path();
        let gateway = is_health_path(path)
            || (self.metrics.is_some() && path == METRICS_PATH)
            || (self.serves_admin && is_admin_path(path));
        let mount = if gateway { None } else { (self.lookup)(path) };
        let log = self.log.as_ref().map(|_| {
            let user = Arc::new(OnceLock::new());
            req.extensions_mut().insert(LoggedUser(Arc::clone(&user)));
            Box::new(Pending {
                time: SystemTime::now(),
                client: req
                    .extensions()
                    .get::<RemoteAddr>()
                    .map(|addr| addr.0.ip().to_canonical()),
                method: req.method().clone(),
                path: redacted_target(req.uri().path(), req.uri().query()),
                user,
            })
        });
        Observation {
            observer: Arc::clone(self),
            started: Instant::now(),
            mount: mount.unwrap_or(self.labels.len() - 1),
            method: MethodLabel::of(req.method()),
            log,
        }
    }
}

/// Whether `path` is the admin page or below it.
pub(crate) fn is_admin_path(path: &str) -> bool {
    path.strip_prefix(ADMIN_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Where the access log learns who made the request: set by [`note_user`] once the gateway's
/// auth (or an app-wide layer) has attached a [`User`].
#[derive(Clone, Debug)]
struct LoggedUser(Arc<OnceLock<Box<str>>>);

/// Records the request's [`User`], if any, for its access log line.
pub(crate) fn note_user<B>(req: &Request<B>) {
    let extensions = req.extensions();
    if let (Some(LoggedUser(slot)), Some(user)) =
        (extensions.get::<LoggedUser>(), extensions.get::<User>())
    {
        let _ = slot.set(user.name().into());
    }
}

/// One request being watched.
#[derive(Debug)]
pub(crate) struct Observation {
    observer: Arc<Observer>,
    started: Instant,
    /// Index into the observer's labels.
    mount: usize,
    method: MethodLabel,
    /// What the access log line needs from the request (boxed: only with an access log).
    log: Option<Box<Pending>>,
}

#[derive(Debug)]
struct Pending {
    time: SystemTime,
    client: Option<IpAddr>,
    method: Method,
    path: String,
    user: Arc<OnceLock<Box<str>>>,
}

impl Observation {
    /// The response head is ready: records the metrics, and lets the access log follow the
    /// body.
    pub(crate) fn finish(self, response: Response<Body>) -> Response<Body> {
        let observer = &self.observer;
        if let Some(metrics) = &observer.metrics {
            metrics.record_request(
                &observer.labels[self.mount],
                self.method,
                response.status().as_u16(),
                self.started.elapsed(),
            );
        }
        let Some(pending) = self.log else {
            return response;
        };
        let status = response.status().as_u16();
        response.map(|inner| {
            Body::new(LoggedBody {
                inner,
                bytes: 0,
                line: Some(Line {
                    observer: self.observer,
                    started: self.started,
                    mount: self.mount,
                    status,
                    pending,
                }),
            })
        })
    }
}

/// A response body that writes the request's access log line when it ends.
struct LoggedBody {
    inner: Body,
    bytes: u64,
    /// Taken when written.
    line: Option<Line>,
}

struct Line {
    observer: Arc<Observer>,
    started: Instant,
    mount: usize,
    status: u16,
    pending: Box<Pending>,
}

impl LoggedBody {
    fn write_line(&mut self) {
        let Some(line) = self.line.take() else {
            return;
        };
        let Some(log) = &line.observer.log else {
            return;
        };
        let pending = &line.pending;
        log.write(&Entry {
            time: pending.time,
            client: pending.client,
            user: pending.user.get().map(|user| &**user),
            method: pending.method.as_str(),
            path: &pending.path,
            status: line.status,
            bytes: self.bytes,
            duration: line.started.elapsed(),
            mount: &line.observer.labels[line.mount],
        });
    }
}

impl http_body::Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None | Some(Err(_))) => self.write_line(),
            Poll::Pending => {}
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        // The body was not read to its end: the client went away, or the server answered
        // without reading it (an empty body hyper never polls).
        self.write_line();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_path_is_the_page_and_below_it_only() {
        assert!(is_admin_path("/_admin"));
        assert!(is_admin_path("/_admin/"));
        assert!(is_admin_path("/_admin/backends/1/restart"));
        assert!(!is_admin_path("/_administrator"));
        assert!(!is_admin_path("/x/_admin"));
    }
}
