//! [`Auth`]: the service [`AuthLayer`](super::AuthLayer) makes, and the request policy it
//! applies: which credentials a request carries, whether they hold, and what a request
//! without them is answered.

use std::convert::Infallible;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::header::{self, HeaderValue};
#[cfg(test)]
use http::HeaderMap;
use http::{Method, Request, Response, StatusCode};
use tower_service::Service;

use super::client_ip::{client_ip, is_trusted};
use super::cookie::{CookieKeys, Kind};
use super::credentials::{access_token, from_authorization, strip_access_token, DEFAULT_USER};
use super::front::Found;
use super::future::ResponseFuture;
use super::layer::Config;
use super::limit::{retry_after_secs, ClientKey, Permit};
use super::link::{self, SIGN_IN_PATH};
use super::login::{self, LOGIN_PATH};
use super::logout::{self, EVERYWHERE_PATH, LOGOUT_PATH, SIGNED_OUT_PATH};
use super::provider::{self, CALLBACK_PATH, START_PATH};
use super::redirect::{next_of, to_root};
use crate::access::SignedIn;
use crate::health::{is_health_path, is_mount_health_path};
use crate::origin;
use crate::request::{asks_for_websocket, is_page_load, set_path_and_query, RemoteAddr};
use crate::response::{bad_request, json, no_store, plain, retry_after};
use crate::{audit, Body, User};

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
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
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
        let future = match self.route(req) {
            Routed::Done(future) => future,
            Routed::Let(req) => {
                // Call the instance that `poll_ready` prepared, leaving a fresh clone in its
                // place.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::inner(inner.call(req))
            }
            Routed::Deferred(check) => {
                // The instance `poll_ready` prepared waits for the check.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::deferred(check, Box::new(move |req| inner.call(req)))
            }
        };
        future.with_cors(cors)
    }
}

/// What [`Auth::route`] made of a request.
enum Routed<F> {
    /// Answered here.
    Done(ResponseFuture<F>),
    /// Let in.
    Let(Request<Body>),
    /// Let in or refused once this resolves.
    Deferred(BoxFuture<'static, Result<Request<Body>, Response<Body>>>),
}

impl<S> Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
{
    /// The layer's own routes, then the check of everything else.
    fn route(&self, mut req: Request<Body>) -> Routed<S::Future> {
        let config = &self.config;
        let path = req.uri().path();
        if path.starts_with("/auth/") {
            let provider = config.provider.is_some();
            match path {
                LOGIN_PATH => return Routed::Done(login::handle(Arc::clone(config), req)),
                SIGN_IN_PATH => {
                    return Routed::Done(ResponseFuture::ready(link::handle(config, &req)))
                }
                LOGOUT_PATH => return Routed::Done(logout::handle(Arc::clone(config), req)),
                SIGNED_OUT_PATH => {
                    return Routed::Done(ResponseFuture::ready(logout::signed_out(config)))
                }
                START_PATH if provider => {
                    return Routed::Done(provider::handle_start(Arc::clone(config), req))
                }
                CALLBACK_PATH if provider => {
                    return Routed::Done(provider::handle_callback(Arc::clone(config), req))
                }
                _ => {}
            }
        }
        match config.check(&mut req) {
            Checked::Respond(response) => Routed::Done(ResponseFuture::ready(response)),
            Checked::Redirect(future) => Routed::Done(ResponseFuture::boxed(future)),
            Checked::Admitted { user, via } if req.uri().path() == EVERYWHERE_PATH => {
                let by_token = matches!(via, Via::Session(Kind::Token) | Via::Token);
                let response = logout::everywhere(config, &req, &user, by_token);
                Routed::Done(ResponseFuture::ready(response))
            }
            Checked::Admitted { .. } | Checked::Pass => Routed::Let(req),
            Checked::Verify { token, client } => {
                let config = Arc::clone(config);
                Routed::Deferred(Box::pin(async move {
                    let Some(front) = config.front.clone() else {
                        return Err(unauthorized());
                    };
                    match front.verify(&token).await {
                        Found::User(user) => {
                            match config.admit(&mut req, user, Via::Proxy, client) {
                                Some(refused) => Err(refused),
                                None => Ok(req),
                            }
                        }
                        Found::Invalid(reason) => Err(config.proxy_refused(client, &reason)),
                        Found::Nothing | Found::Verify(_) => Err(unauthorized()),
                    }
                }))
            }
        }
    }
}

/// How a request proved who it is.
#[derive(Clone, Copy, Debug)]
pub(super) enum Via {
    /// A session cookie.
    Session(Kind),
    /// The token (`access_token`, Bearer, Basic).
    Token,
    /// A trusted front proxy.
    Proxy,
}

/// What the check of a request decided.
pub(super) enum Checked {
    /// Answer it with this.
    Respond(Response<Body>),
    /// Answer it with this, once ready (a sign-in at the identity provider).
    Redirect(BoxFuture<'static, Response<Body>>),
    /// Let it in: the [`User`] is attached and the credentials removed.
    Admitted { user: User, via: Via },
    /// Let it in without a user (a health probe).
    Pass,
    /// A front proxy's assertion whose keys must be fetched first, and the client the request
    /// came from.
    Verify {
        token: String,
        client: Option<IpAddr>,
    },
}

impl Config {
    /// Whether `candidate` is the token or one of the old tokens still accepted.
    pub(super) fn token_matches(&self, candidate: &[u8]) -> bool {
        // Every token is checked, so the time taken does not tell which one matched.
        let mut matched = false;
        for token in self.token.iter().chain(&self.old_tokens) {
            matched |= token.matches(candidate);
        }
        matched
    }

