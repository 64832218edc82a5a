//! No framework: the built `MarimoService` served by hyper directly, with marimo's token auth.
//!
//! The accept loop below is what `marimo_rs::serve` does for you; write it yourself when you
//! need your own (TLS, socket options, connection limits…). It must use
//! `serve_connection_with_upgrades`, or notebook WebSockets cannot connect.
//!
//! Run it from the crate root:
//!
//! ```sh
//! cargo run --example hyper_server               # PORT=0 picks a free port
//! MARIMO_TOKEN=sup3rs3cr3t cargo run --example hyper_server
//! ```
//!
//! It prints `listening on …` and then the URL to open, with `?access_token=…` (a random token
//! unless `MARIMO_TOKEN` is set). What to try:
//! - The URL signs you in (a session cookie) and drops the token from the address bar.
//! - Without it, a browser gets marimo's login form and `curl -i http://127.0.0.1:2718/api/status`
//!   gets `401`; `curl -u alice:TOKEN …` is signed in as `alice`, which the notebook shows.
//! - Ctrl-C: open requests finish, then the notebook backends stop.

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use marimo_rs::{create_app, shutdown_signal, Token};
use tower::ServiceExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let token = match std::env::var("MARIMO_TOKEN") {
        Ok(token) => Token::new(token),
        Err(_) => Token::random(),
    };
    let app = create_app()
        .with_app("", "examples/notebooks/intro.py")
        .token(token.clone())
        .build()?;

    let port = std::env::var("PORT").map_or(Ok(2718), |port| port.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!("open http://{addr}/?access_token={}", token.expose_secret());

    let http = auto::Builder::new(TokioExecutor::new()); // HTTP/1.1 and HTTP/2
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        // hyper calls a `hyper::service::Service` with `&self`; a tower service wants `&mut
        // self` and `poll_ready` first, which `oneshot` on a clone does. (With hyper-util's
        // `service` feature, `TowerToHyperService::new(app.clone())` is the same.)
        let app = app.clone();
        // `RemoteAddr` is what the built-in login limiter keys on (marimo_rs::serve adds it).
        let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(marimo_rs::RemoteAddr(peer));
            app.clone().oneshot(req)
        });
        let connection = http
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection error");
            }
        });
    }

    // Stop accepting, let open requests finish (upgraded WebSockets are no longer tracked
    // by hyper: stopping the backends below closes them), then stop the notebooks.
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            tracing::warn!("connections still open after 10 s; closing them");
        }
    }
    app.shutdown().await;
    Ok(())
}
