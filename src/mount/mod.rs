//! What a mount is once built: a [`MountService`], the [`MountLayer`]s around it, and the
//! [`MountPath`] it is mounted at.
//!
//! Every mount, whatever it serves (any tower service, a notebook, a directory of notebooks),
//! becomes one [`MountService`]: the crate's own type around tower's boxed, cloneable service,
//! as axum's `Route` is, so that tower's version is not part of this crate's API. A service
//! can be a mount when it is [`IntoMountService`].

mod path;

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::util::{BoxCloneSyncService, ServiceExt};
use tower_layer::Layer;
use tower_service::Service;

pub(crate) use self::path::MountPath;
use crate::body::{Body, BoxError};
use crate::metrics::observe::Observation;

/// A service that can be mounted: a tower `Service<Request<Body>>` that never fails (`Error =
/// Infallible`: turn errors into responses first, as for axum's `nest_service`), answers with
/// any body of [`Bytes`] chunks, and is `Clone + Send + Sync + 'static`.
///
/// Implemented for every such service (axum routers and handlers' services, `tower::service_fn`,
/// services wrapped in `tower_http` layers…); there is nothing to implement.
pub trait IntoMountService {
    /// Type-erases the service; its response body becomes [`Body`].
    fn into_mount_service(self) -> MountService;
}

impl<S, B> IntoMountService for S
where
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn into_mount_service(self) -> MountService {
        MountService(BoxCloneSyncService::new(
            self.map_response(|response: Response<B>| response.map(Body::new)),
        ))
    }
}

/// What every mount is once built: a cloneable, type-erased service over [`Body`].
///
/// This is the service a layer given to [`Mount::layer`](crate::Mount::layer),
/// [`DirectoryMount::layer`](crate::DirectoryMount::layer) or
/// [`AppBuilder::layer`](crate::AppBuilder::layer) wraps. It accepts requests with any body of
/// [`Bytes`] chunks, so axum middleware (`axum::middleware::from_fn`) and `tower_http` layers
/// wrap it as they are.
///
/// ```
/// use marimo_rs::{Body, MountService};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let hello = tower::service_fn(|_req| async {
///     Ok::<_, std::convert::Infallible>(http::Response::new(Body::from("hello")))
/// });
/// let service = MountService::new(hello);
/// let response = service.oneshot(http::Request::new(Body::empty())).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
#[derive(Clone)]
pub struct MountService(BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>);

impl MountService {
    /// Type-erases `service` (see [`IntoMountService`]).
    pub fn new(service: impl IntoMountService) -> Self {
        service.into_mount_service()
    }

    /// Type-erases a service that already answers with [`Body`], without the response
    /// conversion [`IntoMountService`] adds: the gateway's own services (the router, the auth
    /// layer around it, directories) skip a layer per request that way (20 ns of the 270 ns
    /// an unauthenticated request costs, `cargo bench --bench auth`).
    pub(crate) fn from_body_service<S>(service: S) -> Self
    where
        S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        MountService(BoxCloneSyncService::new(service))
    }

    /// A mount service that answers every request with `handle(state, req)`, `state` shared
    /// by every clone (a directory, the gallery).
    pub(crate) fn from_handler<T, F, Fut>(state: T, handle: F) -> Self
    where
        T: Send + Sync + 'static,
        F: Fn(Arc<T>, Request<Body>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let state = Arc::new(state);
        Self::from_body_service(tower::service_fn(move |req| {
            let answer = handle(Arc::clone(&state), req);
            async move { Ok::<_, Infallible>(answer.await) }
        }))
    }
}

impl fmt::Debug for MountService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountService").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for MountService
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = MountFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        MountFuture::new(self.0.call(req.map(Body::new)))
    }
}

/// The response future of a [`MountService`] (and of a built
/// [`MarimoService`](crate::MarimoService)).
pub struct MountFuture {
    inner: BoxFuture<'static, Result<Response<Body>, Infallible>>,
    /// The request metrics and access log of a built app, ended with the response head.
    observation: Option<Observation>,
}

impl MountFuture {
    fn new(inner: BoxFuture<'static, Result<Response<Body>, Infallible>>) -> Self {
        Self {
            inner,
            observation: None,
        }
    }

