//! [`Auth`]: the service [`AuthLayer`](super::AuthLayer) makes, and the request policy it
//! applies: which credentials a request carries, whether they hold, and what a request
//! without them is answered.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Extensions, Method, Request, Response, StatusCode};
use tower_service::Service;

use super::client_ip::client_ip;
use super::cookie::{unix_now, CookieKeys};
use super::credentials::{access_token, from_authorization, strip_access_token, DEFAULT_USER};
use super::future::ResponseFuture;
use super::layer::Config;
use super::limit::{retry_after_secs, ClientKey, Permit};
use super::link::{self, SIGN_IN_PATH};
use super::login::{self, LOGIN_PATH};
use super::token::Token;
use crate::health::{is_health_path, is_mount_health_path};
use crate::origin;
use crate::request::{asks_for_websocket, is_page_load, set_path_and_query, RemoteAddr};
use crate::response::{bad_request, json, no_store, plain, retry_after};
use crate::{Body, User};

/// The body of every `401`, as marimo sends it.
const UNAUTHORIZED_BODY: &str = r#"{"detail":"Authorization header required"}"#;

#[doc = include_str!("../../docs/auth.md")]
pub struct Auth<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> Auth<S> {
    pub(super) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }
}

impl<S: Clone> Clone for Auth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let cors = match self.config.origin.judge(&req) {
            origin::Verdict::Pass { cors } => cors,
            origin::Verdict::Preflight(response) => return ResponseFuture::ready(response),
            origin::Verdict::Refuse(reason) => {
                return ResponseFuture::ready(origin::refuse(reason))
            }
        };
        // Inner notebook services need not judge again (and must not refuse an origin this
        // layer's list allows).
        req.extensions_mut().insert(origin::OriginChecked);
        let future = if req.uri().path() == LOGIN_PATH {
            login::handle(Arc::clone(&self.config), req)
        } else if req.uri().path() == SIGN_IN_PATH {
            ResponseFuture::ready(link::handle(&self.config, &req))
        } else if let Some(response) = self.config.check(&mut req) {
            ResponseFuture::ready(response)
        } else {
            // Call the instance that `poll_ready` prepared, leaving a fresh clone in its place.
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            ResponseFuture::inner(inner.call(req))
        };
        future.with_cors(cors)
    }
}

impl Config {
    /// Whether `candidate` is the token or one of the old tokens still accepted.
    pub(super) fn token_matches(&self, candidate: &[u8]) -> bool {
        // Every token is checked, so the time taken does not tell which one matched.
        let mut matched = self.token.matches(candidate);
        for old in &self.old_tokens {
            matched |= old.matches(candidate);
        }
        matched
    }

    /// Decides about a request that is not for the login form: `Some(response)` to answer it
    /// here, `None` to send it in (then credentials are stripped and a [`User`] is attached).
    fn check(&self, req: &mut Request<Body>) -> Option<Response<Body>> {
        let upgrade = asks_for_websocket(req.headers());
        let (user, by_query) = match self.authenticate(req) {
            Ok(Some(found)) => found,
            Ok(None) => return self.unauthenticated(req, upgrade),
            Err(wait) if !self.is_health_check(req) => return Some(too_many_requests(wait)),
            Err(_) => return self.unauthenticated(req, upgrade),
        };
        if by_query && !upgrade && is_page_load(req) {
            return Some(self.drop_token_redirect(req));
        }
        if strip_credentials(&self.keys, req).is_err() {
            return Some(no_store(bad_request()));
        }
        req.extensions_mut().insert(User::new(user));
        None
    }

    /// The identity proven by the request's credentials, and whether it was `access_token`;
    /// `Err(wait)` when the client's login limit is used up (the credential was not checked).
    fn authenticate(&self, req: &Request<Body>) -> Result<Option<(String, bool)>, Duration> {
        let headers = req.headers();
        if headers.contains_key(header::COOKIE) {
            let mut digests = Vec::with_capacity(1 + self.old_tokens.len());
            digests.push(self.token.digest());
            digests.extend(self.old_tokens.iter().map(Token::digest));
            if let Some(user) = self.keys.find_valid_any(headers, &digests, unix_now()) {
                return Ok(Some((user, false)));
            }
        }
        // Each credential presented spends its own allowance: a request carrying both kinds
        // tests no more guesses than it pays for.
        if let Some(candidate) = req.uri().query().and_then(access_token) {
            let checked = self.attempt(req.extensions(), headers, || {
                self.token_matches(candidate.as_bytes()).then_some(())
            })?;
            if checked.is_some() {
                return Ok(Some((DEFAULT_USER.to_owned(), true)));
            }
        }
        if !headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        let user = self.attempt(req.extensions(), headers, || {
            std::iter::once(&self.token)
                .chain(&self.old_tokens)
                .find_map(|token| from_authorization(headers, token))
        })?;
        Ok(user.map(|user| (user, false)))
    }

