//! Sign-out: `{base}/auth/logout` (`GET` asks, `POST` signs out: the session is revoked, its
//! cookie cleared, and a provider session continues to the provider's end-session endpoint),
//! the page a browser lands on afterwards (`{base}/auth/signed-out`), and "sign this user out
//! everywhere" (`POST {base}/auth/sign-out-everywhere?user=NAME`, for administrators).

use std::sync::Arc;

use http::header;
use http::{Method, Request, Response, StatusCode};

use super::cookie::{unix_now_ms, Kind};
use super::future::ResponseFuture;
use super::layer::Config;
use crate::html::escape;
use crate::response::{json, method_not_allowed, no_store, page, plain, redirect};
use crate::{audit, Body, User};

/// Sign-out, relative to the service root.
pub(crate) const LOGOUT_PATH: &str = "/auth/logout";
/// Where a browser lands after signing out (also the post-logout redirect URI registered
/// with an identity provider).
pub(crate) const SIGNED_OUT_PATH: &str = "/auth/signed-out";
/// Revoking every session of one user (administrators).
pub(crate) const EVERYWHERE_PATH: &str = "/auth/sign-out-everywhere";

/// Serves `{base}/auth/logout`: `GET`/`HEAD` the confirmation page, `POST` the sign-out.
pub(crate) fn handle<F>(config: Arc<Config>, req: Request<Body>) -> ResponseFuture<F> {
    match *req.method() {
        Method::GET | Method::HEAD => ResponseFuture::ready(confirm_page()),
        Method::POST => ResponseFuture::boxed(Box::pin(sign_out(config, req))),
        _ => ResponseFuture::ready(no_store(method_not_allowed("GET, POST"))),
    }
}

/// Revokes the request's session (if it has a valid one), clears the cookie, and answers
/// `303` to the provider's end-session endpoint (a provider session, when it has one) or to
/// the signed-out page.
async fn sign_out(config: Arc<Config>, req: Request<Body>) -> Response<Body> {
    let session = config.session(req.headers());
    let client = config.client_ip(&req);
    let mut provider_session = false;
    if let Some(session) = &session {
        config.revocations.revoke_session(
            session.presented(),
            session.expiry,
            unix_now_ms(),
            config.longest_session_ms(),
        );
        let id = (!session.id.is_empty()).then_some(session.id.as_str());
        audit::sign_out(session.user.name(), client, Some(id.unwrap_or("-")), "user");
        provider_session = session.kind == Kind::Provider;
    }
    let mut location = config.location(SIGNED_OUT_PATH);
    if let (true, Some(provider)) = (provider_session, &config.provider) {
        if provider.settings.provider_logout_enabled() {
            if let Ok(client) = provider.client(&config.signing_key).await {
                let back = provider.settings.post_logout_redirect_uri();
                if let Some(url) = client.logout_url(None, Some(&back), None) {
                    location = url;
                }
            }
        }
    }
    let mut response = no_store(redirect(StatusCode::SEE_OTHER, location));
    let clear = config.clear_session_cookie(&req);
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

/// The page `GET {base}/auth/logout` shows: a button that posts the sign-out (a link cannot
/// sign anyone out: a page elsewhere could make the browser follow it).
fn confirm_page() -> Response<Body> {
    let body = "<form method=\"post\" action=\"logout\"><h1>Sign out?</h1>\
                <button type=\"submit\">Sign out</button></form>";
    no_store(page(StatusCode::OK, "sign out", body))
}

/// Serves `{base}/auth/signed-out`.
pub(crate) fn signed_out(config: &Config) -> Response<Body> {
    // From `{base}/auth/signed-out`, the service root.
    let again = config.location("/");
    let body = format!(
        "<main><h1>You are signed out</h1><a class=\"button\" href=\"{}\">Sign in again</a>\
         </main>",
        escape(&again)
    );
    no_store(page(StatusCode::OK, "signed out", &body))
}

/// Serves `POST {base}/auth/sign-out-everywhere?user=NAME` for `admin`, an authenticated
/// request: with the token (scripts), or a user the layer's administrator rules allow.
pub(crate) fn everywhere(
    config: &Config,
    req: &Request<Body>,
    admin: &User,
    by_token: bool,
) -> Response<Body> {
    if req.method() != Method::POST {
        return no_store(method_not_allowed("POST"));
    }
    let allowed = by_token
        || config
            .admins
            .as_ref()
            .is_some_and(|admins| !admins.is_open() && admins.allows(admin));
    if !allowed {
        return no_store(plain(
            StatusCode::FORBIDDEN,
            "Forbidden: only administrators may sign users out",
        ));
    }
    let user = req.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "user")
            .map(|(_, value)| value.into_owned())
            .filter(|value| !value.is_empty())
    });
    let Some(user) = user else {
        return no_store(plain(
            StatusCode::BAD_REQUEST,
            "Bad Request: name the user, ?user=NAME",
        ));
    };
    let before_ms = config.sign_out_everywhere(&user, config.client_ip(req), admin.name());
    let body = serde_json::json!({"user": user, "revoked_until_ms": before_ms}).to_string();
    no_store(json(StatusCode::OK, body))
}

impl Config {
    /// Revokes every session of `user` issued until now; `by` is who asked (for the audit
    /// log). Returns that moment, Unix milliseconds.
    pub(crate) fn sign_out_everywhere(
        &self,
        user: &str,
        client: Option<std::net::IpAddr>,
        by: &str,
    ) -> u64 {
        let now = unix_now_ms();
        self.revocations
            .revoke_user(user, now, self.longest_session_ms());
        audit::sign_out(user, client, None, by);
        now
    }

    /// The longest any session of this layer lives, milliseconds.
    pub(crate) fn longest_session_ms(&self) -> u64 {
        let provider = self
            .provider
            .as_ref()
            .map_or(0, |provider| provider.settings.session_lifetime_secs());
        self.max_age.max(provider).saturating_mul(1000)
    }
}
