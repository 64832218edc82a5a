//! [`create_app`], [`AppBuilder`] and [`Mount`]: composing notebooks and services into one
//! [`MarimoService`].

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{Request, Response};
use tower::util::{BoxCloneSyncService, ServiceExt};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::BuildError;
use crate::router::{MountPath, MountService, Router};
use crate::{Body, BoxError};

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

/// A layer stored type-erased, so that one mount can hold several and reuse them.
type LayerFn = Arc<dyn Fn(MountService) -> MountService + Send + Sync>;

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
    layers: Vec<LayerFn>,
}

enum MountKind {
    Service(MountService),
}

impl std::fmt::Debug for Mount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            MountKind::Service(_) => "service",
        };
        f.debug_struct("Mount")
            .field("kind", &kind)
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl Mount {
    /// Mounts any tower service (the Rust analogue of mounting an ASGI app).
    ///
    /// The service receives requests with the mount prefix stripped; the original URI and the
    /// prefix are in the request extensions as [`OriginalUri`](crate::OriginalUri) and
    /// [`MountPrefix`](crate::MountPrefix). Its error type must be [`Infallible`], as for
    /// axum's `nest_service`: turn errors into responses first (e.g. with
    /// `axum::error_handling::HandleErrorLayer`).
    pub fn service<S, B>(service: S) -> Self
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
        Self {
            kind: MountKind::Service(box_service(service)),
            layers: Vec::new(),
        }
    }

    /// Wraps this mount, and only this mount, in `layer`.
    ///
    /// Layers apply in the order given: the first one is the outermost (it sees the request
    /// first and the response last), as with `tower::ServiceBuilder` and marimo's
    /// `middleware=[...]` list.
    pub fn layer<L, B>(mut self, layer: L) -> Self
    where
        L: Layer<MountService> + Send + Sync + 'static,
        L::Service: Service<Request<Body>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.layers
            .push(Arc::new(move |inner| box_service(layer.layer(inner))));
        self
    }

    fn into_service(self) -> MountService {
        let MountKind::Service(service) = self.kind;
        apply_layers(&self.layers, service)
    }
}

/// Wraps `service` so that `layers[0]` is outermost.
fn apply_layers(layers: &[LayerFn], service: MountService) -> MountService {
    layers
        .iter()
        .rev()
        .fold(service, |inner, layer| layer(inner))
}

/// Type-erases a service, converting its response body to [`Body`].
pub(crate) fn box_service<S, B>(service: S) -> MountService
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
    BoxCloneSyncService::new(service.map_response(|response: Response<B>| response.map(Body::new)))
}

/// Collects mounts and options; [`build`](AppBuilder::build) turns them into a
/// [`MarimoService`]. Created by [`create_app`].
#[derive(Default)]
#[must_use = "an AppBuilder does nothing until `.build()` is called"]
pub struct AppBuilder {
    mounts: Vec<(String, Mount)>,
    layers: Vec<LayerFn>,
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
    pub fn mount(mut self, path: &str, mount: Mount) -> Self {
        self.mounts.push((path.to_owned(), mount));
        self
    }

    /// Mounts any tower service at `path`: shorthand for `mount(path, Mount::service(service))`.
    pub fn with_service<S, B>(self, path: &str, service: S) -> Self
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
        self.mount(path, Mount::service(service))
    }

    /// Wraps the whole built service in `layer`. Several calls apply in the order given, the
    /// first one outermost.
    pub fn layer<L, B>(mut self, layer: L) -> Self
    where
        L: Layer<MountService> + Send + Sync + 'static,
        L::Service: Service<Request<Body>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Request<Body>>>::Future: Send + 'static,
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.layers
            .push(Arc::new(move |inner| box_service(layer.layer(inner))));
        self
    }

    /// Checks every mount path and builds the service.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for an invalid or duplicate mount path.
    pub fn build(self) -> Result<MarimoService, BuildError> {
        let mut table = Vec::with_capacity(self.mounts.len());
        for (raw, mount) in self.mounts {
            table.push((MountPath::parse(&raw)?, mount.into_service()));
        }
        let router = Router::new(table)?;
        let service = apply_layers(&self.layers, BoxCloneSyncService::new(router));
        Ok(MarimoService { inner: service })
    }
}

/// The service built by [`AppBuilder::build`].
///
/// `Clone + Send + Sync + 'static`, with `Error = Infallible`: give it to hyper (see
/// [`serve`](crate::serve())), to `axum::Router::nest_service` or `fallback_service`, or wrap
/// it in your own tower layers. It accepts any request body of [`Bytes`] chunks.
#[derive(Clone)]
pub struct MarimoService {
    inner: MountService,
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
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.inner.call(req.map(Body::new))
    }
}
