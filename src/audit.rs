//! The audit log: one structured `tracing` event per security-relevant fact, under the target
//! [`TARGET`] (`marimo_rs::audit`), at `INFO`, whatever else the program logs.
//!
//! | `event` | when | fields |
//! |---|---|---|
//! | `sign_in` | a browser session begins (login form, `access_token` link, one-time link, identity provider) | `method`, `user`, `client`, `result = "ok"`, `session` |
//! | `sign_in_failed` | a credential or a sign-in was refused | `method`, `user` (when known), `client`, `result = "failed"`, `reason` |
//! | `sign_in_limited` | a credential attempt was refused unchecked: the client's login limit is used up | `method`, `client`, `result = "limited"` |
//! | `sign_out` | a session was ended, or all of a user's sessions ("everywhere") | `user`, `client`, `session` or `scope = "everywhere"`, `by` |
//! | `access_denied` | a signed-in user was refused by access rules | `user`, `client`, `mount`, `path` |
//! | `session_opened`, `session_closed` | a notebook's WebSocket session (marimo's `session_id`) began or ended | `user`, `mount`, `session` |
//!
//! Never a token, code, password, cookie value or secret: `user` is a name, `session` the
//! gateway's random session id (a label, not a credential: the cookie is signed) or marimo's
//! session id, `reason` a message of the crate's own errors (which never quote secrets).
//! The `marimo-rs` command writes these events as JSON lines with `--audit-log FILE`; a
//! program using the library subscribes to the target with its own `tracing` subscriber.

use std::fmt;
use std::net::IpAddr;

/// The `tracing` target of every audit event.
pub(crate) const TARGET: &str = "marimo_rs::audit";

/// How a user proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// The token, typed into the login form.
    LoginForm,
    /// The token in `?access_token=`.
    AccessToken,
    /// The token as `Authorization: Bearer`.
    Bearer,
    /// The token as the password of `Authorization: Basic`.
    Basic,
    /// A one-time sign-in link.
    SignInLink,
    /// OpenID Connect, at the identity provider.
    Oidc,
    /// A trusted front proxy's signed assertion (Pomerium).
    ProxyJwt,
    /// The admin page's or the metrics endpoint's own token, as `Authorization: Bearer`.
    OperatorToken,
}

impl Method {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Method::LoginForm => "login_form",
            Method::AccessToken => "access_token",
            Method::Bearer => "bearer",
            Method::Basic => "basic",
            Method::SignInLink => "sign_in_link",
            Method::Oidc => "oidc",
            Method::ProxyJwt => "proxy_jwt",
            Method::OperatorToken => "operator_token",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The client address as logged: the address, or `-` when the request carried none.
struct Client(Option<IpAddr>);

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ip) => fmt::Display::fmt(&ip, f),
            None => f.write_str("-"),
        }
    }
}

/// A browser session began.
pub(crate) fn sign_in(method: Method, user: &str, client: Option<IpAddr>, session: &str) {
    tracing::info!(
        target: TARGET,
        event = "sign_in",
        method = method.as_str(),
        user,
        client = %Client(client),
        result = "ok",
        session,
        "{user} signed in ({method})"
    );
}

/// A credential or a sign-in was refused; `reason` is one of the crate's own messages.
/// Nobody is named: the user is logged as `-`.
pub(crate) fn sign_in_failed(method: Method, client: Option<IpAddr>, reason: &str) {
    tracing::info!(
        target: TARGET,
        event = "sign_in_failed",
        method = method.as_str(),
        user = "-",
        client = %Client(client),
        result = "failed",
        reason,
        "sign-in refused ({method}): {reason}"
    );
}

/// A credential attempt was refused unchecked: the client's login limit is used up.
pub(crate) fn sign_in_limited(method: Method, client: Option<IpAddr>) {
    tracing::info!(
        target: TARGET,
        event = "sign_in_limited",
        method = method.as_str(),
        client = %Client(client),
        result = "limited",
        "sign-in attempt refused unchecked: the login limit of {} is used up",
        Client(client)
    );
}

/// A session ended (`session` set), or every session of `user` (`session` is `None`); `by`
/// is who asked (the user, or an administrator).
pub(crate) fn sign_out(user: &str, client: Option<IpAddr>, session: Option<&str>, by: &str) {
    match session {
        Some(session) => tracing::info!(
            target: TARGET,
            event = "sign_out",
            user,
            client = %Client(client),
            session,
            scope = "session",
            by,
            "{user} signed out"
        ),
        None => tracing::info!(
            target: TARGET,
            event = "sign_out",
            user,
            client = %Client(client),
            scope = "everywhere",
            by,
            "every session of {user} issued until now is revoked"
        ),
    }
}

/// A signed-in user was refused by access rules.
pub(crate) fn access_denied(user: &str, client: Option<IpAddr>, mount: &str, path: &str) {
    tracing::info!(
        target: TARGET,
        event = "access_denied",
        user,
        client = %Client(client),
        mount,
        path,
        "{user} may not open {mount}"
    );
}

/// A notebook's WebSocket session began (`opened`) or ended.
pub(crate) fn notebook_session(opened: bool, user: &str, mount: &str, session: &str) {
    let event = if opened {
        "session_opened"
    } else {
        "session_closed"
    };
    tracing::info!(
        target: TARGET,
        event,
        user,
        mount,
        session,
        "notebook session {session} of {user} at {mount}: {event}"
    );
}
