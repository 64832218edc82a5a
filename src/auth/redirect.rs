//! Signing a browser in, or sending it to sign in: the redirect to the login form, the
//! redirect that takes `?access_token=` out of the address bar, and the session cookie a
//! signed-in redirect sets.
//!
//! Every `Location` is relative to the request path unless a base path is configured, so the
//! redirects stay right when the service is mounted under a prefix it does not know about.

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::Scheme;
use http::{Extensions, Request, Response, StatusCode, Uri};

use super::cookie::unix_now;
use super::credentials::{strip_access_token, DEFAULT_USER};
use super::layer::Config;
use super::login::LOGIN_PATH;
use crate::request::{MountPrefix, OriginalUri};
use crate::response::{no_store, redirect};
use crate::Body;

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
        let query = uri
            .query()
            .map(|query| strip_access_token(query).unwrap_or_else(|| query.to_owned()))
            .filter(|query| !query.is_empty());
        let next = match query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_owned(),
        };
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
        self.signed_in_redirect(req, location)
    }

    /// `303` to `location`, setting a session cookie: the browser is signed in and the
    /// credential it used leaves the address bar.
    pub(super) fn signed_in_redirect(
        &self,
        req: &Request<Body>,
        location: String,
    ) -> Response<Body> {
        let mut response = no_store(redirect(StatusCode::SEE_OTHER, location));
        if response.status() == StatusCode::SEE_OTHER {
            let cookie =
                self.session_cookie(req.uri(), req.headers(), req.extensions(), DEFAULT_USER);
            let headers = response.headers_mut();
            headers.insert(header::SET_COOKIE, cookie);
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
        }
        response
    }

    /// A `Set-Cookie` value with a fresh session for `username`.
    pub(super) fn session_cookie(
        &self,
        uri: &Uri,
        headers: &HeaderMap,
        extensions: &Extensions,
        username: &str,
    ) -> HeaderValue {
        if let Some(metrics) = &self.metrics {
            metrics.signed_in();
        }
        let expiry = unix_now().saturating_add(self.max_age);
        let value = self.keys.mint(self.token.digest(), username, expiry);
        let mut cookie = format!(
            "{}={value}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax",
            self.keys.name(),
            self.cookie_path(extensions),
            self.max_age
        );
        if self.is_secure(uri, headers, extensions) {
            cookie.push_str("; Secure");
        }
        HeaderValue::try_from(cookie).expect("cookie name, value and path are visible ASCII")
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
}
