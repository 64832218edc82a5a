//! OAuth2 password flow with JWT bearer tokens in front of marimo notebooks: the flow of
//! FastAPI's "OAuth2 with Password (and hashing), Bearer with JWT tokens" tutorial, which
//! marimo's guide points to, in Rust with axum and `jsonwebtoken`.
//!
//! Run it from the crate root:
//!
//! ```sh
//! cargo run --example oauth2_jwt                 # PORT=0 picks a free port; JWT_SECRET=… to
//!                                                # keep tokens valid across restarts
//! ```
//!
//! What to try:
//! ```sh
//! # OAuth2 password grant: a JWT with `sub`, `exp` (30 min) and `scope`.
//! curl -s -d 'username=bob&password=builder' http://127.0.0.1:8001/token
//! TOKEN=…   # the access_token from the answer
//! curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8001/dashboard/api/version # 200
//! curl -i -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8001/sales/               # 403
//! curl -i http://127.0.0.1:8001/dashboard/api/version                                   # 401
//! ```
//! In a browser, <http://127.0.0.1:8001/> sends you to a minimal login form, whose token
//! comes back as an `HttpOnly` cookie. `alice` / `wonderland` has the scope
//! `dashboard sales`, `bob` / `builder` only `dashboard`; the index notebook shows who you are
//! and your scope (`mo.app_meta().request.user` and `.meta`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{phc::PasswordHash, PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use marimo_rs::{create_app, serve, shutdown_signal, Mount, User};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The demo's users: name, password, the scopes they may be granted. A real application
/// stores only password *hashes* (`$argon2id$v=19$…`), never the passwords.
const USERS: &[(&str, &str, &str)] = &[
    ("alice", "wonderland", "dashboard sales"),
    ("bob", "builder", "dashboard"),
];
const TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 60);
const TOKEN_COOKIE: &str = "access_token";

/// The JWT's claims.
#[derive(Serialize, Deserialize)]
struct Claims {
    /// The username.
    sub: String,
    /// Expiry, seconds since the Unix epoch; checked by `decode`.
    exp: u64,
    /// Space-separated scopes, as in OAuth2: which notebooks the token opens.
    scope: String,
}

struct Account {
    password_hash: String,
    scope: &'static str,
}

#[derive(Clone)]
struct AppState {
    accounts: Arc<HashMap<String, Account>>,
    /// Checked for unknown usernames so that they take as long as a wrong password.
    dummy_hash: Arc<str>,
    encoding: Arc<EncodingKey>,
    decoding: Arc<DecodingKey>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    // HS256 needs a secret of at least 32 random bytes. Without JWT_SECRET a new one is made
    // at every start, which signs everybody out.
    let secret = match std::env::var("JWT_SECRET") {
        Ok(secret) => secret.into_bytes(),
        Err(_) => {
            let mut secret = vec![0; 32];
            getrandom::fill(&mut secret).expect("the OS random number generator");
            secret
        }
    };
    let hash = |password: &str| Argon2::default().hash_password(password.as_bytes());
    let mut accounts = HashMap::new();
    for (name, password, scope) in USERS {
        let password_hash = hash(password)?.to_string();
        accounts.insert(
            name.to_string(),
            Account {
                password_hash,
                scope,
            },
        );
    }
    let state = AppState {
        accounts: Arc::new(accounts),
        dummy_hash: hash("not a password")?.to_string().into(),
        encoding: Arc::new(EncodingKey::from_secret(&secret)),
        decoding: Arc::new(DecodingKey::from_secret(&secret)),
    };

    // Any valid token opens the index; the other notebooks need their scope. The scope check
    // is a layer on each mount (marimo's per-app `middleware=[...]`), so it cannot drift
    // from the mount table.
    let notebooks = create_app()
        .with_app("", "examples/pages/index.py")
        .mount(
            "/dashboard",
            Mount::app("examples/pages/dashboard.py")
                .layer(from_fn_with_state("dashboard", require_scope)),
        )
        .mount(
            "/sales",
            Mount::app("examples/pages/sales.py").layer(from_fn_with_state("sales", require_scope)),
        )
        .build()?;

    let app = Router::new()
        .fallback_service(notebooks.clone())
        .layer(from_fn_with_state(state.clone(), require_token))
        // Public routes, added after the layer.
        .route("/token", post(issue_token))
        .route("/login", get(login_page))
        .with_state(state);