    /// Decides about a request that is not for one of the layer's pages.
    fn check(self: &Arc<Self>, req: &mut Request<Body>) -> Checked {
        let upgrade = asks_for_websocket(req.headers());
        let peer = req.extensions().get::<RemoteAddr>().map(|addr| addr.0.ip());
        let found = self.front.as_ref().map(|front| {
            let trusted = peer.is_some_and(|peer| is_trusted(&self.trusted_proxies, peer));
            front.take(req.headers_mut(), trusted, peer)
        });
        // Who the request counts for (audit log, login limit, sign-out), worked out once.
        let client = client_ip(peer, req.headers(), &self.trusted_proxies);
        match found {
            None | Some(Found::Nothing) => {}
            Some(Found::User(user)) => return self.admitted(req, user, Via::Proxy, client),
            Some(Found::Verify(token)) => return Checked::Verify { token, client },
            Some(Found::Invalid(reason)) => {
                return Checked::Respond(self.proxy_refused(client, &reason))
            }
        }
        let (user, via, by_query) = match self.authenticate(req, client) {
            Ok(Some(found)) => found,
            Ok(None) => return self.unauthenticated(req, upgrade),
            Err(wait) if !self.is_health_check(req) => {
                return Checked::Respond(too_many_requests(wait))
            }
            Err(_) => return self.unauthenticated(req, upgrade),
        };
        if by_query && !upgrade && is_page_load(req) {
            return Checked::Respond(self.drop_token_redirect(req));
        }
        self.admitted(req, user, via, client)
    }

    fn admitted(
        &self,
        req: &mut Request<Body>,
        user: User,
        via: Via,
        client: Option<IpAddr>,
    ) -> Checked {
        match self.admit(req, user.clone(), via, client) {
            Some(refused) => Checked::Respond(refused),
            None => Checked::Admitted { user, via },
        }
    }

    /// Lets an authenticated request in, unless the whole-server access rules refuse its
    /// user: removes its credentials, attaches the [`User`] (and, for a browser session,
    /// where it signs out). `client`: where the request came from.
    pub(super) fn admit(
        &self,
        req: &mut Request<Body>,
        user: User,
        via: Via,
        client: Option<IpAddr>,
    ) -> Option<Response<Body>> {
        if strip_credentials(&self.keys, req).is_err() {
            return Some(no_store(bad_request()));
        }
        // Only the refusal page of an access rule needs it.
        let sign_out = (self.rules() && matches!(via, Via::Session(_)))
            .then(|| self.sign_out_href(req.uri().path()));
        if let Some(access) = &self.access {
            if !access.allows(&user) && !self.is_health_check(req) {
                audit::access_denied(user.name(), client, "/", req.uri().path());
                return Some(crate::access::forbidden(
                    &user,
                    sign_out.as_deref(),
                    is_page_load(req),
                ));
            }
        }
        if let Some(sign_out) = sign_out {
            req.extensions_mut().insert(SignedIn {
                sign_out: Some(sign_out),
                client,
            });
        }
        req.extensions_mut().insert(user);
        None
    }

    /// Where the browser at `path` posts its sign-out: under the base path when known, else
    /// relative to the page.
    fn sign_out_href(&self, path: &str) -> String {
        match &self.base_path {
            Some(base) => format!("{base}{LOGOUT_PATH}"),
            None => format!("{}{}", to_root(path), &LOGOUT_PATH[1..]),
        }
    }

    /// `401` for an assertion a trusted proxy sent that does not hold.
    fn proxy_refused(&self, client: Option<IpAddr>, reason: &str) -> Response<Body> {
        self.sign_in_failed(audit::Method::ProxyJwt, client, reason);
        unauthorized()
    }