    /// A future that answers `response` at once.
    pub(crate) fn ready(response: Response<Body>) -> Self {
        Self::new(Box::pin(std::future::ready(Ok(response))))
    }

    /// Ends `observation` when the response is ready.
    pub(crate) fn observed(mut self, observation: Observation) -> Self {
        self.observation = Some(observation);
        self
    }
}

impl Future for MountFuture {
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(response) = std::task::ready!(self.inner.as_mut().poll(cx));
        Poll::Ready(Ok(match self.observation.take() {
            Some(observation) => observation.finish(response),
            None => response,
        }))
    }
}

impl fmt::Debug for MountFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountFuture").finish_non_exhaustive()
    }
}

/// A tower layer that can wrap a mount (or the whole app): any `Layer<MountService>` whose
/// service is [`IntoMountService`] (`tower_http` layers, `tower::ServiceBuilder` stacks,
/// `axum::middleware::from_fn`, `tower::layer::layer_fn`…). Implemented for every such layer;
/// there is nothing to implement.
pub trait MountLayer: Send + Sync + 'static {
    /// Wraps `inner`, erasing the resulting service's type.
    fn wrap(&self, inner: MountService) -> MountService;
}

impl<L> MountLayer for L
where
    L: Layer<MountService> + Send + Sync + 'static,
    L::Service: IntoMountService,
{
    fn wrap(&self, inner: MountService) -> MountService {
        self.layer(inner).into_mount_service()
    }
}

/// The layers of one mount, of each notebook of a directory, or of the whole app, in the order
/// given: the first is the outermost (it sees the request first and the response last), as
/// with `tower::ServiceBuilder` and marimo's `middleware=[...]`. Cheap to clone: a directory
/// applies the same layers to every notebook it starts.
#[derive(Clone, Default)]
pub(crate) struct Layers(Vec<Arc<dyn MountLayer>>);

impl Layers {
    /// Adds `layer` inside the ones given before.
    pub(crate) fn push(&mut self, layer: impl MountLayer) {
        self.0.push(Arc::new(layer));
    }

    /// How many layers there are.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Wraps `service` in every layer, the first one outermost.
    pub(crate) fn apply(&self, service: MountService) -> MountService {
        self.0
            .iter()
            .rev()
            .fold(service, |inner, layer| layer.wrap(inner))
    }
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} layer(s)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::middleware::{from_fn, Next};
    use http::{HeaderValue, StatusCode};

    /// A service that answers with the `x-seen` header it was given.
    fn echo() -> MountService {
        MountService::new(tower::service_fn(|req: Request<Body>| async move {
            let seen = req.headers().get("x-seen").cloned();
            let mut response = Response::new(Body::empty());
            if let Some(seen) = seen {
                response.headers_mut().insert("x-seen", seen);
            }
            Ok::<_, Infallible>(response)
        }))
    }

    #[tokio::test]
    async fn axum_middleware_wraps_a_mount_and_layers_nest_first_outermost() {
        async fn mark(mut req: axum::extract::Request, next: Next) -> axum::response::Response {
            let before = req.headers().get("x-seen").cloned();
            let mark = match before {
                Some(before) => format!("{},axum", before.to_str().unwrap_or_default()),
                None => "axum".to_owned(),
            };
            req.headers_mut()
                .insert("x-seen", HeaderValue::try_from(mark).expect("ASCII"));
            next.run(req).await
        }
        let outer = tower::layer::layer_fn(|inner: MountService| {
            tower::util::MapRequest::new(inner, |mut req: Request<Body>| {
                req.headers_mut()
                    .insert("x-seen", HeaderValue::from_static("outer"));
                req
            })
        });
        let mut layers = Layers::default();
        layers.push(outer);
        layers.push(from_fn(mark));
        assert_eq!(layers.len(), 2);
        let service = layers.apply(echo());
        let response = service
            .oneshot(Request::new(Body::empty()))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-seen"], "outer,axum");
    }

    #[tokio::test]
    async fn a_mount_accepts_any_request_body() {
        let body = http_body_util::Full::new(Bytes::from_static(b"x"));
        let response = echo()
            .oneshot(Request::new(body))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
