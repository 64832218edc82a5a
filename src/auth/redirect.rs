//! Signing a browser in, or sending it to sign in: the redirect to the login form, the
//! redirect that takes `?access_token=` out of the address bar, and the session cookie a
//! signed-in redirect sets.
//!
//! Every `Location` is relative to the request path unless a base path is configured, so the
//! redirects stay right when the service is mounted under a prefix it does not know about.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Scheme;
use http::{Extensions, Request, Response, StatusCode, Uri};

use super::client_ip::client_ip;
use super::cookie::{unix_now, unix_now_ms, Kind, Session};
use super::credentials::{strip_access_token, DEFAULT_USER};
use super::layer::Config;
use super::login::LOGIN_PATH;
use super::provider::header_value;
use super::token::random_b64url;
use crate::request::{MountPrefix, OriginalUri, RemoteAddr};
use crate::response::{no_store, redirect};
use crate::{audit, Body, User};

/// The parts of a request a cookie is made from.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) extensions: &'a Extensions,
}

impl<'a, B> From<&'a Request<B>> for Head<'a> {
    fn from(req: &'a Request<B>) -> Self {
        Self {
            uri: req.uri(),
            headers: req.headers(),
            extensions: req.extensions(),
        }
    }
}

impl<'a> From<&'a http::request::Parts> for Head<'a> {
    fn from(parts: &'a http::request::Parts) -> Self {
        Self {
            uri: &parts.uri,
            headers: &parts.headers,
            extensions: &parts.extensions,
        }
    }
}

impl Config {
    /// Where to send a browser after it signed in, for `next` (a checked path): under the
    /// base path when known, else relative to `{root}/auth/`.
    pub(super) fn location(&self, next: &str) -> String {
        match &self.base_path {
            Some(base) => format!("{base}{next}"),
            None => format!("..{next}"),
        }
    }

    /// `303` to the login form, `next` = this page (without any `access_token`).
    pub(super) fn login_redirect(&self, uri: &Uri) -> Response<Body> {
        let path = uri.path();
        let next = next_of(uri);
        let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let location = match &self.base_path {
            Some(base) => format!("{base}{LOGIN_PATH}?next={next}"),
            None => format!("{}{}?next={next}", to_root(path), &LOGIN_PATH[1..]),
        };
        no_store(redirect(StatusCode::SEE_OTHER, location))
    }

    /// `303` to this URL without `access_token`, setting the session cookie.
    pub(super) fn drop_token_redirect(&self, req: &Request<Body>) -> Response<Body> {
        let uri = req.uri();
        let path = uri.path();
        let query = uri.query().and_then(strip_access_token).unwrap_or_default();
        let mut location = match &self.base_path {
            Some(base) if !path.starts_with("//") => format!("{base}{path}"),
            _ => format!("./{}", path.rsplit('/').next().unwrap_or_default()),
        };
        if !query.is_empty() {
            location.push('?');
            location.push_str(&query);
        }
        self.signed_in_redirect(req, location, audit::Method::AccessToken)
    }

    /// `303` to `location`, setting a session cookie: the browser is signed in (with the
    /// token, by `method`) and the credential it used leaves the address bar.
    pub(super) fn signed_in_redirect(
        &self,
        req: &Request<Body>,
        location: String,
        method: audit::Method,
    ) -> Response<Body> {
        let mut response = no_store(redirect(StatusCode::SEE_OTHER, location));
        if response.status() == StatusCode::SEE_OTHER {
            let user = User::new(DEFAULT_USER);
            let cookie = self.start_session(req, user, Kind::Token, self.max_age, method);
            let headers = response.headers_mut();
            headers.insert(header::SET_COOKIE, cookie);
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
        }
        response
    }

