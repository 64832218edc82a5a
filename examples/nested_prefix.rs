//! marimo as one part of a bigger axum app: notebooks under `/marimo`, next to the app's own
//! JSON API (`/api/health`, `/api/items`), with marimo's token auth on the notebooks only.
//!
//! Run it from the crate root:
//!
//! ```sh
//! cargo run --example nested_prefix              # PORT=0 picks a free port
//! MARIMO_TOKEN=sup3rs3cr3t cargo run --example nested_prefix
//! ```
//!
//! It prints `listening on …` and the notebook URL with `?access_token=…`. What to try:
//! - `curl http://127.0.0.1:3000/api/health` and
//!   `curl -H 'content-type: application/json' -d '{"name":"apples"}' http://127.0.0.1:3000/api/items`:
//!   the host's API, no token needed.
//! - `http://127.0.0.1:3000/marimo` redirects to `/marimo/`, keeping the query (so a
//!   `/marimo?access_token=…` link works too); without a token there a browser goes to the
//!   login form at `/marimo/auth/login`. The session cookie has `Path=/marimo`, and the
//!   notebook's API calls and WebSocket (`/marimo/ws`) work under the prefix.

use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::get;
use axum::{Json, Router};
use marimo_rs::{create_app, serve, shutdown_signal, AuthLayer, Token};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Serialize, Deserialize)]
struct Item {
    name: String,
}

type Items = Arc<Mutex<Vec<Item>>>;

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
    // The base path tells the auth layer where browsers see it: its redirects and the
    // session cookie's `Path` are under `/marimo`.
    let marimo = create_app()
        .with_app("", "examples/notebooks/intro.py")
        .auth(AuthLayer::new(token.clone()).base_path("/marimo"))
        .build()?;

    let api = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/items", get(list_items).post(add_item))
        .with_state(Items::default());
    let app = Router::new()
        .nest("/api", api)
        // Nested at `/marimo/` (with the slash), the service gets `/marimo/…` as `/…` and
        // leaves `/marimo` itself free. (`nest_service("/marimo", …)` would also hand it
        // `/marimo` as `/`, where the notebook's relative URLs would resolve against the host
        // root, and a route for `/marimo` would then conflict with the nest.)
        .route("/marimo", get(to_marimo))
        .nest_service("/marimo/", marimo.clone());

    let port = std::env::var("PORT").map_or(Ok(3000), |port| port.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}");
    println!(
        "open http://{addr}/marimo/?access_token={}",
        token.expose_secret()
    );
    serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    marimo.shutdown().await;
    Ok(())
}

/// `/marimo` → `/marimo/`, with the query: a link such as `/marimo?access_token=…` must
/// arrive with its token.
async fn to_marimo(RawQuery(query): RawQuery) -> Redirect {
    match query {
        Some(query) => Redirect::permanent(&format!("/marimo/?{query}")),
        None => Redirect::permanent("/marimo/"),
    }
}

async fn list_items(State(items): State<Items>) -> Json<Vec<Item>> {
    Json(items.lock().unwrap().clone())
}

async fn add_item(State(items): State<Items>, Json(item): Json<Item>) -> (StatusCode, Json<Item>) {
    items.lock().unwrap().push(item.clone());
    (StatusCode::CREATED, Json(item))
}
