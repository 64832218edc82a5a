//! Sign in with your identity provider (OpenID Connect: Google, Microsoft Entra ID, Okta,
//! Keycloak…): the notebooks see who signed in, and access rules decide who may open what.
//!
//! Register a web application with the provider, with the redirect URI
//! `{PUBLIC_URL}/auth/callback` and the post-logout redirect URI
//! `{PUBLIC_URL}/auth/signed-out`, then run it from the crate root:
//!
//! ```sh
//! OIDC_ISSUER=https://id.example.com/realms/acme OIDC_CLIENT_ID=marimo \
//! OIDC_CLIENT_SECRET_FILE=client-secret.txt PUBLIC_URL=http://127.0.0.1:8004 \
//! cargo run --example oidc                         # PORT=0 picks a free port
//! ```
//!
//! (`PUBLIC_URL` defaults to `http://` and the listening address.) It prints
//! `listening on …`. What to try:
//! - `/` is the identity notebook: your name, email, groups and claims, as notebook code reads
//!   them (`mo.app_meta().request.user["groups"]`). Not signed in, the browser goes to the
//!   provider first.
//! - `/admins/` is for the `admins` group (`ADMIN_GROUP` to change it): anyone else gets a
//!   `403` page with a sign-out button, and no notebook backend starts for them.
//! - `/auth/logout` signs out (and out of the provider); the cookie you had is refused
//!   afterwards, even a copy.
//! - With the provider down, sign-in pages say so (`503`) until it answers; signed-in users
//!   carry on.

use std::time::Duration;

use marimo_rs::{create_app, serve, shutdown_signal, Access, Mount, OidcConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let env = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let issuer = env("OIDC_ISSUER")?;
    let client_id = env("OIDC_CLIENT_ID")?;
    // From a file, so that the secret is in neither the process list nor the environment.
    let secret = std::fs::read_to_string(env("OIDC_CLIENT_SECRET_FILE")?)?;
    let admins = std::env::var("ADMIN_GROUP").unwrap_or_else(|_| "admins".into());

    // Bound first: the public URL (and so the redirect URI) names the port.
    let port = std::env::var("PORT").map_or(Ok(8004), |port| port.parse())?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let public_url = std::env::var("PUBLIC_URL")
        .unwrap_or_else(|_| format!("http://{}", listener.local_addr().unwrap()));

    let sign_in = OidcConfig::new(issuer, client_id, secret.trim_end(), public_url)
        .scopes(["openid", "profile", "email", "groups"])
        .session_lifetime(Duration::from_secs(8 * 60 * 60));
    let app = create_app()
        .with_app("/", "examples/notebooks/identity.py")
        .mount(
            "/admins",
            Mount::app("examples/notebooks/intro.py").access(Access::signed_in().groups([admins])),
        )
        .oidc(sign_in)
        .build()?;

    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, app.clone())
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    app.shutdown().await;
    Ok(())
}