    /// Starts a session for `user`, signed in by `method`, lasting `lifetime` seconds: a
    /// `Set-Cookie` value, and a `sign_in` audit event.
    pub(crate) fn start_session<'a>(
        &self,
        head: impl Into<Head<'a>>,
        user: User,
        kind: Kind,
        lifetime: u64,
        method: audit::Method,
    ) -> HeaderValue {
        if let Some(metrics) = &self.metrics {
            metrics.signed_in();
        }
        let head = head.into();
        let session = Session {
            id: random_b64url::<16>(),
            issued_ms: unix_now_ms(),
            expiry: unix_now().saturating_add(lifetime),
            kind,
            user,
        };
        let binding = match kind {
            Kind::Token => self.token_bindings.first(),
            Kind::Provider => self.provider.as_ref().map(|provider| &provider.binding),
        }
        .copied()
        .unwrap_or_default();
        let (value, left_out) = self
            .keys
            .mint_session(&binding, &session, &self.rule_groups);
        if left_out.claims || left_out.groups > 0 {
            tracing::warn!(
                target: "marimo_rs::auth",
                user = session.user.name(),
                claims_left_out = left_out.claims,
                groups_left_out = left_out.groups,
                "the session cookie has no room for all of the user's claims and groups: \
                 what did not fit is left out (access rules on a group left out refuse)"
            );
        }
        let client = self.client_ip_of(head.headers, head.extensions);
        audit::sign_in(method, session.user.name(), client, &session.id);
        let name = self.keys.name().to_owned();
        self.cookie_header(head, &name, &value, "", lifetime)
    }

    /// A `Set-Cookie` value: `name=value` for `{cookie path}{path}`, `HttpOnly`,
    /// `SameSite=Lax`, `Secure` on HTTPS, `Max-Age=max_age` (0 clears it).
    pub(crate) fn cookie_header<'a>(
        &self,
        head: impl Into<Head<'a>>,
        name: &str,
        value: &str,
        path: &str,
        max_age: u64,
    ) -> HeaderValue {
        let head = head.into();
        let base = self.cookie_path(head.extensions);
        let path = match (base, path) {
            (base, "") => base.to_owned(),
            ("/", path) => path.to_owned(),
            (base, path) => format!("{base}{path}"),
        };
        let mut cookie =
            format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax");
        if self.is_secure(head.uri, head.headers, head.extensions) {
            cookie.push_str("; Secure");
        }
        header_value(cookie)
    }

    /// A `Set-Cookie` value that clears the session cookie.
    pub(crate) fn clear_session_cookie<'a>(&self, head: impl Into<Head<'a>>) -> HeaderValue {
        let name = self.keys.name().to_owned();
        self.cookie_header(head, &name, "", "", 0)
    }

    /// The session of the request's session cookie, if it has a valid one (revoked or not).
    pub(crate) fn session(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let now = unix_now();
        let provider = self
            .provider
            .as_ref()
            .map(|provider| std::slice::from_ref(&provider.binding));
        let bindings = |kind| match kind {
            Kind::Token => &self.token_bindings[..],
            Kind::Provider => provider.unwrap_or_default(),
        };
        self.keys.session_values(headers).find_map(|value| {
            if let Some(known) = self.verified.get(value, now) {
                return Some(known);
            }
            let session = Arc::new(self.keys.open_session(value, bindings, now)?);
            // First-format sessions (no id, expiry unknown here) are checked every time.
            if !session.id.is_empty() {
                self.verified.insert(value, session.clone());
            }
            Some(session)
        })
    }

    /// The client a request came from (its peer, or behind trusted proxies the address they
    /// forwarded).
    pub(crate) fn client_ip<B>(&self, req: &Request<B>) -> Option<IpAddr> {
        self.client_ip_of(req.headers(), req.extensions())
    }

    pub(crate) fn client_ip_of(
        &self,
        headers: &HeaderMap,
        extensions: &Extensions,
    ) -> Option<IpAddr> {
        let peer = extensions.get::<RemoteAddr>().map(|addr| addr.0.ip());
        client_ip(peer, headers, &self.trusted_proxies)
    }

    pub(super) fn cookie_path<'a>(&'a self, extensions: &'a Extensions) -> &'a str {
        let path = self
            .base_path
            .as_deref()
            .or_else(|| extensions.get::<MountPrefix>().map(MountPrefix::as_str))
            .unwrap_or_default();
        let usable = !path.is_empty()
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',');
        if usable {
            path
        } else {
            "/"
        }
    }

    fn is_secure(&self, uri: &Uri, headers: &HeaderMap, extensions: &Extensions) -> bool {
        if let Some(secure) = self.secure_cookie {
            return secure;
        }
        let https = |uri: &Uri| uri.scheme() == Some(&Scheme::HTTPS);
        https(uri)
            || extensions
                .get::<OriginalUri>()
                .is_some_and(|original| https(&original.0))
            || self
                .origin
                .forwarded(headers, "x-forwarded-proto")
                .is_some_and(|proto| proto.eq_ignore_ascii_case("https"))
            // Browsers reach the service at the identity provider's redirect URI.
            || self
                .provider
                .as_ref()
                .is_some_and(|provider| provider.settings.redirect_uri().starts_with("https:"))
    }
}