    let port = std::env::var("PORT").map_or(Ok(8001), |port| port.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    notebooks.shutdown().await;
    Ok(())
}

#[derive(Deserialize)]
struct TokenForm {
    username: String,
    password: String,
    /// OAuth2 says `password`; FastAPI's `OAuth2PasswordRequestForm` makes it optional too.
    grant_type: Option<String>,
    /// The scopes asked for (space-separated); empty means all the user may have.
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// `POST /token`: the OAuth2 password grant. Answers `{"access_token", "token_type"}` and sets
/// the same token as a cookie for browsers; with `?next=/path` (the login form) it redirects
/// there instead.
async fn issue_token(
    State(state): State<AppState>,
    Query(query): Query<LoginQuery>,
    Form(form): Form<TokenForm>,
) -> Response {
    if form.grant_type.as_deref().is_some_and(|g| g != "password") {
        let error = json!({"error": "unsupported_grant_type"});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    let account = state.accounts.get(&form.username);
    let hash = account.map_or(state.dummy_hash.to_string(), |a| a.password_hash.clone());
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
    let Some(account) = account.filter(|_| matches) else {
        tracing::info!(username = %form.username, "failed sign-in");
        return unauthorized("Incorrect username or password");
    };

    // Grant what was asked for and is allowed (everything allowed if nothing was asked for).
    let allowed: Vec<&str> = account.scope.split_whitespace().collect();
    let granted: Vec<&str> = if form.scope.trim().is_empty() {
        allowed
    } else {
        form.scope
            .split_whitespace()
            .filter(|s| allowed.contains(s))
            .collect()
    };
    let claims = Claims {
        sub: form.username,
        exp: jsonwebtoken::get_current_timestamp() + TOKEN_LIFETIME.as_secs(),
        scope: granted.join(" "),
    };
    let token = match encode(&Header::new(Algorithm::HS256), &claims, &state.encoding) {
        Ok(token) => token,
        Err(error) => {
            tracing::error!(%error, "cannot sign a token");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    tracing::info!(username = %claims.sub, scope = %claims.scope, "token issued");

    let cookie = format!(
        "{TOKEN_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax",
        TOKEN_LIFETIME.as_secs()
    );
    let cookie = [(header::SET_COOKIE, cookie)];
    match query.next.filter(|next| is_local_path(next)) {
        Some(next) => (cookie, Redirect::to(&next)).into_response(),
        None => (
            cookie,
            Json(json!({"access_token": token, "token_type": "bearer"})),
        )
            .into_response(),
    }
}

/// The auth middleware: a valid JWT (`Authorization: Bearer …` or the cookie) lets the
/// request through as its `sub`, with its scope as metadata; anything else is `401`
/// (browsers without a token are sent to the login form).
async fn require_token(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(token) = bearer.or_else(|| cookie(headers, TOKEN_COOKIE)) else {
        if is_page_load(headers) {
            let next = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
            return Redirect::to(&format!("/login?next={next}")).into_response();
        }
        return unauthorized("Not authenticated");
    };
    // Checks the signature, that the algorithm is HS256 (no `none`), and `exp`.
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    let claims = match decode::<Claims>(token, &state.decoding, &validation) {
        Ok(data) => data.claims,
        Err(error) => {
            tracing::info!(%error, "rejected a token");
            return unauthorized("Could not validate credentials");
        }
    };

    let user = User::new(claims.sub).with_meta(json!({"scope": claims.scope}));
    req.extensions_mut().insert(user);
    // Notebook code can read request headers: keep the token away from it.
    req.headers_mut().remove(header::AUTHORIZATION);
    remove_cookie(req.headers_mut(), TOKEN_COOKIE);
    next.run(req).await
}

/// The per-mount authorization: `403` unless the signed-in user's token has the mount's
/// scope. An ordinary axum middleware: `Mount::layer` takes it as it is, and it runs after
/// `require_token`, so the [`User`] is there.
async fn require_scope(State(scope): State<&'static str>, req: Request, next: Next) -> Response {
    let user = req.extensions().get::<User>();
    let scopes = user.and_then(|user| user.meta()["scope"].as_str());
    if scopes.is_some_and(|scopes| scopes.split_whitespace().any(|s| s == scope)) {
        return next.run(req).await;
    }
    let body = Json(json!({"detail": "Not enough permissions"}));
    (StatusCode::FORBIDDEN, body).into_response()
}

fn unauthorized(detail: &str) -> Response {
    let headers = [(header::WWW_AUTHENTICATE, "Bearer")];
    let body = Json(json!({ "detail": detail }));
    (StatusCode::UNAUTHORIZED, headers, body).into_response()
}

/// `GET /login`: a minimal form that posts to `/token`.
async fn login_page(Query(query): Query<LoginQuery>) -> Html<String> {
    let next = query.next.filter(|next| is_local_path(next));
    // Percent-encoded, so it is safe inside the HTML attribute.
    let next: String =
        form_urlencoded::byte_serialize(next.as_deref().unwrap_or("/").as_bytes()).collect();
    Html(format!(
        r#"<!doctype html>
<title>Sign in</title>
<h1>Sign in</h1>
<form method="post" action="/token?next={next}">
  <label>Username <input name="username" autocomplete="username" autofocus></label>
  <label>Password <input name="password" type="password" autocomplete="current-password"></label>
  <button>Sign in</button>
</form>"#
    ))
}

/// Only local paths: `https://evil.example` and `//evil.example` must not be redirect targets.
fn is_local_path(next: &str) -> bool {
    next.starts_with('/') && !next.starts_with("//") && !next.contains('\\')
}

/// A browser navigating to a page (not `fetch`, not a WebSocket).
fn is_page_load(headers: &HeaderMap) -> bool {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    !headers.contains_key(header::UPGRADE) && accept.is_some_and(|a| a.contains("text/html"))
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
