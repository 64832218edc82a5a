//! A folder of notebooks served as it is on disk (marimo's `with_dynamic_directory`), with a
//! validate callback that decides per user who may open which notebook.
//!
//! Run it from the crate root, then open <http://127.0.0.1:8002/>:
//!
//! ```sh
//! cargo run --example dynamic_directory          # PORT=0 picks a free port
//! ```
//!
//! `examples/apps/hello.py` is for everyone, `sales.py` for alice, `team/roadmap.py` for alice
//! and bob. Who you are is a demo stand-in for real auth (see the `axum_custom_login` and
//! `oauth2_jwt` examples): <http://127.0.0.1:8002/demo/as/bob> sets a cookie saying you are
//! bob, `/demo/as/alice` alice, `/demo/signout` nobody. What to try:
//! - `/apps/` lists only the notebooks you may open.
//! - As bob, `/apps/sales/` is `403`; signed out, it is `404`: anonymous visitors do not
//!   even learn that it exists.
//! - Add a notebook to `examples/apps/` (`cargo run -- new examples/apps/mine.py` or any
//!   marimo notebook): it is served at `/apps/mine/` without a restart.

use std::path::Path;

use axum::extract::{Path as UrlPath, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{from_fn, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use marimo_rs::{create_app, serve, shutdown_signal, Body, Mount, User, Validation};

/// Who may open which notebook (paths relative to the directory); any other notebook is
/// open to everyone.
const ACCESS: &[(&str, &[&str])] = &[
    ("sales.py", &["alice"]),
    ("team/roadmap.py", &["alice", "bob"]),
];
const DEMO_COOKIE: &str = "demo_user";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let notebooks = create_app()
        .mount(
            "/apps",
            Mount::directory("examples/apps")
                // Runs for every request to a notebook (`notebook` is e.g. `team/roadmap.py`)
                // and for each entry of the `/apps/` index page.
                .validate_sync(|notebook, request| {
                    let user = request.extensions.get::<User>();
                    may_open(notebook, user.map(User::name))
                })
                .max_backends(4),
        )
        .build()?;

    let app = Router::new()
        .route("/", get(|| async { Redirect::to("/apps/") }))
        .route("/demo/as/{name}", get(sign_in_as))
        .route("/demo/signout", get(sign_out))
        .fallback_service(notebooks.clone())
        .layer(from_fn(demo_identity));

    let port = std::env::var("PORT").map_or(Ok(8002), |port| port.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    notebooks.shutdown().await;
    Ok(())
}

/// The access rule behind the validate callback.
fn may_open(notebook: &Path, user: Option<&str>) -> Validation {
    let Some((_, allowed)) = ACCESS.iter().find(|(path, _)| notebook == Path::new(path)) else {
        return Validation::Allow;
    };
    match user {
        Some(user) if allowed.contains(&user) => Validation::Allow,
        Some(user) => {
            let message = format!("{user} may not open {}\n", notebook.display());
            let mut response = http::Response::new(Body::from(message));
            *response.status_mut() = StatusCode::FORBIDDEN;
            Validation::Respond(response)
        }
        // `404`, as if the notebook did not exist.
        None => Validation::Deny,
    }
}

/// Stands in for real authentication: the `demo_user` cookie names the user.
async fn demo_identity(mut req: Request, next: Next) -> Response {
    let name = cookie(req.headers(), DEMO_COOKIE).map(str::to_owned);
    if let Some(name) = name {
        // The notebooks and the validate callback see this user.
        req.extensions_mut().insert(User::new(name));
    }
    next.run(req).await
}

/// `GET /demo/as/{name}`: "signs in" as `name` (letters and digits only).
async fn sign_in_as(UrlPath(name): UrlPath<String>) -> Response {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
        return (StatusCode::BAD_REQUEST, "letters and digits only\n").into_response();
    }
    let cookie = format!("{DEMO_COOKIE}={name}; Path=/; HttpOnly; SameSite=Lax");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/apps/")).into_response()
}

/// `GET /demo/signout`: forgets who you are.
async fn sign_out() -> impl IntoResponse {
    let cookie = HeaderValue::from_static("demo_user=; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/apps/"))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(name)?.strip_prefix('='))
}
