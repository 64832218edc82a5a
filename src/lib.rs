//! Serve real [marimo](https://marimo.io) notebooks from a Rust program.
//!
//! `marimo_rs` composes notebooks and any other tower services under one
//! [`tower::Service`](tower_service::Service), puts marimo's token authentication in front of
//! them, and runs each notebook in a supervised Python backend (marimo's own ASGI app served by
//! uvicorn on a private Unix socket) that it reverse-proxies to.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let app = marimo_rs::create_app()
//!     .with_app("/dashboard", "pages/dashboard.py")
//!     .with_app("", "pages/index.py")
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2718").await?;
//! marimo_rs::serve(listener, app)
//!     .with_graceful_shutdown(marimo_rs::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! See `ARCHITECTURE.md` for how a request flows through the modules.

// The modules in layers: each imports only from the layers before it in this list
// (ARCHITECTURE.md, "Layers").
// 0. Leaves: the body type, HTML escaping, replica names, the lock policy, the user, the
// audit log.
mod audit;
mod body;
mod html;
mod replica;
mod sync;
mod user;
// 1. The HTTP toolkit every service uses, and the build errors.
mod error;
mod request;
mod response;
// 2. Building blocks: mounts, access rules, the origin guard, health answers, the proxy,
// the server; the access log, then the metrics (which watch requests for both).
mod access;
mod access_log;
mod health;
mod metrics;
mod mount;
mod origin;
mod proxy;
mod serve;
// 3. Services: the Host check, notebooks, the router.
mod host;
mod notebook;
mod router;
// 4. Services built on services: token auth, notebook directories; the OpenID Connect
// relying party (it shares auth's rule for a safe `next` and its random source).
mod auth;
mod directory;
mod oidc;
// The operator endpoints: the admin page (backends, the login limit) and `/metrics`.
mod admin;
// 5. The composition of them all.
mod builder;

pub use access::Access;
pub use access_log::AccessLog;
pub use admin::Admin;
pub use auth::{
    Auth, AuthLayer, OidcConfig, OidcError, ProxyIdentity, ResponseFuture as AuthResponseFuture,
    SecretError, Token, TrustedProxy, TrustedProxyError,
};
pub use body::{Body, BoxError};
pub use builder::{create_app, AppBuilder, MarimoService, Mount};
pub use directory::{DirectoryMount, NotebookFile, Validation};
pub use error::BuildError;
pub use metrics::Metrics;
pub use mount::{IntoMountService, MountFuture, MountLayer, MountService};
pub use notebook::python::MARIMO_VERSION;
pub use notebook::NotebookError;
pub use replica::{ReplicaId, ReplicaIdError};
pub use request::{LocalAddr, MountPrefix, OriginalUri, RemoteAddr};
pub use serve::{serve, shutdown_signal, Serve};
pub use user::User;

/// Not API: entry points for the fuzz targets in `fuzz/` (and the proptests that share them).
/// Compiled only for tests and with the `fuzzing` feature; no stability promise of any kind.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::auth::fuzz::credentials;
    pub use crate::router::fuzz::{mount_path, router};
}

/// The README's Rust examples, compiled as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
