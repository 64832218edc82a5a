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

mod auth;
mod body;
mod builder;
mod directory;
mod error;
mod health;
mod host;
mod html;
mod notebook;
mod oidc;
mod proxy;
mod router;
mod serve;
mod user;

pub use auth::{Auth, AuthLayer, ResponseFuture as AuthResponseFuture, SecretError, Token};
pub use body::{Body, BoxError};
pub use builder::{create_app, AppBuilder, MarimoService, Mount, MountLayer};
pub use directory::{DirectoryMount, NotebookFile, Validation};
pub use error::BuildError;
pub use notebook::python::MARIMO_VERSION;
pub use notebook::NotebookError;
pub use router::{MountPrefix, MountService, OriginalUri};
pub use serve::{serve, shutdown_signal, LocalAddr, RemoteAddr, Serve};
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