    /// The identity proven by the request's credentials, how, and whether it was
    /// `access_token`; `Err(wait)` when the client's login limit is used up (the credential
    /// was not checked). `client`: where the request came from.
    fn authenticate(
        &self,
        req: &Request<Body>,
        client: Option<IpAddr>,
    ) -> Result<Option<(User, Via, bool)>, Duration> {
        let headers = req.headers();
        if headers.contains_key(header::COOKIE) {
            if let Some(session) = self.session(headers) {
                if !self.revocations.is_revoked(session.presented()) {
                    return Ok(Some((
                        session.user.clone(),
                        Via::Session(session.kind),
                        false,
                    )));
                }
                tracing::debug!(
                    target: "marimo_rs::auth",
                    user = session.user.name(),
                    "a revoked session cookie was refused"
                );
            }
        }
        if self.token.is_none() && self.old_tokens.is_empty() {
            return Ok(None);
        }
        // Each credential presented spends its own allowance: a request carrying both kinds
        // tests no more guesses than it pays for.
        if let Some(candidate) = req.uri().query().and_then(access_token) {
            let checked = self.attempt(client, audit::Method::AccessToken, || {
                self.token_matches(candidate.as_bytes()).then_some(())
            })?;
            if checked.is_some() {
                return Ok(Some((User::new(DEFAULT_USER), Via::Token, true)));
            }
        }
        let Some(authorization) = headers.get(header::AUTHORIZATION) else {
            return Ok(None);
        };
        let method = if authorization
            .as_bytes()
            .get(..6)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case(b"basic "))
        {
            audit::Method::Basic
        } else {
            audit::Method::Bearer
        };
        let user = self.attempt(client, method, || {
            self.token
                .iter()
                .chain(&self.old_tokens)
                .find_map(|token| from_authorization(headers, token))
        })?;
        Ok(user.map(|user| (User::new(user), Via::Token, false)))
    }

    /// Runs one credential check, `check`, against the login allowance of `client` (see
    /// `client_ip`): takes one attempt first and gives it back if the credential was right.
    /// `Err(wait)` without running `check` when the allowance is used up. Failures and
    /// refusals go to the audit log as attempts of `method`.
    pub(super) fn attempt<T>(
        &self,
        client: Option<IpAddr>,
        method: audit::Method,
        check: impl FnOnce() -> Option<T>,
    ) -> Result<Option<T>, Duration> {
        let permit = match self.take_attempt(client) {
            Ok(permit) => permit,
            Err(wait) => {
                audit::sign_in_limited(method, client);
                if let Some(metrics) = &self.metrics {
                    metrics.limited();
                }
                return Err(wait);
            }
        };
        let found = check();
        if found.is_some() {
            self.refund_attempt(permit);
        } else {
            self.sign_in_failed(method, client, "wrong token");
        }
        Ok(found)
    }

    /// Records a failed sign-in by `method` from `client`: an audit event and, when the app has
    /// metrics, the failures counter.
    pub(crate) fn sign_in_failed(
        &self,
        method: audit::Method,
        client: Option<IpAddr>,
        reason: &str,
    ) {
        audit::sign_in_failed(method, client, reason);
        if let Some(metrics) = &self.metrics {
            metrics.failed();
        }
    }

    /// Takes one credential check from the client's login allowance; `Err(wait)` when it is
    /// used up. `Ok(None)` when there is no limit.
    fn take_attempt(&self, client: Option<IpAddr>) -> Result<Option<Permit>, Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        let key = client.map_or(ClientKey::Unknown, ClientKey::of);
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

    fn unauthenticated(self: &Arc<Self>, req: &mut Request<Body>, upgrade: bool) -> Checked {
        if self.is_health_check(req) {
            return match strip_credentials(&self.keys, req) {
                Ok(()) => Checked::Pass,
                Err(_) => Checked::Respond(no_store(bad_request())),
            };
        }
        tracing::debug!(upgrade, "unauthenticated request refused");
        if upgrade {
            return Checked::Respond(forbidden());
        }
        if !self.basic_challenge && is_page_load(req) {
            // With the identity provider alone, straight to it; otherwise the login page,
            // which offers every method.
            if let (None, Some(_)) = (&self.token, &self.provider) {
                let next = next_of(req.uri());
                let req = std::mem::take(req);
                return Checked::Redirect(Box::pin(provider::start(Arc::clone(self), req, next)));
            }
            return Checked::Respond(self.login_redirect(req.uri()));
        }
        Checked::Respond(unauthorized())
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
    use super::super::token::Token;
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
