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
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub, missing_debug_implementations)]

// Layers, each importing only from the ones above it in this list (ARCHITECTURE.md):
// the leaves,
mod body;
mod error;
mod html;
mod sync;
mod user;
// the HTTP toolkit every service uses,
mod request;
mod response;
// building blocks,
mod health;
mod mount;
mod origin;
mod proxy;
mod replica;
mod serve;
// services,
mod host;
mod notebook;
mod router;
// services built on services,
mod auth;
mod directory;
// and the composition of them all.
mod builder;

pub use auth::{
    Auth, AuthLayer, ResponseFuture as AuthResponseFuture, SecretError, Token, TrustedProxy,
    TrustedProxyError,
};
pub use body::{Body, BoxError};
pub use builder::{create_app, AppBuilder, MarimoService, Mount};
pub use directory::{DirectoryMount, NotebookFile, Validation};
pub use error::BuildError;
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