/// Where a browser loading `uri` goes back to once signed in: this page, without any
/// `access_token`.
pub(super) fn next_of(uri: &Uri) -> String {
    let path = uri.path();
    let query = uri
        .query()
        .map(|query| strip_access_token(query).unwrap_or_else(|| query.to_owned()))
        .filter(|query| !query.is_empty());
    match query {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    }
}

/// The relative reference from `path` to the service root: `./` for `/x`, `../` for `/a/x`.
pub(super) fn to_root(path: &str) -> String {
    let depth = path
        .bytes()
        .filter(|&b| b == b'/')
        .count()
        .saturating_sub(1);
    if depth == 0 {
        "./".to_owned()
    } else {
        "../".repeat(depth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthLayer, Token};

    #[test]
    fn to_root_climbs_one_level_per_directory() {
        assert_eq!(to_root("/"), "./");
        assert_eq!(to_root("/x"), "./");
        assert_eq!(to_root("/a/"), "../");
        assert_eq!(to_root("/a/x"), "../");
        assert_eq!(to_root("/a/b/c"), "../../");
        assert_eq!(to_root(""), "./");
    }

    #[test]
    fn base_path_is_normalised() {
        let layer = AuthLayer::new(Token::new("t")).base_path("/marimo/");
        assert_eq!(layer.config.base_path.as_deref(), Some("/marimo"));
        let root = AuthLayer::new(Token::new("t")).base_path("/");
        assert_eq!(root.config.base_path.as_deref(), Some(""));
        assert_eq!(root.config.cookie_path(&Extensions::new()), "/");
        assert_eq!(layer.config.cookie_path(&Extensions::new()), "/marimo");
        let mut extensions = Extensions::new();
        extensions.insert(MountPrefix("/dash".into()));
        assert_eq!(layer.config.cookie_path(&extensions), "/marimo");
        let plain = AuthLayer::new(Token::new("t"));
        assert_eq!(plain.config.cookie_path(&extensions), "/dash");
        extensions.insert(MountPrefix("/a;b".into()));
        assert_eq!(plain.config.cookie_path(&extensions), "/");
    }

    #[test]
    fn cookies_of_an_https_public_url_are_secure_and_under_its_path() {
        let layer = AuthLayer::oidc(crate::OidcConfig::new(
            "https://id.example",
            "c",
            "s",
            "https://example.com/marimo",
        ));
        let req = Request::get("/auth/oidc").body(Body::empty()).unwrap();
        let flow = layer
            .config
            .cookie_header(&req, "f", "v", "/auth/callback", 600);
        assert_eq!(
            flow.to_str().unwrap(),
            "f=v; Path=/marimo/auth/callback; Max-Age=600; HttpOnly; SameSite=Lax; Secure"
        );
        let plain = AuthLayer::oidc(crate::OidcConfig::for_tests("https://id.example"));
        let session = plain.config.cookie_header(&req, "s", "v", "", 60);
        assert!(!session.to_str().unwrap().contains("Secure"), "{session:?}");
    }
}