    /// Runs one credential check, `check`, against the client's login allowance: takes one
    /// attempt first and gives it back if the credential was right. `Err(wait)` without
    /// running `check` when the allowance is used up.
    pub(super) fn attempt<T>(
        &self,
        extensions: &Extensions,
        headers: &HeaderMap,
        check: impl FnOnce() -> Option<T>,
    ) -> Result<Option<T>, Duration> {
        let permit = self.take_attempt(extensions, headers).inspect_err(|_| {
            if let Some(metrics) = &self.metrics {
                metrics.limited();
            }
        })?;
        let found = check();
        if found.is_some() {
            self.refund_attempt(permit);
        } else if let Some(metrics) = &self.metrics {
            metrics.failed();
        }
        Ok(found)
    }

    /// Takes one credential check from the client's login allowance; `Err(wait)` when it is
    /// used up. `Ok(None)` when there is no limit.
    fn take_attempt(
        &self,
        extensions: &Extensions,
        headers: &HeaderMap,
    ) -> Result<Option<Permit>, Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        let peer = extensions.get::<RemoteAddr>().map(|addr| addr.0.ip());
        let key = client_ip(peer, headers, &self.trusted_proxies)
            .map_or(ClientKey::Unknown, ClientKey::of);
        match limiter.acquire(key, limiter.now()) {
            Ok(permit) => Ok(Some(permit)),
            Err(wait) => {
                tracing::debug!(client = ?key, ?wait, "credential attempt refused: login limit reached");
                Err(wait)
            }
        }
    }

    /// Gives back the allowance taken by a credential that turned out right.
    fn refund_attempt(&self, permit: Option<Permit>) {
        if let (Some(limiter), Some(permit)) = (&self.limiter, permit) {
            limiter.refund(permit);
        }
    }

    /// `GET`/`HEAD` of a health endpoint: `/health`, `/healthz`, or the same under one of the
    /// notebook mounts (exactly: no other spelling of the path, nothing below it).
    fn is_health_check(&self, req: &Request<Body>) -> bool {
        let path = req.uri().path();
        matches!(*req.method(), Method::GET | Method::HEAD)
            && (is_health_path(path) || is_mount_health_path(path, &self.health_mounts))
    }

    fn unauthenticated(&self, req: &mut Request<Body>, upgrade: bool) -> Option<Response<Body>> {
        if self.is_health_check(req) {
            return strip_credentials(&self.keys, req)
                .err()
                .map(|_| no_store(bad_request()));
        }
        tracing::debug!(upgrade, "unauthenticated request refused");
        if upgrade {
            return Some(forbidden());
        }
        if !self.basic_challenge && is_page_load(req) {
            return Some(self.login_redirect(req.uri()));
        }
        Some(unauthorized())
    }
}

/// Removes the credentials a request carried: every `Authorization` header, the session
/// cookie, and `access_token` from the query.
fn strip_credentials(keys: &CookieKeys, req: &mut Request<Body>) -> Result<(), http::Error> {
    let headers = req.headers_mut();
    headers.remove(header::AUTHORIZATION);
    keys.strip(headers);
    let Some(query) = req.uri().query().and_then(strip_access_token) else {
        return Ok(());
    };
    let path = req.uri().path().to_owned();
    let query = (!query.is_empty()).then_some(query.as_str());
    set_path_and_query(req.uri_mut(), &path, query)
}

fn forbidden() -> Response<Body> {
    no_store(plain(StatusCode::FORBIDDEN, "Forbidden"))
}

/// `429` with `Retry-After`: the client's login limit is used up.
pub(super) fn too_many_requests(wait: Duration) -> Response<Body> {
    let response = plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    no_store(retry_after(response, retry_after_secs(wait)))
}

fn unauthorized() -> Response<Body> {
    let mut response = json(StatusCode::UNAUTHORIZED, UNAUTHORIZED_BODY);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"marimo\""),
    );
    no_store(response)
}

#[cfg(test)]
mod tests {
    use super::super::login;
    use super::super::redirect::to_root;
    use super::*;
    use crate::origin::Origin;

    proptest::proptest! {
        /// The parsers never panic on any input, and what they accept has the promised shape.
        #[test]
        fn parsers_never_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
            text in "\\PC{0,200}",
        ) {
            let token = Token::new("s3cret");
            let keys = CookieKeys::from_keys(&[b"k"]);
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&bytes) {
                headers.insert(header::AUTHORIZATION, value.clone());
                headers.insert(header::COOKIE, value.clone());
                headers.insert(header::ORIGIN, value);
            }
            proptest::prop_assert_eq!(from_authorization(&headers, &token), None);
            proptest::prop_assert_eq!(keys.verify(token.digest(), &bytes, 0), None);
            proptest::prop_assert_eq!(keys.find_valid(&headers, token.digest(), 0), None);
            keys.strip(&mut headers);
            let mut trusting = origin::Policy::default();
            trusting.set_trust_forwarded(true);
            let mut req = Request::post("/").body(()).expect("a request");
            *req.headers_mut() = headers.clone();
            let _ = trusting.judge(&req);
            let _ = Origin::parse(&text);
            if login::is_safe_next(&text) {
                proptest::prop_assert!(text.starts_with('/') && !text.starts_with("//"));
                proptest::prop_assert!(!text.contains('\\'));
            }
            if let Some(rest) = strip_access_token(&text) {
                proptest::prop_assert!(access_token(&rest).is_none(), "{}", rest);
            }
            let _ = access_token(&text);
            let _ = to_root(&text);
        }
    }
}
