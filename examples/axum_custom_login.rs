//! Your own login in front of marimo notebooks: the "Custom Authentication" example of
//! marimo's guide (a FastAPI app with an auth middleware and a `/login` route, mounting
//! notebooks at `""`, `/dashboard` and `/sales`), in Rust with axum.
//!
//! Run it from the crate root, then open <http://127.0.0.1:8000/> and sign in as `alice` /
//! `wonderland` (or `bob` / `builder`):
//!
//! ```sh
//! cargo run --example axum_custom_login          # PORT=0 picks a free port
//! ```
//!
//! What to try:
//! - Anonymous browsers are sent to `/login?next=…`; after signing in you land where you were
//!   going, and the index notebook greets you by name (`mo.app_meta().request.user`).
//! - API calls and WebSockets without a session get `401`:
//!   `curl -i http://127.0.0.1:8000/dashboard/api/status`.
//! - `POST /logout` (the form on the login page) ends the session.
//!
//! The marimo service has no token of its own here: this host's login is the only auth, and
//! the `marimo_rs::User` its middleware inserts is who the notebook sees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::{phc::PasswordHash, PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine as _;
use marimo_rs::{create_app, serve, shutdown_signal, User};
use serde::Deserialize;
use serde_json::json;

/// The demo's users. A real application stores only the password *hashes* (the PHC strings
/// `Argon2::hash_password` makes, `$argon2id$v=19$…`), never the passwords.
const USERS: &[(&str, &str)] = &[("alice", "wonderland"), ("bob", "builder")];
const SESSION_COOKIE: &str = "session";
const SESSION_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

#[derive(Clone)]
struct AppState {
    /// username → argon2 hash (PHC string).
    password_hashes: Arc<HashMap<String, String>>,
    /// Checked when the username is unknown, so that a wrong name takes as long as a wrong
    /// password and does not reveal which users exist.
    dummy_hash: Arc<str>,
    /// session id → (username, expiry). Use a database or a signed cookie to share sessions
    /// between replicas.
    sessions: Arc<Mutex<HashMap<String, (String, Instant)>>>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let hash = |password: &str| Argon2::default().hash_password(password.as_bytes());
    let mut password_hashes = HashMap::new();
    for (name, password) in USERS {
        password_hashes.insert(name.to_string(), hash(password)?.to_string());
    }
    let state = AppState {
        password_hashes: Arc::new(password_hashes),
        dummy_hash: hash("not a password")?.to_string().into(),
        sessions: Arc::default(),
    };

    // marimo's `create_asgi_app().with_app(...)...build()`, without `.token(...)`.
    let notebooks = create_app()
        .with_app("", "examples/pages/index.py")
        .with_app("/dashboard", "examples/pages/dashboard.py")
        .with_app("/sales", "examples/pages/sales.py")
        .build()?;

    let app = Router::new()
        .route("/logout", post(logout))
        .fallback_service(notebooks.clone())
        // Everything above needs a signed-in user; routes added below the layer are public.
        .layer(from_fn_with_state(state.clone(), require_login))
        .route("/login", get(login_page).post(login))
        .with_state(state);

    let port = std::env::var("PORT").map_or(Ok(8000), |port| port.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    notebooks.shutdown().await; // stop the Python backends
    Ok(())
}

/// The auth middleware: a valid session cookie lets the request through as that user;
/// otherwise browsers go to the login page and everything else gets `401`.
async fn require_login(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let username = cookie(req.headers(), SESSION_COOKIE).and_then(|id| {
        let mut sessions = state.sessions.lock().unwrap();
        sessions.retain(|_, (_, expires)| *expires > Instant::now()); // forget expired ones
        sessions.get(id).map(|(name, _)| name.clone())
    });
    let Some(username) = username else {
        return if is_page_load(req.headers()) {
            let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
            Redirect::to(&format!("/login?next={next}")).into_response()
        } else {
            let detail = Json(json!({"detail": "Not authenticated"}));
            (StatusCode::UNAUTHORIZED, detail).into_response()
        };
    };
    // The notebook sees this user as `mo.app_meta().request.user["username"]`.
    req.extensions_mut().insert(User::new(username));
    // Notebook code can read request headers: keep the session id away from it.
    remove_cookie(req.headers_mut(), SESSION_COOKIE);
    next.run(req).await
}

/// A browser navigating to a page (not `fetch`, not a WebSocket).
fn is_page_load(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    !headers.contains_key(header::UPGRADE) && accept.is_some_and(|a| a.contains("text/html"))
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

const LOGIN_FORM: &str = r#"<!doctype html>
<title>Sign in</title>
<h1>Sign in</h1>
<p>{message}</p>
<form method="post">
  <label>Username <input name="username" autocomplete="username" autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <button>Sign in</button>
</form>
<form method="post" action="/logout"><button>Sign out</button></form>"#;

/// `GET /login`: the form. It posts back to the same URL, so `?next=…` comes along.
async fn login_page() -> Html<String> {
    Html(LOGIN_FORM.replace("{message}", "Try alice / wonderland."))
}

#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

/// `POST /login`: checks the password, starts a session, goes back to `next`.
async fn login(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
    Form(form): Form<Credentials>,
) -> Response {
    let known = state.password_hashes.get(&form.username);
    let hash = known.map_or(state.dummy_hash.to_string(), Clone::clone);
    let password = form.password;
    // Argon2 is slow on purpose: keep it off the async worker threads.
    let matches = tokio::task::spawn_blocking(move || {
        let hash = PasswordHash::new(&hash).expect("a valid PHC string");
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
    .await
    .unwrap_or(false);
    if !(matches && known.is_some()) {
        tracing::info!(username = %form.username, "failed sign-in");
        let page = LOGIN_FORM.replace("{message}", "Wrong username or password.");
        return (StatusCode::UNAUTHORIZED, Html(page)).into_response();
    }

    let mut id = [0u8; 32];
    getrandom::fill(&mut id).expect("the OS random number generator");
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
    let expires = Instant::now() + SESSION_LIFETIME;
    state
        .sessions
        .lock()
        .unwrap()
        .insert(id.clone(), (form.username.clone(), expires));
    tracing::info!(username = %form.username, "signed in");

    // Only local paths: `next=https://evil.example` or `//evil.example` must not redirect away.
    let next = query
        .next
        .filter(|next| next.starts_with('/') && !next.starts_with("//") && !next.contains('\\'))
        .unwrap_or_else(|| "/".into());
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
        SESSION_LIFETIME.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to(&next)).into_response()
}

/// `POST /logout`: forgets the session and clears the cookie.
async fn logout(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.lock().unwrap().remove(id);
    }
    let clear = format!("{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    ([(header::SET_COOKIE, clear)], Redirect::to("/login"))
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

/// Removes cookie `name` from the request's `Cookie` headers, keeping the others.
fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(name))
        .collect();
    let kept = HeaderValue::from_str(&kept.join("; ")).ok();
    headers.remove(header::COOKIE);
    if let Some(kept) = kept.filter(|value| !value.is_empty()) {
        headers.insert(header::COOKIE, kept);
    }
}
